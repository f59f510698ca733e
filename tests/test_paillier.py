"""fedledger.crypto.paillier: kernel vs plain-int reference, packing round trips, phe interop,
validation failures and threshold custody."""

from __future__ import annotations

import json
import math
import os

import numpy as np
import phe
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from reference import paillier as ref

from fedledger.crypto import paillier as P
from fedledger.errors import (
    DecryptionError,
    FedLedgerError,
    InvalidArgument,
    InvalidArgumentType,
    InvalidCiphertext,
    KeyMismatch,
    LayoutMismatch,
    PaillierOverflow,
)

HYP = settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])


# Keygen is the slow part: a few keys per session, small ones marked insecure.
@pytest.fixture(scope="session")
def keys1024() -> tuple[P.PublicKey, P.PrivateKey]:
    return P.generate_keypair(1024, insecure_for_tests=True)


@pytest.fixture(scope="session")
def other1024() -> tuple[P.PublicKey, P.PrivateKey]:
    return P.generate_keypair(1024, insecure_for_tests=True)


@pytest.fixture(scope="session")
def keys512() -> tuple[P.PublicKey, P.PrivateKey]:
    return P.generate_keypair(512, insecure_for_tests=True)


@pytest.fixture(scope="session")
def keys2048() -> tuple[P.PublicKey, P.PrivateKey]:
    return P.generate_keypair(2048)


@pytest.fixture(scope="session")
def safe512() -> tuple[P.PublicKey, P.PrivateKey]:
    return P.generate_keypair(512, insecure_for_tests=True, safe_primes=True)


def _layout(pk: P.PublicKey, count: int, bits: int = 16, max_summands: int = 100) -> P.PackingLayout:
    return P.PackingLayout.create(pk.bits, count, bits=bits, clip=1.0, max_summands=max_summands)


# ---------------------------------------------------------------------------------------
# Layout arithmetic


def test_layout_for_2048_bit_key_16_bits_100_clients() -> None:
    lay = P.PackingLayout.create(2048, 1000, bits=16, clip=1.0, max_summands=100)
    assert lay.slot_bits == 23  # 100 * 65534 < 2^23
    assert lay.slots == 2047 // 23 - 1 == 88
    assert lay.num_ciphertexts == math.ceil(1000 / 87)
    ref_lay = ref.Layout(2048, 1000, 16, 1.0, 100)
    assert (lay.slot_bits, lay.slots) == (ref_lay.slot_bits, ref_lay.slots)


@given(st.integers(2, 32), st.integers(1, 10**6))
def test_layout_slot_width_is_minimal(bits: int, max_summands: int) -> None:
    lay = P.PackingLayout.create(4096, 1, bits=bits, clip=1.0, max_summands=max_summands)
    worst = max_summands * (2**bits - 1)  # the largest slot sum: every summand at +clip
    assert worst < 2**lay.slot_bits
    assert worst >= 2 ** (lay.slot_bits - 1)
    assert lay.slot_bits == ref.Layout(4096, 1, bits, 1.0, max_summands).slot_bits


# ---------------------------------------------------------------------------------------
# Kernel against the plain-int reference


@HYP
@given(data=st.data())
def test_kernel_matches_reference_bit_for_bit(keys512: tuple[P.PublicKey, P.PrivateKey], data: st.DataObject) -> None:
    pk, sk = keys512
    bits = data.draw(st.sampled_from([4, 8, 16]))
    max_summands = data.draw(st.integers(1, 50))
    lay = _layout(pk, 1, bits, max_summands)
    count = data.draw(st.integers(0, 3 * lay.slots + 1))
    qmax = 2 ** (bits - 1) - 1
    q = data.draw(st.lists(st.integers(-qmax, qmax), min_size=count, max_size=count))
    rows = _layout(pk, count, bits, max_summands).num_ciphertexts
    xs = np.frombuffer(data.draw(st.binary(min_size=rows * pk.x_bytes, max_size=rows * pk.x_bytes)), np.uint8)
    xs = xs.reshape(rows, pk.x_bytes)
    ev = pk._encrypt_with_randomness(np.array(q, dtype=np.int64), xs, bits=bits, max_summands=max_summands)
    rlay = ref.Layout(pk.bits, count, bits, 1.0, max_summands)
    plains = ref.pack(q, rlay)
    want = [ref.encrypt(pk.n, m, int.from_bytes(xs[r].tobytes(), "big")) for r, m in enumerate(plains)]
    got = [int.from_bytes(row.tobytes(), "big") for row in ev.ciphertexts]
    assert got == want
    # CRT decryption in the kernel equals textbook decryption
    assert [sk.raw_decrypt(c) for c in got] == [ref.decrypt(sk.p, sk.q, c) for c in got] == plains
    assert sk.decrypt_quantized(ev).tolist() == ref.unpack(plains, rlay, 1) == q


