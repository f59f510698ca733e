"""X25519 key agreement and HKDF-SHA256: Wycheproof vectors, low-order rejection, pairwise seeds."""

from __future__ import annotations

import pytest
from _wycheproof import case_id, cases
from hypothesis import given
from hypothesis import strategies as st

from fedledger.crypto.agreement import AgreementKey, AgreementPublicKey, hkdf_sha256, pairwise_seed
from fedledger.errors import InvalidArgument, InvalidArgumentType, InvalidKey

X25519_CASES = list(cases("x25519_test.json"))
HKDF_CASES = list(cases("hkdf_sha256_test.json"))
ZERO = bytes(32)


@pytest.mark.parametrize("case", X25519_CASES, ids=case_id)
def test_x25519_wycheproof(case: tuple[dict, dict]) -> None:
    _, test = case
    private = AgreementKey.from_bytes(bytes.fromhex(test["private"]))
    public = bytes.fromhex(test["public"])
    shared = bytes.fromhex(test["shared"])
    if shared == ZERO:
        # Low-order public values: 'acceptable' to reject, and our rule rejects them.
        assert test["result"] == "acceptable"
        with pytest.raises(InvalidKey, match="low order"):
            private.exchange(public)
        assert AgreementPublicKey(public).is_low_order
        with pytest.raises(InvalidKey):
            AgreementPublicKey(public).check_registrable()
    else:
        assert test["result"] in ("valid", "acceptable")
        assert private.exchange(public) == shared
        assert private.exchange(AgreementPublicKey(public)) == shared


def test_x25519_low_order_cases_are_present() -> None:
    flagged = [t for _, t in X25519_CASES if "ZeroSharedSecret" in t["flags"]]
    assert len(flagged) >= 20
    assert all(bytes.fromhex(t["shared"]) == ZERO for t in flagged)


@pytest.mark.parametrize("case", HKDF_CASES, ids=case_id)
def test_hkdf_sha256_wycheproof(case: tuple[dict, dict]) -> None:
    _, test = case
    args = dict(salt=bytes.fromhex(test["salt"]), info=bytes.fromhex(test["info"]), length=test["size"])
    ikm = bytes.fromhex(test["ikm"])
    if test["result"] == "valid":
        assert hkdf_sha256(ikm, **args) == bytes.fromhex(test["okm"])
    else:
        with pytest.raises(InvalidArgument):
            hkdf_sha256(ikm, **args)


def test_hkdf_argument_errors() -> None:
    with pytest.raises(InvalidArgument):
        hkdf_sha256(b"k", salt=b"", info=b"", length=0)
    with pytest.raises(InvalidArgumentType):
        hkdf_sha256(b"k", salt=b"", info=b"", length=True)
    with pytest.raises(InvalidArgumentType):
        hkdf_sha256("k", salt=b"", info=b"", length=32)  # type: ignore[arg-type]


def test_public_key_round_trip_and_equality() -> None:
    key = AgreementKey.generate()
    again = AgreementKey.from_bytes(key.to_bytes())
    assert again.public_key == key.public_key
    assert hash(again.public_key) == hash(key.public_key)
    assert not key.public_key.is_low_order
    assert key.to_bytes().hex() not in repr(key)
    pem = key.to_pem("pw")
    assert AgreementKey.from_pem(pem, "pw").public_key == key.public_key
    with pytest.raises(InvalidKey):
        AgreementKey.from_pem(pem, "nope")
    with pytest.raises(InvalidArgument):
        AgreementPublicKey(bytes(31))


KEYS = [AgreementKey.from_bytes(bytes([i]) * 32) for i in range(1, 5)]


@given(st.integers(0, 3), st.integers(0, 3), st.binary(max_size=40), st.integers(1, 64))
def test_pairwise_seed_is_symmetric_and_bound(i: int, j: int, context: bytes, length: int) -> None:
    a, b = KEYS[i], KEYS[j]
    seed = pairwise_seed(a, b.public_key, context=context, length=length)
    assert len(seed) == length
    assert seed == pairwise_seed(b, a.public_key, context=context, length=length)
    # Binding: another context or another peer gives another seed. Short outputs collide by
    # chance (1/256 at one byte), so compare at a length where a collision means a bug.
    if length >= 8:
        assert seed != pairwise_seed(a, b.public_key, context=context + b"x", length=length)
        c = KEYS[(j + 1) % 4]
        if c.public_key != b.public_key:
            assert seed != pairwise_seed(a, c.public_key, context=context, length=length)


def test_pairwise_seed_rejects_low_order_peer() -> None:
    with pytest.raises(InvalidKey):
        pairwise_seed(KEYS[0], ZERO, context=b"r1")
    with pytest.raises(InvalidArgumentType):
        pairwise_seed(KEYS[0].to_bytes(), KEYS[1].public_key, context=b"r1")  # type: ignore[arg-type]
