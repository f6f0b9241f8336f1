#!/usr/bin/env python
"""An incremental read behind a slow API: reading ahead vs in turn (issue 18: <= 1.15 x calls x latency).

    PYTHONPATH=. python bench/incremental_latency.py                  # 50,000 jobs, 150 ms, 3 runs a side
    PYTHONPATH=. python bench/incremental_latency.py --jobs 5000 --runs 3 --latency-ms 50
    PYTHONPATH=. python bench/incremental_latency.py --latency added  # latency + the sandbox's serving
    PYTHONPATH=. python bench/incremental_latency.py --in-process     # the sandbox in this process

The first `sync --incremental` of a sandbox history into a fresh SQLite archive (a temporary
folder), the whole run as a user gets it (the catalog read and anomaly scoring included),
with the List jobs pages read in turn (SyncOptions(read_ahead=0)) and read one page ahead
(the default), interleaved (in turn, ahead, in turn, ahead, ...) so drift in the machine
hits both sides alike. The sandbox runs in a process of its own (as the real API is
elsewhere) unless `--in-process`. By default (`--latency total`) each answer leaves
`--latency-ms` after its request came in, the sandbox's own serving (about 15-30 ms for a
page of 100 jobs here) done within it, as a remote API's latency includes its work;
`--latency added` is the sandbox's `--latency-ms` as it is, a sleep before the serving, so
each call takes the latency plus the serving.

Each repetition also times the List jobs read alone (the cursor read, nothing parsed or
written): what the calls really take here, latency plus the sandbox's own serving and the
client's decoding, so the floor of a read that overlaps all the writing.

Prints the calls the run made (the catalog's included), calls x latency, each side's median
seconds with its spread (min..max), and the read-ahead median as a ratio of calls x latency
next to the target, and of the read alone. Exit 1 when
the target is missed, or when the two sides did not store the same archive.
"""

from __future__ import annotations

import argparse
import os
import re
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from archiver.client import XplentyClient  # noqa: E402
from archiver.config import Secret, Settings  # noqa: E402
from archiver.flows.cursor import CursorRead  # noqa: E402
from archiver.flows.incremental import IncrementalOptions, sync_incremental  # noqa: E402
from archiver.flows.runs import SyncOptions  # noqa: E402
from archiver.sandbox import Sandbox  # noqa: E402

KEY, ACCOUNT, SEED = "bench-key", "bench", 18
TARGET = 1.15
SIDES = {"in turn": 0, "read ahead": 1}
READ_ALONE = "jobs read alone"


def serve_in_total(jobs: int, latency_ms: float) -> None:
    """The sandbox with each answer leaving `latency_ms` after its request came in, the serving
    done meanwhile (as a remote API's latency includes its own work); prints its URL."""
    from archiver.sandbox import server

    real_dispatch, real_send = server._Handler._dispatch, server._Handler._send

    def dispatch(handler, method):
        handler.answer_at = time.monotonic() + latency_ms / 1000
        real_dispatch(handler, method)

    def send(handler, reply, length=-1):
        body = reply.body if isinstance(reply.body, bytes) else server._encode(reply.body)
        time.sleep(max(0.0, getattr(handler, "answer_at", 0) - time.monotonic()))
        real_send(handler, reply._replace(body=body), length)

    server._Handler._dispatch, server._Handler._send = dispatch, send
    api = Sandbox(jobs=jobs, seed=SEED, account=ACCOUNT, api_key=KEY).start()
    print(f"sandbox API listening on {api.url} (latency {latency_ms:g} ms in total)", flush=True)
    server.serve(api)


class RemoteSandbox:
    """The sandbox in a process of its own; `url` once it listens. Latency "added": `python -m
    archiver sandbox --latency-ms` (a sleep, then the serving); "total": serve_in_total."""

    def __init__(self, jobs: int, latency_ms: float, model: str):
        if model == "added":
            cmd = [sys.executable, "-m", "archiver", "sandbox", "--port", "0", "--jobs", str(jobs), "--seed",
                   str(SEED), "--account", ACCOUNT, "--api-key", KEY, "--latency-ms", str(latency_ms)]
        else:
            cmd = [sys.executable, __file__, "--serve", "--jobs", str(jobs), "--latency-ms", str(latency_ms)]
        env = {**os.environ, "PYTHONPATH": str(ROOT)}
        self.proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, text=True, env=env)
        line = self.proc.stdout.readline()
        found = re.search(r"listening on (http://\S+) ", line)
        if not found:
            self.proc.kill()
            raise RuntimeError(f"the sandbox did not start: {line!r}")
        self.url, self.account = found.group(1), ACCOUNT

    def close(self) -> None:
        self.proc.terminate()
        self.proc.wait(timeout=30)


def read_alone(api) -> float:
    """The same List jobs read with nothing parsed or written: what the calls take here
    (latency, plus the sandbox's own serving and the client's decoding), the floor of any
    read that overlaps the writing."""
    client = XplentyClient(api.url, api.account, Secret(KEY))
    started = time.perf_counter()
    reader = CursorRead(client.list_jobs, {"status": "all"}, None)
    for _ in reader.pages():
        pass
    seconds = time.perf_counter() - started
    client.close()
    return seconds