def test_kernel_decrypts_textbook_ciphertexts(keys512: tuple[P.PublicKey, P.PrivateKey]) -> None:
    pk, sk = keys512
    for m in (0, 1, pk.n - 1, 12345678901234567890):
        r = 1 + int.from_bytes(os.urandom(64), "big") % (pk.n - 1)
        assert sk.raw_decrypt(ref.encrypt_textbook(pk.n, m, r)) == m


def test_randomness_is_fresh_and_thread_count_does_not_matter(keys512: tuple[P.PublicKey, P.PrivateKey]) -> None:
    import fedledger
    from fedledger.crypto import _threads

    before = _threads.num_threads()
    pk, sk = keys512
    q = np.arange(-50, 50, dtype=np.int64)
    a, b = pk.encrypt_quantized(q), pk.encrypt_quantized(q)
    assert not np.array_equal(a.ciphertexts, b.ciphertexts)
    rows = a.num_ciphertexts
    xs = np.frombuffer(os.urandom(rows * pk.x_bytes), np.uint8).reshape(rows, pk.x_bytes)
    outs = []
    for threads in (1, 2, 3):
        fedledger.set_num_threads(threads)
        try:
            outs.append(pk._encrypt_with_randomness(q, xs).ciphertexts.copy())
        finally:
            fedledger.set_num_threads(before)
    assert all(np.array_equal(outs[0], o) for o in outs)


# ---------------------------------------------------------------------------------------
# Round trips and sums


def _lengths(pk: P.PublicKey, bits: int, max_summands: int) -> st.SearchStrategy[int]:
    s = _layout(pk, 1, bits, max_summands).slots
    return st.sampled_from([0, 1, s - 1, s, s + 1, 2 * s + 1]) | st.integers(0, 3 * s)


@HYP
@given(data=st.data())
def test_sums_of_1_to_max_summands_vectors_equal_numpy_sum(
    keys1024: tuple[P.PublicKey, P.PrivateKey], data: st.DataObject
) -> None:
    pk, sk = keys1024
    bits = data.draw(st.sampled_from([2, 8, 16, 24]))
    max_summands = data.draw(st.integers(1, 12))
    count = data.draw(_lengths(pk, bits, max_summands))
    k = data.draw(st.integers(1, max_summands))
    qmax = 2 ** (bits - 1) - 1
    ints = st.integers(-qmax, qmax) | st.sampled_from([-qmax, qmax, 0, -1])
    vecs = [np.array(data.draw(st.lists(ints, min_size=count, max_size=count)), dtype=np.int64) for _ in range(k)]
    encs = [pk.encrypt_quantized(v, bits=bits, max_summands=max_summands) for v in vecs]
    total = P.sum_vectors(encs)
    assert total.weight == k
    expect = np.sum(vecs, axis=0) if count else np.zeros(0, np.int64)
    assert np.array_equal(sk.decrypt_quantized(total), expect)
    # pairwise + and builtin sum agree with the one-pass sum
    pair = encs[0]
    for e in encs[1:]:
        pair = pair + e
    assert np.array_equal(sk.decrypt_quantized(pair), expect)
    assert np.array_equal(sk.decrypt_quantized(sum(encs)), expect)  # type: ignore[arg-type]
    assert np.array_equal(sk.decrypt_quantized(P.EncryptedVector.sum(encs)), expect)


