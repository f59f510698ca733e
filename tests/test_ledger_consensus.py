"""Stake-weighted quorum, proposer rotation, equivocation and slashing, governance."""

from __future__ import annotations

import collections

import pytest
from ledger_helpers import CHAIN, identity, sites, validator_set, validators

from fedledger import Identity, Ledger, Transaction
from fedledger.errors import (
    InvalidGovernance,
    InvalidVote,
    QuorumNotReached,
    ReplayedTransaction,
    TamperedLedger,
    UnauthorizedSender,
)
from fedledger.ledger import BlockHeader, Evidence, GovernanceProposal, Vote


def make(
    local: list[Identity],
    stakes: list[int] | None = None,
    members: list[Identity] | None = None,
    vals: list[Identity] | None = None,
) -> Ledger:
    vals = validators() if vals is None else vals
    members = sites(2) if members is None else members
    return Ledger.memory(
        chain_id=CHAIN,
        validators=validator_set(vals, stakes),
        local_validators=local,
        members=[m.card() for m in members],
    )


def test_blocks_finalize_with_more_than_two_thirds_of_stake_only() -> None:
    v = validators()  # stakes 40, 30, 20, 10
    assert make([v[0], v[1]]).commit().height == 1  # 70 > 66.7
    assert make([v[0], v[2], v[3]]).commit().height == 1  # 70
    for local in ([v[0], v[2]], [v[1], v[2], v[3]], [v[0]], []):  # 60, 60, 40, 0
        ledger = make(local)
        with pytest.raises(QuorumNotReached, match="more than 2/3"):
            ledger.commit()
        assert ledger.height == 0


def test_exactly_two_thirds_is_not_a_quorum() -> None:
    v = validators()[:3]
    ledger = make(v[:2], stakes=[1, 1, 1], vals=v)
    with pytest.raises(QuorumNotReached):
        ledger.commit()
    header = ledger.propose()
    ledger.add_vote(Vote.create(v[2], header))
    assert ledger.commit().height == 1


def test_remote_votes_complete_a_quorum_and_outsiders_cannot_vote() -> None:
    v = validators()
    ledger = make([v[0], v[2]])  # 60: not enough alone
    header = ledger.propose()
    outsider = Identity.generate("validator-impostor")
    with pytest.raises(InvalidVote, match="not a validator"):
        ledger.add_vote(Vote.create(outsider, header))
    forged = Vote(header.chain_id, header.height, header.hash, v[3].verify_key, b"\x01" * 64)
    with pytest.raises(InvalidVote, match="does not verify"):
        ledger.add_vote(forged)
    other = BlockHeader(**{**header.__dict__, "time_ms": header.time_ms + 1})
    with pytest.raises(InvalidVote, match="another block"):
        ledger.add_vote(Vote.create(v[3], other))
    with pytest.raises(QuorumNotReached):
        ledger.commit()
    ledger.add_vote(Vote.from_bytes(Vote.create(v[3], header).to_bytes()))  # 70, over the wire
    block = ledger.commit()
    assert {k for k, _ in block.certificate.signatures} == {x.verify_key.to_bytes() for x in (v[0], v[2], v[3])}
    ledger.verify()


def test_proposers_rotate_in_proportion_to_stake() -> None:
    v = validators()
    ledger = make(v)
    counts: collections.Counter[bytes] = collections.Counter()
    for _ in range(100):
        counts[ledger.commit().header.proposer] += 1
    assert [counts[x.verify_key.to_bytes()] for x in v] == [40, 30, 20, 10]
    ledger.verify()


def _equivocation(ledger: Ledger, culprit: Identity) -> Evidence:
    header = ledger.propose()
    fake = BlockHeader(**{**header.__dict__, "tx_root": b"\x07" * 32})
    return Evidence(Vote.create(culprit, header), Vote.create(culprit, fake))


def test_equivocation_evidence_slashes_the_validator() -> None:
    v = validators()
    reporter = sites(1)[0]
    ledger = make(v, members=[reporter])
    evidence = _equivocation(ledger, v[1])
    ledger.abandon_proposal()
    tx = Transaction.create(reporter, kind="evidence", payload=evidence.to_value(), nonce=0, chain_id=CHAIN)
    ledger.submit(tx)
    before = ledger.validators
    ledger.commit()
    assert v[1].verify_key not in ledger.validators and ledger.validators.total == before.total - 30
    nxt = ledger.commit()
    assert nxt.header.validators_hash == ledger.validators.hash() != before.hash()
    assert v[1].verify_key.to_bytes() not in {k for k, _ in nxt.certificate.signatures}
    again = Transaction.create(reporter, kind="evidence", payload=evidence.to_value(), nonce=1, chain_id=CHAIN)
    result = ledger.submit_many([again])[0]
    assert not result.accepted and "no stake" in str(result.error)
    ledger.verify()


