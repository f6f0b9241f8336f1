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
class CatalogRecord:
    """A package, cluster or schedule object, as a job payload nests it or as its own List
    endpoint gives it.

    `columns` holds the table's values for the keys the object carried (a key left out is
    absent here, not None, so a stored column is kept). `payload_text` is the object's
    canonical JSON when it came from its List endpoint, else None (a nested object never
    writes the columns only List endpoints fill).
    """

    id: int
    updated_at: datetime | None
    columns: dict[str, Any]
    payload_text: str | None = None


@dataclasses.dataclass(frozen=True, slots=True)
class PackageRecord(CatalogRecord):
    pass


@dataclasses.dataclass(frozen=True, slots=True)
class ClusterRecord(CatalogRecord):
    pass


@dataclasses.dataclass(frozen=True, slots=True)
class SchedulePackageRecord:
    position: int
    package_id: int | None
    variables: dict[str, Any] | None


@dataclasses.dataclass(frozen=True, slots=True)
class ScheduleRecord(CatalogRecord):
    """`packages` is None when the object has no `task.packages`: the stored ones are kept."""

    packages: tuple[SchedulePackageRecord, ...] | None = None


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


@dataclasses.dataclass
class CatalogCounts:
    """What a run did with one kind of catalog object (schedules, packages or clusters).
    Not in sync_runs, whose counts are jobs; `errors` are reads or objects that failed
    (each a sync_errors row)."""

    inserted: int = 0
    updated: int = 0
    unchanged: int = 0
    stale: int = 0
    errors: int = 0

    @property
    def stored(self) -> int:
        return self.inserted + self.updated
