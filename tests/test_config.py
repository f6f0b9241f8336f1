"""Configuration: masked URLs even when they do not parse, loopback by parsed address, the key
file's checks, the lazy key, ARCHIVER_DATABASE_URL_FILE."""

import logging
import os

import pytest
import responses

from archiver import config
from archiver.config import (ConfigError, check_api_url, database_url, is_loopback, mask_url, mask_url_text,
                             read_api_key, scrub)
from archiver.database import open_engine
from tests.clirun import run_cli

API = "https://api.example.test"


# -- URLs that do not parse never show their credentials ---------------------------------------------
BROKEN = [
    ("postgresql+psycopg://user:pa@ss:w0rdz@127.0.0.1:1/db", ("pa@ss", "w0rdz", "ss:w0rdz")),
    ("postgresql+psycopg://user:pa:ss@w0rdz@127.0.0.1:1/db", ("pa:ss", "w0rdz")),
    ("mysql+pymysql://root:passwo:rdSecretTail@127.0.0.1:5433/db", ("passwo", "rdSecretTail")),
    ("postgresql+psycopg://user:p@s5w:rdSecretTail@127.0.0.1:5433/db", ("p@s5w", "s5w", "rdSecretTail")),
]


@pytest.mark.parametrize("url, secrets", BROKEN)
def test_mask_url_shows_nothing_of_credentials_it_cannot_parse(url, secrets):
    shown = mask_url(url)
    assert not any(s in shown for s in secrets), shown
    assert shown.endswith("127.0.0.1:1/db") or shown.endswith("127.0.0.1:5433/db")


def test_mask_url_keeps_the_user_of_a_url_that_parses():
    assert mask_url("postgresql+psycopg://u:s3cret@h:5432/db") == "postgresql+psycopg://u:***@h:5432/db"
    assert mask_url("sqlite:///x.db") == "sqlite:///x.db"
    assert mask_url_text("http://u:pa@ss@h/x") == "http://***@h/x"
    assert mask_url_text("http://u:pw@h/x") == "http://u:***@h/x"


@pytest.mark.parametrize("url, secrets", BROKEN)
@pytest.mark.parametrize("command", [["report", "status"], ["db", "current"], ["sync", "157"], ["doctor"]])
def test_every_command_refuses_a_broken_url_without_showing_its_credentials(capsys, monkeypatch, url, secrets,
                                                                             command):
    env = {"XPLENTY_ACCOUNT_ID": "acme", "XPLENTY_API_KEY": "k3y-0123456789", "XPLENTY_API_URL": API}
    with responses.RequestsMock(assert_all_requests_are_fired=False) as mock:
        mock.get(f"{API}/acme/api/rate_limit_status", status=401, json={"message": "no"})
        result = run_cli(capsys, monkeypatch, command + ["--db", url], env)
    assert result.code in (2, 3), result.err  # doctor: the 401 above (3) wins over the URL (2)
    text = result.out + result.err
    assert not any(s in text for s in secrets), text
    assert "unexpected" not in text and "invalid literal" not in text


@pytest.mark.parametrize("url, secrets", BROKEN)
def test_open_engine_refuses_a_broken_url_as_a_config_error(url, secrets):
    with pytest.raises(ConfigError) as error:
        open_engine(url, create=False)
    assert not any(s in str(error.value) for s in secrets)


def test_an_unexpected_error_quoting_the_configured_url_is_printed_scrubbed(capsys, monkeypatch, sqlite_url):
    url = "postgresql+psycopg://archiver:Tr0ub4dor-horse@db.internal:5432/xplenty"

    def explode(*_args, **_kwargs):
        raise RuntimeError(f"driver said: could not use {url} (password Tr0ub4dor-horse)")

    import archiver.flows.report as report

    monkeypatch.setattr(report, "run_report", explode)
    result = run_cli(capsys, monkeypatch, ["report", "status", "--db", url])
    assert result.code == 1 and "unexpected RuntimeError" in result.err
    assert "Tr0ub4dor" not in result.err and "archiver:***@db.internal" in result.err


