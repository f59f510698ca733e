"""The ledger against an adversary and a crash: storage rows outside blocks, two writers, audits
that must not write, truncation, receipts without or with the wrong trust anchor, validator
hand-overs, and inputs that used to escape the FedLedgerError family."""

from __future__ import annotations

import json
import os
import sqlite3
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from ledger_helpers import CHAIN, identity, sites, validator_set, validators

import fedledger
from fedledger import encoding
from fedledger.errors import (
    FedLedgerError,
    InvalidArgument,
    InvalidGovernance,
    InvalidReceipt,
    InvalidTransaction,
    LedgerLocked,
    NotALedger,
    NotFound,
    ReadOnlyLedger,
    TamperedLedger,
)
from fedledger.identity import Identity
from fedledger.ledger import (
    BlockHeader,
    ConsistencyProof,
    Evidence,
    GovernanceProposal,
    Ledger,
    Outcome,
    Receipt,
    SignedTreeHead,
    Transaction,
    ValidatorSet,
    Vote,
    verify_consistency,
    verify_receipt,
)
from fedledger.ledger.state import KindHandler, register_kind  # built-in kinds only: their robustness

# The directory holding the fedledger under test (installed, or src/ of a built checkout).
SRC = str(Path(fedledger.__file__).resolve().parents[1])
ENV = {**os.environ, "PYTHONPATH": SRC}


def run_cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "fedledger", *args], capture_output=True, text=True, env=ENV, timeout=120
    )


def note(who: Identity, nonce: int, chain: str = CHAIN) -> Transaction:
    return Transaction.create(who, kind="note", payload={"n": nonce}, nonce=nonce, chain_id=chain)


