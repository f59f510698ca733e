"""A site and a trustee of a Paillier aggregation round, as state machines: messages in,
messages out, no I/O."""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable, Mapping

import numpy as np
from numpy.typing import NDArray

from fedledger.crypto import agreement, masking, seal
from fedledger.crypto.paillier import EncryptedVector, KeyShare, PublicKey, sum_vectors
from fedledger.crypto.signing import VerifyKey
from fedledger.errors import (
    EncodingError,
    FedLedgerError,
    InvalidArgument,
    InvalidArgumentType,
    InvalidSignature,
    SecAggError,
)
from fedledger.heagg import config as C
from fedledger.heagg.config import HEAggConfig
from fedledger.heagg.messages import Announce, DecryptRequest, EncryptedUpdate, Message, PartialDecryptionMessage
from fedledger.identity import Identity

__all__ = ["HEAggClient", "HEAggTrustee", "check_update"]

RandomBytes = Callable[[int], bytes]


def check_update(update: object, what: str = "update") -> NDArray[np.floating]:
    """``update`` as a 1-D float32/float64 array of finite values, or a typed error."""
    if not isinstance(update, np.ndarray) or update.dtype not in (np.float32, np.float64):
        raise InvalidArgumentType(what, "expected a 1-D float32 or float64 numpy array")
    if update.ndim != 1:
        raise InvalidArgument(what, f"must be 1-D, got shape {update.shape}")
    if update.size and not np.isfinite(update).all():
        raise InvalidArgument(what, "holds NaN or infinite values")
    return update


def _accept(
    msg: Message, kind: type[Message], name: str, server: str, round_id: int, keys: Mapping[str, VerifyKey]
) -> None:
    if not isinstance(msg, kind):
        raise SecAggError(f"{name}: expected {kind.__name__}, got {type(msg).__name__}")
    if msg.round_id != round_id:
        raise SecAggError(f"{name}: message of round {msg.round_id}, this is round {round_id}", msg.sender)
    if msg.sender != server or msg.receiver != name:
        raise SecAggError(f"{name}: message from {msg.sender!r} to {msg.receiver!r}", msg.sender)
    key = keys.get(server)
    if key is None:
        raise SecAggError(f"{name}: no key for the aggregator {server!r}", server)
    try:
        msg.verify(key)
    except InvalidSignature as exc:
        raise SecAggError(f"{name}: bad aggregator signature ({exc})", server) from None


