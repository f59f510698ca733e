"""Child process for the crash test: commit blocks forever (each with a state snapshot), printing each
height once commit() returns."""

from __future__ import annotations

import sys

from ledger_helpers import CHAIN, sites, validator_set, validators

from fedledger import Ledger, Transaction


def main(path: str) -> None:
    vals = validators()
    people = sites(2)
    ledger = Ledger.open(
        path,
        chain_id=CHAIN,
        validators=validator_set(vals),
        local_validators=vals,
        members=[p.card() for p in people],
        durability="full",
        snapshot_every=10,  # every block holds 10 transactions: a snapshot is written with each
    )
    print("ready", ledger.height, flush=True)
    while True:
        batch = []
        for p in people:
            n = ledger.next_nonce(p)
            batch += [
                Transaction.create(p, kind="note", payload={"h": ledger.height, "i": i}, nonce=n + i, chain_id=CHAIN)
                for i in range(5)
            ]
        assert all(r.accepted for r in ledger.submit_many(batch))
        block = ledger.commit()
        sys.stdout.write(f"committed {block.height}\n")  # one write: a kill leaves no half line
        sys.stdout.flush()


if __name__ == "__main__":
    main(sys.argv[1])
