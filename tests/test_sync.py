"""`archiver sync ID ...` end to end against `responses` mocks of the API."""

import json

import pytest
import responses
from sqlalchemy import select

from archiver import models
from archiver.database import make_engine
from tests.clirun import run_cli

API = "https://api.example.test"
KEY = "k3y-that-must-never-leak-0123456789"


@pytest.fixture
def env(db_url):
    return {"XPLENTY_ACCOUNT_ID": "xplenation", "XPLENTY_API_KEY": KEY, "XPLENTY_API_URL": API,
            "ARCHIVER_DATABASE_URL": db_url}


@pytest.fixture
def api(payload):
    with responses.RequestsMock(assert_all_requests_are_fired=False) as mock:
        for name in ("job-v1-completed.json", "job-v1-failed.json"):
            body = payload(name)
            mock.get(f"{API}/xplenation/api/jobs/{body['id']}", json=body)
        yield mock


def table(db_url, model):
    engine = make_engine(db_url)
    with engine.connect() as conn:
        rows = [r._asdict() for r in conn.execute(select(model.__table__))]
    engine.dispose()
    return rows


def count(db_url, model):
    return len(table(db_url, model))


def test_sync_stores_both_jobs_then_changes_nothing(capsys, monkeypatch, env, api, db_url):
    first = run_cli(capsys, monkeypatch, ["sync", "157", "304"], env)
    assert first.code == 0, first.err
    assert "requested 2, inserted 2, updated 0, unchanged 0" in first.out
    assert {j["id"] for j in table(db_url, models.JobRow)} == {157, 304}
    assert count(db_url, models.JobOutputRow) == 2
    assert {(v["job_id"], v["name"]) for v in table(db_url, models.JobVariableRow)} == {(304, "InputPath")}
    second = run_cli(capsys, monkeypatch, ["sync", "157", "304"], env)
    assert second.code == 0 and "inserted 0, updated 0, unchanged 2" in second.out
    assert count(db_url, models.JobRow) == 2 and count(db_url, models.JobOutputRow) == 2
    runs = sorted(table(db_url, models.SyncRunRow), key=lambda r: r["id"])
    assert [(r["outcome"], r["inserted"], r["unchanged"], r["credits_used"]) for r in runs] == \
        [("ok", 2, 0, 2), ("ok", 0, 2, 2)]
    auth = [c.request.headers["Authorization"] for c in api.calls]
    assert auth and all(a.startswith("Basic ") for a in auth)
    assert all(c.request.headers["Accept"] == "application/vnd.xplenty+json; version=2" for c in api.calls)


def test_invalid_id_exits_2_before_any_request(capsys, monkeypatch, env, api):
    for bad in ("abc", "-5", "0", "5-3", "1.5"):
        result = run_cli(capsys, monkeypatch, ["sync", "157", bad], env)
        assert result.code == 2 and repr(bad) in result.err
    assert len(api.calls) == 0


def test_ranges_ids_file_and_duplicates_are_fetched_once(capsys, monkeypatch, env, api, tmp_path):
    api.get(f"{API}/xplenation/api/jobs/158", status=404, json={"message": "Item not found."})
    ids = tmp_path / "ids.txt"
    ids.write_text("# nightly\n157\n\n304  # failed one\n157\n")
    result = run_cli(capsys, monkeypatch, ["sync", "157-158", "--ids-file", str(ids), "--json"], env)
    summary = json.loads(result.out)
    assert (summary["requested"], summary["inserted"], summary["not_found"]) == (3, 2, 1)
    assert result.code == 1
    assert sorted(c.request.url.rsplit("/", 1)[1] for c in api.calls) == ["157", "158", "304"]


def test_missing_account_or_key_is_exit_2(capsys, monkeypatch, env, api):
    no_key = {k: v for k, v in env.items() if k != "XPLENTY_API_KEY"}
    result = run_cli(capsys, monkeypatch, ["sync", "157"], no_key)
    assert result.code == 2 and "XPLENTY_API_KEY" in result.err and len(result.err.strip().splitlines()) == 1
    no_account = {k: v for k, v in env.items() if k != "XPLENTY_ACCOUNT_ID"}
    assert run_cli(capsys, monkeypatch, ["sync", "157"], no_account).code == 2
    assert len(api.calls) == 0


def test_key_from_file(capsys, monkeypatch, env, api, tmp_path):
    key_file = tmp_path / "key"
    key_file.write_text(KEY + "\n")
    env = {k: v for k, v in env.items() if k != "XPLENTY_API_KEY"} | {"XPLENTY_API_KEY_FILE": str(key_file)}
    assert run_cli(capsys, monkeypatch, ["sync", "157"], env).code == 0
    assert api.calls[0].request.headers["Authorization"].startswith("Basic ")


def test_refused_credentials_exit_3_and_write_nothing(capsys, monkeypatch, env, db_url):
    with responses.RequestsMock() as mock:
        mock.get(f"{API}/xplenation/api/jobs/157", status=401, json={"message": "Invalid API key"})
        result = run_cli(capsys, monkeypatch, ["--log-level", "debug", "sync", "157", "304",
                                               "--concurrency", "1"], env)
        assert len(mock.calls) == 1
    assert result.code == 3 and "Invalid API key" in result.out + result.err
    assert KEY not in result.out + result.err
    assert count(db_url, models.JobRow) == 0
    [run] = table(db_url, models.SyncRunRow)
    assert run["outcome"] == "auth_failed"


def test_wrong_typed_payload_fails_that_job_only(capsys, monkeypatch, env, payload, db_url):
    bad = payload("job-v1-failed.json")
    bad["runtime_in_seconds"] = "forty"
    with responses.RequestsMock() as mock:
        mock.get(f"{API}/xplenation/api/jobs/157", json=payload("job-v1-completed.json"))
        mock.get(f"{API}/xplenation/api/jobs/304", json=bad)
        result = run_cli(capsys, monkeypatch, ["sync", "157", "304"], env)
    assert result.code == 1
    assert "job 304" in result.err and "runtime_in_seconds" in result.err
    assert [j["id"] for j in table(db_url, models.JobRow)] == [157]
    [error] = table(db_url, models.SyncErrorRow)
    assert (error["job_id"], error["kind"], error["field"]) == (304, "bad_field", "runtime_in_seconds")


def test_payload_of_another_job_is_rejected(capsys, monkeypatch, env, payload, db_url):
    with responses.RequestsMock() as mock:
        mock.get(f"{API}/xplenation/api/jobs/999", json=payload("job-v1-completed.json"))
        result = run_cli(capsys, monkeypatch, ["sync", "999"], env)
    assert result.code == 1 and "job 999" in result.err
    assert count(db_url, models.JobRow) == 0


def test_dry_run_reports_and_writes_nothing(capsys, monkeypatch, env, api, db_url):
    result = run_cli(capsys, monkeypatch, ["sync", "157", "304", "--dry-run"], env)
    assert result.code == 0 and "would be inserted 2" in result.out
    assert count(db_url, models.JobRow) == 0 and count(db_url, models.SyncRunRow) == 0


def test_outdated_schema_is_exit_2_with_the_command_to_run(capsys, monkeypatch, env, api, tmp_path):
    from archiver import database, store
    url = f"sqlite:///{tmp_path / 'old.db'}"
    database.upgrade(database.make_engine(url), "0001")
    result = run_cli(capsys, monkeypatch, ["sync", "157"], env | {"ARCHIVER_DATABASE_URL": url})
    assert result.code == 2 and "archiver db upgrade" in result.err
    assert len(api.calls) == 0
