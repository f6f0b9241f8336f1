"""`archiver doctor`: check the configuration, the key and account, and the database.

Changes nothing: the API is asked one free call (rate_limit_status), a SQLite file
that does not exist is not created, a write is tried only inside a transaction that
is rolled back, and the run lock is taken and released at once (never waited for).
Returns a DoctorResult; never prints and never exits.

Each check is one line: ok, warning (worth knowing, not a failure), problem (with the
fix) or skipped (an earlier problem leaves nothing to check). The exit code: 3 if the
API refused the key; else 2 if any configuration problem (account, key, key file, API
URL, wrong account, database unreachable, driver missing, schema not at head); else 1
if the API did not answer (network, 5xx, 429); else 0. A lock held by another run is
a warning: a cron run in progress holds it, which is normal.
"""

from __future__ import annotations

import dataclasses
import os
import shlex
import socket
import stat
from collections.abc import Mapping
from typing import Any

import requests
from alembic.script import ScriptDirectory
from sqlalchemy import Engine, inspect, text
from sqlalchemy.engine import make_url
from sqlalchemy.exc import SQLAlchemyError

from archiver import database, dialect
from archiver.client import ACCEPT, RetryPolicy, XplentyClient
from archiver.config import DEFAULT_API_URL, Secret, api_root, check_api_url, mask_url, read_api_key, \
    resolve_database_url
from archiver.errors import ApiError, ArchiverError, AuthError, ConfigError, RunLocked, TlsError
from archiver.flows import scoring
from archiver.store import Archive

OK, WARNING, PROBLEM, SKIPPED = "ok", "warning", "problem", "skipped"
STATUSES = (OK, WARNING, PROBLEM, SKIPPED)
CHECKS = ("account", "api key", "api url", "credentials", "api version", "rate budget",
          "database", "database write", "schema", "lock", "last sync", "anomaly scoring")
DATABASE_REST = ("database write", "schema", "lock", "last sync")   # skipped when "database" fails
# One quick retry at most: a doctor says what is wrong now rather than wait out an outage.
DOCTOR_POLICY = RetryPolicy(max_attempts=2, backoff_base=0.5, backoff_max=1.0, connect_timeout=10.0,
                            read_timeout=30.0)
SERVER_NAMES = {"postgresql": "PostgreSQL", "mysql": "MySQL", "sqlite": "SQLite"}
DB_FIX = "check the database URL (ARCHIVER_DATABASE_URL or --db), the server and its credentials"


def printable(value: str) -> str:
    """`value` with every control or otherwise unprintable character escaped (\\x1b, \\u202e)."""
    return "".join(ch if ch.isprintable() else ch.encode("unicode_escape").decode("ascii") for ch in value)


@dataclasses.dataclass(frozen=True)
class Check:
    name: str
    status: str
    detail: str
    fix: str | None = None
    code: int = 0  # the exit code a problem stands for (0 for the other statuses)

    def line(self) -> str:
        text_ = f"{self.status:<8} {self.name}: {self.detail}"
        return text_ + (f" -> fix: {self.fix}" if self.fix else "")

    def as_dict(self) -> dict[str, Any]:
        return {"name": self.name, "status": self.status, "detail": self.detail, "fix": self.fix}


def ok(name: str, detail: str) -> Check:
    return Check(name, OK, detail)


def warning(name: str, detail: str, fix: str | None = None) -> Check:
    return Check(name, WARNING, detail, fix)


def problem(name: str, detail: str, fix: str, code: int = 2) -> Check:
    return Check(name, PROBLEM, detail, fix, code)


def skipped(name: str, detail: str) -> Check:
    return Check(name, SKIPPED, detail)


