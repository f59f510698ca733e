"""Plain-Python-int Shamir over GF(2^31 - 1): the oracle for the native kernels.

Written from the definitions: f(x) = sum_j a_j x^j evaluated term by term with pow(), and
Lagrange interpolation at 0 with modular inverses from pow(d, -1, p). Slow; tests only.
"""

from __future__ import annotations

P = 2**31 - 1


def evaluate(coeffs: list[list[int]], xs: list[int]) -> list[list[int]]:
    """out[i][l] = sum_j coeffs[j][l] * xs[i]**j mod p."""
    t = len(coeffs)
    m = len(coeffs[0]) if coeffs else 0
    return [[sum(coeffs[j][k] * pow(x, j, P) for j in range(t)) % P for k in range(m)] for x in xs]


def lagrange0(xs: list[int]) -> list[int]:
    out = []
    for i, xi in enumerate(xs):
        num, den = 1, 1
        for j, xj in enumerate(xs):
            if j != i:
                num = num * xj % P
                den = den * (xj - xi) % P
        out.append(num * pow(den, -1, P) % P)
    return out


def interpolate0(xs: list[int], ys: list[list[int]]) -> list[int]:
    lam = lagrange0(xs)
    m = len(ys[0]) if ys else 0
    return [sum(lam[i] * ys[i][k] for i in range(len(xs))) % P for k in range(m)]
