"""Interoperability with ``phe`` (python-paillier) and the JWK key forms.

phe objects (keys, ``phe.EncryptedNumber``), phe's JSON form for encrypted numbers, the
single-value :func:`encrypt` / :func:`decrypt` (phe's encoding), and the JWK forms of
``pheutil``. ``phe`` is an optional dependency (``pip install 'fedledger[phe]'``), imported
here on first use only; without it the calls that need phe objects raise
:class:`~fedledger.errors.MissingDependency`. The JWK forms do not need phe.

The key methods (:meth:`PublicKey.to_phe`, :meth:`PublicKey.encrypt`,
:meth:`PrivateKey.decrypt`, ``from_phe``, ``to_jwk``, ``from_jwk``) call the functions here.
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterable, Sequence
from typing import Any

import numpy as np

from fedledger.crypto._args import as_int as _check_int
from fedledger.crypto.paillier._common import (
    _MAX_KEY_JSON_CHARS,
    MAX_KEY_BITS,
    _b64_int,
    _int_b64,
    _load_json,
    _show,
)
from fedledger.crypto.paillier.keys import PrivateKey, PublicKey
from fedledger.crypto.paillier.vectors import EncryptedVector
from fedledger.errors import (
    InvalidArgument,
    InvalidArgumentType,
    KeyMismatch,
    MissingDependency,
    PaillierOverflow,
)

__all__ = [
    "MAX_JSON_CHARS",
    "MAX_PHE_EXPONENT",
    "MAX_PHE_VALUES",
    "decrypt",
    "encrypt",
    "encrypted_numbers_from_json",
    "encrypted_numbers_to_json",
    "from_phe",
    "to_phe",
]

#: Largest |exponent| of a phe number accepted (phe JSON, decrypt). phe's defaults give
#: exponents in [-282, 242] for floats and 0 for ints; a product of two stays in [-564, 484].
#: Decoding costs 16^|exponent|, so the bound also bounds the work.
MAX_PHE_EXPONENT = 1024
#: Most numbers accepted in one phe JSON document.
MAX_PHE_VALUES = 1 << 16
#: Longest phe JSON text accepted (characters or bytes).
MAX_JSON_CHARS = 1 << 27


def _phe() -> Any:
    """The ``phe`` module, imported on first use; MissingDependency when it is not installed."""
    try:
        import phe
    except ImportError as exc:
        raise MissingDependency("phe", "phe", "phe interoperability") from exc
    return phe


# --------------------------------------------------------------------------------------
# Keys as phe objects and JWKs


def public_key_to_phe(public_key: PublicKey) -> Any:
    """The equivalent ``phe.PaillierPublicKey`` (cached on the key)."""
    if public_key._phe is None:
        public_key._phe = _phe().PaillierPublicKey(public_key.n)
    return public_key._phe


def public_key_from_phe(key: Any, *, insecure_for_tests: bool = False, cls: type[PublicKey] = PublicKey) -> PublicKey:
    phe = _phe()
    if not isinstance(key, phe.PaillierPublicKey):
        raise InvalidArgumentType("key", f"expected phe.PaillierPublicKey, got {type(key).__name__}")
    if key.g != key.n + 1:
        raise InvalidArgument("key", "only g = n + 1 keys are supported")
    pk = cls(key.n, insecure_for_tests=insecure_for_tests)
    pk._phe = key
    return pk


def public_key_to_jwk(public_key: PublicKey, kid: str | None = None) -> dict[str, Any]:
    """The JWK form used by phe's ``pheutil`` (kty "DAJ", alg "PAI-GN1")."""
    return {
        "kty": "DAJ",
        "alg": "PAI-GN1",
        "key_ops": ["encrypt"],
        "n": _b64_int(public_key.n),
        "kid": kid if kid is not None else f"fedledger Paillier public key {public_key.fingerprint()[:8].hex()}",
    }


