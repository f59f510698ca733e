"""The node's ordering and finalizing rules (fedledger.node.driver), over an in-memory ordering
service with etcd's semantics: one total order of changes, compare-and-swap creates."""

from __future__ import annotations

import dataclasses

from hypothesis import given, settings
from hypothesis import strategies as st
from ledger_helpers import CHAIN, sites, validator_set, validators

from fedledger import Ledger, Transaction
from fedledger.ledger import Vote
from fedledger.node import driver as driver_module
from fedledger.node import protocol
from fedledger.node.driver import Action, Create, Delete, DeleteRange, Driver, Put


class Votes:
    def __init__(self) -> None:
        self.rows: dict[int, tuple[int, bytes]] = {}

    def voted(self, height: int) -> tuple[int, bytes] | None:
        return self.rows.get(height)

    def record(self, height: int, round_: int, block_hash: bytes) -> None:
        assert height not in self.rows
        self.rows[height] = (round_, block_hash)


class Orderer:
    """A linearizable key-value store: every applied write is one change in one log."""

    def __init__(self) -> None:
        self.kv: dict[bytes, bytes] = {}
        self.log: list[tuple[bytes, bytes | None]] = []

    def apply(self, actions: list[Action]) -> None:
        for a in actions:
            if isinstance(a, Create):
                if a.key in self.kv:
                    continue
            if isinstance(a, (Put, Create)):
                self.kv[a.key] = a.value
                self.log.append((a.key, a.value))
            elif isinstance(a, Delete):
                self.kv.pop(a.key, None)
                self.log.append((a.key, None))
            elif isinstance(a, DeleteRange):
                for key in [k for k in self.kv if a.start <= k < a.end]:
                    del self.kv[key]
                    self.log.append((key, None))


class Net:
    def __init__(self, n: int = 4, round_timeout: float = 1.0, keep_heights: int | None = None) -> None:
        self.keep_heights = keep_heights
        self.orderer = Orderer()
        self.now = 0.0
        self.cursor = [0] * n
        self.votes = [Votes() for _ in range(n)]
        self.drivers = [self._driver(i, round_timeout) for i in range(n)]
        self.down: set[int] = set()

    def _driver(self, i: int, round_timeout: float) -> Driver:
        ledger = Ledger.memory(
            chain_id=CHAIN,
            validators=validator_set(),
            local_validators=[validators()[i]],
            members=[s.card() for s in sites(3)],
        )
        return Driver(
            ledger,
            validators()[i],
            f"v{i}",
            self.votes[i],
            round_timeout=round_timeout,
            batch_delay=0.0,
            keep_heights=self.keep_heights,
        )

    def restart(self, i: int) -> None:
        """A new driver on a fresh replica (caught up from the log) with the same vote record."""
        self.drivers[i] = self._driver(i, self.drivers[i].round_timeout)
        self.cursor[i] = 0

    def submit(self, i: int, txs: list[Transaction]) -> None:
        results, actions = self.drivers[i].submit(txs, self.now)
        assert all(r.accepted for r in results)
        self.orderer.apply(actions)

    def step(self, dt: float = 0.1) -> None:
        self.now += dt
        for i, d in enumerate(self.drivers):
            if i in self.down:
                continue
            while self.cursor[i] < len(self.orderer.log):
                key, value = self.orderer.log[self.cursor[i]]
                self.cursor[i] += 1
                self.orderer.apply(d.on_change(key, value, self.now))
            self.orderer.apply(d.admit_pool(self.now, 10_000))
            self.orderer.apply(d.on_tick(self.now))

    def run(self, until, steps: int = 200) -> None:
        for _ in range(steps):
            if until():
                return
            self.step()
        raise AssertionError("the nodes did not get there")

    def live(self) -> list[Driver]:
        return [d for i, d in enumerate(self.drivers) if i not in self.down]


def notes(site: int, count: int, start: int = 0) -> list[Transaction]:
    s = sites(3)[site]
    return [
        Transaction.create(s, kind="note", payload={"n": n}, nonce=n, chain_id=CHAIN)
        for n in range(start, start + count)
    ]


