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
- an update inside a second being paged by offset shifts the offsets after it; it shows
  (a page repeats more than its offset explains, or a job met in that second comes back
  with a newer time), and then the second is read again at the end; `hold` keeps the
  bookmark from passing any second paged by offset until the read is over;
- a read ends on a short page that no `Link` says is followed by more, or on a page that
  brings nothing past the cursor; never because a `Link` was missing.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator
from datetime import datetime, timedelta, timezone
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
        self.left: dict[int, datetime] = {}             # id -> the paged second it was met in
        self.shifted: set[datetime] = set()             # paged seconds to read again
        self.calls = 0
        self.more_announced = False   # the last answer's Link said rel="next"

    @property
    def hold(self) -> datetime | None:
        """The bookmark may not pass this second yet (None: no limit)."""
        return min(self.paged) if self.paged else None

    # -- the read ---------------------------------------------------------------------------------
    def pages(self) -> Iterator[list[Any]]:
        """Each page's objects not met before, in order: the read to the end, then the
        seconds where offsets shifted, each read again until a pass sees no job move."""
        yield from self._to_the_end()
        yield from self._recheck()

    def _to_the_end(self) -> Iterator[list[Any]]:
        """From the cursor until a short page (that no Link continues) or a page that
        brings nothing past the cursor."""
        while True:
            page = self._get(self.cursor, 0)
            fresh = self._fresh(page)
            if fresh:
                yield fresh
            if len(page) < self.limit and not self.more_announced:
                return
            if self._advance(page):
                continue
            if self.cursor is None:
                log.warning("a full page without a readable updated_at: cannot page further by time")
                return
            second = self.cursor
            yield from self._through_second(second, page)
            if self.cursor is None or self.cursor <= second:
                return

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
        second by offset until a page reaches past it or ends. Only the second's own objects
        are taken from these pages: when jobs left the second meanwhile, an offset overshoots
        into the next seconds, so the read goes on from the second after, without offset."""
        log.info("more than %d objects updated at %s: paging inside that second", self.limit, iso_z(second))
        met = self.paged.setdefault(second, set())
        met |= self.seen
        self.left.update((key[0], second) for key in met if len(key) == 2)
        while True:
            probing = self.offset_counts is None
            expected = 0 if self.offset_counts == ITEMS else len(met) % self.limit
            page = self._get(second, self._offset(len(met)), probe_against=first_page)
            inside = [r for r in page if second_of(r) == second]
            if not probing and sum(key_of(r) in met for r in inside) > expected:
                self.shifted.add(second)
            fresh = self._fresh(inside)
            if fresh:
                yield fresh
            met |= {key_of(r) for r in inside}
            self.left.update((r["id"], second) for r in inside if isinstance(r.get("id"), int))
            if len(inside) < len(page):
                self.cursor, self.seen = second + timedelta(seconds=1), set()
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
        """Read again each paged second where a job moved (every offset after it shifted),
        then the list's end again (where moved jobs land, showing further moves), until a
        pass sees no move. A second still moving keeps holding the bookmark: the next run
        starts there."""
        for second in sorted(self.paged):
            for _ in range(RECHECKS):
                if second not in self.shifted:
                    break
                log.info("jobs moved while %s was paged by offset: reading it again", iso_z(second))
                self.shifted.discard(second)
                yield from self._second_again(second)
                yield from self._to_the_end()
            if second in self.shifted:
                log.warning("jobs kept moving out of %s while it was read; the next run reads it again",
                            iso_z(second))
            else:
                del self.paged[second]

    def _second_again(self, second: datetime) -> Iterator[list[Any]]:
        met = self.paged[second]
        consumed = 0
        while True:
            page = self._get(second, self._offset(consumed) if consumed else 0)
            inside = [r for r in page if second_of(r) == second]
            fresh = list({key_of(r): r for r in inside if key_of(r) not in met}.values())
            met |= {key_of(r) for r in inside}
            self.left.update((r["id"], second) for r in inside if isinstance(r.get("id"), int))
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
        """The page's objects not met before at their second (nor twice on the page). A job
        met in a paged second that comes back with another time moved out of it."""
        fresh, keys = [], set()
        for raw in page:
            key = key_of(raw)
            if key in keys or key in self.seen or key in self.paged.get(second_of(raw), ()):
                continue
            keys.add(key)
            fresh.append(raw)
            moved_from = self.left.get(key[0]) if len(key) == 2 else None
            if moved_from is not None and moved_from != second_of(raw):
                self.shifted.add(moved_from)
        return fresh
