"""The test ClientApp: the helpers' fixed train step under fedledger_mod. With ``stall-site``
(run config) >= 0, that site stops answering at the relayed-shares stage of round 1, after
leaving a marker file in ``work``, so that the test can kill its SuperNode mid-round."""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path

from flower_helpers import make_app
from flwr.app import Context, Message


def stall(msg: Message, context: Context, call_next: Callable[[Message, Context], Message]) -> Message:
    site = int(context.run_config.get("stall-site", -1))  # type: ignore[arg-type]
    cfg = msg.content.config_records.get("fedledger")
    if site == int(context.node_config["partition-id"]) and cfg is not None and cfg.get("stage") == "relayed_shares":
        (Path(str(context.run_config["work"])) / "stalled").write_text("stalled\n")
        time.sleep(600)
    return call_next(msg, context)


app = make_app(stall)
