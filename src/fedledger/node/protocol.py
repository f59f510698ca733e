"""The node's keyspace in the ordering service and the values it holds (no I/O here).

Every key lives under ``/fedledger/<chain id>/``:

============================  ==========================================================
``pool/<node>/<seq>``         a batch of submitted transactions (CBOR list of wire bytes)
``body/<h>/<r>/<i>``          part i of the transactions proposed at (height h, round r)
``slot/<h>/<r>``              what round r of height h holds: a header, or a skip;
                              written once, by compare-and-swap
``vote/<h>/<r>/<validator>``  a validator's vote on the header of slot (h, r)
``cert/<h>``                  the certificate that finalized height h; written once
``head/<node>``               a node's latest signed tree head (for truncation checks)
============================  ==========================================================

Heights and rounds are zero-padded, so keys sort in (height, round) order. Values are at most
:data:`MAX_VALUE` bytes: etcd 3.4 refuses requests over 1.5 MiB by default, so a block's
transactions are split into parts written before its slot; the ordering service delivers
changes in revision order, so a node sees a block's parts before its slot.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Final

from fedledger import encoding
from fedledger.errors import EncodingError

#: The largest value the node writes (1 MiB; etcd 3.4 refuses requests over 1.5 MiB by default).
MAX_VALUE: Final = 1 << 20
#: Room left in a value for the CBOR list framing around the transactions.
_FRAMING: Final = 64


def prefix(chain_id: str) -> bytes:
    return f"/fedledger/{chain_id}/".encode()


def pool_key(chain_id: str, node: str, seq: int) -> bytes:
    return prefix(chain_id) + f"pool/{node}/{seq:020d}".encode()


def body_key(chain_id: str, height: int, round_: int, part: int) -> bytes:
    return prefix(chain_id) + f"body/{height:020d}/{round_:06d}/{part:06d}".encode()


def slot_key(chain_id: str, height: int, round_: int) -> bytes:
    return prefix(chain_id) + f"slot/{height:020d}/{round_:06d}".encode()


def vote_key(chain_id: str, height: int, round_: int, validator: bytes) -> bytes:
    return prefix(chain_id) + f"vote/{height:020d}/{round_:06d}/{validator.hex()}".encode()


def cert_key(chain_id: str, height: int) -> bytes:
    return prefix(chain_id) + f"cert/{height:020d}".encode()


def head_key(chain_id: str, node: str) -> bytes:
    return prefix(chain_id) + f"head/{node}".encode()


#: The kinds of key that belong to one height (pruned together once every node is past it).
HEIGHT_KINDS: Final = ("body", "slot", "vote", "cert")


def height_range(chain_id: str, kind: str, below: int, since: int = 0) -> tuple[bytes, bytes]:
    """The key range ``[start, end)`` of ``kind`` (body, slot, vote or cert) for the heights
    ``since <= h < below``."""
    head = prefix(chain_id) + kind.encode() + b"/"
    return head + f"{since:020d}".encode(), head + f"{below:020d}".encode()


@dataclass(frozen=True)
class Key:
    """A parsed key: its kind and the fields its path carries."""

    kind: str  # pool, body, slot, vote, cert or head
    node: str = ""
    height: int = 0
    round: int = 0
    index: int = 0  # a pool batch's sequence number or a body part's index
    validator: bytes = b""


def parse_key(chain_id: str, key: bytes) -> Key | None:
    """The kind and fields of ``key``; None for a key outside the node's keyspace or malformed."""
    head = prefix(chain_id)
    if not key.startswith(head):
        return None
    try:
        parts = key[len(head) :].decode("ascii").split("/")
        kind, rest = parts[0], parts[1:]
        if kind == "pool" and len(rest) == 2:
            return Key("pool", node=rest[0], index=int(rest[1]))
        if kind == "body" and len(rest) == 3:
            return Key("body", height=int(rest[0]), round=int(rest[1]), index=int(rest[2]))
        if kind == "slot" and len(rest) == 2:
            return Key("slot", height=int(rest[0]), round=int(rest[1]))
        if kind == "vote" and len(rest) == 3:
            validator = bytes.fromhex(rest[2])
            return Key("vote", height=int(rest[0]), round=int(rest[1]), validator=validator)
        if kind == "cert" and len(rest) == 1:
            return Key("cert", height=int(rest[0]))
        if kind == "head" and len(rest) == 1:
            return Key("head", node=rest[0])
    except (UnicodeDecodeError, ValueError):
        return None
    return None


def pack(items: Sequence[bytes], limit: int = MAX_VALUE) -> Iterator[bytes]:
    """Transactions' wire bytes as CBOR lists of at most ``limit`` bytes each (one per value)."""
    batch: list[encoding.Value] = []
    size = _FRAMING
    for item in items:
        cost = len(item) + 9  # a byte string's CBOR head is at most 9 bytes
        if cost + _FRAMING > limit:
            raise EncodingError(f"a transaction of {len(item)} bytes does not fit in a {limit}-byte value")
        if batch and size + cost > limit:
            yield encoding.encode(batch)
            batch, size = [], _FRAMING
        batch.append(item)
        size += cost
    if batch:
        yield encoding.encode(batch)


def unpack(value: bytes) -> list[bytes]:
    """The wire bytes a :func:`pack` value holds (EncodingError if it is not such a list)."""
    items = encoding.decode(value)
    if type(items) is not list or not all(type(i) is bytes for i in items):
        raise EncodingError("expected a CBOR list of transactions' wire bytes")
    return items  # type: ignore[return-value]


def slot_value(header: bytes | None, parts: int = 0) -> bytes:
    """A slot's value: the proposed header and how many body parts hold its transactions, or a skip."""
    return encoding.encode({"skip": True} if header is None else {"header": header, "parts": parts})


def parse_slot(value: bytes) -> tuple[bytes, int] | None:
    """(header bytes, parts) of a slot, None for a skip; EncodingError if it is neither."""
    slot = encoding.decode(value)
    if slot == {"skip": True}:
        return None
    if (
        type(slot) is dict
        and set(slot) == {"header", "parts"}
        and type(slot["header"]) is bytes
        and type(slot["parts"]) is int
        and 0 <= slot["parts"] < 1 << 20
    ):
        return slot["header"], slot["parts"]
    raise EncodingError("a slot holds {'header': bytes, 'parts': int} or {'skip': true}")


def cert_value(round_: int, block_hash: bytes, certificate: bytes) -> bytes:
    return encoding.encode({"round": round_, "block": block_hash, "certificate": certificate})


def parse_cert(value: bytes) -> tuple[int, bytes, bytes]:
    """(round, block hash, certificate bytes) of a ``cert`` value; EncodingError otherwise."""
    cert = encoding.decode(value)
    if (
        type(cert) is dict
        and set(cert) == {"round", "block", "certificate"}
        and type(cert["round"]) is int
        and type(cert["block"]) is bytes
        and type(cert["certificate"]) is bytes
    ):
        return cert["round"], cert["block"], cert["certificate"]
    raise EncodingError("a cert holds {'round': int, 'block': bytes, 'certificate': bytes}")
