"""Reads of the newest rows of each key (a schedule's package, a package), one index descent a key.

A window (ROW_NUMBER() OVER (PARTITION BY ...), then rn <= N) numbers every row of history
to keep the newest few: 7 s on SQLite and 1.9 s on PostgreSQL at a million jobs. Here the keys
come from an index (dialect.distinct_keys) and each key is read by ORDER BY ... LIMIT on an index that
starts with the key's columns, many keys to one UNION ALL statement. The read of one key is
compiled once and its text repeated for the others (dialect.repeated_select): compiling the
board's 900 terms one by one took longer than running them.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

from sqlalchemy import Connection, Select, bindparam, column, select, true, values
from sqlalchemy.types import NullType

from archiver import dialect

KEYS_A_STATEMENT = 100   # SQLite allows 500 terms in a compound SELECT
KEYS_A_LIST = 2000       # PostgreSQL's VALUES list: a bind parameter a key column (65,535 at most)


def matching(columns: Sequence, key: tuple) -> list:
    """The key's columns equal to its values (IS NULL for a None, as a partition holds NULLs)."""
    return [column == value for column, value in zip(columns, key)]


def per_key(conn: Connection, keys: Sequence[tuple], read: Callable[[tuple], Select]) -> list:
    """The rows of read(key) for every key, many keys to one UNION ALL statement. Keys with a
    None in the same places share one compiled read (a None is an IS NULL, not a value)."""
    rows: list = []
    for group in _by_nulls(keys):
        run = dialect.repeated_select(conn, select(read(_probe(group[0])).subquery()))
        for start in range(0, len(group), KEYS_A_STATEMENT):
            rows += run([_values(key) for key in group[start:start + KEYS_A_STATEMENT]])
    return rows


def _by_nulls(keys: Sequence[tuple]) -> list[list[tuple]]:
    found: dict[tuple, list[tuple]] = {}
    for key in keys:
        found.setdefault(tuple(v is None for v in key), []).append(key)
    return list(found.values())


def _probe(key: tuple) -> tuple:
    """The key as bind parameters (typed by the column each is compared with), None kept."""
    return tuple(None if v is None else bindparam(f"key_{i}", v, type_=NullType()) for i, v in enumerate(key))


def _values(key: tuple) -> dict:
    return {f"key_{i}": v for i, v in enumerate(key) if v is not None}


def newest(conn: Connection, columns: Sequence, key_columns: Sequence, keys: Sequence[tuple], where: Sequence,
           order: Sequence, limit: int) -> list:
    """The first `limit` rows in `order` of each key among the rows `where` selects."""
    if dialect.has_lateral(conn):
        return _newest_lateral(conn, columns, key_columns, keys, where, order, limit)
    return per_key(conn, keys, lambda key: select(*columns).where(*where, *matching(key_columns, key))
                   .order_by(*order).limit(limit))


def _newest_lateral(conn: Connection, columns: Sequence, key_columns: Sequence, keys: Sequence[tuple],
                    where: Sequence, order: Sequence, limit: int) -> list:
    """newest() as one read planned once: the keys a VALUES list, each key's rows a LATERAL
    subquery. PostgreSQL planned a UNION ALL of 100 index descents in 9-14 ms, more than it
    spent running it; here the plan is one descent, run once a key."""
    rows: list = []
    for group in _by_nulls(keys):
        given = [i for i, v in enumerate(group[0]) if v is not None]
        if not given:   # the key of NULLs only
            rows += conn.execute(select(*columns).where(*where, *matching(key_columns, group[0]))
                                 .order_by(*order).limit(limit)).all()
            continue
        for start in range(0, len(group), KEYS_A_LIST):
            listed = values(*[column(f"key_{i}", key_columns[i].type) for i in given], name="keys").data(
                [tuple(key[i] for i in given) for key in group[start:start + KEYS_A_LIST]])
            probe = tuple(listed.c[f"key_{i}"] if i in given else None for i in range(len(key_columns)))
            each = (select(*columns).where(*where, *matching(key_columns, probe)).order_by(*order).limit(limit)
                    .lateral("each_key"))
            rows += conn.execute(select(*each.c).select_from(listed).join(each, true())).all()
    return rows


def latest_of_each(rows: list, owner: Callable, rank: Callable, limit: int) -> dict:
    """The `limit` highest-ranked rows of each owner(row), oldest (lowest rank) first: the newest
    rows of several keys (the packages of one schedule, the people who run one package) merged."""
    found: dict = {}
    for row in rows:
        found.setdefault(owner(row), []).append(row)
    return {k: sorted(v, key=rank)[-limit:] for k, v in found.items()}
