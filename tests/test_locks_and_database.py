"""Locks that stay true (a run that loses its lock stops writing), SQLite locks by real path,
schema changes under the lock, MariaDB's charset, and read-only reports."""

from __future__ import annotations

import json
import os
import sqlite3
import subprocess
import time

import pytest
from sqlalchemy import create_engine, func, select, text
from sqlalchemy.engine import make_url
from sqlalchemy.exc import OperationalError

from archiver import database, dialect, models
from archiver.errors import DatabaseBusy, RunLocked
from archiver.sandbox import Sandbox
from archiver.store import Archive
from tests.clirun import run_cli
from tests.sandboxed import NOW, archiver_cmd, cli_env, run_archiver, wait_parked


def count_jobs(db_url: str) -> int:
    engine = database.make_engine(db_url)
    try:
        with engine.connect() as conn:
            return conn.execute(select(func.count()).select_from(models.JobRow)).scalar()
    finally:
        engine.dispose()


def runs(db_url: str):
    engine = database.make_engine(db_url)
    try:
        with engine.connect() as conn:
            return conn.execute(select(models.SyncRunRow.outcome, models.SyncRunRow.message)
                                .order_by(models.SyncRunRow.id)).all()
    finally:
        engine.dispose()


def break_the_lock(db_url: str, account: str) -> None:
    """End the run's lock as an outage would: its server session killed (PostgreSQL
    pg_terminate_backend, MariaDB KILL), or, on SQLite, its lock file removed."""
    engine = database.make_engine(db_url)
    try:
        name = engine.dialect.name
        if name == "sqlite":
            os.remove(dialect.sqlite_lock_path(engine, account))
            return
        with engine.connect() as conn:
            if name == "postgresql":
                key = dialect._lock_key(account)
                pid = conn.execute(text(
                    "SELECT pid FROM pg_locks WHERE locktype = 'advisory' AND granted AND objsubid = 1 "
                    "AND database = (SELECT oid FROM pg_database WHERE datname = current_database()) "
                    "AND classid::bigint = :hi AND objid::bigint = :lo"),
                    {"hi": (key >> 32) & 0xFFFFFFFF, "lo": key & 0xFFFFFFFF}).scalar()
                assert pid is not None, "no session holds the run lock"
                assert conn.execute(text("SELECT pg_terminate_backend(:p)"), {"p": pid}).scalar()
            else:
                holder = conn.execute(text("SELECT IS_USED_LOCK(:n)"),
                                      {"n": dialect.server_lock_name(engine, account)}).scalar()
                assert holder is not None, "no session holds the run lock"
                conn.execute(text(f"KILL {int(holder)}"))
    finally:
        engine.dispose()


def wait_for_jobs(db_url: str, wanted: int, proc: subprocess.Popen, timeout: float = 60) -> int:
    """The archive's job count once it reached `wanted` (the run writing what it fetched)."""
    ends = time.monotonic() + timeout
    while (found := count_jobs(db_url)) < wanted and proc.poll() is None and time.monotonic() < ends:
        time.sleep(0.05)
    return found


def test_a_run_that_loses_its_lock_stops_writing_and_says_so(db_url):
    with Sandbox(jobs=30, seed=31, now=NOW) as api:
        ids = [str(i) for i in api.job_ids()]
        api.hold_after(5, "get_job")
        proc = subprocess.Popen(archiver_cmd("sync", *ids, "--concurrency", "1", "--batch-size", "2"),
                                env=cli_env(api, db_url), stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                text=True)
        try:
            wait_parked(api, proc)
            # the fetch reads ahead of the writer: wait for the two batches it holds answers for
            before = wait_for_jobs(db_url, 4, proc)
            break_the_lock(db_url, api.account)
        finally:
            api.release()
        out, err = proc.communicate(timeout=120)
    assert proc.returncode == 1, err
    assert "[lost_lock: lost the run lock" in out, (out, err)
    assert "unexpected" not in err
    assert before == 4 == count_jobs(db_url)   # the two batches answered; nothing written after the loss
    (outcome, message), = runs(db_url)
    assert outcome == "lost_lock" and message.startswith("lost the run lock")



