"""The access trail as FHIR R4B AuditEvent resources, consents as FHIR R4B Consent resources.

Built with the ``fhir.resources`` models (``pip install 'fedledger[fhir]'``: fhir.resources
8.3.0, whose ``R4B`` package is FHIR 4.3.0), so every resource is validated by its model as
it is made. The package is imported on first use only; without it these functions raise
:class:`~fedledger.errors.MissingDependency`. docs/audit.md gives the field mapping.

Nothing about a patient leaves the ledger but what the ledger holds: the keyed pseudonym, in
hex. Every resource is deterministic (ids and ``fullUrl`` are derived from transaction ids),
so exporting the same ledger twice gives the same Bundle.
"""

from __future__ import annotations

import importlib
import re
import uuid
from types import SimpleNamespace
from typing import Any, Final

from fedledger.audit.events import AccessEvent, ConsentRecord, access_events, consent_records, utc
from fedledger.contracts import PURPOSES
from fedledger.errors import InvalidArgument, MissingDependency
from fedledger.ledger import Ledger

__all__ = ["audit_event", "bundle", "consent", "fhir_models"]

#: Code systems (HL7 terminology, DICOM) and fedledger's own identifier systems.
DCM: Final = "http://dicom.nema.org/resources/ontology/DCM"
ACT_REASON: Final = "http://terminology.hl7.org/CodeSystem/v3-ActReason"
ACT_CODE: Final = "http://terminology.hl7.org/CodeSystem/v3-ActCode"
PARTICIPATION: Final = "http://terminology.hl7.org/CodeSystem/v3-ParticipationType"
SOURCE_TYPE: Final = "http://terminology.hl7.org/CodeSystem/security-source-type"
ENTITY_TYPE: Final = "http://terminology.hl7.org/CodeSystem/audit-entity-type"
OBJECT_ROLE: Final = "http://terminology.hl7.org/CodeSystem/object-role"
CONSENT_SCOPE: Final = "http://terminology.hl7.org/CodeSystem/consentscope"
LOINC: Final = "http://loinc.org"
TX: Final = "urn:fedledger:tx"
KEY: Final = "urn:fedledger:key"
SUBJECT: Final = "urn:fedledger:subject"
RESOURCE: Final = "urn:fedledger:resource"
PSEUDONYM: Final = "urn:fedledger:pseudonym"
CALL: Final = "urn:fedledger:contract-call"
DATA_CLASS: Final = "urn:fedledger:data-class"
DOCUMENT: Final = "urn:fedledger:consent-document-commitment"
LOG_ROOT: Final = "urn:fedledger:log-root"
#: fullUrl of every entry: urn:uuid, a UUID5 of the resource's type and id in this namespace.
NAMESPACE: Final = uuid.uuid5(uuid.NAMESPACE_URL, "urn:fedledger:audit")

#: (action, DICOM event type subtype) of each administrative method of the access contract.
_ADMIN: Final = {
    "assign_role": ("U", "110136", "Security Roles Changed"),
    "remove_role": ("U", "110136", "Security Roles Changed"),
    "revoke_all": ("U", "110137", "User Security Attributes Changed"),
    "restore": ("U", "110137", "User Security Attributes Changed"),
    "register": ("C", "110135", "Object Security Attributes Changed"),
    "grant": ("C", "110135", "Object Security Attributes Changed"),
    "revoke": ("D", "110135", "Object Security Attributes Changed"),
}
_CODE = re.compile(r"^[^\s]+( [^\s]+)*$")  # FHIR's code type
_CLASSES: Final = {
    "AuditEvent": "auditevent",
    "AuditEventAgent": "auditevent",
    "AuditEventEntity": "auditevent",
    "AuditEventEntityDetail": "auditevent",
    "AuditEventSource": "auditevent",
    "Bundle": "bundle",
    "BundleEntry": "bundle",
    "CodeableConcept": "codeableconcept",
    "Coding": "coding",
    "Consent": "consent",
    "ConsentProvision": "consent",
    "Identifier": "identifier",
    "Meta": "meta",
    "Period": "period",
    "Reference": "reference",
}


_models: SimpleNamespace | None = None


