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

import dataclasses
import logging
import math
from collections import Counter, defaultdict
from collections.abc import Iterable, Iterator, Sequence
from datetime import datetime, timedelta

from sqlalchemy import Connection, delete, select

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
    """Job rows as anomaly Runs in time order (created_at, then id), with their outputs."""
    outputs = read_outputs(conn, [r.id for r in rows])
    runs = [Run(r.id, r.package_id, r.created_at, r.status or "", r.runtime_in_seconds, r.attempts or 0,
                outputs.get(r.id, ())) for r in rows]
    return sorted(runs, key=lambda run: (run.created_at, run.job_id))


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


def new_runs(conn: Connection, ids: Sequence[int]) -> list[Run]:
    """The scoreable jobs among `ids`: with a package and a created_at."""
    rows = []
    for start in range(0, len(ids), CHUNK):
        rows += conn.execute(select(*job_columns()).where(
            dialect.in_ids(conn, jobs_t.c.id, ids[start:start + CHUNK]),
            jobs_t.c.package_id.is_not(None), jobs_t.c.created_at.is_not(None))).all()
    return as_runs(conn, rows)


def spans(runs: Sequence[Run], gap: timedelta) -> Iterator[list[Run]]:
    """One package's new runs (time order) cut where two are more than `gap` apart: the runs
    between two new ones are loaded whole, so a far older one gets a history of its own."""
    group: list[Run] = []
    for run in runs:
        if group and run.created_at - group[-1].created_at > gap:
            yield group
            group = []
        group.append(run)
    if group:
        yield group


def history_around(conn: Connection, package_id: int, start: datetime, end: datetime,
                   thresholds: Thresholds) -> list[Run]:
    """A package's runs from `lookback` before `start` (at most HISTORY_CAP of those) to `end`,
    plus the last `window` successful runs before that when the span holds fewer."""
    package = jobs_t.c.package_id == package_id
    since = start - lookback(thresholds)
    before = conn.execute(select(*job_columns()).where(
        package, jobs_t.c.created_at >= since, jobs_t.c.created_at < start)
        .order_by(jobs_t.c.created_at.desc(), jobs_t.c.id.desc()).limit(HISTORY_CAP)).all()
    during = conn.execute(select(*job_columns()).where(
        package, jobs_t.c.created_at >= start, jobs_t.c.created_at <= end)).all()
    successes = sum(1 for r in before if r.status == anomaly.SUCCESS)
    older = []
    if successes < thresholds.window and len(before) < HISTORY_CAP:
        older = conn.execute(select(*job_columns()).where(
            package, jobs_t.c.created_at < since, jobs_t.c.status == anomaly.SUCCESS)
            .order_by(jobs_t.c.created_at.desc(), jobs_t.c.id.desc()).limit(thresholds.window)).all()
    return as_runs(conn, [*older, *before, *during])


def score_new(conn: Connection, new: Sequence[Run], thresholds: Thresholds) -> list[Verdict]:
    """Each new run scored against the runs before it (never itself), package by package."""
    verdicts: list[Verdict] = []
    by_package: dict[int, list[Run]] = defaultdict(list)
    for run in new:
        by_package[run.package_id].append(run)
    for package_id, runs in sorted(by_package.items()):
        for group in spans(runs, lookback(thresholds)):
            history = history_around(conn, package_id, group[0].created_at, group[-1].created_at, thresholds)
            position = {run.job_id: i for i, run in enumerate(history)}
            for run in group:
                i = position.get(run.job_id)
                if i is not None:
                    verdicts += anomaly.score_run(history[i], history[:i], thresholds)
    return verdicts


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


def score_jobs(archive: Archive, job_ids: Sequence[int], thresholds: Thresholds = anomaly.DEFAULTS) -> list[Verdict]:
    """Score the jobs that newly finished in a committed batch and store their verdicts (one
    transaction, after the batch's: a failure here never touches the jobs)."""
    if not job_ids:
        return []

    def work(conn: Connection) -> list[Verdict]:
        new = new_runs(conn, job_ids)
        verdicts = score_new(conn, new, thresholds)
        replace_verdicts(conn, job_ids, verdicts, {run.job_id: run.created_at for run in new})
        return verdicts

    return archive.transact(work)


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
    rows = conn.execute(select(*job_columns()).where(jobs_t.c.package_id == package_id,
                                                     jobs_t.c.created_at.is_not(None))).all()
    runs = as_runs(conn, rows)
    verdicts = anomaly.score_history(runs, thresholds)
    conn.execute(delete(anomalies_t).where(anomalies_t.c.package_id == package_id))
    replace_verdicts(conn, [r.job_id for r in runs], verdicts, {r.job_id: r.created_at for r in runs})
    return len(runs), verdicts
