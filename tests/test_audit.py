"""fedledger.audit: the access trail and consents of a ledger as FHIR R4B resources, CSV and a
HIPAA 164.312(b) report, checked against what the ledger recorded."""

from __future__ import annotations

import csv
import io
import json
import os
import sqlite3
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from fhir.resources.R4B.auditevent import AuditEvent
from fhir.resources.R4B.bundle import Bundle
from fhir.resources.R4B.consent import Consent
from ledger_helpers import identity, validator_set, validators
from pydantic import ValidationError

import fedledger
from fedledger import audit
from fedledger.audit import fhir
from fedledger.contracts import BUILTIN, commit, pseudonym
from fedledger.errors import FedLedgerError, MissingDependency, TamperedLedger
from fedledger.identity import Identity
from fedledger.ledger import Call, Ledger

SRC = str(Path(fedledger.__file__).resolve().parents[1])
CHAIN = "audit-chain"
RECORD = "bafyrecord1"
HOSTILE = '=HYPERLINK("evil")'  # a denied call carries whatever text its sender chose
KEY = b"k" * 32
FAR = 10**13


def key(who: Identity) -> bytes:
    return who.verify_key.to_bytes()


@dataclass
class Scenario:
    path: Path
    people: dict[str, Identity]
    patients: dict[str, bytes]
    document: bytes
    #: name -> tx id of the calls the assertions refer to
    tx: dict[str, bytes] = field(default_factory=dict)


@pytest.fixture(scope="module")
def scenario(tmp_path_factory: pytest.TempPathFactory) -> Scenario:
    """Grants, permitted and denied access, break-glass (by the subject and recorded by the
    custodian), a cut-off then a denied access, an unknown purpose, consents and a withdrawal."""
    path = tmp_path_factory.mktemp("audit") / "l.db"
    vals = validators()
    people = {n: identity(n) for n in ("admin", "hosp", "hosp-2", "research", "er-doc", "breached")}
    patients = {n: pseudonym(KEY, n) for n in ("patient-1", "patient-2", "patient-3")}
    document, _ = commit(b"signed consent form", b"s" * 32)
    s = Scenario(path, people, patients, document)
    t = [1_700_000_000_000]

    def clock() -> int:
        t[0] += 1000
        return t[0]

    admin, hosp, research, er, breached = (people[n] for n in ("admin", "hosp", "research", "er-doc", "breached"))
    with Ledger.open(
        path,
        chain_id=CHAIN,
        validators=validator_set(vals),
        local_validators=vals,
        members=[p.card() for p in people.values()],
        contracts=BUILTIN,
        clock=clock,
    ) as ledger:

        def call(name: str, who: Identity, contract: str, method: str, ok: bool, **args: Any) -> None:
            r = ledger.call(who, contract, method, **args)
            assert r.accepted is ok, (name, r)
            s.tx[name] = r.tx_id  # type: ignore[assignment]

        call("appoint", vals[0], "access", "assign_role", True, subject=key(admin), role="admin")
        for who, role in ((hosp, "provider"), (research, "researcher"), (er, "provider"), (breached, "provider")):
            call(f"role-{who.name}", admin, "access", "assign_role", True, subject=key(who), role=role)
        call("self-promote", research, "access", "assign_role", False, subject=key(research), role="admin")
        call("register", hosp, "access", "register", True, resource=RECORD)
        call(
            "grant-hosp",
            hosp,
            "access",
            "grant",
            True,
            subject=key(hosp),
            resource=RECORD,
            purpose="TREAT",
            expires_ms=FAR,
        )
        call(
            "grant-research",
            hosp,
            "access",
            "grant",
            True,
            subject=key(research),
            resource=RECORD,
            purpose="HRESCH",
            expires_ms=FAR,
        )
        call("read-treat", hosp, "access", "access", True, subject=key(hosp), resource=RECORD, purpose="TREAT")
        call(
            "read-research",
            research,
            "access",
            "access",
            True,
            subject=key(research),
            resource=RECORD,
            purpose="HRESCH",
        )
        call(
            "revoke-research", hosp, "access", "revoke", True, subject=key(research), resource=RECORD, purpose="HRESCH"
        )
        call(
            "read-revoked",
            research,
            "access",
            "access",
            False,
            subject=key(research),
            resource=RECORD,
            purpose="HRESCH",
        )
        call("btg-self", er, "access", "access", True, subject=key(er), resource=RECORD, purpose="ETREAT")
        call("btg-custodian", hosp, "access", "access", True, subject=key(er), resource=RECORD, purpose="ETREAT")
        call("cut", admin, "access", "revoke_all", True, subject=key(breached), reason="credential compromise")
        call("read-cut", breached, "access", "access", False, subject=key(breached), resource=RECORD, purpose="ETREAT")
        call("hostile", research, "access", "access", False, subject=key(research), resource=HOSTILE, purpose="bogus")
        p1, p2 = patients["patient-1"], patients["patient-2"]
        call(
            "consent-1",
            hosp,
            "consent",
            "record",
            True,
            patient=p1,
            decision="permit",
            purposes=["HRESCH"],
            start_ms=0,
            classes=["Observation", "lab results"],
            document=document,
        )
        call(
            "consent-2",
            hosp,
            "consent",
            "record",
            True,
            patient=p2,
            decision="deny",
            purposes=["HMARKT"],
            start_ms=0,
            end_ms=FAR,
        )
        call(
            "consent-3", hosp, "consent", "record", True, patient=p1, decision="permit", purposes=["TREAT"], start_ms=5
        )
        call("withdraw-1", hosp, "consent", "withdraw", True, patient=p1, consent_id=0)
        call("withdraw-foreign", research, "consent", "withdraw", False, patient=p2)
        # Two sites withdraw their own provisions for one patient in the same block (a call
        # without consent_id withdraws every active one, so it must come last).
        p3, hosp2 = patients["patient-3"], people["hosp-2"]
        for name, site in (("consent-4", hosp), ("consent-5", hosp2)):
            call(name, site, "consent", "record", True, patient=p3, decision="permit", purposes=["PUBHLTH"], start_ms=0)
        both = ledger.call_many(
            [
                Call(hosp2, "consent", "withdraw", {"patient": p3, "consent_id": 1}),
                Call(hosp, "consent", "withdraw", {"patient": p3}),
            ]
        )
        assert [r.accepted for r in both] == [True, True] and both[0].height == both[1].height
        s.tx["withdraw-5"], s.tx["withdraw-4"] = both[0].tx_id, both[1].tx_id  # type: ignore[assignment]
        call(
            "training",
            hosp,
            "training",
            "define",
            False,
            policy="p",
            sites=[],
            aggregator="masked",
            quant_bits=8,
            threshold=1,
            min_cohort=1,
        )
    return s


