"""Every difference between SQLite, PostgreSQL and MySQL/MariaDB lives here.

- engine_options() / prepare_engine(): driver settings, MySQL strict UTC sessions,
  SQLite pragmas, BEGIN IMMEDIATE and private (0600) files;
- upsert(): the native multi-row upsert (ON CONFLICT DO UPDATE / ON DUPLICATE KEY
  UPDATE), optionally guarded so an older snapshot never overwrites a newer one;
- insert_missing(): insert rows whose key is not there yet, leave the rest;
- is_retryable(): deadlocks, lock timeouts and serialization failures;
- run locks: PostgreSQL advisory lock, MySQL GET_LOCK, a lock file beside SQLite.
"""

from __future__ import annotations

import collections
import errno
import fcntl
import hashlib
import logging
import operator
import os
import re
import time
from collections.abc import Callable, Collection, Iterator, Sequence
from contextlib import contextmanager
from datetime import datetime
from pathlib import Path
from typing import Any

from sqlalchemy import (BigInteger, Connection, Date, Engine, Table, any_, bindparam, case, cast, event, func,
                        false, literal, literal_column, select, text, true, tuple_, types, union_all)
from sqlalchemy import column as sa_column
from sqlalchemy import table as sa_table
from sqlalchemy.dialects import mysql, postgresql, sqlite
from sqlalchemy.engine import URL
from sqlalchemy.exc import DBAPIError

from archiver.errors import RunLocked
from archiver.jsonio import serialize_json
from archiver.sqltypes import UTCDateTime, utc_result
from archiver.utc import naive_utc, to_utc

log = logging.getLogger(__name__)

# Strict mode (bad values are errors, not silent truncation) and UTC for every MySQL session.
# group_concat_max_len: MySQL's 1,024 bytes would cut a day's runtimes (joined_text); 1 GiB is
# the most a packet carries
MYSQL_SESSION = ("SET SESSION sql_mode = 'STRICT_ALL_TABLES,NO_ZERO_IN_DATE,NO_ZERO_DATE,"
                 "ERROR_FOR_DIVISION_BY_ZERO,NO_ENGINE_SUBSTITUTION', time_zone = '+00:00', "
                 "group_concat_max_len = 1073741824")
# A guard builds "may the new row replace the stored one" from (stored columns, new columns).
Guard = Callable[[Any, Any], Any]


def is_mysql(name: str) -> bool:
    return name in ("mysql", "mariadb")


# -- engines ------------------------------------------------------------------------------------
SQLITE_BUSY_TIMEOUT = 30  # seconds a write waits for another writer's lock
# Prepared statements the sqlite3 module keeps per connection (its default: 128). Most of a
# write's statements are made for their batch (IN lists of its ids, the rollup recounts of its
# days and packages), so a cache of them held the largest, never used again: a first ingest of
# 100,000 jobs at 2,000 a transaction peaked at 176 MiB against 131 MiB for 10,000, at 16
# statements 154 against 129 MiB (bench/run.py's payloads and figure 6).
SQLITE_CACHED_STATEMENTS = 16


def engine_options(url: URL, create: bool, read_only: bool = False) -> tuple[URL, dict[str, Any]]:
    """The URL and create_engine() options for this backend; `create` lets SQLite make a
    new file, readable by its owner only; `read_only` (reports) opens SQLite files with
    mode=ro and PostgreSQL sessions with read-only transactions."""
    backend = url.get_backend_name()
    if is_mysql(backend):
        if "charset" not in url.query:
            url = url.update_query_dict({"charset": "utf8mb4"})
        return url, {"connect_args": {"init_command": MYSQL_SESSION}}
    if backend == "postgresql":
        # Sessions in UTC, as MySQL's (MYSQL_SESSION): the archive's only zone, and psycopg then
        # hands out timestamps already in datetime.timezone.utc instead of the server's zone.
        options = [url.query["options"]] if isinstance(url.query.get("options"), str) else []
        options.append("-c timezone=UTC")
        if read_only:
            options.append("-c default_transaction_read_only=on")
        return url, {"connect_args": {"keepalives": 1, "keepalives_idle": 60, "options": " ".join(options)}}
    if backend == "sqlite" and read_only and url.database and url.database != ":memory:" \
            and not url.database.startswith("file:"):
        return url, {"creator": _sqlite_read_only(url.database)}
    if backend == "sqlite" and create:
        _create_private_file(url.database)
        return url, {"connect_args": {"timeout": SQLITE_BUSY_TIMEOUT, "cached_statements": SQLITE_CACHED_STATEMENTS}}
    if backend == "sqlite":
        return url, {"connect_args": {"cached_statements": SQLITE_CACHED_STATEMENTS}}
    return url, {}


def _sqlite_read_only(path: str) -> Callable[[], Any]:
    """Connections that can only read the file (a report on a read-only archive, or while a
    sync holds the write lock: WAL readers never wait for the writer)."""
    import sqlite3
    import urllib.parse

    uri = "file:" + urllib.parse.quote(os.path.abspath(path)) + "?mode=ro"
    return lambda: sqlite3.connect(uri, uri=True, timeout=SQLITE_BUSY_TIMEOUT, check_same_thread=False,
                                   cached_statements=SQLITE_CACHED_STATEMENTS)


def prepare_engine(engine: Engine, read_only: bool = False) -> None:
    if engine.dialect.name == "sqlite":
        event.listen(engine, "connect", _sqlite_connect_read_only if read_only else _sqlite_connect)
        event.listen(engine, "begin", _sqlite_begin_read if read_only else _sqlite_begin)
        event.listen(engine, "invalidate", _sqlite_release)


