# cython: language_level=3
"""Secure-aggregation masking kernels over OpenSSL's AES-128-CTR (EVP, AES-NI).

A mask is the AES-128-CTR keystream of a 16-byte key, starting from the all-zero counter
block, read as little-endian words of the ring (uint32 or uint64). Byte offset o of the
stream is counter block o / 16, so any range of a vector can be masked on its own: the
kernels split a vector into one contiguous range per thread, and each thread keeps one EVP
context per key, walking its range in blocks that stay in cache.

Callers (fedledger.crypto.masking) validate: ``acc`` is the byte view of a contiguous
uint32/uint64 array, every input a contiguous buffer of the same size, ``keys`` is (m, 16)
and ``signs`` holds +1/-1. Failures come back as return codes (bits, OR-ed over threads).

vector_pass fuses a whole client or server step into one pass over the vector: quantize
an update into it, add or subtract one received vector, add the masks, and hash it as RFC
9162 leaves of CHUNK bytes (SHA-256 through OpenSSL), each block while it is in cache.

x25519_many batches RFC 7748 X25519 through libsodium (linked for this module only), for the
pairwise seeds of a client with all its neighbors.
"""

from libc.stdint cimport uint8_t, uint32_t, uint64_t, int64_t, int8_t
from libc.string cimport memset

from fedledger._ext._common cimport (
    SHA256_CTX, SHA256_Init, SHA256_Update, SHA256_Final,
    EVP_CIPHER_CTX, EVP_CIPHER_CTX_new, EVP_CIPHER_CTX_free, EVP_aes_128_ctr, EVP_EncryptInit_ex, EVP_EncryptUpdate,
)
from libc.stdlib cimport malloc, free
from cpython.object cimport PyObject
from cython.parallel cimport prange

cdef extern from "sodium.h" nogil:
    int sodium_init()
    int crypto_scalarmult(unsigned char* q, const unsigned char* n, const unsigned char* p)

if sodium_init() < 0:
    raise ImportError("libsodium could not be initialised: sodium_init() returned -1")

cdef extern from *:
    """
    #include <stdint.h>
    #include <stddef.h>
    /* The 32-bit ring's rounding loop, written so that GCC vectorizes it: no early exit, and
       float64 -> int32 conversions (AVX2 has those, not int64 ones); it needs
       -fno-trapping-math to if-convert the comparisons. An AVX2 clone is picked
       at load time where the CPU has it. Returns 1 if x holds NaN/inf, 2 if some scaled value
       is outside int32 (the caller redoes the block with int64), else 0. */
    #if defined(__GNUC__) && !defined(__clang__) && defined(__x86_64__) && defined(__linux__)
    #define FL_CLONES __attribute__((target_clones("avx2", "default")))
    #else
    #define FL_CLONES
    #endif
    #define FL_QUANT32(NAME, T) \
    FL_CLONES static int NAME(const T* restrict x, uint32_t* restrict out, ptrdiff_t n, double weight, \
                              double scale, double clip, const uint32_t* restrict rnd) { \
        int32_t flags = 0; \
        for (ptrdiff_t i = 0; i < n; i++) { \
            double v = (double)x[i]; \
            int32_t fin = (v - v == 0.0); \
            v = fin ? v : 0.0; \
            v = v > clip ? clip : v; \
            v = v < -clip ? -clip : v; \
            /* (double)rnd[i], through a signed conversion */ \
            double u = ((double)(int32_t)(rnd[i] ^ 0x80000000u) + 2147483648.0) * 0x1p-32; \
            double y = v * weight * scale + u; \
            int32_t inr = (y >= -2147483648.0) & (y < 2147483648.0); \
            flags |= (fin ^ 1) | ((inr ^ 1) << 1); \
            y = y * (double)inr; /* a select, written so that GCC if-converts it */ \
            int32_t t = (int32_t)y; \
            t -= ((double)t > y); \
            out[i] = (uint32_t)t; \
        } \
        return (flags & 1) ? 1 : ((flags & 2) ? 2 : 0); \
    }
    FL_QUANT32(fl_quant32_f, float)
    FL_QUANT32(fl_quant32_d, double)
    """
    int fl_quant32_f(const float* x, uint32_t* out, Py_ssize_t n, double weight, double scale,
                     double clip, const uint32_t* rnd) nogil
    int fl_quant32_d(const double* x, uint32_t* out, Py_ssize_t n, double weight, double scale,
                     double clip, const uint32_t* rnd) nogil

