# cython: language_level=3
"""AES-256-GCM over a message cut into records, through OpenSSL's EVP (AES-NI and carry-less
multiply), parallel over the records.

A message of n bytes is cut into records of ``record`` bytes (the last may be shorter; an
empty message is one empty record). Record i is sealed under the nonce ``base`` XOR i, with i
big-endian in the nonce's last 8 bytes (the per-record nonce of TLS 1.3, RFC 8446 §5.3), and
with associated data ``aad`` followed, when ``index_aad``, by i as 8 big-endian bytes. The
output holds ciphertext_i || tag_i (16 bytes) for each record, in order.

Callers (fedledger.crypto.seal) validate sizes; these functions return codes.
"""

from libc.stdint cimport uint8_t, uint64_t
from libc.string cimport memcpy, memset
from cpython.bytes cimport PyBytes_FromStringAndSize, PyBytes_AS_STRING
from cython.parallel cimport prange

from fedledger._ext._common cimport (
    EVP_CIPHER_CTX, EVP_CIPHER_CTX_new, EVP_CIPHER_CTX_free, EVP_aes_256_gcm, EVP_EncryptInit_ex,
    EVP_EncryptUpdate, EVP_EncryptFinal_ex, EVP_DecryptInit_ex, EVP_DecryptUpdate, EVP_DecryptFinal_ex,
    EVP_CIPHER_CTX_ctrl, EVP_CTRL_GCM_GET_TAG, EVP_CTRL_GCM_SET_TAG,
)

cdef enum:
    TAG = 16
    NONCE = 12

cdef enum:
    C_OK = 0
    C_ERR_CIPHER = 1
    C_ERR_TAG = 2

OK = C_OK
ERR_CIPHER = C_ERR_CIPHER
ERR_TAG = C_ERR_TAG
TAG_SIZE = TAG
NONCE_SIZE = NONCE


cdef inline void _nonce(const uint8_t* base, uint64_t i, uint8_t* out) noexcept nogil:
    cdef int k
    memcpy(out, base, NONCE)
    for k in range(8):
        out[NONCE - 1 - k] ^= <uint8_t>(i >> (8 * k))


cdef inline void _index(uint64_t i, uint8_t* out) noexcept nogil:
    cdef int k
    for k in range(8):
        out[7 - k] = <uint8_t>(i >> (8 * k))


cdef int _seal_one(const uint8_t* key, const uint8_t* base, const uint8_t* aad, Py_ssize_t aadlen,
                   bint index_aad, uint64_t i, const uint8_t* src, Py_ssize_t n, uint8_t* dst) noexcept nogil:
    """dst[0:n] || dst[n:n+16] = the sealed record i of src[0:n]."""
    cdef EVP_CIPHER_CTX* c = EVP_CIPHER_CTX_new()
    cdef uint8_t nonce[NONCE]
    cdef uint8_t idx[8]
    cdef int outl = 0, rc = C_ERR_CIPHER
    if c == NULL:
        return C_ERR_CIPHER
    _nonce(base, i, nonce)
    _index(i, idx)
    if (EVP_EncryptInit_ex(c, EVP_aes_256_gcm(), NULL, key, nonce) == 1
            and (aadlen == 0 or EVP_EncryptUpdate(c, NULL, &outl, aad, <int>aadlen) == 1)
            and (not index_aad or EVP_EncryptUpdate(c, NULL, &outl, idx, 8) == 1)
            and (n == 0 or (EVP_EncryptUpdate(c, dst, &outl, src, <int>n) == 1 and outl == n))
            and EVP_EncryptFinal_ex(c, dst + n, &outl) == 1
            and EVP_CIPHER_CTX_ctrl(c, EVP_CTRL_GCM_GET_TAG, TAG, dst + n) == 1):
        rc = C_OK
    EVP_CIPHER_CTX_free(c)
    return rc


