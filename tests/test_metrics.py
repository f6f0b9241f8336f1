"""archiver metrics: right values, documented names, hostile names escaped, promtool-clean
output, shipped alert rules that pass their unit tests, and a textfile never seen half written."""

from __future__ import annotations

import functools
import os
import re
import shutil
import statistics
import subprocess
import threading
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest
from prometheus_client.parser import text_string_to_metric_families
from sqlalchemy import insert

from archiver import database
from archiver.flows import metrics
from archiver.flows.report import percentile
from archiver import anomaly
from archiver.models import AlertRow, CreatorRow, JobAnomalyRow, JobRow, PackageRow, ScheduleRow, SyncRunRow
from archiver.textsafe import safe_text
from tests.clirun import run_cli
from tests.conftest import required_tool

ROOT = Path(__file__).resolve().parents[1]
NOW = datetime(2026, 3, 1, 12, 0, tzinfo=timezone.utc)
HOSTILE = 'orders "daily"\\ ETL\nfake_metric{x="1"} 2\r\x1b[31m\u202eend'
RUNTIMES_IN_WINDOW = [30, 45, 45, 60, 61, 90, 120, 125, 300, 900, 17]
RUNTIMES_BEFORE = [5000, 6000]  # completed, but created before the 7 d window: counted, no percentile

FAMILY_TYPES = {  # as the prometheus_client parser names them (a counter's _total is dropped)
    "xplenty_package_info": "gauge", "xplenty_package_last_success_timestamp_seconds": "gauge",
    "xplenty_package_runs": "counter", "xplenty_package_window_completed_runs": "gauge",
    "xplenty_package_runtime_seconds": "summary", "xplenty_runtime_window_seconds": "gauge",
    "xplenty_schedule_info": "gauge", "xplenty_schedule_last_success_timestamp_seconds": "gauge",
    "xplenty_alerts_open": "gauge", "xplenty_alerts_acknowledged": "gauge", "xplenty_anomalies": "counter",
    "archiver_unscored_jobs": "gauge",
    "archiver_last_successful_sync_timestamp_seconds": "gauge", "archiver_sync_runs": "counter",
}
FAMILIES = set(FAMILY_TYPES)


def promtool() -> str:
    return required_tool("prometheus", "promtool")


# -- an archive built directly --------------------------------------------------------------------------
class Jobs:
    """Rows for the jobs table with only what the metrics read; ids in order."""

    def __init__(self) -> None:
        self.rows: list[dict] = []

    def add(self, package_id, status, runtime=None, created=NOW - timedelta(days=1), ended=None,
            schedule_id=None) -> dict:
        row = dict(id=1000 + len(self.rows), package_id=package_id, status=status, runtime_in_seconds=runtime,
                   created_at=created, ended_at=ended, completed_at=ended,
                   creator_type="Schedule" if schedule_id else "User", creator_id=schedule_id or 7,
                   first_seen_at=NOW, last_synced_at=NOW, payload={"id": 1000 + len(self.rows)})
        self.rows.append(row)
        return row


