"""Masks and quantization for secure aggregation, over the native ``_masking`` kernel.

Ring: Z_(2^bits), bits = 32 or 64; a vector is a little-endian uint32/uint64 array.

Mask PRG: AES-128-CTR through OpenSSL (AES-NI), keyed by a 16-byte key that HKDF-SHA256
derives from a 32-byte seed, counter starting at zero. The keystream's consecutive 4- or
8-byte little-endian words are the mask's elements. A key must be used for one mask only
(:func:`mask_key` binds the round and the purpose into the derivation).

Vector root: a ring vector is committed to by the RFC 9162 Merkle root of its consecutive
CHUNK_SIZE-byte chunks (leaf = SHA-256(0x00 || chunk), the last chunk may be shorter; an empty
vector has the empty tree's root). Chunks hash in parallel, and the fused passes
(:func:`quantize_and_mask`, :func:`add_verified`) hash each chunk while it is in cache.

Quantization: clip each element to [-clip, clip], multiply by the weight and the scale, and
round stochastically (floor(v + u), u uniform in [0, 1) from an AES-CTR stream under a fresh
random key), then reduce mod 2^bits. :func:`quantization_scale` picks the largest scale for
which the sum of n clients' vectors can never wrap, and raises
:class:`~fedledger.errors.QuantizationError` when no useful scale exists.

>>> import numpy as np
>>> from fedledger.crypto import masking
>>> key = masking.mask_key(bytes(32), purpose=b"demo")
>>> acc = np.zeros(8, dtype=np.uint32)
>>> masking.accumulate(acc, [], [key], [1])       # add a mask ...
>>> masking.accumulate(acc, [], [key], [-1])      # ... and take it away
>>> acc.tolist()
[0, 0, 0, 0, 0, 0, 0, 0]
"""

from __future__ import annotations

import hmac
import math
import os
from collections.abc import Sequence
from typing import Final, Union

import numpy as np
from numpy.typing import NDArray

from fedledger._ext import rebuild_error
from fedledger.crypto import merkle
from fedledger.crypto._args import as_finite_float, as_int, int_repr
from fedledger.crypto._threads import num_threads
from fedledger.crypto.agreement import hkdf_sha256_many
from fedledger.errors import InvalidArgument, InvalidArgumentType, InvalidProof, QuantizationError

__all__ = [
    "CHUNK_SIZE",
    "KEY_SIZE",
    "MIN_LEVELS",
    "RING_BITS",
    "accumulate",
    "add_verified",
    "check_scale",
    "dequantize",
    "expand",
    "mask_key",
    "mask_keys",
    "quantization_scale",
    "quantize",
    "quantize_and_mask",
    "ring_dtype",
    "vector_root",
]

try:
    from fedledger._ext import _masking as _k
except ImportError as exc:  # pragma: no cover - exercised by test_build
    raise rebuild_error("_masking", exc) from exc

KEY_SIZE: Final = 16
#: Bytes per Merkle leaf of a vector's root (:func:`vector_root`).
CHUNK_SIZE: Final[int] = _k.CHUNK_SIZE
RING_BITS: Final = (32, 64)
_MASK_INFO: Final = b"fedledger/secagg/mask-key/v1\x00"
#: Ring elements in one mask or vector at most (2^36: 256 GiB of 32-bit elements), so a
#: hostile length is a typed error rather than an allocation failure.
MAX_VECTOR_LENGTH: Final = 2**36
#: The least useful resolution: a client of weight 1 at the clip value is this many steps.
MIN_LEVELS: Final = 256
#: float64 holds integers exactly up to 2^53: the scaled value stays below that.
_EXACT: Final = 2.0**52

RingArray = Union[NDArray[np.uint32], NDArray[np.uint64]]


def ring_dtype(bits: int) -> type[np.unsignedinteger]:
    """numpy dtype of the ring Z_(2^bits)."""
    if bits == 32:
        return np.uint32
    if bits == 64:
        return np.uint64
    raise InvalidArgument("bits", f"must be 32 or 64, got {bits!r}")


