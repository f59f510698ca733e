# cython: language_level=3
"""Paillier kernels over GMP: fixed-base DJN encryption, CRT decryption, ciphertext products.

Two row formats, both C-contiguous 2-D arrays:

- wire form: uint8 rows holding the big-endian, zero-padded integer in [0, n^2)
  (width = bytes of n^2); plaintexts likewise with width = bytes of n. Used for
  serialisation, validation and phe interop.
- working form: uint64 rows of L = limbs(n^2) little-endian limbs holding c * 2^(64L) mod n^2
  (Montgomery form). Encryption writes it, additions stay in it (one ``mpn_mul_n`` and one
  Montgomery reduction per product, no division), decryption and exponentiation read it.

Conversions use ``mpz_import``/``mpz_export``; no Python integers are touched on the hot
paths. Callers (fedledger.crypto.paillier) validate shapes and values; these functions trust
their arguments and report data-dependent failures by return codes (index of the first bad
row). Loops over rows release the GIL and run under OpenMP.

Constant time: the operations that take a secret exponent (CRT decryption, threshold partial
decryption) use ``mpz_powm_sec``. Everything else here (the fixed-base table lookups indexed
by the encryption randomness, modular products, reductions, gcds, CRT recombination, prime
generation) is ordinary variable-time code; see docs/security-paillier.md.
"""

from libc.stdint cimport uint8_t, uint64_t
from libc.string cimport memcpy, memset
from libc.stdlib cimport malloc, calloc, free
from cython.parallel cimport prange

cdef extern from "gmp.h" nogil:
    ctypedef struct __mpz_struct:
        pass
    ctypedef __mpz_struct mpz_t[1]
    ctypedef __mpz_struct* mpz_ptr
    ctypedef const __mpz_struct* mpz_srcptr

    void mpz_init(mpz_ptr)
    void mpz_clear(mpz_ptr)
    void mpz_set(mpz_ptr, mpz_srcptr)
    void mpz_set_ui(mpz_ptr, unsigned long)
    void mpz_import(mpz_ptr, size_t, int, size_t, int, size_t, const void*)
    void* mpz_export(void*, size_t*, int, size_t, int, size_t, mpz_srcptr)
    size_t mpz_sizeinbase(mpz_srcptr, int)
    void mpz_mul(mpz_ptr, mpz_srcptr, mpz_srcptr)
    void mpz_add(mpz_ptr, mpz_srcptr, mpz_srcptr)
    void mpz_sub(mpz_ptr, mpz_srcptr, mpz_srcptr)
    void mpz_add_ui(mpz_ptr, mpz_srcptr, unsigned long)
    void mpz_sub_ui(mpz_ptr, mpz_srcptr, unsigned long)
    void mpz_mod(mpz_ptr, mpz_srcptr, mpz_srcptr)
    void mpz_tdiv_r(mpz_ptr, mpz_srcptr, mpz_srcptr)
    void mpz_tdiv_q(mpz_ptr, mpz_srcptr, mpz_srcptr)
    void mpz_divexact(mpz_ptr, mpz_srcptr, mpz_srcptr)
    void mpz_powm(mpz_ptr, mpz_srcptr, mpz_srcptr, mpz_srcptr)
    void mpz_powm_sec(mpz_ptr, mpz_srcptr, mpz_srcptr, mpz_srcptr)
    int mpz_invert(mpz_ptr, mpz_srcptr, mpz_srcptr)
    void mpz_gcd(mpz_ptr, mpz_srcptr, mpz_srcptr)
    int mpz_cmp(mpz_srcptr, mpz_srcptr)
    int mpz_cmp_ui(mpz_srcptr, unsigned long)
    int mpz_sgn(mpz_srcptr)
    void mpz_setbit(mpz_ptr, unsigned long)
    void mpz_mul_2exp(mpz_ptr, mpz_srcptr, unsigned long)
    int mpz_probab_prime_p(mpz_srcptr, int)
    unsigned long mpz_fdiv_ui(mpz_srcptr, unsigned long)
    size_t mpz_size(mpz_srcptr)

    ctypedef unsigned long mp_limb_t
    ctypedef long mp_size_t
    void mpn_mul_n(mp_limb_t*, const mp_limb_t*, const mp_limb_t*, mp_size_t)
    void mpn_sqr(mp_limb_t*, const mp_limb_t*, mp_size_t)
    mp_limb_t mpn_addmul_1(mp_limb_t*, const mp_limb_t*, mp_size_t, mp_limb_t)
    mp_limb_t mpn_add_n(mp_limb_t*, const mp_limb_t*, const mp_limb_t*, mp_size_t)
    mp_limb_t mpn_sub_n(mp_limb_t*, const mp_limb_t*, const mp_limb_t*, mp_size_t)
    int mpn_cmp(const mp_limb_t*, const mp_limb_t*, mp_size_t)

cdef extern from "openssl/rand.h" nogil:
    int RAND_bytes(unsigned char* buf, int num)

cdef enum:
    E_OK = 0
    E_ZERO = 1          # ciphertext is 0
    E_RANGE = 2         # ciphertext >= n^2 (or plaintext >= n)
    E_NOT_UNIT = 3      # gcd(ciphertext, n) != 1
    E_RANDOM = 4        # the CSPRNG failed
    E_NOT_ONE_MOD_N = 5 # a combined threshold value is not 1 mod n (bad partial decryption)
    E_NOMEM = 6         # out of memory inside a parallel loop