class HEAggClient:
    """One site of one round: :meth:`encrypt_update` answers the aggregator's
    :class:`Announce` with the site's sealed, encrypted, weighted update. It raises
    SecAggError instead of answering anything it should not (a wrong signature, round or
    receiver, parameters other than its own, fewer participants than ``min_survivors``).

    ``public_key`` is the round's Paillier key (from the dealer); ``verify_keys`` maps the
    aggregator's name to its Ed25519 key."""

    def __init__(
        self,
        identity: Identity,
        config: HEAggConfig,
        public_key: PublicKey,
        *,
        server: str,
        verify_keys: Mapping[str, VerifyKey],
        random_bytes: RandomBytes | None = None,
    ) -> None:
        if not isinstance(identity, Identity):
            raise InvalidArgumentType("identity", f"expected an Identity, got {type(identity).__name__}")
        if not isinstance(config, HEAggConfig):
            raise InvalidArgumentType("config", f"expected an HEAggConfig, got {type(config).__name__}")
        if not isinstance(public_key, PublicKey):
            raise InvalidArgumentType("public_key", f"expected a paillier PublicKey, got {type(public_key).__name__}")
        self.identity = identity
        self.name = identity.name
        self.config = config
        self.public_key = public_key
        self.server = server
        self._keys = dict(verify_keys)
        self._rand: RandomBytes = random_bytes or os.urandom
        self._stage = "announce"

    @property
    def stage(self) -> str:
        return self._stage

    def _encrypted_weight(self, weight: int) -> int:
        """The weight the update is multiplied by (a hook: tests override it to lie)."""
        return weight

    def encrypt_update(self, announce: Announce, update: NDArray[np.floating], weight: int = 1) -> EncryptedUpdate:
        """Check the announcement, then quantize ``clip(update)``, encrypt it packed, multiply
        it by ``weight`` (homomorphically: every slot and the weight slot), seal the
        ciphertext bytes to the aggregator and sign the declared weight and their root."""
        cfg = self.config
        _accept(announce, Announce, self.name, self.server, cfg.round_id, self._keys)
        self._stage = "failed"
        update = check_update(update)
        if type(weight) is not int:
            raise InvalidArgumentType("weight", f"expected int, got {type(weight).__name__}")
        if not 1 <= weight <= cfg.max_total_weight:
            raise InvalidArgument("weight", f"must be in [1, max_total_weight={cfg.max_total_weight}], got {weight}")
        ids = announce.participants
        if list(ids) != sorted(set(ids)) or self.name not in ids:
            raise SecAggError(f"{self.name}: malformed participant list", self.server)
        if len(ids) < cfg.min_survivors:
            raise SecAggError(
                f"{self.name}: only {len(ids)} participants, fewer than min_survivors={cfg.min_survivors}", self.server
            )
        mine = cfg.params(self.public_key, int(update.shape[0]), {}, 0)
        for field in ("bits", "clip", "max_total_weight", "min_survivors", "dimension", "key"):
            if announce.params.get(field) != mine[field]:
                raise SecAggError(f"{self.name}: the round's {field} is not this site's", self.server)
        layout = cfg.layout(self.public_key, int(update.shape[0]))
        q = layout.quantize(update.astype(np.float64))
        vec = self.public_key.encrypt_quantized(
            q, bits=cfg.bits, clip=float(cfg.clip), max_summands=cfg.max_total_weight
        )
        times = self._encrypted_weight(weight)
        if times > 1:
            vec = vec * times
        data = vec.ciphertexts.tobytes()
        root = masking.vector_root(data)
        eph = agreement.AgreementKey.from_bytes(self._rand(32))
        try:
            key = C.seal_key(eph, announce.server_key, cfg.round_id)
        except (FedLedgerError, ValueError) as exc:
            raise SecAggError(f"{self.name}: unusable aggregator round key ({exc})", self.server) from None
        if cfg.seal_updates:
            sealed = seal.seal_records(key, data, C.context(self.name, self.server, cfg.round_id, C.UPDATE_PURPOSE))
        else:
            sealed = data
        self._stage = "done"
        msg = EncryptedUpdate(
            round_id=cfg.round_id,
            sender=self.name,
            receiver=self.server,
            weight=weight,
            root=root,
            site_key=eph.public_key.to_bytes(),
            tail=sealed,
        )
        return msg.signed(self.identity)


