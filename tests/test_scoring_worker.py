"""Anomaly scoring in a second process (flows.scoring): the same verdicts as the run's own
scoring, nothing left unscored when the worker dies or the run is killed, every wait bounded."""

from __future__ import annotations

import dataclasses
import gc
import logging
import multiprocessing
import threading
from datetime import timedelta

import pytest
from sqlalchemy import func, select

from archiver import anomaly, models
from archiver.config import Settings
from archiver.database import open_engine
from archiver.flows import anomalies, runs, scoring
from archiver.flows.runs import SyncOptions
from tests.test_anomaly_scoring import START, job, load, verdicts

UNSCORED = models.UnscoredJobRow.__table__


def history(n: int = 120) -> list[dict]:
    """A package every 7 hours with three slow runs, a zero-record success and a lost output."""
    raws = [job(i, START + timedelta(hours=7 * i), runtime=600 + (i * 37) % 200,
                records=(1000 + (i * 53) % 300, 0 if i % 3 == 0 else 400)) for i in range(1, n + 1)]
    for i in (40, 77, 101):
        raws[i]["runtime_in_seconds"] = 9000
    raws[90]["outputs"][0]["records_count"] = 0
    raws[60]["outputs"] = raws[60]["outputs"][:1]
    return raws


def unscored(db_url: str) -> int:
    engine = open_engine(db_url, create=False)
    try:
        with engine.connect() as conn:
            return conn.execute(select(func.count()).select_from(UNSCORED)).scalar_one()
    finally:
        engine.dispose()


@pytest.fixture
def workers(monkeypatch) -> list[scoring.ScoringWorker]:
    """Every worker the runs of a test start."""
    started: list[scoring.ScoringWorker] = []
    real = scoring.ScoringWorker.__init__

    def init(self, *args):
        real(self, *args)
        started.append(self)

    monkeypatch.setattr(scoring.ScoringWorker, "__init__", init)
    return started


def rescored(db_url: str) -> list[tuple]:
    anomalies.rescore(Settings(account="acme", database_url=db_url))
    return [v[:4] for v in verdicts(db_url)]


def test_a_worker_gives_every_job_the_verdicts_the_run_itself_would(db_url, workers):
    """Batches of 7: the first scored in the run, the rest in the worker (from the batch that
    brings the run's jobs to 14): the verdicts are a re-score's, as the run's own are
    (test_anomaly_scoring), and nothing stays listed as unscored."""
    summary = load(db_url, history(), batch_size=7, scoring_worker_after=14)
    assert (summary.inserted, summary.errors) == (120, [])
    assert len(workers) == 1 and workers[0].sent == 120 // 7 + 1 - 1
    assert workers[0].process.wait(timeout=30) == 0   # told to end with the run, it ends by itself
    at_sync = [v[:4] for v in verdicts(db_url)]
    assert {k for _, k, _, _ in at_sync} == {"slow", "zero_records", "volume_drop"}
    assert unscored(db_url) == 0
    assert rescored(db_url) == at_sync


def test_a_run_scores_by_itself_what_a_worker_that_died_left(sqlite_url, workers, monkeypatch, caplog):
    """The worker killed after its third batch: the run notices at its next wait, scores the
    rest itself, and at its end the batches the worker never answered: every verdict, no error."""
    real_send = scoring.ScoringWorker.send

    def send(self, *args):
        real_send(self, *args)
        if self.sent == 3:
            self.process.kill()
            self.process.wait()

    monkeypatch.setattr(scoring.ScoringWorker, "send", send)
    caplog.set_level(logging.WARNING)
    summary = load(sqlite_url, history(), batch_size=7, scoring_worker_after=0)
    assert (summary.inserted, summary.errors, summary.exit_code) == (120, [], 0)
    assert len(workers) == 1 and workers[0].sent == 3
    assert "the scoring process failed" in caplog.text
    assert unscored(sqlite_url) == 0
    at_sync = [v[:4] for v in verdicts(sqlite_url)]
    assert {k for _, k, _, _ in at_sync} == {"slow", "zero_records", "volume_drop"}
    assert rescored(sqlite_url) == at_sync


