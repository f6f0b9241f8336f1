"""`archiver report html`: one self-contained HTML file with the health board, totals, trends and
failures of a period, readable offline, printable and attachable to an email.

The database does the counting (GROUP BY day and package, percentiles by window-function ranks
as in flows/metrics.py); Python only shapes the few hundred aggregate rows. Per-package charts
are capped (TOP_PACKAGES and friends) so 200 packages over 90 days stay well under 1.5 MB; the
report says how many it left out. The page is rendered by Mako (already installed with Alembic)
with every expression HTML-escaped by default (charts.shown), because job errors and names come
from the API and may hold markup or terminal escapes.
"""

from __future__ import annotations

import dataclasses
import re
import time
from collections import defaultdict
from datetime import date, datetime, timedelta
from pathlib import Path
from typing import Any

from mako.template import Template
from sqlalchemy import (BigInteger, Connection, Date, Engine, Integer, String, Text, and_, case, cast, column,
                        func, literal_column, or_, select, table)

from archiver import database
from archiver.flows import charts
from archiver.flows.checkconfig import load_config
from archiver.flows.health import Board, evaluate
from archiver.flows.metrics import interpolate
from archiver.flows.report import Period, _package_filter, parse_since
from archiver.models import JobOutputRow, JobRow, SyncRunRow
from archiver.sqltypes import UTCDateTime
from archiver.utc import utcnow

TEMPLATE = Path(__file__).with_name("report_html.mako")
TOP_PACKAGES = 8            # runtime charts
TOP_FAILING = 20            # rows of the failure-rate matrix
TOP_OUTPUTS = 8             # lines of the records chart
TOP_SIGNATURES = 25
EXAMPLES = 3                # example jobs per error signature
TOP_SCHEDULES = 20
LAST_SYNCS = 15
QUANTILES = (5, 50, 95)

job_runs = table(
    "job_runs", column("job_id", BigInteger), column("package_id", BigInteger), column("package_name", Text),
    column("status", String), column("is_terminal", Integer), column("created_at", UTCDateTime),
    column("run_seconds", BigInteger), column("day", Date), column("attempt", BigInteger),
)
job_failures = table(
    "job_failures", column("job_id", BigInteger), column("package_id", BigInteger), column("package_name", Text),
    column("failed_at", UTCDateTime), column("errors", Text),
)
schedule_attempts = table(
    "schedule_attempts", column("schedule_id", BigInteger), column("schedule_name", Text),
    column("package_id", BigInteger), column("package_name", Text), column("scheduled_at", UTCDateTime),
    column("attempts", BigInteger), column("outcome", String), column("last_job_id", BigInteger),
)
job_anomalies = table(
    "job_anomalies", column("job_id", BigInteger), column("kind", String), column("output_key", String),
    column("package_id", BigInteger), column("message", Text), column("job_created_at", UTCDateTime),
)
jobs, outputs, sync_runs = JobRow.__table__, JobOutputRow.__table__, SyncRunRow.__table__


@dataclasses.dataclass
class HtmlReport:
    path: Path
    bytes: int
    seconds: float


def write_html_report(database_url: str, output: Path, since: str = "90d", package: str | None = None,
                      now: datetime | None = None) -> HtmlReport:
    """Read the archive (read-only: never waits for a sync, records no alert) and write the page
    atomically (a reader never sees half a file)."""
    started = time.perf_counter()
    now = now or utcnow()
    period = parse_since(since, now)
    engine = database.open_engine(database_url, create=False, read_only=True)
    try:
        page = render(engine, period, package, now, since)
    finally:
        engine.dispose()
    data = page.encode("utf-8")
    partial = output.with_name(output.name + ".partial")
    partial.write_bytes(data)
    partial.replace(output)
    return HtmlReport(output, len(data), time.perf_counter() - started)


