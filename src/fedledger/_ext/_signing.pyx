# cython: language_level=3
"""Batched Ed25519 verification over libsodium's ``crypto_sign_ed25519_verify_detached``.

One rule decides every item, here and nowhere else (fedledger.crypto.signing calls this
kernel for a single signature too, as a batch of one, so the two paths cannot diverge).
The checks run in this order; the first that fails gives the item's reason code:

1. the signature is exactly 64 bytes (BAD_LENGTH);
2. its scalar S (bytes 32..63, little-endian) is < L, the group order (NON_CANONICAL_S);
3. the public key A is not one of the 14 encodings of the 8 points of small order
   (SMALL_ORDER_KEY);
4. A is canonical: its y coordinate (the low 255 bits) is < p = 2^255 - 19
   (NON_CANONICAL_KEY);
5. R (bytes 0..31) is not one of the same 14 small-order encodings (SMALL_ORDER_R);
6. libsodium's verify accepts it: A decodes to a curve point and [S]B - [k]A, encoded,
   equals the 32 bytes of R, k = SHA-512(R || A || M) mod L (RFC 8032, cofactorless).
   When it refuses, the item is BAD_KEY if A does not decode to a point, else BAD_SIGNATURE.

Checks 1-5 run before libsodium, on bytes only; they are exactly the checks libsodium
1.0.18 makes itself (tests/test_signing.py asserts the verdicts are equal), so the reason
is ours and the verdict does not move with libsodium's version. Each item gets a reason
code; 0 is valid. The caller (fedledger.crypto.signing) validates types and shapes: every
key is 32 bytes, and every message and signature is exact bytes. The loop releases the GIL
and runs under OpenMP; libsodium's verify is thread-safe once sodium_init() has run, which
this module does at import (and refuses to import if it fails).
"""

from libc.stdint cimport uint8_t
from libc.stdlib cimport malloc, free
from libc.string cimport memcmp
from cpython.bytes cimport PyBytes_AS_STRING, PyBytes_GET_SIZE, PyBytes_CheckExact
from cpython.tuple cimport PyTuple_GET_ITEM, PyTuple_GET_SIZE
from cython.parallel cimport prange

cdef extern from "sodium.h" nogil:
    int sodium_init()
    const char* sodium_version_string()
    int crypto_sign_ed25519_verify_detached(const unsigned char* sig, const unsigned char* m,
                                            unsigned long long mlen, const unsigned char* pk)
    int crypto_core_ed25519_add(unsigned char* r, const unsigned char* p, const unsigned char* q)

if sodium_init() < 0:
    raise ImportError("libsodium could not be initialised: sodium_init() returned -1")

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
    R_BAD_LENGTH = 1         # the signature is not 64 bytes
    R_NON_CANONICAL_S = 2    # S >= L
    R_SMALL_ORDER_KEY = 3    # the public key is a point of order dividing 8
    R_BAD_KEY = 4            # the public key does not decode to a curve point
    R_BAD_SIGNATURE = 5      # the equation fails (wrong key or message, R not a canonical point)
    R_NON_CANONICAL_KEY = 6  # the public key's y is >= p
    R_SMALL_ORDER_R = 7      # R is a point of order dividing 8

VALID = R_VALID
BAD_LENGTH = R_BAD_LENGTH
NON_CANONICAL_S = R_NON_CANONICAL_S
SMALL_ORDER_KEY = R_SMALL_ORDER_KEY
BAD_KEY = R_BAD_KEY
BAD_SIGNATURE = R_BAD_SIGNATURE
NON_CANONICAL_KEY = R_NON_CANONICAL_KEY
SMALL_ORDER_R = R_SMALL_ORDER_R

# The base point B, encoded: only used to ask libsodium whether a key decodes.
cdef uint8_t[32] BASE_POINT = [0x58] + [0x66] * 31

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


