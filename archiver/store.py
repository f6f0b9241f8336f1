"""The archive's write rules and the Archive repository: jobs written whole, newer wins.

Counts (inserted, updated, unchanged, stale) are decided here from the stored rows
read first, never from a driver's rowcount (MySQL reports an unchanged row like an
insert). Engines and migrations are archiver.database's; every SQL dialect
difference is archiver.dialect's.
"""

from __future__ import annotations

import dataclasses
import logging
import operator
import os
import random
import socket
import tempfile
import time
from collections.abc import Container, Iterable, Sequence
from contextlib import contextmanager
from datetime import date, datetime, timedelta, timezone
from typing import Any, Callable, Iterator, TypeVar

from sqlalchemy import Connection, Engine, and_, case, delete, func, literal_column, not_, or_, select, true, update
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.engine import make_url

from archiver import __version__, database, dialect, models
from archiver.errors import ArchiverError, DiskFull, LostLock
from archiver.fields import TERMINAL_STATUSES
from archiver.jsonio import RawJSON, canonical_json
from archiver.records import WRITE_OUTCOMES, CatalogRecord, JobRecord, RunCounts, ScheduleRecord, as_row
from archiver.utc import utcnow

log = logging.getLogger(__name__)
T = TypeVar("T")
R = TypeVar("R", JobRecord, CatalogRecord)
TRANSACTION_ATTEMPTS = 10  # deadlocks between unlocked writers can repeat on a loaded server
# Planner statistics (PostgreSQL, SQLite) are refreshed when a run has added this many jobs, or
# ANALYZE_GROWTH times the jobs the statistics knew of, whichever is more: the table grew 4×
# (a million-job ingest: 10k, 40k, 160k, 640k). What the planner needs from them is a table's
# shape (distinct values, each key's share), which holds as it grows; PostgreSQL scales their
# row counts by the table's current size by itself. Each ANALYZE of these tables costs 0.2-0.6 s.
ANALYZE_AFTER = 10_000
ANALYZE_GROWTH = 3
# the tables a write reads by more than a primary key (a job's outputs, variables and verdicts;
# the scorer's histories by package; the recounts of scheduled runs and days): jobs first
GROWING_TABLES = ("jobs", "job_outputs", "job_variables", "job_anomalies", "schedule_runs", "daily_package_rollup",
                  "daily_output_rollup", "daily_error_rollup", "daily_schedule_rollup")

jobs_t = models.JobRow.__table__
outputs_t = models.JobOutputRow.__table__
variables_t = models.JobVariableRow.__table__
changes_t = models.JobStatusChangeRow.__table__
runs_t = models.SyncRunRow.__table__
errors_t = models.SyncErrorRow.__table__
state_t = models.SyncStateRow.__table__
packages_t = models.PackageRow.__table__
clusters_t = models.ClusterRow.__table__
creators_t = models.CreatorRow.__table__
summaries_t = models.JobLogSummaryRow.__table__
unscored_t = models.UnscoredJobRow.__table__
schedules_t = models.ScheduleRow.__table__
schedule_packages_t = models.SchedulePackageRow.__table__
rollup_t = models.DailyPackageRollupRow.__table__
output_rollup_t = models.DailyOutputRollupRow.__table__
error_rollup_t = models.DailyErrorRollupRow.__table__
schedule_runs_t = models.ScheduleRunRow.__table__
CATALOG_TABLES = {"schedules": schedules_t, "packages": packages_t, "clusters": clusters_t}

# Columns that mean "what happened" go last: MySQL's guarded update reads them.
GUARD_COLUMNS = ("status", "updated_at")
# Inlined as SQL literals: bound IN lists cannot be used with executemany().
TERMINAL = [literal_column(f"'{s}'") for s in sorted(TERMINAL_STATUSES)]


# -- deciding what to write ----------------------------------------------------------------------
@dataclasses.dataclass(frozen=True, slots=True)
class Counted:
    """What the daily rollups read of a job row, beside its outputs."""

    account_id: str | None
    run_date: date | None
    package_id: int | None
    status: str | None
    runtime_in_seconds: int | None
    attempts: int | None
    error_signature: str | None
    ended_at: datetime | None
    created_at: datetime | None

    @property
    def group(self) -> tuple:
        """The (account_id, day, package_id) group of the rollups the job counts in."""
        return self.account_id, self.run_date, self.package_id

    def in_packages(self) -> tuple:
        """What daily_package_rollup reads of the job."""
        return self.group, self.status, self.runtime_in_seconds, self.attempts

    def in_outputs(self) -> tuple:
        """What daily_output_rollup reads of the job (beside its outputs)."""
        return self.group, self.status == "completed"

    def in_errors(self) -> tuple | None:
        """What daily_error_rollup reads of the job: nothing unless it failed."""
        if self.status != "failed":
            return None
        return self.group, self.error_signature, self.ended_at, self.created_at


COUNTED_COLUMNS = [jobs_t.c[name] for name in Counted.__dataclass_fields__]
# what read_stored reads of a job: then the Counted columns, in their order
STORED_COLUMNS = (jobs_t.c.id, jobs_t.c.updated_at, jobs_t.c.payload_hash, jobs_t.c.creator_type,
                  jobs_t.c.creator_id, *COUNTED_COLUMNS)


@dataclasses.dataclass(frozen=True, slots=True)
class Stored:
    updated_at: datetime | None
    status: str | None
    payload_hash: str | None
    chain: tuple | None = None      # (account_id, creator_id, package_id) of a scheduled job
    counted: Counted | None = None  # what the rollups read of it


def as_stored(updated_at, payload_hash, creator_type, creator_id, *counted) -> Stored:
    """A job's STORED_COLUMNS (after its id) as the write reads them."""
    counted = Counted(*counted)
    chain = (counted.account_id, creator_id, counted.package_id) if creator_type == "Schedule" else None
    return Stored(updated_at, counted.status, payload_hash, chain, counted)


STORED_NAMES = [column.name for column in STORED_COLUMNS[1:]]


def decide(stored: Stored | None, job: JobRecord) -> str:
    """What to do with a snapshot: 'inserted', 'updated', 'unchanged' or 'stale' (WRITE_OUTCOMES).

    Newer wins; a null updated_at never replaces a stored one; at an equal
    updated_at, other changes (progress, runtime) apply, but a terminal job never
    goes back to a non-terminal status.
    """
    if stored is None:
        return "inserted"
    if stored.payload_hash == job.payload_hash:
        return "unchanged"
    if stored.updated_at is None:
        return "updated"
    if job.updated_at is None or job.updated_at < stored.updated_at:
        return "stale"
    if job.updated_at == stored.updated_at and stored.status in TERMINAL_STATUSES \
            and job.status not in TERMINAL_STATUSES:
        return "stale"
    return "updated"


def newly_finished(writes: Iterable[JobRecord], stored: dict[int, Stored]) -> list[int]:
    """Ids of the written jobs whose status became terminal in this write (new ones included):
    the jobs the anomaly rules score once; a finished job written again is not among them."""
    return [j.id for j in writes if j.is_terminal
            and (j.id not in stored or stored[j.id].status not in TERMINAL_STATUSES)]


