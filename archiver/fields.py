"""What a job object of the API carries: its scalar fields and its statuses, declared once.

The parser reads each field by its kind, the `jobs` table has a column per field
(archiver.models), and the column comment is the field's doc. A new scalar field is
one line here, one row in docs/schema.md, and a migration (see docs/architecture.md).
Imports nothing of the archiver.
"""

from __future__ import annotations

import dataclasses

# Kinds: how a value is validated (archiver.parse) and stored (archiver.models).
INT = "int"          # JSON integer within 64 bits -> BIGINT
NUMBER = "number"    # JSON number -> DOUBLE
TEXT = "text"        # JSON string of any length -> TEXT (LONGTEXT on MySQL)
TIME = "time"        # ISO 8601 string -> UTC timestamp
STATUS = "status"    # 1 to 64 characters; unknown values are kept with a warning -> VARCHAR(64)
KINDS = (INT, NUMBER, TEXT, TIME, STATUS)

KNOWN_STATUSES = frozenset({"idle", "pending", "queued", "running", "completed", "failed",
                            "pending_stoppage", "stopping", "stopped"})
TERMINAL_STATUSES = frozenset({"completed", "failed", "stopped"})


@dataclasses.dataclass(frozen=True)
class Field:
    """A top-level key of the job payload, stored in the `jobs` column of the same name."""

    name: str
    kind: str
    doc: str
    indexed: bool = False

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise ValueError(f"field {self.name}: unknown kind {self.kind!r}")


JOB_FIELDS: tuple[Field, ...] = (
    Field("status", STATUS, "idle, pending, queued, running, completed, failed, pending_stoppage, "
          "stopping, stopped. Unknown values are kept as they are. Terminal: completed, failed, stopped.",
          indexed=True),
    Field("owner_id", INT, "User who ran the job."),
    Field("progress", NUMBER, "0.0 to 1.0."),
    Field("outputs_count", INT, "Number of output targets of the package."),
    Field("package_id", INT, "Package that was run → packages.id.", indexed=True),
    Field("cluster_id", INT, "Cluster it ran on → clusters.id.", indexed=True),
    Field("errors", TEXT, "Error text from the API. Usually '' or NULL for successful jobs."),
    Field("url", TEXT, "API URL of the job."),
    Field("runtime_in_seconds", INT, "How long it has run so far (the final figure once terminal)."),
    Field("created_at", TIME, "When the run was requested.", indexed=True),
    Field("started_at", TIME, "When it started running. NULL: not started (yet)."),
    Field("failed_at", TIME, "API failure time. Often NULL even for failed jobs, so use ended_at."),
    Field("updated_at", TIME, "Last change at the API. Decides which snapshot wins.", indexed=True),
    Field("completed_at", TIME, "Set by the API when a job ends (completed, failed or stopped)."),
    Field("html_url", TEXT, "v2: web UI page of the job. NULL: only v1 payloads seen."),
    Field("log_url", TEXT, "v2: API URL of the job log."),
    Field("attempts", INT, "v2: attempt number of a scheduled run (0 = first run, 1+ = retries)."),
    Field("master_auto_retry_attempts", INT, "v2: the API's automatic-retry counter for the run."),
)