def public_key_from_jwk(
    jwk: dict[str, Any] | str, *, insecure_for_tests: bool = False, cls: type[PublicKey] = PublicKey
) -> PublicKey:
    obj = _jwk_object(jwk, "jwk")
    if obj.get("kty") != "DAJ":
        raise InvalidArgument("jwk", f"kty must be 'DAJ', got {_show(obj.get('kty'))}")
    if obj.get("alg") != "PAI-GN1":
        raise InvalidArgument("jwk", f"alg must be 'PAI-GN1', got {_show(obj.get('alg'))}")
    return cls(_int_b64(obj.get("n"), "jwk['n']", MAX_KEY_BITS), insecure_for_tests=insecure_for_tests)


def private_key_to_phe(private_key: PrivateKey) -> Any:
    """The equivalent ``phe.PaillierPrivateKey`` (cached on the key)."""
    if private_key._phe is None:
        private_key._phe = _phe().PaillierPrivateKey(private_key.public_key.to_phe(), private_key.p, private_key.q)
    return private_key._phe


def private_key_from_phe(
    key: Any, *, insecure_for_tests: bool = False, cls: type[PrivateKey] = PrivateKey
) -> PrivateKey:
    if not isinstance(key, _phe().PaillierPrivateKey):
        raise InvalidArgumentType("key", f"expected phe.PaillierPrivateKey, got {type(key).__name__}")
    sk = cls(PublicKey.from_phe(key.public_key, insecure_for_tests=insecure_for_tests), key.p, key.q)
    sk._phe = key
    return sk


def private_key_to_jwk(private_key: PrivateKey, kid: str | None = None) -> dict[str, Any]:
    """phe's private JWK form: kty "DAJ", key_ops ["decrypt"], p, q and the public JWK."""
    return {
        "kty": "DAJ",
        "key_ops": ["decrypt"],
        "p": _b64_int(private_key.p),
        "q": _b64_int(private_key.q),
        "pub": private_key.public_key.to_jwk(),
        "kid": kid
        if kid is not None
        else "fedledger Paillier private key " + private_key.public_key.fingerprint()[:8].hex(),
    }


def private_key_from_jwk(
    jwk: dict[str, Any] | str, *, insecure_for_tests: bool = False, cls: type[PrivateKey] = PrivateKey
) -> PrivateKey:
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


def _jwk_object(jwk: object, argument: str) -> dict[str, Any]:
    if isinstance(jwk, str):
        jwk = _load_json(jwk, argument, _MAX_KEY_JSON_CHARS)
    if not isinstance(jwk, dict):
        raise InvalidArgumentType(argument, f"expected a JWK dict or JSON text, got {type(jwk).__name__}")
    return jwk


def from_phe(key: Any, *, insecure_for_tests: bool = False) -> PublicKey | PrivateKey:
    """Convert a ``phe.PaillierPublicKey`` or ``phe.PaillierPrivateKey``."""
    phe = _phe()
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


# --------------------------------------------------------------------------------------
# Single values (phe.EncryptedNumber)


def encrypt(public_key: PublicKey, value: int | float, precision: float | None = None) -> Any:
    """Encrypt one int or float as a ``phe.EncryptedNumber`` (phe's encoding).

    Stock phe can decrypt the result and add to it; the randomness is DJN's h_s^x.
    """
    phe = _phe()
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
            raise InvalidArgument(
                "precision", f"must be finite, > 0 and at most a float's range, got {_show(precision)}"
            )
    pub = public_key.to_phe()
    try:
        encoding = phe.EncodedNumber.encode(pub, value, precision)
    except (ValueError, OverflowError) as exc:
        raise InvalidArgument("value", str(exc)) from None
    if not -MAX_PHE_EXPONENT <= encoding.exponent <= MAX_PHE_EXPONENT:
        raise InvalidArgument(
            "precision", f"gives exponent {encoding.exponent}, outside [-{MAX_PHE_EXPONENT}, {MAX_PHE_EXPONENT}]"
        )
    plain = np.frombuffer(encoding.encoding.to_bytes(public_key.n_bytes, "big"), np.uint8)
    row = public_key._to_bytes_rows(public_key._encrypt_rows(plain.reshape(1, -1).copy(), None))
    number = phe.EncryptedNumber(pub, int.from_bytes(row[0].tobytes(), "big"), encoding.exponent)
    # Already randomised (h_s^x is an n-th power), so phe need not obfuscate again.
    number._EncryptedNumber__is_obfuscated = True
    return number


