"""Ed25519 signing and the one verification rule, single and batched.

The oracle for every verdict and reason is a per-item loop over ``cryptography``'s verify
(OpenSSL, a different implementation from the kernel's libsodium) plus the rule's checks
(tests/reference/ed25519_ref.py), and on the Wycheproof vectors also the plain-Python
RFC 8032 verifier of that module. libsodium's own verdict, without the kernel's checks in
front, is asserted equal to the rule's: the checks restate libsodium's, they add nothing.
"""

from __future__ import annotations

import hashlib
import os

import numpy as np
import pytest
from _wycheproof import case_id, cases
from cryptography.exceptions import InvalidSignature as CryptoInvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey
from hypothesis import given
from hypothesis import strategies as st
from reference import ed25519_ref as ref

import fedledger
from fedledger._ext import load
from fedledger.crypto import signing
from fedledger.crypto.signing import SigningKey, VerifyKey, message_id, verify, verify_batch
from fedledger.errors import InvalidArgument, InvalidArgumentType, InvalidKey, InvalidSignature

_k = load("_signing")
L = ref.L
SMALL_ORDER = sorted(ref.all_small_order_encodings())
SMALL_ORDER_SET = frozenset(SMALL_ORDER)
IDENTITY_ENC = (1).to_bytes(32, "little")
P = ref.P
#: Every encoding whose y (low 255 bits) is >= p: y = p + j for j in 0..18, either sign bit.
NON_CANONICAL_KEYS = sorted(((P + j) | (sign << 255)).to_bytes(32, "little") for j in range(19) for sign in (0, 1))

#: Kernel code -> the reason word the rule gives (None for valid).
REASON_OF_CODE = {
    _k.VALID: None,
    _k.BAD_LENGTH: "length",
    _k.NON_CANONICAL_S: "non-canonical-s",
    _k.SMALL_ORDER_KEY: "small-order-key",
    _k.NON_CANONICAL_KEY: "non-canonical-key",
    _k.SMALL_ORDER_R: "small-order-r",
    _k.BAD_KEY: "bad-key",
    _k.BAD_SIGNATURE: "mismatch",
}

ED25519_CASES = list(cases("ed25519_test.json"))


def crypto_verdict(pk: bytes, msg: bytes, sig: bytes) -> bool:
    """cryptography alone (OpenSSL), no fedledger rule."""
    try:
        Ed25519PublicKey.from_public_bytes(pk).verify(sig, msg)
    except (CryptoInvalidSignature, ValueError):
        return False
    return True


def oracle_reason(pk: bytes, msg: bytes, sig: bytes) -> str | None:
    """The fedledger rule, written independently over cryptography: the checks in order, then
    cryptography's verify; a refusal is "bad-key" if the key does not decode, else "mismatch"."""
    if len(sig) != 64:
        return "length"
    if not ref.scalar_is_canonical(sig[32:]):
        return "non-canonical-s"
    if pk in SMALL_ORDER_SET:
        return "small-order-key"
    if not ref.key_is_canonical(pk):
        return "non-canonical-key"
    if sig[:32] in SMALL_ORDER_SET:
        return "small-order-r"
    if crypto_verdict(pk, msg, sig):
        return None
    return "bad-key" if ref.decompress(pk) is None else "mismatch"


def oracle(pk: bytes, msg: bytes, sig: bytes) -> bool:
    return oracle_reason(pk, msg, sig) is None


def single_reason(pk: bytes, msg: bytes, sig: bytes) -> str | None:
    try:
        verify(pk, msg, sig)
    except InvalidSignature as exc:
        return exc.reason
    return None


def single_verdict(pk: bytes, msg: bytes, sig: bytes) -> bool:
    return single_reason(pk, msg, sig) is None


def batch_reasons(pks: list[bytes], msgs: list[bytes], sigs: list[bytes], threads: int) -> list[str | None]:
    """The kernel's reason for each item, straight from its codes."""
    out = np.empty(len(msgs), np.uint8)
    _k.verify_batch(b"".join(pks), tuple(msgs), tuple(sigs), out, threads)
    return [REASON_OF_CODE[int(code)] for code in out]


# --- Wycheproof -------------------------------------------------------------------------


