"""Anomalies in a package's run history: slow runs, zero-record successes, volume drops, flaky packages.

Pure functions over small typed records: no database, no I/O. The caller hands over a
package's runs in time order; every rule looks only at the runs *before* the one it
scores (the run under test is never in its own baseline, so a jump cannot hide itself),
and only at the tail it needs: the last `Thresholds.window` successful runs and the last
`Thresholds.flaky_days` of retry chains. Scoring a new job therefore costs O(window),
whatever the size of the archive. Every number of the rules is a field of `Thresholds`;
the defaults were chosen on bench/anomalies.py (docs/anomalies.md has the table).

Baselines are robust: the median and the MAD of log values (log runtime, log(1 + records)),
so one earlier outlier moves neither, and a ratio on the raw scale is a difference on the
log scale. A MAD from 30 samples is often half the true spread by chance, so the spread has
a floor, and a verdict needs a relative floor (and for runtimes an absolute one) as well as
a robust z-score: a very stable series never alarms on an ordinary change.
"""

from __future__ import annotations

import dataclasses
import math
from datetime import datetime, timedelta
from statistics import median
from bisect import bisect_left
from typing import Iterable, Sequence

SLOW = "slow"
ZERO_RECORDS = "zero_records"
VOLUME_DROP = "volume_drop"
FLAKY = "flaky"
KINDS = (SLOW, ZERO_RECORDS, VOLUME_DROP, FLAKY)
SEVERITY = {SLOW: "warning", ZERO_RECORDS: "critical", VOLUME_DROP: "warning", FLAKY: "warning"}

SUCCESS = "completed"
MAD_TO_SD = 1.4826  # the MAD of a normal sample times this estimates its standard deviation
TINY_SPREAD = 1e-9  # a constant series with spread_floor 0 still divides
DIRECTIONS = ("down", "up", "both")


@dataclasses.dataclass(frozen=True, slots=True)
class Run:
    """One job of a package, as much as the rules need. `outputs`: (output key, records_count)."""

    job_id: int
    package_id: int
    created_at: datetime
    status: str
    runtime_s: float | None
    attempts: int = 0
    outputs: tuple[tuple[str, int | None], ...] = ()

    @property
    def succeeded(self) -> bool:
        return self.status == SUCCESS


@dataclasses.dataclass(frozen=True, slots=True)
class Thresholds:
    """Every tunable of the rules. Defaults chosen on bench/anomalies.py (see docs/anomalies.md)."""

    window: int = 30             # previous successful runs in a baseline
    min_history: int = 8         # fewer prior successful runs (runs, for flaky): no verdict
    weekday_min: int = 4         # samples of the run's weekday needed for a weekday median
    weekday_weeks: int = 4       # weeks looked back for them
    spread_floor: float = 0.1    # floor of the robust sd of the log values (0.1 ≈ ±10 %)
    slow_z: float = 3.0          # robust z of log(runtime) above the baseline
    slow_ratio: float = 3.1      # and at least this many times the baseline median
    slow_abs_s: float = 60.0     # and at least this many seconds above it
    zero_loaded_share: float = 0.75  # zero_records only on an output that loaded records in this share
                                     # of its baseline runs (0.5: "the median is > 0")
    volume_z: float = 3.5        # robust z of log(1 + records) away from the baseline
    volume_drop: float = 0.8     # and at most (1 - this) × the median (up: at least 1 / (1 - this) ×)
    volume_direction: str = "down"  # down, up or both
    disappear_share: float = 0.8  # an output in at least this share of the baseline runs, absent now
    flaky_days: float = 14.0     # retry chains looked at
    flaky_min_chains: int = 5    # fewer chains in that time: never listed
    flaky_share: float = 0.3     # share of chains that needed a retry to succeed
    flaky_clear: int = 5         # this many clean first attempts in a row clear the package

    def __post_init__(self) -> None:
        if self.volume_direction not in DIRECTIONS:
            raise ValueError(f"volume_direction must be one of {DIRECTIONS}, not {self.volume_direction!r}")
        if not 0 < self.volume_drop < 1:
            raise ValueError("volume_drop must be between 0 and 1 (0.8 flags a drop of 80 % or more)")
        if self.window < self.min_history or self.min_history < 1:
            raise ValueError("need 1 <= min_history <= window")


