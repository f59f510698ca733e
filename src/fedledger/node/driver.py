"""One node's part in ordering and finalizing blocks, as a state machine without I/O.

The node feeds it every change of its chain's keyspace in the ordering service, in revision
order (:meth:`Driver.on_change`), and the time (:meth:`Driver.on_tick`); it answers with the
writes to make (:class:`Put`, :class:`Create`, :class:`Delete`, :class:`DeleteRange`). The rules:

- Round r of height h is decided once, in the ordering service: its slot is created by
  compare-and-swap, either by the round's proposer with its header, or, after the round's
  timeout, by any node with a skip. Every node therefore sees the same header (or skip) at
  every (h, r); a skip, or a header that breaks a rule (every honest replica finds the same),
  moves the height on to round r + 1, whose proposer is the next in Tendermint's schedule.
- A validator votes for at most one header per height (its record of votes is durable), and
  only for the header its slot holds, so honest validators never split their votes.
- Any node that holds votes of more than 2/3 of the stake for the slot's header writes the
  certificate, once per height, by compare-and-swap; every replica commits the block that the
  certificate names, after checking it (signatures, quorum, every root).
- Two votes by one validator at one (height, round) for different headers become evidence,
  submitted as a transaction (its stake is slashed when a block holds it).
"""

from __future__ import annotations

import json
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol

from fedledger import encoding
from fedledger.errors import FedLedgerError
from fedledger.identity import Identity
from fedledger.ledger import BlockHeader, Certificate, Evidence, Ledger, Transaction, Vote
from fedledger.ledger.ledger import SubmitResult
from fedledger.node import protocol

#: How long a submitted batch stays in the ordering service if its node never cleans it up (s).
POOL_TTL = 600
#: Blocks etcd keeps below the lowest head any node published (older ones are pruned: a node
#: further behind starts from a copy of a replica). None: keep everything.
DEFAULT_KEEP_HEIGHTS = 1000
_PRUNE_STEP = 100


@dataclass(frozen=True)
class Put:
    key: bytes
    value: bytes
    ttl: int | None = None


@dataclass(frozen=True)
class Create:
    """Write only if the key does not exist (compare-and-swap on its version)."""

    key: bytes
    value: bytes


@dataclass(frozen=True)
class Delete:
    key: bytes


@dataclass(frozen=True)
class DeleteRange:
    """Delete every key in ``[start, end)``."""

    start: bytes
    end: bytes


Action = Put | Create | Delete | DeleteRange


class VoteRecord(Protocol):
    """Where a validator keeps, durably, the one header it voted for at each height."""

    def voted(self, height: int) -> tuple[int, bytes] | None: ...

    def record(self, height: int, round_: int, block_hash: bytes) -> None: ...


@dataclass
class _Slot:
    header: BlockHeader | None  # None: a skip, or a header that broke a rule
    txs: tuple[Transaction, ...] = ()
    why: str = ""


class _Problems(list[str]):
    """A list that keeps its latest 100 entries and skips a repeat of the last one."""

    def append(self, item: str) -> None:
        if not self or self[-1] != item:
            super().append(item)
            del self[:-100]