def newer_wins(old, new):
    """SQL twin of decide() for rows written concurrently by another run."""
    return or_(
        old.updated_at.is_(None),
        and_(new.updated_at.is_not(None), new.updated_at >= old.updated_at,
             not_(and_(new.updated_at == old.updated_at, old.status.in_(TERMINAL),
                       or_(new.status.is_(None), new.status.not_in(TERMINAL)))))
    )


def newest_per_id(jobs: Iterable[R]) -> list[R]:
    """One snapshot per id (the newest), in id order."""
    best: dict[int, R] = {}
    floor = datetime.min.replace(tzinfo=timezone.utc)
    for job in jobs:
        held = best.get(job.id)
        if held is None or (job.updated_at or floor) >= (held.updated_at or floor):
            best[job.id] = job
    return [best[i] for i in sorted(best)]


@dataclasses.dataclass(frozen=True, slots=True)
class StoredListed:
    updated_at: datetime | None
    payload_text: str | None   # canonical JSON of the stored payload; None: only seen in jobs (or a stub)


def decide_listed(stored: StoredListed | None, record: CatalogRecord) -> str:
    """What to do with a catalog object from its List endpoint (WRITE_OUTCOMES): newer
    updated_at wins, an equal one applies when the object differs (e.g. next_run_at moved),
    the same object is unchanged; one without updated_at never replaces a stored one."""
    if stored is None:
        return "inserted"
    if stored.payload_text == record.payload_text:
        return "unchanged"
    if stored.updated_at is None:
        return "updated"
    if record.updated_at is None or record.updated_at < stored.updated_at:
        return "stale"
    return "updated"


@dataclasses.dataclass
class BatchResult:
    """The job ids of a batch, by what writing them did (WRITE_OUTCOMES)."""

    inserted: list[int] = dataclasses.field(default_factory=list)
    updated: list[int] = dataclasses.field(default_factory=list)
    unchanged: list[int] = dataclasses.field(default_factory=list)
    stale: list[int] = dataclasses.field(default_factory=list)
    finished: list[int] = dataclasses.field(default_factory=list)  # written, and terminal for the first time

    def add(self, outcome: str, job_id: int) -> None:
        getattr(self, outcome).append(job_id)

    def add_to(self, counts: RunCounts) -> None:
        for outcome in WRITE_OUTCOMES:
            setattr(counts, outcome, getattr(counts, outcome) + len(getattr(self, outcome)))


# -- the daily rollup ---------------------------------------------------------------------------
@dataclasses.dataclass
class RollupGroups:
    """The (account_id, day, package_id) groups of each daily rollup that a write changed."""

    packages: set[tuple] = dataclasses.field(default_factory=set)
    outputs: set[tuple] = dataclasses.field(default_factory=set)
    errors: set[tuple] = dataclasses.field(default_factory=set)


def rollup_groups(writes: Sequence[JobRecord], stored: dict[int, Stored], now: dict[int, Stored],
                  outputs_written: set[int]) -> RollupGroups:
    """The groups of each rollup to recount after a write: for each written job whose row
    changed in what that rollup reads of it (or whose outputs were written: the output rollup),
    the group it counts in now and the one it counted in before (a newer snapshot may move a
    job to another day, account or package). Every rollup row belongs to one group, and a job
    counts only in its own: the other groups, and these groups in the other rollups, hold the
    same rows they would if recounted. `stored` and `now`: the rows before and after the write."""
    groups = RollupGroups()
    for job in writes:
        before = stored[job.id].counted if job.id in stored else None
        after = now[job.id].counted if job.id in now else None
        for found, read, changed in ((groups.packages, Counted.in_packages, False),
                                     (groups.outputs, Counted.in_outputs, job.id in outputs_written),
                                     (groups.errors, Counted.in_errors, False)):
            was, is_ = (None if c is None else read(c) for c in (before, after))
            if changed or was != is_:
                found.update(c.group for c in (before, after) if c is not None)
    return groups


WHOLE_DAY = None   # in a {(account_id, day): packages} map: every package of the day


def _in_groups(days: dict[tuple, set | None], account: str, day: str, package: str,
               arrays: bool = False) -> tuple[str, list]:
    """SQL (`?` placeholders) and its values matching the rows of these {(account_id, day):
    package ids, or WHOLE_DAY} groups, given the columns' names; a NULL account, day or package
    matched as NULL. A day's packages: one term per day (the day's index range, its packages
    filtered); whole days: one `day IN (..)` per account. Text, not SQLAlchemy expressions:
    building and compiling those for every batch cost more than running the statements.
    `arrays` (dialect.binds_arrays): a day's packages are one array parameter, so the text
    depends on the number of days only and the driver parses it once (a first ingest into
    PostgreSQL parsed 1,200 statements of hundreds of placeholders each: 1.5 s per 100,000 jobs)."""
    whole: dict[str | None, set] = {}
    terms, values = [], []
    for (who, when), packages in sorted(days.items(), key=lambda item: (item[0][0] or "", item[0][1] or date.min)):
        if packages is WHOLE_DAY:
            whole.setdefault(who, set()).add(when)
            continue
        terms.append(" AND ".join((_sql_one_of(account, {who}, values), _sql_one_of(day, {when}, values),
                                   _sql_one_of(package, packages, values, arrays))))
    for who, whole_days in whole.items():
        terms.append(" AND ".join((_sql_one_of(account, {who}, values), _sql_one_of(day, whole_days, values))))
    return "(" + " OR ".join(f"({term})" for term in terms) + ")", values


def _sql_one_of(column: str, choices: set, values: list, array: bool = False) -> str:
    """`column` equal to one of `choices` (dates bound as ISO text), a None among them matched
    as NULL; their values appended to `values`. `array`: several integers as one BIGINT[]."""
    known = sorted(c for c in choices if c is not None)
    if array and len(known) > 1:
        values.append(known)
        terms = [f"{column} = ANY(CAST(? AS BIGINT[]))"]
    else:
        values.extend(c.isoformat() if isinstance(c, date) else c for c in known)
        terms = [f"{column} = ?" if len(known) == 1 else f"{column} IN ({', '.join('?' * len(known))})"] if known else []
    if None in choices:
        terms.append(f"{column} IS NULL")
    return terms[0] if len(terms) == 1 else "(" + " OR ".join(terms) + ")"


def _rollup_select(conn: Connection):
    """One daily_package_rollup row per account, day and package of the jobs selected."""
    j = jobs_t.c
    terminal = j.status.in_(sorted(TERMINAL_STATUSES))
    one = literal_column("1e0")   # floating point everywhere (MySQL's decimal division keeps 4 digits)

    def count(status: str):
        return func.sum(case((j.status == status, 1), else_=0))

    finished = func.sum(case((terminal, 1), else_=0))
    return select(j.account_id, j.run_date, j.package_id, func.count(), count("completed"), count("failed"),
                  count("stopped"), func.sum(case((j.status == "failed", one), else_=0)) / func.nullif(finished, 0),
                  func.avg(case((terminal, j.runtime_in_seconds * one))),
                  func.max(case((terminal, j.runtime_in_seconds))),
                  dialect.joined_text(conn, case((terminal, j.runtime_in_seconds))),
                  func.sum(case((j.attempts > 0, 1), else_=0)), func.sum(case((terminal, j.runtime_in_seconds)))
                  ).group_by(j.account_id, j.run_date, j.package_id)


