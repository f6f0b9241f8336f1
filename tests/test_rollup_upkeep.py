"""The daily rollups each write keeps, against a whole recount from the jobs, on every backend.

A write recounts only the (account, day, package) groups of each rollup in which its jobs
changed what that rollup reads of them (store.rollup_groups), and rewrites a job's outputs and
variables only where they differ from the stored rows: every kind of rewrite that must still
recount a rollup is here, one write at a time.
"""

import threading
import time
from datetime import datetime, timedelta, timezone

import pytest
from sqlalchemy import text

from archiver.parse import parse_job
from archiver.store import Archive, refresh_rollup

UTC = timezone.utc
DAY = datetime(2026, 11, 20, 10, tzinfo=UTC)
ROLLUPS = ("daily_package_rollup", "daily_output_rollup", "daily_error_rollup")


def snapshot(job_id: int, version: int, *, status: str = "completed", package: int = 7, day: int = 0,
             runtime: int = 60, records: tuple = (5, 6), error: str = "", attempts: int = 0, ended: int = 0) -> dict:
    """Job `job_id` as seen the `version`-th time (later versions are newer)."""
    created = DAY + timedelta(days=day, seconds=job_id)
    finished = (created + timedelta(seconds=runtime + ended)).isoformat()
    return {"id": job_id, "status": status, "package_id": package, "cluster_id": 1, "created_at": created.isoformat(),
            "updated_at": (DAY + timedelta(days=30, minutes=version)).isoformat(), "runtime_in_seconds": runtime,
            "errors": error, "attempts": attempts,
            "completed_at": finished if status == "completed" else None,
            "failed_at": finished if status == "failed" else None,
            "outputs": [{"id": job_id * 10 + k, "name": f"out {k}", "records_count": n} for k, n in enumerate(records)]}


def rollup_rows(conn) -> dict[str, list]:
    """Every row of the rollups but its id, as text (runtimes sorted: their order is not kept)."""
    found = {}
    for table in ROLLUPS:
        result = conn.execute(text(f"SELECT * FROM {table}"))
        columns = [c for c in result.keys() if c != "id"]
        rows = []
        for row in result.mappings():
            values = {c: row[c] for c in columns}
            if values.get("runtimes"):
                values["runtimes"] = sorted(int(v) for v in values["runtimes"].split(","))
            rows.append(tuple(str(values[c]) for c in columns))
        found[table] = sorted(rows)
    return found


def kept_and_recounted(archive: Archive) -> tuple[dict, dict]:
    """The rollups as the writes kept them, and as a recount of every day from the jobs gives
    them (rolled back)."""
    with archive.engine.connect() as conn:
        with conn.begin() as transaction:
            kept = rollup_rows(conn)
            days = {tuple(r) for r in conn.execute(text("SELECT account_id, run_date FROM jobs"))}
            for table in ROLLUPS:
                days |= {tuple(r) for r in conn.execute(text(f"SELECT account_id, day FROM {table}"))}
            refresh_rollup(conn, days)
            recounted = rollup_rows(conn)
            transaction.rollback()
    return kept, recounted


REWRITES = [
    ("a runtime", [snapshot(1, 1, runtime=61)]),
    ("one output's records", [snapshot(3, 1, package=8, records=(5, 7))]),
    ("another package, the same outputs", [snapshot(1, 2, runtime=61, package=8)]),
    ("another day, the same outputs", [snapshot(3, 2, package=8, records=(5, 7), day=1)]),
    ("a failed job completes, the same outputs", [snapshot(2, 1)]),
    ("a completed job fails", [snapshot(6, 1, day=1, status="failed", error="Disk full on node 3", attempts=1)]),
    ("another error", [snapshot(4, 1, day=1, status="failed", error="Quota exceeded")]),
    ("the same error, failed later", [snapshot(4, 2, day=1, status="failed", error="Quota exceeded", ended=30)]),
    ("a retry", [snapshot(1, 3, runtime=61, package=8, attempts=1)]),
    ("a running job finishes, its outputs grown", [snapshot(5, 1, records=(9, 9))]),
    ("a completed job stopped, no outputs", [snapshot(6, 2, day=1, status="stopped", attempts=1, records=())]),
    # a day's groups of two packages and of none (PostgreSQL: package_id = ANY(array) OR IS NULL)
    ("a job without a package gets one, another changes package",
     [snapshot(1, 4, runtime=61, package=7, attempts=1), snapshot(7, 1, package=8)]),
]


