"""The cursor read: every List endpoint sorted by `updated` ascending, paged by the data.

The API documents `since` (objects updated at or after a time), `offset` and `limit`,
and a `Link` header; its one `Link` example carries only `offset` and `limit`, and moves
`offset` as if it counted pages where the parameter list says it counts objects. So the
read never follows a link and never trusts an offset across pages:

- each request asks `since=<cursor>` (the newest `updated_at` second seen so far); the
  objects already seen at that second are skipped by (id, updated_at), so a job that
  changes during the read simply shows up again later with its new time;
- only when a whole page shares the cursor's second does it need `offset` inside that
  second; the first such step asks `offset=1`, and a page that repeats what was seen
  says offset counts objects, one that does not says it counts pages;
- a second paged by offset is read once more at the end (an update in the middle of it
  shifts the offsets), and `hold` keeps the bookmark from passing it until then;
- a read ends on a short page that no `Link` says is followed by more, or on a page that
  brings nothing past the cursor; never because a `Link` was missing.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator
from datetime import datetime, timezone
from typing import Any

from archiver.client import Page
from archiver.jsonio import canonical_json
from archiver.parse import parse_timestamp

log = logging.getLogger(__name__)

PAGE_LIMIT = 100  # the API's largest page: 100 objects for one credit
ITEMS, PAGES = "items", "pages"  # what `offset` counts
RECHECKS = 3  # re-reads of a second paged by offset, until one brings nothing new


def iso_z(moment: datetime) -> str:
    return moment.astimezone(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def second_of(raw: Any) -> datetime | None:
    """The `updated_at` second of a raw object, or None when it has none we can read."""
    value = raw.get("updated_at") if isinstance(raw, dict) else None
    if not isinstance(value, str):
        return None
    try:
        return parse_timestamp(value).replace(microsecond=0)
    except ValueError:
        return None


def key_of(raw: Any) -> tuple:
    """What makes an object 'already seen': its id and updated_at (or its whole text)."""
    if isinstance(raw, dict) and isinstance(raw.get("id"), int):
        return raw["id"], raw.get("updated_at")
    return (canonical_json(raw),)


class CursorRead:
    """Pages of one List endpoint from `since` on; `fetch(params)` makes one List call.

    `params` are the endpoint's own filters (status, package_id, ...). `offset_counts`
    is what the server's `offset` turned out to count (ITEMS or PAGES), learnt when first
    needed; pass it on to the next read of the same server.
    """

    def __init__(self, fetch: Callable[[dict], Page], params: dict[str, Any], since: datetime | None,
                 limit: int = PAGE_LIMIT, offset_counts: str | None = None):
        self.fetch, self.params, self.limit = fetch, dict(params), limit
        self.cursor = since.replace(microsecond=0) if since else None
        self.offset_counts = offset_counts
        self.seen: set[tuple] = set()                   # keys met at the cursor's second
        self.paged: dict[datetime, set[tuple]] = {}     # seconds read by offset -> keys met there
        self.calls = 0
        self.more_announced = False   # the last answer's Link said rel="next"

    @property
    def hold(self) -> datetime | None:
        """The bookmark may not pass this second yet (None: no limit)."""
        return min(self.paged) if self.paged else None

    # -- the read ---------------------------------------------------------------------------------
    def pages(self) -> Iterator[list[Any]]:
        """Each page's objects not met before, in order. The read ends on a page that brings
        nothing past the cursor; then each second paged by offset is read again."""
        while True:
            page = self._get(self.cursor, 0)
            fresh = self._fresh(page)
            if fresh:
                yield fresh
            if len(page) < self.limit and not self.more_announced:
                break  # a short page is the end (unless a Link says otherwise)
            if self._advance(page):
                continue
            if self.cursor is None:
                log.warning("a full page without a readable updated_at: cannot page further by time")
                break
            second = self.cursor
            yield from self._through_second(second, page)
            if self.cursor is None or self.cursor <= second:
                break
        yield from self._recheck()

    def _advance(self, page: list[Any]) -> bool:
        """Move the cursor to the page's newest second when that is past the cursor."""
        newest = max(filter(None, map(second_of, page)), default=None)
        if newest is None or (self.cursor is not None and newest <= self.cursor):
            self.seen |= {key_of(r) for r in page if second_of(r) == self.cursor}
            return False
        self.cursor = newest
        self.seen = {key_of(r) for r in page if second_of(r) == newest}
        return True

    def _through_second(self, second: datetime, first_page: list[Any]) -> Iterator[list[Any]]:
        """`first_page` (since=second, no offset) lies wholly in `second`: step through the
        second by offset until a page reaches past it or ends."""
        log.info("more than %d objects updated at %s: paging inside that second", self.limit, iso_z(second))
        met = self.paged.setdefault(second, set())
        met |= self.seen
        while True:
            page = self._get(second, self._offset(len(met)), probe_against=first_page)
            fresh = self._fresh(page)
            if fresh:
                yield fresh
            met |= {key_of(r) for r in page if second_of(r) == second}
            beyond = [r for r in page if (second_of(r) or second) > second]
            if beyond:
                self.cursor = max(map(second_of, beyond))
                self.seen = {key_of(r) for r in page if second_of(r) == self.cursor}
                return
            if len(page) < self.limit:
                self.seen = set(met)
                return
            if not fresh:
                log.warning("paging inside %s brought nothing new: the API seems to ignore offset",
                            iso_z(second))
                self.seen = set(met)
                return

    def _offset(self, consumed: int) -> int:
        """The offset that skips `consumed` objects of the since-filtered list; while what
        offset counts is unknown, the probe offset=1."""
        if self.offset_counts is None:
            return 1
        return consumed if self.offset_counts == ITEMS else consumed // self.limit

    def _recheck(self) -> Iterator[list[Any]]:
        """Read each second paged by offset again until a pass brings nothing new (an update
        in the middle of that second shifts every offset after it); then the bookmark may
        pass it."""
        for second in sorted(self.paged):
            for _ in range(RECHECKS):
                found = list(self._second_again(second))
                yield from found
                if not found:
                    break
            del self.paged[second]

    def _second_again(self, second: datetime) -> Iterator[list[Any]]:
        met = self.paged[second]
        consumed = 0
        while True:
            page = self._get(second, self._offset(consumed) if consumed else 0)
            inside = [r for r in page if second_of(r) == second]
            fresh = list({key_of(r): r for r in inside if key_of(r) not in met}.values())
            met |= {key_of(r) for r in inside}
            if fresh:
                yield fresh
            consumed += len(inside)
            if len(inside) < len(page) or len(page) < self.limit:
                return

    # -- one call ---------------------------------------------------------------------------------
    def _get(self, since: datetime | None, offset: int, probe_against: list[Any] | None = None) -> list[Any]:
        params = {**self.params, "sort": "updated", "direction": "asc", "limit": self.limit}
        if since is not None:
            params["since"] = iso_z(since)
        if offset:
            params["offset"] = offset
        self.calls += 1
        answer = self.fetch(params)
        self.more_announced = answer.has_next
        items = answer.items
        if offset == 1 and self.offset_counts is None and probe_against is not None:
            first = {key_of(r) for r in probe_against}
            self.offset_counts = ITEMS if any(key_of(r) in first for r in items) else PAGES
            log.info("the API's offset counts %s", self.offset_counts)
        return items

    def _fresh(self, page: list[Any]) -> list[Any]:
        """The page's objects not met before at their second (nor twice on the page)."""
        fresh, keys = [], set()
        for raw in page:
            key = key_of(raw)
            if key in keys or key in self.seen or key in self.paged.get(second_of(raw), ()):
                continue
            keys.add(key)
            fresh.append(raw)
        return fresh
