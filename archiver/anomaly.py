"""Anomalies in a package's run history: slow runs, zero-record successes, volume drops, flaky packages.

Pure functions over small typed records: no database, no I/O. The caller hands over a
package's runs in time order; every rule looks only at the runs *before* the one it
scores (the run under test is never in its own baseline, so a jump cannot hide itself),
and only at the tail it needs: the last `Thresholds.window` successful runs, at most
`Thresholds.weekday_weeks` weeks of runs for the weekday effects, and the last
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

import bisect
import dataclasses
import math
from datetime import datetime, timedelta
from operator import attrgetter
from typing import Iterable, Iterator, NamedTuple, Sequence

SLOW = "slow"
ZERO_RECORDS = "zero_records"
VOLUME_DROP = "volume_drop"
FLAKY = "flaky"
KINDS = (SLOW, ZERO_RECORDS, VOLUME_DROP, FLAKY)
SEVERITY = {SLOW: "warning", ZERO_RECORDS: "critical", VOLUME_DROP: "warning", FLAKY: "warning"}

SUCCESS = "completed"
MAD_TO_SD = 1.4826  # the MAD of a normal sample times this estimates its standard deviation
TINY_SPREAD = 1e-9  # a constant series with spread_floor 0 still divides
MEDIAN_SE = math.sqrt(math.pi / 2)  # the standard error of a median of n normal samples is this × sd / √n
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

    def __reduce__(self):
        """Pickled as its fields (a long run sends its runs to the scoring process): the slotted
        dataclass's own state functions look up the fields for every run, 3 µs each way."""
        return type(self), (self.job_id, self.package_id, self.created_at, self.status, self.runtime_s,
                            self.attempts, self.outputs)


@dataclasses.dataclass(frozen=True, slots=True)
class Thresholds:
    """Every tunable of the rules. Defaults chosen on bench/anomalies.py (see docs/anomalies.md)."""

    window: int = 30             # previous successful runs in a baseline
    min_history: int = 8         # fewer prior successful runs (runs, for flaky): no verdict
    weekday_min: int = 4         # samples of a weekday needed for a weekday factor
    weekday_weeks: int = 8       # weeks looked back for the weekday factors
    new_weekday_margin: float = 2.0  # a run whose weekday has fewer than weekday_min earlier runs:
                                     # its volume floor this many times wider (÷ 1 - volume_drop)
    spread_floor: float = 0.1    # floor of the robust sd of the log values (0.1 ≈ ±10 %)
    slow_z: float = 3.5          # robust z of log(runtime) above the baseline
    slow_ratio: float = 3.0      # and at least this many times the baseline median
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
        if not self.new_weekday_margin >= 1:
            raise ValueError("new_weekday_margin must be at least 1 (1: no wider floors on a new weekday)")


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
    floored) on the log scale, `mad` the raw MAD of the residuals, `n` the samples of the centre,
    `by_weekday` whether the centre is the run's weekday's rather than the pooled one."""

    center: float
    spread: float
    mad: float
    n: int
    by_weekday: bool = False


# --- baselines ---------------------------------------------------------------------------------

def median(values: Iterable[float]) -> float:
    """statistics.median without its per-call overhead (a scored job computes a dozen)."""
    ordered = sorted(values)
    if not ordered:
        raise ValueError("no median of no values")
    return middle(ordered)


def middle(ordered: Sequence[float]) -> float:
    """The median of values already in order (at least one)."""
    n = len(ordered)
    half = n // 2
    return ordered[half] if n % 2 else (ordered[half - 1] + ordered[half]) / 2


@dataclasses.dataclass(frozen=True, slots=True)
class Sample:
    """What the baselines read of one earlier run, computed once per run: its UTC day (ordinal)
    and weekday, each output's records_count, and the log values of each measure: `RUNTIME`
    log(runtime), an output key log(1 + records_count); a measure without a value is absent."""

    ok: bool
    day: int
    weekday: int
    counts: dict[str, int | None]
    logs: dict[object, float]


RUNTIME = ("runtime",)  # the measure of log(runtime) in Sample.logs (output keys are strings)


def sample(run: Run) -> Sample:
    logs: dict[object, float] = {key: math.log1p(count) for key, count in run.outputs if count is not None}
    if run.runtime_s:
        logs[RUNTIME] = math.log(run.runtime_s)
    return Sample(run.succeeded, run.created_at.toordinal(), run.created_at.weekday(), dict(run.outputs), logs)


class _Samples:
    """`sample` of runs[i] on first use: scoring one new job reads only the tail it walks."""

    __slots__ = ("runs", "done")

    def __init__(self, runs: Sequence[Run]):
        self.runs, self.done = runs, {}

    def __getitem__(self, i: int) -> Sample:
        found = self.done.get(i)
        if found is None:
            found = self.done[i] = sample(self.runs[i])
        return found


class _Reach(_Samples):
    """_Samples that remember the oldest index read."""

    __slots__ = ("oldest",)

    def __init__(self, runs: Sequence[Run]):
        super().__init__(runs)
        self.oldest = len(runs)

    def __getitem__(self, i: int) -> Sample:
        self.oldest = min(self.oldest, i)
        return super().__getitem__(i)


def reaches_start(runs: Sequence[Run], moment: datetime, thresholds: Thresholds = DEFAULTS) -> bool:
    """Whether the Past of a run at `moment` over `runs` (time order) could change with runs
    before them: past_of's walk back read runs[0] (or there is none)."""
    samples = _Reach(runs)
    past_of(samples, len(runs), moment, thresholds)
    return samples.oldest == 0


