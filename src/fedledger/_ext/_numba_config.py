"""The one place where fedledger's Numba JIT options live.

``fastmath`` stays off: shares and masks must be bit-exact. ``cache=True`` keeps compiled
machine code on disk next to the module, so a process compiles a kernel once per install.
Kernels are compiled eagerly from explicit signatures the first time a wrapper needs them,
never at ``import fedledger``.
"""

from __future__ import annotations

from typing import Final

NJIT: Final = {"cache": True, "fastmath": False, "nogil": True, "error_model": "numpy"}
