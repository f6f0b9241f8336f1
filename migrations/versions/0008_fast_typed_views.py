"""Fast, typed, documented BI views: a daily rollup table, window-function retry chains,
typed view columns on every database, comments on PostgreSQL's view columns, and the
indexes the README's queries and the reports read through.

- `daily_package_rollup` holds one row per account, UTC day and package; every write of
  jobs refreshes the days it touched (archiver.store), and this migration fills it from
  the archive's history. `daily_package_stats` reads it (thousands of rows, not millions).
- `schedule_runs` holds one row per scheduled run (a first attempt and its retries), found with a
  running MAX over the schedule's jobs (window functions, no correlated subquery); every write
  of jobs recomputes the runs from the touched schedule's last failed first attempt on
  (archiver.store), and this migration fills it. `schedule_attempts` reads it.
- Computed view columns are CAST to the database's integer / floating type (SQLite: the
  CAST gives the column numeric affinity, so a Datasette filter `?is_terminal=1` matches).
- View names and columns are a contract: every column of 0003 is kept, in order.

A frozen snapshot: nothing here reads the live models or docs (the texts are literals).

Revision ID: 0008
Revises: 0007
Create Date: 2026-11-29
"""
import sqlalchemy as sa
from alembic import op

from archiver.sqltypes import UTCDateTime

revision = "0008"
down_revision = "0007"
branch_labels = None
depends_on = None

TERMINAL = "('completed', 'failed', 'stopped')"

# The only dialect difference of the views: the names of the integer and floating types of CAST.
CAST_TYPES = {
    "sqlite": {"int": "INTEGER", "bigint": "INTEGER", "real": "REAL"},
    "postgresql": {"int": "INTEGER", "bigint": "BIGINT", "real": "DOUBLE PRECISION"},
    "mysql": {"int": "SIGNED", "bigint": "SIGNED", "real": "DOUBLE"},
}

JOB_RUNS = f"""
SELECT j.id AS job_id, j.account_id, j.package_id, p.name AS package_name,
       j.cluster_id, c.name AS cluster_name, j.status,
       CAST(CASE WHEN j.status IN {TERMINAL} THEN 1 ELSE 0 END AS {{int}}) AS is_terminal,
       j.created_at, j.started_at, j.ended_at,
       j.queue_seconds, j.runtime_in_seconds AS run_seconds, j.run_date AS day,
       j.creator_type, j.creator_id, cr.display_name AS creator_name,
       CAST(COALESCE(j.attempts, 0) AS {{bigint}}) AS attempt, j.master_auto_retry_attempts,
       j.errors, j.html_url
FROM jobs j
LEFT JOIN packages p ON p.id = j.package_id
LEFT JOIN clusters c ON c.id = j.cluster_id
LEFT JOIN creators cr ON cr.type = j.creator_type AND cr.id = j.creator_id
"""

DAILY_PACKAGE_STATS = """
SELECT r.account_id, r.day, r.package_id, p.name AS package_name,
       r.jobs, r.completed, r.failed, r.stopped, r.failure_rate,
       r.avg_runtime_seconds, r.max_runtime_seconds
FROM daily_package_rollup r
LEFT JOIN packages p ON p.id = r.package_id
"""

# failed_at is the very expression of the partial index ix_jobs_failed_at (PostgreSQL, SQLite).
JOB_FAILURES = """
SELECT j.id AS job_id, j.account_id, j.package_id, p.name AS package_name, c.name AS cluster_name,
       COALESCE(j.ended_at, j.created_at) AS failed_at, j.run_date AS day,
       CAST(COALESCE(j.attempts, 0) AS {bigint}) AS attempt,
       j.creator_type, cr.display_name AS creator_name, j.errors,
       s.error_summary, s.action_items, j.html_url
FROM jobs j
LEFT JOIN packages p ON p.id = j.package_id
LEFT JOIN clusters c ON c.id = j.cluster_id
LEFT JOIN creators cr ON cr.type = j.creator_type AND cr.id = j.creator_id
LEFT JOIN job_log_summaries s ON s.job_id = j.id
WHERE j.status = 'failed'
"""

