"""Packed encrypted vectors: :class:`EncryptedVector`, its byte form, and
:func:`sum_vectors`."""

from __future__ import annotations

import struct
from collections.abc import Iterable
from typing import Any

import numpy as np
from numpy.typing import NDArray

from fedledger._ext import rebuild_error
from fedledger.crypto._args import as_int as _check_int
from fedledger.crypto._threads import num_threads
from fedledger.crypto.paillier._common import _check_rows, _int_bytes, _show
from fedledger.crypto.paillier.keys import PublicKey
from fedledger.crypto.paillier.packing import PackingLayout
from fedledger.errors import (
    InvalidArgument,
    InvalidArgumentType,
    KeyMismatch,
    LayoutMismatch,
    PaillierOverflow,
)

try:
    from fedledger._ext import _paillier as _k
except ImportError as exc:  # pragma: no cover - exercised by test_build
    raise rebuild_error("_paillier", exc) from exc

__all__ = ["EncryptedVector", "sum_vectors"]

_MAGIC = b"FLPV"
_VERSION = 1
_HEADER = struct.Struct(">4sBBdIQHIQI")


class EncryptedVector:
    """A packed, encrypted vector of quantized values. Not a ``phe`` number.

    ``+`` adds two vectors under the same key and layout, ``k * v`` multiplies by a
    positive integer, :func:`sum_vectors` adds many at once. ``weight`` counts how many
    fresh vectors the value is worth (1 after encryption; weights add; scalars multiply);
    it may never exceed ``layout.max_summands``.

    Internally the ciphertexts are kept as 64-bit limbs in Montgomery form (c 2^(64L) mod
    n^2), so that an addition is one multiplication and one Montgomery reduction;
    :attr:`ciphertexts` and :meth:`to_bytes` give the ordinary big-endian integers.
    """

    __slots__ = ("public_key", "layout", "weight", "_data")

    def __init__(
        self,
        public_key: PublicKey,
        layout: PackingLayout,
        weight: int,
        data: NDArray[np.uint64],
        *,
        _trusted: bool = False,
    ) -> None:
        if not _trusted:
            raise InvalidArgument(
                "EncryptedVector", "construct through PublicKey.encrypt_vector or EncryptedVector.from_bytes"
            )
        self.public_key = public_key
        self.layout = layout
        self.weight = weight
        self._data = data

    def __len__(self) -> int:
        return self.layout.count

    def __reduce__(self) -> tuple[Any, ...]:
        # Pickle through the validated byte form.
        return (EncryptedVector.from_bytes, (self.to_bytes(), self.public_key, self.layout))

    def __repr__(self) -> str:
        return (
            f"EncryptedVector(count={self.layout.count}, ciphertexts={self.num_ciphertexts}, "
            f"bits={self.layout.bits}, weight={self.weight}/{self.layout.max_summands})"
        )

    @property
    def num_ciphertexts(self) -> int:
        return int(self._data.shape[0])

    @property
    def nbytes(self) -> int:
        """Bytes of ciphertext payload (num_ciphertexts x bytes of n^2), without the header."""
        return self.num_ciphertexts * self.public_key.c_bytes

    @property
    def ciphertexts(self) -> NDArray[np.uint8]:
        """A (num_ciphertexts, bytes of n^2) array of the big-endian ciphertexts (a copy)."""
        return self.public_key._to_bytes_rows(self._data)

    def _check_operand(self, other: object, argument: str) -> EncryptedVector:
        if not isinstance(other, EncryptedVector):
            raise InvalidArgumentType(argument, f"expected EncryptedVector, got {type(other).__name__}")
        if other.public_key != self.public_key:
            raise KeyMismatch(f"{argument} is encrypted under a different public key")
        why = self.layout._compatible(other.layout)
        if why is not None:
            raise LayoutMismatch(f"{argument} has a different packing layout: {why}")
        return other

    def __add__(self, other: EncryptedVector) -> EncryptedVector:
        return sum_vectors([self, other])

    def __radd__(self, other: object) -> EncryptedVector:
        if isinstance(other, int) and not isinstance(other, bool) and other == 0:
            return self  # lets builtin sum() start from 0
        return sum_vectors([self._check_operand(other, "other"), self])

    def __mul__(self, scalar: int) -> EncryptedVector:
        if isinstance(scalar, bool) or not isinstance(scalar, (int, np.integer)):
            return NotImplemented
        k = int(scalar)
        if k < 1:
            raise InvalidArgument(
                "scalar", f"must be a positive integer (packed slots cannot hold negatives), got {_show(k)}"
            )
        weight = self.weight * k
        if weight > self.layout.max_summands:
            raise PaillierOverflow(
                f"multiplying a weight-{self.weight} vector by {_show(k)} gives weight {_show(weight)} > "
                f"max_summands={self.layout.max_summands}: the slots would overflow"
            )
        out = np.empty_like(self._data)
        if k == 1:
            out[...] = self._data
        else:
            _k.power(self.public_key._context(), self._data, _int_bytes(k), False, out, num_threads())
        out.flags.writeable = False
        return EncryptedVector(self.public_key, self.layout, weight, out, _trusted=True)

    __rmul__ = __mul__

    @staticmethod
    def sum(vectors: Iterable[EncryptedVector]) -> EncryptedVector:
        """Homomorphic sum of many vectors in one pass (same as :func:`sum_vectors`)."""
        return sum_vectors(vectors)

    # -- serialisation -------------------------------------------------------------------

    def to_bytes(self) -> bytes:
        """Header (magic, version, layout, weight, n) followed by the ciphertext rows."""
        lay = self.layout
        n_raw = self.public_key.n.to_bytes(self.public_key.n_bytes, "big")
        header = _HEADER.pack(
            _MAGIC,
            _VERSION,
            lay.bits,
            lay.clip,
            lay.max_summands,
            lay.count,
            lay.slot_bits,
            lay.slots,
            self.weight,
            len(n_raw),
        )
        return header + n_raw + self.ciphertexts.tobytes()

    @classmethod
    def from_bytes(cls, data: bytes, public_key: PublicKey, layout: PackingLayout) -> EncryptedVector:
        """Parse :meth:`to_bytes` output, checking the key, the layout and every ciphertext.

        ``layout`` is the packing the receiver expects (from the round's parameters, e.g.
        ``PackingLayout.create(public_key.bits, count, bits=16, clip=1.0, max_summands=100)``):
        the header must repeat it exactly (``LayoutMismatch`` otherwise). The wire never
        chooses a layout, so a tampered ``clip``, ``bits``, ``max_summands`` or ``count``
        cannot rescale or reinterpret the decrypted values.
        """
        if not isinstance(public_key, PublicKey):
            raise InvalidArgumentType("public_key", f"expected PublicKey, got {type(public_key).__name__}")
        _check_layout(layout, public_key, "layout")
        if not isinstance(data, (bytes, bytearray, memoryview)):
            raise InvalidArgumentType("data", f"expected bytes, got {type(data).__name__}")
        raw = bytes(data)
        if len(raw) < _HEADER.size:
            raise InvalidArgument("data", f"too short for a header ({len(raw)} bytes)")
        magic, version, bits, clip, max_summands, count, slot_bits, slots, weight, nlen = _HEADER.unpack_from(raw)
        if magic != _MAGIC or version != _VERSION:
            raise InvalidArgument("data", "not a fedledger packed Paillier vector (bad magic or version)")
        header = {
            "bits": bits,
            "clip": clip,
            "max_summands": max_summands,
            "count": count,
            "slot_bits": slot_bits,
            "slots": slots,
        }
        for name, value in header.items():
            if value != getattr(layout, name):  # NaN clip differs too
                raise LayoutMismatch(
                    f"data: the header says {name}={value}, the expected layout has {name}={getattr(layout, name)}"
                )
        if nlen != public_key.n_bytes:
            raise KeyMismatch(f"data: the header's modulus is {nlen} bytes, this key's {public_key.n_bytes}")
        off = _HEADER.size
        if len(raw) < off + nlen:
            raise InvalidArgument("data", f"too short for the modulus ({len(raw)} bytes)")
        n = int.from_bytes(raw[off : off + nlen], "big")
        off += nlen
        if n != public_key.n:
            raise KeyMismatch("the serialised vector is under a different public key")
        if not 1 <= weight <= layout.max_summands:
            raise InvalidArgument("data", f"weight {weight} is outside [1, max_summands={layout.max_summands}]")
        rows, width = layout.num_ciphertexts, public_key.c_bytes
        if len(raw) - off != rows * width:
            raise InvalidArgument("data", f"expected {rows} ciphertexts of {width} bytes, got {len(raw) - off} bytes")
        arr = np.frombuffer(raw, dtype=np.uint8, offset=off).reshape(rows, width)
        return cls(public_key, layout, weight, public_key._from_bytes_rows(arr, "data"), _trusted=True)

    @classmethod
    def from_ciphertexts(
        cls, public_key: PublicKey, layout: PackingLayout, weight: int, ciphertexts: NDArray[np.uint8]
    ) -> EncryptedVector:
        """Wrap a (num_ciphertexts, bytes of n^2) uint8 array, validating every row."""
        if not isinstance(public_key, PublicKey):
            raise InvalidArgumentType("public_key", f"expected PublicKey, got {type(public_key).__name__}")
        _check_layout(layout, public_key, "layout")
        weight = _check_int(weight, "weight")
        if not 1 <= weight <= layout.max_summands:
            raise InvalidArgument("weight", f"must be in [1, {layout.max_summands}], got {weight}")
        try:
            arr = np.ascontiguousarray(ciphertexts, dtype=np.uint8)
        except (TypeError, ValueError, OverflowError):
            raise InvalidArgumentType("ciphertexts", "expected a uint8 array") from None
        if arr.shape != (layout.num_ciphertexts, public_key.c_bytes):
            raise InvalidArgument(
                "ciphertexts", f"expected shape {(layout.num_ciphertexts, public_key.c_bytes)}, got {arr.shape}"
            )
        return cls(public_key, layout, weight, public_key._from_bytes_rows(arr, "ciphertexts"), _trusted=True)


