"""The ``fedledger`` command line.

    fedledger info                       the native build report, as JSON
    fedledger ledger verify PATH         full audit of a ledger file
    fedledger ledger show PATH [--height H]
    fedledger ledger prove PATH TX_ID    a receipt (JSON) that anyone can check offline
    fedledger ledger export PATH         every block and transaction, as JSON lines
    fedledger receipt verify FILE [--validators FILE]

Exit codes: 0 success, 1 verification failed (tampered ledger, invalid receipt),
2 bad usage or input, 3 not found.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

EXIT_OK, EXIT_INVALID, EXIT_USAGE, EXIT_NOT_FOUND = 0, 1, 2, 3


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="fedledger", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("info", help="print the native build report (kernels, OpenSSL, GMP, OpenMP) as JSON")
    ledger = sub.add_parser("ledger", help="inspect, audit and prove a ledger file")
    lsub = ledger.add_subparsers(dest="action", required=True)
    for name, text in (("verify", "full audit: hash chain, Merkle roots, signatures, quorum, nonces"),
                       ("export", "every block with its transactions, one JSON object per line")):
        lsub.add_parser(name, help=text).add_argument("path")
    show = lsub.add_parser("show", help="summary, or one block with --height")
    show.add_argument("path")
    show.add_argument("--height", type=int)
    prove = lsub.add_parser("prove", help="receipt for a transaction id (hex)")
    prove.add_argument("path")
    prove.add_argument("tx_id")
    receipt = sub.add_parser("receipt", help="check receipts offline")
    rsub = receipt.add_subparsers(dest="action", required=True)
    check = rsub.add_parser("verify", help="verify a receipt JSON file ('-' for stdin)")
    check.add_argument("file")
    check.add_argument("--validators", help="JSON file [[hex key, stake], ...] of the validator set you trust")
    return parser


def _block_json(block: Any) -> dict[str, Any]:
    h = block.header
    return {
        "height": h.height, "hash": h.hash.hex(), "prev": h.prev_hash.hex(), "time_ms": h.time_ms,
        "proposer": h.proposer.hex(), "tx_root": h.tx_root.hex(), "log_size": h.log_size,
        "log_root": h.log_root.hex(), "validators_hash": h.validators_hash.hex(),
        "signers": [k.hex() for k, _ in block.certificate.signatures],
        "transactions": [
            {"id": t.id.hex(), "kind": t.kind, "sender": t.sender.to_bytes().hex(), "nonce": t.nonce,
             "bytes": t.to_bytes().hex()} for t in block.transactions
        ],
    }


def _open(path: str) -> Any:
    from fedledger.errors import NotFound
    from fedledger.ledger import Ledger

    if not Path(path).is_file():
        raise NotFound(f"no ledger file at {path}")
    return Ledger.open(path)


def _ledger(args: argparse.Namespace) -> int:
    with _open(args.path) as ledger:
        if args.action == "verify":
            ledger.verify()
            print(f"ok: {ledger.chain_id}, {ledger.height} blocks, {ledger.log_size} transactions, "
                  f"log root {ledger.tree_head().log_root.hex() if ledger.height else '-'}")
        elif args.action == "show":
            if args.height is None:
                print(json.dumps({"chain_id": ledger.chain_id, "height": ledger.height,
                                  "log_size": ledger.log_size,
                                  "validators": [[k.hex(), s] for k, s in ledger.validators.to_value()]}, indent=2))
            else:
                print(json.dumps(_block_json(ledger.block(args.height)), indent=2))
        elif args.action == "prove":
            try:
                tx_id = bytes.fromhex(args.tx_id)
            except ValueError:
                print(f"fedledger: TX_ID must be hex, got {args.tx_id!r}", file=sys.stderr)
                return EXIT_USAGE
            print(json.dumps(ledger.prove(tx_id), indent=2))
        else:  # export
            for h in range(1, ledger.height + 1):
                print(json.dumps(_block_json(ledger.block(h))))
    return EXIT_OK


def _receipt(args: argparse.Namespace) -> int:
    from fedledger.ledger import ValidatorSet, verify_receipt

    text = sys.stdin.read() if args.file == "-" else Path(args.file).read_text()
    trusted = None
    if args.validators:
        pairs = json.loads(Path(args.validators).read_text())
        trusted = ValidatorSet({bytes.fromhex(k): s for k, s in pairs})
    tx = verify_receipt(text, trusted_validators=trusted)
    print(f"ok: transaction {tx.id.hex()} ({tx.kind}) is in the ledger {tx.chain_id}")
    return EXIT_OK


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    if args.command == "info":
        import fedledger

        try:
            info = fedledger.build_info()
        except ImportError as exc:
            print(f"fedledger: {exc}", file=sys.stderr)
            return EXIT_INVALID
        print(json.dumps(info, indent=2))
        return EXIT_OK
    from fedledger.errors import FedLedgerError, InvalidProof, NotFound, TamperedLedger

    try:
        return _ledger(args) if args.command == "ledger" else _receipt(args)
    except NotFound as exc:
        print(f"fedledger: not found: {exc}", file=sys.stderr)
        return EXIT_NOT_FOUND
    except (TamperedLedger, InvalidProof) as exc:
        print(f"fedledger: FAILED: {exc}", file=sys.stderr)
        return EXIT_INVALID
    except (FedLedgerError, OSError, ValueError) as exc:
        print(f"fedledger: {exc}", file=sys.stderr)
        return EXIT_USAGE


if __name__ == "__main__":
    sys.exit(main())
