"""``Paillier``: :mod:`fedledger.heagg` behind the aggregator protocol. The aggregator sees
Paillier ciphertexts only and learns the survivors' weighted sum once ``threshold`` of the
``trustees`` send partial decryptions; updates and partial decryptions are sealed to it."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import ClassVar

import numpy as np
from numpy.typing import NDArray

from fedledger.aggregators._common import (
    SERVER,
    check_inputs,
    check_update,
    check_weight,
    envelope,
    min_survivors,
    play,
)
from fedledger.aggregators.base import AggregateResult, Envelope
from fedledger.crypto.paillier import KeyShare
from fedledger.crypto.signing import VerifyKey
from fedledger.errors import EncodingError, FedLedgerError, InvalidArgument, SecAggError
from fedledger.heagg import (
    Announce,
    Dealing,
    DecryptRequest,
    HEAggClient,
    HEAggConfig,
    HEAggServer,
    HEAggTrustee,
    deal,
)
from fedledger.identity import Identity

__all__ = ["Paillier", "PaillierClient", "PaillierServer", "PaillierTrustee"]


class PaillierClient:
    """One site: :meth:`start` takes its update and weight (nothing is sent yet);
    :meth:`respond` answers ``announce`` with its sealed, encrypted ``update``."""

    client_class: type[HEAggClient] = HEAggClient

    def __init__(
        self,
        identity: Identity,
        config: HEAggConfig,
        dealing: Dealing,
        *,
        server: str,
        verify_keys: Mapping[str, VerifyKey],
    ) -> None:
        self.name = identity.name
        self.client = self.client_class(identity, config, dealing.public_key, server=server, verify_keys=verify_keys)
        self._max = config.max_total_weight
        self._update: NDArray[np.floating] | None = None
        self._weight = 1
        self.error = ""

    def start(self, update: NDArray[np.floating], weight: int) -> list[Envelope]:
        self._update = check_update(update, "update")
        self._weight = check_weight(weight, "weight")
        if weight > self._max:
            raise InvalidArgument("weight", f"{weight} exceeds max_total_weight={self._max}")
        return []

    def respond(self, message: Envelope) -> list[Envelope]:
        try:
            if message.stage != "announce" or self._update is None:
                raise SecAggError(f"{self.name}: unexpected {message.stage!r}")
            out = self.client.encrypt_update(Announce.from_bytes(message.data), self._update, self._weight)
        except FedLedgerError as exc:
            self.error = f"{message.stage}: {exc}"
            return []
        return [envelope(out)]


class PaillierTrustee:
    """One trustee: :meth:`respond` answers one ``decrypt_request`` with its sealed
    ``partial_decryption`` (once per round; see :class:`~fedledger.heagg.HEAggTrustee`)."""

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
    ) -> None:
        self.name = identity.name
        self.trustee = HEAggTrustee(
            identity, config, share, server=server, sites=sites, verify_keys=verify_keys, dimension=dimension
        )
        self.error = ""

    def respond(self, message: Envelope) -> list[Envelope]:
        try:
            if message.stage != "decrypt_request":
                raise SecAggError(f"{self.name}: unexpected {message.stage!r}")
            out = self.trustee.partial_decrypt(DecryptRequest.from_bytes(message.data))
        except FedLedgerError as exc:
            self.error = f"{message.stage}: {exc}"
            return []
        return [envelope(out)]


class PaillierServer:
    """The aggregator: an :class:`~fedledger.heagg.HEAggServer` collecting envelopes; its
    :attr:`stage` is ``update`` (from the sites), then ``partial_decryption`` (from the trustees)."""

    def __init__(self, server: HEAggServer, parameters: Mapping[str, object]) -> None:
        self.server = server
        self.parameters = dict(parameters)

    @property
    def stage(self) -> str:
        return self.server.stage

    @property
    def done(self) -> bool:
        return self.server.done

    def expecting(self) -> frozenset[str]:
        return self.server.expecting()

    def start(self) -> list[Envelope]:
        return [envelope(m) for m in self.server.start()]

    def collect(self, message: Envelope) -> None:
        stage = self.server.stage
        try:
            msg = HEAggServer.parse(stage, message.data)
        except EncodingError as exc:
            who = message.sender
            if (who in self.server.sites or who in self.server.trustees) and who in self.server.expecting():
                self.server.rejected.setdefault(who, f"{stage}: malformed ({exc})")
            return
        self.server.collect(msg)

    def advance(self) -> list[Envelope]:
        return [envelope(m) for m in self.server.advance()]

    def finish(self) -> AggregateResult:
        res = self.server.finish()
        params = dict(self.parameters)
        params.update(scale=res.scale, threshold=self.server.threshold, trustees=len(self.server.trustees))
        return AggregateResult(
            aggregator="paillier",
            aggregate=res.aggregate,
            total_weight=res.total_weight,
            survivors=res.survivors,
            commitments=dict(res.commitments),
            weights=dict(res.weights),
            dropouts=dict(res.dropped),
            parameters=params,
        )


class Paillier:
    """Packed Paillier with t-of-n trustees as an aggregator.

    ``min_cohort``: the policy's minimum cohort (the floor is max(min_cohort, 3)); ``bits``
    per quantized value, ``clip``, ``max_total_weight`` (the most the declared weights of a
    round may add up to); ``key_bits`` of the Paillier modulus; ``trustees`` (their number)
    and ``threshold`` (how many decrypt). ``dealing``: the trusted dealer's output
    (:func:`fedledger.heagg.deal`); None deals one, for trustees ``trustee-1`` ...,
    the first time it is needed (key generation of safe primes takes a while at 2048 bits).
    ``insecure_for_tests`` allows keys under 2048 bits. Dropout stages: ``update`` for a
    site, ``partial_decryption`` for a trustee (by name)."""

    name = "paillier"
    STAGES: ClassVar[tuple[str, ...]] = ("update",)
    TRUSTEE_STAGES: ClassVar[tuple[str, ...]] = ("partial_decryption",)

    def __init__(
        self,
        min_cohort: int = 3,
        *,
        bits: int = 16,
        clip: float = 1.0,
        max_total_weight: int = 128,
        key_bits: int = 2048,
        trustees: int = 3,
        threshold: int = 2,
        dealing: Dealing | None = None,
        insecure_for_tests: bool = False,
        sealed: bool = True,
    ) -> None:
        self.min_survivors = min_survivors(min_cohort)
        self.sealed = bool(sealed)
        self.bits = bits
        self.clip = clip
        self.max_total_weight = max_total_weight
        self.config(1)
        if type(trustees) is not int or type(threshold) is not int or not 1 <= threshold <= trustees:
            raise InvalidArgument("threshold", f"need 1 <= threshold <= trustees, got {threshold!r} of {trustees!r}")
        if dealing is not None and not isinstance(dealing, Dealing):
            raise InvalidArgument("dealing", f"expected a Dealing, got {type(dealing).__name__}")
        self.key_bits = dealing.public_key.bits if dealing is not None else key_bits
        self.n_trustees = len(dealing.shares) if dealing is not None else trustees
        self.threshold = dealing.threshold if dealing is not None else threshold
        self.insecure_for_tests = insecure_for_tests
        self._dealing = dealing

    def config(self, round_id: int) -> HEAggConfig:
        return HEAggConfig(
            bits=self.bits,
            clip=self.clip,
            max_total_weight=self.max_total_weight,
            min_survivors=self.min_survivors,
            round_id=round_id,
            seal_updates=self.sealed,
        )

    @property
    def dealing(self) -> Dealing:
        """The key and its shares (dealt on first use when none was given)."""
        if self._dealing is None:
            names = [f"trustee-{i}" for i in range(1, self.n_trustees + 1)]
            self._dealing = deal(
                names, self.threshold, key_bits=self.key_bits, insecure_for_tests=self.insecure_for_tests
            )
        return self._dealing

    @property
    def parameters(self) -> Mapping[str, object]:
        return {
            "name": self.name,
            "bits": self.bits,
            "clip": float(self.clip),
            "max_total_weight": self.max_total_weight,
            "key_bits": self.key_bits,
            "threshold": self.threshold,
            "trustees": self.n_trustees,
            "min_survivors": self.min_survivors,
            "sealed": self.sealed,
        }

    def server(
        self,
        identity: Identity,
        *,
        sites: Iterable[str],
        verify_keys: Mapping[str, VerifyKey],
        dimension: int,
        round_id: int = 1,
    ) -> PaillierServer:
        d = self.dealing
        inner = HEAggServer(
            identity,
            self.config(round_id),
            d.public_key,
            sites=sites,
            trustees=d.trustees,
            threshold=d.threshold,
            verify_keys=verify_keys,
            dimension=dimension,
        )
        return PaillierServer(inner, self.parameters)

    def client(
        self, identity: Identity, *, server: str, verify_keys: Mapping[str, VerifyKey], round_id: int = 1
    ) -> PaillierClient:
        return PaillierClient(identity, self.config(round_id), self.dealing, server=server, verify_keys=verify_keys)

    def trustee(
        self,
        identity: Identity,
        *,
        server: str,
        sites: Iterable[str],
        verify_keys: Mapping[str, VerifyKey],
        dimension: int,
        round_id: int = 1,
    ) -> PaillierTrustee:
        """The trustee named ``identity.name`` (its share from :attr:`dealing`)."""
        share = self.dealing.shares.get(identity.name)
        if share is None:
            raise InvalidArgument("identity", f"{identity.name!r} holds no share of this key")
        return PaillierTrustee(
            identity,
            self.config(round_id),
            share,
            server=server,
            sites=sites,
            verify_keys=verify_keys,
            dimension=dimension,
        )

    def run(
        self,
        updates: Mapping[str, NDArray[np.floating]],
        weights: Mapping[str, int] | None = None,
        dropouts: Mapping[str, str] | None = None,
        *,
        round_id: int = 1,
    ) -> AggregateResult:
        d = self.dealing
        inp = check_inputs(
            updates,
            weights,
            dropouts,
            stages=self.STAGES,
            floor=self.min_survivors,
            others={t: self.TRUSTEE_STAGES for t in d.shares},
        )
        if set(inp.ids) & set(d.shares) or SERVER in inp.ids:
            raise InvalidArgument("updates", f"site names must differ from the trustees' and {SERVER!r}")
        total = sum(inp.weights.values())
        if total > self.max_total_weight:
            raise InvalidArgument(
                "weights", f"they add up to {total}, more than max_total_weight={self.max_total_weight}"
            )
        return play(
            self,
            inp,
            round_id,
            others=d.shares,
            make_other=lambda ident, keys: self.trustee(
                ident, server=SERVER, sites=inp.ids, verify_keys=keys, dimension=inp.dimension, round_id=round_id
            ),
        )
