"""The archive's write rules, on every backend."""

from datetime import datetime, timezone

import pytest
from sqlalchemy import func, select

from archiver import models
from archiver.parse import parse_job
from archiver.store import Archive

UTC = timezone.utc


@pytest.fixture
def archive(db_url):
    a = Archive.open(db_url, "acme")
    yield a
    a.close()


def write(archive, *raws):
    return archive.write_jobs([parse_job(r) for r in raws])


def rows(archive, model, **where):
    with archive.engine.connect() as conn:
        query = select(model.__table__)
        for key, value in where.items():
            query = query.where(model.__table__.c[key] == value)
        return [r._asdict() for r in conn.execute(query.order_by(*model.__table__.primary_key.columns))]


def count(archive, model):
    with archive.engine.connect() as conn:
        return conn.execute(select(func.count()).select_from(model.__table__)).scalar()


def test_seed_payload_round_trips_field_by_field(archive, payload):
    raw = payload("job-v1-completed.json")
    assert write(archive, raw).inserted == [157]
    [job] = rows(archive, models.JobRow)
    expected = {k: raw[k] for k in ("id", "status", "owner_id", "outputs_count", "cluster_id", "package_id",
                                    "errors", "url", "runtime_in_seconds", "failed_at")}
    assert {k: job[k] for k in expected} == expected
    assert job["progress"] == 1.0 and job["account_id"] == "acme"
    assert job["created_at"] == datetime(2012, 12, 30, 14, 21, 18, tzinfo=UTC)
    assert job["started_at"] == datetime(2012, 12, 30, 14, 21, 29, tzinfo=UTC)
    assert job["updated_at"] == job["completed_at"] == datetime(2012, 12, 30, 14, 29, 29, tzinfo=UTC)
    assert job["html_url"] is None and job["creator_type"] is None
    assert job["payload"] == raw
    assert job["first_seen_at"] == job["last_synced_at"] and job["first_seen_at"].tzinfo is not None
    outputs = rows(archive, models.JobOutputRow)
    assert [(o["id"], o["job_id"], o["name"], o["component_name"], o["records_count"]) for o in outputs] == [
        (521, 157, "projected_results", "destination1", 10415234),
        (522, 157, "projected_results2", "destination2", 423)]
    assert outputs[0]["preview_url"] == raw["outputs"][0]["preview_url"]
    assert outputs[1]["created_at"] == datetime(2013, 3, 4, 7, 14, 44, tzinfo=UTC)
    assert rows(archive, models.JobVariableRow) == []


def test_v2_payload_fills_every_table(archive, payload):
    raw = payload("job-v2-failed-with-log-summary.json")
    write(archive, raw)
    [job] = rows(archive, models.JobRow)
    assert (job["html_url"], job["log_url"], job["attempts"], job["master_auto_retry_attempts"]) == \
        (raw["html_url"], raw["log_url"], 2, 3)
    assert (job["creator_type"], job["creator_id"], job["progress"]) == ("Schedule", 12, 0.42)
    [out] = rows(archive, models.JobOutputRow)
    assert (out["records_count"], out["component_type"], out["progress"]) == \
        (3_000_000_000, "database_destination_component", 0.42)
    assert {(v["name"], v["value"]) for v in rows(archive, models.JobVariableRow)} == \
        {("InputPath", "'/2026/11/27'"), ("batch_size", "500")}
    [pkg] = rows(archive, models.PackageRow)
    assert (pkg["id"], pkg["name"], pkg["status"]) == (2373, "NetSuite customers to warehouse", "active")
    [cluster] = rows(archive, models.ClusterRow)
    assert (cluster["id"], cluster["nodes"], cluster["type"], cluster["zone"]) == (99, 2, "production", "us-east-1b")
    [creator] = rows(archive, models.CreatorRow)
    assert (creator["type"], creator["id"], creator["display_name"]) == ("Schedule", 12, "Nightly NetSuite")
    [summary] = rows(archive, models.JobLogSummaryRow)
    assert summary["error_summary"] == "Customer ID missing"
    assert summary["action_items"] == ["Validate the Customer ID.", "Retry the job."]


def test_v1_payloads_leave_bare_dimension_ids(archive, payload):
    write(archive, payload("job-v1-completed.json"))
    assert [(p["id"], p["name"]) for p in rows(archive, models.PackageRow)] == [(434, None)]
    assert [c["id"] for c in rows(archive, models.ClusterRow)] == [52]


