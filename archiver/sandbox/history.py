"""The sandbox's deterministic job history.

A job is a *plan*: a time line fixed when it is generated (created -> pending
-> queued -> started -> ended, or a stop request on the way). The status a
client sees is read off the plan at the sandbox clock, so moving the clock
finishes running jobs and makes newly created ones appear without any
bookkeeping.

Times inside the history are *history seconds*: integers where 0 is the
beginning of the history (about the first job's creation). `History.offset`
maps them to Unix time. Plans are stored column-wise in arrays (about 100
bytes a job) and payloads are rendered per request (render.py).

Jobs come from three sources. Each schedule ticks at start + k x interval and
creates one run per package of its task a few seconds after each tick; a
failed scheduled run is retried a few minutes later while the schedule has
retries left; users start runs by hand, a Poisson stream over the packages.
A *scenario* sets the failure and stop rates and the intervals ("normal": a
realistic mix whose intervals scale with the history's size; "healthy": hourly
and daily schedules where nothing goes wrong, and users only rerun scheduled
packages, so that a monitor has nothing to report).

The generator runs forward in time, forever: the first `jobs` plans end at the
start clock (the *anchor*); the ones after it are the future the clock walks
into. It is extended on demand, from the same random stream, so the history
is the same however far and in which steps the clock is moved.

Breakages (a schedule that stops, a package whose runs fail, a run that never
ends) only change jobs created after the clock time they were asked for, which
no client has seen yet: the future is regenerated from a copy of the
generator taken at the anchor, with the breakages applied. So the history is a
function of the seed, the size and the breakages, not of when they were asked.
"""
from __future__ import annotations

import copy
import heapq
import math
import random
import threading
from array import array
from bisect import bisect_left, bisect_right
from dataclasses import dataclass
from functools import cached_property
from itertools import islice
from typing import Iterator, NamedTuple

from .anomalies import LATEST_KINDS, MIN_PRIOR, SIGMA, AnomalyModel, Injection, watched_packages
from .catalog import DAY, ERRORS, Catalog, build_catalog

STATUSES = ("idle", "pending", "queued", "running", "completed", "failed",
            "pending_stoppage", "stopping", "stopped")
(IDLE, PENDING, QUEUED, RUNNING, COMPLETED, FAILED,
 PENDING_STOPPAGE, STOPPING, STOPPED) = range(len(STATUSES))
TERMINAL = frozenset({COMPLETED, FAILED, STOPPED})

CREATED_BY_USER, CREATED_BY_SCHEDULE = 0, 1
NO_TIME = -1                      # in time columns: "never happens"
STOP_ERROR = len(ERRORS)          # error index of the "stopped by user" text
FULL_HISTORY_SPAN = 60 * DAY      # a large history spans about this
BUSIEST_MEAN_GAP = 600            # ...but a small one is the recent past of a ~6 jobs/hour account
FUTURE_HORIZON = DAY              # plans are generated this far past the clock
KEPT_RUNNING = 3                  # the last jobs before the start clock are kept unfinished
SCHEDULED_SHARE = 0.85            # normal scenario: share of all runs that schedules create...
MIN_MANUAL_SHARE = 0.05           # ...but users start at least this share by hand
FOREVER = 2**62                   # `ended` of a run that never ends (a stuck job)

UNIT_SECONDS = {"minutes": 60, "hours": 3600, "days": DAY, "weeks": 7 * DAY, "months": 30 * DAY}
NICE_INTERVALS = tuple((amount, unit) for unit, amounts in (
    ("minutes", (1, 2, 5, 10, 15, 30)), ("hours", (1, 2, 3, 4, 6, 8, 12)), ("days", (1, 2, 3)),
    ("weeks", (1, 2))) for amount in amounts)

# column name -> array type code
_COLUMNS = (
    ("id", "q"), ("created", "q"), ("pending_at", "q"), ("queued_at", "q"),
    ("started", "q"), ("stop_requested", "q"), ("stopping_at", "q"), ("ended", "q"),
    ("planned_runtime", "q"), ("final", "b"), ("package", "h"), ("cluster", "h"),
    ("creator_kind", "b"), ("creator", "h"), ("owner", "h"), ("attempts", "b"),
    ("max_attempts", "b"), ("error", "b"), ("failed_at_null", "b"), ("seed", "L"),
    ("first_output_id", "q"),
)


class JobPlan(NamedTuple):
    """One job's fixed time line and attributes (indices point into the Catalog)."""
    id: int
    created: int
    pending_at: int
    queued_at: int
    started: int            # NO_TIME if stopped before it started
    stop_requested: int     # NO_TIME unless the final status is stopped
    stopping_at: int
    ended: int              # when it reached its final status
    planned_runtime: int    # run time it would have needed to complete
    final: int              # status code
    package: int
    cluster: int
    creator_kind: int
    creator: int            # user or schedule index
    owner: int              # user index
    attempts: int
    max_attempts: int
    error: int              # index into ERRORS, STOP_ERROR, or -1
    failed_at_null: int     # 1: a failed job reported with failed_at null (as some API examples do)
    seed: int               # seeds the per-job details drawn at render time
    first_output_id: int


