"""`archiver sync ID ...`: the named jobs, fetched one by one (a credit each)."""

from __future__ import annotations

from collections.abc import Iterable

from archiver.client import XplentyClient
from archiver.config import Settings
from archiver.errors import ConfigError
from archiver.flows.runs import SyncOptions, SyncSummary, execute, make_client

MAX_RANGE = 1_000_000


def sync_ids(settings: Settings, ids: list[int], options: SyncOptions,
             client: XplentyClient | None = None) -> SyncSummary:
    """Archive the named jobs (`archiver sync ID ...`)."""
    client = client or make_client(settings, options)
    summary = SyncSummary(mode="ids", requested=len(ids), dry_run=options.dry_run)
    return execute(settings, summary, options, client,
                   lambda run: run.archive_ids(ids, with_log_summary=options.with_log_summary, probe_404=True))


def parse_id_args(args: Iterable[str], lines: Iterable[str] = ()) -> list[int]:
    """Job ids from arguments (`157`, `100-200`) and id-file lines; duplicates dropped, order kept.

    Ids are plain ASCII digits (no signs, underscores, spaces or other scripts' digits).
    Every invalid token is listed in one ConfigError, raised before any request is made.
    """
    ids: dict[int, None] = {}
    bad: list[str] = []
    tokens = list(args) + [ln.split("#", 1)[0].strip() for ln in lines]
    for token in tokens:
        if token == "":
            continue
        try:
            ids.update(dict.fromkeys(_expand(token)))
        except ValueError as exc:
            bad.append(f"{token!r} ({exc})")
    if bad:
        raise ConfigError("invalid job id" + ("s" if len(bad) > 1 else "") + ": " + ", ".join(bad)
                          + "; job ids are positive integers of plain digits, ranges like 100-200")
    return list(ids)


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