def _sqlite_release(dbapi_conn, _record, _exc) -> None:
    """Roll back a connection SQLAlchemy drops (a SIGTERM or Ctrl-C raised inside a query): its
    close leaves it open while a statement it was reading is still referenced (by the
    traceback being unwound), and an open write transaction would keep the file's write lock,
    so the run's own last write (its sync_runs row) waited out the busy timeout."""
    try:
        dbapi_conn.rollback()
    except Exception:   # already closed or not in a transaction: nothing held
        pass


def _create_private_file(path: str | None) -> None:
    """A new archive file is readable by its owner only (mode 0600)."""
    if path and path != ":memory:" and not path.startswith("file:") and not os.path.exists(path):
        try:
            os.close(os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o600))
        except OSError:  # exists already, or cannot be made: SQLite's own open says which
            pass


SQLITE_CHECKPOINT_PAGES = 10_000
SQLITE_CACHE_KIB = 16 * 1024


def _sqlite_connect(dbapi_conn, _record) -> None:
    dbapi_conn.isolation_level = None  # we issue BEGIN ourselves (see _sqlite_begin)
    cur = dbapi_conn.cursor()
    cur.execute("PRAGMA foreign_keys=ON")
    cur.execute("PRAGMA journal_mode=WAL")
    cur.execute("PRAGMA synchronous=NORMAL")
    # A checkpoint every 10,000 pages (~40 MB of log) instead of 1,000: each commit of a batch
    # rewrites the log pages of every index it touched, and the checkpoints were a quarter of a
    # first ingest. The log file is cut back to 64 MB after a checkpoint that resets it.
    cur.execute(f"PRAGMA wal_autocheckpoint={SQLITE_CHECKPOINT_PAGES}")
    cur.execute(f"PRAGMA journal_size_limit={64 * 1024 * 1024}")
    # A page cache of 16 MiB instead of 2: a batch dirties a few thousand pages of the jobs
    # indexes (package, cluster, runtime, chain: a page each of most of them). With 2 MiB they
    # were spilled to the log before the commit and read back for the next batch: a first ingest
    # of 50,000 jobs read 0.56 million pages and wrote 0.68 million, 0.09 and 0.39 million with
    # 16 MiB; one of 100,000 jobs spent 1.1-1.8 s less CPU time (about 22.4 s instead of 23.9 s).
    cur.execute(f"PRAGMA cache_size=-{SQLITE_CACHE_KIB}")
    cur.close()


def _sqlite_connect_read_only(dbapi_conn, _record) -> None:
    dbapi_conn.isolation_level = None  # we issue BEGIN ourselves (see _sqlite_begin_read)
    cur = dbapi_conn.cursor()
    cur.execute("PRAGMA query_only=ON")
    cur.close()


def _sqlite_begin_read(conn: Connection) -> None:
    """A deferred BEGIN: a consistent snapshot that takes no write lock."""
    conn.exec_driver_sql("BEGIN")


def is_busy(exc: BaseException) -> bool:
    """SQLite's 'database is locked' after the whole busy timeout: another writer holds the file."""
    return "database is locked" in str(getattr(exc, "orig", None) or exc)


def _sqlite_begin(conn: Connection) -> None:
    """BEGIN IMMEDIATE: take the write lock up front (waiting up to the busy timeout), so a
    reader such as a BI tool never makes a write fail halfway with 'database is locked'."""
    conn.exec_driver_sql("BEGIN IMMEDIATE")


def is_missing_file(engine: Engine) -> bool:
    """A SQLite archive file that does not exist (server databases always 'exist')."""
    path = engine.url.database
    return engine.dialect.name == "sqlite" and bool(path) and path != ":memory:" and not os.path.exists(path)


def locks_rows(engine: Engine) -> bool:
    """SELECT .. FOR UPDATE means something (SQLite locks the whole file at BEGIN IMMEDIATE)."""
    return engine.dialect.name != "sqlite"


def upsert(conn: Connection, table: Table, rows: Sequence[dict], *, keys: Sequence[str],
           update: Sequence[str], guard: Guard | None = None, expect_new: bool = False) -> bool:
    """Insert rows, updating `update` columns of rows whose key exists (when `guard` allows).

    All rows must have the same keys. Columns the guard reads must come last in
    `update`: MySQL applies assignments left to right, each seeing the ones before.
    On PostgreSQL a larger batch is COPied into a staging table and upserted from there
    by one INSERT .. SELECT .. ON CONFLICT, in key order; rows whose keys are `expect_new`
    (absent when read in this transaction) are COPied straight into the table: a surprise
    duplicate fails the batch, which the caller then writes again in halves (upserts).
    True: the rows were inserted by a plain insert, which fails on any key already there (so
    this transaction made each of them).
    """
    if not rows:
        return False
    name = conn.dialect.name
    if name == "postgresql" and len(rows) >= COPY_THRESHOLD and expect_new:
        _pg_copy_into(conn, table, f'"{table.name}"', sorted(rows, key=operator.itemgetter(*keys)))
        return True
    if name == "postgresql" and len(rows) >= COPY_THRESHOLD:
        stage = _pg_stage(conn, table, rows)
        shape = ("upsert-from", stage.name, tuple(keys), tuple(update), guard)
        sql = _compile(conn, table, (), shape,
                       lambda: _upsert_statement(name, table, keys, update, guard, source=stage))[0]
        conn.exec_driver_sql(sql)
        return False
    shape = ("upsert", tuple(keys), tuple(update), guard)
    execute_many(conn, table, rows, shape, lambda: _upsert_statement(name, table, keys, update, guard))
    return False


