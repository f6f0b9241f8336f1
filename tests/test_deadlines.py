"""Deadlines, signals and bounded memory (issue 13).

A request has a total deadline (a server trickling its headers or body a byte at a time
never trips a per-read timeout); every wait ends at the run's deadline and at SIGTERM;
`--max-runtime` holds whatever the server does; an answer is capped after decompression.

Time bounds here are the contract's own ("exit within 5 s", "within max-runtime + 10 s"),
generous on a busy machine; nothing asserts a tight timing.
"""

from __future__ import annotations

import base64
import gzip
import signal
import socket
import subprocess
import sys
import threading
import time

import pytest
import requests
from sqlalchemy import select

from archiver import models
from archiver.client import MIB, RetryPolicy, XplentyClient
from archiver.config import Secret
from archiver.errors import ApiError, DeadlineExceeded, ResponseTooLarge, Stopped
from archiver.sandbox import Sandbox
from archiver.store import Archive
from tests.sandboxed import KEY, NOW, archiver_cmd, cli_env, run_archiver, wait_parked

QUICK = RetryPolicy(max_attempts=2, backoff_base=0.01, backoff_max=0.02, total_timeout=0.75)
EXIT_AFTER_SIGTERM = 5.0     # the contract
DEADLINE_SLACK = 10.0        # a run ends within --max-runtime + 10 s
PEAK_RSS_MB = 200


def client_for(api: Sandbox, **kwargs) -> XplentyClient:
    return XplentyClient(api.url, api.account, Secret(KEY), **kwargs)


def wait_until(condition, timeout: float = 60, what: str = "") -> None:
    """Poll `condition` (a guard against a hang, not a timing assertion)."""
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise TimeoutError(f"still waiting for {what or condition}")
        time.sleep(0.05)


def runs_and_errors(db_url: str) -> tuple[list[str], list[tuple]]:
    archive = Archive.open(db_url)
    with archive.engine.connect() as conn:
        outcomes = conn.execute(select(models.SyncRunRow.outcome).order_by(models.SyncRunRow.id)).scalars().all()
        errors = conn.execute(select(models.SyncErrorRow.job_id, models.SyncErrorRow.kind)
                              .order_by(models.SyncErrorRow.id)).all()
    archive.close()
    return list(outcomes), [tuple(e) for e in errors]


# -- the sandbox's misbehaviours ------------------------------------------------------------------
def raw_get(api: Sandbox, path: str, timeout: float = 10) -> socket.socket:
    sock = socket.create_connection((api.host, api.port), timeout=timeout)
    auth = base64.b64encode(f"{KEY}:".encode()).decode()
    sock.sendall(f"GET /{api.account}/api/{path} HTTP/1.1\r\nHost: x\r\nAuthorization: Basic {auth}\r\n"
                 "Accept: application/vnd.xplenty+json; version=2\r\n\r\n".encode())
    return sock


def test_sandbox_trickles_headers_then_behaves_again():
    with Sandbox(jobs=3, seed=1, now=NOW) as api:
        job_id = api.job_ids()[0]
        api.misbehave("trickle_headers", interval=0.05)
        sock = raw_get(api, f"jobs/{job_id}")
        first = sock.recv(100)
        assert len(first) < 5 and b"HTTP/1.1 200"[:len(first)] == first   # a byte (or so) at a time
        api.behave()                          # the trickle ends, the connection closes
        sock.settimeout(10)
        while sock.recv(1000):
            pass
        sock.close()
        assert api.stats.faults["trickle_headers"] == 1
        assert requests.get(f"{api.url}/{api.account}/api/jobs/{job_id}", auth=(KEY, ""), timeout=10).ok


def test_sandbox_trickled_answer_is_the_real_one_in_the_end():
    with Sandbox(jobs=3, seed=1, now=NOW) as api:
        job_id = api.job_ids()[0]
        api.misbehave("trickle_body", times=1, interval=0.001)
        got = requests.get(f"{api.url}/{api.account}/api/jobs/{job_id}", auth=(KEY, ""), timeout=30)
        assert got.json()["id"] == job_id and api.stats.faults["trickle_body"] == 1


def test_sandbox_hangs_until_behave_and_misbehaves_only_as_often_as_asked():
    with Sandbox(jobs=3, seed=1, now=NOW) as api:
        job_id = api.job_ids()[0]
        api.misbehave("hang", times=1)
        with pytest.raises(requests.Timeout):
            requests.get(f"{api.url}/{api.account}/api/jobs/{job_id}", auth=(KEY, ""), timeout=0.5)
        assert requests.get(f"{api.url}/{api.account}/api/jobs/{job_id}", auth=(KEY, ""), timeout=10).ok
        with pytest.raises(ValueError):
            api.misbehave("explode")
        with pytest.raises(ValueError):
            api.misbehave("hang", "control")


