#!/usr/bin/env python
"""Benchmark of the anomaly detector (archiver/anomaly.py) against the targets of issue 15.

    python bench/anomalies.py                  # seeds 1-5, 200 packages × 90 days, default thresholds
    python bench/anomalies.py --seeds 7 8      # other seeds
    python bench/anomalies.py --sweep          # the threshold sweep behind the defaults
    python bench/anomalies.py --misses         # why 4× slowdowns are missed; oracle centre / spread
    python bench/anomalies.py --set slow_ratio=2.95 --set new_weekday_margin=1   # other thresholds

Each package's history (bench/anomaly_history.py) is streamed in time order and each job
is scored with only its past, as a sync scores its new jobs. Printed per seed and as
min/median over the seeds: recall and precision per kind (flaky: per package), false alarms
per 100 package-days (verdicts of any kind on jobs with nothing injected), and the checks of
the targets. Exit status 1 when a target is missed on any seed.
"""

from __future__ import annotations

import argparse
import dataclasses
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

from anomaly_history import KIND_OF_LABEL, SIGMA, START, History, generate  # noqa: E402
from archiver.anomaly import (DEFAULTS, FLAKY, Run, Thresholds, Verdict, pasts, runtime_baseline,  # noqa: E402
                              score_history, score_run)

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
        found = len({j for j in wanted if (j, KIND_OF_LABEL[label]) in flagged})
        figures[f"recall {label}"] = ratio(found, len(wanted))
        figures[f"found {label}"], figures[f"injected {label}"] = found, len(wanted)
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
    figures["package-days"] = package_days
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


def pooled(per_seed: dict[int, dict[str, float]]) -> str:
    """Each recall and the false-alarm rate over every seed's injections together, with the 95 %
    Wilson interval of each recall: 40 injections a seed put ±0.06 of chance on one seed's figure."""
    lines = [f"pooled over seeds {' '.join(map(str, per_seed))}:"]
    for label in ("slow10", "slow4", "zero_records", "volume_drop"):
        found = sum(f[f"found {label}"] for f in per_seed.values())
        injected = sum(f[f"injected {label}"] for f in per_seed.values())
        low, high = wilson(found, injected)
        lines.append(f"  recall {label}: {found:g}/{injected:g} = {ratio(found, injected):.3f} "
                     f"(95 % interval {low:.3f}-{high:.3f})")
    false = sum(f["false alarms"] for f in per_seed.values())
    days = sum(f["package-days"] for f in per_seed.values())
    kinds = ", ".join(f"{kind} {sum(f['false ' + kind] for f in per_seed.values()):g}"
                      for kind in ("slow", "zero_records", "volume_drop", "flaky"))
    over = sum(f["false per 100 package-days"] > 0.1 for f in per_seed.values())
    lines.append(f"  false alarms: {false:g} in {days:g} package-days = {100 * false / days:.3f} per 100 "
                 f"({kinds}; above 0.1 on {over} of {len(per_seed)} seeds)")
    return "\n".join(lines)


def wilson(found: float, n: float, z: float = 1.96) -> tuple[float, float]:
    if not n:
        return 0.0, 1.0
    p = found / n
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / (1 + z * z / n)
    return centre - half, centre + half


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


def slow_cases(history: History, weekday_weeks: int | None) -> list[SlowCase]:
    """The slow cases of a history with baselines looking `weekday_weeks` back (0: no weekday
    factors); None: the exact centre and spread the generator used (its level × the weekday's
    factor, sigma), the best any baseline could do."""
    thresholds = dataclasses.replace(DEFAULTS, weekday_weeks=weekday_weeks or 0, spread_floor=0.0)
    labels = {job: label for job, label in history.truth}
    cases = []
    for pid, runs in history.runs.items():
        package = history.packages[pid]
        for i, past in pasts(runs, thresholds):
            run = runs[i]
            base = runtime_baseline(past, thresholds)
            if base is None:
                continue
            center = base.center if weekday_weeks is not None else \
                math.log(package.runtime_s * package.day_factor(run.created_at)) - SIGMA * SIGMA / 2
            cases.append(SlowCase(labels.get(run.job_id), math.log(run.runtime_s) - center,
                                  base.spread if weekday_weeks is not None else SIGMA, math.exp(center)))
    return cases


