"""Hostile input to every core decoder: only FedLedgerError may escape, in bounded time.

Each test is named after a class of defect: truncation, bit flips, a field of the wrong type
(re-encoded canonically, so the checks behind the CBOR layer are reached), giant declared
lengths, deep nesting, invalid UTF-8, CBOR tags (cbor2 decodes many into Python objects),
and Python objects of the wrong type handed to the decoder. Decoders covered:
fedledger.encoding.decode/decode_authenticated, Transaction.from_bytes/from_authenticated_bytes,
BlockHeader/Vote/Certificate.from_bytes, Evidence.from_value, IdentityCard.from_bytes,
VerifyKey/AgreementPublicKey.from_bytes and from_pem, the seal decoders, ValidatorSet.from_value,
Genesis.from_bytes, verify_receipt and Share.from_bytes.
"""

from __future__ import annotations

import gc
import json
import sys
import tracemalloc
from collections.abc import Callable
from typing import Any

import cbor2
import pytest
from hostile import identity, only_fedledger_errors, replace_field, samples
from hypothesis import given
from hypothesis import strategies as st

from fedledger import encoding
from fedledger.crypto import seal
from fedledger.crypto.agreement import AgreementKey, AgreementPublicKey
from fedledger.crypto.shamir import ArrayShare, Share
from fedledger.crypto.signing import SigningKey, VerifyKey
from fedledger.errors import EncodingError, FedLedgerError, InvalidArgument, MalformedTransaction
from fedledger.identity import IdentityCard
from fedledger.ledger.block import BlockHeader, Certificate, Evidence, Vote
from fedledger.ledger.transaction import MAX_TRANSACTION_BYTES, Transaction, wire_frame

SAMPLES = samples()
TX = Transaction.from_bytes(SAMPLES["transaction"])
TX_BODY = encoding.decode(TX.body)

#: Every decoder of bytes, by the name of the sample it parses.
DECODERS: dict[str, list[Callable[[bytes], object]]] = {
    "transaction": [
        Transaction.from_bytes,
        Transaction.from_authenticated_bytes,
        encoding.decode,
        encoding.decode_authenticated,
    ],
    "header": [BlockHeader.from_bytes, encoding.decode, encoding.decode_authenticated],
    "vote": [Vote.from_bytes, encoding.decode],
    "certificate": [Certificate.from_bytes, encoding.decode],
    "card": [IdentityCard.from_bytes, encoding.decode],
}
ALL_DECODERS: list[Callable[[bytes], object]] = [
    encoding.decode,
    encoding.decode_authenticated,
    Transaction.from_bytes,
    Transaction.from_authenticated_bytes,
    BlockHeader.from_bytes,
    Vote.from_bytes,
    Certificate.from_bytes,
    IdentityCard.from_bytes,
]
CASES = [(name, fn) for name, fns in DECODERS.items() for fn in fns]
CASE_IDS = [f"{name}-{fn.__qualname__}" for name, fn in CASES]


def _nested(depth: int) -> encoding.Value:
    value: encoding.Value = []
    for _ in range(depth):
        value = [value]
    return value


#: Values of every other type, out of range, huge or deep, to put in place of one field.
WRONG_VALUES: list[encoding.Value] = [
    None,
    True,
    False,
    0,
    -1,
    2**63,
    2**64 - 1,
    -(2**64),
    1.5,
    float("inf"),
    -0.0,
    "",
    "x" * 300,
    "\n\x00",
    "\u202e",
    b"",
    b"\x00" * 31,
    b"\xff" * 33,
    b"\x00" * 65,
    [],
    [b"\x00" * 32, b"\x00" * 64],
    {},
    {"type": "fedledger.tx/1"},
    _nested(60),
]

model_scalars = (
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**64), max_value=2**64 - 1)
    | st.floats(allow_nan=False)
    | st.text(max_size=20)
    | st.binary(max_size=70)
)
model_values = st.recursive(
    model_scalars,
    lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=8), children, max_size=4),
    max_leaves=12,
)


def _is_map(name: str) -> bool:
    return name in ("header", "card")


def _fields(name: str) -> tuple[encoding.Value, list[str | int]]:
    value = encoding.decode(SAMPLES[name])
    keys: list[str | int] = list(value) if isinstance(value, dict) else list(range(len(value)))  # type: ignore[arg-type]
    return value, keys


