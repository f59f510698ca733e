"""How quantized values are packed into Paillier plaintexts (:class:`PackingLayout`), and
the checks made when a decrypted plaintext is unpacked."""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from numpy.typing import ArrayLike, NDArray

from fedledger._ext import rebuild_error
from fedledger.crypto._args import as_int as _check_int
from fedledger.crypto.paillier._common import _MIN_TEST_BITS, MAX_KEY_BITS, _show
from fedledger.errors import (
    DecryptionError,
    InvalidArgument,
    InvalidArgumentType,
    LayoutMismatch,
    PaillierOverflow,
)

try:
    from fedledger._ext import _paillier as _k
except ImportError as exc:  # pragma: no cover - exercised by test_build
    raise rebuild_error("_paillier", exc) from exc

__all__ = ["PackingLayout"]


def _float_vector(values: ArrayLike) -> NDArray[np.float64]:
    try:
        arr = np.asarray(values, dtype=np.float64)
    except (TypeError, ValueError):
        raise InvalidArgumentType("values", "expected a 1-D array of real numbers") from None
    if arr.ndim != 1:
        raise InvalidArgument("values", f"must be 1-D, got shape {arr.shape}")
    bad = np.flatnonzero(~np.isfinite(arr))
    if bad.size:
        raise InvalidArgument(f"values[{int(bad[0])}]", f"is not finite ({arr[bad[0]]})")
    return arr


def _int_vector(values: ArrayLike) -> NDArray[np.int64]:
    arr = np.asarray(values)
    if arr.ndim != 1:
        raise InvalidArgument("values", f"must be 1-D, got shape {arr.shape}")
    if arr.size == 0:
        return np.zeros(0, dtype=np.int64)
    if arr.dtype.kind not in "iu":
        raise InvalidArgumentType("values", f"expected an integer array, got dtype {arr.dtype}")
    return arr.astype(np.int64)