def slow_figures(cases: list[SlowCase], z: float, ratio_floor: float, spread_floor: float, abs_s: float,
                 package_days: int) -> tuple[float, float, float]:
    """(4× recall, 10× recall, slow false alarms per 100 package-days) of one setting."""
    hit = {"slow4": 0, "slow10": 0}
    total = {"slow4": 0, "slow10": 0}
    false = 0
    log_ratio = math.log(ratio_floor)
    for case in cases:
        flagged = (case.excess > z * max(case.raw_sd, spread_floor) and case.excess > log_ratio
                   and case.typical * math.expm1(case.excess) > abs_s)
        if case.label in total:
            total[case.label] += 1
            hit[case.label] += flagged
        elif case.label is None:
            false += flagged
    return hit["slow4"] / total["slow4"], hit["slow10"] / total["slow10"], 100 * false / package_days


SWEEP_MODES = {"8 weeks": 8, "4 weeks": 4, "off": 0, "exact": None}
SWEEP_GRID = [(z, r) for z in (2.5, 3.0, 3.5) for r in (2.9, 2.95, 3.0, 3.05, 3.1, 3.15, 3.2)]


def sweep_seed(seed: int) -> dict[tuple, tuple[float, float, float]]:
    """The slow rule's figures over the grid on one seed, each plus the false alarms of the
    other kinds at the defaults (they do not depend on the slow knobs), per 100 package-days."""
    history = generate(seed)
    package_days = len(history.runs) * history.days
    figures = measure(history, score(history))
    other = figures["false alarms"] - figures["false slow"]
    results = {}
    for mode, weeks in SWEEP_MODES.items():
        cases = slow_cases(history, weeks)
        for z, ratio_floor in SWEEP_GRID:
            r4, r10, false = slow_figures(cases, z, ratio_floor, DEFAULTS.spread_floor, DEFAULTS.slow_abs_s,
                                          package_days)
            results[(mode, z, ratio_floor)] = (r4, r10, false + 100 * other / package_days)
    return results


def sweep(seeds) -> None:
    """The slow rule over a grid (it dominates the false alarms), with weekday factors looking 8
    or 4 weeks back, without them, and with the generator's exact centre; then the other knobs."""
    with multiprocessing.Pool(min(len(seeds), os.cpu_count() or 1)) as pool:
        per_seed = pool.map(sweep_seed, seeds)
    print(f"slow rule, seeds {' '.join(map(str, seeds))}; false alarms: every kind, the others at the defaults")
    print("| weekday factors | slow_z | slow_ratio | 4× recall min / median / pooled | 10× recall min | "
          "false / 100 package-days max / median | every target on every seed |")
    print("| --- | ---: | ---: | ---: | ---: | ---: | --- |")
    for key in per_seed[0]:
        r4, r10, fa = zip(*(results[key] for results in per_seed))
        ok = min(r4) >= 0.8 and min(r10) >= 0.95 and max(fa) <= 0.1
        # every seed has the same number of 4× injections: the pooled recall is their mean
        print(f"| {key[0]} | {key[1]} | {key[2]} | {min(r4):.3f} / {statistics.median(r4):.3f} / "
              f"{statistics.fmean(r4):.3f} | {min(r10):.3f} | "
              f"{max(fa):.3f} / {statistics.median(fa):.3f} | {'yes' if ok else 'no'} |")
    print()
    other = [("volume_drop", v) for v in (0.6, 0.7, 0.8, 0.9)] + \
            [("flaky_share", v) for v in (0.1, 0.15, 0.2, 0.3)] + \
            [("disappear_share", v) for v in (0.5, 0.8, 0.95)]
    print("| knob | value | volume recall min | volume false max | flaky recall min | flaky precision min |")
    print("| --- | ---: | ---: | ---: | ---: | ---: |")
    settings = [dataclasses.replace(DEFAULTS, **{knob: value}) for knob, value in other]
    with multiprocessing.Pool(min(len(seeds), os.cpu_count() or 1)) as pool:
        per_seed = pool.starmap(other_seed, [(seed, settings) for seed in seeds])
    for n, (knob, value) in enumerate(other):
        figures = [found[n] for found in per_seed]
        print(f"| {knob} | {value} | {min(f['recall volume_drop'] for f in figures):.3f} | "
              f"{max(f['false volume_drop'] for f in figures):g} | {min(f['recall flaky'] for f in figures):.3f} | "
              f"{min(f['precision flaky'] for f in figures):.3f} |")


