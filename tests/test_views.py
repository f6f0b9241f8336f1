"""The BI views and `archiver report`, on every backend, against counts computed here."""

import json
import shutil
from collections import Counter, defaultdict
from datetime import datetime, timezone

import pytest
from sqlalchemy import text

from archiver import database
from archiver.fields import TERMINAL_STATUSES
from archiver.parse import parse_timestamp
from archiver.flows.report import failures_report, parse_since, percentile, runtimes_report, status_report
from archiver.sandbox import Sandbox
from archiver.store import Archive
from archiver.flows.incremental import IncrementalOptions, sync_incremental
from archiver.flows.runs import SyncOptions
from tests.clirun import run_cli
from tests.conftest import BACKENDS, drop_everything, server_url
from tests.sandboxed import NOW, settings_for


@pytest.fixture(scope="module")
def history():
    with Sandbox(jobs=600, seed=31, now=NOW) as api:
        yield api, {i: api.job(i) for i in api.job_ids()}


@pytest.fixture(scope="module", params=BACKENDS)
def synced_url(request, history, tmp_path_factory, sqlite_template) -> str:
    """The history synced once per backend into an archive of its own (the tests below only
    read it): a copy of the SQLite template, or the server database named after the configured
    one plus "_views", which no other test touches."""
    if request.param == "sqlite":
        path = tmp_path_factory.mktemp("views") / "archive.db"
        shutil.copy(sqlite_template, path)
        url = f"sqlite:///{path}"
    else:
        url = server_url(request.param, suffix="_views")
        drop_everything(url)
        engine = database.make_engine(url)
        database.upgrade(engine)
        engine.dispose()
    api, _ = history
    summary = sync_incremental(settings_for(api, url), SyncOptions(), IncrementalOptions())
    assert summary.exit_code == 0
    return url


@pytest.fixture
def synced(history, synced_url):
    archive = Archive.open(synced_url)
    yield archive, history[1]
    archive.close()


def query(archive, sql):
    with archive.engine.connect() as conn:
        return [r._asdict() for r in conn.execute(text(sql))]


def day_of(value: str) -> str:
    return parse_timestamp(value).date().isoformat()


def test_job_runs_has_one_row_per_job_with_derived_times(synced):
    archive, jobs = synced
    rows = {r["job_id"]: r for r in query(archive, "SELECT * FROM job_runs")}
    assert set(rows) == set(jobs)
    for job_id, job in list(jobs.items())[:50]:
        row = rows[job_id]
        assert row["package_name"] == job["package"]["name"]
        assert row["cluster_name"] == job["cluster"]["name"]
        assert row["is_terminal"] == (job["status"] in TERMINAL_STATUSES)
        assert row["run_seconds"] == job["runtime_in_seconds"]
        assert str(row["day"])[:10] == day_of(job["created_at"])
        if job["started_at"]:
            queue = parse_timestamp(job["started_at"]) - parse_timestamp(job["created_at"])
            assert row["queue_seconds"] == round(queue.total_seconds())
        assert row["creator_name"] == job["creator"]["display_name"]
        assert row["attempt"] == job["attempts"]


def test_daily_package_stats_match_independent_counts(synced):
    archive, jobs = synced
    expected = defaultdict(Counter)
    runtimes = defaultdict(list)
    for job in jobs.values():
        key = (day_of(job["created_at"]), job["package_id"])
        expected[key]["jobs"] += 1
        expected[key][job["status"]] += 1
        if job["status"] in TERMINAL_STATUSES:
            runtimes[key].append(job["runtime_in_seconds"])
    rows = query(archive, "SELECT * FROM daily_package_stats")
    assert len(rows) == len(expected)
    for row in rows:
        key = (str(row["day"])[:10], row["package_id"])
        want = expected[key]
        assert (row["jobs"], row["completed"], row["failed"], row["stopped"]) == \
            (want["jobs"], want["completed"], want["failed"], want["stopped"])
        finished = want["completed"] + want["failed"] + want["stopped"]
        if finished:
            assert float(row["failure_rate"]) == pytest.approx(want["failed"] / finished)
            assert float(row["avg_runtime_seconds"]) == pytest.approx(sum(runtimes[key]) / len(runtimes[key]))
            assert row["max_runtime_seconds"] == max(runtimes[key])


def test_job_failures_lists_every_failed_job(synced):
    archive, jobs = synced
    rows = query(archive, "SELECT job_id, package_name, errors FROM job_failures")
    failed = {i: j for i, j in jobs.items() if j["status"] == "failed"}
    assert {r["job_id"] for r in rows} == set(failed)
    assert all(r["errors"] == failed[r["job_id"]]["errors"] for r in rows)


