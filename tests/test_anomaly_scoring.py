"""Anomaly verdicts where jobs are written (flows.anomalies): newly finished jobs only, against
their past only; re-scoring; `report anomalies`; the [anomalies] thresholds of the check config."""

from __future__ import annotations

import copy
import csv
import gc
import io
import json
from datetime import datetime, timedelta, timezone

import pytest
from sqlalchemy import select

from archiver import anomaly, models
from archiver.config import Settings
from archiver.database import open_engine
from archiver.flows import anomalies as scoring
from archiver.flows.checkconfig import load_config
from archiver.flows.ingest import ingest
from archiver.flows.report import run_report
from archiver.flows.runs import SyncOptions
from archiver.store import Archive
from tests.clirun import run_cli
from tests.conftest import load_payload

START = datetime(2026, 9, 1, 6, 0, tzinfo=timezone.utc)
PACKAGE = 434
NEW = 1000  # the id of the job under test; history ids are 1..30


def iso(moment: datetime) -> str:
    return moment.strftime("%Y-%m-%dT%H:%M:%SZ")


def job(job_id: int, created: datetime, runtime: int = 600, records: tuple[int, int] = (1000, 400),
        status: str = "completed", package_id: int = PACKAGE) -> dict:
    """A v1 job payload: `records` on the outputs destination1 and destination2."""
    raw = copy.deepcopy(load_payload("job-v1-completed.json"))
    ended = created + timedelta(seconds=runtime + 10)
    raw.update(id=job_id, status=status, package_id=package_id, created_at=iso(created),
               started_at=iso(created + timedelta(seconds=10)), updated_at=iso(ended),
               completed_at=iso(ended) if status == "completed" else None, runtime_in_seconds=runtime)
    raw["outputs"] = [dict(o, id=job_id * 10 + k, records_count=n) for k, (o, n) in enumerate(zip(raw["outputs"], records))]
    return raw


def stable_history(n: int = 30) -> list[dict]:
    """A daily package: runtime 600 s ± 2 %, records 1000 ± 2 % and 400."""
    return [job(i, START + timedelta(days=i), runtime=600 + (i % 5 - 2) * 6, records=(1000 + (i % 3) * 10, 400))
            for i in range(1, n + 1)]


def load(db_url: str, raws: list[dict], **options):
    return ingest(Settings(account="acme", database_url=db_url), iter(raws), SyncOptions(**options))


def verdicts(db_url: str) -> list[tuple]:
    engine = open_engine(db_url, create=False)
    t = models.JobAnomalyRow.__table__
    try:
        with engine.connect() as conn:
            return [tuple(r) for r in conn.execute(select(t.c.job_id, t.c.kind, t.c.output_key, t.c.n, t.c.detected_at)
                                                    .order_by(t.c.job_id, t.c.kind, t.c.output_key))]
    finally:
        engine.dispose()


def kinds(db_url: str) -> list[tuple]:
    return [v[:3] for v in verdicts(db_url)]


def later(days: int = 31) -> datetime:
    return START + timedelta(days=days)


def test_a_10x_runtime_after_a_stable_history_is_slow_at_the_ingest_that_writes_it(db_url):
    load(db_url, stable_history())
    assert kinds(db_url) == []
    summary = load(db_url, [job(NEW, later(), runtime=6000)])
    assert summary.exit_code == 0
    (found,) = verdicts(db_url)
    assert found[:3] == (NEW, "slow", "") and found[3] == 30  # its 30 predecessors, never itself


def test_a_finished_job_synced_again_unchanged_or_updated_is_not_scored_again(db_url):
    load(db_url, [*stable_history(), job(NEW, later(), runtime=6000)])
    first = verdicts(db_url)
    assert [v[:2] for v in first] == [(NEW, "slow")]
    assert load(db_url, [job(NEW, later(), runtime=6000)]).unchanged == 1
    touched = job(NEW, later(), runtime=6000)
    touched["updated_at"] = iso(later() + timedelta(hours=5))   # newer snapshot, still completed
    assert load(db_url, [touched]).updated == 1
    assert verdicts(db_url) == first   # same detected_at: not re-scored


