"""fedledger.crypto.shamir: round trips, the kernels against their slow twins, typed errors,
and the integrity check."""

from __future__ import annotations

import hashlib
import itertools
from dataclasses import replace

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st
from reference import shamir as ref

from fedledger.crypto import shamir
from fedledger.errors import InsufficientShares, InvalidArgument, InvalidShare, ShareIntegrityError

P = shamir.PRIME


def drbg(seed: bytes):  # type: ignore[no-untyped-def]
    """A deterministic byte source for reproducible tests (SHAKE-256 counter mode)."""
    counter = [0]

    def random_bytes(n: int) -> bytes:
        counter[0] += 1
        return hashlib.shake_256(seed + counter[0].to_bytes(8, "big")).digest(n)

    return random_bytes


# -- round trips ---------------------------------------------------------------------------


@pytest.mark.parametrize("length", [0, 1, 2, 3, 4, 31, 32, 33, 100])
def test_split_combine_round_trip(length: int) -> None:
    secret = bytes(range(256))[:length] if length <= 256 else b""
    shares = shamir.split(secret, 3, 5)
    assert [s.index for s in shares] == [1, 2, 3, 4, 5]
    for subset in itertools.combinations(shares, 3):
        assert shamir.combine(list(subset)) == secret


@given(
    secret=st.binary(min_size=0, max_size=70),
    n=st.integers(1, 12),
    data=st.data(),
)
def test_any_threshold_subset_recovers(secret: bytes, n: int, data: st.DataObject) -> None:
    t = data.draw(st.integers(1, n))
    shares = shamir.split(secret, t, n)
    order = data.draw(st.permutations(shares))
    # thresholds t - 1, t and n
    if t > 1:
        with pytest.raises(InsufficientShares):
            shamir.combine(order[: t - 1])
    assert shamir.combine(order[:t]) == secret
    assert shamir.combine(order) == secret


def test_32_byte_secret_at_n100_t51() -> None:
    secret = bytes(range(32))
    shares = shamir.split(secret, 51, 100)
    assert shamir.combine(shares[49:]) == secret
    assert shamir.combine(shares[::-1][:51]) == secret
    with pytest.raises(InsufficientShares):
        shamir.combine(shares[:50])


def test_combine_uses_exactly_the_first_threshold_shares() -> None:
    shares = shamir.split(b"exactly t", 3, 6)
    garbage = replace(shares[5], values=bytes(len(shares[5].values)))  # a corrupted extra share
    assert shamir.combine(shares[:3] + [garbage]) == b"exactly t"
    with pytest.raises(ShareIntegrityError):
        shamir.combine([garbage] + shares[:3])


def test_deterministic_randomness_reproduces_shares() -> None:
    a = shamir.split(b"seeded", 2, 3, random_bytes=drbg(b"x"))
    b = shamir.split(b"seeded", 2, 3, random_bytes=drbg(b"x"))
    c = shamir.split(b"seeded", 2, 3, random_bytes=drbg(b"y"))
    assert a == b
    assert a != c


def test_share_serialisation_round_trip() -> None:
    for s in shamir.split(b"bytes on the wire", 2, 4):
        assert shamir.Share.from_bytes(s.to_bytes()) == s
    values = np.array([0, 1, P - 1, 12345], dtype=np.uint32)
    for s in shamir.split_array(values, 2, 3):
        assert shamir.ArrayShare.from_bytes(s.to_bytes()) == s


# -- the kernels against the slow twins ----------------------------------------------------


def _field(draw_list: list[int]) -> np.ndarray:
    return np.array(draw_list, dtype=np.uint32)


@given(
    t=st.integers(1, 9),
    m=st.integers(0, 5),
    n=st.integers(1, 9),
    data=st.data(),
)
def test_evaluate_matches_reference(t: int, m: int, n: int, data: st.DataObject) -> None:
    from fedledger._ext import _shamir

    elems = st.integers(0, P - 1)
    coeffs = [[data.draw(elems) for _ in range(m)] for _ in range(t)]
    xs = data.draw(st.lists(st.integers(1, P - 1), min_size=n, max_size=n))
    out = np.empty((n, m), dtype=np.uint32)
    _shamir.evaluate(np.array(coeffs, dtype=np.uint32).reshape(t, m), _field(xs), out)
    assert out.tolist() == ref.evaluate(coeffs, xs)


