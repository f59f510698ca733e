import numpy as np
from numpy.typing import NDArray

OK: int
ERR_ALLOC: int
ERR_CIPHER: int
ERR_NONFINITE: int

def accumulate(
    acc: NDArray[np.uint8],
    width: int,
    inputs: tuple[bytes | memoryview, ...],
    keys: NDArray[np.uint8],
    signs: NDArray[np.int8],
    nthreads: int,
) -> int: ...
def keystream(key: NDArray[np.uint8] | bytes, out: NDArray[np.uint8], offset: int) -> int: ...
def quantize(
    x: NDArray[np.float32] | NDArray[np.float64],
    out: NDArray[np.uint8],
    width: int,
    scale: float,
    clip: float,
    weight: float,
    key: NDArray[np.uint8] | bytes,
    nthreads: int,
) -> int: ...
def x25519_many(
    scalar: NDArray[np.uint8], peers: NDArray[np.uint8], out: NDArray[np.uint8], ok: NDArray[np.uint8], nthreads: int
) -> None: ...

CHUNK_SIZE: int

def vector_pass(
    acc: NDArray[np.uint8],
    width: int,
    x: NDArray[np.float32] | NDArray[np.float64] | None,
    scale: float,
    clip: float,
    weight: float,
    rkey: NDArray[np.uint8] | bytes,
    inp: bytes | memoryview | None,
    inp_sign: int,
    keys: NDArray[np.uint8],
    signs: NDArray[np.int8],
    leaves: NDArray[np.uint8],
    hash_input: bool,
    nthreads: int,
) -> int: ...
def hkdf_many(
    ikm: NDArray[np.uint8], salt: NDArray[np.uint8], infos: tuple[bytes, ...], out: NDArray[np.uint8], nthreads: int
) -> int: ...