def history() -> dict[str, list[dict]]:
    jobs = Jobs()
    for i, seconds in enumerate(RUNTIMES_IN_WINDOW):
        created = NOW - timedelta(days=6, hours=-i)
        jobs.add(1, "completed", seconds, created, created + timedelta(seconds=seconds), schedule_id=10)
    for seconds in RUNTIMES_BEFORE:
        jobs.add(1, "completed", seconds, NOW - timedelta(days=9), NOW - timedelta(days=8))
    jobs.add(1, "failed", 12, NOW - timedelta(hours=3), NOW - timedelta(hours=2), schedule_id=10)
    jobs.add(1, "running", 50)
    jobs.add(1, "stopped", 4, ended=NOW - timedelta(hours=1))
    for _ in range(3):
        jobs.add(2, "failed", 8, ended=NOW - timedelta(hours=5), schedule_id=11)
    jobs.add(None, "completed", 9, ended=NOW)  # no package: no series
    jobs.add(4, "completed", 9, created=NOW - timedelta(hours=1),
             ended=datetime(2026, 3, 1, 11, 30, 0, 250000, tzinfo=timezone.utc))  # a stub package, one run
    return {
        "jobs": jobs.rows,
        "packages": [dict(id=1, name=HOSTILE), dict(id=2, name="loader"), dict(id=3, name="never run"),
                     dict(id=4, name=None)],
        "schedules": [dict(id=10, name=HOSTILE, status="enabled"), dict(id=12, name="idle", status="disabled")],
        "creators": [dict(type="Schedule", id=11, display_name="from a job only"),
                     dict(type="User", id=7, display_name="someone")],
        "alerts": [alert("stale:package:1", "stale", "critical"), alert("failing:package:2", "failing", "critical"),
                   alert("failing:schedule:11", "failing", "critical", silenced_until=NOW + timedelta(hours=3)),
                   alert("late:schedule:10", "late", "warning", silenced_until=NOW - timedelta(hours=1)),
                   alert("stuck:job:1", "stuck", "critical", resolved_at=NOW - timedelta(days=1)),
                   alert("anomaly:package:1", "runtime_anomaly", "warning")],
        "sync_runs": [sync_run("ok", NOW - timedelta(hours=3)), sync_run("ok", NOW - timedelta(minutes=20)),
                      sync_run("failed", NOW - timedelta(minutes=10)), sync_run("partial", NOW - timedelta(hours=9)),
                      sync_run("running", None), sync_run("brand_new_outcome", NOW - timedelta(days=3))],
        "job_anomalies": [verdict(1000, "zero_records", "orders"), verdict(1000, "zero_records", "customers"),
                          verdict(1001, "slow"), verdict(1002, "volume_drop", "orders"),
                          verdict(1003, "legacy_kind")],
    }


def verdict(job_id, kind, output_key="") -> dict:
    return dict(job_id=job_id, kind=kind, output_key=output_key, package_id=1,
                severity=anomaly.SEVERITY.get(kind, "warning"), score=1.0, n=10, message="m",
                job_created_at=NOW - timedelta(days=1), detected_at=NOW)


def alert(key, kind, severity, silenced_until=None, resolved_at=None) -> dict:
    return dict(key=key, kind=kind, severity=severity, first_seen_at=NOW - timedelta(hours=2),
                last_seen_at=NOW, silenced_until=silenced_until, resolved_at=resolved_at)


def sync_run(outcome, finished_at) -> dict:
    return dict(started_at=(finished_at or NOW) - timedelta(minutes=1), finished_at=finished_at,
                mode="incremental", outcome=outcome)


TABLES = {"jobs": JobRow, "packages": PackageRow, "schedules": ScheduleRow, "creators": CreatorRow,
          "alerts": AlertRow, "sync_runs": SyncRunRow, "job_anomalies": JobAnomalyRow}


def build(url: str, data: dict[str, list[dict]]) -> str:
    engine = database.make_engine(url)
    try:
        with engine.begin() as conn:
            for name, rows in data.items():
                if rows:
                    conn.execute(insert(TABLES[name].__table__), rows)
    finally:
        engine.dispose()
    return url


def samples(text: str) -> dict[tuple[str, frozenset], float]:
    """Every sample of the exposition text, keyed by name and labels (strictly parsed)."""
    return {(s.name, frozenset(s.labels.items())): s.value
            for family in text_string_to_metric_families(text) for s in family.samples}


def key(name: str, **labels) -> tuple[str, frozenset]:
    return name, frozenset((k, str(v)) for k, v in labels.items())


@pytest.fixture
def archive(sqlite_url) -> str:
    return build(sqlite_url, history())


@pytest.fixture
def output(archive) -> str:
    return metrics.run_metrics(archive, now=NOW)


