"""Shared fixtures: sample payloads and one archive fixture over every backend.

Database tests run on SQLite always, and on PostgreSQL and MariaDB/MySQL at the
URLs in ARCHIVER_TEST_POSTGRES_URL / ARCHIVER_TEST_MYSQL_URL (defaults: the local
servers, database archiver_test). The migration tests use one more database per
server, named after the configured one plus "_migrations", and the view tests one plus
"_views" (synced once, read by every view test); missing databases are created. A server that does not answer is a skip on a laptop and a failure in CI
(CI=true).
"""

from __future__ import annotations

import copy
import json
import os
import shutil
from pathlib import Path

import pytest
from hypothesis import HealthCheck, settings
from sqlalchemy import create_engine, inspect, text
from sqlalchemy.engine import make_url

from archiver import database, store

PAYLOADS = Path(__file__).parent / "payloads"
IN_CI = os.environ.get("CI", "").lower() in ("1", "true", "yes")

SERVER_URLS = {
    "postgresql": os.environ.get("ARCHIVER_TEST_POSTGRES_URL",
                                 "postgresql+psycopg://postgres@127.0.0.1:5432/archiver_test"),
    "mysql": os.environ.get("ARCHIVER_TEST_MYSQL_URL",
                            "mysql+pymysql://root@127.0.0.1:3306/archiver_test"),
}
BACKENDS = ["sqlite", "postgresql", "mysql"]

# Hypothesis: "ci" (the default) tries the same examples on every run, so a red build is a
# real regression, never a new random draw; HYPOTHESIS_PROFILE=thorough searches longer at random.
# Property tests take these from the profile, not from their own @settings.
_PROPERTY_TESTS = dict(deadline=None, print_blob=True,
                       suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow,
                                              HealthCheck.data_too_large])
settings.register_profile("ci", max_examples=40, derandomize=True, database=None, **_PROPERTY_TESTS)
settings.register_profile("thorough", max_examples=500, derandomize=False, **_PROPERTY_TESTS)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "ci"))


def load_payload(name: str) -> dict:
    return json.loads((PAYLOADS / name).read_text())


@pytest.fixture
def payload():
    """payload("job-v1-completed.json") -> a fresh deep copy of that sample."""
    return lambda name: copy.deepcopy(load_payload(name))


def server_url(backend: str, suffix: str = "") -> str:
    """The URL of a test database on that server, created if missing; skip/fail if no server.

    Extra databases are named after the configured one (suffix "_migrations" on
    .../archiver_h1 is archiver_h1_migrations), so runs configured with different
    database names never share a database.
    """
    url = make_url(SERVER_URLS[backend])
    if suffix:
        url = url.set(database=f"{url.database}{suffix}")
    try:
        ensure_database(url)
    except Exception as exc:  # no server here
        missing(f"{backend} test server not reachable at {url.render_as_string()}: {type(exc).__name__}",
                "a missing backend is a failure")
    return url.render_as_string(hide_password=False)


def missing(message: str, in_ci: str) -> None:
    """Something a test needs is absent: a skip on a laptop, a failure in CI (CI=true)."""
    if IN_CI:
        pytest.fail(f"{message} (CI=true: {in_ci})")
    pytest.skip(message)


def required_tool(package: str, *names: str) -> str:
    """The path of the first of `names` on PATH, which .ci/run installs from Debian's `package`."""
    for name in names:
        path = shutil.which(name)
        if path is not None:
            return path
    missing(f"{names[0]} not found (Debian: apt-get install {package})",
            f".ci/run installs it; a missing {names[0]} is a failure")


def ensure_database(url) -> None:
    admin = url.set(database="postgres" if url.get_backend_name() == "postgresql" else "mysql")
    engine = create_engine(admin, isolation_level="AUTOCOMMIT")
    try:
        with engine.connect() as conn:
            if url.get_backend_name() == "postgresql":
                exists = conn.execute(text("SELECT 1 FROM pg_database WHERE datname = :d"),
                                      {"d": url.database}).scalar()
                if not exists:
                    conn.execute(text(f'CREATE DATABASE "{url.database}"'))
            else:
                conn.execute(text(f"CREATE DATABASE IF NOT EXISTS `{url.database}` "
                                  "CHARACTER SET utf8mb4 COLLATE utf8mb4_unicode_ci"))
    finally:
        engine.dispose()


