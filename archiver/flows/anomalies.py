"""Anomaly verdicts in the archive: the newly finished jobs of each written batch, and re-scoring.

archiver.anomaly holds the rules (pure functions); this module feeds them from the archive and
stores what they say in job_anomalies. In each batch a sync or ingest writes, the jobs that
became terminal in it are scored, in the batch's transaction (they and their verdicts commit
together), against their package's earlier runs (`Scorer`): only the tail the rules read is
loaded (`Want`: the newest RECENT_RUNS × window runs of the lookback before the first new job,
the flaky window only for a successful retry, the last `window` successes of a package that runs
less than daily), once per run and package, and kept up to date with what the run writes, so the
cost grows with the new jobs, not with the archive. A package none of whose new jobs succeeded
is not loaded (no verdict needs it), and the outputs of the earlier runs loaded are read only
for the runs some new job's baseline holds (`PackageRuns.pending`). `rescore` replays every
package's whole history with anomaly.score_history (linear) after a threshold change.

A verdict is replaced whole: a job's verdicts are deleted and its new ones inserted in one
transaction, so scoring a job again (a re-score) is idempotent. An output is keyed by its
component name (the destination in the package, stable from run to run), else its name, else
its id; two outputs of one job with the same key count as one (their records summed)."""

from __future__ import annotations

import bisect
import dataclasses
import functools
import logging
import math
import sys
from collections import Counter, defaultdict
from collections.abc import Iterable, Sequence
from typing import Any, NamedTuple
from datetime import date, datetime, time, timedelta, timezone

from sqlalchemy import Connection, delete, select

from archiver import anomaly, dialect, models
from archiver.anomaly import Run, Thresholds, Verdict
from archiver.config import Settings
from archiver.records import JobRecord
from archiver.sqltypes import utc_result
from archiver.store import Archive, newest_per_id
from archiver.utc import utcnow

log = logging.getLogger(__name__)

jobs_t = models.JobRow.__table__
outputs_t = models.JobOutputRow.__table__
anomalies_t = models.JobAnomalyRow.__table__
unscored_t = models.UnscoredJobRow.__table__
TRIM_AT = 0.25      # × RECENT_RUNS × window: runs of a package kept before the oldest are forgotten
TRIM_GROWTH = 1.25  # and this many times as many as the last trim kept
RECENT_RUNS = 8      # × window: the runs before a new job loaded for its baselines (past_of reads fewer)
CHUNK = 1000         # ids per IN list
KEY_LENGTH = 255     # job_anomalies.output_key


@functools.cache   # asked for each package of each batch
def lookback(thresholds: Thresholds) -> timedelta:
    """How far back the rules look in time: the weekday factors' weeks (and their first day) or the
    flaky window, whichever is longer."""
    return max(timedelta(weeks=thresholds.weekday_weeks, days=1), timedelta(days=thresholds.flaky_days))


# -- reading runs ---------------------------------------------------------------------------------
def output_key(component_name: str | None, name: str | None, output_id: int) -> str:
    """Interned: every kept run of a package names its outputs with the same few strings, held once
    (a first sync keeps tens of thousands of runs)."""
    return sys.intern((component_name or name or f"output {output_id}")[:KEY_LENGTH])


def job_columns():
    return (jobs_t.c.id, jobs_t.c.package_id, jobs_t.c.created_at, jobs_t.c.status,
            jobs_t.c.runtime_in_seconds, jobs_t.c.attempts)


def as_runs(conn: Connection, rows: Sequence, with_outputs=lambda row: True) -> list[Run]:
    """Job rows (in time order: created_at, then id) as anomaly Runs; only the successful ones
    with their outputs (the rules read the outputs of successful runs only), and of those only
    the rows `with_outputs` accepts (the others' outputs are read when a baseline needs them:
    `PackageRuns.pending`)."""
    outputs = read_outputs(conn, [r.id for r in rows if r.status == anomaly.SUCCESS and with_outputs(r)])
    return [Run(r.id, r.package_id, r.created_at, r.status or "", r.runtime_in_seconds, r.attempts or 0,
                outputs.get(r.id, ())) for r in rows]