@pytest.fixture
def ledger(scenario: Scenario):  # type: ignore[no-untyped-def]
    with Ledger.open(scenario.path, read_only=True, contracts=BUILTIN) as opened:
        yield opened


ACCESS_CALLS = ["read-treat", "read-research", "read-revoked", "btg-self", "btg-custodian", "read-cut", "hostile"]
DENIED_ACCESS = ["read-revoked", "read-cut", "hostile"]
BREAK_GLASS = ["btg-self", "btg-custodian"]
ADMIN_CALLS = [
    "appoint",
    "role-hosp",
    "role-research",
    "role-er-doc",
    "role-breached",
    "self-promote",
    "register",
    "grant-hosp",
    "grant-research",
    "revoke-research",
    "cut",
]


def ids(s: Scenario, names: list[str]) -> list[bytes]:
    return [s.tx[n] for n in names]


# -- the event layer ---------------------------------------------------------------------------


def test_events_are_every_access_call_with_its_recorded_outcome(scenario: Scenario, ledger: Ledger) -> None:
    events = audit.access_events(ledger)
    # Log order; consent and training calls are not access events.
    assert [e.tx_id for e in events] == sorted(
        ids(scenario, ACCESS_CALLS + ADMIN_CALLS), key=lambda t: ledger_seq(ledger, t)
    )
    by_id = {e.tx_id: e for e in events}
    for e in events:
        outcome = ledger.outcome(e.tx_id)
        tx = ledger.get(e.tx_id)
        block = ledger.block(e.height)
        assert e.tx_id in [t.id for t in block.transactions] and e.time_ms == block.header.time_ms
        assert (e.ok, e.reason) == (outcome.ok, outcome.reason)
        assert e.sender == key_of(tx) and e.method == tx.payload["method"]
        assert e.subject == tx.payload["args"].get("subject")
        assert e.kind == ("access" if tx.payload["method"] == "access" else "admin")
    assert [t for t in ids(scenario, ACCESS_CALLS) if not by_id[t].ok] == ids(scenario, DENIED_ACCESS)
    assert [t for t in by_id if by_id[t].break_glass] == ids(scenario, BREAK_GLASS)
    cut = by_id[scenario.tx["read-cut"]]
    assert cut.reason.startswith("sender was cut off at height") and cut.purpose == "ETREAT" and not cut.break_glass
    assert by_id[scenario.tx["cut"]].cutoff_reason == "credential compromise"
    assert by_id[scenario.tx["grant-hosp"]].expires_ms == FAR and by_id[scenario.tx["grant-hosp"]].purpose == "TREAT"
    assert by_id[scenario.tx["self-promote"]].reason == "only an admin (or a validator) may do this"