cdef int _open_one(const uint8_t* key, const uint8_t* base, const uint8_t* aad, Py_ssize_t aadlen,
                   bint index_aad, uint64_t i, const uint8_t* src, Py_ssize_t n, uint8_t* dst) noexcept nogil:
    """dst[0:n] = the plaintext of record i, src[0:n] || src[n:n+16] (C_ERR_TAG if forged)."""
    cdef EVP_CIPHER_CTX* c = EVP_CIPHER_CTX_new()
    cdef uint8_t nonce[NONCE]
    cdef uint8_t idx[8]
    cdef uint8_t tag[TAG]
    cdef int outl = 0, rc = C_ERR_CIPHER
    if c == NULL:
        return C_ERR_CIPHER
    _nonce(base, i, nonce)
    _index(i, idx)
    memcpy(tag, src + n, TAG)
    if (EVP_DecryptInit_ex(c, EVP_aes_256_gcm(), NULL, key, nonce) == 1
            and (aadlen == 0 or EVP_DecryptUpdate(c, NULL, &outl, aad, <int>aadlen) == 1)
            and (not index_aad or EVP_DecryptUpdate(c, NULL, &outl, idx, 8) == 1)
            and (n == 0 or (EVP_DecryptUpdate(c, dst, &outl, src, <int>n) == 1 and outl == n))
            and EVP_CIPHER_CTX_ctrl(c, EVP_CTRL_GCM_SET_TAG, TAG, tag) == 1):
        rc = C_OK if EVP_DecryptFinal_ex(c, dst + n, &outl) > 0 else C_ERR_TAG
    EVP_CIPHER_CTX_free(c)
    return rc


def seal_records(const uint8_t[::1] key, const uint8_t[::1] base, const uint8_t[::1] aad, bint index_aad,
         const uint8_t[::1] data, Py_ssize_t record, const uint8_t[::1] prefix, int nthreads):
    """(code, bytes): ``prefix`` followed by the sealed records of ``data``. The bytes object
    is made here and filled before anyone else sees it."""
    cdef Py_ssize_t n = data.shape[0]
    cdef Py_ssize_t count = (n + record - 1) // record if n else 1
    cdef Py_ssize_t plen = prefix.shape[0], i, lo, m
    cdef object out = PyBytes_FromStringAndSize(NULL, plen + n + count * TAG)
    cdef uint8_t* dst = <uint8_t*>PyBytes_AS_STRING(out)
    cdef const uint8_t* src = &data[0] if n else <const uint8_t*>dst
    cdef const uint8_t* ap = &aad[0] if aad.shape[0] else NULL
    cdef Py_ssize_t aadlen = aad.shape[0]
    cdef int rc = C_OK
    if plen:
        memcpy(dst, &prefix[0], plen)
    dst += plen
    for i in prange(count, nogil=True, num_threads=nthreads if count > 1 else 1, schedule="static"):
        lo = i * record
        m = n - lo
        if m > record:
            m = record
        rc |= _seal_one(&key[0], &base[0], ap, aadlen, index_aad, <uint64_t>i, src + lo, m, dst + lo + i * TAG)
    return rc, out


def open_records(const uint8_t[::1] key, const uint8_t[::1] base, const uint8_t[::1] aad, bint index_aad,
         const uint8_t[::1] sealed, Py_ssize_t record, uint8_t[::1] out, int nthreads) -> int:
    """out[0:n] = the plaintext of ``sealed`` (records of ``record`` bytes, n = len(out)).
    Any forged record gives C_ERR_TAG, and ``out`` is then wiped to zeros."""
    cdef Py_ssize_t n = out.shape[0]
    cdef Py_ssize_t count = (n + record - 1) // record if n else 1
    cdef Py_ssize_t i, lo, m
    cdef const uint8_t* src = &sealed[0]
    cdef uint8_t empty[TAG]
    cdef uint8_t* dst = &out[0] if n else empty
    cdef const uint8_t* ap = &aad[0] if aad.shape[0] else NULL
    cdef Py_ssize_t aadlen = aad.shape[0]
    cdef int rc = C_OK
    for i in prange(count, nogil=True, num_threads=nthreads if count > 1 else 1, schedule="static"):
        lo = i * record
        m = n - lo
        if m > record:
            m = record
        rc |= _open_one(&key[0], &base[0], ap, aadlen, index_aad, <uint64_t>i, src + lo + i * TAG,
                        m, dst + lo)
    if rc != C_OK and n:
        memset(dst, 0, n)
    return rc