# A scheduled run is a schedule's first attempt (attempt 0) of a package and the retries that
# follow it. A retry belongs to the latest failed first attempt of the same account, schedule
# and package before it (by created_at, then job id): a running MAX over that ordering. The runs
# are stored in schedule_runs (filled here, kept by every write of jobs: archiver.store), so
# the view reads one indexed row per run.
SCHEDULE_RUNS_SELECT = """
SELECT run_job_id, account_id, creator_id, package_id, job_id, scheduled_at, ended_at, attempts,
       failed_attempts, status,
       CASE WHEN status = 'completed' AND failed_attempts > 0 THEN 'recovered_on_retry' ELSE status END
FROM (
    SELECT a.*,
           ROW_NUMBER() OVER (PARTITION BY run_job_id
                              ORDER BY attempt DESC, created_at DESC, job_id DESC) AS from_last,
           COUNT(*) OVER (PARTITION BY run_job_id) AS attempts,
           SUM(CASE WHEN status = 'failed' THEN 1 ELSE 0 END) OVER (PARTITION BY run_job_id) AS failed_attempts,
           MIN(created_at) OVER (PARTITION BY run_job_id) AS scheduled_at
    FROM (
        SELECT j.id AS job_id, j.account_id, j.creator_id, j.package_id, j.status, j.created_at,
               j.ended_at, COALESCE(j.attempts, 0) AS attempt,
               CASE WHEN COALESCE(j.attempts, 0) = 0 THEN j.id
                    ELSE MAX(CASE WHEN COALESCE(j.attempts, 0) = 0 AND j.status = 'failed' THEN j.id END)
                         OVER (PARTITION BY j.account_id, j.creator_id, j.package_id
                               ORDER BY j.created_at, j.id ROWS UNBOUNDED PRECEDING)
               END AS run_job_id
        FROM jobs j
        WHERE j.creator_type = 'Schedule'
    ) a
    WHERE run_job_id IS NOT NULL
) r
WHERE from_last = 1
"""
SCHEDULE_RUNS_COLUMNS = ("first_job_id, account_id, schedule_id, package_id, last_job_id, scheduled_at, ended_at, "
                         "attempts, failed_attempts, final_status, outcome")

SCHEDULE_ATTEMPTS = """
SELECT r.account_id, r.schedule_id, cr.display_name AS schedule_name, r.package_id,
       p.name AS package_name, r.first_job_id, r.last_job_id, r.scheduled_at, r.ended_at,
       r.attempts, r.failed_attempts, r.final_status, r.outcome
FROM schedule_runs r
LEFT JOIN creators cr ON cr.type = 'Schedule' AND cr.id = r.schedule_id
LEFT JOIN packages p ON p.id = r.package_id
"""

VIEWS = {"job_runs": JOB_RUNS, "daily_package_stats": DAILY_PACKAGE_STATS,
         "job_failures": JOB_FAILURES, "schedule_attempts": SCHEDULE_ATTEMPTS}

# The rollup of one set of jobs (the WHERE is added): the rows of daily_package_rollup.
# 1e0: a floating-point literal on MySQL (its decimal division keeps 4 digits).
ROLLUP_SELECT = f"""
SELECT account_id, run_date, package_id, COUNT(*),
       SUM(CASE WHEN status = 'completed' THEN 1 ELSE 0 END),
       SUM(CASE WHEN status = 'failed' THEN 1 ELSE 0 END),
       SUM(CASE WHEN status = 'stopped' THEN 1 ELSE 0 END),
       SUM(CASE WHEN status = 'failed' THEN 1e0 ELSE 0e0 END)
           / NULLIF(SUM(CASE WHEN status IN {TERMINAL} THEN 1 ELSE 0 END), 0),
       AVG(CASE WHEN status IN {TERMINAL} THEN runtime_in_seconds * 1e0 END),
       MAX(CASE WHEN status IN {TERMINAL} THEN runtime_in_seconds END)
FROM jobs
"""
ROLLUP_COLUMNS = ("account_id, day, package_id, jobs, completed, failed, stopped, failure_rate, "
                  "avg_runtime_seconds, max_runtime_seconds")