def test_wycheproof_file_is_complete() -> None:
    assert len(ED25519_CASES) == 151
    assert {t["result"] for _, t in ED25519_CASES} == {"valid", "invalid"}


@pytest.mark.parametrize("case", ED25519_CASES, ids=case_id)
def test_wycheproof_single(case: tuple[dict, dict]) -> None:
    group, test = case
    pk = bytes.fromhex(group["publicKey"]["pk"])
    msg, sig = bytes.fromhex(test["msg"]), bytes.fromhex(test["sig"])
    expected = test["result"] == "valid"
    assert single_verdict(pk, msg, sig) is expected
    assert bool(verify_batch([pk], [msg], [sig])[0]) is expected
    assert ref.verify(pk, msg, sig) is expected  # the plain-Python oracle agrees with Wycheproof


def test_wycheproof_one_batch_equals_single_on_every_case() -> None:
    pks, msgs, sigs, expected = [], [], [], []
    for group, test in ED25519_CASES:
        pks.append(bytes.fromhex(group["publicKey"]["pk"]))
        msgs.append(bytes.fromhex(test["msg"]))
        sigs.append(bytes.fromhex(test["sig"]))
        expected.append(test["result"] == "valid")
    for threads in (1, 2):
        fedledger.set_num_threads(threads)
        try:
            batch = verify_batch(pks, msgs, sigs)
        finally:
            fedledger.set_num_threads(os.cpu_count() or 1)
        single = [single_verdict(*item) for item in zip(pks, msgs, sigs)]
        assert batch.tolist() == single == expected


def test_wycheproof_malleability_cases_fail_on_the_s_check() -> None:
    """Every SignatureMalleability case with S >= L is stopped by our own check, before libsodium."""
    seen = 0
    for group, test in ED25519_CASES:
        sig = bytes.fromhex(test["sig"])
        if len(sig) == 64 and not ref.scalar_is_canonical(sig[32:]):
            seen += 1
            with pytest.raises(InvalidSignature) as info:
                verify(bytes.fromhex(group["publicKey"]["pk"]), bytes.fromhex(test["msg"]), sig)
            assert info.value.reason == "non-canonical-s"
    assert seen >= 8


def test_wycheproof_reasons_equal_reference_and_libsodium() -> None:
    """Every case: the kernel's reason (batch, 1 and 2 threads) = the single path's = the
    plain-Python rule's = the cryptography-based oracle's; and on 64-byte signatures
    libsodium's bare verdict equals Wycheproof's, so the kernel's checks change no verdict."""
    pks = [bytes.fromhex(g["publicKey"]["pk"]) for g, _ in ED25519_CASES]
    msgs = [bytes.fromhex(t["msg"]) for _, t in ED25519_CASES]
    sigs = [bytes.fromhex(t["sig"]) for _, t in ED25519_CASES]
    expected = [ref.reason(*item) for item in zip(pks, msgs, sigs)]
    assert [r is None for r in expected] == [t["result"] == "valid" for _, t in ED25519_CASES]
    assert batch_reasons(pks, msgs, sigs, 1) == batch_reasons(pks, msgs, sigs, 2) == expected
    assert [single_reason(*item) for item in zip(pks, msgs, sigs)] == expected
    assert [oracle_reason(*item) for item in zip(pks, msgs, sigs)] == expected
    for (_, test), pk, msg, sig in zip(ED25519_CASES, pks, msgs, sigs):
        if len(sig) == 64:
            assert _k.libsodium_accepts(pk, msg, sig) is (test["result"] == "valid"), case_id((_, test))


def test_libsodium_version_is_the_one_the_rule_was_checked_against() -> None:
    major, minor, patch = (int(x) for x in _k.libsodium_version().split(".")[:3])
    assert (major, minor) == (1, 0) and patch >= 18


# --- the rule's two byte checks -----------------------------------------------------------


def test_small_order_blocklist_equals_reference() -> None:
    assert sorted(_k.small_order_encodings()) == SMALL_ORDER
    assert len(SMALL_ORDER) == 14
    assert all(ref.is_small_order(enc) for enc in SMALL_ORDER)


@given(st.binary(min_size=32, max_size=32))
def test_small_order_check_equals_reference(raw: bytes) -> None:
    assert VerifyKey(raw).is_small_order == ref.is_small_order(raw)