ROLLUP_COLUMNS = ["account_id", "day", "package_id", "jobs", "completed", "failed", "stopped", "failure_rate",
                  "avg_runtime_seconds", "max_runtime_seconds", "runtimes", "retries", "run_seconds"]


def _output_rollup_select(conn: Connection):
    """One daily_output_rollup row per account, day, package and output key of the jobs selected.

    On PostgreSQL each selected job's outputs are a LATERAL subquery: read through the job_id
    index, a few thousand lookups a batch. As a plain join (and as a LATERAL one the planner may
    pull up into a plain join: OFFSET 0 keeps it a subquery) the planner hashed the whole of
    job_outputs for each batch (a sequential scan growing with the archive: 33 ms a batch at
    100,000 jobs), or started a parallel worker to get an index plan back (10 ms)."""
    j = jobs_t.c
    completed = j.status == "completed"
    if dialect.has_lateral(conn):
        each = (select(outputs_t.c.records_count, models.output_key().label("output_key"))
                .where(outputs_t.c.job_id == j.id).offset(0).lateral("o"))   # OFFSET 0: kept apart
        o, key, joined = each.c, each.c.output_key, jobs_t.join(each, true())
    else:
        o, key, joined = outputs_t.c, models.output_key(), outputs_t.join(jobs_t, j.id == outputs_t.c.job_id)
    return (select(j.account_id, j.run_date, j.package_id, key, func.count(),
                   func.coalesce(func.sum(o.records_count), 0),
                   func.sum(case((completed, 1), else_=0)),
                   func.coalesce(func.sum(case((completed, o.records_count))), 0))
            .select_from(joined)
            .group_by(j.account_id, j.run_date, j.package_id, key))


OUTPUT_ROLLUP_COLUMNS = ["account_id", "day", "package_id", "output_key", "jobs", "records", "completed",
                         "completed_records"]


def _error_rollup_select(conn: Connection):
    """One daily_error_rollup row per account, day, package and error signature of the failed
    jobs selected."""
    j = jobs_t.c
    failed_at = func.coalesce(j.ended_at, j.created_at)
    return (select(j.account_id, j.run_date, j.package_id, j.error_signature, func.count(), func.min(failed_at),
                   func.max(failed_at), func.max(j.id))
            .where(j.status == "failed").group_by(j.account_id, j.run_date, j.package_id, j.error_signature))


ERROR_ROLLUP_COLUMNS = ["account_id", "day", "package_id", "error_signature", "jobs", "first_failed_at",
                        "last_failed_at", "last_job_id"]


ROLLUP_TABLES = {rollup_t: (_rollup_select, ROLLUP_COLUMNS),
                 output_rollup_t: (_output_rollup_select, OUTPUT_ROLLUP_COLUMNS),
                 error_rollup_t: (_error_rollup_select, ERROR_ROLLUP_COLUMNS)}


def refresh_rollup(conn: Connection, days: set[tuple]) -> None:
    """Recount these (account_id, day) groups of the daily rollups whole (see _recount_rollups):
    for writes that know the days they changed, not the packages (bulk loads, a claimed account)."""
    whole = {day: WHOLE_DAY for day in days}
    _recount_rollups(conn, {table: whole for table in ROLLUP_TABLES})


def refresh_rollup_groups(conn: Connection, groups: RollupGroups) -> None:
    """Recount these (account_id, day, package_id) groups of each daily rollup (see
    _recount_rollups): what a write changed (rollup_groups), not the other packages of its days."""
    tables = {table: _by_day(found) for table, found in ((rollup_t, groups.packages),
                                                          (output_rollup_t, groups.outputs),
                                                          (error_rollup_t, groups.errors))}
    _recount_rollups(conn, tables)


def _by_day(groups: set[tuple]) -> dict[tuple, set]:
    days: dict[tuple, set] = {}
    for account, day, package in groups:
        days.setdefault((account, day), set()).add(package)
    return days


def _recount_rollups(conn: Connection, tables: dict[Any, dict[tuple, set | None]]) -> None:
    """Recount these groups of the daily rollups (packages, outputs, error signatures: {table:
    {(account_id, day): packages}}) from jobs, in the transaction that wrote the jobs: the
    rollups are never out of step with them, and recounting (not adding deltas) makes a
    rewritten job count once, where it is now. One INSERT .. SELECT each: the database counts,
    and no job row travels to Python. Two writers' recounts of the same day are serialized
    whatever their packages and tables (lock_groups)."""
    days = {day for found in tables.values() for day in found}
    if not days:
        return
    dialect.lock_groups(conn, dialect.ROLLUP_LOCKS, days)
    arrays = dialect.binds_arrays(conn)
    for table, insert in _recount_statements(conn):
        if tables.get(table):
            gone = _in_groups(tables[table], "account_id", "day", "package_id", arrays)
            counted = _in_groups(tables[table], "jobs.account_id", "jobs.run_date", "jobs.package_id", arrays)
            dialect.execute_positional(conn, f"DELETE FROM {table.name} WHERE {gone[0]}", gone[1])
            dialect.execute_positional(conn, insert.replace(GROUPS, counted[0]), counted[1])


GROUPS = "__groups__"   # where _recount_statements' text takes the groups' terms
_RECOUNTS: dict[str, list[tuple[Any, str]]] = {}


def _recount_statements(conn: Connection) -> list[tuple[Any, str]]:
    """[(rollup table, its INSERT .. SELECT with GROUPS in the WHERE)], compiled once per dialect
    from the SQLAlchemy selects above (constants inlined: the text goes straight to the driver)."""
    if conn.dialect.name not in _RECOUNTS:
        statements = []
        for table, (select_rows, columns) in ROLLUP_TABLES.items():
            insert = table.insert().from_select(columns, select_rows(conn).where(literal_column(GROUPS)))
            statements.append((table, str(insert.compile(dialect=conn.dialect,
                                                         compile_kwargs={"literal_binds": True}))))
        _RECOUNTS[conn.dialect.name] = statements
    return _RECOUNTS[conn.dialect.name]