def render(engine: Engine, period: Period, package: str | None, now: datetime, since: str) -> str:
    board = evaluate(engine, load_config(None), now)
    with engine.connect() as conn:
        sections = gather(conn, period, package)
    template = Template(TEMPLATE.read_text(encoding="utf-8"), default_filters=["shown"], strict_undefined=True,
                        imports=["from archiver.flows.charts import shown"])
    return template.render(period=period, package=package, since=since, now=now, board=board_rows(board),
                           charts=charts, link=job_link, success_cell=success_cell, **sections)


def gather(conn: Connection, period: Period, package: str | None) -> dict[str, Any]:
    by_day = daily(conn, period, package)
    days = drawn_days(period, by_day)
    return {"days": days, "totals": totals(conn, period, package),
            "previous": totals(conn, period.previous, package), "daily": by_day,
            "failing": failing_packages(conn, period, package), "runtimes": runtimes(conn, period, package),
            "records": records(conn, period, package), "signatures": signatures(conn, period, package),
            "retries": retries(conn, period, package), "syncs": syncs(conn, period)}


def days_of(period: Period) -> list[date]:
    first, last = period.start.date(), (period.end - timedelta(microseconds=1)).date()
    return [first + timedelta(days=i) for i in range((last - first).days + 1)]


def drawn_days(period: Period, by_day: dict[date, Any]) -> list[date]:
    """The period's days from the first one with jobs: a young archive fills the width."""
    days = days_of(period)
    first = min(by_day, default=None)
    return [d for d in days if d >= first] if first else days


def in_period(col, period: Period):
    return and_(col >= period.start, col < period.end)


def count_if(condition):
    return func.sum(case((condition, 1), else_=0))


def share(part: int, whole: int) -> float | None:
    return part / whole if whole else None


# -- totals ---------------------------------------------------------------------------------------------
def totals(conn: Connection, period: Period, package: str | None) -> dict[str, Any]:
    r = job_runs.c
    query = _package_filter(select(func.count().label("jobs"), count_if(r.status == "completed").label("completed"),
                                   count_if(r.status == "failed").label("failed"),
                                   count_if(r.status == "stopped").label("stopped"),
                                   count_if(r.attempt > 0).label("retries"),
                                   func.sum(case((r.is_terminal == 1, r.run_seconds), else_=0)).label("run_seconds"))
                            .where(in_period(r.created_at, period)), job_runs, package)
    row = conn.execute(query).one()
    written = select(func.sum(outputs.c.records_count)).select_from(outputs.join(jobs, jobs.c.id == outputs.c.job_id))
    written = written.where(in_period(jobs.c.created_at, period))
    if package is not None:
        written = written.where(jobs.c.package_id.in_(_package_filter(select(job_runs.c.package_id), job_runs, package)))
    values = {key: int(getattr(row, key) or 0) for key in ("jobs", "completed", "failed", "stopped", "retries",
                                                          "run_seconds")}
    values["records"] = int(conn.execute(written).scalar() or 0)
    values["finished"] = values["completed"] + values["failed"] + values["stopped"]
    values["failure_rate"] = share(values["failed"], values["finished"])
    return values


# -- per day, per package -----------------------------------------------------------------------------------
def daily(conn: Connection, period: Period, package: str | None) -> dict[date, dict[str, int]]:
    r = job_runs.c
    query = _package_filter(select(r.day, func.count().label("jobs"), count_if(r.status == "completed").label("completed"),
                                   count_if(r.is_terminal == 1).label("finished"),
                                   count_if(r.status == "failed").label("failed"))
                            .where(in_period(r.created_at, period)).group_by(r.day), job_runs, package)
    return {row.day: {"jobs": row.jobs, "completed": int(row.completed), "finished": int(row.finished),
                      "failed": int(row.failed)} for row in conn.execute(query) if row.day is not None}


def success_cell(stats: dict[str, int]) -> tuple[float | None, str]:
    rate = share(stats["completed"], stats["finished"])
    shown_rate = f"{rate:.1%} succeeded" if rate is not None else "none finished"
    return rate, f"{stats['jobs']} jobs, {stats['failed']} failed, {shown_rate}"


