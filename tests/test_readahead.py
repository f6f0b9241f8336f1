"""Reading ahead (issue 18): List jobs' next page is fetched while the current one is written.

What a user relies on: the same requests and the same archive as a read in turn; the mark
never covers a page that did not commit, whatever fails where; errors, the deadline and
SIGTERM end the run as they did; no thread outlives the run. The tests that fail a run at a
point wait (on events, never on time) until the reader really is a page ahead there.
"""

from __future__ import annotations

import json
import signal
import threading
import time

import pytest
from sqlalchemy import select

from archiver import models
from archiver.client import XplentyClient
from archiver.config import Secret
from archiver.errors import ApiError, Stopped
from archiver.flows.incremental import IncrementalOptions, sync_incremental
from archiver.flows.readahead import ReadAhead
from archiver.flows.runs import SyncOptions
from archiver.sandbox import Sandbox
from archiver.store import Archive
from tests.sandboxed import KEY, NOW, archiver_cmd, cli_env, run_archiver, settings_for, wait_parked

GUARD = 60   # seconds: only ever a guard against a hang, never a measurement


def incremental(api: Sandbox, db_url: str, depth: int, **options):
    return sync_incremental(settings_for(api, db_url), SyncOptions(read_ahead=depth, **options),
                            IncrementalOptions())


def readers_alive() -> list[threading.Thread]:
    return [t for t in threading.enumerate() if t.name == "read-ahead" and t.is_alive()]


def archive_state(api: Sandbox, db_url: str) -> dict:
    """The archive as a user compares it: jobs (payload text without the sandbox's address),
    marks, errors and outcomes of the runs."""
    archive = Archive.open(db_url)
    with archive.engine.connect() as conn:
        jobs = conn.execute(select(models.JobRow.id, models.JobRow.updated_at, models.JobRow.status,
                                   models.JobRow.payload).order_by(models.JobRow.id)).all()
        marks = conn.execute(select(models.SyncStateRow.scope, models.SyncStateRow.high_water_mark)
                             .order_by(models.SyncStateRow.scope)).all()
        errors = conn.execute(select(models.SyncErrorRow.job_id, models.SyncErrorRow.kind,
                                     models.SyncErrorRow.http_status, models.SyncErrorRow.message)
                              .order_by(models.SyncErrorRow.id)).all()
        outcomes = conn.execute(select(models.SyncRunRow.outcome).order_by(models.SyncRunRow.id)).scalars().all()
    archive.close()
    return {"jobs": [(i, u, s, json.dumps(p, sort_keys=True).replace(api.url, "API")) for i, u, s, p in jobs],
            "marks": [tuple(m) for m in marks], "errors": [tuple(e) for e in errors], "outcomes": list(outcomes)}


def stored_times(db_url: str) -> dict[int, object]:
    archive = Archive.open(db_url)
    with archive.engine.connect() as conn:
        rows = conn.execute(select(models.JobRow.id, models.JobRow.updated_at)).all()
    archive.close()
    return dict(rows)


def the_mark(db_url: str):
    archive = Archive.open(db_url, "sandbox")
    mark = archive.read_mark("")
    archive.close()
    return mark


def assert_mark_covers_exactly_what_is_stored(api: Sandbox, db_url: str) -> None:
    """Crash safety: no stored job is past the mark, the mark is no further than the stored
    jobs, and every job of the API before the mark is stored (a rerun from it loses none)."""
    stored, mark = stored_times(db_url), the_mark(db_url)
    if mark is None:
        assert stored == {}
        return
    assert max(stored.values()) == mark
    from archiver.parse import parse_timestamp
    before = {i for i in api.job_ids() if parse_timestamp(api.job(i)["updated_at"]) < mark}
    assert before <= set(stored)


class ListCalls:
    """Every List jobs call (its params, in order) and an event per call answered (with a page)."""

    def __init__(self, monkeypatch, before=None):
        self.params: list[dict] = []
        self.answered: list[threading.Event] = [threading.Event() for _ in range(200)]
        real = XplentyClient.list_page

        def list_page(client, resource, params):
            if resource != "jobs":
                return real(client, resource, params)
            self.params.append(dict(params))
            n = len(self.params)
            if before is not None:
                before(n)
            page = real(client, resource, params)
            self.answered[n].set()
            return page

        monkeypatch.setattr(XplentyClient, "list_page", list_page)

    def wait_answered(self, n: int) -> None:
        assert self.answered[n].wait(GUARD), f"List jobs call {n} never answered"


