#!/usr/bin/env python
"""Benchmark of xplenty-archiver: ingest, re-ingest, per-id and incremental sync, peak RSS,
linearity at scale and the archive's size.

    python bench/run.py --pg-url URL --mysql-url URL   # full sizes, 3 repetitions; README table updated
    python bench/run.py --quick         # 1/10 of every size, a smoke run
    python bench/run.py --skip-pg       # SQLite only
    python bench/run.py --reps 5        # more repetitions per figure (default 3)
    python bench/run.py --profile 20000 # cProfile of one ingest per backend (top 15 by cumulative time)

Every timed figure is measured --reps times, interleaved (baseline, archiver, baseline,
archiver, ...: a slow moment of a shared machine hits both sides), and shown as the median
ratio with its spread (smallest and largest), beside the machine and the versions.

Everything it needs is built here: deterministic v1-like job payloads (2 outputs and
3 variables each) written to JSON Lines files in a temporary directory, fresh SQLite
files, and the tables of the PostgreSQL database given by --pg-url (its `public`
schema is dropped and re-created between steps: point it at a throwaway database).
Each figure is printed as a ratio next to its target (a miss says **no**); a full run
writes the table to bench/last-results.md and into the README (between its markers).
Nothing in archiver/ is changed or tuned.
"""

from __future__ import annotations

import argparse
import cProfile
import dataclasses
import gc
import io
import json
import logging
import math
import os
import platform
import pstats
import random
import resource
import shutil
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import date, datetime, timedelta, timezone
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from archiver.config import INGEST_BATCH_SIZE, Secret, Settings  # noqa: E402
from archiver.parse import parse_job  # noqa: E402
from archiver.payloads import read_payloads  # noqa: E402
from archiver.database import make_engine, upgrade  # noqa: E402
from archiver.utc import utcnow  # noqa: E402
from archiver.flows.incremental import IncrementalOptions, sync_incremental  # noqa: E402
from archiver.flows.by_id import sync_ids  # noqa: E402
from archiver.flows.ingest import ingest  # noqa: E402
from archiver.flows.runs import SyncOptions  # noqa: E402

DEFAULT_PG_URL = "postgresql+psycopg://postgres@127.0.0.1:5432/archiver_bench"
RESULTS_FILE = Path(__file__).resolve().parent / "last-results.md"
ACCOUNT = "bench"
SEED = 7
FIRST_JOB_ID = 1_000_000
FIRST_OUTPUT_ID = 50_000_000
BASE_TIME = datetime(2024, 1, 1, tzinfo=timezone.utc)
SANDBOX_NOW = datetime(2026, 12, 1, tzinfo=timezone.utc)
SANDBOX_KEY = "sandbox-key"

log = logging.getLogger("bench")


# -- data ------------------------------------------------------------------------------------------
STATUS_WEIGHTS = (("completed", 86), ("failed", 9), ("stopped", 3), ("running", 2))
ERRORS = ("Failed to send request: id not found on Customer",
          "Connection refused by the destination database (port 5432)",
          "java.io.IOException: Unable to read the input path s3://acme-raw/events/",
          "Out of memory on reducer 3; try a larger cluster")
OUTPUT_NAMES = ("projected_results", "customers_clean", "orders_daily", "events_rollup", "invoices")
TABLES = ("'customers'", "'orders'", "'events'", "'invoices'", "'tickets'")


def _iso(seconds: int) -> str:
    return (BASE_TIME + timedelta(seconds=seconds)).strftime("%Y-%m-%dT%H:%M:%SZ")


def make_payload(i: int) -> dict:
    """Job number i (0-based): a v1-shaped payload, the same for the same i on every run."""
    rng = random.Random(SEED * 10_000_019 + i)
    job_id = FIRST_JOB_ID + i
    statuses, weights = zip(*STATUS_WEIGHTS)
    status = rng.choices(statuses, weights)[0]
    created = i * 600 + rng.randrange(600)          # one job every ~10 minutes
    started = created + rng.randrange(5, 300)
    runtime = rng.randrange(30, 7200)
    ended = started + runtime
    completed_at = failed_at = None
    if status == "running":
        updated = started + rng.randrange(1, runtime)
        runtime_in_seconds = updated - started
        progress = round(runtime_in_seconds / runtime, 2)
    else:
        updated = ended + 1
        runtime_in_seconds = runtime
        progress = 1.0 if status == "completed" else round(rng.random(), 2)
        if status == "completed":
            completed_at = _iso(ended)
        elif status == "failed":
            failed_at = _iso(ended)
        # a stopped job has neither
    url = f"https://api.xplenty.com/acme/api/jobs/{job_id}"
    outputs = []
    for k in range(2):
        out_id = FIRST_OUTPUT_ID + 2 * i + k
        out_time = _iso(min(ended, started + rng.randrange(1, runtime + 1)))
        outputs.append({
            "component_name": f"destination{k + 1}",
            "created_at": out_time,
            "id": out_id,
            "name": rng.choice(OUTPUT_NAMES) + f"_{k}",
            "preview_url": f"{url}/outputs/{out_id}/preview",
            "records_count": rng.randrange(0, 50_000_000),
            "updated_at": out_time,
            "url": f"{url}/outputs/{out_id}",
        })
    day = (BASE_TIME + timedelta(seconds=created)).strftime("%Y/%m/%d")
    return {
        "id": job_id,
        "status": status,
        "variables": {"InputPath": f"'/{day}'", "batch_size": rng.choice((100, 500, 1000, 5000)),
                      "source_table": rng.choice(TABLES)},
        "owner_id": 1 + rng.randrange(25),
        "progress": progress,
        "outputs_count": 2,
        "outputs": outputs,
        "started_at": _iso(started),
        "created_at": _iso(created),
        "failed_at": failed_at,
        "updated_at": _iso(updated),
        "cluster_id": 10 + rng.randrange(40),
        "package_id": 100 + rng.randrange(300),
        "errors": rng.choice(ERRORS) if status == "failed" else "",
        "url": url,
        "runtime_in_seconds": runtime_in_seconds,
        "completed_at": completed_at,
    }


def changed_payload(payload: dict) -> dict:
    """The same job seen later: updated_at one hour on, one field (runtime_in_seconds) changed."""
    changed = dict(payload)
    moment = datetime.fromisoformat(payload["updated_at"]) + timedelta(hours=1)
    changed["updated_at"] = moment.strftime("%Y-%m-%dT%H:%M:%SZ")
    changed["runtime_in_seconds"] = payload["runtime_in_seconds"] + 1
    return changed


