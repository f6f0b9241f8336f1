"""Questions answered from the views: status counts, failures, runtimes and their trend.

The reports count what the job_runs view shows (its is_terminal, run_seconds, package filter),
read from `jobs` with the view's definitions, without the view's name joins, which SQLite
would run for every job; whole days come from daily_package_rollup, the table behind
daily_package_stats. Counts aggregate in SQL, one row per package, never one per job; runtime
percentiles merge the rollup's runtimes of whole days; on PostgreSQL without JIT
(dialect.report_session). Returns plain rows (dicts); the CLI formats them.
"""

from __future__ import annotations

import dataclasses
import re
import statistics
from collections import defaultdict
from datetime import date, datetime, time, timedelta, timezone
from typing import Any

from sqlalchemy import BigInteger, Double, Engine, Integer, String, Text, and_, column, func, select, table

from archiver import database, dialect
from archiver.errors import ConfigError
from archiver.flows.rollups import ERROR_DAYS, PACKAGE_DAYS, interpolate, of_package, runtimes_by_day, tally
from archiver.sqltypes import UTCDateTime

job_runs = table(
    "job_runs", column("job_id", BigInteger), column("package_id", BigInteger),
    column("package_name", Text), column("status", String), column("is_terminal", Integer),
    column("created_at", UTCDateTime), column("ended_at", UTCDateTime), column("run_seconds", BigInteger),
    column("queue_seconds", BigInteger), column("errors", Text), column("attempt", BigInteger),
)
job_anomalies = table(
    "job_anomalies", column("job_id", BigInteger), column("kind", String), column("output_key", String),
    column("package_id", BigInteger), column("severity", String), column("score", Double),
    column("baseline_median", Double), column("n", Integer), column("message", Text),
    column("job_created_at", UTCDateTime),
)
packages = table("packages", column("id", BigInteger), column("name", Text))
jobs = table("jobs", column("id", BigInteger), column("html_url", Text))


@dataclasses.dataclass(frozen=True)
class Period:
    start: datetime
    end: datetime

    @property
    def previous(self) -> "Period":
        return Period(self.start - (self.end - self.start), self.start)


def parse_span(text: str) -> timedelta | None:
    """`7d`, `24h`, `2w` as a timedelta; None when the text is not such a span."""
    match = re.fullmatch(r"\s*(\d+)\s*([hdw])\s*", text)
    if not match:
        return None
    return timedelta(hours=int(match.group(1)) * {"h": 1, "d": 24, "w": 24 * 7}[match.group(2)])


def parse_since(text: str, now: datetime | None = None) -> Period:
    """`7d`, `24h`, `2w` back from now, or a date/timestamp (`2026-11-01`)."""
    now = now or datetime.now(timezone.utc)
    span = parse_span(text)
    if span is not None:
        return Period(now - span, now)
    try:
        moment = datetime.fromisoformat(text.strip())
    except ValueError:
        raise ConfigError(f"--since {text!r}: use a span like 7d, 24h, 2w or a date like 2026-11-01") from None
    if isinstance(moment, date) and not isinstance(moment, datetime):
        moment = datetime.combine(moment, time())
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=timezone.utc)
    if moment >= now:
        raise ConfigError(f"--since {text!r} is in the future")
    return Period(moment.astimezone(timezone.utc), now)


def percentile(values: list[float], q: int) -> float | None:
    """The q-th percentile (1..99), linearly interpolated between the closest ranks; None when empty."""
    if len(values) < 2:
        return float(values[0]) if values else None
    return statistics.quantiles(values, n=100, method="inclusive")[q - 1]


def _label(row) -> str:
    return row.package_name or (f"package {row.package_id}" if row.package_id is not None else "(no package)")


def jobs_stored(engine: Engine) -> int:
    with engine.connect() as conn:
        return conn.execute(select(func.count()).select_from(job_runs)).scalar()