cdef inline bint _small_order(const uint8_t* enc) noexcept nogil:
    """The 32-byte point encoding (a key, or R) is on the blocklist."""
    cdef int i
    for i in range(N_SMALL):
        if memcmp(enc, SMALL_ORDER[i], KEY_SIZE) == 0:
            return True
    return False


cdef inline bint _key_canonical(const uint8_t* pk) noexcept nogil:
    """y < p, where y is the low 255 bits (the sign bit of x is not part of y).

    y >= p means byte 31 (without the sign bit) is 0x7f, bytes 30..1 are 0xff and byte 0 is
    >= 0xed: the same test as libsodium's ge25519_is_canonical.
    """
    cdef int i
    if (pk[31] & 0x7f) != 0x7f or pk[0] < 0xed:
        return True
    for i in range(1, 31):
        if pk[i] != 0xff:
            return True
    return False


cdef inline uint8_t _verify_one(const uint8_t* pk, const uint8_t* msg, size_t mlen,
                                const uint8_t* sig, size_t slen) noexcept nogil:
    cdef uint8_t[32] scratch
    if slen != SIG_SIZE:
        return R_BAD_LENGTH
    if not _scalar_canonical(sig + 32):
        return R_NON_CANONICAL_S
    if _small_order(pk):
        return R_SMALL_ORDER_KEY
    if not _key_canonical(pk):
        return R_NON_CANONICAL_KEY
    if _small_order(sig):
        return R_SMALL_ORDER_R
    if crypto_sign_ed25519_verify_detached(sig, msg, mlen, pk) == 0:
        return R_VALID
    # Failure path only: libsodium says -1 both when A is not a point and when the equation
    # fails. Decoding A again (its add refuses an undecodable operand) tells them apart.
    if crypto_core_ed25519_add(scratch, pk, BASE_POINT) != 0:
        return R_BAD_KEY
    return R_BAD_SIGNATURE


cdef void _verify_range(const uint8_t* pks, const uint8_t** msgs, const size_t* mlens,
                        const uint8_t** sigs, const size_t* slens, Py_ssize_t start,
                        Py_ssize_t stop, uint8_t* out) noexcept nogil:
    cdef Py_ssize_t i
    for i in range(start, stop):
        out[i] = _verify_one(pks + i * KEY_SIZE, msgs[i], mlens[i], sigs[i], slens[i])


cdef void _verify_all(const uint8_t* pks, const uint8_t** msgs, const size_t* mlens,
                      const uint8_t** sigs, const size_t* slens, Py_ssize_t n,
                      uint8_t* out, int nthreads) noexcept nogil:
    cdef Py_ssize_t c, nchunks = (n + CHUNK - 1) // CHUNK
    if n >= PAR_MIN and nthreads > 1:
        # Chunks of CHUNK items, handed out dynamically: a busy core (the machine is shared)
        # does not hold up the whole batch.
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


def key_is_canonical(bytes pk) -> bool:
    """True if the 32-byte key's y coordinate is below p (exposed for the tests)."""
    if PyBytes_GET_SIZE(pk) != KEY_SIZE:
        raise ValueError("public key must be 32 bytes")
    return _key_canonical(<const uint8_t*>PyBytes_AS_STRING(pk))


def libsodium_accepts(bytes pk, bytes msg, bytes sig) -> bool:
    """libsodium's own verdict, without this module's checks in front (for the tests)."""
    if PyBytes_GET_SIZE(pk) != KEY_SIZE or PyBytes_GET_SIZE(sig) != SIG_SIZE:
        raise ValueError("public key must be 32 bytes and signature 64 bytes")
    return crypto_sign_ed25519_verify_detached(
        <const uint8_t*>PyBytes_AS_STRING(sig), <const uint8_t*>PyBytes_AS_STRING(msg),
        <unsigned long long>PyBytes_GET_SIZE(msg), <const uint8_t*>PyBytes_AS_STRING(pk)) == 0


def libsodium_version() -> str:
    """The version of the libsodium this module runs against (sodium_version_string())."""
    return sodium_version_string().decode("ascii")
