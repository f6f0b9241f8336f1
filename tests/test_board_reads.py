"""The health board reads less than every rule's whole input only where no verdict can change:
each test builds histories at the edges of a shortcut and compares the board with the one the
straightforward reading gives (every runtime read, every package with a retry read for flaky)."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

import pytest

from archiver import database
from archiver.flows import anomaly_checks, health
from archiver.flows.checkconfig import MIN_STUCK, CheckConfig
from healthrows import Rows, job_row

NOW = datetime(2026, 11, 28, 12, 0, tzinfo=timezone.utc)
H = timedelta(hours=1)
D = timedelta(days=1)
SECOND = timedelta(seconds=1)


@pytest.fixture
def filled(db_url):
    built = Rows(db_url)
    yield built
    built.close()


def seen(url: str, now: datetime) -> list[tuple]:
    """Every subject and alert of the board, in full."""
    engine = database.make_engine(url)
    try:
        board = health.evaluate(engine, CheckConfig(), now)
    finally:
        engine.dispose()
    return ([(s.label, s.state, s.why) for s in board.subjects]
            + [(a.key, a.severity, a.message, a.since, a.job_id) for a in board.alerts])


def read_in_full(monkeypatch) -> None:
    monkeypatch.setattr(health, "needs_p95", lambda *args: True)
    monkeypatch.setattr(health, "needs_p99", lambda *args: True)
    monkeypatch.setattr(anomaly_checks, "maybe_flaky", lambda conn, since, share: list(range(1, 100)))


def same_boards(url: str, moments: list[datetime], monkeypatch) -> list[list[tuple]]:
    boards = [seen(url, now) for now in moments]
    with monkeypatch.context() as patched:
        read_in_full(patched)
        assert [seen(url, now) for now in moments] == boards
    return boards


def test_runtimes_are_read_where_a_percentile_can_move_a_verdict(filled, monkeypatch):
    """Schedule 1 runs 3 h an hour (p95 3 h: stale 4 h after its last success, not 2); package 8
    runs 90 min (p99: a job is stuck after 3 h, not MIN_STUCK). At exactly 2 intervals and
    exactly MIN_STUCK the percentile is what keeps the alert away."""
    filled.schedule(1, start_at=NOW - D, packages=(1,))
    for k in range(20):
        filled.job(package_id=1, schedule_id=1, created_at=NOW - D + k * H, runtime=3 * 3600)
        filled.job(package_id=8, created_at=NOW - 2 * D + k * H, runtime=5400)
    last_success = NOW - D + 19 * H + timedelta(seconds=30 + 3 * 3600)
    began = NOW
    queued = filled.job(package_id=8, created_at=began, status="queued")
    moments = [last_success + 2 * H - SECOND, last_success + 2 * H, last_success + 4 * H,
               began + MIN_STUCK - SECOND, began + MIN_STUCK, began + 3 * H]
    boards = same_boards(filled.url, moments, monkeypatch)
    stale, stuck = "stale:schedule:1", f"stuck:job:{queued}"
    assert [any(row[0] == stale for row in b) for b in boards[:3]] == [False, False, True]
    assert [any(row[0] == stuck for row in b) for b in boards[3:]] == [False, False, True]


def chains(rows: Rows, package_id: int, first: datetime, retried: list[bool]) -> None:
    """A first attempt an hour from `first` on; a retried one fails and is rescued 10 min later."""
    for k, retry in enumerate(retried):
        at = first + k * H
        rows.job(package_id=package_id, created_at=at, status="failed" if retry else "completed")
        if retry:
            rows.job(package_id=package_id, created_at=at + 10 * timedelta(minutes=1), attempts=1)


def test_flaky_packages_are_those_the_full_reading_finds(filled, monkeypatch):
    """Package 1: 3 retries for 10 first attempts, exactly the 30 % share. Package 2: the same,
    after 5 clean first attempts earlier on the day the 14 days begin (not counted: counted,
    the package would look safe). Package 3: its first retried chain begins before the 14 days.
    Package 4: 2 retried chains of 10, under the share though it has 4 retries. Package 5:
    retries a third of its first attempts, one of them after the moment judged."""
    since = NOW - 14 * D
    chains(filled, 1, NOW - 3 * D, [False] * 5 + [True, False, True, False, True])
    chains(filled, 2, since - 5 * H, [False] * 5)
    chains(filled, 2, since + H, [False] * 5 + [True, False, True, False, True])
    filled.job(package_id=3, created_at=since - 5 * timedelta(minutes=1), status="failed")
    filled.job(package_id=3, created_at=since + 5 * timedelta(minutes=1), attempts=1)
    chains(filled, 3, since + H, [False, True, False, False, True, False])
    for k in range(10):
        filled.job(package_id=4, created_at=NOW - 2 * D + k * H, status="failed" if k in (7, 9) else "completed")
        if k in (7, 9):
            for attempt in (1, 2):
                filled.job(package_id=4, created_at=NOW - 2 * D + k * H + attempt * 5 * timedelta(minutes=1),
                           attempts=attempt, status="completed" if attempt == 2 else "failed")
    chains(filled, 5, NOW - 8 * H, [False, True, False, False, True, True])
    boards = same_boards(filled.url, [NOW, NOW - 4 * H, NOW + 6 * H], monkeypatch)
    flaky = {row[0] for row in boards[0] if row[0].startswith("flaky:")}
    assert flaky == {"flaky:package:1", "flaky:package:2", "flaky:package:5"}


def test_a_running_jobs_baseline_is_read_as_far_as_it_walks_back(filled, monkeypatch):
    """Package 7 runs daily, its runtimes spread wider before the last 40 days: its running
    job's baseline spread comes from 8 weeks of weekday groups, past the first runs read.
    Package 8 runs hourly: its baseline is the last 31 runs."""
    for day in range(1, 61):
        spread = 1.2 if day <= 40 else 2.5
        filled.job(package_id=7, created_at=NOW - day * D, runtime=round(600 * spread ** (day * 3 % 5 - 2)))
    for hour in range(1, 241):
        filled.job(package_id=8, created_at=NOW - hour * H, runtime=300)
    for package_id in (7, 8):
        filled.job(package_id=package_id, created_at=NOW - 3 * H, started_at=NOW - 3 * H, status="running")
    boards = [seen(filled.url, now) for now in (NOW, NOW + 6 * H)]
    monkeypatch.setattr(anomaly_checks, "FIRST_READ", anomaly_checks.RUNNING_HISTORY)
    assert [seen(filled.url, now) for now in (NOW, NOW + 6 * H)] == boards
    assert len([row for row in boards[0] if row[0].startswith("slow:job:")]) == 2


def test_a_hand_packages_successes_are_counted_as_far_as_the_verdict_needs(filled):
    """Successes are counted up to HAND_MIN_SUCCESSES a person: 4 + 3 by two people is 7, too few
    (and said so), 5 + 3 is enough, and 20 by one is judged like 8."""
    def runs(package_id: int, people: dict[int, int]) -> None:
        first = NOW - 3 * D
        rows = [job_row(filled.next_job + k, package_id=package_id, created_at=first + k * H, runtime=60)
                | {"creator_id": person}
                for k, person in enumerate(p for p, count in people.items() for _ in range(count))]
        filled.next_job += len(rows)
        filled.jobs(rows)

    runs(7, {1: 4, 2: 3})
    runs(8, {1: 5, 2: 3})
    runs(9, {1: 20})
    hand = {row[0]: row[1:] for row in seen(filled.url, NOW) if str(row[0]).startswith("package:")}
    assert hand["package:7"] == ("unknown", "run by hand; 7 successes, too few (< 8) to judge staleness: "
                                            "set stale_after for it")
    assert hand["package:8"][0] != "unknown" and hand["package:9"][0] != "unknown"
    assert "too few" not in hand["package:8"][1] + hand["package:9"][1]