DEFAULTS = Thresholds()


@dataclasses.dataclass(frozen=True, slots=True)
class Verdict:
    """One anomaly of one job. Units follow the kind: seconds (slow), records (zero_records,
    volume_drop), share of chains (flaky). `score`: robust z (slow, volume_drop), 0 records
    (zero_records), the share (flaky); for a missing output, the share of baseline runs that had
    it. `mad`: MAD of the log values (None where no log baseline applies). `n`: runs (chains, for
    flaky) in the baseline. `threshold`: the bound the value crossed. `output_key`: the output of
    a zero_records or volume_drop verdict (one job may have several)."""

    job_id: int
    package_id: int
    kind: str
    score: float
    baseline_median: float | None
    mad: float | None
    n: int
    threshold: float
    message: str
    output_key: str | None = None

    @property
    def severity(self) -> str:
        return SEVERITY[self.kind]


@dataclasses.dataclass(frozen=True, slots=True)
class Baseline:
    """A robust centre and spread of log values: `center` and `spread` (a standard deviation,
    floored) on the log scale, `mad` the raw MAD, `n` the samples."""

    center: float
    spread: float
    mad: float
    n: int
    by_weekday: bool = False


# --- baselines ---------------------------------------------------------------------------------

def prior_successes(runs: Sequence[Run], end: int, window: int) -> list[Run]:
    """The last `window` successful runs among runs[:end], oldest first; reads only the tail."""
    found: list[Run] = []
    i = end - 1
    while i >= 0 and len(found) < window:
        if runs[i].succeeded:
            found.append(runs[i])
        i -= 1
    found.reverse()
    return found


def robust_baseline(values: Sequence[float], spread_floor: float) -> Baseline:
    center = median(values)
    mad = median([abs(v - center) for v in values])
    return Baseline(center, max(MAD_TO_SD * mad, spread_floor, TINY_SPREAD), mad, len(values))


def same_weekday(runs: Sequence[Run], end: int, moment: datetime, thresholds: Thresholds = DEFAULTS) -> list[Run]:
    """Successful runs among runs[:end] on the weekday of `moment` (UTC), in the last
    `weekday_weeks` weeks, at most `window` of them, newest first. Found by bisection, so an
    hourly package costs its same-weekday runs, not the week between."""
    midnight = moment.replace(hour=0, minute=0, second=0, microsecond=0)
    found: list[Run] = []
    for week in range(thresholds.weekday_weeks + 1):
        start = midnight - timedelta(weeks=week)
        lo = bisect_left(runs, start, 0, end, key=_created)
        hi = bisect_left(runs, min(start + timedelta(days=1), moment), lo, end, key=_created)
        found += [runs[i] for i in range(hi - 1, lo - 1, -1) if runs[i].succeeded][:thresholds.window - len(found)]
        if len(found) >= thresholds.window:
            break
    return found


def _created(run: Run) -> datetime:
    return run.created_at


def weekday_baseline(values: Sequence[float], weekdays: Sequence[int], same_day: Sequence[float],
                     thresholds: Thresholds) -> Baseline:
    """The median of the run's own weekday when there are `weekday_min` samples of it (from up
    to `weekday_weeks` weeks back: an hourly package's last 30 runs hold one or two weekdays),
    else the median of the pooled window. The spread is always the pooled window's: the residuals
    of each sample from its own weekday's median where the window holds `weekday_min` of that
    weekday, else from the pooled median, since four samples cannot estimate a spread."""
    groups: dict[int, list[float]] = {}
    for value, day in zip(values, weekdays):
        groups.setdefault(day, []).append(value)
    pooled = median(values)
    centers = {day: median(group) if len(group) >= thresholds.weekday_min else pooled
               for day, group in groups.items()}
    mad = median([abs(value - centers[day]) for value, day in zip(values, weekdays)])
    by_weekday = len(same_day) >= thresholds.weekday_min
    center = median(same_day) if by_weekday else pooled
    return Baseline(center, max(MAD_TO_SD * mad, thresholds.spread_floor, TINY_SPREAD), mad, len(values),
                    by_weekday)


