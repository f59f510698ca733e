"""The README's main job, examples/quickstart.py, runs and shows what it promises."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

QUICKSTART = Path(__file__).resolve().parents[1] / "examples" / "quickstart.py"


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
