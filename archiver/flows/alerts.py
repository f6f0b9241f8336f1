"""`archiver check` and `archiver ack`: the board, the alerts table, and notifications sent once.

Every check records its alerts (new: inserted, or reopened as a new episode; seen again:
last_seen_at; gone: resolved_at) and, with a webhook, POSTs what is not yet delivered: an
opening not yet sent (unless silenced) and the resolution of an alert whose opening was
sent. notified_at / resolved_notified_at are set only after a 2xx, each in its own
transaction, so a failed delivery is tried again by the next check and a delivered one is
not sent again (at least once: a crash between the answer and the commit resends one).
"""

from __future__ import annotations

import dataclasses
import threading
import time
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import Engine, insert, select, update

from archiver import database
from archiver.config import Secret, Settings
from archiver.errors import ConfigError
from archiver.flows.checkconfig import SEVERITIES, load_config
from archiver.flows.health import Board, board_table, evaluate
from archiver.flows.notify import NotifyPolicy, message, post
from archiver.models import AlertDeliveryRow, AlertRow
from archiver.textsafe import safe_text
from archiver.utc import utcnow

alerts = AlertRow.__table__
deliveries = AlertDeliveryRow.__table__


@dataclasses.dataclass
class CheckOptions:
    config_path: str | None = None
    fail_on: str = "critical"
    notify_url: Secret | None = dataclasses.field(default=None, repr=False)
    now: datetime | None = None
    stop: threading.Event | None = None
    policy: NotifyPolicy = NotifyPolicy()


@dataclasses.dataclass
class CheckResult:
    board: Board
    fail_on: str
    sent: int = 0
    failed: int = 0

    @property
    def firing(self) -> list:
        """The alerts that decide the exit code: unsilenced, at or above --fail-on."""
        return [a for a in self.board.alerts if a.silenced_until is None and a.at_least(self.fail_on)]

    @property
    def exit_code(self) -> int:
        return 1 if self.firing else 0

    def as_dict(self) -> dict[str, Any]:
        return {"ok": not self.firing, "checked_at": self.board.checked_at,
                "alerts": [a.as_dict() for a in self.board.alerts],
                "subjects": [s.as_dict() for s in self.board.subjects]}

    def table(self) -> str:
        text = board_table(self.board)
        if self.sent or self.failed:
            text += f"\nnotifications: {self.sent} delivered, {self.failed} failed (retried by the next check)"
        return text


def run_check(settings: Settings, options: CheckOptions) -> CheckResult:
    """Evaluate the archive, record the alerts, deliver what is due; never prints."""
    if options.fail_on not in SEVERITIES:
        raise ConfigError(f"--fail-on {options.fail_on!r}: use warning or critical")
    config = load_config(options.config_path)
    now = options.now or utcnow()
    engine = database.open_engine(settings.database_url, create=False)
    try:
        board = evaluate(engine, config, now)
        record(engine, board, now)
        result = CheckResult(board, options.fail_on)
        if options.notify_url:
            result.sent, result.failed = deliver(engine, options, now)
        return result
    finally:
        engine.dispose()


def record(engine: Engine, board: Board, now: datetime) -> None:
    """Bring the alerts table in line with the board, and mark the board's silenced alerts."""
    with engine.begin() as conn:
        stored = {row.key: row for row in conn.execute(select(alerts))}
        current = {a.key: a for a in board.alerts}
        for key, alert in current.items():
            row = stored.get(key)
            _save(conn, alert, row, now)
            if row is not None and row.resolved_at is None and row.since is not None:
                alert.since = row.since          # an episode keeps the moment it began
            if row is not None and row.silenced_until is not None and row.silenced_until > now:
                alert.silenced_until = row.silenced_until
        for key, row in stored.items():
            if row.resolved_at is None and key not in current:
                conn.execute(update(alerts).where(alerts.c.key == key).values(resolved_at=now))