def test_a_batch_the_worker_could_not_score_is_scored_at_the_runs_end(sqlite_url, workers, monkeypatch, caplog):
    """The worker fails on one batch (sent a run it cannot order): a warning, and the run
    scores that batch's jobs itself at its end; no error is recorded, no verdict is missing."""
    real = runs.written_runs
    calls = []

    def spoiled(*args):
        fresh = real(*args)
        calls.append(True)
        if len(calls) == 3 and fresh:
            fresh[0] = dataclasses.replace(fresh[0], created_at="not a moment")
        return fresh

    monkeypatch.setattr(runs, "written_runs", spoiled)
    caplog.set_level(logging.WARNING)
    summary = load(sqlite_url, history(), batch_size=7, scoring_worker_after=0)
    assert (summary.inserted, summary.errors) == (120, [])
    assert "could not score 7 jobs" in caplog.text
    assert len(workers) == 1 and unscored(sqlite_url) == 0
    at_sync = [v[:4] for v in verdicts(sqlite_url)]
    assert {k for _, k, _, _ in at_sync} == {"slow", "zero_records", "volume_drop"}
    assert rescored(sqlite_url) == at_sync


def test_verdicts_that_could_not_be_stored_are_scored_again_at_the_runs_end(sqlite_url, workers, monkeypatch,
                                                                              caplog):
    """Storing the worker's verdicts with a batch fails once: a warning naming how many jobs, no
    error recorded, the batch still commits, and the end of the run scores those jobs again."""
    real = runs.store_scored
    failed = []

    def store(*args, **kwargs):
        if not failed:
            failed.append(True)
            raise ValueError("a verdict the database refused")
        return real(*args, **kwargs)

    monkeypatch.setattr(runs, "store_scored", store)
    caplog.set_level(logging.WARNING)
    summary = load(sqlite_url, history(), batch_size=7, scoring_worker_after=0)
    assert failed and (summary.inserted, summary.errors) == (120, [])
    assert "storing the anomaly verdicts of" in caplog.text
    assert unscored(sqlite_url) == 0
    at_sync = [v[:4] for v in verdicts(sqlite_url)]
    assert {k for _, k, _, _ in at_sync} == {"slow", "zero_records", "volume_drop"}
    assert rescored(sqlite_url) == at_sync


def test_jobs_a_killed_run_left_unscored_are_scored_by_the_next_run(db_url, monkeypatch):
    """Killed after its last batch, before the worker's last answers were stored: those jobs
    are stored and listed in unscored_jobs; the next run, with nothing new to write, scores them."""
    def killed(self):
        raise KeyboardInterrupt

    monkeypatch.setattr(runs.Run, "finish_scoring", killed)
    with pytest.raises(KeyboardInterrupt):
        load(db_url, history(), batch_size=7, scoring_worker_after=0)
    left = unscored(db_url)
    assert left >= 7   # at least the last batch's jobs
    monkeypatch.undo()
    summary = load(db_url, [])
    assert (summary.inserted, summary.errors) == (0, [])
    assert unscored(db_url) == 0
    at_sync = [v[:4] for v in verdicts(db_url)]
    assert {k for _, k, _, _ in at_sync} == {"slow", "zero_records", "volume_drop"}
    assert rescored(db_url) == at_sync


def test_a_listed_job_that_is_gone_is_taken_off_by_the_next_run(db_url):
    """unscored_jobs has no foreign key (migration 0014): a listed id whose job was deleted by
    hand is no error for the next run, which takes it off with the jobs it scores."""
    load(db_url, history()[:30])
    engine = open_engine(db_url, create=False)
    try:
        with engine.begin() as conn:
            conn.execute(UNSCORED.insert(), [{"job_id": 999_999_999, "run_id": None}])
    finally:
        engine.dispose()
    summary = load(db_url, [])
    assert (summary.outcome, summary.errors) == ("ok", [])
    assert unscored(db_url) == 0


