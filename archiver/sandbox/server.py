"""The sandbox HTTP server: a local stand-in for the Xplenty jobs API.

`Sandbox` owns a generated History, a clock, the rate limiter and the fault
injector, and serves them over HTTP/1.1 with keep-alive from a
ThreadingHTTPServer (one daemon thread per connection).
"""
from __future__ import annotations

import base64
import binascii
import hmac
import json
import re
import socket
import socketserver
import sys
import threading
import time
import traceback
from dataclasses import replace
from datetime import datetime, timezone
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Callable, NamedTuple
from urllib.parse import parse_qs, urlencode, urlsplit

from .faults import (ENDPOINTS, FaultInjector, Misbehaving, Misbehaviour, RateLimiter, SandboxStats, gzip_bomb,
                     sleep_ms, truncated)
from .history import SCENARIOS, STATUSES, History, ListQuery, expected_jobs
from .render import Renderer
from .resources import (CLUSTER_STATUSES, FLOW_TYPES, PACKAGE_STATUSES, SCHEDULE_STATUSES, CatalogQuery,
                        Resources, iso_ceiling, select, truth)

CONTENT_TYPE = "application/vnd.xplenty+json; charset=utf-8"
MEDIA_TYPE = "application/vnd.xplenty+json"
MAX_LIMIT = 100
NOT_FOUND = {"message": "Item not found."}


class Reply(NamedTuple):
    status: int
    body: object                   # JSON-able, or bytes sent as they are
    headers: dict[str, str] = {}


# ---------------------------------------------------------------------------
# request parsing

def parse_time(text: str) -> float:
    """ISO 8601 with Z or an offset (naive means UTC) -> Unix time.

    A '+' in an unencoded query string arrives as a space; put it back if that helps.
    """
    try:
        value = datetime.fromisoformat(text.strip())
    except ValueError:
        value = datetime.fromisoformat(text.strip().replace(" ", "+"))
    if value.tzinfo is None:
        value = value.replace(tzinfo=timezone.utc)
    return value.timestamp()


def _choice(params: dict[str, list[str]], name: str, allowed: tuple[str, ...], default: str) -> str:
    value = params.get(name, [default])[-1]
    if value not in allowed:
        raise ValueError(f"Invalid {name} {value!r}: expected one of {', '.join(allowed)}")
    return value


def _integer(params: dict[str, list[str]], name: str, default: int | None, minimum: int) -> int | None:
    if name not in params:
        return default
    text = params[name][-1]
    if not text.isdigit() or int(text) < minimum:
        raise ValueError(f"Invalid {name} {text!r}: expected an integer >= {minimum}")
    return int(text)


def _since(params: dict[str, list[str]]) -> float | None:
    if "since" not in params:
        return None
    try:
        return parse_time(params["since"][-1])
    except ValueError:
        raise ValueError(f"Invalid since {params['since'][-1]!r}: expected an ISO 8601 time") from None


def parse_list_query(params: dict[str, list[str]]) -> ListQuery:
    """List jobs parameters -> ListQuery; ValueError (-> 400) names the bad one."""
    status = _choice(params, "status", STATUSES + ("all",), "all")
    return ListQuery(
        status=None if status == "all" else status,
        sort=_choice(params, "sort", ("created", "updated"), "created"),
        direction=_choice(params, "direction", ("asc", "desc"), "desc"),
        since=_since(params),
        offset=_integer(params, "offset", 0, 0),
        limit=min(_integer(params, "limit", 20, 1), MAX_LIMIT),
        package_id=_integer(params, "package_id", None, 0),
    )


def _is(field: str, value: str) -> Callable[[dict], bool]:
    return (lambda item: True) if value == "all" else (lambda item: item[field] == value)


def parse_catalog_query(kind: str, params: dict[str, list[str]]) -> CatalogQuery:
    """List packages / schedules / clusters parameters -> CatalogQuery; ValueError (-> 400)."""
    if kind == "clusters":   # no sort parameter: newest first
        return CatalogQuery(_is("status", _choice(params, "status", CLUSTER_STATUSES + ("all",), "all")),
                            None, "desc", None)
    since = _since(params)
    direction = _choice(params, "direction", ("asc", "desc"), "desc")
    if kind == "schedules":
        keep = _is("status", _choice(params, "status", SCHEDULE_STATUSES + ("all",), "all"))
        sort = _choice(params, "sort", ("created", "updated"), "created")
    else:   # packages: one status or the other per call, active by default
        status = _is("status", _choice(params, "status", PACKAGE_STATUSES, "active"))
        flow_type = _is("flow_type", _choice(params, "flow_type", FLOW_TYPES + ("all",), "all"))
        keep = lambda item: status(item) and flow_type(item)   # noqa: E731
        sort = _choice(params, "sort", ("created", "updated", "name"), "created")
    return CatalogQuery(keep, sort, direction, None if since is None else iso_ceiling(since))


