"""How many OpenMP threads the kernels use: all cores unless FEDLEDGER_NUM_THREADS says otherwise."""

from __future__ import annotations

import os

from fedledger.errors import InvalidArgument, InvalidArgumentType

ENV_VAR = "FEDLEDGER_NUM_THREADS"


def _default() -> int:
    raw = os.environ.get(ENV_VAR)
    if raw is None or raw.strip() == "":
        return os.cpu_count() or 1
    try:
        value = int(raw)
    except ValueError:
        raise InvalidArgument(ENV_VAR, f"must be a positive integer, got {raw!r}") from None
    if value < 1:
        raise InvalidArgument(ENV_VAR, f"must be a positive integer, got {value}")
    return value


_num_threads = _default()


def num_threads() -> int:
    """Threads each parallel kernel may use."""
    return _num_threads


def set_num_threads(n: int) -> None:
    """Set the thread count for subsequent kernel calls (process-wide)."""
    global _num_threads
    if type(n) is not int:
        raise InvalidArgumentType("n", f"expected int, got {type(n).__name__}")
    if n < 1:
        raise InvalidArgument("n", f"must be >= 1, got {n}")
    _num_threads = n