@HYP
@given(data=st.data())
def test_float_round_trip_with_clipping(keys1024: tuple[P.PublicKey, P.PrivateKey], data: st.DataObject) -> None:
    pk, sk = keys1024
    clip = data.draw(st.sampled_from([0.5, 1.0, 3.0]))
    count = data.draw(_lengths(pk, 16, 5))
    finite = st.floats(-10, 10, allow_nan=False) | st.sampled_from([clip, -clip, 2 * clip, -2 * clip, 0.0])
    k = data.draw(st.integers(1, 5))
    xs = [np.array(data.draw(st.lists(finite, min_size=count, max_size=count)), dtype=np.float64) for _ in range(k)]
    encs = [pk.encrypt_vector(x, bits=16, clip=clip, max_summands=5) for x in xs]
    lay = encs[0].layout
    q = np.sum([lay.quantize(x) for x in xs], axis=0) if count else np.zeros(0, np.int64)
    # the reference quantizer agrees with the layout's
    for x in xs:
        assert lay.quantize(x).tolist() == ref.quantize(x.tolist(), ref.Layout(pk.bits, count, 16, clip, 5))
    total = P.sum_vectors(encs)
    assert np.array_equal(sk.decrypt_quantized(total), q)
    got = sk.decrypt_vector(total)
    assert np.array_equal(got, q / lay.scale)
    if count:
        clipped = np.sum([np.clip(x, -clip, clip) for x in xs], axis=0)
        assert np.max(np.abs(got - clipped)) <= k * 0.5 / lay.scale + 1e-12


def test_clip_bounds_and_extremes_exact(keys1024: tuple[P.PublicKey, P.PrivateKey]) -> None:
    pk, sk = keys1024
    x = np.array([1.0, -1.0, 5.0, -5.0, 0.0, 1e-9, -1e-9])
    ev = pk.encrypt_vector(x, bits=16, clip=1.0, max_summands=3)
    assert sk.decrypt_quantized(ev).tolist() == [32767, -32767, 32767, -32767, 0, 0, 0]
    assert sk.decrypt_quantized(ev + ev + ev).tolist() == [3 * 32767, -3 * 32767, 3 * 32767, -3 * 32767, 0, 0, 0]


def test_full_headroom_100_summands(keys1024: tuple[P.PublicKey, P.PrivateKey]) -> None:
    pk, sk = keys1024
    lay = _layout(pk, 1)
    count = lay.slots + 1
    rng = np.random.default_rng(5)
    vecs = [rng.choice([-32767, 32767], size=count).astype(np.int64) for _ in range(99)]
    vecs.append(np.full(count, 32767, dtype=np.int64))
    encs = [pk.encrypt_quantized(v) for v in vecs]
    total = P.sum_vectors(encs)
    assert total.weight == 100
    assert np.array_equal(sk.decrypt_quantized(total), np.sum(vecs, axis=0))
    with pytest.raises(PaillierOverflow, match="max_summands=100"):
        total + encs[0]


def test_scalar_multiplication(keys1024: tuple[P.PublicKey, P.PrivateKey]) -> None:
    pk, sk = keys1024
    q = np.array([-5, 0, 7, 32767], dtype=np.int64)
    ev = pk.encrypt_quantized(q, max_summands=10)
    assert np.array_equal(sk.decrypt_quantized(3 * ev), 3 * q)
    assert np.array_equal(sk.decrypt_quantized(ev * 2 + ev), 3 * q)
    assert (ev * 10).weight == 10
    with pytest.raises(PaillierOverflow, match="weight 11"):
        ev * 11
    with pytest.raises(InvalidArgument, match="positive integer"):
        ev * 0
    with pytest.raises(InvalidArgument, match="positive integer"):
        ev * -2
    with pytest.raises(TypeError):
        ev * 1.5  # type: ignore[operator]


def test_bytes_round_trip(keys1024: tuple[P.PublicKey, P.PrivateKey]) -> None:
    pk, sk = keys1024
    ev = pk.encrypt_vector(np.linspace(-1, 1, 500), max_summands=7) * 2
    raw = ev.to_bytes()
    back = P.EncryptedVector.from_bytes(raw, pk, ev.layout)
    assert back.weight == 2 and back.layout == ev.layout
    assert np.array_equal(back.ciphertexts, ev.ciphertexts)
    assert ev.nbytes == ev.num_ciphertexts * pk.c_bytes
    assert len(raw) == ev.nbytes + len(raw) - ev.nbytes  # header is small:
    assert len(raw) - ev.nbytes < 64 + pk.n_bytes
    assert np.array_equal(sk.decrypt_quantized(back), sk.decrypt_quantized(ev))


def test_empty_vector_and_pickle(keys1024: tuple[P.PublicKey, P.PrivateKey]) -> None:
    import pickle

    pk, sk = keys1024
    empty = pk.encrypt_vector([])
    assert empty.num_ciphertexts == 0 and empty.nbytes == 0
    back = P.EncryptedVector.from_bytes(empty.to_bytes(), pk, empty.layout)
    assert sk.decrypt_vector(back + empty * 2).shape == (0,)
    ev = pk.encrypt_vector([0.5, -0.5, 0.25]) * 3
    pk2, sk2, ev2 = pickle.loads(pickle.dumps((pk, sk, ev)))
    assert pk2 == pk and sk2 == sk and ev2.weight == 3
    assert np.array_equal(sk2.decrypt_quantized(ev2 + ev), 2 * sk.decrypt_quantized(ev))


