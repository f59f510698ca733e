"""X25519 key agreement (RFC 7748) and HKDF-SHA256 (RFC 5869), through ``cryptography``.

Used to derive the pairwise seeds of secure aggregation: both parties of a pair derive the
same seed from their own private key and the other's public key. :func:`pairwise_seeds`
derives many at once, the X25519 exchanges (libsodium) and HKDFs (OpenSSL) done natively in
parallel by the ``_masking`` kernel.

A peer's public value of low order (one that gives the all-zero shared secret for every
private key) is rejected with InvalidKey, as RFC 7748 §6.1 allows; so is any exchange whose
shared secret is all zeros.

>>> from fedledger.crypto import agreement
>>> a, b = agreement.AgreementKey.generate(), agreement.AgreementKey.generate()
>>> seed_ab = agreement.pairwise_seed(a, b.public_key, context=b"round 1")
>>> seed_ab == agreement.pairwise_seed(b, a.public_key, context=b"round 1")
True
"""

from __future__ import annotations

import hmac
import operator
from collections.abc import Sequence
from typing import Final

import numpy as np
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey, X25519PublicKey
from cryptography.hazmat.primitives.kdf.hkdf import HKDF
from numpy.typing import NDArray

from fedledger._ext import rebuild_error
from fedledger.crypto._args import as_bytes, as_int, int_repr
from fedledger.crypto._keys import encrypted_pem, load_private_pem
from fedledger.crypto._threads import num_threads
from fedledger.errors import InvalidArgument, InvalidArgumentType, InvalidKey

try:
    from fedledger._ext import _masking as _k
except ImportError as exc:  # pragma: no cover - exercised by test_build
    raise rebuild_error("_masking", exc) from exc

__all__ = [
    "KEY_SIZE",
    "AgreementKey",
    "AgreementPublicKey",
    "hkdf_sha256",
    "hkdf_sha256_many",
    "pairwise_info",
    "pairwise_seed",
    "pairwise_seeds",
    "seed_from_shared",
]

KEY_SIZE: Final = 32
_HASH_SIZE: Final = 32
_MAX_HKDF_LENGTH: Final = 255 * _HASH_SIZE
_ZERO: Final = bytes(KEY_SIZE)
#: OpenSSL 3.0's HKDF keeps at most 1024 bytes of info.
_MAX_INFO: Final = 1024
# Any fixed scalar works: a low-order point times any clamped scalar is the identity (u = 0).
_PROBE: Final = X25519PrivateKey.from_private_bytes(bytes(range(1, 33)))


class AgreementPublicKey:
    """An X25519 public value, 32 raw bytes (RFC 7748 u-coordinate). Immutable and hashable."""

    __slots__ = ("_raw",)

    def __init__(self, raw: bytes) -> None:
        raw = as_bytes(raw, "raw")
        if len(raw) != KEY_SIZE:
            raise InvalidArgument("raw", f"an X25519 public key is {KEY_SIZE} bytes, got {len(raw)}")
        self._raw = raw

    @classmethod
    def from_bytes(cls, raw: bytes) -> AgreementPublicKey:
        return cls(raw)

    def to_bytes(self) -> bytes:
        return self._raw

    def __bytes__(self) -> bytes:
        return self._raw

    @property
    def is_low_order(self) -> bool:
        """True if every exchange with this value gives the all-zero secret."""
        try:
            shared = _PROBE.exchange(X25519PublicKey.from_public_bytes(self._raw))
        except ValueError:
            return True  # OpenSSL refuses an all-zero result
        return hmac.compare_digest(shared, _ZERO)

    def check_registrable(self) -> None:
        """Raise InvalidKey if the value is of low order (useless for key agreement)."""
        if self.is_low_order:
            raise InvalidKey(f"X25519 public key {self._raw.hex()} is of low order")

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, AgreementPublicKey):
            return NotImplemented
        return self._raw == other._raw

    def __hash__(self) -> int:
        return hash((AgreementPublicKey, self._raw))

    def __repr__(self) -> str:
        return f"AgreementPublicKey({self._raw.hex()})"


