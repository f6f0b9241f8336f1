"""job_anomalies: the verdicts of the anomaly rules (archiver.anomaly) on jobs.

Comments are frozen here as literals (a later change of the docs needs its own migration).

Revision ID: 0007
Revises: 0006
Create Date: 2026-11-29
"""
import sqlalchemy as sa
from alembic import op

from archiver.sqltypes import LongText, UTCDateTime

revision = "0007"
down_revision = "0006"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "job_anomalies",
        sa.Column("job_id", sa.BigInteger(), autoincrement=False, nullable=False,
                  comment='→ jobs.id. Primary key with kind and output_key.'),
        sa.Column("kind", sa.String(32), nullable=False,
                  comment='slow, zero_records, volume_drop or flaky (docs/anomalies.md).'),
        sa.Column("output_key", sa.String(255), nullable=False,
                  comment="The output a zero_records or volume_drop verdict is about ('' for the others)."),
        sa.Column("package_id", sa.BigInteger(),
                  comment='→ packages.id of the job.'),
        sa.Column("severity", sa.String(16), nullable=False,
                  comment='warning or critical (zero_records).'),
        sa.Column("score", sa.Double(),
                  comment='Robust z (slow, volume_drop), records (zero_records), share of retried chains (flaky).'),
        sa.Column("baseline_median", sa.Double(),
                  comment='Typical value: seconds (slow), records (zero_records, volume_drop), share (flaky).'),
        sa.Column("mad", sa.Double(),
                  comment='Median absolute deviation of the log values in the baseline. NULL: not a log baseline.'),
        sa.Column("n", sa.Integer(), nullable=False,
                  comment='Runs (chains, for flaky) in the baseline.'),
        sa.Column("threshold", sa.Double(),
                  comment='The bound the value crossed, in the unit of baseline_median.'),
        sa.Column("message", LongText, nullable=False,
                  comment='Why, in words.'),
        sa.Column("job_created_at", UTCDateTime(),
                  comment='created_at of the job (for time filters without a join).'),
        sa.Column("detected_at", UTCDateTime(), nullable=False,
                  comment='When the archiver scored it.'),
        sa.ForeignKeyConstraint(["job_id"], ["jobs.id"], ondelete="CASCADE",
                                name="fk_job_anomalies_job_id_jobs"),
        sa.PrimaryKeyConstraint("job_id", "kind", "output_key", name="pk_job_anomalies"),
    )
    op.create_index("ix_job_anomalies_job_created_at", "job_anomalies", ["job_created_at"])
    op.create_index("ix_job_anomalies_package_id_detected_at", "job_anomalies", ["package_id", "detected_at"])


def downgrade() -> None:
    op.drop_table("job_anomalies")
