#!/usr/bin/env python
"""Benchmark of the anomaly detector (archiver/anomaly.py) against the targets of issue 15.

    python bench/anomalies.py                  # seeds 1-5, 200 packages × 90 days, default thresholds
    python bench/anomalies.py --seeds 7 8      # other seeds
    python bench/anomalies.py --sweep          # the threshold sweep behind the defaults

Each package's history (bench/anomaly_history.py) is streamed in time order and each job
is scored with only its past, as a sync scores its new jobs. Printed per seed and as
min/median over the seeds: recall and precision per kind (flaky: per package), false alarms
per 100 package-days (verdicts of any kind on jobs with nothing injected), and the checks of
the targets. Exit status 1 when a target is missed on any seed.
"""

from __future__ import annotations

import argparse
import dataclasses
import itertools
import math
import multiprocessing
import os
import statistics
import sys
import time
from datetime import timedelta
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
for path in (ROOT, ROOT / "bench"):
    if str(path) not in sys.path:
        sys.path.insert(0, str(path))

from anomaly_history import KIND_OF_LABEL, START, History, generate  # noqa: E402
from archiver.anomaly import (DEFAULTS, FLAKY, Run, Thresholds, Verdict, Past, prior_successes,  # noqa: E402
                              runtime_baseline, same_weekday, score_history, score_run)

SEEDS = (1, 2, 3, 4, 5)
TARGETS = {  # name: (metric, at least / at most, bound)
    "10× slowdowns recall": ("recall slow10", ">=", 0.95),
    "4× slowdowns recall": ("recall slow4", ">=", 0.8),
    "zero records recall": ("recall zero_records", ">=", 1.0),
    "zero records false alarms": ("false zero_records", "<=", 0),
    "volume drops recall": ("recall volume_drop", ">=", 0.9),
    "false alarms / 100 package-days": ("false per 100 package-days", "<=", 0.1),
    "verdicts with < 8 prior runs": ("early verdicts", "<=", 0),
    "±1 % package alarms on +20 %": ("stable alarms", "<=", 0),
}


def score(history: History, thresholds: Thresholds = DEFAULTS) -> list[Verdict]:
    return [v for runs in history.runs.values() for v in score_history(runs, thresholds)]


def measure(history: History, verdicts: list[Verdict], thresholds: Thresholds = DEFAULTS) -> dict[str, float]:
    """Every figure of the table for one scored history."""
    flagged = {(v.job_id, v.kind) for v in verdicts}
    truth_jobs = {job for job, _ in history.truth}
    figures: dict[str, float] = {}
    for label in ("slow4", "slow10", "zero_records", "volume_drop"):
        wanted = {job for job, lab in history.truth if lab == label}
        figures[f"recall {label}"] = ratio(len({j for j in wanted if (j, KIND_OF_LABEL[label]) in flagged}), len(wanted))
    for kind in ("slow", "zero_records", "volume_drop"):
        mine = {job for job, k in flagged if k == kind}
        right = {job for job, lab in history.truth if KIND_OF_LABEL[lab] == kind}
        figures[f"precision {kind}"] = ratio(len(mine & right), len(mine))
        figures[f"false {kind}"] = len(mine - truth_jobs)
    flaky_listed = {v.package_id for v in verdicts if v.kind == FLAKY}
    figures["recall flaky"] = ratio(len(flaky_listed & history.flaky_packages), len(history.flaky_packages))
    figures["precision flaky"] = ratio(len(flaky_listed & history.flaky_packages), len(flaky_listed))
    figures["false flaky"] = len({(j, k) for j, k in flagged if k == FLAKY} - history.truth)
    false = {(job, kind) for job, kind in flagged if job not in truth_jobs}
    package_days = len(history.runs) * history.days
    figures["false alarms"] = len(false)
    figures["false per 100 package-days"] = 100 * len(false) / package_days
    figures["early verdicts"] = early_verdicts(history, verdicts, thresholds)
    figures["stable alarms"] = stable_alarms(thresholds)
    return figures


def ratio(part: int, whole: int) -> float:
    return part / whole if whole else 1.0