# -- the samples are valid --------------------------------------------------------------------


@pytest.mark.parametrize(("name", "fn"), CASES, ids=CASE_IDS)
def test_valid_samples_parse(name: str, fn: Callable[[bytes], object]) -> None:
    fn(SAMPLES[name])


# -- truncation and bit flips -----------------------------------------------------------------


@pytest.mark.parametrize(("name", "fn"), CASES, ids=CASE_IDS)
def test_truncation_raises_typed_error(name: str, fn: Callable[[bytes], object]) -> None:
    data = SAMPLES[name]
    for cut in range(len(data)):
        error = only_fedledger_errors(fn, data[:cut])
        if fn not in (encoding.decode_authenticated,):
            assert error is not None, f"{fn.__qualname__} accepted {name} truncated to {cut} bytes"


@pytest.mark.parametrize(("name", "fn"), CASES, ids=CASE_IDS)
def test_single_bit_flips_raise_typed_error(name: str, fn: Callable[[bytes], object]) -> None:
    data = SAMPLES[name]
    for bit in range(len(data) * 8):
        flipped = bytearray(data)
        flipped[bit // 8] ^= 1 << (bit % 8)
        only_fedledger_errors(fn, bytes(flipped))


@pytest.mark.parametrize(("name", "fn"), CASES, ids=CASE_IDS)
@given(data=st.data())
def test_random_byte_mutations_raise_typed_error(name: str, fn: Callable[[bytes], object], data: st.DataObject) -> None:
    raw = bytearray(SAMPLES[name])
    for _ in range(data.draw(st.integers(1, 4))):
        op = data.draw(st.sampled_from(["set", "insert", "delete"]))
        at = data.draw(st.integers(0, len(raw) - 1))
        if op == "set":
            raw[at] = data.draw(st.integers(0, 255))
        elif op == "insert":
            raw[at:at] = data.draw(st.binary(min_size=1, max_size=9))
        elif len(raw) > 1:
            del raw[at : at + data.draw(st.integers(1, 9))]
    only_fedledger_errors(fn, bytes(raw))


@given(st.binary(max_size=200))
def test_arbitrary_bytes_raise_typed_error(data: bytes) -> None:
    for fn in ALL_DECODERS:
        only_fedledger_errors(fn, data)


# -- a field of the wrong type, re-encoded canonically ------------------------------------------


@pytest.mark.parametrize("name", ["header", "vote", "certificate", "card"])
def test_wrong_field_type_raises_typed_error(name: str) -> None:
    value, keys = _fields(name)
    fn = DECODERS[name][0]
    for key in keys:
        for new in WRONG_VALUES:
            only_fedledger_errors(fn, replace_field(value, key, new))


@pytest.mark.parametrize("name", ["header", "vote", "certificate", "card"])
@given(data=st.data())
def test_random_field_value_raises_typed_error(name: str, data: st.DataObject) -> None:
    value, keys = _fields(name)
    key = data.draw(st.sampled_from(keys))
    only_fedledger_errors(DECODERS[name][0], replace_field(value, key, data.draw(model_values)))


@pytest.mark.parametrize("name", ["header", "card"])
def test_missing_or_extra_key_is_rejected(name: str) -> None:
    value, keys = _fields(name)
    assert isinstance(value, dict)
    for key in keys:
        assert only_fedledger_errors(DECODERS[name][0], encoding.encode({k: v for k, v in value.items() if k != key}))
    assert only_fedledger_errors(DECODERS[name][0], encoding.encode({**value, "zz": 0}))


def _tx_with(key: str, new: encoding.Value) -> bytes:
    return wire_frame(replace_field(TX_BODY, key, new), TX.signature)


def _creatable(key: str, new: encoding.Value) -> bool:
    """Whether Transaction.create's rules accept ``new`` in place of the field ``key``."""
    assert isinstance(TX_BODY, dict)
    if key == "type":
        return new == TX_BODY["type"] and type(new) is str
    if key == "sender" and not (type(new) is bytes and len(new) == 32):
        return False
    fields = {"chain_id": TX.chain_id, "kind": TX.kind, "sender": TX.sender, "nonce": TX.nonce, "payload": TX.payload}
    name = {"chain": "chain_id", "sender": "sender"}.get(key, key)
    fields[name] = VerifyKey(new) if key == "sender" else new  # type: ignore[arg-type]
    try:
        Transaction.body_for(**fields)  # type: ignore[arg-type]
    except FedLedgerError:
        return False
    return True


@pytest.mark.parametrize("parse", [Transaction.from_bytes, Transaction.from_authenticated_bytes])
def test_transaction_wrong_field_type_raises_malformed(parse: Callable[[bytes], Transaction]) -> None:
    """Every field value that Transaction.create refuses, from_bytes refuses as malformed."""
    assert isinstance(TX_BODY, dict)
    for key in TX_BODY:
        for new in WRONG_VALUES:
            error = only_fedledger_errors(parse, _tx_with(key, new))
            assert (error is None) == _creatable(key, new), (key, new, error)
            assert error is None or isinstance(error, MalformedTransaction), (key, new, error)


@given(key=st.sampled_from(["type", "chain", "kind", "sender", "nonce", "payload"]), new=model_values)
def test_transaction_random_field_value_raises_typed_error(key: str, new: encoding.Value) -> None:
    for parse in (Transaction.from_bytes, Transaction.from_authenticated_bytes):
        only_fedledger_errors(parse, _tx_with(key, new))


@pytest.mark.parametrize("parse", [Transaction.from_bytes, Transaction.from_authenticated_bytes])
def test_transaction_names_are_checked_as_at_creation(parse: Callable[[bytes], Transaction]) -> None:
    """from_bytes accepts exactly the chain ids and kinds that Transaction.create accepts."""
    for key in ("chain", "kind"):
        for bad in ("", "x" * 129, "a\nb", "\x00"):
            assert isinstance(only_fedledger_errors(parse, _tx_with(key, bad)), MalformedTransaction), (key, bad)


@pytest.mark.parametrize("parse", [Transaction.from_bytes, Transaction.from_authenticated_bytes])
def test_transaction_signature_length_is_checked(parse: Callable[[bytes], Transaction]) -> None:
    for sig in (b"", b"\x00" * 63, b"\x00" * 65):
        assert isinstance(only_fedledger_errors(parse, wire_frame(TX.body, sig)), MalformedTransaction)


@pytest.mark.parametrize("parse", [Transaction.from_bytes, Transaction.from_authenticated_bytes])
def test_transaction_wire_not_bytes_pair_is_malformed(parse: Callable[[bytes], Transaction]) -> None:
    for wire in ([TX.body], [TX.body, TX.signature, b""], [TX_BODY, TX.signature], [TX.body, "sig"], {"a": 1}, b"x"):
        assert only_fedledger_errors(parse, encoding.encode(wire)) is not None


def test_certificate_checks_key_and_signature_sizes() -> None:
    for pair in ([b"\x01" * 31, b"\x00" * 64], [b"\x01" * 32, b"\x00" * 63], [b"\x01" * 32, b""]):
        assert isinstance(only_fedledger_errors(Certificate.from_bytes, encoding.encode([pair])), EncodingError)


def test_header_integers_are_bounded() -> None:
    value, _ = _fields("header")
    for key in ("height", "tx_count", "log_size", "time"):
        assert isinstance(
            only_fedledger_errors(BlockHeader.from_bytes, replace_field(value, key, 2**63)), EncodingError
        )


# -- giant declared lengths ---------------------------------------------------------------------

GIANT = [2**63, 2**64 - 1, 2**32, 2**31 - 1, 10**9]


def _head(major: int, n: int) -> bytes:
    return bytes([major << 5 | 27]) + n.to_bytes(8, "big")


@pytest.mark.parametrize("major", [2, 3, 4, 5])
def test_giant_declared_length_is_rejected_cheaply(major: int) -> None:
    tracemalloc.start()
    try:
        for n in GIANT:
            for data in (
                _head(major, n),
                _head(major, n) + b"\x00" * 64,
                b"\x81" + _head(major, n),
                b"\x82" + _head(major, n) + b"\x00",
                bytes([major << 5 | 26]) + min(n, 2**32 - 1).to_bytes(4, "big"),
            ):
                for fn in ALL_DECODERS:
                    assert only_fedledger_errors(fn, data) is not None
        assert tracemalloc.get_traced_memory()[1] < 64 << 20
    finally:
        tracemalloc.stop()


def test_giant_declared_length_inside_transaction_is_rejected() -> None:
    prefix = b"\x82\x5b" + (2**63).to_bytes(8, "big")
    for parse in (Transaction.from_bytes, Transaction.from_authenticated_bytes):
        assert isinstance(only_fedledger_errors(parse, prefix + b"\x00" * 100), MalformedTransaction)


def test_oversized_payload_is_rejected_as_at_creation() -> None:
    """A wire transaction under the size limit whose payload is over MAX_PAYLOAD_BYTES."""
    from fedledger.errors import OversizedPayload
    from fedledger.ledger.transaction import MAX_PAYLOAD_BYTES

    for size in (MAX_PAYLOAD_BYTES - 5, MAX_PAYLOAD_BYTES - 4, MAX_PAYLOAD_BYTES - 3, MAX_PAYLOAD_BYTES + 500):
        payload = b"\x00" * size
        wire = _tx_with("payload", payload)
        for parse in (Transaction.from_bytes, Transaction.from_authenticated_bytes):
            error = only_fedledger_errors(parse, wire)
            assert (error is None) == (len(encoding.encode(payload)) <= MAX_PAYLOAD_BYTES), (size, error)
            assert error is None or isinstance(error, OversizedPayload)


def test_oversized_transaction_is_rejected_before_decoding() -> None:
    from fedledger.errors import OversizedPayload

    big = wire_frame(b"\x00" * MAX_TRANSACTION_BYTES, TX.signature)
    big += bytes(-len(big) % 8)
    for view in (big, memoryview(big).cast("Q")):  # a cast view's len() counts 8-byte items
        assert isinstance(only_fedledger_errors(Transaction.from_bytes, view), OversizedPayload)


# -- deep nesting -------------------------------------------------------------------------------

DEPTH = 100_000
DEEP = {
    "arrays": b"\x81" * DEPTH + b"\x00",
    "maps": b"\xa1\x61a" * DEPTH + b"\x00",
    "tags": b"\xd8\x64" * DEPTH + b"\x00",
    "mixed": (b"\x81\xa1\x61a\xc1") * (DEPTH // 3) + b"\x00",
    "arrays-unterminated": b"\x81" * DEPTH,
}


@pytest.mark.parametrize("kind", DEEP)
def test_deep_nesting_raises_encoding_error(kind: str) -> None:
    for fn in (encoding.decode, encoding.decode_authenticated):
        assert isinstance(only_fedledger_errors(fn, DEEP[kind]), EncodingError)
    for fn in ALL_DECODERS:
        assert only_fedledger_errors(fn, DEEP[kind]) is not None


def test_deep_nesting_inside_transaction_body_is_malformed() -> None:
    for parse in (Transaction.from_bytes, Transaction.from_authenticated_bytes):
        error = only_fedledger_errors(parse, wire_frame(DEEP["arrays"][:60_000] + b"\x00", TX.signature))
        assert isinstance(error, FedLedgerError)


def test_nesting_limit_is_exact() -> None:
    """64 levels of containers decode; 65 do not (the documented bound)."""
    ok: encoding.Value = 0
    for _ in range(64):
        ok = [ok]
    assert encoding.decode(encoding.encode(ok)) == ok
    with pytest.raises(EncodingError):
        encoding.decode(b"\x81" * 65 + b"\x00")
    with pytest.raises(EncodingError):
        encoding.encode([ok])


def test_deep_python_value_is_rejected_by_encode() -> None:
    deep: list[Any] = []
    for _ in range(DEPTH):
        deep = [deep]
    assert isinstance(only_fedledger_errors(encoding.encode, deep), EncodingError)
    cyclic: list[Any] = []
    cyclic.append(cyclic)
    assert isinstance(only_fedledger_errors(encoding.encode, cyclic), EncodingError)


def test_memory_amplification_is_bounded() -> None:
    """A 128 KiB input of empty containers costs under ~100 bytes of Python objects per byte
    (measured: 66 for arrays, 74 for maps)."""
    for item in (b"\x80", b"\xa0"):
        data = b"\x9a" + (128 << 10).to_bytes(4, "big") + item * (128 << 10)
        gc.collect()
        tracemalloc.start()
        try:
            encoding.decode(data)
            peak = tracemalloc.get_traced_memory()[1]
        finally:
            tracemalloc.stop()
        assert peak < 100 * len(data), (item, peak / len(data))


# -- text ---------------------------------------------------------------------------------------

BAD_UTF8 = [b"\xff", b"\xc0\x80", b"\xed\xa0\x80", b"\xf4\x90\x80\x80", b"\xe2\x82", b"a\x80b", b"\xf8\x88\x80\x80\x80"]


def test_invalid_utf8_text_raises_encoding_error() -> None:
    for bad in BAD_UTF8:
        data = bytes([0x60 | len(bad)]) + bad
        for fn in (encoding.decode, encoding.decode_authenticated):
            assert isinstance(only_fedledger_errors(fn, data), EncodingError), bad


@pytest.mark.parametrize("name", ["transaction", "header", "vote", "card"])
def test_invalid_utf8_in_a_text_field_raises_typed_error(name: str) -> None:
    """Replace the bytes of a text field (same length, so the framing stays valid)."""
    data = SAMPLES[name]
    text = {"transaction": b"consortium-1", "header": b"consortium-1", "vote": b"consortium-1", "card": b"hospital-0"}[
        name
    ]
    assert text in data
    for bad in BAD_UTF8:
        mutated = data.replace(text, (bad * len(text))[: len(text)], 1)
        # (encoding.decode of a transaction sees only [body, signature]; the body is a byte string)
        for fn in DECODERS[name] if name != "transaction" else DECODERS[name][:2]:
            assert only_fedledger_errors(fn, mutated) is not None, (fn, bad)


def test_lone_surrogate_is_rejected_by_encode() -> None:
    assert isinstance(only_fedledger_errors(encoding.encode, "\ud800"), EncodingError)
    assert isinstance(only_fedledger_errors(encoding.encode, {"\udfff": 1}), EncodingError)


# -- tags, simple values, non-text keys ---------------------------------------------------------

T = cbor2.CBORTag
HOSTILE_TAGS = [
    T(0, "not a date"),
    T(0, 5),
    T(1, 2**64 - 1),
    T(1, float("inf")),
    T(1, "x"),
    T(2, b"\xff" * 5000),
    T(3, b"\xff" * 5000),
    T(2, "x"),
    T(4, [2**64 - 1, 1]),
    T(4, ["a", 1]),
    T(5, [2**64 - 1, 1]),
    T(5, [-(2**64), 1]),
    T(25, 5),
    T(256, T(25, 100)),
    T(28, [T(29, 0)]),
    T(29, 2**64 - 1),
    T(28, T(28, 1)),
    T(30, [1, 0]),
    T(30, ["a"]),
    T(35, "("),
    T(35, "(a+)+$"),
    T(35, 1),
    T(36, "Content-Type: x\n\nbody"),
    T(37, b"x"),
    T(52, [1, 2, 3]),
    T(54, b"x" * 100),
    T(100, 2**64 - 1),
    T(1004, "x"),
    T(258, [[1]]),
    T(258, 5),
    T(260, b"xxxxx"),
    T(261, {b"x": 1}),
    T(43000, [1, 2]),
    T(43000, "x"),
    T(55799, 1),
    T(99999, 1),
    T(2**64 - 1, [1]),
]


@pytest.mark.parametrize("tagged", HOSTILE_TAGS, ids=lambda t: f"tag{t.tag}")
def test_tags_raise_encoding_error(tagged: cbor2.CBORTag) -> None:
    """Tags are outside the data model; cbor2 would build datetimes, regexes, email messages,
    Decimals, cyclic lists and 5000-byte integers from them. Both decoders refuse them."""
    data = cbor2.dumps(tagged)
    for fn in (encoding.decode, encoding.decode_authenticated):
        assert isinstance(only_fedledger_errors(fn, data), EncodingError), fn


@pytest.mark.parametrize("tagged", HOSTILE_TAGS, ids=lambda t: f"tag{t.tag}")
def test_tag_in_a_transaction_field_is_malformed(tagged: cbor2.CBORTag) -> None:
    assert isinstance(TX_BODY, dict)
    for key in ("type", "chain", "nonce", "payload"):
        body = cbor2.dumps({**TX_BODY, key: tagged}, canonical=True)
        for parse in (Transaction.from_bytes, Transaction.from_authenticated_bytes):
            assert isinstance(only_fedledger_errors(parse, wire_frame(body, TX.signature)), MalformedTransaction)


OUTSIDE_MODEL = [
    b"\xf7",
    b"\xf0",
    b"\xf8\xff",
    b"\xf9\x7e\x00",
    b"\xa1\x01\x02",
    b"\xa1\x41a\x02",
    b"\xa1\x80\x02",
    b"\xa1\xa0\x02",
    b"\xa1\xf6\x02",
    b"\xa2\x61a\x01\x61a\x02",
    b"\x9f\xff",
    b"\x5f\xff",
    b"\xff",
    b"\x1c",
]


@pytest.mark.parametrize("data", OUTSIDE_MODEL, ids=lambda d: d.hex())
def test_values_outside_the_model_raise_encoding_error(data: bytes) -> None:
    assert isinstance(only_fedledger_errors(encoding.decode, data), EncodingError)
    # decode_authenticated skips the model walk (documented): it refuses what cbor2 can refuse
    # cheaply (duplicates, non-string keys, tags, malformed bytes) and never raises anything else.
    error = only_fedledger_errors(encoding.decode_authenticated, data)
    if data[0] in (0xA1, 0xA2) and data != b"\xa1\x41a\x02" or data[0] in (0x9F, 0x5F, 0xFF, 0x1C):
        assert isinstance(error, EncodingError)


def test_huge_python_int_is_rejected_with_a_short_message() -> None:
    """The message names the integer's size; formatting a 5000-digit int raises ValueError."""
    for value in (10**5000, -(10**5000), [10**5000], {"a": 10**5000}):
        error = only_fedledger_errors(encoding.encode, value)
        assert isinstance(error, EncodingError) and len(str(error)) < 200


def test_error_messages_are_bounded() -> None:
    value, _ = _fields("card")
    error = only_fedledger_errors(IdentityCard.from_bytes, replace_field(value, "type", "x" * 60_000))
    assert error is not None and len(str(error)) < 500
    error = only_fedledger_errors(Transaction.from_bytes, _tx_with("type", "x" * 60_000))
    assert error is not None and len(str(error)) < 500


# -- Python objects of the wrong type ----------------------------------------------------------

NOT_BYTES: list[object] = ["text", None, 5, 1.5, [0x82, 0x40, 0x40], (0x82,), {"a": 1}, object()]


@pytest.mark.parametrize("fn", ALL_DECODERS, ids=lambda f: f.__qualname__)
def test_non_bytes_argument_raises_typed_error(fn: Callable[[object], object]) -> None:
    for value in NOT_BYTES:
        assert only_fedledger_errors(fn, value) is not None, value


@pytest.mark.parametrize("fn", ALL_DECODERS, ids=lambda f: f.__qualname__)
def test_bytes_like_arguments_are_accepted(fn: Callable[[object], object]) -> None:
    name = next(n for n, fns in DECODERS.items() if fn in fns)
    data = SAMPLES[name]
    for view in (bytearray(data), memoryview(data), memoryview(b"\x00" + data)[1:]):
        fn(view)
    strided = memoryview(bytes(b for x in data for b in (x, 0)))[::2]
    only_fedledger_errors(fn, strided)


def test_evidence_from_hostile_value_raises_typed_error() -> None:
    vote = SAMPLES["vote"]
    for value in (
        None,
        [],
        {"first": vote},
        {"first": vote, "second": 5},
        {"first": "x", "second": vote},
        {"first": vote, "second": b"\x81" * 1000},
        {"first": vote, "second": vote, "x": 1},
    ):
        assert only_fedledger_errors(Evidence.from_value, value) is not None


def test_identity_file_with_hostile_fields_raises_typed_error(tmp_path: Any) -> None:
    from fedledger.identity import Identity

    path = tmp_path / "identity"
    identity(0).save(path, b"pw")
    good = encoding.decode(path.read_bytes())
    assert isinstance(good, dict) and isinstance(good["kdf"], dict)
    hostile: list[encoding.Value] = [
        {**good, "kdf": {**good["kdf"], "n": 32768.0}},
        {**good, "kdf": [1]},
        {**good, "kdf": {**good["kdf"], "salt": 5}},
        {**good, "card": b"x"},
        {**good, "ed25519": "pem"},
        {**good, "ed25519": good["x25519"]},
    ]
    for value in hostile:
        path.write_bytes(encoding.encode(value))
        assert only_fedledger_errors(Identity.load, path, b"pw") is not None, value
    for raw in (b"", DEEP["arrays"], b"\xff", cbor2.dumps(cbor2.CBORTag(1, 0))):
        path.write_bytes(raw)
        assert isinstance(only_fedledger_errors(Identity.load, path, b"pw"), EncodingError)


# -- keys ---------------------------------------------------------------------------------------


def test_public_keys_from_bytes_of_every_length() -> None:
    for n in range(0, 70):
        for cls in (VerifyKey, AgreementPublicKey):
            error = only_fedledger_errors(cls.from_bytes, bytes([n]) * n)
            assert (error is None) == (n == 32)
    for cls2 in (VerifyKey, AgreementPublicKey, SigningKey, AgreementKey):
        for value in NOT_BYTES:
            assert isinstance(only_fedledger_errors(cls2.from_bytes, value), InvalidArgument)


PEMS = [
    b"",
    b"garbage",
    b"-----BEGIN PUBLIC KEY-----\nAAAA\n-----END PUBLIC KEY-----\n",
    b"-----BEGIN PUBLIC KEY-----\n" + b"A" * 100_000 + b"\n-----END PUBLIC KEY-----\n",
    b"-----BEGIN ENCRYPTED PRIVATE KEY-----\nMAA=\n-----END ENCRYPTED PRIVATE KEY-----\n",
    b"-----BEGIN PRIVATE KEY-----\n\xff\xfe\n-----END PRIVATE KEY-----\n",
    "text",
    None,
]


def test_pem_decoders_raise_typed_error() -> None:
    for pem in PEMS:
        assert only_fedledger_errors(VerifyKey.from_pem, pem) is not None
        for cls in (SigningKey, AgreementKey):
            assert only_fedledger_errors(cls.from_pem, pem, b"password") is not None


def test_pem_of_the_other_key_type_is_invalid_key() -> None:
    ident = identity(3)
    assert only_fedledger_errors(SigningKey.from_pem, ident.agreement_key.to_pem(b"pw"), b"pw") is not None
    assert only_fedledger_errors(AgreementKey.from_pem, ident.signing_key.to_pem(b"pw"), b"pw") is not None


# -- sealed messages ----------------------------------------------------------------------------

KEY = bytes(range(32))
CTX = seal.SealContext("st-marys", "aggregator", 3, "update")


def test_sealed_message_truncation_and_flips_raise_seal_error() -> None:
    sealed = seal.seal(KEY, b"model weights", CTX)
    for cut in range(len(sealed)):
        assert isinstance(only_fedledger_errors(seal.unseal, KEY, sealed[:cut], CTX), seal.SealError)
    for bit in range(len(sealed) * 8):
        flipped = bytearray(sealed)
        flipped[bit // 8] ^= 1 << (bit % 8)
        assert isinstance(only_fedledger_errors(seal.unseal, KEY, bytes(flipped), CTX), seal.SealError)


def test_sealed_records_truncation_and_flips_raise_seal_error() -> None:
    sealed = seal.seal_records(KEY, b"x" * 40, CTX, record_size=16)
    for cut in range(len(sealed)):
        assert isinstance(only_fedledger_errors(seal.unseal_records, KEY, sealed[:cut], CTX), seal.SealError)
    for bit in range(len(sealed) * 8):
        flipped = bytearray(sealed)
        flipped[bit // 8] ^= 1 << (bit % 8)
        assert isinstance(only_fedledger_errors(seal.unseal_records, KEY, bytes(flipped), CTX), seal.SealError)


def test_sealed_records_giant_declared_length_raises_seal_error() -> None:
    tracemalloc.start()
    try:
        for size in (0, 15, 16, 1 << 30, (1 << 30) + 1, 2**32 - 1):
            for length in (0, 1, 2**31, 2**63, 2**64 - 1):
                header = bytes([2]) + bytes(12) + size.to_bytes(4, "big") + length.to_bytes(8, "big")
                for tail in (b"", b"\x00" * 16, b"\x00" * 100):
                    error = only_fedledger_errors(seal.unseal_records, KEY, header + tail, CTX)
                    assert isinstance(error, seal.SealError)
        assert tracemalloc.get_traced_memory()[1] < 16 << 20
    finally:
        tracemalloc.stop()


@given(st.binary(max_size=120))
def test_arbitrary_sealed_bytes_raise_seal_error(data: bytes) -> None:
    for fn in (seal.unseal, seal.unseal_records):
        assert isinstance(only_fedledger_errors(fn, KEY, data, CTX), seal.SealError)


def test_sealed_argument_of_wrong_shape_raises_typed_error() -> None:
    sealed = seal.seal(KEY, b"w", CTX)
    strided = memoryview(bytes(b for x in sealed for b in (x, 0)))[::2]
    for value in (*NOT_BYTES, strided, memoryview(bytes(64)).cast("I")):
        for fn in (seal.unseal, seal.unseal_records):
            assert only_fedledger_errors(fn, KEY, value, CTX) is not None


# -- validator sets, genesis records, receipts, Shamir shares --------------------------------------

from fedledger.ledger import Genesis  # noqa: E402
from fedledger.ledger import verify_receipt as _verify_receipt  # noqa: E402
from fedledger.ledger.validators import ValidatorSet  # noqa: E402


def verify_receipt(document: object) -> object:
    """The receipt check with a trust anchor, so that parsing (not the missing anchor) is exercised."""
    return _verify_receipt(document, chain_id="c", trusted_validators=ValidatorSet({GOOD_KEY: 1}))  # type: ignore[arg-type]


GOOD_KEY = identity(0).verify_key.to_bytes()


def test_validator_set_from_value_rejects_hostile_lists() -> None:
    for value in (
        None,
        {},
        [],
        [[GOOD_KEY]],
        [[GOOD_KEY, 1, 2]],
        [[GOOD_KEY, "1"]],
        [[GOOD_KEY, -1]],
        [[GOOD_KEY, 2**64 - 1]],
        [[GOOD_KEY, 1.0]],
        [[b"\x01" * 31, 1]],
        [[GOOD_KEY, 0]],
    ):
        assert only_fedledger_errors(ValidatorSet.from_value, value) is not None


@pytest.mark.parametrize("key", [2**40, -1, "k" * 32, None, {"a": 1}, 1.5], ids=repr)
def test_validator_set_from_value_non_bytes_key(key: object) -> None:
    assert only_fedledger_errors(ValidatorSet.from_value, [[key, 1]]) is not None


def test_validator_set_from_value_list_key_is_rejected() -> None:
    assert only_fedledger_errors(ValidatorSet.from_value, [[list(GOOD_KEY), 1]]) is not None


def test_validator_set_from_value_duplicate_key_is_rejected() -> None:
    assert only_fedledger_errors(ValidatorSet.from_value, [[GOOD_KEY, 1], [GOOD_KEY, 2]]) is not None


def _genesis_value() -> dict[str, encoding.Value]:
    return {"type": "fedledger.genesis/1", "chain": "c", "validators": [[GOOD_KEY, 1]], "members": [SAMPLES["card"]]}


def test_genesis_from_hostile_fields_raises_typed_error() -> None:
    value = _genesis_value()
    for key in ("chain", "members"):
        for new in WRONG_VALUES:
            only_fedledger_errors(Genesis.from_bytes, replace_field(value, key, new))


@pytest.mark.parametrize("validators", [[[2**40, 1]], [[-1, 1]], [["k", 1]], [[None, 1]]], ids=repr)
def test_genesis_hostile_validators(validators: encoding.Value) -> None:
    assert only_fedledger_errors(Genesis.from_bytes, replace_field(_genesis_value(), "validators", validators))


def test_receipt_deep_json_raises_invalid_receipt() -> None:
    assert only_fedledger_errors(verify_receipt, "[" * 100_000) is not None


def test_receipt_hostile_json_raises_typed_error() -> None:
    for text in ("", "{", "null", "[]", '{"type": 1}', "1" * 5000, b"\xff\xfe", json.dumps({"a": [1] * 10})):
        assert only_fedledger_errors(verify_receipt, text) is not None


@pytest.mark.parametrize("cls", [Share, ArrayShare])
@given(data=st.binary(max_size=200))
def test_shamir_share_arbitrary_bytes_raise_typed_error(cls: type[Share], data: bytes) -> None:
    only_fedledger_errors(cls.from_bytes, data)


@pytest.mark.parametrize("cls", [Share, ArrayShare])
def test_shamir_share_hostile_inputs_raise_typed_error(cls: type[Share]) -> None:
    for value in (*NOT_BYTES, *DEEP.values(), b"\x00" * 100_000):
        only_fedledger_errors(cls.from_bytes, value)


if sys.version_info < (3, 11):  # pragma: no cover
    pytestmark = pytest.mark.skip("hostile suite targets CPython 3.11+")
