#!/usr/bin/env python
"""Other centres for the slow rule of hourly packages, chosen on some seeds and confirmed on others.

    python bench/slow_centres.py                                  # select on seeds 1-10, confirm on 11-20
    python bench/slow_centres.py --select 1 2 3 --confirm 4 5     # others
    python bench/slow_centres.py --budget 0.1                     # choose within 0.1 false alarms / 100 package-days

A package with `window` (30) earlier successes of the run's own weekday in `weekday_weeks`
weeks (an hourly one) has as runtime centre their median and as spread their MAD. Each
candidate replaces both, for those runs only, by the median or the 25 %-trimmed mean (the
mean of the middle half) of the newest K (30, 60, 90) successes of that weekday in those
weeks, the spread by 1.4826 × their MAD (floored as the rule floors it); "spread alone" keeps
the detector's centre and takes only the spread of the 60 or 90; every other run keeps the
detector's baseline. Each candidate is tried at slow_z 3.0 / 3.25 / 3.5 and slow_ratio
2.9-3.1 (60 s floor). On the `--select` seeds the setting with the most 4× slowdowns found
whose pooled false alarms (every kind; the other kinds at the defaults) are no more than the
defaults' (or `--budget` per 100 package-days) and whose 10× recall is at least 0.95 is chosen;
it and the defaults are then measured on the `--confirm` seeds. An experiment: nothing here is used by the archiver.
"""

from __future__ import annotations

import argparse
import collections
import itertools
import math
import multiprocessing
import os
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
for path in (ROOT, ROOT / "bench"):
    if str(path) not in sys.path:
        sys.path.insert(0, str(path))

from anomalies import measure, score, wilson  # noqa: E402
from anomaly_history import generate  # noqa: E402
from archiver.anomaly import DEFAULTS, MAD_TO_SD, median, pasts, runtime_baseline  # noqa: E402

SIZES = (30, 60, 90)
ZS = (3.0, 3.25, 3.5)
RATIOS = (2.9, 2.95, 3.0, 3.05, 3.1)
DEFAULT_KEY = ("detector", DEFAULTS.slow_z, DEFAULTS.slow_ratio)


def trimmed_mean(values: list[float], trim: float = 0.25) -> float:
    ordered = sorted(values)
    cut = int(len(ordered) * trim)
    middle = ordered[cut:len(ordered) - cut]
    return sum(middle) / len(middle)


def candidates(values: list[float], centre: float) -> dict[str, tuple[float, float]]:
    """(centre, spread) of each candidate from the newest-first values of the run's weekday
    (`centre`: the detector's)."""
    found = {}
    for size in SIZES:
        some = values[:size]
        middle = median(some)
        spread = max(MAD_TO_SD * median([abs(v - middle) for v in some]), DEFAULTS.spread_floor)
        found[f"median of {size}"] = (middle, spread)
        found[f"trimmed mean of {size}"] = (trimmed_mean(some), spread)
        if size > DEFAULTS.window:
            found[f"spread alone of {size}"] = (centre, spread)
    return found


NAMES = ["detector"] + [f"{kind} of {size}" for size in SIZES for kind in ("median", "trimmed mean")] + \
        [f"spread alone of {size}" for size in SIZES if size > DEFAULTS.window]


def seed_figures(seed: int) -> dict:
    """Per setting: (4× found, 10× found, slow false alarms); and the injections, the other
    kinds' false alarms and the package-days."""
    history = generate(seed)
    figures = measure(history, score(history))
    labels = {job: label for job, label in history.truth}
    counts: dict[tuple, list[int]] = collections.defaultdict(lambda: [0, 0, 0])
    log_ratios = {ratio: math.log(ratio) for ratio in RATIOS}
    for runs in history.runs.values():
        by_weekday: dict[int, list[tuple[int, float]]] = collections.defaultdict(list)
        for i, past in pasts(runs):
            run = runs[i]
            label = labels.get(run.job_id)
            base = runtime_baseline(past)
            if base is not None and label in (None, "slow4", "slow10"):
                options = dict.fromkeys(NAMES, (base.center, base.spread))   # other runs: the detector's
                if len(past.own) >= DEFAULTS.window:
                    cutoff = run.created_at.toordinal() - 7 * DEFAULTS.weekday_weeks
                    own = [v for day, v in reversed(by_weekday[run.created_at.weekday()]) if day >= cutoff]
                    options.update(candidates(own, base.center))
                value = math.log(run.runtime_s)
                slot = {"slow4": 0, "slow10": 1, None: 2}[label]
                for name, (centre, spread) in options.items():
                    excess = value - centre
                    if math.exp(centre) * math.expm1(excess) <= DEFAULTS.slow_abs_s:
                        continue
                    for z, ratio in itertools.product(ZS, RATIOS):
                        if excess > max(z * spread, log_ratios[ratio]):
                            counts[(name, z, ratio)][slot] += 1
            if run.succeeded:   # after its Past: a run is never in its own baseline
                by_weekday[run.created_at.weekday()].append((run.created_at.toordinal(), math.log(run.runtime_s)))
    return {"counts": dict(counts), "slow4": figures["injected slow4"], "slow10": figures["injected slow10"],
            "other": figures["false alarms"] - figures["false slow"], "package-days": figures["package-days"]}


