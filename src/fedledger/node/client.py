"""Talking to a running node over its HTTP interface (:func:`fedledger.node.node.serve`)."""

from __future__ import annotations

import json
import urllib.error
import urllib.request
from collections.abc import Sequence
from typing import Any

from fedledger import encoding
from fedledger.errors import InvalidArgument, NodeError
from fedledger.ledger import SignedTreeHead, Transaction

__all__ = ["head", "heads", "status", "submit"]


def _request(url: str, data: bytes | None = None, timeout: float = 60.0) -> Any:
    request = urllib.request.Request(url, data=data, method="POST" if data is not None else "GET")
    if data is not None:
        request.add_header("Content-Type", "application/cbor")
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:  # noqa: S310 - the caller's node URL
            return json.loads(response.read())
    except urllib.error.HTTPError as exc:
        raise NodeError(f"{url}: {exc.code} {exc.read().decode(errors='replace')}") from None
    except (urllib.error.URLError, OSError) as exc:
        raise NodeError(f"{url}: {exc}") from None


def submit(url: str, txs: Sequence[Transaction | bytes], timeout: float = 60.0) -> list[dict[str, Any]]:
    """Submit transactions to the node at ``url`` (``http://host:port``); one ``{"id", "accepted",
    "reason"}`` each. A sender's transactions go to one node, in nonce order."""
    if isinstance(txs, (bytes, Transaction)):
        raise InvalidArgument("txs", "expected a sequence of transactions")
    wire: list[encoding.Value] = [t.to_bytes() if isinstance(t, Transaction) else bytes(t) for t in txs]
    result: list[dict[str, Any]] = _request(url.rstrip("/") + "/txs", encoding.encode(wire), timeout)
    return result


def status(url: str, timeout: float = 10.0) -> dict[str, Any]:
    """The node's height, round, log size, state root, pending count and recent problems."""
    result: dict[str, Any] = _request(url.rstrip("/") + "/status", timeout=timeout)
    return result


def head(url: str, timeout: float = 10.0) -> SignedTreeHead:
    """The node's latest signed tree head."""
    return SignedTreeHead.from_json(_request(url.rstrip("/") + "/head", timeout=timeout))


def heads(url: str, timeout: float = 10.0) -> dict[str, SignedTreeHead]:
    """The latest signed tree head each other node published, as the node at ``url`` keeps them
    (check a peer's replica with ``fedledger ledger verify --head``)."""
    document = _request(url.rstrip("/") + "/heads", timeout=timeout)
    return {name: SignedTreeHead.from_json(value) for name, value in document.items()}
