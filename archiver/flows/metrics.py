"""`archiver metrics`: the archive's health as Prometheus text for node_exporter's textfile collector.

Text exposition format 0.0.4: HELP and TYPE lines, no sample timestamps, base units
(seconds; points in time as Unix seconds named `_timestamp_seconds`), counters named
`_total`. Cardinality is bounded: per package 10 series, per schedule 2, plus a fixed
set for alerts, anomaly verdicts by kind and the archiver's own runs. No job id is ever a label. Names come from
the API, so they appear only in the `_info` series, terminal-safe (textsafe), cut to
MAX_LABEL_CHARS and escaped as the format says. Every other series carries ids only;
join names in with `* on(package_id) group_left(package) xplenty_package_info`.

Reads the archive like the reports do (a read-only connection: never waits for a sync).
The file is replaced atomically, so the collector never reads half of it.
"""

from __future__ import annotations

import dataclasses
import math
import os
import tempfile
from collections.abc import Iterable
from datetime import datetime, timedelta, timezone

from sqlalchemy import Engine, case, func, or_, select

from archiver import anomaly, database
from archiver.errors import ArchiverError, ConfigError
from archiver.flows.checkconfig import KINDS, SEVERITIES
from archiver.flows.report import parse_span
from archiver.models import AlertRow, CreatorRow, JobAnomalyRow, JobRow, PackageRow, ScheduleRow, SyncRunRow, UnscoredJobRow
from archiver.textsafe import safe_text
from archiver.utc import to_utc

FINAL_STATUSES = ("completed", "failed", "stopped")
QUANTILES = (50, 95)  # percent; the method is flows.report.percentile's (linear, "inclusive")
ALERT_KINDS, ALERT_SEVERITIES = KINDS, SEVERITIES   # every pair is emitted, 0 when none is open
SYNC_OUTCOMES = ("ok", "partial", "stopped", "deadline", "budget", "auth_failed", "failed",
                 "interrupted", "lost_lock", "abandoned")  # finished runs; `running` is not an end
MAX_LABEL_CHARS = 200
DEFAULT_WINDOW = "7d"

jobs, packages, schedules = JobRow.__table__, PackageRow.__table__, ScheduleRow.__table__
creators, alerts, sync_runs = CreatorRow.__table__, AlertRow.__table__, SyncRunRow.__table__
job_anomalies, unscored_jobs = JobAnomalyRow.__table__, UnscoredJobRow.__table__


@dataclasses.dataclass
class Family:
    """One metric: its HELP and TYPE lines and its samples ((labels, value), in order)."""

    name: str
    type: str
    help: str
    samples: list[tuple[str, dict[str, str], float | int]] = dataclasses.field(default_factory=list)

    def add(self, value: float | int, suffix: str = "", **labels: object) -> None:
        """A sample; `suffix` names a summary's _sum or _count sample."""
        self.samples.append((self.name + suffix, {k: str(v) for k, v in labels.items()}, value))


# -- the text format -----------------------------------------------------------------------------
def label_text(value: object) -> str:
    """An API text as a label value: terminal-safe, at most MAX_LABEL_CHARS characters."""
    text = safe_text("" if value is None else value)
    return text if len(text) <= MAX_LABEL_CHARS else text[:MAX_LABEL_CHARS - 1] + "…"


def escape_label_value(text: str) -> str:
    return text.replace("\\", "\\\\").replace("\"", "\\\"").replace("\n", "\\n")


def escape_help(text: str) -> str:
    return text.replace("\\", "\\\\").replace("\n", "\\n")


