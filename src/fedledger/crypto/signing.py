"""Ed25519 signatures (RFC 8032): keys through ``cryptography``, verification natively.

Every verification, single or batched, goes through one native kernel
(``fedledger._ext._signing``, over libsodium) that applies one rule, written down in
``docs/security-signing.md``. A signature is valid if and only if, in this order:

1. it is exactly 64 bytes (reason ``"length"``);
2. its scalar S is canonical, S < L (no malleability by adding L; ``"non-canonical-s"``);
3. the public key is not of small order: none of the 14 encodings of the 8 torsion points
   (``"small-order-key"``);
4. the public key is canonically encoded: its y coordinate is < p = 2^255 - 19
   (``"non-canonical-key"``);
5. R, its first 32 bytes, is not of small order (the same 14 encodings; ``"small-order-r"``);
6. libsodium's Ed25519 verify accepts it: the key decodes to a curve point (else
   ``"bad-key"``) and [S]B - [k]A encodes to exactly the bytes of R, k = SHA-512(R || A || M)
   mod L, the cofactorless equation (else ``"mismatch"``).

:func:`verify` is :func:`verify_batch` on a batch of one, so the two never disagree.

>>> from fedledger.crypto import signing
>>> sk = signing.SigningKey.generate()
>>> sig = sk.sign(b"block 7")
>>> signing.verify(sk.verify_key, b"block 7", sig)  # raises InvalidSignature if wrong
>>> signing.verify_batch([sk.verify_key, sk.verify_key], [b"block 7", b"block 8"], [sig, sig]).tolist()
[True, False]
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Sequence
from typing import Final, Union

import numpy as np
from cryptography.exceptions import UnsupportedAlgorithm
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from numpy.typing import NDArray

from fedledger._ext import rebuild_error
from fedledger.crypto._args import as_bytes as _bytes
from fedledger.crypto._keys import encrypted_pem, load_private_pem
from fedledger.crypto._threads import num_threads
from fedledger.errors import InvalidArgument, InvalidArgumentType, InvalidKey, InvalidSignature

__all__ = [
    "PUBLIC_KEY_SIZE",
    "SEED_SIZE",
    "SIGNATURE_SIZE",
    "SigningKey",
    "VerifyKey",
    "message_id",
    "verify",
    "verify_batch",
]

try:
    from fedledger._ext import _signing as _k
except ImportError as exc:  # pragma: no cover - exercised by test_build
    raise rebuild_error("_signing", exc) from exc

PUBLIC_KEY_SIZE: Final = 32
SEED_SIZE: Final = 32
SIGNATURE_SIZE: Final = 64

_REASONS: Final[dict[int, tuple[str, str]]] = {
    _k.BAD_LENGTH: ("length", f"a signature must be {SIGNATURE_SIZE} bytes"),
    _k.NON_CANONICAL_S: ("non-canonical-s", "the scalar S is not below the group order L"),
    _k.SMALL_ORDER_KEY: ("small-order-key", "the public key is a point of small order"),
    _k.NON_CANONICAL_KEY: ("non-canonical-key", "the public key's y coordinate is not below p"),
    _k.SMALL_ORDER_R: ("small-order-r", "the signature's R is a point of small order"),
    _k.BAD_KEY: ("bad-key", "the public key is not a valid Ed25519 point"),
    _k.BAD_SIGNATURE: ("mismatch", "the signature does not match the key and message"),
}


class VerifyKey:
    """An Ed25519 public key: 32 raw bytes (RFC 8032 encoding). Immutable and hashable.

    Any 32 bytes make a VerifyKey; keys of small order never verify anything, and
    :meth:`check_registrable` rejects them when an identity is registered.
    """

    __slots__ = ("_raw",)

    def __init__(self, raw: bytes) -> None:
        raw = _bytes(raw, "raw")
        if len(raw) != PUBLIC_KEY_SIZE:
            raise InvalidArgument("raw", f"an Ed25519 public key is {PUBLIC_KEY_SIZE} bytes, got {len(raw)}")
        self._raw = raw

    @classmethod
    def from_bytes(cls, raw: bytes) -> VerifyKey:
        """The key whose raw encoding is ``raw`` (32 bytes)."""
        return cls(raw)

    @classmethod
    def from_pem(cls, data: bytes) -> VerifyKey:
        """Load a SubjectPublicKeyInfo PEM Ed25519 public key."""
        try:
            key = serialization.load_pem_public_key(_bytes(data, "data"))
        except (ValueError, UnsupportedAlgorithm) as exc:
            raise InvalidKey(f"not a PEM public key: {exc}") from None
        if not isinstance(key, Ed25519PublicKey):
            raise InvalidKey(f"not an Ed25519 public key: {type(key).__name__}")
        return cls(key.public_bytes_raw())

    def to_bytes(self) -> bytes:
        """The 32-byte raw encoding."""
        return self._raw

    def __bytes__(self) -> bytes:
        return self._raw

    def to_pem(self) -> bytes:
        """SubjectPublicKeyInfo PEM."""
        try:
            key = Ed25519PublicKey.from_public_bytes(self._raw)
        except ValueError as exc:
            raise InvalidKey(f"cannot encode this key as PEM: {exc}") from None
        return key.public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)

    @property
    def is_small_order(self) -> bool:
        """True if the key is one of the 14 encodings of a point of order 1, 2, 4 or 8."""
        return bool(_k.is_small_order(self._raw))

    def check_registrable(self) -> None:
        """Raise InvalidKey unless this key may be registered for an identity (not small order)."""
        if self.is_small_order:
            raise InvalidKey(f"Ed25519 public key {self._raw.hex()} is of small order")

    def verify(self, message: bytes, signature: bytes) -> None:
        """Same as ``verify(self, message, signature)``."""
        verify(self, message, signature)

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, VerifyKey):
            return NotImplemented
        return self._raw == other._raw

    def __hash__(self) -> int:
        return hash((VerifyKey, self._raw))

    def __repr__(self) -> str:
        return f"VerifyKey({self._raw.hex()})"


class SigningKey:
    """An Ed25519 private key. Its repr never shows the secret.

    >>> sk = SigningKey.from_bytes(bytes(32))
    >>> sk.verify_key.to_bytes().hex()[:16]
    '3b6a27bcceb6a42d'
    """

    __slots__ = ("_key", "_verify_key")

    def __init__(self, key: Ed25519PrivateKey) -> None:
        if not isinstance(key, Ed25519PrivateKey):
            raise InvalidArgumentType("key", f"expected Ed25519PrivateKey, got {type(key).__name__}")
        self._key = key
        self._verify_key = VerifyKey(key.public_key().public_bytes_raw())

    @classmethod
    def generate(cls) -> SigningKey:
        """A fresh key from the operating system's CSPRNG."""
        return cls(Ed25519PrivateKey.generate())

    @classmethod
    def from_bytes(cls, seed: bytes) -> SigningKey:
        """The key with this 32-byte RFC 8032 seed."""
        seed = _bytes(seed, "seed")
        if len(seed) != SEED_SIZE:
            raise InvalidArgument("seed", f"an Ed25519 seed is {SEED_SIZE} bytes, got {len(seed)}")
        return cls(Ed25519PrivateKey.from_private_bytes(seed))

    def to_bytes(self) -> bytes:
        """The 32-byte seed. Keep it secret; at rest use :meth:`to_pem` with a password."""
        return self._key.private_bytes_raw()

    @classmethod
    def from_pem(cls, data: bytes, password: bytes | str) -> SigningKey:
        """Load a password-encrypted PKCS#8 PEM key (InvalidKey on a wrong password)."""
        key = load_private_pem(data, password)
        if not isinstance(key, Ed25519PrivateKey):
            raise InvalidKey(f"not an Ed25519 private key: {type(key).__name__}")
        return cls(key)

    def to_pem(self, password: bytes | str) -> bytes:
        """Encrypted PKCS#8 PEM (cryptography's best available encryption). A password is required."""
        return encrypted_pem(self._key, password)

    @property
    def verify_key(self) -> VerifyKey:
        return self._verify_key

    def sign(self, message: bytes) -> bytes:
        """The 64-byte Ed25519 signature of ``message`` (deterministic, RFC 8032)."""
        return self._key.sign(_bytes(message, "message"))

    def __repr__(self) -> str:
        return f"SigningKey(verify_key={self._verify_key.to_bytes().hex()})"


