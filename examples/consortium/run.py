"""A consortium of four hospitals on this machine, with one command:

    python examples/consortium/run.py [--out DIR] [--txs 10000] [--keep-running]

It starts a 3-member etcd cluster and four validator nodes (stakes 40, 30, 20, 10), each its
own process with its own SQLite replica and only its own key; submits signed transactions
spread over all nodes; stops one validator while the others go on, restarts it and watches it
catch up; then stops everything and audits every replica. Needs Debian's etcd-server and
``pip install 'fedledger[node]'``.
"""

from __future__ import annotations

import argparse
import signal
import sys
import tempfile
import time
from pathlib import Path

from fedledger.node.local import ETCD, LocalConsortium


def table(c: LocalConsortium, nodes: list[int]) -> None:
    for i in nodes:
        s = c.status(i)
        print(
            f"  {c.names[i]} (stake {c.stakes[i]:>2}): height {s['height']:>4}  transactions {s['log_size']:>6}  state root {s['state_root'][:16]}"
        )


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument(
        "--out", help="a new folder for etcd, the identities, genesis and the replicas (default: a temporary one)"
    )
    parser.add_argument("--txs", type=int, default=10_000, help="transactions to submit (default 10000)")
    parser.add_argument("--keep-running", action="store_true", help="leave the consortium running until Ctrl-C")
    args = parser.parse_args()
    if ETCD is None:
        print("etcd is not installed: sudo apt-get install etcd-server", file=sys.stderr)
        return 2
    base = Path(args.out) if args.out else Path(tempfile.mkdtemp(prefix="fedledger-consortium-"))
    base.mkdir(parents=True, exist_ok=True)
    with LocalConsortium(base, [40, 30, 20, 10], members=8) as c:
        print(f"etcd members: {', '.join(c.etcd.client_urls)}")
        print("nodes: " + ", ".join(f"{c.names[i]} {c.urls[i]}" for i in sorted(c.urls)))
        per = max(1, args.txs // len(c.member_names))
        batches = [c.notes(m, per) for m in c.member_names]
        start = time.perf_counter()
        for j, txs in enumerate(batches):  # each member's transactions through one node, in nonce order
            for k in range(0, len(txs), 500):
                c.submit(j % 4, txs[k : k + 500])
        c.wait_for(c.submitted)
        took = time.perf_counter() - start
        print(
            f"{c.submitted:,} transactions submitted to 4 nodes, committed on every replica in {took:.2f} s ({c.submitted / took:,.0f}/s)"
        )
        table(c, [0, 1, 2, 3])

        c.kill_node(2, signal.SIGKILL)
        c.submit(0, c.notes("m0", 100))
        c.wait_for(c.submitted, [0, 1, 3])
        print("v2 killed (20 of 100 stake): the other 80 go on")
        table(c, [0, 1, 3])
        c.start_node(2)
        c.wait_for(c.submitted)
        print("v2 restarted: it caught up from etcd")
        table(c, [0, 1, 2, 3])
        roots = {c.status(i)["state_root"] for i in range(4)}
        print(f"one chain, one state root on all four replicas: {len(roots) == 1}")
        if args.keep_running:
            print(f"running; submit with fedledger.node.client.submit(URL, txs), e.g. to {c.urls[0]}; Ctrl-C stops")
            try:
                signal.pause()
            except KeyboardInterrupt:
                pass
    for i in range(4):
        with c.replica(i) as ledger:
            ledger.verify()
    print(f"every replica passed the full audit (every signature, every root); files in {base}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
