"""`archiver sync --incremental`, `--refresh-open` and `archiver ingest`, against the sandbox."""

import io
import json

import pytest
from sqlalchemy import select

from archiver import models
from archiver.errors import InvalidPayload
from archiver.payloads import read_payloads
from archiver.sandbox import Sandbox
from archiver.store import Archive
from archiver.flows.incremental import IncrementalOptions, sync_incremental, sync_refresh_open
from archiver.flows.ingest import ingest
from archiver.flows.runs import SyncOptions
from tests.sandboxed import NOW, run_archiver, settings_for


@pytest.fixture
def api():
    with Sandbox(jobs=1000, seed=5, now=NOW) as sandbox:
        yield sandbox


def stored(db_url, model=models.JobRow, column="id"):
    archive = Archive.open(db_url)
    with archive.engine.connect() as conn:
        values = conn.execute(select(model.__table__.c[column])).scalars().all()
    archive.close()
    return values


def mark(db_url, scope=""):
    archive = Archive.open(db_url, "sandbox")
    value = archive.read_mark(scope)
    archive.close()
    return value


def incremental(api, db_url, **inc):
    return sync_incremental(settings_for(api, db_url), SyncOptions(), IncrementalOptions(**inc))


CATALOG_CALLS = ("list_schedules", "list_packages", "list_clusters")


def test_first_run_archives_everything_in_at_most_11_list_calls(api, db_url):
    """... and the catalog in 4 more: schedules, active and archived packages, clusters."""
    summary = incremental(api, db_url)
    assert summary.exit_code == 0
    assert summary.inserted == 1000 and sorted(stored(db_url)) == api.job_ids()
    assert api.stats.by_endpoint["get_job"] == 0
    assert [api.stats.by_endpoint[e] for e in CATALOG_CALLS] == [1, 2, 1]
    assert api.stats.by_endpoint["list_jobs"] <= 11 and summary.credits_used <= 11 + 4
    newest = max(api.job(i)["updated_at"] for i in api.job_ids())
    assert mark(db_url).strftime("%Y-%m-%dT%H:%M:%SZ") == newest


def test_second_run_reads_only_the_changes(api, db_url):
    incremental(api, db_url)
    api.stats.reset()
    changed = api.job_ids()[200:205]
    api.touch(changed)
    summary = incremental(api, db_url)
    assert api.stats.by_endpoint["list_jobs"] + api.stats.by_endpoint["get_job"] <= 2
    assert summary.updated == 5 and summary.inserted == 0
    assert len(stored(db_url)) == 1000


def test_status_changes_are_picked_up_as_time_passes(api, sqlite_url):
    incremental(api, sqlite_url)
    open_before = {i for i in api.job_ids() if api.job(i)["status"] not in ("completed", "failed", "stopped")}
    assert open_before
    api.advance(6 * 3600)
    summary = incremental(api, sqlite_url)
    assert sorted(stored(sqlite_url)) == api.job_ids()
    assert summary.inserted == len(api.job_ids()) - 1000
    archive = Archive.open(sqlite_url)
    with archive.engine.connect() as conn:
        rows = conn.execute(select(models.JobRow.id, models.JobRow.status)).all()
    archive.close()
    assert {i: s for i, s in rows} == {i: api.job(i)["status"] for i in api.job_ids()}


def test_max_credits_stops_cleanly_and_the_next_run_resumes(api, sqlite_url):
    first = incremental_with(api, sqlite_url, SyncOptions(max_credits=3))
    assert first.outcome == "budget" and first.exit_code == 0 and first.credits_used == 3
    kept = len(stored(sqlite_url))
    assert 290 <= kept <= 300  # each page after the first starts at the last second seen
    rest = incremental(api, sqlite_url)
    assert rest.inserted == 1000 - kept and sorted(stored(sqlite_url)) == api.job_ids()


def incremental_with(api, db_url, options, **inc):
    return sync_incremental(settings_for(api, db_url), options, IncrementalOptions(**inc))


