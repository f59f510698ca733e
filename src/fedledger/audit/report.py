"""The HIPAA audit-controls report (45 CFR 164.312(b)) and the CSV form of the access trail.

§164.312(b) asks for mechanisms that record and examine activity in systems that hold
electronic protected health information. The ledger records every access decision; this
module is the examining half: accesses by subject and by resource, the denials and the
break-glass accesses listed for review, each with the transaction id that proves it, and the
ledger's head (chain id, height, log root) so that the report is tied to one verified state.
"""

from __future__ import annotations

import csv
import io
from collections.abc import Iterable
from typing import Any, Final

from fedledger.audit.events import AccessEvent, ConsentRecord, access_events, consent_records, iso_time
from fedledger.ledger import Ledger

__all__ = ["CSV_COLUMNS", "REPORT_TYPE", "csv_text", "format_report", "hipaa_report"]

REPORT_TYPE: Final = "fedledger.hipaa-audit-report/1"
#: The columns of :func:`csv_text`, in order (docs/audit.md says what each holds).
CSV_COLUMNS: Final = (
    "tx_id",
    "height",
    "time",
    "time_ms",
    "kind",
    "method",
    "decision",
    "reason",
    "break_glass",
    "sender",
    "subject",
    "resource",
    "purpose",
    "role",
    "expires_ms",
    "cutoff_reason",
)
#: A cell a spreadsheet would read as a formula starts with one of these; such cells get a
#: leading apostrophe (denied calls carry whatever text their sender chose).
_FORMULA_START: Final = ("=", "+", "-", "@", "\t", "\r")


def _cell(value: object) -> str:
    if value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, bytes):
        return value.hex()
    text = str(value)
    return "'" + text if text.startswith(_FORMULA_START) else text


def csv_text(events: Iterable[AccessEvent]) -> str:
    """The access trail as CSV (RFC 4180, a header row, one row per event, :data:`CSV_COLUMNS`)."""
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\r\n")
    writer.writerow(CSV_COLUMNS)
    for e in events:
        row = {
            "tx_id": e.tx_id,
            "height": e.height,
            "time": iso_time(e.time_ms),
            "time_ms": e.time_ms,
            "kind": e.kind,
            "method": e.method,
            "decision": e.decision,
            "reason": e.reason,
            "break_glass": e.break_glass,
            "sender": e.sender,
            "subject": e.subject,
            "resource": e.resource,
            "purpose": e.purpose,
            "role": e.role,
            "expires_ms": e.expires_ms,
            "cutoff_reason": e.cutoff_reason,
        }
        writer.writerow([_cell(row[c]) for c in CSV_COLUMNS])
    return out.getvalue()


def _listed(e: AccessEvent) -> dict[str, Any]:
    """One event as a report lists it for review."""
    return {
        "tx_id": e.tx_id.hex(),
        "height": e.height,
        "time": iso_time(e.time_ms),
        "method": e.method,
        "sender": e.sender.hex(),
        "subject": None if e.subject is None else e.subject.hex(),
        "resource": e.resource,
        "purpose": e.purpose,
        "reason": e.reason,
    }


def _counts() -> dict[str, int]:
    return {"requests": 0, "permitted": 0, "denied": 0, "break_glass": 0}


def _count(into: dict[str, int], e: AccessEvent) -> None:
    into["requests"] += 1
    into["permitted" if e.ok else "denied"] += 1
    into["break_glass"] += e.break_glass