@dataclasses.dataclass(frozen=True, slots=True)
class Past:
    """What a run is compared with: the last `window` successful runs before it (oldest
    first) and the successful runs of its weekday (newest first, see `same_weekday`)."""

    prior: Sequence[Run]
    same_day: Sequence[Run]


def past_of(history: Sequence[Run], moment: datetime, thresholds: Thresholds = DEFAULTS) -> Past:
    """The baselines' runs for a run at `moment`, from its package's earlier runs (time order)."""
    return Past(prior_successes(history, len(history), thresholds.window),
                same_weekday(history, len(history), moment, thresholds))


def runtime_baseline(past: Past, thresholds: Thresholds = DEFAULTS) -> Baseline | None:
    """Log runtimes of the prior successful runs; None below `min_history` of them."""
    timed = [r for r in past.prior if r.runtime_s]
    if len(timed) < thresholds.min_history:
        return None
    return weekday_baseline([math.log(r.runtime_s) for r in timed], [r.created_at.weekday() for r in timed],
                            [math.log(r.runtime_s) for r in past.same_day if r.runtime_s], thresholds)


# --- slow runs ------------------------------------------------------------------------------

def slow_bound(baseline: Baseline, thresholds: Thresholds = DEFAULTS) -> float:
    """The runtime in seconds above which a run is slow: every floor at once."""
    typical = math.exp(baseline.center)
    return max(math.exp(baseline.center + thresholds.slow_z * baseline.spread),
               typical * thresholds.slow_ratio, typical + thresholds.slow_abs_s)


def score_runtime(run: Run, past: Past, thresholds: Thresholds = DEFAULTS) -> Verdict | None:
    """`slow` when a successful run's runtime passed the bound of the prior successful runs."""
    if not run.succeeded or not run.runtime_s:
        return None
    return _slow_verdict(run, run.runtime_s, past, thresholds, "runtime")


def score_running(run: Run, elapsed_s: float, history: Sequence[Run],
                  thresholds: Thresholds = DEFAULTS) -> Verdict | None:
    """`slow` for a job still running whose elapsed time already passed the bound."""
    if elapsed_s <= 0:
        return None
    return _slow_verdict(run, elapsed_s, past_of(history, run.created_at, thresholds), thresholds,
                         "still running after")


def _slow_verdict(run: Run, seconds: float, past: Past, thresholds: Thresholds, what: str) -> Verdict | None:
    baseline = runtime_baseline(past, thresholds)
    if baseline is None:
        return None
    bound = slow_bound(baseline, thresholds)
    if seconds <= bound:
        return None
    typical = math.exp(baseline.center)
    z = (math.log(seconds) - baseline.center) / baseline.spread
    scope = f"{run.created_at:%A} median" if baseline.by_weekday else "median"
    return Verdict(run.job_id, run.package_id, SLOW, z, typical, baseline.mad, baseline.n, bound,
                   f"{what} {seconds:,.0f} s: {seconds / typical:.1f}× the {scope} {typical:,.0f} s of "
                   f"{baseline.n} prior successful runs (bound {bound:,.0f} s, z {z:.1f})")


# --- outputs: zero records, volume drops, disappearing outputs ---------------------------------

def output_counts(runs: Iterable[Run]) -> dict[str, list[tuple[int | None, int]]]:
    """For each output key, (records_count, weekday) of each run that has it, in one pass."""
    found: dict[str, list[tuple[int | None, int]]] = {}
    for run in runs:
        weekday = run.created_at.weekday()
        for key, count in run.outputs:
            found.setdefault(key, []).append((count, weekday))
    return found


def score_outputs(run: Run, past: Past, thresholds: Thresholds = DEFAULTS) -> list[Verdict]:
    """Zero records, volume changes and disappeared outputs of a successful run."""
    if not run.succeeded or len(past.prior) < thresholds.min_history:
        return []
    prior, same_day = output_counts(past.prior), output_counts(past.same_day)
    verdicts = []
    for key, count in run.outputs:
        if count is None:
            continue
        verdict = score_output(run, key, count, [(c, d) for c, d in prior.get(key, ()) if c is not None],
                               [c for c, _ in same_day.get(key, ()) if c is not None], thresholds)
        if verdict is not None:
            verdicts.append(verdict)
    return verdicts + disappeared_outputs(run, prior, len(past.prior), thresholds)