def drop_everything(url: str) -> None:
    """Leave the database with no tables or views at all."""
    engine = database.make_engine(url)
    try:
        with engine.begin() as conn:
            insp = inspect(conn)
            name = conn.dialect.name
            cascade = " CASCADE" if name == "postgresql" else ""
            for view in insp.get_view_names():
                conn.execute(text(f"DROP VIEW IF EXISTS {view}{cascade}"))
            if name == "postgresql":
                for table in insp.get_table_names():
                    conn.execute(text(f'DROP TABLE IF EXISTS "{table}" CASCADE'))
            else:
                if name != "sqlite":
                    conn.execute(text("SET FOREIGN_KEY_CHECKS=0"))
                for table in insp.get_table_names():
                    conn.execute(text(f"DROP TABLE IF EXISTS {table}"))
                if name != "sqlite":
                    conn.execute(text("SET FOREIGN_KEY_CHECKS=1"))
    finally:
        engine.dispose()


def truncate_all(url: str) -> None:
    engine = database.make_engine(url)
    try:
        with engine.begin() as conn:
            tables = [t for t in inspect(conn).get_table_names() if t != "alembic_version"]
            if conn.dialect.name == "postgresql":
                conn.execute(text("TRUNCATE " + ", ".join(f'"{t}"' for t in tables) + " RESTART IDENTITY CASCADE"))
            else:
                conn.execute(text("SET FOREIGN_KEY_CHECKS=0"))
                for table in tables:
                    conn.execute(text(f"TRUNCATE TABLE {table}"))
                conn.execute(text("SET FOREIGN_KEY_CHECKS=1"))
    finally:
        engine.dispose()


@pytest.fixture(scope="session")
def migrated_servers():
    """Each server database migrated to head once per session (lazily)."""
    done: dict[str, str] = {}

    def get(backend: str) -> str:
        if backend not in done:
            url = server_url(backend)
            drop_everything(url)
            engine = database.make_engine(url)
            database.upgrade(engine)
            engine.dispose()
            done[backend] = url
        return done[backend]

    return get


@pytest.fixture(scope="session")
def sqlite_template(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("template") / "archive.db"
    engine = database.make_engine(f"sqlite:///{path}")
    database.upgrade(engine)
    engine.dispose()
    return path


@pytest.fixture(params=BACKENDS)
def db_url(request, tmp_path, sqlite_template, migrated_servers) -> str:
    """A migrated, empty archive on each backend."""
    if request.param == "sqlite":
        path = tmp_path / "archive.db"
        shutil.copy(sqlite_template, path)
        return f"sqlite:///{path}"
    url = migrated_servers(request.param)
    truncate_all(url)
    return url


@pytest.fixture
def rows(sqlite_url):
    """An empty migrated SQLite archive to fill with jobs, schedules and syncs (tests/healthrows.py)."""
    from healthrows import Rows
    built = Rows(sqlite_url)
    yield built
    built.close()


@pytest.fixture
def sqlite_url(tmp_path, sqlite_template) -> str:
    path = tmp_path / "archive.db"
    shutil.copy(sqlite_template, path)
    return f"sqlite:///{path}"


@pytest.fixture(params=BACKENDS)
def empty_db_url(request, tmp_path) -> str:
    """A database with no tables at all, on each backend (for migration tests)."""
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'empty.db'}"
    url = server_url(request.param, suffix="_migrations")
    drop_everything(url)
    return url


# -- figures the reliability suite reports at the end of the run --------------------------------
FIGURES: list[str] = []


@pytest.fixture
def figure():
    """figure("...") records a line for the end-of-run 'reliability figures' section."""
    return FIGURES.append


def pytest_terminal_summary(terminalreporter):
    if FIGURES:
        terminalreporter.section("reliability figures")
        for line in FIGURES:
            terminalreporter.write_line(line)
