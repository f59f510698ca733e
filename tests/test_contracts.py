"""Contracts on the ledger: the paper's workflows end to end on a real file, determinism of
replay (state roots), pinned contract code, governance deployment, and bad input."""

from __future__ import annotations

import json
import os
import sqlite3
import subprocess
import sys
from pathlib import Path

import contract_fixtures
import pytest
from contract_fixtures import Counter, Drifting
from ledger_helpers import CHAIN, identity, validator_set, validators

import fedledger
from fedledger.contracts import BUILTIN, commit, pseudonym
from fedledger.errors import (
    ContractMismatch,
    InvalidArgument,
    InvalidCall,
    InvalidGovernance,
    InvalidReceipt,
    OversizedPayload,
    ReplayedTransaction,
    TamperedLedger,
    UnauthorizedSender,
    UnknownContract,
    UnsupportedVersion,
)
from fedledger.identity import Identity
from fedledger.ledger import (
    BlockHeader,
    Call,
    Certificate,
    GovernanceProposal,
    Ledger,
    Receipt,
    Vote,
    verify_outcome,
    verify_receipt,
)

SRC = Path(fedledger.__file__).resolve().parents[1]
TESTS = Path(__file__).resolve().parent
PATIENT_KEY = b"consortium pseudonym key, kept off the chain!"


class Clock:
    """Block times a test controls: one second per block unless moved on."""

    def __init__(self, start: int = 1_700_000_000_000) -> None:
        self.now = start

    def __call__(self) -> int:
        self.now += 1000
        return self.now


def people() -> dict[str, Identity]:
    return {n: identity(n) for n in ("admin", "hospital", "researcher", "pharmacy", "breached-site")}


def open_ledger(path: Path | str, contracts: tuple[type, ...] = BUILTIN, clock: Clock | None = None) -> Ledger:
    """A ledger (a file, or ":memory:") with the test validators, every person a member."""
    v = validators()
    args: dict[str, object] = {
        "chain_id": CHAIN,
        "validators": validator_set(v),
        "local_validators": v,
        "members": [p.card() for p in people().values()],
        "contracts": contracts,
        "clock": clock or Clock(),
    }
    if path == ":memory:":
        return Ledger.memory(**args)  # type: ignore[arg-type]
    return Ledger.open(path, **args)  # type: ignore[arg-type]


def key(who: Identity) -> bytes:
    return who.verify_key.to_bytes()


def appoint(ledger: Ledger, p: dict[str, Identity]) -> None:
    assert ledger.call(validators()[0], "access", "assign_role", subject=key(p["admin"]), role="admin").accepted
    for name, role in (
        ("hospital", "provider"),
        ("researcher", "researcher"),
        ("pharmacy", "pharmacy"),
        ("breached-site", "provider"),
    ):
        assert ledger.call(p["admin"], "access", "assign_role", subject=key(p[name]), role=role).accepted


# -- the paper's workflows, end to end ----------------------------------------------------------