cdef extern from *:
    """
    #include <openssl/kdf.h>
    #include <openssl/params.h>
    #include <openssl/core_names.h>
    /* An HKDF-SHA256 context of OpenSSL's (RFC 5869), salt set once; NULL on failure. */
    static EVP_KDF_CTX* fl_hkdf_new(const unsigned char* salt, size_t saltlen) {
        EVP_KDF* kdf = EVP_KDF_fetch(NULL, "HKDF", NULL);
        EVP_KDF_CTX* ctx;
        OSSL_PARAM params[3], *p = params;
        if (kdf == NULL) return NULL;
        ctx = EVP_KDF_CTX_new(kdf);
        EVP_KDF_free(kdf);
        if (ctx == NULL) return NULL;
        *p++ = OSSL_PARAM_construct_utf8_string(OSSL_KDF_PARAM_DIGEST, (char*)"SHA256", 0);
        if (saltlen) *p++ = OSSL_PARAM_construct_octet_string(OSSL_KDF_PARAM_SALT, (void*)salt, saltlen);
        *p = OSSL_PARAM_construct_end();
        if (EVP_KDF_CTX_set_params(ctx, params) != 1) { EVP_KDF_CTX_free(ctx); return NULL; }
        return ctx;
    }
    /* out[0:outlen] = HKDF(ikm, the context's salt, info); 0 on success. */
    static int fl_hkdf(EVP_KDF_CTX* ctx, const unsigned char* ikm, size_t ikmlen,
                       const unsigned char* info, size_t infolen, unsigned char* out, size_t outlen) {
        OSSL_PARAM params[3];
        params[0] = OSSL_PARAM_construct_octet_string(OSSL_KDF_PARAM_KEY, (void*)ikm, ikmlen);
        params[1] = OSSL_PARAM_construct_octet_string(OSSL_KDF_PARAM_INFO, (void*)info, infolen);
        params[2] = OSSL_PARAM_construct_end();
        return EVP_KDF_derive(ctx, out, outlen, params) == 1 ? 0 : 1;
    }
    """
    ctypedef struct EVP_KDF_CTX:
        pass
    EVP_KDF_CTX* fl_hkdf_new(const unsigned char* salt, size_t saltlen) nogil
    int fl_hkdf(EVP_KDF_CTX* ctx, const unsigned char* ikm, size_t ikmlen, const unsigned char* info,
                size_t infolen, unsigned char* out, size_t outlen) nogil
    void EVP_KDF_CTX_free(EVP_KDF_CTX* ctx) nogil

cdef enum:
    KEY = 16
    # Bytes per block of work: big enough to amortise the EVP call, small enough for L2.
    BLOCK = 32768
    # Below this many bytes one thread does all.
    PAR_MIN = 262144
    # Bytes per Merkle leaf of a ring vector (a multiple of BLOCK).
    CHUNK = 65536

# Return codes are bits: parallel ranges OR theirs together.
cdef enum:
    C_OK = 0
    C_ERR_ALLOC = 1
    C_ERR_CIPHER = 2
    C_ERR_NONFINITE = 4

CHUNK_SIZE = CHUNK
OK = C_OK
ERR_ALLOC = C_ERR_ALLOC
ERR_CIPHER = C_ERR_CIPHER
ERR_NONFINITE = C_ERR_NONFINITE