def test_schedule_attempts_group_retries_into_runs(synced):
    archive, jobs = synced
    rows = query(archive, "SELECT * FROM schedule_attempts")
    scheduled = [j for j in jobs.values() if j["creator"]["type"] == "Schedule"]
    assert sum(int(r["attempts"]) for r in rows) == len(scheduled)
    firsts = [j for j in scheduled if j["attempts"] == 0]
    assert len(rows) == len(firsts)
    recovered = [r for r in rows if r["outcome"] == "recovered_on_retry"]
    assert recovered, "the sandbox history has schedule retries that succeed"
    for r in recovered:
        assert r["final_status"] == "completed" and int(r["failed_attempts"]) >= 1
        assert jobs[r["last_job_id"]]["status"] == "completed" and jobs[r["first_job_id"]]["status"] == "failed"


def test_reports_agree_with_the_history(synced):
    archive, jobs = synced
    period = parse_since("90d", now=NOW)
    status = {r["status"]: r["jobs"] for r in status_report(archive.engine, period)}
    assert status == dict(Counter(j["status"] for j in jobs.values()))
    failures = failures_report(archive.engine, period)
    by_package = Counter(j["package"]["name"] for j in jobs.values() if j["status"] == "failed")
    assert {r["package"]: r["failed"] for r in failures} == dict(by_package)
    runtimes = {r["package"]: r for r in runtimes_report(archive.engine, period)}
    some = next(iter(runtimes))
    values = [j["runtime_in_seconds"] for j in jobs.values()
              if j["package"]["name"] == some and j["status"] in TERMINAL_STATUSES]
    assert runtimes[some]["p50_seconds"] == round(percentile(values, 50))
    assert runtimes[some]["max_seconds"] == max(values)


def test_status_change_is_recorded_once_across_running_to_completed(db_url):
    with Sandbox(jobs=200, seed=32, now=NOW) as api:
        running = [i for i in api.job_ids() if api.job(i)["status"] == "running"]
        assert running
        settings = settings_for(api, db_url)
        from archiver.flows.by_id import sync_ids
        sync_ids(settings, running[:1], SyncOptions())
        sync_ids(settings, running[:1], SyncOptions())  # no change: no row
        api.advance(12 * 3600)
        final = api.job(running[0])["status"]
        sync_ids(settings, running[:1], SyncOptions())
    archive = Archive.open(db_url)
    rows = query(archive, f"SELECT from_status, to_status FROM job_status_changes WHERE job_id = {running[0]} "
                          "ORDER BY id")
    runs = query(archive, "SELECT outcome FROM sync_runs")
    archive.close()
    assert [(r["from_status"], r["to_status"]) for r in rows] == [(None, "running"), ("running", final)]
    assert len(runs) == 3 and {r["outcome"] for r in runs} == {"ok"}


def test_report_command_formats(capsys, monkeypatch, synced_url):
    db_url = synced_url
    table = run_cli(capsys, monkeypatch, ["report", "failures", "--db", db_url, "--since", "3650d"])
    assert table.code == 0 and "failure_rate" in table.out.splitlines()[0]
    as_json = run_cli(capsys, monkeypatch, ["report", "runtimes", "--db", db_url, "--since", "2020-01-01",
                                            "--format", "json", "--limit", "3"])
    rows = json.loads(as_json.out)
    assert len(rows) == 3 and {"p50_seconds", "p95_seconds", "max_seconds", "p50_change"} <= set(rows[0])
    csv = run_cli(capsys, monkeypatch, ["report", "status", "--db", db_url, "--since", "3650d", "--format", "csv"])
    assert csv.out.splitlines()[0] == "status,jobs,share"
    bad = run_cli(capsys, monkeypatch, ["report", "status", "--db", db_url, "--since", "yesterday"])
    assert bad.code == 2 and "--since" in bad.err


def test_report_on_a_missing_archive_is_a_clear_error(capsys, monkeypatch, tmp_path):
    result = run_cli(capsys, monkeypatch, ["report", "status", "--db", f"sqlite:///{tmp_path / 'nope.db'}"])
    assert result.code == 2 and "no archive" in result.err
    assert not (tmp_path / "nope.db").exists()


def test_parse_since():
    now = datetime(2026, 11, 29, tzinfo=timezone.utc)
    assert parse_since("7d", now).start == datetime(2026, 11, 22, tzinfo=timezone.utc)
    assert parse_since("2026-11-01", now).start == datetime(2026, 11, 1, tzinfo=timezone.utc)
    assert parse_since("24h", now).previous.start == datetime(2026, 11, 27, tzinfo=timezone.utc)