def test_once_the_lock_is_lost_the_next_run_takes_it_and_the_first_writes_nothing_more(db_url, tmp_path, payload):
    """The reported case: the next run takes the lock and marks the first abandoned; the first,
    released, finds its lock gone at its next commit and ends lost_lock instead of writing too."""
    saved = tmp_path / "one.jsonl"
    saved.write_text(json.dumps(payload("job-v1-completed.json")) + "\n")
    with Sandbox(jobs=30, seed=34, now=NOW) as api:
        ids = [str(i) for i in api.job_ids()]
        api.hold_after(5, "get_job")
        first = subprocess.Popen(archiver_cmd("sync", *ids, "--concurrency", "1", "--batch-size", "2"),
                                 env=cli_env(api, db_url), stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                 text=True)
        try:
            wait_parked(api, first)
            break_the_lock(db_url, api.account)
            second = run_archiver(api, db_url, "ingest", str(saved), "--account", api.account)
            during = [outcome for outcome, _ in runs(db_url)]
            stored = count_jobs(db_url)
        finally:
            api.release()
        out, err = first.communicate(timeout=120)
    assert second.returncode == 0, second.stderr
    assert during == ["abandoned", "ok"]   # the second run held the lock when it marked the first
    assert first.returncode == 1 and "lost the run lock" in out, (out, err)
    assert count_jobs(db_url) == stored
    assert [outcome for outcome, _ in runs(db_url)] == ["lost_lock", "ok"]

# -- SQLite: one lock per file, however it is reached -----------------------------------------------
def test_sqlite_lock_is_keyed_by_the_real_path_of_the_file(tmp_path, sqlite_url):
    real = sqlite_url.removeprefix("sqlite:///")
    link = tmp_path / "elsewhere" / "link.db"
    link.parent.mkdir()
    os.symlink(real, link)
    first, second = Archive.open(sqlite_url, "acme"), Archive.open(f"sqlite:///{link}", "acme")
    try:
        assert dialect.sqlite_lock_path(first.engine, "acme") == dialect.sqlite_lock_path(second.engine, "acme")
        with first.run_lock():
            with pytest.raises(RunLocked, match="another archiver run"):
                with second.run_lock():
                    pass
        with second.run_lock():  # released
            pass
    finally:
        first.close()
        second.close()