LINK_STYLES = ("full", "minimal", "none")
OFFSET_STYLES = ("items", "pages")
LENIENT_MEDIA = ("*/*", "application/*", "application/json")


def media_ranges(accept: str) -> list[tuple[str, dict[str, str]]]:
    """An Accept header -> [(media type, {parameter: value})], as forgiving as clients need.

    Besides RFC 7231's `type; version=2`, it reads what documentation and SDKs
    write: `type version=2` (a space) and `type, version=2` (a comma: a parameter
    with no media type joins the range before it).
    """
    ranges: list[tuple[str, dict[str, str]]] = []
    for piece in accept.split(","):
        tokens = [token for token in re.split(r"[;\s]+", piece) if token]
        if not tokens:
            continue
        if "/" not in tokens[0] and "=" in tokens[0] and ranges:
            ranges[-1][1].update(_media_parameters(tokens))
            continue
        ranges.append((tokens[0].lower(), _media_parameters(tokens[1:])))
    return ranges


def _media_parameters(tokens: list[str]) -> dict[str, str]:
    parameters = {}
    for token in tokens:
        name, _, value = token.partition("=")
        parameters[name.strip().lower()] = value.strip().strip('"')
    return parameters


def _refused(parameters: dict[str, str]) -> bool:
    """q=0 means "not this one"."""
    try:
        return float(parameters.get("q", "1")) <= 0
    except ValueError:
        return False


def api_version(accept: str | None, default: int) -> int | None:
    """The version an Accept header asks for; None (-> 406) if it allows nothing we serve.

    application/vnd.xplenty+json with no version (the latest: `default`) or version
    1 or 2 is served; so are */*, application/* and application/json (lenient: the
    default version), and no Accept header at all. Any other media type, or only
    an unknown version, is refused. The vendor type wins over a lenient range.
    """
    if accept is None or not accept.strip():
        return default
    ranges = [(media, parameters) for media, parameters in media_ranges(accept) if not _refused(parameters)]
    for media, parameters in ranges:
        if media == MEDIA_TYPE:
            version = parameters.get("version")
            if version is None or version == "":
                return default
            if version in ("1", "2"):
                return int(version)
    if any(media in LENIENT_MEDIA for media, _ in ranges):
        return default
    return None


class Paging(NamedTuple):
    """How a list answers `offset` and what its Link header carries (the docs allow both readings)."""
    link_style: str = "full"       # full: every query parameter | minimal: offset & limit | none: no Link
    offset_style: str = "items"    # items: offset counts objects | pages: offset counts pages of `limit`

    def first_item(self, offset: int, limit: int) -> int:
        return offset * limit if self.offset_style == "pages" else offset

    def link_header(self, base: str, path: str, params: dict[str, list[str]], offset: int, limit: int,
                    has_more: bool, since: float | None = None) -> str | None:
        """RFC 5988 Link header with absolute next/prev page URLs, or None."""
        if self.link_style == "none":
            return None
        step = 1 if self.offset_style == "pages" else limit

        def page(to: int) -> str:
            if self.link_style == "minimal":
                fields = {"offset": [str(to)], "limit": [str(limit)]}
            else:
                fields = {**params, "offset": [str(to)], "limit": [str(limit)]}
                if since is not None and "since" in params:   # canonical: no '+' to get mangled
                    moment = datetime.fromtimestamp(since, timezone.utc)
                    fields["since"] = [moment.isoformat().replace("+00:00", "Z")]
            return f"<{base}{path}?{urlencode(fields, doseq=True)}>"
        links = []
        if has_more:
            links.append(f'{page(offset + step)}; rel="next"')
        if offset > 0:
            links.append(f'{page(max(0, offset - step))}; rel="prev"')
        return ", ".join(links) or None


def link_header(base: str, path: str, params: dict[str, list[str]], query: ListQuery,
                has_more: bool) -> str | None:
    """Today's (full, items) Link header of a List jobs query."""
    return Paging().link_header(base, path, params, query.offset, query.limit, has_more, query.since)


# ---------------------------------------------------------------------------
# routing

class Route(NamedTuple):
    method: str
    pattern: re.Pattern
    endpoint: str
    handler: str     # name of a _Handler method


def _route(method: str, pattern: str, endpoint: str, handler: str) -> Route:
    return Route(method, re.compile(pattern), endpoint, handler)