def make_file(path: Path, blocks: int = 3, per_block: int = 2) -> list[Transaction]:
    vals, people = validators(), sites(2)
    txs: list[Transaction] = []
    with Ledger.open(
        path, chain_id=CHAIN, validators=validator_set(vals), local_validators=vals, members=[p.card() for p in people]
    ) as ledger:
        for b in range(blocks):
            batch = [note(p, b * per_block // 2 + i) for p in people for i in range(per_block // 2)]
            assert all(r.accepted for r in ledger.submit_many(batch))
            ledger.commit()
            txs += batch
    return txs


def anchor() -> dict[str, object]:
    return {"chain_id": CHAIN, "trusted_validators": validator_set()}


def file_state(path: Path) -> tuple[bytes, ...]:
    return tuple(Path(str(path) + s).read_bytes() if Path(str(path) + s).exists() else b"" for s in ("", "-wal"))


# -- rows outside certified blocks ------------------------------------------------------------


def _insert_orphan(path: Path, height: int, seq: int) -> Transaction:
    outsider = Identity.generate("not-a-member")
    tx = Transaction.create(outsider, kind="note", payload={"consent": "granted"}, nonce=0, chain_id=CHAIN)
    db = sqlite3.connect(path)
    db.execute(
        "INSERT INTO txs(seq, height, id, kind, sender, nonce, data, outcome) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
        (seq, height, tx.id, tx.kind, tx.sender.to_bytes(), 0, tx.to_bytes(), Outcome(tx.id, True).to_bytes()),
    )
    db.commit()
    db.close()
    return tx


@pytest.mark.parametrize("height, seq", [(99, 1000), (2, 1000), (0, -1), (3, 6)])
def test_rows_outside_certified_blocks_fail_the_audit(tmp_path: Path, height: int, seq: int) -> None:
    path = tmp_path / "l.db"
    make_file(path)
    _insert_orphan(path, height, seq)
    why = "outside every certified block|its header says"
    with pytest.raises(TamperedLedger, match=why):
        Ledger.open(path, read_only=True)
    out = run_cli("ledger", "verify", str(path))
    assert out.returncode == 1 and "tampered" in out.stderr


def test_reads_serve_only_what_a_certified_block_covers(tmp_path: Path) -> None:
    path = tmp_path / "l.db"
    make_file(path)
    with Ledger.open(path, read_only=True) as reader:  # opened before the row appears
        forged = _insert_orphan(path, 99, 1000)
        with pytest.raises(NotFound):
            reader.get(forged.id)
        with pytest.raises(NotFound):
            reader.prove(forged.id)
        assert forged.id not in {t.id for t in reader.transactions()}
        with pytest.raises(NotFound):
            reader.block(99)


def test_every_table_and_meta_record_is_accounted_for(tmp_path: Path) -> None:
    path = tmp_path / "l.db"
    make_file(path)
    db = sqlite3.connect(path)
    db.execute("INSERT INTO meta(key, value) VALUES ('policy', x'00')")
    db.commit()
    db.close()
    with pytest.raises(TamperedLedger, match="unexpected meta"):
        Ledger.open(path, read_only=True)
    db = sqlite3.connect(path)
    db.execute("DELETE FROM meta WHERE key = 'policy'")
    db.execute("CREATE TABLE shadow(x)")
    db.commit()
    db.close()
    with pytest.raises(TamperedLedger, match="unexpected shadow"):
        Ledger.open(path, read_only=True)


# -- one writer, audits that never write --------------------------------------------------------


def test_a_second_writer_gets_a_typed_error_and_readers_still_work(tmp_path: Path) -> None:
    path = tmp_path / "l.db"
    make_file(path, blocks=1)
    vals = validators()
    with Ledger.open(path, local_validators=vals) as writer:
        with pytest.raises(LedgerLocked):
            Ledger.open(path)
        child = subprocess.run(
            [
                sys.executable,
                "-c",
                textwrap.dedent(f"""
            from fedledger.ledger import Ledger
            from fedledger.errors import LedgerLocked
            try:
                Ledger.open({str(path)!r})
            except LedgerLocked:
                print("locked")
            with Ledger.open({str(path)!r}, read_only=True) as r:
                print(r.height)
        """),
            ],
            capture_output=True,
            text=True,
            env=ENV,
            timeout=60,
        )
        assert child.stdout.split() == ["locked", "1"], child.stderr
        writer.submit(note(sites(2)[0], 1))
        writer.commit()
        with Ledger.open(path, read_only=True) as reader:
            assert reader.height == 2
            with pytest.raises(ReadOnlyLedger):
                reader.submit(note(sites(2)[1], 1))
            with pytest.raises(ReadOnlyLedger):
                reader.commit()
    with Ledger.open(path) as again:  # the lock went with the writer
        assert again.height == 2


def test_the_audit_changes_nothing_in_the_file(tmp_path: Path) -> None:
    path = tmp_path / "l.db"
    make_file(path)
    with Ledger.open(path, local_validators=validators()) as writer:  # a live writer keeps a non-empty WAL
        writer.submit(note(sites(2)[0], 3))
        writer.commit()
        before = file_state(path)
        assert before[1], "the WAL should hold the last block"
        assert run_cli("ledger", "verify", str(path)).returncode == 0
        with Ledger.open(path, read_only=True) as audit:
            audit.verify()
        assert file_state(path) == before
    empty = tmp_path / "empty.db"
    empty.touch()
    out = run_cli("ledger", "verify", str(empty))
    assert out.returncode == 2 and "not a ledger" in out.stderr
    assert empty.read_bytes() == b"" and not Path(str(empty) + "-wal").exists()
    with pytest.raises(NotALedger):
        Ledger.open(empty, read_only=True)
    junk = tmp_path / "junk.db"
    junk.write_bytes(b"definitely not sqlite" * 100)
    assert run_cli("ledger", "verify", str(junk)).returncode == 2
    db = sqlite3.connect(path)
    db.execute("DROP TABLE blocks")
    db.commit()
    db.close()
    before = file_state(path)
    out = run_cli("ledger", "verify", str(path))
    assert out.returncode == 1 and "blocks missing" in out.stderr
    assert file_state(path) == before
    names = {r[0] for r in sqlite3.connect(path).execute("SELECT name FROM sqlite_master")}
    assert "blocks" not in names


# -- truncation and a head kept elsewhere -------------------------------------------------------


def _truncate(path: Path, height: int) -> None:
    db = sqlite3.connect(path)
    db.execute("DELETE FROM txs WHERE height > ?", (height,))
    db.execute("DELETE FROM blocks WHERE height > ?", (height,))
    db.commit()
    db.close()


def test_truncation_is_caught_against_a_head_kept_elsewhere(tmp_path: Path) -> None:
    path = tmp_path / "l.db"
    make_file(path, blocks=4)
    head_file = tmp_path / "head.json"
    out = run_cli("ledger", "head", str(path))
    assert out.returncode == 0
    head_file.write_text(out.stdout)
    kept = SignedTreeHead.from_json(out.stdout)
    assert kept.height == 4 and kept.log_size == 8
    assert run_cli("ledger", "verify", str(path), "--head", str(head_file)).returncode == 0
    _truncate(path, 2)
    assert run_cli("ledger", "verify", str(path)).returncode == 0  # consistent in itself
    out = run_cli("ledger", "verify", str(path), "--head", str(head_file))
    assert out.returncode == 1 and "cut off" in out.stderr
    with Ledger.open(path, read_only=True) as ledger:
        with pytest.raises(TamperedLedger, match="cut off"):
            ledger.verify(head=kept)


def test_a_rewritten_history_is_caught_against_a_head_kept_elsewhere(tmp_path: Path) -> None:
    path = tmp_path / "l.db"
    make_file(path, blocks=2)
    with Ledger.open(path, read_only=True) as ledger:
        kept = ledger.tree_head()
    _truncate(path, 1)
    vals, people = validators(), sites(2)
    with Ledger.open(path, local_validators=vals) as ledger:  # a different block 2, same validators
        ledger.submit(Transaction.create(people[0], kind="note", payload="other", nonce=1, chain_id=CHAIN))
        ledger.commit()
        ledger.commit()
        with pytest.raises(TamperedLedger, match="history rewritten"):
            ledger.verify(head=kept)


def test_consistency_proofs_have_an_offline_checker(tmp_path: Path) -> None:
    path = tmp_path / "l.db"
    make_file(path, blocks=2)
    with Ledger.open(path, read_only=True) as ledger:
        old = ledger.tree_head()
    vals, people = validators(), sites(2)
    with Ledger.open(path, local_validators=vals) as ledger:
        ledger.submit_many([note(p, 2) for p in people])
        ledger.commit()
        proof = ledger.prove_consistency(old.log_size)
    text = proof.to_json()
    assert ConsistencyProof.from_json(text) == proof
    new = verify_consistency(text, old_head=old, **anchor())  # type: ignore[arg-type]
    assert new.height == 3 and new.log_size == 6
    with pytest.raises(InvalidReceipt, match="head you kept"):
        verify_consistency(text, old_head=new, **anchor())  # type: ignore[arg-type]
    bad = json.loads(text)
    bad["old_root"] = "00" * 32
    with pytest.raises(InvalidReceipt):
        verify_consistency(bad, **anchor())  # type: ignore[arg-type]
    bad = json.loads(text)
    bad["proof"][0] = "11" * 32
    with pytest.raises(InvalidReceipt):
        verify_consistency(bad, **anchor())  # type: ignore[arg-type]
    with pytest.raises(InvalidArgument):
        verify_consistency(text)


# -- receipts need a trust anchor ---------------------------------------------------------------


def _ledger(chain: str, vals: list[Identity], people: list[Identity]) -> Ledger:
    return Ledger.memory(
        chain_id=chain, validators=validator_set(vals), local_validators=vals, members=[p.card() for p in people]
    )


def test_receipts_without_a_trust_anchor_are_refused(tmp_path: Path) -> None:
    vals, people = validators(), sites(1)
    ledger = _ledger(CHAIN, vals, people)
    tx = note(people[0], 0)
    ledger.submit(tx)
    ledger.commit()
    receipt = ledger.prove(tx.id)
    with pytest.raises(InvalidArgument, match="trust anchor"):
        verify_receipt(receipt)
    with pytest.raises(InvalidArgument, match="trust anchor"):
        verify_receipt(receipt, trusted_validators=validator_set(vals))
    path = tmp_path / "r.json"
    path.write_text(receipt.to_json())
    out = run_cli("receipt", "verify", str(path))
    assert out.returncode == 2 and "trust anchor" in out.stderr


def test_receipts_from_a_forged_chain_or_another_chain_fail() -> None:
    people = sites(1)
    forgers = [identity(f"forger-{i}") for i in range(4)]
    forged = _ledger(CHAIN, forgers, people)  # same chain id, the forger's own validators
    tx = note(people[0], 0)
    forged.submit(tx)
    forged.commit()
    with pytest.raises(InvalidReceipt, match="did not hand over"):
        verify_receipt(forged.prove(tx.id), **anchor())  # type: ignore[arg-type]
    other = _ledger("another-chain", validators(), people)  # same validators, another chain
    tx2 = note(people[0], 0, chain="another-chain")
    other.submit(tx2)
    other.commit()
    with pytest.raises(InvalidReceipt, match="another-chain"):
        verify_receipt(other.prove(tx2.id), **anchor())  # type: ignore[arg-type]
    doctored = other.prove(tx2.id).to_value()
    doctored["chain_id"] = CHAIN  # relabelled: the signed header still names its chain
    with pytest.raises(InvalidReceipt, match="another-chain"):
        verify_receipt(doctored, **anchor())  # type: ignore[arg-type]


def _hand_over(ledger: Ledger, approvers: list[Identity], new: ValidatorSet, admin: Identity) -> None:
    proposal = GovernanceProposal(CHAIN, ledger.governance_epoch, "gov.validators", {"stakes": new.to_value()})  # type: ignore[dict-item]
    payload = proposal.payload([proposal.approve(v) for v in approvers])
    ledger.submit(
        Transaction.create(
            admin, kind="gov.validators", payload=payload, nonce=ledger.next_nonce(admin), chain_id=CHAIN
        )
    )
    ledger.commit()


def test_receipts_follow_validator_hand_overs_from_the_trusted_set() -> None:
    old_vals, new_vals = validators(), [identity(f"new-validator-{i}") for i in range(3)]
    admin, site = sites(2)
    ledger = Ledger.memory(
        chain_id=CHAIN,
        validators=validator_set(old_vals),
        local_validators=old_vals + new_vals,
        members=[admin.card(), site.card()],
    )
    new_set = ValidatorSet({v.verify_key: 10 for v in new_vals})
    _hand_over(ledger, old_vals, new_set, admin)
    # The evidence of an equivocation by a new validator slashes it: a change without approvals.
    header = ledger.propose()
    fake = BlockHeader(**{**header.__dict__, "tx_root": b"\x07" * 32})
    ledger.abandon_proposal()
    evidence = Evidence(Vote.create(new_vals[2], header), Vote.create(new_vals[2], fake))
    ledger.submit(Transaction.create(site, kind="evidence", payload=evidence.to_value(), nonce=0, chain_id=CHAIN))
    ledger.commit()
    tx = note(site, 1)
    ledger.submit(tx)
    ledger.commit()
    slashed = new_set.with_stake(new_vals[2].verify_key, 0)
    assert ledger.validators == slashed
    receipt = ledger.prove(tx.id)
    assert [c.entry.parse("c").kind for c in receipt.validator_changes] == ["gov.validators", "evidence"]
    assert verify_receipt(receipt.to_json(), **anchor()) == tx  # type: ignore[arg-type]
    assert verify_receipt(receipt, chain_id=CHAIN, trusted_validators=new_set) == tx
    since = ledger.prove(tx.id, since=slashed)
    assert since.validator_changes == ()
    assert verify_receipt(since, chain_id=CHAIN, trusted_validators=slashed) == tx
    with pytest.raises(InvalidReceipt, match="did not hand over"):
        verify_receipt(since, **anchor())  # type: ignore[arg-type]
    for drop in (0, 1):
        value = receipt.to_value()
        del value["validator_changes"][drop]
        with pytest.raises(InvalidReceipt):
            verify_receipt(value, **anchor())  # type: ignore[arg-type]
    value = receipt.to_value()
    value["validator_changes"].reverse()
    with pytest.raises(InvalidReceipt, match="log order"):
        verify_receipt(value, **anchor())  # type: ignore[arg-type]
    value = receipt.to_value()
    value["validator_changes"][0]["log_index"] += 1
    with pytest.raises(InvalidReceipt, match="not in the certified log|outside the log"):
        verify_receipt(value, **anchor())  # type: ignore[arg-type]
    with pytest.raises(InvalidArgument, match="never in force"):
        ledger.prove(tx.id, since=validator_set(old_vals, [1, 2, 3, 4]))
    assert Receipt.from_json(receipt.to_json()) == receipt
    value = receipt.to_value()
    value["outcomes"] = [{"contract": "x"}]
    with pytest.raises(InvalidReceipt, match="outcomes"):
        Receipt.from_json(value)


# -- inputs that used to escape the FedLedgerError family --------------------------------------


@pytest.mark.parametrize("depth", [10_000, 200_000])
def test_deeply_nested_receipts_are_invalid_receipts(tmp_path: Path, depth: int) -> None:
    text = "[" * depth + "]" * depth
    with pytest.raises(InvalidReceipt):
        verify_receipt(text, **anchor())  # type: ignore[arg-type]
    nested_object = '{"type": ' + "[" * depth + "]" * depth + "}"
    with pytest.raises(InvalidReceipt):
        verify_receipt(nested_object, **anchor())  # type: ignore[arg-type]
    path = tmp_path / "deep.json"
    path.write_text(text)
    vals = tmp_path / "vals.json"
    vals.write_text(
        json.dumps({"chain_id": CHAIN, "validators": [[k.hex(), s] for k, s in validator_set().to_value()]})
    )
    out = run_cli("receipt", "verify", str(path), "--validators", str(vals))
    assert out.returncode == 1 and "Traceback" not in out.stderr


def _rewrite_genesis(path: Path, validators_value: object) -> None:
    db = sqlite3.connect(path)
    (raw,) = db.execute("SELECT value FROM meta WHERE key = 'genesis'").fetchone()
    value = encoding.decode(raw)
    value["validators"] = validators_value  # type: ignore[index]
    db.execute("UPDATE meta SET value = ? WHERE key = 'genesis'", (encoding.encode(value),))  # type: ignore[arg-type]
    db.commit()
    db.close()


@pytest.mark.parametrize(
    "bad",
    [
        [[10**12, 5]],  # a huge int where the key goes (bytes(n) would allocate n bytes)
        [["text key", 5]],  # text where the key goes
        [[b"k" * 32, -1]],  # negative stake
        [[b"k" * 32, 2**60]],  # stake out of range
        [[b"\x00" * 32, 5]],  # a small-order key
        [[b"k" * 31, 5]],  # a short key
        [[b"k" * 32, "5"]],  # text stake
        [b"k" * 32],  # not a pair
        {"k": 5},  # not a list
        [],  # nobody
    ],
)
def test_a_corrupt_genesis_record_is_tampering_not_a_crash(tmp_path: Path, bad: object) -> None:
    path = tmp_path / "l.db"
    make_file(path, blocks=1)
    _rewrite_genesis(path, bad)
    with pytest.raises(TamperedLedger, match="genesis"):
        Ledger.open(path, read_only=True)
    out = run_cli("ledger", "verify", str(path))
    assert out.returncode == 1 and "genesis" in out.stderr and "Traceback" not in out.stderr


def test_a_bad_governance_item_never_sinks_the_rest_of_a_batch() -> None:
    vals, (admin, site) = validators(), sites(2)
    ledger = _ledger(CHAIN, vals, [admin, site])
    results = []
    for stakes in ([["text key", 10]], [[10**12, 10]], [[b"\x01" * 32, 2**60]], "nobody"):
        proposal = GovernanceProposal(CHAIN, 0, "gov.validators", {"stakes": stakes})  # type: ignore[dict-item]
        payload = proposal.payload([proposal.approve(v) for v in vals])
        bad = Transaction.create(admin, kind="gov.validators", payload=payload, nonce=0, chain_id=CHAIN)
        good = note(site, ledger.next_nonce(site))
        results = ledger.submit_many([bad, good])
        assert type(results[0].error) is InvalidGovernance and results[1].accepted
    assert len(ledger.commit().transactions) == 4


_BOOM = "hardening.raises-in-check"
_HALF = "hardening.raises-in-apply"


def _raise_value_error(state: object, tx: Transaction) -> None:
    raise ValueError("a bug in a kind's own code")


def _half_apply(state: object, tx: Transaction) -> None:
    state.nonces[b"\x01" * 32] = 99  # type: ignore[attr-defined]  # a change, then a crash
    raise KeyError("missing")


register_kind(_BOOM, KindHandler(_raise_value_error, _raise_value_error))
register_kind(_HALF, KindHandler(lambda state, tx: None, _half_apply))


def test_a_kind_whose_code_raises_rejects_only_its_own_transaction() -> None:
    vals, (a, b) = validators(), sites(2)
    ledger = _ledger(CHAIN, vals, [a, b])
    boom = Transaction.create(a, kind=_BOOM, payload=None, nonce=0, chain_id=CHAIN)
    results = ledger.submit_many([boom, note(b, 0)])
    assert type(results[0].error) is InvalidTransaction and "ValueError" in str(results[0].error)
    assert results[1].accepted
    half = Transaction.create(a, kind=_HALF, payload=None, nonce=0, chain_id=CHAIN)
    assert ledger.submit_many([half, note(b, 1)])[0].accepted  # its check passes; apply fails in the block
    block = ledger.commit()
    assert [t.nonce for t in block.transactions] == [0, 1] and all(t.sender == b.verify_key for t in block.transactions)
    assert [type(d.error) for d in ledger.dropped] == [InvalidTransaction]
    assert b"\x01" * 32 not in ledger._state.nonces  # the half-applied change did not survive
    ledger.verify()


@pytest.mark.parametrize(
    "content",
    [
        "42",
        '"validators"',
        '{"no": "validators"}',
        "[[1, 2]]",
        '["ab"]',
        '[["zz", 1]]',
        '{"validators": [["00", 1]]}',
        "not json",
    ],
)
def test_cli_validators_file_that_is_not_a_validator_set_is_bad_input(tmp_path: Path, content: str) -> None:
    receipt = tmp_path / "r.json"
    receipt.write_text("{}")
    vals = tmp_path / "vals.json"
    vals.write_text(content)
    out = run_cli("receipt", "verify", str(receipt), "--validators", str(vals), "--chain-id", CHAIN)
    assert out.returncode == 2 and "--validators" in out.stderr and "Traceback" not in out.stderr


def test_cli_accepts_what_ledger_show_and_ledger_genesis_print(tmp_path: Path) -> None:
    path = tmp_path / "l.db"
    txs = make_file(path, blocks=1)
    receipt = tmp_path / "r.json"
    receipt.write_text(run_cli("ledger", "prove", str(path), txs[0].id.hex()).stdout)
    show = tmp_path / "show.json"
    show.write_text(run_cli("ledger", "show", str(path)).stdout)
    genesis = tmp_path / "genesis.json"
    genesis.write_text(run_cli("ledger", "genesis", str(path)).stdout)
    for flag, file in (("--validators", show), ("--genesis", genesis)):
        out = run_cli("receipt", "verify", str(receipt), flag, str(file))
        assert out.returncode == 0 and txs[0].id.hex() in out.stdout, out.stderr
    bare = tmp_path / "bare.json"
    bare.write_text(json.dumps(json.loads(show.read_text())["validators"]))
    assert run_cli("receipt", "verify", str(receipt), "--validators", str(bare)).returncode == 2
    assert run_cli("receipt", "verify", str(receipt), "--validators", str(bare), "--chain-id", CHAIN).returncode == 0
    out = run_cli("receipt", "verify", str(receipt), "--validators", str(bare), "--chain-id", "other")
    assert out.returncode == 1 and "other" in out.stderr
    assert run_cli("receipt", "verify", str(tmp_path / "missing.json"), "--genesis", str(genesis)).returncode == 3
    binary = tmp_path / "bin.json"
    binary.write_bytes(bytes(range(256)))
    out = run_cli("receipt", "verify", str(binary), "--genesis", str(genesis))
    assert out.returncode == 1 and "UTF-8" in out.stderr


def test_only_fedledger_errors_escape_the_receipt_and_head_parsers() -> None:
    vals, people = validators(), sites(1)
    ledger = _ledger(CHAIN, vals, people)
    tx = note(people[0], 0)
    ledger.submit(tx)
    ledger.commit()
    good = ledger.prove(tx.id).to_value()
    head = json.loads(ledger.tree_head().to_json())
    junk: list[object] = [
        None,
        1,
        -1,
        2**70,
        1.5,
        "x",
        "zz",
        "00" * 40,
        [],
        {},
        [[]],
        {"a": 1},
        True,
        "[" * 50,
        b"\xff",
    ]
    for doc, parse in (
        (good, lambda d: verify_receipt(d, **anchor())),  # type: ignore[arg-type]
        (head, SignedTreeHead.from_json),
    ):
        for key in list(doc):
            for value in junk:
                if value == doc[key]:
                    continue
                mutated = dict(doc)
                mutated[key] = value
                with pytest.raises(FedLedgerError):
                    parse(json.loads(json.dumps(mutated, default=lambda b: b.hex())))
        for key in list(doc):
            mutated = dict(doc)
            del mutated[key]
            with pytest.raises(FedLedgerError):
                parse(mutated)
    text = ledger.prove(tx.id).to_json().encode()
    for cut in range(0, len(text), 97):
        with pytest.raises(FedLedgerError):
            verify_receipt(text[:cut], **anchor())  # type: ignore[arg-type]
    assert verify_receipt(text, **anchor()) == tx  # type: ignore[arg-type]


# -- property-based: proof documents, genesis JSON and CLI input files ---------------------------

from hypothesis import HealthCheck, given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

from fedledger.ledger import Genesis  # noqa: E402

_json_leaf = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(2**80), max_value=2**80),
    st.floats(allow_nan=False),
    st.text(max_size=70),
    st.sampled_from(["00" * 32, "zz", "ab"]),
)
_json = st.recursive(
    _json_leaf,
    lambda inner: st.one_of(st.lists(inner, max_size=4), st.dictionaries(st.text(max_size=8), inner, max_size=4)),
    max_leaves=12,
)