def test_a_job_scored_when_it_finishes_not_while_it_runs(db_url):
    load(db_url, stable_history())
    running = job(NEW, later(), runtime=5000, status="running")
    load(db_url, [running])
    assert kinds(db_url) == []
    load(db_url, [job(NEW, later(), runtime=6000)])
    assert kinds(db_url) == [(NEW, "slow", "")]


def test_zero_records_on_an_output_whose_history_has_records(db_url):
    load(db_url, [*stable_history(), job(NEW, later(), records=(0, 400))])
    assert kinds(db_url) == [(NEW, "zero_records", "destination1")]


def test_the_run_under_test_is_never_in_its_own_baseline(db_url):
    """Eight earlier runs give a verdict; the job itself would have made seven prior ones look like eight."""
    history = stable_history(8)
    load(db_url, [*history[:7], job(NEW, later(9), runtime=6000)])
    assert kinds(db_url) == []  # 7 prior runs: below min_history
    load(db_url, [history[7], job(NEW + 1, later(10), runtime=6000)])
    assert kinds(db_url) == [(NEW + 1, "slow", "")]


def test_rescore_replaces_verdicts_idempotently(db_url):
    load(db_url, [*stable_history(), job(NEW, later(), runtime=6000), job(NEW + 1, later(32), records=(0, 400))])
    at_sync = kinds(db_url)
    assert at_sync == [(NEW, "slow", ""), (NEW + 1, "zero_records", "destination1")]
    settings = Settings(account="acme", database_url=db_url)
    first = scoring.rescore(settings)
    assert kinds(db_url) == at_sync and first.kinds == {"slow": 1, "zero_records": 1}
    assert (first.packages, first.jobs) == (1, 32)
    scoring.rescore(settings, package_id=PACKAGE)
    assert kinds(db_url) == at_sync
    strict = scoring.rescore(settings, anomaly.Thresholds(slow_ratio=1e9))
    assert kinds(db_url) == [(NEW + 1, "zero_records", "destination1")] and strict.kinds["slow"] == 0


def test_a_scoring_failure_loses_no_job_and_is_recorded(db_url, monkeypatch):
    def broken(*args, **kwargs):
        raise ValueError("a bug in a rule")

    monkeypatch.setattr(anomaly, "score_at", broken)
    summary = load(db_url, [*stable_history(), job(NEW, later(), runtime=6000)], batch_size=10)
    assert (summary.inserted, summary.exit_code) == (31, 0)
    assert [e["kind"] for e in summary.errors] == ["anomaly"] * 4
    engine = open_engine(db_url, create=False)
    try:
        with engine.connect() as conn:
            assert conn.execute(select(models.JobRow.id)).scalars().all().__len__() == 31
            assert set(conn.execute(select(models.SyncErrorRow.kind)).scalars()) == {"anomaly"}
    finally:
        engine.dispose()
    assert kinds(db_url) == []


def test_a_run_killed_while_scoring_leaves_no_job_that_no_run_will_score(db_url, monkeypatch):
    """Jobs and their verdicts commit together: a run killed while scoring a batch stored none of
    it, so the next run stores and scores it. (Stored unscored, a job would stay so: a run scores
    the jobs it finds newly finished, and the next one finds it unchanged.)"""
    load(db_url, stable_history())
    real = scoring.Scorer.batch

    def killed(self, *args):
        raise KeyboardInterrupt

    monkeypatch.setattr(scoring.Scorer, "batch", killed)
    with pytest.raises(KeyboardInterrupt):
        load(db_url, [job(NEW, later(), runtime=6000)])
    monkeypatch.setattr(scoring.Scorer, "batch", real)
    assert load(db_url, [job(NEW, later(), runtime=6000)]).inserted == 1
    assert kinds(db_url) == [(NEW, "slow", "")]


def test_a_write_retried_whole_reports_only_its_last_attempts_scoring(sqlite_url, monkeypatch):
    """The verdicts ride in the batch's transaction, which is retried whole on a busy database: a
    scoring that failed in an attempt rolled back is neither reported nor missing after the retry."""
    import sqlite3
    from sqlalchemy.exc import OperationalError

    load(sqlite_url, stable_history())
    real_batch, real_check = scoring.Scorer.batch, Archive.check_lock
    failed_once, busy_once = [], []

    def batch(self, *args):
        if not failed_once:
            failed_once.append(True)
            raise ValueError("a bug in a rule, once")
        return real_batch(self, *args)

    def check_lock(self):
        if failed_once and not busy_once:   # the attempt whose scoring failed does not commit
            busy_once.append(True)
            raise OperationalError("COMMIT", {}, sqlite3.OperationalError("database is locked"))
        return real_check(self)

    monkeypatch.setattr(scoring.Scorer, "batch", batch)
    monkeypatch.setattr(Archive, "check_lock", check_lock)
    summary = load(sqlite_url, [job(NEW, later(), runtime=6000)])
    assert busy_once and (summary.inserted, summary.errors) == (1, [])
    assert kinds(sqlite_url) == [(NEW, "slow", "")]