def test_the_papers_workflows_end_to_end(tmp_path: Path) -> None:
    path = tmp_path / "consortium.db"
    p = people()
    hospital, researcher, pharmacy, breached = p["hospital"], p["researcher"], p["pharmacy"], p["breached-site"]
    patient = pseudonym(PATIENT_KEY, "patient-0042")
    other = pseudonym(PATIENT_KEY, "patient-0043")
    record = "bafkreihdwdcefgh4dqkjv67uzcmw7ojee6xedzdetojuzjevtenxquvyku"
    with open_ledger(path) as ledger:
        appoint(ledger, p)
        # A patient consents to research; a provider registers the record and is granted access.
        for who in (patient, other):
            r = ledger.call(
                hospital, "consent", "record", patient=who, decision="permit", purposes=["HRESCH"], start_ms=0
            )
            assert r.accepted and r.value == 0
        assert ledger.call(hospital, "access", "register", resource=record).accepted
        grant = ledger.call(
            hospital, "access", "grant", subject=key(hospital), resource=record, purpose="TREAT", expires_ms=2**62
        )
        assert grant.accepted
        read = ledger.call(hospital, "access", "access", subject=key(hospital), resource=record, purpose="TREAT")
        assert (read.accepted, read.value) == (True, {"permit": True, "break_glass": False})

        # A researcher is denied, and the denial is on the ledger with a receipt that proves it.
        denied = ledger.call(researcher, "access", "access", subject=key(researcher), resource=record, purpose="HRESCH")
        assert denied.recorded and not denied.accepted
        assert denied.reason == "no grant for this subject, resource and purpose"
        receipt = Receipt.from_json(ledger.prove(denied.tx_id, outcome=True).to_json())  # type: ignore[arg-type]
        tx, outcome = verify_outcome(receipt, chain_id=CHAIN, trusted_validators=ledger.genesis.validators)
        assert tx.id == denied.tx_id and tx.sender == researcher.verify_key
        assert (outcome.ok, outcome.reason) == (False, denied.reason)
        # The outcome is bound to its block: changing the reason breaks the proof.
        forged = json.loads(receipt.to_json())
        forged_outcome = type(outcome)(outcome.tx_id, True).to_bytes()
        forged["outcome"]["outcome"] = forged_outcome.hex()
        with pytest.raises(InvalidReceipt, match="not the certified outcome"):
            verify_outcome(forged, chain_id=CHAIN, trusted_validators=ledger.genesis.validators)

        # Consent is withdrawn, and the next training cohort excludes that patient.
        before = ledger.view("consent", "consented", patients=[patient, other], purpose="HRESCH")
        assert before["permitted"] == sorted([patient, other])
        assert ledger.call(hospital, "consent", "withdraw", patient=patient).value == 1
        after = ledger.view("consent", "consented", patients=[patient, other], purpose="HRESCH")
        assert after["permitted"] == [other] and after["excluded"] == [patient]
        assert after["snapshot"] != before["snapshot"]
        # The snapshot is reproducible at the height it was taken.
        again = ledger.view("consent", "consented", patients=[other, patient], purpose="HRESCH", at=after["at"])
        assert again["snapshot"] == after["snapshot"]

        # A breached site is cut off at once: its later calls are recorded as denied.
        assert ledger.call(breached, "access", "register", resource="bafkbreached").accepted
        assert ledger.call(p["admin"], "access", "revoke_all", subject=key(breached), reason="breach").accepted
        late = ledger.call(breached, "access", "access", subject=key(breached), resource=record, purpose="ETREAT")
        assert late.recorded and not late.accepted and "cut off" in late.reason
        late_grant = ledger.call(
            breached,
            "access",
            "grant",
            subject=key(researcher),
            resource="bafkbreached",
            purpose="HRESCH",
            expires_ms=2**62,
        )
        assert late_grant.recorded and not late_grant.accepted and "cut off" in late_grant.reason

        # Break-glass: emergency treatment by a provider without a grant is permitted, flagged.
        glass = ledger.call(hospital, "access", "access", subject=key(hospital), resource="bafkother", purpose="ETREAT")
        assert glass.accepted and glass.value == {"permit": True, "break_glass": True}

        # A prescription is issued, verified and dispensed; a second dispense is rejected.
        content = json.dumps({"drug": "amoxicillin", "dose": "500 mg", "patient": patient.hex()}).encode()
        rx_commitment, salt = commit(content)
        rx = os.urandom(32)
        assert ledger.call(
            hospital, "prescriptions", "issue", rx=rx, commitment=rx_commitment, expires_ms=2**62
        ).accepted
        assert ledger.view("prescriptions", "verify", rx=rx, commitment=commit(content, salt)[0]) == {
            "valid": True,
            "reason": "",
        }
        fake = ledger.view("prescriptions", "verify", rx=rx, commitment=commit(b"forged", salt)[0])
        assert fake["valid"] is False and "not authentic" in fake["reason"]
        assert ledger.call(pharmacy, "prescriptions", "dispense", rx=rx, commitment=rx_commitment).accepted
        second = ledger.call(pharmacy, "prescriptions", "dispense", rx=rx, commitment=rx_commitment)
        assert second.recorded and not second.accepted and second.reason == "already dispensed"
        assert ledger.view("prescriptions", "verify", rx=rx, commitment=rx_commitment)["reason"] == "already dispensed"

        # The HIPAA audit-controls report flags the break-glass access and lists the denial.
        from fedledger.audit import hipaa_report

        report = hipaa_report(ledger)
        assert [e["tx_id"] for e in report["break_glass"]] == [glass.tx_id.hex()]  # type: ignore[union-attr]
        assert denied.tx_id.hex() in [e["tx_id"] for e in report["denials"]]  # type: ignore[union-attr]
        assert report["by_subject"][key(hospital).hex()]["break_glass"] == 1

        # Every outcome is on the chain, and the chain verifies.
        assert ledger.outcome(denied.tx_id).reason == denied.reason  # type: ignore[arg-type]
        ledger.verify()
        roots = [ledger.block(h).header.state_root for h in range(1, ledger.height + 1)]
        final_root = ledger.state_root

    # No personal data: the patient's identifier never reaches the file, only its pseudonym.
    raw = b"".join(
        Path(str(path) + suffix).read_bytes() for suffix in ("", "-wal") if Path(str(path) + suffix).exists()
    )
    assert b"patient-0042" not in raw
    with Ledger.open(path, contracts=BUILTIN, read_only=True) as reopened:
        assert reopened.state_root == final_root
        assert [reopened.block(h).header.state_root for h in range(1, reopened.height + 1)] == roots