def test_sandbox_oversized_and_gzip_bomb_bodies():
    with Sandbox(jobs=3, seed=1, now=NOW) as api:
        url = f"{api.url}/{api.account}/api/jobs/{api.job_ids()[0]}"
        api.misbehave("oversized", times=1, size=3 * MIB)
        big = requests.get(url, auth=(KEY, ""), timeout=30)
        assert "Content-Length" not in big.headers and len(big.content) == 3 * MIB and big.json()["id"] == 1
        api.misbehave("gzip_bomb", times=1, size=20 * MIB)
        bomb = requests.get(url, auth=(KEY, ""), timeout=30, stream=True)
        wire = bomb.raw.read(decode_content=False)
        assert bomb.headers["Content-Encoding"] == "gzip" and len(wire) < MIB
        assert len(gzip.decompress(wire)) == 20 * MIB
        assert api.stats.faults["oversized"] == api.stats.faults["gzip_bomb"] == 1


# -- the client: a total deadline per attempt, interruptible waits, the cap -----------------------
@pytest.mark.parametrize("kind", ["trickle_headers", "trickle_body", "hang"])
def test_an_attempt_ends_at_its_total_deadline_however_the_server_answers(kind):
    with Sandbox(jobs=3, seed=1, now=NOW) as api:
        api.misbehave(kind, interval=0.2)      # a byte every 0.2 s never trips a 30 s read timeout
        client = client_for(api, policy=QUICK)
        started = time.monotonic()
        with pytest.raises(ApiError) as failed:
            client.get_job(api.job_ids()[0])
        took = time.monotonic() - started
        client.close()
        assert failed.value.kind == "transport" and api.stats.faults[kind] == 2   # retried once
    assert took < 2 * QUICK.total_timeout + DEADLINE_SLACK


@pytest.mark.parametrize("kind", ["trickle_headers", "trickle_body", "hang"])
def test_the_run_deadline_cuts_a_request_in_flight(kind):
    with Sandbox(jobs=3, seed=1, now=NOW) as api:
        api.misbehave(kind, interval=0.2)
        client = client_for(api, deadline=time.monotonic() + 1.0)
        with pytest.raises(DeadlineExceeded):
            client.get_job(api.job_ids()[0])
        client.close()
        assert api.stats.faults[kind] == 1    # not retried past the deadline


def stopped_from_another_thread(client: XplentyClient, call, ready) -> float:
    """Run `call` in a thread, set the stop event once `ready()`, return seconds to Stopped."""
    outcome: list = []

    def work():
        try:
            call()
            outcome.append(None)
        except BaseException as exc:  # noqa: BLE001 - the test looks at it
            outcome.append(exc)

    worker = threading.Thread(target=work, daemon=True)
    worker.start()
    wait_until(ready, what="the request to reach its state")
    time.sleep(0.2)
    stopped_at = time.monotonic()
    client.stop.set()
    worker.join(timeout=30)
    took = time.monotonic() - stopped_at
    assert not worker.is_alive() and isinstance(outcome[0], Stopped), outcome
    return took


@pytest.mark.parametrize("kind", ["hang", "trickle_body"])
def test_the_stop_event_ends_a_request_in_flight_at_once(kind):
    with Sandbox(jobs=3, seed=1, now=NOW) as api:
        api.misbehave(kind, interval=0.2)
        client = client_for(api)
        took = stopped_from_another_thread(client, lambda: client.get_job(api.job_ids()[0]),
                                           lambda: api.stats.faults[kind] >= 1)
        client.close()
    assert took < EXIT_AFTER_SIGTERM


def test_the_stop_event_ends_a_retry_after_wait_at_once():
    with Sandbox(jobs=3, seed=1, now=NOW, rate_limit=1, rate_window_s=120) as api:
        client = client_for(api)
        client.get_job(api.job_ids()[0])   # the window's one credit
        took = stopped_from_another_thread(client, lambda: client.get_job(api.job_ids()[1]),
                                           lambda: api.stats.faults["rate_limited"] >= 1)
        client.close()
    assert took < EXIT_AFTER_SIGTERM


def test_a_retry_after_wait_never_outlives_the_run_deadline():
    with Sandbox(jobs=3, seed=1, now=NOW, rate_limit=1, rate_window_s=120) as api:
        client = client_for(api, deadline=time.monotonic() + 30)
        client.get_job(api.job_ids()[0])
        with pytest.raises(DeadlineExceeded):        # asked to wait ~120 s with 30 s left: at once
            client.get_job(api.job_ids()[1])
        client.close()


