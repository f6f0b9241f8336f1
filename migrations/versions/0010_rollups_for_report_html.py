"""What `report html` reads for whole days, so a year of a million jobs is thousands of rows.

- `daily_package_rollup.retries`: jobs of the day with attempts > 0 (job_runs.attempt > 0).
- `daily_package_rollup.run_seconds`: the sum of the finished jobs' runtime_in_seconds.
- `daily_output_rollup`: per account, UTC day, package and output (the output's key as
  docs/anomalies.md gives it: component name, else name, else `output <id>`), the outputs
  written and their records, all of them and the completed jobs' ones.
- `daily_schedule_rollup`: per account, UTC day, schedule and package, the scheduled runs
  (schedule_runs) and how many needed a retry, recovered on one, or failed.
- `jobs.error_signature`: the error text with quoted values, ids and numbers masked
  (archiver.errortext, which every write now applies when it parses a job; computed here for
  the jobs already stored), and `daily_error_rollup`: the failed jobs per account, UTC day,
  package and signature.
- `ix_jobs_creator_type_creator_id_package_id_status_ended_at`: a schedule's or a package's
  newest successes by end time in one descent (the health board of `check` and `report
  html`, which read every success of the history for it).

Every write of jobs recounts them for the days it touched, in its transaction (archiver.store:
refresh_rollup, refresh_schedule_runs); this migration counts the history already stored.

Revision ID: 0010
Revises: 0009
Create Date: 2026-12-06
"""

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import mysql

from archiver.sqltypes import UTCDateTime

revision = "0010"
down_revision = "0009"
branch_labels = None
depends_on = None

TERMINAL = ("completed", "failed", "stopped")
SUCCESS_INDEX = ["creator_type", "creator_id", "package_id", "status", "ended_at"]
LONG_TEXT = sa.Text().with_variant(mysql.LONGTEXT(), "mysql", "mariadb")
PACKAGE_DOCS = {
    "retries": "Jobs that were a retry (jobs.attempts > 0).",
    "run_seconds": "Sum of runtime_in_seconds of finished jobs. NULL: none finished.",
}
OUTPUT_DOCS = {
    "id": "Auto-increment. Primary key.",
    "account_id": "jobs.account_id of the jobs counted.",
    "day": "UTC day the jobs were created (jobs.run_date).",
    "package_id": "Package of the jobs → packages.id. NULL: jobs without a package.",
    "output_key": "The output: its component_name, else its name, else the word output and its id.",
    "jobs": "Outputs with this key of that day's jobs, in any status.",
    "records": "Sum of their records_count.",
    "completed": "Outputs with this key of that day's jobs that are now completed.",
    "completed_records": "Sum of records_count of the completed ones.",
}

jobs = sa.table("jobs", sa.column("id", sa.BigInteger), sa.column("account_id", sa.String),
                sa.column("run_date", sa.Date), sa.column("package_id", sa.BigInteger), sa.column("status", sa.String),
                sa.column("attempts", sa.BigInteger), sa.column("runtime_in_seconds", sa.BigInteger))
outputs = sa.table("job_outputs", sa.column("id", sa.BigInteger), sa.column("job_id", sa.BigInteger),
                   sa.column("name", sa.Text), sa.column("component_name", sa.Text),
                   sa.column("records_count", sa.BigInteger))


def _fill_package_columns() -> None:
    bind = op.get_bind()
    terminal = jobs.c.status.in_(TERMINAL)
    query = (sa.select(jobs.c.account_id, jobs.c.run_date, jobs.c.package_id,
                       sa.func.sum(sa.case((jobs.c.attempts > 0, 1), else_=0)),
                       sa.func.sum(sa.case((terminal, jobs.c.runtime_in_seconds))))
             .group_by(jobs.c.account_id, jobs.c.run_date, jobs.c.package_id))
    found = {(a, d, p): (int(r or 0), None if s is None else int(s)) for a, d, p, r, s in bind.execute(query)}
    rollup = sa.table("daily_package_rollup", sa.column("id", sa.BigInteger), sa.column("account_id", sa.String),
                      sa.column("day", sa.Date), sa.column("package_id", sa.BigInteger))
    rows = bind.execute(sa.select(rollup.c.id, rollup.c.account_id, rollup.c.day, rollup.c.package_id)).all()
    values = [{"rid": rid, "retries": found[(a, d, p)][0], "run_seconds": found[(a, d, p)][1]}
              for rid, a, d, p in rows if (a, d, p) in found]
    if values:
        bind.execute(sa.text("UPDATE daily_package_rollup SET retries = :retries, run_seconds = :run_seconds "
                             "WHERE id = :rid"), values)


