"""Replicas that each hold one validator's key: blocks proposed by one, checked by the others
(accept_proposal), finalized with a certificate gathered from their votes, and caught up from
finalized blocks (apply_block). The node layer carries these messages; here they are passed by hand."""

from __future__ import annotations

import dataclasses

import pytest
from ledger_helpers import CHAIN, sites, validator_set, validators

from fedledger import Ledger, Transaction
from fedledger.errors import InvalidArgument, InvalidBlock, InvalidVote
from fedledger.ledger import BlockHeader, Certificate, Vote
from fedledger.ledger.ledger import Block


def replicas(tmp_path, n: int = 4) -> list[Ledger]:
    v = validators()
    return [
        Ledger.open(
            tmp_path / f"node-{i}.db",
            chain_id=CHAIN,
            validators=validator_set(),
            local_validators=[v[i]],
            members=[s.card() for s in sites(3)],
        )
        for i in range(n)
    ]


def notes(count: int, start: int = 0, site: int = 0) -> list[Transaction]:
    s = sites(3)[site]
    return [
        Transaction.create(s, kind="note", payload={"i": i}, nonce=i, chain_id=CHAIN)
        for i in range(start, start + count)
    ]


def holder(nodes: list[Ledger], key: bytes) -> Ledger:
    """The replica whose local validator is ``key``."""
    (node,) = [n for n in nodes if n._local and next(iter(n._local)) == key]
    return node


def run_height(nodes: list[Ledger], round_: int = 0, live: list[Ledger] | None = None) -> Block:
    """One height: the proposer of ``round_`` proposes, the live replicas check and vote, every
    live replica commits with the certificate."""
    live = nodes if live is None else live
    key = live[0].proposer(round_).to_bytes()
    proposer = holder(nodes, key)
    header = proposer.propose(round=round_)
    txs = list(proposer.proposal[1])  # what the node layer sends with the header
    votes = list(proposer.accept_proposal(header, txs))  # its own: the header is its open proposal
    for other in live:
        if other is not proposer:
            votes += other.accept_proposal(header, [t.to_bytes() for t in txs])
    cert = Certificate.from_votes(votes)
    blocks = [n.commit(cert) for n in live]
    assert len({b.hash for b in blocks}) == 1
    return blocks[0]


def test_four_replicas_with_one_key_each_build_one_chain(tmp_path) -> None:
    nodes = replicas(tmp_path)
    txs = notes(30) + notes(20, site=1)
    for n in nodes:
        assert all(r.accepted for r in n.submit_many([t.to_bytes() for t in txs]))
    for n in nodes:
        n._max_block_txs = 12
    proposers = set()
    while nodes[0].pending:
        block = run_height(nodes)
        proposers.add(block.header.proposer)
    assert len(proposers) >= 3  # the schedule rotates among replicas
    assert {n.height for n in nodes} == {nodes[0].height} and nodes[0].log_size == 50
    assert len({n.state_root for n in nodes}) == 1
    assert len({n.tree_head().header.hash for n in nodes}) == 1
    assert all(not n.pending for n in nodes)
    for n in nodes:
        n.verify()
        n.close()
    reopened = Ledger.open(tmp_path / "node-3.db")
    assert reopened.state_root == nodes[0].state_root
    reopened.verify()


def test_the_proposer_of_a_round_is_the_schedule_s(tmp_path) -> None:
    nodes = replicas(tmp_path)
    for r in range(6):
        key = nodes[0].proposer(r).to_bytes()
        header = holder(nodes, key).propose(round=r)
        assert header.proposer == key and header.round == r
        assert all(n.proposer(r).to_bytes() == key for n in nodes)
    with pytest.raises(InvalidArgument, match="round"):
        nodes[0].proposer(-1)


