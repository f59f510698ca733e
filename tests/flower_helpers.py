"""What the Flower tests share: a consortium ledger with a training policy, the sites'
identities (the same keys for the same name), and a ClientApp whose train step is a fixed,
site-dependent step so that plain FedAvg over the same replies is the reference."""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np
from flwr.app import Array, ArrayRecord, Context, Message, MetricRecord, RecordDict
from flwr.clientapp import ClientApp
from ledger_helpers import CHAIN, identity, validator_set, validators

from fedledger import BlobStore
from fedledger.aggregators import Masked
from fedledger.contracts import BUILTIN
from fedledger.identity import Identity
from fedledger.integrations.flower import fedledger_mod
from fedledger.ledger import Ledger

SITES = [f"site-{i}" for i in range(4)]
COORDINATOR = "coordinator"
POLICY = "p1"
#: The secure aggregation settings every party of these tests holds.
AGGREGATOR = {"min_cohort": 3, "bits": 32, "clip": 1.0, "max_weight": 1000}


def masked() -> Masked:
    return Masked(**AGGREGATOR)  # type: ignore[arg-type]


def verify_keys() -> dict[str, object]:
    return {n: identity(n).verify_key for n in [*SITES, COORDINATOR]}


def open_ledger(path: Path) -> Ledger:
    v = validators()
    return Ledger.open(
        path,
        chain_id=CHAIN,
        validators=validator_set(v),
        local_validators=v,
        members=[identity(n).card() for n in [*SITES, COORDINATOR]],
        contracts=BUILTIN,
    )


@contextlib.contextmanager
def consortium(root: Path, aggregator: str) -> Iterator[tuple[Ledger, BlobStore, Identity]]:
    """A ledger with the four sites and the coordinator as members, and policy ``p1`` over the
    four sites with ``aggregator``, defined by the coordinator."""
    with open_ledger(root / "ledger.db") as ledger:
        coordinator = identity(COORDINATOR)
        defined = ledger.call(
            coordinator,
            "training",
            "define",
            policy=POLICY,
            sites=[identity(n).verify_key.to_bytes() for n in SITES],
            aggregator=aggregator,
            quant_bits=32,
            threshold=3,
            min_cohort=3,
        )
        assert defined.accepted, defined.reason
        yield ledger, BlobStore(root / "blobs"), coordinator


def site_step(site: int, model: np.ndarray, server_round: int) -> np.ndarray:
    """The 'training' of site ``site``: a small step that depends on the site, the round and the model."""
    rng = np.random.default_rng(1000 * site + server_round)
    return model - 0.1 * model + rng.normal(0, 0.05, model.shape)


def weight_of(site: int) -> int:
    return 20 + 7 * site


def train(msg: Message, context: Context) -> Message:
    site = int(context.node_config["partition-id"])
    arrays = msg.content.array_records["arrays"]
    server_round = int(msg.content.config_records["config"]["server-round"])  # type: ignore[arg-type]
    out = {k: Array(site_step(site, arrays[k].numpy(), server_round)) for k in arrays}
    metrics = MetricRecord({"num-examples": weight_of(site), "loss": float(site)})
    return Message(RecordDict({"arrays": ArrayRecord(out), "metrics": metrics}), reply_to=msg)


def make_app(*mods: Callable[[Message, Context, Callable[[Message, Context], Message]], Message]) -> ClientApp:
    """The test ClientApp: ``mods`` (outermost first), then fedledger_mod, then the train step."""

    def me(context: Context) -> Identity:
        return identity(SITES[int(context.node_config["partition-id"])])

    app = ClientApp(mods=[*mods, fedledger_mod(me, verify_keys(), aggregator=masked())])  # type: ignore[arg-type]
    app.train()(train)
    return app


def initial() -> ArrayRecord:
    rng = np.random.default_rng(7)
    return ArrayRecord({"w": Array(rng.normal(0, 0.3, (6, 3))), "b": Array(np.zeros(3))})


def reference(initial_arrays: ArrayRecord, rounds: int, alive: list[list[int]] | None = None) -> dict[str, np.ndarray]:
    """Plain FedAvg over the same steps: ``alive[r]`` are the sites that count in round r+1."""
    model = {k: initial_arrays[k].numpy().astype(np.float64) for k in initial_arrays}
    for r in range(1, rounds + 1):
        sites = alive[r - 1] if alive else list(range(len(SITES)))
        total = sum(weight_of(s) for s in sites)
        model = {k: sum(weight_of(s) * site_step(s, v, r) for s in sites) / total for k, v in model.items()}
    return model
