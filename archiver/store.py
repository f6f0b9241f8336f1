"""The archive: engine, schema revision check, and writing jobs whole, newer-wins.

Every SQL dialect difference is delegated to archiver.dialect. Counts (inserted,
updated, unchanged, stale) are decided here from the stored rows read first,
never from a driver's rowcount (MySQL reports an unchanged row like an insert).
"""

from __future__ import annotations

import dataclasses
import logging
import os
import random
import socket
import time
from collections.abc import Iterable, Sequence
from contextlib import contextmanager
from datetime import datetime, timezone
from importlib.resources import files
from typing import Any, Callable, Iterator, TypeVar

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import (Connection, Engine, and_, create_engine, delete, event, inspect, literal_column,
                        not_, or_, select, update, func)
from sqlalchemy.engine import make_url
from sqlalchemy.exc import ArgumentError, NoSuchModuleError, OperationalError

from archiver import __version__, dialect, models
from archiver.config import mask_url
from archiver.dialect import RawJSON, serialize_json
from archiver.errors import ArchiverError, ConfigError, SchemaOutOfDate
from archiver.parse import TERMINAL_STATUSES, Job

log = logging.getLogger(__name__)
T = TypeVar("T")
TRANSACTION_ATTEMPTS = 5

jobs_t = models.Job.__table__
outputs_t = models.JobOutput.__table__
variables_t = models.JobVariable.__table__
changes_t = models.JobStatusChange.__table__
runs_t = models.SyncRun.__table__
errors_t = models.SyncError.__table__
state_t = models.SyncState.__table__
packages_t = models.Package.__table__
clusters_t = models.Cluster.__table__
creators_t = models.Creator.__table__
summaries_t = models.JobLogSummary.__table__

# Columns that mean "what happened" go last: MySQL's guarded update reads them.
GUARD_COLUMNS = ("status", "updated_at")
# Inlined as SQL literals: bound IN lists cannot be used with executemany().
TERMINAL = [literal_column(f"'{s}'") for s in sorted(TERMINAL_STATUSES)]


def utcnow() -> datetime:
    return datetime.now(timezone.utc)


# -- engine and schema ----------------------------------------------------------------------------
def make_engine(url: str, create: bool = True) -> Engine:
    """An engine for the archive at `url`; `create` makes a new SQLite file (mode 0600)."""
    parsed = make_url(url)
    kwargs: dict[str, Any] = {"json_serializer": serialize_json, "pool_pre_ping": True}
    backend = parsed.get_backend_name()
    if dialect.is_mysql(backend):
        if "charset" not in parsed.query:
            parsed = parsed.update_query_dict({"charset": "utf8mb4"})
        kwargs["connect_args"] = {"init_command": dialect.MYSQL_SESSION}
    elif backend == "postgresql":
        kwargs["connect_args"] = {"keepalives": 1, "keepalives_idle": 60}
    elif backend == "sqlite" and create:
        _create_private_file(parsed.database)
        kwargs["connect_args"] = {"timeout": 30}
    engine = create_engine(parsed, **kwargs)
    if backend == "sqlite":
        event.listen(engine, "connect", _sqlite_connect)
        event.listen(engine, "begin", _sqlite_begin)
    return engine


def _create_private_file(path: str | None) -> None:
    """A new archive file is readable by its owner only (mode 0600)."""
    if path and path != ":memory:" and not path.startswith("file:") and not os.path.exists(path):
        try:
            os.close(os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o600))
        except FileExistsError:
            pass


def _sqlite_connect(dbapi_conn, _record) -> None:
    dbapi_conn.isolation_level = None  # we issue BEGIN ourselves (see _sqlite_begin)
    cur = dbapi_conn.cursor()
    cur.execute("PRAGMA foreign_keys=ON")
    cur.execute("PRAGMA journal_mode=WAL")
    cur.execute("PRAGMA synchronous=NORMAL")
    cur.close()