def format_value(value: float | int) -> str:
    """A number Prometheus parses: integers as digits, floats by repr, +Inf/-Inf/NaN by name."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise TypeError(f"not a sample value: {value!r}")
    if isinstance(value, int):
        return str(value)
    if math.isnan(value):
        return "NaN"
    if math.isinf(value):
        return "+Inf" if value > 0 else "-Inf"
    return repr(value)


def render(families: Iterable[Family]) -> str:
    lines = []
    for family in families:
        lines += [f"# HELP {family.name} {escape_help(family.help)}", f"# TYPE {family.name} {family.type}"]
        for name, labels, value in family.samples:
            inside = ",".join(f'{k}="{escape_label_value(v)}"' for k, v in labels.items())
            lines.append(f"{name}{{{inside}}} {format_value(value)}" if inside else f"{name} {format_value(value)}")
    return "\n".join(lines) + "\n"


# -- the figures -------------------------------------------------------------------------------------
def unix_seconds(moment: datetime) -> float:
    return to_utc(moment).timestamp()


def package_families(conn, window_start: datetime) -> list[Family]:
    """Per package: info (its name), last success, runs by final status, runtimes (a summary)."""
    info = Family("xplenty_package_info", "gauge", "Package names (value 1); join on package_id.")
    last = Family("xplenty_package_last_success_timestamp_seconds", "gauge",
                  "End of the package's newest completed job (Unix time). Absent: no completed job.")
    runs = Family("xplenty_package_runs_total", "counter",
                  "Jobs of the package that ended, by final status, over the whole archived history.")
    window_runs = Family("xplenty_package_window_completed_runs", "gauge",
                         "Completed jobs with a runtime created within the window the quantiles cover.")
    runtime = Family("xplenty_package_runtime_seconds", "summary",
                     "Runtime of completed jobs: quantiles over the window (xplenty_runtime_window_seconds; "
                     "linear between closest ranks, as statistics.quantiles method=inclusive; absent when "
                     "none), _sum and _count over the whole history.")
    names = dict(conn.execute(select(packages.c.id, packages.c.name)).all())
    ended = _ended_by_package(conn)
    quantiles, counts = _runtime_quantiles(conn, window_start)
    for package_id in sorted(set(names) | {p for p, _ in ended}):
        info.add(1, package_id=package_id, package=label_text(names.get(package_id)))
        completed = ended.get((package_id, "completed"), Ended())
        if completed.newest_end is not None:
            last.add(unix_seconds(completed.newest_end), package_id=package_id)
        for status in FINAL_STATUSES:
            runs.add(ended.get((package_id, status), Ended()).jobs, package_id=package_id, status=status)
        window_runs.add(counts.get(package_id, 0), package_id=package_id)
        for q in QUANTILES:
            if (package_id, q) in quantiles:
                runtime.add(quantiles[package_id, q], package_id=package_id, quantile=f"{q / 100:g}")
        runtime.add(completed.runtime_sum, suffix="_sum", package_id=package_id)
        runtime.add(completed.with_runtime, suffix="_count", package_id=package_id)
    return [info, last, runs, window_runs, runtime]


@dataclasses.dataclass(frozen=True)
class Ended:
    jobs: int = 0
    newest_end: datetime | None = None
    runtime_sum: int = 0
    with_runtime: int = 0


def _ended_by_package(conn) -> dict[tuple[int, str], Ended]:
    """(package_id, final status) -> its jobs, newest end and runtimes; one grouped query over the history."""
    seconds = jobs.c.runtime_in_seconds
    query = (select(jobs.c.package_id, jobs.c.status, func.count(), func.max(jobs.c.ended_at),
                    func.coalesce(func.sum(seconds), 0), func.count(seconds))
             .where(jobs.c.status.in_(FINAL_STATUSES), jobs.c.package_id.is_not(None))
             .group_by(jobs.c.package_id, jobs.c.status))
    return {(p, s): Ended(n, end, int(total), with_runtime)  # SUM is a Decimal on PostgreSQL and MySQL
            for p, s, n, end, total, with_runtime in conn.execute(query)}


def _runtime_quantiles(conn, window_start: datetime) -> tuple[dict[tuple[int, int], float], dict[int, int]]:
    """The database ranks each package's runtimes and returns only the two neighbours of each
    percentile's position (at most 4 rows per package); the interpolation is done here,
    exactly as statistics.quantiles(method="inclusive") does it, so the numbers agree."""
    ranked = (select(jobs.c.package_id, jobs.c.runtime_in_seconds.label("seconds"),
                     func.row_number().over(partition_by=jobs.c.package_id,
                                            order_by=jobs.c.runtime_in_seconds).label("ordinal"),
                     func.count().over(partition_by=jobs.c.package_id).label("n"))
              .where(jobs.c.status == "completed", jobs.c.runtime_in_seconds.is_not(None),
                     jobs.c.package_id.is_not(None), jobs.c.created_at >= window_start)
              .subquery())
    below = [(ranked.c.n - 1) * q // 100 + 1 for q in QUANTILES]  # 1-based rank at or below each position
    wanted = or_(*(ranked.c.ordinal == b for b in below), *(ranked.c.ordinal == b + 1 for b in below))
    rows = conn.execute(select(ranked.c.package_id, ranked.c.ordinal, ranked.c.n, ranked.c.seconds).where(wanted))
    ranks: dict[int, dict[int, int]] = {}
    counts: dict[int, int] = {}
    for package_id, rank, n, seconds in rows:
        ranks.setdefault(package_id, {})[rank] = seconds
        counts[package_id] = n
    quantiles = {(p, q): interpolate(ranks[p], counts[p], q) for p in ranks for q in QUANTILES}
    return quantiles, counts


def interpolate(by_rank: dict[int, int], n: int, q: int) -> float:
    """The q-th percentile of n sorted values given the ones at the ranks around it (1-based)."""
    position, delta = divmod((n - 1) * q, 100)
    low = by_rank[position + 1]
    high = by_rank.get(position + 2, low)
    return (low * (100 - delta) + high * delta) / 100


def schedule_families(conn) -> list[Family]:
    """Per schedule: info (name, status) and the end of its newest completed job."""
    info = Family("xplenty_schedule_info", "gauge", "Schedule names and status (value 1); join on schedule_id.")
    last = Family("xplenty_schedule_last_success_timestamp_seconds", "gauge",
                  "End of the newest completed job the schedule created (Unix time). Absent: none.")
    listed = {i: (name, status) for i, name, status in
              conn.execute(select(schedules.c.id, schedules.c.name, schedules.c.status))}
    display = dict(conn.execute(select(creators.c.id, creators.c.display_name)
                                .where(creators.c.type == "Schedule")).all())
    successes = dict(conn.execute(
        select(jobs.c.creator_id, func.max(jobs.c.ended_at))
        .where(jobs.c.creator_type == "Schedule", jobs.c.creator_id.is_not(None), jobs.c.status == "completed")
        .group_by(jobs.c.creator_id)).all())
    seen = set(conn.execute(select(jobs.c.creator_id).where(jobs.c.creator_type == "Schedule",
                                                             jobs.c.creator_id.is_not(None))
                            .distinct()).scalars())
    for schedule_id in sorted(set(listed) | seen):
        name, status = listed.get(schedule_id, (None, None))
        info.add(1, schedule_id=schedule_id, schedule=label_text(name or display.get(schedule_id)),
                 status=label_text(status))
        if successes.get(schedule_id) is not None:
            last.add(unix_seconds(successes[schedule_id]), schedule_id=schedule_id)
    return [info, last]


def alert_families(conn, now: datetime) -> list[Family]:
    """Open alerts of `archiver check` by kind and severity; every known pair is present (0 when none)."""
    open_ = Family("xplenty_alerts_open", "gauge",
                   "Open alerts of archiver check (not resolved), acknowledged included.")
    acked = Family("xplenty_alerts_acknowledged", "gauge",
                   "Open alerts silenced by archiver ack (silenced_until later than now).")
    silenced = case((alerts.c.silenced_until > now, 1), else_=0)
    query = (select(alerts.c.kind, alerts.c.severity, func.count(), func.sum(silenced))
             .where(alerts.c.resolved_at.is_(None)).group_by(alerts.c.kind, alerts.c.severity))
    found = {(k, s): (n, int(a)) for k, s, n, a in conn.execute(query)}
    pairs = [(k, s) for k in ALERT_KINDS for s in ALERT_SEVERITIES]
    pairs += sorted(set(found) - set(pairs), key=lambda p: (str(p[0]), str(p[1])))
    for kind, severity in pairs:
        n, a = found.get((kind, severity), (0, 0))
        open_.add(n, kind=label_text(kind), severity=label_text(severity))
        acked.add(a, kind=label_text(kind), severity=label_text(severity))
    return [open_, acked]


def anomaly_families(conn) -> list[Family]:
    """Verdicts of the anomaly rules by kind (every kind present, 0 when none): a count per
    kind, not per package, so the per-package budget stays at 10 series."""
    verdicts = Family("xplenty_anomalies_total", "counter",
                      "Anomaly verdicts stored in job_anomalies by kind, over the whole archived history "
                      "(a re-score rewrites them: read a drop as a counter reset).")
    found = dict(conn.execute(select(job_anomalies.c.kind, func.count()).group_by(job_anomalies.c.kind)).all())
    for kind in [*anomaly.KINDS, *sorted(set(found) - set(anomaly.KINDS), key=str)]:
        verdicts.add(found.get(kind, 0), kind=label_text(kind))
    waiting = Family("archiver_unscored_jobs", "gauge",
                     "Stored jobs whose anomaly verdicts are not stored yet (unscored_jobs): 0 after a run "
                     "that ended normally; a run killed while its worker scored leaves some for the next run.")
    waiting.add(conn.execute(select(func.count()).select_from(unscored_jobs)).scalar_one())
    return [verdicts, waiting]


def sync_families(conn) -> list[Family]:
    """The archiver's own runs: when one last ended ok, and how many ended each way."""
    last = Family("archiver_last_successful_sync_timestamp_seconds", "gauge",
                  "End of the newest archiver run with outcome ok (Unix time); 0: none yet, "
                  "so a staleness rule fires.")
    runs = Family("archiver_sync_runs_total", "counter",
                  "Finished archiver runs (sync_runs rows) by outcome, over the whole audit.")
    newest = conn.execute(select(func.max(sync_runs.c.finished_at)).where(sync_runs.c.outcome == "ok")).scalar()
    last.add(unix_seconds(newest) if newest is not None else 0)
    found = dict(conn.execute(select(sync_runs.c.outcome, func.count())
                              .where(sync_runs.c.outcome != "running").group_by(sync_runs.c.outcome)).all())
    for outcome in [*SYNC_OUTCOMES, *sorted(set(found) - set(SYNC_OUTCOMES))]:
        runs.add(found.get(outcome, 0), outcome=label_text(outcome))
    return [last, runs]


