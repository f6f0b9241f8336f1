"""The command line: options -> Settings -> one library call -> print / exit code.

No SQL and no HTTP here. Library errors become exit codes in exactly one place (main).
"""

from __future__ import annotations

import datetime
import decimal
import functools
import json
import logging
import re
import signal
import sys
import threading

import click

from archiver import __version__
from archiver.config import (DEFAULT_API_URL, DEFAULT_DATABASE_URL, INGEST_BATCH_SIZE, LOG_LEVELS, SYNC_BATCH_SIZE,
                             load_settings, scrub)
from archiver.errors import ArchiverError, ConfigError
from archiver.fields import KNOWN_STATUSES
from archiver.textsafe import SafeFormatter, safe_text

EXIT_CODES_HELP = ("Exit codes: 0 every job archived or unchanged; 1 some jobs failed or were not "
                   "found (the rest are stored); 2 usage or configuration error; 3 the API refused "
                   "the credentials; 4 another run holds the lock.")


class Terminated(KeyboardInterrupt):
    """SIGTERM: unwind like Ctrl-C (the transaction in flight rolls back, the run is marked
    interrupted, the lock is freed), then exit 143."""


STOP = threading.Event()   # set by SIGTERM / Ctrl-C: every request in flight and every wait ends at once


def _terminate(signum, _frame):
    STOP.set()
    raise Terminated()


def _interrupt(signum, _frame):
    STOP.set()
    raise KeyboardInterrupt()


@click.group(context_settings={"help_option_names": ["-h", "--help"]}, epilog=EXIT_CODES_HELP)
@click.version_option(__version__, prog_name="archiver")
@click.option("--log-level", type=click.Choice(LOG_LEVELS, case_sensitive=False), default="warning",
              envvar="ARCHIVER_LOG_LEVEL", show_envvar=True, show_default=True,
              help="Log verbosity. Logs go to stderr.")