@HYP
@given(data=st.data())
def test_corrupted_serialisation_never_yields_wrong_values(
    keys512: tuple[P.PublicKey, P.PrivateKey], data: st.DataObject
) -> None:
    pk, sk = keys512
    ev = pk.encrypt_quantized(np.arange(-40, 40, dtype=np.int64), max_summands=5) * 2
    raw = bytearray(ev.to_bytes())
    header = len(raw) - ev.nbytes
    pos = data.draw(st.integers(0, len(raw) - 1) | st.integers(0, header - 1))
    raw[pos] ^= data.draw(st.integers(1, 255))
    try:
        got = sk.decrypt_vector(P.EncryptedVector.from_bytes(bytes(raw), pk, ev.layout))
    except FedLedgerError:
        return
    # no corruption is harmless any more: the header must repeat the expected layout (clip
    # included), and every other byte changes a ciphertext, the key or the weight
    assert np.array_equal(got, sk.decrypt_vector(ev))


def test_key_sizes_2048_default(keys2048: tuple[P.PublicKey, P.PrivateKey]) -> None:
    pk, sk = keys2048
    assert pk.bits == 2048
    x = np.linspace(-1, 1, 200)
    ev = pk.encrypt_vector(x)
    assert ev.layout.slots == 88
    assert np.array_equal(sk.decrypt_quantized(ev + ev), 2 * ev.layout.quantize(x))


# ---------------------------------------------------------------------------------------
# phe interoperability


def test_phe_decrypts_ours_and_we_decrypt_phe(keys1024: tuple[P.PublicKey, P.PrivateKey]) -> None:
    pk, sk = keys1024
    ppk, psk = pk.to_phe(), sk.to_phe()
    for v in (0, 1, -1, 123456789, -(2**200), 3.5, -0.125, 1e-5, 2.0**40):
        ours = pk.encrypt(v)
        assert isinstance(ours, phe.EncryptedNumber)
        assert psk.decrypt(ours) == pytest.approx(v, rel=1e-12, abs=1e-15)
        theirs = ppk.encrypt(v)
        assert sk.decrypt(theirs) == pytest.approx(v, rel=1e-12, abs=1e-15)
    # phe arithmetic on our ciphertexts
    s = pk.encrypt(10) + ppk.encrypt(5) + 3
    assert psk.decrypt(s) == 18 and sk.decrypt(s) == 18
    assert sk.decrypt(pk.encrypt(2.5) * 4) == 10.0
    assert int(sk.decrypt(pk.encrypt(7))) == 7 and isinstance(sk.decrypt(pk.encrypt(7)), int)


def test_key_conversion_both_ways(keys1024: tuple[P.PublicKey, P.PrivateKey]) -> None:
    pk, sk = keys1024
    ppk, psk = phe.generate_paillier_keypair(n_length=1024)
    ours_pk = P.from_phe(ppk, insecure_for_tests=True)
    ours_sk = P.from_phe(psk, insecure_for_tests=True)
    assert isinstance(ours_pk, P.PublicKey) and isinstance(ours_sk, P.PrivateKey)
    assert ours_pk.n == ppk.n and ours_sk.public_key == ours_pk
    assert psk.decrypt(ours_pk.encrypt(42)) == 42
    assert ours_sk.decrypt(ppk.encrypt(-42)) == -42
    ev = ours_pk.encrypt_vector([0.5, -0.5])
    assert ours_sk.decrypt_vector(ev).tolist() == pytest.approx([0.5, -0.5], abs=1e-4)
    back = P.to_phe(sk)
    assert isinstance(back, phe.PaillierPrivateKey) and back.p * back.q == pk.n
    assert P.to_phe(pk) == phe.PaillierPublicKey(pk.n)
    with pytest.raises(InvalidArgument, match="too small"):
        P.from_phe(ppk)  # 1024 bits without the test flag
    with pytest.raises(InvalidArgumentType):
        P.from_phe("not a key")