def test_scrub_takes_out_remembered_secrets():
    config.remember_url("postgresql+psycopg://u:pa@ss:longword@127.0.0.1:1/db")
    assert "longword" not in scrub("invalid literal for int() with base 10: 'longword@127.0.0.1:1'")


# -- loopback by parsed address ----------------------------------------------------------------------
@pytest.mark.parametrize("host, local", [
    ("127.0.0.1", True), ("127.9.8.7", True), ("::1", True), ("[::1]", True), ("localhost", True),
    ("LOCALHOST", True), ("127.attacker.example", False), ("127.0.0.1.nip.io", False),
    ("localhost.attacker.example", False), ("10.0.0.1", False), ("::ffff:8.8.8.8", False), ("", False),
])
def test_loopback_is_decided_by_the_parsed_address(host, local):
    assert is_loopback(host) is local


def test_plain_http_to_a_host_that_only_looks_local_is_refused():
    with pytest.raises(ConfigError, match="refusing plain http"):
        check_api_url("http://127.attacker.example/")
    for url in ("http://127.0.0.1:8765", "http://[::1]:8765", "http://localhost:8765"):
        assert check_api_url(url) == url


def test_cli_refuses_http_to_127_dot_something_before_any_request(capsys, monkeypatch):
    env = {"XPLENTY_ACCOUNT_ID": "acme", "XPLENTY_API_KEY": "k3y-0123456789",
           "XPLENTY_API_URL": "http://127.attacker.example"}
    with responses.RequestsMock() as mock:
        result = run_cli(capsys, monkeypatch, ["sync", "157"], env)
        assert not mock.calls
    assert result.code == 2 and "refusing plain http:// to 127.attacker.example" in result.err


# -- the key file ------------------------------------------------------------------------------------
def key_file(tmp_path, text="k3y-from-a-file", mode=0o600):
    path = tmp_path / "key"
    path.write_text(text)
    path.chmod(mode)
    return path


def test_a_private_key_file_is_read_without_a_warning(tmp_path, caplog):
    with caplog.at_level(logging.WARNING):
        key = read_api_key({"XPLENTY_API_KEY_FILE": str(key_file(tmp_path, " k3y \n"))})
    assert key.reveal() == "k3y" and not caplog.records


@pytest.mark.parametrize("mode", [0o640, 0o604, 0o644])
def test_a_key_file_others_may_read_gets_a_warning(tmp_path, caplog, mode):
    path = key_file(tmp_path, mode=mode)
    with caplog.at_level(logging.WARNING):
        assert read_api_key({"XPLENTY_API_KEY_FILE": str(path)}).reveal() == "k3y-from-a-file"
    assert f"{path} is readable by group or others (mode {mode:04o})" in caplog.text
    assert "k3y-from-a-file" not in caplog.text


def test_a_fifo_a_device_or_a_big_file_is_refused_naming_the_file_only(tmp_path, capsys, monkeypatch):
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)
    big = key_file(tmp_path, "s3cret-content " * 400)
    for path, says in ((fifo, "not a regular file"), ("/dev/null", "not a regular file"),
                       (big, "more than a secret needs"), (tmp_path, "not a regular file")):
        env = {"XPLENTY_ACCOUNT_ID": "acme", "XPLENTY_API_KEY_FILE": str(path), "XPLENTY_API_URL": API}
        with responses.RequestsMock() as mock:
            result = run_cli(capsys, monkeypatch, ["sync", "157"], env)  # a FIFO must not block
            assert not mock.calls
        assert result.code == 2 and says in result.err and str(path) in result.err, result.err
        assert "s3cret-content" not in result.err