# -- the schedule runs --------------------------------------------------------------------------
# One row per scheduled run (schedule_runs, the schedule_attempts view): a retry belongs to the
# latest failed first attempt of its account, schedule and package before it (by created_at,
# then id). The same SELECT as migration 0008's, over the jobs of the chains being recomputed.
CHAIN_COLUMNS = "j.id, j.account_id, j.creator_id, j.package_id, j.status, j.created_at, j.ended_at, j.attempts"
SCHEDULE_RUNS_SQL = """
INSERT INTO schedule_runs (first_job_id, account_id, schedule_id, package_id, last_job_id, scheduled_at,
                           ended_at, attempts, failed_attempts, final_status, outcome)
SELECT run_job_id, account_id, creator_id, package_id, job_id, scheduled_at, ended_at, attempts,
       failed_attempts, status,
       CASE WHEN status = 'completed' AND failed_attempts > 0 THEN 'recovered_on_retry' ELSE status END
FROM (
    SELECT a.*,
           ROW_NUMBER() OVER (PARTITION BY run_job_id
                              ORDER BY attempt DESC, created_at DESC, job_id DESC) AS from_last,
           COUNT(*) OVER (PARTITION BY run_job_id) AS attempts,
           SUM(CASE WHEN status = 'failed' THEN 1 ELSE 0 END) OVER (PARTITION BY run_job_id) AS failed_attempts,
           MIN(created_at) OVER (PARTITION BY run_job_id) AS scheduled_at
    FROM (
        SELECT j.id AS job_id, j.account_id, j.creator_id, j.package_id, j.status, j.created_at,
               j.ended_at, COALESCE(j.attempts, 0) AS attempt,
               CASE WHEN COALESCE(j.attempts, 0) = 0 THEN j.id
                    ELSE MAX(CASE WHEN COALESCE(j.attempts, 0) = 0 AND j.status = 'failed' THEN j.id END)
                         OVER (PARTITION BY j.account_id, j.creator_id, j.package_id
                               ORDER BY j.created_at, j.id ROWS UNBOUNDED PRECEDING)
               END AS run_job_id
        FROM ({region}) j
    ) a
    WHERE run_job_id IS NOT NULL
) r
WHERE from_last = 1
"""


def chain_starts(writes: Sequence[JobRecord], stored: dict[int, Stored], now: dict[int, Stored]
                 ) -> dict[tuple, datetime]:
    """{(account_id, schedule_id, package_id): earliest created_at} of the scheduled jobs written,
    where they are now and where they were before (`now`, `stored`: the rows after and before)."""
    starts: dict[tuple, datetime] = {}
    for job in writes:
        for row in (stored.get(job.id), now.get(job.id)):
            if row is not None and row.chain is not None and row.counted.created_at is not None:
                moment = row.counted.created_at
                if row.chain not in starts or moment < starts[row.chain]:
                    starts[row.chain] = moment
    return starts


@dataclasses.dataclass(frozen=True)
class Recount:
    """Where a chain's recount begins. Runs that began before `since` cannot have changed, except
    the one of `anchor`: the chain's last failed first attempt before `since` (its created_at), to
    which retries written at or after `since` may belong. The runs of the jobs in between (healthy
    first attempts) are left alone, so a write reads what it wrote and that run's retries, however
    long ago the chain last failed."""

    since: datetime
    anchor: Any   # a created_at as the database returned it, bound back as it is


def _recount_from(conn: Connection, starts: dict[tuple, datetime]) -> dict[tuple, Recount]:
    """Each chain's recount: its last failed first attempt before the earliest job written, found
    with one descent of the (chain, status, created_at) index (every database)."""
    keys = list(starts)
    anchors: dict[int, Any] = {}
    for begin in range(0, len(keys), 100):
        selects, values = [], []
        for i, key in enumerate(keys[begin:begin + 100], start=begin):
            terms, key_values = _chain_terms(key)
            selects.append(f"SELECT {i} AS k, created_at FROM (SELECT j.created_at FROM jobs j WHERE "
                           f"j.creator_type = 'Schedule' AND {terms} AND j.status = 'failed'"
                           f" AND COALESCE(j.attempts, 0) = 0 AND j.created_at < ?"
                           f" ORDER BY j.created_at DESC LIMIT 1) a{i}")
            values += [*key_values, starts[key]]
        anchors.update(dialect.execute_positional(conn, " UNION ALL ".join(selects), values).all())
    return {key: Recount(starts[key], anchors.get(i)) for i, key in enumerate(keys)}


def _chain_terms(key: tuple, alias: str = "j",
                 columns: tuple[str, ...] = ("account_id", "creator_id", "package_id")) -> tuple[str, list]:
    """SQL terms (on `alias`, `?` placeholders) matching the chain `key` = (account_id,
    creator_id, package_id), and their values."""
    terms, values = [], []
    for column, value in zip(columns, key):
        if value is None:
            terms.append(f"{alias}.{column} IS NULL")
        else:
            terms.append(f"{alias}.{column} = ?")
            values.append(value)
    return " AND ".join(terms), values


RUN_KEY = ("account_id", "schedule_id", "package_id")


def refresh_schedule_runs(conn: Connection, starts: dict[tuple, datetime]) -> None:
    """Recompute schedule_runs for these chains where a write may have changed them (Recount), in
    the transaction of the write. The statements go straight to the driver (execute_positional)."""
    if not starts:
        return
    dialect.lock_groups(conn, dialect.CHAIN_LOCKS, starts)
    recounts = _recount_from(conn, starts)
    keys = list(recounts)
    for begin in range(0, len(keys), 200):
        part = keys[begin:begin + 200]
        dialect.execute_positional(conn, *_chain_runs_delete(part, recounts))
        dialect.execute_positional(conn, *_chain_region_insert(conn, part, recounts))
        _refresh_schedule_days(conn, {key: recounts[key] for key in part})


def _chain_runs_delete(keys: list[tuple], recounts: dict[tuple, Recount]) -> tuple[str, list]:
    """Delete the runs of these chains that the recount writes again: those that began at or after
    `since`, and those that began at the anchor's time (the anchor's, and any tied with it)."""
    clauses, values = [], []
    for key in keys:
        terms, key_values = _chain_terms(key, "schedule_runs", RUN_KEY)
        recount = recounts[key]
        clauses.append(f"({terms} AND schedule_runs.scheduled_at >= ?)")
        values += [*key_values, recount.since]
        if recount.anchor is not None:
            clauses.append(f"({terms} AND schedule_runs.scheduled_at = ?)")
            values += [*key_values, recount.anchor]
    # a flat OR of index ranges (schedule_id, package_id, scheduled_at): each is one descent
    return "DELETE FROM schedule_runs WHERE " + " OR ".join(clauses), values


def _utc_date(moment) -> date:
    """The UTC day of a created_at, bound or as the driver returned it (SQLite: text)."""
    if isinstance(moment, str):
        return date.fromisoformat(moment[:10])
    return (moment.astimezone(timezone.utc) if moment.tzinfo else moment).date()


SCHEDULE_DAYS_SQL = """
INSERT INTO daily_schedule_rollup (account_id, day, schedule_id, package_id, runs, retried, retries, recovered, failed)
SELECT account_id, {day}, schedule_id, package_id, COUNT(*), SUM(CASE WHEN attempts > 1 THEN 1 ELSE 0 END),
       SUM(attempts - 1), SUM(CASE WHEN outcome = 'recovered_on_retry' THEN 1 ELSE 0 END),
       SUM(CASE WHEN outcome = 'failed' THEN 1 ELSE 0 END)
FROM ({runs}) r
GROUP BY account_id, {day}, schedule_id, package_id
"""
SCHEDULE_RUN_FIELDS = "account_id, schedule_id, package_id, scheduled_at, attempts, outcome"