def test_jwk_round_trip_and_phe_format(keys1024: tuple[P.PublicKey, P.PrivateKey]) -> None:
    pk, sk = keys1024
    jwk = pk.to_jwk()
    assert jwk["kty"] == "DAJ" and jwk["alg"] == "PAI-GN1" and jwk["key_ops"] == ["encrypt"]
    assert jwk["n"] == phe.util.int_to_base64(pk.n)  # phe's own encoding of n
    assert P.PublicKey.from_jwk(json.dumps(jwk), insecure_for_tests=True) == pk
    sjwk = sk.to_jwk()
    assert sjwk["p"] == phe.util.int_to_base64(sk.p) and sjwk["q"] == phe.util.int_to_base64(sk.q)
    assert P.PrivateKey.from_jwk(json.dumps(sjwk), insecure_for_tests=True) == sk
    # a key written the way pheutil writes it
    ppk, psk = phe.generate_paillier_keypair(n_length=1024)
    pub_jwk = {"kty": "DAJ", "alg": "PAI-GN1", "key_ops": ["encrypt"], "n": phe.util.int_to_base64(ppk.n), "kid": "x"}
    priv_jwk = {
        "kty": "DAJ",
        "key_ops": ["decrypt"],
        "p": phe.util.int_to_base64(psk.p),
        "q": phe.util.int_to_base64(psk.q),
        "pub": pub_jwk,
        "kid": "y",
    }
    ours = P.PrivateKey.from_jwk(priv_jwk, insecure_for_tests=True)
    assert ours.decrypt(ppk.encrypt(99)) == 99
    # and pheutil's reader logic accepts ours
    assert phe.util.base64_to_int(sk.to_jwk()["pub"]["n"]) == pk.n
    with pytest.raises(InvalidArgument, match="alg"):
        P.PublicKey.from_jwk({**jwk, "alg": "RSA"}, insecure_for_tests=True)
    with pytest.raises(InvalidArgument, match="kty"):
        P.PublicKey.from_jwk({**jwk, "kty": "RSA"}, insecure_for_tests=True)
    with pytest.raises(InvalidArgument, match="base64url"):
        P.PublicKey.from_jwk({**jwk, "n": jwk["n"][:-2] + "@!"}, insecure_for_tests=True)


def test_phe_documented_json_form(keys1024: tuple[P.PublicKey, P.PrivateKey]) -> None:
    pk, sk = keys1024
    ppk, psk = pk.to_phe(), sk.to_phe()
    numbers = [pk.encrypt(1.5), ppk.encrypt(-3)]
    text = P.encrypted_numbers_to_json(numbers)
    obj = json.loads(text)
    assert obj["public_key"] == {"g": pk.n + 1, "n": pk.n}
    # read it back the way phe's docs do
    pub_rec = phe.PaillierPublicKey(n=int(obj["public_key"]["n"]))
    rec = [phe.EncryptedNumber(pub_rec, int(c), int(e)) for c, e in obj["values"]]
    assert [psk.decrypt(x) for x in rec] == [1.5, -3]
    # and with ours
    pk2, nums = P.encrypted_numbers_from_json(text, insecure_for_tests=True)
    assert pk2 == pk and [sk.decrypt(x) for x in nums] == [1.5, -3]
    bad = json.dumps({"public_key": {"g": pk.n + 1, "n": pk.n}, "values": [[str(pk.nsquare), 0]]})
    with pytest.raises(InvalidCiphertext, match=r"values\[0\].*>= n\^2"):
        P.encrypted_numbers_from_json(bad, insecure_for_tests=True)


def test_packed_vector_is_never_a_phe_number(keys1024: tuple[P.PublicKey, P.PrivateKey]) -> None:
    pk, sk = keys1024
    ev = pk.encrypt_vector([0.1, 0.2])
    assert not isinstance(ev, phe.EncryptedNumber)
    with pytest.raises(InvalidArgumentType, match="decrypt_vector"):
        sk.decrypt(ev)
    with pytest.raises(InvalidArgumentType):
        P.to_phe(ev)  # type: ignore[arg-type]
    with pytest.raises(TypeError):
        sk.to_phe().decrypt(ev)
    with pytest.raises(InvalidArgumentType):
        P.encrypted_numbers_to_json(ev)  # type: ignore[arg-type]
    with pytest.raises(InvalidArgumentType):
        ev + pk.encrypt(1)  # type: ignore[operator]


# ---------------------------------------------------------------------------------------
# Failing cases


