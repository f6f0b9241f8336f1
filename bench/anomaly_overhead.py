#!/usr/bin/env python
"""What scoring the newly finished jobs adds to a sync (issue 15: at most 10 %).

    PYTHONPATH=. python bench/anomaly_overhead.py                   # 20,000 jobs, 3 runs a side
    PYTHONPATH=. python bench/anomaly_overhead.py --jobs 5000 --runs 5 --hours 24
    PYTHONPATH=. python bench/anomaly_overhead.py --latency-ms 100   # an API that takes 0.1 s to answer
    PYTHONPATH=. python bench/anomaly_overhead.py --profile          # cProfile of Scorer.batch only
    PYTHONPATH=. python bench/anomaly_overhead.py --cpu --part first # CPU seconds, first syncs only
    PYTHONPATH=. python bench/anomaly_overhead.py --catalog --latency-ms 150 --part incremental
                                                        # `sync --incremental` as cron runs it

Two measurements against an in-process sandbox API, each a fresh SQLite archive in a
temporary folder, with scoring on (the default) and off (SyncOptions(score_anomalies=False)),
interleaved (on, off, off, on, ...) so drift in the machine hits both sides alike:

- first sync: `sync --incremental --no-catalog` of the whole sandbox history into an empty
  archive; every finished job is newly finished, so every one is scored.
- incremental: an archive synced once (with scoring), the sandbox clock advanced `--hours`,
  then the incremental sync of the new and newly finished jobs, on copies of that archive.

`--catalog`: the syncs also read the catalog (packages, clusters, schedules), as `archiver sync
--incremental` does unless told `--no-catalog`; without it they read jobs only (the worst case
for the ratio: the least work besides the scoring).

Prints the median seconds of each side, the overhead in % (the ratio of the medians, and the
median of the rounds' own ratios with a distribution-free 95 % interval from 6 rounds on) and
the seconds spent inside the scoring itself in the run's own process (flows.anomalies.Scorer.batch:
a long sync scores its first 2,000 jobs there and the rest in a worker process, flows.scoring;
`--cpu` counts the worker's CPU seconds too) during the scored runs. Exit 1 when an overhead
passes `--target` (10 %). `--profile`: one scored run of each kind instead, with a cProfile of
what happens inside Scorer.batch (the top `--profile-lines` functions by cumulative time).
"""

from __future__ import annotations

import argparse
import cProfile
import math
import pstats
import resource
import shutil
import statistics
import sys
import tempfile
import time
from datetime import datetime, timezone
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from archiver.config import Secret, Settings  # noqa: E402
from archiver.flows.anomalies import Scorer  # noqa: E402
from archiver.flows.incremental import IncrementalOptions, sync_incremental  # noqa: E402
from archiver.flows.runs import SyncOptions  # noqa: E402
from archiver.sandbox import Sandbox  # noqa: E402

NOW = datetime(2026, 11, 28, 12, 0, tzinfo=timezone.utc)
KEY = "sandbox-key"
SCORING = [0.0]   # seconds inside Scorer.batch, summed
REAL_BATCH = Scorer.batch
CLOCKS = {"sync": time.perf_counter, "scoring": time.perf_counter}   # --cpu: process and thread CPU time
CATALOG = [False]   # --catalog


def process_and_children_time() -> float:
    """CPU seconds of this process and of its ended children: a long sync scores in a worker
    process of its own (flows.scoring), whose CPU counts once the run has ended it."""
    children = resource.getrusage(resource.RUSAGE_CHILDREN)
    return time.process_time() + children.ru_utime + children.ru_stime


def timed_scoring(profile: cProfile.Profile | None = None) -> None:
    real = REAL_BATCH

    def batch(*args, **kwargs):
        started = CLOCKS["scoring"]()
        if profile is not None:
            profile.enable()
        try:
            return real(*args, **kwargs)
        finally:
            if profile is not None:
                profile.disable()
            SCORING[0] += CLOCKS["scoring"]() - started

    Scorer.batch = batch


def sync(api: Sandbox, path: Path, score: bool) -> float:
    settings = Settings(account=api.account, api_key=Secret(KEY), api_url=api.url, database_url=f"sqlite:///{path}")
    started = CLOCKS["sync"]()
    summary = sync_incremental(settings, SyncOptions(score_anomalies=score), IncrementalOptions(catalog=CATALOG[0]))
    seconds = CLOCKS["sync"]() - started
    if summary.exit_code != 0 or summary.errors:
        raise SystemExit(f"sync failed: {summary.line()} {summary.errors[:3]}")
    return seconds


def order(runs_: int) -> list[bool]:
    """on, off, off, on, on, off, ...: each side goes first half the time."""
    return [side for i in range(runs_) for side in ((True, False) if i % 2 == 0 else (False, True))]


def first_sync(args, folder: Path) -> dict[bool, list[float]]:
    times: dict[bool, list[float]] = {True: [], False: []}
    with Sandbox(jobs=args.jobs, seed=args.seed, now=NOW, api_key=KEY, latency_ms=args.latency_ms) as api:
        for i, score in enumerate(order(args.runs)):
            path = folder / f"first-{i}.db"
            times[score].append(sync(api, path, score))
            path.unlink()
    return times


