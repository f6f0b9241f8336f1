"""The order of steps of a run: lock, open a sync_runs row, fetch -> parse -> store, summary.

Three ways in, one way to the archive: by id (`sync ID ...`), incrementally through
List jobs (archiver.incremental) and from saved payloads (`ingest`).
"""

from __future__ import annotations

import dataclasses
import logging
import time
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from datetime import datetime
from typing import Any

from archiver.client import XplentyClient
from archiver.config import Settings
from archiver.errors import (ApiError, AuthError, BudgetReached, ConfigError, DeadlineExceeded,
                             InvalidPayload, NotFound, RateLimited, TlsError)
from archiver.parse import Fingerprint, Job, fingerprint, parse_job
from archiver.store import Archive, BatchResult, describe_error

log = logging.getLogger(__name__)

NOT_FOUND_PROBE = 20  # this many 404s in a row at the start of a run means a wrong account/URL
STOPPING = (RateLimited, DeadlineExceeded, BudgetReached)  # end the run cleanly, keep what is stored
FATAL = (AuthError, TlsError, *STOPPING)  # per-job errors that end the whole run


@dataclasses.dataclass
class SyncOptions:
    dry_run: bool = False
    concurrency: int = 8
    batch_size: int = 500
    with_log_summary: bool = False
    wait: float = 0.0
    lock: bool = True
    max_runtime: float | None = None
    max_credits: int | None = None
    reserve: int = 0
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
    high_water_mark: datetime | None = None
    errors: list[dict] = dataclasses.field(default_factory=list)

    @property
    def exit_code(self) -> int:
        if self.outcome == "auth_failed":
            return 3
        if self.outcome in ("ok", "budget") and not (self.failed or self.not_found):
            return 0
        return 1

    def add_batch(self, result: BatchResult) -> None:
        self.inserted += len(result.inserted)
        self.updated += len(result.updated)
        self.unchanged += len(result.unchanged)
        self.stale += len(result.stale)

    def line(self) -> str:
        verb = "would be " if self.dry_run else ""
        text = (f"{self.mode}: requested {self.requested}, {verb}inserted {self.inserted}, "
                f"{verb}updated {self.updated}, unchanged {self.unchanged}, stale {self.stale}, "
                f"not found {self.not_found}, failed {self.failed}; "
                f"{self.credits_used} API credits, {self.seconds:.1f}s")
        if self.outcome != "ok":
            text += f" [{self.outcome}" + (f": {self.message}]" if self.message else "]")
        return ("dry run: " if self.dry_run else "") + text

    def as_dict(self) -> dict[str, Any]:
        data = dataclasses.asdict(self)
        data["exit_code"] = self.exit_code
        data["errors"] = self.errors[:100]
        return data


def make_client(settings: Settings, options: SyncOptions) -> XplentyClient:
    settings.require_api()
    deadline = time.monotonic() + options.max_runtime if options.max_runtime else None
    return XplentyClient(settings.api_url, settings.account, settings.api_key, deadline=deadline,
                         reserve=options.reserve, max_credits=options.max_credits)


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
        self.pending: list[tuple[Any, int | None]] = []

    def fail(self, job_id: int | None, exc: BaseException) -> None:
        row = error_row(job_id, exc)
        if isinstance(exc, NotFound):
            self.summary.not_found += 1
        else:
            self.summary.failed += 1
        log.warning("job %s: %s", job_id, row["message"])
        self.summary.errors.append(row)

    def parse(self, raw: Any, expected_id: int | None = None, print_: Fingerprint | None = None) -> Job | None:
        try:
            return parse_job(raw, expected_id=expected_id, fingerprint=print_)
        except InvalidPayload as bad:
            self.fail(bad.job_id if bad.job_id is not None else expected_id, bad)
            return None

    def add(self, raw: Any, expected_id: int | None = None) -> None:
        """Queue a raw payload (and the id it was asked for); a full batch is written."""
        self.pending.append((raw, expected_id))
        if len(self.pending) >= self.options.batch_size:
            self.flush()

    def flush(self) -> None:
        batch, self.pending = self.pending, []
        jobs = self.parse_changed(batch)
        if jobs:
            self.write(jobs)
        elif batch and self.options.progress:
            self.options.progress(self.summary)

    def parse_changed(self, batch: list[tuple[Any, int | None]]) -> list[Job]:
        """Unchanged-skip: a payload whose fingerprint equals the stored snapshot's costs one
        batched read; only the others are validated and parsed."""
        prints = [fingerprint(raw) for raw, _ in batch]
        stored = self.archive.stored_hashes([p.id for p in prints if p is not None])
        jobs = []
        for (raw, expected_id), print_ in zip(batch, prints):
            if print_ is not None and stored.get(print_.id) == print_.hash and expected_id in (None, print_.id):
                self.summary.unchanged += 1
                continue
            job = self.parse(raw, expected_id, print_)
            if job is not None:
                jobs.append(job)
        return jobs

    def write(self, batch: list[Job], after: Callable | None = None) -> None:
        """Write a batch whole; `after(conn)` (the bookmark) commits with it or not at all.

        A failed batch without a bookmark falls back to job-by-job writes, so one bad
        job never sinks its neighbours; with a bookmark the error stops the run.
        """
        if self.options.dry_run:
            self.summary.add_batch(self.archive.plan(batch))
            return
        try:
            self.summary.add_batch(self.archive.write_jobs(batch, self.summary.run_id, after=after))
        except Exception as exc:
            if after is not None:
                raise
            if len(batch) == 1:
                self.fail(batch[0].id, exc)
                return
            log.warning("batch of %d failed (%s); writing job by job", len(batch), describe_error(exc))
            for job in batch:
                self.write([job])
        if self.options.progress:
            self.options.progress(self.summary)