def write_files(tmp: Path, n: int, small: int) -> dict[str, Path]:
    """full.jsonl (n jobs), small.jsonl (the first `small` of them), changed.jsonl (1% changed)."""
    paths = {"full": tmp / "jobs-full.jsonl", "small": tmp / "jobs-small.jsonl",
             "changed": tmp / "jobs-changed-1pct.jsonl"}
    with open(paths["full"], "w", encoding="utf-8") as full, \
            open(paths["small"], "w", encoding="utf-8") as part, \
            open(paths["changed"], "w", encoding="utf-8") as changed:
        for i in range(n):
            payload = make_payload(i)
            line = json.dumps(payload, separators=(",", ":")) + "\n"
            full.write(line)
            if i < small:
                part.write(line)
            changed.write(json.dumps(changed_payload(payload), separators=(",", ":")) + "\n"
                          if i % 100 == 0 else line)
    return paths


# -- databases -------------------------------------------------------------------------------------
def sqlite_url(path: Path) -> str:
    return f"sqlite:///{path}"


def fresh_sqlite(tmp: Path, name: str) -> str:
    """A new, migrated SQLite file (any earlier file of that name and its WAL/lock files removed)."""
    path = tmp / f"{name}.db"
    for leftover in tmp.glob(f"{name}.db*"):
        leftover.unlink()
    engine = make_engine(sqlite_url(path))
    try:
        upgrade(engine)
    finally:
        engine.dispose()
    return sqlite_url(path)


def ensure_pg_database(url: str) -> None:
    """Create the bench database when it is missing (a fresh machine has none)."""
    from sqlalchemy import create_engine, text
    from sqlalchemy.engine import make_url

    target = make_url(url)
    admin = create_engine(target.set(database="postgres"), isolation_level="AUTOCOMMIT")
    try:
        with admin.connect() as conn:
            if not conn.execute(text("SELECT 1 FROM pg_database WHERE datname = :d"),
                                {"d": target.database}).scalar():
                conn.execute(text(f'CREATE DATABASE "{target.database}"'))
    finally:
        admin.dispose()


def reset_pg(url: str, migrate: bool = True) -> None:
    """Drop everything in the bench database's public schema, migrate to head, then CHECKPOINT,
    so every timed step starts at the same point of PostgreSQL's checkpoint cycle. A 100,000-job
    ingest writes more WAL than a cycle (here one every ~540 MB), so checkpoints fall inside
    every step, but where the steps before left the cycle moved how many, and when: figure 1b
    spread from 24.9 to 32.3 s on the same code."""
    ensure_pg_database(url)
    engine = make_engine(url)
    try:
        with engine.begin() as conn:
            conn.exec_driver_sql("DROP SCHEMA IF EXISTS public CASCADE")
            conn.exec_driver_sql("CREATE SCHEMA public")
        if migrate:
            upgrade(engine)
        with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
            try:
                conn.exec_driver_sql("CHECKPOINT")
            except Exception as exc:   # noqa: BLE001 - needs superuser or pg_checkpoint: measure anyway
                print(f"CHECKPOINT refused ({type(exc).__name__}): timings may include the last step's writes",
                      file=sys.stderr)
    finally:
        engine.dispose()


def psycopg_conninfo(url: str) -> str:
    from sqlalchemy.engine import make_url
    return make_url(url).set(drivername="postgresql").render_as_string(hide_password=False)


# -- the measured steps ----------------------------------------------------------------------------
def timed_ingest(url: str, path: Path, batch_size: int, expect: dict[str, int], score: bool = True
                 ) -> tuple[float, object]:
    """archiver.flows.ingest.ingest of a JSON Lines file; the summary's counts are checked."""
    settings = Settings(account=ACCOUNT, database_url=url)
    gc.collect()
    with open(path, "rb") as stream:
        start = time.perf_counter()
        summary = ingest(settings, read_payloads(stream), SyncOptions(batch_size=batch_size, score_anomalies=score))
        seconds = time.perf_counter() - start
    got = {k: getattr(summary, k) for k in expect}
    if summary.outcome != "ok" or got != expect:
        raise RuntimeError(f"ingest of {path.name} gave outcome {summary.outcome} {got}, expected {expect}"
                           f" ({summary.message})")
    return seconds, summary


@dataclasses.dataclass
class Prebuilt:
    """The rows the store writes to jobs, job_outputs and job_variables, as column lists + tuples."""
    jobs_cols: list[str]
    jobs: list[tuple]
    out_cols: list[str]
    outputs: list[tuple]
    var_cols: list[str]
    variables: list[tuple]

    def tables(self):
        return (("jobs", self.jobs_cols, self.jobs), ("job_outputs", self.out_cols, self.outputs),
                ("job_variables", self.var_cols, self.variables))


def prebuild_rows(path: Path) -> list[dict]:
    """Parse every payload and build the dicts Archive._write would write (outside any timing)."""
    now = utcnow()
    jobs, outputs, variables = [], [], []
    with open(path, "rb") as stream:
        for raw in read_payloads(stream):
            job = parse_job(raw)
            jobs.append({"id": job.id, **job.columns, "payload": job.payload_text,
                         "payload_hash": job.payload_hash, "first_seen_at": now, "last_synced_at": now,
                         "account_id": ACCOUNT})
            outputs.extend(dataclasses.asdict(o) for o in job.outputs)
            variables.extend({"job_id": job.id, "name": name, "value": value}
                             for name, value in sorted(job.variables.items()))
    return [jobs, outputs, variables]


def as_tuples(dict_rows: list[list[dict]], convert=lambda v: v) -> Prebuilt:
    built = []
    for rows in dict_rows:
        cols = sorted({c for r in rows[:1000] for c in r})
        built.append((cols, [tuple(convert(r.get(c)) for c in cols) for r in rows]))
    return Prebuilt(*built[0], *built[1], *built[2])


def sqlite_value(value):
    """What SQLAlchemy stores on SQLite (UTCDateTime: naive UTC text; Date: ISO text)."""
    if isinstance(value, datetime):
        return value.astimezone(timezone.utc).replace(tzinfo=None).strftime("%Y-%m-%d %H:%M:%S.%f")
    if isinstance(value, date):
        return value.isoformat()
    return value


def copy_pg(url: str, rows: Prebuilt) -> float:
    import psycopg
    with psycopg.connect(psycopg_conninfo(url)) as conn:
        gc.collect()
        start = time.perf_counter()
        with conn.cursor() as cur:
            for table, cols, data in rows.tables():
                with cur.copy(f"COPY {table} ({', '.join(cols)}) FROM STDIN") as copy:
                    for row in data:
                        copy.write_row(row)
        conn.commit()
        seconds = time.perf_counter() - start
        with conn.cursor() as cur:
            cur.execute("SELECT count(*) FROM jobs")
            count = cur.fetchone()[0]
    if count != len(rows.jobs):
        raise RuntimeError(f"COPY loaded {count} jobs, expected {len(rows.jobs)}")
    return seconds


