"""`archiver demo`: the sandbox API, a SQLite archive, a short report, the health board and the
HTML report (demo-report.html), with no configuration."""

from __future__ import annotations

import dataclasses
from datetime import timedelta
from pathlib import Path

from archiver import database
from archiver.config import Secret, Settings
from archiver.flows.alerts import CheckOptions, CheckResult, run_check
from archiver.flows.incremental import IncrementalOptions, sync_incremental
from archiver.flows.report import failures_report, jobs_stored, parse_since, runtimes_report, status_report
from archiver.flows.report_html import write_html_report
from archiver.flows.runs import SyncOptions, SyncSummary
from archiver.sandbox import Sandbox
from archiver.utc import utcnow

SANDBOX_KEY = "sandbox-key"
BROKEN_FOR = timedelta(hours=8)
FURTHER_SQL = """\
-- failure rate per package over the last 30 days
SELECT package_name, SUM(jobs) AS jobs, SUM(failed) AS failed,
       ROUND(1.0 * SUM(failed) / SUM(completed + failed + stopped), 3) AS failure_rate
FROM daily_package_stats WHERE day >= DATE('now', '-30 day')
GROUP BY package_name ORDER BY failed DESC;

-- what failed, and why
SELECT job_id, package_name, failed_at, error_summary, errors FROM job_failures
ORDER BY failed_at DESC LIMIT 20;

-- scheduled runs that failed but recovered on a retry
SELECT schedule_name, package_name, scheduled_at, attempts, outcome FROM schedule_attempts
WHERE outcome = 'recovered_on_retry' ORDER BY scheduled_at DESC;"""


@dataclasses.dataclass
class DemoResult:
    path: Path
    summary: SyncSummary
    jobs_stored: int
    status: list[dict]
    failing: list[dict]
    slowest: list[dict]
    health: CheckResult
    breakages: list[str]
    anomalies: list[dict]   # what the sandbox injected (its truth()["anomalies"])
    report: Path            # demo-report.html next to the archive


def run_demo(folder: Path, jobs: int = 400, seed: int = 1, since: str = "60d") -> DemoResult:
    """The sandbox's "anomalies" scenario: about one injected anomaly every 50 jobs once a
    package has 8 successful runs, so the default 400 jobs (about 3 days) hold a handful in
    their last two days (slowdowns, zero-record successes, volume drops) and a flaky package."""
    path = folder / "demo.db"
    with Sandbox(jobs=jobs, seed=seed, api_key=SANDBOX_KEY, now=utcnow() - BROKEN_FOR,
                 scenario="anomalies") as api:
        breakages = break_two_pipelines(api)
        api.advance(BROKEN_FOR.total_seconds())
        anomalies = api.truth()["anomalies"]
        settings = Settings(account=api.account, api_key=Secret(SANDBOX_KEY), api_url=api.url,
                            database_url=f"sqlite:///{path}")
        summary = sync_incremental(settings, SyncOptions(), IncrementalOptions())
    health = run_check(settings, CheckOptions())
    report = write_html_report(settings.database_url, folder / "demo-report.html", since).path
    engine = database.open_engine(settings.database_url, create=False)
    try:
        period = parse_since(since)
        return DemoResult(path=path, summary=summary, jobs_stored=jobs_stored(engine),
                          status=status_report(engine, period),
                          failing=failures_report(engine, period, limit=5),
                          slowest=runtimes_report(engine, period, limit=5), health=health,
                          breakages=breakages, anomalies=anomalies, report=report)
    finally:
        engine.dispose()


def break_two_pipelines(api: Sandbox) -> list[str]:
    """Give the health board something to find: BROKEN_FOR before the sync, the sandbox makes
    the package of its most frequent schedule fail every run and stops the next most frequent
    schedule (it stays enabled but creates no jobs). Schedules of a flaky package are left
    alone, so that it stays flaky rather than failing or silent."""
    catalog = api.history.catalog
    flaky = set(api.history.flaky_packages)
    by_frequency = sorted((i for i, schedule in enumerate(catalog.schedules) if not flaky & set(schedule.packages)),
                          key=lambda i: api.history.cadences[i].interval)
    failing, stopped = catalog.schedules[by_frequency[0]], catalog.schedules[by_frequency[1]]
    package = catalog.packages[failing.packages[0]]
    api.fail_package(package.id)
    api.break_schedule(stopped.id)
    return [f"package {package.id} ({package.spec.name}) of schedule {failing.id} fails every run",
            f"schedule {stopped.id} ({stopped.name}) stopped creating jobs"]


def describe_anomaly(anomaly: dict) -> str:
    """One injected anomaly in a few words, for the demo's output."""
    kind, job = anomaly["kind"], f"job {anomaly['job_id']} of package {anomaly['package_id']}"
    if kind == "slow":
        return f"a {anomaly['factor']:g}x slower run ({job})"
    if kind == "zero_records":
        return f"0 records on {anomaly['output_name']} ({job}, completed)"
    if kind == "volume_drop":
        return f"{1 - anomaly['factor']:.0%} fewer records on {anomaly['output_name']} ({job})"
    return f"a flaky package ({anomaly['package_id']}: {anomaly['factor']:.0%} of its scheduled first attempts fail)"
