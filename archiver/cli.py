"""The command line: options -> Settings -> one library call -> print / exit code.

No SQL and no HTTP here. Library errors become exit codes in exactly one place (main).
"""

from __future__ import annotations

import json
import logging
import signal
import sys

import click

from archiver import __version__
from archiver.config import load_settings, log_level, mask_url
from archiver.errors import ArchiverError, ConfigError

EXIT_CODES_HELP = ("Exit codes: 0 every job archived or unchanged; 1 some jobs failed or were not "
                   "found (the rest are stored); 2 usage or configuration error; 3 the API refused "
                   "the credentials; 4 another run holds the lock.")


def _terminate(signum, _frame):
    raise KeyboardInterrupt(f"signal {signum}")


@click.group(context_settings={"help_option_names": ["-h", "--help"]}, epilog=EXIT_CODES_HELP)
@click.version_option(__version__, prog_name="archiver")
@click.option("--log-level", type=click.Choice(["debug", "info", "warning", "error"]), default=None,
              help="Log verbosity (env ARCHIVER_LOG_LEVEL; default warning). Logs go to stderr.")
def cli(**options) -> None:
    """Archive Xplenty (Integrate.io) jobs into a SQL database.

    The API key comes from XPLENTY_API_KEY or XPLENTY_API_KEY_FILE, never from a flag.
    """
    logging.basicConfig(level=log_level(options["log_level"]), stream=sys.stderr, force=True,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    signal.signal(signal.SIGTERM, _terminate)


def db_option(f):
    return click.option("--db", "db", metavar="URL",
                        help="Database URL (env ARCHIVER_DATABASE_URL; default sqlite:///xplenty_archive.db).")(f)


def api_options(f):
    f = click.option("--api-url", metavar="URL", help="API base URL (env XPLENTY_API_URL; "
                     "default https://api.xplenty.com).")(f)
    f = click.option("--account", metavar="ID", help="Xplenty account id (env XPLENTY_ACCOUNT_ID).")(f)
    return db_option(f)


@cli.command(epilog=EXIT_CODES_HELP)
@click.argument("ids", nargs=-1)
@click.option("--ids-file", type=click.File("r"), help="File of job ids, one per line, # comments "
              "allowed; - for stdin.")
@api_options
@click.option("--dry-run", is_flag=True, help="Fetch and validate; write nothing; report what would change.")
@click.option("--json", "as_json", is_flag=True, help="Print the summary as one JSON object.")
@click.option("--concurrency", type=click.IntRange(1, 64), default=8, show_default=True,
              help="Jobs fetched at once.")
@click.option("--batch-size", type=click.IntRange(1, 10_000), default=500, show_default=True,
              help="Jobs written per transaction.")
@click.option("--with-log-summary", is_flag=True, help="Ask for the v2 log_summary of each job.")
@click.option("--wait", type=click.FloatRange(0), default=0, help="Wait up to SECONDS for another "
              "run's lock instead of exiting with code 4.")
@click.option("--max-runtime", type=click.FloatRange(1), default=None,
              help="Stop cleanly after SECONDS.")
def sync(ids, ids_file, account, api_url, db, dry_run, as_json, concurrency, batch_size,
         with_log_summary, wait, max_runtime):
    """Fetch jobs by id (157 304, ranges 100-200) and upsert them into the archive."""
    from archiver.sync import SyncOptions, parse_id_args, sync_ids

    job_ids = parse_id_args(ids, ids_file or ())
    if not job_ids:
        raise ConfigError("no job ids given: pass IDS or --ids-file")
    settings = load_settings(account=account, api_url=api_url, db=db).require_api()
    options = SyncOptions(dry_run=dry_run, concurrency=concurrency, batch_size=batch_size,
                          with_log_summary=with_log_summary, wait=wait, max_runtime=max_runtime)
    summary = sync_ids(settings, job_ids, options)
    click.echo(json.dumps(summary.as_dict(), default=str) if as_json else summary.line())
    sys.exit(summary.exit_code)


@cli.group()
def db():
    """Manage the archive's schema (Alembic migrations)."""


@db.command("upgrade")
@db_option
@click.argument("revision", default="head")
def db_upgrade(db, revision):
    """Migrate the database up to REVISION (default: head)."""
    from archiver import store

    url = load_settings(db=db).database_url
    store.upgrade(store.make_engine(url), revision)
    click.echo(f"{mask_url(url)} is at revision {store.current_revision(store.make_engine(url))}")


@db.command("downgrade")
@db_option
@click.argument("revision")
def db_downgrade(db, revision):
    """Migrate the database down to REVISION (`base` removes every table)."""
    from archiver import store

    url = load_settings(db=db).database_url
    store.downgrade(store.make_engine(url), revision)
    click.echo(f"{mask_url(url)} is at revision {store.current_revision(store.make_engine(url))}")


@db.command("current")
@db_option
def db_current(db):
    """Print the database's schema revision and the archiver's head revision."""
    from archiver import store

    url = load_settings(db=db).database_url
    current = store.current_revision(store.make_engine(url))
    click.echo(f"{mask_url(url)}: revision {current or 'none (empty)'}; head {store.head_revision()}")


def format_rows(rows: list[dict], fmt: str) -> str:
    """Rows as an aligned text table, CSV or JSON."""
    if fmt == "json":
        return json.dumps(rows, default=str, indent=2)
    if not rows:
        return "(no rows)" if fmt == "table" else ""
    columns = list(rows[0])
    if fmt == "csv":
        import csv
        import io

        buffer = io.StringIO()
        writer = csv.DictWriter(buffer, fieldnames=columns, lineterminator="\n")
        writer.writeheader()
        writer.writerows(rows)
        return buffer.getvalue().rstrip("\n")
    cells = [[_cell(row[c]) for c in columns] for row in rows]
    widths = [max(len(c), *(len(r[i]) for r in cells)) for i, c in enumerate(columns)]
    lines = ["  ".join(c.ljust(w) for c, w in zip(columns, widths)),
             "  ".join("-" * w for w in widths)]
    lines += ["  ".join(v.rjust(w) if _numeric(v) else v.ljust(w) for v, w in zip(r, widths)) for r in cells]
    return "\n".join(line.rstrip() for line in lines)


def _cell(value) -> str:
    if value is None:
        return ""
    if isinstance(value, float):
        return f"{value:.4g}" if abs(value) < 1 else f"{value:,.1f}"
    if hasattr(value, "strftime"):
        return value.strftime("%Y-%m-%d %H:%M")
    text = str(value)
    return text if len(text) <= 60 else text[:57] + "..."


def _numeric(text: str) -> bool:
    return text.replace(",", "").replace(".", "", 1).lstrip("-").isdigit()


@cli.command()
@click.argument("name", type=click.Choice(["failures", "runtimes", "status"]))
@db_option
@click.option("--since", default="7d", show_default=True,
              help="Period: a span back from now (7d, 24h, 2w) or a date (2026-11-01).")
@click.option("--package", metavar="ID|NAME", help="Only this package (id, or part of its name).")
@click.option("--limit", type=click.IntRange(1), default=None, help="At most N rows.")
@click.option("--format", "fmt", type=click.Choice(["table", "csv", "json"]), default="table",
              show_default=True)
def report(name, db, since, package, limit, fmt):
    """Answers from the archive: failures, runtimes (p50/p95/max and trend) or status counts."""
    from archiver import store
    from archiver.report import run_report

    archive = store.Archive.open(load_settings(db=db).database_url, create=False)
    try:
        rows = run_report(archive.engine, name, since, package=package, limit=limit)
    finally:
        archive.close()
    click.echo(format_rows(rows, fmt))


def main(argv: list[str] | None = None) -> None:
    try:
        cli.main(args=argv, prog_name="archiver", standalone_mode=False)
    except click.exceptions.Exit as exc:
        sys.exit(exc.exit_code)
    except click.ClickException as exc:
        exc.show()
        sys.exit(2)
    except click.exceptions.Abort:
        click.echo("aborted", err=True)
        sys.exit(130)
    except KeyboardInterrupt:
        click.echo("interrupted", err=True)
        sys.exit(130)
    except ArchiverError as exc:
        click.echo(f"archiver: error: {exc}", err=True)
        sys.exit(exc.exit_code)
