"""Threshold custody: Damgard-Jurik / Shoup threshold Paillier with a trusted dealer.

:meth:`PrivateKey.split` (:func:`split_key`) deals :class:`KeyShare` objects; each trustee
makes a :class:`PartialDecryption` of a vector, and :func:`combine_partial_decryptions`
decrypts it from ``threshold`` of them.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import math
import secrets
import struct
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import numpy as np
from numpy.typing import NDArray

from fedledger._ext import rebuild_error
from fedledger.crypto._args import as_int as _check_int
from fedledger.crypto._threads import num_threads
from fedledger.crypto.paillier._common import (
    _MAX_KEY_JSON_CHARS,
    MAX_KEY_BITS,
    _b64_int,
    _check_rows,
    _int_b64,
    _int_bytes,
    _load_json,
    _show,
)
from fedledger.crypto.paillier.keys import PrivateKey, PublicKey
from fedledger.crypto.paillier.packing import _unpack_checked
from fedledger.crypto.paillier.vectors import _VERSION, EncryptedVector
from fedledger.errors import (
    DecryptionError,
    InvalidArgument,
    InvalidArgumentType,
    KeyMismatch,
)

try:
    from fedledger._ext import _paillier as _k
except ImportError as exc:  # pragma: no cover - exercised by test_build
    raise rebuild_error("_paillier", exc) from exc

__all__ = ["MAX_TRUSTEES", "KeyShare", "PartialDecryption", "combine_partial_decryptions", "split_key"]

#: Largest number of trustees for threshold custody (Delta = trustees! grows fast).
MAX_TRUSTEES = 64

_PARTIAL_MAGIC = b"FLPD"
_PARTIAL_HEADER = struct.Struct(">4sBHHH32sQI")


def split_key(key: PrivateKey, threshold: int, trustees: int) -> list[KeyShare]:
    """Shamir-share the decryption exponent among ``trustees``; any ``threshold`` of them
    decrypt together by partial decryptions (Damgard-Jurik / Shoup threshold Paillier,
    trusted dealer). Requires a key made of safe primes
    (``generate_keypair(..., safe_primes=True)``).

    The caller is the dealer: it must destroy this PrivateKey after distributing the
    shares, or one party can still decrypt alone.
    """
    threshold = _check_int(threshold, "threshold")
    trustees = _check_int(trustees, "trustees")
    if not 1 <= trustees <= MAX_TRUSTEES:
        raise InvalidArgument("trustees", f"must be in [1, {MAX_TRUSTEES}], got {trustees}")
    if not 1 <= threshold <= trustees:
        raise InvalidArgument("threshold", f"must be in [1, trustees={trustees}], got {threshold}")
    pp, qq = (key.p - 1) // 2, (key.q - 1) // 2
    if not (_k.is_probable_prime(_int_bytes(pp), 25) and _k.is_probable_prime(_int_bytes(qq), 25)):
        raise InvalidArgument(
            "self",
            "threshold decryption needs a key of safe primes (p = 2p'+1, q = 2q'+1): "
            "create it with generate_keypair(..., safe_primes=True)",
        )
    n = key.public_key.n
    m = pp * qq
    nm = n * m
    d = (m * pow(m, -1, n)) % nm  # d = 0 mod m, d = 1 mod n
    coeffs = [d] + [secrets.randbelow(nm) for _ in range(threshold - 1)]
    shares = []
    for i in range(1, trustees + 1):
        s = 0
        for c in reversed(coeffs):
            s = (s * i + c) % nm
        shares.append(KeyShare(key.public_key, i, s, threshold, trustees))
    return shares


@dataclass(frozen=True, repr=False)
class KeyShare:
    """One trustee's share s_i = f(i) mod n*p'*q' of the decryption exponent d."""

    public_key: PublicKey
    index: int
    share: int
    threshold: int
    trustees: int

    def __post_init__(self) -> None:
        if not isinstance(self.public_key, PublicKey):
            raise InvalidArgumentType("public_key", f"expected PublicKey, got {type(self.public_key).__name__}")
        _check_sharing(self.index, self.threshold, self.trustees, "KeyShare")
        share = _check_int(self.share, "share")
        if not 0 <= share < self.public_key.nsquare:
            raise InvalidArgument("share", "must be in [0, n^2)")

    def __repr__(self) -> str:
        return f"KeyShare(index={self.index}, threshold={self.threshold}, trustees={self.trustees})"

    @property
    def delta(self) -> int:
        return math.factorial(self.trustees)

    def to_json(self) -> str:
        """The share as JSON (integers base64url, like the JWK forms). Keep it secret."""
        return json.dumps(
            {
                "kty": "fedledger-paillier-share",
                "n": _b64_int(self.public_key.n),
                "index": self.index,
                "threshold": self.threshold,
                "trustees": self.trustees,
                "share": _b64_int(self.share),
            }
        )

    @classmethod
    def from_json(cls, text: str | bytes, *, insecure_for_tests: bool = False) -> KeyShare:
        obj = _load_json(text, "text", _MAX_KEY_JSON_CHARS)
        if not isinstance(obj, dict):
            raise InvalidArgumentType("text", f"expected a JSON object, got {type(obj).__name__}")
        if obj.get("kty") != "fedledger-paillier-share":
            raise InvalidArgument("text", f"kty must be 'fedledger-paillier-share', got {_show(obj.get('kty'))}")
        pk = PublicKey(_int_b64(obj.get("n"), "text['n']", MAX_KEY_BITS), insecure_for_tests=insecure_for_tests)
        index = _check_int(obj.get("index"), "text['index']")
        threshold = _check_int(obj.get("threshold"), "text['threshold']")
        trustees = _check_int(obj.get("trustees"), "text['trustees']")
        _check_sharing(index, threshold, trustees, "text")
        share = _int_b64(obj.get("share"), "text['share']", 2 * MAX_KEY_BITS)
        if share >= pk.nsquare:
            raise InvalidArgument("text['share']", "is larger than any share of this key")
        return cls(pk, index, share, threshold, trustees)

    def partial_decrypt(self, vector: EncryptedVector) -> PartialDecryption:
        """c_i = c^(2 Delta s_i) mod n^2 for every ciphertext (mpz_powm_sec: secret exponent)."""
        if not isinstance(vector, EncryptedVector):
            raise InvalidArgumentType("vector", f"expected EncryptedVector, got {type(vector).__name__}")
        if vector.public_key != self.public_key:
            raise KeyMismatch("the vector was encrypted under a different public key")
        out = np.empty_like(vector._data)
        _k.power(
            self.public_key._context(),
            vector._data,
            _int_bytes(2 * self.delta * self.share),
            True,
            out,
            num_threads(),
        )
        out.flags.writeable = False
        return PartialDecryption(self.index, self.threshold, self.trustees, _digest(vector), out)


