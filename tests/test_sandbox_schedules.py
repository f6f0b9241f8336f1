"""The sandbox's schedules: runs at their cadence, a healthy scenario, and breakages on command.

Over real HTTP where a client would look (List jobs, List schedules, the
control endpoints), through the Sandbox object where that is shorter.
"""
from __future__ import annotations

from collections import defaultdict
from datetime import datetime, timedelta, timezone

import pytest
import requests
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from archiver.sandbox import Sandbox
from archiver.sandbox.history import UNIT_SECONDS

NOW = datetime(2026, 11, 28, 12, 0, tzinfo=timezone.utc)
KEY = "sandbox-key"
V2 = "application/vnd.xplenty+json; version=2"
MIN_DELAY, MAX_DELAY = 2, 75          # a scheduled run is created this many seconds after its tick
HOUR, DAY = 3600, 86_400


def when(text: str) -> datetime:
    return datetime.fromisoformat(text.replace("Z", "+00:00"))


def iso(moment: datetime) -> str:
    return moment.astimezone(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def session() -> requests.Session:
    client = requests.Session()
    client.auth = (KEY, "")
    client.headers["Accept"] = V2
    return client


def list_all(sandbox: Sandbox, path: str, **params) -> list[dict]:
    """Every object of a list endpoint, following the Link headers."""
    client = session()
    response = client.get(f"{sandbox.url}/{sandbox.account}/api/{path}", params={"limit": 100, **params})
    items = []
    while True:
        assert response.status_code == 200, response.text
        items += response.json()
        if "next" not in response.links:
            return items
        response = client.get(response.links["next"]["url"])


def control(sandbox: Sandbox, name: str, method: str = "POST", **params) -> requests.Response:
    return requests.request(method, f"{sandbox.url}/_sandbox/{name}", params=params)


def advance(sandbox: Sandbox, seconds: float) -> None:
    assert control(sandbox, "advance", seconds=seconds).status_code == 200


def interval_of(schedule: dict) -> int:
    return schedule["interval_amount"] * UNIT_SECONDS[schedule["interval_unit"]]


def first_runs(jobs: list[dict]) -> dict[tuple[int, int], list[datetime]]:
    """(schedule id, package id) -> creation times of the first attempts the schedule made."""
    runs = defaultdict(list)
    for job in jobs:
        if job["creator"]["type"] == "Schedule" and job["attempts"] == 0:
            runs[job["creator"]["id"], job["package_id"]].append(when(job["created_at"]))
    return runs


def assert_on_cadence(schedule: dict, created: list[datetime], until: datetime) -> None:
    """One run per tick start_at + k x interval, MIN_DELAY..MAX_DELAY s after it, no tick left out."""
    start, interval = when(schedule["start_at"]), interval_of(schedule)
    ticks = []
    for moment in created:
        tick, delay = divmod(int((moment - start).total_seconds()), interval)
        assert MIN_DELAY <= delay <= MAX_DELAY, (schedule["name"], moment, delay)
        ticks.append(tick)
    assert ticks == list(range(ticks[0], ticks[0] + len(ticks))), f"{schedule['name']}: a tick without a run"
    last_tick = start + timedelta(seconds=(ticks[-1] + 1) * interval)
    assert last_tick + timedelta(seconds=MAX_DELAY) > until, f"{schedule['name']}: runs stop before {until}"
    gaps = {(b - a).total_seconds() for a, b in zip(created, created[1:])}
    assert all(abs(gap - interval) <= MAX_DELAY - MIN_DELAY for gap in gaps)


@pytest.fixture(scope="module")
def healthy():
    """30 days of healthy hourly and daily schedules, read-only."""
    with Sandbox(scenario="healthy", days=30, seed=11, now=NOW) as sandbox:
        yield sandbox, list_all(sandbox, "jobs", direction="asc"), list_all(sandbox, "schedules", status="enabled")


@pytest.fixture
def sandbox():
    with Sandbox(scenario="healthy", days=3, seed=5, now=NOW) as sandbox:
        yield sandbox


# -- cadence ----------------------------------------------------------------------------------

def test_healthy_history_is_30_days_of_hourly_and_daily_schedules(healthy):
    sandbox, jobs, schedules = healthy
    first, last = when(jobs[0]["created_at"]), when(jobs[-1]["created_at"])
    assert timedelta(days=29) < last - first <= timedelta(days=30, hours=1) and last <= NOW
    assert {(s["interval_amount"], s["interval_unit"]) for s in schedules} == {(1, "hours"), (1, "days")}
    assert all(s["overlap"] for s in schedules), "runs of a tick start whether or not earlier ones ended"


def test_each_schedule_creates_one_run_per_package_per_tick_for_30_days(healthy):
    sandbox, jobs, schedules = healthy
    runs = first_runs(jobs)
    for schedule in schedules:
        packages = [p["package_id"] for p in schedule["task"]["packages"]]
        for package_id in packages:
            created = runs[schedule["id"], package_id]
            assert len(created) >= 30 * DAY // interval_of(schedule) - 3
            assert_on_cadence(schedule, created, NOW)
    assert set(runs) == {(s["id"], p["package_id"]) for s in schedules for p in s["task"]["packages"]}


@pytest.mark.parametrize("jobs", [400, 4320, 30_000])
def test_normal_histories_follow_their_cadence_too(jobs):
    """Intervals scale with the history's size; first attempts keep the cadence, retries come on top."""
    sandbox = Sandbox(jobs=jobs, seed=7, now=NOW)
    everything = [sandbox.job(i) for i in sandbox.job_ids()]
    schedules = [s for s in sandbox.catalog("schedules") if s["status"] == "enabled"]
    runs = first_runs(everything)
    for schedule in schedules:
        for package in schedule["task"]["packages"]:
            created = runs[schedule["id"], package["package_id"]]
            if created:
                assert_on_cadence(schedule, created, NOW)
    retries = [job for job in everything if job["attempts"] > 0]
    assert retries and all(job["creator"]["type"] == "Schedule" for job in retries)
    assert any(job["creator"]["type"] == "User" for job in everything)


def test_schedule_fields_agree_with_the_jobs(sandbox):
    for step in (0, 5 * HOUR + 17, 2 * DAY):
        advance(sandbox, step)
        now = sandbox.now
        jobs = list_all(sandbox, "jobs", direction="asc")
        for schedule in list_all(sandbox, "schedules", status="enabled"):
            made = [job for job in jobs if job["creator"]["type"] == "Schedule"
                    and job["creator"]["id"] == schedule["id"]]
            interval = interval_of(schedule)
            start, next_run = when(schedule["start_at"]), when(schedule["next_run_at"])
            assert schedule["execution_count"] == len(made)
            assert schedule["last_run_at"] == made[-1]["created_at"]
            assert schedule["last_run_status"] == made[-1]["status"]
            assert (next_run - start).total_seconds() % interval == 0
            assert now < next_run <= now + timedelta(seconds=interval)
            assert start <= when(made[0]["created_at"]) <= start + timedelta(seconds=interval + MAX_DELAY)


# -- the healthy scenario -----------------------------------------------------------------------

def test_nothing_is_broken_in_the_healthy_scenario(healthy):
    sandbox, jobs, schedules = healthy
    assert {job["status"] for job in jobs} <= {"completed", "running", "queued", "pending", "idle"}
    assert all(job["attempts"] == 0 and job["errors"] == "" for job in jobs)
    for job in jobs:
        if job["status"] != "completed":
            assert when(job["created_at"]) > NOW - timedelta(hours=1), f"job {job['id']} in flight over an hour"
    for schedule in schedules:
        assert when(schedule["next_run_at"]) > NOW
        assert NOW - when(schedule["last_run_at"]) < timedelta(seconds=interval_of(schedule) + MAX_DELAY)


def test_the_healthy_scenario_stays_healthy_as_the_clock_moves(sandbox):
    advance(sandbox, 2 * DAY + 123)
    now = sandbox.now
    jobs = list_all(sandbox, "jobs", direction="asc")
    assert {job["status"] for job in jobs} <= {"completed", "running", "queued", "pending", "idle"}
    runs = first_runs(jobs)
    for schedule in list_all(sandbox, "schedules", status="enabled"):
        for package in schedule["task"]["packages"]:
            assert_on_cadence(schedule, runs[schedule["id"], package["package_id"]], now)


# -- breakages --------------------------------------------------------------------------------

def hourly(sandbox: Sandbox) -> list[dict]:
    return [s for s in list_all(sandbox, "schedules", status="enabled") if s["interval_unit"] == "hours"]


def test_a_stopped_schedule_makes_no_more_jobs_but_stays_enabled(sandbox):
    schedule, other = hourly(sandbox)[:2]
    at = NOW + timedelta(hours=2, minutes=30)
    answer = control(sandbox, "break_schedule", schedule_id=schedule["id"], at=iso(at))
    assert answer.status_code == 200
    assert answer.json() == {"kind": "schedule_stopped", "schedule_id": schedule["id"], "at": iso(at),
                             "now": iso(NOW)}
    advance(sandbox, 12 * HOUR)
    jobs = list_all(sandbox, "jobs", direction="asc")
    made = [job for job in jobs if job["creator"]["type"] == "Schedule" and job["creator"]["id"] == schedule["id"]]
    missed = when(schedule["start_at"]) + timedelta(seconds=interval_of(schedule)) * (
        (at - when(schedule["start_at"])) // timedelta(seconds=interval_of(schedule)) + 1)
    assert made and when(made[-1]["created_at"]) < missed
    assert when(made[-1]["created_at"]) > at - timedelta(hours=1, seconds=MAX_DELAY), "it ran until it stopped"
    after = {s["id"]: s for s in list_all(sandbox, "schedules")}
    stopped = after[schedule["id"]]
    assert stopped["status"] == "enabled" and stopped["next_run_at"] == iso(missed)
    assert stopped["execution_count"] == len(made) and stopped["last_run_at"] == made[-1]["created_at"]
    assert when(after[other["id"]]["next_run_at"]) > sandbox.now, "the other schedules go on"
    assert_on_cadence(other, first_runs(jobs)[other["id"], other["task"]["packages"][0]["package_id"]],
                      sandbox.now)
    truth = control(sandbox, "truth", "GET").json()
    assert truth["stopped_schedules"] == [{"schedule_id": schedule["id"], "at": iso(at),
                                           "first_missed_run_at": iso(missed), "last_job_id": made[-1]["id"]}]


def test_a_failing_package_fails_every_run_and_its_retries(sandbox):
    schedule = next(s for s in hourly(sandbox) if s["auto_retry"])
    package_id = schedule["task"]["packages"][0]["package_id"]
    since = iso(sandbox.now)
    assert control(sandbox, "fail_package", package_id=package_id).status_code == 200
    advance(sandbox, 6 * HOUR)
    runs = list_all(sandbox, "jobs", package_id=package_id, direction="asc")
    later = [job for job in runs if job["created_at"] > iso(NOW)]
    finished = [job for job in later if job["status"] in ("completed", "failed", "stopped")]
    assert len(finished) >= 5 and {job["status"] for job in finished} == {"failed"}
    assert all(job["errors"] and job["completed_at"] for job in finished)
    attempts = [job["attempts"] for job in later if job["creator"]["type"] == "Schedule"]
    assert max(attempts) == schedule["auto_retry_attempts"] == later[0]["master_auto_retry_attempts"]
    assert attempts.count(schedule["auto_retry_attempts"]) >= 2, "retries run until they are exhausted"
    incremental = list_all(sandbox, "jobs", since=since, sort="updated", direction="asc")
    assert {job["id"] for job in finished} <= {job["id"] for job in incremental}
    failed_ids = [job["id"] for job in later if job["status"] == "failed"]
    truth = control(sandbox, "truth", "GET").json()
    assert truth["failing_packages"] == [{"package_id": package_id, "at": iso(NOW), "failed_job_ids": failed_ids}]


def test_a_stuck_package_gets_exactly_one_job_that_runs_forever(sandbox):
    package_id = hourly(sandbox)[0]["task"]["packages"][0]["package_id"]
    at = NOW + timedelta(minutes=90)
    assert control(sandbox, "stuck_package", package_id=package_id, at=iso(at)).status_code == 200
    assert control(sandbox, "truth", "GET").json()["stuck_jobs"][0]["job_id"] is None, "not created yet"
    advance(sandbox, 6 * HOUR)
    runs = list_all(sandbox, "jobs", package_id=package_id, direction="asc")
    later = [job for job in runs if job["created_at"] > iso(at)]
    stuck, rest = later[0], later[1:]
    assert stuck["status"] == "running" and len(rest) >= 2
    assert all(job["status"] != "running" or job["created_at"] > iso(sandbox.now - timedelta(hours=1))
               for job in rest)
    truth = control(sandbox, "truth", "GET").json()["stuck_jobs"]
    assert truth == [{"package_id": package_id, "at": iso(at), "job_id": stuck["id"],
                      "created_at": stuck["created_at"], "started_at": stuck["started_at"]}]
    advance(sandbox, 3 * DAY)
    again = sandbox.job(stuck["id"])
    assert again["status"] == "running" and again["completed_at"] is None
    assert again["runtime_in_seconds"] >= 3 * DAY and again["progress"] < 1
    running = list_all(sandbox, "jobs", package_id=package_id, status="running")
    old = iso(sandbox.now - timedelta(hours=2))
    assert [job["id"] for job in running if job["created_at"] < old] == [stuck["id"]]


def test_breakages_leave_every_job_already_created_as_it_was(sandbox):
    advance(sandbox, 3 * HOUR)
    before = list_all(sandbox, "jobs", direction="asc")
    schedule = hourly(sandbox)[0]
    package_id = schedule["task"]["packages"][0]["package_id"]
    sandbox.break_schedule(schedule["id"])
    sandbox.fail_package(package_id)
    sandbox.stuck_package(package_id)
    assert list_all(sandbox, "jobs", direction="asc") == before


@pytest.mark.parametrize("name, params, status", [
    ("break_schedule", {"schedule_id": "999999"}, 404),
    ("fail_package", {"package_id": "1"}, 404),
    ("stuck_package", {}, 400),
    ("fail_package", {"package_id": "x"}, 400),
    ("break_schedule", {"schedule_id": "1", "at": "soon"}, 400),
])
def test_bad_breakage_requests(sandbox, name, params, status):
    response = control(sandbox, name, **params)
    assert response.status_code == status and response.json()["message"]


def test_a_breakage_cannot_start_in_the_past(sandbox):
    schedule_id = hourly(sandbox)[0]["id"]
    response = control(sandbox, "break_schedule", schedule_id=schedule_id, at=iso(NOW - timedelta(minutes=1)))
    assert response.status_code == 400 and "before the sandbox clock" in response.json()["message"]
    with pytest.raises(ValueError):
        sandbox.break_schedule(schedule_id, NOW - timedelta(minutes=1))
    with pytest.raises(KeyError):
        sandbox.fail_package(1)
    assert control(sandbox, "truth", "GET").json() == {
        "now": iso(NOW), "scenario": "healthy", "stopped_schedules": [], "failing_packages": [], "stuck_jobs": [],
        "anomalies": []}


def test_control_endpoints_are_free(sandbox):
    package_id = hourly(sandbox)[0]["task"]["packages"][0]["package_id"]
    sandbox.stats.reset()
    control(sandbox, "fail_package", package_id=package_id)
    control(sandbox, "truth", "GET")
    stats = control(sandbox, "stats", "GET").json()
    assert stats["credits_used"] == 0 and stats["by_endpoint"]["control"] == 3


# -- determinism --------------------------------------------------------------------------------

def history_after(steps: list[int], *, scenario: str = "normal", asked_at: int = 0) -> list[dict]:
    """Every job after the clock moved by `steps`, with a stop, a failure and a stuck run asked for
    (after `asked_at` of the steps) to start 10 hours in."""
    sandbox = Sandbox(jobs=600, seed=21, now=NOW, scenario=scenario)
    schedules = [s for s in sandbox.catalog("schedules") if s["status"] == "enabled"]
    package_id = schedules[1]["task"]["packages"][0]["package_id"]
    for number, step in enumerate(steps):
        if number == asked_at:
            at = NOW + timedelta(hours=10)
            sandbox.break_schedule(schedules[0]["id"], at)
            sandbox.fail_package(package_id, at)
            sandbox.stuck_package(package_id, at)
        sandbox.advance(step)
    return [sandbox.job(i) for i in sandbox.job_ids()] + [sandbox.truth()]


def test_same_seed_same_history_in_one_step_or_many():
    one = history_after([0, 2 * DAY])
    many = history_after([0] + [3 * HOUR] * 16)
    assert one == many and len(one) > 700
    assert history_after([0, 2 * DAY], scenario="healthy") == history_after([0] + [12 * HOUR] * 4,
                                                                             scenario="healthy")


@settings(max_examples=8, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(st.integers(0, 6 * HOUR), min_size=1, max_size=6), st.integers(0, 5))
def test_the_history_does_not_depend_on_the_steps_or_when_breakages_were_asked(steps, asked_at):
    """Breakages asked before their time (10 h in) give the same history, whatever the clock did."""
    total = sum(steps)
    asked_at = min(asked_at, len(steps) - 1)
    if sum(steps[:asked_at]) > 10 * HOUR:
        asked_at = 0
    moved = history_after(steps + [2 * DAY - total], asked_at=asked_at)
    assert moved == history_after([0, 2 * DAY])


# -- the command ----------------------------------------------------------------------------------

def test_sandbox_command_passes_scenario_and_days(monkeypatch):
    from click.testing import CliRunner

    import archiver.sandbox
    from archiver.cli import cli

    served = {}

    def serve_once(sandbox: Sandbox) -> None:
        try:
            served.update(scenario=sandbox.history.scenario.name, jobs=len(sandbox.job_ids()),
                          truth=control(sandbox, "truth", "GET").json())
        finally:
            sandbox.stop()

    monkeypatch.setattr(archiver.sandbox, "serve", serve_once)
    result = CliRunner().invoke(cli, ["sandbox", "--port", "0", "--scenario", "healthy", "--days", "2"])
    assert result.exit_code == 0, result.output
    assert served["scenario"] == "healthy" and served["truth"]["scenario"] == "healthy"
    assert 2 * 24 * 9 < served["jobs"] < 2 * 24 * 11   # 9 hourly runs, 15 daily, a few by hand
