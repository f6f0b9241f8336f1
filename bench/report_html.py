#!/usr/bin/env python
"""How long `archiver report html --since 90d` takes on an archive of 100,000 jobs, and how big
the page is, on SQLite and PostgreSQL.

    PYTHONPATH=. python bench/report_html.py                       # SQLite, 100,000 jobs, 3 runs
    PYTHONPATH=. python bench/report_html.py --pg-url postgresql+psycopg://postgres@127.0.0.1:5432/bench_report

The archive is check_speed.py's (60 schedules over up to a year, 25 packages run by hand,
retries, failures, open jobs, job_anomalies verdicts, a sync every 5 minutes), plus two outputs
per job and an error text naming the job on every failed one (so the signatures have to be
merged), with the signatures and the daily rollups a write keeps. The PostgreSQL database given is emptied first: point it at a throwaway one.
Each run is write_html_report as the command calls it (open read-only, evaluate the board,
aggregate, render, write). The target is under 5 s and at most 1.5 MB.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))

from check_speed import NOW, build  # noqa: E402
from sqlalchemy import String, bindparam, cast, insert, literal, select, text, update  # noqa: E402

from archiver import database  # noqa: E402
from archiver.errortext import signature  # noqa: E402
from archiver.store import refresh_rollup  # noqa: E402
from archiver.flows.report_html import write_html_report  # noqa: E402
from archiver.models import JobOutputRow, JobRow  # noqa: E402

jobs, outputs = JobRow.__table__, JobOutputRow.__table__


def fresh(url: str) -> None:
    engine = database.make_engine(url)
    if engine.dialect.name == "postgresql":
        with engine.begin() as conn:
            conn.execute(text("DROP SCHEMA public CASCADE"))
            conn.execute(text("CREATE SCHEMA public"))
    database.upgrade(engine)
    engine.dispose()


def add_outputs_and_errors(url: str) -> None:
    """Two outputs a completed job (INSERT ... SELECT) and a job-specific error on each failed one."""
    engine = database.make_engine(url)
    with engine.begin() as conn:
        for k, name in enumerate(("orders_out", "customers_out")):
            source = select(jobs.c.id * 2 + k, jobs.c.id, literal(name), literal(name), jobs.c.id % 1000 * (k + 1))
            conn.execute(insert(outputs).from_select(["id", "job_id", "name", "component_name", "records_count"],
                                                     source.where(jobs.c.status == "completed")))
        message = (literal("Job ", String) + cast(jobs.c.id, String) + literal(" failed: table 'orders_", String)
                   + cast(jobs.c.package_id, String) + literal("' timed out", String))
        conn.execute(update(jobs).where(jobs.c.status == "failed").values(errors=message))
        failed = conn.execute(select(jobs.c.id, jobs.c.errors).where(jobs.c.status == "failed")).all()
        if failed:   # what a write keeps with these columns: the signature and the daily rollups
            conn.execute(update(jobs).where(jobs.c.id == bindparam("jid")).values(error_signature=bindparam("sig")),
                         [{"jid": job_id, "sig": signature(errors)} for job_id, errors in failed])
        refresh_rollup(conn, set(conn.execute(select(jobs.c.account_id, jobs.c.run_date).distinct()).all()))
    engine.dispose()


def measure(url: str, total: int, runs: int, folder: Path) -> tuple[list[float], int]:
    fresh(url)
    build(url, total)
    add_outputs_and_errors(url)
    times, size = [], 0
    for i in range(runs):
        report = write_html_report(url, folder / f"report-{i}.html", "90d", now=NOW)
        times.append(report.seconds)
        size = report.bytes
    return times, size


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--jobs", type=int, default=100_000)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--pg-url", help="also PostgreSQL, in this throwaway database")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as folder:
        urls = [("SQLite", f"sqlite:///{folder}/archive.db")] + ([("PostgreSQL", args.pg_url)] if args.pg_url else [])
        for name, url in urls:
            times, size = measure(url, args.jobs, args.runs, Path(folder))
            print(f"{name}: {args.jobs:,} jobs; runs {', '.join(f'{t:.2f}s' for t in times)}; "
                  f"median {statistics.median(times):.2f}s (target < 5 s); {size:,} bytes (target <= 1,500,000)")


if __name__ == "__main__":
    main()
