"""A seeded synthetic run history with known anomalies, for bench/anomalies.py and the tests.

    history = generate(seed=1)       # 200 packages × 90 days, the injections of issue 15
    history.runs[package_id]         # that package's runs (archiver.anomaly.Run), time order
    history.truth                    # {(job_id, label)}: slow4, slow10, zero_records, volume_drop, flaky

Packages run hourly (20 %), every 4, 6 or 8 hours (40 %) or daily (40 %). Runtimes and
record counts are lognormal around each package's own level, coefficient of variation 0.3
run to run (independent for the runtime and each output); 40 % of packages are lighter and
faster on weekends (×0.4–0.8), 15 % of the non-hourly ones heavier on Mondays (×1.5–2). Each
package has 1–3 outputs that always load records, and 30 % have one more that is usually
empty (rejects). Any first attempt fails with probability 1 % and is retried 10 minutes later;
flaky packages fail 30–60 % of their attempts and retry until one succeeds.

Injected on successful first attempts that have at least `MIN_PRIOR` earlier successful runs:
slowdowns of 4× and 10× (on top of the noise), zero-record successes (an always-loading
output at 0), volume drops of 90–99 % (one in eight: the output missing from the job). Every
successful retry of a flaky package is a `flaky` truth. Nothing else is unusual, so any
other verdict is a false alarm.
"""

from __future__ import annotations

import dataclasses
import math
import random
import sys
from datetime import datetime, timedelta, timezone
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from archiver.anomaly import Run  # noqa: E402

CV = 0.3
SIGMA = math.sqrt(math.log(1 + CV * CV))  # lognormal sigma of coefficient of variation CV
START = datetime(2024, 1, 1, tzinfo=timezone.utc)  # a Monday
MIN_PRIOR = 10
LABELS = ("slow4", "slow10", "zero_records", "volume_drop", "flaky")
KIND_OF_LABEL = {"slow4": "slow", "slow10": "slow", "zero_records": "zero_records",
                 "volume_drop": "volume_drop", "flaky": "flaky"}


@dataclasses.dataclass
class Package:
    id: int
    every_hours: int
    runtime_s: float
    outputs: dict[str, float]         # always loading: key -> typical records
    sparse_outputs: tuple[str, ...]   # usually empty
    weekend: float                    # factor on Saturdays and Sundays
    monday: float
    fail_p: float
    flaky: bool

    def day_factor(self, moment: datetime) -> float:
        day = moment.weekday()
        return self.weekend if day >= 5 else self.monday if day == 0 else 1.0


@dataclasses.dataclass
class History:
    seed: int
    days: int
    runs: dict[int, list[Run]]
    truth: set[tuple[int, str]]
    packages: dict[int, Package]

    @property
    def flaky_packages(self) -> set[int]:
        return {p.id for p in self.packages.values() if p.flaky}

    def jobs(self) -> int:
        return sum(len(r) for r in self.runs.values())


def generate(seed: int = 1, packages: int = 200, days: int = 90, slow4: int = 40, slow10: int = 40,
             zero_records: int = 40, volume_drops: int = 40, flaky: int = 10) -> History:
    rng = random.Random(seed)
    made = [make_package(rng, 1000 + i, flaky=i < flaky) for i in range(packages)]
    ids = iter(range(1_000_000, 10**9))
    runs = {p.id: simulate(rng, p, days, ids) for p in made}
    truth = {(r.job_id, "flaky") for p in made if p.flaky for r in runs[p.id] if r.attempts and r.succeeded}
    history = History(seed, days, runs, truth, {p.id: p for p in made})
    inject(rng, history, {"slow4": slow4, "slow10": slow10, "zero_records": zero_records,
                          "volume_drop": volume_drops})
    return history


