"""The fault-injection suite: faults, kills, overlapping writers, signals and secrets.

Each test prints its figures (jobs, faults injected, archived, retries, kills survived).
"""

import base64
import json
import random
import signal
import subprocess

import pytest
from sqlalchemy import func, select, text

from archiver import models
from archiver.client import RetryPolicy, XplentyClient
from archiver.config import Secret
from archiver.sandbox import Sandbox
from archiver.store import Archive
from archiver.flows.by_id import sync_ids
from archiver.flows.runs import SyncOptions
from tests.sandboxed import KEY, NOW, archiver_cmd, cli_env, run_archiver, settings_for, signal_when_parked

FAST_RETRIES = RetryPolicy(max_attempts=12, backoff_base=0.005, backoff_max=0.05, min_429_wait=0.05)


def counts(db_url):
    archive = Archive.open(db_url)
    with archive.engine.connect() as conn:
        result = {
            "jobs": conn.execute(select(func.count()).select_from(models.JobRow)).scalar(),
            "distinct": conn.execute(select(func.count(func.distinct(models.JobRow.id)))).scalar(),
            "outputs": conn.execute(select(func.count()).select_from(models.JobOutputRow)).scalar(),
            "orphan_outputs": conn.execute(text(
                "SELECT COUNT(*) FROM job_outputs o LEFT JOIN jobs j ON j.id = o.job_id WHERE j.id IS NULL")).scalar(),
            "orphan_variables": conn.execute(text(
                "SELECT COUNT(*) FROM job_variables v LEFT JOIN jobs j ON j.id = v.job_id WHERE j.id IS NULL")).scalar(),
            "outcomes": conn.execute(select(models.SyncRunRow.outcome).order_by(models.SyncRunRow.id)).scalars().all(),
        }
        if conn.dialect.name == "sqlite":
            result["integrity"] = conn.exec_driver_sql("PRAGMA integrity_check").scalar()
    archive.close()
    return result


def expected_outputs(api):
    return sum(len(api.job(i)["outputs"]) for i in api.job_ids())


def test_2000_jobs_through_5xx_drops_truncation_and_429s(sqlite_url, figure):
    with Sandbox(jobs=2000, seed=41, now=NOW, error_rate=0.2, drop_rate=0.05, bad_json_rate=0.05,
                 throttle_rate=0.005, rate_limit=200, rate_window_s=1) as api:
        client = XplentyClient(api.url, api.account, Secret(KEY), policy=FAST_RETRIES)
        summary = sync_ids(settings_for(api, sqlite_url), api.job_ids(), SyncOptions(concurrency=16), client)
        faults = dict(api.stats.faults)
        got = counts(sqlite_url)
    assert summary.exit_code == 0 and summary.failed == 0
    assert (summary.inserted, got["jobs"], got["distinct"]) == (2000, 2000, 2000)
    assert faults["error"] > 200 and faults["drop"] > 50 and faults["bad_json"] > 50 and faults["rate_limited"] > 0
    figure(f"faults: 2000 jobs, injected {faults['error']} 5xx, {faults['drop']} drops, "
           f"{faults['bad_json']} truncated bodies, {faults['rate_limited']} 429s; archived "
           f"{summary.inserted}/2000 with {summary.retries} retries, 0 failed")


@pytest.fixture
def backend_url(request, sqlite_url, migrated_servers):
    """A migrated, empty archive on the backend named by the test's `backend` parameter."""
    from tests.conftest import truncate_all
    if request.param == "sqlite":
        return sqlite_url
    url = migrated_servers(request.param)
    truncate_all(url)
    return url


