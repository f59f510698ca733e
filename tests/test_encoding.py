"""Deterministic CBOR: equal to a plain-Python RFC 8949 §4.2 encoder, round-trips, and strict
decoding (duplicates, non-text keys, NaN, tags, indefinite lengths, non-canonical forms)."""

from __future__ import annotations

import copy
import datetime
import math
import random

import pytest
from hypothesis import given
from hypothesis import strategies as st
from reference import cbor_ref

from fedledger import encoding
from fedledger.errors import EncodingError

scalars = (
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**64), max_value=2**64 - 1)
    | st.floats(allow_nan=False)
    | st.text(max_size=40)
    | st.binary(max_size=40)
)
values = st.recursive(
    scalars,
    lambda children: st.lists(children, max_size=5) | st.dictionaries(st.text(max_size=30), children, max_size=5),
    max_leaves=25,
)


def same(a: object, b: object) -> bool:
    """Equality that tells -0.0 from 0.0 and lists from tuples apart as CBOR does (not at all)."""
    if isinstance(a, float) and isinstance(b, float):
        return math.copysign(1, a) == math.copysign(1, b) and a == b
    if isinstance(a, (list, tuple)) and isinstance(b, (list, tuple)):
        return len(a) == len(b) and all(same(x, y) for x, y in zip(a, b))
    if isinstance(a, dict) and isinstance(b, dict):
        return a.keys() == b.keys() and all(same(a[k], b[k]) for k in a)
    return type(a) is type(b) and a == b


@given(values)
def test_encoding_equals_the_reference_encoder(value: encoding.Value) -> None:
    assert encoding.encode(value) == cbor_ref.encode(value)


@given(values)
def test_round_trip(value: encoding.Value) -> None:
    data = encoding.encode(value)
    back = encoding.decode(data)
    assert same(back, value)
    assert encoding.encode(back) == data


@given(values, st.randoms(use_true_random=False))
def test_one_value_one_encoding(value: encoding.Value, rnd: random.Random) -> None:
    """Map insertion order and tuple-vs-list never change the bytes."""

    def shuffle(v: object) -> object:
        if isinstance(v, dict):
            items = list(v.items())
            rnd.shuffle(items)
            return {k: shuffle(x) for k, x in items}
        if isinstance(v, list):
            return tuple(shuffle(x) for x in v)
        return v

    assert encoding.encode(shuffle(copy.deepcopy(value))) == encoding.encode(value)  # type: ignore[arg-type]


def test_known_encodings() -> None:
    # RFC 8949 Appendix A examples, in their deterministic forms.
    assert encoding.encode(0) == bytes.fromhex("00")
    assert encoding.encode(-1) == bytes.fromhex("20")
    assert encoding.encode(1000000) == bytes.fromhex("1a000f4240")
    assert encoding.encode(18446744073709551615) == bytes.fromhex("1bffffffffffffffff")
    assert encoding.encode(-18446744073709551616) == bytes.fromhex("3bffffffffffffffff")
    assert encoding.encode(1.5) == bytes.fromhex("f93e00")
    assert encoding.encode(100000.0) == bytes.fromhex("fa47c35000")
    assert encoding.encode(1.1) == bytes.fromhex("fb3ff199999999999a")
    assert encoding.encode(float("inf")) == bytes.fromhex("f97c00")
    assert encoding.encode(-0.0) == bytes.fromhex("f98000")
    assert encoding.encode("IETF") == bytes.fromhex("6449455446")
    assert encoding.encode({"a": 1, "b": [2, 3]}) == bytes.fromhex("a26161016162820203")
    # longer keys sort after shorter ones (bytewise order of their encodings)
    assert encoding.encode({"aa": 1, "b": 2}) == bytes.fromhex("a261620262616101")


@pytest.mark.parametrize(
    "value",
    [
        float("nan"),
        [1, float("nan")],
        {"x": {"y": -float("nan")}},
        {1: "int key"},
        {b"k": "bytes key"},
        {("t",): 1},
        2**64,
        -(2**64) - 1,
        {1, 2},
        datetime.datetime(2026, 1, 1),
        bytearray(b"x"),
        object(),
    ],
)
def test_encode_rejects(value: object) -> None:
    with pytest.raises(EncodingError):
        encoding.encode(value)  # type: ignore[arg-type]