cdef struct Pass:
    # The vector: acc[0:nbytes], ring words of ``width`` bytes.
    uint8_t* acc
    Py_ssize_t nbytes
    int width
    # Quantize x[0:nx] into the first nx words first (x NULL: no quantization).
    const void* x
    int x_double
    Py_ssize_t nx
    double scale
    double clip
    double weight
    const uint8_t* rkey
    # Then add inp_sign (+1 or -1) * each of inputs[0:ninputs].
    const uint8_t** inputs
    Py_ssize_t ninputs
    int inp_sign
    # Then add signs[k] * mask(keys[k]).
    const uint8_t* keys
    const int8_t* signs
    Py_ssize_t nkeys
    # Leaf hashes of inputs[0] (hash_input) or of the result, one per CHUNK (NULL: none).
    uint8_t* leaves
    int hash_input


cdef inline void _iv(uint64_t offset, uint8_t* iv) noexcept nogil:
    """The counter block for byte ``offset`` (a multiple of 16): big-endian offset / 16."""
    cdef uint64_t blk = offset >> 4
    cdef int i
    for i in range(8):
        iv[i] = 0
    for i in range(8):
        iv[15 - i] = <uint8_t>(blk >> (8 * i))


# BLOCK zero bytes, read-only: encrypting them gives the keystream without a memset per call.
cdef uint8_t _ZEROS[BLOCK]
memset(_ZEROS, 0, BLOCK)


cdef int _keystream(EVP_CIPHER_CTX* c, uint8_t* buf, Py_ssize_t n) noexcept nogil:
    """Next n (<= BLOCK) bytes of c's keystream into buf: the encryption of zeros."""
    cdef int outl = 0
    if EVP_EncryptUpdate(c, buf, &outl, _ZEROS, <int>n) != 1 or outl != n:
        return C_ERR_CIPHER
    return C_OK


cdef inline void _add_words(uint8_t* acc, const uint8_t* src, Py_ssize_t n, int width, int sign) noexcept nogil:
    """acc[0:n] += sign * src[0:n] as ring words (sign +1 or -1, i.e. all ones mod 2^bits)."""
    cdef Py_ssize_t i
    cdef uint32_t* a32 = <uint32_t*>acc
    cdef uint64_t* a64 = <uint64_t*>acc
    cdef const uint32_t* s32 = <const uint32_t*>src
    cdef const uint64_t* s64 = <const uint64_t*>src
    cdef uint32_t m32 = <uint32_t>sign
    cdef uint64_t m64 = <uint64_t>sign
    if width == 4:
        for i in range(n >> 2):
            a32[i] += s32[i] * m32
    else:
        for i in range(n >> 3):
            a64[i] += s64[i] * m64


def accumulate(uint8_t[::1] acc, int width, tuple inputs, const uint8_t[:, ::1] keys,
               const int8_t[::1] signs, int nthreads) -> int:
    """In place: acc += sum(inputs) + sum_k signs[k] * mask(keys[k]), in Z_(2^(8*width)).

    ``acc`` is the byte view of the ring vector; each input is a C-contiguous buffer (bytes,
    memoryview, array) of the same size, kept alive by the tuple for the whole call. No
    per-input temporaries: each thread walks its range in cache-sized blocks, adding every
    input and every keystream to that block. Returns a code; ValueError for a wrong size.
    """
    cdef Py_ssize_t nbytes = acc.shape[0]
    cdef Py_ssize_t ninputs = len(inputs)
    cdef Py_ssize_t nkeys = keys.shape[0]
    cdef const uint8_t[::1] view
    cdef const uint8_t** tup = <const uint8_t**>malloc((ninputs + 1) * sizeof(uint8_t*))
    cdef Py_ssize_t j
    if tup == NULL:
        raise MemoryError()
    try:
        for j in range(ninputs):
            view = inputs[j]
            if view.shape[0] != nbytes:
                raise ValueError(f"inputs[{j}] has {view.shape[0]} bytes, expected {nbytes}")
            tup[j] = &view[0] if nbytes > 0 else NULL
        return _accumulate(acc, nbytes, width, tup, ninputs, keys, nkeys, signs, nthreads)
    finally:
        free(tup)