# Return codes (mirrored in fedledger.crypto.paillier).
OK = E_OK
ERR_ZERO = E_ZERO
ERR_RANGE = E_RANGE
ERR_NOT_UNIT = E_NOT_UNIT
ERR_RANDOM = E_RANDOM
ERR_NOT_ONE_MOD_N = E_NOT_ONE_MOD_N
ERR_NOMEM = E_NOMEM

cdef enum:
    WINDOW = 8          # bits per fixed-base window: one byte of the exponent per table row
    DIGITS = 255        # non-zero digits per window
    MAX_X_BYTES = 1024  # exponent buffer on the stack (keys up to 16384 bits)
    PRIME_SIEVE = 2048  # small primes for trial division in prime generation
    # Below this many rows a parallel region over cheap per-row work (one product, one
    # conversion) costs more than it saves, and on a loaded machine a descheduled worker
    # stalls the whole region.
    PAR_MIN_CHEAP = 512


cdef inline void _load(mpz_ptr z, const uint8_t* row, size_t width) noexcept nogil:
    mpz_import(z, width, 1, 1, 1, 0, row)


cdef inline void _store(mpz_srcptr z, uint8_t* row, size_t width) noexcept nogil:
    """Write z (0 <= z < 256^width) as width big-endian bytes."""
    cdef size_t size = (mpz_sizeinbase(z, 2) + 7) // 8
    cdef size_t written = 0
    if mpz_sgn(z) == 0:
        memset(row, 0, width)
        return
    memset(row, 0, width - size)
    mpz_export(row + (width - size), &written, 1, 1, 1, 0, z)


cdef inline void _mulmod(mpz_ptr r, mpz_srcptr a, mpz_srcptr b, mpz_srcptr m, mpz_ptr tmp) noexcept nogil:
    mpz_mul(tmp, a, b)
    mpz_tdiv_r(r, tmp, m)


cdef mpz_t* _mpz_array(Py_ssize_t count) noexcept nogil:
    cdef mpz_t* arr = <mpz_t*>malloc(count * sizeof(mpz_t))
    cdef Py_ssize_t i
    if arr == NULL:
        return NULL
    for i in range(count):
        mpz_init(arr[i])
    return arr


cdef void _mpz_array_free(mpz_t* arr, Py_ssize_t count) noexcept nogil:
    cdef Py_ssize_t i
    if arr == NULL:
        return
    for i in range(count):
        mpz_clear(arr[i])
    free(arr)


cdef void _from_bytes(mpz_ptr z, bytes data):
    cdef const uint8_t* p = data
    mpz_import(z, len(data), 1, 1, 1, 0, p)


cdef bytes _to_bytes(mpz_srcptr z):
    cdef size_t size = (mpz_sizeinbase(z, 2) + 7) // 8
    cdef bytearray out
    if mpz_sgn(z) == 0:
        return b"\x00"
    out = bytearray(size)
    _store(z, <uint8_t*>(<char*>out), size)
    return bytes(out)


cdef inline void _limbs_from(mp_limb_t* dst, mpz_srcptr z, Py_ssize_t nlimbs) noexcept nogil:
    """dst[0..nlimbs) = z, least significant limb first, zero padded (0 <= z < 2^(64 nlimbs))."""
    cdef size_t count = 0
    memset(dst, 0, nlimbs * sizeof(mp_limb_t))
    if mpz_sgn(z) != 0:
        mpz_export(dst, &count, -1, sizeof(mp_limb_t), 0, 0, z)


cdef inline void _redc(mp_limb_t* r, mp_limb_t* t, const mp_limb_t* N, Py_ssize_t L,
                       mp_limb_t ninv) noexcept nogil:
    """Montgomery reduction: r = t / 2^(64L) mod N for t < N 2^(64L) (2L limbs, clobbered)."""
    cdef Py_ssize_t i
    cdef mp_limb_t cy
    for i in range(L):
        # t[i] becomes 0; keep the carry there, it belongs at t[i + L] (added below).
        t[i] = mpn_addmul_1(t + i, N, L, t[i] * ninv)
    cy = mpn_add_n(r, t + L, t, L)
    if cy != 0 or mpn_cmp(r, N, L) >= 0:
        mpn_sub_n(r, r, N, L)


cdef inline void _montmul(mp_limb_t* r, const mp_limb_t* a, const mp_limb_t* b, mp_limb_t* t,
                          const mp_limb_t* N, Py_ssize_t L, mp_limb_t ninv) noexcept nogil:
    """r = a b / 2^(64L) mod N; t is scratch of 2L limbs; r may alias a or b."""
    mpn_mul_n(t, a, b, L)
    _redc(r, t, N, L, ninv)


