"""What every column means: the text BI users read in docs/schema.md, and the column comments
on PostgreSQL and MySQL/MariaDB (SQLite has no comments).

The `jobs` columns that hold an API field take their text from archiver.fields; the
rest is here. A test checks that docs/schema.md and the comments of a database
migrated to head say the same thing; a change here needs a migration (see
docs/architecture.md).
"""

from archiver.fields import JOB_FIELDS

COLUMN_DOCS: dict[str, dict[str, str]] = {'jobs': {'id': 'Job id from the API. Primary key.',
          'account_id': 'Account the archiver was configured for (not read from the payload). NULL: loaded '
                        'by ingest with no account set.',
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

COLUMN_DOCS["jobs"].update({field.name: field.doc for field in JOB_FIELDS})
