"""Texts from the API cannot act on the reader's terminal or forge output lines; CSV cells
cannot run as formulas. The database and JSON keep every text as the API sent it."""

import csv
import io
import json
import logging
import re

import pytest
import responses

from archiver import models
from archiver.cli import csv_cell, format_rows
from archiver.errortext import signature
from archiver.flows.runs import SyncSummary
from archiver.textsafe import SafeFormatter, safe_text
from tests.clirun import run_cli
from tests.test_sync import table

API = "https://api.example.test"
KEY = "k3y-that-must-never-leak-0123456789"

CLEAR = "\x1b[2J\x1b[H"
TITLE = "\x1b]0;pwned\x07"
LINK = "\x1b]8;;https://evil.example/\x1b\\https://docs.example/\x1b]8;;\x1b\\"
FAKE = "boom\ninserted 5; all good"
HOSTILE = [CLEAR + "screen", TITLE + "title", LINK, "over\rwrite", FAKE, "abc\u202egpj.exe", "c1\x9b31m",
           "del\x7f", "zero\u200bwidth", "tag\U000e0041", "nul\x00", "sep\u2028line"]
# Every character that may not reach a terminal raw: C0 but the newline between lines, DEL, C1,
# bidi controls, zero-width and tag characters, line/paragraph separators.
RAW = re.compile("[\x00-\x09\x0b-\x1f\x7f-\x9f\u200b\u200e\u200f\u202a-\u202e\u2066-\u2069\u2028\u2029"
                 "\U000e0000-\U000e007f]")


def assert_terminal_safe(text: str) -> None:
    assert not RAW.search(text), repr(RAW.search(text))


# -- the escaping itself ----------------------------------------------------------------------------
@pytest.mark.parametrize("text", HOSTILE)
def test_safe_text_escapes_everything_that_acts_on_a_terminal(text):
    shown = safe_text(text)
    assert_terminal_safe(shown)
    assert "\n" not in shown


def test_safe_text_shows_escapes_as_python_writes_them_and_leaves_ordinary_text_alone():
    assert safe_text("\x1b[2J") == "\\x1b[2J"
    assert safe_text("a\nb\rc\td") == "a\\nb\\rc\\td"
    assert safe_text("x\u202ey") == "x\\u202ey"
    assert safe_text("\x9b") == "\\x9b"
    plain = "Grüße, 東京, مرحبا, emoji 👩‍💻, a\\b C:\\path"
    assert safe_text(plain) == plain
    assert safe_text("tb\nline\x1b", keep_newlines=True) == "tb\nline\\x1b"
    assert safe_text(42) == "42"


def test_log_lines_escape_messages_arguments_and_tracebacks():
    formatter = SafeFormatter("%(levelname)s %(message)s")
    record = logging.LogRecord("archiver", logging.WARNING, __file__, 1, "job %s: %s", (7, FAKE + CLEAR), None)
    line = formatter.format(record)
    assert line == "WARNING job 7: boom\\ninserted 5; all good\\x1b[2J\\x1b[H"
    try:
        raise ValueError("bad" + TITLE)
    except ValueError:
        import sys
        record = logging.LogRecord("archiver", logging.ERROR, __file__, 1, "failed", (), sys.exc_info())
    text = formatter.format(record)
    assert_terminal_safe(text)
    assert "Traceback" in text.splitlines()[1] and "\\x1b]0;pwned\\x07" in text


def test_summary_line_stays_one_line_whatever_the_message():
    summary = SyncSummary(outcome="auth_failed", message=FAKE + CLEAR + "\u202e")
    line = summary.line()
    assert "\n" not in line and "\r" not in line
    assert_terminal_safe(line)
    assert line.endswith("[auth_failed: boom\\ninserted 5; all good\\x1b[2J\\x1b[H\\u202e]")
    assert summary.as_dict()["message"] == FAKE + CLEAR + "\u202e"  # --json keeps it


# -- through the command line ------------------------------------------------------------------------
@pytest.fixture
def env(sqlite_url):
    return {"XPLENTY_ACCOUNT_ID": "xplenation", "XPLENTY_API_KEY": KEY, "XPLENTY_API_URL": API,
            "ARCHIVER_DATABASE_URL": sqlite_url}




