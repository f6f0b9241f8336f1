"""Settings: the values the command line resolved (a flag, else its environment variable,
through click's envvar=), else the defaults here.

The API key is only ever read from the environment or a file, and no repr,
log line or exception shows it. Database URLs are shown with the password masked.
"""

from __future__ import annotations

import dataclasses
import logging
import os
from collections.abc import Mapping
from pathlib import Path
from urllib.parse import urlsplit

from sqlalchemy.engine import make_url

from archiver.errors import ConfigError

log = logging.getLogger(__name__)

DEFAULT_API_URL = "https://api.xplenty.com"
DEFAULT_DATABASE_URL = "sqlite:///xplenty_archive.db"
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
    """The database URL outside the CLI (plain `alembic`): ARCHIVER_DATABASE_URL, else the default."""
    env = os.environ if environ is None else environ
    return env.get("ARCHIVER_DATABASE_URL") or DEFAULT_DATABASE_URL


def read_api_key(environ: Mapping[str, str]) -> Secret | None:
    key = environ.get("XPLENTY_API_KEY")
    if key:
        return Secret(key.strip())
    path = environ.get("XPLENTY_API_KEY_FILE")
    if not path:
        return None
    try:
        text = Path(path).read_text(encoding="utf-8").strip()
    except OSError as exc:
        raise ConfigError(f"cannot read XPLENTY_API_KEY_FILE {path}: {exc.strerror}") from None
    if not text:
        raise ConfigError(f"XPLENTY_API_KEY_FILE {path} is empty")
    return Secret(text)


LOOPBACK_HOSTS = ("localhost", "::1")


def is_loopback(host: str) -> bool:
    return host in LOOPBACK_HOSTS or host.startswith("127.")


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
    parts = urlsplit(url)
    if parts.password:
        return url.replace(f":{parts.password}@", ":***@")
    return url


def load_settings(*, account: str | None = None, api_url: str | None = None,
                  db: str | None = None, environ: Mapping[str, str] | None = None,
                  allow_insecure_http: bool = False) -> Settings:
    """Settings from resolved values (None: not given); the key from `environ` (os.environ)."""
    url = check_api_url(api_url or DEFAULT_API_URL, allow_insecure_http)
    return Settings(
        account=account or None,
        api_key=read_api_key(os.environ if environ is None else environ),
        api_url=api_root(url, account or None),
        database_url=db or DEFAULT_DATABASE_URL,
    )


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
    """The URL with any password replaced by ***, safe to print and log."""
    try:
        return make_url(url).render_as_string(hide_password=True)
    except Exception:  # not a URL we can parse: show nothing that could be secret
        return "<unparseable database URL>"
