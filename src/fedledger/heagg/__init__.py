"""Paillier aggregation: the weighted sum of the sites' updates under packed Paillier
encryption, decrypted by t of n trustees; shaped like :mod:`fedledger.secagg`.

Each site quantizes clip(update), encrypts it packed (:class:`~fedledger.crypto.paillier.EncryptedVector`,
a weight slot in every ciphertext), multiplies it homomorphically by its weight (sample
count), seals the ciphertext bytes to the aggregator (AES-256-GCM: the second layer) and
signs its declared weight and the bytes' root (the update commitment). The aggregator adds
the ciphertexts; each trustee re-checks every signed update, adds them itself and returns a
partial decryption sealed to the aggregator; t of them decrypt the sum. Decryption checks
the weight slot (it must equal the declared total) and the range of every value. A trusted
dealer makes the key and its shares (:func:`deal`); trustees give no proof that their
partial decryptions are correct. See docs/security-heagg.md.

>>> import numpy as np
>>> from fedledger import heagg
>>> dealing = heagg.deal(["t1", "t2", "t3"], 2, key_bits=512, insecure_for_tests=True)
>>> updates = {f"site-{i}": np.full(4, 0.25 * i) for i in range(4)}
>>> res = heagg.run_round(updates, heagg.HEAggConfig(), dealing, weights={"site-3": 2}, dropouts={"site-0": "update"})
>>> np.round(res.aggregate, 3).tolist(), res.total_weight, sorted(res.dropped.items())
([2.25, 2.25, 2.25, 2.25], 4, [('site-0', 'update')])
"""

from __future__ import annotations

from fedledger.heagg.client import HEAggClient, HEAggTrustee
from fedledger.heagg.config import MIN_SURVIVORS, Dealing, HEAggConfig, deal
from fedledger.heagg.messages import (
    STAGES,
    Announce,
    DecryptRequest,
    EncryptedUpdate,
    Message,
    PartialDecryptionMessage,
)
from fedledger.heagg.server import HEAggResult, HEAggServer
from fedledger.heagg.simulate import DROPOUT_STAGES, run_round

__all__ = [
    "DROPOUT_STAGES",
    "MIN_SURVIVORS",
    "STAGES",
    "Announce",
    "Dealing",
    "DecryptRequest",
    "EncryptedUpdate",
    "HEAggClient",
    "HEAggConfig",
    "HEAggResult",
    "HEAggServer",
    "HEAggTrustee",
    "Message",
    "PartialDecryptionMessage",
    "deal",
    "run_round",
]
