"""Shamir split/combine of a 32-byte secret at n=100, t=51, with PyCryptodome in the same run.

    PYTHONPATH=src python -m pytest benches/bench_shamir.py --benchmark-only \
        --benchmark-json=.benchmarks/shamir.json

PyCryptodome's ``Crypto.Protocol.SecretSharing.Shamir`` shares 16-byte secrets (GF(2^128)),
so the peer splits the 32-byte secret as two 16-byte halves and combines both: the same work
as one 32-byte secret. fedledger's time includes the SHA-256 commitment, the nonce limbs and
building the Share objects; combine includes validating every share and checking the
commitment.
"""

from __future__ import annotations

import pytest

from fedledger.crypto import shamir

Shamir = pytest.importorskip("Crypto.Protocol.SecretSharing").Shamir

N, T = 100, 51
SECRET = bytes(range(32))
ROUNDS = 30


@pytest.fixture(scope="module", autouse=True)
def warm() -> None:
    # Keep first-call effects (page faults, allocator warm-up) out of the timing.
    shamir.combine(shamir.split(SECRET, T, N)[:T])


@pytest.mark.benchmark(group="shamir split 32 B n=100 t=51")
def test_split_fedledger(benchmark) -> None:  # type: ignore[no-untyped-def]
    shares = benchmark.pedantic(shamir.split, args=(SECRET, T, N), rounds=ROUNDS, iterations=1, warmup_rounds=2)
    assert len(shares) == N


@pytest.mark.benchmark(group="shamir split 32 B n=100 t=51")
def test_split_pycryptodome(benchmark) -> None:  # type: ignore[no-untyped-def]
    def split() -> tuple[list, list]:
        return Shamir.split(T, N, SECRET[:16]), Shamir.split(T, N, SECRET[16:])

    a, b = benchmark.pedantic(split, rounds=ROUNDS // 3, iterations=1, warmup_rounds=1)
    assert len(a) == len(b) == N


@pytest.mark.benchmark(group="shamir combine 32 B n=100 t=51")
def test_combine_fedledger(benchmark) -> None:  # type: ignore[no-untyped-def]
    shares = shamir.split(SECRET, T, N)[::-1][:T]
    got = benchmark.pedantic(shamir.combine, args=(shares,), rounds=ROUNDS, iterations=1, warmup_rounds=2)
    assert got == SECRET


@pytest.mark.benchmark(group="shamir combine 32 B n=100 t=51")
def test_combine_pycryptodome(benchmark) -> None:  # type: ignore[no-untyped-def]
    a = Shamir.split(T, N, SECRET[:16])[::-1][:T]
    b = Shamir.split(T, N, SECRET[16:])[::-1][:T]

    def combine() -> bytes:
        return Shamir.combine(a) + Shamir.combine(b)

    got = benchmark.pedantic(combine, rounds=ROUNDS // 3, iterations=1, warmup_rounds=1)
    assert got == SECRET
