#!/usr/bin/env python
"""Figure 3 of bench/run.py alone: a re-ingest with 1 % changed against an unchanged one.

    python bench/fig3.py --jobs 20000 [--pg-url URL] [--old /tmp/old --old-pg-url URL2] [--reps 3]

bench/run.py builds a fresh archive for every repetition of figure 3 (first ingest, unchanged
re-ingest, 1 %-changed re-ingest). Here each tree's archive is built once (its first ingest,
not timed) and then re-ingested in turn: unchanged, changed, unchanged, changed, ... Version k
of the file is the history with every 100th job seen k hours later (updated_at k hours on,
runtime_in_seconds + k: bench/run.py's `changed_payload` for k = 1); the unchanged re-ingest of
repetition k reads version k - 1 (what is stored), the changed one version k. With `--old`,
each step runs on the other tree too (old, new, old, new, ...), into its own archive. Every
ingest is a fresh process importing its tree's `archiver` (start-up not timed).
Prints the medians, spreads and ratios, and the load average before and after.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
from datetime import datetime, timedelta
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "bench"))
from run import ACCOUNT, INGEST_BATCH_SIZE, make_payload  # noqa: E402

CHILD = r"""
import gc, json, sys, time
sys.path.insert(0, sys.argv[1])
from archiver.config import Settings
from archiver.flows.ingest import ingest
from archiver.flows.runs import SyncOptions
from archiver.payloads import read_payloads
url, path, account = sys.argv[2], sys.argv[3], sys.argv[4]
batch = int(sys.argv[5])
profile = sys.argv[6] if len(sys.argv) > 6 else ""
gc.collect()
with open(path, "rb") as stream:
    if profile:
        import cProfile
        profiler = cProfile.Profile()
        profiler.enable()
    began = time.perf_counter()
    summary = ingest(Settings(account=account, database_url=url), read_payloads(stream), SyncOptions(batch_size=batch))
    seconds = time.perf_counter() - began
    if profile:
        profiler.disable()
        profiler.dump_stats(profile)
print(json.dumps({"seconds": seconds, "outcome": summary.outcome, "inserted": summary.inserted,
                  "updated": summary.updated, "unchanged": summary.unchanged}))
"""


def seen_later(payload: dict, hours: int) -> dict:
    """The job seen `hours` later: updated_at that much on, runtime_in_seconds + hours."""
    if not hours:
        return payload
    moment = datetime.fromisoformat(payload["updated_at"]) + timedelta(hours=hours)
    return {**payload, "updated_at": moment.strftime("%Y-%m-%dT%H:%M:%SZ"),
            "runtime_in_seconds": payload["runtime_in_seconds"] + hours}


def write_version(folder: Path, n: int, version: int) -> Path:
    """Version k of the history: every 100th job seen k hours later."""
    path = folder / f"jobs-v{version}-{n}.jsonl"
    if not path.exists():   # written whole under another name first: an interrupted run leaves no part
        part = path.with_suffix(".part")
        with open(part, "w", encoding="utf-8") as out:
            for i in range(n):
                payload = make_payload(i)
                if i % 100 == 0:
                    payload = seen_later(payload, version)
                out.write(json.dumps(payload, separators=(",", ":")) + "\n")
        part.rename(path)
    return path


def fresh_database(url: str) -> None:
    """An empty archive at url: the SQLite file removed, or PostgreSQL's public schema re-created."""
    if url.startswith("sqlite:///"):
        for leftover in Path(url[10:]).parent.glob(Path(url[10:]).name + "*"):
            leftover.unlink()
        return
    sys.path.insert(0, str(ROOT))
    from run import reset_pg
    reset_pg(url, migrate=False)


def ingest(tree: Path, url: str, path: Path, expect: dict, profile: str = "") -> float:
    done = subprocess.run([sys.executable, "-c", CHILD, str(tree), url, str(path), ACCOUNT, str(INGEST_BATCH_SIZE),
                           profile],
                          capture_output=True, text=True)
    if done.returncode:
        raise SystemExit(f"the ingest by {tree} failed: {done.stderr[-3000:]}")
    got = json.loads(done.stdout.strip().splitlines()[-1])
    counts = {k: got[k] for k in expect}
    if got["outcome"] != "ok" or counts != expect:
        raise SystemExit(f"the ingest of {path.name} by {tree} gave {got}, expected {expect}")
    return got["seconds"]


def load() -> str:
    return " ".join(f"{x:.2f}" for x in os.getloadavg())


def spread(values: list[float]) -> str:
    return f"{statistics.median(values):.2f} s ({min(values):.2f}-{max(values):.2f})"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--jobs", type=int, default=20_000)
    parser.add_argument("--reps", type=int, default=3)
    parser.add_argument("--pg-url", help="a throwaway PostgreSQL database (its public schema is dropped)")
    parser.add_argument("--old", type=Path, help="another tree (a git worktree) measured interleaved")
    parser.add_argument("--old-pg-url", help="the old tree's throwaway PostgreSQL database")
    parser.add_argument("--folder", type=Path, help="keep the files and SQLite archives here")
    parser.add_argument("--profile", help="cProfile the new tree's last changed re-ingest into this file")
    args = parser.parse_args()
    folder = args.folder or Path(tempfile.mkdtemp(prefix="fig3-"))
    folder.mkdir(parents=True, exist_ok=True)
    sides = {"new": (ROOT, args.pg_url or f"sqlite:///{folder}/new.db")}
    if args.old:
        sides["old"] = (args.old.resolve(), args.old_pg_url or f"sqlite:///{folder}/old.db")
    order = ["old", "new"] if args.old else ["new"]
    n, changed_n = args.jobs, len(range(0, args.jobs, 100))
    print(f"load before: {load()}", flush=True)
    for side in order:
        tree, url = sides[side]
        fresh_database(url)
        ingest(tree, url, write_version(folder, n, 0), {"inserted": n})
    times = {side: {"unchanged": [], "changed": []} for side in order}
    for k in range(1, args.reps + 1):
        same, later = write_version(folder, n, k - 1), write_version(folder, n, k)
        for kind, path, expect in (("unchanged", same, {"unchanged": n, "updated": 0}),
                                   ("changed", later, {"unchanged": n - changed_n, "updated": changed_n})):
            for side in order:
                tree, url = sides[side]
                last = args.profile if side == "new" and kind == "changed" and k == args.reps else ""
                seconds = ingest(tree, url, path, expect, last or "")
                times[side][kind].append(seconds)
                print(f"rep {k} {side} {kind}: {seconds:.2f} s (load {load()})", flush=True)
    where = "PostgreSQL" if args.pg_url else "SQLite"
    for side in order:
        t = times[side]
        ratios = [c / u for c, u in zip(t["changed"], t["unchanged"])]
        print(f"{side}: {n:,} jobs, {where}: changed {spread(t['changed'])}, unchanged {spread(t['unchanged'])},"
              f" ratio {statistics.median(ratios):.2f}× ({min(ratios):.2f}-{max(ratios):.2f}, n={len(ratios)})")
    print(f"load after: {load()}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
