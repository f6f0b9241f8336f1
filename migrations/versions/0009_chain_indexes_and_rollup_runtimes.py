"""Indexes that keep the schedule_runs upkeep of each write bounded by what it wrote, and the
runtimes of each rollup day (exact runtime percentiles without sorting the jobs).

Each write of jobs recomputes the runs of the schedule chains it touched (archiver.store),
from the chain's last failed first attempt before the earliest job written. Finding that
attempt, and the retries between it and the written jobs, read the chain index backwards
with a table lookup per job: on a healthy chain that failed once long ago, every write
re-read the whole chain since, which made a first sync quadratic.

- `ix_jobs_creator_type_creator_id_package_id_status_created_at`: the last failed first
  attempt of a chain is one descent (status is an equality; attempts is checked on the
  failed jobs only).
- The chain index gains `attempts`, so the retries between that attempt and the written jobs
  are read from the index alone (no lookup of the wide job rows).
- `ix_jobs_creator_type_creator_id` (0003) is a prefix of the chain index: dropped.
- `daily_package_rollup.runtimes`: every runtime of the day's finished jobs of a package,
  comma-separated (this migration writes them ascending; each write's recount aggregates them
  in SQL, in no particular order), kept with the counts (archiver.store). `report runtimes` merges whole days from it (a year of
  a million jobs: 25,000 short texts) instead of sorting every job of the period.
- SQLite before 3.41 declares no type for a computed view column, so BI tools saw four columns
  of `job_runs` and `job_failures` untyped. On SQLite those four are now read from VIRTUAL
  generated columns of `jobs` (computed on read, nothing stored), which carry a declared type:
  `is_terminal` INTEGER, `attempt` BIGINT, `ended_or_created_at` DATETIME (the index of failed
  jobs moves to it). PostgreSQL and MariaDB keep their CASTs, which already give a type.
- SQLite: ANALYZE. It never gathers statistics by itself, and without them its planner read a
  package's history through the (status, created_at) index (every completed job of the
  archive); the archiver now refreshes them after large loads (archiver.dialect), and an
  archive with jobs upgraded here starts with them.

Revision ID: 0009
Revises: 0008
Create Date: 2026-11-29
"""
from collections import defaultdict

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import mysql

revision = "0009"
down_revision = "0008"
branch_labels = None
depends_on = None

CHAIN = ["creator_type", "creator_id", "package_id"]
RUNTIMES_DOC = ("Every runtime_in_seconds of the day's finished jobs, comma-separated, in no particular order "
                "(what report runtimes reads for whole days). NULL: none finished.")


def _fill_runtimes() -> None:
    bind = op.get_bind()
    found: dict[tuple, list[int]] = defaultdict(list)
    for account, day, package, runtime in bind.execute(sa.text(
            "SELECT account_id, run_date, package_id, runtime_in_seconds FROM jobs "
            "WHERE status IN ('completed', 'failed', 'stopped') AND runtime_in_seconds IS NOT NULL")):
        found[(account, day, package)].append(runtime)
    rows = bind.execute(sa.text("SELECT id, account_id, day, package_id FROM daily_package_rollup")).all()
    texts = [{"rid": rid, "runtimes": ",".join(map(str, sorted(found[(account, day, package)])))}
             for rid, account, day, package in rows if (account, day, package) in found]
    if texts:
        bind.execute(sa.text("UPDATE daily_package_rollup SET runtimes = :runtimes WHERE id = :rid"), texts)


# SQLite's VIRTUAL generated columns of jobs (name, declared type, expression) and the two
# views that read them there: 0008's SQL with each expression replaced by its column.
GENERATED = [("is_terminal", "INTEGER", "CASE WHEN status IN ('completed', 'failed', 'stopped') THEN 1 ELSE 0 END"),
             ("attempt", "BIGINT", "COALESCE(attempts, 0)"),
             ("ended_or_created_at", "DATETIME", "COALESCE(ended_at, created_at)")]
JOINS = """
FROM jobs j
LEFT JOIN packages p ON p.id = j.package_id
LEFT JOIN clusters c ON c.id = j.cluster_id
LEFT JOIN creators cr ON cr.type = j.creator_type AND cr.id = j.creator_id
"""
JOB_RUNS_0008 = """
SELECT j.id AS job_id, j.account_id, j.package_id, p.name AS package_name,
       j.cluster_id, c.name AS cluster_name, j.status,
       CAST(CASE WHEN j.status IN ('completed', 'failed', 'stopped') THEN 1 ELSE 0 END AS INTEGER) AS is_terminal,
       j.created_at, j.started_at, j.ended_at,
       j.queue_seconds, j.runtime_in_seconds AS run_seconds, j.run_date AS day,
       j.creator_type, j.creator_id, cr.display_name AS creator_name,
       CAST(COALESCE(j.attempts, 0) AS INTEGER) AS attempt, j.master_auto_retry_attempts,
       j.errors, j.html_url""" + JOINS
