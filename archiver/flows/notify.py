"""One POST per alert event to a webhook (Slack-compatible), with a timeout and a few retries.

The webhook URL is a secret like the API key (a Slack hook's path is its password): it comes
from ARCHIVER_NOTIFY_URL or the file ARCHIVER_NOTIFY_URL_FILE names (or --notify, with a
warning), is remembered for config.scrub, and every message about a delivery names at most
scheme://host. Text from the API inside an alert is hostile: the `text` line has control
and format characters removed, Slack's `& < >` escaped (no `<!channel>` from a package
name) and its length capped; the structured alert keeps it verbatim as JSON.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import threading
import time
import unicodedata
from collections.abc import Mapping
from datetime import datetime, timezone
from typing import Any
from urllib.parse import urlsplit

import requests

from archiver.client import bounded, watched_session
from archiver.config import Secret, read_secret_file, remember_secret, scrub
from archiver.errors import ConfigError

log = logging.getLogger(__name__)

URL_ENV, URL_FILE_ENV = "ARCHIVER_NOTIFY_URL", "ARCHIVER_NOTIFY_URL_FILE"
TEXT_MAX = 300
BODY_MAX = 64 * 1024           # of the receiver's answer: read, never kept
RETRYABLE = {408, 425, 429, 500, 502, 503, 504}


@dataclasses.dataclass(frozen=True)
class NotifyPolicy:
    timeout: float = 10.0         # connect and read, each
    attempt_total: float = 30.0   # one attempt, answer included (a trickling receiver ends here)
    retries: int = 3              # after the first attempt
    backoff: float = 1.0          # seconds before the first retry, doubling
    deadline: float = 120.0       # seconds for all the deliveries of one check


@dataclasses.dataclass
class Delivery:
    delivered: bool
    attempts: int
    http_status: int | None = None
    error: str | None = None


def resolve_url(flag: str | None, environ: Mapping[str, str]) -> Secret | None:
    """The webhook URL: --notify (warned about: argv is visible to every local user), else
    ARCHIVER_NOTIFY_URL, else the file ARCHIVER_NOTIFY_URL_FILE names; None when none is set."""
    if flag:
        log.warning("--notify puts the webhook URL in the process list, visible to other users: "
                    "use %s or %s", URL_ENV, URL_FILE_ENV)
        url, source = flag.strip(), "--notify"
    elif environ.get(URL_ENV):
        url, source = environ[URL_ENV].strip(), URL_ENV
    elif environ.get(URL_FILE_ENV):
        url, source = read_secret_file(URL_FILE_ENV, environ[URL_FILE_ENV]), f"the URL in {URL_FILE_ENV}"
    else:
        return None
    guard(url)
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ConfigError(f"{source} is not an http(s) URL with a host")
    return Secret(url)


class _Scrubbed(logging.Filter):
    """urllib3 logs each request's path at debug level: a webhook's path is its secret."""

    def filter(self, record: logging.LogRecord) -> bool:
        text = record.getMessage()
        cleaned = scrub(text)
        if cleaned != text:
            record.msg, record.args = cleaned, ()
        return True


SCRUBBED = _Scrubbed()


def guard(url: str) -> None:
    """Remember the URL, and its path and query, as secrets (config.scrub takes them out of any
    text), and scrub urllib3's request log lines."""
    parts = urlsplit(url)
    for secret in (url, parts.path, parts.query, parts.path + ("?" + parts.query if parts.query else "")):
        if secret.strip("/"):
            remember_secret(secret)
    logger = logging.getLogger("urllib3.connectionpool")
    if SCRUBBED not in logger.filters:
        logger.addFilter(SCRUBBED)


def where(url: Secret) -> str:
    """What a message may say about the webhook: scheme://host, nothing of its path or query."""
    parts = urlsplit(url.reveal())
    return f"{parts.scheme}://{parts.hostname}"