def _refresh_schedule_days(conn: Connection, recounts: dict[tuple, Recount]) -> None:
    """Recount daily_schedule_rollup where the runs of these chains may have changed: every day
    from `since`'s on, and the anchor's day. Straight to the driver, one SELECT per chain and
    day span (a range of the (schedule_id, package_id, scheduled_at) index each), as for the
    runs themselves."""
    gone, runs, gone_values, run_values = [], [], [], []
    for key, recount in recounts.items():
        since = _utc_date(recount.since)
        days = [(since, None)]
        anchor = None if recount.anchor is None else _utc_date(recount.anchor)
        if anchor is not None and anchor < since:
            days.append((anchor, anchor + timedelta(days=1)))
        for first, end in days:
            terms, key_values = _chain_terms(key, "daily_schedule_rollup", RUN_KEY)
            gone.append(f"({terms} AND daily_schedule_rollup.day {'>=' if end is None else '='} ?)")
            gone_values += [*key_values, first.isoformat()]
            terms, key_values = _chain_terms(key, "schedule_runs", RUN_KEY)
            runs.append(f"SELECT {SCHEDULE_RUN_FIELDS} FROM schedule_runs WHERE {terms} AND scheduled_at >= ?"
                        + ("" if end is None else " AND scheduled_at < ?"))
            run_values += [*key_values, _midnight(first), *([] if end is None else [_midnight(end)])]
    dialect.execute_positional(conn, "DELETE FROM daily_schedule_rollup WHERE " + " OR ".join(gone), gone_values)
    day = dialect.utc_day_sql(conn, "scheduled_at")
    dialect.execute_positional(conn, SCHEDULE_DAYS_SQL.format(day=day, runs=" UNION ALL ".join(runs)), run_values)


def _midnight(day: date) -> datetime:
    return datetime.combine(day, datetime.min.time(), timezone.utc)


RUN_COLUMNS = ("account_id", "schedule_id", "package_id", "last_job_id", "scheduled_at", "ended_at", "attempts",
               "failed_attempts", "final_status", "outcome")


def _chain_region_insert(conn: Connection, keys: list[tuple], recounts: dict[tuple, Recount]) -> tuple[str, list]:
    """SCHEDULE_RUNS_SQL over the jobs of these chains that the recount reads: every job from
    `since` on, and before it the anchor's time and the retries after it."""
    chains, values = [], []
    for key in keys:
        terms, key_values = _chain_terms(key)
        recount = recounts[key]
        chain = f"SELECT {CHAIN_COLUMNS} FROM jobs j WHERE j.creator_type = 'Schedule' AND {terms}"
        chains.append(f"{chain} AND j.created_at >= ?")
        values += [*key_values, recount.since]
        if recount.anchor is not None:
            # attempts is in the chain index: the healthy runs in between are skipped unread
            chains.append(f"{chain} AND j.created_at >= ? AND j.created_at < ?"
                          " AND (COALESCE(j.attempts, 0) > 0 OR j.created_at = ?)")
            values += [*key_values, recount.anchor, recount.since, recount.anchor]
    # one SELECT per chain, not one OR of them: each is a range of the chain index, where the OR
    # made SQLite read every scheduled job of the archive for each batch
    sql = SCHEDULE_RUNS_SQL.format(region=" UNION ALL ".join(chains))
    return sql + dialect.on_conflict_update(conn, "first_job_id", RUN_COLUMNS), values


