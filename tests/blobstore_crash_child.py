"""Child process for the blob store crash test: put objects forever, printing each CID once put returns."""

from __future__ import annotations

import hashlib
import sys
from pathlib import Path

from fedledger import BlobStore


def payload(run: int, i: int) -> bytes:
    """Deterministic content of 0 to ~600 KiB (one to three records), new for every (run, i)."""
    seed = hashlib.sha256(f"{run}/{i}".encode()).digest()
    size = int.from_bytes(seed[:4], "big") % (600 << 10)
    return (seed * (size // 32 + 1))[:size]


def main(path: str, run: int) -> None:
    store = BlobStore(path)
    source = Path(path).parent / f"source-{run}"
    print("ready", flush=True)
    i = 0
    while True:
        data = payload(run, i)
        if i % 2:
            source.write_bytes(data)
            cid = store.put_file(source)
        else:
            cid = store.put(data)
        print("stored", i, cid, flush=True)
        i += 1


if __name__ == "__main__":
    main(sys.argv[1], int(sys.argv[2]))
