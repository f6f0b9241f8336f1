"""The archive's tables: the public contract BI users query. Created only by migrations."""

from __future__ import annotations

from datetime import date, datetime, timezone

from sqlalchemy import (JSON, BigInteger, Date, DateTime, Double, ForeignKey, Index, Integer, MetaData,
                        String, Text, TypeDecorator)
from sqlalchemy.dialects import mysql, postgresql
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

NAMING_CONVENTION = {
    "ix": "ix_%(table_name)s_%(column_0_N_name)s",
    "uq": "uq_%(table_name)s_%(column_0_N_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}


class UTCDateTime(TypeDecorator):
    """Aware UTC datetimes everywhere: timestamptz on PostgreSQL, UTC DATETIME(6) on
    MySQL/MariaDB, UTC text on SQLite; values come back aware, in UTC."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def load_dialect_impl(self, dialect):
        if dialect.name in ("mysql", "mariadb"):
            return dialect.type_descriptor(mysql.DATETIME(fsp=6))
        return dialect.type_descriptor(DateTime(timezone=True))

    def process_bind_param(self, value: datetime | None, dialect):
        if value is None:
            return None
        if value.tzinfo is None:
            value = value.replace(tzinfo=timezone.utc)
        value = value.astimezone(timezone.utc)
        return value if dialect.name == "postgresql" else value.replace(tzinfo=None)

    def process_result_value(self, value, dialect):
        if value is None:
            return None
        if isinstance(value, str):  # raw SQLite text, e.g. through a view
            value = datetime.fromisoformat(value)
        if value.tzinfo is None:
            return value.replace(tzinfo=timezone.utc)
        return value.astimezone(timezone.utc)


BigId = BigInteger().with_variant(Integer, "sqlite")  # autoincrement keys (SQLite needs INTEGER)
Payload = JSON().with_variant(postgresql.JSONB(), "postgresql")
# Any text the API sends: MySQL's TEXT stops at 64 KB, so LONGTEXT there.
LongText = Text().with_variant(mysql.LONGTEXT(), "mysql", "mariadb")


class Base(DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING_CONVENTION)


class Job(Base):
    __tablename__ = "jobs"

    id: Mapped[int] = mapped_column(BigInteger, primary_key=True, autoincrement=False)
    account_id: Mapped[str | None] = mapped_column(String(255))
    status: Mapped[str | None] = mapped_column(String(64), index=True)
    owner_id: Mapped[int | None] = mapped_column(BigInteger)
    progress: Mapped[float | None] = mapped_column(Double)
    outputs_count: Mapped[int | None] = mapped_column(BigInteger)
    package_id: Mapped[int | None] = mapped_column(BigInteger, index=True)
    cluster_id: Mapped[int | None] = mapped_column(BigInteger, index=True)
    errors: Mapped[str | None] = mapped_column(LongText)
    url: Mapped[str | None] = mapped_column(LongText)
    runtime_in_seconds: Mapped[int | None] = mapped_column(BigInteger)
    created_at: Mapped[datetime | None] = mapped_column(UTCDateTime, index=True)
    started_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    failed_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    updated_at: Mapped[datetime | None] = mapped_column(UTCDateTime, index=True)
    completed_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    html_url: Mapped[str | None] = mapped_column(LongText)
    log_url: Mapped[str | None] = mapped_column(LongText)
    attempts: Mapped[int | None] = mapped_column(BigInteger)
    master_auto_retry_attempts: Mapped[int | None] = mapped_column(BigInteger)
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

    __table_args__ = (Index("ix_jobs_creator_type_creator_id", "creator_type", "creator_id"),)


class JobOutput(Base):
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


class JobVariable(Base):
    __tablename__ = "job_variables"

    job_id: Mapped[int] = mapped_column(BigInteger, ForeignKey("jobs.id", ondelete="CASCADE"),
                                        primary_key=True)
    name: Mapped[str] = mapped_column(String(255), primary_key=True)
    value: Mapped[str | None] = mapped_column(LongText)


class SyncRun(Base):
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


class SyncError(Base):
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


class SyncState(Base):
    """The incremental high-water mark per account (scope '' = the whole account; a
    filtered run, e.g. --status failed, keeps a mark of its own)."""

    __tablename__ = "sync_state"

    account_id: Mapped[str] = mapped_column(String(255), primary_key=True)
    scope: Mapped[str] = mapped_column(String(255), primary_key=True, default="")
    high_water_mark: Mapped[datetime | None] = mapped_column(UTCDateTime)
    last_run_id: Mapped[int | None] = mapped_column(BigInteger)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime)


class JobStatusChange(Base):
    __tablename__ = "job_status_changes"
    __table_args__ = (Index("ix_job_status_changes_job_id_observed_at", "job_id", "observed_at"),)

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    job_id: Mapped[int] = mapped_column(BigInteger, ForeignKey("jobs.id", ondelete="CASCADE"))
    from_status: Mapped[str | None] = mapped_column(String(64))
    to_status: Mapped[str | None] = mapped_column(String(64))
    observed_at: Mapped[datetime] = mapped_column(UTCDateTime)
    api_updated_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    run_id: Mapped[int | None] = mapped_column(BigInteger)


class Package(Base):
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


class Cluster(Base):
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


class Creator(Base):
    """The schedule or user that created jobs (v2 `creator`)."""

    __tablename__ = "creators"

    type: Mapped[str] = mapped_column(String(64), primary_key=True)
    id: Mapped[int] = mapped_column(BigInteger, primary_key=True, autoincrement=False)
    display_name: Mapped[str | None] = mapped_column(LongText)
    url: Mapped[str | None] = mapped_column(LongText)
    html_url: Mapped[str | None] = mapped_column(LongText)
    last_synced_at: Mapped[datetime | None] = mapped_column(UTCDateTime)


class JobLogSummary(Base):
    __tablename__ = "job_log_summaries"

    job_id: Mapped[int] = mapped_column(BigInteger, ForeignKey("jobs.id", ondelete="CASCADE"),
                                        primary_key=True, autoincrement=False)
    log_id: Mapped[int | None] = mapped_column(BigInteger)
    error_summary: Mapped[str | None] = mapped_column(LongText)
    action_items: Mapped[list | None] = mapped_column(Payload)
    body: Mapped[str | None] = mapped_column(LongText)
    created_at: Mapped[datetime | None] = mapped_column(UTCDateTime)


def _document_columns() -> None:
    """Column comments from archiver.schema_docs (kept in step with migration 0004)."""
    from archiver.schema_docs import COLUMN_DOCS

    for name, table in Base.metadata.tables.items():
        for column in table.columns:
            column.comment = COLUMN_DOCS[name][column.name]


_document_columns()