@pytest.mark.parametrize("source", ["env", "file"])
def test_a_key_that_cannot_be_a_header_is_one_config_error_before_any_request(tmp_path, capsys, monkeypatch,
                                                                                source):
    key = "k3y-with-€-sign"
    env = {"XPLENTY_ACCOUNT_ID": "acme", "XPLENTY_API_URL": API}
    env |= {"XPLENTY_API_KEY": key} if source == "env" else {"XPLENTY_API_KEY_FILE": str(key_file(tmp_path, key))}
    with responses.RequestsMock() as mock:
        result = run_cli(capsys, monkeypatch, ["sync", "157", "158"], env)
        assert not mock.calls
    assert result.code == 2 and "cannot be sent in an HTTP header" in result.err and "position 10" in result.err
    assert key not in result.err and result.err.count("\n") == 1


@pytest.mark.parametrize("command", [["report", "status"], ["db", "current"], ["db", "upgrade"]])
def test_report_and_db_never_read_the_key(capsys, monkeypatch, tmp_path, sqlite_url, command):
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)  # reading it would be an error: report and db must not try
    env = {"XPLENTY_API_KEY_FILE": str(fifo), "ARCHIVER_DATABASE_URL": sqlite_url}
    result = run_cli(capsys, monkeypatch, command, env)
    assert result.code == 0, result.err


# -- ARCHIVER_DATABASE_URL_FILE -----------------------------------------------------------------------
def test_the_database_url_can_come_from_a_file(capsys, monkeypatch, tmp_path, sqlite_url):
    url_file = tmp_path / "db-url"
    url_file.write_text(sqlite_url + "\n")
    url_file.chmod(0o600)
    result = run_cli(capsys, monkeypatch, ["db", "upgrade"], {"ARCHIVER_DATABASE_URL_FILE": str(url_file)})
    assert result.code == 0, result.err
    current = run_cli(capsys, monkeypatch, ["db", "current"], {"ARCHIVER_DATABASE_URL_FILE": str(url_file)})
    assert current.code == 0 and current.out.startswith(sqlite_url) and not current.err
    assert database_url({"ARCHIVER_DATABASE_URL_FILE": str(url_file)}) == sqlite_url


def test_the_variable_and_the_flag_win_over_the_url_file(capsys, monkeypatch, tmp_path, sqlite_url):
    url_file = tmp_path / "db-url"
    url_file.write_text("sqlite:////no/such/folder/a.db")
    env = {"ARCHIVER_DATABASE_URL_FILE": str(url_file), "ARCHIVER_DATABASE_URL": sqlite_url}
    assert run_cli(capsys, monkeypatch, ["db", "current"], env).out.startswith(sqlite_url)
    flag = run_cli(capsys, monkeypatch, ["db", "current", "--db", sqlite_url],
                   {"ARCHIVER_DATABASE_URL_FILE": str(url_file)})
    assert flag.out.startswith(sqlite_url)
    assert database_url({"ARCHIVER_DATABASE_URL_FILE": str(url_file), "ARCHIVER_DATABASE_URL": "sqlite:///b.db"}) \
        == "sqlite:///b.db"


def test_a_url_file_that_cannot_be_read_is_exit_2_without_its_content(capsys, monkeypatch, tmp_path):
    missing = run_cli(capsys, monkeypatch, ["report", "status"],
                      {"ARCHIVER_DATABASE_URL_FILE": str(tmp_path / "nope")})
    assert missing.code == 2 and "cannot read ARCHIVER_DATABASE_URL_FILE" in missing.err
    big = tmp_path / "big"
    big.write_text("postgresql+psycopg://u:s3cret-content@h/db " * 200)
    result = run_cli(capsys, monkeypatch, ["db", "current"], {"ARCHIVER_DATABASE_URL_FILE": str(big)})
    assert result.code == 2 and str(big) in result.err and "s3cret-content" not in result.err
    doctor = run_cli(capsys, monkeypatch, ["doctor"], {"ARCHIVER_DATABASE_URL_FILE": str(big)})
    assert doctor.code == 2 and "s3cret-content" not in doctor.out + doctor.err
