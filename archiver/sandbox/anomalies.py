"""The "anomalies" scenario: run-to-run noise with weekday effects, and seeded anomalies on top.

A detector is only as good as the history it is measured on, so this scenario gives the
sandbox a history whose quirks are known exactly:

- Noise: a run's runtime and each output's records_count are lognormal around the package's
  median with coefficient of variation CV (0.3), independently, times the package's factor
  for the run's UTC weekday (some packages are lighter on weekends, some heavier on Mondays).
- Injections, one about every INJECT_EVERY jobs, cycling through INJECTED_KINDS, each on a
  completed run whose package already has MIN_PRIOR successful runs (enough for a verdict):
  slowdowns (the run's noisy runtime times 10 or 4), zero-record successes (one output at 0)
  and volume drops (one output at 1-8 % of its typical count, whatever the run's noise and
  weekday: at most a tenth of its median).
- Flaky packages (FLAKY_PACKAGES, on schedules that retry): their scheduled first attempts
  fail with probability FLAKY_FAILURE; retries fail only at the (low) usual rate.
- At the start clock: the packages of the two most frequent schedules (none of a flaky
  package; `watched_packages`) get a zero-record success (first output) and a 10x slowdown
  on their latest completed run before the start clock. A health board flags an anomaly only
  while it is a package's latest completed run, so a history whose injections all lie
  somewhere in its past would show it none; these are the ones a board can show. Users no
  longer run these packages by hand after the start clock, and the demo breaks the same two
  pipelines (one fails every run, the other's schedule stops), so no later run completes.

Everything is drawn from a random stream of its own, seeded by the history's seed, so the
job stream (creation times, ids, statuses) is the one the scenario's rates give, and the
injections are the same however the clock moves.
"""
from __future__ import annotations

import math
import random
from typing import NamedTuple, Sequence

from .catalog import DAY, Catalog

CV = 0.3
SIGMA = math.sqrt(math.log(1 + CV * CV))   # lognormal sigma of coefficient of variation CV
MIN_PRIOR = 8                  # successful runs of the package before an injection
INJECT_EVERY = 50              # jobs between two injections, on average
INJECTED_KINDS = ("slow", "zero_records", "volume_drop", "slow")
SLOW_FACTORS = (10, 4)         # the first slow of the cycle is 10x, the second 4x
VOLUME_DROP_RATIOS = (0.01, 0.08)   # a volume drop's records over the output's typical count
FLAKY_PACKAGES = 1
FLAKY_FAILURE = 0.5            # share of a flaky package's scheduled first attempts that fail
THURSDAY = 3                   # weekday (Monday 0) of 1970-01-01


class Injection(NamedTuple):
    """One injected anomaly: kind, the output index it hit (-1: none) and its factor
    (slowdown factor, or the records over the output's typical count: 0 for zero_records)."""
    kind: str
    output: int
    factor: float


