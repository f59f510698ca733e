"""Building proofs from a ledger's store and log: the prover's half of :mod:`fedledger.ledger.receipt`.

Reads the store it is handed; writes nothing.
"""

from __future__ import annotations

from fedledger.crypto import merkle
from fedledger.errors import InvalidArgument, InvalidArgumentType, TamperedLedger
from fedledger.ledger.block import BlockHeader, Certificate
from fedledger.ledger.genesis import Genesis
from fedledger.ledger.receipt import LogEntry, SignedTreeHead, ValidatorChange
from fedledger.ledger.state import VALIDATOR_KINDS, next_validators
from fedledger.ledger.store import LedgerStore, StoredTx
from fedledger.ledger.transaction import Transaction
from fedledger.ledger.validators import ValidatorSet

__all__ = ["log_entry", "validator_changes"]


def log_entry(tree: merkle.MerkleTree, row: StoredTx, size: int) -> LogEntry:
    """A stored transaction with its inclusion proof in the log of ``size`` leaves."""
    return LogEntry(row.data, row.seq, tuple(tree.inclusion_proof(row.seq, size)))


def validator_changes(
    store: LedgerStore, genesis: Genesis, tree: merkle.MerkleTree, head: SignedTreeHead, since: ValidatorSet | None
) -> tuple[ValidatorChange, ...]:
    """The validator-set changes before ``head``'s block, from the last time ``since`` was in
    force (from genesis when ``since`` is None), each with the certified block that holds it
    and its inclusion proof under that block's log."""
    if since is not None and not isinstance(since, ValidatorSet):
        raise InvalidArgumentType("since", f"expected ValidatorSet, got {type(since).__name__}")
    rows = [
        row
        for kind in VALIDATOR_KINDS
        for row in store.txs(kind, None, below=head.log_size)
        if row.height < head.height
    ]
    rows.sort(key=lambda row: row.seq)
    for row in rows:
        if type(row.data) is not bytes or merkle.leaf_hash(row.data) != tree.leaf_hash(row.seq):
            raise TamperedLedger(row.height, f"transaction row {row.seq} changed since the ledger opened")
    start = 0
    if since is not None:
        current, found = genesis.validators, genesis.validators == since
        for i, row in enumerate(rows):
            current = next_validators(current, genesis.chain_id, Transaction.from_authenticated_bytes(row.data))
            if current == since:
                start, found = i + 1, True
        if not found:
            raise InvalidArgument("since", "this validator set was never in force before the head")
    blocks: dict[int, SignedTreeHead] = {}
    out = []
    for row in rows[start:]:
        block = blocks.get(row.height)
        if block is None:
            stored = store.block(row.height)
            assert stored is not None  # the audit at open accounted for every row's block
            block = blocks[row.height] = SignedTreeHead(
                BlockHeader.from_bytes(stored.header), Certificate.from_bytes(stored.certificate)
            )
        out.append(ValidatorChange(log_entry(tree, row, block.log_size), block))
    return tuple(out)
