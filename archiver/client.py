"""The one HTTP choke point: auth, timeouts, retries, Retry-After and credit accounting.

Knows nothing of SQL. Returns raw JSON (already decoded, strictly) or raises an
ApiError subclass. requests has no default timeout and urllib3 does not retry
errors raised while a body is read, so the retry policy lives here.

Deadlines: requests' timeout bounds each socket read, not the request, so a server that
trickles its headers or body a byte at a time never trips it. Every attempt therefore has
a total deadline (`RetryPolicy.total_timeout`, and never past the run's `--max-runtime`):
a watchdog thread shuts the attempt's socket when it passes, or when the run's stop event
is set (SIGTERM, Ctrl-C), which ends a blocked read at once. Bodies are read as a stream,
decoded in chunks and capped (`max_response_bytes`), so a gzip bomb never takes memory.
Every wait (backoff, Retry-After, pacing) is a wait on the stop event, cut at the deadline.
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import random
import socket
import threading
import time
from collections.abc import Callable
from typing import Any
from urllib.parse import urlsplit

import requests
import urllib3
from requests.adapters import HTTPAdapter
from urllib3.connection import HTTPConnection, HTTPSConnection
from urllib3.connectionpool import HTTPConnectionPool, HTTPSConnectionPool
from urllib3.exceptions import InvalidHeader
from urllib3.util.retry import Retry

from archiver import __version__
from archiver.config import Secret
from archiver.jsonio import decode_body
from archiver.errors import (ApiError, AuthError, BudgetReached, ConfigError, DeadlineExceeded, InvalidPayload,
                             NotFound, RateLimited, ResponseTooLarge, Stopped, TlsError)

log = logging.getLogger(__name__)

ACCEPT = "application/vnd.xplenty+json; version=2"  # pinned: no version means "the latest"
RETRY_STATUSES = frozenset({429, 500, 502, 503, 504})
AUTH_STATUSES = frozenset({401, 402, 403})
TRANSPORT_ERRORS = (requests.ConnectionError, requests.Timeout, requests.exceptions.ChunkedEncodingError,
                    requests.exceptions.ContentDecodingError)
MIB = 1024 * 1024
CHUNK = 64 * 1024          # bytes read (after decoding) per step of a body
WATCH_TICK = 0.1           # how often the watchdog looks at the clock and the stop event


@dataclasses.dataclass
class RetryPolicy:
    max_attempts: int = 6
    backoff_base: float = 0.5      # seconds; doubles per attempt, with full jitter
    backoff_max: float = 30.0
    min_429_wait: float = 2.0      # a 429 without Retry-After still waits at least this long
    max_retry_after: float = 300.0  # a longer Retry-After ends the run instead of sleeping
    max_pace: float = 2.0  # pause per call when the rate budget is down to the reserve
    connect_timeout: float = 10.0
    read_timeout: float = 30.0     # one socket read; a trickling server never trips it, so also:
    total_timeout: float = 120.0   # one attempt, connect + headers + body, whatever the server does
    max_response_bytes: int = 8 * MIB  # an answer's size after decompression; larger is `too_large`


@dataclasses.dataclass
class Usage:
    """What the run has spent: calls sent, credits charged, retries and faults seen."""

    calls: int = 0
    credits: int = 0
    retries: int = 0
    rate_limited: int = 0
    remaining: int | None = None
    limit: int | None = None
    content_type: str | None = None  # of the last answer: the API may name its version there


@dataclasses.dataclass
class Page:
    """One page of a List call. `has_next` says the server announced a next page (a `Link`
    rel="next"): a hint only; its URL is never requested (flows.cursor pages by the data)."""

    items: list[dict]
    has_next: bool = False


@dataclasses.dataclass(frozen=True)
class RateBudget:
    limit: int | None
    remaining: int | None

    @classmethod
    def from_answer(cls, data: Any) -> "RateBudget":
        """`{"limits": {"limit": N, "remaining": M}}` (the official SDK's reading) or a flat
        `{"limit": N, "remaining": M}`."""
        inner = data.get("limits", data) if isinstance(data, dict) else {}
        inner = inner if isinstance(inner, dict) else {}

        def number(name: str) -> int | None:
            value = inner.get(name)
            return value if isinstance(value, int) and not isinstance(value, bool) else None

        return cls(number("limit"), number("remaining"))


def tls_problem(host: str | None, exc: Exception) -> str:
    """What a TLS failure means for the user: a plain-HTTP port, or an untrusted certificate."""
    text = str(exc).lower()
    if "wrong version number" in text or "record layer failure" in text or "unknown protocol" in text:
        return (f"TLS handshake with {host} failed: the server does not speak TLS there; is the API URL "
                "https:// to a plain-HTTP port? (not retried)")
    return f"TLS verification failed for {host}: the certificate is not trusted (not retried)"


def parse_retry_after(value: str | None) -> float | None:
    """Retry-After as seconds to wait (delta-seconds or an HTTP date, by urllib3's rules);
    None when absent or unreadable."""
    if not value:
        return None
    try:
        return float(Retry().parse_retry_after(value.strip()))
    except InvalidHeader:
        return None


def error_message(resp: requests.Response) -> str:
    """The API's own `message`, or a generic text; never the raw body."""
    try:
        msg = decode_body(resp.content).get("message")
    except Exception:
        msg = None
    if isinstance(msg, str) and msg:
        return msg[:300]
    return resp.reason or f"HTTP {resp.status_code}"


class _Attempt:
    """One request attempt's total deadline. The watchdog calls fire() when it passes or the
    run stops; fire() shuts the socket the attempt uses, so a blocked read returns at once."""

    def __init__(self, ends: float, by_run: bool, cancel: threading.Event | None = None):
        self.ends, self.by_run, self.cancel = ends, by_run, cancel
        self.reason: str | None = None      # "timeout" (own deadline), "deadline" (the run's), "stopped"
        self._conn: HTTPConnection | None = None
        self._lock = threading.Lock()

    def bind(self, conn: HTTPConnection) -> None:
        with self._lock:
            self._conn = conn
            if self.reason is not None:
                _shut(conn)

    @property
    def cancelled(self) -> bool:
        """The thread that makes this attempt was told to stop (XplentyClient.cancelled_by)."""
        return self.cancel is not None and self.cancel.is_set()

    def fire(self, reason: str) -> None:
        with self._lock:
            if self.reason is not None:
                return
            self.reason = reason
            if self._conn is not None:
                _shut(self._conn)


def _shut(conn: HTTPConnection) -> None:
    sock = getattr(conn, "sock", None)
    if sock is not None:
        try:
            sock.shutdown(socket.SHUT_RDWR)   # wakes a thread blocked in recv (close() does not)
        except OSError:
            pass


_current = threading.local()   # the attempt this thread is making, for the connection to bind to


class _Watched:
    """A urllib3 connection that binds itself to the thread's current attempt."""

    def connect(self) -> None:
        super().connect()  # type: ignore[misc]
        attempt = getattr(_current, "attempt", None)
        if attempt is not None:
            attempt.bind(self)  # type: ignore[arg-type]

    def request(self, *args, **kwargs):
        attempt = getattr(_current, "attempt", None)
        if attempt is not None:
            attempt.bind(self)  # type: ignore[arg-type]
        return super().request(*args, **kwargs)  # type: ignore[misc]


class _WatchedHTTPConnection(_Watched, HTTPConnection):
    pass


class _WatchedHTTPSConnection(_Watched, HTTPSConnection):
    pass


class _WatchedHTTPPool(HTTPConnectionPool):
    ConnectionCls = _WatchedHTTPConnection


class _WatchedHTTPSPool(HTTPSConnectionPool):
    ConnectionCls = _WatchedHTTPSConnection


class _WatchedAdapter(HTTPAdapter):
    """requests' adapter with connections the watchdog can shut."""

    POOLS = {"http": _WatchedHTTPPool, "https": _WatchedHTTPSPool}

    def init_poolmanager(self, *args, **kwargs) -> None:
        super().init_poolmanager(*args, **kwargs)
        self.poolmanager.pool_classes_by_scheme = dict(self.POOLS)

    def proxy_manager_for(self, proxy, **proxy_kwargs):
        manager = super().proxy_manager_for(proxy, **proxy_kwargs)
        manager.pool_classes_by_scheme = dict(self.POOLS)
        return manager


def watched_session() -> requests.Session:
    """A Session whose connections `bounded` can shut (for HTTP outside XplentyClient)."""
    session = requests.Session()
    adapter = _WatchedAdapter()
    session.mount("http://", adapter)
    session.mount("https://", adapter)
    return session


@contextlib.contextmanager
def bounded(ends: float, stop: threading.Event):
    """One request of a `watched_session` ends by `ends` (monotonic) or at `stop`, whatever the
    peer does (a hung or trickling answer): its socket is shut, and the attempt's `reason` says
    why ("deadline" or "stopped"; None when it ended by itself)."""
    attempt, done = _Attempt(ends, by_run=True), threading.Event()

    def watch() -> None:
        while not done.wait(WATCH_TICK):
            if stop.is_set() or time.monotonic() >= ends:
                attempt.fire("stopped" if stop.is_set() else "deadline")
                return

    watcher = threading.Thread(target=watch, name="http-watchdog", daemon=True)
    watcher.start()
    _current.attempt = attempt
    try:
        yield attempt
    finally:
        _current.attempt = None
        done.set()
        watcher.join()


class XplentyClient:
    """Talks to one account of the jobs API. Thread-safe: one Session per thread."""

    def __init__(self, api_url: str, account: str, api_key: Secret, *,
                 policy: RetryPolicy | None = None, reserve: int = 0, max_credits: int | None = None,
                 deadline: float | None = None, stop: threading.Event | None = None,
                 sleep: Callable[[float], None] | None = None, rng: random.Random | None = None):
        self.base = f"{api_url.rstrip('/')}/{account}/api"
        self.api_url = api_url.rstrip("/")
        self.account = account
        self._key = api_key
        self.policy = policy or RetryPolicy()
        self.reserve = reserve
        self.max_credits = max_credits
        self.deadline = deadline
        self.stop = stop if stop is not None else threading.Event()
        self.usage = Usage()
        self._sleep = sleep   # tests only: replaces the interruptible wait
        self._rng = rng or random.Random()
        self._local = threading.local()
        self._lock = threading.Lock()
        self._sessions: list[requests.Session] = []
        self._attempts: set[_Attempt] = set()
        self._watchdog: threading.Thread | None = None
        self._closing = threading.Event()

    # -- public calls -------------------------------------------------------------------------
    def get_job(self, job_id: int, *, include_log_summary: bool = False) -> dict:
        params = {"include": "log_summary"} if include_log_summary else None
        data = self._get_json(f"{self.base}/jobs/{job_id}", params, job_id=job_id)
        if not isinstance(data, dict):
            raise InvalidPayload(job_id, "<body>", "expected a JSON object", kind="bad_shape")
        return data

    def list_jobs(self, params: dict[str, Any]) -> Page:
        """One page of List jobs."""
        return self.list_page("jobs", params)

    def list_page(self, resource: str, params: dict[str, Any]) -> Page:
        """One page of a List endpoint (jobs, schedules, packages, clusters): an array of objects.

        List jobs answers 404 only for a wrong account or URL (a ConfigError); another list's
        404 may be an account without that endpoint, a NotFound for that read alone."""
        resp_holder: list[requests.Response] = []
        try:
            data = self._get_json(f"{self.base}/{resource}", params, keep=resp_holder)
        except NotFound:
            if resource == "jobs":
                raise self.account_not_found(f"List {resource}") from None
            raise
        if not isinstance(data, list) or not all(isinstance(item, dict) for item in data):
            raise InvalidPayload(None, "<body>", f"List {resource} did not return an array of objects",
                                 kind="bad_shape")
        links = resp_holder[0].links if resp_holder else {}
        return Page(items=data, has_next="next" in links)

    def rate_limit_status(self) -> RateBudget:
        """The account's rate budget, a free call that also proves the key and the account
        (`{account}/api/rate_limit_status`, as the official SDK calls it)."""
        try:
            data = self._get_json(f"{self.base}/rate_limit_status", None, charge=False)
        except NotFound:
            raise self.account_not_found("rate_limit_status") from None
        return RateBudget.from_answer(data)

    def account_not_found(self, what: str) -> ConfigError:
        return ConfigError(f"the API answered 404 for {what} of account {self.account!r} at {self.api_url}: "
                           "the account id (XPLENTY_ACCOUNT_ID) or the API URL is wrong")

    def account_answers(self) -> bool:
        """One List jobs call (a credit): False when the account answers 404."""
        try:
            self.list_page("jobs", {"limit": 1})
        except ConfigError:
            return False
        return True

    @contextlib.contextmanager
    def cancelled_by(self, cancel: threading.Event):
        """Inside, this thread's requests and waits also end (Stopped) when `cancel` is set, as
        every thread's do at the run's stop: a thread reading ahead for another one that no
        longer wants its pages ends at once (flows.readahead), while the run goes on."""
        self._local.cancel = cancel
        try:
            yield
        finally:
            self._local.cancel = None

    def close(self) -> None:
        with self._lock:
            self._closing.set()   # the watchdog ends; a later call starts a new one
            self._closing, self._watchdog = threading.Event(), None
            for s in self._sessions:
                s.close()
            self._sessions.clear()

    # -- machinery ----------------------------------------------------------------------------
    def _session(self) -> requests.Session:
        s = getattr(self._local, "session", None)
        if s is None:
            s = requests.Session()
            adapter = _WatchedAdapter()
            s.mount("http://", adapter)
            s.mount("https://", adapter)
            s.auth = (self._key.reveal(), "")
            s.headers.update({"Accept": ACCEPT, "User-Agent": f"xplenty-archiver/{__version__}",
                              "Accept-Encoding": "gzip, deflate"})
            self._local.session = s
            with self._lock:
                self._sessions.append(s)
        return s

    def _check_budget(self, charge: bool = True) -> None:
        self._check_stop()
        if charge and self.max_credits is not None and self.usage.credits >= self.max_credits:
            raise BudgetReached(f"spent the --max-credits budget of {self.max_credits} credits")
        if self.deadline is not None and time.monotonic() >= self.deadline:
            raise DeadlineExceeded("the run reached its --max-runtime deadline")
        remaining = self.usage.remaining
        if self.reserve and remaining is not None and remaining <= self.reserve:
            raise RateLimited(f"rate budget down to {remaining} credits (reserve {self.reserve}); "
                              "stopping before the API starts refusing")
        if charge and self.reserve and remaining is not None and remaining < 3 * self.reserve:
            self._pause(self._pace(remaining))
            if self.deadline is not None and time.monotonic() >= self.deadline:
                raise DeadlineExceeded("the run reached its --max-runtime deadline")

    def _pace(self, remaining: int) -> float:
        """Slow down as the budget nears the reserve: from no pause at three times the reserve
        to `max_pace` seconds a call at the reserve, so the window has time to refill."""
        closeness = (3 * self.reserve - remaining) / (2 * self.reserve)
        return round(self.policy.max_pace * min(1.0, max(0.0, closeness)), 3)

    def _record(self, resp: requests.Response, charge: bool) -> None:
        with self._lock:
            self.usage.calls += 1
            if charge and resp.status_code != 429:
                self.usage.credits += 1
            self.usage.content_type = resp.headers.get("Content-Type")
            for header, attr in (("X-RateLimit-Remaining", "remaining"), ("X-RateLimit-Limit", "limit")):
                value = resp.headers.get(header)
                if value is not None and value.strip().isdigit():
                    setattr(self.usage, attr, int(value))

    def _backoff(self, attempt: int) -> float:
        cap = min(self.policy.backoff_max, self.policy.backoff_base * (2 ** attempt))
        return self._rng.uniform(cap / 2, cap)

    def _wait(self, seconds: float) -> None:
        if self.deadline is not None and time.monotonic() + seconds >= self.deadline:
            raise DeadlineExceeded("the run reached its --max-runtime deadline while backing off")
        with self._lock:
            self.usage.retries += 1
        self._pause(seconds)

    def _cancel_event(self) -> threading.Event | None:
        return getattr(self._local, "cancel", None)

    def _check_stop(self) -> None:
        cancel = self._cancel_event()
        if self.stop.is_set() or (cancel is not None and cancel.is_set()):
            raise Stopped("the run was told to stop")

    def _pause(self, seconds: float) -> None:
        """Sleep, cut short by the stop event (then Stopped) and by the run's deadline."""
        if seconds <= 0:
            return self._check_stop()
        if self._sleep is not None:
            self._sleep(seconds)
        else:
            if self.deadline is not None:
                seconds = min(seconds, max(0.0, self.deadline - time.monotonic()))
            self._wait_for_stop(seconds)
        self._check_stop()

    def _wait_for_stop(self, seconds: float) -> None:
        """Wait `seconds`, or until the run's stop event (or this thread's cancel) is set."""
        cancel = self._cancel_event()
        if cancel is None:
            self.stop.wait(seconds)
            return
        ends = time.monotonic() + seconds   # two events: look at the run's stop every tick
        while not (self.stop.is_set() or cancel.is_set()):
            left = ends - time.monotonic()
            if left <= 0:
                return
            cancel.wait(min(left, WATCH_TICK))

    # -- one attempt, bounded in total -------------------------------------------------------
    def _begin(self) -> _Attempt:
        now = time.monotonic()
        ends, by_run = now + self.policy.total_timeout, False
        if self.deadline is not None and self.deadline <= ends:
            ends, by_run = self.deadline, True
        attempt = _Attempt(ends, by_run, self._cancel_event())
        with self._lock:
            self._attempts.add(attempt)
            if self._watchdog is None:
                self._watchdog = threading.Thread(target=self._watch, args=(self._closing,),
                                                  name="http-watchdog", daemon=True)
                self._watchdog.start()
        _current.attempt = attempt
        return attempt

    def _end(self, attempt: _Attempt) -> None:
        _current.attempt = None
        with self._lock:
            self._attempts.discard(attempt)

    def _watch(self, closing: threading.Event) -> None:
        """Shut the sockets of attempts past their deadline, and of all of them on stop (of
        one thread's, when that thread is cancelled)."""
        while not closing.wait(WATCH_TICK):
            stopping, now = self.stop.is_set(), time.monotonic()
            with self._lock:
                attempts = list(self._attempts)
            for attempt in attempts:
                if stopping or attempt.cancelled:
                    attempt.fire("stopped")
                elif now >= attempt.ends:
                    attempt.fire("deadline" if attempt.by_run else "timeout")

    def _cut_short(self, attempt: _Attempt) -> None:
        """An attempt the watchdog ended: stop, end the run, or (its own deadline) a Timeout to retry."""
        if attempt.reason == "stopped" or self.stop.is_set():
            raise Stopped("the run was told to stop")
        if attempt.reason == "deadline":
            raise DeadlineExceeded("the run reached its --max-runtime deadline during a request")
        if attempt.reason == "timeout":
            raise requests.Timeout(f"no whole answer within {self.policy.total_timeout:g}s")

    def _send(self, url: str, params: dict | None, charge: bool) -> requests.Response:
        """One GET whose body is read whole (within the cap) before it returns; the body is on
        `resp.content`. Raises TRANSPORT_ERRORS, ResponseTooLarge, Stopped or DeadlineExceeded."""
        policy = self.policy
        attempt = self._begin()
        resp: requests.Response | None = None
        try:
            left = max(0.001, attempt.ends - time.monotonic())
            timeout = (min(policy.connect_timeout, left), min(policy.read_timeout, left))
            resp = self._session().get(url, params=params, timeout=timeout, stream=True)
            resp._content = self._read_body(resp, attempt, charge)
            resp._content_consumed = True   # read to the end: close() puts the connection back
            return resp
        except TRANSPORT_ERRORS as exc:
            try:
                self._cut_short(attempt)
            except requests.Timeout as timeout:
                raise timeout from exc
            raise
        finally:
            self._end(attempt)
            if resp is not None:
                resp.close()   # a body not read to the end closes its connection

    def _read_body(self, resp: requests.Response, attempt: _Attempt, charge: bool) -> bytes:
        """The decoded body, read in chunks (urllib3 inflates at most a chunk at a time, so a
        gzip bomb stops at the cap); ResponseTooLarge past the cap."""
        cap = self.policy.max_response_bytes
        declared = resp.headers.get("Content-Length", "")
        if not resp.headers.get("Content-Encoding") and declared.isdigit() and int(declared) > cap:
            raise self._too_large(resp, f"declares {int(declared):,} bytes", charge)
        chunks: list[bytes] = []   # joined once at the end: no buffer regrowth, one copy at most
        size = 0
        while attempt.reason is None:
            try:
                chunk = resp.raw.read(CHUNK, decode_content=True)
            except (urllib3.exceptions.HTTPError, OSError) as exc:
                raise requests.ConnectionError(f"reading the body failed: {type(exc).__name__}") from exc
            if not chunk:
                break
            chunks.append(chunk)
            size += len(chunk)
            if size > cap:
                chunks.clear()   # the traceback keeps this frame: let the bytes go now
                raise self._too_large(resp, "is larger", charge)
        if attempt.reason is not None:   # the watchdog shut the socket: a short body is no body
            self._cut_short(attempt)
        return b"".join(chunks)

    def _too_large(self, resp: requests.Response, how: str, charge: bool) -> ResponseTooLarge:
        cap = self.policy.max_response_bytes
        self._record(resp, charge)
        return ResponseTooLarge(resp.status_code, f"the answer {how} than the {cap / MIB:g} MiB cap "
                                "(--max-response-mb); not retried")

    def _get_json(self, url: str, params: dict | None, *, job_id: int | None = None,
                  charge: bool = True, keep: list | None = None) -> Any:
        policy = self.policy
        last: Exception | None = None
        for attempt in range(policy.max_attempts):
            if attempt:
                self._wait(self._retry_delay(last, attempt))
            self._check_budget(charge)
            try:
                resp = self._send(url, params, charge)
                body = resp.content
            except requests.exceptions.SSLError as exc:
                raise TlsError(tls_problem(urlsplit(url).hostname, exc)) from None
            except requests.TooManyRedirects:
                with self._lock:
                    self.usage.calls += 1
                raise ConfigError(f"the API at {self.api_url} answers with redirects in a loop; check the API "
                                  "URL (XPLENTY_API_URL)") from None
            except TRANSPORT_ERRORS as exc:
                log.info("transport error on %s: %s (attempt %d)", url, type(exc).__name__, attempt + 1)
                last = ApiError(None, f"connection failed: {type(exc).__name__}", kind="transport")
                continue
            self._record(resp, charge)
            status = resp.status_code
            if status in AUTH_STATUSES:
                raise AuthError(status, error_message(resp))
            if status == 404:
                raise NotFound(error_message(resp))
            if status in RETRY_STATUSES:
                last = self._retryable_status(resp)
                log.info("HTTP %d on %s (attempt %d)", status, url, attempt + 1)
                continue
            if status >= 400:
                raise ApiError(status, error_message(resp), kind="http_error")
            try:
                data = decode_body(body)
            except (UnicodeDecodeError, ValueError, RecursionError) as exc:
                reason = "invalid UTF-8" if isinstance(exc, UnicodeDecodeError) else "not valid JSON"
                last = InvalidPayload(job_id, "<body>", f"response body is {reason}", kind="bad_json")
                log.info("unparseable body on %s (attempt %d)", url, attempt + 1)
                continue
            if keep is not None:
                keep.append(resp)
            return data
        assert last is not None
        raise last

    def _retryable_status(self, resp: requests.Response) -> ApiError:
        message = error_message(resp)
        if resp.status_code == 429:
            with self._lock:
                self.usage.rate_limited += 1
            wait = parse_retry_after(resp.headers.get("Retry-After"))
            if wait is not None and wait > self.policy.max_retry_after:
                raise RateLimited(f"rate limited; the API asks to wait {wait:.0f}s, more than the "
                                  f"{self.policy.max_retry_after:.0f}s allowed", retry_after=wait)
            return RateLimited(message, retry_after=wait)
        return ApiError(resp.status_code, message, kind="server_error")

    def _retry_delay(self, last: Exception | None, attempt: int) -> float:
        if isinstance(last, RateLimited):
            if last.retry_after is not None:
                return max(last.retry_after, 0.1) + self._rng.uniform(0, 0.25)
            return max(self.policy.min_429_wait, self._backoff(attempt))
        return self._backoff(attempt - 1)
