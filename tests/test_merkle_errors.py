"""Bad input gets a typed error naming the argument; attacks on the tree shape do not verify."""

from __future__ import annotations

import threading

import numpy as np
import pytest

from fedledger.crypto import merkle
from fedledger.errors import FedLedgerError, InvalidArgument, InvalidArgumentType, InvalidProof

LEAVES = [bytes([i]) * (i + 1) for i in range(8)]


@pytest.fixture
def tree() -> merkle.MerkleTree:
    return merkle.MerkleTree(LEAVES)


def test_second_preimage_interior_node_as_leaf_does_not_verify(tree: merkle.MerkleTree) -> None:
    # Without domain separation, the concatenation of two children would "be" a leaf of the
    # 4-leaf tree one level up. With 0x00/0x01 prefixes it must not verify anywhere.
    h0, h1 = merkle.leaf_hash(LEAVES[0]), merkle.leaf_hash(LEAVES[1])
    forged_leaf = h0 + h1
    root = tree.root
    level1 = [merkle.node_hash(merkle.leaf_hash(LEAVES[i]), merkle.leaf_hash(LEAVES[i + 1])) for i in range(0, 8, 2)]
    upper = merkle.MerkleTree.from_leaf_hashes(np.frombuffer(b"".join(level1), np.uint8).reshape(4, 32))
    proof_from_upper = upper.inclusion_proof(0)
    for size in (4, 8):
        for index in range(size):
            for proof in (proof_from_upper, tree.inclusion_proof(0)[1:], tree.inclusion_proof(index, size)):
                with pytest.raises(InvalidProof):
                    merkle.verify_inclusion(forged_leaf, index, size, proof, root)
    assert merkle.leaf_hash(forged_leaf) != merkle.node_hash(h0, h1)
    # And an interior node hash itself presented as leaf data fails too.
    with pytest.raises(InvalidProof):
        merkle.verify_inclusion(merkle.node_hash(h0, h1), 0, 4, proof_from_upper[:1], merkle.root(LEAVES[:4]))


@pytest.mark.parametrize("bad", ["text", 3, None, 1.5, ["list"]])
def test_non_bytes_leaf(bad: object) -> None:
    with pytest.raises(InvalidArgumentType, match=r"leaves\[1\]: expected bytes"):
        merkle.root([b"ok", bad])  # type: ignore[list-item]
    with pytest.raises(InvalidArgumentType, match=r"leaves\[1\]"):
        merkle.MerkleTree([b"ok", bad])  # type: ignore[list-item]
    with pytest.raises(InvalidArgumentType, match=r"leaf: expected bytes"):
        merkle.MerkleTree().append(bad)  # type: ignore[arg-type]
    with pytest.raises(InvalidArgumentType, match=r"leaf_data"):
        merkle.verify_inclusion(bad, 0, 1, [], merkle.EMPTY_ROOT)  # type: ignore[arg-type]


def test_bytes_like_leaves_are_accepted() -> None:
    expected = merkle.root([b"ab", b"cd"])
    assert merkle.root([bytearray(b"ab"), memoryview(b"cd")]) == expected  # type: ignore[list-item]


def test_leaves_given_as_single_bytes_or_bad_array() -> None:
    with pytest.raises(InvalidArgumentType, match="single bytes"):
        merkle.root(b"abc")
    with pytest.raises(InvalidArgumentType, match="dtype uint8"):
        merkle.root(np.zeros((3, 4), dtype=np.int32))
    with pytest.raises(InvalidArgument, match="2-D"):
        merkle.root(np.zeros(12, dtype=np.uint8))
    with pytest.raises(InvalidArgumentType, match="sequence of bytes"):
        merkle.root(42)  # type: ignore[arg-type]


def test_index_out_of_range(tree: merkle.MerkleTree) -> None:
    with pytest.raises(InvalidArgument, match=r"index: must be < size \(8\), got 8") as info:
        tree.inclusion_proof(8)
    assert info.value.argument == "index"
    with pytest.raises(InvalidArgument, match=r"index: must be < size \(3\), got 5"):
        tree.inclusion_proof(5, 3)
    with pytest.raises(InvalidArgument, match="index"):
        merkle.verify_inclusion(b"x", 8, 8, [], tree.root)
    with pytest.raises(InvalidArgument, match="index"):
        tree.leaf_hash(8)


