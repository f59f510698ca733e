"""Offline checking of ledger receipts: no database, only the standard library and the crypto layer.

A receipt (from :meth:`Ledger.prove`) is JSON:

    {"type": "fedledger.receipt/1", "chain_id": "...",
     "transaction": "<hex of the transaction's wire bytes>", "log_index": 17,
     "inclusion_proof": ["<hex>", ...],
     "tree_head": {"header": "<hex>", "certificate": "<hex>"},
     "validators": [["<hex key>", stake], ...]}

:func:`verify_receipt` checks, in order: the header's validator-set hash matches the receipt's
validators (and, if given, the auditor's trusted set); validators with more than 2/3 of the
stake signed the header; the transaction's own signature and chain; and the RFC 9162
inclusion proof of the transaction's bytes at ``log_index`` under the header's log root.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Final

from fedledger.crypto import merkle, signing
from fedledger.errors import FedLedgerError, InvalidReceipt
from fedledger.ledger.block import BlockHeader, Certificate
from fedledger.ledger.transaction import Transaction
from fedledger.ledger.validators import ValidatorSet

__all__ = ["verify_receipt"]

RECEIPT_TYPE: Final = "fedledger.receipt/1"
_KEYS: Final = frozenset({"type", "chain_id", "transaction", "log_index", "inclusion_proof", "tree_head", "validators"})


def _hex(value: object, what: str) -> bytes:
    if type(value) is not str:
        raise InvalidReceipt(f"receipt: {what} must be a hex string")
    try:
        return bytes.fromhex(value)
    except ValueError:
        raise InvalidReceipt(f"receipt: {what} is not valid hex") from None


def verify_receipt(receipt: Mapping[str, object] | str | bytes,
                   trusted_validators: ValidatorSet | None = None) -> Transaction:
    """Check a receipt offline and return the transaction it proves; InvalidReceipt if it does not hold.

    Without ``trusted_validators`` the receipt is checked against the validator set it carries,
    which proves internal consistency only: an auditor should pass the set it trusts (from
    genesis, or followed through governance).
    """
    if isinstance(receipt, (str, bytes)):
        try:
            receipt = json.loads(receipt)
        except ValueError as exc:
            raise InvalidReceipt(f"receipt: not JSON: {exc}") from None
    if not isinstance(receipt, Mapping) or set(receipt) != _KEYS:
        raise InvalidReceipt(f"receipt: expected the keys {sorted(_KEYS)}")
    if receipt["type"] != RECEIPT_TYPE:
        raise InvalidReceipt(f"receipt: type is {receipt['type']!r}, expected {RECEIPT_TYPE!r}")
    head = receipt["tree_head"]
    if not isinstance(head, Mapping) or set(head) != {"header", "certificate"}:
        raise InvalidReceipt("receipt: tree_head must hold header and certificate")
    index = receipt["log_index"]
    if type(index) is not int or index < 0:
        raise InvalidReceipt("receipt: log_index must be a non-negative integer")
    proof_hex = receipt["inclusion_proof"]
    if not isinstance(proof_hex, list):
        raise InvalidReceipt("receipt: inclusion_proof must be a list")
    raw_validators = receipt["validators"]
    if not isinstance(raw_validators, list) or not all(isinstance(v, list) and len(v) == 2 for v in raw_validators):
        raise InvalidReceipt("receipt: validators must be [[key, stake], ...]")
    try:
        header = BlockHeader.from_bytes(_hex(head["header"], "tree_head.header"))
        certificate = Certificate.from_bytes(_hex(head["certificate"], "tree_head.certificate"))
        validators = ValidatorSet({_hex(k, "validator key"): s for k, s in raw_validators})
        tx_bytes = _hex(receipt["transaction"], "transaction")
        tx = Transaction.from_bytes(tx_bytes)
        proof = [_hex(p, f"inclusion_proof[{i}]") for i, p in enumerate(proof_hex)]
    except InvalidReceipt:
        raise
    except FedLedgerError as exc:
        raise InvalidReceipt(f"receipt: malformed: {exc}") from None
    if header.chain_id != receipt["chain_id"] or tx.chain_id != header.chain_id:
        raise InvalidReceipt("receipt: chain ids of receipt, tree head and transaction differ")
    if validators.hash() != header.validators_hash:
        raise InvalidReceipt("receipt: the validator set is not the one the tree head names")
    if trusted_validators is not None and validators != trusted_validators:
        raise InvalidReceipt("receipt: the tree head was certified by a validator set you do not trust")
    try:
        certificate.verify(header, validators)
    except FedLedgerError as exc:
        raise InvalidReceipt(f"receipt: the tree head is not certified: {exc}") from None
    try:
        signing.verify(tx.sender, tx.body, tx.signature)
    except FedLedgerError as exc:
        raise InvalidReceipt(f"receipt: the transaction's signature does not verify: {exc}") from None
    if index >= header.log_size:
        raise InvalidReceipt(f"receipt: log_index {index} is outside the log of {header.log_size}")
    try:
        merkle.verify_inclusion(tx_bytes, index, header.log_size, proof, header.log_root)
    except FedLedgerError as exc:
        raise InvalidReceipt(f"receipt: {exc}") from None
    return tx
