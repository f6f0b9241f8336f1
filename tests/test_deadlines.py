"""Deadlines, signals and bounded memory (issue 13).

A request has a total deadline (a server trickling its headers or body a byte at a time
never trips a per-read timeout); every wait ends at the run's deadline and at SIGTERM;
`--max-runtime` holds whatever the server does; an answer is capped after decompression.

Time bounds here are the contract's own ("exit within 5 s", "within max-runtime + 10 s"),
generous on a busy machine; nothing asserts a tight timing.
"""

from __future__ import annotations

import gzip
import os
import signal
import socket
import subprocess
import threading
import time

import pytest
import requests
from sqlalchemy import select

from archiver import models
from archiver.sandbox import Sandbox
from archiver.store import Archive
from tests.sandboxed import KEY, NOW

MIB = 1024 * 1024

EXIT_AFTER_SIGTERM = 5.0     # the contract
DEADLINE_SLACK = 10.0        # a run ends within --max-runtime + 10 s
PEAK_RSS_MB = 200


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
    auth = __import__("base64").b64encode(f"{KEY}:".encode()).decode()
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
