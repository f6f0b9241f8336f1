"""What BI tools see of the views: a number, text or time type for every column on every
database, the documented columns, Datasette's facets and filters, and a daily rollup that
stays right when jobs are rewritten."""

import asyncio
import sqlite3
from collections import Counter
from datetime import datetime, timedelta, timezone
from pathlib import Path
from urllib.parse import parse_qsl, urlencode, urlsplit

import pytest
from sqlalchemy import inspect, text
from sqlalchemy.engine import make_url

from archiver import database
from archiver.schema_docs import VIEW_DOCS
from archiver.store import CHAIN_COLUMNS, SCHEDULE_RUNS_SQL, Archive
from tests.sandboxed import NOW, settings_for

ROOT = Path(__file__).resolve().parents[1]
VIEWS = ["job_runs", "daily_package_stats", "job_failures", "schedule_attempts"]

# The type docs/schema.md gives a view column, and what each database may call it.
TYPE_NAMES = {
    "BIGINT": {"sqlite": {"BIGINT", "INTEGER"}, "postgresql": {"bigint"}, "mysql": {"bigint"}},
    "INTEGER": {"sqlite": {"INTEGER"}, "postgresql": {"integer"}, "mysql": {"int"}},
    "DOUBLE": {"sqlite": {"DOUBLE", "REAL"}, "postgresql": {"double precision"}, "mysql": {"double"}},
    "VARCHAR": {"sqlite": {"VARCHAR"}, "postgresql": {"character varying", "text"}, "mysql": {"varchar"}},
    "TEXT": {"sqlite": {"TEXT"}, "postgresql": {"text"}, "mysql": {"longtext"}},
    "TIMESTAMP": {"sqlite": {"DATETIME"}, "postgresql": {"timestamp with time zone"}, "mysql": {"datetime"}},
    "DATE": {"sqlite": {"DATE"}, "postgresql": {"date"}, "mysql": {"date"}},
    "JSON": {"sqlite": {"JSON"}, "postgresql": {"jsonb"}, "mysql": {"longtext", "json"}},
}
# SQLite before 3.41 declares no type for a computed view column (a CAST gives it affinity only);
# later versions name the affinity instead (INT, NUM).
SQLITE_DECLARES_COMPUTED = sqlite3.sqlite_version_info >= (3, 41)
if SQLITE_DECLARES_COMPUTED:
    for kind, names in (("BIGINT", {"INT"}), ("INTEGER", {"INT"}), ("TIMESTAMP", {"NUM"})):
        TYPE_NAMES[kind]["sqlite"] |= names


def documented_views() -> dict[str, dict[str, tuple[str, str]]]:
    """docs/schema.md's view tables: {view: {column: (type, meaning)}}."""
    doc = (ROOT / "docs" / "schema.md").read_text().split("\n## Views\n", 1)[1].split("\n## ", 1)[0]
    views = {}
    for view in VIEWS:
        section = doc.split(f"### {view}\n", 1)[1].split("\n### ", 1)[0]
        views[view] = {}
        for line in section.splitlines():
            cells = [c.strip() for c in line.strip().strip("|").split("|")]
            if len(cells) == 3 and cells[0] not in ("column", "---"):
                views[view][cells[0]] = (cells[1], cells[2].replace("`", ""))
    return views


def database_types(url: str) -> dict[str, dict[str, str]]:
    """{view: {column: type name}} as the database itself reports it."""
    engine = database.make_engine(url)
    try:
        with engine.connect() as conn:
            name = conn.dialect.name
            if name == "sqlite":
                return {v: {r[1]: r[2].split("(")[0].upper() for r in conn.execute(text(f"PRAGMA table_info({v})"))}
                        for v in VIEWS}
            schema = "current_schema()" if name == "postgresql" else "DATABASE()"
            found: dict[str, dict[str, str]] = {v: {} for v in VIEWS}
            rows = conn.execute(text("SELECT table_name, column_name, data_type FROM information_schema.columns "
                                     f"WHERE table_schema = {schema} ORDER BY ordinal_position"))
            for view, column, kind in rows:
                if view in found:
                    found[view][column] = kind.lower()
            return found
    finally:
        engine.dispose()