def test_two_cli_runs_through_a_symlink_do_not_both_write(tmp_path, sqlite_url):
    link = tmp_path / "link.db"
    os.symlink(sqlite_url.removeprefix("sqlite:///"), link)
    with Sandbox(jobs=20, seed=32, now=NOW) as api:
        ids = [str(i) for i in api.job_ids()]
        api.hold_after(3, "get_job")
        first = subprocess.Popen(archiver_cmd("sync", *ids, "--concurrency", "1"), env=cli_env(api, sqlite_url),
                                 stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        try:
            wait_parked(api, first)
            second = run_archiver(api, f"sqlite:///{link}", "sync", *ids[:2])
        finally:
            api.release()
        out, err = first.communicate(timeout=120)
    assert second.returncode == 4 and "another archiver run" in second.stderr
    assert first.returncode == 0, err


# -- schema changes exclude runs of every account ---------------------------------------------------
def test_schema_changes_wait_for_no_run_and_runs_wait_for_no_schema_change(db_url):
    one, two = Archive.open(db_url, "acme"), Archive.open(db_url, "zeta")
    try:
        with one.run_lock(), two.run_lock():   # runs of two accounts share the schema lock
            with pytest.raises(RunLocked, match="an archiver run holds the lock"):
                database.migrate(db_url, "downgrade", "base")
            with pytest.raises(RunLocked):
                database.migrate(db_url, "upgrade", "head")
        with dialect.schema_lock(one.engine):
            with pytest.raises(RunLocked, match="changing the schema"):
                with one.run_lock():
                    pass
        with one.run_lock():   # all released
            pass
    finally:
        one.close()
        two.close()
    assert count_jobs(db_url) == 0   # the tables are all still there


def test_db_downgrade_base_during_a_sync_exits_4_and_drops_nothing(db_url):
    with Sandbox(jobs=20, seed=33, now=NOW) as api:
        ids = [str(i) for i in api.job_ids()]
        api.hold_after(3, "get_job")
        sync = subprocess.Popen(archiver_cmd("sync", *ids, "--concurrency", "1"), env=cli_env(api, db_url),
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        try:
            wait_parked(api, sync)
            down = run_archiver(api, db_url, "db", "downgrade", "base")
        finally:
            api.release()
        out, err = sync.communicate(timeout=120)
    assert down.returncode == 4, down.stdout + down.stderr
    assert "an archiver run holds the lock" in down.stderr
    assert sync.returncode == 0, err
    assert count_jobs(db_url) == 20


# -- MariaDB: utf8mb4 whatever the server's default -----------------------------------------------
def test_a_latin1_mariadb_database_stores_emoji_after_migrating(payload):
    from archiver.parse import parse_job
    from tests.conftest import SERVER_URLS, server_url

    server_url("mysql")   # the server answers (a failure in CI, else a skip)
    url = make_url(SERVER_URLS["mysql"])
    url = url.set(database=f"{url.database}_latin1")
    admin = create_engine(url.set(database="mysql"), isolation_level="AUTOCOMMIT")
    try:
        with admin.connect() as conn:
            conn.execute(text(f"DROP DATABASE IF EXISTS `{url.database}`"))
            conn.execute(text(f"CREATE DATABASE `{url.database}` CHARACTER SET latin1 COLLATE latin1_swedish_ci"))
    finally:
        admin.dispose()
    db_url = url.render_as_string(hide_password=False)
    engine = database.make_engine(db_url)
    database.upgrade(engine, "0004")   # tables made latin1, as on such a server before 0005
    with engine.connect() as conn:
        assert conn.execute(text("SELECT TABLE_COLLATION FROM information_schema.TABLES WHERE "
                                 "TABLE_SCHEMA = DATABASE() AND TABLE_NAME = 'jobs'")).scalar().startswith("latin1")
    database.upgrade(engine)
    engine.dispose()

    archive = Archive.open(db_url, "acme")
    try:
        raw = payload("job-v1-failed.json")
        raw["errors"] = "Boom 💥: naïve façade, 日本語, 𝔘𝔫𝔦𝔠𝔬𝔡𝔢"
        archive.write_jobs([parse_job(raw)])
        with archive.engine.connect() as conn:
            assert conn.execute(select(models.JobRow.errors).where(models.JobRow.id == raw["id"])).scalar() \
                == raw["errors"]
            other = conn.execute(text(
                "SELECT TABLE_NAME, TABLE_COLLATION FROM information_schema.TABLES WHERE TABLE_SCHEMA = DATABASE() "
                "AND TABLE_TYPE = 'BASE TABLE' AND TABLE_NAME <> 'alembic_version' "
                "AND TABLE_COLLATION <> 'utf8mb4_unicode_ci'")).all()
            assert other == []
            conn.execute(text("CREATE TABLE later_table (note TEXT)"))   # what a later migration would make
            made = conn.execute(text("SELECT TABLE_COLLATION FROM information_schema.TABLES WHERE "
                                     "TABLE_SCHEMA = DATABASE() AND TABLE_NAME = 'later_table'")).scalar()
            conn.execute(text("DROP TABLE later_table"))
        assert made == "utf8mb4_unicode_ci"
    finally:
        archive.close()


# -- SQLite: a busy archive is transient; reports only read ----------------------------------------
def hold_write_lock(sqlite_url: str) -> sqlite3.Connection:
    """Another writer (a sync mid-transaction, a tool) holding the SQLite write lock."""
    conn = sqlite3.connect(sqlite_url.removeprefix("sqlite:///"), isolation_level=None)
    conn.execute("BEGIN IMMEDIATE")
    return conn


def store_a_job(db_url: str, raw: dict) -> None:
    from archiver.parse import parse_job

    archive = Archive.open(db_url, "acme")
    try:
        archive.write_jobs([parse_job(raw)])
    finally:
        archive.close()


def test_a_busy_sqlite_archive_is_a_transient_exit_1_not_a_configuration_error(
        capsys, monkeypatch, tmp_path, sqlite_url, payload):
    monkeypatch.setattr(dialect, "SQLITE_BUSY_TIMEOUT", 0.2)  # not 30s of waiting in a test
    saved = tmp_path / "jobs.jsonl"
    saved.write_text(json.dumps(payload("job-v1-failed.json")) + "\n")
    writer = hold_write_lock(sqlite_url)
    try:
        with pytest.raises(DatabaseBusy) as info:
            Archive.open(sqlite_url, "acme")
        result = run_cli(capsys, monkeypatch, ["ingest", str(saved), "--db", sqlite_url])
    finally:
        writer.close()
    assert info.value.exit_code == 1
    assert result.code == 1, result.err
    assert "is busy: another process held its write lock" in result.err and "next run" in result.err
    assert run_cli(capsys, monkeypatch, ["ingest", str(saved), "--db", sqlite_url]).code == 0   # once free


def test_a_report_reads_while_a_writer_holds_the_lock(capsys, monkeypatch, sqlite_url, payload):
    monkeypatch.setattr(dialect, "SQLITE_BUSY_TIMEOUT", 0.2)  # a report that waited would fail fast
    store_a_job(sqlite_url, payload("job-v1-failed.json"))
    writer = hold_write_lock(sqlite_url)
    try:
        result = run_cli(capsys, monkeypatch, ["report", "status", "--db", sqlite_url, "--since", "2013-01-01",
                                               "--format", "json"])
        current = run_cli(capsys, monkeypatch, ["db", "current", "--db", sqlite_url])
    finally:
        writer.close()
    assert result.code == 0, result.err
    assert json.loads(result.out) == [{"status": "failed", "jobs": 1, "share": 1.0}]
    assert current.code == 0 and f"revision {database.head_revision()}" in current.out


def test_a_report_opens_the_archive_read_only(capsys, monkeypatch, sqlite_url, payload):
    store_a_job(sqlite_url, payload("job-v1-failed.json"))
    path = sqlite_url.removeprefix("sqlite:///")
    os.chmod(path, 0o444)   # a read-only archive file (root could still write it: hence the check below)
    result = run_cli(capsys, monkeypatch, ["report", "status", "--db", sqlite_url, "--since", "2013-01-01",
                                           "--format", "json"])
    assert result.code == 0, result.err
    assert json.loads(result.out)[0]["jobs"] == 1
    engine = database.open_engine(sqlite_url, create=False, read_only=True)   # what run_report opens
    try:
        with pytest.raises(OperationalError, match="readonly|read-only|query_only"):
            with engine.begin() as conn:
                conn.execute(text("DELETE FROM jobs"))
    finally:
        engine.dispose()
    os.chmod(path, 0o600)
    assert count_jobs(sqlite_url) == 1


def test_a_report_on_postgresql_runs_in_read_only_transactions(migrated_servers):
    db_url = migrated_servers("postgresql")
    engine = database.open_engine(db_url, create=False, read_only=True)
    try:
        with engine.connect() as conn:
            assert conn.execute(text("SHOW transaction_read_only")).scalar() == "on"
    finally:
        engine.dispose()


# -- disk full ------------------------------------------------------------------------------------
def test_a_full_database_stops_the_run_at_once_and_says_so(capsys, monkeypatch, tmp_path, sqlite_url, payload):
    """SQLite's max_page_count stands in for a full disk: SQLITE_FULL, 'database or disk is full'."""
    original = dialect._sqlite_connect

    def small_database(dbapi_conn, record):
        original(dbapi_conn, record)
        pages = dbapi_conn.execute("PRAGMA page_count").fetchone()[0]
        dbapi_conn.execute(f"PRAGMA max_page_count = {pages + 40}")

    monkeypatch.setattr(dialect, "_sqlite_connect", small_database)
    saved = tmp_path / "jobs.jsonl"
    with saved.open("w") as out:
        for n in range(400):
            raw = payload("job-v1-failed.json")
            raw["id"] = 10_000 + n
            raw["errors"] = f"error {n}: " + "x" * 3000
            out.write(json.dumps(raw) + "\n")
    result = run_cli(capsys, monkeypatch, ["ingest", str(saved), "--db", sqlite_url, "--batch-size", "10"])
    monkeypatch.setattr(dialect, "_sqlite_connect", original)
    assert result.code == 1, result.err
    assert "[failed: the database has no room left" in result.out, result.out + result.err
    assert "database or disk is full" in result.out
    assert "in halves" not in result.err   # stopped at once, not written again in parts
    stored = count_jobs(sqlite_url)
    assert 0 < stored < 400 and stored % 10 == 0   # whole batches kept, then nothing
    (outcome, message), = runs(sqlite_url)
    assert outcome == "failed" and message.startswith("the database has no room left")


def test_a_connection_dropped_mid_query_leaves_no_sqlite_write_lock(tmp_path):
    """A SIGTERM raised inside a query makes SQLAlchemy drop (invalidate) the connection. Its
    write transaction must end there: a statement it was reading is still referenced by the
    traceback being unwound, which kept the connection, and the file's write lock, open, so the
    run's last write (its sync_runs row) waited out the busy timeout."""
    path = tmp_path / "archive.db"
    engine = database.make_engine(f"sqlite:///{path}")
    with engine.begin() as conn:
        conn.execute(text("CREATE TABLE t (x INTEGER)"))
        conn.execute(text("INSERT INTO t VALUES (1), (2), (3)"))
    conn = engine.connect()
    conn.begin()
    conn.execute(text("INSERT INTO t VALUES (4)"))   # the write lock is taken
    reading = conn.execute(text("SELECT x FROM t"))
    reading.fetchone()
    conn.invalidate()                                # what a signal raised in a query leads to
    other = sqlite3.connect(path, timeout=0.2, isolation_level=None)
    try:
        other.execute("BEGIN IMMEDIATE")             # "database is locked" while the lock is held
        assert other.execute("SELECT count(*) FROM t").fetchone() == (3,)   # the insert rolled back
    finally:
        other.close()
        engine.dispose()


def test_postgresql_sessions_are_in_utc_read_only_for_reports_and_keep_the_urls_own_options():
    from sqlalchemy.engine import make_url

    from archiver.dialect import engine_options

    url = make_url("postgresql+psycopg://u@h/db?options=-c%20statement_timeout%3D5000")
    _, writer = engine_options(url, create=False)
    _, reader = engine_options(url, create=False, read_only=True)
    assert writer["connect_args"]["options"] == "-c statement_timeout=5000 -c timezone=UTC"
    assert reader["connect_args"]["options"] == ("-c statement_timeout=5000 -c timezone=UTC "
                                                 "-c default_transaction_read_only=on")
    _, plain = engine_options(make_url("postgresql+psycopg://u@h/db"), create=False)
    assert plain["connect_args"]["options"] == "-c timezone=UTC"


def test_every_sqlite_connection_keeps_few_prepared_statements(tmp_path, monkeypatch):
    """Most statements of a write are made for their batch (IN lists of its ids, the recounts of
    its days): a connection that cached 128 of them held the largest ones for nothing, and a long
    ingest's peak memory grew with the archive. Writers, readers and a plain open cache few."""
    import sqlite3.dbapi2

    real, seen = sqlite3.dbapi2.connect, []

    def connect(*args, **kwargs):
        seen.append(kwargs.get("cached_statements"))
        return real(*args, **kwargs)

    monkeypatch.setattr(sqlite3.dbapi2, "connect", connect)
    monkeypatch.setattr(sqlite3, "connect", connect)
    url = f"sqlite:///{tmp_path / 'archive.db'}"
    for engine in (database.open_engine(url), database.open_engine(url, read_only=True),
                   database.make_engine(url, create=False)):
        with engine.connect() as conn:
            assert conn.execute(text("SELECT 1")).scalar() == 1
        engine.dispose()
    assert len(seen) >= 3 and set(seen) == {dialect.SQLITE_CACHED_STATEMENTS} and dialect.SQLITE_CACHED_STATEMENTS <= 16