def test_failures_report_counts_whole_days_and_partial_ends_alike(synced):
    """Whole days come from the daily rollups, the partial days at both ends from jobs: the sums
    are the jobs created in the period, whatever the time of day it starts and ends, and the
    usual error is the most frequent signature of the package's failures."""
    from datetime import timedelta

    from archiver.errortext import signature
    from archiver.flows.report import Period
    archive, jobs = synced
    period = Period(NOW - timedelta(days=3, hours=5, minutes=7), NOW - timedelta(hours=7))  # history: 4.5 days
    inside = [j for j in jobs.values() if period.start <= parse_timestamp(j["created_at"]) < period.end]
    want = defaultdict(Counter)
    texts = defaultdict(Counter)
    for j in inside:
        counts = want[j["package_id"]]
        counts["jobs"] += 1
        counts["finished"] += j["status"] in TERMINAL_STATUSES
        if j["status"] == "failed":
            counts["failed"] += 1
            texts[j["package_id"]][(signature(j["errors"]) or "")[:120] or "(no error text)"] += 1
    got = {r["package_id"]: r for r in failures_report(archive.engine, period)}
    assert set(got) == {p for p, c in want.items() if c["failed"]}
    for package_id, row in got.items():
        counts = want[package_id]
        assert (row["jobs"], row["finished"], row["failed"]) == (counts["jobs"], counts["finished"], counts["failed"])
        assert row["failure_rate"] == round(counts["failed"] / counts["finished"], 4)
        assert texts[package_id][row["top_error"]] == max(texts[package_id].values())


def test_runtime_percentiles_merge_whole_days_and_partial_ends_exactly(db_url):
    """report runtimes reads whole days from the rollup's runtimes and the partial days at the
    ends of the period and of the one before from jobs: every package's n, p50, p95, max and
    previous p50 equal percentile() over the jobs themselves, also after jobs finish, move to
    another day or package, and change runtime (every write keeps the rollup's runtimes)."""
    import random
    from datetime import timedelta

    from archiver.parse import parse_job

    rnd = random.Random(11)
    now = datetime(2026, 11, 28, 15, 37, tzinfo=timezone.utc)
    archive = Archive.open(db_url, account="acme")
    jobs = {}

    def snap(job_id, created, package, status, runtime, updated):
        return {"id": job_id, "status": status, "package_id": package, "created_at": created.isoformat(),
                "updated_at": updated.isoformat(), "runtime_in_seconds": runtime}

    for job_id in range(1, 601):
        created = now - timedelta(minutes=rnd.randint(1, 20 * 24 * 60))
        status = rnd.choice(["completed", "completed", "failed", "stopped", "running"])
        jobs[job_id] = snap(job_id, created, rnd.choice([7, 8, 9]), status, rnd.randint(1, 900), created)
    for start in range(0, 600, 97):
        archive.write_jobs([parse_job(j) for j in list(jobs.values())[start:start + 97]])
    later = now + timedelta(hours=1)
    for job_id in rnd.sample(sorted(jobs), 120):   # finish, move day or package, change runtime
        old = parse_timestamp(jobs[job_id]["created_at"])
        jobs[job_id] = snap(job_id, old - timedelta(hours=rnd.choice([0, 0, 30])), rnd.choice([7, 8, 9]),
                            rnd.choice(["completed", "failed"]), rnd.randint(1, 900), later)
    archive.write_jobs([parse_job(j) for j in jobs.values() if j["updated_at"] == later.isoformat()])

    period = parse_since("7d", now=now)   # 15:37 seven days back: partial days at both ends

    def values(start, end, package):
        return [j["runtime_in_seconds"] for j in jobs.values() if j["package_id"] == package
                and j["status"] in TERMINAL_STATUSES and start <= parse_timestamp(j["created_at"]) < end]

    rows = {r["package_id"]: r for r in runtimes_report(archive.engine, period)}
    assert set(rows) == {7, 8, 9}
    for package, row in rows.items():
        now_, before = values(period.start, period.end, package), values(period.previous.start, period.start, package)
        assert (row["runs"], row["max_seconds"]) == (len(now_), max(now_))
        assert (row["p50_seconds"], row["p95_seconds"]) == (round(percentile(now_, 50)), round(percentile(now_, 95)))
        assert row["previous_p50_seconds"] == round(percentile(before, 50))
    archive.close()


def test_a_busy_day_keeps_every_runtime(db_url):
    """A package's day with 400 finished jobs: its runtimes text passes MySQL's default
    group_concat_max_len (1,024 bytes), and report runtimes still counts every run."""
    from datetime import timedelta

    from archiver.parse import parse_job

    day = datetime(2026, 11, 20, tzinfo=timezone.utc)
    archive = Archive.open(db_url, account="acme")
    runtimes = [1000 + 7 * i for i in range(400)]
    archive.write_jobs([parse_job({"id": i + 1, "status": "completed", "package_id": 5,
                                   "created_at": (day + timedelta(minutes=3 * i)).isoformat(),
                                   "updated_at": (day + timedelta(minutes=3 * i + 1)).isoformat(),
                                   "runtime_in_seconds": runtime}) for i, runtime in enumerate(runtimes)])
    (row,) = runtimes_report(archive.engine, parse_since("2026-11-18", now=day + timedelta(days=3)))
    if archive.engine.dialect.name == "mysql":   # MariaDB's own default (1 MiB) would hide a cut
        with archive.engine.connect() as conn:
            assert conn.execute(text("SELECT @@SESSION.group_concat_max_len")).scalar() >= 2**30
    archive.close()
    assert (row["runs"], row["p50_seconds"], row["max_seconds"]) == (400, round(percentile(runtimes, 50)), max(runtimes))
