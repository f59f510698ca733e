"""What the Paillier modules share: the size limits on keys, and small helpers for
integers, base64url, untrusted JSON and the row shapes the kernels read."""

from __future__ import annotations

import base64
import json
from typing import Any

import numpy as np

from fedledger.errors import InvalidArgument, InvalidArgumentType

#: Smallest modulus accepted without ``insecure_for_tests=True``.
MIN_KEY_BITS = 2048
#: Smallest modulus accepted at all (tests use small keys to run fast).
_MIN_TEST_BITS = 128
#: Largest modulus accepted from anywhere (keys, JWKs, phe keys, phe JSON, key shares). The
#: kernel's limit is 16384 bits; 8192 bits already means a 256 MiB fixed-base table.
MAX_KEY_BITS = 8192
#: Longest JWK or key share JSON text accepted (an 8192-bit private JWK is about 4 KiB).
_MAX_KEY_JSON_CHARS = 1 << 16


def _int_bytes(value: int) -> bytes:
    return value.to_bytes(max(1, (value.bit_length() + 7) // 8), "big")


def _b64_int(value: int) -> str:
    return base64.urlsafe_b64encode(_int_bytes(value)).decode("ascii").rstrip("=")


def _int_b64(text: object, argument: str, max_bits: int) -> int:
    """A base64url big-endian integer of at most ``max_bits`` bits (length checked first)."""
    if not isinstance(text, str) or not text:
        raise InvalidArgumentType(argument, f"expected a non-empty base64url string, got {_show(text)}")
    max_bytes = (max_bits + 7) // 8
    if len(text) > 4 * ((max_bytes + 2) // 3):
        raise InvalidArgument(argument, f"is {len(text)} characters, longer than any integer of {max_bits} bits")
    try:
        raw = base64.b64decode(text + "=" * (-len(text) % 4), altchars=b"-_", validate=True)
    except (ValueError, TypeError):
        raise InvalidArgument(argument, "is not valid base64url") from None
    value = int.from_bytes(raw, "big")
    if value.bit_length() > max_bits:
        raise InvalidArgument(argument, f"has {value.bit_length()} bits, more than {max_bits}")
    return value


def _show(value: object) -> str:
    """A short description of an untrusted value for an error message (never a deep repr)."""
    if isinstance(value, (str, bytes)):
        text = repr(value)
        return text if len(text) <= 40 else text[:37] + "..."
    if value is None or isinstance(value, (bool, float)) or (isinstance(value, int) and value.bit_length() < 128):
        return repr(value)
    return f"a value of type {type(value).__name__}"


def _check_rows(arr: object, dtype: type[np.generic], width: int, argument: str, rows: int | None = None) -> None:
    """The kernels read ``width`` elements of every row they are given: refuse anything but a
    C-contiguous 2-D array of exactly that width (and of ``rows`` rows when given)."""
    if not isinstance(arr, np.ndarray) or arr.dtype != dtype:
        raise InvalidArgumentType(argument, f"expected a {np.dtype(dtype).name} array, got {type(arr).__name__}")
    if arr.ndim != 2 or arr.shape[1] != width or (rows is not None and arr.shape[0] != rows):
        want = f"({rows if rows is not None else 'rows'}, {width})"
        raise InvalidArgument(argument, f"expected shape {want}, got {arr.shape}")
    if not arr.flags.c_contiguous:
        raise InvalidArgument(argument, "must be C-contiguous")


def _load_json(text: object, argument: str, max_chars: int) -> Any:
    """json.loads of untrusted text: bounded length, and every failure (bad UTF-8, syntax,
    over-long integers, nesting deeper than the parser's recursion) an InvalidArgument."""
    if isinstance(text, (bytearray, memoryview)):
        text = bytes(text)
    if not isinstance(text, (str, bytes)):
        raise InvalidArgumentType(argument, f"expected JSON text (str or bytes), got {type(text).__name__}")
    if len(text) > max_chars:
        raise InvalidArgument(argument, f"is {len(text)} long, more than the {max_chars} accepted")
    if isinstance(text, bytes):
        try:
            text = text.decode("utf-8")
        except UnicodeDecodeError as exc:
            raise InvalidArgument(argument, f"is not UTF-8 ({exc.reason} at byte {exc.start})") from None
    try:
        return json.loads(text)
    except RecursionError:
        raise InvalidArgument(argument, "is nested too deeply") from None
    except ValueError as exc:  # JSONDecodeError, and ints past CPython's digit limit
        raise InvalidArgument(argument, f"is not valid JSON: {str(exc)[:200]}") from None
