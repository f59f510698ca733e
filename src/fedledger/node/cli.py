"""``fedledger node init|run|status``: set up a consortium's keys and genesis, run one node."""

from __future__ import annotations

import asyncio
import json
import logging
import os
import signal
import threading
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from fedledger.errors import InvalidArgument
from fedledger.identity import Identity
from fedledger.ledger import Genesis, Ledger, ValidatorSet
from fedledger.ledger.contract import Contract
from fedledger.node.node import Node, serve

log = logging.getLogger("fedledger.node")
_STOP_SECONDS = 10.0


def parse_validators(text: str) -> list[tuple[str, int]]:
    """'a:40,b:30' -> [('a', 40), ('b', 30)]."""
    out = []
    for item in filter(None, (part.strip() for part in text.split(","))):
        name, _, stake = item.partition(":")
        if not name or not stake.isdigit() or int(stake) < 1:
            raise InvalidArgument("--validators", f"expected name:stake with a positive stake, got {item!r}")
        out.append((name, int(stake)))
    if not out:
        raise InvalidArgument("--validators", "name at least one validator")
    return out


def init(
    out: Path,
    chain_id: str,
    validators: Sequence[tuple[str, int]],
    members: Sequence[str],
    contracts: Sequence[type[Contract]],
    password: str,
) -> Genesis:
    """New identities for every validator and member, saved in ``out``, and the genesis naming them."""
    names = [n for n, _ in validators] + list(members)
    if len(set(names)) != len(names):
        raise InvalidArgument("--members", "every validator and member needs its own name")
    out.mkdir(parents=True, exist_ok=True)
    for name in names:
        if (out / f"{name}.identity").exists():
            raise InvalidArgument("DIR", f"{out / (name + '.identity')} exists: init writes a new consortium")
    identities = {name: Identity.generate(name) for name in names}
    for name, identity in identities.items():
        identity.save(out / f"{name}.identity", password)
    stake = ValidatorSet({identities[n].verify_key: s for n, s in validators})
    cards = [identities[n].card() for n in names]
    with Ledger.memory(chain_id=chain_id, validators=stake, members=cards, contracts=contracts) as ledger:
        genesis = ledger.genesis
    (out / "genesis.json").write_text(genesis.to_json())
    return genesis


async def run(
    genesis: Genesis,
    identity: Identity,
    data: Path,
    etcd: Sequence[str],
    listen: str,
    *,
    name: str | None = None,
    contracts: Sequence[type[Contract]] = (),
    round_timeout: float = 2.0,
    batch_delay: float = 0.05,
    max_block_txs: int | None = None,
    keep_heights: int | None = 1000,
) -> None:
    """Run one node until SIGTERM or SIGINT; print a JSON line when it is ready."""
    host, _, port = listen.rpartition(":")
    if not host or not port.isdigit():
        raise InvalidArgument("--listen", f"expected HOST:PORT, got {listen!r}")
    node = Node(
        data,
        identity,
        genesis,
        etcd,
        name=name,
        contracts=contracts,
        round_timeout=round_timeout,
        batch_delay=batch_delay,
        keep_heights=keep_heights,
        **({} if max_block_txs is None else {"max_block_txs": max_block_txs}),
    )
    await node.start()
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    server = serve(node, host, int(port), loop)
    try:
        ready: dict[str, Any] = {"ready": node.name, "listen": f"http://{host}:{server.server_address[1]}"}
        ready.update(height=node.ledger.height, validator=identity.verify_key in genesis.validators)
        print(json.dumps(ready), flush=True)
        await stop.wait()
    finally:
        # The replica survives being killed at any instant (each block is one SQLite
        # transaction), so a stop that hangs on the network is cut short rather than waited on.
        watchdog = threading.Timer(_STOP_SECONDS + 5, os._exit, args=(0,))
        watchdog.daemon = True
        watchdog.start()
        server.shutdown()
        try:
            await asyncio.wait_for(node.stop(), _STOP_SECONDS)
        except TimeoutError:
            log.warning("%s: stopping took over %s s; exiting anyway", node.name, _STOP_SECONDS)
