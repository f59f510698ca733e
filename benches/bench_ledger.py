"""Ledger ingest: signed transactions (~200-byte payloads) from submission to a durable committed
block, 1,000 per block, against a plain-Python loop (cryptography verify + hashlib + list append,
no durability) in the same run. Also verify() time and proof sizes.

    python -m pytest benches/bench_ledger.py --benchmark-only --benchmark-json=.benchmarks/ledger.json
"""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from fedledger import Identity, Ledger, Transaction, ValidatorSet

N_TX = 20_000
PER_BLOCK = 1_000
N_SITES = 50
CHAIN = "bench"


@pytest.fixture(scope="module")
def setup():
    vals = [Identity.generate(f"validator-{i}") for i in range(4)]
    sites = [Identity.generate(f"hospital-{i}") for i in range(N_SITES)]
    payload = {"model": "x" * 120, "round": 1, "hash": b"\x01" * 32}  # ~200 bytes encoded
    txs = [
        Transaction.create(sites[i % N_SITES], kind="note", payload=payload, nonce=i // N_SITES, chain_id=CHAIN)
        for i in range(N_TX)
    ]
    vs = ValidatorSet({v.verify_key: s for v, s in zip(vals, [40, 30, 20, 10])})
    return vals, sites, vs, txs


def _ingest(path: Path, vals, sites, vs, txs, durability: str) -> Ledger:
    ledger = Ledger.open(
        path,
        chain_id=CHAIN,
        validators=vs,
        local_validators=vals,
        members=[s.card() for s in sites],
        durability=durability,
        max_block_txs=PER_BLOCK,
    )
    for start in range(0, len(txs), PER_BLOCK):
        results = ledger.submit_many(txs[start : start + PER_BLOCK])
        assert results[-1].accepted
        ledger.commit()
    return ledger


@pytest.mark.benchmark(group="ingest-20k")
@pytest.mark.parametrize("durability", ["full", "normal"])
def test_ingest_fedledger(benchmark, setup, tmp_path, durability):
    vals, sites, vs, txs = setup
    counter = iter(range(1000))

    def run() -> None:
        ledger = _ingest(tmp_path / f"{durability}-{next(counter)}.db", vals, sites, vs, txs, durability)
        assert ledger.log_size == N_TX
        ledger.close()

    benchmark.pedantic(run, rounds=3, iterations=1)
    benchmark.extra_info["tx_per_s"] = N_TX / benchmark.stats.stats.median


@pytest.mark.benchmark(group="ingest-20k")
def test_ingest_python_loop_baseline(benchmark, setup):
    _, _, _, txs = setup
    keys = {tx.sender.to_bytes(): Ed25519PublicKey.from_public_bytes(tx.sender.to_bytes()) for tx in txs}

    def run() -> int:
        chain: list[bytes] = []
        for tx in txs:
            keys[tx.sender.to_bytes()].verify(tx.signature, tx.body)
            chain.append(hashlib.sha256(tx.to_bytes()).digest())
        return len(chain)

    assert benchmark.pedantic(run, rounds=3, iterations=1) == N_TX
    benchmark.extra_info["tx_per_s"] = N_TX / benchmark.stats.stats.median


@pytest.mark.benchmark(group="verify-20k")
def test_full_audit(benchmark, setup, tmp_path):
    vals, sites, vs, txs = setup
    ledger = _ingest(tmp_path / "audit.db", vals, sites, vs, txs, "off")
    benchmark.pedantic(ledger.verify, rounds=3, iterations=1)
    receipt = ledger.prove(txs[12_345].id)
    benchmark.extra_info["receipt_json_bytes"] = len(receipt.to_json())
    benchmark.extra_info["inclusion_proof_nodes"] = len(receipt.entry.inclusion_proof)
    benchmark.extra_info["consistency_proof_nodes"] = len(ledger.prove_consistency(7_777).proof)
    benchmark.extra_info["seconds_per_1e5_tx"] = benchmark.stats.stats.median * 1e5 / N_TX
    ledger.close()