ROLLUP_DOCS = {
    "id": "Auto-increment. Primary key.",
    "account_id": "jobs.account_id of the jobs counted.",
    "day": "UTC day the jobs were created (jobs.run_date).",
    "package_id": "Package of the jobs → packages.id. NULL: jobs without a package.",
    "jobs": "All jobs created that day, including unfinished ones.",
    "completed": "Jobs now completed.",
    "failed": "Jobs now failed.",
    "stopped": "Jobs now stopped.",
    "failure_rate": "failed ÷ (completed + failed + stopped). NULL: none finished.",
    "avg_runtime_seconds": "Mean runtime_in_seconds of finished jobs. NULL: none finished.",
    "max_runtime_seconds": "Longest runtime_in_seconds of a finished job. NULL: none finished.",
}

RUNS_DOCS = {
    "first_job_id": "Job of the first attempt (attempt 0). Primary key.",
    "account_id": "jobs.account_id of the run.",
    "schedule_id": "creator_id of the jobs → schedules.id.",
    "package_id": "Package the schedule ran → packages.id.",
    "last_job_id": "Job of the last attempt.",
    "scheduled_at": "Earliest created_at in the run.",
    "ended_at": "ended_at of the last attempt. NULL: still running.",
    "attempts": "Number of jobs in the run. Not the same as jobs.attempts.",
    "failed_attempts": "How many of those jobs failed.",
    "final_status": "Status of the last attempt.",
    "outcome": "recovered_on_retry if completed after at least one failure. Otherwise final_status.",
}

VIEW_DOCS = {
    "job_runs": {
        "job_id": "jobs.id.",
        "account_id": "jobs.account_id.",
        "package_id": "Package that was run → packages.id.",
        "package_name": "packages.name. NULL: stub or no package.",
        "cluster_id": "Cluster it ran on → clusters.id.",
        "cluster_name": "clusters.name. NULL: stub or no cluster.",
        "status": "jobs.status.",
        "is_terminal": "1 when status is completed, failed or stopped. Otherwise 0.",
        "created_at": "When the run was requested.",
        "started_at": "When it started running. NULL: not started (yet).",
        "ended_at": "jobs.ended_at. NULL: not finished.",
        "queue_seconds": "jobs.queue_seconds.",
        "run_seconds": "jobs.runtime_in_seconds.",
        "day": "jobs.run_date (UTC day created).",
        "creator_type": "jobs.creator_type, e.g. Schedule or User.",
        "creator_id": "jobs.creator_id.",
        "creator_name": "creators.display_name of the creator.",
        "attempt": "COALESCE(jobs.attempts, 0): 0 = first run (and every v1 job), 1+ = a retry.",
        "master_auto_retry_attempts": "As in jobs.",
        "errors": "Error text from the API.",
        "html_url": "Web UI page of the job.",
    },
    "daily_package_stats": {
        "account_id": "jobs.account_id of the jobs counted.",
        "day": "UTC day the jobs were created.",
        "package_id": "Package → packages.id. NULL: jobs without a package.",
        "package_name": "packages.name.",
        "jobs": "All jobs created that day, including unfinished ones.",
        "completed": "Jobs now completed.",
        "failed": "Jobs now failed.",
        "stopped": "Jobs now stopped.",
        "failure_rate": "failed ÷ (completed + failed + stopped). NULL: none finished.",
        "avg_runtime_seconds": "Mean run_seconds of finished jobs. NULL: none finished.",
        "max_runtime_seconds": "Longest run_seconds of a finished job. NULL: none finished.",
    },
    "job_failures": {
        "job_id": "jobs.id of a failed job.",
        "account_id": "jobs.account_id.",
        "package_id": "Package that was run → packages.id.",
        "package_name": "packages.name.",
        "cluster_name": "clusters.name.",
        "failed_at": "COALESCE(ended_at, created_at). Not the same value as jobs.failed_at.",
        "day": "UTC day created.",
        "attempt": "0 = first run, 1+ = a retry.",
        "creator_type": "Who created the job: Schedule or User.",
        "creator_name": "creators.display_name of the creator.",
        "errors": "API error text.",
        "error_summary": "job_log_summaries.error_summary. NULL: no summary stored (sync --with-log-summary).",
        "action_items": "job_log_summaries.action_items (JSON array). NULL: no summary stored.",
        "html_url": "Web UI page of the job.",
    },
    "schedule_attempts": {
        "account_id": "jobs.account_id of the run.",
        "schedule_id": "creator_id of the jobs → schedules.id.",
        "schedule_name": "creators.display_name of the schedule.",
        "package_id": "Package the schedule ran → packages.id.",
        "package_name": "packages.name.",
        "first_job_id": "Job of the first attempt (attempt 0).",
        "last_job_id": "Job of the last attempt.",
        "scheduled_at": "Earliest created_at in the run.",
        "ended_at": "ended_at of the last attempt. NULL: still running.",
        "attempts": "Number of jobs in the run. Not the same as jobs.attempts.",
        "failed_attempts": "How many of those jobs failed.",
        "final_status": "Status of the last attempt.",
        "outcome": "recovered_on_retry if completed after at least one failure. Otherwise final_status.",
    },
}