def failing_packages(conn: Connection, period: Period, package: str | None) -> dict[str, Any]:
    """The packages with the most failures, with their success share per day."""
    r = job_runs.c
    per_package = _package_filter(select(r.package_id, func.max(r.package_name).label("name"),
                                         func.count().label("jobs"), count_if(r.is_terminal == 1).label("finished"),
                                         count_if(r.status == "failed").label("failed"))
                                  .where(in_period(r.created_at, period)).group_by(r.package_id), job_runs, package)
    ranked = sorted(conn.execute(per_package), key=lambda p: (-int(p.failed), -p.jobs, p.package_id or 0))
    failing = [p for p in ranked if p.failed]
    top = failing[:TOP_FAILING]
    ids = [p.package_id for p in top if p.package_id is not None]
    cells: dict[Any, dict[date, tuple]] = defaultdict(dict)
    if ids:
        query = (select(r.package_id, r.day, func.count().label("jobs"), count_if(r.status == "completed").label("completed"),
                        count_if(r.is_terminal == 1).label("finished"), count_if(r.status == "failed").label("failed"))
                 .where(in_period(r.created_at, period), r.package_id.in_(ids)).group_by(r.package_id, r.day))
        for row in conn.execute(query):
            stats = {"jobs": row.jobs, "completed": int(row.completed), "finished": int(row.finished),
                     "failed": int(row.failed)}
            cells[row.package_id][row.day] = success_cell(stats)
    rows = [{"package": label(p.name, p.package_id), "jobs": p.jobs, "failed": int(p.failed),
             "failure_rate": share(int(p.failed), int(p.finished)), "cells": cells.get(p.package_id, {})}
            for p in top]
    return {"rows": rows, "more": len(failing) - len(top), "packages": len(ranked)}


def label(name: str | None, package_id: int | None) -> str:
    return name or (f"package {package_id}" if package_id is not None else "(no package)")


# -- runtimes: p5 / p50 / p95 per package and day, ranked in SQL ------------------------------------------------
def runtimes(conn: Connection, period: Period, package: str | None) -> dict[str, Any]:
    r = job_runs.c
    finished = [r.status == "completed", r.run_seconds.is_not(None), r.package_id.is_not(None),
                in_period(r.created_at, period)]
    busiest = _package_filter(select(r.package_id, func.max(r.package_name).label("name"), func.count().label("runs"))
                              .where(*finished).group_by(r.package_id), job_runs, package)
    ranked = sorted(conn.execute(busiest), key=lambda p: (-p.runs, p.package_id))
    top = ranked[:TOP_PACKAGES]
    ids = [p.package_id for p in top]
    quantiles = daily_quantiles(conn, finished + [r.package_id.in_(ids)]) if ids else {}
    marks = slow_marks(conn, period, ids)
    series = [{"package": label(p.name, p.package_id), "runs": p.runs,
               "days": quantiles.get(p.package_id, {}), "marks": marks.get(p.package_id, [])} for p in top]
    return {"series": series, "more": len(ranked) - len(top)}


