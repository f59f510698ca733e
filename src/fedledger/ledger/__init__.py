"""The consortium ledger: signed transactions, stake-weighted blocks, RFC 9162 proofs, durable store."""

from __future__ import annotations

from fedledger.ledger.block import BlockHeader, Certificate, Evidence, Outcome, Vote
from fedledger.ledger.contract import CallContext, Contract, ContractState, call, view
from fedledger.ledger.genesis import Genesis
from fedledger.ledger.ledger import Block, Call, CallResult, Ledger, SubmitResult
from fedledger.ledger.receipt import (
    ConsistencyProof,
    LogEntry,
    Receipt,
    SignedTreeHead,
    ValidatorChange,
    verify_consistency,
    verify_outcome,
    verify_receipt,
)
from fedledger.ledger.state import GovernanceProposal
from fedledger.ledger.transaction import MAX_PAYLOAD_BYTES, Transaction
from fedledger.ledger.validators import ValidatorSet

__all__ = [
    "MAX_PAYLOAD_BYTES",
    "Block",
    "BlockHeader",
    "Call",
    "CallContext",
    "CallResult",
    "Certificate",
    "ConsistencyProof",
    "Contract",
    "ContractState",
    "Evidence",
    "Genesis",
    "GovernanceProposal",
    "Ledger",
    "LogEntry",
    "Outcome",
    "Receipt",
    "SignedTreeHead",
    "SubmitResult",
    "Transaction",
    "ValidatorChange",
    "ValidatorSet",
    "Vote",
    "call",
    "verify_consistency",
    "verify_outcome",
    "verify_receipt",
    "view",
]
