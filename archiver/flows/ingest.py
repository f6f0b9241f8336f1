"""`archiver ingest FILE`: saved payloads through the very parse -> store path live data takes."""

from __future__ import annotations

import logging
from collections.abc import Iterable
from typing import Any

from archiver.config import Settings
from archiver.errors import InvalidPayload
from archiver.flows.runs import Run, SyncOptions, SyncSummary, execute

log = logging.getLogger(__name__)


def ingest(settings: Settings, records: Iterable[Any], options: SyncOptions) -> SyncSummary:
    """Load saved job payloads (from archiver.payloads.read_payloads); no API call is made."""
    summary = SyncSummary(mode="ingest", dry_run=options.dry_run)
    if not settings.account:
        log.warning("no --account (or XPLENTY_ACCOUNT_ID): the jobs are stored without an account; "
                    "a later ingest of them with --account fills it in")

    def body(run: Run) -> None:
        for raw in records:
            summary.requested += 1
            if isinstance(raw, InvalidPayload):
                run.fail(None, raw)
                continue
            run.add(raw)
        run.flush()

    return execute(settings, summary, options, None, body)