def incremental(args, folder: Path) -> tuple[dict[bool, list[float]], int]:
    times: dict[bool, list[float]] = {True: [], False: []}
    base = folder / "base.db"
    with Sandbox(jobs=args.jobs, seed=args.seed, now=NOW, api_key=KEY, latency_ms=args.latency_ms) as api:
        sync(api, base, True)
        SCORING[0] = 0.0   # the base sync's scoring is not measured
        before = len(api.job_ids())
        api.advance(args.hours * 3600)
        new = len(api.job_ids()) - before
        for i, score in enumerate(order(args.runs)):
            path = folder / f"inc-{i}.db"
            shutil.copy(base, path)
            times[score].append(sync(api, path, score))
            path.unlink()
    return times, new


def median_interval(values: list[float], confidence: float = 0.95) -> tuple[float, float] | None:
    """A distribution-free interval for the median of `values`: the k-th smallest to the k-th
    largest, k the largest with P(Binomial(n, 1/2) < k) <= (1 - confidence) / 2 (each value falls
    on either side of the true median with even odds); None with too few values for one."""
    ordered, n = sorted(values), len(values)
    below, k = 0.0, 0
    while k < n // 2:
        below += math.comb(n, k) / 2 ** n   # P(Binomial(n, 1/2) <= k)
        if below > (1 - confidence) / 2:
            break
        k += 1
    return (ordered[k - 1], ordered[n - k]) if k else None


def line(name: str, times: dict[bool, list[float]], scoring: float, target: float) -> tuple[str, bool]:
    on, off = statistics.median(times[True]), statistics.median(times[False])
    overhead = on / off - 1
    # each round ran both sides back to back: the median of the rounds' ratios is not moved by
    # the machine drifting between rounds (a neighbour's load), the ratio of the medians is
    ratios = [a / b for a, b in zip(times[True], times[False])]
    paired = statistics.median(ratios) - 1
    interval = median_interval(ratios)
    around = (f" (95 % interval {interval[0] - 1:+.1%} to {interval[1] - 1:+.1%})" if interval
              else " (too few rounds for a 95 % interval: 6 or more)")
    per_run = scoring / len(times[True])
    spread = " ".join(f"{side} {min(times[key]):.2f}-{max(times[key]):.2f}"
                      for side, key in (("with", True), ("without", False)))
    return (f"{name}: with scoring {on:.2f} s, without {off:.2f} s (medians of {len(times[True])}; spread {spread}); "
            f"overhead {overhead:+.1%}, paired {paired:+.1%}{around} (target <= {target:.0%}); "
            f"inside Scorer.batch {per_run:.2f} s a run "
            f"({per_run / on:.1%} of it)"), overhead <= target


def profiled(args, folder: Path) -> None:
    """One scored first sync and one scored incremental, each with a cProfile of Scorer.batch."""
    for name in ("first sync", "incremental"):
        profile = cProfile.Profile()
        timed_scoring(profile)
        SCORING[0] = 0.0
        with Sandbox(jobs=args.jobs, seed=args.seed, now=NOW, api_key=KEY, latency_ms=args.latency_ms) as api:
            path = folder / f"profile-{name.replace(' ', '-')}.db"
            if name == "incremental":
                sync(api, path, True)
                profile = cProfile.Profile()
                timed_scoring(profile)
                SCORING[0] = 0.0
                api.advance(args.hours * 3600)
            seconds = sync(api, path, True)
        print(f"== {name}: {seconds:.2f} s, inside Scorer.batch {SCORING[0]:.2f} s")
        pstats.Stats(profile).sort_stats(args.sort).print_stats(args.profile_lines)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--jobs", type=int, default=20000)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--runs", type=int, default=3, help="runs on each side (at least 3)")
    parser.add_argument("--hours", type=float, default=6, help="clock advance before the incremental sync")
    parser.add_argument("--target", type=float, default=0.10)
    parser.add_argument("--latency-ms", type=float, default=0, help="the sandbox's answer delay (0: in-process, "
                        "the worst case for the ratio)")
    parser.add_argument("--part", choices=("both", "first", "incremental"), default="both",
                        help="measure only the first syncs or only the incremental ones")
    parser.add_argument("--cpu", action="store_true", help="CPU seconds instead of wall-clock ones (a shared "
                        "machine: each sync's process time, the scoring's thread time)")
    parser.add_argument("--catalog", action="store_true", help="read the catalog too, as `sync --incremental` "
                        "does by default (without: jobs only, as `--no-catalog`)")
    parser.add_argument("--profile", action="store_true", help="profile Scorer.batch instead of timing")
    parser.add_argument("--profile-lines", type=int, default=40)
    parser.add_argument("--sort", default="cumulative", help="the profile's order (cumulative, tottime, ...)")
    args = parser.parse_args()
    CATALOG[0] = args.catalog
    if args.profile:
        with tempfile.TemporaryDirectory(prefix="anomaly-overhead-") as tmp:
            profiled(args, Path(tmp))
        return 0
    if args.cpu:
        CLOCKS.update(sync=process_and_children_time, scoring=time.thread_time)
    timed_scoring()
    ok = True
    with tempfile.TemporaryDirectory(prefix="anomaly-overhead-") as tmp:
        folder = Path(tmp)
        if args.part != "incremental":
            SCORING[0] = 0.0
            times = first_sync(args, folder)
            text, good = line(f"first sync of {args.jobs} jobs", times, SCORING[0], args.target)
            print(text, flush=True)
            ok &= good
        if args.part != "first":
            SCORING[0] = 0.0
            times, new = incremental(args, folder)
            text, good = line(f"incremental after {args.hours:g} h ({new} new jobs)", times, SCORING[0], args.target)
            print(text, flush=True)
            ok &= good
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