def test_a_run_pickles_as_its_fields():
    """What the run sends the worker: every field comes back, equal and of its type."""
    import pickle

    run = anomaly.Run(7, 3, START, "completed", 61.5, 2, (("out:1", 10), ("out:2", None)))
    back = pickle.loads(pickle.dumps([run, run], protocol=pickle.HIGHEST_PROTOCOL))
    assert back == [run, run] and type(back[0]) is anomaly.Run
    assert back[0].created_at.tzinfo is not None and back[0].outputs == run.outputs


def test_a_rescore_scores_what_is_listed_and_empties_the_list(sqlite_url, monkeypatch):
    monkeypatch.setattr(runs.Run, "finish_scoring", lambda self: None)   # the list stays as left
    load(sqlite_url, history(), batch_size=7, scoring_worker_after=0)
    assert unscored(sqlite_url) > 0
    rescored(sqlite_url)
    assert unscored(sqlite_url) == 0


def test_a_run_without_a_worker_lists_nothing(sqlite_url, workers):
    load(sqlite_url, history(), batch_size=7, scoring_worker_after=None)
    assert workers == [] and unscored(sqlite_url) == 0


def test_a_worker_that_cannot_open_the_archive_says_why_without_the_password():
    worker = scoring.ScoringWorker("postgresql+psycopg://archiver:s3cret-pw@127.0.0.1:1/none", None,
                                   anomaly.DEFAULTS)
    try:
        worker.send([], [1], [1])
        with pytest.raises(scoring.WorkerGone) as gone:
            list(worker.answers_ready(0, None, None))
        assert "could not open the archive" in str(gone.value)
        assert "s3cret-pw" not in str(gone.value)
    finally:
        worker.close()


def test_the_worker_scores_with_the_collector_eased_as_the_run_does(sqlite_url, monkeypatch):
    """The worker keeps a package's recent runs across batches, as the run's own scoring does, so
    it eases the cyclic collector the same way (its full passes would walk them all again and
    again: about a fifth of its CPU in a 100,000-job ingest), and sets it back when its input ends."""
    load(sqlite_url, history())
    seen = []
    real = scoring.score_task
    monkeypatch.setattr(scoring, "score_task", lambda *args: seen.append(
        (gc.get_freeze_count(), gc.get_threshold())) or real(*args))
    to_worker, down = multiprocessing.Pipe(duplex=False)
    answers, up = multiprocessing.Pipe(duplex=False)
    down.send((sqlite_url, "acme", anomaly.DEFAULTS))
    down.send(scoring.Task(1, [], [], []))
    down.close()
    before = gc.get_threshold()
    scoring.work(to_worker, up)
    answer = answers.recv()
    assert answer.number == 1 and answer.error is None
    assert len(seen) == 1 and seen[0][0] > 0 and seen[0][1] == (50_000, 20, 20)
    assert gc.get_freeze_count() == 0 and gc.get_threshold() == before


@pytest.mark.parametrize("ended", ["stop", "deadline"])
def test_a_wait_for_the_worker_ends_at_a_stop_or_the_deadline(sqlite_url, ended):
    """With a stop set or the deadline passed, a wait returns at once, its batch left in flight
    (its jobs stay listed for the next run)."""
    load(sqlite_url, history()[:20])
    worker = scoring.ScoringWorker(sqlite_url, "acme", anomaly.DEFAULTS)
    stop = threading.Event()
    try:
        worker.send([], [1], [])
        if ended == "stop":
            stop.set()
        deadline = 0.0 if ended == "deadline" else None
        assert list(worker.answers_ready(0, deadline, stop)) == []
        assert worker.in_flight == 1
    finally:
        worker.close(hurry=True)
    assert worker.process.poll() is not None


def test_the_default_hands_scoring_to_a_worker_only_with_a_second_cpu(monkeypatch):
    monkeypatch.delenv(scoring.SETTING, raising=False)
    monkeypatch.setattr(scoring, "available_cpus", lambda: 1)
    assert SyncOptions().scoring_worker_after is None
    monkeypatch.setattr(scoring, "available_cpus", lambda: 2)
    assert SyncOptions().scoring_worker_after == 2000