def test_docs_schema_md_lists_every_view_column_in_order_with_its_meaning(sqlite_url):
    documented = documented_views()
    engine = database.make_engine(sqlite_url)
    columns = {v: [c["name"] for c in inspect(engine).get_columns(v)] for v in VIEWS}
    engine.dispose()
    assert {v: list(cols) for v, cols in documented.items()} == columns
    assert {v: {c: meaning for c, (_, meaning) in cols.items()} for v, cols in documented.items()} == VIEW_DOCS


def test_postgresql_view_columns_carry_the_docs_as_comments(migrated_servers):
    engine = database.make_engine(migrated_servers("postgresql"))
    inspector = inspect(engine)
    comments = {v: {c["name"]: c.get("comment") for c in inspector.get_columns(v)} for v in VIEWS}
    engine.dispose()
    assert comments == VIEW_DOCS


@pytest.mark.parametrize("backend", ["sqlite", "postgresql", "mysql"])
def test_every_view_column_has_a_number_text_or_time_type(backend, sqlite_url, migrated_servers):
    url = sqlite_url if backend == "sqlite" else migrated_servers(backend)
    reported = database_types(url)
    untyped = []
    for view, columns in documented_views().items():
        for column, (kind, _) in columns.items():
            got = reported[view][column]
            if backend == "sqlite" and got == "" and not SQLITE_DECLARES_COMPUTED:
                untyped.append(f"{view}.{column}")
                continue
            assert got in TYPE_NAMES[kind.split("(")[0]][backend], (view, column, got)
    # SQLite < 3.41 declares no type for a computed view column: the views read those from
    # generated columns of jobs instead (migration 0009), where SQLite has them (3.31 and later)
    if sqlite3.sqlite_version_info >= (3, 31):
        assert untyped == []
    else:
        assert set(untyped) <= {"job_runs.is_terminal", "job_runs.attempt", "job_failures.failed_at",
                                "job_failures.attempt"}


@pytest.mark.parametrize("backend", ["postgresql", "mysql"])
def test_view_counts_come_back_as_integers_and_rates_as_floats(backend, migrated_servers, history_archive):
    """No Decimal('3') from MariaDB, no 0.36756238003838771593 numeric from PostgreSQL."""
    url = history_archive(migrated_servers(backend))
    engine = database.make_engine(url)
    with engine.connect() as conn:
        stats = conn.execute(text("SELECT jobs, failed, failure_rate FROM daily_package_stats "
                                  "WHERE failure_rate > 0")).first()
        runs = conn.execute(text("SELECT is_terminal, attempt FROM job_runs")).first()
        chains = conn.execute(text("SELECT attempts, failed_attempts FROM schedule_attempts")).first()
    engine.dispose()
    assert all(type(v) is int for v in (*stats[:2], *runs, *chains))
    assert type(stats.failure_rate) is float


@pytest.fixture(scope="module")
def history_archive():
    """history_archive(url): the url, holding a synced sandbox history of 300 jobs."""
    from archiver.flows.incremental import IncrementalOptions, sync_incremental
    from archiver.flows.runs import SyncOptions
    from archiver.sandbox import Sandbox
    from tests.conftest import truncate_all

    def fill(url: str) -> str:
        if not url.startswith("sqlite"):
            truncate_all(url)
        with Sandbox(jobs=300, seed=41, now=NOW) as api:
            assert sync_incremental(settings_for(api, url), SyncOptions(), IncrementalOptions()).exit_code == 0
        return url

    return fill


def datasette_get(path: Path, request: str) -> dict:
    datasette = pytest.importorskip("datasette.app")
    app = datasette.Datasette([str(path)], settings={"facet_time_limit_ms": 10000, "sql_time_limit_ms": 10000})
    response = asyncio.run(app.client.get(request))
    assert response.status_code == 200, response.text
    return response.json()


