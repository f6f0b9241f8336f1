#!/usr/bin/env python
"""Benchmark of xplenty-archiver: ingest, re-ingest, per-id and incremental sync, peak RSS.

    python bench/run.py                 # full sizes (100,000 / 10,000 jobs), PostgreSQL + SQLite
    python bench/run.py --quick         # 1/10 of every size, a smoke run
    python bench/run.py --skip-pg       # SQLite only
    python bench/run.py --profile 20000 # cProfile of one ingest per backend (top 15 by cumulative time)

Everything it needs is built here: deterministic v1-like job payloads (2 outputs and
3 variables each) written to JSON Lines files in a temporary directory, fresh SQLite
files, and the tables of the PostgreSQL database given by --pg-url (its `public`
schema is dropped and re-created between steps: point it at a throwaway database).
Each figure is printed as a ratio next to its target; the table is also written to
bench/last-results.md. Nothing in archiver/ is changed or tuned.
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
import subprocess
import sys
import tempfile
import time
from datetime import date, datetime, timedelta, timezone
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from archiver.config import Secret, Settings  # noqa: E402
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
    """Drop everything in the bench database's public schema, then migrate to head."""
    ensure_pg_database(url)
    engine = make_engine(url)
    try:
        with engine.begin() as conn:
            conn.exec_driver_sql("DROP SCHEMA IF EXISTS public CASCADE")
            conn.exec_driver_sql("CREATE SCHEMA public")
        if migrate:
            upgrade(engine)
    finally:
        engine.dispose()


def psycopg_conninfo(url: str) -> str:
    from sqlalchemy.engine import make_url
    return make_url(url).set(drivername="postgresql").render_as_string(hide_password=False)


# -- the measured steps ----------------------------------------------------------------------------
def timed_ingest(url: str, path: Path, batch_size: int, expect: dict[str, int]) -> tuple[float, object]:
    """archiver.flows.ingest.ingest of a JSON Lines file; the summary's counts are checked."""
    settings = Settings(account=ACCOUNT, database_url=url)
    gc.collect()
    with open(path, "rb") as stream:
        start = time.perf_counter()
        summary = ingest(settings, read_payloads(stream), SyncOptions(batch_size=batch_size))
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
        summary = sync_incremental(settings, SyncOptions(), IncrementalOptions())
        seconds = time.perf_counter() - start
        stats = sandbox.stats.snapshot()
    if summary.outcome != "ok" or summary.inserted != n:
        raise RuntimeError(f"incremental: outcome {summary.outcome}, inserted {summary.inserted} of {n}")
    sandbox_calls = stats["by_endpoint"]["list_jobs"] + stats["by_endpoint"]["get_job"]
    return {"seconds": seconds, "jobs": n, "api_calls": summary.api_calls, "sandbox_calls": sandbox_calls,
            "stats": stats, "ideal": math.ceil(n / 100)}


