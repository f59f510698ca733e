"""Where committed blocks live. One small interface, :class:`LedgerStore`; SQLite is the default.

A block and all its transactions are written in one SQLite transaction, so a crash at any
instant leaves either the whole block or none of it. Durability levels:

| durability | SQLite settings | survives |
| --- | --- | --- |
| ``"full"`` (default) | WAL, ``synchronous=FULL``: the WAL is fsynced at every commit | process crash and power loss |
| ``"normal"`` | WAL, ``synchronous=NORMAL``: fsync at checkpoints only | process crash; power loss may drop the last blocks, never corrupt |
| ``"off"`` | WAL, ``synchronous=OFF`` | process crash only on a healthy OS; for benchmarks and tests |
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Final, Protocol, cast

from fedledger.errors import InvalidArgument, TamperedLedger

__all__ = ["DURABILITY", "LedgerStore", "SQLiteStore", "StoredBlock", "StoredTx"]

DURABILITY: Final = {"full": "FULL", "normal": "NORMAL", "off": "OFF"}
SCHEMA_VERSION: Final = 1

_SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value BLOB NOT NULL);
CREATE TABLE IF NOT EXISTS blocks (
    height INTEGER PRIMARY KEY,
    hash BLOB NOT NULL,
    header BLOB NOT NULL,
    certificate BLOB NOT NULL
);
CREATE TABLE IF NOT EXISTS txs (
    seq INTEGER PRIMARY KEY,      -- index in the global RFC 9162 log
    height INTEGER NOT NULL,
    id BLOB NOT NULL,
    kind TEXT NOT NULL,
    sender BLOB NOT NULL,
    nonce INTEGER NOT NULL,
    data BLOB NOT NULL            -- Transaction.to_bytes(), the log leaf
);
CREATE UNIQUE INDEX IF NOT EXISTS txs_by_id ON txs(id);
CREATE INDEX IF NOT EXISTS txs_by_kind ON txs(kind, seq);
CREATE INDEX IF NOT EXISTS txs_by_sender ON txs(sender, seq);
"""


@dataclass(frozen=True)
class StoredBlock:
    height: int
    hash: bytes
    header: bytes
    certificate: bytes


@dataclass(frozen=True)
class StoredTx:
    seq: int
    height: int
    id: bytes
    kind: str
    sender: bytes
    nonce: int
    data: bytes


class LedgerStore(Protocol):
    """What the ledger needs from storage. Implementations must make append_block atomic."""

    def get_meta(self, key: str) -> bytes | None: ...
    def put_meta(self, key: str, value: bytes) -> None: ...
    def append_block(self, block: StoredBlock, txs: Sequence[StoredTx]) -> None: ...
    def height(self) -> int: ...
    def block(self, height: int) -> StoredBlock | None: ...
    def blocks(self) -> Iterator[StoredBlock]: ...
    def block_txs(self, height: int) -> list[StoredTx]: ...
    def all_txs(self) -> Iterator[StoredTx]: ...
    def tx_by_id(self, tx_id: bytes) -> StoredTx | None: ...
    def txs(self, kind: str | None, sender: bytes | None) -> Iterator[StoredTx]: ...
    def integrity_problems(self) -> list[str]: ...
    def close(self) -> None: ...