def _sqlite_begin(conn: Connection) -> None:
    """BEGIN IMMEDIATE: take the write lock up front (waiting up to the busy timeout), so a
    reader such as a BI tool never makes a write fail halfway with 'database is locked'."""
    conn.exec_driver_sql("BEGIN IMMEDIATE")


def alembic_config(url: str | None = None, connection: Connection | None = None) -> Config:
    cfg = Config()
    cfg.set_main_option("script_location", str(files("archiver.migrations")))
    cfg.attributes["database_url"] = url
    cfg.attributes["connection"] = connection
    return cfg


def head_revision() -> str:
    return ScriptDirectory.from_config(alembic_config()).get_current_head()


def current_revision(engine: Engine) -> str | None:
    with engine.connect() as conn:
        return MigrationContext.configure(conn).get_current_revision()


def upgrade(engine: Engine, revision: str = "head") -> None:
    with engine.begin() as conn:
        command.upgrade(alembic_config(connection=conn), revision)


def downgrade(engine: Engine, revision: str) -> None:
    with engine.begin() as conn:
        command.downgrade(alembic_config(connection=conn), revision)


@contextmanager
def database_errors(url: str) -> Iterator[None]:
    """A database that cannot be reached or named is a configuration error (exit 2) that
    says which database (password masked) and why, not a traceback."""
    where = mask_url(url)
    try:
        yield
    except NoSuchModuleError:
        raise ConfigError(f"no driver for {where}: pip install 'xplenty-archiver[postgres]' or "
                          "'xplenty-archiver[mysql]'") from None
    except ArgumentError:
        raise ConfigError(f"not a database URL: {where}") from None
    except OperationalError as exc:
        reason = str(exc.orig if exc.orig is not None else exc).strip().splitlines()[0][:200]
        raise ConfigError(f"cannot open the archive at {where}: {reason}") from None


def migrate(url: str, action: str, revision: str = "head") -> str:
    """`archiver db upgrade|downgrade|current`: do it, and say where the database stands."""
    with database_errors(url):
        return _migrate(url, action, revision)


def _migrate(url: str, action: str, revision: str) -> str:
    engine = make_engine(url)
    try:
        if action == "upgrade":
            upgrade(engine, revision)
        elif action == "downgrade":
            downgrade(engine, revision)
        current = current_revision(engine)
    finally:
        engine.dispose()
    return f"{mask_url(url)}: revision {current or 'none (empty)'}; head {head_revision()}"


def ensure_schema(engine: Engine, create: bool = True) -> None:
    """Migrate an empty database (when `create`); refuse one at another revision than ours."""
    if not create and engine.dialect.name == "sqlite":
        path = engine.url.database
        if path and path != ":memory:" and not os.path.exists(path):
            raise SchemaOutOfDate(f"no archive at {mask_url(str(engine.url))}: run `archiver sync` first")
    current, head = current_revision(engine), head_revision()
    if current == head:
        return
    if current is None and not create:
        raise SchemaOutOfDate(f"{mask_url(str(engine.url))} holds no archive: run `archiver sync` or "
                              "`archiver db upgrade` first")
    if current is None:
        if inspect(engine).get_table_names():
            raise SchemaOutOfDate(f"{mask_url(str(engine.url))} has tables but no archiver schema "
                                  "revision; point --db at an empty database or an archive")
        log.info("empty database: migrating to %s", head)
        upgrade(engine)
        return
    script = ScriptDirectory.from_config(alembic_config())
    known = {rev.revision for rev in script.walk_revisions()}
    if current not in known:
        raise SchemaOutOfDate(f"the database schema is at revision {current}, newer than this "
                              "archiver knows; upgrade xplenty-archiver")
    raise SchemaOutOfDate(f"the database schema is at revision {current}, this archiver needs "
                          f"{head}: run `archiver db upgrade`")


# -- deciding what to write ----------------------------------------------------------------------
@dataclasses.dataclass(frozen=True, slots=True)
class Stored:
    updated_at: datetime | None
    status: str | None
    payload_hash: str | None