@dataclasses.dataclass
class DoctorResult:
    checks: list[Check]

    @property
    def exit_code(self) -> int:
        codes = {c.code for c in self.checks if c.status == PROBLEM}
        return next((code for code in (3, 2, 1) if code in codes), 0)

    def check(self, name: str) -> Check:
        return next(c for c in self.checks if c.name == name)

    def lines(self) -> list[str]:
        problems = sum(c.status == PROBLEM for c in self.checks)
        warnings = sum(c.status == WARNING for c in self.checks)
        if problems:
            end = f"doctor: {problems} problem(s), {warnings} warning(s); exit {self.exit_code}"
        else:
            end = "doctor: all checks passed" + (f" ({warnings} warning(s))" if warnings else "")
        return [c.line() for c in self.checks] + [end]

    def as_dict(self) -> dict[str, Any]:
        return {"checks": [c.as_dict() for c in self.checks], "exit_code": self.exit_code}


def run_doctor(*, account: str | None = None, api_url: str | None = None, db: str | None = None,
               allow_insecure_http: bool = False, environ: Mapping[str, str] | None = None,
               policy: RetryPolicy | None = None) -> DoctorResult:
    """Every check, in CHECKS order. Values as the command line resolved them (None: not
    given); the key from `environ` (os.environ) as load_settings reads it."""
    env = os.environ if environ is None else environ
    account = account or None
    checks = [ok("account", repr(account)) if account else
              problem("account", "no Xplenty account id is set", "set XPLENTY_ACCOUNT_ID or pass --account")]
    key, key_check = _key(env)
    root, url_check = _api_url(api_url or DEFAULT_API_URL, account, allow_insecure_http)
    checks += [key_check, url_check]
    if account and key and root:
        checks += _api(XplentyClient(root, account, key, policy=policy or DOCTOR_POLICY))
    else:
        checks += [skipped(name, "needs the account, the key and a valid API URL")
                   for name in ("credentials", "api version", "rate budget")]
    try:
        checks += _database(resolve_database_url(db, env), account)
    except ConfigError as exc:  # ARCHIVER_DATABASE_URL_FILE unreadable
        checks += [problem("database", str(exc), DB_FIX), *(skipped(n, "no usable database URL")
                                                             for n in DATABASE_REST)]
    checks.append(_scoring(env))
    return DoctorResult([_shown(c, key) for c in checks])


def _shown(check: Check, key: Secret | None) -> Check:
    """The check as it may be shown: the key redacted wherever it appears, control
    characters escaped (texts come from the environment and the API)."""
    secret = key.reveal() if key else ""

    def clean(value: str | None) -> str | None:
        if value is None:
            return None
        if len(secret) >= 4:
            value = value.replace(secret, "********")
        return printable(value)

    return dataclasses.replace(check, detail=clean(check.detail), fix=clean(check.fix))


# -- configuration ---------------------------------------------------------------------------------
def _key(env: Mapping[str, str]) -> tuple[Secret | None, Check]:
    direct, path = env.get("XPLENTY_API_KEY"), env.get("XPLENTY_API_KEY_FILE")
    if direct is not None and direct and not direct.strip():
        return None, problem("api key", "XPLENTY_API_KEY is set but blank",
                             "put the key in XPLENTY_API_KEY, or unset it and use XPLENTY_API_KEY_FILE")
    try:
        key = read_api_key(env)
    except ConfigError as exc:
        return None, problem("api key", str(exc), f"put the key in {path}, readable by this user only "
                             f"(chmod 600 {shlex.quote(path or 'FILE')})")
    if not key:
        return None, problem("api key", "no API key is set", "set XPLENTY_API_KEY_FILE to a file holding the "
                             "key (chmod 600), or XPLENTY_API_KEY (never a flag)")
    if direct:
        also = "; XPLENTY_API_KEY_FILE is set too and ignored" if path else ""
        return key, ok("api key", f"from XPLENTY_API_KEY{also}")
    assert path is not None
    mode = stat.S_IMODE(os.stat(path).st_mode)
    if mode & 0o077:
        return key, problem("api key", f"from XPLENTY_API_KEY_FILE {path}, which group or others may "
                            f"access (mode {mode:04o})", f"chmod 600 {shlex.quote(path)}")
    return key, ok("api key", f"from XPLENTY_API_KEY_FILE {path} (mode {mode:04o})")


