"""Plain-Python Ed25519 arithmetic (RFC 8032 §5.1), slow and obviously written: the oracle.

Used by the tests to derive, independently of the native kernel, which public-key
encodings are of small order, which scalars are canonical, and what a verifier that
follows the fedledger rule (docs/security-signing.md) should answer.
"""

from __future__ import annotations

import hashlib

P = 2**255 - 19
L = 2**252 + 27742317777372353535851937790883648493
D = (-121665 * pow(121666, P - 2, P)) % P
SQRT_M1 = pow(2, (P - 1) // 4, P)

Point = tuple[int, int, int, int]  # extended coordinates (X, Y, Z, T)
IDENTITY: Point = (0, 1, 1, 0)


def add(p: Point, q: Point) -> Point:
    a = (p[1] - p[0]) * (q[1] - q[0]) % P
    b = (p[1] + p[0]) * (q[1] + q[0]) % P
    c = 2 * p[3] * q[3] * D % P
    d = 2 * p[2] * q[2] % P
    e, f, g, h = b - a, d - c, d + c, b + a
    return (e * f % P, g * h % P, f * g % P, e * h % P)


def mul(s: int, p: Point) -> Point:
    q = IDENTITY
    while s > 0:
        if s & 1:
            q = add(q, p)
        p = add(p, p)
        s >>= 1
    return q


def equal(p: Point, q: Point) -> bool:
    return (p[0] * q[2] - q[0] * p[2]) % P == 0 and (p[1] * q[2] - q[1] * p[2]) % P == 0


def recover_x(y: int, sign: int) -> int | None:
    if y >= P:
        return None
    x2 = (y * y - 1) * pow(D * y * y + 1, P - 2, P) % P
    if x2 == 0:
        return None if sign else 0
    x = pow(x2, (P + 3) // 8, P)
    if (x * x - x2) % P != 0:
        x = x * SQRT_M1 % P
    if (x * x - x2) % P != 0:
        return None
    if (x & 1) != sign:
        x = P - x
    return x


def decompress(enc: bytes, *, lenient: bool = False) -> Point | None:
    """Decode a 32-byte point. ``lenient`` also accepts y >= p and x = 0 with the sign bit set
    (what some implementations do), so that every encoding of a point is found."""
    if len(enc) != 32:
        return None
    v = int.from_bytes(enc, "little")
    sign, y = v >> 255, v & ((1 << 255) - 1)
    if lenient:
        y %= P
        x = recover_x(y, 0)
        if x is None:
            return None
        if sign and x != 0:
            x = P - x
    else:
        x = recover_x(y, sign)
        if x is None:
            return None
    return (x, y, 1, x * y % P)


def compress(p: Point) -> bytes:
    zinv = pow(p[2], P - 2, P)
    x, y = p[0] * zinv % P, p[1] * zinv % P
    return int.to_bytes(y | ((x & 1) << 255), 32, "little")


BASE: Point = decompress(int.to_bytes(4 * pow(5, P - 2, P) % P, 32, "little"))  # type: ignore[assignment]


def is_small_order(enc: bytes) -> bool:
    """True if the (leniently decoded) point has order dividing 8."""
    p = decompress(enc, lenient=True)
    return p is not None and equal(mul(8, p), IDENTITY)


def small_order_points() -> list[Point]:
    """The 8 points of order dividing 8 (the torsion subgroup E[8])."""
    found: list[Point] = []
    # y = 1 (identity), y = -1 (order 2), y = 0 (order 4), and the order-8 points, whose
    # doubles have y = 0, i.e. y^2 = x^2; with the curve equation -x^2 + y^2 = 1 + d x^2 y^2
    # this gives d y^4 + 2 y^2 - 1 = 0, so y^2 = (-1 ± sqrt(1 + d)) / d.
    candidates = {1, P - 1, 0}
    s = _sqrt(1 + D)
    assert s is not None
    for root in (s, P - s):
        y = _sqrt((root - 1) * pow(D, P - 2, P))
        if y is not None:
            candidates.update({y, P - y})
    for y in candidates:
        for sign in (0, 1):
            x = recover_x(y, sign)
            if x is None:
                continue
            pt = (x, y, 1, x * y % P)
            if equal(mul(8, pt), IDENTITY) and not any(equal(pt, q) for q in found):
                found.append(pt)
    return found


def _sqrt(a: int) -> int | None:
    a %= P
    x = pow(a, (P + 3) // 8, P)
    if (x * x - a) % P != 0:
        x = x * SQRT_M1 % P
    if (x * x - a) % P != 0:
        return None
    return x


def all_small_order_encodings() -> set[bytes]:
    """Every 32-byte string that a lenient decoder maps to a point of order dividing 8."""
    out: set[bytes] = set()
    for pt in small_order_points():
        zinv = pow(pt[2], P - 2, P)
        x, y = pt[0] * zinv % P, pt[1] * zinv % P
        ys = [y] + ([y + P] if y + P < 2**255 else [])
        signs = [x & 1] + ([1] if x == 0 else [])
        for yy in ys:
            for s in signs:
                out.add(int.to_bytes(yy | (s << 255), 32, "little"))
    return out


def scalar_is_canonical(s_bytes: bytes) -> bool:
    return int.from_bytes(s_bytes, "little") < L


def key_is_canonical(enc: bytes) -> bool:
    """The encoding's y (its low 255 bits; bit 255 is the sign of x) is below p."""
    return int.from_bytes(enc, "little") & ((1 << 255) - 1) < P


def reason(pk: bytes, msg: bytes, sig: bytes) -> str | None:
    """Why fedledger's rule (docs/security-signing.md) rejects the signature, or None if it
    is valid. The checks, in order; the first that fails names the reason:

    1. 64-byte signature; 2. S < L; 3. A not of small order; 4. A canonical (y < p);
    5. R not of small order; 6. A decodes to a point (else "bad-key") and the RFC 8032
    §5.1.7 cofactorless equation [S]B = R + [k]A holds with R the canonical encoding of a
    point (else "mismatch"). That is libsodium 1.0.18's crypto_sign_verify_detached.
    """
    assert len(pk) == 32
    if len(sig) != 64:
        return "length"
    if not scalar_is_canonical(sig[32:]):
        return "non-canonical-s"
    small = all_small_order_encodings()
    if pk in small:
        return "small-order-key"
    if not key_is_canonical(pk):
        return "non-canonical-key"
    if sig[:32] in small:
        return "small-order-r"
    a = decompress(pk)
    if a is None:
        return "bad-key"
    r = decompress(sig[:32])  # strict: only the canonical encoding of a point decodes
    if r is None:
        return "mismatch"
    s = int.from_bytes(sig[32:], "little")
    k = int.from_bytes(hashlib.sha512(sig[:32] + pk + msg).digest(), "little") % L
    return None if equal(mul(s, BASE), add(r, mul(k, a))) else "mismatch"


def verify(pk: bytes, msg: bytes, sig: bytes) -> bool:
    """fedledger's rule: valid if and only if :func:`reason` finds nothing."""
    return len(pk) == 32 and reason(pk, msg, sig) is None


def secret_scalar(seed: bytes) -> int:
    """RFC 8032 §5.1.5: the clamped scalar a of the key with this 32-byte seed."""
    a = int.from_bytes(hashlib.sha512(seed).digest()[:32], "little")
    return (a & ((1 << 254) - 8)) | (1 << 254)


def identity_r_signature(seed: bytes, pk: bytes, msg: bytes) -> bytes:
    """(R = identity, S = k·a mod L): it satisfies the cofactorless equation for ``msg``
    (since [S]B = [k]A = R + [k]A) although R is of small order. RFC 8032 alone, and
    OpenSSL, accept it; the fedledger rule rejects it ("small-order-r")."""
    r = int.to_bytes(1, 32, "little")
    k = int.from_bytes(hashlib.sha512(r + pk + msg).digest(), "little") % L
    return r + int.to_bytes(k * secret_scalar(seed) % L, 32, "little")
