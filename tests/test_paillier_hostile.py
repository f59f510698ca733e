"""fedledger.crypto.paillier against hostile input: regressions by class of defect (kernel
reads guarded by shape checks, the receiver's layout deciding, bounded work, the error
family), then a property-based suite that feeds every public Paillier decoder truncations,
bit flips, wrongly typed and giant fields and deep nesting."""

from __future__ import annotations

import base64
import json
import math
import re
import struct
import time
from collections.abc import Callable
from typing import Any

import numpy as np
import phe
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from fedledger.crypto import paillier as P
from fedledger.crypto.paillier import interop
from fedledger.errors import (
    FedLedgerError,
    InvalidArgument,
    InvalidArgumentType,
    KeyMismatch,
    LayoutMismatch,
)

HOSTILE = settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
#: Every hostile input must be refused (or accepted) within this many seconds.
TIME_LIMIT = 2.0

_HEADER = struct.Struct(">4sBBdIQHIQI")  # EncryptedVector.to_bytes
_HEADER_FIELDS = ("magic", "version", "bits", "clip", "max_summands", "count", "slot_bits", "slots", "weight", "nlen")
_PARTIAL = struct.Struct(">4sBHHH32sQI")  # PartialDecryption.to_bytes
_PARTIAL_FIELDS = ("magic", "version", "index", "threshold", "trustees", "digest", "rows", "width")


@pytest.fixture(scope="module")
def keys() -> tuple[P.PublicKey, P.PrivateKey]:
    return P.generate_keypair(512, insecure_for_tests=True)


@pytest.fixture(scope="module")
def safe() -> tuple[P.PublicKey, P.PrivateKey]:
    return P.generate_keypair(512, insecure_for_tests=True, safe_primes=True)


