"""The access trail and the consents as a ledger records them: plain values, no FHIR.

:func:`access_events` gives one :class:`AccessEvent` per recorded call of the built-in access
contract (:class:`~fedledger.contracts.AccessControl`), accepted or denied, in log order;
:func:`consent_records` one :class:`ConsentRecord` per consent provision recorded with the
built-in :class:`~fedledger.contracts.Consent` contract, with its withdrawal if any. Both only
read the ledger (a read-only one is enough) and take what a call decided from its recorded
:class:`~fedledger.ledger.Outcome`, never from a re-evaluation.
"""

from __future__ import annotations

import datetime
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any, Final

from fedledger.contracts import AccessControl, Consent
from fedledger.errors import InvalidArgument
from fedledger.ledger import Block, Ledger
from fedledger.ledger.state import CALL_KIND

__all__ = [
    "ADMIN_METHODS",
    "DATA_ACCESS",
    "AccessEvent",
    "ConsentRecord",
    "access_events",
    "consent_records",
    "iso_time",
]

#: The access contract's method whose calls are data access decisions.
DATA_ACCESS: Final = "access"
#: Its administrative (security) methods: roles, cut-off, custody, grants.
ADMIN_METHODS: Final = frozenset({"assign_role", "remove_role", "revoke_all", "restore", "register", "grant", "revoke"})
_EPOCH: Final = datetime.datetime(1970, 1, 1, tzinfo=datetime.timezone.utc)


def utc(ms: int) -> datetime.datetime:
    """Milliseconds since the epoch as an aware UTC datetime (InvalidArgument outside years 1-9999)."""
    try:
        return _EPOCH + datetime.timedelta(milliseconds=ms)
    except OverflowError:
        raise InvalidArgument("time", f"{ms} ms since the epoch is outside the years 1-9999") from None


def iso_time(ms: int) -> str:
    """``2024-05-01T12:00:00.123Z``: milliseconds since the epoch in ISO 8601, UTC."""
    t = utc(ms)
    return f"{t:%Y-%m-%dT%H:%M:%S}.{t.microsecond // 1000:03d}Z"


@dataclass(frozen=True)
class AccessEvent:
    """One recorded call of the access contract.

    ``kind`` is ``"access"`` for a data access decision (method ``access``) and ``"admin"``
    for the administrative calls (roles, cut-off, custody, grants). ``ok`` and ``reason`` are
    the call's recorded outcome (``reason`` is empty when it was accepted); ``break_glass`` is
    True for an access permitted only as emergency treatment. ``subject``, ``resource``,
    ``purpose``, ``role``, ``expires_ms`` and ``cutoff_reason`` are the call's arguments where
    its method has them (None otherwise). ``time_ms`` is the block's time.
    """

    tx_id: bytes
    height: int
    time_ms: int
    sender: bytes
    method: str
    kind: str
    ok: bool
    reason: str
    break_glass: bool
    subject: bytes | None = None
    resource: str | None = None
    purpose: str | None = None
    role: str | None = None
    expires_ms: int | None = None
    cutoff_reason: str | None = None

    @property
    def decision(self) -> str:
        """``"permit"`` (accepted) or ``"deny"``."""
        return "permit" if self.ok else "deny"


@dataclass(frozen=True)
class ConsentRecord:
    """One consent provision as the consent contract holds it after the last block.

    ``patient`` is the patient's 32-byte keyed pseudonym (the ledger holds nothing else about
    a patient); ``provision_id`` its number among the patient's provisions; ``recorded_by``
    the key of the site that recorded it; ``tx_id``/``height`` the call that recorded it and
    ``withdrawn_tx``/``withdrawn_ms`` the call that withdrew it (None while active).
    """

    patient: bytes
    provision_id: int
    decision: str
    purposes: tuple[str, ...]
    start_ms: int
    end_ms: int | None
    classes: tuple[str, ...]
    document: bytes | None
    recorded_by: bytes
    recorded_ms: int
    tx_id: bytes
    height: int
    withdrawn_ms: int | None = None
    withdrawn_tx: bytes | None = None

    @property
    def active(self) -> bool:
        return self.withdrawn_ms is None


