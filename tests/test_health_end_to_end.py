"""Issue 14's "done when", end to end: a sandbox of healthy hourly and daily schedules,
synced by `sync --incremental` (catalog included) and judged by `check`; then each
breakage the sandbox can inject, found with the right kind at the first check after its
threshold, and never before it.
"""

from __future__ import annotations

import json
from datetime import datetime, timedelta, timezone

from sqlalchemy import select

from archiver import anomaly, database
from archiver.flows.alerts import CheckOptions, run_check
from archiver.flows.incremental import IncrementalOptions, sync_incremental
from archiver.flows.runs import SyncOptions
from archiver.models import JobRow, ScheduleRow
from archiver.sandbox import Sandbox
from tests.sandboxed import run_archiver, settings_for

STEP = timedelta(minutes=10)
BROKEN_SCHEDULE = 29      # "Reverse ETL", hourly, one package (seed 3)
FAILING_PACKAGE = 2375    # first package of schedule 13, hourly
FAILING_SCHEDULE = 13
STUCK_PACKAGE = 2303      # first package of schedule 12, hourly
LATE_GRACE = timedelta(minutes=10)   # max(10 % of an hour, 10 min)
STUCK_FLOOR = timedelta(hours=1)


def utc(text: str) -> datetime:
    return datetime.fromisoformat(text.replace("Z", "+00:00"))


def alert_keys(result) -> set[str]:
    return {alert["key"] for alert in result.as_dict()["alerts"]}


def test_healthy_schedules_pass_and_a_stopped_archiver_is_reported_without_a_flood(tmp_path):
    url = f"sqlite:///{tmp_path / 'a.db'}"
    with Sandbox(scenario="healthy", days=30, seed=3) as api:
        synced = run_archiver(api, url, "sync", "--incremental")
        assert synced.returncode == 0, synced.stderr
        healthy = run_archiver(api, url, "check", "--format", "json")
        later = (datetime.now(timezone.utc) + timedelta(hours=2)).isoformat()
        stopped = run_archiver(api, url, "check", "--format", "json", "--now", later)

    board = json.loads(healthy.stdout)
    assert healthy.returncode == 0, healthy.stdout + healthy.stderr
    assert board["ok"] is True and board["alerts"] == []
    schedules = [s for s in board["subjects"] if s["type"] == "schedule"]
    assert len(schedules) == 11
    assert {s["state"] for s in schedules} == {"ok", "disabled"}

    late_board = json.loads(stopped.stdout)
    assert stopped.returncode == 1
    assert [a["kind"] for a in late_board["alerts"]] == ["sync_stale"]   # not a late schedule each


def test_each_breakage_is_reported_at_the_first_check_after_its_threshold(tmp_path):
    start = datetime.now(timezone.utc).replace(microsecond=0) - timedelta(days=2)
    url = f"sqlite:///{tmp_path / 'a.db'}"
    with Sandbox(scenario="healthy", days=30, seed=3, now=start) as api:
        settings = settings_for(api, url)
        sync_incremental(settings, SyncOptions(), IncrementalOptions())
        assert alert_keys(run_check(settings, CheckOptions(now=api.now))) == set()

        api.break_schedule(BROKEN_SCHEDULE)
        api.fail_package(FAILING_PACKAGE)
        api.stuck_package(STUCK_PACKAGE)
        broken_at = api.now
        first_missed = None
        seen: dict[str, datetime] = {}
        while api.now < broken_at + timedelta(hours=5):
            api.advance(STEP.total_seconds())
            summary = sync_incremental(settings, SyncOptions(), IncrementalOptions())
            assert summary.exit_code == 0
            keys = alert_keys(run_check(settings, CheckOptions(now=api.now)))
            truth = api.truth()
            first_missed = utc(truth["stopped_schedules"][0]["first_missed_run_at"])
            stuck_job = truth["stuck_jobs"][0]
            expected = expected_alerts(url, api.now, first_missed, stuck_job, broken_at)
            allowed = expected["must"] | expected["may"]
            assert expected["must"] <= keys <= allowed, f"at {api.now}: {sorted(keys)} vs {expected}"
            for key in keys:
                seen.setdefault(key, api.now)

    assert {key.split(":")[0] for key in seen} >= {"late", "failing", "stuck"}
    slow = [when for key, when in seen.items() if key.startswith("slow:job:")]
    stuck = [when for key, when in seen.items() if key.startswith("stuck:job:")]
    assert all(s <= min(stuck) for s in slow)     # slow is the early warning, stuck the hard limit
    assert seen[f"late:schedule:{BROKEN_SCHEDULE}"] < first_missed + LATE_GRACE + STEP