@pytest.mark.parametrize("view", VIEWS)
def test_datasette_facets_and_filters_every_column_of_the_view(view, sqlite_url, history_archive):
    """Through Datasette's JSON API, as a user clicks: facet a column, follow the top value's
    link (an equality filter `?column=value`) and get exactly the rows the facet counted."""
    history_archive(sqlite_url)
    path = Path(make_url(sqlite_url).database)
    db = path.stem
    for column in VIEW_DOCS[view]:
        page = datasette_get(path, f"/{db}/{view}.json?_facet={column}&_shape=objects&_size=0")
        results = page["facet_results"]
        results = results.get("results", results)   # Datasette 1.0 nests them
        values = [v for v in results[column]["results"] if v["value"] is not None]
        if not values:
            continue   # all NULL in this history (e.g. error_summary: no --with-log-summary)
        top = values[0]
        link = urlsplit(top["toggle_url"])
        params = {k: v for k, v in parse_qsl(link.query, keep_blank_values=True) if not k.startswith("_")}
        assert set(params) == {column}
        filtered = datasette_get(path, f"{link.path}?{urlencode(params)}&_shape=objects&_size=max")
        assert len(filtered["rows"]) == top["count"] > 0, (view, column, top["value"])
        assert all(str(row[column]) == str(top["value"]) for row in filtered["rows"])


def test_datasette_filter_on_a_computed_flag_returns_the_rows(sqlite_url, history_archive):
    """The issue's case: the facet said "1: 395" and clicking it returned nothing."""
    history_archive(sqlite_url)
    path = Path(make_url(sqlite_url).database)
    page = datasette_get(path, f"/{path.stem}/job_runs.json?_facet=is_terminal&is_terminal=1&_shape=objects&_size=max")
    facet = {v["value"]: v["count"] for v in page["facet_results"]["is_terminal"]["results"]}
    assert facet == {1: len(page["rows"])} and page["rows"]
    assert {row["is_terminal"] for row in page["rows"]} == {1}


# -- the daily rollup -----------------------------------------------------------------------------
def live_daily_stats(conn) -> dict:
    """daily_package_stats computed from jobs directly (what the 0003 view computed)."""
    rows = conn.execute(text("""
        SELECT account_id, run_date, package_id, COUNT(*) AS jobs,
               SUM(CASE WHEN status = 'completed' THEN 1 ELSE 0 END) AS completed,
               SUM(CASE WHEN status = 'failed' THEN 1 ELSE 0 END) AS failed,
               SUM(CASE WHEN status = 'stopped' THEN 1 ELSE 0 END) AS stopped,
               MAX(CASE WHEN status IN ('completed', 'failed', 'stopped') THEN runtime_in_seconds END) AS longest
        FROM jobs GROUP BY account_id, run_date, package_id"""))
    return {(r.account_id, str(r.run_date)[:10], r.package_id): (r.jobs, r.completed, r.failed, r.stopped, r.longest)
            for r in rows}


def view_daily_stats(conn) -> dict:
    rows = conn.execute(text("SELECT account_id, day, package_id, jobs, completed, failed, stopped, "
                             "max_runtime_seconds FROM daily_package_stats"))
    found = Counter()
    result = {}
    for r in rows:
        key = (r.account_id, str(r.day)[:10], r.package_id)
        found[key] += 1
        result[key] = (r.jobs, r.completed, r.failed, r.stopped, r.max_runtime_seconds)
    assert max(found.values(), default=1) == 1, "one row per account, day and package"
    return result


def snapshot(job_id: int, created: datetime, status: str, package_id: int, updated: datetime, runtime: int) -> dict:
    return {"id": job_id, "status": status, "package_id": package_id, "cluster_id": 1,
            "created_at": created.isoformat(), "updated_at": updated.isoformat(),
            "runtime_in_seconds": runtime, "errors": "boom" if status == "failed" else ""}


