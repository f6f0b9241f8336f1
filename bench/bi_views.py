#!/usr/bin/env python
"""The BI views and reports on big archives (issue 17): each README example query, each report
with --since 30d (the queries of `report html` too), reports over a year end to end (`html`
included), and schedule_attempts filtered to one day.

    PYTHONPATH=. python bench/bi_views.py --jobs 20000                      # SQLite only
    PYTHONPATH=. python bench/bi_views.py --jobs 1000000 \\
        --pg-url postgresql+psycopg://postgres@127.0.0.1:5432/archiver_bench_h17 --sqlite /tmp/h17/bench.db
    ... --reuse            # time an archive built by an earlier run (same --jobs)

The archive is generated here in bulk, not through the ingest path (which takes about 10
minutes per million): a year of history ending now, 60 schedules (their rows too, every 15th
disabled, so the health board judges them) running 1 to 3 packages each, failed first attempts retried up to three times,
jobs run by hand on 30 more packages, 85 % completed / 10 % failed / 2 % stopped, open jobs
in the last hours, log-normal runtimes per package, one or two outputs a job, error texts that
name their job (every one differs, as real ones do), a log summary on a third of the failures.
The rollup and the scheduled runs are then filled by the archiver's own recounts
(store.refresh_rollup, store.refresh_schedule_runs). The database
at --pg-url is emptied first: point it at a throwaway one.

Every figure is the median of --runs runs (default 3) and the queries of one database are
interleaved (each round runs every query once), so a busy neighbour slows all alike.
"""

from __future__ import annotations

import argparse
import math
import os
import random
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import date, datetime, timedelta, timezone
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

from sqlalchemy import func, select, text  # noqa: E402

from archiver import database, dialect, models  # noqa: E402
from archiver.errortext import signature  # noqa: E402
from archiver.flows.report import REPORTS, parse_since  # noqa: E402
from archiver.store import GROWING_TABLES, jobs_t, refresh_rollup, refresh_schedule_runs  # noqa: E402
from report_html import fresh  # noqa: E402   (an empty archive at head: the same as that bench's)

TERMINAL = ("completed", "failed", "stopped")
NOW = datetime.now(timezone.utc).replace(microsecond=0)

README_QUERIES = {
    "README: failure rate per package": """
SELECT package_name, SUM(jobs) AS jobs, SUM(failed) AS failed,
       1.0 * SUM(failed) / NULLIF(SUM(completed + failed + stopped), 0) AS failure_rate
FROM daily_package_stats GROUP BY package_name ORDER BY failure_rate DESC""",
    "README: the slowest jobs": """
SELECT job_id, package_name, run_seconds, created_at
FROM job_runs WHERE is_terminal = 1 ORDER BY run_seconds DESC LIMIT 20""",
    "README: what failed, and why": """
SELECT job_id, package_name, failed_at, errors, error_summary
FROM job_failures ORDER BY failed_at DESC LIMIT 20""",
    "README: recovered on a retry": """
SELECT schedule_name, package_name, scheduled_at, attempts
FROM schedule_attempts WHERE outcome = 'recovered_on_retry'
ORDER BY scheduled_at DESC LIMIT 20""",
    # not a README query: every recovered run of the history (the README's before 2026-11-29)
    "every run recovered on a retry (all rows)": """
SELECT schedule_name, package_name, scheduled_at, attempts
FROM schedule_attempts WHERE outcome = 'recovered_on_retry'""",
}


def plan(total: int, rnd: random.Random):
    """(schedule_id, minutes between runs, package ids) for 60 schedules; hand-run packages."""
    schedules = []
    for s in range(1, 61):
        every = rnd.choice([10, 20, 60, 60, 60])
        schedules.append((s, every, tuple(100 + (s * 7 + k) % 40 for k in range(rnd.randint(1, 3)))))
    return schedules, list(range(200, 230))


def job(job_id: int, created: datetime, package_id: int, status: str, runtime: int | None,
        schedule_id: int | None = None, attempt: int = 0) -> dict:
    started = created + timedelta(seconds=30 + job_id % 90) if status not in ("queued",) else None
    ended = started + timedelta(seconds=runtime) if status in TERMINAL and started else None
    errors = f"Job {job_id} failed: table 'orders_{package_id}' timed out after {runtime}s" if status == "failed" else ""
    return {"id": job_id, "account_id": "bench", "status": status, "package_id": package_id,
            "cluster_id": 1 + package_id % 7, "runtime_in_seconds": runtime if started else None,
            "errors": errors, "error_signature": signature(errors),
            "created_at": created, "started_at": started, "updated_at": ended or created,
            "completed_at": ended, "failed_at": ended if status == "failed" else None, "ended_at": ended,
            "queue_seconds": round((started - created).total_seconds()) if started else None,
            "run_date": created.date(), "attempts": attempt if schedule_id else None,
            "creator_type": "Schedule" if schedule_id else "User", "creator_id": schedule_id or 9,
            "html_url": f"https://app.example/jobs/{job_id}", "payload": {}, "payload_hash": None,
            "first_seen_at": created, "last_synced_at": ended or created}


