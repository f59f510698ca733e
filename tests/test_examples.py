"""The README's main job, examples/quickstart.py, runs and shows what it promises."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

QUICKSTART = Path(__file__).resolve().parents[1] / "examples" / "quickstart.py"
SECAGG = Path(__file__).resolve().parents[1] / "examples" / "secure_aggregation.py"


def test_quickstart_runs_end_to_end(tmp_path: Path) -> None:
    out = subprocess.run([sys.executable, str(QUICKSTART), str(tmp_path / "q.db")],
                         capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr
    lines = out.stdout.splitlines()
    assert "3,000 transactions signed by the sites and committed in 5 durable blocks" in lines[1]
    assert "verified offline" in lines[2]
    assert lines[3].startswith("forged receipt rejected")
    assert lines[4].startswith("full audit passed")
    assert lines[5].startswith("tampering caught: ledger tampered at height 1")
    assert lines[6] == "the file still extends the head kept at height 5"


def test_secure_aggregation_example_runs() -> None:
    out = subprocess.run([sys.executable, str(SECAGG)], capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr
    lines = out.stdout.splitlines()
    assert lines[0].startswith("20 sites, 10 neighbours each, threshold 6 of 11")
    assert "18 updates in the sum, dropped ['hospital-03', 'hospital-11', 'hospital-17']" in lines[1]
    assert "max |secure - plain|" in lines[2]
    assert lines[4].startswith("tampered update caught: hospital-05 its sealed vector does not open; 19 updates")
