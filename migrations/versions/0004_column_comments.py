"""Column comments on PostgreSQL and MySQL/MariaDB (the text of docs/schema.md).

SQLite has no column comments; this migration does nothing there.

Revision ID: 0004
Revises: 0003
Create Date: 2026-11-29
"""
import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import mysql, postgresql

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None


# A frozen snapshot: nothing here reads the live models or docs. The text as of this
# revision (archiver.schema_docs then); a later change of the docs needs a migration of its
# own, and `alembic check` (test_models_match_migrations) notices when one is missing.
COLUMN_DOCS = {'jobs': {'id': 'Job id from the API. Primary key.',
          'account_id': 'Account the archiver was configured for (not read from the payload). NULL: loaded '
                        'by ingest with no account set.',
          'status': 'idle, pending, queued, running, completed, failed, pending_stoppage, stopping, stopped. '
                    'Unknown values are kept as they are. Terminal: completed, failed, stopped.',
          'owner_id': 'User who ran the job.',
          'progress': '0.0 to 1.0.',
          'outputs_count': 'Number of output targets of the package.',
          'package_id': 'Package that was run → packages.id.',
          'cluster_id': 'Cluster it ran on → clusters.id.',
          'errors': "Error text from the API. Usually '' or NULL for successful jobs.",
          'url': 'API URL of the job.',
          'runtime_in_seconds': 'How long it has run so far (the final figure once terminal).',
          'created_at': 'When the run was requested.',
          'started_at': 'When it started running. NULL: not started (yet).',
          'failed_at': 'API failure time. Often NULL even for failed jobs, so use ended_at.',
          'updated_at': 'Last change at the API. Decides which snapshot wins.',
          'completed_at': 'Set by the API when a job ends (completed, failed or stopped).',
          'html_url': 'v2: web UI page of the job. NULL: only v1 payloads seen.',
          'log_url': 'v2: API URL of the job log.',
          'attempts': 'v2: attempt number of a scheduled run (0 = first run, 1+ = retries).',
          'master_auto_retry_attempts': "v2: the API's automatic-retry counter for the run.",
          'creator_type': 'v2 creator.type, e.g. Schedule or User. NULL: v1 payload or no creator.',
          'creator_id': 'v2 creator.id → creators (type, id).',
          'first_seen_at': 'When the archiver first stored the job. Never NULL.',
          'last_synced_at': 'When the archiver last stored a changed snapshot. Unchanged or stale snapshots '
                            'leave it as it was. Never NULL.',
          'payload': 'Full JSON of the last accepted snapshot. Never NULL.',
          'payload_hash': "SHA-256 (hex) of the payload's canonical text. Used to detect unchanged "
                          'snapshots.',
          'ended_at': 'Derived: completed_at, else failed_at. NULL: not finished.',
          'queue_seconds': 'Derived: started_at − created_at in whole seconds, never negative. NULL: not '
                           'started.',
          'run_date': 'Derived: UTC calendar day of created_at.'},
 'job_outputs': {'id': 'Output id. Primary key.',
                 'job_id': '→ jobs.id.',
                 'name': 'Output name.',
                 'component_name': 'Destination component in the package (v2 component.name, v1 '
                                   'component_name).',
                 'component_type': 'Component type, e.g. database_destination_component. NULL when not given '
                                   '(v1).',
                 'records_count': 'Records written (can exceed 2^31).',
                 'progress': 'v2: 0.0 to 1.0.',
                 'preview_type': 'v2: format of the data preview, e.g. csv.',
                 'created_at': 'As reported by the API.',
                 'updated_at': 'As reported by the API.',
                 'url': 'API URL of the output.',
                 'preview_url': 'API URL of a preview of the output data.'},
 'job_variables': {'job_id': '→ jobs.id.',
                   'name': 'Variable name.',
                   'value': 'Strings are stored as they are. Other JSON values are stored as JSON text (5, '
                            'true, null).'},
 'job_status_changes': {'id': 'Auto-increment. Primary key.',
                        'job_id': '→ jobs.id.',
                        'from_status': 'Status stored before. NULL: first time the job was seen (not a real '
                                       'transition).',
                        'to_status': 'Status of the new snapshot. NULL: the payload had "status": null.',
                        'observed_at': 'When the archiver wrote it (shared by the whole batch).',
                        'api_updated_at': "The snapshot's updated_at, i.e. when the API says the change "
                                          'happened.',
                        'run_id': '→ sync_runs.id that saw it.'},
 'sync_runs': {'id': 'Auto-increment. Primary key.',
               'account_id': 'Account synced. NULL: ingest with no account.',
               'started_at': 'Start of the run.',
               'finished_at': 'End of the run. NULL: still running, or the process died.',
               'mode': 'ids (sync by id), incremental, refresh_open or ingest (saved payloads).',
               'requested': 'Jobs asked for or received (ids given, jobs listed, open jobs re-fetched, '
                            'records read).',
               'inserted': 'Jobs new to the archive.',
               'updated': 'Jobs whose stored row was replaced.',
               'unchanged': 'Snapshots identical to the stored one.',
               'stale': 'Snapshots older than the stored one (ignored).',
               'not_found': 'Jobs the API answered 404 for.',
               'failed': 'Jobs that could not be archived for any other reason (see sync_errors).',
               'credits_used': 'API credits spent (a 429 answer costs none). 0 for ingest.',
               'api_calls': 'HTTP responses received.',
               'outcome': 'See below.',
               'message': 'Reason for stopped, budget, auth_failed, failed and abandoned. Otherwise NULL.',
               'pid': 'Process id of the run.',
               'hostname': 'Host the run ran on.',
               'archiver_version': 'Version of xplenty-archiver.'},
 'sync_errors': {'id': 'Auto-increment. Primary key.',
                 'run_id': '→ sync_runs.id.',
                 'job_id': 'Job concerned (may not be in jobs). NULL: not tied to one job (auth, an ingest '
                           'line).',
                 'kind': 'See below.',
                 'http_status': 'HTTP status of the API answer. NULL: no HTTP status was involved.',
                 'field': 'For payload errors: the offending field, e.g. outputs[0].records_count, id, '
                          '<body>, <line 7>.',
                 'message': 'What went wrong. Never contains payload values or the API key.',
                 'occurred_at': 'When it was recorded (end of the run).'},
 'sync_state': {'account_id': "Account. '' when none is configured.",
                'scope': "'' for the whole account. A filtered run keeps its own mark, e.g. status=failed, "
                         'package_id=42.',
                'high_water_mark': 'Highest updated_at committed so far. The next --incremental run reads '
                                   'from here.',
                'last_run_id': '→ sync_runs.id that last moved the mark.',
                'updated_at': 'When the mark was last saved.'},
 'packages': {'id': 'Package id. Primary key.',
              'name': 'Package name. NULL: stub.',
              'description': 'Description.',
              'owner_id': 'Owning user.',
              'status': 'Package status from the API, e.g. active.',
              'url': 'API URL.',
              'html_url': 'Web UI URL.',
              'created_at': 'As reported by the API.',
              'updated_at': 'As reported by the API. Newer wins.',
              'last_synced_at': 'When a v2 object last updated the row. NULL: stub.'},
 'clusters': {'id': 'Cluster id. Primary key.',
              'name': 'Cluster name. NULL: stub.',
              'description': 'Description.',
              'status': 'Cluster status from the API, e.g. available.',
              'owner_id': 'Owning user.',
              'plan_id': 'Billing plan.',
              'nodes': 'Number of nodes.',
              'type': 'E.g. production or sandbox.',
              'region': 'E.g. amazon-web-services::eu-west-1.',
              'zone': 'Availability zone.',
              'master_instance_type': 'Instance type of the master node.',
              'slave_instance_type': 'Instance type of the worker nodes.',
              'created_at': 'As reported by the API.',
              'updated_at': 'As reported by the API. Newer wins.',
              'available_since': 'When the cluster became available.',
              'terminated_at': 'When it was terminated. NULL: not terminated (or stub).',
              'url': 'API URL.',
              'html_url': 'Web UI URL.',
              'last_synced_at': 'When a v2 object last updated the row. NULL: stub.'},
 'creators': {'type': 'E.g. Schedule or User.',
              'id': 'Schedule or user id.',
              'display_name': 'Schedule name or user name.',
              'url': 'API URL.',
              'html_url': 'Web UI URL.',
              'last_synced_at': 'When a job payload last updated the row.'},
 'job_log_summaries': {'job_id': '→ jobs.id. Primary key.',
                       'log_id': "The summary's id in the API.",
                       'error_summary': 'Short explanation of the failure.',
                       'action_items': 'Array of strings with suggested fixes. [] when none.',
                       'body': 'Summary text of the log.',
                       'created_at': 'When the API produced the summary.'}}


