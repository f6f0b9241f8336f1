"""The catalog (schedules and their packages; package and cluster attributes from their own
List endpoints, raw payloads) and the alerts of `archiver check` with their deliveries.

Comments are frozen here as literals (a later change of the docs needs its own migration).

Revision ID: 0006
Revises: 0005
Create Date: 2026-11-29
"""
import sqlalchemy as sa
from alembic import op

from archiver.sqltypes import BigId, LongText, Payload, UTCDateTime

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None

NEW_COLUMNS = {
    "packages": [
        sa.Column("flow_type", sa.String(64),
                  comment='dataflow or workflow. NULL: only seen inside jobs.'),
        sa.Column("variables", Payload,
                  comment='Default variables of the package (JSON object). NULL: only seen inside jobs.'),
        sa.Column("payload", Payload,
                  comment='Full JSON of the last object from List packages. NULL: only seen inside jobs.'),
    ],
    "clusters": [
        sa.Column("terminate_on_idle", sa.Boolean(),
                  comment='Whether the cluster terminates after time_to_idle idle seconds.'),
        sa.Column("time_to_idle", sa.BigInteger(),
                  comment='Idle seconds before termination.'),
        sa.Column("stack", LongText,
                  comment='Software stack of the cluster.'),
        sa.Column("payload", Payload,
                  comment='Full JSON of the last object from List clusters. NULL: only seen inside jobs.'),
    ],
}