def in_time_order(query):
    return query.order_by(jobs_t.c.created_at, jobs_t.c.id)


def read_outputs(conn: Connection, ids: Sequence[int]) -> dict[int, tuple[tuple[str, int | None], ...]]:
    counts: dict[int, dict[str, int | None]] = defaultdict(dict)
    columns = (outputs_t.c.job_id, outputs_t.c.id, outputs_t.c.component_name, outputs_t.c.name,
               outputs_t.c.records_count)
    for start in range(0, len(ids), CHUNK):
        for job_id, output_id, component_name, name, records in dialect.select_in(
                conn, columns, outputs_t.c.job_id, ids[start:start + CHUNK]):
            add_count(counts[job_id], output_key(component_name, name, output_id), records)
    return {job_id: tuple(sorted(found.items())) for job_id, found in counts.items()}


RUN_COLUMNS = ("package_id", "created_at", "status", "runtime_in_seconds", "attempts")


def add_count(counts: dict[str, int | None], key: str, records: int | None) -> None:
    """Two outputs of one job with the same key count as one, their records summed."""
    held = counts.get(key)
    counts[key] = records if held is None else held + (records or 0)


def run_of_record(job: JobRecord) -> Run | None:
    """A just-inserted job as the Run that reading it back would give (an absent key of a new row
    is NULL, absent outputs none); None when it has no package or no created_at (not scoreable)."""
    c = job.columns
    if c.get("package_id") is None or c.get("created_at") is None:
        return None
    counts: dict[str, int | None] = {}
    for o in job.outputs or ():
        add_count(counts, output_key(o.component_name, o.name, o.id), o.records_count)
    succeeded = c.get("status") == anomaly.SUCCESS
    return Run(job.id, c["package_id"], c["created_at"], c.get("status") or "", c.get("runtime_in_seconds"),
               c.get("attempts") or 0, tuple(sorted(counts.items())) if succeeded else ())


def written_runs(conn: Connection, written: Sequence[int], inserted: Iterable[int],
                 records: Sequence[JobRecord]) -> list[Run]:
    """The scoreable runs among the `written` jobs, in time order: a job the batch inserted is
    built from its record (the row holds exactly what the record carried); a job it updated is read
    back, since a key its payload left out kept the stored value."""
    new = set(inserted)
    by_id = {job.id: job for job in newest_per_id(records) if job.id in new}
    built = [run for job_id in written if job_id in by_id and (run := run_of_record(by_id[job_id])) is not None]
    read = runs_of(conn, [job_id for job_id in written if job_id not in by_id])
    return sorted(built + read, key=time_key)


def runs_of(conn: Connection, ids: Sequence[int]) -> list[Run]:
    """The scoreable jobs among `ids` (with a package and a created_at)."""
    rows = [JobRun._make(row) for start in range(0, len(ids), CHUNK)
            for row in dialect.select_in(conn, job_columns(), jobs_t.c.id, ids[start:start + CHUNK])
            if row[1] is not None and row[2] is not None]
    return as_runs(conn, sorted(rows, key=lambda r: (r.created_at, r.id)))


@dataclasses.dataclass(frozen=True)
class Want:
    """What to load of a package to score its new runs: every run from `first` (the oldest new
    one) on; before it, the newest `recent` runs back to `since` (the lookback); all runs back
    to `flaky_since` when a new run is a successful retry (None: none is)."""

    first: datetime
    since: datetime
    recent: int
    flaky_since: datetime | None
    weekdays: frozenset[int] = frozenset()   # of the new successful runs
    newest: datetime | None = None           # the newest new successful run
    weeks: int = 0                           # the weekday factors' weeks


