"""check --notify: one POST per new alert and per resolution, none on repeats, failures retried
by the next check, silenced alerts not sent, and the webhook URL never shown."""

from __future__ import annotations

import json
import logging
import socketserver
import threading
from datetime import datetime, timedelta, timezone
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
from sqlalchemy import select

from archiver import database
from archiver.config import Secret, Settings
from archiver.flows.alerts import CheckOptions, ack, run_check
from archiver.flows.notify import NotifyPolicy, clean, message, post
from archiver.models import AlertDeliveryRow, AlertRow
from clirun import run_cli
from healthrows import Rows

NOW = datetime(2026, 11, 28, 12, 0, tzinfo=timezone.utc)
H = timedelta(hours=1)
TOKEN = "T000/B000/hook-secret-XYZ"
FAST = NotifyPolicy(timeout=5, retries=2, backoff=0)


class Receiver:
    """A webhook on 127.0.0.1 that records every body and answers `statuses` in turn (then 200)."""

    def __init__(self):
        self.bodies: list[dict] = []
        self.statuses: list[int] = []
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):
                length = int(self.headers.get("Content-Length", 0))
                receiver.bodies.append(json.loads(self.rfile.read(length)))
                status = receiver.statuses.pop(0) if receiver.statuses else 200
                self.send_response(status)
                self.send_header("Content-Length", "2")
                self.end_headers()
                self.wfile.write(b"ok")

            def log_message(self, *args):
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.thread = threading.Thread(target=self.server.serve_forever, kwargs={"poll_interval": 0.05},
                                       daemon=True)   # shutdown() waits out one poll: 0.05 s, not 0.5 s
        self.thread.start()
        self.url = f"http://127.0.0.1:{self.server.server_port}/services/{TOKEN}"

    def events(self) -> list[tuple[str, str]]:
        return [(b["event"], b["alert"]["key"]) for b in self.bodies]

    def close(self):
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def receiver():
    r = Receiver()
    yield r
    r.close()


@pytest.fixture
def late_schedule(db_url):
    """Schedule 1 (hourly) missed its 11:00 run; the archive was synced at 11:59."""
    rows = Rows(db_url)
    rows.schedule(1, start_at=NOW - timedelta(days=1), packages=(1,), name="orders <!channel>\x1b[31m")
    rows.hourly_history(1, 1, NOW - timedelta(days=1), NOW - 2 * H)
    rows.sync(NOW - timedelta(minutes=1))
    yield rows
    rows.close()


def check(url: str, receiver: Receiver, now: datetime):
    return run_check(Settings(account=None, database_url=url),
                     CheckOptions(now=now, notify_url=Secret(receiver.url), policy=FAST))


def table(url: str, model) -> list:
    engine = database.make_engine(url)
    try:
        with engine.connect() as conn:
            return conn.execute(select(model.__table__)).all()
    finally:
        engine.dispose()


def test_one_post_per_new_alert_and_per_resolution_none_on_repeats(db_url, late_schedule, receiver):
    check(db_url, receiver, NOW)
    assert receiver.events() == [("new", "late:schedule:1")]
    body = receiver.bodies[0]
    assert set(body) == {"text", "event", "alert"} and body["alert"]["since"] == "2026-11-28T11:00:00Z"
    assert body["alert"]["severity"] == "warning" and "[WARNING] late late:schedule:1" in body["text"]
    check(db_url, receiver, NOW + timedelta(minutes=5))
    assert len(receiver.bodies) == 1
    late_schedule.hourly_history(1, 1, NOW - H, NOW)
    late_schedule.sync(NOW + timedelta(minutes=9))
    check(db_url, receiver, NOW + timedelta(minutes=10))
    assert receiver.events() == [("new", "late:schedule:1"), ("resolved", "late:schedule:1")]
    assert receiver.bodies[1]["text"].startswith("[RESOLVED]")
    check(db_url, receiver, NOW + timedelta(minutes=15))
    assert len(receiver.bodies) == 2
    alert = table(db_url, AlertRow)[0]
    assert alert.notified_at == NOW and alert.resolved_notified_at == NOW + timedelta(minutes=10)
    assert [(d.event, d.delivered, d.attempts, d.http_status) for d in table(db_url, AlertDeliveryRow)] == \
        [("new", True, 1, 200), ("resolved", True, 1, 200)]


def test_a_failed_delivery_is_retried_by_the_next_check_and_never_sent_twice(db_url, late_schedule, receiver):
    receiver.statuses = [503, 503, 503]                    # every attempt of the first check fails
    result = check(db_url, receiver, NOW)
    assert (result.sent, result.failed) == (0, 1) and len(receiver.bodies) == 3
    failed = table(db_url, AlertDeliveryRow)[0]
    assert (failed.delivered, failed.attempts, failed.http_status) == (False, 3, 503)
    assert TOKEN not in failed.error and failed.error == "http://127.0.0.1: HTTP 503"
    assert table(db_url, AlertRow)[0].notified_at is None
    result = check(db_url, receiver, NOW + timedelta(minutes=5))
    assert (result.sent, result.failed) == (1, 0)
    check(db_url, receiver, NOW + timedelta(minutes=10))
    assert len(receiver.bodies) == 4
    assert table(db_url, AlertRow)[0].notified_at == NOW + timedelta(minutes=5)