def executemany_sqlite(url: str, rows: Prebuilt) -> float:
    con = sqlite3.connect(url.removeprefix("sqlite:///"))
    try:
        for pragma in ("foreign_keys=ON", "journal_mode=WAL", "synchronous=NORMAL"):  # as the archiver
            con.execute(f"PRAGMA {pragma}")
        gc.collect()
        start = time.perf_counter()
        with con:
            for table, cols, data in rows.tables():
                con.executemany(f"INSERT INTO {table} ({', '.join(cols)}) VALUES "
                                f"({', '.join('?' * len(cols))})", data)
        seconds = time.perf_counter() - start
        count = con.execute("SELECT count(*) FROM jobs").fetchone()[0]
    finally:
        con.close()
    if count != len(rows.jobs):
        raise RuntimeError(f"executemany loaded {count} jobs, expected {len(rows.jobs)}")
    return seconds


def bench_sync_ids(tmp: Path, n: int, latency_ms: float, concurrency: int) -> dict:
    from archiver.sandbox import Sandbox
    url = fresh_sqlite(tmp, "sync-ids")          # migrated before the clock starts
    with Sandbox(jobs=n, latency_ms=latency_ms, now=SANDBOX_NOW, api_key=SANDBOX_KEY) as sandbox:
        ids = sandbox.job_ids()
        settings = Settings(account=sandbox.account, api_key=Secret(SANDBOX_KEY), api_url=sandbox.url,
                            database_url=url)
        gc.collect()
        start = time.perf_counter()
        summary = sync_ids(settings, ids, SyncOptions(concurrency=concurrency))
        seconds = time.perf_counter() - start
        stats = sandbox.stats.snapshot()
    if summary.outcome != "ok" or summary.inserted != len(ids):
        raise RuntimeError(f"sync_ids: outcome {summary.outcome}, inserted {summary.inserted} of {len(ids)}")
    return {"seconds": seconds, "jobs": len(ids), "api_calls": summary.api_calls, "stats": stats,
            "ideal": len(ids) * latency_ms / 1000 / concurrency}


def bench_incremental(tmp: Path, n: int) -> dict:
    from archiver.sandbox import Sandbox
    url = fresh_sqlite(tmp, "incremental")
    with Sandbox(jobs=n, now=SANDBOX_NOW, api_key=SANDBOX_KEY) as sandbox:
        settings = Settings(account=sandbox.account, api_key=Secret(SANDBOX_KEY), api_url=sandbox.url,
                            database_url=url)
        start = time.perf_counter()
        summary = sync_incremental(settings, SyncOptions(), IncrementalOptions(catalog=False))  # jobs only
        seconds = time.perf_counter() - start
        stats = sandbox.stats.snapshot()
    if summary.outcome != "ok" or summary.inserted != n:
        raise RuntimeError(f"incremental: outcome {summary.outcome}, inserted {summary.inserted} of {n}")
    sandbox_calls = stats["by_endpoint"]["list_jobs"] + stats["by_endpoint"]["get_job"]
    return {"seconds": seconds, "jobs": n, "api_calls": summary.api_calls, "sandbox_calls": sandbox_calls,
            "stats": stats, "ideal": math.ceil(n / 100)}


def baseline_task(target: str, path: str) -> dict:
    """Child task: prebuild the rows of the payloads at `path` (not timed), then load them into
    `target` (a fresh SQLite file, or a reset PostgreSQL database) by executemany or COPY."""
    rows = prebuild_rows(Path(path))
    if target.startswith("sqlite:///"):
        return {"seconds": executemany_sqlite(target, as_tuples(rows, sqlite_value))}
    return {"seconds": copy_pg(target, as_tuples(rows))}


def series_task(label: str, target: str, full: str, changed: str, n: int, batch: int) -> dict:
    """Child task: ingest_series into `target` (fresh)."""
    return ingest_series(label, target, {"full": Path(full), "changed": Path(changed)}, n, batch)


def unscored_task(target: str, path: str, n: int, batch: int) -> dict:
    """Child task: a first ingest into `target` (fresh) without anomaly scoring."""
    return {"seconds": timed_ingest(target, Path(path), batch, {"inserted": n}, score=False)[0]}


CHILD_TASKS = {"baseline": baseline_task, "series": series_task, "unscored": unscored_task}


def in_child(task: str, **params) -> dict:
    """One of CHILD_TASKS in a fresh process of its own, its JSON result back. Each side of figures
    1-3 is timed so: neither pays for what the other left in the process (the baseline's 1.2
    million prebuilt rows held in the benchmark's own process made the same first ingest into
    PostgreSQL about 2 s slower: 1.0-3.2 s over 5 interleaved rounds), as a user's run starts
    fresh too."""
    proc = subprocess.run([sys.executable, str(Path(__file__).resolve()), "--child-task",
                           json.dumps({"task": task, **params})], stdout=subprocess.PIPE, text=True, check=False)
    if proc.returncode != 0:
        raise RuntimeError(f"--child-task {task} failed (exit code {proc.returncode}; its messages above)")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def rss_child(path: str, batch: int) -> None:
    """Child mode: ingest one file into a fresh SQLite archive, print the peak RSS as JSON."""
    tmp = Path(tempfile.mkdtemp(prefix="archiver-bench-rss-"))
    try:
        url = fresh_sqlite(tmp, "rss")
        before = vm_hwm()   # own peak after imports + migration (ru_maxrss would show the parent's)
        worker_kib = watch_scoring_worker()
        with open(path, "rb") as stream:
            start = time.perf_counter()
            summary = ingest(Settings(account=ACCOUNT, database_url=url), read_payloads(stream),
                             SyncOptions(batch_size=batch))
            seconds = time.perf_counter() - start
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss   # KiB on Linux
        # the scoring worker's peak added: the two processes together, at worst at the same moment
        print(json.dumps({"maxrss_kib": peak + max(worker_kib, default=0), "own_kib": peak,
                          "worker_kib": max(worker_kib, default=0), "before_kib": before, "vmhwm_kib": vm_hwm(),
                          "seconds": seconds,
                          "inserted": summary.inserted,
                          "outcome": summary.outcome}))
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def watch_scoring_worker() -> list[int]:
    """The peak RSS (KiB) of each scoring worker the run starts (flows.scoring), read just
    before the run ends it."""
    from archiver.flows import scoring
    peaks: list[int] = []
    real_close = scoring.ScoringWorker.close

    def close(self, hurry: bool = False) -> None:
        found = vm_hwm(self.process.pid)
        if found is not None:
            peaks.append(found)
        real_close(self, hurry)

    scoring.ScoringWorker.close = close
    return peaks


