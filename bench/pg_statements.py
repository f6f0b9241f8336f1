#!/usr/bin/env python
"""Where a first ingest into PostgreSQL spends its time on the server: each statement's
round trips timed at the driver (psycopg), summed by statement text.

    PYTHONPATH=. python bench/pg_statements.py --pg-url postgresql+psycopg://postgres@127.0.0.1:5432/throwaway
    PYTHONPATH=. python bench/pg_statements.py --pg-url URL --jobs 50000 --score

bench/run.py's payloads (`--jobs`, written to a temporary JSON Lines file), ingested with
bench/run.py's `timed_ingest` into the `public` schema of `--pg-url`, dropped and migrated
first (a throwaway database). Without `--score` the ingest does not score anomalies (figure
1b). Prints the ingest's seconds and CPU seconds, the time inside statements, and the
`--top` statements by summed time: seconds, calls, the statement's first 90 characters.
One run: a profile, not a benchmark figure.
"""

from __future__ import annotations

import argparse
import collections
import contextlib
import re
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import psycopg  # noqa: E402

import bench.run as br  # noqa: E402

SPENT: collections.Counter = collections.Counter()
CALLS: collections.Counter = collections.Counter()


def label(query) -> str:
    text = query if isinstance(query, str) else query.as_string(None)   # psycopg.sql.Composed (COPY)
    return re.sub(r"\s+", " ", text).strip()[:90]


def timed(name: str) -> None:
    real = getattr(psycopg.Cursor, name)

    def run(self, query, *args, **kwargs):
        started = time.perf_counter()
        try:
            return real(self, query, *args, **kwargs)
        finally:
            SPENT[label(query)] += time.perf_counter() - started
            CALLS[label(query)] += 1

    setattr(psycopg.Cursor, name, run)


def timed_copy() -> None:
    real = psycopg.Cursor.copy

    @contextlib.contextmanager
    def copy(self, query, *args, **kwargs):
        started = time.perf_counter()
        with real(self, query, *args, **kwargs) as found:
            yield found
        SPENT[label(query)] += time.perf_counter() - started
        CALLS[label(query)] += 1

    psycopg.Cursor.copy = copy


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pg-url", required=True, help="a throwaway PostgreSQL database")
    parser.add_argument("--jobs", type=int, default=100_000)
    parser.add_argument("--score", action="store_true", help="score anomalies (the default of a real ingest)")
    parser.add_argument("--top", type=int, default=25)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as folder:
        path = br.write_files(Path(folder), args.jobs, min(1000, args.jobs))["full"]
        br.reset_pg(args.pg_url)
        for name in ("execute", "executemany"):
            timed(name)
        timed_copy()
        cpu = time.process_time()
        seconds, _ = br.timed_ingest(args.pg_url, path, br.INGEST_BATCH_SIZE, {"inserted": args.jobs, "updated": 0}, score=args.score)
        cpu = time.process_time() - cpu
    print(f"ingest of {args.jobs:,} jobs ({'with' if args.score else 'without'} scoring): {seconds:.2f} s, "
          f"{cpu:.2f} s CPU; inside statements {sum(SPENT.values()):.2f} s")
    for text, spent in SPENT.most_common(args.top):
        print(f"{spent:8.3f} s {CALLS[text]:6}  {text}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
