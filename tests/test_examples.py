"""The README's main job, examples/quickstart.py, runs and shows what it promises."""

from __future__ import annotations

import importlib.util
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

import fedledger

QUICKSTART = Path(__file__).resolve().parents[1] / "examples" / "quickstart.py"
# The directory that holds the fedledger under test (installed, or src/ of a checkout).
PACKAGE_ROOT = str(Path(fedledger.__file__).resolve().parents[1])
SECAGG = Path(__file__).resolve().parents[1] / "examples" / "secure_aggregation.py"


def test_quickstart_runs_end_to_end_twice_on_one_file(tmp_path: Path) -> None:
    for run, blocks in ((1, "1-5"), (2, "6-10")):
        out = subprocess.run(
            [sys.executable, str(QUICKSTART), str(tmp_path / "q.db")], capture_output=True, text=True, timeout=300
        )
        assert out.returncode == 0, out.stderr
        lines = out.stdout.splitlines()
        assert f"3,000 transactions signed by the sites and committed in 5 durable blocks (blocks {blocks})" in lines[1]
        assert "verified offline" in lines[2]
        assert lines[3].startswith("forged receipt rejected")
        assert lines[4].startswith("full audit passed")
        assert lines[5].startswith("tampering caught: ledger tampered at height 1")
        assert lines[6] == f"the file still extends the head kept at height {5 * run}"
    left = sorted(p.name for p in tmp_path.iterdir())
    assert set(left) - {"q.db-shm", "q.db-wal"} == {"q.db", "q.db-lock", "q.db.keys"}


def test_readme_python_snippets_run_twice_in_one_directory(tmp_path: Path) -> None:
    readme = (Path(__file__).resolve().parents[1] / "README.md").read_text()
    snippets = re.findall(r"```python\n(.*?)```", readme, re.S)
    assert snippets
    for _ in range(2):
        for code in snippets:
            out = subprocess.run(
                [sys.executable, "-c", code],
                cwd=tmp_path,
                capture_output=True,
                text=True,
                timeout=300,
                env={**os.environ, "PYTHONPATH": PACKAGE_ROOT},
            )
            assert out.returncode == 0, f"{code}\n{out.stderr}"


@pytest.mark.parametrize("run", [1, 2])
def test_secure_aggregation_example_runs_twice(run: int) -> None:
    out = subprocess.run([sys.executable, str(SECAGG)], capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr
    lines = out.stdout.splitlines()
    assert lines[0].startswith("20 sites, 10 neighbors each, threshold 6 of 11")
    assert "18 updates in the sum, dropped ['hospital-03', 'hospital-11', 'hospital-17']" in lines[1]
    assert "max |secure - plain|" in lines[2]
    assert lines[4].startswith("tampered update caught: hospital-05 its sealed vector does not open; 19 updates")


def test_the_consortium_example_starts_etcd_and_four_nodes_with_one_command(tmp_path: Path) -> None:
    from etcd_cluster import require_etcd

    require_etcd()
    example = Path(__file__).resolve().parents[1] / "examples" / "consortium" / "run.py"
    out = subprocess.run(
        [sys.executable, str(example), "--out", str(tmp_path / "c"), "--txs", "800"],
        capture_output=True,
        text=True,
        timeout=300,
        env={**os.environ, "PYTHONPATH": PACKAGE_ROOT},
    )
    assert out.returncode == 0, out.stderr
    assert "800 transactions submitted to 4 nodes, committed on every replica" in out.stdout
    assert "v2 restarted: it caught up from etcd" in out.stdout
    assert "one chain, one state root on all four replicas: True" in out.stdout
    assert "every replica passed the full audit" in out.stdout


TORCH_ROUND = Path(__file__).resolve().parents[1] / "examples" / "torch_round.py"


def test_the_torch_example_trains_an_mlp_through_masked_rounds() -> None:
    _require_torch()  # the torch extra; CI's torch step installs it and must not skip
    out = subprocess.run(
        [sys.executable, str(TORCH_ROUND), "5"],
        capture_output=True,
        text=True,
        timeout=300,
        env={**os.environ, "PYTHONPATH": PACKAGE_ROOT},
    )
    assert out.returncode == 0, out.stderr
    lines = out.stdout.splitlines()
    assert lines[0].startswith("4 hospitals, 456 training and 113 test samples; a 641-parameter MLP")
    assert len(lines) == 6 and "dropped ['hospital-c']" in lines[3]
    for line in lines[1:]:
        found = re.search(r"test accuracy ([\d.]+); max \|masked - plain\| (\S+) \(bound (\S+)\)", line)
        assert found, line
        assert float(found.group(2)) <= float(found.group(3))
    assert float(re.findall(r"test accuracy ([\d.]+)", lines[-1])[0]) >= 0.9


def _require_torch() -> None:
    """Skip without torch (the torch extra), or fail where CI's torch step sets FEDLEDGER_REQUIRE_TORCH."""
    if importlib.util.find_spec("torch") is None:
        if os.environ.get("FEDLEDGER_REQUIRE_TORCH"):
            pytest.fail("torch is not installed, and FEDLEDGER_REQUIRE_TORCH is set: pip install torch first")
        pytest.skip(
            "torch is not installed (pip install 'fedledger[torch]'); FEDLEDGER_REQUIRE_TORCH makes this a failure"
        )


def test_the_flower_torch_example_runs_in_one_process(tmp_path: Path) -> None:
    if not os.environ.get("CI"):
        pytest.importorskip("flwr", reason="flwr is not installed (pip install 'fedledger[flower]')")
    _require_torch()
    script = Path(__file__).resolve().parents[1] / "examples" / "flower_secagg" / "run_local.py"
    env = {**os.environ, "PYTHONPATH": PACKAGE_ROOT, "FLWR_TELEMETRY_ENABLED": "0", "FLWR_DISABLE_UPDATE_CHECK": "1"}
    out = subprocess.run(
        [sys.executable, str(script), str(tmp_path)], capture_output=True, text=True, timeout=300, env=env
    )
    assert out.returncode == 0, out.stderr[-3000:]
    lines = [line for line in out.stdout.splitlines() if line.startswith(("round ", "max "))]
    assert [line.split(":")[0] for line in lines[:5]] == [f"round {r}" for r in range(1, 6)]
    assert all(": done, 4 sites, weight 453," in line for line in lines[:5])
    assert re.match(r"max \|secure - plain FedAvg\| = \S+; held-out accuracy 0\.9\d\d$", lines[5])
