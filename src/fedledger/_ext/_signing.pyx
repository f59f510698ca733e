# cython: language_level=3
"""Batched Ed25519 verification over OpenSSL 3's EVP interface.

One rule decides every item, here and nowhere else (fedledger.crypto.signing calls this
kernel for a single signature too, as a batch of one, so the two paths cannot diverge):

1. the signature is exactly 64 bytes;
2. its scalar S (bytes 32..63, little-endian) is < L, the group order (malleability);
3. the public key is not one of the 14 encodings of the 8 points of small order;
4. OpenSSL's Ed25519 verify (RFC 8032, cofactorless) accepts it.

Checks 2 and 3 run before OpenSSL, on bytes only. Each item gets a reason code; 0 is valid.
The caller (fedledger.crypto.signing) validates types and shapes: every key is 32 bytes, and
every message and signature is exact bytes. The loop releases the GIL and runs under OpenMP.
"""

from libc.stdint cimport uint8_t
from libc.stdlib cimport malloc, free
from libc.string cimport memcmp
from cpython.bytes cimport PyBytes_AS_STRING, PyBytes_GET_SIZE, PyBytes_CheckExact
from cpython.tuple cimport PyTuple_GET_ITEM, PyTuple_GET_SIZE
from cython.parallel cimport prange

from fedledger._ext._common cimport (
    EVP_PKEY, EVP_MD_CTX, EVP_PKEY_ED25519, EVP_PKEY_new_raw_public_key, EVP_PKEY_free,
    EVP_MD_CTX_new, EVP_MD_CTX_free, EVP_MD_CTX_reset, EVP_DigestVerifyInit, EVP_DigestVerify,
    ERR_clear_error,
)

cdef enum:
    KEY_SIZE = 32
    SIG_SIZE = 64
    N_SMALL = 14
    # One verify costs ~60 us, so even a few items amortise starting the thread team.
    PAR_MIN = 4
    CHUNK = 16

# Reason codes, one per item (mirrored in fedledger.crypto.signing).
cdef enum:
    R_VALID = 0
    R_BAD_LENGTH = 1       # the signature is not 64 bytes
    R_NON_CANONICAL_S = 2  # S >= L
    R_SMALL_ORDER_KEY = 3  # the public key is a point of order dividing 8
    R_BAD_KEY = 4          # OpenSSL refused the public key
    R_BAD_SIGNATURE = 5    # OpenSSL's verify failed (wrong key, message, R, or anything else)
    R_NO_MEMORY = 6        # OpenSSL could not allocate a context

VALID = R_VALID
BAD_LENGTH = R_BAD_LENGTH
NON_CANONICAL_S = R_NON_CANONICAL_S
SMALL_ORDER_KEY = R_SMALL_ORDER_KEY
BAD_KEY = R_BAD_KEY
BAD_SIGNATURE = R_BAD_SIGNATURE
NO_MEMORY = R_NO_MEMORY

# L = 2^252 + 27742317777372353535851937790883648493, little-endian.
cdef uint8_t[32] ORDER_L = [
    0xed, 0xd3, 0xf5, 0x5c, 0x1a, 0x63, 0x12, 0x58, 0xd6, 0x9c, 0xf7, 0xa2, 0xde, 0xf9, 0xde, 0x14,
    0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x10,
]