def _calls(ledger: Ledger, contract: str) -> Iterator[tuple[Block, Any, Any, dict[str, Any]]]:
    """(block, transaction, outcome, args) for every recorded call of ``contract``, in log order."""
    for height in range(1, ledger.height + 1):
        block = ledger.block(height)
        for tx, outcome in zip(block.transactions, block.outcomes):
            payload = tx.payload
            if tx.kind != CALL_KIND or type(payload) is not dict or payload.get("contract") != contract:
                continue
            args = payload.get("args")
            yield block, tx, outcome, args if type(args) is dict else {}


def _typed(args: dict[str, Any], name: str, kind: type) -> Any:
    value = args.get(name)
    return value if type(value) is kind else None


def access_events(ledger: Ledger) -> list[AccessEvent]:
    """Every recorded call of the access contract, accepted or denied, in log order."""
    out = []
    for block, tx, outcome, args in _calls(ledger, AccessControl.name):
        method = tx.payload.get("method")
        method = method if type(method) is str else ""
        value = outcome.value
        out.append(
            AccessEvent(
                tx_id=tx.id,
                height=block.height,
                time_ms=block.header.time_ms,
                sender=tx.sender.to_bytes(),
                method=method,
                kind="access" if method == DATA_ACCESS else "admin",
                ok=outcome.ok,
                reason=outcome.reason,
                break_glass=bool(outcome.ok and type(value) is dict and value.get("break_glass") is True),
                subject=_typed(args, "subject", bytes),
                resource=_typed(args, "resource", str),
                purpose=_typed(args, "purpose", str),
                role=_typed(args, "role", str),
                expires_ms=_typed(args, "expires_ms", int),
                cutoff_reason=_typed(args, "reason", str) if method == "revoke_all" else None,
            )
        )
    return out


def consent_records(ledger: Ledger) -> list[ConsentRecord]:
    """Every consent provision on the ledger, in the order they were recorded.

    The provisions are the consent contract's own state after the last block (its
    ``provisions`` view); the transactions that recorded and withdrew each one are found in
    the log (accepted ``record`` and ``withdraw`` calls).
    """
    recorded: dict[tuple[bytes, int], tuple[bytes, int]] = {}  # (patient, id) -> (tx id, height)
    withdrawals: list[tuple[bytes, bytes, int, int | None, bytes]] = []  # patient, sender, time, id, tx
    order: list[tuple[bytes, int]] = []
    for block, tx, outcome, args in _calls(ledger, Consent.name):
        patient = _typed(args, "patient", bytes)
        if not outcome.ok or patient is None:
            continue
        method = tx.payload.get("method")
        if method == "record" and type(outcome.value) is int:
            recorded[(patient, outcome.value)] = (tx.id, block.height)
            order.append((patient, outcome.value))
        elif method == "withdraw":
            consent_id = _typed(args, "consent_id", int)
            withdrawals.append((patient, tx.sender.to_bytes(), block.header.time_ms, consent_id, tx.id))
    provisions: dict[tuple[bytes, int], dict[str, Any]] = {}
    for patient in dict.fromkeys(p for p, _ in order):
        held: list[dict[str, Any]] = ledger.view(Consent.name, "provisions", patient=patient)
        for p in held:
            provisions[(patient, p["id"])] = p
    withdrawn_by: dict[tuple[bytes, int], bytes] = {}
    for patient, sender, time_ms, consent_id, tx_id in withdrawals:
        # The contract's rule: the call withdraws the sender's provisions still active (or the
        # one named); the first call whose block time is the withdrawal time is the one.
        for key, p in provisions.items():
            if (
                key[0] == patient
                and key not in withdrawn_by
                and p["withdrawn_ms"] == time_ms
                and p["by"] == sender
                and (consent_id is None or p["id"] == consent_id)
            ):
                withdrawn_by[key] = tx_id
    out = []
    for key in order:
        p = provisions[key]
        tx_id, height = recorded[key]
        out.append(
            ConsentRecord(
                patient=key[0],
                provision_id=key[1],
                decision=p["decision"],
                purposes=tuple(p["purposes"]),
                start_ms=p["start_ms"],
                end_ms=p["end_ms"],
                classes=tuple(p["classes"]),
                document=p["document"],
                recorded_by=p["by"],
                recorded_ms=p["recorded_ms"],
                tx_id=tx_id,
                height=height,
                withdrawn_ms=p["withdrawn_ms"],
                withdrawn_tx=withdrawn_by.get(key),
            )
        )
    return out
