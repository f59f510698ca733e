"""The messages of a secure-aggregation round: dataclasses with canonical bytes, signed.

Every message names its round, its stage, its sender and its receiver; all four are inside
what the sender signs (Ed25519, with its :class:`~fedledger.Identity`), so a message cannot
be replayed into another round, another stage, or to another party. The encoding is
fedledger's deterministic CBOR, except :class:`MaskedInput`, whose vector travels raw after
the CBOR header (bits / 8 bytes per parameter) and is bound into the signature by its
vector root (RFC 9162 over 64 KiB chunks).

Stages, in order (client -> server unless said otherwise):

1. ``advertise_keys``: :class:`AdvertiseKeys`, the client's two fresh X25519 public keys
   (one to seal shares, one to agree pairwise masks).
2. ``key_directory`` (server -> client): :class:`KeyDirectory`, the participants, the
   neighbors' signed advertisements and the server's round key.
3. ``share_keys``: :class:`ShareKeys`, for each neighbor a sealed pair of Shamir shares (of
   the self-mask seed and of the mask secret key) and the SHA-256 digest of each share.
4. ``relayed_shares`` (server -> client): :class:`RelayedShares`, the sealed shares for it.
5. ``masked_input``: :class:`MaskedInput`, the quantized, masked vector (sealed to the
   server unless the round's config turns that layer off) and the client's declared weight.
6. ``unmask_request`` (server -> client): :class:`UnmaskRequest`, who survived and who dropped.
7. ``unmask``: :class:`UnmaskResponse`, shares of survivors' seeds and of dropped clients' keys,
   sealed to the server.
"""

from __future__ import annotations

import hmac
import struct
from dataclasses import dataclass, field, replace
from enum import Enum
from typing import ClassVar, Final, TypedDict, TypeVar

from fedledger import encoding
from fedledger.crypto import masking, seal, signing
from fedledger.crypto.seal import SealContext
from fedledger.crypto.signing import VerifyKey
from fedledger.errors import EncodingError, FedLedgerError, InvalidArgument, InvalidSignature
from fedledger.identity import Identity

__all__ = [
    "AdvertiseKeys",
    "KeyDirectory",
    "MaskedInput",
    "Message",
    "RelayedShares",
    "ShareKeys",
    "Stage",
    "UnmaskRequest",
    "UnmaskResponse",
]

PROTOCOL: Final = "fedledger/secagg/v1"


class Stage(str, Enum):
    """The stages of a round, as message kinds and as party states (``DONE``, ``FAILED``).

    A member is its value as a string: it compares, hashes, prints, formats and reprs as
    ``"share_keys"`` etc., so stage names in messages, reports and errors are unchanged.
    Encode ``.value`` (the data model takes plain str only)."""

    ADVERTISE_KEYS = "advertise_keys"
    KEY_DIRECTORY = "key_directory"
    SHARE_KEYS = "share_keys"
    RELAYED_SHARES = "relayed_shares"
    MASKED_INPUT = "masked_input"
    UNMASK_REQUEST = "unmask_request"
    UNMASK = "unmask"
    DONE = "done"
    FAILED = "failed"

    def __str__(self) -> str:
        return str.__str__(self.value)

    def __format__(self, spec: str) -> str:
        return format(self.value, spec)

    def __repr__(self) -> str:
        return repr(self.value)


_MAX_HEADER: Final = 1 << 24

M = TypeVar("M", bound="Message")


def _want(fields: dict[str, encoding.Value], key: str, kind: type, stage: str) -> encoding.Value:
    value = fields.get(key)
    if type(value) is not kind:
        raise EncodingError(f"{stage}: field {key!r} must be {kind.__name__}")
    return value


def _bytes(fields: dict[str, encoding.Value], key: str, stage: str) -> bytes:
    value = fields.get(key)
    if type(value) is not bytes:
        raise EncodingError(f"{stage}: field {key!r} must be bytes")
    return value


def _int(fields: dict[str, encoding.Value], key: str, stage: str) -> int:
    value = fields.get(key)
    if type(value) is not int:
        raise EncodingError(f"{stage}: field {key!r} must be int")
    return value