@pytest.mark.parametrize("kind", ["oversized", "gzip_bomb"])
def test_an_answer_past_the_cap_is_too_large_and_never_retried(kind):
    with Sandbox(jobs=3, seed=1, now=NOW) as api:
        api.misbehave(kind, size=64 * MIB)
        client = client_for(api, policy=RetryPolicy(max_response_bytes=MIB))
        with pytest.raises(ResponseTooLarge) as failed:
            client.get_job(api.job_ids()[0])
        client.close()
        assert failed.value.kind == "too_large" and api.stats.by_endpoint["get_job"] == 1


def test_an_answer_declaring_a_length_past_the_cap_is_not_read():
    with Sandbox(jobs=3, seed=1, now=NOW) as api:
        client = client_for(api, policy=RetryPolicy(max_response_bytes=100))   # a job is ~2 KB
        with pytest.raises(ResponseTooLarge, match="declares"):
            client.get_job(api.job_ids()[0])
        client.close()
        assert api.stats.by_endpoint["get_job"] == 1


# -- the command line: SIGTERM, --max-runtime, the cap ------------------------------------------
def start(api: Sandbox, db_url: str, *args: str) -> subprocess.Popen:
    return subprocess.Popen(archiver_cmd(*args), env=cli_env(api, db_url), stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)


def reach(state: str, api: Sandbox, proc: subprocess.Popen) -> None:
    """Wait until the run is in `state` (its request parked, trickling, or in a Retry-After wait)."""
    if state == "hung":
        wait_parked(api, proc)
        return
    fault = "rate_limited" if state == "retry_after" else state
    wait_until(lambda: api.stats.faults[fault] >= 1 or proc.poll() is not None, what=state)
    assert proc.poll() is None, proc.communicate()
    time.sleep(0.3)   # inside the read or the wait


STATES = {  # state -> sandbox settings, set-up, archiver options
    "hung": ({}, lambda api: api.hold_after(1, "get_job"), []),
    "trickle_headers": ({}, lambda api: api.misbehave("trickle_headers", times=None), []),
    "trickle_body": ({}, lambda api: api.misbehave("trickle_body", times=None), []),
    "retry_after": ({"rate_limit": 1, "rate_window_s": 120}, lambda api: None, ["--reserve", "0"]),
}


@pytest.mark.parametrize("state", list(STATES))
def test_sigterm_exits_143_within_5s_in_any_state_with_the_run_interrupted_and_the_lock_free(
        sqlite_url, figure, state):
    sandbox_options, set_up, extra = STATES[state]
    with Sandbox(jobs=10, seed=51, now=NOW, **sandbox_options) as api:
        ids = [str(i) for i in api.job_ids()[:4]]
        set_up(api)
        proc = start(api, sqlite_url, "sync", *ids, "--concurrency", "2", *extra)
        try:
            reach(state, api, proc)
            signalled = time.monotonic()
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(timeout=60)
            finally:
                took = time.monotonic() - signalled
            _, err = proc.communicate()
        finally:
            if proc.poll() is None:
                proc.kill()
            api.release()
            api.behave()
        assert proc.returncode == 143, err
        assert took < EXIT_AFTER_SIGTERM, f"exit took {took:.1f}s after SIGTERM"
        assert runs_and_errors(sqlite_url)[0] == ["interrupted"]
        if state == "retry_after":
            # the window's credit is spent: this run stops at its deadline, but it got the lock
            again = run_archiver(api, sqlite_url, "sync", ids[0], "--reserve", "0", "--max-runtime", "5")
            assert again.returncode != 4, again.stderr
        else:
            again = run_archiver(api, sqlite_url, "sync", *ids)   # the lock is free
            assert again.returncode == 0, again.stderr
    figure(f"SIGTERM ({state}): exit 143 after {took:.2f}s (contract: < {EXIT_AFTER_SIGTERM:g}s), "
           "run interrupted, lock free")