def test_syncing_again_changes_nothing(archive, payload):
    raws = [payload("job-v1-completed.json"), payload("job-v1-failed.json"),
            payload("job-v2-failed-with-log-summary.json")]
    write(archive, *raws)
    before = rows(archive, models.JobRow)
    result = write(archive, *raws)
    assert (result.inserted, result.updated, sorted(result.unchanged)) == ([], [], [157, 304, 90412])
    assert rows(archive, models.JobRow) == before
    assert count(archive, models.JobOutputRow) == 3 and count(archive, models.JobVariableRow) == 3
    assert count(archive, models.JobStatusChangeRow) == 3


def test_older_snapshot_never_overwrites_newer(archive, payload):
    new = payload("job-v1-completed.json")
    old = payload("job-v1-completed.json")
    old.update(status="running", progress=0.5, updated_at="2012-12-30T14:25:00Z", completed_at=None)
    write(archive, new)
    assert write(archive, old).stale == [157]
    [job] = rows(archive, models.JobRow)
    assert (job["status"], job["progress"]) == ("completed", 1.0)


def test_newer_snapshot_updates_and_records_status_change(archive, payload):
    running = payload("job-v1-completed.json")
    running.update(status="running", progress=0.5, updated_at="2012-12-30T14:25:00Z", completed_at=None)
    write(archive, running)
    assert write(archive, payload("job-v1-completed.json")).updated == [157]
    [job] = rows(archive, models.JobRow)
    assert (job["status"], job["progress"]) == ("completed", 1.0)
    changes = [(c["from_status"], c["to_status"]) for c in rows(archive, models.JobStatusChangeRow)]
    assert changes == [(None, "running"), ("running", "completed")]


def test_equal_updated_at_applies_progress_but_never_reopens_a_terminal_job(archive, payload):
    a = payload("job-v1-completed.json")
    a.update(status="running", progress=0.2)
    write(archive, a)
    b = dict(a, progress=0.7, runtime_in_seconds=500)
    assert write(archive, b).updated == [157]
    done = dict(b, status="completed", progress=1.0)
    assert write(archive, done).updated == [157]
    reopened = dict(done, status="running")
    assert write(archive, reopened).stale == [157]
    [job] = rows(archive, models.JobRow)
    assert (job["status"], job["progress"], job["runtime_in_seconds"]) == ("completed", 1.0, 500)


def test_null_updated_at_never_overwrites_a_stored_one(archive, payload):
    write(archive, payload("job-v1-completed.json"))
    raw = payload("job-v1-completed.json")
    raw.update(updated_at=None, status="failed")
    assert write(archive, raw).stale == [157]
    assert rows(archive, models.JobRow)[0]["status"] == "completed"


def test_v1_after_v2_keeps_v2_fields(archive, payload):
    v2 = payload("job-v2-failed-with-log-summary.json")
    write(archive, v2)
    v1 = {k: v for k, v in v2.items() if k not in ("html_url", "log_url", "creator", "package", "cluster",
                                                    "attempts", "master_auto_retry_attempts", "log_summary")}
    v1["updated_at"] = "2026-11-27T03:00:00Z"
    v1["outputs"] = [{**{k: o[k] for k in o if k != "component"}, "component_name": "destination3"}
                     for o in v2["outputs"]]
    assert write(archive, v1).updated == [90412]
    [job] = rows(archive, models.JobRow)
    assert (job["html_url"], job["attempts"], job["creator_type"]) == (v2["html_url"], 2, "Schedule")
    assert job["updated_at"] == datetime(2026, 11, 27, 3, 0, tzinfo=UTC)


def test_missing_outputs_key_keeps_outputs_but_empty_list_clears_them(archive, payload):
    raw = payload("job-v1-completed.json")
    write(archive, raw)
    no_key = {k: v for k, v in raw.items() if k != "outputs"}
    no_key["updated_at"] = "2012-12-30T15:00:00Z"
    write(archive, no_key)
    assert count(archive, models.JobOutputRow) == 2
    empty = dict(no_key, outputs=[], updated_at="2012-12-30T16:00:00Z")
    write(archive, empty)
    assert count(archive, models.JobOutputRow) == 0


def test_variables_are_replaced_as_a_set(archive, payload):
    raw = payload("job-v1-failed.json")
    raw["variables"] = {"a": "1", "b": {"x": [1, 2]}}
    write(archive, raw)
    raw2 = dict(raw, variables={"b": 3, "c": None}, updated_at="2013-03-04T09:00:00Z")
    write(archive, raw2)
    assert [(v["name"], v["value"]) for v in rows(archive, models.JobVariableRow)] == [("b", "3"), ("c", "null")]


