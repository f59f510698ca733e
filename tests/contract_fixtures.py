"""Contracts for the tests: a counter, and one whose behaviour a test can change underneath the
ledger (what a non-deterministic or silently edited contract would do)."""

from __future__ import annotations

from fedledger.errors import ContractError
from fedledger.ledger import CallContext, Contract, ContractState, call, view

#: Flipped by a test to make Drifting.bump behave differently on replay.
DRIFT = [0]


class Counter(Contract):
    name = "counter"
    version = 1

    @call
    def add(self, state: ContractState, ctx: CallContext, amount: int) -> int:
        if amount <= 0:
            raise ContractError("amount must be positive")
        state["total"] = state.get("total", 0) + amount
        return state["total"]  # type: ignore[no-any-return]

    @call
    def crash(self, state: ContractState, ctx: CallContext) -> None:
        state["total"] = -1
        raise ValueError("a bug in the contract")

    @call
    def stash(self, state: ContractState, ctx: CallContext) -> None:
        self.cache = 1  # contracts hold no instance state: this raises ContractError

    @view
    def total(self, state: ContractState, ctx: CallContext) -> int:
        return state.get("total", 0)  # type: ignore[no-any-return]


class Drifting(Contract):
    name = "drifting"
    version = 1

    @call
    def bump(self, state: ContractState, ctx: CallContext) -> int:
        state["n"] = state.get("n", 0) + 1 + DRIFT[0]
        return state["n"]  # type: ignore[no-any-return]
