"""`archiver sync` as a subprocess against the sandbox over real HTTP."""

import json
import re
import subprocess

import pytest
from sqlalchemy import select

from archiver import models
from archiver.sandbox import Sandbox
from archiver.store import Archive
from tests.sandboxed import NOW, archiver_cmd, cli_env, run_archiver


def stored_jobs(db_url):
    archive = Archive.open(db_url)
    with archive.engine.connect() as conn:
        rows = {r.id: r for r in conn.execute(select(models.JobRow.__table__))}
    archive.close()
    return rows


def test_clean_sync_by_id_stores_every_field(sqlite_url):
    with Sandbox(jobs=200, seed=11, now=NOW) as api:
        ids = api.job_ids()[:120]
        result = run_archiver(api, sqlite_url, "sync", f"{ids[0]}-{ids[-1]}", "--json")
        summary = json.loads(result.stdout)
        assert result.returncode == 1  # the range has gaps: those ids are not found
        assert summary["inserted"] == 120 and summary["not_found"] == ids[-1] - ids[0] + 1 - 120
        rows = stored_jobs(sqlite_url)
        for job_id in ids[:20]:
            expected = api.job(job_id)
            row = rows[job_id]
            assert (row.status, row.package_id, row.runtime_in_seconds, row.html_url) == \
                (expected["status"], expected["package_id"], expected["runtime_in_seconds"], expected["html_url"])
            assert row.payload == expected
        again = run_archiver(api, sqlite_url, "sync", *map(str, ids), "--json")
        assert again.returncode == 0 and json.loads(again.stdout)["unchanged"] == 120


def test_faults_on_every_recoverable_job_is_archived(sqlite_url, figure):
    with Sandbox(jobs=50, seed=12, now=NOW, error_rate=0.1, drop_rate=0.05, bad_json_rate=0.05,
                 rate_limit=60, rate_window_s=1) as api:
        ids = api.job_ids()
        result = run_archiver(api, sqlite_url, "sync", *map(str, ids), "--json", "--concurrency", "8",
                              "--reserve", "0")
        summary = json.loads(result.stdout)
        assert result.returncode == 0, result.stderr
        assert summary["inserted"] == len(ids) and summary["failed"] == 0
        assert sorted(stored_jobs(sqlite_url)) == ids
        faults = api.stats.faults
        assert faults["error"] and faults["drop"] and faults["bad_json"]
        assert summary["retries"] >= sum(faults[k] for k in ("error", "drop", "bad_json"))
        figure(f"faults (CLI): {len(ids)} jobs, injected {dict(faults)}; archived "
               f"{summary['inserted']}/{len(ids)} with {summary['retries']} retries")


def test_incremental_with_faults_archives_everything(sqlite_url):
    with Sandbox(jobs=600, seed=13, now=NOW, error_rate=0.2, drop_rate=0.1, bad_json_rate=0.1) as api:
        result = run_archiver(api, sqlite_url, "sync", "--incremental", "--json")
        assert result.returncode == 0, result.stderr
        assert sorted(stored_jobs(sqlite_url)) == api.job_ids()


def test_wrong_key_exits_3_with_the_api_message_and_no_key(sqlite_url, figure):
    secret = "wrong-key-abcdef-0123456789"
    with Sandbox(jobs=20, seed=14, now=NOW) as api:
        result = run_archiver(api, sqlite_url, "--log-level", "debug", "sync", *map(str, api.job_ids()[:5]),
                              key=secret)
        assert result.returncode == 3
        assert "Unauthorized" in result.stdout + result.stderr
        assert secret not in result.stdout + result.stderr
        assert api.stats.faults["unauthorized"] == 1  # the first request goes alone; no retries
        assert stored_jobs(sqlite_url) == {}
    figure("wrong key: exit 3 after 1 request, nothing written, the key in no output")


@pytest.mark.parametrize("mode", [["1", "2", "3"], ["--incremental"], ["--refresh-open"]])
def test_a_wrong_account_is_a_configuration_error_naming_account_and_url(sqlite_url, mode):
    """By id: the first 404 is checked with one List call; List itself answering 404 is the
    same error. Exit 2, naming what was used, in every mode."""
    with Sandbox(jobs=50, seed=15, now=NOW) as api:
        if mode == ["--refresh-open"]:
            assert run_archiver(api, sqlite_url, "sync", "--incremental").returncode == 0
        ids = mode if mode[0] != "1" else [str(i) for i in api.job_ids()[:40]]
        api.stats.reset()
        result = run_archiver(api, sqlite_url, "sync", *ids, "--concurrency", "1", "--account", "nosuchaccount")
        calls = api.stats.by_endpoint
    assert result.returncode == 2, result.stderr
    assert "'nosuchaccount'" in result.stderr and api.url in result.stderr and "account id" in result.stderr
    assert calls["get_job"] + calls["list_jobs"] <= 2


def test_an_api_url_holding_the_account_path_is_cut_back_with_a_warning(sqlite_url):
    with Sandbox(jobs=30, seed=15, now=NOW) as api:
        env = cli_env(api, sqlite_url) | {"XPLENTY_API_URL": f"{api.url}/{api.account}/api/"}
        result = subprocess.run(archiver_cmd("sync", "--incremental"), env=env, capture_output=True, text=True,
                                timeout=60)
    assert result.returncode == 0, result.stderr
    assert "service root" in result.stderr and "inserted 30" in result.stdout


def test_sandbox_command_prints_its_port_and_serves(tmp_path):
    import subprocess
    import sys

    import requests
    proc = subprocess.Popen([sys.executable, "-m", "archiver", "sandbox", "--port", "0", "--jobs", "30"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        line = proc.stdout.readline()
        url = line.split("listening on ")[1].split()[0]
        response = requests.get(f"{url}/sandbox/api/jobs", auth=("sandbox-key", ""), timeout=10)
        assert response.status_code == 200 and len(response.json()) == 20
    finally:
        proc.terminate()
        proc.wait(timeout=10)


def test_demo_in_an_empty_folder(tmp_path):
    import subprocess
    import sys
    result = subprocess.run([sys.executable, "-m", "archiver", "demo"], cwd=tmp_path, capture_output=True,
                            text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert "Packages that fail most" in result.stdout and "Slowest packages" in result.stdout
    archive = Archive.open(f"sqlite:///{tmp_path / 'demo.db'}", create=False)
    with archive.engine.connect() as conn:
        count = len(conn.execute(select(models.JobRow.id)).all())
    archive.close()
    assert count >= 300
    board = result.stdout.split("Pipeline health (archiver check)", 1)[1]
    states = {line.split()[1]: line.split()[0] for line in board.splitlines()[2:] if line[:1].isalpha()
              and ":" in line.split()[1]}
    failing = re.search(r"of schedule (\d+) fails every run", board).group(1)
    stopped = re.search(r"schedule (\d+) \(.*?\) stopped creating jobs", board).group(1)
    assert states[f"schedule:{failing}"] == "failing"          # the demo's breakages, found
    assert states[f"schedule:{stopped}"] in ("late", "stale")
    assert board.rstrip().endswith("archiver check --db sqlite:///demo.db")
    check = subprocess.run([sys.executable, "-m", "archiver", "check", "--db", "sqlite:///demo.db", "--format", "json"],
                           cwd=tmp_path, capture_output=True, text=True, timeout=60)
    kinds = {alert["kind"] for alert in json.loads(check.stdout)["alerts"]}
    assert {"zero_records", "slow"} <= kinds   # the injected anomalies on the latest runs, on the board