cdef int _accumulate(uint8_t[::1] acc, Py_ssize_t nbytes, int width, const uint8_t** tup,
                     Py_ssize_t ninputs, const uint8_t[:, ::1] keys, Py_ssize_t nkeys,
                     const int8_t[::1] signs, int nthreads):
    cdef Pass p
    if nbytes == 0:
        return C_OK
    _start(&p, &acc[0], nbytes, width)
    p.inputs = tup
    p.ninputs = ninputs
    p.inp_sign = 1
    p.keys = &keys[0, 0] if nkeys > 0 else NULL
    p.signs = &signs[0] if nkeys > 0 else NULL
    p.nkeys = nkeys
    return _run(&p, nthreads)


def keystream(const uint8_t[::1] key, uint8_t[::1] out, uint64_t offset) -> int:
    """out = AES-128-CTR keystream of ``key`` from byte ``offset`` (a multiple of 16)."""
    cdef EVP_CIPHER_CTX* c
    cdef uint8_t iv[16]
    cdef int rc = C_OK
    cdef Py_ssize_t pos = 0, n
    _iv(offset, iv)
    with nogil:
        c = EVP_CIPHER_CTX_new()
        if c == NULL or EVP_EncryptInit_ex(c, EVP_aes_128_ctr(), NULL, &key[0], iv) != 1:
            rc = C_ERR_CIPHER
        while rc == C_OK and pos < out.shape[0]:
            n = out.shape[0] - pos
            if n > BLOCK:
                n = BLOCK
            rc = _keystream(c, &out[pos], n)
            pos += n
        if c != NULL:
            EVP_CIPHER_CTX_free(c)
    return rc


ctypedef fused real:
    float
    double


cdef inline void _start(Pass* p, uint8_t* acc, Py_ssize_t nbytes, int width) noexcept:
    memset(p, 0, sizeof(Pass))
    p.acc = acc
    p.nbytes = nbytes
    p.width = width


cdef int _set_x(Pass* p, object x, double scale, double clip, double weight, const uint8_t* rkey) except -1:
    """Point the pass at the float array x (kept alive by the caller) to quantize."""
    cdef const float[::1] xf
    cdef const double[::1] xd
    p.scale = scale
    p.clip = clip
    p.weight = weight
    p.rkey = rkey
    if x.dtype.itemsize == 8:
        xd = x
        p.x_double = 1
        p.nx = xd.shape[0]
        p.x = &xd[0] if p.nx else NULL
    else:
        xf = x
        p.nx = xf.shape[0]
        p.x = &xf[0] if p.nx else NULL
    return 0


cdef inline int _quantize_block(const real* x, uint8_t* out, Py_ssize_t n, int width, double scale,
                                double clip, double weight, const uint8_t* rnd) noexcept nogil:
    """out[0:n] (ring words) = stochastic rounding of clip(x[0:n]) * weight * scale, with
    the randomness rnd[0:n*width]: the vectorized 32-bit loop, or the int64 one when that
    loop cannot (64-bit ring, or values outside int32); the two agree bit for bit."""
    cdef int rc
    if width == 4:
        if real is float:
            rc = fl_quant32_f(x, <uint32_t*>out, n, weight, scale, clip, <const uint32_t*>rnd)
        else:
            rc = fl_quant32_d(x, <uint32_t*>out, n, weight, scale, clip, <const uint32_t*>rnd)
        if rc == 0:
            return C_OK
        if rc == 1:
            return C_ERR_NONFINITE
    return _quantize_block_wide(x, out, n, width, scale, clip, weight, rnd)