_ACCOUNT = r"/(?P<account>[^/]+)/api"
ROUTES = (
    _route("GET", r"/_sandbox/stats", "control", "control_stats"),
    _route("POST", r"/_sandbox/stats/reset", "control", "control_reset_stats"),
    _route("POST", r"/_sandbox/advance", "control", "control_advance"),
    _route("POST", r"/_sandbox/touch", "control", "control_touch"),
    _route("POST", r"/_sandbox/break_schedule", "control", "control_break_schedule"),
    _route("POST", r"/_sandbox/fail_package", "control", "control_fail_package"),
    _route("POST", r"/_sandbox/stuck_package", "control", "control_stuck_package"),
    _route("GET", r"/_sandbox/truth", "control", "control_truth"),
    _route("GET", r"/rate_limit_status", "rate_limit_status", "rate_limit_status"),
    _route("GET", _ACCOUNT + r"/rate_limit_status", "rate_limit_status", "account_rate_limit_status"),
    _route("GET", _ACCOUNT + r"/jobs", "list_jobs", "list_jobs"),
    _route("GET", _ACCOUNT + r"/jobs/(?P<job_id>\d+)", "get_job", "get_job"),
    _route("GET", _ACCOUNT + r"/jobs/(?P<job_id>\d+)/log", "job_log", "job_log"),
    _route("GET", _ACCOUNT + r"/jobs/(?P<job_id>\d+)/variables", "job_variables", "job_variables"),
    _route("GET", _ACCOUNT + r"/packages", "list_packages", "list_catalog"),
    _route("GET", _ACCOUNT + r"/packages/(?P<item_id>\d+)", "get_package", "get_catalog_item"),
    _route("GET", _ACCOUNT + r"/schedules", "list_schedules", "list_catalog"),
    _route("GET", _ACCOUNT + r"/schedules/(?P<item_id>\d+)", "get_schedule", "get_catalog_item"),
    _route("GET", _ACCOUNT + r"/clusters", "list_clusters", "list_catalog"),
    _route("GET", _ACCOUNT + r"/clusters/(?P<item_id>\d+)", "get_cluster", "get_catalog_item"),
)


def match_route(method: str, path: str) -> tuple[Route | None, dict[str, str]]:
    for route in ROUTES:
        found = route.pattern.fullmatch(path)
        if found and route.method == method:
            return route, found.groupdict()
    return None, {}


# ---------------------------------------------------------------------------
# the handler

