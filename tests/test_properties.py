"""Property-based tests: mutated payloads never crash the archiver; valid edge values
round-trip exactly on every backend; invalid ones are rejected naming job and field."""

import copy
import itertools
import json
from datetime import datetime

from hypothesis import given, strategies as st
from sqlalchemy import select

from archiver import models
from archiver.errors import InvalidPayload
from archiver.parse import parse_job
from archiver.store import Archive
from tests.conftest import load_payload

BASE = load_payload("job-v2-failed-with-log-summary.json")
INT_FIELDS = ["owner_id", "outputs_count", "package_id", "cluster_id", "runtime_in_seconds", "attempts"]
TEXT_FIELDS = ["errors", "url", "html_url", "log_url", "status"]
TIME_FIELDS = ["created_at", "started_at", "failed_at", "updated_at", "completed_at"]
ids = itertools.count(1_000_000)

edge_ints = st.one_of(st.integers(-(2 ** 63), 2 ** 63 - 1), st.sampled_from([0, -1, 2 ** 31, 2 ** 63 - 1, -(2 ** 63)]),
                      st.integers(2 ** 63, 2 ** 80))
edge_text = st.one_of(st.text(max_size=50), st.just("nul\x00in the middle"), st.just("emoji \U0001F4A5\U0001F680"),
                      st.just("x" * 1_000_000), st.just("'; DROP TABLE jobs; --"))
zones = st.sampled_from(["Z", "+00:00", "+03:00", "-05:30", "+14:00", ""])
moments = st.datetimes(min_value=datetime(1000, 1, 2), max_value=datetime(9999, 12, 30))
edge_times = st.builds(lambda m, z: m.isoformat() + z, moments, zones)
wrong = st.one_of(st.booleans(), st.floats(allow_nan=False, allow_infinity=False), st.lists(st.integers(), max_size=2),
                  st.dictionaries(st.text(max_size=3), st.integers(), max_size=2), st.text(max_size=5))

mutation = st.one_of(
    st.tuples(st.just("delete"), st.sampled_from(INT_FIELDS + TEXT_FIELDS + TIME_FIELDS + ["outputs", "variables",
                                                                                           "creator", "package"]),
              st.none()),
    st.tuples(st.just("set"), st.sampled_from(INT_FIELDS), edge_ints),
    st.tuples(st.just("set"), st.sampled_from(TEXT_FIELDS), edge_text),
    st.tuples(st.just("set"), st.sampled_from(TIME_FIELDS), edge_times),
    st.tuples(st.just("set"), st.just("progress"), st.floats(allow_nan=False, allow_infinity=False)),
    st.tuples(st.just("set"), st.sampled_from(INT_FIELDS + TEXT_FIELDS + TIME_FIELDS + ["outputs", "variables"]), wrong),
    st.tuples(st.just("variable"), edge_text, st.one_of(edge_text, edge_ints, st.none(), st.booleans())),
    st.tuples(st.just("output_records"), st.just("records_count"), edge_ints),
)


def mutate(changes) -> dict:
    """BASE with the changes applied in order: always a payload, whatever the list holds.

    An output_records change needs a first output to change; when an earlier change
    deleted `outputs` or made it something else (a wrong type, an empty list), there
    is none, so that change is skipped and the earlier one stands.
    """
    raw = copy.deepcopy(BASE)
    raw["id"] = next(ids)
    for op, key, value in changes:
        if op == "delete":
            raw.pop(key, None)
        elif op == "set":
            raw[key] = value
        elif op == "variable":
            raw["variables"] = {key[:255] or "v": value}
        elif op == "output_records":
            outputs = raw.get("outputs")
            if isinstance(outputs, list) and outputs and isinstance(outputs[0], dict):
                outputs[0]["records_count"] = value
    return json.loads(json.dumps(raw))  # exactly what an API response would decode to


def test_output_records_after_outputs_is_gone_or_mistyped_is_skipped():
    for earlier in [("delete", "outputs", None), ("set", "outputs", []), ("set", "outputs", [1, 2]),
                    ("set", "outputs", {"a": 1}), ("set", "outputs", "abc"), ("set", "outputs", None)]:
        raw = mutate([earlier, ("output_records", "records_count", 7)])
        if earlier[0] == "delete":
            assert "outputs" not in raw
        else:
            assert raw["outputs"] == earlier[2]
    assert mutate([("output_records", "records_count", 7)])["outputs"][0]["records_count"] == 7


# Examples, deadline and health checks come from the Hypothesis profile (tests/conftest.py):
# derandomized in CI, HYPOTHESIS_PROFILE=thorough for a longer randomized search.
@given(changes=st.lists(mutation, min_size=1, max_size=3))
def test_mutated_payloads_round_trip_or_are_rejected_by_field(db_url, changes):
    raw = mutate(changes)
    try:
        job = parse_job(raw, expected_id=raw["id"])
    except InvalidPayload as err:
        assert err.job_id == raw["id"] and err.field and err.kind
        assert len(str(err)) < 300  # the offending value is never echoed
        return
    archive = Archive.open(db_url)
    try:
        result = archive.write_jobs([job])
        assert result.inserted == [job.id]
        with archive.engine.connect() as conn:
            row = conn.execute(select(models.JobRow.__table__).where(models.JobRow.id == job.id)).one()._asdict()
            outputs = conn.execute(select(models.JobOutputRow.records_count)
                                   .where(models.JobOutputRow.job_id == job.id)).scalars().all()
            variables = dict(conn.execute(select(models.JobVariableRow.name, models.JobVariableRow.value)
                                          .where(models.JobVariableRow.job_id == job.id)).all())
    finally:
        archive.close()
    for column, value in job.columns.items():
        assert row[column] == value, column
    if job.outputs is not None:
        assert outputs == [o.records_count for o in job.outputs]
    if job.variables is not None:
        assert variables == job.variables
    assert row["payload_hash"] == job.payload_hash
