"""Derived job columns (ended_at, queue_seconds, run_date) and the BI views.

The archiver computes the derived columns when it writes a job, so each view is
one portable SQL text, the same on SQLite, PostgreSQL and MySQL/MariaDB.

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-29
"""
import sqlalchemy as sa
from alembic import op

from archiver.sqltypes import UTCDateTime

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None

TERMINAL = "('completed', 'failed', 'stopped')"
# 1e0 is a floating-point literal everywhere: MySQL's decimal division keeps only 4 digits.

JOB_RUNS = f"""
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
"""

DAILY_PACKAGE_STATS = """
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
"""

JOB_FAILURES = """
SELECT r.job_id, r.account_id, r.package_id, r.package_name, r.cluster_name,
       COALESCE(r.ended_at, r.created_at) AS failed_at, r.day, r.attempt,
       r.creator_type, r.creator_name, r.errors,
       s.error_summary, s.action_items, r.html_url
FROM job_runs r
LEFT JOIN job_log_summaries s ON s.job_id = r.job_id
WHERE r.status = 'failed'
"""

# A scheduled run is a schedule's first attempt (attempt 0) of a package and the retries
# that follow it. A retry belongs to the latest failed first attempt of the same schedule
# and package created before it (retries are only queued after a failure).
SCHEDULE_ATTEMPTS = """
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
"""

VIEWS = {"job_runs": JOB_RUNS, "daily_package_stats": DAILY_PACKAGE_STATS,
         "job_failures": JOB_FAILURES, "schedule_attempts": SCHEDULE_ATTEMPTS}


def upgrade() -> None:
    with op.batch_alter_table("jobs") as batch:
        batch.add_column(sa.Column("ended_at", UTCDateTime()))
        batch.add_column(sa.Column("queue_seconds", sa.BigInteger()))
        batch.add_column(sa.Column("run_date", sa.Date()))
    op.create_index("ix_jobs_run_date", "jobs", ["run_date"])
    op.create_index("ix_jobs_creator_type_creator_id", "jobs", ["creator_type", "creator_id"])
    for name, sql in VIEWS.items():
        op.execute(f"CREATE VIEW {name} AS {sql}")


def downgrade() -> None:
    for name in reversed(list(VIEWS)):
        op.execute(f"DROP VIEW {name}")
    op.drop_index("ix_jobs_creator_type_creator_id", table_name="jobs")
    op.drop_index("ix_jobs_run_date", table_name="jobs")
    with op.batch_alter_table("jobs") as batch:
        batch.drop_column("run_date")
        batch.drop_column("queue_seconds")
        batch.drop_column("ended_at")