# -- determinism ---------------------------------------------------------------------------------


def _child(code: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(SRC), str(TESTS)])}
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=120)


def test_a_fresh_process_reproduces_every_state_root(tmp_path: Path) -> None:
    path = tmp_path / "l.db"
    with open_ledger(path, contracts=(*BUILTIN, Counter)) as ledger:
        appoint(ledger, people())
        results = ledger.call_many([Call(people()["hospital"], "counter", "add", {"amount": i}) for i in range(1, 30)])
        assert [r.value for r in results] == [i * (i + 1) // 2 for i in range(1, 30)]
        roots = [ledger.block(h).header.state_root.hex() for h in range(1, ledger.height + 1)]
    code = f"""
import json
from fedledger.ledger import Ledger
from fedledger.contracts import BUILTIN
from contract_fixtures import Counter
from fedledger.ledger import audit
with Ledger.open({str(path)!r}, contracts=(*BUILTIN, Counter), read_only=True) as ledger:
    ledger.verify()
    print(json.dumps([ledger.block(h).header.state_root.hex() for h in range(1, ledger.height + 1)]))
    print(ledger.state_root.hex(), ledger.view("counter", "total"))
"""
    out = _child(code)
    assert out.returncode == 0, out.stderr
    lines = out.stdout.splitlines()
    assert json.loads(lines[0]) == roots
    assert lines[1] == f"{roots[-1]} {29 * 30 // 2}"


def test_a_contract_that_behaves_differently_on_replay_is_caught_at_that_height(tmp_path: Path) -> None:
    path = tmp_path / "l.db"
    with open_ledger(path, contracts=(Drifting,)) as ledger:
        site = people()["hospital"]
        for _ in range(3):
            ledger.call(site, "drifting", "bump")
        first_bump_height = ledger.height - 2
    contract_fixtures.DRIFT[0] = 1
    try:
        with pytest.raises(TamperedLedger) as caught:
            Ledger.open(path, contracts=(Drifting,), read_only=True)
    finally:
        contract_fixtures.DRIFT[0] = 0
    assert caught.value.height == first_bump_height
    assert "outcome" in caught.value.what


def test_a_state_root_changed_in_the_file_is_caught_at_its_height(tmp_path: Path) -> None:
    """A block re-signed by the validators with another state root: replay names that height."""
    path = tmp_path / "l.db"
    with open_ledger(path, contracts=(Counter,)) as ledger:
        for i in range(1, 6):
            ledger.call(people()["hospital"], "counter", "add", amount=i)
        target = 3
        header = ledger.block(target).header
    forged = BlockHeader(**{**header.__dict__, "state_root": b"\x42" * 32})
    cert = Certificate.from_votes([Vote.create(v, forged) for v in validators()])
    db = sqlite3.connect(path)
    db.execute(
        "UPDATE blocks SET hash = ?, header = ?, certificate = ? WHERE height = ?",
        (forged.hash, forged.to_bytes(), cert.to_bytes(), target),
    )
    db.commit()
    db.close()
    with pytest.raises(TamperedLedger) as caught:
        Ledger.open(path, contracts=(Counter,), read_only=True)
    assert caught.value.height == target and "state root" in caught.value.what


def test_a_stored_outcome_changed_in_the_file_is_caught_at_its_height(tmp_path: Path) -> None:
    path = tmp_path / "l.db"
    with open_ledger(path, contracts=(Counter,)) as ledger:
        site = people()["hospital"]
        ledger.call(site, "counter", "add", amount=1)
        denied = ledger.call(site, "counter", "add", amount=-5)
        ledger.call(site, "counter", "add", amount=2)
        assert not denied.accepted
    db = sqlite3.connect(path)
    from fedledger.ledger import Outcome

    db.execute("UPDATE txs SET outcome = ? WHERE id = ?", (Outcome(denied.tx_id, True).to_bytes(), denied.tx_id))  # type: ignore[arg-type]
    db.commit()
    db.close()
    with pytest.raises(TamperedLedger) as caught:
        Ledger.open(path, contracts=(Counter,), read_only=True)
    assert caught.value.height == denied.height and "outcome" in caught.value.what


def test_a_contract_that_raises_or_keeps_instance_state_is_recorded_as_denied_without_its_writes() -> None:
    with open_ledger(":memory:", contracts=(Counter,)) as ledger:
        site = people()["hospital"]
        assert ledger.call(site, "counter", "add", amount=5).value == 5
        crash = ledger.call(site, "counter", "crash")
        assert crash.recorded and not crash.accepted and crash.reason == "counter.crash raised ValueError"
        stash = ledger.call(site, "counter", "stash")
        assert not stash.accepted and "no instance state" in stash.reason
        assert ledger.view("counter", "total") == 5  # the crashed call's write was dropped
        ledger.verify()


# -- pinned code, deployment, versions ----------------------------------------------------------


def test_a_ledger_opened_with_another_contract_version_is_refused(tmp_path: Path) -> None:
    from contract_fixtures_v2 import Counter as CounterV2

    path = tmp_path / "l.db"
    with open_ledger(path, contracts=(Counter,)) as ledger:
        ledger.call(people()["hospital"], "counter", "add", amount=1)
        assert ledger.genesis.contracts == (("counter", 1, Counter.code_hash()),)
    with pytest.raises(ContractMismatch, match="another version or changed code"):
        Ledger.open(path, contracts=(CounterV2,), read_only=True)
    with pytest.raises(ContractMismatch, match="pass its class"):
        Ledger.open(path, read_only=True)
    with Ledger.open(path, contracts=(Counter, CounterV2), read_only=True) as ok:  # history may need several versions
        assert ok.view("counter", "total") == 1


def test_the_cli_loads_a_ledgers_contracts_by_name(tmp_path: Path) -> None:
    path = tmp_path / "l.db"
    with open_ledger(path, contracts=(*BUILTIN, Counter)) as ledger:
        denied = ledger.call(people()["hospital"], "counter", "add", amount=-1)
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(SRC), str(TESTS)])}
    cli = [sys.executable, "-m", "fedledger", "ledger"]
    without = subprocess.run([*cli, "verify", str(path)], capture_output=True, text=True, env=env)
    assert without.returncode != 0 and "--contracts" in without.stderr and "Traceback" not in without.stderr
    ok = subprocess.run(
        [*cli, "--contracts", "contract_fixtures:Counter", "verify", str(path)], capture_output=True, text=True, env=env
    )
    assert ok.returncode == 0 and ok.stdout.startswith("ok:"), ok.stderr
    proof = subprocess.run(
        [*cli, "--contracts", "contract_fixtures:Counter", "prove", "--outcome", str(path), denied.tx_id.hex()],  # type: ignore[union-attr]
        capture_output=True,
        text=True,
        env=env,
    )
    assert proof.returncode == 0, proof.stderr
    _, outcome = verify_outcome(proof.stdout, chain_id=CHAIN, trusted_validators=validator_set())
    assert (outcome.ok, outcome.reason) == (False, "amount must be positive")