# -- values -----------------------------------------------------------------------------------------------
def test_last_success_per_package_and_schedule(output):
    found = samples(output)
    jobs = history()["jobs"]

    def newest(rows):
        return max(r["ended_at"] for r in rows if r["status"] == "completed").timestamp()

    assert found[key("xplenty_package_last_success_timestamp_seconds", package_id=1)] == \
        newest([r for r in jobs if r["package_id"] == 1])
    assert found[key("xplenty_package_last_success_timestamp_seconds", package_id=4)] == 1772364600.25
    assert key("xplenty_package_last_success_timestamp_seconds", package_id=2) not in found  # never succeeded
    assert found[key("xplenty_schedule_last_success_timestamp_seconds", schedule_id=10)] == \
        newest([r for r in jobs if r["creator_type"] == "Schedule" and r["creator_id"] == 10])
    assert {k for k in found if k[0] == "xplenty_schedule_last_success_timestamp_seconds"} == \
        {key("xplenty_schedule_last_success_timestamp_seconds", schedule_id=10)}


def test_runs_by_final_status_count_the_whole_history(output):
    found = samples(output)
    expected = {(1, "completed"): len(RUNTIMES_IN_WINDOW) + len(RUNTIMES_BEFORE), (1, "failed"): 1,
                (1, "stopped"): 1, (2, "failed"): 3, (4, "completed"): 1}
    for package_id in (1, 2, 3, 4):
        for status in metrics.FINAL_STATUSES:
            assert found[key("xplenty_package_runs_total", package_id=package_id, status=status)] == \
                expected.get((package_id, status), 0), (package_id, status)


def test_runtime_percentiles_match_statistics_quantiles_inclusive(output):
    found = samples(output)
    cuts = statistics.quantiles(RUNTIMES_IN_WINDOW, n=100, method="inclusive")
    assert found[key("xplenty_package_runtime_seconds", package_id=1, quantile="0.5")] == cuts[49]
    assert found[key("xplenty_package_runtime_seconds", package_id=1, quantile="0.95")] == cuts[94]
    assert found[key("xplenty_package_window_completed_runs", package_id=1)] == len(RUNTIMES_IN_WINDOW)
    assert found[key("xplenty_package_runtime_seconds", package_id=4, quantile="0.95")] == 9  # one run: itself
    assert key("xplenty_package_runtime_seconds", package_id=2, quantile="0.5") not in found  # none completed
    assert found[key("xplenty_runtime_window_seconds")] == 7 * 86400


@pytest.mark.parametrize("n", [1, 2, 3, 4, 5, 7, 19, 20, 21, 100, 101, 257])
def test_the_interpolation_is_the_reports_percentile(n):
    values = sorted((i * 7919) % 1000 + (i % 3) for i in range(n))
    by_rank = dict(enumerate(values, start=1))
    for q in (1, 5, 50, 95, 99):
        assert metrics.interpolate(by_rank, n, q) == percentile(values, q)


def test_open_alerts_by_kind_and_severity_with_zeros_for_every_known_pair(output):
    found = samples(output)
    opened = {("stale", "critical"): 1, ("failing", "critical"): 2, ("late", "warning"): 1,
              ("runtime_anomaly", "warning"): 1}
    acked = {("failing", "critical"): 1}
    kinds = [*metrics.ALERT_KINDS, "runtime_anomaly"]
    for kind in kinds:
        for severity in metrics.ALERT_SEVERITIES:
            if kind == "runtime_anomaly" and severity == "critical":
                continue  # an unknown kind appears only with what the table holds
            assert found[key("xplenty_alerts_open", kind=kind, severity=severity)] == opened.get((kind, severity), 0)
            assert found[key("xplenty_alerts_acknowledged", kind=kind, severity=severity)] == \
                acked.get((kind, severity), 0)
    assert len([k for k in found if k[0] == "xplenty_alerts_open"]) == len(metrics.ALERT_KINDS) * 2 + 1
    assert {"slow", "zero_records", "volume_drop", "flaky"} <= set(metrics.ALERT_KINDS)


def test_anomaly_verdicts_by_kind_over_the_whole_history(output):
    found = samples(output)
    expected = {"zero_records": 2, "slow": 1, "volume_drop": 1, "flaky": 0, "legacy_kind": 1}
    assert {k: found[key("xplenty_anomalies_total", kind=k)] for k in expected} == expected
    assert len([k for k in found if k[0] == "xplenty_anomalies_total"]) == len(expected)
    assert "# TYPE xplenty_anomalies_total counter" in output