class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    disable_nagle_algorithm = True    # without it keep-alive responses stall ~40 ms (Nagle + delayed ACK)
    server: "_Server"

    def version_string(self) -> str:
        return "xplenty-sandbox"

    def log_message(self, format, *args) -> None:   # quiet: no request log on stderr
        pass

    def do_GET(self) -> None:
        self._dispatch("GET")

    def do_POST(self) -> None:
        self._dispatch("POST")

    def do_PUT(self) -> None:      # no such endpoints here: a JSON 401/404, not http.server's HTML 501
        self._dispatch("PUT")

    do_PATCH = do_DELETE = do_PUT

    @property
    def sandbox(self) -> "Sandbox":
        return self.server.sandbox

    # -- flow -----------------------------------------------------------------
    def _dispatch(self, method: str) -> None:
        self._discard_body()
        parts = urlsplit(self.path)
        path = parts.path.rstrip("/") or "/"
        params = parse_qs(parts.query, keep_blank_values=True)
        route, groups = match_route(method, path)
        self.sandbox.stats.count_request(route.endpoint if route else None)
        try:
            if route is not None and route.endpoint == "control":
                self._send(getattr(self, route.handler)(params))
            else:
                self.sandbox._gate.pass_or_hold(route.endpoint if route else None)
                sleep_ms(self.sandbox.latency_ms)
                self._serve_api(route, groups, params, path)
        except OSError:     # the client went away: nothing to say, to anyone
            raise
        except Exception:   # a sandbox bug: say so, on stderr and to the client
            traceback.print_exc(file=sys.stderr)
            self._send(Reply(500, {"message": "Sandbox internal error"}))

    def _serve_api(self, route: Route | None, groups: dict, params: dict, path: str) -> None:
        sandbox = self.sandbox
        if not self._authorized():
            sandbox.stats.count_fault("unauthorized")
            return self._send(Reply(401, {"message": "Unauthorized"},
                                    {"WWW-Authenticate": 'Basic realm="Xplenty API"'}))
        if route is None or groups.pop("account", sandbox.account) != sandbox.account:
            return self._send(Reply(404, NOT_FOUND))
        version = api_version(self.headers.get("Accept"), sandbox.default_version)
        if version is None:
            return self._send(Reply(406, {"message": "Not Acceptable: the API serves "
                                          f"{MEDIA_TYPE} (version 1 or 2)"}))
        if route.endpoint == "rate_limit_status":   # free: no credit, no faults
            return self._send(getattr(self, route.handler)())
        self._serve_charged(route, groups, params, path, version)

    def _serve_charged(self, route: Route, groups: dict, params: dict, path: str, version: int) -> None:
        """Calls that cost a credit: a misbehaviour asked for, rate limit, then faults, then the real answer."""
        sandbox = self.sandbox
        trouble = sandbox._misbehaving.take(route.endpoint)
        if trouble is not None:
            sandbox.stats.count_fault(trouble.kind)
            handler = getattr(self, route.handler)
            return self._misbehave(trouble, lambda: handler(params, version=version, path=path,
                                                            endpoint=route.endpoint, **groups))
        charge = sandbox._limiter.acquire()
        if not charge.granted:
            sandbox.stats.count_fault("rate_limited")
            return self._send(Reply(429, {"message": "Rate Limit Exceeded"},
                                    {"Retry-After": str(charge.retry_after)}))
        fault = sandbox._faults.draw()
        if fault is not None:
            sandbox._limiter.refund(charge)
            sandbox.stats.count_fault(fault)
        if fault == "drop":
            return self._drop()
        if fault == "rate_limited":   # throttled whatever the budget: a 429 costs no credit
            return self._send(Reply(429, {"message": "Rate Limit Exceeded"}, {"Retry-After": "1"}))
        if fault == "error":
            status, message = sandbox._faults.error()
            return self._send(Reply(status, {"message": message}))
        handler: Callable[..., Reply] = getattr(self, route.handler)
        reply = handler(params, version=version, path=path, endpoint=route.endpoint, **groups)
        if fault == "bad_json" and reply.status == 200:
            reply = reply._replace(body=truncated(_encode(reply.body)))
        if fault is None:
            sandbox.stats.count_credit()
        self._send(reply)

    # -- endpoints --------------------------------------------------------------
    def rate_limit_status(self) -> Reply:
        """GET /rate_limit_status: a flat object."""
        return Reply(200, self.sandbox._limiter.status()._asdict())

    def account_rate_limit_status(self) -> Reply:
        """GET /<account>/api/rate_limit_status: the shape the official Python SDK reads."""
        status = self.sandbox._limiter.status()
        return Reply(200, {"limits": {"limit": status.limit, "remaining": status.remaining}})

    def get_job(self, params: dict, version: int, job_id: str, **_) -> Reply:
        index = self._find(job_id)
        if index is None:
            return Reply(404, NOT_FOUND)
        includes = ",".join(params.get("include", [])).split(",")
        log_summary = version == 2 and "log_summary" in includes
        return Reply(200, self.sandbox._render_job(index, version, log_summary))

    def list_jobs(self, params: dict, version: int, path: str, **_) -> Reply:
        try:
            query = parse_list_query(params)
        except ValueError as error:
            return Reply(400, {"message": str(error)})
        sandbox = self.sandbox
        paging = sandbox.paging
        now = sandbox._clock.timestamp()
        page_query = replace(query, offset=paging.first_item(query.offset, query.limit))
        indices, has_more = sandbox.history.select(page_query, now)
        jobs = [sandbox._renderer.job(index, now, version) for index in indices]
        link = paging.link_header(sandbox.url, path, params, query.offset, query.limit, has_more, query.since)
        return Reply(200, jobs, {"Link": link} if link else {})

    def list_catalog(self, params: dict, path: str, endpoint: str, **_) -> Reply:
        """List packages, schedules or clusters: filtered, sorted, paged like List jobs."""
        kind = endpoint.removeprefix("list_")
        try:
            query = parse_catalog_query(kind, params)
            offset = _integer(params, "offset", 0, 0)
            limit = min(_integer(params, "limit", 20, 1), MAX_LIMIT)
        except ValueError as error:
            return Reply(400, {"message": str(error)})
        sandbox = self.sandbox
        items = select(sandbox._catalog_items(kind), query)
        first = sandbox.paging.first_item(offset, limit)
        page = items[first:first + limit]
        since = _since(params)
        link = sandbox.paging.link_header(sandbox.url, path, params, offset, limit,
                                          len(items) > first + limit, since)
        return Reply(200, page, {"Link": link} if link else {})

    def get_catalog_item(self, params: dict, endpoint: str, item_id: str, **_) -> Reply:
        kind = endpoint.removeprefix("get_") + "s"
        found = [item for item in self.sandbox._catalog_items(kind) if item["id"] == int(item_id)]
        return Reply(200, found[0]) if found else Reply(404, NOT_FOUND)

    def job_log(self, params: dict, version: int, job_id: str, **_) -> Reply:
        index = self._find(job_id)
        if index is None:
            return Reply(404, NOT_FOUND)
        return Reply(200, self.sandbox._renderer.log(index, self.sandbox._clock.timestamp()))

    def job_variables(self, params: dict, version: int, job_id: str, **_) -> Reply:
        index = self._find(job_id)
        if index is None:
            return Reply(404, NOT_FOUND)
        return Reply(200, self.sandbox._renderer.variables(self.sandbox.history.plan(index)))

    def control_stats(self, params: dict) -> Reply:
        return Reply(200, self.sandbox.stats.snapshot())

    def control_reset_stats(self, params: dict) -> Reply:
        self.sandbox.stats.reset()
        return Reply(200, self.sandbox.stats.snapshot())

    def control_advance(self, params: dict) -> Reply:
        try:
            seconds = float(params.get("seconds", [""])[-1])
            self.sandbox.advance(seconds)
        except ValueError:
            return Reply(400, {"message": "seconds must be a number >= 0"})
        return Reply(200, {"now": _iso(self.sandbox.now)})

    def control_touch(self, params: dict) -> Reply:
        try:
            ids = [int(part) for part in ",".join(params.get("ids", [])).split(",") if part.strip()]
        except ValueError:
            return Reply(400, {"message": "ids must be comma-separated job ids"})
        try:
            self.sandbox.touch(ids)
        except KeyError:
            return Reply(404, NOT_FOUND)
        return Reply(200, {"touched": ids, "now": _iso(self.sandbox.now)})

    def control_break_schedule(self, params: dict) -> Reply:
        return self._break(params, "schedule_id", self.sandbox.break_schedule)

    def control_fail_package(self, params: dict) -> Reply:
        return self._break(params, "package_id", self.sandbox.fail_package)

    def control_stuck_package(self, params: dict) -> Reply:
        return self._break(params, "package_id", self.sandbox.stuck_package)

    def control_truth(self, params: dict) -> Reply:
        return Reply(200, self.sandbox.truth())

    def _break(self, params: dict, name: str, action: Callable[..., dict]) -> Reply:
        """?<name>=ID[&at=ISO]: 200 with the breakage, 404 for an unknown id, 400 for bad input."""
        try:
            target = _integer(params, name, None, 0)
            if target is None:
                raise ValueError(f"{name} is required")
            at = _since({"since": params["at"]}) if "at" in params else None
            return Reply(200, action(target, None if at is None else datetime.fromtimestamp(at, timezone.utc)))
        except KeyError:
            return Reply(404, NOT_FOUND)
        except ValueError as error:
            return Reply(400, {"message": str(error).replace("since", "at")})

    # -- helpers ----------------------------------------------------------------
    def _find(self, job_id: str) -> int | None:
        return self.sandbox.history.find(int(job_id), self.sandbox._clock.timestamp())

    def _authorized(self) -> bool:
        """HTTP Basic with the API key as user name and an empty password."""
        scheme, _, encoded = (self.headers.get("Authorization") or "").partition(" ")
        if scheme.lower() != "basic":
            return False
        try:
            user, _, password = base64.b64decode(encoded.strip(), validate=True).decode().partition(":")
        except (binascii.Error, UnicodeDecodeError):
            return False
        return hmac.compare_digest(user.encode(), self.sandbox._api_key.encode()) and password == ""

    def _discard_body(self) -> None:
        """Read any request body so the next request on the connection parses."""
        length = self.headers.get("Content-Length")
        if length and length.isdigit():
            self.rfile.read(int(length))

    def _drop(self) -> None:
        """Close the connection without sending a byte."""
        self.close_connection = True
        try:
            self.connection.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass

    def _send(self, reply: Reply, length: int | None = -1) -> None:
        """Headers and body; `length` None sends no Content-Length (the body ends at close)."""
        body = reply.body if isinstance(reply.body, bytes) else _encode(reply.body)
        self._send_head(reply, len(body) if length == -1 else length)
        self.wfile.write(body)

    def _send_head(self, reply: Reply, length: int | None, flush: bool = True) -> bytes:
        """Send the status line and headers; with flush False, return them unsent."""
        limits = self.sandbox._limiter.status()
        self.send_response(reply.status)
        self.send_header("Content-Type", CONTENT_TYPE)
        if length is not None:
            self.send_header("Content-Length", str(length))
        self.send_header("X-RateLimit-Limit", str(limits.limit))
        self.send_header("X-RateLimit-Remaining", str(limits.remaining))
        for name, value in reply.headers.items():
            self.send_header(name, value)
        if not flush:
            head, self._headers_buffer = b"".join(self._headers_buffer) + b"\r\n", []
            return head
        self.end_headers()
        return b""

    def _misbehave(self, trouble: Misbehaviour, answer: Callable[[], Reply]) -> None:
        """Answer as `trouble` says (Sandbox.misbehave). Hanging and trickling end when the
        client hangs up, or at behave() / stop()."""
        calm = self.sandbox._misbehaving.calm
        self.close_connection = True
        if trouble.kind == "hang":
            calm.wait()
            return
        if trouble.kind in ("trickle_headers", "trickle_body"):
            reply = answer()
            body = _encode(reply.body)
            if trouble.kind == "trickle_body":
                self._send_head(reply, len(body))
                slow = body
            else:   # the status line and headers too
                slow = self._send_head(reply, len(body), flush=False) + body
            for i in range(len(slow)):
                if calm.wait(trouble.interval):
                    return
                self.wfile.write(slow[i:i + 1])
            return
        if trouble.kind == "gzip_bomb":
            bomb = gzip_bomb(trouble.size)
            self._send(Reply(200, bomb, {"Content-Encoding": "gzip"}))
            return
        # oversized: a valid JSON object of `size` bytes, sent in chunks, no Content-Length
        self._send_head(Reply(200, b""), None)
        head, tail, block = b'{"id": 1, "pad": "', b'"}', b"x" * (1024 * 1024)
        self.wfile.write(head)
        left = trouble.size - len(head) - len(tail)
        while left > 0 and not calm.is_set():
            self.wfile.write(block[:left])
            left -= len(block)
        self.wfile.write(tail)