@dataclass(frozen=True)
class PackingLayout:
    """How quantized values sit in Paillier plaintexts. Travels with every EncryptedVector.

    Each value q in [-(2^(bits-1) - 1), 2^(bits-1) - 1] is stored as q + bias
    (bias = 2^(bits-1)), so a slot holds between 1 and 2^bits - 1 per summand and a value
    slot is never zero: padding slots (past ``count``) are zero, so a corrupted ``count``
    is caught at decryption instead of reading padding as a value. A slot of
    ``slot_bits`` bits holds the sum of ``max_summands`` of them without carrying into the
    next slot. Each plaintext has ``(key_bits - 1) // slot_bits`` slots: ``slots`` for
    values, and the top one as a checksum holding the vector's weight (the number of
    summands, counting scalar multiples), which decryption verifies.
    """

    key_bits: int
    count: int
    bits: int
    clip: float
    max_summands: int
    slot_bits: int
    slots: int

    def __post_init__(self) -> None:
        # A directly constructed layout must not carry a slot geometry that would make the
        # pack/unpack kernels read or write past a plaintext row: re-derive it and compare.
        want = PackingLayout._derive(self.key_bits, self.count, self.bits, self.clip, self.max_summands)
        for name, expected in zip(_LAYOUT_FIELDS, want):
            got = getattr(self, name)
            if type(got) is not type(expected) or got != expected:
                raise LayoutMismatch(
                    f"PackingLayout: {name}={_show(got)} does not match the layout derived from its "
                    f"parameters ({name}={expected}); use PackingLayout.create"
                )

    @classmethod
    def create(cls, key_bits: int, count: int, *, bits: int, clip: float, max_summands: int) -> PackingLayout:
        return cls(*cls._derive(key_bits, count, bits, clip, max_summands))

    @staticmethod
    def _derive(
        key_bits: object, count: object, bits: object, clip: object, max_summands: object
    ) -> tuple[int, int, int, float, int, int, int]:
        key_bits = _check_int(key_bits, "key_bits")
        if not _MIN_TEST_BITS <= key_bits <= MAX_KEY_BITS:
            raise InvalidArgument("key_bits", f"must be in [{_MIN_TEST_BITS}, {MAX_KEY_BITS}], got {_show(key_bits)}")
        bits = _check_int(bits, "bits")
        max_summands = _check_int(max_summands, "max_summands")
        count = _check_int(count, "count")
        if not 2 <= bits <= 32:
            raise InvalidArgument("bits", f"must be in [2, 32], got {_show(bits)}")
        if max_summands < 1:
            raise InvalidArgument("max_summands", f"must be >= 1, got {_show(max_summands)}")
        if isinstance(clip, bool) or not isinstance(clip, (int, float, np.floating)):
            raise InvalidArgumentType("clip", f"expected float, got {type(clip).__name__}")
        clip = float(clip)
        if not (math.isfinite(clip) and clip > 0):
            raise InvalidArgument("clip", f"must be finite and > 0, got {clip}")
        if count < 0:
            raise InvalidArgument("count", f"must be >= 0, got {_show(count)}")
        slot_bits = (max_summands * ((1 << bits) - 1)).bit_length()
        if slot_bits > 63:
            raise InvalidArgument(
                "max_summands",
                f"bits={bits} with max_summands={_show(max_summands)} needs {slot_bits}-bit slots (max 63)",
            )
        total = (key_bits - 1) // slot_bits
        if total < 2:
            raise InvalidArgument("bits", f"a {key_bits}-bit key cannot hold two {slot_bits}-bit slots")
        return (key_bits, count, bits, clip, max_summands, slot_bits, total - 1)

    @property
    def qmax(self) -> int:
        return (1 << (self.bits - 1)) - 1

    @property
    def bias(self) -> int:
        """Added to every value so that a stored value is never 0 (padding is)."""
        return self.qmax + 1

    @property
    def max_stored(self) -> int:
        return 2 * self.qmax + 1

    @property
    def scale(self) -> float:
        """Quantized units per unit of value: q = round(x * scale)."""
        return self.qmax / self.clip

    @property
    def num_ciphertexts(self) -> int:
        return -(-self.count // self.slots)

    def quantize(self, values: NDArray[np.float64]) -> NDArray[np.int64]:
        q = np.rint(np.clip(values, -self.clip, self.clip) * self.scale)
        return np.clip(q, -self.qmax, self.qmax).astype(np.int64)

    def check_quantized(self, q: NDArray[np.int64]) -> None:
        if q.shape[0] != self.count:
            raise InvalidArgument("values", f"expected {self.count} values, got {q.shape[0]}")
        bad = np.flatnonzero((q < -self.qmax) | (q > self.qmax))
        if bad.size:
            i = int(bad[0])
            raise InvalidArgument(
                f"values[{i}]", f"{int(q[i])} is outside [-{self.qmax}, {self.qmax}] for bits={self.bits}"
            )

    def _compatible(self, other: PackingLayout) -> str | None:
        for name in _LAYOUT_FIELDS:
            a, b = getattr(self, name), getattr(other, name)
            if a != b:
                return f"{name} differs ({a} vs {b})"
        return None


_LAYOUT_FIELDS = ("key_bits", "count", "bits", "clip", "max_summands", "slot_bits", "slots")


def _unpack_checked(plain: NDArray[np.uint8], layout: PackingLayout, weight: int) -> NDArray[np.int64]:
    rows, per = plain.shape[0], layout.slots
    slots = np.empty((rows, per + 1), dtype=np.uint64)
    high = np.empty(rows, dtype=np.uint8)
    _k.unpack(plain, layout.slot_bits, slots, high)
    bad = np.flatnonzero(high)
    if bad.size:
        raise DecryptionError(
            f"ciphertext {int(bad[0])}: the plaintext has bits above the packed slots "
            "(wrong private key, or a corrupted or foreign ciphertext)"
        )
    checks = slots[:, per]
    bad = np.flatnonzero(checks != np.uint64(weight))
    if bad.size:
        r = int(bad[0])
        raise DecryptionError(
            f"ciphertext {r}: checksum slot holds {int(checks[r])}, expected the vector's weight {weight} "
            "(wrong private key, mixed or corrupted ciphertexts)"
        )
    values = slots[:, :per].reshape(-1)
    tail = values[layout.count :]
    if tail.size and np.any(tail != 0):
        j = layout.count + int(np.flatnonzero(tail)[0])
        raise DecryptionError(
            f"ciphertext {j // per}: padding slot {j % per} is not zero (wrong key or corrupted ciphertext)"
        )
    values = values[: layout.count]
    under = np.flatnonzero(values < np.uint64(weight))
    if under.size:
        i = int(under[0])
        raise DecryptionError(
            f"element {i} (ciphertext {i // per}, slot {i % per}) decrypted to {int(values[i])}, below the "
            f"floor {weight} of a value slot: a padding slot read as a value (corrupted count) or a wrong key"
        )
    bound = np.uint64(weight * layout.max_stored)
    over = np.flatnonzero(values > bound)
    if over.size:
        i = int(over[0])
        raise PaillierOverflow(
            f"element {i} (ciphertext {i // per}, slot {i % per}) decrypted to {int(values[i])}, "
            f"above the headroom bound {int(bound)} for weight {weight}: slot overflow or tampering"
        )
    return values.astype(np.int64) - np.int64(weight * layout.bias)