def _documents() -> dict[str, object]:
    """One genuine document of each proof kind, made once (hypothesis re-runs the tests)."""
    if not _DOCS:
        vals, people = validators(), sites(1)
        ledger = _ledger(CHAIN, vals, people)
        for n in range(3):
            ledger.submit(note(people[0], n))
            ledger.commit()
        _DOCS.update(
            receipt=ledger.prove(note(people[0], 1).id).to_value(),
            head=json.loads(ledger.tree_head().to_json()),
            consistency=ledger.prove_consistency(1).to_value(),
            genesis=json.loads(ledger.genesis.to_json()),
        )
    return _DOCS


_DOCS: dict[str, object] = {}
_PARSERS = {
    "receipt": lambda d: verify_receipt(d, **anchor()),  # type: ignore[arg-type]
    "head": SignedTreeHead.from_json,
    "consistency": lambda d: verify_consistency(d, **anchor()),  # type: ignore[arg-type]
    "genesis": lambda d: Genesis.from_json(json.dumps(d)),
}


def _replace(doc: object, path: list[int], value: object) -> object:
    """``doc`` with the node that ``path`` picks (indices taken modulo each level's size) replaced."""
    if not path or not isinstance(doc, (dict, list)) or not doc:
        return value
    if isinstance(doc, dict):
        key = sorted(doc)[path[0] % len(doc)]
        return {**doc, key: _replace(doc[key], path[1:], value)}
    i = path[0] % len(doc)
    return doc[:i] + [_replace(doc[i], path[1:], value)] + doc[i + 1 :]