class HEAggTrustee:
    """One trustee of one round: :meth:`partial_decrypt` answers one :class:`DecryptRequest`
    with its partial decryption of the sum, sealed to the aggregator, and answers nothing
    else for the round.

    Before it decrypts it rebuilds the sum itself: every update in the request must carry
    a valid signature of a distinct site of ``sites``, addressed to the aggregator in this
    round, with ciphertext bytes matching its signed root, at least ``min_survivors`` of
    them and a total weight within ``max_total_weight``. So the aggregator cannot have one
    site's update (or a sum of too few) decrypted without ``threshold`` trustees colluding
    with it. ``dimension`` is the update length, fixed by the round like the layout."""

    def __init__(
        self,
        identity: Identity,
        config: HEAggConfig,
        share: KeyShare,
        *,
        server: str,
        sites: Iterable[str],
        verify_keys: Mapping[str, VerifyKey],
        dimension: int,
        random_bytes: RandomBytes | None = None,
    ) -> None:
        if not isinstance(identity, Identity):
            raise InvalidArgumentType("identity", f"expected an Identity, got {type(identity).__name__}")
        if not isinstance(config, HEAggConfig):
            raise InvalidArgumentType("config", f"expected an HEAggConfig, got {type(config).__name__}")
        if not isinstance(share, KeyShare):
            raise InvalidArgumentType("share", f"expected a KeyShare, got {type(share).__name__}")
        if type(dimension) is not int or dimension < 0:
            raise InvalidArgument("dimension", f"expected an int >= 0, got {dimension!r}")
        self.identity = identity
        self.name = identity.name
        self.config = config
        self.share = share
        self.server = server
        self.sites = frozenset(sites)
        self.dimension = dimension
        self._keys = dict(verify_keys)
        self._rand: RandomBytes = random_bytes or os.urandom
        self._stage = "decrypt_request"

    @property
    def stage(self) -> str:
        return self._stage

    def _sum(self, request: DecryptRequest) -> EncryptedVector:
        cfg = self.config
        pk = self.share.public_key
        layout = cfg.layout(pk, self.dimension)
        block = layout.num_ciphertexts * pk.c_bytes
        heads = request.updates
        if len(heads) < cfg.min_survivors:
            raise SecAggError(
                f"{self.name}: asked to decrypt a sum of {len(heads)} updates, fewer than "
                f"min_survivors={cfg.min_survivors}; nothing is decrypted",
                self.server,
            )
        if len(request.tail) != block * len(heads):
            raise SecAggError(f"{self.name}: the request carries {len(request.tail)} bytes of ciphertexts", self.server)
        seen: set[str] = set()
        vectors = []
        total = 0
        for i, raw in enumerate(heads):
            try:
                upd = EncryptedUpdate.from_header(raw)
            except EncodingError as exc:
                raise SecAggError(f"{self.name}: update {i} is malformed ({exc})", self.server) from None
            who = upd.sender
            if who not in self.sites or who in seen:
                raise SecAggError(f"{self.name}: update {i} is from {who!r}, not a distinct site", self.server)
            if upd.round_id != cfg.round_id or upd.receiver != self.server:
                raise SecAggError(f"{self.name}: update {i} is of another round or receiver", self.server)
            key = self._keys.get(who)
            if key is None:
                raise SecAggError(f"{self.name}: no key for site {who!r}", self.server)
            try:
                upd.verify(key)
            except InvalidSignature:
                raise SecAggError(f"{self.name}: update {i} does not carry {who!r}'s signature", self.server) from None
            data = request.tail[i * block : (i + 1) * block]
            if masking.vector_root(data) != upd.root:
                raise SecAggError(f"{self.name}: the ciphertexts of {who!r} do not match its signed root", self.server)
            if not 1 <= upd.weight <= cfg.max_total_weight:
                raise SecAggError(f"{self.name}: {who!r} declared weight {upd.weight}", self.server)
            total += upd.weight
            seen.add(who)
            rows = np.frombuffer(data, dtype=np.uint8).reshape(layout.num_ciphertexts, pk.c_bytes)
            try:
                vectors.append(EncryptedVector.from_ciphertexts(pk, layout, upd.weight, rows))
            except FedLedgerError as exc:
                raise SecAggError(f"{self.name}: the ciphertexts of {who!r} are invalid ({exc})", self.server) from None
        if total > cfg.max_total_weight:
            raise SecAggError(f"{self.name}: total weight {total} > max_total_weight", self.server)
        return sum_vectors(vectors)

    def partial_decrypt(self, request: DecryptRequest) -> PartialDecryptionMessage:
        """Check the request, add the updates, partially decrypt the sum (once per round)."""
        cfg = self.config
        if self._stage != "decrypt_request":
            raise SecAggError(f"{self.name}: already answered a decryption request this round", self.server)
        _accept(request, DecryptRequest, self.name, self.server, cfg.round_id, self._keys)
        self._stage = "failed"
        total = self._sum(request)
        partial = self.share.partial_decrypt(total)
        eph = agreement.AgreementKey.from_bytes(self._rand(32))
        try:
            key = C.seal_key(eph, request.server_key, cfg.round_id)
        except (FedLedgerError, ValueError) as exc:
            raise SecAggError(f"{self.name}: unusable aggregator round key ({exc})", self.server) from None
        sealed = seal.seal_records(
            key, partial.to_bytes(total.public_key), C.context(self.name, self.server, cfg.round_id, C.PARTIAL_PURPOSE)
        )
        self._stage = "done"
        msg = PartialDecryptionMessage(
            round_id=cfg.round_id,
            sender=self.name,
            receiver=self.server,
            index=self.share.index,
            digest=partial.vector_digest,
            trustee_key=eph.public_key.to_bytes(),
            tail=sealed,
        )
        return msg.signed(self.identity)
