"""Federated training of a PyTorch model among hospitals, with masked (SecAgg+) aggregation.

Run it after `pip install '.[torch,demo]'` (torch and scikit-learn):

    python examples/torch_round.py [ROUNDS]

Four hospitals each hold part of the breast-cancer data set (scikit-learn's copy of the
Wisconsin diagnostic data); a held-out fifth is the test set. Each round, every hospital loads
the global model into its own copy of a small MLP, trains it a few steps on its own data, and
sends the change of its weights (a float64 vector, `fedledger.integrations.torch`) with its
sample count to a `Masked` aggregator: the aggregator learns the weighted sum, never one
hospital's change. The new global model is the old one plus the weighted mean (FedAvg). One
hospital drops out of the third round before sending its masked update; the round completes
without it. Each round prints the test accuracy and how far the masked mean is from the plain
weighted mean of the same updates (within the quantization bound).
"""

from __future__ import annotations

import sys
from functools import partial

import numpy as np
import torch
from sklearn.datasets import load_breast_cancer

from fedledger.aggregators import Masked
from fedledger.integrations.torch import client_update, flatten, load_into


def model() -> torch.nn.Module:
    return torch.nn.Sequential(
        torch.nn.Linear(30, 16), torch.nn.ReLU(), torch.nn.Linear(16, 8), torch.nn.ReLU(), torch.nn.Linear(8, 1)
    )


def accuracy(net: torch.nn.Module, x: torch.Tensor, y: torch.Tensor) -> float:
    with torch.no_grad():
        return float(((net(x).squeeze(1) > 0).float() == y).float().mean())


def train(net: torch.nn.Module, x: torch.Tensor, y: torch.Tensor) -> int:
    """A few steps of local SGD; returns the weight: the number of samples trained on."""
    opt = torch.optim.SGD(net.parameters(), lr=0.1)
    for _ in range(10):
        opt.zero_grad()
        torch.nn.functional.binary_cross_entropy_with_logits(net(x).squeeze(1), y).backward()
        opt.step()
    return len(y)


def main(rounds: int) -> None:
    torch.manual_seed(2026)
    x, y = load_breast_cancer(return_X_y=True)
    order = np.random.default_rng(2026).permutation(len(y))
    x = (x - x.mean(0)) / x.std(0)
    xs, ys = torch.tensor(x[order], dtype=torch.float32), torch.tensor(y[order], dtype=torch.float32)
    names = ["hospital-a", "hospital-b", "hospital-c", "hospital-d"]
    parts = np.array_split(np.arange(len(y)), len(names) + 1)
    data = {name: (xs[p], ys[p]) for name, p in zip(names, parts)}
    x_test, y_test = xs[parts[-1]], ys[parts[-1]]

    global_model = model()
    weights, spec = flatten(global_model)  # the global model as a float64 vector, and its layout
    print(
        f"{len(names)} hospitals, {sum(len(d[1]) for d in data.values())} training and {len(y_test)} test samples; "
        f"a {spec.size}-parameter MLP; accuracy before training {accuracy(global_model, x_test, y_test):.3f}"
    )
    aggregator = Masked(min_cohort=3)

    for r in range(1, rounds + 1):
        updates, samples = {}, {}
        for name, (xh, yh) in data.items():
            local = model()
            load_into(local, weights, spec)  # start from the global model
            updates[name], samples[name] = client_update(local, partial(train, x=xh, y=yh))
        dropouts = {"hospital-c": "masked_input"} if r == 3 else {}
        result = aggregator.run(updates, samples, dropouts, round_id=r)
        plain = sum(updates[s] * samples[s] for s in result.survivors) / result.total_weight
        bound = len(result.survivors) / float(result.parameters["scale"]) / result.total_weight  # type: ignore[arg-type]
        weights = weights + result.mean
        load_into(global_model, weights, spec)
        gone = f", dropped {sorted(result.dropouts)}" if result.dropouts else ""
        print(
            f"round {r}: {len(result.survivors)} hospitals in the masked sum{gone}; "
            f"test accuracy {accuracy(global_model, x_test, y_test):.3f}; "
            f"max |masked - plain| {np.max(np.abs(result.mean - plain)):.1e} (bound {bound:.1e})"
        )


if __name__ == "__main__":
    main(int(sys.argv[1]) if len(sys.argv) > 1 else 5)
