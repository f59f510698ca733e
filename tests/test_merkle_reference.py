"""The native kernels against the plain-Python RFC 9162 oracle (tests/reference/rfc9162.py)."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st
from reference import rfc9162 as ref

import fedledger
from fedledger.crypto import merkle
from fedledger.errors import InvalidProof

# Edge sizes: 0, 1, powers of two and their neighbours, and sizes past 10^4.
EDGE_SIZES = sorted({0, 1, 2, 3} | {2**k + d for k in range(2, 15) for d in (-1, 0, 1)} | {10_000, 10_007})


def leaves_of(n: int, seed: int = 0) -> list[bytes]:
    rng = np.random.default_rng(seed)
    lens = rng.integers(0, 70, size=n)
    return [rng.bytes(int(k)) for k in lens]


@pytest.mark.parametrize("n", EDGE_SIZES)
def test_roots_match_reference_at_edge_sizes(n: int) -> None:
    leaves = leaves_of(n, seed=n)
    expected = ref.mth(leaves)
    assert merkle.root(leaves) == expected
    assert merkle.MerkleTree(leaves).root == expected
    records = np.frombuffer(b"".join(x.ljust(70, b"\x00") for x in leaves), np.uint8).reshape(n, 70)
    assert merkle.root(records) == ref.mth([bytes(r) for r in records])


@pytest.mark.parametrize("threads", [1, 2, 3])
def test_root_is_independent_of_thread_count(threads: int) -> None:
    leaves = leaves_of(20_001, seed=7)
    before = fedledger.build_info()["num_threads"]
    fedledger.set_num_threads(threads)
    try:
        assert merkle.root(leaves) == merkle.MerkleTree(leaves).root == ref.mth(leaves)
    finally:
        fedledger.set_num_threads(before)


@given(n=st.integers(0, 300), seed=st.integers(0, 2**32 - 1))
def test_root_and_every_prefix_root(n: int, seed: int) -> None:
    leaves = leaves_of(n, seed)
    tree = merkle.MerkleTree()
    for x in leaves:
        tree.append(x)
    assert tree.root == ref.mth(leaves)
    for m in {0, min(1, n), n // 2, max(n - 1, 0), n}:
        assert tree.root_at(m) == ref.mth(leaves[:m])


@given(n=st.integers(1, 2_000), seed=st.integers(0, 2**32 - 1), data=st.data())
def test_inclusion_proofs_match_reference(n: int, seed: int, data: st.DataObject) -> None:
    leaves = leaves_of(n, seed)
    tree = merkle.MerkleTree(leaves)
    size = data.draw(st.integers(1, n), label="size")
    index = data.draw(st.integers(0, size - 1), label="index")
    proof = tree.inclusion_proof(index, size)
    assert proof == ref.path(index, leaves[:size])
    root = ref.mth(leaves[:size])
    merkle.verify_inclusion(leaves[index], index, size, proof, root)
    assert ref.verify_inclusion(leaves[index], index, size, proof, root)


@given(n=st.integers(1, 2_000), seed=st.integers(0, 2**32 - 1), data=st.data())
def test_consistency_proofs_match_reference(n: int, seed: int, data: st.DataObject) -> None:
    leaves = leaves_of(n, seed)
    tree = merkle.MerkleTree(leaves)
    new = data.draw(st.integers(1, n), label="new_size")
    old = data.draw(st.integers(1, new), label="old_size")
    proof = tree.consistency_proof(old, new)
    expected = ref.proof(old, leaves[:new])
    assert proof == expected
    r1, r2 = ref.mth(leaves[:old]), ref.mth(leaves[:new])
    merkle.verify_consistency(old, new, r1, r2, proof)
    if old < new:
        assert ref.verify_consistency(old, new, r1, r2, proof)


@pytest.mark.parametrize("n", [1023, 1024, 1025, 10_000])
def test_every_proof_in_a_large_tree(n: int) -> None:
    leaves = leaves_of(n, seed=n)
    tree = merkle.MerkleTree(leaves)
    hashes = [ref.leaf_hash(x) for x in leaves]
    root = tree.root
    assert root == ref.mth(leaves)
    for index in range(0, n, max(1, n // 97)):
        proof = tree.inclusion_proof(index)
        merkle.verify_inclusion(leaves[index], index, n, proof, root)
        assert ref.verify_inclusion(leaves[index], index, n, proof, root)
    for old in range(1, n, max(1, n // 53)):
        proof = tree.consistency_proof(old)
        merkle.verify_consistency(old, n, tree.root_at(old), root, proof)
        assert ref.verify_consistency(old, n, tree.root_at(old), root, proof)
    assert np.array_equal(tree.leaf_hashes(), np.frombuffer(b"".join(hashes), np.uint8).reshape(n, 32))


@given(n=st.integers(1, 400), seed=st.integers(0, 2**32 - 1), data=st.data())
def test_kernel_and_reference_verifiers_agree_on_mutated_proofs(n: int, seed: int, data: st.DataObject) -> None:
    leaves = leaves_of(n, seed)
    tree = merkle.MerkleTree(leaves)
    index = data.draw(st.integers(0, n - 1))
    proof = tree.inclusion_proof(index)
    mutation = data.draw(st.sampled_from(["flip", "drop", "add", "swap", "index", "size"]))
    claimed_index, claimed_size = index, n
    if mutation == "flip" and proof:
        j = data.draw(st.integers(0, len(proof) - 1))
        bit = data.draw(st.integers(0, 255))
        b = bytearray(proof[j])
        b[bit // 8] ^= 1 << (bit % 8)
        proof[j] = bytes(b)
    elif mutation == "drop" and proof:
        del proof[data.draw(st.integers(0, len(proof) - 1))]
    elif mutation == "add":
        proof.insert(data.draw(st.integers(0, len(proof))), data.draw(st.binary(min_size=32, max_size=32)))
    elif mutation == "swap" and len(proof) > 1:
        proof[0], proof[-1] = proof[-1], proof[0]
    elif mutation == "index":
        claimed_index = data.draw(st.integers(0, n - 1))
    elif mutation == "size":
        claimed_size = data.draw(st.integers(claimed_index + 1, 2 * n + 1))
    expected = ref.verify_inclusion(leaves[index], claimed_index, claimed_size, proof, tree.root)
    try:
        merkle.verify_inclusion(leaves[index], claimed_index, claimed_size, proof, tree.root)
        got = True
    except InvalidProof:
        got = False
    assert got == expected


def test_extend_in_chunks_equals_one_build() -> None:
    leaves = leaves_of(5_000, seed=3)
    whole = merkle.MerkleTree(leaves)
    chunked = merkle.MerkleTree()
    for start, stop in [(0, 1), (1, 2), (2, 7), (7, 4096), (4096, 4097), (4097, 5_000)]:
        chunked.extend(leaves[start:stop])
        assert chunked.root == ref.mth(leaves[:stop])
    assert chunked.root == whole.root
    rebuilt = merkle.MerkleTree.from_leaf_hashes(whole.leaf_hashes())
    assert rebuilt.root == whole.root
    assert rebuilt.inclusion_proof(4321) == whole.inclusion_proof(4321)
    assert merkle.root_of_leaf_hashes(whole.leaf_hashes()) == whole.root


LARGE_SIZES = [n for n in EDGE_SIZES if n >= 1000]


@given(n=st.sampled_from(LARGE_SIZES) | st.integers(10_000, 12_000), seed=st.integers(0, 2**32 - 1), data=st.data())
def test_proofs_match_reference_in_trees_past_ten_thousand(n: int, seed: int, data: st.DataObject) -> None:
    leaves = leaves_of(n, seed)
    tree = merkle.MerkleTree(leaves)
    index = data.draw(st.integers(0, n - 1), label="index")
    assert tree.inclusion_proof(index) == ref.path(index, leaves)
    old = data.draw(st.integers(1, n), label="old_size")
    assert tree.consistency_proof(old) == ref.proof(old, leaves)
    assert tree.root_at(old) == ref.mth(leaves[:old])


@given(n=st.integers(0, 3000), seed=st.integers(0, 2**32 - 1), data=st.data())
def test_rollback_then_regrow_equals_a_fresh_tree(n: int, seed: int, data: st.DataObject) -> None:
    leaves = leaves_of(n, seed)
    tree = merkle.MerkleTree(leaves)
    keep = data.draw(st.integers(0, n), label="keep")
    tree.rollback(keep)
    assert tree.size == keep
    assert tree.root == ref.mth(leaves[:keep])
    other = leaves_of(data.draw(st.integers(0, 500), label="more"), seed + 1)
    tree.extend(other)
    assert tree.root == merkle.root(leaves[:keep] + other)
    if tree.size:
        i = data.draw(st.integers(0, tree.size - 1), label="index")
        assert tree.inclusion_proof(i) == ref.path(i, leaves[:keep] + other)