@dataclasses.dataclass(frozen=True, slots=True)
class Past:
    """What a run is compared with. `prior`: the last `window` successful runs before it, oldest
    first. `groups`: for each weekday, the successful runs of that weekday in the last
    `weekday_weeks` weeks (and earlier today), newest first, at most `window` of each. `weekday`:
    the run's."""

    prior: list[Sample]
    groups: dict[int, list[Sample]]
    weekday: int

    @property
    def own(self) -> list[Sample]:
        return self.groups.get(self.weekday, [])

    def margin(self, thresholds: Thresholds) -> float:
        """How much wider the volume floors are for this run: `new_weekday_margin` while its
        weekday has fewer than `weekday_min` earlier runs in the look-back (a package's first
        weekend may load half as much, and no factor says so yet), else 1. Not for runtimes:
        measured, it cost more 4× slowdowns found than the false alarms it saved."""
        if thresholds.weekday_weeks and len(self.own) < thresholds.weekday_min:
            return thresholds.new_weekday_margin
        return 1.0


def past_of(samples, end: int, moment: datetime, thresholds: Thresholds = DEFAULTS) -> Past:
    """The Past of a run at `moment` from samples[:end] (time order), in one walk back over at
    most `weekday_weeks` weeks (further only to fill `prior`, for a package that runs less than
    daily); it stops as soon as `prior` is full and the run's weekday has `window` samples, so an
    hourly package reads about a week of runs, a daily one `weekday_weeks` weeks."""
    weekday, window = moment.weekday(), thresholds.window
    cutoff = moment.toordinal() - 7 * thresholds.weekday_weeks
    prior: list[Sample] = []
    groups: dict[int, list[Sample]] = {weekday: []}
    own = groups[weekday]
    for i in range(end - 1, -1, -1):
        s = samples[i]
        if not s.ok:
            continue
        if s.day < cutoff or len(own) >= window:
            if len(prior) >= window:
                break
            prior.append(s)
            continue
        if len(prior) < window:
            prior.append(s)
        group = groups.get(s.weekday)
        if group is None:
            groups[s.weekday] = [s]
        elif len(group) < window:
            group.append(s)
    prior.reverse()
    return Past(prior, {weekday: own} if len(own) >= window else groups, weekday)


