"""jobs: one index on (run_date, package_id) in place of the one on run_date.

Every write of jobs recounts the daily rollups of the (account, day, package) groups it
changed, reading the jobs of each day's changed packages (archiver.store._recount_rollups).
With run_date alone indexed, PostgreSQL's planner often intersected that index with the
package_id index, reading tens of thousands of entries of the packages' other days to find a
day's few hundred jobs (3 ms of a 7 ms recount at 100,000 jobs). The composite index finds
them in one descent per day, and anything that read jobs by run_date alone reads it through
its leading column, so the number of indexes a write keeps up stays the same.

Revision ID: 0012
Revises: 0011
Create Date: 2026-12-07
"""
from alembic import op

revision = "0012"
down_revision = "0011"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_index("ix_jobs_run_date_package_id", "jobs", ["run_date", "package_id"])
    op.drop_index("ix_jobs_run_date", table_name="jobs")


def downgrade() -> None:
    op.create_index("ix_jobs_run_date", "jobs", ["run_date"])
    op.drop_index("ix_jobs_run_date_package_id", table_name="jobs")
