"""Pipeline health from the archive alone: which schedules are late, stale, failing or stuck.

`evaluate(engine, config, now)` reads the newest few jobs of each schedule's package and of
each package run by hand, by index (flows/per_key.py), and judges each enabled schedule and
each package run by hand (see docs/health.md for every rule and default). Only the end
times of successes are read over whole histories: no index holds ended_at.

Rules that judge an *absence* (late, stale) and the stuck rule judge the archive as of the
start of the last successful incremental sync: the archive is only known to be complete up to
then. A stopped archiver therefore yields one sync_stale alert, not a flood of late schedules.
"""

from __future__ import annotations

import dataclasses
import statistics
from collections import defaultdict
from collections.abc import Iterator
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import Connection, Engine, func, select

from archiver import anomaly
from archiver.dialect import distinct_keys, report_session, with_status
from archiver.flows.anomaly_checks import AnomalyFacts, anomaly_findings, read_anomaly_facts
from archiver.flows.board import Alert
from archiver.flows.checkconfig import (GRACE_SHARE, HAND_MIN_SUCCESSES, MIN_GRACE, MIN_STUCK, SYNC_FAILING_RUNS,
                                        CheckConfig)
from archiver.flows.per_key import latest_of_each, newest
from archiver.flows.report import percentile
from archiver.flows.schedule_time import Interval
from archiver.models import JobRow, PackageRow, SchedulePackageRow, ScheduleRow, SyncRunRow
from archiver.textsafe import safe_text

jobs = JobRow.__table__
schedules = ScheduleRow.__table__
schedule_packages = SchedulePackageRow.__table__
packages = PackageRow.__table__
sync_runs = SyncRunRow.__table__

STATE_ORDER = ("failing", "stale", "late", "stuck", "anomalous")   # a subject with several alerts shows the first
ANOMALOUS = "anomalous"         # the state of a subject whose only alerts are slow, zero_records, volume_drop, flaky
FINISHED = ("completed", "failed")                   # `stopped` is a person's decision: neither
OPEN = ("idle", "pending", "queued", "running", "pending_stoppage", "stopping")
STUCK_STATUSES = ("running", "queued")
MAX_RETRIES = 5                 # auto_retry_attempts is 1..5: a run is at most 6 jobs
RUNTIME_SAMPLE = 200            # recent finished jobs a percentile is taken over
GAP_SAMPLE = 51                 # recent successes the median gap is taken over


# -- what the board holds ---------------------------------------------------------------------------
@dataclasses.dataclass
class Subject:
    type: str            # schedule, package or archiver
    id: int | None
    name: str
    state: str           # ok, late, stale, failing, stuck, anomalous, disabled, unknown
                         # (archiver: ok, sync_stale, sync_failing)
    why: str
    alerts: list[Alert] = dataclasses.field(default_factory=list)

    @property
    def label(self) -> str:
        return self.type if self.id is None else f"{self.type}:{self.id}"

    def as_dict(self) -> dict[str, Any]:
        return {"subject": self.label, "type": self.type, "id": self.id, "name": self.name, "state": self.state,
                "why": self.why, "alerts": [a.key for a in self.alerts],
                "silenced": [a.key for a in self.alerts if a.silenced_until is not None]}


@dataclasses.dataclass
class Board:
    checked_at: datetime
    as_of: datetime                  # the archive is judged complete up to here
    alerts: list[Alert]
    subjects: list[Subject]
    package_names: dict[int, str | None] = dataclasses.field(default_factory=dict)   # for alerts of no subject


# -- the facts, read by index, a few rows a key ---------------------------------------------------------
BY_SCHEDULE = jobs.c.creator_type == "Schedule"
COMPLETED = jobs.c.status == "completed"
KEY = [jobs.c.creator_type, jobs.c.creator_id, jobs.c.package_id]   # ix_jobs_creator_type_creator_id_package_id_*
SCHEDULE_KEY = KEY[1:]                                               # under BY_SCHEDULE
NEWEST_FIRST = [jobs.c.created_at.desc(), jobs.c.id.desc()]