# -- the archive -----------------------------------------------------------------------------------
class Archive:
    """An archive database: write batches of jobs whole, record runs and errors."""

    def __init__(self, engine: Engine, account: str | None = None):
        self.engine = engine
        self.account = account
        self.lock_rows = dialect.locks_rows(engine)
        self.lock: dialect.RunLockHolder | None = None  # the run lock while held: checked before each commit
        self.stats_rows: int | None = None  # jobs the planner's statistics know of, once asked
        self.added = 0                      # jobs inserted since
        self.url: str | None = None         # as opened (Archive.open): another process may open it too

    @classmethod
    def open(cls, url: str, account: str | None = None, create: bool = True) -> "Archive":
        """Open an archive; an empty database is migrated first unless `create` is False."""
        archive = cls(database.open_engine(url, create=create), account)
        archive.url = url
        return archive

    def shared_url(self) -> str | None:
        """The URL another process can open this archive by (None: it cannot, e.g. SQLite in memory)."""
        if self.url is None:
            return None
        parsed = make_url(self.url)
        if parsed.get_backend_name() == "sqlite" and (parsed.database in (None, "", ":memory:")
                                                      or "mode=memory" in str(parsed)):
            return None
        return self.url

    @classmethod
    def scratch(cls, account: str | None = None) -> "Archive":
        """An empty archive in a temporary SQLite file, removed on close: what a dry run
        compares with when the real database holds no archive yet."""
        folder = tempfile.TemporaryDirectory(prefix="xplenty-archiver-dry-run-")
        archive = cls(database.open_engine(f"sqlite:///{folder.name}/scratch.db"), account)
        archive._scratch = folder
        return archive

    def close(self) -> None:
        self.engine.dispose()
        scratch = getattr(self, "_scratch", None)
        if scratch is not None:
            scratch.cleanup()

    @contextmanager
    def run_lock(self, wait: float = 0.0, enabled: bool = True) -> Iterator[None]:
        """Hold the account's run lock; while held, every transaction checks it is still ours
        before it commits (a lost lock rolls the transaction back and raises LostLock)."""
        if not enabled:
            yield
            return
        with dialect.run_lock(self.engine, self.account or "-", wait=wait) as holder:
            self.lock = holder
            try:
                yield
            finally:
                self.lock = None

    def check_lock(self) -> None:
        """Raise LostLock unless the run lock (when one is held) is still ours."""
        if self.lock is not None and (why := self.lock.check()) is not None:
            raise LostLock(f"lost the run lock: {why}; stopped writing (another run may hold it now)")

    # jobs
    def read_stored(self, conn: Connection, ids: Sequence[int], lock: bool = True) -> dict[int, Stored]:
        """The stored rows of these jobs, locked (`lock`, where rows are locked) for the write."""
        found: dict[int, Stored] = {}
        # by primary key, creator_type tested here: with `creator_type = 'Schedule'` in the WHERE,
        # SQLite without statistics read every scheduled job through the chain index instead.
        # Straight to the driver (dialect.select_in): the same SELECT, compiled once.
        lock = self.lock_rows and lock
        for start in range(0, len(ids), 1000):
            for job_id, *values in dialect.select_in(conn, STORED_COLUMNS, jobs_t.c.id, ids[start:start + 1000],
                                                     order=True, lock=lock):
                found[job_id] = as_stored(*values)
        return found

    def stored_hashes(self, ids: Sequence[int]) -> dict[int, str | None]:
        """The payload hash of each stored job among `ids` (a plain read, no locks)."""
        found: dict[int, str | None] = {}
        unique = sorted(set(ids))
        with self.engine.connect() as conn:
            for start in range(0, len(unique), 1000):
                found.update(dialect.select_in(conn, (jobs_t.c.id, jobs_t.c.payload_hash), jobs_t.c.id,
                                               unique[start:start + 1000]))
        return found

    def unscored_count(self) -> int:
        """Jobs listed in unscored_jobs: stored, their anomaly verdicts not yet (flows.scoring)."""
        with self.engine.connect() as conn:
            return conn.execute(select(func.count()).select_from(unscored_t)).scalar_one()

    def has_unowned_jobs(self) -> bool:
        with self.engine.connect() as conn:
            query = select(jobs_t.c.id).where(jobs_t.c.account_id.is_(None)).limit(1)
            return conn.execute(query).first() is not None

    def claim_unowned(self, ids: Sequence[int]) -> None:
        """Give these jobs, when stored without an account (an ingest without --account), ours."""
        unique = sorted(set(ids))
        if not unique or not self.account:
            return

        def work(conn: Connection) -> None:
            for start in range(0, len(unique), 1000):
                unowned = and_(jobs_t.c.account_id.is_(None), dialect.in_ids(conn, jobs_t.c.id, unique[start:start + 1000]))
                days = set(conn.execute(select(jobs_t.c.run_date).where(unowned).distinct()).scalars())
                chains = conn.execute(select(jobs_t.c.creator_id, jobs_t.c.package_id, func.min(jobs_t.c.created_at))
                                      .where(unowned, jobs_t.c.creator_type == "Schedule")
                                      .group_by(jobs_t.c.creator_id, jobs_t.c.package_id)).all()
                conn.execute(update(jobs_t).where(unowned).values(account_id=self.account))
                refresh_rollup(conn, {(account, day) for account in (None, self.account) for day in days})
                refresh_schedule_runs(conn, {(account, s, p): t for s, p, t in chains
                                             for account in (None, self.account)})

        self.transact(work)

    def ids_with_log_summary(self, ids: Sequence[int]) -> set[int]:
        if not ids:
            return set()
        with self.engine.connect() as conn:
            query = select(summaries_t.c.job_id).where(dialect.in_ids(conn, summaries_t.c.job_id, list(ids)))
            return set(conn.execute(query).scalars())

    def plan(self, jobs: Sequence[JobRecord]) -> BatchResult:
        """Dry run: what writing these jobs would do, without writing."""
        unique = newest_per_id(jobs)
        with self.engine.connect() as conn:
            stored = self.read_stored(conn, [j.id for j in unique])
        result = BatchResult()
        for job in unique:
            result.add(decide(stored.get(job.id), job), job.id)
        return result

    def transact(self, work: Callable[[Connection], T], check_lock: bool = True) -> T:
        """Run `work` in one transaction, retried whole on a deadlock or lock timeout. While
        the run lock is held, it is checked before the commit (`check_lock`): a transaction
        never commits after the lock was lost."""
        for attempt in range(TRANSACTION_ATTEMPTS):
            try:
                with self.engine.begin() as conn:
                    result = work(conn)
                    if check_lock:
                        self.check_lock()
                    return result
            except Exception as exc:
                if dialect.is_disk_full(exc):
                    raise disk_full(exc) from exc
                if not dialect.is_retryable(exc) or attempt == TRANSACTION_ATTEMPTS - 1:
                    raise
                log.warning("transaction conflict (%s); retrying it", describe_error(exc))
                time.sleep(random.uniform(0.01, 0.05) * (attempt + 1))
        raise AssertionError("unreachable")

    def write_jobs(self, jobs: Sequence[JobRecord], run_id: int | None = None,
                   after: Callable[[Connection], None] | None = None,
                   then: Callable[[Connection, BatchResult], None] | None = None) -> BatchResult:
        """Write a batch in one transaction; `after(conn)` (e.g. the bookmark) and `then(conn,
        result)` (the anomaly verdicts on what it wrote) commit with it."""
        unique = newest_per_id(jobs)
        result = self._transact_with(lambda conn: self._write(conn, unique, run_id), after, then)
        self.grew(len(result.inserted))
        return result

    def grew(self, inserted: int) -> None:
        """Count new jobs; on PostgreSQL and SQLite, ANALYZE the growing tables once they grew a
        lot (after the commit, outside any transaction of the run). A failure only costs speed:
        logged."""
        if not inserted or not dialect.needs_statistics(self.engine):
            return
        try:
            if self.stats_rows is None:
                self.stats_rows = dialect.estimated_rows(self.engine, "jobs")
            self.added += inserted
            if self.added >= max(ANALYZE_AFTER, ANALYZE_GROWTH * self.stats_rows):
                dialect.refresh_statistics(self.engine, GROWING_TABLES)
                self.stats_rows, self.added = self.stats_rows + self.added, 0
        except SQLAlchemyError as exc:
            log.warning("could not refresh the planner's statistics (%s); writes may slow down", describe_error(exc))

    def _transact_with(self, write: Callable[[Connection], T], after: Callable[[Connection], None] | None,
                       then: Callable[[Connection, T], None] | None = None) -> T:
        """`write(conn)`, `after(conn)` then `then(conn, result)` in one transaction: a page, its
        bookmark and the verdicts on what it wrote land together."""
        def work(conn: Connection) -> T:
            result = write(conn)
            if after is not None:
                after(conn)
            if then is not None:
                then(conn, result)
            return result

        return self.transact(work)

    def _write(self, conn: Connection, jobs: list[JobRecord], run_id: int | None) -> BatchResult:
        now = utcnow()
        stored = self.read_stored(conn, [j.id for j in jobs])
        result = BatchResult()
        writes: list[JobRecord] = []
        for job in jobs:
            outcome = decide(stored.get(job.id), job)
            result.add(outcome, job.id)
            if outcome in ("inserted", "updated"):
                writes.append(job)
        if not writes:
            return result
        self._upsert_dimensions(conn, writes, now)
        made = self._upsert_job_rows(conn, writes, now, fresh=set(result.inserted))
        written: dict[int, Stored] | None = None   # the jobs rows as written (read back once)
        if self.lock_rows and any(i not in made for i in result.inserted):
            writes, written = self._drop_lost_races(conn, writes, result)
        outputs_written = self._replace_children(conn, writes, made)
        self._record_status_changes(conn, writes, stored, now, run_id)
        if written is None:
            written = self._as_written(conn, writes, made)
        refresh_rollup_groups(conn, rollup_groups(writes, stored, written, outputs_written))
        refresh_schedule_runs(conn, chain_starts(writes, stored, written))
        result.finished = newly_finished(writes, stored)
        return result

    def _drop_lost_races(self, conn: Connection, writes: list[JobRecord], result: BatchResult
                         ) -> tuple[list[JobRecord], dict[int, Stored]]:
        """Jobs that were new when read may have been written meanwhile by another process
        (runs without the lock, or another account's). Where the guarded upsert kept that
        newer row, its outputs and variables must stay too: count ours as stale. Not called
        when this transaction surely made every new job (`made`: PostgreSQL's COPY fails on a
        key already there), as in a first ingest, which then reads back none of its rows.

        Returns the writes left and the jobs rows of all the writes as they now are: the rows
        the rest of the write reads back (nothing after the upsert changes a jobs row, and every
        row written is locked by this transaction: the new ones by their insert, the others by
        read_stored), so they are read once, here."""
        fresh = set(result.inserted)
        ours = {j.id: j.payload_hash for j in writes if j.id in fresh}
        now_stored = self.read_stored(conn, [j.id for j in writes])
        lost = {i for i, h in ours.items() if now_stored.get(i) is None or now_stored[i].payload_hash != h}
        if not lost:
            return writes, now_stored
        result.inserted = [i for i in result.inserted if i not in lost]
        result.stale.extend(sorted(lost))
        return [j for j in writes if j.id not in lost], now_stored

    def _as_written(self, conn: Connection, writes: list[JobRecord], made: dict[int, dict]) -> dict[int, Stored]:
        """The jobs rows of the writes as they now are (nothing after the upsert changes a jobs
        row): the rows this transaction made as it inserted them (an absent column is NULL), the
        others read back. A first ingest into SQLite read back every row it had just written."""
        written = self.read_stored(conn, [j.id for j in writes if j.id not in made], lock=False)
        for job_id, row in made.items():
            written[job_id] = as_stored(*map(row.get, STORED_NAMES))
        return written

    def _upsert_job_rows(self, conn: Connection, jobs: list[JobRecord], now: datetime, fresh: set[int]
                         ) -> dict[int, dict]:
        """Rows grouped by the columns their payload carried (an absent key is not written)
        and by whether the job was new when read (new ones may be bulk-loaded).

        Returns the rows this transaction surely made, by id: new when read and inserted by a
        plain insert (PostgreSQL's COPY, which fails on a key already there) or on SQLite (whose
        write lock is held from the read on). They have no outputs or variables to delete."""
        groups: dict[tuple[tuple[str, ...], bool], list[dict]] = {}
        made: dict[int, dict] = {}
        for job in jobs:
            row = {"id": job.id, **job.columns, "payload": RawJSON(job.payload_text),
                   "payload_hash": job.payload_hash, "first_seen_at": now, "last_synced_at": now}
            if self.account:
                row["account_id"] = self.account
            groups.setdefault((tuple(row), job.id in fresh), []).append(row)
        for (columns, new), rows in groups.items():
            update_cols = [c for c in columns if c not in ("id", "first_seen_at") + GUARD_COLUMNS]
            update_cols += [c for c in GUARD_COLUMNS if c in columns]
            plain = dialect.upsert(conn, jobs_t, rows, keys=("id",), update=update_cols, guard=newer_wins,
                                   expect_new=new)
            if new and (plain or not self.lock_rows):
                made.update((row["id"], row) for row in rows)
        return made

    def _replace_children(self, conn: Connection, jobs: list[JobRecord], made: Container[int]) -> set[int]:
        """Outputs and variables replaced as sets, where they differ from the stored ones (a
        changed job usually keeps them: reading them costs less than rewriting them). Jobs new
        when read are compared too (without the lock another writer may have inserted them, and
        their children, since), except the ones this transaction surely made (`made`): a first
        ingest reads and deletes nothing. Returns the ids of the jobs whose outputs were written."""
        with_outputs = self._differing(conn, outputs_t, [j for j in jobs if j.outputs is not None], made,
                                       lambda j: sorted((as_row(o) for o in j.outputs), key=lambda r: r["id"]))
        with_vars = self._differing(conn, variables_t, [j for j in jobs if j.variables is not None], made,
                                    lambda j: [{"job_id": j.id, "name": n, "value": v}
                                               for n, v in sorted(j.variables.items())])
        self._delete_where_job(conn, outputs_t, [i for i in with_outputs if i not in made])
        rows = sorted((row for rows in with_outputs.values() for row in rows), key=lambda r: r["id"])
        if rows:
            cols = [c for c in rows[0] if c != "id"]
            dialect.upsert(conn, outputs_t, rows, keys=("id",), update=cols, expect_new=True)
        self._delete_where_job(conn, variables_t, [i for i in with_vars if i not in made])
        dialect.insert_rows(conn, variables_t, [row for rows in with_vars.values() for row in rows])
        summary_rows = [_summary_row(j) for j in jobs if j.log_summary is not None]
        if summary_rows:
            dialect.upsert(conn, summaries_t, summary_rows, keys=("job_id",),
                           update=[c for c in summary_rows[0] if c != "job_id"])
        return set(with_outputs)

    @staticmethod
    def _differing(conn: Connection, table, jobs: list[JobRecord], made: Container[int],
                   rows_of: Callable[[JobRecord], list[dict]]) -> dict[int, list[dict]]:
        """{job id: its rows of `table`} for these jobs, less those whose stored rows are the
        same (every column, as read back)."""
        wanted = {j.id: rows_of(j) for j in jobs}
        compare = sorted(i for i in wanted if i not in made)
        stored: dict[int, list[dict]] = {}
        for start in range(0, len(compare), 1000):
            query = select(table).where(dialect.in_ids(conn, table.c.job_id, compare[start:start + 1000]))
            for row in conn.execute(query).mappings():
                stored.setdefault(row["job_id"], []).append(dict(row))
        key = operator.itemgetter("id" if "id" in table.c else "name")   # the order of rows_of's rows
        return {i: rows for i, rows in wanted.items() if i in made or sorted(stored.get(i, []), key=key) != rows}

    @staticmethod
    def _delete_where_job(conn: Connection, table, ids: list[int]) -> None:
        for start in range(0, len(ids), 1000):
            conn.execute(delete(table).where(dialect.in_ids(conn, table.c.job_id, ids[start:start + 1000])))

    def _upsert_dimensions(self, conn: Connection, jobs: list[JobRecord], now: datetime) -> None:
        """Packages, clusters and creators: the columns a v2 object carried (newer wins), a
        stub row for a bare id otherwise."""
        for table, attr, id_col in ((packages_t, "package", "package_id"), (clusters_t, "cluster", "cluster_id")):
            full = {getattr(j, attr).id: getattr(j, attr) for j in jobs if getattr(j, attr) is not None}
            bare = {j.columns.get(id_col) for j in jobs} - set(full) - {None}
            upsert_catalog_rows(conn, table, [full[i] for i in sorted(full)], now, guard=_dimension_newer)
            dialect.insert_missing(conn, table, [{"id": i} for i in sorted(bare)], keys=("id",))
        creators = {(j.creator.type, j.creator.id): j.creator for j in jobs if j.creator is not None}
        rows = [{**as_row(creators[k]), "last_synced_at": now} for k in sorted(creators)]
        if rows:
            dialect.upsert(conn, creators_t, rows, keys=("type", "id"),
                           update=["display_name", "url", "html_url", "last_synced_at"])

    @staticmethod
    def _record_status_changes(conn: Connection, jobs: list[JobRecord], stored: dict[int, Stored],
                               now: datetime, run_id: int | None) -> None:
        rows = []
        for job in jobs:
            before = stored.get(job.id)
            from_status = before.status if before else None
            if "status" in job.columns and (before is None or from_status != job.status):
                rows.append({"job_id": job.id, "from_status": from_status, "to_status": job.status,
                             "observed_at": now, "api_updated_at": job.updated_at, "run_id": run_id})
        dialect.insert_rows(conn, changes_t, rows)

    # the catalog: schedules, packages, clusters from their own List endpoints
    def write_catalog(self, kind: str, records: Sequence[CatalogRecord], after: Callable[[Connection], None] | None = None
                      ) -> BatchResult:
        """Write one page of a catalog List endpoint in one transaction (newer updated_at wins;
        a schedule's packages replaced with it); `after(conn)` (its bookmark) commits with it."""
        unique = newest_per_id(records)
        return self._transact_with(lambda conn: self._write_catalog(conn, kind, unique), after)

    def plan_catalog(self, kind: str, records: Sequence[CatalogRecord]) -> BatchResult:
        """Dry run: what writing these catalog objects would do, without writing."""
        unique = newest_per_id(records)
        with self.engine.connect() as conn:
            stored = self._read_listed(conn, CATALOG_TABLES[kind], [r.id for r in unique])
        result = BatchResult()
        for record in unique:
            result.add(decide_listed(stored.get(record.id), record), record.id)
        return result

    def _write_catalog(self, conn: Connection, kind: str, records: list[CatalogRecord]) -> BatchResult:
        table = CATALOG_TABLES[kind]
        stored = self._read_listed(conn, table, [r.id for r in records])
        result = BatchResult()
        for record in records:
            result.add(decide_listed(stored.get(record.id), record), record.id)
        accepted = set(result.inserted) | set(result.updated)
        writes = [r for r in records if r.id in accepted]
        upsert_catalog_rows(conn, table, writes, utcnow(), guard=_listed_newer)
        if kind == "schedules":
            self._replace_schedule_packages(conn, [r for r in writes if r.packages is not None])
        return result

    def _read_listed(self, conn: Connection, table, ids: Sequence[int]) -> dict[int, StoredListed]:
        found: dict[int, StoredListed] = {}
        for start in range(0, len(ids), 1000):
            query = (select(table.c.id, table.c.updated_at, table.c.payload)
                     .where(dialect.in_ids(conn, table.c.id, ids[start:start + 1000])).order_by(table.c.id))
            if self.lock_rows:
                query = query.with_for_update()
            for row in conn.execute(query):
                text = None if row.payload is None else canonical_json(row.payload)
                found[row.id] = StoredListed(row.updated_at, text)
        return found

    @staticmethod
    def _replace_schedule_packages(conn: Connection, schedules: list[ScheduleRecord]) -> None:
        ids = [s.id for s in schedules]
        for start in range(0, len(ids), 1000):
            part = ids[start:start + 1000]
            conn.execute(delete(schedule_packages_t).where(
                dialect.in_ids(conn, schedule_packages_t.c.schedule_id, part)))
        rows = [{"schedule_id": s.id, **as_row(p)} for s in schedules for p in s.packages]
        dialect.insert_rows(conn, schedule_packages_t, rows)

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
        """Stored jobs in a non-terminal status (any status not terminal): (id, updated_at)."""
        query = select(jobs_t.c.id, jobs_t.c.updated_at)
        if self.account:
            query = query.where(or_(jobs_t.c.account_id == self.account, jobs_t.c.account_id.is_(None)))
        with self.engine.connect() as conn:
            open_statuses = dialect.statuses_except(conn, jobs_t.c.status, TERMINAL_STATUSES)
            return sorted((r.id, r.updated_at) for r in conn.execute(dialect.with_status(query, jobs_t.c.status,
                                                                                          open_statuses)))

    def count_updated_since(self, moment: datetime) -> int:
        with self.engine.connect() as conn:
            return conn.execute(select(func.count()).select_from(jobs_t)
                                .where(jobs_t.c.updated_at >= moment)).scalar()

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
               "archiver_version": __version__, **RunCounts(requested=requested).counts()}
        return conn.execute(runs_t.insert().values(**row)).inserted_primary_key[0]

    def finish_run(self, run_id: int, counts: RunCounts, outcome: str, message: str | None,
                   errors: Sequence[dict]) -> None:
        """Close the run's row and record the jobs it could not archive, in one transaction."""
        now = utcnow()
        values = {**counts.counts(), "outcome": outcome, "message": message, "finished_at": now}

        def work(conn: Connection) -> None:
            if errors:
                conn.execute(errors_t.insert(), [{"run_id": run_id, "occurred_at": now, **e} for e in errors])
            conn.execute(update(runs_t).where(runs_t.c.id == run_id).values(**values))

        self.transact(work, check_lock=False)  # the run's own row, also after a lost lock

    # reads for `archiver doctor`
    def last_successful_run(self) -> dict[str, Any] | None:
        """The account's newest sync_runs row that ended ok or at its credit budget, or None."""
        return self._newest_run(runs_t.c.outcome.in_(("ok", "budget")))

    def running_run(self) -> dict[str, Any] | None:
        """The account's newest sync_runs row still marked running (its pid and host), or None."""
        return self._newest_run(runs_t.c.outcome == "running")

    def _newest_run(self, condition) -> dict[str, Any] | None:
        query = (select(runs_t).where(condition, _same_account(self.account))
                 .order_by(runs_t.c.started_at.desc(), runs_t.c.id.desc()).limit(1))
        with self.engine.connect() as conn:
            row = conn.execute(query).mappings().first()
        return dict(row) if row is not None else None


