"""Agreement with an independent implementation, pymerkle (GPLv3, test-only dependency)."""

from __future__ import annotations

import warnings

import pytest
from hypothesis import given
from hypothesis import strategies as st

from fedledger.crypto import merkle

pymerkle = pytest.importorskip("pymerkle")


def peer_tree(leaves: list[bytes]):
    tree = pymerkle.InmemoryTree(algorithm="sha256")
    for x in leaves:
        tree.append_entry(x)
    return tree


@given(st.lists(st.binary(max_size=64), max_size=200))
def test_roots_agree_with_pymerkle(leaves: list[bytes]) -> None:
    peer = peer_tree(leaves)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        expected = peer.get_state() if leaves else peer.get_state(0)
    assert merkle.root(leaves) == expected
    assert merkle.MerkleTree(leaves).root == expected


@given(st.lists(st.binary(max_size=16), min_size=1, max_size=150), st.data())
def test_inclusion_paths_agree_with_pymerkle(leaves: list[bytes], data: st.DataObject) -> None:
    peer = peer_tree(leaves)
    index = data.draw(st.integers(0, len(leaves) - 1))
    peer_proof = peer.prove_inclusion(index + 1, len(leaves))  # pymerkle is 1-based
    path = [bytes.fromhex(x) for x in peer_proof.serialize()["path"]]
    # pymerkle's path starts with the leaf hash itself, then the RFC audit path.
    assert path[0] == merkle.leaf_hash(leaves[index])
    assert merkle.MerkleTree(leaves).inclusion_proof(index) == path[1:]


@pytest.mark.parametrize("n", [1, 2, 3, 255, 256, 257, 4097])
def test_larger_roots_agree_with_pymerkle(n: int) -> None:
    leaves = [i.to_bytes(4, "big") * 8 for i in range(n)]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        assert merkle.root(leaves) == peer_tree(leaves).get_state()
