"""The server side of SecAgg+, as a state machine: messages in, messages out, no I/O.

The server never trusts a client: every message is checked (signature, round, stage,
sender, receiver, shape) and a client whose message fails is recorded in
:attr:`SecAggServer.rejected` with the reason and treated as having dropped at that stage.
Only a round that cannot finish raises (:class:`~fedledger.errors.RoundFailed`).
"""

from __future__ import annotations

import functools
import hmac
import os
from collections.abc import Callable, Collection, Iterable, Mapping
from dataclasses import dataclass

import numpy as np
from numpy.typing import NDArray

from fedledger.crypto import agreement, masking, seal, shamir
from fedledger.crypto.signing import VerifyKey
from fedledger.errors import (
    EncodingError,
    FedLedgerError,
    InvalidArgument,
    InvalidArgumentType,
    InvalidProof,
    InvalidSignature,
    RoundFailed,
    SealError,
    SecAggError,
)
from fedledger.identity import Identity
from fedledger.secagg import _common as C
from fedledger.secagg import unmasking
from fedledger.secagg.config import SecAggConfig, neighbor_graph
from fedledger.secagg.messages import (
    PROTOCOL,
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
from fedledger.secagg.outcome import RoundOutcome

__all__ = ["Aggregate", "SecAggServer"]


@dataclass(frozen=True)
class Aggregate:
    """The unmasked result: the dequantized weighted sum of the survivors' clipped updates,
    the sum of their weights, the exact ring sum it came from, and ``weights``: each
    survivor's declared (signed) weight, public to the aggregator and ready for a ledger.
    Their sum is ``total_weight`` and equals the unmasked weight slot (checked). ``outcome``
    is the frozen record of the round (:class:`~fedledger.secagg.RoundOutcome`)."""

    aggregate: NDArray[np.float64]
    total_weight: int
    ring_sum: NDArray[np.unsignedinteger]
    scale: float
    survivors: tuple[str, ...]
    weights: Mapping[str, int]
    #: The round's record for a ledger (everything here but the vectors).
    outcome: RoundOutcome


class SecAggServer:
    """The aggregator of one round.

    One caller at a time: the methods share the running sum and one buffer, and the kernels
    release the GIL, so an embedding that receives messages on several threads must hand them
    to the server under one lock.

    ``clients`` are the names invited to the round; ``verify_keys`` maps each to its Ed25519
    key; ``dimension`` is the number of parameters D of every update. ``random_bytes``
    (default ``os.urandom``) makes the server's round key; pass a fixed source only in tests.
    """

    def __init__(
        self,
        identity: Identity,
        config: SecAggConfig,
        *,
        clients: Iterable[str],
        verify_keys: Mapping[str, VerifyKey],
        dimension: int,
        random_bytes: Callable[[int], bytes] | None = None,
    ) -> None:
        if type(dimension) is not int:
            raise InvalidArgumentType("dimension", f"expected int, got {type(dimension).__name__}")
        if dimension < 0:
            raise InvalidArgument("dimension", f"must be >= 0, got {dimension!r}")
        if not isinstance(identity, Identity):
            raise InvalidArgumentType("identity", f"expected an Identity, got {type(identity).__name__}")
        if not isinstance(config, SecAggConfig):
            raise InvalidArgumentType("config", f"expected a SecAggConfig, got {type(config).__name__}")
        if isinstance(clients, (str, bytes)) or not isinstance(clients, Iterable):
            raise InvalidArgumentType("clients", f"expected an iterable of str, got {type(clients).__name__}")
        if not isinstance(verify_keys, Mapping):
            raise InvalidArgumentType("verify_keys", f"expected a mapping, got {type(verify_keys).__name__}")
        self.identity = identity
        self.name = identity.name
        self.config = config
        self.clients = frozenset(clients)
        if any(type(c) is not str for c in self.clients):
            raise InvalidArgumentType("clients", "every client name must be a str")
        if self.name in self.clients:
            raise InvalidArgument("clients", f"the server {self.name!r} cannot also be a client")
        self.dimension = dimension
        self._keys = dict(verify_keys)
        self._stage = Stage.ADVERTISE_KEYS
        #: client -> why its message was rejected (it counts as dropped at that stage). A
        #: forged message in a client's name is listed until the client's genuine one
        #: arrives; a second message from a client already heard is refused silently.
        self.rejected: dict[str, str] = {}
        #: client -> what it did wrong that did not stop the round (e.g. inconsistent shares).
        self.misbehaving: dict[str, str] = {}
        #: client -> the vector root its accepted masked input was signed under: the
        #: commitment to record on a ledger (DESIGN's step 3), in arrival order.
        self.commitments: dict[str, bytes] = {}
        #: client -> the weight (sample count) its accepted masked input declared, signed:
        #: public to the aggregator, recorded with the commitment.
        self.weights: dict[str, int] = {}
        #: client -> the stage at which it went missing (no message, or a rejected one).
        self.dropped: dict[str, str] = {}
        self._round_key = agreement.AgreementKey.from_bytes((random_bytes or os.urandom)(32))
        # client -> the AES-256-GCM key it seals to the server under (after key_directories)
        self._client_keys: dict[str, bytes] = {}
        # where sealed masked inputs are opened, one vector reused for every client
        self._opened: NDArray[np.uint8] | None = None
        self._adverts: dict[str, AdvertiseKeys] = {}
        self._graph: dict[str, frozenset[str]] = {}
        self._holders: dict[str, list[str]] = {}
        self._index: dict[str, dict[str, int]] = {}
        self._parsed: dict[tuple[str, str, str], shamir.Share] = {}
        self._threshold = 0
        self._digests: dict[str, dict[str, bytes]] = {}
        self._u2: frozenset[str] = frozenset()
        # The running sum of accepted masked inputs (allocated at the first one).
        self._sum: NDArray[np.unsignedinteger] | None = None
        self._u3: tuple[str, ...] = ()
        self._dropped_after_sharing: tuple[str, ...] = ()
        self._outcome: RoundOutcome | None = None

    @property
    def stage(self) -> str:
        return self._stage

    def _sign(self, msg: Message) -> Message:
        return msg.signed(self.identity)

    def _check(
        self, msg: Message, kind: type[Message], allowed: frozenset[str], seen: Collection[str], *, verify: bool = True
    ) -> str | None:
        """The sender if ``msg`` is acceptable, else None (with the reason recorded). With
        ``verify=False`` the caller checks the message, then records the sender as heard
        and calls :meth:`_accepted` (a forged or tampered message must not use up the
        sender's one turn)."""
        sender = getattr(msg, "sender", "?")
        try:
            if not isinstance(msg, kind):
                raise SecAggError(f"expected {kind.__name__}, got {type(msg).__name__}", sender)
            if sender in seen:
                # The sender's message for this stage was accepted already: anything else in
                # its name (a replay, a stale or tampered copy) is refused, and is no reason
                # to count it as dropped.
                return None
            if msg.round_id != self.config.round_id:
                raise SecAggError(
                    f"a message of round {msg.round_id} replayed into round {self.config.round_id}", sender
                )
            if msg.receiver != self.name:
                raise SecAggError(f"addressed to {msg.receiver!r}", sender)
            if sender not in allowed:
                raise SecAggError(f"{sender!r} may not send {kind.STAGE!r} now", sender)
            key = C.verified(self._keys.get(sender), sender)
            if verify:
                msg.verify(key)
        except InvalidSignature as exc:
            self._reject(sender, kind.STAGE, f"bad signature ({exc.reason})")
            return None
        except SecAggError as exc:
            self._reject(sender, kind.STAGE, str(exc))
            return None
        if verify:
            assert isinstance(seen, set)
            seen.add(sender)
            self._accepted(sender)
        return sender

    def _accepted(self, sender: str) -> None:
        """``sender``'s message for this stage checked out: an earlier forged one in its name
        no longer counts against it."""
        self.rejected.pop(sender, None)

    def _reject(self, client: str, stage: str, why: str) -> None:
        """Record that ``client``'s message at ``stage`` was refused, and why (the first
        reason stays on record)."""
        if client in self.clients:
            self.rejected.setdefault(client, f"{stage}: {why}")

    @staticmethod
    def _messages(messages: object, what: str) -> Iterable[object]:
        if isinstance(messages, (str, bytes, Message)) or not isinstance(messages, Iterable):
            raise InvalidArgumentType(what, f"expected an iterable of messages, got {type(messages).__name__}")
        return messages

    def _advance(self, stage: Stage, new: Stage) -> None:
        if self._stage != stage:
            raise SecAggError(f"server: cannot run {stage!r} at stage {self._stage!r}")
        self._stage = new

    def _mark_missing(self, expected: Iterable[str], got: Iterable[str], stage: str) -> None:
        for c in sorted(set(expected) - set(got)):
            self.dropped.setdefault(c, stage)

    # -- stage 2 ------------------------------------------------------------------------------
    def key_directories(self, adverts: Iterable[AdvertiseKeys]) -> dict[str, KeyDirectory]:
        """Accept the adverts; send each participant its neighbors' adverts."""
        adverts = self._messages(adverts, "adverts")  # type: ignore[assignment]
        self._advance(Stage.ADVERTISE_KEYS, Stage.SHARE_KEYS)
        seen: set[str] = set()
        for msg in adverts:
            sender = self._check(msg, AdvertiseKeys, self.clients, seen)
            if sender is None:
                continue
            assert isinstance(msg, AdvertiseKeys)
            try:
                C.check_public_key(msg.seal_key, "seal key", sender)
                C.check_public_key(msg.mask_key, "mask key", sender)
            except SecAggError as exc:
                self._reject(sender, Stage.ADVERTISE_KEYS, str(exc))
                continue
            self._adverts[sender] = msg
        self._mark_missing(self.clients, self._adverts, Stage.ADVERTISE_KEYS)
        ids = tuple(sorted(self._adverts))
        n = len(ids)
        if n < self.config.min_survivors:
            self._stage = Stage.FAILED
            raise RoundFailed(
                f"after {Stage.ADVERTISE_KEYS}: only {n} client(s) advertised keys, fewer than "
                f"min_survivors={self.config.min_survivors}; the round stops and nothing is revealed"
            )
        try:
            self._threshold = self.config.threshold_for(n)
            self.config.scale_for(n)
        except FedLedgerError as exc:
            self._stage = Stage.FAILED
            raise RoundFailed(f"{n} clients advertised, and the configuration does not fit: {exc}") from None
        self._graph = neighbor_graph(ids, self.config.degree(n), self.config.seed())
        self._holders = {c: C.holders(c, self._graph) for c in ids}
        self._index = {c: {h: i + 1 for i, h in enumerate(hs)} for c, hs in self._holders.items()}
        rid = self.config.round_id
        self._client_keys = dict(
            zip(ids, C.server_keys(self._round_key, [self._adverts[c].seal_key for c in ids], rid))
        )
        raw = {c: self._adverts[c].to_bytes() for c in ids}
        mine = self._round_key.public_key.to_bytes()
        out: dict[str, KeyDirectory] = {}
        for c in ids:
            adv = tuple(raw[v] for v in sorted(self._graph[c]))
            out[c] = self._sign(
                KeyDirectory(round_id=rid, sender=self.name, receiver=c, participants=ids, adverts=adv, server_key=mine)
            )  # type: ignore[assignment]
        return out

    # -- stage 4 ------------------------------------------------------------------------------
    def relay_shares(self, messages: Iterable[ShareKeys]) -> dict[str, RelayedShares]:
        """Accept each client's sealed shares; give each client those dealt to it."""
        messages = self._messages(messages, "messages")  # type: ignore[assignment]
        self._advance(Stage.SHARE_KEYS, Stage.MASKED_INPUT)
        seen: set[str] = set()
        accepted: dict[str, ShareKeys] = {}
        for msg in messages:
            sender = self._check(msg, ShareKeys, frozenset(self._adverts), seen)
            if sender is None:
                continue
            assert isinstance(msg, ShareKeys)
            want = set(self._holders[sender])
            if set(msg.sealed) != want or set(msg.digests) != want or any(len(d) != 64 for d in msg.digests.values()):
                self._reject(sender, Stage.SHARE_KEYS, "shares are not exactly for its neighborhood")
                continue
            if msg.sealed[sender] != b"" or any(not ct for h, ct in msg.sealed.items() if h != sender):
                self._reject(sender, Stage.SHARE_KEYS, "malformed sealed shares")
                continue
            accepted[sender] = msg
        # A client with fewer than t live holders of its secrets could not be recovered if it
        # dropped later: leave it out now (its neighbors will not mask with it), repeatedly.
        live = set(accepted)
        while True:
            short = {u for u in live if len(set(self._holders[u]) & live) < self._threshold}
            if not short:
                break
            for u in short:
                self._reject(
                    u, Stage.SHARE_KEYS, f"fewer than the threshold {self._threshold} of its neighborhood shared keys"
                )
            live -= short
        if len(live) < self.config.min_survivors:
            self._stage = Stage.FAILED
            raise RoundFailed(
                f"after {Stage.SHARE_KEYS}: only {len(live)} client(s) shared keys with at least the threshold "
                f"{self._threshold} of their neighborhood ({len(accepted)} shared), fewer than min_survivors="
                f"{self.config.min_survivors}; the round stops and nothing is revealed"
            )
        accepted = {c: m for c, m in accepted.items() if c in live}
        self._mark_missing(self._adverts, accepted, Stage.SHARE_KEYS)
        self._u2 = frozenset(accepted)
        self._digests = {c: dict(m.digests) for c, m in accepted.items()}
        out: dict[str, RelayedShares] = {}
        for v in sorted(self._u2):
            sealed = {u: accepted[u].sealed[v] for u in sorted(self._graph[v] & self._u2)}
            out[v] = self._sign(
                RelayedShares(round_id=self.config.round_id, sender=self.name, receiver=v, sealed=sealed)
            )  # type: ignore[assignment]
        return out

    # -- stage 6 ------------------------------------------------------------------------------
    def receive_masked_input(self, msg: MaskedInput) -> bool:
        """Accept one masked input as it arrives: check it and add it to the running sum
        (one pass that also hashes it against its signed root), so the server holds one
        vector, not one per client. False, with the reason in :attr:`rejected`, if refused."""
        if self._stage != Stage.MASKED_INPUT:
            raise SecAggError(f"server: cannot take a masked input at stage {self._stage!r}")
        width = self.config.bits // 8
        expected = (self.dimension + 1) * width
        # Heard from = accepted: a sender's turn is its entry in commitments.
        sender = self._check(msg, MaskedInput, self._u2, self.commitments.keys(), verify=False)
        if sender is None:
            return False
        assert isinstance(msg, MaskedInput)
        try:
            msg.verify_signature(C.verified(self._keys.get(sender), sender))
        except InvalidSignature as exc:
            self._reject(sender, Stage.MASKED_INPUT, f"bad signature ({exc.reason})")
            return False
        # The signature covers the header, not the bytes behind it: the sender's turn is used
        # only once the data opened and matched the signed root (a tampered copy of a genuine
        # message, sent first, must not shut the genuine one out).
        sealed = self.config.seal_inputs
        size = seal.sealed_records_size(expected) if sealed else expected
        if type(msg.weight) is not int or not 1 <= msg.weight <= self.config.max_weight:
            self._reject(
                sender,
                Stage.MASKED_INPUT,
                f"declared weight {msg.weight!r} is not in [1, max_weight={self.config.max_weight}]",
            )
            return False
        if msg.sealed != sealed:
            self._reject(
                sender,
                Stage.MASKED_INPUT,
                f"{'unsealed' if sealed else 'sealed'}, and this round {'seals' if sealed else 'does not seal'} inputs",
            )
            return False
        if len(msg.data) != size:
            self._reject(
                sender,
                Stage.MASKED_INPUT,
                f"{len(msg.data)} bytes, expected {size} "
                f"({self.dimension} parameters + weight, {width} bytes each"
                f"{', sealed' if sealed else ''})",
            )
            return False
        data: bytes | memoryview = msg.data
        if sealed:
            if self._opened is None:
                self._opened = np.empty(expected, dtype=np.uint8)
            try:
                seal.unseal_records_into(
                    self._client_keys[sender],
                    msg.data,
                    C.to_server(sender, self.name, self.config.round_id, C.INPUT_PURPOSE),
                    self._opened.data,
                )
            except SealError:
                self._reject(sender, Stage.MASKED_INPUT, "its sealed vector does not open")
                return False
            data = self._opened.data
        if self._sum is None:
            self._sum = np.zeros(self.dimension + 1, dtype=masking.ring_dtype(self.config.bits))
        try:
            masking.add_verified(self._sum, data, msg.root)
        except InvalidProof:
            self._reject(sender, Stage.MASKED_INPUT, "the data does not match its signed vector root")
            return False
        self.commitments[sender] = msg.root
        self.weights[sender] = msg.weight
        self._accepted(sender)
        for dealer in msg.complaints:
            if dealer in self._u2:
                self.misbehaving.setdefault(dealer, f"{sender} could not open the shares it dealt")
        return True

    def unmask_requests(self, messages: Iterable[MaskedInput] = ()) -> dict[str, UnmaskRequest]:
        """Accept ``messages`` (as :meth:`receive_masked_input`), close the stage and ask the
        survivors for shares.

        RoundFailed, before anything is requested, if fewer than ``min_survivors`` masked
        inputs arrived, or if some secret that must be reconstructed has fewer than
        ``threshold`` live holders."""
        for msg in self._messages(messages, "messages"):
            self.receive_masked_input(msg)  # type: ignore[arg-type]
        self._advance(Stage.MASKED_INPUT, Stage.UNMASK)
        self._mark_missing(self._u2, self.commitments, Stage.MASKED_INPUT)
        self._u3 = tuple(sorted(self.commitments))
        self._dropped_after_sharing = tuple(sorted(self._u2 - set(self._u3)))
        if len(self._u3) < self.config.min_survivors:
            self._stage = Stage.FAILED
            refused = sorted((c, why) for c, why in self.rejected.items() if why.startswith(f"{Stage.MASKED_INPUT}:"))
            why = "; refused: " + "; ".join(f"{c}: {r}" for c, r in refused[:5]) if refused else ""
            more = f" (and {len(refused) - 5} more)" if len(refused) > 5 else ""
            raise RoundFailed(
                f"after {Stage.MASKED_INPUT}: only {len(self._u3)} masked input(s) arrived, fewer than min_survivors="
                f"{self.config.min_survivors}; the round stops and nothing is revealed{why}{more}"
            )
        self._require_holders(frozenset(self._u3), Stage.MASKED_INPUT)
        out: dict[str, UnmaskRequest] = {}
        for u in self._u3:
            out[u] = self._sign(
                UnmaskRequest(
                    round_id=self.config.round_id,
                    sender=self.name,
                    receiver=u,
                    survivors=self._u3,
                    dropped=self._dropped_after_sharing,
                )
            )  # type: ignore[assignment]
        return out

    def _needed(self) -> list[tuple[str, str]]:
        """(client, kind) of every secret to reconstruct: the survivors' seeds ("b") and the
        keys ("s") of dropped clients with a surviving neighbor."""
        alive = set(self._u3)
        need = [(u, "b") for u in self._u3]
        need += [(d, "s") for d in self._dropped_after_sharing if self._graph[d] & alive]
        return need

    def _require_holders(self, live: frozenset[str], stage: str) -> None:
        t = self._threshold
        if len(self._u3) == 0:
            self._stage = Stage.FAILED
            raise RoundFailed("no masked input arrived")
        for client, kind in self._needed():
            have = [h for h in self._holders[client] if h in live and (kind == "b" or h != client)]
            if len(have) < t:
                self._stage = Stage.FAILED
                what = "self-mask seed" if kind == "b" else "mask key"
                raise RoundFailed(
                    f"after {stage}: only {len(have)} live holders of {client!r}'s {what}, the threshold is {t}; "
                    "the round stops and nothing about the sum is revealed"
                )

    # -- the end ------------------------------------------------------------------------------
    def aggregate(self, messages: Iterable[UnmaskResponse]) -> Aggregate:
        """Check the revealed shares, reconstruct the secrets, remove the masks and return
        the sum. RoundFailed if a secret cannot be reconstructed."""
        messages = self._messages(messages, "messages")  # type: ignore[assignment]
        self._advance(Stage.UNMASK, Stage.FAILED)
        survivors = frozenset(self._u3)
        seen: set[str] = set()
        responses: dict[str, UnmaskResponse] = {}
        alive = set(self._u3)
        dropped = set(self._dropped_after_sharing)
        for msg in messages:
            sender = self._check(msg, UnmaskResponse, survivors, seen)
            if sender is None:
                continue
            assert isinstance(msg, UnmaskResponse)
            try:
                seed_shares, key_shares = msg.open_shares(
                    self._client_keys[sender], C.to_server(sender, self.name, self.config.round_id, C.UNMASK_PURPOSE)
                )
            except (SealError, EncodingError) as exc:
                self._reject(sender, Stage.UNMASK, f"its sealed shares do not open ({exc})")
                continue
            problem = self._check_response(sender, seed_shares, key_shares, alive, dropped)
            if problem:
                self._reject(sender, Stage.UNMASK, problem)
                continue
            responses[sender] = msg
        self._opened = None
        self._mark_missing(self._u3, responses, Stage.UNMASK)
        self._require_holders(frozenset(responses), Stage.UNMASK)
        rid = self.config.round_id
        keys: list[bytes] = []
        signs: list[int] = []
        for client, kind in self._needed():
            shares = [
                self._parsed[(kind, client, h)]
                for h in self._holders[client]
                if h in responses and (kind, client, h) in self._parsed
            ]
            if kind == "b":
                seed = self._recover(client, "self-mask seed", shares, lambda s: len(s) == 32)
                keys.append(C.self_mask_key(seed, client, rid))
                signs.append(-1)
            else:
                pk = self._adverts[client].mask_key
                secret = self._recover(client, "mask key", shares, functools.partial(unmasking.derives, public=pk))
                sk = agreement.AgreementKey.from_bytes(secret)
                peers = sorted(self._graph[client] & alive)
                keys += C.pairwise_mask_keys(sk, [self._adverts[u].mask_key for u in peers], rid)
                signs += [-C.pair_sign(u, client) for u in peers]
        acc = self._sum
        assert acc is not None  # _require_holders: at least one masked input arrived
        self._sum = None
        masking.accumulate(acc, (), keys, signs)
        scale = self.config.scale_for(len(self._adverts))
        weights = {c: self.weights[c] for c in self._u3}
        total = self._check_sum(acc, weights, scale)
        self._stage = Stage.DONE
        self._outcome = RoundOutcome(
            protocol=PROTOCOL,
            round_id=rid,
            participants=tuple(self.clients),
            survivors=self._u3,
            dropouts=self.dropped,
            rejections=self.rejected,
            misbehaving=self.misbehaving,
            commitments={c: self.commitments[c] for c in self._u3},
            weights=weights,
            length=self.dimension,
            ring_bits=self.config.bits,
            aggregate_root=masking.vector_root(acc.view(np.uint8).data),
            params=self._params(len(self._adverts), scale),
        )
        return Aggregate(masking.dequantize(acc[:-1], scale), total, acc, scale, self._u3, weights, self._outcome)

    @property
    def outcome(self) -> RoundOutcome | None:
        """The frozen record of the round once :meth:`aggregate` returned (None before, and
        for a round that failed)."""
        return self._outcome

    def _params(self, n: int, scale: float) -> dict[str, str | int | bytes | bool | None]:
        """The parameters that interpret the sum, as record scalars (floats as exact hex)."""
        cfg = self.config
        return {
            "threshold": self._threshold,
            "degree": cfg.degree(n),
            "graph_seed": cfg.seed(),
            "clip": float(cfg.clip).hex(),
            "scale": float(scale).hex(),
            "max_weight": cfg.max_weight,
            "min_survivors": cfg.min_survivors,
            "seal_inputs": cfg.seal_inputs,
        }

    def _check_sum(self, acc: NDArray[np.unsignedinteger], weights: Mapping[str, int], scale: float) -> int:
        """The total weight, once the unmasked sum passed the weight and range checks."""
        return unmasking.check_sum(acc, weights, scale, bits=self.config.bits, clip=float(self.config.clip))

    def _check_response(
        self,
        sender: str,
        seed_shares: dict[str, bytes],
        key_shares: dict[str, bytes],
        alive: set[str],
        dropped: set[str],
    ) -> str:
        """Why the response is unusable ("" if it is fine): every share must be one this
        sender holds, of the right kind for the dealer's fate, and match the dealer's digest."""
        rid = self.config.round_id
        both = set(seed_shares) & set(key_shares)
        if both:
            return f"both shares of {sorted(both)}"
        for kind, shares, allowed in (("b", seed_shares, alive), ("s", key_shares, dropped)):
            for dealer, share in shares.items():
                if dealer not in allowed or dealer not in self._u2:
                    return f"a {kind!r} share of {dealer!r}, who is not {'alive' if kind == 'b' else 'dropped'}"
                if sender not in self._index[dealer] or (kind == "s" and sender == dealer):
                    return f"a share of {dealer!r}, who did not deal to it"
                digest = self._digests[dealer][sender]
                want = digest[:32] if kind == "b" else digest[32:]
                if not hmac.compare_digest(C.share_digest(rid, dealer, sender, kind, share), want):
                    return f"its {kind!r} share of {dealer!r} is not the one {dealer!r} dealt to it"
        # Every share is the dealer's own: parse them (a malformed one is the dealer's fault
        # and is left out of the reconstruction).
        for kind, shares in (("b", seed_shares), ("s", key_shares)):
            for dealer, share in shares.items():
                try:
                    parsed = shamir.Share.from_bytes(share)
                except FedLedgerError:
                    self.misbehaving.setdefault(dealer, "dealt a malformed share")
                    continue
                if parsed.index != self._index[dealer][sender]:
                    self.misbehaving.setdefault(dealer, f"dealt {sender} a share with the wrong index")
                self._parsed[(kind, dealer, sender)] = parsed
        return ""

    def _recover(self, client: str, what: str, shares: list[shamir.Share], check: Callable[[bytes], bool]) -> bytes:
        """The secret from digest-checked shares, robust to a dealer that dealt some bad ones
        (see :func:`unmasking.recover`); RoundFailed when no choice of shares gives it."""
        secret, consistent = unmasking.recover(shares, self._threshold, check)
        if not consistent:
            self.misbehaving.setdefault(client, f"dealt inconsistent shares of its {what}")
        if secret is None:
            self._stage = Stage.FAILED
            raise RoundFailed(f"cannot reconstruct {client!r}'s {what}: its shares are inconsistent", client)
        return secret