OLD_VIEWS_0003 = {
    "job_runs": f"""
SELECT j.id AS job_id, j.account_id, j.package_id, p.name AS package_name,
       j.cluster_id, c.name AS cluster_name, j.status,
       CASE WHEN j.status IN {TERMINAL} THEN 1 ELSE 0 END AS is_terminal,
       j.created_at, j.started_at, j.ended_at,
       j.queue_seconds, j.runtime_in_seconds AS run_seconds, j.run_date AS day,
       j.creator_type, j.creator_id, cr.display_name AS creator_name,
       COALESCE(j.attempts, 0) AS attempt, j.master_auto_retry_attempts,
       j.errors, j.html_url
FROM jobs j
LEFT JOIN packages p ON p.id = j.package_id
LEFT JOIN clusters c ON c.id = j.cluster_id
LEFT JOIN creators cr ON cr.type = j.creator_type AND cr.id = j.creator_id
""",
    "daily_package_stats": """
SELECT account_id, day, package_id, MAX(package_name) AS package_name,
       COUNT(*) AS jobs,
       SUM(CASE WHEN status = 'completed' THEN 1 ELSE 0 END) AS completed,
       SUM(CASE WHEN status = 'failed' THEN 1 ELSE 0 END) AS failed,
       SUM(CASE WHEN status = 'stopped' THEN 1 ELSE 0 END) AS stopped,
       SUM(CASE WHEN status = 'failed' THEN 1e0 ELSE 0e0 END)
           / NULLIF(SUM(is_terminal), 0) AS failure_rate,
       AVG(CASE WHEN is_terminal = 1 THEN run_seconds * 1e0 END) AS avg_runtime_seconds,
       MAX(CASE WHEN is_terminal = 1 THEN run_seconds END) AS max_runtime_seconds
FROM job_runs
GROUP BY account_id, day, package_id
""",
    "job_failures": """
SELECT r.job_id, r.account_id, r.package_id, r.package_name, r.cluster_name,
       COALESCE(r.ended_at, r.created_at) AS failed_at, r.day, r.attempt,
       r.creator_type, r.creator_name, r.errors,
       s.error_summary, s.action_items, r.html_url
FROM job_runs r
LEFT JOIN job_log_summaries s ON s.job_id = r.job_id
WHERE r.status = 'failed'
""",
    "schedule_attempts": """
SELECT account_id, creator_id AS schedule_id, creator_name AS schedule_name, package_id,
       package_name, run_job_id AS first_job_id, job_id AS last_job_id, scheduled_at, ended_at,
       attempts, failed_attempts, status AS final_status,
       CASE WHEN status = 'completed' AND failed_attempts > 0 THEN 'recovered_on_retry'
            ELSE status END AS outcome
FROM (
    SELECT n.*,
           ROW_NUMBER() OVER (PARTITION BY run_job_id
                              ORDER BY attempt DESC, created_at DESC, job_id DESC) AS from_last,
           COUNT(*) OVER (PARTITION BY run_job_id) AS attempts,
           SUM(CASE WHEN status = 'failed' THEN 1 ELSE 0 END)
               OVER (PARTITION BY run_job_id) AS failed_attempts,
           MIN(created_at) OVER (PARTITION BY run_job_id) AS scheduled_at
    FROM (
        SELECT r.*,
               CASE WHEN r.attempt = 0 THEN r.job_id ELSE (
                   SELECT MAX(f.job_id) FROM job_runs f
                   WHERE f.creator_type = 'Schedule' AND f.creator_id = r.creator_id
                     AND f.package_id = r.package_id AND f.attempt = 0 AND f.status = 'failed'
                     AND f.created_at <= r.created_at AND f.job_id < r.job_id
                     AND (f.account_id = r.account_id OR f.account_id IS NULL AND r.account_id IS NULL))
               END AS run_job_id
        FROM job_runs r
        WHERE r.creator_type = 'Schedule'
    ) n
    WHERE run_job_id IS NOT NULL
) ranked
WHERE from_last = 1
""",
}