class AgreementKey:
    """An X25519 private key. Its repr never shows the secret."""

    __slots__ = ("_key", "_public")

    def __init__(self, key: X25519PrivateKey) -> None:
        if not isinstance(key, X25519PrivateKey):
            raise InvalidArgumentType("key", f"expected X25519PrivateKey, got {type(key).__name__}")
        self._key = key
        self._public = AgreementPublicKey(key.public_key().public_bytes_raw())

    @classmethod
    def generate(cls) -> AgreementKey:
        return cls(X25519PrivateKey.generate())

    @classmethod
    def from_bytes(cls, raw: bytes) -> AgreementKey:
        """The key with this 32-byte scalar (clamped by X25519 itself)."""
        raw = as_bytes(raw, "raw")
        if len(raw) != KEY_SIZE:
            raise InvalidArgument("raw", f"an X25519 private key is {KEY_SIZE} bytes, got {len(raw)}")
        return cls(X25519PrivateKey.from_private_bytes(raw))

    def to_bytes(self) -> bytes:
        """The 32-byte scalar. Keep it secret; at rest use :meth:`to_pem` with a password."""
        return self._key.private_bytes_raw()

    @classmethod
    def from_pem(cls, data: bytes, password: bytes | str) -> AgreementKey:
        key = load_private_pem(data, password)
        if not isinstance(key, X25519PrivateKey):
            raise InvalidKey(f"not an X25519 private key: {type(key).__name__}")
        return cls(key)

    def to_pem(self, password: bytes | str) -> bytes:
        """Encrypted PKCS#8 PEM. A password is required."""
        return encrypted_pem(self._key, password)

    @property
    def public_key(self) -> AgreementPublicKey:
        return self._public

    def exchange(self, peer: AgreementPublicKey | bytes) -> bytes:
        """The raw 32-byte X25519 shared secret. Feed it to a KDF, never use it as a key.

        Raises InvalidKey if the result is all zeros (a low-order peer value).
        """
        raw = peer._raw if isinstance(peer, AgreementPublicKey) else AgreementPublicKey(peer)._raw
        try:
            shared = self._key.exchange(X25519PublicKey.from_public_bytes(raw))
        except ValueError:
            raise InvalidKey("X25519 exchange gave the all-zero secret: the peer key is of low order") from None
        if hmac.compare_digest(shared, _ZERO):
            raise InvalidKey("X25519 exchange gave the all-zero secret: the peer key is of low order")
        return shared

    def __repr__(self) -> str:
        return f"AgreementKey(public_key={self._public.to_bytes().hex()})"


def hkdf_sha256(ikm: bytes, *, salt: bytes, info: bytes, length: int) -> bytes:
    """HKDF-SHA256 (RFC 5869) of ``length`` bytes, 1 <= length <= 8160. An empty salt means
    the RFC's default (a string of zeros)."""
    ikm = as_bytes(ikm, "ikm")
    salt = as_bytes(salt, "salt")
    info = as_bytes(info, "info")
    if isinstance(length, bool) or not isinstance(length, int):
        raise InvalidArgumentType("length", f"expected int, got {type(length).__name__}")
    length = operator.index(length)
    if not 1 <= length <= _MAX_HKDF_LENGTH:
        raise InvalidArgument("length", f"must be in [1, {_MAX_HKDF_LENGTH}], got {length}")
    # cryptography's HKDF (OpenSSL underneath): a KDF is not re-implemented here, even though
    # a hand-rolled RFC 5869 over hmac.digest was ~3x faster per call for SecAgg's many seeds.
    return HKDF(algorithm=hashes.SHA256(), length=length, salt=salt or None, info=info).derive(ikm)


