"""Every difference between SQLite, PostgreSQL and MySQL/MariaDB lives here.

- upsert(): the native multi-row upsert (ON CONFLICT DO UPDATE / ON DUPLICATE KEY
  UPDATE), optionally guarded so an older snapshot never overwrites a newer one;
- insert_missing(): insert rows whose key is not there yet, leave the rest;
- is_retryable(): deadlocks, lock timeouts and serialization failures;
- run locks: PostgreSQL advisory lock, MySQL GET_LOCK, a lock file beside SQLite.
"""

from __future__ import annotations

import errno
import fcntl
import hashlib
import os
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from sqlalchemy import Connection, Engine, Table, case, text, types
from sqlalchemy.dialects import mysql, postgresql, sqlite
from sqlalchemy.exc import DBAPIError

from archiver.errors import RunLocked

# Strict mode (bad values are errors, not silent truncation) and UTC for every MySQL session.
MYSQL_SESSION = ("SET SESSION sql_mode = 'STRICT_ALL_TABLES,NO_ZERO_IN_DATE,NO_ZERO_DATE,"
                 "ERROR_FOR_DIVISION_BY_ZERO,NO_ENGINE_SUBSTITUTION', time_zone = '+00:00'")
MAX_PARAMS = 30_000  # below SQLite's 32,766 and PostgreSQL's 65,535 bind parameters
# A guard builds "may the new row replace the stored one" from (stored columns, new columns).
Guard = Callable[[Any, Any], Any]


def is_mysql(name: str) -> bool:
    return name in ("mysql", "mariadb")


