"""Deterministic CBOR (RFC 8949 §4.2): the only way fedledger makes bytes to hash or sign.

The data model is deliberately small, so that any language can read and re-encode it:
``None``, ``bool``, ``int`` in [-2**64, 2**64), ``float`` (not NaN), ``str``, ``bytes``,
``list`` (or ``tuple``, which encodes as a list), and ``dict`` with ``str`` keys.
Encoding uses cbor2's canonical mode: shortest integer and length heads, floats in the
shortest form that keeps their value, definite lengths, and map keys sorted bytewise by
their encodings. (With text keys only, this order equals RFC 7049's length-first order
that cbor2 applies, because a text string's head grows with its length.)

:func:`decode` accepts exactly the bytes :func:`encode` produces: it rejects duplicate map
keys, non-text keys, NaN, tags, indefinite lengths, trailing bytes and any other
non-canonical encoding (it re-encodes and compares). Every failure is EncodingError.

Bounds on hostile input: containers nest at most :data:`MAX_DEPTH` (64) levels; a declared
length longer than the remaining input is rejected before anything is allocated; tags are
refused as soon as their head is read, so cbor2 never builds datetimes, regexes, Decimals,
big integers or shared (cyclic) structures from them. Decoding allocates at most about
100 bytes of Python objects per input byte (a run of empty arrays), so callers bound the
input size (a transaction is at most 65 KiB on the wire).

>>> from fedledger import encoding
>>> encoding.encode({"b": 1, "a": [True, None, b"x"]}).hex()
'a2616183f5f64178616201'
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Final, Union

import cbor2

from fedledger.errors import EncodingError

__all__ = ["MAX_DEPTH", "Value", "decode", "decode_authenticated", "encode", "encode_decoded", "short_repr"]

#: What encode takes and decode returns (decode gives lists, never tuples).
Value = Union[None, bool, int, float, str, bytes, list["Value"], tuple["Value", ...], dict[str, "Value"]]

_MIN_INT: Final = -(2**64)
_MAX_INT: Final = 2**64 - 1
#: The deepest nesting of containers (arrays and maps) that encode and decode accept.
MAX_DEPTH: Final = 64
_MAX_DEPTH: Final = MAX_DEPTH
#: Tags to which cbor2 gives a built-in meaning (found by probing cbor2 6.x): every one is refused
#: before its content is decoded; any other tag reaches the tag hook, which refuses it too.
_SEMANTIC_TAGS: Final = (
    0,
    1,
    2,
    3,
    4,
    5,
    25,
    28,
    29,
    30,
    35,
    36,
    37,
    52,
    54,
    100,
    256,
    258,
    260,
    261,
    1004,
    43000,
    55799,
)
_MAX_MESSAGE_INT_BITS: Final = 128


class _TagRefused(Exception):
    def __init__(self, tag: int) -> None:
        super().__init__(f"CBOR tag {tag} is not encodable: tags are outside the data model")


def _refuse_tag_hook(tag: cbor2.CBORTag, *rest: object) -> object:
    """cbor2's hook for tags it has no decoder for: called as (tag, immutable)."""
    raise _TagRefused(tag.tag)


def _refuser(tag: int) -> Callable[..., object]:
    """A semantic decoder for ``tag`` that refuses it. cbor2 calls it with the tag's content
    (already decoded, within the depth limit) before building any object from it."""

    def refuse(*content: object) -> object:
        raise _TagRefused(tag)

    return refuse


_REFUSE_TAGS: Final = {tag: _refuser(tag) for tag in _SEMANTIC_TAGS}


def short_repr(value: object, limit: int = 60) -> str:
    """A bounded repr for error messages: never raises (a 5000-digit int's repr does), never long."""
    if type(value) is int and value.bit_length() > _MAX_MESSAGE_INT_BITS:
        return f"<an integer of {value.bit_length()} bits>"
    try:
        text = repr(value)
    except Exception:  # a hostile __repr__, or a huge number inside a container
        return f"<a {type(value).__name__}>"
    return text if len(text) <= limit else f"{text[: limit - 3]}..."


def _in_model(value: object, depth: int) -> bool:
    """True if value is in the data model (recursively): the fast walk, no error paths."""
    if depth > _MAX_DEPTH:
        return False
    kind = type(value)
    if kind is str or kind is bytes or kind is bool or value is None:
        return True
    if kind is int:
        return _MIN_INT <= value <= _MAX_INT  # type: ignore[operator]
    if kind is float:
        return not math.isnan(value)  # type: ignore[arg-type]
    if kind is list or kind is tuple:
        for item in value:  # type: ignore[attr-defined]
            t = type(item)
            if (t is not str and t is not bytes) or depth >= _MAX_DEPTH:
                if not _in_model(item, depth + 1):
                    return False
        return True
    if kind is dict:
        for key, item in value.items():  # type: ignore[attr-defined]
            if type(key) is not str:
                return False
            t = type(item)
            if (t is not str and t is not bytes) or depth >= _MAX_DEPTH:
                if not _in_model(item, depth + 1):
                    return False
        return True
    return False


