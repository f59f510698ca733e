"""Replay and audit: rebuild a ledger's state from its store, checking every rule on the way.

The same rules admit transactions (:mod:`fedledger.ledger.state`), so opening, auditing and
block production cannot disagree. Pure apart from reading the store it is handed.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import cast

import numpy as np

from fedledger import encoding
from fedledger.crypto import merkle, signing
from fedledger.errors import (
    ContractMismatch,
    FedLedgerError,
    InvalidArgument,
    InvalidProof,
    InvalidSnapshot,
    TamperedLedger,
)
from fedledger.ledger.block import BlockHeader, Certificate, Vote
from fedledger.ledger.contract import Contract
from fedledger.ledger.genesis import Genesis
from fedledger.ledger.receipt import SignedTreeHead
from fedledger.ledger.state import MAX_ROUND, VALIDATOR_KINDS, LedgerState, next_validators
from fedledger.ledger.statetree import StateTree
from fedledger.ledger.store import META_KEYS, LedgerStore, StoredBlock, StoredSnapshot, StoredTx
from fedledger.ledger.transaction import Transaction
from fedledger.ledger.validators import ValidatorSet

__all__ = ["Replayed", "check_against_head", "from_snapshot", "genesis_replayed", "replay", "snapshot_of"]


@dataclass
class Replayed:
    """What a replay rebuilt: the state after the last block, the global log, the head, and
    every validator set that certified a block (by hash)."""

    state: LedgerState
    tree: merkle.MerkleTree
    head: tuple[StoredBlock, BlockHeader] | None
    validator_sets: dict[bytes, ValidatorSet] = field(default_factory=dict)
    #: (header hash, log size after the block) per height, from 1: what reads are checked against.
    blocks: list[tuple[bytes, int]] = field(default_factory=list)
    #: The state root's tree after the last block.
    state_tree: StateTree = field(default_factory=StateTree)
    #: The leaf hash of every transaction's outcome, 32 bytes each, in log order.
    outcome_hashes: bytearray = field(default_factory=bytearray)

    @property
    def height(self) -> int:
        return 0 if self.head is None else self.head[1].height


def genesis_replayed(genesis: Genesis, bindings: dict[tuple[str, bytes], type[Contract]]) -> Replayed:
    """The state before block 1, with its state root's tree."""
    out = Replayed(genesis.initial_state(bindings), merkle.MerkleTree(), None)
    out.state_tree.update(dict(out.state.entries()))
    return out


def replay(
    store: LedgerStore,
    genesis: Genesis,
    *,
    verify_signatures: bool,
    bindings: dict[tuple[str, bytes], type[Contract]] | None = None,
    upto: int | None = None,
    start: Replayed | None = None,
    check_snapshots: bool = False,
) -> Replayed:
    """Rebuild the state from genesis (up to height ``upto``), checking every rule on the way.

    Every contract call runs again with the classes in ``bindings``; the outcomes and the state
    root must equal the ones each header certifies. Structural rules are checked block by
    block; the signatures (every certificate's votes, and with ``verify_signatures`` every
    transaction's) are queued and checked in one native batch at the end. The error reported
    is the one at the lowest height. A contract the chain needs but ``bindings`` lacks raises
    :class:`ContractMismatch`.

    ``start`` (what :func:`from_snapshot` loaded) replays only the blocks after its height.
    With ``check_snapshots`` (the audit; needs a full replay) every stored snapshot must equal
    what the replay rebuilt at its height (:class:`InvalidSnapshot` otherwise).
    """
    out = genesis_replayed(genesis, bindings or {}) if start is None else start
    if check_snapshots and (start is not None or upto is not None):
        raise InvalidArgument("check_snapshots", "needs a full replay (no start, no upto)")
    snapshots = {snap.height: snap for snap in store.snapshots()} if check_snapshots else {}
    keys: list[bytes] = []
    messages: list[bytes] = []
    signatures: list[bytes] = []
    owners: list[tuple[int, str]] = []
    structural: TamperedLedger | None = None
    try:
        for stored in store.blocks(out.height + 1):
            if upto is not None and stored.height > upto:
                break
            header, cert, rows, txs = _check_block(store, genesis, stored, out)
            snap = snapshots.pop(header.height, None)
            if snap is not None:
                _check_snapshot(snap, header, out)
            body = Vote.signed_body(header.chain_id, header.height, header.round, header.hash)
            for k, sig in cert.signatures:
                keys.append(k)
                messages.append(body)
                signatures.append(sig)
                owners.append((header.height, f"the certificate's vote of {k.hex()[:16]}"))
            if verify_signatures:
                for tx, row in zip(txs, rows):
                    keys.append(tx.sender.to_bytes())
                    messages.append(tx.body)
                    signatures.append(tx.signature)
                    owners.append((header.height, f"transaction {row.seq}"))
            out.head = (stored, header)
            out.blocks.append((header.hash, header.log_size))
        if upto is None:
            _check_accounting(store, out.tree.size, out.height)
        for height in snapshots:
            raise InvalidSnapshot(height, f"a snapshot at height {height} names a block the chain does not have")
    except TamperedLedger as exc:
        structural = exc
    if keys:
        ok = signing.verify_batch(keys, messages, signatures)
        if not ok.all():
            height, what = owners[int(np.flatnonzero(~ok)[0])]
            if structural is None or height <= structural.height:
                raise TamperedLedger(height, f"{what}: signature does not verify")
    if structural is not None:
        raise structural
    return out