class Header(TypedDict):
    """The fields every message has, as parsed."""

    round_id: int
    sender: str
    receiver: str
    signature: bytes


def _str_list(value: encoding.Value, what: str) -> tuple[str, ...]:
    if not isinstance(value, list) or any(type(v) is not str for v in value):
        raise EncodingError(f"{what} must be a list of str")
    return tuple(value)  # type: ignore[arg-type]


def _bytes_map(value: encoding.Value, what: str) -> dict[str, bytes]:
    if not isinstance(value, dict) or any(type(v) is not bytes for v in value.values()):
        raise EncodingError(f"{what} must be a map of str to bytes")
    return dict(value)  # type: ignore[arg-type]


@dataclass(frozen=True, kw_only=True)
class Message:
    """Fields every message has. Subclasses add their body and name their stage."""

    round_id: int
    sender: str
    receiver: str
    signature: bytes = b""

    STAGE: ClassVar[str] = ""
    #: The keys of the body map, exactly: a message with more or fewer is malformed (so a
    #: message has one encoding, and a field nobody checks cannot ride along signed).
    BODY_KEYS: ClassVar[frozenset[str]] = frozenset()

    # -- the body: subclasses --------------------------------------------------------------
    def _body(self) -> dict[str, encoding.Value]:
        raise NotImplementedError

    @classmethod
    def _parse(cls, head: Header, body: dict[str, encoding.Value], tail: memoryview) -> Message:
        raise NotImplementedError

    def _tail(self) -> bytes | memoryview:
        return b""

    # -- shared ----------------------------------------------------------------------------
    def _header(self) -> dict[str, encoding.Value]:
        return {
            "p": PROTOCOL,
            "stage": str(self.STAGE),
            "round": self.round_id,
            "from": self.sender,
            "to": self.receiver,
            "body": self._body(),
        }

    def signed_bytes(self) -> bytes:
        """What the signature covers: the canonical header (protocol, stage, round, sender,
        receiver, body). Computed once per message object."""
        cached = self.__dict__.get("_signed_cache")
        if cached is None:
            cached = encoding.encode(self._header())
            object.__setattr__(self, "_signed_cache", cached)
        return cached

    def signed(self: M, identity: Identity) -> M:
        """A copy signed by ``identity`` (whose name must be the sender)."""
        if identity.name != self.sender:
            raise InvalidArgument("identity", f"{identity.name!r} cannot sign a message from {self.sender!r}")
        return replace(self, signature=identity.sign(self.signed_bytes()))

    def verify_signature(self, key: VerifyKey) -> None:
        """InvalidSignature unless the sender's key signed exactly this message's header."""
        signing.verify(key, self.signed_bytes(), self.signature)

    def verify(self, key: VerifyKey) -> None:
        """InvalidSignature unless the sender's key signed exactly this message."""
        self.verify_signature(key)

    def to_bytes(self) -> bytes:
        header = self._header()
        header["sig"] = self.signature
        head = encoding.encode(header)
        if not self._HAS_TAIL:
            return head
        tail = self._tail()
        return b"".join((struct.pack(">I", len(head)), head, tail))

    @classmethod
    def from_bytes(cls: type[M], data: bytes) -> M:
        """Parse (EncodingError if malformed or of another stage). Does not verify."""
        if not isinstance(data, (bytes, bytearray, memoryview)):
            raise EncodingError(f"expected bytes, got {type(data).__name__}")
        if type(data) is not bytes:
            data = bytes(data)
        tail = memoryview(b"")
        if cls._HAS_TAIL:
            if len(data) < 4:
                raise EncodingError(f"{cls.STAGE}: truncated")
            (hl,) = struct.unpack(">I", data[:4])
            if hl > _MAX_HEADER or 4 + hl > len(data):
                raise EncodingError(f"{cls.STAGE}: bad header length")
            # The bulk stays where it arrived: a read-only view into ``data``, never copied.
            head_bytes, tail = data[4 : 4 + hl], memoryview(data)[4 + hl :]
        else:
            head_bytes = data
        head = encoding.decode(head_bytes)
        keys = {"p", "stage", "round", "from", "to", "body", "sig"}
        if not isinstance(head, dict) or set(head) != keys:
            raise EncodingError(f"not a secagg message: expected keys {sorted(keys)}")
        if head["p"] != PROTOCOL:
            raise EncodingError(f"not a {PROTOCOL} message")
        if head["stage"] != cls.STAGE:
            raise EncodingError(f"expected stage {cls.STAGE!r}, got {head['stage']!r}")
        round_id = _int(head, "round", cls.STAGE)
        sender = _want(head, "from", str, cls.STAGE)
        receiver = _want(head, "to", str, cls.STAGE)
        sig = _bytes(head, "sig", cls.STAGE)
        body = _want(head, "body", dict, cls.STAGE)
        assert isinstance(sender, str) and isinstance(receiver, str) and isinstance(body, dict)
        if not 0 <= round_id < 2**63:
            raise EncodingError(f"{cls.STAGE}: round out of range")
        if set(body) != cls.BODY_KEYS:
            raise EncodingError(f"{cls.STAGE}: body keys {sorted(body)}, expected {sorted(cls.BODY_KEYS)}")
        header = Header(round_id=round_id, sender=sender, receiver=receiver, signature=sig)
        try:
            msg = cls._parse(header, body, tail)
        except (TypeError, ValueError, FedLedgerError) as exc:
            if isinstance(exc, EncodingError):
                raise
            raise EncodingError(f"{cls.STAGE}: {exc}") from None
        assert isinstance(msg, cls)
        # The signed bytes are the received header without "sig", re-encoded the one way
        # fedledger makes bytes to sign.
        del head["sig"]
        object.__setattr__(msg, "_signed_cache", encoding.encode_decoded(head))
        return msg

    _HAS_TAIL: ClassVar[bool] = False