# -- by id ----------------------------------------------------------------------------------------
def fetch_by_id(client: XplentyClient, ids: Iterable[int], concurrency: int,
                with_log_summary: bool) -> Iterator[tuple[int, dict | None, BaseException | None]]:
    """Get each job, up to `concurrency` at a time, yielding results as they arrive.

    The first request goes alone (a refused key costs one request, not `concurrency`);
    the pool narrows when 429s appear or the rate budget runs low.
    """

    def one(job_id: int) -> dict:
        return client.get_job(job_id, include_log_summary=with_log_summary)

    todo = iter(ids)
    limit = AdaptiveLimit(client, concurrency)
    with ThreadPoolExecutor(max_workers=max(1, concurrency), thread_name_prefix="fetch") as pool:
        running: dict[Future, int] = {}
        first = next(todo, None)
        if first is not None:
            running[pool.submit(one, first)] = first
        try:
            while running:
                done, _ = wait(running, return_when=FIRST_COMPLETED)
                for future in done:
                    job_id = running.pop(future)
                    exc = future.exception()
                    yield job_id, (None if exc else future.result()), exc
                room = limit.current()
                while len(running) < room:
                    nxt = next(todo, None)
                    if nxt is None:
                        break
                    running[pool.submit(one, nxt)] = nxt
        finally:
            for future in running:
                future.cancel()