def ledger_seq(ledger: Ledger, tx_id: bytes) -> int:
    return [t.id for t in ledger.transactions()].index(tx_id)


def key_of(tx: Any) -> bytes:
    return tx.sender.to_bytes()  # type: ignore[no-any-return]


def test_consent_records_follow_the_contract_state(scenario: Scenario, ledger: Ledger) -> None:
    records = audit.consent_records(ledger)
    p1, p2 = scenario.patients["patient-1"], scenario.patients["patient-2"]
    p3 = scenario.patients["patient-3"]
    assert [(r.patient, r.provision_id) for r in records] == [(p1, 0), (p2, 0), (p1, 1), (p3, 0), (p3, 1)]
    assert [r.tx_id for r in records] == ids(
        scenario, ["consent-1", "consent-2", "consent-3", "consent-4", "consent-5"]
    )
    first, deny, second, fourth, fifth = records
    # Withdrawn in one block by two sites: each provision by the call of the site that recorded it.
    assert (fourth.withdrawn_tx, fifth.withdrawn_tx) == (scenario.tx["withdraw-4"], scenario.tx["withdraw-5"])
    assert fourth.withdrawn_ms == fifth.withdrawn_ms is not None
    assert first.withdrawn_tx == scenario.tx["withdraw-1"] and not first.active
    withdraw_block = ledger.block(ledger_height(ledger, scenario.tx["withdraw-1"]))
    assert first.withdrawn_ms == withdraw_block.header.time_ms
    assert first.classes == ("Observation", "lab results") and first.document == scenario.document
    assert deny.decision == "deny" and deny.active and deny.end_ms == FAR and deny.withdrawn_tx is None
    assert second.active and second.purposes == ("TREAT",) and second.recorded_by == key(scenario.people["hosp"])
    for r in records:
        held = ledger.view("consent", "provisions", patient=r.patient)[r.provision_id]  # type: ignore[index]
        assert (r.decision, list(r.purposes), r.start_ms, r.withdrawn_ms) == (
            held["decision"],
            held["purposes"],
            held["start_ms"],
            held["withdrawn_ms"],
        )


def ledger_height(ledger: Ledger, tx_id: bytes) -> int:
    return next(h for h in range(1, ledger.height + 1) if tx_id in [t.id for t in ledger.block(h).transactions])


# -- FHIR --------------------------------------------------------------------------------------


def _bundle_json(ledger: Ledger) -> dict[str, Any]:
    return json.loads(fhir.bundle(ledger).model_dump_json())  # type: ignore[no-any-return]


def test_the_bundle_and_every_resource_revalidate_through_the_r4b_models(ledger: Ledger) -> None:
    text = fhir.bundle(ledger).model_dump_json()
    again = Bundle.model_validate_json(text)
    assert again.model_dump_json() == text  # nothing lost or added by a round trip
    data = json.loads(text)
    assert data["resourceType"] == "Bundle" and data["type"] == "collection"
    kinds = [e["resource"]["resourceType"] for e in data["entry"]]
    assert kinds == ["AuditEvent"] * (len(ACCESS_CALLS) + len(ADMIN_CALLS)) + ["Consent"] * 5
    urls = [e["fullUrl"] for e in data["entry"]]
    assert len(set(urls)) == len(urls) and all(u.startswith("urn:uuid:") for u in urls)
    for entry in data["entry"]:
        model = {"AuditEvent": AuditEvent, "Consent": Consent}[entry["resource"]["resourceType"]]
        model.model_validate(entry["resource"])
        model.model_validate_json(json.dumps(entry["resource"]))
    assert data["identifier"]["value"] == ledger.tree_head().log_root.hex()
    assert _bundle_json(ledger) == data  # deterministic: the same ledger, the same export