@pytest.mark.parametrize("backend_url", ["sqlite", "postgresql"], indirect=True)
def test_sigkill_at_random_points_then_rerun(backend_url, figure):
    db_url, backend = backend_url, backend_url.split(":")[0].split("+")[0]
    points = sorted(random.Random(43).sample(range(20, 700), 3))
    with Sandbox(jobs=800, seed=42, now=NOW) as api:
        for point in points:
            args = ["sync", *map(str, api.job_ids()), "--batch-size", "40", "--concurrency", "4"]
            code, _ = signal_when_parked(api, db_url, args, signal.SIGKILL, point, "get_job")
            assert code == -signal.SIGKILL   # killed at its (point+1)-th job read
            got = counts(db_url)
            assert got["jobs"] == got["distinct"] < 800
            assert got["orphan_outputs"] == got["orphan_variables"] == 0
        final = run_archiver(api, db_url, "sync", *map(str, api.job_ids()), "--json")
        assert final.returncode == 0, final.stderr
        summary = json.loads(final.stdout)
        got = counts(db_url)
        assert got["jobs"] == got["distinct"] == 800 and got["outputs"] == expected_outputs(api)
        assert summary["inserted"] + summary["unchanged"] == 800
    assert got["orphan_outputs"] == got["orphan_variables"] == 0
    assert got["outcomes"] == ["abandoned"] * len(points) + ["ok"]
    if backend == "sqlite":
        assert got["integrity"] == "ok"
    figure(f"kills: {backend}, {len(points)} SIGKILLs mid-run (after {', '.join(map(str, points))} job reads) "
           "survived; 800 jobs archived exactly once, no orphans"
           + (", integrity_check ok" if backend == "sqlite" else ""))


