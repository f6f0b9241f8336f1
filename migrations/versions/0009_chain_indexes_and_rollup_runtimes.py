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
  ascending, comma-separated; each write keeps it with the counts (archiver.store), and this
  migration fills it from the history. `report runtimes` merges whole days from it (a year of
  a million jobs: 25,000 short texts) instead of sorting every job of the period.
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
RUNTIMES_DOC = ("Every runtime_in_seconds of the day's finished jobs, ascending, comma-separated (what report "
                "runtimes reads for whole days). NULL: none finished.")


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


def upgrade() -> None:
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
    op.drop_column("daily_package_rollup", "runtimes")
    op.create_index("ix_jobs_creator_type_creator_id", "jobs", ["creator_type", "creator_id"])
    op.create_index("ix_jobs_creator_type_creator_id_package_id_created_at", "jobs", CHAIN + ["created_at"])
    op.drop_index("ix_jobs_creator_type_creator_id_package_id_status_created_at", table_name="jobs")
    op.drop_index("ix_jobs_creator_type_creator_id_package_id_created_at_attempts", table_name="jobs")