def test_every_rewrite_leaves_the_rollups_as_a_whole_recount_would(db_url):
    archive = Archive.open(db_url, account="acme")
    archive.write_jobs([parse_job(s) for s in (
        snapshot(1, 0), snapshot(2, 0, status="failed", error="Timeout after 30s"), snapshot(3, 0, package=8),
        snapshot(4, 0, day=1, package=8, status="failed", error="Timeout after 40s"),
        snapshot(5, 0, status="running", records=(1, 1)), snapshot(6, 0, day=1, attempts=1),
        snapshot(7, 0, package=None))])
    kept, recounted = kept_and_recounted(archive)
    assert kept == recounted and all(kept.values())
    for what, snaps in REWRITES:
        result = archive.write_jobs([parse_job(s) for s in snaps])
        assert result.updated == [s["id"] for s in snaps], what
        kept, recounted = kept_and_recounted(archive)
        assert kept == recounted, what
    archive.close()


def output_days_counted_directly(conn) -> list[tuple]:
    """daily_output_rollup's measures counted from the jobs' outputs by a plain GROUP BY written
    here, not by the store's recount (whose own statement both sides of the test above share)."""
    return sorted(tuple(str(v) for v in row) for row in conn.execute(text(
        "SELECT j.account_id, j.run_date, j.package_id, COALESCE(o.component_name, o.name), COUNT(*), "
        "SUM(o.records_count), SUM(CASE WHEN j.status = 'completed' THEN 1 ELSE 0 END), "
        "SUM(CASE WHEN j.status = 'completed' THEN o.records_count ELSE 0 END) "
        "FROM job_outputs o JOIN jobs j ON j.id = o.job_id "
        "GROUP BY j.account_id, j.run_date, j.package_id, COALESCE(o.component_name, o.name)")))


def test_the_output_rollup_counts_each_outputs_records_as_the_jobs_hold_them(db_url):
    archive = Archive.open(db_url, account="acme")
    archive.write_jobs([parse_job(s) for s in (
        snapshot(1, 0, records=(5, 6)), snapshot(2, 0, status="failed", records=(0, 3)),
        snapshot(3, 0, package=8, records=(7,)), snapshot(4, 0, day=1, records=(11, 13)))])
    archive.write_jobs([parse_job(snapshot(3, 1, package=8, records=(8, 9))), parse_job(snapshot(4, 1, day=2))])
    with archive.engine.connect() as conn:
        kept = sorted(tuple(str(v) for v in row) for row in conn.execute(text(
            "SELECT account_id, day, package_id, output_key, jobs, records, completed, completed_records "
            "FROM daily_output_rollup")))
        assert kept == output_days_counted_directly(conn)
        assert ("acme", "2026-11-20", "8", "out 1", "1", "9", "1", "9") in kept
    archive.close()


def test_the_output_rollups_recount_reads_a_batchs_outputs_by_index_on_postgresql(db_url):
    """However the planner weighs them, a batch's recount looks its jobs' outputs up by job_id:
    hashing the whole of job_outputs for each batch made a first ingest slow down as it grew."""
    from archiver import store

    if not db_url.startswith("postgresql"):
        pytest.skip("a plan of PostgreSQL's planner")
    archive = Archive.open(db_url, account="acme")
    archive.write_jobs([parse_job(snapshot(job_id, 0, package=7 + job_id % 50, day=job_id % 20))
                        for job_id in range(1, 3001)])
    with archive.engine.connect() as conn:
        conn.execute(text("ANALYZE jobs, job_outputs"))
        groups = store._by_day({("acme", (DAY + timedelta(days=day)).date(), 7 + package)
                                for day in (1, 2) for package in range(50)})   # a batch's tenth of the jobs
        (insert,) = [sql for table, sql in store._recount_statements(conn) if table.name == "daily_output_rollup"]
        terms, values = store._in_groups(groups, "jobs.account_id", "jobs.run_date", "jobs.package_id", True)
        select = insert[insert.index("SELECT"):].replace(store.GROUPS, terms).replace("?", "%s")
        with conn.connection.driver_connection.cursor() as cursor:
            cursor.execute("SET LOCAL max_parallel_workers_per_gather = 0")
            cursor.execute("EXPLAIN " + select, values)
            plan = "\n".join(row[0] for row in cursor.fetchall())
        conn.rollback()
    assert "job_outputs_job_id" in plan and "Seq Scan on job_outputs" not in plan, plan
    archive.close()