def test_the_archivers_own_syncs(output):
    found = samples(output)
    assert found[key("archiver_last_successful_sync_timestamp_seconds")] == \
        (NOW - timedelta(minutes=20)).timestamp()
    outcomes = {"ok": 2, "failed": 1, "partial": 1, "brand_new_outcome": 1}
    for outcome in [*metrics.SYNC_OUTCOMES, "brand_new_outcome"]:
        assert found[key("archiver_sync_runs_total", outcome=outcome)] == outcomes.get(outcome, 0)
    assert key("archiver_sync_runs_total", outcome="running") not in found  # not an end: would go down


def test_an_empty_archive_says_never_synced_and_zero_alerts(sqlite_url):
    found = samples(metrics.run_metrics(sqlite_url, now=NOW))
    assert found[key("archiver_last_successful_sync_timestamp_seconds")] == 0
    assert found[key("xplenty_alerts_open", kind="stale", severity="critical")] == 0
    assert found[key("xplenty_alerts_open", kind="zero_records", severity="critical")] == 0
    assert all(found[key("xplenty_anomalies_total", kind=k)] == 0 for k in anomaly.KINDS)
    assert found[key("archiver_unscored_jobs")] == 0
    assert not [k for k in found if k[0].startswith("xplenty_package")]


def test_jobs_waiting_for_their_verdicts_are_a_gauge(sqlite_url):
    """What a run killed while its worker scored left in unscored_jobs (the next run scores it)."""
    from sqlalchemy import insert, select

    from archiver import database, models
    from tests.test_anomaly_scoring import load, stable_history
    load(sqlite_url, stable_history())
    engine = database.make_engine(sqlite_url)
    with engine.begin() as conn:
        ids = conn.execute(select(models.JobRow.id).limit(4)).scalars().all()
        conn.execute(insert(models.UnscoredJobRow.__table__), [{"job_id": i} for i in ids])
    engine.dispose()
    assert samples(metrics.run_metrics(sqlite_url, now=NOW))[key("archiver_unscored_jobs")] == 4


# -- names, labels and escaping ------------------------------------------------------------------------
def test_names_labels_and_cardinality_as_documented(output):
    assert [(f.name, f.type) for f in text_string_to_metric_families(output)] == list(FAMILY_TYPES.items())
    found = samples(output)
    labels = {name: {frozenset(dict(ls)) for n, ls in found if n == name} for name, _ in found}
    assert not any("job_id" in ls for sets in labels.values() for ls in sets)
    per_package = [k for k in found if dict(k[1]).get("package_id") == "1"]
    assert len(per_package) <= 12
    names_only_in_info = [k for k in found if "package" in dict(k[1]) or "schedule" in dict(k[1])]
    assert {k[0] for k in names_only_in_info} == {"xplenty_package_info", "xplenty_schedule_info"}
    assert "# TYPE xplenty_package_runs_total counter" in output and " # " not in output
    for line in output.splitlines():  # no sample timestamps: "name{labels} value" and nothing after
        if not line.startswith("#"):
            assert len(line.rsplit("} ", 1)[-1].split(" ")) == 1 if "}" in line else len(line.split(" ")) == 2


def test_hostile_names_are_escaped_and_read_back_as_the_terminal_safe_text(output):
    found = samples(output)
    assert found[key("xplenty_package_info", package_id=1, package=safe_text(HOSTILE))] == 1
    assert found[key("xplenty_schedule_info", schedule_id=10, schedule=safe_text(HOSTILE), status="enabled")] == 1
    assert found[key("xplenty_schedule_info", schedule_id=11, schedule="from a job only", status="")] == 1
    assert found[key("xplenty_schedule_info", schedule_id=12, schedule="idle", status="disabled")] == 1
    assert found[key("xplenty_package_info", package_id=4, package="")] == 1
    assert "fake_metric" not in {name for name, _ in found}
    assert "\x1b" not in output and "\r" not in output and "\u202e" not in output


