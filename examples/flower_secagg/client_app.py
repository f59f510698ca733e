"""The sites' ClientApp: local training on the site's partition; fedledger_mod keeps the
update on the node and answers the secure aggregation stages (the server sees masked vectors
only)."""

from __future__ import annotations

from flwr.app import Array, ArrayRecord, Context, Message, MetricRecord, RecordDict
from flwr.clientapp import ClientApp
from task import SITES, accuracy, aggregator, identity, partition, train, verify_keys

from fedledger.identity import Identity
from fedledger.integrations.flower import fedledger_mod


def site(context: Context) -> Identity:
    return identity(SITES[int(context.node_config["partition-id"])])


app = ClientApp(mods=[fedledger_mod(site, verify_keys(), aggregator=aggregator())])


def _data(context: Context) -> tuple:  # type: ignore[type-arg]
    return partition(int(context.node_config["partition-id"]), int(context.node_config["num-partitions"]))


@app.train()
def fit(msg: Message, context: Context) -> Message:
    x, y, _, _ = _data(context)
    arrays = msg.content.array_records["arrays"]
    model = {k: arrays[k].numpy() for k in arrays}
    epochs = int(context.run_config.get("local-epochs", 5))
    lr = float(context.run_config.get("learning-rate", 0.5))
    new, loss = train(model, x, y, epochs, lr)
    content = RecordDict(
        {
            "arrays": ArrayRecord({k: Array(v) for k, v in new.items()}),
            "metrics": MetricRecord({"num-examples": len(y), "train-loss": loss}),
        }
    )
    return Message(content, reply_to=msg)


@app.evaluate()
def evaluate(msg: Message, context: Context) -> Message:
    _, _, x, y = _data(context)
    arrays = msg.content.array_records["arrays"]
    acc = accuracy({k: arrays[k].numpy() for k in arrays}, x, y)
    return Message(RecordDict({"metrics": MetricRecord({"num-examples": len(y), "accuracy": acc})}), reply_to=msg)