cdef int _quantize_block_wide(const real* x, uint8_t* out, Py_ssize_t n, int width, double scale,
                              double clip, double weight, const uint8_t* rnd) noexcept nogil:
    """_quantize_block through int64: the 64-bit ring, and 32-bit values that wrap."""
    cdef Py_ssize_t i
    cdef double v, u, y
    cdef int64_t q
    cdef const uint32_t* r32 = <const uint32_t*>rnd
    cdef const uint64_t* r64 = <const uint64_t*>rnd
    cdef uint32_t* o32 = <uint32_t*>out
    cdef uint64_t* o64 = <uint64_t*>out
    for i in range(n):
        v = <double>x[i]
        if not (v == v) or v - v != 0.0:
            return C_ERR_NONFINITE
        if v > clip:
            v = clip
        elif v < -clip:
            v = -clip
        if width == 4:
            u = <double>r32[i] * 2.3283064365386963e-10  # 2^-32
        else:
            u = <double>(r64[i] >> 11) * 1.1102230246251565e-16  # 2^-53
        y = v * weight * scale + u
        q = <int64_t>y
        if <double>q > y:
            q -= 1
        if width == 4:
            o32[i] = <uint32_t>q
        else:
            o64[i] = <uint64_t>q
    return C_OK


def quantize(object x, uint8_t[::1] out, int width, double scale, double clip,
             double weight, const uint8_t[::1] key, int nthreads) -> int:
    """Stochastic rounding of clip(x) * weight * scale into the ring: floor(v + u) mod
    2^bits, u uniform in [0, 1) from 32 (width 4) or 53 (width 8) bits of the AES-128-CTR
    stream of ``key`` per element (element i's bits at byte i * width of the stream).

    ``x`` is a contiguous float32/float64 array; ``out`` the byte view of a uint32/uint64
    array with at least len(x) words. C_ERR_NONFINITE if x holds NaN or inf (``out`` is then
    garbage). The caller checks that |clip * weight * scale| + 1 fits.
    """
    cdef Pass p
    cdef Py_ssize_t n = len(x)
    if n == 0:
        return C_OK
    _start(&p, &out[0], n * width, width)
    _set_x(&p, x, scale, clip, weight, &key[0])
    return _run(&p, nthreads)


def x25519_many(const uint8_t[::1] scalar, const uint8_t[:, ::1] peers, uint8_t[:, ::1] out,
                uint8_t[::1] ok, int nthreads) -> None:
    """out[i] = X25519(scalar, peers[i]) (RFC 7748, libsodium's crypto_scalarmult, which
    clamps the scalar); ok[i] = 0 where the result is all zeros (a low-order peer value),
    else 1. Parallel over the peers; each is ~50 us of work."""
    cdef Py_ssize_t n = peers.shape[0], i
    if n == 0:
        return
    for i in prange(n, nogil=True, num_threads=nthreads if n >= 8 else 1, schedule="static"):
        ok[i] = 1 if crypto_scalarmult(&out[i, 0], &scalar[0], &peers[i, 0]) == 0 else 0


