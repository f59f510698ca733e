import numpy as np
from numpy.typing import NDArray

OK: int
ERR_ZERO: int
ERR_RANGE: int
ERR_NOT_UNIT: int
ERR_RANDOM: int
ERR_NOT_ONE_MOD_N: int
ERR_NOMEM: int

class PublicContext:
    L: int
    x_bytes: int
    n_width: int
    c_width: int
    def __init__(self, n: bytes, h: bytes, x_bytes: int, n_width: int, c_width: int) -> None: ...
    def h_s(self) -> bytes: ...
    @property
    def table_built(self) -> bool: ...
    def build_table(self, nthreads: int) -> None: ...

class PrivateContext:
    n_width: int
    c_width: int
    def __init__(self, p: bytes, q: bytes, hp: bytes, hq: bytes, pinv: bytes, n_width: int, c_width: int) -> None: ...

def encrypt(
    ctx: PublicContext,
    plain: NDArray[np.uint8],
    out: NDArray[np.uint64],
    xs: NDArray[np.uint8] | None,
    nthreads: int,
) -> tuple[int, int]: ...
def validate(ctx: PublicContext, cts: NDArray[np.uint8], nthreads: int) -> tuple[int, int]: ...
def to_montgomery(ctx: PublicContext, cts: NDArray[np.uint8], out: NDArray[np.uint64], nthreads: int) -> int: ...
def from_montgomery(ctx: PublicContext, mont: NDArray[np.uint64], out: NDArray[np.uint8], nthreads: int) -> int: ...
def product(ctx: PublicContext, arrays: list[NDArray[np.uint64]], out: NDArray[np.uint64], nthreads: int) -> None: ...
def power(
    ctx: PublicContext,
    cts: NDArray[np.uint64],
    exponent: bytes,
    secret: bool,
    out: NDArray[np.uint64],
    nthreads: int,
) -> None: ...
def combine(
    ctx: PublicContext,
    partials: list[NDArray[np.uint64]],
    exponents: list[bytes],
    negative: list[bool],
    factor: bytes,
    out_plain: NDArray[np.uint8],
    nthreads: int,
) -> tuple[int, int]: ...
def decrypt(
    ctx: PrivateContext,
    pub: PublicContext,
    cts: NDArray[np.uint64],
    out_plain: NDArray[np.uint8],
    nthreads: int,
) -> None: ...
def pack(slots: NDArray[np.uint64], slot_bits: int, out: NDArray[np.uint8]) -> None: ...
def unpack(plain: NDArray[np.uint8], slot_bits: int, out: NDArray[np.uint64], high: NDArray[np.uint8]) -> None: ...
def random_prime(bits: int, safe: bool) -> bytes: ...
def is_probable_prime(value: bytes, reps: int) -> bool: ...