def pooled(per_seed: list[dict], key: tuple) -> tuple[int, int, int, int, int, float]:
    """4× found, 4× injected, 10× found, 10× injected, false alarms (every kind), the most of one seed."""
    found4 = sum(s["counts"].get(key, (0, 0, 0))[0] for s in per_seed)
    found10 = sum(s["counts"].get(key, (0, 0, 0))[1] for s in per_seed)
    false = [s["counts"].get(key, (0, 0, 0))[2] + s["other"] for s in per_seed]
    worst = max(100 * f / s["package-days"] for f, s in zip(false, per_seed))
    return found4, sum(s["slow4"] for s in per_seed), found10, sum(s["slow10"] for s in per_seed), sum(false), worst


def line(name: str, per_seed: list[dict], key: tuple) -> str:
    found4, injected4, found10, injected10, false, worst = pooled(per_seed, key)
    low, high = wilson(found4, injected4)
    days = sum(s["package-days"] for s in per_seed)
    return (f"| {name} | {key[0]} | {key[1]} | {key[2]} | {found4}/{injected4} = {found4 / injected4:.3f} "
            f"({low:.3f}-{high:.3f}) | {found10}/{injected10} | {100 * false / days:.3f} / {worst:.3f} |")


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--select", type=int, nargs="+", default=list(range(1, 11)))
    parser.add_argument("--confirm", type=int, nargs="+", default=list(range(11, 21)))
    parser.add_argument("--budget", type=float, default=None,
                        help="pooled false alarms per 100 package-days allowed on the selection seeds "
                             "(default: the defaults' own there)")
    args = parser.parse_args(argv)
    seeds = args.select + args.confirm
    with multiprocessing.Pool(min(len(seeds), os.cpu_count() or 1, 2)) as pool:
        figures = dict(zip(seeds, pool.map(seed_figures, seeds)))
    chosen_on = [figures[s] for s in args.select]
    keys = sorted({key for s in chosen_on for key in s["counts"]})
    allowed = pooled(chosen_on, DEFAULT_KEY)[4] if args.budget is None else \
        math.floor(args.budget * sum(s["package-days"] for s in chosen_on) / 100 + 1e-9)
    fit = [key for key in keys if pooled(chosen_on, key)[4] <= allowed
           and pooled(chosen_on, key)[2] >= 0.95 * pooled(chosen_on, key)[3]]
    best = max(fit, key=lambda key: (pooled(chosen_on, key)[0], -pooled(chosen_on, key)[4]))
    print("| seeds | centre of an hourly package | slow_z | slow_ratio | 4× recall pooled (95 % interval) | "
          "10× | false / 100 package-days pooled / max seed |")
    print("| --- | --- | ---: | ---: | ---: | ---: | ---: |")
    for name, group in (("select " + " ".join(map(str, args.select)), args.select),
                        ("confirm " + " ".join(map(str, args.confirm)), args.confirm)):
        for key in (DEFAULT_KEY, best):
            print(line(name, [figures[s] for s in group], key))
    print()
    print("a longer-run spread alone, both seed sets:")
    for size in SIZES:
        if size > DEFAULTS.window:
            for ratio in (2.95, 3.0, 3.05):
                for name, group in (("select", args.select), ("confirm", args.confirm)):
                    print(line(name, [figures[s] for s in group], (f"spread alone of {size}", DEFAULTS.slow_z, ratio)))
    print()
    print(f"the next best on the selection seeds (false alarms at most {allowed}):")
    for key in sorted(fit, key=lambda key: (-pooled(chosen_on, key)[0], pooled(chosen_on, key)[4]))[1:8]:
        print(line("select", chosen_on, key))
    return 0


if __name__ == "__main__":
    sys.exit(main())