class JobState(NamedTuple):
    """What a job looks like at one clock second."""
    status: str
    updated: int            # history seconds
    started: int | None
    progress: float
    runtime: int


class JobTable:
    """Plans stored column-wise; `table[i]` gives back a JobPlan."""

    def __init__(self) -> None:
        self._columns = tuple(array(code) for _, code in _COLUMNS)
        by_name = dict(zip((name for name, _ in _COLUMNS), self._columns))
        self.ids, self.created, self.ended = by_name["id"], by_name["created"], by_name["ended"]
        self.final, self.package = by_name["final"], by_name["package"]
        self.cluster, self.attempts = by_name["cluster"], by_name["attempts"]
        self.creator_kind, self.creator = by_name["creator_kind"], by_name["creator"]

    def __len__(self) -> int:
        return len(self.ids)

    def __getitem__(self, index: int) -> JobPlan:
        return JobPlan._make(column[index] for column in self._columns)

    def append(self, plan: JobPlan) -> None:
        for column, value in zip(self._columns, plan):
            column.append(value)

    def replace(self, index: int, plan: JobPlan) -> None:
        for column, value in zip(self._columns, plan):
            column[index] = value

    def truncate(self, length: int) -> None:
        for column in self._columns:
            del column[length:]


def phase_at(plan: JobPlan, t: int) -> tuple[int, int]:
    """(status code, time it was entered) of a job that exists at t."""
    if t >= plan.ended:
        return plan.final, plan.ended
    if plan.stop_requested != NO_TIME and t >= plan.stop_requested:
        if t >= plan.stopping_at:
            return STOPPING, plan.stopping_at
        return PENDING_STOPPAGE, plan.stop_requested
    if plan.started != NO_TIME and t >= plan.started:
        return RUNNING, plan.started
    if t >= plan.queued_at:
        return QUEUED, plan.queued_at
    if t >= plan.pending_at:
        return PENDING, plan.pending_at
    return IDLE, plan.created


def work_ended_at(plan: JobPlan) -> int:
    """When the job stopped making progress: failure, stop request or completion."""
    if plan.final == FAILED:
        return plan.ended - 1
    if plan.final == STOPPED:
        return plan.stop_requested
    return plan.ended


def state_at(plan: JobPlan, t: int, touched: int | None = None) -> JobState:
    code, entered = phase_at(plan, t)
    updated = entered if touched is None else max(entered, touched)
    started = plan.started if plan.started != NO_TIME and t >= plan.started else None
    if started is None:
        return JobState(STATUSES[code], updated, None, 0, 0)
    runtime = min(t, plan.ended) - started
    if code == COMPLETED:
        return JobState(STATUSES[code], updated, started, 1, runtime)
    worked = min(t, work_ended_at(plan)) - started
    progress = min(0.99, round(worked / max(plan.planned_runtime, 1), 2))
    return JobState(STATUSES[code], updated, started, progress if progress > 0 else 0, runtime)


class _Run(NamedTuple):
    """Who runs what: the part of a job a retry copies from the run it retries."""
    package: int
    cluster: int
    schedule: int           # -1: run by a user
    owner: int
    attempts: int
    max_attempts: int


# ---------------------------------------------------------------------------
# scenarios and cadences

@dataclass(frozen=True)
class Scenario:
    """How an account behaves: failure and stop rates, and how schedules pick their interval."""
    name: str
    failure_scale: float    # multiplies each package's failure rate
    stop_share: float       # runs a user stops
    slow_queue_share: float # runs that wait 5-25 minutes for a cluster
    runtime_spread: float   # sigma of the log-normal spread of run times around the package's median
    fixed_intervals: bool   # hourly and daily schedules, whatever the history's size
    manual_share: float     # runs users start by hand (fixed intervals; else what the schedules leave)
    anomalies: bool = False # weekday effects, flaky packages and injected anomalies (anomalies.py)

    @property
    def hand_runs_scheduled_only(self) -> bool:
        """Healthy: a package run only by hand, at random, would look stale to a monitor."""
        return self.fixed_intervals


SCENARIOS = {
    "normal": Scenario("normal", 1.0, 0.03, 0.05, 0.45, False, 1 - SCHEDULED_SHARE),
    "healthy": Scenario("healthy", 0.0, 0.0, 0.0, 0.25, True, 0.03),
    # a normal account with rarer failures (none flaky by chance) and noise of CV 0.3
    "anomalies": Scenario("anomalies", 0.25, 0.03, 0.05, SIGMA, False, 1 - SCHEDULED_SHARE, anomalies=True),
}
HEALTHY_DAILY = frozenset({"NetSuite sync", "Marketing", "Event pipeline", "Finance close",
                           "Product analytics"})   # healthy scenario: these run daily, the others hourly