def _dialect() -> str:
    name = op.get_bind().dialect.name
    return "mysql" if name in ("mysql", "mariadb") else name


def _quote(text: str) -> str:
    return "'" + text.replace("'", "''") + "'"


def _drop_views() -> None:
    for name in reversed(list(VIEWS)):
        op.execute(f"DROP VIEW IF EXISTS {name}")


def _create_rollup() -> None:
    op.create_table(
        "daily_package_rollup",
        sa.Column("id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), autoincrement=True,
                  nullable=False, comment=ROLLUP_DOCS["id"]),
        sa.Column("account_id", sa.String(255), comment=ROLLUP_DOCS["account_id"]),
        sa.Column("day", sa.Date(), comment=ROLLUP_DOCS["day"]),
        sa.Column("package_id", sa.BigInteger(), comment=ROLLUP_DOCS["package_id"]),
        *[sa.Column(name, sa.BigInteger(), nullable=False, comment=ROLLUP_DOCS[name])
          for name in ("jobs", "completed", "failed", "stopped")],
        sa.Column("failure_rate", sa.Double(), comment=ROLLUP_DOCS["failure_rate"]),
        sa.Column("avg_runtime_seconds", sa.Double(), comment=ROLLUP_DOCS["avg_runtime_seconds"]),
        sa.Column("max_runtime_seconds", sa.BigInteger(), comment=ROLLUP_DOCS["max_runtime_seconds"]),
        sa.PrimaryKeyConstraint("id", name="pk_daily_package_rollup"),
    )
    op.create_index("ix_daily_package_rollup_day_package_id", "daily_package_rollup", ["day", "package_id"])
    op.create_index("ix_daily_package_rollup_account_id_day", "daily_package_rollup", ["account_id", "day"])
    op.execute(f"INSERT INTO daily_package_rollup ({ROLLUP_COLUMNS}) {ROLLUP_SELECT} "
               "GROUP BY account_id, run_date, package_id")