class AnomalyModel:
    """Weekday factors, flaky packages and the injections of one history.

    `offset` maps history seconds to Unix time (as History.offset), so weekdays are the
    UTC weekdays a client sees. Mutable (success counts, the injection stream): the
    generator owns it and copies it with itself.
    """

    flaky_failure = FLAKY_FAILURE

    def __init__(self, seed: int, catalog: Catalog, intervals: Sequence[int], offset: int) -> None:
        rng = random.Random(f"{seed}:anomalies")
        self.offset = offset
        self.weekday_factors = [_weekday_factors(rng, interval_of(catalog, p, intervals))
                                for p in range(len(catalog.packages))]
        self.flaky = frozenset(_flaky_packages(rng, catalog, intervals))
        self.rng = random.Random(rng.getrandbits(64))
        self.successes = [0] * len(catalog.packages)
        self.injections: dict[int, Injection] = {}   # job id -> what was injected
        self.next_at = INJECT_EVERY // 2             # generated job count of the next injection
        self.slow_count = 0

    def weekday(self, t: int) -> int:
        return ((t + self.offset) // DAY + THURSDAY) % 7

    def factor(self, package: int, t: int) -> float:
        return self.weekday_factors[package][self.weekday(t)]

    def noise(self, rng: random.Random) -> float:
        return math.exp(rng.gauss(0, SIGMA))

    def first_attempt_fails(self, package: int, scheduled: bool, attempts: int) -> bool:
        return package in self.flaky and scheduled and attempts == 0

    def pick(self, job_id: int, package: int, outputs: int, count: int, eligible: bool) -> Injection | None:
        """Count a completed run; inject into it when one is due and it qualifies."""
        prior = self.successes[package]
        self.successes[package] += 1
        if not eligible or prior < MIN_PRIOR or package in self.flaky or count < self.next_at:
            return None
        kind = INJECTED_KINDS[len(self.injections) % len(INJECTED_KINDS)]
        injection = self._injection(kind, outputs)
        self.injections[job_id] = injection
        self.next_at = count + self.rng.randint(INJECT_EVERY // 2, INJECT_EVERY * 3 // 2)
        return injection

    def inject_latest(self, job_id: int, kind: str) -> Injection:
        """A zero-record success (first output) or a 10x slowdown on a package's latest run."""
        injection = Injection(kind, 0, 0.0) if kind == "zero_records" else Injection(kind, -1, SLOW_FACTORS[0])
        self.injections[job_id] = injection
        return injection

    def _injection(self, kind: str, outputs: int) -> Injection:
        if kind == "slow":
            factor = SLOW_FACTORS[self.slow_count % len(SLOW_FACTORS)]
            self.slow_count += 1
            return Injection(kind, -1, factor)
        output = self.rng.randrange(outputs)
        ratio = 0.0 if kind == "zero_records" else round(self.rng.uniform(*VOLUME_DROP_RATIOS), 3)
        return Injection(kind, output, ratio)

    def records(self, seed: int, package: int, created: int, typical: Sequence[float],
                injection: Injection | None) -> list[int]:
        """Records each output gets from a complete run: noise from the job's own seed."""
        rng, factor = random.Random(seed), self.factor(package, created)
        counts = [max(1, int(records * factor * self.noise(rng))) for records in typical]
        if injection is not None and injection.output >= 0:
            hit = injection.output
            counts[hit] = 0 if injection.kind == "zero_records" else max(1, int(typical[hit] * injection.factor))
        return counts


def interval_of(catalog: Catalog, package: int, intervals: Sequence[int]) -> int | None:
    schedule = catalog.packages[package].schedule
    return None if schedule is None else intervals[schedule]


def _weekday_factors(rng: random.Random, interval: int | None) -> tuple[float, ...]:
    """40 % of packages are lighter on weekends, 15 % of the not hourly ones heavier on Mondays."""
    weekend = rng.uniform(0.5, 0.8) if rng.random() < 0.4 else 1.0
    monday = rng.uniform(1.3, 1.8) if (interval is None or interval > 3600) and rng.random() < 0.15 else 1.0
    return (monday, 1.0, 1.0, 1.0, 1.0, weekend, weekend)


def _flaky_packages(rng: random.Random, catalog: Catalog, intervals: Sequence[int]) -> list[int]:
    """Packages of retrying schedules, picked by how often they run (a flaky verdict needs chains)."""
    candidates = [p for s, schedule in enumerate(catalog.schedules) if schedule.retries > 0
                  for p in schedule.packages]
    weights = [1 / interval_of(catalog, p, intervals) for p in candidates]
    chosen: list[int] = []
    while len(chosen) < min(FLAKY_PACKAGES, len(candidates)):
        package = rng.choices(candidates, weights)[0]
        if package not in chosen:
            chosen.append(package)
    return chosen


LATEST_KINDS = ("zero_records", "slow")   # injected on the watched packages' latest completed runs


def watched_packages(catalog: Catalog, intervals: Sequence[int], flaky: frozenset[int]) -> list[int]:
    """The first package of each of the two most frequent schedules without a flaky package."""
    schedules = sorted((s for s, schedule in enumerate(catalog.schedules) if not flaky & set(schedule.packages)),
                       key=lambda s: intervals[s])
    return [catalog.schedules[s].packages[0] for s in schedules[:len(LATEST_KINDS)]]
