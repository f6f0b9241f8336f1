"""The archive's tables: the public contract BI users query. Created only by migrations.

ORM classes are `...Row` (payload records are `...Record`, in archiver.records). The
`jobs` columns that hold an API field follow archiver.fields.JOB_FIELDS.
"""

from __future__ import annotations

from datetime import date, datetime

from sqlalchemy import (BigInteger, Boolean, Date, Double, ForeignKey, Index, Integer, MetaData, String, cast, func,
                        literal_column)
from sqlalchemy.orm import DeclarativeBase, Mapped, declared_attr, mapped_column

from archiver.fields import INT, JOB_FIELDS, NUMBER, STATUS, TEXT, TIME
from archiver.schema_docs import COLUMN_DOCS
from archiver.sqltypes import BigId, LongText, Payload, UTCDateTime

NAMING_CONVENTION = {
    "ix": "ix_%(table_name)s_%(column_0_N_name)s",
    "uq": "uq_%(table_name)s_%(column_0_N_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}


class Base(DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING_CONVENTION)


# The column type of each kind of API field (archiver.fields).
KIND_TYPES = {INT: BigInteger, NUMBER: Double, TEXT: LongText, TIME: UTCDateTime, STATUS: String(64)}


def api_field_columns_for(fields) -> dict:
    """A column per declared API field, of its kind's type (nullable: a payload may omit it)."""
    return {field.name: mapped_column(KIND_TYPES[field.kind], index=field.indexed) for field in fields}


class JobRow(Base):
    __tablename__ = "jobs"

    id: Mapped[int] = mapped_column(BigInteger, primary_key=True, autoincrement=False)
    account_id: Mapped[str | None] = mapped_column(String(255))
    vars().update(api_field_columns_for(JOB_FIELDS))  # status, owner_id, ... created_at, updated_at, ...
    creator_type: Mapped[str | None] = mapped_column(String(64))
    creator_id: Mapped[int | None] = mapped_column(BigInteger)
    first_seen_at: Mapped[datetime] = mapped_column(UTCDateTime)
    last_synced_at: Mapped[datetime] = mapped_column(UTCDateTime)
    payload: Mapped[dict] = mapped_column(Payload)
    payload_hash: Mapped[str | None] = mapped_column(String(64))
    # derived by the archiver when it writes the row (so views need no dialect-specific SQL)
    ended_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    queue_seconds: Mapped[int | None] = mapped_column(BigInteger)
    run_date: Mapped[date | None] = mapped_column(Date, index=True)
    error_signature: Mapped[str | None] = mapped_column(String(300))   # migration 0010 (archiver.errortext)

    __table_args__ = (Index("ix_jobs_package_id_created_at", "package_id", "created_at"),
                      Index("ix_jobs_runtime_in_seconds", "runtime_in_seconds"),
                      # a schedule's chain (schedule_runs upkeep, migration 0009): its jobs by time, with
                      # attempts read from the index; its last failed attempt in one descent
                      Index("ix_jobs_creator_type_creator_id_package_id_created_at_attempts", "creator_type",
                            "creator_id", "package_id", "created_at", "attempts"),
                      Index("ix_jobs_creator_type_creator_id_package_id_status_created_at", "creator_type",
                            "creator_id", "package_id", "status", "created_at"),
                      # a key's newest successes by end time, one descent (the health board, migration 0010)
                      Index("ix_jobs_creator_type_creator_id_package_id_status_ended_at", "creator_type",
                            "creator_id", "package_id", "status", "ended_at"),
                      Index("ix_jobs_status_created_at", "status", "created_at"))
    # plus, on PostgreSQL and SQLite, ix_jobs_failed_at: (COALESCE(ended_at, created_at)) WHERE
    # status = 'failed', the job_failures view's order (migration 0008; autogenerate skips it)


class JobOutputRow(Base):
    __tablename__ = "job_outputs"

    id: Mapped[int] = mapped_column(BigInteger, primary_key=True, autoincrement=False)
    job_id: Mapped[int] = mapped_column(BigInteger, ForeignKey("jobs.id", ondelete="CASCADE"), index=True)
    name: Mapped[str | None] = mapped_column(LongText)
    component_name: Mapped[str | None] = mapped_column(LongText)
    component_type: Mapped[str | None] = mapped_column(LongText)
    records_count: Mapped[int | None] = mapped_column(BigInteger)
    progress: Mapped[float | None] = mapped_column(Double)
    preview_type: Mapped[str | None] = mapped_column(LongText)
    created_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    updated_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    url: Mapped[str | None] = mapped_column(LongText)
    preview_url: Mapped[str | None] = mapped_column(LongText)



def output_key():
    """An output's key, as docs/anomalies.md gives it: component name, else name, else `output <id>`."""
    o = JobOutputRow.__table__.c
    return func.coalesce(o.component_name, o.name, literal_column("'output '") + cast(o.id, String))


class JobVariableRow(Base):
    __tablename__ = "job_variables"

    job_id: Mapped[int] = mapped_column(BigInteger, ForeignKey("jobs.id", ondelete="CASCADE"),
                                        primary_key=True)
    name: Mapped[str] = mapped_column(String(255), primary_key=True)
    value: Mapped[str | None] = mapped_column(LongText)


class SyncRunRow(Base):
    __tablename__ = "sync_runs"

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    account_id: Mapped[str | None] = mapped_column(String(255))
    started_at: Mapped[datetime] = mapped_column(UTCDateTime, index=True)
    finished_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    mode: Mapped[str] = mapped_column(String(32))
    requested: Mapped[int] = mapped_column(BigInteger, default=0)
    inserted: Mapped[int] = mapped_column(BigInteger, default=0)
    updated: Mapped[int] = mapped_column(BigInteger, default=0)
    unchanged: Mapped[int] = mapped_column(BigInteger, default=0)
    stale: Mapped[int] = mapped_column(BigInteger, default=0)
    not_found: Mapped[int] = mapped_column(BigInteger, default=0)
    failed: Mapped[int] = mapped_column(BigInteger, default=0)
    credits_used: Mapped[int] = mapped_column(BigInteger, default=0)
    api_calls: Mapped[int] = mapped_column(BigInteger, default=0)
    outcome: Mapped[str] = mapped_column(String(32))
    message: Mapped[str | None] = mapped_column(LongText)
    pid: Mapped[int | None] = mapped_column(BigInteger)
    hostname: Mapped[str | None] = mapped_column(String(255))
    archiver_version: Mapped[str | None] = mapped_column(String(32))


class SyncErrorRow(Base):
    __tablename__ = "sync_errors"

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    run_id: Mapped[int] = mapped_column(BigInteger, ForeignKey("sync_runs.id", ondelete="CASCADE"),
                                        index=True)
    job_id: Mapped[int | None] = mapped_column(BigInteger, index=True)
    kind: Mapped[str] = mapped_column(String(32))
    http_status: Mapped[int | None] = mapped_column(Integer)
    field: Mapped[str | None] = mapped_column(String(255))
    message: Mapped[str] = mapped_column(LongText)
    occurred_at: Mapped[datetime] = mapped_column(UTCDateTime)


class SyncStateRow(Base):
    """The incremental high-water mark per account (scope '' = the whole account; a
    filtered run, e.g. --status failed, keeps a mark of its own)."""

    __tablename__ = "sync_state"

    account_id: Mapped[str] = mapped_column(String(255), primary_key=True)
    scope: Mapped[str] = mapped_column(String(255), primary_key=True, default="")
    high_water_mark: Mapped[datetime | None] = mapped_column(UTCDateTime)
    last_run_id: Mapped[int | None] = mapped_column(BigInteger)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime)


