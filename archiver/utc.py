"""UTC, the archive's only time zone: one conversion used by the parser, the column type
and the drivers' value converters. Imports nothing of the archiver."""

from __future__ import annotations

from datetime import datetime, timezone


def utcnow() -> datetime:
    return datetime.now(timezone.utc)


def to_utc(moment: datetime) -> datetime:
    """The same instant as an aware UTC datetime; a naive one is taken to be UTC already."""
    if moment.tzinfo is timezone.utc:
        return moment
    if moment.tzinfo is None:
        return moment.replace(tzinfo=timezone.utc)
    return moment.astimezone(timezone.utc)


def naive_utc(moment: datetime) -> datetime:
    """UTC wall-clock time without a zone, for columns that store no zone (MySQL, SQLite)."""
    return to_utc(moment).replace(tzinfo=None)
