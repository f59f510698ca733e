"""What the example's ServerApp and ClientApp share: the consortium (names and keys), the
secure aggregation settings, the data partitions and the model (numpy logistic regression:
this example needs no deep-learning framework).

The keys are derived from the names so that every process of this demo agrees on them without
a key exchange; a real site keeps its own Identity (``Identity.save``/``Identity.load``) and
publishes only its identity card."""

from __future__ import annotations

import hashlib
from functools import cache

import numpy as np
from numpy.typing import NDArray

from fedledger.aggregators import Masked
from fedledger.crypto.agreement import AgreementKey
from fedledger.crypto.signing import SigningKey, VerifyKey
from fedledger.identity import Identity

SITES = ["hospital-a", "hospital-b", "hospital-c", "hospital-d"]
COORDINATOR = "coordinator"
POLICY = "breast-cancer-lr"


def identity(name: str) -> Identity:
    """Demo keys, derived from the name (see the module docstring)."""
    seed = hashlib.sha256(b"fedledger flower example/" + name.encode()).digest()
    return Identity(name, SigningKey.from_bytes(seed), AgreementKey.from_bytes(hashlib.sha256(seed).digest()))


def verify_keys() -> dict[str, VerifyKey]:
    return {n: identity(n).verify_key for n in [*SITES, COORDINATOR]}


def aggregator() -> Masked:
    """The secure aggregation settings the server and every site hold: model deltas clipped
    to [-4, 4], 32-bit quantization, at least 3 sites per sum."""
    return Masked(3, bits=32, clip=4.0, max_weight=1000)


@cache
def _data() -> tuple[NDArray[np.float64], NDArray[np.float64]]:
    from sklearn.datasets import load_breast_cancer

    x, y = load_breast_cancer(return_X_y=True)
    x = (x - x.mean(axis=0)) / x.std(axis=0)
    order = np.random.default_rng(0).permutation(len(y))
    return x[order], y[order].astype(np.float64)


def partition(i: int, n: int) -> tuple[NDArray[np.float64], ...]:
    """Site ``i`` of ``n``: its (x_train, y_train, x_test, y_test), 80/20."""
    x, y = _data()
    xs, ys = np.array_split(x, n)[i], np.array_split(y, n)[i]
    cut = int(0.8 * len(ys))
    return xs[:cut], ys[:cut], xs[cut:], ys[cut:]


def initial_model() -> dict[str, NDArray[np.float64]]:
    return {"w": np.zeros(30), "b": np.zeros(1)}


def _predict(model: dict[str, NDArray[np.float64]], x: NDArray[np.float64]) -> NDArray[np.float64]:
    return 1.0 / (1.0 + np.exp(-(x @ model["w"] + model["b"][0])))


def train(
    model: dict[str, NDArray[np.float64]], x: NDArray[np.float64], y: NDArray[np.float64], epochs: int, lr: float
) -> tuple[dict[str, NDArray[np.float64]], float]:
    """Full-batch gradient descent on the log loss; the new model and its training loss."""
    w, b = model["w"].copy(), model["b"].copy()
    for _ in range(epochs):
        p = _predict({"w": w, "b": b}, x)
        w -= lr * x.T @ (p - y) / len(y)
        b -= lr * np.array([np.mean(p - y)])
    p = np.clip(_predict({"w": w, "b": b}, x), 1e-12, 1 - 1e-12)
    return {"w": w, "b": b}, float(-np.mean(y * np.log(p) + (1 - y) * np.log(1 - p)))


def accuracy(model: dict[str, NDArray[np.float64]], x: NDArray[np.float64], y: NDArray[np.float64]) -> float:
    return float(np.mean((_predict(model, x) > 0.5) == (y > 0.5)))