def test_four_drivers_build_one_chain_from_transactions_submitted_anywhere() -> None:
    net = Net()
    net.submit(0, notes(0, 30))
    net.submit(2, notes(1, 20))
    net.run(lambda: all(d.ledger.log_size == 50 for d in net.drivers))
    assert len({d.ledger.state_root for d in net.drivers}) == 1
    assert len({d.ledger.tree_head().header.hash for d in net.drivers}) == 1
    assert all(not d.problems for d in net.drivers)
    # Every value written stays within etcd's limit, and each submitter cleaned up its pool keys.
    assert max(len(v) for _, v in net.orderer.log if v is not None) <= protocol.MAX_VALUE
    assert not [k for k in net.orderer.kv if b"/pool/" in k]


def test_a_silent_proposer_is_skipped_and_catches_up_later() -> None:
    net = Net()
    # v3 holds 10 of 100: run blocks until it is the next proposer, then silence it.
    net.submit(1, notes(0, 5))
    net.run(lambda: all(d.ledger.height == 1 for d in net.drivers))
    for n in range(2, 30):
        if net.drivers[1].ledger.proposer(0) == validators()[3].verify_key:
            break
        net.submit(1, notes(0, 1, start=3 + n))
        net.run(lambda n=n: all(d.ledger.height == n for d in net.drivers))
    assert net.drivers[1].ledger.proposer(0) == validators()[3].verify_key
    net.down = {3}
    height = net.drivers[1].ledger.height
    net.submit(1, notes(1, 3))
    net.run(lambda: all(d.ledger.height == height + 1 for d in net.live()))
    block = net.drivers[1].ledger.block(height + 1)
    assert block.header.round == 1 and block.header.proposer != validators()[3].verify_key.to_bytes()
    assert net.orderer.kv[protocol.slot_key(CHAIN, height + 1, 0)] == protocol.slot_value(None)  # the skip
    net.down = set()
    net.run(lambda: net.drivers[3].ledger.height == height + 1)
    assert net.drivers[3].ledger.state_root == net.drivers[1].ledger.state_root


def test_a_slot_whose_block_breaks_a_rule_moves_every_node_to_the_next_round() -> None:
    net = Net()
    txs = notes(0, 4)
    for d in net.drivers:
        d.ledger.submit_many(txs)
    proposer_key = net.drivers[0].ledger.proposer(0)
    index = [v.verify_key for v in validators()].index(proposer_key)
    honest = net.drivers[index].ledger.propose(round=0)
    forged = dataclasses.replace(honest, state_root=b"\x07" * 32)  # txs do not rebuild it
    parts = list(protocol.pack([t.to_bytes() for t in txs]))
    net.orderer.apply(
        [Put(protocol.body_key(CHAIN, 1, 0, i), v) for i, v in enumerate(parts)]
        + [Create(protocol.slot_key(CHAIN, 1, 0), protocol.slot_value(forged.to_bytes(), len(parts)))]
    )
    net.run(lambda: all(d.ledger.height == 1 for d in net.drivers))
    assert all(d.ledger.block(1).header.round == 1 for d in net.drivers)
    assert all(any("refused" in p for p in d.problems) for d in net.drivers)
    assert not [k for k in net.orderer.kv if b"/vote/00000000000000000001/000000/" in k]  # nobody voted for it


def test_a_restarted_validator_never_votes_for_a_second_header_at_a_height() -> None:
    net = Net()
    # v3 restarts with a record of a vote at height 1 for another header (say, one the ordering
    # service held before it was rebuilt): it must not sign the header it now finds there.
    other = b"\x42" * 32
    net.votes[3].record(1, 0, other)
    net.submit(0, notes(0, 3))
    net.run(lambda: all(d.ledger.height == 1 for d in net.drivers))  # v0 + v1 + v2 hold 90
    v3 = validators()[3].verify_key.to_bytes()
    assert v3 not in {k for k, _ in net.drivers[0].ledger.block(1).certificate.signatures}
    assert not [k for k in net.orderer.kv if b"/vote/00000000000000000001/" in k and k.endswith(v3.hex().encode())]
    assert net.votes[3].voted(1) == (0, other)
    # At the next height it votes again.
    net.submit(0, notes(0, 2, start=3))
    net.run(lambda: all(d.ledger.height == 2 for d in net.drivers))
    assert net.votes[3].voted(2) is not None