def early_verdicts(history: History, verdicts: list[Verdict], thresholds: Thresholds) -> int:
    """Verdicts on jobs with fewer than 8 earlier runs (successful ones, for baselines)."""
    position = {}
    for runs in history.runs.values():
        done = 0
        for i, run in enumerate(runs):
            position[run.job_id] = (i, done)
            done += run.succeeded
    return sum(1 for v in verdicts
               if (position[v.job_id][0] if v.kind == FLAKY else position[v.job_id][1]) < 8)


def stable_alarms(thresholds: Thresholds) -> int:
    """Verdicts on +20 % runs of packages whose runtime varied by ±1 % (levels 10 s to 10 h)."""
    alarms = 0
    for level in (10, 100, 1000, 10_000, 36_000):
        history = [Run(i, 1, START + timedelta(days=i), "completed", level * (1 + 0.01 * math.sin(i * 2.1)))
                   for i in range(40)]
        for day in range(40, 47):
            jump = Run(day, 1, START + timedelta(days=day), "completed", level * 1.2)
            alarms += len(score_run(jump, history, thresholds))
    return alarms


def missed(figures: dict[str, float]) -> list[str]:
    wrong = []
    for name, (metric, sense, bound) in TARGETS.items():
        value = figures[metric]
        if (value < bound) if sense == ">=" else (value > bound):
            wrong.append(f"{name}: {value:g} (target {sense} {bound:g})")
    return wrong


ROWS = ["recall slow10", "recall slow4", "precision slow", "recall zero_records", "precision zero_records",
        "recall volume_drop", "precision volume_drop", "recall flaky", "precision flaky",
        "false slow", "false zero_records", "false volume_drop", "false flaky", "false alarms",
        "false per 100 package-days", "early verdicts", "stable alarms"]


