"""The fast JSON path (orjson) gives exactly what the reference (the standard library's json)
gives: the same decoded values, the same canonical text and so the same payload hash, or it
steps aside. An archive whose hashes were made by the reference never sees its jobs as changed."""

from __future__ import annotations

import io
import json
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from archiver import jsonio, parse
from archiver.errors import InvalidPayload
from archiver.config import Settings
from archiver.flows.ingest import ingest
from archiver.flows.runs import SyncOptions
from archiver.parse import fingerprint, parse_job
from archiver.payloads import read_payloads
from tests.conftest import PAYLOADS

pytestmark = pytest.mark.skipif(jsonio.orjson is None, reason="orjson is not installed")

SAMPLES = sorted(PAYLOADS.glob("*.json")) + sorted((Path(__file__).resolve().parents[2] / "shared" / "payloads")
                                                  .glob("*.json"))


def reference_canonical(value) -> str:
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False)


def reference_decode(text: str):
    return jsonio.STRICT_DECODER.decode(text)


@pytest.fixture
def reference_only(monkeypatch):
    monkeypatch.setattr(jsonio, "orjson", None)


@pytest.mark.parametrize("path", SAMPLES, ids=lambda p: f"{p.parent.parent.name}/{p.name}")
def test_every_sample_payload_decodes_and_hashes_as_the_reference_does(path):
    text = path.read_text(encoding="utf-8")
    raw = jsonio.strict_json(text)
    assert raw == reference_decode(text)
    assert jsonio.canonical_json(raw) == reference_canonical(raw)
    assert jsonio.canonical_bytes(raw) == reference_canonical(raw).encode("utf-8")
    fast = parse_job(raw)
    assert fast.payload_text == reference_canonical(raw)


def slow_paths(monkeypatch) -> None:
    """The reference JSON and the ordinary reader of every output, no caches."""
    monkeypatch.setattr(jsonio, "orjson", None)
    monkeypatch.setattr(parse, "_output_as_expected", lambda item, job_id: None)
    monkeypatch.setattr(parse, "_MOMENTS_KEPT", 0)


@pytest.mark.parametrize("path", SAMPLES, ids=lambda p: f"{p.parent.parent.name}/{p.name}")
def test_parsed_records_are_the_same_on_either_path(path, monkeypatch):
    raw = json.loads(path.read_text(encoding="utf-8"))
    fast = parse_job(raw, fingerprint=fingerprint(raw))
    slow_paths(monkeypatch)
    assert parse_job(raw) == fast


OUTPUT_VARIANTS = [
    {"component": {"name": "dest", "type": "database"}}, {"component": {}}, {"component": None},
    {"progress": 1}, {"progress": 0.5}, {"progress": True}, {"progress": "1"}, {"progress": 10 ** 400},
    {"records_count": None}, {"records_count": 2 ** 63}, {"records_count": 1.0}, {"records_count": False},
    {"id": None}, {"id": "5"}, {"name": 5}, {"url": None}, {"preview_type": ["x"]},
    {"created_at": "2024-02-30T00:00:00Z"}, {"created_at": 5}, {"updated_at": "0999-01-01T00:00:00Z"},
    {"updated_at": "2024-01-01T01:00:00+02:00"}, {"created_at": None}, {"component": "x"},
]


@pytest.mark.parametrize("change", OUTPUT_VARIANTS, ids=lambda c: json.dumps(c)[:40])
def test_outputs_are_read_alike_on_the_fast_and_the_ordinary_path(change, payload, monkeypatch):
    raw = payload("job-v1-completed.json")
    raw["outputs"][0].update(change)

    def outcome():
        try:
            return parse_job(raw).outputs
        except InvalidPayload as bad:
            return (bad.job_id, bad.field, str(bad))

    fast = outcome()
    slow_paths(monkeypatch)
    assert outcome() == fast


# JSON values of every kind, with the numbers where orjson and json part ways
numbers = st.one_of(
    st.integers(), st.integers(min_value=-(2 ** 66), max_value=2 ** 66),
    st.floats(allow_nan=False, allow_infinity=False),
    st.floats(min_value=1e-7, max_value=1e-3), st.floats(min_value=1e15, max_value=1e22),
    st.sampled_from([1e-05, 9.9999e-05, 1e-4, 1.5e-7, 1e16, 1e21, 5e-324, -0.0, 0.0, 2 ** 63, 2 ** 64, -(2 ** 63) - 1]))
