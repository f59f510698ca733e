"""The test ServerApp: FedAvg under SecureAggregation over the ledger in ``work`` (made by the
test), for ``rounds`` rounds; it leaves the final model (``model.npz``) and the round records
(``records.json``, with the seconds the rounds took) in ``work`` for the test. With
``model-size`` (run config) > 0 the model gets a float32 array of that many more parameters
(benches/flower_deployment.py)."""

from __future__ import annotations

import json
import time
from pathlib import Path

import numpy as np
from flower_helpers import POLICY, SITES, initial, masked, open_ledger
from flwr.app import Array, Context
from flwr.serverapp import Grid, ServerApp
from flwr.serverapp.strategy import FedAvg
from ledger_helpers import identity

from fedledger import BlobStore
from fedledger.integrations.flower import SecureAggregation

app = ServerApp()


@app.main()
def main(grid: Grid, context: Context) -> None:
    work = Path(str(context.run_config["work"]))
    rounds = int(context.run_config["rounds"])  # type: ignore[arg-type]
    fedavg = FedAvg(fraction_train=1.0, fraction_evaluate=0.0, min_train_nodes=3, min_available_nodes=4)
    with open_ledger(work / "ledger.db") as ledger:
        strategy = SecureAggregation(
            fedavg,
            ledger,
            policy=POLICY,
            coordinator=identity("coordinator"),
            store=BlobStore(work / "blobs"),
            sites={n: identity(n) for n in SITES},
            aggregator=masked(),
            stage_timeout=float(context.run_config["stage-timeout"]),  # type: ignore[arg-type]
        )
        arrays = initial()
        size = int(context.run_config.get("model-size", 0))  # type: ignore[arg-type]
        if size > 0:
            arrays["big"] = Array(np.random.default_rng(3).normal(0, 0.3, size).astype(np.float32))
        started = time.perf_counter()
        result = strategy.start(grid, arrays, num_rounds=rounds, timeout=60)
        seconds = time.perf_counter() - started
    np.savez(work / "model.npz", **{k: result.arrays[k].numpy() for k in result.arrays})
    records = [
        {"round": r.round, "status": r.status, "participants": list(r.participants), "dropouts": dict(r.dropouts)}
        for r in strategy.records
    ]
    (work / "records.json").write_text(json.dumps(records))
    (work / "seconds").write_text(f"{seconds:.3f}\n")
