"""Incremental runs through List jobs: the paged read, the high-water mark, open jobs.

`archiver sync --incremental` and `--refresh-open`; the frame of a run (lock, sync_runs
row, batch writer, fetch loop) is archiver.flows.runs'.
"""

from __future__ import annotations

import dataclasses
import logging
import math
from collections.abc import Callable, Iterator
from datetime import datetime, timezone
from typing import Any

from archiver.client import XplentyClient
from archiver.config import Settings
from archiver.flows.runs import Run, SyncOptions, SyncSummary, execute, make_client
from archiver.records import JobRecord

log = logging.getLogger(__name__)

PAGE_LIMIT = 100  # List jobs' maximum page size: 100 jobs for one credit


@dataclasses.dataclass
class IncrementalOptions:
    since: datetime | None = None
    full: bool = False
    status: str | None = None
    package_id: int | None = None

    @property
    def scope(self) -> str:
        """The bookmark's scope: '' for the whole account, else the filters."""
        parts = [f"status={self.status}" if self.status else "",
                 f"package_id={self.package_id}" if self.package_id else ""]
        return "&".join(p for p in parts if p)



def iso_z(moment: datetime) -> str:
    return moment.astimezone(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def floor_second(moment: datetime) -> datetime:
    return moment.replace(microsecond=0)


class PagedRead:
    """Pages of List jobs sorted by updated_at ascending, from `since` on.

    Follows the Link header (or offsets). An update landing during the read moves an
    already-read job to the end and shifts every later offset down by one, so the job
    at the next page boundary would be skipped. Such a job shows up again with a newer
    updated_at: then the read is repeated from the page boundary where it was first
    seen, and the bookmark is held there until that re-read is committed.
    """

    MAX_PASSES = 3

    def __init__(self, client: XplentyClient, since: datetime | None, status: str | None,
                 package_id: int | None):
        self.client, self.since, self.status, self.package_id = client, since, status, package_id

    def params(self, since: datetime | None, offset: int) -> dict:
        params: dict[str, Any] = {"sort": "updated", "direction": "asc", "limit": PAGE_LIMIT,
                                  "status": self.status or "all"}
        if since is not None:
            params["since"] = iso_z(since)
        if self.package_id is not None:
            params["package_id"] = self.package_id
        if offset:
            params["offset"] = offset
        return params

    def passes(self) -> Iterator[Iterator[list[dict]]]:
        since = self.since
        for _ in range(self.MAX_PASSES):
            self.rescan_from: datetime | None = None
            yield self._one_pass(since)
            if self.rescan_from is None:
                return
            log.info("jobs changed during the paged read; re-reading from %s", iso_z(self.rescan_from))
            since = floor_second(self.rescan_from)

    def _one_pass(self, since: datetime | None) -> Iterator[list[dict]]:
        offset, next_url = 0, None
        while True:
            page = self.client.list_jobs(self.params(since, offset), url=next_url)
            yield page.jobs
            if len(page.jobs) < PAGE_LIMIT or (page.paged_by_links and not page.next_url):
                return
            offset += len(page.jobs)
            next_url = page.next_url


def page_mark(jobs: list[JobRecord]) -> datetime | None:
    marks = [j.updated_at for j in jobs if j.updated_at is not None]
    return max(marks) if marks else None


def archive_incremental(run: Run, inc: IncrementalOptions) -> None:
    stored_mark = run.archive.read_mark(inc.scope)
    start = None if inc.full else (inc.since or (floor_second(stored_mark) if stored_mark else None))
    may_advance = inc.full or inc.since is None or stored_mark is None or inc.since <= stored_mark
    bookmark = Bookmark(run, inc.scope, stored_mark if may_advance else None, may_advance)
    reader = PagedRead(run.client, start, inc.status, inc.package_id)
    brought: set[int] = set()
    for pages in reader.passes():
        seen: dict[int, tuple[datetime | None, datetime | None]] = {}  # id -> (updated_at, page mark)
        for raw_page in pages:
            run.summary.requested += len(raw_page)
            jobs, clean = parse_page(run, raw_page)
            _note_reappearances(reader, seen, jobs, page_mark(jobs))
            brought.update(j.id for j in jobs)
            save = bookmark.advance(jobs, clean, reader.rescan_from)
            if run.options.with_log_summary:
                jobs = add_log_summaries(run, jobs)
            run.write(jobs, after=save)
    if not (inc.status or inc.package_id):
        refresh_open(run, exclude=brought)


class Bookmark:
    """Where the high-water mark may go after each page: to the page's newest updated_at,
    but never past a job that could not be archived (then it stays before it for the rest
    of the run) nor past a page boundary that must be re-read."""

    def __init__(self, run: Run, scope: str, saved: datetime | None, may_advance: bool):
        self.run, self.scope, self.saved, self.may_advance = run, scope, saved, may_advance
        self.frozen = False

    def advance(self, jobs: list[JobRecord], clean: list[JobRecord] | None,
                rescan_from: datetime | None) -> Callable | None:
        """The bookmark write to commit with this page's jobs, or None."""
        mark = page_mark(jobs)
        if not self.frozen and clean is not None:
            mark, self.frozen = (page_mark(clean) or self.saved), True
        elif self.frozen:
            mark = self.saved
        if rescan_from is not None and mark is not None:
            mark = min(mark, rescan_from)
        if not self.may_advance or mark is None or mark == self.saved or self.run.summary.dry_run:
            return None
        self.saved = mark
        archive, summary, scope = self.run.archive, self.run.summary, self.scope

        def save(conn) -> None:
            archive.save_mark(conn, mark, scope, summary.run_id)
            summary.high_water_mark = mark

        return save


def add_log_summaries(run: Run, jobs: list[JobRecord]) -> list[JobRecord]:
    """--with-log-summary: failed jobs without a stored log summary are fetched again with
    include=log_summary (a credit each); a job whose fetch fails keeps the page's version."""
    failed = [j.id for j in jobs if j.status == "failed" and j.log_summary is None]
    wanted = sorted(set(failed) - run.archive.ids_with_log_summary(failed))
    fuller: dict[int, JobRecord] = {}
    for job_id, raw in run.fetch(wanted, with_log_summary=True, record_errors=False):
        job = run.parse(raw, job_id)
        if job is not None:
            fuller[job_id] = job
    return [fuller.get(j.id, j) for j in jobs]


def _note_reappearances(reader: PagedRead, seen: dict, jobs: list[JobRecord], mark: datetime | None) -> None:
    """A job read again with a newer updated_at moved behind the read: re-read from where it was."""
    for job in jobs:
        earlier = seen.get(job.id)
        if earlier and job.updated_at and earlier[0] and job.updated_at > earlier[0]:
            boundary = earlier[1] or earlier[0]
            reader.rescan_from = min(reader.rescan_from or boundary, boundary)
    for job in jobs:
        seen[job.id] = (job.updated_at, mark)


def parse_page(run: Run, raw_page: list[dict]) -> tuple[list[JobRecord], list[JobRecord] | None]:
    """Parse a page: the jobs that are valid, and (when some job is not) those before it."""
    jobs: list[JobRecord] = []
    clean: list[JobRecord] | None = None
    for raw in raw_page:
        job = run.parse(raw)
        if job is None:
            if clean is None:
                clean = list(jobs)
            continue
        jobs.append(job)
    return jobs, clean


def refresh_open(run: Run, exclude: set[int] = frozenset()) -> None:
    """Re-fetch stored non-terminal jobs (a status change may not move updated_at).

    The cheapest way wins: open jobs are the newest ones, so List jobs by creation
    date, newest first, usually covers them all in one call; when the open jobs are
    fewer than the pages that would take, a Get per job is cheaper.
    """
    open_jobs = [(i, created) for i, created in run.archive.open_jobs() if i not in exclude]
    if not open_jobs:
        return
    log.info("refreshing %d stored jobs that are not finished", len(open_jobs))
    wanted = {i for i, _ in open_jobs}
    oldest = min((c for _, c in open_jobs if c is not None), default=None)
    pages_needed = math.ceil(run.archive.count_created_since(oldest) / PAGE_LIMIT) if oldest else math.inf
    if pages_needed < len(wanted):
        wanted -= _refresh_by_listing(run, wanted, oldest, pages_needed)
    run.summary.requested += len(wanted)
    run.archive_ids(sorted(wanted))


def _refresh_by_listing(run: Run, wanted: set[int], oldest: datetime,
                        max_pages: int) -> set[int]:
    found: set[int] = set()
    url = None
    for page_no in range(max_pages + 1):
        params = {"sort": "created", "direction": "desc", "limit": PAGE_LIMIT, "status": "all",
                  "offset": page_no * PAGE_LIMIT}
        page = run.client.list_jobs(params, url=url)
        run.summary.requested += len(page.jobs)
        jobs = [j for j in (run.parse(raw) for raw in page.jobs) if j is not None]
        found |= {j.id for j in jobs} & wanted
        run.write(jobs)
        created = [j.columns.get("created_at") for j in jobs if j.columns.get("created_at")]
        if found == wanted or len(page.jobs) < PAGE_LIMIT or (created and min(created) < oldest) \
                or (page.paged_by_links and not page.next_url):
            break
        url = page.next_url
    return found


def sync_incremental(settings: Settings, options: SyncOptions, inc: IncrementalOptions,
                     client: XplentyClient | None = None) -> SyncSummary:
    """Archive what changed since the bookmark through List jobs (`sync --incremental`)."""
    client = client or make_client(settings, options)
    summary = SyncSummary(mode="incremental", dry_run=options.dry_run)
    return execute(settings, summary, options, client, lambda run: archive_incremental(run, inc))


def sync_refresh_open(settings: Settings, options: SyncOptions,
                      client: XplentyClient | None = None) -> SyncSummary:
    """Re-fetch every stored job in a non-terminal state (`sync --refresh-open`)."""
    client = client or make_client(settings, options)
    summary = SyncSummary(mode="refresh_open", dry_run=options.dry_run)
    return execute(settings, summary, options, client, refresh_open)
