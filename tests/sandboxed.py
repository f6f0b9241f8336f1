"""Helpers to point the archiver at an in-process sandbox API."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from datetime import datetime, timezone

import pytest

from archiver.config import Secret, Settings
from archiver.sandbox import Sandbox

NOW = datetime(2026, 11, 28, 12, 0, tzinfo=timezone.utc)
KEY = "sandbox-key"


def settings_for(api: Sandbox, db_url: str, key: str = KEY) -> Settings:
    return Settings(account=api.account, api_key=Secret(key), api_url=api.url, database_url=db_url)


def cli_env(api: Sandbox, db_url: str, key: str = KEY) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("XPLENTY_", "ARCHIVER_"))}
    return env | {"XPLENTY_ACCOUNT_ID": api.account, "XPLENTY_API_KEY": key, "XPLENTY_API_URL": api.url,
                  "ARCHIVER_DATABASE_URL": db_url}


def archiver_cmd(*args: str) -> list[str]:
    return [sys.executable, "-m", "archiver", *args]


def run_archiver(api: Sandbox, db_url: str, *args: str, key: str = KEY, timeout: float = 120):
    return subprocess.run(archiver_cmd(*args), env=cli_env(api, db_url, key), capture_output=True,
                          text=True, timeout=timeout)


def wait_parked(api: Sandbox, proc: subprocess.Popen, count: int = 1, timeout: float = 60) -> None:
    """Return once `proc` has `count` requests held at the sandbox gate (Sandbox.hold_after).

    Should the process end first (it could not take the lock, say), fail at once with its
    stderr rather than wait out the timeout, which only guards against a hang.
    """
    deadline = time.monotonic() + timeout
    while proc.poll() is None:
        try:
            api.wait_held(count, timeout=0.25)
            return
        except TimeoutError:
            if time.monotonic() > deadline:
                raise
    api.release()
    _, err = proc.communicate()
    pytest.fail(f"the archiver ended (exit {proc.returncode}) before reaching the sandbox gate: {err!s:.2000}")


def signal_when_parked(api: Sandbox, db_url: str, args: list[str], sig: int, after: int, endpoint: str):
    """Run `archiver ARGS`, park it at the sandbox gate once `after` `endpoint` requests were
    served, send it `sig`, open the gate and wait for it: (exit code, stderr)."""
    api.hold_after(after, endpoint)
    proc = subprocess.Popen(archiver_cmd(*args), env=cli_env(api, db_url), stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    try:
        wait_parked(api, proc)
        proc.send_signal(sig)
    finally:
        api.release()   # a run that unwinds gets its requests in flight answered
    _, err = proc.communicate(timeout=60)
    return proc.returncode, err