def test_negative_and_wrong_typed_sizes(tree: merkle.MerkleTree) -> None:
    with pytest.raises(InvalidArgument, match="size: must be >= 0, got -1"):
        tree.root_at(-1)
    with pytest.raises(InvalidArgument, match="size: must be >= 0"):
        merkle.verify_inclusion(b"x", 0, -1, [], tree.root)
    with pytest.raises(InvalidArgument, match="index: must be >= 0"):
        tree.inclusion_proof(-1)
    with pytest.raises(InvalidArgumentType, match="size: expected int, got bool"):
        tree.root_at(True)
    with pytest.raises(InvalidArgumentType, match="index: expected int, got float"):
        tree.inclusion_proof(1.0)  # type: ignore[arg-type]
    with pytest.raises(InvalidArgument, match=r"size: must be <= the tree size \(8\), got 9"):
        tree.root_at(9)
    assert tree.root_at(np.int64(3)) == merkle.root(LEAVES[:3])  # type: ignore[arg-type]


def test_old_size_greater_than_new_size(tree: merkle.MerkleTree) -> None:
    with pytest.raises(InvalidArgument, match=r"old_size: must be <= new_size \(3\), got 5"):
        tree.consistency_proof(5, 3)
    with pytest.raises(InvalidArgument, match="old_size"):
        merkle.verify_consistency(5, 3, tree.root, tree.root, [])
    with pytest.raises(InvalidArgument, match="new_size"):
        tree.consistency_proof(1, 9)


def test_malformed_roots_and_proof_nodes(tree: merkle.MerkleTree) -> None:
    proof = tree.inclusion_proof(3)
    with pytest.raises(InvalidArgument, match="root: must be a 32-byte hash, got 31"):
        merkle.verify_inclusion(LEAVES[3], 3, 8, proof, tree.root[:31])
    with pytest.raises(InvalidProof, match=r"proof\[1\] is not a 32-byte hash"):
        merkle.verify_inclusion(LEAVES[3], 3, 8, [proof[0], proof[1][:-1], proof[2]], tree.root)
    with pytest.raises(InvalidProof, match=r"proof\[0\]"):
        merkle.verify_inclusion(LEAVES[3], 3, 8, ["nothex" * 8] + proof[1:], tree.root)  # type: ignore[list-item]
    with pytest.raises(InvalidArgumentType, match="proof"):
        merkle.verify_inclusion(LEAVES[3], 3, 8, b"".join(proof), tree.root)  # type: ignore[arg-type]
    with pytest.raises(InvalidArgument, match="new_root"):
        merkle.verify_consistency(3, 8, tree.root_at(3), b"short", tree.consistency_proof(3))


def test_proof_length_errors_say_what_was_expected(tree: merkle.MerkleTree) -> None:
    proof = tree.inclusion_proof(3)
    with pytest.raises(InvalidProof, match="has 2 nodes, the tree shape needs 3"):
        merkle.verify_inclusion(LEAVES[3], 3, 8, proof[:2], tree.root)
    with pytest.raises(InvalidProof, match="has 4 nodes, the tree shape needs 3"):
        merkle.verify_inclusion(LEAVES[3], 3, 8, proof + [proof[0]], tree.root)
    cproof = tree.consistency_proof(3)
    with pytest.raises(InvalidProof, match=f"has {len(cproof) - 1} nodes, the tree shapes need {len(cproof)}"):
        merkle.verify_consistency(3, 8, tree.root_at(3), tree.root, cproof[:-1])


def test_all_errors_share_the_base_class() -> None:
    for cls in (InvalidArgument, InvalidArgumentType, InvalidProof):
        assert issubclass(cls, FedLedgerError)
    assert issubclass(InvalidArgument, ValueError) and issubclass(InvalidArgumentType, TypeError)


def test_concurrent_reads_during_parallel_extend_never_crash() -> None:
    tree = merkle.MerkleTree(LEAVES)
    big = [i.to_bytes(8, "little") for i in range(300_000)]
    errors: list[BaseException] = []

    def reader() -> None:
        for _ in range(2_000):
            try:
                tree.inclusion_proof(0, 8)
            except RuntimeError:
                pass  # refused while the extend runs: allowed, a crash is not
            except BaseException as exc:  # pragma: no cover - reported below
                errors.append(exc)

    t = threading.Thread(target=reader)
    t.start()
    tree.extend(big)
    t.join()
    assert not errors
    assert tree.size == 8 + len(big)
    assert tree.root == merkle.root(LEAVES + big)


def test_huge_indices_and_sizes_are_typed_errors_with_short_messages() -> None:
    huge = 10**5000  # formatting it in a message would itself raise ValueError
    for call in (
        lambda: merkle.verify_inclusion(b"x", huge, 5, [], b"\0" * 32),
        lambda: merkle.verify_inclusion(b"x", 0, -huge, [], b"\0" * 32),
        lambda: merkle.MerkleTree().root_at(huge),
        lambda: merkle.MerkleTree([b"a"]).inclusion_proof(huge),
    ):
        with pytest.raises(InvalidArgument) as info:
            call()
        assert len(str(info.value)) < 200
