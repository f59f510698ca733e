"""A Flower round with fedledger's secure aggregation against Flower's own SecAgg+, same run.

    PYTHONPATH=src python benches/bench_flower.py [N] [D] [REPEATS]     # default 50 1000000 3

fedledger: ``SecureAggregation(FedAvg)`` from fedledger.integrations.flower, with the ledger
recording the round, over ``LoopbackGrid``: Flower's own Message, ClientApp and strategy
objects, every message through Flower's protobuf serde both ways, clients one after another
in this process; each client's ``ClientApp`` is ``fedledger_mod`` around a train step that
hands back the global model plus a fixed float32 update (no training cost). ``Masked`` with
3 neighbors, 32-bit ring, vectors sealed (the default). The figure is the whole
``strategy.start(..., num_rounds=1)`` call: the train exchange (the global model goes to
every client), the four secure aggregation stages, storing the aggregate and the ledger
record.

Flower: benches/flower_peer.py, Flower 1.42's ``SecAggPlusWorkflow`` with FedAvg and
``secaggplus_mod`` (``num_shares=3``: two neighbors plus the client, Flower's example setting)
over its in-process Grid, the same updates, once (its round is the slow one).

Updates: float32 N(0, 0.05^2), weight 100 per client, no dropout. Reported: medians over
REPEATS rounds for fedledger, the ratio, and where the time goes on both sides; and the
transport floor: the same exchange with nothing computed (the global model down, D 32-bit
values up per client), which bounds what any secure aggregation can reach inside Flower.
"""

from __future__ import annotations

import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from flwr.app import Array, ArrayRecord, ConfigRecord, Context, Message, MetricRecord, RecordDict
from flwr.clientapp import ClientApp
from flwr.serverapp.strategy import FedAvg

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))

import flower_peer  # noqa: E402
from ledger_helpers import CHAIN, identity, validator_set, validators  # noqa: E402

from fedledger import BlobStore, Ledger  # noqa: E402
from fedledger.aggregators import Masked  # noqa: E402
from fedledger.contracts import BUILTIN  # noqa: E402
from fedledger.integrations.flower import LoopbackGrid, SecureAggregation, fedledger_mod  # noqa: E402

WEIGHT = 100


def fedledger_round(updates: list[np.ndarray], root: Path) -> dict[str, float]:
    n, d = len(updates), updates[0].shape[0]
    sites = [f"site-{i:03d}" for i in range(n)]
    ids = {s: identity(s) for s in [*sites, "coordinator"]}
    keys = {s: i.verify_key for s, i in ids.items()}
    masked = Masked(3, neighbors=3, bits=32, clip=1.0, max_weight=1000)

    def train(msg: Message, context: Context) -> Message:
        i = int(context.node_config["partition-id"])
        base = msg.content.array_records["arrays"]["x"].numpy()
        out = ArrayRecord({"x": Array(base + updates[i])})
        return Message(RecordDict({"arrays": out, "metrics": MetricRecord({"num-examples": WEIGHT})}), reply_to=msg)

    def me(context: Context):  # type: ignore[no-untyped-def]
        return ids[sites[int(context.node_config["partition-id"])]]

    app = ClientApp(mods=[fedledger_mod(me, keys, aggregator=masked)])
    app.train()(train)
    v = validators()
    with Ledger.open(
        root / "ledger.db",
        chain_id=CHAIN,
        validators=validator_set(v),
        local_validators=v,
        members=[i.card() for i in ids.values()],
        contracts=BUILTIN,
    ) as ledger:
        ok = ledger.call(
            ids["coordinator"], "training", "define",
            policy="p", sites=[ids[s].verify_key.to_bytes() for s in sites],
            aggregator="masked", quant_bits=32, threshold=3, min_cohort=3,
        )  # fmt: skip
        assert ok.accepted, ok.reason
        fedavg = FedAvg(fraction_train=1.0, fraction_evaluate=0.0, min_train_nodes=n, min_available_nodes=n)
        strategy = SecureAggregation(
            fedavg,
            ledger,
            policy="p",
            coordinator=ids["coordinator"],
            store=BlobStore(root / "blobs"),
            sites={s: ids[s] for s in sites},
            aggregator=masked,
        )
        grid = LoopbackGrid(app, [{"partition-id": i} for i in range(n)])
        initial = ArrayRecord({"x": Array(np.zeros(d, np.float32))})
        with grid:
            t0, c0 = time.perf_counter(), time.process_time()
            result = strategy.start(grid, initial, num_rounds=1, timeout=600)
            total, cpu = time.perf_counter() - t0, time.process_time() - c0
    got = result.arrays["x"].numpy().astype(np.float64)
    ref = sum(u.astype(np.float64) for u in updates) / n
    out = {
        "total_s": total,
        "cpu_s": cpu,
        "clients_s": grid.client_seconds,
        "serde_s": grid.serde_seconds,
        "server_s": total - grid.client_seconds - grid.serde_seconds,
        "bytes_up_mb": grid.bytes_up / 1e6,
        "bytes_down_mb": grid.bytes_down / 1e6,
        "max_abs_err": float(np.max(np.abs(got - ref))),
    }
    out.update({f"stage {k}": v for k, v in strategy.stage_seconds.items()})
    return out