def _check_sharing(index: object, threshold: object, trustees: object, argument: str) -> None:
    i = _check_int(index, f"{argument}.index")
    t = _check_int(threshold, f"{argument}.threshold")
    n = _check_int(trustees, f"{argument}.trustees")
    if not (1 <= t <= n <= MAX_TRUSTEES and 1 <= i <= n):
        raise InvalidArgument(
            argument,
            f"inconsistent index/threshold/trustees ({_show(i)}/{_show(t)}/{_show(n)}): need 1 <= index <= trustees, "
            f"1 <= threshold <= trustees <= {MAX_TRUSTEES}",
        )


def _digest(vector: EncryptedVector) -> bytes:
    h = hashlib.sha256(vector.public_key.fingerprint())
    h.update(struct.pack(">QQ", vector.layout.count, vector.weight))
    h.update(vector._data.tobytes())
    return h.digest()


@dataclass(frozen=True, repr=False)
class PartialDecryption:
    """A trustee's partial decryption of one EncryptedVector (no proof of correctness)."""

    index: int
    threshold: int
    trustees: int
    vector_digest: bytes
    values: NDArray[np.uint64]  # Montgomery form, like EncryptedVector's storage

    def __post_init__(self) -> None:
        _check_sharing(self.index, self.threshold, self.trustees, "PartialDecryption")
        if not isinstance(self.vector_digest, bytes) or len(self.vector_digest) != 32:
            raise InvalidArgument("vector_digest", "expected 32 bytes (a SHA-256 digest)")
        if not isinstance(self.values, np.ndarray) or self.values.dtype != np.uint64 or self.values.ndim != 2:
            raise InvalidArgumentType("values", "expected a 2-D uint64 array (Montgomery rows)")
        if not self.values.flags.c_contiguous:
            raise InvalidArgument("values", "must be C-contiguous")

    def __repr__(self) -> str:
        return f"PartialDecryption(index={self.index}, rows={self.values.shape[0]})"

    def to_bytes(self, public_key: PublicKey) -> bytes:
        """Header (magic, version, index, threshold, trustees, vector digest) and the
        big-endian partial values (one per ciphertext, bytes of n^2 each)."""
        if not isinstance(public_key, PublicKey):
            raise InvalidArgumentType("public_key", f"expected PublicKey, got {type(public_key).__name__}")
        rows = public_key._to_bytes_rows(self.values)
        header = _PARTIAL_HEADER.pack(
            _PARTIAL_MAGIC,
            _VERSION,
            self.index,
            self.threshold,
            self.trustees,
            self.vector_digest,
            rows.shape[0],
            public_key.c_bytes,
        )
        return header + rows.tobytes()

    @classmethod
    def from_bytes(
        cls, data: bytes, public_key: PublicKey, *, vector: EncryptedVector | None = None
    ) -> PartialDecryption:
        """Parse :meth:`to_bytes` output; every value must be a unit mod n^2.

        With ``vector``, the partial must be of that vector: same digest and one value per
        ciphertext (:func:`combine_partial_decryptions` checks both again in any case).
        """
        if not isinstance(public_key, PublicKey):
            raise InvalidArgumentType("public_key", f"expected PublicKey, got {type(public_key).__name__}")
        if vector is not None and not isinstance(vector, EncryptedVector):
            raise InvalidArgumentType("vector", f"expected EncryptedVector or None, got {type(vector).__name__}")
        if vector is not None and vector.public_key != public_key:
            raise KeyMismatch("vector is encrypted under a different public key")
        if not isinstance(data, (bytes, bytearray, memoryview)):
            raise InvalidArgumentType("data", f"expected bytes, got {type(data).__name__}")
        raw = bytes(data)
        if len(raw) < _PARTIAL_HEADER.size:
            raise InvalidArgument("data", f"too short for a header ({len(raw)} bytes)")
        magic, version, index, threshold, trustees, digest, rows, width = _PARTIAL_HEADER.unpack_from(raw)
        if magic != _PARTIAL_MAGIC or version != _VERSION:
            raise InvalidArgument("data", "not a fedledger partial decryption (bad magic or version)")
        if width != public_key.c_bytes:
            raise KeyMismatch(f"values are {width} bytes wide, this key's ciphertexts {public_key.c_bytes}")
        _check_sharing(index, threshold, trustees, "data")
        if vector is not None:
            if not hmac.compare_digest(digest, _digest(vector)):
                raise InvalidArgument("data", "is a partial decryption of a different vector")
            if rows != vector.num_ciphertexts:
                raise InvalidArgument(
                    "data", f"holds {rows} values, the vector has {vector.num_ciphertexts} ciphertexts"
                )
        body = raw[_PARTIAL_HEADER.size :]
        if len(body) != rows * width:
            raise InvalidArgument("data", f"expected {rows} values of {width} bytes, got {len(body)} bytes")
        arr = np.frombuffer(body, dtype=np.uint8).reshape(rows, width)
        return cls(index, threshold, trustees, digest, public_key._from_bytes_rows(arr, "data"))


