"""RFC 6962 / RFC 9162 reference values (tests/vectors/rfc6962_merkle.json), and their corruptions."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from fedledger.crypto import merkle
from fedledger.errors import InvalidProof

VEC = json.loads((Path(__file__).parent / "vectors" / "rfc6962_merkle.json").read_text())
LEAVES = [bytes.fromhex(x) for x in VEC["leaf_inputs_hex"]]
ROOTS = [bytes.fromhex(x) for x in VEC["roots_by_size_hex"]]
SOME_HASH = bytes.fromhex("abacaba000000000000000000000000000000000000000000060061e00123456")


def h(xs: list[str]) -> list[bytes]:
    return [bytes.fromhex(x) for x in xs]


@pytest.mark.parametrize("size", range(9))
def test_roots_for_sizes_0_to_8(size: int) -> None:
    assert merkle.root(LEAVES[:size]) == ROOTS[size]
    assert merkle.MerkleTree(LEAVES[:size]).root == ROOTS[size]
    assert merkle.MerkleTree(LEAVES).root_at(size) == ROOTS[size]


def test_appending_one_by_one_matches_every_root() -> None:
    tree = merkle.MerkleTree()
    assert tree.root == ROOTS[0] == merkle.EMPTY_ROOT
    for i, leaf in enumerate(LEAVES):
        assert tree.append(leaf) == i
        assert tree.root == ROOTS[i + 1]


def test_node_hashes_by_level() -> None:
    levels = [h(level) for level in VEC["node_hashes_by_level_hex"]]
    assert [merkle.leaf_hash(x) for x in LEAVES] == levels[0]
    assert np.array_equal(merkle.leaf_hashes(LEAVES), np.frombuffer(b"".join(levels[0]), np.uint8).reshape(8, 32))
    for k in range(1, len(levels)):
        below = levels[k - 1]
        assert [merkle.node_hash(below[2 * i], below[2 * i + 1]) for i in range(len(below) // 2)] == levels[k]


@pytest.mark.parametrize("case", VEC["inclusion"], ids=lambda c: f"{c['index']}-of-{c['size']}")
def test_inclusion_vectors(case: dict) -> None:
    i, n, proof = case["index"], case["size"], h(case["proof"])
    tree = merkle.MerkleTree(LEAVES[:n])
    assert tree.inclusion_proof(i) == proof
    assert merkle.MerkleTree(LEAVES).inclusion_proof(i, n) == proof
    merkle.verify_inclusion(LEAVES[i], i, n, proof, ROOTS[n])


@pytest.mark.parametrize("case", VEC["consistency"], ids=lambda c: f"{c['old_size']}-to-{c['new_size']}")
def test_consistency_vectors(case: dict) -> None:
    m, n, proof = case["old_size"], case["new_size"], h(case["proof"])
    assert merkle.MerkleTree(LEAVES[:n]).consistency_proof(m) == proof
    assert merkle.MerkleTree(LEAVES).consistency_proof(m, n) == proof
    merkle.verify_consistency(m, n, ROOTS[m], ROOTS[n], proof)


def _inclusion_probes(i: int, n: int, proof: list[bytes], root: bytes, leaf: bytes):
    """The corruptions transparency-dev/merkle applies to every good proof, plus ours."""
    yield "index-1", (leaf, i - 1, n, proof, root)
    yield "index+1", (leaf, i + 1, n, proof, root)
    yield "index^2", (leaf, i ^ 2, n, proof, root)
    yield "size*2", (leaf, i, n * 2, proof, root)
    yield "size/2", (leaf, i, n // 2, proof, root)
    yield "wrong leaf", (b"WrongLeaf", i, n, proof, root)
    yield "empty root", (leaf, i, n, proof, merkle.EMPTY_ROOT)
    yield "random root", (leaf, i, n, proof, SOME_HASH)
    yield "trailing root", (leaf, i, n, proof + [root], root)
    yield "preceding root", (leaf, i, n, [root] + proof, root)
    yield "trailing garbage", (leaf, i, n, proof + [b""], root)
    yield "preceding garbage", (leaf, i, n, [b""] + proof, root)
    for j in range(len(proof)):
        for bit in range(0, 256, 37):
            bad = [bytearray(p) for p in proof]
            bad[j][bit // 8] ^= 1 << (bit % 8)
            yield f"flip proof[{j}] bit {bit}", (leaf, i, n, [bytes(b) for b in bad], root)
    if proof:
        yield "truncated", (leaf, i, n, proof[:-1], root)
    if len(proof) > 1:
        yield "inserted", (leaf, i, n, [proof[0], SOME_HASH] + proof[1:], root)


@pytest.mark.parametrize("case", VEC["inclusion"], ids=lambda c: f"{c['index']}-of-{c['size']}")
def test_corrupted_inclusion_proofs_fail(case: dict) -> None:
    i, n, proof = case["index"], case["size"], h(case["proof"])
    for desc, (leaf, idx, size, p, root) in _inclusion_probes(i, n, proof, ROOTS[n], LEAVES[i]):
        if idx < 0 or idx >= size:
            continue  # argument errors, covered in test_merkle_errors
        with pytest.raises(InvalidProof):
            merkle.verify_inclusion(leaf, idx, size, p, root)
            pytest.fail(f"accepted corrupted proof: {desc}")


@pytest.mark.parametrize(
    "case", [c for c in VEC["consistency"] if c["proof"]], ids=lambda c: f"{c['old_size']}-to-{c['new_size']}"
)
def test_corrupted_consistency_proofs_fail(case: dict) -> None:
    m, n, proof = case["old_size"], case["new_size"], h(case["proof"])
    r1, r2 = ROOTS[m], ROOTS[n]
    probes = {
        "old-1": (m - 1, n, r1, r2, proof),
        "old+1": (m + 1, n, r1, r2, proof),
        "old^2": (m ^ 2, n, r1, r2, proof),
        "new*2": (m, n * 2, r1, r2, proof),
        "swapped roots": (m, n, r2, r1, proof),
        "wrong old root": (m, n, SOME_HASH, r2, proof),
        "wrong new root": (m, n, r1, SOME_HASH, proof),
        "empty proof": (m, n, r1, r2, []),
        "trailing old root": (m, n, r1, r2, proof + [r1]),
        "trailing new root": (m, n, r1, r2, proof + [r2]),
        "preceding old root": (m, n, r1, r2, [r1] + proof),
        "preceding proof[0]": (m, n, r1, r2, [proof[0]] + proof),
        "trailing garbage": (m, n, r1, r2, proof + [b""]),
        "truncated": (m, n, r1, r2, proof[:-1]),
    }
    for j in range(len(proof)):
        bad = bytearray(proof[j])
        bad[0] ^= 16
        probes[f"flip proof[{j}]"] = (m, n, r1, r2, proof[:j] + [bytes(bad)] + proof[j + 1 :])
    for desc, (a, b, x, y, p) in probes.items():
        if a > b:
            continue
        with pytest.raises(InvalidProof):
            merkle.verify_consistency(a, b, x, y, p)
            pytest.fail(f"accepted corrupted consistency proof: {desc}")


def test_trivial_consistency_rules() -> None:
    r = ROOTS[3]
    merkle.verify_consistency(0, 0, merkle.EMPTY_ROOT, merkle.EMPTY_ROOT, [])
    merkle.verify_consistency(0, 3, merkle.EMPTY_ROOT, r, [])
    merkle.verify_consistency(3, 3, r, r, [])
    with pytest.raises(InvalidProof, match="differ"):
        merkle.verify_consistency(3, 3, r, ROOTS[4], [])
    with pytest.raises(InvalidProof, match="must be empty"):
        merkle.verify_consistency(3, 3, r, r, [r])
    with pytest.raises(InvalidProof, match="empty tree"):
        merkle.verify_consistency(0, 3, r, r, [])
    with pytest.raises(InvalidProof, match="must be empty"):
        merkle.verify_consistency(0, 1, merkle.EMPTY_ROOT, ROOTS[1], [merkle.EMPTY_ROOT])
