"""Contracts: access decisions through ``Ledger.call_many`` on the durable store (SQLite,
``synchronous=FULL``), each decided, recorded with its outcome and committed, from pre-signed
calls (signing outside the timer), against the raw ledger ingesting the same number of
pre-signed ``note`` transactions of the same size in the same run (its ratio is the contract
layer's cost). Also: the rate with signing inside the timer, and the state root's cost per
block.

    python -m pytest benches/bench_contracts.py --benchmark-only --benchmark-json=.benchmarks/contracts.json
"""

from __future__ import annotations

import itertools
import os
from pathlib import Path

import pytest

from fedledger import Identity, Ledger, Transaction, ValidatorSet
from fedledger.contracts import BUILTIN
from fedledger.ledger import Call
from fedledger.ledger.statetree import StateTree

N_CALLS = 20_000
N_SITES = 50
CHAIN = "bench"
_counter = itertools.count()


@pytest.fixture(scope="module")
def people() -> tuple[list[Identity], list[Identity], Identity, ValidatorSet]:
    vals = [Identity.generate(f"validator-{i}") for i in range(4)]
    sites = [Identity.generate(f"hospital-{i}") for i in range(N_SITES)]
    admin = Identity.generate("admin")
    return vals, sites, admin, ValidatorSet({v.verify_key: s for v, s in zip(vals, [40, 30, 20, 10])})


def _ledger(tmp: Path, people, contracts=BUILTIN) -> Ledger:  # type: ignore[no-untyped-def]
    vals, sites, admin, vs = people
    return Ledger.open(
        tmp / f"bench-{next(_counter)}.db",
        chain_id=CHAIN,
        validators=vs,
        local_validators=vals,
        members=[s.card() for s in [*sites, admin]],
        contracts=contracts,
    )


def _provisioned(tmp: Path, people) -> Ledger:  # type: ignore[no-untyped-def]
    """Every site a provider with one registered record and a TREAT grant on it."""
    vals, sites, admin, _ = people
    ledger = _ledger(tmp, people)
    ledger.call(vals[0], "access", "assign_role", subject=admin.verify_key.to_bytes(), role="admin")
    ledger.call_many(
        [Call(admin, "access", "assign_role", {"subject": s.verify_key.to_bytes(), "role": "provider"}) for s in sites]
    )
    ledger.call_many([Call(s, "access", "register", {"resource": f"bafk-record-{i}"}) for i, s in enumerate(sites)])
    ledger.call_many(
        [
            Call(
                s,
                "access",
                "grant",
                {
                    "subject": s.verify_key.to_bytes(),
                    "resource": f"bafk-record-{i}",
                    "purpose": "TREAT",
                    "expires_ms": 2**62,
                },
            )
            for i, s in enumerate(sites)
        ]
    )
    return ledger


def _access_calls(ledger: Ledger, sites: list[Identity]) -> list[Transaction]:
    """N_CALLS signed access requests; every third asks for another site's record (denied)."""
    base = {s.verify_key.to_bytes(): ledger.next_nonce(s) for s in sites}
    out = []
    for i in range(N_CALLS):
        site = sites[i % N_SITES]
        record = i % N_SITES if i % 3 else (i + 1) % N_SITES
        args = {"subject": site.verify_key.to_bytes(), "resource": f"bafk-record-{record}", "purpose": "TREAT"}
        out.append(
            ledger.sign_call(site, "access", "access", args, nonce=base[site.verify_key.to_bytes()] + i // N_SITES)
        )
    return out


@pytest.mark.benchmark(group="access-20k")
def test_access_decisions_fedledger(benchmark, people, tmp_path):
    sites = people[1]

    def setup():  # type: ignore[no-untyped-def]
        ledger = _provisioned(tmp_path, people)
        return (ledger, _access_calls(ledger, sites)), {}

    def run(ledger: Ledger, calls: list[Transaction]) -> None:
        results = ledger.call_many(calls)
        assert sum(r.accepted for r in results) == N_CALLS - len(range(0, N_CALLS, 3))
        assert all(r.recorded for r in results)
        ledger.close()

    benchmark.pedantic(run, setup=setup, rounds=5, iterations=1)
    benchmark.extra_info["decisions_per_s"] = N_CALLS / benchmark.stats.stats.median


@pytest.mark.benchmark(group="access-20k")
def test_access_decisions_with_signing_fedledger(benchmark, people, tmp_path):
    sites = people[1]

    def setup():  # type: ignore[no-untyped-def]
        return (_provisioned(tmp_path, people),), {}

    def run(ledger: Ledger) -> None:
        results = ledger.call_many(_access_calls(ledger, sites))
        assert all(r.recorded for r in results)
        ledger.close()

    benchmark.pedantic(run, setup=setup, rounds=3, iterations=1)
    benchmark.extra_info["decisions_per_s"] = N_CALLS / benchmark.stats.stats.median


@pytest.mark.benchmark(group="access-20k")
def test_raw_ledger_notes_same_count(benchmark, people, tmp_path):
    """The peer: the same ledger ingesting pre-signed notes of the same size, no contract."""
    vals, sites, admin, _ = people

    def setup():  # type: ignore[no-untyped-def]
        ledger = _ledger(tmp_path, people, contracts=())
        probe = _access_calls(_provisioned(tmp_path, people), sites)[0]
        bare = Transaction.create(sites[0], kind="note", payload={"pad": ""}, nonce=0, chain_id=CHAIN)
        pad = "x" * max(0, len(probe.body) - len(bare.body) - 1)
        notes = [
            Transaction.create(
                sites[i % N_SITES], kind="note", payload={"pad": pad}, nonce=i // N_SITES, chain_id=CHAIN
            )
            for i in range(N_CALLS)
        ]
        return (ledger, notes), {}

    def run(ledger: Ledger, notes: list[Transaction]) -> None:
        while notes:
            results = ledger.submit_many(notes[:10_000])
            assert all(r.accepted for r in results)
            ledger.commit()
            notes = notes[10_000:]
        ledger.close()

    benchmark.pedantic(run, setup=setup, rounds=5, iterations=1)
    benchmark.extra_info["tx_per_s"] = N_CALLS / benchmark.stats.stats.median


@pytest.mark.benchmark(group="state-root-per-block")
@pytest.mark.parametrize("changed", [53, 10_003])
def test_state_root_update_fedledger(benchmark, changed):
    """One block's state-root update: 50 senders' nonces (+3 fixed entries), or 10,000 keys,
    in a state already holding 100,000 entries."""
    tree = StateTree()
    tree.update({os.urandom(16): b"v" * 40 for _ in range(100_000)})
    keys = [os.urandom(16) for _ in range(changed)]
    counter = itertools.count()

    def run() -> None:
        n = next(counter).to_bytes(8, "big")
        tree.update({k: n for k in keys})

    benchmark.pedantic(run, rounds=20, iterations=1)
    benchmark.extra_info["us_per_entry"] = benchmark.stats.stats.median / changed * 1e6