# Every 32-byte string that decodes (leniently: y >= p allowed, x = 0 with the sign bit set
# allowed) to a point of order 1, 2, 4 or 8. tests/reference/ed25519_ref.py derives the same
# list from the curve equation, and tests/test_signing.py checks that the two agree.
cdef uint8_t[14][32] SMALL_ORDER = [
    [0x00] * 32,
    [0x00] * 31 + [0x80],
    [0x01] + [0x00] * 31,
    [0x01] + [0x00] * 30 + [0x80],
    [0x26, 0xe8, 0x95, 0x8f, 0xc2, 0xb2, 0x27, 0xb0, 0x45, 0xc3, 0xf4, 0x89, 0xf2, 0xef, 0x98, 0xf0,
     0xd5, 0xdf, 0xac, 0x05, 0xd3, 0xc6, 0x33, 0x39, 0xb1, 0x38, 0x02, 0x88, 0x6d, 0x53, 0xfc, 0x05],
    [0x26, 0xe8, 0x95, 0x8f, 0xc2, 0xb2, 0x27, 0xb0, 0x45, 0xc3, 0xf4, 0x89, 0xf2, 0xef, 0x98, 0xf0,
     0xd5, 0xdf, 0xac, 0x05, 0xd3, 0xc6, 0x33, 0x39, 0xb1, 0x38, 0x02, 0x88, 0x6d, 0x53, 0xfc, 0x85],
    [0xc7, 0x17, 0x6a, 0x70, 0x3d, 0x4d, 0xd8, 0x4f, 0xba, 0x3c, 0x0b, 0x76, 0x0d, 0x10, 0x67, 0x0f,
     0x2a, 0x20, 0x53, 0xfa, 0x2c, 0x39, 0xcc, 0xc6, 0x4e, 0xc7, 0xfd, 0x77, 0x92, 0xac, 0x03, 0x7a],
    [0xc7, 0x17, 0x6a, 0x70, 0x3d, 0x4d, 0xd8, 0x4f, 0xba, 0x3c, 0x0b, 0x76, 0x0d, 0x10, 0x67, 0x0f,
     0x2a, 0x20, 0x53, 0xfa, 0x2c, 0x39, 0xcc, 0xc6, 0x4e, 0xc7, 0xfd, 0x77, 0x92, 0xac, 0x03, 0xfa],
    [0xec] + [0xff] * 30 + [0x7f],
    [0xec] + [0xff] * 31,
    [0xed] + [0xff] * 30 + [0x7f],
    [0xed] + [0xff] * 31,
    [0xee] + [0xff] * 30 + [0x7f],
    [0xee] + [0xff] * 31,
]


cdef inline bint _scalar_canonical(const uint8_t* s) noexcept nogil:
    """S < L, comparing the little-endian bytes from the most significant end."""
    cdef int i
    for i in range(31, -1, -1):
        if s[i] < ORDER_L[i]:
            return True
        if s[i] > ORDER_L[i]:
            return False
    return False  # S == L


cdef inline bint _small_order(const uint8_t* pk) noexcept nogil:
    cdef int i
    for i in range(N_SMALL):
        if memcmp(pk, SMALL_ORDER[i], KEY_SIZE) == 0:
            return True
    return False


cdef inline uint8_t _verify_one(EVP_MD_CTX* ctx, const uint8_t* pk, const uint8_t* msg,
                                size_t mlen, const uint8_t* sig, size_t slen) noexcept nogil:
    cdef EVP_PKEY* pkey
    cdef uint8_t code
    if slen != SIG_SIZE:
        return R_BAD_LENGTH
    if not _scalar_canonical(sig + 32):
        return R_NON_CANONICAL_S
    if _small_order(pk):
        return R_SMALL_ORDER_KEY
    if ctx == NULL:
        return R_NO_MEMORY
    pkey = EVP_PKEY_new_raw_public_key(EVP_PKEY_ED25519, NULL, pk, KEY_SIZE)
    if pkey == NULL:
        ERR_clear_error()
        return R_BAD_KEY
    if EVP_DigestVerifyInit(ctx, NULL, NULL, NULL, pkey) != 1:
        code = R_BAD_KEY
    elif EVP_DigestVerify(ctx, sig, SIG_SIZE, msg, mlen) == 1:
        code = R_VALID
    else:
        code = R_BAD_SIGNATURE
    if code != R_VALID:
        ERR_clear_error()  # the error queue is per thread; do not let it grow
    EVP_MD_CTX_reset(ctx)
    EVP_PKEY_free(pkey)
    return code


cdef void _verify_range(const uint8_t* pks, const uint8_t** msgs, const size_t* mlens,
                        const uint8_t** sigs, const size_t* slens, Py_ssize_t start,
                        Py_ssize_t stop, uint8_t* out) noexcept nogil:
    """Items [start, stop) with one digest context, reset between items."""
    cdef Py_ssize_t i
    cdef EVP_MD_CTX* ctx = EVP_MD_CTX_new()
    for i in range(start, stop):
        out[i] = _verify_one(ctx, pks + i * KEY_SIZE, msgs[i], mlens[i], sigs[i], slens[i])
    EVP_MD_CTX_free(ctx)


