"""The catalog read of `sync --incremental`: schedules, packages and clusters from their own
List endpoints, after the jobs, in every unfiltered run (`--no-catalog` skips it).

- Schedules and packages: the cursor read (flows.cursor) with `since`, each with its own
  bookmark in sync_state (CATALOG_READS' scopes), committed with the page it covers. Packages
  are two reads: the API lists active or archived packages, one or the other per call.
- Clusters: List clusters documents only `status`, `offset` and `limit` (no `since`, no
  `sort`), so every run pages through all of them by offset (an account has few) and writes
  only what changed. Offset may count objects or pages (see api-notes): a full first page
  is followed by offset=1, and whether that repeats objects says which. A cluster an offset
  shift skips is read by the next run, which reads them all again.

Each object is written by "newer updated_at wins" (store.decide_listed); an unchanged one
costs no write. Calls and credits are the run's like the job calls (sync_runs), under the
same deadline, stop event and rate budget (the client's).

A failing read (an API error after its retries, a 404 from an account without the
endpoint, a body that is not an array of objects, a database error) is recorded in
sync_errors (job_id NULL; the message names the list) and the next read goes on: the jobs
are committed already, and the run ends `partial` (exit 1) as for a job that failed. An
invalid object is recorded (kind, id and field) and skipped; its read's bookmark stays
before it, so the next run reads it again. What ends a run (auth, deadline, budget, rate
limit, a stop, a lost lock, a full disk) ends it here too, keeping what was written.
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Callable, Iterator
from typing import Any

from sqlalchemy.exc import SQLAlchemyError

from archiver.client import Page
from archiver.errors import ApiError, InvalidPayload, NotFound
from archiver.flows.bookmark import Bookmark
from archiver.flows.cursor import ITEMS, PAGE_LIMIT, PAGES, CursorRead, key_of
from archiver.flows.runs import FATAL, STOP_WRITING, Run, error_row
from archiver.parse import CATALOG_PARSERS
from archiver.records import WRITE_OUTCOMES, CatalogCounts, CatalogRecord

log = logging.getLogger(__name__)


@dataclasses.dataclass(frozen=True)
class CatalogRead:
    kind: str                # the List endpoint: schedules, packages or clusters
    params: dict[str, Any]   # its filters
    scope: str | None        # the bookmark's sync_state scope; None: read whole every run

    @property
    def name(self) -> str:
        status = self.params.get("status")
        return f"List {self.kind}" + (f" ({status})" if self.kind == "packages" else "")


CATALOG_READS = (
    CatalogRead("schedules", {"status": "all"}, "catalog:schedules"),
    CatalogRead("packages", {"flow_type": "all", "status": "active"}, "catalog:packages:active"),
    CatalogRead("packages", {"flow_type": "all", "status": "archived"}, "catalog:packages:archived"),
    CatalogRead("clusters", {}, None),
)
READ_FAILURES = (ApiError, InvalidPayload, SQLAlchemyError)


def archive_catalog(run: Run, full: bool = False) -> None:
    """Every catalog read in turn; `full` (sync --full) reads from the beginning."""
    for read in CATALOG_READS:
        counts = run.summary.catalog.setdefault(read.kind, CatalogCounts())
        try:
            if read.scope is None:
                read_whole(run, read, counts)
            else:
                read_since(run, read, counts, full)
        except (*FATAL, *STOP_WRITING):
            raise
        except READ_FAILURES as exc:
            record_failed_read(run, read, counts, exc)


def read_since(run: Run, read: CatalogRead, counts: CatalogCounts, full: bool) -> None:
    stored_mark = run.archive.read_mark(read.scope)
    bookmark = Bookmark(run, read.scope, stored_mark, may_advance=True)
    reader = CursorRead(lister(run, read.kind), read.params, None if full else stored_mark)
    for raw_page in reader.pages():
        records, clean = parse_objects(run, read.kind, raw_page, counts)
        write(run, read.kind, records, counts, after=bookmark.advance(records, clean, reader.hold))
    bookmark.finish()


def read_whole(run: Run, read: CatalogRead, counts: CatalogCounts) -> None:
    for raw_page in offset_pages(lister(run, read.kind), read.params):
        records, _ = parse_objects(run, read.kind, raw_page, counts)
        write(run, read.kind, records, counts)


def lister(run: Run, kind: str) -> Callable[[dict], Page]:
    return lambda params: run.client.list_page(kind, params)


def offset_pages(fetch: Callable[[dict], Page], params: dict[str, Any], limit: int = PAGE_LIMIT
                 ) -> Iterator[list[Any]]:
    """Every object of a list that pages only by offset and limit, each once. The first full
    page is followed by offset=1: objects repeated mean offset counts objects, else pages.
    Ends on a short page no Link continues, or on a page that brings nothing new."""
    seen: set[tuple] = set()
    offset, offset_counts = 0, None
    while True:
        answer = fetch({**params, "limit": limit, **({"offset": offset} if offset else {})})
        page = answer.items
        if offset == 1 and offset_counts is None:
            offset_counts = ITEMS if any(key_of(r) in seen for r in page) else PAGES
        fresh = list({key_of(r): r for r in page if key_of(r) not in seen}.values())
        seen.update(key_of(r) for r in page)
        if fresh:
            yield fresh
        if (len(page) < limit and not answer.has_next) or not fresh:
            return
        offset = 1 if offset_counts is None else offset + (len(page) if offset_counts == ITEMS else 1)


def parse_objects(run: Run, kind: str, raw_page: list[Any], counts: CatalogCounts
                  ) -> tuple[list[CatalogRecord], list[CatalogRecord] | None]:
    """The page's valid objects, and (when some object is not) the valid ones before it."""
    parse = CATALOG_PARSERS[kind]
    records: list[CatalogRecord] = []
    clean: list[CatalogRecord] | None = None
    for raw in raw_page:
        try:
            records.append(parse(raw))
        except InvalidPayload as bad:
            counts.errors += 1
            run.summary.errors.append(error_row(None, bad))
            log.warning("%s", bad)
            if clean is None:
                clean = list(records)
    return records, clean


def write(run: Run, kind: str, records: list[CatalogRecord], counts: CatalogCounts,
          after: Callable | None = None) -> None:
    archive = run.archive
    if run.options.dry_run:
        result = archive.plan_catalog(kind, records)
    else:
        result = archive.write_catalog(kind, records, after=after)
    for outcome in WRITE_OUTCOMES:
        setattr(counts, outcome, getattr(counts, outcome) + len(getattr(result, outcome)))


def record_failed_read(run: Run, read: CatalogRead, counts: CatalogCounts, exc: BaseException) -> None:
    counts.errors += 1
    row = error_row(None, exc)
    hint = (" (HTTP 404: an account without this endpoint? `sync --no-catalog` skips the catalog)"
            if isinstance(exc, NotFound) else "")
    row["message"] = f"{read.name}: {row['message']}{hint}"
    run.summary.errors.append(row)
    log.warning("%s failed, the next run reads it again (the jobs are archived): %s", read.name, row["message"])