class Timeline:
    """The successful runs' samples of one package by key (time order), and those of each
    weekday, so that the Past of any run is a few bisections rather than a walk back over a
    week of runs: `past` gives what `past_of` gives (tests/test_anomaly.py checks it). Runs may
    come in any order and be replaced (`discard`, then `add`): a sync writes a package's jobs
    over many batches, not always in time order."""

    def __init__(self, thresholds: Thresholds):
        self.window, self.weeks = thresholds.window, thresholds.weekday_weeks
        self.ok = _Keyed()
        self.by_weekday = [_Keyed() for _ in range(7)]

    def add(self, key, s: Sample) -> None:
        if s.ok:
            self.ok.add(key, s)
            self.by_weekday[s.weekday].add(key, s)

    def discard(self, key, s: Sample) -> None:
        if s.ok:
            self.ok.discard(key)
            self.by_weekday[s.weekday].discard(key)

    def forget_before(self, key) -> None:
        """Drop the samples with a key below `key` (a package's kept runs trimmed to a suffix)."""
        self.ok.forget_before(key)
        for keyed in self.by_weekday:
            keyed.forget_before(key)

    def past(self, key, moment: datetime) -> Past:
        """The Past of a run at `moment` from the samples with a key below `key`."""
        weekday, window = moment.weekday(), self.window
        cutoff = moment.toordinal() - 7 * self.weeks
        by_weekday = self.by_weekday
        own = by_weekday[weekday].newest(key, cutoff, window)
        groups = {weekday: own} if own else {}
        if len(own) < window:
            for day, keyed in enumerate(by_weekday):
                if day != weekday and (found := keyed.newest(key, cutoff, window)):
                    groups[day] = found
        return Past(self.ok.before(key, window), groups, weekday)


class Window(list):
    """Samples [start:end] of a `_Keyed` (a Past's `prior`, oldest first), that knows where it
    came from: the median of a measure over it is then kept up to date as consecutive runs ask
    (`_Keyed.median`) instead of being sorted afresh for each run."""

    __slots__ = ("keyed", "start", "end")

    def __init__(self, samples, keyed: "_Keyed", start: int, end: int):
        super().__init__(samples)
        self.keyed, self.start, self.end = keyed, start, end

    def shifted(self, by: int) -> "Window":
        """The same samples after `by` samples before them were dropped from its `_Keyed`."""
        self.start, self.end = self.start - by, self.end - by
        return self


class Group(Window):
    """A weekday group of a Past from a `Timeline`: a Window of samples (newest first) that also
    memoises, per measure, its values, their median and their absolute deviations from it. The
    Timeline hands out the same Group while its weekday gains no run, so the other weekdays'
    medians of a daily package are computed once a week rather than once a run."""

    __slots__ = ("memo",)

    def __init__(self, samples, keyed: "_Keyed", start: int, end: int):
        super().__init__(samples, keyed, start, end)
        self.memo: dict = {}


class _Keyed:
    """Samples sorted by key; `newest` memoised until the next add or discard, and per measure
    the sorted values of the last span `median` was asked about (a `SlidingValues`), moved along
    while samples are only appended."""

    __slots__ = ("keys", "samples", "groups", "sliding")

    def __init__(self):
        self.keys: list = []
        self.samples: list[Sample] = []
        self.groups: dict = {}
        self.sliding: dict[object, SlidingValues] = {}

    def add(self, key, s: Sample) -> None:
        self.groups.clear()
        if not self.keys or key > self.keys[-1]:
            self.keys.append(key)
            self.samples.append(s)
            return
        self.sliding.clear()   # the samples after it move
        i = bisect.bisect_left(self.keys, key)
        self.keys.insert(i, key)
        self.samples.insert(i, s)

    def discard(self, key) -> None:
        i = bisect.bisect_left(self.keys, key)
        if i < len(self.keys) and self.keys[i] == key:
            del self.keys[i], self.samples[i]
            self.groups.clear()
            self.sliding.clear()

    def forget_before(self, key) -> None:
        """Drop the samples with a key below `key`; what is memoised of the samples kept moves
        along with them (a first sync trims a package's runs every few dozen, and sorting their
        spans afresh after each trim cost more than the trim)."""
        i = bisect.bisect_left(self.keys, key)
        if i:
            del self.keys[:i], self.samples[:i]
            self.groups = {(start - i, end - i): group.shifted(i) for (start, end), group in self.groups.items()
                           if start >= i}
            self.sliding = {measure: values.shifted(i) for measure, values in self.sliding.items()
                            if values.start >= i}

    def before(self, key, window: int) -> Window:
        """The last `window` samples with a key below `key`, oldest first."""
        end = bisect.bisect_left(self.keys, key)
        start = max(0, end - window)
        return Window(self.samples[start:end], self, start, end)

    def median(self, start: int, end: int, measure) -> tuple[int, float | None]:
        """How many of samples[start:end] have a value of `measure`, and their median (None: none)."""
        sliding = self.sliding.get(measure)
        if sliding is None or not sliding.moves_to(start, end):
            sliding = self.sliding[measure] = SlidingValues(measure, start)
        return sliding.move(self.samples, start, end)

    def newest(self, key, cutoff: int, window: int) -> Group:
        """The last `window` samples with a key below `key` from day `cutoff` on, newest first
        (the same Group for the same samples while none is added or discarded)."""
        end = bisect.bisect_left(self.keys, key)
        samples = self.samples
        start = max(0, end - window)
        if start < end and samples[start].day < cutoff:   # samples are in time order, so their days too
            start = bisect.bisect_left(samples, cutoff, start, end, key=_DAY)
        found = self.groups.get((start, end))
        if found is None:
            found = self.groups[(start, end)] = Group(reversed(samples[start:end]), self, start, end)
        return found