cdef class PublicContext:
    """n, n^2 and the fixed-base table of h_s = h^n mod n^2 for one public key.

    table[i][d-1] = h_s^(d * 256^i) mod n^2 for i < x_bytes, 1 <= d <= 255, so that
    h_s^x = prod_i table[i][x_i - 1] over the non-zero bytes x_i of x (little-endian digit
    order: row i holds digit i counted from the least significant byte). Entries are kept as
    fixed-width limb arrays in Montgomery form, so that each product costs one
    multiplication and one Montgomery reduction (no division).
    """

    cdef mpz_t n
    cdef mpz_t nsq
    cdef mpz_t hs
    cdef mp_limb_t* table       # rows * 255 entries of L limbs, Montgomery form (x 2^(64L) mod n^2)
    cdef mp_limb_t* nsq_limbs   # n^2 as L limbs
    cdef mp_limb_t* r2_limbs    # 2^(128L) mod n^2: montmul(c, r2) puts c in Montgomery form
    cdef mp_limb_t ninv         # -(n^2)^-1 mod 2^64
    cdef readonly Py_ssize_t L
    cdef readonly Py_ssize_t x_bytes
    cdef readonly Py_ssize_t n_width
    cdef readonly Py_ssize_t c_width
    cdef int table_ready

    def __cinit__(self):
        mpz_init(self.n)
        mpz_init(self.nsq)
        mpz_init(self.hs)
        self.table = NULL
        self.nsq_limbs = NULL
        self.r2_limbs = NULL
        self.table_ready = 0

    def __init__(self, bytes n, bytes h, Py_ssize_t x_bytes, Py_ssize_t n_width, Py_ssize_t c_width):
        """n and h big-endian; h_s = h^n mod n^2 is computed here (public base: mpz_powm)."""
        cdef mpz_t hh
        cdef mp_limb_t n0, inv
        cdef int it
        if x_bytes < 1 or x_bytes > MAX_X_BYTES:
            raise ValueError("x_bytes out of range")
        _from_bytes(self.n, n)
        mpz_mul(self.nsq, self.n, self.n)
        self.L = <Py_ssize_t>mpz_size(self.nsq)
        self.nsq_limbs = <mp_limb_t*>malloc(self.L * sizeof(mp_limb_t))
        self.r2_limbs = <mp_limb_t*>malloc(self.L * sizeof(mp_limb_t))
        if self.nsq_limbs == NULL or self.r2_limbs == NULL:
            raise MemoryError()
        _limbs_from(self.nsq_limbs, self.nsq, self.L)
        mpz_init(hh)
        mpz_set_ui(hh, 1)
        mpz_mul_2exp(hh, hh, 128 * self.L)
        mpz_tdiv_r(hh, hh, self.nsq)
        _limbs_from(self.r2_limbs, hh, self.L)
        mpz_clear(hh)
        n0 = self.nsq_limbs[0]
        inv = n0  # Newton iteration for n0^-1 mod 2^64 (n0 odd): 3 -> 6 -> ... -> 96 bits
        for it in range(5):
            inv = inv * (2 - n0 * inv)
        self.ninv = (<mp_limb_t>0) - inv
        mpz_init(hh)
        _from_bytes(hh, h)
        with nogil:
            mpz_powm(self.hs, hh, self.n, self.nsq)
        mpz_clear(hh)
        self.x_bytes = x_bytes
        self.n_width = n_width
        self.c_width = c_width

    def __dealloc__(self):
        free(self.table)
        free(self.nsq_limbs)
        free(self.r2_limbs)
        mpz_clear(self.n)
        mpz_clear(self.nsq)
        mpz_clear(self.hs)

    def h_s(self) -> bytes:
        return _to_bytes(self.hs)

    @property
    def table_built(self) -> bool:
        return self.table_ready != 0

    def build_table(self, int nthreads):
        """Precompute the fixed-base table once (about x_bytes * 255 products mod n^2)."""
        cdef Py_ssize_t rows = self.x_bytes, i, j
        cdef mpz_t* bases
        cdef mpz_t tmp
        cdef mp_limb_t* table
        if self.table_ready:
            return
        table = <mp_limb_t*>malloc(rows * DIGITS * self.L * sizeof(mp_limb_t))
        bases = _mpz_array(rows)
        if table == NULL or bases == NULL:
            free(table)
            _mpz_array_free(bases, rows)
            raise MemoryError()
        mpz_init(tmp)
        with nogil:
            # bases[i] = h_s^(256^i): 8 squarings per row.
            mpz_set(bases[0], self.hs)
            for i in range(1, rows):
                mpz_set(bases[i], bases[i - 1])
                for j in range(WINDOW):
                    _mulmod(bases[i], bases[i], bases[i], self.nsq, tmp)
            for i in prange(rows, num_threads=nthreads, schedule="dynamic"):
                _fill_row(table + i * DIGITS * self.L, bases[i], self.nsq, self.L)
        mpz_clear(tmp)
        _mpz_array_free(bases, rows)
        self.table = table
        self.table_ready = 1

    cdef inline void _fixed_base(self, mp_limb_t* out, mpz_srcptr acc, const uint8_t* x,
                                 mp_limb_t* scratch) noexcept nogil:
        """out = acc * h_s^x * 2^(64L) mod n^2 (Montgomery form of acc * h_s^x) for
        0 <= acc < n^2, x given as x_bytes big-endian bytes. scratch holds 4L limbs."""
        cdef Py_ssize_t i, L = self.L
        cdef uint8_t d
        cdef mp_limb_t* t = scratch
        cdef mp_limb_t* a = scratch + 2 * L
        cdef int started = 0
        for i in range(self.x_bytes):
            d = x[self.x_bytes - 1 - i]
            if d != 0:
                if started:
                    _montmul(out, out, self.table + (i * DIGITS + d - 1) * L, t, self.nsq_limbs, L, self.ninv)
                else:
                    memcpy(out, self.table + (i * DIGITS + d - 1) * L, L * sizeof(mp_limb_t))
                    started = 1
        # acc in Montgomery form, then (if x != 0) one product with h_s^x 2^(64L).
        _limbs_from(a, acc, L)
        if started:
            _montmul(a, a, self.r2_limbs, t, self.nsq_limbs, L, self.ninv)
            _montmul(out, out, a, t, self.nsq_limbs, L, self.ninv)
        else:
            _montmul(out, a, self.r2_limbs, t, self.nsq_limbs, L, self.ninv)

    cdef inline void _to_mpz(self, mpz_ptr z, const mp_limb_t* mont, mp_limb_t* scratch) noexcept nogil:
        """z = mont / 2^(64L) mod n^2 (normal form). scratch holds 3L limbs."""
        cdef Py_ssize_t L = self.L
        memcpy(scratch, mont, L * sizeof(mp_limb_t))
        memset(scratch + L, 0, L * sizeof(mp_limb_t))
        _redc(scratch + 2 * L, scratch, self.nsq_limbs, L, self.ninv)
        mpz_import(z, L, -1, sizeof(mp_limb_t), 0, 0, scratch + 2 * L)

    cdef inline void _from_mpz(self, mp_limb_t* mont, mpz_srcptr z, mp_limb_t* scratch) noexcept nogil:
        """mont = z * 2^(64L) mod n^2 for 0 <= z < n^2. scratch holds 3L limbs."""
        _limbs_from(scratch + 2 * self.L, z, self.L)
        _montmul(mont, scratch + 2 * self.L, self.r2_limbs, scratch, self.nsq_limbs, self.L, self.ninv)