def _encode(body: object) -> bytes:
    return json.dumps(body, ensure_ascii=False).encode("utf-8")


def _iso(moment: datetime) -> str:
    return moment.astimezone(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    request_queue_size = 128     # many concurrent clients connecting at once
    allow_reuse_address = True

    def __init__(self, address: tuple[str, int], sandbox: "Sandbox") -> None:
        self.sandbox = sandbox
        self._connections: set[socket.socket] = set()
        self._connections_lock = threading.Lock()
        super().__init__(address, _Handler)

    def server_bind(self) -> None:
        """Bind without HTTPServer's getfqdn(), a reverse DNS lookup that can take seconds."""
        socketserver.TCPServer.server_bind(self)
        self.server_name, self.server_port = self.server_address[:2]

    def process_request(self, request, client_address) -> None:
        with self._connections_lock:
            self._connections.add(request)
        super().process_request(request, client_address)

    def shutdown_request(self, request) -> None:
        with self._connections_lock:
            self._connections.discard(request)
        super().shutdown_request(request)

    def handle_error(self, request, client_address) -> None:
        if not isinstance(sys.exc_info()[1], OSError):   # a client hanging up is not news
            super().handle_error(request, client_address)

    def close_connections(self) -> None:
        """End kept-alive connections, so their handler threads finish."""
        with self._connections_lock:
            connections = list(self._connections)
        for connection in connections:
            try:
                connection.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass


class _Gate:
    """Holds API requests after the n-th until released (tests: a client parked mid-run).

    Closed by Sandbox.hold_after(n): the next n requests (to one endpoint, or to any API
    endpoint) pass, every later one waits in its handler thread, before it is served,
    until release(). Open (the default), it costs one lock-free check per request.
    """

    def __init__(self) -> None:
        self._cond = threading.Condition()
        self._closed = False
        self._endpoint: str | None = None
        self._let_through = 0
        self.held = 0          # requests waiting at the gate now
        self.passed = 0        # requests let through since hold_after()

    def close(self, after: int, endpoint: str | None) -> None:
        if after < 0:
            raise ValueError("hold_after needs a count >= 0")
        if endpoint is not None and (endpoint not in ENDPOINTS or endpoint == "control"):
            raise ValueError(f"hold_after: no API endpoint {endpoint!r}")
        with self._cond:
            self._closed, self._endpoint, self._let_through = True, endpoint, after
            self.passed = 0

    def pass_or_hold(self, endpoint: str | None) -> None:
        if not self._closed or endpoint == "control" or endpoint is None:
            return
        with self._cond:
            if not self._closed or (self._endpoint is not None and endpoint != self._endpoint):
                return
            if self.passed < self._let_through:
                self.passed += 1
                return
            self.held += 1
            self._cond.notify_all()
            try:
                self._cond.wait_for(lambda: not self._closed)
            finally:
                self.held -= 1

    def wait_held(self, count: int, timeout: float) -> None:
        with self._cond:
            if not self._cond.wait_for(lambda: self.held >= count or not self._closed, timeout):
                raise TimeoutError(f"no {count} request(s) held at the sandbox gate after {timeout:g}s "
                                   f"({self.passed} let through, {self.held} held)")
            if self.held < count:
                raise RuntimeError("the sandbox gate was released while waiting for held requests")

    def release(self) -> None:
        with self._cond:
            self._closed = False
            self._cond.notify_all()


# ---------------------------------------------------------------------------
# the public object

class _Clock:
    """Sandbox time: a start, plus advance() calls, plus clock_speed x real time elapsed."""

    def __init__(self, start: datetime, speed: float) -> None:
        if speed < 0:
            raise ValueError("clock_speed must be >= 0")
        self._base = start.timestamp()
        self._speed = speed
        self._real_origin = time.monotonic()
        self._lock = threading.Lock()

    def timestamp(self) -> float:
        with self._lock:
            return self._base + self._speed * (time.monotonic() - self._real_origin)

    def advance(self, seconds: float) -> None:
        if not seconds >= 0:
            raise ValueError("the sandbox clock only moves forward")
        with self._lock:
            self._base += seconds


def _start_time(now: datetime | None) -> datetime:
    if now is None:
        return datetime.now(timezone.utc).replace(second=0, microsecond=0)
    if now.tzinfo is None:
        return now.replace(tzinfo=timezone.utc)
    return now.astimezone(timezone.utc)


class Sandbox:
    """A local Xplenty jobs API over a deterministic generated history.

    Use as a context manager (or start()/stop()); `url` is the API base, job
    URLs are f"{url}/{account}/api/jobs/{id}".

    Paging plays either reading of the docs: link_style "full" (Link URLs carry
    every query parameter), "minimal" (only offset and limit, like the docs'
    example) or "none" (no Link header); offset_style "items" (offset counts
    objects) or "pages" (offset counts pages of `limit`; links move it by one).

    scenario "normal" is a realistic account; "healthy" has hourly and daily
    schedules whose runs never fail, stop or wait long (see history.SCENARIOS);
    "anomalies" is a normal account with run-to-run noise of CV 0.3, weekday effects, a flaky
    package and injected slowdowns, zero-record successes and volume drops (anomalies.py),
    listed in truth()["anomalies"].
    days, when given, sizes the history to about that many days instead of `jobs`.
    break_schedule, fail_package and stuck_package (or POST /_sandbox/...) break
    things from a clock time on; truth() (GET /_sandbox/truth) says what and where.
    """

    def __init__(self, *, jobs: int = 500, seed: int = 1, account: str = "sandbox",
                 api_key: str = "sandbox-key", host: str = "127.0.0.1", port: int = 0,
                 now: datetime | None = None, latency_ms: float = 0, error_rate: float = 0,
                 drop_rate: float = 0, bad_json_rate: float = 0, rate_limit: int | None = None,
                 rate_window_s: float = 3600, throttle_rate: float = 0, default_version: int = 2,
                 clock_speed: float = 0, link_style: str = "full", offset_style: str = "items",
                 scenario: str = "normal", days: float | None = None) -> None:
        if scenario not in SCENARIOS:
            raise ValueError(f"scenario must be one of {', '.join(SCENARIOS)}")
        if days is not None:
            jobs = expected_jobs(days, scenario, seed)
        if jobs < 0:
            raise ValueError("jobs must be >= 0")
        if default_version not in (1, 2):
            raise ValueError("default_version must be 1 or 2")
        if link_style not in LINK_STYLES:
            raise ValueError(f"link_style must be one of {', '.join(LINK_STYLES)}")
        if offset_style not in OFFSET_STYLES:
            raise ValueError(f"offset_style must be one of {', '.join(OFFSET_STYLES)}")
        self.paging = Paging(link_style, offset_style)
        self.account, self.host, self.port = account, host, port
        self.latency_ms, self.default_version = latency_ms, default_version
        self._api_key = api_key
        self._clock = _Clock(_start_time(now), clock_speed)
        self.history = History(jobs, seed, self._clock.timestamp(), scenario)
        self.stats = SandboxStats()
        self._limiter = RateLimiter(rate_limit, rate_window_s)
        self._faults = FaultInjector(seed, error_rate, drop_rate, bad_json_rate, throttle_rate)
        self._resources = Resources(self.history, seed)
        self._gate = _Gate()
        self._misbehaving = Misbehaving()
        self._server: _Server | None = None
        self._thread: threading.Thread | None = None
        self._set_url()

    def __repr__(self) -> str:   # never shows the API key
        return f"Sandbox(url={self.url!r}, account={self.account!r})"

    @property
    def link_style(self) -> str:
        return self.paging.link_style

    @property
    def offset_style(self) -> str:
        return self.paging.offset_style

    def _set_url(self) -> None:
        self.url = f"http://{self.host}:{self.port}"
        self._renderer = Renderer(self.history, self.url, self.account)

    # -- lifecycle ---------------------------------------------------------------
    def start(self) -> "Sandbox":
        if self._server is not None:
            return self
        self._server = _Server((self.host, self.port), self)
        self.port = self._server.server_address[1]
        self._set_url()
        self._thread = threading.Thread(target=self._server.serve_forever, kwargs={"poll_interval": 0.05},
                                        name=f"sandbox:{self.port}", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        server, self._server = self._server, None
        if server is None:
            return
        self._gate.release()    # a held request must not keep its handler thread (and us) waiting
        self._misbehaving.set(None, None)
        server.shutdown()
        server.server_close()
        server.close_connections()
        if self._thread is not None:
            self._thread.join(timeout=5)

    def __enter__(self) -> "Sandbox":
        return self.start()

    def __exit__(self, *exc_info) -> None:
        self.stop()

    # -- holding requests ------------------------------------------------------------
    def hold_after(self, n: int, endpoint: str | None = None) -> None:
        """Let the next n API requests through, then hold every later one until release().

        endpoint ("get_job", "list_jobs", ...) counts and holds only requests to it;
        None means every API endpoint. Control requests (/_sandbox/...) are never held.
        A held request is counted in stats at once, served (credit, faults) on release.
        """
        self._gate.close(n, endpoint)

    def wait_held(self, count: int = 1, timeout: float = 60) -> None:
        """Block until at least `count` requests wait at the gate.

        The timeout only guards against a hang: TimeoutError says how far the client got.
        """
        self._gate.wait_held(count, timeout)

    def release(self) -> None:
        """Serve the held requests and stop holding (stop() releases too)."""
        self._gate.release()

    @property
    def held(self) -> int:
        """Requests waiting at the gate now."""
        return self._gate.held

    # -- misbehaving on purpose --------------------------------------------------------
    def misbehave(self, kind: str, endpoint: str | None = "get_job", *, times: int | None = None,
                  interval: float = 0.5, size: int = 64 * 1024 * 1024) -> None:
        """Answer the next `times` charged requests to `endpoint` (None: every charged endpoint;
        times None: all of them, until behave()) badly, each counted in stats.faults[kind]:

        - "hang": read the request, never answer.
        - "trickle_headers": the real answer, status line and headers included, one byte every
          `interval` seconds; "trickle_body": the headers at once, then the body so.
        - "oversized": a valid JSON object of `size` bytes, no Content-Length (ends at close).
        - "gzip_bomb": Content-Encoding gzip, a body of about size/1000 bytes that inflates
          to `size` bytes (default 64 MiB; 1 GiB is 1 MiB on the wire).

        The default (nothing asked for) is unchanged behaviour.
        """
        self._misbehaving.set(Misbehaviour(kind, endpoint, interval, size), times)

    def behave(self) -> None:
        """Stop misbehaving; hanging and trickling answers in progress end (the connection closes)."""
        self._misbehaving.set(None, None)

    # -- clock and history ----------------------------------------------------------
    @property
    def now(self) -> datetime:
        return datetime.fromtimestamp(self._clock.timestamp(), timezone.utc)

    def advance(self, seconds: float) -> None:
        self._clock.advance(seconds)

    def touch(self, job_ids) -> None:
        """Mark jobs changed now (their updated_at becomes the clock's now). KeyError for unknown ids."""
        self.history.touch(list(job_ids), self._clock.timestamp())

    def job_ids(self) -> list[int]:
        return self.history.job_ids(self._clock.timestamp())

    # -- breakages ----------------------------------------------------------------
    def break_schedule(self, schedule_id: int, at: datetime | None = None) -> dict:
        """From `at` (default: now) the schedule creates no more jobs (retries neither), yet it stays
        enabled and its next_run_at keeps showing the first tick it missed.

        Jobs created up to `at` are unchanged. KeyError for an unknown schedule id;
        ValueError for a time before the sandbox clock.
        """
        return self._break(self.history.stop_schedule, schedule_id, at)

    def fail_package(self, package_id: int, at: datetime | None = None) -> dict:
        """Every run of the package created after `at` (default: now) fails, with an error text;
        scheduled runs are retried as their schedule says, and the retries fail too."""
        return self._break(self.history.fail_package, package_id, at)

    def stuck_package(self, package_id: int, at: datetime | None = None) -> dict:
        """The first run of the package created after `at` (default: now) starts, then stays
        `running` forever. Each call makes one more stuck job (truth() names them)."""
        return self._break(self.history.stick_package, package_id, at)

    def truth(self) -> dict:
        """The breakages asked for and the jobs that show them now (also GET /_sandbox/truth)."""
        return truth(self.history, self._renderer, self._clock.timestamp())

    def _break(self, action: Callable[[int, float | None, float], object], item_id: int,
               at: datetime | None) -> dict:
        when = None if at is None else _start_time(at).timestamp()
        breakage = action(item_id, when, self._clock.timestamp())
        key = "schedule_id" if breakage.kind == "schedule_stopped" else "package_id"
        return {"kind": breakage.kind, key: item_id, "at": self._renderer.iso(breakage.at),
                "now": _iso(self.now)}

    def job(self, job_id: int, version: int = 2, *, log_summary: bool = False) -> dict:
        """The payload Get job returns now (with log_summary: as with ?include=log_summary)."""
        if version not in (1, 2):
            raise ValueError("version must be 1 or 2")
        index = self.history.find(job_id, self._clock.timestamp())
        if index is None:
            raise KeyError(job_id)
        return self._render_job(index, version, log_summary)

    def catalog(self, kind: str) -> list[dict]:
        """What List packages / schedules / clusters hold now, unfiltered ("packages", ...)."""
        if kind not in ("packages", "schedules", "clusters"):
            raise ValueError(f"no catalog list {kind!r}")
        return self._catalog_items(kind)

    def _catalog_items(self, kind: str) -> list[dict]:
        if kind == "packages":
            return self._resources.packages(self._renderer)
        if kind == "schedules":
            return self._resources.schedules(self._renderer, self._clock.timestamp())
        return self._resources.clusters(self._renderer, self._clock.timestamp())

    def _render_job(self, index: int, version: int, log_summary: bool = False) -> dict:
        return self._renderer.job(index, self._clock.timestamp(), version, log_summary and version == 2)


def serve(sandbox: Sandbox) -> None:
    """Serve until KeyboardInterrupt (Ctrl-C), then stop."""
    sandbox.start()
    try:
        while True:
            time.sleep(3600)
    except KeyboardInterrupt:
        pass
    finally:
        sandbox.stop()
