"""Shamir secret sharing over GF(p), p = 2^31 - 1, with an integrity commitment.

A secret is cut into field elements ("limbs"): a byte string into 3-byte limbs, an array of
field elements as it is. Six uniformly random field elements (a 186-bit nonce) are appended,
and every limb gets its own random polynomial of degree threshold - 1 whose constant term is
that limb; share i holds every polynomial evaluated at x = i. Any ``threshold`` shares give the
secret back by Lagrange interpolation at 0; fewer reveal nothing about it.

Each share also carries a *commitment*, SHA-256 over a domain tag, the kind and length of the
secret, and all limbs including the nonce. :func:`combine` recomputes it from what it
reconstructed and raises :class:`~fedledger.errors.ShareIntegrityError` if it differs, so a
corrupted share never yields a wrong "secret". The nonce is shared along with the secret, so
fewer than ``threshold`` shares cannot brute-force a low-entropy secret from the commitment.

The kernels are Cython (``fedledger._ext._shamir``), compiled ahead of time like the others.

>>> from fedledger.crypto import shamir
>>> shares = shamir.split(b"a 32-byte key for the round....!", threshold=3, n=5)
>>> shamir.combine([shares[4], shares[0], shares[2]])
b'a 32-byte key for the round....!'
>>> shamir.Share.from_bytes(shares[1].to_bytes()) == shares[1]
True
"""

from __future__ import annotations

import hashlib
import hmac
import os
import struct
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Final, TypeVar, Union

import numpy as np
from numpy.typing import NDArray

from fedledger._ext import rebuild_error
from fedledger.crypto._args import as_int as _int
from fedledger.errors import (
    InsufficientShares,
    InvalidArgument,
    InvalidArgumentType,
    InvalidShare,
    ShareIntegrityError,
)

__all__ = [
    "MAX_SHARES",
    "NONCE_LIMBS",
    "PRIME",
    "ArrayShare",
    "Share",
    "combine",
    "combine_array",
    "split",
    "split_array",
]

try:
    from fedledger._ext import _shamir as _k
except ImportError as exc:  # pragma: no cover - exercised by test_build
    raise rebuild_error("_shamir", exc) from exc

#: The field: GF(2^31 - 1).
PRIME: Final = 2**31 - 1
#: Random field elements appended to every secret before sharing (hides the commitment).
NONCE_LIMBS: Final = 6
#: Share indices are 1..MAX_SHARES.
MAX_SHARES: Final = 65535
#: Bytes per limb of a byte-string secret (24 bits < 31).
LIMB_BYTES: Final = 3
MAX_SECRET_BYTES: Final = 1 << 20
_DOMAIN: Final = b"fedledger/shamir/v1\x00"

#: Where randomness comes from: a function returning that many uniformly random bytes.
RandomBytes = Callable[[int], bytes]

_T = TypeVar("_T", bound="_ShareBase")


def _check_params(threshold: object, n: object) -> tuple[int, int]:
    t = _int(threshold, "threshold")
    n_ = _int(n, "n")
    if not 1 <= n_ <= MAX_SHARES:
        raise InvalidArgument("n", f"must be in [1, {MAX_SHARES}], got {n_}")
    if not 1 <= t <= n_:
        raise InvalidArgument("threshold", f"must be in [1, n={n_}], got {t}")
    return t, n_


def _field_elements(random_bytes: RandomBytes, count: int) -> NDArray[np.uint32]:
    """``count`` uniform elements of [0, p): 31 random bits each, rejecting p itself."""
    out = np.frombuffer(random_bytes(4 * count), dtype="<u4").astype(np.uint32) & np.uint32(PRIME)
    bad = np.flatnonzero(out == PRIME)
    while bad.size:
        fresh = np.frombuffer(random_bytes(4 * bad.size), dtype="<u4").astype(np.uint32) & np.uint32(PRIME)
        out[bad] = fresh
        bad = bad[fresh == PRIME]
    return out


def _commitment(kind: bytes, length: int, limbs: NDArray[np.uint32]) -> bytes:
    h = hashlib.sha256(_DOMAIN)
    h.update(kind)
    h.update(struct.pack("<Q", length))
    h.update(np.ascontiguousarray(limbs, dtype="<u4").tobytes())
    return h.digest()