_DAY = attrgetter("day")
_CREATED = attrgetter("created_at")
_COUNTS = attrgetter("counts")


class SlidingValues:
    """The values of one measure over samples[start:end], sorted, moved to a later span by
    removing the values that left it and inserting those that came in (bisect) rather than
    sorting the span afresh: consecutive runs of a package ask about spans one sample apart. The
    median is that of the same values, so the same float as `median` gives. A NaN (no order)
    makes it sort afresh every time."""

    __slots__ = ("measure", "start", "end", "ordered", "exact")

    def __init__(self, measure, start: int = 0):
        """Empty, at span [start:start]."""
        self.measure, self.start, self.end, self.ordered, self.exact = measure, start, start, [], True

    def shifted(self, by: int) -> "SlidingValues":
        """The same span after `by` samples before it were dropped."""
        self.start, self.end = self.start - by, self.end - by
        return self

    def moves_to(self, start: int, end: int) -> bool:
        """Whether moving costs less than sorting the span afresh."""
        return (self.exact and self.start <= start <= self.end <= end
                and (start - self.start) + (end - self.end) <= end - start)

    def move(self, samples: Sequence[Sample], start: int, end: int) -> tuple[int, float | None]:
        ordered, measure = self.ordered, self.measure
        for s in samples[self.start:start]:
            if (v := s.logs.get(measure)) is not None:
                del ordered[bisect.bisect_left(ordered, v)]
        for s in samples[self.end:end]:
            if (v := s.logs.get(measure)) is not None:
                if v != v:
                    self.exact = False
                bisect.insort(ordered, v)
        self.start, self.end = start, end
        if not self.exact:
            values = _values(samples[start:end], measure)
            return len(values), median(values) if values else None
        return (len(ordered), middle(ordered)) if ordered else (0, None)


def measure_median(runs: Sequence[Sample], measure) -> tuple[int, float | None]:
    """How many of `runs` have a value of `measure`, and their median (None: none); from the
    `_Keyed` a Window came from, where the sorted values slide along with the runs scored."""
    if isinstance(runs, Window):
        return runs.keyed.median(runs.start, runs.end, measure)
    values = _values(runs, measure)
    return len(values), median(values) if values else None


def _values(runs, measure) -> list[float]:
    return [v for s in runs if (v := s.logs.get(measure)) is not None]


def _group_stats(runs, measure) -> list:
    """[values, median, absolute deviations from the median] of a group's measure, the last two
    None until `_stats_median` and `_stats_deviations` fill them in; memoised on a Group."""
    memo = getattr(runs, "memo", None)
    if memo is not None:
        found = memo.get(measure)
        if found is None:
            found = memo[measure] = [_values(runs, measure), None, None]
        return found
    return [_values(runs, measure), None, None]


