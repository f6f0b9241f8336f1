"""The column types every backend shares, dialect variants included.

Migrations import these too, so a type here must keep meaning what it meant when an
old migration used it: change a type with a new type and a migration, never in place.
"""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import JSON, BigInteger, DateTime, Integer, String, Text, TypeDecorator
from sqlalchemy.dialects import mysql, postgresql

from archiver.utc import naive_utc, to_utc


class UTCDateTime(TypeDecorator):
    """Aware UTC datetimes everywhere: timestamptz on PostgreSQL, UTC DATETIME(6) on
    MySQL/MariaDB, UTC text on SQLite; values come back aware, in UTC."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def load_dialect_impl(self, dialect):
        if dialect.name in ("mysql", "mariadb"):
            return dialect.type_descriptor(mysql.DATETIME(fsp=6))
        return dialect.type_descriptor(DateTime(timezone=True))

    def process_bind_param(self, value: datetime | None, dialect):
        if value is None:
            return None
        return to_utc(value) if dialect.name == "postgresql" else naive_utc(value)

    def process_result_value(self, value, dialect):
        return utc_result(value)


def utc_result(value) -> datetime | None:
    """A stored moment as a driver returns it (text on SQLite) as an aware UTC datetime: what a
    UTCDateTime column reads, also for SQL run straight on the driver."""
    if value is None:
        return None
    if isinstance(value, str):  # raw SQLite text, e.g. through a view
        value = datetime.fromisoformat(value)
    return to_utc(value)


BigId = BigInteger().with_variant(Integer, "sqlite")  # autoincrement keys (SQLite needs INTEGER)
Payload = JSON().with_variant(postgresql.JSONB(), "postgresql")
# Any text the API sends: MySQL's TEXT stops at 64 KB, so LONGTEXT there.
LongText = Text().with_variant(mysql.LONGTEXT(), "mysql", "mariadb")
# A key the archiver compares byte for byte ('Orders' and 'orders' are two outputs): MySQL's
# default collation is case-blind, so its column compares in binary there (migration 0011).
ExactKey = String(255).with_variant(mysql.VARCHAR(255, charset="utf8mb4", collation="utf8mb4_bin"), "mysql", "mariadb")