@given(
    t=st.integers(1, 9),
    m=st.integers(0, 5),
    data=st.data(),
)
def test_interpolate_matches_reference(t: int, m: int, data: st.DataObject) -> None:
    from fedledger._ext import _shamir

    xs = data.draw(st.lists(st.integers(1, P - 1), min_size=t, max_size=t, unique=True))
    ys = [[data.draw(st.integers(0, P - 1)) for _ in range(m)] for _ in range(t)]
    out = np.empty(m, dtype=np.uint32)
    _shamir.interpolate0(_field(xs), np.array(ys, dtype=np.uint32).reshape(t, m), out)
    assert out.tolist() == ref.interpolate0(xs, ys)


def test_kernel_extremes_match_reference() -> None:
    from fedledger._ext import _shamir

    coeffs = [[P - 1, 0, 1]] * 4
    xs = [1, 2, P - 1, P - 2]
    out = np.empty((4, 3), dtype=np.uint32)
    _shamir.evaluate(np.array(coeffs, dtype=np.uint32), _field(xs), out)
    assert out.tolist() == ref.evaluate(coeffs, xs)
    back = np.empty(3, dtype=np.uint32)
    _shamir.interpolate0(_field(xs), out, back)
    assert back.tolist() == [P - 1, 0, 1]


@given(
    values=st.lists(st.integers(0, P - 1), min_size=0, max_size=40),
    n=st.integers(1, 8),
    data=st.data(),
)
def test_split_array_round_trip(values: list[int], n: int, data: st.DataObject) -> None:
    t = data.draw(st.integers(1, n))
    arr = np.array(values, dtype=np.uint32)
    shares = shamir.split_array(arr, t, n)
    got = shamir.combine_array(data.draw(st.permutations(shares))[:t])
    assert got.dtype == np.uint32
    assert got.tolist() == values
    if t > 1:
        with pytest.raises(InsufficientShares):
            shamir.combine_array(shares[: t - 1])


def test_split_array_is_a_polynomial_per_element() -> None:
    # Shares of element l at indices 1..n lie on one polynomial of degree < t whose value at 0
    # is the element: checked with the slow twin.
    arr = np.array([7, 0, P - 1], dtype=np.uint32)
    shares = shamir.split_array(arr, 3, 5)
    ys = [s.array().tolist() for s in shares]
    for subset in itertools.combinations(range(5), 3):
        got = ref.interpolate0([i + 1 for i in subset], [ys[i] for i in subset])
        assert got[:3] == [7, 0, P - 1]


# -- typed errors --------------------------------------------------------------------------


def test_too_few_shares() -> None:
    shares = shamir.split(b"k", 3, 5)
    with pytest.raises(InsufficientShares):
        shamir.combine(shares[:2])
    with pytest.raises(InsufficientShares):
        shamir.combine([])


def test_duplicate_indices() -> None:
    shares = shamir.split(b"k", 2, 3)
    with pytest.raises(InvalidShare, match="duplicate"):
        shamir.combine([shares[0], shares[0], shares[1]])


def test_index_zero_and_out_of_range() -> None:
    s = shamir.split(b"k", 2, 3)[0]
    with pytest.raises(InvalidShare):
        replace(s, index=0)
    with pytest.raises(InvalidShare):
        replace(s, index=shamir.MAX_SHARES + 1)
    # ... also when it comes off the wire (the index is the u16 after magic and kind)
    raw = bytearray(s.to_bytes())
    assert int.from_bytes(raw[5:7], "little") == s.index
    raw[5:7] = bytes(2)
    with pytest.raises(InvalidShare):
        shamir.Share.from_bytes(bytes(raw))
    with pytest.raises(InvalidShare):
        shamir.Share.from_bytes(s.to_bytes()[:-1])  # values not a whole number of limbs
    with pytest.raises(InvalidShare):
        shamir.Share.from_bytes(s.to_bytes() + bytes(4))  # one limb too many