# -- the same requests, the same archive ---------------------------------------------------------
def record_marks(monkeypatch) -> list[tuple]:
    """Every mark committed with a page, in order: (scope, mark)."""
    marks: list[tuple] = []
    real = Archive.save_mark

    def save_mark(archive, conn, mark, scope="", run_id=None):
        marks.append((scope, mark))
        return real(archive, conn, mark, scope, run_id)

    monkeypatch.setattr(Archive, "save_mark", save_mark)
    return marks


def first_sync(api, db_url, depth):
    return [incremental(api, db_url, depth)]


def burst_then_sync(api, db_url, depth):
    """A second run that pages through 300 jobs updated in one second by offset."""
    first = incremental(api, db_url, depth)
    api.advance(60)
    api.touch(api.job_ids()[100:400])
    return [first, incremental(api, db_url, depth)]


SCENARIOS = {"first sync": (first_sync, "full", "items"),
             "a burst paged by offset (items)": (burst_then_sync, "minimal", "items"),
             "a burst paged by offset (pages)": (burst_then_sync, "none", "pages")}


@pytest.mark.parametrize("scenario", list(SCENARIOS))
def test_reading_ahead_makes_the_requests_and_moves_the_mark_of_a_read_in_turn(
        tmp_path, sqlite_template, monkeypatch, scenario):
    steps, link_style, offset_style = SCENARIOS[scenario]
    seen = {}
    for depth in (0, 1, 2):
        url = f"sqlite:///{tmp_path / f'{depth}.db'}"
        (tmp_path / f"{depth}.db").write_bytes(sqlite_template.read_bytes())
        with Sandbox(jobs=1000, seed=61, now=NOW, link_style=link_style, offset_style=offset_style) as api:
            calls, marks = ListCalls(monkeypatch), record_marks(monkeypatch)
            summaries = steps(api, url, depth)
            seen[depth] = (calls.params, marks, [(s.outcome, s.inserted, s.updated, s.unchanged) for s in summaries],
                           archive_state(api, url))
            monkeypatch.undo()
        assert all(s.exit_code == 0 for s in summaries)
    assert seen[1] == seen[0] and seen[2] == seen[0]
    if "burst" in scenario:
        assert any("offset" in p for p in seen[0][0])   # the read did page inside a second
    assert readers_alive() == []


def test_jobs_moving_during_the_read_give_the_same_requests_and_archive(tmp_path, sqlite_template, monkeypatch):
    """Jobs updated while the pages are read (already read ones, and ones not read yet)."""
    seen = {}
    for depth in (0, 1):
        url = f"sqlite:///{tmp_path / f'{depth}.db'}"
        (tmp_path / f"{depth}.db").write_bytes(sqlite_template.read_bytes())
        with Sandbox(jobs=1000, seed=62, now=NOW) as api:
            ids = api.job_ids()

            def touch(n):
                if n in (3, 6):   # before the 3rd and 6th List calls, wherever they are made
                    api.advance(1)
                    api.touch([ids[40], ids[41], ids[500], ids[900]])

            calls = ListCalls(monkeypatch, before=touch)
            assert incremental(api, url, depth).exit_code == 0
            monkeypatch.undo()
            seen[depth] = (calls.params, archive_state(api, url))
            assert [j[0] for j in seen[depth][1]["jobs"]] == ids
    assert seen[1] == seen[0]


# -- crash safety ----------------------------------------------------------------------------
def record_writes(monkeypatch) -> list[list[int]]:
    """The ids of each page handed to the archive's write, in order."""
    written: list[list[int]] = []
    real = Archive.write_jobs

    def write_jobs(archive, jobs, *args, **kwargs):
        written.append([j.id for j in jobs])
        return real(archive, jobs, *args, **kwargs)

    monkeypatch.setattr(Archive, "write_jobs", write_jobs)
    return written


class Boom(RuntimeError):
    pass


def fail_in_transaction(monkeypatch, page: int, calls: ListCalls) -> None:
    """The page's bookmark write raises inside its transaction, once the next page is read."""
    real, count = Archive.save_mark, []

    def save_mark(archive, conn, *args, **kwargs):
        real(archive, conn, *args, **kwargs)
        count.append(1)
        if len(count) == page:
            calls.wait_answered(page + 1)
            raise Boom("the database went away mid-commit")

    monkeypatch.setattr(Archive, "save_mark", save_mark)