def score_output(run: Run, key: str, count: int, history: Sequence[tuple[int, int]], same_day: Sequence[int],
                 thresholds: Thresholds = DEFAULTS) -> Verdict | None:
    """One output of a run against the same output's earlier (count, weekday) and the counts
    of its weekday. 0 records: zero_records when at least `zero_loaded_share` of the prior counts
    are > 0 (at 0.5, when their median is > 0)."""
    if len(history) < thresholds.min_history:
        return None
    counts = [c for c, _ in history]
    if count == 0:
        loaded = sum(1 for c in counts if c > 0) / len(counts)
        return _zero_records(run, key, median(counts), len(counts)) if loaded >= thresholds.zero_loaded_share else None
    baseline = weekday_baseline([math.log1p(c) for c in counts], [d for _, d in history],
                                [math.log1p(c) for c in same_day], thresholds)
    return _volume_change(run, key, count, baseline, thresholds)


def _zero_records(run: Run, key: str, typical: float, n: int) -> Verdict:
    return Verdict(run.job_id, run.package_id, ZERO_RECORDS, 0.0, typical, None, n, 0.0,
                   f"completed with 0 records on {key}; median {typical:,.0f} over {n} prior successful runs", key)


def _volume_change(run: Run, key: str, count: int, baseline: Baseline, thresholds: Thresholds) -> Verdict | None:
    typical = math.expm1(baseline.center)
    z = (math.log1p(count) - baseline.center) / baseline.spread
    low = min(typical * (1 - thresholds.volume_drop),
              math.expm1(baseline.center - thresholds.volume_z * baseline.spread))
    high = max(typical / (1 - thresholds.volume_drop),
               math.expm1(baseline.center + thresholds.volume_z * baseline.spread))
    direction = thresholds.volume_direction
    if count < low and direction in ("down", "both"):
        bound, change = low, "dropped"
    elif count > high and direction in ("up", "both"):
        bound, change = high, "rose"
    else:
        return None
    scope = f"{run.created_at:%A} median" if baseline.by_weekday else "median"
    return Verdict(run.job_id, run.package_id, VOLUME_DROP, z, typical, baseline.mad, baseline.n, bound,
                   f"{key}: {count:,} records, {change} {_change(count, typical)} the {scope} {typical:,.0f} "
                   f"of {baseline.n} prior successful runs (bound {bound:,.0f}, z {z:.1f})", key)


def _change(count: int, typical: float) -> str:
    return f"{abs(count / typical - 1):.0%} from" if typical else "from"


def disappeared_outputs(run: Run, prior: dict[str, list[tuple[int | None, int]]], runs: int,
                        thresholds: Thresholds = DEFAULTS) -> list[Verdict]:
    """Outputs in at least `disappear_share` of the `runs` baseline runs that this run lacks
    (`prior`: `output_counts` of those runs). A run without any output is not judged: missing
    data is likelier than every output gone at once."""
    if not run.outputs or not runs:
        return []
    present = {key for key, _ in run.outputs}
    return [Verdict(run.job_id, run.package_id, VOLUME_DROP, len(seen) / runs,
                    median([c for c, _ in seen if c is not None] or [0]), None, runs, thresholds.disappear_share,
                    f"output {key} missing; it was in {len(seen)} of the {runs} prior successful runs", key)
            for key, seen in sorted(prior.items())
            if key not in present and len(seen) >= thresholds.disappear_share * runs]


# --- flaky packages ------------------------------------------------------------------------

@dataclasses.dataclass(frozen=True, slots=True)
class Chain:
    """A first attempt and its retries (attempts 0, 1, 2 …), in time order."""

    runs: tuple[Run, ...]

    @property
    def clean(self) -> bool:
        """Succeeded at its first attempt."""
        return self.runs[0].attempts == 0 and self.runs[0].succeeded

    @property
    def retried_to_success(self) -> bool:
        """Succeeded, but not at its first attempt (chains end at their success)."""
        return len(self.runs) > 1 and self.runs[-1].status == SUCCESS


