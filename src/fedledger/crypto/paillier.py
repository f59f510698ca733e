"""Packed Paillier encryption over GMP, interoperable with ``phe`` (python-paillier).

Clients quantize a float vector, pack many quantized values into each plaintext and
encrypt; an aggregator adds encrypted vectors without seeing them; the key holder (or a
threshold of trustees) decrypts the sum.

>>> from fedledger.crypto import paillier
>>> pk, sk = paillier.generate_keypair(1024, insecure_for_tests=True)
>>> a = pk.encrypt_vector([0.5, -0.25, 1.0], clip=1.0, max_summands=4)
>>> b = pk.encrypt_vector([0.25, 0.25, -1.0], clip=1.0, max_summands=4)
>>> [round(float(v), 3) for v in sk.decrypt_vector(a + b)]
[0.75, 0.0, 0.0]
>>> sk.decrypt(pk.encrypt(-7))  # single values are phe.EncryptedNumber objects
-7

Techniques: g = n + 1 (so g^m = 1 + m n); Damgard-Jurik-Nielsen randomness h_s^x with
h_s = h^n mod n^2 and x of ceil(|n|/2) bits (rounded up to whole bytes), evaluated with a
fixed-base table of 8-bit windows; CRT decryption; BatchCrypt-style packing of biased,
quantized values with headroom for ``max_summands`` additions and a checksum slot per
ciphertext. See docs/security-paillier.md for parameters and limits.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import math
import secrets
import struct
import threading
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import phe
from numpy.typing import ArrayLike, NDArray

from fedledger._ext import rebuild_error
from fedledger.crypto._args import as_int as _check_int
from fedledger.crypto._threads import num_threads
from fedledger.errors import (
    DecryptionError,
    InvalidArgument,
    InvalidArgumentType,
    InvalidCiphertext,
    KeyMismatch,
    LayoutMismatch,
    PaillierOverflow,
)

try:
    from fedledger._ext import _paillier as _k
except ImportError as exc:  # pragma: no cover - exercised by test_build
    raise rebuild_error("_paillier", exc) from exc

__all__ = [
    "MIN_KEY_BITS",
    "EncryptedVector",
    "KeyShare",
    "PackingLayout",
    "PartialDecryption",
    "PrivateKey",
    "PublicKey",
    "combine_partial_decryptions",
    "encrypted_numbers_from_json",
    "encrypted_numbers_to_json",
    "from_phe",
    "generate_keypair",
    "sum_vectors",
    "to_phe",
]

#: Smallest modulus accepted without ``insecure_for_tests=True``.
MIN_KEY_BITS = 2048
#: Smallest modulus accepted at all (tests use small keys to run fast).
_MIN_TEST_BITS = 128
#: Domain separation for deriving the DJN base h from n.
_H_DOMAIN = b"fedledger/paillier/djn-h/v1\x00"
#: Largest number of trustees for threshold custody (Delta = trustees! grows fast).
MAX_TRUSTEES = 64

_CT_ERRORS = {
    _k.ERR_ZERO: "is 0",
    _k.ERR_RANGE: "is >= n^2",
    _k.ERR_NOT_UNIT: "is not coprime with n",
}


def _int_bytes(value: int) -> bytes:
    return value.to_bytes(max(1, (value.bit_length() + 7) // 8), "big")


def _b64_int(value: int) -> str:
    return base64.urlsafe_b64encode(_int_bytes(value)).decode("ascii").rstrip("=")


def _int_b64(text: object, argument: str) -> int:
    if not isinstance(text, str) or not text:
        raise InvalidArgumentType(argument, "expected a base64url string")
    try:
        raw = base64.b64decode(text + "=" * (-len(text) % 4), altchars=b"-_", validate=True)
    except (ValueError, TypeError):
        raise InvalidArgument(argument, "is not valid base64url") from None
    return int.from_bytes(raw, "big")


def _derive_h(n: int) -> int:
    """The DJN base h = -y^2 mod n, with y expanded from n by SHAKE-256.

    Deriving h from n alone keeps the public key exactly phe's (just n): anyone holding n
    builds the same table, and nobody chooses h.
    """
    nbytes = (n.bit_length() + 7) // 8
    counter = 0
    while True:
        seed = _H_DOMAIN + _int_bytes(n) + counter.to_bytes(4, "big")
        y = int.from_bytes(hashlib.shake_256(seed).digest(nbytes + 16), "big") % n
        if y > 1 and math.gcd(y, n) == 1:
            return (-y * y) % n
        counter += 1


# --------------------------------------------------------------------------------------
# Keys


class PublicKey:
    """A Paillier public key (n, with g = n + 1), the same key ``phe`` uses.

    The fixed-base randomness table (about 16 MiB for a 2048-bit key) is built on first
    encryption and kept for the key's lifetime.
    """

    __slots__ = ("n", "nsquare", "bits", "n_bytes", "c_bytes", "x_bytes", "_ctx", "_lock", "_phe")

    def __init__(self, n: int, *, insecure_for_tests: bool = False) -> None:
        n = _check_int(n, "n")
        bits = n.bit_length()
        if n <= 0 or n % 2 == 0:
            raise InvalidArgument("n", "must be a positive odd modulus")
        if bits < _MIN_TEST_BITS or (bits < MIN_KEY_BITS and not insecure_for_tests):
            raise InvalidArgument(
                "n",
                f"a {bits}-bit modulus is too small: at least {MIN_KEY_BITS} bits "
                "(smaller keys only with insecure_for_tests=True, and never below "
                f"{_MIN_TEST_BITS} bits)",
            )
        self.n = n
        self.nsquare = n * n
        self.bits = bits
        self.n_bytes = (bits + 7) // 8
        self.c_bytes = (self.nsquare.bit_length() + 7) // 8
        # DJN: x of |n|/2 bits (the published setting), rounded up to whole bytes.
        self.x_bytes = (bits + 15) // 16
        self._ctx: Any = None
        self._lock = threading.Lock()
        self._phe: Any = None

    @property
    def g(self) -> int:
        return self.n + 1

    def __reduce__(self) -> tuple[Any, ...]:
        # Pickle as n only; the kernel context and table are rebuilt on first use.
        return (_public_key_from_n, (self.n,))

    def __eq__(self, other: object) -> bool:
        return isinstance(other, PublicKey) and other.n == self.n

    def __hash__(self) -> int:
        return hash(("fedledger.paillier.PublicKey", self.n))

    def __repr__(self) -> str:
        return f"PublicKey(bits={self.bits}, n=0x{self.n:x}"[:60] + "...)"

    def fingerprint(self) -> bytes:
        """SHA-256 of n (big-endian): a short identifier of the key."""
        return hashlib.sha256(self.n.to_bytes(self.n_bytes, "big")).digest()

    def _context(self, *, table: bool = False) -> Any:
        """The kernel context; with table=True the fixed-base table is built first (once,
        under the lock, so that concurrent first encryptions do not race)."""
        with self._lock:
            if self._ctx is None:
                self._ctx = _k.PublicContext(
                    self.n.to_bytes(self.n_bytes, "big"),
                    _derive_h(self.n).to_bytes(self.n_bytes, "big"),
                    self.x_bytes,
                    self.n_bytes,
                    self.c_bytes,
                )
            if table and not self._ctx.table_built:
                self._ctx.build_table(num_threads())
            return self._ctx

    def precompute(self) -> None:
        """Build the fixed-base table now instead of on first encryption."""
        self._context(table=True)

    # -- phe interoperability ------------------------------------------------------------

    def to_phe(self) -> Any:
        """The equivalent ``phe.PaillierPublicKey``."""
        if self._phe is None:
            self._phe = phe.PaillierPublicKey(self.n)
        return self._phe

    @classmethod
    def from_phe(cls, key: Any, *, insecure_for_tests: bool = False) -> PublicKey:
        if not isinstance(key, phe.PaillierPublicKey):
            raise InvalidArgumentType("key", f"expected phe.PaillierPublicKey, got {type(key).__name__}")
        if key.g != key.n + 1:
            raise InvalidArgument("key", "only g = n + 1 keys are supported")
        pk = cls(key.n, insecure_for_tests=insecure_for_tests)
        pk._phe = key
        return pk

    def to_jwk(self, kid: str | None = None) -> dict[str, Any]:
        """The JWK form used by phe's ``pheutil`` (kty "DAJ", alg "PAI-GN1")."""
        return {
            "kty": "DAJ",
            "alg": "PAI-GN1",
            "key_ops": ["encrypt"],
            "n": _b64_int(self.n),
            "kid": kid if kid is not None else f"fedledger Paillier public key {self.fingerprint()[:8].hex()}",
        }

    @classmethod
    def from_jwk(cls, jwk: dict[str, Any] | str, *, insecure_for_tests: bool = False) -> PublicKey:
        obj = _jwk_object(jwk, "jwk")
        if obj.get("kty") != "DAJ":
            raise InvalidArgument("jwk", f"kty must be 'DAJ', got {obj.get('kty')!r}")
        if obj.get("alg") != "PAI-GN1":
            raise InvalidArgument("jwk", f"alg must be 'PAI-GN1', got {obj.get('alg')!r}")
        return cls(_int_b64(obj.get("n"), "jwk['n']"), insecure_for_tests=insecure_for_tests)

    # -- encryption ---------------------------------------------------------------------

    def encrypt(self, value: int | float, precision: float | None = None) -> Any:
        """Encrypt one int or float as a ``phe.EncryptedNumber`` (phe's encoding).

        Stock phe can decrypt the result and add to it; the randomness is DJN's h_s^x.
        """
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise InvalidArgumentType("value", f"expected int or float, got {type(value).__name__}")
        pub = self.to_phe()
        try:
            encoding = phe.EncodedNumber.encode(pub, value, precision)
        except ValueError as exc:
            raise InvalidArgument("value", str(exc)) from None
        plain = np.frombuffer(encoding.encoding.to_bytes(self.n_bytes, "big"), np.uint8)
        row = self._to_bytes_rows(self._encrypt_rows(plain.reshape(1, -1).copy(), None))
        number = phe.EncryptedNumber(pub, int.from_bytes(row[0].tobytes(), "big"), encoding.exponent)
        # Already randomised (h_s^x is an n-th power), so phe need not obfuscate again.
        number._EncryptedNumber__is_obfuscated = True
        return number

    def encrypt_vector(
        self,
        values: ArrayLike,
        *,
        bits: int = 16,
        clip: float = 1.0,
        max_summands: int = 100,
    ) -> EncryptedVector:
        """Quantize ``values`` (floats, clipped to [-clip, clip]) to ``bits``-bit signed
        integers and encrypt them packed; the sum of up to ``max_summands`` such vectors
        decrypts exactly (see :class:`PackingLayout`)."""
        arr = _float_vector(values)
        layout = PackingLayout.create(self.bits, arr.shape[0], bits=bits, clip=clip, max_summands=max_summands)
        return self._encrypt_quantized(layout.quantize(arr), layout, None)

    def encrypt_quantized(
        self,
        values: ArrayLike,
        *,
        bits: int = 16,
        clip: float = 1.0,
        max_summands: int = 100,
    ) -> EncryptedVector:
        """Encrypt already-quantized integers in [-(2^(bits-1) - 1), 2^(bits-1) - 1]."""
        arr = _int_vector(values)
        layout = PackingLayout.create(self.bits, arr.shape[0], bits=bits, clip=clip, max_summands=max_summands)
        layout.check_quantized(arr)
        return self._encrypt_quantized(arr, layout, None)

    def _encrypt_quantized(
        self, q: NDArray[np.int64], layout: PackingLayout, xs: NDArray[np.uint8] | None
    ) -> EncryptedVector:
        plain = self._pack(q, layout, 1)
        return EncryptedVector(self, layout, 1, self._encrypt_rows(plain, xs), _trusted=True)

    def _pack(self, q: NDArray[np.int64], layout: PackingLayout, weight: int) -> NDArray[np.uint8]:
        rows = layout.num_ciphertexts
        per = layout.slots
        grid = np.zeros(rows * per, dtype=np.uint64)
        grid[: q.shape[0]] = (q + layout.bias).astype(np.uint64)
        slots = np.empty((rows, per + 1), dtype=np.uint64)
        slots[:, :per] = grid.reshape(rows, per)
        slots[:, per] = weight
        plain = np.empty((rows, self.n_bytes), dtype=np.uint8)
        _k.pack(slots, layout.slot_bits, plain)
        return plain

    def _encrypt_rows(self, plain: NDArray[np.uint8], xs: NDArray[np.uint8] | None) -> NDArray[np.uint64]:
        """Encrypt plaintext rows; the result is in the kernel's Montgomery form."""
        ctx = self._context(table=True)
        out = np.empty((plain.shape[0], ctx.L), dtype=np.uint64)
        code, row = _k.encrypt(ctx, plain, out, xs, num_threads())
        if code == _k.ERR_RANGE:
            raise InvalidArgument("plaintext", f"row {row} is >= n")
        if code == _k.ERR_NOMEM:
            raise MemoryError(f"out of memory while encrypting row {row}")
        if code != _k.OK:
            raise RuntimeError(f"the CSPRNG failed while encrypting row {row}")
        out.flags.writeable = False
        return out

    def _encrypt_with_randomness(
        self, q: ArrayLike, xs: NDArray[np.uint8], *, bits: int = 16, clip: float = 1.0, max_summands: int = 100
    ) -> EncryptedVector:
        """Test hook: encrypt with given DJN exponents (rows of x_bytes big-endian bytes)."""
        arr = _int_vector(q)
        layout = PackingLayout.create(self.bits, arr.shape[0], bits=bits, clip=clip, max_summands=max_summands)
        layout.check_quantized(arr)
        xs = np.ascontiguousarray(xs, dtype=np.uint8)
        if xs.shape != (layout.num_ciphertexts, self.x_bytes):
            raise InvalidArgument("xs", f"expected shape {(layout.num_ciphertexts, self.x_bytes)}, got {xs.shape}")
        return self._encrypt_quantized(arr, layout, xs)

    def _to_bytes_rows(self, mont: NDArray[np.uint64]) -> NDArray[np.uint8]:
        """Montgomery-form rows to big-endian ciphertext rows of c_bytes bytes."""
        out = np.empty((mont.shape[0], self.c_bytes), dtype=np.uint8)
        if _k.from_montgomery(self._context(), mont, out, num_threads()) != _k.OK:
            raise MemoryError("out of memory while converting ciphertexts")
        return out

    def _from_bytes_rows(self, rows: NDArray[np.uint8], argument: str) -> NDArray[np.uint64]:
        """Validate big-endian ciphertext rows and convert them to Montgomery form."""
        ctx = self._context()
        code, row = _k.validate(ctx, rows, num_threads())
        if code != _k.OK:
            raise InvalidCiphertext(f"{argument}: ciphertext {row} {_CT_ERRORS[code]}", row)
        out = np.empty((rows.shape[0], ctx.L), dtype=np.uint64)
        if _k.to_montgomery(ctx, rows, out, num_threads()) != _k.OK:
            raise MemoryError("out of memory while converting ciphertexts")
        out.flags.writeable = False
        return out

    def _check_ciphertext_int(self, value: object, argument: str) -> int:
        c = _check_int(value, argument)
        if c <= 0:
            raise InvalidCiphertext(f"{argument}: ciphertext is <= 0")
        if c >= self.nsquare:
            raise InvalidCiphertext(f"{argument}: ciphertext is >= n^2")
        if math.gcd(c, self.n) != 1:
            raise InvalidCiphertext(f"{argument}: ciphertext is not coprime with n")
        return c


