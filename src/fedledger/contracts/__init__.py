"""The built-in contracts: access control, patient consent, training policy, prescriptions.

Offer them to a ledger (``Ledger.open(..., contracts=BUILTIN)``) to pin them in its genesis.
Patients and records appear on the ledger only as keyed pseudonyms or salted commitments
(:mod:`fedledger.contracts.pseudonym`), never as names or unsalted hashes.
"""

from __future__ import annotations

from typing import Final

from fedledger.contracts.access import PURPOSES, ROLES, AccessControl
from fedledger.contracts.consent import Consent
from fedledger.contracts.prescriptions import Prescriptions
from fedledger.contracts.pseudonym import commit, opens, pseudonym
from fedledger.contracts.training import AGGREGATORS, TrainingPolicy
from fedledger.ledger.contract import Contract

__all__ = [
    "AGGREGATORS",
    "BUILTIN",
    "PURPOSES",
    "ROLES",
    "AccessControl",
    "Consent",
    "Prescriptions",
    "TrainingPolicy",
    "commit",
    "opens",
    "pseudonym",
]

#: Every built-in contract class.
BUILTIN: Final[tuple[type[Contract], ...]] = (AccessControl, Consent, TrainingPolicy, Prescriptions)
