"""The anomaly alerts of `archiver check`: slow, zero_records, volume_drop, flaky (docs/health.md).

An alert says what is true *now*, not what once happened (that is `report anomalies`):

- `slow:package:ID`, `zero_records:package:ID:OUTPUT`, `volume_drop:package:ID:OUTPUT` are open
  while the package's latest completed job (by created_at) carries that verdict in
  job_anomalies, and that job was created within ANOMALY_WINDOW before the as-of time. The
  next completed job without the verdict resolves it; so does the window running out.
- `flaky:package:ID` is open while anomaly.flaky_status lists the package over its retry
  chains of the last 14 days (read here from jobs, only for packages with a retry that
  succeeded in that time and at least `flaky_share` as many retries as first attempts: see
  maybe_flaky), so 5 clean first attempts or the chains ageing out resolve it.
- `slow:job:ID` is open while a `running` job's elapsed time is past the slow bound of its
  package (anomaly.score_running over its last RUNNING_HISTORY successful runs, read as far as
  the baseline reaches: see running_history): an early
  warning, distinct from `stuck` (a hard limit); it resolves when the job ends.

Reads are bounded by time (the window, 14 days) or per package (flows/per_key.py), never the archive.
"""

from __future__ import annotations

import bisect
import dataclasses
import hashlib
import re
from collections import defaultdict
from datetime import datetime, timedelta, timezone
from operator import attrgetter, itemgetter

from sqlalchemy import Connection, func, select

from archiver import anomaly
from archiver.flows import rollups
from archiver.flows.board import Alert
from archiver.flows.checkconfig import CheckConfig
from archiver.flows.per_key import newest
from archiver.models import JobAnomalyRow, JobRow

jobs = JobRow.__table__
job_anomalies = JobAnomalyRow.__table__

ANOMALY_WINDOW = timedelta(days=7)   # a latest success older than this no longer alerts (stale does)
RUNNING_HISTORY = 400                # successful runs a running job is compared with
FIRST_READ = 40                      # of them read first: an hourly package's baseline needs about 31
MAX_KEY = 255                        # alerts.key
JOB_KINDS = (anomaly.SLOW, anomaly.ZERO_RECORDS, anomaly.VOLUME_DROP)   # read from job_anomalies
OUTPUT_KINDS = (anomaly.ZERO_RECORDS, anomaly.VOLUME_DROP)
PLAIN_OUTPUT = re.compile(r"[A-Za-z0-9_.\-]+")
DIGEST_CHARS = 12
FOREVER = datetime.max.replace(tzinfo=timezone.utc)   # the end of "since then": later jobs count too


@dataclasses.dataclass
class AnomalyFacts:
    verdicts: list                         # job_anomalies rows on each package's latest completed job
    flaky_runs: dict[int, list[anomaly.Run]]
    flaky_creators: dict[int, int | None]  # job id -> the schedule that created it (None: not one)
    running_history: dict[int, list[anomaly.Run]]


def thresholds(config: CheckConfig) -> anomaly.Thresholds:
    """The rules' thresholds: the config's [anomalies] table over the documented defaults."""
    return config.anomalies


# -- keys ----------------------------------------------------------------------------------------------
def anomaly_key(kind: str, package_id: int, output: str | None = None, digest: bool = False) -> str:
    """`kind:package:ID[:OUTPUT]`. An output key that is not plain ([A-Za-z0-9_.-]) or does not
    fit in 255 characters (or with `digest`) becomes a plain prefix of it, `~` and 12 hex digits
    of its SHA-256: the same output always gets the same key, which a shell can pass to
    `archiver ack`."""
    base = f"{kind}:package:{package_id}"
    if output is None:
        return base
    if not digest and PLAIN_OUTPUT.fullmatch(output) and len(base) + 1 + len(output) <= MAX_KEY:
        return f"{base}:{output}"
    digest = hashlib.sha256(output.encode("utf-8", "surrogatepass")).hexdigest()[:DIGEST_CHARS]
    room = MAX_KEY - len(base) - 2 - DIGEST_CHARS
    plain = re.sub(r"[^A-Za-z0-9_.\-]", "_", output)[:room]
    return f"{base}:{plain}~{digest}"


# -- reading -------------------------------------------------------------------------------------------
def read_anomaly_facts(conn: Connection, open_jobs: list, as_of: datetime, config: CheckConfig) -> AnomalyFacts:
    flaky_runs, flaky_creators = _flaky_runs(conn, as_of - timedelta(days=thresholds(config).flaky_days),
                                             thresholds(config).flaky_share)
    return AnomalyFacts(verdicts=_latest_verdicts(conn, as_of - ANOMALY_WINDOW), flaky_runs=flaky_runs,
                        flaky_creators=flaky_creators,
                        running_history=running_history(conn, open_jobs, thresholds(config)))