cdef void _fill_row(mp_limb_t* row, mpz_srcptr base, mpz_srcptr nsq, Py_ssize_t L) noexcept nogil:
    """row[d-1] = base^d 2^(64L) mod n^2 for d = 1..255, as L-limb arrays."""
    cdef mpz_t cur, mont, tmp
    cdef Py_ssize_t d
    mpz_init(cur)
    mpz_init(mont)
    mpz_init(tmp)
    mpz_set(cur, base)
    for d in range(DIGITS):
        if d:
            _mulmod(cur, cur, base, nsq, tmp)
        mpz_mul_2exp(tmp, cur, 64 * L)
        mpz_tdiv_r(mont, tmp, nsq)
        _limbs_from(row + d * L, mont, L)
    mpz_clear(cur)
    mpz_clear(mont)
    mpz_clear(tmp)


cdef int _encrypt_row(PublicContext ctx, const uint8_t* plain, const uint8_t* xin,
                      mp_limb_t* out) noexcept nogil:
    cdef mpz_t m, acc
    cdef uint8_t x[MAX_X_BYTES]
    cdef const uint8_t* xp = xin
    cdef int rc = 0
    cdef mp_limb_t* scratch
    if xp == NULL:
        if RAND_bytes(x, <int>ctx.x_bytes) != 1:
            return E_RANDOM
        xp = x
    scratch = <mp_limb_t*>malloc(4 * ctx.L * sizeof(mp_limb_t))
    if scratch == NULL:
        return E_NOMEM
    mpz_init(m)
    mpz_init(acc)
    _load(m, plain, ctx.n_width)
    if mpz_cmp(m, ctx.n) >= 0:
        rc = E_RANGE
    else:
        # g = n + 1: g^m = 1 + m*n, which is < n^2 for m < n.
        mpz_mul(acc, m, ctx.n)
        mpz_add_ui(acc, acc, 1)
        ctx._fixed_base(out, acc, xp, scratch)
    if xp == x:
        memset(x, 0, MAX_X_BYTES)
    free(scratch)
    mpz_clear(m)
    mpz_clear(acc)
    return rc


def encrypt(PublicContext ctx, const uint8_t[:, ::1] plain, uint64_t[:, ::1] out,
            object xs, int nthreads) -> tuple:
    """Encrypt each plaintext row into out (rows, L) in Montgomery form. xs: None (fresh x
    from RAND_bytes per row) or a (rows, x_bytes) uint8 array of big-endian exponents
    (test hook).

    Returns (code, row): code 0, or the code of the lowest failing row.
    """
    cdef Py_ssize_t rows = plain.shape[0], i
    cdef const uint8_t[:, ::1] xv
    cdef const uint8_t* xbase = NULL
    cdef int* codes
    cdef Py_ssize_t xstride = ctx.x_bytes
    cdef int code = 0
    cdef Py_ssize_t where = -1
    if rows == 0:
        return (E_OK, -1)
    ctx.build_table(nthreads)
    if xs is not None:
        xv = xs
        xbase = &xv[0, 0]
    codes = <int*>calloc(rows, sizeof(int))
    if codes == NULL:
        raise MemoryError()
    with nogil:
        for i in prange(rows, num_threads=nthreads, schedule="dynamic"):
            codes[i] = _encrypt_row(ctx, &plain[i, 0],
                                    (xbase + i * xstride) if xbase != NULL else NULL,
                                    <mp_limb_t*>&out[i, 0])
        for i in range(rows):
            if codes[i] != 0:
                code = codes[i]
                where = i
                break
    free(codes)
    return (code, where)


cdef int _convert_row(PublicContext ctx, const uint8_t* src, uint8_t* dst, int to_mont) noexcept nogil:
    cdef mpz_t z
    cdef mp_limb_t* scratch = <mp_limb_t*>malloc(3 * ctx.L * sizeof(mp_limb_t))
    if scratch == NULL:
        return E_NOMEM
    mpz_init(z)
    if to_mont:
        _load(z, src, ctx.c_width)
        ctx._from_mpz(<mp_limb_t*>dst, z, scratch)
    else:
        ctx._to_mpz(z, <const mp_limb_t*>src, scratch)
        _store(z, dst, ctx.c_width)
    mpz_clear(z)
    free(scratch)
    return 0