def test_a_write_into_a_group_another_write_is_recounting_waits_for_it(db_url):
    """Two archives (two runs without a shared lock) writing jobs of the same day and package: the
    second write starts while the first one, its recount done, has not committed yet. Its recount
    waits for that commit and counts both jobs, once (PostgreSQL: the day's lock; MySQL: locking
    reads; SQLite: one writer) instead of adding its own row beside the first one's."""
    first, second = (Archive.open(db_url, account="acme") for _ in range(2))
    first.write_jobs([parse_job(snapshot(1, 0))])
    failures: list[BaseException] = []

    def write_second() -> None:
        try:
            second.write_jobs([parse_job(snapshot(3, 0, runtime=30))])
        except BaseException as exc:   # noqa: BLE001 - reported by the test
            failures.append(exc)

    thread = threading.Thread(target=write_second)

    def before_commit(conn) -> None:
        thread.start()
        time.sleep(1.0)   # the second write reaches its recount meanwhile

    first.write_jobs([parse_job(snapshot(2, 0, runtime=20))], after=before_commit)
    thread.join(timeout=60)
    assert not failures, failures
    kept, recounted = kept_and_recounted(first)
    assert kept == recounted and [row[3] for row in kept["daily_package_rollup"]] == ["3"]
    first.close()
    second.close()


def test_a_job_another_writer_inserted_after_the_read_is_stale_and_counted_as_stored(db_url, monkeypatch):
    """Two writers without a shared lock: job 1 is new when this write reads it, then another
    writer commits a newer snapshot of it before this write's upsert. The guarded upsert keeps that
    row: job 1 counts as stale, job 2 (new) is inserted, job 1's row and outputs stay the other
    writer's, and the rollups recount job 1 where that row puts it (the rows read back once after
    the upsert serve both the race check and the recount). PostgreSQL only: there the new rows are
    not locked by the read (MySQL's gap locks would make the other writer wait for this one; SQLite
    has one writer)."""
    if not db_url.startswith("postgresql"):
        pytest.skip("needs a database whose read of missing rows leaves their insert to others")
    archive, other = Archive.open(db_url, account="acme"), Archive.open(db_url, account="acme")
    real_read, calls = archive.read_stored, []

    def read_then_race(conn, ids, lock=True):
        found = real_read(conn, ids, lock)
        if not calls:
            other.write_jobs([parse_job(snapshot(1, 5, runtime=99, package=8, records=(40, 41)))])
        calls.append(list(ids))
        return found

    monkeypatch.setattr(archive, "read_stored", read_then_race)
    result = archive.write_jobs([parse_job(snapshot(1, 1)), parse_job(snapshot(2, 0, runtime=30))])
    assert (result.inserted, result.stale, result.updated) == ([2], [1], [])
    assert len(calls) == 2   # before the write, and once after its upsert (not a third time)
    with archive.engine.connect() as conn:
        assert conn.execute(text("SELECT runtime_in_seconds, package_id FROM jobs WHERE id = 1")).one() == (99, 8)
        assert conn.execute(text("SELECT records_count FROM job_outputs WHERE job_id = 1 ORDER BY id")
                            ).scalars().all() == [40, 41]
    kept, recounted = kept_and_recounted(archive)
    assert kept == recounted
    assert sorted(row[2] for row in kept["daily_package_rollup"]) == ["7", "8"]
    archive.close()
    other.close()