def decrypt(private_key: PrivateKey, encrypted_number: Any) -> int | float:
    """Decrypt a ``phe.EncryptedNumber`` (made by phe or by :meth:`PublicKey.encrypt`)."""
    if isinstance(encrypted_number, EncryptedVector):
        raise InvalidArgumentType("encrypted_number", "a packed EncryptedVector is not a number: use decrypt_vector()")
    phe = _phe()
    if not isinstance(encrypted_number, phe.EncryptedNumber):
        raise InvalidArgumentType(
            "encrypted_number", f"expected phe.EncryptedNumber, got {type(encrypted_number).__name__}"
        )
    if getattr(encrypted_number.public_key, "n", None) != private_key.public_key.n:
        raise KeyMismatch("encrypted_number was encrypted under a different public key")
    _check_exponent(encrypted_number.exponent, "encrypted_number.exponent")
    m = private_key.raw_decrypt(encrypted_number.ciphertext(be_secure=False))
    try:
        value: int | float = phe.EncodedNumber(private_key.public_key.to_phe(), m, encrypted_number.exponent).decode()
    except OverflowError as exc:
        raise PaillierOverflow(f"decrypted number overflowed phe's encoding range ({exc})") from None
    return value


def _check_exponent(value: object, argument: str) -> int:
    exponent = _check_int(value, argument)
    if not -MAX_PHE_EXPONENT <= exponent <= MAX_PHE_EXPONENT:
        raise InvalidArgument(argument, f"{_show(exponent)} is outside [-{MAX_PHE_EXPONENT}, {MAX_PHE_EXPONENT}]")
    return exponent


# --------------------------------------------------------------------------------------
# phe's JSON form


def encrypted_numbers_to_json(numbers: Sequence[Any]) -> str:
    """phe's documented JSON form for a list of EncryptedNumber under one key:
    ``{"public_key": {"g": g, "n": n}, "values": [[str(ciphertext), exponent], ...]}``."""
    if isinstance(numbers, EncryptedVector):
        raise InvalidArgumentType("numbers", "a packed EncryptedVector is not a list of phe numbers")
    phe = _phe()
    if isinstance(numbers, (str, bytes)) or not isinstance(numbers, Iterable):
        raise InvalidArgumentType(
            "numbers", f"expected a sequence of phe.EncryptedNumber, got {type(numbers).__name__}"
        )
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


def encrypted_numbers_from_json(text: str | bytes, *, insecure_for_tests: bool = False) -> tuple[PublicKey, list[Any]]:
    """Read phe's documented JSON form; every ciphertext is validated.

    Bounded: at most :data:`MAX_JSON_CHARS` of text, :data:`MAX_PHE_VALUES` numbers, keys
    of at most :data:`MAX_KEY_BITS` bits and exponents within +-:data:`MAX_PHE_EXPONENT`.
    """
    phe = _phe()
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
            raise InvalidArgument(
                argument, f"expected a decimal string of at most {max_digits} digits, got {_show(value)}"
            )
        number = 0
        for i in range(0, len(value), 1000):  # chunks below CPython's int/str conversion limit
            chunk = value[i : i + 1000]
            number = number * 10 ** len(chunk) + int(chunk)
    if number < 0 or number.bit_length() > max_bits:
        raise InvalidArgument(argument, f"must be in [0, 2^{max_bits}), got {number.bit_length()} bits")
    return number
