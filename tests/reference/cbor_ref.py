"""A plain-Python deterministic CBOR encoder (RFC 8949 §4.2.1 and §4.2.2), the oracle for
fedledger.encoding: shortest heads, shortest float that keeps the value, definite lengths,
map keys sorted bytewise by their own encodings."""

from __future__ import annotations

import math
import struct
from typing import Any


def _head(major: int, n: int) -> bytes:
    if n < 24:
        return bytes([major << 5 | n])
    for extra, size in ((24, 1), (25, 2), (26, 4), (27, 8)):
        if n < 1 << (8 * size):
            return bytes([major << 5 | extra]) + n.to_bytes(size, "big")
    raise ValueError("integer too large")


def _float(x: float) -> bytes:
    if math.isnan(x):
        raise ValueError("NaN")
    for fmt, head in (("e", 0xF9), ("f", 0xFA)):
        try:
            packed = struct.pack(">" + fmt, x)
        except OverflowError:
            continue
        if struct.pack(">d", struct.unpack(">" + fmt, packed)[0]) == struct.pack(">d", x):
            return bytes([head]) + packed
    return b"\xfb" + struct.pack(">d", x)


def encode(value: Any) -> bytes:
    if value is None:
        return b"\xf6"
    if value is False:
        return b"\xf4"
    if value is True:
        return b"\xf5"
    if type(value) is int:
        return _head(0, value) if value >= 0 else _head(1, -1 - value)
    if type(value) is float:
        return _float(value)
    if type(value) is bytes:
        return _head(2, len(value)) + value
    if type(value) is str:
        raw = value.encode("utf-8")
        return _head(3, len(raw)) + raw
    if type(value) in (list, tuple):
        return _head(4, len(value)) + b"".join(encode(v) for v in value)
    if type(value) is dict:
        pairs = sorted((encode(k), encode(v)) for k, v in value.items())
        return _head(5, len(pairs)) + b"".join(k + v for k, v in pairs)
    raise TypeError(type(value).__name__)