def check_against_head(store: LedgerStore, replayed: Replayed, head: SignedTreeHead) -> None:
    """The stored chain reaches ``head`` (kept elsewhere), holds that very block, and extends its log."""
    h = head.header
    chain_id = replayed.state.chain_id
    if h.chain_id != chain_id:
        raise InvalidArgument("head", f"is for chain {h.chain_id!r}, this ledger is {chain_id!r}")
    tree = replayed.tree
    if h.height > replayed.height:
        raise TamperedLedger(
            replayed.height + 1,
            f"the file ends at height {replayed.height} ({tree.size} transactions) but a head kept "
            f"elsewhere certifies height {h.height} ({h.log_size} transactions): "
            "the newest blocks were cut off",
        )
    validators = replayed.validator_sets.get(h.validators_hash)
    if validators is None:
        raise TamperedLedger(h.height, "the head kept elsewhere names a validator set this chain never had")
    try:
        head.certificate.verify(h, validators)
    except FedLedgerError as exc:
        raise InvalidProof(f"the head kept elsewhere is not certified by its validators: {exc}") from None
    stored = store.block(h.height)
    if stored is None or stored.hash != h.hash:
        raise TamperedLedger(h.height, "the stored block differs from the head kept elsewhere (history rewritten)")
    proof = tree.consistency_proof(h.log_size, tree.size)
    try:
        merkle.verify_consistency(h.log_size, tree.size, h.log_root, tree.root, proof)
    except FedLedgerError as exc:
        raise TamperedLedger(h.height, f"the log does not extend the head kept elsewhere: {exc}") from None


def snapshot_of(header: BlockHeader, state: LedgerState, leaf_hashes: bytes, outcome_hashes: bytes) -> StoredSnapshot:
    """The snapshot after the block of ``header``: its state entries and the log's and outcomes' leaf hashes."""
    return StoredSnapshot(header.height, header.hash, _encode_entries(state.entries()), leaf_hashes, outcome_hashes)


def _encode_entries(entries: list[tuple[bytes, bytes]]) -> bytes:
    return encoding.encode([[k, v] for k, v in entries])


def _check_snapshot(snap: StoredSnapshot, header: BlockHeader, out: Replayed) -> None:
    """A stored snapshot must hold exactly what the replay rebuilt at its height."""
    h = header.height
    if snap.block_hash != header.hash:
        raise InvalidSnapshot(h, "the snapshot names another block than the one the chain holds at its height")
    if snap.state != _encode_entries(out.state.entries()):
        raise InvalidSnapshot(h, "the snapshot's state differs from the replayed state at its height")
    if snap.leaf_hashes != out.tree.leaf_hashes().tobytes():
        raise InvalidSnapshot(h, "the snapshot's log leaf hashes differ from the replayed log")
    if snap.outcome_hashes != bytes(out.outcome_hashes):
        raise InvalidSnapshot(h, "the snapshot's outcome hashes differ from the replayed outcomes")


