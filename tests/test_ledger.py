"""The ledger as a user sees it: submit, commit, read, prove, audit; bad input is rejected by type."""

from __future__ import annotations

import json

import pytest
from ledger_helpers import CHAIN, sites, validator_set, validators
from reference import rfc9162 as ref

from fedledger import Identity, Ledger, Transaction, ValidatorSet, verify_receipt
from fedledger.crypto import merkle
from fedledger.errors import (
    FedLedgerError,
    InvalidReceipt,
    InvalidSignature,
    NotFound,
    OversizedPayload,
    ReplayedTransaction,
    UnauthorizedSender,
    UnknownKind,
    WrongChain,
)
from fedledger.ledger import MAX_PAYLOAD_BYTES, Receipt


@pytest.fixture
def vals() -> list[Identity]:
    return validators()


@pytest.fixture
def people() -> list[Identity]:
    return sites(3)


@pytest.fixture
def ledger(vals: list[Identity], people: list[Identity]) -> Ledger:
    return Ledger.memory(
        chain_id=CHAIN, validators=validator_set(vals), local_validators=vals, members=[p.card() for p in people]
    )


def note(who: Identity, nonce: int, payload: object = None, chain: str = CHAIN, kind: str = "note") -> Transaction:
    return Transaction.create(
        who, kind=kind, payload={"n": nonce} if payload is None else payload, nonce=nonce, chain_id=chain
    )


def test_the_issue_example_runs(tmp_path) -> None:
    vals = [Identity.generate(f"validator-{i}") for i in range(4)]
    site = Identity.generate("hospital-a")
    ledger = Ledger.open(
        tmp_path / "consortium.db",
        chain_id="demo",
        validators=ValidatorSet({v.verify_key: s for v, s in zip(vals, [40, 30, 20, 10])}),
        local_validators=vals,
        members=[site.card()],
    )
    tx = Transaction.create(site, kind="note", payload={"x": 1}, nonce=0, chain_id="demo")
    results = ledger.submit_many([tx])
    assert [r.accepted for r in results] == [True]
    block = ledger.commit()
    assert block.height == 1 and block.transactions == (tx,)
    assert verify_receipt(ledger.prove(tx.id), chain_id="demo", trusted_validators=ledger.genesis.validators) == tx
    ledger.verify()
    ledger.close()
    reopened = Ledger.open(tmp_path / "consortium.db")
    assert reopened.height == 1 and reopened.get(tx.id) == tx
    reopened.verify()


def test_submit_many_reports_each_item_and_the_rest_lands(ledger: Ledger, people: list[Identity]) -> None:
    a, b, c = people
    good0, good1 = note(a, 0), note(a, 1)
    forged = Transaction(
        good0.chain_id,
        good0.kind,
        b.verify_key,
        0,
        good0.payload,
        good0.signature,
        Transaction.body_for(CHAIN, "note", b.verify_key, 0, good0.payload),
    )
    outsider = Identity.generate("not-a-member")
    batch = [
        good0,
        good0,  # a duplicate: replayed
        forged,  # someone else's signature
        note(b, 0, kind="no.such.kind"),  # unknown kind
        note(b, 0, chain="another-chain"),  # wrong chain
        note(c, 5),  # not the sender's next nonce
        note(outsider, 0),  # not a member
        good1,
        note(b, 0),
    ]
    results = ledger.submit_many(batch)
    errors = [type(r.error) if r.error else None for r in results]
    assert errors == [
        None,
        ReplayedTransaction,
        InvalidSignature,
        UnknownKind,
        WrongChain,
        ReplayedTransaction,
        UnauthorizedSender,
        None,
        None,
    ]
    assert all(r.reason for r in results)
    assert "nonce 5" in str(results[5].error) and "next nonce (0)" in str(results[5].error)
    block = ledger.commit()
    assert [tx.id for tx in block.transactions] == [good0.id, good1.id, batch[-1].id]
    with pytest.raises(ReplayedTransaction):
        ledger.submit(good0)  # replay after commit
    assert ledger.next_nonce(a) == 2


def test_oversized_payload_is_rejected(ledger: Ledger, people: list[Identity]) -> None:
    with pytest.raises(OversizedPayload, match=str(MAX_PAYLOAD_BYTES)):
        note(people[0], 0, payload={"blob": b"x" * (MAX_PAYLOAD_BYTES + 1)})
    body = Transaction.body_for(CHAIN, "note", people[0].verify_key, 0, {"blob": b"x" * 100})
    assert len(body) < MAX_PAYLOAD_BYTES
    just_fits = note(people[0], 0, payload=b"x" * (MAX_PAYLOAD_BYTES - 8))
    ledger.submit(just_fits)


def test_transaction_wire_form_round_trips_and_id_ignores_signature(people: list[Identity]) -> None:
    tx = note(people[0], 3, payload={"k": [1, "two", b"3"]})
    again = Transaction.from_bytes(tx.to_bytes())
    assert again == tx and again.id == tx.id and again.payload == {"k": [1, "two", b"3"]}
    resigned = Transaction(tx.chain_id, tx.kind, tx.sender, tx.nonce, tx.payload, b"\x00" * 64, tx.body)
    assert resigned.id == tx.id and resigned != tx


def test_reading_blocks_and_transactions(ledger: Ledger, people: list[Identity]) -> None:
    a, b, _ = people
    ledger.submit_many([note(a, 0), note(b, 0), note(a, 1)])
    ledger.commit()
    ledger.submit(note(b, 1))
    ledger.commit()
    assert ledger.height == 2 and ledger.log_size == 4
    assert [t.nonce for t in ledger.transactions(sender=a.verify_key)] == [0, 1]
    assert len(list(ledger.transactions(kind="note"))) == 4
    assert ledger.block(2).transactions[0].sender == b.verify_key
    assert ledger.block(2).header.prev_hash == ledger.block(1).hash
    with pytest.raises(NotFound):
        ledger.block(3)
    with pytest.raises(NotFound):
        ledger.get(b"\x00" * 32)