@settings(max_examples=80, suppress_health_check=[HealthCheck.too_slow])
@given(st.sampled_from(sorted(_PARSERS)), st.lists(st.integers(0, 50), max_size=5), _json)
def test_proof_documents_with_any_field_replaced_raise_only_our_errors(
    kind: str, path: list[int], value: object
) -> None:
    doc = _documents()[kind]
    mutated = _replace(doc, path, value)
    try:
        _PARSERS[kind](mutated)
    except FedLedgerError:
        return
    assert mutated == doc or json.dumps(mutated, sort_keys=True) == json.dumps(doc, sort_keys=True), (
        "a changed document was accepted"
    )


@settings(max_examples=60, suppress_health_check=[HealthCheck.too_slow])
@given(st.sampled_from(sorted(_PARSERS)), st.data())
def test_proof_documents_truncated_or_bit_flipped_raise_only_our_errors(kind: str, data: st.DataObject) -> None:
    text = json.dumps(_documents()[kind]).encode()
    cut = data.draw(st.integers(0, len(text) - 1))
    flip = data.draw(st.integers(0, len(text) * 8 - 1))
    flipped = bytearray(text)
    flipped[flip // 8] ^= 1 << (flip % 8)
    for candidate in (text[:cut], bytes(flipped)):
        try:
            parse = _PARSERS[kind]
            parse(candidate if kind != "genesis" else json.loads(candidate))  # type: ignore[operator]
        except FedLedgerError:
            continue
        except ValueError:
            assert kind == "genesis"  # the test's own json.loads of a broken genesis text
            with pytest.raises(FedLedgerError):
                Genesis.from_json(candidate)


@settings(
    max_examples=12, deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture]
)
@given(
    st.sampled_from(["receipt", "validators", "genesis", "head"]),
    st.one_of(st.binary(max_size=200), _json.map(lambda v: json.dumps(v).encode())),
)
def test_cli_input_files_never_crash(tmp_path: Path, which: str, content: bytes) -> None:
    path = tmp_path / "ledger.db"
    if not path.exists():
        make_file(path, blocks=1)
    good_receipt, show = tmp_path / "good.json", tmp_path / "show.json"
    if not good_receipt.exists():
        good_receipt.write_text(run_cli("ledger", "prove", str(path), note(sites(2)[0], 0).id.hex()).stdout)
        show.write_text(run_cli("ledger", "show", str(path)).stdout)
    bad = tmp_path / "input"
    bad.write_bytes(content)
    if which == "head":
        out = run_cli("ledger", "verify", str(path), "--head", str(bad))
    elif which == "receipt":
        out = run_cli("receipt", "verify", str(bad), "--validators", str(show))
    else:
        out = run_cli("receipt", "verify", str(good_receipt), f"--{which}", str(bad), "--chain-id", CHAIN)
    assert out.returncode in (1, 2, 3), out.stdout
    assert "Traceback" not in out.stderr and out.stderr.startswith("fedledger: ")