def test_a_contract_deployed_by_governance(tmp_path: Path) -> None:
    from fedledger.ledger import Transaction

    path = tmp_path / "l.db"
    v = validators()
    site = people()["hospital"]
    with Ledger.open(
        path, chain_id=CHAIN, validators=validator_set(v), local_validators=v, members=[site.card()], clock=Clock()
    ) as ledger:
        assert ledger.contracts == {} and ledger.genesis.contracts == ()
        with pytest.raises(UnknownContract):
            ledger.call(site, "counter", "add", amount=1)
        params = {"name": "counter", "version": 1, "code_hash": Counter.code_hash()}
        proposal = GovernanceProposal(CHAIN, ledger.governance_epoch, "gov.contract.deploy", params)  # type: ignore[arg-type]

        def deploy(approvers: list[Identity]) -> Transaction:
            payload = proposal.payload([proposal.approve(x) for x in approvers])
            return Transaction.create(site, kind="gov.contract.deploy", payload=payload, nonce=0, chain_id=CHAIN)

        # Not offered by this process: refused at submission, never a silent fork later.
        with pytest.raises(ContractMismatch, match="not offered"):
            ledger.submit(deploy(v[:3]))
    # Offered on a later open: not pinned (the genesis is written once), waiting for governance.
    with Ledger.open(path, local_validators=v, contracts=(Counter,), clock=Clock()) as ledger:
        assert ledger.contracts == {}
        with pytest.raises(InvalidGovernance, match="not more than 2/3"):
            ledger.submit(deploy(v[2:]))  # 20 + 10 of 100
        ledger.submit(deploy(v[:3]))
        ledger.commit()
        assert ledger.contracts == {"counter": (1, Counter.code_hash())}
        assert ledger.call(site, "counter", "add", amount=2).value == 2
    with pytest.raises(ContractMismatch, match="not offered"):
        Ledger.open(path, read_only=True)
    with Ledger.open(path, contracts=(Counter,), read_only=True) as ledger:
        ledger.verify()
        assert ledger.view("counter", "total") == 2


