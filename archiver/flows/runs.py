"""The frame every sync run shares, and the one fetch loop.

A run: take the account lock, open a sync_runs row, fetch -> parse -> store in
batches, close the row with its counts and errors however it ends. by_id,
incremental and ingest each bring only their own way of finding payloads.
"""

from __future__ import annotations

import collections
import contextlib
import dataclasses
import logging
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from datetime import datetime
from typing import Any

from sqlalchemy import Connection

from archiver import anomaly
from archiver.client import MIB, RetryPolicy, XplentyClient
from archiver.config import SYNC_BATCH_SIZE, Settings, mask_url
from archiver.collector import collector_eased
from archiver.flows.anomalies import Scorer, list_unscored, score_unscored, store_scored, written_runs
from archiver.flows.scoring import IN_FLIGHT, ScoringWorker, Verdicts, worker_default
from archiver.flows.readahead import ahead
from archiver.errors import (ApiError, ArchiverError, AuthError, BudgetReached, ConfigError, DeadlineExceeded,
                             DiskFull, InvalidPayload, LostLock, NotFound, NoArchive, NotFoundFlood, RateLimited,
                             Stopped, TlsError, TooManyIds)
from archiver.parse import Fingerprint, fingerprint, parse_job
from archiver.records import CatalogCounts, JobRecord, RunCounts
from archiver.store import Archive, BatchResult, describe_error
from archiver.textsafe import safe_text

log = logging.getLogger(__name__)

FLOOD_WINDOW, FLOOD_SHARE = 500, 0.98  # this share of 404s among the last answers ends a by-id run
PAGE_OF_JOBS = 100   # jobs a List page holds: by-id answers read ahead per page of SyncOptions.read_ahead
Answer = tuple[int, dict | None, BaseException | None]   # a by-id request's job id, payload or error
STOPPING = (RateLimited, DeadlineExceeded, BudgetReached, NotFoundFlood, TooManyIds)  # end cleanly, keep what is stored
FATAL = (AuthError, TlsError, ConfigError, Stopped, *STOPPING)  # per-job errors that end the whole run
STOP_WRITING = (LostLock, DiskFull)  # a write that must not be retried in parts: the run ends


@dataclasses.dataclass
class SyncOptions:
    dry_run: bool = False
    concurrency: int = 8
    batch_size: int = SYNC_BATCH_SIZE
    with_log_summary: bool = False
    wait: float = 0.0
    lock: bool = True
    max_runtime: float | None = None
    max_credits: int | None = None
    reserve: int = 0
    max_response_mb: float = 8
    stop: threading.Event | None = None   # set on SIGTERM/Ctrl-C: requests and waits end at once
    progress: Callable[["SyncSummary"], None] | None = None
    anomalies: anomaly.Thresholds = anomaly.DEFAULTS   # the [anomalies] of the check config
    score_anomalies: bool = True   # off only to measure what scoring costs (bench/anomaly_overhead.py)
    read_ahead: int = 1   # pages of a cursor read fetched while one is written (flows.readahead), and of
                          # by-id answers (PAGE_OF_JOBS a page) while a batch is written; 0: in turn
    # a second process scores the batches while the run writes (flows.scoring) from the batch that
    # brings the run's jobs to this many; None: never (one CPU); 0: from the first batch on
    scoring_worker_after: int | None = dataclasses.field(default_factory=worker_default)