def test_daily_rollup_follows_rewrites_new_days_and_moves(db_url, payload):
    """Each write recounts the days it touched: a job that finishes, fails, moves to another
    package or another day counts once, where it is now; untouched days keep their counts."""
    from archiver.parse import parse_job

    day = datetime(2026, 11, 20, 10, tzinfo=timezone.utc)
    archive = Archive.open(db_url, account="acme")

    def write(*snaps):
        archive.write_jobs([parse_job(s) for s in snaps])

    write(snapshot(1, day, "running", 7, day, 10), snapshot(2, day, "completed", 7, day, 50),
          snapshot(3, day - timedelta(days=1), "failed", 8, day, 20))
    write(snapshot(1, day, "completed", 7, day + timedelta(hours=1), 90))                         # finishes
    write(snapshot(2, day, "failed", 9, day + timedelta(hours=2), 60))                            # other package
    write(snapshot(4, day + timedelta(days=1), "stopped", 7, day + timedelta(days=1), 5))        # a new day
    write(snapshot(3, day - timedelta(days=2), "failed", 8, day + timedelta(hours=3), 20))       # another day
    with archive.engine.connect() as conn:
        assert view_daily_stats(conn) == live_daily_stats(conn) == {
            ("acme", "2026-11-20", 7): (1, 1, 0, 0, 90),
            ("acme", "2026-11-20", 9): (1, 0, 1, 0, 60),
            ("acme", "2026-11-21", 7): (1, 0, 0, 1, 5),
            ("acme", "2026-11-18", 8): (1, 0, 1, 0, 20),
        }
        rate = conn.execute(text("SELECT failure_rate, avg_runtime_seconds FROM daily_package_stats "
                                 "WHERE package_id = 9")).one()
    archive.close()
    assert (rate.failure_rate, rate.avg_runtime_seconds) == (1.0, 60.0)


def test_an_ingest_with_an_account_moves_unowned_jobs_in_the_rollup(tmp_path, sqlite_url):
    """Jobs first ingested without an account, then claimed by an ingest with one."""
    from archiver.flows.ingest import ingest
    from archiver.flows.runs import SyncOptions

    from archiver.config import Settings

    records = [snapshot(i, datetime(2026, 11, 20, 10, tzinfo=timezone.utc), "completed", 7,
                        datetime(2026, 11, 20, 11, tzinfo=timezone.utc), 30) for i in (1, 2)]
    assert ingest(Settings(account=None, database_url=sqlite_url), records, SyncOptions()).exit_code == 0
    assert ingest(Settings(account="acme", database_url=sqlite_url), records, SyncOptions()).exit_code == 0
    engine = database.make_engine(sqlite_url)
    with engine.connect() as conn:
        assert view_daily_stats(conn) == live_daily_stats(conn) == {("acme", "2026-11-20", 7): (2, 2, 0, 0, 30)}
    engine.dispose()


def test_upgrading_an_existing_archive_fills_the_rollup(tmp_path, db_url):
    """The migrations count the history already stored (downgrade to 0007, upgrade again) as
    each write counted it."""
    from archiver.parse import parse_job

    archive = Archive.open(db_url, account="acme")
    moment = datetime(2026, 11, 20, 10, tzinfo=timezone.utc)
    archive.write_jobs([parse_job(snapshot(i, moment + timedelta(hours=i), "failed" if i % 3 else "completed",
                                           7 + i % 2, moment + timedelta(hours=i), i)) for i in range(1, 40)])
    engine = archive.engine

    def runtimes():
        with engine.connect() as conn:
            rows = conn.execute(text(
                "SELECT account_id, day, package_id, jobs, completed, failed, stopped, failure_rate, "
                "avg_runtime_seconds, max_runtime_seconds, runtimes FROM daily_package_rollup")).all()
            return sorted(((*r[:-1], sorted(map(int, r[-1].split(",")))) for r in rows), key=str)

    kept = runtimes()
    assert len(kept) == 6 and all(r[-1] for r in kept)
    database.downgrade(engine, "0007")
    database.upgrade(engine)
    with engine.connect() as conn:
        assert view_daily_stats(conn) == live_daily_stats(conn)
        assert len(live_daily_stats(conn)) == 6   # 3 days x 2 packages
    assert runtimes() == kept   # the writes' counts are the migrations' (0008, 0009), to the bit
    archive.close()