#: A public key argument: a VerifyKey or its 32 raw bytes.
PublicKeyLike = Union[VerifyKey, bytes]


def _key_bytes(key: object, argument: str) -> bytes:
    if isinstance(key, VerifyKey):
        return key._raw
    raw = _bytes(key, argument)
    if len(raw) != PUBLIC_KEY_SIZE:
        raise InvalidArgument(argument, f"an Ed25519 public key is {PUBLIC_KEY_SIZE} bytes, got {len(raw)}")
    return raw


def _items(values: object, argument: str) -> tuple[bytes, ...]:
    if isinstance(values, (bytes, bytearray, memoryview, str)):
        raise InvalidArgumentType(argument, f"expected a sequence of bytes, got a single {type(values).__name__}")
    if not isinstance(values, Iterable):
        raise InvalidArgumentType(argument, f"expected a sequence of bytes, got {type(values).__name__}")
    items = values if isinstance(values, tuple) else tuple(values)
    if _k.first_non_bytes(items) >= 0:
        items = tuple(_bytes(x, f"{argument}[{i}]") for i, x in enumerate(items))
    return items


def _keys(public_keys: object) -> bytes:
    """All keys concatenated (32 bytes each)."""
    if isinstance(public_keys, np.ndarray):
        if public_keys.dtype != np.uint8 or public_keys.ndim != 2 or public_keys.shape[1] != PUBLIC_KEY_SIZE:
            raise InvalidArgument(
                "public_keys",
                f"a key array must be uint8 of shape (n, 32), got {public_keys.dtype} {public_keys.shape}",
            )
        return public_keys.tobytes()
    if isinstance(public_keys, (bytes, bytearray, memoryview, str, VerifyKey)):
        raise InvalidArgumentType(
            "public_keys", f"expected a sequence of keys, got a single {type(public_keys).__name__}"
        )
    if not isinstance(public_keys, Iterable):
        raise InvalidArgumentType("public_keys", f"expected a sequence of keys, got {type(public_keys).__name__}")
    keys = list(public_keys)
    return b"".join([_key_bytes(key, f"public_keys[{i}]") for i, key in enumerate(keys)])


