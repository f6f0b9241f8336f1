"""The archive's tables: the public contract BI users query. Created only by migrations.

Each table is a class `...Row` whose `__table__` is a Core Table and whose attributes are its
columns (payload records are `...Record`, in archiver.records). The `jobs` columns that hold an
API field follow archiver.fields.JOB_FIELDS.
"""

from __future__ import annotations

from typing import Any, ClassVar

from sqlalchemy import (BigInteger, Boolean, Column, Date, Double, ForeignKey, Index, Integer, MetaData, String, Table,
                        cast, func, literal_column)

from archiver.fields import INT, JOB_FIELDS, NUMBER, STATUS, TEXT, TIME
from archiver.schema_docs import COLUMN_DOCS
from archiver.sqltypes import BigId, ExactKey, LongText, Payload, UTCDateTime

NAMING_CONVENTION = {
    "ix": "ix_%(table_name)s_%(column_0_N_name)s",
    "uq": "uq_%(table_name)s_%(column_0_N_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}


class col:
    """A column of a table class, named by its attribute (Column's arguments; a column is
    nullable unless it says nullable=False or is part of the primary key)."""

    def __init__(self, *args: Any, **kwargs: Any):
        self.args, self.kwargs = args, kwargs

    def column(self, name: str) -> Column:
        return Column(name, *self.args, **self.kwargs)


class Base:
    """Declares each subclass with a `__tablename__` as a Core Table in `metadata`: its `col`
    attributes (a mixin's first) in the order written, its `__table_args__` (a tuple, or a
    classmethod returning one), and the table's columns as class attributes (`JobRow.id`).
    The declarative ORM did this before; nothing used its mapping, and importing it and
    mapping 22 classes was a quarter of every command's start-up."""

    metadata: ClassVar[MetaData] = MetaData(naming_convention=NAMING_CONVENTION)
    __table__: ClassVar[Table]

    def __init_subclass__(cls, **kwargs: Any):
        super().__init_subclass__(**kwargs)
        if "__tablename__" not in cls.__dict__:
            return
        specs: dict[str, col] = {}
        for klass in reversed(cls.__mro__):
            specs.update((name, value) for name, value in vars(klass).items() if isinstance(value, col))
        table_args = getattr(cls, "__table_args__", ())
        table_args = table_args() if callable(table_args) else table_args
        cls.__table__ = Table(cls.__tablename__, cls.metadata, *[spec.column(name) for name, spec in specs.items()],
                              *table_args)
        for column in cls.__table__.columns:
            setattr(cls, column.key, column)

    @classmethod
    def __clause_element__(cls) -> Table:
        """The class stands for its table in SQL (`select(JobRow)`, `.select_from(JobRow)`)."""
        return cls.__table__


# The column type of each kind of API field (archiver.fields).
KIND_TYPES = {INT: BigInteger, NUMBER: Double, TEXT: LongText, TIME: UTCDateTime, STATUS: String(64)}


def api_field_columns_for(fields) -> dict:
    """A column per declared API field, of its kind's type (nullable: a payload may omit it)."""
    return {field.name: col(KIND_TYPES[field.kind], index=field.indexed) for field in fields}


class JobRow(Base):
    __tablename__ = "jobs"

    id = col(BigInteger, primary_key=True, autoincrement=False)
    account_id = col(String(255))
    vars().update(api_field_columns_for(JOB_FIELDS))  # status, owner_id, ... created_at, updated_at, ...
    creator_type = col(String(64))
    creator_id = col(BigInteger)
    first_seen_at = col(UTCDateTime, nullable=False)
    last_synced_at = col(UTCDateTime, nullable=False)
    payload = col(Payload, nullable=False)
    payload_hash = col(String(64))
    # derived by the archiver when it writes the row (so views need no dialect-specific SQL)
    ended_at = col(UTCDateTime)
    queue_seconds = col(BigInteger)
    run_date = col(Date)   # indexed with package_id (migration 0012)
    error_signature = col(String(300))   # migration 0010 (archiver.errortext)

    __table_args__ = (Index("ix_jobs_package_id_created_at", "package_id", "created_at"),
                      Index("ix_jobs_runtime_in_seconds", "runtime_in_seconds"),
                      # a day's packages' jobs, one descent a day (the rollups' recounts)
                      Index("ix_jobs_run_date_package_id", "run_date", "package_id"),
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

    id = col(BigInteger, primary_key=True, autoincrement=False)
    job_id = col(BigInteger, ForeignKey("jobs.id", ondelete="CASCADE"), index=True, nullable=False)
    name = col(LongText)
    component_name = col(LongText)
    component_type = col(LongText)
    records_count = col(BigInteger)
    progress = col(Double)
    preview_type = col(LongText)
    created_at = col(UTCDateTime)
    updated_at = col(UTCDateTime)
    url = col(LongText)
    preview_url = col(LongText)



def output_key():
    """An output's key, as docs/anomalies.md gives it: component name, else name, else `output <id>`."""
    o = JobOutputRow.__table__.c
    return func.coalesce(o.component_name, o.name, literal_column("'output '") + cast(o.id, String))


class JobVariableRow(Base):
    __tablename__ = "job_variables"

    job_id = col(BigInteger, ForeignKey("jobs.id", ondelete="CASCADE"),
                                        primary_key=True)
    name = col(String(255), primary_key=True)
    value = col(LongText)


class SyncRunRow(Base):
    __tablename__ = "sync_runs"

    id = col(BigId, primary_key=True, autoincrement=True)
    account_id = col(String(255))
    started_at = col(UTCDateTime, index=True, nullable=False)
    finished_at = col(UTCDateTime)
    mode = col(String(32), nullable=False)
    requested = col(BigInteger, default=0, nullable=False)
    inserted = col(BigInteger, default=0, nullable=False)
    updated = col(BigInteger, default=0, nullable=False)
    unchanged = col(BigInteger, default=0, nullable=False)
    stale = col(BigInteger, default=0, nullable=False)
    not_found = col(BigInteger, default=0, nullable=False)
    failed = col(BigInteger, default=0, nullable=False)
    credits_used = col(BigInteger, default=0, nullable=False)
    api_calls = col(BigInteger, default=0, nullable=False)
    outcome = col(String(32), nullable=False)
    message = col(LongText)
    pid = col(BigInteger)
    hostname = col(String(255))
    archiver_version = col(String(32))


class SyncErrorRow(Base):
    __tablename__ = "sync_errors"

    id = col(BigId, primary_key=True, autoincrement=True)
    run_id = col(BigInteger, ForeignKey("sync_runs.id", ondelete="CASCADE"),
                                        index=True, nullable=False)
    job_id = col(BigInteger, index=True)
    kind = col(String(32), nullable=False)
    http_status = col(Integer)
    field = col(String(255))
    message = col(LongText, nullable=False)
    occurred_at = col(UTCDateTime, nullable=False)


class SyncStateRow(Base):
    """The incremental high-water mark per account (scope '' = the whole account; a
    filtered run, e.g. --status failed, keeps a mark of its own)."""

    __tablename__ = "sync_state"

    account_id = col(String(255), primary_key=True)
    scope = col(String(255), primary_key=True, default="")
    high_water_mark = col(UTCDateTime)
    last_run_id = col(BigInteger)
    updated_at = col(UTCDateTime, nullable=False)


class JobStatusChangeRow(Base):
    __tablename__ = "job_status_changes"
    __table_args__ = (Index("ix_job_status_changes_job_id_observed_at", "job_id", "observed_at"),)

    id = col(BigId, primary_key=True, autoincrement=True)
    job_id = col(BigInteger, ForeignKey("jobs.id", ondelete="CASCADE"), nullable=False)
    from_status = col(String(64))
    to_status = col(String(64))
    observed_at = col(UTCDateTime, nullable=False)
    api_updated_at = col(UTCDateTime)
    run_id = col(BigInteger)


class PackageRow(Base):
    __tablename__ = "packages"

    id = col(BigInteger, primary_key=True, autoincrement=False)
    name = col(LongText)
    description = col(LongText)
    owner_id = col(BigInteger)
    status = col(LongText)
    url = col(LongText)
    html_url = col(LongText)
    created_at = col(UTCDateTime)
    updated_at = col(UTCDateTime)
    last_synced_at = col(UTCDateTime)
    flow_type = col(String(64))
    variables = col(Payload)
    payload = col(Payload)


class ClusterRow(Base):
    __tablename__ = "clusters"

    id = col(BigInteger, primary_key=True, autoincrement=False)
    name = col(LongText)
    description = col(LongText)
    status = col(LongText)
    owner_id = col(BigInteger)
    plan_id = col(BigInteger)
    nodes = col(BigInteger)
    type = col(LongText)
    region = col(LongText)
    zone = col(LongText)
    master_instance_type = col(LongText)
    slave_instance_type = col(LongText)
    created_at = col(UTCDateTime)
    updated_at = col(UTCDateTime)
    available_since = col(UTCDateTime)
    terminated_at = col(UTCDateTime)
    url = col(LongText)
    html_url = col(LongText)
    last_synced_at = col(UTCDateTime)
    terminate_on_idle = col(Boolean)
    time_to_idle = col(BigInteger)
    stack = col(LongText)
    payload = col(Payload)


class ScheduleRow(Base):
    """A schedule as its own List endpoint gives it (v2). Its jobs are the jobs with
    creator_type 'Schedule' and creator_id = id."""

    __tablename__ = "schedules"

    id = col(BigInteger, primary_key=True, autoincrement=False)
    name = col(LongText)
    description = col(LongText)
    owner_id = col(BigInteger)
    status = col(String(64))
    start_at = col(UTCDateTime)
    next_run_at = col(UTCDateTime)
    interval_amount = col(BigInteger)
    interval_unit = col(String(32))
    last_run_at = col(UTCDateTime)
    last_run_status = col(String(64))
    execution_count = col(BigInteger)
    overlap = col(Boolean)
    auto_retry = col(Boolean)
    auto_retry_attempts = col(BigInteger)
    reuse_cluster_strategy = col(String(32))
    task_nodes = col(BigInteger)
    task_terminate_on_idle = col(Boolean)
    task_time_to_idle = col(BigInteger)
    created_at = col(UTCDateTime)
    updated_at = col(UTCDateTime)
    url = col(LongText)
    html_url = col(LongText)
    payload = col(Payload)
    last_synced_at = col(UTCDateTime)


class SchedulePackageRow(Base):
    """The packages a schedule's task runs, in task order (replaced whenever the schedule is)."""

    __tablename__ = "schedule_packages"

    schedule_id = col(BigInteger, ForeignKey("schedules.id", ondelete="CASCADE"),
                                             primary_key=True)
    position = col(Integer, primary_key=True, autoincrement=False)
    package_id = col(BigInteger, index=True)
    variables = col(Payload)


class AlertRow(Base):
    """One alert of `archiver check`, from first seen to resolved (an episode per key)."""

    __tablename__ = "alerts"

    key = col(String(255), primary_key=True)
    kind = col(String(32), nullable=False)
    severity = col(String(16), nullable=False)
    schedule_id = col(BigInteger)
    package_id = col(BigInteger)
    job_id = col(BigInteger)
    since = col(UTCDateTime)
    message = col(LongText)
    first_seen_at = col(UTCDateTime, nullable=False)
    last_seen_at = col(UTCDateTime, nullable=False)
    resolved_at = col(UTCDateTime, index=True)
    silenced_until = col(UTCDateTime)
    notified_at = col(UTCDateTime)
    resolved_notified_at = col(UTCDateTime)


class JobAnomalyRow(Base):
    """A verdict of the anomaly rules (archiver.anomaly) on one job; several per job when
    several outputs drop. Written where jobs are written, for newly finished jobs."""

    __tablename__ = "job_anomalies"
    __table_args__ = (Index("ix_job_anomalies_package_id_detected_at", "package_id", "detected_at"),)

    job_id = col(BigInteger, ForeignKey("jobs.id", ondelete="CASCADE"),
                                        primary_key=True, autoincrement=False)
    kind = col(String(32), primary_key=True)
    output_key = col(ExactKey, primary_key=True, default="")   # binary on MySQL (migration 0011)
    package_id = col(BigInteger)
    severity = col(String(16), nullable=False)
    score = col(Double)
    baseline_median = col(Double)
    mad = col(Double)
    n = col(Integer, nullable=False)
    threshold = col(Double)
    message = col(LongText, nullable=False)
    job_created_at = col(UTCDateTime, index=True)
    detected_at = col(UTCDateTime, nullable=False)


class UnscoredJobRow(Base):
    """A newly finished job whose verdicts a second process is still computing
    (archiver.flows.scoring): listed with its batch, taken off with its verdicts. No foreign
    key (migration 0014): its check cost a lookup per listed job, and a listed job that is gone
    is only taken off the list."""

    __tablename__ = "unscored_jobs"

    job_id = col(BigInteger, primary_key=True, autoincrement=False)
    run_id = col(BigInteger)


class AlertDeliveryRow(Base):
    """Each POST of `check --notify`: which alert, which event, and whether it arrived."""

    __tablename__ = "alert_deliveries"

    id = col(BigId, primary_key=True, autoincrement=True)
    alert_key = col(String(255), index=True, nullable=False)
    event = col(String(16), nullable=False)
    attempted_at = col(UTCDateTime, nullable=False)
    attempts = col(Integer, nullable=False)
    http_status = col(Integer)
    delivered = col(Boolean, nullable=False)
    error = col(LongText)


class _DayGroups:
    """The key of a daily rollup: account, UTC day and package, each possibly NULL (no account,
    no package), hence the surrogate id; indexed by day and package, and by account and day
    (migration 0010's `_day_table` makes the tables the same way)."""

    @classmethod
    def __table_args__(cls) -> tuple:
        name = cls.__tablename__
        return (Index(f"ix_{name}_day_package_id", "day", "package_id"),
                Index(f"ix_{name}_account_id_day", "account_id", "day"))

    id = col(BigId, primary_key=True, autoincrement=True)
    account_id = col(String(255))   # first, as in the tables
    day = col(Date)
    package_id = col(BigInteger)


class DailyPackageRollupRow(_DayGroups, Base):
    """Counts per account, UTC day and package, recounted for the groups each write of jobs
    changed (archiver.store), so daily_package_stats reads thousands of rows, not millions."""

    __tablename__ = "daily_package_rollup"

    jobs = col(BigInteger, nullable=False)
    completed = col(BigInteger, nullable=False)
    failed = col(BigInteger, nullable=False)
    stopped = col(BigInteger, nullable=False)
    failure_rate = col(Double)
    avg_runtime_seconds = col(Double)
    max_runtime_seconds = col(BigInteger)
    # every runtime_in_seconds of the finished jobs, comma-separated, any order (migration 0009):
    # exact percentiles of any run of whole days without sorting the jobs (report runtimes)
    runtimes = col(LongText)
    retries = col(BigInteger, server_default="0", nullable=False)     # migration 0010
    run_seconds = col(BigInteger)


class DailyOutputRollupRow(_DayGroups, Base):
    """Outputs' records per account, UTC day, package and output key (migration 0010), kept with
    daily_package_rollup by the same writes: report html's records chart reads days, not jobs."""

    __tablename__ = "daily_output_rollup"

    output_key = col(LongText, nullable=False)
    jobs = col(BigInteger, nullable=False)
    records = col(BigInteger, nullable=False)
    completed = col(BigInteger, nullable=False)
    completed_records = col(BigInteger, nullable=False)


class DailyErrorRollupRow(_DayGroups, Base):
    """Failed jobs per account, UTC day, package and error signature (migration 0010), kept with
    daily_package_rollup by the same writes: report html's failures by error read days, not jobs."""

    __tablename__ = "daily_error_rollup"

    error_signature = col(String(300))
    jobs = col(BigInteger, nullable=False)
    first_failed_at = col(UTCDateTime)
    last_failed_at = col(UTCDateTime)
    last_job_id = col(BigInteger, nullable=False)


class DailyScheduleRollupRow(Base):
    """Scheduled runs and their retries per account, UTC day (of scheduled_at), schedule and
    package (migration 0010), recounted with schedule_runs by each write: report html's retries
    read days, not runs."""

    __tablename__ = "daily_schedule_rollup"
    __table_args__ = (Index("ix_daily_schedule_rollup_day", "day"),
                      Index("ix_daily_schedule_rollup_schedule_id_package_id_day", "schedule_id", "package_id", "day"))

    id = col(BigId, primary_key=True, autoincrement=True)
    account_id = col(String(255))
    day = col(Date)
    schedule_id = col(BigInteger)
    package_id = col(BigInteger)
    runs = col(BigInteger, nullable=False)
    retried = col(BigInteger, nullable=False)
    retries = col(BigInteger, nullable=False)
    recovered = col(BigInteger, nullable=False)
    failed = col(BigInteger, nullable=False)


class ScheduleRunRow(Base):
    """One scheduled run: a schedule's first attempt of a package and the retries that follow
    it, recomputed by each write of jobs from the touched schedule's last failed first attempt
    on (archiver.store); the schedule_attempts view reads it."""

    __tablename__ = "schedule_runs"
    __table_args__ = (Index("ix_schedule_runs_schedule_id_package_id_scheduled_at",
                            "schedule_id", "package_id", "scheduled_at"),
                      Index("ix_schedule_runs_scheduled_at", "scheduled_at"),
                      Index("ix_schedule_runs_outcome_scheduled_at", "outcome", "scheduled_at"))

    first_job_id = col(BigInteger, primary_key=True, autoincrement=False)
    account_id = col(String(255))
    schedule_id = col(BigInteger)
    package_id = col(BigInteger)
    last_job_id = col(BigInteger, nullable=False)
    scheduled_at = col(UTCDateTime)
    ended_at = col(UTCDateTime)
    attempts = col(BigInteger, nullable=False)
    failed_attempts = col(BigInteger, nullable=False)
    final_status = col(String(64))
    outcome = col(String(64))


class CreatorRow(Base):
    """The schedule or user that created jobs (v2 `creator`)."""

    __tablename__ = "creators"

    type = col(String(64), primary_key=True)
    id = col(BigInteger, primary_key=True, autoincrement=False)
    display_name = col(LongText)
    url = col(LongText)
    html_url = col(LongText)
    last_synced_at = col(UTCDateTime)


class JobLogSummaryRow(Base):
    __tablename__ = "job_log_summaries"

    job_id = col(BigInteger, ForeignKey("jobs.id", ondelete="CASCADE"),
                                        primary_key=True, autoincrement=False)
    log_id = col(BigInteger)
    error_summary = col(LongText)
    action_items = col(Payload)
    body = col(LongText)
    created_at = col(UTCDateTime)


def _document_columns() -> None:
    """Column comments from archiver.schema_docs, so `alembic check` sees a change that needs
    a migration."""
    for name, table in Base.metadata.tables.items():
        for column in table.columns:
            column.comment = COLUMN_DOCS[name][column.name]


_document_columns()
