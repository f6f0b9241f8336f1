"""flows/per_key.py: the newest rows of each key are exactly those a window over all history keeps."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

from sqlalchemy import select

from archiver import database
from archiver.dialect import distinct_keys
from archiver.flows.per_key import latest_of_each, matching, newest
from archiver.models import JobRow
from healthrows import Rows, job_row

jobs = JobRow.__table__
T0 = datetime(2026, 11, 1, tzinfo=timezone.utc)
KEY = [jobs.c.creator_type, jobs.c.creator_id, jobs.c.package_id]


def archive(url: str) -> None:
    """Schedule 7 runs package 1 and a job of no package; three jobs of package 1 share a
    created_at; a job of no creator, and one of a schedule of no id."""
    rows = Rows(url)
    made = [job_row(i, package_id=1, created_at=T0 + timedelta(hours=i), schedule_id=7) for i in range(1, 6)]
    made += [job_row(i, package_id=1, created_at=T0 + timedelta(hours=9), schedule_id=7) for i in (6, 8, 7)]
    made += [job_row(i, package_id=None, created_at=T0 + timedelta(hours=i - 20), schedule_id=7) for i in (21, 22)]
    made += [job_row(31, package_id=2, created_at=T0)]
    made += [job_row(41, package_id=3, created_at=T0) | {"creator_type": None, "creator_id": None},
             job_row(42, package_id=1, created_at=T0, schedule_id=7) | {"creator_id": None}]
    rows.jobs(made)
    rows.close()


def test_newest_rows_of_each_key_ties_by_id_and_a_null_key(db_url):
    archive(db_url)
    engine = database.make_engine(db_url)
    try:
        with engine.connect() as conn:
            keys = distinct_keys(conn, KEY)
            found = newest(conn, [*KEY, jobs.c.id], KEY, keys, [], [jobs.c.created_at.desc(), jobs.c.id.desc()], 2)
    finally:
        engine.dispose()
    ids: dict = {}
    for row in found:
        ids.setdefault(tuple(row[:3]), []).append(row.id)
    newest_two = {("Schedule", 7, 1): [7, 8], ("Schedule", 7, None): [21, 22], ("User", 1, 2): [31],
                  (None, None, 3): [41], ("Schedule", None, 1): [42]}
    assert sorted(keys, key=str) == sorted(newest_two, key=str)
    assert {k: sorted(v) for k, v in ids.items()} == newest_two


def test_latest_of_each_merges_keys_by_rank_oldest_first():
    rows = [(1, 5), (1, 9), (2, 4), (1, 7), (1, 8)]
    assert latest_of_each(rows, lambda r: r[0], lambda r: r[1], 2) == {1: [(1, 8), (1, 9)], 2: [(2, 4)]}


def test_many_keys_give_the_rows_each_key_read_alone_gives(db_url, monkeypatch):
    """250 keys (three statements of at most 100; on PostgreSQL VALUES lists of at most 90),
    some with a NULL package: every row and value (aware UTC datetimes) as one SELECT a key
    returns it."""
    from archiver.flows import per_key
    monkeypatch.setattr(per_key, "KEYS_A_LIST", 90)
    rows = Rows(db_url)
    rows.jobs([job_row(i, package_id=(i % 125) or None, created_at=T0 + timedelta(minutes=7 * i),
                       schedule_id=i % 2 or None, status="completed" if i % 3 else "failed")
               for i in range(1, 1001)])
    rows.close()
    columns = [*KEY, jobs.c.id, jobs.c.created_at, jobs.c.runtime_in_seconds]
    where, order = [jobs.c.status == "completed"], [jobs.c.created_at.desc(), jobs.c.id.desc()]
    engine = database.make_engine(db_url)
    try:
        with engine.connect() as conn:
            keys = distinct_keys(conn, KEY)
            found = newest(conn, columns, KEY, keys, where, order, 3)
            alone = [row for key in keys for row in conn.execute(
                select(*columns).where(*where, *matching(KEY, key)).order_by(*order).limit(3))]
    finally:
        engine.dispose()
    assert len(keys) == 250 and len(found) == len(alone) > 500
    assert sorted(map(tuple, found), key=repr) == sorted(map(tuple, alone), key=repr)
    assert all(row.created_at.tzinfo is timezone.utc for row in found)
