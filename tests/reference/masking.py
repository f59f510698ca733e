"""Slow twins of the masking kernel: AES-128-CTR through pyca/cryptography, ring arithmetic
and stochastic rounding in Python ints. Tests only."""

from __future__ import annotations

import math

import numpy as np
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes


def keystream(key: bytes, nbytes: int) -> bytes:
    enc = Cipher(algorithms.AES(key), modes.CTR(bytes(16))).encryptor()
    return enc.update(bytes(nbytes)) + enc.finalize()


def mask(key: bytes, length: int, bits: int) -> list[int]:
    width = bits // 8
    ks = keystream(key, length * width)
    return [int.from_bytes(ks[i * width : (i + 1) * width], "little") for i in range(length)]


def accumulate(acc: list[int], inputs: list[list[int]], keys: list[bytes], signs: list[int], bits: int) -> list[int]:
    mod = 1 << bits
    out = list(acc)
    for vec in inputs:
        out = [(a + v) % mod for a, v in zip(out, vec)]
    for key, sign in zip(keys, signs):
        out = [(a + sign * m) % mod for a, m in zip(out, mask(key, len(acc), bits))]
    return out


def quantize(x: list[float], key: bytes, scale: float, clip: float, weight: float, bits: int) -> list[int]:
    """floor(clip(x) * weight * scale + u) mod 2^bits, u from the key's keystream words:
    32-bit words * 2^-32 (bits 32) or the top 53 bits of 64-bit words * 2^-53 (bits 64)."""
    width = bits // 8
    ks = keystream(key, len(x) * width)
    out = []
    for i, v in enumerate(x):
        v = min(max(float(v), -clip), clip)
        r = int.from_bytes(ks[i * width : (i + 1) * width], "little")
        u = r * 2.0**-32 if bits == 32 else (r >> 11) * 2.0**-53
        out.append(math.floor(v * weight * scale + u) % (1 << bits))
    return out


def to_array(values: list[int], bits: int) -> np.ndarray:
    return np.array(values, dtype=np.uint32 if bits == 32 else np.uint64)