def insert_rows(conn: Connection, table: Table, rows: Sequence[dict]) -> None:
    if not rows:
        return
    if conn.dialect.name == "postgresql" and len(rows) >= COPY_THRESHOLD:
        _pg_copy_into(conn, table, f'"{table.name}"', rows)
    else:
        execute_many(conn, table, rows, ("insert",), table.insert)


COPY_THRESHOLD = 50
_COMPILED: dict[tuple, tuple] = {}


def _compile(conn: Connection, table: Table, columns: tuple[str, ...], shape: tuple,
             build: Callable[[], Any]) -> tuple:
    """(sql, the parameters' columns in order, their column converters, positional or named),
    compiled once per statement shape."""
    key = (conn.dialect.name, table.name, columns, shape)
    compiled = _COMPILED.get(key)
    if compiled is None:
        statement = build().compile(dialect=conn.dialect, column_keys=list(columns))
        order = list(statement.positiontup) if statement.positional else list(columns)
        converters = [_column_converter(conn.dialect.name, table.c[c].type) for c in order]
        compiled = _COMPILED[key] = (statement.string, order, converters, statement.positional)
    return compiled


def execute_many(conn: Connection, table: Table, rows: Sequence[dict], shape: tuple,
                 build: Callable[[], Any]) -> None:
    """executemany straight to the driver: each statement shape is compiled once, and values
    are converted here column by column rather than by SQLAlchemy row by row (much faster)."""
    sql, order, converters, positional = _compile(conn, table, tuple(rows[0]), shape, build)
    params = _converted_rows(rows, order, converters)
    if not positional:  # named parameters (psycopg, PyMySQL)
        params = [dict(zip(order, values)) for values in params]
    conn.exec_driver_sql(sql, params)


ColumnConverter = Callable[[Sequence[Any]], list]


def _converted_rows(rows: Sequence[dict], order: Sequence[str],
                    converters: Sequence[ColumnConverter | None]) -> list[tuple]:
    """The rows' values in `order` as tuples, each column converted whole by its converter (None:
    as it is). Rows are read by one itemgetter and turned into columns and back by zip: no Python
    runs per row."""
    if len(order) == 1:
        tuples = [(row[order[0]],) for row in rows]
    else:
        tuples = list(map(operator.itemgetter(*order), rows))
    changed = [(i, convert) for i, convert in enumerate(converters) if convert is not None]
    if not changed or not tuples:
        return tuples
    columns = list(zip(*tuples))
    for i, convert in changed:
        columns[i] = convert(columns[i])
    return list(zip(*columns))


def _binder(conn: Connection) -> Callable[[Any], Any]:
    """A value as the driver takes it: a datetime converted as UTCDateTime stores it, anything
    else as it is (SQL sent straight to the driver, not through SQLAlchemy's bind processing)."""
    convert = _converter(conn.dialect.name, UTCDateTime())
    if convert is None:
        return lambda value: value
    return lambda value: convert(value) if isinstance(value, datetime) else value


def execute_positional(conn: Connection, sql: str, values: Sequence[Any]):
    """Run SQL written with `?` placeholders straight on the driver. For statements whose text
    varies from call to call (one term per schedule chain of a batch), compiling them through
    SQLAlchemy cost several times what the database spends running them. Datetimes are
    converted as UTCDateTime stores them; other values go to the driver as they are."""
    bind = _binder(conn)
    params = tuple(bind(v) for v in values)
    if conn.dialect.paramstyle != "qmark":   # psycopg and PyMySQL: %s
        sql = sql.replace("%", "%%").replace("?", "%s")
    return conn.exec_driver_sql(sql, params)


def repeated_select(conn: Connection, statement) -> Callable[[Sequence[dict[str, Any]]], list]:
    """A SELECT compiled once, run as one UNION ALL of copies of its text, each copy with its own
    values of some of its bind parameters (flows/per_key.py: one copy a key). SQLAlchemy compiles
    a UNION of 100 subqueries term by term, which cost the health board more than the database
    spent running them. Rows are named tuples of the statement's columns, each value processed
    by its column type as SQLAlchemy would (aware UTC datetimes)."""
    compiled = statement.compile(dialect=conn.dialect, compile_kwargs={"render_postcompile": True})
    fixed = compiled.construct_params()
    bind = _binder(conn)
    columns = list(statement.selected_columns)
    make = collections.namedtuple("Row", [c.key for c in columns])
    processors = [_result_processor(conn.dialect, c.type) for c in columns]

    def value(values: dict[str, Any], name: str) -> Any:
        return bind(values[name] if name in values else fixed[name])

    def run(copies: Sequence[dict[str, Any]]) -> list:
        if compiled.positional:   # SQLite's ? and PyMySQL's %s
            sql = " UNION ALL ".join([compiled.string] * len(copies))
            params: Any = tuple(value(v, name) for v in copies for name in compiled.positiontup)
        else:                     # psycopg's %(name)s: each copy's names get its number
            sql = " UNION ALL ".join(_NAMED.sub(rf"%(\1_c{i})s", compiled.string) for i in range(len(copies)))
            params = {f"{name}_c{i}": value(v, name) for i, v in enumerate(copies) for name in fixed}
        return [make._make(row) for row in _processed(conn.exec_driver_sql(sql, params).fetchall(), processors)]
    return run


def _processed(rows: Sequence, processors: Sequence[Callable[[Any], Any] | None]) -> list[tuple]:
    """Driver rows as tuples, each value converted by its column's result processor (None: as it is)."""
    changed = [(i, f) for i, f in enumerate(processors) if f is not None]
    if not changed:
        return [tuple(row) for row in rows]
    found = []
    for row in rows:
        values = list(row)
        for i, f in changed:
            values[i] = f(values[i])
        found.append(tuple(values))
    return found