def test_a_refused_delivery_is_not_retried_at_once(db_url, late_schedule, receiver):
    receiver.statuses = [400]
    assert check(db_url, receiver, NOW).failed == 1
    assert len(receiver.bodies) == 1


def test_silenced_alerts_are_not_sent_and_stay_on_the_board(db_url, late_schedule, receiver):
    settings = Settings(account=None, database_url=db_url)
    run_check(settings, CheckOptions(now=NOW))           # recorded without a webhook
    ack(settings, "late:schedule:1", timedelta(hours=2), now=NOW)
    result = check(db_url, receiver, NOW + timedelta(minutes=5))
    assert receiver.bodies == []
    assert result.board.subjects[1].state == "late" and result.as_dict()["subjects"][1]["silenced"] == \
        ["late:schedule:1"]
    check(db_url, receiver, NOW + 3 * H)                  # the silence is over: sent now
    assert ("new", "late:schedule:1") in receiver.events()


def test_notify_text_is_one_clean_capped_line():
    text = message("new", {"key": "stale:package:7", "kind": "stale", "severity": "critical",
                           "message": "pkg \x1b[2J<!channel> & \u202eevil\nnext" + "x" * 500})["text"]
    assert text.startswith("[CRITICAL] stale stale:package:7: pkg")
    assert "\x1b" not in text and "\u202e" not in text and "\n" not in text
    assert "&lt;!channel&gt; &amp;" in text and len(text) < 340
    assert clean("a\tb") == "a b"


def test_the_webhook_url_never_appears_in_output_or_logs(capsys, monkeypatch, caplog, db_url, late_schedule,
                                                        receiver):
    caplog.set_level(logging.DEBUG)
    receiver.statuses = [400, 400]
    args = ["--log-level", "debug", "check", "--db", db_url, "--now", NOW.isoformat()]
    out = run_cli(capsys, monkeypatch, args, env={"ARCHIVER_NOTIFY_URL": receiver.url})
    assert out.code == 0 and "1 failed" in out.out
    flagged = run_cli(capsys, monkeypatch, [*args, "--notify", receiver.url])
    assert "process list" in flagged.err and "1 failed" in flagged.out
    refused = run_cli(capsys, monkeypatch, args, env={"ARCHIVER_NOTIFY_URL": f"ftp://example.com/{TOKEN}"})
    assert refused.code == 2 and "ARCHIVER_NOTIFY_URL is not an http(s) URL" in refused.err
    closed = Secret(f"http://127.0.0.1:9/services/{TOKEN}")        # nothing listens on port 9
    run_check(Settings(account=None, database_url=db_url), CheckOptions(now=NOW, notify_url=closed, policy=FAST))
    shown = out.out + out.err + flagged.out + flagged.err + refused.out + refused.err + caplog.text
    assert TOKEN not in shown and len(receiver.bodies) == 2
    errors = [d.error for d in table(db_url, AlertDeliveryRow)]
    assert len(errors) == 3 and all(e.startswith("http://127.0.0.1: ") and TOKEN not in e for e in errors)
    assert "ConnectionError" in errors[-1]


def test_the_url_may_come_from_a_file(capsys, monkeypatch, tmp_path, db_url, late_schedule, receiver):
    path = tmp_path / "hook"
    path.write_text(receiver.url + "\n")
    path.chmod(0o600)
    out = run_cli(capsys, monkeypatch, ["check", "--db", db_url, "--now", NOW.isoformat()],
                  env={"ARCHIVER_NOTIFY_URL_FILE": str(path)})
    assert out.code == 0 and receiver.events() == [("new", "late:schedule:1")]
    assert TOKEN not in out.out + out.err


class Trickler(socketserver.BaseRequestHandler):
    """A receiver that answers one byte of headers at a time and never finishes."""

    def handle(self) -> None:
        self.request.recv(65536)
        try:
            for byte in b"HTTP/1.1 200 OK\r\nX-Slow: " + b"a" * 100_000:
                self.request.sendall(bytes([byte]))
                if self.server.done.wait(0.05):
                    return
        except OSError:
            return


@pytest.mark.parametrize("how", ["deadline", "stop"])
def test_a_trickling_receiver_cannot_hold_a_delivery_past_the_deadline_or_a_stop(how):
    """Each byte comes well within the read timeout, so only the total bound ends the POST."""
    server = socketserver.ThreadingTCPServer(("127.0.0.1", 0), Trickler)
    server.daemon_threads, server.done = True, threading.Event()
    threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True).start()
    stop = threading.Event()
    url = Secret(f"http://127.0.0.1:{server.server_address[1]}/hooks/SECRET")
    policy = NotifyPolicy(timeout=5, retries=0, attempt_total=0.5 if how == "deadline" else 600)
    done: list = []
    sender = threading.Thread(target=lambda: done.append(post(url, {"text": "x"}, policy, stop)))
    sender.start()
    if how == "stop":
        stop.set()
    sender.join(timeout=60)   # a guard against a hang, not a measurement
    server.done.set()
    server.shutdown()
    assert not sender.is_alive()
    [delivery] = done
    assert not delivery.delivered
    assert delivery.error.endswith("stop" if how == "stop" else "deadline")
    assert "SECRET" not in delivery.error
