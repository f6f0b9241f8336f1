"""Errors as data: the CLI maps them to exit codes in one place."""

from __future__ import annotations


class ArchiverError(Exception):
    """Base class for every error the archiver raises on purpose."""

    exit_code = 1


class ConfigError(ArchiverError):
    """Missing or invalid configuration or usage (exit code 2)."""

    exit_code = 2


class SchemaOutOfDate(ArchiverError):
    """The database is at an older migration revision than this archiver needs."""

    exit_code = 2


class NoArchive(SchemaOutOfDate):
    """The database is missing or empty (no archiver schema at all)."""


class RunLocked(ArchiverError):
    """Another run holds the per-account lock (exit code 4)."""

    exit_code = 4


class ApiError(ArchiverError):
    """The API answered with an error status (or not at all)."""

    def __init__(self, status: int | None, message: str, kind: str = "api_error"):
        self.status = status
        self.message = message
        self.kind = kind
        where = f"HTTP {status}" if status else "no HTTP status"
        super().__init__(f"{message} ({where})")


class AuthError(ApiError):
    """401/402/403: the credentials were refused; the run stops at once (exit 3)."""

    exit_code = 3

    def __init__(self, status: int, message: str):
        super().__init__(status, message, kind="auth")


class TlsError(ArchiverError):
    """The server's certificate failed verification: a configuration problem, never retried."""

    exit_code = 2


class NotFound(ApiError):
    def __init__(self, message: str = "Item not found."):
        super().__init__(404, message, kind="not_found")


class RateLimited(ApiError):
    """The rate budget ran out and waiting longer than allowed would be needed."""

    def __init__(self, message: str, retry_after: float | None = None):
        super().__init__(429, message, kind="rate_limited")
        self.retry_after = retry_after


class BudgetReached(ArchiverError):
    """--max-credits was reached; the run stops cleanly where the next one resumes."""

    exit_code = 0


class NotFoundFlood(ArchiverError):
    """Nearly every id asked for answered 404: the run stops instead of asking for the rest."""


class DeadlineExceeded(ArchiverError):
    """The whole-run deadline (--max-runtime) passed."""


class TooManyIds(ArchiverError):
    """More distinct job ids than one run asks for (flows.by_id.MAX_IDS): the run stops cleanly there."""


class Stopped(ArchiverError):
    """The run was told to stop (SIGTERM or Ctrl-C): a request in flight or a wait ends at once.
    Raised in worker threads; the main thread unwinds with its KeyboardInterrupt."""

    exit_code = 130


class ResponseTooLarge(ApiError):
    """An answer larger than the response cap (--max-response-mb, after decompression): reading
    stopped at the cap; never retried, recorded against its job."""

    def __init__(self, status: int | None, message: str):
        super().__init__(status, message, kind="too_large")


class InvalidPayload(ArchiverError):
    """A payload that cannot be archived; names the object (a job unless `subject` says
    schedule, package or cluster), its id and the field, never the raw value."""

    def __init__(self, object_id: int | None, field: str, reason: str, kind: str = "invalid_payload",
                 subject: str = "job"):
        self.job_id = object_id if subject == "job" else None   # the sync_errors column is for jobs only
        self.object_id = object_id
        self.subject = subject   # what the payload is: job, schedule, package, cluster
        self.field = field
        self.reason = reason
        self.kind = kind
        who = f"{subject} {object_id}" if object_id is not None else ("payload" if subject == "job" else subject)
        super().__init__(f"{who}: field {field!r}: {reason}")


class LostLock(ArchiverError):
    """The run's lock was lost mid-run (its database session ended): the run stops writing
    at once; another run may hold the lock now. Transient: exit 1, the next run resumes."""


class DatabaseBusy(ArchiverError):
    """The archive stayed locked by another writer for the whole busy timeout: transient
    (exit 1), the next run retries; not a configuration error."""


class DiskFull(ArchiverError):
    """The database has no room left (disk full, a size limit): the run stops writing at once."""