def test_a_later_round_s_block_from_the_next_proposer_is_accepted(tmp_path) -> None:
    nodes = replicas(tmp_path)
    for n in nodes:
        n.submit_many(notes(3))
    first = holder(nodes, nodes[0].proposer(0).to_bytes())
    stale = first.propose(round=0)  # round 0's header, never ordered (its proposer went silent)
    block = run_height(nodes, round_=1)  # the next proposer's header at round 1 supersedes it
    assert block.header.round == 1
    assert block.header.proposer != stale.proposer
    assert len({n.state_root for n in nodes}) == 1 and all(n.height == 1 and not n.pending for n in nodes)
    for n in nodes:
        n.verify()


def _proposal(tmp_path) -> tuple[list[Ledger], Ledger, BlockHeader, list[Transaction]]:
    nodes = replicas(tmp_path)
    for n in nodes:
        n.submit_many(notes(5))
    proposer = holder(nodes, nodes[0].proposer(0).to_bytes())
    header = proposer.propose(round=0)
    return nodes, proposer, header, list(proposer.proposal[1])


def _replace(header: BlockHeader, **changes: object) -> BlockHeader:
    return dataclasses.replace(header, **changes)


@pytest.mark.parametrize(
    "change",
    [
        "drop",
        "reorder",
        "extra",
        "foreign",
        "forged-signature",
        "malformed",
        "wrong-proposer",
        "wrong-round",
        "wrong-prev",
        "wrong-state-root",
        "wrong-outcome-root",
        "time-backwards",
        "wrong-height",
        "wrong-chain",
    ],
)
def test_a_proposal_that_breaks_a_rule_is_refused_and_changes_nothing(tmp_path, change: str) -> None:
    nodes, proposer, header, txs = _proposal(tmp_path)
    other = next(n for n in nodes if n is not proposer)
    before = (other.height, other.state_root, other.log_size, other.pending)
    body: list[Transaction | bytes] = [t.to_bytes() for t in txs]
    if change == "drop":
        body = body[:-1]
    elif change == "reorder":
        body = [body[1], body[0], *body[2:]]
    elif change == "extra":
        body = [*body, notes(1, start=5)[0].to_bytes()]
        header = _replace(header, tx_count=len(body))
    elif change == "foreign":  # a valid transaction the header does not cover
        body = [*body[:-1], notes(1, site=2)[0].to_bytes()]
    elif change == "forged-signature":
        stranger = notes(1, site=2)[0]
        forged = dataclasses.replace(stranger, signature=bytes(64))
        body = [*body[:-1], forged.to_bytes()]
    elif change == "malformed":
        body = [*body[:-1], b"\x00not a transaction"]
    elif change == "wrong-proposer":
        header = _replace(header, round=1)  # round 1 has another proposer
    elif change == "wrong-round":
        header = _replace(header, round=10_001)
    elif change == "wrong-prev":
        header = _replace(header, prev_hash=b"\x07" * 32)
    elif change == "wrong-state-root":
        header = _replace(header, state_root=b"\x07" * 32)
    elif change == "wrong-outcome-root":
        header = _replace(header, outcome_root=b"\x07" * 32)
    elif change == "time-backwards":
        run_height(nodes)  # height 1 at the clock's time
        for n in nodes:
            n.submit_many(notes(1, start=5))
        proposer = holder(nodes, nodes[0].proposer(0).to_bytes())
        header = _replace(proposer.propose(round=0), time_ms=0)
        other = next(n for n in nodes if n is not proposer)
        before = (other.height, other.state_root, other.log_size, other.pending)
        body = [t.to_bytes() for t in proposer.proposal[1]]
    elif change == "wrong-height":
        header = _replace(header, height=2)
    elif change == "wrong-chain":
        header = _replace(header, chain_id="another-chain")
    with pytest.raises(InvalidBlock) as info:
        other.accept_proposal(header, body)
    assert info.value.height == header.height
    assert (other.height, other.state_root, other.log_size, other.pending) == before
    # The replica still accepts the honest proposal afterwards.
    honest = proposer.propose()
    assert other.accept_proposal(honest, [t.to_bytes() for t in proposer.proposal[1]])