def test_an_old_format_file_is_refused_with_a_typed_error(tmp_path: Path) -> None:
    from fedledger import encoding
    from fedledger.ledger.store import _V1_TXS_SQL

    path = tmp_path / "old.db"
    db = sqlite3.connect(path)
    db.executescript(
        "CREATE TABLE meta (key TEXT PRIMARY KEY, value BLOB NOT NULL);\n"
        "CREATE TABLE blocks (\n    height INTEGER PRIMARY KEY,\n    hash BLOB NOT NULL,\n"
        "    header BLOB NOT NULL,\n    certificate BLOB NOT NULL\n);\n"
        f"{_V1_TXS_SQL};\n"
        "CREATE UNIQUE INDEX txs_by_id ON txs(id);\n"
        "CREATE INDEX txs_by_kind ON txs(kind, seq);\n"
        "CREATE INDEX txs_by_sender ON txs(sender, seq);\n"
    )
    db.close()
    with pytest.raises(UnsupportedVersion, match="older fedledger"):
        Ledger.open(path, read_only=True)
    old_header = encoding.encode({"type": "fedledger.block/1", "chain": CHAIN})
    with pytest.raises(UnsupportedVersion, match="block/1"):
        BlockHeader.from_bytes(old_header)
    from fedledger.ledger import Genesis

    with pytest.raises(UnsupportedVersion, match="genesis/1"):
        Genesis.from_bytes(encoding.encode({"type": "fedledger.genesis/1"}))


# -- bad input -----------------------------------------------------------------------------------