def from_snapshot(
    store: LedgerStore,
    genesis: Genesis,
    snap: StoredSnapshot,
    bindings: dict[tuple[str, bytes], type[Contract]] | None = None,
) -> Replayed:
    """What a replay up to the snapshot's height would rebuild, loaded from the snapshot and checked
    against the certified chain instead of replayed; :func:`replay` with ``start`` does the rest.

    Checked here (any failure is :class:`InvalidSnapshot`, or :class:`TamperedLedger` for a header
    that breaks the chain): the headers up to the snapshot's height form the hash chain from
    genesis; the snapshot names the stored block at its height; the state root of its entries is
    the one that header certifies, and the entries are the canonical ones of a state; its log
    leaf hashes give every header's log root and transaction root, its outcome hashes every
    header's outcome root; the validator set in force at that height, followed from genesis
    through the validator changes in the log, is the one the header names, and its certificate
    verifies. Not checked (:meth:`Ledger.verify` does): the blocks' contents before the snapshot
    against the rules, and the transactions' signatures.
    """
    h = snap.height
    chain_id = genesis.chain_id
    if type(h) is not int or h < 1:
        raise InvalidSnapshot(0, f"a snapshot's height must be a positive int, got {h!r}")
    headers: list[BlockHeader] = []
    stored_h: StoredBlock | None = None
    prev = genesis.hash
    for stored in store.blocks():
        if stored.height > h:
            break
        expected = len(headers) + 1
        if stored.height != expected:
            raise TamperedLedger(expected, f"block {expected} is missing (found {stored.height})")
        try:
            header = BlockHeader.from_bytes(stored.header)
        except FedLedgerError as exc:
            raise TamperedLedger(expected, f"block record is corrupt: {exc}") from None
        if header.hash != stored.hash or header.height != expected or header.chain_id != chain_id:
            raise TamperedLedger(expected, "stored block hash, height or chain id does not match its header")
        if header.prev_hash != prev:
            raise TamperedLedger(expected, "header does not link to the previous block")
        if headers and header.time_ms < headers[-1].time_ms:
            raise TamperedLedger(expected, "block time goes backwards")
        prev = header.hash
        headers.append(header)
        stored_h = stored
    if stored_h is None or len(headers) != h:
        raise InvalidSnapshot(h, f"the snapshot names block {h}, which the file does not hold")
    header = headers[-1]
    if snap.block_hash != header.hash:
        raise InvalidSnapshot(h, "the snapshot names another block than the one stored at its height")
    # The state: canonical entries whose root the header certifies.
    try:
        value = encoding.decode(snap.state) if type(snap.state) is bytes else None
        if type(value) is not list or not all(
            type(e) is list and len(e) == 2 and type(e[0]) is bytes and type(e[1]) is bytes for e in value
        ):
            raise InvalidArgument("snapshot", "the state is not a list of [key, value] byte strings")
        entries: list[tuple[bytes, bytes]] = [(cast(bytes, e[0]), cast(bytes, e[1])) for e in value]  # type: ignore[index]
        state = LedgerState.from_entries(chain_id, entries, bindings)
    except FedLedgerError as exc:
        raise InvalidSnapshot(h, f"the snapshot's state is malformed: {exc}") from None
    state_tree = StateTree()
    state_tree.update(dict(entries))
    if state_tree.root != header.state_root:
        raise InvalidSnapshot(h, f"the snapshot's state root differs from the one block {h} certifies")
    state.height, state.time_ms = h, header.time_ms
    # The log and the outcomes: every header's roots over the stored leaf hashes.
    size = header.log_size
    for blob, what in ((snap.leaf_hashes, "log leaf hashes"), (snap.outcome_hashes, "outcome hashes")):
        if type(blob) is not bytes or len(blob) != 32 * size:
            raise InvalidSnapshot(h, f"the snapshot's {what} are not {size} hashes of 32 bytes")
    leaves = np.frombuffer(snap.leaf_hashes, dtype=np.uint8).reshape(-1, 32)
    outcomes = np.frombuffer(snap.outcome_hashes, dtype=np.uint8).reshape(-1, 32)
    tree = merkle.MerkleTree.from_leaf_hashes(leaves)
    begin = 0
    for hd in headers:
        end = hd.log_size
        if end - begin != hd.tx_count or end > size:
            raise TamperedLedger(hd.height, "the header's log size and transaction count disagree")
        # The log roots bind every leaf (and so each block's transaction root, which verify()
        # checks); the outcome roots are the only binding of the outcome hashes.
        threads = 1 if end - begin < 1 << 16 else None
        if tree.root_at(end) != hd.log_root or (
            merkle.root_of_leaf_hashes(outcomes[begin:end], threads=threads) != hd.outcome_root
        ):
            raise InvalidSnapshot(h, f"the snapshot's log or outcome hashes disagree with block {hd.height}'s roots")
        begin = end
    if begin != size:
        raise InvalidSnapshot(h, "the snapshot's log size differs from its block's")
    # The certificate of block h, by the validator set in force at h (followed from genesis).
    validators = genesis.validators
    rows = [row for kind in VALIDATOR_KINDS for row in store.txs(kind, None, below=size) if row.height < h]
    for row in sorted(rows, key=lambda r: r.seq):
        if type(row.data) is not bytes or merkle.leaf_hash(row.data) != tree.leaf_hash(row.seq):
            raise TamperedLedger(row.height, f"transaction row {row.seq} is not the leaf its block certifies")
        try:
            tx = Transaction.from_authenticated_bytes(row.data)
            if tx.kind != row.kind:
                raise InvalidArgument("kind", "the indexed kind differs from the transaction's")
            validators = next_validators(validators, chain_id, tx)
        except FedLedgerError as exc:
            raise TamperedLedger(row.height, f"validator change in transaction {row.seq}: {exc}") from None
    if validators.hash() != header.validators_hash:
        raise InvalidSnapshot(h, f"block {h} names a validator set other than the one in force")
    try:
        Certificate.from_bytes(stored_h.certificate).verify(header, validators)
    except FedLedgerError as exc:
        raise InvalidSnapshot(h, f"block {h}'s certificate does not verify: {exc}") from None
    out = Replayed(state, tree, (stored_h, header), {header.validators_hash: validators})
    out.blocks = [(hd.hash, hd.log_size) for hd in headers]
    out.state_tree = state_tree
    out.outcome_hashes = bytearray(snap.outcome_hashes)
    return out