def _deal(limbs: NDArray[np.uint32], threshold: int, n: int, random_bytes: RandomBytes) -> NDArray[np.uint32]:
    """(n, m) share values of limbs (m,) under fresh random polynomials; share i is row i-1."""
    m = limbs.shape[0]
    coeffs = np.empty((threshold, m), dtype=np.uint32)
    coeffs[0] = limbs
    if threshold > 1:
        coeffs[1:] = _field_elements(random_bytes, (threshold - 1) * m).reshape(threshold - 1, m)
    xs = np.arange(1, n + 1, dtype=np.uint32)
    out = np.empty((n, m), dtype=np.uint32)
    _k.evaluate(coeffs, xs, out)
    return out


def _interpolate(xs: Sequence[int], rows: Sequence[NDArray[np.uint32]]) -> NDArray[np.uint32]:
    t = len(xs)
    m = rows[0].shape[0]
    ys = np.empty((t, m), dtype=np.uint32)
    for i, row in enumerate(rows):
        ys[i] = row
    out = np.empty(m, dtype=np.uint32)
    _k.interpolate0(np.asarray(xs, dtype=np.uint32), ys, out)
    return out


#: Wire layout of a share: magic, kind, index, threshold, length, commitment, then the values
#: (little-endian uint32). Fixed-size fields only, so every share has exactly one encoding.
_WIRE: Final = struct.Struct("<4sBHHI32s")
_MAGIC: Final = b"FLS1"


def _decoded(data: object, kind: int, what: str) -> tuple[int, int, int, bytes, bytes]:
    if not isinstance(data, (bytes, bytearray, memoryview)):
        raise InvalidShare(f"not a {what}: expected bytes, got {type(data).__name__}")
    raw = bytes(data)
    if len(raw) < _WIRE.size:
        raise InvalidShare(f"not a {what}: {len(raw)} bytes is too short")
    magic, got_kind, index, threshold, length, commitment = _WIRE.unpack_from(raw)
    if magic != _MAGIC or got_kind != kind:
        raise InvalidShare(f"not a {what}: wrong magic or kind")
    return index, threshold, length, raw[_WIRE.size :], commitment


@dataclass(frozen=True, eq=False)
class _ShareBase:
    index: int
    threshold: int
    length: int
    values: bytes
    commitment: bytes

    _KIND = 0
    _WHAT = ""

    def __post_init__(self) -> None:
        what = self._WHAT
        if type(self.index) is not int or not 1 <= self.index <= MAX_SHARES:
            raise InvalidShare(f"{what}: index must be an int in [1, {MAX_SHARES}], got {self.index!r}")
        if type(self.threshold) is not int or not 1 <= self.threshold <= MAX_SHARES:
            raise InvalidShare(f"{what}: threshold must be an int in [1, {MAX_SHARES}], got {self.threshold!r}")
        if type(self.length) is not int or not 0 <= self.length <= self._max_length():
            raise InvalidShare(f"{what}: length {self.length!r} out of range")
        if type(self.values) is not bytes or len(self.values) != 4 * self.limbs():
            raise InvalidShare(f"{what}: values must be {4 * self.limbs()} bytes for length {self.length}")
        if type(self.commitment) is not bytes or len(self.commitment) != 32:
            raise InvalidShare(f"{what}: commitment must be 32 bytes")
        if self.values and max(struct.unpack(f"<{len(self.values) // 4}I", self.values)) >= PRIME:
            raise InvalidShare(f"{what}: a value is not a field element (>= 2^31 - 1)")

    def _max_length(self) -> int:
        raise NotImplementedError

    @classmethod
    def _dealt(cls: type[_T], index: int, threshold: int, length: int, values: bytes, commitment: bytes) -> _T:
        """A share this module just computed: its fields are valid by construction, so the
        checks of __post_init__ (meant for shares from outside) are skipped."""
        obj = object.__new__(cls)
        for name, value in (
            ("index", index),
            ("threshold", threshold),
            ("length", length),
            ("values", values),
            ("commitment", commitment),
        ):
            object.__setattr__(obj, name, value)
        return obj

    def limbs(self) -> int:
        """Field elements per share: the secret's limbs plus the nonce."""
        raise NotImplementedError

    def array(self) -> NDArray[np.uint32]:
        """The share's values as a uint32 array (a copy)."""
        return np.frombuffer(self.values, dtype="<u4").astype(np.uint32)

    def to_bytes(self) -> bytes:
        """The fixed binary layout: b"FLS1", kind (1 bytes, 2 array), index (u16), threshold
        (u16), length (u32), commitment (32 bytes), values; all little-endian."""
        head = _WIRE.pack(_MAGIC, self._KIND, self.index, self.threshold, self.length, self.commitment)
        return head + self.values

    def __eq__(self, other: object) -> bool:
        if type(other) is not type(self):
            return NotImplemented
        return self.to_bytes() == other.to_bytes()

    def __hash__(self) -> int:
        return hash(self.to_bytes())

    def __repr__(self) -> str:
        return f"{type(self).__name__}(index={self.index}, threshold={self.threshold}, length={self.length})"


