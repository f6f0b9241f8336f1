"""archiver check: each rule at its threshold and not before, the config file, the board, the CLI."""

from __future__ import annotations

import json
from datetime import datetime, timedelta, timezone

import pytest

from archiver import database
from archiver.config import Settings
from archiver.errors import ConfigError
from archiver.flows.alerts import CheckOptions, ack, run_check
from archiver.flows.checkconfig import CheckConfig, load_config, parse_config, parse_duration
from archiver.flows.health import evaluate
from archiver.flows.schedule_time import Interval, add_months
from clirun import run_cli
from healthrows import Rows, alert_rows

NOW = datetime(2026, 11, 28, 12, 0, tzinfo=timezone.utc)
SECOND = timedelta(seconds=1)
H = timedelta(hours=1)


def board(url: str, now: datetime, config: CheckConfig | None = None):
    engine = database.make_engine(url)
    try:
        return evaluate(engine, config or CheckConfig(), now)
    finally:
        engine.dispose()


def keys(url: str, now: datetime, config: CheckConfig | None = None, kind: str | None = None) -> set[str]:
    return {a.key for a in board(url, now, config).alerts if kind is None or a.kind == kind}


def fires_from(url: str, moment: datetime, key: str, config: CheckConfig | None = None) -> None:
    """`key` is raised at `moment` and not one second before."""
    assert key not in keys(url, moment - SECOND, config)
    assert key in keys(url, moment, config)


# -- schedule time -------------------------------------------------------------------------------------
def test_months_are_calendar_months_clamped_to_the_month_end():
    start = datetime(2026, 1, 31, 6, 0, tzinfo=timezone.utc)
    assert add_months(start, 1) == datetime(2026, 2, 28, 6, 0, tzinfo=timezone.utc)
    assert add_months(start, 13) == datetime(2027, 2, 28, 6, 0, tzinfo=timezone.utc)
    monthly = Interval.of(1, "months")
    assert monthly.slots_before(start, datetime(2026, 3, 30, tzinfo=timezone.utc)) == 1
    assert monthly.first_at_or_after(start, datetime(2026, 3, 1, tzinfo=timezone.utc)) == \
        datetime(2026, 3, 31, 6, 0, tzinfo=timezone.utc)
    assert Interval.of(0, "hours") is None and Interval.of(1, "fortnights") is None


# -- healthy history -----------------------------------------------------------------------------------
def test_healthy_hourly_and_daily_schedules_give_no_alert(rows):
    start = NOW - timedelta(days=30)
    rows.schedule(1, start_at=start, packages=(1,), name="hourly")
    rows.schedule(2, start_at=start + timedelta(hours=2), unit="days", packages=(2,), name="daily")
    rows.hourly_history(1, 1, start, NOW - H)
    rows.hourly_history(2, 2, start + timedelta(hours=2), NOW, step=timedelta(days=1))
    rows.sync(NOW - timedelta(minutes=3))
    result = board(rows.url, NOW)
    assert result.alerts == []
    assert [s.state for s in result.subjects] == ["ok", "ok", "ok"]


# -- late ----------------------------------------------------------------------------------------------
def test_late_fires_when_the_grace_after_the_missed_run_has_passed(rows):
    rows.schedule(1, start_at=NOW - timedelta(days=2), packages=(1,))
    rows.hourly_history(1, 1, NOW - timedelta(days=2), NOW - 2 * H)        # last run 10:00; 11:00 missed
    fires_from(rows.url, NOW - H + timedelta(minutes=10), "late:schedule:1")  # grace: 10 % of 1 h, at least 10 min
    late = next(a for a in board(rows.url, NOW).alerts if a.kind == "late")
    assert late.since == NOW - H and late.severity == "warning"


def test_grace_is_a_tenth_of_a_long_interval(rows):
    rows.schedule(1, start_at=NOW - timedelta(days=20), unit="days", packages=(1,))
    rows.hourly_history(1, 1, NOW - timedelta(days=20), NOW - timedelta(days=2), step=timedelta(days=1))
    fires_from(rows.url, NOW - timedelta(days=1) + timedelta(hours=2, minutes=24), "late:schedule:1")


