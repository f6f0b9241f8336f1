"""Settings: the values the command line resolved (a flag, else its environment variable,
through click's envvar=), else the defaults here.

The API key is only ever read from the environment or a file, and no repr,
log line or exception shows it. Database URLs are shown with the password masked,
and with nothing of the credentials when the URL does not parse; `scrub` removes
the configured secrets from any text about to be printed.
"""

from __future__ import annotations

import dataclasses
import ipaddress
import logging
import os
import stat
from collections.abc import Mapping
from urllib.parse import urlsplit

from sqlalchemy.engine import make_url

from archiver.errors import ConfigError

log = logging.getLogger(__name__)

DEFAULT_API_URL = "https://api.xplenty.com"
DEFAULT_DATABASE_URL = "sqlite:///xplenty_archive.db"
SYNC_BATCH_SIZE = 500       # jobs a sync writes per transaction: what a killed run fetched for nothing
INGEST_BATCH_SIZE = 2000    # an ingest's: a file costs nothing to read again, and a bulk load is
                            # faster in fewer, larger transactions (README, "A large one-off load")
LOG_LEVELS = ("debug", "info", "warning", "error")


class Secret:
    """Holds a secret string; its str and repr never show it. Read it with .reveal()."""

    __slots__ = ("_value",)

    def __init__(self, value: str):
        self._value = value

    def reveal(self) -> str:
        return self._value

    def __bool__(self) -> bool:
        return bool(self._value)

    def __repr__(self) -> str:
        return "Secret('********')"

    __str__ = __repr__


@dataclasses.dataclass(frozen=True)
class Settings:
    account: str | None
    api_key: Secret | None = dataclasses.field(default=None, repr=False)
    api_url: str = DEFAULT_API_URL
    database_url: str = DEFAULT_DATABASE_URL

    def __repr__(self) -> str:
        key = "set" if self.api_key else "missing"
        return (f"Settings(account={self.account!r}, api_key=<{key}>, api_url={self.api_url!r}, "
                f"database_url={mask_url(self.database_url)!r})")

    def require_api(self) -> "Settings":
        """Fail with a one-line usage error unless the account and key are known."""
        if not self.account:
            raise ConfigError("no Xplenty account: set XPLENTY_ACCOUNT_ID or pass --account")
        if not self.api_key:
            raise ConfigError("no API key: set XPLENTY_API_KEY or XPLENTY_API_KEY_FILE "
                              "(the key is never accepted on the command line)")
        return self


def database_url(environ: Mapping[str, str] | None = None) -> str:
    """The database URL outside the CLI (plain `alembic`): ARCHIVER_DATABASE_URL, else the file
    ARCHIVER_DATABASE_URL_FILE names, else the default."""
    return resolve_database_url(None, environ)


def resolve_database_url(db: str | None, environ: Mapping[str, str] | None = None) -> str:
    """`db` (--db or ARCHIVER_DATABASE_URL, as the command line resolved it), else the URL in the
    file ARCHIVER_DATABASE_URL_FILE names (so a password shows neither in `ps` nor in the
    environment), else the default. The URL's secrets are remembered for `scrub`."""
    env = os.environ if environ is None else environ
    url = db or env.get("ARCHIVER_DATABASE_URL")
    if not url and env.get("ARCHIVER_DATABASE_URL_FILE"):
        url = read_secret_file("ARCHIVER_DATABASE_URL_FILE", env["ARCHIVER_DATABASE_URL_FILE"])
    url = url or DEFAULT_DATABASE_URL
    remember_url(url)
    return url


SECRET_FILE_MAX = 4096