def _latest_verdicts(conn: Connection, since: datetime) -> list:
    """The slow/zero_records/volume_drop verdicts on each package's latest completed job, when
    that job was created at or after `since`; with the job's creator."""
    flagged = (select(job_anomalies.c.package_id)
               .where(job_anomalies.c.job_created_at >= since, job_anomalies.c.kind.in_(JOB_KINDS)).distinct())
    number = func.row_number().over(partition_by=jobs.c.package_id,
                                    order_by=[jobs.c.created_at.desc(), jobs.c.id.desc()]).label("rn")
    latest = (select(jobs.c.id, number)
              .where(jobs.c.status == "completed", jobs.c.created_at >= since, jobs.c.package_id.in_(flagged))
              .subquery())
    query = (select(job_anomalies.c.job_id, job_anomalies.c.kind, job_anomalies.c.output_key, jobs.c.package_id,
                    job_anomalies.c.message, jobs.c.created_at, jobs.c.creator_type, jobs.c.creator_id)
             .join(jobs, jobs.c.id == job_anomalies.c.job_id)
             .where(job_anomalies.c.kind.in_(JOB_KINDS),
                    job_anomalies.c.job_id.in_(select(latest.c.id).where(latest.c.rn == 1)))
             .order_by(jobs.c.package_id, job_anomalies.c.kind, job_anomalies.c.output_key))
    return conn.execute(query).all()


def _flaky_runs(conn: Connection, since: datetime,
                share: float) -> tuple[dict[int, list[anomaly.Run]], dict[int, int | None]]:
    """Every job since `since` of the packages with a retry that succeeded since then and that
    maybe_flaky keeps, as Runs (and the schedule that created each)."""
    candidates = maybe_flaky(conn, since, share)
    if not candidates:
        return {}, {}
    retried = (select(jobs.c.package_id).where(jobs.c.created_at >= since, jobs.c.status == "completed",
                                                jobs.c.attempts > 0, jobs.c.package_id.in_(candidates)).distinct())
    rows = conn.execute(select(jobs.c.id, jobs.c.package_id, jobs.c.created_at, jobs.c.status, jobs.c.attempts,
                               jobs.c.creator_type, jobs.c.creator_id)
                        .where(jobs.c.created_at >= since, jobs.c.package_id.in_(retried))
                        .order_by(jobs.c.package_id, jobs.c.created_at, jobs.c.id)).all()
    found: dict[int, list[anomaly.Run]] = defaultdict(list)
    creators: dict[int, int | None] = {}
    for job_id, package_id, created_at, status, attempts, creator_type, creator_id in rows:
        found[package_id].append(anomaly.Run(job_id, package_id, created_at, status, None, attempts or 0))
        creators[job_id] = creator_id if creator_type == "Schedule" else None
    return found, creators


def maybe_flaky(conn: Connection, since: datetime, share: float) -> list[int]:
    """The packages that anomaly.flaky_status could call flaky over their jobs since `since`.

    Each first attempt opens a chain and a chain that needed a retry holds one, so a package's
    share of such chains is at most retries / first attempts (floating division keeps that
    order): below `share`, it is not flaky, and its jobs need not be read. Counted from the
    daily rollup, the partial first day from jobs (a million-job archive: 33,000 jobs read
    for nothing before)."""
    counts = rollups.tally(conn, rollups.PACKAGE_DAYS, since, FOREVER, ("package_id",), ("jobs", "retries"))
    return sorted(package_id for (package_id,), n in counts.items()
                  if package_id is not None and not below(n["retries"], n["jobs"] - n["retries"], share))


def below(retries: int, first_attempts: int, share: float) -> bool:
    return first_attempts > 0 and retries / first_attempts < share


def running_history(conn: Connection, open_jobs: list, limits: anomaly.Thresholds) -> dict[int, list[anomaly.Run]]:
    """The last RUNNING_HISTORY successes of each package with a running job, as far as a
    running job's baseline walks back (anomaly.past_of): FIRST_READ of them first, and all only
    for a package where that walk reached the oldest one read. The same baselines as reading
    all (19,600 rows a million-job archive, where most need 31 a package)."""
    running = [j for j in open_jobs if j.status == "running" and j.package_id is not None]
    found = _successful_runs(conn, sorted({j.package_id for j in running}), FIRST_READ)
    further = sorted({j.package_id for j in running if len(found.get(j.package_id, ())) == FIRST_READ
                      and anomaly.reaches_start(before(found[j.package_id], j.created_at), j.created_at, limits)})
    return {**found, **_successful_runs(conn, further, RUNNING_HISTORY)}


