# cython: language_level=3
"""Build facts and the OpenMP runtime: library versions, whether OpenMP is compiled in."""

cdef extern from "openssl/crypto.h":
    const char* OpenSSL_version(int t)
    int OPENSSL_VERSION

cdef extern from "gmp.h":
    const char* gmp_version

cdef extern from *:
    """
    #if FEDLEDGER_OPENMP && defined(_OPENMP)
    #include <omp.h>
    static int fl_openmp_enabled(void) { return 1; }
    static int fl_omp_max_threads(void) { return omp_get_max_threads(); }
    #else
    static int fl_openmp_enabled(void) { return 0; }
    static int fl_omp_max_threads(void) { return 1; }
    #endif
    """
    int fl_openmp_enabled()
    int fl_omp_max_threads()


def openssl_version() -> str:
    return OpenSSL_version(OPENSSL_VERSION).decode("ascii")


def gmp_version_string() -> str:
    return gmp_version.decode("ascii")


def openmp_enabled() -> bool:
    return bool(fl_openmp_enabled())


def omp_max_threads() -> int:
    return fl_omp_max_threads()