def table(per_seed: dict[int, dict[str, float]]) -> str:
    seeds = list(per_seed)
    lines = ["| figure | " + " | ".join(f"seed {s}" for s in seeds) + " | min | median |",
             "| --- |" + " ---: |" * (len(seeds) + 2)]
    for row in ROWS:
        values = [per_seed[s][row] for s in seeds]
        cells = [fmt(v) for v in values] + [fmt(min(values)), fmt(statistics.median(values))]
        lines.append(f"| {row} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def fmt(value: float) -> str:
    return f"{value:.3f}" if isinstance(value, float) and not value.is_integer() else f"{value:g}"


def run_seeds(seeds, thresholds: Thresholds) -> dict[int, dict[str, float]]:
    """The figures of each seed, the seeds in parallel (one process per CPU)."""
    with multiprocessing.Pool(min(len(seeds), os.cpu_count() or 1)) as pool:
        return dict(zip(seeds, pool.starmap(run_seed, [(seed, thresholds) for seed in seeds])))


def run_seed(seed: int, thresholds: Thresholds) -> dict[str, float]:
    started = time.perf_counter()
    history = generate(seed)
    made = time.perf_counter()
    figures = measure(history, score(history, thresholds), thresholds)
    print(f"seed {seed}: {history.jobs():,} jobs, generated in {made - started:.1f} s, "
          f"scored in {time.perf_counter() - made:.1f} s", file=sys.stderr)
    return figures


# --- the sweep ------------------------------------------------------------------------------

@dataclasses.dataclass(frozen=True, slots=True)
class SlowCase:
    """What the slow rule needs of one successful run, to try many thresholds on it at once."""

    label: str | None   # slow4, slow10, another injection, or None (clean)
    excess: float       # log(runtime) - baseline centre
    raw_sd: float       # 1.4826 × MAD, unfloored
    typical: float      # baseline median, seconds


def slow_cases(history: History, weekday_min: int) -> list[SlowCase]:
    thresholds = dataclasses.replace(DEFAULTS, weekday_min=weekday_min, spread_floor=0.0)
    labels = {job: label for job, label in history.truth}
    cases = []
    for runs in history.runs.values():
        for i, run in enumerate(runs):
            if not run.succeeded:
                continue
            past = Past(prior_successes(runs, i, thresholds.window), same_weekday(runs, i, run.created_at, thresholds))
            base = runtime_baseline(past, thresholds)
            if base is not None:
                cases.append(SlowCase(labels.get(run.job_id), math.log(run.runtime_s) - base.center,
                                      base.spread, math.exp(base.center)))
    return cases


def slow_figures(cases: list[SlowCase], z: float, ratio_floor: float, spread_floor: float, abs_s: float,
                 package_days: int) -> tuple[float, float, float]:
    """(4× recall, 10× recall, slow false alarms per 100 package-days) of one setting."""
    hit = {"slow4": 0, "slow10": 0}
    total = {"slow4": 0, "slow10": 0}
    false = 0
    log_ratio = math.log(ratio_floor)
    for case in cases:
        flagged = (case.excess > z * max(case.raw_sd, spread_floor) and case.excess >= log_ratio
                   and case.typical * math.expm1(case.excess) >= abs_s)
        if case.label in total:
            total[case.label] += 1
            hit[case.label] += flagged
        elif case.label is None:
            false += flagged
    return hit["slow4"] / total["slow4"], hit["slow10"] / total["slow10"], 100 * false / package_days


def sweep(seeds) -> None:
    """The slow rule over a grid (it dominates the false alarms), then the other rules' knobs."""
    grid = list(itertools.product((2.5, 3.0, 3.5, 4.0), (2.5, 2.8, 3.0, 3.2, 3.5), (0.1, 0.2), (60.0,)))
    results: dict[tuple, list[tuple[float, float, float]]] = {}
    for seed in seeds:
        history = generate(seed)
        package_days = len(history.runs) * history.days
        for weekday_min in (4, 10_000):
            cases = slow_cases(history, weekday_min)
            for setting in grid:
                results.setdefault((weekday_min, *setting), []).append(
                    slow_figures(cases, *setting, package_days))
    print(f"slow rule, {len(seeds)} seeds (a case: a successful run with a baseline)")
    print("| weekday_min | slow_z | slow_ratio | spread_floor | 4× recall min / median | "
          "10× recall min | slow false / 100 pkg-days max / median |")
    print("| ---: | ---: | ---: | ---: | ---: | ---: | ---: |")
    for (weekday_min, z, ratio_floor, floor, _), figures in results.items():
        r4 = [f[0] for f in figures]
        r10 = [f[1] for f in figures]
        fa = [f[2] for f in figures]
        wd = "off" if weekday_min > 1000 else weekday_min
        print(f"| {wd} | {z} | {ratio_floor} | {floor} | {min(r4):.3f} / {statistics.median(r4):.3f} | "
              f"{min(r10):.3f} | {max(fa):.3f} / {statistics.median(fa):.3f} |")
    print()
    other = [("volume_drop", v) for v in (0.6, 0.7, 0.8, 0.9)] + \
            [("flaky_share", v) for v in (0.1, 0.15, 0.2, 0.3)] + \
            [("disappear_share", v) for v in (0.5, 0.8, 0.95)]
    print("| knob | value | volume recall min | volume false max | flaky recall min | flaky precision min |")
    print("| --- | ---: | ---: | ---: | ---: | ---: |")
    histories = [generate(seed) for seed in seeds]
    for knob, value in other:
        thresholds = dataclasses.replace(DEFAULTS, **{knob: value})
        figures = [measure(h, score(h, thresholds), thresholds) for h in histories]
        print(f"| {knob} | {value} | {min(f['recall volume_drop'] for f in figures):.3f} | "
              f"{max(f['false volume_drop'] for f in figures):g} | {min(f['recall flaky'] for f in figures):.3f} | "
              f"{min(f['precision flaky'] for f in figures):.3f} |")


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seeds", type=int, nargs="+", default=list(SEEDS))
    parser.add_argument("--sweep", action="store_true", help="print the threshold sweep instead")
    args = parser.parse_args(argv)
    if args.sweep:
        sweep(args.seeds)
        return 0
    started = time.perf_counter()
    per_seed = run_seeds(args.seeds, DEFAULTS)
    print(table(per_seed))
    failures = [f"seed {seed}: {m}" for seed, figures in per_seed.items() for m in missed(figures)]
    print("\nall targets met" if not failures else "\nMISSED:\n  " + "\n  ".join(failures))
    print(f"({time.perf_counter() - started:.1f} s)")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
