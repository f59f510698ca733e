"""Merkle kernel speed, with the peers in the same run: a plain-Python hashlib loop and pymerkle.

    python -m pytest benches/bench_merkle.py --benchmark-only --benchmark-json=.benchmarks/merkle.json
    python benches/report.py .benchmarks/merkle.json

Each group holds fedledger and its peers on identical inputs; the ratio of medians is the figure.
"""

from __future__ import annotations

import hashlib
import random
import warnings

import numpy as np
import pytest

from fedledger.crypto import merkle

pymerkle = pytest.importorskip("pymerkle")

N_ROOT = 1_000_000
N_PROOF = 1_000_000
N_APPEND = 100_000


def _leaves(n: int, seed: int = 1) -> list[bytes]:
    rng = np.random.default_rng(seed)
    blob = rng.bytes(32 * n)
    return [blob[i : i + 32] for i in range(0, 32 * n, 32)]


@pytest.fixture(scope="module")
def leaves_1m() -> list[bytes]:
    return _leaves(N_ROOT)


@pytest.fixture(scope="module")
def expected_root_1m(leaves_1m) -> bytes:
    return hashlib_root(leaves_1m)


def hashlib_root(leaves: list[bytes]) -> bytes:
    """The plain-Python baseline: hashlib per leaf and per node, bottom-up (RFC 9162 shape)."""
    sha = hashlib.sha256
    level = [sha(b"\x00" + x).digest() for x in leaves]
    if not level:
        return sha(b"").digest()
    while len(level) > 1:
        nxt = [sha(b"\x01" + level[i] + level[i + 1]).digest() for i in range(0, len(level) - 1, 2)]
        if len(level) % 2:
            nxt.append(level[-1])
        level = nxt
    return level[0]


def pymerkle_root(leaves: list[bytes]) -> bytes:
    tree = pymerkle.InmemoryTree(algorithm="sha256")
    for x in leaves:
        tree.append_entry(x)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        return tree.get_state()  # type: ignore[no-any-return]


# --- root of 10^6 32-byte leaves -------------------------------------------------------------


@pytest.mark.benchmark(group="root-1e6")
def test_root_fedledger_list(benchmark, leaves_1m, expected_root_1m):
    assert benchmark(merkle.root, leaves_1m) == expected_root_1m


@pytest.mark.benchmark(group="root-1e6")
def test_root_fedledger_array(benchmark, leaves_1m, expected_root_1m):
    arr = np.frombuffer(b"".join(leaves_1m), np.uint8).reshape(-1, 32)
    assert benchmark(merkle.root, arr) == expected_root_1m


@pytest.mark.benchmark(group="root-1e6")
def test_root_hashlib_loop(benchmark, leaves_1m, expected_root_1m):
    result = benchmark.pedantic(hashlib_root, args=(leaves_1m,), rounds=3, iterations=1)
    assert result == expected_root_1m


@pytest.mark.benchmark(group="root-1e6")
def test_root_pymerkle(benchmark, leaves_1m, expected_root_1m):
    result = benchmark.pedantic(pymerkle_root, args=(leaves_1m,), rounds=1, iterations=1)
    assert result == expected_root_1m


# --- inclusion proofs at 10^6 -----------------------------------------------------------------


@pytest.fixture(scope="module")
def trees_1m(leaves_1m):
    ours = merkle.MerkleTree(leaves_1m)
    peer = pymerkle.InmemoryTree(algorithm="sha256")
    for x in leaves_1m[:N_PROOF]:
        peer.append_entry(x)
    return ours, peer


def _indices(k: int = 4096) -> list[int]:
    rnd = random.Random(7)
    return [rnd.randrange(N_PROOF) for _ in range(k)]


@pytest.mark.benchmark(group="inclusion-prove-1e6")
def test_prove_fedledger(benchmark, trees_1m):
    ours, _ = trees_1m
    idx = iter(_indices() * 10_000)
    benchmark(lambda: ours.inclusion_proof(next(idx)))


@pytest.mark.benchmark(group="inclusion-prove-1e6")
def test_prove_pymerkle(benchmark, trees_1m):
    _, peer = trees_1m
    idx = iter(_indices() * 100)
    benchmark.pedantic(lambda: peer.prove_inclusion(next(idx) + 1, N_PROOF), rounds=2000, iterations=1)


@pytest.mark.benchmark(group="inclusion-verify-1e6")
def test_verify_fedledger(benchmark, trees_1m, leaves_1m):
    ours, _ = trees_1m
    root = ours.root
    cases = [(leaves_1m[i], i, ours.inclusion_proof(i)) for i in _indices(256)]
    it = iter(cases * 100_000)

    def run() -> None:
        leaf, i, proof = next(it)
        merkle.verify_inclusion(leaf, i, N_PROOF, proof, root)

    benchmark(run)


@pytest.mark.benchmark(group="inclusion-verify-1e6")
def test_verify_pymerkle(benchmark, trees_1m, leaves_1m):
    _, peer = trees_1m
    root = peer.get_root(N_PROOF)
    cases = [(peer.get_leaf(i + 1), peer.prove_inclusion(i + 1, N_PROOF)) for i in _indices(256)]
    it = iter(cases * 1_000)

    def run() -> None:
        base, proof = next(it)
        pymerkle.verify_inclusion(base, root, proof)

    benchmark.pedantic(run, rounds=5000, iterations=1)


# --- appending 10^5 leaves one by one ---------------------------------------------------------


@pytest.mark.benchmark(group="append-1e5")
def test_append_fedledger(benchmark):
    leaves = _leaves(N_APPEND, seed=2)

    def run() -> bytes:
        tree = merkle.MerkleTree()
        for x in leaves:
            tree.append(x)
        return tree.root

    assert benchmark.pedantic(run, rounds=5, iterations=1) == merkle.root(leaves)


@pytest.mark.benchmark(group="append-1e5")
def test_append_pymerkle(benchmark):
    leaves = _leaves(N_APPEND, seed=2)

    def run() -> bytes:
        tree = pymerkle.InmemoryTree(algorithm="sha256")
        for x in leaves:
            tree.append_entry(x)
        return tree.get_root()  # type: ignore[no-any-return]

    assert benchmark.pedantic(run, rounds=1, iterations=1) == merkle.root(leaves)