def test_the_r4b_models_do_reject_a_resource_missing_a_required_element(ledger: Ledger) -> None:
    """The re-validation above can fail: drop an element R4B requires and it does."""
    event = _bundle_json(ledger)["entry"][0]["resource"]
    for element in ("recorded", "type", "agent", "source"):
        broken = {k: v for k, v in event.items() if k != element}
        with pytest.raises(ValidationError):
            AuditEvent.model_validate(broken)
    consent = _bundle_json(ledger)["entry"][-1]["resource"]
    for element in ("status", "scope", "category"):
        with pytest.raises(ValidationError):
            Consent.model_validate({k: v for k, v in consent.items() if k != element})


def test_audit_events_carry_the_ledger_outcome_purpose_and_transaction(scenario: Scenario, ledger: Ledger) -> None:
    resources = [e["resource"] for e in _bundle_json(ledger)["entry"] if e["resource"]["resourceType"] == "AuditEvent"]
    assert {r["id"] for r in resources} == {t.hex() for t in ids(scenario, ACCESS_CALLS + ADMIN_CALLS)}
    for r in resources:
        tx_id = bytes.fromhex(r["id"])
        outcome, tx = ledger.outcome(tx_id), ledger.get(tx_id)
        args = tx.payload["args"]
        # R4B requires type, recorded, agent (with requestor) and source (with observer).
        assert r["type"]["system"] == fhir.DCM and r["recorded"] and r["agent"]
        assert all("requestor" in a for a in r["agent"]) and sum(a["requestor"] for a in r["agent"]) == 1
        observer = r["source"]["observer"]
        assert observer["identifier"] == {"system": fhir.TX, "value": tx_id.hex()}
        assert r["source"]["site"] == CHAIN and CHAIN in observer["display"]
        block = ledger.block(ledger_height(ledger, tx_id))
        assert AuditEvent.model_validate(r).recorded.timestamp() * 1000 == block.header.time_ms
        assert r["outcome"] == ("0" if outcome.ok else "4")
        assert r.get("outcomeDesc") == (None if outcome.ok else outcome.reason)
        assert {"system": fhir.CALL, "code": f"access.{tx.payload['method']}"} in r["subtype"]
        purpose = args.get("purpose")
        if purpose == "bogus":
            assert r["purposeOfEvent"] == [{"text": "bogus"}]
        elif purpose is not None:
            assert r["purposeOfEvent"] == [{"coding": [{"system": fhir.ACT_REASON, "code": purpose}]}]
        else:
            assert "purposeOfEvent" not in r
        btg = outcome.ok and isinstance(outcome.value, dict) and outcome.value.get("break_glass") is True
        labels = r.get("meta", {}).get("security", [])
        assert (labels == [{"system": fhir.ACT_CODE, "code": "BTG"}]) is btg and (labels == []) is not btg
        assert any(c.get("code") == "110127" for c in r["subtype"]) is btg
        if tx.payload["method"] == "access":
            assert r["type"]["code"] == "110110" and r["action"] == "R"
            requestor = next(a for a in r["agent"] if a["requestor"])
            assert requestor["who"]["identifier"] == {"system": fhir.SUBJECT, "value": args["subject"].hex()}
            resource = next(e for e in r["entity"] if e["what"]["identifier"]["system"] == fhir.RESOURCE)
            assert resource["what"]["identifier"]["value"] == args["resource"]
        else:
            assert r["type"]["code"] == "110113"
            assert r["agent"][0]["who"]["identifier"]["value"] == tx.sender.to_bytes().hex()
    custodian = next(r for r in resources if r["id"] == scenario.tx["btg-custodian"].hex())
    assert [a["who"]["identifier"]["value"] for a in custodian["agent"]] == [
        key(scenario.people["er-doc"]).hex(),
        key(scenario.people["hosp"]).hex(),
    ]
    assert custodian["agent"][1]["type"]["coding"][0]["code"] == "CST"


