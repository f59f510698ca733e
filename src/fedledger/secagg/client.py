"""The client side of SecAgg+, as a state machine: messages in, messages out, no I/O."""

from __future__ import annotations

import os
import struct
import warnings
from collections.abc import Callable, Mapping
from typing import Any

import numpy as np
from numpy.typing import NDArray

from fedledger.crypto import agreement, masking, seal, shamir, signing
from fedledger.crypto.signing import VerifyKey
from fedledger.errors import (
    EncodingError,
    FedLedgerError,
    InvalidArgument,
    InvalidArgumentType,
    InvalidKey,
    InvalidSignature,
    QuantizationError,
    SecAggError,
)
from fedledger.identity import Identity
from fedledger.secagg import _common as C
from fedledger.secagg.config import NeighborView, SecAggConfig
from fedledger.secagg.messages import (
    AdvertiseKeys,
    KeyDirectory,
    MaskedInput,
    Message,
    RelayedShares,
    ShareKeys,
    Stage,
    UnmaskRequest,
    UnmaskResponse,
)

__all__ = ["SecAggClient"]

RandomBytes = Callable[[int], bytes]


class ClippedValuesWarning(UserWarning):
    """Values of a client's update lay outside ``[-clip, clip]`` and were clipped (counted locally)."""


def count_clipped(update: NDArray[np.floating], clip: float) -> int:
    """How many values of ``update`` lie outside ``[-clip, clip]`` (two cheap passes when none do)."""
    if update.size == 0 or (update.max() <= clip and update.min() >= -clip):
        return 0
    return int(np.count_nonzero(np.abs(update) > clip))


