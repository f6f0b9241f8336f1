"""Run audit (sync_runs, sync_errors, sync_state), status history and dimension tables.

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-29
"""
import sqlalchemy as sa
from alembic import op

from archiver.sqltypes import BigId, LongText, Payload, UTCDateTime

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    counts = ("requested", "inserted", "updated", "unchanged", "stale", "not_found", "failed",
              "credits_used", "api_calls")
    op.create_table(
        "sync_runs",
        sa.Column("id", BigId, autoincrement=True, nullable=False),
        sa.Column("account_id", sa.String(255)),
        sa.Column("started_at", UTCDateTime(), nullable=False),
        sa.Column("finished_at", UTCDateTime()),
        sa.Column("mode", sa.String(32), nullable=False),
        *[sa.Column(name, sa.BigInteger(), nullable=False) for name in counts],
        sa.Column("outcome", sa.String(32), nullable=False),
        sa.Column("message", LongText),
        sa.Column("pid", sa.BigInteger()),
        sa.Column("hostname", sa.String(255)),
        sa.Column("archiver_version", sa.String(32)),
        sa.PrimaryKeyConstraint("id", name="pk_sync_runs"),
    )
    op.create_index("ix_sync_runs_started_at", "sync_runs", ["started_at"])

    op.create_table(
        "sync_errors",
        sa.Column("id", BigId, autoincrement=True, nullable=False),
        sa.Column("run_id", sa.BigInteger(), nullable=False),
        sa.Column("job_id", sa.BigInteger()),
        sa.Column("kind", sa.String(32), nullable=False),
        sa.Column("http_status", sa.Integer()),
        sa.Column("field", sa.String(255)),
        sa.Column("message", LongText, nullable=False),
        sa.Column("occurred_at", UTCDateTime(), nullable=False),
        sa.ForeignKeyConstraint(["run_id"], ["sync_runs.id"], name="fk_sync_errors_run_id_sync_runs",
                                ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("id", name="pk_sync_errors"),
    )
    op.create_index("ix_sync_errors_run_id", "sync_errors", ["run_id"])
    op.create_index("ix_sync_errors_job_id", "sync_errors", ["job_id"])

    op.create_table(
        "sync_state",
        sa.Column("account_id", sa.String(255), nullable=False),
        sa.Column("scope", sa.String(255), nullable=False),
        sa.Column("high_water_mark", UTCDateTime()),
        sa.Column("last_run_id", sa.BigInteger()),
        sa.Column("updated_at", UTCDateTime(), nullable=False),
        sa.PrimaryKeyConstraint("account_id", "scope", name="pk_sync_state"),
    )

    op.create_table(
        "job_status_changes",
        sa.Column("id", BigId, autoincrement=True, nullable=False),
        sa.Column("job_id", sa.BigInteger(), nullable=False),
        sa.Column("from_status", sa.String(64)),
        sa.Column("to_status", sa.String(64)),
        sa.Column("observed_at", UTCDateTime(), nullable=False),
        sa.Column("api_updated_at", UTCDateTime()),
        sa.Column("run_id", sa.BigInteger()),
        sa.ForeignKeyConstraint(["job_id"], ["jobs.id"], name="fk_job_status_changes_job_id_jobs",
                                ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("id", name="pk_job_status_changes"),
    )
    op.create_index("ix_job_status_changes_job_id_observed_at", "job_status_changes",
                    ["job_id", "observed_at"])

    op.create_table(
        "packages",
        sa.Column("id", sa.BigInteger(), autoincrement=False, nullable=False),
        sa.Column("name", LongText),
        sa.Column("description", LongText),
        sa.Column("owner_id", sa.BigInteger()),
        sa.Column("status", LongText),
        sa.Column("url", LongText),
        sa.Column("html_url", LongText),
        sa.Column("created_at", UTCDateTime()),
        sa.Column("updated_at", UTCDateTime()),
        sa.Column("last_synced_at", UTCDateTime()),
        sa.PrimaryKeyConstraint("id", name="pk_packages"),
    )

    op.create_table(
        "clusters",
        sa.Column("id", sa.BigInteger(), autoincrement=False, nullable=False),
        sa.Column("name", LongText),
        sa.Column("description", LongText),
        sa.Column("status", LongText),
        sa.Column("owner_id", sa.BigInteger()),
        sa.Column("plan_id", sa.BigInteger()),
        sa.Column("nodes", sa.BigInteger()),
        sa.Column("type", LongText),
        sa.Column("region", LongText),
        sa.Column("zone", LongText),
        sa.Column("master_instance_type", LongText),
        sa.Column("slave_instance_type", LongText),
        sa.Column("created_at", UTCDateTime()),
        sa.Column("updated_at", UTCDateTime()),
        sa.Column("available_since", UTCDateTime()),
        sa.Column("terminated_at", UTCDateTime()),
        sa.Column("url", LongText),
        sa.Column("html_url", LongText),
        sa.Column("last_synced_at", UTCDateTime()),
        sa.PrimaryKeyConstraint("id", name="pk_clusters"),
    )

    op.create_table(
        "creators",
        sa.Column("type", sa.String(64), nullable=False),
        sa.Column("id", sa.BigInteger(), autoincrement=False, nullable=False),
        sa.Column("display_name", LongText),
        sa.Column("url", LongText),
        sa.Column("html_url", LongText),
        sa.Column("last_synced_at", UTCDateTime()),
        sa.PrimaryKeyConstraint("type", "id", name="pk_creators"),
    )

    op.create_table(
        "job_log_summaries",
        sa.Column("job_id", sa.BigInteger(), autoincrement=False, nullable=False),
        sa.Column("log_id", sa.BigInteger()),
        sa.Column("error_summary", LongText),
        sa.Column("action_items", Payload),
        sa.Column("body", LongText),
        sa.Column("created_at", UTCDateTime()),
        sa.ForeignKeyConstraint(["job_id"], ["jobs.id"], name="fk_job_log_summaries_job_id_jobs",
                                ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("job_id", name="pk_job_log_summaries"),
    )


def downgrade() -> None:
    # indexes go with their tables (MySQL refuses to drop one a foreign key needs)
    op.drop_table("job_log_summaries")
    op.drop_table("creators")
    op.drop_table("clusters")
    op.drop_table("packages")
    op.drop_table("job_status_changes")
    op.drop_table("sync_state")
    op.drop_table("sync_errors")
    op.drop_table("sync_runs")