class Driver:
    """The ordering and finalizing rules of one node over its ledger replica."""

    def __init__(
        self,
        ledger: Ledger,
        identity: Identity,
        name: str,
        votes: VoteRecord,
        *,
        round_timeout: float = 2.0,
        batch_delay: float = 0.05,
        first_pool_seq: int = 0,
        keep_heights: int | None = DEFAULT_KEEP_HEIGHTS,
    ) -> None:
        self.ledger = ledger
        self.identity = identity
        self.name = name
        self.chain = ledger.chain_id
        self._key = identity.verify_key.to_bytes()
        self._votes = votes
        self.round_timeout = round_timeout
        self.batch_delay = batch_delay
        self.height = ledger.height + 1  # the height being decided
        self.round = 0
        self._entered = 0.0  # when this node entered the current (height, round)
        self._pending_since: float | None = None
        self._bodies: dict[tuple[int, int], dict[int, bytes]] = {}
        self._raw_slots: dict[tuple[int, int], bytes] = {}
        self._slots: dict[tuple[int, int], _Slot] = {}
        self._round_votes: dict[tuple[int, int], dict[bytes, Vote]] = {}
        self._first_vote: dict[tuple[int, int, bytes], Vote] = {}
        self._certs: dict[int, bytes] = {}
        self._proposed: set[tuple[int, int]] = set()
        self._skipped: set[tuple[int, int]] = set()
        self._cert_written: set[int] = set()
        self._accused: set[bytes] = set()
        self._pool_seq = first_pool_seq
        self._batches: dict[bytes, set[bytes]] = {}  # this node's pool keys -> ids not yet final
        self._pool_backlog: deque[list[bytes]] = deque()
        self.heads: dict[str, bytes] = {}  # peers' latest signed tree heads (JSON)
        self._head_heights: dict[str, int] = {}
        self.keep_heights = keep_heights
        self._pruned_below = 1
        #: What this node saw go wrong, newest last (a bad header, a bad certificate, evidence);
        #: the latest 100, each once in a row.
        self.problems: _Problems = _Problems()

    # -- inputs ---------------------------------------------------------------------------

    def submit(self, txs: Sequence[Transaction | bytes], now: float) -> tuple[list[SubmitResult], list[Action]]:
        """Admit transactions here, and the writes that carry the admitted ones to every node."""
        results, wire, ids = self.admit(txs)
        return results, self.share(wire, ids, now)

    def admit(self, txs: Sequence[Transaction | bytes]) -> tuple[list[SubmitResult], list[bytes], list[bytes]]:
        """Admit transactions to this replica's mempool: the results, and the admitted ones' wire
        bytes and ids (for :meth:`share`)."""
        results = self.ledger.submit_many(txs)
        # An admitted item's bytes are its wire form (from_bytes accepts only the canonical one).
        wire = [t.to_bytes() if isinstance(t, Transaction) else bytes(t) for t, r in zip(txs, results) if r.accepted]
        ids = [r.tx_id for r in results if r.accepted and r.tx_id is not None]
        return results, wire, ids

    def share(self, wire: Sequence[bytes], ids: Sequence[bytes], now: float) -> list[Action]:
        """The pool writes that carry admitted transactions to every node (values of at most
        1 MiB), then whatever the rules do next."""
        actions: list[Action] = []
        offset = 0
        for value in protocol.pack(wire):
            count = len(protocol.unpack(value))
            key = protocol.pool_key(self.chain, self.name, self._next_pool_seq())
            self._batches[key] = set(ids[offset : offset + count])
            offset += count
            actions.append(Put(key, value, POOL_TTL))
        return actions + self._progress(now)

    def on_change(self, key: bytes, value: bytes | None, now: float) -> list[Action]:
        """One change of the keyspace (``value`` None: deleted), in revision order."""
        k = protocol.parse_key(self.chain, key)
        if k is None or value is None:
            return []
        if k.kind == "pool":
            if k.node != self.name:
                try:
                    self._pool_backlog.append(protocol.unpack(value))  # admitted by admit_pool()
                except FedLedgerError as exc:
                    self.problems.append(f"a pool batch is refused: {exc}")
            return []
        elif k.kind == "body":
            if k.height >= self.height:
                self._bodies.setdefault((k.height, k.round), {})[k.index] = value
        elif k.kind == "slot":
            if k.height >= self.height:
                self._raw_slots.setdefault((k.height, k.round), value)
        elif k.kind == "vote":
            return self._on_vote(k, value) + self._progress(now)
        elif k.kind == "cert":
            if k.height >= self.height:
                self._certs.setdefault(k.height, value)
        elif k.kind == "head":
            self.heads[k.node] = value
            try:
                height = json.loads(value)["height"]
            except (ValueError, KeyError, TypeError):
                height = None
            if type(height) is int:
                self._head_heights[k.node] = height
        return self._progress(now)

    def on_tick(self, now: float) -> list[Action]:
        return self._progress(now)

    def missing_history(self) -> int | None:
        """The height this replica needs next when etcd holds only certificates above it (they
        were pruned: start from a copy of a peer's replica instead); None otherwise."""
        if self._certs and self.height not in self._certs and min(self._certs) > self.height:
            return self.height
        return None

    @property
    def pool_backlog(self) -> int:
        """Batches (or parts) other nodes submitted that this node has not admitted yet."""
        return len(self._pool_backlog)

    def admit_pool(self, now: float, txs: int = 100) -> list[Action]:
        """Admit up to ``txs`` of the other nodes' submitted transactions, oldest first.

        Consensus messages (slots, votes, certificates) are handled as they arrive; the pool,
        the bulk of the work (a signature check per transaction), waits for this call, so a
        block is never finalized late because transactions queued before it. A block holding
        transactions not admitted yet is checked in full (signatures included) instead.
        """
        todo = txs
        while todo > 0 and self._pool_backlog:
            wire = self._pool_backlog.popleft()
            if len(wire) > todo:
                self._pool_backlog.appendleft(wire[todo:])
                wire = wire[:todo]
            self._admit_pool(wire)
            todo -= len(wire)
        return self._progress(now)

    # -- the rules ------------------------------------------------------------------------

    def _progress(self, now: float) -> list[Action]:
        actions: list[Action] = []
        while True:
            if not self.ledger.pending_count:
                self._pending_since = None
            elif self._pending_since is None:
                self._pending_since = now
            h = self.height
            if h in self._certs:
                done = self._commit(h)
                if done is None:
                    return actions  # the certificate's block is not here yet, or it is bad
                actions += done
                self._enter(h + 1, 0, now)
                continue
            slot = self._slot(h, self.round)
            if slot is None:
                actions += self._propose_or_skip(now)
                return actions
            if slot.header is None:
                self._enter(h, self.round + 1, now)
                continue
            actions += self._vote_and_certify(slot)
            return actions

    def _enter(self, height: int, round_: int, now: float) -> None:
        if height != self.height:
            for table in (self._bodies, self._raw_slots, self._slots, self._round_votes):
                for hr in [hr for hr in table if hr[0] < height]:
                    del table[hr]
            for key in [k for k in self._first_vote if k[0] < height - 16]:
                del self._first_vote[key]
            self._certs = {x: v for x, v in self._certs.items() if x >= height}
        self.height, self.round, self._entered = height, round_, now

    def _slot(self, h: int, r: int) -> _Slot | None:
        """The decided content of slot (h, r), checked against this replica; None: not decided yet."""
        if (h, r) in self._slots:
            return self._slots[(h, r)]
        raw = self._raw_slots.get((h, r))
        if raw is None:
            return None
        self._slots[(h, r)] = slot = self._check_slot(h, r, raw)
        if slot.header is None and slot.why:
            self.problems.append(f"height {h} round {r}: {slot.why}")
        return slot

    def _check_slot(self, h: int, r: int, raw: bytes) -> _Slot:
        try:
            parsed = protocol.parse_slot(raw)
        except FedLedgerError as exc:
            return _Slot(None, why=f"the slot does not parse: {exc}")
        if parsed is None:
            return _Slot(None)
        header_bytes, parts = parsed
        body = self._bodies.get((h, r), {})
        if any(i not in body for i in range(parts)):
            return _Slot(None, why=f"the proposal's transactions are missing ({len(body)} of {parts} parts)")
        try:
            header = BlockHeader.from_bytes(header_bytes)
            if (header.height, header.round) != (h, r):
                return _Slot(None, why=f"the slot holds a header of height {header.height} round {header.round}")
            wire = [tx for i in range(parts) for tx in protocol.unpack(body[i])]
            # Transactions this replica admitted are parsed (and verified) already: reuse them.
            known = {t.to_bytes(): t for t in self.ledger.pending}
            txs = tuple(known.get(w) or Transaction.from_bytes(w) for w in wire)
            self.ledger.accept_proposal(header, txs, vote=False)
        except FedLedgerError as exc:
            return _Slot(None, why=f"the proposed block is refused: {exc}")
        return _Slot(header, txs)

    def _propose_or_skip(self, now: float) -> list[Action]:
        h, r = self.height, self.round
        since = self._pending_since
        if since is None:
            return []  # nothing to order: no round runs
        waited = now - max(since, self._entered)
        if (h, r) not in self._proposed and self.ledger.proposer(r).to_bytes() == self._key:
            if waited < self.batch_delay:
                return []
            header = self.ledger.propose(round=r)
            proposal = self.ledger.proposal
            assert proposal is not None
            txs = proposal[1]
            if not txs:  # every pending transaction was dropped: nothing to order
                self.ledger.abandon_proposal()
                return []
            self._proposed.add((h, r))
            parts = list(protocol.pack([t.to_bytes() for t in txs]))
            actions: list[Action] = [Put(protocol.body_key(self.chain, h, r, i), v) for i, v in enumerate(parts)]
            actions.append(
                Create(protocol.slot_key(self.chain, h, r), protocol.slot_value(header.to_bytes(), len(parts)))
            )
            return actions
        timeout = self.round_timeout * (1 + min(r, 8) / 2)
        if waited >= timeout and (h, r) not in self._skipped:
            self._skipped.add((h, r))
            return [Create(protocol.slot_key(self.chain, h, r), protocol.slot_value(None))]
        return []

    def _vote_and_certify(self, slot: _Slot) -> list[Action]:
        h, r = self.height, self.round
        header = slot.header
        assert header is not None
        actions: list[Action] = []
        votes = self.ledger.accept_proposal(header, slot.txs)  # the open proposal already: no work
        mine = [v for v in votes if v.validator.to_bytes() == self._key]
        if mine:
            done = self._votes.voted(h)
            if done is None:
                self._votes.record(h, r, header.hash)  # durable before the vote leaves
                done = (r, header.hash)
            if done == (r, header.hash) and self._key not in self._round_votes.get((h, r), {}):
                vote = mine[0]
                self._round_votes.setdefault((h, r), {})[self._key] = vote
                self._first_vote.setdefault((h, r, self._key), vote)
                actions.append(Put(protocol.vote_key(self.chain, h, r, self._key), vote.to_bytes()))
        for_header = [v for v in self._round_votes.get((h, r), {}).values() if v.block_hash == header.hash]
        validators = self.ledger.validators
        if h not in self._cert_written and validators.is_quorum([v.validator.to_bytes() for v in for_header]):
            self._cert_written.add(h)
            cert = Certificate.from_votes(for_header)
            actions.append(
                Create(protocol.cert_key(self.chain, h), protocol.cert_value(r, header.hash, cert.to_bytes()))
            )
        return actions

    def _on_vote(self, k: protocol.Key, value: bytes) -> list[Action]:
        try:
            vote = Vote.from_bytes(value)
            vote.verify()
        except FedLedgerError as exc:
            self.problems.append(f"height {k.height} round {k.round}: a vote is refused: {exc}")
            return []
        if (vote.chain_id, vote.height, vote.round, vote.validator.to_bytes()) != (
            self.chain,
            k.height,
            k.round,
            k.validator,
        ):
            self.problems.append(f"height {k.height} round {k.round}: a vote is filed under another key")
            return []
        key = vote.validator.to_bytes()
        first = self._first_vote.setdefault((vote.height, vote.round, key), vote)
        if first.block_hash != vote.block_hash:
            return self._accuse(first, vote)
        if vote.height >= self.height:
            self._round_votes.setdefault((vote.height, vote.round), {})[key] = vote
        return []

    def _accuse(self, first: Vote, second: Vote) -> list[Action]:
        key = first.validator.to_bytes()
        self.problems.append(
            f"height {first.height} round {first.round}: validator {key.hex()[:16]} signed two headers (evidence submitted)"
        )
        if key in self._accused or key not in self.ledger.validators:
            return []
        self._accused.add(key)
        tx = Transaction.create(
            self.identity,
            kind="evidence",
            payload=Evidence(first, second).to_value(),
            nonce=self.ledger.next_nonce(self.identity),
            chain_id=self.chain,
        )
        _, actions = self.submit([tx], self._entered)
        return actions

    def _commit(self, h: int) -> list[Action] | None:
        raw = self._certs[h]
        try:
            round_, block_hash, cert_bytes = protocol.parse_cert(raw)
            certificate = Certificate.from_bytes(cert_bytes)
        except FedLedgerError as exc:
            self.problems.append(f"height {h}: the certificate does not parse: {exc}")
            return None
        slot = self._slot(h, round_)
        if slot is None:
            return None
        if slot.header is None or slot.header.hash != block_hash:
            self.problems.append(f"height {h}: the certificate names a block its slot does not hold")
            return None
        try:
            self.ledger.accept_proposal(slot.header, slot.txs, vote=False)
            block = self.ledger.commit(certificate)
        except FedLedgerError as exc:
            self.problems.append(f"height {h}: the certified block is refused: {exc}")
            return None
        return self._after_commit(block.transactions)

    def _after_commit(self, txs: Sequence[Transaction]) -> list[Action]:
        actions: list[Action] = [
            Put(protocol.head_key(self.chain, self.name), self.ledger.tree_head().to_json().encode())
        ]
        actions += self._prune()
        final = {t.id for t in txs} | {d.tx_id for d in self.ledger.dropped if d.tx_id is not None}
        for key in list(self._batches):
            self._batches[key] -= final
            if not self._batches[key]:
                del self._batches[key]
                actions.append(Delete(key))
        return actions

    def _prune(self) -> list[Action]:
        """Delete the blocks every node is past by more than ``keep_heights`` from etcd (the
        proposer of the block just committed does it, every 100 heights): etcd keeps a window
        of recent blocks for catching up, not the whole history, which the replicas hold."""
        if self.keep_heights is None or self.ledger.tree_head().header.proposer != self._key:
            return []
        heads = {**self._head_heights, self.name: self.ledger.height}
        below = min(heads.values()) - self.keep_heights
        if below < self._pruned_below + _PRUNE_STEP:
            return []
        since, self._pruned_below = self._pruned_below, below
        return [DeleteRange(*protocol.height_range(self.chain, kind, below, since)) for kind in protocol.HEIGHT_KINDS]

    def _admit_pool(self, wire: list[bytes]) -> None:
        fresh: list[Transaction | bytes] = []
        for w in wire:
            try:
                tx = Transaction.from_bytes(w)
            except FedLedgerError:
                continue
            if tx.nonce >= self.ledger.next_nonce(tx.sender):  # final or pending ones: no signature check
                fresh.append(tx)
        if fresh:
            self.ledger.submit_many(fresh)

    def _next_pool_seq(self) -> int:
        self._pool_seq += 1
        return self._pool_seq


def encode_status(driver: Driver) -> bytes:
    """A node's status as CBOR (height, round, state root, pending count, problems)."""
    ledger = driver.ledger
    return encoding.encode(
        {
            "chain": ledger.chain_id,
            "height": ledger.height,
            "round": driver.round,
            "log_size": ledger.log_size,
            "state_root": ledger.state_root,
            "pending": len(ledger.pending),
            "problems": list[encoding.Value](driver.problems[-10:]),
        }
    )