def test_dry_run_and_switched_off_scoring_write_no_verdict(db_url):
    load(db_url, stable_history())
    load(db_url, [job(NEW, later(), runtime=6000)], dry_run=True)
    load(db_url, [job(NEW, later(), runtime=6000)], score_anomalies=False)
    assert kinds(db_url) == []


def test_report_anomalies_rows_filters_and_formats(db_url, capsys, monkeypatch):
    other = [job(100 + i, START + timedelta(days=i), package_id=7) for i in range(1, 31)]
    hostile = job(NEW + 2, later(33), package_id=7, records=(0, 400))
    for raw in (*other, hostile):   # an output named like a formula, with an escape sequence
        raw["outputs"][0]["component_name"] = "=HYPERLINK(\"x\")\x1b[31m"
    load(db_url, [*stable_history(), *other, job(NEW, later(), runtime=6000),
                  job(NEW + 1, later(32), records=(0, 400)), hostile])
    now = datetime.now(timezone.utc)
    since = f"{(now - START).days + 1}d"
    rows = run_report(db_url, "anomalies", since)
    assert [(r["job_id"], r["kind"]) for r in rows] == [(NEW + 2, "zero_records"), (NEW + 1, "zero_records"),
                                                        (NEW, "slow")]
    slow = rows[-1]
    assert {"job_id", "package_id", "kind", "score", "baseline", "n", "message", "package", "output_key",
            "severity", "created_at", "html_url"} <= set(slow)
    assert (slow["package_id"], slow["n"], slow["severity"], slow["output_key"]) == (PACKAGE, 30, "warning", None)
    assert 590 < slow["baseline"] < 610 and slow["score"] > 3.5 and "prior successful runs" in slow["message"]
    assert rows[0]["severity"] == "critical"
    assert [r["job_id"] for r in run_report(db_url, "anomalies", since, package="434")] == [NEW + 1, NEW]
    assert [r["job_id"] for r in run_report(db_url, "anomalies", since, limit=1)] == [NEW + 2]
    assert run_report(db_url, "anomalies", "1d") == []
    result = run_cli(capsys, monkeypatch, ["report", "anomalies", "--db", db_url, "--since", since, "--format", "csv"])
    assert result.code == 0
    table = list(csv.DictReader(io.StringIO(result.out)))
    assert [r["kind"] for r in table] == ["zero_records", "zero_records", "slow"]
    assert table[0]["output_key"].startswith("'=HYPERLINK")   # the CSV-injection guard
    result = run_cli(capsys, monkeypatch, ["report", "anomalies", "--db", db_url, "--since", since, "--format", "json"])
    assert [r["job_id"] for r in json.loads(result.out)] == [NEW + 2, NEW + 1, NEW]
    result = run_cli(capsys, monkeypatch, ["report", "anomalies", "--db", db_url, "--since", since])
    assert result.code == 0 and "zero_records" in result.out and "\x1b" not in result.out
    assert "\\x1b" in result.out or "\\u001b" in result.out or "\\e" in result.out


def test_config_anomalies_overrides_a_threshold_for_ingest_and_rescore(sqlite_url, tmp_path, capsys, monkeypatch):
    config = tmp_path / "check.toml"
    config.write_text("[anomalies]\nslow_ratio = 20.0\n")
    assert load_config(str(config)).anomalies.slow_ratio == 20.0
    lines = tmp_path / "jobs.jsonl"
    lines.write_text("\n".join(json.dumps(r) for r in [*stable_history(), job(NEW, later(), runtime=6000)]))
    env = {"ARCHIVER_CHECK_CONFIG": str(config)}
    result = run_cli(capsys, monkeypatch, ["ingest", str(lines), "--db", sqlite_url], env=env)
    assert result.code == 0, result.err
    assert kinds(sqlite_url) == []   # 10x is below a ratio of 20
    monkeypatch.delenv("ARCHIVER_CHECK_CONFIG")
    result = run_cli(capsys, monkeypatch, ["anomalies", "--rescore", "--db", sqlite_url])
    assert result.code == 0 and "slow 1" in result.out
    assert kinds(sqlite_url) == [(NEW, "slow", "")]
    result = run_cli(capsys, monkeypatch, ["anomalies", "--rescore", "--db", sqlite_url, "--config", str(config)])
    assert result.code == 0 and "slow 0" in result.out and kinds(sqlite_url) == []