def to_montgomery(PublicContext ctx, const uint8_t[:, ::1] cts, uint64_t[:, ::1] out, int nthreads) -> int:
    """Big-endian ciphertext rows (each < n^2, checked by the caller) to Montgomery limbs.
    Returns 0 or ERR_NOMEM."""
    cdef Py_ssize_t rows = cts.shape[0], i
    cdef int bad = 0
    if rows == 0:
        return 0
    if rows < PAR_MIN_CHEAP:
        nthreads = 1
    with nogil:
        for i in prange(rows, num_threads=nthreads, schedule="dynamic", chunksize=16):
            if _convert_row(ctx, &cts[i, 0], <uint8_t*>&out[i, 0], 1) != 0:
                bad += 1
    return E_NOMEM if bad else E_OK


def from_montgomery(PublicContext ctx, const uint64_t[:, ::1] mont, uint8_t[:, ::1] out, int nthreads) -> int:
    """Montgomery limbs back to big-endian ciphertext rows of c_width bytes."""
    cdef Py_ssize_t rows = mont.shape[0], i
    cdef int bad = 0
    if rows == 0:
        return 0
    if rows < PAR_MIN_CHEAP:
        nthreads = 1
    with nogil:
        for i in prange(rows, num_threads=nthreads, schedule="dynamic", chunksize=16):
            if _convert_row(ctx, <const uint8_t*>&mont[i, 0], &out[i, 0], 0) != 0:
                bad += 1
    return E_NOMEM if bad else E_OK


cdef int _validate_row(PublicContext ctx, const uint8_t* row) noexcept nogil:
    cdef mpz_t c, g
    cdef int rc = 0
    mpz_init(c)
    mpz_init(g)
    _load(c, row, ctx.c_width)
    if mpz_sgn(c) == 0:
        rc = E_ZERO
    elif mpz_cmp(c, ctx.nsq) >= 0:
        rc = E_RANGE
    else:
        mpz_gcd(g, c, ctx.n)
        if mpz_cmp_ui(g, 1) != 0:
            rc = E_NOT_UNIT
    mpz_clear(c)
    mpz_clear(g)
    return rc


def validate(PublicContext ctx, const uint8_t[:, ::1] cts, int nthreads) -> tuple:
    """(0, -1) if every row is a unit in [1, n^2), else (code, lowest bad row)."""
    cdef Py_ssize_t rows = cts.shape[0], i
    cdef int* codes
    cdef int code = 0
    cdef Py_ssize_t where = -1
    if rows == 0:
        return (E_OK, -1)
    codes = <int*>calloc(rows, sizeof(int))
    if codes == NULL:
        raise MemoryError()
    with nogil:
        for i in prange(rows, num_threads=nthreads, schedule="dynamic"):
            codes[i] = _validate_row(ctx, &cts[i, 0])
        for i in range(rows):
            if codes[i] != 0:
                code = codes[i]
                where = i
                break
    free(codes)
    return (code, where)


def product(PublicContext ctx, list arrays, uint64_t[:, ::1] out, int nthreads):
    """out[i] = prod_j arrays[j][i] mod n^2, all in Montgomery form (homomorphic addition of
    k >= 1 vectors: k - 1 Montgomery products per row, no division, no conversion).

    Every array is a (rows, L) C-contiguous uint64 array checked by the caller; out may
    alias arrays[0].
    """
    cdef Py_ssize_t k = len(arrays), rows = out.shape[0], i, j, L = ctx.L
    cdef const mp_limb_t** srcs
    cdef const uint64_t[:, ::1] view
    cdef list keep = []
    cdef mp_limb_t* t
    cdef int nomem = 0
    if rows == 0:
        return
    if rows * (k - 1) < PAR_MIN_CHEAP:
        nthreads = 1
    srcs = <const mp_limb_t**>malloc(k * sizeof(mp_limb_t*))
    if srcs == NULL:
        raise MemoryError()
    for j in range(k):
        view = arrays[j]
        keep.append(view)
        srcs[j] = <const mp_limb_t*>&view[0, 0]
    with nogil:
        # Dynamic chunks: on a shared machine a descheduled worker's rows move to the other.
        for i in prange(rows, num_threads=nthreads, schedule="dynamic", chunksize=16):
            t = <mp_limb_t*>malloc(3 * L * sizeof(mp_limb_t))
            if t == NULL:
                nomem += 1
            else:
                memcpy(t + 2 * L, srcs[0] + i * L, L * sizeof(mp_limb_t))
                for j in range(1, k):
                    _montmul(t + 2 * L, t + 2 * L, srcs[j] + i * L, t, ctx.nsq_limbs, L, ctx.ninv)
                memcpy(<mp_limb_t*>&out[i, 0], t + 2 * L, L * sizeof(mp_limb_t))
                free(t)
    free(srcs)
    if nomem:
        raise MemoryError()


cdef void _powm_row(PublicContext ctx, const mp_limb_t* row, mpz_srcptr e, int secret,
                    mp_limb_t* out) noexcept nogil:
    cdef mpz_t c
    cdef mp_limb_t* scratch = <mp_limb_t*>malloc(3 * ctx.L * sizeof(mp_limb_t))
    if scratch == NULL:
        memset(out, 0, ctx.L * sizeof(mp_limb_t))  # an invalid (zero) ciphertext, caught later
        return
    mpz_init(c)
    ctx._to_mpz(c, row, scratch)
    if secret:
        mpz_powm_sec(c, c, e, ctx.nsq)
    else:
        mpz_powm(c, c, e, ctx.nsq)
    ctx._from_mpz(out, c, scratch)
    mpz_clear(c)
    free(scratch)