cdef void _verify_all(const uint8_t* pks, const uint8_t** msgs, const size_t* mlens,
                      const uint8_t** sigs, const size_t* slens, Py_ssize_t n,
                      uint8_t* out, int nthreads) noexcept nogil:
    cdef Py_ssize_t c, nchunks = (n + CHUNK - 1) // CHUNK
    if n >= PAR_MIN and nthreads > 1:
        # Chunks of CHUNK items, handed out dynamically: a busy core (the machine is shared)
        # does not hold up the whole batch, and each chunk reuses one digest context.
        for c in prange(nchunks, num_threads=nthreads, schedule="dynamic"):
            _verify_range(pks, msgs, mlens, sigs, slens, c * CHUNK,
                          min(n, (c + 1) * CHUNK), out)
    else:
        _verify_range(pks, msgs, mlens, sigs, slens, 0, n, out)


cdef int _gather(tuple items, const uint8_t** ptrs, size_t* lens) except -1:
    cdef Py_ssize_t i
    cdef object item
    for i in range(PyTuple_GET_SIZE(items)):
        item = <object>PyTuple_GET_ITEM(items, i)
        if not PyBytes_CheckExact(item):
            raise TypeError(f"item {i} is not bytes (the caller must check)")
        ptrs[i] = <const uint8_t*>PyBytes_AS_STRING(item)
        lens[i] = <size_t>PyBytes_GET_SIZE(item)
    return 0


def first_non_bytes(tuple items) -> int:
    """Index of the first element that is not exactly bytes, or -1."""
    cdef Py_ssize_t i
    for i in range(PyTuple_GET_SIZE(items)):
        if not PyBytes_CheckExact(<object>PyTuple_GET_ITEM(items, i)):
            return i
    return -1


def verify_batch(bytes public_keys, tuple messages, tuple signatures, uint8_t[::1] out,
                 int nthreads):
    """Reason code of each item into out[i] (0 = valid).

    public_keys is the n 32-byte keys concatenated; messages and signatures are tuples of
    n exact bytes objects; out has n entries. The caller checks all of it.
    """
    cdef Py_ssize_t n = PyTuple_GET_SIZE(messages)
    if (PyTuple_GET_SIZE(signatures) != n or out.shape[0] != n
            or PyBytes_GET_SIZE(public_keys) != n * KEY_SIZE):
        raise ValueError("inconsistent batch shapes (the caller must check)")
    if n == 0:
        return
    cdef const uint8_t** msgs = <const uint8_t**>malloc(n * sizeof(uint8_t*))
    cdef size_t* mlens = <size_t*>malloc(n * sizeof(size_t))
    cdef const uint8_t** sigs = <const uint8_t**>malloc(n * sizeof(uint8_t*))
    cdef size_t* slens = <size_t*>malloc(n * sizeof(size_t))
    cdef const uint8_t* pks = <const uint8_t*>PyBytes_AS_STRING(public_keys)
    try:
        if msgs == NULL or mlens == NULL or sigs == NULL or slens == NULL:
            raise MemoryError()
        _gather(messages, msgs, mlens)
        _gather(signatures, sigs, slens)
        # The tuples (held by the caller's frame) keep every bytes object alive.
        with nogil:
            _verify_all(pks, msgs, mlens, sigs, slens, n, &out[0], nthreads)
    finally:
        free(msgs)
        free(mlens)
        free(sigs)
        free(slens)


def scalar_is_canonical(bytes s) -> bool:
    """S < L for a 32-byte little-endian scalar (exposed for the tests)."""
    if PyBytes_GET_SIZE(s) != 32:
        raise ValueError("scalar must be 32 bytes")
    return _scalar_canonical(<const uint8_t*>PyBytes_AS_STRING(s))


def is_small_order(bytes pk) -> bool:
    """True if the 32-byte key is one of the small-order encodings."""
    if PyBytes_GET_SIZE(pk) != KEY_SIZE:
        raise ValueError("public key must be 32 bytes")
    return _small_order(<const uint8_t*>PyBytes_AS_STRING(pk))


def small_order_encodings() -> list:
    """The blocklist, for the tests."""
    return [bytes(SMALL_ORDER[i][:KEY_SIZE]) for i in range(N_SMALL)]