def _result_processor(dialect, column_type) -> Callable[[Any], Any] | None:
    """How a driver value of this column type becomes what SQLAlchemy would return."""
    if isinstance(column_type, UTCDateTime) and dialect.name == "sqlite":
        return utc_result   # SQLite's text by one fromisoformat, not SQLAlchemy's parser and then the type's
    return column_type.dialect_impl(dialect).result_processor(dialect, None)


_NAMED = re.compile(r"(?<!%)%\(([^)]+)\)s")
IDS = "__ids__"   # where select_in's compiled text takes its `key IN (ids)` term
_SELECT_IN: dict[tuple, tuple] = {}


def select_in(conn: Connection, columns: Sequence, key, ids: Sequence[int], *, order: bool = False,
              lock: bool = False) -> list[tuple]:
    """SELECT `columns` (of one table) WHERE `key` IN `ids` [ORDER BY key] [FOR UPDATE], straight to
    the driver: compiled by SQLAlchemy once per shape, the ids bound as in_ids binds them (one array
    on PostgreSQL, a placeholder each elsewhere). Rows are tuples of the columns' values, each
    processed by its column type as SQLAlchemy's execute would (aware UTC datetimes, SQLite's dates).
    Per batch, building and compiling the SELECT cost more than running it."""
    if not ids:
        return []
    name = conn.dialect.name
    shape = (name, tuple(columns), key, order, lock)
    compiled = _SELECT_IN.get(shape)
    if compiled is None:
        query = select(*columns).where(literal_column(IDS))
        if order:
            query = query.order_by(key)
        if lock:
            query = query.with_for_update()
        sql = query.compile(dialect=conn.dialect).string
        processors = tuple(_result_processor(conn.dialect, c.type) for c in columns)
        compiled = _SELECT_IN[shape] = (sql, f"{key.table.name}.{key.name}", processors)
    sql, where, processors = compiled
    if name == "postgresql":
        sql, params = sql.replace(IDS, f"{where} = ANY (%(ids)s::BIGINT[])"), {"ids": list(ids)}
    else:
        mark = "?" if conn.dialect.paramstyle == "qmark" else "%s"
        sql, params = sql.replace(IDS, f"{where} IN ({', '.join([mark] * len(ids))})"), tuple(ids)
    return _processed(conn.exec_driver_sql(sql, params).fetchall(), processors)


def joined_text(conn: Connection, value):
    """The aggregate of a group's non-NULL `value`s as one comma-separated text, in no particular
    order (NULL: none): string_agg on PostgreSQL, group_concat elsewhere (MySQL's sessions allow
    it 1 GiB: MYSQL_SESSION)."""
    if conn.dialect.name == "postgresql":
        return func.string_agg(cast(value, types.Text), literal(","))
    return func.group_concat(value)


def _pg_stage(conn: Connection, table: Table, rows: Sequence[dict]) -> Table:
    """A session-local staging table shaped like `table`, emptied and filled by COPY."""
    stage_name = f"_stage_{table.name}"
    conn.exec_driver_sql(f'CREATE TEMP TABLE IF NOT EXISTS "{stage_name}" (LIKE "{table.name}" '
                         "INCLUDING DEFAULTS) ON COMMIT DELETE ROWS")
    conn.exec_driver_sql(f'TRUNCATE "{stage_name}"')
    _pg_copy_into(conn, table, f'"{stage_name}"', rows)
    return sa_table(stage_name, *[sa_column(c) for c in rows[0]])


def _pg_copy_into(conn: Connection, table: Table, target: str, rows: Sequence[dict]) -> None:
    """COPY rows (shaped like `table`) into `target` inside the connection's transaction."""
    columns = list(rows[0])
    values = _converted_rows(rows, columns, [_column_converter("postgresql", table.c[c].type) for c in columns])
    names = ", ".join(f'"{c}"' for c in columns)
    cursor = conn.connection.dbapi_connection.cursor()
    try:
        with cursor.copy(f"COPY {target} ({names}) FROM STDIN") as copy:
            write = copy.write_row
            for row in values:
                write(row)
    finally:
        cursor.close()


def _converter(dialect_name: str, column_type) -> Callable[[Any], Any] | None:
    """How a Python value becomes a driver value for this column on this database."""
    if isinstance(column_type, UTCDateTime):
        if dialect_name == "postgresql":
            return None
        if dialect_name == "sqlite":  # SQLAlchemy's SQLite storage format, so reads and comparisons agree
            return _sqlite_datetime
        return lambda v: None if v is None else naive_utc(v)
    if isinstance(column_type, types.Date) and dialect_name == "sqlite":
        return lambda v: None if v is None else v.isoformat()
    if isinstance(column_type, types.JSON):
        return lambda v: None if v is None else serialize_json(v)
    return None


def _column_converter(dialect_name: str, column_type) -> ColumnConverter | None:
    """_converter for a whole column of values."""
    convert = _converter(dialect_name, column_type)
    if convert is None:
        return None
    return lambda values: list(map(convert, values))


_SQLITE_TEXTS: dict[datetime, str] = {}   # recent moments -> their stored text (a batch repeats many)
# Moments kept: a batch of 500 jobs brings about 3,000 (six a job, with its outputs'), which its
# later statements repeat (ended_at, an output's updated_at, a status change's api_updated_at).
# Emptied every 4,096, the cache lost a batch's moments before their repeats about once a batch:
# 816,000 texts made in a first ingest of 100,000 jobs, 600,000 when kept for several batches.
SQLITE_TEXTS_KEPT = 32_768


