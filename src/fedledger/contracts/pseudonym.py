"""Keyed pseudonyms and salted commitments: how patients and records appear on the ledger.

A plain hash of a patient number or a prescription is a dictionary attack away from the
value (the space of patient numbers is small), so the ledger never holds one. A **pseudonym**
is HMAC-SHA256 of an identifier under a key the consortium (or one site) keeps off the
chain; a **commitment** is SHA-256 of a random 32-byte salt and the content, the salt kept
with the content off the chain. Both are 32 bytes.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets

from fedledger.errors import InvalidArgument, InvalidArgumentType

__all__ = ["commit", "opens", "pseudonym"]


def pseudonym(key: bytes, identifier: str | bytes) -> bytes:
    """HMAC-SHA256 of ``identifier`` under ``key`` (at least 32 bytes): a stable 32-byte pseudonym."""
    if not isinstance(key, (bytes, bytearray)) or len(key) < 32:
        raise InvalidArgument("key", "must be at least 32 bytes of secret key")
    if isinstance(identifier, str):
        identifier = identifier.encode()
    if not isinstance(identifier, (bytes, bytearray)):
        raise InvalidArgumentType("identifier", f"expected str or bytes, got {type(identifier).__name__}")
    return hmac.new(bytes(key), b"fedledger.pseudonym/1\x00" + bytes(identifier), hashlib.sha256).digest()


def commit(content: bytes, salt: bytes | None = None) -> tuple[bytes, bytes]:
    """``(commitment, salt)``: SHA-256(salt || content) with a fresh random 32-byte salt."""
    if not isinstance(content, (bytes, bytearray)):
        raise InvalidArgumentType("content", f"expected bytes, got {type(content).__name__}")
    salt = secrets.token_bytes(32) if salt is None else salt
    if not isinstance(salt, (bytes, bytearray)) or len(salt) != 32:
        raise InvalidArgument("salt", "must be 32 bytes")
    return hashlib.sha256(bytes(salt) + bytes(content)).digest(), bytes(salt)


def opens(commitment: bytes, content: bytes, salt: bytes) -> bool:
    """Whether ``content`` with ``salt`` is what ``commitment`` commits to (constant-time compare)."""
    return hmac.compare_digest(commit(content, salt)[0], commitment)