def _api_url(url: str, account: str | None, allow_insecure_http: bool) -> tuple[str | None, Check]:
    try:
        root = api_root(check_api_url(url, allow_insecure_http), account)
    except ConfigError as exc:
        return None, problem("api url", str(exc), "set XPLENTY_API_URL (or --api-url) to the service root, "
                             f"e.g. {DEFAULT_API_URL}")
    if root != url.rstrip("/"):
        return root, warning("api url", f"{url} is not the service root; using {root}",
                             f"set XPLENTY_API_URL to {root} (the archiver adds /<account>/api)")
    return root, ok("api url", root)


# -- the API: one free call ------------------------------------------------------------------------
def media_version(content_type: str | None) -> str | None:
    """The `version` parameter of a media type (`application/vnd.xplenty+json; version=2`)."""
    for part in (content_type or "").split(";")[1:]:
        name, _, value = part.partition("=")
        if name.strip().lower() == "version":
            return value.strip().strip('"') or None
    return None


def _api(client: XplentyClient) -> list[Check]:
    account, where = client.account, client.api_url
    rest = ("api version", "rate budget")
    try:
        budget = client.rate_limit_status()
    except AuthError as exc:
        return [problem("credentials", f"the API at {where} refused the key for account {account!r}: "
                        f"{exc.message} (HTTP {exc.status})",
                        "check the key in XPLENTY_API_KEY or XPLENTY_API_KEY_FILE (an API key of this "
                        "account, from the Integrate.io settings) and that the account is active", 3),
                *(skipped(name, "the key was refused") for name in rest)]
    except ConfigError as exc:  # 404: the account (or the URL) is wrong
        return [problem("credentials", str(exc), "set XPLENTY_ACCOUNT_ID (or --account) to the account id "
                        "in your Integrate.io URL, and XPLENTY_API_URL to the service root"),
                *(skipped(name, "the account was not found") for name in rest)]
    except TlsError as exc:
        return [problem("credentials", str(exc), "check the API URL (https:// to a TLS port) and the "
                        "system's CA certificates"), *(skipped(name, "no answer") for name in rest)]
    except (ApiError, ArchiverError, requests.RequestException) as exc:
        return [problem("credentials", f"no usable answer from {where}: {exc}", "check the API URL and the "
                        "network, then run `archiver doctor` again (a 5xx or 429 is usually brief)", 1),
                *(skipped(name, "no answer") for name in rest)]
    finally:
        client.close()
    checks = [ok("credentials", f"the API at {where} accepted the key for account {account!r} "
                 "(rate_limit_status, no credit spent)")]
    asked, answered = media_version(ACCEPT), media_version(client.usage.content_type)
    if answered is None:
        checks.append(ok("api version", f"not stated in the answer (Content-Type {client.usage.content_type!r}); "
                         f"the archiver asks for version {asked}"))
    elif answered == asked:
        checks.append(ok("api version", f"version {answered}, as the archiver asks"))
    else:
        checks.append(warning("api version", f"the API answered version {answered!r}; the archiver asks "
                              f"for version {asked}", "tell the archiver's maintainers"))
    limit = budget.limit if budget.limit is not None else client.usage.limit
    remaining = budget.remaining if budget.remaining is not None else client.usage.remaining
    if remaining is None:
        checks.append(ok("rate budget", "not stated in the answer"))
    elif remaining == 0:
        checks.append(warning("rate budget", f"0 of {limit} calls left in this window: a sync now waits for "
                              "it to refill", "wait, or run syncs less often"))
    else:
        of = f" of {limit}" if limit is not None else ""
        checks.append(ok("rate budget", f"{remaining}{of} calls left in this window"))
    return checks