def interval_minutes(total: int, schedules: list[tuple], every: int) -> int:
    """A schedule's minutes between runs, stretched so that its runs make 75 % of `total`."""
    runs_per_year = sum(len(p) * 525600 // each for _, each, p in schedules)
    return max(1, round(every * runs_per_year / (total * 0.75)))


def schedule_rows(total: int, seed: int = 17) -> tuple[list[dict], list[dict]]:
    """The schedules behind the scheduled jobs (every 15th disabled), and their packages, so the
    health board of `report html` judges them as it would a real account's."""
    schedules, _ = plan(total, random.Random(seed))
    start = NOW - timedelta(days=365)
    rows = [{"id": s, "name": f"schedule {s}", "status": "disabled" if s % 15 == 0 else "enabled",
             "start_at": start, "interval_amount": interval_minutes(total, schedules, every),
             "interval_unit": "minutes", "auto_retry": True, "auto_retry_attempts": 3, "created_at": start}
            for s, every, _ in schedules]
    tasks = [{"schedule_id": s, "position": i, "package_id": p} for s, _, packages in schedules
             for i, p in enumerate(packages)]
    return rows, tasks


def generate(total: int, seed: int = 17):
    """Batches of job rows, a year back from NOW, in creation order (about `total` jobs)."""
    rnd = random.Random(seed)
    schedules, hand = plan(total, rnd)
    start = NOW - timedelta(days=365)
    median = {p: rnd.uniform(60, 1800) for p in range(100, 230)}
    events: list[tuple] = []
    for s, every, packages in schedules:
        step = timedelta(minutes=interval_minutes(total, schedules, every))
        k, moment = 0, start + timedelta(minutes=rnd.randint(0, every))
        while moment < NOW:
            for p in packages:
                events.append((moment, p, s))
            k += 1
            moment = start + k * step
    hand_jobs = int(total * 0.25 * 0.9)
    for _ in range(hand_jobs):
        events.append((start + timedelta(seconds=rnd.randint(0, 365 * 86400)), rnd.choice(hand), None))
    events.sort(key=lambda e: e[0])
    batch, job_id = [], 1_000_000
    for created, package_id, schedule_id in events:
        attempt = 0
        while True:
            job_id += 1
            recent = (NOW - created) < timedelta(hours=3)
            roll = rnd.random()
            status = ("running" if recent and roll < 0.3 else "failed" if roll < 0.10 + 0.3 * (attempt > 0)
                      else "stopped" if roll < 0.12 + 0.3 * (attempt > 0) else "completed")
            runtime = int(math.exp(rnd.gauss(math.log(median[package_id]), 0.4)))
            batch.append(job(job_id, created, package_id, status, runtime, schedule_id, attempt))
            if status != "failed" or schedule_id is None or attempt == 3 or created > NOW - timedelta(minutes=30):
                break
            attempt += 1
            created += timedelta(minutes=5 + runtime // 60)
        if len(batch) >= 20000:
            yield batch
            batch = []
    if batch:
        yield batch


def outputs_of(batch: list[dict]) -> list[dict]:
    """One or two outputs a job (the package decides), records varying with the runtime."""
    return [{"id": j["id"] * 2 + k, "job_id": j["id"], "name": f"out{k}", "component_name": f"destination_{k}",
             "component_type": "database_destination_component",
             "records_count": (j["runtime_in_seconds"] or 0) * (50 + j["package_id"] % 7) if j["status"] != "queued" else 0}
            for j in batch for k in range(1 + j["package_id"] % 2)]


def build(url: str, total: int) -> int:
    fresh(url)
    engine = database.make_engine(url)
    written = 0
    with engine.begin() as conn:
        dims = [{"id": p, "name": f"package {p}"} for p in range(100, 230)]
        dialect.insert_rows(conn, models.PackageRow.__table__, dims)
        dialect.insert_rows(conn, models.ClusterRow.__table__, [{"id": c, "name": f"cluster {c}"} for c in range(1, 8)])
        creators = [{"type": "Schedule", "id": s, "display_name": f"schedule {s}"} for s in range(1, 61)]
        dialect.insert_rows(conn, models.CreatorRow.__table__, creators + [{"type": "User", "id": 9, "display_name": "ana"}])
        schedules, tasks = schedule_rows(total)
        dialect.insert_rows(conn, models.ScheduleRow.__table__, schedules)
        dialect.insert_rows(conn, models.SchedulePackageRow.__table__, tasks)
    summaries = models.JobLogSummaryRow.__table__
    for batch in generate(total):
        with engine.begin() as conn:
            dialect.insert_rows(conn, jobs_t, batch)
            dialect.insert_rows(conn, models.JobOutputRow.__table__, outputs_of(batch))
            failed = [{"job_id": j["id"], "log_id": j["id"], "error_summary": "The source table timed out.",
                       "action_items": ["Retry later"]} for j in batch if j["status"] == "failed" and j["id"] % 3 == 0]
            dialect.insert_rows(conn, summaries, failed)
        written += len(batch)
    with engine.begin() as conn:   # what the archiver's writes keep: the daily rollup, the scheduled runs
        groups = {(a, d) for a, d in conn.execute(select(jobs_t.c.account_id, jobs_t.c.run_date).distinct())}
        refresh_rollup(conn, groups)
        j = jobs_t.c
        chains = conn.execute(select(j.account_id, j.creator_id, j.package_id, func.min(j.created_at))
                              .where(j.creator_type == "Schedule").group_by(j.account_id, j.creator_id, j.package_id))
        refresh_schedule_runs(conn, {(a, c, p): first for a, c, p, first in chains})
    if engine.dialect.name == "postgresql":
        with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
            conn.execute(text("VACUUM ANALYZE"))
    else:   # what the archiver's own refresh does after a large load (dialect.refresh_statistics)
        dialect.refresh_statistics(engine, GROWING_TABLES)
    engine.dispose()
    return written


def timed(fn) -> float:
    began = time.perf_counter()
    fn()
    return time.perf_counter() - began


def query_runner(engine, sql: str, params: dict | None = None):
    def run():
        with engine.connect() as conn:
            for _ in conn.execute(text(sql), params or {}):
                pass
    return run


def report_runner(engine, name: str, since: str):
    def run():
        REPORTS[name](engine, parse_since(since), None, None)
    return run


def html_runner(engine, since: str):
    """The queries of `report html` (its sections, not the health board or the page)."""
    from archiver.flows import report_html

    def run():
        with engine.connect() as conn:
            report_html.gather(conn, parse_since(since), None)
    return run


def cli_runner(url: str, name: str, since: str):
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    output = ["-o", str(Path(tempfile.gettempdir()) / "bi-views-report.html")] if name == "html" else ["--format", "csv"]
    def run():
        subprocess.run([sys.executable, "-m", "archiver", "report", name, "--db", url, "--since", since, *output],
                       check=True, capture_output=True, env=env)
    return run


def busiest_day(engine) -> date:
    with engine.connect() as conn:
        return conn.execute(text("SELECT MAX(day) FROM daily_package_stats WHERE day < :d"),
                            {"d": NOW.date() - timedelta(days=1)}).scalar()


def measure(url: str, runs: int) -> list[tuple[str, float, float]]:
    """(what, median seconds, target seconds) for one archive; rounds interleave every item."""
    engine = database.make_engine(url, read_only=True)
    day = busiest_day(engine)
    day = date.fromisoformat(str(day)[:10])
    start = datetime.combine(day, datetime.min.time(), timezone.utc)
    items = [(name, query_runner(engine, sql), 0.1) for name, sql in README_QUERIES.items()]
    items += [(f"report {name} --since 30d (in process)", report_runner(engine, name, "30d"), 0.1)
              for name in ("status", "failures", "runtimes", "anomalies")]
    items.append(("report html --since 30d, its queries (in process)", html_runner(engine, "30d"), 0.1))
    items += [(f"archiver report {name} --since 365d (end to end)", cli_runner(url, name, "365d"), 1.5)
              for name in ("failures", "runtimes", "html")]
    items.append(("schedule_attempts on one day",
                  query_runner(engine, "SELECT * FROM schedule_attempts WHERE scheduled_at >= :a AND scheduled_at < :b",
                               {"a": start, "b": start + timedelta(days=1)}), 0.05))
    times: dict[str, list[float]] = {name: [] for name, _, _ in items}
    for _ in range(runs):
        for name, fn, _ in items:
            times[name].append(timed(fn))
    engine.dispose()
    return [(name, statistics.median(times[name]), target) for name, _, target in items]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--jobs", type=int, default=20000)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--pg-url")
    parser.add_argument("--sqlite", default="/tmp/h17/bench.db")
    parser.add_argument("--skip-sqlite", action="store_true")
    parser.add_argument("--reuse", action="store_true", help="time the archives an earlier run built")
    parser.add_argument("--build-only", action="store_true", help="build the archives, time nothing")
    args = parser.parse_args()
    urls = ([] if args.skip_sqlite else [f"sqlite:///{args.sqlite}"]) + ([args.pg_url] if args.pg_url else [])
    for url in urls:
        name = "PostgreSQL" if url.startswith("postgresql") else "SQLite"
        if not args.reuse:
            if url.startswith("sqlite"):
                Path(args.sqlite).unlink(missing_ok=True)
            began = time.perf_counter()
            count = build(url, args.jobs)
            print(f"{name}: built {count:,} jobs in {time.perf_counter() - began:.0f} s", flush=True)
        if args.build_only:
            continue
        print(f"\n| {name}, {args.jobs:,} jobs (median of {args.runs}) | seconds | target | met |\n|---|---:|---:|---|")
        for what, seconds, target in measure(url, args.runs):
            print(f"| {what} | {seconds:.3f} | < {target:g} | {'yes' if seconds < target else '**no**'} |", flush=True)


if __name__ == "__main__":
    main()