def combine_partial_decryptions(
    vector: EncryptedVector,
    partials: Sequence[PartialDecryption],
    *,
    quantized: bool = False,
    threshold: int | None = None,
    trustees: int | None = None,
) -> NDArray[np.float64] | NDArray[np.int64]:
    """Decrypt ``vector`` from at least ``threshold`` partial decryptions of it.

    Returns what :meth:`PrivateKey.decrypt_vector` (or, with ``quantized=True``,
    :meth:`PrivateKey.decrypt_quantized`) would. A wrong or mismatched partial is detected
    (DecryptionError) but not attributed: there are no zero-knowledge proofs.

    ``threshold`` and ``trustees``, when given (the sharing's parameters, known to the
    caller), must match every partial's; otherwise the first partial's are used. Every
    partial must hold exactly one value per ciphertext of ``vector``.
    """
    if not isinstance(vector, EncryptedVector):
        raise InvalidArgumentType("vector", f"expected EncryptedVector, got {type(vector).__name__}")
    if isinstance(partials, (str, bytes)) or not isinstance(partials, Iterable):
        raise InvalidArgumentType(
            "partials", f"expected a sequence of PartialDecryption, got {type(partials).__name__}"
        )
    items = list(partials)
    if not items:
        raise InvalidArgument("partials", "need at least one partial decryption")
    digest = _digest(vector)
    shape = vector._data.shape
    by_index: dict[int, PartialDecryption] = {}
    for i, part in enumerate(items):
        if not isinstance(part, PartialDecryption):
            raise InvalidArgumentType(f"partials[{i}]", f"expected PartialDecryption, got {type(part).__name__}")
        want = (
            threshold if threshold is not None else items[0].threshold,
            trustees if trustees is not None else items[0].trustees,
        )
        if (part.threshold, part.trustees) != want:
            raise InvalidArgument(
                f"partials[{i}]",
                f"comes from a different sharing (threshold/trustees {part.threshold}/{part.trustees}, "
                f"expected {want[0]}/{want[1]})",
            )
        if not hmac.compare_digest(part.vector_digest, digest):
            raise InvalidArgument(f"partials[{i}]", "is a partial decryption of a different vector")
        # The kernel reads every partial for every row of the vector: the shape must match
        # exactly, whatever the digest says.
        _check_rows(part.values, np.uint64, shape[1], f"partials[{i}].values", shape[0])
        by_index.setdefault(part.index, part)
    t, trustees = items[0].threshold, items[0].trustees
    if len(by_index) < t:
        raise InvalidArgument("partials", f"need partials from {t} distinct trustees, got {len(by_index)}")
    chosen = sorted(by_index)[:t]
    delta = math.factorial(trustees)
    n = vector.public_key.n
    exps: list[bytes] = []
    neg: list[bool] = []
    for i in chosen:
        num, den = delta, 1
        for j in chosen:
            if j != i:
                num *= j
                den *= j - i
        mu = num // den  # exact: Delta * Lagrange coefficient at 0 is an integer
        e = 2 * mu
        exps.append(_int_bytes(abs(e)))
        neg.append(e < 0)
    factor = pow(4 * delta * delta, -1, n)
    plain = np.empty((vector.num_ciphertexts, vector.public_key.n_bytes), dtype=np.uint8)
    code, row = _k.combine(
        vector.public_key._context(),
        [by_index[i].values for i in chosen],
        exps,
        neg,
        _int_bytes(factor),
        plain,
        num_threads(),
    )
    if code != _k.OK:
        raise DecryptionError(
            f"ciphertext {row}: the partial decryptions do not combine (a trustee's share or "
            "partial decryption is wrong)"
        )
    q = _unpack_checked(plain, vector.layout, vector.weight)
    if quantized:
        return q
    return q / vector.layout.scale
