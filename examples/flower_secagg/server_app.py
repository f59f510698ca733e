"""The coordinator's ServerApp: FedAvg under fedledger's SecureAggregation; each round is
recorded on the consortium's ledger (made in the run config's ``work`` directory on first use)."""

from __future__ import annotations

from pathlib import Path

from flwr.app import Array, ArrayRecord, Context
from flwr.serverapp import Grid, ServerApp
from flwr.serverapp.strategy import FedAvg, Result
from task import COORDINATOR, POLICY, SITES, aggregator, identity, initial_model

from fedledger import BlobStore, Ledger, ValidatorSet
from fedledger.contracts import BUILTIN
from fedledger.errors import FedLedgerError
from fedledger.integrations.flower import SecureAggregation

app = ServerApp()


def open_consortium(work: Path) -> Ledger:
    """The consortium's ledger: one validator (the coordinator's), the four sites and the
    coordinator as members, and the training policy (aggregator ``masked``, at least 3 sites)."""
    work.mkdir(parents=True, exist_ok=True)
    validator = identity("validator")
    ledger = Ledger.open(
        work / "ledger.db",
        chain_id="flower-secagg",
        validators=ValidatorSet({validator.verify_key: 1}),
        local_validators=[validator],
        members=[identity(n).card() for n in [*SITES, COORDINATOR]],
        contracts=BUILTIN,
    )
    try:
        ledger.view("training", "get_policy", policy=POLICY)
    except FedLedgerError:
        sites = [identity(n).verify_key.to_bytes() for n in SITES]
        done = ledger.call(
            identity(COORDINATOR), "training", "define",
            policy=POLICY, sites=sites, aggregator="masked", quant_bits=32, threshold=3, min_cohort=3,
        )  # fmt: skip
        assert done.accepted, done.reason
    return ledger


def run(grid: Grid, work: Path, rounds: int, stage_timeout: float) -> tuple[Result, SecureAggregation]:
    """FedAvg under SecureAggregation for ``rounds`` rounds; the result and the strategy (its
    ``records`` are the rounds as recorded)."""
    with open_consortium(work) as ledger:
        strategy = SecureAggregation(
            FedAvg(fraction_train=1.0, fraction_evaluate=1.0, min_available_nodes=len(SITES)),
            ledger,
            policy=POLICY,
            coordinator=identity(COORDINATOR),
            store=BlobStore(work / "blobs"),
            sites={n: identity(n) for n in SITES},
            aggregator=aggregator(),
            stage_timeout=stage_timeout,
        )
        initial = ArrayRecord({k: Array(v) for k, v in initial_model().items()})
        result = strategy.start(grid, initial, num_rounds=rounds, timeout=120)
        ledger.verify()
    return result, strategy


@app.main()
def main(grid: Grid, context: Context) -> None:
    cfg = context.run_config
    result, strategy = run(grid, Path(str(cfg["work"])), int(cfg["rounds"]), float(cfg["stage-timeout"]))  # type: ignore[arg-type]
    for rec in strategy.records:
        print(
            f"round {rec.round}: {rec.status}, survivors {len(rec.result.survivors) if rec.result else 0}, model {rec.model_hash.hex()[:16] if rec.model_hash else '-'}"
        )