# -- the database ----------------------------------------------------------------------------------
def _database(url: str, account: str | None) -> list[Check]:
    shown = mask_url(url)
    rest = DATABASE_REST
    try:
        with database.database_errors(url):
            parsed = make_url(url)
    except ConfigError as exc:
        return [problem("database", str(exc), DB_FIX), *(skipped(n, "no usable database URL") for n in rest)]
    sqlite_file = parsed.get_backend_name() == "sqlite" and parsed.database not in (None, "", ":memory:")
    if parsed.get_backend_name() == "sqlite" and not sqlite_file:
        return [problem("database", f"{shown} is an in-memory database: it keeps nothing between runs",
                        "use a file: sqlite:///PATH"), *(skipped(n, "in-memory database") for n in rest)]
    if sqlite_file and not os.path.exists(parsed.database):
        return _new_sqlite(shown, parsed.database)
    writable = _sqlite_writable(parsed.database) if sqlite_file else None
    engine: Engine | None = None
    try:
        with database.database_errors(url):
            engine = database.make_engine(_with_connect_timeout(url), create=False)
            current = database.current_revision(engine)
            reached = ok("database", f"{shown}: reachable ({_server(engine)})")
            tables = set(inspect(engine).get_table_names())
        schema, at_head = _schema(current, tables, shown)
        checks = [reached, writable or _server_writable(engine, tables), schema]
        checks.append(_guarded("lock", _lock, engine, account, parsed.database if sqlite_file else None, at_head))
        checks.append(_guarded("last sync", _last_sync, engine, account, current is None, at_head))
        return checks
    except ConfigError as exc:
        return [problem("database", str(exc), _db_fix(str(exc))),
                *(skipped(n, "the database could not be opened") for n in rest)]
    except SQLAlchemyError as exc:  # e.g. a user refused even reading alembic_version
        return [problem("database", f"{shown}: {_reason(exc)}", DB_FIX),
                *(skipped(n, "the database could not be read") for n in rest)]
    finally:
        if engine is not None:
            engine.dispose()


def _reason(exc: BaseException) -> str:
    lines = str(getattr(exc, "orig", None) or exc).strip().splitlines()
    return lines[0][:200] if lines else type(exc).__name__


def _guarded(name: str, check, *args) -> Check:
    """A check whose database error is its own problem line, not the end of the doctor."""
    try:
        return check(*args)
    except SQLAlchemyError as exc:
        return problem(name, f"cannot read it: {_reason(exc)}", DB_FIX)


def _db_fix(message: str) -> str:
    """The fix a database_errors message names: the pip line, the URL forms, or the folder."""
    if "pip install" in message:
        return "pip install " + message.split("pip install ", 1)[1].rstrip(")")
    if "; use " in message:
        return "use " + message.split("; use ", 1)[1]
    if "does not exist" in message or "not writable" in message:
        return "create the folder, or point the SQLite URL at a folder this user can write"
    return DB_FIX


def _with_connect_timeout(url: str) -> str:
    """psycopg waits for an unanswering host as long as TCP does: ask for 10 seconds
    (PyMySQL has its own 10-second default)."""
    parsed = make_url(url)
    if parsed.get_backend_name() == "postgresql" and parsed.get_driver_name() == "psycopg" \
            and "connect_timeout" not in parsed.query:
        return parsed.update_query_dict({"connect_timeout": "10"}).render_as_string(hide_password=False)
    return url


def _server(engine: Engine) -> str:
    name = engine.dialect.name
    name = "MariaDB" if getattr(engine.dialect, "is_mariadb", False) else SERVER_NAMES.get(name, name)
    version = ".".join(str(part) for part in engine.dialect.server_version_info or ())
    return f"{name} {version}".strip()


