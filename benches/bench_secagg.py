"""One SecAgg+ / SecAgg round end to end, fedledger and Flower's own code in the same run.

    PYTHONPATH=src python -m pytest benches/bench_secagg.py --benchmark-only \
        --benchmark-json=.benchmarks/secagg.json            # add -k sparse to skip the slow full graph

Flower is driven by benches/flower_peer.py (flwr comes with ``pip install '.[bench]'``): its
SecAggPlusWorkflow (SecAggWorkflow for the full graph) and secaggplus_mod in one process,
every message through Flower's protobuf serde both ways, clients one after another. It runs
once per setting (Flower's full-graph round takes minutes); the whole workflow call is the
peer figure (``total_s``), and extra_info also carries its per-client median and a summary
line (server, clients, serde, bytes, error). fedledger: ``secagg.run_round`` with every
message through to_bytes/from_bytes, clients one after another too (each client's kernels
use the machine's threads), fresh identities every round.

Settings: N=100, D=10^6, 3 neighbors, 10% of clients dropping before the masked-input
stage; and the full graph, N=100, D=10^5, no dropout. Updates are float32 N(0, 0.05^2), the
same arrays on both sides, weights 100 (max 1000). (Flower's K=3 is two neighbors plus the
client itself; fedledger's 3 is three neighbors, a little more work.)

fedledger runs with its defaults: masked vectors committed to by their vector root and sealed
to the server (AES-256-GCM records), revealed shares sealed. ``_unsealed`` turns off the
second layer on the masked vectors (``seal_inputs=False``), which Flower does not have
either. extra_info also carries ``parallel_clients_s``: the server's total plus the slowest
client's total, what the round would take with every client on its own machine and no
network time.
"""

from __future__ import annotations

import os
import statistics
import sys
from pathlib import Path

import numpy as np
import pytest

from fedledger import secagg

N = 100
ROUNDS = int(os.environ.get("SECAGG_BENCH_ROUNDS", "3"))


def updates(n: int, d: int) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(0)
    return {f"site-{i:03d}": (rng.standard_normal(d) * 0.05).astype(np.float32) for i in range(n)}


def drops(ids: list[str], config: secagg.SecAggConfig, frac: float) -> dict[str, str]:
    """Like flower_peer: drop a client only if every neighborhood keeps >= t live holders."""
    n = len(ids)
    graph = secagg.neighbor_graph(ids, config.degree(n), config.seed())
    t = config.threshold_for(n)
    want = int(round(frac * n))
    chosen: set[str] = set()
    for c in ids:
        if len(chosen) >= want:
            break
        trial = chosen | {c}
        if all(len((graph[u] | {u}) - trial) >= t for u in ids):
            chosen = trial
    return {c: "masked_input" for c in sorted(chosen)}


def run_flower(ups: dict[str, np.ndarray], k: int, drop: float) -> dict[str, float | str]:
    here = str(Path(__file__).resolve().parent)
    if here not in sys.path:  # pytest's default import mode puts it there; others may not
        sys.path.insert(0, here)
    from flower_peer import run_round  # imports flwr, which only the Flower benches need

    res = run_round([ups[c] for c in sorted(ups)], k, drop, weight=100, max_weight=1000)
    assert res.max_abs_err < 1e-3, res.line()
    return {"total_s": res.total_s, "per_client_ms": res.per_client_ms, "line": res.line()}


def _fedledger(benchmark, n: int, d: int, neighbors: object, frac: float, seal_inputs: bool = True) -> None:  # type: ignore[no-untyped-def]
    ups = updates(n, d)
    config = secagg.SecAggConfig(neighbors=neighbors, max_weight=1000, seal_inputs=seal_inputs)  # type: ignore[arg-type]
    dropouts = drops(sorted(ups), config, frac) if frac else {}
    weights = {c: 100 for c in ups}
    results: list[secagg.RoundResult] = []

    def once() -> None:
        results.append(secagg.run_round(ups, config, dropouts, weights=weights))

    benchmark.pedantic(once, rounds=ROUNDS, iterations=1, warmup_rounds=1)
    res = results[-1]
    alive = res.report.survivors
    ref = sum(ups[c].astype(np.float64) * 100 for c in alive) / (100 * len(alive))
    err = float(np.max(np.abs(res.mean - ref)))
    per_client = [v for c, v in res.report.client_seconds.items() if c not in dropouts]
    benchmark.extra_info.update(
        dropped=len(dropouts),
        max_abs_err=err,
        per_client_median_ms=1e3 * statistics.median(per_client),
        bytes_up=res.report.total_bytes_up,
        bytes_down=res.report.total_bytes_down,
        server_s={k: v.get("server", 0.0) for k, v in res.report.seconds.items()},
        parallel_clients_s=sum(v.get("server", 0.0) for v in res.report.seconds.values())
        + max(res.report.client_seconds.values()),
        clients_s={k: v.get("clients", 0.0) for k, v in res.report.seconds.items()},
    )
    assert err < 1e-3


def _flower(benchmark, n: int, d: int, k: int, frac: float) -> None:  # type: ignore[no-untyped-def]
    pytest.importorskip("flwr")
    ups = updates(n, d)
    got: list[dict[str, float | str]] = []
    benchmark.pedantic(lambda: got.append(run_flower(ups, k, frac)), rounds=1, iterations=1)
    benchmark.extra_info.update(got[-1])


@pytest.mark.benchmark(group="sparse N=100 D=1e6 k=3 10% drop")
def test_sparse_fedledger(benchmark) -> None:  # type: ignore[no-untyped-def]
    _fedledger(benchmark, N, 10**6, 3, 0.1)


@pytest.mark.benchmark(group="sparse N=100 D=1e6 k=3 10% drop")
def test_sparse_fedledger_unsealed(benchmark) -> None:  # type: ignore[no-untyped-def]
    _fedledger(benchmark, N, 10**6, 3, 0.1, seal_inputs=False)


@pytest.mark.benchmark(group="sparse N=100 D=1e6 k=3 10% drop")
def test_sparse_flower(benchmark) -> None:  # type: ignore[no-untyped-def]
    _flower(benchmark, N, 10**6, 3, 0.1)


@pytest.mark.benchmark(group="full N=100 D=1e5")
def test_full_fedledger(benchmark) -> None:  # type: ignore[no-untyped-def]
    _fedledger(benchmark, N, 10**5, None, 0.0)


@pytest.mark.benchmark(group="full N=100 D=1e5")
def test_full_flower(benchmark) -> None:  # type: ignore[no-untyped-def]
    _flower(benchmark, N, 10**5, 0, 0.0)