def test_consents_name_the_patient_by_pseudonym_only(scenario: Scenario, ledger: Ledger) -> None:
    data = _bundle_json(ledger)
    consents = [e["resource"] for e in data["entry"] if e["resource"]["resourceType"] == "Consent"]
    p1, p2, p3 = (scenario.patients[n].hex() for n in ("patient-1", "patient-2", "patient-3"))
    assert [c["patient"] for c in consents] == [
        {"type": "Patient", "identifier": {"system": fhir.PSEUDONYM, "value": v}} for v in (p1, p2, p1, p3, p3)
    ]
    assert [c["status"] for c in consents] == ["inactive", "active", "active", "inactive", "inactive"]
    assert [c["provision"]["type"] for c in consents] == ["permit", "deny", "permit", "permit", "permit"]
    assert [c["policyRule"]["coding"][0]["code"] for c in consents] == ["OPTIN", "OPTOUT", "OPTIN", "OPTIN", "OPTIN"]
    for c in consents:
        assert c["scope"]["coding"][0] == {
            "system": fhir.CONSENT_SCOPE,
            "code": "patient-privacy",
            "display": "Privacy Consent",
        }
        assert c["category"] == [{"coding": [{"system": fhir.LOINC, "code": "59284-0"}]}]
        assert all(p["system"] == fhir.ACT_REASON for p in c["provision"]["purpose"])
    first = consents[0]
    assert [p["code"] for p in first["provision"]["purpose"]] == ["HRESCH"]
    assert first["provision"]["class"] == [
        {"system": fhir.DATA_CLASS, "code": "Observation"},
        {"system": fhir.DATA_CLASS, "code": "lab results"},
    ]
    assert {"use": "secondary", "system": fhir.TX, "value": scenario.tx["withdraw-1"].hex()} == {
        k: v for k, v in first["identifier"][1].items() if k != "type"
    }
    assert {"system": fhir.DOCUMENT, "value": scenario.document.hex()} in first["identifier"]
    assert consents[1]["provision"]["period"]["end"].startswith("2286-11-20")  # 10**13 ms
    # Nothing identifies a patient but the pseudonym: no identifier system other than
    # fedledger's and no names anywhere in the export.
    text = json.dumps(data)
    assert not [n for n in scenario.patients if n in text]
    patient_ids = [c["patient"]["identifier"]["value"] for c in consents]
    assert set(patient_ids) == {p1, p2, p3}
    systems = set()

    def walk(value: object) -> None:
        if isinstance(value, dict):
            if "value" in value and "system" in value and isinstance(value["value"], str):
                systems.add(value["system"])
            for v in value.values():
                walk(v)
        elif isinstance(value, list):
            for v in value:
                walk(v)

    walk(data)
    assert all(s.startswith("urn:fedledger:") for s in systems), systems


# -- HIPAA report and CSV -----------------------------------------------------------------------