@dataclasses.dataclass
class Stats:
    """A schedule's (or a package's hand runs') history in a few values."""
    first_job: datetime | None = None
    last_run: datetime | None = None        # the newest first attempt (schedules)
    last_success: datetime | None = None
    successes: int = 0                      # (packages run by hand)


@dataclasses.dataclass
class Facts:
    schedules: list
    schedule_packages: dict[int, list[int]]
    schedule_stats: dict[int, Stats]
    schedule_keys: list[tuple]
    schedule_jobs: dict[int, dict[int | None, list]]
    hand_stats: dict[int, Stats]
    hand_finished: dict[int, list]
    hand_successes: dict[int, list[datetime]]
    package_names: dict[int, str | None]
    open_jobs: list
    last_ok_sync: datetime | None
    last_syncs: list
    schedule_runtimes: dict[int, list[float]] = dataclasses.field(default_factory=dict)   # read_runtimes
    package_runtimes: dict[int, list[float]] = dataclasses.field(default_factory=dict)


def read_facts(conn: Connection, config: CheckConfig) -> Facts:
    open_jobs = conn.execute(with_status(select(jobs.c.id, jobs.c.package_id, jobs.c.creator_type, jobs.c.creator_id,
                                                jobs.c.status, jobs.c.created_at, jobs.c.started_at),
                                         jobs.c.status, OPEN)).all()
    known = conn.execute(select(schedules).order_by(schedules.c.id)).all()
    keys = distinct_keys(conn, KEY)
    by_schedule = judged_keys(keys, known)
    scheduled = _schedule_packages(conn)
    hand = hand_keys(keys, scheduled)
    hand_successes = _hand_successes(conn, hand)
    return Facts(
        schedules=known,
        schedule_packages=scheduled,
        schedule_stats=_schedule_stats(conn, by_schedule),
        schedule_keys=by_schedule,
        schedule_jobs=_schedule_jobs(conn, by_schedule,
                                     config.most_failing_runs() * (MAX_RETRIES + 1) + MAX_RETRIES + 1),
        hand_stats=_hand_stats(conn, hand, hand_successes),
        hand_finished=_hand_finished(conn, hand, config.most_failing_runs()),
        hand_successes=hand_successes,
        package_names=dict(conn.execute(select(packages.c.id, packages.c.name)).all()),
        open_jobs=open_jobs,
        last_ok_sync=conn.execute(select(func.max(sync_runs.c.started_at)).where(
            sync_runs.c.mode == "incremental", sync_runs.c.outcome == "ok")).scalar(),
        last_syncs=conn.execute(select(sync_runs.c.started_at, sync_runs.c.outcome, sync_runs.c.mode)
                                .where(sync_runs.c.outcome != "running", sync_runs.c.mode != "ingest")
                                .order_by(sync_runs.c.started_at.desc(), sync_runs.c.id.desc())
                                .limit(SYNC_FAILING_RUNS)).all(),
    )


def read_runtimes(conn: Connection, facts: Facts, config: CheckConfig, as_of: datetime, disabled: set[int]) -> None:
    """The recent runtimes of the schedules and packages whose verdict a percentile can change:
    a schedule whose last success is two intervals old (stale_alert's p95), a package with a job
    open longer than MIN_STUCK (stuck_limit's p99). The others' verdicts are the same without
    them, and reading them all was a tenth of the board (200 rows a key)."""
    timed = {s.id for s in facts.schedules if needs_p95(s, facts, config, as_of)}
    facts.schedule_runtimes = _runtimes(conn, SCHEDULE_KEY, [k for k in facts.schedule_keys if k[0] in timed],
                                        [BY_SCHEDULE])
    packages = sorted({job.package_id for job, schedule_id, began in stuck_candidates(facts, disabled)
                       if job.package_id is not None and needs_p99(job, schedule_id, began, config, as_of)})
    facts.package_runtimes = _runtimes(conn, [jobs.c.package_id], [(p,) for p in packages], [])


def needs_p99(job, schedule_id: int | None, began: datetime, config: CheckConfig, as_of: datetime) -> bool:
    """Whether stuck_alerts' verdict on an open job depends on its package's p99 runtime: only
    once it has been open MIN_STUCK, the least limit."""
    return as_of - began >= MIN_STUCK and config.value("stuck_after", schedule_id, job.package_id) is None


