"""The consortium ledger: signed transactions, stake-weighted blocks, RFC 9162 proofs, durable store."""

from __future__ import annotations

from fedledger.ledger.block import BlockHeader, Certificate, Evidence, Vote
from fedledger.ledger.genesis import Genesis
from fedledger.ledger.ledger import Block, Ledger, SubmitResult
from fedledger.ledger.receipt import (
    ConsistencyProof,
    LogEntry,
    Receipt,
    SignedTreeHead,
    ValidatorChange,
    verify_consistency,
    verify_receipt,
)
from fedledger.ledger.state import GovernanceProposal, KindHandler, register_kind
from fedledger.ledger.transaction import MAX_PAYLOAD_BYTES, Transaction
from fedledger.ledger.validators import ValidatorSet

__all__ = [
    "MAX_PAYLOAD_BYTES",
    "Block",
    "BlockHeader",
    "Certificate",
    "ConsistencyProof",
    "Evidence",
    "Genesis",
    "GovernanceProposal",
    "KindHandler",
    "Ledger",
    "LogEntry",
    "Receipt",
    "SignedTreeHead",
    "SubmitResult",
    "Transaction",
    "ValidatorChange",
    "ValidatorSet",
    "Vote",
    "register_kind",
    "verify_consistency",
    "verify_receipt",
]