def vm_hwm(pid: int | str = "self") -> int | None:
    """A process's own peak RSS (KiB) from /proc: unlike ru_maxrss it is not carried over exec()."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1])
    except OSError:
        pass
    return None


def measure_rss(path: Path, batch: int = INGEST_BATCH_SIZE) -> dict:
    # On Linux a child's ru_maxrss starts at the spawning process's peak RSS (it survives exec),
    # so the children are started early, while this process is still small, and the child also
    # reports VmHWM (its own peak only) as a cross-check.
    proc = subprocess.run([sys.executable, str(Path(__file__).resolve()), "--rss-child", str(path),
                           "--batch-size", str(batch)],
                          capture_output=True, text=True, check=False)
    if proc.returncode != 0:
        raise RuntimeError(f"--rss-child {path.name} failed:\n{proc.stderr[-2000:]}")
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    if result["outcome"] != "ok":
        raise RuntimeError(f"--rss-child {path.name}: outcome {result['outcome']}")
    return result


# -- machine and report ----------------------------------------------------------------------------
def machine(pg_url: str | None, mysql_url: str | None = None) -> list[tuple[str, str]]:
    cpu = "unknown"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    mem = "unknown"
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                mem = f"{int(line.split()[1]) / 1024 / 1024:.1f} GiB"
                break
    except OSError:
        pass
    import sqlalchemy
    code = "unknown"
    try:
        head = subprocess.run(["git", "-C", str(ROOT), "rev-parse", "--short", "HEAD"], capture_output=True,
                              text=True, timeout=10).stdout.strip()
        dirty = subprocess.run(["git", "-C", str(ROOT), "status", "--porcelain", "--", "archiver", "migrations"],
                               capture_output=True, text=True, timeout=10).stdout.strip()
        code = f"{head}{' + uncommitted changes in archiver/ or migrations/' if dirty else ''}" if head else code
    except (OSError, subprocess.SubprocessError):
        pass
    info = [("Code", code), ("CPUs (nproc)", str(len(os.sched_getaffinity(0)))), ("Memory", mem), ("CPU model", cpu),
            ("OS", f"{platform.system()} {platform.release()}"),
            ("Python", platform.python_version()), ("SQLAlchemy", sqlalchemy.__version__),
            ("SQLite", sqlite3.sqlite_version)]
    if pg_url:
        import psycopg
        try:   # the server's own database: the bench database may not exist yet
            from sqlalchemy.engine import make_url
            with psycopg.connect(psycopg_conninfo(make_url(pg_url).set(database="postgres"))) as conn:
                version = conn.execute("SHOW server_version").fetchone()[0]
            info.append(("PostgreSQL", f"{version} (psycopg {psycopg.__version__}, same host)"))
        except Exception as exc:  # reported, and the run then fails at the first PG step
            info.append(("PostgreSQL", f"unreachable: {type(exc).__name__}"))
    if mysql_url:
        try:
            from sqlalchemy import text
            from sqlalchemy.engine import make_url
            engine = make_engine(make_url(mysql_url).set(database="mysql").render_as_string(hide_password=False))
            with engine.connect() as conn:
                info.append(("MySQL/MariaDB", f"{conn.execute(text('SELECT VERSION()')).scalar()} (same host)"))
            engine.dispose()
        except Exception as exc:
            info.append(("MySQL/MariaDB", f"unreachable: {type(exc).__name__}"))
    try:
        import orjson
        info.append(("orjson", orjson.__version__))
    except ImportError:
        info.append(("orjson", "not installed (the standard library's json)"))
    info.append(("Load average at start", " ".join(f"{x:.2f}" for x in os.getloadavg())))
    return info


@dataclasses.dataclass
class Figure:
    """One row of the table. `ratios` holds one ratio per repetition (the row shows their
    median and spread); `target` None: reported, no target."""
    name: str
    measured: str
    ratios: list[float]
    target: float | None
    target_text: str
    unit: str = "×"

    @property
    def ratio(self) -> float:
        return statistics.median(self.ratios)

    @property
    def met(self) -> bool | None:
        return None if self.target is None else self.ratio <= self.target

    def ratio_text(self) -> str:
        if self.unit != "×":
            return f"{self.ratio:,.0f} {self.unit}"
        text = f"{self.ratio:.3g}×"
        if len(self.ratios) > 1:
            text += f" ({min(self.ratios):.3g}–{max(self.ratios):.3g}, n={len(self.ratios)})"
        return text


def render(figures: list[Figure], info: list[tuple[str, str]], command: str, notes: list[str]) -> str:
    lines = [f"Command: `{command}`  ", f"Run at {datetime.now(timezone.utc):%Y-%m-%d %H:%M} UTC", "",
             "| Machine | |", "|---|---|"]
    lines += [f"| {k} | {v} |" for k, v in info]
    lines += [""] + table_lines(figures)
    if notes:
        lines += [""] + [f"- {n}" for n in notes]
    return "\n".join(lines) + "\n"


def table_lines(figures: list[Figure]) -> list[str]:
    lines = ["| Figure | Measured (median, min–max) | Ratio: median (spread, n) | Target | Met |",
             "|---|---|---:|---|---|"]
    for f in figures:
        met = "reported" if f.met is None else "yes" if f.met else "**no**"
        lines.append(f"| {f.name} | {f.measured} | {f.ratio_text()} | {f.target_text} | {met} |")
    return lines


def secs(x: float) -> str:
    return f"{x:.2f} s"


def spread(values: list[float]) -> str:
    """`27.3 s (26.1–29.0)`: the median and the range of a side's repetitions."""
    med = statistics.median(values)
    return f"{med:.2f} s ({min(values):.2f}–{max(values):.2f})" if len(values) > 1 else f"{med:.2f} s"


def rate(n: int, x: float) -> str:
    return f"{n / x:,.0f} jobs/s"