def _fixed_bytes(value: object, size: int, argument: str) -> bytes:
    """``value`` if it is exactly ``size`` bytes: InvalidArgumentType if it is not bytes,
    InvalidArgument if it is bytes of another length."""
    if type(value) is not bytes:
        raise InvalidArgumentType(argument, f"expected bytes, got {type(value).__name__}")
    if len(value) != size:
        raise InvalidArgument(argument, f"expected {size} bytes, got {len(value)}")
    return value


def mask_key(seed: bytes, *, purpose: bytes) -> bytes:
    """The 16-byte AES-128 key of the mask derived from a 32-byte seed: HKDF-SHA256 with the
    purpose (round, role, parties, as canonical bytes) in ``info``."""
    _fixed_bytes(seed, 32, "seed")
    return mask_keys([seed], purpose=purpose)[0]


def mask_keys(seeds: Sequence[bytes], *, purpose: bytes) -> list[bytes]:
    """``[mask_key(s, purpose=purpose) for s in seeds]`` in one native call."""
    if not isinstance(purpose, bytes):
        raise InvalidArgumentType("purpose", f"expected bytes, got {type(purpose).__name__}")
    if not seeds:
        return []
    if any(type(s) is not bytes for s in seeds):
        raise InvalidArgumentType("seeds", "expected a sequence of bytes")
    if any(len(s) != 32 for s in seeds):
        raise InvalidArgument("seeds", "expected 32-byte seeds")
    ikm = np.frombuffer(b"".join(seeds), np.uint8).reshape(-1, 32)
    return hkdf_sha256_many(ikm, salt=b"", infos=[_MASK_INFO + purpose] * len(seeds), length=KEY_SIZE)


def _ring(acc: object) -> tuple[NDArray[np.uint8], int]:
    if not isinstance(acc, np.ndarray) or acc.ndim != 1 or acc.dtype not in (np.uint32, np.uint64):
        raise InvalidArgumentType("acc", "expected a 1-D uint32 or uint64 numpy array")
    if not acc.flags.c_contiguous or not acc.flags.writeable or acc.dtype.byteorder == ">":
        raise InvalidArgument("acc", "must be contiguous, writeable and little-endian")
    return acc.view(np.uint8), acc.dtype.itemsize


def _keys(keys: Sequence[bytes], signs: Sequence[int]) -> tuple[NDArray[np.uint8], NDArray[np.int8]]:
    if len(keys) != len(signs):
        raise InvalidArgument("signs", f"{len(signs)} signs for {len(keys)} keys")
    arr = np.empty((len(keys), KEY_SIZE), dtype=np.uint8)
    for i, key in enumerate(keys):
        _fixed_bytes(key, KEY_SIZE, f"keys[{i}]")
        arr[i] = np.frombuffer(key, dtype=np.uint8)
    sg = np.empty(len(signs), dtype=np.int8)
    for i, s in enumerate(signs):
        if type(s) is not int:
            raise InvalidArgumentType(f"signs[{i}]", f"expected int, got {type(s).__name__}")
        if s not in (1, -1):
            raise InvalidArgument(f"signs[{i}]", f"must be +1 or -1, got {int_repr(s)}")
        sg[i] = s
    return arr, sg


