"""Core tables: jobs, job_outputs, job_variables.

Revision ID: 0001
Revises:
Create Date: 2026-11-29
"""
import sqlalchemy as sa
from alembic import op

from archiver.sqltypes import LongText, Payload, UTCDateTime

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "jobs",
        sa.Column("id", sa.BigInteger(), autoincrement=False, nullable=False),
        sa.Column("account_id", sa.String(255)),
        sa.Column("status", sa.String(64)),
        sa.Column("owner_id", sa.BigInteger()),
        sa.Column("progress", sa.Double()),
        sa.Column("outputs_count", sa.BigInteger()),
        sa.Column("package_id", sa.BigInteger()),
        sa.Column("cluster_id", sa.BigInteger()),
        sa.Column("errors", LongText),
        sa.Column("url", LongText),
        sa.Column("runtime_in_seconds", sa.BigInteger()),
        sa.Column("created_at", UTCDateTime()),
        sa.Column("started_at", UTCDateTime()),
        sa.Column("failed_at", UTCDateTime()),
        sa.Column("updated_at", UTCDateTime()),
        sa.Column("completed_at", UTCDateTime()),
        sa.Column("html_url", LongText),
        sa.Column("log_url", LongText),
        sa.Column("attempts", sa.BigInteger()),
        sa.Column("master_auto_retry_attempts", sa.BigInteger()),
        sa.Column("creator_type", sa.String(64)),
        sa.Column("creator_id", sa.BigInteger()),
        sa.Column("first_seen_at", UTCDateTime(), nullable=False),
        sa.Column("last_synced_at", UTCDateTime(), nullable=False),
        sa.Column("payload", Payload, nullable=False),
        sa.Column("payload_hash", sa.String(64)),
        sa.PrimaryKeyConstraint("id", name="pk_jobs"),
    )
    for column in ("status", "package_id", "cluster_id", "created_at", "updated_at"):
        op.create_index(f"ix_jobs_{column}", "jobs", [column])

    op.create_table(
        "job_outputs",
        sa.Column("id", sa.BigInteger(), autoincrement=False, nullable=False),
        sa.Column("job_id", sa.BigInteger(), nullable=False),
        sa.Column("name", LongText),
        sa.Column("component_name", LongText),
        sa.Column("component_type", LongText),
        sa.Column("records_count", sa.BigInteger()),
        sa.Column("progress", sa.Double()),
        sa.Column("preview_type", LongText),
        sa.Column("created_at", UTCDateTime()),
        sa.Column("updated_at", UTCDateTime()),
        sa.Column("url", LongText),
        sa.Column("preview_url", LongText),
        sa.ForeignKeyConstraint(["job_id"], ["jobs.id"], name="fk_job_outputs_job_id_jobs",
                                ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("id", name="pk_job_outputs"),
    )
    op.create_index("ix_job_outputs_job_id", "job_outputs", ["job_id"])

    op.create_table(
        "job_variables",
        sa.Column("job_id", sa.BigInteger(), nullable=False),
        sa.Column("name", sa.String(255), nullable=False),
        sa.Column("value", LongText),
        sa.ForeignKeyConstraint(["job_id"], ["jobs.id"], name="fk_job_variables_job_id_jobs",
                                ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("job_id", "name", name="pk_job_variables"),
    )


def downgrade() -> None:
    # indexes go with their tables (MySQL refuses to drop one a foreign key needs)
    op.drop_table("job_variables")
    op.drop_table("job_outputs")
    op.drop_table("jobs")