@dataclasses.dataclass
class SyncSummary(RunCounts):
    """The run's counts (as sync_runs stores them) and how it ended."""

    mode: str = "ids"
    retries: int = 0
    dry_run: bool = False
    outcome: str = "running"
    message: str | None = None
    run_id: int | None = None
    seconds: float = 0.0
    high_water_mark: datetime | None = None
    errors: list[dict] = dataclasses.field(default_factory=list)
    catalog: dict[str, CatalogCounts] = dataclasses.field(default_factory=dict)  # kind -> counts; {}: not read

    @property
    def catalog_errors(self) -> int:
        return sum(c.errors for c in self.catalog.values())

    @property
    def has_errors(self) -> bool:
        """Some job, or some catalog read or object, could not be archived."""
        return bool(self.errors_count or self.catalog_errors)

    @property
    def exit_code(self) -> int:
        if self.outcome == "auth_failed":
            return 3
        if self.outcome in ("ok", "budget") and not self.has_errors:
            return 0
        return 1

    def show_mark(self, mark: datetime) -> None:
        """The jobs' high-water mark, once committed."""
        self.high_water_mark = mark

    def line(self) -> str:
        """One line for a terminal: the message (API text) has its control characters escaped."""
        verb = "would be " if self.dry_run else ""
        text = (f"{self.mode}: requested {self.requested}, {verb}inserted {self.inserted}, "
                f"{verb}updated {self.updated}, unchanged {self.unchanged}, stale {self.stale}, "
                f"not found {self.not_found}, failed {self.failed}; "
                f"{self.credits_used} API credits, {self.seconds:.1f}s")
        if self.catalog:
            text += "; " + self.catalog_line()
        if self.outcome != "ok":
            text += f" [{self.outcome}" + (f": {safe_text(self.message)}]" if self.message else "]")
        return ("dry run: " if self.dry_run else "") + text

    def catalog_line(self) -> str:
        verb = "would be stored" if self.dry_run else "stored"
        stored = ", ".join(f"{self.catalog[kind].stored} {kind}" for kind in ("schedules", "packages", "clusters")
                           if kind in self.catalog)
        unchanged = sum(c.unchanged for c in self.catalog.values())
        errors = f", {self.catalog_errors} errors" if self.catalog_errors else ""
        return f"catalog: {stored} {verb} ({unchanged} unchanged{errors})"

    def as_dict(self) -> dict[str, Any]:
        data = dataclasses.asdict(self)
        data["exit_code"] = self.exit_code
        data["errors"] = self.errors[:100]
        return data