def test_a_certificate_must_hold_a_quorum_of_valid_votes(tmp_path) -> None:
    nodes, proposer, header, txs = _proposal(tmp_path)
    others = [n for n in nodes if n is not proposer]
    votes = {v.validator.to_bytes(): v for n in nodes for v in n.accept_proposal(header, txs)}
    weak = [v for k, v in votes.items() if k in (proposer.proposer(0).to_bytes(),)]  # 40 of 100
    with pytest.raises(InvalidVote, match="not more than 2/3"):
        others[0].commit(Certificate.from_votes(weak))
    forged = Certificate(tuple(sorted((k, bytes(64)) for k in votes)))
    with pytest.raises(InvalidVote, match="does not verify"):
        others[0].commit(forged)
    assert others[0].height == 0
    block = others[0].commit(Certificate.from_votes(list(votes.values())))
    assert block.height == 1
    with pytest.raises(InvalidVote, match="accept_proposal"):
        others[0].commit(Certificate.from_votes(list(votes.values())))


def test_catch_up_applies_finalized_blocks_and_refuses_bad_ones(tmp_path) -> None:
    nodes = replicas(tmp_path, 4)
    late = nodes.pop()  # misses everything
    v = validators()
    for n in nodes:
        n.submit_many(notes(9))
        n._max_block_txs = 3
    # Without the late replica's 10, the other three hold 90: still a quorum.
    while nodes[0].pending:
        run_height(nodes + [late], live=nodes)
    assert nodes[0].height == 3 and late.height == 0
    blocks = [nodes[0].block(h) for h in range(1, 4)]
    weak = dataclasses.replace(blocks[0], certificate=Certificate.from_votes([Vote.create(v[0], blocks[0].header)]))
    with pytest.raises(InvalidVote):
        late.apply_block(weak)
    wrong = dataclasses.replace(blocks[0], transactions=blocks[0].transactions[:-1])
    with pytest.raises(InvalidBlock):
        late.apply_block(wrong)
    with pytest.raises(InvalidBlock, match="not the next block"):
        late.apply_block(blocks[1])
    assert late.height == 0
    for b in blocks:
        late.apply_block(b)
    assert late.state_root == nodes[0].state_root and late.tree_head().header == nodes[0].tree_head().header
    late.verify()


def test_a_received_block_clears_the_mempool_of_what_it_holds_and_of_what_it_supersedes(tmp_path) -> None:
    nodes, proposer, header, txs = _proposal(tmp_path)
    other = nodes[3]  # the smallest stake: it proposes neither of the two heights here
    assert other is not proposer
    rival = Transaction.create(sites(3)[0], kind="note", payload={"rival": 1}, nonce=5, chain_id=CHAIN)
    follower = Transaction.create(sites(3)[0], kind="note", payload={"i": 6}, nonce=6, chain_id=CHAIN)
    other.submit_many([rival, follower])
    votes = [*proposer.accept_proposal(header, txs)]
    for n in nodes:
        if n is not proposer:
            votes += n.accept_proposal(header, txs)
    other.commit(Certificate.from_votes(votes))
    assert [t.id for t in other.pending] == [rival.id, follower.id]  # nonces 5 and 6 still apply
    # Another block takes nonce 5 with a different transaction: the rival and its follower go.
    for n in nodes:
        if n is not other:
            n.commit(Certificate.from_votes(votes))
    winner = notes(1, start=5)[0]
    p2 = holder(nodes, nodes[0].proposer(0).to_bytes())
    p2.submit(winner)
    h2 = p2.propose(round=0)
    assert [t.id for t in p2.proposal[1]] == [winner.id]
    v2 = [*p2.accept_proposal(h2, [winner])]
    for n in nodes:
        if n is not p2:
            v2 += n.accept_proposal(h2, [winner.to_bytes()])
    other.commit(Certificate.from_votes(v2))
    assert [t.id for t in other.pending] == [follower.id]  # nonce 6 follows the winner's 5
    assert [d.tx_id for d in other.dropped] == [rival.id]
    assert "taken by a finalized transaction" in other.dropped[0].reason