def make_package(rng: random.Random, package_id: int, flaky: bool) -> Package:
    every = rng.choices([1, rng.choice([4, 6, 8]), 24], weights=[20, 40, 40])[0]
    longest = {1: 1200, 24: 7200}.get(every, 3600)
    outputs = {f"out{k}": log_uniform(rng, 50, 1_000_000) for k in range(rng.randint(1, 3))}
    return Package(
        id=package_id, every_hours=every, runtime_s=log_uniform(rng, 60, longest), outputs=outputs,
        sparse_outputs=("rejects",) if rng.random() < 0.3 else (),
        weekend=rng.uniform(0.4, 0.8) if rng.random() < 0.4 else 1.0,
        monday=rng.uniform(1.5, 2.0) if every > 1 and rng.random() < 0.15 else 1.0,
        fail_p=rng.uniform(0.3, 0.6) if flaky else 0.01, flaky=flaky)


def log_uniform(rng: random.Random, low: float, high: float) -> float:
    return math.exp(rng.uniform(math.log(low), math.log(high)))


def noisy(rng: random.Random, level: float) -> float:
    return level * math.exp(rng.gauss(-SIGMA * SIGMA / 2, SIGMA))


def simulate(rng: random.Random, package: Package, days: int, ids) -> list[Run]:
    runs = []
    moment = START + timedelta(minutes=rng.randrange(60 * package.every_hours))
    while moment < START + timedelta(days=days):
        runs += chain(rng, package, moment, ids)
        moment += timedelta(hours=package.every_hours)
    return runs


def chain(rng: random.Random, package: Package, moment: datetime, ids) -> list[Run]:
    """A first attempt and its retries, 10 minutes apart; the last one succeeds (at most 6)."""
    attempts = []
    for attempt in range(6):
        failed = attempt < 5 and rng.random() < package.fail_p
        attempts.append(one_run(rng, package, moment + timedelta(minutes=10 * attempt), attempt, next(ids), failed))
        if not failed:
            break
    return attempts


def one_run(rng: random.Random, package: Package, moment: datetime, attempt: int, job_id: int,
            failed: bool) -> Run:
    factor = package.day_factor(moment)
    runtime = noisy(rng, package.runtime_s * factor)
    if failed:
        return Run(job_id, package.id, moment, "failed", round(runtime * rng.uniform(0.05, 1), 1), attempt)
    outputs = [(key, max(1, round(noisy(rng, typical * factor)))) for key, typical in package.outputs.items()]
    outputs += [(key, rng.randint(1, 50) if rng.random() < 0.15 else 0) for key in package.sparse_outputs]
    return Run(job_id, package.id, moment, "completed", round(runtime, 1), attempt, tuple(outputs))


def inject(rng: random.Random, history: History, counts: dict[str, int]) -> None:
    """Change `counts[label]` distinct eligible runs in place and record them in the truth."""
    eligible = [(pid, i) for pid, runs in history.runs.items() for i in eligible_indexes(runs)]
    rng.shuffle(eligible)
    taken = set()
    for label, count in counts.items():
        done = 0
        for pid, i in eligible:
            if done == count:
                break
            if (pid, i) in taken:
                continue
            run = history.runs[pid][i]
            changed = apply(rng, label, run, history.packages[pid], missing=done % 8 == 7)
            if changed is None:
                continue
            history.runs[pid][i] = changed
            history.truth.add((run.job_id, label))
            taken.add((pid, i))
            done += 1


def eligible_indexes(runs: list[Run]) -> list[int]:
    prior, found = 0, []
    for i, run in enumerate(runs):
        if run.succeeded and run.attempts == 0 and prior >= MIN_PRIOR:
            found.append(i)
        prior += run.succeeded
    return found


def apply(rng: random.Random, label: str, run: Run, package: Package, missing: bool) -> Run | None:
    if label in ("slow4", "slow10"):
        return dataclasses.replace(run, runtime_s=run.runtime_s * (4 if label == "slow4" else 10))
    loading = list(package.outputs)
    if label == "volume_drop" and missing:
        if len(loading) < 2:
            return None  # a job without any output reads as missing data, not a drop
        victim = rng.choice(loading)
        return dataclasses.replace(run, outputs=tuple(o for o in run.outputs if o[0] != victim))
    victim = rng.choice(loading)
    factor = 0.0 if label == "zero_records" else rng.uniform(0.01, 0.1)
    return dataclasses.replace(run, outputs=tuple(
        (key, max(1 if factor else 0, round(count * factor)) if key == victim else count)
        for key, count in run.outputs))