def _bad_row_bytes(pk: P.PublicKey, ev: P.EncryptedVector, row: int, value: int) -> bytes:
    data = ev.ciphertexts.copy()
    data[row] = np.frombuffer(value.to_bytes(pk.c_bytes, "big"), np.uint8)
    return ev.to_bytes()[: len(ev.to_bytes()) - ev.nbytes] + data.tobytes()


@pytest.mark.parametrize(
    "make, what",
    [
        (lambda pk, sk: 0, "is 0"),
        (lambda pk, sk: pk.nsquare, "is >= n\\^2"),
        (lambda pk, sk: 256**pk.c_bytes - 1, "is >= n\\^2"),
        (lambda pk, sk: sk.p * 12345, "is not coprime"),
        (lambda pk, sk: sk.q, "is not coprime"),
    ],
)
def test_out_of_range_and_non_coprime_ciphertexts_rejected(
    keys1024: tuple[P.PublicKey, P.PrivateKey], make: object, what: str
) -> None:
    pk, sk = keys1024
    ev = pk.encrypt_vector(np.zeros(3 * _layout(pk, 1).slots))
    value = make(pk, sk)  # type: ignore[operator]
    raw = _bad_row_bytes(pk, ev, 2, value)
    with pytest.raises(InvalidCiphertext, match=f"ciphertext 2 {what}") as info:
        P.EncryptedVector.from_bytes(raw, pk, ev.layout)
    assert info.value.index == 2
    with pytest.raises(InvalidCiphertext):
        P.EncryptedVector.from_ciphertexts(
            pk, ev.layout, 1, np.frombuffer(raw[len(raw) - ev.nbytes :], np.uint8).reshape(3, -1)
        )
    if value < pk.nsquare * 4:
        with pytest.raises(InvalidCiphertext):
            sk.decrypt(phe.EncryptedNumber(pk.to_phe(), value, 0))


def test_negative_single_ciphertext_rejected(keys1024: tuple[P.PublicKey, P.PrivateKey]) -> None:
    pk, sk = keys1024
    with pytest.raises(InvalidCiphertext, match="<= 0"):
        sk.raw_decrypt(-5)


def test_wrong_private_key_is_a_clear_error(
    keys1024: tuple[P.PublicKey, P.PrivateKey], other1024: tuple[P.PublicKey, P.PrivateKey]
) -> None:
    pk, sk = keys1024
    _, other_sk = other1024
    ev = pk.encrypt_vector(np.linspace(-1, 1, 300))
    with pytest.raises(KeyMismatch):
        other_sk.decrypt_vector(ev)
    # Same n but a forged private object is impossible; simulate a wrong key by decrypting
    # the ciphertext rows with another key's kernel context directly.
    other_pk = other_sk.public_key
    rows = [int.from_bytes(r.tobytes(), "big") % other_pk.nsquare for r in ev.ciphertexts]
    data = np.array([np.frombuffer(c.to_bytes(other_pk.c_bytes, "big"), np.uint8) for c in rows])
    layout = P.PackingLayout.create(other_pk.bits, len(ev), bits=16, clip=1.0, max_summands=100)
    forged = P.EncryptedVector.from_ciphertexts(other_pk, layout, 1, data)
    with pytest.raises(DecryptionError, match="ciphertext 0"):
        other_sk.decrypt_vector(forged)


def test_mixed_or_corrupted_ciphertexts_detected(keys1024: tuple[P.PublicKey, P.PrivateKey]) -> None:
    pk, sk = keys1024
    ev = pk.encrypt_vector(np.linspace(-1, 1, 300))
    ev2 = pk.encrypt_vector(np.linspace(-1, 1, 300)) * 2
    data = ev.ciphertexts.copy()
    data[1] = ev2.ciphertexts[1]  # a row worth weight 2 inside a weight-1 vector
    mixed = P.EncryptedVector.from_ciphertexts(pk, ev.layout, 1, data)
    with pytest.raises(DecryptionError, match="ciphertext 1: checksum slot holds 2"):
        sk.decrypt_vector(mixed)
    data = ev.ciphertexts.copy()
    data[2, -1] ^= 1  # a bit flip gives a random-looking plaintext
    flipped = P.EncryptedVector.from_ciphertexts(pk, ev.layout, 1, data)
    with pytest.raises(DecryptionError, match="ciphertext 2"):
        sk.decrypt_vector(flipped)