@pytest.mark.parametrize("state", list(STATES))
def test_max_runtime_ends_the_run_whatever_the_server_does(sqlite_url, figure, state):
    sandbox_options, set_up, extra = STATES[state]
    if state == "retry_after":
        sandbox_options = {"rate_limit": 1, "rate_window_s": 60}   # Retry-After <= 60 s: waited, not refused
    max_runtime = 5
    with Sandbox(jobs=10, seed=52, now=NOW, **sandbox_options) as api:
        ids = [str(i) for i in api.job_ids()[:4]]
        set_up(api)
        started = time.monotonic()
        result = run_archiver(api, sqlite_url, "sync", *ids, "--max-runtime", str(max_runtime), *extra,
                              timeout=120)
        took = time.monotonic() - started
        api.release()
        api.behave()
    assert result.returncode == 1, result.stderr
    assert "[deadline" in result.stdout
    assert runs_and_errors(sqlite_url)[0] == ["deadline"]
    assert took < max_runtime + DEADLINE_SLACK, f"the run took {took:.1f}s"
    figure(f"--max-runtime {max_runtime} ({state}): exit 1, outcome deadline after {took:.2f}s "
           f"(overshoot {took - max_runtime:+.2f}s including start-up; contract: < +{DEADLINE_SLACK:g}s)")


# `python -m archiver ARGS` that writes its peak RSS (VmHWM, which exec resets; ru_maxrss would
# count the pre-exec copy of the test process) to $PEAK_RSS_FILE as it exits.
MEASURED = """
import atexit, os, runpy, sys

def peak():
    with open('/proc/self/status') as status, open(os.environ['PEAK_RSS_FILE'], 'w') as out:
        out.write(next(line.split()[1] for line in status if line.startswith('VmHWM:')))

atexit.register(peak)
sys.argv = ['archiver', *sys.argv[1:]]
runpy.run_module('archiver', run_name='__main__', alter_sys=True)
"""


def run_measured(api: Sandbox, db_url: str, tmp_path, *args: str) -> tuple[int, str, float]:
    """Run the archiver; (exit code, stdout, peak RSS in MB of that process alone)."""
    peak_file = tmp_path / "peak.txt"
    with open(tmp_path / "out.txt", "w") as out:
        result = subprocess.run([sys.executable, "-c", MEASURED, *args], stdout=out, stderr=subprocess.STDOUT,
                                env=cli_env(api, db_url) | {"PEAK_RSS_FILE": str(peak_file)}, timeout=300)
    return result.returncode, (tmp_path / "out.txt").read_text(), int(peak_file.read_text()) / 1024


@pytest.mark.parametrize("kind,size", [("oversized", 256 * MIB), ("gzip_bomb", 1024 * MIB)])
def test_an_oversized_answer_is_recorded_as_too_large_once_in_bounded_memory(sqlite_url, tmp_path, figure,
                                                                              kind, size):
    with Sandbox(jobs=10, seed=53, now=NOW) as api:
        ids = api.job_ids()[:3]
        api.misbehave(kind, times=1, size=size)    # the first request goes alone: ids[0]
        code, out, peak = run_measured(api, sqlite_url, tmp_path, "sync", *map(str, ids))
        requests_made = api.stats.by_endpoint["get_job"]
    assert code == 1, out
    outcomes, errors = runs_and_errors(sqlite_url)
    assert outcomes == ["partial"] and errors == [(ids[0], "too_large")]
    assert requests_made == 3                      # the oversized answer was not asked for again
    assert peak < PEAK_RSS_MB, f"peak RSS {peak:.0f} MB"
    figure(f"cap: {kind} of {size // MIB} MiB (decoded) -> too_large, not retried, "
           f"peak RSS {peak:.0f} MB (limit {PEAK_RSS_MB} MB, cap 8 MiB)")


def test_sixteen_50_mb_answers_at_concurrency_8_stay_in_bounded_memory(sqlite_url, tmp_path, figure):
    with Sandbox(jobs=20, seed=55, now=NOW) as api:
        ids = api.job_ids()[:16]
        api.misbehave("oversized", times=16, size=50 * MIB)
        code, out, peak = run_measured(api, sqlite_url, tmp_path, "sync", *map(str, ids), "--concurrency", "8")
    assert code == 1 and "failed 16" in out
    assert peak < PEAK_RSS_MB, f"peak RSS {peak:.0f} MB"
    figure(f"cap: 16 answers of 50 MiB at concurrency 8 -> all too_large, peak RSS {peak:.0f} MB "
           f"(limit {PEAK_RSS_MB} MB)")


def test_max_response_mb_sets_the_cap(sqlite_url):
    with Sandbox(jobs=10, seed=54, now=NOW) as api:
        ids = api.job_ids()[:2]
        api.misbehave("oversized", times=1, size=3 * MIB)
        small = run_archiver(api, sqlite_url, "sync", *map(str, ids), "--max-response-mb", "1")
        api.misbehave("oversized", times=1, size=3 * MIB)
        large = run_archiver(api, sqlite_url, "sync", *map(str, ids), "--max-response-mb", "4")
    assert small.returncode == 1 and "failed 1" in small.stdout
    assert large.returncode == 1     # 3 MiB passes the cap; its body is then the wrong job
    kinds = [kind for _, kind in runs_and_errors(sqlite_url)[1]]
    assert kinds[0] == "too_large" and kinds[1] != "too_large" and len(kinds) == 2