def judged_keys(keys: list[tuple], known: list) -> list[tuple]:
    """The (schedule, package) keys of the enabled schedules: only they are judged on their history."""
    enabled = {s.id for s in known if s.status == "enabled"}
    return [key[1:] for key in keys if key[0] == "Schedule" and key[1] in enabled]


def hand_keys(keys: list[tuple], scheduled: dict[int, list[int]]) -> list[tuple]:
    """The keys of jobs no schedule created, of packages no schedule's task runs."""
    tasks = {p for ids in scheduled.values() for p in ids}
    return [key for key in keys if key[0] != "Schedule" and key[2] is not None and key[2] not in tasks]


def by_time(row) -> tuple:
    """Newest last, ties by id; a job without created_at is the oldest (as in SQLite's and MySQL's ORDER BY)."""
    return row.created_at is not None, row.created_at or datetime.min, row.id


def _schedule_packages(conn: Connection) -> dict[int, list[int]]:
    found: dict[int, list[int]] = defaultdict(list)
    for row in conn.execute(select(schedule_packages.c.schedule_id, schedule_packages.c.package_id)
                            .order_by(schedule_packages.c.schedule_id, schedule_packages.c.position)):
        if row.package_id is not None:
            found[row.schedule_id].append(row.package_id)
    return found


def _schedule_stats(conn: Connection, keys: list[tuple]) -> dict[int, Stats]:
    """first_job and last_run by one descent a (schedule, package), last_success by a pass."""
    found: dict[int, Stats] = defaultdict(Stats)
    dated = [BY_SCHEDULE, jobs.c.created_at.is_not(None)]
    first_attempt = func.coalesce(jobs.c.attempts, 0) == 0
    for row in newest(conn, [jobs.c.creator_id, jobs.c.created_at], SCHEDULE_KEY, keys, dated,
                      [jobs.c.created_at], 1):
        stats = found[row.creator_id]
        stats.first_job = min(filter(None, (stats.first_job, row.created_at)))
    for row in newest(conn, [jobs.c.creator_id, jobs.c.created_at], SCHEDULE_KEY, keys, [*dated, first_attempt],
                      [jobs.c.created_at.desc()], 1):
        stats = found[row.creator_id]
        stats.last_run = max(filter(None, (stats.last_run, row.created_at)))
    for schedule_id, successes in _newest_successes(conn, SCHEDULE_KEY, keys, [BY_SCHEDULE], 1).items():
        stats = found[schedule_id]
        stats.last_success = max(filter(None, (stats.last_success, *successes)), default=None)
    return dict(found)


def _newest_successes(conn: Connection, key_columns: list, keys: list[tuple], where: list,
                      limit: int) -> dict[Any, list[datetime | None]]:
    """When the `limit` latest successes of each key ended (COALESCE(ended_at, created_at)),
    latest first, per owner (the first key column): one descent of the (key, status, ended_at)
    index a key, and one for the rare successes without ended_at (their created_at counts)."""
    owner = key_columns[0].label("owner")
    ended = newest(conn, [owner, jobs.c.ended_at.label("at")], key_columns, keys,
                   [*where, COMPLETED, jobs.c.ended_at.is_not(None)], [jobs.c.ended_at.desc()], limit)
    unended = newest(conn, [owner, jobs.c.created_at.label("at")], key_columns, keys,
                     [*where, COMPLETED, jobs.c.ended_at.is_(None)], [jobs.c.created_at.desc()], limit)
    latest = latest_of_each(ended + unended, lambda r: r.owner, lambda r: (r.at is not None, r.at or datetime.min),
                            limit)
    return {k: [r.at for r in reversed(v)] for k, v in latest.items()}


def _runtimes(conn: Connection, key_columns: list, keys: list[tuple], where: list) -> dict[int, list[float]]:
    """The runtimes of the newest RUNTIME_SAMPLE completed jobs of each owner (the first key column)."""
    owner = key_columns[0]
    rows = newest(conn, [owner.label("owner"), jobs.c.id, jobs.c.created_at, jobs.c.runtime_in_seconds],
                  key_columns, keys, [*where, COMPLETED, jobs.c.runtime_in_seconds.is_not(None)],
                  NEWEST_FIRST, RUNTIME_SAMPLE)
    return {k: [float(r.runtime_in_seconds) for r in v]
            for k, v in latest_of_each(rows, lambda r: r.owner, by_time, RUNTIME_SAMPLE).items()}


