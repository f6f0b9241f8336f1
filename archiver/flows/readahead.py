"""Read ahead: a cursor read's next page is fetched while the current one is written.

Read in turn, each List call waited for the previous page's parse, write and commit, so an
incremental run took calls x latency plus all of the writing. Here one background thread
drives the cursor read (flows.cursor: HTTP only; each request follows from the pages read
before it, never from the database) and hands each page over with the `hold` the read had
when it produced that page. The calling thread alone parses, writes and moves the bookmark,
in the same transaction as the page it covers, as before. So:

- the List requests are the sequential read's, in the same order: it is the same
  generator, only driven from another thread, and the hold a page is written with is the
  one it had there (with --with-log-summary the writer's Get calls for a page overlap the
  next List call: the same calls in another order, which only moves where --max-credits
  cuts the run);
- the reader works at most `depth` pages ahead of the page being written: a run that ends
  on a write error (or at SIGTERM) has read at most those pages more than a run in turn,
  and they are dropped, never written, so the bookmark never covers them;
- an error of the read (an API error after its retries, the deadline, the credit budget, a
  stop) reaches the writer after every page read before it, where the loop in turn would
  have met it;
- leaving the `with` block, however, cancels the reader (its request in flight or its
  Retry-After wait ends at once: XplentyClient.cancelled_by) and joins its thread.

A read whose end depends on what the writer found (flows.incremental's refresh by listing
stops once it met every open job) stays in turn: reading ahead would spend a credit more.
The catalog's reads (flows.catalog: a few pages a run) stay in turn too.
"""

from __future__ import annotations

import contextlib
import queue
import threading
from collections.abc import Iterator
from datetime import datetime
from typing import Any, Generic, TypeVar

from archiver.client import XplentyClient
from archiver.flows.cursor import CursorRead

T = TypeVar("T")
CursorPage = tuple[list[Any], datetime | None]   # a page's new objects, and the read's hold then
_END = object()


def cursor_pages(reader: CursorRead) -> Iterator[CursorPage]:
    """Each page of the read with `reader.hold` as it stands when the page is produced (the
    bookmark written with that page may not pass it)."""
    for page in reader.pages():
        yield page, reader.hold


def read_pages(reader: CursorRead, client: XplentyClient, depth: int
               ) -> contextlib.AbstractContextManager[Iterator[CursorPage]]:
    """`with read_pages(...) as pages: for page, hold in pages: ...`: read `depth` pages ahead
    in a thread, or (depth 0) strictly in turn, in this thread."""
    return ahead(cursor_pages(reader), client, depth)


def ahead(items: Iterator[T], client: XplentyClient, depth: int) -> contextlib.AbstractContextManager[Iterator[T]]:
    """`with ahead(items, ...) as taken: ...`: `items` (an iterator making its requests through
    `client`) read by a thread of their own at most `depth` ahead, or (depth 0) in turn, here.
    By-id fetches use it too (Run.fetch): their pool of requests keeps going while a batch is
    written, at most `depth` answers ahead of the writer."""
    if depth <= 0:
        return contextlib.closing(items)
    return ReadAhead(items, client, depth)


class ReadAhead(Generic[T]):
    """Items of `items` (an iterator that makes its requests through `client`) read by a
    thread of their own at most `depth` ahead of the one the caller holds; use as a context
    manager, iterate once."""

    def __init__(self, items: Iterator[T], client: XplentyClient, depth: int = 1):
        if depth < 1:
            raise ValueError("read ahead needs a depth of at least 1")
        self._items, self._client = items, client
        self._room = threading.Semaphore(depth)   # items the reader may read before the caller takes one
        self._ready: queue.SimpleQueue = queue.SimpleQueue()   # (item, None), (_END, None) or (None, error)
        self._cancel = threading.Event()
        self._thread = threading.Thread(target=self._read, name="read-ahead", daemon=True)

    def __enter__(self) -> "ReadAhead[T]":
        try:
            self._thread.start()
        except BaseException:
            # a signal (SIGTERM, Ctrl-C) while the thread starts: the reader may be inside
            # next(items) already, and the caller closes the items as the exception passes
            # ("generator already executing" would then replace it): cancel and join it first
            self.close()
            raise
        return self

    def __exit__(self, *exc_info) -> None:
        self.close()

    def __iter__(self) -> Iterator[T]:
        while True:
            item, error = self._ready.get()   # the reader always ends: its requests end by the deadline or stop
            if error is not None:
                raise error
            if item is _END:
                return
            self._room.release()
            yield item

    def close(self) -> None:
        """Cancel the reader and wait for its thread (a moment: its request or wait ends at once)."""
        self._cancel.set()
        self._room.release()   # a reader waiting for room wakes and sees the cancel
        if not self._thread.is_alive():
            return
        try:
            self._thread.join()
        except BaseException:   # a second signal while joining: still do not leave the thread behind
            self._thread.join()
            raise

    def _read(self) -> None:
        if self._cancel.is_set():
            return   # cancelled as it started (close() may not have joined it): the items stay the caller's
        try:
            with self._client.cancelled_by(self._cancel):
                while self._room.acquire() and not self._cancel.is_set():
                    item = next(self._items, _END)
                    self._ready.put((item, None))
                    if item is _END:
                        return
        except BaseException as exc:   # handed to the caller, raised there as if it had read in turn
            self._ready.put((None, exc))
        finally:
            close = getattr(self._items, "close", None)
            if close is not None:
                close()
