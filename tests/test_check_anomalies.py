"""archiver check: the anomaly kinds (slow, zero_records, volume_drop, flaky), each open at the right
time, resolved by a later normal run, with severities from the config, keys that fit and say the same
thing every time. job_anomalies rows are inserted directly: they stand for the scorer."""

from __future__ import annotations

import json
from datetime import datetime, timedelta, timezone

import pytest
from sqlalchemy import insert, select

from archiver import anomaly, database
from archiver.flows.alerts import CheckOptions, run_check
from archiver.config import Settings
from archiver.flows.anomaly_checks import ANOMALY_WINDOW, MAX_KEY, anomaly_key
from archiver.flows.checkconfig import KINDS, CheckConfig, parse_config
from archiver.flows.health import evaluate
from archiver.models import AlertRow, JobAnomalyRow
from clirun import run_cli
from healthrows import Rows, alert_rows

NOW = datetime(2026, 11, 28, 12, 0, tzinfo=timezone.utc)
SECOND = timedelta(seconds=1)
H = timedelta(hours=1)
D = timedelta(days=1)


def verdict(rows: Rows, job_id: int, package_id: int, kind: str, created_at: datetime, output_key: str = "",
            message: str = "runtime 2,400 s: 4.0x the median 600 s of 10 prior successful runs") -> None:
    with rows.engine.begin() as conn:
        conn.execute(insert(JobAnomalyRow.__table__), [dict(
            job_id=job_id, kind=kind, output_key=output_key, package_id=package_id,
            severity=anomaly.SEVERITY[kind], score=5.0, baseline_median=600.0, mad=0.1, n=10, threshold=1800.0,
            message=message, job_created_at=created_at, detected_at=created_at)])


def board(url: str, now: datetime = NOW, config: CheckConfig | None = None):
    engine = database.make_engine(url)
    try:
        return evaluate(engine, config or CheckConfig(), now)
    finally:
        engine.dispose()


def alerts(url: str, now: datetime = NOW, config: CheckConfig | None = None) -> dict:
    return {a.key: a for a in board(url, now, config).alerts if a.kind in anomaly.KINDS}


LAST = NOW - H   # the latest success of a hand_history (not stale yet: its median gap is 1 h)
LATER = NOW - timedelta(minutes=30)


def hand_history(rows: Rows, package_id: int, count: int = 10, last: datetime = LAST) -> list[int]:
    """`count` hourly successes of a package run by hand, the last created at `last`."""
    return [rows.job(package_id=package_id, created_at=last - (count - 1 - k) * H) for k in range(count)]


# -- slow, zero_records, volume_drop: the latest success decides -----------------------------------------
def test_slow_is_open_while_the_latest_success_is_slow_and_resolves_on_a_normal_run(rows):
    ids = hand_history(rows, 7)
    verdict(rows, ids[-1], 7, "slow", LAST)
    found = alerts(rows.url)
    assert list(found) == ["slow:package:7"]
    slow = found["slow:package:7"]
    assert (slow.kind, slow.severity, slow.package_id, slow.job_id, slow.schedule_id) == ("slow", "warning", 7,
                                                                                          ids[-1], None)
    assert slow.since == LAST and "slow (job" in slow.message and "4.0x the median" in slow.message
    rows.job(package_id=7, created_at=LATER - SECOND, status="failed")       # a failure decides nothing
    assert "slow:package:7" in alerts(rows.url)
    rows.job(package_id=7, created_at=LATER)                                 # a later normal success
    assert alerts(rows.url) == {}


def test_only_a_recent_latest_success_counts(rows):
    ids = hand_history(rows, 7, last=NOW - ANOMALY_WINDOW)
    verdict(rows, ids[-1], 7, "slow", NOW - ANOMALY_WINDOW)
    assert "slow:package:7" in alerts(rows.url)
    assert alerts(rows.url, NOW + SECOND) == {}                              # older than the window
    older = hand_history(rows, 8, last=NOW - 2 * H)
    verdict(rows, older[3], 8, "slow", NOW - 8 * H)                          # not the latest success
    assert "slow:package:8" not in alerts(rows.url)