@pytest.mark.parametrize("enc", SMALL_ORDER, ids=lambda b: b.hex()[:8] + b.hex()[-2:])
def test_small_order_keys_never_verify(enc: bytes) -> None:
    # R = identity, S = 0 satisfies the cofactorless equation for the identity key and for
    # other small-order keys whenever [k]A is the identity: a signature on "any" message.
    sig = IDENTITY_ENC + bytes(32)
    for msg in (b"", b"pay 100", os.urandom(40)):
        with pytest.raises(InvalidSignature) as info:
            verify(enc, msg, sig)
        assert info.value.reason == "small-order-key"
        assert not verify_batch([enc], [msg], [sig])[0]
    with pytest.raises(InvalidKey):
        VerifyKey(enc).check_registrable()


def test_identity_key_forgery_is_accepted_by_plain_rfc8032_but_not_by_us() -> None:
    """Why the small-order rule exists: (A=identity, R=identity, S=0) verifies any message
    under the bare cofactorless equation."""
    sig = IDENTITY_ENC + bytes(32)
    k = int.from_bytes(hashlib.sha512(IDENTITY_ENC + IDENTITY_ENC + b"m").digest(), "little") % L
    a = ref.decompress(IDENTITY_ENC)
    assert a is not None
    assert ref.equal(ref.mul(0, ref.BASE), ref.add(a, ref.mul(k, a)))
    assert not single_verdict(IDENTITY_ENC, b"m", sig)


def test_identity_r_forgery_is_accepted_by_openssl_but_not_by_us() -> None:
    """Why the small-order-R check is in the rule: (R = identity, S = k·a) satisfies the
    cofactorless equation, cryptography (OpenSSL) accepts it, libsodium and we do not."""
    seed = hashlib.sha256(b"signer").digest()
    sk = SigningKey.from_bytes(seed)
    pk = sk.verify_key.to_bytes()
    for msg in (b"", b"pay 100", os.urandom(40)):
        sig = ref.identity_r_signature(seed, pk, msg)
        assert crypto_verdict(pk, msg, sig)  # plain RFC 8032 (OpenSSL) says valid
        assert ref.reason(pk, msg, sig) == oracle_reason(pk, msg, sig) == "small-order-r"
        assert single_reason(pk, msg, sig) == "small-order-r"
        assert not verify_batch([pk, pk], [msg, msg], [sig, sk.sign(msg)])[0]
        assert not _k.libsodium_accepts(pk, msg, sig)


@pytest.mark.parametrize("enc", SMALL_ORDER, ids=lambda b: b.hex()[:8] + b.hex()[-2:])
def test_small_order_r_is_rejected(enc: bytes) -> None:
    sk = KEYS[2]
    sig = sk.sign(b"m")
    forged = enc + sig[32:]
    assert single_reason(sk.verify_key.to_bytes(), b"m", forged) == "small-order-r"
    assert verify_batch([sk.verify_key] * 2, [b"m"] * 2, [forged, sig]).tolist() == [False, True]


@pytest.mark.parametrize("enc", NON_CANONICAL_KEYS, ids=lambda b: b.hex()[:2] + b.hex()[-2:])
def test_non_canonical_keys_are_rejected(enc: bytes) -> None:
    """y >= p: the four encodings of y = 0 and y = 1 that way are small order (checked first);
    the other 34 are rejected as non-canonical, whatever the signature."""
    assert not _k.key_is_canonical(enc) and not ref.key_is_canonical(enc)
    expected = "small-order-key" if enc in SMALL_ORDER_SET else "non-canonical-key"
    for sig in (IDENTITY_ENC + bytes(32), KEYS[0].sign(b"m")):
        assert single_reason(enc, b"m", sig) == expected
        assert batch_reasons([enc], [b"m"], [sig], 1) == [expected]
        assert not _k.libsodium_accepts(enc, b"m", sig)


@given(st.one_of(st.binary(min_size=32, max_size=32), st.sampled_from(NON_CANONICAL_KEYS)))
def test_key_canonical_check_equals_reference(raw: bytes) -> None:
    assert _k.key_is_canonical(raw) == ref.key_is_canonical(raw)


def test_key_canonical_check_at_the_boundary() -> None:
    for y in (0, 1, P - 2, P - 1, P, P + 1, 2**255 - 1):
        for sign in (0, 1):
            raw = (y | (sign << 255)).to_bytes(32, "little")
            assert _k.key_is_canonical(raw) == (y < P) == ref.key_is_canonical(raw)