def accumulate(
    acc: RingArray, inputs: Sequence[bytes | memoryview], keys: Sequence[bytes], signs: Sequence[int]
) -> None:
    """In place, in Z_(2^bits): ``acc += sum(inputs) + sum(signs[i] * mask(keys[i]))``.

    ``inputs`` are little-endian ring vectors as bytes or contiguous memoryviews (read in
    place, never copied), each exactly ``acc.nbytes`` long. One native pass, parallel over
    ranges of the vector; no per-input temporaries.
    """
    view, width = _ring(acc)
    items = tuple(inputs)
    for i, item in enumerate(items):
        if not isinstance(item, (bytes, memoryview)):
            raise InvalidArgumentType(f"inputs[{i}]", f"expected bytes or memoryview, got {type(item).__name__}")
        mv = memoryview(item)
        if not mv.c_contiguous or mv.nbytes != view.shape[0]:
            raise InvalidArgument(f"inputs[{i}]", f"expected {view.shape[0]} contiguous bytes, got {mv.nbytes}")
    items = tuple(memoryview(item).cast("B") if isinstance(item, memoryview) else item for item in items)
    karr, sarr = _keys(keys, signs)
    rc = _k.accumulate(view, width, items, karr, sarr, num_threads())
    if rc != _k.OK:  # pragma: no cover - allocation or OpenSSL failure
        raise MemoryError(f"masking kernel failed (code {rc})")


def expand(key: bytes, length: int, bits: int = 32) -> RingArray:
    """The mask of ``key``: ``length`` ring elements (a fresh array)."""
    dtype = ring_dtype(bits)
    _fixed_bytes(key, KEY_SIZE, "key")
    length = as_int(length, "length")
    if not 0 <= length <= MAX_VECTOR_LENGTH:
        raise InvalidArgument("length", f"must be in [0, 2**36], got {int_repr(length)}")
    out = np.empty(length, dtype=dtype)
    if length:
        rc = _k.keystream(np.frombuffer(key, dtype=np.uint8), out.view(np.uint8), 0)
        if rc != _k.OK:  # pragma: no cover
            raise MemoryError(f"masking kernel failed (code {rc})")
    return out


def _input(item: object, nbytes: int, argument: str) -> bytes | memoryview:
    if not isinstance(item, (bytes, memoryview)):
        raise InvalidArgumentType(argument, f"expected bytes or memoryview, got {type(item).__name__}")
    mv = memoryview(item)
    if not mv.c_contiguous or mv.nbytes != nbytes:
        raise InvalidArgument(argument, f"expected {nbytes} contiguous bytes, got {mv.nbytes}")
    return mv.cast("B") if isinstance(item, memoryview) else item


