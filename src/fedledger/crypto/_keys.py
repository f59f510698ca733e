"""Helpers shared by the key classes: argument checks and password-encrypted PKCS#8 PEM."""

from __future__ import annotations

from typing import Union

from cryptography.exceptions import UnsupportedAlgorithm
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.asymmetric.types import PrivateKeyTypes
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey

from fedledger.crypto._args import as_bytes
from fedledger.errors import InvalidArgument, InvalidKey

PrivateKey = Union[Ed25519PrivateKey, X25519PrivateKey]


def password_bytes(password: object) -> bytes:
    """A non-empty password; str is encoded as UTF-8."""
    if isinstance(password, str):
        password = password.encode("utf-8")
    password = as_bytes(password, "password")
    if not password:
        raise InvalidArgument("password", "must not be empty")
    return password


def load_private_pem(data: object, password: object) -> PrivateKeyTypes:
    """Decrypt a password-encrypted PKCS#8 PEM private key; every failure is InvalidKey."""
    pem = as_bytes(data, "data")
    pw = password_bytes(password)
    try:
        return serialization.load_pem_private_key(pem, password=pw)
    except (ValueError, TypeError, UnsupportedAlgorithm):
        # No detail: the message must not help tell a wrong password from a corrupt file.
        raise InvalidKey("cannot load the private key: wrong password, or not an encrypted PKCS#8 PEM") from None


def encrypted_pem(key: PrivateKey, password: object) -> bytes:
    """PKCS#8 PEM encrypted with cryptography's best available scheme under ``password``."""
    return key.private_bytes(
        encoding=serialization.Encoding.PEM,
        format=serialization.PrivateFormat.PKCS8,
        encryption_algorithm=serialization.BestAvailableEncryption(password_bytes(password)),
    )