def test_a_ledger_path_that_cannot_be_opened_is_a_typed_error(tmp_path: Path) -> None:
    vals = validators()
    with pytest.raises(NotFound, match="directory does not exist"):
        Ledger.open(tmp_path / "missing" / "l.db", chain_id=CHAIN, validators=validator_set(vals))
    with pytest.raises(InvalidArgument, match="is a directory"):
        Ledger.open(tmp_path, chain_id=CHAIN, validators=validator_set(vals))
    with pytest.raises(NotFound):
        Ledger.open(tmp_path / "missing.db", read_only=True)


# -- forged hand-overs: each change must sit in a block the set before it certified --------------


def _forge(
    changes: list[Transaction],
    note_tx: Transaction,
    final: ValidatorSet,
    signer: Identity,
    change_block_set: ValidatorSet,
) -> Receipt:
    """A forger's receipt: its changes in block 1 (naming ``change_block_set``, signed by
    ``signer`` alone), the note in block 2 (naming ``final``), both certified by ``signer``."""
    from fedledger.crypto import merkle
    from fedledger.ledger import Certificate, LogEntry, ValidatorChange

    log = [t.to_bytes() for t in changes] + [note_tx.to_bytes()]
    tree = merkle.MerkleTree(log)
    n = len(changes)

    def head(height: int, size: int, named: ValidatorSet) -> SignedTreeHead:
        header = BlockHeader(
            CHAIN,
            height,
            b"\0" * 32,
            merkle.root(log[:size]),
            size,
            size,
            tree.root_at(size),
            named.hash(),
            signer.verify_key.to_bytes(),
            0,
            b"\0" * 32,
            b"\0" * 32,
        )
        return SignedTreeHead(header, Certificate.from_votes([Vote.create(signer, header)]))

    block1 = head(1, n, change_block_set)
    final_head = head(2, n + 1, final)
    entries = tuple(ValidatorChange(LogEntry(log[i], i, tuple(tree.inclusion_proof(i, n))), block1) for i in range(n))
    return Receipt(CHAIN, LogEntry(log[n], n, tuple(tree.inclusion_proof(n, n + 1))), final_head, entries)


