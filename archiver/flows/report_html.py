"""`archiver report html`: one self-contained HTML file with the health board, totals, trends and
failures of a period, readable offline, printable and attachable to an email.

Every section reads the daily rollups every write keeps (flows/rollups.py: whole days from
daily_package_rollup, daily_output_rollup, daily_error_rollup and daily_schedule_rollup, the
partial days at the period's ends from the jobs themselves), so a year of a million jobs is tens
of thousands of rows; Python only shapes the aggregates. Per-package charts
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
from sqlalchemy import (BigInteger, Connection, Engine, String, Text, and_, case, column, func, or_, select,
                        table)

from archiver import database, dialect
from archiver.flows import charts, rollups
from archiver.flows.checkconfig import load_config
from archiver.flows.health import Board, evaluate
from archiver.flows.report import Period, parse_since
from archiver.models import JobRow, SyncRunRow
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

job_anomalies = table(
    "job_anomalies", column("job_id", BigInteger), column("kind", String), column("output_key", String),
    column("package_id", BigInteger), column("message", Text), column("job_created_at", UTCDateTime),
)
jobs, sync_runs = JobRow.__table__, SyncRunRow.__table__


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
    dialect.report_session(conn)
    by_day = daily(conn, period, package)
    days = drawn_days(period, by_day)
    per_package = package_sums(conn, period, package)
    return {"days": days, "totals": totals(conn, period, package),
            "previous": totals(conn, period.previous, package), "daily": by_day,
            "failing": failing_packages(conn, period, package, per_package),
            "runtimes": runtimes(conn, period, per_package), "records": records(conn, period, package),
            "signatures": signatures(conn, period, package), "retries": retries(conn, period, package),
            "syncs": syncs(conn, period)}


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


def sums(conn: Connection, source: rollups.Source, period: Period, by: tuple[str, ...], measures: tuple[str, ...],
         package: str | None = None, only: dict[str, list] | None = None) -> dict[tuple, dict[str, Any]]:
    """The period's jobs (or scheduled runs) counted from the rollups (whole days) and
    themselves (the partial days)."""
    return rollups.tally(conn, source, period.start, period.end, by, measures, package, only)


# -- totals ---------------------------------------------------------------------------------------------
TOTALS = ("jobs", "completed", "failed", "stopped", "retries", "run_seconds")


def totals(conn: Connection, period: Period, package: str | None) -> dict[str, Any]:
    values = sums(conn, rollups.PACKAGE_DAYS, period, (), TOTALS, package).get((), dict.fromkeys(TOTALS, 0))
    written = sums(conn, rollups.OUTPUT_DAYS, period, (), ("records",), package).get((), {"records": 0})
    values = {**values, "records": written["records"]}
    values["finished"] = values["completed"] + values["failed"] + values["stopped"]
    values["failure_rate"] = share(values["failed"], values["finished"])
    return values


# -- per day, per package -----------------------------------------------------------------------------------
DAY_COUNTS = ("jobs", "completed", "finished", "failed")


def daily(conn: Connection, period: Period, package: str | None) -> dict[date, dict[str, int]]:
    found = sums(conn, rollups.PACKAGE_DAYS, period, ("day",), DAY_COUNTS, package)
    return {day: counts for (day,), counts in found.items() if day is not None}


def success_cell(stats: dict[str, int]) -> tuple[float | None, str]:
    rate = share(stats["completed"], stats["finished"])
    shown_rate = f"{rate:.1%} succeeded" if rate is not None else "none finished"
    return rate, f"{stats['jobs']} jobs, {stats['failed']} failed, {shown_rate}"


def package_sums(conn: Connection, period: Period, package: str | None) -> dict[Any, dict[str, int]]:
    """{package_id: jobs, finished, failed} of the period."""
    found = sums(conn, rollups.PACKAGE_DAYS, period, ("package_id",), ("jobs", "finished", "failed"), package)
    return {package_id: counts for (package_id,), counts in found.items()}


def failing_packages(conn: Connection, period: Period, package: str | None,
                     per_package: dict[Any, dict[str, int]]) -> dict[str, Any]:
    """The packages with the most failures, with their success share per day."""
    ranked = sorted(per_package.items(), key=lambda p: (-p[1]["failed"], -p[1]["jobs"], p[0] or 0))
    failing = [(key, counts) for key, counts in ranked if counts["failed"]]
    top = failing[:TOP_FAILING]
    ids = [key for key, _ in top if key is not None]
    cells: dict[Any, dict[date, tuple]] = defaultdict(dict)
    if ids:
        for (package_id, day), stats in sums(conn, rollups.PACKAGE_DAYS, period, ("package_id", "day"), DAY_COUNTS,
                                              only={"package_id": ids}).items():
            cells[package_id][day] = success_cell(stats)
    names = package_names(conn, {key for key, _ in top})
    rows = [{"package": label(names.get(key), key), "jobs": counts["jobs"], "failed": counts["failed"],
             "failure_rate": share(counts["failed"], counts["finished"]), "cells": cells.get(key, {})}
            for key, counts in top]
    return {"rows": rows, "more": len(failing) - len(top), "packages": len(ranked)}


def label(name: str | None, package_id: int | None) -> str:
    return name or (f"package {package_id}" if package_id is not None else "(no package)")


# -- runtimes: p5 / p50 / p95 per package and day ---------------------------------------------------------------
def runtimes(conn: Connection, period: Period, per_package: dict[Any, dict[str, int]]) -> dict[str, Any]:
    """The packages with the most finished runs (the runs `report runtimes` ranks), with the
    quantiles of each day's runtimes (whole days from the rollup's runtimes)."""
    ranked = sorted(((key, counts["finished"]) for key, counts in per_package.items()
                     if key is not None and counts["finished"]), key=lambda p: (-p[1], p[0]))
    top = ranked[:TOP_PACKAGES]
    ids = [key for key, _ in top]
    quantiles: dict[Any, dict[date, dict[int, float]]] = defaultdict(dict)
    if ids:
        for (package_id, day), found in rollups.runtimes_by_day(conn, period.start, period.end,
                                                                package_ids=ids).items():
            found.sort()
            quantiles[package_id][day] = {q: rollups.interpolate(found, q) for q in QUANTILES}
    marks = slow_marks(conn, period, ids)
    names = package_names(conn, set(ids))
    series = [{"package": label(names.get(key), key), "runs": runs, "days": quantiles.get(key, {}),
               "marks": marks.get(key, [])} for key, runs in top]
    return {"series": series, "more": len(ranked) - len(top)}


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
def records(conn: Connection, period: Period, package: str | None) -> dict[str, Any]:
    """The outputs completed jobs wrote to most often, with the records of each day."""
    measures = ("completed", "completed_records")
    per_output = sums(conn, rollups.OUTPUT_DAYS, period, ("package_id", "output"), measures, package)
    ranked = sorted(((key, counts) for key, counts in per_output.items() if counts["completed"]),
                    key=lambda o: (-o[1]["completed"], -o[1]["completed_records"], o[0][0] or 0, o[0][1]))
    top = ranked[:TOP_OUTPUTS]
    names = package_names(conn, {package_id for (package_id, _), _ in top})
    wanted = {key for key, _ in top}
    values: dict[tuple, dict[date, float]] = defaultdict(dict)
    if top:   # by package, not by output: MySQL collations differ
        ids = list({package_id for package_id, _ in wanted})
        per_day = sums(conn, rollups.OUTPUT_DAYS, period, ("package_id", "output", "day"), measures,
                       only={"package_id": ids})
        for (package_id, output, day), counts in per_day.items():
            if (package_id, output) in wanted and counts["completed"]:
                values[(package_id, output)][day] = float(counts["completed_records"])
    marks = volume_marks(conn, period, [key for key, _ in top], values)
    series = [{"name": f"{label(names.get(package_id), package_id)} → {output}", "runs": counts["completed"],
               "records": counts["completed_records"], "days": values.get((package_id, output), {})}
              for (package_id, output), counts in top]
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
NO_TEXT = "(no error text)"


def signatures(conn: Connection, period: Period, package: str | None) -> dict[str, Any]:
    """The failed jobs of the period by error signature (jobs.error_signature, counted per day
    by daily_error_rollup); example jobs: the newest failures, at most one of a package and day."""
    measures = ("jobs", "first", "last")
    per_package = sums(conn, rollups.ERROR_DAYS, period, ("signature", "package_id"), measures, package)
    merged: dict[str | None, dict[str, Any]] = {}
    for (text, package_id), counts in per_package.items():
        s = merged.setdefault(text, {"signature": text or NO_TEXT, "jobs": 0, "first": counts["first"],
                                     "last": counts["last"], "packages": set()})
        s["jobs"] += counts["jobs"]
        s["first"], s["last"] = min(s["first"], counts["first"]), max(s["last"], counts["last"])
        s["packages"].add(package_id)
    ranked = sorted(merged.items(), key=lambda item: (-item[1]["jobs"], item[1]["signature"]))
    top = dict(ranked[:TOP_SIGNATURES])
    names = package_names(conn, {p for s in top.values() for p in s["packages"]})
    examples = rollups.newest(conn, rollups.ERROR_DAYS, period.start, period.end, "signature", "example", EXAMPLES,
                              package, {"signature": list(top)}) if top else {}
    urls = job_urls(conn, [j for ids in examples.values() for j in ids])
    for text, s in top.items():
        s["packages"] = sorted(label(names.get(p), p) for p in s["packages"])
        s["examples"] = [(j, urls.get(j)) for j in examples.get(text, [])]
    failed = sum(s["jobs"] for s in merged.values())
    return {"rows": list(top.values()), "more": len(ranked) - len(top), "failed": failed}


def job_urls(conn: Connection, ids: list[int]) -> dict[int, str | None]:
    if not ids:
        return {}
    return dict(conn.execute(select(jobs.c.id, jobs.c.html_url).where(jobs.c.id.in_(ids))).all())


def job_link(url: str | None) -> str | None:
    """A job's own web page, and only an http(s) one (an API text could say `javascript:`)."""
    return url if url and re.match(r"https?://[^\s\"'<>]+$", url) else None


