"""`archiver doctor`: real HTTP to the sandbox, real databases, the command line as a user runs it."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys

import pytest
from sqlalchemy import text

from archiver import database, dialect
from archiver.flows.doctor import CHECKS, STATUSES, media_version, printable
from archiver.sandbox import Sandbox
from archiver.store import Archive
from tests.clirun import run_cli
from tests.sandboxed import archiver_cmd, cli_env

KEY = "doctor-s3cret-key-7f3a9c"


@pytest.fixture(scope="module")
def api():
    with Sandbox(jobs=50, seed=1, api_key=KEY) as sandbox:
        yield sandbox


def env_for(api: Sandbox, db_url: str, key: str = KEY, **extra: str) -> dict[str, str]:
    return {"XPLENTY_ACCOUNT_ID": api.account, "XPLENTY_API_KEY": key, "XPLENTY_API_URL": api.url,
            "ARCHIVER_DATABASE_URL": db_url, **extra}


def doctor(capsys, monkeypatch, env: dict[str, str], *args: str):
    result = run_cli(capsys, monkeypatch, ["doctor", *args], env)
    assert KEY not in result.out + result.err
    return result


def statuses(capsys, monkeypatch, env: dict[str, str], *args: str) -> tuple[int, dict[str, dict]]:
    result = doctor(capsys, monkeypatch, env, "--json", *args)
    return result.code, {c["name"]: c for c in json.loads(result.out)["checks"]}


def test_all_checks_pass_against_the_sandbox_then_name_the_last_sync(capsys, monkeypatch, api, db_url):
    env = env_for(api, db_url)
    credits = api.stats.credits_used
    result = doctor(capsys, monkeypatch, env)
    assert result.code == 0, result.out
    assert api.stats.credits_used == credits  # one free call
    lines = result.out.splitlines()
    assert [line.split(":")[0].split(None, 1)[1] for line in lines[:-1]] == list(CHECKS)
    assert not [line for line in lines[:-1] if not line.startswith("ok ")], result.out
    assert lines[-1] == "doctor: all checks passed"
    assert "accepted the key for account 'sandbox'" in result.out
    assert "api version: not stated in the answer" in result.out  # the sandbox's Content-Type has none
    assert "schema: at head" in result.out and "last sync: never" in result.out

    assert run_cli(capsys, monkeypatch, ["sync", "--incremental"], env).code == 0
    code, checks = statuses(capsys, monkeypatch, env)
    assert code == 0
    assert "incremental: 50 jobs archived (50 new" in checks["last sync"]["detail"]
    assert "anomaly verdicts" not in checks["last sync"]["detail"]


def test_the_last_sync_says_how_many_jobs_wait_for_their_verdicts(capsys, monkeypatch, api, sqlite_url):
    """A run killed while a worker scored its batches left jobs listed in unscored_jobs."""
    from sqlalchemy import insert, select

    from archiver import database, models
    env = env_for(api, sqlite_url)
    assert run_cli(capsys, monkeypatch, ["sync", "--incremental"], env).code == 0
    engine = database.make_engine(sqlite_url)
    with engine.begin() as conn:
        ids = conn.execute(select(models.JobRow.id).limit(3)).scalars().all()
        conn.execute(insert(models.UnscoredJobRow.__table__), [{"job_id": i} for i in ids])
    engine.dispose()
    code, checks = statuses(capsys, monkeypatch, env)
    assert code == 0 and checks["last sync"]["status"] == "ok"
    assert "3 jobs wait for their anomaly verdicts" in checks["last sync"]["detail"]


def test_as_a_subprocess_with_the_key_from_a_private_file(api, sqlite_url, tmp_path):
    key_file = tmp_path / "key"
    key_file.write_text(KEY + "\n")
    key_file.chmod(0o600)
    env = cli_env(api, sqlite_url, key="") | {"XPLENTY_API_KEY_FILE": str(key_file)}
    result = subprocess.run(archiver_cmd("doctor"), env=env, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stdout + result.stderr
    assert f"api key: from XPLENTY_API_KEY_FILE {key_file} (mode 0600)" in result.stdout
    assert KEY not in result.stdout + result.stderr


def test_a_key_file_others_can_read_is_a_problem_with_the_chmod(capsys, monkeypatch, api, sqlite_url, tmp_path):
    key_file = tmp_path / "key"
    key_file.write_text(KEY)
    key_file.chmod(0o644)
    env = env_for(api, sqlite_url, key="", XPLENTY_API_KEY_FILE=str(key_file))
    result = doctor(capsys, monkeypatch, env)
    assert result.code == 2
    assert f"-> fix: chmod 600 {key_file}" in result.out and "mode 0644" in result.out
    assert "ok       credentials" in result.out  # the key itself still works


def test_a_wrong_account_is_exit_2_naming_it(capsys, monkeypatch, api, sqlite_url):
    code, checks = statuses(capsys, monkeypatch, env_for(api, sqlite_url), "--account", "acme-typo")
    assert code == 2
    assert checks["credentials"]["status"] == "problem" and "'acme-typo'" in checks["credentials"]["detail"]
    assert "XPLENTY_ACCOUNT_ID" in checks["credentials"]["fix"]
    assert checks["api version"]["status"] == checks["rate budget"]["status"] == "skipped"


def test_a_refused_key_is_exit_3_and_wins_over_a_configuration_problem(capsys, monkeypatch, api, tmp_path):
    wrong = "wrong-key-0123456789"
    outdated = tmp_path / "old.db"
    engine = database.make_engine(f"sqlite:///{outdated}")
    database.upgrade(engine, "0003")
    engine.dispose()
    for db_url in (f"sqlite:///{tmp_path / 'new.db'}", f"sqlite:///{outdated}"):
        result = doctor(capsys, monkeypatch, env_for(api, db_url, key=wrong))
        assert result.code == 3, result.out
        assert "refused the key for account 'sandbox'" in result.out and "HTTP 401" in result.out
        assert wrong not in result.out + result.err


def test_missing_account_and_key_are_exit_2_and_the_api_is_not_asked(capsys, monkeypatch, api, sqlite_url):
    before = api.stats.requests
    code, checks = statuses(capsys, monkeypatch, {"XPLENTY_API_URL": api.url, "ARCHIVER_DATABASE_URL": sqlite_url})
    assert code == 2
    assert checks["account"]["status"] == checks["api key"]["status"] == "problem"
    assert checks["credentials"]["status"] == "skipped"
    assert checks["lock"]["status"] == "skipped"  # per account
    assert api.stats.requests == before


def test_a_missing_driver_is_exit_2_with_the_pip_line(capsys, monkeypatch, api):
    result = doctor(capsys, monkeypatch, env_for(api, "postgresql+psycopg2://u:hunter2@127.0.0.1/x"))
    assert result.code == 2
    assert "-> fix: pip install 'xplenty-archiver[postgres]'" in result.out
    assert "hunter2" not in result.out and "u:***@" in result.out


def test_an_unreachable_server_is_exit_2_with_the_password_masked(capsys, monkeypatch, api):
    result = doctor(capsys, monkeypatch, env_for(api, "postgresql+psycopg://u:hunter2@127.0.0.1:1/x"))
    assert result.code == 2 and "cannot open the archive" in result.out
    assert "hunter2" not in result.out + result.err


def test_an_outdated_schema_is_exit_2_naming_db_upgrade(capsys, monkeypatch, api, tmp_path):
    path = tmp_path / "old.db"
    engine = database.make_engine(f"sqlite:///{path}")
    database.upgrade(engine, "0003")
    engine.dispose()
    code, checks = statuses(capsys, monkeypatch, env_for(api, f"sqlite:///{path}"))
    assert code == 2
    assert checks["schema"]["status"] == "problem" and "0003" in checks["schema"]["detail"]
    assert checks["schema"]["fix"] == "run `archiver db upgrade`"
    assert checks["last sync"]["status"] == "skipped"


def test_a_newer_schema_says_upgrade_the_archiver(capsys, monkeypatch, api, sqlite_url):
    engine = database.make_engine(sqlite_url)
    with engine.begin() as conn:
        conn.execute(text("UPDATE alembic_version SET version_num = '9999_from_the_future'"))
    engine.dispose()
    code, checks = statuses(capsys, monkeypatch, env_for(api, sqlite_url))
    assert code == 2 and "newer than this archiver" in checks["schema"]["detail"]
    assert checks["schema"]["fix"] == "upgrade xplenty-archiver"


def test_a_held_lock_is_a_warning_naming_the_run_not_a_failure(capsys, monkeypatch, api, db_url):
    holder = Archive.open(db_url, api.account)
    try:
        with dialect.run_lock(holder.engine, api.account, wait=0):
            holder.start_run("incremental")
            result = doctor(capsys, monkeypatch, env_for(api, db_url))
    finally:
        holder.close()
    assert result.code == 0, result.out
    assert f"warning  lock: held by another run (pid {os.getpid()} on " in result.out
    assert ": incremental run started" in result.out
    assert result.out.splitlines()[-1] == "doctor: all checks passed (1 warning(s))"
    # released at once: the lock is free again for the next run
    after = Archive.open(db_url, api.account)
    try:
        with after.run_lock():
            pass
    finally:
        after.close()


def test_json_shape(capsys, monkeypatch, api, sqlite_url):
    result = doctor(capsys, monkeypatch, env_for(api, sqlite_url), "--json", "--account", "nobody")
    data = json.loads(result.out)
    assert set(data) == {"checks", "exit_code"} and data["exit_code"] == result.code == 2
    assert [c["name"] for c in data["checks"]] == list(CHECKS)
    for check in data["checks"]:
        assert set(check) == {"name", "status", "detail", "fix"} and check["status"] in STATUSES
        assert isinstance(check["detail"], str) and check["detail"]
        assert check["fix"] is not None if check["status"] == "problem" else True
        assert check["fix"] is None if check["status"] in ("ok", "skipped") else True


def test_a_sqlite_archive_that_does_not_exist_is_not_created(capsys, monkeypatch, api, tmp_path):
    folder = tmp_path / "archives"
    folder.mkdir()
    result = doctor(capsys, monkeypatch, env_for(api, f"sqlite:///{folder / 'new.db'}"))
    assert result.code == 0, result.out
    assert "will be created by the first sync" in result.out
    assert "schema: empty: the first sync migrates it" in result.out
    assert list(folder.iterdir()) == []  # no archive, no lock file, no journal


def test_a_sqlite_folder_that_does_not_exist_is_exit_2(capsys, monkeypatch, api, tmp_path):
    missing = tmp_path / "no" / "such"
    result = doctor(capsys, monkeypatch, env_for(api, f"sqlite:///{missing / 'a.db'}"))
    assert result.code == 2 and f"the folder {missing} does not exist" in result.out
    assert f"mkdir -p {missing}" in result.out
    assert not (tmp_path / "no").exists()


def test_an_empty_server_database_says_the_first_sync_migrates_it(capsys, monkeypatch, api, empty_db_url):
    code, checks = statuses(capsys, monkeypatch, env_for(api, empty_db_url))
    assert code == 0, checks
    assert checks["schema"]["detail"] == "empty: the first sync migrates it"
    assert checks["last sync"]["detail"] == "never"
    if empty_db_url.startswith("sqlite"):
        assert not os.path.exists(empty_db_url.removeprefix("sqlite:///"))


def test_text_from_the_environment_and_the_api_is_escaped(capsys, monkeypatch, api, sqlite_url):
    result = doctor(capsys, monkeypatch, env_for(api, sqlite_url), "--account", "evil\x1b[2J\u202eacct")
    assert result.code == 2
    assert "\x1b" not in result.out and "\u202e" not in result.out
    assert "\\x1b[2J" in result.out
    assert printable("a\nb\x00c\u202ed é") == "a\\nb\\x00c\\u202ed é"


def test_plain_http_to_a_remote_host_is_refused_unless_allowed(capsys, monkeypatch, sqlite_url):
    env = {"XPLENTY_ACCOUNT_ID": "acme", "XPLENTY_API_KEY": KEY, "ARCHIVER_DATABASE_URL": sqlite_url}
    code, checks = statuses(capsys, monkeypatch, env, "--api-url", "http://api.example.invalid")
    assert code == 2 and "refusing plain http://" in checks["api url"]["detail"]
    assert checks["credentials"]["status"] == "skipped"


def test_the_version_is_read_from_the_media_type():
    assert media_version("application/vnd.xplenty+json; version=2") == "2"
    assert media_version('application/vnd.xplenty+json; charset=utf-8; Version="1"') == "1"
    assert media_version("application/json; charset=utf-8") is None
    assert media_version(None) is None


def test_the_sqlite_lock_file_is_not_made_by_looking(capsys, monkeypatch, api, tmp_path, sqlite_template):
    path = tmp_path / "archive.db"
    shutil.copy(sqlite_template, path)
    code, checks = statuses(capsys, monkeypatch, env_for(api, f"sqlite:///{path}"))
    assert code == 0 and checks["lock"]["detail"] == "free (no run has taken it yet)"
    assert sorted(p.name for p in tmp_path.iterdir() if "lock" in p.name) == []


def test_a_leftover_running_row_of_a_dead_process_is_not_named_as_the_holder(capsys, monkeypatch, api, db_url):
    gone = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True,
                          text=True, check=True)
    dead_pid = int(gone.stdout)
    holder = Archive.open(db_url, api.account)
    try:
        run_id = holder.start_run("incremental")
        with holder.engine.begin() as conn:
            conn.execute(text("UPDATE sync_runs SET pid = :p WHERE id = :i"), {"p": dead_pid, "i": run_id})
        with dialect.run_lock(holder.engine, api.account, wait=0):
            result = doctor(capsys, monkeypatch, env_for(api, db_url))
    finally:
        holder.close()
    assert result.code == 0 and "warning  lock: held by another run (pid " in result.out
    assert f"pid {dead_pid}" not in result.out


@pytest.mark.parametrize("setting, detail", [
    (None, "anomaly scoring: in a second process once a run has written 2,000 jobs (2 CPUs)"),
    ("off", "anomaly scoring: in the run's process (ARCHIVER_SCORING_WORKER=off)"),
    ("500", "anomaly scoring: in a second process once a run has written 500 jobs (ARCHIVER_SCORING_WORKER=500)"),
])
def test_doctor_says_where_anomalies_are_scored(capsys, monkeypatch, sqlite_url, setting, detail):
    from archiver.flows import scoring

    monkeypatch.setattr(scoring, "available_cpus", lambda: 2)
    monkeypatch.setattr(scoring, "CGROUP_ROOT", "/nonexistent/cgroup")
    env = {"ARCHIVER_DATABASE_URL": sqlite_url} | ({scoring.SETTING: setting} if setting else {})
    result = run_cli(capsys, monkeypatch, ["doctor"], env)
    assert detail in result.out


def test_a_bad_scoring_setting_is_a_doctor_problem_shown_escaped(capsys, monkeypatch, sqlite_url):
    code, checks = statuses(capsys, monkeypatch, {"ARCHIVER_DATABASE_URL": sqlite_url,
                                                  "ARCHIVER_SCORING_WORKER": "soon\x1b[2J"})
    found = checks["anomaly scoring"]
    assert code == 2 and found["status"] == "problem" and "\x1b" not in found["detail"]
    assert "ARCHIVER_SCORING_WORKER" in found["detail"] and "auto, off or a number of jobs" in found["fix"]
