"""unscored_jobs: the newly finished jobs whose anomaly verdicts are not stored yet.

A long run scores its jobs in a second process while it writes the next batch
(archiver.flows.scoring), so a batch's jobs commit before their verdicts do. Each such job is
listed here in its batch's transaction and taken off in the transaction that stores its
verdicts: a run killed in between leaves the list, and the next run scores what it holds.

Comments are frozen here as literals (a later change of the docs needs its own migration).

Revision ID: 0013
Revises: 0012
Create Date: 2026-12-07
"""
import sqlalchemy as sa
from alembic import op

revision = "0013"
down_revision = "0012"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "unscored_jobs",
        sa.Column("job_id", sa.BigInteger(), autoincrement=False, nullable=False,
                  comment="→ jobs.id. Primary key: a newly finished job whose anomaly verdicts are not stored yet."),
        sa.Column("run_id", sa.BigInteger(),
                  comment="→ sync_runs.id of the run that wrote it. NULL: none recorded."),
        sa.ForeignKeyConstraint(["job_id"], ["jobs.id"], ondelete="CASCADE",
                                name="fk_unscored_jobs_job_id_jobs"),
        sa.PrimaryKeyConstraint("job_id", name="pk_unscored_jobs"),
    )


def downgrade() -> None:
    op.drop_table("unscored_jobs")
