"""Off-chain objects (models, aggregates, exports): content-addressed by CIDv1, sealed at rest
under a key per object, erasable by crypto-shredding with the erasure recorded on the ledger.

See :class:`BlobStore` and docs/security-blobstore.md.
"""

from __future__ import annotations

from fedledger.blobstore.backend import Backend, LocalBackend, PendingObject
from fedledger.blobstore.cid import cid_of, cid_of_digest, digest_of_cid
from fedledger.blobstore.store import ERASE_KIND, BlobReader, BlobStat, BlobStore

__all__ = [
    "ERASE_KIND",
    "Backend",
    "BlobReader",
    "BlobStat",
    "BlobStore",
    "LocalBackend",
    "PendingObject",
    "cid_of",
    "cid_of_digest",
    "digest_of_cid",
]
