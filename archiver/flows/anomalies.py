"""Anomaly verdicts in the archive: the newly finished jobs of each written batch, and re-scoring.

archiver.anomaly holds the rules (pure functions); this module feeds them from the archive and
stores what they say in job_anomalies. After each batch a sync or ingest commits, the jobs that
became terminal in it are scored against their package's earlier runs: only the tail the rules
read is loaded (LOOKBACK of runs before the first new job, at most HISTORY_CAP of them, plus the
last `window` successful runs before that for a package that runs less than daily), so the cost
grows with the new jobs, not with the archive. `rescore` replays every package's whole history
with anomaly.score_history (linear) after a threshold change.

A verdict is replaced whole: a job's verdicts are deleted and its new ones inserted in one
transaction, so scoring a job again (a re-score) is idempotent. An output is keyed by its
component name (the destination in the package, stable from run to run), else its name, else
its id; two outputs of one job with the same key count as one (their records summed).
"""

from __future__ import annotations

import bisect
import dataclasses
import logging
import math
from collections import Counter, defaultdict
from collections.abc import Iterable, Sequence
from datetime import datetime, timedelta

from sqlalchemy import Connection, and_, delete, or_, select

from archiver import anomaly, dialect, models
from archiver.anomaly import Run, Thresholds, Verdict
from archiver.config import Settings
from archiver.store import Archive
from archiver.utc import utcnow

log = logging.getLogger(__name__)

jobs_t = models.JobRow.__table__
outputs_t = models.JobOutputRow.__table__
anomalies_t = models.JobAnomalyRow.__table__
HISTORY_CAP = 5000   # earlier runs of a package loaded to score new jobs (a run every ~16 minutes for 8 weeks)
CHUNK = 1000         # ids per IN list
KEY_LENGTH = 255     # job_anomalies.output_key


def lookback(thresholds: Thresholds) -> timedelta:
    """How far back the rules look in time: the weekday factors' weeks (and their first day) or the
    flaky window, whichever is longer."""
    return max(timedelta(weeks=thresholds.weekday_weeks, days=1), timedelta(days=thresholds.flaky_days))


# -- reading runs ---------------------------------------------------------------------------------
def output_key(component_name: str | None, name: str | None, output_id: int) -> str:
    return (component_name or name or f"output {output_id}")[:KEY_LENGTH]


def job_columns():
    return (jobs_t.c.id, jobs_t.c.package_id, jobs_t.c.created_at, jobs_t.c.status,
            jobs_t.c.runtime_in_seconds, jobs_t.c.attempts)


def as_runs(conn: Connection, rows: Sequence) -> list[Run]:
    """Job rows (in time order: created_at, then id) as anomaly Runs, with their outputs."""
    outputs = read_outputs(conn, [r.id for r in rows])
    return [Run(r.id, r.package_id, r.created_at, r.status or "", r.runtime_in_seconds, r.attempts or 0,
                outputs.get(r.id, ())) for r in rows]


def in_time_order(query):
    return query.order_by(jobs_t.c.created_at, jobs_t.c.id)


def read_outputs(conn: Connection, ids: Sequence[int]) -> dict[int, tuple[tuple[str, int | None], ...]]:
    counts: dict[int, dict[str, int | None]] = defaultdict(dict)
    for start in range(0, len(ids), CHUNK):
        query = select(outputs_t.c.job_id, outputs_t.c.id, outputs_t.c.component_name, outputs_t.c.name,
                       outputs_t.c.records_count).where(dialect.in_ids(conn, outputs_t.c.job_id,
                                                                        ids[start:start + CHUNK]))
        for row in conn.execute(query):
            found = counts[row.job_id]
            key = output_key(row.component_name, row.name, row.id)
            held = found.get(key)
            found[key] = row.records_count if held is None else held + (row.records_count or 0)
    return {job_id: tuple(sorted(found.items())) for job_id, found in counts.items()}


def runs_of(conn: Connection, ids: Sequence[int]) -> list[Run]:
    """The scoreable jobs among `ids` (with a package and a created_at)."""
    rows = []
    for start in range(0, len(ids), CHUNK):
        rows += conn.execute(in_time_order(select(*job_columns()).where(
            dialect.in_ids(conn, jobs_t.c.id, ids[start:start + CHUNK]),
            jobs_t.c.package_id.is_not(None), jobs_t.c.created_at.is_not(None)))).all()
    return as_runs(conn, rows)