def test_upgrading_to_0010_fills_the_rollups_as_the_writes_keep_them(db_url):
    """Migration 0010 computes jobs.error_signature and counts the history already stored into
    daily_package_rollup's new columns, daily_output_rollup, daily_error_rollup and
    daily_schedule_rollup, to the row what every write keeps."""
    from archiver.parse import parse_job

    archive = Archive.open(db_url, account="acme")
    moment = datetime(2026, 11, 20, 22, tzinfo=timezone.utc)
    snaps = []
    for i in range(1, 60):
        snap = snapshot(i, moment + timedelta(hours=i), ("failed", "completed", "stopped")[i % 3], 7 + i % 2,
                        moment + timedelta(hours=i), i)
        snaps.append({**snap, "creator": {"type": "Schedule", "id": 5}, "attempts": i % 4 // 3,
                      "errors": f"Job {i} failed after {i * 7}s" if i % 3 == 0 else "",
                      "outputs": [{"id": i * 10 + k, "name": f"out {k}", "records_count": i * k} for k in range(i % 3)]})
    archive.write_jobs([parse_job(s) for s in snaps])
    engine = archive.engine
    queries = {"packages": "SELECT account_id, day, package_id, retries, run_seconds FROM daily_package_rollup",
               "outputs": "SELECT account_id, day, package_id, output_key, jobs, records, completed, completed_records "
                          "FROM daily_output_rollup",
               "schedules": "SELECT account_id, day, schedule_id, package_id, runs, retried, retries, recovered, failed "
                            "FROM daily_schedule_rollup",
               "errors": "SELECT account_id, day, package_id, error_signature, jobs, first_failed_at, last_failed_at, "
                         "last_job_id FROM daily_error_rollup",
               "signatures": "SELECT id, error_signature FROM jobs"}

    def rollups() -> dict[str, list]:
        with engine.connect() as conn:
            return {name: sorted((tuple(str(v) for v in row) for row in conn.execute(text(sql))))
                    for name, sql in queries.items()}

    kept = rollups()
    assert all(kept.values()) and any(row[5] != "0" for row in kept["schedules"])   # some retried
    assert {row[3] for row in kept["errors"]} == {"Job <n> failed after <n>s"}
    database.downgrade(engine, "0009")
    database.upgrade(engine)
    assert rollups() == kept
    archive.close()


# -- the schedule runs ----------------------------------------------------------------------------
def schedule_runs_of(url: str) -> list[tuple]:
    engine = database.make_engine(url)
    with engine.connect() as conn:
        rows = conn.execute(text("SELECT * FROM schedule_attempts ORDER BY first_job_id")).all()
    engine.dispose()
    return [tuple(r) for r in rows]


def test_schedule_runs_kept_by_shuffled_small_batches_equal_a_full_recount(tmp_path, sqlite_template):
    """Jobs arriving in any order (retries before their first attempts, running before failed)
    in batches of 7: the stored runs equal those the migration computes from the whole history."""
    import random
    import shutil

    from archiver.config import Settings
    from archiver.flows.ingest import ingest
    from archiver.flows.runs import SyncOptions
    from archiver.sandbox import Sandbox

    with Sandbox(jobs=400, seed=43, now=NOW) as api:
        final = [api.job(i) for i in api.job_ids()]
        api_early = Sandbox(jobs=400, seed=43, now=NOW - timedelta(hours=6))
        with api_early:
            early = [api_early.job(i) for i in api_early.job_ids()]
    records = early + final
    random.Random(5).shuffle(records)
    path = tmp_path / "shuffled.db"
    shutil.copy(sqlite_template, path)
    url = f"sqlite:///{path}"
    assert ingest(Settings(account="acme", database_url=url), records, SyncOptions(batch_size=7)).exit_code == 0
    kept = schedule_runs_of(url)
    engine = database.make_engine(url)
    with engine.connect() as conn:   # and the retries of each day, recounted with the runs
        assert schedule_days(conn) == schedule_days_of_runs(conn)
    database.downgrade(engine, "0007")
    database.upgrade(engine)
    engine.dispose()
    assert kept == schedule_runs_of(url)
    assert any(row[-1] == "recovered_on_retry" for row in kept)


def schedule_days(conn) -> dict[tuple, tuple]:
    """daily_schedule_rollup as kept by the writes."""
    rows = conn.execute(text("SELECT account_id, day, schedule_id, package_id, runs, retried, retries, recovered, "
                             "failed FROM daily_schedule_rollup"))
    return {(r[0], str(r[1])[:10], r[2], r[3]): tuple(r[4:]) for r in rows}


def schedule_days_of_runs(conn) -> dict[tuple, tuple]:
    """daily_schedule_rollup counted here from schedule_runs (UTC day of scheduled_at)."""
    found: dict[tuple, list[int]] = {}
    for account, schedule, package, at, attempts, outcome in conn.execute(text(
            "SELECT account_id, schedule_id, package_id, scheduled_at, attempts, outcome FROM schedule_runs")):
        at = at if isinstance(at, datetime) else datetime.fromisoformat(at)
        day = (at.astimezone(timezone.utc) if at.tzinfo else at).date().isoformat()
        counts = found.setdefault((account, day, schedule, package), [0, 0, 0, 0, 0])
        for i, value in enumerate((1, attempts > 1, attempts - 1, outcome == "recovered_on_retry", outcome == "failed")):
            counts[i] += value
    return {key: tuple(counts) for key, counts in found.items()}