def make_client(settings: Settings, options: SyncOptions) -> XplentyClient:
    settings.require_api()
    deadline = time.monotonic() + options.max_runtime if options.max_runtime else None
    policy = RetryPolicy(max_response_bytes=int(options.max_response_mb * MIB))
    return XplentyClient(settings.api_url, settings.account, settings.api_key, deadline=deadline,
                         reserve=options.reserve, max_credits=options.max_credits, policy=policy,
                         stop=options.stop)


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
    """One run against the archive: counts, errors, the batch writer and the fetch loop."""

    def __init__(self, archive: Archive, summary: SyncSummary, options: SyncOptions,
                 client: XplentyClient | None = None):
        self.archive, self.summary, self.options, self.client = archive, summary, options, client
        self.pending: list[tuple[Any, int | None]] = []   # payloads not yet checked
        self.staged: list[JobRecord] = []   # changed jobs not yet written (Run.stage)
        self.staged_ids: set[int] = set()
        self.missing: list[int] = []   # ids the API answered 404 for (logged once, as ranges)
        # an ingest with an account gives it to jobs an earlier ingest stored without one; asked
        # once (jobs this run stores get the account), so no other run pays a query per batch
        self.scorer = Scorer(archive, options.anomalies) if options.score_anomalies and not options.dry_run else None
        self.worker: ScoringWorker | None = None   # scores the batches once this run scored enough itself
        self.worker_after = options.scoring_worker_after if self.scorer is not None and archive.shared_url() else None
        self.scored_here = 0   # newly finished jobs this process scored
        self.arrived: list[Verdicts] = []   # the worker's answers, stored with the next batch
        self.storing = 0   # how many of them the batch being written stores
        self.deadline = (client.deadline if client is not None
                         else time.monotonic() + options.max_runtime if options.max_runtime else None)
        self.claim = (summary.mode == "ingest" and bool(archive.account) and not options.dry_run
                      and archive.has_unowned_jobs())

    def fail(self, job_id: int | None, exc: BaseException) -> None:
        row = error_row(job_id, exc)
        if isinstance(exc, NotFound):
            self.summary.not_found += 1
            self.missing.append(job_id)
            log.debug("job %s: not found", job_id)
        else:
            self.summary.failed += 1
            log.warning("job %s: %s", job_id, row["message"])
        self.summary.errors.append(row)

    def report_missing(self) -> None:
        if self.missing:
            log.warning("not found (404): %d jobs: %s", len(self.missing), id_ranges(self.missing))

    # -- fetch ------------------------------------------------------------------------------------
    def fetch(self, ids: Iterable[int], *, with_log_summary: bool = False, record_errors: bool = True,
              probe_404: bool = False) -> Iterator[tuple[int, dict]]:
        """Raw payloads of `ids` as they arrive (the one fetch loop of every mode).

        An error that ends the run (auth, TLS, deadline, budget, rate limit) is raised. Any
        other is recorded against its job, or only skipped when `record_errors` is False
        (a fuller re-fetch whose job is already stored). With `probe_404`, a 404 before any
        job was found is checked with one List call (a wrong account or URL is a ConfigError),
        and a flood of 404s (FLOOD_SHARE of the last FLOOD_WINDOW answers) ends the run.
        """
        answers = fetch_by_id(self.client, ids, self.options.concurrency, with_log_summary)
        yield from self._checked(self._ahead_once_found(answers), record_errors, probe_404)

    def _ahead_once_found(self, answers: Iterator[Answer]) -> Iterator[Answer]:
        """The answers in turn until a job is found (a refused key, a wrong account or a first
        404 is judged on one request, as ever), then read ahead by a thread of their own, at
        most `read_ahead` pages' worth of jobs (PAGE_OF_JOBS each) ahead of the writer, so the
        requests go on while a batch is written (flows.readahead)."""
        with contextlib.closing(answers):
            for answer in answers:
                yield answer
                if answer[2] is None:
                    break
            else:
                return
            with ahead(answers, self.client, self.options.read_ahead * PAGE_OF_JOBS) as rest:
                yield from rest

    def _checked(self, answers: Iterator[Answer], record_errors: bool, probe_404: bool) -> Iterator[tuple[int, dict]]:
        """fetch's answers, errors recorded or raised as it says."""
        found, account_checked, recent = False, False, collections.deque(maxlen=FLOOD_WINDOW)
        for job_id, raw, exc in answers:
            if isinstance(exc, FATAL):
                raise exc
            recent.append(isinstance(exc, NotFound))
            if exc is None:
                found = True
                yield job_id, raw
                continue
            if not record_errors:
                continue
            self.fail(job_id, exc)
            if probe_404 and isinstance(exc, NotFound):
                if not (found or account_checked):
                    account_checked = True
                    if not self.client.account_answers():
                        raise self.client.account_not_found("Get job")
                if len(recent) == FLOOD_WINDOW and sum(recent) >= FLOOD_SHARE * FLOOD_WINDOW:
                    raise NotFoundFlood(f"{sum(recent)} of the last {FLOOD_WINDOW} jobs asked for do not exist "
                                        f"(last: {job_id}); stopping: are the ids right?")

    def archive_ids(self, ids: Iterable[int], *, with_log_summary: bool = False, probe_404: bool = False) -> None:
        """Fetch these jobs and write them in batches."""
        for job_id, raw in self.fetch(ids, with_log_summary=with_log_summary, probe_404=probe_404):
            self.add(raw, expected_id=job_id)
        self.flush()

    # -- parse and write --------------------------------------------------------------------------
    def parse(self, raw: Any, expected_id: int | None = None,
              print_: Fingerprint | None = None) -> JobRecord | None:
        try:
            return parse_job(raw, expected_id=expected_id, fingerprint=print_)
        except InvalidPayload as bad:
            self.fail(bad.job_id if bad.job_id is not None else expected_id, bad)
            return None

    def add(self, raw: Any, expected_id: int | None = None) -> None:
        """Queue a raw payload (and the id it was asked for). A full batch of payloads is
        checked against the stored fingerprints; a full batch of changed jobs is written."""
        self.pending.append((raw, expected_id))
        if len(self.pending) >= self.options.batch_size:
            self.stage(self.parse_changed(self._take_pending()))

    def flush(self) -> None:
        """Write everything queued: the end of a run's payloads (or of a part of them)."""
        self.stage(self.parse_changed(self._take_pending()))
        self.write_staged()

    def _take_pending(self) -> list[tuple[Any, int | None]]:
        batch, self.pending = self.pending, []
        return batch

    def stage(self, jobs: list[JobRecord]) -> None:
        """Gather changed jobs until a batch of them is full, then write it.

        A re-sync where 1 % changed finds 5 changed jobs in each batch of 500 payloads: written
        as they came, each 5 cost a whole transaction (the stored rows read, upserts, children
        replaced, rollups recounted, a commit), about 10 ms on PostgreSQL. Gathered, they cost
        one per 500. A job already gathered is written before another snapshot of it is taken,
        so the later one is judged against the earlier one as stored, as in turn. Nothing that
        moves a bookmark waits here: the pages of List jobs are written whole (`write`)."""
        wrote = False
        for job in jobs:
            if job.id in self.staged_ids:
                wrote |= self.write_staged()
            self.staged.append(job)
            self.staged_ids.add(job.id)
            if len(self.staged) >= self.options.batch_size:
                wrote |= self.write_staged()
        if not wrote and self.options.progress:   # a write reports progress itself
            self.options.progress(self.summary)

    def write_staged(self) -> bool:
        """Write the gathered jobs, if any; whether there were."""
        batch, self.staged, self.staged_ids = self.staged, [], set()
        if batch:
            self.write(batch)
        return bool(batch)

    def parse_changed(self, batch: list[tuple[Any, int | None]]) -> list[JobRecord]:
        """Unchanged-skip: a payload whose fingerprint equals the stored snapshot's costs one
        batched read; only the others are validated and parsed."""
        prints = [fingerprint(raw) for raw, _ in batch]
        ids = [p.id for p in prints if p is not None]
        stored = self.archive.stored_hashes(ids)
        if self.claim:
            self.archive.claim_unowned(ids)
        jobs = []
        for (raw, expected_id), print_ in zip(batch, prints):
            if (print_ is not None and stored.get(print_.id) == print_.hash and expected_id in (None, print_.id)
                    and print_.id not in self.staged_ids):   # else judged against the gathered snapshot
                self.summary.unchanged += 1
                continue
            job = self.parse(raw, expected_id, print_)
            if job is not None:
                jobs.append(job)
        return jobs

    def write(self, batch: list[JobRecord], after: Callable | None = None, halved: bool = False) -> None:
        """Write a batch whole; `after(conn)` (the bookmark) commits with it or not at all, and
        so do the anomaly verdicts on the jobs it finished (`scoring`).

        A failed batch without a bookmark is written again in halves, each halved again while
        it fails, down to the one job the database refuses: one bad job never sinks its
        neighbours, and costs about 2 × log2(batch) transactions rather than one per job of
        its batch (one warning for the batch; the job's error is recorded). With a bookmark the
        error stops the run.
        """
        if self.options.dry_run:
            self.archive.plan(batch).add_to(self.summary)
            return
        self.start_worker_for(batch)
        failures: list[BaseException] = []
        sent: list[tuple] = []   # for the worker: what the batch's transaction wrote and finished
        try:
            result = self.archive.write_jobs(batch, self.summary.run_id, after=after,
                                             then=self.scoring(batch, failures, sent))
        except STOP_WRITING:  # never retried in parts: nothing more is written
            raise
        except Exception as exc:
            if self.scorer is not None:
                self.scorer.forget()   # it may keep runs of jobs that were not written
            if after is not None:
                raise
            if len(batch) == 1:
                self.fail(batch[0].id, exc)
                return
            (log.debug if halved else log.warning)("batch of %d failed (%s); writing it again in halves",
                                                   len(batch), describe_error(exc))
            middle = len(batch) // 2
            self.write(batch[:middle], halved=True)
            self.write(batch[middle:], halved=True)
        else:
            result.add_to(self.summary)
            for exc in failures:
                self.scoring_failed(len(result.finished), exc)
            self.scored(result, sent)
        if self.options.progress:
            self.options.progress(self.summary)

    def scoring(self, records: list[JobRecord], failures: list[BaseException], sent: list[tuple]
                ) -> Callable[[Connection, BatchResult], None] | None:
        """Anomaly verdicts on the jobs a batch finished, in the batch's transaction under a
        savepoint: the jobs and their verdicts commit together (a run killed in between left
        jobs that no later run would score: they are not newly finished then), and a failure
        rolls back the verdicts only; it lands in `failures` (the last attempt's, as a
        transaction may be retried whole), and the run goes on: `archiver anomalies --rescore`
        computes the verdicts again.

        Once a worker scores (flows.scoring), the transaction instead lists the finished jobs in
        unscored_jobs and keeps what the worker is to be sent (`sent`) for after the commit; it
        also stores the verdicts the worker sent back since the last batch (`arrived`), so they
        cost no transaction of their own."""
        if self.scorer is None:
            return None
        scorer, worker = self.scorer, self.worker

        def score(conn: Connection, result: BatchResult) -> None:
            failures.clear()
            sent.clear()
            written = result.inserted + result.updated
            try:
                with conn.begin_nested():
                    if worker is None:
                        scorer.batch(conn, written, result.finished, result.inserted, records)
                    elif written:
                        fresh = written_runs(conn, written, result.inserted, records)
                        list_unscored(conn, result.finished, self.summary.run_id)
                        sent.append((fresh, result.finished, result.inserted))   # only once listed
            except STOP_WRITING:
                raise
            except Exception as exc:
                failures.append(exc)
            if worker is not None:
                self.store_arrived(conn)

        return score

    def store_arrived(self, conn: Connection) -> None:
        """The verdicts the worker sent back, stored and their jobs taken off unscored_jobs in
        `conn`'s transaction under a savepoint; forgotten once it commits (`scored`). If storing
        them fails, they are dropped with a warning: their jobs stay listed, and finish_scoring
        scores them (recording an error only if that fails too)."""
        arrived, self.storing = self.arrived, len(self.arrived)
        if not arrived:
            return
        try:
            with conn.begin_nested():
                for answer in arrived:
                    store_scored(conn, answer.scored, listed=True)
        except STOP_WRITING:
            raise
        except Exception as exc:
            log.warning("storing the anomaly verdicts of %d jobs failed (%s); this run scores them again at its end",
                        sum(len(answer.finished) for answer in arrived), describe_error(exc))

    def scored(self, result: BatchResult, sent: list[tuple]) -> None:
        """After a batch committed: send it to the worker, or count what this process scored."""
        if self.worker is not None:
            del self.arrived[:self.storing]   # stored (or dropped) with the batch that just committed
            self.storing = 0
            try:
                if sent:
                    self.worker.send(*sent[0])
                self.take_answers(IN_FLIGHT)
            except STOP_WRITING:
                raise
            except Exception as exc:   # WorkerGone, or an answer that made no sense
                self.worker_failed(exc)
            return
        self.scored_here += len(result.finished)

    def start_worker_for(self, batch: list[JobRecord]) -> None:
        """Start the worker before a batch that brings the jobs this run scored to
        `worker_after` (so a batch of that size on its own goes to the worker)."""
        if self.worker_after is None or self.scored_here + len(batch) < self.worker_after:
            return
        self.worker_after = None   # one worker a run: one that failed is not started again
        try:
            self.worker = ScoringWorker(self.archive.shared_url(), self.archive.account, self.options.anomalies)
        except Exception as exc:
            log.warning("could not start the scoring process (%s); this run scores by itself", describe_error(exc))
        else:
            self.scorer.forget()   # the worker keeps the runs now: ours would go stale

    def take_answers(self, in_flight: int) -> None:
        """The worker's answers, waiting until at most `in_flight` batches are out: kept to store
        with the next batch. A batch the worker could not score stays listed in unscored_jobs:
        finish_scoring scores it (and records an error only if that fails too)."""
        for answer in self.worker.answers_ready(in_flight, self.deadline, self.options.stop):
            if answer.scored is None:
                log.warning("the scoring process could not score %d jobs (%s); this run scores them at its end",
                            len(answer.finished), answer.error)
            else:
                self.arrived.append(answer)

    def store_answers_left(self) -> None:
        """What the worker answered after the last batch, in a transaction of its own."""
        try:
            if self.arrived:
                self.archive.transact(self.store_arrived)
        finally:
            self.arrived, self.storing = [], 0

    def worker_failed(self, exc: BaseException) -> None:
        log.warning("the scoring process failed (%s); this run scores the rest by itself", describe_error(exc))
        self.close_worker()
        self.scorer.forget()

    def close_worker(self) -> None:
        worker, self.worker = self.worker, None
        if worker is not None:
            worker.close(hurry=self.out_of_time())

    def finish_scoring(self) -> None:
        """At the end of a run: the worker's last answers stored (waiting no later than the
        deadline or a stop), then the jobs still listed in unscored_jobs (by a worker that
        failed, or a run killed before) scored here; left for the next run when out of time."""
        if self.worker is not None:
            try:
                self.take_answers(0)
            except STOP_WRITING:
                raise
            except Exception as exc:
                log.warning("the scoring process failed (%s); this run scores its jobs by itself", describe_error(exc))
            finally:
                self.close_worker()
        try:
            self.store_answers_left()
        except STOP_WRITING:
            raise
        except Exception as exc:   # their jobs stay listed: scored just below
            log.warning("storing the last anomaly verdicts failed (%s); this run scores them again", describe_error(exc))
        if self.scorer is None or self.out_of_time():
            return
        try:
            scored = score_unscored(self.archive, self.scorer)
        except STOP_WRITING:
            raise
        except Exception as exc:
            self.scoring_failed(None, exc)
        else:
            if scored:
                log.info("scored %d jobs that were waiting for their anomaly verdicts", scored)

    def out_of_time(self) -> bool:
        return ((self.options.stop is not None and self.options.stop.is_set())
                or (self.deadline is not None and time.monotonic() >= self.deadline))

    def scoring_failed(self, jobs: int | None, exc: BaseException) -> None:
        """A failed scoring is logged and recorded (sync_errors kind 'anomaly', no job)."""
        what = f"of {jobs} jobs " if jobs is not None else "of the jobs waiting for it "
        message = f"anomaly scoring {what}failed: {describe_error(exc)}"
        log.warning("%s; the jobs are stored (archiver anomalies --rescore scores them again)", message)
        log.debug("anomaly scoring failed", exc_info=exc)
        self.summary.errors.append({"job_id": None, "kind": "anomaly", "http_status": None, "field": None,
                                    "message": message})