def _save(conn, alert, row, now: datetime) -> None:
    values = {"kind": alert.kind, "severity": alert.severity, "schedule_id": alert.schedule_id,
              "package_id": alert.package_id, "job_id": alert.job_id, "message": alert.message,
              "last_seen_at": now}
    if row is None:
        conn.execute(insert(alerts).values(key=alert.key, since=alert.since, first_seen_at=now, **values))
    elif row.resolved_at is not None:   # it came back: a new episode on the same key
        conn.execute(update(alerts).where(alerts.c.key == alert.key).values(
            since=alert.since, first_seen_at=now, resolved_at=None, notified_at=None,
            resolved_notified_at=None, **values))
    else:
        conn.execute(update(alerts).where(alerts.c.key == alert.key).values(**values))


def due_events(engine: Engine, now: datetime) -> list[tuple[str, Any]]:
    """(event, alert row) still to deliver: openings not silenced, resolutions of sent openings."""
    with engine.connect() as conn:
        opened = conn.execute(select(alerts).where(
            alerts.c.resolved_at.is_(None), alerts.c.notified_at.is_(None),
            (alerts.c.silenced_until.is_(None)) | (alerts.c.silenced_until <= now))
            .order_by(alerts.c.first_seen_at, alerts.c.key)).all()
        closed = conn.execute(select(alerts).where(
            alerts.c.resolved_at.is_not(None), alerts.c.notified_at.is_not(None),
            alerts.c.resolved_notified_at.is_(None)).order_by(alerts.c.resolved_at, alerts.c.key)).all()
    return [("new", row) for row in opened] + [("resolved", row) for row in closed]


def deliver(engine: Engine, options: CheckOptions, now: datetime) -> tuple[int, int]:
    """POST each due event once; (delivered, failed). Stops early on SIGTERM or the deadline:
    what is left is due again at the next check."""
    ends = time.monotonic() + options.policy.deadline
    stop = options.stop or threading.Event()
    sent = failed = 0
    for event, row in due_events(engine, now):
        if stop.is_set() or time.monotonic() >= ends:
            break
        outcome = post(options.notify_url, message(event, alert_body(row)), options.policy, stop, ends)
        _record_delivery(engine, event, row.key, outcome, utcnow() if options.now is None else now)
        sent, failed = sent + outcome.delivered, failed + (not outcome.delivered)
    return sent, failed


def alert_body(row) -> dict[str, Any]:
    return {"key": row.key, "kind": row.kind, "severity": row.severity, "schedule_id": row.schedule_id,
            "package_id": row.package_id, "job_id": row.job_id, "since": row.since, "message": row.message,
            "first_seen_at": row.first_seen_at, "resolved_at": row.resolved_at}


def _record_delivery(engine: Engine, event: str, key: str, outcome, at: datetime) -> None:
    with engine.begin() as conn:
        conn.execute(insert(deliveries).values(alert_key=key, event=event, attempted_at=at, attempts=outcome.attempts,
                                               http_status=outcome.http_status, delivered=outcome.delivered,
                                               error=outcome.error))
        if outcome.delivered:
            column = "notified_at" if event == "new" else "resolved_notified_at"
            conn.execute(update(alerts).where(alerts.c.key == key).values({column: at}))


@dataclasses.dataclass
class AckResult:
    key: str
    silenced_until: datetime | None

    def line(self) -> str:
        if self.silenced_until is None:
            return f"{safe_text(self.key)}: no longer silenced"
        return f"{safe_text(self.key)}: silenced until {self.silenced_until:%Y-%m-%d %H:%M} UTC"


def ack(settings: Settings, key: str, duration: timedelta, now: datetime | None = None) -> AckResult:
    """`archiver ack KEY --for 24h`: no notification (and no exit 1) for KEY until then; 0 lifts it."""
    now = now or utcnow()
    until = now + duration if duration else None
    engine = database.open_engine(settings.database_url, create=False)
    try:
        with engine.begin() as conn:
            done = conn.execute(update(alerts).where(alerts.c.key == key).values(silenced_until=until)).rowcount
            if not done:
                known = conn.execute(select(alerts.c.key).where(alerts.c.resolved_at.is_(None))
                                     .order_by(alerts.c.key).limit(20)).scalars().all()
                raise ConfigError(f"no alert {key!r} in the archive; open alerts: {', '.join(known) or 'none'}")
    finally:
        engine.dispose()
    return AckResult(key, until)