def cli(**options) -> None:
    """Archive Xplenty (Integrate.io) jobs into a SQL database.

    The API key comes from XPLENTY_API_KEY or XPLENTY_API_KEY_FILE, never from a flag.
    """
    handler = logging.StreamHandler(sys.stderr)  # every log line terminal-safe (API texts reach it)
    handler.setFormatter(SafeFormatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    logging.basicConfig(level=options["log_level"].upper(), handlers=[handler], force=True)
    STOP.clear()
    signal.signal(signal.SIGTERM, _terminate)
    signal.signal(signal.SIGINT, _interrupt)


def db_option(f):
    return click.option("--db", "db", metavar="URL", envvar="ARCHIVER_DATABASE_URL", show_envvar=True,
                        help=f"Database URL (default {DEFAULT_DATABASE_URL}). A password here shows in `ps`: "
                        "use ARCHIVER_DATABASE_URL or ARCHIVER_DATABASE_URL_FILE.")(f)


def account_option(help_text: str):
    return click.option("--account", metavar="ID", envvar="XPLENTY_ACCOUNT_ID", show_envvar=True, help=help_text)


def api_options(f):
    f = click.option("--api-url", metavar="URL", envvar="XPLENTY_API_URL", show_envvar=True,
                     help=f"API base URL (default {DEFAULT_API_URL}).")(f)
    f = account_option("Xplenty account id.")(f)
    return db_option(f)


def run_options(batch_size: int):
    """Options every fetching or loading command shares; `batch_size`: the default --batch-size."""
    return functools.partial(_run_options, batch_size=batch_size)


def _run_options(f, batch_size: int):
    for decorator in reversed([
        click.option("--dry-run", is_flag=True, help="Fetch and validate; write nothing; report what "
                     "would be inserted, updated or left alone."),
        click.option("--json", "as_json", is_flag=True, help="Print the summary as one JSON object."),
        click.option("--batch-size", type=click.IntRange(1, 10_000), default=batch_size, show_default=True,
                     help="Jobs written per transaction."),
        click.option("--wait", type=click.FloatRange(0), default=0, help="Wait up to SECONDS for "
                     "another run's lock instead of exiting with code 4."),
        click.option("--no-lock", is_flag=True, help="Do not take the per-account run lock (for "
                     "tests and experts: overlapping runs stay correct, only slower)."),
    ]):
        f = decorator(f)
    return f


def progress_printer(quiet: bool):
    """A progress line on stderr when it is a terminal; nothing for cron, pipes or --quiet."""
    if quiet or not sys.stderr.isatty():
        return None
    import time

    started = time.monotonic()

    def show(summary) -> None:
        done = summary.settled
        rate = done / max(time.monotonic() - started, 1e-6)
        total = f"/{summary.requested}" if summary.mode == "ids" else ""
        click.echo(f"\r{done}{total} jobs, {rate:,.0f}/s, {summary.errors_count} errors ",
                   nl=False, err=True)
        show.used = True

    return show


def print_summary(summary, as_json: bool, progress=None) -> None:
    if getattr(progress, "used", False):
        click.echo(err=True)  # end the progress line
    click.echo(to_json(summary.as_dict()) if as_json else summary.line())


def to_json(data, indent: int | None = None) -> str:
    """JSON for people and scripts: text as it is (no \\u escapes), times in ISO 8601 UTC with Z."""
    def plain(value):
        if isinstance(value, datetime.datetime):
            return value.astimezone(datetime.timezone.utc).isoformat().replace("+00:00", "Z")
        return str(value)

    return json.dumps(data, default=plain, ensure_ascii=False, indent=indent)


@cli.command(epilog=EXIT_CODES_HELP)
@click.argument("ids", nargs=-1)
@click.option("--ids-file", type=click.File("r"), help="File of job ids, one per line, # comments "
              "allowed; - for stdin.")
@click.option("--incremental", is_flag=True, help="Read what changed since the last run through "
              "List jobs (100 jobs per credit); the first run reads the whole history.")
@click.option("--refresh-open", is_flag=True, help="Re-fetch the stored jobs that are not finished.")
@click.option("--since", "since_text", metavar="WHEN", help="--incremental: start here instead of the stored "
              "high-water mark: a span back from now (7d, 24h, 2w), a date or an ISO 8601 time")
@click.option("--full", is_flag=True, help="--incremental: ignore the mark, read the whole history.")
@click.option("--status", type=click.Choice(sorted(KNOWN_STATUSES)),
              help="--incremental: only jobs in this status (keeps its own mark).")
@click.option("--package-id", type=click.IntRange(1), help="--incremental: only this package's jobs.")
@click.option("--no-catalog", is_flag=True, help="--incremental: do not read schedules, packages and "
              "clusters after the jobs (an unfiltered run does, for a few credits).")
@api_options
@run_options(SYNC_BATCH_SIZE)
@click.option("--concurrency", type=click.IntRange(1, 64), default=8, show_default=True,
              help="Jobs fetched at once.")
@click.option("--with-log-summary", is_flag=True, help="Ask for the v2 log_summary of each job.")
@click.option("--max-runtime", type=click.FloatRange(1), default=None,
              help="Stop cleanly after SECONDS (requests in flight included; outcome `deadline`, exit 1).")
@click.option("--max-response-mb", type=click.FloatRange(0.001), default=8, show_default=True,
              help="Largest answer read, in MiB after decompression; a larger one is recorded as "
              "too_large and not retried.")
@click.option("--max-credits", type=click.IntRange(1), default=None,
              help="Stop cleanly before spending more than N API credits.")
@click.option("--reserve", type=click.IntRange(0), default=50, show_default=True,
              help="Stop when X-RateLimit-Remaining falls to N, before the API refuses.")
@click.option("--allow-insecure-http", is_flag=True,
              help="Allow a plain http:// API URL on a non-loopback host (the key travels unencrypted).")
@click.option("--quiet", "-q", is_flag=True, help="No progress line, even on a terminal.")
def sync(ids, ids_file, incremental, refresh_open, since_text, full, status, package_id, no_catalog, account,
         api_url, db, dry_run, as_json, batch_size, wait, no_lock, concurrency, with_log_summary,
         max_runtime, max_response_mb, max_credits, reserve, allow_insecure_http, quiet):
    """Fetch jobs and upsert them into the archive.

    By id: `archiver sync 157 304 1000-1100`. For cron: `archiver sync --incremental`.
    """
    from archiver.flows.by_id import JobIds, sync_ids
    from archiver.flows.incremental import IncrementalOptions, sync_incremental, sync_refresh_open
    from archiver.flows.report import parse_since
    from archiver.flows.runs import SyncOptions

    job_ids = JobIds(ids, ids_file)   # streamed: read as the ids are fetched
    modes = [bool(job_ids), incremental, refresh_open]
    if sum(modes) != 1:
        raise ConfigError("give job ids, --incremental or --refresh-open (exactly one)")
    if not incremental and (since_text or full or status or package_id or no_catalog):
        raise ConfigError("--since, --full, --status, --package-id and --no-catalog go with --incremental")
    since = parse_since(since_text).start if since_text else None
    settings = load_settings(account=account, api_url=api_url, db=db,
                             allow_insecure_http=allow_insecure_http).require_api()
    progress = progress_printer(quiet or as_json)
    options = SyncOptions(dry_run=dry_run, concurrency=concurrency, batch_size=batch_size,
                          with_log_summary=with_log_summary, wait=wait, lock=not no_lock,
                          max_runtime=max_runtime, max_credits=max_credits, reserve=reserve, progress=progress,
                          max_response_mb=max_response_mb, stop=STOP, anomalies=anomaly_thresholds())
    if incremental:
        inc = IncrementalOptions(since=since, full=full, status=status, package_id=package_id,
                                 catalog=not no_catalog)
        summary = sync_incremental(settings, options, inc)
    elif refresh_open:
        summary = sync_refresh_open(settings, options)
    else:
        summary = sync_ids(settings, job_ids, options)
    print_summary(summary, as_json, progress)
    sys.exit(summary.exit_code)


@cli.command()
@click.argument("file", type=click.File("rb"))
@db_option
@account_option("Account id to record on the jobs.")
@run_options(INGEST_BATCH_SIZE)
@click.option("--quiet", "-q", is_flag=True, help="No progress line, even on a terminal.")
def ingest(file, db, account, dry_run, as_json, batch_size, wait, no_lock, quiet):
    """Load saved job payloads into the archive, with no API call.

    FILE holds JSON Lines or a JSON array (as List jobs returns it); - reads stdin. Each
    payload goes through the same validation and write rules as `sync` (newer wins,
    unchanged ones cost no write). Without --account the jobs are stored with none; a
    later ingest with --account fills it in.
    """
    from archiver.flows.ingest import ingest as ingest_payloads
    from archiver.flows.runs import SyncOptions
    from archiver.payloads import read_payloads

    settings = load_settings(account=account, db=db, with_key=False)
    progress = progress_printer(quiet or as_json)
    options = SyncOptions(dry_run=dry_run, batch_size=batch_size, wait=wait, lock=not no_lock, progress=progress,
                          anomalies=anomaly_thresholds())
    summary = ingest_payloads(settings, read_payloads(file), options)
    print_summary(summary, as_json, progress)
    sys.exit(summary.exit_code)


def anomaly_thresholds(config_path: str | None = None):
    """The [anomalies] table of the check config (--config, else ARCHIVER_CHECK_CONFIG), else the defaults."""
    from archiver.flows.checkconfig import load_config

    return load_config(config_path).anomalies


@cli.command(epilog="Exit codes: 0 done; 2 usage or configuration error (a bad --config names the file "
             "and key); 4 another run holds the lock.")
@click.option("--rescore", is_flag=True, required=True, help="Score every job's run history again and "
              "replace the stored verdicts (after a threshold change).")
@click.option("--package", "package_id", type=click.IntRange(1), help="Only this package's jobs.")
@click.option("--config", "config_path", metavar="PATH", envvar="ARCHIVER_CHECK_CONFIG", show_envvar=True,
              help="TOML file whose [anomalies] table sets the thresholds (see docs/anomalies.md).")
@db_option
@account_option("Account whose run lock is held while re-scoring.")
@click.option("--wait", type=click.FloatRange(0), default=0, help="Wait up to SECONDS for another run's lock.")
def anomalies(rescore, package_id, config_path, db, account, wait):
    """Anomaly verdicts (slow, zero_records, volume_drop, flaky): `--rescore` recomputes them.

    sync and ingest score each job once, when it finishes; see them with `archiver report anomalies`.
    """
    from archiver.flows.anomalies import rescore as rescore_all

    thresholds = anomaly_thresholds(config_path)
    result = rescore_all(load_settings(account=account, db=db, with_key=False), thresholds, package_id, wait)
    click.echo("\n".join(result.lines()))


@cli.command(epilog="Exit codes: 0 every check passed (warnings allowed); 1 the API did not answer; "
             "2 a configuration problem; 3 the API refused the key (3 wins over 2).")
@api_options
@click.option("--allow-insecure-http", is_flag=True,
              help="Allow a plain http:// API URL on a non-loopback host (the key travels unencrypted).")
@click.option("--json", "as_json", is_flag=True, help="Print the checks as one JSON object.")
def doctor(account, api_url, db, allow_insecure_http, as_json):
    """Check the account, the key (one free API call), the API URL and the database; change nothing.

    Each check is one line: ok, warning, problem (with the fix) or skipped.
    """
    from archiver.flows.doctor import run_doctor

    result = run_doctor(account=account, api_url=api_url, db=db, allow_insecure_http=allow_insecure_http)
    click.echo(json.dumps(result.as_dict()) if as_json else "\n".join(result.lines()))
    sys.exit(result.exit_code)


@cli.group()
def db():
    """Manage the archive's schema (Alembic migrations)."""


@db.command("upgrade")
@db_option
@click.argument("revision", default="head")
def db_upgrade(db, revision):
    """Migrate the database up to REVISION (default: head)."""
    from archiver.database import migrate

    click.echo(migrate(load_settings(db=db, with_key=False).database_url, "upgrade", revision))


@db.command("downgrade")
@db_option
@click.argument("revision")
def db_downgrade(db, revision):
    """Migrate the database down to REVISION (`base` removes every table)."""
    from archiver.database import migrate

    click.echo(migrate(load_settings(db=db, with_key=False).database_url, "downgrade", revision))


@db.command("current")
@db_option
def db_current(db):
    """Print the database's schema revision and the archiver's head revision."""
    from archiver.database import migrate

    click.echo(migrate(load_settings(db=db, with_key=False).database_url, "current"))


class ReportName(click.Choice):
    """The names in archiver.flows.report.REPORTS, read only when needed: importing the
    reports loads Alembic and more, which no other command should wait for."""

    def __init__(self) -> None:
        super().__init__(())

    @property
    def choices(self):
        from archiver.flows.report import DOCUMENTS, REPORTS

        return tuple(REPORTS) + tuple(DOCUMENTS)

    @choices.setter
    def choices(self, _value) -> None:
        pass


def format_rows(rows: list[dict], fmt: str) -> str:
    """Rows as an aligned text table, CSV or JSON.

    JSON keeps every text as stored. CSV keeps it too, except that a text cell a
    spreadsheet would run as a formula gets a leading ' (csv_cell). The table, meant for
    a terminal, shows control and format characters escaped (textsafe.safe_text)."""
    if fmt == "json":
        return to_json(rows, indent=2)
    if not rows:
        return "(no rows)" if fmt == "table" else ""
    columns = list(rows[0])
    if fmt == "csv":
        import csv
        import io

        buffer = io.StringIO()
        writer = csv.DictWriter(buffer, fieldnames=columns, lineterminator="\n")
        writer.writeheader()
        writer.writerows({c: csv_cell(row[c]) for c in columns} for row in rows)
        return buffer.getvalue().rstrip("\n")
    cells = [[_cell(row[c]) for c in columns] for row in rows]
    widths = [max(len(safe_text(c)), *(len(r[i]) for r in cells)) for i, c in enumerate(columns)]
    lines = ["  ".join(safe_text(c).ljust(w) for c, w in zip(columns, widths)),
             "  ".join("-" * w for w in widths)]
    lines += ["  ".join(v.rjust(w) if _numeric(v) else v.ljust(w) for v, w in zip(r, widths)) for r in cells]
    return "\n".join(line.rstrip() for line in lines)


def _cell(value) -> str:
    if value is None:
        return ""
    if isinstance(value, float):
        return f"{value:.3f}" if abs(value) < 1 else f"{value:,.1f}"
    if hasattr(value, "strftime"):
        return value.strftime("%Y-%m-%d %H:%M")
    text = safe_text(value)
    return text if len(text) <= 60 else text[:57] + "..."


FORMULA_STARTS = ("=", "+", "-", "@", "\t", "\r", "\uff1d", "\uff0b", "\uff0d", "\uff20")  # and full-width
NUMBER = re.compile(r"[+-]?(\d+(\.\d*)?|\.\d+)([eE][+-]?\d+)?")


def csv_cell(value):
    """A CSV cell a spreadsheet shows as text (OWASP CSV injection): a text starting with
    = + - @, a tab or a carriage return gets a leading '. Numbers, and texts that are
    numbers (-5, +1.5e3), stay as they are."""
    if value is None or isinstance(value, (bool, int, float, decimal.Decimal)):
        return value
    text = value if isinstance(value, str) else str(value)
    if text.startswith(FORMULA_STARTS) and not NUMBER.fullmatch(text):
        return "'" + text
    return text


def _numeric(text: str) -> bool:
    return text.replace(",", "").replace(".", "", 1).lstrip("-").isdigit()


@cli.command()
@click.argument("name", type=ReportName())
@db_option
@click.option("--since", default=None,
              help="Period: a span back from now (7d, 24h, 2w) or a date (2026-11-01). "
                   "Default: 7d, and 90d for html.")
@click.option("--package", metavar="ID|NAME", help="Only this package (id, or part of its name).")
@click.option("--limit", type=click.IntRange(1), default=None, help="At most N rows.")
@click.option("--format", "fmt", type=click.Choice(["table", "csv", "json"]), default="table",
              show_default=True)
@click.option("-o", "--output", type=click.Path(dir_okay=False, writable=True), default=None,
              help="html: the file to write (default report.html).")
def report(name, db, since, package, limit, fmt, output):
    """Answers from the archive: failures, runtimes (p50/p95/max and trend), status counts or
    anomalies (the verdicts stored by sync and ingest, newest first); `html` writes one
    self-contained page of charts and tables that opens offline."""
    from pathlib import Path

    from archiver.flows.report import DOCUMENTS, run_report

    database_url = load_settings(db=db, with_key=False).database_url
    if name in DOCUMENTS:
        from archiver.flows.report_html import write_html_report

        written = write_html_report(database_url, Path(output or DOCUMENTS[name]), since or "90d", package)
        click.echo(f"wrote {written.path} ({written.bytes:,} bytes, {written.seconds:.1f}s)")
        return
    rows = run_report(database_url, name, since or "7d", package, limit)
    # color=True: click would strip escape sequences from a CSV cell; the table has none left
    click.echo(format_rows(rows, fmt), color=True)


@cli.command(epilog="Exit codes: 0 nothing unsilenced at or above --fail-on; 1 something is; "
             "2 usage or configuration error (a bad --config names the file and key).")
@db_option
@click.option("--format", "fmt", type=click.Choice(["table", "json"]), default="table", show_default=True)
@click.option("--fail-on", type=click.Choice(["warning", "critical"]), default="critical", show_default=True,
              help="Exit 1 when an unsilenced alert is at or above this severity.")
@click.option("--config", "config_path", metavar="PATH", envvar="ARCHIVER_CHECK_CONFIG", show_envvar=True,
              help="TOML file of thresholds and severities (see docs/health.md).")
@click.option("--notify", "notify_flag", metavar="URL", help="POST new and resolved alerts to this webhook. "
              "It is a secret and shows in `ps`: use ARCHIVER_NOTIFY_URL or ARCHIVER_NOTIFY_URL_FILE.")
@click.option("--now", "now_text", hidden=True, help="Judge as if it were this ISO time (tests).")
def check(db, fmt, fail_on, config_path, notify_flag, now_text):
    """Judge every schedule and package run by hand from the archive (no API call): late,
    stale, failing, stuck, anomalies (slow, zero_records, volume_drop, flaky), and the archiver's
    own syncs; record alerts; notify once."""
    import os

    from archiver.flows.alerts import CheckOptions, run_check
    from archiver.flows.notify import resolve_url

    options = CheckOptions(config_path=config_path, fail_on=fail_on, now=parse_now(now_text), stop=STOP,
                           notify_url=resolve_url(notify_flag, os.environ))
    result = run_check(load_settings(db=db, with_key=False), options)
    click.echo(to_json(result.as_dict(), indent=2) if fmt == "json" else result.table())
    sys.exit(result.exit_code)


@cli.command()
@click.argument("alert", metavar="KEY")
@click.option("--for", "for_text", metavar="DURATION", default="24h", show_default=True,
              help="How long: 90m, 24h, 2d, 1w (0m lifts a silence).")
@db_option
def ack(alert, for_text, db):
    """Silence the alert KEY (e.g. late:schedule:42): no notification, no exit 1, still on the board."""
    from archiver.flows.alerts import ack as ack_alert
    from archiver.flows.checkconfig import parse_duration

    result = ack_alert(load_settings(db=db, with_key=False), alert, parse_duration(for_text, "--for"))
    click.echo(result.line())


def parse_now(text: str | None) -> datetime.datetime | None:
    if not text:
        return None
    try:
        moment = datetime.datetime.fromisoformat(text)
    except ValueError:
        raise ConfigError(f"--now {text!r}: use an ISO 8601 time") from None
    return moment if moment.tzinfo else moment.replace(tzinfo=datetime.timezone.utc)


@cli.command()
@db_option
@click.option("--textfile", metavar="PATH", help="Write to PATH atomically (for node_exporter's "
              "--collector.textfile.directory; name it *.prom) instead of stdout.")
@click.option("--window", default="7d", show_default=True, help="Span the runtime percentiles cover: 24h, 7d, 2w.")
def metrics(db, textfile, window):
    """Prometheus metrics of the archive: last successes, runs, runtimes, open alerts, syncs.

    Text exposition format 0.0.4 for node_exporter's textfile collector; only reads the archive.
    """
    from archiver.flows.metrics import run_metrics

    text = run_metrics(load_settings(db=db, with_key=False).database_url, textfile, window)
    if textfile is None:
        click.echo(text, nl=False)


@cli.command()
@click.option("--host", default="127.0.0.1", show_default=True, help="Address to listen on.")
@click.option("--port", type=click.IntRange(0, 65535), default=8765, show_default=True,
              help="Port (0 picks a free one and prints it).")
@click.option("--jobs", type=click.IntRange(0), default=1000, show_default=True,
              help="Jobs in the generated history.")
@click.option("--seed", type=int, default=1, show_default=True, help="Seed of the history and faults.")
@click.option("--account", default="sandbox", show_default=True, help="Account id served.")
@click.option("--api-key", default="sandbox-key", show_default=True,
              help="The key clients must send (a sandbox key, not a secret).")
@click.option("--latency-ms", type=click.FloatRange(0), default=0, help="Delay before each response.")
@click.option("--error-rate", type=click.FloatRange(0, 1), default=0, help="Share of 500/502/503 answers.")
@click.option("--drop-rate", type=click.FloatRange(0, 1), default=0,
              help="Share of connections closed without a response.")
@click.option("--bad-json-rate", type=click.FloatRange(0, 1), default=0,
              help="Share of responses with a truncated body.")
@click.option("--rate-limit", type=click.IntRange(1), default=None,
              help="Credits per window; 429 with Retry-After beyond.")
@click.option("--rate-window", type=click.FloatRange(0.1), default=3600, show_default=True,
              help="Rate-limit window in seconds.")
@click.option("--clock-speed", type=click.FloatRange(0), default=0,
              help="Sandbox seconds per real second (0: the clock moves only via POST /_sandbox/advance).")
@click.option("--advance", type=click.FloatRange(0), default=0,
              help="Move the sandbox clock forward by SECONDS before serving.")
@click.option("--link-style", type=click.Choice(["full", "minimal", "none"]), default="full", show_default=True,
              help="Link headers: every query parameter, only offset and limit (the docs' example), or none.")
@click.option("--offset-style", type=click.Choice(["items", "pages"]), default="items", show_default=True,
              help="What `offset` counts in lists: objects, or pages of `limit`.")
@click.option("--scenario", type=click.Choice(["normal", "healthy", "anomalies"]), default="normal",
              show_default=True,
              help="normal: realistic failures and stops; healthy: hourly and daily schedules, nothing broken; "
                   "anomalies: noise of CV 0.3 with weekday effects, injected anomalies (GET /_sandbox/truth).")
@click.option("--days", type=click.FloatRange(0, min_open=True), default=None,
              help="Make the history about DAYS days long (instead of --jobs).")
def sandbox(host, port, jobs, seed, account, api_key, latency_ms, error_rate, drop_rate, bad_json_rate,
            rate_limit, rate_window, clock_speed, advance, link_style, offset_style, scenario, days):
    """Serve a local Xplenty-compatible jobs API over a generated history."""
    from archiver.sandbox import Sandbox, serve

    api = Sandbox(jobs=jobs, seed=seed, account=account, api_key=api_key, host=host, port=port,
                  latency_ms=latency_ms, error_rate=error_rate, drop_rate=drop_rate,
                  bad_json_rate=bad_json_rate, rate_limit=rate_limit, rate_window_s=rate_window,
                  clock_speed=clock_speed, link_style=link_style, offset_style=offset_style,
                  scenario=scenario, days=days)
    try:
        api.start()
    except OSError as exc:
        raise ConfigError(f"cannot listen on {host}:{port}: {exc.strerror or exc}; pick another --port "
                          "(0 picks a free one)") from None
    if advance:
        api.advance(advance)
    ids = api.job_ids()
    known = f"job ids {ids[0]}..{ids[-1]} ({len(ids)} jobs)" if ids else "no jobs yet"
    click.echo(f"sandbox API listening on {api.url} (port {api.port}), account {account!r}, "
               f"{known}; paging: links {link_style}, offset counts {offset_style}. "
               "Point the archiver at it with:\n"
               f"  export XPLENTY_API_URL={api.url} XPLENTY_ACCOUNT_ID={account} "
               f"XPLENTY_API_KEY={api_key}\n"
               + (f"  archiver sync {ids[0]} {ids[-1]}    # ids between them have gaps\n" if ids else "")
               + "Ctrl-C stops it.")
    serve(api)


@cli.command()
@click.option("--jobs", type=click.IntRange(1, 100_000), default=400, show_default=True,
              help="Jobs in the sandbox history.")
@click.option("--seed", type=int, default=1, show_default=True)
def demo(jobs, seed):
    """Sync a sandbox account into ./demo.db; print a short report and the health board, write
    demo-report.html. No configuration needed."""
    from pathlib import Path

    from archiver.flows.demo import BROKEN_FOR, FURTHER_SQL, describe_anomaly, run_demo

    result = run_demo(Path.cwd(), jobs=jobs, seed=seed)
    s = result.summary
    click.echo(f"Synced {s.archived} jobs ({s.inserted} new) from a local sandbox API into {result.path}, "
               f"which now holds {result.jobs_stored} jobs ({s.credits_used} API calls, {s.seconds:.1f}s).\n")
    click.echo("Jobs by status (last 60 days)\n" + format_rows(result.status, "table") + "\n")
    click.echo("Packages that fail most\n" + format_rows(
        [{k: r[k] for k in ("package", "jobs", "failed", "failure_rate", "top_error")} for r in result.failing],
        "table") + "\n")
    click.echo("Slowest packages (runtime of finished jobs)\n" + format_rows(
        [{k: r[k] for k in ("package", "runs", "p50_seconds", "p95_seconds", "max_seconds")}
         for r in result.slowest], "table") + "\n")
    click.echo(f"Look further with SQL: sqlite3 {result.path.name}\n\n{FURTHER_SQL}\n\n"
               f"or: archiver report failures --db sqlite:///{result.path.name} --since 30d\n")
    click.echo(f"All of it as one page of charts, to open in a browser (offline): {result.report}\n"
               f"  again: archiver report html --db sqlite:///{result.path.name} -o {result.report.name}\n")
    if result.anomalies:
        click.echo("The sandbox injected (scenario anomalies; GET /_sandbox/truth):\n"
                   + "".join(f"  {describe_anomaly(anomaly)}\n" for anomaly in result.anomalies))
    click.echo(f"Pipeline health (archiver check). {BROKEN_FOR.total_seconds() / 3600:g} hours before the sync the "
               "sandbox broke two pipelines: " + "; ".join(result.breakages) + ".\n"
               + result.health.table() + f"\n\nagain: archiver check --db sqlite:///{result.path.name}")
    sys.exit(s.exit_code)


def shown(message: str) -> str:
    """An error message as it may meet the terminal: the configured secrets (a database
    password, the key) taken out, control characters escaped, one line."""
    return safe_text(scrub(message))


def main(argv: list[str] | None = None) -> None:
    try:
        cli.main(args=argv, prog_name="archiver", standalone_mode=False)
    except click.exceptions.Exit as exc:
        sys.exit(exc.exit_code)
    except click.ClickException as exc:
        exc.show()
        sys.exit(2)
    except (click.exceptions.Abort, KeyboardInterrupt) as exc:  # click turns Ctrl-C into Abort
        cause = exc if isinstance(exc, KeyboardInterrupt) else exc.__cause__ or exc.__context__
        click.echo("archiver: interrupted; a run in progress is marked interrupted in sync_runs", err=True)
        sys.exit(143 if isinstance(cause, Terminated) else 130)
    except ArchiverError as exc:
        click.echo(f"archiver: error: {shown(str(exc))}", err=True)
        sys.exit(exc.exit_code)
    except Exception as exc:  # a bug or a database failure mid-run: one line, details at debug level
        logging.getLogger("archiver").debug("unexpected error", exc_info=True)
        detail = str(getattr(exc, "orig", None) or exc).strip().splitlines()
        click.echo(f"archiver: unexpected {type(exc).__name__}: {shown(detail[0][:300]) if detail else ''} "
                   "(run with --log-level debug for details)", err=True)
        sys.exit(1)