@dataclass(frozen=True, eq=False, repr=False)
class Share(_ShareBase):
    """One share of a byte-string secret: its index (x), the threshold, the secret's length in
    bytes, the share's field elements (little-endian uint32) and the secret's commitment."""

    _KIND = 1
    _WHAT = "share"

    def _max_length(self) -> int:
        return MAX_SECRET_BYTES

    def limbs(self) -> int:
        return -(-self.length // LIMB_BYTES) + NONCE_LIMBS

    @classmethod
    def from_bytes(cls, data: bytes) -> Share:
        """Parse a share (InvalidShare if malformed)."""
        return cls(*_decoded(data, cls._KIND, "share"))


@dataclass(frozen=True, eq=False, repr=False)
class ArrayShare(_ShareBase):
    """One share of an array of field elements (``length`` of them), plus the nonce."""

    _KIND = 2
    _WHAT = "array share"

    def _max_length(self) -> int:
        return 1 << 28

    def limbs(self) -> int:
        return self.length + NONCE_LIMBS

    @classmethod
    def from_bytes(cls, data: bytes) -> ArrayShare:
        """Parse an array share (InvalidShare if malformed)."""
        return cls(*_decoded(data, cls._KIND, "array share"))


def _bytes_to_limbs(secret: bytes) -> NDArray[np.uint32]:
    padded = secret + bytes(-len(secret) % LIMB_BYTES)
    raw = np.frombuffer(padded, dtype=np.uint8).reshape(-1, LIMB_BYTES).astype(np.uint32)
    limbs: NDArray[np.uint32] = raw[:, 0] | (raw[:, 1] << np.uint32(8)) | (raw[:, 2] << np.uint32(16))
    return limbs


def _limbs_to_bytes(limbs: NDArray[np.uint32], length: int) -> bytes | None:
    """The bytes, or None if a limb is >= 2^24 or the padding is not zero (not a real secret)."""
    if limbs.size and int(limbs.max()) >= 1 << 24:
        return None
    raw = np.empty((limbs.shape[0], LIMB_BYTES), dtype=np.uint8)
    raw[:, 0] = limbs & 0xFF
    raw[:, 1] = (limbs >> 8) & 0xFF
    raw[:, 2] = (limbs >> 16) & 0xFF
    out = raw.tobytes()
    if any(out[length:]):
        return None
    return out[:length]


def _randomness(random_bytes: object) -> RandomBytes:
    if random_bytes is None:
        return os.urandom
    if not callable(random_bytes):
        raise InvalidArgumentType("random_bytes", f"expected a callable, got {type(random_bytes).__name__}")
    return random_bytes


def split(secret: bytes, threshold: int, n: int, *, random_bytes: RandomBytes | None = None) -> list[Share]:
    """``n`` shares of ``secret``, any ``threshold`` of which recover it (indices 1..n).

    ``random_bytes`` (default ``os.urandom``) supplies the polynomials' coefficients and the
    nonce; it must be a cryptographic source outside of tests.
    """
    if not isinstance(secret, (bytes, bytearray, memoryview)):
        raise InvalidArgumentType("secret", f"expected bytes, got {type(secret).__name__}")
    secret = bytes(secret)
    if len(secret) > MAX_SECRET_BYTES:
        raise InvalidArgument("secret", f"at most {MAX_SECRET_BYTES} bytes, got {len(secret)}")
    t, n_ = _check_params(threshold, n)
    rnd = _randomness(random_bytes)
    limbs = np.concatenate([_bytes_to_limbs(secret), _field_elements(rnd, NONCE_LIMBS)])
    commitment = _commitment(b"bytes", len(secret), limbs)
    rows = _deal(limbs, t, n_, rnd)
    raw, w = rows.astype("<u4", copy=False).tobytes(), 4 * rows.shape[1]
    return [Share._dealt(i + 1, t, len(secret), raw[i * w : (i + 1) * w], commitment) for i in range(n_)]


def split_array(
    values: NDArray[np.unsignedinteger], threshold: int, n: int, *, random_bytes: RandomBytes | None = None
) -> list[ArrayShare]:
    """``n`` shares of a 1-D array of unsigned integers, each < 2^31 - 1 (a field element).

    Every element gets its own polynomial; shares carry uint32 values. Combine with
    :func:`combine_array`, which returns a uint32 array.
    """
    if not isinstance(values, np.ndarray):
        raise InvalidArgumentType("values", f"expected a numpy array, got {type(values).__name__}")
    if values.ndim != 1 or values.dtype.kind != "u":
        raise InvalidArgument(
            "values", f"expected a 1-D unsigned integer array, got {values.dtype}{list(values.shape)}"
        )
    if values.size and int(values.max()) >= PRIME:
        raise InvalidArgument("values", f"every element must be < 2^31 - 1, got {int(values.max())}")
    if values.size > 1 << 28:
        raise InvalidArgument("values", "at most 2^28 elements")
    t, n_ = _check_params(threshold, n)
    rnd = _randomness(random_bytes)
    limbs = np.concatenate([values.astype(np.uint32), _field_elements(rnd, NONCE_LIMBS)])
    commitment = _commitment(b"array", int(values.size), limbs)
    rows = _deal(limbs, t, n_, rnd)
    raw, w = rows.astype("<u4", copy=False).tobytes(), 4 * rows.shape[1]
    return [ArrayShare._dealt(i + 1, t, int(values.size), raw[i * w : (i + 1) * w], commitment) for i in range(n_)]


_S = Union[Share, ArrayShare]


def _select(shares: object, cls: type[_S]) -> list[_S]:
    """The first ``threshold`` shares, after checking that all of them belong together."""
    if isinstance(shares, (bytes, str)) or not hasattr(shares, "__iter__"):
        raise InvalidArgumentType("shares", f"expected a sequence of {cls.__name__}, got {type(shares).__name__}")
    items = list(shares)
    if not items:
        raise InsufficientShares("no shares given")
    for i, s in enumerate(items):
        if type(s) is not cls:
            raise InvalidArgumentType(f"shares[{i}]", f"expected {cls.__name__}, got {type(s).__name__}")
    first = items[0]
    seen: set[int] = set()
    for i, s in enumerate(items):
        if (s.threshold, s.length) != (first.threshold, first.length) or not hmac.compare_digest(
            s.commitment, first.commitment
        ):
            raise InvalidShare(f"shares[{i}] belongs to a different secret than shares[0] (mixed shares)")
        if s.index in seen:
            raise InvalidShare(f"shares[{i}]: duplicate index {s.index}")
        seen.add(s.index)
    if len(items) < first.threshold:
        raise InsufficientShares(f"{len(items)} shares given, the threshold is {first.threshold}")
    return items[: first.threshold]


def _reconstruct(chosen: Sequence[_S], kind: bytes) -> NDArray[np.uint32]:
    limbs = _interpolate([s.index for s in chosen], [s.array() for s in chosen])
    if not hmac.compare_digest(_commitment(kind, chosen[0].length, limbs), chosen[0].commitment):
        raise ShareIntegrityError("the shares do not combine to the committed secret (a share is corrupted)")
    return limbs


def combine(shares: Sequence[Share]) -> bytes:
    """The secret from at least ``threshold`` shares of it; exactly the first ``threshold``
    are used (Lagrange interpolation at 0).

    InsufficientShares if too few; InvalidShare for duplicates or mixed secrets;
    ShareIntegrityError if the result does not match the commitment.
    """
    chosen = _select(shares, Share)
    limbs = _reconstruct(chosen, b"bytes")
    secret = _limbs_to_bytes(limbs[: len(limbs) - NONCE_LIMBS], chosen[0].length)
    if secret is None:  # pragma: no cover - the commitment already matched an honest dealing
        raise ShareIntegrityError("the combined limbs are not a byte string")
    return secret


def combine_array(shares: Sequence[ArrayShare]) -> NDArray[np.uint32]:
    """The uint32 array from at least ``threshold`` array shares (the first ``threshold`` used)."""
    chosen = _select(shares, ArrayShare)
    limbs = _reconstruct(chosen, b"array")
    return limbs[: chosen[0].length].copy()
