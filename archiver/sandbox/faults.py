"""What the sandbox counts and how it misbehaves: stats, rate limiting, fault injection."""
from __future__ import annotations

import functools
import math
import random
import threading
import time
import zlib
from typing import NamedTuple

ENDPOINTS = ("get_job", "list_jobs", "job_log", "job_variables", "rate_limit_status",
             "list_packages", "get_package", "list_schedules", "get_schedule", "list_clusters", "get_cluster",
             "control")
MISBEHAVIOURS = ("hang", "trickle_headers", "trickle_body", "oversized", "gzip_bomb")
FAULTS = ("error", "drop", "bad_json", "rate_limited", "unauthorized", *MISBEHAVIOURS)
UNLIMITED_CREDITS = 5000   # what is reported when no rate_limit is set (the real API's hourly credits)


class SandboxStats:
    """Thread-safe request counters. Read the attributes; `snapshot()` gives a consistent copy."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.reset()

    def reset(self) -> None:
        with self._lock:
            self.requests = 0
            self.by_endpoint: dict[str, int] = dict.fromkeys(ENDPOINTS, 0)
            self.credits_used = 0
            self.faults: dict[str, int] = dict.fromkeys(FAULTS, 0)

    def count_request(self, endpoint: str | None) -> None:
        """Count one request; endpoint None for paths that match no endpoint."""
        with self._lock:
            self.requests += 1
            if endpoint is not None:
                self.by_endpoint[endpoint] += 1

    def count_fault(self, kind: str) -> None:
        with self._lock:
            self.faults[kind] += 1

    def count_credit(self) -> None:
        with self._lock:
            self.credits_used += 1

    def snapshot(self) -> dict:
        with self._lock:
            return {"requests": self.requests, "by_endpoint": dict(self.by_endpoint),
                    "credits_used": self.credits_used, "faults": dict(self.faults)}


class Charge(NamedTuple):
    granted: bool
    window: int          # the window the credit was taken from (for refunds)
    retry_after: int     # whole seconds until the window resets, at least 1


class RateLimitStatus(NamedTuple):
    limit: int
    remaining: int
    reset_in_seconds: int


class RateLimiter:
    """Credits in fixed windows of real (monotonic) time, not sandbox time.

    With limit None nothing is refused, but usage is still reported against
    the real API's 5,000 credits an hour, so clients see a sensible header.
    """

    def __init__(self, limit: int | None, window_s: float, clock=time.monotonic) -> None:
        if window_s <= 0:
            raise ValueError("rate_window_s must be positive")
        self.enforced = limit is not None
        self.limit = limit if limit is not None else UNLIMITED_CREDITS
        self.window_s = window_s if limit is not None else 3600.0
        self._clock = clock
        self._origin = clock()
        self._window = 0
        self._used = 0
        self._lock = threading.Lock()

    def _roll(self) -> float:
        """Start a new window if the current one is over; return seconds left in it."""
        elapsed = self._clock() - self._origin
        window = int(elapsed // self.window_s)
        if window != self._window:
            self._window, self._used = window, 0
        return (window + 1) * self.window_s - elapsed

    def acquire(self) -> Charge:
        with self._lock:
            left = self._roll()
            if self.enforced and self._used >= self.limit:
                return Charge(False, self._window, max(1, math.ceil(left)))
            self._used += 1
            return Charge(True, self._window, max(1, math.ceil(left)))

    def refund(self, charge: Charge) -> None:
        """Give back a credit taken for a call that then failed (a fault costs nothing)."""
        with self._lock:
            self._roll()
            if charge.granted and charge.window == self._window and self._used > 0:
                self._used -= 1

    def status(self) -> RateLimitStatus:
        with self._lock:
            left = self._roll()
            return RateLimitStatus(self.limit, max(0, self.limit - self._used), max(1, math.ceil(left)))


class FaultInjector:
    """Decides, per request, whether to misbehave. Seeded so a run is reproducible."""

    ERROR_STATUSES = ((500, "Internal Server Error"),
                      (502, "Bad Gateway: the API is down or being upgraded"),
                      (503, "Service Unavailable: the API is overloaded, try later"))

    def __init__(self, seed: int, error_rate: float, drop_rate: float, bad_json_rate: float,
                 throttle_rate: float = 0) -> None:
        rates = (("error", error_rate), ("drop", drop_rate), ("bad_json", bad_json_rate),
                 ("rate_limited", throttle_rate))
        for name, rate in rates:
            if not 0 <= rate <= 1:
                raise ValueError(f"the {name} rate must be between 0 and 1")
        if sum(rate for _, rate in rates) > 1:
            raise ValueError("the fault rates add up to more than 1")
        total, thresholds = 0.0, []
        for name, rate in rates:
            total += rate
            thresholds.append((name, total))
        self._thresholds = tuple(thresholds)
        self._active = total > 0
        self._rng = random.Random(f"faults:{seed}")
        self._lock = threading.Lock()

    def draw(self) -> str | None:
        """'error', 'drop', 'bad_json', 'rate_limited' (a 429 whatever the budget) or None."""
        if not self._active:
            return None
        with self._lock:
            roll = self._rng.random()
        for kind, threshold in self._thresholds:
            if roll < threshold:
                return kind
        return None

    def error(self) -> tuple[int, str]:
        with self._lock:
            return self._rng.choice(self.ERROR_STATUSES)


def truncated(body: bytes) -> bytes:
    """The body cut in the middle: never valid JSON (an object or array loses its closing bracket)."""
    return body[:len(body) // 2]


def sleep_ms(ms: float) -> None:
    if ms > 0:
        time.sleep(ms / 1000)


class Misbehaviour(NamedTuple):
    """One way of answering badly, chosen by Sandbox.misbehave() (see there)."""

    kind: str
    endpoint: str | None
    interval: float      # trickles: seconds between bytes
    size: int            # oversized, gzip_bomb: bytes of the (decoded) body


class Misbehaving:
    """The misbehaviour in force, for the next `times` matching requests (None: all)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._what: Misbehaviour | None = None
        self._times: int | None = None
        self.calm = threading.Event()   # set by behave()/stop(): hanging and trickling answers end

    def set(self, what: Misbehaviour | None, times: int | None) -> None:
        if what is not None:
            if what.kind not in MISBEHAVIOURS:
                raise ValueError(f"misbehave: no such kind {what.kind!r} (one of {', '.join(MISBEHAVIOURS)})")
            if what.endpoint is not None and (what.endpoint not in ENDPOINTS or what.endpoint == "control"):
                raise ValueError(f"misbehave: no API endpoint {what.endpoint!r}")
            if times is not None and times < 1:
                raise ValueError("misbehave: times must be >= 1")
        with self._lock:
            self._what, self._times = what, times
            if what is None:
                self.calm.set()
            else:
                self.calm.clear()

    def take(self, endpoint: str) -> Misbehaviour | None:
        if self._what is None:
            return None
        with self._lock:
            what = self._what
            if what is None or (what.endpoint is not None and what.endpoint != endpoint):
                return None
            if self._times is not None:
                self._times -= 1
                if self._times <= 0:
                    self._what = None
            return what


@functools.lru_cache(maxsize=4)
def gzip_bomb(size: int) -> bytes:
    """A small gzip body that inflates to `size` bytes of JSON whitespace: concatenated members
    of 16 MiB each (a valid gzip stream), so building a 1 GiB bomb takes a moment, not seconds."""
    member = 16 * 1024 * 1024

    def compress(n: int) -> bytes:
        c = zlib.compressobj(9, zlib.DEFLATED, 31)
        return c.compress(b" " * n) + c.flush()

    whole, rest = divmod(size, member)
    return compress(member) * whole + (compress(rest) if rest else b"")