def test_a_stale_stored_next_run_at_causes_no_false_late(rows):
    start = NOW - timedelta(days=5)
    rows.schedule(1, start_at=start, packages=(1,), next_run_at=start, last_run_at=start)   # never refreshed
    rows.hourly_history(1, 1, start, NOW - H)
    assert keys(rows.url, NOW + timedelta(minutes=9)) == {"sync_stale"}
    fires_from(rows.url, NOW + timedelta(minutes=10), "late:schedule:1")


def test_an_up_to_date_next_run_at_gives_the_same_answer(rows):
    start = NOW - timedelta(days=5)
    rows.schedule(1, start_at=start, packages=(1,), next_run_at=NOW, last_run_at=NOW - H)
    rows.hourly_history(1, 1, start, NOW - H)
    fires_from(rows.url, NOW + timedelta(minutes=10), "late:schedule:1")


def test_a_next_run_at_after_the_last_run_wins_over_the_grid(rows):
    start = NOW - timedelta(days=5)
    rows.schedule(1, start_at=start, packages=(1,), next_run_at=NOW + 3 * H)   # e.g. the schedule was edited
    rows.hourly_history(1, 1, start, NOW - H)
    fires_from(rows.url, NOW + 3 * H + timedelta(minutes=10), "late:schedule:1")


def test_a_run_created_slightly_before_its_slot_counts_for_that_slot(rows):
    rows.schedule(1, start_at=NOW - timedelta(days=1), packages=(1,), next_run_at=NOW)
    rows.job(package_id=1, schedule_id=1, created_at=NOW - timedelta(seconds=2))
    assert "late:schedule:1" not in keys(rows.url, NOW + timedelta(minutes=30))
    fires_from(rows.url, NOW + H + timedelta(minutes=10), "late:schedule:1")


def test_no_late_while_the_previous_run_is_open_and_overlap_is_off(rows):
    rows.schedule(1, start_at=NOW - timedelta(days=1), packages=(1,), overlap=False)
    rows.job(package_id=1, schedule_id=1, created_at=NOW - H, status="running")
    assert "late:schedule:1" not in keys(rows.url, NOW + timedelta(minutes=30))


def test_a_stopped_archiver_gives_sync_stale_and_no_flood_of_late_alerts(rows):
    start = NOW - timedelta(days=3)
    for schedule_id in range(1, 6):
        rows.schedule(schedule_id, start_at=start, packages=(schedule_id,))
        rows.hourly_history(schedule_id, schedule_id, start, NOW - H)
    rows.sync(NOW - timedelta(minutes=2))
    later = NOW + timedelta(hours=8)                 # nothing synced since: the archive ends at NOW
    result = board(rows.url, later)
    assert [a.key for a in result.alerts] == ["sync_stale"]
    assert result.as_of == NOW - timedelta(minutes=2)


def test_disabled_schedules_are_shown_never_alerted(rows):
    rows.schedule(1, start_at=NOW - timedelta(days=90), packages=(1,), status="disabled")
    rows.job(package_id=1, schedule_id=1, created_at=NOW - timedelta(days=80), status="failed")
    rows.job(package_id=1, schedule_id=1, created_at=NOW - timedelta(days=5), status="running")
    result = board(rows.url, NOW)
    assert [a.key for a in result.alerts] == ["sync_stale"]
    assert result.subjects[1].state == "disabled"


# -- stale ---------------------------------------------------------------------------------------------
def test_stale_after_two_intervals_without_a_success(rows):
    rows.schedule(1, start_at=NOW - timedelta(days=1), packages=(1,))
    rows.hourly_history(1, 1, NOW - timedelta(days=1), NOW - 6 * H)
    rows.hourly_history(1, 1, NOW - 5 * H, NOW, status="failed")
    last_success = NOW - 6 * H + timedelta(seconds=5 + 30 + 600)
    fires_from(rows.url, last_success + 2 * H, "stale:schedule:1")   # p95 runtime 10 min < 1 interval


def test_stale_allows_interval_plus_p95_runtime_for_long_runs(rows):
    rows.schedule(1, start_at=NOW - timedelta(days=1), packages=(1,))
    for k in range(20):
        rows.job(package_id=1, schedule_id=1, created_at=NOW - timedelta(days=1) + k * H, runtime=3 * 3600)
    last_success = NOW - timedelta(days=1) + 19 * H + timedelta(seconds=30 + 3 * 3600)
    fires_from(rows.url, last_success + H + 3 * H, "stale:schedule:1", CheckConfig())