def robust_baseline(values: Sequence[float], spread_floor: float, by_weekday: bool = False,
                    spread: bool = True) -> Baseline:
    """Median and floored MAD of `values` (spread False: the centre alone, spread and mad NaN)."""
    center = median(values)
    if not spread:
        return Baseline(center, math.nan, math.nan, len(values), by_weekday)
    mad = median([abs(v - center) for v in values])
    return Baseline(center, max(MAD_TO_SD * mad, spread_floor, TINY_SPREAD), mad, len(values), by_weekday)


def shrink(factor: float, standard_error: float) -> float:
    """A weekday factor times factor² / (factor² + se²): one within its own noise shrinks
    towards 0, a clear one stays (the posterior mean under a normal prior of its own size)."""
    square = factor * factor
    return factor * square / (square + standard_error * standard_error) if square else 0.0


def _stats_median(stats: list) -> float:
    if stats[1] is None:
        stats[1] = median(stats[0])
    return stats[1]


def _stats_deviations(stats: list) -> list[float]:
    if stats[2] is None:
        centre = _stats_median(stats)
        stats[2] = [abs(v - centre) for v in stats[0]]
    return stats[2]


def weekday_baseline(prior: Sequence[tuple[float, int]], groups: dict[int, list[float]], weekday: int,
                     thresholds: Thresholds = DEFAULTS, spread: bool = True) -> Baseline:
    """The centre of `prior` ((value, weekday) of the last `window` runs) for a run on `weekday`.

    Each weekday with `weekday_min` samples in `groups` (its values over `weekday_weeks` weeks)
    gets a factor: its median minus the median of those weekday medians, shrunk by its standard
    error (`shrink`; 1.25 × spread / √n). The centre is the median of the prior values with their
    own weekday's factor taken off, plus the run's weekday's: 30 runs set the level, 8 weeks
    the weekday effect, and a weekday without a clear effect costs no precision. The spread is
    that of the residuals from each weekday's median (from the pooled median without two such
    weekdays). With no factor the centre is the plain median of the prior values (and with
    `spread` False, the spread and mad are NaN then: the caller only wanted the centre)."""
    least = thresholds.weekday_min
    return _weekday_baseline(prior, {day: [values, None, None] for day, values in groups.items()
                                     if len(values) >= least}, weekday, thresholds, spread)


def _weekday_baseline(prior: Sequence[tuple[float, int]], stats: dict[int, list], weekday: int,
                      thresholds: Thresholds, spread: bool) -> Baseline:
    """`weekday_baseline` of the `_group_stats` of the groups with `weekday_min` values."""
    factors: dict[int, float] = {}
    if len(stats) >= 2:
        medians = {day: _stats_median(found) for day, found in stats.items()}
        mad = median([d for found in stats.values() for d in _stats_deviations(found)])
        spread = max(MAD_TO_SD * mad, thresholds.spread_floor, TINY_SPREAD)
        typical = median(medians.values())
        factors = {day: shrink(m - typical, MEDIAN_SE * spread / math.sqrt(len(stats[day][0])))
                   for day, m in medians.items()}
    if not factors:
        return robust_baseline([v for v, _ in prior], thresholds.spread_floor, spread=spread)
    center = median([v - factors.get(day, 0.0) for v, day in prior]) + factors.get(weekday, 0.0)
    return Baseline(center, spread, mad, len(prior), weekday in factors and factors[weekday] != 0.0)


def baseline_of(past: Past, measure: object, thresholds: Thresholds = DEFAULTS, spread: bool = True) -> Baseline | None:
    """The baseline of a measure (`RUNTIME` or an output key): the median of the run's own weekday
    when it has `window` values (an hourly package), else `weekday_baseline`; None with fewer
    than `min_history` prior values. `spread` False: only the centre is sure to be computed (a
    cheap first look: most runs are far inside every bound)."""
    if len(past.own) >= thresholds.window:   # else its values cannot be `window` either
        own = [v for s in past.own if (v := s.logs.get(measure)) is not None]
        if len(own) >= thresholds.window:
            return robust_baseline(own, thresholds.spread_floor, by_weekday=True, spread=spread)
    prior = [(v, s.weekday) for s in past.prior if (v := s.logs.get(measure)) is not None]
    if len(prior) < thresholds.min_history:
        return None
    least = thresholds.weekday_min
    stats = {day: found for day, runs in past.groups.items() if len(runs) >= least
             and len((found := _group_stats(runs, measure))[0]) >= least}
    return _weekday_baseline(prior, stats, past.weekday, thresholds, spread)


