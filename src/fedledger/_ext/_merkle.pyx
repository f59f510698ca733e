# cython: language_level=3
"""RFC 9162 Merkle kernels over OpenSSL's SHA-256.

Callers (fedledger.crypto.merkle) validate arguments; these functions trust shapes and
signal data-dependent failures by return codes. Hashing loops release the GIL and run
under OpenMP once a batch is large enough to amortise the thread start.
"""

from libc.stdint cimport uint8_t, uint64_t
from libc.string cimport memcpy, memset
from libc.stdlib cimport malloc, realloc, free
from cpython.bytes cimport PyBytes_AS_STRING, PyBytes_GET_SIZE, PyBytes_FromStringAndSize, PyBytes_CheckExact
from cpython.tuple cimport PyTuple_GET_ITEM, PyTuple_GET_SIZE
from cpython.object cimport PyObject
from cython.parallel cimport prange

cdef extern from "Python.h" nogil:
    # Borrowed-pointer macros: safe without the GIL because the caller holds a reference to
    # the tuple, which keeps its (immutable) bytes items alive and unchanged.
    PyObject* _tuple_item "PyTuple_GET_ITEM"(PyObject* t, Py_ssize_t i)
    int _is_bytes "PyBytes_CheckExact"(PyObject* o)
    char* _bytes_data "PyBytes_AS_STRING"(PyObject* o)
    Py_ssize_t _bytes_size "PyBytes_GET_SIZE"(PyObject* o)

from fedledger._ext._common cimport (
    SHA256_CTX, SHA256_Init, SHA256_Update, SHA256_Final, CRYPTO_memcmp, fl_clz64, fl_ctz64,
)

cdef enum:
    HLEN = 32
    MAX_LEVELS = 64
    # Below this many hashes a parallel region costs more than it saves.
    PAR_MIN = 2048
    # ... or below this many bytes hashed (long records: a few are worth several threads).
    PAR_MIN_BYTES = 131072
    # Records at least this long are handed to threads one at a time.
    LONG_RECORD = 4096

# Return codes of the verifiers (mirrored in fedledger.crypto.merkle).
OK = 0
ERR_PROOF_TOO_LONG = 1
ERR_PROOF_TOO_SHORT = 2
ERR_ROOT_MISMATCH = 3
ERR_OLD_ROOT_MISMATCH = 4
ERR_NEW_ROOT_MISMATCH = 5
ERR_EMPTY_PROOF = 6
ERR_BAD_NODE = 7  # a proof element is not 32 bytes; the index is returned separately


cdef inline void _leaf(const uint8_t* data, size_t n, uint8_t* out) noexcept nogil:
    cdef SHA256_CTX c
    cdef uint8_t prefix = 0
    SHA256_Init(&c)
    SHA256_Update(&c, &prefix, 1)
    SHA256_Update(&c, data, n)
    SHA256_Final(out, &c)


cdef inline void _node(const uint8_t* left, const uint8_t* right, uint8_t* out) noexcept nogil:
    # Copy first so that out may alias left or right.
    cdef uint8_t buf[65]
    cdef SHA256_CTX c
    buf[0] = 1
    memcpy(buf + 1, left, HLEN)
    memcpy(buf + 33, right, HLEN)
    SHA256_Init(&c)
    SHA256_Update(&c, buf, 65)
    SHA256_Final(out, &c)


cdef inline void _empty(uint8_t* out) noexcept nogil:
    cdef SHA256_CTX c
    SHA256_Init(&c)
    SHA256_Final(out, &c)


cdef inline uint64_t _split(uint64_t s) noexcept nogil:
    """Largest power of two strictly below s (s >= 2)."""
    return (<uint64_t>1) << (63 - fl_clz64(s - 1))


cdef int _hash_tuple(PyObject* leaves, Py_ssize_t n, uint8_t* out, int nthreads) noexcept nogil:
    """Leaf-hash every bytes item of a tuple; returns 1 (hashing nothing useful) if any item
    is not exactly bytes. Reads items without the GIL, see _tuple_item."""
    cdef Py_ssize_t i
    cdef PyObject* item
    cdef int bad = 0
    if n >= PAR_MIN and nthreads > 1:
        for i in prange(n, num_threads=nthreads, schedule="dynamic", chunksize=512):
            item = _tuple_item(leaves, i)
            if _is_bytes(item):
                _leaf(<const uint8_t*>_bytes_data(item), <size_t>_bytes_size(item), out + i * HLEN)
            else:
                bad += 1  # a reduction: prange would privatise a plain store
    else:
        for i in range(n):
            item = _tuple_item(leaves, i)
            if not _is_bytes(item):
                return 1
            _leaf(<const uint8_t*>_bytes_data(item), <size_t>_bytes_size(item), out + i * HLEN)
    return bad