@pytest.mark.parametrize("text, key", [("slow_rati = 4.0", "anomalies.slow_rati"),
                                       ("window = 0", "anomalies.window"),
                                       ("volume_direction = \"sideways\"", "anomalies.volume_direction"),
                                       ("flaky_share = 1.5", "anomalies.flaky_share"),
                                       ("new_weekday_margin = 0.5", "anomalies.new_weekday_margin"),
                                       ("slow_z = \"high\"", "anomalies.slow_z")])
def test_a_bad_anomalies_key_exits_2_naming_file_and_key(sqlite_url, tmp_path, capsys, monkeypatch, text, key):
    config = tmp_path / "check.toml"
    config.write_text(f"[anomalies]\n{text}\n")
    result = run_cli(capsys, monkeypatch, ["anomalies", "--rescore", "--db", sqlite_url, "--config", str(config)])
    assert result.code == 2 and str(config) in result.err and key in result.err
    lines = tmp_path / "jobs.jsonl"
    lines.write_text(json.dumps(job(1, START)))
    result = run_cli(capsys, monkeypatch, ["ingest", str(lines), "--db", sqlite_url],
                     env={"ARCHIVER_CHECK_CONFIG": str(config)})
    assert result.code == 2 and key in result.err


def test_scoring_reads_only_the_tail_of_a_long_history(sqlite_url, monkeypatch):
    """A job a year after the first runs reads the lookback (and the last `window` successes), not the year."""
    history = [job(i, START + timedelta(days=i)) for i in range(1, 366)]
    load(sqlite_url, history)
    seen = []
    real = scoring.as_runs
    monkeypatch.setattr(scoring, "as_runs", lambda conn, rows, *more: seen.append(len(rows)) or real(conn, rows, *more))
    load(sqlite_url, [job(NEW, START + timedelta(days=366), runtime=6000)])
    assert kinds(sqlite_url) == [(NEW, "slow", "")]
    assert max(seen) <= 8 * 7 + 2 + 1


def test_a_run_gives_the_collector_back_the_objects_it_kept_from_it(sqlite_url, monkeypatch):
    """During a run the objects older than it are left out of the cyclic collector's passes
    (gc.freeze: scoring allocates a lot) and the collector runs less often; when it ends, however
    it ends, they are handed back and its thresholds set back, so a process that runs many syncs
    (a scheduler, these tests) never keeps dead cycles for good nor a changed collector."""
    seen_while_scoring = []
    real = scoring.Scorer.batch
    monkeypatch.setattr(scoring.Scorer, "batch", lambda self, *args: seen_while_scoring.append(
        (gc.get_freeze_count(), gc.get_threshold())) or real(self, *args))
    before = gc.get_threshold()
    assert load(sqlite_url, stable_history()).outcome == "ok"
    assert seen_while_scoring and min(frozen for frozen, _ in seen_while_scoring) > 0
    assert {thresholds for _, thresholds in seen_while_scoring} == {(50_000, 20, 20)}
    assert gc.get_freeze_count() == 0 and gc.get_threshold() == before

    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(Archive, "write_jobs", interrupted)
    with pytest.raises(KeyboardInterrupt):
        load(sqlite_url, [job(NEW, START + timedelta(days=40))])
    assert gc.get_freeze_count() == 0 and gc.get_threshold() == before


