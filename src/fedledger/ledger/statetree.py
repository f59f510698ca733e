"""The state root: one Merkle root over every entry of the replicated state.

Entries are ``key -> value`` byte strings (members, validators, nonces, contract state, ...).
Each entry falls in one of 2**16 buckets by the first two bytes of SHA-256 of its key; a
bucket's hash covers its entries sorted by key, and a binary tree of fixed depth 16 over the
buckets gives the root. So the entries are committed in the order (bucket, key), and updating
``k`` entries costs ``k`` entry hashes, at most ``k`` bucket hashes and the distinct tree
nodes above them (at most 16 per bucket): time proportional to the entries changed, never to
the size of the state.

Hashes (SHA-256, domain-separated like RFC 9162):

- entry  = H(0x00 || CBOR([key, value]))
- bucket = H(0x02 || entry_1 || ... || entry_n), entries sorted by key; an empty bucket is H(0x03)
- node   = H(0x01 || left || right)
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Final

from fedledger import encoding

__all__ = ["DEPTH", "StateTree", "Undo", "entry_hash", "state_root"]

DEPTH: Final = 16
_LEAVES: Final = 1 << DEPTH


def _h(data: bytes) -> bytes:
    return hashlib.sha256(data).digest()


def entry_hash(key: bytes, value: bytes) -> bytes:
    return _h(b"\x00" + encoding.encode([key, value]))


def _bucket_of(key: bytes) -> int:
    return int.from_bytes(_h(key)[:2], "big")


_EMPTY: list[bytes] = [_h(b"\x03")]
for _ in range(DEPTH):
    _EMPTY.append(_h(b"\x01" + _EMPTY[-1] + _EMPTY[-1]))


@dataclass(frozen=True)
class Undo:
    """What one update changed: old entry hashes and old node hashes (None: absent)."""

    entries: dict[bytes, bytes | None]
    nodes: dict[int, bytes | None]


class StateTree:
    """The state root, kept up to date entry by entry (no I/O, deterministic)."""

    __slots__ = ("_buckets", "_entries", "_nodes")

    def __init__(self) -> None:
        self._entries: dict[bytes, bytes] = {}  # key -> entry hash
        self._buckets: dict[int, set[bytes]] = {}  # bucket -> its keys
        # Heap-numbered nodes (root 1, buckets at 2**16 + b) that are not empty subtrees.
        self._nodes: dict[int, bytes] = {}

    def __len__(self) -> int:
        return len(self._entries)

    @property
    def root(self) -> bytes:
        return self._nodes.get(1, _EMPTY[DEPTH])

    def update(self, changes: Mapping[bytes, bytes | None]) -> Undo:
        """Set each ``key`` to ``value`` (None: remove it) and recompute the changed paths.

        Returns what :meth:`rollback` needs to undo exactly this update.
        """
        dirty: set[int] = set()
        undo = Undo({}, {})
        for key, value in changes.items():
            bucket = _bucket_of(key)
            old = self._entries.get(key)
            if value is None:
                if old is None:
                    continue
                del self._entries[key]
                keys = self._buckets[bucket]
                keys.discard(key)
                if not keys:
                    del self._buckets[bucket]
            else:
                new = entry_hash(key, value)
                if old == new:
                    continue
                self._entries[key] = new
                self._buckets.setdefault(bucket, set()).add(key)
            undo.entries.setdefault(key, old)
            dirty.add(bucket)
        nodes = self._nodes
        saved = undo.nodes
        level: set[int] = set()
        for bucket in dirty:
            node = _LEAVES + bucket
            saved.setdefault(node, nodes.get(node))
            members = self._buckets.get(bucket)
            if members:
                nodes[node] = _h(b"\x02" + b"".join(self._entries[k] for k in sorted(members)))
            else:
                nodes.pop(node, None)
            level.add(node >> 1)
        for depth in range(1, DEPTH + 1):
            above: set[int] = set()
            for node in level:
                saved.setdefault(node, nodes.get(node))
                left = nodes.get(2 * node)
                right = nodes.get(2 * node + 1)
                if left is None and right is None:
                    nodes.pop(node, None)
                else:
                    empty = _EMPTY[depth - 1]
                    nodes[node] = _h(b"\x01" + (left or empty) + (right or empty))
                above.add(node >> 1)
            level = above
        return undo

    def rollback(self, undo: Undo) -> None:
        """Undo one :meth:`update` (the last one not yet undone)."""
        for key, old in undo.entries.items():
            bucket = _bucket_of(key)
            if old is None:
                self._entries.pop(key, None)
                held = self._buckets.get(bucket)
                if held is not None:
                    held.discard(key)
                    if not held:
                        del self._buckets[bucket]
            else:
                self._entries[key] = old
                self._buckets.setdefault(bucket, set()).add(key)
        for node, value in undo.nodes.items():
            if value is None:
                self._nodes.pop(node, None)
            else:
                self._nodes[node] = value


def state_root(entries: Iterable[tuple[bytes, bytes]]) -> bytes:
    """The root over ``entries`` computed from scratch (what a snapshot or an auditor checks)."""
    tree = StateTree()
    tree.update(dict(entries))
    return tree.root