def test_same_job_twice_in_a_batch_keeps_the_newest(archive, payload):
    old = payload("job-v1-completed.json")
    old.update(status="running", updated_at="2012-12-30T14:25:00Z")
    result = write(archive, payload("job-v1-completed.json"), old)
    assert result.inserted == [157]
    assert rows(archive, models.JobRow)[0]["status"] == "completed"


def test_unicode_and_emoji_survive(archive, payload):
    raw = payload("job-v1-failed.json")
    raw["errors"] = "Ошибка: 连接失败 \U0001F4A5 — ünïcödé"
    raw["variables"] = {"emoji": "\U0001F680"}
    write(archive, raw)
    assert rows(archive, models.JobRow)[0]["errors"] == raw["errors"]
    assert rows(archive, models.JobVariableRow)[0]["value"] == "\U0001F680"


def test_dry_run_plan_writes_nothing(archive, payload):
    write(archive, payload("job-v1-completed.json"))
    changed = payload("job-v1-completed.json")
    changed["updated_at"] = "2013-01-01T00:00:00Z"
    plan = archive.plan([parse_job(changed), parse_job(payload("job-v1-failed.json"))])
    assert (plan.updated, plan.inserted) == ([157], [304])
    assert count(archive, models.JobRow) == 1


def test_a_failing_batch_is_written_again_in_halves_down_to_the_job_refused(db_url, payload, monkeypatch, caplog):
    """One job the database refuses never sinks its neighbours: the rest are stored, and finding
    it takes a few transactions (halves of halves), not one per job of its batch."""
    from archiver.config import Settings
    from archiver.flows.ingest import ingest
    from archiver.flows.runs import SyncOptions

    real = Archive._write
    writes = []

    def refuse_job_5(self, conn, jobs, run_id):
        writes.append(len(jobs))
        if any(j.id == 5 for j in jobs):
            raise RuntimeError("the database refused job 5")
        return real(self, conn, jobs, run_id)

    monkeypatch.setattr(Archive, "_write", refuse_job_5)
    records = [dict(payload("job-v1-failed.json"), id=i) for i in range(1, 65)]
    summary = ingest(Settings(account="acme", database_url=db_url), iter(records), SyncOptions(batch_size=64))
    assert (summary.inserted, summary.failed) == (63, 1)
    assert summary.errors[0]["job_id"] == 5 and summary.errors[0]["kind"] == "db_error"
    assert sorted(writes) == sorted([64, 32, 32, 16, 16, 8, 8, 4, 4, 2, 2, 1, 1])
    assert [r.getMessage()[:18] for r in caplog.records if r.levelname == "WARNING" and "halves" in r.getMessage()] \
        == ["batch of 64 failed"]   # one warning for the batch, not one per half
    archive = Archive.open(db_url)
    assert [r["id"] for r in rows(archive, models.JobRow)] == [i for i in range(1, 65) if i != 5]
    archive.close()


def test_new_jobs_have_nothing_deleted_and_written_again_have_their_children_replaced(db_url, payload):
    """A first write of a batch makes its jobs' rows, so there are no outputs or variables to
    delete (SQLite: the write lock since the read; PostgreSQL: COPY fails on any key already
    there); written again, the children are replaced as sets."""
    from sqlalchemy import event

    from archiver import dialect

    archive = Archive.open(db_url, "acme")
    statements: list[str] = []
    event.listen(archive.engine, "before_cursor_execute",
                 lambda conn, cursor, sql, *rest: statements.append(sql))
    n = dialect.COPY_THRESHOLD + 10
    raws = []
    for i in range(n):
        raw = dict(payload("job-v1-completed.json"), id=900 + i)
        raw["outputs"] = [dict(o, id=10_000 * (i + 1) + k) for k, o in enumerate(raw["outputs"])]
        raws.append(raw)
    write(archive, *raws)
    children = ("job_outputs", "job_variables", "job_log_summaries", "job_anomalies")
    deletes = [s for s in statements if s.lstrip().upper().startswith("DELETE")
               and any(f"FROM {table} " in s for table in children)]
    if archive.engine.dialect.name in ("sqlite", "postgresql"):
        assert deletes == []   # the day rollup's recount (store.refresh_rollup) deletes its days: not a child
    assert count(archive, models.JobOutputRow) == n * len(raws[0]["outputs"])
    changed = [dict(r, updated_at="2031-01-01T00:00:00Z", outputs=r["outputs"][:1], variables={"only": "one"})
               for r in raws]
    statements.clear()
    result = write(archive, *changed)
    assert len(result.updated) == n
    assert any(s.lstrip().upper().startswith("DELETE FROM JOB_OUTPUTS") for s in statements)
    assert count(archive, models.JobOutputRow) == n
    assert count(archive, models.JobVariableRow) == n
    archive.close()


