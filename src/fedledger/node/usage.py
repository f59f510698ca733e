"""What ``fedledger node --help`` says (importable without the node extra)."""

from __future__ import annotations

#: The description ``fedledger node --help`` prints.
HOW_A_NODE_STARTS = """\
A consortium runs one node per member: its own ledger replica (SQLite) and only its own key.
Nodes order blocks through an etcd cluster (3 or 5 members, run by the consortium) and
finalize them with more than 2/3 of the validators' stake.

  1. Once, for the consortium: fedledger node init DIR --chain-id ID --validators a:40,b:30,...
     writes DIR/genesis.json (every node starts from it) and one identity file per member
     (DIR/NAME.identity, sealed with the password in $FEDLEDGER_IDENTITY_PASSWORD). Hand each
     member its identity file and everyone the genesis.
  2. Start etcd (e.g. Debian's etcd-server) on 3 machines as one cluster.
  3. On each member's machine:
       fedledger node run --genesis genesis.json --identity NAME.identity --data DIR \\
         --etcd http://e1:2379,http://e2:2379,http://e3:2379 --listen 127.0.0.1:8700
     The node replays what etcd holds that its replica lacks (catch-up), then follows.
     It prints one JSON line when ready. Stop it with SIGTERM or Ctrl-C.
  4. Submit transactions to any node (POST /txs, or fedledger.node.client.submit);
     fedledger node status URL shows its height, round and state root.
"""