def collect(engine: Engine, window: timedelta, now: datetime | None = None) -> list[Family]:
    """Every family, read in one transaction (a consistent snapshot on the server databases)."""
    now = now or datetime.now(timezone.utc)
    window_family = Family("xplenty_runtime_window_seconds", "gauge",
                           "Length of the window the runtime percentiles cover.")
    window_family.add(window.total_seconds())
    with engine.connect() as conn, conn.begin():
        return [*package_families(conn, now - window), window_family, *schedule_families(conn),
                *alert_families(conn, now), *anomaly_families(conn), *sync_families(conn)]


def parse_window(text: str) -> timedelta:
    """`7d`, `24h`, `2w`: the span back from now that the runtime percentiles cover."""
    span = parse_span(text)
    if not span:
        raise ConfigError(f"--window {text!r}: use a span like 7d, 24h or 2w")
    return span


# -- the file ------------------------------------------------------------------------------------------
class MetricsFileError(ArchiverError):
    """The metrics file could not be written (exit 1; the old file, if any, is left whole)."""


def write_textfile(path: str, text: str) -> None:
    """Replace `path` with `text` atomically: a temporary file in the same folder (named so the
    textfile collector, which reads only *.prom, ignores it), flushed and fsynced, mode 0644,
    then os.replace. A reader sees the old file or the new one, never part of either."""
    folder = os.path.dirname(os.path.abspath(path))
    try:
        fd, temporary = tempfile.mkstemp(dir=folder, prefix=f".{os.path.basename(path)}.", suffix=".tmp")
    except OSError as exc:
        raise MetricsFileError(f"cannot write the metrics file {path}: {exc.strerror or exc}") from None
    try:
        with os.fdopen(fd, "wb") as out:
            out.write(text.encode("utf-8"))
            out.flush()
            os.fsync(out.fileno())
            os.fchmod(out.fileno(), 0o644)
        os.replace(temporary, path)
    except OSError as exc:
        _remove_quietly(temporary)
        raise MetricsFileError(f"cannot write the metrics file {path}: {exc.strerror or exc}") from None
    except BaseException:
        _remove_quietly(temporary)
        raise
    _sync_folder(folder)


def _remove_quietly(path: str) -> None:
    try:
        os.unlink(path)
    except OSError:
        pass


def _sync_folder(folder: str) -> None:
    """Make the rename itself durable (best effort: not every platform opens folders)."""
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def run_metrics(database_url: str, textfile: str | None = None, window: str = DEFAULT_WINDOW,
                now: datetime | None = None) -> str:
    """`archiver metrics`: the exposition text; written to `textfile` when given."""
    span = parse_window(window)
    engine = database.open_engine(database_url, create=False, read_only=True)  # never waits for a sync
    try:
        text = render(collect(engine, span, now))
    finally:
        engine.dispose()
    if textfile is not None:
        write_textfile(textfile, text)
    return text
