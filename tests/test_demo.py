"""fedledger demo: the data split, the model, FedAvg, and the scenario end to end through the CLI."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import fedledger

pytest.importorskip("sklearn")

from fedledger.demo import data, model  # noqa: E402
from fedledger.errors import InvalidArgument  # noqa: E402

SRC = str(Path(fedledger.__file__).resolve().parents[1])
# Keep what PYTHONPATH already holds after the source tree (plugins, a checkout's extras).
ENV = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [SRC, os.environ.get("PYTHONPATH", "")]))}


def _has_rounds() -> bool:
    try:
        import fedledger.federated  # noqa: F401
        from fedledger.aggregators import Masked, Plain  # noqa: F401
    except ImportError:
        return False
    return True


needs_rounds = pytest.mark.skipif(not _has_rounds(), reason="fedledger.federated and the aggregators are not here")


def demo(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "fedledger", "demo", *args], capture_output=True, text=True, env=ENV, timeout=300
    )


# -- data ------------------------------------------------------------------------------------


def test_dirichlet_split_assigns_every_sample_once_and_repeats_with_the_seed() -> None:
    labels = np.repeat([0.0, 1.0], [170, 286])
    first = data.dirichlet_split(labels, 5, 0.5, np.random.default_rng(7))
    again = data.dirichlet_split(labels, 5, 0.5, np.random.default_rng(7))
    other = data.dirichlet_split(labels, 5, 0.5, np.random.default_rng(8))
    assert len(first) == 5
    assert np.array_equal(np.sort(np.concatenate(first)), np.arange(len(labels)))  # each sample exactly once
    assert all(np.array_equal(a, b) for a, b in zip(first, again))
    assert not all(np.array_equal(a, b) for a, b in zip(first, other))
    assert min(len(s) for s in first) >= 10


def test_dirichlet_split_is_non_iid_and_alpha_controls_how_much() -> None:
    labels = np.repeat([0.0, 1.0], [500, 500])

    def spread(alpha: float) -> float:
        """Mean over seeds of the spread of the sites' shares of label 1."""
        out = []
        for seed in range(10):
            sites = data.dirichlet_split(labels, 5, alpha, np.random.default_rng(seed))
            shares = [labels[s].mean() for s in sites]
            out.append(max(shares) - min(shares))
        return float(np.mean(out))

    assert spread(0.5) > 0.5  # skewed label mixes
    assert spread(100.0) < 0.2  # close to IID
    assert spread(0.1) > spread(0.5) > spread(100.0)


def test_dirichlet_split_refuses_impossible_requests() -> None:
    with pytest.raises(InvalidArgument):
        data.dirichlet_split(np.zeros(20), 5, 0.5, np.random.default_rng(0), min_per_site=10)
    with pytest.raises(InvalidArgument):
        data.dirichlet_split(np.zeros(100), 5, 0.0, np.random.default_rng(0))


def test_load_splits_and_standardizes_with_training_statistics_only() -> None:
    split = data.load(alpha=0.5, seed=3)
    again = data.load(alpha=0.5, seed=3)
    assert split.x_train.shape == (456, 30) and split.x_test.shape == (113, 30)
    assert all(np.array_equal(a, b) for a, b in zip(split.sites, again.sites))
    assert np.array_equal(split.x_test, again.x_test)
    assert np.array_equal(np.sort(np.concatenate(split.sites)), np.arange(456))
    # the training split is standardized (pooled from the sites' sums), the test set with its statistics
    assert np.allclose(split.x_train.mean(axis=0), 0, atol=1e-9)
    assert np.allclose(split.x_train.std(axis=0), 1, atol=1e-9)
    assert not np.allclose(split.x_test.mean(axis=0), 0, atol=1e-3)
    # the sites' summed statistics are the pooled ones
    raw = [data.site_statistics(split.x_train[rows] * split.std + split.mean) for rows in split.sites]
    mean, std = data.standardize(raw)
    assert np.allclose(mean, split.mean) and np.allclose(std, split.std)
    assert split.raw_bytes == 456 * 31 * 8


# -- model -----------------------------------------------------------------------------------


def test_logistic_regression_learns_the_data() -> None:
    split = data.load(seed=0)
    rng = np.random.default_rng(0)
    w = model.local_train(
        model.initial(split.features), split.x_train, split.y_train, model.TrainConfig(), rng, epochs=5
    )
    majority = max(split.y_test.mean(), 1 - split.y_test.mean())
    assert model.accuracy(w, split.x_test, split.y_test) > 0.93 > majority + 0.25
    assert (
        model.centralized(split.x_train, split.y_train, split.x_test, split.y_test, 5, model.TrainConfig(), rng)[-1]
        > 0.93
    )


def test_fedavg_of_deltas_is_the_sample_weighted_mean() -> None:
    rng = np.random.default_rng(1)
    deltas = {f"hospital-{i}": rng.normal(size=31) for i in range(5)}
    weights = {s: int(n) for s, n in zip(deltas, [16, 107, 40, 171, 122])}
    expected = sum(weights[s] * deltas[s] for s in deltas) / sum(weights.values())
    assert np.allclose(model.fedavg(deltas, weights), expected)
    equal = model.fedavg(deltas, dict.fromkeys(deltas, 3))
    assert np.allclose(equal, np.mean(list(deltas.values()), axis=0))
    with pytest.raises(InvalidArgument):
        model.fedavg({}, {})


def test_fedprox_keeps_the_local_model_nearer_the_global_one() -> None:
    split = data.load(seed=0)
    x, y = split.site(1)
    start = model.initial(split.features)
    far = model.local_train(start, x, y, model.TrainConfig(epochs=5), np.random.default_rng(2))
    near = model.local_train(start, x, y, model.TrainConfig(epochs=5, mu=5.0), np.random.default_rng(2))
    assert np.linalg.norm(near - start) < np.linalg.norm(far - start)


