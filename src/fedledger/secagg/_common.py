"""Derivations both sides of a round compute alike: key contexts, share digests, indices."""

from __future__ import annotations

import hashlib
import struct
from collections.abc import Mapping
from typing import Final

from fedledger import encoding
from fedledger.crypto import agreement, masking
from fedledger.crypto.seal import SealContext
from fedledger.crypto.signing import VerifyKey
from fedledger.errors import InvalidKey, SecAggError

SEAL_PURPOSE: Final = "fedledger/secagg/share-keys"
INPUT_PURPOSE: Final = "fedledger/secagg/masked-input"
UNMASK_PURPOSE: Final = "fedledger/secagg/unmask"
SERVER_ROLE: Final = "server"


def seal_keys(own: agreement.AgreementKey, peers: list[bytes], round_id: int) -> list[bytes]:
    """The AES-256-GCM keys a client seals shares to its neighbors under (each the same both
    ways), many peers at once (native X25519, in parallel)."""
    ctx = encoding.encode(["fedledger/secagg/seal-key/v1", round_id])
    return agreement.pairwise_seeds(own, peers, context=ctx, length=32)


def server_keys(own: agreement.AgreementKey, peers: list[bytes], round_id: int) -> list[bytes]:
    """The AES-256-GCM keys between a client and the server, from the client's seal key and
    the server's round key (same both ways); many peers at once (the server's side)."""
    ctx = encoding.encode(["fedledger/secagg/server-seal-key/v1", round_id])
    return agreement.pairwise_seeds(own, peers, context=ctx, length=32)


def to_server(client: str, server: str, round_id: int, purpose: str) -> SealContext:
    return SealContext(sender=client, receiver=server, round=round_id, purpose=purpose)


def pairwise_mask_keys(own: agreement.AgreementKey, peers: list[bytes], round_id: int) -> list[bytes]:
    """The AES-128 keys of the pairwise masks between a client and each peer (each the same
    both ways), many peers at once (native X25519, in parallel)."""
    ctx = encoding.encode(["fedledger/secagg/pairwise-mask/v1", round_id])
    return masking.mask_keys(agreement.pairwise_seeds(own, peers, context=ctx, length=32), purpose=ctx)


def seal_context(dealer: str, holder: str, round_id: int) -> SealContext:
    return SealContext(sender=dealer, receiver=holder, round=round_id, purpose=SEAL_PURPOSE)


def self_mask_key(seed: bytes, client: str, round_id: int) -> bytes:
    """The AES-128 key of a client's self mask, from its 32-byte seed b."""
    return masking.mask_key(seed, purpose=encoding.encode(["fedledger/secagg/self-mask/v1", round_id, client]))


def pair_sign(owner: str, peer: str) -> int:
    """+1 if ``owner`` adds the pairwise mask with ``peer``, -1 if it subtracts it."""
    return 1 if owner < peer else -1


def share_digest(round_id: int, dealer: str, holder: str, kind: str, share: bytes) -> bytes:
    """SHA-256 binding a share to its round, dealer, holder and kind ("b" seed, "s" key)."""
    h = hashlib.sha256(b"fedledger/secagg/share-digest/v1\x00")
    for part in (dealer.encode(), holder.encode(), kind.encode()):
        h.update(struct.pack(">I", len(part)))
        h.update(part)
    h.update(struct.pack(">Q", round_id))
    h.update(share)
    return h.digest()


def holders(client: str, graph: Mapping[str, frozenset[str]]) -> list[str]:
    """Who holds shares of ``client``'s secrets, in share-index order (index = position + 1)."""
    return sorted(graph[client] | {client})


def check_public_key(raw: bytes, what: str, client: str) -> None:
    try:
        agreement.AgreementPublicKey(raw).check_registrable()
    except (InvalidKey, ValueError) as exc:
        raise SecAggError(f"{what} of {client!r} is not a usable X25519 key: {exc}", client) from None


def verified(msg_key: VerifyKey | None, sender: str) -> VerifyKey:
    if msg_key is None:
        raise SecAggError(f"unknown sender {sender!r}", sender)
    return msg_key