@dataclass(frozen=True, kw_only=True)
class AdvertiseKeys(Message):
    """Stage 1, client -> server: fresh X25519 public keys for this round.

    ``seal_key`` agrees the keys that seal shares between neighbors; ``mask_key`` agrees
    the pairwise masks (its secret half is what gets Shamir-shared).
    """

    seal_key: bytes
    mask_key: bytes
    STAGE: ClassVar[str] = Stage.ADVERTISE_KEYS
    BODY_KEYS: ClassVar[frozenset[str]] = frozenset({"c", "s"})

    def _body(self) -> dict[str, encoding.Value]:
        return {"c": self.seal_key, "s": self.mask_key}

    @classmethod
    def _parse(cls, head: Header, body: dict[str, encoding.Value], tail: memoryview) -> Message:
        return cls(**head, seal_key=_bytes(body, "c", cls.STAGE), mask_key=_bytes(body, "s", cls.STAGE))


@dataclass(frozen=True, kw_only=True)
class KeyDirectory(Message):
    """Stage 2, server -> client: every participant that advertised (sorted), the
    neighbors' :class:`AdvertiseKeys` messages as received (still signed by their senders),
    and the server's fresh X25519 key for this round (what clients seal to it under)."""

    participants: tuple[str, ...]
    adverts: tuple[bytes, ...]
    server_key: bytes
    STAGE: ClassVar[str] = Stage.KEY_DIRECTORY
    BODY_KEYS: ClassVar[frozenset[str]] = frozenset({"ids", "adv", "srv"})

    def _body(self) -> dict[str, encoding.Value]:
        return {"ids": list(self.participants), "adv": list(self.adverts), "srv": self.server_key}

    @classmethod
    def _parse(cls, head: Header, body: dict[str, encoding.Value], tail: memoryview) -> Message:
        adv = body.get("adv")
        if not isinstance(adv, list) or any(type(a) is not bytes for a in adv):
            raise EncodingError(f"{cls.STAGE}: 'adv' must be a list of bytes")
        return cls(
            **head,
            participants=_str_list(body.get("ids"), "ids"),
            adverts=tuple(a for a in adv if isinstance(a, bytes)),
            server_key=_bytes(body, "srv", cls.STAGE),
        )