def one_run(api, folder: Path, name: str, read_ahead: int) -> tuple[float, int, Path]:
    path = folder / f"{name}.db"
    settings = Settings(account=api.account, api_key=Secret(KEY), api_url=api.url, database_url=f"sqlite:///{path}")
    started = time.perf_counter()
    summary = sync_incremental(settings, SyncOptions(read_ahead=read_ahead), IncrementalOptions())
    seconds = time.perf_counter() - started
    if summary.outcome != "ok":
        raise RuntimeError(f"{name}: outcome {summary.outcome}: {summary.message}")
    return seconds, summary.api_calls, path


def archive_text(path: Path) -> list[tuple]:
    """What a user would compare: every job's id, updated_at, status and payload hash, and the marks."""
    with sqlite3.connect(path) as conn:
        jobs = conn.execute("SELECT id, updated_at, status, payload_hash FROM jobs ORDER BY id").fetchall()
        marks = conn.execute("SELECT scope, high_water_mark FROM sync_state ORDER BY scope").fetchall()
    return jobs + marks


def measure(api, runs: int, latency_ms: float, depth: int) -> int:
    times: dict[str, list[float]] = {side: [] for side in (READ_ALONE, *SIDES)}
    calls: set[int] = set()
    archives: dict[str, list[tuple]] = {}
    with tempfile.TemporaryDirectory(prefix="inc-latency-") as tmp:
        for rep in range(runs):
            times[READ_ALONE].append(read_alone(api))
            print(f"  run {rep + 1} {READ_ALONE}: {times[READ_ALONE][-1]:.2f} s", flush=True)
            for side, ahead in SIDES.items():
                ahead = ahead and depth
                seconds, n_calls, path = one_run(api, Path(tmp), f"{ahead}-{rep}", ahead)
                times[side].append(seconds)
                calls.add(n_calls)
                archives.setdefault(side, archive_text(path))
                path.unlink()
                print(f"  run {rep + 1} {side}: {seconds:.2f} s, {n_calls} calls", flush=True)
    return report(times, calls, latency_ms, archives["in turn"] == archives["read ahead"])


def report(times: dict[str, list[float]], calls: set[int], latency_ms: float, same: bool) -> int:
    n_calls = max(calls)
    floor = n_calls * latency_ms / 1000
    print(f"calls: {', '.join(map(str, sorted(calls)))}; calls x latency: {floor:.2f} s")
    for side, values in times.items():
        median = statistics.median(values)
        print(f"{side:>10}: median {median:.2f} s (min {min(values):.2f}, max {max(values):.2f}, "
              f"{len(values)} runs) = {median / floor:.3f} x calls x latency")
    ahead = statistics.median(times["read ahead"])
    ratio = ahead / floor
    met = ratio <= TARGET
    print(f"read ahead: {ratio:.3f} x calls x latency (target <= {TARGET} x): {'met' if met else 'NOT met'}; "
          f"{ahead / statistics.median(times[READ_ALONE]):.3f} x the List jobs read alone; "
          f"in turn / read ahead: {statistics.median(times['in turn']) / ahead:.2f} x")
    print(f"same archive (jobs, statuses, payload hashes, marks) both ways: {'yes' if same else 'NO'}")
    return 0 if met and same else 1


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--jobs", type=int, default=50_000)
    parser.add_argument("--latency-ms", type=float, default=150)
    parser.add_argument("--runs", type=int, default=3, help="runs a side (interleaved); at least 3 for a median")
    parser.add_argument("--latency", choices=["total", "added"], default="total",
                        help="total: an answer leaves LATENCY_MS after its request came in, the sandbox's "
                        "serving inside it (a remote API); added: the sandbox's --latency-ms, a sleep "
                        "before the serving")
    parser.add_argument("--in-process", action="store_true", help="serve the sandbox from this process "
                        "(latency added)")
    parser.add_argument("--depth", type=int, default=SyncOptions.read_ahead,
                        help="pages read ahead on the read-ahead side (SyncOptions.read_ahead)")
    parser.add_argument("--serve", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.serve:
        serve_in_total(args.jobs, args.latency_ms)
        return 0
    started = time.perf_counter()
    model = "added" if args.in_process else args.latency
    print(f"{args.jobs:,} jobs, {args.latency_ms:g} ms a call ({model}), {args.runs} runs a side, "
          f"read ahead {args.depth} page(s), sandbox "
          f"{'in this process' if args.in_process else 'in its own process'}; load average "
          f"{' '.join(f'{x:.2f}' for x in os.getloadavg())}", flush=True)
    api = (Sandbox(jobs=args.jobs, seed=SEED, account=ACCOUNT, api_key=KEY, latency_ms=args.latency_ms).start()
           if args.in_process else RemoteSandbox(args.jobs, args.latency_ms, model))
    try:
        code = measure(api, args.runs, args.latency_ms, args.depth)
    finally:
        api.stop() if args.in_process else api.close()
    print(f"took {time.perf_counter() - started:.0f} s; load average {' '.join(f'{x:.2f}' for x in os.getloadavg())}")
    return code


if __name__ == "__main__":
    sys.exit(main())
