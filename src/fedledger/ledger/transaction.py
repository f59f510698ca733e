"""Signed ledger transactions.

A transaction's body is the deterministic CBOR map

    {"type": "fedledger.tx/1", "chain": chain_id, "kind": kind, "sender": <32-byte Ed25519 key>,
     "nonce": n, "payload": <any encodable value>}

The sender signs the body bytes; the id is SHA-256 of the body (never of the signature); the
wire form is the CBOR array ``[body, signature]``. The ``type`` field separates transaction
signatures from every other kind of signed message (votes, governance approvals, cards).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Final

from fedledger import encoding
from fedledger.crypto import signing
from fedledger.crypto.signing import VerifyKey
from fedledger.errors import (
    EncodingError,
    InvalidArgument,
    InvalidArgumentType,
    MalformedTransaction,
    OversizedPayload,
)

if TYPE_CHECKING:
    from fedledger.identity import Identity

__all__ = ["MAX_PAYLOAD_BYTES", "MAX_TRANSACTION_BYTES", "Transaction", "check_name"]

TX_TYPE: Final = "fedledger.tx/1"
#: The largest encoded payload a transaction may carry. Patient data never goes on the ledger,
#: only hashes and commitments, so 64 KiB is far above any legitimate need.
MAX_PAYLOAD_BYTES: Final = 64 * 1024
#: Body plus signature and framing; anything larger is rejected before it is decoded.
MAX_TRANSACTION_BYTES: Final = MAX_PAYLOAD_BYTES + 1024
_MAX_NAME: Final = 128
_BODY_KEYS: Final = frozenset({"type", "chain", "kind", "sender", "nonce", "payload"})


def _bstr_head(n: int) -> bytes:
    """The shortest (RFC 8949 §4.2 canonical) head of a CBOR byte string of length n."""
    if n < 24:
        return bytes([0x40 + n])
    if n < 0x100:
        return bytes([0x58, n])
    if n < 0x10000:
        return b"\x59" + n.to_bytes(2, "big")
    return b"\x5a" + n.to_bytes(4, "big")


def wire_frame(body: bytes, signature: bytes) -> bytes:
    """Canonical CBOR of the array ``[body, signature]`` (the same bytes as
    ``encoding.encode([body, signature])``, tested so), without walking the body again."""
    return b"\x82" + _bstr_head(len(body)) + body + _bstr_head(len(signature)) + signature


def _read_bstr(data: bytes, at: int, what: str) -> tuple[bytes, int]:
    if at >= len(data) or data[at] >> 5 != 2:
        raise MalformedTransaction(f"transaction: {what} is not a CBOR byte string")
    info = data[at] & 0x1F
    if info < 24:
        n, start = info, at + 1
    elif 24 <= info <= 26:
        width = 1 << (info - 24)
        n, start = int.from_bytes(data[at + 1 : at + 1 + width], "big"), at + 1 + width
    else:
        raise MalformedTransaction(f"transaction: {what} has an unsupported length encoding")
    if data[at:start] != _bstr_head(n) or start + n > len(data):
        raise MalformedTransaction(f"transaction: {what} is not canonically encoded or is truncated")
    return data[start : start + n], start + n


def wire_split(data: bytes) -> tuple[bytes, bytes]:
    """The (body, signature) of a wire-form transaction; MalformedTransaction unless canonical."""
    if not data or data[0] != 0x82:
        raise MalformedTransaction("transaction: expected a CBOR array [body, signature]")
    body, at = _read_bstr(data, 1, "body")
    signature, at = _read_bstr(data, at, "signature")
    if at != len(data):
        raise MalformedTransaction("transaction: trailing bytes after [body, signature]")
    return body, signature


def check_name(value: object, argument: str) -> str:
    if type(value) is not str:
        raise InvalidArgumentType(argument, f"expected str, got {type(value).__name__}")
    if not value or len(value) > _MAX_NAME or not value.isprintable():
        raise InvalidArgument(argument, f"must be 1-{_MAX_NAME} printable characters, got {value!r}")
    return value


@dataclass(frozen=True, eq=False)
class Transaction:
    """A signed, immutable ledger transaction. Build one with :meth:`create` or :meth:`from_bytes`.

    ``from_bytes`` parses and checks the structure only; the ledger verifies the signature
    (in batches) when it accepts the transaction.
    """

    chain_id: str
    kind: str
    sender: VerifyKey
    nonce: int
    payload: encoding.Value
    signature: bytes
    body: bytes = field(repr=False)
    id: bytes = field(init=False, repr=False)
    _wire: bytes | None = field(default=None, init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "id", signing.message_id(self.body))

    @staticmethod
    def body_for(chain_id: str, kind: str, sender: VerifyKey, nonce: int, payload: encoding.Value) -> bytes:
        """The canonical body bytes that the sender signs."""
        chain_id = check_name(chain_id, "chain_id")
        kind = check_name(kind, "kind")
        if type(nonce) is not int:
            raise InvalidArgumentType("nonce", f"expected int, got {type(nonce).__name__}")
        if not 0 <= nonce < 2**63:
            raise InvalidArgument("nonce", f"must be in [0, 2**63), got {nonce}")
        encoded_payload = encoding.encode(payload)
        if len(encoded_payload) > MAX_PAYLOAD_BYTES:
            raise OversizedPayload(f"payload is {len(encoded_payload)} bytes encoded, the limit is {MAX_PAYLOAD_BYTES}")
        return encoding.encode(
            {
                "type": TX_TYPE,
                "chain": chain_id,
                "kind": kind,
                "sender": sender.to_bytes(),
                "nonce": nonce,
                "payload": payload,
            }
        )

    @classmethod
    def create(cls, sender: Identity, *, kind: str, payload: encoding.Value, nonce: int, chain_id: str) -> Transaction:
        """A transaction signed by ``sender`` (an :class:`fedledger.Identity`)."""
        body = cls.body_for(chain_id, kind, sender.verify_key, nonce, payload)
        tx = cls(chain_id, kind, sender.verify_key, nonce, payload, sender.sign(body), body)
        tx.to_bytes()  # the sender serialises once, as it would to send it
        return tx

    def to_bytes(self) -> bytes:
        """The wire form: canonical CBOR ``[body, signature]``. This is the ledger's log leaf."""
        if self._wire is None:
            object.__setattr__(self, "_wire", wire_frame(self.body, self.signature))
        return self._wire  # type: ignore[return-value]

    @classmethod
    def from_bytes(cls, data: bytes) -> Transaction:
        """Parse the wire form; MalformedTransaction (or OversizedPayload) if it is not one."""
        if not isinstance(data, (bytes, bytearray, memoryview)):
            raise InvalidArgumentType("data", f"expected bytes, got {type(data).__name__}")
        size = data.nbytes if isinstance(data, memoryview) else len(data)  # a cast view's len counts items
        if size > MAX_TRANSACTION_BYTES:
            raise OversizedPayload(f"transaction is {size} bytes, the limit is {MAX_TRANSACTION_BYTES}")
        return cls._parse(bytes(data), encoding.decode)

    @classmethod
    def from_authenticated_bytes(cls, data: bytes) -> Transaction:
        """Parse wire bytes whose authenticity a certified Merkle root already established.

        The structure and field types are checked as in :meth:`from_bytes`; the canonical-form
        check is skipped (the bytes are the ones the validators accepted). Ledger replay only.
        """
        if not isinstance(data, (bytes, bytearray, memoryview)):
            raise InvalidArgumentType("data", f"expected bytes, got {type(data).__name__}")
        return cls._parse(data if type(data) is bytes else bytes(data), encoding.decode_authenticated)

    @classmethod
    def _parse(cls, data: bytes, decode: Callable[[bytes], encoding.Value]) -> Transaction:
        body, signature = wire_split(data)
        try:
            fields = decode(body)
        except EncodingError as exc:
            raise MalformedTransaction(f"transaction: {exc}") from None
        return cls._from_fields(fields, body, signature, data)

    @classmethod
    def _from_fields(cls, fields: encoding.Value, body: bytes, signature: bytes, data: bytes) -> Transaction:
        if type(fields) is not dict or set(fields) != _BODY_KEYS:
            raise MalformedTransaction(f"transaction body: expected the keys {sorted(_BODY_KEYS)}")
        if type(fields["type"]) is not str or fields["type"] != TX_TYPE:
            raise MalformedTransaction(
                f"transaction body: type is {encoding.short_repr(fields['type'])}, expected {TX_TYPE!r}"
            )
        chain, kind, sender, nonce = fields["chain"], fields["kind"], fields["sender"], fields["nonce"]
        if type(chain) is not str or type(kind) is not str:
            raise MalformedTransaction("transaction body: chain and kind must be text")
        try:  # the same rule as Transaction.create, so what parses could have been created
            check_name(chain, "chain")
            check_name(kind, "kind")
        except InvalidArgument as exc:
            raise MalformedTransaction(f"transaction body: {encoding.short_repr(str(exc), 200)}") from None
        if type(sender) is not bytes or len(sender) != signing.PUBLIC_KEY_SIZE:
            raise MalformedTransaction("transaction body: sender must be a 32-byte Ed25519 key")
        if type(nonce) is not int or not 0 <= nonce < 2**63:
            raise MalformedTransaction("transaction body: nonce must be an integer in [0, 2**63)")
        if len(signature) != signing.SIGNATURE_SIZE:
            raise MalformedTransaction(
                f"transaction: the signature is {len(signature)} bytes, an Ed25519 signature is {signing.SIGNATURE_SIZE}"
            )
        if len(body) > MAX_PAYLOAD_BYTES:  # the body is canonical: the payload's size is what the rest leaves
            size = len(body) - len(encoding.encode_decoded({**fields, "payload": None})) + 1
            if size > MAX_PAYLOAD_BYTES:
                raise OversizedPayload(f"payload is {size} bytes encoded, the limit is {MAX_PAYLOAD_BYTES}")
        tx = cls(chain, kind, VerifyKey(sender), nonce, fields["payload"], signature, body)
        object.__setattr__(tx, "_wire", data)
        return tx

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Transaction):
            return NotImplemented
        return self.body == other.body and self.signature == other.signature

    def __hash__(self) -> int:
        return hash((self.body, self.signature))