class SecAggClient:
    """One client of one round. Call the stage methods in order; each checks the incoming
    message (signature, round, stage, sender, receiver) and raises SecAggError (or a
    subclass) instead of answering anything it should not.

    ``verify_keys`` maps every party's name (the clients' and the server's) to its Ed25519
    key, e.g. from the ledger's registered identity cards. ``random_bytes`` (default
    ``os.urandom``) supplies every secret: round keys, the self-mask seed, Shamir
    coefficients and the rounding randomness; pass a deterministic source only in tests.
    """

    def __init__(
        self,
        identity: Identity,
        config: SecAggConfig,
        *,
        server: str,
        verify_keys: Mapping[str, VerifyKey],
        random_bytes: RandomBytes | None = None,
    ) -> None:
        if not isinstance(identity, Identity):
            raise InvalidArgumentType("identity", f"expected an Identity, got {type(identity).__name__}")
        if not isinstance(config, SecAggConfig):
            raise InvalidArgumentType("config", f"expected a SecAggConfig, got {type(config).__name__}")
        if type(server) is not str:
            raise InvalidArgumentType("server", f"expected the server's name as a str, got {type(server).__name__}")
        if not isinstance(verify_keys, Mapping):
            raise InvalidArgumentType("verify_keys", f"expected a mapping, got {type(verify_keys).__name__}")
        self.identity = identity
        self.name = identity.name
        self.config = config
        self.server = server
        #: Values of the last update that lay outside [-clip, clip] (known to this client only).
        self.clipped = 0
        self._keys = dict(verify_keys)
        self._rand: RandomBytes = random_bytes or os.urandom
        self._stage = Stage.ADVERTISE_KEYS
        self._seal_sk = agreement.AgreementKey.from_bytes(self._rand(32))
        self._mask_sk = agreement.AgreementKey.from_bytes(self._rand(32))
        self._seed = self._rand(32)
        self._participants: tuple[str, ...] = ()
        self._graph: Mapping[str, frozenset[str]] = {}
        self._adverts: dict[str, AdvertiseKeys] = {}
        self._seal_keys: dict[str, bytes] = {}
        self._server_key = b""
        self._threshold = 0
        # Shares this client holds, by dealer: (seed share bytes, key share bytes).
        self._held: dict[str, tuple[bytes, bytes]] = {}
        self._peers: tuple[str, ...] = ()
        self._my_index: dict[str, int] = {}

    # -- helpers -----------------------------------------------------------------------------
    def _accept(self, msg: Message, stage: str, kind: type[Message]) -> None:
        if self._stage != stage:
            raise SecAggError(f"{self.name}: got {kind.STAGE!r} while at stage {self._stage!r}")
        if not isinstance(msg, kind):
            raise SecAggError(f"{self.name}: expected {kind.__name__}, got {type(msg).__name__}")
        if msg.round_id != self.config.round_id:
            raise SecAggError(
                f"{self.name}: message from round {msg.round_id}, this is round {self.config.round_id}", msg.sender
            )
        if msg.sender != self.server or msg.receiver != self.name:
            raise SecAggError(f"{self.name}: message from {msg.sender!r} to {msg.receiver!r}", msg.sender)
        try:
            msg.verify(C.verified(self._keys.get(msg.sender), msg.sender))
        except InvalidSignature as exc:
            raise SecAggError(f"{self.name}: bad server signature ({exc})", msg.sender) from None

    def _stamp(self, msg: Message) -> Any:
        return msg.signed(self.identity)

    @property
    def stage(self) -> str:
        """The next stage this client expects to act in ("done" at the end, "failed" after a refusal)."""
        return self._stage

    # -- stage 1 -----------------------------------------------------------------------------
    def advertise_keys(self) -> AdvertiseKeys:
        if self._stage != Stage.ADVERTISE_KEYS:
            raise SecAggError(f"{self.name}: already advertised")
        self._stage = Stage.SHARE_KEYS
        msg = AdvertiseKeys(
            round_id=self.config.round_id,
            sender=self.name,
            receiver=self.server,
            seal_key=self._seal_sk.public_key.to_bytes(),
            mask_key=self._mask_sk.public_key.to_bytes(),
        )
        return self._stamp(msg)  # type: ignore[no-any-return]

    # -- stage 3 -----------------------------------------------------------------------------
    def share_keys(self, directory: KeyDirectory) -> ShareKeys:
        """Check the neighbors' adverts and deal shares of the seed and mask key to them."""
        self._accept(directory, Stage.SHARE_KEYS, KeyDirectory)
        self._stage = Stage.FAILED
        ids = directory.participants
        if len(set(ids)) != len(ids) or list(ids) != sorted(ids) or self.name not in ids:
            raise SecAggError(f"{self.name}: malformed participant list", self.server)
        n = len(ids)
        cfg = self.config
        if n < cfg.min_survivors:
            raise SecAggError(
                f"{self.name}: only {n} participants, fewer than min_survivors={cfg.min_survivors}", self.server
            )
        self._threshold = cfg.threshold_for(n)
        self._graph = NeighborView(ids, cfg.degree(n), cfg.seed())
        mine = self._graph[self.name]
        adverts: dict[str, AdvertiseKeys] = {}
        for raw in directory.adverts:
            try:
                adv = AdvertiseKeys.from_bytes(raw)
            except EncodingError as exc:
                raise SecAggError(f"{self.name}: malformed advert ({exc})", self.server) from None
            if (
                adv.sender not in mine
                or adv.sender in adverts
                or adv.round_id != cfg.round_id
                or adv.receiver != self.server
            ):
                raise SecAggError(f"{self.name}: unexpected advert from {adv.sender!r}", self.server)
            adverts[adv.sender] = adv
        if set(adverts) != mine:
            raise SecAggError(f"{self.name}: the directory lacks adverts of {sorted(mine - set(adverts))}", self.server)
        keys = [C.verified(self._keys.get(c), c) for c in adverts]
        ok = signing.verify_batch(
            keys, [a.signed_bytes() for a in adverts.values()], [a.signature for a in adverts.values()]
        )
        if not ok.all():
            bad = [c for c, good in zip(adverts, ok) if not good]
            raise SecAggError(f"{self.name}: adverts with bad signatures from {bad}", self.server)
        # Low-order public keys need no separate check here: the server refused them, and
        # every exchange with one raises InvalidKey (all-zero secret), refused below.
        try:
            C.check_public_key(directory.server_key, "round key", self.server)
            (self._server_key,) = C.server_keys(self._seal_sk, [directory.server_key], cfg.round_id)
        except (SecAggError, InvalidKey, InvalidArgument) as exc:
            raise SecAggError(f"{self.name}: unusable server round key ({exc})", self.server) from None
        self._participants = ids
        self._adverts = adverts
        self._my_index = {d: C.holders(d, self._graph).index(self.name) + 1 for d in mine}
        holders = C.holders(self.name, self._graph)
        t = self._threshold
        b_shares = shamir.split(self._seed, t, len(holders), random_bytes=self._rand)
        s_shares = shamir.split(self._mask_sk.to_bytes(), t, len(holders), random_bytes=self._rand)
        sealed: dict[str, bytes] = {}
        digests: dict[str, bytes] = {}
        rid = cfg.round_id
        others = [h for h in holders if h != self.name]
        try:
            self._seal_keys = dict(zip(others, C.seal_keys(self._seal_sk, [adverts[h].seal_key for h in others], rid)))
        except (InvalidKey, InvalidArgument) as exc:
            raise SecAggError(f"{self.name}: unusable seal key among its neighbors ({exc})", self.server) from None
        for holder, b, s in zip(holders, b_shares, s_shares):
            bb, sb = self._deal_share(holder, b, "b"), self._deal_share(holder, s, "s")
            digests[holder] = C.share_digest(rid, self.name, holder, "b", bb) + C.share_digest(
                rid, self.name, holder, "s", sb
            )
            if holder == self.name:
                self._held[self.name] = (bb, sb)
                sealed[holder] = b""
                continue
            key = self._seal_keys[holder]
            payload = struct.pack(">I", len(bb)) + bb + sb  # seed share, then key share
            sealed[holder] = seal.seal(key, payload, C.seal_context(self.name, holder, rid))
        self._stage = Stage.MASKED_INPUT
        message: ShareKeys = self._stamp(
            ShareKeys(round_id=rid, sender=self.name, receiver=self.server, sealed=sealed, digests=digests)
        )
        return message

    def _deal_share(self, holder: str, share: shamir.Share, kind: str) -> bytes:
        """The bytes of the share dealt to ``holder`` (a hook: tests override it to cheat)."""
        return share.to_bytes()

    # -- stage 5 -----------------------------------------------------------------------------
    def masked_input(self, relayed: RelayedShares, update: NDArray[np.floating], weight: int = 1) -> MaskedInput:
        """Open the shares dealt to this client, then quantize and mask ``update``.

        What is aggregated is the **update** (a model's change in this round, typically the
        difference of weights), clipped to ``[-config.clip, config.clip]``, never raw model
        weights: values beyond the clip are clipped. The client counts them (``clipped``) and
        warns locally with :class:`ClippedValuesWarning`; no message carries the count, which
        would tell the aggregator about this client's data.

        Pairwise masks are added for exactly the neighbors whose shares the server relayed
        (those that completed stage 3). ``weight`` is the sample count, 1 <= weight <=
        config.max_weight; it is declared in the signed header and travels as the
        vector's last element too (the server checks the two agree in sum).
        """
        self._accept(relayed, Stage.MASKED_INPUT, RelayedShares)
        self._stage = Stage.FAILED
        cfg = self.config
        if not isinstance(update, np.ndarray) or update.ndim != 1 or update.dtype not in (np.float32, np.float64):
            raise InvalidArgumentType("update", f"{self.name}: the update must be a 1-D float32 or float64 array")
        if type(weight) is not int or not 1 <= weight <= cfg.max_weight:
            raise QuantizationError(f"{self.name}: weight {weight!r} is not in [1, max_weight={cfg.max_weight}]")
        self.clipped = count_clipped(update, float(cfg.clip))
        if self.clipped:
            warnings.warn(
                f"{self.name}: {self.clipped} of {update.shape[0]} update values lie outside ±{float(cfg.clip):g} "
                "and are clipped; secure aggregation sums updates (a model's change), not weights: send "
                "the change, or raise SecAggConfig.clip",
                ClippedValuesWarning,
                stacklevel=2,
            )
        peers = set(relayed.sealed)
        if not peers <= self._graph[self.name]:
            raise SecAggError(
                f"{self.name}: relayed shares from non-neighbors {sorted(peers - self._graph[self.name])}", self.server
            )
        if len(peers) + 1 < self._threshold:
            raise SecAggError(
                f"{self.name}: only {len(peers)} neighbors left, below the threshold {self._threshold}", self.server
            )
        complaints = []
        for dealer in sorted(peers):
            try:
                payload = seal.unseal(
                    self._seal_keys[dealer], relayed.sealed[dealer], C.seal_context(dealer, self.name, cfg.round_id)
                )
                if len(payload) < 4 or 4 + struct.unpack(">I", payload[:4])[0] > len(payload):
                    raise EncodingError("not a share pair")
                cut = 4 + struct.unpack(">I", payload[:4])[0]
                bb, sb = payload[4:cut], payload[cut:]
                expected = self._my_index[dealer]
                for share in (shamir.Share.from_bytes(bb), shamir.Share.from_bytes(sb)):
                    if share.index != expected or share.threshold != self._threshold:
                        raise EncodingError("share index or threshold is wrong")
                self._held[dealer] = (bb, sb)
            except (FedLedgerError, ValueError):
                complaints.append(dealer)
        self._peers = tuple(sorted(peers))
        n = len(self._participants)
        scale = cfg.scale_for(n)
        dtype = masking.ring_dtype(cfg.bits)
        keys = [C.self_mask_key(self._seed, self.name, cfg.round_id)]
        signs = [1]
        try:
            keys += C.pairwise_mask_keys(self._mask_sk, [self._adverts[p].mask_key for p in self._peers], cfg.round_id)
        except (InvalidKey, InvalidArgument) as exc:
            raise SecAggError(f"{self.name}: unusable mask key among its neighbors ({exc})", self.server) from None
        signs += [C.pair_sign(self.name, peer) for peer in self._peers]
        # One pass: quantize into the vector, add the masks, hash the chunks for the root.
        vec = np.empty(update.shape[0] + 1, dtype=dtype)
        vec[-1] = weight
        root = masking.quantize_and_mask(
            update,
            vec,
            scale=scale,
            clip=float(cfg.clip),
            weight=weight,
            rounding_key=self._rand(masking.KEY_SIZE),
            keys=keys,
            signs=signs,
        )
        data: bytes | memoryview = vec.view(np.uint8).data
        if cfg.seal_inputs:
            data = seal.seal_records(
                self._server_key, data, C.to_server(self.name, self.server, cfg.round_id, C.INPUT_PURPOSE)
            )
        self._stage = Stage.UNMASK
        msg = MaskedInput(
            round_id=cfg.round_id,
            sender=self.name,
            receiver=self.server,
            data=data,
            weight=weight,
            complaints=tuple(complaints),
            root=root,
            sealed=cfg.seal_inputs,
        )
        return self._stamp(msg)  # type: ignore[no-any-return]

    # -- stage 7 -----------------------------------------------------------------------------
    def unmask(self, request: UnmaskRequest) -> UnmaskResponse:
        """Reveal seed shares of survivors and key shares of dropped neighbors, never both
        for one client, only if the survivors (the inputs in the sum) are at least
        ``min_survivors`` distinct participants, and only if enough of this client's
        neighborhood survived."""
        self._accept(request, Stage.UNMASK, UnmaskRequest)
        self._stage = Stage.FAILED
        alive, dropped = set(request.survivors), set(request.dropped)
        listed = len(request.survivors) + len(request.dropped)
        if len(alive) + len(dropped) != listed or not (alive | dropped) <= set(self._participants):
            raise SecAggError(
                f"{self.name}: the survivor and dropout lists repeat names or name non-participants", self.server
            )
        if len(alive) < self.config.min_survivors:
            raise SecAggError(
                f"{self.name}: only {len(alive)} survivors, fewer than min_survivors={self.config.min_survivors}; "
                "nothing is revealed",
                self.server,
            )
        if alive & dropped:
            raise SecAggError(f"{self.name}: {sorted(alive & dropped)} listed as both alive and dropped", self.server)
        if self.name not in alive:
            raise SecAggError(f"{self.name}: not listed among the survivors", self.server)
        hood = set(self._peers) | {self.name}
        if len(alive & hood) < self._threshold:
            raise SecAggError(
                f"{self.name}: only {len(alive & hood)} of its neighborhood survived, below the threshold {self._threshold}",
                self.server,
            )
        if not (dropped & set(self._graph[self.name])) <= set(self._peers):
            raise SecAggError(f"{self.name}: asked for keys of clients that never shared with it", self.server)
        seeds = {c: self._held[c][0] for c in sorted(alive & hood) if c in self._held}
        keys = {c: self._held[c][1] for c in sorted(dropped & set(self._peers)) if c in self._held}
        seeds, keys = self._reveal(seeds, keys)
        self._stage = Stage.DONE
        rid = self.config.round_id
        sealed = UnmaskResponse.seal_shares(
            self._server_key, C.to_server(self.name, self.server, rid, C.UNMASK_PURPOSE), seeds, keys
        )
        return self._stamp(UnmaskResponse(round_id=rid, sender=self.name, receiver=self.server, sealed=sealed))  # type: ignore[no-any-return]

    def _reveal(self, seeds: dict[str, bytes], keys: dict[str, bytes]) -> tuple[dict[str, bytes], dict[str, bytes]]:
        """The shares this client reveals, by dealer (a hook: tests override it to cheat)."""
        return seeds, keys