def power(PublicContext ctx, const uint64_t[:, ::1] cts, bytes exponent, bint secret,
          uint64_t[:, ::1] out, int nthreads):
    """out[i] = cts[i]^e mod n^2 for e > 0 (big-endian bytes), Montgomery form in and out.

    secret=True uses mpz_powm_sec (threshold partial decryption with a key share);
    secret=False uses mpz_powm (multiplication by a public plaintext scalar).
    """
    cdef Py_ssize_t rows = cts.shape[0], i
    cdef mpz_t e
    cdef int sec = 1 if secret else 0
    if rows == 0:
        return
    mpz_init(e)
    _from_bytes(e, exponent)
    with nogil:
        for i in prange(rows, num_threads=nthreads, schedule="dynamic"):
            _powm_row(ctx, <const mp_limb_t*>&cts[i, 0], e, sec, <mp_limb_t*>&out[i, 0])
    mpz_set_ui(e, 0)
    mpz_clear(e)


cdef int _combine_row(PublicContext ctx, const mp_limb_t** srcs, mpz_t* exps, const int* negs,
                      Py_ssize_t k, mpz_srcptr factor, Py_ssize_t i, uint8_t* out) noexcept nogil:
    cdef mpz_t acc, t, tmp
    cdef Py_ssize_t j
    cdef int rc = 0
    cdef mp_limb_t* scratch = <mp_limb_t*>malloc(3 * ctx.L * sizeof(mp_limb_t))
    if scratch == NULL:
        return E_NOMEM
    mpz_init(acc)
    mpz_init(t)
    mpz_init(tmp)
    mpz_set_ui(acc, 1)
    for j in range(k):
        ctx._to_mpz(t, srcs[j] + i * ctx.L, scratch)
        if negs[j]:
            if mpz_invert(t, t, ctx.nsq) == 0:
                rc = E_NOT_UNIT
                break
        mpz_powm(t, t, exps[j], ctx.nsq)
        _mulmod(acc, acc, t, ctx.nsq, tmp)
    if rc == 0:
        # acc = 1 + (4 Delta^2 m) n mod n^2; m = L(acc) * factor mod n.
        mpz_tdiv_r(t, acc, ctx.n)
        if mpz_cmp_ui(t, 1) != 0:
            rc = E_NOT_ONE_MOD_N
        else:
            mpz_sub_ui(acc, acc, 1)
            mpz_divexact(acc, acc, ctx.n)
            _mulmod(acc, acc, factor, ctx.n, tmp)
            _store(acc, out, ctx.n_width)
    mpz_clear(acc)
    mpz_clear(t)
    mpz_clear(tmp)
    free(scratch)
    return rc


def combine(PublicContext ctx, list partials, list exponents, list negative, bytes factor,
            uint8_t[:, ::1] out_plain, int nthreads) -> tuple:
    """Threshold combination: out_plain[i] = L(prod_j partials[j][i]^(+-e_j)) * factor mod n,
    partials in Montgomery form.

    exponents are big-endian magnitudes; negative[j] says whether e_j is negative.
    Returns (code, row) as encrypt does.
    """
    cdef Py_ssize_t k = len(partials), rows = out_plain.shape[0], i, j
    cdef const mp_limb_t** srcs
    cdef mpz_t* exps
    cdef int* negs
    cdef int* codes
    cdef mpz_t f
    cdef const uint64_t[:, ::1] view
    cdef list keep = []
    cdef int code = 0
    cdef Py_ssize_t where = -1
    if rows == 0:
        return (E_OK, -1)
    srcs = <const mp_limb_t**>malloc(k * sizeof(mp_limb_t*))
    negs = <int*>malloc(k * sizeof(int))
    codes = <int*>calloc(rows, sizeof(int))
    exps = _mpz_array(k)
    if srcs == NULL or negs == NULL or codes == NULL or exps == NULL:
        free(srcs)
        free(negs)
        free(codes)
        _mpz_array_free(exps, k)
        raise MemoryError()
    for j in range(k):
        view = partials[j]
        keep.append(view)
        srcs[j] = <const mp_limb_t*>&view[0, 0]
        _from_bytes(exps[j], exponents[j])
        negs[j] = 1 if negative[j] else 0
    mpz_init(f)
    _from_bytes(f, factor)
    with nogil:
        for i in prange(rows, num_threads=nthreads, schedule="dynamic"):
            codes[i] = _combine_row(ctx, srcs, exps, negs, k, f, i, &out_plain[i, 0])
        for i in range(rows):
            if codes[i] != 0:
                code = codes[i]
                where = i
                break
    mpz_clear(f)
    free(srcs)
    free(negs)
    free(codes)
    _mpz_array_free(exps, k)
    return (code, where)


