"""The first hour of a new user: options checked before any request, plain answers, no
surprises on disk."""

import json
import os
import stat
import subprocess

from sqlalchemy import select

from archiver import models
from archiver.sandbox import Sandbox
from archiver.store import Archive
from tests.sandboxed import NOW, archiver_cmd, cli_env, run_archiver


def test_options_are_checked_before_any_request(sqlite_url):
    with Sandbox(jobs=20, seed=31, now=NOW) as api:
        bad_status = run_archiver(api, sqlite_url, "sync", "--incremental", "--status", "finished")
        bad_since = run_archiver(api, sqlite_url, "sync", "--incremental", "--since", "last tuesday")
        requests = api.stats.requests
    assert bad_status.returncode == 2 and "'finished' is not one of" in bad_status.stderr
    assert bad_since.returncode == 2 and "use a span like 7d" in bad_since.stderr
    assert requests == 0


def test_since_takes_the_forms_report_takes(sqlite_url):
    with Sandbox(jobs=200, seed=31, now=NOW) as api:
        for since in ("30d", "2026-11-27", "2026-11-27T06:00:00Z"):
            result = run_archiver(api, sqlite_url, "sync", "--incremental", "--since", since, "--json")
            assert result.returncode == 0, result.stderr
            assert json.loads(result.stdout)["requested"] > 0


def test_json_keeps_text_as_it_is_and_times_in_utc_with_z(sqlite_url):
    with Sandbox(jobs=300, seed=34, now=NOW) as api:
        summary = json.loads(run_archiver(api, sqlite_url, "sync", "--incremental", "--json").stdout)
        failures = run_archiver(api, sqlite_url, "report", "failures", "--since", "2026-09-01", "--format", "json")
    assert summary["high_water_mark"].endswith("Z") and "T" in summary["high_water_mark"]
    # the usual error is a signature (quoted values masked): its dash and emoji stay as they are
    assert "\\u" not in failures.stdout and "schema — did the export change? 🤔" in failures.stdout


def test_db_current_never_creates_a_file_and_an_unknown_revision_is_a_usage_error(tmp_path):
    path = tmp_path / "not-yet.db"
    url = f"sqlite:///{path}"
    with Sandbox(jobs=1, seed=31, now=NOW) as api:
        current = run_archiver(api, url, "db", "current")
        created = path.exists()
        unknown = run_archiver(api, url, "db", "upgrade", "9999")
    assert current.returncode == 0 and "no archive" in current.stdout and not created
    assert unknown.returncode == 2 and "9999" in unknown.stderr and "unexpected" not in unknown.stderr
    assert len(unknown.stderr.strip().splitlines()) == 1


def test_the_lock_file_is_private_like_the_archive(tmp_path):
    url = f"sqlite:///{tmp_path / 'a.db'}"
    with Sandbox(jobs=5, seed=31, now=NOW) as api:
        assert run_archiver(api, url, "sync", "--incremental").returncode == 0
    locks = [p for p in os.listdir(tmp_path) if p.endswith(".lock")]
    assert locks and all(stat.S_IMODE(os.stat(tmp_path / p).st_mode) == 0o600 for p in locks + ["a.db"])


def test_ingest_without_an_account_warns_and_a_later_ingest_with_one_fills_it_in(tmp_path, payload):
    url = f"sqlite:///{tmp_path / 'a.db'}"
    saved = tmp_path / "jobs.jsonl"
    saved.write_text(json.dumps(payload("job-v1-completed.json")) + "\n")
    with Sandbox(jobs=1, seed=31, now=NOW) as api:
        env_free = run_archiver(api, url, "ingest", str(saved), "--account", "")
        again = run_archiver(api, url, "ingest", str(saved), "--account", "acme")
    assert env_free.returncode == 0 and "without an account" in env_free.stderr
    assert again.returncode == 0 and "unchanged 1" in again.stdout
    archive = Archive.open(url)
    with archive.engine.connect() as conn:
        accounts = conn.execute(select(models.JobRow.account_id)).scalars().all()
    archive.close()
    assert accounts == ["acme"]


def test_a_dry_run_on_a_new_database_reports_and_writes_nothing(tmp_path):
    path = tmp_path / "new.db"
    with Sandbox(jobs=40, seed=31, now=NOW) as api:
        result = run_archiver(api, f"sqlite:///{path}", "sync", "--incremental", "--dry-run")
    assert result.returncode == 0 and "would be inserted 40" in result.stdout
    assert not path.exists()


def test_https_to_a_plain_http_port_says_so_in_one_line(sqlite_url):
    with Sandbox(jobs=3, seed=31, now=NOW) as api:
        env = cli_env(api, sqlite_url) | {"XPLENTY_API_URL": api.url.replace("http://", "https://")}
        result = subprocess.run(archiver_cmd("sync", "--incremental"), env=env, capture_output=True, text=True,
                                timeout=60)
    assert result.returncode == 2 and "plain-HTTP port" in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1


def test_a_busy_sandbox_port_is_one_line_exit_2(sqlite_url):
    with Sandbox(jobs=1, seed=31, now=NOW) as api:
        result = subprocess.run(archiver_cmd("sandbox", "--port", str(api.port)), capture_output=True, text=True,
                                timeout=60)
    assert result.returncode == 2 and "pick another --port" in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1


def test_a_run_that_fails_unexpectedly_still_prints_its_summary_without_a_traceback(sqlite_url, monkeypatch,
                                                                                   capsys):
    from archiver.flows import incremental
    from tests.clirun import run_cli
    from tests.sandboxed import KEY

    def broken(run, exclude=()):
        raise RuntimeError("a bug in the refresh")

    monkeypatch.setattr(incremental, "refresh_open", broken)
    with Sandbox(jobs=30, seed=31, now=NOW) as api:
        env = {"XPLENTY_ACCOUNT_ID": api.account, "XPLENTY_API_KEY": KEY, "XPLENTY_API_URL": api.url,
               "ARCHIVER_DATABASE_URL": sqlite_url}
        plain = run_cli(capsys, monkeypatch, ["sync", "--incremental"], env)
        as_json = run_cli(capsys, monkeypatch, ["sync", "--incremental", "--json"], env)
    assert plain.code == 1 and "inserted 30" in plain.out and "[failed: unexpected error: RuntimeError]" in plain.out
    assert "Traceback" not in plain.err
    assert json.loads(as_json.out)["outcome"] == "failed"


def test_a_redirect_loop_is_one_configuration_error():
    import responses

    from archiver.client import XplentyClient
    from archiver.config import Secret
    from archiver.errors import ConfigError

    url = "https://api.example.test/acme/api/jobs/157"
    with responses.RequestsMock() as mock:
        mock.get(url, status=302, headers={"Location": url})
        client = XplentyClient("https://api.example.test", "acme", Secret("k"))
        try:
            client.get_job(157)
        except ConfigError as exc:
            assert "redirects in a loop" in str(exc) and client.usage.calls == 1
        else:
            raise AssertionError("no ConfigError")
