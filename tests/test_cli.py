"""The command line's contract: every command documented, help everywhere, exit codes."""

from pathlib import Path

import click
import pytest

from archiver.cli import cli
from tests.clirun import run_cli

README = (Path(__file__).resolve().parents[1] / "README.md").read_text()


def commands(group: click.Group, prefix: str = "archiver"):
    for name, command in group.commands.items():
        yield f"{prefix} {name}", command
        if isinstance(command, click.Group):
            yield from commands(command, f"{prefix} {name}")


@pytest.mark.parametrize("name, command", list(commands(cli)))
def test_every_command_has_help_and_is_in_the_readme(name, command):
    assert command.help and len(command.help) > 20
    assert f"`{name}" in README or f"{name} " in README


def test_help_runs_for_every_command(capsys, monkeypatch):
    for name, _ in commands(cli):
        result = run_cli(capsys, monkeypatch, name.split()[1:] + ["--help"])
        assert result.code == 0 and "Usage:" in result.out


def test_no_flag_takes_the_api_key():
    for _, command in commands(cli):
        for param in command.params:
            if command.name == "sandbox":
                continue  # the sandbox's own key is a local test value, not a secret
            assert not any("key" in opt for opt in getattr(param, "opts", []))


def test_unknown_option_is_a_usage_error(capsys, monkeypatch):
    assert run_cli(capsys, monkeypatch, ["sync", "--no-such-flag"]).code == 2
    assert run_cli(capsys, monkeypatch, ["sync"]).code == 2
    assert run_cli(capsys, monkeypatch, ["sync", "1", "--incremental"]).code == 2


def test_unreachable_database_is_exit_2_with_the_password_masked(capsys, monkeypatch):
    env = {"XPLENTY_ACCOUNT_ID": "acme", "XPLENTY_API_KEY": "k"}
    url = "postgresql+psycopg://user:hunter2@127.0.0.1:1/nowhere"
    result = run_cli(capsys, monkeypatch, ["sync", "157", "--db", url], env)
    assert result.code == 2 and "cannot open the archive" in result.err
    assert "hunter2" not in result.err and "user:***@" in result.err
    missing = run_cli(capsys, monkeypatch, ["report", "status", "--db", "mysql+nosuchdriver://a/b"])
    assert missing.code == 2 and "not a database URL the archiver knows" in missing.err


@pytest.mark.parametrize("url, says", [
    ("postgresql+psycopg2://u:pw@127.0.0.1/x", "the archiver uses postgresql+psycopg:// (pip install 'xplenty-archiver[postgres]')"),
    ("mysql://root@127.0.0.1/x", "the archiver uses mysql+pymysql:// (pip install 'xplenty-archiver[mysql]')"),
    ("postgres://u@h/x", "use sqlite:///PATH, postgresql+psycopg://"),
    ("sqlte:///x.db", "use sqlite:///PATH"),
    ("sqlite:////no/such/folder/a.db", "the folder /no/such/folder does not exist"),
])
def test_a_database_url_that_cannot_work_says_what_to_do(capsys, monkeypatch, url, says):
    env = {"XPLENTY_ACCOUNT_ID": "acme", "XPLENTY_API_KEY": "k"}
    for args in (["report", "status", "--db", url], ["sync", "157", "--db", url]):
        result = run_cli(capsys, monkeypatch, args, env)
        assert result.code == 2 and says in result.err and "unexpected" not in result.err


def test_progress_line_only_on_a_terminal_and_never_with_quiet(monkeypatch, capsys):
    import sys

    from archiver.cli import progress_printer
    from archiver.flows.runs import SyncSummary

    monkeypatch.setattr(sys.stderr, "isatty", lambda: False)
    assert progress_printer(quiet=False) is None  # cron, pipes
    monkeypatch.setattr(sys.stderr, "isatty", lambda: True)
    assert progress_printer(quiet=True) is None
    show = progress_printer(quiet=False)
    show(SyncSummary(mode="ids", requested=10, inserted=3, updated=1, failed=1))
    line = capsys.readouterr().err
    assert line.startswith("\r4/10 jobs") and "1 errors" in line


def test_the_readmes_example_ids_exist_in_the_default_sandbox():
    import re

    from archiver.sandbox import Sandbox

    examples = re.findall(r"^archiver sync (\d+) (\d+)\s", README, re.M)
    assert examples
    ids = set(Sandbox(jobs=1000, seed=1).job_ids())   # `archiver sandbox` with its defaults
    assert all(int(a) in ids and int(b) in ids for a, b in examples)


def test_ingest_writes_larger_transactions_than_sync_by_default(capsys, monkeypatch, tmp_path, sqlite_url):
    """A bulk load from a file (nothing to pay for again if it is killed) writes 2,000 jobs a
    transaction unless told otherwise; sync keeps 500 (what a killed run fetched for nothing)."""
    import archiver.flows.by_id
    import archiver.flows.ingest

    seen = []

    def capture(name):
        def fake(settings, source, options):
            seen.append((name, options.batch_size))
            raise SystemExit(0)
        return fake

    monkeypatch.setattr(archiver.flows.ingest, "ingest", capture("ingest"))
    monkeypatch.setattr(archiver.flows.by_id, "sync_ids", capture("sync"))
    saved = tmp_path / "jobs.jsonl"
    saved.write_text("")
    assert run_cli(capsys, monkeypatch, ["ingest", str(saved), "--db", sqlite_url]).code == 0
    assert run_cli(capsys, monkeypatch, ["sync", "7", "--db", sqlite_url, "--account", "acme"],
                   {"XPLENTY_API_KEY": "k"}).code == 0
    assert run_cli(capsys, monkeypatch, ["ingest", str(saved), "--db", sqlite_url, "--batch-size", "10"]).code == 0
    assert seen == [("ingest", 2000), ("sync", 500), ("ingest", 10)]
