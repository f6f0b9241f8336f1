"""One declaration of the job's fields: every parsed field has a column, every column a source."""

import dataclasses

import pytest
from sqlalchemy import BigInteger, Double, String, Text

from archiver import models, parse, records
from archiver.fields import INT, JOB_FIELDS, KNOWN_STATUSES, NUMBER, STATUS, TEXT, TIME, Field
from archiver.parse import parse_job
from archiver.sandbox.history import STATUSES as SANDBOX_STATUSES
from archiver.sqltypes import UTCDateTime
from tests.conftest import load_payload

JOBS = models.JobRow.__table__
# Columns the archiver fills itself, not from a top-level scalar of the payload.
ARCHIVER_COLUMNS = {"id", "account_id", "first_seen_at", "last_synced_at", "payload", "payload_hash"}
# Top-level keys of a job payload that are not scalar fields: stored in tables of their own.
NESTED_KEYS = {"id", "outputs", "variables", "package", "cluster", "creator", "log_summary"}
SAMPLES = ["job-v1-completed.json", "job-v1-failed.json", "job-v2-failed-with-log-summary.json"]
KIND_TYPES = {INT: BigInteger, NUMBER: Double, TEXT: Text, TIME: UTCDateTime, STATUS: String}


def payload_with_every_field() -> dict:
    raw = load_payload("job-v2-failed-with-log-summary.json")
    example = {INT: 7, NUMBER: 0.5, TEXT: "x", TIME: "2026-11-01T10:00:00Z", STATUS: "running"}
    return raw | {f.name: example[f.kind] for f in JOB_FIELDS}


def test_every_parsed_column_is_a_column_of_jobs():
    job = parse_job(payload_with_every_field())
    assert set(job.columns) - set(JOBS.c.keys()) == set()


def test_every_column_of_jobs_is_filled_by_the_parser_or_the_archiver():
    job = parse_job(payload_with_every_field())
    assert set(JOBS.c.keys()) - set(job.columns) == ARCHIVER_COLUMNS


@pytest.mark.parametrize("field", JOB_FIELDS, ids=lambda f: f.name)
def test_each_field_has_a_column_of_its_kind(field):
    column = JOBS.c[field.name]
    assert type(column.type) is KIND_TYPES[field.kind] and column.nullable
    assert column.comment == field.doc and column.index == field.indexed


@pytest.mark.parametrize("name", SAMPLES)
def test_every_top_level_key_of_the_samples_is_declared(name):
    """A key the API sends that is neither a declared field nor a nested object would be kept
    only inside `payload`: declare it in archiver.fields (and give it a column)."""
    declared = {f.name for f in JOB_FIELDS} | NESTED_KEYS
    assert set(load_payload(name)) - declared == set()


def test_a_new_field_is_parsed_and_given_a_column_from_its_declaration(monkeypatch):
    """What docs/architecture.md promises: one line in JOB_FIELDS reaches parser and table."""
    from archiver import parse

    extra = Field("queue_name", TEXT, "Where the job queued.")
    monkeypatch.setattr(parse, "JOB_FIELDS", JOB_FIELDS + (extra,))
    raw = load_payload("job-v2-failed-with-log-summary.json") | {"queue_name": "etl"}
    assert parse.parse_job(raw).columns["queue_name"] == "etl"
    assert type(models.api_field_columns_for((extra,))["queue_name"].column("queue_name").type) is Text


@pytest.mark.parametrize("record, table", [
    (records.OutputRecord, models.JobOutputRow.__table__),
    (records.CreatorRecord, models.CreatorRow.__table__),
])
def test_each_record_field_has_a_column_and_each_column_a_field(record, table):
    fields = {f.name for f in dataclasses.fields(record)}
    assert fields ^ set(table.c.keys()) <= {"last_synced_at"}


@pytest.mark.parametrize("columns, table", [
    (parse.LISTED_PACKAGE_COLUMNS, models.PackageRow.__table__),
    (parse.LISTED_CLUSTER_COLUMNS, models.ClusterRow.__table__),
    ({**parse.SCHEDULE_COLUMNS, **dict(parse.SCHEDULE_TASK_COLUMNS.values())}, models.ScheduleRow.__table__),
])
def test_each_catalog_column_is_read_from_the_list_object_and_each_read_has_a_column(columns, table):
    assert set(columns) | {"id", "payload", "last_synced_at"} == set(table.c.keys())


@pytest.mark.parametrize("nested, listed, list_only", [
    (parse.NESTED_PACKAGE_COLUMNS, parse.LISTED_PACKAGE_COLUMNS, {"flow_type", "variables"}),
    (parse.NESTED_CLUSTER_COLUMNS, parse.LISTED_CLUSTER_COLUMNS, {"terminate_on_idle", "time_to_idle", "stack"}),
])
def test_an_object_nested_in_a_job_never_fills_the_list_only_columns(nested, listed, list_only):
    assert set(nested) == set(listed) - list_only


def test_a_schedule_package_record_is_a_schedule_packages_row():
    fields = {f.name for f in dataclasses.fields(records.SchedulePackageRecord)}
    assert fields | {"schedule_id"} == set(models.SchedulePackageRow.__table__.c.keys())


def test_the_sandbox_serves_exactly_the_known_statuses():
    assert set(SANDBOX_STATUSES) == KNOWN_STATUSES