JOB_FAILURES_0008 = """
SELECT j.id AS job_id, j.account_id, j.package_id, p.name AS package_name, c.name AS cluster_name,
       COALESCE(j.ended_at, j.created_at) AS failed_at, j.run_date AS day,
       CAST(COALESCE(j.attempts, 0) AS INTEGER) AS attempt,
       j.creator_type, cr.display_name AS creator_name, j.errors,
       s.error_summary, s.action_items, j.html_url""" + JOINS + """LEFT JOIN job_log_summaries s ON s.job_id = j.id
WHERE j.status = 'failed'
"""
SQLITE_VIEWS = {
    "job_runs": JOB_RUNS_0008
    .replace("CAST(CASE WHEN j.status IN ('completed', 'failed', 'stopped') THEN 1 ELSE 0 END AS INTEGER)",
             "j.is_terminal")
    .replace("CAST(COALESCE(j.attempts, 0) AS INTEGER)", "j.attempt"),
    "job_failures": JOB_FAILURES_0008
    .replace("COALESCE(j.ended_at, j.created_at) AS failed_at", "j.ended_or_created_at AS failed_at")
    .replace("CAST(COALESCE(j.attempts, 0) AS INTEGER)", "j.attempt"),
}


def _sqlite_typed_views() -> None:
    for name in SQLITE_VIEWS:
        op.execute(f"DROP VIEW {name}")
    op.execute("DROP INDEX ix_jobs_failed_at")
    for column, kind, expression in GENERATED:
        op.execute(f"ALTER TABLE jobs ADD COLUMN {column} {kind} GENERATED ALWAYS AS ({expression}) VIRTUAL")
    op.execute("CREATE INDEX ix_jobs_failed_at ON jobs (ended_or_created_at) WHERE status = 'failed'")
    for name, sql in SQLITE_VIEWS.items():
        op.execute(f"CREATE VIEW {name} AS {sql}")


def _sqlite_computed_views() -> None:
    for name in SQLITE_VIEWS:
        op.execute(f"DROP VIEW {name}")
    op.execute("DROP INDEX ix_jobs_failed_at")
    for column, _, _ in GENERATED:
        op.execute(f"ALTER TABLE jobs DROP COLUMN {column}")
    op.execute("CREATE INDEX ix_jobs_failed_at ON jobs (COALESCE(ended_at, created_at)) WHERE status = 'failed'")
    op.execute(f"CREATE VIEW job_runs AS {JOB_RUNS_0008}")
    op.execute(f"CREATE VIEW job_failures AS {JOB_FAILURES_0008}")


def _has_generated_columns() -> bool:
    """SQLite 3.31 and later (older ones keep 0008's computed columns, declared without a type)."""
    bind = op.get_bind()
    return bind.dialect.name == "sqlite" and bind.dialect.dbapi.sqlite_version_info >= (3, 31)


def _generated_columns_present() -> bool:
    names = {row[1] for row in op.get_bind().execute(sa.text("PRAGMA table_xinfo(jobs)"))}
    return {name for name, _, _ in GENERATED} <= names


def upgrade() -> None:
    if _has_generated_columns():
        _sqlite_typed_views()
    op.add_column("daily_package_rollup", sa.Column(
        "runtimes", sa.Text().with_variant(mysql.LONGTEXT(), "mysql", "mariadb"), comment=RUNTIMES_DOC))
    _fill_runtimes()
    op.create_index("ix_jobs_creator_type_creator_id_package_id_created_at_attempts", "jobs",
                    CHAIN + ["created_at", "attempts"])
    op.create_index("ix_jobs_creator_type_creator_id_package_id_status_created_at", "jobs",
                    CHAIN + ["status", "created_at"])
    op.drop_index("ix_jobs_creator_type_creator_id_package_id_created_at", table_name="jobs")
    op.drop_index("ix_jobs_creator_type_creator_id", table_name="jobs")
    bind = op.get_bind()
    # not on an empty archive: statistics of empty tables mislead SQLite's planner until the
    # archiver refreshes them (store.Archive.grew), which it does once jobs arrive
    if bind.dialect.name == "sqlite" and bind.execute(sa.text("SELECT 1 FROM jobs LIMIT 1")).first():
        op.execute("ANALYZE")


def downgrade() -> None:
    if op.get_bind().dialect.name == "sqlite" and _generated_columns_present():
        _sqlite_computed_views()
    op.drop_column("daily_package_rollup", "runtimes")
    op.create_index("ix_jobs_creator_type_creator_id", "jobs", ["creator_type", "creator_id"])
    op.create_index("ix_jobs_creator_type_creator_id_package_id_created_at", "jobs", CHAIN + ["created_at"])
    op.drop_index("ix_jobs_creator_type_creator_id_package_id_status_created_at", table_name="jobs")
    op.drop_index("ix_jobs_creator_type_creator_id_package_id_created_at_attempts", table_name="jobs")