def typical_runtime(conn) -> float:
    """The median runtime of the stuck package's completed jobs."""
    runtimes = sorted(conn.execute(select(JobRow.runtime_in_seconds).where(
        JobRow.package_id == STUCK_PACKAGE, JobRow.status == "completed",
        JobRow.runtime_in_seconds.is_not(None))).scalars())
    return runtimes[len(runtimes) // 2] if runtimes else float("inf")


def expected_alerts(url: str, now: datetime, first_missed: datetime, stuck_job: dict,
                    broken_at: datetime) -> dict[str, set[str]]:
    """What the board must show at `now`, and what it may show (a rule whose threshold the
    test does not compute exactly, e.g. stale after late), derived from the archive."""
    must, may = set(), set()
    late = f"late:schedule:{BROKEN_SCHEDULE}"
    (must if now >= first_missed + LATE_GRACE else set()).add(late)
    may |= {late, f"stale:schedule:{BROKEN_SCHEDULE}"}
    engine = database.open_engine(url, create=False)
    try:
        with engine.connect() as conn:
            stuck_id = stuck_job["job_id"]
            if stuck_id is not None:
                started = utc(stuck_job["started_at"])
                longest = conn.execute(select(JobRow.runtime_in_seconds).where(
                    JobRow.package_id == STUCK_PACKAGE, JobRow.status == "completed")
                    .order_by(JobRow.runtime_in_seconds.desc()).limit(1)).scalar()
                if now >= started + max(STUCK_FLOOR, 2 * timedelta(seconds=longest)):
                    must.add(f"stuck:job:{stuck_id}")
                if now >= started + STUCK_FLOOR:
                    may.add(f"stuck:job:{stuck_id}")
                if now >= started + anomaly.DEFAULTS.slow_ratio * timedelta(seconds=typical_runtime(conn)):
                    may.add(f"slow:job:{stuck_id}")   # past the slow bound's ratio floor: not computed exactly
            failing = f"failing:schedule:{FAILING_SCHEDULE}"
            exhausted, failed_first = failed_chains(conn, broken_at)
            if exhausted >= 3:
                must.add(failing)
            if failed_first >= 3 or exhausted >= 1:   # retries exhausted is a failing finding too
                may.add(failing)
    finally:
        engine.dispose()
    return {"must": must, "may": may}


def failed_chains(conn, broken_at: datetime) -> tuple[int, int]:
    """(runs of the failing package whose last allowed attempt failed, failed first attempts)
    since the breakage."""
    schedule = conn.execute(select(ScheduleRow).where(ScheduleRow.id == FAILING_SCHEDULE)).one()
    last_attempt = schedule.auto_retry_attempts if schedule.auto_retry else 0
    rows = conn.execute(select(JobRow.attempts, JobRow.status).where(
        JobRow.package_id == FAILING_PACKAGE, JobRow.created_at > broken_at,
        JobRow.creator_type == "Schedule")).all()
    exhausted = sum(1 for r in rows if r.status == "failed" and (r.attempts or 0) == last_attempt)
    return exhausted, sum(1 for r in rows if r.status == "failed" and not r.attempts)
