"""Incremental runs through List jobs: the cursor read, the high-water mark, open jobs.

`archiver sync --incremental` and `--refresh-open`; the frame of a run (lock, sync_runs
row, batch writer, fetch loop) is archiver.flows.runs', the paged read flows.cursor's,
the bookmark flows.bookmark's; after the jobs an unfiltered run reads the catalog
(flows.catalog). The next page of List jobs is fetched while one is written
(flows.readahead, `SyncOptions.read_ahead`); the refresh by listing reads in turn, as it
stops once it met every open job.
"""

from __future__ import annotations

import dataclasses
import logging
import math
from datetime import datetime

from archiver.client import XplentyClient
from archiver.config import Settings
from archiver.flows.bookmark import Bookmark
from archiver.flows.catalog import archive_catalog
from archiver.flows.cursor import PAGE_LIMIT, CursorRead
from archiver.flows.readahead import read_pages
from archiver.flows.runs import Run, SyncOptions, SyncSummary, execute, make_client
from archiver.records import JobRecord

log = logging.getLogger(__name__)


@dataclasses.dataclass
class IncrementalOptions:
    since: datetime | None = None
    full: bool = False
    status: str | None = None
    package_id: int | None = None
    catalog: bool = True   # False: --no-catalog

    @property
    def filtered(self) -> bool:
        """A run for some jobs only: it neither refreshes open jobs nor reads the catalog."""
        return bool(self.status or self.package_id)

    @property
    def scope(self) -> str:
        """The bookmark's scope: '' for the whole account, else the filters."""
        parts = [f"status={self.status}" if self.status else "",
                 f"package_id={self.package_id}" if self.package_id else ""]
        return "&".join(p for p in parts if p)



def archive_incremental(run: Run, inc: IncrementalOptions) -> None:
    stored_mark = run.archive.read_mark(inc.scope)
    start = None if inc.full else (inc.since or stored_mark)
    may_advance = inc.full or inc.since is None or stored_mark is None or inc.since <= stored_mark
    bookmark = Bookmark(run, inc.scope, stored_mark if may_advance else None, may_advance,
                        on_saved=run.summary.show_mark)
    filters = {"status": inc.status or "all", **({"package_id": inc.package_id} if inc.package_id else {})}
    reader = CursorRead(run.client.list_jobs, filters, start)
    brought: set[int] = set()
    with read_pages(reader, run.client, run.options.read_ahead) as pages:
        for raw_page, hold in pages:
            run.summary.requested += len(raw_page)
            jobs, clean = parse_page(run, raw_page)
            brought.update(j.id for j in jobs)
            save = bookmark.advance(jobs, clean, hold)
            if run.options.with_log_summary:
                jobs = add_log_summaries(run, jobs)
            run.write(jobs, after=save)
    bookmark.finish()
    if inc.filtered:
        return
    refresh_open(run, exclude=brought)
    if inc.catalog:
        archive_catalog(run, full=inc.full)


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

    The cheapest way wins: List jobs updated since the oldest open job's stored updated_at
    brings every open job (100 a credit) through the cursor read; when the open jobs are
    fewer than the pages that would take, a Get per job is cheaper.
    """
    open_jobs = [(i, updated) for i, updated in run.archive.open_jobs() if i not in exclude]
    if not open_jobs:
        return
    log.info("refreshing %d stored jobs that are not finished", len(open_jobs))
    wanted = {i for i, _ in open_jobs}
    oldest = None if any(u is None for _, u in open_jobs) else min(u for _, u in open_jobs)
    pages_needed = math.ceil(run.archive.count_updated_since(oldest) / PAGE_LIMIT) if oldest else math.inf
    if pages_needed < len(wanted):
        wanted -= _refresh_by_listing(run, wanted, oldest, pages_needed)
    run.summary.requested += len(wanted)
    run.archive_ids(sorted(wanted))


def _refresh_by_listing(run: Run, wanted: set[int], oldest: datetime, max_pages: int) -> set[int]:
    found: set[int] = set()
    reader = CursorRead(run.client.list_jobs, {"status": "all"}, oldest)
    for raw_page in reader.pages():
        run.summary.requested += len(raw_page)
        jobs = [j for j in (run.parse(raw) for raw in raw_page) if j is not None]
        found |= {j.id for j in jobs} & wanted
        run.write(jobs)
        if found == wanted or reader.calls > max_pages + 1:
            break
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

    def body(run: Run) -> None:
        run.client.rate_limit_status()  # free; a wrong account or key fails here, not silently
        refresh_open(run)

    return execute(settings, summary, options, client, body)