def fhir_models() -> Any:
    """The fhir.resources R4B model classes, imported on first use (MissingDependency without them)."""
    global _models
    if _models is None:
        try:
            package = importlib.import_module("fhir.resources")
            if not str(getattr(package, "__version__", "")).startswith("8."):
                raise ImportError(f"fhir.resources {getattr(package, '__version__', '?')} is not 8.x")
            _models = SimpleNamespace(
                **{
                    name: getattr(importlib.import_module(f"fhir.resources.R4B.{m}"), name)
                    for name, m in _CLASSES.items()
                }
            )
        except ImportError as exc:
            raise MissingDependency("fhir.resources", "fhir", "FHIR export") from exc
    return _models


def _full_url(kind: str, resource_id: str) -> str:
    return f"urn:uuid:{uuid.uuid5(NAMESPACE, f'{kind}/{resource_id}')}"


def _coding(system: str, code: str, display: str | None = None) -> Any:
    return fhir_models().Coding(system=system, code=code, display=display)


def _concept(system: str, code: str, display: str | None = None) -> Any:
    return fhir_models().CodeableConcept(coding=[_coding(system, code, display)])


def _purpose(purpose: str | None) -> Any:
    """A PurposeOfUse code as a CodeableConcept; text alone for an unknown one; None for none."""
    if not purpose:
        return None
    if purpose in PURPOSES:
        return _concept(ACT_REASON, purpose)
    return fhir_models().CodeableConcept(text=purpose)


def _ref(system: str, value: str, kind: str | None = None, display: str | None = None) -> Any:
    M = fhir_models()
    return M.Reference(type=kind, identifier=M.Identifier(system=system, value=value), display=display)


def _entity(system: str, value: str, role: str, role_display: str, details: dict[str, str], kind: bool) -> Any:
    M = fhir_models()
    return M.AuditEventEntity(
        what=_ref(system, value),
        type=_coding(ENTITY_TYPE, "2", "System Object") if kind else None,
        role=_coding(OBJECT_ROLE, role, role_display),
        detail=[M.AuditEventEntityDetail(type=k, valueString=v) for k, v in details.items() if v] or None,
    )


def audit_event(event: AccessEvent, chain_id: str) -> Any:
    """One access-contract call as a ``fhir.resources.R4B.auditevent.AuditEvent``.

    ``type`` is DICOM 110110 *Patient Record* for an access decision and 110113 *Security
    Alert* for an administrative call; ``outcome`` is ``0`` (accepted) or ``4`` (denied, with
    the contract's reason as ``outcomeDesc``); the source's observer is the ledger transaction
    (``urn:fedledger:tx``) on chain ``chain_id``; a break-glass access carries the security
    label v3-ActCode ``BTG`` and the subtype DICOM 110127 *Emergency Override Started*.
    """
    M = fhir_models()
    tx = event.tx_id.hex()
    subtype = [_coding(CALL, f"access.{event.method}")] if _CODE.match(event.method) else []
    subject = event.subject.hex() if event.subject else None
    sender = event.sender.hex()
    purpose = _purpose(event.purpose)
    details = {
        "role": event.role or "",
        "expires": _expires(event.expires_ms),
        "cutoff reason": event.cutoff_reason or "",
    }
    entities = []
    if event.kind == "access":
        kind, action = _coding(DCM, "110110", "Patient Record"), "R"
        if event.break_glass:
            subtype.append(_coding(DCM, "110127", "Emergency Override Started"))
        agents = [
            M.AuditEventAgent(
                who=_ref(SUBJECT, subject) if subject else _ref(KEY, sender),
                requestor=True,
                purposeOfUse=[purpose] if purpose is not None else None,
            )
        ]
        if subject and subject != sender:  # the custodian recorded its staff's access
            agents.append(
                M.AuditEventAgent(
                    who=_ref(KEY, sender), requestor=False, type=_concept(PARTICIPATION, "CST", "custodian")
                )
            )
    else:
        kind = _coding(DCM, "110113", "Security Alert")
        action, code, display = _ADMIN.get(event.method, ("E", None, None))
        if code is not None:
            subtype.append(_coding(DCM, code, display))
        agents = [M.AuditEventAgent(who=_ref(KEY, sender), requestor=True)]
        if subject:
            entities.append(_entity(SUBJECT, subject, "11", "Security User Entity", details, kind=False))
            details = {}
    if event.resource:
        entities.append(_entity(RESOURCE, event.resource, "4", "Domain Resource", details, kind=True))
    return M.AuditEvent(
        id=tx,
        meta=M.Meta(security=[_coding(ACT_CODE, "BTG")]) if event.break_glass else None,
        type=kind,
        subtype=subtype or None,
        action=action,
        recorded=utc(event.time_ms),
        outcome="0" if event.ok else "4",
        outcomeDesc=None if event.ok else (event.reason or "denied"),
        purposeOfEvent=[purpose] if purpose is not None else None,
        agent=agents,
        source=M.AuditEventSource(
            site=chain_id or None,
            observer=_ref(TX, tx, "Device", f"fedledger ledger {chain_id}, block {event.height}"),
            type=[_coding(SOURCE_TYPE, "6", "Security Server")],
        ),
        entity=entities or None,
    )