def _codes(keys: bytes, messages: tuple[bytes, ...], signatures: tuple[bytes, ...], nthreads: int) -> NDArray[np.uint8]:
    out = np.empty(len(messages), dtype=np.uint8)
    _k.verify_batch(keys, messages, signatures, out, nthreads)  # MemoryError if it cannot allocate
    return out


def verify(public_key: PublicKeyLike, message: bytes, signature: bytes) -> None:
    """Check one signature; raise InvalidSignature (with a ``reason``) if it does not verify.

    It runs the batch kernel on a batch of one, so it agrees with :func:`verify_batch`.
    """
    key = _key_bytes(public_key, "public_key")
    msg = _bytes(message, "message")
    sig = _bytes(signature, "signature")
    code = int(_codes(key, (msg,), (sig,), 1)[0])
    if code != _k.VALID:
        reason, text = _REASONS[code]
        raise InvalidSignature(f"Ed25519 signature rejected: {text}", reason)


def verify_batch(
    public_keys: Sequence[PublicKeyLike] | NDArray[np.uint8],
    messages: Sequence[bytes],
    signatures: Sequence[bytes],
) -> NDArray[np.bool_]:
    """Verify n signatures at once: a bool array, True where item i verifies.

    The native kernel releases the GIL and spreads the items over the cores with OpenMP
    (``fedledger.set_num_threads``). A wrong signature, of any length, is False; malformed
    arguments raise typed errors: InvalidArgumentType for non-bytes items, InvalidArgument
    for a key that is not 32 bytes, for sequences of different lengths, and for an empty
    batch (so that ``verify_batch(...).all()`` can never be vacuously true).
    """
    keys = _keys(public_keys)
    msgs = _items(messages, "messages")
    sigs = _items(signatures, "signatures")
    n = len(keys) // PUBLIC_KEY_SIZE
    if not (n == len(msgs) == len(sigs)):
        raise InvalidArgument(
            "signatures",
            f"batch lengths differ: {n} public keys, {len(msgs)} messages, {len(sigs)} signatures",
        )
    if n == 0:
        raise InvalidArgument("public_keys", "empty batch: there is nothing to verify")
    ok: NDArray[np.bool_] = _codes(keys, msgs, sigs, num_threads()) == _k.VALID
    return ok


def message_id(body: bytes) -> bytes:
    """The id of a signed message: SHA-256 of its signed body (its canonical bytes), never of
    the signature, so that an id does not change with the signature that carries it.

    >>> message_id(b"").hex()[:16]
    'e3b0c44298fc1c14'
    """
    return hashlib.sha256(_bytes(body, "body")).digest()
