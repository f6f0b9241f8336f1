"""Text that is safe to show on a terminal or in a log line.

Texts from the API (error messages, job errors, package names) and from the
environment are shown with every character that could act on a terminal or hide
text escaped as Python writes it: ESC as the four characters `\\x1b`, a newline as
`\\n`, a right-to-left override as `\\u202e`. Escaped are the control characters (C0,
DEL, C1), the format characters (bidi overrides and isolates, zero-width spaces,
tag characters; not the zero-width joiners that scripts and emoji need), line and
paragraph separators and lone surrogates. Nothing else changes, so ordinary text of
any script stays as it is. The database and JSON output keep the original text;
only what meets a terminal or a log line is escaped.
"""

from __future__ import annotations

import logging
import unicodedata

ESCAPED_CATEGORIES = frozenset({"Cc", "Cf", "Cs", "Zl", "Zp"})
KEPT = frozenset({"\u200c", "\u200d"})  # zero-width non-joiner and joiner: shaping, not hiding
NAMED = {"\n": "\\n", "\r": "\\r", "\t": "\\t"}


def _escaped(ch: str) -> str:
    if ch in NAMED:
        return NAMED[ch]
    code = ord(ch)
    if code < 0x100:
        return f"\\x{code:02x}"
    return f"\\u{code:04x}" if code < 0x10000 else f"\\U{code:08x}"


def _unsafe(ch: str) -> bool:
    return ch not in KEPT and unicodedata.category(ch) in ESCAPED_CATEGORIES


def safe_text(value: object, *, keep_newlines: bool = False) -> str:
    """`value` as text with every character that could act on a terminal escaped.

    With `keep_newlines`, a line feed stays a line break (for tracebacks); a carriage
    return is still escaped, so no line can be overwritten."""
    text = value if isinstance(value, str) else str(value)
    if text.isprintable() or not any(_unsafe(ch) for ch in text):
        return text
    return "".join(_escaped(ch) if _unsafe(ch) and not (keep_newlines and ch == "\n") else ch for ch in text)


class SafeFormatter(logging.Formatter):
    """A log formatter whose every line is terminal-safe: the message (with its
    arguments) is one line with control characters escaped; a traceback keeps its line
    breaks and loses everything else that could act on the terminal."""

    def formatMessage(self, record: logging.LogRecord) -> str:
        return safe_text(super().formatMessage(record))

    def formatException(self, ei) -> str:
        return safe_text(super().formatException(ei), keep_newlines=True)

    def formatStack(self, stack_info: str) -> str:
        return safe_text(super().formatStack(stack_info), keep_newlines=True)