def fail_before_write(monkeypatch, page: int, calls: ListCalls) -> None:
    """The page's write raises before it starts, once the next page is read."""
    real, count = Archive.write_jobs, []

    def write_jobs(archive, jobs, *args, **kwargs):
        count.append(1)
        if len(count) == page:
            calls.wait_answered(page + 1)
            raise Boom("the database went away")
        return real(archive, jobs, *args, **kwargs)

    monkeypatch.setattr(Archive, "write_jobs", write_jobs)


def fail_after_commit(monkeypatch, page: int, calls: ListCalls) -> dict:
    """The page commits; then (the progress line) something raises, once the next page is read."""
    count = []

    def progress(summary):
        count.append(1)
        if len(count) == page:
            calls.wait_answered(page + 1)
            raise Boom("the terminal went away")

    return {"progress": progress}


FAILURES = {"in the page's transaction": (fail_in_transaction, -1),
            "before the page's write": (fail_before_write, -1),
            "after the page's commit": (fail_after_commit, 0)}


FAILING_SANDBOX = dict(jobs=1000, seed=63, now=NOW)


@pytest.fixture(scope="module")
def read_in_turn(tmp_path_factory, sqlite_template) -> dict:
    """The archive a read in turn (depth 0, nothing failing) makes of FAILING_SANDBOX's API:
    the same for every failure below (their API does not change), so it is made once."""
    reference = tmp_path_factory.mktemp("read-in-turn") / "reference.db"
    reference.write_bytes(sqlite_template.read_bytes())
    with Sandbox(**FAILING_SANDBOX) as api:
        assert incremental(api, f"sqlite:///{reference}", 0).exit_code == 0
        return archive_state(api, f"sqlite:///{reference}")


@pytest.mark.parametrize("where", list(FAILURES))
@pytest.mark.parametrize("page", [1, 4, 9])
def test_a_failure_while_the_next_page_is_read_leaves_the_mark_with_the_pages_committed(
        sqlite_url, read_in_turn, monkeypatch, where, page):
    inject, committed_offset = FAILURES[where]
    with Sandbox(**FAILING_SANDBOX) as api:
        written = record_writes(monkeypatch)
        calls = ListCalls(monkeypatch)
        options = inject(monkeypatch, page, calls) or {}
        summary = incremental(api, sqlite_url, 1, **options)
        monkeypatch.undo()
        assert readers_alive() == []
        assert summary.outcome == "failed" and summary.exit_code == 1 and "Boom" in summary.message
        assert len(calls.params) > page   # the reader was a page ahead when the write failed
        committed = {i for batch in written[:page + committed_offset] for i in batch}
        assert set(stored_times(sqlite_url)) == committed
        assert_mark_covers_exactly_what_is_stored(api, sqlite_url)

        again = incremental(api, sqlite_url, 1)
        assert again.exit_code == 0
        ours = archive_state(api, sqlite_url)
        assert ours["jobs"] == read_in_turn["jobs"] and ours["marks"] == read_in_turn["marks"]