def hipaa_report(
    ledger: Ledger,
    *,
    verify: bool = True,
    events: list[AccessEvent] | None = None,
    consents: list[ConsentRecord] | None = None,
) -> dict[str, Any]:
    """The audit-controls report of ``ledger`` as a JSON-ready dict.

    With ``verify`` (the default) the ledger is fully audited first (:meth:`Ledger.verify`:
    every signature, root and replayed outcome), and the report says so; a ledger that fails
    raises :class:`~fedledger.errors.TamperedLedger` and gives no report. ``events`` and
    ``consents`` may be passed when already read (:func:`access_events`,
    :func:`consent_records`).
    """
    if verify:
        ledger.verify()
    events = access_events(ledger) if events is None else events
    consents = consent_records(ledger) if consents is None else consents
    head = ledger.tree_head().header if ledger.height else None
    totals = {**_counts(), "administrative": 0, "administrative_denied": 0}
    by_subject: dict[str, dict[str, int]] = {}
    by_resource: dict[str, dict[str, int]] = {}
    admin_by_method: dict[str, dict[str, int]] = {}
    denials, break_glass, admin_denials = [], [], []
    for e in events:
        if e.kind == "access":
            _count(totals, e)
            if e.subject is not None:
                _count(by_subject.setdefault(e.subject.hex(), _counts()), e)
            if e.resource is not None:
                _count(by_resource.setdefault(e.resource, _counts()), e)
            if not e.ok:
                denials.append(_listed(e))
            if e.break_glass:
                break_glass.append(_listed(e))
        else:
            totals["administrative"] += 1
            counts = admin_by_method.setdefault(e.method, {"accepted": 0, "denied": 0})
            counts["accepted" if e.ok else "denied"] += 1
            if not e.ok:
                totals["administrative_denied"] += 1
                admin_denials.append(_listed(e))
    return {
        "type": REPORT_TYPE,
        "standard": "45 CFR 164.312(b) audit controls",
        "ledger": {
            "chain_id": ledger.chain_id,
            "height": ledger.height,
            "log_size": ledger.log_size,
            "log_root": None if head is None else head.log_root.hex(),
            "state_root": None if head is None else head.state_root.hex(),
            "head_hash": None if head is None else head.hash.hex(),
            "head_time": None if head is None else iso_time(head.time_ms),
            "verified": verify,
        },
        "period": {
            "first": iso_time(events[0].time_ms) if events else None,
            "last": iso_time(events[-1].time_ms) if events else None,
        },
        "totals": {
            **totals,
            "consent_provisions": len(consents),
            "consents_active": sum(c.active for c in consents),
            "consents_withdrawn": sum(not c.active for c in consents),
        },
        "by_subject": dict(sorted(by_subject.items())),
        "by_resource": dict(sorted(by_resource.items())),
        "administrative": dict(sorted(admin_by_method.items())),
        "denials": denials,
        "break_glass": break_glass,
        "administrative_denials": admin_denials,
    }


def _safe(value: object) -> str:
    """Text for a terminal: control characters escaped (a denied call's text is its sender's)."""
    text = "-" if value is None else str(value)
    return text if text.isprintable() else text.encode("unicode_escape").decode("ascii")


def _table(title: str, rows: dict[str, dict[str, int]], key: str) -> list[str]:
    lines = [f"{title}:"]
    if not rows:
        return [*lines, "  (none)"]
    lines.append(f"  {key:<64}  {'requests':>8}  {'permitted':>9}  {'denied':>6}  {'break-glass':>11}")
    for name, c in rows.items():
        lines.append(
            f"  {_safe(name):<64}  {c['requests']:>8}  {c['permitted']:>9}  {c['denied']:>6}  {c['break_glass']:>11}"
        )
    return lines


def _review(title: str, items: list[dict[str, Any]]) -> list[str]:
    lines = [f"{title} ({len(items)}):"]
    if not items:
        return [*lines, "  (none)"]
    for i in items:
        lines.append(f"  block {i['height']}  {i['time']}  {i['method']}  tx {i['tx_id']}")
        lines.append(
            f"    subject {_safe(i['subject'])}  resource {_safe(i['resource'])}  purpose {_safe(i['purpose'])}"
        )
        lines.append(f"    sender {i['sender']}" + (f"  reason: {_safe(i['reason'])}" if i["reason"] else ""))
    return lines


def format_report(report: dict[str, Any]) -> str:
    """The report of :func:`hipaa_report` as text for a reader."""
    led, t, period = report["ledger"], report["totals"], report["period"]
    lines = [
        f"Audit report, {report['standard']}",
        f"ledger {_safe(led['chain_id'])}: height {led['height']}, {led['log_size']} transactions, "
        f"log root {led['log_root'] or '-'}",
        f"head block {led['head_hash'] or '-'} at {led['head_time'] or '-'}; "
        + ("fully verified (signatures, roots, replayed outcomes)" if led["verified"] else "NOT verified"),
        f"period: {period['first'] or '-'} to {period['last'] or '-'}",
        "",
        f"access requests: {t['requests']} (permitted {t['permitted']}, denied {t['denied']}, "
        f"break-glass {t['break_glass']})",
        f"administrative calls: {t['administrative']} (denied {t['administrative_denied']})",
        f"consent provisions: {t['consent_provisions']} (active {t['consents_active']}, "
        f"withdrawn {t['consents_withdrawn']})",
        "",
        *_table("By subject", report["by_subject"], "subject"),
        "",
        *_table("By resource", report["by_resource"], "resource"),
        "",
        *_review("Denied accesses, for review", report["denials"]),
        "",
        *_review("Break-glass accesses, for review", report["break_glass"]),
        "",
        *_review("Denied administrative calls", report["administrative_denials"]),
    ]
    return "\n".join(lines) + "\n"
