#!/usr/bin/env python
"""An ingest of sandbox jobs with this tree against another one (an older commit), interleaved.

    git worktree add /tmp/old 0bb25cc
    python bench/ingest_compare.py --old /tmp/old                       # SQLite, 20,000 jobs, 3 runs a side
    python bench/ingest_compare.py --old /tmp/old --no-scoring --pg-url postgresql+psycopg://...

Writes the sandbox's history (`--jobs`, v2 payloads, most of them scheduled) to a JSON Lines
file once, then times `ingest` of it into a fresh archive (a new SQLite file, or the `public`
schema of `--pg-url` dropped and re-created: point it at a throwaway database) by each tree
in turn, old, new, old, new, ... (each run a fresh process importing its tree's `archiver`).
Prints each side's median seconds with its spread and the ratio new / old.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
from datetime import datetime, timezone
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
NOW = datetime(2026, 11, 28, 12, tzinfo=timezone.utc)

CHILD = r"""
import os, sys, time
sys.path.insert(0, sys.argv[1])
from archiver.config import Settings
from archiver.flows.ingest import ingest
from archiver.flows.runs import SyncOptions
from archiver.payloads import read_payloads
url, path, score = sys.argv[2], sys.argv[3], sys.argv[4] == "1"
if url.startswith("sqlite:///"):
    if os.path.exists(url[10:]):
        os.remove(url[10:])
else:
    from sqlalchemy import create_engine, text
    engine = create_engine(url, isolation_level="AUTOCOMMIT")
    with engine.connect() as conn:
        conn.execute(text("DROP SCHEMA public CASCADE"))
        conn.execute(text("CREATE SCHEMA public"))
    engine.dispose()
with open(path, "rb") as stream:
    began = time.perf_counter()
    summary = ingest(Settings(account="sandbox", database_url=url), read_payloads(stream),
                     SyncOptions(score_anomalies=score))
    print(time.perf_counter() - began, summary.exit_code)
"""


def history(path: Path, jobs: int) -> None:
    sys.path.insert(0, str(ROOT))
    from archiver.sandbox import Sandbox

    with Sandbox(jobs=jobs, seed=1, now=NOW) as api, open(path, "w") as out:
        for job_id in api.job_ids():
            out.write(json.dumps(api.job(job_id)) + "\n")


def timed(tree: Path, url: str, path: Path, score: bool) -> float:
    done = subprocess.run([sys.executable, "-c", CHILD, str(tree), url, str(path), "1" if score else "0"],
                          capture_output=True, text=True, check=True)
    seconds, code = done.stdout.split()
    if code != "0":
        raise SystemExit(f"the ingest by {tree} exited {code}: {done.stderr[-2000:]}")
    return float(seconds)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--old", required=True, type=Path, help="the other tree (a git worktree)")
    parser.add_argument("--jobs", type=int, default=20000)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--pg-url", help="a throwaway PostgreSQL database instead of SQLite")
    parser.add_argument("--no-scoring", action="store_true", help="SyncOptions(score_anomalies=False)")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="ingest-compare-") as tmp:
        path = Path(tmp) / "history.jsonl"
        history(path, args.jobs)
        url = args.pg_url or f"sqlite:///{tmp}/archive.db"
        times: dict[str, list[float]] = {"old": [], "new": []}
        for _ in range(args.runs):
            for side, tree in (("old", args.old.resolve()), ("new", ROOT)):
                times[side].append(timed(tree, url, path, not args.no_scoring))
    old, new = statistics.median(times["old"]), statistics.median(times["new"])
    print(f"ingest of {args.jobs} sandbox jobs into {'PostgreSQL' if args.pg_url else 'SQLite'}"
          f"{' without scoring' if args.no_scoring else ''}, medians of {args.runs}: "
          f"old {old:.2f} s ({min(times['old']):.2f}-{max(times['old']):.2f}), "
          f"new {new:.2f} s ({min(times['new']):.2f}-{max(times['new']):.2f}); new / old {new / old:.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