class JobStatusChangeRow(Base):
    __tablename__ = "job_status_changes"
    __table_args__ = (Index("ix_job_status_changes_job_id_observed_at", "job_id", "observed_at"),)

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    job_id: Mapped[int] = mapped_column(BigInteger, ForeignKey("jobs.id", ondelete="CASCADE"))
    from_status: Mapped[str | None] = mapped_column(String(64))
    to_status: Mapped[str | None] = mapped_column(String(64))
    observed_at: Mapped[datetime] = mapped_column(UTCDateTime)
    api_updated_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    run_id: Mapped[int | None] = mapped_column(BigInteger)


class PackageRow(Base):
    __tablename__ = "packages"

    id: Mapped[int] = mapped_column(BigInteger, primary_key=True, autoincrement=False)
    name: Mapped[str | None] = mapped_column(LongText)
    description: Mapped[str | None] = mapped_column(LongText)
    owner_id: Mapped[int | None] = mapped_column(BigInteger)
    status: Mapped[str | None] = mapped_column(LongText)
    url: Mapped[str | None] = mapped_column(LongText)
    html_url: Mapped[str | None] = mapped_column(LongText)
    created_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    updated_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    last_synced_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    flow_type: Mapped[str | None] = mapped_column(String(64))
    variables: Mapped[dict | None] = mapped_column(Payload)
    payload: Mapped[dict | None] = mapped_column(Payload)