# -- concurrent fetching --------------------------------------------------------------------------
def fetch_by_id(client: XplentyClient, ids: Iterable[int], concurrency: int,
                with_log_summary: bool) -> Iterator[Answer]:
    """Get each job, up to `concurrency` at a time, yielding (id, payload, error) as they arrive.

    The first request goes alone (a refused key costs one request, not `concurrency`);
    the pool narrows when 429s appear or the rate budget runs low.
    """

    def one(job_id: int) -> dict:
        return client.get_job(job_id, include_log_summary=with_log_summary)

    todo = iter(ids)
    ended: list[BaseException] = []   # the id source's own error (an id cap, a bad line): raised once
                                      # the requests in flight are answered

    def next_id() -> int | None:
        if ended:
            return None
        try:
            return next(todo, None)
        except ArchiverError as exc:
            ended.append(exc)
            return None

    limit = AdaptiveLimit(client, concurrency)
    with ThreadPoolExecutor(max_workers=max(1, concurrency), thread_name_prefix="fetch") as pool:
        running: dict[Future, int] = {}
        first = next_id()
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
                    nxt = next_id()
                    if nxt is None:
                        break
                    running[pool.submit(one, nxt)] = nxt
        finally:
            for future in running:
                future.cancel()
    if ended:
        raise ended[0]


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