def _b64(value: int) -> str:
    raw = value.to_bytes(max(1, (value.bit_length() + 7) // 8), "big")
    return base64.urlsafe_b64encode(raw).decode("ascii").rstrip("=")


def _dec(value: int) -> str:
    """Decimal digits of a non-negative int of any size (past CPython's int/str limit)."""
    chunks = []
    while value >= 10**1000:
        value, low = divmod(value, 10**1000)
        chunks.append(f"{low:01000d}")
    return str(value) + "".join(reversed(chunks))


def _fake_n(bits: int) -> int:
    """An odd integer of exactly ``bits`` bits: PublicKey checks size and parity, not primality."""
    return (1 << (bits - 1)) | 0xF00D1


def _retamper(raw: bytes, pk: P.PublicKey, **fields: Any) -> bytes:
    """Rewrite EncryptedVector header fields, re-deriving the slot geometry from the new
    parameters so that only the field itself is wrong."""
    values = dict(zip(_HEADER_FIELDS, _HEADER.unpack_from(raw)))
    values.update(fields)
    lay = P.PackingLayout.create(
        pk.bits, values["count"], bits=values["bits"], clip=values["clip"], max_summands=values["max_summands"]
    )
    values["slot_bits"], values["slots"] = lay.slot_bits, lay.slots
    return _HEADER.pack(*(values[f] for f in _HEADER_FIELDS)) + raw[_HEADER.size :]


def _quick(call: Callable[[], object]) -> object:
    """Run ``call``; any exception must be a FedLedgerError, and it must finish in time."""
    t0 = time.perf_counter()
    try:
        result: object = call()
    except FedLedgerError as exc:
        result = exc
    elapsed = time.perf_counter() - t0
    assert elapsed < TIME_LIMIT, f"took {elapsed:.2f} s"
    return result


# ---------------------------------------------------------------------------------------
# Kernel reads: every array handed to a kernel has the shape the kernel assumes


def test_partial_with_fewer_rows_than_the_vector_is_refused_before_the_kernel(
    safe: tuple[P.PublicKey, P.PrivateKey],
) -> None:
    pk, sk = safe
    shares = sk.split(2, 3)
    ev = pk.encrypt_vector(
        np.linspace(-1, 1, 3 * P.PackingLayout.create(pk.bits, 1, bits=16, clip=1.0, max_summands=100).slots)
    )
    assert ev.num_ciphertexts == 3
    good = shares[0].partial_decrypt(ev)
    wire = shares[1].partial_decrypt(ev).to_bytes(pk)
    head = dict(zip(_PARTIAL_FIELDS, _PARTIAL.unpack_from(wire)))
    head["rows"] = 1  # the digest is still the genuine one
    short = _PARTIAL.pack(*(head[f] for f in _PARTIAL_FIELDS)) + wire[_PARTIAL.size : _PARTIAL.size + pk.c_bytes]
    part = P.PartialDecryption.from_bytes(short, pk)  # parses: it is only checked against a vector
    with pytest.raises(InvalidArgument, match=r"partials\[1\]\.values.*shape"):
        P.combine_partial_decryptions(ev, [good, part])
    with pytest.raises(InvalidArgument, match="holds 1 values, the vector has 3"):
        P.PartialDecryption.from_bytes(short, pk, vector=ev)


@pytest.mark.parametrize(
    "values",
    [
        lambda rows, L: np.zeros((rows, L - 1), dtype=np.uint64),  # narrower rows
        lambda rows, L: np.zeros((rows + 1, L), dtype=np.uint64),  # more rows
        lambda rows, L: np.zeros((rows, L), dtype=np.float64),  # wrong dtype
        lambda rows, L: np.zeros((rows, 2 * L), dtype=np.uint64)[:, ::2],  # not contiguous
        lambda rows, L: [[0] * L] * rows,  # not an array
    ],
)
def test_partial_values_of_wrong_shape_or_type_never_reach_the_kernel(
    safe: tuple[P.PublicKey, P.PrivateKey], values: Callable[[int, int], Any]
) -> None:
    pk, sk = safe
    share = sk.split(1, 1)[0]
    ev = pk.encrypt_vector([0.5, -0.5])
    genuine = share.partial_decrypt(ev)
    rows, L = genuine.values.shape

    def build_and_use() -> None:
        part = P.PartialDecryption(1, 1, 1, genuine.vector_digest, values(rows, L))
        P.combine_partial_decryptions(ev, [part])

    with pytest.raises(InvalidArgument):
        build_and_use()


def test_layout_with_inconsistent_slot_geometry_cannot_be_built() -> None:
    # slots far beyond what a 512-bit plaintext holds: the pack/unpack kernels would run off the row
    with pytest.raises(LayoutMismatch, match="slots"):
        P.PackingLayout(key_bits=512, count=10, bits=16, clip=1.0, max_summands=100, slot_bits=23, slots=500)
    with pytest.raises(LayoutMismatch, match="slot_bits"):
        P.PackingLayout(key_bits=512, count=10, bits=16, clip=1.0, max_summands=100, slot_bits=64, slots=20)
    with pytest.raises(FedLedgerError):
        P.PackingLayout(key_bits=10**6, count=10, bits=16, clip=1.0, max_summands=100, slot_bits=23, slots=20)


def test_kernel_arrays_of_wrong_width_are_refused_in_python(keys: tuple[P.PublicKey, P.PrivateKey]) -> None:
    pk, _ = keys
    ev = pk.encrypt_vector([0.25])
    with pytest.raises(InvalidArgument, match="shape"):
        pk._to_bytes_rows(np.zeros((1, 3), dtype=np.uint64))
    with pytest.raises(InvalidArgument, match="shape"):
        pk._from_bytes_rows(np.ones((1, 3), dtype=np.uint8), "rows")
    with pytest.raises(InvalidArgument, match="shape"):
        pk._encrypt_rows(np.zeros((1, 3), dtype=np.uint8), None)
    with pytest.raises(InvalidArgument):
        P.PartialDecryption(1, 1, 1, bytes(32), np.zeros((1, 2), dtype=np.uint64)).to_bytes(pk)
    with pytest.raises(InvalidArgument, match="shape"):
        P.EncryptedVector.from_ciphertexts(pk, ev.layout, 1, np.zeros((1, 5), dtype=np.uint8))


# ---------------------------------------------------------------------------------------
# The receiver's parameters decide; the wire never chooses


@pytest.mark.parametrize(
    "field,value",
    [
        ("clip", 2.0),
        ("clip", 0.5),
        ("clip", float("nan")),
        ("bits", 8),
        ("bits", 20),
        ("max_summands", 7),
        ("count", 5),
    ],
)
def test_header_layout_field_differing_from_the_expected_layout_is_refused(
    keys: tuple[P.PublicKey, P.PrivateKey], field: str, value: Any
) -> None:
    pk, sk = keys
    ev = pk.encrypt_vector([0.5, -0.25, 1.0, 0.0], clip=1.0, max_summands=4)
    raw = ev.to_bytes()
    if field == "clip" and value != value:  # NaN: no geometry to re-derive
        values = dict(zip(_HEADER_FIELDS, _HEADER.unpack_from(raw)), clip=value)
        tampered = _HEADER.pack(*(values[f] for f in _HEADER_FIELDS)) + raw[_HEADER.size :]
    else:
        tampered = _retamper(raw, pk, **{field: value})
    with pytest.raises(LayoutMismatch, match=field):
        P.EncryptedVector.from_bytes(tampered, pk, ev.layout)
    # the genuine bytes under the genuine layout still decrypt to the same values
    back = P.EncryptedVector.from_bytes(raw, pk, ev.layout)
    assert np.array_equal(sk.decrypt_vector(back), sk.decrypt_vector(ev))


def test_expected_layout_must_be_a_layout_of_this_key(
    keys: tuple[P.PublicKey, P.PrivateKey],
) -> None:
    pk, _ = keys
    ev = pk.encrypt_vector([0.5])
    with pytest.raises(InvalidArgumentType, match="layout"):
        P.EncryptedVector.from_bytes(ev.to_bytes(), pk, None)  # type: ignore[arg-type]
    other = P.PackingLayout.create(1024, 1, bits=16, clip=1.0, max_summands=100)
    with pytest.raises(LayoutMismatch, match="1024-bit"):
        P.EncryptedVector.from_bytes(ev.to_bytes(), pk, other)
    with pytest.raises(KeyMismatch):
        raw = (
            _HEADER.pack(
                *(dict(zip(_HEADER_FIELDS, _HEADER.unpack_from(ev.to_bytes())), nlen=10**6)[f] for f in _HEADER_FIELDS)
            )
            + ev.to_bytes()[_HEADER.size :]
        )
        P.EncryptedVector.from_bytes(raw, pk, ev.layout)


def test_partials_claiming_another_sharing_are_refused(safe: tuple[P.PublicKey, P.PrivateKey]) -> None:
    pk, sk = safe
    ev = pk.encrypt_vector([0.5, 0.25])
    parts = [s.partial_decrypt(ev) for s in sk.split(2, 3)[:2]]
    assert P.combine_partial_decryptions(ev, parts, threshold=2, trustees=3).tolist() == pytest.approx(
        [0.5, 0.25], abs=1e-4
    )
    with pytest.raises(InvalidArgument, match="different sharing"):
        P.combine_partial_decryptions(ev, parts, threshold=3, trustees=3)
    with pytest.raises(InvalidArgument, match="different vector"):
        P.PartialDecryption.from_bytes(parts[0].to_bytes(pk), pk, vector=pk.encrypt_vector([0.5, 0.25]))


# ---------------------------------------------------------------------------------------
# Bounded work on untrusted sizes


def _phe_json(pk: P.PublicKey, values: list[Any], **key: Any) -> str:
    return json.dumps({"public_key": {"g": pk.n + 1, "n": pk.n, **key}, "values": values})


@pytest.mark.parametrize("exponent", [10**9, -(10**9), 1025, -1025])
def test_phe_exponent_outside_the_accepted_range_is_refused_without_decoding(
    keys: tuple[P.PublicKey, P.PrivateKey], exponent: int
) -> None:
    pk, sk = keys
    ct = pk.encrypt(3).ciphertext()
    t0 = time.perf_counter()
    with pytest.raises(InvalidArgument, match="outside"):
        P.encrypted_numbers_from_json(_phe_json(pk, [[str(ct), exponent]]), insecure_for_tests=True)
    with pytest.raises(InvalidArgument, match="outside"):
        sk.decrypt(phe.EncryptedNumber(pk.to_phe(), ct, exponent))
    assert time.perf_counter() - t0 < 0.5


def test_phe_exponents_that_phe_produces_are_accepted(keys: tuple[P.PublicKey, P.PrivateKey]) -> None:
    pk, sk = keys
    ppk = pk.to_phe()
    numbers = [ppk.encrypt(5e-324), ppk.encrypt(1.7e308 / 2**200), ppk.encrypt(-2.5), ppk.encrypt(7) * 1e-300]
    assert all(abs(x.exponent) <= P.MAX_PHE_EXPONENT for x in numbers)
    _, back = P.encrypted_numbers_from_json(P.encrypted_numbers_to_json(numbers), insecure_for_tests=True)
    assert [sk.decrypt(x) for x in back] == [sk.to_phe().decrypt(x) for x in numbers]


@pytest.mark.parametrize("bits", [8194, 16384, 20000])
def test_public_keys_above_the_size_bound_are_refused_from_every_source(bits: int) -> None:
    n = _fake_n(bits)
    t0 = time.perf_counter()
    with pytest.raises(InvalidArgument, match="too large|bits"):
        P.PublicKey(n, insecure_for_tests=True)
    jwk = {"kty": "DAJ", "alg": "PAI-GN1", "key_ops": ["encrypt"], "n": _b64(n)}
    with pytest.raises(InvalidArgument):
        P.PublicKey.from_jwk(jwk, insecure_for_tests=True)
    with pytest.raises(InvalidArgument):
        P.PrivateKey.from_jwk({"kty": "DAJ", "key_ops": ["decrypt"], "p": "Aw", "q": "Bw", "pub": jwk})
    with pytest.raises(InvalidArgument):
        P.encrypted_numbers_from_json(json.dumps({"public_key": {"n": _dec(n)}, "values": []}), insecure_for_tests=True)
    share = {"kty": "fedledger-paillier-share", "n": _b64(n), "index": 1, "threshold": 1, "trustees": 1, "share": "AQ"}
    with pytest.raises(InvalidArgument):
        P.KeyShare.from_json(json.dumps(share), insecure_for_tests=True)
    with pytest.raises(InvalidArgument):
        P.from_phe(phe.PaillierPublicKey(n), insecure_for_tests=True)
    with pytest.raises(InvalidArgument):
        P.PackingLayout.create(bits, 1, bits=16, clip=1.0, max_summands=1)
    assert time.perf_counter() - t0 < 1.0


def test_key_generation_above_the_size_bound_is_refused() -> None:
    with pytest.raises(InvalidArgument, match="too large"):
        P.generate_keypair(P.MAX_KEY_BITS + 2)


def test_largest_accepted_key_reads_phe_json_past_the_int_string_limit() -> None:
    # An 8192-bit n: ciphertexts below n^2 have up to 4933 decimal digits, more than CPython
    # converts by default (4300).
    pk = P.PublicKey(_fake_n(P.MAX_KEY_BITS), insecure_for_tests=True)
    ct = pk.nsquare - 2
    while math.gcd(ct, pk.n) != 1:
        ct -= 1
    assert len(_dec(ct)) > 4300
    pk2, nums = P.encrypted_numbers_from_json(
        json.dumps({"public_key": {"n": _dec(pk.n)}, "values": [[_dec(ct), 0]]}), insecure_for_tests=True
    )
    assert pk2 == pk and nums[0].ciphertext(be_secure=False) == ct
    assert P.PublicKey.from_jwk(pk.to_jwk(), insecure_for_tests=True) == pk


def test_value_count_and_text_length_are_bounded(
    keys: tuple[P.PublicKey, P.PrivateKey], monkeypatch: pytest.MonkeyPatch
) -> None:
    pk, _ = keys
    one = [str(pk.encrypt(1).ciphertext()), 0]
    monkeypatch.setattr(interop, "MAX_PHE_VALUES", 3)
    P.encrypted_numbers_from_json(_phe_json(pk, [one] * 3), insecure_for_tests=True)
    with pytest.raises(InvalidArgument, match="more than 3"):
        P.encrypted_numbers_from_json(_phe_json(pk, [one] * 4), insecure_for_tests=True)
    monkeypatch.setattr(interop, "MAX_JSON_CHARS", 1000)
    with pytest.raises(InvalidArgument, match="more than the 1000"):
        P.encrypted_numbers_from_json(_phe_json(pk, [one] * 3) + " " * 1000, insecure_for_tests=True)
    with pytest.raises(InvalidArgument, match="more than"):
        P.PublicKey.from_jwk(json.dumps(pk.to_jwk()) + " " * (1 << 20), insecure_for_tests=True)
    with pytest.raises(InvalidArgument, match="longer than"):
        P.PublicKey.from_jwk({**pk.to_jwk(), "n": "A" * (1 << 20)}, insecure_for_tests=True)


# ---------------------------------------------------------------------------------------
# Every failure is a FedLedgerError


def _jwk_cases(pk: P.PublicKey, sk: P.PrivateKey) -> list[tuple[str, Callable[[], object]]]:
    pub = pk.to_jwk()
    priv = sk.to_jwk()
    share = {
        "kty": "fedledger-paillier-share",
        "n": _b64(pk.n),
        "index": 1,
        "threshold": 1,
        "trustees": 1,
        "share": "AQ",
    }
    good_ct = str(pk.encrypt(2).ciphertext())
    doc = {"public_key": {"g": pk.n + 1, "n": pk.n}, "values": [[good_ct, 0]]}

    def phe_json(**change: Any) -> Callable[[], object]:
        obj = json.loads(json.dumps(doc))
        for path, value in change.items():
            target = obj
            keys = path.split("__")
            for k in keys[:-1]:
                target = target[int(k)] if isinstance(target, list) else target[k]
            last = keys[-1]
            if isinstance(target, list):
                target[int(last)] = value
            else:
                target[last] = value
        return lambda: P.encrypted_numbers_from_json(json.dumps(obj), insecure_for_tests=True)

    deep = "[" * 100_000 + "]" * 100_000
    return [
        ("phe g list", phe_json(public_key__g=[])),
        ("phe g str", phe_json(public_key__g="x")),
        ("phe g float", phe_json(public_key__g=1.5)),
        ("phe g inf", phe_json(public_key__g=float("inf"))),
        ("phe n inf", phe_json(public_key__n=float("inf"))),
        ("phe n float", phe_json(public_key__n=3.0)),
        ("phe n bool", phe_json(public_key__n=True)),
        ("phe n negative", phe_json(public_key__n=-pk.n)),
        ("phe public_key list", phe_json(public_key=[1, 2])),
        ("phe values int", phe_json(values=5)),
        ("phe values dict", phe_json(values={"a": 1})),
        ("phe values str", phe_json(values="abc")),
        ("phe item int", phe_json(values=[5])),
        ("phe item empty", phe_json(values=[[]])),
        ("phe item dict", phe_json(values=[{"0": good_ct, "1": 0}])),
        ("phe ct float", phe_json(values__0__0=1.5)),
        ("phe ct list", phe_json(values__0__0=[good_ct])),
        ("phe ct exp notation", phe_json(values__0__0="1e5")),
        ("phe ct negative str", phe_json(values__0__0="-5")),
        ("phe exp float", phe_json(values__0__1=1.5)),
        ("phe exp str", phe_json(values__0__1="3")),
        ("phe exp null", phe_json(values__0__1=None)),
        ("phe exp bool", phe_json(values__0__1=True)),
        ("phe top list", lambda: P.encrypted_numbers_from_json("[]")),
        ("phe deep", lambda: P.encrypted_numbers_from_json(deep)),
        ("phe not utf8", lambda: P.encrypted_numbers_from_json(b"\xff\xfe{")),
        ("phe not text", lambda: P.encrypted_numbers_from_json(5)),  # type: ignore[arg-type]
        (
            "phe giant int",
            lambda: P.encrypted_numbers_from_json('{"public_key": {"n": ' + "9" * 5000 + '}, "values": []}'),
        ),
        ("jwk n int", lambda: P.PublicKey.from_jwk({**pub, "n": 5})),
        ("jwk n list", lambda: P.PublicKey.from_jwk({**pub, "n": []})),
        ("jwk n bad b64", lambda: P.PublicKey.from_jwk({**pub, "n": "!!!!"})),
        ("jwk kty list", lambda: P.PublicKey.from_jwk({**pub, "kty": []})),
        ("jwk int", lambda: P.PublicKey.from_jwk(5)),  # type: ignore[arg-type]
        ("jwk json list", lambda: P.PublicKey.from_jwk("[]")),
        ("jwk deep", lambda: P.PublicKey.from_jwk(deep)),
        ("jwk giant int", lambda: P.PublicKey.from_jwk('{"n": ' + "9" * 5000 + "}")),
        ("priv key_ops int", lambda: P.PrivateKey.from_jwk({**priv, "key_ops": 5}, insecure_for_tests=True)),
        ("priv key_ops null", lambda: P.PrivateKey.from_jwk({**priv, "key_ops": None}, insecure_for_tests=True)),
        ("priv key_ops str", lambda: P.PrivateKey.from_jwk({**priv, "key_ops": "decrypt"}, insecure_for_tests=True)),
        ("priv pub int", lambda: P.PrivateKey.from_jwk({**priv, "pub": 5}, insecure_for_tests=True)),
        ("priv pub broken json", lambda: P.PrivateKey.from_jwk({**priv, "pub": "{"}, insecure_for_tests=True)),
        ("priv p float", lambda: P.PrivateKey.from_jwk({**priv, "p": 1.5}, insecure_for_tests=True)),
        ("priv q swapped", lambda: P.PrivateKey.from_jwk({**priv, "q": priv["p"]}, insecure_for_tests=True)),
        ("share not utf8", lambda: P.KeyShare.from_json(b"\xff\xfe\xfd")),
        ("share int", lambda: P.KeyShare.from_json(5)),  # type: ignore[arg-type]
        ("share list", lambda: P.KeyShare.from_json("[]")),
        ("share deep", lambda: P.KeyShare.from_json(deep)),
        ("share index str", lambda: P.KeyShare.from_json(json.dumps({**share, "index": "1"}), insecure_for_tests=True)),
        (
            "share index float",
            lambda: P.KeyShare.from_json(json.dumps({**share, "index": 1.0}), insecure_for_tests=True),
        ),
        (
            "share index huge",
            lambda: P.KeyShare.from_json(json.dumps({**share, "index": 10**1000}), insecure_for_tests=True),
        ),
        ("share share int", lambda: P.KeyShare.from_json(json.dumps({**share, "share": 5}), insecure_for_tests=True)),
        ("keyshare direct", lambda: P.KeyShare(pk, 1, -5, 1, 1)),
        ("keyshare direct type", lambda: P.KeyShare(pk, 1, "5", 1, 1)),  # type: ignore[arg-type]
        ("partial no key", lambda: P.PartialDecryption.from_bytes(b"x" * 100, None)),  # type: ignore[arg-type]
        ("partial str", lambda: P.PartialDecryption.from_bytes("x", pk)),  # type: ignore[arg-type]
        ("vector no key", lambda: P.EncryptedVector.from_bytes(b"x", None, None)),  # type: ignore[arg-type]
        ("from_phe int", lambda: P.from_phe(5)),
        ("encrypt inf", lambda: pk.encrypt(float("inf"))),
        ("encrypt precision str", lambda: pk.encrypt(1.5, "x")),  # type: ignore[arg-type]
        ("encrypt precision tiny", lambda: pk.encrypt(1.5, 1e-320)),
        ("encrypt precision huge int", lambda: pk.encrypt(1.5, 10**400)),
        ("encrypt precision nan", lambda: pk.encrypt(1.5, float("nan"))),
        ("scalar giant negative", lambda: pk.encrypt_vector([0.5]) * -(10**5000)),
        ("sum of a non-sequence", lambda: P.sum_vectors(5)),  # type: ignore[arg-type]
        ("phe JSON of a non-sequence", lambda: P.encrypted_numbers_to_json(5)),  # type: ignore[arg-type]
        ("combine a non-sequence", lambda: P.combine_partial_decryptions(pk.encrypt_vector([0.5]), 5)),  # type: ignore[arg-type]
    ]


def test_decoders_raise_only_fedledger_errors_on_wrongly_typed_or_malformed_fields(
    keys: tuple[P.PublicKey, P.PrivateKey],
) -> None:
    pk, sk = keys
    escaped = []
    for name, call in _jwk_cases(pk, sk):
        try:
            _quick(call)
        except AssertionError as exc:
            escaped.append(f"{name}: {exc}")
        except Exception as exc:  # noqa: BLE001 - collecting every escape at once
            escaped.append(f"{name}: {type(exc).__name__}: {str(exc)[:80]}")
    assert not escaped, "\n".join(escaped)


def test_refused_inputs_are_refused_not_accepted(keys: tuple[P.PublicKey, P.PrivateKey]) -> None:
    pk, sk = keys
    accepted = [name for name, call in _jwk_cases(pk, sk) if not isinstance(_quick(call), FedLedgerError)]
    assert accepted == []


# ---------------------------------------------------------------------------------------
# Property-based: every public Paillier decoder, hostile bytes and fields

_LEAF = (
    st.none()
    | st.booleans()
    | st.integers()
    | st.integers(-(2**12000), 2**12000)
    | st.floats(allow_nan=True, allow_infinity=True)
    | st.text(max_size=12)
    | st.sampled_from(["", "A" * 5000, "9" * 5000, "-1", "0", "AQ", "!!", "decrypt", "DAJ"])
)
_VALUE = st.recursive(
    _LEAF, lambda c: st.lists(c, max_size=3) | st.dictionaries(st.text(max_size=4), c, max_size=3), max_leaves=6
)
_DEEP = "[" * 50_000 + "]" * 50_000
_MARK = "\u2603deep\u2603"


def _paths(obj: Any, prefix: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    out = [prefix] if prefix else []
    if isinstance(obj, dict):
        for k, v in obj.items():
            out += _paths(v, prefix + (k,))
    elif isinstance(obj, list):
        for i, v in enumerate(obj):
            out += _paths(v, prefix + (i,))
    return out


def _replace(obj: Any, path: tuple[Any, ...], value: Any, delete: bool) -> Any:
    obj = json.loads(json.dumps(obj))
    target = obj
    for k in path[:-1]:
        target = target[k]
    if delete:
        del target[path[-1]]
    else:
        target[path[-1]] = value
    return obj


def _hostile_json(data: st.DataObject, genuine: Any) -> str | bytes:
    """A genuine document with one field replaced (or deleted), re-encoded canonically, or its
    text truncated or bit-flipped."""
    how = data.draw(st.sampled_from(["field", "field", "deep", "truncate", "flip"]))
    text = json.dumps(genuine)
    if how in ("field", "deep"):
        path = data.draw(st.sampled_from(_paths(genuine)))
        delete = how == "field" and data.draw(st.booleans())
        value = _MARK if how == "deep" else data.draw(_VALUE)
        text = json.dumps(_replace(genuine, path, value, delete))
        return text.replace(json.dumps(_MARK), _DEEP)
    raw = text.encode()
    if how == "truncate":
        return raw[: data.draw(st.integers(0, len(raw) - 1))]
    buf = bytearray(raw)
    for _ in range(data.draw(st.integers(1, 4))):
        buf[data.draw(st.integers(0, len(buf) - 1))] ^= 1 << data.draw(st.integers(0, 7))
    return bytes(buf)


def _hostile_bytes(data: st.DataObject, genuine: bytes, header: struct.Struct, fields: tuple[str, ...]) -> bytes:
    """Header fields replaced by anything their format holds, truncation, bit flips, growth."""
    how = data.draw(st.sampled_from(["field", "field", "truncate", "flip", "grow"]))
    if how == "field":
        values = dict(zip(fields, header.unpack_from(genuine)))
        name = data.draw(st.sampled_from(fields))
        old = values[name]
        if isinstance(old, bytes):
            values[name] = data.draw(st.binary(min_size=len(old), max_size=len(old)))
        elif isinstance(old, float):
            values[name] = data.draw(st.floats(allow_nan=True, allow_infinity=True))
        else:
            code = re.findall(r"\d*[a-zA-Z]", header.format[1:])[fields.index(name)]
            top = {"B": 8, "H": 16, "I": 32, "Q": 64}[code]
            values[name] = data.draw(st.integers(0, 2**top - 1) | st.integers(max(0, old - 2), old + 2))
        return header.pack(*(values[f] for f in fields)) + genuine[header.size :]
    if how == "truncate":
        return genuine[: data.draw(st.integers(0, len(genuine) - 1))]
    if how == "grow":
        return genuine + data.draw(st.binary(min_size=1, max_size=64)) * data.draw(st.sampled_from([1, 1000, 100_000]))
    buf = bytearray(genuine)
    for _ in range(data.draw(st.integers(1, 4))):
        buf[data.draw(st.integers(0, len(buf) - 1))] ^= 1 << data.draw(st.integers(0, 7))
    return bytes(buf)


@HOSTILE
@given(data=st.data())
def test_hostile_encrypted_vector_bytes(keys: tuple[P.PublicKey, P.PrivateKey], data: st.DataObject) -> None:
    pk, sk = keys
    ev = pk.encrypt_quantized(np.arange(-20, 20, dtype=np.int64), max_summands=5) * 2
    raw = _hostile_bytes(data, ev.to_bytes(), _HEADER, _HEADER_FIELDS)
    got = _quick(lambda: sk.decrypt_vector(P.EncryptedVector.from_bytes(raw, pk, ev.layout)))
    if not isinstance(got, FedLedgerError):
        assert np.array_equal(got, sk.decrypt_vector(ev))  # type: ignore[arg-type]


@HOSTILE
@given(data=st.data())
def test_hostile_partial_decryption_bytes(safe: tuple[P.PublicKey, P.PrivateKey], data: st.DataObject) -> None:
    pk, sk = safe
    shares = _shares(sk)
    ev = _vector(pk)
    good = shares[0].partial_decrypt(ev)
    wire = _hostile_bytes(data, shares[1].partial_decrypt(ev).to_bytes(pk), _PARTIAL, _PARTIAL_FIELDS)
    use_vector = data.draw(st.booleans())

    def decode_and_combine() -> object:
        part = P.PartialDecryption.from_bytes(wire, pk, vector=ev if use_vector else None)
        return P.combine_partial_decryptions(ev, [good, part], quantized=True)

    got = _quick(decode_and_combine)
    if not isinstance(got, FedLedgerError):
        assert np.array_equal(got, sk.decrypt_quantized(ev))  # type: ignore[arg-type]


_CACHE: dict[str, Any] = {}


def _shares(sk: P.PrivateKey) -> list[P.KeyShare]:
    if "shares" not in _CACHE:
        _CACHE["shares"] = sk.split(2, 3)
    return _CACHE["shares"]  # type: ignore[no-any-return]


def _vector(pk: P.PublicKey) -> P.EncryptedVector:
    if "vector" not in _CACHE or _CACHE["vector"].public_key != pk:
        _CACHE["vector"] = pk.encrypt_quantized(np.arange(-30, 30, dtype=np.int64), max_summands=3)
    return _CACHE["vector"]  # type: ignore[no-any-return]


@HOSTILE
@given(data=st.data())
def test_hostile_key_share_json(safe: tuple[P.PublicKey, P.PrivateKey], data: st.DataObject) -> None:
    _, sk = safe
    text = _hostile_json(data, json.loads(_shares(sk)[0].to_json()))
    _quick(lambda: P.KeyShare.from_json(text, insecure_for_tests=True))


@HOSTILE
@given(data=st.data())
def test_hostile_public_jwk(keys: tuple[P.PublicKey, P.PrivateKey], data: st.DataObject) -> None:
    pk, _ = keys
    text = _hostile_json(data, pk.to_jwk())
    as_dict = data.draw(st.booleans())

    def decode() -> object:
        return P.PublicKey.from_jwk(json.loads(text) if as_dict else text, insecure_for_tests=True)  # type: ignore[arg-type]

    if as_dict:
        try:
            json.loads(text)
        except (ValueError, RecursionError):
            return  # not a dict to hand over
    _quick(decode)


@HOSTILE
@given(data=st.data())
def test_hostile_private_jwk(keys: tuple[P.PublicKey, P.PrivateKey], data: st.DataObject) -> None:
    _, sk = keys
    text = _hostile_json(data, sk.to_jwk())
    got = _quick(lambda: P.PrivateKey.from_jwk(text, insecure_for_tests=True))  # type: ignore[arg-type]
    if not isinstance(got, FedLedgerError):
        assert got == sk


@HOSTILE
@given(data=st.data())
def test_hostile_phe_json(keys: tuple[P.PublicKey, P.PrivateKey], data: st.DataObject) -> None:
    pk, sk = keys
    if _CACHE.get("phe_key") != pk:  # one genuine document, so that draws replay exactly
        numbers = [pk.encrypt(1.5), pk.to_phe().encrypt(-3), pk.encrypt(2**40)]
        _CACHE["phe_key"], _CACHE["phe_doc"] = pk, json.loads(P.encrypted_numbers_to_json(numbers))
    text = _hostile_json(data, _CACHE["phe_doc"])

    def decode_and_decrypt() -> object:
        _, nums = P.encrypted_numbers_from_json(text, insecure_for_tests=True)
        return [sk.decrypt(x) for x in nums]

    _quick(decode_and_decrypt)
