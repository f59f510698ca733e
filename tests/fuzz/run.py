"""Run the fuzz targets: a bounded coverage-guided campaign (atheris), or a replay of the corpus.

    python tests/fuzz/run.py                         # every target, 60 s each
    python tests/fuzz/run.py --time 3600 --targets transaction -- -jobs=4 -workers=4
    python tests/fuzz/run.py --replay                # run each corpus file once (no atheris needed)

New interesting inputs go to a scratch directory (``--work``, default a temporary one), never
into the repository's corpus; crashes go to ``fuzz-artifacts/`` (``--artifacts``) and the exit
status is non-zero. Reproduce a crash with ``python tests/fuzz/fuzz_<target>.py <crash-file>``.
Where atheris is not installed (its wheels are CPython 3.11-3.13 on x86-64 Linux only) the
campaign is skipped with a message and exit status 0, unless ``--require-atheris`` is given.
fedledger must be importable (installed, or PYTHONPATH=src with the kernels built in place).
"""

from __future__ import annotations

import argparse
import importlib.util
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from types import ModuleType

HERE = Path(__file__).resolve().parent
TARGETS = ("cbor", "transaction")


def load_target(name: str) -> ModuleType:
    """The fuzz target module tests/fuzz/fuzz_<name>.py (it defines ``check(data)``)."""
    spec = importlib.util.spec_from_file_location(f"fuzz_{name}", HERE / f"fuzz_{name}.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def corpus_files(name: str) -> list[Path]:
    return sorted(p for p in (HERE / "corpus" / name).iterdir() if p.is_file())


def replay(targets: list[str]) -> int:
    failed = 0
    for name in targets:
        check = load_target(name).check
        files = corpus_files(name)
        for path in files:
            try:
                check(path.read_bytes())
            except Exception as exc:  # report every failing file, not only the first
                failed += 1
                print(f"FAIL {name} {path.name}: {type(exc).__name__}: {exc}"[:500], file=sys.stderr)
        print(f"replay {name}: {len(files)} inputs")
    return 1 if failed else 0


def fuzz(targets: list[str], seconds: int, work: Path, artifacts: Path, extra: list[str]) -> int:
    artifacts.mkdir(parents=True, exist_ok=True)
    status = 0
    for name in targets:
        scratch = work / name
        scratch.mkdir(parents=True, exist_ok=True)
        command = [
            sys.executable,
            str(HERE / f"fuzz_{name}.py"),
            str(scratch),
            str(HERE / "corpus" / name),
            f"-max_total_time={seconds}",
            "-rss_limit_mb=2048",
            "-timeout=10",
            "-max_len=70000",
            f"-artifact_prefix={artifacts}/{name}-",
            "-print_final_stats=1",
            *extra,
        ]
        print(f"fuzz {name}: {seconds} s", flush=True)
        start = time.monotonic()
        rc = subprocess.run(command, check=False).returncode
        print(f"fuzz {name}: exit {rc} after {time.monotonic() - start:.0f} s", flush=True)
        if rc != 0:
            status = 1
            print(
                f"fuzz {name}: FAILED; inputs in {artifacts}/, reproduce with python {HERE / f'fuzz_{name}.py'} <file>",
                file=sys.stderr,
            )
    return status


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--targets", default=",".join(TARGETS), help="comma-separated, of: " + ", ".join(TARGETS))
    parser.add_argument("--time", type=int, default=60, help="seconds per target (default 60)")
    parser.add_argument("--replay", action="store_true", help="run the corpus once through each target and stop")
    parser.add_argument("--work", type=Path, help="where new corpus entries go (default: a temporary directory)")
    parser.add_argument("--artifacts", type=Path, default=Path("fuzz-artifacts"), help="where crashes go")
    parser.add_argument("--require-atheris", action="store_true", help="fail instead of skipping without atheris")
    parser.add_argument("libfuzzer", nargs="*", help="extra libFuzzer flags, after --")
    args = parser.parse_args()
    targets = [t for t in args.targets.split(",") if t]
    unknown = set(targets) - set(TARGETS)
    if unknown:
        parser.error(f"unknown targets: {sorted(unknown)}")
    if args.replay:
        return replay(targets)
    if importlib.util.find_spec("atheris") is None:
        print(
            "fuzz: atheris is not installed (wheels: CPython 3.11-3.13, x86-64 Linux); "
            "skipping the fuzz campaign. The corpus still runs in tests/test_fuzz_corpus.py.",
            file=sys.stderr,
        )
        return 1 if args.require_atheris else 0
    if args.work is not None:
        return fuzz(targets, args.time, args.work, args.artifacts, args.libfuzzer)
    with tempfile.TemporaryDirectory(prefix="fedledger-fuzz-") as work:
        return fuzz(targets, args.time, Path(work), args.artifacts, args.libfuzzer)


if __name__ == "__main__":
    sys.exit(main())
