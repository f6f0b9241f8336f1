"""The order of steps of a run: lock, open a sync_runs row, fetch -> parse -> store, summary."""

from __future__ import annotations

import dataclasses
import logging
import time
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from typing import Any

from archiver.client import XplentyClient
from archiver.config import Settings
from archiver.errors import (ApiError, ArchiverError, AuthError, ConfigError, DeadlineExceeded,
                             InvalidPayload, NotFound, RateLimited)
from archiver.parse import Job, parse_job
from archiver.store import Archive, BatchResult, describe_error

log = logging.getLogger(__name__)

NOT_FOUND_PROBE = 20  # this many 404s in a row at the start of a run means a wrong account/URL


@dataclasses.dataclass
class SyncOptions:
    dry_run: bool = False
    concurrency: int = 8
    batch_size: int = 500
    with_log_summary: bool = False
    wait: float = 0.0
    max_runtime: float | None = None
    progress: Callable[["SyncSummary"], None] | None = None


@dataclasses.dataclass
class SyncSummary:
    mode: str
    requested: int = 0
    inserted: int = 0
    updated: int = 0
    unchanged: int = 0
    stale: int = 0
    not_found: int = 0
    failed: int = 0
    credits_used: int = 0
    api_calls: int = 0
    retries: int = 0
    dry_run: bool = False
    outcome: str = "running"
    message: str | None = None
    run_id: int | None = None
    seconds: float = 0.0
    errors: list[dict] = dataclasses.field(default_factory=list)

    @property
    def exit_code(self) -> int:
        if self.outcome == "auth_failed":
            return 3
        return 1 if (self.failed or self.not_found or self.outcome != "ok") else 0

    def add_batch(self, result: BatchResult) -> None:
        self.inserted += len(result.inserted)
        self.updated += len(result.updated)
        self.unchanged += len(result.unchanged)
        self.stale += len(result.stale)

    def line(self) -> str:
        verb = "would be " if self.dry_run else ""
        text = (f"requested {self.requested}, {verb}inserted {self.inserted}, {verb}updated {self.updated}, "
                f"unchanged {self.unchanged}, stale {self.stale}, not found {self.not_found}, "
                f"failed {self.failed}; {self.credits_used} API credits, {self.seconds:.1f}s")
        if self.outcome not in ("ok",):
            text += f" [{self.outcome}" + (f": {self.message}]" if self.message else "]")
        return ("dry run: " if self.dry_run else "") + text

    def as_dict(self) -> dict[str, Any]:
        data = dataclasses.asdict(self)
        data["exit_code"] = self.exit_code
        data["errors"] = [{k: v for k, v in e.items()} for e in self.errors[:100]]
        return data


def make_client(settings: Settings, options: SyncOptions) -> XplentyClient:
    settings.require_api()
    deadline = time.monotonic() + options.max_runtime if options.max_runtime else None
    return XplentyClient(settings.api_url, settings.account, settings.api_key, deadline=deadline)


def error_row(job_id: int | None, exc: BaseException) -> dict:
    if isinstance(exc, InvalidPayload):
        return {"job_id": job_id, "kind": exc.kind, "http_status": None, "field": exc.field[:255],
                "message": str(exc)}
    if isinstance(exc, ApiError):
        return {"job_id": job_id, "kind": exc.kind, "http_status": exc.status, "field": None,
                "message": exc.message}
    return {"job_id": job_id, "kind": "db_error", "http_status": None, "field": None,
            "message": describe_error(exc)}


class Run:
    """One run against the archive: counts, errors and the batch writer."""

    def __init__(self, archive: Archive, summary: SyncSummary, options: SyncOptions):
        self.archive, self.summary, self.options = archive, summary, options
        self.pending: list[Job] = []

    def fail(self, job_id: int | None, exc: BaseException) -> None:
        row = error_row(job_id, exc)
        if isinstance(exc, NotFound):
            self.summary.not_found += 1
        else:
            self.summary.failed += 1
        log.warning("job %s: %s", job_id, row["message"])
        self.summary.errors.append(row)

    def add(self, job: Job) -> None:
        self.pending.append(job)
        if len(self.pending) >= self.options.batch_size:
            self.flush()

    def flush(self, after: Callable | None = None) -> None:
        batch, self.pending = self.pending, []
        if not batch and after is None:
            return
        if self.options.dry_run:
            self.summary.add_batch(self.archive.plan(batch)[1])
            return
        try:
            self.summary.add_batch(self.archive.write_jobs(batch, self.summary.run_id, after=after))
        except Exception as exc:  # one bad job must not sink its neighbours
            if len(batch) <= 1 or after is not None:
                for job in batch:
                    self.fail(job.id, exc)
                if after is not None:
                    raise
                return
            log.warning("batch of %d failed (%s); writing job by job", len(batch), describe_error(exc))
            for job in batch:
                self.pending = [job]
                self.flush()
        if self.options.progress:
            self.options.progress(self.summary)


