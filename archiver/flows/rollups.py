"""Sums over any period, read from the daily rollups every write keeps (archiver.store:
refresh_rollup, refresh_schedule_runs): whole UTC days from daily_package_rollup,
daily_output_rollup, daily_error_rollup or daily_schedule_rollup, the partial days at the
period's ends from the rows they count (jobs, outputs, scheduled runs), with the same
definitions. A year of a million jobs is then tens of thousands of rollup rows and at most two
partial days of rows."""

from __future__ import annotations

import dataclasses
from collections import defaultdict
from datetime import date, datetime, time, timedelta, timezone
from typing import Any

from sqlalchemy import BigInteger, Connection, Table, Text, and_, case, column, func, or_, select, table
from sqlalchemy.sql import ColumnElement, FromClause

from archiver import models
from archiver.fields import TERMINAL_STATUSES

jobs = models.JobRow.__table__
outputs = models.JobOutputRow.__table__
package_rollup = models.DailyPackageRollupRow.__table__
output_rollup = models.DailyOutputRollupRow.__table__
error_rollup = models.DailyErrorRollupRow.__table__
schedule_rollup = models.DailyScheduleRollupRow.__table__
schedule_runs = models.ScheduleRunRow.__table__
packages = table("packages", column("id", BigInteger), column("name", Text))

IS_TERMINAL = jobs.c.status.in_(sorted(TERMINAL_STATUSES))


def _flag(condition) -> ColumnElement:
    return case((condition, 1), else_=0)


@dataclasses.dataclass(frozen=True)
class Source:
    """A rollup and the rows it counts (jobs, or scheduled runs), which are counted directly on
    the partial days: each key and measure as the rollup holds it and as those rows give it.
    Measures are summed, except those named in `extremes` ("min" or "max"). `moment` is the
    time a period selects the rows by; `counted`, which of those rows the rollup counts."""
    rollup: Table
    rows: FromClause
    moment: ColumnElement
    keys: dict[str, tuple[ColumnElement, ColumnElement]]
    measures: dict[str, tuple[ColumnElement, ColumnElement]]
    extremes: dict[str, str] = dataclasses.field(default_factory=dict)
    counted: ColumnElement | None = None

    def aggregate(self, name: str) -> str:
        return self.extremes.get(name, "sum")


def _package_days() -> Source:
    r, j = package_rollup.c, jobs.c
    return Source(
        package_rollup, jobs, j.created_at,
        keys={"package_id": (r.package_id, j.package_id), "day": (r.day, j.run_date)},
        measures={"jobs": (r.jobs, _flag(j.id.is_not(None))),
                  "completed": (r.completed, _flag(j.status == "completed")),
                  "failed": (r.failed, _flag(j.status == "failed")),
                  "stopped": (r.stopped, _flag(j.status == "stopped")),
                  "finished": (r.completed + r.failed + r.stopped, _flag(IS_TERMINAL)),
                  "retries": (r.retries, _flag(j.attempts > 0)),
                  "run_seconds": (r.run_seconds, case((IS_TERMINAL, j.runtime_in_seconds)))})


def _output_days() -> Source:
    r, j, o = output_rollup.c, jobs.c, outputs.c
    completed = j.status == "completed"
    return Source(
        output_rollup, outputs.join(jobs, j.id == o.job_id), j.created_at,
        keys={"package_id": (r.package_id, j.package_id), "day": (r.day, j.run_date),
              "output": (r.output_key, models.output_key())},
        measures={"jobs": (r.jobs, _flag(o.id.is_not(None))), "records": (r.records, o.records_count),
                  "completed": (r.completed, _flag(completed)),
                  "completed_records": (r.completed_records, case((completed, o.records_count)))})


def _error_days() -> Source:
    r, j = error_rollup.c, jobs.c
    failed_at = func.coalesce(j.ended_at, j.created_at)
    return Source(
        error_rollup, jobs, j.created_at,
        keys={"package_id": (r.package_id, j.package_id), "day": (r.day, j.run_date),
              "signature": (r.error_signature, j.error_signature)},
        measures={"jobs": (r.jobs, _flag(j.id.is_not(None))), "first": (r.first_failed_at, failed_at),
                  "last": (r.last_failed_at, failed_at), "example": (r.last_job_id, j.id)},
        extremes={"first": "min", "last": "max", "example": "max"}, counted=j.status == "failed")