def _new_sqlite(shown: str, path: str) -> list[Check]:
    folder = os.path.dirname(os.path.abspath(path))
    if not os.path.isdir(folder):
        return [problem("database", f"{shown}: the folder {folder} does not exist",
                        f"mkdir -p {shlex.quote(folder)} (or point the SQLite URL elsewhere)"),
                *(skipped(n, "no archive folder") for n in ("database write", "schema", "lock", "last sync"))]
    new = ok("database", f"{shown}: no archive yet; will be created by the first sync")
    if not os.access(folder, os.W_OK | os.X_OK):
        write = problem("database write", f"the folder {folder} is not writable by this user",
                        "point the SQLite URL at a folder this user can write, or fix its permissions")
    else:
        write = ok("database write", f"the folder {folder} is writable")
    return [new, write, ok("schema", "empty: the first sync migrates it"),
            skipped("lock", "no archive yet, so no run holds its lock"), ok("last sync", "never")]


def _sqlite_writable(path: str) -> Check:
    """A SQLite archive needs its file and its folder (WAL and journal files) writable."""
    folder = os.path.dirname(os.path.abspath(path))
    for what, where in (("file", path), ("folder", folder)):
        if not os.access(where, os.W_OK):
            return problem("database write", f"the archive's {what} {where} is not writable by this user",
                           "run the archiver as the user that owns the archive, or fix the permissions")
    return ok("database write", "the file and its folder are writable")


def _server_writable(engine: Engine, tables: set[str]) -> Check:
    """Privileges, tried inside a transaction that is rolled back: updates that match no row."""
    try:
        with engine.connect() as conn:
            with conn.begin() as transaction:
                if {"jobs", "sync_runs"} <= tables:
                    conn.execute(text("UPDATE jobs SET status = status WHERE 1 = 0"))
                    conn.execute(text("UPDATE sync_runs SET outcome = outcome WHERE 1 = 0"))
                    detail = "this user may update the archive's tables (tried, rolled back)"
                elif engine.dialect.name == "postgresql":
                    allowed = conn.execute(text("SELECT has_schema_privilege(current_schema(), 'CREATE')")).scalar()
                    if not allowed:
                        return problem("database write", "this user may not create tables in the database's "
                                       "schema, so the first sync cannot migrate it",
                                       "GRANT CREATE ON SCHEMA to this user, or run `archiver db upgrade` as "
                                       "one who may")
                    detail = "this user may create tables (the first sync migrates the database)"
                else:
                    return skipped("database write", "no archive tables yet; the first sync creates them "
                                   "(trying it here would change the database)")
                transaction.rollback()
    except SQLAlchemyError as exc:  # a refused privilege, a read-only server
        return problem("database write", f"cannot write: {_reason(exc)}",
                       "grant this database user INSERT, UPDATE, DELETE (and CREATE for migrations)")
    return ok("database write", detail)


def _schema(current: str | None, tables: set[str], shown: str) -> tuple[Check, bool]:
    head = database.head_revision()
    if current == head:
        return ok("schema", f"at head ({head})"), True
    if current is None:
        if tables:
            return problem("schema", f"{shown} has tables but no archiver schema revision",
                           "point --db at an empty database or an archive"), False
        return ok("schema", "empty: the first sync migrates it"), False
    known = {rev.revision for rev in ScriptDirectory.from_config(database.alembic_config()).walk_revisions()}
    if current not in known:
        return problem("schema", f"revision {current} is newer than this archiver (head {head})",
                       "upgrade xplenty-archiver"), False
    return problem("schema", f"revision {current} is older than this archiver's {head}",
                   "run `archiver db upgrade`"), False