def test_bogus_evidence_is_rejected() -> None:
    v = validators()
    reporter = sites(1)[0]
    ledger = make(v, members=[reporter])
    header = ledger.propose()
    same = Evidence(Vote.create(v[1], header), Vote.create(v[1], header))
    two_people = Evidence(Vote.create(v[1], header), Vote.create(v[2], BlockHeader(**{**header.__dict__, "height": 9})))
    for ev in (same, two_people):
        tx = Transaction.create(reporter, kind="evidence", payload=ev.to_value(), nonce=0, chain_id=CHAIN)
        assert not ledger.submit_many([tx])[0].accepted


def _governance(
    ledger: Ledger,
    action: str,
    params: dict,
    approvers: list[Identity],
    sender: Identity,
    nonce: int,
    epoch: int | None = None,
) -> Transaction:
    proposal = GovernanceProposal(CHAIN, ledger.governance_epoch if epoch is None else epoch, action, params)
    payload = proposal.payload([proposal.approve(v) for v in approvers])
    return Transaction.create(sender, kind=action, payload=payload, nonce=nonce, chain_id=CHAIN)


def test_validator_set_changes_only_with_a_quorum_of_approvals() -> None:
    v = validators()
    admin = sites(1)[0]
    ledger = make(v, members=[admin])
    newcomer = identity("validator-new")
    stakes = [[x.verify_key.to_bytes(), s] for x, s in zip(v + [newcomer], [40, 30, 20, 10, 25])]
    weak = _governance(ledger, "gov.validators", {"stakes": stakes}, [v[0], v[2]], admin, 0)  # 60
    with pytest.raises(InvalidGovernance, match="not more than 2/3"):
        ledger.submit(weak)
    stale = _governance(ledger, "gov.validators", {"stakes": stakes}, v, admin, 0, epoch=5)
    with pytest.raises(InvalidGovernance, match="epoch"):
        ledger.submit(stale)
    good = _governance(ledger, "gov.validators", {"stakes": stakes}, [v[0], v[1]], admin, 0)
    ledger.submit(good)
    ledger.commit()
    assert newcomer.verify_key in ledger.validators and ledger.validators.total == 125
    # The same approvals cannot be replayed: the epoch moved on.
    replay = Transaction.create(admin, kind="gov.validators", payload=good.payload, nonce=1, chain_id=CHAIN)
    with pytest.raises(InvalidGovernance, match="epoch"):
        ledger.submit(replay)
    ledger.commit()
    ledger.verify()


def test_revoked_identity_cannot_transact_and_added_member_can() -> None:
    v = validators()
    admin, bad = sites(2)
    ledger = make(v, members=[admin, bad])
    ledger.submit(Transaction.create(bad, kind="note", payload=1, nonce=0, chain_id=CHAIN))
    ledger.submit(
        _governance(ledger, "gov.member.revoke", {"key": bad.verify_key.to_bytes(), "reason": "breach"}, v, admin, 0)
    )
    ledger.commit()
    assert ledger.is_revoked(bad.verify_key)
    with pytest.raises(UnauthorizedSender, match="revoked"):
        ledger.submit(Transaction.create(bad, kind="note", payload=2, nonce=1, chain_id=CHAIN))
    fresh = identity("hospital-new")
    with pytest.raises(UnauthorizedSender, match="not a member"):
        ledger.submit(Transaction.create(fresh, kind="note", payload=1, nonce=0, chain_id=CHAIN))
    ledger.submit(_governance(ledger, "gov.member.add", {"card": fresh.card().to_bytes()}, v, admin, 1))
    ledger.commit()
    ledger.submit(Transaction.create(fresh, kind="note", payload=1, nonce=0, chain_id=CHAIN))
    ledger.commit()
    ledger.verify()


def test_verify_catches_a_certificate_below_quorum(tmp_path) -> None:
    import sqlite3

    v = validators()
    path = tmp_path / "l.db"
    ledger = Ledger.open(path, chain_id=CHAIN, validators=validator_set(v), local_validators=v)
    ledger.commit()
    ledger.close()
    db = sqlite3.connect(path)
    (cert,) = db.execute("SELECT certificate FROM blocks WHERE height = 1").fetchone()
    from fedledger.ledger import Certificate

    weakened = Certificate(Certificate.from_bytes(cert).signatures[:1])
    db.execute("UPDATE blocks SET certificate = ? WHERE height = 1", (weakened.to_bytes(),))
    db.commit()
    db.close()
    with pytest.raises(TamperedLedger, match="height 1.*certificate"):
        Ledger.open(path)