def _schedule_jobs(conn: Connection, keys: list[tuple], limit: int) -> dict[int, dict[int | None, list]]:
    rows = newest(conn, [jobs.c.id, jobs.c.creator_id, jobs.c.package_id, jobs.c.status, jobs.c.attempts,
                         jobs.c.created_at], SCHEDULE_KEY, keys, [BY_SCHEDULE], NEWEST_FIRST, limit)
    found: dict[int, dict[int | None, list]] = defaultdict(lambda: defaultdict(list))
    for row in sorted(rows, key=by_time):
        found[row.creator_id][row.package_id].append(row)
    return found


def _hand_successes(conn: Connection, keys: list[tuple]) -> dict[int, list[datetime]]:
    """The end times of each package's newest GAP_SAMPLE successes by hand, oldest first."""
    packages_first = [KEY[2], KEY[0], KEY[1]]
    reordered = [(key[2], key[0], key[1]) for key in keys]
    return {k: v[::-1] for k, v in _newest_successes(conn, packages_first, reordered, [], GAP_SAMPLE).items()}


def _hand_stats(conn: Connection, keys: list[tuple], successes: dict[int, list[datetime]]) -> dict[int, Stats]:
    """first_job, last_success, and successes counted up to HAND_MIN_SUCCESSES a key: the board
    asks only whether a package has that many, and shows the number only below it (counting a
    package's whole history was a sixth of the board on PostgreSQL at a million jobs)."""
    found = {key[2]: Stats() for key in keys}
    for row in newest(conn, [jobs.c.package_id, jobs.c.created_at], KEY, keys, [jobs.c.created_at.is_not(None)],
                      [jobs.c.created_at], 1):
        stats = found[row.package_id]
        stats.first_job = min(filter(None, (stats.first_job, row.created_at)))
    for row in newest(conn, [jobs.c.package_id], KEY, keys, [COMPLETED], [jobs.c.created_at.desc()],
                      HAND_MIN_SUCCESSES):
        found[row.package_id].successes += 1
    for package_id, ends in successes.items():
        found[package_id].last_success = max(filter(None, ends), default=None)
    return found


def _hand_finished(conn: Connection, keys: list[tuple], limit: int) -> dict[int, list]:
    """Each package's newest `limit` finished jobs by hand, oldest first."""
    rows = newest(conn, [jobs.c.package_id, jobs.c.id, jobs.c.status, jobs.c.created_at], KEY, keys,
                  [jobs.c.status.in_(FINISHED)], NEWEST_FIRST, limit)
    return latest_of_each(rows, lambda r: r.package_id, by_time, limit)


# -- words --------------------------------------------------------------------------------------------
def plural(count: int, one: str, many: str) -> str:
    return f"{count} {one if count == 1 else many}"


def when(moment: datetime | None) -> str:
    return moment.strftime("%Y-%m-%d %H:%M UTC") if moment else "never"


