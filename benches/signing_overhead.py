"""Does per-item overhead matter? verify_batch vs the bare kernel, 1 and 2 threads.

    PYTHONPATH=src python benches/signing_overhead.py [repetitions]

10^4 Ed25519 signatures of 256-byte messages by 10^4 distinct keys (the corpus of
bench_signing.py). For each repetition it times, alternating thread counts, the public
``signing.verify_batch`` (argument checks, key joining, tuples) and the kernel alone
(``_signing.verify_batch`` on prepared arguments), then the cryptography loop. ``cpu/wall``
(getrusage) shows how many cores the process really had: on a shared machine two threads
only help when it is near 2.
"""

from __future__ import annotations

import resource
import sys
import time
from collections.abc import Callable

import numpy as np
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

import fedledger
from fedledger._ext import load
from fedledger.crypto import signing

_k = load("_signing")
N = 10_000


def timed(f: Callable[[], object]) -> tuple[float, float]:
    """(wall seconds, process CPU seconds / wall seconds) of one call."""
    r0 = resource.getrusage(resource.RUSAGE_SELF)
    t = time.perf_counter()
    f()
    wall = time.perf_counter() - t
    r1 = resource.getrusage(resource.RUSAGE_SELF)
    cpu = (r1.ru_utime - r0.ru_utime) + (r1.ru_stime - r0.ru_stime)
    return wall, cpu / wall


def main(reps: int) -> None:
    rng = np.random.default_rng(2026)
    seeds = [rng.bytes(32) for _ in range(N)]
    msgs = [rng.bytes(256) for _ in range(N)]
    sks = [Ed25519PrivateKey.from_private_bytes(s) for s in seeds]
    sigs = [sk.sign(m) for sk, m in zip(sks, msgs)]
    pks = [sk.public_key() for sk in sks]
    vks = [signing.VerifyKey(pk.public_bytes_raw()) for pk in pks]
    keys, tmsgs, tsigs = b"".join(vk.to_bytes() for vk in vks), tuple(msgs), tuple(sigs)
    out = np.empty(N, np.uint8)

    def loop() -> None:
        for pk, m, s in zip(pks, msgs, sigs):
            pk.verify(s, m)

    rows = []
    for _ in range(reps):
        for threads in (1, 2):
            fedledger.set_num_threads(threads)
            rows.append((f"verify_batch t={threads}", *timed(lambda: signing.verify_batch(vks, msgs, sigs))))
            rows.append(
                (f"bare kernel  t={threads}", *timed(lambda t=threads: _k.verify_batch(keys, tmsgs, tsigs, out, t)))
            )
            assert (out == _k.VALID).all()
        rows.append(("cryptography loop", *timed(loop)))
    for name, wall, load_ in rows:
        print(f"{name:20s} {wall * 1e3:8.1f} ms {N / wall:8.0f} /s {wall / N * 1e6:6.1f} us/item  cpu/wall {load_:.2f}")


if __name__ == "__main__":
    main(int(sys.argv[1]) if len(sys.argv) > 1 else 3)
