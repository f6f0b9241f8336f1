"""Small typed records: what the parser makes of a payload and what the store writes.

Everything behind the parser trusts these types. `Record` classes are payload
snapshots (the ORM row classes in archiver.models are `...Row`). Imports only
archiver.fields.
"""

from __future__ import annotations

import dataclasses
from datetime import datetime
from typing import Any

from archiver.fields import TERMINAL_STATUSES


@dataclasses.dataclass(frozen=True, slots=True)
class OutputRecord:
    id: int
    job_id: int
    name: str | None
    component_name: str | None
    component_type: str | None
    records_count: int | None
    progress: float | None
    preview_type: str | None
    created_at: datetime | None
    updated_at: datetime | None
    url: str | None
    preview_url: str | None


@dataclasses.dataclass(frozen=True, slots=True)
class PackageRecord:
    id: int
    name: str | None
    description: str | None
    owner_id: int | None
    status: str | None
    url: str | None
    html_url: str | None
    created_at: datetime | None
    updated_at: datetime | None


@dataclasses.dataclass(frozen=True, slots=True)
class ClusterRecord:
    id: int
    name: str | None
    description: str | None
    status: str | None
    owner_id: int | None
    plan_id: int | None
    nodes: int | None
    type: str | None
    region: str | None
    zone: str | None
    master_instance_type: str | None
    slave_instance_type: str | None
    created_at: datetime | None
    updated_at: datetime | None
    available_since: datetime | None
    terminated_at: datetime | None
    url: str | None
    html_url: str | None


@dataclasses.dataclass(frozen=True, slots=True)
class CreatorRecord:
    type: str
    id: int
    display_name: str | None
    url: str | None
    html_url: str | None


@dataclasses.dataclass(frozen=True, slots=True)
class LogSummaryRecord:
    job_id: int
    id: int | None
    body: str | None
    error_summary: str | None
    action_items: tuple[str, ...]
    created_at: datetime | None


@dataclasses.dataclass(frozen=True, slots=True)
class JobRecord:
    """One accepted job snapshot.

    `columns` holds the jobs-table values for the keys the payload carried (a key
    left out is absent here, not None). `outputs` / `variables` are None when the
    payload has no such key, so stored ones are kept.
    """

    id: int
    status: str | None
    updated_at: datetime | None
    columns: dict[str, Any]
    outputs: tuple[OutputRecord, ...] | None
    variables: dict[str, str] | None
    package: PackageRecord | None
    cluster: ClusterRecord | None
    creator: CreatorRecord | None
    log_summary: LogSummaryRecord | None
    payload_text: str
    payload_hash: str

    @property
    def is_terminal(self) -> bool:
        return self.status in TERMINAL_STATUSES


def as_row(record: Any) -> dict[str, Any]:
    """A record's fields as a row (shallow: dataclasses.asdict deep-copies every value)."""
    return {name: getattr(record, name) for name in record.__dataclass_fields__}


@dataclasses.dataclass
class RunCounts:
    """What a run did, as the `sync_runs` columns of the same names count it."""

    requested: int = 0
    inserted: int = 0
    updated: int = 0
    unchanged: int = 0
    stale: int = 0
    not_found: int = 0
    failed: int = 0
    credits_used: int = 0
    api_calls: int = 0

    @property
    def archived(self) -> int:
        """Jobs the archive now holds as the API sent them (new, replaced or already equal)."""
        return self.inserted + self.updated + self.unchanged

    @property
    def settled(self) -> int:
        """Snapshots dealt with either way (archived or found stale)."""
        return self.archived + self.stale

    @property
    def errors_count(self) -> int:
        return self.failed + self.not_found

    def counts(self) -> dict[str, int]:
        return {f.name: getattr(self, f.name) for f in dataclasses.fields(RunCounts)}


# The buckets a written batch sorts its jobs into; each is a RunCounts field.
WRITE_OUTCOMES = ("inserted", "updated", "unchanged", "stale")