@pytest.mark.parametrize("as_json", [False, True])
def test_api_error_messages_reach_the_terminal_escaped_and_the_database_verbatim(
        capsys, monkeypatch, env, sqlite_url, as_json):
    messages = {job_id: text for job_id, text in enumerate(HOSTILE[:5], start=1)}
    with responses.RequestsMock() as mock:
        for job_id, text in messages.items():
            mock.get(f"{API}/xplenation/api/jobs/{job_id}", status=422, json={"message": text})
        args = ["--log-level", "info", "sync", *map(str, messages)] + (["--json"] if as_json else [])
        result = run_cli(capsys, monkeypatch, args, env)
    assert result.code == 1, result.err
    assert_terminal_safe(result.err)
    assert "all good" in result.err and "\ninserted 5" not in result.err
    assert not any(line.startswith("inserted 5") for line in result.err.splitlines())
    assert "job 5: boom\\ninserted 5; all good" in result.err
    stored = {r["job_id"]: r["message"] for r in table(sqlite_url, models.SyncErrorRow)}
    assert stored == messages
    if as_json:
        data = json.loads(result.out)
        assert {e["job_id"]: e["message"] for e in data["errors"]} == messages
    else:
        assert len(result.out.strip().splitlines()) == 1
        assert_terminal_safe(result.out)


def test_an_auth_message_cannot_forge_a_second_summary_line(capsys, monkeypatch, env, sqlite_url):
    with responses.RequestsMock() as mock:
        mock.get(f"{API}/xplenation/api/jobs/157", status=401, json={"message": FAKE + TITLE})
        result = run_cli(capsys, monkeypatch, ["sync", "157"], env)
    assert result.code == 3
    assert result.out.count("\n") == 1 and "inserted 5; all good" in result.out
    assert_terminal_safe(result.out + result.err)
    runs = table(sqlite_url, models.SyncRunRow)
    assert runs[-1]["message"] == FAKE + TITLE


def test_report_table_escapes_job_errors_while_csv_and_json_keep_them(
        capsys, monkeypatch, tmp_path, sqlite_url, payload):
    job = payload("job-v1-failed.json") | {"errors": CLEAR + LINK + FAKE + "\u202e"}
    source = tmp_path / "jobs.jsonl"
    source.write_text(json.dumps(job) + "\n")
    loaded = run_cli(capsys, monkeypatch, ["ingest", str(source), "--db", sqlite_url])
    assert loaded.code == 0, loaded.err
    assert table(sqlite_url, models.JobRow)[0]["errors"] == job["errors"]
    args = ["report", "failures", "--db", sqlite_url, "--since", "2013-03-01"]
    shown = run_cli(capsys, monkeypatch, args)
    assert shown.code == 0, shown.err
    assert_terminal_safe(shown.out)
    # the usual error is the text's signature (numbers masked): its escapes are still there
    usual = signature(job["errors"])[:120]
    assert "\\x1b[<n>J" in shown.out and len(shown.out.strip().splitlines()) == 3  # header, rule, one row
    as_json = run_cli(capsys, monkeypatch, args + ["--format", "json"])
    assert json.loads(as_json.out)[0]["top_error"] == usual and "\x1b" in usual
    as_csv = run_cli(capsys, monkeypatch, args + ["--format", "csv"])
    assert next(csv.DictReader(io.StringIO(as_csv.out)))["top_error"] == usual


def test_format_rows_table_escapes_cells_and_headers():
    text = format_rows([{"pack\x1bage": "name" + TITLE, "n": -3}], "table")
    assert_terminal_safe(text)
    assert text.splitlines()[0].startswith("pack\\x1bage")


# -- CSV injection ----------------------------------------------------------------------------------
@pytest.mark.parametrize("text", ["=HYPERLINK(\"https://evil.example\",\"x\")", "+1+cmd|' /C calc'!A0",
                                  "-2+3", "@SUM(A1:A2)", "\tlead", "\rlead", "\uff1d1+1", "-", "=", "-inf"])
def test_csv_cells_that_a_spreadsheet_would_run_get_a_quote(text):
    assert csv_cell(text) == "'" + text


@pytest.mark.parametrize("value", [-5, -1.5, 0, 3, "-5", "-1.25", "+4", "-2e3", "plain", "a=b", None, True])
def test_csv_numbers_and_ordinary_text_stay_as_they_are(value):
    assert csv_cell(value) == value


def test_csv_output_neutralizes_formulas_only_in_csv():
    rows = [{"package": "=cmd|' /C calc'!A0", "failed": -2, "rate": -0.5, "note": "-3"}]
    out = list(csv.reader(io.StringIO(format_rows(rows, "csv"))))
    assert out == [["package", "failed", "rate", "note"], ["'=cmd|' /C calc'!A0", "-2", "-0.5", "-3"]]
    assert json.loads(format_rows(rows, "json")) == rows
