"""Indexes that keep the schedule_runs upkeep of each write bounded by what it wrote.

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
- SQLite: ANALYZE. It never gathers statistics by itself, and without them its planner read a
  package's history through the (status, created_at) index (every completed job of the
  archive); the archiver now refreshes them after large loads (archiver.dialect), and an
  archive upgraded here starts with them.

Revision ID: 0009
Revises: 0008
Create Date: 2026-11-29
"""
from alembic import op

revision = "0009"
down_revision = "0008"
branch_labels = None
depends_on = None

CHAIN = ["creator_type", "creator_id", "package_id"]


def upgrade() -> None:
    op.create_index("ix_jobs_creator_type_creator_id_package_id_created_at_attempts", "jobs",
                    CHAIN + ["created_at", "attempts"])
    op.create_index("ix_jobs_creator_type_creator_id_package_id_status_created_at", "jobs",
                    CHAIN + ["status", "created_at"])
    op.drop_index("ix_jobs_creator_type_creator_id_package_id_created_at", table_name="jobs")
    op.drop_index("ix_jobs_creator_type_creator_id", table_name="jobs")
    if op.get_bind().dialect.name == "sqlite":
        op.execute("ANALYZE")


def downgrade() -> None:
    op.create_index("ix_jobs_creator_type_creator_id", "jobs", ["creator_type", "creator_id"])
    op.create_index("ix_jobs_creator_type_creator_id_package_id_created_at", "jobs", CHAIN + ["created_at"])
    op.drop_index("ix_jobs_creator_type_creator_id_package_id_status_created_at", table_name="jobs")
    op.drop_index("ix_jobs_creator_type_creator_id_package_id_created_at_attempts", table_name="jobs")
