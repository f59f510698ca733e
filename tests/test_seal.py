"""AES-256-GCM sealing: Wycheproof vectors through the module's own encrypt/decrypt, and every
kind of tampering gives SealError and no plaintext."""

from __future__ import annotations

import pytest
from _wycheproof import case_id, cases
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from hypothesis import given
from hypothesis import strategies as st

from fedledger.crypto import seal
from fedledger.crypto.seal import SealContext
from fedledger.errors import InvalidArgument, InvalidArgumentType, SealError

GCM_CASES = [
    c for c in cases("aes_gcm_test.json") if c[0]["keySize"] == 256 and c[0]["ivSize"] == 96 and c[0]["tagSize"] == 128
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


# -- records: large messages sealed in parallel ----------------------------------------------


@pytest.mark.parametrize("case", GCM_CASES, ids=case_id)
def test_record_kernel_wycheproof(case: tuple[dict, dict]) -> None:
    # One record, no index in the associated data: plain AES-256-GCM with the vector's IV.
    _, test = case
    key, iv, aad = bytes.fromhex(test["key"]), bytes.fromhex(test["iv"]), bytes.fromhex(test["aad"])
    msg, ct_tag = bytes.fromhex(test["msg"]), bytes.fromhex(test["ct"] + test["tag"])
    record = max(16, len(msg))
    if test["result"] == "valid":
        rc, out = seal._k.seal_records(key, iv, aad, False, msg, record, b"", 1)
        assert rc == seal._k.OK and out == ct_tag
    buf = bytearray(len(msg))
    rc = seal._k.open_records(key, iv, aad, False, ct_tag, record, buf, 1)
    if test["result"] == "valid":
        assert rc == seal._k.OK and bytes(buf) == msg
    else:
        assert rc == seal._k.ERR_TAG and buf == bytearray(len(msg))


def _peer_records(key: bytes, sealed: bytes, plaintext: bytes, context: SealContext) -> bytes:
    """Re-seal with pyca/cryptography, record by record, from the header's nonce."""
    header = sealed[:25]
    base, record = header[1:13], int.from_bytes(header[13:17], "big")
    out = [header]
    for i, lo in enumerate(range(0, max(1, len(plaintext)), record)):
        nonce = base[:4] + (int.from_bytes(base[4:], "big") ^ i).to_bytes(8, "big")
        aad = context.associated_data() + header + i.to_bytes(8, "big")
        out.append(AESGCM(key).encrypt(nonce, plaintext[lo : lo + record], aad))
    return b"".join(out)


@given(
    length=st.sampled_from([0, 1, 15, 16, 17, 100, 4095, 4096, 4097, 20_000]),
    record=st.sampled_from([16, 17, 1000, 4096, 1 << 18]),
    threads=st.sampled_from([1, 2, 3]),
)
def test_records_equal_cryptography_record_by_record(length: int, record: int, threads: int) -> None:
    import fedledger

    plaintext = bytes((i * 7 + length) % 256 for i in range(length))
    fedledger.set_num_threads(threads)
    try:
        sealed = seal.seal_records(KEY, plaintext, CTX, record_size=record)
    finally:
        fedledger.set_num_threads(2)
    assert len(sealed) == seal.sealed_records_size(length, record)
    assert sealed == _peer_records(KEY, sealed, plaintext, CTX)
    assert seal.unseal_records(KEY, sealed, CTX) == plaintext


@given(st.binary(max_size=300), st.data())
def test_records_any_flipped_bit_is_a_seal_error_and_leaves_zeros(plaintext: bytes, data: st.DataObject) -> None:
    sealed = bytearray(seal.seal_records(KEY, plaintext, CTX, record_size=64))
    bit = data.draw(st.integers(0, 8 * len(sealed) - 1))
    sealed[bit // 8] ^= 1 << (bit % 8)
    out = bytearray(b"\xaa" * len(plaintext))
    with pytest.raises(SealError):
        seal.unseal_records_into(KEY, bytes(sealed), CTX, out)
    assert out == bytearray(len(plaintext))  # never partial plaintext (nor stale bytes)


@given(st.binary(min_size=1, max_size=300), st.data())
def test_records_truncated_extended_or_reordered_is_a_seal_error(plaintext: bytes, data: st.DataObject) -> None:
    sealed = seal.seal_records(KEY, plaintext, CTX, record_size=32)
    cut = data.draw(st.integers(0, len(sealed) - 1))
    with pytest.raises(SealError):
        seal.unseal_records(KEY, sealed[:cut], CTX)
    with pytest.raises(SealError):
        seal.unseal_records(KEY, sealed + data.draw(st.binary(min_size=1, max_size=48)), CTX)
    if len(plaintext) >= 64:  # swap the first two (full, 48-byte) records
        body = sealed[25:]
        with pytest.raises(SealError):
            seal.unseal_records(KEY, sealed[:25] + body[48:96] + body[:48] + body[96:], CTX)


def test_records_header_fields_are_bound() -> None:
    sealed = seal.seal_records(KEY, bytes(1000), CTX, record_size=100)
    for offset, value in ((0, 1), (0, 3), (16, 99), (24, 200)):  # version, record size, length
        bad = bytearray(sealed)
        bad[offset] = value
        with pytest.raises(SealError):
            seal.unseal_records(KEY, bytes(bad), CTX)
    with pytest.raises(SealError):
        seal.unseal_records(KEY, sealed, SealContext("st-marys", "aggregator", 8, "update"))
    with pytest.raises(SealError):
        seal.unseal_records(seal.generate_key(), sealed, CTX)
    # a record of one message does not open in another, even under the same key and context
    other = seal.seal_records(KEY, bytes(1000), CTX, record_size=100)
    with pytest.raises(SealError):
        seal.unseal_records(KEY, sealed[:25] + other[25:], CTX)


def test_records_argument_errors() -> None:
    sealed = seal.seal_records(KEY, b"abc", CTX)
    with pytest.raises(SealError):
        seal.unseal_records_into(KEY, sealed, CTX, bytearray(4))  # wrong length
    with pytest.raises(InvalidArgument):
        seal.unseal_records_into(KEY, sealed, CTX, memoryview(b"xyz"))  # read-only
    with pytest.raises(InvalidArgument):
        seal.seal_records(KEY, b"x", CTX, record_size=8)
    with pytest.raises(InvalidArgument):
        seal.seal_records(bytes(16), b"x", CTX)
    with pytest.raises(InvalidArgumentType):
        seal.seal_records(KEY, "text", CTX)  # type: ignore[arg-type]
    assert seal.seal_records(KEY, b"abc", CTX) != sealed  # fresh nonces


def test_records_of_four_megabytes_match_cryptography() -> None:
    payload = bytes(range(256)) * 15_625  # 4,000,000 bytes, 16 records of 256 KiB (the last short)
    sealed = seal.seal_records(KEY, payload, CTX)
    assert sealed == _peer_records(KEY, sealed, payload, CTX)
    out = bytearray(len(payload))
    seal.unseal_records_into(KEY, sealed, CTX, out)
    assert out == payload