# --- why 4× slowdowns are missed --------------------------------------------------------------

@dataclasses.dataclass(frozen=True, slots=True)
class OracleCase:
    """One successful run with the detector's runtime baseline and the generator's own: `excess`
    log(runtime) - the detector's centre, `spread` its floored spread, `exact_excess` log(runtime)
    - the generator's median (level × weekday factor), `typical` and `exact_typical` in seconds."""

    label: str | None
    excess: float
    spread: float
    exact_excess: float
    typical: float
    exact_typical: float


ORACLE_RATIOS = (2.9, 2.95, 3.0, 3.05)
ORACLES = {  # name: (the generator's centre, the generator's spread)
    "detector": (False, False), "exact spread": (False, True),
    "exact centre": (True, False), "exact both": (True, True)}


def oracle_cases(history: History) -> list[OracleCase]:
    labels = {job: label for job, label in history.truth}
    cases = []
    for pid, runs in history.runs.items():
        package = history.packages[pid]
        for i, past in pasts(runs):
            run = runs[i]
            base = runtime_baseline(past)
            if base is None:
                continue
            exact = math.log(package.runtime_s * package.day_factor(run.created_at)) - SIGMA * SIGMA / 2
            value = math.log(run.runtime_s)
            cases.append(OracleCase(labels.get(run.job_id), value - base.center, base.spread, value - exact,
                                    math.exp(base.center), math.exp(exact)))
    return cases


def slow_flag(case: OracleCase, exact_centre: bool, exact_spread: bool, z: float, ratio_floor: float,
              abs_s: float) -> bool:
    excess, typical = (case.exact_excess, case.exact_typical) if exact_centre else (case.excess, case.typical)
    spread = SIGMA if exact_spread else case.spread
    return excess > max(z * spread, math.log(ratio_floor)) and typical * math.expm1(excess) > abs_s


def misses_seed(seed: int) -> dict:
    return misses_of(generate(seed))


def misses_of(history: History) -> dict:
    """For one history: the 4× misses by cause at the defaults, and per (oracle, ratio) the 4×
    found and the false alarms of every kind (the other kinds at the defaults)."""
    figures = measure(history, score(history))
    other = figures["false alarms"] - figures["false slow"]
    cases = oracle_cases(history)
    d = DEFAULTS
    causes = {"found": 0, "above the ratio floor (the z or 60 s bound binding)": 0,
              "centre (the exact centre passes the ratio floor)": 0,
              "below the ratio floor of the exact centre too": 0}
    for case in cases:
        if case.label != "slow4":
            continue
        if slow_flag(case, False, False, d.slow_z, d.slow_ratio, d.slow_abs_s):
            causes["found"] += 1
        elif case.excess > math.log(d.slow_ratio):
            causes["above the ratio floor (the z or 60 s bound binding)"] += 1
        elif case.exact_excess > math.log(d.slow_ratio):
            causes["centre (the exact centre passes the ratio floor)"] += 1
        else:
            causes["below the ratio floor of the exact centre too"] += 1
    grid = {}
    for name, (exact_centre, exact_spread) in ORACLES.items():
        for ratio_floor in ORACLE_RATIOS:
            found = false = 0
            for case in cases:
                flagged = slow_flag(case, exact_centre, exact_spread, d.slow_z, ratio_floor, d.slow_abs_s)
                found += flagged and case.label == "slow4"
                false += flagged and case.label is None
            grid[(name, ratio_floor)] = (found, false + other)
    return {"causes": causes, "grid": grid, "injected": figures["injected slow4"], "found": figures["found slow4"],
            "false alarms": figures["false alarms"],
            "package-days": figures["package-days"]}