class ClusterRow(Base):
    __tablename__ = "clusters"

    id: Mapped[int] = mapped_column(BigInteger, primary_key=True, autoincrement=False)
    name: Mapped[str | None] = mapped_column(LongText)
    description: Mapped[str | None] = mapped_column(LongText)
    status: Mapped[str | None] = mapped_column(LongText)
    owner_id: Mapped[int | None] = mapped_column(BigInteger)
    plan_id: Mapped[int | None] = mapped_column(BigInteger)
    nodes: Mapped[int | None] = mapped_column(BigInteger)
    type: Mapped[str | None] = mapped_column(LongText)
    region: Mapped[str | None] = mapped_column(LongText)
    zone: Mapped[str | None] = mapped_column(LongText)
    master_instance_type: Mapped[str | None] = mapped_column(LongText)
    slave_instance_type: Mapped[str | None] = mapped_column(LongText)
    created_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    updated_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    available_since: Mapped[datetime | None] = mapped_column(UTCDateTime)
    terminated_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    url: Mapped[str | None] = mapped_column(LongText)
    html_url: Mapped[str | None] = mapped_column(LongText)
    last_synced_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    terminate_on_idle: Mapped[bool | None] = mapped_column(Boolean)
    time_to_idle: Mapped[int | None] = mapped_column(BigInteger)
    stack: Mapped[str | None] = mapped_column(LongText)
    payload: Mapped[dict | None] = mapped_column(Payload)


class ScheduleRow(Base):
    """A schedule as its own List endpoint gives it (v2). Its jobs are the jobs with
    creator_type 'Schedule' and creator_id = id."""

    __tablename__ = "schedules"

    id: Mapped[int] = mapped_column(BigInteger, primary_key=True, autoincrement=False)
    name: Mapped[str | None] = mapped_column(LongText)
    description: Mapped[str | None] = mapped_column(LongText)
    owner_id: Mapped[int | None] = mapped_column(BigInteger)
    status: Mapped[str | None] = mapped_column(String(64))
    start_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    next_run_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    interval_amount: Mapped[int | None] = mapped_column(BigInteger)
    interval_unit: Mapped[str | None] = mapped_column(String(32))
    last_run_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    last_run_status: Mapped[str | None] = mapped_column(String(64))
    execution_count: Mapped[int | None] = mapped_column(BigInteger)
    overlap: Mapped[bool | None] = mapped_column(Boolean)
    auto_retry: Mapped[bool | None] = mapped_column(Boolean)
    auto_retry_attempts: Mapped[int | None] = mapped_column(BigInteger)
    reuse_cluster_strategy: Mapped[str | None] = mapped_column(String(32))
    task_nodes: Mapped[int | None] = mapped_column(BigInteger)
    task_terminate_on_idle: Mapped[bool | None] = mapped_column(Boolean)
    task_time_to_idle: Mapped[int | None] = mapped_column(BigInteger)
    created_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    updated_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    url: Mapped[str | None] = mapped_column(LongText)
    html_url: Mapped[str | None] = mapped_column(LongText)
    payload: Mapped[dict | None] = mapped_column(Payload)
    last_synced_at: Mapped[datetime | None] = mapped_column(UTCDateTime)


class SchedulePackageRow(Base):
    """The packages a schedule's task runs, in task order (replaced whenever the schedule is)."""

    __tablename__ = "schedule_packages"

    schedule_id: Mapped[int] = mapped_column(BigInteger, ForeignKey("schedules.id", ondelete="CASCADE"),
                                             primary_key=True)
    position: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=False)
    package_id: Mapped[int | None] = mapped_column(BigInteger, index=True)
    variables: Mapped[dict | None] = mapped_column(Payload)


class AlertRow(Base):
    """One alert of `archiver check`, from first seen to resolved (an episode per key)."""

    __tablename__ = "alerts"

    key: Mapped[str] = mapped_column(String(255), primary_key=True)
    kind: Mapped[str] = mapped_column(String(32))
    severity: Mapped[str] = mapped_column(String(16))
    schedule_id: Mapped[int | None] = mapped_column(BigInteger)
    package_id: Mapped[int | None] = mapped_column(BigInteger)
    job_id: Mapped[int | None] = mapped_column(BigInteger)
    since: Mapped[datetime | None] = mapped_column(UTCDateTime)
    message: Mapped[str | None] = mapped_column(LongText)
    first_seen_at: Mapped[datetime] = mapped_column(UTCDateTime)
    last_seen_at: Mapped[datetime] = mapped_column(UTCDateTime)
    resolved_at: Mapped[datetime | None] = mapped_column(UTCDateTime, index=True)
    silenced_until: Mapped[datetime | None] = mapped_column(UTCDateTime)
    notified_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    resolved_notified_at: Mapped[datetime | None] = mapped_column(UTCDateTime)