def scheduled(job_id: int, created: datetime, status: str, attempt: int, schedule: int = 5) -> dict:
    snap = snapshot(job_id, created, status, 7, created + timedelta(minutes=30), 60)
    return {**snap, "creator": {"type": "Schedule", "id": schedule}, "attempts": attempt}


def test_schedule_runs_after_a_long_healthy_stretch_equal_a_full_recount(db_url):
    """A chain that failed long ago, then ran cleanly: a write reads only its own jobs and the
    anchor's run (migration 0009), yet a late retry still joins the old failed attempt, a job
    tied in time with it is recounted, the healthy runs in between stay, and a first attempt
    rewritten to failed takes the retries after it; the stored runs always equal the migration's."""
    from archiver.parse import parse_job

    t0 = datetime(2026, 11, 1, tzinfo=timezone.utc)
    hour = timedelta(hours=1)
    archive = Archive.open(db_url, account="acme")

    def write(*snaps):
        archive.write_jobs([parse_job(s) for s in snaps])

    def recount_equals_kept() -> list[tuple]:
        with archive.engine.begin() as conn:
            assert schedule_days(conn) == schedule_days_of_runs(conn)
            kept = [tuple(r) for r in conn.execute(text("SELECT * FROM schedule_runs ORDER BY first_job_id"))]
            conn.execute(text("DELETE FROM schedule_runs"))
            conn.execute(text(SCHEDULE_RUNS_SQL.format(
                region=f"SELECT {CHAIN_COLUMNS} FROM jobs j WHERE j.creator_type = 'Schedule'")))
            full = [tuple(r) for r in conn.execute(text("SELECT * FROM schedule_runs ORDER BY first_job_id"))]
        assert kept == full
        return kept

    write(scheduled(100, t0, "failed", 0), scheduled(99, t0, "failed", 0, schedule=6),
          scheduled(160, t0 + hour / 2, "failed", 1))                     # a failed retry of job 100
    write(*[scheduled(100 + i, t0 + i * hour, "completed", 0) for i in range(1, 40)])
    runs = recount_equals_kept()
    assert len(runs) == 41
    write(scheduled(200, t0 + 40 * hour, "completed", 2))                 # a late retry of job 100
    runs = recount_equals_kept()
    first = {r[0]: r for r in runs}
    assert first[100][7:] == (3, 2, "completed", "recovered_on_retry")   # attempts, failed, status, outcome
    write(scheduled(101, t0 + hour, "completed", 0), scheduled(98, t0, "failed", 0))  # rewritten; a tie
    recount_equals_kept()
    write(scheduled(120, t0 + 20 * hour, "failed", 0))                    # now the retry's anchor
    runs = recount_equals_kept()
    first = {r[0]: r for r in runs}
    assert first[120][7:] == (2, 1, "completed", "recovered_on_retry")
    assert first[100][7:9] == (2, 2) and 101 in first and 139 in first
    archive.close()


def test_a_report_session_turns_off_jit_and_parallel_workers_on_postgresql(db_url):
    """Reports and the health board read small, indexed sets: JIT compilation and starting
    parallel workers cost them more than they save. The settings last the transaction only."""
    from archiver.dialect import report_session

    if not db_url.startswith("postgresql"):
        pytest.skip("settings of PostgreSQL's planner")
    engine = database.open_engine(db_url)
    try:
        with engine.connect() as conn:
            report_session(conn)
            assert conn.execute(text("SHOW timezone")).scalar() == "UTC"   # every archiver session
            assert conn.execute(text("SHOW jit")).scalar() == "off"
            assert conn.execute(text("SHOW max_parallel_workers_per_gather")).scalar() == "0"
        with engine.connect() as conn:
            assert conn.execute(text("SHOW max_parallel_workers_per_gather")).scalar() != "0"
    finally:
        engine.dispose()
