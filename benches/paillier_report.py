"""Print the Paillier comparison table (fedledger vs phe + gmpy2) and a 1M-parameter round.

    PYTHONPATH=src python benches/paillier_report.py [--params 1000000] [--clients 10]

Same 2048-bit modulus for both libraries, 16-bit values, headroom for 100 clients. Medians
of several repetitions; phe gets a few dozen elements per repetition, fedledger whole
vectors; every time is normalised per gradient element.
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import time
from collections.abc import Callable

import numpy as np
import phe

import fedledger
from fedledger.crypto import paillier as P

BITS = 16
MAX_SUMMANDS = 100


def median_time(fn: Callable[[], object], reps: int) -> float:
    times = []
    for _ in range(reps):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def paired(ours: Callable[[], object], theirs: Callable[[], object], reps: int) -> tuple[float, float, float]:
    """Alternate the two timings so that both see the same machine load; return the median
    of each and the median of the per-repetition ratios theirs/ours."""
    to, tt, ratios = [], [], []
    for _ in range(reps):
        t0 = time.perf_counter()
        ours()
        a = time.perf_counter() - t0
        t0 = time.perf_counter()
        theirs()
        b = time.perf_counter() - t0
        to.append(a)
        tt.append(b)
        ratios.append(b / a)
    return statistics.median(to), statistics.median(tt), statistics.median(ratios)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--params", type=int, default=1_000_000)
    ap.add_argument("--clients", type=int, default=10)
    ap.add_argument("--phe-elements", type=int, default=24)
    ap.add_argument(
        "--ciphertexts", type=int, default=96, help="fedledger ciphertexts per encryption/decryption timing"
    )
    ap.add_argument("--add-ciphertexts", type=int, default=2048, help="fedledger ciphertexts per addition timing")
    ap.add_argument("--reps", type=int, default=5)
    args = ap.parse_args()

    info = fedledger.build_info()
    cpu = "unknown CPU"
    try:
        with open("/proc/cpuinfo") as f:
            cpu = next(line.split(":", 1)[1].strip() for line in f if line.startswith("model name"))
    except (OSError, StopIteration):
        pass
    print(
        f"machine: {cpu}, {os.cpu_count()} logical CPUs, {platform.python_implementation()} {platform.python_version()}"
    )
    print(f"fedledger {info['version']}: GMP {info['gmp']}, OpenMP {info['openmp']}, threads {info['num_threads']}")
    print(f"phe {phe.__version__ if hasattr(phe, '__version__') else '?'} with gmpy2: {phe.util.HAVE_GMP}")

    t0 = time.perf_counter()
    pk, sk = P.generate_keypair(2048)
    keygen = time.perf_counter() - t0
    t0 = time.perf_counter()
    pk.precompute()
    table = time.perf_counter() - t0
    ppk, psk = pk.to_phe(), sk.to_phe()
    print(f"keygen 2048: {keygen:.2f} s; fixed-base table: {table:.2f} s (once per public key)")

    lay = P.PackingLayout.create(pk.bits, 1, bits=BITS, clip=1.0, max_summands=MAX_SUMMANDS)
    n_ours = lay.slots * args.ciphertexts
    rng = np.random.default_rng(0)
    x = rng.uniform(-1, 1, n_ours)
    y = rng.uniform(-1, 1, n_ours)
    xp = x[: args.phe_elements].tolist()
    yp = y[: args.phe_elements].tolist()
    ne = len(xp)
    print(f"layout: {lay.slot_bits}-bit slots, {lay.slots} values + 1 checksum per ciphertext")

    rows = []
    ea = pk.encrypt_vector(x, bits=BITS, max_summands=MAX_SUMMANDS)
    n_add = lay.slots * args.add_ciphertexts
    big_a = pk.encrypt_vector(rng.uniform(-1, 1, n_add), bits=BITS, max_summands=MAX_SUMMANDS)
    big_b = pk.encrypt_vector(rng.uniform(-1, 1, n_add), bits=BITS, max_summands=MAX_SUMMANDS)
    pa = [ppk.encrypt(v) for v in xp]
    pb = [ppk.encrypt(v) for v in yp]
    # phe's float encodings differ in exponent, so its + may first rescale one operand;
    # with integer (exponent 0) encodings it is one mulmod plus Python overhead.
    qa = [ppk.encrypt(int(v * 32767)) for v in xp]
    qb = [ppk.encrypt(int(v * 32767)) for v in yp]
    cases = [
        (
            "encryption",
            lambda: pk.encrypt_vector(x, bits=BITS, max_summands=MAX_SUMMANDS),
            n_ours,
            lambda: [ppk.encrypt(v) for v in xp],
            args.reps,
        ),
        ("homomorphic addition", lambda: big_a + big_b, n_add, lambda: [u + v for u, v in zip(pa, pb)], args.reps * 4),
        (
            "homomorphic addition (phe with integer encodings)",
            lambda: big_a + big_b,
            n_add,
            lambda: [u + v for u, v in zip(qa, qb)],
            args.reps * 4,
        ),
        ("decryption", lambda: sk.decrypt_vector(ea), n_ours, lambda: [psk.decrypt(v) for v in pa], args.reps),
    ]
    for name, f_ours, count, f_phe, reps in cases:
        t_ours, t_phe, ratio = paired(f_ours, f_phe, reps)
        rows.append((name, t_phe / ne, t_ours / count, count / ne * ratio))
    targets = {
        "encryption": 1000,
        "homomorphic addition": 100,
        "homomorphic addition (phe with integer encodings)": 100,
        "decryption": 80,
    }

    print()
    print(
        "| operation (per element) | phe + gmpy2 | fedledger | speed-up (ratio of medians) | median of paired ratios | target |"
    )
    print("| --- | ---: | ---: | ---: | ---: | ---: |")
    for name, tp, to, pr in rows:
        print(f"| {name} | {tp * 1e6:,.2f} µs | {to * 1e6:,.4f} µs | {tp / to:,.0f}x | {pr:,.0f}x | {targets[name]}x |")

    # 1M-parameter round
    n, k = args.params, args.clients
    if n <= 0:
        return
    print()
    print(f"round: {n:,} parameters, {k} clients, 2048-bit key, {BITS}-bit values, max_summands={MAX_SUMMANDS}")
    updates = [rng.uniform(-1, 1, n) for _ in range(k)]
    t0 = time.perf_counter()
    encs = [pk.encrypt_vector(u, bits=BITS, max_summands=MAX_SUMMANDS) for u in updates]
    t_enc = (time.perf_counter() - t0) / k
    blobs = [e.to_bytes() for e in encs]
    t0 = time.perf_counter()
    layout = P.PackingLayout.create(pk.bits, n, bits=BITS, clip=1.0, max_summands=MAX_SUMMANDS)
    received = [P.EncryptedVector.from_bytes(b, pk, layout) for b in blobs]
    t_parse = (time.perf_counter() - t0) / k
    t0 = time.perf_counter()
    total = P.sum_vectors(received)
    t_sum = time.perf_counter() - t0
    t0 = time.perf_counter()
    out = sk.decrypt_vector(total)
    t_dec = time.perf_counter() - t0
    expect = np.sum([total.layout.quantize(u) for u in updates], axis=0) / total.layout.scale
    assert np.array_equal(out, expect)
    print("| step | time | bytes |")
    print("| --- | ---: | ---: |")
    print(
        f"| client encrypt (per client) | {t_enc:.2f} s | {len(blobs[0]):,} per client ({encs[0].num_ciphertexts:,} ciphertexts) |"
    )
    print(f"| server parse + validate (per client) | {t_parse:.2f} s | |")
    print(f"| server sum of {k} | {t_sum:.2f} s | {total.nbytes:,} result |")
    print(f"| decrypt | {t_dec:.2f} s | plaintext {n * 8:,} (float64) |")
    print(
        f"| phe (estimated from the per-element times above) | {n * rows[0][1] / 3600:.1f} h to encrypt one client | {n * pk.c_bytes:,} per client as raw 4096-bit ciphertexts (~{n * pk.c_bytes / 2**20:.0f} MiB) |"
    )


if __name__ == "__main__":
    main()