def test_s_plus_l_is_rejected_in_both_paths() -> None:
    sk = SigningKey.generate()
    msg = b"transfer"
    sig = sk.sign(msg)
    s = int.from_bytes(sig[32:], "little")
    forged = sig[:32] + (s + L).to_bytes(32, "little")
    with pytest.raises(InvalidSignature) as info:
        verify(sk.verify_key, msg, forged)
    assert info.value.reason == "non-canonical-s"
    assert verify_batch([sk.verify_key, sk.verify_key], [msg, msg], [sig, forged]).tolist() == [True, False]


@given(st.integers(min_value=0, max_value=2**256 - 1))
def test_scalar_check_equals_reference(s: int) -> None:
    raw = s.to_bytes(32, "little")
    assert _k.scalar_is_canonical(raw) == (s < L)


def test_scalar_check_at_the_boundary() -> None:
    for s in (0, 1, L - 1, L, L + 1, 2**253 - 1, 2**255, 2**256 - 1):
        assert _k.scalar_is_canonical(s.to_bytes(32, "little")) == (s < L)


# --- random batches with random corruptions -------------------------------------------------

SEEDS = [hashlib.sha256(bytes([i])).digest() for i in range(4)]
KEYS = [SigningKey.from_bytes(seed) for seed in SEEDS]
CORRUPTIONS = [
    "none",
    "flip_msg",
    "flip_sig",
    "flip_key",
    "s_plus_l",
    "swap_key",
    "truncate",
    "small_order",
    "non_canonical_key",
    "small_order_r",
    "identity_r",
]
#: Corruptions after which the item must never verify.
ALWAYS_FAIL = {
    "flip_sig",
    "flip_key",
    "s_plus_l",
    "swap_key",
    "truncate",
    "small_order",
    "non_canonical_key",
    "small_order_r",
    "identity_r",
}


