"""Access control: roles, grants for a purpose of use, recorded decisions, break-glass, cut-off.

Subjects (people, sites) are 32-byte keys or keyed pseudonyms (:mod:`.pseudonym`); resources
are content ids of the blob store or record pseudonyms (hex), never names. Every decision is
one recorded call: :meth:`AccessControl.access` returns ``{"permit": True, "break_glass": ...}``
or is denied with the reason, and the denial is on the ledger with its outcome.

Who may do what:

| method | sender |
| --- | --- |
| ``assign_role``, ``remove_role``, ``revoke_all``, ``restore`` | an ``admin``, or a validator of the ledger (to appoint the first admins) |
| ``register`` | a ``provider``: it becomes the resource's custodian |
| ``grant``, ``revoke`` | an ``admin`` or the resource's custodian |
| ``access`` | the subject itself, or the resource's custodian recording its staff's access |

Decision rule of ``access(subject, resource, purpose)`` at block time ``t``: denied if the sender
or the subject was cut off (``revoke_all``); otherwise permitted if a grant for exactly
(subject, resource, purpose) exists with ``expires_ms > t``; otherwise, for ``ETREAT``
(emergency treatment), permitted to a subject holding the ``provider`` role and flagged
``break_glass`` for review; otherwise denied.
"""

from __future__ import annotations

from typing import Final

from fedledger.errors import ContractError
from fedledger.ledger.contract import CallContext, Contract, ContractState, call, view

__all__ = ["PURPOSES", "ROLES", "AccessControl", "has_role"]

ROLES: Final = frozenset({"patient", "provider", "pharmacy", "researcher", "auditor", "admin"})
#: HL7 v3 PurposeOfUse codes (v3-PurposeOfUse) this contract accepts.
PURPOSES: Final = frozenset(
    {
        "TREAT",  # treatment
        "ETREAT",  # emergency treatment: break-glass
        "CAREMGT",  # care management
        "HPAYMT",  # healthcare payment
        "HOPERAT",  # healthcare operations
        "HRESCH",  # healthcare research (federated training)
        "CLINTRCH",  # clinical trial research
        "PUBHLTH",  # public health
        "PATRQT",  # patient requested
        "HLEGAL",  # legal
        "HMARKT",  # marketing
    }
)
BREAK_GLASS: Final = "ETREAT"
MAX_RESOURCE: Final = 160


def _subject(value: bytes, what: str = "subject") -> str:
    if len(value) != 32:
        raise ContractError(f"{what} must be a 32-byte key or pseudonym")
    return value.hex()


def _resource(value: str) -> str:
    if not value or len(value) > MAX_RESOURCE or not value.isprintable() or "/" in value:
        raise ContractError(f"resource must be 1-{MAX_RESOURCE} printable characters without '/' (a content id)")
    return value


def _purpose(value: str) -> str:
    if value not in PURPOSES:
        raise ContractError(f"purpose {value[:16]!r} is not a known PurposeOfUse code")
    return value


def has_role(state: ContractState, key: bytes, role: str, contract: str = "access") -> bool:
    """Whether ``key`` holds ``role`` in the access contract's state (for other contracts)."""
    roles = state.read(contract, f"role/{key.hex()}") or []
    return role in roles


def _is_admin(state: ContractState, ctx: CallContext) -> bool:
    assert ctx.sender is not None
    return ctx.sender in ctx.validators or "admin" in (state.get(f"role/{ctx.sender.hex()}") or [])


def _require_admin(state: ContractState, ctx: CallContext) -> None:
    if not _is_admin(state, ctx):
        raise ContractError("only an admin (or a validator) may do this")