def _honest_double_votes() -> tuple[dict[bytes, Vote], list[Vote]]:
    """Votes that validators cast for two headers at one (height, round): what a malicious
    proposer that sends two headers gets from validators signing whatever they are sent. (A
    ledger's own validators refuse: an abandoned proposal moves to the next round.)"""
    vals = validators()
    real = Ledger.memory(chain_id=CHAIN, validators=validator_set(vals), local_validators=[], members=[])
    first = real.propose()
    second = BlockHeader(**{**first.__dict__, "time_ms": first.time_ms + 1})
    assert (second.height, second.round) == (first.height, first.round) and second.hash != first.hash
    votes1 = {v.verify_key.to_bytes(): Vote.create(v, first) for v in vals}
    return votes1, [Vote.create(v, second) for v in vals]


@pytest.mark.parametrize("block_names", ["trusted", "attacker"])
def test_slashing_evidence_in_a_block_the_trusted_set_did_not_certify_hands_nothing_over(block_names: str) -> None:
    vals = validators()
    trusted, attacker = validator_set(vals), vals[3]  # the attacker holds 10 of 100 stake
    votes1, votes2 = _honest_double_votes()
    spam = identity("random-outsider")
    evidence = [
        Transaction.create(
            spam,
            kind="evidence",
            nonce=i,
            chain_id=CHAIN,
            payload=Evidence(votes1[v.verify_key.to_bytes()], votes2[i]).to_value(),
        )
        for i, v in enumerate(vals[:3])
    ]
    forged_note = Transaction.create(spam, kind="note", payload="consent to everything", nonce=9, chain_id=CHAIN)
    final = ValidatorSet({attacker.verify_key: 10})
    named = trusted if block_names == "trusted" else final
    with pytest.raises(InvalidReceipt):
        verify_receipt(_forge(evidence, forged_note, final, attacker, named), **anchor())  # type: ignore[arg-type]