def span(delta: timedelta) -> str:
    minutes = int(delta.total_seconds() // 60)
    days, minutes = divmod(minutes, 1440)
    hours, minutes = divmod(minutes, 60)
    parts = [f"{days}d" if days else "", f"{hours}h" if hours else "", f"{minutes}m" if minutes or not (days or hours) else ""]
    return "".join(parts)


# -- the archiver itself ---------------------------------------------------------------------------------
def judge_archiver(facts: Facts, config: CheckConfig, now: datetime) -> Subject:
    alerts = []
    last_ok = facts.last_ok_sync
    if last_ok is None or now - last_ok >= config.sync_stale_after:
        message = ("no successful incremental sync recorded" if last_ok is None else
                   f"last successful incremental sync started {when(last_ok)}, {span(now - last_ok)} ago "
                   f"(threshold {span(config.sync_stale_after)}); late and stale are judged as of then")
        alerts.append(Alert("sync_stale", "sync_stale", config.severity("sync_stale"), message, since=last_ok))
    runs = facts.last_syncs
    if len(runs) == SYNC_FAILING_RUNS and all(r.outcome != "ok" for r in runs):
        outcomes = ", ".join(f"{r.mode} {r.outcome}" for r in runs)
        alerts.append(Alert("sync_failing", "sync_failing", config.severity("sync_failing"),
                            f"the last {SYNC_FAILING_RUNS} sync runs did not end ok: {outcomes}",
                            since=runs[-1].started_at))
    why = "; ".join(a.message for a in alerts) or f"last successful incremental sync started {when(last_ok)}"
    return Subject("archiver", None, "archiver", alerts[0].kind if alerts else "ok", why, alerts)


# -- schedules --------------------------------------------------------------------------------------------
def grace_of(config: CheckConfig, schedule_id: int, interval: Interval, moment: datetime) -> timedelta:
    configured = config.value("grace", schedule_id)
    return configured if configured is not None else max(interval.length_at(moment) * GRACE_SHARE, MIN_GRACE)


def expected_run(s, interval: Interval, last_run: datetime | None, grace: timedelta) -> datetime | None:
    """When the schedule's next run should have been created, from the latest evidence of a run.

    The stored next_run_at/last_run_at may be stale (the incremental read only refreshes a
    schedule when its updated_at moves), so the evidence is the newest first-attempt job or
    the stored last_run_at, whichever is later, and the next run is the next slot of
    start_at + k × interval after it. The stored next_run_at counts only when it lies after
    the evidence (it then reflects an edit of the schedule, or is simply up to date)."""
    evidence = max([t for t in (last_run, s.last_run_at) if t is not None], default=None)
    if evidence is None:
        if s.next_run_at is not None:
            return s.next_run_at
        start = s.start_at
        return interval.first_at_or_after(start, max(start, s.created_at or start)) if start else None
    slack = min(grace, interval.length_at(evidence) / 2)   # a run created a little before its slot
    if s.next_run_at is not None and s.next_run_at > evidence + slack:
        return s.next_run_at
    if s.start_at is None:
        return interval.add(evidence)
    if evidence + slack < s.start_at:
        return s.start_at
    return interval.add(s.start_at, interval.slots_before(s.start_at, evidence + slack) + 1)


def late_alert(s, interval: Interval, facts: Facts, config: CheckConfig, as_of: datetime,
               busy: bool) -> tuple[Alert | None, str]:
    stats = facts.schedule_stats.get(s.id)
    last_run = stats.last_run if stats else None
    grace = grace_of(config, s.id, interval, last_run or s.start_at or as_of)
    expected = expected_run(s, interval, last_run, grace)
    if expected is None:
        return None, "no run time known (no start_at, next_run_at or run)"
    if as_of < expected + grace:
        return None, f"next run expected {when(expected)}"
    if busy and s.overlap is False:
        return None, f"run due {when(expected)} waits: the previous run is still open and overlap is off"
    message = (f"expected a run at {when(expected)} ({interval.text()}); none created by {when(as_of)}, "
               f"{span(as_of - expected)} late (grace {span(grace)})")
    return Alert(f"late:schedule:{s.id}", "late", config.severity("late", s.id), message, since=expected,
                 schedule_id=s.id), ""


def stale_since(s, facts: Facts) -> tuple[datetime | None, datetime | None]:
    """(last success, when staleness is counted from)."""
    stats = facts.schedule_stats.get(s.id)
    last_success = stats.last_success if stats else None
    return last_success, last_success or s.start_at or s.created_at or (stats.first_job if stats else None)


def needs_p95(s, facts: Facts, config: CheckConfig, as_of: datetime) -> bool:
    """Whether stale_alert's verdict on an enabled schedule depends on its p95 runtime: only
    from two intervals after `began` on, as the due time is at least that."""
    if s.status != "enabled" or config.value("stale_after", s.id) is not None:
        return False
    interval = Interval.of(s.interval_amount, s.interval_unit)
    began = stale_since(s, facts)[1]
    return interval is not None and began is not None and as_of >= interval.add(began, 2)


def stale_alert(s, interval: Interval, facts: Facts, config: CheckConfig, as_of: datetime) -> tuple[Alert | None, str]:
    last_success, began = stale_since(s, facts)
    if began is None:
        return None, "no run yet"
    configured = config.value("stale_after", s.id)
    if configured is not None:
        due, rule = began + configured, f"stale_after {span(configured)}"
    else:
        p95 = percentile(facts.schedule_runtimes.get(s.id, []), 95) or 0
        due = max(interval.add(began, 2), interval.add(began) + timedelta(seconds=p95))
        rule = f"2 intervals or interval + p95 runtime {span(timedelta(seconds=p95))}"
    success = f"last success {when(last_success)}" if last_success else f"no success since {when(began)}"
    if as_of < due:
        return None, success
    return Alert(f"stale:schedule:{s.id}", "stale", config.severity("stale", s.id),
                 f"{success}: older than {span(due - began)} ({rule})", since=last_success or began,
                 schedule_id=s.id), success


def chains(runs: list) -> list[list]:
    """A schedule's jobs of one package as runs: a first attempt and the retries after it."""
    found: list[list] = []
    for job in runs:
        if (job.attempts or 0) == 0 or not found:
            found.append([job])
        else:
            found[-1].append(job)
    return found


def failing_finding(s, package_id: int | None, runs: list, config: CheckConfig) -> tuple[str, datetime] | None:
    """Why the schedule's runs of this package are failing (with when it began), or None."""
    every = chains(runs)
    latest = every[-1][-1] if every else None
    allowed = s.auto_retry_attempts or 0
    if latest is not None and latest.status == "failed" and s.auto_retry and allowed and (latest.attempts or 0) >= allowed:
        return (f"retries exhausted: the run of {when(every[-1][0].created_at)} failed on attempt "
                f"{(latest.attempts or 0) + 1} of {allowed + 1} (job {latest.id})", every[-1][0].created_at)
    needed = config.failing_runs(s.id, package_id)
    finished = [c for c in every if c[-1].status in FINISHED][-needed:]
    if len(finished) == needed and all(c[-1].status == "failed" for c in finished):
        return (f"the last {needed} runs failed (latest job {finished[-1][-1].id})", finished[0][0].created_at)
    return None


def failing_alert(s, facts: Facts, config: CheckConfig) -> Alert | None:
    for package_id, runs in sorted(facts.schedule_jobs.get(s.id, {}).items(), key=lambda kv: kv[0] or 0):
        found = failing_finding(s, package_id, runs, config)
        if found:
            name = facts.package_names.get(package_id) or f"package {package_id}"
            return Alert(f"failing:schedule:{s.id}", "failing", config.severity("failing", s.id, package_id),
                         f"{name}: {found[0]}", since=found[1], schedule_id=s.id, package_id=package_id)
    return None


def judge_schedule(s, facts: Facts, config: CheckConfig, as_of: datetime, stuck: list[Alert],
                   busy: bool, anomalies: list[Alert]) -> Subject:
    name = s.name or f"schedule {s.id}"
    if s.status != "enabled":
        state = "disabled" if s.status == "disabled" else "unknown"
        return Subject("schedule", s.id, name, state, f"status {s.status or 'unknown'}: not judged")
    interval = Interval.of(s.interval_amount, s.interval_unit)
    if interval is None:
        return Subject("schedule", s.id, name, "unknown", "no usable interval (interval_amount, interval_unit)",
                       stuck + anomalies)
    late, late_why = late_alert(s, interval, facts, config, as_of, busy)
    stale, stale_why = stale_alert(s, interval, facts, config, as_of)
    alerts = [a for a in (failing_alert(s, facts, config), stale, late) if a] + stuck + anomalies
    return finish("schedule", s.id, name, alerts, f"{interval.text()}; {stale_why}; {late_why}")


def state_of(alert: Alert) -> str:
    return ANOMALOUS if alert.kind in anomaly.KINDS else alert.kind


def finish(kind: str, ident: int, name: str, alerts: list[Alert], fine: str) -> Subject:
    alerts.sort(key=lambda a: STATE_ORDER.index(state_of(a)))
    if not alerts:
        return Subject(kind, ident, name, "ok", fine)
    return Subject(kind, ident, name, state_of(alerts[0]), "; ".join(summary(alerts)), alerts)


def summary(alerts: list[Alert], most_stuck: int = 2) -> list[str]:
    """The messages of a subject's alerts, with many stuck jobs told as a count and the oldest."""
    stuck = sorted((a for a in alerts if a.kind == "stuck"), key=lambda a: a.since)
    said = [a.message for a in alerts if a.kind != "stuck"]
    if len(stuck) <= most_stuck:
        return said + [a.message for a in stuck]
    return said + [f"{len(stuck)} jobs stuck, the oldest: {stuck[0].message}"]


# -- packages run by hand -----------------------------------------------------------------------
def hand_stale_alert(package_id: int, facts: Facts, config: CheckConfig, as_of: datetime) -> tuple[Alert | None, str | None]:
    """None, None when there is too little history (and no threshold given) to judge."""
    stats = facts.hand_stats[package_id]
    configured = config.value("stale_after", None, package_id)
    successes = facts.hand_successes.get(package_id, [])
    if configured is not None:
        limit, rule = configured, f"stale_after {span(configured)}"
    elif stats.successes >= HAND_MIN_SUCCESSES and len(successes) >= 2:
        gaps = [b - a for a, b in zip(successes, successes[1:])]
        limit = 2 * statistics.median(gaps)
        rule = f"2 × median gap between successes {span(limit / 2)}"
    else:
        return None, None
    began = stats.last_success or stats.first_job
    success = f"last success {when(stats.last_success)}" if stats.last_success else f"no success since {when(began)}"
    if as_of < began + limit:
        return None, success
    return Alert(f"stale:package:{package_id}", "stale", config.severity("stale", None, package_id),
                 f"{success}: older than {span(limit)} ({rule})", since=began, package_id=package_id), success


def hand_failing_alert(package_id: int, facts: Facts, config: CheckConfig) -> Alert | None:
    needed = config.failing_runs(None, package_id)
    finished = facts.hand_finished.get(package_id, [])[-needed:]
    if len(finished) < needed or any(r.status != "failed" for r in finished):
        return None
    return Alert(f"failing:package:{package_id}", "failing", config.severity("failing", None, package_id),
                 f"the last {needed} runs failed", since=finished[0].created_at, package_id=package_id)


def judge_package(package_id: int, facts: Facts, config: CheckConfig, as_of: datetime,
                  stuck: list[Alert], anomalies: list[Alert]) -> Subject:
    name = facts.package_names.get(package_id) or f"package {package_id}"
    stale, stale_why = hand_stale_alert(package_id, facts, config, as_of)
    alerts = [a for a in (hand_failing_alert(package_id, facts, config), stale) if a] + stuck + anomalies
    if not alerts and stale_why is None:
        stats = facts.hand_stats[package_id]
        return Subject("package", package_id, name, "unknown",
                       f"run by hand; {plural(stats.successes, 'success', 'successes')}, too few "
                       f"(< {HAND_MIN_SUCCESSES}) to judge "
                       "staleness: set stale_after for it")
    return finish("package", package_id, name, alerts, f"run by hand; {stale_why}")


# -- stuck jobs ---------------------------------------------------------------------------------------
def stuck_candidates(facts: Facts, disabled: set[int]) -> Iterator[tuple[Any, int | None, datetime]]:
    """(job, its schedule, since when) of each running or queued job not of a disabled schedule."""
    for job in facts.open_jobs:
        schedule_id = job.creator_id if job.creator_type == "Schedule" else None
        if job.status not in STUCK_STATUSES or schedule_id in disabled:
            continue
        began = (job.started_at if job.status == "running" else None) or job.created_at
        if began is not None:
            yield job, schedule_id, began


def stuck_alerts(facts: Facts, config: CheckConfig, as_of: datetime, disabled: set[int]) -> list[Alert]:
    found = []
    for job, schedule_id, began in stuck_candidates(facts, disabled):
        limit = stuck_limit(facts, config, schedule_id, job.package_id)
        if as_of - began < limit:
            continue
        found.append(Alert(f"stuck:job:{job.id}", "stuck", config.severity("stuck", schedule_id, job.package_id),
                           f"job {job.id} {job.status} since {when(began)}, {span(as_of - began)} "
                           f"(limit {span(limit)})", since=began, schedule_id=schedule_id,
                           package_id=job.package_id, job_id=job.id))
    return found


def stuck_limit(facts: Facts, config: CheckConfig, schedule_id: int | None, package_id: int | None) -> timedelta:
    configured = config.value("stuck_after", schedule_id, package_id)
    if configured is not None:
        return configured
    p99 = percentile(facts.package_runtimes.get(package_id, []), 99) or 0
    return max(2 * timedelta(seconds=p99), MIN_STUCK)


# -- the board ------------------------------------------------------------------------------------------
def judged_as_of(facts: Facts, now: datetime) -> datetime:
    """The start of the last successful incremental sync (the archive is complete up to then), else now."""
    return min(facts.last_ok_sync, now) if facts.last_ok_sync else now


def evaluate(engine: Engine, config: CheckConfig, now: datetime) -> Board:
    with engine.connect() as conn:
        report_session(conn)
        facts = read_facts(conn, config)
        as_of = judged_as_of(facts, now)
        disabled = {s.id for s in facts.schedules if s.status != "enabled"}
        read_runtimes(conn, facts, config, as_of, disabled)
        anomaly_facts = read_anomaly_facts(conn, facts.open_jobs, as_of, config)
    stuck = stuck_alerts(facts, config, as_of, disabled)
    anomalies = anomaly_alerts(anomaly_facts, facts, config, as_of, disabled)
    busy = {j.creator_id for j in facts.open_jobs if j.creator_type == "Schedule"}
    subjects = [judge_archiver(facts, config, now)]
    subjects += [judge_schedule(s, facts, config, as_of, of_schedule(stuck, s.id), s.id in busy,
                                of_schedule(anomalies, s.id)) for s in facts.schedules]
    subjects += [judge_package(p, facts, config, as_of, of_hand_package(stuck, p), of_hand_package(anomalies, p))
                 for p in sorted(facts.hand_stats)]
    alerts = [a for s in subjects for a in s.alerts]
    known = {s.id for s in facts.schedules}
    alerts += [a for a in stuck if a.schedule_id is not None and a.schedule_id not in known]
    shown = {id(a) for a in alerts}
    alerts += [a for a in anomalies if id(a) not in shown]   # e.g. a hand run of a scheduled package
    return Board(now, as_of, alerts, subjects, facts.package_names)


def of_schedule(alerts: list[Alert], schedule_id: int) -> list[Alert]:
    return [a for a in alerts if a.schedule_id == schedule_id]


def of_hand_package(alerts: list[Alert], package_id: int) -> list[Alert]:
    return [a for a in alerts if a.schedule_id is None and a.package_id == package_id]


def anomaly_alerts(anomaly_facts: AnomalyFacts, facts: Facts, config: CheckConfig, as_of: datetime,
                   disabled: set[int]) -> list[Alert]:
    """slow, zero_records, volume_drop and flaky (flows/anomaly_checks.py says when each is open)."""
    return anomaly_findings(anomaly_facts, facts.open_jobs, config, as_of, disabled)


def board_table(board: Board) -> str:
    """The board for a terminal: one line per subject (state, subject, name, why), API text escaped."""
    rows = [("STATE", "SUBJECT", "NAME", "WHY")]
    for s in board.subjects:
        silenced = [a for a in s.alerts if a.silenced_until is not None]
        mark = f" (silenced until {when(min(a.silenced_until for a in silenced))})" if silenced else ""
        rows.append((s.state + ("*" if silenced else ""), s.label, safe_text(s.name)[:40], safe_text(s.why) + mark))
    orphans = [a for a in board.alerts if not any(a in s.alerts for s in board.subjects)]
    rows += [(a.kind, ":".join(a.key.split(":")[1:3]), safe_text(board.package_names.get(a.package_id) or "")[:40],
              safe_text(a.message)) for a in orphans]
    widths = [max(len(r[i]) for r in rows) for i in range(3)]
    lines = ["  ".join(c.ljust(w) for c, w in zip(r[:3], widths)) + "  " + r[3] for r in rows]
    lines.append(f"checked {when(board.checked_at)}; absences judged as of {when(board.as_of)}")
    return "\n".join(line.rstrip() for line in lines)