def _lock(engine: Engine, account: str | None, sqlite_path: str | None, at_head: bool) -> Check:
    if not account:
        return skipped("lock", "needs the account (the lock is per account)")
    # dialect's lock file: not made just to look (a doctor run by another user would own it)
    if sqlite_path is not None and not dialect.sqlite_lock_path(engine, account).exists():
        return ok("lock", "free (no run has taken it yet)")
    try:
        with dialect.run_lock(engine, account, wait=0):
            pass
    except RunLocked:
        who = _holder(engine, account, sqlite_path is not None, at_head)
        return warning("lock", f"held by another run ({who})",
                       "nothing, if a sync is running (cron); else look for a stuck archiver process")
    except OSError as exc:  # a lock file this user cannot open
        return problem("lock", f"cannot open the lock file: {exc.strerror}",
                       "run the archiver as the user that owns the archive")
    return ok("lock", f"free (no run for account {account!r} holds it)")


def _holder(engine: Engine, account: str, sqlite: bool, at_head: bool) -> str:
    """Who holds the lock, as far as can be known: SQLite's lock file names the pid; the
    account's sync_runs row still marked running names pid, host and mode, unless it is
    a leftover (another pid than the lock file's, or a process gone from this host)."""
    pid = None
    if sqlite:
        try:
            pid = int(dialect.sqlite_lock_path(engine, account).read_text().split()[0])
        except (OSError, ValueError, IndexError):
            pid = None
    run = Archive(engine, account).running_run() if at_head else None
    if run is not None and ((pid is not None and run["pid"] != pid) or not _may_be_alive(run)):
        run = None
    if run is not None:
        return (f"pid {run['pid']} on {run['hostname']}: {run['mode']} run started "
                f"{run['started_at']:%Y-%m-%d %H:%M:%S} UTC")
    return f"pid {pid}" if pid is not None else "pid not known"


def _may_be_alive(run: dict[str, Any]) -> bool:
    """False only for a run of this host whose process is gone."""
    if run["pid"] is None or run["hostname"] != socket.gethostname()[:255]:
        return True
    try:
        os.kill(run["pid"], 0)
    except ProcessLookupError:
        return False
    except OSError:  # another user's process: alive
        return True
    return True


def _last_sync(engine: Engine, account: str | None, empty: bool, at_head: bool) -> Check:
    if empty:
        return ok("last sync", "never")
    if not at_head:
        return skipped("last sync", "the schema is not at head")
    if not account:
        return skipped("last sync", "needs the account")
    run = Archive(engine, account).last_successful_run()
    if run is None:
        return ok("last sync", "never")
    archived = run["inserted"] + run["updated"] + run["unchanged"]
    when = run["finished_at"] or run["started_at"]
    waiting = Archive(engine, account).unscored_count()
    return ok("last sync", f"{when:%Y-%m-%d %H:%M:%S} UTC, {run['mode']}: {archived} jobs archived "
              f"({run['inserted']} new, {run['updated']} updated, {run['unchanged']} unchanged)"
              + (" [stopped at the credit budget]" if run["outcome"] == "budget" else "")
              + (f"; {waiting} jobs wait for their anomaly verdicts (a run was stopped or killed before "
                 "storing them: the next run scores them)" if waiting else ""))


def _scoring(env: Mapping[str, str]) -> Check:
    """Where `sync` and `ingest` will score anomalies: ARCHIVER_SCORING_WORKER, else the CPUs."""
    try:
        after = scoring.worker_default(env)
    except ConfigError as exc:
        return problem("anomaly scoring", str(exc), f"set {scoring.SETTING} to auto, off or a number of jobs, "
                       "or unset it")
    cpus = scoring.available_cpus()
    quota = scoring.cpu_quota(scoring.CGROUP_ROOT, scoring.PROC_CGROUP)
    why = f"{cpus} CPU{'s' if cpus != 1 else ''}" + (f" (a CPU quota of {quota:g})" if quota is not None else "")
    setting = env.get(scoring.SETTING, "").strip()
    if setting and setting.lower() != "auto":
        why = f"{scoring.SETTING}={setting}"
    if after is None:
        return ok("anomaly scoring", f"in the run's process ({why})")
    return ok("anomaly scoring", f"in a second process once a run has written {after:,} jobs ({why})")
