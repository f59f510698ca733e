OK: int
ERR_CIPHER: int
ERR_TAG: int
TAG_SIZE: int
NONCE_SIZE: int

def seal_records(
    key: bytes,
    base: bytes,
    aad: bytes,
    index_aad: bool,
    data: bytes | bytearray | memoryview,
    record: int,
    prefix: bytes,
    nthreads: int,
) -> tuple[int, bytes]: ...
def open_records(
    key: bytes,
    base: bytes,
    aad: bytes,
    index_aad: bool,
    sealed: bytes | memoryview,
    record: int,
    out: bytearray | memoryview,
    nthreads: int,
) -> int: ...
