"""What `archiver check` finds: an alert, shared by the rules of flows/health.py and the anomaly
rules of flows/anomaly_checks.py."""

from __future__ import annotations

import dataclasses
from datetime import datetime
from typing import Any

SEVERITY_RANK = {"warning": 1, "critical": 2}


@dataclasses.dataclass
class Alert:
    key: str
    kind: str
    severity: str
    message: str
    since: datetime | None = None
    schedule_id: int | None = None
    package_id: int | None = None
    job_id: int | None = None
    silenced_until: datetime | None = None   # from the alerts table (archiver ack)

    def as_dict(self) -> dict[str, Any]:
        return {"key": self.key, "kind": self.kind, "severity": self.severity, "schedule_id": self.schedule_id,
                "package_id": self.package_id, "job_id": self.job_id, "since": self.since,
                "message": self.message}

    def at_least(self, level: str) -> bool:
        return SEVERITY_RANK[self.severity] >= SEVERITY_RANK[level]