def test_killed_while_a_page_is_read_ahead_the_rerun_archives_each_job_once(sqlite_url):
    import subprocess

    with Sandbox(jobs=1000, seed=64, now=NOW) as api:
        api.hold_after(5, "list_jobs")   # the 6th List call waits: pages 1-5 read, the 5th maybe mid-write
        proc = subprocess.Popen(archiver_cmd("sync", "--incremental"), env=cli_env(api, sqlite_url),
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        try:
            wait_parked(api, proc)
            proc.kill()
            proc.communicate(timeout=GUARD)
        finally:
            api.release()
        assert 0 < len(stored_times(sqlite_url)) <= 500
        assert_mark_covers_exactly_what_is_stored(api, sqlite_url)
        again = run_archiver(api, sqlite_url, "sync", "--incremental")
        assert again.returncode == 0, again.stderr
        assert sorted(stored_times(sqlite_url)) == api.job_ids()


# -- errors, the deadline, SIGTERM ------------------------------------------------------------
def oversized_at(api: Sandbox, call: int):
    def before(n):
        if n == call:
            api.misbehave("oversized", "list_jobs", times=1, size=2 * 1024 * 1024)
    return before


@pytest.mark.parametrize("call", [1, 2, 5])
def test_a_failing_read_ahead_ends_the_run_as_the_read_in_turn_does(tmp_path, sqlite_template, monkeypatch, call):
    seen = {}
    for depth in (0, 1):
        url = f"sqlite:///{tmp_path / f'{depth}.db'}"
        (tmp_path / f"{depth}.db").write_bytes(sqlite_template.read_bytes())
        with Sandbox(jobs=1000, seed=65, now=NOW) as api:
            calls = ListCalls(monkeypatch, before=oversized_at(api, call))
            summary = incremental(api, url, depth, max_response_mb=1)
            monkeypatch.undo()
            seen[depth] = (calls.params, summary.outcome, summary.exit_code, summary.message, summary.inserted,
                           archive_state(api, url))
            assert_mark_covers_exactly_what_is_stored(api, url)
        assert readers_alive() == []
    assert seen[1] == seen[0]
    assert seen[0][1:3] == ("stopped", 1) and seen[0][5]["errors"][0][1] == "too_large"


@pytest.mark.parametrize("depth", [0, 1])
def test_the_deadline_ends_a_run_whose_next_page_never_comes(sqlite_url, monkeypatch, depth):
    with Sandbox(jobs=1000, seed=66, now=NOW) as api:
        written, calls = record_writes(monkeypatch), ListCalls(monkeypatch)
        api.hold_after(3, "list_jobs")   # the 4th page hangs
        try:
            summary = incremental(api, sqlite_url, depth, max_runtime=3)
        finally:
            api.release()
        assert readers_alive() == []
        assert summary.outcome == "deadline" and summary.exit_code == 1
        answered = sum(e.is_set() for e in calls.answered)
        assert len(written) == answered <= 3   # every page read before the deadline is committed
        assert set(stored_times(sqlite_url)) == {i for page in written for i in page}
        assert_mark_covers_exactly_what_is_stored(api, sqlite_url)


def test_the_stop_event_ends_a_run_whose_next_page_is_read(sqlite_url):
    stop = threading.Event()
    with Sandbox(jobs=1000, seed=67, now=NOW) as api:
        api.hold_after(3, "list_jobs")

        def stop_when_parked():
            api.wait_held(1, timeout=GUARD)
            stop.set()

        stopper = threading.Thread(target=stop_when_parked)
        stopper.start()
        try:
            with pytest.raises(Stopped):
                incremental(api, sqlite_url, 1, stop=stop)
        finally:
            stopper.join()
            api.release()
        assert readers_alive() == []
        assert archive_state(api, sqlite_url)["outcomes"] == ["interrupted"]
        assert 250 < len(stored_times(sqlite_url)) <= 300
        assert_mark_covers_exactly_what_is_stored(api, sqlite_url)


def test_sigterm_while_the_next_page_is_read_exits_143_and_the_rerun_completes(sqlite_url):
    import subprocess

    with Sandbox(jobs=1000, seed=68, now=NOW) as api:
        api.hold_after(4, "list_jobs")
        proc = subprocess.Popen(archiver_cmd("sync", "--incremental"), env=cli_env(api, sqlite_url),
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        try:
            wait_parked(api, proc)
            proc.send_signal(signal.SIGTERM)
            _, err = proc.communicate(timeout=GUARD)
        finally:
            if proc.poll() is None:
                proc.kill()
            api.release()
        assert proc.returncode == 143, err
        assert archive_state(api, sqlite_url)["outcomes"] == ["interrupted"]
        assert_mark_covers_exactly_what_is_stored(api, sqlite_url)
        again = run_archiver(api, sqlite_url, "sync", "--incremental")
        assert again.returncode == 0, again.stderr
        assert sorted(stored_times(sqlite_url)) == api.job_ids()


# -- the reader itself ------------------------------------------------------------------------
def idle_client() -> XplentyClient:
    return XplentyClient("http://127.0.0.1:9", "nowhere", Secret(KEY))   # never called


@pytest.mark.parametrize("depth", [1, 2])
def test_the_reader_is_never_more_than_depth_pages_ahead(depth):
    made: list[int] = []

    def pages():
        for n in range(20):
            made.append(n)
            yield n

    got, ahead = [], []
    with ReadAhead(pages(), idle_client(), depth) as reader:
        for n in reader:
            ahead.append(len(made) - 1 - n)   # made but not yet taken, beyond this one
            got.append(n)
    assert got == list(range(20)) and max(ahead) <= depth
    assert readers_alive() == []


def test_a_signal_while_the_reader_starts_ends_it_before_the_items_are_closed():
    """SIGTERM arriving while the reader's thread starts, with the reader already inside its
    first request: the exception must reach the caller as it is, the reader be done with the
    items before the caller closes them (else: "generator already executing", and the run
    exited 1 as an unexpected error instead of 143), and no thread be left behind."""
    inside = threading.Event()
    reader = None

    def pages():
        inside.set()
        reader._cancel.wait(GUARD)   # a request in flight: the cancel ends it (XplentyClient.cancelled_by)
        yield 1

    items = pages()
    reader = ReadAhead(items, idle_client(), 1)
    start = reader._thread.start

    def start_then_signal():
        start()
        inside.wait(GUARD)
        raise KeyboardInterrupt   # what the SIGTERM handler raises in the thread that waits for the start

    reader._thread.start = start_then_signal
    with pytest.raises(KeyboardInterrupt):
        with reader:
            pass
    items.close()   # what Run.fetch's contextlib.closing does next: raised ValueError before
    assert readers_alive() == []


def test_an_error_of_the_read_comes_after_every_page_read_before_it():
    failure = ApiError(503, "overloaded", kind="server_error")

    def pages():
        yield from (1, 2, 3)
        raise failure

    got = []
    with pytest.raises(ApiError) as raised, ReadAhead(pages(), idle_client(), 1) as reader:
        for n in reader:
            got.append(n)
    assert got == [1, 2, 3] and raised.value is failure
    assert readers_alive() == []


def test_leaving_early_ends_the_request_in_flight_and_not_the_run():
    with Sandbox(jobs=300, seed=69, now=NOW) as api:
        client = XplentyClient(api.url, api.account, Secret(KEY))
        api.hold_after(1, "list_jobs")

        def pages():
            for offset in (0, 100, 200):
                yield client.list_jobs({"limit": 100, "offset": offset}).items

        try:
            with ReadAhead(pages(), client, 1) as reader:
                for page in reader:
                    api.wait_held(1, timeout=GUARD)   # the next page's request is in flight
                    break
            assert readers_alive() == []
            assert not client.stop.is_set()
        finally:
            api.release()
        assert len(client.list_jobs({"limit": 100}).items) == 100   # the client goes on working
        client.close()


def test_a_cancelled_thread_leaves_its_retry_after_wait_at_once():
    """A 429 asking to wait two minutes: the cancel ends the wait, not the minutes."""
    with Sandbox(jobs=10, seed=70, now=NOW, rate_limit=1, rate_window_s=120) as api:
        client = XplentyClient(api.url, api.account, Secret(KEY))
        cancel, outcome = threading.Event(), []

        def read():
            with client.cancelled_by(cancel):
                try:
                    client.list_jobs({"limit": 1})
                    client.list_jobs({"limit": 1})   # over the limit: 429, Retry-After ~120 s
                except Stopped as exc:
                    outcome.append(exc)

        thread = threading.Thread(target=read)
        thread.start()
        deadline = time.monotonic() + GUARD
        while api.stats.faults["rate_limited"] < 1 and time.monotonic() < deadline:
            time.sleep(0.05)
        cancel.set()
        thread.join(GUARD)
        assert not thread.is_alive() and len(outcome) == 1 and not client.stop.is_set()
        client.close()


def test_a_sync_by_id_keeps_asking_while_a_batch_is_written(sqlite_url, monkeypatch):
    """By id, once a job is found, the pool's requests go on while a batch is written: with the
    gate closed after 40 Get calls, a request is held while the first batch of 20 is still being
    written (in turn, none would be asked for until that write returned)."""
    from archiver.flows.by_id import sync_ids

    write, held_during_write = Archive.write_jobs, []

    def first_write_waits_for_the_gate(self, jobs, *args, **kwargs):
        if not held_during_write:
            try:
                api.wait_held(1, timeout=GUARD)   # returns as soon as a request waits there
                held_during_write.append(True)
            except TimeoutError:
                held_during_write.append(False)
            api.release()
        return write(self, jobs, *args, **kwargs)

    monkeypatch.setattr(Archive, "write_jobs", first_write_waits_for_the_gate)
    with Sandbox(jobs=120, seed=52, now=NOW) as api:
        ids = api.job_ids()
        api.hold_after(40, "get_job")
        summary = sync_ids(settings_for(api, sqlite_url), ids, SyncOptions(concurrency=4, batch_size=20))
    assert held_during_write == [True]
    assert summary.outcome == "ok" and summary.inserted == len(ids)