def test_a_package_run_by_hand_is_stale_after_twice_its_median_gap(rows):
    first = NOW - timedelta(days=2)
    for k in range(8):
        rows.job(package_id=7, created_at=first + k * 3 * H, runtime=60)
    last_success = first + 7 * 3 * H + timedelta(seconds=90)
    fires_from(rows.url, last_success + 6 * H, "stale:package:7")


def test_a_package_with_too_few_successes_is_unknown_unless_a_threshold_is_given(rows):
    for k in range(7):
        rows.job(package_id=7, created_at=NOW - timedelta(days=3) + k * H, runtime=60)
    result = board(rows.url, NOW)
    assert [s.state for s in result.subjects if s.type == "package"] == ["unknown"]
    config = parse_config({"packages": {"7": {"stale_after": "2d"}}})
    last_success = NOW - timedelta(days=3) + 6 * H + timedelta(seconds=90)
    fires_from(rows.url, last_success + timedelta(days=2), "stale:package:7", config)


# -- failing -------------------------------------------------------------------------------------------
def test_failing_after_the_last_three_finished_runs_failed(rows):
    start = NOW - timedelta(hours=10)
    rows.job(package_id=7, created_at=start, status="completed")
    rows.job(package_id=7, created_at=start + H, status="failed")
    rows.job(package_id=7, created_at=start + 2 * H, status="failed")
    rows.job(package_id=7, created_at=start + 3 * H, status="stopped")       # a person's decision: neither
    assert "failing:package:7" not in keys(rows.url, NOW)
    rows.job(package_id=7, created_at=start + 4 * H, status="failed")
    assert "failing:package:7" in keys(rows.url, NOW)
    config = parse_config({"packages": {"7": {"failing_runs": 4}}})
    assert "failing:package:7" not in keys(rows.url, NOW, config)


def test_a_run_recovered_on_retry_is_not_a_failed_run(rows):
    rows.schedule(1, start_at=NOW - 4 * H, packages=(1,), auto_retry=True, retries=3)
    for k in range(3):
        rows.job(package_id=1, schedule_id=1, created_at=NOW - 4 * H + k * H, status="failed")
        rows.job(package_id=1, schedule_id=1, attempts=1, created_at=NOW - 4 * H + k * H + timedelta(minutes=5),
                 status="completed" if k == 1 else "failed")
    assert "failing:schedule:1" not in keys(rows.url, NOW)
    rows.job(package_id=1, schedule_id=1, created_at=NOW - H, status="failed")
    rows.job(package_id=1, schedule_id=1, attempts=1, created_at=NOW - H + timedelta(minutes=5), status="failed")
    assert "failing:schedule:1" not in keys(rows.url, NOW)    # runs: failed, ok, failed, failed
    rows.job(package_id=1, schedule_id=1, attempts=2, created_at=NOW - H + timedelta(minutes=9), status="failed")
    assert "failing:schedule:1" not in keys(rows.url, NOW)    # one retry left
    rows.job(package_id=1, schedule_id=1, attempts=3, created_at=NOW - H + timedelta(minutes=13), status="failed")
    alert = next(a for a in board(rows.url, NOW).alerts if a.key == "failing:schedule:1")
    assert "retries exhausted" in alert.message and alert.package_id == 1


# -- stuck ---------------------------------------------------------------------------------------------
def test_stuck_after_an_hour_or_twice_the_p99_runtime(rows):
    for k in range(10):
        rows.job(package_id=7, created_at=NOW - timedelta(days=2) + k * H, runtime=600)
        rows.job(package_id=8, created_at=NOW - timedelta(days=2) + k * H, runtime=5400)
    began = NOW - timedelta(days=1)
    quick = rows.job(package_id=7, created_at=began - H, started_at=began, status="running")
    slow = rows.job(package_id=8, created_at=began, status="queued")
    fires_from(rows.url, began + H, f"stuck:job:{quick}")                       # started_at, not created_at
    fires_from(rows.url, began + 3 * H, f"stuck:job:{slow}")                    # 2 × p99 = 3 h
    capped = parse_config({"packages": {"8": {"stuck_after": "90m"}}})
    fires_from(rows.url, began + timedelta(minutes=90), f"stuck:job:{slow}", capped)


