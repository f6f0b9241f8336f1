"""Raw v1/v2 job JSON -> small typed records, validated once at the edge.

Pure functions, no I/O. An invalid payload raises InvalidPayload naming the job
and the field, never echoing the value. A key the payload leaves out is recorded
as absent (not as null), so the store never wipes what an earlier, fuller
payload brought.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
from datetime import datetime, timezone
from typing import Any, Callable

from archiver.errors import InvalidPayload
from archiver.errortext import signature
from archiver.fields import INT, JOB_FIELDS, KNOWN_STATUSES, NUMBER, STATUS, TEXT, TIME
from archiver.jsonio import canonical_bytes, canonical_json
from archiver.records import (CatalogRecord, ClusterRecord, CreatorRecord, JobRecord, LogSummaryRecord,
                              OutputRecord, PackageRecord, SchedulePackageRecord, ScheduleRecord)

log = logging.getLogger(__name__)

BIGINT_MIN, BIGINT_MAX = -(2 ** 63), 2 ** 63 - 1
MAX_STATUS_LEN = 64
MAX_VARIABLE_NAME_LEN = 255
MIN_YEAR, MAX_YEAR = 1000, 9999  # MySQL DATETIME's range, the narrowest of the three


class _Fields:
    """Typed, named access to one JSON object; every error names the object (a job, or the
    `subject` of a catalog object), its id and the field."""

    def __init__(self, obj: Any, object_id: int | None, prefix: str = "", subject: str = "job"):
        self.object_id, self.prefix, self.subject = object_id, prefix, subject
        if not isinstance(obj, dict):
            raise self.error("", "expected a JSON object")
        self.obj = obj

    def error(self, key: str, reason: str) -> InvalidPayload:
        name = f"{self.prefix}{key}" if key else (self.prefix.rstrip(".") or "<body>")
        return InvalidPayload(self.object_id, name, reason, kind="bad_field", subject=self.subject)

    def has(self, key: str) -> bool:
        return key in self.obj

    def int(self, key: str, required: bool = False) -> int | None:
        value = self.obj.get(key)
        if type(value) is int and BIGINT_MIN <= value <= BIGINT_MAX:  # the usual case, first
            return value
        if value is None:
            if required:
                raise self.error(key, "is required")
            return None
        if isinstance(value, bool) or not isinstance(value, int):
            raise self.error(key, f"expected an integer, got {type(value).__name__}")
        if not BIGINT_MIN <= value <= BIGINT_MAX:
            raise self.error(key, "integer out of the 64-bit range")
        return value

    def number(self, key: str) -> float | None:
        value = self.obj.get(key)
        if value is None:
            return None
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise self.error(key, f"expected a number, got {type(value).__name__}")
        try:
            return float(value)
        except OverflowError:
            raise self.error(key, "number out of range") from None

    def text(self, key: str) -> str | None:
        value = self.obj.get(key)
        if value is None or isinstance(value, str):
            return value
        raise self.error(key, f"expected a string, got {type(value).__name__}")

    def time(self, key: str) -> datetime | None:
        value = self.obj.get(key)
        if value is None:
            return None
        if type(value) is not str:
            raise self.error(key, f"expected an ISO 8601 timestamp string, got {type(value).__name__}")
        return parse_timestamp(value, self, key)

    def short(self, key: str, limit: int) -> str | None:
        """Text for a VARCHAR(limit) column: a longer value would not fit every database."""
        value = self.text(key)
        if value is not None and len(value) > limit:
            raise self.error(key, f"longer than {limit} characters")
        return value

    def flag(self, key: str) -> bool | None:
        value = self.obj.get(key)
        if value is None or isinstance(value, bool):
            return value
        raise self.error(key, f"expected true or false, got {type(value).__name__}")

    def json_object(self, key: str) -> dict[str, Any] | None:
        value = self.obj.get(key)
        if value is None or isinstance(value, dict):
            return value
        raise self.error(key, f"expected an object, got {type(value).__name__}")

    def sub(self, key: str) -> "_Fields | None":
        value = self.obj.get(key)
        return None if value is None else _Fields(value, self.object_id, f"{self.prefix}{key}.", self.subject)


_MOMENTS: dict[str, datetime] = {}   # recent timestamp texts -> their datetimes (a payload repeats them)
_MOMENTS_KEPT = 4096


def parse_timestamp(value: str, fields: _Fields | None = None, key: str = "") -> datetime:
    """ISO 8601 with Z or any offset -> aware UTC datetime (naive is taken as UTC)."""
    moment = _MOMENTS.get(value)
    if moment is not None:
        return moment
    moment = _parse_timestamp(value, fields, key)
    if len(_MOMENTS) >= _MOMENTS_KEPT:
        _MOMENTS.clear()
    _MOMENTS[value] = moment
    return moment


def _parse_timestamp(value: str, fields: _Fields | None, key: str) -> datetime:
    try:
        moment = datetime.fromisoformat(value)
        if moment.tzinfo is not timezone.utc:
            moment = moment.replace(tzinfo=timezone.utc) if moment.tzinfo is None else moment.astimezone(timezone.utc)
    except (ValueError, OverflowError):
        if fields is None:
            raise ValueError(f"not an ISO 8601 timestamp: {value[:40]!r}") from None
        raise fields.error(key, "not an ISO 8601 timestamp") from None
    if not MIN_YEAR <= moment.year <= MAX_YEAR:
        if fields is None:
            raise ValueError("timestamp out of range")
        raise fields.error(key, f"timestamp outside the years {MIN_YEAR}..{MAX_YEAR} every database can store")
    return moment


def encode_variable(value: Any) -> str:
    if isinstance(value, str):
        return value
    if type(value) is int:   # json.dumps writes an int as str() does
        return str(value)
    return json.dumps(value, ensure_ascii=False, sort_keys=True)


@dataclasses.dataclass(frozen=True, slots=True)
class Fingerprint:
    """What identifies a snapshot without validating it: the id and the canonical JSON's hash."""

    id: int
    text: str
    hash: str