def test_approvals_that_never_took_effect_hand_nothing_over() -> None:
    vals = validators()
    trusted = validator_set(vals)
    newcomer = identity("proposed-validator-whose-key-leaked")
    target = ValidatorSet({newcomer.verify_key: 100, vals[0].verify_key: 1})
    proposal = GovernanceProposal(CHAIN, 12345, "gov.validators", {"stakes": target.to_value()})  # type: ignore[dict-item]
    spam = identity("anyone")
    change = Transaction.create(
        spam,
        kind="gov.validators",
        nonce=0,
        chain_id=CHAIN,
        payload=proposal.payload([proposal.approve(v) for v in vals[:3]]),
    )
    note_tx = Transaction.create(spam, kind="note", payload="forged", nonce=1, chain_id=CHAIN)
    for named in (trusted, target):
        with pytest.raises(InvalidReceipt):
            verify_receipt(_forge([change], note_tx, target, newcomer, named), **anchor())  # type: ignore[arg-type]


def test_rows_changed_or_added_after_open_are_never_served(tmp_path: Path) -> None:
    path = tmp_path / "l.db"
    txs = make_file(path)
    with Ledger.open(path, read_only=True) as reader:
        assert len(reader.block(1).transactions) == 2
        forged = _insert_orphan(path, 1, 1000)  # an extra row at a certified height
        assert [t.id for t in reader.block(1).transactions] == [t.id for t in txs[:2]]
        with pytest.raises(NotFound):
            reader.get(forged.id)
        db = sqlite3.connect(path)
        (data,) = db.execute("SELECT data FROM txs WHERE seq = 0").fetchone()
        rewritten = Transaction.create(
            sites(2)[0], kind="note", payload={"consent": "revoked"}, nonce=0, chain_id=CHAIN
        )
        db.execute("UPDATE txs SET data = ? WHERE seq = 0", (rewritten.to_bytes(),))
        db.commit()
        for read in (
            lambda: reader.get(txs[0].id),
            lambda: list(reader.transactions()),
            lambda: reader.block(1),
            lambda: reader.prove(txs[0].id),
        ):
            with pytest.raises(TamperedLedger, match="changed since the ledger opened"):
                read()
        db.execute("UPDATE txs SET data = ? WHERE seq = 0", (data,))
        (header,) = db.execute("SELECT header FROM blocks WHERE height = 2").fetchone()
        db.execute("UPDATE blocks SET header = ? WHERE height = 2", (header[:-1] + bytes([header[-1] ^ 1]),))
        db.commit()
        db.close()
        with pytest.raises(TamperedLedger, match="changed since the ledger opened"):
            reader.block(2)
        assert reader.get(txs[0].id) == txs[0]