def _require(value: object, path: str) -> None:
    """EncodingError, naming where, unless value is in the data model."""
    if not _in_model(value, 0):
        _check(value, path, 0)
        raise EncodingError(f"{path}: not in the data model")  # pragma: no cover - _check raised


def _check(value: object, path: str, depth: int) -> None:
    """Raise EncodingError unless value is in the data model (recursively), saying where.
    The slow walk: it runs only once :func:`_in_model` has said no."""
    if depth > _MAX_DEPTH:
        raise EncodingError(f"{path}: nested deeper than {_MAX_DEPTH} levels")
    kind = type(value)
    if value is None or kind is bool or kind is str or kind is bytes:
        return
    if isinstance(value, int) and kind is int:
        if not _MIN_INT <= value <= _MAX_INT:
            raise EncodingError(f"{path}: integer {short_repr(value)} is outside [-2**64, 2**64)")
        return
    if isinstance(value, float) and kind is float:
        if math.isnan(value):
            raise EncodingError(f"{path}: NaN is not allowed")
        return
    if isinstance(value, (list, tuple)) and kind in (list, tuple):
        for i, item in enumerate(value):
            _check(item, f"{path}[{i}]", depth + 1)
        return
    if isinstance(value, dict) and kind is dict:
        for key, item in value.items():
            if type(key) is not str:
                raise EncodingError(f"{path}: map key {short_repr(key)} is not a str ({type(key).__name__})")
            _check(item, f"{path}[{short_repr(key, 20)}]", depth + 1)
        return
    raise EncodingError(f"{path}: {kind.__name__} is not encodable (see fedledger.encoding)")


def encode(value: Value) -> bytes:
    """The deterministic CBOR encoding of ``value``; EncodingError if it is outside the model."""
    _require(value, "value")
    try:
        return cbor2.dumps(value, canonical=True)
    except (cbor2.CBOREncodeError, ValueError, TypeError, OverflowError) as exc:
        raise EncodingError(f"value: cannot encode: {exc}") from None


def encode_decoded(value: Value) -> bytes:
    """:func:`encode` of a value :func:`decode` returned, or of a part of one (a map with a
    key dropped, say): the same bytes, without the model walk that decode already did."""
    return cbor2.dumps(value, canonical=True)


def _loads(data: bytes) -> object:
    """cbor2.loads with fedledger's limits; every failure is EncodingError. Map keys must be
    text or byte strings (strict_hashable_types): integer keys with colliding hashes would make
    building a map quadratic."""
    try:
        return cbor2.loads(
            data,
            allow_duplicate_keys=False,
            allow_indefinite=False,
            max_depth=_MAX_DEPTH + 1,
            strict_hashable_types=True,
            semantic_decoders=_REFUSE_TAGS,
            tag_hook=_refuse_tag_hook,
        )
    except cbor2.CBORDecodeError as exc:
        if isinstance(exc.__cause__, _TagRefused):
            raise EncodingError(f"data: {exc.__cause__}") from None
        if "map key must be" in str(exc):
            raise EncodingError("data: a map key is not a str (strings only; no integer or container keys)") from None
        raise EncodingError(f"data: not valid CBOR: {short_repr(str(exc), 200)}") from None
    except Exception as exc:  # cbor2 raises several types on garbage (and MemoryError): all mean the same
        raise EncodingError(f"data: not valid CBOR: {type(exc).__name__}: {short_repr(str(exc), 200)}") from None


def decode(data: bytes) -> Value:
    """The value whose deterministic CBOR encoding is exactly ``data``; EncodingError otherwise."""
    if not isinstance(data, (bytes, bytearray, memoryview)):
        raise EncodingError(f"data: expected bytes, got {type(data).__name__}")
    data = bytes(data)
    value = _loads(data)
    _require(value, "data")
    if cbor2.dumps(value, canonical=True) != data:
        raise EncodingError("data: not the deterministic encoding of its value (RFC 8949 §4.2)")
    return value  # type: ignore[return-value]


def decode_authenticated(data: bytes) -> Value:
    """Decode bytes already known to be canonical because a hash commitment authenticated them
    (the ledger checks a block's transactions against its certified Merkle root first).

    Skips :func:`decode`'s model walk and canonical re-encoding, which cost 4x the decoding
    itself; malformed input still raises EncodingError, and so do tags, duplicate keys and map
    keys other than text or byte strings. Values outside the model that carry no tag (undefined,
    simple values, NaN, byte-string keys) are not detected. Never use it on untrusted bytes.
    """
    if not isinstance(data, (bytes, bytearray, memoryview)):
        raise EncodingError(f"data: expected bytes, got {type(data).__name__}")
    return _loads(data if type(data) is bytes else bytes(data))  # type: ignore[return-value]
