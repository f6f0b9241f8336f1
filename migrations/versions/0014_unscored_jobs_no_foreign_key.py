"""unscored_jobs: no foreign key to jobs.

A long run lists each newly finished job here in its batch's transaction (migration 0013).
On PostgreSQL the foreign key's check ran once for every listed row, a lookup in jobs' primary
key through a trigger: about 0.65 s of a 100,000-job ingest of 16 s, a third of what the
second scoring process cost the run. The archiver never deletes a job, and a listed job that
is gone all the same (deleted by hand) is simply taken off the list by the next run's scoring,
so the key guarded nothing the code needs.

Revision ID: 0014
Revises: 0013
Create Date: 2026-12-07
"""
import sqlalchemy as sa
from alembic import op

revision = "0014"
down_revision = "0013"
branch_labels = None
depends_on = None

FOREIGN_KEY = "fk_unscored_jobs_job_id_jobs"


def upgrade() -> None:
    with op.batch_alter_table("unscored_jobs") as batch:
        batch.drop_constraint(FOREIGN_KEY, type_="foreignkey")


def downgrade() -> None:
    op.execute(sa.text("DELETE FROM unscored_jobs WHERE job_id NOT IN (SELECT id FROM jobs)"))
    with op.batch_alter_table("unscored_jobs") as batch:
        batch.create_foreign_key(FOREIGN_KEY, "jobs", ["job_id"], ["id"], ondelete="CASCADE")