def decide(stored: Stored | None, job: Job) -> str:
    """What to do with a snapshot: 'insert', 'update', 'unchanged' or 'stale'.

    Newer wins; a null updated_at never replaces a stored one; at an equal
    updated_at, other changes (progress, runtime) apply, but a terminal job never
    goes back to a non-terminal status.
    """
    if stored is None:
        return "insert"
    if stored.payload_hash == job.payload_hash:
        return "unchanged"
    if stored.updated_at is None:
        return "update"
    if job.updated_at is None or job.updated_at < stored.updated_at:
        return "stale"
    if job.updated_at == stored.updated_at and stored.status in TERMINAL_STATUSES \
            and job.status not in TERMINAL_STATUSES:
        return "stale"
    return "update"


def newer_wins(old, new):
    """SQL twin of decide() for rows written concurrently by another run."""
    return or_(
        old.updated_at.is_(None),
        and_(new.updated_at.is_not(None), new.updated_at >= old.updated_at,
             not_(and_(new.updated_at == old.updated_at, old.status.in_(TERMINAL),
                       or_(new.status.is_(None), new.status.not_in(TERMINAL)))))
    )


def newest_per_id(jobs: Iterable[Job]) -> list[Job]:
    """One snapshot per job id (the newest), in id order."""
    best: dict[int, Job] = {}
    floor = datetime.min.replace(tzinfo=timezone.utc)
    for job in jobs:
        held = best.get(job.id)
        if held is None or (job.updated_at or floor) >= (held.updated_at or floor):
            best[job.id] = job
    return [best[i] for i in sorted(best)]


@dataclasses.dataclass
class BatchResult:
    inserted: list[int] = dataclasses.field(default_factory=list)
    updated: list[int] = dataclasses.field(default_factory=list)
    unchanged: list[int] = dataclasses.field(default_factory=list)
    stale: list[int] = dataclasses.field(default_factory=list)


