"""Archives for the health rules, built row by row (plain inserts, no API, no sandbox)."""

from __future__ import annotations

from datetime import datetime, timedelta

from sqlalchemy import insert, select

from archiver import database
from archiver.errortext import signature
from archiver.store import refresh_rollup, refresh_schedule_runs
from archiver.models import AlertRow, JobRow, PackageRow, SchedulePackageRow, ScheduleRow, SyncRunRow


class Rows:
    """Insert schedules, packages, jobs and sync runs into the archive at `url`."""

    def __init__(self, url: str):
        self.url = url
        self.engine = database.make_engine(url)
        self.next_job = 1

    def close(self) -> None:
        self.engine.dispose()

    def _insert(self, model, rows: list[dict]) -> None:
        with self.engine.begin() as conn:
            conn.execute(insert(model.__table__), rows)
            if model is JobRow:
                recount(conn, rows)

    def package(self, package_id: int, name: str | None = None) -> None:
        self._insert(PackageRow, [{"id": package_id, "name": name or f"pkg{package_id}"}])

    def schedule(self, schedule_id: int, *, start_at: datetime, amount: int = 1, unit: str = "hours",
                 packages: tuple[int, ...] = (), status: str = "enabled", name: str | None = None,
                 next_run_at: datetime | None = None, last_run_at: datetime | None = None,
                 auto_retry: bool = False, retries: int | None = None, overlap: bool | None = None,
                 created_at: datetime | None = None) -> None:
        self._insert(ScheduleRow, [{"id": schedule_id, "name": name or f"schedule{schedule_id}", "status": status,
                                    "start_at": start_at, "interval_amount": amount, "interval_unit": unit,
                                    "next_run_at": next_run_at, "last_run_at": last_run_at,
                                    "auto_retry": auto_retry, "auto_retry_attempts": retries, "overlap": overlap,
                                    "created_at": created_at or start_at}])
        if packages:
            self._insert(SchedulePackageRow, [{"schedule_id": schedule_id, "position": i, "package_id": p}
                                              for i, p in enumerate(packages)])

    def job(self, *, package_id: int, created_at: datetime, status: str = "completed",
            schedule_id: int | None = None, attempts: int | None = 0, runtime: int = 600,
            started_at: datetime | None = None, job_id: int | None = None) -> int:
        row = job_row(job_id or self.next_job, package_id=package_id, created_at=created_at, status=status,
                      schedule_id=schedule_id, attempts=attempts, runtime=runtime, started_at=started_at)
        self.next_job = max(self.next_job, row["id"]) + 1
        self.jobs([row])
        return row["id"]

    def jobs(self, rows: list[dict]) -> None:
        """Job rows as a write stores them: with the error signature the parser derives."""
        self._insert(JobRow, [{**row, "error_signature": signature(row.get("errors"))} for row in rows])

    def sync(self, started_at: datetime, outcome: str = "ok", mode: str = "incremental") -> None:
        self._insert(SyncRunRow, [{"started_at": started_at, "finished_at": started_at + timedelta(seconds=30),
                                   "mode": mode, "outcome": outcome}])

    def hourly_history(self, schedule_id: int, package_id: int, first: datetime, last: datetime,
                       step: timedelta = timedelta(hours=1), status: str = "completed") -> None:
        """One first-attempt job per slot from `first` to `last` inclusive, created 5 s after it."""
        rows, moment = [], first
        while moment <= last:
            rows.append(job_row(self.next_job, package_id=package_id, created_at=moment + timedelta(seconds=5),
                                status=status, schedule_id=schedule_id))
            self.next_job += 1
            moment += step
        self.jobs(rows)


def recount(conn, rows: list[dict]) -> None:
    """What the archiver's own writes keep with the jobs: the daily rollup and the scheduled runs."""
    refresh_rollup(conn, {(r.get("account_id"), r["created_at"].date() if r.get("created_at") else None)
                          for r in rows})
    starts: dict[tuple, datetime] = {}
    for r in rows:
        if r.get("creator_type") == "Schedule" and r.get("created_at"):
            key = (r.get("account_id"), r.get("creator_id"), r.get("package_id"))
            starts[key] = min(r["created_at"], starts.get(key, r["created_at"]))
    refresh_schedule_runs(conn, starts)


def job_row(job_id: int, *, package_id: int, created_at: datetime, status: str = "completed",
            schedule_id: int | None = None, attempts: int | None = 0, runtime: int = 600,
            started_at: datetime | None = None) -> dict:
    finished = status in ("completed", "failed", "stopped")
    started = started_at or (created_at + timedelta(seconds=30) if status != "queued" else None)
    ended = created_at + timedelta(seconds=30 + runtime) if finished else None
    return {"id": job_id, "status": status, "package_id": package_id,
            "creator_type": "Schedule" if schedule_id is not None else "User",
            "creator_id": schedule_id if schedule_id is not None else 1, "attempts": attempts,
            "created_at": created_at, "started_at": started, "completed_at": ended, "ended_at": ended,
            "runtime_in_seconds": runtime if finished else None, "updated_at": ended or created_at,
            "first_seen_at": created_at, "last_synced_at": created_at, "payload": {},
            "run_date": created_at.date()}


def alert_rows(url: str) -> dict:
    engine = database.make_engine(url)
    try:
        with engine.connect() as conn:
            return {r.key: r for r in conn.execute(select(AlertRow.__table__))}
    finally:
        engine.dispose()