def test_mixed_secrets() -> None:
    a = shamir.split(b"secret A", 2, 3)
    b = shamir.split(b"secret B", 2, 3)
    with pytest.raises(InvalidShare, match="mixed"):
        shamir.combine([a[0], b[1]])
    c = shamir.split(b"longer secret C", 2, 3)
    with pytest.raises(InvalidShare, match="mixed"):
        shamir.combine([a[0], c[1]])


def test_wrong_length() -> None:
    s = shamir.split(b"abcdef", 2, 3)[0]
    with pytest.raises(InvalidShare):
        replace(s, values=s.values[:-4])
    with pytest.raises(InvalidShare):
        replace(s, length=s.length + 3)
    with pytest.raises(InvalidShare):
        replace(s, commitment=s.commitment[:16])


def test_value_outside_the_field() -> None:
    s = shamir.split(b"abc", 2, 3)[0]
    bad = bytearray(s.values)
    bad[0:4] = (P).to_bytes(4, "little")
    with pytest.raises(InvalidShare):
        replace(s, values=bytes(bad))


def test_malformed_bytes() -> None:
    for junk in (b"", b"\x00", b"\xa0", shamir.split_array(np.zeros(1, np.uint32), 1, 1)[0].to_bytes()):
        with pytest.raises(InvalidShare):
            shamir.Share.from_bytes(junk)


def test_bad_parameters() -> None:
    with pytest.raises(InvalidArgument):
        shamir.split(b"k", 0, 3)
    with pytest.raises(InvalidArgument):
        shamir.split(b"k", 4, 3)
    with pytest.raises(InvalidArgument):
        shamir.split(b"k", 1, 0)
    with pytest.raises(InvalidArgument):
        shamir.split(b"k", 1, shamir.MAX_SHARES + 1)
    with pytest.raises(InvalidArgument):
        shamir.split_array(np.array([P], dtype=np.uint32), 1, 2)
    with pytest.raises(InvalidArgument):
        shamir.split_array(np.array([1.0]), 1, 2)  # type: ignore[arg-type]


# -- integrity -----------------------------------------------------------------------------


@pytest.mark.parametrize("which", [0, 1, 2])
def test_any_corrupted_share_is_caught(which: int) -> None:
    shares = shamir.split(b"a 32-byte key for the round....!", 3, 5)
    for word in range(shares[which].limbs()):
        for bit in (0, 17, 30):
            bad = bytearray(shares[which].values)
            value = int.from_bytes(bad[4 * word : 4 * word + 4], "little") ^ (1 << bit)
            if value >= P:
                continue
            bad[4 * word : 4 * word + 4] = value.to_bytes(4, "little")
            chosen = list(shares[:3])
            chosen[which] = replace(chosen[which], values=bytes(bad))
            with pytest.raises(ShareIntegrityError):
                shamir.combine(chosen)


def test_corrupted_array_share_is_caught() -> None:
    shares = shamir.split_array(np.arange(10, dtype=np.uint32), 2, 3)
    bad = bytearray(shares[1].values)
    bad[0] ^= 1
    with pytest.raises(ShareIntegrityError):
        shamir.combine_array([shares[0], replace(shares[1], values=bytes(bad))])


def test_fewer_than_threshold_shares_are_uniform() -> None:
    # Perfect secrecy in miniature: with t = 2, one share's values are uniform whatever the
    # secret. Over many dealings of two different secrets, the mean of share 1's first value
    # is (p-1)/2 within 5 standard errors for both.
    rnd = drbg(b"uniform")
    for secret in (b"\x00\x00\x00", b"\xff\xff\xff"):
        vals = np.array(
            [shamir.split(secret, 2, 2, random_bytes=rnd)[0].array()[0] for _ in range(2000)], dtype=np.float64
        )
        se = (P / np.sqrt(12)) / np.sqrt(len(vals))
        assert abs(vals.mean() - (P - 1) / 2) < 5 * se