# -- the archive -----------------------------------------------------------------------------------
class Archive:
    """An archive database: write batches of jobs whole, record runs and errors."""

    def __init__(self, engine: Engine, account: str | None = None):
        self.engine = engine
        self.account = account
        self.lock_rows = engine.dialect.name != "sqlite"

    @classmethod
    def open(cls, url: str, account: str | None = None, create: bool = True) -> "Archive":
        """Open an archive; an empty database is migrated first unless `create` is False."""
        with database_errors(url):
            engine = make_engine(url, create=create)
            try:
                ensure_schema(engine, create=create)
            except BaseException:
                engine.dispose()
                raise
        return cls(engine, account)

    def close(self) -> None:
        self.engine.dispose()

    @contextmanager
    def run_lock(self, wait: float = 0.0, enabled: bool = True) -> Iterator[None]:
        if not enabled:
            yield
            return
        with dialect.run_lock(self.engine, self.account or "-", wait=wait):
            yield

    # jobs
    def read_stored(self, conn: Connection, ids: Sequence[int]) -> dict[int, Stored]:
        found: dict[int, Stored] = {}
        for start in range(0, len(ids), 1000):
            part = ids[start:start + 1000]
            query = (select(jobs_t.c.id, jobs_t.c.updated_at, jobs_t.c.status, jobs_t.c.payload_hash)
                     .where(dialect.in_ids(conn, jobs_t.c.id, part)).order_by(jobs_t.c.id))
            if self.lock_rows:
                query = query.with_for_update()
            for row in conn.execute(query):
                found[row.id] = Stored(row.updated_at, row.status, row.payload_hash)
        return found

    def stored_hashes(self, ids: Sequence[int]) -> dict[int, str | None]:
        """The payload hash of each stored job among `ids` (a plain read, no locks)."""
        found: dict[int, str | None] = {}
        unique = sorted(set(ids))
        with self.engine.connect() as conn:
            for start in range(0, len(unique), 1000):
                query = select(jobs_t.c.id, jobs_t.c.payload_hash).where(
                    dialect.in_ids(conn, jobs_t.c.id, unique[start:start + 1000]))
                found.update((row.id, row.payload_hash) for row in conn.execute(query))
        return found

    def ids_with_log_summary(self, ids: Sequence[int]) -> set[int]:
        if not ids:
            return set()
        with self.engine.connect() as conn:
            query = select(summaries_t.c.job_id).where(dialect.in_ids(conn, summaries_t.c.job_id, list(ids)))
            return set(conn.execute(query).scalars())

    def plan(self, jobs: Sequence[Job]) -> BatchResult:
        """Dry run: what writing these jobs would do, without writing."""
        unique = newest_per_id(jobs)
        with self.engine.connect() as conn:
            stored = self.read_stored(conn, [j.id for j in unique])
        result = BatchResult()
        for job in unique:
            getattr(result, _bucket(decide(stored.get(job.id), job))).append(job.id)
        return result

    def transact(self, work: Callable[[Connection], T]) -> T:
        """Run `work` in one transaction, retried whole on a deadlock or lock timeout."""
        for attempt in range(TRANSACTION_ATTEMPTS):
            try:
                with self.engine.begin() as conn:
                    return work(conn)
            except Exception as exc:
                if not dialect.is_retryable(exc) or attempt == TRANSACTION_ATTEMPTS - 1:
                    raise
                log.warning("transaction conflict (%s); retrying it", describe_error(exc))
                time.sleep(random.uniform(0.01, 0.05) * (attempt + 1))
        raise AssertionError("unreachable")

    def write_jobs(self, jobs: Sequence[Job], run_id: int | None = None,
                   after: Callable[[Connection], None] | None = None) -> BatchResult:
        """Write a batch in one transaction; `after(conn)` (e.g. the bookmark) commits with it."""
        unique = newest_per_id(jobs)

        def work(conn: Connection) -> BatchResult:
            result = self._write(conn, unique, run_id)
            if after is not None:
                after(conn)
            return result

        return self.transact(work)

    def _write(self, conn: Connection, jobs: list[Job], run_id: int | None) -> BatchResult:
        now = utcnow()
        stored = self.read_stored(conn, [j.id for j in jobs])
        result = BatchResult()
        writes: list[Job] = []
        for job in jobs:
            action = decide(stored.get(job.id), job)
            getattr(result, _bucket(action)).append(job.id)
            if action in ("insert", "update"):
                writes.append(job)
        if not writes:
            return result
        self._upsert_dimensions(conn, writes, now)
        self._upsert_job_rows(conn, writes, now, fresh=set(result.inserted))
        if self.lock_rows and result.inserted:
            writes = self._drop_lost_races(conn, writes, result)
        self._replace_children(conn, writes)
        self._record_status_changes(conn, writes, stored, now, run_id)
        return result

    def _drop_lost_races(self, conn: Connection, writes: list[Job], result: BatchResult) -> list[Job]:
        """Jobs that were new when read may have been written meanwhile by another process
        (runs without the lock, or another account's). Where the guarded upsert kept that
        newer row, its outputs and variables must stay too: count ours as stale."""
        fresh = set(result.inserted)
        ours = {j.id: j.payload_hash for j in writes if j.id in fresh}
        now_stored = self.read_stored(conn, sorted(ours))
        lost = {i for i, h in ours.items() if now_stored.get(i) is None or now_stored[i].payload_hash != h}
        if not lost:
            return writes
        result.inserted = [i for i in result.inserted if i not in lost]
        result.stale.extend(sorted(lost))
        return [j for j in writes if j.id not in lost]

    def _upsert_job_rows(self, conn: Connection, jobs: list[Job], now: datetime, fresh: set[int]) -> None:
        """Rows grouped by the columns their payload carried (an absent key is not written)
        and by whether the job was new when read (new ones may be bulk-loaded)."""
        groups: dict[tuple[tuple[str, ...], bool], list[dict]] = {}
        for job in jobs:
            row = {"id": job.id, **job.columns, "payload": RawJSON(job.payload_text),
                   "payload_hash": job.payload_hash, "first_seen_at": now, "last_synced_at": now}
            if self.account:
                row["account_id"] = self.account
            groups.setdefault((tuple(row), job.id in fresh), []).append(row)
        for (columns, new), rows in groups.items():
            update_cols = [c for c in columns if c not in ("id", "first_seen_at") + GUARD_COLUMNS]
            update_cols += [c for c in GUARD_COLUMNS if c in columns]
            dialect.upsert(conn, jobs_t, rows, keys=("id",), update=update_cols, guard=newer_wins,
                           expect_new=new)

    def _replace_children(self, conn: Connection, jobs: list[Job]) -> None:
        """Outputs and variables replaced as sets. Jobs new when read are deleted from too:
        without the lock another writer may have inserted them (and their children) since."""
        with_outputs = [j for j in jobs if j.outputs is not None]
        with_vars = [j for j in jobs if j.variables is not None]
        with_summary = [j for j in jobs if j.log_summary is not None]
        self._delete_where_job(conn, outputs_t, [j.id for j in with_outputs])
        rows = sorted((as_row(o) for j in with_outputs for o in j.outputs), key=lambda r: r["id"])
        if rows:
            cols = [c for c in rows[0] if c != "id"]
            dialect.upsert(conn, outputs_t, rows, keys=("id",), update=cols, expect_new=True)
        self._delete_where_job(conn, variables_t, [j.id for j in with_vars])
        var_rows = [{"job_id": j.id, "name": n, "value": v} for j in with_vars for n, v in sorted(j.variables.items())]
        if var_rows:
            dialect.insert_rows(conn, variables_t, var_rows)
        summary_rows = [_summary_row(j) for j in with_summary]
        if summary_rows:
            dialect.upsert(conn, summaries_t, summary_rows, keys=("job_id",),
                           update=[c for c in summary_rows[0] if c != "job_id"])

    @staticmethod
    def _delete_where_job(conn: Connection, table, ids: list[int]) -> None:
        for start in range(0, len(ids), 1000):
            conn.execute(delete(table).where(dialect.in_ids(conn, table.c.job_id, ids[start:start + 1000])))

    def _upsert_dimensions(self, conn: Connection, jobs: list[Job], now: datetime) -> None:
        """Packages, clusters and creators: full rows from v2 objects, bare ids otherwise."""
        for table, attr, id_col in ((packages_t, "package", "package_id"), (clusters_t, "cluster", "cluster_id")):
            full = {getattr(j, attr).id: getattr(j, attr) for j in jobs if getattr(j, attr) is not None}
            bare = {j.columns.get(id_col) for j in jobs} - set(full) - {None}
            rows = [{**as_row(full[i]), "last_synced_at": now} for i in sorted(full)]
            if rows:
                cols = [c for c in rows[0] if c != "id" and c != "updated_at"] + ["updated_at"]
                dialect.upsert(conn, table, rows, keys=("id",), update=cols, guard=_dimension_newer)
            dialect.insert_missing(conn, table, [{"id": i} for i in sorted(bare)], keys=("id",))
        creators = {(j.creator.type, j.creator.id): j.creator for j in jobs if j.creator is not None}
        rows = [{**as_row(creators[k]), "last_synced_at": now} for k in sorted(creators)]
        if rows:
            dialect.upsert(conn, creators_t, rows, keys=("type", "id"),
                           update=["display_name", "url", "html_url", "last_synced_at"])

    @staticmethod
    def _record_status_changes(conn: Connection, jobs: list[Job], stored: dict[int, Stored],
                               now: datetime, run_id: int | None) -> None:
        rows = []
        for job in jobs:
            before = stored.get(job.id)
            from_status = before.status if before else None
            if "status" in job.columns and (before is None or from_status != job.status):
                rows.append({"job_id": job.id, "from_status": from_status, "to_status": job.status,
                             "observed_at": now, "api_updated_at": job.updated_at, "run_id": run_id})
        dialect.insert_rows(conn, changes_t, rows)

    # incremental bookmark and open jobs
    def read_mark(self, scope: str = "") -> datetime | None:
        with self.engine.connect() as conn:
            return conn.execute(select(state_t.c.high_water_mark).where(
                state_t.c.account_id == (self.account or ""), state_t.c.scope == scope)).scalar()

    def save_mark(self, conn: Connection, mark: datetime, scope: str = "", run_id: int | None = None) -> None:
        """Set the mark inside the caller's transaction, so it lands with the page it covers."""
        row = {"account_id": self.account or "", "scope": scope, "high_water_mark": mark,
               "last_run_id": run_id, "updated_at": utcnow()}
        dialect.upsert(conn, state_t, [row], keys=("account_id", "scope"),
                       update=["high_water_mark", "last_run_id", "updated_at"])

    def open_jobs(self) -> list[tuple[int, datetime | None]]:
        """Stored jobs in a non-terminal status (any status not terminal): (id, created_at)."""
        query = (select(jobs_t.c.id, jobs_t.c.created_at)
                 .where(jobs_t.c.status.is_not(None), jobs_t.c.status.not_in(sorted(TERMINAL_STATUSES)))
                 .order_by(jobs_t.c.id))
        if self.account:
            query = query.where(or_(jobs_t.c.account_id == self.account, jobs_t.c.account_id.is_(None)))
        with self.engine.connect() as conn:
            return [(r.id, r.created_at) for r in conn.execute(query)]

    def count_created_since(self, moment: datetime) -> int:
        with self.engine.connect() as conn:
            return conn.execute(select(func.count()).select_from(jobs_t)
                                .where(jobs_t.c.created_at >= moment)).scalar()

    # runs
    def start_run(self, mode: str, requested: int = 0) -> int:
        """Open a sync_runs row; any older run still marked running is abandoned (we hold the lock)."""
        return self.transact(lambda conn: self._start_run(conn, mode, requested))

    def _start_run(self, conn: Connection, mode: str, requested: int) -> int:
        conn.execute(update(runs_t)
                     .where(runs_t.c.outcome == "running", _same_account(self.account))
                     .values(outcome="abandoned", message="the process ended without finishing the run"))
        row = {"account_id": self.account, "started_at": utcnow(), "mode": mode, "requested": requested,
               "outcome": "running", "pid": os.getpid(), "hostname": socket.gethostname()[:255],
               "archiver_version": __version__,
               **{c: 0 for c in ("inserted", "updated", "unchanged", "stale", "not_found", "failed",
                                 "credits_used", "api_calls")}}
        return conn.execute(runs_t.insert().values(**row)).inserted_primary_key[0]

    def finish_run(self, run_id: int, errors: Sequence[dict], **values: Any) -> None:
        """Close the run's row and record the jobs it could not archive, in one transaction."""
        now = utcnow()

        def work(conn: Connection) -> None:
            if errors:
                conn.execute(errors_t.insert(), [{"run_id": run_id, "occurred_at": now, **e} for e in errors])
            conn.execute(update(runs_t).where(runs_t.c.id == run_id).values(finished_at=now, **values))

        self.transact(work)


def as_row(record: Any) -> dict[str, Any]:
    """A record's fields as a row (shallow: dataclasses.asdict deep-copies every value)."""
    return {name: getattr(record, name) for name in record.__dataclass_fields__}


def _same_account(account: str | None):
    return runs_t.c.account_id.is_(None) if account is None else runs_t.c.account_id == account


def _dimension_newer(old, new):
    return or_(old.updated_at.is_(None), new.updated_at.is_(None), new.updated_at >= old.updated_at)


def _summary_row(job: Job) -> dict:
    s = job.log_summary
    return {"job_id": job.id, "log_id": s.id, "error_summary": s.error_summary,
            "action_items": list(s.action_items), "body": s.body, "created_at": s.created_at}


def _bucket(action: str) -> str:
    return {"insert": "inserted", "update": "updated", "unchanged": "unchanged", "stale": "stale"}[action]


def describe_error(exc: BaseException) -> str:
    """A short, value-free description of a database error for sync_errors."""
    if isinstance(exc, ArchiverError):
        return str(exc)
    orig = getattr(exc, "orig", None)
    name = type(orig).__name__ if orig is not None else type(exc).__name__
    return f"database error: {name}"
