# Shared C declarations for the kernels: OpenSSL libcrypto, GMP, bit tricks.
from libc.stdint cimport uint8_t

cdef extern from "openssl/sha.h" nogil:
    ctypedef struct SHA256_CTX:
        pass
    int SHA256_Init(SHA256_CTX* c)
    int SHA256_Update(SHA256_CTX* c, const void* data, size_t n)
    int SHA256_Final(unsigned char* md, SHA256_CTX* c)

cdef extern from "openssl/crypto.h" nogil:
    int CRYPTO_memcmp(const void* a, const void* b, size_t n)

cdef extern from *:
    """
    static inline int fl_clz64(unsigned long long x) { return __builtin_clzll(x); }
    static inline int fl_ctz64(unsigned long long x) { return __builtin_ctzll(x); }
    """
    int fl_clz64(unsigned long long x) nogil
    int fl_ctz64(unsigned long long x) nogil