def histories_since(conn: Connection, since: dict[int, datetime], window: int) -> dict[int, list[Run]]:
    """For each package, its runs created from `since[package]` on (the newest HISTORY_CAP of
    them), plus its last `window` successful runs before that when those hold fewer (a package
    that runs less than daily): what the rules read for jobs created `lookback` after `since`.
    One query for all the packages (and one per package that runs less than daily)."""
    rows: dict[int, list] = defaultdict(list)
    packages = sorted(since)
    for start in range(0, len(packages), 100):
        part = packages[start:start + 100]
        query = select(*job_columns()).where(or_(*(and_(jobs_t.c.package_id == p, jobs_t.c.created_at >= since[p])
                                                   for p in part)))
        for row in conn.execute(in_time_order(query)):
            rows[row.package_id].append(row)
    for package_id in packages:
        found = rows[package_id] = rows[package_id][-HISTORY_CAP:]
        successes = sum(1 for r in found if r.status == anomaly.SUCCESS)
        if successes < window and len(found) < HISTORY_CAP:
            older = conn.execute(select(*job_columns()).where(
                jobs_t.c.package_id == package_id, jobs_t.c.created_at < since[package_id],
                jobs_t.c.status == anomaly.SUCCESS)
                .order_by(jobs_t.c.created_at.desc(), jobs_t.c.id.desc()).limit(window)).all()
            rows[package_id] = [*reversed(older), *found]
    every = [r for p in packages for r in rows[p]]
    runs = iter(as_runs(conn, every))
    return {p: [next(runs) for _ in rows[p]] for p in packages}


class PackageRuns:
    """One package's runs in time order, complete from `start` on (plus a few older successes)."""

    def __init__(self, start: datetime, runs: list[Run]):
        self.start, self.runs = start, runs
        self.keys = [time_key(r) for r in runs]
        self.where = {r.job_id: time_key(r) for r in runs}

    def put(self, run: Run) -> None:
        """Add or replace a run (a job written again: its status, runtime or outputs changed)."""
        old = self.where.get(run.job_id)
        if old is not None:
            i = bisect.bisect_left(self.keys, old)
            del self.keys[i], self.runs[i]
        key = self.where[run.job_id] = time_key(run)
        i = bisect.bisect_left(self.keys, key)
        self.keys.insert(i, key)
        self.runs.insert(i, run)

    def index(self, run: Run) -> int:
        return bisect.bisect_left(self.keys, time_key(run))


def time_key(run: Run) -> tuple[datetime, int]:
    return (run.created_at, run.job_id)


class Scorer:
    """Scores the newly finished jobs of each batch a run commits and stores their verdicts.

    Each job is scored against the runs of its package before it (never itself), loaded from the
    archive once per run and package (`lookback` before the oldest new job) and kept up to date
    with every job the run writes, so a first sync, where every job is new and a package's jobs
    come in many batches, reads each package's history once rather than once per batch."""

    def __init__(self, archive: Archive, thresholds: Thresholds = anomaly.DEFAULTS):
        self.archive, self.thresholds = archive, thresholds
        self.packages: dict[int, PackageRuns] = {}

    def batch(self, written: Sequence[int], finished: Sequence[int]) -> list[Verdict]:
        """`written`: every job the batch inserted or updated; `finished`: those that became terminal.
        One transaction after the batch's: a failure here never touches the jobs."""
        if not finished and not self.packages:
            return []
        try:
            return self.archive.transact(lambda conn: self._batch(conn, written, set(finished)))
        except BaseException:
            self.packages.clear()   # the kept runs may be half updated
            raise

    def _batch(self, conn: Connection, written: Sequence[int], finished: set[int]) -> list[Verdict]:
        fresh = runs_of(conn, written)
        for run in fresh:
            held = self.packages.get(run.package_id)
            if held is not None and run.created_at >= held.start:
                held.put(run)
        new: dict[int, list[Run]] = defaultdict(list)
        for run in fresh:
            if run.job_id in finished:
                new[run.package_id].append(run)
        self.load({p: runs[0].created_at - lookback(self.thresholds) for p, runs in new.items()}, conn)
        verdicts = [v for package_id, runs in sorted(new.items()) for v in self.score(package_id, runs)]
        replace_verdicts(conn, sorted(finished), verdicts, {r.job_id: r.created_at for r in fresh})
        return verdicts

    def load(self, since: dict[int, datetime], conn: Connection) -> None:
        """Load the packages whose kept runs do not reach back to `since` (or grew too long)."""
        missing = {p: moment for p, moment in since.items()
                   if (held := self.packages.get(p)) is None or held.start > moment
                   or len(held.runs) > 2 * HISTORY_CAP}
        for package_id, runs in histories_since(conn, missing, self.thresholds.window).items():
            self.packages[package_id] = PackageRuns(missing[package_id], runs)

    def score(self, package_id: int, new: list[Run]) -> list[Verdict]:
        held = self.packages[package_id]
        where = [(held.index(run), run) for run in new]
        indices = [i for i, run in where if i < len(held.runs) and held.runs[i].job_id == run.job_id]
        return anomaly.score_runs(held.runs, indices, self.thresholds)


