"""Password hardening: scrypt (RFC 7914), through ``cryptography``.

Used for the password of an identity file (:meth:`fedledger.Identity.save`): the PEM
password is scrypt of the user's password, so each offline guess costs memory and time.

>>> from fedledger.crypto import kdf
>>> key = kdf.scrypt_password("correct horse", salt=bytes(16), n=2**10, r=8, p=1)
>>> len(key)
32
"""

from __future__ import annotations

from typing import Final

from cryptography.hazmat.primitives.kdf.scrypt import Scrypt

from fedledger.crypto._args import as_bytes, as_int, int_repr
from fedledger.crypto._keys import password_bytes
from fedledger.errors import InvalidArgument

__all__ = ["scrypt_password"]

#: The largest scrypt cost accepted (n * r * 128 bytes of memory: 1 GiB).
_MAX_MEMORY: Final = 1 << 30


def scrypt_password(password: bytes | str, *, salt: bytes, n: int, r: int, p: int, length: int = 32) -> bytes:
    """scrypt(``password``, ``salt``, N=``n``, r, p) of ``length`` bytes. ``password`` is a
    non-empty str (UTF-8) or bytes; ``n`` is a power of two > 1."""
    pw = password_bytes(password)
    salt = as_bytes(salt, "salt")
    n, r, p, length = as_int(n, "n"), as_int(r, "r"), as_int(p, "p"), as_int(length, "length")
    if n < 2 or n & (n - 1):
        raise InvalidArgument("n", f"must be a power of two > 1, got {int_repr(n)}")
    if r < 1 or p < 1:
        raise InvalidArgument("r, p", f"must be >= 1, got r={int_repr(r)}, p={int_repr(p)}")
    if 128 * n * r > _MAX_MEMORY:
        raise InvalidArgument("n, r", f"cost n={int_repr(n)}, r={int_repr(r)} needs more than {_MAX_MEMORY >> 20} MiB")
    if not 1 <= length <= 1024:
        raise InvalidArgument("length", f"must be in [1, 1024], got {int_repr(length)}")
    return Scrypt(salt=salt, length=length, n=n, r=r, p=p).derive(pw)
