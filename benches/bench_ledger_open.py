"""Opening a ledger of 10^6 transactions: from its latest state snapshot against a replay of every
block, in the same run, on the same file.

The file is built once per session (pre-signed ``note`` transactions, blocks of 10,000,
``durability="off"``, a snapshot every 100,000 transactions by default), then five blocks of
1,000 more, so that opening from the snapshot also replays a tail. ``FEDLEDGER_BENCH_OPEN_TXS``
sets another size.

    python -m pytest benches/bench_ledger_open.py --benchmark-only --benchmark-json=.benchmarks/ledger-open.json
"""

from __future__ import annotations

import os
import time
from pathlib import Path

import pytest

from fedledger import Identity, Ledger, Transaction, ValidatorSet

N_TX = int(os.environ.get("FEDLEDGER_BENCH_OPEN_TXS", "1000000"))
PER_BLOCK = 10_000
TAIL_BLOCKS, TAIL_PER_BLOCK = 5, 1_000
N_SITES = 50
CHAIN = "bench-open"


@pytest.fixture(scope="session")
def ledger_file(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, float]]:
    vals = [Identity.generate(f"validator-{i}") for i in range(4)]
    sites = [Identity.generate(f"hospital-{i}") for i in range(N_SITES)]
    vs = ValidatorSet({v.verify_key: s for v, s in zip(vals, [40, 30, 20, 10])})
    total = N_TX + TAIL_BLOCKS * TAIL_PER_BLOCK
    start = time.perf_counter()
    txs = [
        Transaction.create(sites[i % N_SITES], kind="note", payload=i, nonce=i // N_SITES, chain_id=CHAIN)
        for i in range(total)
    ]
    signed = time.perf_counter() - start
    path = tmp_path_factory.mktemp("open") / "ledger.db"
    start = time.perf_counter()
    with Ledger.open(
        path,
        chain_id=CHAIN,
        validators=vs,
        local_validators=vals,
        members=[s.card() for s in sites],
        durability="off",
        max_block_txs=PER_BLOCK,
        snapshot_every=min(100_000, N_TX),  # the default, or the whole file when it is smaller
    ) as ledger:
        sizes = [PER_BLOCK] * (N_TX // PER_BLOCK) + [TAIL_PER_BLOCK] * TAIL_BLOCKS
        at = 0
        for size in sizes:
            assert all(r.accepted for r in ledger.submit_many(txs[at : at + size]))
            ledger.commit()
            at += size
    built = time.perf_counter() - start
    return path, {"sign_s": signed, "build_s": built, "file_mb": path.stat().st_size / 1e6}


def _open(path: Path, from_snapshot: bool) -> Ledger:
    return Ledger.open(path, read_only=True, from_snapshot=from_snapshot)


@pytest.mark.benchmark(group="ledger-open")
def test_open_from_snapshot(benchmark, ledger_file):
    path, info = ledger_file
    ledger = benchmark.pedantic(_open, args=(path, True), rounds=5, iterations=1, warmup_rounds=1)
    assert ledger.log_size == N_TX + TAIL_BLOCKS * TAIL_PER_BLOCK and ledger.blocks_replayed == TAIL_BLOCKS
    benchmark.extra_info.update(info, transactions=ledger.log_size, snapshot_height=ledger.opened_from)
    ledger.close()


@pytest.mark.benchmark(group="ledger-open")
def test_open_by_replay(benchmark, ledger_file):
    path, info = ledger_file
    ledger = benchmark.pedantic(_open, args=(path, False), rounds=1, iterations=1)
    assert ledger.blocks_replayed == ledger.height
    benchmark.extra_info.update(info, transactions=ledger.log_size)
    ledger.close()
