"""One migration history for all three databases; models and migrations never drift."""

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from sqlalchemy import inspect

from archiver import database, store
from archiver.dialect import compare_type, include_object
from archiver.errors import SchemaOutOfDate
from archiver.models import Base

ROOT = Path(__file__).resolve().parents[1]
TABLES = {"jobs", "job_outputs", "job_variables", "sync_runs", "sync_errors", "sync_state", "schedules",
          "schedule_packages", "alerts", "alert_deliveries", "job_anomalies", "daily_package_rollup",
          "daily_output_rollup", "daily_error_rollup", "daily_schedule_rollup", "schedule_runs",
          "job_status_changes", "packages", "clusters", "creators", "job_log_summaries", "unscored_jobs"}


def test_upgrade_to_head_and_downgrade_to_base(empty_db_url):
    engine = database.make_engine(empty_db_url)
    assert database.current_revision(engine) is None
    database.upgrade(engine)
    assert TABLES <= set(inspect(engine).get_table_names())
    assert database.current_revision(engine) == database.head_revision()
    database.downgrade(engine, "base")
    assert set(inspect(engine).get_table_names()) - {"alembic_version"} == set()
    database.upgrade(engine)
    assert database.current_revision(engine) == database.head_revision()
    engine.dispose()


def test_the_head_read_from_the_migration_files_is_alembics(tmp_path, monkeypatch):
    assert database.head_revision() == database._chain_head() == database._alembic_head() is not None
    versions = tmp_path / "versions"
    versions.mkdir()
    for name, parent in (("a", None), ("b", '"a"'), ("c", '"a"')):
        (versions / f"{name}.py").write_text(f'revision = "{name}"\ndown_revision = {parent}\n')
    monkeypatch.setattr(database, "migrations_folder", lambda: str(tmp_path))
    assert database._chain_head() is None      # two heads: Alembic's to say


def test_models_match_migrations(empty_db_url):
    """Alembic's autogenerate comparison finds no difference (what `alembic check` runs)."""
    engine = database.make_engine(empty_db_url)
    database.upgrade(engine)
    with engine.connect() as conn:
        ctx = MigrationContext.configure(conn, opts={"compare_type": compare_type, "include_object": include_object})
        diff = compare_metadata(ctx, Base.metadata)
    engine.dispose()
    assert diff == []


def test_plain_alembic_from_the_repo_reads_the_archiver_url(tmp_path):
    url = f"sqlite:///{tmp_path / 'plain.db'}"
    env = {**os.environ, "ARCHIVER_DATABASE_URL": url}
    subprocess.run([sys.executable, "-m", "alembic", "upgrade", "head"], cwd=ROOT, env=env, check=True,
                   capture_output=True)
    check = subprocess.run([sys.executable, "-m", "alembic", "check"], cwd=ROOT, env=env,
                           capture_output=True, text=True)
    assert check.returncode == 0, check.stdout + check.stderr
    assert database.current_revision(database.make_engine(url)) == database.head_revision()


def test_empty_database_is_migrated_on_open(tmp_path):
    archive = store.Archive.open(f"sqlite:///{tmp_path / 'new.db'}")
    assert TABLES <= set(inspect(archive.engine).get_table_names())
    archive.close()


def test_older_revision_is_refused_with_the_command_to_run(tmp_path):
    url = f"sqlite:///{tmp_path / 'old.db'}"
    database.upgrade(database.make_engine(url), "0001")
    with pytest.raises(SchemaOutOfDate, match="archiver db upgrade"):
        store.Archive.open(url)


def documented_columns() -> dict[str, dict[str, str]]:
    """docs/schema.md's column tables: {table: {column: meaning}}."""
    text = (ROOT / "docs" / "schema.md").read_text()
    tables = {}
    for table in TABLES:
        section = text.split(f"### {table}\n", 1)[1].split("\n### ", 1)[0]
        tables[table] = {m.group(1): m.group(2).replace("`", "").strip()
                         for m in re.finditer(r"^\| ([a-z_0-9]+) \| [^|]+ \| (.+) \|$", section, re.M)
                         if m.group(1) != "column"}
    return tables


def test_docs_schema_md_describes_every_column_of_the_models():
    """A new column (a new API field, say) without a row in docs/schema.md fails here."""
    models_say = {name: {c.name: c.comment for c in table.columns} for name, table in Base.metadata.tables.items()}
    assert documented_columns() == models_say


@pytest.mark.parametrize("backend", ["postgresql", "mysql"])  # SQLite has no column comments
def test_a_database_at_head_carries_docs_schema_md_as_column_comments(backend, migrated_servers):
    engine = database.make_engine(migrated_servers(backend))
    inspector = inspect(engine)
    comments = {table: {c["name"]: c.get("comment") for c in inspector.get_columns(table)} for table in TABLES}
    engine.dispose()
    assert comments == documented_columns()
