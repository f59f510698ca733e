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

The modules: ``keys`` (PublicKey, PrivateKey, generate_keypair), ``packing``
(PackingLayout), ``vectors`` (EncryptedVector, sum_vectors), ``threshold`` (threshold
custody) and ``interop`` (phe objects, phe JSON, JWK). Single values and every other phe
object need the optional ``phe`` package (``pip install 'fedledger[phe]'``); it is imported
on first use, never by ``import fedledger.crypto.paillier``.
"""

from __future__ import annotations

from fedledger.crypto.paillier._common import MAX_KEY_BITS, MIN_KEY_BITS
from fedledger.crypto.paillier.interop import (
    MAX_JSON_CHARS,
    MAX_PHE_EXPONENT,
    MAX_PHE_VALUES,
    encrypted_numbers_from_json,
    encrypted_numbers_to_json,
    from_phe,
    to_phe,
)
from fedledger.crypto.paillier.keys import PrivateKey, PublicKey, generate_keypair
from fedledger.crypto.paillier.packing import PackingLayout
from fedledger.crypto.paillier.threshold import MAX_TRUSTEES as MAX_TRUSTEES
from fedledger.crypto.paillier.threshold import (
    KeyShare,
    PartialDecryption,
    combine_partial_decryptions,
)
from fedledger.crypto.paillier.vectors import EncryptedVector, sum_vectors

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