def upgrade() -> None:
    for table, columns in NEW_COLUMNS.items():
        for column in columns:
            op.add_column(table, column)

    op.create_table(
        "schedules",
        sa.Column("id", sa.BigInteger(), autoincrement=False, nullable=False,
                  comment='Schedule id. Primary key. Its jobs: jobs.creator_type = Schedule, creator_id = id.'),
        sa.Column("name", LongText,
                  comment='Schedule name.'),
        sa.Column("description", LongText,
                  comment='Description.'),
        sa.Column("owner_id", sa.BigInteger(),
                  comment='Owning user.'),
        sa.Column("status", sa.String(64),
                  comment='enabled or disabled.'),
        sa.Column("start_at", UTCDateTime(),
                  comment='First run time; runs follow at start_at + k × interval.'),
        sa.Column("next_run_at", UTCDateTime(),
                  comment='Next run time as the API last reported it.'),
        sa.Column("interval_amount", sa.BigInteger(),
                  comment='Runs every interval_amount interval_unit.'),
        sa.Column("interval_unit", sa.String(32),
                  comment='minutes, hours, days, weeks or months.'),
        sa.Column("last_run_at", UTCDateTime(),
                  comment='Last run time as the API last reported it.'),
        sa.Column("last_run_status", sa.String(64),
                  comment='Status of the last run as the API last reported it.'),
        sa.Column("execution_count", sa.BigInteger(),
                  comment='Runs so far as the API last reported it.'),
        sa.Column("overlap", sa.Boolean(),
                  comment='Whether a run may start while the previous one still runs.'),
        sa.Column("auto_retry", sa.Boolean(),
                  comment='Whether failed runs are retried.'),
        sa.Column("auto_retry_attempts", sa.BigInteger(),
                  comment='Retries of a failed run (1 to 5).'),
        sa.Column("reuse_cluster_strategy", sa.String(32),
                  comment='none, self or any.'),
        sa.Column("task_nodes", sa.BigInteger(),
                  comment='task.nodes: cluster size the schedule creates.'),
        sa.Column("task_terminate_on_idle", sa.Boolean(),
                  comment='task.terminate_on_idle.'),
        sa.Column("task_time_to_idle", sa.BigInteger(),
                  comment='task.time_to_idle in seconds.'),
        sa.Column("created_at", UTCDateTime(),
                  comment='As reported by the API.'),
        sa.Column("updated_at", UTCDateTime(),
                  comment='As reported by the API. Newer wins.'),
        sa.Column("url", LongText,
                  comment='API URL.'),
        sa.Column("html_url", LongText,
                  comment='Web UI URL.'),
        sa.Column("payload", Payload,
                  comment='Full JSON of the last accepted object. Never NULL once listed.'),
        sa.Column("last_synced_at", UTCDateTime(),
                  comment='When the archiver last stored a changed object.'),
        sa.PrimaryKeyConstraint("id", name="pk_schedules"),
    )
    op.create_table(
        "schedule_packages",
        sa.Column("schedule_id", sa.BigInteger(), autoincrement=False, nullable=False,
                  comment='→ schedules.id.'),
        sa.Column("position", sa.Integer(), autoincrement=False, nullable=False,
                  comment='Place in the schedule task, from 0.'),
        sa.Column("package_id", sa.BigInteger(),
                  comment='→ packages.id.'),
        sa.Column("variables", Payload,
                  comment='Variables the schedule passes to the package (JSON object).'),
        sa.ForeignKeyConstraint(["schedule_id"], ["schedules.id"], ondelete="CASCADE",
                                name="fk_schedule_packages_schedule_id_schedules"),
        sa.PrimaryKeyConstraint("schedule_id", "position", name="pk_schedule_packages"),
    )
    op.create_index("ix_schedule_packages_package_id", "schedule_packages", ["package_id"])
    op.create_table(
        "alerts",
        sa.Column("key", sa.String(255), nullable=False,
                  comment='Stable identity of the alert, e.g. late:schedule:42. Primary key.'),
        sa.Column("kind", sa.String(32), nullable=False,
                  comment='late, stale, failing, stuck, sync_stale or sync_failing.'),
        sa.Column("severity", sa.String(16), nullable=False,
                  comment='warning or critical.'),
        sa.Column("schedule_id", sa.BigInteger(),
                  comment='Schedule concerned. NULL: not about a schedule.'),
        sa.Column("package_id", sa.BigInteger(),
                  comment='Package concerned. NULL: not about a package.'),
        sa.Column("job_id", sa.BigInteger(),
                  comment='Job concerned (stuck). NULL otherwise.'),
        sa.Column("since", UTCDateTime(),
                  comment='When the condition began (e.g. the missed run time).'),
        sa.Column("message", LongText,
                  comment='Why, in words (escape it when shown: it may quote API text).'),
        sa.Column("first_seen_at", UTCDateTime(), nullable=False,
                  comment='First check that saw this episode.'),
        sa.Column("last_seen_at", UTCDateTime(), nullable=False,
                  comment='Last check that saw it.'),
        sa.Column("resolved_at", UTCDateTime(),
                  comment='First check that no longer saw it. NULL: open.'),
        sa.Column("silenced_until", UTCDateTime(),
                  comment='archiver ack: no notification before this time. NULL: not silenced.'),
        sa.Column("notified_at", UTCDateTime(),
                  comment='When its opening was delivered. NULL: not (yet) delivered.'),
        sa.Column("resolved_notified_at", UTCDateTime(),
                  comment='When its resolution was delivered. NULL: not (yet) delivered.'),
        sa.PrimaryKeyConstraint("key", name="pk_alerts"),
    )
    op.create_index("ix_alerts_resolved_at", "alerts", ["resolved_at"])
    op.create_table(
        "alert_deliveries",
        sa.Column("id", BigId, autoincrement=True, nullable=False,
                  comment='Auto-increment. Primary key.'),
        sa.Column("alert_key", sa.String(255), nullable=False,
                  comment='→ alerts.key.'),
        sa.Column("event", sa.String(16), nullable=False,
                  comment='new or resolved.'),
        sa.Column("attempted_at", UTCDateTime(), nullable=False,
                  comment='When the last attempt ended.'),
        sa.Column("attempts", sa.Integer(), nullable=False,
                  comment='HTTP attempts made (retries included).'),
        sa.Column("http_status", sa.Integer(),
                  comment='Status of the last answer. NULL: no answer.'),
        sa.Column("delivered", sa.Boolean(), nullable=False,
                  comment='Whether the receiver accepted it (2xx).'),
        sa.Column("error", LongText,
                  comment='Why it failed, without the URL. NULL: delivered.'),
        sa.PrimaryKeyConstraint("id", name="pk_alert_deliveries"),
    )
    op.create_index("ix_alert_deliveries_alert_key", "alert_deliveries", ["alert_key"])


def downgrade() -> None:
    for table in ("alert_deliveries", "alerts", "schedule_packages", "schedules"):
        op.drop_table(table)
    for table, columns in NEW_COLUMNS.items():
        for column in columns:
            op.drop_column(table, column.name)
