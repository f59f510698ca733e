"""Paillier keys: :class:`PublicKey` (encryption, the fixed-base table), :class:`PrivateKey`
(CRT decryption) and :func:`generate_keypair`, over the GMP kernel.

The phe and JWK forms of the keys are in :mod:`fedledger.crypto.paillier.interop`, threshold
custody in :mod:`fedledger.crypto.paillier.threshold`; the methods here that need them
(``to_phe``, ``encrypt``, ``split``, ...) call into those modules.
"""

from __future__ import annotations

import hashlib
import hmac
import math
import threading
from typing import TYPE_CHECKING, Any

import numpy as np
from numpy.typing import ArrayLike, NDArray

from fedledger._ext import rebuild_error
from fedledger.crypto._args import as_int as _check_int
from fedledger.crypto._threads import num_threads
from fedledger.crypto.paillier._common import (
    _MIN_TEST_BITS,
    MAX_KEY_BITS,
    MIN_KEY_BITS,
    _check_rows,
    _int_bytes,
)
from fedledger.crypto.paillier.packing import (
    PackingLayout,
    _float_vector,
    _int_vector,
    _unpack_checked,
)
from fedledger.errors import (
    InvalidArgument,
    InvalidArgumentType,
    InvalidCiphertext,
    KeyMismatch,
)

try:
    from fedledger._ext import _paillier as _k
except ImportError as exc:  # pragma: no cover - exercised by test_build
    raise rebuild_error("_paillier", exc) from exc

if TYPE_CHECKING:
    from fedledger.crypto.paillier.threshold import KeyShare
    from fedledger.crypto.paillier.vectors import EncryptedVector

__all__ = ["PrivateKey", "PublicKey", "generate_keypair"]

#: Domain separation for deriving the DJN base h from n.
_H_DOMAIN = b"fedledger/paillier/djn-h/v1\x00"

_CT_ERRORS = {
    _k.ERR_ZERO: "is 0",
    _k.ERR_RANGE: "is >= n^2",
    _k.ERR_NOT_UNIT: "is not coprime with n",
}


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

    # -- phe and JWK forms (fedledger.crypto.paillier.interop) ---------------------------

    def to_phe(self) -> Any:
        """The equivalent ``phe.PaillierPublicKey`` (needs the ``phe`` extra)."""
        from fedledger.crypto.paillier import interop

        return interop.public_key_to_phe(self)

    @classmethod
    def from_phe(cls, key: Any, *, insecure_for_tests: bool = False) -> PublicKey:
        from fedledger.crypto.paillier import interop

        return interop.public_key_from_phe(key, insecure_for_tests=insecure_for_tests, cls=cls)

    def to_jwk(self, kid: str | None = None) -> dict[str, Any]:
        """The JWK form used by phe's ``pheutil`` (kty "DAJ", alg "PAI-GN1")."""
        from fedledger.crypto.paillier import interop

        return interop.public_key_to_jwk(self, kid)

    @classmethod
    def from_jwk(cls, jwk: dict[str, Any] | str, *, insecure_for_tests: bool = False) -> PublicKey:
        from fedledger.crypto.paillier import interop

        return interop.public_key_from_jwk(jwk, insecure_for_tests=insecure_for_tests, cls=cls)

    # -- encryption ---------------------------------------------------------------------

    def encrypt(self, value: int | float, precision: float | None = None) -> Any:
        """Encrypt one int or float as a ``phe.EncryptedNumber`` (phe's encoding; needs the
        ``phe`` extra).

        Stock phe can decrypt the result and add to it; the randomness is DJN's h_s^x.
        """
        from fedledger.crypto.paillier import interop

        return interop.encrypt(self, value, precision)

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
        from fedledger.crypto.paillier.vectors import EncryptedVector

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


def _public_key_from_n(n: int) -> PublicKey:
    """Unpickle a PublicKey (its size was accepted when it was created)."""
    return PublicKey(n, insecure_for_tests=True)


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
            _int_bytes(p),
            _int_bytes(q),
            _int_bytes(hp),
            _int_bytes(hq),
            _int_bytes(pow(p, -1, q)),
            public_key.n_bytes,
            public_key.c_bytes,
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

    # -- phe and JWK forms (fedledger.crypto.paillier.interop) ---------------------------

    def to_phe(self) -> Any:
        """The equivalent ``phe.PaillierPrivateKey`` (needs the ``phe`` extra)."""
        from fedledger.crypto.paillier import interop

        return interop.private_key_to_phe(self)

    @classmethod
    def from_phe(cls, key: Any, *, insecure_for_tests: bool = False) -> PrivateKey:
        from fedledger.crypto.paillier import interop

        return interop.private_key_from_phe(key, insecure_for_tests=insecure_for_tests, cls=cls)

    def to_jwk(self, kid: str | None = None) -> dict[str, Any]:
        """phe's private JWK form: kty "DAJ", key_ops ["decrypt"], p, q and the public JWK."""
        from fedledger.crypto.paillier import interop

        return interop.private_key_to_jwk(self, kid)

    @classmethod
    def from_jwk(cls, jwk: dict[str, Any] | str, *, insecure_for_tests: bool = False) -> PrivateKey:
        from fedledger.crypto.paillier import interop

        return interop.private_key_from_jwk(jwk, insecure_for_tests=insecure_for_tests, cls=cls)

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
        return int.from_bytes(
            self._decrypt_rows(self.public_key._from_bytes_rows(row, "ciphertext"))[0].tobytes(), "big"
        )

    def decrypt(self, encrypted_number: Any) -> int | float:
        """Decrypt a ``phe.EncryptedNumber`` (made by phe or by :meth:`PublicKey.encrypt`;
        needs the ``phe`` extra)."""
        from fedledger.crypto.paillier import interop

        return interop.decrypt(self, encrypted_number)

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
        from fedledger.crypto.paillier.vectors import EncryptedVector

        if not isinstance(vector, EncryptedVector):
            raise InvalidArgumentType("vector", f"expected EncryptedVector, got {type(vector).__name__}")
        if vector.public_key != self.public_key:
            raise KeyMismatch("the vector was encrypted under a different public key")

    # -- threshold custody (fedledger.crypto.paillier.threshold) -------------------------

    def split(self, threshold: int, trustees: int) -> list[KeyShare]:
        """Shamir-share the decryption exponent among ``trustees``; any ``threshold`` of them
        decrypt together by partial decryptions (Damgard-Jurik / Shoup threshold Paillier,
        trusted dealer). Requires a key made of safe primes
        (``generate_keypair(..., safe_primes=True)``).

        The caller is the dealer: it must destroy this PrivateKey after distributing the
        shares, or one party can still decrypt alone.
        """
        from fedledger.crypto.paillier.threshold import split_key

        return split_key(self, threshold, trustees)


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
            f"{bits}-bit keys are too small: at least {MIN_KEY_BITS} (smaller only with insecure_for_tests=True)",
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