def fingerprint(raw: Any) -> Fingerprint | None:
    job_id = _guess_id(raw)
    if job_id is None:
        return None
    return Fingerprint(job_id, *canonical_text_and_hash(raw))


def canonical_text_and_hash(raw: Any) -> tuple[str, str]:
    """The payload's canonical JSON and the SHA-256 of its UTF-8 bytes (hashed as made: no
    second encoding)."""
    data = canonical_bytes(raw)
    return data.decode("utf-8"), hashlib.sha256(data).hexdigest()


def parse_job(raw: Any, expected_id: int | None = None, fingerprint: Fingerprint | None = None) -> JobRecord:
    """Validate one job payload (v1 or v2 shape) and turn it into a JobRecord.

    `fingerprint` (of this very payload) saves serializing it a second time."""
    probe_id = expected_id if expected_id is not None else _guess_id(raw)
    f = _Fields(raw, probe_id)
    job_id = f.int("id", required=True)
    if expected_id is not None and job_id != expected_id:
        raise InvalidPayload(expected_id, "id", "the payload is for another job than the one asked for",
                             kind="wrong_id")
    f.object_id = job_id
    text, digest = (fingerprint.text, fingerprint.hash) if fingerprint is not None else canonical_text_and_hash(raw)
    if "\\u0000" in text:  # PostgreSQL cannot store NUL in text or JSONB: replace it everywhere
        log.warning("job %s: NUL characters in the payload are stored as U+FFFD", job_id)
        raw = _without_nul(raw)
        f.obj = raw
        text, digest = canonical_text_and_hash(raw)
    columns = {name: read(f, name) for name, read in _job_readers() if name in raw}
    columns.update(derived_columns(columns))
    creator = _creator(f.sub("creator"))
    if f.has("creator"):
        columns["creator_type"] = creator.type if creator else None
        columns["creator_id"] = creator.id if creator else None
    return JobRecord(
        id=job_id,
        status=columns.get("status"),
        updated_at=columns.get("updated_at"),
        columns=columns,
        outputs=_outputs(f, job_id),
        variables=_variables(f),
        package=_package(f.sub("package")),
        cluster=_cluster(f.sub("cluster")),
        creator=creator,
        log_summary=_log_summary(f.sub("log_summary"), job_id),
        payload_text=text,
        payload_hash=digest,
    )


