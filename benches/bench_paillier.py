"""Packed Paillier (fedledger) against phe + gmpy2, per gradient element, same run.

2048-bit key (the same modulus for both libraries), 16-bit values, headroom for 100
clients. phe handles one number per ciphertext, so it gets a few dozen elements and the
times are normalised per element (see ``extra_info["per_element_us"]``).

Run:  PYTHONPATH=src python -m pytest benches/bench_paillier.py --benchmark-only
The summary table in docs/benchmarks-paillier.md comes from benches/paillier_report.py,
which runs the same operations and prints medians and ratios.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import phe
import pytest

from fedledger.crypto import paillier as P

KEY_BITS = 2048
BITS = 16
MAX_SUMMANDS = 100
PHE_ELEMENTS = 24
OUR_CIPHERTEXTS = 48  # x 88 slots per ciphertext = 4224 elements
ADD_FACTOR = 40


@pytest.fixture(scope="module")
def keys() -> tuple[P.PublicKey, P.PrivateKey, Any, Any]:
    pk, sk = P.generate_keypair(KEY_BITS)
    pk.precompute()  # the fixed-base table is built once per key, outside the timings
    return pk, sk, pk.to_phe(), sk.to_phe()


def _ours_count(pk: P.PublicKey) -> int:
    lay = P.PackingLayout.create(pk.bits, 1, bits=BITS, clip=1.0, max_summands=MAX_SUMMANDS)
    return lay.slots * OUR_CIPHERTEXTS


def _per_element(benchmark: Any, elements: int) -> None:
    benchmark.extra_info["elements"] = elements
    stats = benchmark.stats.stats if hasattr(benchmark.stats, "stats") else None
    if stats is not None:
        benchmark.extra_info["per_element_us"] = stats.median / elements * 1e6


def test_encrypt_fedledger(benchmark: Any, keys: Any) -> None:
    pk, _, _, _ = keys
    x = np.random.default_rng(1).uniform(-1, 1, _ours_count(pk))
    benchmark.pedantic(lambda: pk.encrypt_vector(x, bits=BITS, max_summands=MAX_SUMMANDS), rounds=5, iterations=1)
    _per_element(benchmark, x.size)


def test_encrypt_phe(benchmark: Any, keys: Any) -> None:
    _, _, ppk, _ = keys
    x = np.random.default_rng(1).uniform(-1, 1, PHE_ELEMENTS).tolist()
    benchmark.pedantic(lambda: [ppk.encrypt(v) for v in x], rounds=3, iterations=1)
    _per_element(benchmark, len(x))


def test_add_fedledger(benchmark: Any, keys: Any) -> None:
    pk, _, _, _ = keys
    rng = np.random.default_rng(2)
    count = _ours_count(pk) * ADD_FACTOR  # additions are cheap: time enough rows to amortise threads
    a = pk.encrypt_vector(rng.uniform(-1, 1, count), bits=BITS, max_summands=MAX_SUMMANDS)
    b = pk.encrypt_vector(rng.uniform(-1, 1, count), bits=BITS, max_summands=MAX_SUMMANDS)
    benchmark.pedantic(lambda: a + b, rounds=20, iterations=1)
    _per_element(benchmark, len(a))


def test_add_phe(benchmark: Any, keys: Any) -> None:
    _, _, ppk, _ = keys
    rng = np.random.default_rng(2)
    a = [ppk.encrypt(v) for v in rng.uniform(-1, 1, PHE_ELEMENTS)]
    b = [ppk.encrypt(v) for v in rng.uniform(-1, 1, PHE_ELEMENTS)]
    benchmark.pedantic(lambda: [u + v for u, v in zip(a, b)], rounds=20, iterations=1)
    _per_element(benchmark, len(a))


def test_add_phe_integer_encodings(benchmark: Any, keys: Any) -> None:
    """phe's + without exponent rescaling (both operands encode integers)."""
    _, _, ppk, _ = keys
    rng = np.random.default_rng(2)
    a = [ppk.encrypt(int(v)) for v in rng.integers(-32767, 32768, PHE_ELEMENTS)]
    b = [ppk.encrypt(int(v)) for v in rng.integers(-32767, 32768, PHE_ELEMENTS)]
    benchmark.pedantic(lambda: [u + v for u, v in zip(a, b)], rounds=20, iterations=1)
    _per_element(benchmark, len(a))


def test_decrypt_fedledger(benchmark: Any, keys: Any) -> None:
    pk, sk, _, _ = keys
    a = pk.encrypt_vector(
        np.random.default_rng(3).uniform(-1, 1, _ours_count(pk)), bits=BITS, max_summands=MAX_SUMMANDS
    )
    benchmark.pedantic(lambda: sk.decrypt_vector(a), rounds=3, iterations=1)
    _per_element(benchmark, len(a))


def test_decrypt_phe(benchmark: Any, keys: Any) -> None:
    _, _, ppk, psk = keys
    a = [ppk.encrypt(v) for v in np.random.default_rng(3).uniform(-1, 1, PHE_ELEMENTS)]
    benchmark.pedantic(lambda: [psk.decrypt(v) for v in a], rounds=3, iterations=1)
    _per_element(benchmark, len(a))


def test_phe_uses_gmpy2() -> None:
    assert phe.util.HAVE_GMP, "install gmpy2 so that phe runs at its fastest"