def _day_table(name: str, docs: dict[str, str], columns: list, indexes: list[list[str]]) -> None:
    """A rollup table: a surrogate id, the account and the day, then `columns`, each commented
    with its text in `docs`."""
    op.create_table(
        name,
        sa.Column("id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), autoincrement=True,
                  nullable=False, comment=docs["id"]),
        sa.Column("account_id", sa.String(255), comment=docs["account_id"]),
        sa.Column("day", sa.Date(), comment=docs["day"]),
        *columns,
        sa.PrimaryKeyConstraint("id", name=f"pk_{name}"),
    )
    for indexed in indexes:
        op.create_index(f"ix_{name}_{'_'.join(indexed)}", name, indexed)


def _columns(docs: dict[str, str], kind, *names: str, nullable: bool = True) -> list:
    return [sa.Column(name, kind, nullable=nullable, comment=docs[name]) for name in names]


def _output_key():
    return sa.func.coalesce(outputs.c.component_name, outputs.c.name,
                            sa.literal_column("'output '") + sa.cast(outputs.c.id, sa.String))


def _create_output_rollup() -> None:
    _day_table("daily_output_rollup", OUTPUT_DOCS,
               [*_columns(OUTPUT_DOCS, sa.BigInteger(), "package_id"),
                *_columns(OUTPUT_DOCS, LONG_TEXT, "output_key", nullable=False),
                *_columns(OUTPUT_DOCS, sa.BigInteger(), "jobs", "records", "completed", "completed_records",
                          nullable=False)],
               [["day", "package_id"], ["account_id", "day"]])
    completed = jobs.c.status == "completed"
    key = _output_key()
    query = (sa.select(jobs.c.account_id, jobs.c.run_date, jobs.c.package_id, key, sa.func.count(),
                       sa.func.coalesce(sa.func.sum(outputs.c.records_count), 0),
                       sa.func.sum(sa.case((completed, 1), else_=0)),
                       sa.func.coalesce(sa.func.sum(sa.case((completed, outputs.c.records_count))), 0))
             .select_from(outputs.join(jobs, jobs.c.id == outputs.c.job_id))
             .group_by(jobs.c.account_id, jobs.c.run_date, jobs.c.package_id, key))
    target = sa.table("daily_output_rollup", *[sa.column(name) for name in (
        "account_id", "day", "package_id", "output_key", "jobs", "records", "completed", "completed_records")])
    op.execute(target.insert().from_select(list(target.c.keys()), query))


SCHEDULE_DOCS = {
    "id": "Auto-increment. Primary key.",
    "account_id": "schedule_runs.account_id of the runs counted.",
    "day": "UTC day of their scheduled_at.",
    "schedule_id": "→ schedules.id.",
    "package_id": "→ packages.id.",
    "runs": "Scheduled runs (rows of schedule_runs).",
    "retried": "Runs with more than one attempt.",
    "retries": "Attempts after the first, summed over the runs.",
    "recovered": "Runs whose outcome is recovered_on_retry.",
    "failed": "Runs whose outcome is failed.",
}
SCHEDULE_MEASURES = ("runs", "retried", "retries", "recovered", "failed")
# the UTC day of schedule_runs.scheduled_at (PostgreSQL's ::date would take the session's zone)
SCHEDULED_DAY = {"postgresql": "CAST(scheduled_at AT TIME ZONE 'UTC' AS DATE)"}


def _create_schedule_rollup() -> None:
    _day_table("daily_schedule_rollup", SCHEDULE_DOCS,
               [*_columns(SCHEDULE_DOCS, sa.BigInteger(), "schedule_id", "package_id"),
                *_columns(SCHEDULE_DOCS, sa.BigInteger(), *SCHEDULE_MEASURES, nullable=False)],
               [["day"], ["schedule_id", "package_id", "day"]])
    day = SCHEDULED_DAY.get(op.get_bind().dialect.name, "DATE(scheduled_at)")
    op.execute(f"""
INSERT INTO daily_schedule_rollup (account_id, day, schedule_id, package_id, {", ".join(SCHEDULE_MEASURES)})
SELECT account_id, {day}, schedule_id, package_id, COUNT(*),
       SUM(CASE WHEN attempts > 1 THEN 1 ELSE 0 END), SUM(attempts - 1),
       SUM(CASE WHEN outcome = 'recovered_on_retry' THEN 1 ELSE 0 END),
       SUM(CASE WHEN outcome = 'failed' THEN 1 ELSE 0 END)
FROM schedule_runs
GROUP BY account_id, {day}, schedule_id, package_id""")


