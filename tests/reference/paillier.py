"""Plain-Python-int Paillier with fedledger's packing: the oracle for the GMP kernels.

Written from the scheme's definitions, not from the kernel: textbook decryption through
lambda and mu (no CRT), square-and-multiply via pow() instead of a fixed-base table.
Slow; for tests only.
"""

from __future__ import annotations

import hashlib
import math
from dataclasses import dataclass

H_DOMAIN = b"fedledger/paillier/djn-h/v1\x00"


def derive_h(n: int) -> int:
    """h = -y^2 mod n, y = SHAKE-256(domain || n || counter) mod n (first y > 1 coprime with n)."""
    nbytes = (n.bit_length() + 7) // 8
    counter = 0
    while True:
        raw_n = n.to_bytes(nbytes, "big")
        y = (
            int.from_bytes(hashlib.shake_256(H_DOMAIN + raw_n + counter.to_bytes(4, "big")).digest(nbytes + 16), "big")
            % n
        )
        if y > 1 and math.gcd(y, n) == 1:
            return (-y * y) % n
        counter += 1


@dataclass(frozen=True)
class Layout:
    key_bits: int
    count: int
    bits: int
    clip: float
    max_summands: int

    @property
    def qmax(self) -> int:
        return 2 ** (self.bits - 1) - 1

    @property
    def slot_bits(self) -> int:
        # smallest width holding max_summands * (2^bits - 1)
        w = 1
        while 2**w <= self.max_summands * (2**self.bits - 1):
            w += 1
        return w

    @property
    def slots(self) -> int:
        """Value slots per plaintext (one more slot, the top one, is the checksum)."""
        return (self.key_bits - 1) // self.slot_bits - 1

    @property
    def num_ciphertexts(self) -> int:
        return -(-self.count // self.slots)


def quantize(values: list[float], layout: Layout) -> list[int]:
    out = []
    scale = layout.qmax / layout.clip
    for v in values:
        v = min(max(v, -layout.clip), layout.clip)
        q = round(v * scale)  # round half to even, like numpy.rint
        out.append(min(max(q, -layout.qmax), layout.qmax))
    return out


def pack(q: list[int], layout: Layout, weight: int = 1) -> list[int]:
    """One plaintext integer per ciphertext: slot j holds q + bias (bias = qmax + 1, so never 0),
    padding slots 0, the top slot the weight."""
    w, per = layout.slot_bits, layout.slots
    plains = []
    for r in range(layout.num_ciphertexts):
        m = 0
        for j in range(per):
            i = r * per + j
            if i < len(q):
                m += (q[i] + layout.qmax + 1) << (j * w)
        m += weight << (per * w)
        plains.append(m)
    return plains


def unpack(plains: list[int], layout: Layout, weight: int) -> list[int]:
    """Unbiased slot sums; raises ValueError on any inconsistency."""
    w, per = layout.slot_bits, layout.slots
    out = []
    for r, m in enumerate(plains):
        if m >> ((per + 1) * w):
            raise ValueError(f"ciphertext {r}: high bits set")
        if (m >> (per * w)) != weight:
            raise ValueError(f"ciphertext {r}: checksum")
        for j in range(per):
            i = r * per + j
            s = (m >> (j * w)) & ((1 << w) - 1)
            if i >= layout.count:
                if s:
                    raise ValueError(f"ciphertext {r}: padding")
                continue
            if s < weight:
                raise ValueError(f"element {i}: below the floor of a value slot")
            if s > weight * (2 * layout.qmax + 1):
                raise OverflowError(f"element {i}")
            out.append(s - weight * (layout.qmax + 1))
    return out


def x_bytes(n: int) -> int:
    return (n.bit_length() + 15) // 16


def encrypt(n: int, m: int, x: int) -> int:
    """DJN: c = (1 + m n) * (h^n)^x mod n^2."""
    n2 = n * n
    hs = pow(derive_h(n), n, n2)
    return (1 + m * n) * pow(hs, x, n2) % n2


def encrypt_textbook(n: int, m: int, r: int) -> int:
    """Paillier's original randomisation, c = g^m r^n mod n^2."""
    n2 = n * n
    return pow(n + 1, m, n2) * pow(r, n, n2) % n2


def decrypt(p: int, q: int, c: int) -> int:
    n = p * q
    n2 = n * n
    lam = (p - 1) * (q - 1) // math.gcd(p - 1, q - 1)
    mu = pow((pow(n + 1, lam, n2) - 1) // n, -1, n)
    return (pow(c, lam, n2) - 1) // n * mu % n