def test_a_pending_transaction_that_no_longer_applies_is_dropped_with_its_followers() -> None:
    v = validators()
    admin, other = sites(2)
    ledger = make(v, members=[admin, other])
    a, b = identity("hospital-x"), identity("hospital-y")
    first = _governance(ledger, "gov.member.add", {"card": a.card().to_bytes()}, v, admin, 0)
    second = _governance(ledger, "gov.member.add", {"card": b.card().to_bytes()}, v, other, 0)  # same epoch
    follower = Transaction.create(other, kind="note", payload=1, nonce=1, chain_id=CHAIN)
    assert all(r.accepted for r in ledger.submit_many([first, second, follower]))
    block = ledger.commit()
    assert block.transactions == (first,)
    dropped = {r.tx_id: type(r.error) for r in ledger.dropped}
    assert dropped == {second.id: InvalidGovernance, follower.id: ReplayedTransaction}
    assert ledger.pending == () and ledger.next_nonce(other) == 0
    ledger.submit(Transaction.create(other, kind="note", payload=2, nonce=0, chain_id=CHAIN))
    ledger.commit()
    ledger.verify()


def test_state_copy_copies_every_field_and_shares_no_container() -> None:
    import dataclasses

    from fedledger.ledger.state import LedgerState

    v = validators()
    ledger = make(v)
    ledger.commit()
    state = ledger._state
    clone = state.copy()
    for f in dataclasses.fields(LedgerState):
        original, copied = getattr(state, f.name), getattr(clone, f.name)
        assert copied == original, f.name
        if isinstance(original, (dict, set, list)):
            assert copied is not original, f"{f.name} is shared between a state and its copy"
    clone.nonces[b"x" * 32] = 5
    clone.revoked.add(b"y" * 32)
    clone.kv.set(b"c/z/k", b"\x01")
    assert b"x" * 32 not in state.nonces and b"y" * 32 not in state.revoked
    assert state.kv.get(b"c/z/k") is None, "contract state is shared between a state and its copy"


def test_block_time_comes_from_the_clock_the_ledger_was_given() -> None:
    from fedledger.errors import InvalidArgument

    v = validators()
    now = [1_000]
    ledger = Ledger.memory(chain_id=CHAIN, validators=validator_set(v), local_validators=v, clock=lambda: now[0])
    assert ledger.commit().header.time_ms == 1_000
    now[0] = 500  # a clock that goes back never makes block time go backwards
    assert ledger.commit().header.time_ms == 1_000
    now[0] = 2_500
    assert ledger.commit().header.time_ms == 2_500
    ledger.verify()
    broken = Ledger.memory(chain_id=CHAIN, validators=validator_set(v), local_validators=v, clock=lambda: 1.5)  # type: ignore[arg-type,return-value]
    with pytest.raises(InvalidArgument, match="clock"):
        broken.commit()


def test_an_abandoned_proposal_is_followed_by_the_next_round_and_its_votes_are_not_evidence() -> None:
    """Rounds: after an abandoned proposal the next header is at (h, r + 1), from the next
    proposer in the schedule; an honest validator's votes for both are not equivocation, and
    the chain verifies."""
    from fedledger.errors import InvalidEvidence, TamperedLedger
    from fedledger.ledger import BlockHeader, Certificate, Evidence
    from fedledger.ledger.state import MAX_ROUND

    v = validators()
    ledger = make(v)
    first = ledger.propose()
    ledger.abandon_proposal()
    second = ledger.propose()
    assert (first.height, first.round, second.height, second.round) == (1, 0, 1, 1)
    schedule = ledger._state.copy()
    assert schedule.begin_block(1, 0, 0) == first.proposer
    schedule = ledger._state.copy()
    assert schedule.begin_block(1, 0, 1) == second.proposer and second.proposer != first.proposer
    with pytest.raises(InvalidEvidence, match="different heights or rounds"):
        Evidence(Vote.create(v[0], first), Vote.create(v[0], second)).check(CHAIN)
    block = ledger.commit()
    assert block.header.round == 1 and ledger.propose().round == 0  # the next height starts at round 0
    ledger.abandon_proposal()
    ledger.commit()
    ledger.verify()
    # A header that claims an impossible round is tampering.
    forged = BlockHeader(**{**block.header.__dict__, "round": MAX_ROUND + 1})
    cert = Certificate.from_votes([Vote.create(x, forged) for x in v])
    db = ledger._store._db  # type: ignore[attr-defined]
    db.execute(
        "UPDATE blocks SET hash = ?, header = ?, certificate = ? WHERE height = 1",
        (forged.hash, forged.to_bytes(), cert.to_bytes()),
    )
    with pytest.raises(TamperedLedger, match="past the highest round"):
        ledger.verify()