cdef int _pass_range(const Pass* p, Py_ssize_t lo, Py_ssize_t hi) noexcept nogil:
    """The pass over acc[lo:hi]; lo is a multiple of CHUNK, hi of the word size (or nbytes)."""
    cdef EVP_CIPHER_CTX** ctx = NULL
    cdef EVP_CIPHER_CTX* rctx = NULL
    cdef uint8_t* buf = NULL
    cdef uint8_t iv[16]
    cdef uint8_t zero = 0
    cdef SHA256_CTX sha
    cdef Py_ssize_t k, pos, n, q_end, qn
    cdef int rc = C_OK
    cdef const uint8_t* hsrc
    if hi <= lo:
        return C_OK
    buf = <uint8_t*>malloc(BLOCK)
    ctx = <EVP_CIPHER_CTX**>malloc((p.nkeys + 1) * sizeof(EVP_CIPHER_CTX*))
    if buf == NULL or ctx == NULL:
        free(buf)
        free(ctx)
        return C_ERR_ALLOC
    _iv(<uint64_t>lo, iv)
    for k in range(p.nkeys):
        ctx[k] = NULL
    for k in range(p.nkeys):
        ctx[k] = EVP_CIPHER_CTX_new()
        if ctx[k] == NULL or EVP_EncryptInit_ex(ctx[k], EVP_aes_128_ctr(), NULL, p.keys + k * KEY, iv) != 1:
            rc = C_ERR_CIPHER
            break
    # Rounding randomness: width bytes per element, so its stream offset is the byte offset.
    q_end = p.nx * p.width
    if rc == C_OK and p.x != NULL and lo < q_end:
        rctx = EVP_CIPHER_CTX_new()
        if rctx == NULL or EVP_EncryptInit_ex(rctx, EVP_aes_128_ctr(), NULL, p.rkey, iv) != 1:
            rc = C_ERR_CIPHER
    pos = lo
    while rc == C_OK and pos < hi:
        n = hi - pos
        if n > BLOCK:
            n = BLOCK
        if p.x != NULL and pos < q_end:
            qn = q_end - pos
            if qn > n:
                qn = n
            rc = _keystream(rctx, buf, qn)
            if rc != C_OK:
                break
            if p.x_double:
                rc = _quantize_block(<const double*>p.x + pos // p.width, p.acc + pos, qn // p.width,
                                     p.width, p.scale, p.clip, p.weight, buf)
            else:
                rc = _quantize_block(<const float*>p.x + pos // p.width, p.acc + pos, qn // p.width,
                                     p.width, p.scale, p.clip, p.weight, buf)
            if rc != C_OK:
                break
        for k in range(p.ninputs):
            _add_words(p.acc + pos, p.inputs[k] + pos, n, p.width, p.inp_sign)
        for k in range(p.nkeys):
            rc = _keystream(ctx[k], buf, n)
            if rc != C_OK:
                break
            _add_words(p.acc + pos, buf, n, p.width, p.signs[k])
        if rc != C_OK:
            break
        if p.leaves != NULL:
            hsrc = p.inputs[0] if p.hash_input else p.acc
            if pos % CHUNK == 0:
                SHA256_Init(&sha)
                SHA256_Update(&sha, &zero, 1)
            SHA256_Update(&sha, hsrc + pos, n)
            if (pos + n) % CHUNK == 0 or pos + n == p.nbytes:
                SHA256_Final(p.leaves + (pos // CHUNK) * 32, &sha)
        pos += n
    for k in range(p.nkeys):
        if ctx[k] != NULL:
            EVP_CIPHER_CTX_free(ctx[k])
    if rctx != NULL:
        EVP_CIPHER_CTX_free(rctx)
    free(ctx)
    free(buf)
    return rc


def vector_pass(uint8_t[::1] acc, int width, object x, double scale, double clip, double weight,
                const uint8_t[::1] rkey, object inp, int inp_sign, const uint8_t[:, ::1] keys,
                const int8_t[::1] signs, uint8_t[:, ::1] leaves, bint hash_input, int nthreads) -> int:
    """One fused pass over the ring vector ``acc`` (its byte view), in this order:

    1. if ``x`` (a contiguous float32/float64 array) is not None: its stochastic rounding
       into acc's first len(x) words, exactly as ``quantize`` with ``rkey``;
    2. if ``inp`` (a contiguous buffer of acc's size) is not None: acc += inp_sign * inp;
    3. acc += sum_k signs[k] * mask(keys[k]);
    4. if ``leaves`` has rows: leaves[i] = SHA-256(0x00 || chunk i) over CHUNK-byte chunks of
       inp (``hash_input``) or of the result, one row per chunk.

    Parallel over chunk-aligned ranges; the caller validates sizes. Returns a code.
    """
    cdef Pass p
    cdef const uint8_t[::1] iv
    cdef const uint8_t* one[1]
    cdef Py_ssize_t nbytes = acc.shape[0]
    if nbytes == 0:
        return C_OK
    _start(&p, &acc[0], nbytes, width)
    if x is not None:
        _set_x(&p, x, scale, clip, weight, &rkey[0])
    p.inp_sign = inp_sign
    if inp is not None:
        iv = inp
        one[0] = &iv[0]
        p.inputs = one
        p.ninputs = 1
    p.nkeys = keys.shape[0]
    p.keys = &keys[0, 0] if p.nkeys else NULL
    p.signs = &signs[0] if p.nkeys else NULL
    p.leaves = &leaves[0, 0] if leaves.shape[0] else NULL
    p.hash_input = 1 if (hash_input and p.ninputs == 1) else 0
    return _run(&p, nthreads)


cdef int _run(const Pass* p, int nthreads):
    cdef Py_ssize_t nbytes = p.nbytes, nchunks, per, t, lo, hi
    cdef int rc = C_OK, nt = nthreads
    nchunks = (nbytes + CHUNK - 1) // CHUNK
    if nbytes < PAR_MIN or nt < 2 or nchunks < 2:
        with nogil:
            rc = _pass_range(p, 0, nbytes)
        return rc
    if nt > nchunks:
        nt = <int>nchunks
    per = ((nchunks + nt - 1) // nt) * CHUNK
    for t in prange(nt, nogil=True, num_threads=nt, schedule="static"):
        lo = t * per
        hi = lo + per
        if hi > nbytes:
            hi = nbytes
        if lo < nbytes:
            rc |= _pass_range(p, lo, hi)
    return rc


def hkdf_many(const uint8_t[:, ::1] ikm, const uint8_t[::1] salt, tuple infos, uint8_t[:, ::1] out,
              int nthreads) -> int:
    """out[i] = HKDF-SHA256(ikm[i], salt, infos[i]) with len(out[i]) bytes (RFC 5869, OpenSSL's
    EVP_KDF "HKDF"), parallel over i. ``infos`` holds non-empty bytes, kept alive by the tuple
    (an empty info on a reused context crashes OpenSSL 3.0's HKDF: such an item fails here
    instead); an empty salt means RFC 5869's default (HashLen zeros). Returns the number of
    failed items."""
    cdef Py_ssize_t n = ikm.shape[0], i, k
    cdef const uint8_t** ip = <const uint8_t**>malloc((n + 1) * sizeof(uint8_t*))
    cdef Py_ssize_t* il = <Py_ssize_t*>malloc((n + 1) * sizeof(Py_ssize_t))
    cdef const uint8_t[::1] view
    cdef int failed = 0
    cdef EVP_KDF_CTX* ctx
    cdef const uint8_t* sp = &salt[0] if salt.shape[0] else NULL
    cdef size_t sl = salt.shape[0]
    cdef int nt = nthreads if n >= 64 else 1
    if ip == NULL or il == NULL:
        free(ip)
        free(il)
        raise MemoryError()
    try:
        for i in range(n):
            view = infos[i]
            ip[i] = &view[0] if view.shape[0] else sp
            il[i] = view.shape[0]
        for k in prange(nt, nogil=True, num_threads=nt, schedule="static"):
            ctx = fl_hkdf_new(sp, sl)
            if ctx == NULL:
                failed += 1
            else:
                i = k
                while i < n:
                    if il[i] == 0:
                        failed += 1
                    else:
                        failed += fl_hkdf(ctx, &ikm[i, 0], ikm.shape[1], ip[i], il[i], &out[i, 0], out.shape[1])
                    i = i + nt
                EVP_KDF_CTX_free(ctx)
        return failed
    finally:
        free(ip)
        free(il)