class SQLiteStore:
    """The embedded default: one SQLite file in WAL mode (or ``":memory:"`` for tests)."""

    def __init__(self, path: str | Path, durability: str = "full") -> None:
        if durability not in DURABILITY:
            raise InvalidArgument("durability", f"must be one of {sorted(DURABILITY)}, got {durability!r}")
        self.path = str(path)
        try:
            self._db = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False)
            if self.path != ":memory:":
                mode = self._db.execute("PRAGMA journal_mode=WAL").fetchone()[0]
                if mode.lower() != "wal":
                    raise TamperedLedger(0, f"cannot switch {self.path} to WAL mode (got {mode})")
            self._db.execute(f"PRAGMA synchronous={DURABILITY[durability]}")
            self._db.executescript(_SCHEMA)
        except sqlite3.DatabaseError as exc:
            raise TamperedLedger(0, f"{self.path} is not a readable ledger database: {exc}") from None

    def _query(self, sql: str, args: tuple[object, ...] = ()) -> list[tuple[object, ...]]:
        try:
            return self._db.execute(sql, args).fetchall()
        except sqlite3.DatabaseError as exc:
            raise TamperedLedger(0, f"storage error reading the ledger: {exc}") from None

    def get_meta(self, key: str) -> bytes | None:
        rows = self._query("SELECT value FROM meta WHERE key = ?", (key,))
        return bytes(cast(bytes, rows[0][0])) if rows else None

    def put_meta(self, key: str, value: bytes) -> None:
        with self._transaction():
            self._db.execute("INSERT OR REPLACE INTO meta(key, value) VALUES (?, ?)", (key, value))

    def _transaction(self) -> _Tx:
        return _Tx(self._db)

    def append_block(self, block: StoredBlock, txs: Sequence[StoredTx]) -> None:
        with self._transaction():
            self._db.execute(
                "INSERT INTO blocks(height, hash, header, certificate) VALUES (?, ?, ?, ?)",
                (block.height, block.hash, block.header, block.certificate),
            )
            self._db.executemany(
                "INSERT INTO txs(seq, height, id, kind, sender, nonce, data) VALUES (?, ?, ?, ?, ?, ?, ?)",
                [(t.seq, t.height, t.id, t.kind, t.sender, t.nonce, t.data) for t in txs],
            )

    def height(self) -> int:
        rows = self._query("SELECT MAX(height) FROM blocks")
        return int(cast(int, rows[0][0] or 0))

    def block(self, height: int) -> StoredBlock | None:
        rows = self._query("SELECT height, hash, header, certificate FROM blocks WHERE height = ?", (height,))
        return StoredBlock(*rows[0]) if rows else None  # type: ignore[arg-type]

    def blocks(self) -> Iterator[StoredBlock]:
        for row in self._query("SELECT height, hash, header, certificate FROM blocks ORDER BY height"):
            yield StoredBlock(*row)  # type: ignore[arg-type]

    def block_txs(self, height: int) -> list[StoredTx]:
        rows = self._query(
            "SELECT seq, height, id, kind, sender, nonce, data FROM txs WHERE height = ? ORDER BY seq", (height,)
        )
        return [StoredTx(*r) for r in rows]  # type: ignore[arg-type]

    def all_txs(self) -> Iterator[StoredTx]:
        # A table scan in rowid order: it reads the table itself, never an index.
        for row in self._query("SELECT seq, height, id, kind, sender, nonce, data FROM txs ORDER BY seq"):
            yield StoredTx(*row)  # type: ignore[arg-type]

    def tx_by_id(self, tx_id: bytes) -> StoredTx | None:
        rows = self._query("SELECT seq, height, id, kind, sender, nonce, data FROM txs WHERE id = ?", (tx_id,))
        return StoredTx(*rows[0]) if rows else None  # type: ignore[arg-type]

    def txs(self, kind: str | None, sender: bytes | None) -> Iterator[StoredTx]:
        where: list[str] = []
        args: list[object] = []
        if kind is not None:
            where.append("kind = ?")
            args.append(kind)
        if sender is not None:
            where.append("sender = ?")
            args.append(sender)
        clause = f" WHERE {' AND '.join(where)}" if where else ""
        for row in self._query(f"SELECT seq, height, id, kind, sender, nonce, data FROM txs{clause} ORDER BY seq",
                               tuple(args)):
            yield StoredTx(*row)  # type: ignore[arg-type]

    def integrity_problems(self) -> list[str]:
        """SQLite's own full check of pages, records and indexes; [] when sound."""
        rows = self._query("PRAGMA integrity_check")
        problems = [str(r[0]) for r in rows]
        return [] if problems == ["ok"] else problems

    def close(self) -> None:
        self._db.close()


class _Tx:
    """BEGIN IMMEDIATE ... COMMIT, rolled back on any error."""

    def __init__(self, db: sqlite3.Connection) -> None:
        self._db = db

    def __enter__(self) -> None:
        self._db.execute("BEGIN IMMEDIATE")

    def __exit__(self, exc_type: object, exc: object, tb: object) -> None:
        if exc_type is None:
            self._db.execute("COMMIT")
        else:
            self._db.execute("ROLLBACK")