def test_zero_records_and_volume_drop_are_per_output_and_zero_records_is_critical(rows):
    ids = hand_history(rows, 7)
    verdict(rows, ids[-1], 7, "zero_records", LAST, "orders_out", "completed with 0 records on orders_out")
    verdict(rows, ids[-1], 7, "volume_drop", LAST, "customers_out", "customers_out: 12 records, dropped")
    verdict(rows, ids[-1], 7, "volume_drop", LAST, "rejects", "rejects: 0 records, dropped")
    found = alerts(rows.url)
    assert {k: a.severity for k, a in found.items()} == {
        "zero_records:package:7:orders_out": "critical", "volume_drop:package:7:customers_out": "warning",
        "volume_drop:package:7:rejects": "warning"}
    result = board(rows.url)
    package = next(s for s in result.subjects if s.label == "package:7")
    assert package.state == "anomalous"
    assert "completed with 0 records on orders_out" in package.why and "customers_out: 12 records" in package.why
    rows.job(package_id=7, created_at=LATER)
    assert alerts(rows.url) == {}


def test_a_new_verdict_on_the_next_run_keeps_the_alert_open(rows):
    ids = hand_history(rows, 7)
    verdict(rows, ids[-1], 7, "zero_records", LAST, "out")
    later = rows.job(package_id=7, created_at=LATER)
    assert alerts(rows.url) == {}
    verdict(rows, later, 7, "zero_records", LATER, "out")
    assert alerts(rows.url)["zero_records:package:7:out"].job_id == later


def test_output_keys_that_are_long_or_not_plain_get_a_stable_digest():
    assert anomaly_key("slow", 7) == "slow:package:7"
    assert anomaly_key("zero_records", 7, "orders-out_2.v1") == "zero_records:package:7:orders-out_2.v1"
    long = "s3://bucket/" + "x" * 300
    key = anomaly_key("volume_drop", 2**62, long)
    assert len(key) == MAX_KEY and key == anomaly_key("volume_drop", 2**62, long)
    assert key.startswith(f"volume_drop:package:{2**62}:s3___bucket_xxx") and key[-13] == "~"
    assert anomaly_key("volume_drop", 2**62, long + "y") != key                        # the digest tells them apart
    spaced = anomaly_key("zero_records", 7, "Orders; rm -rf / \x1b[2J")
    assert spaced.startswith("zero_records:package:7:Orders__rm_-rf_____2J~") and len(spaced) <= MAX_KEY
    for output in ("a" * 255, "é", "", "x" * 232):
        assert len(anomaly_key("zero_records", 2**63 - 1, output)) <= MAX_KEY


def test_outputs_differing_only_in_case_get_keys_differing_beyond_case(rows):
    """A case-blind alerts.key (MariaDB's collation) must not merge them (there, job_anomalies
    itself cannot hold both; SQLite and PostgreSQL can)."""
    ids = hand_history(rows, 7)
    verdict(rows, ids[-1], 7, "zero_records", LAST, "orders")
    verdict(rows, ids[-1], 7, "zero_records", LAST, "Orders")
    keys = set(alerts(rows.url))
    assert len(keys) == 2 and len({k.casefold() for k in keys}) == 2
    assert "zero_records:package:7:Orders" in keys and keys == set(alerts(rows.url))


def test_long_output_keys_are_recorded_in_the_alerts_table(rows):
    ids = hand_history(rows, 7)
    output = "destination/" + "é" * 240
    verdict(rows, ids[-1], 7, "zero_records", LAST, output)
    engine = database.make_engine(rows.url)
    try:
        from archiver.flows.alerts import record
        result = evaluate(engine, CheckConfig(), NOW)
        record(engine, result, NOW)
        with engine.connect() as conn:
            stored = conn.execute(select(AlertRow.__table__.c.key).where(AlertRow.__table__.c.kind == "zero_records")
                                  ).scalars().all()
    finally:
        engine.dispose()
    assert stored == [anomaly_key("zero_records", 7, output)] and len(stored[0]) <= MAX_KEY


# -- severities, subjects ------------------------------------------------------------------------------------
def test_severities_are_overridden_per_package_and_per_schedule(rows):
    rows.schedule(1, start_at=NOW - 2 * D, packages=(1,))
    rows.hourly_history(1, 1, NOW - 2 * D, NOW - H)
    scheduled = rows.next_job - 1
    verdict(rows, scheduled, 1, "zero_records", NOW - H, "out")
    ids = hand_history(rows, 7)
    verdict(rows, ids[-1], 7, "slow", LAST)
    config = parse_config({"defaults": {"severity": {"zero_records": "warning"}},
                           "schedules": {"1": {"severity": {"zero_records": "critical"}}},
                           "packages": {"7": {"severity": {"slow": "critical"}}}})
    found = alerts(rows.url, config=config)
    assert found["zero_records:package:1:out"].severity == "critical"
    assert found["slow:package:7"].severity == "critical"
    found = alerts(rows.url, config=parse_config({"defaults": {"severity": {"zero_records": "warning"}}}))
    assert found["zero_records:package:1:out"].severity == "warning"
    schedule = next(s for s in board(rows.url).subjects if s.label == "schedule:1")
    assert schedule.state == "anomalous" and [a.key for a in schedule.alerts] == ["zero_records:package:1:out"]


