"""Argument checks shared by the crypto wrappers (no heavy imports: merkle uses this too)."""

from __future__ import annotations

import math
import operator

from fedledger.errors import InvalidArgument, InvalidArgumentType


def as_bytes(value: object, argument: str) -> bytes:
    """``value`` as exact bytes (bytes-like accepted), or InvalidArgumentType naming the argument."""
    if type(value) is bytes:
        return value
    if isinstance(value, (bytes, bytearray, memoryview)):
        return bytes(value)
    raise InvalidArgumentType(argument, f"expected bytes, got {type(value).__name__}")


def as_int(value: object, argument: str) -> int:
    """``value`` as a Python int (numpy integers accepted, bools refused), or InvalidArgumentType."""
    if type(value) is int:
        return value
    if isinstance(value, bool) or not hasattr(value, "__index__"):
        raise InvalidArgumentType(argument, f"expected int, got {type(value).__name__}")
    return operator.index(value)


def int_repr(value: int) -> str:
    """``value`` for an error message, bounded (formatting a huge int costs time and can raise)."""
    if -(10**30) < value < 10**30:
        return str(value)
    return f"{'-' if value < 0 else ''}an int of {abs(value).bit_length()} bits"


def as_finite_float(value: object, argument: str) -> float:
    """``value`` as a finite float (ints and numpy reals accepted, bools refused)."""
    if isinstance(value, bool) or not isinstance(value, (int, float)) and not hasattr(value, "__float__"):
        raise InvalidArgumentType(argument, f"expected a real number, got {type(value).__name__}")
    try:
        out = float(value)  # type: ignore[arg-type,unused-ignore]
    except (TypeError, ValueError, OverflowError):
        raise InvalidArgument(argument, "is not a finite real number") from None
    if not math.isfinite(out):
        raise InvalidArgument(argument, f"must be finite, got {out}")
    return out
