"""Reads of the newest rows of each key (a schedule's package, a package), one index descent a key.

A window (ROW_NUMBER() OVER (PARTITION BY ...), then rn <= N) numbers every row of history
to keep the newest few: 7 s on SQLite and 1.9 s on PostgreSQL at a million jobs. Here the keys
come from an index (dialect.distinct_keys) and each key is read by ORDER BY ... LIMIT on an index that
starts with the key's columns, many keys to one UNION ALL statement.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

from sqlalchemy import Connection, Select, select, union_all

KEYS_A_STATEMENT = 100   # SQLite allows 500 terms in a compound SELECT


def matching(columns: Sequence, key: tuple) -> list:
    """The key's columns equal to its values (IS NULL for a None, as a partition holds NULLs)."""
    return [column == value for column, value in zip(columns, key)]


def per_key(conn: Connection, keys: Sequence[tuple], read: Callable[[tuple], Select]) -> list:
    """The rows of read(key) for every key, many keys to one UNION ALL statement."""
    rows: list = []
    for start in range(0, len(keys), KEYS_A_STATEMENT):
        parts = [select(read(key).subquery()) for key in keys[start:start + KEYS_A_STATEMENT]]
        rows += conn.execute(parts[0] if len(parts) == 1 else union_all(*parts)).all()
    return rows


def newest(conn: Connection, columns: Sequence, key_columns: Sequence, keys: Sequence[tuple], where: Sequence,
           order: Sequence, limit: int) -> list:
    """The first `limit` rows in `order` of each key among the rows `where` selects."""
    return per_key(conn, keys, lambda key: select(*columns).where(*where, *matching(key_columns, key))
                   .order_by(*order).limit(limit))


def latest_of_each(rows: list, owner: Callable, rank: Callable, limit: int) -> dict:
    """The `limit` highest-ranked rows of each owner(row), oldest (lowest rank) first: the newest
    rows of several keys (the packages of one schedule, the people who run one package) merged."""
    found: dict = {}
    for row in rows:
        found.setdefault(owner(row), []).append(row)
    return {k: sorted(v, key=rank)[-limit:] for k, v in found.items()}
