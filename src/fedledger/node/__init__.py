"""Consortium nodes: one ledger replica and one key per process, ordering through etcd.

``fedledger node --help`` says how a node starts; docs/node.md how the nodes agree.
"""

__all__: list[str] = []