def pairwise_seed(own: AgreementKey, peer: AgreementPublicKey | bytes, *, context: bytes, length: int = 32) -> bytes:
    """A seed both parties derive alike: HKDF-SHA256 of the X25519 secret, with the two public
    keys (sorted) and ``context`` (round, purpose; canonical bytes) bound into ``info``."""
    if not isinstance(own, AgreementKey):
        raise InvalidArgumentType("own", f"expected AgreementKey, got {type(own).__name__}")
    peer_key = peer if isinstance(peer, AgreementPublicKey) else AgreementPublicKey(peer)
    context = as_bytes(context, "context")
    shared = own.exchange(peer_key)
    return seed_from_shared(shared, own.public_key.to_bytes(), peer_key.to_bytes(), context=context, length=length)


def seed_from_shared(
    shared: bytes, own_public: bytes, peer_public: bytes, *, context: bytes, length: int = 32
) -> bytes:
    """The HKDF step of :func:`pairwise_seed`, for callers that computed the X25519 secret
    themselves (:func:`pairwise_seeds` does many at once, natively, with :func:`pairwise_info`
    and OpenSSL's HKDF)."""
    return hkdf_sha256(shared, salt=b"", info=pairwise_info(own_public, peer_public, context), length=length)


def pairwise_info(own_public: bytes, peer_public: bytes, context: bytes) -> bytes:
    """The HKDF ``info`` of :func:`pairwise_seed`: a domain tag, both public keys sorted (so
    both sides derive alike), then the context."""
    low, high = sorted((own_public, peer_public))
    return b"fedledger/pairwise-seed/v1\x00" + low + high + context


def pairwise_seeds(own: AgreementKey, peers: Sequence[bytes], *, context: bytes, length: int = 32) -> list[bytes]:
    """``[pairwise_seed(own, p, context=context, length=length) for p in peers]``, the X25519
    exchanges done natively (libsodium) in parallel. InvalidKey, naming the index, if a peer
    value is of low order (the shared secret is all zeros)."""
    if not isinstance(own, AgreementKey):
        raise InvalidArgumentType("own", f"expected AgreementKey, got {type(own).__name__}")
    length = as_int(length, "length")
    raw = [AgreementPublicKey(p).to_bytes() for p in peers]
    if not raw:
        return []
    out = np.empty((len(raw), 32), dtype=np.uint8)
    ok = np.empty(len(raw), dtype=np.uint8)
    _k.x25519_many(
        np.frombuffer(own.to_bytes(), np.uint8),
        np.frombuffer(b"".join(raw), np.uint8).reshape(-1, 32),
        out,
        ok,
        num_threads(),
    )
    bad = np.flatnonzero(ok == 0)
    if bad.size:
        raise InvalidKey(f"peers[{int(bad[0])}]: X25519 exchange gave the all-zero secret (low-order key)")
    mine = own.public_key.to_bytes()
    return hkdf_sha256_many(out, salt=b"", infos=[pairwise_info(mine, p, context) for p in raw], length=length)


def hkdf_sha256_many(ikm: NDArray[np.uint8], *, salt: bytes, infos: Sequence[bytes], length: int) -> list[bytes]:
    """``[hkdf_sha256(ikm[i], salt=salt, info=infos[i], length=length)]`` natively (OpenSSL's
    HKDF) in parallel; ``ikm`` is an (n, 32) uint8 array, each info 1 to 1024 bytes."""
    if not 1 <= length <= _MAX_HKDF_LENGTH:
        raise InvalidArgument("length", f"must be in [1, {_MAX_HKDF_LENGTH}], got {int_repr(length)}")
    if any(not 0 < len(info) <= _MAX_INFO for info in infos):
        # empty: OpenSSL 3.0's HKDF mishandles an empty info on a reused context
        raise InvalidArgument("info", f"must be 1 to {_MAX_INFO} bytes")
    out = np.empty((len(infos), length), dtype=np.uint8)
    if _k.hkdf_many(ikm, np.frombuffer(salt, np.uint8), tuple(infos), out, num_threads()):  # pragma: no cover
        raise MemoryError("HKDF kernel failed")
    return [row.tobytes() for row in out]