scalars = st.one_of(st.none(), st.booleans(), numbers, st.text(), st.sampled_from(["1e5", "0.00001", "x" * 40]))
values = st.recursive(scalars, lambda inner: st.one_of(st.lists(inner, max_size=4),
                                                      st.dictionaries(st.text(max_size=8), inner, max_size=4)),
                      max_leaves=20)


def encodable(value) -> bool:
    try:
        reference_canonical(value).encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


@given(values)
def test_canonical_text_is_the_reference_text_for_any_value(value):
    expected = reference_canonical(value)
    assert jsonio.canonical_json(value) == expected
    if encodable(value):
        assert jsonio.canonical_bytes(value) == expected.encode("utf-8")
    else:
        with pytest.raises(UnicodeEncodeError):
            jsonio.canonical_bytes(value)


@given(values)
def test_decoding_gives_the_reference_values_for_any_text(value):
    text = json.dumps(value, ensure_ascii=False)
    expected = reference_decode(text)
    got = jsonio.strict_json(text)
    assert reference_canonical(got) == reference_canonical(expected)   # -0.0 == 0.0: compare the text
    assert type(got) is type(expected)
    if encodable(value):
        assert reference_canonical(jsonio.decode_body(text.encode("utf-8"))) == reference_canonical(expected)


@pytest.mark.parametrize("text", ['{"id": 18446744073709551616}', '{"id": -9223372036854775809}',
                                  '{"x": 123456789012345678901234567890}'])
def test_integers_beyond_64_bits_stay_integers(text):
    assert jsonio.strict_json(text) == json.loads(text)
    assert isinstance(next(iter(jsonio.strict_json(text).values())), int)
    assert jsonio.decode_body(text.encode()) == json.loads(text)


@pytest.mark.parametrize("text", ["[NaN]", '{"a": Infinity}', "[-Infinity]", '{"a": 1} x', '"\x01"'])
def test_what_the_reference_refuses_is_refused(text):
    with pytest.raises(ValueError):
        jsonio.strict_json(text)
    with pytest.raises(ValueError):
        jsonio.decode_body(text.encode())


def test_a_lone_surrogate_decodes_as_the_reference_does():
    assert jsonio.strict_json('{"a": "\\ud800"}') == {"a": "\ud800"}


def test_small_floats_keep_pythons_exponent_form():
    assert jsonio.canonical_json({"p": 1e-05, "q": 0.5}) == '{"p":1e-05,"q":0.5}'
    assert jsonio.canonical_bytes([1.5e-07, 1e16]) == b"[1.5e-07,1e+16]"


def test_an_archive_hashed_by_the_reference_sees_its_jobs_unchanged(payload, db_url, monkeypatch):
    """Jobs stored before the fast path (their hashes from json's text), small floats included,
    are all unchanged when the same payloads come again through the fast path."""
    jobs = []
    for i, name in enumerate(["job-v1-completed.json", "job-v1-failed.json", "job-v2-failed-with-log-summary.json"]):
        job = payload(name)
        job["id"] = 7000 + i
        job["progress"] = [1e-05, 2.5e-07, 0.75][i]
        job["variables"] = {"tiny": 1e-06, "name": "café ☕"}
        jobs.append(job)
    lines = "".join(json.dumps(j, ensure_ascii=False) + "\n" for j in jobs).encode()
    settings = Settings(account="acme", database_url=db_url)

    monkeypatch.setattr(jsonio, "orjson", None)
    first = ingest(settings, read_payloads(io.BytesIO(lines)), SyncOptions())
    assert (first.outcome, first.inserted) == ("ok", 3)
    monkeypatch.undo()
    assert jsonio.orjson is not None
    again = ingest(settings, read_payloads(io.BytesIO(lines)), SyncOptions())
    assert (again.outcome, again.inserted, again.updated, again.unchanged) == ("ok", 0, 0, 3)
