"""Declares the native extensions only; all metadata lives in pyproject.toml.

Every ``src/fedledger/_ext/*.pyx`` becomes one extension module that links OpenSSL 3's
libcrypto and GMP, with OpenMP when the compiler supports it. A module that needs more
libraries names them in ``EXTRA_LIBRARIES`` (``_signing`` and ``_masking`` link libsodium).
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
from glob import glob
from pathlib import Path

from Cython.Build import cythonize
from setuptools import Extension, setup


def _openmp_flags() -> list[str]:
    """Return ['-fopenmp'] if a trivial OpenMP program compiles and links, else []."""
    if os.environ.get("FEDLEDGER_DISABLE_OPENMP") == "1":
        return []
    cc = os.environ.get("CC", "cc")
    if shutil.which(cc.split()[0]) is None:
        return []
    src = "#include <omp.h>\nint main(void){return omp_get_max_threads() > 0 ? 0 : 1;}\n"
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp, "omp_check.c")
        path.write_text(src)
        result = subprocess.run(
            [*cc.split(), "-fopenmp", str(path), "-o", str(Path(tmp, "omp_check"))],
            capture_output=True,
        )
    return ["-fopenmp"] if result.returncode == 0 else []


OPENMP = _openmp_flags()
# Bit-identical float results on every machine (no FMA contraction), and loops with float
# comparisons that GCC can vectorize (no trapping math: results are unchanged).
FLOAT_FLAGS = ["-ffp-contract=off", "-fno-trapping-math"]
if not OPENMP:
    print("fedledger: OpenMP not available; kernels will run on one thread", file=sys.stderr)

#: Libraries linked by one kernel module only, on top of libcrypto and GMP.
EXTRA_LIBRARIES: dict[str, list[str]] = {"_signing": ["sodium"], "_masking": ["sodium"]}

extensions = [
    Extension(
        name="fedledger._ext." + Path(pyx).stem,
        sources=[pyx],
        libraries=["crypto", "gmp", *EXTRA_LIBRARIES.get(Path(pyx).stem, [])],
        define_macros=[
            ("OPENSSL_SUPPRESS_DEPRECATED", "1"),
            ("FEDLEDGER_OPENMP", "1" if OPENMP else "0"),
        ],
        extra_compile_args=["-O3", *FLOAT_FLAGS, *OPENMP],
        extra_link_args=OPENMP,
    )
    for pyx in sorted(glob("src/fedledger/_ext/*.pyx"))
]

setup(
    ext_modules=cythonize(
        extensions,
        language_level="3",
        compiler_directives={
            "boundscheck": False,
            "wraparound": False,
            "cdivision": True,
            "initializedcheck": False,
            "embedsignature": True,
        },
    ),
)