def fetch_by_id(client: XplentyClient, ids: list[int], concurrency: int,
                with_log_summary: bool) -> Iterator[tuple[int, dict | None, BaseException | None]]:
    """Get each job, `concurrency` at a time, yielding results as they arrive."""

    def one(job_id: int) -> dict:
        return client.get_job(job_id, include_log_summary=with_log_summary)

    todo = iter(ids)
    with ThreadPoolExecutor(max_workers=max(1, concurrency), thread_name_prefix="fetch") as pool:
        running: dict[Future, int] = {}
        try:
            for job_id in todo:
                running[pool.submit(one, job_id)] = job_id
                if len(running) >= concurrency * 2:
                    break
            while running:
                done, _ = wait(running, return_when=FIRST_COMPLETED)
                for future in done:
                    job_id = running.pop(future)
                    exc = future.exception()
                    yield job_id, (None if exc else future.result()), exc
                    nxt = next(todo, None)
                    if nxt is not None:
                        running[pool.submit(one, nxt)] = nxt
        finally:
            for future in running:
                future.cancel()


def sync_ids(settings: Settings, ids: list[int], options: SyncOptions,
             client: XplentyClient | None = None) -> SyncSummary:
    """Archive the named jobs (`archiver sync ID ...`)."""
    client = client or make_client(settings, options)
    summary = SyncSummary(mode="ids", requested=len(ids), dry_run=options.dry_run)

    def body(run: Run) -> None:
        answered_404 = 0
        seen = 0
        for job_id, raw, exc in fetch_by_id(client, ids, options.concurrency, options.with_log_summary):
            seen += 1
            if isinstance(exc, (AuthError, RateLimited, DeadlineExceeded)):
                raise exc
            if exc is not None:
                answered_404 += isinstance(exc, NotFound)
                run.fail(job_id, exc)
                if seen == answered_404 == NOT_FOUND_PROBE:
                    raise ConfigError(f"the first {NOT_FOUND_PROBE} jobs all answered 404: the account id "
                                      f"({settings.account!r}), the API URL or the Accept header is "
                                      "probably wrong")
                continue
            try:
                run.add(parse_job(raw, expected_id=job_id))
            except InvalidPayload as bad:
                run.fail(job_id, bad)

    return execute(settings, summary, options, client, body)


def execute(settings: Settings, summary: SyncSummary, options: SyncOptions, client: XplentyClient,
            body: Callable[[Run], None], archive: Archive | None = None) -> SyncSummary:
    """Run `body` under the account lock with a sync_runs row, however it ends."""
    started = time.monotonic()
    archive = archive or Archive.open(settings.database_url, settings.account)
    try:
        with archive.run_lock(options.wait):
            if not options.dry_run:
                summary.run_id = archive.start_run(summary.mode, summary.requested)
            run = Run(archive, summary, options)
            try:
                body(run)
                run.flush()
                summary.outcome = "ok" if not (summary.failed or summary.not_found) else "partial"
            except AuthError as exc:
                summary.outcome, summary.message = "auth_failed", exc.message
                summary.errors.append(error_row(None, exc))
            except (RateLimited, DeadlineExceeded) as exc:
                run.flush()
                summary.outcome, summary.message = "stopped", str(exc)
            except ConfigError as exc:
                summary.outcome, summary.message = "failed", str(exc)
                raise
            except BaseException as exc:
                summary.outcome = "interrupted" if isinstance(exc, KeyboardInterrupt) else "failed"
                summary.message = describe_error(exc) if not isinstance(exc, KeyboardInterrupt) else None
                raise
            finally:
                summary.seconds = time.monotonic() - started
                summary.credits_used, summary.api_calls = client.usage.credits, client.usage.calls
                summary.retries = client.usage.retries
                if summary.run_id is not None:
                    _finish_run(archive, summary)
    finally:
        client.close()
        archive.close()
    return summary


def _finish_run(archive: Archive, summary: SyncSummary) -> None:
    from archiver.store import utcnow
    try:
        archive.record_errors(summary.run_id, summary.errors)
        archive.update_run(summary.run_id, finished_at=utcnow(), outcome=summary.outcome,
                           message=summary.message, **{k: getattr(summary, k) for k in (
                               "inserted", "updated", "unchanged", "stale", "not_found", "failed",
                               "credits_used", "api_calls", "requested")})
    except Exception:  # the run row is bookkeeping; never hide the run's own result
        log.exception("could not record the run's outcome in sync_runs")


def parse_id_args(args: Iterable[str], lines: Iterable[str] = ()) -> list[int]:
    """Job ids from arguments (`157`, `100-200`) and id-file lines; duplicates dropped, order kept.

    Any invalid id is a ConfigError naming it, raised before any request is made.
    """
    ids: dict[int, None] = {}
    for token in list(args) + [ln.split("#", 1)[0].strip() for ln in lines]:
        if not token:
            continue
        for job_id in _expand(token):
            ids[job_id] = None
    return list(ids)


MAX_RANGE = 1_000_000


def _expand(token: str) -> range | list[int]:
    if "-" in token.strip("-") and not token.startswith("-"):
        low_text, high_text = token.split("-", 1)
        low, high = _positive(low_text, token), _positive(high_text, token)
        if high < low:
            raise ConfigError(f"invalid job id range {token!r}: the end is before the start")
        if high - low >= MAX_RANGE:
            raise ConfigError(f"job id range {token!r} is larger than {MAX_RANGE:,} ids")
        return range(low, high + 1)
    return [_positive(token, token)]


def _positive(text: str, token: str) -> int:
    text = text.strip()
    if not text.isascii() or not text.isdigit() or int(text) <= 0 or int(text) > 2 ** 63 - 1:
        raise ConfigError(f"invalid job id {token!r}: job ids are positive integers")
    return int(text)