class JobAnomalyRow(Base):
    """A verdict of the anomaly rules (archiver.anomaly) on one job; several per job when
    several outputs drop. Written where jobs are written, for newly finished jobs."""

    __tablename__ = "job_anomalies"
    __table_args__ = (Index("ix_job_anomalies_package_id_detected_at", "package_id", "detected_at"),)

    job_id: Mapped[int] = mapped_column(BigInteger, ForeignKey("jobs.id", ondelete="CASCADE"),
                                        primary_key=True, autoincrement=False)
    kind: Mapped[str] = mapped_column(String(32), primary_key=True)
    output_key: Mapped[str] = mapped_column(String(255), primary_key=True, default="")
    package_id: Mapped[int | None] = mapped_column(BigInteger)
    severity: Mapped[str] = mapped_column(String(16))
    score: Mapped[float | None] = mapped_column(Double)
    baseline_median: Mapped[float | None] = mapped_column(Double)
    mad: Mapped[float | None] = mapped_column(Double)
    n: Mapped[int] = mapped_column(Integer)
    threshold: Mapped[float | None] = mapped_column(Double)
    message: Mapped[str] = mapped_column(LongText)
    job_created_at: Mapped[datetime | None] = mapped_column(UTCDateTime, index=True)
    detected_at: Mapped[datetime] = mapped_column(UTCDateTime)


class AlertDeliveryRow(Base):
    """Each POST of `check --notify`: which alert, which event, and whether it arrived."""

    __tablename__ = "alert_deliveries"

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    alert_key: Mapped[str] = mapped_column(String(255), index=True)
    event: Mapped[str] = mapped_column(String(16))
    attempted_at: Mapped[datetime] = mapped_column(UTCDateTime)
    attempts: Mapped[int] = mapped_column(Integer)
    http_status: Mapped[int | None] = mapped_column(Integer)
    delivered: Mapped[bool] = mapped_column(Boolean)
    error: Mapped[str | None] = mapped_column(LongText)


class _DayGroups:
    """The key of a daily rollup: account, UTC day and package, each possibly NULL (no account,
    no package), hence the surrogate id; indexed by day and package, and by account and day
    (migration 0010's `_day_table` makes the tables the same way)."""

    @declared_attr.directive
    def __table_args__(cls) -> tuple:
        name = cls.__tablename__
        return (Index(f"ix_{name}_day_package_id", "day", "package_id"),
                Index(f"ix_{name}_account_id_day", "account_id", "day"))

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True, sort_order=-1)
    account_id: Mapped[str | None] = mapped_column(String(255), sort_order=-1)   # first, as in the tables
    day: Mapped[date | None] = mapped_column(Date, sort_order=-1)
    package_id: Mapped[int | None] = mapped_column(BigInteger, sort_order=-1)


class DailyPackageRollupRow(_DayGroups, Base):
    """Counts per account, UTC day and package, recounted for the groups each write of jobs
    changed (archiver.store), so daily_package_stats reads thousands of rows, not millions."""

    __tablename__ = "daily_package_rollup"

    jobs: Mapped[int] = mapped_column(BigInteger)
    completed: Mapped[int] = mapped_column(BigInteger)
    failed: Mapped[int] = mapped_column(BigInteger)
    stopped: Mapped[int] = mapped_column(BigInteger)
    failure_rate: Mapped[float | None] = mapped_column(Double)
    avg_runtime_seconds: Mapped[float | None] = mapped_column(Double)
    max_runtime_seconds: Mapped[int | None] = mapped_column(BigInteger)
    # every runtime_in_seconds of the finished jobs, comma-separated, any order (migration 0009):
    # exact percentiles of any run of whole days without sorting the jobs (report runtimes)
    runtimes: Mapped[str | None] = mapped_column(LongText)
    retries: Mapped[int] = mapped_column(BigInteger, server_default="0")     # migration 0010
    run_seconds: Mapped[int | None] = mapped_column(BigInteger)


class DailyOutputRollupRow(_DayGroups, Base):
    """Outputs' records per account, UTC day, package and output key (migration 0010), kept with
    daily_package_rollup by the same writes: report html's records chart reads days, not jobs."""

    __tablename__ = "daily_output_rollup"

    output_key: Mapped[str] = mapped_column(LongText)
    jobs: Mapped[int] = mapped_column(BigInteger)
    records: Mapped[int] = mapped_column(BigInteger)
    completed: Mapped[int] = mapped_column(BigInteger)
    completed_records: Mapped[int] = mapped_column(BigInteger)


