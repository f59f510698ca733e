"""Audit export: the ledger's access trail and consents for auditors and their tools.

- :func:`access_events` and :func:`consent_records` read a ledger (read-only is enough) and
  give plain values: one event per recorded call of the built-in access contract (data
  access decisions, with break-glass flagged, and the administrative calls), one record per
  consent provision with its withdrawal.
- :func:`hipaa_report` (and :func:`format_report` for reading) examines them as 45 CFR
  164.312(b) asks: accesses by subject and by resource, the denials and break-glass accesses
  for review with their transaction ids, tied to the ledger's verified head.
- :func:`csv_text`: the access trail as CSV, one row per event (:data:`CSV_COLUMNS`).
- :mod:`fedledger.audit.fhir`: FHIR R4B AuditEvent and Consent resources and a Bundle, built
  with the ``fhir.resources`` models (``pip install 'fedledger[fhir]'``), imported on first use.

The command line: ``fedledger audit export PATH --format fhir|csv`` and
``fedledger audit report PATH``. docs/audit.md describes every field.
"""

from __future__ import annotations

from fedledger.audit.events import (
    ADMIN_METHODS,
    DATA_ACCESS,
    AccessEvent,
    ConsentRecord,
    access_events,
    consent_records,
    iso_time,
)
from fedledger.audit.report import CSV_COLUMNS, REPORT_TYPE, csv_text, format_report, hipaa_report

__all__ = [
    "ADMIN_METHODS",
    "CSV_COLUMNS",
    "DATA_ACCESS",
    "REPORT_TYPE",
    "AccessEvent",
    "ConsentRecord",
    "access_events",
    "consent_records",
    "csv_text",
    "format_report",
    "hipaa_report",
    "iso_time",
]