def daily_quantiles(conn: Connection, where: list) -> dict[int, dict[date, dict[int, float]]]:
    """{package: {day: {q: seconds}}}: the database numbers each package-day's runtimes and
    returns only the neighbours of each quantile's position (metrics.interpolate does the rest)."""
    r = job_runs.c
    partition = [r.package_id, r.day]
    inner = (select(r.package_id, r.day, r.run_seconds.label("seconds"),
                    func.row_number().over(partition_by=partition, order_by=r.run_seconds).label("ordinal"),
                    func.count().over(partition_by=partition).label("n"))
             .where(*where).subquery())
    below = [(inner.c.n - 1) * q // 100 + 1 for q in QUANTILES]
    wanted = or_(*(inner.c.ordinal == b for b in below), *(inner.c.ordinal == b + 1 for b in below))
    by_rank: dict[tuple, dict[int, int]] = defaultdict(dict)
    counts: dict[tuple, int] = {}
    for package_id, day, ordinal, n, seconds in conn.execute(
            select(inner.c.package_id, inner.c.day, inner.c.ordinal, inner.c.n, inner.c.seconds).where(wanted)):
        by_rank[(package_id, day)][ordinal] = seconds
        counts[(package_id, day)] = n
    result: dict[int, dict[date, dict[int, float]]] = defaultdict(dict)
    for (package_id, day), ranks in by_rank.items():
        result[package_id][day] = {q: interpolate(ranks, counts[(package_id, day)], q) for q in QUANTILES}
    return result


def slow_marks(conn: Connection, period: Period, package_ids: list[int]) -> dict[int, list[tuple]]:
    """The stored `slow` verdicts of those packages, at the job's day and runtime."""
    if not package_ids:
        return {}
    a = job_anomalies.c
    query = (select(a.package_id, a.job_id, a.message, a.job_created_at, jobs.c.runtime_in_seconds)
             .select_from(job_anomalies.join(jobs, jobs.c.id == a.job_id))
             .where(a.kind == "slow", a.package_id.in_(package_ids), in_period(a.job_created_at, period))
             .order_by(a.job_created_at))
    marks: dict[int, list[tuple]] = defaultdict(list)
    for row in conn.execute(query):
        marks[row.package_id].append((row.job_created_at.date(), float(row.runtime_in_seconds or 0),
                                      f"job {row.job_id}: {row.message}"))
    return marks


# -- records per output ---------------------------------------------------------------------------------------
def output_key():
    """As docs/anomalies.md keys an output: component name, else name, else `output <id>`."""
    return func.coalesce(outputs.c.component_name, outputs.c.name,
                         literal_column("'output '") + cast(outputs.c.id, String))


def records(conn: Connection, period: Period, package: str | None) -> dict[str, Any]:
    key = output_key()
    base = (select(jobs.c.package_id, key.label("output"), jobs.c.run_date.label("day"),
                   outputs.c.records_count.label("records"))
            .select_from(outputs.join(jobs, jobs.c.id == outputs.c.job_id))
            .where(in_period(jobs.c.created_at, period), jobs.c.status == "completed"))
    if package is not None:
        base = base.where(jobs.c.package_id.in_(_package_filter(select(job_runs.c.package_id), job_runs, package)))
    rows = base.subquery()
    per_output = (select(rows.c.package_id, rows.c.output, func.count().label("runs"),
                         func.sum(rows.c.records).label("records"))
                  .group_by(rows.c.package_id, rows.c.output))
    ranked = sorted(conn.execute(per_output), key=lambda o: (-o.runs, -int(o.records or 0), o.package_id or 0, o.output))
    top = ranked[:TOP_OUTPUTS]
    names = package_names(conn, {o.package_id for o in top})
    wanted = {(o.package_id, o.output) for o in top}
    per_day = (select(rows.c.package_id, rows.c.output, rows.c.day, func.sum(rows.c.records).label("records"))
               .where(rows.c.package_id.in_(list({p for p, _ in wanted})))   # not by output: MySQL collations differ
               .group_by(rows.c.package_id, rows.c.output, rows.c.day))
    values: dict[tuple, dict[date, float]] = defaultdict(dict)
    for row in conn.execute(per_day) if top else ():
        if (row.package_id, row.output) in wanted:
            values[(row.package_id, row.output)][row.day] = float(row.records or 0)
    marks = volume_marks(conn, period, [(o.package_id, o.output) for o in top], values)
    series = [{"name": f"{label(names.get(o.package_id), o.package_id)} → {o.output}", "runs": o.runs,
               "records": int(o.records or 0), "days": values.get((o.package_id, o.output), {})} for o in top]
    return {"series": series, "marks": marks, "more": len(ranked) - len(top)}


def package_names(conn: Connection, ids: set) -> dict[int, str]:
    known = [i for i in ids if i is not None]
    if not known:
        return {}
    p = table("packages", column("id", BigInteger), column("name", Text))
    return {row.id: row.name for row in conn.execute(select(p.c.id, p.c.name).where(p.c.id.in_(known)))}


def volume_marks(conn: Connection, period: Period, keys: list[tuple], values: dict) -> list[tuple]:
    """zero_records and volume_drop verdicts on the charted outputs, drawn on that day's point."""
    if not keys:
        return []
    a = job_anomalies.c
    query = (select(a.package_id, a.output_key, a.job_id, a.kind, a.message, a.job_created_at)
             .where(a.kind.in_(("zero_records", "volume_drop")), in_period(a.job_created_at, period),
                    or_(*(and_(a.package_id == p, a.output_key == o) for p, o in keys)))
             .order_by(a.job_created_at))
    return [(row.job_created_at.date(), values.get((row.package_id, row.output_key), {}).get(row.job_created_at.date(), 0.0),
             f"job {row.job_id} ({row.kind}): {row.message}") for row in conn.execute(query)]


# -- failures by error signature --------------------------------------------------------------------------------
MASKS = (
    (re.compile(r"'[^']*'|\"[^\"]*\"|`[^`]*`"), "'…'"),
    (re.compile(r"\b[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}\b", re.I), "<id>"),
    (re.compile(r"\b(?=[0-9a-f]*\d)[0-9a-f]{8,}\b", re.I), "<id>"),
    (re.compile(r"\d+(?:\.\d+)?"), "<n>"),
    (re.compile(r"\s+"), " "),
)


def signature(errors: str | None) -> str:
    """An error text with what varies from job to job masked: quoted values, ids, numbers."""
    text = (errors or "").strip()
    for pattern, mask in MASKS:
        text = pattern.sub(mask, text)
    return text[:300] or "(no error text)"


def signatures(conn: Connection, period: Period, package: str | None) -> dict[str, Any]:
    """The database groups the failures by their exact text; Python merges texts of one signature."""
    f = job_failures.c
    query = _package_filter(select(f.errors, f.package_id, func.max(f.package_name).label("name"),
                                   func.count().label("jobs"), func.min(f.failed_at).label("first"),
                                   func.max(f.failed_at).label("last"), func.max(f.job_id).label("example"))
                            .where(in_period(f.failed_at, period)).group_by(f.errors, f.package_id),
                            job_failures, package)
    merged: dict[str, dict[str, Any]] = {}
    for row in conn.execute(query):
        s = merged.setdefault(signature(row.errors), {"signature": signature(row.errors), "jobs": 0, "first": row.first,
                                                      "last": row.last, "packages": set(), "examples": []})
        s["jobs"] += row.jobs
        s["first"], s["last"] = min(s["first"], row.first), max(s["last"], row.last)
        s["packages"].add(label(row.name, row.package_id))
        s["examples"].append(row.example)
    ranked = sorted(merged.values(), key=lambda s: (-s["jobs"], s["signature"]))
    top = ranked[:TOP_SIGNATURES]
    for s in top:
        s["examples"] = sorted(s["examples"], reverse=True)[:EXAMPLES]
        s["packages"] = sorted(s["packages"])
    urls = job_urls(conn, [j for s in top for j in s["examples"]])
    for s in top:
        s["examples"] = [(j, urls.get(j)) for j in s["examples"]]
    return {"rows": top, "more": len(ranked) - len(top), "failed": sum(s["jobs"] for s in ranked)}


def job_urls(conn: Connection, ids: list[int]) -> dict[int, str | None]:
    if not ids:
        return {}
    return dict(conn.execute(select(jobs.c.id, jobs.c.html_url).where(jobs.c.id.in_(ids))).all())


def job_link(url: str | None) -> str | None:
    """A job's own web page, and only an http(s) one (an API text could say `javascript:`)."""
    return url if url and re.match(r"https?://[^\s\"'<>]+$", url) else None


# -- retries, syncs -------------------------------------------------------------------------------------------
def retries(conn: Connection, period: Period, package: str | None) -> dict[str, Any]:
    s = schedule_attempts.c
    query = _package_filter(select(s.schedule_id, func.max(s.schedule_name).label("schedule"), s.package_id,
                                   func.max(s.package_name).label("name"), func.count().label("runs"),
                                   count_if(s.attempts > 1).label("retried"),
                                   func.sum(s.attempts - 1).label("retries"),
                                   count_if(s.outcome == "recovered_on_retry").label("recovered"),
                                   count_if(s.outcome == "failed").label("failed"))
                            .where(in_period(s.scheduled_at, period)).group_by(s.schedule_id, s.package_id),
                            schedule_attempts, package)
    rows = [{"schedule": r.schedule or f"schedule {r.schedule_id}", "package": label(r.name, r.package_id),
             "runs": r.runs, "retried": int(r.retried), "retries": int(r.retries or 0),
             "recovered": int(r.recovered), "failed": int(r.failed)} for r in conn.execute(query)]
    total = {key: sum(r[key] for r in rows) for key in ("runs", "retried", "retries", "recovered", "failed")}
    shown_rows = sorted((r for r in rows if r["retried"] or r["failed"]),
                        key=lambda r: (-r["recovered"], -r["failed"], r["schedule"], r["package"]))
    return {"rows": shown_rows[:TOP_SCHEDULES], "more": max(len(shown_rows) - TOP_SCHEDULES, 0), "total": total}


def utc_day(conn: Connection, col):
    """The UTC calendar day of a timestamp (PostgreSQL's would be the session's zone)."""
    if conn.dialect.name == "postgresql":
        return cast(func.timezone(literal_column("'UTC'"), col), Date)
    return func.date(col, type_=Date)


def syncs(conn: Connection, period: Period) -> dict[str, Any]:
    r = sync_runs.c
    runs = select(utc_day(conn, r.started_at).label("day"), r.outcome, r.credits_used).where(
        in_period(r.started_at, period)).subquery()
    per_day = select(runs.c.day, func.count().label("runs"), func.sum(runs.c.credits_used).label("credits"),
                     count_if(runs.c.outcome.not_in(("ok", "running"))).label("not_ok")).group_by(runs.c.day)
    days = {row.day: {"runs": row.runs, "credits": int(row.credits or 0), "not_ok": int(row.not_ok)}
            for row in conn.execute(per_day)}
    outcomes = conn.execute(select(runs.c.outcome, func.count().label("runs"), func.sum(runs.c.credits_used).label("credits"))
                            .group_by(runs.c.outcome)).all()
    last = conn.execute(select(r.id, r.started_at, r.finished_at, r.mode, r.outcome, r.requested, r.inserted, r.updated,
                               r.failed, r.credits_used, r.message)
                        .where(in_period(r.started_at, period)).order_by(r.started_at.desc(), r.id.desc())
                        .limit(LAST_SYNCS)).all()
    return {"days": days, "last": last,
            "outcomes": sorted(((o.outcome, o.runs, int(o.credits or 0)) for o in outcomes), key=lambda o: -o[1])}


# -- the board --------------------------------------------------------------------------------------------------
def board_rows(board: Board) -> dict[str, Any]:
    """The health board's subjects, the troubled first."""
    order = {"failing": 0, "stale": 1, "late": 2, "stuck": 3, "anomalous": 4, "sync_failing": 0, "sync_stale": 1}
    subjects = sorted(board.subjects, key=lambda s: (order.get(s.state, 9), s.type != "archiver", s.label))
    orphans = [a for a in board.alerts if not any(a in s.alerts for s in board.subjects)]
    return {"checked_at": board.checked_at, "as_of": board.as_of, "subjects": subjects, "orphans": orphans,
            "alerts": len(board.alerts), "critical": sum(a.severity == "critical" for a in board.alerts)}
