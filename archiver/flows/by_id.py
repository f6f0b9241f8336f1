"""`archiver sync ID ...`: the named jobs, fetched one by one (a credit each).

Ids are streamed: arguments and id-file lines expand (ranges included) as the fetch loop
asks for them, so a ten-million-line file is never held before the first request. Each
id is asked for once (a set of the ids seen, which MAX_IDS bounds); a run asks for at
most MAX_IDS distinct ids and stops cleanly there.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from typing import IO

from archiver.client import XplentyClient
from archiver.config import Settings
from archiver.errors import ConfigError, TooManyIds
from archiver.flows.runs import SyncOptions, SyncSummary, execute, make_client

MAX_RANGE = 1_000_000
MAX_IDS = 1_000_000   # distinct ids one run asks for (and so the size of the set that deduplicates them)
MAX_LISTED = 20       # invalid tokens named in the error


def sync_ids(settings: Settings, ids: "list[int] | JobIds", options: SyncOptions,
             client: XplentyClient | None = None) -> SyncSummary:
    """Archive the named jobs (`archiver sync ID ...`): a list, or a JobIds stream."""
    client = client or make_client(settings, options)
    streamed = isinstance(ids, JobIds)
    summary = SyncSummary(mode="ids", requested=0 if streamed else len(ids), dry_run=options.dry_run)

    def body(run) -> None:
        wanted = ids.stream(lambda: _count(summary)) if streamed else ids
        run.archive_ids(wanted, with_log_summary=options.with_log_summary, probe_404=True)

    return execute(settings, summary, options, client, body)


def _count(summary: SyncSummary) -> None:
    summary.requested += 1


class JobIds:
    """Job ids from arguments (`157`, `100-200`) and id-file lines (`#` comments allowed).

    Ids are plain ASCII digits (no signs, underscores, spaces or other scripts' digits).
    Every invalid token of the arguments, and of an id file that can be read twice (a
    regular file), is listed in one ConfigError before any request; an invalid line on a
    pipe ends the run when it is reached. Nothing else is read until the ids are fetched.
    """

    def __init__(self, args: Iterable[str], lines: IO[str] | Iterable[str] | None = None,
                 cap: int | None = None):
        self.args, self.lines, self.cap = [a for a in args], lines, cap or MAX_IDS
        bad = _invalid(self.args)
        self.file_tokens: int | None = None
        if isinstance(lines, (list, tuple)):
            bad_lines, self.file_tokens = _check_lines(lines)
            bad += bad_lines
        elif lines is not None and _rewindable(lines):
            bad_lines, self.file_tokens = _check_lines(lines)
            bad += bad_lines
            lines.seek(0)  # type: ignore[union-attr]
        if bad:
            raise ConfigError("invalid job id" + ("s" if len(bad) > 1 else "") + ": " + ", ".join(bad[:MAX_LISTED])
                              + (f" and {len(bad) - MAX_LISTED} more" if len(bad) > MAX_LISTED else "")
                              + "; job ids are positive integers of plain digits, ranges like 100-200")

    def __bool__(self) -> bool:
        """Any ids given (an id file from a pipe counts: it is read only when fetched)."""
        return any(a != "" for a in self.args) or (self.lines is not None and self.file_tokens != 0)

    def tokens(self) -> Iterator[str]:
        yield from (a for a in self.args if a != "")
        for line in self.lines if self.lines is not None else ():
            token = _token(line)
            if token:
                yield token

    def stream(self, counted: Callable[[], None] | None = None) -> Iterator[int]:
        """The distinct ids in order; TooManyIds past the cap, ConfigError at an invalid line."""
        seen: set[int] = set()
        for token in self.tokens():
            try:
                ids = _expand(token)
            except ValueError as exc:
                raise ConfigError(f"invalid job id {token!r} ({exc}); the ids before it were fetched") from None
            for job_id in ids:
                if job_id in seen:
                    continue
                if len(seen) >= self.cap:
                    raise TooManyIds(f"more than {self.cap:,} distinct job ids in one run; the first "
                                     f"{self.cap:,} were asked for, the rest were not: split the list")
                seen.add(job_id)
                if counted is not None:
                    counted()
                yield job_id

    def __iter__(self) -> Iterator[int]:
        return self.stream()


def parse_id_args(args: Iterable[str], lines: Iterable[str] = ()) -> list[int]:
    """Job ids from arguments and id-file lines, all at once; duplicates dropped, order kept.
    (The command line streams them with JobIds; this is for small lists.)"""
    return list(JobIds(args, list(lines)))


def _token(line: str) -> str:
    return line.split("#", 1)[0].strip()


def _rewindable(lines) -> bool:
    try:
        return bool(lines.seekable()) and lines.tell() == 0
    except (AttributeError, OSError, ValueError):
        return False


def _invalid(tokens: Iterable[str]) -> list[str]:
    bad = []
    for token in tokens:
        if token == "":
            continue
        try:
            _expand(token)
        except ValueError as exc:
            bad.append(f"{token!r} ({exc})")
    return bad


def _check_lines(lines: Iterable[str]) -> tuple[list[str], int]:
    """A first pass over an id file: its invalid tokens (named with their line) and how many
    tokens it has; nothing is kept."""
    bad, count = [], 0
    for number, line in enumerate(lines, 1):
        token = _token(line)
        if not token:
            continue
        count += 1
        try:
            _expand(token)
        except ValueError as exc:
            bad.append(f"{token!r} ({exc}, line {number})" if len(bad) < MAX_LISTED else "")
    return bad, count


def _expand(token: str) -> range | list[int]:
    low_text, dash, high_text = token.partition("-")
    if not dash:
        return [_positive(token)]
    low, high = _positive(low_text), _positive(high_text)
    if high < low:
        raise ValueError("the range ends before it starts")
    if high - low >= MAX_RANGE:
        raise ValueError(f"a range of more than {MAX_RANGE:,} ids")
    return range(low, high + 1)


def _positive(text: str) -> int:
    if not (text.isascii() and text.isdigit()):
        raise ValueError("not a plain number")
    value = int(text)
    if value <= 0 or value > 2 ** 63 - 1:
        raise ValueError("out of range")
    return value