def _leaf_rows(nbytes: int) -> NDArray[np.uint8]:
    return np.empty(((nbytes + CHUNK_SIZE - 1) // CHUNK_SIZE, 32), dtype=np.uint8)


def _root(leaves: NDArray[np.uint8]) -> bytes:
    return merkle.root_of_leaf_hashes(leaves) if leaves.shape[0] else merkle.root([])


_NO_KEYS: Final = np.empty((0, KEY_SIZE), dtype=np.uint8)
_NO_SIGNS: Final = np.empty(0, dtype=np.int8)
_NO_BYTES: Final = np.empty(0, dtype=np.uint8)


def vector_root(data: bytes | memoryview) -> bytes:
    """The RFC 9162 root over the CHUNK_SIZE-byte chunks of ``data`` (see the module doc),
    through the Merkle kernel: the whole chunks as fixed-size records, then the short tail."""
    if not isinstance(data, (bytes, memoryview)):
        raise InvalidArgumentType("data", f"expected bytes or memoryview, got {type(data).__name__}")
    mv = memoryview(data)
    if not mv.c_contiguous:
        raise InvalidArgument("data", "must be contiguous")
    flat = np.frombuffer(mv.cast("B"), dtype=np.uint8)
    whole = flat.shape[0] // CHUNK_SIZE
    leaves = _leaf_rows(flat.shape[0])
    if whole:
        leaves[:whole] = merkle.leaf_hashes(flat[: whole * CHUNK_SIZE].reshape(whole, CHUNK_SIZE))
    if whole < leaves.shape[0]:
        leaves[whole] = np.frombuffer(merkle.leaf_hash(flat[whole * CHUNK_SIZE :].tobytes()), dtype=np.uint8)
    return _root(leaves)


def add_verified(acc: RingArray, data: bytes | memoryview, root: bytes) -> None:
    """In place, in Z_(2^bits): ``acc += data``, if :func:`vector_root` of ``data`` is ``root``.

    One pass hashes each chunk of ``data`` and adds it. If the root differs, the addition
    is undone (``acc`` ends as it was) and InvalidProof is raised.
    """
    view, width = _ring(acc)
    item = _input(data, view.shape[0], "data")
    _fixed_bytes(root, 32, "root")
    leaves = _leaf_rows(view.shape[0])
    rc = _k.vector_pass(
        view, width, None, 0.0, 0.0, 0.0, _NO_BYTES, item, 1, _NO_KEYS, _NO_SIGNS, leaves, True, num_threads()
    )
    if rc != _k.OK:  # pragma: no cover
        raise MemoryError(f"masking kernel failed (code {rc})")
    if not hmac.compare_digest(_root(leaves), root):
        rc = _k.vector_pass(
            view,
            width,
            None,
            0.0,
            0.0,
            0.0,
            _NO_BYTES,
            item,
            -1,
            _NO_KEYS,
            _NO_SIGNS,
            _leaf_rows(0),
            False,
            num_threads(),
        )
        if rc != _k.OK:  # pragma: no cover
            raise MemoryError(f"masking kernel failed (code {rc})")
        raise InvalidProof("the data does not match its vector root")


def quantize_and_mask(
    x: NDArray[np.floating],
    out: RingArray,
    *,
    scale: float,
    clip: float,
    weight: int = 1,
    rounding_key: bytes,
    keys: Sequence[bytes],
    signs: Sequence[int],
) -> bytes:
    """One fused pass: ``quantize(x, out, ...)`` into ``out[:len(x)]`` (the elements after
    it are kept as they are), then ``accumulate(out, [], keys, signs)``; returns
    :func:`vector_root` of the result. Bit for bit what the separate calls give.
    """
    xs = _float_vector(x)
    view, width = _ring(out)
    if out.shape[0] < xs.shape[0]:
        raise InvalidArgument("out", f"has {out.shape[0]} elements, needs {xs.shape[0]}")
    _fixed_bytes(rounding_key, KEY_SIZE, "rounding_key")
    karr, sarr = _keys(keys, signs)
    leaves = _leaf_rows(view.shape[0])
    rc = _k.vector_pass(
        view,
        width,
        xs,
        float(scale),
        float(clip),
        float(weight),
        np.frombuffer(rounding_key, np.uint8),
        None,
        1,
        karr,
        sarr,
        leaves,
        False,
        num_threads(),
    )
    if rc & _k.ERR_NONFINITE:
        raise QuantizationError("the update holds NaN or infinite values")
    if rc != _k.OK:  # pragma: no cover
        raise MemoryError(f"masking kernel failed (code {rc})")
    return _root(leaves)


def _float_vector(x: object) -> NDArray[np.floating]:
    if not isinstance(x, np.ndarray) or x.ndim != 1 or x.dtype not in (np.float32, np.float64):
        raise InvalidArgumentType("x", "expected a 1-D float32 or float64 numpy array")
    xs = np.ascontiguousarray(x)
    if xs.dtype.byteorder == ">":
        xs = xs.astype(xs.dtype.newbyteorder("<"))
    return xs


def quantization_scale(n: int, *, bits: int, clip: float, max_weight: int = 1) -> float:
    """The largest scale s such that n clients' stochastically rounded values
    floor(clip * weight * s + u), weight <= max_weight, sum without wrapping in Z_(2^bits)
    read as signed, and every scaled value is exact in float64 (< 2^52).

    QuantizationError if fewer than MIN_LEVELS (256) steps per clip range would remain: the
    configuration cannot aggregate anything meaningful.
    """
    ring_dtype(bits)
    if type(n) is not int:
        raise InvalidArgumentType("n", f"expected int, got {type(n).__name__}")
    if n < 1:
        raise InvalidArgument("n", f"must be an int >= 1, got {int_repr(n)}")
    if not isinstance(clip, (int, float)):
        raise InvalidArgumentType("clip", f"expected a number, got {type(clip).__name__}")
    if not (math.isfinite(clip) and clip > 0):
        raise InvalidArgument("clip", f"must be a finite number > 0, got {clip!r}")
    if type(max_weight) is not int:
        raise InvalidArgumentType("max_weight", f"expected int, got {type(max_weight).__name__}")
    if max_weight < 1:
        raise InvalidArgument("max_weight", f"must be an int >= 1, got {int_repr(max_weight)}")
    limit = 2 ** (bits - 1) - 1
    # Each client adds at most clip * w * s + 1 in absolute value; the weights' own sum too.
    if n * max_weight > limit:
        raise QuantizationError(f"{n} clients of weight up to {max_weight} overflow a {bits}-bit ring")
    span = float(clip) * max_weight
    scale = min((limit - n) / (n * span), _EXACT / span)
    # Guard against float rounding up: step the scale down until the exact bound holds.
    while scale > 0 and n * (math.floor(span * scale) + 1) > limit:
        scale = math.nextafter(scale, 0.0)
    if scale * float(clip) < MIN_LEVELS:
        raise QuantizationError(
            f"no useful quantization: {n} clients with clip {clip} and weight up to {max_weight} leave fewer than "
            f"{MIN_LEVELS} steps per clip range in a {bits}-bit ring; use bits=64, fewer clients or a smaller max_weight"
        )
    return float(scale)


def check_scale(n: int, *, bits: int, clip: float, max_weight: int, scale: float) -> None:
    """QuantizationError unless an explicit ``scale`` keeps n clients' sum from wrapping."""
    limit = 2 ** (bits - 1) - 1
    if not isinstance(scale, float):
        raise InvalidArgumentType("scale", f"expected float, got {type(scale).__name__}")
    if not (math.isfinite(scale) and scale > 0):
        raise InvalidArgument("scale", f"must be a finite float > 0, got {scale!r}")
    span = float(clip) * max_weight
    if n * max_weight > limit or span * scale >= _EXACT or n * (math.floor(span * scale) + 1) > limit:
        raise QuantizationError(
            f"scale {scale} overflows a {bits}-bit ring for {n} clients (clip {clip}, weight up to {max_weight})"
        )


def quantize(
    x: NDArray[np.floating],
    out: RingArray,
    *,
    scale: float,
    clip: float,
    weight: int = 1,
    key: bytes | None = None,
) -> None:
    """Write the stochastic rounding of clip(x) * weight * scale into ``out[:len(x)]``.

    ``key`` (16 bytes, default fresh from ``os.urandom``) drives the rounding. The caller has
    checked the scale (see :func:`quantization_scale`). QuantizationError for NaN or inf.
    """
    xs = _float_vector(x)
    view, width = _ring(out)
    scale, clip = as_finite_float(scale, "scale"), as_finite_float(clip, "clip")
    weight = as_int(weight, "weight")
    if out.shape[0] < xs.shape[0]:
        raise InvalidArgument("out", f"has {out.shape[0]} elements, needs {xs.shape[0]}")
    rk = os.urandom(KEY_SIZE) if key is None else key
    _fixed_bytes(rk, KEY_SIZE, "key")
    rc = _k.quantize(
        xs, view, width, float(scale), float(clip), float(weight), np.frombuffer(rk, np.uint8), num_threads()
    )
    if rc & _k.ERR_NONFINITE:
        raise QuantizationError("the update holds NaN or infinite values")
    if rc != _k.OK:  # pragma: no cover
        raise MemoryError(f"masking kernel failed (code {rc})")


def dequantize(acc: RingArray, scale: float) -> NDArray[np.float64]:
    """Read ring elements as signed integers and divide by ``scale``."""
    signed = acc.view(np.int32 if acc.dtype == np.uint32 else np.int64)
    return signed.astype(np.float64) / scale
