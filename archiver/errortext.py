"""An error text's signature: the text with what varies from job to job masked (quoted values,
ids, numbers), so failures of one cause group together. Computed once, when a job is parsed
(jobs.error_signature), and counted per day by daily_error_rollup."""

from __future__ import annotations

import re

SIGNATURE_LENGTH = 300   # jobs.error_signature
MASKS = (
    (re.compile(r"'[^']*'|\"[^\"]*\"|`[^`]*`"), "'…'"),
    (re.compile(r"\b[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}\b", re.I), "<id>"),
    (re.compile(r"\b(?=[0-9a-f]*\d)[0-9a-f]{8,}\b", re.I), "<id>"),
    (re.compile(r"\d+(?:\.\d+)?"), "<n>"),
    (re.compile(r"\s+"), " "),
)


def signature(errors: str | None) -> str | None:
    """The masked text, at most SIGNATURE_LENGTH characters; None for no error text."""
    text = (errors or "").strip()
    for pattern, mask in MASKS:
        text = pattern.sub(mask, text)
    return text[:SIGNATURE_LENGTH] or None