def test_slot_overflow_detected_on_decryption(keys1024: tuple[P.PublicKey, P.PrivateKey]) -> None:
    pk, sk = keys1024
    lay = _layout(pk, 5, max_summands=4)
    # a malicious "vector" whose slot 3 exceeds the headroom bound for weight 1
    slots = np.zeros((1, lay.slots + 1), np.uint64)
    slots[0, :5] = lay.bias
    slots[0, 3] = (1 << lay.slot_bits) - 1
    slots[0, lay.slots] = 1
    plain = np.empty((1, pk.n_bytes), np.uint8)
    from fedledger._ext import _paillier as k

    k.pack(slots, lay.slot_bits, plain)
    ev = P.EncryptedVector(pk, lay, 1, pk._encrypt_rows(plain, None), _trusted=True)
    with pytest.raises(PaillierOverflow, match=r"element 3 \(ciphertext 0, slot 3\)"):
        sk.decrypt_vector(ev)
    assert issubclass(PaillierOverflow, OverflowError) and issubclass(PaillierOverflow, FedLedgerError)


def test_layout_and_key_mismatch(
    keys1024: tuple[P.PublicKey, P.PrivateKey], other1024: tuple[P.PublicKey, P.PrivateKey]
) -> None:
    pk, _ = keys1024
    opk, _ = other1024
    a = pk.encrypt_vector([0.1, 0.2, 0.3])
    cases = [
        (pk.encrypt_vector([0.1, 0.2, 0.3], bits=8), "bits differs"),
        (pk.encrypt_vector([0.1, 0.2, 0.3], clip=2.0), "clip differs"),
        (pk.encrypt_vector([0.1, 0.2, 0.3], max_summands=50), "max_summands differs"),
        (pk.encrypt_vector([0.1, 0.2]), "count differs"),
    ]
    for b, why in cases:
        with pytest.raises(LayoutMismatch, match=why):
            a + b
        with pytest.raises(LayoutMismatch, match=why):
            P.sum_vectors([a, a, b])
    with pytest.raises(KeyMismatch):
        a + opk.encrypt_vector([0.1, 0.2, 0.3])
    with pytest.raises(KeyMismatch):
        P.EncryptedVector.from_bytes(a.to_bytes(), opk, a.layout)


def test_sum_overflow_raises_before_computing(keys1024: tuple[P.PublicKey, P.PrivateKey]) -> None:
    pk, _ = keys1024
    vs = [pk.encrypt_vector([0.5], max_summands=3) for _ in range(4)]
    with pytest.raises(PaillierOverflow, match="weight 4 exceeds max_summands=3"):
        P.sum_vectors(vs)
    with pytest.raises(PaillierOverflow):
        (vs[0] + vs[1]) + (vs[2] + vs[3])


def test_too_small_keys_and_bad_arguments() -> None:
    with pytest.raises(InvalidArgument, match="at least 2048"):
        P.generate_keypair(1024)
    ppk, _ = phe.generate_paillier_keypair(n_length=1024)
    with pytest.raises(InvalidArgument, match="too small"):
        P.PublicKey(ppk.n)
    with pytest.raises(InvalidArgument):
        P.PublicKey(2**64 + 1, insecure_for_tests=True)  # below the absolute floor
    with pytest.raises(InvalidArgumentType):
        P.PublicKey("123")  # type: ignore[arg-type]


def test_input_validation(keys1024: tuple[P.PublicKey, P.PrivateKey]) -> None:
    pk, _ = keys1024
    with pytest.raises(InvalidArgument, match=r"values\[1\]"):
        pk.encrypt_vector([0.0, float("nan")])
    with pytest.raises(InvalidArgument, match=r"values\[2\].*outside"):
        pk.encrypt_quantized([0, 1, 40000])
    with pytest.raises(InvalidArgumentType):
        pk.encrypt_quantized([0.5])
    with pytest.raises(InvalidArgument, match="1-D"):
        pk.encrypt_vector(np.zeros((2, 2)))
    with pytest.raises(InvalidArgument, match="bits"):
        pk.encrypt_vector([0.1], bits=1)
    with pytest.raises(InvalidArgument, match="clip"):
        pk.encrypt_vector([0.1], clip=0.0)
    with pytest.raises(InvalidArgument, match="max_summands"):
        pk.encrypt_vector([0.1], max_summands=0)
    with pytest.raises(InvalidArgument):
        P.EncryptedVector.from_bytes(b"nonsense", pk, _layout(pk, 1))
    ev = pk.encrypt_vector([0.1])
    with pytest.raises(InvalidArgument, match="expected 1 ciphertexts"):
        P.EncryptedVector.from_bytes(ev.to_bytes()[:-1], pk, ev.layout)


