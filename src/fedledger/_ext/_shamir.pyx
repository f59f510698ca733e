# cython: language_level=3
"""Shamir secret-sharing kernels over GF(p), p = 2^31 - 1 (a Mersenne prime).

Every value is a uint32 in [0, p); products fit in uint64 (< 2^62) and are reduced with
the Mersenne fold (x & p) + (x >> 31), twice, then one conditional subtraction; the row
loops are plain C that GCC vectorizes. Callers (fedledger.crypto.shamir) validate shapes,
ranges and distinctness; these kernels trust them and release the GIL while they compute.

Plain C compiled ahead of time, like the other kernels: loading the module costs about a
millisecond, so a process's first split or combine pays no JIT and no cache load.
"""

from libc.stdint cimport uint32_t, uint64_t
from libc.stdlib cimport malloc, free

cdef extern from *:
    """
    #include <stdint.h>
    #include <stddef.h>
    #define FL_P 0x7FFFFFFFu
    static inline uint64_t fl_mulmod(uint64_t a, uint64_t b) {
        uint64_t x = a * b;
        x = (x & FL_P) + (x >> 31);
        x = (x & FL_P) + (x >> 31);
        return x >= FL_P ? x - FL_P : x;
    }
    /* The two row loops, with restrict so that GCC vectorizes them (32x32 -> 64-bit
       multiplies): out = out * x + c (a Horner step) and out = out + a * y. An AVX2 clone
       is picked at load time where the CPU has it. */
    #if defined(__GNUC__) && !defined(__clang__) && defined(__x86_64__) && defined(__linux__)
    #define FL_CLONES __attribute__((target_clones("avx2", "default")))
    #else
    #define FL_CLONES
    #endif
    FL_CLONES static void fl_horner_row(uint32_t* restrict out, const uint32_t* restrict c, uint64_t x, ptrdiff_t m) {
        for (ptrdiff_t l = 0; l < m; l++) {
            uint64_t acc = fl_mulmod(out[l], x) + c[l];
            out[l] = (uint32_t)(acc >= FL_P ? acc - FL_P : acc);
        }
    }
    FL_CLONES static void fl_axpy_row(uint32_t* restrict out, const uint32_t* restrict y, uint64_t a, ptrdiff_t m) {
        for (ptrdiff_t l = 0; l < m; l++) {
            uint64_t acc = out[l] + fl_mulmod(a, y[l]);
            out[l] = (uint32_t)(acc >= FL_P ? acc - FL_P : acc);
        }
    }
    """
    uint64_t _mulmod "fl_mulmod"(uint64_t a, uint64_t b) nogil
    void fl_horner_row(uint32_t* out, const uint32_t* c, uint64_t x, Py_ssize_t m) nogil
    void fl_axpy_row(uint32_t* out, const uint32_t* y, uint64_t a, Py_ssize_t m) nogil

cdef enum:
    C_P = 0x7FFFFFFF
    # Limbs per block of evaluate: t rows of 4 KiB stay in L2 up to t = 64 or so.
    BLOCK = 1024

P = C_P


cdef inline uint64_t _powmod(uint64_t a, uint64_t e) noexcept nogil:
    cdef uint64_t r = 1
    while e > 0:
        if e & 1:
            r = _mulmod(r, a)
        a = _mulmod(a, a)
        e >>= 1
    return r


def mulmod(uint64_t a, uint64_t b) -> int:
    """a * b mod p, for a, b < p."""
    return _mulmod(a, b)


def powmod(uint64_t a, uint64_t e) -> int:
    """a^e mod p, for a < p."""
    return _powmod(a, e)


cdef void _evaluate(const uint32_t[:, ::1] coeffs, const uint32_t[::1] xs, uint32_t[:, ::1] out) noexcept nogil:
    # Horner per share, a row of limbs per coefficient, the limbs in blocks of BLOCK so that
    # a block of every coefficient row stays in cache while all n shares are evaluated on it.
    cdef Py_ssize_t t = coeffs.shape[0], m = coeffs.shape[1], n = xs.shape[0]
    cdef Py_ssize_t i, j, l, b = 0, w
    while b < m:
        w = min(<Py_ssize_t>BLOCK, m - b)
        for i in range(n):
            for l in range(b, b + w):
                out[i, l] = coeffs[t - 1, l]
            for j in range(t - 2, -1, -1):
                fl_horner_row(&out[i, b], &coeffs[j, b], xs[i], w)
        b += w


def evaluate(const uint32_t[:, ::1] coeffs, const uint32_t[::1] xs, uint32_t[:, ::1] out) -> None:
    """out[i, l] = sum_j coeffs[j, l] * xs[i]^j mod p (Horner); coeffs[0] is the secret.

    coeffs: (t, m) uint32 < p, t >= 1; xs: (n,) uint32 in [1, p); out: (n, m) uint32, not
    overlapping coeffs.
    """
    with nogil:
        _evaluate(coeffs, xs, out)


cdef void _lagrange0(const uint32_t[::1] xs, uint32_t* lam) noexcept nogil:
    cdef Py_ssize_t t = xs.shape[0], i, j
    cdef uint64_t num, den, xi, xj, diff
    for i in range(t):
        num = 1
        den = 1
        xi = xs[i]
        for j in range(t):
            if j != i:
                xj = xs[j]
                num = _mulmod(num, xj)
                diff = xj + C_P - xi
                if diff >= C_P:
                    diff -= C_P
                den = _mulmod(den, diff)
        lam[i] = <uint32_t>_mulmod(num, _powmod(den, C_P - 2))


def lagrange0(const uint32_t[::1] xs, uint32_t[::1] lam) -> None:
    """lam[i] = prod_{j != i} x_j / (x_j - x_i) mod p: the Lagrange basis evaluated at 0."""
    if xs.shape[0] == 0:
        return
    with nogil:
        _lagrange0(xs, &lam[0])


def interpolate0(const uint32_t[::1] xs, const uint32_t[:, ::1] ys, uint32_t[::1] out) -> None:
    """out[l] = f_l(0) for the polynomials through (xs[i], ys[i, l]); xs distinct and non-zero,
    out not overlapping ys."""
    cdef Py_ssize_t t = xs.shape[0], m = ys.shape[1], i, l
    cdef uint32_t* lam
    if m == 0:
        return
    lam = <uint32_t*>malloc((t if t > 0 else 1) * sizeof(uint32_t))
    if lam == NULL:
        raise MemoryError()
    with nogil:
        _lagrange0(xs, lam)
        for l in range(m):
            out[l] = 0
        for i in range(t):
            fl_axpy_row(&out[0], &ys[i, 0], lam[i], m)
    free(lam)