def centre_bounds(past: Past, measure: object, thresholds: Thresholds = DEFAULTS) -> tuple[float, float] | None:
    """Bounds of `baseline_of(past, measure).center` (None where it is None), without the spread
    the weekday factors need (a pooled MAD over up to 7 × window values): most runs are far
    inside every floor, and a floor passed with the centre at its bound is passed with it.

    A factor is a weekday median minus the typical one, shrunk towards 0 (never past it), so
    the centre, the median of the prior values less their weekday's factor plus the run's, lies
    within the unshrunk factors' range R of the plain median of the prior values."""
    if len(past.own) >= thresholds.window:
        count, centre = measure_median(past.own, measure)
        if count >= thresholds.window:
            return centre, centre
    count, centre = measure_median(past.prior, measure)
    if count < thresholds.min_history:
        return None
    medians = _group_medians(past, measure, thresholds.weekday_min)
    if len(medians) < 2:
        return centre, centre
    medians.sort()
    typical = middle(medians)
    reach = max(0.0, medians[-1] - typical) - min(0.0, medians[0] - typical) + ROUNDING
    return centre - reach, centre + reach


def _group_medians(past: Past, measure, least: int) -> list[float]:
    """The medians of `measure` over the weekday groups of `past` with at least `least` values."""
    medians = []
    for runs in past.groups.values():
        if len(runs) >= least:
            stats = _group_stats(runs, measure)
            if len(stats[0]) >= least:
                medians.append(_stats_median(stats))
    return medians


ROUNDING = 1e-9   # the bounds' margin for the exact centre's rounding (log scale)


def runtime_baseline(past: Past, thresholds: Thresholds = DEFAULTS) -> Baseline | None:
    """The baseline of log(runtime) of the prior successful runs; None below `min_history` of them."""
    return baseline_of(past, RUNTIME, thresholds)


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
    return RunningBaselines(history).score(run, elapsed_s, thresholds)


class RunningBaselines:
    """One package's successful runs in time order, for judging its running jobs: each job is
    compared with the runs created before it (score_running), and the runs' samples are made
    once for all of them (a package has several jobs running at a time)."""

    def __init__(self, runs: Sequence[Run]):
        self.runs, self.samples = runs, _Samples(runs)

    def score(self, run: Run, elapsed_s: float, thresholds: Thresholds = DEFAULTS) -> Verdict | None:
        if elapsed_s <= 0:
            return None
        end = bisect.bisect_left(self.runs, run.created_at, key=attrgetter("created_at"))
        past = past_of(self.samples, end, run.created_at, thresholds)
        return _slow_verdict(run, elapsed_s, past, thresholds, "still running after")


def _slow_verdict(run: Run, seconds: float, past: Past, thresholds: Thresholds, what: str) -> Verdict | None:
    bounds = centre_bounds(past, RUNTIME, thresholds)
    if bounds is None:
        return None
    typical = math.exp(bounds[0])   # the floors grow with the centre: its lower bound first
    if seconds <= max(typical * thresholds.slow_ratio, typical + thresholds.slow_abs_s):
        return None  # inside the floors, whatever the spread
    baseline = runtime_baseline(past, thresholds)
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

def score_outputs(run: Run, past: Past, thresholds: Thresholds = DEFAULTS) -> list[Verdict]:
    """Zero records, volume changes and disappeared outputs of a successful run."""
    if not run.succeeded or len(past.prior) < thresholds.min_history:
        return []
    verdicts = []
    for key, count in run.outputs:
        if count is None:
            continue
        verdict = score_output(run, key, count, past, thresholds)
        if verdict is not None:
            verdicts.append(verdict)
    return verdicts + disappeared_outputs(run, past.prior, thresholds)