class DailyErrorRollupRow(_DayGroups, Base):
    """Failed jobs per account, UTC day, package and error signature (migration 0010), kept with
    daily_package_rollup by the same writes: report html's failures by error read days, not jobs."""

    __tablename__ = "daily_error_rollup"

    error_signature: Mapped[str | None] = mapped_column(String(300))
    jobs: Mapped[int] = mapped_column(BigInteger)
    first_failed_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    last_failed_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    last_job_id: Mapped[int] = mapped_column(BigInteger)


class DailyScheduleRollupRow(Base):
    """Scheduled runs and their retries per account, UTC day (of scheduled_at), schedule and
    package (migration 0010), recounted with schedule_runs by each write: report html's retries
    read days, not runs."""

    __tablename__ = "daily_schedule_rollup"
    __table_args__ = (Index("ix_daily_schedule_rollup_day", "day"),
                      Index("ix_daily_schedule_rollup_schedule_id_package_id_day", "schedule_id", "package_id", "day"))

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    account_id: Mapped[str | None] = mapped_column(String(255))
    day: Mapped[date | None] = mapped_column(Date)
    schedule_id: Mapped[int | None] = mapped_column(BigInteger)
    package_id: Mapped[int | None] = mapped_column(BigInteger)
    runs: Mapped[int] = mapped_column(BigInteger)
    retried: Mapped[int] = mapped_column(BigInteger)
    retries: Mapped[int] = mapped_column(BigInteger)
    recovered: Mapped[int] = mapped_column(BigInteger)
    failed: Mapped[int] = mapped_column(BigInteger)


class ScheduleRunRow(Base):
    """One scheduled run: a schedule's first attempt of a package and the retries that follow
    it, recomputed by each write of jobs from the touched schedule's last failed first attempt
    on (archiver.store); the schedule_attempts view reads it."""

    __tablename__ = "schedule_runs"
    __table_args__ = (Index("ix_schedule_runs_schedule_id_package_id_scheduled_at",
                            "schedule_id", "package_id", "scheduled_at"),
                      Index("ix_schedule_runs_scheduled_at", "scheduled_at"),
                      Index("ix_schedule_runs_outcome_scheduled_at", "outcome", "scheduled_at"))

    first_job_id: Mapped[int] = mapped_column(BigInteger, primary_key=True, autoincrement=False)
    account_id: Mapped[str | None] = mapped_column(String(255))
    schedule_id: Mapped[int | None] = mapped_column(BigInteger)
    package_id: Mapped[int | None] = mapped_column(BigInteger)
    last_job_id: Mapped[int] = mapped_column(BigInteger)
    scheduled_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    ended_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    attempts: Mapped[int] = mapped_column(BigInteger)
    failed_attempts: Mapped[int] = mapped_column(BigInteger)
    final_status: Mapped[str | None] = mapped_column(String(64))
    outcome: Mapped[str | None] = mapped_column(String(64))


class CreatorRow(Base):
    """The schedule or user that created jobs (v2 `creator`)."""

    __tablename__ = "creators"

    type: Mapped[str] = mapped_column(String(64), primary_key=True)
    id: Mapped[int] = mapped_column(BigInteger, primary_key=True, autoincrement=False)
    display_name: Mapped[str | None] = mapped_column(LongText)
    url: Mapped[str | None] = mapped_column(LongText)
    html_url: Mapped[str | None] = mapped_column(LongText)
    last_synced_at: Mapped[datetime | None] = mapped_column(UTCDateTime)


class JobLogSummaryRow(Base):
    __tablename__ = "job_log_summaries"

    job_id: Mapped[int] = mapped_column(BigInteger, ForeignKey("jobs.id", ondelete="CASCADE"),
                                        primary_key=True, autoincrement=False)
    log_id: Mapped[int | None] = mapped_column(BigInteger)
    error_summary: Mapped[str | None] = mapped_column(LongText)
    action_items: Mapped[list | None] = mapped_column(Payload)
    body: Mapped[str | None] = mapped_column(LongText)
    created_at: Mapped[datetime | None] = mapped_column(UTCDateTime)


def _document_columns() -> None:
    """Column comments from archiver.schema_docs, so `alembic check` sees a change that needs
    a migration."""
    for name, table in Base.metadata.tables.items():
        for column in table.columns:
            column.comment = COLUMN_DOCS[name][column.name]


_document_columns()