def test_a_run_keeps_a_callers_higher_collector_thresholds_and_a_collector_switched_off(sqlite_url, monkeypatch):
    seen = []
    real = scoring.Scorer.batch
    monkeypatch.setattr(scoring.Scorer, "batch", lambda self, *args: seen.append(gc.get_threshold()) or real(self, *args))
    before = gc.get_threshold()
    try:
        gc.set_threshold(100_000, 5, 50)
        load(sqlite_url, stable_history())
        assert set(seen) == {(100_000, 20, 50)} and gc.get_threshold() == (100_000, 5, 50)
        seen.clear()
        gc.set_threshold(0, 10, 10)
        load(sqlite_url, [job(NEW, START + timedelta(days=40))])
        assert set(seen) == {(0, 10, 10)} and gc.get_threshold() == (0, 10, 10)
    finally:
        gc.set_threshold(*before)


def test_scoring_in_many_batches_agrees_with_a_rescore(db_url):
    """The runs kept between batches give each job the history a re-score gives it."""
    raws = [job(i, START + timedelta(hours=7 * i), runtime=600 + (i * 37) % 200,
                records=(1000 + (i * 53) % 300, 0 if i % 3 == 0 else 400)) for i in range(1, 121)]
    for i in (40, 77, 101):
        raws[i]["runtime_in_seconds"] = 9000
    raws[90]["outputs"][0]["records_count"] = 0
    raws[60]["outputs"] = raws[60]["outputs"][:1]
    load(db_url, raws, batch_size=7)
    at_sync = [v[:4] for v in verdicts(db_url)]
    assert {k for _, k, _, _ in at_sync} == {"slow", "zero_records", "volume_drop"}
    scoring.rescore(Settings(account="acme", database_url=db_url))
    assert [v[:4] for v in verdicts(db_url)] == at_sync