def read_secret_file(variable: str, path: str) -> str:
    """The stripped text of a small regular file holding a secret. A FIFO, a device, a file
    over SECRET_FILE_MAX bytes or an empty one is a ConfigError naming the file (never its
    content); a file group or others may read gets a warning, as ssh gives."""
    try:
        fd = os.open(path, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_NOCTTY", 0))
    except OSError as exc:
        raise ConfigError(f"cannot read {variable} {path}: {exc.strerror}") from None
    try:
        info = os.fstat(fd)
        if not stat.S_ISREG(info.st_mode):
            raise ConfigError(f"{variable} {path} is not a regular file (a FIFO, device or folder): "
                              "put the secret in a plain file")
        if info.st_size > SECRET_FILE_MAX:
            raise ConfigError(f"{variable} {path} is {info.st_size} bytes, more than a secret needs "
                              f"(at most {SECRET_FILE_MAX}): is it the right file?")
        data = b""
        while len(data) <= SECRET_FILE_MAX:
            chunk = os.read(fd, SECRET_FILE_MAX + 1 - len(data))
            if not chunk:
                break
            data += chunk
    except OSError as exc:
        raise ConfigError(f"cannot read {variable} {path}: {exc.strerror}") from None
    finally:
        os.close(fd)
    if len(data) > SECRET_FILE_MAX:
        raise ConfigError(f"{variable} {path} is more than {SECRET_FILE_MAX} bytes: is it the right file?")
    try:
        text = data.decode("utf-8").strip()
    except UnicodeDecodeError:
        raise ConfigError(f"{variable} {path} is not UTF-8 text") from None
    if not text:
        raise ConfigError(f"{variable} {path} is empty")
    mode = stat.S_IMODE(info.st_mode)
    if mode & 0o044:
        log.warning("%s %s is readable by group or others (mode %04o): chmod 600 it", variable, path, mode)
    return text


def read_api_key(environ: Mapping[str, str]) -> Secret | None:
    """The key from XPLENTY_API_KEY, else from the file XPLENTY_API_KEY_FILE names (see
    read_secret_file); None if neither is set. A key that cannot travel in an HTTP header
    (a character outside Latin-1, a control character) is a ConfigError before any request."""
    key = environ.get("XPLENTY_API_KEY")
    if key:
        key, source = key.strip(), "XPLENTY_API_KEY"
    else:
        path = environ.get("XPLENTY_API_KEY_FILE")
        if not path:
            return None
        key, source = read_secret_file("XPLENTY_API_KEY_FILE", path), f"the key in XPLENTY_API_KEY_FILE {path}"
    bad = next((i for i, ch in enumerate(key) if ord(ch) > 0xFF or ord(ch) < 0x20 or 0x7F <= ord(ch) < 0xA0), None)
    if bad is not None:
        raise ConfigError(f"{source} has a character at position {bad + 1} that cannot be sent in an HTTP "
                          "header (not Latin-1, or a control character): copy the key again")
    remember_secret(key)
    return Secret(key)


def is_loopback(host: str) -> bool:
    """Whether `host` is this machine: the name localhost, or an address (parsed, not
    matched as text: 127.attacker.example is not) in 127.0.0.0/8 or ::1."""
    host = host.strip("[]").rstrip(".").lower()
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def check_api_url(url: str, allow_insecure_http: bool = False) -> str:
    """Refuse plain http:// (the key would cross the network in clear) unless the host is
    loopback or the user insisted."""
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ConfigError(f"API URL must be an http(s) URL with a host, got {mask_url_text(url)!r}")
    if parts.username or parts.password:
        raise ConfigError("API URL must not carry credentials; use XPLENTY_API_KEY or XPLENTY_API_KEY_FILE")
    if parts.scheme == "http" and not is_loopback(parts.hostname) and not allow_insecure_http:
        raise ConfigError(f"refusing plain http:// to {parts.hostname}: the API key would travel "
                          "unencrypted; use https:// (or --allow-insecure-http if you really must)")
    return url


def mask_url_text(url: str) -> str:
    """An http(s) URL safe to show: the password replaced by ***; when the credentials are
    ambiguous (more than one @), everything between :// and the last @ hidden."""
    if _ambiguous_credentials(url):
        return _mask_credentials(url)
    try:
        parts = urlsplit(url)
        password = parts.password
    except ValueError:
        return _mask_credentials(url)
    if password:
        return url.replace(f":{password}@", ":***@")
    return url


def _credentials_span(url: str) -> tuple[int, int] | None:
    """Where the text between :// and the last @ lies in `url` (None if there is no such text)."""
    start = url.find("://")
    end = url.rfind("@")
    if start < 0 or end < start + 3:
        return None
    return start + 3, end


def _ambiguous_credentials(url: str) -> bool:
    span = _credentials_span(url)
    return span is not None and "@" in url[span[0]:span[1]]


def _mask_credentials(url: str) -> str:
    span = _credentials_span(url)
    return url if span is None else url[:span[0]] + "***" + url[span[1]:]


def load_settings(*, account: str | None = None, api_url: str | None = None,
                  db: str | None = None, environ: Mapping[str, str] | None = None,
                  allow_insecure_http: bool = False, with_key: bool = True) -> Settings:
    """Settings from resolved values (None: not given); the key from `environ` (os.environ),
    read only `with_key` (report, db and ingest never touch it); the database URL as
    resolve_database_url finds it, refused here if it does not parse."""
    env = os.environ if environ is None else environ
    url = check_api_url(api_url or DEFAULT_API_URL, allow_insecure_http)
    db_url = resolve_database_url(db, env)
    check_database_url(db_url)
    return Settings(
        account=account or None,
        api_key=read_api_key(env) if with_key else None,
        api_url=api_root(url, account or None),
        database_url=db_url,
    )


def check_database_url(url: str) -> str:
    """Refuse a database URL the parser chokes on (often a password with an unencoded @ or :)
    with a message that shows nothing of its credentials, never the parser's own text."""
    try:
        host = make_url(url).host
    except Exception:
        host = "@"  # the parser's own text could quote the password: never shown
    if host and "@" in host:  # an unencoded @ in the password: the parser took part of it for the host
        raise ConfigError(f"not a database URL: {mask_url(url)}; use sqlite:///PATH or "
                          "DRIVER://USER:PASSWORD@HOST/DB with special characters in the password "
                          "percent-encoded (@ as %40, : as %3A, / as %2F)") from None
    return url


def api_root(url: str, account: str | None) -> str:
    """The service's root URL, which the archiver extends with `/<account>/api/...`.

    A URL copied from a request example (`.../<account>/api`, a trailing slash) is cut
    back to the root with a warning; one naming another account's path is refused."""
    parts = urlsplit(url)
    segments = [s for s in parts.path.split("/") if s]
    if len(segments) >= 2 and segments[-1] == "api":
        if account and segments[-2] != account:
            raise ConfigError(f"the API URL ends in /{segments[-2]}/api, but the account is {account!r}: "
                              f"set the URL to the service root ({parts.scheme}://{parts.netloc}) and the "
                              "account with XPLENTY_ACCOUNT_ID or --account")
        segments = segments[:-2]
        root = parts._replace(path="/".join([""] + segments), query="", fragment="").geturl()
        log.warning("the API URL should be the service root: using %s (the archiver adds /<account>/api)",
                    mask_url_text(root))
        return root.rstrip("/")
    return url.rstrip("/")


def mask_url(url: str) -> str:
    """The URL with any password replaced by ***, safe to print and log. A URL that does
    not parse, or whose credentials hold another @ (the parser may take part of the password
    for the host), shows nothing between :// and the last @."""
    if _ambiguous_credentials(url):
        return _mask_credentials(url)
    try:
        return make_url(url).render_as_string(hide_password=True)
    except Exception:  # not a URL we can parse: show nothing that could be secret
        return _mask_credentials(url) if _credentials_span(url) else "<unparseable database URL>"


# -- secrets that must never be printed -----------------------------------------------------------
_SECRETS: set[str] = set()
_URLS: set[str] = set()
MIN_SECRET = 4  # shorter fragments are left alone: scrubbing them would garble ordinary words


def remember_secret(value: str | None) -> None:
    if value and len(value) >= MIN_SECRET:
        _SECRETS.add(value)


def remember_url(url: str) -> None:
    """Remember a database URL's password (as parsed and as the text up to the last @, with
    its pieces between @ and :) so that `scrub` can take it out of an exception's text."""
    _URLS.add(url)
    span = _credentials_span(url)
    if span is None:
        return
    _, colon, password = url[span[0]:span[1]].partition(":")
    if colon:
        remember_secret(password)
        for piece in password.replace("@", ":").split(":"):
            remember_secret(piece)
    try:
        remember_secret(make_url(url).password)
    except Exception:
        pass


def scrub(text: str) -> str:
    """`text` with every remembered URL masked and every remembered secret replaced by ***."""
    for url in sorted(_URLS, key=len, reverse=True):
        if url in text:
            text = text.replace(url, mask_url(url))
    for secret in sorted(_SECRETS, key=len, reverse=True):
        text = text.replace(secret, "***")
    return text
