"""The ``fedledger`` command line. Subcommands arrive with their issues (ledger, demo, bench)."""

from __future__ import annotations

import argparse
import json
import sys


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="fedledger", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("info", help="print the native build report (kernels, OpenSSL, GMP, OpenMP) as JSON")
    args = parser.parse_args(argv)
    if args.command == "info":
        import fedledger

        try:
            info = fedledger.build_info()
        except ImportError as exc:
            print(f"fedledger: {exc}", file=sys.stderr)
            return 1
        print(json.dumps(info, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