def want(new: Sequence[Run], thresholds: Thresholds) -> Want:
    first = new[0].created_at
    retried = any(run.succeeded and run.attempts for run in new)
    succeeded = [run.created_at for run in new if run.succeeded]
    return Want(first, first - lookback(thresholds), RECENT_RUNS * thresholds.window,
                first - timedelta(days=thresholds.flaky_days) if retried else None,
                frozenset(moment.weekday() for moment in succeeded), max(succeeded, default=None),
                thresholds.weekday_weeks)


def histories(conn: Connection, wants: dict[int, Want], window: int) -> dict[int, tuple[list[Run], bool]]:
    """The runs each package's Want asks for, plus its last `window` successful runs before
    `since` when those found hold fewer (a package that runs less than daily). A few
    queries per package, each a bounded range of the (package_id, created_at) index: the cost of
    a package is the runs its baselines read, however long its history."""
    packages = sorted(wants)
    rows = {p: package_rows(conn, p, wants[p], window) for p in packages}
    ordered = {p: sorted(rows[p][0].values(), key=lambda r: (r.created_at, r.id)) for p in packages}
    runs = iter(as_runs(conn, [r for p in packages for r in ordered[p]],
                        lambda r: r.created_at >= wants[r.package_id].first))
    return {p: ([next(runs) for _ in ordered[p]], rows[p][1]) for p in packages}


def package_rows(conn: Connection, package_id: int, want: Want, window: int) -> tuple[dict[int, Any], bool]:
    """One package's rows by id, and whether they are only its own-weekday baselines' (`narrow`).
    Every run from `want.first` on; before it, `own_weekday_rows` when they suffice, else the
    successes among the newest `want.recent` runs back to `want.since` (all of those, and every
    run back to `flaky_since`, when a new run is a successful retry) and older successes to fill
    `window`."""
    found = {r.id: r for r in package_jobs(conn, package_id, "created_at >= ?", [want.first])}
    narrow = own_weekday_rows(conn, package_id, want, window)
    if narrow is not None:
        found.update((r.id, r) for r in narrow)
        return found, True
    recent = package_jobs(conn, package_id, "created_at >= ? AND created_at < ?", [want.since, want.first],
                          want.recent)
    if want.flaky_since is None:
        recent = [r for r in recent if r.status == anomaly.SUCCESS]
    else:
        recent += flaky_rows(conn, package_id, want)
    found.update((r.id, r) for r in recent)
    if sum(1 for r in recent if r.status == anomaly.SUCCESS) < window:
        found.update((r.id, r) for r in package_jobs(conn, package_id, "created_at < ? AND status = ?",
                                                      [want.since, anomaly.SUCCESS], window))
    return found, False


def own_weekday_rows(conn: Connection, package_id: int, want: Want, window: int) -> list | None:
    """What the baselines of the new runs read when each has `window` successes of its own weekday
    in the weekday weeks (a package that runs every few hours): for each weekday of the new
    successes, its newest `window` successes before `want.first` on that weekday, from the newest
    new run's cutoff on; the newest `window` successes before `want.first` (every run's `prior`);
    every run of the flaky window when one is wanted. None when some weekday has fewer: its
    baselines read every weekday (`anomaly.Timeline.past`), so the caller loads them all.

    Each new run's own group is then what the whole history gives: the newest `window` of its
    weekday before it, every one within its cutoff (the newest run's is the latest cutoff)."""
    if want.newest is None:
        return None
    before, values = "created_at < ? AND status = ?", [want.first, anomaly.SUCCESS]
    cutoff = datetime.combine(want.newest.date() - timedelta(weeks=want.weeks), time(), want.newest.tzinfo)
    rows = []
    for weekday in sorted(want.weekdays):
        starts = [datetime.combine(day, time(), cutoff.tzinfo)
                  for day in weekday_days(cutoff.date(), want.first.date(), weekday)]
        spans = " OR ".join(["(created_at >= ? AND created_at < ?)"] * len(starts))
        found = package_jobs(conn, package_id, f"{before} AND ({spans})",
                             [*values, *(m for start in starts for m in (start, start + timedelta(days=1)))],
                             window) if starts else []
        if len(found) < window:
            return None
        rows += found
    rows += package_jobs(conn, package_id, before, values, window)
    if want.flaky_since is not None:
        rows += flaky_rows(conn, package_id, want)
    return rows