def _successful_runs(conn: Connection, package_ids: list[int], limit: int) -> dict[int, list[anomaly.Run]]:
    """The last `limit` completed jobs with a runtime of each package, oldest first."""
    rows = newest(conn, [jobs.c.id, jobs.c.package_id, jobs.c.created_at, jobs.c.runtime_in_seconds,
                         jobs.c.attempts], [jobs.c.package_id], [(p,) for p in package_ids],
                  [jobs.c.status == "completed", jobs.c.runtime_in_seconds.is_not(None)],
                  [jobs.c.created_at.desc(), jobs.c.id.desc()], limit)
    found: dict[int, list[anomaly.Run]] = defaultdict(list)
    for job_id, package_id, created_at, runtime, attempts in sorted(map(tuple, rows), key=itemgetter(1, 2, 0)):
        found[package_id].append(anomaly.Run(job_id, package_id, created_at, "completed", float(runtime), attempts or 0))
    return found


def before(runs: list[anomaly.Run], moment: datetime) -> list[anomaly.Run]:
    """The runs (in time order) created before `moment`."""
    return runs[:bisect.bisect_left(runs, moment, key=attrgetter("created_at"))]


def creator_schedule(row) -> int | None:
    return row.creator_id if row.creator_type == "Schedule" else None


# -- judging -------------------------------------------------------------------------------------------
def anomaly_findings(facts: AnomalyFacts, open_jobs: list, config: CheckConfig, as_of: datetime,
                     disabled: set[int]) -> list[Alert]:
    """Every anomaly alert, none for a job a disabled schedule created."""
    found = [*verdict_findings(facts.verdicts, config), *flaky_findings(facts, config, as_of),
             *running_findings(facts, open_jobs, config, as_of)]
    return [f for f in found if f.schedule_id not in disabled]


def verdict_findings(verdicts: list, config: CheckConfig) -> list[Alert]:
    """One finding per verdict on a latest success. Two outputs whose keys differ only in case
    (`Orders`, `orders`) would be one key to MariaDB's case-blind collation: the second gets
    the digest form."""
    found, taken = [], set()
    for v in sorted(verdicts, key=lambda v: (v.package_id, v.kind, v.output_key)):   # the same on every backend
        schedule_id = creator_schedule(v)
        output = v.output_key if v.kind in OUTPUT_KINDS else None
        key = anomaly_key(v.kind, v.package_id, output)
        if key.casefold() in taken:
            key = anomaly_key(v.kind, v.package_id, output, digest=True)
        taken.add(key.casefold())
        found.append(Alert(key, v.kind,
                             config.severity(v.kind, schedule_id, v.package_id),
                             f"{v.kind} (job {v.job_id}, the latest success): {v.message}", since=v.created_at,
                             schedule_id=schedule_id, package_id=v.package_id, job_id=v.job_id))
    return found


def flaky_findings(facts: AnomalyFacts, config: CheckConfig, as_of: datetime) -> list[Alert]:
    found = []
    for package_id, runs in sorted(facts.flaky_runs.items()):
        verdict = anomaly.flaky_status(runs, as_of, thresholds(config))
        if verdict is None:
            continue
        schedule_id = facts.flaky_creators.get(verdict.job_id)
        job = next(r for r in runs if r.job_id == verdict.job_id)
        found.append(Alert(anomaly_key(anomaly.FLAKY, package_id), anomaly.FLAKY,
                             config.severity(anomaly.FLAKY, schedule_id, package_id),
                             f"flaky: {verdict.message}", since=job.created_at, schedule_id=schedule_id,
                             package_id=package_id, job_id=verdict.job_id))
    return found


def running_findings(facts: AnomalyFacts, open_jobs: list, config: CheckConfig, as_of: datetime) -> list[Alert]:
    """`slow:job:ID`: a running job whose elapsed time (since started_at) passed the slow bound."""
    found = []
    baselines = {package_id: anomaly.RunningBaselines(runs) for package_id, runs in facts.running_history.items()}
    for job in open_jobs:
        if job.status != "running" or job.started_at is None or job.package_id is None:
            continue
        history = baselines.get(job.package_id) or anomaly.RunningBaselines([])
        run = anomaly.Run(job.id, job.package_id, job.created_at, job.status, None)
        verdict = history.score(run, (as_of - job.started_at).total_seconds(), thresholds(config))
        if verdict is None:
            continue
        schedule_id = creator_schedule(job)
        found.append(Alert(f"slow:job:{job.id}", anomaly.SLOW,
                             config.severity(anomaly.SLOW, schedule_id, job.package_id),
                             f"slow: job {job.id} {verdict.message}", since=job.started_at,
                             schedule_id=schedule_id, package_id=job.package_id, job_id=job.id))
    return found
