"""Questions answered from the views: status counts, failures, runtimes and their trend.

Reads the same views BI tools read (job_runs, job_failures), so both agree.
Returns plain rows (dicts); the CLI formats them.
"""

from __future__ import annotations

import dataclasses
import re
import statistics
from collections import Counter, defaultdict
from datetime import date, datetime, time, timedelta, timezone
from typing import Any

from sqlalchemy import BigInteger, Double, Engine, Integer, String, Text, column, func, select, table

from archiver import database
from archiver.errors import ConfigError
from archiver.sqltypes import UTCDateTime

job_runs = table(
    "job_runs", column("job_id", BigInteger), column("package_id", BigInteger),
    column("package_name", Text), column("status", String), column("is_terminal", Integer),
    column("created_at", UTCDateTime), column("ended_at", UTCDateTime), column("run_seconds", BigInteger),
    column("queue_seconds", BigInteger), column("errors", Text), column("attempt", BigInteger),
)
job_failures = table(
    "job_failures", column("job_id", BigInteger), column("package_id", BigInteger),
    column("package_name", Text), column("failed_at", UTCDateTime), column("errors", Text),
    column("error_summary", Text), column("attempt", BigInteger),
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


def _package_filter(query, view, package: str | None):
    if package is None:
        return query
    if package.isdigit():
        return query.where(view.c.package_id == int(package))
    return query.where(func.lower(view.c.package_name).like(f"%{package.lower()}%"))


def _label(row) -> str:
    return row.package_name or (f"package {row.package_id}" if row.package_id is not None else "(no package)")


def jobs_stored(engine: Engine) -> int:
    with engine.connect() as conn:
        return conn.execute(select(func.count()).select_from(job_runs)).scalar()


def status_report(engine: Engine, period: Period, package: str | None = None,
                  limit: int | None = None) -> list[dict[str, Any]]:
    query = (select(job_runs.c.status, func.count().label("jobs"))
             .where(job_runs.c.created_at >= period.start, job_runs.c.created_at < period.end)
             .group_by(job_runs.c.status))
    with engine.connect() as conn:
        rows = conn.execute(_package_filter(query, job_runs, package)).all()
    total = sum(r.jobs for r in rows) or 1
    result = [{"status": r.status, "jobs": r.jobs, "share": round(r.jobs / total, 4)}
              for r in sorted(rows, key=lambda r: (-r.jobs, r.status or ""))]
    return result[:limit] if limit else result


def failures_report(engine: Engine, period: Period, package: str | None = None,
                    limit: int | None = None) -> list[dict[str, Any]]:
    """Per package: jobs, failed, failure rate (of finished jobs), last failure and its usual error."""
    query = (select(job_runs.c.package_id, job_runs.c.package_name, job_runs.c.status,
                    job_runs.c.is_terminal, job_runs.c.ended_at, job_runs.c.errors)
             .where(job_runs.c.created_at >= period.start, job_runs.c.created_at < period.end))
    stats: dict[Any, dict[str, Any]] = {}
    errors: dict[Any, Counter] = defaultdict(Counter)
    with engine.connect() as conn:
        for row in conn.execute(_package_filter(query, job_runs, package)):
            s = stats.setdefault(row.package_id, {"package_id": row.package_id, "package": _label(row),
                                                  "jobs": 0, "finished": 0, "failed": 0,
                                                  "last_failed_at": None})
            s["jobs"] += 1
            s["finished"] += row.is_terminal
            if row.status == "failed":
                s["failed"] += 1
                errors[row.package_id][(row.errors or "").strip()[:120] or "(no error text)"] += 1
                if row.ended_at and (s["last_failed_at"] is None or row.ended_at > s["last_failed_at"]):
                    s["last_failed_at"] = row.ended_at
    rows = []
    for key, s in stats.items():
        if not s["failed"]:
            continue
        s["failure_rate"] = round(s["failed"] / s["finished"], 4) if s["finished"] else None
        s["top_error"] = errors[key].most_common(1)[0][0]
        rows.append(s)
    rows.sort(key=lambda s: (-s["failed"], -(s["failure_rate"] or 0), s["package"]))
    return rows[:limit] if limit else rows


def runtimes_report(engine: Engine, period: Period, package: str | None = None,
                    limit: int | None = None) -> list[dict[str, Any]]:
    """Per package: finished runs, p50/p95/max runtime and p50's trend against the previous period."""
    earlier = period.previous
    query = (select(job_runs.c.package_id, job_runs.c.package_name, job_runs.c.created_at,
                    job_runs.c.run_seconds)
             .where(job_runs.c.is_terminal == 1, job_runs.c.run_seconds.is_not(None),
                    job_runs.c.created_at >= earlier.start, job_runs.c.created_at < period.end))
    now_runs: dict[Any, list[float]] = defaultdict(list)
    before_runs: dict[Any, list[float]] = defaultdict(list)
    labels: dict[Any, str] = {}
    with engine.connect() as conn:
        for row in conn.execute(_package_filter(query, job_runs, package)):
            labels[row.package_id] = _label(row)
            bucket = now_runs if row.created_at >= period.start else before_runs
            bucket[row.package_id].append(float(row.run_seconds))
    rows = []
    for key, runs in now_runs.items():
        p50, before = percentile(runs, 50), percentile(before_runs.get(key, []), 50)
        rows.append({"package_id": key, "package": labels[key], "runs": len(runs),
                     "p50_seconds": round(p50), "p95_seconds": round(percentile(runs, 95)),
                     "max_seconds": round(max(runs)),
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