def _sqlite_datetime(moment):
    if moment is None:
        return None
    text = _SQLITE_TEXTS.get(moment)   # equal instants (any zone) have equal texts
    if text is None:
        if len(_SQLITE_TEXTS) >= SQLITE_TEXTS_KEPT:
            _SQLITE_TEXTS.clear()
        text = _SQLITE_TEXTS[moment] = _sqlite_text(to_utc(moment))
    return text


def _sqlite_text(moment: datetime) -> str:
    """A UTC moment as SQLAlchemy stores it on SQLite: isoformat(" ", "microseconds") without its
    "+00:00", formatted field by field (making the zone's text and cutting it off again cost a
    third more: 1.1 us a moment, 0.8 this way)."""
    return "%04d-%02d-%02d %02d:%02d:%02d.%06d" % (moment.year, moment.month, moment.day, moment.hour,
                                                   moment.minute, moment.second, moment.microsecond)


def _upsert_statement(dialect: str, table: Table, keys: Sequence[str], update: Sequence[str],
                      guard: Guard | None, source=None):
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
    if source is not None:  # INSERT .. SELECT from a staging table, in key order
        names = list(source.c.keys())
        stmt = stmt.from_select(names, select(*source.c).order_by(*[source.c[k] for k in keys]))
    if not update:
        return stmt.on_conflict_do_nothing(index_elements=list(keys))
    new = stmt.excluded
    return stmt.on_conflict_do_update(
        index_elements=list(keys), set_={c: new[c] for c in update},
        where=guard(table.c, new) if guard is not None else None)


def distinct_keys(conn: Connection, columns: Sequence) -> list[tuple]:
    """The distinct values of `columns`, a leading prefix of an index, NULLs included. SQLite
    skips through the index for a DISTINCT (3 ms over a million jobs); PostgreSQL 15 reads all
    of it (0.2 s), so there each key is found from the one before by an index descent (10 ms)."""
    if conn.dialect.name != "postgresql":
        return [tuple(row) for row in conn.execute(select(*columns).distinct())]
    walked = [tuple(row) for row in conn.execute(_walk(columns))]
    seen = set(walked)
    return walked + [key for key in _keys_with_nulls(conn, columns, walked) if key not in seen]


def has_lateral(conn: Connection) -> bool:
    """Whether a subquery in FROM may refer to the tables before it (LATERAL): PostgreSQL here
    (MariaDB has none; SQLite neither)."""
    return conn.dialect.name == "postgresql"


def with_status(query, status, statuses: Sequence[str]):
    """`query` for rows whose `status` is one of `statuses`, as one index range a status
    (UNION ALL). With only sqlite_stat1, SQLite's planner takes each status to hold the average
    share of the rows, so an IN of the few open statuses looked like more rows than the table
    and it scanned a million jobs for a few dozen (0.27 s; 0.1 ms this way)."""
    if not statuses:
        return query.where(false())
    return union_all(*[query.where(status == value) for value in sorted(set(statuses))])


def statuses_except(conn: Connection, status, excluded: Collection[str]) -> list[str]:
    """The stored values of `status` (an indexed column) other than `excluded`, read from its
    index: a status the API adds later is not excluded."""
    return [value for (value,) in distinct_keys(conn, [status]) if value is not None and value not in excluded]


def _walk(columns: Sequence):
    """Each key the next larger than the one before, ROW(...) > ROW(...): every key without a
    NULL (a comparison with a NULL is no step)."""
    walk = select(*columns).order_by(*columns).limit(1).cte("walk", recursive=True)
    step = select(*columns).where(tuple_(*columns) > tuple_(*walk.c)).order_by(*columns).limit(1).lateral("step")
    return select(walk.union_all(select(*step.c).select_from(walk).join(step, true())))


def _keys_with_nulls(conn: Connection, columns: Sequence, walked: list[tuple]) -> list[tuple]:
    """The keys whose first NULL is in each column, read from that NULL's index ranges under
    the prefixes the walk found."""
    found = []
    for depth, column in enumerate(columns):
        query = select(*columns).where(column.is_(None)).distinct()
        if depth:
            prefixes = sorted({key[:depth] for key in walked if None not in key[:depth]})
            query = query.where(tuple_(*columns[:depth]).in_(prefixes))
        found += [tuple(row) for row in conn.execute(query)]
    return found


def needs_statistics(engine: Engine) -> bool:
    """Whether the archive refreshes the planner's statistics itself after large loads
    (`refresh_statistics`): InnoDB recomputes its own after 10 % of a table changed."""
    return engine.dialect.name in ("postgresql", "sqlite")


def refresh_statistics(engine: Engine, tables: Sequence[str]) -> None:
    """ANALYZE tables that grew a lot. PostgreSQL: autovacuum lags a bulk load, and a planner
    without statistics scans a whole table to delete a batch's rows (74 ms instead of 0.2 ms
    at a million jobs). SQLite never gathers any by itself, and without them it read a
    package's history through the (status, created_at) index, every completed job of the
    archive newest first (25 ms a package at 20,000 jobs, 0.5 ms with them)."""
    if not needs_statistics(engine):
        return
    with engine.connect() as conn:
        if engine.dialect.name == "sqlite":
            for table in tables:
                conn.exec_driver_sql(f'ANALYZE "{table}"')
        else:
            conn.exec_driver_sql("ANALYZE " + ", ".join(f'"{t}"' for t in tables))
        conn.commit()