def test_since_override_and_full(api, sqlite_url):
    incremental(api, sqlite_url)
    api.stats.reset()
    recent = sorted(api.job(i)["updated_at"] for i in api.job_ids())[-150]
    from archiver.parse import parse_timestamp
    summary = incremental(api, sqlite_url, since=parse_timestamp(recent))
    assert 150 <= summary.requested <= 260 and summary.unchanged == summary.requested
    full = incremental(api, sqlite_url, full=True)
    assert full.unchanged == 1000 and full.inserted == 0


def test_filtered_runs_keep_their_own_mark(api, sqlite_url):
    summary = incremental(api, sqlite_url, status="failed")
    failed = [i for i in api.job_ids() if api.job(i)["status"] == "failed"]
    assert summary.inserted == len(failed) and sorted(stored(sqlite_url)) == failed
    assert mark(sqlite_url) is None and mark(sqlite_url, "status=failed") is not None


def test_an_update_landing_during_the_read_never_loses_a_job(api, sqlite_url, monkeypatch):
    """A job read on page 1 and updated before page 3 moves to the end and shifts offsets."""
    from archiver.client import XplentyClient
    real = XplentyClient.list_jobs
    calls = []

    def list_jobs(self, params):
        calls.append(1)
        if len(calls) == 3:
            first_page = sorted(api.job_ids(), key=lambda i: (api.job(i)["updated_at"], i))[:100]
            api.touch(first_page[40:43])
        return real(self, params)

    monkeypatch.setattr(XplentyClient, "list_jobs", list_jobs)
    summary = incremental(api, sqlite_url)
    assert sorted(stored(sqlite_url)) == api.job_ids()
    assert summary.inserted == 1000


def statuses(db_url, ids):
    archive = Archive.open(db_url)
    with archive.engine.connect() as conn:
        rows = conn.execute(select(models.JobRow.id, models.JobRow.status).where(models.JobRow.id.in_(ids))).all()
    archive.close()
    return dict(rows)


def test_refresh_open_refetches_unfinished_jobs(api, sqlite_url):
    incremental(api, sqlite_url)
    terminal = ("completed", "failed", "stopped")
    open_ids = sorted(i for i in api.job_ids() if api.job(i)["status"] not in terminal)
    api.advance(900)   # fifteen minutes later some of them have finished, some still run
    finished = [i for i in open_ids if api.job(i)["status"] in terminal]
    assert 0 < len(finished) < len(open_ids)
    api.stats.reset()
    summary = sync_refresh_open(settings_for(api, sqlite_url), SyncOptions())
    calls = api.stats.by_endpoint["list_jobs"] + api.stats.by_endpoint["get_job"]
    assert summary.exit_code == 0 and summary.failed == 0 and 0 < calls <= len(open_ids)
    assert summary.updated >= len(finished)
    assert statuses(sqlite_url, open_ids) == {i: api.job(i)["status"] for i in open_ids}


def test_cli_incremental_then_kill_midway_then_rerun_archives_each_job_once(sqlite_url):
    import signal
    import subprocess

    from tests.sandboxed import signal_when_parked

    with Sandbox(jobs=1000, seed=9, now=NOW) as api:
        # pages 1-3 are served, the 4th read waits at the gate
        code, _ = signal_when_parked(api, sqlite_url, ["sync", "--incremental"], signal.SIGKILL, 3, "list_jobs")
        assert code == -signal.SIGKILL
        partial = stored(sqlite_url)
        assert len(partial) <= 300
        again = run_archiver(api, sqlite_url, "sync", "--incremental", "--json")
        assert again.returncode == 0, again.stderr
        ids = stored(sqlite_url)
        assert sorted(ids) == api.job_ids() and len(ids) == len(set(ids))
        outcomes = stored(sqlite_url, models.SyncRunRow, "outcome")
        assert outcomes == ["abandoned", "ok"]