class AdaptiveLimit:
    """Requests in flight: halved on each new 429 or when the remaining credits run low,
    grown back by one per round of answers while the API is content."""

    def __init__(self, client: XplentyClient, ceiling: int):
        self.client, self.ceiling, self.value = client, max(1, ceiling), max(1, ceiling)
        self.seen_429 = client.usage.rate_limited

    def current(self) -> int:
        usage = self.client.usage
        low_budget = usage.remaining is not None and usage.remaining < max(4 * self.client.reserve, 100)
        if usage.rate_limited > self.seen_429 or low_budget:
            if usage.rate_limited > self.seen_429:
                log.info("rate limited: fetching %d at a time", max(1, self.value // 2))
            self.seen_429 = usage.rate_limited
            self.value = max(1, self.value // 2)
        elif self.value < self.ceiling:
            self.value += 1
        return self.value


def archive_ids(run: Run, client: XplentyClient, ids: list[int], settings: Settings) -> None:
    answered_404 = seen = 0
    options = run.options
    for job_id, raw, exc in fetch_by_id(client, ids, options.concurrency, options.with_log_summary):
        seen += 1
        if isinstance(exc, FATAL):
            raise exc
        if exc is not None:
            answered_404 += isinstance(exc, NotFound)
            run.fail(job_id, exc)
            if seen == answered_404 == NOT_FOUND_PROBE:
                raise ConfigError(f"the first {NOT_FOUND_PROBE} jobs all answered 404: the account id "
                                  f"({settings.account!r}), the API URL or the Accept header is "
                                  "probably wrong")
            continue
        run.add(raw, expected_id=job_id)
    run.flush()


def sync_ids(settings: Settings, ids: list[int], options: SyncOptions,
             client: XplentyClient | None = None) -> SyncSummary:
    """Archive the named jobs (`archiver sync ID ...`)."""
    client = client or make_client(settings, options)
    summary = SyncSummary(mode="ids", requested=len(ids), dry_run=options.dry_run)
    return execute(settings, summary, options, client, lambda run: archive_ids(run, client, ids, settings))


# -- saved payloads -------------------------------------------------------------------------------
def ingest(settings: Settings, records: Iterable[Any], options: SyncOptions) -> SyncSummary:
    """Load saved job payloads through the same parse -> store path (`archiver ingest`)."""
    summary = SyncSummary(mode="ingest", dry_run=options.dry_run)

    def body(run: Run) -> None:
        for raw in records:
            summary.requested += 1
            if isinstance(raw, InvalidPayload):
                run.fail(None, raw)
                continue
            run.add(raw)
        run.flush()

    return execute(settings, summary, options, None, body)


# -- the frame every run shares -------------------------------------------------------------------
def execute(settings: Settings, summary: SyncSummary, options: SyncOptions, client: XplentyClient | None,
            body: Callable[[Run], None]) -> SyncSummary:
    """Run `body` under the account lock with a sync_runs row, however it ends."""
    started = time.monotonic()
    archive = Archive.open(settings.database_url, settings.account, create=not options.dry_run)
    try:
        with archive.run_lock(options.wait, enabled=options.lock):
            if not options.dry_run:
                summary.run_id = archive.start_run(summary.mode, summary.requested)
            run = Run(archive, summary, options)
            try:
                body(run)
                summary.outcome = "ok" if not (summary.failed or summary.not_found) else "partial"
            except AuthError as exc:
                summary.outcome, summary.message = "auth_failed", exc.message
                summary.errors.append(error_row(None, exc))
            except STOPPING as exc:
                run.flush()
                summary.outcome = "budget" if isinstance(exc, BudgetReached) else "stopped"
                summary.message = str(exc)
            except (ApiError, InvalidPayload) as exc:  # a List jobs page failed after its retries
                summary.outcome, summary.message = "stopped", str(exc)
                summary.errors.append(error_row(None, exc))
            except BaseException as exc:
                interrupted = isinstance(exc, KeyboardInterrupt)
                summary.outcome = "interrupted" if interrupted else "failed"
                summary.message = None if interrupted else describe_error(exc)
                raise
            finally:
                summary.seconds = time.monotonic() - started
                if client is not None:
                    usage = client.usage
                    summary.credits_used, summary.api_calls, summary.retries = \
                        usage.credits, usage.calls, usage.retries
                if summary.run_id is not None:
                    _finish_run(archive, summary)
    finally:
        if client is not None:
            client.close()
        archive.close()
    return summary


def _finish_run(archive: Archive, summary: SyncSummary) -> None:
    try:
        archive.finish_run(summary.run_id, summary.errors, outcome=summary.outcome,
                           message=summary.message, **{k: getattr(summary, k) for k in (
                               "requested", "inserted", "updated", "unchanged", "stale", "not_found",
                               "failed", "credits_used", "api_calls")})
    except Exception:  # the run row is bookkeeping; never hide the run's own result
        log.exception("could not record the run's outcome in sync_runs")


# -- job id arguments -----------------------------------------------------------------------------
MAX_RANGE = 1_000_000


def parse_id_args(args: Iterable[str], lines: Iterable[str] = ()) -> list[int]:
    """Job ids from arguments (`157`, `100-200`) and id-file lines; duplicates dropped, order kept.

    Ids are plain ASCII digits (no signs, underscores, spaces or other scripts' digits).
    Every invalid token is listed in one ConfigError, raised before any request is made.
    """
    ids: dict[int, None] = {}
    bad: list[str] = []
    tokens = list(args) + [ln.split("#", 1)[0].strip() for ln in lines]
    for token in tokens:
        if token == "":
            continue
        try:
            ids.update(dict.fromkeys(_expand(token)))
        except ValueError as exc:
            bad.append(f"{token!r} ({exc})")
    if bad:
        raise ConfigError("invalid job id" + ("s" if len(bad) > 1 else "") + ": " + ", ".join(bad)
                          + "; job ids are positive integers of plain digits, ranges like 100-200")
    return list(ids)


def _expand(token: str) -> range | list[int]:
    low_text, dash, high_text = token.partition("-")
    if not dash:
        return [_positive(token)]
    low, high = _positive(low_text), _positive(high_text)
    if high < low:
        raise ValueError("the range ends before it starts")
    if high - low >= MAX_RANGE:
        raise ValueError(f"a range of more than {MAX_RANGE:,} ids")
    return range(low, high + 1)


def _positive(text: str) -> int:
    if not (text.isascii() and text.isdigit()):
        raise ValueError("not a plain number")
    value = int(text)
    if value <= 0 or value > 2 ** 63 - 1:
        raise ValueError("out of range")
    return value
