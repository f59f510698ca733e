"""fedledger's secure aggregation on a real Flower deployment with a large model, by hand.

    PYTHONPATH=src:tests python benches/flower_deployment.py [PARAMETERS] [ROUNDS]   # 10000000 1

Starts what tests/test_flower_deployment.py starts (a SuperLink serving TLS with a test CA, four
SuperNodes, each in its own network namespace behind a veth link when run as root, else all on
127.0.0.1) and submits tests/flower_app with ``model-size=PARAMETERS``: the
test model plus a float32 array of that many parameters (10^7 is 40 MB), FedAvg under
SecureAggregation with the ledger. Prints each round's record and the seconds the rounds took.
Too slow and too large for the test suite (about 40 s and 4 x 80 MB of state files per round at
10^7 on a 2-core machine); run it after changing how a site keeps its state between messages.
"""

from __future__ import annotations

import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))

import test_flower_deployment as deployment  # noqa: E402


def main(argv: list[str]) -> int:
    size = int(argv[0]) if argv else 10_000_000
    rounds = int(argv[1]) if len(argv) > 1 else 1
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        d = deployment.Deployment(root)
        try:
            work = deployment._work(root)
            proc = d.run(work, f'work="{work}" rounds={rounds} stage-timeout=120.0 model-size={size}')
            records = deployment._finish(proc, work, root, timeout=300 + 120 * rounds)
        finally:
            d.close()
        for rec in records:
            print(
                f"round {rec['round']}: {rec['status']}, participants {rec['participants']}, dropouts {rec['dropouts']}"
            )
        print(f"{size} parameters more, {rounds} round(s): {(work / 'seconds').read_text().strip()} s")
        return 0 if all(rec["status"] == "done" and not rec["dropouts"] for rec in records) else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
