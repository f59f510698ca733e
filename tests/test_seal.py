"""AES-256-GCM sealing: Wycheproof vectors through the module's own encrypt/decrypt, and every
kind of tampering gives SealError and no plaintext."""

from __future__ import annotations

import pytest
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from hypothesis import given
from hypothesis import strategies as st

from _wycheproof import case_id, cases
from fedledger.crypto import seal
from fedledger.crypto.seal import SealContext
from fedledger.errors import InvalidArgument, InvalidArgumentType, SealError

GCM_CASES = [
    c
    for c in cases("aes_gcm_test.json")
    if c[0]["keySize"] == 256 and c[0]["ivSize"] == 96 and c[0]["tagSize"] == 128
]
KEY = bytes(range(32))
CTX = SealContext(sender="st-marys", receiver="aggregator", round=7, purpose="update")


def test_gcm_subset_is_not_empty() -> None:
    assert len(GCM_CASES) >= 50
    assert {t["result"] for _, t in GCM_CASES} == {"valid", "invalid"}


@pytest.mark.parametrize("case", GCM_CASES, ids=case_id)
def test_aes_gcm_wycheproof(case: tuple[dict, dict]) -> None:
    _, test = case
    aead = AESGCM(bytes.fromhex(test["key"]))
    iv, aad = bytes.fromhex(test["iv"]), bytes.fromhex(test["aad"])
    msg, ct_tag = bytes.fromhex(test["msg"]), bytes.fromhex(test["ct"] + test["tag"])
    if test["result"] == "valid":
        assert seal._encrypt(aead, iv, msg, aad) == ct_tag
        assert seal._decrypt(aead, iv, ct_tag, aad) == msg
    else:
        with pytest.raises(SealError):
            seal._decrypt(aead, iv, ct_tag, aad)


@given(st.binary(max_size=200))
def test_round_trip(plaintext: bytes) -> None:
    sealed = seal.seal(KEY, plaintext, CTX)
    assert len(sealed) == len(plaintext) + seal.OVERHEAD
    assert seal.unseal(KEY, sealed, CTX) == plaintext
    assert seal.unseal(KEY, bytearray(sealed), CTX) == plaintext


def test_nonces_are_fresh() -> None:
    assert seal.seal(KEY, b"same", CTX) != seal.seal(KEY, b"same", CTX)


@given(st.binary(max_size=64), st.data())
def test_any_flipped_bit_is_a_seal_error(plaintext: bytes, data: st.DataObject) -> None:
    sealed = bytearray(seal.seal(KEY, plaintext, CTX))
    bit = data.draw(st.integers(0, 8 * len(sealed) - 1))
    sealed[bit // 8] ^= 1 << (bit % 8)
    with pytest.raises(SealError):
        seal.unseal(KEY, bytes(sealed), CTX)


@given(st.binary(max_size=64), st.data())
def test_truncated_or_extended_is_a_seal_error(plaintext: bytes, data: st.DataObject) -> None:
    sealed = seal.seal(KEY, plaintext, CTX)
    cut = data.draw(st.integers(0, len(sealed) - 1))
    with pytest.raises(SealError):
        seal.unseal(KEY, sealed[:cut], CTX)
    with pytest.raises(SealError):
        seal.unseal(KEY, sealed + data.draw(st.binary(min_size=1, max_size=4)), CTX)


@pytest.mark.parametrize(
    "other",
    [
        SealContext("st-marys", "aggregator", 8, "update"),
        SealContext("st-judes", "aggregator", 7, "update"),
        SealContext("st-marys", "validator", 7, "update"),
        SealContext("st-marys", "aggregator", 7, "share"),
        SealContext("aggregator", "st-marys", 7, "update"),
        # fields are length-prefixed, so shifting bytes between them changes the data
        SealContext("st-mary", "saggregator", 7, "update"),
    ],
)
def test_wrong_associated_data_is_a_seal_error(other: SealContext) -> None:
    sealed = seal.seal(KEY, b"secret update", CTX)
    with pytest.raises(SealError):
        seal.unseal(KEY, sealed, other)


def test_wrong_key_is_a_seal_error() -> None:
    sealed = seal.seal(KEY, b"secret update", CTX)
    with pytest.raises(SealError):
        seal.unseal(seal.generate_key(), sealed, CTX)


def test_argument_errors_are_not_seal_errors() -> None:
    with pytest.raises(InvalidArgument):
        seal.seal(bytes(16), b"x", CTX)
    with pytest.raises(InvalidArgumentType):
        seal.seal(KEY, "text", CTX)  # type: ignore[arg-type]
    with pytest.raises(InvalidArgumentType):
        seal.seal(KEY, b"x", ("a", "b", 1, "c"))  # type: ignore[arg-type]
    with pytest.raises(InvalidArgument):
        seal.seal(KEY, b"x", SealContext("a", "b", -1, "c"))
    with pytest.raises(InvalidArgumentType):
        seal.seal(KEY, b"x", SealContext("a", "b", True, "c"))
    with pytest.raises(InvalidArgumentType):
        seal.unseal(KEY, None, CTX)  # type: ignore[arg-type]


def test_version_byte_is_checked() -> None:
    sealed = bytearray(seal.seal(KEY, b"x", CTX))
    sealed[0] = 2
    with pytest.raises(SealError):
        seal.unseal(KEY, bytes(sealed), CTX)


def test_one_mebibyte() -> None:
    payload = bytes(range(256)) * 4096
    sealed = seal.seal(KEY, payload, CTX)
    assert seal.unseal(KEY, sealed, CTX) == payload
    tampered = bytearray(sealed)
    tampered[len(tampered) // 2] ^= 0x80
    with pytest.raises(SealError):
        seal.unseal(KEY, bytes(tampered), CTX)