class Cadence(NamedTuple):
    """A schedule's ticks: start + k * interval (history seconds)."""
    start: int
    interval: int

    def tick_after(self, t: int) -> int:
        """The first tick strictly after t."""
        if t < self.start:
            return self.start
        return self.start + ((t - self.start) // self.interval + 1) * self.interval


def nice_interval(seconds: float) -> tuple[int, str]:
    """The usual schedule interval nearest (on a log scale) to a gap in seconds."""
    return min(NICE_INTERVALS, key=lambda nice: abs(math.log(nice[0] * UNIT_SECONDS[nice[1]] / max(seconds, 1))))


def interval_seconds(interval: tuple[int, str]) -> int:
    return interval[0] * UNIT_SECONDS[interval[1]]


def _intervals(catalog: Catalog, scenario: Scenario, mean_gap: float) -> list[int]:
    """Each schedule's interval in seconds.

    Normal: about SCHEDULED_SHARE of all runs come from schedules, each in
    proportion to its packages' weights, so a bigger history (a smaller mean
    gap) has shorter intervals; rounded to a usual interval. Healthy: hourly,
    or daily for HEALTHY_DAILY (nightly work, or runs that take an hour).
    """
    weights, total = catalog.package_weights, sum(catalog.package_weights)
    intervals = []
    for schedule in catalog.schedules:
        if scenario.fixed_intervals:
            intervals.append(DAY if schedule.name in HEALTHY_DAILY else 3600)
            continue
        share = SCHEDULED_SHARE * sum(weights[p] for p in schedule.packages) / total
        intervals.append(interval_seconds(nice_interval(len(schedule.packages) * mean_gap / share)))
    return intervals


def scheduled_rate(catalog: Catalog, intervals: list[int]) -> float:
    """First-attempt runs per second all schedules create."""
    return sum(len(s.packages) / interval for s, interval in zip(catalog.schedules, intervals))


def manual_gap(scenario: Scenario, scheduled: float, mean_gap: float) -> float:
    """Mean gap of the runs users start: what the schedules leave of one run per mean_gap (normal)."""
    if scenario.fixed_intervals:
        return 1 / (scheduled * scenario.manual_share / (1 - scenario.manual_share))
    return 1 / max(1 / mean_gap - scheduled, MIN_MANUAL_SHARE / mean_gap)


# ---------------------------------------------------------------------------
# breakages

class Breakage(NamedTuple):
    """Something told to go wrong from history second `at` on (jobs created after it)."""
    kind: str       # "schedule_stopped" | "package_failing" | "package_stuck"
    target: int     # schedule or package index
    at: int


class _Rules:
    """Breakages as the generator applies them, and the stuck runs they made."""

    def __init__(self, breakages: tuple[Breakage, ...]) -> None:
        self.stopped = self._earliest(breakages, "schedule_stopped")   # schedule -> from when
        self.failing = self._earliest(breakages, "package_failing")    # package -> from when
        self.sticking = [(number, b) for number, b in enumerate(breakages) if b.kind == "package_stuck"]
        self.stuck: dict[int, int] = {}   # breakage number -> job id it made stuck

    @staticmethod
    def _earliest(breakages: tuple[Breakage, ...], kind: str) -> dict[int, int]:
        earliest: dict[int, int] = {}
        for breakage in breakages:
            if breakage.kind == kind:
                earliest[breakage.target] = min(breakage.at, earliest.get(breakage.target, breakage.at))
        return earliest

    def drops(self, run: _Run, origin: int) -> bool:
        """A run of a stopped schedule (its tick, or its retry's creation, after the stop)."""
        return run.schedule >= 0 and origin > self.stopped.get(run.schedule, origin)

    def fails(self, package: int, created: int) -> bool:
        return created > self.failing.get(package, created)

    def sticks(self, package: int, created: int, job_id: int) -> bool:
        """Whether this run is the one a stuck breakage waits for (and mark it taken)."""
        for number, breakage in self.sticking:
            if breakage.target == package and created > breakage.at and number not in self.stuck:
                self.stuck[number] = job_id
                return True
        return False


class _Generator:
    """Produces job plans in creation order, forever, from one random stream.

    Scheduled runs are due at their schedule's ticks (each tick expands into
    its runs, whose small delays come from the schedule's own random stream);
    they wait in `pending` with the retries, a heap of (created, sequence,
    origin, run) where origin is the tick (first runs) or the creation (retries).
    Runs by hand arrive as a Poisson stream. The next job is the earliest of both.
    """

    def __init__(self, rng: random.Random, catalog: Catalog, scenario: Scenario, intervals: list[int],
                 hand_gap: float, must_succeed: range, model: AnomalyModel | None = None) -> None:
        self.rng, self.catalog, self.scenario, self.model = rng, catalog, scenario, model
        self.hand_gap, self.must_succeed = hand_gap, must_succeed
        self.rules = _Rules(())
        self.count = self.sequence = 0
        self.last_created = -FOREVER
        self.next_id = 10_000 + rng.randint(0, 99)
        self.next_output_id = 500_000 + rng.randint(0, 999)
        self.cadences = cadences = [Cadence(rng.randrange(interval), interval) for interval in intervals]
        self.tick_rngs = [random.Random(rng.getrandbits(64)) for _ in cadences]
        self.ticks = [(cadence.start, s) for s, cadence in enumerate(cadences)]
        heapq.heapify(self.ticks)
        self.pending: list[tuple[int, int, int, _Run]] = []
        self._hand_runs_of([p for p in range(len(catalog.packages))
                            if not scenario.hand_runs_scheduled_only or catalog.packages[p].schedule is not None])
        self.next_arrival = self._gap()

    def _hand_runs_of(self, packages: list[int]) -> None:
        self.hand_packages = packages
        total = 0.0
        self.cumulative_weights = [total := total + self.catalog.package_weights[p] for p in packages]

    def no_hand_runs_of(self, packages: list[int]) -> None:
        """From now on users start no run of `packages` (the same number of random draws)."""
        self._hand_runs_of([p for p in self.hand_packages if p not in packages])

    def copy(self) -> "_Generator":
        """An independent copy (random states included) that shares the catalog."""
        return copy.deepcopy(self, {id(self.catalog): self.catalog})

    def peek_time(self) -> int:
        """Creation time of the next job."""
        self._settle()
        if self.pending and self.pending[0][0] <= self.next_arrival:
            return max(self.pending[0][0], self.last_created + 1)
        return max(self.next_arrival, self.last_created + 1)

    def next_plan(self) -> JobPlan:
        """The next job. No two are created in the same second (so the start clock falls between two)."""
        self._settle()
        if self.pending and self.pending[0][0] <= self.next_arrival:
            created, _, _, run = heapq.heappop(self.pending)
        else:
            created, run = self.next_arrival, self._hand_run()
            self.next_arrival += self._gap()
        self.last_created = created = max(created, self.last_created + 1)
        plan = self._plan(created, run)
        self.count += 1
        return plan

    def _settle(self) -> None:
        """Expand every tick that may come before the next job; drop runs of stopped schedules."""
        pending, ticks, rules = self.pending, self.ticks, self.rules
        while True:
            bound = pending[0][0] if pending and pending[0][0] < self.next_arrival else self.next_arrival
            if ticks and ticks[0][0] <= bound:
                self._expand_tick()
            elif pending and rules.stopped and rules.drops(pending[0][3], pending[0][2]):
                heapq.heappop(pending)
            else:
                return

    def _expand_tick(self) -> None:
        tick, index = heapq.heappop(self.ticks)
        rng, schedule = self.tick_rngs[index], self.catalog.schedules[index]
        for package in schedule.packages:
            delay = rng.randint(2, 20) + (rng.randint(15, 50) if rng.random() < 0.2 else 0)
            cluster = (self.catalog.packages[package].spec.cluster if rng.random() < 0.9
                       else rng.randrange(len(self.catalog.clusters)))
            self._push(tick + delay, tick, _Run(package, cluster, index, schedule.owner, 0, schedule.retries))
        heapq.heappush(self.ticks, (tick + self.cadences[index].interval, index))

    def _push(self, created: int, origin: int, run: _Run) -> None:
        self.sequence += 1
        heapq.heappush(self.pending, (created, self.sequence, origin, run))

    def _gap(self) -> int:
        return 1 + int(self.rng.expovariate(1 / self.hand_gap))

    def _hand_run(self) -> _Run:
        """A run (attempts 0) a user starts, of a package picked by weight."""
        rng, catalog = self.rng, self.catalog
        index = rng.choices(self.hand_packages, cum_weights=self.cumulative_weights)[0]
        package = catalog.packages[index]
        cluster = package.spec.cluster if rng.random() < 0.9 else rng.randrange(len(catalog.clusters))
        user = package.owner if rng.random() < 0.6 else rng.randrange(len(catalog.users))
        return _Run(index, cluster, -1, user, 0, 0)

    def _plan(self, created: int, run: _Run) -> JobPlan:
        rng, scenario = self.rng, self.scenario
        spec = self.catalog.packages[run.package].spec
        pending_at = created + rng.randint(1, 4)
        queued_at = pending_at + rng.randint(5, 40)
        slow = rng.random() < scenario.slow_queue_share
        wait = 5 + int(rng.expovariate(1 / 45)) + (rng.randint(300, 1500) if slow else 0)
        spread = math.exp(rng.gauss(0, scenario.runtime_spread))
        planned = min(4 * 3600, max(15, int(spec.runtime_s * spread)))
        timing = planned   # what failure and stop times scale with
        if self.model is not None:
            planned = min(4 * 3600, max(15, int(spec.runtime_s * self.model.factor(run.package, created) * spread)))
        if self.rules.sticks(run.package, created, self.next_id):
            outcome = queued_at + wait, NO_TIME, NO_TIME, FOREVER, RUNNING
        else:
            outcome = self._outcome(self._failure_rate(run, created), queued_at, queued_at + wait, timing)
        started, stop_requested, stopping_at, ended, final = outcome
        if final == COMPLETED:
            planned = self._inject(run, planned)
            ended = started + planned
        error, failed_at_null = self._error(final, spec.errors)
        plan = JobPlan(
            id=self.next_id, created=created, pending_at=pending_at, queued_at=queued_at,
            started=started, stop_requested=stop_requested, stopping_at=stopping_at, ended=ended,
            planned_runtime=planned, final=final, package=run.package, cluster=run.cluster,
            creator_kind=CREATED_BY_SCHEDULE if run.schedule >= 0 else CREATED_BY_USER,
            creator=run.schedule if run.schedule >= 0 else run.owner, owner=run.owner,
            attempts=run.attempts, max_attempts=run.max_attempts, error=error,
            failed_at_null=failed_at_null, seed=rng.getrandbits(32),
            first_output_id=self.next_output_id)
        self.next_id += rng.randint(1, 3)
        self.next_output_id += len(spec.outputs) + rng.randint(0, 3)
        self._queue_retry(plan, run)
        return plan

    def _failure_rate(self, run: _Run, created: int) -> float:
        if self.rules.fails(run.package, created):
            return 1.0
        if self.model is not None and self.model.first_attempt_fails(run.package, run.schedule >= 0, run.attempts):
            return self.model.flaky_failure
        return self.catalog.packages[run.package].spec.failure_rate * self.scenario.failure_scale

    def _inject(self, run: _Run, planned: int) -> int:
        """The run time of a completed run, after the anomaly model had its say (slowdowns).

        The runs kept running at the start clock are stretched later: never injected.
        """
        if self.model is None:
            return planned
        injection = self.model.pick(self.next_id, run.package, len(self.catalog.packages[run.package].spec.outputs),
                                    self.count, self.count not in self.must_succeed)
        if injection is not None and injection.kind == "slow":
            return int(planned * injection.factor)
        return planned

    def _outcome(self, failure_rate: float, queued_at: int, started: int,
                 planned: int) -> tuple[int, int, int, int, int]:
        """(started, stop_requested, stopping_at, ended, final status)."""
        rng = self.rng
        roll = rng.random()
        if self.count in self.must_succeed:
            roll = 1.0
        if roll < failure_rate:
            ended = started + max(5, int(planned * rng.uniform(0.05, 0.95))) + 1
            return started, NO_TIME, NO_TIME, ended, FAILED
        if roll < failure_rate + self.scenario.stop_share:
            if rng.random() < 0.2:   # stopped while still queued: never started
                stop = queued_at + rng.randrange(started - queued_at)
                started = NO_TIME
            else:
                stop = started + int(planned * rng.uniform(0.05, 0.9))
            stopping = stop + rng.randint(1, 5)
            return started, stop, stopping, stopping + rng.randint(3, 40), STOPPED
        return started, NO_TIME, NO_TIME, started + planned, COMPLETED

    def _error(self, final: int, errors: tuple[int, ...]) -> tuple[int, int]:
        """(error index, failed_at_null)."""
        if final == FAILED:
            return self.rng.choice(errors), int(self.rng.random() < 0.08)
        if final == STOPPED and self.rng.random() < 0.4:
            return STOP_ERROR, 0
        return -1, 0

    def _queue_retry(self, plan: JobPlan, run: _Run) -> None:
        if plan.final == FAILED and run.schedule >= 0 and run.attempts < run.max_attempts:
            retry = run._replace(attempts=run.attempts + 1)
            created = plan.ended + self.rng.randint(60, 600)
            self._push(created, created, retry)


def _copy(rng: random.Random) -> random.Random:
    twin = random.Random()
    twin.setstate(rng.getstate())
    return twin


def _anchor(gen: _Generator, last: int | None) -> int:
    """History second of the start clock: just after the last initial job, before the next."""
    if last is None:
        return 0
    return last + min(gen.rng.randint(0, 45), (gen.peek_time() - last) // 2)


class View:
    """Status code and updated_at (history seconds) of every job existing at one clock second."""

    def __init__(self, status: list[int], updated: list[int]) -> None:
        self.status, self.updated = status, updated

    def __len__(self) -> int:
        return len(self.status)

    @cached_property
    def by_updated(self) -> list[int]:
        """Job indices by (updated_at, id); the sort is stable and indices follow ids."""
        return sorted(range(len(self.updated)), key=self.updated.__getitem__)

    @cached_property
    def updated_sorted(self) -> list[int]:
        return [self.updated[i] for i in self.by_updated]


@dataclass(frozen=True)
class ListQuery:
    status: str | None = None        # None: all
    sort: str = "created"            # or "updated"
    direction: str = "desc"          # or "asc"
    since: float | None = None       # Unix time; only jobs updated at or after it
    offset: int = 0
    limit: int = 20
    package_id: int | None = None


class ScheduleRuns(NamedTuple):
    """A schedule's runs (jobs it created, retries included) at one clock second."""
    count: int
    last: int | None          # job index of the latest
    next_run: int             # history second of its next tick (a stopped schedule: the first it missed)


def expected_jobs(days: float, scenario: str = "normal", seed: int = 1) -> int:
    """How many jobs make a history of about `days` days (normal: up to FULL_HISTORY_SPAN)."""
    if not SCENARIOS[scenario].fixed_intervals:
        return max(0, round(days * DAY / BUSIEST_MEAN_GAP))
    chosen = SCENARIOS[scenario]
    catalog = build_catalog(random.Random(seed))
    rate = scheduled_rate(catalog, _intervals(catalog, chosen, BUSIEST_MEAN_GAP))
    return max(0, round(days * DAY * rate / (1 - chosen.manual_share)))


class History:
    """All jobs of the sandbox account, past and future, readable at any clock time.

    Public methods take Unix times (floats) and are thread-safe.
    """

    def __init__(self, jobs: int, seed: int, start: float, scenario: str = "normal") -> None:
        if scenario not in SCENARIOS:
            raise ValueError(f"scenario must be one of {', '.join(SCENARIOS)}")
        rng = random.Random(seed)
        self.catalog = build_catalog(rng)
        self.scenario = SCENARIOS[scenario]
        self.table = JobTable()
        self._latest_end = array("q")   # running maximum of `ended`: jobs before a point are all finished
        self._index: dict[int, int] = {}
        self._touched: dict[int, int] = {}   # job index -> history second it was touched
        self._lock = threading.RLock()
        self._view_key: tuple[int, int, int] | None = None   # (clock second, touch count, regenerations)
        self._touches = self._regenerations = 0
        self._view: View | None = None
        self._package_index = {p.id: i for i, p in enumerate(self.catalog.packages)}
        self._schedule_index = {s.id: i for i, s in enumerate(self.catalog.schedules)}
        self._by_schedule = {s: array("q") for s in range(len(self.catalog.schedules))}   # job indices
        self.mean_gap = mean_gap = min(FULL_HISTORY_SPAN / max(jobs, 1), BUSIEST_MEAN_GAP)
        intervals = _intervals(self.catalog, self.scenario, mean_gap)
        hand_gap = manual_gap(self.scenario, scheduled_rate(self.catalog, intervals), mean_gap)
        must_succeed = range(jobs - KEPT_RUNNING, jobs)

        def generator(stream: random.Random, model: AnomalyModel | None) -> _Generator:
            return _Generator(stream, self.catalog, self.scenario, intervals, hand_gap, must_succeed, model)

        model = None
        if self.scenario.anomalies:
            model = self._anomaly_model(seed, jobs, start, intervals, generator(_copy(rng), None))
        self._gen = generator(rng, model)
        self.cadences: list[Cadence] = self._gen.cadences
        for _ in range(jobs):
            self._append(self._gen.next_plan())
        self.anchor = anchor = _anchor(self._gen, self.table.created[-1] if jobs else None)
        self.offset = math.floor(start) - anchor
        if model is not None:
            self._gen.no_hand_runs_of(self._inject_latest(model, intervals))
        self._keep_last_jobs_running(anchor)
        self._initial = len(self.table)
        self._future = self._gen.copy()   # the generator at the anchor: the future is regenerated from it
        self.breakages: list[Breakage] = []
        self._generated_to = anchor
        self._generate_until(anchor + FUTURE_HORIZON)

    # -- generation -------------------------------------------------------
    def _append(self, plan: JobPlan) -> None:
        self._index[plan.id] = len(self.table)
        if plan.creator_kind == CREATED_BY_SCHEDULE:
            self._by_schedule[plan.creator].append(len(self.table))
        self.table.append(plan)
        previous = self._latest_end[-1] if self._latest_end else plan.ended
        self._latest_end.append(max(previous, plan.ended))

    def _anomaly_model(self, seed: int, jobs: int, start: float, intervals: list[int],
                       probe: _Generator) -> AnomalyModel:
        """The anomaly model, its weekdays those of the start clock's time line.

        The start clock's history second (the anchor) is known only once the first `jobs`
        plans are made, and they need the weekdays. Creation times do not depend on the
        model's weekday factors (failure and stop times ignore them), so a first pass with
        any offset finds the anchor the real one will have.
        """
        probe.model = AnomalyModel(seed, self.catalog, intervals, 0)
        last = None
        for _ in range(jobs):
            last = probe.next_plan().created
        return AnomalyModel(seed, self.catalog, intervals, math.floor(start) - _anchor(probe, last))

    def _inject_latest(self, model: AnomalyModel, intervals: list[int]) -> list[int]:
        """The watched packages' latest completed runs before the start clock (anomalies.py), when
        they have MIN_PRIOR successful runs before them: one zero-record success, one 10x slowdown.
        Returns the watched packages: users run them by hand no more, so that only their schedules
        (which the demo breaks) could make those runs not the latest."""
        watched = watched_packages(self.catalog, intervals, model.flaky)
        for package, kind in zip(watched, LATEST_KINDS):
            completed = [i for i in range(len(self.table))
                         if self.table.package[i] == package and self.table.final[i] == COMPLETED]
            if len(completed) <= MIN_PRIOR or self.table.ids[completed[-1]] in model.injections:
                continue
            index = completed[-1]
            injection = model.inject_latest(self.table.ids[index], kind)
            if injection.kind == "slow":
                plan = self.table[index]
                planned = int(plan.planned_runtime * injection.factor)
                self.table.replace(index, plan._replace(planned_runtime=planned, ended=plan.started + planned))
        return watched

    def injections(self, when: float) -> list[tuple[int, Injection]]:
        """(job index, injection) of the injected jobs existing at `when`, by job id."""
        with self._lock:
            injected = self._gen.model.injections if self._gen.model is not None else {}
            found = [(self.find(job_id, when), injection) for job_id, injection in sorted(injected.items())]
            return [(index, injection) for index, injection in found if index is not None]

    @property
    def flaky_packages(self) -> list[int]:
        """Indices of the packages the anomaly model made flaky."""
        return sorted(self._gen.model.flaky) if self._gen.model is not None else []

    def records(self, plan: JobPlan) -> list[int] | None:
        """Records each output of the job gets from a complete run under the anomaly model
        (None without one: the renderer's own draw)."""
        with self._lock:
            model = self._gen.model
            if model is None:
                return None
            typical = [output.records for output in self.catalog.packages[plan.package].spec.outputs]
            return model.records(plan.seed, plan.package, plan.created, typical, model.injections.get(plan.id))

    def _keep_last_jobs_running(self, anchor: int) -> None:
        """Stretch the last few initial runs so the start clock always has some in flight.

        These runs were generated as successes (no retries hang off them), so
        lengthening them changes nothing else.
        """
        for index in range(max(0, len(self.table) - KEPT_RUNNING), len(self.table)):
            plan = self.table[index]
            if plan.started != NO_TIME and plan.started <= anchor and plan.ended <= anchor:
                ended = anchor + self._gen.rng.randint(120, 1800)
                self.table.replace(index, plan._replace(ended=ended, planned_runtime=ended - plan.started))
        self._latest_end = array("q")
        for ended in self.table.ended:
            self._latest_end.append(max(self._latest_end[-1], ended) if self._latest_end else ended)

    def _generate_until(self, t: int) -> None:
        self._generated_to = max(self._generated_to, t)
        while self._gen.peek_time() <= t:
            self._append(self._gen.next_plan())

    def _regenerate(self) -> None:
        """Generate the future (every job after the anchor) again, under the breakages.

        Each breakage changes only jobs created after its time, which is not
        before the clock, so every job a client could have seen comes back the
        same, at the same index (touches stay valid).
        """
        keep = self._initial
        for job_id in self.table.ids[keep:]:
            del self._index[job_id]
        self.table.truncate(keep)
        del self._latest_end[keep:]
        for runs in self._by_schedule.values():
            del runs[bisect_left(runs, keep):]
        self._gen = self._future.copy()
        self._gen.rules = _Rules(tuple(self.breakages))
        self._regenerations += 1
        self._generate_until(self._generated_to)

    def _at(self, when: float) -> int:
        """History second of a Unix time, with plans generated well past it."""
        t = math.floor(when) - self.offset
        if self._gen.peek_time() <= t + FUTURE_HORIZON // 2:
            self._generate_until(t + FUTURE_HORIZON)
        return t

    # -- reading ------------------------------------------------------------
    def existing_count(self, when: float) -> int:
        with self._lock:
            return bisect_right(self.table.created, self._at(when))

    def job_ids(self, when: float) -> list[int]:
        with self._lock:
            return self.table.ids[:self.existing_count(when)].tolist()

    def find(self, job_id: int, when: float) -> int | None:
        """Index of the job if it exists at that time."""
        with self._lock:
            index = self._index.get(job_id)
            if index is None or self.table.created[index] > self._at(when):
                return None
            return index

    def plan(self, index: int) -> JobPlan:
        with self._lock:
            return self.table[index]

    def state(self, index: int, when: float) -> JobState:
        with self._lock:
            return state_at(self.table[index], self._at(when), self._touched.get(index))

    def touch(self, job_ids, when: float) -> None:
        """Mark jobs changed at `when`. Raises KeyError (and touches none) if one does not exist."""
        with self._lock:
            indices = [self.find(int(job_id), when) for job_id in job_ids]
            missing = [job_id for job_id, index in zip(job_ids, indices) if index is None]
            if missing:
                raise KeyError(f"no such job: {missing}")
            t = self._at(when)
            for index in indices:
                self._touched[index] = t
            self._touches += 1

    def schedule_runs(self, schedule: int, when: float) -> ScheduleRuns:
        """How often a schedule has run by `when`, its latest run and its next tick.

        A stopped schedule keeps showing the first tick it missed, as a
        scheduler that silently stopped would.
        """
        with self._lock:
            t = self._at(when)
            runs = self._by_schedule[schedule]
            count = bisect_left(runs, bisect_right(self.table.created, t))
            stopped = self._gen.rules.stopped.get(schedule, t)
            return ScheduleRuns(count, runs[count - 1] if count else None,
                                self.cadences[schedule].tick_after(min(t, stopped)))

    # -- breakages ----------------------------------------------------------
    def stop_schedule(self, schedule_id: int, at: float | None, now: float) -> Breakage:
        """From `at` (default: now) the schedule's ticks create no runs (retries neither).

        KeyError for an unknown schedule id; ValueError for a time before the clock.
        """
        return self._break("schedule_stopped", self._schedule_index[schedule_id], at, now)

    def fail_package(self, package_id: int, at: float | None, now: float) -> Breakage:
        """Every run of the package created after `at` fails, retries included."""
        return self._break("package_failing", self._package_index[package_id], at, now)

    def stick_package(self, package_id: int, at: float | None, now: float) -> Breakage:
        """The first run of the package created after `at` starts and never ends."""
        return self._break("package_stuck", self._package_index[package_id], at, now)

    def _break(self, kind: str, target: int, at: float | None, now: float) -> Breakage:
        with self._lock:
            clock = self._at(now)
            start = clock if at is None else math.floor(at) - self.offset
            if start < clock:
                raise ValueError("a breakage cannot start before the sandbox clock")
            breakage = Breakage(kind, target, start)
            self.breakages.append(breakage)
            self._regenerate()
            return breakage

    def stuck_job(self, number: int) -> int | None:
        """Index of the job breakage `number` made stuck, if generated yet."""
        with self._lock:
            job_id = self._gen.rules.stuck.get(number)
            return None if job_id is None else self._index[job_id]

    def jobs_after(self, package: int, t: int, when: float) -> list[int]:
        """Indices of the package's jobs created after history second t and by `when`."""
        with self._lock:
            first, existing = bisect_right(self.table.created, t), self.existing_count(when)
            return [i for i in range(first, existing) if self.table.package[i] == package]

    def in_flight(self, when: float) -> list[tuple[int, int]]:
        """(cluster index, status code) of every job not finished at `when`."""
        with self._lock:
            view = self.view(when)
            settled = min(bisect_right(self._latest_end, self._at(when)), len(view))
            return [(self.table.cluster[i], view.status[i]) for i in range(settled, len(view))
                    if view.status[i] not in TERMINAL]

    def view(self, when: float) -> View:
        with self._lock:
            t = self._at(when)
            key = (t, self._touches, self._regenerations)
            if key != self._view_key or self._view is None:
                self._view, self._view_key = self._build_view(t), key
            return self._view

    def _build_view(self, t: int) -> View:
        existing = bisect_right(self.table.created, t)
        settled = min(bisect_right(self._latest_end, t), existing)
        status = self.table.final[:settled].tolist()
        updated = self.table.ended[:settled].tolist()
        for index in range(settled, existing):
            code, entered = phase_at(self.table[index], t)
            status.append(code)
            updated.append(entered)
        for index, touched in self._touched.items():
            if index < existing and touched > updated[index]:
                updated[index] = touched
        return View(status, updated)

    # -- listing ------------------------------------------------------------
    def select(self, query: ListQuery, when: float) -> tuple[list[int], bool]:
        """One page of job indices for List jobs, and whether more follow."""
        view = self.view(when)
        since = None if query.since is None else math.ceil(query.since) - self.offset
        keep = self._filter(view, query, since)
        ordered = self._ordered(view, query, since)
        page = list(islice(filter(keep, ordered) if keep else ordered,
                           query.offset, query.offset + query.limit + 1))
        return page[:query.limit], len(page) > query.limit

    def _ordered(self, view: View, query: ListQuery, since: int | None) -> Iterator[int]:
        if query.sort == "created":
            indices = range(len(view))
            return iter(indices) if query.direction == "asc" else reversed(indices)
        first = 0 if since is None else bisect_left(view.updated_sorted, since)
        positions = range(first, len(view))
        if query.direction == "desc":
            positions = reversed(positions)
        return map(view.by_updated.__getitem__, positions)

    def _filter(self, view: View, query: ListQuery, since: int | None):
        """A predicate on job indices, or None when every job qualifies."""
        tests = []
        if query.status is not None:
            code = STATUSES.index(query.status)
            tests.append(lambda i: view.status[i] == code)
        if query.package_id is not None:
            package = self._package_index.get(query.package_id, -1)
            tests.append(lambda i: self.table.package[i] == package)
        if since is not None and query.sort == "created":   # sort=updated starts at `since` instead
            tests.append(lambda i: view.updated[i] >= since)
        if not tests:
            return None
        if len(tests) == 1:
            return tests[0]
        return lambda i: all(test(i) for test in tests)