cdef void _hash_records(const uint8_t* rec, Py_ssize_t n, Py_ssize_t width,
                        uint8_t* out, int nthreads) noexcept nogil:
    cdef Py_ssize_t i
    if nthreads > 1 and n > 1 and width >= LONG_RECORD and n * width >= PAR_MIN_BYTES:
        for i in prange(n, num_threads=nthreads, schedule="dynamic", chunksize=1):
            _leaf(rec + i * width, width, out + i * HLEN)
    elif n >= PAR_MIN and nthreads > 1:
        for i in prange(n, num_threads=nthreads, schedule="dynamic", chunksize=512):
            _leaf(rec + i * width, width, out + i * HLEN)
    else:
        for i in range(n):
            _leaf(rec + i * width, width, out + i * HLEN)


cdef void _hash_pairs(const uint8_t* src, Py_ssize_t npairs, uint8_t* dst,
                      int nthreads) noexcept nogil:
    """dst[i] = node(src[2i], src[2i+1]); dst must not overlap src."""
    cdef Py_ssize_t i
    if npairs >= PAR_MIN and nthreads > 1:
        for i in prange(npairs, num_threads=nthreads, schedule="dynamic", chunksize=512):
            _node(src + 2 * i * HLEN, src + (2 * i + 1) * HLEN, dst + i * HLEN)
    else:
        for i in range(npairs):
            _node(src + 2 * i * HLEN, src + (2 * i + 1) * HLEN, dst + i * HLEN)


cdef void _reduce(uint8_t* a, uint8_t* b, Py_ssize_t n, uint8_t* out, int nthreads) noexcept nogil:
    """Root of n >= 1 leaf hashes held in a; a and b (>= n/2 hashes) are clobbered.

    Bottom-up pairing that promotes an odd last node unchanged equals RFC 9162's
    split at the largest power of two below n.
    """
    cdef uint8_t* cur = a
    cdef uint8_t* nxt = b
    cdef uint8_t* tmp
    cdef Py_ssize_t half
    while n > 1:
        half = n // 2
        _hash_pairs(cur, half, nxt, nthreads)
        if n & 1:
            memcpy(nxt + half * HLEN, cur + (n - 1) * HLEN, HLEN)
        n = half + (n & 1)
        tmp = cur
        cur = nxt
        nxt = tmp
    memcpy(out, cur, HLEN)


def leaf_hash(bytes data) -> bytes:
    cdef uint8_t out[HLEN]
    _leaf(<const uint8_t*>PyBytes_AS_STRING(data), <size_t>PyBytes_GET_SIZE(data), out)
    return PyBytes_FromStringAndSize(<char*>out, HLEN)


def node_hash(bytes left, bytes right) -> bytes:
    cdef uint8_t out[HLEN]
    _node(<const uint8_t*>PyBytes_AS_STRING(left), <const uint8_t*>PyBytes_AS_STRING(right), out)
    return PyBytes_FromStringAndSize(<char*>out, HLEN)


def empty_root() -> bytes:
    cdef uint8_t out[HLEN]
    _empty(out)
    return PyBytes_FromStringAndSize(<char*>out, HLEN)


def leaf_hashes_bytes(tuple leaves, uint8_t[:, ::1] out, int nthreads):
    """Hash a tuple of bytes into out[n, 32]; TypeError if an item is not exactly bytes."""
    cdef Py_ssize_t n = PyTuple_GET_SIZE(leaves)
    cdef int bad
    if n == 0:
        return
    with nogil:
        bad = _hash_tuple(<PyObject*>leaves, n, &out[0, 0], nthreads)
    if bad:
        raise TypeError("a leaf is not exactly bytes")


