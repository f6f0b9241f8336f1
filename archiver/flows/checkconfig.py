"""What `archiver check` expects: severities and thresholds, from defaults and a TOML file.

The file is small on purpose. `[defaults]` applies to every subject; `[schedules.ID]` and
`[packages.ID]` win over it for that schedule or package. A mistake in the file (a key
nobody reads, a bad duration, a severity that does not exist) is a ConfigError naming
the file and the key, so a typo never silently turns a rule off.

    [defaults]
    failing_runs = 3
    sync_stale_after = "1h"
    severity = { late = "warning", stuck = "critical" }

    [schedules.42]
    grace = "30m"
    severity = { late = "critical" }

    [packages.7]
    stale_after = "2d"
    stuck_after = "3h"

    [anomalies]          # any field of archiver.anomaly.Thresholds (docs/anomalies.md)
    slow_ratio = 4.0
    volume_direction = "both"
"""

from __future__ import annotations

import dataclasses
import math
import os
import re
import tomllib
from collections.abc import Mapping
from datetime import timedelta
from typing import Any

from archiver import anomaly
from archiver.errors import ConfigError

KINDS = ("late", "stale", "failing", "stuck", "sync_stale", "sync_failing", *anomaly.KINDS)
SEVERITIES = ("warning", "critical")
DEFAULT_SEVERITY = {"late": "warning", "stale": "critical", "failing": "critical", "stuck": "warning",
                    "sync_stale": "critical", "sync_failing": "warning", **anomaly.SEVERITY}
DEFAULT_FAILING_RUNS = 3
DEFAULT_SYNC_STALE_AFTER = timedelta(hours=1)
SYNC_FAILING_RUNS = 3
MIN_GRACE = timedelta(minutes=10)
GRACE_SHARE = 0.10
MIN_STUCK = timedelta(hours=1)
HAND_MIN_SUCCESSES = 8
CONFIG_ENV = "ARCHIVER_CHECK_CONFIG"

TUNABLES = ("grace", "stale_after", "stuck_after", "failing_runs", "severity")
DURATION_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}


def parse_duration(text: str, what: str = "duration") -> timedelta:
    """`90m`, `6h`, `2d`, `1w`, `30s` (or several: `1h30m`) as a timedelta; else ConfigError."""
    parts = re.findall(r"(\d+)\s*([smhdw])", text or "")
    if not parts or re.sub(r"\s+", "", "".join(a + u for a, u in parts)) != re.sub(r"\s+", "", text):
        raise ConfigError(f"{what} {text!r}: use a duration like 90m, 6h, 2d or 1w")
    return timedelta(seconds=sum(int(a) * DURATION_UNITS[u] for a, u in parts))


@dataclasses.dataclass(frozen=True)
class Tuning:
    """The tunables of one scope ([defaults], a schedule or a package); None: not given there."""

    grace: timedelta | None = None
    stale_after: timedelta | None = None
    stuck_after: timedelta | None = None
    failing_runs: int | None = None
    severity: Mapping[str, str] = dataclasses.field(default_factory=dict)


@dataclasses.dataclass(frozen=True)
class CheckConfig:
    defaults: Tuning = Tuning()
    schedules: Mapping[int, Tuning] = dataclasses.field(default_factory=dict)
    packages: Mapping[int, Tuning] = dataclasses.field(default_factory=dict)
    sync_stale_after: timedelta = DEFAULT_SYNC_STALE_AFTER
    source: str | None = None
    anomalies: anomaly.Thresholds = anomaly.DEFAULTS

    def scopes(self, schedule_id: int | None = None, package_id: int | None = None) -> list[Tuning]:
        """The scopes that apply, strongest first: the schedule, the package, [defaults]."""
        found = [self.schedules.get(schedule_id), self.packages.get(package_id), self.defaults]
        return [t for t in found if t is not None]

    def value(self, name: str, schedule_id: int | None = None, package_id: int | None = None):
        return next((getattr(t, name) for t in self.scopes(schedule_id, package_id)
                     if getattr(t, name) is not None), None)

    def severity(self, kind: str, schedule_id: int | None = None, package_id: int | None = None) -> str:
        return next((t.severity[kind] for t in self.scopes(schedule_id, package_id) if kind in t.severity),
                    DEFAULT_SEVERITY[kind])

    def failing_runs(self, schedule_id: int | None = None, package_id: int | None = None) -> int:
        return self.value("failing_runs", schedule_id, package_id) or DEFAULT_FAILING_RUNS

    def most_failing_runs(self) -> int:
        scopes = [self.defaults, *self.schedules.values(), *self.packages.values()]
        return max([DEFAULT_FAILING_RUNS, *(t.failing_runs or 0 for t in scopes)])


def load_config(path: str | None, environ: Mapping[str, str] | None = None) -> CheckConfig:
    """The config at `path`, else at $ARCHIVER_CHECK_CONFIG, else the documented defaults."""
    env = os.environ if environ is None else environ
    path = path or env.get(CONFIG_ENV) or None
    if path is None:
        return CheckConfig()
    try:
        with open(path, "rb") as f:
            data = tomllib.load(f)
    except OSError as exc:
        raise ConfigError(f"check config {path}: cannot read it: {exc.strerror}") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"check config {path}: not valid TOML: {exc}") from None
    return parse_config(data, path)