def test_the_hipaa_report_counts_match_the_scenario(scenario: Scenario, ledger: Ledger) -> None:
    report = audit.hipaa_report(ledger)
    head = ledger.tree_head()
    assert report["ledger"] == {
        "chain_id": CHAIN,
        "height": ledger.height,
        "log_size": ledger.log_size,
        "log_root": head.log_root.hex(),
        "state_root": ledger.state_root.hex(),
        "head_hash": head.header.hash.hex(),
        "head_time": audit.iso_time(head.header.time_ms),
        "verified": True,
    }
    t = report["totals"]
    assert (t["requests"], t["permitted"], t["denied"], t["break_glass"]) == (7, 4, 3, 2)
    assert (t["administrative"], t["administrative_denied"]) == (11, 1)
    assert (t["consent_provisions"], t["consents_active"], t["consents_withdrawn"]) == (5, 2, 3)
    hx = {n: key(p).hex() for n, p in scenario.people.items()}
    assert report["by_subject"] == {
        k: v
        for k, v in sorted(
            {
                hx["hosp"]: {"requests": 1, "permitted": 1, "denied": 0, "break_glass": 0},
                hx["research"]: {"requests": 3, "permitted": 1, "denied": 2, "break_glass": 0},
                hx["er-doc"]: {"requests": 2, "permitted": 2, "denied": 0, "break_glass": 2},
                hx["breached"]: {"requests": 1, "permitted": 0, "denied": 1, "break_glass": 0},
            }.items()
        )
    }
    assert report["by_resource"] == {
        HOSTILE: {"requests": 1, "permitted": 0, "denied": 1, "break_glass": 0},
        RECORD: {"requests": 6, "permitted": 4, "denied": 2, "break_glass": 2},
    }
    assert report["administrative"]["assign_role"] == {"accepted": 5, "denied": 1}
    assert [d["tx_id"] for d in report["denials"]] == [t.hex() for t in ids(scenario, DENIED_ACCESS)]
    assert [d["reason"] for d in report["denials"]] == [ledger.outcome(t).reason for t in ids(scenario, DENIED_ACCESS)]
    assert [b["tx_id"] for b in report["break_glass"]] == [t.hex() for t in ids(scenario, BREAK_GLASS)]
    assert [d["tx_id"] for d in report["administrative_denials"]] == [scenario.tx["self-promote"].hex()]
    json.dumps(report)  # JSON-ready
    text = audit.format_report(report)
    assert "access requests: 7 (permitted 4, denied 3, break-glass 2)" in text
    assert all(t.hex() in text for t in ids(scenario, DENIED_ACCESS + BREAK_GLASS))
    assert "fully verified" in text and head.log_root.hex() in text


def test_a_report_without_verification_says_so(ledger: Ledger) -> None:
    report = audit.hipaa_report(ledger, verify=False)
    assert report["ledger"]["verified"] is False
    assert "NOT verified" in audit.format_report(report)


def test_csv_rows_match_the_events(scenario: Scenario, ledger: Ledger) -> None:
    events = audit.access_events(ledger)
    rows = list(csv.DictReader(io.StringIO(audit.csv_text(events), newline="")))
    assert list(rows[0]) == list(audit.CSV_COLUMNS)
    assert len(rows) == len(events) == len(ACCESS_CALLS) + len(ADMIN_CALLS)
    for row, e in zip(rows, events):
        assert row["tx_id"] == e.tx_id.hex() and int(row["height"]) == e.height and int(row["time_ms"]) == e.time_ms
        assert row["decision"] == ("permit" if ledger.outcome(e.tx_id).ok else "deny")
        assert row["reason"] == ledger.outcome(e.tx_id).reason
        assert row["break_glass"] == ("true" if e.tx_id in ids(scenario, BREAK_GLASS) else "false")
        assert row["sender"] == e.sender.hex() and row["kind"] == e.kind and row["method"] == e.method
        assert row["subject"] == (e.subject.hex() if e.subject else "")
    hostile = next(r for r in rows if r["tx_id"] == scenario.tx["hostile"].hex())
    assert hostile["resource"] == "'" + HOSTILE and hostile["purpose"] == "bogus"  # no live formula
    grant = next(r for r in rows if r["tx_id"] == scenario.tx["grant-hosp"].hex())
    assert (grant["purpose"], grant["expires_ms"], grant["resource"]) == ("TREAT", str(FAR), RECORD)


# -- the optional dependency -------------------------------------------------------------------


@pytest.fixture
def no_fhir(monkeypatch: pytest.MonkeyPatch) -> None:
    """Make ``import fhir.resources`` fail, as when the extra is not installed."""
    for name in [n for n in sys.modules if n == "fhir" or n.startswith("fhir.")]:
        monkeypatch.setitem(sys.modules, name, None)
    monkeypatch.setitem(sys.modules, "fhir.resources", None)
    monkeypatch.setattr(fhir, "_models", None)  # forget the classes a previous test imported


def test_fhir_export_without_fhir_resources_raises_missing_dependency(no_fhir: None, ledger: Ledger) -> None:
    event = audit.access_events(ledger)[0]
    for call in (lambda: fhir.bundle(ledger), lambda: fhir.audit_event(event, CHAIN), fhir.fhir_models):
        with pytest.raises(MissingDependency, match=r"fedledger\[fhir\]") as info:
            call()
        assert isinstance(info.value, FedLedgerError) and isinstance(info.value, ImportError)
        assert info.value.name == "fhir.resources" and info.value.extra == "fhir"
    # The rest of the audit does not need it.
    assert audit.hipaa_report(ledger, verify=False)["totals"]["requests"] == 7
    assert audit.csv_text(audit.access_events(ledger)).count("\r\n") == 1 + len(ACCESS_CALLS) + len(ADMIN_CALLS)


