"""Overlapping runs: the per-account lock, --wait, and concurrent writers without deadlocks."""

import subprocess

import pytest
from sqlalchemy import func, select

from archiver import models
from archiver.errors import RunLocked
from archiver.sandbox import Sandbox
from archiver.store import Archive
from tests.sandboxed import NOW, archiver_cmd, cli_env, run_archiver, wait_parked


def job_ids(db_url):
    archive = Archive.open(db_url)
    with archive.engine.connect() as conn:
        ids = conn.execute(select(models.JobRow.id)).scalars().all()
    archive.close()
    return ids


def test_lock_is_exclusive_per_account_and_released(db_url):
    first, second, other = Archive.open(db_url, "acme"), Archive.open(db_url, "acme"), Archive.open(db_url, "zeta")
    try:
        with first.run_lock():
            with pytest.raises(RunLocked, match="--wait"):
                with second.run_lock():
                    pass
            with other.run_lock():  # another account is not blocked
                pass
        with second.run_lock():  # released
            pass
    finally:
        for a in (first, second, other):
            a.close()


def test_wait_polls_until_the_timeout_then_gives_up(db_url):
    """--wait: the lock is retried every poll interval until the deadline (a fake clock)."""
    from archiver import dialect
    now = [0.0]
    polls = []

    def sleep(seconds):
        polls.append(seconds)
        now[0] += seconds

    holder, waiter = Archive.open(db_url, "acme"), Archive.open(db_url, "acme")
    try:
        with holder.run_lock():
            with pytest.raises(RunLocked):
                with dialect.run_lock(waiter.engine, "acme", wait=2.0, poll=0.5, sleep=sleep,
                                      clock=lambda: now[0]):
                    pass
    finally:
        holder.close()
        waiter.close()
    assert polls == [0.5, 0.5, 0.5, 0.5]


def test_overlapping_cli_runs_second_exits_4_or_waits(db_url):
    with Sandbox(jobs=100, seed=21, now=NOW) as api:
        ids = [str(i) for i in api.job_ids()]
        env = cli_env(api, db_url)
        api.hold_after(5, "get_job")   # the first run parks mid-run, holding the lock, until release()
        first = subprocess.Popen(archiver_cmd("sync", *ids, "--concurrency", "2"), env=env,
                                 stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        try:
            wait_parked(api, first)
            refused = run_archiver(api, db_url, "sync", *ids[:10])
            waiting = subprocess.Popen(archiver_cmd("sync", *ids, "--wait", "120"), env=env,
                                       stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        finally:
            api.release()
        out1, err1 = first.communicate(timeout=120)
        out2, err2 = waiting.communicate(timeout=120)
    assert refused.returncode == 4 and "another archiver run" in refused.stderr
    assert first.returncode == 0, err1
    assert waiting.returncode == 0 and "unchanged 100" in out2, err2
    stored = job_ids(db_url)
    assert len(stored) == 100 == len(set(stored))
    archive = Archive.open(db_url)
    with archive.engine.connect() as conn:
        runs = conn.execute(select(models.SyncRunRow.pid, models.SyncRunRow.started_at, models.SyncRunRow.finished_at)
                            .order_by(models.SyncRunRow.id)).all()
    archive.close()
    assert [r.pid for r in runs] == [first.pid, waiting.pid]   # the refused run left no row
    assert runs[1].started_at >= runs[0].finished_at           # the runs never overlapped


def test_concurrent_writers_of_the_same_jobs_neither_deadlock_nor_duplicate(db_url):
    """Two accounts' runs (so no shared lock) upserting the very same job ids at once."""
    with Sandbox(jobs=300, seed=22, now=NOW, account="one") as one, \
            Sandbox(jobs=300, seed=22, now=NOW, account="two") as two:
        ids = [str(i) for i in one.job_ids()]
        procs = [subprocess.Popen(archiver_cmd("sync", *ids, "--batch-size", "50", "--concurrency", "4"),
                                  env=cli_env(api, db_url), stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                  text=True) for api in (one, two)]
        results = [p.communicate(timeout=180) + (p.returncode,) for p in procs]
    for out, err, code in results:
        assert code == 0, err
    stored = job_ids(db_url)
    assert len(stored) == 300 == len(set(stored))
    archive = Archive.open(db_url)
    with archive.engine.connect() as conn:
        outputs = conn.execute(select(func.count()).select_from(models.JobOutputRow)).scalar()
        distinct = conn.execute(select(func.count(func.distinct(models.JobOutputRow.id)))).scalar()
    archive.close()
    assert outputs == distinct > 0