cdef class PrivateContext:
    """p, q and the CRT constants of Paillier decryption (p < q)."""

    cdef mpz_t p
    cdef mpz_t q
    cdef mpz_t psq
    cdef mpz_t qsq
    cdef mpz_t pm1
    cdef mpz_t qm1
    cdef mpz_t hp
    cdef mpz_t hq
    cdef mpz_t pinv
    cdef readonly Py_ssize_t n_width
    cdef readonly Py_ssize_t c_width

    def __cinit__(self):
        mpz_init(self.p)
        mpz_init(self.q)
        mpz_init(self.psq)
        mpz_init(self.qsq)
        mpz_init(self.pm1)
        mpz_init(self.qm1)
        mpz_init(self.hp)
        mpz_init(self.hq)
        mpz_init(self.pinv)

    def __init__(self, bytes p, bytes q, bytes hp, bytes hq, bytes pinv,
                 Py_ssize_t n_width, Py_ssize_t c_width):
        """All values big-endian; hp = L_p(g^(p-1) mod p^2)^-1 mod p, pinv = p^-1 mod q."""
        _from_bytes(self.p, p)
        _from_bytes(self.q, q)
        _from_bytes(self.hp, hp)
        _from_bytes(self.hq, hq)
        _from_bytes(self.pinv, pinv)
        mpz_mul(self.psq, self.p, self.p)
        mpz_mul(self.qsq, self.q, self.q)
        mpz_sub_ui(self.pm1, self.p, 1)
        mpz_sub_ui(self.qm1, self.q, 1)
        self.n_width = n_width
        self.c_width = c_width

    def __dealloc__(self):
        # Overwrite secrets before GMP frees them (best effort: copies made by GMP during
        # arithmetic are not wiped).
        mpz_set_ui(self.p, 0)
        mpz_set_ui(self.q, 0)
        mpz_clear(self.p)
        mpz_clear(self.q)
        mpz_clear(self.psq)
        mpz_clear(self.qsq)
        mpz_clear(self.pm1)
        mpz_clear(self.qm1)
        mpz_clear(self.hp)
        mpz_clear(self.hq)
        mpz_clear(self.pinv)

    cdef void _decrypt_row(self, PublicContext pub, const mp_limb_t* row, uint8_t* out) noexcept nogil:
        cdef mpz_t c, mp, mq, t
        cdef mp_limb_t* scratch = <mp_limb_t*>malloc(3 * pub.L * sizeof(mp_limb_t))
        if scratch == NULL:
            memset(out, 0xFF, self.n_width)  # impossible plaintext: fails the packing checks
            return
        mpz_init(c)
        mpz_init(mp)
        mpz_init(mq)
        mpz_init(t)
        pub._to_mpz(c, row, scratch)
        free(scratch)
        # m_p = L_p(c^(p-1) mod p^2) * hp mod p
        mpz_tdiv_r(t, c, self.psq)
        mpz_powm_sec(t, t, self.pm1, self.psq)
        mpz_sub_ui(t, t, 1)
        mpz_divexact(t, t, self.p)
        mpz_mul(t, t, self.hp)
        mpz_tdiv_r(mp, t, self.p)
        # m_q likewise
        mpz_tdiv_r(t, c, self.qsq)
        mpz_powm_sec(t, t, self.qm1, self.qsq)
        mpz_sub_ui(t, t, 1)
        mpz_divexact(t, t, self.q)
        mpz_mul(t, t, self.hq)
        mpz_tdiv_r(mq, t, self.q)
        # m = m_p + ((m_q - m_p) * p^-1 mod q) * p
        mpz_sub(t, mq, mp)
        mpz_mul(t, t, self.pinv)
        mpz_mod(t, t, self.q)
        mpz_mul(t, t, self.p)
        mpz_add(t, t, mp)
        _store(t, out, self.n_width)
        mpz_set_ui(mp, 0)
        mpz_set_ui(mq, 0)
        mpz_clear(c)
        mpz_clear(mp)
        mpz_clear(mq)
        mpz_clear(t)


def decrypt(PrivateContext ctx, PublicContext pub, const uint64_t[:, ::1] cts,
            uint8_t[:, ::1] out_plain, int nthreads):
    """CRT decryption of each (valid) ciphertext row, in Montgomery form, into out_plain
    (rows, n_width) big-endian."""
    cdef Py_ssize_t rows = cts.shape[0], i
    if rows == 0:
        return
    with nogil:
        for i in prange(rows, num_threads=nthreads, schedule="dynamic"):
            ctx._decrypt_row(pub, <const mp_limb_t*>&cts[i, 0], &out_plain[i, 0])


def pack(const uint64_t[:, ::1] slots, int slot_bits, uint8_t[:, ::1] out):
    """out[r] = sum_j slots[r, j] << (j * slot_bits), big-endian, width out.shape[1].

    The caller guarantees 1 <= slot_bits <= 63, slots[r, j] < 2^slot_bits and
    slots.shape[1] * slot_bits <= 8 * out.shape[1].
    """
    cdef Py_ssize_t rows = slots.shape[0], nslots = slots.shape[1], width = out.shape[1]
    cdef Py_ssize_t nlimbs = (width + 7) // 8 + 1, r, j, k, limb
    cdef uint64_t* limbs
    cdef uint64_t v
    cdef Py_ssize_t bit, off
    if rows == 0:
        return
    limbs = <uint64_t*>malloc(nlimbs * sizeof(uint64_t))
    if limbs == NULL:
        raise MemoryError()
    with nogil:
        for r in range(rows):
            memset(limbs, 0, nlimbs * sizeof(uint64_t))
            for j in range(nslots):
                v = slots[r, j]
                bit = j * slot_bits
                limb = bit >> 6
                off = bit & 63
                limbs[limb] |= v << off
                if off + slot_bits > 64:
                    limbs[limb + 1] |= v >> (64 - off)
            for k in range(width):
                out[r, width - 1 - k] = <uint8_t>((limbs[k >> 3] >> (8 * (k & 7))) & 0xFF)
    free(limbs)


