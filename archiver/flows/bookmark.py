"""The high-water mark of a cursor read (List jobs, and each catalog List endpoint).

It lands in sync_state in the same transaction as the page it covers, so a run that
dies between pages resumes where the committed rows end.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from datetime import datetime
from typing import Protocol

from archiver.flows.runs import Run


class Dated(Protocol):
    updated_at: datetime | None


def page_mark(records: Sequence[Dated]) -> datetime | None:
    marks = [r.updated_at for r in records if r.updated_at is not None]
    return max(marks) if marks else None


class Bookmark:
    """Where the high-water mark may go: to the newest updated_at read so far, but never
    past an object that could not be archived (then it stays before it for the rest of the
    run) nor past a second the cursor read must check again (`hold`). `on_saved(mark)` is
    told each mark that commits."""

    def __init__(self, run: Run, scope: str, saved: datetime | None, may_advance: bool,
                 on_saved: Callable[[datetime], None] | None = None):
        self.run, self.scope, self.saved, self.may_advance = run, scope, saved, may_advance
        self.on_saved = on_saved
        self.best, self.frozen = saved, False

    def advance(self, records: Sequence[Dated], clean: Sequence[Dated] | None,
                hold: datetime | None) -> Callable | None:
        """The bookmark write to commit with this page's records, or None. `clean`: when some
        object of the page was invalid, the valid ones before it (else None)."""
        if not self.frozen:
            newest = page_mark(clean if clean is not None else records)
            self.frozen = clean is not None
            if newest is not None and (self.best is None or newest > self.best):
                self.best = newest
        target = self.best if hold is None or self.best is None else min(self.best, hold)
        return self._save(target)

    def finish(self) -> None:
        """After the read: the mark as far as it may go, if a page's write did not take it."""
        save = self._save(self.best)
        if save is not None:
            self.run.archive.transact(save)

    def _save(self, mark: datetime | None) -> Callable | None:
        if not self.may_advance or mark is None or mark == self.saved or self.run.summary.dry_run:
            return None
        if self.saved is not None and mark < self.saved:
            return None
        self.saved = mark
        archive, summary, scope, on_saved = self.run.archive, self.run.summary, self.scope, self.on_saved

        def save(conn) -> None:
            archive.save_mark(conn, mark, scope, summary.run_id)
            if on_saved is not None:
                on_saved(mark)

        return save