def test_encode_rejects_deep_nesting() -> None:
    value: list[object] = []
    for _ in range(100):
        value = [value]
    with pytest.raises(EncodingError, match="deeper"):
        encoding.encode(value)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    "hexdata,why",
    [
        ("a2616101616102", "Duplicate"),  # {"a": 1, "a": 2}
        ("a1016161", "not a str"),  # {1: "a"}
        ("a141016161", "not a str"),  # {h'01': "a"}
        ("f97e00", "NaN"),
        ("fb7ff8000000000000", "NaN"),
        ("9f01ff", "indefinite"),  # [_ 1]
        ("5f4101ff", "indefinite"),  # (_ h'01')
        ("1817", "deterministic"),  # 23 in two bytes
        ("fb3ff0000000000000", "deterministic"),  # 1.0 as a double
        ("a261620261616101", "deterministic"),  # {"b": 2, "a": 1}: keys out of order
        ("0101", "deterministic"),  # trailing byte
        ("c11a514b67b0", "not encodable"),  # tag 1: a datetime
        ("c249010000000000000000", "outside"),  # bignum 2**64
        ("d8185820" + "00" * 32, "not encodable"),  # tag 24
        ("f7", "not encodable"),  # undefined
        ("", "not valid CBOR"),
        ("61ff", "not valid CBOR"),  # invalid UTF-8
        ("8201", "not valid CBOR"),  # truncated
    ],
)
def test_decode_rejects(hexdata: str, why: str) -> None:
    with pytest.raises(EncodingError, match=why):
        encoding.decode(bytes.fromhex(hexdata))


def test_decode_rejects_non_bytes() -> None:
    with pytest.raises(EncodingError):
        encoding.decode("a0")  # type: ignore[arg-type]


@given(st.binary(max_size=30))
def test_decode_of_random_bytes_is_strict(data: bytes) -> None:
    """Whatever decode accepts, it accepts because it is the encoding of its value."""
    try:
        value = encoding.decode(data)
    except EncodingError:
        return
    assert encoding.encode(value) == data


# The model check has a fast walk (no error paths) and a slow one that says where the
# problem is; they must agree on every value, inside and outside the model.
bad_scalars = st.sampled_from([float("nan"), 2**64, -(2**64) - 1, bytearray(b"x"), {1}, 1.5j, True.__class__])
anything = st.recursive(
    scalars | bad_scalars,
    lambda children: (
        st.lists(children, max_size=4)
        | st.lists(children, max_size=4).map(tuple)
        | st.dictionaries(st.text(max_size=5) | st.integers(0, 3), children, max_size=4)
    ),
    max_leaves=20,
)


def _slow_says_ok(value: object) -> bool:
    try:
        encoding._check(value, "value", 0)
    except EncodingError:
        return False
    return True


@given(anything)
def test_fast_and_slow_model_checks_agree(value: object) -> None:
    assert encoding._in_model(value, 0) is _slow_says_ok(value)


@pytest.mark.parametrize("depth", [63, 64, 65, 66])
@pytest.mark.parametrize("leaf", ["s", b"b", 1, None])
def test_fast_and_slow_model_checks_agree_at_the_depth_limit(depth: int, leaf: object) -> None:
    for container in (list, dict):
        value: object = leaf
        for _ in range(depth):
            value = [value] if container is list else {"k": value}
        assert encoding._in_model(value, 0) is _slow_says_ok(value)


@given(values)
def test_encode_decoded_equals_encode(value: encoding.Value) -> None:
    back = encoding.decode(encoding.encode(value))
    assert encoding.encode_decoded(back) == encoding.encode(back)
    if isinstance(back, dict) and back:
        part = dict(back)
        part.pop(sorted(part)[0])
        assert encoding.encode_decoded(part) == encoding.encode(part)