def _check_layout(layout: object, public_key: PublicKey, argument: str) -> PackingLayout:
    if not isinstance(layout, PackingLayout):
        raise InvalidArgumentType(argument, f"expected PackingLayout, got {type(layout).__name__}")
    if layout.key_bits != public_key.bits:
        raise LayoutMismatch(f"{argument} is for {layout.key_bits}-bit keys, this key has {public_key.bits} bits")
    return layout


def sum_vectors(vectors: Iterable[EncryptedVector]) -> EncryptedVector:
    """Homomorphic sum of one or more vectors (one parallel pass over all of them)."""
    if isinstance(vectors, (str, bytes)) or not isinstance(vectors, Iterable):
        raise InvalidArgumentType("vectors", f"expected a sequence of EncryptedVector, got {type(vectors).__name__}")
    items = list(vectors)
    if not items:
        raise InvalidArgument("vectors", "need at least one vector")
    first = items[0]
    if not isinstance(first, EncryptedVector):
        raise InvalidArgumentType("vectors[0]", f"expected EncryptedVector, got {type(first).__name__}")
    for i, v in enumerate(items[1:], 1):
        first._check_operand(v, f"vectors[{i}]")
    weight = sum(v.weight for v in items)
    if weight > first.layout.max_summands:
        raise PaillierOverflow(
            f"summing to weight {weight} exceeds max_summands={first.layout.max_summands}: "
            "the packed slots would overflow (encrypt with a larger max_summands)"
        )
    if len(items) == 1:
        return first
    rows, width = first._data.shape
    for i, v in enumerate(items):
        _check_rows(v._data, np.uint64, width, f"vectors[{i}]", rows)
    out = np.empty_like(first._data)
    _k.product(first.public_key._context(), [v._data for v in items], out, num_threads())
    out.flags.writeable = False
    return EncryptedVector(first.public_key, first.layout, weight, out, _trusted=True)