def test_receipts_verify_offline_and_reject_tampering(ledger: Ledger, people: list[Identity], vals) -> None:
    txs = [note(p, n) for n in range(3) for p in people]
    ledger.submit_many(txs)
    ledger.commit()
    receipt = ledger.prove(txs[4].id)
    text = receipt.to_json()
    anchor = {"chain_id": CHAIN, "trusted_validators": validator_set(vals)}
    assert verify_receipt(text, **anchor) == txs[4]
    assert verify_receipt(receipt, **anchor) == txs[4]
    assert Receipt.from_json(text) == receipt
    with pytest.raises(InvalidReceipt, match="did not hand over"):
        verify_receipt(receipt, chain_id=CHAIN, trusted_validators=validator_set(vals, [1, 1, 1, 1]))
    tampered = []
    for key in ("transaction", "log_index", "inclusion_proof"):
        r = json.loads(text)
        if key == "transaction":
            r[key] = ledger.prove(txs[5].id).to_value()["transaction"]
        elif key == "log_index":
            r[key] = r[key] + 1
        else:
            r[key][0] = "00" * 32
        tampered.append(r)
    r = json.loads(text)
    cert = bytearray(bytes.fromhex(r["tree_head"]["certificate"]))
    cert[-1] ^= 1
    r["tree_head"]["certificate"] = cert.hex()
    tampered.append(r)
    for r in tampered:
        with pytest.raises(InvalidReceipt):
            verify_receipt(r, **anchor)
    with pytest.raises(InvalidReceipt):
        verify_receipt("not json", **anchor)


def test_random_proofs_verify_with_crypto_layer_and_reference(ledger: Ledger, people: list[Identity]) -> None:
    import random

    rnd = random.Random(5)
    nonces = {p.name: 0 for p in people}
    sizes = []
    for _ in range(6):
        batch = []
        for _ in range(rnd.randrange(1, 9)):
            p = rnd.choice(people)
            batch.append(note(p, nonces[p.name]))
            nonces[p.name] += 1
        assert all(r.accepted for r in ledger.submit_many(batch))
        ledger.commit()
        sizes.append(ledger.log_size)
    leaves = [t.to_bytes() for t in ledger.transactions()]
    head = ledger.tree_head()
    assert head.log_root == ref.mth(leaves)
    for tx_bytes in rnd.sample(leaves, 8):
        receipt = ledger.prove(Transaction.from_bytes(tx_bytes).id)
        proof = list(receipt.entry.inclusion_proof)
        index = receipt.entry.log_index
        merkle.verify_inclusion(tx_bytes, index, head.log_size, proof, head.log_root)
        assert ref.verify_inclusion(tx_bytes, index, head.log_size, proof, head.log_root)
    for old in sizes[:-1]:
        c = ledger.prove_consistency(old)
        proof = list(c.proof)
        old_root = c.old_root
        assert old_root == ref.mth(leaves[:old])
        merkle.verify_consistency(old, head.log_size, old_root, head.log_root, proof)
        assert ref.verify_consistency(old, head.log_size, old_root, head.log_root, proof)


def test_errors_are_typed(ledger: Ledger) -> None:
    for bad in (
        lambda: ledger.block("1"),
        lambda: ledger.get("x"),
        lambda: ledger.prove_consistency(-1),
        lambda: ledger.submit("tx"),
    ):
        with pytest.raises(FedLedgerError):
            bad()


from hypothesis import given  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

from fedledger import encoding  # noqa: E402
from fedledger.errors import MalformedTransaction  # noqa: E402
from fedledger.ledger.transaction import wire_frame, wire_split  # noqa: E402


@given(st.binary(max_size=70_000), st.binary(max_size=300))
def test_wire_framing_is_exactly_canonical_cbor(body: bytes, sig: bytes) -> None:
    framed = wire_frame(body, sig)
    assert framed == encoding.encode([body, sig])
    assert wire_split(framed) == (body, sig)


@given(st.binary(max_size=200))
def test_wire_split_rejects_everything_that_is_not_a_canonical_pair(data: bytes) -> None:
    try:
        value = encoding.decode(data)
    except FedLedgerError:
        value = None
    canonical_pair = isinstance(value, list) and len(value) == 2 and all(type(v) is bytes for v in value)
    try:
        wire_split(data)
        accepted = True
    except MalformedTransaction:
        accepted = False
    assert accepted == canonical_pair


def test_non_canonical_wire_heads_are_rejected() -> None:
    body, sig = b"b" * 5, b"s" * 64
    long_head = b"\x82\x58\x05" + body + b"\x58\x40" + sig  # 5 written in a 1-byte extension
    with pytest.raises(MalformedTransaction, match="canonical"):
        wire_split(long_head)
    with pytest.raises(MalformedTransaction, match="trailing"):
        wire_split(wire_frame(body, sig) + b"\x00")


def test_submit_accepts_wire_bytes_and_reports_malformed_ones(ledger: Ledger, people: list[Identity]) -> None:
    tx = note(people[0], 0)
    results = ledger.submit_many([tx.to_bytes(), b"\x82garbage", 42])  # type: ignore[list-item]
    assert results[0].accepted and results[0].tx_id == tx.id
    assert type(results[1].error) is MalformedTransaction
    assert isinstance(results[2].error, FedLedgerError) and "txs[2]" in str(results[2].error)
    assert ledger.commit().transactions == (tx,)