def transport_floor(n: int, d: int, reply_as: str) -> dict[str, float]:
    """One exchange over the same LoopbackGrid with nothing computed: the float32 global model
    to N clients, and from each a reply of D 32-bit values (``reply_as``: an ``ArrayRecord``, or
    raw bytes in a ``ConfigRecord``, fedledger's way). Any secure aggregation of D 32-bit
    values pays at least this for Flower's messages here; Flower's own time over it bounds the
    ratio any such aggregation can reach inside Flower."""

    def train(msg: Message, context: Context) -> Message:
        x = msg.content.array_records["arrays"]["x"].numpy().view(np.uint32)
        if reply_as == "array":
            content = RecordDict({"arrays": ArrayRecord({"x": Array(x)})})
        else:
            content = RecordDict({"config": ConfigRecord({"x": x.tobytes()})})
        return Message(content, reply_to=msg)

    app = ClientApp()
    app.train()(train)
    grid = LoopbackGrid(app, [{"partition-id": i} for i in range(n)])
    with grid:
        t0 = time.perf_counter()
        model = ArrayRecord({"x": Array(np.zeros(d, np.float32))})
        messages = [
            grid.create_message(RecordDict({"arrays": model}), "train", node, "1") for node in grid.get_node_ids()
        ]
        replies = list(grid.send_and_receive(messages))
        total = time.perf_counter() - t0
    assert len(replies) == n and not any(r.has_error() for r in replies)
    return {"total_s": total, "serde_s": grid.serde_seconds, "clients_s": grid.client_seconds}


def main(argv: list[str]) -> int:
    n = int(argv[0]) if argv else 50
    d = int(argv[1]) if len(argv) > 1 else 1_000_000
    repeats = int(argv[2]) if len(argv) > 2 else 3
    rng = np.random.default_rng(0)
    updates = [(rng.standard_normal(d) * 0.05).astype(np.float32) for _ in range(n)]
    print(f"N={n} D={d}; fedledger {repeats} rounds, Flower 1", flush=True)
    runs = []
    for r in range(repeats):
        with tempfile.TemporaryDirectory() as tmp:
            runs.append(fedledger_round(updates, Path(tmp)))
        print(f"fedledger round {r + 1}: " + ", ".join(f"{k}={v:.4g}" for k, v in runs[-1].items()), flush=True)
    peer = flower_peer.run_round(updates, 3, 0.0, weight=WEIGHT)
    print("Flower SecAgg+: " + peer.line(), flush=True)
    floors = {how: [transport_floor(n, d, how) for _ in range(repeats)] for how in ("array", "bytes")}
    for how, times in floors.items():
        print(
            f"transport floor, replies as {how}: median {statistics.median(t['total_s'] for t in times):.3f} s "
            f"(serde {statistics.median(t['serde_s'] for t in times):.3f} s, "
            f"clients {statistics.median(t['clients_s'] for t in times):.3f} s)",
            flush=True,
        )
    floor = min(statistics.median(t["total_s"] for t in times) for times in floors.values())
    med = statistics.median(x["total_s"] for x in runs)
    cpu = statistics.median(x["cpu_s"] for x in runs)
    print(
        f"wall: fedledger median {med:.3f} s (min {min(x['total_s'] for x in runs):.3f} s), Flower {peer.total_s:.3f} s, "
        f"Flower/fedledger {peer.total_s / med:.2f}; cpu: fedledger median {cpu:.3f} s, Flower {peer.cpu_s:.3f} s, "
        f"Flower/fedledger {peer.cpu_s / cpu:.2f}"
    )
    print(
        f"the least any aggregation of {d} 32-bit values pays for Flower's messages here: {floor:.3f} s; "
        f"Flower/floor {peer.total_s / floor:.2f} (the most any such aggregation can reach inside Flower)"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
