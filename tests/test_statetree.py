"""The state root: incremental updates equal a from-scratch reference written here from the
definition, rollbacks restore the root exactly, and the cost of an update follows the entries
changed, not the size of the state."""

from __future__ import annotations

import hashlib

from hypothesis import given, settings
from hypothesis import strategies as st

from fedledger import encoding
from fedledger.ledger import statetree
from fedledger.ledger.statetree import StateTree


def _h(data: bytes) -> bytes:
    return hashlib.sha256(data).digest()


def reference_root(entries: dict[bytes, bytes]) -> bytes:
    """The definition, level by level over all 2**16 buckets (slow, obvious)."""
    buckets: dict[int, list[tuple[bytes, bytes]]] = {}
    for key, value in entries.items():
        buckets.setdefault(int.from_bytes(_h(key)[:2], "big"), []).append((key, value))
    level = []
    for b in range(2**16):
        items = sorted(buckets.get(b, []))
        if items:
            level.append(_h(b"\x02" + b"".join(_h(b"\x00" + encoding.encode([k, v])) for k, v in items)))
        else:
            level.append(_h(b"\x03"))
    while len(level) > 1:
        level = [_h(b"\x01" + level[i] + level[i + 1]) for i in range(0, len(level), 2)]
    return level[0]


keys = st.binary(min_size=1, max_size=6)
values = st.binary(max_size=8)
steps = st.lists(st.dictionaries(keys, st.one_of(st.none(), values), max_size=6), min_size=1, max_size=5)


@settings(max_examples=25, deadline=None)
@given(steps)
def test_incremental_updates_equal_the_reference(batches: list[dict[bytes, bytes | None]]) -> None:
    tree = StateTree()
    model: dict[bytes, bytes] = {}
    for batch in batches:
        tree.update(batch)
        for k, v in batch.items():
            if v is None:
                model.pop(k, None)
            else:
                model[k] = v
    assert len(tree) == len(model)
    assert tree.root == reference_root(model)
    assert tree.root == statetree.state_root(model.items())


@settings(max_examples=25, deadline=None)
@given(steps, st.dictionaries(keys, st.one_of(st.none(), values), max_size=8))
def test_rollback_restores_the_root_and_the_entries(
    batches: list[dict[bytes, bytes | None]], last: dict[bytes, bytes | None]
) -> None:
    tree = StateTree()
    for batch in batches:
        tree.update(batch)
    before = tree.root
    undo = tree.update(last)
    tree.rollback(undo)
    assert tree.root == before
    # The same update again reaches the same root as it did the first time.
    again = StateTree()
    for batch in batches:
        again.update(batch)
    again.update(last)
    tree.update(last)
    assert tree.root == again.root


def test_empty_state_and_a_changed_value_change_the_root() -> None:
    tree = StateTree()
    empty = tree.root
    assert empty == reference_root({})
    tree.update({b"k": b"v"})
    one = tree.root
    tree.update({b"k": b"w"})
    assert len({empty, one, tree.root}) == 3
    tree.update({b"k": None})
    assert tree.root == empty


def test_update_cost_follows_the_entries_changed() -> None:
    """Counting hashes: one changed entry in a state of 20,000 costs the same as in a state of 10."""
    import pytest

    mp = pytest.MonkeyPatch()
    calls = [0]
    real = statetree._h

    def counting(data: bytes) -> bytes:
        calls[0] += 1
        return real(data)

    costs = []
    for size in (10, 20_000):
        tree = StateTree()
        tree.update({i.to_bytes(4, "big"): b"x" for i in range(size)})
        mp.setattr(statetree, "_h", counting)
        calls[0] = 0
        tree.update({b"\xff\xff\xff\xff": b"y"})
        costs.append(calls[0])
        mp.undo()
    # the key's bucket index, its entry, its bucket and 16 nodes: never proportional to the state
    assert costs[0] == costs[1] == 3 + statetree.DEPTH