@st.composite
def items(draw: st.DrawFn) -> tuple[bytes, bytes, bytes, str]:
    key = KEYS[draw(st.integers(0, len(KEYS) - 1))]
    msg = draw(st.binary(max_size=300))
    sig = key.sign(msg)
    pk = key.verify_key.to_bytes()
    kind = draw(st.sampled_from(CORRUPTIONS))
    bit = draw(st.integers(0, 10_000))
    if kind == "flip_msg" and msg:
        i = bit % (8 * len(msg))
        msg = bytearray(msg)
        msg[i // 8] ^= 1 << (i % 8)
        msg = bytes(msg)
    elif kind == "flip_sig":
        i = bit % 512
        sig = bytearray(sig)
        sig[i // 8] ^= 1 << (i % 8)
        sig = bytes(sig)
    elif kind == "flip_key":
        i = bit % 256
        pk = bytearray(pk)
        pk[i // 8] ^= 1 << (i % 8)
        pk = bytes(pk)
    elif kind == "s_plus_l":
        sig = sig[:32] + (int.from_bytes(sig[32:], "little") + L).to_bytes(32, "little")
    elif kind == "swap_key":
        other = KEYS[(KEYS.index(key) + 1 + bit % (len(KEYS) - 1)) % len(KEYS)]
        pk = other.verify_key.to_bytes()
    elif kind == "truncate":
        sig = sig[: bit % 64]
    elif kind == "small_order":
        pk = SMALL_ORDER[bit % len(SMALL_ORDER)]
    elif kind == "non_canonical_key":
        pk = NON_CANONICAL_KEYS[bit % len(NON_CANONICAL_KEYS)]
    elif kind == "small_order_r":
        sig = SMALL_ORDER[bit % len(SMALL_ORDER)] + sig[32:]
    elif kind == "identity_r":
        sig = ref.identity_r_signature(SEEDS[KEYS.index(key)], pk, msg)
    return pk, msg, sig, kind


@given(st.lists(items(), min_size=1, max_size=40))
def test_batch_equals_per_item_loop(batch: list[tuple[bytes, bytes, bytes, str]]) -> None:
    pks, msgs, sigs, kinds = (list(x) for x in zip(*batch))
    got = verify_batch(pks, msgs, sigs)
    assert got.dtype == np.bool_ and got.shape == (len(batch),)
    reasons = [oracle_reason(pk, m, s) for pk, m, s in zip(pks, msgs, sigs)]
    expected = [r is None for r in reasons]
    assert got.tolist() == expected
    assert [single_reason(pk, m, s) for pk, m, s in zip(pks, msgs, sigs)] == reasons
    assert batch_reasons(pks, msgs, sigs, 2) == reasons
    # libsodium alone gives the same verdicts: the kernel's checks restate its own.
    assert [len(s) == 64 and _k.libsodium_accepts(pk, m, s) for pk, m, s in zip(pks, msgs, sigs)] == expected
    # The corruptions that must always fail do fail, and intact items pass.
    for ok, kind, msg in zip(got, kinds, msgs):
        if kind == "none":
            assert ok
        elif kind in ALWAYS_FAIL:
            assert not ok
        elif kind == "flip_msg" and msg:
            assert not ok
    # VerifyKey objects and raw bytes are interchangeable.
    assert verify_batch([VerifyKey(pk) for pk in pks], msgs, sigs).tolist() == expected


def test_large_batch_threads_agree() -> None:
    rng = np.random.default_rng(7)
    n = 700
    pks, msgs, sigs = [], [], []
    for i in range(n):
        key = KEYS[i % len(KEYS)]
        msg = rng.bytes(int(rng.integers(0, 400)))
        sig = key.sign(msg)
        if i % 5 == 1:
            msg = msg + b"!"
        if i % 7 == 3:
            sig = sig[:32] + (int.from_bytes(sig[32:], "little") + L).to_bytes(32, "little")
        pks.append(key.verify_key.to_bytes())
        msgs.append(msg)
        sigs.append(sig)
    expected = [oracle(*item) for item in zip(pks, msgs, sigs)]
    results = []
    for threads in (1, 2, 3):
        fedledger.set_num_threads(threads)
        try:
            results.append(verify_batch(np.frombuffer(b"".join(pks), np.uint8).reshape(n, 32), msgs, sigs).tolist())
        finally:
            fedledger.set_num_threads(os.cpu_count() or 1)
    assert results[0] == results[1] == results[2] == expected
    assert 0 < sum(expected) < n


# --- typed errors ---------------------------------------------------------------------------


def test_empty_batch_is_a_typed_error() -> None:
    with pytest.raises(InvalidArgument, match="empty batch"):
        verify_batch([], [], [])
    with pytest.raises(InvalidArgument, match="empty batch"):
        verify_batch(np.empty((0, 32), np.uint8), (), ())


def test_batch_of_one_is_the_single_path() -> None:
    sk = KEYS[0]
    sig = sk.sign(b"x")
    assert verify_batch([sk.verify_key], [b"x"], [sig]).tolist() == [True]
    assert verify_batch([sk.verify_key], [b"y"], [sig]).tolist() == [False]


@given(st.integers(0, 4), st.integers(0, 4), st.integers(0, 4))
def test_mismatched_lengths_are_a_typed_error(a: int, b: int, c: int) -> None:
    sig = KEYS[0].sign(b"m")
    pks, msgs, sigs = [KEYS[0].verify_key] * a, [b"m"] * b, [sig] * c
    if a == b == c:
        if a == 0:
            with pytest.raises(InvalidArgument):
                verify_batch(pks, msgs, sigs)
        else:
            assert verify_batch(pks, msgs, sigs).all()
    else:
        with pytest.raises(InvalidArgument, match="batch lengths differ"):
            verify_batch(pks, msgs, sigs)


def test_bad_argument_types() -> None:
    sk = KEYS[0]
    sig = sk.sign(b"m")
    with pytest.raises(InvalidArgumentType, match=r"messages\[1\]"):
        verify_batch([sk.verify_key] * 2, [b"m", "m"], [sig, sig])
    with pytest.raises(InvalidArgumentType, match=r"signatures\[0\]"):
        verify_batch([sk.verify_key], [b"m"], [None])
    with pytest.raises(InvalidArgumentType, match="single bytes"):
        verify_batch(sk.verify_key.to_bytes(), [b"m"], [sig])
    with pytest.raises(InvalidArgumentType):
        verify_batch([sk.verify_key], b"m", [sig])
    with pytest.raises(InvalidArgumentType):
        verify_batch(3, [b"m"], [sig])  # type: ignore[arg-type]
    with pytest.raises(InvalidArgument, match=r"public_keys\[0\]"):
        verify_batch([b"short"], [b"m"], [sig])
    with pytest.raises(InvalidArgument):
        verify_batch(np.zeros((1, 31), np.uint8), [b"m"], [sig])
    with pytest.raises(InvalidArgument):
        verify(b"short", b"m", sig)
    with pytest.raises(InvalidArgumentType):
        verify(sk.verify_key, "m", sig)  # type: ignore[arg-type]
    # bytes-like items are accepted
    assert verify_batch([bytearray(sk.verify_key.to_bytes())], [memoryview(b"m")], [bytearray(sig)]).all()


def test_wrong_length_signature_is_invalid_not_an_argument_error() -> None:
    sk = KEYS[1]
    sig = sk.sign(b"m")
    for bad in (b"", sig[:63], sig + b"\x00"):
        with pytest.raises(InvalidSignature) as info:
            verify(sk.verify_key, b"m", bad)
        assert info.value.reason == "length"
    assert verify_batch([sk.verify_key] * 3, [b"m"] * 3, [sig[:63], sig, sig + b"\0"]).tolist() == [False, True, False]


# --- keys -----------------------------------------------------------------------------------


def test_rfc8032_test_1() -> None:
    seed = bytes.fromhex("9d61b19deffd5a60ba844af492ec2cc44449c5697b326919703bac031cae7f60")
    sk = SigningKey.from_bytes(seed)
    assert sk.verify_key.to_bytes().hex() == "d75a980182b10ab7d54bfed3c964073a0ee172f3daa62325af021a68f707511a"
    sig = sk.sign(b"")
    assert sig.hex() == (
        "e5564300c360ac729086e2cc806e828a84877f1eb8e5d974d873e065224901555"
        "fb8821590a33bacc61e39701cf9b46bd25bf5f0595bbe24655141438e7a100b"
    )
    verify(sk.verify_key, b"", sig)
    assert sk.to_bytes() == seed


def test_pem_round_trips() -> None:
    sk = SigningKey.generate()
    pem = sk.to_pem("correct horse")
    assert pem.startswith(b"-----BEGIN ENCRYPTED PRIVATE KEY-----")
    again = SigningKey.from_pem(pem, b"correct horse")
    assert again.verify_key == sk.verify_key and again.to_bytes() == sk.to_bytes()
    with pytest.raises(InvalidKey):
        SigningKey.from_pem(pem, "wrong")
    with pytest.raises(InvalidKey):
        SigningKey.from_pem(b"not a pem", "pw")
    with pytest.raises(InvalidArgument):
        sk.to_pem("")
    vk = VerifyKey.from_pem(sk.verify_key.to_pem())
    assert vk == sk.verify_key and hash(vk) == hash(sk.verify_key)
    with pytest.raises(InvalidKey):
        VerifyKey.from_pem(b"junk")


def test_secrets_stay_out_of_repr() -> None:
    sk = SigningKey.generate()
    assert sk.to_bytes().hex() not in repr(sk)
    assert sk.verify_key.to_bytes().hex() in repr(sk)


def test_verify_key_validation() -> None:
    with pytest.raises(InvalidArgument):
        VerifyKey(bytes(31))
    with pytest.raises(InvalidArgumentType):
        VerifyKey("00" * 32)  # type: ignore[arg-type]
    with pytest.raises(InvalidArgument):
        SigningKey.from_bytes(bytes(31))
    assert bytes(VerifyKey(bytes(range(32)))) == bytes(range(32))


def test_message_id_hashes_the_body_not_the_signature() -> None:
    body = b"canonical transaction body"
    assert message_id(body) == hashlib.sha256(body).digest()
    sig_a, sig_b = KEYS[0].sign(body), KEYS[1].sign(body)
    assert sig_a != sig_b  # two signatures, one id
    assert message_id(body) != message_id(body + b"\0")
    with pytest.raises(InvalidArgumentType):
        message_id("text")  # type: ignore[arg-type]


def test_signing_is_listed_in_build_info() -> None:
    assert "_signing" in fedledger.build_info()["modules"]
    assert "verify_batch" in signing.__all__