def test_label_escaping_and_numbers_follow_the_format():
    assert metrics.escape_label_value('a\\b"c\nd') == 'a\\\\b\\"c\\nd'
    assert metrics.label_text("x" * 500).endswith("…") and len(metrics.label_text("x" * 500)) == 200
    assert metrics.label_text("\ud800 lone surrogate").encode("utf-8")  # always valid UTF-8
    assert [metrics.format_value(v) for v in (3, 0, 1772364600.25, 0.1, 1e21, float("inf"), float("nan"))] == \
        ["3", "0", "1772364600.25", "0.1", "1e+21", "+Inf", "NaN"]
    with pytest.raises(TypeError):
        metrics.format_value(True)


# -- promtool ------------------------------------------------------------------------------------------------
def test_promtool_check_metrics_passes_on_the_output(output):
    result = subprocess.run([promtool(), "check", "metrics"], input=output.encode(), capture_output=True,
                            timeout=60)
    assert result.returncode == 0, result.stdout.decode() + result.stderr.decode()
    assert result.stdout.decode().strip() == "" and result.stderr.decode().strip() == ""  # no lint either


def test_promtool_checks_and_tests_the_shipped_alert_rules():
    tool = promtool()
    check = subprocess.run([tool, "check", "rules", "alerts.yml"], cwd=ROOT / "docs", capture_output=True,
                           text=True, timeout=60)
    assert check.returncode == 0, check.stdout + check.stderr
    tested = subprocess.run([tool, "test", "rules", "alerts_test.yml"], cwd=ROOT / "docs", capture_output=True,
                            text=True, timeout=120)
    assert tested.returncode == 0, tested.stdout + tested.stderr
    assert "SUCCESS" in tested.stdout


def test_the_alert_rules_name_only_metrics_the_archiver_writes():
    used = set(re.findall(r"\b(?:xplenty|archiver)_[a-z_]+\b", (ROOT / "docs" / "alerts.yml").read_text()))
    written = {name + "_total" if name in ("xplenty_package_runs", "archiver_sync_runs") else name
               for name in FAMILIES}
    assert used and used <= written, used - written


# -- the textfile ----------------------------------------------------------------------------------------------
def test_textfile_is_written_with_mode_0644_and_no_temporary_left(archive, tmp_path, capsys, monkeypatch):
    target = tmp_path / "xplenty.prom"
    target.write_text("old\n")
    os.chmod(target, 0o600)
    old_umask = os.umask(0o077)
    try:
        result = run_cli(capsys, monkeypatch, ["metrics", "--db", archive, "--textfile", str(target)])
    finally:
        os.umask(old_umask)
    assert result.code == 0 and result.out == ""
    assert (target.stat().st_mode & 0o777) == 0o644
    assert samples(target.read_text()) == samples(metrics.run_metrics(archive))
    assert [name for name in os.listdir(tmp_path) if not name.startswith("archive.db")] == ["xplenty.prom"]
    printed = run_cli(capsys, monkeypatch, ["metrics", "--db", archive, "--window", "24h"])
    assert printed.code == 0 and samples(printed.out)[key("xplenty_runtime_window_seconds")] == 86400


def test_errors_name_the_path_and_leave_the_old_file(archive, tmp_path, capsys, monkeypatch):
    missing = tmp_path / "no-such-folder" / "xplenty.prom"
    result = run_cli(capsys, monkeypatch, ["metrics", "--db", archive, "--textfile", str(missing)])
    assert result.code == 1 and str(missing) in result.err and "cannot write the metrics file" in result.err
    folder = tmp_path / "a-folder.prom"
    folder.mkdir()
    result = run_cli(capsys, monkeypatch, ["metrics", "--db", archive, "--textfile", str(folder)])
    assert result.code == 1 and str(folder) in result.err
    assert [name for name in os.listdir(tmp_path) if not name.startswith("archive.db")] == ["a-folder.prom"]
    assert run_cli(capsys, monkeypatch, ["metrics", "--db", archive, "--window", "soon"]).code == 2