def parse_config(data: Mapping[str, Any], source: str = "<config>") -> CheckConfig:
    unknown = set(data) - {"defaults", "schedules", "packages", "anomalies"}
    if unknown:
        raise ConfigError(f"check config {source}: unknown key {sorted(unknown)[0]!r} (use [defaults], "
                          "[schedules.ID], [packages.ID] or [anomalies])")
    defaults = dict(_table(data.get("defaults", {}), source, "defaults"))
    sync_stale = defaults.pop("sync_stale_after", None)
    return CheckConfig(
        defaults=_tuning(defaults, source, "defaults"),
        schedules=_by_id(data.get("schedules", {}), source, "schedules"),
        packages=_by_id(data.get("packages", {}), source, "packages"),
        sync_stale_after=(_duration(sync_stale, source, "defaults.sync_stale_after")
                          if sync_stale is not None else DEFAULT_SYNC_STALE_AFTER),
        source=source,
        anomalies=_thresholds(_table(data.get("anomalies", {}), source, "anomalies"), source),
    )


def _table(value: Any, source: str, where: str) -> Mapping[str, Any]:
    if not isinstance(value, Mapping):
        raise ConfigError(f"check config {source}: {where} must be a table")
    return value


def _by_id(value: Any, source: str, where: str) -> dict[int, Tuning]:
    found = {}
    for key, table in _table(value, source, where).items():
        if not str(key).isdigit():
            raise ConfigError(f"check config {source}: {where}.{key}: the key must be a numeric id")
        found[int(key)] = _tuning(_table(table, source, f"{where}.{key}"), source, f"{where}.{key}")
    return found


def _tuning(table: Mapping[str, Any], source: str, where: str) -> Tuning:
    unknown = set(table) - set(TUNABLES)
    if unknown:
        raise ConfigError(f"check config {source}: unknown key {where}.{sorted(unknown)[0]} "
                          f"(known: {', '.join(TUNABLES)}" + (", sync_stale_after" if where == "defaults" else "")
                          + ")")
    durations = {name: _duration(table[name], source, f"{where}.{name}")
                 for name in ("grace", "stale_after", "stuck_after") if name in table}
    return Tuning(**durations, failing_runs=_runs(table.get("failing_runs"), source, where),
                  severity=_severities(table.get("severity", {}), source, where))


def _duration(value: Any, source: str, key: str) -> timedelta:
    if not isinstance(value, str):
        raise ConfigError(f"check config {source}: {key} must be a duration text like \"6h\"")
    try:
        return parse_duration(value)
    except ConfigError:
        raise ConfigError(f"check config {source}: {key} = {value!r}: use a duration like 90m, 6h, 2d "
                          "or 1w") from None


def _runs(value: Any, source: str, where: str) -> int | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= 50:
        raise ConfigError(f"check config {source}: {where}.failing_runs must be a whole number from 1 to 50")
    return value


def _severities(value: Any, source: str, where: str) -> dict[str, str]:
    table = _table(value, source, f"{where}.severity")
    for kind, level in table.items():
        if kind not in KINDS:
            raise ConfigError(f"check config {source}: unknown key {where}.severity.{kind} "
                              f"(kinds: {', '.join(KINDS)})")
        if level not in SEVERITIES:
            raise ConfigError(f"check config {source}: {where}.severity.{kind} = {level!r}: "
                              "use \"warning\" or \"critical\"")
    return dict(table)


THRESHOLD_TYPES = {f.name: f.type for f in dataclasses.fields(anomaly.Thresholds)}  # "int", "float", "str"
SHARES = ("zero_loaded_share", "disappear_share", "flaky_share")  # 0 to 1
AT_LEAST_ONE = ("window", "min_history", "weekday_min", "flaky_min_chains", "flaky_clear", "new_weekday_margin")


def _thresholds(table: Mapping[str, Any], source: str) -> anomaly.Thresholds:
    """[anomalies]: any field of anomaly.Thresholds over its default, each checked for its kind."""
    unknown = set(table) - set(THRESHOLD_TYPES)
    if unknown:
        raise ConfigError(f"check config {source}: unknown key anomalies.{sorted(unknown)[0]} "
                          f"(known: {', '.join(THRESHOLD_TYPES)})")
    return dataclasses.replace(anomaly.DEFAULTS, **{name: _threshold(name, value, source)
                                                    for name, value in table.items()})


def _threshold(name: str, value: Any, source: str) -> Any:
    key, kind = f"anomalies.{name}", THRESHOLD_TYPES[name]
    if kind == "str":
        if value not in anomaly.DIRECTIONS:
            raise ConfigError(f"check config {source}: {key} = {value!r}: use one of "
                              + ", ".join(f'"{d}"' for d in anomaly.DIRECTIONS))
        return value
    whole = kind == "int"
    number = not isinstance(value, bool) and isinstance(value, int if whole else (int, float))
    if not number or not math.isfinite(value) or value < (1 if name in AT_LEAST_ONE else 0):
        what = "a whole number" if whole else "a number"
        raise ConfigError(f"check config {source}: {key} must be {what} of at least "
                          f"{1 if name in AT_LEAST_ONE else 0}")
    if (name in SHARES and value > 1) or (name == "volume_drop" and value >= 1):
        raise ConfigError(f"check config {source}: {key} = {value!r}: a share, "
                          + ("below 1" if name == "volume_drop" else "from 0 to 1"))
    return value if whole else float(value)
