"""The fuzz targets as regression tests: every file of the seed corpus (valid encodings and
the inputs that once crashed a decoder) goes through the target's check, without atheris."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest

FUZZ = Path(__file__).resolve().parent / "fuzz"
TARGETS = ("cbor", "transaction")


def _check(target: str):  # type: ignore[no-untyped-def]
    spec = importlib.util.spec_from_file_location(f"fuzz_{target}", FUZZ / f"fuzz_{target}.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.check


CASES = [(t, p) for t in TARGETS for p in sorted((FUZZ / "corpus" / t).iterdir())]


@pytest.mark.parametrize(("target", "path"), CASES, ids=[f"{t}/{p.name}" for t, p in CASES])
def test_corpus_input_keeps_the_target_property(target: str, path: Path) -> None:
    _check(target)(path.read_bytes())


@pytest.mark.parametrize("target", TARGETS)
def test_corpus_has_valid_and_regression_seeds(target: str) -> None:
    names = [p.name for p in (FUZZ / "corpus" / target).iterdir()]
    assert any(n.startswith("valid-") for n in names) and any(n.startswith("regress-") for n in names)


def test_corpus_matches_its_generator() -> None:
    """tests/fuzz/make_corpus.py regenerates exactly the committed seeds (no stale files)."""
    spec = importlib.util.spec_from_file_location("make_corpus", FUZZ / "make_corpus.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    for target, seeds in (("cbor", module.cbor_seeds()), ("transaction", module.transaction_seeds())):
        generated = {name for name in seeds}
        on_disk = {p.name for p in (FUZZ / "corpus" / target).iterdir() if not p.name.startswith("crash-")}
        assert generated == on_disk, target
        for name, data in seeds.items():
            assert (FUZZ / "corpus" / target / name).read_bytes() == data, (target, name)


def test_runner_replays_the_corpus() -> None:
    spec = importlib.util.spec_from_file_location("fuzz_run", FUZZ / "run.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    assert module.replay(list(TARGETS)) == 0