# -- the frame every run shares -------------------------------------------------------------------
def execute(settings: Settings, summary: SyncSummary, options: SyncOptions, client: XplentyClient | None,
            body: Callable[[Run], None]) -> SyncSummary:
    """Run `body` under the account lock with a sync_runs row, however it ends."""
    started = time.monotonic()
    archive = open_archive(settings, options)
    try:
        with archive.run_lock(options.wait, enabled=options.lock), collector_eased():
            if not options.dry_run:
                summary.run_id = archive.start_run(summary.mode, summary.requested)
            run = Run(archive, summary, options, client)
            try:
                body(run)
                run.finish_scoring()
                summary.outcome = "partial" if summary.has_errors else "ok"
            except AuthError as exc:
                summary.outcome, summary.message = "auth_failed", exc.message
                summary.errors.append(error_row(None, exc))
            except STOP_WRITING as exc:
                _stopped_writing(summary, exc)
            except STOPPING as exc:
                summary.outcome = ("budget" if isinstance(exc, BudgetReached)
                                   else "deadline" if isinstance(exc, DeadlineExceeded) else "stopped")
                summary.message = str(exc)
                try:
                    run.flush()
                    run.finish_scoring()
                except STOP_WRITING as lost:
                    _stopped_writing(summary, lost)
            except (ApiError, InvalidPayload) as exc:  # a List jobs page failed after its retries
                summary.outcome, summary.message = "stopped", str(exc)
                summary.errors.append(error_row(None, exc))
            except BaseException as exc:
                interrupted = isinstance(exc, (KeyboardInterrupt, Stopped))
                summary.outcome = "interrupted" if interrupted else "failed"
                summary.message = None if interrupted else describe_error(exc)
                if interrupted or isinstance(exc, ArchiverError) or not isinstance(exc, Exception):
                    raise
                # anything else (a bug, a database gone): the run ends with its summary, exit 1;
                # the traceback only at --log-level debug
                log.debug("the run failed", exc_info=True)
                summary.errors.append(error_row(None, exc))
            finally:
                run.close_worker()
                run.report_missing()
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