def unpack(const uint8_t[:, ::1] plain, int slot_bits, uint64_t[:, ::1] out, uint8_t[::1] high):
    """Inverse of pack: out[r, j] = slot j of plain[r]; high[r] = 1 if any bit at or above
    out.shape[1] * slot_bits is set."""
    cdef Py_ssize_t rows = plain.shape[0], nslots = out.shape[1], width = plain.shape[1]
    cdef Py_ssize_t nlimbs = (width + 7) // 8 + 1, r, j, k, limb, bit, off, top
    cdef uint64_t* limbs
    cdef uint64_t v, mask = ((<uint64_t>1) << slot_bits) - 1
    cdef uint8_t flag
    if rows == 0:
        return
    limbs = <uint64_t*>malloc(nlimbs * sizeof(uint64_t))
    if limbs == NULL:
        raise MemoryError()
    top = nslots * slot_bits
    with nogil:
        for r in range(rows):
            memset(limbs, 0, nlimbs * sizeof(uint64_t))
            for k in range(width):
                limbs[k >> 3] |= (<uint64_t>plain[r, width - 1 - k]) << (8 * (k & 7))
            for j in range(nslots):
                bit = j * slot_bits
                limb = bit >> 6
                off = bit & 63
                v = limbs[limb] >> off
                if off + slot_bits > 64:
                    v |= limbs[limb + 1] << (64 - off)
                out[r, j] = v & mask
            flag = 0
            limb = top >> 6
            off = top & 63
            if limb < nlimbs:
                if off and (limbs[limb] >> off) != 0:
                    flag = 1
                elif off == 0 and limbs[limb] != 0:
                    flag = 1
                for k in range(limb + 1, nlimbs):
                    if limbs[k] != 0:
                        flag = 1
            high[r] = flag
    free(limbs)


cdef int _small_primes(unsigned long* out, int count) noexcept nogil:
    cdef unsigned long c = 3, d
    cdef int found = 0, ok
    while found < count:
        ok = 1
        d = 3
        while d * d <= c:
            if c % d == 0:
                ok = 0
                break
            d += 2
        if ok:
            out[found] = c
            found += 1
        c += 2
    return found


cdef int _random_prime(mpz_ptr out, int bits, int safe, const unsigned long* primes) noexcept nogil:
    """A random prime of exactly `bits` bits with the top two bits set; if safe, p = 2p' + 1
    with p' prime. 0 on success, E_RANDOM if the CSPRNG fails."""
    cdef int nbytes, cbits, i, good
    cdef uint8_t* buf
    cdef unsigned long r
    cdef mpz_t c, p
    cbits = bits - 1 if safe else bits
    nbytes = (cbits + 7) // 8
    buf = <uint8_t*>malloc(nbytes)
    if buf == NULL:
        return E_RANDOM
    mpz_init(c)
    mpz_init(p)
    while True:
        if RAND_bytes(buf, nbytes) != 1:
            free(buf)
            mpz_clear(c)
            mpz_clear(p)
            return E_RANDOM
        # Keep exactly cbits bits, set the top two (safe: then p = 2c + 1 has its top two set).
        if cbits % 8:
            buf[0] &= <uint8_t>((1 << (cbits % 8)) - 1)
        mpz_import(c, nbytes, 1, 1, 1, 0, buf)
        mpz_setbit(c, cbits - 1)
        mpz_setbit(c, cbits - 2)
        mpz_setbit(c, 0)
        good = 1
        for i in range(PRIME_SIEVE):
            r = mpz_fdiv_ui(c, primes[i])
            if r == 0 or (safe and (2 * r + 1) % primes[i] == 0):
                good = 0
                break
        if not good:
            continue
        if safe:
            if mpz_probab_prime_p(c, 2) == 0:
                continue
            mpz_mul_2exp(p, c, 1)
            mpz_add_ui(p, p, 1)
            if mpz_probab_prime_p(p, 40) == 0 or mpz_probab_prime_p(c, 40) == 0:
                continue
            mpz_set(out, p)
        else:
            if mpz_probab_prime_p(c, 40) == 0:
                continue
            mpz_set(out, c)
        break
    memset(buf, 0, nbytes)
    free(buf)
    mpz_set_ui(c, 0)
    mpz_clear(c)
    mpz_clear(p)
    return 0


def random_prime(int bits, bint safe) -> bytes:
    """A random (safe) prime of exactly `bits` bits with its top two bits set, big-endian.

    Candidates come from OpenSSL's RAND_bytes, are sieved by small primes and must pass
    mpz_probab_prime_p with 40 rounds (Baillie-PSW plus Miller-Rabin in GMP 6.2).
    Variable time (it is key generation, run once).
    """
    cdef unsigned long* primes
    cdef mpz_t out
    cdef int rc, sf = 1 if safe else 0
    cdef bytes result
    if bits < 16:
        raise ValueError("bits must be >= 16")
    primes = <unsigned long*>malloc(PRIME_SIEVE * sizeof(unsigned long))
    if primes == NULL:
        raise MemoryError()
    mpz_init(out)
    with nogil:
        _small_primes(primes, PRIME_SIEVE)
        rc = _random_prime(out, bits, sf, primes)
    free(primes)
    if rc != 0:
        mpz_clear(out)
        raise RuntimeError("OpenSSL RAND_bytes failed")
    result = _to_bytes(out)
    mpz_set_ui(out, 0)
    mpz_clear(out)
    return result


def is_probable_prime(bytes value, int reps) -> bool:
    cdef mpz_t z
    cdef int r
    mpz_init(z)
    _from_bytes(z, value)
    r = mpz_probab_prime_p(z, reps)
    mpz_clear(z)
    return r != 0
