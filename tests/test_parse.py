from datetime import datetime, timezone

import pytest

from archiver.errors import InvalidPayload
from archiver.parse import parse_job

UTC = timezone.utc


def test_v1_seed_payload_becomes_typed_records(payload):
    job = parse_job(payload("job-v1-completed.json"), expected_id=157)
    assert job.id == 157 and job.status == "completed" and job.is_terminal
    assert job.columns["runtime_in_seconds"] == 417
    assert job.columns["progress"] == 1.0
    assert job.columns["completed_at"] == datetime(2012, 12, 30, 14, 29, 29, tzinfo=UTC)
    assert job.variables == {}
    assert [o.id for o in job.outputs] == [521, 522]
    first = job.outputs[0]
    assert (first.job_id, first.name, first.component_name, first.records_count) == \
        (157, "projected_results", "destination1", 10415234)
    assert first.component_type is None and first.progress is None
    assert "html_url" not in job.columns and job.package is None and job.creator is None


def test_v2_payload_nested_objects(payload):
    job = parse_job(payload("job-v2-failed-with-log-summary.json"), expected_id=90412)
    out = job.outputs[0]
    assert (out.component_name, out.component_type, out.records_count, out.preview_type) == \
        ("destination3", "database_destination_component", 3_000_000_000, "csv")
    assert job.columns["html_url"] == "https://xplenty.com/acme/jobs/90412"
    assert (job.columns["attempts"], job.columns["creator_type"], job.columns["creator_id"]) == (2, "Schedule", 12)
    assert job.package.columns["name"] == "NetSuite customers to warehouse"
    assert (job.cluster.columns["nodes"], job.cluster.columns["region"]) == (2, "amazon-web-services::us-east-1")
    assert job.log_summary.action_items == ("Validate the Customer ID.", "Retry the job.")
    assert job.variables == {"InputPath": "'/2026/11/27'", "batch_size": "500"}


def test_offsets_are_stored_as_utc(payload):
    raw = payload("job-v1-completed.json")
    raw["updated_at"] = "2013-04-09T11:19:20+03:00"
    raw["created_at"] = "2013-04-09T08:19:20.250Z"
    job = parse_job(raw)
    assert job.updated_at == datetime(2013, 4, 9, 8, 19, 20, tzinfo=UTC)
    assert job.columns["created_at"] == datetime(2013, 4, 9, 8, 19, 20, 250000, tzinfo=UTC)


def test_absent_keys_are_not_nulls(payload):
    raw = payload("job-v1-completed.json")
    del raw["outputs"], raw["errors"], raw["variables"]
    job = parse_job(raw)
    assert job.outputs is None and job.variables is None
    assert "errors" not in job.columns
    raw["errors"] = None
    assert parse_job(raw).columns["errors"] is None


def test_empty_outputs_list_means_none(payload, db_url):
    """`"outputs": []` says the job has no outputs (stored ones go); no `outputs` key says nothing."""
    from sqlalchemy import select

    from archiver import models
    from archiver.store import Archive

    def stored_outputs(archive):
        with archive.engine.connect() as conn:
            return conn.execute(select(models.JobOutputRow.id).where(models.JobOutputRow.job_id == 304)
                                .order_by(models.JobOutputRow.id)).scalars().all()

    empty = payload("job-v1-failed.json")
    assert empty["outputs"] == [] and parse_job(empty).outputs == ()
    outputs = [dict(o, id=9001 + n) for n, o in enumerate(payload("job-v1-completed.json")["outputs"])]
    with_outputs = dict(empty, updated_at="2013-03-04T08:00:00Z", outputs=outputs)
    no_key = {k: v for k, v in empty.items() if k != "outputs"} | {"updated_at": "2013-03-04T08:01:00Z"}
    archive = Archive.open(db_url)
    try:
        archive.write_jobs([parse_job(with_outputs)])
        assert stored_outputs(archive) == [9001, 9002]
        assert archive.write_jobs([parse_job(no_key)]).updated == [304]
        assert stored_outputs(archive) == [9001, 9002]
        assert archive.write_jobs([parse_job(empty)]).updated == [304]   # updated_at 08:03:01, the newest
        assert stored_outputs(archive) == []
    finally:
        archive.close()


def test_unknown_status_is_kept_with_a_warning(payload, caplog):
    raw = payload("job-v1-completed.json")
    raw["status"] = "archived"
    assert parse_job(raw).status == "archived"
    assert "unknown status" in caplog.text


@pytest.mark.parametrize("field, value, reason", [
    ("runtime_in_seconds", "417", "expected an integer"),
    ("progress", "half", "expected a number"),
    ("status", 3, "expected a string"),
    ("created_at", "yesterday", "ISO 8601"),
    ("outputs", {"id": 1}, "expected an array"),
    ("variables", ["a"], "expected an object"),
    ("owner_id", True, "expected an integer"),
    ("package_id", 2 ** 70, "64-bit"),
])
def test_wrong_types_name_the_job_and_field(payload, field, value, reason):
    raw = payload("job-v1-completed.json")
    raw[field] = value
    with pytest.raises(InvalidPayload) as err:
        parse_job(raw, expected_id=157)
    assert err.value.job_id == 157 and err.value.field == field
    assert reason in str(err.value) and "job 157" in str(err.value)
    assert str(value) not in str(err.value).replace("157", "")


def test_nested_field_errors_name_the_path(payload):
    raw = payload("job-v1-completed.json")
    raw["outputs"][1]["records_count"] = "many"
    with pytest.raises(InvalidPayload) as err:
        parse_job(raw, expected_id=157)
    assert err.value.field == "outputs[1].records_count"


def test_payload_for_another_job_is_rejected(payload):
    with pytest.raises(InvalidPayload) as err:
        parse_job(payload("job-v1-completed.json"), expected_id=158)
    assert err.value.kind == "wrong_id" and err.value.job_id == 158 and err.value.field == "id"


def test_missing_id_is_rejected():
    with pytest.raises(InvalidPayload) as err:
        parse_job({"status": "running"}, expected_id=5)
    assert err.value.field == "id"


def test_same_content_same_hash_whatever_key_order(payload):
    raw = payload("job-v1-completed.json")
    reordered = dict(reversed(list(raw.items())))
    assert parse_job(raw).payload_hash == parse_job(reordered).payload_hash
    raw["progress"] = 0.5
    assert parse_job(raw).payload_hash != parse_job(reordered).payload_hash