def chunks(rows: Sequence[dict], width: int) -> Iterator[Sequence[dict]]:
    size = max(1, MAX_PARAMS // max(1, width))
    for start in range(0, len(rows), size):
        yield rows[start:start + size]


def upsert(conn: Connection, table: Table, rows: Sequence[dict], *, keys: Sequence[str],
           update: Sequence[str], guard: Guard | None = None) -> None:
    """Insert rows, updating `update` columns of rows whose key exists (when `guard` allows).

    All rows must have the same keys. Columns the guard reads must come last in
    `update`: MySQL applies assignments left to right, each seeing the ones before.
    """
    if not rows:
        return
    for part in chunks(rows, len(rows[0])):
        conn.execute(_upsert_statement(conn.dialect.name, table, keys, update, guard), list(part))


def _upsert_statement(dialect: str, table: Table, keys: Sequence[str], update: Sequence[str],
                      guard: Guard | None):
    if is_mysql(dialect):
        stmt = mysql.insert(table)
        new = stmt.inserted
        if not update:
            return stmt.on_duplicate_key_update([(keys[0], table.c[keys[0]])])
        if guard is None:
            return stmt.on_duplicate_key_update([(c, new[c]) for c in update])
        allowed = guard(table.c, new)
        return stmt.on_duplicate_key_update(
            [(c, case((allowed, new[c]), else_=table.c[c])) for c in update])
    stmt = (postgresql.insert(table) if dialect == "postgresql" else sqlite.insert(table))
    if not update:
        return stmt.on_conflict_do_nothing(index_elements=list(keys))
    new = stmt.excluded
    return stmt.on_conflict_do_update(
        index_elements=list(keys), set_={c: new[c] for c in update},
        where=guard(table.c, new) if guard is not None else None)


def insert_missing(conn: Connection, table: Table, rows: Sequence[dict], keys: Sequence[str]) -> None:
    """Insert rows whose key is new; existing rows are left exactly as they are."""
    upsert(conn, table, rows, keys=keys, update=())


def compare_type(ctx, inspected_column, metadata_column, inspected_type, metadata_type):
    """Alembic type comparison: MariaDB reflects JSON as LONGTEXT (an alias), so that is equal."""
    if isinstance(metadata_column.type.dialect_impl(ctx.dialect), types.JSON) and \
            isinstance(inspected_type, (types.Text, types.JSON)):
        return False
    return None  # Alembic's own comparison decides


# Deadlock / lock wait timeout / serialization failure, by SQLSTATE or MySQL error number.
RETRYABLE_PG = {"40001", "40P01", "55P03"}
RETRYABLE_MYSQL = {1205, 1213}


def is_retryable(exc: BaseException) -> bool:
    if not isinstance(exc, DBAPIError):
        return False
    orig = exc.orig
    state = getattr(orig, "sqlstate", None) or getattr(orig, "pgcode", None)
    if state in RETRYABLE_PG:
        return True
    args = getattr(orig, "args", ())
    if args and isinstance(args[0], int) and args[0] in RETRYABLE_MYSQL:
        return True
    return "database is locked" in str(orig)


# -- run locks ---------------------------------------------------------------------------------
def _lock_key(account: str) -> int:
    digest = hashlib.sha256(f"xplenty-archiver:{account}".encode()).digest()
    return int.from_bytes(digest[:8], "big", signed=True)


@contextmanager
def run_lock(engine: Engine, account: str, wait: float = 0.0, poll: float = 0.5,
             sleep: Callable[[float], None] = time.sleep) -> Iterator[None]:
    """Hold the per-account run lock for the duration, or raise RunLocked.

    The lock lives on its own connection (PostgreSQL/MySQL) or in a file beside the
    SQLite database, so it is released when the process dies, however it dies.
    """
    name = engine.dialect.name
    if name == "sqlite":
        holder = _FileLock(_sqlite_lock_path(engine, account))
    else:
        holder = _ServerLock(engine, account)
    deadline = time.monotonic() + max(0.0, wait)
    while not holder.try_acquire():
        if time.monotonic() >= deadline:
            holder.close()
            raise RunLocked(f"another archiver run for account {account!r} holds the lock on this "
                            "database; try again later or pass --wait SECONDS")
        sleep(poll)
    try:
        yield
    finally:
        holder.release()


def _sqlite_lock_path(engine: Engine, account: str) -> Path:
    database = engine.url.database
    safe = "".join(ch if ch.isalnum() or ch in "-_." else "_" for ch in account)
    if not database or database == ":memory:":
        return Path(os.environ.get("TMPDIR", "/tmp")) / f"xplenty-archiver-memory-{os.getpid()}-{safe}.lock"
    return Path(f"{database}.{safe}.lock")


class _FileLock:
    def __init__(self, path: Path):
        self.path = path
        self.fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)

    def try_acquire(self) -> bool:
        try:
            fcntl.flock(self.fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as exc:
            if exc.errno in (errno.EAGAIN, errno.EACCES, errno.EWOULDBLOCK):
                return False
            raise
        os.ftruncate(self.fd, 0)
        os.write(self.fd, f"{os.getpid()}\n".encode())
        return True

    def release(self) -> None:
        fcntl.flock(self.fd, fcntl.LOCK_UN)
        self.close()

    def close(self) -> None:
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1


class _ServerLock:
    def __init__(self, engine: Engine, account: str):
        self.conn = engine.connect()
        self.mysql = is_mysql(engine.dialect.name)
        self.key = _lock_key(account)
        self.name = f"xplenty-archiver:{hashlib.sha256(account.encode()).hexdigest()[:40]}"

    def try_acquire(self) -> bool:
        if self.mysql:
            got = self.conn.execute(text("SELECT GET_LOCK(:n, 0)"), {"n": self.name}).scalar()
        else:
            got = self.conn.execute(text("SELECT pg_try_advisory_lock(:k)"), {"k": self.key}).scalar()
        self.conn.commit()
        return bool(got)

    def release(self) -> None:
        try:
            if self.mysql:
                self.conn.execute(text("SELECT RELEASE_LOCK(:n)"), {"n": self.name})
            else:
                self.conn.execute(text("SELECT pg_advisory_unlock(:k)"), {"k": self.key})
            self.conn.commit()
        finally:
            self.close()

    def close(self) -> None:
        self.conn.close()
