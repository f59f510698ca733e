"""The second encryption layer: AES-256-GCM sealing with bound associated data.

A sealed message is ``version (1 byte, 0x01) || nonce (12 bytes) || ciphertext || tag (16 bytes)``.
The associated data binds who sent it, to whom, in which round and for what purpose
(:class:`SealContext`); the version byte is bound too. Opening with any other context, key,
or with a single changed or missing byte raises :class:`~fedledger.errors.SealError`, and
no plaintext, partial or whole, is ever returned then.

Nonces are 96 random bits per message: keep well under 2^32 messages per key (NIST SP
800-38D §8.3). Keys are 32 bytes, e.g. from :func:`generate_key` or HKDF
(:func:`fedledger.crypto.agreement.hkdf_sha256`).

>>> from fedledger.crypto import seal
>>> key = seal.generate_key()
>>> ctx = seal.SealContext(sender="st-marys", receiver="aggregator", round=3, purpose="update")
>>> seal.unseal(key, seal.seal(key, b"weights", ctx), ctx)
b'weights'
"""

from __future__ import annotations

import os
import struct
from dataclasses import dataclass
from typing import Final

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from fedledger.crypto._args import as_bytes
from fedledger.errors import InvalidArgument, InvalidArgumentType, SealError

__all__ = [
    "KEY_SIZE",
    "NONCE_SIZE",
    "OVERHEAD",
    "TAG_SIZE",
    "SealContext",
    "generate_key",
    "seal",
    "unseal",
]

KEY_SIZE: Final = 32
NONCE_SIZE: Final = 12
TAG_SIZE: Final = 16
VERSION: Final = 1
_HEADER: Final = 1 + NONCE_SIZE
#: Bytes a sealed message adds to its plaintext.
OVERHEAD: Final = _HEADER + TAG_SIZE
#: cryptography's AEAD limit on one message.
MAX_PLAINTEXT: Final = 2**31 - 1 - TAG_SIZE
_DOMAIN: Final = b"fedledger/seal/v1\x00"


def _text(value: object, argument: str) -> bytes:
    if not isinstance(value, str):
        raise InvalidArgumentType(argument, f"expected str, got {type(value).__name__}")
    try:
        return value.encode("utf-8")
    except UnicodeEncodeError:
        raise InvalidArgument(argument, "is not valid Unicode text (lone surrogate)") from None


@dataclass(frozen=True)
class SealContext:
    """What a sealed message is bound to: sender, receiver, round and purpose."""

    sender: str
    receiver: str
    round: int
    purpose: str

    def associated_data(self) -> bytes:
        """The AEAD associated data: a domain tag, the version, then each field length-prefixed."""
        parts = [_text(self.sender, "sender"), _text(self.receiver, "receiver"), _text(self.purpose, "purpose")]
        if isinstance(self.round, bool) or not isinstance(self.round, int):
            raise InvalidArgumentType("round", f"expected int, got {type(self.round).__name__}")
        if not 0 <= self.round < 2**64:
            raise InvalidArgument("round", f"must be in [0, 2**64), got {self.round}")
        out = [_DOMAIN, bytes([VERSION])]
        for part in parts:
            out.append(struct.pack(">I", len(part)))
            out.append(part)
        out.append(struct.pack(">Q", self.round))
        return b"".join(out)


def generate_key() -> bytes:
    """A fresh random 32-byte AES-256-GCM key."""
    return AESGCM.generate_key(bit_length=256)


def _key(key: object) -> AESGCM:
    raw = as_bytes(key, "key")
    if len(raw) != KEY_SIZE:
        raise InvalidArgument("key", f"an AES-256-GCM key is {KEY_SIZE} bytes, got {len(raw)}")
    return AESGCM(raw)


def _context(context: object) -> bytes:
    if not isinstance(context, SealContext):
        raise InvalidArgumentType("context", f"expected SealContext, got {type(context).__name__}")
    return context.associated_data()


def seal(key: bytes, plaintext: bytes, context: SealContext) -> bytes:
    """Encrypt and authenticate ``plaintext`` for ``context`` under a 32-byte key."""
    aead = _key(key)
    aad = _context(context)
    if not isinstance(plaintext, (bytes, bytearray, memoryview)):
        raise InvalidArgumentType("plaintext", f"expected bytes, got {type(plaintext).__name__}")
    if len(plaintext) > MAX_PLAINTEXT:
        raise InvalidArgument("plaintext", f"at most {MAX_PLAINTEXT} bytes per sealed message")
    nonce = os.urandom(NONCE_SIZE)
    return bytes([VERSION]) + nonce + _encrypt(aead, nonce, plaintext, aad)


def unseal(key: bytes, sealed: bytes, context: SealContext) -> bytes:
    """Check and decrypt a sealed message; SealError if anything is wrong with it.

    Arguments of the wrong type or a key of the wrong size are programming errors and raise
    InvalidArgument(Type); everything about the sealed bytes themselves is a SealError.
    """
    aead = _key(key)
    aad = _context(context)
    if not isinstance(sealed, (bytes, bytearray, memoryview)):
        raise InvalidArgumentType("sealed", f"expected bytes, got {type(sealed).__name__}")
    view = memoryview(sealed).cast("B")
    if len(view) < OVERHEAD:
        raise SealError("cannot open the sealed message")
    if view[0] != VERSION:
        raise SealError("cannot open the sealed message")
    return _decrypt(aead, bytes(view[1:_HEADER]), view[_HEADER:], aad)


def _encrypt(aead: AESGCM, nonce: bytes, plaintext: bytes | bytearray | memoryview, aad: bytes) -> bytes:
    """ciphertext || tag. The one place that encrypts (the Wycheproof tests call it directly)."""
    return aead.encrypt(nonce, plaintext, aad)


def _decrypt(aead: AESGCM, nonce: bytes, ciphertext_and_tag: bytes | memoryview, aad: bytes) -> bytes:
    """The plaintext, or SealError. The one place that decrypts: OpenSSL checks the tag before
    cryptography returns anything, so a failure never yields any plaintext."""
    try:
        return aead.decrypt(nonce, ciphertext_and_tag, aad)
    except (InvalidTag, ValueError, OverflowError):
        raise SealError("cannot open the sealed message") from None