# -- retries, syncs -------------------------------------------------------------------------------------------
def retries(conn: Connection, period: Period, package: str | None) -> dict[str, Any]:
    """Per schedule and package: its scheduled runs of the period and their retries."""
    measures = ("runs", "retried", "retries", "recovered", "failed")
    found = sums(conn, rollups.SCHEDULE_DAYS, period, ("schedule_id", "package_id"), measures, package)
    schedules, packages = schedule_names(conn, {s for s, _ in found}), package_names(conn, {p for _, p in found})
    rows = [{"schedule": schedules.get(schedule_id) or f"schedule {schedule_id}",
             "package": label(packages.get(package_id), package_id), **counts}
            for (schedule_id, package_id), counts in found.items()]
    total = {key: sum(r[key] for r in rows) for key in measures}
    shown_rows = sorted((r for r in rows if r["retried"] or r["failed"]),
                        key=lambda r: (-r["recovered"], -r["failed"], r["schedule"], r["package"]))
    return {"rows": shown_rows[:TOP_SCHEDULES], "more": max(len(shown_rows) - TOP_SCHEDULES, 0), "total": total}


def schedule_names(conn: Connection, ids: set) -> dict[int, str]:
    known = sorted(i for i in ids if i is not None)
    if not known:
        return {}
    c = table("creators", column("type", String), column("id", BigInteger), column("display_name", Text))
    return dict(conn.execute(select(c.c.id, c.c.display_name).where(c.c.type == "Schedule", c.c.id.in_(known))).all())


def syncs(conn: Connection, period: Period) -> dict[str, Any]:
    r = sync_runs.c
    runs = select(dialect.utc_day(conn, r.started_at).label("day"), r.outcome, r.credits_used).where(
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
