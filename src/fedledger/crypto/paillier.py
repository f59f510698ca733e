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
    "MAX_KEY_BITS",
    "MAX_PHE_EXPONENT",
    "MAX_PHE_VALUES",
    "MAX_JSON_CHARS",
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
#: Largest modulus accepted from anywhere (keys, JWKs, phe keys, phe JSON, key shares). The
#: kernel's limit is 16384 bits; 8192 bits already means a 256 MiB fixed-base table.
MAX_KEY_BITS = 8192
#: Largest |exponent| of a phe number accepted (phe JSON, decrypt). phe's defaults give
#: exponents in [-282, 242] for floats and 0 for ints; a product of two stays in [-564, 484].
#: Decoding costs 16^|exponent|, so the bound also bounds the work.
MAX_PHE_EXPONENT = 1024
#: Most numbers accepted in one phe JSON document.
MAX_PHE_VALUES = 1 << 16
#: Longest phe JSON text accepted (characters or bytes).
MAX_JSON_CHARS = 1 << 27
#: Longest JWK or key share JSON text accepted (an 8192-bit private JWK is about 4 KiB).
_MAX_KEY_JSON_CHARS = 1 << 16
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


def _int_b64(text: object, argument: str, max_bits: int) -> int:
    """A base64url big-endian integer of at most ``max_bits`` bits (length checked first)."""
    if not isinstance(text, str) or not text:
        raise InvalidArgumentType(argument, f"expected a non-empty base64url string, got {_show(text)}")
    max_bytes = (max_bits + 7) // 8
    if len(text) > 4 * ((max_bytes + 2) // 3):
        raise InvalidArgument(argument, f"is {len(text)} characters, longer than any integer of {max_bits} bits")
    try:
        raw = base64.b64decode(text + "=" * (-len(text) % 4), altchars=b"-_", validate=True)
    except (ValueError, TypeError):
        raise InvalidArgument(argument, "is not valid base64url") from None
    value = int.from_bytes(raw, "big")
    if value.bit_length() > max_bits:
        raise InvalidArgument(argument, f"has {value.bit_length()} bits, more than {max_bits}")
    return value


def _show(value: object) -> str:
    """A short description of an untrusted value for an error message (never a deep repr)."""
    if isinstance(value, (str, bytes)):
        text = repr(value)
        return text if len(text) <= 40 else text[:37] + "..."
    if value is None or isinstance(value, (bool, float)) or (isinstance(value, int) and value.bit_length() < 128):
        return repr(value)
    return f"a value of type {type(value).__name__}"


def _decimal(value: object, argument: str, max_bits: int) -> int:
    """A non-negative integer given as a JSON int or a string of decimal digits, at most
    ``max_bits`` bits; the length is checked before any conversion (no int-str limit hit)."""
    if isinstance(value, bool) or not isinstance(value, (int, str)):
        raise InvalidArgumentType(argument, f"expected an integer or a decimal string, got {_show(value)}")
    if isinstance(value, int):
        number = value
    else:
        max_digits = max_bits * 30103 // 100000 + 1
        if not value or len(value) > max_digits or not (value.isascii() and value.isdigit()):
            raise InvalidArgument(argument, f"expected a decimal string of at most {max_digits} digits, got {_show(value)}")
        number = 0
        for i in range(0, len(value), 1000):  # chunks below CPython's int/str conversion limit
            chunk = value[i : i + 1000]
            number = number * 10 ** len(chunk) + int(chunk)
    if number < 0 or number.bit_length() > max_bits:
        raise InvalidArgument(argument, f"must be in [0, 2^{max_bits}), got {number.bit_length()} bits")
    return number


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
        if bits > MAX_KEY_BITS:
            raise InvalidArgument("n", f"a {bits}-bit modulus is too large: at most {MAX_KEY_BITS} bits")
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
            raise InvalidArgument("jwk", f"kty must be 'DAJ', got {_show(obj.get('kty'))}")
        if obj.get("alg") != "PAI-GN1":
            raise InvalidArgument("jwk", f"alg must be 'PAI-GN1', got {_show(obj.get('alg'))}")
        return cls(_int_b64(obj.get("n"), "jwk['n']", MAX_KEY_BITS), insecure_for_tests=insecure_for_tests)

    # -- encryption ---------------------------------------------------------------------

    def encrypt(self, value: int | float, precision: float | None = None) -> Any:
        """Encrypt one int or float as a ``phe.EncryptedNumber`` (phe's encoding).

        Stock phe can decrypt the result and add to it; the randomness is DJN's h_s^x.
        """
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise InvalidArgumentType("value", f"expected int or float, got {type(value).__name__}")
        if isinstance(value, float) and not math.isfinite(value):
            raise InvalidArgument("value", f"must be finite, got {value}")
        if precision is not None:
            if isinstance(precision, bool) or not isinstance(precision, (int, float)):
                raise InvalidArgumentType("precision", f"expected float or None, got {type(precision).__name__}")
            try:
                finite = math.isfinite(precision) and precision > 0
            except OverflowError:  # an int too large for a float
                finite = False
            if not finite:
                raise InvalidArgument("precision", f"must be finite, > 0 and at most a float's range, got {_show(precision)}")
        pub = self.to_phe()
        try:
            encoding = phe.EncodedNumber.encode(pub, value, precision)
        except (ValueError, OverflowError) as exc:
            raise InvalidArgument("value", str(exc)) from None
        if not -MAX_PHE_EXPONENT <= encoding.exponent <= MAX_PHE_EXPONENT:
            raise InvalidArgument(
                "precision", f"gives exponent {encoding.exponent}, outside [-{MAX_PHE_EXPONENT}, {MAX_PHE_EXPONENT}]"
            )
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
        _check_rows(plain, np.uint8, self.n_bytes, "plaintext")
        if xs is not None:
            _check_rows(xs, np.uint8, self.x_bytes, "xs", plain.shape[0])
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
        _check_rows(mont, np.uint64, self._context().L, "values")
        out = np.empty((mont.shape[0], self.c_bytes), dtype=np.uint8)
        if _k.from_montgomery(self._context(), mont, out, num_threads()) != _k.OK:
            raise MemoryError("out of memory while converting ciphertexts")
        return out

    def _from_bytes_rows(self, rows: NDArray[np.uint8], argument: str) -> NDArray[np.uint64]:
        """Validate big-endian ciphertext rows and convert them to Montgomery form."""
        _check_rows(rows, np.uint8, self.c_bytes, argument)
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


def _check_rows(
    arr: object, dtype: type[np.generic], width: int, argument: str, rows: int | None = None
) -> None:
    """The kernels read ``width`` elements of every row they are given: refuse anything but a
    C-contiguous 2-D array of exactly that width (and of ``rows`` rows when given)."""
    if not isinstance(arr, np.ndarray) or arr.dtype != dtype:
        raise InvalidArgumentType(argument, f"expected a {np.dtype(dtype).name} array, got {type(arr).__name__}")
    if arr.ndim != 2 or arr.shape[1] != width or (rows is not None and arr.shape[0] != rows):
        want = f"({rows if rows is not None else 'rows'}, {width})"
        raise InvalidArgument(argument, f"expected shape {want}, got {arr.shape}")
    if not arr.flags.c_contiguous:
        raise InvalidArgument(argument, "must be C-contiguous")


def _public_key_from_n(n: int) -> PublicKey:
    """Unpickle a PublicKey (its size was accepted when it was created)."""
    return PublicKey(n, insecure_for_tests=True)


def _load_json(text: object, argument: str, max_chars: int) -> Any:
    """json.loads of untrusted text: bounded length, and every failure (bad UTF-8, syntax,
    over-long integers, nesting deeper than the parser's recursion) an InvalidArgument."""
    if isinstance(text, (bytearray, memoryview)):
        text = bytes(text)
    if not isinstance(text, (str, bytes)):
        raise InvalidArgumentType(argument, f"expected JSON text (str or bytes), got {type(text).__name__}")
    if len(text) > max_chars:
        raise InvalidArgument(argument, f"is {len(text)} long, more than the {max_chars} accepted")
    if isinstance(text, bytes):
        try:
            text = text.decode("utf-8")
        except UnicodeDecodeError as exc:
            raise InvalidArgument(argument, f"is not UTF-8 ({exc.reason} at byte {exc.start})") from None
    try:
        return json.loads(text)
    except RecursionError:
        raise InvalidArgument(argument, "is nested too deeply") from None
    except ValueError as exc:  # JSONDecodeError, and ints past CPython's digit limit
        raise InvalidArgument(argument, f"is not valid JSON: {str(exc)[:200]}") from None


def _jwk_object(jwk: object, argument: str) -> dict[str, Any]:
    if isinstance(jwk, str):
        jwk = _load_json(jwk, argument, _MAX_KEY_JSON_CHARS)
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
            raise InvalidArgument("jwk", f"kty must be 'DAJ', got {_show(obj.get('kty'))}")
        ops = obj.get("key_ops")
        if not isinstance(ops, list):
            raise InvalidArgumentType("jwk['key_ops']", f"expected a list of strings, got {_show(ops)}")
        if "decrypt" not in ops:
            raise InvalidArgument("jwk['key_ops']", "must contain 'decrypt'")
        if "pub" not in obj:
            raise InvalidArgument("jwk", "missing 'pub' (the public JWK)")
        pub = PublicKey.from_jwk(obj["pub"], insecure_for_tests=insecure_for_tests)
        return cls(pub, _int_b64(obj.get("p"), "jwk['p']", MAX_KEY_BITS), _int_b64(obj.get("q"), "jwk['q']", MAX_KEY_BITS))

    # -- decryption ---------------------------------------------------------------------

    def _decrypt_rows(self, cts: NDArray[np.uint64]) -> NDArray[np.uint8]:
        _check_rows(cts, np.uint64, self.public_key._context().L, "ciphertexts")
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
        if getattr(encrypted_number.public_key, "n", None) != self.public_key.n:
            raise KeyMismatch("encrypted_number was encrypted under a different public key")
        _check_exponent(encrypted_number.exponent, "encrypted_number.exponent")
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
    if bits > MAX_KEY_BITS:
        raise InvalidArgument("bits", f"{bits}-bit keys are too large: at most {MAX_KEY_BITS}")
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
    if isinstance(numbers, (str, bytes)) or not isinstance(numbers, Iterable):
        raise InvalidArgumentType("numbers", f"expected a sequence of phe.EncryptedNumber, got {type(numbers).__name__}")
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


def _check_exponent(value: object, argument: str) -> int:
    exponent = _check_int(value, argument)
    if not -MAX_PHE_EXPONENT <= exponent <= MAX_PHE_EXPONENT:
        raise InvalidArgument(argument, f"{_show(exponent)} is outside [-{MAX_PHE_EXPONENT}, {MAX_PHE_EXPONENT}]")
    return exponent


def encrypted_numbers_from_json(
    text: str | bytes, *, insecure_for_tests: bool = False
) -> tuple[PublicKey, list[Any]]:
    """Read phe's documented JSON form; every ciphertext is validated.

    Bounded: at most :data:`MAX_JSON_CHARS` of text, :data:`MAX_PHE_VALUES` numbers, keys
    of at most :data:`MAX_KEY_BITS` bits and exponents within +-:data:`MAX_PHE_EXPONENT`.
    """
    obj = _load_json(text, "text", MAX_JSON_CHARS)
    if not isinstance(obj, dict) or "public_key" not in obj or "values" not in obj:
        raise InvalidArgument("text", "expected an object with 'public_key' and 'values'")
    key = obj["public_key"]
    if not isinstance(key, dict) or "n" not in key:
        raise InvalidArgument("text['public_key']", "expected an object with 'n'")
    n = _decimal(key["n"], "text['public_key']['n']", MAX_KEY_BITS)
    pk = PublicKey(n, insecure_for_tests=insecure_for_tests)
    if "g" in key and _decimal(key["g"], "text['public_key']['g']", MAX_KEY_BITS + 1) != n + 1:
        raise InvalidArgument("text['public_key']['g']", "must be n + 1")
    values = obj["values"]
    if not isinstance(values, list):
        raise InvalidArgumentType("text['values']", f"expected a list, got {type(values).__name__}")
    if len(values) > MAX_PHE_VALUES:
        raise InvalidArgument("text['values']", f"holds {len(values)} numbers, more than {MAX_PHE_VALUES}")
    out = []
    for i, item in enumerate(values):
        where = f"values[{i}]"
        if not isinstance(item, list) or len(item) != 2:
            raise InvalidArgument(where, "expected [ciphertext string, exponent]")
        ct = _decimal(item[0], f"{where}[0]", 2 * MAX_KEY_BITS)
        exp = _check_exponent(item[1], f"{where}[1]")
        c = pk._check_ciphertext_int(ct, where)
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

    def __post_init__(self) -> None:
        # A directly constructed layout must not carry a slot geometry that would make the
        # pack/unpack kernels read or write past a plaintext row: re-derive it and compare.
        want = PackingLayout._derive(self.key_bits, self.count, self.bits, self.clip, self.max_summands)
        for name, expected in zip(_LAYOUT_FIELDS, want):
            got = getattr(self, name)
            if type(got) is not type(expected) or got != expected:
                raise LayoutMismatch(
                    f"PackingLayout: {name}={_show(got)} does not match the layout derived from its "
                    f"parameters ({name}={expected}); use PackingLayout.create"
                )

    @classmethod
    def create(cls, key_bits: int, count: int, *, bits: int, clip: float, max_summands: int) -> PackingLayout:
        return cls(*cls._derive(key_bits, count, bits, clip, max_summands))

    @staticmethod
    def _derive(
        key_bits: object, count: object, bits: object, clip: object, max_summands: object
    ) -> tuple[int, int, int, float, int, int, int]:
        key_bits = _check_int(key_bits, "key_bits")
        if not _MIN_TEST_BITS <= key_bits <= MAX_KEY_BITS:
            raise InvalidArgument("key_bits", f"must be in [{_MIN_TEST_BITS}, {MAX_KEY_BITS}], got {_show(key_bits)}")
        bits = _check_int(bits, "bits")
        max_summands = _check_int(max_summands, "max_summands")
        count = _check_int(count, "count")
        if not 2 <= bits <= 32:
            raise InvalidArgument("bits", f"must be in [2, 32], got {_show(bits)}")
        if max_summands < 1:
            raise InvalidArgument("max_summands", f"must be >= 1, got {_show(max_summands)}")
        if isinstance(clip, bool) or not isinstance(clip, (int, float, np.floating)):
            raise InvalidArgumentType("clip", f"expected float, got {type(clip).__name__}")
        clip = float(clip)
        if not (math.isfinite(clip) and clip > 0):
            raise InvalidArgument("clip", f"must be finite and > 0, got {clip}")
        if count < 0:
            raise InvalidArgument("count", f"must be >= 0, got {_show(count)}")
        slot_bits = (max_summands * ((1 << bits) - 1)).bit_length()
        if slot_bits > 63:
            raise InvalidArgument(
                "max_summands", f"bits={bits} with max_summands={_show(max_summands)} needs {slot_bits}-bit slots (max 63)"
            )
        total = (key_bits - 1) // slot_bits
        if total < 2:
            raise InvalidArgument("bits", f"a {key_bits}-bit key cannot hold two {slot_bits}-bit slots")
        return (key_bits, count, bits, clip, max_summands, slot_bits, total - 1)

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
        for name in _LAYOUT_FIELDS:
            a, b = getattr(self, name), getattr(other, name)
            if a != b:
                return f"{name} differs ({a} vs {b})"
        return None


_LAYOUT_FIELDS = ("key_bits", "count", "bits", "clip", "max_summands", "slot_bits", "slots")


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
        return (EncryptedVector.from_bytes, (self.to_bytes(), self.public_key, self.layout))

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
                "scalar", f"must be a positive integer (packed slots cannot hold negatives), got {_show(k)}"
            )
        weight = self.weight * k
        if weight > self.layout.max_summands:
            raise PaillierOverflow(
                f"multiplying a weight-{self.weight} vector by {_show(k)} gives weight {_show(weight)} > "
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
    def from_bytes(cls, data: bytes, public_key: PublicKey, layout: PackingLayout) -> EncryptedVector:
        """Parse :meth:`to_bytes` output, checking the key, the layout and every ciphertext.

        ``layout`` is the packing the receiver expects (from the round's parameters, e.g.
        ``PackingLayout.create(public_key.bits, count, bits=16, clip=1.0, max_summands=100)``):
        the header must repeat it exactly (``LayoutMismatch`` otherwise). The wire never
        chooses a layout, so a tampered ``clip``, ``bits``, ``max_summands`` or ``count``
        cannot rescale or reinterpret the decrypted values.
        """
        if not isinstance(public_key, PublicKey):
            raise InvalidArgumentType("public_key", f"expected PublicKey, got {type(public_key).__name__}")
        _check_layout(layout, public_key, "layout")
        if not isinstance(data, (bytes, bytearray, memoryview)):
            raise InvalidArgumentType("data", f"expected bytes, got {type(data).__name__}")
        raw = bytes(data)
        if len(raw) < _HEADER.size:
            raise InvalidArgument("data", f"too short for a header ({len(raw)} bytes)")
        magic, version, bits, clip, max_summands, count, slot_bits, slots, weight, nlen = _HEADER.unpack_from(raw)
        if magic != _MAGIC or version != _VERSION:
            raise InvalidArgument("data", "not a fedledger packed Paillier vector (bad magic or version)")
        header = {"bits": bits, "clip": clip, "max_summands": max_summands, "count": count,
                  "slot_bits": slot_bits, "slots": slots}
        for name, value in header.items():
            if value != getattr(layout, name):  # NaN clip differs too
                raise LayoutMismatch(
                    f"data: the header says {name}={value}, the expected layout has {name}={getattr(layout, name)}"
                )
        if nlen != public_key.n_bytes:
            raise KeyMismatch(f"data: the header's modulus is {nlen} bytes, this key's {public_key.n_bytes}")
        off = _HEADER.size
        if len(raw) < off + nlen:
            raise InvalidArgument("data", f"too short for the modulus ({len(raw)} bytes)")
        n = int.from_bytes(raw[off : off + nlen], "big")
        off += nlen
        if n != public_key.n:
            raise KeyMismatch("the serialised vector is under a different public key")
        if not 1 <= weight <= layout.max_summands:
            raise InvalidArgument("data", f"weight {weight} is outside [1, max_summands={layout.max_summands}]")
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
        if not isinstance(public_key, PublicKey):
            raise InvalidArgumentType("public_key", f"expected PublicKey, got {type(public_key).__name__}")
        _check_layout(layout, public_key, "layout")
        weight = _check_int(weight, "weight")
        if not 1 <= weight <= layout.max_summands:
            raise InvalidArgument("weight", f"must be in [1, {layout.max_summands}], got {weight}")
        try:
            arr = np.ascontiguousarray(ciphertexts, dtype=np.uint8)
        except (TypeError, ValueError, OverflowError):
            raise InvalidArgumentType("ciphertexts", "expected a uint8 array") from None
        if arr.shape != (layout.num_ciphertexts, public_key.c_bytes):
            raise InvalidArgument(
                "ciphertexts", f"expected shape {(layout.num_ciphertexts, public_key.c_bytes)}, got {arr.shape}"
            )
        return cls(public_key, layout, weight, public_key._from_bytes_rows(arr, "ciphertexts"), _trusted=True)


def _check_layout(layout: object, public_key: PublicKey, argument: str) -> PackingLayout:
    if not isinstance(layout, PackingLayout):
        raise InvalidArgumentType(argument, f"expected PackingLayout, got {type(layout).__name__}")
    if layout.key_bits != public_key.bits:
        raise LayoutMismatch(f"{argument} is for {layout.key_bits}-bit keys, this key has {public_key.bits} bits")
    return layout


def sum_vectors(vectors: Iterable[EncryptedVector]) -> EncryptedVector:
    """Homomorphic sum of one or more vectors (one parallel pass over all of them)."""
    if isinstance(vectors, (str, bytes)) or not isinstance(vectors, Iterable):
        raise InvalidArgumentType("vectors", f"expected a sequence of EncryptedVector, got {type(vectors).__name__}")
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
    rows, width = first._data.shape
    for i, v in enumerate(items):
        _check_rows(v._data, np.uint64, width, f"vectors[{i}]", rows)
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
            self.public_key._context(), vector._data, _int_bytes(2 * self.delta * self.share), True, out,
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
            _PARTIAL_MAGIC, _VERSION, self.index, self.threshold, self.trustees, self.vector_digest,
            rows.shape[0], public_key.c_bytes,
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
        raise InvalidArgumentType("partials", f"expected a sequence of PartialDecryption, got {type(partials).__name__}")
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