def estimated_rows(engine: Engine, table: str) -> int:
    """The planner's idea of a table's rows when last analyzed (0: never analyzed)."""
    with engine.connect() as conn:
        if engine.dialect.name == "postgresql":
            found = conn.execute(text("SELECT reltuples FROM pg_class WHERE oid = to_regclass(:t)"),
                                 {"t": table}).scalar()
        elif engine.dialect.name == "sqlite":
            if conn.execute(text("SELECT 1 FROM sqlite_master WHERE name = 'sqlite_stat1'")).first() is None:
                return 0
            stat = conn.execute(text("SELECT stat FROM sqlite_stat1 WHERE tbl = :t LIMIT 1"), {"t": table}).scalar()
            found = int(stat.split()[0]) if stat else 0
        else:
            return 0
    return max(0, int(found or 0))


def in_ids(conn: Connection, column, ids: Sequence[int]):
    """`column IN ids`: one array parameter on PostgreSQL (no 1,000-placeholder statements)."""
    if conn.dialect.name == "postgresql":
        return column == any_(bindparam("ids", list(ids), type_=postgresql.ARRAY(BigInteger)))
    return column.in_(list(ids))


def binds_arrays(conn: Connection) -> bool:
    """Whether one array parameter can stand for a list of integers (`= ANY(CAST(? AS BIGINT[]))`)."""
    return conn.dialect.name == "postgresql"


def insert_missing(conn: Connection, table: Table, rows: Sequence[dict], keys: Sequence[str]) -> None:
    """Insert rows whose key is new; existing rows are left exactly as they are."""
    upsert(conn, table, rows, keys=keys, update=())


ROLLUP_LOCKS, CHAIN_LOCKS = 17001, 17002   # advisory lock namespaces of the recounts (PostgreSQL)


def lock_groups(conn: Connection, namespace: int, keys) -> None:
    """Serialize two writers' recounts of the same groups (a rollup day, a schedule chain) until
    their transactions end, so the second recount sees the first one's jobs and rows. PostgreSQL:
    transaction advisory locks, taken in sorted order. MySQL/MariaDB's INSERT .. SELECT and
    DELETE already read with locks (the latest committed rows), and SQLite has one writer."""
    if conn.dialect.name != "postgresql":
        return
    hashes = sorted({int.from_bytes(hashlib.sha256(repr(k).encode()).digest()[:4], "big", signed=True) for k in keys})
    for start in range(0, len(hashes), 200):
        locks = ", ".join(f"pg_advisory_xact_lock({namespace}, {h})" for h in hashes[start:start + 200])
        conn.exec_driver_sql(f"SELECT {locks}")


def on_conflict_update(conn: Connection, key: str, columns: Sequence[str]) -> str:
    """The tail of an INSERT .. SELECT that updates the row whose `key` exists already (two
    accounts' runs writing the same job ids at once may both compute its scheduled run)."""
    if is_mysql(conn.dialect.name):
        return " ON DUPLICATE KEY UPDATE " + ", ".join(f"{c} = VALUES({c})" for c in columns)
    return f" ON CONFLICT ({key}) DO UPDATE SET " + ", ".join(f"{c} = excluded.{c}" for c in columns)


def utc_day(conn: Connection, moment):
    """The UTC calendar day of a timestamp column (PostgreSQL's ::date would be the session's zone)."""
    if conn.dialect.name == "postgresql":
        return cast(func.timezone(literal_column("'UTC'"), moment), Date)
    return func.date(moment, type_=Date)


def utc_day_sql(conn: Connection, column: str) -> str:
    """utc_day as SQL text, for the statements that go straight to the driver."""
    return f"CAST({column} AT TIME ZONE 'UTC' AS DATE)" if conn.dialect.name == "postgresql" else f"DATE({column})"


def report_session(conn: Connection) -> None:
    """A report's (or the health board's) read transaction: on PostgreSQL without JIT, whose
    compilation of a big aggregate costs more than it saves (1.3 s of a 1.5 s query on a million
    jobs), and without parallel workers: its reads are small by construction (rollups, partial
    days, index descents) and starting a worker cost more than it saved (20 ms of the 110 ms
    `report html --since 30d` spent in its sections, 40 ms of the board, at a million jobs)."""
    if conn.dialect.name == "postgresql":
        conn.exec_driver_sql("SET LOCAL jit = off")
        conn.exec_driver_sql("SET LOCAL max_parallel_workers_per_gather = 0")


# Partial indexes on an expression that only PostgreSQL and SQLite can have (migration 0008); the
# models cannot declare an index for some databases only, so the comparison leaves them out.
SOME_DATABASES_ONLY_INDEXES = frozenset({"ix_jobs_failed_at"})


# SQLite's VIRTUAL generated columns of jobs (migration 0009), which its views read so that their
# columns carry a declared type; computed on read, never written, not in the models.
SQLITE_GENERATED_COLUMNS = frozenset({"is_terminal", "attempt", "ended_or_created_at"})


def include_object(obj, name, type_, reflected, compare_to) -> bool:
    """Alembic's autogenerate filter: everything but SOME_DATABASES_ONLY_INDEXES and SQLite's
    generated columns."""
    if type_ == "column" and reflected and compare_to is None and name in SQLITE_GENERATED_COLUMNS:
        return obj.table.name != "jobs"
    return not (type_ == "index" and name in SOME_DATABASES_ONLY_INDEXES)


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


# Out of space: PostgreSQL disk_full; MySQL "table is full" / "disk full"; SQLITE_FULL; ENOSPC.
DISK_FULL_PG = {"53100"}
DISK_FULL_MYSQL = {1021, 1114}
DISK_FULL_TEXTS = ("database or disk is full", "no space left on device", "errno: 28")