def test_ingest_json_lines_and_arrays_through_the_same_path(payload, db_url, tmp_path):
    lines = tmp_path / "jobs.jsonl"
    lines.write_text("\n".join(json.dumps(payload(n)) for n in
                               ("job-v1-completed.json", "job-v1-failed.json")) + "\n{not json}\n")
    from archiver.config import Settings
    settings = Settings(account="acme", database_url=db_url)
    with lines.open("rb") as f:
        summary = ingest(settings, read_payloads(f), SyncOptions())
    assert (summary.inserted, summary.failed, summary.exit_code) == (2, 1, 1)
    array = io.BytesIO(json.dumps([payload("job-v2-failed-with-log-summary.json"),
                                   payload("job-v1-completed.json")]).encode())
    summary = ingest(settings, read_payloads(array), SyncOptions())
    assert (summary.inserted, summary.unchanged) == (1, 1)
    assert sorted(stored(db_url)) == [157, 304, 90412]


def test_read_payloads_streams_large_arrays_in_chunks(payload, monkeypatch):
    import archiver.payloads as payloads
    monkeypatch.setattr(payloads, "CHUNK", 64)
    items = [dict(payload("job-v1-completed.json"), id=i) for i in range(1, 30)]
    got = list(read_payloads(io.BytesIO(json.dumps(items).encode())))
    assert [g["id"] for g in got] == list(range(1, 30))
    cut = list(read_payloads(io.BytesIO(json.dumps(items).encode()[:-300])))
    assert isinstance(cut[-1], InvalidPayload) and all(isinstance(g, dict) for g in cut[:-1])
    lines = "\n".join(json.dumps(dict(i, errors="ошибка \U0001F525"), ensure_ascii=False) for i in items)
    got = list(read_payloads(io.BytesIO(lines.encode())))  # multi-byte characters across chunk edges
    assert [g["id"] for g in got] == list(range(1, 30)) and got[0]["errors"] == "ошибка \U0001F525"


