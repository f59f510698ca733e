"""The messages of a Paillier aggregation round: a signed canonical header, and raw bytes behind it.

Every message is ``u32 header length || header || tail``. The header is fedledger's
deterministic CBOR map ``{"p", "stage", "round", "from", "to", "body", "sig"}``; the sender
signs (Ed25519, with its :class:`~fedledger.Identity`) the header without ``"sig"``, so a
message is bound to its protocol, round, stage, sender and receiver and cannot be replayed
into another round, stage or to another party. The tail (sealed or encrypted bulk) is bound
through what the body says of it: the RFC 9162 root of the bytes under the seal
(:func:`fedledger.crypto.masking.vector_root`), checked once the seal is opened.

Stages, in order:

1. ``announce`` (aggregator -> site): :class:`Announce`, the round's participants, the
   aggregator's fresh X25519 round key and the public parameters (the site checks them
   against its own: the receiver fixes the packing layout, never the wire).
2. ``update`` (site -> aggregator): :class:`EncryptedUpdate`, the site's declared weight,
   the root of its Paillier ciphertext bytes, its fresh X25519 key; the tail is the
   ciphertext bytes sealed (AES-256-GCM records) under the site-aggregator key.
3. ``decrypt_request`` (aggregator -> trustee): :class:`DecryptRequest`, the survivors'
   signed update headers and, as the tail, their ciphertext bytes (opened, in survivor
   order): the trustee checks every signature and root and adds the vectors itself.
4. ``partial_decryption`` (trustee -> aggregator): :class:`PartialDecryptionMessage`, the
   trustee's partial decryption of that sum, sealed to the aggregator.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass, replace
from typing import ClassVar, Final, TypeVar

from fedledger import encoding
from fedledger.crypto import signing
from fedledger.crypto.signing import VerifyKey
from fedledger.errors import EncodingError, FedLedgerError, InvalidArgument
from fedledger.identity import Identity

__all__ = [
    "PROTOCOL",
    "STAGES",
    "Announce",
    "DecryptRequest",
    "EncryptedUpdate",
    "Message",
    "PartialDecryptionMessage",
]

PROTOCOL: Final = "fedledger/heagg/v1"
#: The message stages, in order.
STAGES: Final = ("announce", "update", "decrypt_request", "partial_decryption")
_MAX_HEADER: Final = 1 << 24

M = TypeVar("M", bound="Message")


def _get(body: dict[str, encoding.Value], key: str, kind: type, stage: str) -> encoding.Value:
    value = body.get(key)
    if type(value) is not kind:
        raise EncodingError(f"{stage}: field {key!r} must be {kind.__name__}")
    return value


@dataclass(frozen=True, kw_only=True)
class Message:
    """Fields every message has; subclasses add a body and name their stage.

    ``PROTOCOL`` is a class attribute so that another protocol can reuse a message shape
    under its own name (a message of one protocol never parses as the other's)."""

    round_id: int
    sender: str
    receiver: str
    tail: bytes = b""
    signature: bytes = b""

    PROTOCOL: ClassVar[str] = PROTOCOL
    STAGE: ClassVar[str] = ""
    BODY_KEYS: ClassVar[frozenset[str]] = frozenset()

    def _body(self) -> dict[str, encoding.Value]:
        raise NotImplementedError

    @classmethod
    def _parse(cls: type[M], head: dict[str, object], body: dict[str, encoding.Value]) -> M:
        raise NotImplementedError

    def _header(self) -> dict[str, encoding.Value]:
        return {
            "p": self.PROTOCOL,
            "stage": self.STAGE,
            "round": self.round_id,
            "from": self.sender,
            "to": self.receiver,
            "body": self._body(),
        }

    def signed_bytes(self) -> bytes:
        """What the signature covers: the canonical header without the signature."""
        return encoding.encode(self._header())

    def signed(self: M, identity: Identity) -> M:
        """A copy signed by ``identity``, whose name must be the sender's."""
        if identity.name != self.sender:
            raise InvalidArgument("identity", f"{identity.name!r} cannot sign a message from {self.sender!r}")
        return replace(self, signature=identity.sign(self.signed_bytes()))

    def verify(self, key: VerifyKey) -> None:
        """InvalidSignature unless ``key`` signed exactly this header."""
        signing.verify(key, self.signed_bytes(), self.signature)

    def header_bytes(self) -> bytes:
        """The header with its signature (no tail): what a third party needs to check it."""
        header = self._header()
        header["sig"] = self.signature
        return encoding.encode(header)

    def to_bytes(self) -> bytes:
        head = self.header_bytes()
        return b"".join((struct.pack(">I", len(head)), head, self.tail))

    @classmethod
    def from_header(cls: type[M], head_bytes: bytes, tail: bytes = b"") -> M:
        """Parse a header (and attach ``tail``); EncodingError if malformed, of another
        protocol or of another stage. Does not verify the signature."""
        head = encoding.decode(head_bytes)
        keys = {"p", "stage", "round", "from", "to", "body", "sig"}
        if not isinstance(head, dict) or set(head) != keys:
            raise EncodingError(f"not a {cls.PROTOCOL} message")
        if head["p"] != cls.PROTOCOL:
            raise EncodingError(f"not a {cls.PROTOCOL} message")
        if head["stage"] != cls.STAGE:
            raise EncodingError(f"expected stage {cls.STAGE!r}, got {encoding.short_repr(head['stage'])}")
        rid, sender, receiver, sig, body = head["round"], head["from"], head["to"], head["sig"], head["body"]
        if type(rid) is not int or not 0 <= rid < 2**63:
            raise EncodingError(f"{cls.STAGE}: bad round")
        if type(sender) is not str or type(receiver) is not str or type(sig) is not bytes:
            raise EncodingError(f"{cls.STAGE}: bad sender, receiver or signature")
        if not isinstance(body, dict) or set(body) != cls.BODY_KEYS:
            raise EncodingError(f"{cls.STAGE}: body keys must be {sorted(cls.BODY_KEYS)}")
        common = {"round_id": rid, "sender": sender, "receiver": receiver, "signature": sig, "tail": tail}
        try:
            return cls._parse(common, body)
        except (TypeError, ValueError, FedLedgerError) as exc:
            if isinstance(exc, EncodingError):
                raise
            raise EncodingError(f"{cls.STAGE}: {exc}") from None

    @classmethod
    def from_bytes(cls: type[M], data: bytes) -> M:
        """Parse :meth:`to_bytes` output (EncodingError if malformed). Does not verify."""
        if not isinstance(data, (bytes, bytearray, memoryview)):
            raise EncodingError(f"expected bytes, got {type(data).__name__}")
        raw = bytes(data)
        if len(raw) < 4:
            raise EncodingError(f"{cls.STAGE}: truncated")
        (hl,) = struct.unpack(">I", raw[:4])
        if hl > _MAX_HEADER or 4 + hl > len(raw):
            raise EncodingError(f"{cls.STAGE}: bad header length")
        return cls.from_header(raw[4 : 4 + hl], raw[4 + hl :])


@dataclass(frozen=True, kw_only=True)
class Announce(Message):
    """Stage 1, aggregator -> site: the participants (sorted), the aggregator's X25519 round
    key and the round's public parameters (the site refuses a round whose parameters differ
    from its own)."""

    participants: tuple[str, ...]
    server_key: bytes
    params: dict[str, encoding.Value]
    STAGE: ClassVar[str] = "announce"
    BODY_KEYS: ClassVar[frozenset[str]] = frozenset({"ids", "srv", "params"})

    def _body(self) -> dict[str, encoding.Value]:
        return {"ids": list(self.participants), "srv": self.server_key, "params": dict(self.params)}

    @classmethod
    def _parse(cls, head: dict[str, object], body: dict[str, encoding.Value]) -> Announce:
        ids = body["ids"]
        if not isinstance(ids, list) or any(type(i) is not str for i in ids):
            raise EncodingError(f"{cls.STAGE}: 'ids' must be a list of str")
        params = _get(body, "params", dict, cls.STAGE)
        assert isinstance(params, dict)
        return cls(
            **head,  # type: ignore[arg-type]
            participants=tuple(str(i) for i in ids),
            server_key=bytes(_get(body, "srv", bytes, cls.STAGE)),  # type: ignore[arg-type]
            params=params,
        )


@dataclass(frozen=True, kw_only=True)
class EncryptedUpdate(Message):
    """Stage 2, site -> aggregator: ``weight`` (declared, signed), ``root`` (the RFC 9162 root
    of the bytes under the seal: the update commitment) and ``site_key`` (the site's fresh
    X25519 key the seal key is agreed with). The tail is those bytes sealed to the aggregator."""

    weight: int
    root: bytes
    site_key: bytes
    STAGE: ClassVar[str] = "update"
    BODY_KEYS: ClassVar[frozenset[str]] = frozenset({"w", "root", "eph"})

    def _body(self) -> dict[str, encoding.Value]:
        return {"w": self.weight, "root": self.root, "eph": self.site_key}

    @classmethod
    def _parse(cls, head: dict[str, object], body: dict[str, encoding.Value]) -> EncryptedUpdate:
        weight = _get(body, "w", int, cls.STAGE)
        root = _get(body, "root", bytes, cls.STAGE)
        eph = _get(body, "eph", bytes, cls.STAGE)
        assert isinstance(weight, int) and isinstance(root, bytes) and isinstance(eph, bytes)
        if not 0 <= weight < 2**63 or len(root) != 32 or len(eph) != 32:
            raise EncodingError(f"{cls.STAGE}: weight, root or key out of range")
        return cls(**head, weight=weight, root=root, site_key=eph)  # type: ignore[arg-type]


@dataclass(frozen=True, kw_only=True)
class DecryptRequest(Message):
    """Stage 3, aggregator -> trustee: ``updates``, the survivors' :class:`EncryptedUpdate`
    headers as their senders signed them (:meth:`Message.header_bytes`), and the aggregator's
    round key (the partial decryption is sealed to it). The tail is the survivors' ciphertext
    bytes, opened, one equal-length block per header, in the same order."""

    updates: tuple[bytes, ...]
    server_key: bytes
    STAGE: ClassVar[str] = "decrypt_request"
    BODY_KEYS: ClassVar[frozenset[str]] = frozenset({"upd", "srv"})

    def _body(self) -> dict[str, encoding.Value]:
        return {"upd": list(self.updates), "srv": self.server_key}

    @classmethod
    def _parse(cls, head: dict[str, object], body: dict[str, encoding.Value]) -> DecryptRequest:
        upd = body["upd"]
        if not isinstance(upd, list) or any(type(u) is not bytes for u in upd):
            raise EncodingError(f"{cls.STAGE}: 'upd' must be a list of bytes")
        srv = _get(body, "srv", bytes, cls.STAGE)
        assert isinstance(srv, bytes)
        return cls(**head, updates=tuple(bytes(u) for u in upd if isinstance(u, bytes)), server_key=srv)  # type: ignore[arg-type]


@dataclass(frozen=True, kw_only=True)
class PartialDecryptionMessage(Message):
    """Stage 4, trustee -> aggregator: ``index`` (the trustee's share index), ``digest`` (of
    the summed vector it decrypted) and its fresh X25519 key; the tail is the partial
    decryption's bytes sealed to the aggregator."""

    index: int
    digest: bytes
    trustee_key: bytes
    STAGE: ClassVar[str] = "partial_decryption"
    BODY_KEYS: ClassVar[frozenset[str]] = frozenset({"i", "dg", "eph"})

    def _body(self) -> dict[str, encoding.Value]:
        return {"i": self.index, "dg": self.digest, "eph": self.trustee_key}

    @classmethod
    def _parse(cls, head: dict[str, object], body: dict[str, encoding.Value]) -> PartialDecryptionMessage:
        index = _get(body, "i", int, cls.STAGE)
        digest = _get(body, "dg", bytes, cls.STAGE)
        eph = _get(body, "eph", bytes, cls.STAGE)
        assert isinstance(index, int) and isinstance(digest, bytes) and isinstance(eph, bytes)
        if not 1 <= index <= 64 or len(digest) != 32 or len(eph) != 32:
            raise EncodingError(f"{cls.STAGE}: index, digest or key out of range")
        return cls(**head, index=index, digest=digest, trustee_key=eph)  # type: ignore[arg-type]