class AccessControl(Contract):
    """Roles, purpose-bound grants with expiry, recorded access decisions, break-glass, cut-off."""

    name = "access"
    version = 1

    # -- roles and cut-off ------------------------------------------------------------------

    @call
    def assign_role(self, state: ContractState, ctx: CallContext, subject: bytes, role: str) -> list[str]:
        _require_admin(state, ctx)
        if role not in ROLES:
            raise ContractError(f"role {role[:16]!r} is not one of {sorted(ROLES)}")
        key = f"role/{_subject(subject)}"
        roles = sorted(set(state.get(key) or []) | {role})
        state[key] = roles
        return roles

    @call
    def remove_role(self, state: ContractState, ctx: CallContext, subject: bytes, role: str) -> list[str]:
        _require_admin(state, ctx)
        key = f"role/{_subject(subject)}"
        roles = sorted(set(state.get(key) or []) - {role})
        if roles:
            state[key] = roles
        else:
            del state[key]
        return roles

    @call
    def revoke_all(self, state: ContractState, ctx: CallContext, subject: bytes, reason: str) -> None:
        """Cut ``subject`` off at once: its later calls, and every access for it, are denied."""
        _require_admin(state, ctx)
        if not 0 < len(reason) <= 256:
            raise ContractError("reason must be 1-256 characters")
        state[f"cut/{_subject(subject)}"] = {"reason": reason, "height": ctx.height}

    @call
    def restore(self, state: ContractState, ctx: CallContext, subject: bytes) -> None:
        """Lift a cut-off (grants stay as they were; review them first)."""
        _require_admin(state, ctx)
        key = f"cut/{_subject(subject)}"
        if key not in state:
            raise ContractError("subject is not cut off")
        del state[key]

    # -- resources and grants ---------------------------------------------------------------

    @call
    def register(self, state: ContractState, ctx: CallContext, resource: str) -> None:
        assert ctx.sender is not None
        self._not_cut(state, ctx.sender, "sender")
        if "provider" not in (state.get(f"role/{ctx.sender.hex()}") or []):
            raise ContractError("only a provider may register a resource")
        key = f"owner/{_resource(resource)}"
        if key in state:
            raise ContractError("resource is already registered")
        state[key] = ctx.sender

    @call
    def grant(
        self, state: ContractState, ctx: CallContext, subject: bytes, resource: str, purpose: str, expires_ms: int
    ) -> None:
        self._may_manage(state, ctx, resource)
        if expires_ms <= ctx.time_ms:
            raise ContractError("a grant must expire after the block time")
        state[f"grant/{_subject(subject)}/{_purpose(purpose)}/{resource}"] = {
            "expires_ms": expires_ms,
            "by": ctx.sender,
        }

    @call
    def revoke(self, state: ContractState, ctx: CallContext, subject: bytes, resource: str, purpose: str) -> None:
        self._may_manage(state, ctx, resource)
        key = f"grant/{_subject(subject)}/{_purpose(purpose)}/{resource}"
        if key not in state:
            raise ContractError("no such grant")
        del state[key]

    # -- decisions --------------------------------------------------------------------------

    @call
    def access(
        self, state: ContractState, ctx: CallContext, subject: bytes, resource: str, purpose: str
    ) -> dict[str, bool]:
        """Decide and record one access; denied calls are recorded with the reason."""
        assert ctx.sender is not None
        _subject(subject)
        if ctx.sender != subject and state.get(f"owner/{_resource(resource)}") != ctx.sender:
            raise ContractError("only the subject, or the resource's custodian, may request this access")
        return self._decide(state, ctx, subject, resource, purpose)

    @view
    def decide(
        self, state: ContractState, ctx: CallContext, subject: bytes, resource: str, purpose: str, sender: bytes
    ) -> dict[str, object]:
        """What ``access`` would decide now for ``sender``, without recording it."""
        try:
            ctx = CallContext(sender, ctx.height, ctx.time_ms, None, ctx.validators)
            return {"permit": True, **self._decide(state, ctx, subject, resource, purpose)}
        except ContractError as exc:
            return {"permit": False, "reason": exc.reason}

    @view
    def roles(self, state: ContractState, ctx: CallContext, subject: bytes) -> list[str]:
        return list(state.get(f"role/{_subject(subject)}") or [])

    @view
    def is_cut_off(self, state: ContractState, ctx: CallContext, subject: bytes) -> bool:
        return f"cut/{_subject(subject)}" in state

    # -- rules ------------------------------------------------------------------------------

    @staticmethod
    def _not_cut(state: ContractState, key: bytes, who: str) -> None:
        cut = state.get(f"cut/{key.hex()}")
        if cut is not None:
            raise ContractError(f"{who} was cut off at height {cut['height']}: {cut['reason']}")

    def _may_manage(self, state: ContractState, ctx: CallContext, resource: str) -> None:
        assert ctx.sender is not None
        self._not_cut(state, ctx.sender, "sender")
        if not _is_admin(state, ctx) and state.get(f"owner/{_resource(resource)}") != ctx.sender:
            raise ContractError("only an admin or the resource's custodian may manage its grants")

    def _decide(
        self, state: ContractState, ctx: CallContext, subject: bytes, resource: str, purpose: str
    ) -> dict[str, bool]:
        assert ctx.sender is not None
        self._not_cut(state, ctx.sender, "sender")
        self._not_cut(state, subject, "subject")
        grant = state.get(f"grant/{_subject(subject)}/{_purpose(purpose)}/{_resource(resource)}")
        if grant is not None and grant["expires_ms"] > ctx.time_ms:
            return {"permit": True, "break_glass": False}
        if purpose == BREAK_GLASS and "provider" in (state.get(f"role/{subject.hex()}") or []):
            return {"permit": True, "break_glass": True}
        if grant is not None:
            raise ContractError("the grant for this purpose has expired")
        raise ContractError("no grant for this subject, resource and purpose")