def run(*args: str, code: str | None = None) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHONPATH": SRC}
    argv = [sys.executable, "-c", code, *args] if code else [sys.executable, "-m", "fedledger", *args]
    return subprocess.run(argv, capture_output=True, text=True, env=env, timeout=300)


def test_importing_fedledger_audit_does_not_import_fhir_resources(scenario: Scenario) -> None:
    code = (
        "import sys\n"
        "from fedledger import audit\n"
        "from fedledger.audit import fhir\n"
        "from fedledger.contracts import BUILTIN\n"
        "from fedledger.ledger import Ledger\n"
        "with Ledger.open(sys.argv[1], read_only=True, contracts=BUILTIN) as l:\n"
        "    audit.format_report(audit.hipaa_report(l)); audit.csv_text(audit.access_events(l))\n"
        "assert not [m for m in sys.modules if m.startswith('fhir')], 'fhir was imported'\n"
    )
    out = run(str(scenario.path), code=code)
    assert out.returncode == 0, out.stderr


# -- the command line --------------------------------------------------------------------------


def test_cli_export_fhir_and_csv(scenario: Scenario, ledger: Ledger) -> None:
    out = run("audit", "export", str(scenario.path), "--format", "fhir")
    assert out.returncode == 0, out.stderr
    exported = Bundle.model_validate_json(out.stdout)
    assert json.loads(exported.model_dump_json()) == _bundle_json(ledger)
    default = run("audit", "export", str(scenario.path))
    assert default.returncode == 0 and default.stdout == out.stdout
    table = subprocess.run(  # bytes: the rows end in CRLF (RFC 4180)
        [sys.executable, "-m", "fedledger", "audit", "export", str(scenario.path), "--format", "csv"],
        capture_output=True,
        env={**os.environ, "PYTHONPATH": SRC},
        timeout=300,
    )
    assert table.returncode == 0, table.stderr
    assert table.stdout.decode() == audit.csv_text(audit.access_events(ledger))


def test_cli_report_text_and_json(scenario: Scenario, ledger: Ledger) -> None:
    out = run("audit", "report", str(scenario.path))
    assert out.returncode == 0, out.stderr
    assert out.stdout == audit.format_report(audit.hipaa_report(ledger))
    as_json = run("audit", "report", str(scenario.path), "--format", "json")
    assert as_json.returncode == 0 and json.loads(as_json.stdout) == audit.hipaa_report(ledger)


def test_cli_exit_codes(scenario: Scenario, tmp_path: Path) -> None:
    assert run("audit", "report", str(tmp_path / "none.db")).returncode == 3
    assert run("audit", "export", str(scenario.path), "--format", "xml").returncode == 2
    assert run("audit").returncode == 2
    missing = run(
        "audit",
        "export",
        str(scenario.path),
        code="import sys; sys.modules['fhir.resources'] = None\n"
        "from fedledger.__main__ import main\nsys.exit(main(sys.argv[1:]))",
    )
    assert missing.returncode == 2 and "pip install 'fedledger[fhir]'" in missing.stderr
    tampered = tmp_path / "t.db"
    tampered.write_bytes(scenario.path.read_bytes())
    db = sqlite3.connect(tampered)
    db.execute("UPDATE txs SET nonce = 77 WHERE seq = 3")
    db.commit()
    db.close()
    for action in ("report", "export"):
        failed = run("audit", action, str(tampered))
        assert failed.returncode == 1 and not failed.stdout, action
        assert "FAILED" in failed.stderr and "indexed columns disagree" in failed.stderr, action


def test_the_report_audits_the_ledger_first(ledger: Ledger, monkeypatch: pytest.MonkeyPatch) -> None:
    def failing(**kwargs: object) -> None:
        raise TamperedLedger(3, "transaction 7: signature does not verify")

    monkeypatch.setattr(ledger, "verify", failing)
    with pytest.raises(TamperedLedger, match="signature does not verify"):
        audit.hipaa_report(ledger)
    assert audit.hipaa_report(ledger, verify=False)["ledger"]["verified"] is False