def test_two_votes_by_one_validator_at_one_round_become_evidence_and_slash_it() -> None:
    net = Net()
    net.submit(0, notes(0, 3))
    net.run(lambda: all(d.ledger.height == 1 for d in net.drivers))
    header = net.drivers[0].ledger.block(1).header
    rogue = validators()[3]
    fake = Vote.create(rogue, dataclasses.replace(header, time_ms=header.time_ms + 1))
    net.orderer.apply([Put(protocol.vote_key(CHAIN, 1, header.round, rogue.verify_key.to_bytes()), fake.to_bytes())])
    net.submit(1, notes(1, 2))
    net.run(lambda: all(rogue.verify_key not in d.ledger.validators for d in net.drivers))
    assert all(any("signed two headers" in p for p in d.problems) for d in net.drivers)
    assert len({d.ledger.state_root for d in net.drivers}) == 1
    for d in net.drivers:
        d.ledger.verify()


@settings(max_examples=25, deadline=None)
@given(
    sizes=st.lists(st.integers(min_value=0, max_value=3000), min_size=1, max_size=40),
    limit=st.integers(min_value=4000, max_value=protocol.MAX_VALUE),
)
def test_packed_values_hold_every_transaction_in_order_within_the_limit(sizes: list[int], limit: int) -> None:
    items = [bytes([i % 256]) * n for i, n in enumerate(sizes)]
    values = list(protocol.pack(items, limit))
    assert all(len(v) <= limit for v in values)
    assert [x for v in values for x in protocol.unpack(v)] == items


def test_keys_parse_back_and_foreign_keys_do_not() -> None:
    key = b"\x01" * 32
    assert protocol.parse_key(CHAIN, protocol.vote_key(CHAIN, 7, 2, key)) == protocol.Key(
        "vote", height=7, round=2, validator=key
    )
    assert protocol.parse_key(CHAIN, protocol.body_key(CHAIN, 7, 2, 5)) == protocol.Key(
        "body", height=7, round=2, index=5
    )
    assert protocol.parse_key(CHAIN, protocol.cert_key(CHAIN, 9)) == protocol.Key("cert", height=9)
    assert protocol.parse_key(CHAIN, protocol.pool_key(CHAIN, "v1", 3)) == protocol.Key("pool", node="v1", index=3)
    for foreign in (
        b"/other/x",
        protocol.prefix("other-chain") + b"cert/1",
        protocol.prefix(CHAIN) + b"cert/x",
        protocol.prefix(CHAIN) + b"nope/1",
    ):
        assert protocol.parse_key(CHAIN, foreign) is None


def test_etcd_keeps_a_window_of_recent_blocks_and_a_node_behind_it_is_told(monkeypatch) -> None:
    monkeypatch.setattr(driver_module, "_PRUNE_STEP", 3)
    net = Net(keep_heights=4)
    for n in range(20):  # one block per batch
        net.submit(n % 4, notes(n % 3, 1, start=n // 3))
        net.run(lambda n=n: all(d.ledger.height == n + 1 for d in net.drivers))
    heights = sorted({protocol.parse_key(CHAIN, k).height for k in net.orderer.kv if b"/cert/" in k})
    assert heights[0] > 1 and heights[-1] == 20 and len(heights) <= 4 + 3 + 1  # the window, and no more
    assert len({d.ledger.state_root for d in net.drivers}) == 1
    late = Net(n=1, keep_heights=4)  # a fresh replica of v0 reading what etcd holds now
    late.orderer.log = list(net.orderer.kv.items())
    late.step()
    assert late.drivers[0].ledger.height == 0 and late.drivers[0].missing_history() == 1