def test_cli_ingest_from_stdin(payload, sqlite_url):
    import subprocess
    import sys
    data = "\n".join(json.dumps(payload(n)) for n in ("job-v1-completed.json", "job-v1-failed.json"))
    result = subprocess.run([sys.executable, "-m", "archiver", "ingest", "-", "--db", sqlite_url],
                            input=data, capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    assert "inserted 2" in result.stdout


def test_unchanged_payloads_cost_one_read_and_no_write(payload, db_url, monkeypatch):
    from archiver.config import Settings
    records = [dict(payload("job-v1-completed.json"), id=i) for i in range(1, 301)]
    for i, r in enumerate(records):
        r["outputs"] = [dict(o, id=10 * r["id"] + k) for k, o in enumerate(r["outputs"])]
    settings = Settings(account="acme", database_url=db_url)
    first = ingest(settings, iter(records), SyncOptions(batch_size=100))
    assert first.inserted == 300
    writes = []
    monkeypatch.setattr(Archive, "write_jobs", lambda self, jobs, *a, **k: writes.append(len(jobs)))
    again = ingest(settings, iter(records), SyncOptions(batch_size=100))
    assert (again.unchanged, again.inserted, again.updated) == (300, 0, 0) and writes == []


def numbered_jobs(payload, n: int) -> list[dict]:
    records = [dict(payload("job-v1-completed.json"), id=i) for i in range(1, n + 1)]
    for r in records:
        r["outputs"] = [dict(o, id=10 * r["id"] + k) for k, o in enumerate(r["outputs"])]
    return records


def seen_later(record: dict, hours: int = 1) -> dict:
    return dict(record, updated_at=f"2013-05-1{hours}T09:47:09Z", runtime_in_seconds=1000 + hours)


def counted_writes(monkeypatch) -> list[list[int]]:
    """The job ids of each write_jobs call, the calls going through."""
    writes, original = [], Archive.write_jobs

    def write_jobs(self, jobs, *args, **kwargs):
        writes.append([j.id for j in jobs])
        return original(self, jobs, *args, **kwargs)

    monkeypatch.setattr(Archive, "write_jobs", write_jobs)
    return writes


def test_a_re_ingest_gathers_the_few_changed_jobs_of_many_batches_into_one_write(payload, db_url, monkeypatch):
    """1 % changed used to cost a transaction per batch of payloads (5 jobs each); now the
    changed jobs are written a batch of them at a time, and the archive is the same."""
    from archiver.config import Settings
    settings = Settings(account="acme", database_url=db_url)
    records = numbered_jobs(payload, 300)
    assert ingest(settings, iter(records), SyncOptions(batch_size=20)).inserted == 300
    later = [seen_later(r) if r["id"] % 10 == 0 else r for r in records]
    writes = counted_writes(monkeypatch)
    summary = ingest(settings, iter(later), SyncOptions(batch_size=20))
    assert (summary.updated, summary.unchanged, summary.inserted) == (30, 270, 0)
    assert writes == [list(range(10, 210, 10)), list(range(210, 310, 10))]   # 20 a write, then the rest
    archive = Archive.open(db_url)
    with archive.engine.connect() as conn:
        runtimes = dict(conn.execute(select(models.JobRow.id, models.JobRow.runtime_in_seconds)).all())
    archive.close()
    assert {i for i, seconds in runtimes.items() if seconds == 1001} == set(range(10, 310, 10))


def test_a_job_met_twice_in_a_run_is_judged_against_its_earlier_snapshot_as_in_turn(payload, db_url, monkeypatch):
    """Gathered changed jobs are written before a second snapshot of one of them is judged:
    newer then older counts updated then stale, and the newer one stays."""
    from archiver.config import Settings
    settings = Settings(account="acme", database_url=db_url)
    records = numbered_jobs(payload, 40)
    ingest(settings, iter(records), SyncOptions(batch_size=10))
    newer, older_again = seen_later(records[4], 2), records[4]
    stream = records[:10] + [newer] + records[10:30] + [older_again, seen_later(records[6], 1)]
    writes = counted_writes(monkeypatch)
    summary = ingest(settings, iter(stream), SyncOptions(batch_size=10))
    assert (summary.updated, summary.stale, summary.unchanged) == (2, 1, 30)
    assert writes == [[5], [5, 7]]
    archive = Archive.open(db_url)
    with archive.engine.connect() as conn:
        runtimes = dict(conn.execute(select(models.JobRow.id, models.JobRow.runtime_in_seconds)).all())
    archive.close()
    assert (runtimes[5], runtimes[7]) == (1002, 1001)


def test_a_run_stopped_at_its_deadline_writes_the_changed_jobs_it_gathered(payload, sqlite_url, monkeypatch):
    from archiver.config import Settings
    from archiver.errors import DeadlineExceeded
    settings = Settings(account="acme", database_url=sqlite_url)
    records = numbered_jobs(payload, 50)
    ingest(settings, iter(records), SyncOptions(batch_size=10))

    def until_the_deadline():
        for r in records[:35]:
            yield seen_later(r) if r["id"] in (3, 14) else r
        raise DeadlineExceeded("the run's deadline passed")

    summary = ingest(settings, until_the_deadline(), SyncOptions(batch_size=10))
    assert summary.outcome == "deadline" and (summary.updated, summary.unchanged) == (2, 33)


def test_with_log_summary_fetches_each_failed_job_once(sqlite_url):
    with Sandbox(jobs=300, seed=6, now=NOW) as api:
        failed = [i for i in api.job_ids() if api.job(i)["status"] == "failed"]
        options = SyncOptions(with_log_summary=True)
        summary = incremental_with(api, sqlite_url, options)
        assert summary.exit_code == 0 and api.stats.by_endpoint["get_job"] == len(failed) > 0
        assert sorted(stored(sqlite_url, models.JobLogSummaryRow, "job_id")) == failed
        api.stats.reset()
        incremental_with(api, sqlite_url, options, full=True)
        assert api.stats.by_endpoint["get_job"] == 0
