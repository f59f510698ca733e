"""Another version of the tests' counter contract (same name, other code)."""

from __future__ import annotations

from fedledger.ledger import CallContext, Contract, ContractState, call


class Counter(Contract):
    name = "counter"
    version = 2

    @call
    def add(self, state: ContractState, ctx: CallContext, amount: int) -> int:
        state["total"] = state.get("total", 0) + 2 * amount
        return state["total"]  # type: ignore[no-any-return]
