"""The aggregator of a Paillier aggregation round, as a state machine: messages in,
messages out, no I/O.

The aggregator never trusts a site or a trustee: every message is checked (signature,
round, stage, sender, receiver, sizes, seal, root) and a party whose message fails is
recorded in :attr:`HEAggServer.rejected` and counts as dropped at that stage. Only a round
that cannot finish raises :class:`~fedledger.errors.RoundFailed`.
"""

from __future__ import annotations

import itertools
import os
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass

import numpy as np
from numpy.typing import NDArray

from fedledger.crypto import agreement, masking, seal
from fedledger.crypto.paillier import (
    EncryptedVector,
    PartialDecryption,
    PublicKey,
    combine_partial_decryptions,
    sum_vectors,
)
from fedledger.crypto.signing import VerifyKey
from fedledger.errors import (
    DecryptionError,
    EncodingError,
    FedLedgerError,
    InvalidArgument,
    InvalidArgumentType,
    InvalidSignature,
    PaillierOverflow,
    RoundFailed,
    SecAggError,
)
from fedledger.heagg import config as C
from fedledger.heagg.config import HEAggConfig
from fedledger.heagg.messages import Announce, DecryptRequest, EncryptedUpdate, Message, PartialDecryptionMessage
from fedledger.identity import Identity

__all__ = ["HEAggResult", "HEAggServer"]

#: At most this many t-subsets of the partial decryptions are tried before giving up.
MAX_SUBSETS = 32
#: Room for a partial decryption's header (index, sharing, digest, sizes) beyond its values.
_PARTIAL_HEADER_ROOM = 256


@dataclass(frozen=True)
class HEAggResult:
    """The decrypted sum: ``aggregate`` is the dequantized sum over ``survivors`` of
    weight x clip(update), ``quantized`` the exact integer sum it came from."""

    aggregate: NDArray[np.float64]
    quantized: NDArray[np.int64]
    total_weight: int
    scale: float
    survivors: tuple[str, ...]
    weights: Mapping[str, int]
    commitments: Mapping[str, bytes]
    dropped: Mapping[str, str]
    rejected: Mapping[str, str]
    params: Mapping[str, object]