def is_disk_full(exc: BaseException) -> bool:
    if isinstance(exc, OSError) and exc.errno == errno.ENOSPC:
        return True
    if not isinstance(exc, DBAPIError):
        return False
    orig = exc.orig
    if (getattr(orig, "sqlstate", None) or getattr(orig, "pgcode", None)) in DISK_FULL_PG:
        return True
    args = getattr(orig, "args", ())
    if args and isinstance(args[0], int) and args[0] in DISK_FULL_MYSQL:
        return True
    return any(t in str(orig).lower() for t in DISK_FULL_TEXTS)


# -- run locks ---------------------------------------------------------------------------------
# Every run holds its account's lock (exclusive) and the database's schema lock in shared mode;
# `archiver db upgrade|downgrade` holds the schema lock exclusively, so it never changes the
# schema under a run of any account, and no run starts while it does. PostgreSQL has shared
# advisory locks and flock has LOCK_SH; MySQL's GET_LOCK is exclusive only, so there the
# shared mode is one of SCHEMA_SLOTS named locks and the exclusive mode all of them.
SCHEMA_SLOTS = 16  # at most this many runs (of different accounts) at once on one MySQL database


def _lock_key(account: str) -> int:
    digest = hashlib.sha256(f"xplenty-archiver:{account}".encode()).digest()
    return int.from_bytes(digest[:8], "big", signed=True)


SCHEMA_KEY = int.from_bytes(hashlib.sha256(b"xplenty-archiver-schema").digest()[:8], "big", signed=True)


def server_lock_name(engine: Engine, account: str) -> str:
    """The MySQL/MariaDB lock name of an account's run lock. Lock names are server-wide
    (PostgreSQL's advisory keys are per database): the database's name is part of it, so
    two archives never block each other."""
    return f"xplenty-archiver:{hashlib.sha256(f'{engine.url.database}:{account}'.encode()).hexdigest()[:40]}"


def _schema_slot_names(engine: Engine) -> list[str]:
    base = hashlib.sha256(f"{engine.url.database}|schema".encode()).hexdigest()[:40]
    return [f"xplenty-archiver:{base}:{i}" for i in range(SCHEMA_SLOTS)]


class RunLockHolder:
    """What holds a lock: try_acquire() -> None when taken, else why not; check() -> None
    while the lock is still ours, else how it was lost; release() and close()."""

    def try_acquire(self) -> str | None:
        raise NotImplementedError

    def check(self) -> str | None:
        return None

    def release(self) -> None:
        raise NotImplementedError

    def close(self) -> None:
        raise NotImplementedError


BUSY_RUN = "another archiver run for account {account!r} holds the lock on this database"
BUSY_SCHEMA = "`archiver db upgrade|downgrade` is changing the schema of this database"
BUSY_ANY_RUN = "an archiver run holds the lock on this database (the schema cannot change under it)"


@contextmanager
def run_lock(engine: Engine, account: str, wait: float = 0.0, poll: float = 0.5,
             sleep: Callable[[float], None] = time.sleep,
             clock: Callable[[], float] = time.monotonic) -> Iterator[RunLockHolder]:
    """Hold the per-account run lock (and the schema lock, shared) for the duration, or raise
    RunLocked. Yields the holder: holder.check() says whether the lock is still ours.

    The lock lives on its own connection (PostgreSQL/MySQL) or in files beside the
    SQLite database, so it is released when the process dies, however it dies.
    """
    holder = _holder(engine, account)
    with _held(holder, f"account {account!r}", wait, poll, sleep, clock):
        yield holder


@contextmanager
def schema_lock(engine: Engine, wait: float = 0.0, poll: float = 0.5,
                sleep: Callable[[float], None] = time.sleep,
                clock: Callable[[], float] = time.monotonic) -> Iterator[RunLockHolder]:
    """Hold the schema lock exclusively (no run of any account holds its lock), or raise RunLocked."""
    holder = _holder(engine, None)
    with _held(holder, "a schema change", wait, poll, sleep, clock):
        yield holder


def _holder(engine: Engine, account: str | None) -> RunLockHolder:
    if engine.dialect.name == "sqlite":
        return _FileLocks(engine, account)
    return _ServerLock(engine, account)


@contextmanager
def _held(holder: RunLockHolder, what: str, wait: float, poll: float, sleep, clock) -> Iterator[None]:
    deadline = clock() + max(0.0, wait)
    waiting = False
    while (busy := holder.try_acquire()) is not None:
        if not waiting and wait > 0:
            log.info("%s: waiting up to %.0fs for the lock (%s)", what, wait, busy)
            waiting = True
        if clock() >= deadline:
            holder.close()
            raise RunLocked(f"{busy}; try again later or pass --wait SECONDS")
        sleep(poll)
    try:
        yield
    finally:
        holder.release()


def _sqlite_base(engine: Engine) -> str | None:
    """The archive file's real path (a symlink or another spelling reaches the same lock)."""
    database = engine.url.database
    if not database or database == ":memory:":
        return None
    return os.path.realpath(database)


def sqlite_lock_path(engine: Engine, account: str) -> Path:
    base = _sqlite_base(engine)
    safe = "".join(ch if ch.isalnum() or ch in "-_." else "_" for ch in account)
    if base is None:
        return Path(os.environ.get("TMPDIR", "/tmp")) / f"xplenty-archiver-memory-{os.getpid()}-{safe}.lock"
    return Path(f"{base}.{safe}.lock")


def sqlite_schema_lock_path(engine: Engine) -> Path:
    base = _sqlite_base(engine)
    if base is None:
        return Path(os.environ.get("TMPDIR", "/tmp")) / f"xplenty-archiver-memory-{os.getpid()}-schema.lock"
    return Path(f"{base}-schema.lock")  # "-": never the name of an account's lock file