# -- the run ---------------------------------------------------------------------------------------
def step(message: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


def ingest_series(label: str, url: str, files: dict[str, Path], n: int, batch: int, score: bool = True
                  ) -> dict[str, float]:
    """First ingest, unchanged re-ingest, 1%-changed re-ingest into one (fresh) database."""
    first, _ = timed_ingest(url, files["full"], batch, {"inserted": n, "updated": 0}, score)
    step(f"{label}: first ingest {first:.2f}s")
    same, _ = timed_ingest(url, files["full"], batch, {"inserted": 0, "updated": 0, "unchanged": n}, score)
    step(f"{label}: unchanged re-ingest {same:.2f}s")
    changed_n = len(range(0, n, 100))
    changed, _ = timed_ingest(url, files["changed"], batch,
                              {"inserted": 0, "updated": changed_n, "unchanged": n - changed_n}, score)
    step(f"{label}: 1%-changed re-ingest {changed:.2f}s ({changed_n} updated)")
    return {"first": first, "unchanged": same, "changed": changed, "changed_n": changed_n}


# -- sizes -----------------------------------------------------------------------------------------
# The PostgreSQL `jobs` table (heap + TOAST + indexes) per job for these payloads before issue 18
# (commit 0bb25cc, measured by this benchmark's size step): the reference of the size target.
PG_JOBS_BYTES_BEFORE = 1770


def pg_sizes(url: str) -> dict[str, int]:
    """Bytes of the `jobs` table (heap + TOAST + indexes) and of every table of the archive."""
    from sqlalchemy import text
    engine = make_engine(url)
    try:
        with engine.connect() as conn:
            jobs = conn.execute(text("SELECT pg_total_relation_size('jobs')")).scalar()
            total = conn.execute(text("SELECT sum(pg_total_relation_size(c.oid)) FROM pg_class c JOIN pg_namespace n "
                                      "ON n.oid = c.relnamespace WHERE n.nspname = 'public' AND c.relkind IN ('r', 'm')"
                                      )).scalar()
    finally:
        engine.dispose()
    return {"jobs": int(jobs), "all": int(total)}


def sqlite_size(url: str) -> int:
    """The archive file after a checkpoint (the WAL folded in)."""
    path = url.removeprefix("sqlite:///")
    con = sqlite3.connect(path)
    try:
        con.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    finally:
        con.close()
    return sum(p.stat().st_size for p in Path(path).parent.glob(Path(path).name + "*") if p.suffix != ".lock")


def mysql_size(url: str) -> int:
    """Data + indexes of every table of the archive (after ANALYZE TABLE: InnoDB's figures)."""
    from sqlalchemy import text
    engine = make_engine(url)
    try:
        with engine.connect() as conn:
            tables = conn.execute(text("SELECT table_name FROM information_schema.tables "
                                       "WHERE table_schema = DATABASE() AND table_type = 'BASE TABLE'")).scalars().all()
            conn.exec_driver_sql("ANALYZE TABLE " + ", ".join(f"`{t}`" for t in tables)).all()
            return int(conn.execute(text("SELECT sum(data_length + index_length) FROM information_schema.tables "
                                         "WHERE table_schema = DATABASE()")).scalar())
    finally:
        engine.dispose()


def reset_mysql(url: str) -> None:
    from sqlalchemy import create_engine, text
    from sqlalchemy.engine import make_url
    target = make_url(url)
    admin = create_engine(target.set(database="mysql"), isolation_level="AUTOCOMMIT")
    try:
        with admin.connect() as conn:
            conn.execute(text(f"DROP DATABASE IF EXISTS `{target.database}`"))
            conn.execute(text(f"CREATE DATABASE `{target.database}` CHARACTER SET utf8mb4 COLLATE utf8mb4_unicode_ci"))
    finally:
        admin.dispose()
    engine = make_engine(url)
    try:
        upgrade(engine)
    finally:
        engine.dispose()


# -- linear at scale -------------------------------------------------------------------------------
def scale_child(url: str, path: str, window: int, batch: int) -> None:
    """Child mode: one ingest of a large file into `url`; the time of its first and last `window`
    jobs (from the run's progress after each batch) and the peak RSS, as JSON."""
    marks: list[tuple[int, float]] = []
    start = time.perf_counter()

    def progress(summary) -> None:
        marks.append((summary.inserted, time.perf_counter() - start))

    with open(path, "rb") as stream:
        summary = ingest(Settings(account=ACCOUNT, database_url=url), read_payloads(stream),
                         SyncOptions(batch_size=batch, progress=progress))
    total = marks[-1][0]
    first = next(t for n, t in marks if n >= window)
    before_last = max(t for n, t in marks if n <= total - window)
    print(json.dumps({"first": first, "last": marks[-1][1] - before_last, "total": marks[-1][1],
                      "inserted": summary.inserted, "outcome": summary.outcome, "vmhwm_kib": vm_hwm()}))


def measure_scale(url: str, path: Path, window: int, batch: int = INGEST_BATCH_SIZE) -> dict:
    proc = subprocess.run([sys.executable, str(Path(__file__).resolve()), "--scale-child", str(path),
                           "--pg-url", url, "--scale-window", str(window), "--batch-size", str(batch)],
                          capture_output=True, text=True, check=False)
    if proc.returncode != 0:
        raise RuntimeError(f"--scale-child failed:\n{proc.stderr[-2000:]}")
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    if result["outcome"] != "ok":
        raise RuntimeError(f"--scale-child: outcome {result['outcome']}")
    return result


def bench_latency(tmp: Path, n: int, latency_ms: float) -> dict:
    """Incremental read of n jobs (no catalog) from a sandbox answering after `latency_ms`."""
    from archiver.sandbox import Sandbox
    url = fresh_sqlite(tmp, "latency")
    with Sandbox(jobs=n, latency_ms=latency_ms, now=SANDBOX_NOW, api_key=SANDBOX_KEY) as sandbox:
        settings = Settings(account=sandbox.account, api_key=Secret(SANDBOX_KEY), api_url=sandbox.url,
                            database_url=url)
        gc.collect()
        start = time.perf_counter()
        summary = sync_incremental(settings, SyncOptions(), IncrementalOptions(catalog=False))
        seconds = time.perf_counter() - start
    if summary.outcome != "ok" or summary.inserted != n:
        raise RuntimeError(f"incremental: outcome {summary.outcome}, inserted {summary.inserted} of {n}")
    return {"seconds": seconds, "calls": summary.api_calls, "ideal": summary.api_calls * latency_ms / 1000}


def main_run(args: argparse.Namespace) -> int:
    scale = 10 if args.quick else 1
    reps = args.reps
    n, small = args.jobs // scale, args.small // scale
    ids_n, inc_n = 2000 // scale, 10_000 // scale
    big_n = args.scale_jobs // scale
    window = min(100_000 // scale, big_n // 3) if big_n else 0
    lat_n = args.latency_jobs // scale
    latency_ms, concurrency = 50, 16
    pg_url = None if args.skip_pg else args.pg_url
    command = " ".join(["python bench/run.py", *sys.argv[1:]])
    info = machine(pg_url, args.mysql_url)
    print("\n".join(f"{k}: {v}" for k, v in info), flush=True)

    tmp = Path(tempfile.mkdtemp(prefix="archiver-bench-"))
    figures: list[Figure] = []
    notes: list[str] = []
    try:
        start = time.perf_counter()
        files = write_files(tmp, n, small)
        size = files["full"].stat().st_size
        step(f"wrote {n:,} payloads ({size / n:,.0f} bytes each, {size / 2**20:.0f} MiB) "
             f"in {time.perf_counter() - start:.1f}s")

        # peak RSS first, while this process is small (a child's ru_maxrss starts at its parent's)
        parent_peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        rss = {"big": [], "little": []}
        for rep in range(reps):
            rss["little"].append(measure_rss(files["small"], args.batch_size))
            rss["big"].append(measure_rss(files["full"], args.batch_size))
        big_kib = [r["maxrss_kib"] for r in rss["big"]]
        little_kib = [r["maxrss_kib"] for r in rss["little"]]
        step(f"peak RSS {statistics.median(big_kib) / 1024:.0f} vs {statistics.median(little_kib) / 1024:.0f} MiB"
             f" (the scoring worker's {rss['big'][0]['worker_kib'] / 1024:.0f} / {rss['little'][0]['worker_kib'] / 1024:.0f} MiB of it)")
        rss_figure = Figure(f"6. Peak RSS, ingest of {n:,} vs {small:,} jobs → SQLite (fresh processes)",
                            f"{statistics.median(big_kib) / 1024:.0f} MiB vs "
                            f"{statistics.median(little_kib) / 1024:.0f} MiB (the run's peak and its scoring worker's, "
                            f"{rss['big'][0]['worker_kib'] / 1024:.0f} / {rss['little'][0]['worker_kib'] / 1024:.0f} MiB, summed; "
                            f"after imports + migration: "
                            f"{rss['big'][0]['before_kib'] / 1024:.0f} / {rss['little'][0]['before_kib'] / 1024:.0f} MiB)",
                            [b / s for b, s in zip(big_kib, little_kib)], 1.3, "≤ 1.3×")
        if min(little_kib) <= parent_peak:
            notes.append("Figure 6 may be understated: a child's ru_maxrss did not exceed the parent's "
                         f"peak at spawn time ({parent_peak / 1024:.0f} MiB).")

        # figures 1-3: baseline, archiver, baseline, archiver, ... on each database, each side in a
        # fresh process (in_child)
        runs: dict[str, dict[str, list]] = {}
        sizes: dict[str, int] = {}
        targets = ([("PostgreSQL", "COPY")] if pg_url else []) + [("SQLite", "executemany")]
        full, changed = str(files["full"]), str(files["changed"])
        for rep in range(reps):
            for db, _ in targets:
                r = runs.setdefault(db, {"base": [], "first": [], "unchanged": [], "changed": [], "noscore": []})
                if db == "PostgreSQL":
                    reset_pg(pg_url)
                    r["base"].append(in_child("baseline", target=pg_url, path=full)["seconds"])
                    reset_pg(pg_url)
                    url = pg_url
                else:
                    r["base"].append(in_child("baseline", target=fresh_sqlite(tmp, "baseline"), path=full)["seconds"])
                    url = fresh_sqlite(tmp, "ingest")
                step(f"{db} rep {rep + 1}: baseline {r['base'][-1]:.2f}s")
                s = in_child("series", label=f"{db} rep {rep + 1}", target=url, full=full, changed=changed, n=n,
                             batch=args.batch_size)
                for key in ("first", "unchanged", "changed"):
                    r[key].append(s[key])
                r["changed_n"] = s["changed_n"]
                if rep == 0:
                    if db == "PostgreSQL":
                        pg = pg_sizes(url)
                        sizes["PostgreSQL jobs"], sizes["PostgreSQL"] = pg["jobs"], pg["all"]
                    else:
                        sizes["SQLite"] = sqlite_size(url)
                if not args.skip_noscore:   # the same first ingest without anomaly scoring
                    url = (reset_pg(pg_url), pg_url)[1] if db == "PostgreSQL" else fresh_sqlite(tmp, "noscore")
                    seconds = in_child("unscored", target=url, path=full, n=n, batch=args.batch_size)["seconds"]
                    r["noscore"].append(seconds)
                    step(f"{db} rep {rep + 1}: first ingest without anomaly scoring {seconds:.2f}s")

        for db, base_name in targets:
            r = runs[db]
            figures.append(Figure(f"1. Ingest {n:,} jobs → {db}, vs {base_name} of the same rows",
                                  f"{spread(r['first'])} ({rate(n, statistics.median(r['first']))}); "
                                  f"{base_name} {spread(r['base'])}",
                                  [a / b for a, b in zip(r["first"], r["base"])], 3.0, "≤ 3.0×"))
            if r["noscore"]:
                figures.append(Figure(f"1b. The same without anomaly scoring (`score_anomalies=False`) → {db}",
                                      f"{spread(r['noscore'])}; {base_name} {spread(r['base'])}",
                                      [a / b for a, b in zip(r["noscore"], r["base"])], 3.0, "≤ 3.0×"))
        for db, _ in targets:
            r = runs[db]
            figures.append(Figure(f"2. Re-ingest {n:,} unchanged → {db}, vs first ingest",
                                  f"{spread(r['unchanged'])} ({rate(n, statistics.median(r['unchanged']))})",
                                  [a / b for a, b in zip(r["unchanged"], r["first"])], 0.3, "≤ 0.3×"))
        for db, _ in targets:
            r = runs[db]
            figures.append(Figure(f"3. Re-ingest {n:,}, 1% changed ({r['changed_n']:,}) → {db}, vs unchanged",
                                  spread(r["changed"]), [a / b for a, b in zip(r["changed"], r["unchanged"])],
                                  1.5, "≤ 1.5×"))

        ids_runs = []
        for rep in range(reps):
            ids_runs.append(bench_sync_ids(tmp, ids_n, latency_ms, concurrency))
            step(f"sync_ids rep {rep + 1}: {ids_runs[-1]['seconds']:.2f}s")
        ideal = ids_runs[0]["ideal"]
        figures.append(Figure(f"4. sync_ids {ids_n:,} jobs from the sandbox ({latency_ms} ms, "
                              f"concurrency {concurrency}) → SQLite, vs N·L/C",
                              f"{spread([r['seconds'] for r in ids_runs])}; ideal {secs(ideal)}; "
                              f"{ids_runs[0]['stats']['by_endpoint']['get_job']:,} get_job calls",
                              [r["seconds"] / r["ideal"] for r in ids_runs], 1.3, "≤ 1.3×"))

        step(f"incremental sync of {inc_n:,} jobs")
        r = bench_incremental(tmp, inc_n)
        calls = max(r["api_calls"], r["sandbox_calls"])
        limit = r["ideal"] + 1
        figures.append(Figure(f"5. sync_incremental {r['jobs']:,} jobs → SQLite: API calls vs ceil(N/100)",
                              f"{r['api_calls']} calls (sandbox: {r['stats']['by_endpoint']['list_jobs']} "
                              f"list_jobs, {r['stats']['by_endpoint']['get_job']} get_job); "
                              f"{secs(r['seconds'])} (a count: one run)",
                              [calls / r["ideal"]], limit / r["ideal"], f"≤ {limit} calls"))
        figures.append(rss_figure)

        if lat_n and not args.skip_latency:
            lat_runs = []
            for rep in range(reps):
                lat_runs.append(bench_latency(tmp, lat_n, args.latency_ms))
                step(f"incremental at {args.latency_ms:.0f} ms rep {rep + 1}: {lat_runs[-1]['seconds']:.1f}s, "
                     f"{lat_runs[-1]['calls']} calls")
            figures.append(Figure(f"7. sync_incremental {lat_n:,} jobs, {args.latency_ms:.0f} ms API latency "
                                  "(no catalog) → SQLite, vs calls × latency",
                                  f"{spread([r['seconds'] for r in lat_runs])}; {lat_runs[0]['calls']} calls, "
                                  f"latency alone {secs(lat_runs[0]['ideal'])}",
                                  [r["seconds"] / r["ideal"] for r in lat_runs], 1.15, "≤ 1.15×"))

        if pg_url and big_n:
            big_file = tmp / "jobs-scale.jsonl"
            with open(big_file, "w", encoding="utf-8") as out:
                for i in range(big_n):
                    out.write(json.dumps(make_payload(i), separators=(",", ":")) + "\n")
            scale_runs = []
            for rep in range(reps):
                reset_pg(pg_url)
                scale_runs.append(measure_scale(pg_url, big_file, window, args.batch_size))
                s = scale_runs[-1]
                step(f"scale rep {rep + 1}: {big_n:,} jobs in {s['total']:.1f}s; first {window:,} "
                     f"{s['first']:.1f}s, last {s['last']:.1f}s")
            big_file.unlink()
            figures.append(Figure(f"8. Linear at scale: ingest of {big_n:,} jobs → PostgreSQL, last {window:,} "
                                  f"vs first {window:,}",
                                  f"last {spread([s['last'] for s in scale_runs])}, first "
                                  f"{spread([s['first'] for s in scale_runs])}; whole ingest "
                                  f"{spread([s['total'] for s in scale_runs])}; peak RSS "
                                  f"{max(s['vmhwm_kib'] for s in scale_runs) / 1024:.0f} MiB",
                                  [s["last"] / s["first"] for s in scale_runs], 1.15, "≤ 1.15×"))
            notes.append(f"Figure 8 is measured at {big_n:,} jobs, not 1,000,000 (the bench's time); "
                         "`--scale-jobs 1000000` runs it at a million.")

        if args.mysql_url:
            step("MySQL/MariaDB: one ingest for its size")
            reset_mysql(args.mysql_url)
            seconds, _ = timed_ingest(args.mysql_url, files["full"], args.batch_size, {"inserted": n})
            sizes["MySQL/MariaDB"] = mysql_size(args.mysql_url)
            step(f"MySQL/MariaDB: first ingest {seconds:.2f}s")
        if "PostgreSQL jobs" in sizes:
            per_job = sizes["PostgreSQL jobs"] / n
            figures.append(Figure(f"9. PostgreSQL `jobs` table (heap + TOAST + indexes) per job, vs "
                                  f"{PG_JOBS_BYTES_BEFORE:,} B before issue 18", f"{per_job:,.0f} B",
                                  [per_job / PG_JOBS_BYTES_BEFORE], 0.6, "≤ 0.6× (a size: one run)"))
        for db in ("SQLite", "PostgreSQL", "MySQL/MariaDB"):
            if db in sizes:
                figures.append(Figure(f"10. Whole archive per job → {db}", f"{sizes[db] / 2**20:,.1f} MiB for "
                                      f"{n:,} jobs", [sizes[db] / n], None, "reported", unit="B/job"))

        notes += [
            f"Every ratio is the median of {reps} repetitions, run interleaved (baseline, archiver, baseline, "
            "archiver, ...) on this shared machine; the spread is the smallest and largest of them.",
            f"Payloads: {n:,} v1-shaped jobs (2 outputs, 3 variables, ~{size / n:,.0f} bytes each), "
            f"ingested with SyncOptions(batch_size={args.batch_size}) from a JSON Lines file; "
            "timings include reading and parsing the file, exclude schema migration; anomaly scoring is on "
            "(the default) except in figure 1b. In figures 1-3 each baseline, and each archiver series (first "
            "ingest, unchanged, 1% changed), runs in a fresh process of its own.",
            "Baselines load only jobs, job_outputs and job_variables rows, prebuilt (parsed, hashed, "
            "SQLite values already converted to stored text) outside the timing; the archiver also "
            "writes job_status_changes, packages/clusters ids, anomaly verdicts and a sync_runs row.",
            "Figures 5 and 7 read jobs only (no catalog); figure 5 counts the larger of the client's api_calls "
            "and the sandbox's list_jobs + get_job.",
            f"Total bench time {time.perf_counter() - start:.0f} s.",
        ]
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
        if pg_url:
            try:
                reset_pg(pg_url, migrate=False)
            except Exception as exc:
                print(f"note: could not clean the bench database: {type(exc).__name__}", file=sys.stderr)

    text = render(figures, info, command, notes)
    print()
    print(text)
    if args.quick or args.jobs != 100_000 or args.skip_pg:
        print(f"(not written to {RESULTS_FILE.relative_to(ROOT)}: that file keeps the last full run)")
    else:
        RESULTS_FILE.write_text("# Benchmark results\n\n" + text, encoding="utf-8")
        update_readme(figures, info)
        print(f"(written to {RESULTS_FILE.relative_to(ROOT)} and the README's table)")
    return 0


README = ROOT / "README.md"
README_START, README_END = "<!-- bench/run.py: table -->", "<!-- bench/run.py: end -->"


def update_readme(figures: list[Figure], info: list[tuple[str, str]]) -> None:
    """Replace the README's table (between its two markers) by this run's."""
    text = README.read_text(encoding="utf-8")
    if README_START not in text or README_END not in text:
        print("note: the README has no benchmark markers; its table is not updated", file=sys.stderr)
        return
    facts = dict(info)
    head = (f"Latest run ({facts.get('CPUs (nproc)', '?')} cores shared with other work, {facts.get('Memory', '?')}, "
            f"{facts.get('CPU model', '?')}, Python {facts.get('Python', '?')}, SQLite {facts.get('SQLite', '?')}, "
            f"PostgreSQL {facts.get('PostgreSQL', '-').split(' (')[0]}, MariaDB {facts.get('MySQL/MariaDB', '-')}; "
            f"code {facts.get('Code', '?')}; the full table with the machine and notes is in `bench/last-results.md`):")
    block = "\n".join([README_START, head, "", *table_lines(figures), README_END])
    before, rest = text.split(README_START, 1)
    README.write_text(before + block + rest.split(README_END, 1)[1], encoding="utf-8")


BREAKDOWN = {   # label: [(part of the file name, exact function name), ...] in the profile
    "read_payloads (file read + json decode)": [("archiver/payloads.py", "_one_line")],
    "parse_job (validate, canonical JSON, sha256)": [("archiver/parse.py", "parse_job")],
    "  canonical_json": [("archiver/jsonio.py", "canonical_json")],
    "Archive._write (one batch, in the transaction)": [("archiver/store.py", "_write")],
    "  read_stored (SELECT; FOR UPDATE on PG)": [("archiver/store.py", "read_stored")],
    "  _upsert_dimensions (packages, clusters, creators)": [("archiver/store.py", "_upsert_dimensions")],
    "  _upsert_job_rows (jobs upsert)": [("archiver/store.py", "_upsert_job_rows")],
    "  _replace_children (outputs, variables, summaries)": [("archiver/store.py", "_replace_children")],
    "    dataclasses.asdict (output rows)": [("dataclasses.py", "asdict")],
    "  _record_status_changes": [("archiver/store.py", "_record_status_changes")],
    "dialect.upsert / insert_rows / insert_missing": [("archiver/dialect.py", "upsert"),
                                                       ("archiver/dialect.py", "insert_rows")],
    "  COPY into tables / staging tables (_pg_copy_into)": [("archiver/dialect.py", "_pg_copy_into")],
    "  executemany straight to the driver (execute_many)": [("archiver/dialect.py", "execute_many")],
    "SQLAlchemy Connection.execute + exec_driver_sql": [("sqlalchemy/engine/base.py", "execute"),
                                                        ("sqlalchemy/engine/base.py", "exec_driver_sql")],
    "  statement compile (cached)": [("sqlalchemy/sql/elements.py", "_compile_w_cache")],
    "  bind processing (UTCDateTime.process_bind_param)": [("archiver/sqltypes.py", "process_bind_param")],
    "  DBAPI executemany": [("psycopg/cursor.py", "executemany"),
                            ("~", "<method 'executemany' of 'sqlite3.Cursor' objects>")],
    "  DBAPI execute": [("psycopg/cursor.py", "execute"),
                        ("~", "<method 'execute' of 'sqlite3.Cursor' objects>")],
    "DBAPI commit": [("psycopg/connection.py", "commit"),
                     ("~", "<method 'commit' of 'sqlite3.Connection' objects>")],
}


def unprofiled_costs(path: Path) -> list[tuple[str, float]]:
    """Plain wall-clock costs (no profiler overhead) of the pure-Python steps every ingest pays,
    even a re-ingest of unchanged jobs."""
    import hashlib
    from archiver.jsonio import canonical_json
    with open(path, "rb") as stream:
        start = time.perf_counter()
        raws = list(read_payloads(stream))
        read = time.perf_counter() - start
    with open(path, "rb") as stream:
        start = time.perf_counter()
        plain = [json.loads(line) for line in stream]
        plain_read = time.perf_counter() - start
    del plain
    start = time.perf_counter()
    for raw in raws:
        parse_job(raw)
    parse = time.perf_counter() - start
    start = time.perf_counter()
    for raw in raws:
        hashlib.sha256(canonical_json(raw).encode("utf-8")).hexdigest()
    hashing = time.perf_counter() - start
    return [("read_payloads (1 MiB buffer split per line + json decode)", read),
            ("  for comparison: `for line in file: json.loads(line)`", plain_read),
            ("parse_job (all of it)", parse),
            ("  of which canonical_json + sha256", hashing)]


def main_profile(args: argparse.Namespace) -> int:
    """cProfile of one first ingest of `--profile N` jobs into each backend: top 15 by cumulative time."""
    n = args.profile
    tmp = Path(tempfile.mkdtemp(prefix="archiver-bench-prof-"))
    try:
        files = write_files(tmp, n, 0)
        targets = [] if args.skip_pg else [("PostgreSQL", lambda: (reset_pg(args.pg_url), args.pg_url)[1])]
        targets.append(("SQLite", lambda: fresh_sqlite(tmp, "profile")))
        for label, url_for in targets:
            url = url_for()
            profiler = cProfile.Profile()
            settings = Settings(account=ACCOUNT, database_url=url)
            with open(files["full"], "rb") as stream:
                start = time.perf_counter()
                profiler.enable()
                summary = ingest(settings, read_payloads(stream), SyncOptions(batch_size=args.batch_size))
                profiler.disable()
                seconds = time.perf_counter() - start
            print(f"## ingest of {n:,} jobs → {label}: {seconds:.2f}s under cProfile "
                  f"(inserted {summary.inserted}, outcome {summary.outcome})\n")
            for order in ("cumulative", "tottime"):
                out = io.StringIO()
                pstats.Stats(profiler, stream=out).sort_stats(order).print_stats(15)
                body = out.getvalue()
                body = body[body.find("   ncalls"):] if "   ncalls" in body else body
                print(f"### top 15 by {order}\n")
                print(body.replace(str(ROOT) + "/", "").replace(sys.prefix + "/", "").rstrip() + "\n")
            print("### where the time goes (cumulative seconds, overlapping)\n")
            stats = pstats.Stats(profiler).stats
            for name, wanted in BREAKDOWN.items():
                hits = [v for (f, _, fn), v in stats.items()
                        if any(fn == func and part in f for part, func in wanted)]
                cum, calls = sum(v[3] for v in hits), sum(v[1] for v in hits)
                print(f"  {name:<58} {cum:7.2f} s {100 * cum / seconds:5.1f}%  ({calls:,} calls)")
            print()
        print(f"## the same {n:,} jobs without the profiler (wall clock)\n")
        for name, seconds in unprofiled_costs(files["full"]):
            print(f"  {name:<58} {seconds:7.2f} s")
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
        if not args.skip_pg:
            reset_pg(args.pg_url, migrate=False)
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--jobs", type=int, default=100_000, help="N jobs for figures 1-3 and 6")
    parser.add_argument("--small", type=int, default=10_000, help="jobs in the small ingest of figure 6")
    parser.add_argument("--pg-url", default=DEFAULT_PG_URL, help="a throwaway PostgreSQL database")
    parser.add_argument("--skip-pg", action="store_true", help="SQLite only")
    parser.add_argument("--quick", action="store_true", help="1/10 of every size (smoke run)")
    parser.add_argument("--batch-size", type=int, default=INGEST_BATCH_SIZE,
                        help="jobs per transaction of every ingest (default: `archiver ingest`'s)")
    parser.add_argument("--profile", type=int, metavar="N", help="profile an ingest of N jobs instead")
    parser.add_argument("--reps", type=int, default=3, help="repetitions of every timed figure (median, spread)")
    parser.add_argument("--scale-jobs", type=int, default=300_000,
                        help="jobs of the PostgreSQL linearity figure (0: skip it)")
    parser.add_argument("--mysql-url", help="a throwaway MySQL/MariaDB database: its archive size is reported")
    parser.add_argument("--latency-jobs", type=int, default=50_000, help="jobs of the incremental-latency figure")
    parser.add_argument("--latency-ms", type=float, default=150)
    parser.add_argument("--skip-latency", action="store_true", help="without the incremental-latency figure")
    parser.add_argument("--skip-noscore", action="store_true", help="without figure 1b (ingest without scoring)")
    parser.add_argument("--rss-child", metavar="PATH", help=argparse.SUPPRESS)
    parser.add_argument("--scale-child", metavar="PATH", help=argparse.SUPPRESS)
    parser.add_argument("--scale-window", type=int, default=100_000, help=argparse.SUPPRESS)
    parser.add_argument("--child-task", metavar="JSON", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    if args.rss_child:
        rss_child(args.rss_child, args.batch_size)
        return 0
    if args.child_task:
        params = json.loads(args.child_task)
        print(json.dumps(CHILD_TASKS[params.pop("task")](**params)))
        return 0
    if args.scale_child:
        scale_child(args.pg_url, args.scale_child, args.scale_window, args.batch_size)
        return 0
    if args.reps < 1:
        parser.error("--reps must be at least 1")
    if args.small > args.jobs:
        parser.error("--small must not exceed --jobs")
    if args.profile:
        return main_profile(args)
    return main_run(args)


if __name__ == "__main__":
    sys.exit(main())
