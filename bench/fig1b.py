#!/usr/bin/env python
"""Figure 1b (a first ingest without anomaly scoring, vs its baseline) for this tree and another
one (an older commit), interleaved.

    git worktree add /tmp/old 145c7ed
    PYTHONPATH=. python bench/fig1b.py --old /tmp/old                      # SQLite, 100,000 jobs, 3 rounds
    PYTHONPATH=. python bench/fig1b.py --old /tmp/old --pg-url postgresql+psycopg://.../throwaway

bench/run.py's payloads (`--jobs`, v1-shaped) are written to a JSON Lines file once. Each round
then times, each in a fresh process: the baseline (bench/run.py's executemany into SQLite or COPY
into PostgreSQL of the prebuilt jobs, job_outputs and job_variables rows, built outside the
timing), the other tree's ingest and this tree's (each tree's own bench/run.py `timed_ingest`
with `score=False` into a fresh, migrated archive: a new SQLite file, or the `public` schema of
`--pg-url` dropped and migrated again). Prints each side's median seconds with its spread, and
the medians of each round's ratios: old / baseline, new / baseline (figure 1b) and new / old.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
from archiver.config import INGEST_BATCH_SIZE as BATCH  # noqa: E402  (both trees ingest at this one's default)

CHILD = r"""
import sys
tree, what, url, path, n, batch = sys.argv[1], sys.argv[2], sys.argv[3], sys.argv[4], int(sys.argv[5]), int(sys.argv[6])
sys.path.insert(0, tree)
from pathlib import Path
import bench.run as br
path = Path(path)
if what == "base":
    rows = br.prebuild_rows(path)
    if url.startswith("sqlite:///"):
        rows = br.as_tuples(rows, br.sqlite_value)
        target = br.fresh_sqlite(path.parent, "baseline")
        print(br.executemany_sqlite(target, rows))
    else:
        rows = br.as_tuples(rows)
        br.reset_pg(url)
        print(br.copy_pg(url, rows))
else:
    target = br.fresh_sqlite(path.parent, "ingest") if url.startswith("sqlite:///") else (br.reset_pg(url), url)[1]
    seconds, _ = br.timed_ingest(target, path, batch, {"inserted": n, "updated": 0}, score=False)
    print(seconds)
"""


def child(tree: Path, what: str, url: str, path: Path, n: int) -> float:
    env = {**os.environ, "PYTHONPATH": str(tree)}
    done = subprocess.run([sys.executable, "-c", CHILD, str(tree), what, url, str(path), str(n), str(BATCH)],
                          capture_output=True, text=True, env=env)
    if done.returncode != 0:
        raise SystemExit(f"{what} by {tree} failed: {done.stderr[-3000:]}")
    return float(done.stdout.split()[-1])


def spread(values: list[float], digits: int = 2) -> str:
    return f"{statistics.median(values):.{digits}f} ({min(values):.{digits}f}-{max(values):.{digits}f})"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--old", required=True, type=Path, help="the other tree (a git worktree)")
    parser.add_argument("--jobs", type=int, default=100_000)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--pg-url", help="a throwaway PostgreSQL database instead of SQLite")
    args = parser.parse_args()
    sys.path.insert(0, str(ROOT))
    import bench.run as br

    with tempfile.TemporaryDirectory(prefix="fig1b-") as tmp:
        path = br.write_files(Path(tmp), args.jobs, 0)["full"]
        url = args.pg_url or "sqlite:///"
        times: dict[str, list[float]] = {"base": [], "old": [], "new": []}
        for round_ in range(args.runs):
            times["base"].append(child(ROOT, "base", url, path, args.jobs))
            times["old"].append(child(args.old.resolve(), "ingest", url, path, args.jobs))
            times["new"].append(child(ROOT, "ingest", url, path, args.jobs))
            print(f"round {round_ + 1}: " + ", ".join(f"{k} {v[-1]:.2f} s" for k, v in times.items()),
                  file=sys.stderr, flush=True)
        if args.pg_url:
            br.reset_pg(args.pg_url, migrate=False)
    ratio = {side: [t / b for t, b in zip(times[side], times["base"])] for side in ("old", "new")}
    ratio["new/old"] = [n / o for n, o in zip(times["new"], times["old"])]
    base_name = "COPY" if args.pg_url else "executemany"
    print(f"first ingest of {args.jobs:,} jobs without scoring → {'PostgreSQL' if args.pg_url else 'SQLite'}, "
          f"{args.runs} interleaved rounds, median (min-max): {base_name} {spread(times['base'])} s, "
          f"old {spread(times['old'])} s, new {spread(times['new'])} s; "
          f"old / {base_name} {spread(ratio['old'])}, new / {base_name} {spread(ratio['new'])}, "
          f"new / old {spread(ratio['new/old'])}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