def cgroups(tmp_path, proc: str, files: dict[str, str]) -> tuple[str, str]:
    """A fake /sys/fs/cgroup holding `files` and a fake /proc/self/cgroup holding `proc`."""
    root = tmp_path / "cgroup"
    for name, text in files.items():
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_text(text + "\n")
    (tmp_path / "proc").write_text(proc)
    return str(root), str(tmp_path / "proc")


@pytest.mark.parametrize("cpu_max, cpus", [("100000 100000", 1.0), ("50000 100000", 0.5), ("250000 100000", 2.5),
                                           ("max 100000", None), ("nonsense", None)])
def test_a_containers_cgroup_v2_cpu_quota_is_read(tmp_path, cpu_max, cpus):
    root, proc = cgroups(tmp_path, "0::/\n", {"cpu.max": cpu_max})
    assert scoring.cpu_quota(root, proc) == cpus


def test_the_tightest_cgroup_v2_quota_from_the_services_own_up_to_the_root_binds(tmp_path):
    """A systemd service with CPUQuota=100% has its own cpu.max (the root has none); one in a
    slice limited to one CPU has it on the slice only; every level binds, so the smallest wins."""
    service = "0::/system.slice/archiver.service\n"
    root, proc = cgroups(tmp_path, service, {"system.slice/archiver.service/cpu.max": "100000 100000"})
    assert scoring.cpu_quota(root, proc) == 1.0
    for name, files, found in (
            ("own-below-root", {"system.slice/archiver.service/cpu.max": "100000 100000", "cpu.max": "200000 100000"}, 1.0),
            ("own-none", {"system.slice/archiver.service/cpu.max": "max 100000", "cpu.max": "200000 100000"}, 2.0),
            ("own-above-root", {"system.slice/archiver.service/cpu.max": "300000 100000", "cpu.max": "200000 100000"}, 2.0),
            ("slice-only", {"system.slice/archiver.service/cpu.max": "max 100000",
                            "system.slice/cpu.max": "150000 100000"}, 1.5),
            ("own-above-slice", {"system.slice/archiver.service/cpu.max": "400000 100000",
                                 "system.slice/cpu.max": "100000 100000", "cpu.max": "max 100000"}, 1.0)):
        root, proc = cgroups(tmp_path / name, service, files)
        assert scoring.cpu_quota(root, proc) == found, name


def test_a_cgroup_path_and_its_ancestors():
    assert scoring.lineage("/system.slice/archiver.service") == ["/system.slice/archiver.service", "/system.slice", ""]
    assert scoring.lineage("") == scoring.lineage("/") == [""]


@pytest.mark.parametrize("quota, cpus", [("200000", 2.0), ("-1", None)])
def test_a_cgroup_v1_cpu_quota_is_read(tmp_path, quota, cpus):
    root, proc = cgroups(tmp_path, "4:memory:/x\n2:cpu,cpuacct:/batch\n0::/\n",
                         {"cpu/batch/cpu.cfs_quota_us": quota, "cpu/batch/cpu.cfs_period_us": "100000"})
    assert scoring.cpu_quota(root, proc) == cpus


def test_no_cgroup_files_is_no_quota(tmp_path):
    assert scoring.cpu_quota(str(tmp_path / "none"), str(tmp_path / "no-proc")) is None


def test_a_container_limited_to_one_cpu_gets_no_worker(tmp_path, monkeypatch):
    """A pod limited to one CPU sees all of its node's CPUs: the quota decides."""
    monkeypatch.delenv(scoring.SETTING, raising=False)
    monkeypatch.setattr(scoring.os, "sched_getaffinity", lambda pid: {0, 1, 2, 3}, raising=False)
    for cpu_max, cpus, after in (("100000 100000", 1, None), ("200000 100000", 2, 2000), ("max 100000", 4, 2000)):
        root, proc = cgroups(tmp_path / cpu_max.replace(" ", "-"), "0::/\n", {"cpu.max": cpu_max})
        monkeypatch.setattr(scoring, "CGROUP_ROOT", root)
        monkeypatch.setattr(scoring, "PROC_CGROUP", proc)
        assert (scoring.available_cpus(), SyncOptions().scoring_worker_after) == (cpus, after)


