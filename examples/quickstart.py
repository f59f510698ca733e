"""fedledger quickstart: a consortium ledger whose receipts anyone can check offline.

Run it after `pip install .`:

    python examples/quickstart.py [LEDGER_FILE]

Until `fedledger demo` lands, this is the main job. Four validators with unequal stake and three
hospitals open a durable ledger (SQLite, fsync on every block); the hospitals record hashes of
data accesses (never the data itself); blocks finalize once validators holding more than 2/3
of the stake sign them; an auditor checks one access offline from a JSON receipt; a forged
receipt and a tampered ledger file are both caught.
"""

from __future__ import annotations

import hashlib
import json
import shutil
import sqlite3
import sys
import tempfile
import time
from pathlib import Path

import fedledger
from fedledger import Identity, Ledger, Transaction, ValidatorSet, verify_receipt
from fedledger.errors import InvalidReceipt, TamperedLedger


def identity(keys: Path, name: str) -> Identity:
    """The identity saved in ``keys``, made on first use (encrypted at rest, mode 0600)."""
    path = keys / f"{name}.key"
    if not path.exists():
        Identity.generate(name).save(path, password=PASSWORD)
    return Identity.load(path, password=PASSWORD)


PASSWORD = "quickstart: use a real secret"


def main(path: Path) -> None:
    info = fedledger.build_info()
    print(
        f"fedledger {info['version']}: {info['openssl']}, GMP {info['gmp']}, libsodium {info.get('libsodium', '?')}, "
        f"OpenMP {'on' if info['openmp'] else 'off'}, {info['num_threads']} threads"
    )

    # Keys live in files next to the ledger, so a second run reopens the same consortium.
    keys = path.with_name(path.name + ".keys")
    keys.mkdir(exist_ok=True)
    validators = [identity(keys, f"validator-{i}") for i in range(4)]
    stakes = ValidatorSet({v.verify_key: s for v, s in zip(validators, [40, 30, 20, 10])})
    hospitals = [identity(keys, name) for name in ("hospital-a", "hospital-b", "research-site")]
    ledger = Ledger.open(
        path,
        chain_id="quickstart",
        validators=stakes,
        local_validators=validators,
        members=[h.card() for h in hospitals],
    )
    first_block = ledger.height + 1

    # Each access is recorded as a hash of the audit event: the patient data stays at the site.
    t0 = time.perf_counter()
    events = 0
    for block in range(5):
        batch = []
        for h in hospitals:
            nonce = ledger.next_nonce(h)
            for i in range(200):
                event = {"site": h.name, "action": "read", "record": f"patient-{block}-{i}"}
                digest = hashlib.sha256(json.dumps(event, sort_keys=True).encode()).digest()
                batch.append(
                    Transaction.create(
                        h, kind="note", payload={"access": digest}, nonce=nonce + i, chain_id="quickstart"
                    )
                )
        results = ledger.submit_many(batch)
        assert all(r.accepted for r in results)
        ledger.commit()
        events += len(batch)
    elapsed = time.perf_counter() - t0
    head = ledger.tree_head()
    print(
        f"{events:,} transactions signed by the sites and committed in {ledger.height - first_block + 1} "
        f"durable blocks (blocks {first_block}-{ledger.height}) in {elapsed:.2f} s; "
        f"log root {head.log_root.hex()[:16]}..."
    )

    # An auditor holding only the receipt and its trust anchor (the chain id and the genesis
    # validators, from `fedledger ledger genesis`) checks it offline.
    anchor = {"chain_id": "quickstart", "trusted_validators": stakes}
    tx = list(ledger.transactions(sender=hospitals[1].verify_key))[-1]
    receipt = ledger.prove(tx.id).to_json()
    proved = verify_receipt(receipt, **anchor)
    print(
        f"receipt for {proved.id.hex()[:16]}... by {hospitals[1].name}: verified offline "
        f"({len(receipt):,} bytes of JSON)"
    )

    forged = json.loads(receipt)
    forged["log_index"] += 1
    try:
        verify_receipt(forged, **anchor)
    except InvalidReceipt as exc:
        print(f"forged receipt rejected: {exc}")

    ledger.verify()
    print("full audit passed: hash chain, Merkle roots, every signature, quorum, nonces")
    kept_head = ledger.tree_head()  # keep it where the ledger's host cannot rewrite it
    ledger.close()

    # Someone edits one stored transaction of a copy: the audit names the block.
    tampered = path.with_name(path.name + ".tampered")
    shutil.copyfile(path, tampered)
    db = sqlite3.connect(tampered)
    (data,) = db.execute("SELECT data FROM txs WHERE seq = 321").fetchone()
    db.execute("UPDATE txs SET data = ? WHERE seq = 321", (data[:-1] + bytes([data[-1] ^ 1]),))
    db.commit()
    db.close()
    try:
        Ledger.open(tampered, read_only=True).verify()
    except TamperedLedger as exc:
        print(f"tampering caught: {exc}")
    else:  # pragma: no cover
        raise SystemExit("a tampered ledger passed the audit: this build is broken")
    finally:
        for suffix in ("", "-wal", "-shm"):
            Path(f"{tampered}{suffix}").unlink(missing_ok=True)

    # Cutting off the newest blocks leaves a file consistent in itself; the head kept elsewhere catches it.
    with Ledger.open(path, read_only=True) as audit:
        audit.verify(head=kept_head)
        print(f"the file still extends the head kept at height {kept_head.height}")


if __name__ == "__main__":
    if len(sys.argv) > 1:
        main(Path(sys.argv[1]))
    else:
        with tempfile.TemporaryDirectory() as tmp:
            main(Path(tmp) / "consortium.db")