ERROR_DOCS = {
    "id": "Auto-increment. Primary key.",
    "account_id": "jobs.account_id of the jobs counted.",
    "day": "UTC day the jobs were created (jobs.run_date).",
    "package_id": "Package of the jobs → packages.id. NULL: jobs without a package.",
    "error_signature": "jobs.error_signature of the failed jobs counted. NULL: no error text.",
    "jobs": "Failed jobs of that day with this signature.",
    "first_failed_at": "Earliest COALESCE(ended_at, created_at) among them.",
    "last_failed_at": "Latest COALESCE(ended_at, created_at) among them.",
    "last_job_id": "The highest job id among them (an example).",
}
SIGNATURE_DOC = ("Derived: errors with quoted values, ids and numbers masked (at most 300 characters), "
                 "so failures of one cause group together. NULL: no error text.")


def _fill_signatures() -> None:
    """Every stored job's signature, as the writes compute it (archiver.errortext: the migration
    and the writes must agree, so it is imported, not copied)."""
    from archiver.errortext import signature

    bind = op.get_bind()
    texts = bind.execute(sa.text("SELECT id, errors FROM jobs WHERE errors IS NOT NULL AND errors <> ''")).all()
    values = [{"jid": job_id, "sig": sig} for job_id, errors in texts if (sig := signature(errors)) is not None]
    for start in range(0, len(values), 5000):   # read first: no update while the read is open
        bind.execute(sa.text("UPDATE jobs SET error_signature = :sig WHERE id = :jid"), values[start:start + 5000])


def _create_error_rollup() -> None:
    _day_table("daily_error_rollup", ERROR_DOCS,
               [*_columns(ERROR_DOCS, sa.BigInteger(), "package_id"),
                *_columns(ERROR_DOCS, sa.String(300), "error_signature"),
                *_columns(ERROR_DOCS, sa.BigInteger(), "jobs", nullable=False),
                *_columns(ERROR_DOCS, UTCDateTime(), "first_failed_at", "last_failed_at"),
                *_columns(ERROR_DOCS, sa.BigInteger(), "last_job_id", nullable=False)],
               [["day", "package_id"], ["account_id", "day"]])
    op.execute("""
INSERT INTO daily_error_rollup (account_id, day, package_id, error_signature, jobs, first_failed_at, last_failed_at,
                                last_job_id)
SELECT account_id, run_date, package_id, error_signature, COUNT(*), MIN(COALESCE(ended_at, created_at)),
       MAX(COALESCE(ended_at, created_at)), MAX(id)
FROM jobs WHERE status = 'failed'
GROUP BY account_id, run_date, package_id, error_signature""")


def upgrade() -> None:
    op.add_column("daily_package_rollup", sa.Column("retries", sa.BigInteger(), nullable=False,
                                                    server_default="0", comment=PACKAGE_DOCS["retries"]))
    op.add_column("daily_package_rollup", sa.Column("run_seconds", sa.BigInteger(),
                                                    comment=PACKAGE_DOCS["run_seconds"]))
    _fill_package_columns()
    _create_output_rollup()
    _create_schedule_rollup()
    op.add_column("jobs", sa.Column("error_signature", sa.String(300), comment=SIGNATURE_DOC))
    _fill_signatures()
    _create_error_rollup()
    op.create_index("ix_jobs_creator_type_creator_id_package_id_status_ended_at", "jobs", SUCCESS_INDEX)


def downgrade() -> None:
    op.drop_index("ix_jobs_creator_type_creator_id_package_id_status_ended_at", table_name="jobs")
    op.drop_table("daily_error_rollup")
    op.drop_column("jobs", "error_signature")
    op.drop_table("daily_schedule_rollup")
    op.drop_table("daily_output_rollup")
    op.drop_column("daily_package_rollup", "run_seconds")
    op.drop_column("daily_package_rollup", "retries")
