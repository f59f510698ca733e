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

import functools
import os
import sqlite3
import time
import urllib.parse
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Final, Protocol, cast

from fedledger.errors import (
    FedLedgerError,
    InvalidArgument,
    LedgerLocked,
    NotALedger,
    NotFound,
    TamperedLedger,
    UnsupportedVersion,
)

try:
    import fcntl
except ImportError:  # pragma: no cover - not POSIX: no writer lock (documented)
    fcntl = None  # type: ignore[assignment]

__all__ = ["DURABILITY", "LedgerStore", "SQLiteStore", "StoredBlock", "StoredSnapshot", "StoredTx", "system_clock_ms"]

DURABILITY: Final = {"full": "FULL", "normal": "NORMAL", "off": "OFF"}
SCHEMA_VERSION: Final = 3
#: The transaction table of schema 1 (before outcomes), as SQLite records it: a file with it
#: was written by an older fedledger and is refused with UnsupportedVersion.
_V1_TXS_SQL: Final = (
    "CREATE TABLE txs (\n    seq INTEGER PRIMARY KEY,      -- index in the global RFC 9162 log\n"
    "    height INTEGER NOT NULL,\n    id BLOB NOT NULL,\n    kind TEXT NOT NULL,\n"
    "    sender BLOB NOT NULL,\n    nonce INTEGER NOT NULL,\n"
    "    data BLOB NOT NULL            -- Transaction.to_bytes(), the log leaf\n)"
)

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
    data BLOB NOT NULL,           -- Transaction.to_bytes(), the log leaf
    outcome BLOB NOT NULL         -- Outcome.to_bytes(): accepted or denied, why, what it returned
);
CREATE UNIQUE INDEX IF NOT EXISTS txs_by_id ON txs(id);
CREATE INDEX IF NOT EXISTS txs_by_kind ON txs(kind, seq);
CREATE INDEX IF NOT EXISTS txs_by_sender ON txs(sender, seq);
CREATE TABLE IF NOT EXISTS snapshots (
    height INTEGER PRIMARY KEY,   -- the block whose header certifies the state root of the entries
    block_hash BLOB NOT NULL,
    state BLOB NOT NULL,          -- CBOR [[key, value], ...]: LedgerState.entries() after that block
    leaf_hashes BLOB NOT NULL,    -- the global log's leaf hashes up to that block, 32 bytes each
    outcome_hashes BLOB NOT NULL  -- the outcomes' leaf hashes up to that block, 32 bytes each
);
"""
_SCHEMA_NAMES: Final = frozenset({"meta", "blocks", "txs", "txs_by_id", "txs_by_kind", "txs_by_sender", "snapshots"})
#: What schema 3 added to schema 2: a schema-2 file is read as one without snapshots (and a
#: writable open adds the empty table).
_V3_TABLES: Final = frozenset({"snapshots"})
#: The only keys of the meta table.
META_KEYS: Final = frozenset({"genesis"})


@functools.cache
def _expected_schema() -> dict[str, tuple[object, ...]]:
    """What ``sqlite_master`` says of the schema, as SQLite itself records it: each entry's
    type, name, table and SQL text, so a trigger or view under an expected name is caught."""
    db = sqlite3.connect(":memory:")
    try:
        db.executescript(_SCHEMA)
        rows = db.execute("SELECT type, name, tbl_name, sql FROM sqlite_master WHERE name NOT LIKE 'sqlite_%'")
        return {row[1]: tuple(row) for row in rows.fetchall()}
    finally:
        db.close()


def system_clock_ms() -> int:
    """The system clock in milliseconds since the epoch: the default clock of a ledger."""
    return time.time_ns() // 1_000_000


def _lock_for_writing(path: str) -> int | None:
    """An exclusive ``flock`` on ``PATH-lock``, held until the store closes.

    The lock is taken on a file of its own, never on the database: closing any descriptor of
    the database would drop the POSIX locks SQLite holds on it in this process (a failed
    second open in the same process would do exactly that). The ``-lock`` file is left in
    place when the store closes, like SQLite's ``-shm``; deleting it could let two writers
    lock two different files.
    """
    if fcntl is None:
        return None
    lock_path = f"{path}-lock"
    if not os.path.isdir(os.path.dirname(os.path.abspath(path))):
        raise NotFound(f"cannot create a ledger at {path}: its directory does not exist")
    if os.path.isdir(path):
        raise InvalidArgument("path", f"{path} is a directory, not a ledger file")
    try:
        fd = os.open(lock_path, os.O_RDWR | os.O_CREAT, 0o644)
    except OSError as exc:
        raise InvalidArgument("path", f"cannot create the writer's lock {lock_path}: {exc.strerror}") from None
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        os.close(fd)
        raise LedgerLocked(
            f"{path} is open for writing in another ledger (this or another process); "
            "open it with read_only=True to read it"
        ) from None
    return fd


@dataclass(frozen=True)
class StoredBlock:
    height: int
    hash: bytes
    header: bytes
    certificate: bytes


@dataclass(frozen=True)
class StoredSnapshot:
    """A state snapshot as stored: checked against the certified header at ``height`` when read."""

    height: int
    block_hash: bytes
    state: bytes
    leaf_hashes: bytes
    outcome_hashes: bytes


@dataclass(frozen=True)
class StoredTx:
    seq: int
    height: int
    id: bytes
    kind: str
    sender: bytes
    nonce: int
    data: bytes
    outcome: bytes


class LedgerStore(Protocol):
    """What the ledger needs from storage. Implementations must make append_block atomic."""

    def get_meta(self, key: str) -> bytes | None: ...
    def put_meta(self, key: str, value: bytes) -> None: ...
    def append_block(
        self, block: StoredBlock, txs: Sequence[StoredTx], snapshot: StoredSnapshot | None = None
    ) -> None: ...
    def put_snapshot(self, snapshot: StoredSnapshot) -> None: ...
    def latest_snapshot(self) -> StoredSnapshot | None: ...
    def snapshots(self) -> Iterator[StoredSnapshot]: ...
    def height(self) -> int: ...
    def block(self, height: int) -> StoredBlock | None: ...
    def blocks(self, start: int = 1) -> Iterator[StoredBlock]: ...
    def block_txs(self, height: int) -> list[StoredTx]: ...
    def txs_between(self, start: int, end: int) -> list[StoredTx]: ...
    def all_txs(self) -> Iterator[StoredTx]: ...
    def tx_by_id(self, tx_id: bytes) -> StoredTx | None: ...
    def txs(self, kind: str | None, sender: bytes | None, below: int | None = None) -> Iterator[StoredTx]: ...
    def count(self, table: str) -> int: ...
    def meta_keys(self) -> list[str]: ...
    def first_tx_outside(self, log_size: int, height: int) -> StoredTx | None: ...
    def integrity_problems(self) -> list[str]: ...
    def close(self) -> None: ...


class SQLiteStore:
    """The embedded default: one SQLite file in WAL mode (or ``":memory:"`` for tests).

    A writable store holds an exclusive advisory lock (``flock``) on the file for as long as it
    is open, so a second writer gets :class:`LedgerLocked` at open instead of racing the first.
    ``read_only=True`` opens the file with SQLite's ``mode=ro`` (never ``immutable=1``, which
    would ignore the WAL): it takes no lock, never creates or repairs a table and never writes
    the database; SQLite may create its empty ``-wal``/``-shm`` companions if they are absent.
    """

    def __init__(self, path: str | Path, durability: str = "full", *, read_only: bool = False) -> None:
        if durability not in DURABILITY:
            raise InvalidArgument("durability", f"must be one of {sorted(DURABILITY)}, got {durability!r}")
        self.path = str(path)
        self.read_only = read_only
        self._lock_fd: int | None = None
        self._has_snapshots = True
        memory = self.path == ":memory:"
        if read_only and memory:
            raise InvalidArgument("read_only", "an in-memory ledger cannot be opened read-only")
        if read_only and not Path(self.path).is_file():
            raise NotFound(f"no ledger file at {self.path}")
        if not read_only and not memory:
            self._lock_fd = _lock_for_writing(self.path)
        try:
            if read_only:
                uri = f"file:{urllib.parse.quote(os.path.abspath(self.path))}?mode=ro"
                self._db = sqlite3.connect(uri, uri=True, isolation_level=None, check_same_thread=False)
            else:
                self._db = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False)
            self._db.execute("PRAGMA query_only=ON" if read_only else f"PRAGMA synchronous={DURABILITY[durability]}")
            names = self._schema_names()
            if not names and not read_only:
                if not memory:
                    mode = self._db.execute("PRAGMA journal_mode=WAL").fetchone()[0]
                    if mode.lower() != "wal":
                        raise TamperedLedger(0, f"cannot switch {self.path} to WAL mode (got {mode})")
                self._db.executescript(_SCHEMA)
            else:
                self._check_schema(names)
                if not read_only and not memory:
                    mode = self._db.execute("PRAGMA journal_mode").fetchone()[0]
                    if mode.lower() != "wal":
                        raise TamperedLedger(0, f"{self.path} is not in WAL mode (journal mode {mode})")
        except sqlite3.DatabaseError as exc:
            self.close()
            raise NotALedger(f"{self.path} is not a ledger database: {exc}") from None
        except FedLedgerError:
            self.close()
            raise

    def _schema_names(self) -> set[str]:
        rows = self._db.execute("SELECT name FROM sqlite_master WHERE name NOT LIKE 'sqlite_%'").fetchall()
        return {str(r[0]) for r in rows}

    def _check_schema(self, names: set[str]) -> None:
        """Refuse a file that is not a ledger, and one whose tables or indexes were changed."""
        if "meta" not in names:
            what = "an empty database" if not names else f"a database with tables {sorted(names)}"
            raise NotALedger(f"{self.path} is not a ledger: {what}, no genesis record")
        query = "SELECT type, name, tbl_name, sql FROM sqlite_master WHERE name NOT LIKE 'sqlite_%'"
        found = {row[1]: tuple(row) for row in self._db.execute(query).fetchall()}
        if found.get("txs", (None,) * 4)[3] == _V1_TXS_SQL:
            raise UnsupportedVersion(
                f"{self.path} was written by an older fedledger (ledger schema 1: no call outcomes, no "
                f"state root); this version reads schema {SCHEMA_VERSION}. Export what you need with the "
                "older version and start a new ledger"
            )
        if names == _SCHEMA_NAMES - _V3_TABLES and all(
            found.get(n) == w for n, w in _expected_schema().items() if n not in _V3_TABLES
        ):
            # Schema 2: the same tables, no snapshots yet.
            if self.read_only:
                self._has_snapshots = False
            else:
                self._db.executescript(_SCHEMA)
                names = self._schema_names()
        missing, extra = sorted(_SCHEMA_NAMES - names), sorted(names - _SCHEMA_NAMES)
        if not self._has_snapshots:
            missing = sorted(set(missing) - _V3_TABLES)
        if missing:
            raise TamperedLedger(0, f"storage: {', '.join(missing)} missing from the database")
        if extra:
            raise TamperedLedger(0, f"storage: unexpected {', '.join(extra)} in the database")
        found = {row[1]: tuple(row) for row in self._db.execute(query).fetchall()}
        for name, want in _expected_schema().items():
            if name in _V3_TABLES and not self._has_snapshots:
                continue
            if found.get(name) != want:
                raise TamperedLedger(0, f"storage: {name} is not the {want[0]} the ledger created")

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

    def append_block(self, block: StoredBlock, txs: Sequence[StoredTx], snapshot: StoredSnapshot | None = None) -> None:
        """Store a block, its transactions and (optionally) a snapshot after it, all or nothing."""
        try:
            with self._transaction():
                self._db.execute(
                    "INSERT INTO blocks(height, hash, header, certificate) VALUES (?, ?, ?, ?)",
                    (block.height, block.hash, block.header, block.certificate),
                )
                self._db.executemany(
                    "INSERT INTO txs(seq, height, id, kind, sender, nonce, data, outcome) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                    [(t.seq, t.height, t.id, t.kind, t.sender, t.nonce, t.data, t.outcome) for t in txs],
                )
                if snapshot is not None:
                    self._write_snapshot(snapshot)
        except sqlite3.IntegrityError as exc:
            raise TamperedLedger(
                block.height,
                f"block {block.height} clashes with stored rows ({exc}); "
                "was the file written by something other than this ledger?",
            ) from None

    def _write_snapshot(self, snapshot: StoredSnapshot) -> None:
        """Replace the stored snapshot (only the latest is kept), inside the caller's transaction."""
        self._db.execute("DELETE FROM snapshots")
        self._db.execute(
            "INSERT INTO snapshots(height, block_hash, state, leaf_hashes, outcome_hashes) VALUES (?, ?, ?, ?, ?)",
            (snapshot.height, snapshot.block_hash, snapshot.state, snapshot.leaf_hashes, snapshot.outcome_hashes),
        )

    def put_snapshot(self, snapshot: StoredSnapshot) -> None:
        """Store ``snapshot`` in place of the previous one, in one transaction."""
        with self._transaction():
            self._write_snapshot(snapshot)

    def latest_snapshot(self) -> StoredSnapshot | None:
        if not self._has_snapshots:
            return None
        rows = self._query(
            "SELECT height, block_hash, state, leaf_hashes, outcome_hashes FROM snapshots ORDER BY height DESC LIMIT 1"
        )
        return StoredSnapshot(*rows[0]) if rows else None  # type: ignore[arg-type]

    def snapshots(self) -> Iterator[StoredSnapshot]:
        if not self._has_snapshots:
            return
        for row in self._query(
            "SELECT height, block_hash, state, leaf_hashes, outcome_hashes FROM snapshots ORDER BY height"
        ):
            yield StoredSnapshot(*row)  # type: ignore[arg-type]

    def count(self, table: str) -> int:
        """Rows in ``table`` (``blocks``, ``txs``, ``meta`` or ``snapshots``)."""
        if table not in ("blocks", "txs", "meta", "snapshots"):
            raise InvalidArgument("table", f"not a ledger table: {table!r}")
        if table == "snapshots" and not self._has_snapshots:
            return 0
        return int(cast(int, self._query(f"SELECT COUNT(*) FROM {table}")[0][0]))

    def meta_keys(self) -> list[str]:
        return [str(r[0]) for r in self._query("SELECT key FROM meta ORDER BY key")]

    def first_tx_outside(self, log_size: int, height: int) -> StoredTx | None:
        """The first transaction row that no stored block covers (seq beyond the log, or height beyond the chain)."""
        rows = self._query(
            "SELECT seq, height, id, kind, sender, nonce, data, outcome FROM txs "
            "WHERE seq >= ? OR seq < 0 OR height > ? OR height < 1 ORDER BY seq LIMIT 1",
            (log_size, height),
        )
        return StoredTx(*rows[0]) if rows else None  # type: ignore[arg-type]

    def height(self) -> int:
        rows = self._query("SELECT MAX(height) FROM blocks")
        return int(cast(int, rows[0][0] or 0))

    def block(self, height: int) -> StoredBlock | None:
        rows = self._query("SELECT height, hash, header, certificate FROM blocks WHERE height = ?", (height,))
        return StoredBlock(*rows[0]) if rows else None  # type: ignore[arg-type]

    def blocks(self, start: int = 1) -> Iterator[StoredBlock]:
        """The stored blocks from height ``start`` on, in order."""
        if start <= 1:  # every row, so that a row below height 1 is seen (and refused) too
            rows = self._query("SELECT height, hash, header, certificate FROM blocks ORDER BY height")
        else:
            rows = self._query(
                "SELECT height, hash, header, certificate FROM blocks WHERE height >= ? ORDER BY height", (start,)
            )
        for row in rows:
            yield StoredBlock(*row)  # type: ignore[arg-type]

    def block_txs(self, height: int) -> list[StoredTx]:
        rows = self._query(
            "SELECT seq, height, id, kind, sender, nonce, data, outcome FROM txs WHERE height = ? ORDER BY seq",
            (height,),
        )
        return [StoredTx(*r) for r in rows]  # type: ignore[arg-type]

    def txs_between(self, start: int, end: int) -> list[StoredTx]:
        """The rows with log index ``start <= seq < end``, in order (a range of the primary key)."""
        end = min(end, (1 << 63) - 1)
        rows = self._query(
            "SELECT seq, height, id, kind, sender, nonce, data, outcome FROM txs WHERE seq >= ? AND seq < ? ORDER BY seq",
            (start, end),
        )
        return [StoredTx(*r) for r in rows]  # type: ignore[arg-type]

    def all_txs(self) -> Iterator[StoredTx]:
        # A table scan in rowid order: it reads the table itself, never an index.
        for row in self._query("SELECT seq, height, id, kind, sender, nonce, data, outcome FROM txs ORDER BY seq"):
            yield StoredTx(*row)  # type: ignore[arg-type]

    def tx_by_id(self, tx_id: bytes) -> StoredTx | None:
        rows = self._query("SELECT seq, height, id, kind, sender, nonce, data, outcome FROM txs WHERE id = ?", (tx_id,))
        return StoredTx(*rows[0]) if rows else None  # type: ignore[arg-type]

    def txs(self, kind: str | None, sender: bytes | None, below: int | None = None) -> Iterator[StoredTx]:
        where: list[str] = []
        args: list[object] = []
        if below is not None:
            where.append("seq < ?")
            args.append(below)
        if kind is not None:
            where.append("kind = ?")
            args.append(kind)
        if sender is not None:
            where.append("sender = ?")
            args.append(sender)
        clause = f" WHERE {' AND '.join(where)}" if where else ""
        for row in self._query(
            f"SELECT seq, height, id, kind, sender, nonce, data, outcome FROM txs{clause} ORDER BY seq", tuple(args)
        ):
            yield StoredTx(*row)  # type: ignore[arg-type]

    def integrity_problems(self) -> list[str]:
        """SQLite's own full check of pages, records and indexes; [] when sound."""
        rows = self._query("PRAGMA integrity_check")
        problems = [str(r[0]) for r in rows]
        return [] if problems == ["ok"] else problems

    def close(self) -> None:
        db = getattr(self, "_db", None)
        if db is not None:
            db.close()
        if self._lock_fd is not None:
            os.close(self._lock_fd)
            self._lock_fd = None


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