def rss_child(path: str) -> None:
    """Child mode: ingest one file into a fresh SQLite archive, print the peak RSS as JSON."""
    tmp = Path(tempfile.mkdtemp(prefix="archiver-bench-rss-"))
    try:
        url = fresh_sqlite(tmp, "rss")
        before = vm_hwm()   # own peak after imports + migration (ru_maxrss would show the parent's)
        with open(path, "rb") as stream:
            start = time.perf_counter()
            summary = ingest(Settings(account=ACCOUNT, database_url=url), read_payloads(stream), SyncOptions())
            seconds = time.perf_counter() - start
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss   # KiB on Linux
        print(json.dumps({"maxrss_kib": peak, "before_kib": before, "vmhwm_kib": vm_hwm(),
                          "seconds": seconds,
                          "inserted": summary.inserted,
                          "outcome": summary.outcome}))
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def vm_hwm() -> int | None:
    """This process's own peak RSS (KiB) from /proc: unlike ru_maxrss it is not carried over exec()."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1])
    except OSError:
        pass
    return None


def measure_rss(path: Path) -> dict:
    # On Linux a child's ru_maxrss starts at the spawning process's peak RSS (it survives exec),
    # so the children are started early, while this process is still small, and the child also
    # reports VmHWM (its own peak only) as a cross-check.
    proc = subprocess.run([sys.executable, str(Path(__file__).resolve()), "--rss-child", str(path)],
                          capture_output=True, text=True, check=False)
    if proc.returncode != 0:
        raise RuntimeError(f"--rss-child {path.name} failed:\n{proc.stderr[-2000:]}")
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    if result["outcome"] != "ok":
        raise RuntimeError(f"--rss-child {path.name}: outcome {result['outcome']}")
    return result


# -- machine and report ----------------------------------------------------------------------------
def machine(pg_url: str | None) -> list[tuple[str, str]]:
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
        try:
            with psycopg.connect(psycopg_conninfo(pg_url)) as conn:
                version = conn.execute("SHOW server_version").fetchone()[0]
            info.append(("PostgreSQL", f"{version} (psycopg {psycopg.__version__}, same host)"))
        except Exception as exc:  # reported, and the run then fails at the first PG step
            info.append(("PostgreSQL", f"unreachable: {type(exc).__name__}"))
    return info


@dataclasses.dataclass
class Figure:
    name: str
    measured: str
    ratio: float
    target: float
    target_text: str

    @property
    def met(self) -> bool:
        return self.ratio <= self.target


def render(figures: list[Figure], info: list[tuple[str, str]], command: str, notes: list[str]) -> str:
    lines = [f"Command: `{command}`  ", f"Run at {datetime.now(timezone.utc):%Y-%m-%d %H:%M} UTC", "",
             "| Machine | |", "|---|---|"]
    lines += [f"| {k} | {v} |" for k, v in info]
    lines += ["", "| Figure | Measured | Ratio | Target | Met |", "|---|---|---:|---|---|"]
    for f in figures:
        lines.append(f"| {f.name} | {f.measured} | {f.ratio:.3g}× | {f.target_text} | "
                     f"{'yes' if f.met else '**no**'} |")
    if notes:
        lines += [""] + [f"- {n}" for n in notes]
    return "\n".join(lines) + "\n"


def secs(x: float) -> str:
    return f"{x:.2f} s"


def rate(n: int, x: float) -> str:
    return f"{n / x:,.0f} jobs/s"


# -- the run ---------------------------------------------------------------------------------------
def step(message: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


def ingest_series(label: str, url_for, files: dict[str, Path], n: int, batch: int) -> dict[str, float]:
    """First ingest, unchanged re-ingest, 1%-changed re-ingest into one database."""
    url = url_for()
    first, _ = timed_ingest(url, files["full"], batch, {"inserted": n, "updated": 0})
    step(f"{label}: first ingest {first:.2f}s")
    same, _ = timed_ingest(url, files["full"], batch, {"inserted": 0, "updated": 0, "unchanged": n})
    step(f"{label}: unchanged re-ingest {same:.2f}s")
    changed_n = len(range(0, n, 100))
    changed, _ = timed_ingest(url, files["changed"], batch,
                              {"inserted": 0, "updated": changed_n, "unchanged": n - changed_n})
    step(f"{label}: 1%-changed re-ingest {changed:.2f}s ({changed_n} updated)")
    return {"first": first, "unchanged": same, "changed": changed, "changed_n": changed_n}


def main_run(args: argparse.Namespace) -> int:
    scale = 10 if args.quick else 1
    n, small = args.jobs // scale, args.small // scale
    ids_n, inc_n = 2000 // scale, 10_000 // scale
    latency_ms, concurrency = 50, 16
    pg_url = None if args.skip_pg else args.pg_url
    command = " ".join(["python bench/run.py", *sys.argv[1:]])
    info = machine(pg_url)
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

        parent_peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        step(f"peak RSS: ingest in child processes (this process's peak so far {parent_peak / 1024:.0f} MiB)")
        big = measure_rss(files["full"])
        little = measure_rss(files["small"])
        step(f"peak RSS {big['maxrss_kib'] / 1024:.0f} vs {little['maxrss_kib'] / 1024:.0f} MiB")
        rss_figure = Figure(f"6. Peak RSS, ingest of {n:,} vs {small:,} jobs → SQLite (fresh processes)",
                            f"{big['maxrss_kib'] / 1024:.0f} MiB vs {little['maxrss_kib'] / 1024:.0f} MiB "
                            f"(after imports + migration: {big['before_kib'] / 1024:.0f} / "
                            f"{little['before_kib'] / 1024:.0f} MiB)",
                            big["maxrss_kib"] / little["maxrss_kib"], 1.3, "≤ 1.3×")
        if little["maxrss_kib"] <= parent_peak:
            notes.append("Figure 6 may be understated: a child's ru_maxrss did not exceed the parent's "
                         f"peak at spawn time ({parent_peak / 1024:.0f} MiB).")
        notes.append(f"Figure 6 cross-check, VmHWM of the children: {big['vmhwm_kib'] / 1024:.0f} MiB vs "
                     f"{little['vmhwm_kib'] / 1024:.0f} MiB; ingest took {big['seconds']:.1f} s / "
                     f"{little['seconds']:.1f} s there.")

        series = {}
        if pg_url:
            series["PostgreSQL"] = ingest_series("PostgreSQL", lambda: (reset_pg(pg_url), pg_url)[1],
                                                 files, n, args.batch_size)
        series["SQLite"] = ingest_series("SQLite", lambda: fresh_sqlite(tmp, "ingest"), files, n,
                                         args.batch_size)

        step("prebuilding baseline rows (not timed)")
        dict_rows = prebuild_rows(files["full"])
        baseline = {}
        if pg_url:
            rows = as_tuples(dict_rows)
            reset_pg(pg_url)
            baseline["PostgreSQL"] = copy_pg(pg_url, rows)
            step(f"PostgreSQL: COPY {baseline['PostgreSQL']:.2f}s")
            del rows
        rows = as_tuples(dict_rows, sqlite_value)
        del dict_rows
        baseline["SQLite"] = executemany_sqlite(fresh_sqlite(tmp, "baseline"), rows)
        step(f"SQLite: executemany {baseline['SQLite']:.2f}s")
        del rows
        gc.collect()

        base_name = {"PostgreSQL": "COPY", "SQLite": "executemany"}
        for db, s in series.items():
            b = baseline[db]
            figures.append(Figure(f"1. Ingest {n:,} jobs → {db}, vs {base_name[db]} of the same rows",
                                  f"{secs(s['first'])} ({rate(n, s['first'])}); {base_name[db]} {secs(b)}",
                                  s["first"] / b, 2.5, "≤ 2.5×"))
        for db, s in series.items():
            figures.append(Figure(f"2. Re-ingest {n:,} unchanged → {db}, vs first ingest",
                                  f"{secs(s['unchanged'])} ({rate(n, s['unchanged'])})",
                                  s["unchanged"] / s["first"], 0.3, "≤ 0.3×"))
        for db, s in series.items():
            figures.append(Figure(f"3. Re-ingest {n:,}, 1% changed ({s['changed_n']:,}) → {db}, vs unchanged",
                                  secs(s["changed"]), s["changed"] / s["unchanged"], 1.5, "≤ 1.5×"))

        step(f"per-id sync of {ids_n:,} jobs, {latency_ms} ms latency, concurrency {concurrency}")
        r = bench_sync_ids(tmp, ids_n, latency_ms, concurrency)
        figures.append(Figure(f"4. sync_ids {r['jobs']:,} jobs from the sandbox ({latency_ms} ms, "
                              f"concurrency {concurrency}) → SQLite, vs N·L/C",
                              f"{secs(r['seconds'])}; ideal {secs(r['ideal'])}; "
                              f"{r['stats']['by_endpoint']['get_job']:,} get_job calls",
                              r["seconds"] / r["ideal"], 1.3, "≤ 1.3×"))
        step(f"sync_ids {r['seconds']:.2f}s")

        step(f"incremental sync of {inc_n:,} jobs")
        r = bench_incremental(tmp, inc_n)
        calls = max(r["api_calls"], r["sandbox_calls"])
        limit = r["ideal"] + 1
        figures.append(Figure(f"5. sync_incremental {r['jobs']:,} jobs → SQLite: API calls vs ceil(N/100)",
                              f"{r['api_calls']} calls (sandbox: {r['stats']['by_endpoint']['list_jobs']} "
                              f"list_jobs, {r['stats']['by_endpoint']['get_job']} get_job); "
                              f"{secs(r['seconds'])}",
                              calls / r["ideal"], limit / r["ideal"], f"≤ {limit} calls"))
        step(f"incremental {calls} calls, {r['seconds']:.2f}s")
        figures.append(rss_figure)


        notes += [
            f"Payloads: {n:,} v1-shaped jobs (2 outputs, 3 variables, ~{size / n:,.0f} bytes each), "
            f"ingested with SyncOptions(batch_size={args.batch_size}) from a JSON Lines file; "
            "timings include reading and parsing the file, exclude schema migration.",
            "Baselines load only jobs, job_outputs and job_variables rows, prebuilt (parsed, hashed, "
            "SQLite values already converted to stored text) outside the timing; the archiver also "
            "writes job_status_changes, packages/clusters ids and a sync_runs row.",
            "Figure 5 counts the larger of the client's api_calls and the sandbox's list_jobs + get_job.",
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
        print(f"(written to {RESULTS_FILE.relative_to(ROOT)})")
    return 0


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
    parser.add_argument("--batch-size", type=int, default=SyncOptions().batch_size)
    parser.add_argument("--profile", type=int, metavar="N", help="profile an ingest of N jobs instead")
    parser.add_argument("--rss-child", metavar="PATH", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    if args.rss_child:
        rss_child(args.rss_child)
        return 0
    if args.small > args.jobs:
        parser.error("--small must not exceed --jobs")
    if args.profile:
        return main_profile(args)
    return main_run(args)


if __name__ == "__main__":
    sys.exit(main())