class _FileLock:
    def __init__(self, path: Path, shared: bool = False):
        self.path = path
        self.shared = shared
        self.fd = -1
        self.fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)  # like the archive file

    def try_acquire(self) -> bool:
        try:
            fcntl.flock(self.fd, (fcntl.LOCK_SH if self.shared else fcntl.LOCK_EX) | fcntl.LOCK_NB)
        except OSError as exc:
            if exc.errno in (errno.EAGAIN, errno.EACCES, errno.EWOULDBLOCK):
                return False
            raise
        if not self.shared:
            os.ftruncate(self.fd, 0)
            os.write(self.fd, f"{os.getpid()}\n".encode())
        return True

    def check(self) -> str | None:
        """The locked file is still the one at the path (a deleted lock file lets a second run in)."""
        try:
            if os.stat(self.path).st_ino == os.fstat(self.fd).st_ino:
                return None
        except OSError:
            pass
        return f"the lock file {self.path} was removed or replaced"

    def release(self) -> None:
        try:
            fcntl.flock(self.fd, fcntl.LOCK_UN)
        finally:
            self.close()

    def close(self) -> None:
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1


class _FileLocks(RunLockHolder):
    """SQLite: the schema lock file (shared by runs, exclusive for schema changes) and the
    account's lock file, both keyed by the archive's real path."""

    def __init__(self, engine: Engine, account: str | None):
        self.account = account
        self.schema = _FileLock(sqlite_schema_lock_path(engine), shared=account is not None)
        try:
            self.run = _FileLock(sqlite_lock_path(engine, account)) if account is not None else None
        except BaseException:
            self.schema.close()
            raise

    def try_acquire(self) -> str | None:
        if not self.schema.try_acquire():
            return BUSY_SCHEMA if self.run is not None else BUSY_ANY_RUN
        if self.run is not None and not self.run.try_acquire():
            fcntl.flock(self.schema.fd, fcntl.LOCK_UN)
            return BUSY_RUN.format(account=self.account)
        return None

    def check(self) -> str | None:
        return (self.run or self.schema).check()

    def release(self) -> None:
        try:
            if self.run is not None:
                self.run.release()
        finally:
            self.schema.release()

    def close(self) -> None:
        if self.run is not None:
            self.run.close()
        self.schema.close()


class _ServerLock(RunLockHolder):
    """PostgreSQL advisory locks / MySQL named locks on a dedicated connection."""

    def __init__(self, engine: Engine, account: str | None):
        self.conn = engine.connect()
        self.mysql = is_mysql(engine.dialect.name)
        self.account = account
        self.key = _lock_key(account) if account is not None else None
        self.name = server_lock_name(engine, account) if account is not None else None
        self.slots = _schema_slot_names(engine)
        self.lost = False

    def _scalar(self, sql: str, **params):
        return self.conn.execute(text(sql), params).scalar()

    def try_acquire(self) -> str | None:
        try:
            busy = self._try_schema()
            if busy is None and self.account is not None:
                busy = self._try_account()
                if busy is not None:
                    self._release_all()
        finally:
            self.conn.commit()
        return busy

    def _try_schema(self) -> str | None:
        if self.account is None:  # exclusive: no run holds the shared lock
            if self.mysql:
                got = all(self._scalar("SELECT GET_LOCK(:n, 0)", n=n) for n in self.slots)
                if not got:
                    self._scalar("SELECT RELEASE_ALL_LOCKS()")
            else:
                got = self._scalar("SELECT pg_try_advisory_lock(:k)", k=SCHEMA_KEY)
            return None if got else BUSY_ANY_RUN
        if self.mysql:  # shared: any one free slot
            got = any(self._scalar("SELECT GET_LOCK(:n, 0)", n=n) for n in self.slots)
        else:
            got = self._scalar("SELECT pg_try_advisory_lock_shared(:k)", k=SCHEMA_KEY)
        return None if got else BUSY_SCHEMA

    def _try_account(self) -> str | None:
        if self.mysql:
            got = self._scalar("SELECT GET_LOCK(:n, 0)", n=self.name)
        else:
            got = self._scalar("SELECT pg_try_advisory_lock(:k)", k=self.key)
        return None if got else BUSY_RUN.format(account=self.account)

    def _release_all(self) -> None:
        if self.mysql:
            self._scalar("SELECT RELEASE_ALL_LOCKS()")
        else:
            self._scalar("SELECT pg_advisory_unlock_all()")

    def check(self) -> str | None:
        """None while the lock's session is alive and the account lock is still ours."""
        if self.lost:
            return "the lock's database session ended"
        try:
            if self.mysql:
                ours = self._scalar("SELECT IS_USED_LOCK(:n) = CONNECTION_ID()", n=self.name) \
                    if self.name is not None else self._scalar("SELECT 1")
            elif self.key is not None:
                hi, lo = (self.key >> 32) & 0xFFFFFFFF, self.key & 0xFFFFFFFF
                ours = self._scalar(
                    "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND pid = pg_backend_pid() "
                    "AND granted AND objsubid = 1 AND classid::bigint = :hi AND objid::bigint = :lo",
                    hi=hi, lo=lo)
            else:
                ours = self._scalar("SELECT 1")
            self.conn.commit()
        except DBAPIError as exc:
            self.lost = True
            return f"the lock's database session ended ({type(exc.orig).__name__ if exc.orig else 'gone'})"
        if not ours:
            self.lost = True
            return "the lock is no longer held by this run's session"
        return None

    def release(self) -> None:
        try:
            if not self.lost:
                self._release_all()
                self.conn.commit()
        except DBAPIError:  # the session is gone, and its locks with it
            pass
        finally:
            self.close()

    def close(self) -> None:
        try:
            self.conn.close()
        except DBAPIError:
            pass
