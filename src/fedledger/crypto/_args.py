"""Argument checks shared by the crypto wrappers (no heavy imports: merkle uses this too)."""

from __future__ import annotations

import operator

from fedledger.errors import InvalidArgumentType


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