BIGINT = sa.BigInteger()
TEXT = sa.Text().with_variant(mysql.LONGTEXT(), "mysql", "mariadb")
TIME = sa.DateTime(timezone=True).with_variant(mysql.DATETIME(fsp=6), "mysql", "mariadb")
JSON = sa.JSON().with_variant(postgresql.JSONB(), "postgresql")

# Each column's type, nullability and AUTO_INCREMENT as of this revision (MySQL rewrites
# the whole column definition to change a comment, so it must be given exactly).
COLUMNS = {
    'jobs': {
        'id': (BIGINT, False), 'account_id': (sa.String(255), True), 'status': (sa.String(64), True),
        'owner_id': (BIGINT, True), 'progress': (sa.Double(), True), 'outputs_count': (BIGINT, True),
        'package_id': (BIGINT, True), 'cluster_id': (BIGINT, True), 'errors': (TEXT, True),
        'url': (TEXT, True), 'runtime_in_seconds': (BIGINT, True), 'created_at': (TIME, True),
        'started_at': (TIME, True), 'failed_at': (TIME, True), 'updated_at': (TIME, True),
        'completed_at': (TIME, True), 'html_url': (TEXT, True), 'log_url': (TEXT, True),
        'attempts': (BIGINT, True), 'master_auto_retry_attempts': (BIGINT, True),
        'creator_type': (sa.String(64), True), 'creator_id': (BIGINT, True), 'first_seen_at': (TIME, False),
        'last_synced_at': (TIME, False), 'payload': (JSON, False), 'payload_hash': (sa.String(64), True),
        'ended_at': (TIME, True), 'queue_seconds': (BIGINT, True), 'run_date': (sa.Date(), True),
    },
    'job_outputs': {
        'id': (BIGINT, False), 'job_id': (BIGINT, False), 'name': (TEXT, True),
        'component_name': (TEXT, True), 'component_type': (TEXT, True), 'records_count': (BIGINT, True),
        'progress': (sa.Double(), True), 'preview_type': (TEXT, True), 'created_at': (TIME, True),
        'updated_at': (TIME, True), 'url': (TEXT, True), 'preview_url': (TEXT, True),
    },
    'job_variables': {
        'job_id': (BIGINT, False), 'name': (sa.String(255), False), 'value': (TEXT, True),
    },
    'job_status_changes': {
        'id': (BIGINT, False, True), 'job_id': (BIGINT, False), 'from_status': (sa.String(64), True),
        'to_status': (sa.String(64), True), 'observed_at': (TIME, False), 'api_updated_at': (TIME, True),
        'run_id': (BIGINT, True),
    },
    'sync_runs': {
        'id': (BIGINT, False, True), 'account_id': (sa.String(255), True), 'started_at': (TIME, False),
        'finished_at': (TIME, True), 'mode': (sa.String(32), False), 'requested': (BIGINT, False),
        'inserted': (BIGINT, False), 'updated': (BIGINT, False), 'unchanged': (BIGINT, False),
        'stale': (BIGINT, False), 'not_found': (BIGINT, False), 'failed': (BIGINT, False),
        'credits_used': (BIGINT, False), 'api_calls': (BIGINT, False), 'outcome': (sa.String(32), False),
        'message': (TEXT, True), 'pid': (BIGINT, True), 'hostname': (sa.String(255), True),
        'archiver_version': (sa.String(32), True),
    },
    'sync_errors': {
        'id': (BIGINT, False, True), 'run_id': (BIGINT, False), 'job_id': (BIGINT, True),
        'kind': (sa.String(32), False), 'http_status': (sa.Integer(), True), 'field': (sa.String(255), True),
        'message': (TEXT, False), 'occurred_at': (TIME, False),
    },
    'sync_state': {
        'account_id': (sa.String(255), False), 'scope': (sa.String(255), False),
        'high_water_mark': (TIME, True), 'last_run_id': (BIGINT, True), 'updated_at': (TIME, False),
    },
    'packages': {
        'id': (BIGINT, False), 'name': (TEXT, True), 'description': (TEXT, True), 'owner_id': (BIGINT, True),
        'status': (TEXT, True), 'url': (TEXT, True), 'html_url': (TEXT, True), 'created_at': (TIME, True),
        'updated_at': (TIME, True), 'last_synced_at': (TIME, True),
    },
    'clusters': {
        'id': (BIGINT, False), 'name': (TEXT, True), 'description': (TEXT, True), 'status': (TEXT, True),
        'owner_id': (BIGINT, True), 'plan_id': (BIGINT, True), 'nodes': (BIGINT, True), 'type': (TEXT, True),
        'region': (TEXT, True), 'zone': (TEXT, True), 'master_instance_type': (TEXT, True),
        'slave_instance_type': (TEXT, True), 'created_at': (TIME, True), 'updated_at': (TIME, True),
        'available_since': (TIME, True), 'terminated_at': (TIME, True), 'url': (TEXT, True),
        'html_url': (TEXT, True), 'last_synced_at': (TIME, True),
    },
    'creators': {
        'type': (sa.String(64), False), 'id': (BIGINT, False), 'display_name': (TEXT, True),
        'url': (TEXT, True), 'html_url': (TEXT, True), 'last_synced_at': (TIME, True),
    },
    'job_log_summaries': {
        'job_id': (BIGINT, False), 'log_id': (BIGINT, True), 'error_summary': (TEXT, True),
        'action_items': (JSON, True), 'body': (TEXT, True), 'created_at': (TIME, True),
    },
}


def _set_comments(comments: bool) -> None:
    dialect = op.get_bind().dialect.name
    if dialect == "sqlite":
        return
    for table, docs in COLUMN_DOCS.items():
        for column, text in docs.items():
            column_type, nullable, *auto_increment = COLUMNS[table][column]
            keep = {"existing_autoincrement": True} if auto_increment and dialect in ("mysql", "mariadb") else {}
            new, old = (text, None) if comments else (None, text)
            op.alter_column(table, column, comment=new, existing_comment=old, existing_type=column_type,
                            existing_nullable=nullable, existing_server_default=None, **keep)


def upgrade() -> None:
    _set_comments(True)


def downgrade() -> None:
    _set_comments(False)