def _schedule_days() -> Source:
    r, s = schedule_rollup.c, schedule_runs.c
    return Source(
        schedule_rollup, schedule_runs, s.scheduled_at,
        keys={"schedule_id": (r.schedule_id, s.schedule_id), "package_id": (r.package_id, s.package_id)},
        measures={"runs": (r.runs, _flag(s.first_job_id.is_not(None))), "retried": (r.retried, _flag(s.attempts > 1)),
                  "retries": (r.retries, s.attempts - 1),
                  "recovered": (r.recovered, _flag(s.outcome == "recovered_on_retry")),
                  "failed": (r.failed, _flag(s.outcome == "failed"))})


PACKAGE_DAYS, OUTPUT_DAYS, ERROR_DAYS, SCHEDULE_DAYS = _package_days(), _output_days(), _error_days(), _schedule_days()


def midnight(day: date) -> datetime:
    return datetime.combine(day, time(), timezone.utc)


def whole_days(start: datetime, end: datetime) -> tuple[date, date, list[tuple[datetime, datetime]]]:
    """The UTC days wholly inside [start, end) as [first, last), and the partial spans at its ends."""
    first = start.date() + timedelta(days=0 if start.timetz() == time(tzinfo=timezone.utc) else 1)
    last = end.date()
    if first >= last:
        return first, first, [(start, end)]
    return first, last, [(start, midnight(first)), (midnight(last), end)]


def within(moment: ColumnElement, spans: list[tuple[datetime, datetime]]):
    return or_(*[and_(moment >= a, moment < b) for a, b in spans])


def of_package(query, package_id, package: str | None):
    """job_runs' package filter (an id, or part of the name, any case) on a package id column."""
    if package is None:
        return query
    if package.isdigit():
        return query.where(package_id == int(package))
    named = select(packages.c.id).where(func.lower(packages.c.name).like(f"%{package.lower()}%"))
    return query.where(package_id.in_(named))


def tally(conn: Connection, source: Source, start: datetime, end: datetime, by: tuple[str, ...],
          measures: tuple[str, ...], package: str | None = None,
          only: dict[str, list] | None = None) -> dict[tuple, dict[str, Any]]:
    """{key (values of `by`): {measure: value}} over the rows of [start, end); a key with no rows
    is absent. `package` filters as job_runs' package filter, `only` keeps the keys whose values
    are in the lists given ({"package_id": [7, 8]})."""
    first, last, edges = whole_days(start, end)
    queries = [_aggregated(source, 1, by, measures, package, only).where(within(source.moment, edges))]
    if first < last:
        day = source.rollup.c.day
        queries.append(_aggregated(source, 0, by, measures, package, only).where(day >= first, day < last))
    kinds = [source.aggregate(name) for name in measures]
    found: dict[tuple, dict[str, Any]] = {}
    for query in queries:
        for row in conn.execute(query):
            key, values = tuple(row[:len(by)]), _values(kinds, row[len(by):])
            found[key] = _combined(kinds, measures, found[key], values) if key in found else dict(zip(measures, values))
    return found


def _values(kinds: list[str], row) -> list[Any]:
    """Sums as ints (0 for none: MySQL's are decimals), minimums and maximums as they are."""
    return [int(v or 0) if kind == "sum" else v for kind, v in zip(kinds, row)]


def _combined(kinds: list[str], measures: tuple[str, ...], before: dict[str, Any], values: list) -> dict[str, Any]:
    """The measures of two parts of a period as one: sums added, minimums and maximums compared."""
    result = dict(before)
    for kind, name, value in zip(kinds, measures, values):
        old = before[name]
        if kind == "sum":
            result[name] = old + value
        elif value is not None:
            result[name] = value if old is None else (min if kind == "min" else max)(old, value)
    return result


