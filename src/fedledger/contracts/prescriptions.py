"""Prescriptions: a prescriber's commitment to a prescription, verified and dispensed once.

The prescription itself stays off the chain; the ledger holds its id (32 random bytes or a
pseudonym) and a salted commitment to its content (:func:`fedledger.contracts.pseudonym.commit`),
so a pharmacy that was handed the prescription and its salt can check it is authentic (the
commitment matches), valid (not expired, not revoked) and not yet dispensed.

Roles come from the access contract (``access``, which must be deployed beside this one):
``issue`` and ``revoke`` need the ``provider`` role, ``dispense`` the ``pharmacy`` role.
"""

from __future__ import annotations

from typing import Any

from fedledger.contracts.access import has_role
from fedledger.errors import ContractError
from fedledger.ledger.contract import CallContext, Contract, ContractState, call, view

__all__ = ["Prescriptions"]


def _id(rx: bytes) -> str:
    if len(rx) != 32:
        raise ContractError("prescription id must be 32 bytes")
    return f"rx/{rx.hex()}"


class Prescriptions(Contract):
    """Issue, verify, dispense (once) and revoke prescriptions by commitment."""

    name = "prescriptions"
    version = 1

    @call
    def issue(self, state: ContractState, ctx: CallContext, rx: bytes, commitment: bytes, expires_ms: int) -> None:
        assert ctx.sender is not None
        if not has_role(state, ctx.sender, "provider"):
            raise ContractError("only a provider may issue a prescription")
        if len(commitment) != 32:
            raise ContractError("commitment must be 32 bytes")
        if expires_ms <= ctx.time_ms:
            raise ContractError("a prescription must expire after the block time")
        key = _id(rx)
        if key in state:
            raise ContractError("a prescription with this id exists")
        state[key] = {
            "prescriber": ctx.sender,
            "commitment": commitment,
            "expires_ms": expires_ms,
            "issued_ms": ctx.time_ms,
            "status": "active",
            "dispensed_by": None,
            "dispensed_ms": None,
        }

    @view
    def verify(
        self, state: ContractState, ctx: CallContext, rx: bytes, commitment: bytes, at: int | None = None
    ) -> dict[str, Any]:
        """``{"valid": bool, "reason": text}``: authentic, unexpired, not revoked, not dispensed."""
        try:
            self._check(state.get(_id(rx)), commitment, ctx.time_ms if at is None else at)
        except ContractError as exc:
            return {"valid": False, "reason": exc.reason}
        return {"valid": True, "reason": ""}

    @call
    def dispense(self, state: ContractState, ctx: CallContext, rx: bytes, commitment: bytes) -> None:
        assert ctx.sender is not None
        if not has_role(state, ctx.sender, "pharmacy"):
            raise ContractError("only a pharmacy may dispense")
        key = _id(rx)
        record = state.get(key)
        self._check(record, commitment, ctx.time_ms)
        record["status"] = "dispensed"
        record["dispensed_by"] = ctx.sender
        record["dispensed_ms"] = ctx.time_ms
        state[key] = record

    @call
    def revoke(self, state: ContractState, ctx: CallContext, rx: bytes, reason: str) -> None:
        key = _id(rx)
        record = state.get(key)
        if record is None:
            raise ContractError("no such prescription")
        if record["prescriber"] != ctx.sender:
            raise ContractError("only its prescriber may revoke a prescription")
        if record["status"] != "active":
            raise ContractError(f"the prescription is {record['status']}")
        if not 0 < len(reason) <= 256:
            raise ContractError("reason must be 1-256 characters")
        record["status"] = "revoked"
        state[key] = record

    @staticmethod
    def _check(record: dict[str, Any] | None, commitment: bytes, at: int) -> None:
        if record is None:
            raise ContractError("no such prescription")
        if record["commitment"] != commitment:
            raise ContractError("the prescription does not match its commitment (not authentic)")
        if record["status"] == "dispensed":
            raise ContractError("already dispensed")
        if record["status"] == "revoked":
            raise ContractError("revoked by its prescriber")
        if at >= record["expires_ms"]:
            raise ContractError("expired")