def test_bad_calls_get_typed_errors_and_the_rest_of_the_batch_lands() -> None:
    p = people()
    site = p["hospital"]
    outsider = Identity.generate("not-a-member")
    with open_ledger(":memory:", contracts=(*BUILTIN, Counter)) as ledger:
        appoint(ledger, p)
        replayed = ledger.sign_call(site, "counter", "add", {"amount": 1})
        results = ledger.call_many(
            [
                Call(site, "nope", "add", {"amount": 1}),
                Call(site, "counter", "nope", {}),
                Call(site, "counter", "total", {}),
                Call(site, "counter", "add", {"amount": "1"}),
                Call(site, "counter", "add", {}),
                Call(site, "counter", "add", {"amount": 1, "extra": 2}),
                Call(site, "counter", "add", {"amount": 2**63}),
                Call(site, "access", "register", {"resource": "x" * 5000}),
                Call(site, "access", "register", {"resource": "y" * 70_000}),
                Call(outsider, "counter", "add", {"amount": 1}),
                replayed,
                Call(site, "counter", "add", {"amount": 7}),
                replayed,
            ]
        )
        errors = [type(r.error).__name__ if r.error else None for r in results]
        assert errors == [
            "UnknownContract",
            "InvalidCall",
            "InvalidCall",
            "InvalidCall",
            "InvalidCall",
            "InvalidCall",
            "InvalidCall",
            "InvalidCall",
            "InvalidCall",
            "UnauthorizedSender",
            None,
            None,
            "ReplayedTransaction",
        ]
        assert "view" in results[2].reason and "amount" in results[3].reason and "missing" in results[4].reason
        assert "5000 long" in results[7].reason
        assert [(r.recorded, r.accepted, r.value) for r in results[10:12]] == [(True, True, 1), (True, True, 8)]
        assert not any(r.recorded for i, r in enumerate(results) if i not in (10, 11))
        with pytest.raises(ReplayedTransaction):
            ledger.submit(replayed)
        # A member revoked by governance is refused at submission (not recorded).
        v = validators()
        proposal = GovernanceProposal(
            CHAIN, ledger.governance_epoch, "gov.member.revoke", {"key": key(site), "reason": "left the consortium"}
        )
        from fedledger.ledger import Transaction

        ledger.submit(
            Transaction.create(
                p["admin"],
                kind="gov.member.revoke",
                payload=proposal.payload([proposal.approve(x) for x in v[:3]]),
                nonce=ledger.next_nonce(p["admin"]),
                chain_id=CHAIN,
            )
        )
        ledger.commit()
        with pytest.raises(UnauthorizedSender):
            ledger.call(site, "counter", "add", amount=1)
        with pytest.raises(InvalidCall):
            ledger.view("counter", "add", amount=1)
        with pytest.raises(UnknownContract):
            ledger.view("nope", "x")
        with pytest.raises(InvalidArgument):
            ledger.view("counter", "total", height=ledger.height + 1)
        with pytest.raises(OversizedPayload):
            ledger.sign_call(p["admin"], "counter", "add", {"amount": 1, "pad": "z" * 70_000})
        ledger.verify()


def test_contract_definitions_are_checked() -> None:
    from fedledger.ledger import CallContext, Contract, ContractState, call

    with pytest.raises(InvalidArgument, match="unsupported argument annotation"):

        class Bad(Contract):  # noqa: F841
            name = "bad"
            version = 1

            @call
            def f(self, state: ContractState, ctx: CallContext, x: float) -> None: ...

    class NoName(Contract):
        version = 1

        @call
        def f(self, state: ContractState, ctx: CallContext) -> None: ...

    with pytest.raises(InvalidArgument, match="name"):
        Ledger.memory(chain_id=CHAIN, validators=validator_set(), contracts=(NoName,))
    with pytest.raises(fedledger.errors.InvalidArgumentType):
        Ledger.memory(chain_id=CHAIN, validators=validator_set(), contracts=(object,))  # type: ignore[arg-type]


def test_a_receipt_without_an_outcome_still_verifies_and_says_so() -> None:
    with open_ledger(":memory:", contracts=(Counter,)) as ledger:
        r = ledger.call(people()["hospital"], "counter", "add", amount=1)
        receipt = ledger.prove(r.tx_id)  # type: ignore[arg-type]
        assert verify_receipt(receipt, chain_id=CHAIN, trusted_validators=validator_set()).id == r.tx_id
        with pytest.raises(InvalidReceipt, match="carries no outcome"):
            verify_outcome(receipt, chain_id=CHAIN, trusted_validators=validator_set())