def chains(runs: Iterable[Run]) -> list[Chain]:
    """Group runs in time order into retry chains: attempts 0 opens one, attempts > 0 extend it
    (a retry whose first attempt lies outside `runs` opens a chain of its own)."""
    grouped: list[list[Run]] = []
    for run in runs:
        if run.attempts and grouped:
            grouped[-1].append(run)
        else:
            grouped.append([run])
    return [Chain(tuple(group)) for group in grouped]


def recent_runs(runs: Sequence[Run], end: int, since: datetime) -> list[Run]:
    """runs[:end] created at or after `since`, oldest first; reads only the tail."""
    i = end
    while i > 0 and runs[i - 1].created_at >= since:
        i -= 1
    return list(runs[i:end])


def flaky_status(history: Sequence[Run], now: datetime, thresholds: Thresholds = DEFAULTS) -> Verdict | None:
    """`flaky` when, over the last `flaky_days` before `now`, at least `flaky_share` of at least
    `flaky_min_chains` chains needed a retry to succeed, unless the last `flaky_clear` chains were
    clean first attempts. Names the last job of the latest retried chain. For listing packages
    (check, metrics); reads only the tail of `history`."""
    if len(history) < thresholds.min_history:
        return None
    since = now - timedelta(days=thresholds.flaky_days)
    return flaky_verdict(chains(recent_runs(history, len(history), since)), thresholds)


def score_flaky(run: Run, history: Sequence[Run], thresholds: Thresholds = DEFAULTS) -> Verdict | None:
    """`flaky` on a retry that succeeded, when its package is flaky with this run counted."""
    return _score_flaky(run, history, len(history), thresholds)


def _score_flaky(run: Run, runs: Sequence[Run], end: int, thresholds: Thresholds) -> Verdict | None:
    if not (run.succeeded and run.attempts) or end < thresholds.min_history:
        return None
    since = run.created_at - timedelta(days=thresholds.flaky_days)
    return flaky_verdict(chains([*recent_runs(runs, end, since), run]), thresholds)


def flaky_verdict(recent: Sequence[Chain], thresholds: Thresholds = DEFAULTS) -> Verdict | None:
    if len(recent) < thresholds.flaky_min_chains:
        return None
    last = recent[-thresholds.flaky_clear:]
    if len(last) == thresholds.flaky_clear and all(c.clean for c in last):
        return None
    retried = [c for c in recent if c.retried_to_success]
    share = len(retried) / len(recent)
    if not retried or share < thresholds.flaky_share:
        return None
    job = retried[-1].runs[-1]
    return Verdict(job.job_id, job.package_id, FLAKY, share, None, None, len(recent), thresholds.flaky_share,
                   f"{len(retried)} of {len(recent)} runs in {thresholds.flaky_days:g} days needed a retry "
                   f"to succeed ({share:.0%}; listed from {thresholds.flaky_share:.0%})")


# --- one new job, a whole history ----------------------------------------------------------

def score_run(run: Run, history: Sequence[Run], thresholds: Thresholds = DEFAULTS) -> list[Verdict]:
    """Every verdict on a newly finished job, given its package's earlier runs in time order.

    Reads only the tail of `history` (the last `window` successful runs, `weekday_weeks` weeks
    of the run's weekday, the last `flaky_days` of runs), so the caller may pass just that much.
    """
    return _score(run, history, len(history), thresholds)


def score_history(runs: Sequence[Run], thresholds: Thresholds = DEFAULTS) -> list[Verdict]:
    """Every verdict on every run of one package's history (time order), each scored with only
    its past, as a sync would have scored it: for re-scoring after a threshold change."""
    return [v for end, run in enumerate(runs) for v in _score(run, runs, end, thresholds)]


def _score(run: Run, runs: Sequence[Run], end: int, thresholds: Thresholds) -> list[Verdict]:
    """`run` scored against runs[:end] (not copied: re-scoring a history stays linear)."""
    past = Past(prior_successes(runs, end, thresholds.window), same_weekday(runs, end, run.created_at, thresholds))
    verdicts = [v for v in (score_runtime(run, past, thresholds), _score_flaky(run, runs, end, thresholds))
                if v is not None]
    return verdicts + score_outputs(run, past, thresholds)