@pytest.mark.parametrize("setting, after", [("off", None), (" OFF ", None), ("500", 500), ("0", 0), ("auto", 2000),
                                            ("", 2000)])
def test_the_setting_keeps_scoring_in_the_run_or_sets_when_a_worker_takes_over(monkeypatch, setting, after):
    monkeypatch.setattr(scoring, "available_cpus", lambda: 2)
    monkeypatch.setenv(scoring.SETTING, setting)
    assert SyncOptions().scoring_worker_after == after


def test_the_setting_works_from_the_command_line(sqlite_url, tmp_path, capsys, monkeypatch, workers):
    """`ARCHIVER_SCORING_WORKER=0 archiver ingest` hands the first batch to a worker, `off`
    scores in the run: the same verdicts either way; a value that is neither is exit 2 naming it."""
    import json

    from tests.clirun import run_cli

    path = tmp_path / "jobs.jsonl"
    path.write_text("".join(json.dumps(raw) + "\n" for raw in history()))

    def ingest(url: str, setting: str):
        return run_cli(capsys, monkeypatch, ["ingest", str(path), "--db", url, "--account", "acme", "--quiet"],
                       {scoring.SETTING: setting})

    assert ingest(sqlite_url, "0").code == 0
    assert len(workers) == 1 and unscored(sqlite_url) == 0
    in_worker = [v[:4] for v in verdicts(sqlite_url)]
    assert {k for _, k, _, _ in in_worker} == {"slow", "zero_records", "volume_drop"}
    in_process = f"sqlite:///{tmp_path / 'in-process.db'}"
    assert ingest(in_process, "off").code == 0
    assert len(workers) == 1 and [v[:4] for v in verdicts(in_process)] == in_worker
    assert ingest(in_process, "²").code == 2   # a digit to str.isdigit, not to int()
    bad = ingest(in_process, "soon")
    assert bad.code == 2 and "ARCHIVER_SCORING_WORKER='soon' is not auto, off or a number of jobs" in bad.err


def test_an_archive_in_memory_is_never_handed_to_a_worker():
    from archiver.store import Archive
    archive = Archive.open("sqlite://")
    try:
        assert archive.shared_url() is None
    finally:
        archive.close()


def test_a_script_without_a_main_guard_runs_once_and_its_worker_scores(sqlite_url, tmp_path):
    """The worker is a new interpreter with the run's module path, not multiprocessing's spawn,
    which would run the caller's script again in the child (writing its archive twice)."""
    import json
    import subprocess
    import sys
    from pathlib import Path

    payloads = tmp_path / "jobs.json"
    payloads.write_text(json.dumps(history()))
    script = tmp_path / "unguarded.py"
    script.write_text(
        "from archiver.config import Settings\n"
        "from archiver.flows import scoring\n"
        "from archiver.flows.ingest import ingest\n"
        "from archiver.flows.runs import SyncOptions\n"
        "import json\n"
        "started = []\n"
        "real = scoring.ScoringWorker.__init__\n"
        "scoring.ScoringWorker.__init__ = lambda self, *a: started.append(1) or real(self, *a)\n"
        "print('script ran', flush=True)\n"
        f"raws = json.load(open({str(payloads)!r}))\n"
        f"s = ingest(Settings(account='acme', database_url={sqlite_url!r}), iter(raws),\n"
        "           SyncOptions(batch_size=7, scoring_worker_after=0))\n"
        "print(s.outcome, s.inserted, len(s.errors), len(started), flush=True)\n")
    root = Path(__file__).resolve().parents[1]
    done = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, timeout=120,
                          cwd=tmp_path, env={"PYTHONPATH": str(root), "PATH": "/usr/bin:/bin"})
    assert done.returncode == 0, done.stderr
    assert done.stdout.splitlines() == ["script ran", "ok 120 0 1"]
    assert "scoring process" not in done.stderr
    assert unscored(sqlite_url) == 0
    assert {k for _, k, _, _ in [v[:4] for v in verdicts(sqlite_url)]} == {"slow", "zero_records", "volume_drop"}