def id_ranges(ids: Iterable[int], most: int = 20) -> str:
    """`10013-10099, 10200, 10305-10310`: ids as ranges, the first `most` of them."""
    runs: list[list[int]] = []
    for job_id in sorted(set(ids)):
        if runs and job_id == runs[-1][1] + 1:
            runs[-1][1] = job_id
        else:
            runs.append([job_id, job_id])
    text = ", ".join(str(a) if a == b else f"{a}-{b}" for a, b in runs[:most])
    return text + (f", ... ({len(runs) - most} more ranges)" if len(runs) > most else "")


def open_archive(settings: Settings, options: SyncOptions) -> Archive:
    """The run's archive. A dry run never creates or migrates one: with no archive there
    yet, it compares with an empty scratch archive (everything would be inserted)."""
    if not options.dry_run:
        return Archive.open(settings.database_url, settings.account)
    try:
        return Archive.open(settings.database_url, settings.account, create=False)
    except NoArchive:
        log.info("no archive at %s yet: the dry run compares with an empty one", mask_url(settings.database_url))
        return Archive.scratch(settings.account)


def _stopped_writing(summary: SyncSummary, exc: BaseException) -> None:
    """The run lost its lock (outcome lost_lock) or the database is full (failed): exit 1."""
    summary.outcome = "lost_lock" if isinstance(exc, LostLock) else "failed"
    summary.message = str(exc)


def _finish_run(archive: Archive, summary: SyncSummary) -> None:
    try:
        archive.finish_run(summary.run_id, summary, summary.outcome, summary.message, summary.errors)
    except Exception as exc:  # the run row is bookkeeping; never hide the run's own result
        log.error("could not record the run's outcome in sync_runs: %s", describe_error(exc))
        log.debug("recording the run's outcome failed", exc_info=True)