def test_a_refused_second_writer_leaves_the_first_writers_sqlite_locks_alone(tmp_path: Path) -> None:
    path = tmp_path / "l.db"
    make_file(path, blocks=1)

    def sqlite_locks() -> list[str]:
        inode = str(os.stat(path).st_ino)
        return sorted(line.split()[1] for line in Path("/proc/locks").read_text().splitlines() if f":{inode} " in line)

    with Ledger.open(path, local_validators=validators()) as writer:
        reader = Ledger.open(path, read_only=True)
        list(reader.transactions())
        reader._store._db.execute("BEGIN")  # type: ignore[attr-defined]  # hold a read transaction
        reader._store._db.execute("SELECT COUNT(*) FROM txs").fetchall()  # type: ignore[attr-defined]
        before = sqlite_locks()
        with pytest.raises(LedgerLocked):
            Ledger.open(path)
        assert sqlite_locks() == before and "POSIX" in before
        reader._store._db.execute("COMMIT")  # type: ignore[attr-defined]
        reader.close()
        writer.submit(note(sites(2)[0], 1))
        writer.commit()


def test_a_trigger_or_view_under_an_expected_name_is_tampering(tmp_path: Path) -> None:
    path = tmp_path / "l.db"
    make_file(path, blocks=1)
    db = sqlite3.connect(path)
    db.execute("DROP INDEX txs_by_id")
    db.execute("CREATE TRIGGER txs_by_id AFTER INSERT ON txs BEGIN DELETE FROM meta; END")
    db.commit()
    db.close()
    with pytest.raises(TamperedLedger, match="txs_by_id is not the index"):
        Ledger.open(path, read_only=True)
    with pytest.raises(TamperedLedger, match="txs_by_id"):
        Ledger.open(path, local_validators=validators())