def clean(text: str, limit: int = TEXT_MAX) -> str:
    """One line for a chat message: control/format characters out, `& < >` escaped, capped."""
    plain = "".join(" " if unicodedata.category(ch) in ("Cc", "Cf", "Cs", "Zl", "Zp") else ch for ch in text)
    plain = " ".join(plain.split())
    if len(plain) > limit:
        plain = plain[:limit - 1] + "…"
    return plain.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def message(event: str, alert: Mapping[str, Any]) -> dict[str, Any]:
    """The POST body: a Slack-compatible `text`, the event and the structured alert."""
    head = "RESOLVED" if event == "resolved" else str(alert["severity"]).upper()
    text = clean(f"[{head}] {alert['kind']} {alert['key']}: {alert.get('message') or ''}")
    return {"text": text, "event": event, "alert": dict(alert)}


def _iso(value):
    if isinstance(value, datetime):
        return value.astimezone(timezone.utc).isoformat().replace("+00:00", "Z")
    return str(value)


def post(url: Secret, body: Mapping[str, Any], policy: NotifyPolicy, stop: threading.Event | None = None,
         ends: float | None = None, session: requests.Session | None = None) -> Delivery:
    """POST `body` until a 2xx, a non-retryable answer, the retries, `ends` (monotonic) or `stop`."""
    guard(url.reveal())
    data = json.dumps(body, default=_iso, ensure_ascii=False).encode("utf-8")
    stop = stop or threading.Event()
    session = session or watched_session()
    result = Delivery(False, 0)
    for attempt in range(policy.retries + 1):
        if attempt and not _pause(policy.backoff * 2 ** (attempt - 1), stop, ends):
            break
        result = _attempt(session, url, data, policy, stop, ends)
        result.attempts = attempt + 1
        if result.delivered or (result.http_status is not None and result.http_status not in RETRYABLE):
            break
    return result


def _pause(seconds: float, stop: threading.Event, ends: float | None) -> bool:
    """Wait before a retry; False when the stop event or the deadline comes first."""
    if ends is not None and time.monotonic() + seconds >= ends:
        return False
    return not stop.wait(seconds) if seconds > 0 else not stop.is_set()


def _attempt(session: requests.Session, url: Secret, data: bytes, policy: NotifyPolicy,
             stop: threading.Event, ends: float | None) -> Delivery:
    """One POST, ended by its own total, the check's deadline or `stop` (client.bounded)."""
    own_end = time.monotonic() + policy.attempt_total
    with bounded(own_end if ends is None else min(own_end, ends), stop) as watch:
        try:
            with session.post(url.reveal(), data=data, headers={"Content-Type": "application/json"},
                              timeout=(policy.timeout, policy.timeout), stream=True,
                              allow_redirects=False) as resp:
                _drain(resp)
                status = resp.status_code
        except requests.Timeout:
            return Delivery(False, 1, error=f"{where(url)}: no answer within {policy.timeout:g}s")
        except requests.RequestException as exc:  # its text quotes the URL: only the class is kept
            if watch.reason is not None:
                return Delivery(False, 1, error=f"{where(url)}: no whole answer before the "
                                                f"{'stop' if watch.reason == 'stopped' else 'deadline'}")
            return Delivery(False, 1, error=f"{where(url)}: {type(exc).__name__} (could not connect or send)")
    if watch.reason is not None:   # shut while the answer was read: a short body is no answer
        return Delivery(False, 1, error=f"{where(url)}: no whole answer before the deadline")
    if 200 <= status < 300:
        return Delivery(True, 1, status)
    return Delivery(False, 1, status, f"{where(url)}: HTTP {status}")


def _drain(resp: requests.Response) -> None:
    """Read (and drop) at most BODY_MAX bytes of the answer, so a huge one costs nothing."""
    read = 0
    for chunk in resp.iter_content(8192):
        read += len(chunk)
        if read > BODY_MAX:
            break
