"""fedledger quickstart: a tamper-evident audit log that anyone can check offline.

Run it after `pip install .`:

    python examples/quickstart.py

Until `fedledger demo` lands, this is the main job: it shows the build (which native kernels,
which OpenSSL/GMP, OpenMP on or off), appends hospital audit events to an RFC 9162 Merkle log,
and proves an event's inclusion and the log's append-only growth with the same proofs
Certificate Transparency uses.
"""

from __future__ import annotations

import hashlib
import json
import time

import fedledger
from fedledger.crypto import merkle
from fedledger.errors import InvalidProof


def main() -> None:
    info = fedledger.build_info()
    print(f"fedledger {info['version']}: {info['openssl']}, GMP {info['gmp']}, "
          f"OpenMP {'on' if info['openmp'] else 'off'}, {info['num_threads']} threads")

    # Only hashes of access events go in the log, never patient data.
    events = [
        json.dumps({"site": f"hospital-{i % 7}", "action": "read", "record": hashlib.sha256(str(i).encode()).hexdigest()},
                   sort_keys=True).encode()
        for i in range(100_000)
    ]
    log = merkle.MerkleTree()
    t0 = time.perf_counter()
    log.extend(events[:50_000])
    checkpoint_size, checkpoint_root = log.size, log.root
    for event in events[50_000:]:
        log.append(event)
    elapsed = time.perf_counter() - t0
    print(f"logged {log.size:,} events in {elapsed * 1e3:.1f} ms; head {log.root.hex()[:16]}...")

    # An auditor holding only (event, index, size, proof, root) checks inclusion offline.
    index = 73_421
    proof = log.inclusion_proof(index)
    merkle.verify_inclusion(events[index], index, log.size, proof, log.root)
    print(f"event {index} is in the log: {len(proof)}-hash inclusion proof verified")

    # ... and that the log only grew since the checkpoint it saw earlier.
    cproof = log.consistency_proof(checkpoint_size)
    merkle.verify_consistency(checkpoint_size, log.size, checkpoint_root, log.root, cproof)
    print(f"log grew append-only from {checkpoint_size:,} to {log.size:,}: consistency proof verified")

    # A doctored event is caught.
    forged = events[index].replace(b"read", b"write")
    try:
        merkle.verify_inclusion(forged, index, log.size, proof, log.root)
    except InvalidProof as exc:
        print(f"tampered event rejected: {exc}")
    else:  # pragma: no cover
        raise SystemExit("a tampered event verified: this build is broken")


if __name__ == "__main__":
    main()
