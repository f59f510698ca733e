"""Argument checks shared by the crypto wrappers (no heavy imports: merkle uses this too)."""

from __future__ import annotations

from fedledger.errors import InvalidArgumentType


def as_bytes(value: object, argument: str) -> bytes:
    """``value`` as exact bytes (bytes-like accepted), or InvalidArgumentType naming the argument."""
    if type(value) is bytes:
        return value
    if isinstance(value, (bytes, bytearray, memoryview)):
        return bytes(value)
    raise InvalidArgumentType(argument, f"expected bytes, got {type(value).__name__}")