@dataclass(frozen=True, kw_only=True)
class ShareKeys(Message):
    """Stage 3, client -> server: for each holder (its neighbors and itself), the sealed
    pair of shares (empty for itself) and the SHA-256 digests of the two shares, which the
    server checks revealed shares against in stage 7."""

    sealed: dict[str, bytes]
    digests: dict[str, bytes]  # holder -> digest of the seed share (32) || digest of the key share (32)
    STAGE: ClassVar[str] = Stage.SHARE_KEYS
    BODY_KEYS: ClassVar[frozenset[str]] = frozenset({"ct", "dg"})

    def _body(self) -> dict[str, encoding.Value]:
        return {"ct": dict(self.sealed), "dg": dict(self.digests)}

    @classmethod
    def _parse(cls, head: Header, body: dict[str, encoding.Value], tail: memoryview) -> Message:
        return cls(**head, sealed=_bytes_map(body.get("ct"), "ct"), digests=_bytes_map(body.get("dg"), "dg"))


@dataclass(frozen=True, kw_only=True)
class RelayedShares(Message):
    """Stage 4, server -> client: the sealed shares each neighbor dealt to it, by dealer."""

    sealed: dict[str, bytes]
    STAGE: ClassVar[str] = Stage.RELAYED_SHARES
    BODY_KEYS: ClassVar[frozenset[str]] = frozenset({"ct"})

    def _body(self) -> dict[str, encoding.Value]:
        return {"ct": dict(self.sealed)}

    @classmethod
    def _parse(cls, head: Header, body: dict[str, encoding.Value], tail: memoryview) -> Message:
        return cls(**head, sealed=_bytes_map(body.get("ct"), "ct"))


@dataclass(frozen=True, kw_only=True)
class MaskedInput(Message):
    """Stage 5, client -> server: the masked vector (raw little-endian ring words, D
    parameters then the weight; with ``sealed``, those bytes sealed to the server by
    :func:`fedledger.crypto.seal.seal_records`), signed through its vector root (the RFC 9162 root of its
    64 KiB chunks, :func:`fedledger.crypto.masking.vector_root`: the commitment a ledger
    records); ``weight`` is the sample count the client declares, signed in the header (the
    weight slot of the vector must carry it: the server checks the unmasked slot against the
    sum of the declared weights); ``complaints`` names dealers whose sealed shares did not
    open or did not parse.

    :meth:`verify` checks the signature and that the data matches the root; parsing checks
    neither. A server that adds the data while hashing it
    (:func:`fedledger.crypto.masking.add_verified`) checks the signature alone with
    :meth:`verify_signature`.
    """

    data: bytes | memoryview
    weight: int
    complaints: tuple[str, ...] = ()
    root: bytes = field(default=b"", compare=False)
    sealed: bool = False
    STAGE: ClassVar[str] = Stage.MASKED_INPUT
    BODY_KEYS: ClassVar[frozenset[str]] = frozenset({"len", "root", "w", "bad", "sealed"})
    _HAS_TAIL: ClassVar[bool] = True

    def _body(self) -> dict[str, encoding.Value]:
        if self.sealed and not self.root:
            raise InvalidArgument("root", "a sealed masked input needs the root of its plaintext")
        return {
            "len": len(self.data),
            "root": self.root or masking.vector_root(self.data),
            "w": self.weight,
            "bad": list(self.complaints),
            "sealed": self.sealed,
        }

    def _tail(self) -> bytes | memoryview:
        return self.data

    def with_root(self) -> MaskedInput:
        """The same message with the data's vector root computed once (when the producer
        does not already have it from :func:`~fedledger.crypto.masking.quantize_and_mask`)."""
        return replace(self, root=masking.vector_root(self.data))

    def verify(self, key: VerifyKey) -> None:
        """InvalidSignature unless the sender signed this header and the data matches its root
        (a sealed vector is checked against its root once opened, by its receiver)."""
        self.verify_signature(key)
        if not self.sealed and not hmac.compare_digest(masking.vector_root(self.data), self.root):
            raise InvalidSignature("the data does not match the signed vector root", reason="data-mismatch")

    @classmethod
    def _parse(cls, head: Header, body: dict[str, encoding.Value], tail: memoryview) -> Message:
        length = _int(body, "len", cls.STAGE)
        root = _bytes(body, "root", cls.STAGE)
        if length != len(tail):
            raise EncodingError(f"{cls.STAGE}: declared {length} bytes, carries {len(tail)}")
        if len(root) != 32:
            raise EncodingError(f"{cls.STAGE}: the vector root must be 32 bytes")
        sealed = body.get("sealed")
        if type(sealed) is not bool:
            raise EncodingError(f"{cls.STAGE}: field 'sealed' must be bool")
        weight = _int(body, "w", cls.STAGE)
        if not 0 <= weight < 2**63:
            raise EncodingError(f"{cls.STAGE}: weight {weight} out of range")
        return cls(
            **head, data=tail, weight=weight, complaints=_str_list(body.get("bad"), "bad"), root=root, sealed=sealed
        )