def test_a_reader_never_sees_a_partial_textfile(tmp_path):
    """200 rewrites of different sizes while a reader parses the file 1,000 times: every parse
    finds one whole version. Neither side runs more than a few steps ahead of the other (a
    handshake both ways, no sleeps), so reads and rewrites overlap all along, however the
    threads are scheduled."""
    target = tmp_path / "xplenty.prom"
    versions = [textfile_version(n) for n in (1, 40, 3, 400, 0, 150)]
    metrics.write_textfile(str(target), versions[0])
    reads, writes, progress = 0, 0, threading.Condition()

    def write() -> None:
        nonlocal writes
        for i in range(200):
            metrics.write_textfile(str(target), versions[(i + 1) % len(versions)])
            with progress:
                writes += 1
                progress.notify_all()
                progress.wait_for(lambda: reads >= 5 * i)

    writer = threading.Thread(target=write)
    writer.start()
    problems, seen = [], set()
    for r in range(1000):
        with progress:
            progress.wait_for(lambda: writes >= min(200, r // 5))
        text = target.read_text(encoding="utf-8")
        problems += [problem] if (problem := torn(text, versions)) else []
        seen.add(text)
        with progress:
            reads += 1
            progress.notify_all()
    writer.join()
    assert problems == [] and len(seen) > 1
    assert [p.name for p in tmp_path.iterdir()] == ["xplenty.prom"]


def test_the_reader_detects_a_truncated_file():
    version = textfile_version(40)
    cuts = [i for i, ch in enumerate(version) if ch == "\n"][:-1] + [len(version) // 2, 7]
    assert all(torn(version[:cut + 1], [version]) for cut in cuts)
    assert torn(version, [version]) is None


def torn(text: str, versions: list[str]) -> str | None:
    """Why `text` is not one whole version: it does not parse, a family is missing or lost its
    TYPE line, or its samples are not all those of the version it claims to be (the value of
    its archiver_last_successful_sync_timestamp_seconds)."""
    try:
        families = list(text_string_to_metric_families(text))   # parsed once: types and samples
    except Exception as exc:
        return f"{type(exc).__name__}: {exc}"
    types = {f.name: f.type for f in families}
    found = {(s.name, frozenset(s.labels.items())): s.value for f in families for s in f.samples}
    if types != FAMILY_TYPES:
        return f"families or types differ: {sorted(set(types.items()) ^ set(FAMILY_TYPES.items()))}"
    claim = key("archiver_last_successful_sync_timestamp_seconds")
    whole = next((version_samples(v) for v in versions if version_samples(v)[claim] == found.get(claim)), None)
    if found != whole:
        return f"{len(found)} samples, not those of version {found.get(claim)}"
    return None


@functools.lru_cache(maxsize=None)
def version_samples(version: str) -> dict[tuple[str, frozenset], float]:
    """samples() of a whole version, parsed once per test run (the reader compares every read with it)."""
    return samples(version)


def textfile_version(packages: int) -> str:
    """A rendering of the real families with `packages` packages (so sizes differ a lot)."""
    family = {name: metrics.Family(name + "_total" if kind == "counter" else name, kind, "test")
              for name, kind in FAMILY_TYPES.items()}
    for p in range(packages):
        for status in metrics.FINAL_STATUSES:
            family["xplenty_package_runs"].add(p * 3, package_id=p, status=status)
        family["xplenty_package_info"].add(1, package_id=p, package=f"package {p} " + "x" * (p % 50))
    family["archiver_last_successful_sync_timestamp_seconds"].add(float(packages))
    return metrics.render(family.values())


# -- every backend -----------------------------------------------------------------------------------------------
def test_the_same_figures_on_every_backend(db_url, tmp_path, sqlite_template):
    """SQLite, PostgreSQL and MariaDB give the same samples for the same rows (the SQL ranks and
    counts; types, time zones and integer division differ underneath)."""
    reference = tmp_path / "reference.db"
    shutil.copy(sqlite_template, reference)
    expected = samples(metrics.run_metrics(build(f"sqlite:///{reference}", history()), now=NOW))
    assert samples(metrics.run_metrics(build(db_url, history()), now=NOW)) == expected