def test_statistics_are_refreshed_when_the_tables_grew(db_url, payload, monkeypatch):
    """PostgreSQL and SQLite: once the tables grew by ANALYZE_AFTER (then 4×), the planner
    knows them. On SQLite, without statistics a package's successes were read through the
    (status, created_at) index, every completed job of the archive, instead of the package's."""
    from sqlalchemy import text

    from archiver import store

    if db_url.startswith("mysql"):
        pytest.skip("InnoDB keeps its own statistics")
    monkeypatch.setattr(store, "ANALYZE_AFTER", 5)
    archive = Archive.open(db_url, "acme")
    write(archive, *[dict(payload("job-v1-completed.json"), id=100 + i, package_id=i % 5) for i in range(10)])
    with archive.engine.connect() as conn:
        if conn.dialect.name == "postgresql":
            known = dict(conn.execute(text("SELECT relname, reltuples FROM pg_class WHERE relname IN "
                                           "('jobs', 'job_outputs', 'job_variables')")).all())
            assert known == {"jobs": 10, "job_outputs": 2, "job_variables": 0}  # -1: never analyzed
        else:
            plan = " ".join(str(row[-1]) for row in conn.execute(text(
                "EXPLAIN QUERY PLAN SELECT id FROM jobs WHERE package_id = 3 AND status = 'completed' "
                "AND created_at < '2030-01-01' ORDER BY created_at DESC LIMIT 30")))
            assert "ix_jobs_package_id_created_at" in plan, plan
    assert (archive.stats_rows, archive.added) == (10, 0)
    # then once the tables grew 4x: not at 30 jobs (half as many again would have), at 40
    write(archive, *[dict(payload("job-v1-completed.json"), id=200 + i, package_id=i % 5) for i in range(20)])
    assert (archive.stats_rows, archive.added) == (10, 20)
    write(archive, *[dict(payload("job-v1-completed.json"), id=300 + i, package_id=i % 5) for i in range(10)])
    assert (archive.stats_rows, archive.added) == (40, 0)
    archive.close()


def test_a_rewrite_leaves_equal_outputs_and_variables_alone_and_replaces_differing_ones(archive, payload):
    """A changed job usually keeps its outputs and variables: they are compared with the stored
    rows, not deleted and written again; any difference (one column of one output) replaces them."""
    from sqlalchemy import event

    raw = dict(payload("job-v1-completed.json"), variables={"a": "1", "b": "2"})
    write(archive, raw)
    kept = rows(archive, models.JobOutputRow), rows(archive, models.JobVariableRow)
    statements: list[str] = []
    event.listen(archive.engine, "before_cursor_execute", lambda conn, cursor, sql, *rest: statements.append(sql))
    assert write(archive, dict(raw, runtime_in_seconds=1, updated_at="2031-01-01T00:00:00Z")).updated == [157]
    children = [s for s in statements if any(f"{verb} {table}" in " ".join(s.upper().split())
                                             for verb in ("INSERT INTO", "DELETE FROM", "UPDATE")
                                             for table in ("JOB_OUTPUTS", "JOB_VARIABLES"))]
    assert children == []
    assert (rows(archive, models.JobOutputRow), rows(archive, models.JobVariableRow)) == kept
    outputs = [raw["outputs"][0], dict(raw["outputs"][1], records_count=424)]
    write(archive, dict(raw, outputs=outputs, variables={"a": "1", "b": "3"}, updated_at="2031-01-02T00:00:00Z"))
    assert [o["records_count"] for o in rows(archive, models.JobOutputRow)] == [10415234, 424]
    assert [(v["name"], v["value"]) for v in rows(archive, models.JobVariableRow)] == [("a", "1"), ("b", "3")]


def test_open_jobs_lists_every_status_not_terminal_also_one_the_api_adds_later(archive, payload):
    """The refresh re-fetches them: each open status is read by its own index range (SQLite
    scanned a million jobs for an IN of a few), so a status only found in the data must count."""
    raw = payload("job-v1-completed.json")
    statuses = {201: "completed", 202: "running", 203: "failed", 204: "pending", 205: "stopped",
                206: "resuming_after_maintenance", 207: "queued", 208: "running"}
    write(archive, *[{**raw, "id": job_id, "status": status} for job_id, status in statuses.items()])
    assert [job_id for job_id, _ in archive.open_jobs()] == [202, 204, 206, 207, 208]
    assert all(updated is not None and updated.tzinfo is not None for _, updated in archive.open_jobs())