def test_patients_appear_only_as_32_byte_pseudonyms() -> None:
    """A name or an unsalted short hash never becomes contract state: calls are typed and the
    contracts check the pseudonym's shape."""
    import hashlib

    p = people()
    with open_ledger(":memory:") as ledger:
        appoint(ledger, p)
        with pytest.raises(InvalidCall, match="expected bytes"):
            ledger.call(
                p["hospital"],
                "consent",
                "record",
                patient="Jane Doe",
                decision="permit",
                purposes=["HRESCH"],
                start_ms=0,
            )
        short = ledger.call(
            p["hospital"],
            "consent",
            "record",
            patient=hashlib.md5(b"Jane Doe").digest(),
            decision="permit",
            purposes=["HRESCH"],
            start_ms=0,
        )
        assert not short.accepted and "32-byte pseudonym" in short.reason
        assert ledger.view("consent", "provisions", patient=pseudonym(PATIENT_KEY, "Jane Doe")) == []
        # the same identifier under another key is another pseudonym: nothing links them
        assert pseudonym(PATIENT_KEY, "Jane Doe") != pseudonym(b"another site's key, also secret!", "Jane Doe")
        with pytest.raises(InvalidArgument):
            pseudonym(b"short", "Jane Doe")


@pytest.mark.parametrize(
    "bad",
    [
        5,
        "x",
        [],
        {},
        {"outcome": "zz", "index": 0, "proof": []},
        {"outcome": "00", "index": -1, "proof": []},
        {"outcome": "00", "index": 0, "proof": "ab"},
        {"outcome": "8400", "index": 0, "proof": [], "extra": 1},
    ],
)
def test_a_malformed_outcome_in_a_receipt_is_invalid_receipt(bad: object) -> None:
    with open_ledger(":memory:", contracts=(Counter,)) as ledger:
        r = ledger.call(people()["hospital"], "counter", "add", amount=1)
        doc = json.loads(ledger.prove(r.tx_id, outcome=True).to_json())  # type: ignore[arg-type]
    doc["outcome"] = bad
    with pytest.raises(InvalidReceipt):
        verify_outcome(json.dumps(doc), chain_id=CHAIN, trusted_validators=validator_set())


def test_an_abandoned_proposal_leaves_no_trace_in_the_state_root() -> None:
    with open_ledger(":memory:", contracts=(Counter,)) as ledger:
        site = people()["hospital"]
        ledger.call(site, "counter", "add", amount=1)
        before = ledger.state_root
        ledger.submit(ledger.sign_call(site, "counter", "add", {"amount": 5}))
        proposed = ledger.propose()
        assert proposed.state_root != before
        ledger.abandon_proposal()
        assert ledger.state_root == before and ledger.view("counter", "total") == 1
        block = ledger.commit()
        # The block is made in the next round (its proposer schedule advanced once more, which
        # the state root covers): never a second header at the abandoned (height, round).
        assert (proposed.round, block.header.round) == (0, 1) and block.header.height == proposed.height
        assert block.header.state_root == ledger.state_root != proposed.state_root
        assert block.outcomes[0].value == 6
        ledger.verify()


def test_withdrawing_all_takes_back_only_what_the_sending_site_recorded() -> None:
    p = people()
    patient = pseudonym(PATIENT_KEY, "patient-7")
    with open_ledger(":memory:") as ledger:
        for site in ("hospital", "pharmacy"):
            assert ledger.call(
                p[site], "consent", "record", patient=patient, decision="permit", purposes=["HRESCH"], start_ms=0
            ).accepted
        assert ledger.call(p["hospital"], "consent", "withdraw", patient=patient).value == 1
        provisions = ledger.view("consent", "provisions", patient=patient)
        assert [x["withdrawn_ms"] is None for x in provisions] == [False, True]
        foreign = ledger.call(p["hospital"], "consent", "withdraw", patient=patient, consent_id=1)
        assert not foreign.accepted and "only the site that recorded" in foreign.reason
        assert ledger.view("consent", "consented", patients=[patient], purpose="HRESCH")["permitted"] == [patient]
