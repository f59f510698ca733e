"""flwr is an optional dependency: importing fedledger (or fedledger.integrations) never
imports it, and without it importing fedledger.integrations.flower raises MissingDependency
naming the ``flower`` extra."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import fedledger

SRC = str(Path(fedledger.__file__).resolve().parents[1])


def _run(code: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHONPATH": SRC}
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, env=env)


def test_the_package_does_not_import_flwr() -> None:
    out = _run("import sys, fedledger, fedledger.integrations\nassert 'flwr' not in sys.modules, 'flwr imported'\n")
    assert out.returncode == 0, out.stderr


def test_without_flwr_the_flower_integration_names_its_extra() -> None:
    code = (
        "import sys\n"
        "sys.modules['flwr'] = None  # as if flwr were not installed\n"
        "from fedledger.errors import MissingDependency\n"
        "try:\n"
        "    import fedledger.integrations.flower\n"
        "except MissingDependency as exc:\n"
        "    assert exc.extra == 'flower' and \"pip install 'fedledger[flower]'\" in str(exc), exc\n"
        "else:\n"
        "    raise SystemExit('imported without flwr')\n"
    )
    out = _run(code)
    assert out.returncode == 0, out.stderr