def test_other_states_come_first_and_a_disabled_schedule_is_never_alerted(rows):
    rows.schedule(1, start_at=NOW - 2 * D, packages=(1,))
    rows.hourly_history(1, 1, NOW - 2 * D, NOW - 2 * H)                     # 11:00 missed: late
    verdict(rows, rows.next_job - 1, 1, "slow", NOW - 2 * H)
    rows.schedule(2, start_at=NOW - 2 * D, packages=(2,), status="disabled")
    rows.hourly_history(2, 2, NOW - 2 * D, NOW - 2 * H)
    verdict(rows, rows.next_job - 1, 2, "zero_records", NOW - 2 * H, "out")
    result = board(rows.url)
    first = next(s for s in result.subjects if s.label == "schedule:1")
    assert first.state == "late" and {a.kind for a in first.alerts} == {"late", "slow"}
    assert "slow (job" in first.why
    assert not any(a.schedule_id == 2 for a in result.alerts)


def test_a_hand_run_of_a_scheduled_package_is_still_on_the_board(rows):
    rows.schedule(1, start_at=NOW - 2 * D, packages=(7,))
    ids = hand_history(rows, 7)                                              # by hand, not by the schedule
    verdict(rows, ids[-1], 7, "slow", LAST)
    result = board(rows.url)
    assert "slow:package:7" in {a.key for a in result.alerts}
    from archiver.flows.health import board_table
    rows.package(7, name="nightly <orders>\x1b[31m")
    line = next(x for x in board_table(board(rows.url)).splitlines() if "package:7" in x)
    assert "nightly <orders>" in line and "\x1b" not in line   # its name, terminal escapes neutralised


# -- flaky ------------------------------------------------------------------------------------------------
def chain(rows: Rows, package_id: int, at: datetime, retries: int = 0, schedule_id: int | None = None) -> None:
    """A first attempt at `at`, failed when retried, and `retries` retries, the last one a success."""
    rows.job(package_id=package_id, created_at=at, status="failed" if retries else "completed",
             schedule_id=schedule_id)
    for k in range(1, retries + 1):
        rows.job(package_id=package_id, created_at=at + k * 10 * timedelta(minutes=1), attempts=k,
                 status="completed" if k == retries else "failed", schedule_id=schedule_id)


def test_flaky_while_retries_keep_rescuing_runs_and_cleared_by_clean_first_attempts(rows):
    start = NOW - 5 * D
    for k in range(6):                                                       # 3 of 6 chains needed a retry
        chain(rows, 7, start + k * 6 * H, retries=1 if k % 2 else 0)
    found = alerts(rows.url)
    assert list(found) == ["flaky:package:7"] and found["flaky:package:7"].severity == "warning"
    assert "3 of 6 runs in 14 days needed a retry" in found["flaky:package:7"].message
    for k in range(4):
        chain(rows, 7, start + D + k * 6 * H)
    assert "flaky:package:7" in alerts(rows.url)                             # 4 clean first attempts
    chain(rows, 7, start + 2 * D)
    assert alerts(rows.url) == {}                                            # 5: cleared
    config = parse_config({"packages": {"8": {"severity": {"flaky": "critical"}}}})
    for k in range(6):
        chain(rows, 8, start + k * 6 * H, retries=2)
    assert alerts(rows.url, config=config)["flaky:package:8"].severity == "critical"


def test_flaky_counts_only_the_last_14_days(rows):
    start = NOW - 20 * D
    for k in range(6):
        chain(rows, 7, start + k * 6 * H, retries=1)
    assert alerts(rows.url, start + 2 * D) and alerts(rows.url) == {}


def test_a_flaky_schedule_shows_on_its_line(rows):
    rows.schedule(3, start_at=NOW - 3 * D, packages=(3,), auto_retry=True, retries=2)
    for k in range(6):
        chain(rows, 3, NOW - 3 * D + k * H, retries=1, schedule_id=3)
    found = alerts(rows.url, NOW - 3 * D + 6 * H)
    assert found["flaky:package:3"].schedule_id == 3


