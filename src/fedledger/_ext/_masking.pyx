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

x25519_many batches RFC 7748 X25519 through libsodium (linked for this module only), for the
pairwise seeds of a client with all its neighbours.
"""

from libc.stdint cimport uint8_t, uint32_t, uint64_t, int64_t, int8_t
from libc.string cimport memset
from libc.stdlib cimport malloc, free
from cpython.object cimport PyObject
from cython.parallel cimport prange

cdef extern from "sodium.h" nogil:
    int sodium_init()
    int crypto_scalarmult(unsigned char* q, const unsigned char* n, const unsigned char* p)

if sodium_init() < 0:
    raise ImportError("libsodium could not be initialised: sodium_init() returned -1")

cdef extern from "openssl/evp.h" nogil:
    ctypedef struct EVP_CIPHER_CTX:
        pass
    ctypedef struct EVP_CIPHER:
        pass
    EVP_CIPHER_CTX* EVP_CIPHER_CTX_new()
    void EVP_CIPHER_CTX_free(EVP_CIPHER_CTX* c)
    const EVP_CIPHER* EVP_aes_128_ctr()
    int EVP_EncryptInit_ex(EVP_CIPHER_CTX* c, const EVP_CIPHER* t, void* impl,
                           const unsigned char* key, const unsigned char* iv)
    int EVP_EncryptUpdate(EVP_CIPHER_CTX* c, unsigned char* out, int* outl,
                          const unsigned char* inp, int inl)

cdef enum:
    KEY = 16
    # Bytes per block of work: big enough to amortise the EVP call, small enough for L2.
    BLOCK = 32768
    # Below this many bytes one thread does all.
    PAR_MIN = 262144

# Return codes are bits: parallel ranges OR theirs together.
cdef enum:
    C_OK = 0
    C_ERR_ALLOC = 1
    C_ERR_CIPHER = 2
    C_ERR_NONFINITE = 4

OK = C_OK
ERR_ALLOC = C_ERR_ALLOC
ERR_CIPHER = C_ERR_CIPHER
ERR_NONFINITE = C_ERR_NONFINITE


cdef inline void _iv(uint64_t offset, uint8_t* iv) noexcept nogil:
    """The counter block for byte ``offset`` (a multiple of 16): big-endian offset / 16."""
    cdef uint64_t blk = offset >> 4
    cdef int i
    for i in range(8):
        iv[i] = 0
    for i in range(8):
        iv[15 - i] = <uint8_t>(blk >> (8 * i))


cdef int _keystream(EVP_CIPHER_CTX* c, uint8_t* buf, Py_ssize_t n) noexcept nogil:
    """Next n bytes of c's keystream into buf (encrypting zeros in place)."""
    cdef int outl = 0
    memset(buf, 0, n)
    if EVP_EncryptUpdate(c, buf, &outl, buf, <int>n) != 1 or outl != n:
        return C_ERR_CIPHER
    return C_OK