def _expires(ms: int | None) -> str:
    if ms is None:
        return ""
    try:
        return utc(ms).isoformat().replace("+00:00", "Z")
    except InvalidArgument:
        return f"{ms} ms since the epoch"


def _bound(ms: int | None) -> Any:
    """A period bound; None (open) for none or for one outside the years FHIR can write."""
    if ms is None:
        return None
    try:
        return utc(ms)
    except InvalidArgument:
        return None


def consent(record: ConsentRecord) -> Any:
    """One consent provision as a ``fhir.resources.R4B.consent.Consent``.

    ``status`` is ``active``, or ``inactive`` once withdrawn; ``scope`` is *patient-privacy*,
    ``category`` LOINC 59284-0, ``policyRule`` v3-ActCode ``OPTIN`` (permit) or ``OPTOUT``
    (deny); the patient is the pseudonym (``urn:fedledger:pseudonym``) and nothing else.
    """
    M = fhir_models()
    identifiers = [M.Identifier(use="official", system=TX, value=record.tx_id.hex())]
    if record.withdrawn_tx is not None:
        identifiers.append(
            M.Identifier(
                use="secondary",
                system=TX,
                value=record.withdrawn_tx.hex(),
                type=M.CodeableConcept(text="withdrawn by this transaction"),
            )
        )
    if record.document is not None:
        identifiers.append(M.Identifier(system=DOCUMENT, value=record.document.hex()))
    return M.Consent(
        id=record.tx_id.hex(),
        meta=M.Meta(lastUpdated=utc(record.recorded_ms if record.withdrawn_ms is None else record.withdrawn_ms)),
        identifier=identifiers,
        status="active" if record.active else "inactive",
        scope=_concept(CONSENT_SCOPE, "patient-privacy", "Privacy Consent"),
        category=[_concept(LOINC, "59284-0")],
        patient=_ref(PSEUDONYM, record.patient.hex(), "Patient"),
        dateTime=utc(record.recorded_ms),
        organization=[_ref(KEY, record.recorded_by.hex(), "Organization")],
        policyRule=_concept(ACT_CODE, "OPTIN" if record.decision == "permit" else "OPTOUT"),
        provision=M.ConsentProvision(
            type=record.decision,
            period=M.Period(start=_bound(record.start_ms), end=_bound(record.end_ms)),
            purpose=[_coding(ACT_REASON, p) for p in record.purposes] or None,
            class_fhir=[
                _coding(DATA_CLASS, c) if _CODE.match(c) else M.Coding(system=DATA_CLASS, display=c)
                for c in record.classes
            ]
            or None,
        ),
    )


def bundle(
    ledger: Ledger, *, events: list[AccessEvent] | None = None, consents: list[ConsentRecord] | None = None
) -> Any:
    """A ``collection`` Bundle of ``ledger``'s AuditEvents (log order), then its Consents.

    Its ``identifier`` is the log root of the ledger's head (``urn:fedledger:log-root``) and its
    ``timestamp`` the head block's time, so the export names the state it was made from.
    Verify the ledger first (:meth:`Ledger.verify`) where that matters: this only reads it.
    """
    M = fhir_models()
    events = access_events(ledger) if events is None else events
    consents = consent_records(ledger) if consents is None else consents
    entries = [
        M.BundleEntry(fullUrl=_full_url("AuditEvent", e.tx_id.hex()), resource=audit_event(e, ledger.chain_id))
        for e in events
    ]
    entries += [M.BundleEntry(fullUrl=_full_url("Consent", c.tx_id.hex()), resource=consent(c)) for c in consents]
    head = ledger.tree_head().header if ledger.height else None
    return M.Bundle(
        type="collection",
        identifier=None
        if head is None
        else M.Identifier(
            system=LOG_ROOT,
            value=head.log_root.hex(),
            assigner=M.Reference(display=f"fedledger ledger {ledger.chain_id} at height {head.height}"),
        ),
        timestamp=None if head is None else utc(head.time_ms),
        entry=entries or None,
    )
