"""Shamir secret-sharing kernels over GF(p), p = 2^31 - 1 (a Mersenne prime), in Numba.

Every value is a uint32 in [0, p); products fit in uint64 (< 2^62) and are reduced with
the Mersenne fold (x & p) + (x >> 31). Callers (fedledger.crypto.shamir) validate shapes,
ranges and distinctness; these kernels trust them.

Importing this module compiles the kernels eagerly from their explicit signatures (or loads
them from Numba's on-disk cache), so fedledger.crypto.shamir imports it on first use only.
"""

from __future__ import annotations

from typing import Final

import numba
import numpy as np

from fedledger._ext._numba_config import NJIT

P: Final = 2**31 - 1

_u64 = numba.uint64
_u32_1d = numba.uint32[::1]
_u32_2d = numba.uint32[:, ::1]


@numba.njit(_u64(_u64, _u64), inline="always", **NJIT)
def mulmod(a: int, b: int) -> int:
    x = a * b
    x = (x & np.uint64(0x7FFFFFFF)) + (x >> np.uint64(31))
    x = (x & np.uint64(0x7FFFFFFF)) + (x >> np.uint64(31))
    if x >= np.uint64(0x7FFFFFFF):
        x -= np.uint64(0x7FFFFFFF)
    return x


@numba.njit(_u64(_u64, _u64), **NJIT)
def powmod(a: int, e: int) -> int:
    r = np.uint64(1)
    while e > np.uint64(0):
        if e & np.uint64(1):
            r = mulmod(r, a)
        a = mulmod(a, a)
        e >>= np.uint64(1)
    return r


@numba.njit(numba.void(_u32_2d, _u32_1d, _u32_2d), **NJIT)
def evaluate(coeffs: np.ndarray, xs: np.ndarray, out: np.ndarray) -> None:
    """out[i, l] = sum_j coeffs[j, l] * xs[i]^j mod p (Horner); coeffs[0] is the secret.

    coeffs: (t, m) uint32 < p; xs: (n,) uint32 in [1, p); out: (n, m) uint32.
    """
    t = coeffs.shape[0]
    m = coeffs.shape[1]
    n = xs.shape[0]
    pp = np.uint64(0x7FFFFFFF)
    for i in range(n):
        x = np.uint64(xs[i])
        for l in range(m):
            acc = np.uint64(coeffs[t - 1, l])
            for j in range(t - 2, -1, -1):
                acc = mulmod(acc, x) + np.uint64(coeffs[j, l])
                if acc >= pp:
                    acc -= pp
            out[i, l] = np.uint32(acc)


@numba.njit(numba.void(_u32_1d, _u32_1d), **NJIT)
def lagrange0(xs: np.ndarray, lam: np.ndarray) -> None:
    """lam[i] = prod_{j != i} x_j / (x_j - x_i) mod p: the Lagrange basis evaluated at 0."""
    t = xs.shape[0]
    pp = np.uint64(0x7FFFFFFF)
    for i in range(t):
        num = np.uint64(1)
        den = np.uint64(1)
        xi = np.uint64(xs[i])
        for j in range(t):
            if j != i:
                xj = np.uint64(xs[j])
                num = mulmod(num, xj)
                diff = xj + pp - xi
                if diff >= pp:
                    diff -= pp
                den = mulmod(den, diff)
        lam[i] = np.uint32(mulmod(num, powmod(den, pp - np.uint64(2))))


@numba.njit(numba.void(_u32_1d, _u32_2d, _u32_1d), **NJIT)
def interpolate0(xs: np.ndarray, ys: np.ndarray, out: np.ndarray) -> None:
    """out[l] = f_l(0) for the polynomials through (xs[i], ys[i, l]); xs distinct and non-zero."""
    t = xs.shape[0]
    m = ys.shape[1]
    pp = np.uint64(0x7FFFFFFF)
    lam = np.empty(t, dtype=np.uint32)
    lagrange0(xs, lam)
    for l in range(m):
        out[l] = 0
    for i in range(t):
        li = np.uint64(lam[i])
        for l in range(m):
            acc = np.uint64(out[l]) + mulmod(li, np.uint64(ys[i, l]))
            if acc >= pp:
                acc -= pp
            out[l] = np.uint32(acc)