def test_clip_delta_counts_what_it_cut() -> None:
    clipped, count = model.clip_delta(np.array([-3.0, -1.0, 0.5, 2.5]), 2.0)
    assert clipped.tolist() == [-2.0, -1.0, 0.5, 2.0] and count == 2


# -- the scenario ----------------------------------------------------------------------------


@needs_rounds
def test_demo_cli_runs_the_scenario_and_leaves_a_verifiable_ledger(tmp_path: Path) -> None:
    from fedledger.contracts import BUILTIN
    from fedledger.ledger import Ledger, verify_outcome

    out = tmp_path / "demo"
    proc = demo("--rounds", "3", "--out", str(out))
    assert proc.returncode == 0, proc.stderr
    assert "federated" in proc.stdout and "centralized" in proc.stdout
    for name in ("ledger.db", "blobs", "summary.json", "accuracy.png", "audit-report.json"):
        assert (out / name).exists(), name
    assert (out / "accuracy.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    summary = json.loads((out / "summary.json").read_text())
    for key in ("federated_final", "centralized_final", "local_only_mean", "local_only_min", "local_only_max"):
        assert 0.5 < summary["accuracy"][key] <= 1.0, key
    assert len(summary["accuracy"]["federated_per_round"]) == 3
    assert summary["bytes"]["federated_on_the_wire"] > 0
    assert summary["bytes"]["raw_training_data"] == 456 * 31 * 8
    assert summary["time"]["aggregate_seconds"] > 0 and summary["time"]["plain_aggregate_seconds"] > 0
    assert [r["status"] for r in summary["rounds"]] == ["done"] * 3
    # the withdrawal (after round 1) takes the patient out of rounds 2 and 3; round 2 has a dropout
    assert [r["excluded"] for r in summary["rounds"]] == [0, 1, 1]
    assert summary["dropout"]["round"] == 2 and summary["dropout"]["site"] == "hospital-3"
    assert summary["rounds"][1]["dropouts"] == {"hospital-3": summary["dropout"]["stage"]}
    assert "hospital-3" not in summary["rounds"][1]["survivors"]
    if (out / "audit-fhir.json").exists():
        assert json.loads((out / "audit-fhir.json").read_text())["resourceType"] == "Bundle"
    else:
        assert summary["artefacts"]["fhir"].startswith("skipped")

    with Ledger.open(out / "ledger.db", contracts=BUILTIN, read_only=True) as ledger:
        ledger.verify()
        assert ledger.view("training", "get_policy", policy="demo-policy")["rounds"] == 3
        assert ledger.view("training", "get_round", policy="demo-policy", round=2)["dropouts"]
        assert len(summary["denials"]) == 2
        for denial in summary["denials"]:
            tx_id = bytes.fromhex(denial["tx_id"])
            assert not ledger.outcome(tx_id).ok  # the denial is on the ledger
            receipt = (out / f"denial-receipt-{denial['who']}.json").read_text()
            tx, outcome = verify_outcome(
                receipt, chain_id=ledger.chain_id, trusted_validators=ledger.genesis.validators
            )
            assert tx.id == tx_id and not outcome.ok and "no grant" in outcome.reason
            assert denial["receipt_verified"] is True


@needs_rounds
def test_demo_plain_baseline_is_recorded_under_a_plain_policy(tmp_path: Path) -> None:
    from fedledger.contracts import BUILTIN
    from fedledger.demo.scenario import DemoOptions, run
    from fedledger.ledger import Ledger

    out = tmp_path / "plain"
    summary = run(DemoOptions(rounds=2, out=out, aggregator="plain", quiet=True), print_table=False)
    assert [r["status"] for r in summary["rounds"]] == ["done", "done"]
    assert summary["artefacts"]["ledger_verified"] is True
    # the survivors' mean through the aggregator is the numpy FedAvg (float32 on the wire)
    assert all(r["max_abs_diff_vs_plain"] < 1e-6 for r in summary["rounds"])
    with Ledger.open(out / "ledger.db", contracts=BUILTIN, read_only=True) as ledger:
        policy = ledger.view("training", "get_policy", policy="demo-policy")
        assert policy["aggregator"] == "plain" and policy["rounds"] == 2


def test_demo_refuses_a_folder_that_is_not_empty(tmp_path: Path) -> None:
    (tmp_path / "something").write_text("x")
    proc = demo("--rounds", "1", "--out", str(tmp_path))
    assert proc.returncode == 2 and "not empty" in proc.stderr


def test_demo_without_its_extra_names_the_install_command(tmp_path: Path) -> None:
    code = (
        "import sys; sys.modules['sklearn'] = None\n"
        "from fedledger.__main__ import main\n"
        f"sys.exit(main(['demo', '--out', {str(tmp_path / 'x')!r}]))\n"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=ENV)
    assert proc.returncode == 2
    assert "pip install 'fedledger[demo]'" in proc.stderr and "scikit-learn" in proc.stderr
    assert not (tmp_path / "x").exists()


@needs_rounds
def test_full_demo_federated_within_three_points_of_centralized(tmp_path: Path) -> None:
    from fedledger.demo.scenario import DemoOptions, run

    summary = run(DemoOptions(out=tmp_path / "full", quiet=True), print_table=False)
    accuracy = summary["accuracy"]
    assert accuracy["federated_final"] >= accuracy["centralized_final"] - 0.03
    assert summary["convergence"]["federated_rounds"] is not None
    assert summary["clipped_values"] == 0
