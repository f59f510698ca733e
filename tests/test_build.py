"""The native build: what it reports, how it fails, and what importing costs."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

import fedledger
from fedledger import _ext


def test_build_info_reports_every_kernel_and_library() -> None:
    info = fedledger.build_info()
    assert set(info["modules"]) == set(_ext.KERNEL_MODULES)
    assert all(path.endswith((".so", ".pyd")) for path in info["modules"].values())
    assert info["openssl"].startswith("OpenSSL 3.")
    major = int(info["gmp"].split(".")[0])
    assert major >= 6
    assert tuple(int(x) for x in info["libsodium"].split(".")[:3]) >= (1, 0, 18)
    assert isinstance(info["openmp"], bool)
    assert info["num_threads"] >= 1


def test_build_info_is_typed_and_names_the_shamir_kernel() -> None:
    from typing import get_type_hints

    info = fedledger.build_info()
    assert set(info) == set(get_type_hints(fedledger.BuildInfo))
    # Shamir is a compiled Cython kernel like the rest; no JIT is reported or needed.
    assert "_shamir" in info["modules"] and info["modules"]["_shamir"].endswith((".so", ".pyd"))
    assert not any("numba" in key for key in info)
    for key, kind in get_type_hints(fedledger.BuildInfo).items():
        assert isinstance(info[key], getattr(kind, "__origin__", kind)), key  # type: ignore[literal-required]


def test_openmp_is_built_in_where_the_compiler_has_it() -> None:
    # Our build machines' gcc has OpenMP; a build that silently lost it would be a regression.
    assert fedledger.build_info()["openmp"] is True


def test_missing_extension_raises_importerror_with_rebuild_hint() -> None:
    with pytest.raises(ImportError, match=r"pip install \."):
        _ext.load("_no_such_kernel")


def test_thread_count_validation_and_env_override() -> None:
    from fedledger.errors import InvalidArgument, InvalidArgumentType

    with pytest.raises(InvalidArgument):
        fedledger.set_num_threads(0)
    with pytest.raises(InvalidArgumentType):
        fedledger.set_num_threads("2")  # type: ignore[arg-type]
    out = subprocess.run(
        [sys.executable, "-c", "import fedledger, json; print(json.dumps(fedledger.build_info()['num_threads']))"],
        capture_output=True,
        text=True,
        check=True,
        env={**os.environ, "FEDLEDGER_NUM_THREADS": "3"},
    )
    assert json.loads(out.stdout) == 3


IMPORT_PROBE = """
import sys, time
t = time.perf_counter()
import fedledger
elapsed = time.perf_counter() - t
heavy = sorted(m for m in ("numba", "Cython", "pyximport", "setuptools", "torch") if m in sys.modules)
print(elapsed, ",".join(heavy) or "-")
"""


def test_import_is_fast_and_compiles_nothing() -> None:
    # Best of three cold interpreters, so a noisy neighbor does not decide the verdict.
    best = float("inf")
    for _ in range(3):
        out = subprocess.run([sys.executable, "-c", IMPORT_PROBE], capture_output=True, text=True, check=True)
        elapsed, heavy = out.stdout.split()
        best = min(best, float(elapsed))
        assert heavy == "-", f"import fedledger pulled in {heavy}"
    assert best <= 0.3


FIRST_SHARE_PROBE = """
import sys, time
from fedledger.crypto import shamir
t = time.perf_counter()
shares = shamir.split(b"a 32-byte key for the round....!", 3, 5)
assert shamir.combine(shares[2:]) == b"a 32-byte key for the round....!"
elapsed = time.perf_counter() - t
heavy = sorted(m for m in ("numba", "llvmlite", "Cython", "pyximport") if m in sys.modules)
print(elapsed, ",".join(heavy) or "-", shamir._k.__file__)
"""


def test_first_split_in_a_fresh_process_loads_no_jit() -> None:
    # The Shamir kernels are compiled ahead of time: a process's first split and combine
    # cost what later ones do (well under a millisecond), not a JIT or cache load.
    best = float("inf")
    for _ in range(3):
        out = subprocess.run([sys.executable, "-c", FIRST_SHARE_PROBE], capture_output=True, text=True, check=True)
        elapsed, heavy, path = out.stdout.split()
        best = min(best, float(elapsed))
        assert heavy == "-", f"the first split/combine pulled in {heavy}"
        assert path.endswith((".so", ".pyd"))
    assert best <= 0.05