def _create_schedule_runs() -> None:
    op.create_table(
        "schedule_runs",
        sa.Column("first_job_id", sa.BigInteger(), autoincrement=False, nullable=False,
                  comment=RUNS_DOCS["first_job_id"]),
        sa.Column("account_id", sa.String(255), comment=RUNS_DOCS["account_id"]),
        sa.Column("schedule_id", sa.BigInteger(), comment=RUNS_DOCS["schedule_id"]),
        sa.Column("package_id", sa.BigInteger(), comment=RUNS_DOCS["package_id"]),
        sa.Column("last_job_id", sa.BigInteger(), nullable=False, comment=RUNS_DOCS["last_job_id"]),
        sa.Column("scheduled_at", UTCDateTime(), comment=RUNS_DOCS["scheduled_at"]),
        sa.Column("ended_at", UTCDateTime(), comment=RUNS_DOCS["ended_at"]),
        sa.Column("attempts", sa.BigInteger(), nullable=False, comment=RUNS_DOCS["attempts"]),
        sa.Column("failed_attempts", sa.BigInteger(), nullable=False, comment=RUNS_DOCS["failed_attempts"]),
        sa.Column("final_status", sa.String(64), comment=RUNS_DOCS["final_status"]),
        sa.Column("outcome", sa.String(64), comment=RUNS_DOCS["outcome"]),
        sa.PrimaryKeyConstraint("first_job_id", name="pk_schedule_runs"),
    )
    op.create_index("ix_schedule_runs_schedule_id_package_id_scheduled_at", "schedule_runs",
                    ["schedule_id", "package_id", "scheduled_at"])
    op.create_index("ix_schedule_runs_scheduled_at", "schedule_runs", ["scheduled_at"])
    op.create_index("ix_schedule_runs_outcome_scheduled_at", "schedule_runs", ["outcome", "scheduled_at"])
    op.execute(f"INSERT INTO schedule_runs ({SCHEDULE_RUNS_COLUMNS}) {SCHEDULE_RUNS_SELECT}")


def _create_indexes() -> None:
    op.create_index("ix_jobs_package_id_created_at", "jobs", ["package_id", "created_at"])
    op.create_index("ix_jobs_runtime_in_seconds", "jobs", ["runtime_in_seconds"])
    op.create_index("ix_jobs_creator_type_creator_id_package_id_created_at", "jobs",
                    ["creator_type", "creator_id", "package_id", "created_at"])
    op.create_index("ix_jobs_status_created_at", "jobs", ["status", "created_at"])
    if _dialect() != "mysql":   # MySQL/MariaDB have no partial index on an expression
        op.execute("CREATE INDEX ix_jobs_failed_at ON jobs (COALESCE(ended_at, created_at)) "
                   "WHERE status = 'failed'")


def _drop_indexes() -> None:
    if _dialect() != "mysql":
        op.execute("DROP INDEX ix_jobs_failed_at")
    op.drop_index("ix_jobs_status_created_at", table_name="jobs")
    op.drop_index("ix_jobs_creator_type_creator_id_package_id_created_at", table_name="jobs")
    op.drop_index("ix_jobs_runtime_in_seconds", table_name="jobs")
    op.drop_index("ix_jobs_package_id_created_at", table_name="jobs")


def _comment_views() -> None:
    """PostgreSQL keeps comments on view columns; SQLite has none and MySQL/MariaDB cannot set
    them on a view (docs/schema.md says so)."""
    if _dialect() != "postgresql":
        return
    for view, columns in VIEW_DOCS.items():
        for column, doc in columns.items():
            op.execute(f"COMMENT ON COLUMN {view}.{column} IS {_quote(doc)}")


def upgrade() -> None:
    _drop_views()
    _create_indexes()
    _create_rollup()
    _create_schedule_runs()
    types = CAST_TYPES[_dialect()]
    for name, sql in VIEWS.items():
        op.execute(f"CREATE VIEW {name} AS {sql.format(**types)}")
    _comment_views()


def downgrade() -> None:
    _drop_views()
    op.drop_table("schedule_runs")
    op.drop_table("daily_package_rollup")
    _drop_indexes()
    for name, sql in OLD_VIEWS_0003.items():
        op.execute(f"CREATE VIEW {name} AS {sql}")