# -- the archiver itself -------------------------------------------------------------------------------
def test_sync_stale_an_hour_after_the_last_successful_incremental_sync(rows):
    rows.sync(NOW - 3 * H)
    rows.sync(NOW - 2 * H, mode="ids")
    rows.sync(NOW - 2 * H, outcome="partial")
    fires_from(rows.url, NOW - 2 * H, "sync_stale")
    fires_from(rows.url, NOW, "sync_stale", parse_config({"defaults": {"sync_stale_after": "3h"}}))


def test_sync_failing_after_three_runs_that_did_not_end_ok(rows):
    rows.sync(NOW - 4 * H)
    rows.sync(NOW - 3 * H, outcome="stopped")
    rows.sync(NOW - 2 * H, outcome="failed")
    rows.sync(NOW - H, outcome="running")              # in progress: not judged
    assert "sync_failing" not in keys(rows.url, NOW)
    rows.sync(NOW - timedelta(minutes=30), outcome="auth_failed")
    assert "sync_failing" in keys(rows.url, NOW)


# -- configuration -------------------------------------------------------------------------------------
def test_severities_from_a_config_file(rows, tmp_path):
    path = tmp_path / "check.toml"
    path.write_text('[defaults]\nseverity = { late = "critical" }\n\n[schedules.2]\n'
                    'severity = { late = "warning" }\ngrace = "45m"\n')
    for schedule_id in (1, 2):
        rows.schedule(schedule_id, start_at=NOW - timedelta(days=1), packages=(schedule_id,))
        rows.hourly_history(schedule_id, schedule_id, NOW - timedelta(days=1), NOW - 3 * H)
    config = load_config(str(path))
    found = {a.key: a.severity for a in board(rows.url, NOW, config).alerts if a.kind == "late"}
    assert found == {"late:schedule:1": "critical", "late:schedule:2": "warning"}
    fires_from(rows.url, NOW - 2 * H + timedelta(minutes=45), "late:schedule:2", config)


@pytest.mark.parametrize("text, names", [
    ("[defaults]\nstale_afer = '2h'\n", "defaults.stale_afer"),
    ("[packages.7]\nstuck_after = 'soon'\n", "packages.7.stuck_after"),
    ("[schedules.1]\nseverity = { late = 'page-me' }\n", "schedules.1.severity.late"),
    ("[schedules.x]\ngrace = '1h'\n", "schedules.x"),
    ("[defaults\n", "not valid TOML"),
])
def test_a_bad_config_file_names_the_file_and_the_key(tmp_path, text, names):
    path = tmp_path / "check.toml"
    path.write_text(text)
    with pytest.raises(ConfigError) as error:
        load_config(str(path))
    assert str(path) in str(error.value) and names in str(error.value)


def test_durations():
    assert parse_duration("90m") == timedelta(minutes=90)
    assert parse_duration("1h30m") == timedelta(minutes=90)
    assert parse_duration("2d") == timedelta(days=2)
    for bad in ("", "6", "h", "6 hours", "-1h"):
        with pytest.raises(ConfigError):
            parse_duration(bad)


# -- the alerts table, on every backend ----------------------------------------------------------------
def test_alerts_are_recorded_once_per_episode(db_url):
    rows = Rows(db_url)
    rows.schedule(1, start_at=NOW - timedelta(days=1), packages=(1,))
    rows.hourly_history(1, 1, NOW - timedelta(days=1), NOW - 2 * H)
    rows.sync(NOW - timedelta(minutes=1))
    settings = Settings(account=None, database_url=db_url)
    t1, t2, t3, t4 = NOW, NOW + timedelta(minutes=5), NOW + timedelta(minutes=10), NOW + timedelta(minutes=15)
    run_check(settings, CheckOptions(now=t1))
    first = alert_rows(db_url)["late:schedule:1"]
    assert (first.first_seen_at, first.last_seen_at, first.resolved_at, first.since) == (t1, t1, None, NOW - H)
    run_check(settings, CheckOptions(now=t2))
    again = alert_rows(db_url)["late:schedule:1"]
    assert (again.first_seen_at, again.last_seen_at, again.resolved_at) == (t1, t2, None)
    rows.hourly_history(1, 1, NOW - H, NOW)          # the missed runs arrive
    rows.sync(t3 - timedelta(minutes=1))
    run_check(settings, CheckOptions(now=t3))
    assert alert_rows(db_url)["late:schedule:1"].resolved_at == t3
    rows.sync(t4 + 2 * H)                            # the next runs do not come: a new episode
    run_check(settings, CheckOptions(now=t4 + 2 * H))
    back = alert_rows(db_url)["late:schedule:1"]
    assert (back.first_seen_at, back.resolved_at, back.since) == (t4 + 2 * H, None, NOW + H)
    rows.close()


