"""The consortium ledger: a mempool, block production with a stake-weighted quorum, an RFC 9162
log of every transaction, offline proofs, and a full audit.

Blocks are final once validators holding more than 2/3 of the stake have signed the header.
In the embedded default the validators' identities are held by the caller
(``local_validators``), so :meth:`Ledger.commit` collects their votes in-process; votes from
validators in other processes arrive as :class:`Vote` messages through :meth:`Ledger.add_vote`.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final

from fedledger import encoding
from fedledger.crypto import merkle, signing
from fedledger.errors import (
    ContractMismatch,
    FedLedgerError,
    InvalidArgument,
    InvalidArgumentType,
    InvalidBlock,
    InvalidCall,
    InvalidSignature,
    InvalidVote,
    NotFound,
    QuorumNotReached,
    ReadOnlyLedger,
    ReplayedTransaction,
    TamperedLedger,
)
from fedledger.identity import Identity, IdentityCard
from fedledger.ledger import audit, proving
from fedledger.ledger.block import BlockHeader, Certificate, Outcome, Vote
from fedledger.ledger.contract import CallContext, Contract, ContractState, check_contract_class, run_method
from fedledger.ledger.genesis import Genesis, read_or_create_genesis
from fedledger.ledger.receipt import ConsistencyProof, OutcomeProof, Receipt, SignedTreeHead
from fedledger.ledger.state import CALL_KIND, MAX_ROUND, LedgerState
from fedledger.ledger.statetree import Undo
from fedledger.ledger.store import LedgerStore, SQLiteStore, StoredBlock, StoredTx, system_clock_ms
from fedledger.ledger.transaction import Transaction
from fedledger.ledger.validators import ValidatorSet, advance_priorities

__all__ = ["Block", "Call", "CallResult", "Genesis", "Ledger", "SignedTreeHead", "SubmitResult"]

#: Transactions per block at most; the rest wait for the next commit.
DEFAULT_MAX_BLOCK_TXS: Final = 10_000
#: A snapshot of the state is stored with the first block that reaches each multiple of this many
#: transactions (None: only when :meth:`Ledger.snapshot` is called).
DEFAULT_SNAPSHOT_EVERY: Final = 100_000
#: How many refused transaction ids a ledger remembers (to say why prove() finds nothing).
_REMEMBER_REFUSED: Final = 4096


@dataclass(frozen=True)
class SubmitResult:
    """What :meth:`Ledger.submit_many` says about one transaction."""

    tx_id: bytes | None
    accepted: bool
    error: FedLedgerError | None = None

    @property
    def reason(self) -> str:
        return "accepted" if self.error is None else f"{type(self.error).__name__}: {self.error}"


@dataclass(frozen=True)
class Call:
    """A contract call for :meth:`Ledger.call_many` to sign: who calls what, with which arguments."""

    identity: Identity
    contract: str
    method: str
    args: dict[str, encoding.Value] = field(default_factory=dict)


@dataclass(frozen=True)
class CallResult:
    """What :meth:`Ledger.call_many` says about one call.

    ``recorded`` calls are in a finalized block (``height``), accepted or denied by the
    contract (``accepted``, ``reason``, ``value``: what the method returned). A call refused
    at submission (malformed, unknown contract or method, bad arguments, replayed, revoked
    sender) is not recorded: ``error`` says why.
    """

    tx_id: bytes | None
    recorded: bool
    accepted: bool
    reason: str
    value: encoding.Value = None
    height: int | None = None
    error: FedLedgerError | None = None


@dataclass(frozen=True)
class Block:
    """A finalized block: its header, the certificate that finalized it, its transactions and
    what each transaction did (:class:`Outcome`, in the same order)."""

    header: BlockHeader
    certificate: Certificate
    transactions: tuple[Transaction, ...]
    outcomes: tuple[Outcome, ...] = ()

    @property
    def height(self) -> int:
        return self.header.height

    @property
    def hash(self) -> bytes:
        return self.header.hash


@dataclass
class _Proposal:
    header: BlockHeader
    txs: list[Transaction]
    leaves: list[bytes]
    outcomes: list[Outcome]
    state: LedgerState
    validators: ValidatorSet
    state_undo: Undo
    local: bool = True  # assembled here from the mempool (False: accepted from another node)
    votes: dict[bytes, Vote] = field(default_factory=dict)


def _as_identity_list(values: Iterable[Identity], argument: str) -> list[Identity]:
    out = list(values)
    for i, v in enumerate(out):
        if not isinstance(v, Identity):
            raise InvalidArgumentType(f"{argument}[{i}]", f"expected Identity, got {type(v).__name__}")
    return out


class Ledger:
    """A consortium ledger on a :class:`LedgerStore` (SQLite by default). Use :meth:`open` or :meth:`memory`."""

    def __init__(
        self,
        store: LedgerStore,
        genesis: Genesis,
        local_validators: Sequence[Identity],
        max_block_txs: int = DEFAULT_MAX_BLOCK_TXS,
        clock: Callable[[], int] = system_clock_ms,
        bindings: dict[tuple[str, bytes], type[Contract]] | None = None,
        snapshot_every: int | None = DEFAULT_SNAPSHOT_EVERY,
        from_snapshot: bool = True,
    ) -> None:
        if snapshot_every is not None and (type(snapshot_every) is not int or snapshot_every < 1):
            raise InvalidArgument("snapshot_every", f"must be a positive int or None, got {snapshot_every!r}")
        self._snapshot_every = snapshot_every
        self._store = store
        self._bindings = dict(bindings or {})
        self._clock = clock
        self._genesis = genesis
        self._local = {v.verify_key.to_bytes(): v for v in local_validators}
        self._max_block_txs = max_block_txs
        self._pending: list[Transaction] = []
        self._pending_nonce: dict[bytes, int] = {}
        self._proposal: _Proposal | None = None
        # The round of the next proposal at height _round_height (a proposal abandoned at a
        # height moves the next one to the following round).
        self._round_height, self._round = 0, 0
        #: Pending transactions the last proposal or commit dropped (no longer valid), with why.
        self.dropped: list[SubmitResult] = []
        #: Why recent transactions were refused or dropped, so that prove() and get() can say so.
        self._refused: OrderedDict[bytes, str] = OrderedDict()
        start = None
        snap = store.latest_snapshot() if from_snapshot else None
        if snap is not None:
            start = audit.from_snapshot(store, genesis, snap, self._bindings)
        #: The height of the snapshot this ledger opened from (0: none) and how many blocks it replayed.
        self.opened_from = 0 if start is None else start.height
        replayed = audit.replay(store, genesis, verify_signatures=False, bindings=self._bindings, start=start)
        self.blocks_replayed = replayed.height - self.opened_from
        self._blocks = replayed.blocks  # (header hash, log size) per height: reads are checked against it
        self._state = replayed.state
        self._tree = replayed.tree
        self._state_tree = replayed.state_tree
        self._outcome_hashes = replayed.outcome_hashes
        self._head = replayed.head  # (StoredBlock, BlockHeader) of the last block, or None

    # -- opening ----------------------------------------------------------------------------

    @classmethod
    def open(
        cls,
        path: str | Path,
        *,
        chain_id: str | None = None,
        validators: ValidatorSet | None = None,
        local_validators: Iterable[Identity] = (),
        members: Iterable[IdentityCard] = (),
        durability: str = "full",
        max_block_txs: int = DEFAULT_MAX_BLOCK_TXS,
        read_only: bool = False,
        clock: Callable[[], int] = system_clock_ms,
        contracts: Iterable[type[Contract]] = (),
        snapshot_every: int | None = DEFAULT_SNAPSHOT_EVERY,
        from_snapshot: bool = True,
    ) -> Ledger:
        """Open (or create) the ledger in the SQLite file ``path``.

        Creating needs ``chain_id`` and ``validators`` (and the genesis ``members``). Opening an
        existing file reads its genesis; arguments given must match it. The file is replayed
        and its structure checked; :meth:`verify` also checks every signature.

        One writer at a time: a second writable open of the same file raises
        :class:`LedgerLocked`. ``read_only=True`` (audits, proofs, other readers) takes no lock,
        changes nothing in the file, and refuses every write with :class:`ReadOnlyLedger`; it
        raises :class:`NotFound` for a missing file and :class:`NotALedger` for a file that is
        not a ledger.

        ``clock`` gives block times in milliseconds since the epoch (the system clock by
        default); the ledger reads no other clock, so a simulation can pass its own.

        ``contracts`` are the :class:`Contract` classes this process offers. Creating a ledger
        pins them (name, version, code hash) in its genesis; opening one needs every contract
        it pinned or deployed, with the same code, else :class:`ContractMismatch`. A class
        offered but not yet deployed waits for a ``gov.contract.deploy`` action.

        Snapshots: a writable ledger stores a snapshot of the state with the first block that
        reaches each multiple of ``snapshot_every`` transactions (None: only :meth:`snapshot`),
        in the same SQLite transaction as the block. Opening loads the latest snapshot, checks it
        against the certified header at its height (:class:`InvalidSnapshot` if it does not
        match) and replays only the blocks after it; ``from_snapshot=False`` replays everything.
        """
        return cls._from_store(
            SQLiteStore(path, durability, read_only=read_only),
            chain_id,
            validators,
            local_validators,
            members,
            max_block_txs,
            clock,
            contracts,
            snapshot_every,
            from_snapshot,
        )

    @classmethod
    def memory(
        cls,
        *,
        chain_id: str,
        validators: ValidatorSet,
        local_validators: Iterable[Identity] = (),
        members: Iterable[IdentityCard] = (),
        max_block_txs: int = DEFAULT_MAX_BLOCK_TXS,
        clock: Callable[[], int] = system_clock_ms,
        contracts: Iterable[type[Contract]] = (),
        snapshot_every: int | None = DEFAULT_SNAPSHOT_EVERY,
    ) -> Ledger:
        """A ledger in memory (SQLite ``:memory:``), for tests and simulations."""
        return cls._from_store(
            SQLiteStore(":memory:", "off"),
            chain_id,
            validators,
            local_validators,
            members,
            max_block_txs,
            clock,
            contracts,
            snapshot_every,
            True,
        )

    @classmethod
    def _from_store(cls, store: LedgerStore, *args: Any) -> Ledger:
        """:meth:`_from_open_store`, closing ``store`` if that fails."""
        try:
            return cls._from_open_store(store, *args)
        except BaseException:
            store.close()
            raise

    @classmethod
    def _from_open_store(
        cls,
        store: LedgerStore,
        chain_id: str | None,
        validators: ValidatorSet | None,
        local_validators: Iterable[Identity],
        members: Iterable[IdentityCard],
        max_block_txs: int,
        clock: Callable[[], int],
        contracts: Iterable[type[Contract]],
        snapshot_every: int | None,
        from_snapshot: bool,
    ) -> Ledger:
        if not callable(clock):
            raise InvalidArgumentType(
                "clock", f"expected a callable returning milliseconds, got {type(clock).__name__}"
            )
        local = _as_identity_list(local_validators, "local_validators")
        cards = list(members)
        for i, card in enumerate(cards):
            if not isinstance(card, IdentityCard):
                raise InvalidArgumentType(f"members[{i}]", f"expected IdentityCard, got {type(card).__name__}")
        if type(max_block_txs) is not int or max_block_txs < 1:
            raise InvalidArgument("max_block_txs", f"must be a positive int, got {max_block_txs!r}")
        offered = [check_contract_class(c, f"contracts[{i}]") for i, c in enumerate(contracts)]
        bindings = {(c.name, c.code_hash()): c for c in offered}
        newest: dict[str, type[Contract]] = {}
        for c in offered:
            if c.name in newest and newest[c.name].version == c.version and newest[c.name] is not c:
                raise InvalidArgument("contracts", f"two classes offer contract {c.name!r} version {c.version}")
            if c.name not in newest or c.version > newest[c.name].version:
                newest[c.name] = c
        pins = tuple((n, c.version, c.code_hash()) for n, c in sorted(newest.items()))
        genesis = read_or_create_genesis(store, chain_id, validators, cards, pins)
        _check_pins(genesis, offered)
        return cls(store, genesis, local, max_block_txs, clock, bindings, snapshot_every, from_snapshot)

    def close(self) -> None:
        self._store.close()

    def __enter__(self) -> Ledger:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- reading ----------------------------------------------------------------------------

    @property
    def chain_id(self) -> str:
        return self._genesis.chain_id

    @property
    def genesis(self) -> Genesis:
        """The genesis record: chain id, first validator set and members (an auditor's trust anchor)."""
        return self._genesis

    @property
    def height(self) -> int:
        """Height of the last finalized block (0: only genesis)."""
        return 0 if self._head is None else self._head[1].height

    @property
    def validators(self) -> ValidatorSet:
        """The validator set that certifies the next block."""
        return self._state.validators

    @property
    def governance_epoch(self) -> int:
        """The epoch the next governance proposal must name."""
        return self._state.gov_epoch

    @property
    def log_size(self) -> int:
        """Number of finalized transactions (leaves of the global log)."""
        return 0 if self._head is None else self._head[1].log_size

    @property
    def pending(self) -> tuple[Transaction, ...]:
        return tuple(self._pending)

    @property
    def pending_count(self) -> int:
        """How many transactions wait in the mempool (without copying them, as :attr:`pending` does)."""
        return len(self._pending)

    @property
    def proposal(self) -> tuple[BlockHeader, tuple[Transaction, ...]] | None:
        """The open proposal's header and transactions (what a node sends other validators), or None."""
        p = self._proposal
        return None if p is None else (p.header, tuple(p.txs))

    @property
    def contracts(self) -> dict[str, tuple[int, bytes]]:
        """The deployed contracts: name -> (version, code hash)."""
        return dict(self._state.contracts)

    @property
    def state_root(self) -> bytes:
        """The state root after the last finalized block (what its header certifies)."""
        return self._state_tree.root

    def is_revoked(self, key: signing.VerifyKey | bytes) -> bool:
        raw = key.to_bytes() if isinstance(key, signing.VerifyKey) else key
        return raw in self._state.revoked

    def next_nonce(self, sender: signing.VerifyKey | Identity) -> int:
        """The nonce the sender's next transaction must carry (pending ones counted)."""
        key = sender.verify_key if isinstance(sender, Identity) else sender
        raw = key.to_bytes()
        return self._pending_nonce.get(raw, self._state.nonces.get(raw, 0))

    def block(self, height: int) -> Block:
        """The finalized block at ``height`` (1 to :attr:`height`)."""
        if type(height) is not int:
            raise InvalidArgumentType("height", f"expected int, got {type(height).__name__}")
        stored = self._store.block(height) if 1 <= height <= self.height else None
        if stored is None:
            raise NotFound(f"no block at height {height} (the ledger is at {self.height})")
        block_hash, end = self._blocks[height - 1]
        start = self._blocks[height - 2][1] if height > 1 else 0
        try:
            header = BlockHeader.from_bytes(stored.header)
            certificate = Certificate.from_bytes(stored.certificate)
        except FedLedgerError as exc:
            raise TamperedLedger(height, f"block record changed since the ledger opened: {exc}") from None
        if header.hash != block_hash:
            raise TamperedLedger(height, "the stored header changed since the ledger opened")
        rows = self._store.txs_between(start, end)  # by log index: the primary key, no scan
        if [(row.seq, row.height) for row in rows] != [(seq, height) for seq in range(start, end)]:
            raise TamperedLedger(height, "transaction rows of this block changed since the ledger opened")
        return Block(
            header,
            certificate,
            tuple(Transaction.from_bytes(self._certified(row).data) for row in rows),
            tuple(self._outcome_of(row) for row in rows),
        )

    def transactions(
        self, kind: str | None = None, sender: signing.VerifyKey | bytes | None = None
    ) -> Iterator[Transaction]:
        """Finalized transactions in log order, optionally of one kind and/or one sender."""
        raw = sender.to_bytes() if isinstance(sender, signing.VerifyKey) else sender
        # Only rows a certified block covers (the log as this ledger replayed it).
        for row in self._store.txs(kind, raw, below=self.log_size):
            yield Transaction.from_bytes(self._certified(row).data)

    def get(self, tx_id: bytes) -> Transaction:
        """The finalized transaction with this id; NotFound otherwise."""
        return Transaction.from_bytes(self._locate(tx_id).data)

    def outcome(self, tx_id: bytes) -> Outcome:
        """What the finalized transaction ``tx_id`` did: accepted or denied, why, its return value."""
        return self._outcome_of(self._locate(tx_id))

    def _outcome_of(self, row: StoredTx) -> Outcome:
        at = 32 * row.seq
        if type(row.outcome) is not bytes or merkle.leaf_hash(row.outcome) != bytes(self._outcome_hashes[at : at + 32]):
            raise TamperedLedger(
                row.height, f"the outcome of transaction row {row.seq} changed since the ledger opened"
            )
        return Outcome.from_bytes(row.outcome)

    def view(self, contract: str, method: str, *, height: int | None = None, **args: Any) -> Any:
        """Run a contract's view on the state after block ``height`` (default: the last block).

        Nothing is recorded. A past height replays the chain up to it (views of history cost
        a replay). Raises UnknownContract or InvalidCall for a call that cannot be made, and
        ContractError if the view refuses.
        """
        h = self.height if height is None else height
        if type(h) is not int or not 0 <= h <= self.height:
            raise InvalidArgument("height", f"must be an int in [0, {self.height}], got {height!r}")
        if h == self.height:
            state = self._state
        else:
            state = audit.replay(
                self._store, self._genesis, verify_signatures=False, bindings=self._bindings, upto=h
            ).state
        cls = state.contract_class(contract)
        spec = cls.method(method)
        if spec.kind != "view":
            raise InvalidCall(f"{cls.name}.{spec.name} is a call: make it with Ledger.call, not a view")
        checked = spec.check_args(cls.name, encoding.decode(encoding.encode(args)))  # the values a call would carry
        time_ms = self.block(h).header.time_ms if h else 0
        ctx = CallContext(None, h, time_ms, None, frozenset(state.validators.raw_keys()))
        return run_method(cls, spec, ContractState(cls.name, state.kv.get), ctx, checked)

    def _locate(self, tx_id: bytes) -> StoredTx:
        if not isinstance(tx_id, (bytes, bytearray)) or len(tx_id) != 32:
            raise InvalidArgument("tx_id", "must be a 32-byte transaction id")
        row = self._store.tx_by_id(bytes(tx_id))
        if row is None or not (0 <= row.seq < self.log_size and 1 <= row.height <= self.height):
            why = ""
            if any(tx.id == tx_id for tx in self._pending):
                why = " (it is pending: commit a block first)"
            elif bytes(tx_id) in self._refused:
                why = f" (it was refused: {self._refused[bytes(tx_id)]})"
            raise NotFound(f"no finalized transaction {bytes(tx_id).hex()}{why}")
        return self._certified(row)

    def _certified(self, row: StoredTx) -> StoredTx:
        """``row``, once its bytes are the leaf the certified log holds at its index (one SHA-256)."""
        if type(row.data) is not bytes or merkle.leaf_hash(row.data) != self._tree.leaf_hash(row.seq):
            raise TamperedLedger(row.height, f"transaction row {row.seq} changed since the ledger opened")
        return row

    # -- writing ----------------------------------------------------------------------------

    def submit(self, tx: Transaction | bytes) -> bytes:
        """Admit one transaction to the mempool and return its id; raise the typed reason if rejected."""
        result = self.submit_many([tx])[0]
        if result.error is not None:
            raise result.error
        assert result.tx_id is not None
        return result.tx_id

    def submit_many(self, txs: Sequence[Transaction | bytes]) -> list[SubmitResult]:
        """Admit many transactions, one result each; a bad one never sinks the rest.

        Each item is a :class:`Transaction` or its wire bytes (as received from a transport).
        Signatures are checked in one native batch; then each transaction, in order, is checked
        against the ledger's state and the sender's next nonce (pending ones counted).
        """
        self._writable()
        items: list[Transaction | None] = []
        results: list[SubmitResult | None] = []
        candidates: list[int] = []
        for i, item in enumerate(txs):
            tx: Transaction | None = None
            error: FedLedgerError | None = None
            if isinstance(item, Transaction):
                tx = item
            elif isinstance(item, (bytes, bytearray, memoryview)):
                try:
                    tx = Transaction.from_bytes(item)
                except FedLedgerError as exc:
                    error = exc
            else:
                error = InvalidArgumentType(f"txs[{i}]", f"expected Transaction or bytes, got {type(item).__name__}")
            items.append(tx)
            results.append(None if error is None else SubmitResult(None, False, error))
            if tx is not None:
                candidates.append(i)
        if candidates:
            admitted = [t for t in items if t is not None]
            ok = signing.verify_batch(
                [t.sender for t in admitted], [t.body for t in admitted], [t.signature for t in admitted]
            )
            state = self._state
            for flag, i, tx in zip(ok.tolist(), candidates, admitted):
                if not flag:
                    results[i] = SubmitResult(
                        tx.id,
                        False,
                        InvalidSignature(f"transaction {tx.id.hex()[:16]}: signature does not verify for its sender"),
                    )
                    continue
                sender = tx.sender.to_bytes()
                try:
                    state.check(tx, self._pending_nonce.get(sender, state.nonces.get(sender, 0)))
                except FedLedgerError as exc:
                    results[i] = SubmitResult(tx.id, False, exc)
                    continue
                self._pending.append(tx)
                self._pending_nonce[sender] = tx.nonce + 1
                results[i] = SubmitResult(tx.id, True)
        self._remember_refused(r for r in results if r is not None and not r.accepted)
        return results  # type: ignore[return-value]

    def _remember_refused(self, results: Iterable[SubmitResult]) -> None:
        for r in results:
            if r.tx_id is not None:
                self._refused[r.tx_id] = r.reason
                self._refused.move_to_end(r.tx_id)
        while len(self._refused) > _REMEMBER_REFUSED:
            self._refused.popitem(last=False)

    def proposer(self, round: int = 0) -> signing.VerifyKey:
        """The validator whose turn it is to propose the next block at ``round`` (Tendermint's
        schedule: one step per round)."""
        if type(round) is not int or not 0 <= round <= MAX_ROUND:
            raise InvalidArgument("round", f"must be an int in [0, {MAX_ROUND}], got {round!r}")
        validators, priorities = self._state.validators, self._state.priorities
        for _ in range(round + 1):
            key, priorities = advance_priorities(validators, priorities)
        return signing.VerifyKey(key)

    def propose(self, *, round: int | None = None) -> BlockHeader:
        """Assemble the next block from pending transactions and collect local validators' votes.

        Returns the header for remote validators to sign (:meth:`Vote.create`, then
        :meth:`add_vote`). Calling it again while a proposal is open returns that proposal.
        A proposal abandoned at a height is followed by one at the next round, from the next
        proposer in the schedule, so a local validator never signs two headers at one
        (height, round). ``round`` (a node's round, as its ordering service decided it) opens
        the proposal at that round instead, abandoning an open one at another round.
        """
        self._writable()
        if round is not None:
            if type(round) is not int or not 0 <= round <= MAX_ROUND:
                raise InvalidArgument("round", f"must be an int in [0, {MAX_ROUND}], got {round!r}")
            if self._proposal is not None and self._proposal.header.round != round:
                self.abandon_proposal()
            self._round_height, self._round = self.height + 1, round
        if self._proposal is not None:
            return self._proposal.header
        height = self.height + 1
        last_time = 0 if self._head is None else self._head[1].time_ms
        round_ = self._round if self._round_height == height else 0
        self._round_height, self._round = height, round_
        self.dropped = []
        self._proposal = self._build(
            height, max(self._now_ms(), last_time), round_, self._pending[: self._max_block_txs], None
        )
        return self._proposal.header

    def accept_proposal(
        self, header: BlockHeader, txs: Sequence[Transaction | bytes], *, vote: bool = True
    ) -> tuple[Vote, ...]:
        """Check a block another validator proposed and open it as this ledger's proposal.

        The header must be the next one (height, previous hash, validator set, the proposer of
        its round, a time no earlier than the last block's) and ``txs`` must rebuild it exactly:
        every transaction valid in order, signatures checked (those this ledger admitted to its
        mempool were checked then), and the transaction, log, state and outcome roots equal to
        the header's. Raises :class:`InvalidBlock` naming the first broken rule; nothing changes
        then. An open proposal at another round is abandoned.

        Returns the local validators' votes on it (none with ``vote=False``), for the caller to
        publish; more votes arrive with :meth:`add_vote`, or a whole certificate with
        :meth:`commit`.
        """
        self._writable()
        if not isinstance(header, BlockHeader):
            raise InvalidArgumentType("header", f"expected BlockHeader, got {type(header).__name__}")
        p = self._proposal
        if p is not None and p.header.hash == header.hash:
            if not vote:
                return ()
            for key, identity in self._local.items():
                if key in p.validators and key not in p.votes:
                    p.votes[key] = Vote.create(identity, p.header)
            return tuple(v for k, v in p.votes.items() if k in self._local)
        h = self.height + 1
        if header.chain_id != self.chain_id or header.height != h:
            raise InvalidBlock(header.height, f"is not the next block of {self.chain_id!r} (the ledger is at {h - 1})")
        parent = self._head
        if header.prev_hash != (self._genesis.hash if parent is None else parent[1].hash):
            raise InvalidBlock(h, "does not link to this ledger's last block")
        if header.validators_hash != self._state.validators.hash():
            raise InvalidBlock(h, "names a validator set other than the one in force")
        if parent is not None and header.time_ms < parent[1].time_ms:
            raise InvalidBlock(h, "its time goes backwards")
        if header.round > MAX_ROUND:
            raise InvalidBlock(h, f"round {header.round} is past the highest round {MAX_ROUND}")
        if header.proposer != self.proposer(header.round).to_bytes():
            raise InvalidBlock(h, f"names the wrong proposer for round {header.round}")
        if header.tx_count != len(txs):
            raise InvalidBlock(h, f"carries {len(txs)} transactions, its header says {header.tx_count}")
        known = {tx.id: tx for tx in self._pending}
        parsed: list[Transaction] = []
        unchecked: list[Transaction] = []
        for i, item in enumerate(txs):
            try:
                tx = item if isinstance(item, Transaction) else Transaction.from_bytes(item)
            except FedLedgerError as exc:
                raise InvalidBlock(h, f"transaction {i} is malformed: {exc}") from None
            if tx.id not in known:
                unchecked.append(tx)  # admitted transactions were checked at submit_many
            parsed.append(tx)
        if unchecked:
            ok = signing.verify_batch(
                [t.sender for t in unchecked], [t.body for t in unchecked], [t.signature for t in unchecked]
            )
            if not ok.all():
                bad = unchecked[int((~ok).nonzero()[0][0])]
                raise InvalidBlock(h, f"transaction {bad.id.hex()[:16]}: signature does not verify for its sender")
        if p is not None:
            self.abandon_proposal()
        candidate = self._build(h, header.time_ms, header.round, parsed, header)
        self._round_height, self._round = h, header.round
        self._proposal = candidate
        if not vote:
            candidate.votes.clear()
        return tuple(candidate.votes.values())

    def _build(
        self,
        height: int,
        time_ms: int,
        round_: int,
        candidates: Sequence[Transaction],
        expected: BlockHeader | None,
    ) -> _Proposal:
        """The proposal of ``candidates`` at (height, round): pending ones that no longer apply are
        dropped (``expected`` None), or, for a received block (``expected``, its header), any
        that does not apply or a root that differs raises InvalidBlock and changes nothing."""
        state = self._state.copy()
        validators = state.validators
        proposer = state.begin_block(height, time_ms, round_)
        included: list[Transaction] = []
        outcomes: list[Outcome] = []
        for tx in candidates:
            try:
                state.check(tx)
                outcome = state.apply(tx)
            except FedLedgerError as exc:
                if expected is not None:
                    raise InvalidBlock(
                        height, f"transaction {tx.id.hex()[:16]} breaks the ledger's rules: {exc}"
                    ) from None
                self.dropped.append(SubmitResult(tx.id, False, exc))
                self._remember_refused(self.dropped[-1:])
                if state.nonces.get(tx.sender.to_bytes()) == tx.nonce + 1:
                    # apply failed half-way: rebuild the copy without this transaction
                    state = self._state.copy()
                    state.begin_block(height, time_ms, round_)
                    outcomes = [state.apply(earlier) for earlier in included]
                continue
            included.append(tx)
            outcomes.append(outcome)
        leaves = [tx.to_bytes() for tx in included]
        base = self._tree.size
        self._tree.extend(leaves)
        undo = self._state_tree.update(state.changes())
        prev = self._genesis.hash if self._head is None else self._head[0].hash
        header = BlockHeader(
            chain_id=self.chain_id,
            height=height,
            prev_hash=prev,
            tx_root=merkle.root(leaves),
            tx_count=len(included),
            log_size=base + len(included),
            log_root=self._tree.root,
            validators_hash=validators.hash(),
            proposer=proposer,
            time_ms=time_ms,
            state_root=self._state_tree.root,
            outcome_root=merkle.root([o.to_bytes() for o in outcomes]),
            round=round_,
        )
        if expected is not None and header != expected:
            self._tree.rollback(base)
            self._state_tree.rollback(undo)
            differs = [
                f
                for f in ("tx_root", "log_root", "state_root", "outcome_root", "log_size")
                if getattr(header, f) != getattr(expected, f)
            ]
            raise InvalidBlock(
                height, f"its transactions do not rebuild its header ({', '.join(differs) or 'header fields'} differ)"
            )
        proposal = _Proposal(header, included, leaves, outcomes, state, validators, undo, local=expected is None)
        for key, identity in self._local.items():
            if key in validators:
                proposal.votes[key] = Vote.create(identity, header)
        return proposal

    def add_vote(self, vote: Vote) -> None:
        """Count a validator's vote for the open proposal (InvalidVote if it is not one)."""
        if not isinstance(vote, Vote):
            raise InvalidArgumentType("vote", f"expected Vote, got {type(vote).__name__}")
        p = self._proposal
        if p is None:
            raise InvalidVote("no block is being proposed")
        if (vote.chain_id, vote.height, vote.round, vote.block_hash) != (
            self.chain_id,
            p.header.height,
            p.header.round,
            p.header.hash,
        ):
            raise InvalidVote(
                f"vote is for another block (height {vote.height}, round {vote.round}, "
                f"hash {vote.block_hash.hex()[:16]})"
            )
        if vote.validator not in p.validators:
            raise InvalidVote(f"{vote.validator.to_bytes().hex()[:16]} is not a validator of block {p.header.height}")
        try:
            vote.verify()
        except InvalidSignature as exc:
            raise InvalidVote(f"vote signature does not verify: {exc}") from None
        p.votes[vote.validator.to_bytes()] = vote

    def commit(self, certificate: Certificate | None = None) -> Block:
        """Finalize the next block: propose it if needed, check the quorum, store it durably.

        Raises QuorumNotReached, leaving the proposal open for more votes, when the votes
        gathered hold 2/3 of the stake or less. A crash at any instant leaves either the whole
        block stored or none of it.

        ``certificate`` (votes gathered elsewhere, e.g. by another node) finalizes the open
        proposal with it instead; it must hold > 2/3 of the stake's valid signatures on that
        header (InvalidVote otherwise, the proposal staying open).
        """
        p = self._proposal if self._proposal is not None else None
        if p is None:
            if certificate is not None:
                raise InvalidVote("no block is being proposed: accept_proposal() the certified header first")
            self.propose()
            p = self._proposal
        assert p is not None
        if certificate is not None:
            if not isinstance(certificate, Certificate):
                raise InvalidArgumentType("certificate", f"expected Certificate, got {type(certificate).__name__}")
            try:
                certificate.verify(p.header, p.validators)
            except InvalidSignature as exc:
                raise InvalidVote(f"block {p.header.height}: {exc}") from None
        elif not p.validators.is_quorum(p.votes):
            raise QuorumNotReached(
                f"block {p.header.height}: votes hold {p.validators.signed_stake(p.votes)} of "
                f"{p.validators.total} stake; more than 2/3 is needed"
            )
        cert = certificate if certificate is not None else Certificate.from_votes(list(p.votes.values()))
        header_bytes = p.header.to_bytes()
        stored = StoredBlock(p.header.height, p.header.hash, header_bytes, cert.to_bytes())
        base = p.header.log_size - len(p.txs)
        outcome_leaves = [o.to_bytes() for o in p.outcomes]
        rows = [
            StoredTx(base + j, p.header.height, tx.id, tx.kind, tx.sender.to_bytes(), tx.nonce, leaf, result)
            for j, (tx, leaf, result) in enumerate(zip(p.txs, p.leaves, outcome_leaves))
        ]
        snapshot = None
        every = self._snapshot_every
        if every is not None and p.header.log_size // every > (p.header.log_size - len(p.txs)) // every:
            outcome_hashes = bytes(self._outcome_hashes) + merkle.leaf_hashes(outcome_leaves).tobytes()
            snapshot = audit.snapshot_of(p.header, p.state, self._tree.leaf_hashes().tobytes(), outcome_hashes)
        self._store.append_block(stored, rows, snapshot)
        # Only now, with the block durable, does the in-memory view move on.
        p.state.kv.settle()
        for leaf in outcome_leaves:
            self._outcome_hashes += merkle.leaf_hash(leaf)
        self._state = p.state
        self._head = (stored, p.header)
        self._blocks.append((p.header.hash, p.header.log_size))
        self._proposal = None
        if not p.local:
            # Another node's block: it holds some of the pending transactions, in its own order.
            ids = {tx.id for tx in p.txs}
            self.dropped = []
            self._pending = [tx for tx in self._pending if tx.id not in ids]
            self._rebuild_pending_nonces()
            return Block(p.header, cert, tuple(p.txs), tuple(p.outcomes))
        done = len(p.txs) + len(self.dropped)
        self._pending = self._pending[done:] if done else self._pending
        if self.dropped:
            # Later pending transactions of a dropped sender cannot apply any more either.
            self._rebuild_pending_nonces()
        else:
            for tx in p.txs:
                key = tx.sender.to_bytes()
                if self._pending_nonce.get(key) == tx.nonce + 1:
                    del self._pending_nonce[key]
        return Block(p.header, cert, tuple(p.txs), tuple(p.outcomes))

    def apply_block(self, block: Block) -> Block:
        """Apply a finalized block received from elsewhere (catching up): its header and
        transactions are checked as :meth:`accept_proposal` does and its certificate as
        :meth:`commit` does; InvalidBlock or InvalidVote leave the ledger as it was."""
        if not isinstance(block, Block):
            raise InvalidArgumentType("block", f"expected Block, got {type(block).__name__}")
        self.accept_proposal(block.header, block.transactions, vote=False)
        try:
            return self.commit(block.certificate)
        except BaseException:
            self.abandon_proposal()
            raise

    def snapshot(self) -> int:
        """Store a snapshot of the state after the last block (replacing the previous one); return its height.

        A later :meth:`open` loads it and replays only the blocks after it. NotFound before the
        first block.
        """
        self._writable()
        if self._head is None:
            raise NotFound("no block has been finalized yet: there is nothing to snapshot")
        header = self._head[1]
        leaves = self._tree.leaf_hashes()[: header.log_size].tobytes()
        self._store.put_snapshot(audit.snapshot_of(header, self._state, leaves, bytes(self._outcome_hashes)))
        return header.height

    def abandon_proposal(self) -> None:
        """Drop the open proposal (its transactions stay pending); the next proposal at this
        height is made in the next round."""
        if self._proposal is not None:
            self._round = self._proposal.header.round + 1
            self._tree.rollback(self._proposal.header.log_size - len(self._proposal.txs))
            self._state_tree.rollback(self._proposal.state_undo)
            self._proposal = None

    # -- contracts ----------------------------------------------------------------------------

    def sign_call(
        self,
        identity: Identity,
        contract: str,
        method: str,
        args: dict[str, encoding.Value],
        *,
        nonce: int | None = None,
    ) -> Transaction:
        """A signed ``contract.call`` transaction (nonce: the sender's next one by default).

        For calls signed ahead of time (a client that signs, a server that submits) and for
        batches: give consecutive nonces yourself when signing several before submitting.
        """
        if not isinstance(identity, Identity):
            raise InvalidArgumentType("identity", f"expected Identity, got {type(identity).__name__}")
        return Transaction.create(
            identity,
            kind=CALL_KIND,
            payload={"contract": contract, "method": method, "args": args},
            nonce=self.next_nonce(identity) if nonce is None else nonce,
            chain_id=self.chain_id,
        )

    def call(self, identity: Identity, contract: str, method: str, **args: encoding.Value) -> CallResult:
        """Make one contract call, finalize it in a block, and say what it did.

        A call the contract refuses is recorded as denied (``accepted`` False, with the
        reason); one the ledger cannot admit (unknown contract or method, bad arguments,
        a revoked sender) raises the typed error and is not recorded.
        """
        result = self.call_many([Call(identity, contract, method, args)])[0]
        if result.error is not None:
            raise result.error
        return result

    def call_many(self, calls: Sequence[Call | Transaction | bytes]) -> list[CallResult]:
        """Make many calls in order and finalize them (as many blocks as needed), one result each.

        Each item is a :class:`Call` (signed here, nonces counted per identity) or an already
        signed ``contract.call`` transaction (:meth:`sign_call`, or wire bytes). A call refused
        at submission gets its error and the rest of the batch still lands. Needs the local
        validators' quorum (QuorumNotReached otherwise, with the admitted calls pending).
        """
        self._writable()
        nonces: dict[bytes, int] = {}
        items: list[Transaction | bytes] = []
        early: dict[int, CallResult] = {}
        for i, c in enumerate(calls):
            try:
                if isinstance(c, Call):
                    # Checked before signing, so a call refused here never takes a nonce.
                    self._state.check_call(
                        encoding.decode(encoding.encode({"contract": c.contract, "method": c.method, "args": c.args}))
                    )
                    key = c.identity.verify_key.to_bytes() if isinstance(c.identity, Identity) else b""
                    tx = self.sign_call(c.identity, c.contract, c.method, c.args, nonce=nonces.get(key))
                elif isinstance(c, (Transaction, bytes, bytearray, memoryview)):
                    tx = c if isinstance(c, Transaction) else Transaction.from_bytes(c)
                else:
                    raise InvalidArgumentType(
                        f"calls[{i}]", f"expected Call, Transaction or bytes, got {type(c).__name__}"
                    )
            except FedLedgerError as exc:
                early[i] = CallResult(None, False, False, f"{type(exc).__name__}: {exc}", error=exc)
                items.append(b"")
                continue
            sender = tx.sender.to_bytes()
            nonces[sender] = max(nonces.get(sender, self.next_nonce(tx.sender)), tx.nonce + 1)
            items.append(tx)
        todo = [i for i in range(len(items)) if i not in early]
        submitted = self.submit_many([items[i] for i in todo])
        results: dict[int, CallResult] = dict(early)
        waiting: dict[bytes, int] = {}
        for i, r in zip(todo, submitted):
            if r.error is not None:
                results[i] = CallResult(r.tx_id, False, False, r.reason, error=r.error)
            else:
                assert r.tx_id is not None
                waiting[r.tx_id] = i
        while waiting and any(tx.id in waiting for tx in self._pending):
            block = self.commit()
            for tx, outcome in zip(block.transactions, block.outcomes):
                i = waiting.pop(tx.id, -1)
                if i >= 0:
                    results[i] = CallResult(
                        tx.id, True, outcome.ok, outcome.reason or "accepted", outcome.value, block.height
                    )
            for dropped in self.dropped:
                i = waiting.pop(dropped.tx_id, -1)  # type: ignore[arg-type]
                if i >= 0:
                    results[i] = CallResult(dropped.tx_id, False, False, dropped.reason, error=dropped.error)
        return [results[i] for i in range(len(items))]

    def _now_ms(self) -> int:
        now = self._clock()
        if type(now) is not int or now < 0:
            raise InvalidArgument("clock", f"must return a non-negative int of milliseconds, returned {now!r}")
        return now

    def _writable(self) -> None:
        if getattr(self._store, "read_only", False):
            raise ReadOnlyLedger("this ledger was opened read-only; open it without read_only=True to write")

    def _rebuild_pending_nonces(self) -> None:
        self._pending_nonce = {}
        kept = []
        for tx in self._pending:
            key = tx.sender.to_bytes()
            if tx.nonce == self._pending_nonce.get(key, self._state.nonces.get(key, 0)):
                kept.append(tx)
                self._pending_nonce[key] = tx.nonce + 1
            else:
                why = (
                    "was taken by a finalized transaction"
                    if tx.nonce < self._state.nonces.get(key, 0)
                    else "follows a pending transaction of this sender that was dropped"
                )
                self.dropped.append(SubmitResult(tx.id, False, ReplayedTransaction(f"nonce {tx.nonce} {why}")))
                self._remember_refused(self.dropped[-1:])
        self._pending = kept

    # -- proofs -----------------------------------------------------------------------------

    def tree_head(self) -> SignedTreeHead:
        """The latest finalized block's header and certificate (NotFound before the first block)."""
        if self._head is None:
            raise NotFound("no block has been finalized yet")
        stored, header = self._head
        return SignedTreeHead(header, Certificate.from_bytes(stored.certificate))

    def prove(self, tx_id: bytes, *, since: ValidatorSet | None = None, outcome: bool = False) -> Receipt:
        """A self-contained receipt for a finalized transaction, checkable offline by :func:`verify_receipt`.

        It carries every validator-set change from genesis (or from the last time the set
        ``since`` was in force) up to the head, so an auditor who trusts that set can follow
        the chain of hand-overs to the set that certified the head.

        With ``outcome=True`` the receipt is made at the block that holds the transaction and
        also proves what it did (:func:`verify_outcome`): accepted, or denied and why.
        """
        row = self._locate(tx_id)
        block = self.block(row.height) if outcome else None
        head = self.tree_head() if block is None else SignedTreeHead(block.header, block.certificate)
        changes = proving.validator_changes(self._store, self._genesis, self._tree, head, since)
        proof = None
        if block is not None:
            result = self._outcome_of(row)
            leaves = [o.to_bytes() for o in block.outcomes]  # each checked by block()
            index = row.seq - (head.log_size - head.header.tx_count)
            proof = OutcomeProof(
                result.to_bytes(), index, tuple(merkle.MerkleTree(leaves).inclusion_proof(index, len(leaves)))
            )
        return Receipt(self.chain_id, proving.log_entry(self._tree, row, head.log_size), head, changes, proof)

    def prove_consistency(self, old_size: int, *, since: ValidatorSet | None = None) -> ConsistencyProof:
        """Proof that the log of ``old_size`` transactions is a prefix of today's (RFC 9162).

        Checked offline by :func:`verify_consistency`, against a head the auditor kept.
        """
        size = self.log_size
        if type(old_size) is not int or not 0 <= old_size <= size:
            raise InvalidArgument("old_size", f"must be an int in [0, {size}], got {old_size!r}")
        head = self.tree_head()
        proof = self._tree.consistency_proof(old_size, size)
        return ConsistencyProof(
            self.chain_id,
            old_size,
            self._tree.root_at(old_size),
            tuple(proof),
            head,
            proving.validator_changes(self._store, self._genesis, self._tree, head, since),
        )

    # -- audit ------------------------------------------------------------------------------

    def verify(self, *, head: SignedTreeHead | None = None) -> None:
        """Full audit: storage integrity, every row accounted for, hash chain, Merkle roots, every
        signature, quorum, nonces. Raises TamperedLedger naming the first bad height.

        It replays every block from genesis, whatever snapshot the ledger opened from, and the
        stored snapshot must equal the replayed state, log and outcomes at its height
        (:class:`InvalidSnapshot` otherwise). A ledger opened with ``from_snapshot=False`` can
        replace a bad snapshot with :meth:`snapshot`.

        Truncation (the newest blocks cut off) leaves a file that is consistent in itself; to
        detect it, pass a ``head`` kept elsewhere (:meth:`tree_head`, saved with
        :meth:`SignedTreeHead.to_json`): the file must reach that head's height, hold that very
        block, and its log must extend the head's log (an RFC 9162 consistency proof).
        """
        if head is not None and not isinstance(head, SignedTreeHead):
            raise InvalidArgumentType("head", f"expected SignedTreeHead, got {type(head).__name__}")
        problems = self._store.integrity_problems()
        if problems:
            raise TamperedLedger(0, f"storage integrity check failed: {problems[0]}")
        replayed = audit.replay(
            self._store, self._genesis, verify_signatures=True, bindings=self._bindings, check_snapshots=True
        )
        last = replayed.head
        if (last is None) != (self._head is None) or (last is not None and last[0].hash != self._head[0].hash):  # type: ignore[index]
            raise TamperedLedger(self.height, "the stored chain differs from the one this ledger opened")
        if head is not None:
            audit.check_against_head(self._store, replayed, head)


def _check_pins(genesis: Genesis, offered: list[type[Contract]]) -> None:
    """ContractMismatch unless every contract the genesis pins is offered with the same code."""
    by_name: dict[str, list[type[Contract]]] = {}
    for c in offered:
        by_name.setdefault(c.name, []).append(c)
    for name, version, code_hash in genesis.contracts:
        classes = by_name.get(name)
        if not classes:
            raise ContractMismatch(
                f"this ledger pins contract {name!r} v{version} (code sha256 {code_hash.hex()[:16]}); "
                "pass its class in contracts=[...] (the CLI: --contracts module:Class)"
            )
        if not any((c.version, c.code_hash()) == (version, code_hash) for c in classes):
            found = ", ".join(f"v{c.version} sha256 {c.code_hash().hex()[:16]}" for c in classes)
            raise ContractMismatch(
                f"this ledger pins contract {name!r} v{version} (code sha256 {code_hash.hex()[:16]}), "
                f"but the class offered is {found}: another version or changed code would fork the chain"
            )