def score_output(run: Run, key: str, count: int, past: Past, thresholds: Thresholds = DEFAULTS) -> Verdict | None:
    """One output of a run against the same output's earlier counts. 0 records: zero_records
    when at least `zero_loaded_share` of the prior counts are > 0 (at 0.5, when their median is > 0)."""
    if count == 0:
        counts = [c for s in past.prior if (c := s.counts.get(key)) is not None]
        if len(counts) < thresholds.min_history:
            return None
        loaded = sum(1 for c in counts if c > 0) / len(counts)
        return _zero_records(run, key, median(counts), len(counts)) if loaded >= thresholds.zero_loaded_share else None
    bounds = centre_bounds(past, key, thresholds)
    if bounds is None:
        return None
    low, high = math.expm1(bounds[0]), math.expm1(bounds[1])
    margin = past.margin(thresholds)
    keep, direction = (1 - thresholds.volume_drop) / margin, thresholds.volume_direction
    if not ((count < high * keep and direction != "up") or (count > low / keep and direction != "down")):
        return None  # inside the relative floor wherever the centre lies, whatever the spread
    return _volume_change(run, key, count, baseline_of(past, key, thresholds), thresholds, margin)


def _zero_records(run: Run, key: str, typical: float, n: int) -> Verdict:
    return Verdict(run.job_id, run.package_id, ZERO_RECORDS, 0.0, typical, None, n, 0.0,
                   f"completed with 0 records on {key}; median {typical:,.0f} over {n} prior successful runs", key)


def _volume_change(run: Run, key: str, count: int, baseline: Baseline, thresholds: Thresholds,
                   margin: float = 1.0) -> Verdict | None:
    typical = math.expm1(baseline.center)
    z = (math.log1p(count) - baseline.center) / baseline.spread
    keep = (1 - thresholds.volume_drop) / margin
    low = min(typical * keep, math.expm1(baseline.center - thresholds.volume_z * baseline.spread))
    high = max(typical / keep,
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
                   f"of {baseline.n} prior successful runs (bound {bound:,.0f}, z {z:.1f}{_new_weekday(run, margin)})", key)


def _new_weekday(run: Run, margin: float) -> str:
    return f"; few earlier {run.created_at:%A}s: floor ×{margin:g}" if margin != 1 else ""


def _change(count: int, typical: float) -> str:
    return f"{abs(count / typical - 1):.0%} from" if typical else "from"


def disappeared_outputs(run: Run, prior: Sequence[Sample], thresholds: Thresholds = DEFAULTS) -> list[Verdict]:
    """Outputs in at least `disappear_share` of the `prior` baseline runs that this run lacks.
    A run without any output is not judged: missing data is likelier than every output gone at once."""
    if not run.outputs or not prior:
        return []
    present = {key for key, _ in run.outputs}
    if set().union(*map(_COUNTS, prior)) <= present:
        return []
    seen: dict[str, list[int | None]] = {}
    for s in prior:
        for key, count in s.counts.items():
            if key not in present:
                seen.setdefault(key, []).append(count)
    runs = len(prior)
    return [Verdict(run.job_id, run.package_id, VOLUME_DROP, len(counts) / runs,
                    median([c for c in counts if c is not None] or [0]), None, runs, thresholds.disappear_share,
                    f"output {key} missing; it was in {len(counts)} of the {runs} prior successful runs", key)
            for key, counts in sorted(seen.items()) if len(counts) >= thresholds.disappear_share * runs]


# --- flaky packages ------------------------------------------------------------------------

class Chain(NamedTuple):
    """A first attempt and its retries (attempts 0, 1, 2 …), in time order. A NamedTuple: scoring
    a successful retry groups two weeks of its package's runs into chains, cheaply."""

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
    """runs[:end] created at or after `since`, oldest first (runs are in time order: a bisection,
    not a walk back over two weeks of an hourly package's runs)."""
    return list(runs[bisect.bisect_left(runs, since, 0, end, key=_CREATED):end])


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
    return flaky_of_runs([*recent_runs(runs, end, since), run], thresholds)