def _same_account(account: str | None):
    return runs_t.c.account_id.is_(None) if account is None else runs_t.c.account_id == account


def _dimension_newer(old, new):
    """For objects nested in jobs: one without updated_at still fills in what it carries."""
    return or_(old.updated_at.is_(None), new.updated_at.is_(None), new.updated_at >= old.updated_at)


def _listed_newer(old, new):
    """SQL twin of decide_listed() for rows written concurrently by another run."""
    return or_(old.updated_at.is_(None), and_(new.updated_at.is_not(None), new.updated_at >= old.updated_at))


def upsert_catalog_rows(conn: Connection, table, records: Sequence[CatalogRecord], now: datetime, guard) -> None:
    """Rows grouped by the columns their object carried (an absent key is not written); the
    payload only for objects from a List endpoint."""
    groups: dict[tuple[str, ...], list[dict]] = {}
    for record in records:
        row = {"id": record.id, **record.columns, "last_synced_at": now}
        if record.payload_text is not None:
            row["payload"] = RawJSON(record.payload_text)
        groups.setdefault(tuple(row), []).append(row)
    for columns, rows in groups.items():
        update = [c for c in columns if c not in ("id", "updated_at")]
        update += ["updated_at"] if "updated_at" in columns else []   # the guard reads it: last (MySQL)
        dialect.upsert(conn, table, rows, keys=("id",), update=update, guard=guard)


def _summary_row(job: JobRecord) -> dict:
    s = job.log_summary
    return {"job_id": job.id, "log_id": s.id, "error_summary": s.error_summary,
            "action_items": list(s.action_items), "body": s.body, "created_at": s.created_at}


def disk_full(exc: BaseException) -> DiskFull:
    reason = str(getattr(exc, "orig", None) or exc).strip().splitlines()
    return DiskFull(f"the database has no room left (disk full or at its size limit: "
                    f"{reason[0][:200] if reason else type(exc).__name__}); stopped writing at once; "
                    "what was written before is kept: free space and run again")


def describe_error(exc: BaseException) -> str:
    """A short, value-free description of a database error for sync_errors."""
    if isinstance(exc, ArchiverError):
        return str(exc)
    if not isinstance(exc, SQLAlchemyError):
        return f"unexpected error: {type(exc).__name__}"
    orig = getattr(exc, "orig", None)
    name = type(orig).__name__ if orig is not None else type(exc).__name__
    return f"database error: {name}"