# The reports read job_runs' columns from `jobs` itself, with the view's definitions: SQLite does
# not drop the view's unused joins, and a report's counts need no names (fetched once, below).
runs = table("jobs", column("package_id", BigInteger), column("status", String), column("created_at", UTCDateTime))


def _labels(conn, ids) -> dict[Any, str]:
    """Each package id's label, as _label gives it from job_runs.package_name."""
    known = {i for i in ids if i is not None}
    names = dict(conn.execute(select(packages.c.id, packages.c.name).where(packages.c.id.in_(sorted(known))))
                 .all()) if known else {}
    return {i: names.get(i) or (f"package {i}" if i is not None else "(no package)") for i in ids}


def _created_in(start: datetime, end: datetime):
    return and_(runs.c.created_at >= start, runs.c.created_at < end)


def status_report(engine: Engine, period: Period, package: str | None = None,
                  limit: int | None = None) -> list[dict[str, Any]]:
    query = (select(runs.c.status, func.count().label("jobs")).where(_created_in(period.start, period.end))
             .group_by(runs.c.status))
    with engine.connect() as conn:
        dialect.report_session(conn)
        rows = conn.execute(of_package(query, runs.c.package_id, package)).all()
    total = sum(r.jobs for r in rows) or 1
    result = [{"status": r.status, "jobs": r.jobs, "share": round(r.jobs / total, 4)}
              for r in sorted(rows, key=lambda r: (-r.jobs, r.status or ""))]
    return result[:limit] if limit else result


def failures_report(engine: Engine, period: Period, package: str | None = None,
                    limit: int | None = None) -> list[dict[str, Any]]:
    """Per package: jobs, failed, failure rate (of finished jobs), last failure and its usual error
    (the most frequent jobs.error_signature: texts that differ only in numbers, ids or quoted
    values count as one). All from the daily rollups for whole days and from jobs for the
    partial days at the ends (flows/rollups.py): one row per package, day and signature at most."""
    with engine.connect() as conn:
        dialect.report_session(conn)
        totals = tally(conn, PACKAGE_DAYS, period.start, period.end, ("package_id",), ("jobs", "finished", "failed"),
                       package)
        causes = tally(conn, ERROR_DAYS, period.start, period.end, ("package_id", "signature"), ("jobs", "last"),
                       package)
        labels = _labels(conn, [key for (key,), t in totals.items() if t["failed"]])
    errors: dict[Any, dict[str, int]] = defaultdict(lambda: defaultdict(int))
    last_failed: dict[Any, datetime] = {}
    for (key, text), found in causes.items():
        errors[key][_error_text(text)] += found["jobs"]
        if found["last"] is not None and (key not in last_failed or found["last"] > last_failed[key]):
            last_failed[key] = found["last"]
    rows = []
    for (key,), t in totals.items():
        jobs_, finished, failed = t["jobs"], t["finished"], t["failed"]
        if not failed:
            continue
        usual = min(errors[key].items(), key=lambda item: (-item[1], item[0]))[0] if errors[key] else NO_ERROR_TEXT
        rows.append({"package_id": key, "package": labels[key], "jobs": jobs_, "finished": finished, "failed": failed,
                     "last_failed_at": last_failed.get(key),
                     "failure_rate": round(failed / finished, 4) if finished else None, "top_error": usual})
    rows.sort(key=lambda s: (-s["failed"], -(s["failure_rate"] or 0), s["package"]))
    return rows[:limit] if limit else rows


NO_ERROR_TEXT = "(no error text)"


def _error_text(signature: str | None) -> str:
    return (signature or "")[:120] or NO_ERROR_TEXT