cdef int _range(uint8_t* acc, Py_ssize_t lo, Py_ssize_t hi, int width,
                const uint8_t** inputs, Py_ssize_t ninputs,
                const uint8_t* keys, const int8_t* signs, Py_ssize_t nkeys) noexcept nogil:
    """acc[lo:hi] += sum of inputs[lo:hi] + sum_k signs[k] * keystream_k[lo:hi] (ring words)."""
    cdef EVP_CIPHER_CTX** ctx = NULL
    cdef uint8_t* buf = NULL
    cdef uint8_t iv[16]
    cdef Py_ssize_t k, j, i, pos, n, words
    cdef int rc = C_OK
    cdef uint32_t* a32
    cdef uint64_t* a64
    cdef const uint32_t* s32
    cdef const uint64_t* s64
    if hi <= lo:
        return C_OK
    if nkeys > 0:
        ctx = <EVP_CIPHER_CTX**>malloc(nkeys * sizeof(EVP_CIPHER_CTX*))
        buf = <uint8_t*>malloc(BLOCK)
        if ctx == NULL or buf == NULL:
            free(ctx)
            free(buf)
            return C_ERR_ALLOC
        for k in range(nkeys):
            ctx[k] = NULL
        _iv(<uint64_t>lo, iv)
        for k in range(nkeys):
            ctx[k] = EVP_CIPHER_CTX_new()
            if ctx[k] == NULL or EVP_EncryptInit_ex(ctx[k], EVP_aes_128_ctr(), NULL, keys + k * KEY, iv) != 1:
                rc = C_ERR_CIPHER
                break
    pos = lo
    while rc == C_OK and pos < hi:
        n = hi - pos
        if n > BLOCK:
            n = BLOCK
        if width == 4:
            words = n >> 2
            a32 = <uint32_t*>(acc + pos)
            for j in range(ninputs):
                s32 = <const uint32_t*>(inputs[j] + pos)
                for i in range(words):
                    a32[i] += s32[i]
            for k in range(nkeys):
                rc = _keystream(ctx[k], buf, n)
                if rc != C_OK:
                    break
                s32 = <const uint32_t*>buf
                if signs[k] > 0:
                    for i in range(words):
                        a32[i] += s32[i]
                else:
                    for i in range(words):
                        a32[i] -= s32[i]
        else:
            words = n >> 3
            a64 = <uint64_t*>(acc + pos)
            for j in range(ninputs):
                s64 = <const uint64_t*>(inputs[j] + pos)
                for i in range(words):
                    a64[i] += s64[i]
            for k in range(nkeys):
                rc = _keystream(ctx[k], buf, n)
                if rc != C_OK:
                    break
                s64 = <const uint64_t*>buf
                if signs[k] > 0:
                    for i in range(words):
                        a64[i] += s64[i]
                else:
                    for i in range(words):
                        a64[i] -= s64[i]
        pos += n
    if ctx != NULL:
        for k in range(nkeys):
            if ctx[k] != NULL:
                EVP_CIPHER_CTX_free(ctx[k])
        free(ctx)
    free(buf)
    return rc


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
    cdef uint8_t* base = &acc[0] if nbytes > 0 else NULL
    cdef const uint8_t* kp = &keys[0, 0] if nkeys > 0 else NULL
    cdef const int8_t* sp = &signs[0] if nkeys > 0 else NULL
    cdef Py_ssize_t per, t, lo, hi
    cdef int rc = C_OK, nt = nthreads
    if nbytes == 0:
        return C_OK
    if nbytes < PAR_MIN or nt < 2:
        with nogil:
            rc = _range(base, 0, nbytes, width, tup, ninputs, kp, sp, nkeys)
        return rc
    # One contiguous range per thread, aligned to whole AES blocks and ring words.
    per = ((nbytes + nt - 1) // nt + 15) & ~(<Py_ssize_t>15)
    for t in prange(nt, nogil=True, num_threads=nt, schedule="static"):
        lo = t * per
        hi = lo + per
        if hi > nbytes:
            hi = nbytes
        if lo < nbytes:
            rc |= _range(base, lo, hi, width, tup, ninputs, kp, sp, nkeys)
    return rc


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


cdef int _quantize_range(const real* x, uint8_t* out, Py_ssize_t lo, Py_ssize_t hi, int width,
                         double scale, double clip, double weight, const uint8_t* key) noexcept nogil:
    """out[lo:hi] = floor(clip(x) * weight * scale + u) mod 2^bits, u uniform in [0, 1) from
    32 (width 4) or 53 (width 8) keystream bits per element: stochastic rounding."""
    cdef EVP_CIPHER_CTX* c = EVP_CIPHER_CTX_new()
    cdef uint8_t iv[16]
    cdef uint8_t* buf = <uint8_t*>malloc(BLOCK)
    cdef Py_ssize_t pos = lo, n, i, per
    cdef int rc = C_OK
    cdef double v, u, y
    cdef int64_t q
    cdef const uint32_t* r32
    cdef const uint64_t* r64
    cdef uint32_t* o32 = <uint32_t*>out
    cdef uint64_t* o64 = <uint64_t*>out
    # Randomness is 4 (width 4) or 8 (width 8) bytes per element; the stream offset follows.
    if c == NULL or buf == NULL:
        rc = C_ERR_ALLOC
    else:
        _iv(<uint64_t>(lo * width), iv)
        if EVP_EncryptInit_ex(c, EVP_aes_128_ctr(), NULL, key, iv) != 1:
            rc = C_ERR_CIPHER
    per = BLOCK // width
    while rc == C_OK and pos < hi:
        n = hi - pos
        if n > per:
            n = per
        rc = _keystream(c, buf, n * width)
        if rc != C_OK:
            break
        r32 = <const uint32_t*>buf
        r64 = <const uint64_t*>buf
        for i in range(n):
            v = <double>x[pos + i]
            if not (v == v) or v - v != 0.0:
                rc = C_ERR_NONFINITE
                break
            if v > clip:
                v = clip
            elif v < -clip:
                v = -clip
            if width == 4:
                u = <double>r32[i] * 2.3283064365386963e-10  # 2^-32
            else:
                u = <double>(r64[i] >> 11) * 1.1102230246251565e-16  # 2^-53
            y = v * weight * scale + u
            q = <int64_t>y  # truncates toward zero; floor() is a libm call on baseline x86-64
            if <double>q > y:
                q -= 1
            if width == 4:
                o32[pos + i] = <uint32_t>q
            else:
                o64[pos + i] = <uint64_t>q
        pos += n
    if c != NULL:
        EVP_CIPHER_CTX_free(c)
    free(buf)
    return rc


def quantize(const real[::1] x, uint8_t[::1] out, int width, double scale, double clip,
             double weight, const uint8_t[::1] key, int nthreads) -> int:
    """Stochastic rounding of clip(x) * weight * scale into the ring (see _quantize_range).

    ``out`` is the byte view of a uint32/uint64 array with at least len(x) words; ``key`` is a
    fresh 16-byte key for the rounding randomness. C_ERR_NONFINITE if x holds NaN or inf
    (``out`` is then garbage). The caller checks that |clip * weight * scale| + 1 fits.
    """
    cdef Py_ssize_t n = x.shape[0]
    cdef Py_ssize_t per, t, lo, hi
    cdef int rc = C_OK, nt = nthreads
    if n == 0:
        return C_OK
    if n * width < PAR_MIN or nt < 2:
        with nogil:
            rc = _quantize_range(&x[0], &out[0], 0, n, width, scale, clip, weight, &key[0])
        return rc
    per = ((n + nt - 1) // nt + 3) & ~(<Py_ssize_t>3)  # whole AES blocks of randomness per range
    for t in prange(nt, nogil=True, num_threads=nt, schedule="static"):
        lo = t * per
        hi = lo + per
        if hi > n:
            hi = n
        if lo < n:
            rc |= _quantize_range(&x[0], &out[0], lo, hi, width, scale, clip, weight, &key[0])
    return rc


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