def flaky_of_runs(runs: Iterable[Run], thresholds: Thresholds = DEFAULTS) -> Verdict | None:
    """`flaky_verdict(chains(runs))` in one pass, without building the chains (a successful
    retry of an hourly package walks two weeks of runs)."""
    cleans: list[bool] = []
    retried, job = 0, None
    first = last = None
    length = 0
    for run in runs:
        if run.attempts and first is not None:
            last, length = run, length + 1
            continue
        if first is not None:
            cleans.append(first.attempts == 0 and first.status == SUCCESS)
            if length > 1 and last.status == SUCCESS:
                retried, job = retried + 1, last
        first = last = run
        length = 1
    if first is not None:
        cleans.append(first.attempts == 0 and first.status == SUCCESS)
        if length > 1 and last.status == SUCCESS:
            retried, job = retried + 1, last
    return _flaky(len(cleans), cleans[-thresholds.flaky_clear:], retried, job, thresholds)


def flaky_verdict(recent: Sequence[Chain], thresholds: Thresholds = DEFAULTS) -> Verdict | None:
    if len(recent) < thresholds.flaky_min_chains:
        return None
    retried = [c for c in recent if c.retried_to_success]
    return _flaky(len(recent), [c.clean for c in recent[-thresholds.flaky_clear:]], len(retried),
                  retried[-1].runs[-1] if retried else None, thresholds)


def _flaky(chain_count: int, last_clean: list[bool], retried: int, job: Run | None,
           thresholds: Thresholds) -> Verdict | None:
    """The flaky verdict of `chain_count` chains, of which the last `flaky_clear` were clean or
    not (`last_clean`), `retried` needed a retry to succeed, the latest of them ending at `job`."""
    if chain_count < thresholds.flaky_min_chains:
        return None
    if len(last_clean) == thresholds.flaky_clear and all(last_clean):
        return None
    share = retried / chain_count
    if not retried or share < thresholds.flaky_share:
        return None
    return Verdict(job.job_id, job.package_id, FLAKY, share, None, None, chain_count, thresholds.flaky_share,
                   f"{retried} of {chain_count} runs in {thresholds.flaky_days:g} days needed a retry "
                   f"to succeed ({share:.0%}; listed from {thresholds.flaky_share:.0%})")


# --- one new job, a whole history ----------------------------------------------------------

def score_run(run: Run, history: Sequence[Run], thresholds: Thresholds = DEFAULTS) -> list[Verdict]:
    """Every verdict on a newly finished job, given its package's earlier runs in time order.

    Reads only the tail of `history` (the last `window` successful runs, `weekday_weeks` weeks
    of runs at most, the last `flaky_days` of runs), so the caller may pass just that much.
    """
    if not run.succeeded:
        return []
    past = past_of(_Samples(history), len(history), run.created_at, thresholds)
    return _score(run, history, len(history), thresholds, past)


def score_at(runs: Sequence[Run], end: int, past: Past, thresholds: Thresholds = DEFAULTS) -> list[Verdict]:
    """`score_run(runs[end], runs[:end])` with the run's Past given (from a `Timeline`)."""
    run = runs[end]
    return _score(run, runs, end, thresholds, past) if run.succeeded else []


def score_history(runs: Sequence[Run], thresholds: Thresholds = DEFAULTS) -> list[Verdict]:
    """Every verdict on every run of one package's history (time order), each scored with only
    its past, as a sync would have scored it: for re-scoring after a threshold change. Each
    run's `sample` is computed once; the baselines' runs come from a `Timeline`."""
    return [v for end, past in pasts(runs, thresholds) for v in _score(runs[end], runs, end, thresholds, past)]


def pasts(runs: Sequence[Run], thresholds: Thresholds = DEFAULTS) -> Iterator[tuple[int, Past]]:
    """(index, Past) of each successful run of a history (time order), as `past_of` would give
    it, from a `Timeline` kept as the history is walked: linear in the history."""
    timeline = Timeline(thresholds)
    for end, run in enumerate(runs):
        if run.succeeded:
            yield end, timeline.past(end, run.created_at)
        timeline.add(end, sample(run))


def _score(run: Run, runs: Sequence[Run], end: int, thresholds: Thresholds, past: Past) -> list[Verdict]:
    """`run` scored against runs[:end] (not copied: re-scoring a history stays linear)."""
    verdicts = [v for v in (score_runtime(run, past, thresholds), _score_flaky(run, runs, end, thresholds))
                if v is not None]
    return verdicts + score_outputs(run, past, thresholds)
