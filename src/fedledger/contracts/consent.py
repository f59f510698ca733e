"""Patient consent, in the shape of FHIR Consent: permit or deny provisions for purposes of use,
a period and data classes, recorded by the site that holds the patient's consent, and withdrawn.

Patients are 32-byte keyed pseudonyms (:func:`fedledger.contracts.pseudonym.pseudonym`); the
consent document itself stays off the chain (its commitment may be recorded).

``consented(patients, purpose, at)`` answers for a training cohort: a patient is permitted when
an active ``permit`` provision covers the purpose (and data class) at time ``at`` and no active
``deny`` provision does (deny overrides permit). It returns the permitted and excluded patients
and the **consent snapshot hash**: SHA-256 over the question and every provision of every
patient asked about, which a training round records so an auditor can re-ask the same question
at the same height and get the same answer.
"""

from __future__ import annotations

import hashlib
from typing import Any, Final

from fedledger import encoding
from fedledger.contracts.access import PURPOSES
from fedledger.errors import ContractError
from fedledger.ledger.contract import CallContext, Contract, ContractState, call, view

__all__ = ["Consent", "covers"]

DECISIONS: Final = frozenset({"permit", "deny"})
#: The most provisions one patient may have on record.
MAX_PROVISIONS: Final = 64
MAX_CLASSES: Final = 16


def _patient(value: bytes) -> str:
    if len(value) != 32:
        raise ContractError("patient must be a 32-byte pseudonym, never an identifier")
    return value.hex()


def covers(provision: dict[str, Any], purpose: str, at: int, data_class: str | None) -> bool:
    """Whether an active provision applies to ``purpose`` (and ``data_class``) at time ``at``."""
    if provision["withdrawn_ms"] is not None and provision["withdrawn_ms"] <= at:
        return False
    if at < provision["start_ms"] or (provision["end_ms"] is not None and at >= provision["end_ms"]):
        return False
    if purpose not in provision["purposes"]:
        return False
    classes = provision["classes"]
    return not classes or data_class is None or data_class in classes


def permitted(provisions: list[dict[str, Any]], purpose: str, at: int, data_class: str | None) -> bool:
    applicable = [p for p in provisions if covers(p, purpose, at, data_class)]
    return any(p["decision"] == "permit" for p in applicable) and not any(p["decision"] == "deny" for p in applicable)


class Consent(Contract):
    """Consent provisions per patient pseudonym, their withdrawal, and cohort checks."""

    name = "consent"
    version = 1

    @call
    def record(
        self,
        state: ContractState,
        ctx: CallContext,
        patient: bytes,
        decision: str,
        purposes: list[str],
        start_ms: int,
        end_ms: int | None = None,
        classes: list[str] | None = None,
        document: bytes | None = None,
    ) -> int:
        """Record a provision; returns its id (per patient, from 0). ``document``: an optional
        32-byte commitment to the signed consent form kept off the chain."""
        key = f"consent/{_patient(patient)}"
        if decision not in DECISIONS:
            raise ContractError("decision must be 'permit' or 'deny'")
        if not purposes or any(p not in PURPOSES for p in purposes):
            raise ContractError("purposes must be known PurposeOfUse codes")
        if end_ms is not None and end_ms <= start_ms:
            raise ContractError("the period must end after it starts")
        classes = classes or []
        if len(classes) > MAX_CLASSES or any(not c or len(c) > 64 for c in classes):
            raise ContractError(f"at most {MAX_CLASSES} data classes of 1-64 characters")
        if document is not None and len(document) != 32:
            raise ContractError("document must be a 32-byte commitment")
        provisions = state.get(key) or []
        if len(provisions) >= MAX_PROVISIONS:
            raise ContractError(f"a patient has at most {MAX_PROVISIONS} provisions on record")
        provisions.append(
            {
                "id": len(provisions),
                "decision": decision,
                "purposes": sorted(set(purposes)),
                "start_ms": start_ms,
                "end_ms": end_ms,
                "classes": sorted(set(classes)),
                "document": document,
                "by": ctx.sender,
                "recorded_ms": ctx.time_ms,
                "withdrawn_ms": None,
            }
        )
        state[key] = provisions
        return len(provisions) - 1

    @call
    def withdraw(self, state: ContractState, ctx: CallContext, patient: bytes, consent_id: int | None = None) -> int:
        """Withdraw one provision (or, with no id, every active one the sender recorded) from the
        block time on; returns how many. Only the site that recorded a provision may withdraw
        it (on the patient's request)."""
        key = f"consent/{_patient(patient)}"
        provisions = state.get(key) or []
        count = 0
        for p in provisions:
            if consent_id is not None and p["id"] != consent_id:
                continue
            if p["withdrawn_ms"] is not None:
                continue
            if p["by"] != ctx.sender:
                if consent_id is not None:
                    raise ContractError("only the site that recorded a provision may withdraw it")
                continue  # "all" means all that this site recorded
            p["withdrawn_ms"] = ctx.time_ms
            count += 1
        if not count:
            raise ContractError("no active provision to withdraw")
        state[key] = provisions
        return count

    @view
    def provisions(self, state: ContractState, ctx: CallContext, patient: bytes) -> list[dict[str, Any]]:
        return list(state.get(f"consent/{_patient(patient)}") or [])

    @view
    def consented(
        self,
        state: ContractState,
        ctx: CallContext,
        patients: list[bytes],
        purpose: str,
        at: int | None = None,
        data_class: str | None = None,
    ) -> dict[str, Any]:
        """Which of ``patients`` consent to ``purpose`` at time ``at`` (default: the block time).

        Returns ``{"permitted": [...], "excluded": [...], "snapshot": 32 bytes, "height", "at"}``.
        """
        if purpose not in PURPOSES:
            raise ContractError("purpose must be a known PurposeOfUse code")
        when = ctx.time_ms if at is None else at
        cohort = sorted(set(patients))
        records: list[tuple[bytes, list[dict[str, Any]]]] = [
            (p, state.get(f"consent/{_patient(p)}") or []) for p in cohort
        ]
        permitted_ = [p for p, provisions in records if permitted(provisions, purpose, when, data_class)]
        chosen = set(permitted_)
        excluded = [p for p, _ in records if p not in chosen]
        snapshot = hashlib.sha256(
            encoding.encode(
                {
                    "type": "fedledger.consent-snapshot/1",
                    "purpose": purpose,
                    "at": when,
                    "class": data_class,
                    "records": [[p, provisions] for p, provisions in records],  # type: ignore[list-item]
                }
            )
        ).digest()
        return {"permitted": permitted_, "excluded": excluded, "snapshot": snapshot, "height": ctx.height, "at": when}