def _check_accounting(store: LedgerStore, log_size: int, height: int) -> None:
    """Every row of every table belongs to the certified chain: nothing lies outside a block."""
    extra_meta = sorted(set(store.meta_keys()) - META_KEYS)
    if extra_meta:
        raise TamperedLedger(0, f"storage: unexpected meta records {extra_meta}")
    orphan = store.first_tx_outside(log_size, height)
    if orphan is not None:
        raise TamperedLedger(
            max(1, min(orphan.height, height + 1)),
            f"transaction row {orphan.seq} (height {orphan.height}) lies outside every "
            f"certified block (the chain has {height} blocks and {log_size} transactions)",
        )
    if store.count("snapshots") > 1:
        raise TamperedLedger(0, "storage: more than one snapshot is stored (the ledger keeps only the latest)")
    rows = store.count("txs")
    if rows != log_size:
        raise TamperedLedger(height, f"{rows} transaction rows are stored, the certified blocks hold {log_size}")


def _check_block(
    store: LedgerStore, genesis: Genesis, stored: StoredBlock, out: Replayed
) -> tuple[BlockHeader, Certificate, list[StoredTx], list[Transaction]]:
    """Every rule of one block except signatures; applies it to ``out.state`` and ``out.tree``."""
    state, tree, parent = out.state, out.tree, out.head
    h = stored.height
    expected = 1 if parent is None else parent[1].height + 1
    if h != expected:
        raise TamperedLedger(expected, f"block {expected} is missing (found {h})")
    try:
        header = BlockHeader.from_bytes(stored.header)
        cert = Certificate.from_bytes(stored.certificate)
    except FedLedgerError as exc:
        raise TamperedLedger(h, f"block record is corrupt: {exc}") from None
    if header.hash != stored.hash:
        raise TamperedLedger(h, "stored block hash does not match its header")
    if header.height != h or header.chain_id != state.chain_id:
        raise TamperedLedger(h, "header height or chain id is wrong")
    if header.prev_hash != (genesis.hash if parent is None else parent[1].hash):
        raise TamperedLedger(h, "header does not link to the previous block")
    if header.validators_hash != state.validators.hash():
        raise TamperedLedger(h, "header names a validator set other than the one in force")
    out.validator_sets.setdefault(header.validators_hash, state.validators)
    if parent is not None and header.time_ms < parent[1].time_ms:
        raise TamperedLedger(h, "block time goes backwards")
    signers = [k for k, _ in cert.signatures]
    if any(k not in state.validators for k in signers):
        raise TamperedLedger(h, "commit certificate is signed by a non-validator")
    if not state.validators.is_quorum(signers):
        raise TamperedLedger(h, "commit certificate holds 2/3 of the stake or less")
    if header.round > MAX_ROUND:
        raise TamperedLedger(h, f"header round {header.round} is past the highest round {MAX_ROUND}")
    if header.proposer != state.begin_block(header.height, header.time_ms, header.round):
        raise TamperedLedger(h, f"header names the wrong proposer for this height and round {header.round}")
    # The block's rows are the next tx_count log indices (the primary key, no scan); each must
    # name this block, and rows anywhere else are caught by the accounting at the end.
    rows = store.txs_between(tree.size, tree.size + header.tx_count)
    if len(rows) != header.tx_count or any(row.height != h for row in rows):
        held = sum(row.height == h for row in rows)
        raise TamperedLedger(h, f"block has {held} transactions at its log indices, its header says {header.tx_count}")
    leaves = [row.data for row in rows]
    if not all(type(leaf) is bytes for leaf in leaves):
        raise TamperedLedger(h, "a stored transaction is not a byte string")
    if merkle.root(leaves) != header.tx_root:
        raise TamperedLedger(h, "transaction root does not match the block's transactions")
    # The root is certified (checked in the batch at the end of the replay), so the bytes
    # are the ones the validators accepted: parse them without the canonical re-check.
    txs = []
    outcomes: list[bytes] = []
    for j, row in enumerate(rows):
        if row.seq != tree.size + j:
            raise TamperedLedger(h, f"transaction sequence number {row.seq} is out of order")
        try:
            tx = Transaction.from_authenticated_bytes(row.data)
        except FedLedgerError as exc:
            raise TamperedLedger(h, f"transaction {row.seq} is corrupt: {exc}") from None
        if (tx.id, tx.kind, tx.sender.to_bytes(), tx.nonce) != (row.id, row.kind, row.sender, row.nonce):
            raise TamperedLedger(h, f"transaction {row.seq}: indexed columns disagree with its bytes")
        try:
            state.check(tx)
            outcome = state.apply(tx).to_bytes()
        except ContractMismatch:
            raise
        except FedLedgerError as exc:
            raise TamperedLedger(h, f"transaction {row.seq} breaks the ledger's rules: {exc}") from None
        if outcome != row.outcome:
            raise TamperedLedger(h, f"transaction {row.seq}: the stored outcome differs from the replayed call's")
        outcomes.append(outcome)
        txs.append(tx)
    tree.extend(leaves)
    if tree.size != header.log_size or tree.root != header.log_root:
        raise TamperedLedger(h, "global log size or root does not match the header")
    if merkle.root(outcomes) != header.outcome_root:
        raise TamperedLedger(h, "the outcome root does not match the block's replayed outcomes")
    out.state_tree.update(state.changes())
    if out.state_tree.root != header.state_root:
        raise TamperedLedger(
            h, "the state root differs from the replayed state (a contract or state entry changed at this height)"
        )
    state.kv.settle()
    for outcome in outcomes:
        out.outcome_hashes += merkle.leaf_hash(outcome)
    return header, cert, rows, txs