def flaky_rows(conn: Connection, package_id: int, want: Want) -> list[JobRun]:
    return package_jobs(conn, package_id, "created_at >= ? AND created_at < ?", [want.flaky_since, want.first])


class JobRun(NamedTuple):
    """The columns of job_columns() of one job, read straight from the driver."""

    id: int
    package_id: int
    created_at: datetime
    status: str | None
    runtime_in_seconds: int | None
    attempts: int | None


def package_jobs(conn: Connection, package_id: int, where: str, values: Sequence, newest: int | None = None
                 ) -> list[JobRun]:
    """The jobs of one package matching `where` (SQL over the jobs table, `?` placeholders), only
    the `newest` that many when given. Straight on the driver (dialect.execute_positional): a later
    sync reads a few statements of history for each package it touches, and building them through
    SQLAlchemy cost more than the database spends running them (the texts vary with the weekdays)."""
    sql = f"SELECT {', '.join(c.name for c in job_columns())} FROM jobs WHERE package_id = ? AND {where}"
    if newest is not None:
        sql += f" ORDER BY created_at DESC, id DESC LIMIT {int(newest)}"
    return [JobRun(job_id, package, utc_result(created), status, runtime, attempts) for
            job_id, package, created, status, runtime, attempts in
            dialect.execute_positional(conn, sql, [package_id, *values])]