def test_the_rows_a_write_inserted_are_taken_as_reading_them_back_gives(sqlite_url, payload, monkeypatch):
    """A write takes the jobs rows it has just inserted as it inserted them instead of reading
    them back (the rollups and schedule chains are recounted from them): for new jobs of each
    shape (v1 completed, v1 failed, v2 scheduled with a log summary) they equal the stored rows."""
    archive = Archive.open(sqlite_url, "acme")
    taken = {}
    real = Archive._as_written

    def as_written(self, conn, writes, made):
        found = real(self, conn, writes, made)
        taken.update((job_id, found[job_id]) for job_id in made)
        return found

    monkeypatch.setattr(Archive, "_as_written", as_written)
    raws = [payload(name) for name in ("job-v1-completed.json", "job-v1-failed.json",
                                       "job-v2-failed-with-log-summary.json")]
    assert write(archive, *raws).inserted == sorted(r["id"] for r in raws)
    with archive.engine.connect() as conn:
        assert taken == archive.read_stored(conn, sorted(taken), lock=False)
    assert any(stored.chain for stored in taken.values())   # the scheduled one's chain is in it
    archive.close()


def test_a_first_write_of_many_new_jobs_takes_its_rows_as_inserted_on_every_database(db_url, payload, monkeypatch):
    """A batch of new jobs large enough for PostgreSQL's COPY (which fails on any key already
    there, so no other writer can have won a race for them) is not read back to look for lost
    races: the write reads the jobs once, before writing. The rows it takes as inserted equal the
    stored ones on every database (MySQL, whose upsert cannot tell, still reads them back)."""
    archive = Archive.open(db_url, "acme")
    taken, reads = {}, []
    real_written, real_read = Archive._as_written, archive.read_stored

    def as_written(self, conn, writes, made):
        found = real_written(self, conn, writes, made)
        taken.update(found)
        return found

    def read_stored(conn, ids, lock=True):
        reads.append(len(ids))
        return real_read(conn, ids, lock)

    monkeypatch.setattr(Archive, "_as_written", as_written)
    monkeypatch.setattr(archive, "read_stored", read_stored)
    raws = []
    for i in range(60):   # more than dialect.COPY_THRESHOLD
        raw = payload("job-v1-completed.json")
        raw["id"] += i
        for k, output in enumerate(raw["outputs"]):
            output["id"] = 10_000 + 10 * i + k
        raws.append(raw)
    assert write(archive, *raws).inserted == sorted(r["id"] for r in raws)
    mysql = db_url.startswith("mysql")
    assert reads == ([60, 60] if mysql else [60, 0])   # before the write, then the rows not taken
    monkeypatch.undo()
    with archive.engine.connect() as conn:
        assert len(taken) == (0 if mysql else 60)
        assert taken == archive.read_stored(conn, sorted(taken), lock=False)
    assert count(archive, models.JobOutputRow) == 60 * len(raws[0]["outputs"])
    archive.close()


def test_select_in_reads_what_sqlalchemy_reads(archive, payload):
    """dialect.select_in (straight to the driver) gives the values a SQLAlchemy select of the same
    columns gives: aware UTC datetimes, dates, texts; in key order, locked or not; ids not there
    are simply missing."""
    from archiver import dialect
    from archiver.store import STORED_COLUMNS, jobs_t

    raw = payload("job-v1-completed.json")
    write(archive, raw, {**raw, "id": raw["id"] + 1, "status": "failed", "attempts": 2})
    ids = [raw["id"] + 1, 999_999_999, raw["id"]]
    with archive.engine.begin() as conn:
        expected = [tuple(row) for row in conn.execute(
            select(*STORED_COLUMNS).where(jobs_t.c.id.in_(ids)).order_by(jobs_t.c.id))]
        for lock in (False, archive.lock_rows):
            assert dialect.select_in(conn, STORED_COLUMNS, jobs_t.c.id, ids, order=True, lock=lock) == expected
        assert dialect.select_in(conn, STORED_COLUMNS, jobs_t.c.id, []) == []
    assert len(expected) == 2 and all(isinstance(row[1], datetime) and row[1].tzinfo is not None
                                      for row in expected)
