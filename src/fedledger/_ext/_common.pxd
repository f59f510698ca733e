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

cdef extern from "openssl/evp.h" nogil:
    ctypedef struct EVP_PKEY:
        pass
    ctypedef struct EVP_MD_CTX:
        pass
    ctypedef struct ENGINE:
        pass
    ctypedef struct EVP_PKEY_CTX:
        pass
    ctypedef struct EVP_MD:
        pass
    int EVP_PKEY_ED25519
    EVP_PKEY* EVP_PKEY_new_raw_public_key(int type, ENGINE* e, const unsigned char* pub, size_t len)
    void EVP_PKEY_free(EVP_PKEY* pkey)
    EVP_MD_CTX* EVP_MD_CTX_new()
    void EVP_MD_CTX_free(EVP_MD_CTX* ctx)
    int EVP_MD_CTX_reset(EVP_MD_CTX* ctx)
    int EVP_DigestVerifyInit(EVP_MD_CTX* ctx, EVP_PKEY_CTX** pctx, const EVP_MD* type,
                             ENGINE* e, EVP_PKEY* pkey)
    int EVP_DigestVerify(EVP_MD_CTX* ctx, const unsigned char* sigret, size_t siglen,
                         const unsigned char* tbs, size_t tbslen)

cdef extern from "openssl/err.h" nogil:
    void ERR_clear_error()
