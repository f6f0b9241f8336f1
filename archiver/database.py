"""The database as a place: engines, the schema revision, migrations, `archiver db`.

What migrations/env.py and the CLI's `db` commands import; knows nothing of jobs.
Backend differences (driver options, SQLite pragmas, file modes) are archiver.dialect's.
"""

from __future__ import annotations

import logging
import os
import re
from collections.abc import Iterator
from contextlib import contextmanager
from importlib.resources import files

from typing import TYPE_CHECKING

from sqlalchemy import Connection, Engine, column, create_engine, inspect, select, table
from sqlalchemy.engine import make_url
from sqlalchemy.exc import ArgumentError, NoSuchModuleError, OperationalError

from archiver import dialect
from archiver.config import check_database_url, mask_url, remember_url, scrub
from archiver.errors import ConfigError, DatabaseBusy, NoArchive, SchemaOutOfDate
from archiver.jsonio import serialize_json

if TYPE_CHECKING:
    from alembic.config import Config

# Alembic is imported where it is used: a report's start-up (which only checks the revision)
# does not pay for the migration machinery it never runs.
log = logging.getLogger(__name__)


def make_engine(url: str, create: bool = True, read_only: bool = False) -> Engine:
    """An engine for the archive at `url`; `create` lets SQLite make a new file (mode 0600);
    `read_only` connections never write nor take SQLite's write lock (reports)."""
    parsed, options = dialect.engine_options(make_url(url), create=create and not read_only, read_only=read_only)
    engine = create_engine(parsed, json_serializer=serialize_json, pool_pre_ping=True, **options)
    dialect.prepare_engine(engine, read_only=read_only)
    return engine


SUPPORTED_URLS = "sqlite:///PATH, postgresql+psycopg://USER@HOST/DB or mysql+pymysql://USER@HOST/DB"
DRIVERS = {"postgresql": ("psycopg", "postgresql+psycopg", "postgres"),
           "mysql": ("pymysql", "mysql+pymysql", "mysql"), "mariadb": ("pymysql", "mysql+pymysql", "mysql")}


@contextmanager
def database_errors(url: str) -> Iterator[None]:
    """A database that cannot be reached or named is a configuration error (exit 2) that
    says which database (password masked), what is wrong and what to do, not a traceback."""
    where = mask_url(url)
    remember_url(url)  # a driver's message may quote part of a mis-parsed password: scrubbed below
    try:
        yield
    except NoSuchModuleError:
        raise ConfigError(f"{where} is not a database URL the archiver knows; use {SUPPORTED_URLS}") from None
    except ImportError as exc:
        raise ConfigError(missing_driver(url, where, exc.name or "")) from None
    except ArgumentError:
        raise ConfigError(f"not a database URL: {where}; use {SUPPORTED_URLS}") from None
    except ValueError:
        check_database_url(url)  # the URL does not parse: a message without the parser's text
        raise
    except OperationalError as exc:
        if dialect.is_busy(exc):  # transient: another writer; not a configuration error
            raise DatabaseBusy(f"the archive at {where} is busy: another process held its write lock "
                               f"for {dialect.SQLITE_BUSY_TIMEOUT:g}s (a sync, or a tool writing to it); "
                               "a transient condition: the next run tries again") from None
        reason = scrub(str(exc.orig if exc.orig is not None else exc).strip().splitlines()[0][:200])
        raise ConfigError(f"cannot open the archive at {where}: {sqlite_hint(url) or reason}") from None


def missing_driver(url: str, where: str, module: str) -> str:
    parsed = make_url(url)
    backend, driver = parsed.get_backend_name(), parsed.get_driver_name()
    ours, scheme, extra = DRIVERS.get(backend, (None, None, None))
    if ours is None:
        return f"no driver {module!r} for {where}; use {SUPPORTED_URLS}"
    if driver != ours:
        return (f"{where} asks for the {driver} driver, which is not installed; the archiver uses "
                f"{scheme}:// (pip install 'xplenty-archiver[{extra}]')")
    return f"the {ours} driver for {where} is not installed: pip install 'xplenty-archiver[{extra}]'"


def sqlite_hint(url: str) -> str | None:
    """Why SQLite cannot open a file: most often, its folder does not exist."""
    parsed = make_url(url)
    if parsed.get_backend_name() != "sqlite" or not parsed.database or parsed.database == ":memory:":
        return None
    folder = os.path.dirname(os.path.abspath(parsed.database))
    if not os.path.isdir(folder):
        return f"the folder {folder} does not exist"
    if not os.access(folder, os.W_OK):
        return f"the folder {folder} is not writable"
    return None


def open_engine(url: str, create: bool = True, read_only: bool = False) -> Engine:
    """An engine on an archive at the newest revision: an empty database is migrated first
    (when `create`), any other revision is refused with what to do. `read_only`: see make_engine."""
    with database_errors(url):
        engine = make_engine(url, create=create and not read_only, read_only=read_only)
        try:
            ensure_schema(engine, create=create)
        except BaseException:
            engine.dispose()
            raise
    return engine


# -- migrations -----------------------------------------------------------------------------------
def migrations_folder() -> str:
    """Where the migrations are: the checkout's own migrations/ when this archiver runs from a
    source checkout (so its models and migrations always agree, even when another checkout is
    the one installed in editable mode), else the installed package's archiver.migrations."""
    checkout = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    folder = os.path.join(checkout, "migrations")
    if os.path.isfile(os.path.join(checkout, "pyproject.toml")) and os.path.isfile(os.path.join(folder, "env.py")):
        return folder
    return str(files("archiver.migrations"))