def _runtime_percentiles(conn, period: Period, package: str | None) -> dict[tuple, dict[str, Any]]:
    """{(package_id, bucket): {n, p50, p95, max}} of finished runs; bucket 1: in the period,
    0: in the one before. The runtimes come from the daily rollup for whole days (a year of a
    million jobs is 25,000 short texts, where sorting the jobs' runtimes per package in SQL took
    seconds) and are merged here. Percentiles interpolate linearly between the closest ranks
    (what percentile() and PostgreSQL's percentile_cont compute)."""
    values: dict[tuple, list[int]] = defaultdict(list)
    for bucket, span in ((1, period), (0, period.previous)):
        for (key, _), runtimes in runtimes_by_day(conn, span.start, span.end, package).items():
            values[(key, bucket)].extend(runtimes)
    groups: dict[tuple, dict[str, Any]] = {}
    for key, found in values.items():
        found.sort()
        groups[key] = {"n": len(found), "p50": interpolate(found, 50), "p95": interpolate(found, 95), "max": found[-1]}
    return groups


def runtimes_report(engine: Engine, period: Period, package: str | None = None,
                    limit: int | None = None) -> list[dict[str, Any]]:
    """Per package: finished runs, p50/p95/max runtime and p50's trend against the previous period."""
    with engine.connect() as conn:
        dialect.report_session(conn)
        groups = _runtime_percentiles(conn, period, package)
        labels = _labels(conn, [key for key, bucket in groups if bucket == 1])
    rows = []
    for (key, bucket), g in groups.items():
        if bucket != 1:
            continue
        p50 = g["p50"]
        before = groups.get((key, 0), {}).get("p50")
        rows.append({"package_id": key, "package": labels[key], "runs": g["n"],
                     "p50_seconds": round(p50), "p95_seconds": round(g["p95"]), "max_seconds": round(g["max"]),
                     "previous_p50_seconds": round(before) if before is not None else None,
                     "p50_change": round((p50 - before) / before, 4) if before else None})
    rows.sort(key=lambda r: (-r["p50_seconds"], r["package"]))
    return rows[:limit] if limit else rows


def anomalies_report(engine: Engine, period: Period, package: str | None = None,
                     limit: int | None = None) -> list[dict[str, Any]]:
    """The stored anomaly verdicts on jobs created in the period, newest job first (job_anomalies,
    written by every sync and ingest; docs/anomalies.md)."""
    a = job_anomalies
    query = (select(a.c.job_id, a.c.package_id, packages.c.name.label("package_name"), a.c.kind, a.c.severity,
                    a.c.output_key, a.c.score, a.c.baseline_median, a.c.n, a.c.message, a.c.job_created_at,
                    jobs.c.html_url)
             .select_from(a.outerjoin(packages, packages.c.id == a.c.package_id)
                          .outerjoin(jobs, jobs.c.id == a.c.job_id))
             .where(a.c.job_created_at >= period.start, a.c.job_created_at < period.end)
             .order_by(a.c.job_created_at.desc(), a.c.job_id.desc(), a.c.kind, a.c.output_key))
    if package is not None:
        query = query.where(a.c.package_id == int(package) if package.isdigit()
                            else func.lower(packages.c.name).like(f"%{package.lower()}%"))
    if limit:
        query = query.limit(limit)
    with engine.connect() as conn:
        return [{"job_id": r.job_id, "package_id": r.package_id, "package": _label(r), "kind": r.kind,
                 "severity": r.severity, "output_key": r.output_key or None, "score": _round(r.score, 2),
                 "baseline": _round(r.baseline_median, 1), "n": r.n, "message": r.message,
                 "created_at": r.job_created_at, "html_url": r.html_url}
                for r in conn.execute(query)]


def _round(value: float | None, digits: int) -> float | None:
    return None if value is None else round(value, digits)


REPORTS = {"anomalies": anomalies_report, "failures": failures_report, "runtimes": runtimes_report,
           "status": status_report}
DOCUMENTS = {"html": "report.html"}   # reports written as one file (-o, default name): flows/report_html.py


def run_report(database_url: str, name: str, since: str, package: str | None = None,
               limit: int | None = None) -> list[dict[str, Any]]:
    """`archiver report NAME`: the rows of that report over an existing archive."""
    period = parse_since(since)
    engine = database.open_engine(database_url, create=False, read_only=True)  # never waits for a sync
    try:
        return REPORTS[name](engine, period, package, limit)
    finally:
        engine.dispose()