class HEAggServer:
    """The aggregator of one round.

    ``sites`` are the names invited; ``trustees`` maps each trustee's name to its share
    index (from :class:`~fedledger.heagg.Dealing`), ``threshold`` is how many partial
    decryptions decrypt; ``verify_keys`` holds every party's Ed25519 key; ``dimension`` is
    the update length. Drive it with :meth:`start`, :meth:`collect` (each message as it
    arrives), :meth:`advance` (close the stage) and :meth:`finish`.
    """

    def __init__(
        self,
        identity: Identity,
        config: HEAggConfig,
        public_key: PublicKey,
        *,
        sites: Iterable[str],
        trustees: Mapping[str, int],
        threshold: int,
        verify_keys: Mapping[str, VerifyKey],
        dimension: int,
        random_bytes: Callable[[int], bytes] | None = None,
    ) -> None:
        if not isinstance(identity, Identity):
            raise InvalidArgumentType("identity", f"expected an Identity, got {type(identity).__name__}")
        if not isinstance(config, HEAggConfig):
            raise InvalidArgumentType("config", f"expected an HEAggConfig, got {type(config).__name__}")
        if not isinstance(public_key, PublicKey):
            raise InvalidArgumentType("public_key", f"expected a paillier PublicKey, got {type(public_key).__name__}")
        if type(dimension) is not int or dimension < 0:
            raise InvalidArgument("dimension", f"expected an int >= 0, got {dimension!r}")
        if type(threshold) is not int or not 1 <= threshold <= len(trustees):
            raise InvalidArgument("threshold", f"must be an int in [1, {len(trustees)}], got {threshold!r}")
        self.identity = identity
        self.name = identity.name
        self.config = config
        self.public_key = public_key
        self.sites = frozenset(sites)
        self.trustees = dict(trustees)
        if self.sites & set(self.trustees) or self.name in self.sites | set(self.trustees):
            raise InvalidArgument("trustees", "sites, trustees and the aggregator must have distinct names")
        self.threshold = threshold
        self.dimension = dimension
        self.layout = config.layout(public_key, dimension)
        self._block = self.layout.num_ciphertexts * public_key.c_bytes
        self._keys = dict(verify_keys)
        self._round_key = agreement.AgreementKey.from_bytes((random_bytes or os.urandom)(32))
        self._stage = "announce"
        #: party -> why its message was refused (it counts as dropped at that stage).
        self.rejected: dict[str, str] = {}
        #: party -> the stage at which it went missing (no message, or a refused one).
        self.dropped: dict[str, str] = {}
        #: site -> the root of its ciphertext bytes, as it signed it (the update commitment).
        self.commitments: dict[str, bytes] = {}
        #: site -> its declared (signed) weight.
        self.weights: dict[str, int] = {}
        self._updates: dict[str, tuple[bytes, bytes, EncryptedVector]] = {}
        self._survivors: tuple[str, ...] = ()
        self._sum: EncryptedVector | None = None
        self._partials: dict[str, PartialDecryption] = {}
        self._result: HEAggResult | None = None

    # -- state -----------------------------------------------------------------------------
    @property
    def stage(self) -> str:
        """The stage being collected: "update", "partial_decryption"; "announce" before
        :meth:`start`, then "done" or "failed"."""
        return self._stage

    @property
    def done(self) -> bool:
        return self._stage == "done"

    @property
    def params(self) -> dict[str, object]:
        return dict(self.config.params(self.public_key, self.dimension, self.trustees, self.threshold))

    def expecting(self) -> frozenset[str]:
        if self._stage == "update":
            return self.sites - set(self._updates)
        if self._stage == "partial_decryption":
            return frozenset(self.trustees) - set(self._partials)
        return frozenset()

    def _reject(self, party: str, why: str) -> None:
        if party in self.sites or party in self.trustees:
            self.rejected.setdefault(party, f"{self._stage}: {why}")

    def _check(self, msg: object, kind: type[Message], allowed: Iterable[str], heard: Iterable[str]) -> str | None:
        sender = getattr(msg, "sender", "?")
        if not isinstance(msg, kind):
            self._reject(sender, f"expected {kind.STAGE!r}, got {type(msg).__name__}")
            return None
        if sender in heard:
            return None  # a replay or a second copy: refused, and no reason to drop the sender
        if sender not in allowed:
            return None
        if msg.round_id != self.config.round_id:
            self._reject(sender, f"a message of round {msg.round_id} replayed into round {self.config.round_id}")
            return None
        if msg.receiver != self.name:
            self._reject(sender, f"addressed to {msg.receiver!r}")
            return None
        key = self._keys.get(sender)
        try:
            if key is None:
                raise InvalidSignature(f"no key for {sender!r}")
            msg.verify(key)
        except InvalidSignature as exc:
            self._reject(sender, f"bad signature ({exc})")
            return None
        return sender

    # -- stage 1 ---------------------------------------------------------------------------
    def start(self) -> list[Announce]:
        """Open the round: an :class:`Announce` for every site."""
        if self._stage != "announce":
            raise SecAggError(f"aggregator: cannot start at stage {self._stage!r}")
        if len(self.sites) < self.config.min_survivors:
            self._stage = "failed"
            raise RoundFailed(f"{len(self.sites)} sites, fewer than min_survivors={self.config.min_survivors}")
        self._stage = "update"
        ids = tuple(sorted(self.sites))
        mine = self._round_key.public_key.to_bytes()
        params = self.config.params(self.public_key, self.dimension, self.trustees, self.threshold)
        return [
            Announce(
                round_id=self.config.round_id,
                sender=self.name,
                receiver=c,
                participants=ids,
                server_key=mine,
                params=params,
            ).signed(self.identity)
            for c in ids
        ]

    # -- stage 2 ---------------------------------------------------------------------------
    def collect(self, msg: Message) -> bool:
        """Take one message of the current stage; False (the reason in :attr:`rejected`) if refused."""
        if self._stage == "update":
            return self._collect_update(msg)
        if self._stage == "partial_decryption":
            return self._collect_partial(msg)
        raise SecAggError(f"aggregator: no messages are collected at stage {self._stage!r}")

    def _collect_update(self, msg: Message) -> bool:
        cfg = self.config
        sender = self._check(msg, EncryptedUpdate, self.sites, self._updates)
        if sender is None:
            return False
        assert isinstance(msg, EncryptedUpdate)
        if not 1 <= msg.weight <= cfg.max_total_weight:
            self._reject(sender, f"declared weight {msg.weight} is not in [1, {cfg.max_total_weight}]")
            return False
        if sum(self.weights.values()) + msg.weight > cfg.max_total_weight:
            self._reject(sender, f"its weight would take the total past max_total_weight={cfg.max_total_weight}")
            return False
        expected = seal.sealed_records_size(self._block) if cfg.seal_updates else self._block
        if len(msg.tail) != expected:
            self._reject(sender, f"{len(msg.tail)} bytes, expected {expected}")
            return False
        try:
            if cfg.seal_updates:
                key = C.seal_key(self._round_key, msg.site_key, cfg.round_id)
                data = seal.unseal_records(key, msg.tail, C.context(sender, self.name, cfg.round_id, C.UPDATE_PURPOSE))
            else:
                data = bytes(msg.tail)
        except (FedLedgerError, ValueError):
            self._reject(sender, "its sealed update does not open")
            return False
        if masking.vector_root(data) != msg.root:
            self._reject(sender, "the ciphertexts do not match the signed root")
            return False
        rows = np.frombuffer(data, dtype=np.uint8).reshape(self.layout.num_ciphertexts, self.public_key.c_bytes)
        try:
            vec = EncryptedVector.from_ciphertexts(self.public_key, self.layout, msg.weight, rows)
        except FedLedgerError as exc:
            self._reject(sender, f"invalid ciphertexts ({exc})")
            return False
        self._updates[sender] = (msg.header_bytes(), data, vec)
        self.commitments[sender] = msg.root
        self.weights[sender] = msg.weight
        self.rejected.pop(sender, None)
        return True

    def _collect_partial(self, msg: Message) -> bool:
        cfg = self.config
        sender = self._check(msg, PartialDecryptionMessage, self.trustees, self._partials)
        if sender is None:
            return False
        assert isinstance(msg, PartialDecryptionMessage) and self._sum is not None
        if msg.index != self.trustees[sender]:
            self._reject(sender, f"share index {msg.index}, this trustee holds {self.trustees[sender]}")
            return False
        most = seal.sealed_records_size(self._block + _PARTIAL_HEADER_ROOM)
        if len(msg.tail) > most:
            self._reject(sender, f"{len(msg.tail)} bytes, more than a partial decryption of the sum ({most})")
            return False
        try:
            key = C.seal_key(self._round_key, msg.trustee_key, cfg.round_id)
            data = seal.unseal_records(key, msg.tail, C.context(sender, self.name, cfg.round_id, C.PARTIAL_PURPOSE))
            part = PartialDecryption.from_bytes(data, self.public_key, vector=self._sum)
        except (FedLedgerError, ValueError) as exc:
            self._reject(sender, f"its partial decryption does not open or parse ({exc})")
            return False
        if part.index != msg.index or part.threshold != self.threshold or part.trustees != len(self.trustees):
            self._reject(sender, "its partial decryption is of another sharing")
            return False
        self._partials[sender] = part
        self.rejected.pop(sender, None)
        return True

    # -- closing stages --------------------------------------------------------------------
    def advance(self) -> list[Message]:
        """Close the current stage with whoever answered; the next stage's messages."""
        if self._stage == "update":
            return list(self._requests())
        if self._stage == "partial_decryption":
            self._decrypt()
            return []
        raise SecAggError(f"aggregator: cannot advance at stage {self._stage!r}")

    def _fail(self, why: str) -> RoundFailed:
        self._stage = "failed"
        return RoundFailed(why)

    def _requests(self) -> list[DecryptRequest]:
        cfg = self.config
        for c in sorted(self.sites - set(self._updates)):
            self.dropped.setdefault(c, "update")
        self._survivors = tuple(sorted(self._updates))
        if len(self._survivors) < cfg.min_survivors:
            raise self._fail(
                f"after update: only {len(self._survivors)} update(s) arrived, fewer than min_survivors="
                f"{cfg.min_survivors}; nothing is decrypted"
            )
        self._sum = sum_vectors([self._updates[c][2] for c in self._survivors])
        heads = tuple(self._updates[c][0] for c in self._survivors)
        tail = b"".join(self._updates[c][1] for c in self._survivors)
        mine = self._round_key.public_key.to_bytes()
        self._stage = "partial_decryption"
        return [
            DecryptRequest(
                round_id=cfg.round_id, sender=self.name, receiver=t, updates=heads, server_key=mine, tail=tail
            ).signed(self.identity)
            for t in sorted(self.trustees)
        ]

    def _decrypt(self) -> None:
        for t in sorted(set(self.trustees) - set(self._partials)):
            self.dropped.setdefault(t, "partial_decryption")
        if len(self._partials) < self.threshold:
            raise self._fail(
                f"after partial_decryption: {len(self._partials)} partial decryption(s), the threshold is "
                f"{self.threshold}; nothing is decrypted"
            )
        assert self._sum is not None
        total = sum(self.weights[c] for c in self._survivors)
        errors: list[str] = []
        quantized: NDArray[np.int64] | None = None
        names = sorted(self._partials)
        for chosen in itertools.islice(itertools.combinations(names, self.threshold), MAX_SUBSETS):
            try:
                q = combine_partial_decryptions(
                    self._sum,
                    [self._partials[t] for t in chosen],
                    quantized=True,
                    threshold=self.threshold,
                    trustees=len(self.trustees),
                )
            except (DecryptionError, PaillierOverflow, InvalidArgument) as exc:
                errors.append(str(exc))
                continue
            quantized = q.astype(np.int64)
            break
        if quantized is None:
            if errors and all("checksum" in e for e in errors):
                why = (
                    f"weight check: the decrypted weight slot is not the survivors' declared total {total} "
                    f"(some site encrypted another weight than it signed); {errors[0]}"
                )
            elif errors and all("headroom" in e or "floor" in e for e in errors):
                why = f"range check: the decrypted sum lies outside the declared weights times the clip; {errors[0]}"
            else:
                why = f"the partial decryptions do not decrypt the sum (a trustee is faulty, or a check failed): {errors[0]}"
            raise self._fail(why + "; the round returns no aggregate")
        scale = self.layout.scale
        self._result = HEAggResult(
            aggregate=quantized / scale,
            quantized=quantized,
            total_weight=total,
            scale=scale,
            survivors=self._survivors,
            weights={c: self.weights[c] for c in self._survivors},
            commitments={c: self.commitments[c] for c in self._survivors},
            dropped=dict(self.dropped),
            rejected=dict(self.rejected),
            params=self.params,
        )
        self._stage = "done"

    def finish(self) -> HEAggResult:
        """The result, once :attr:`done`."""
        if self._result is None:
            raise SecAggError(f"aggregator: no result at stage {self._stage!r}")
        return self._result

    # -- parsing helper for transports -----------------------------------------------------
    @staticmethod
    def parse(stage: str, data: bytes) -> Message:
        """The message of ``stage`` in ``data`` (EncodingError if malformed)."""
        kinds: dict[str, type[Message]] = {
            "announce": Announce,
            "update": EncryptedUpdate,
            "decrypt_request": DecryptRequest,
            "partial_decryption": PartialDecryptionMessage,
        }
        kind = kinds.get(stage)
        if kind is None:
            raise EncodingError(f"unknown stage {stage!r}")
        return kind.from_bytes(data)
