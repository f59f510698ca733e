"""What the example's ServerApp and ClientApp share: the consortium (names and keys), the
secure aggregation settings, the data partitions and the model (a small torch MLP; the
models travel as numpy arrays in Flower's ArrayRecords).

The keys are derived from the names so that every process of this demo agrees on them without
a key exchange; a real site keeps its own Identity (``Identity.save``/``Identity.load``) and
publishes only its identity card."""

from __future__ import annotations

import hashlib
from functools import cache

import numpy as np
import torch
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


def net() -> torch.nn.Module:
    """The model: a small MLP (30 features, 16 hidden units, one logit), in float64 so that the
    comparison with plain FedAvg in run_local.py is limited by the quantization alone."""
    return torch.nn.Sequential(torch.nn.Linear(30, 16), torch.nn.ReLU(), torch.nn.Linear(16, 1)).double()


def initial_model() -> dict[str, NDArray[np.float64]]:
    torch.manual_seed(0)
    return {k: v.numpy().copy() for k, v in net().state_dict().items()}


def _loaded(model: dict[str, NDArray[np.float64]]) -> torch.nn.Module:
    module = net()
    module.load_state_dict({k: torch.from_numpy(np.asarray(v, dtype=np.float64).copy()) for k, v in model.items()})
    return module


def train(
    model: dict[str, NDArray[np.float64]], x: NDArray[np.float64], y: NDArray[np.float64], epochs: int, lr: float
) -> tuple[dict[str, NDArray[np.float64]], float]:
    """Full-batch gradient descent on the log loss (torch autograd); the new model and its
    training loss."""
    module = _loaded(model)
    opt = torch.optim.SGD(module.parameters(), lr=lr)
    xt, yt = torch.from_numpy(x), torch.from_numpy(y).unsqueeze(1)
    for _ in range(epochs):
        opt.zero_grad()
        torch.nn.functional.binary_cross_entropy_with_logits(module(xt), yt).backward()
        opt.step()
    with torch.no_grad():
        loss = float(torch.nn.functional.binary_cross_entropy_with_logits(module(xt), yt))
    return {k: v.numpy().copy() for k, v in module.state_dict().items()}, loss


def accuracy(model: dict[str, NDArray[np.float64]], x: NDArray[np.float64], y: NDArray[np.float64]) -> float:
    with torch.no_grad():
        logits = _loaded(model)(torch.from_numpy(x)).squeeze(1).numpy()
    return float(np.mean((logits > 0) == (y > 0.5)))