def test_a_long_first_sync_forgets_what_no_baseline_reads_and_agrees_with_a_rescore(db_url, monkeypatch):
    """A first sync keeps each package's runs across its batches; it forgets those no later
    baseline reads (older than the lookback, but the last 30 successes), so its memory stays
    bounded however long the history, and the verdicts are still a re-score's. Two packages: one
    every 7 hours, one every 3 days (its last 30 successes reach back 90 days, past the lookback)."""
    monkeypatch.setattr(scoring, "TRIM_AT", 0.05)   # trim as soon as 12 runs are kept, not 120
    held = []
    real = scoring.PackageRuns.trim
    monkeypatch.setattr(scoring.PackageRuns, "trim", lambda self, *a: real(self, *a) or held.append(len(self.runs)))
    raws = [job(i, START + timedelta(hours=7 * i), runtime=600 + (i * 37) % 200,
                records=(1000 + (i * 53) % 300, 0 if i % 3 == 0 else 400),
                status="failed" if i % 11 == 0 else "completed") for i in range(1, 601)]
    sparse = [job(1000 + i, START + timedelta(days=3 * i, hours=1), runtime=900 + (i * 41) % 100,
                  package_id=PACKAGE + 1) for i in range(1, 61)]
    sparse[55]["runtime_in_seconds"] = 20_000   # 90 days after the 30 successes its baseline reads began
    for i in (200, 401, 555):
        raws[i]["runtime_in_seconds"] = 20_000
    raws = sorted(raws + sparse, key=lambda raw: raw["created_at"])
    raws[300]["outputs"][0]["records_count"] = 0
    raws[450]["outputs"] = raws[450]["outputs"][:1]
    load(db_url, raws, batch_size=25)
    assert max(held) < 2 * (8 * 7 * 24 // 7 + 30) + 25     # twice the lookback's runs and a batch
    at_sync = [v[:4] for v in verdicts(db_url)]
    assert {k for _, k, _, _ in at_sync} == {"slow", "zero_records", "volume_drop"}
    assert (1056, "slow", "") in [v[:3] for v in at_sync]
    scoring.rescore(Settings(account="acme", database_url=db_url))
    assert [v[:4] for v in verdicts(db_url)] == at_sync


def test_an_incremental_sync_of_the_sandbox_scores_without_errors(sqlite_url):
    from archiver.flows.incremental import IncrementalOptions, sync_incremental
    from archiver.sandbox import Sandbox
    from tests.sandboxed import NOW, settings_for

    with Sandbox(jobs=1500, seed=5, now=NOW) as api:
        summary = sync_incremental(settings_for(api, sqlite_url), SyncOptions(batch_size=100),
                                   IncrementalOptions(catalog=False))
        finished = {i for i in api.job_ids() if api.job(i)["status"] == "completed"}
    assert summary.exit_code == 0 and summary.errors == []
    scored = {v[0] for v in verdicts(sqlite_url)}
    assert scored and scored <= finished


def test_later_syncs_reading_outputs_only_for_the_baselines_agree_with_a_rescore(db_url):
    """A later sync loads its packages' earlier runs without their outputs and reads those of the
    runs a baseline holds only (PackageRuns.pending): the same verdicts as a re-score, on outputs
    that change, drop to 0 and disappear after the first sync, and with failed runs among them."""
    raws = [job(i, START + timedelta(hours=7 * i), runtime=600 + (i * 37) % 200,
                records=(1000 + (i * 53) % 300, 0 if i % 3 == 0 else 400), package_id=PACKAGE + i % 2,
                status="failed" if i % 11 == 0 else "completed") for i in range(1, 161)]
    for i in (90, 121, 150):
        raws[i]["runtime_in_seconds"] = 9000
    raws[130]["outputs"][0]["records_count"] = 0
    raws[101]["outputs"][1]["records_count"] = 3
    raws[140]["outputs"] = raws[140]["outputs"][:1]
    for i in range(60, 156, 6):   # retried into success: flaky, and the flaky window loaded
        raws[i].update(status="failed", completed_at=None, attempts=0)
        raws[i + 2].update(status="completed", attempts=1)
    load(db_url, raws[:80])
    for start in range(80, 160, 9):    # one sync after another, each with a fresh Scorer
        load(db_url, raws[start:start + 9], batch_size=4)
    at_sync = [v[:4] for v in verdicts(db_url) if v[0] > 80]
    assert {k for _, k, _, _ in at_sync} >= {"slow", "zero_records", "volume_drop", "flaky"}
    scoring.rescore(Settings(account="acme", database_url=db_url))
    assert [v[:4] for v in verdicts(db_url) if v[0] > 80] == at_sync


def test_later_syncs_of_an_hourly_package_read_its_weekdays_only_and_agree_with_a_rescore(db_url, monkeypatch):
    """An hourly package has 30 successes of each new run's weekday within two weeks: a later sync
    then loads those, the last 30 successes and the flaky window (flows.anomalies.own_weekday_rows)
    instead of every weekday of 8 weeks, and gives the verdicts a re-score gives. The package is
    10× slower on Tuesdays (a weekday effect only the full load sees while a Tuesday has fewer
    than 30 runs), an output appears in the last day only (a job without it is judged by its last
    30 runs) and retries make it flaky (flaky_share 0.005: its window must be loaded)."""
    thresholds = anomaly.Thresholds(flaky_share=0.005)
    day7, day14 = 7 * 24 - 6, 14 * 24 - 6   # START is a Tuesday 06:00: job i runs i hours later
    raws = []
    for i in range(1, day14 + 13):
        created = START + timedelta(hours=i)
        runtime = (600 + (i * 37) % 200) * (10 if created.weekday() == START.weekday() else 1)
        raws.append(job(i, created, runtime=runtime, records=(1000 + (i * 53) % 300, 400),
                        status="failed" if i % 13 == 0 else "completed"))
    for raw in raws[day14 - 30:]:
        extra = dict(raw["outputs"][0], id=raw["id"] * 10 + 7, name="extra", component_name="extra")
        raw["outputs"] = [*raw["outputs"], extra]
    raws[day14 + 1]["runtime_in_seconds"] *= 10
    raws[day14 + 3]["outputs"][0]["records_count"] = 0
    raws[day14 + 5]["outputs"] = raws[day14 + 5]["outputs"][:2]
    for i in (day14 + 6, day14 + 8, day14 + 10, day7 + 20):   # retried into success
        raws[i].update(status="failed", completed_at=None, attempts=0)
        raws[i + 1].update(status="completed", attempts=1)
    narrow = []
    real = scoring.own_weekday_rows
    monkeypatch.setattr(scoring, "own_weekday_rows", lambda *a: narrow.append(found := real(*a)) or found)
    load(db_url, raws[:day7], anomalies=thresholds)
    narrow.clear()
    load(db_url, raws[day7:day7 + 12], anomalies=thresholds, batch_size=4)    # Tuesday: 17 earlier Tuesday runs
    assert narrow and all(found is None for found in narrow)                 # so every weekday is loaded
    load(db_url, raws[day7 + 12:day14], anomalies=thresholds)
    narrow.clear()
    for start in (day14, day14 + 6):                                          # Tuesday: 41 earlier ones
        load(db_url, raws[start:start + 6], anomalies=thresholds, batch_size=4)
    assert narrow and all(found is not None for found in narrow)             # Tuesday runs alone
    at_sync = [v[:4] for v in verdicts(db_url) if v[0] > day7]
    assert {k for _, k, _, _ in at_sync} == {"slow", "zero_records", "volume_drop", "flaky"}
    scoring.rescore(Settings(account="acme", database_url=db_url), thresholds)
    assert [v[:4] for v in verdicts(db_url) if v[0] > day7] == at_sync


@pytest.mark.parametrize("name", ["job-v1-completed.json", "job-v1-failed.json", "job-v2-failed-with-log-summary.json"])
def test_a_new_job_is_scored_as_stored_without_reading_it_back(db_url, name):
    """The scorer builds just-inserted jobs from their records (flows.anomalies.run_of_record):
    each must be the Run that reading the stored row back gives, on every database, including
    outputs sharing a key (summed), a missing records_count and keys the payload left out."""
    from archiver.database import open_engine as engine_of
    from archiver.parse import parse_job

    raw = load_payload(name)
    raw.pop("attempts", None)          # absent: NULL in a new row
    if raw.get("outputs"):
        twin = dict(raw["outputs"][0], id=raw["outputs"][0]["id"] + 999_999)
        raw["outputs"] = [*raw["outputs"], twin, dict(twin, id=twin["id"] + 1, records_count=None)]
    record = parse_job(raw)
    load(db_url, [raw])
    engine = engine_of(db_url, create=False)
    try:
        with engine.connect() as conn:
            assert scoring.runs_of(conn, [record.id]) == [scoring.run_of_record(record)]
    finally:
        engine.dispose()


def test_output_keys_are_held_once_however_many_runs_name_them():
    """Every kept run of a package names its outputs with the same few strings: one object each."""
    first, second = "".join(["destination", "1"]), "".join(["destination", "1"])
    assert first is not second
    assert scoring.output_key(first, None, 1) is scoring.output_key(second, None, 2)
    assert scoring.output_key(None, None, 12) == "output 12"


def test_kept_runs_are_ordered_by_created_at_then_job_id_and_trimmed_at_a_moment():
    """The int keys of the kept runs sort as (created_at, job id) would, down to a microsecond and
    across the whole range of job ids; a moment's key falls between the runs before it and those
    at or after it (what a trim cuts at)."""
    moment = datetime(2026, 9, 1, 6, 0, 0, 500, tzinfo=timezone.utc)
    tick = timedelta(microseconds=1)
    ids = (1, 2, 2**63 - 1, 7)
    runs = [anomaly.Run(job_id, PACKAGE, at, "completed", 60.0)
            for at in (moment - tick, moment, moment + tick, moment + timedelta(days=400))
            for job_id in ids]
    assert sorted(runs, key=scoring.time_key) == sorted(runs, key=lambda r: (r.created_at, r.job_id))
    cut = scoring.moment_key(moment)
    assert {r.created_at for r in runs if scoring.time_key(r) < cut} == {moment - tick}
    naive = moment.replace(tzinfo=None)
    assert scoring.moment_key(naive) == cut
    assert scoring.time_key(anomaly.Run(5, PACKAGE, naive, "completed", 60.0)) == \
        scoring.time_key(anomaly.Run(5, PACKAGE, moment, "completed", 60.0))


def test_outputs_whose_keys_differ_only_in_case_get_a_verdict_each_on_every_database(db_url):
    """'Orders' and 'orders' are two outputs to the rules; MySQL's case-blind collation made them
    one primary key of job_anomalies, and the batch's verdict write failed (migration 0011)."""
    def cased(raw: dict) -> dict:
        raw["outputs"] = [dict(o, component_name=name) for o, name in zip(raw["outputs"], ("Orders", "orders"))]
        return raw

    summary = load(db_url, [cased(j) for j in [*stable_history(), job(NEW, later(), records=(0, 0))]])
    assert not summary.errors
    assert kinds(db_url) == [(NEW, "zero_records", "Orders"), (NEW, "zero_records", "orders")]