def weekday_days(start: date, end: date, weekday: int) -> list[date]:
    """The days from `start` to `end` (both included) that fall on `weekday`."""
    first = start + timedelta(days=(weekday - start.weekday()) % 7)
    return [first + timedelta(weeks=k) for k in range((end - first).days // 7 + 1)] if first <= end else []


class PackageRuns:
    """One package's runs in time order: the newest before `start` (at most RECENT_RUNS × window
    of them, and a few older successes), every one from `complete` on, and those written since;
    with the `anomaly.Timeline` of their samples, kept across the batches of a run, so that the
    baselines of each new job are a few bisections away, not a walk back over its past."""

    def __init__(self, start: datetime, complete: datetime, runs: list[Run], thresholds: Thresholds,
                 first: datetime | None = None, narrow: bool = False):
        self.start, self.complete, self.runs = start, complete, runs
        self.narrow = narrow   # only some weekdays before `first`: good for the Want it was loaded for
        self.thresholds = thresholds
        self.trimmed_size = 0
        self.keys = [time_key(r) for r in runs]
        self.where = {r.job_id: key for r, key in zip(runs, self.keys)}
        self.samples = {r.job_id: anomaly.sample(r) for r in runs}   # what the baselines read of each run
        # id(sample) -> job id: the successful runs before `first`, loaded without their outputs
        # (`fill` reads them when a baseline is about to read the sample: most never are)
        self.pending = {id(self.samples[r.job_id]): r.job_id for r in runs
                        if first is not None and r.succeeded and r.created_at < first}
        self.timeline = anomaly.Timeline(thresholds)
        for run in runs:
            self.timeline.add(self.where[run.job_id], self.samples[run.job_id])

    def trim(self, keep_since: datetime, window: int) -> None:
        """Forget the runs before `keep_since` but the newest `window` successes among them (the
        `prior` of a package that runs less than daily reaches back further): a first sync keeps
        a package's runs across all its batches, and its memory must not grow with the history.
        Done when the runs grew by a quarter since the last trim, so its cost per run stays
        constant; what the Timeline keeps is a suffix of its samples (every success from the
        oldest kept run on), so it only drops a prefix."""
        if len(self.runs) <= max(TRIM_GROWTH * self.trimmed_size, TRIM_AT * RECENT_RUNS * window):
            return
        cut = bisect.bisect_left(self.keys, moment_key(keep_since))
        if not cut:   # nothing to forget: a package whose kept runs all lie within the lookback
            self.trimmed_size = len(self.runs)
            return
        kept = [i for i in range(cut) if self.runs[i].succeeded][-window:] + list(range(cut, len(self.runs)))
        if kept:
            self.timeline.forget_before(self.keys[kept[0]])
        runs, keys = [self.runs[i] for i in kept], [self.keys[i] for i in kept]
        samples = {r.job_id: self.samples[r.job_id] for r in runs}
        self.pending = {key: job_id for key, job_id in self.pending.items() if job_id in samples}
        self.runs, self.keys, self.samples = runs, keys, samples
        self.where = {r.job_id: key for r, key in zip(runs, keys)}
        self.start, self.complete = max(self.start, keep_since), max(self.complete, keep_since)
        self.trimmed_size = len(self.runs)

    def put(self, run: Run) -> None:
        """Add or replace a run (a job written again: its status, runtime or outputs changed)."""
        old = self.where.get(run.job_id)
        if old is not None:
            self.pending.pop(id(self.samples[run.job_id]), None)
            self.timeline.discard(old, self.samples[run.job_id])
            i = bisect.bisect_left(self.keys, old)
            del self.keys[i], self.runs[i]
        key = self.where[run.job_id] = time_key(run)
        i = bisect.bisect_left(self.keys, key)
        self.keys.insert(i, key)
        self.runs.insert(i, run)
        self.samples[run.job_id] = anomaly.sample(run)
        self.timeline.add(key, self.samples[run.job_id])

    def past(self, run: Run) -> tuple[int, anomaly.Past] | None:
        """(index, Past) of a kept successful run (None: not kept, or not successful: no verdict)."""
        i = self.index(run)
        if i >= len(self.runs) or self.runs[i].job_id != run.job_id or not self.runs[i].succeeded:
            return None
        return i, self.timeline.past(self.keys[i], self.runs[i].created_at)

    def unread(self, past: anomaly.Past) -> dict[int, anomaly.Sample]:
        """The samples of `past` whose outputs are not read yet, by job id."""
        if not self.pending:
            return {}
        found = {}
        for group in (past.prior, *past.groups.values()):
            for s in group:
                job_id = self.pending.get(id(s))
                if job_id is not None:
                    found[job_id] = s
        return found

    def filled(self, job_ids: Iterable[int]) -> None:
        for job_id in job_ids:
            self.pending.pop(id(self.samples[job_id]), None)

    def covers(self, want: Want) -> bool:
        return not self.narrow and self.start <= want.since and (want.flaky_since is None or self.complete <= want.flaky_since)

    def index(self, run: Run) -> int:
        return bisect.bisect_left(self.keys, time_key(run))


EPOCH = datetime(1970, 1, 1, tzinfo=timezone.utc)
MICROSECOND = timedelta(microseconds=1)
JOB_IDS = 1 << 64   # job ids from -JOB_IDS to JOB_IDS - 1 keep their order within a microsecond


def time_key(run: Run) -> int:
    """(created_at, job_id) as one int in the same order: a first sync bisects the kept runs of
    its packages millions of times, and an int compares faster than a tuple holding a datetime."""
    return moment_key(run.created_at) + JOB_IDS + run.job_id


def moment_key(moment: datetime) -> int:
    """Below the key of every run created at `moment` or later, above every earlier one's (a
    naive datetime is UTC, as the archive stores it)."""
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=timezone.utc)
    return (moment - EPOCH) // MICROSECOND * (2 * JOB_IDS)


class Scorer:
    """Scores the newly finished jobs of each batch a run writes and stores their verdicts.

    Each job is scored against the runs of its package before it (never itself), loaded from the
    archive once per run and package (`Want`) and kept up to date
    with every job the run writes, so a first sync, where every job is new and a package's jobs
    come in many batches, reads each package's history once rather than once per batch."""

    def __init__(self, archive: Archive, thresholds: Thresholds = anomaly.DEFAULTS):
        self.archive, self.thresholds = archive, thresholds
        self.packages: dict[int, PackageRuns] = {}

    def batch(self, conn: Connection, written: Sequence[int], finished: Sequence[int], inserted: Sequence[int] = (),
              records: Sequence[JobRecord] = ()) -> list[Verdict]:
        """`written`: every job the batch inserted or updated; `finished`: those that became terminal;
        `inserted` (of `written`) with their `records`: built from the records, not read back.
        In the batch's own transaction (`conn`), so that its jobs and their verdicts commit together
        (Run.write puts it under a savepoint: a failure here never touches the jobs)."""
        if not finished and not self.packages:
            return []
        try:
            scored = self.score(conn, written_runs(conn, written, inserted, records), finished, inserted)
            store_scored(conn, scored)
            return scored.verdicts
        except BaseException:
            self.forget()   # the kept runs may be half updated
            raise

    def forget(self) -> None:
        """Drop the kept runs: the next batch loads what it needs from the archive again (after a
        failed scoring, or a write that did not commit: its runs may be kept already)."""
        self.packages.clear()

    def score(self, conn: Connection, fresh: Sequence[Run], finished: Iterable[int], inserted: Iterable[int]
              ) -> "Scored":
        """The verdicts on the `finished` jobs among the `fresh` runs a batch wrote (written_runs),
        to store with store_scored; `conn` is only read (the history of their packages). A second
        process calls this on runs the writing process sent it (flows.scoring)."""
        try:
            return self._score(conn, fresh, set(finished), set(inserted))
        except BaseException:
            self.forget()
            raise

    def _score(self, conn: Connection, fresh: Sequence[Run], finished: set[int], inserted: set[int]) -> "Scored":
        for run in fresh:
            held = self.packages.get(run.package_id)
            if held is not None and run.created_at >= held.start:
                held.put(run)
        new: dict[int, list[Run]] = defaultdict(list)
        for run in fresh:
            if run.job_id in finished:
                new[run.package_id].append(run)
        # a job that did not succeed has no verdict: its package's history is not needed for it
        scored = {p: runs for p, runs in new.items() if any(run.succeeded for run in runs)}
        self.load({p: want(runs, self.thresholds) for p, runs in scored.items()}, conn)
        verdicts = self.score_all(conn, scored)
        for package_id, runs in scored.items():
            newest = max(run.created_at for run in runs)
            self.packages[package_id].trim(newest - lookback(self.thresholds), self.thresholds.window)
        # a job this batch inserted has no verdict to replace (job_anomalies rows need their job)
        with_verdicts = {v.job_id for v in verdicts}
        return Scored(verdicts, sorted(finished.difference(inserted)),
                      {r.job_id: r.created_at for r in fresh if r.job_id in with_verdicts}, sorted(finished))

    def load(self, wants: dict[int, Want], conn: Connection) -> None:
        """Load the packages whose kept runs do not reach back far enough (or grew too long)."""
        missing = {p: w for p, w in wants.items() if (held := self.packages.get(p)) is None
                   or not held.covers(w)}
        for package_id, (runs, narrow) in histories(conn, missing, self.thresholds.window).items():
            w = missing[package_id]
            self.packages[package_id] = PackageRuns(w.since, w.flaky_since or w.first, runs, self.thresholds,
                                                    w.first, narrow)

    def score_all(self, conn: Connection, new: dict[int, list[Run]]) -> list[Verdict]:
        """The verdicts on the new runs of each package: first every run's Past, then the outputs
        of the loaded runs those Pasts hold (one read for all), then the rules."""
        pasts, unread = [], {}
        for package_id, runs in sorted(new.items()):
            held = self.packages[package_id]
            for run in sorted(runs, key=time_key):
                found = held.past(run)
                if found is not None:
                    pasts.append((held, *found))
                    unread.setdefault(package_id, {}).update(held.unread(found[1]))
        ids = sorted(job_id for found in unread.values() for job_id in found)
        if ids:
            outputs = read_outputs(conn, ids)
            for package_id, found in unread.items():
                fill(found, outputs)
                self.packages[package_id].filled(found)
        return [v for held, i, past in pasts for v in anomaly.score_at(held.runs, i, past, self.thresholds)]


def fill(samples: dict[int, anomaly.Sample], outputs: dict[int, tuple[tuple[str, int | None], ...]]) -> None:
    """Complete samples made of runs loaded without outputs with their outputs, in place (as
    anomaly.sample would have made them; their runtime is in already)."""
    for job_id, s in samples.items():
        found = outputs.get(job_id, ())
        s.counts.update(found)
        s.logs.update((key, math.log1p(count)) for key, count in found if count is not None)


# -- writing verdicts -----------------------------------------------------------------------------
@dataclasses.dataclass(frozen=True)
class Scored:
    """What scoring a batch's newly finished jobs decided, to store in one transaction."""

    verdicts: list[Verdict]
    replace: list[int]                      # finished jobs that may hold verdicts already: theirs go
    created: dict[int, datetime]            # created_at of the scored jobs (job_anomalies.job_created_at)
    finished: list[int]                     # every job scored: taken off unscored_jobs


def store_scored(conn: Connection, scored: Scored, listed: bool = False) -> None:
    """Store a batch's verdicts; with `listed`, its jobs were in unscored_jobs: taken off."""
    replace_verdicts(conn, scored.replace, scored.verdicts, scored.created)
    if listed:
        for start in range(0, len(scored.finished), CHUNK):
            conn.execute(delete(unscored_t).where(
                dialect.in_ids(conn, unscored_t.c.job_id, scored.finished[start:start + CHUNK])))


def list_unscored(conn: Connection, job_ids: Sequence[int], run_id: int | None) -> None:
    """Mark jobs as finished but not scored yet, in the transaction that writes them. Each is
    new to the list (a listed job is terminal, and a terminal job never finishes again), so
    PostgreSQL COPies them straight in; should one be there after all, the insert fails and the
    caller records the batch's scoring as failed (`archiver anomalies --rescore` scores it)."""
    dialect.upsert(conn, unscored_t, [{"job_id": job_id, "run_id": run_id} for job_id in sorted(set(job_ids))],
                   keys=["job_id"], update=(), expect_new=True)


def unscored(conn: Connection, limit: int) -> list[int]:
    return list(conn.execute(select(unscored_t.c.job_id).order_by(unscored_t.c.job_id).limit(limit)).scalars())


def score_unscored(archive: Archive, scorer: "Scorer", batch: int = 2000) -> int:
    """Score the jobs unscored_jobs lists (a run killed while a second process scored its batches,
    or one whose scoring process failed), a batch at a time, each batch's verdicts stored and its
    jobs taken off in one transaction. Returns how many jobs were scored."""
    scorer.forget()   # what it kept may predate jobs another process scored
    done = 0
    while True:
        def work(conn: Connection) -> int:
            ids = unscored(conn, batch)
            if ids:
                scored = scorer.score(conn, runs_of(conn, ids), ids, ())
                store_scored(conn, scored, listed=True)
            return len(ids)

        found = archive.transact(work)
        done += found
        if found < batch:
            return done


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
    """The stored verdicts of `job_ids` deleted, then `verdicts` inserted in key order (the
    verdicts of jobs just inserted need no delete: they cannot have any yet)."""
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
    conn.execute(delete(unscored_t).where(unscored_t.c.job_id.in_(
        select(jobs_t.c.id).where(jobs_t.c.package_id == package_id).scalar_subquery())))
    replace_verdicts(conn, [r.job_id for r in runs], verdicts, {r.job_id: r.created_at for r in runs})
    return len(runs), verdicts