def misses(seeds) -> None:
    """Why the 4× slowdowns the defaults miss are missed, and what an exact centre or spread
    (the generator's) would do to the 4× recall and the false alarms, at slow_z 3.5."""
    with multiprocessing.Pool(min(len(seeds), os.cpu_count() or 1)) as pool:
        per_seed = pool.map(misses_seed, seeds)
    injected = sum(s["injected"] for s in per_seed)
    days = sum(s["package-days"] for s in per_seed)
    print(f"4× slowdowns at the defaults, seeds {' '.join(map(str, seeds))} ({injected:g} injected):")
    for cause in per_seed[0]["causes"]:
        print(f"  {cause}: {sum(s['causes'][cause] for s in per_seed)}")
    print()
    print("| centre, spread | slow_ratio | 4× recall pooled (95 % interval) | "
          "false / 100 package-days pooled / max seed |")
    print("| --- | ---: | ---: | ---: |")
    for key in per_seed[0]["grid"]:
        found = sum(s["grid"][key][0] for s in per_seed)
        low, high = wilson(found, injected)
        false = [s["grid"][key][1] / s["package-days"] * 100 for s in per_seed]
        total = sum(s["grid"][key][1] for s in per_seed)
        print(f"| {key[0]} | {key[1]} | {found:g}/{injected:g} = {found / injected:.3f} ({low:.3f}-{high:.3f}) | "
              f"{100 * total / days:.3f} / {max(false):.3f} |")


def other_seed(seed: int, settings: list[Thresholds]) -> list[dict[str, float]]:
    history = generate(seed)
    return [measure(history, score(history, thresholds), thresholds) for thresholds in settings]


def threshold_setting(text: str) -> tuple[str, object]:
    """NAME=VALUE of a Thresholds field, VALUE of the field's type."""
    name, _, value = text.partition("=")
    kinds = {f.name: f.type for f in dataclasses.fields(Thresholds)}
    if name not in kinds or not value:
        raise argparse.ArgumentTypeError(f"{text!r}: use NAME=VALUE, NAME one of {', '.join(kinds)}")
    return name, {"int": int, "float": float}.get(kinds[name], str)(value)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seeds", type=int, nargs="+", default=list(SEEDS))
    parser.add_argument("--sweep", action="store_true", help="print the threshold sweep instead")
    parser.add_argument("--misses", action="store_true",
                        help="print why 4x slowdowns are missed and what an exact centre or spread would do")
    parser.add_argument("--set", action="append", default=[], metavar="NAME=VALUE", type=threshold_setting,
                        help="score with this field of Thresholds changed (repeatable)")
    args = parser.parse_args(argv)
    thresholds = dataclasses.replace(DEFAULTS, **dict(args.set))
    if args.sweep:
        sweep(args.seeds)
        return 0
    if args.misses:
        misses(args.seeds)
        return 0
    started = time.perf_counter()
    if args.set:
        print("thresholds: " + ", ".join(f"{name}={value!r}" for name, value in args.set))
    per_seed = run_seeds(args.seeds, thresholds)
    print(table(per_seed))
    print()
    print(pooled(per_seed))
    failures = [f"seed {seed}: {m}" for seed, figures in per_seed.items() for m in missed(figures)]
    print("\nall targets met" if not failures else "\nMISSED:\n  " + "\n  ".join(failures))
    print(f"({time.perf_counter() - started:.1f} s)")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