def derived_columns(columns: dict[str, Any]) -> dict[str, Any]:
    """ended_at (completed_at, else failed_at), queue_seconds, run_date (UTC day created) and
    error_signature, each only when the payload carried what it derives from."""
    derived: dict[str, Any] = {}
    if "errors" in columns:
        derived["error_signature"] = signature(columns["errors"])
    if "completed_at" in columns or "failed_at" in columns:
        derived["ended_at"] = columns.get("completed_at") or columns.get("failed_at")
    if "created_at" in columns:
        created = columns["created_at"]
        derived["run_date"] = created.date() if created else None
        if "started_at" in columns:
            started = columns["started_at"]
            derived["queue_seconds"] = (max(0, round((started - created).total_seconds()))
                                        if started and created else None)
    return derived


def _without_nul(value: Any) -> Any:
    if isinstance(value, str):
        return value.replace("\x00", "\ufffd")
    if isinstance(value, dict):
        return {_without_nul(k): _without_nul(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_without_nul(v) for v in value]
    return value


def _guess_id(raw: Any) -> int | None:
    value = raw.get("id") if isinstance(raw, dict) else None
    return value if isinstance(value, int) and not isinstance(value, bool) else None


def _status(f: _Fields, key: str) -> str | None:
    status = f.text(key)
    if status is None:
        return None
    if not status or len(status) > MAX_STATUS_LEN:
        raise f.error(key, f"must be 1 to {MAX_STATUS_LEN} characters")
    if status not in KNOWN_STATUSES:
        log.warning("job %s has an unknown status %r; stored as it is", f.object_id, status[:MAX_STATUS_LEN])
    return status


# How each kind of field is read and validated (archiver.fields).
READERS = {
    INT: _Fields.int,
    NUMBER: _Fields.number,
    TEXT: _Fields.text,
    TIME: _Fields.time,
    STATUS: _status,
}
_readers_of: tuple[tuple, tuple] = ((), ())   # (JOB_FIELDS, its (name, reader) pairs), made once


def _job_readers() -> tuple:
    global _readers_of
    if _readers_of[0] is not JOB_FIELDS:
        _readers_of = (JOB_FIELDS, tuple((field.name, READERS[field.kind]) for field in JOB_FIELDS))
    return _readers_of[1]


def _outputs(f: _Fields, job_id: int) -> tuple[OutputRecord, ...] | None:
    items = f.obj.get("outputs")
    if items is None:
        return None  # absent (or null): keep what is stored
    if not isinstance(items, list):
        raise f.error("outputs", "expected an array")
    outputs = []
    for i, item in enumerate(items):
        fast = _output_as_expected(item, job_id)
        if fast is not None:
            outputs.append(fast)
            continue
        o = _Fields(item, job_id, f"outputs[{i}].")
        component = o.sub("component")
        outputs.append(OutputRecord(
            id=o.int("id", required=True), job_id=job_id, name=o.text("name"),
            component_name=component.text("name") if component else o.text("component_name"),
            component_type=component.text("type") if component else o.text("component_type"),
            records_count=o.int("records_count"), progress=o.number("progress"),
            preview_type=o.text("preview_type"), created_at=o.time("created_at"),
            updated_at=o.time("updated_at"), url=o.text("url"), preview_url=o.text("preview_url"),
        ))
    ids = [o.id for o in outputs]
    if len(set(ids)) != len(ids):
        raise f.error("outputs", "the same output id appears twice")
    return tuple(outputs)


def _output_as_expected(item: Any, job_id: int) -> OutputRecord | None:
    """The usual output (every value of the expected type) read without the named-field
    machinery; None for anything else, which the reader above then reads (or rejects, naming
    the field) the ordinary way. Both give equal records (tests/test_parse.py)."""
    if type(item) is not dict:
        return None
    get = item.get
    output_id, count, progress = get("id"), get("records_count"), get("progress")
    if type(output_id) is not int or not BIGINT_MIN <= output_id <= BIGINT_MAX:
        return None
    if count is not None and (type(count) is not int or not BIGINT_MIN <= count <= BIGINT_MAX):
        return None
    if progress is not None and type(progress) is not float:
        return None
    component = get("component")
    if component is None:
        component_name, component_type = get("component_name"), get("component_type")
    elif type(component) is dict:
        component_name, component_type = component.get("name"), component.get("type")
    else:
        return None
    texts = (get("name"), component_name, component_type, get("preview_type"), get("url"), get("preview_url"))
    for value in texts:
        if value is not None and type(value) is not str:
            return None
    created, updated = get("created_at"), get("updated_at")
    try:
        created = None if created is None else parse_timestamp(created) if type(created) is str else _NOT
        updated = None if updated is None else parse_timestamp(updated) if type(updated) is str else _NOT
    except ValueError:
        return None
    if created is _NOT or updated is _NOT:
        return None
    name, component_name, component_type, preview_type, url, preview_url = texts
    return OutputRecord(id=output_id, job_id=job_id, name=name, component_name=component_name,
                        component_type=component_type, records_count=count, progress=progress,
                        preview_type=preview_type, created_at=created, updated_at=updated, url=url,
                        preview_url=preview_url)


_NOT = object()


def _variables(f: _Fields) -> dict[str, str] | None:
    value = f.obj.get("variables")
    if value is None:
        return None
    if not isinstance(value, dict):
        raise f.error("variables", "expected an object of name -> value")
    for name in value:
        if not name or len(name) > MAX_VARIABLE_NAME_LEN:
            raise f.error("variables", f"a variable name must be 1 to {MAX_VARIABLE_NAME_LEN} characters")
    return {name: encode_variable(v) for name, v in value.items()}


def _creator(c: _Fields | None) -> CreatorRecord | None:
    if c is None:
        return None
    kind = c.text("type")
    if not kind:
        raise c.error("type", "is required")
    return CreatorRecord(type=kind[:64], id=c.int("id", required=True), display_name=c.text("display_name"),
                   url=c.text("url"), html_url=c.text("html_url"))


def _package(p: _Fields | None) -> PackageRecord | None:
    return None if p is None else _catalog_record(PackageRecord, p, NESTED_PACKAGE_COLUMNS)


def _cluster(c: _Fields | None) -> ClusterRecord | None:
    return None if c is None else _catalog_record(ClusterRecord, c, NESTED_CLUSTER_COLUMNS)


def _log_summary(s: _Fields | None, job_id: int) -> LogSummaryRecord | None:
    if s is None:
        return None
    items = s.obj.get("action_items") or []
    if not isinstance(items, list) or not all(isinstance(i, str) for i in items):
        raise s.error("action_items", "expected an array of strings")
    return LogSummaryRecord(job_id=job_id, id=s.int("id"), body=s.text("body"),
                      error_summary=s.text("error_summary"), action_items=tuple(items),
                      created_at=s.time("created_at"))


# -- the catalog: schedules, packages and clusters ---------------------------------------------------
Reader = Callable[[_Fields, str], Any]


def _short(limit: int) -> Reader:
    return lambda f, key: f.short(key, limit)


# column (= the object's key) -> how it is read. A job's nested package or cluster fills only
# the NESTED columns; the others are filled only from the object's own List endpoint.
NESTED_PACKAGE_COLUMNS: dict[str, Reader] = {
    "name": _Fields.text, "description": _Fields.text, "owner_id": _Fields.int, "status": _Fields.text,
    "url": _Fields.text, "html_url": _Fields.text, "created_at": _Fields.time, "updated_at": _Fields.time}
LISTED_PACKAGE_COLUMNS: dict[str, Reader] = {
    **NESTED_PACKAGE_COLUMNS, "flow_type": _short(64), "variables": _Fields.json_object}
NESTED_CLUSTER_COLUMNS: dict[str, Reader] = {
    "name": _Fields.text, "description": _Fields.text, "status": _Fields.text, "owner_id": _Fields.int,
    "plan_id": _Fields.int, "nodes": _Fields.int, "type": _Fields.text, "region": _Fields.text,
    "zone": _Fields.text, "master_instance_type": _Fields.text, "slave_instance_type": _Fields.text,
    "created_at": _Fields.time, "updated_at": _Fields.time, "available_since": _Fields.time,
    "terminated_at": _Fields.time, "url": _Fields.text, "html_url": _Fields.text}
LISTED_CLUSTER_COLUMNS: dict[str, Reader] = {
    **NESTED_CLUSTER_COLUMNS, "terminate_on_idle": _Fields.flag, "time_to_idle": _Fields.int,
    "stack": _Fields.text}
SCHEDULE_COLUMNS: dict[str, Reader] = {
    "name": _Fields.text, "description": _Fields.text, "owner_id": _Fields.int, "status": _short(64),
    "start_at": _Fields.time, "next_run_at": _Fields.time, "interval_amount": _Fields.int,
    "interval_unit": _short(32), "last_run_at": _Fields.time, "last_run_status": _short(64),
    "execution_count": _Fields.int, "overlap": _Fields.flag, "auto_retry": _Fields.flag,
    "auto_retry_attempts": _Fields.int, "reuse_cluster_strategy": _short(32), "created_at": _Fields.time,
    "updated_at": _Fields.time, "url": _Fields.text, "html_url": _Fields.text}
# task.<key> -> column
SCHEDULE_TASK_COLUMNS: dict[str, tuple[str, Reader]] = {
    "nodes": ("task_nodes", _Fields.int), "terminate_on_idle": ("task_terminate_on_idle", _Fields.flag),
    "time_to_idle": ("task_time_to_idle", _Fields.int)}


def _read_columns(f: _Fields, readers: dict[str, Reader]) -> dict[str, Any]:
    """The columns of the keys the object has: an absent key is absent, never None."""
    return {column: read(f, column) for column, read in readers.items() if f.has(column)}


def _catalog_record(record_type: type, f: _Fields, readers: dict[str, Reader], payload_text: str | None = None,
                    **extra: Any) -> CatalogRecord:
    columns = _read_columns(f, readers)
    return record_type(id=f.int("id", required=True), updated_at=columns.get("updated_at"), columns=columns,
                       payload_text=payload_text, **extra)


def _listed(raw: Any, subject: str) -> tuple[_Fields, str]:
    """An object from a List endpoint: its fields and its canonical JSON (NUL replaced as for jobs)."""
    f = _Fields(raw, _guess_id(raw), subject=subject)
    f.int("id", required=True)
    text = canonical_json(raw)
    if "\\u0000" in text:  # PostgreSQL cannot store NUL in text or JSONB: replace it everywhere
        log.warning("%s %s: NUL characters in the payload are stored as U+FFFD", subject, f.object_id)
        f.obj = _without_nul(raw)
        text = canonical_json(f.obj)
    return f, text


def parse_package(raw: Any) -> PackageRecord:
    """One object of List packages."""
    f, text = _listed(raw, "package")
    return _catalog_record(PackageRecord, f, LISTED_PACKAGE_COLUMNS, text)


def parse_cluster(raw: Any) -> ClusterRecord:
    """One object of List clusters."""
    f, text = _listed(raw, "cluster")
    return _catalog_record(ClusterRecord, f, LISTED_CLUSTER_COLUMNS, text)


def parse_schedule(raw: Any) -> ScheduleRecord:
    """One object of List schedules; its `task` fills the task_* columns and its packages."""
    f, text = _listed(raw, "schedule")
    task = f.sub("task")
    columns = {**_read_columns(f, SCHEDULE_COLUMNS), **_task_columns(task)}
    return ScheduleRecord(id=f.int("id", required=True), updated_at=columns.get("updated_at"), columns=columns,
                          payload_text=text, packages=_task_packages(task))


def _task_columns(task: _Fields | None) -> dict[str, Any]:
    if task is None:
        return {}
    return {column: read(task, key) for key, (column, read) in SCHEDULE_TASK_COLUMNS.items() if task.has(key)}


def _task_packages(task: _Fields | None) -> tuple[SchedulePackageRecord, ...] | None:
    items = task.obj.get("packages") if task is not None else None
    if items is None:
        return None  # absent (or null): keep what is stored
    if not isinstance(items, list):
        raise task.error("packages", "expected an array")
    packages = []
    for position, item in enumerate(items):
        p = _Fields(item, task.object_id, f"{task.prefix}packages[{position}].", task.subject)
        packages.append(SchedulePackageRecord(position, p.int("package_id"), p.json_object("variables")))
    return tuple(packages)


# how each kind of catalog object is validated, by the name of its List endpoint
CATALOG_PARSERS: dict[str, Callable[[Any], CatalogRecord]] = {
    "schedules": parse_schedule, "packages": parse_package, "clusters": parse_cluster}