def leaf_hashes_records(const uint8_t[:, ::1] records, uint8_t[:, ::1] out, int nthreads):
    cdef Py_ssize_t n = records.shape[0], width = records.shape[1]
    if n == 0:
        return
    with nogil:
        _hash_records(&records[0, 0] if width > 0 else <const uint8_t*>&out[0, 0], n, width,
                      &out[0, 0], nthreads)


def root_of_hashes(const uint8_t[:, ::1] hashes, int nthreads) -> bytes:
    """Root of n leaf hashes (n >= 0); the input is not modified."""
    cdef Py_ssize_t n = hashes.shape[0]
    cdef uint8_t out[HLEN]
    cdef uint8_t* a
    cdef uint8_t* b
    if n == 0:
        _empty(out)
        return PyBytes_FromStringAndSize(<char*>out, HLEN)
    a = <uint8_t*>malloc(n * HLEN)
    b = <uint8_t*>malloc((n // 2 + 1) * HLEN)
    if a == NULL or b == NULL:
        free(a)
        free(b)
        raise MemoryError()
    with nogil:
        memcpy(a, &hashes[0, 0], n * HLEN)
        _reduce(a, b, n, out, nthreads)
    free(a)
    free(b)
    return PyBytes_FromStringAndSize(<char*>out, HLEN)


cdef bytes _root_from_leaf_buffer(uint8_t* a, Py_ssize_t n, int nthreads):
    """Reduce n leaf hashes held in a malloc'd buffer a (clobbered, not freed)."""
    cdef uint8_t out[HLEN]
    cdef uint8_t* b = <uint8_t*>malloc((n // 2 + 1) * HLEN)
    if b == NULL:
        raise MemoryError()
    with nogil:
        _reduce(a, b, n, out, nthreads)
    free(b)
    return PyBytes_FromStringAndSize(<char*>out, HLEN)


def root_of_bytes(tuple leaves, int nthreads) -> bytes:
    """Root of a tuple of bytes leaves; TypeError if an item is not exactly bytes."""
    cdef Py_ssize_t n = PyTuple_GET_SIZE(leaves)
    cdef uint8_t* a
    cdef int bad
    if n == 0:
        return empty_root()
    a = <uint8_t*>malloc(n * HLEN)
    if a == NULL:
        raise MemoryError()
    try:
        with nogil:
            bad = _hash_tuple(<PyObject*>leaves, n, a, nthreads)
        if bad:
            raise TypeError("a leaf is not exactly bytes")
        return _root_from_leaf_buffer(a, n, nthreads)
    finally:
        free(a)


def root_of_records(const uint8_t[:, ::1] records, int nthreads) -> bytes:
    cdef Py_ssize_t n = records.shape[0], width = records.shape[1]
    cdef uint8_t* a
    cdef uint8_t zero = 0
    if n == 0:
        return empty_root()
    a = <uint8_t*>malloc(n * HLEN)
    if a == NULL:
        raise MemoryError()
    with nogil:
        _hash_records(&records[0, 0] if width > 0 else &zero, n, width, a, nthreads)
    try:
        return _root_from_leaf_buffer(a, n, nthreads)
    finally:
        free(a)


cdef list _nodes_reversed(const uint8_t* buf, int count):
    """The count hashes in buf as a list of bytes, last one first (RFC order is leaf side first)."""
    cdef list out = []
    cdef int j
    for j in range(count - 1, -1, -1):
        out.append(PyBytes_FromStringAndSize(<const char*>(buf + j * HLEN), HLEN))
    return out


cdef int _check_nodes(tuple proof, int* bad) noexcept:
    """0 if every element is 32 bytes, else ERR_BAD_NODE with *bad = its index."""
    cdef Py_ssize_t j
    cdef object item
    for j in range(PyTuple_GET_SIZE(proof)):
        item = <object>PyTuple_GET_ITEM(proof, j)
        if not PyBytes_CheckExact(item) or PyBytes_GET_SIZE(item) != HLEN:
            bad[0] = <int>j
            return ERR_BAD_NODE
    return 0


cdef inline const uint8_t* _nodeat(tuple proof, Py_ssize_t j) noexcept:
    return <const uint8_t*>PyBytes_AS_STRING(<object>PyTuple_GET_ITEM(proof, j))


def verify_inclusion(bytes leaf_data, uint64_t index, uint64_t size, tuple proof, bytes root) -> tuple:
    """RFC 9162 §2.1.3.2. Returns (code, detail); code 0 means the proof holds.

    The caller has checked index < size and that root is 32 bytes.
    """
    cdef uint8_t r[HLEN]
    cdef uint64_t fn = index, sn = size - 1
    cdef Py_ssize_t j, n = PyTuple_GET_SIZE(proof)
    cdef int bad = -1
    if _check_nodes(proof, &bad):
        return (ERR_BAD_NODE, bad)
    _leaf(<const uint8_t*>PyBytes_AS_STRING(leaf_data), <size_t>PyBytes_GET_SIZE(leaf_data), r)
    for j in range(n):
        if sn == 0:
            return (ERR_PROOF_TOO_LONG, j)
        if (fn & 1) or fn == sn:
            _node(_nodeat(proof, j), r, r)
            if not (fn & 1):
                while fn != 0 and not (fn & 1):
                    fn >>= 1
                    sn >>= 1
        else:
            _node(r, _nodeat(proof, j), r)
        fn >>= 1
        sn >>= 1
    if sn != 0:
        return (ERR_PROOF_TOO_SHORT, n)
    if CRYPTO_memcmp(r, PyBytes_AS_STRING(root), HLEN) != 0:
        return (ERR_ROOT_MISMATCH, -1)
    return (OK, -1)


def verify_consistency(uint64_t old_size, uint64_t new_size, bytes old_root, bytes new_root,
                       tuple proof) -> tuple:
    """RFC 9162 §2.1.4.2 for 0 < old_size < new_size (the caller handles the rest)."""
    cdef uint8_t fr[HLEN]
    cdef uint8_t sr[HLEN]
    cdef uint64_t fn = old_size - 1, sn = new_size - 1
    cdef Py_ssize_t j, start, n = PyTuple_GET_SIZE(proof)
    cdef int bad = -1
    cdef const uint8_t* c
    if _check_nodes(proof, &bad):
        return (ERR_BAD_NODE, bad)
    if n == 0:
        return (ERR_EMPTY_PROOF, -1)
    # Step 2: a power-of-two old tree is itself the first node of the path.
    if (old_size & (old_size - 1)) == 0:
        memcpy(fr, PyBytes_AS_STRING(old_root), HLEN)
        start = 0
    else:
        memcpy(fr, _nodeat(proof, 0), HLEN)
        start = 1
    memcpy(sr, fr, HLEN)
    while fn & 1:
        fn >>= 1
        sn >>= 1
    for j in range(start, n):
        c = _nodeat(proof, j)
        if sn == 0:
            return (ERR_PROOF_TOO_LONG, j)
        if (fn & 1) or fn == sn:
            _node(c, fr, fr)
            _node(c, sr, sr)
            if not (fn & 1):
                while fn != 0 and not (fn & 1):
                    fn >>= 1
                    sn >>= 1
        else:
            _node(sr, c, sr)
        fn >>= 1
        sn >>= 1
    if sn != 0:
        return (ERR_PROOF_TOO_SHORT, n)
    if CRYPTO_memcmp(fr, PyBytes_AS_STRING(old_root), HLEN) != 0:
        return (ERR_OLD_ROOT_MISMATCH, -1)
    if CRYPTO_memcmp(sr, PyBytes_AS_STRING(new_root), HLEN) != 0:
        return (ERR_NEW_ROOT_MISMATCH, -1)
    return (OK, -1)


cdef class MerkleLog:
    """Append-only RFC 9162 tree keeping every complete aligned subtree's hash.

    Level k holds the roots of the subtrees [j*2^k, (j+1)*2^k) that are complete, so any
    RFC 9162 range hash, root or proof needs at most O(log n) hashes, and an append costs
    one leaf hash plus its carries. Not re-entrant: a call made while another thread runs
    a parallel extend raises RuntimeError instead of racing.
    """

    cdef uint8_t* lv[MAX_LEVELS]
    cdef uint64_t cnt[MAX_LEVELS]
    cdef uint64_t cap[MAX_LEVELS]
    cdef int busy
    # The last root computed; a prefix's root never changes in an append-only log.
    cdef object cached_root
    cdef uint64_t cached_size

    def __cinit__(self):
        memset(self.lv, 0, sizeof(self.lv))
        memset(self.cnt, 0, sizeof(self.cnt))
        memset(self.cap, 0, sizeof(self.cap))
        self.busy = 0
        self.cached_root = None
        self.cached_size = 0

    def __dealloc__(self):
        cdef int k
        for k in range(MAX_LEVELS):
            free(self.lv[k])

    cdef int _enter(self) except -1:
        if self.busy:
            raise RuntimeError("MerkleTree is being extended by another thread")
        return 0

    cdef int _reserve(self, int k, uint64_t need) except -1:
        cdef uint64_t newcap
        cdef uint8_t* p
        if need <= self.cap[k]:
            return 0
        newcap = self.cap[k] * 2
        if newcap < need:
            newcap = need
        if newcap < 16:
            newcap = 16
        p = <uint8_t*>realloc(self.lv[k], newcap * HLEN)
        if p == NULL:
            raise MemoryError()
        self.lv[k] = p
        self.cap[k] = newcap
        return 0

    cdef int _carry(self, int nthreads) except -1:
        """Hash every pair that became complete since the last carry, level by level."""
        cdef int k = 0
        cdef uint64_t lo, hi, want
        cdef Py_ssize_t npairs
        while k + 1 < MAX_LEVELS:
            want = self.cnt[k] // 2
            lo = self.cnt[k + 1]
            if want <= lo:
                break
            self._reserve(k + 1, want)
            hi = want
            npairs = <Py_ssize_t>(hi - lo)
            with nogil:
                _hash_pairs(self.lv[k] + 2 * lo * HLEN, npairs, self.lv[k + 1] + lo * HLEN,
                            nthreads if npairs >= PAR_MIN else 1)
            self.cnt[k + 1] = hi
            k += 1
        return 0

    @property
    def size(self) -> int:
        return self.cnt[0]

    def append_leaf(self, bytes data) -> int:
        cdef uint64_t k, c
        cdef uint64_t index = self.cnt[0]
        self._enter()
        self._reserve(0, index + 1)
        _leaf(<const uint8_t*>PyBytes_AS_STRING(data), <size_t>PyBytes_GET_SIZE(data),
              self.lv[0] + index * HLEN)
        self.cnt[0] = index + 1
        # Carry: each completed pair makes one parent, at most log2(n) of them.
        k = 0
        c = self.cnt[0]
        while (c & 1) == 0 and k + 1 < MAX_LEVELS:
            self._reserve(k + 1, c // 2)
            _node(self.lv[k] + (c - 2) * HLEN, self.lv[k] + (c - 1) * HLEN,
                  self.lv[k + 1] + (c // 2 - 1) * HLEN)
            self.cnt[k + 1] = c // 2
            k += 1
            c = self.cnt[k]
        return index

    cdef uint8_t* _begin_extend(self, Py_ssize_t n) except NULL:
        """Reserve room for n more leaf hashes, mark the log busy, return where they go."""
        self._enter()
        self._reserve(0, self.cnt[0] + n + 1)  # + 1: never NULL, even for an empty extend
        self.busy = 1
        return self.lv[0] + self.cnt[0] * HLEN

    cdef int _end_extend(self, Py_ssize_t n, int nthreads) except -1:
        """Publish n new leaf hashes (0 after a failure), carry them up, clear busy."""
        try:
            self.cnt[0] += n
            self._carry(nthreads)
        finally:
            self.busy = 0
        return 0

    def extend_bytes(self, tuple leaves, int nthreads):
        """Append a tuple of bytes leaves; TypeError (tree unchanged) if one is not exactly bytes."""
        cdef Py_ssize_t n = PyTuple_GET_SIZE(leaves)
        cdef uint8_t* dst = self._begin_extend(n)
        cdef int bad
        with nogil:
            bad = _hash_tuple(<PyObject*>leaves, n, dst, nthreads)
        self._end_extend(0 if bad else n, nthreads)
        if bad:
            raise TypeError("a leaf is not exactly bytes")

    def extend_records(self, const uint8_t[:, ::1] records, int nthreads):
        cdef Py_ssize_t n = records.shape[0], width = records.shape[1]
        cdef uint8_t* dst = self._begin_extend(n)
        cdef uint8_t zero = 0
        if n > 0:
            with nogil:
                _hash_records(&records[0, 0] if width > 0 else &zero, n, width, dst, nthreads)
        self._end_extend(n, nthreads)

    def extend_hashes(self, const uint8_t[:, ::1] hashes, int nthreads):
        """Append precomputed leaf hashes (n, 32), e.g. when reloading a stored log."""
        cdef Py_ssize_t n = hashes.shape[0]
        cdef uint8_t* dst = self._begin_extend(n)
        if n > 0:
            memcpy(dst, &hashes[0, 0], n * HLEN)
        self._end_extend(n, nthreads)

    def rollback(self, uint64_t size):
        """Forget every leaf from size on (size <= self.size, checked by the caller).

        Level k keeps exactly the size >> k complete subtrees of the shorter tree, which are
        the same hashes it already holds, so nothing is rehashed.
        """
        cdef int k
        self._enter()
        for k in range(MAX_LEVELS):
            if self.cnt[k] > (size >> k):
                self.cnt[k] = size >> k
        if self.cached_root is not None and self.cached_size > size:
            self.cached_root = None

    def leaf_hash_at(self, uint64_t index) -> bytes:
        self._enter()
        return PyBytes_FromStringAndSize(<const char*>(self.lv[0] + index * HLEN), HLEN)

    def leaf_hashes_view(self):
        """A copy of all leaf hashes as bytes (n * 32)."""
        self._enter()
        return PyBytes_FromStringAndSize(<const char*>self.lv[0], self.cnt[0] * HLEN)

    cdef void _range(self, uint64_t a, uint64_t b, uint8_t* out) noexcept nogil:
        """MTH(D[a:b]) for 0 <= a < b <= size with a aligned as in RFC 9162's recursion."""
        cdef uint64_t s = b - a, end = b, start
        cdef int p, have = 0
        cdef const uint8_t* h
        while s:
            # Lowest set bit first: chunks from the right edge leftwards.
            p = fl_ctz64(s)
            s &= s - 1
            start = end - ((<uint64_t>1) << p)
            h = self.lv[p] + (start >> p) * HLEN
            if have:
                _node(h, out, out)
            else:
                memcpy(out, h, HLEN)
                have = 1
            end = start

    def root_at(self, uint64_t size) -> bytes:
        """Root of the first size leaves (size <= self.size, checked by the caller)."""
        cdef uint8_t out[HLEN]
        self._enter()
        if self.cached_root is not None and self.cached_size == size:
            return self.cached_root
        if size == 0:
            _empty(out)
        else:
            self._range(0, size, out)
        self.cached_root = PyBytes_FromStringAndSize(<char*>out, HLEN)
        self.cached_size = size
        return self.cached_root

    def inclusion_path(self, uint64_t index, uint64_t size) -> list:
        """RFC 9162 §2.1.3.1 PATH(index, D[0:size]), leaf-side first (index < size <= self.size)."""
        cdef uint64_t a = 0, b = size, k
        cdef uint8_t buf[(MAX_LEVELS + 2) * HLEN]
        cdef int depth = 0
        self._enter()
        while b - a > 1:
            k = _split(b - a)
            if index < a + k:
                self._range(a + k, b, buf + depth * HLEN)
                b = a + k
            else:
                self._range(a, a + k, buf + depth * HLEN)
                a = a + k
            depth += 1
        return _nodes_reversed(buf, depth)

    def consistency_path(self, uint64_t old_size, uint64_t new_size) -> list:
        """RFC 9162 §2.1.4.1 PROOF(old_size, D[0:new_size]) for 0 < old_size <= new_size."""
        cdef uint64_t a = 0, b = new_size, m = old_size, k
        cdef bint whole = True
        cdef uint8_t buf[(MAX_LEVELS + 2) * HLEN]
        cdef int depth = 0
        self._enter()
        while True:
            if m == b - a:
                if not whole:
                    self._range(a, b, buf + depth * HLEN)
                    depth += 1
                break
            k = _split(b - a)
            if m <= k:
                self._range(a + k, b, buf + depth * HLEN)
                b = a + k
            else:
                self._range(a, a + k, buf + depth * HLEN)
                m -= k
                a = a + k
                whole = False
            depth += 1
        return _nodes_reversed(buf, depth)