@pytest.mark.parametrize("backend_url", ["postgresql", "mysql"], indirect=True)
def test_eight_unlocked_writers_in_shuffled_order_equal_a_serial_run(backend_url, tmp_path, figure):
    db_url, backend = backend_url, backend_url.split(":")[0].split("+")[0]
    with Sandbox(jobs=500, seed=44, now=NOW) as api:
        newest = [api.job(i) for i in api.job_ids()]
    older = [dict(j, updated_at="2020-01-01T00:00:00Z", status="running") for j in newest[::3]]
    files = []
    for n in range(8):
        records = newest + older
        random.Random(n).shuffle(records)
        path = tmp_path / f"writer{n}.jsonl"
        path.write_text("\n".join(json.dumps(r) for r in records))
        files.append(path)
    procs = [subprocess.Popen(archiver_cmd("ingest", str(p), "--db", db_url, "--no-lock", "--batch-size", "60",
                                           "--account", "sandbox"),
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for p in files]
    results = [p.communicate(timeout=300) + (p.returncode,) for p in procs]
    for out, err, code in results:
        assert code == 0, err  # deadlocks may happen; each is retried, none escapes
    retried = sum(err.count("retrying it") for _, err, _ in results)
    archive = Archive.open(db_url)
    with archive.engine.connect() as conn:
        rows = {r.id: (r.status, r.updated_at, r.payload_hash) for r in conn.execute(
            select(models.JobRow.id, models.JobRow.status, models.JobRow.updated_at, models.JobRow.payload_hash))}
    archive.close()
    from archiver.parse import parse_job
    serial = {j.id: (j.status, j.updated_at, j.payload_hash) for j in map(parse_job, newest)}
    assert rows == serial
    figure(f"overlap: {backend}, 8 unlocked writers x {len(newest) + len(older)} payloads, {retried} "
           "transactions retried after a deadlock, none escaped; final state equals a serial run")


def test_sigterm_marks_the_run_interrupted_and_frees_the_lock(sqlite_url, figure):
    with Sandbox(jobs=400, seed=45, now=NOW) as api:
        args = ["sync", *map(str, api.job_ids()), "--concurrency", "2", "--batch-size", "20"]
        code, _ = signal_when_parked(api, sqlite_url, args, signal.SIGTERM, 60, "get_job")  # mid-run
        assert code == 143
        assert counts(sqlite_url)["outcomes"] == ["interrupted"]
        again = run_archiver(api, sqlite_url, "sync", *map(str, api.job_ids()))  # the lock is free
        assert again.returncode == 0, again.stderr
    got = counts(sqlite_url)
    assert got["jobs"] == got["distinct"] == 400 and got["integrity"] == "ok"
    assert got["outcomes"] == ["interrupted", "ok"]
    figure("SIGTERM: exit 143, run marked interrupted, lock freed; the re-run archived all 400 jobs")


def test_sandbox_gate_holds_requests_until_released_and_never_blocks_stop():
    """The gate the kill tests rely on: n requests pass, the next waits, release() serves it."""
    import threading

    import requests

    api = Sandbox(jobs=5, seed=49, now=NOW).start()
    url = f"{api.url}/{api.account}/api/jobs/{api.job_ids()[0]}"
    answers = []

    def get():
        try:
            answers.append(requests.get(url, auth=(KEY, ""), timeout=60).status_code)
        except requests.RequestException as exc:   # the server went away while it waited
            answers.append(type(exc).__name__)

    try:
        api.hold_after(1, "get_job")
        get()                                        # the first passes
        assert requests.get(f"{api.url}/{api.account}/api/jobs", auth=(KEY, ""), timeout=60).ok  # other endpoint
        late = threading.Thread(target=get)
        late.start()
        api.wait_held()
        assert answers == [200] and api.held == 1
        api.release()
        late.join(timeout=60)
        assert answers == [200, 200] and api.held == 0
        api.hold_after(0)
        parked = threading.Thread(target=get, daemon=True)
        parked.start()
        api.wait_held()
    finally:
        api.stop()
    parked.join(timeout=60)
    assert not parked.is_alive() and len(answers) == 3   # stop() let the parked request go


def test_non_local_plain_http_is_refused_before_any_connection(sqlite_url, tmp_path):
    with Sandbox(jobs=5, seed=46, now=NOW) as api:
        env = cli_env(api, sqlite_url) | {"XPLENTY_API_URL": "http://api.example.com"}
        result = subprocess.run(archiver_cmd("sync", "1"), env=env, capture_output=True, text=True)
    assert result.returncode == 2 and "http://" in result.stderr and "api.example.com" in result.stderr


def test_bad_ids_are_all_listed_without_a_connection(sqlite_url):
    with Sandbox(jobs=5, seed=47, now=NOW) as api:
        result = run_archiver(api, sqlite_url, "sync", "1_000", "+5", "٣", " 7", "9999999999999999999999", "12")
        assert api.stats.requests == 0
    assert result.returncode == 2
    for token in ("1_000", "+5", "٣", " 7", "9999999999999999999999"):
        assert repr(token) in result.stderr


def test_debug_run_never_shows_the_key_or_the_database_password(migrated_servers):
    url = migrated_servers("postgresql")
    password = "db-pass-Zq81x"
    with_password = url.replace("postgres@", f"postgres:{password}@")
    secret = "key-7f3a9c-not-for-logs"
    with Sandbox(jobs=30, seed=48, now=NOW, api_key=secret) as api:
        env = cli_env(api, with_password, key=secret) | {"ARCHIVER_LOG_LEVEL": "debug"}
        runs = [subprocess.run(archiver_cmd(*args), env=env, capture_output=True, text=True)
                for args in (["sync", *map(str, api.job_ids()[:10]), "--json"], ["sync", "--incremental"],
                             ["db", "current"], ["sync", "999999"])]
    output = "".join(r.stdout + r.stderr for r in runs)
    assert "DEBUG" in output and runs[0].returncode == 0
    encoded = base64.b64encode(f"{secret}:".encode()).decode()
    for needle in (secret, encoded, password):
        assert needle not in output
    assert "***" in runs[2].stdout


def test_nul_and_emoji_are_stored_on_every_backend(db_url, payload):
    from archiver.parse import parse_job
    raw = payload("job-v1-failed.json")
    raw["errors"] = "bad\x00byte \U0001F525"
    archive = Archive.open(db_url)
    result = archive.write_jobs([parse_job(raw)])
    with archive.engine.connect() as conn:
        stored = conn.execute(select(models.JobRow.errors)).scalar()
    archive.close()
    assert result.inserted == [304] and stored == "bad\ufffdbyte \U0001F525"