def _public_key_from_n(n: int) -> PublicKey:
    """Unpickle a PublicKey (its size was accepted when it was created)."""
    return PublicKey(n, insecure_for_tests=True)


def _jwk_object(jwk: object, argument: str) -> dict[str, Any]:
    if isinstance(jwk, str):
        try:
            jwk = json.loads(jwk)
        except json.JSONDecodeError as exc:
            raise InvalidArgument(argument, f"is not JSON: {exc}") from None
    if not isinstance(jwk, dict):
        raise InvalidArgumentType(argument, f"expected a JWK dict or JSON text, got {type(jwk).__name__}")
    return jwk


class PrivateKey:
    """A Paillier private key: the primes p < q of n, with CRT decryption constants."""

    __slots__ = ("public_key", "p", "q", "_ctx", "_phe")

    def __init__(self, public_key: PublicKey, p: int, q: int) -> None:
        if not isinstance(public_key, PublicKey):
            raise InvalidArgumentType("public_key", f"expected PublicKey, got {type(public_key).__name__}")
        p = _check_int(p, "p")
        q = _check_int(q, "q")
        if p <= 1 or q <= 1 or p * q != public_key.n:
            raise KeyMismatch("p * q does not equal the public modulus n")
        if p == q:
            raise InvalidArgument("q", "p and q must differ")
        if p > q:
            p, q = q, p
        for name, v in (("p", p), ("q", q)):
            if not _k.is_probable_prime(_int_bytes(v), 25):
                raise InvalidArgument(name, "is not prime")
        self.public_key = public_key
        self.p = p
        self.q = q
        n = public_key.n
        hp = pow((pow(n + 1, p - 1, p * p) - 1) // p, -1, p)
        hq = pow((pow(n + 1, q - 1, q * q) - 1) // q, -1, q)
        self._ctx = _k.PrivateContext(
            _int_bytes(p), _int_bytes(q), _int_bytes(hp), _int_bytes(hq), _int_bytes(pow(p, -1, q)),
            public_key.n_bytes, public_key.c_bytes,
        )
        self._phe: Any = None

    def __repr__(self) -> str:
        return f"PrivateKey(bits={self.public_key.bits})"

    def __reduce__(self) -> tuple[Any, ...]:
        return (PrivateKey, (self.public_key, self.p, self.q))

    def __eq__(self, other: object) -> bool:
        return isinstance(other, PrivateKey) and hmac.compare_digest(
            _int_bytes(other.p) + _int_bytes(other.q), _int_bytes(self.p) + _int_bytes(self.q)
        )

    def __hash__(self) -> int:
        return hash(("fedledger.paillier.PrivateKey", self.public_key.n))

    # -- phe interoperability ------------------------------------------------------------

    def to_phe(self) -> Any:
        """The equivalent ``phe.PaillierPrivateKey``."""
        if self._phe is None:
            self._phe = phe.PaillierPrivateKey(self.public_key.to_phe(), self.p, self.q)
        return self._phe

    @classmethod
    def from_phe(cls, key: Any, *, insecure_for_tests: bool = False) -> PrivateKey:
        if not isinstance(key, phe.PaillierPrivateKey):
            raise InvalidArgumentType("key", f"expected phe.PaillierPrivateKey, got {type(key).__name__}")
        sk = cls(PublicKey.from_phe(key.public_key, insecure_for_tests=insecure_for_tests), key.p, key.q)
        sk._phe = key
        return sk

    def to_jwk(self, kid: str | None = None) -> dict[str, Any]:
        """phe's private JWK form: kty "DAJ", key_ops ["decrypt"], p, q and the public JWK."""
        return {
            "kty": "DAJ",
            "key_ops": ["decrypt"],
            "p": _b64_int(self.p),
            "q": _b64_int(self.q),
            "pub": self.public_key.to_jwk(),
            "kid": kid if kid is not None else "fedledger Paillier private key "
            + self.public_key.fingerprint()[:8].hex(),
        }

    @classmethod
    def from_jwk(cls, jwk: dict[str, Any] | str, *, insecure_for_tests: bool = False) -> PrivateKey:
        obj = _jwk_object(jwk, "jwk")
        if obj.get("kty") != "DAJ":
            raise InvalidArgument("jwk", f"kty must be 'DAJ', got {obj.get('kty')!r}")
        if "decrypt" not in (obj.get("key_ops") or []):
            raise InvalidArgument("jwk", "key_ops must contain 'decrypt'")
        if "pub" not in obj:
            raise InvalidArgument("jwk", "missing 'pub' (the public JWK)")
        pub = PublicKey.from_jwk(obj["pub"], insecure_for_tests=insecure_for_tests)
        return cls(pub, _int_b64(obj.get("p"), "jwk['p']"), _int_b64(obj.get("q"), "jwk['q']"))

    # -- decryption ---------------------------------------------------------------------

    def _decrypt_rows(self, cts: NDArray[np.uint64]) -> NDArray[np.uint8]:
        out = np.empty((cts.shape[0], self.public_key.n_bytes), dtype=np.uint8)
        _k.decrypt(self._ctx, self.public_key._context(), cts, out, num_threads())
        return out

    def raw_decrypt(self, ciphertext: int) -> int:
        """Decrypt one raw ciphertext integer to its plaintext in [0, n)."""
        c = self.public_key._check_ciphertext_int(ciphertext, "ciphertext")
        row = np.frombuffer(c.to_bytes(self.public_key.c_bytes, "big"), np.uint8).reshape(1, -1)
        return int.from_bytes(self._decrypt_rows(self.public_key._from_bytes_rows(row, "ciphertext"))[0].tobytes(), "big")

    def decrypt(self, encrypted_number: Any) -> int | float:
        """Decrypt a ``phe.EncryptedNumber`` (made by phe or by :meth:`PublicKey.encrypt`)."""
        if isinstance(encrypted_number, EncryptedVector):
            raise InvalidArgumentType(
                "encrypted_number", "a packed EncryptedVector is not a number: use decrypt_vector()"
            )
        if not isinstance(encrypted_number, phe.EncryptedNumber):
            raise InvalidArgumentType(
                "encrypted_number", f"expected phe.EncryptedNumber, got {type(encrypted_number).__name__}"
            )
        if encrypted_number.public_key.n != self.public_key.n:
            raise KeyMismatch("encrypted_number was encrypted under a different public key")
        m = self.raw_decrypt(encrypted_number.ciphertext(be_secure=False))
        try:
            value: int | float = phe.EncodedNumber(self.public_key.to_phe(), m, encrypted_number.exponent).decode()
        except OverflowError as exc:
            raise PaillierOverflow(f"decrypted number overflowed phe's encoding range ({exc})") from None
        return value

    def decrypt_quantized(self, vector: EncryptedVector) -> NDArray[np.int64]:
        """The exact sum of the quantized values of every vector added into ``vector``
        (times any scalar it was multiplied by), as int64."""
        self._check_vector(vector)
        plain = self._decrypt_rows(vector._data)
        return _unpack_checked(plain, vector.layout, vector.weight)

    def decrypt_vector(self, vector: EncryptedVector) -> NDArray[np.float64]:
        """Dequantized sum: :meth:`decrypt_quantized` divided by the layout's scale."""
        return self.decrypt_quantized(vector) / vector.layout.scale

    def _check_vector(self, vector: object) -> None:
        if not isinstance(vector, EncryptedVector):
            raise InvalidArgumentType("vector", f"expected EncryptedVector, got {type(vector).__name__}")
        if vector.public_key != self.public_key:
            raise KeyMismatch("the vector was encrypted under a different public key")

    # -- threshold custody ----------------------------------------------------------------

    def split(self, threshold: int, trustees: int) -> list[KeyShare]:
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
        pp, qq = (self.p - 1) // 2, (self.q - 1) // 2
        if not (_k.is_probable_prime(_int_bytes(pp), 25) and _k.is_probable_prime(_int_bytes(qq), 25)):
            raise InvalidArgument(
                "self",
                "threshold decryption needs a key of safe primes (p = 2p'+1, q = 2q'+1): "
                "create it with generate_keypair(..., safe_primes=True)",
            )
        n = self.public_key.n
        m = pp * qq
        nm = n * m
        d = (m * pow(m, -1, n)) % nm  # d = 0 mod m, d = 1 mod n
        coeffs = [d] + [secrets.randbelow(nm) for _ in range(threshold - 1)]
        shares = []
        for i in range(1, trustees + 1):
            s = 0
            for c in reversed(coeffs):
                s = (s * i + c) % nm
            shares.append(KeyShare(self.public_key, i, s, threshold, trustees))
        return shares


def generate_keypair(
    bits: int = 2048, *, insecure_for_tests: bool = False, safe_primes: bool = False
) -> tuple[PublicKey, PrivateKey]:
    """A fresh key pair with an n of exactly ``bits`` bits (two primes of bits/2 bits).

    ``safe_primes=True`` makes p = 2p'+1 and q = 2q'+1 (needed for :meth:`PrivateKey.split`);
    it is slower (a few seconds for 2048 bits, with high variance).
    """
    bits = _check_int(bits, "bits")
    if bits % 2:
        raise InvalidArgument("bits", f"must be even, got {bits}")
    if bits < _MIN_TEST_BITS or (bits < MIN_KEY_BITS and not insecure_for_tests):
        raise InvalidArgument(
            "bits",
            f"{bits}-bit keys are too small: at least {MIN_KEY_BITS} "
            "(smaller only with insecure_for_tests=True)",
        )
    while True:
        p = int.from_bytes(_k.random_prime(bits // 2, safe_primes), "big")
        q = int.from_bytes(_k.random_prime(bits // 2, safe_primes), "big")
        if p != q and (p * q).bit_length() == bits:
            break
    pk = PublicKey(p * q, insecure_for_tests=insecure_for_tests)
    return pk, PrivateKey(pk, p, q)


def from_phe(key: Any, *, insecure_for_tests: bool = False) -> PublicKey | PrivateKey:
    """Convert a ``phe.PaillierPublicKey`` or ``phe.PaillierPrivateKey``."""
    if isinstance(key, phe.PaillierPrivateKey):
        return PrivateKey.from_phe(key, insecure_for_tests=insecure_for_tests)
    if isinstance(key, phe.PaillierPublicKey):
        return PublicKey.from_phe(key, insecure_for_tests=insecure_for_tests)
    raise InvalidArgumentType("key", f"expected a phe key, got {type(key).__name__}")


def to_phe(key: PublicKey | PrivateKey) -> Any:
    """The equivalent phe key. Packed vectors have no phe equivalent and are refused."""
    if isinstance(key, (PublicKey, PrivateKey)):
        return key.to_phe()
    if isinstance(key, EncryptedVector):
        raise InvalidArgumentType("key", "a packed EncryptedVector has no phe equivalent")
    raise InvalidArgumentType("key", f"expected PublicKey or PrivateKey, got {type(key).__name__}")


def encrypted_numbers_to_json(numbers: Sequence[Any]) -> str:
    """phe's documented JSON form for a list of EncryptedNumber under one key:
    ``{"public_key": {"g": g, "n": n}, "values": [[str(ciphertext), exponent], ...]}``."""
    if isinstance(numbers, EncryptedVector):
        raise InvalidArgumentType("numbers", "a packed EncryptedVector is not a list of phe numbers")
    items = list(numbers)
    if not items:
        raise InvalidArgument("numbers", "must not be empty (the JSON form carries the key)")
    pub = None
    for i, x in enumerate(items):
        if not isinstance(x, phe.EncryptedNumber):
            raise InvalidArgumentType(f"numbers[{i}]", f"expected phe.EncryptedNumber, got {type(x).__name__}")
        if pub is None:
            pub = x.public_key
        elif x.public_key.n != pub.n:
            raise KeyMismatch(f"numbers[{i}] is under a different public key than numbers[0]")
    assert pub is not None
    return json.dumps(
        {
            "public_key": {"g": pub.g, "n": pub.n},
            "values": [[str(x.ciphertext()), x.exponent] for x in items],
        }
    )


def encrypted_numbers_from_json(
    text: str | bytes, *, insecure_for_tests: bool = False
) -> tuple[PublicKey, list[Any]]:
    """Read phe's documented JSON form; every ciphertext is validated."""
    try:
        obj = json.loads(text)
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise InvalidArgument("text", f"is not JSON: {exc}") from None
    if not isinstance(obj, dict) or "public_key" not in obj or "values" not in obj:
        raise InvalidArgument("text", "expected an object with 'public_key' and 'values'")
    try:
        n = int(obj["public_key"]["n"])
    except (KeyError, TypeError, ValueError):
        raise InvalidArgument("text", "public_key.n is missing or not an integer") from None
    pk = PublicKey(n, insecure_for_tests=insecure_for_tests)
    g = obj["public_key"].get("g", n + 1)
    if int(g) != n + 1:
        raise InvalidArgument("text", "public_key.g must be n + 1")
    out = []
    for i, item in enumerate(obj["values"]):
        try:
            ct, exp = int(item[0]), int(item[1])
        except (TypeError, ValueError, IndexError):
            raise InvalidArgument(f"values[{i}]", "expected [ciphertext string, exponent]") from None
        c = pk._check_ciphertext_int(ct, f"values[{i}]")
        out.append(phe.EncryptedNumber(pk.to_phe(), c, exp))
    return pk, out


# --------------------------------------------------------------------------------------
# Packing


def _float_vector(values: ArrayLike) -> NDArray[np.float64]:
    try:
        arr = np.asarray(values, dtype=np.float64)
    except (TypeError, ValueError):
        raise InvalidArgumentType("values", "expected a 1-D array of real numbers") from None
    if arr.ndim != 1:
        raise InvalidArgument("values", f"must be 1-D, got shape {arr.shape}")
    bad = np.flatnonzero(~np.isfinite(arr))
    if bad.size:
        raise InvalidArgument(f"values[{int(bad[0])}]", f"is not finite ({arr[bad[0]]})")
    return arr


def _int_vector(values: ArrayLike) -> NDArray[np.int64]:
    arr = np.asarray(values)
    if arr.ndim != 1:
        raise InvalidArgument("values", f"must be 1-D, got shape {arr.shape}")
    if arr.size == 0:
        return np.zeros(0, dtype=np.int64)
    if arr.dtype.kind not in "iu":
        raise InvalidArgumentType("values", f"expected an integer array, got dtype {arr.dtype}")
    return arr.astype(np.int64)


@dataclass(frozen=True)
class PackingLayout:
    """How quantized values sit in Paillier plaintexts. Travels with every EncryptedVector.

    Each value q in [-(2^(bits-1) - 1), 2^(bits-1) - 1] is stored as q + bias
    (bias = 2^(bits-1)), so a slot holds between 1 and 2^bits - 1 per summand and a value
    slot is never zero: padding slots (past ``count``) are zero, so a corrupted ``count``
    is caught at decryption instead of reading padding as a value. A slot of
    ``slot_bits`` bits holds the sum of ``max_summands`` of them without carrying into the
    next slot. Each plaintext has ``(key_bits - 1) // slot_bits`` slots: ``slots`` for
    values, and the top one as a checksum holding the vector's weight (the number of
    summands, counting scalar multiples), which decryption verifies.
    """

    key_bits: int
    count: int
    bits: int
    clip: float
    max_summands: int
    slot_bits: int
    slots: int

    @classmethod
    def create(cls, key_bits: int, count: int, *, bits: int, clip: float, max_summands: int) -> PackingLayout:
        bits = _check_int(bits, "bits")
        max_summands = _check_int(max_summands, "max_summands")
        count = _check_int(count, "count")
        if not 2 <= bits <= 32:
            raise InvalidArgument("bits", f"must be in [2, 32], got {bits}")
        if max_summands < 1:
            raise InvalidArgument("max_summands", f"must be >= 1, got {max_summands}")
        if isinstance(clip, bool) or not isinstance(clip, (int, float, np.floating)):
            raise InvalidArgumentType("clip", f"expected float, got {type(clip).__name__}")
        clip = float(clip)
        if not (math.isfinite(clip) and clip > 0):
            raise InvalidArgument("clip", f"must be finite and > 0, got {clip}")
        if count < 0:
            raise InvalidArgument("count", f"must be >= 0, got {count}")
        slot_bits = (max_summands * ((1 << bits) - 1)).bit_length()
        if slot_bits > 63:
            raise InvalidArgument(
                "max_summands", f"bits={bits} with max_summands={max_summands} needs {slot_bits}-bit slots (max 63)"
            )
        total = (key_bits - 1) // slot_bits
        if total < 2:
            raise InvalidArgument("bits", f"a {key_bits}-bit key cannot hold two {slot_bits}-bit slots")
        return cls(key_bits, count, bits, clip, max_summands, slot_bits, total - 1)

    @property
    def qmax(self) -> int:
        return (1 << (self.bits - 1)) - 1

    @property
    def bias(self) -> int:
        """Added to every value so that a stored value is never 0 (padding is)."""
        return self.qmax + 1

    @property
    def max_stored(self) -> int:
        return 2 * self.qmax + 1

    @property
    def scale(self) -> float:
        """Quantized units per unit of value: q = round(x * scale)."""
        return self.qmax / self.clip

    @property
    def num_ciphertexts(self) -> int:
        return -(-self.count // self.slots)

    def quantize(self, values: NDArray[np.float64]) -> NDArray[np.int64]:
        q = np.rint(np.clip(values, -self.clip, self.clip) * self.scale)
        return np.clip(q, -self.qmax, self.qmax).astype(np.int64)

    def check_quantized(self, q: NDArray[np.int64]) -> None:
        if q.shape[0] != self.count:
            raise InvalidArgument("values", f"expected {self.count} values, got {q.shape[0]}")
        bad = np.flatnonzero((q < -self.qmax) | (q > self.qmax))
        if bad.size:
            i = int(bad[0])
            raise InvalidArgument(
                f"values[{i}]", f"{int(q[i])} is outside [-{self.qmax}, {self.qmax}] for bits={self.bits}"
            )

    def _compatible(self, other: PackingLayout) -> str | None:
        for name in ("key_bits", "count", "bits", "clip", "max_summands", "slot_bits", "slots"):
            a, b = getattr(self, name), getattr(other, name)
            if a != b:
                return f"{name} differs ({a} vs {b})"
        return None


def _unpack_checked(plain: NDArray[np.uint8], layout: PackingLayout, weight: int) -> NDArray[np.int64]:
    rows, per = plain.shape[0], layout.slots
    slots = np.empty((rows, per + 1), dtype=np.uint64)
    high = np.empty(rows, dtype=np.uint8)
    _k.unpack(plain, layout.slot_bits, slots, high)
    bad = np.flatnonzero(high)
    if bad.size:
        raise DecryptionError(
            f"ciphertext {int(bad[0])}: the plaintext has bits above the packed slots "
            "(wrong private key, or a corrupted or foreign ciphertext)"
        )
    checks = slots[:, per]
    bad = np.flatnonzero(checks != np.uint64(weight))
    if bad.size:
        r = int(bad[0])
        raise DecryptionError(
            f"ciphertext {r}: checksum slot holds {int(checks[r])}, expected the vector's weight {weight} "
            "(wrong private key, mixed or corrupted ciphertexts)"
        )
    values = slots[:, :per].reshape(-1)
    tail = values[layout.count :]
    if tail.size and np.any(tail != 0):
        j = layout.count + int(np.flatnonzero(tail)[0])
        raise DecryptionError(
            f"ciphertext {j // per}: padding slot {j % per} is not zero (wrong key or corrupted ciphertext)"
        )
    values = values[: layout.count]
    under = np.flatnonzero(values < np.uint64(weight))
    if under.size:
        i = int(under[0])
        raise DecryptionError(
            f"element {i} (ciphertext {i // per}, slot {i % per}) decrypted to {int(values[i])}, below the "
            f"floor {weight} of a value slot: a padding slot read as a value (corrupted count) or a wrong key"
        )
    bound = np.uint64(weight * layout.max_stored)
    over = np.flatnonzero(values > bound)
    if over.size:
        i = int(over[0])
        raise PaillierOverflow(
            f"element {i} (ciphertext {i // per}, slot {i % per}) decrypted to {int(values[i])}, "
            f"above the headroom bound {int(bound)} for weight {weight}: slot overflow or tampering"
        )
    return values.astype(np.int64) - np.int64(weight * layout.bias)


# --------------------------------------------------------------------------------------
# Encrypted vectors

_MAGIC = b"FLPV"
_VERSION = 1
_HEADER = struct.Struct(">4sBBdIQHIQI")
_PARTIAL_MAGIC = b"FLPD"
_PARTIAL_HEADER = struct.Struct(">4sBHHH32sQI")


class EncryptedVector:
    """A packed, encrypted vector of quantized values. Not a ``phe`` number.

    ``+`` adds two vectors under the same key and layout, ``k * v`` multiplies by a
    positive integer, :func:`sum_vectors` adds many at once. ``weight`` counts how many
    fresh vectors the value is worth (1 after encryption; weights add; scalars multiply);
    it may never exceed ``layout.max_summands``.

    Internally the ciphertexts are kept as 64-bit limbs in Montgomery form (c 2^(64L) mod
    n^2), so that an addition is one multiplication and one Montgomery reduction;
    :attr:`ciphertexts` and :meth:`to_bytes` give the ordinary big-endian integers.
    """

    __slots__ = ("public_key", "layout", "weight", "_data")

    def __init__(
        self,
        public_key: PublicKey,
        layout: PackingLayout,
        weight: int,
        data: NDArray[np.uint64],
        *,
        _trusted: bool = False,
    ) -> None:
        if not _trusted:
            raise InvalidArgument(
                "EncryptedVector", "construct through PublicKey.encrypt_vector or EncryptedVector.from_bytes"
            )
        self.public_key = public_key
        self.layout = layout
        self.weight = weight
        self._data = data

    def __len__(self) -> int:
        return self.layout.count

    def __reduce__(self) -> tuple[Any, ...]:
        # Pickle through the validated byte form.
        return (EncryptedVector.from_bytes, (self.to_bytes(), self.public_key))

    def __repr__(self) -> str:
        return (
            f"EncryptedVector(count={self.layout.count}, ciphertexts={self.num_ciphertexts}, "
            f"bits={self.layout.bits}, weight={self.weight}/{self.layout.max_summands})"
        )

    @property
    def num_ciphertexts(self) -> int:
        return int(self._data.shape[0])

    @property
    def nbytes(self) -> int:
        """Bytes of ciphertext payload (num_ciphertexts x bytes of n^2), without the header."""
        return self.num_ciphertexts * self.public_key.c_bytes

    @property
    def ciphertexts(self) -> NDArray[np.uint8]:
        """A (num_ciphertexts, bytes of n^2) array of the big-endian ciphertexts (a copy)."""
        return self.public_key._to_bytes_rows(self._data)

    def _check_operand(self, other: object, argument: str) -> EncryptedVector:
        if not isinstance(other, EncryptedVector):
            raise InvalidArgumentType(argument, f"expected EncryptedVector, got {type(other).__name__}")
        if other.public_key != self.public_key:
            raise KeyMismatch(f"{argument} is encrypted under a different public key")
        why = self.layout._compatible(other.layout)
        if why is not None:
            raise LayoutMismatch(f"{argument} has a different packing layout: {why}")
        return other

    def __add__(self, other: EncryptedVector) -> EncryptedVector:
        return sum_vectors([self, other])

    def __radd__(self, other: object) -> EncryptedVector:
        if isinstance(other, int) and not isinstance(other, bool) and other == 0:
            return self  # lets builtin sum() start from 0
        return sum_vectors([self._check_operand(other, "other"), self])

    def __mul__(self, scalar: int) -> EncryptedVector:
        if isinstance(scalar, bool) or not isinstance(scalar, (int, np.integer)):
            return NotImplemented
        k = int(scalar)
        if k < 1:
            raise InvalidArgument(
                "scalar", f"must be a positive integer (packed slots cannot hold negatives), got {k}"
            )
        weight = self.weight * k
        if weight > self.layout.max_summands:
            raise PaillierOverflow(
                f"multiplying a weight-{self.weight} vector by {k} gives weight {weight} > "
                f"max_summands={self.layout.max_summands}: the slots would overflow"
            )
        out = np.empty_like(self._data)
        if k == 1:
            out[...] = self._data
        else:
            _k.power(self.public_key._context(), self._data, _int_bytes(k), False, out, num_threads())
        out.flags.writeable = False
        return EncryptedVector(self.public_key, self.layout, weight, out, _trusted=True)

    __rmul__ = __mul__

    @staticmethod
    def sum(vectors: Iterable[EncryptedVector]) -> EncryptedVector:
        """Homomorphic sum of many vectors in one pass (same as :func:`sum_vectors`)."""
        return sum_vectors(vectors)

    # -- serialisation -------------------------------------------------------------------

    def to_bytes(self) -> bytes:
        """Header (magic, version, layout, weight, n) followed by the ciphertext rows."""
        lay = self.layout
        n_raw = self.public_key.n.to_bytes(self.public_key.n_bytes, "big")
        header = _HEADER.pack(
            _MAGIC, _VERSION, lay.bits, lay.clip, lay.max_summands, lay.count, lay.slot_bits, lay.slots,
            self.weight, len(n_raw),
        )
        return header + n_raw + self.ciphertexts.tobytes()

    @classmethod
    def from_bytes(cls, data: bytes, public_key: PublicKey) -> EncryptedVector:
        """Parse :meth:`to_bytes` output, checking the key, the layout and every ciphertext."""
        if not isinstance(public_key, PublicKey):
            raise InvalidArgumentType("public_key", f"expected PublicKey, got {type(public_key).__name__}")
        if not isinstance(data, (bytes, bytearray, memoryview)):
            raise InvalidArgumentType("data", f"expected bytes, got {type(data).__name__}")
        raw = bytes(data)
        if len(raw) < _HEADER.size:
            raise InvalidArgument("data", f"too short for a header ({len(raw)} bytes)")
        magic, version, bits, clip, max_summands, count, slot_bits, slots, weight, nlen = _HEADER.unpack_from(raw)
        if magic != _MAGIC or version != _VERSION:
            raise InvalidArgument("data", "not a fedledger packed Paillier vector (bad magic or version)")
        off = _HEADER.size
        n = int.from_bytes(raw[off : off + nlen], "big")
        off += nlen
        if n != public_key.n:
            raise KeyMismatch("the serialised vector is under a different public key")
        layout = PackingLayout.create(public_key.bits, count, bits=bits, clip=clip, max_summands=max_summands)
        if (layout.slot_bits, layout.slots) != (slot_bits, slots):
            raise LayoutMismatch(
                f"serialised slot layout ({slot_bits}-bit x {slots}) does not match the one derived "
                f"from its parameters ({layout.slot_bits}-bit x {layout.slots})"
            )
        if not 1 <= weight <= max_summands:
            raise InvalidArgument("data", f"weight {weight} is outside [1, max_summands={max_summands}]")
        rows, width = layout.num_ciphertexts, public_key.c_bytes
        if len(raw) - off != rows * width:
            raise InvalidArgument(
                "data", f"expected {rows} ciphertexts of {width} bytes, got {len(raw) - off} bytes"
            )
        arr = np.frombuffer(raw, dtype=np.uint8, offset=off).reshape(rows, width)
        return cls(public_key, layout, weight, public_key._from_bytes_rows(arr, "data"), _trusted=True)

    @classmethod
    def from_ciphertexts(
        cls, public_key: PublicKey, layout: PackingLayout, weight: int, ciphertexts: NDArray[np.uint8]
    ) -> EncryptedVector:
        """Wrap a (num_ciphertexts, bytes of n^2) uint8 array, validating every row."""
        if not isinstance(layout, PackingLayout) or layout.key_bits != public_key.bits:
            raise LayoutMismatch("layout does not belong to this key size")
        weight = _check_int(weight, "weight")
        if not 1 <= weight <= layout.max_summands:
            raise InvalidArgument("weight", f"must be in [1, {layout.max_summands}], got {weight}")
        arr = np.ascontiguousarray(ciphertexts, dtype=np.uint8)
        if arr.shape != (layout.num_ciphertexts, public_key.c_bytes):
            raise InvalidArgument(
                "ciphertexts", f"expected shape {(layout.num_ciphertexts, public_key.c_bytes)}, got {arr.shape}"
            )
        return cls(public_key, layout, weight, public_key._from_bytes_rows(arr, "ciphertexts"), _trusted=True)


def sum_vectors(vectors: Iterable[EncryptedVector]) -> EncryptedVector:
    """Homomorphic sum of one or more vectors (one parallel pass over all of them)."""
    items = list(vectors)
    if not items:
        raise InvalidArgument("vectors", "need at least one vector")
    first = items[0]
    if not isinstance(first, EncryptedVector):
        raise InvalidArgumentType("vectors[0]", f"expected EncryptedVector, got {type(first).__name__}")
    for i, v in enumerate(items[1:], 1):
        first._check_operand(v, f"vectors[{i}]")
    weight = sum(v.weight for v in items)
    if weight > first.layout.max_summands:
        raise PaillierOverflow(
            f"summing to weight {weight} exceeds max_summands={first.layout.max_summands}: "
            "the packed slots would overflow (encrypt with a larger max_summands)"
        )
    if len(items) == 1:
        return first
    out = np.empty_like(first._data)
    _k.product(first.public_key._context(), [v._data for v in items], out, num_threads())
    out.flags.writeable = False
    return EncryptedVector(first.public_key, first.layout, weight, out, _trusted=True)


# --------------------------------------------------------------------------------------
# Threshold custody (Damgard-Jurik / Shoup threshold Paillier, trusted dealer)


@dataclass(frozen=True, repr=False)
class KeyShare:
    """One trustee's share s_i = f(i) mod n*p'*q' of the decryption exponent d."""

    public_key: PublicKey
    index: int
    share: int
    threshold: int
    trustees: int

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
        obj = _jwk_object(text if isinstance(text, str) else text.decode("utf-8"), "text")
        if obj.get("kty") != "fedledger-paillier-share":
            raise InvalidArgument("text", f"kty must be 'fedledger-paillier-share', got {obj.get('kty')!r}")
        pk = PublicKey(_int_b64(obj.get("n"), "text['n']"), insecure_for_tests=insecure_for_tests)
        index = _check_int(obj.get("index"), "text['index']")
        threshold = _check_int(obj.get("threshold"), "text['threshold']")
        trustees = _check_int(obj.get("trustees"), "text['trustees']")
        if not (1 <= threshold <= trustees <= MAX_TRUSTEES and 1 <= index <= trustees):
            raise InvalidArgument("text", f"inconsistent index/threshold/trustees ({index}/{threshold}/{trustees})")
        share = _int_b64(obj.get("share"), "text['share']")
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
            self.public_key._context(), vector._data, _int_bytes(2 * self.delta * self.share), True, out,
            num_threads(),
        )
        out.flags.writeable = False
        return PartialDecryption(self.index, self.threshold, self.trustees, _digest(vector), out)


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

    def __repr__(self) -> str:
        return f"PartialDecryption(index={self.index}, rows={self.values.shape[0]})"

    def to_bytes(self, public_key: PublicKey) -> bytes:
        """Header (magic, version, index, threshold, trustees, vector digest) and the
        big-endian partial values (one per ciphertext, bytes of n^2 each)."""
        rows = public_key._to_bytes_rows(self.values)
        header = _PARTIAL_HEADER.pack(
            _PARTIAL_MAGIC, _VERSION, self.index, self.threshold, self.trustees, self.vector_digest,
            rows.shape[0], public_key.c_bytes,
        )
        return header + rows.tobytes()

    @classmethod
    def from_bytes(cls, data: bytes, public_key: PublicKey) -> PartialDecryption:
        """Parse :meth:`to_bytes` output; every value must be a unit mod n^2."""
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
        if not (1 <= threshold <= trustees <= MAX_TRUSTEES and 1 <= index <= trustees):
            raise InvalidArgument("data", f"inconsistent index/threshold/trustees ({index}/{threshold}/{trustees})")
        body = raw[_PARTIAL_HEADER.size :]
        if len(body) != rows * width:
            raise InvalidArgument("data", f"expected {rows} values of {width} bytes, got {len(body)} bytes")
        arr = np.frombuffer(body, dtype=np.uint8).reshape(rows, width)
        return cls(index, threshold, trustees, digest, public_key._from_bytes_rows(arr, "data"))


def combine_partial_decryptions(
    vector: EncryptedVector, partials: Sequence[PartialDecryption], *, quantized: bool = False
) -> NDArray[np.float64] | NDArray[np.int64]:
    """Decrypt ``vector`` from at least ``threshold`` partial decryptions of it.

    Returns what :meth:`PrivateKey.decrypt_vector` (or, with ``quantized=True``,
    :meth:`PrivateKey.decrypt_quantized`) would. A wrong or mismatched partial is detected
    (DecryptionError) but not attributed: there are no zero-knowledge proofs.
    """
    if not isinstance(vector, EncryptedVector):
        raise InvalidArgumentType("vector", f"expected EncryptedVector, got {type(vector).__name__}")
    items = list(partials)
    if not items:
        raise InvalidArgument("partials", "need at least one partial decryption")
    digest = _digest(vector)
    by_index: dict[int, PartialDecryption] = {}
    for i, part in enumerate(items):
        if not isinstance(part, PartialDecryption):
            raise InvalidArgumentType(f"partials[{i}]", f"expected PartialDecryption, got {type(part).__name__}")
        if (part.threshold, part.trustees) != (items[0].threshold, items[0].trustees):
            raise InvalidArgument(f"partials[{i}]", "comes from a different sharing (threshold/trustees differ)")
        if not hmac.compare_digest(part.vector_digest, digest):
            raise InvalidArgument(f"partials[{i}]", "is a partial decryption of a different vector")
        by_index.setdefault(part.index, part)
    t, l = items[0].threshold, items[0].trustees
    if len(by_index) < t:
        raise InvalidArgument("partials", f"need partials from {t} distinct trustees, got {len(by_index)}")
    chosen = sorted(by_index)[:t]
    delta = math.factorial(l)
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
        vector.public_key._context(), [by_index[i].values for i in chosen], exps, neg,
        _int_bytes(factor), plain, num_threads(),
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