# ---------------------------------------------------------------------------------------
# Threshold custody


def test_threshold_any_t_of_n_decrypts(safe512: tuple[P.PublicKey, P.PrivateKey]) -> None:
    pk, sk = safe512
    shares = sk.split(3, 5)
    x = np.linspace(-1, 1, 40)
    ev = pk.encrypt_vector(x, max_summands=4) + pk.encrypt_vector(-x / 2, max_summands=4)
    want = sk.decrypt_quantized(ev)
    for subset in ([0, 1, 2], [4, 2, 0], [1, 3, 4]):
        parts = [shares[i].partial_decrypt(ev) for i in subset]
        assert np.array_equal(P.combine_partial_decryptions(ev, parts, quantized=True), want)
    parts = [s.partial_decrypt(ev) for s in shares]  # more than t is fine
    assert np.array_equal(P.combine_partial_decryptions(ev, parts), sk.decrypt_vector(ev))
    with pytest.raises(InvalidArgument, match="3 distinct trustees, got 2"):
        P.combine_partial_decryptions(ev, parts[:2])
    with pytest.raises(InvalidArgument, match="3 distinct trustees, got 1"):
        P.combine_partial_decryptions(ev, [parts[0]] * 3)


def test_threshold_shares_and_partials_serialise(safe512: tuple[P.PublicKey, P.PrivateKey]) -> None:
    pk, sk = safe512
    shares = [P.KeyShare.from_json(s.to_json(), insecure_for_tests=True) for s in sk.split(2, 4)]
    assert [s.index for s in shares] == [1, 2, 3, 4]
    ev = pk.encrypt_vector(np.linspace(-1, 1, 50), max_summands=2) * 2
    wire = [shares[i].partial_decrypt(ev).to_bytes(pk) for i in (3, 1)]
    parts = [P.PartialDecryption.from_bytes(w, pk) for w in wire]
    assert np.array_equal(P.combine_partial_decryptions(ev, parts, quantized=True), sk.decrypt_quantized(ev))
    bad = bytearray(wire[0])
    bad[-pk.c_bytes :] = bytes(pk.c_bytes)  # last value zero
    with pytest.raises(InvalidCiphertext, match=f"ciphertext {ev.num_ciphertexts - 1} is 0"):
        P.PartialDecryption.from_bytes(bytes(bad), pk)
    with pytest.raises(InvalidArgument, match="kty"):
        P.KeyShare.from_json(json.dumps({"kty": "other"}))


def test_threshold_detects_bad_partial_and_wrong_vector(safe512: tuple[P.PublicKey, P.PrivateKey]) -> None:
    pk, sk = safe512
    shares = sk.split(2, 3)
    ev = pk.encrypt_vector(np.linspace(-1, 1, 10))
    other = pk.encrypt_vector(np.linspace(-1, 1, 10))
    good = shares[0].partial_decrypt(ev)
    with pytest.raises(InvalidArgument, match="different vector"):
        P.combine_partial_decryptions(ev, [good, shares[1].partial_decrypt(other)])
    bad_share = P.KeyShare(pk, 2, shares[1].share + 1, 2, 3)
    with pytest.raises(DecryptionError):
        P.combine_partial_decryptions(ev, [good, bad_share.partial_decrypt(ev)])


def test_split_refuses_non_safe_primes_and_bad_parameters(
    keys512: tuple[P.PublicKey, P.PrivateKey], safe512: tuple[P.PublicKey, P.PrivateKey]
) -> None:
    _, sk = keys512
    if not (ref_is_safe(sk.p) and ref_is_safe(sk.q)):
        with pytest.raises(InvalidArgument, match="safe primes"):
            sk.split(2, 3)
    _, ssk = safe512
    assert ref_is_safe(ssk.p) and ref_is_safe(ssk.q)
    with pytest.raises(InvalidArgument, match="threshold"):
        ssk.split(4, 3)
    with pytest.raises(InvalidArgument, match="trustees"):
        ssk.split(1, 0)
    one = ssk.split(1, 1)
    ev = ssk.public_key.encrypt_vector([0.25])
    assert P.combine_partial_decryptions(ev, [one[0].partial_decrypt(ev)]).tolist() == pytest.approx([0.25], abs=1e-4)


def ref_is_safe(p: int) -> bool:
    import gmpy2

    return bool(gmpy2.is_prime(p, 40) and gmpy2.is_prime((p - 1) // 2, 40))