def newest(conn: Connection, source: Source, start: datetime, end: datetime, key: str, measure: str, n: int,
           package: str | None = None, only: dict[str, list] | None = None) -> dict[Any, list]:
    """{key value: the n largest values of `measure` (a "max" measure) among its package-days of
    [start, end)}, largest first. The database ranks the rollup's rows, so a key's whole history
    never comes back, only its n best days."""
    first, last, edges = whole_days(start, end)
    found: dict[Any, list] = defaultdict(list)
    partial = _aggregated(source, 1, (key, "package_id", "day"), (measure,), package, only).where(
        within(source.moment, edges))
    for value, _, _, best in conn.execute(partial):
        found[value].append(best)
    if first < last:
        rollup_key, best = source.keys[key][0], source.measures[measure][0]
        rank = func.row_number().over(partition_by=rollup_key, order_by=best.desc()).label("rank")
        day = source.rollup.c.day
        ranked = _filtered(source, 0, select(rollup_key.label("k"), best.label("best"), rank)
                           .where(day >= first, day < last), package, only).subquery()
        for value, top in conn.execute(select(ranked.c.k, ranked.c.best).where(ranked.c.rank <= n)):
            found[value].append(top)
    return {value: sorted(tops, reverse=True)[:n] for value, tops in found.items()}


def _filtered(source: Source, side: int, query, package: str | None, only: dict[str, list] | None):
    """`query` limited by `only` ({key: values}, None a value too) and the package filter."""
    for name, values in (only or {}).items():
        key, known = source.keys[name][side], [v for v in values if v is not None]
        query = query.where(or_(key.in_(known), key.is_(None)) if None in values else key.in_(known))
    return of_package(query, source.keys["package_id"][side], package)


def _aggregated(source: Source, side: int, by: tuple[str, ...], measures: tuple[str, ...], package: str | None,
                only: dict[str, list] | None):
    keys = [source.keys[name][side] for name in by]
    query = select(*keys, *[getattr(func, source.aggregate(name))(source.measures[name][side]) for name in measures])
    if side:
        query = query.select_from(source.rows)
        query = query if source.counted is None else query.where(source.counted)
    return _filtered(source, side, query.group_by(*keys), package, only)


def runtimes_by_day(conn: Connection, start: datetime, end: datetime, package: str | None = None,
                    package_ids: list | None = None) -> dict[tuple[Any, date], list[int]]:
    """{(package_id, day): runtimes of the finished jobs created in [start, end)}, unsorted:
    whole days from daily_package_rollup.runtimes, the partial days from jobs."""
    first, last, edges = whole_days(start, end)
    found: dict[tuple[Any, date], list[int]] = defaultdict(list)

    def of(query, package_id):
        query = query.where(package_id.in_(package_ids)) if package_ids is not None else query
        return of_package(query, package_id, package)

    r = package_rollup.c
    if first < last:
        whole = select(r.package_id, r.day, r.runtimes).where(r.day >= first, r.day < last, r.runtimes.is_not(None))
        for package_id, day, runtimes in conn.execute(of(whole, r.package_id)):
            if runtimes:
                found[(package_id, day)].extend(map(int, runtimes.split(",")))
    partial = select(jobs.c.package_id, jobs.c.run_date, jobs.c.runtime_in_seconds).where(
        IS_TERMINAL, jobs.c.runtime_in_seconds.is_not(None), within(jobs.c.created_at, edges))
    for package_id, day, runtime in conn.execute(of(partial, jobs.c.package_id)):
        found[(package_id, day)].append(runtime)
    return found


def interpolate(ranked: list[int], q: int) -> float:
    """statistics.quantiles(method="inclusive")'s q-th percentile of sorted values, from the two
    ranks it reads (what PostgreSQL's percentile_cont gives too)."""
    if len(ranked) == 1:
        return ranked[0]
    j, delta = divmod((len(ranked) - 1) * q, 100)
    return (ranked[j] * (100 - delta) + ranked[j + 1] * delta) / 100
