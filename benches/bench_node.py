"""Nodes across hospitals: committed transactions per second through four validator nodes
(stakes 40, 30, 20, 10; each its own process, replica and key) ordering through a real 3-member
etcd cluster on this machine, against the single-process ledger committing the same pre-signed
transactions in blocks of the same size in the same run; and the commit latency, median and
99th percentile, of small batches submitted one at a time.

Every node checks every signature and applies every transaction; the CPU each process used in
the throughput rounds is recorded (``extra_info``), which says where the time goes. Needs the
``etcd`` binary (Debian's etcd-server) and the node extra.

    python -m pytest benches/bench_node.py --benchmark-only --benchmark-json=.benchmarks/node.json -s
"""

from __future__ import annotations

import statistics
import threading
import time
from pathlib import Path

import pytest

from fedledger import Ledger, Transaction

local = pytest.importorskip("fedledger.node.local", reason="the node extra (aetcd) is not installed")
if local.ETCD is None:
    pytest.skip("the etcd binary is not installed (Debian: etcd-server)", allow_module_level=True)

N_TX = 20_000
MEMBERS = 8
BLOCK = 2000  # the node's default block size
STAKES = [40, 30, 20, 10]


@pytest.fixture(scope="module")
def consortium(tmp_path_factory: pytest.TempPathFactory):  # type: ignore[no-untyped-def]
    with local.LocalConsortium(tmp_path_factory.mktemp("node-bench"), STAKES, members=MEMBERS) as c:
        yield c


def _cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / 100  # utime + stime, in clock ticks of 10 ms


def _pids(c) -> dict[str, int]:  # type: ignore[no-untyped-def]
    pids = {c.names[i]: p.pid for i, p in c.processes.items()}
    pids.update({f"etcd{i}": p.pid for i, p in enumerate(c.etcd._processes) if p is not None})
    return pids


def test_committed_tx_per_second_across_four_nodes(benchmark, consortium) -> None:  # type: ignore[no-untyped-def]
    c = consortium
    cpu: list[dict[str, float]] = []

    def setup():  # type: ignore[no-untyped-def]
        batches = [c.notes(m, N_TX // MEMBERS) for m in c.member_names]  # signed outside the timer
        pids = _pids(c)
        return (batches, pids, {k: _cpu_seconds(p) for k, p in pids.items()}), {}

    def run(batches, pids, before) -> None:  # type: ignore[no-untyped-def]
        def push(j: int) -> None:  # each member's transactions through one node, in nonce order
            for k in range(0, len(batches[j]), 500):
                c.submit(j % 4, batches[j][k : k + 500])

        threads = [threading.Thread(target=push, args=(j,)) for j in range(MEMBERS)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        c.wait_for(c.submitted, timeout=600)
        cpu.append({k: _cpu_seconds(p) - before[k] for k, p in pids.items()})

    benchmark.pedantic(run, setup=setup, rounds=3, iterations=1)
    median = benchmark.stats.stats.median
    per_process = {k: round(statistics.median(r[k] for r in cpu), 2) for k in cpu[0]}
    node_cpu = sum(v for k, v in per_process.items() if not k.startswith("etcd"))
    benchmark.extra_info.update(
        transactions=N_TX,
        tx_per_s=round(N_TX / median),
        cpu_s_per_process=per_process,
        node_cpu_us_per_tx_per_node=round(node_cpu / len(STAKES) / N_TX * 1e6, 1),
        heights=c.status(0)["height"],
    )
    print(f"\n4 nodes: {N_TX / median:,.0f} tx/s committed on every replica; CPU s per process {per_process}")
    statuses = [c.status(i) for i in range(len(STAKES))]
    assert len({s["state_root"] for s in statuses}) == 1 and {s["log_size"] for s in statuses} == {c.submitted}


def test_single_process_ledger_same_transactions(benchmark, consortium, tmp_path) -> None:  # type: ignore[no-untyped-def]
    c = consortium
    validators = [c.identity(n) for n in c.names]
    counter = iter(range(100))

    def setup():  # type: ignore[no-untyped-def]
        ledger = Ledger.open(
            tmp_path / f"single-{next(counter)}.db",
            chain_id="bench-single",
            validators=c.genesis.validators,
            local_validators=validators,
            members=c.genesis.members,
            max_block_txs=BLOCK,
        )
        members = [c.identity(m) for m in c.member_names]
        txs = [
            Transaction.create(m, kind="note", payload={"n": n}, nonce=n, chain_id="bench-single")
            for m in members
            for n in range(N_TX // MEMBERS)
        ]
        return (ledger, [t.to_bytes() for t in txs]), {}

    def run(ledger: Ledger, wire: list[bytes]) -> None:
        for k in range(0, len(wire), BLOCK):  # admitted from wire bytes (parsed and checked), as a node does
            ledger.submit_many(wire[k : k + BLOCK])
            ledger.commit()
        assert ledger.log_size == N_TX
        ledger.close()

    benchmark.pedantic(run, setup=setup, rounds=3, iterations=1)
    benchmark.extra_info.update(transactions=N_TX, tx_per_s=round(N_TX / benchmark.stats.stats.median))
    print(f"\nsingle process: {N_TX / benchmark.stats.stats.median:,.0f} tx/s")


def test_commit_latency_of_small_batches(benchmark, consortium) -> None:  # type: ignore[no-untyped-def]
    c = consortium
    latencies: list[float] = []

    def run() -> None:
        for k in range(100):  # 10 transactions at a time, one batch in flight, through every node in turn
            node = k % len(STAKES)
            txs = c.notes(c.member_names[k % MEMBERS], 10)
            start = time.perf_counter()
            c.submit(node, txs)
            while c.status(node)["log_size"] < c.submitted:
                time.sleep(0.002)
            latencies.append(time.perf_counter() - start)

    benchmark.pedantic(run, rounds=1, iterations=1)
    ordered = sorted(latencies)
    p50, p99 = statistics.median(ordered), ordered[int(0.99 * (len(ordered) - 1))]
    benchmark.extra_info.update(
        batches=len(ordered), latency_median_ms=round(p50 * 1e3, 1), latency_p99_ms=round(p99 * 1e3, 1)
    )
    print(f"\ncommit latency of a 10-transaction batch: median {p50 * 1e3:.1f} ms, p99 {p99 * 1e3:.1f} ms")