@dataclass(frozen=True, kw_only=True)
class UnmaskRequest(Message):
    """Stage 6, server -> client: whose masked inputs arrived (the inputs in the sum; a
    client refuses to reveal anything if they are fewer than ``min_survivors``), and who
    dropped after sharing."""

    survivors: tuple[str, ...]
    dropped: tuple[str, ...]
    STAGE: ClassVar[str] = Stage.UNMASK_REQUEST
    BODY_KEYS: ClassVar[frozenset[str]] = frozenset({"alive", "dropped"})

    def _body(self) -> dict[str, encoding.Value]:
        return {"alive": list(self.survivors), "dropped": list(self.dropped)}

    @classmethod
    def _parse(cls, head: Header, body: dict[str, encoding.Value], tail: memoryview) -> Message:
        return cls(
            **head, survivors=_str_list(body.get("alive"), "alive"), dropped=_str_list(body.get("dropped"), "dropped")
        )


@dataclass(frozen=True, kw_only=True)
class UnmaskResponse(Message):
    """Stage 7, client -> server: shares of survivors' self-mask seeds and of dropped
    clients' mask keys, by dealer (each a :class:`~fedledger.crypto.shamir.Share` in bytes),
    sealed to the server: ``sealed`` is AES-256-GCM (:func:`fedledger.crypto.seal.seal`)
    of the canonical map ``{"b": seed shares, "s": key shares}`` under the client-server key,
    so that nobody on the wire can rebuild a self mask (and with it the aggregate)."""

    sealed: bytes
    STAGE: ClassVar[str] = Stage.UNMASK
    BODY_KEYS: ClassVar[frozenset[str]] = frozenset({"ct"})

    def _body(self) -> dict[str, encoding.Value]:
        return {"ct": self.sealed}

    @classmethod
    def _parse(cls, head: Header, body: dict[str, encoding.Value], tail: memoryview) -> Message:
        return cls(**head, sealed=_bytes(body, "ct", cls.STAGE))

    @staticmethod
    def seal_shares(
        key: bytes, context: SealContext, seed_shares: dict[str, bytes], key_shares: dict[str, bytes]
    ) -> bytes:
        return seal.seal(key, encoding.encode({"b": dict(seed_shares), "s": dict(key_shares)}), context)

    def open_shares(self, key: bytes, context: SealContext) -> tuple[dict[str, bytes], dict[str, bytes]]:
        """(seed shares, key shares); SealError if the seal does not open, EncodingError if
        what it holds is not the two maps."""
        value = encoding.decode(seal.unseal(key, self.sealed, context))
        if not isinstance(value, dict) or set(value) != {"b", "s"}:
            raise EncodingError(f"{self.STAGE}: the sealed shares are not a map of 'b' and 's'")
        return _bytes_map(value["b"], "b"), _bytes_map(value["s"], "s")
