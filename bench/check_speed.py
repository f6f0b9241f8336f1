#!/usr/bin/env python
"""How long `archiver check`'s evaluation takes on a SQLite archive of 100,000 jobs.

    PYTHONPATH=. python bench/check_speed.py            # 100,000 jobs, 3 runs, prints the median
    PYTHONPATH=. python bench/check_speed.py --jobs 20000 --runs 5

The archive is generated here (plain inserts into a temporary file): 40 hourly and 20
daily schedules with a year of history at most, a few retries, failures and open jobs,
25 packages run by hand, a sync every 5 minutes, and job_anomalies verdicts on about 2 % of
the completed jobs (slow, zero_records and volume_drop on two outputs; the last run of every
fifth package is flagged, so some alerts are open). Each run evaluates the board
(health.evaluate) and records the alerts (alerts.record), as `archiver check` does.
The target is under 2 s.
"""

from __future__ import annotations

import argparse
import random
import statistics
import sys
import tempfile
import time
from datetime import datetime, timedelta, timezone
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))

from healthrows import Rows, job_row  # noqa: E402
from sqlalchemy import insert  # noqa: E402

from archiver import database  # noqa: E402
from archiver.flows.alerts import record  # noqa: E402
from archiver.flows.checkconfig import CheckConfig  # noqa: E402
from archiver.flows.health import evaluate  # noqa: E402
from archiver.models import JobAnomalyRow  # noqa: E402

NOW = datetime(2026, 11, 28, 12, 0, tzinfo=timezone.utc)


def build(url: str, total: int, seed: int = 1) -> int:
    rnd = random.Random(seed)
    rows = Rows(url)
    plan = [(s, "hours") for s in range(1, 41)] + [(s, "days") for s in range(41, 61)]
    hand = list(range(1001, 1026))
    per_hourly = int(total * 0.68 / 40)
    per_daily = min(int(total * 0.07 / 20), 365)
    per_hand = (total - 40 * per_hourly - 20 * per_daily) // len(hand)
    batch: list[dict] = []
    for schedule_id, unit in plan:
        step = timedelta(hours=1) if unit == "hours" else timedelta(days=1)
        count = per_hourly if unit == "hours" else per_daily
        start = NOW - step * count
        rows.schedule(schedule_id, start_at=start, unit=unit, packages=(schedule_id,), auto_retry=True, retries=2)
        for k in range(count):
            status = "failed" if rnd.random() < 0.03 else "completed"
            batch.append(job_row(rows.next_job, package_id=schedule_id, created_at=start + k * step,
                                 status=status, schedule_id=schedule_id, runtime=rnd.randint(60, 1200)))
            rows.next_job += 1
            if status == "failed":
                batch.append(job_row(rows.next_job, package_id=schedule_id, schedule_id=schedule_id, attempts=1,
                                     created_at=start + k * step + timedelta(minutes=25)))
                rows.next_job += 1
    for package_id in hand:
        start = NOW - timedelta(days=120)
        for k in range(per_hand):
            batch.append(job_row(rows.next_job, package_id=package_id,
                                 created_at=start + timedelta(minutes=rnd.randint(0, 120 * 1440)),
                                 status=rnd.choice(["completed"] * 9 + ["failed"]), runtime=rnd.randint(30, 900)))
            rows.next_job += 1
    for job in batch[-40:]:
        job.update(status="running", ended_at=None, completed_at=None, runtime_in_seconds=None)
    for i in range(0, len(batch), 5000):
        rows.jobs(batch[i:i + 5000])
    verdicts = anomaly_rows(batch, rnd)
    with rows.engine.begin() as conn:
        for i in range(0, len(verdicts), 5000):
            conn.execute(insert(JobAnomalyRow.__table__), verdicts[i:i + 5000])
    for k in range(300):
        rows.sync(NOW - timedelta(minutes=5 * k))
    rows.close()
    return len(batch), len(verdicts)


KIND_OUTPUTS = [("slow", ""), ("zero_records", "orders_out"), ("volume_drop", "customers_out")]


def anomaly_rows(batch: list[dict], rnd: random.Random) -> list[dict]:
    """Verdicts on about 2 % of the completed jobs, and on the latest completed job of every fifth package."""
    completed = [j for j in batch if j["status"] == "completed"]
    latest = {j["package_id"]: j for j in sorted(completed, key=lambda j: j["created_at"])}
    chosen = {j["id"]: j for j in rnd.sample(completed, len(completed) // 50)}
    chosen |= {j["id"]: j for p, j in latest.items() if p % 5 == 0}
    return [{"job_id": j["id"], "kind": kind, "output_key": output, "package_id": j["package_id"],
             "severity": "critical" if kind == "zero_records" else "warning", "score": 5.0,
             "baseline_median": 600.0, "mad": 0.1, "n": 30, "threshold": 1800.0, "message": f"{kind} (bench)",
             "job_created_at": j["created_at"], "detected_at": j["created_at"]}
            for j in chosen.values() for kind, output in [rnd.choice(KIND_OUTPUTS)]]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--jobs", type=int, default=100_000)
    parser.add_argument("--runs", type=int, default=3)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as folder:
        url = f"sqlite:///{folder}/archive.db"
        engine = database.make_engine(url)
        database.upgrade(engine)
        stored, verdicts = build(url, args.jobs)
        times = []
        for _ in range(args.runs):
            began = time.perf_counter()
            board = evaluate(engine, CheckConfig(), NOW)
            record(engine, board, NOW)
            times.append(time.perf_counter() - began)
        engine.dispose()
    kinds = sorted({a.kind for a in board.alerts})
    print(f"{stored} jobs, {verdicts} job_anomalies rows, {len(board.subjects)} subjects, {len(board.alerts)} alerts "
          f"({', '.join(kinds)}); "
          f"runs: {', '.join(f'{t:.3f}s' for t in times)}; median {statistics.median(times):.3f}s (target < 2 s)")


if __name__ == "__main__":
    main()
