from numpy.typing import NDArray
import numpy as np

VALID: int
BAD_LENGTH: int
NON_CANONICAL_S: int
SMALL_ORDER_KEY: int
BAD_KEY: int
BAD_SIGNATURE: int
NO_MEMORY: int

def first_non_bytes(items: tuple[object, ...]) -> int: ...
def verify_batch(
    public_keys: bytes,
    messages: tuple[bytes, ...],
    signatures: tuple[bytes, ...],
    out: NDArray[np.uint8],
    nthreads: int,
) -> None: ...
def scalar_is_canonical(s: bytes) -> bool: ...
def is_small_order(pk: bytes) -> bool: ...
def small_order_encodings() -> list[bytes]: ...