def test_a_closed_client_used_again_still_watches_its_attempts():
    with Sandbox(jobs=3, seed=1, now=NOW) as api:
        client = client_for(api, policy=QUICK)
        assert client.get_job(api.job_ids()[0])["id"] == api.job_ids()[0]
        client.close()
        api.misbehave("trickle_body", interval=0.2)
        with pytest.raises(ApiError, match="connection failed"):
            client.get_job(api.job_ids()[0])
        client.close()


# -- ids streamed -------------------------------------------------------------------------------
def test_ids_stream_in_order_once_each_and_stop_at_the_cap():
    from archiver.errors import TooManyIds
    from archiver.flows.by_id import JobIds

    ids = JobIds(["5", "3-4"], ["4", "# a comment", "6 # six", "", "5"])
    assert list(ids) == [5, 3, 4, 6] and bool(ids)
    capped = JobIds(["1-1000000"], cap=3).stream()
    assert [next(capped) for _ in range(3)] == [1, 2, 3]
    with pytest.raises(TooManyIds, match="more than 3 distinct"):
        next(capped)
    assert not JobIds([], [" ", "# nothing"])


def test_an_invalid_line_of_an_id_file_is_named_before_any_request(tmp_path):
    from archiver.errors import ConfigError
    from archiver.flows.by_id import JobIds

    path = tmp_path / "ids.txt"
    path.write_text("157\n12x\n158\n")
    with open(path) as lines, pytest.raises(ConfigError, match=r"'12x' \(not a plain number, line 2\)"):
        JobIds(["300"], lines)


def test_ids_from_a_pipe_are_fetched_before_the_pipe_ends(sqlite_url):
    with Sandbox(jobs=10, seed=55, now=NOW) as api:
        ids = api.job_ids()[:3]
        proc = subprocess.Popen(archiver_cmd("sync", "--ids-file", "-"), env=cli_env(api, sqlite_url),
                                stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        try:
            proc.stdin.write(f"{ids[0]}\n")
            proc.stdin.flush()
            wait_until(lambda: api.stats.by_endpoint["get_job"] >= 1 or proc.poll() is not None,
                       what="the first request while the pipe is open")
            assert proc.poll() is None
            out, err = proc.communicate("\n".join(map(str, ids[1:])) + "\n", timeout=120)
        finally:
            if proc.poll() is None:
                proc.kill()
    assert proc.returncode == 0, err
    assert "requested 3, inserted 3" in out


def test_a_run_stops_cleanly_at_the_id_cap(capsys, monkeypatch, sqlite_url):
    from archiver.flows import by_id
    from tests.clirun import run_cli

    monkeypatch.setattr(by_id, "MAX_IDS", 5)
    with Sandbox(jobs=20, seed=56, now=NOW) as api:
        first = api.job_ids()[0]
        result = run_cli(capsys, monkeypatch, ["sync", f"{first}-{first + 1000}", "--json"], cli_env(api, sqlite_url))
        asked = api.stats.by_endpoint["get_job"]
    assert result.code == 1 and '"outcome": "stopped"' in result.out and '"requested": 5' in result.out
    assert asked == 5
    assert runs_and_errors(sqlite_url)[0] == ["stopped"]


def test_ten_million_id_lines_in_bounded_memory(sqlite_url, tmp_path, figure):
    with Sandbox(jobs=20, seed=57, now=NOW) as api:
        ids = api.job_ids()[:10]
        path = tmp_path / "ids.txt"
        block = ("\n".join(map(str, ids)) + "\n") * 1000       # 10,000 lines
        with open(path, "w") as out:
            for _ in range(1000):
                out.write(block)
        started = time.monotonic()
        code, out, peak = run_measured(api, sqlite_url, tmp_path, "sync", "--ids-file", str(path))
        took = time.monotonic() - started
        asked = api.stats.by_endpoint["get_job"]
    assert code == 0, out
    assert asked == 10 and "requested 10, inserted 10" in out
    assert peak < PEAK_RSS_MB, f"peak RSS {peak:.0f} MB"
    figure(f"ids: a 10,000,000-line --ids-file (10 distinct ids) -> 10 requests, peak RSS {peak:.0f} MB, "
           f"{took:.1f}s (two passes over the file: check, then stream)")
