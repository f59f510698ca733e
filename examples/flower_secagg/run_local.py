"""The example in one process, without a SuperLink: the same ServerApp logic and ClientApp over
fedledger's LoopbackGrid (every message through Flower's serde), four sites.

    python examples/flower_secagg/run_local.py [WORK_DIR]

Prints each round's record and accuracy, then checks the ledger and that the model equals
plain FedAvg's (the same steps, aggregated in the clear) within the quantization bound."""

from __future__ import annotations

import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import numpy as np  # noqa: E402
from client_app import app as client_app  # noqa: E402
from server_app import run  # noqa: E402
from task import SITES, accuracy, initial_model, partition, train  # noqa: E402

from fedledger.integrations.flower import LoopbackGrid  # noqa: E402

ROUNDS, EPOCHS, LR = 5, 5, 0.5


def plain_fedavg() -> dict[str, np.ndarray]:
    model = initial_model()
    parts = [partition(i, len(SITES)) for i in range(len(SITES))]
    for _ in range(ROUNDS):
        steps = [(train(model, x, y, EPOCHS, LR)[0], len(y)) for x, y, _, _ in parts]
        total = sum(w for _, w in steps)
        model = {k: sum(m[k] * w for m, w in steps) / total for k in model}
    return model


def main(work: Path) -> None:
    nodes = [{"partition-id": i, "num-partitions": len(SITES)} for i in range(len(SITES))]
    grid = LoopbackGrid(client_app, nodes)
    for ctx in grid.contexts.values():
        ctx.run_config.update({"local-epochs": EPOCHS, "learning-rate": LR})
    with grid:
        result, strategy = run(grid, work, ROUNDS, stage_timeout=30.0)
    for rec in strategy.records:
        acc = result.evaluate_metrics_clientapp[rec.round]["accuracy"]
        assert rec.result is not None and rec.model_hash is not None
        print(
            f"round {rec.round}: {rec.status}, {len(rec.result.survivors)} sites, weight {rec.result.total_weight}, "
            f"model {rec.model_hash.hex()[:16]}, aggregate {rec.aggregate_cid[:20]}..., accuracy {acc:.3f}"
        )
    got = {k: result.arrays[k].numpy() for k in result.arrays}
    want = plain_fedavg()
    err = max(float(np.max(np.abs(got[k] - want[k]))) for k in want)
    x = np.concatenate([partition(i, len(SITES))[2] for i in range(len(SITES))])
    y = np.concatenate([partition(i, len(SITES))[3] for i in range(len(SITES))])
    print(f"max |secure - plain FedAvg| = {err:.2e}; held-out accuracy {accuracy(got, x, y):.3f}")
    assert err < 1e-6


if __name__ == "__main__":
    if len(sys.argv) > 1:
        main(Path(sys.argv[1]))
    else:
        with tempfile.TemporaryDirectory() as tmp:
            main(Path(tmp))
