"""The cursor read against an in-memory List endpoint that can play every reading of the
docs: offset counting objects or pages, Link headers or none, bursts of hundreds of jobs
in one second, and jobs updated while the pages are read. (Over real HTTP against the
sandbox: test_paging.py.)"""

import random
from datetime import datetime, timedelta, timezone

import pytest

from archiver.client import Page
from archiver.flows.cursor import ITEMS, PAGES, CursorRead

T0 = datetime(2026, 11, 1, tzinfo=timezone.utc)


def iso(moment: datetime) -> str:
    return moment.strftime("%Y-%m-%dT%H:%M:%SZ")


class FakeList:
    """List jobs as documented: `since` keeps objects updated at or after it, sorted by
    updated_at (ties in a stable server order), `offset` then `limit` (at most 100)."""

    def __init__(self, times: dict[int, datetime], offset_counts: str = ITEMS, links: bool = True,
                 on_call=None):
        self.times, self.offset_counts, self.links, self.on_call = dict(times), offset_counts, links, on_call
        self.calls = 0
        self.clock = max(times.values(), default=T0)

    def touch(self, ids, one_second: bool = True) -> None:
        """Update jobs now (in one second, or one second each): they move behind everything
        read so far."""
        for i in ids:
            if not one_second or i == ids[0]:
                self.clock += timedelta(seconds=1)
            self.times[i] = self.clock

    def __call__(self, params: dict) -> Page:
        self.calls += 1
        if self.on_call:
            self.on_call(self)
        since = datetime.strptime(params["since"], "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=timezone.utc) \
            if "since" in params else None
        ordered = sorted((t, i) for i, t in self.times.items() if since is None or t >= since)
        limit = min(int(params.get("limit", 20)), 100)
        offset = int(params.get("offset", 0))
        start = offset if self.offset_counts == ITEMS else offset * limit
        chosen = ordered[start:start + limit]
        items = [{"id": i, "updated_at": iso(t)} for t, i in chosen]
        return Page(items=items, has_next=self.links and start + limit < len(ordered))


def read_all(server: FakeList, since=None) -> list[dict]:
    reader = CursorRead(server, {"status": "all"}, since)
    return [item for page in reader.pages() for item in page]


def spread(n: int, gap: int = 7) -> dict[int, datetime]:
    return {i: T0 + timedelta(seconds=i * gap) for i in range(1, n + 1)}


@pytest.mark.parametrize("links", [True, False])
def test_every_job_once_in_about_n_over_100_calls(links):
    server = FakeList(spread(1000), links=links)
    got = read_all(server)
    assert sorted(j["id"] for j in got) == list(range(1, 1001))
    assert server.calls <= 11  # each page after the first re-asks the last second seen


@pytest.mark.parametrize("offset_counts", [ITEMS, PAGES])
@pytest.mark.parametrize("burst", [101, 250, 1000])
def test_hundreds_of_jobs_in_one_second(offset_counts, burst):
    times = spread(300) | {1000 + k: T0 + timedelta(seconds=1000) for k in range(burst)}
    server = FakeList(times, offset_counts=offset_counts)
    reader = CursorRead(server, {}, None)
    got = [item for page in reader.pages() for item in page]
    assert sorted(j["id"] for j in got) == sorted(times)
    assert len(got) == len({(j["id"], j["updated_at"]) for j in got})  # nothing twice
    assert server.calls <= 4 + 2 * -(-burst // 100)
    assert reader.offset_counts == offset_counts and reader.hold is None


def test_a_second_run_after_a_few_changes_costs_one_call_per_100_plus_one():
    """Changes at different seconds, as they come from a day of runs."""
    server = FakeList(spread(1000))
    first = CursorRead(server, {}, None)
    list(first.pages())
    mark = max(server.times.values())
    for changed in (5, 150, 200):
        server.touch(random.Random(changed).sample(range(1, 1001), changed), one_second=False)
        before = server.calls
        got = [j for page in CursorRead(server, {}, mark).pages() for j in page]
        assert {j["id"] for j in got} >= {i for i, t in server.times.items() if t > mark}
        assert server.calls - before <= -(-changed // 100) + 1
        mark = max(server.times.values())


@pytest.mark.parametrize("offset_counts", [ITEMS, PAGES])
def test_jobs_updated_while_the_pages_are_read_are_never_lost(offset_counts):
    """Random layouts with bursts of up to 400 jobs in one second (the newest among them);
    on random calls, jobs already read or not yet change, landing in a new second or in
    the burst second itself (before the read's position when their id is smaller)."""
    for seed in range(60):
        rng = random.Random(seed)
        times = {i: T0 + timedelta(seconds=rng.choice([i, i, i, 500, 900])) for i in range(1, 700)}
        touch_on = set(rng.sample(range(1, 25), 6))

        def on_call(server, rng=rng, touch_on=touch_on):
            if server.calls in touch_on:
                ids = rng.sample(range(1, 700), rng.randint(1, 4))
                if rng.random() < 0.3:  # into the newest second: a right shift of its offsets
                    for i in ids:
                        server.times[i] = server.clock
                else:
                    server.touch(ids)

        server = FakeList(times, offset_counts=offset_counts, on_call=on_call)
        reader = CursorRead(server, {}, None)
        got = [item for page in reader.pages() for item in page]
        assert_nothing_lost(server, got, reader), seed


def assert_nothing_lost(server: FakeList, got: list[dict], reader: CursorRead) -> None:
    """Each job's current version was read, or lies at or after the bookmark the read
    allows (so the next run reads it)."""
    newest = max(datetime.strptime(j["updated_at"], "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=timezone.utc)
                 for j in got)
    mark = min(newest, reader.hold) if reader.hold else newest
    read = {(j["id"], j["updated_at"]) for j in got}
    missed = {i: iso(t) for i, t in server.times.items() if (i, iso(t)) not in read and t < mark}
    assert missed == {}


def test_the_bookmark_is_held_before_a_second_paged_by_offset_until_it_is_checked_again():
    times = {k: T0 for k in range(250)} | {1000: T0 + timedelta(seconds=5)}
    reader = CursorRead(FakeList(times), {}, None)
    holds = [reader.hold for _ in reader.pages()]
    assert T0 in holds and reader.hold is None


def test_a_short_page_announced_as_not_the_last_is_followed():
    """A server that pages by 20 whatever limit says, with Link headers: read to the end."""
    class Small(FakeList):
        def __call__(self, params):
            return super().__call__({**params, "limit": 20})

    server = Small(spread(95))
    assert sorted(j["id"] for j in read_all(server)) == list(range(1, 96))