def alembic_config(url: str | None = None, connection: Connection | None = None) -> Config:
    from alembic.config import Config
    cfg = Config()
    cfg.set_main_option("script_location", migrations_folder())
    cfg.attributes["database_url"] = url
    cfg.attributes["connection"] = connection
    return cfg


VERSION_TABLE = "alembic_version"   # Alembic's default, which migrations/env.py keeps
REVISION_LINE = re.compile(r'^(revision|down_revision) = (?:None|"([^"]+)")$', re.MULTILINE)


def head_revision() -> str:
    """The newest migration's revision: read from the migration files' plain `revision = "..."`
    and `down_revision = ...` lines when they form one chain, else as Alembic reads them.
    Importing Alembic and the migrations cost every command that opens an archive (a report)
    about a tenth of its start-up."""
    return _chain_head() or _alembic_head()


def _alembic_head() -> str:
    from alembic.script import ScriptDirectory
    return ScriptDirectory.from_config(alembic_config()).get_current_head()


def _chain_head() -> str | None:
    """The one revision no migration names as its down_revision; None when the files say
    anything else than a plain chain (Alembic then decides)."""
    revisions, parents = set(), set()
    try:
        folder = os.path.join(migrations_folder(), "versions")
        names = [n for n in os.listdir(folder) if n.endswith(".py") and not n.startswith("__")]
        for name in names:
            with open(os.path.join(folder, name), encoding="utf-8") as source:
                found = REVISION_LINE.findall(source.read())
            lines = {key: value or None for key, value in found}
            if len(found) != 2 or len(lines) != 2 or lines["revision"] is None:
                return None
            revisions.add(lines["revision"])
            parents.add(lines["down_revision"])
    except OSError:
        return None
    heads = revisions - parents
    return heads.pop() if len(heads) == 1 and len(revisions) == len(names) else None


def current_revision(engine: Engine) -> str | None:
    """The revision in the version table, as Alembic reads it (None when there is no table),
    without importing Alembic (see head_revision)."""
    with engine.connect() as conn:
        if not inspect(conn).has_table(VERSION_TABLE):
            return None
        found = conn.execute(select(column("version_num")).select_from(table(VERSION_TABLE))).scalars().all()
    if len(found) > 1:
        raise SchemaOutOfDate(f"the database records {len(found)} schema revisions ({', '.join(sorted(found))}); "
                              "an archive has one")
    return found[0] if found else None


def upgrade(engine: Engine, revision: str = "head") -> None:
    with engine.begin() as conn:
        from alembic import command
        command.upgrade(alembic_config(connection=conn), revision)


def downgrade(engine: Engine, revision: str) -> None:
    with engine.begin() as conn:
        from alembic import command
        command.downgrade(alembic_config(connection=conn), revision)


def migrate(url: str, action: str, revision: str = "head") -> str:
    """`archiver db upgrade|downgrade|current`: do it, and say where the database stands.
    `current` only reads: it never creates a SQLite file."""
    with database_errors(url):
        engine = make_engine(url, create=action != "current", read_only=action == "current")
        try:
            if action == "current" and dialect.is_missing_file(engine):
                return f"{mask_url(url)}: no archive (the file does not exist); head {head_revision()}"
            from alembic.util.exc import CommandError
            try:
                if action in ("upgrade", "downgrade"):
                    # exclusive: no run of any account writes while the schema changes (exit 4)
                    with dialect.schema_lock(engine):
                        (upgrade if action == "upgrade" else downgrade)(engine, revision)
            except CommandError as exc:  # an unknown revision, a downgrade past base...
                raise ConfigError(f"archiver db {action} {revision}: {str(exc).splitlines()[0]}") from None
            current = current_revision(engine)
        finally:
            engine.dispose()
    return f"{mask_url(url)}: revision {current or 'none (empty)'}; head {head_revision()}"


def ensure_schema(engine: Engine, create: bool = True) -> None:
    """Migrate an empty database (when `create`); refuse one at another revision than ours."""
    where = mask_url(str(engine.url))
    if not create and dialect.is_missing_file(engine):
        hint = sqlite_hint(str(engine.url))
        raise NoArchive(f"no archive at {where}" + (f" ({hint})" if hint else "") + ": run `archiver sync` first")
    current, head = current_revision(engine), head_revision()
    if current == head:
        return
    if current is None and not create:
        raise NoArchive(f"{where} holds no archive: run `archiver sync` or `archiver db upgrade` first")
    if current is None:
        if inspect(engine).get_table_names():
            raise SchemaOutOfDate(f"{where} has tables but no archiver schema revision; point --db at "
                                  "an empty database or an archive")
        log.info("empty database: migrating to %s", head)
        with dialect.schema_lock(engine):
            if current_revision(engine) is None:  # not migrated meanwhile by another first run
                upgrade(engine)
        return
    from alembic.script import ScriptDirectory
    known = {rev.revision for rev in ScriptDirectory.from_config(alembic_config()).walk_revisions()}
    if current not in known:
        raise SchemaOutOfDate(f"the database schema is at revision {current}, newer than this "
                              "archiver knows; upgrade xplenty-archiver")
    raise SchemaOutOfDate(f"the database schema is at revision {current}, this archiver needs "
                          f"{head}: run `archiver db upgrade`")
