"""The crypto layer: thin typed wrappers that validate input and call the native kernels.

Submodules are imported on first use (``from fedledger.crypto import merkle``) so that
``import fedledger`` stays cheap.
"""

from __future__ import annotations

__all__ = ["agreement", "masking", "merkle", "paillier", "seal", "shamir", "signing"]