def test_ack_silences_an_alert_and_an_unknown_key_is_an_error(db_url):
    rows = Rows(db_url)
    rows.job(package_id=7, created_at=NOW - 3 * H, status="running")
    rows.sync(NOW)
    settings = Settings(account=None, database_url=db_url)
    options = CheckOptions(now=NOW, fail_on="warning")
    assert run_check(settings, options).exit_code == 1
    ack(settings, "stuck:job:1", timedelta(hours=24), now=NOW)
    result = run_check(settings, options)
    assert result.exit_code == 0 and result.board.alerts[0].silenced_until == NOW + timedelta(hours=24)
    assert result.as_dict()["subjects"][1]["silenced"] == ["stuck:job:1"]
    assert run_check(settings, CheckOptions(now=NOW + timedelta(hours=25), fail_on="warning")).exit_code == 1
    with pytest.raises(ConfigError, match="no alert 'late:schedule:9'"):
        ack(settings, "late:schedule:9", timedelta(hours=1), now=NOW)
    rows.close()


# -- the command line ----------------------------------------------------------------------------------
def test_check_json_shape_and_exit_codes(capsys, monkeypatch, rows):
    rows.schedule(1, start_at=NOW - timedelta(days=1), packages=(1,), name="nightly\x1b[2J<!channel>")
    rows.hourly_history(1, 1, NOW - timedelta(days=1), NOW - 2 * H)
    rows.sync(NOW - timedelta(minutes=1))
    base = ["check", "--db", rows.url, "--now", NOW.isoformat()]
    out = run_cli(capsys, monkeypatch, [*base, "--format", "json"])
    assert out.code == 0                                           # late is a warning by default
    data = json.loads(out.out)
    assert set(data) == {"ok", "checked_at", "alerts", "subjects"} and data["ok"] is True
    assert data["checked_at"] == "2026-11-28T12:00:00Z"
    assert data["alerts"] == [{"key": "late:schedule:1", "kind": "late", "severity": "warning", "schedule_id": 1,
                               "package_id": None, "job_id": None, "since": "2026-11-28T11:00:00Z",
                               "message": data["alerts"][0]["message"]}]
    assert data["subjects"][1]["name"] == "nightly\x1b[2J<!channel>" and data["subjects"][1]["state"] == "late"
    failed = run_cli(capsys, monkeypatch, [*base, "--fail-on", "warning"])
    assert failed.code == 1
    assert "\x1b" not in failed.out and "nightly\\x1b[2J" in failed.out
    assert run_cli(capsys, monkeypatch, [*base, "--fail-on", "fatal"]).code == 2


def test_check_usage_errors_exit_2(capsys, monkeypatch, rows, tmp_path):
    bad = tmp_path / "bad.toml"
    bad.write_text("[packages.7]\nstuck_afterr = '1h'\n")
    out = run_cli(capsys, monkeypatch, ["check", "--db", rows.url, "--config", str(bad)])
    assert out.code == 2 and str(bad) in out.err and "packages.7.stuck_afterr" in out.err
    out = run_cli(capsys, monkeypatch, ["check", "--db", rows.url], env={"ARCHIVER_CHECK_CONFIG": str(bad)})
    assert out.code == 2 and "stuck_afterr" in out.err
    assert run_cli(capsys, monkeypatch, ["check", "--db", f"sqlite:///{tmp_path}/none.db"]).code == 2
    assert run_cli(capsys, monkeypatch, ["ack", "stuck:job:1", "--for", "soon", "--db", rows.url]).code == 2
    out = run_cli(capsys, monkeypatch, ["ack", "stuck:job:1", "--db", rows.url])
    assert out.code == 2 and "no alert 'stuck:job:1'" in out.err


def test_ack_command(capsys, monkeypatch, rows):
    rows.job(package_id=7, created_at=NOW - 3 * H, status="running")
    base = ["--db", rows.url]
    assert run_cli(capsys, monkeypatch, ["check", *base, "--fail-on", "warning", "--now", NOW.isoformat()]).code == 1
    out = run_cli(capsys, monkeypatch, ["ack", "stuck:job:1", "--for", "2h", *base])
    assert out.code == 0 and "silenced until" in out.out