# -- writing verdicts -----------------------------------------------------------------------------
def verdict_row(verdict: Verdict, created_at: datetime | None, now: datetime) -> dict:
    return {"job_id": verdict.job_id, "kind": verdict.kind, "output_key": (verdict.output_key or "")[:KEY_LENGTH],
            "package_id": verdict.package_id, "severity": verdict.severity, "score": finite(verdict.score),
            "baseline_median": finite(verdict.baseline_median), "mad": finite(verdict.mad), "n": verdict.n,
            "threshold": finite(verdict.threshold), "message": verdict.message,
            "job_created_at": created_at, "detected_at": now}


def finite(value: float | None) -> float | None:
    """NaN and infinities are not numbers every database stores: NULL."""
    return value if value is not None and math.isfinite(value) else None


def replace_verdicts(conn: Connection, job_ids: Sequence[int], verdicts: Iterable[Verdict],
                     created: dict[int, datetime | None]) -> None:
    """The verdicts of `job_ids`, replaced whole (deleted, then inserted in key order)."""
    ids = sorted(set(job_ids))
    for start in range(0, len(ids), CHUNK):
        conn.execute(delete(anomalies_t).where(dialect.in_ids(conn, anomalies_t.c.job_id, ids[start:start + CHUNK])))
    now = utcnow()
    rows = {(r["job_id"], r["kind"], r["output_key"]): r
            for r in (verdict_row(v, created.get(v.job_id), now) for v in verdicts)}
    dialect.insert_rows(conn, anomalies_t, [rows[k] for k in sorted(rows)])


# -- re-scoring the whole history -----------------------------------------------------------------
@dataclasses.dataclass
class RescoreResult:
    packages: int = 0
    jobs: int = 0
    kinds: Counter = dataclasses.field(default_factory=Counter)

    def lines(self) -> list[str]:
        counts = ", ".join(f"{kind} {self.kinds[kind]}" for kind in anomaly.KINDS)
        return [f"re-scored {self.jobs} jobs of {self.packages} packages: {sum(self.kinds.values())} verdicts "
                f"({counts})"]


def rescore(settings: Settings, thresholds: Thresholds = anomaly.DEFAULTS, package_id: int | None = None,
            wait: float = 0.0) -> RescoreResult:
    """Replace the stored verdicts of every package (or one) by those of its whole history under
    `thresholds`, package by package (one transaction each), under the account's run lock."""
    archive = Archive.open(settings.database_url, settings.account, create=False)
    result = RescoreResult()
    try:
        with archive.run_lock(wait):
            for pid in package_ids(archive, package_id):
                jobs, verdicts = archive.transact(lambda conn, pid=pid: rescore_package(conn, pid, thresholds))
                result.packages += 1
                result.jobs += jobs
                result.kinds.update(v.kind for v in verdicts)
    finally:
        archive.close()
    return result


def package_ids(archive: Archive, only: int | None) -> list[int]:
    query = select(jobs_t.c.package_id).where(jobs_t.c.package_id.is_not(None)).distinct()
    if only is not None:
        query = query.where(jobs_t.c.package_id == only)
    with archive.engine.connect() as conn:
        return sorted(conn.execute(query).scalars())


def rescore_package(conn: Connection, package_id: int, thresholds: Thresholds) -> tuple[int, list[Verdict]]:
    """One package's whole history scored anew; every verdict under its id replaced."""
    rows = conn.execute(in_time_order(select(*job_columns()).where(
        jobs_t.c.package_id == package_id, jobs_t.c.created_at.is_not(None)))).all()
    runs = as_runs(conn, rows)
    verdicts = anomaly.score_history(runs, thresholds)
    conn.execute(delete(anomalies_t).where(anomalies_t.c.package_id == package_id))
    replace_verdicts(conn, [r.job_id for r in runs], verdicts, {r.job_id: r.created_at for r in runs})
    return len(runs), verdicts