# -- slow:job: a running job past its package's slow bound ---------------------------------------------------
def test_a_running_job_is_slow_past_its_bound_and_stuck_stays_a_separate_alert(rows):
    hand_history(rows, 7, last=NOW - 2 * D)                                  # 10 runs of 600 s
    started = NOW - D
    job = rows.job(package_id=7, created_at=started - timedelta(minutes=1), started_at=started, status="running")
    key = f"slow:job:{job}"
    bound = timedelta(seconds=1800)                                          # 3 × the median (spread floor: less)
    assert key not in alerts(rows.url, started + bound)
    found = alerts(rows.url, started + bound + SECOND)
    assert found[key].since == started and found[key].job_id == job and found[key].severity == "warning"
    keys = {a.key for a in board(rows.url, started + bound + SECOND).alerts}
    assert f"stuck:job:{job}" not in keys                                    # stuck: 1 h at the least
    keys = {a.key for a in board(rows.url, started + H).alerts}
    assert {key, f"stuck:job:{job}"} <= keys
    config = parse_config({"packages": {"7": {"severity": {"slow": "critical"}}}})
    assert alerts(rows.url, started + H, config)[key].severity == "critical"


def test_a_running_job_with_too_little_history_is_not_judged(rows):
    hand_history(rows, 7, count=7, last=NOW - 2 * D)
    job = rows.job(package_id=7, created_at=NOW - D, status="running")
    assert f"slow:job:{job}" not in alerts(rows.url)


# -- the config, JSON, the CLI -----------------------------------------------------------------------------
def test_the_config_knows_the_new_kinds():
    assert set(anomaly.KINDS) <= set(KINDS)
    config = parse_config({"defaults": {"severity": {k: "critical" for k in anomaly.KINDS}}})
    assert all(config.severity(k) == "critical" for k in anomaly.KINDS)
    assert CheckConfig().severity("zero_records") == "critical" and CheckConfig().severity("flaky") == "warning"


def test_json_lists_the_new_kinds_and_a_critical_anomaly_fails_the_check(capsys, monkeypatch, rows):
    ids = hand_history(rows, 7)
    verdict(rows, ids[-1], 7, "zero_records", LAST, "out", "completed with 0 records on out")
    verdict(rows, ids[-1], 7, "slow", LAST)
    out = run_cli(capsys, monkeypatch, ["check", "--db", rows.url, "--now", NOW.isoformat(), "--format", "json"])
    assert out.code == 1
    data = json.loads(out.out)
    found = {a["key"]: a for a in data["alerts"] if a["kind"] in anomaly.KINDS}
    assert {k: (a["kind"], a["severity"]) for k, a in found.items()} == {
        "zero_records:package:7:out": ("zero_records", "critical"), "slow:package:7": ("slow", "warning")}
    assert found["slow:package:7"]["job_id"] == ids[-1] and found["slow:package:7"]["package_id"] == 7
    package = next(s for s in data["subjects"] if s["subject"] == "package:7")
    assert package["state"] == "anomalous" and set(package["alerts"]) == set(found)


# -- the alerts table, on every backend --------------------------------------------------------------------
def test_anomaly_alerts_open_and_resolve_in_the_alerts_table(db_url):
    rows = Rows(db_url)
    try:
        ids = hand_history(rows, 7)
        verdict(rows, ids[-1], 7, "zero_records", LAST, "out")
        verdict(rows, ids[-1], 7, "slow", LAST)
        for k in range(6):
            chain(rows, 9, NOW - 4 * D + k * 6 * H, retries=1)
        settings = Settings(account=None, database_url=db_url)
        result = run_check(settings, CheckOptions(now=NOW))
        assert result.exit_code == 1
        keys = {k for k, r in alert_rows(db_url).items() if r.resolved_at is None and r.kind in anomaly.KINDS}
        assert keys == {"zero_records:package:7:out", "slow:package:7", "flaky:package:9"}
        rows.job(package_id=7, created_at=LATER)
        run_check(settings, CheckOptions(now=NOW + SECOND))
        table = alert_rows(db_url)
        assert table["zero_records:package:7:out"].resolved_at is not None
        assert table["slow:package:7"].resolved_at is not None
        assert table["flaky:package:9"].resolved_at is None
    finally:
        rows.close()
