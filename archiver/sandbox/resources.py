"""The catalog as the API lists it: packages, schedules and clusters (v2 attributes).

Objects the job history uses render exactly as they are nested in job payloads,
plus the attributes only their own endpoints carry; catalog.Extras adds what no
job uses (workflow and archived packages, terminated clusters, a disabled
schedule). Whatever depends on the jobs is read off the history at the clock
time of the request: a schedule's runs, last run and next run, a cluster's
running and queued jobs.

A schedule's start_at and interval are the cadence the history ticks at
(history.Cadence): its first runs are created a few seconds after start_at +
k x interval; next_run_at is its next tick (a schedule told to stop keeps
showing the first tick it missed). overlap is true: the sandbox starts a tick's
runs whether or not the previous ones have ended.
"""
from __future__ import annotations

import math
import random
import time
from dataclasses import dataclass
from typing import Callable

from .anomalies import FLAKY_FAILURE
from .catalog import DAY, Extras, build_extras
from .history import (IDLE, NICE_INTERVALS, PENDING, PENDING_STOPPAGE, QUEUED, RUNNING, STOPPING,
                      History, interval_seconds)
from .render import Renderer, component_name

SCHEDULE_STATUSES = ("enabled", "disabled")
PACKAGE_STATUSES = ("active", "archived")
FLOW_TYPES = ("workflow", "dataflow")
CLUSTER_STATUSES = ("pending", "creating", "available", "scaling", "idle", "pending_terminate",
                    "terminating", "terminated", "error")
TIME_TO_IDLE = 3600
STACK = "pinot"

PACKAGE_KEYS = ("id", "name", "description", "variables", "owner_id", "flow_type", "status", "created_at",
                "updated_at", "url", "html_url")
CLUSTER_KEYS = ("id", "name", "description", "status", "owner_id", "plan_id", "nodes", "type", "created_at",
                "updated_at", "available_since", "terminated_at", "running_jobs_count", "queued_jobs_count",
                "terminate_on_idle", "time_to_idle", "region", "zone", "master_instance_type",
                "slave_instance_type", "stack", "url", "html_url", "creator")
SCHEDULE_KEYS = ("id", "name", "description", "owner_id", "status", "start_at", "next_run_at",
                 "interval_amount", "interval_unit", "last_run_at", "last_run_status", "execution_count",
                 "overlap", "auto_retry", "auto_retry_attempts", "task", "reuse_cluster_strategy",
                 "created_at", "updated_at", "url", "html_url")
RUNNING_CODES = frozenset({RUNNING, PENDING_STOPPAGE, STOPPING})
QUEUED_CODES = frozenset({IDLE, PENDING, QUEUED})


def as_interval(seconds: int) -> tuple[int, str]:
    """(interval_amount, interval_unit) of a cadence's interval (one of NICE_INTERVALS)."""
    return next(nice for nice in NICE_INTERVALS if interval_seconds(nice) == seconds)


@dataclass(frozen=True)
class _ScheduleFacts:
    created: int       # history seconds
    edited: int        # last edit of its settings
    start_at: int
    interval: tuple[int, str]


class Resources:
    """Packages, schedules and clusters of the sandbox account, rendered at a clock time."""

    def __init__(self, history: History, seed: int) -> None:
        self.history, self.catalog = history, history.catalog
        self.extras: Extras = build_extras(seed, self.catalog)
        rng = random.Random(f"catalog-schedules:{seed}")
        self._schedules = []
        for schedule, cadence in zip(self.catalog.schedules, history.cadences):
            packages = [self.catalog.packages[i] for i in schedule.packages]
            created = min(-DAY, max(p.created for p in packages) + rng.randint(1, 30) * DAY)
            edited = min(-3600, created + rng.randint(0, -created // DAY) * DAY)
            self._schedules.append(_ScheduleFacts(created, edited, cadence.start, as_interval(cadence.interval)))

    def _next_hour(self, t: int) -> int:
        """The first full hour (in real time) after history second t."""
        return t + 3600 - (t + self.history.offset) % 3600

    # -- packages -------------------------------------------------------------------
    def packages(self, renderer: Renderer) -> list[dict]:
        items = []
        for index, package in enumerate(self.catalog.packages):
            fields = renderer._package(index)
            fields.update(flow_type="dataflow", html_url=f"{renderer.web}/packages/{package.id}")
            items.append({key: fields[key] for key in PACKAGE_KEYS})
        users = self.catalog.users
        for package in self.extras.packages:
            items.append({
                "id": package.id, "name": package.name, "description": package.description, "variables": {},
                "owner_id": users[package.owner].id, "flow_type": package.flow_type, "status": package.status,
                "created_at": renderer.iso(package.created), "updated_at": renderer.iso(package.updated),
                "url": f"{renderer.api}/packages/{package.id}",
                "html_url": f"{renderer.web}/packages/{package.id}"})
        return items

    # -- clusters -------------------------------------------------------------------
    def clusters(self, renderer: Renderer, when: float) -> list[dict]:
        running = [0] * len(self.catalog.clusters)
        queued = [0] * len(self.catalog.clusters)
        for cluster, code in self.history.in_flight(when):
            if code in RUNNING_CODES:
                running[cluster] += 1
            elif code in QUEUED_CODES:
                queued[cluster] += 1
        items = []
        for index, cluster in enumerate(self.catalog.clusters):
            fields = renderer._cluster(index)
            idle = cluster.type == "sandbox"
            fields.update(running_jobs_count=running[index], queued_jobs_count=queued[index],
                          terminate_on_idle=idle, time_to_idle=TIME_TO_IDLE, stack=STACK,
                          creator=self._user(renderer, cluster.owner))
            items.append({key: fields[key] for key in CLUSTER_KEYS})
        users = self.catalog.users
        for cluster in self.extras.clusters:
            items.append({
                "id": cluster.id, "name": cluster.name, "description": "", "status": "terminated",
                "owner_id": users[cluster.owner].id, "plan_id": 1, "nodes": cluster.nodes,
                "type": cluster.type, "created_at": renderer.iso(cluster.created),
                "updated_at": renderer.iso(cluster.terminated),
                "available_since": renderer.iso(cluster.created + 600),
                "terminated_at": renderer.iso(cluster.terminated), "running_jobs_count": 0,
                "queued_jobs_count": 0, "terminate_on_idle": True, "time_to_idle": TIME_TO_IDLE,
                "region": cluster.region, "zone": cluster.zone, "master_instance_type": cluster.instance_type,
                "slave_instance_type": cluster.instance_type, "stack": STACK,
                "url": f"{renderer.api}/clusters/{cluster.id}", "html_url": f"{renderer.web}/clusters/{cluster.id}",
                "creator": self._user(renderer, cluster.owner)})
        return items

    def _user(self, renderer: Renderer, index: int) -> dict:
        user = self.catalog.users[index]
        return {"type": "User", "id": user.id, "display_name": user.name,
                "url": f"{renderer.api}/users/{user.id}", "html_url": f"{renderer.web}/users/{user.id}"}

    # -- schedules ------------------------------------------------------------------
    def schedules(self, renderer: Renderer, when: float) -> list[dict]:
        history, catalog = self.history, self.catalog
        items = []
        for index, (schedule, facts) in enumerate(zip(catalog.schedules, self._schedules)):
            runs = history.schedule_runs(index, when)
            last_run = history.plan(runs.last).created if runs.last is not None else None
            packages = [catalog.packages[i] for i in schedule.packages]
            items.append(self._schedule(
                renderer, schedule.id, schedule.name, schedule.owner, "enabled", facts, packages_task=[
                    {"package_id": p.id, "variables": dict(p.default_variables)} for p in packages],
                description="Runs " + ", ".join(p.spec.name for p in packages),
                nodes=max(catalog.clusters[p.spec.cluster].nodes for p in packages),
                next_run=runs.next_run, last_run=last_run,
                last_status=history.state(runs.last, when).status if runs.last is not None else None,
                count=runs.count, retries=schedule.retries, updated=max(facts.edited, last_run or facts.edited),
                reuse="any", overlap=True))
        for schedule in self.extras.schedules:
            packages = [self.extras.packages[i] for i in schedule.packages]
            facts = _ScheduleFacts(schedule.created, schedule.updated, self._next_hour(schedule.created),
                                   (1, "days"))
            items.append(self._schedule(
                renderer, schedule.id, schedule.name, schedule.owner, "disabled", facts,
                packages_task=[{"package_id": p.id, "variables": {}} for p in packages],
                description="Runs " + ", ".join(p.name for p in packages), nodes=2, next_run=None,
                last_run=schedule.last_run, last_status="completed", count=schedule.executions, retries=0,
                updated=schedule.updated, reuse="none", overlap=False))
        return items

    def _schedule(self, renderer: Renderer, schedule_id: int, name: str, owner: int, status: str,
                  facts: _ScheduleFacts, *, packages_task: list[dict], description: str, nodes: int,
                  next_run: int | None, last_run: int | None, last_status: str | None, count: int,
                  retries: int, updated: int, reuse: str, overlap: bool) -> dict:
        amount, unit = facts.interval
        fields = {
            "id": schedule_id, "name": name, "description": description,
            "owner_id": self.catalog.users[owner].id, "status": status,
            "start_at": renderer.iso(facts.start_at), "next_run_at": renderer.iso(next_run),
            "interval_amount": amount, "interval_unit": unit, "last_run_at": renderer.iso(last_run),
            "last_run_status": last_status, "execution_count": count, "overlap": overlap,
            "auto_retry": retries > 0, "auto_retry_attempts": retries if retries > 0 else 1,
            "task": {"nodes": nodes, "terminate_on_idle": True, "time_to_idle": TIME_TO_IDLE,
                     "packages": packages_task},
            "reuse_cluster_strategy": reuse, "created_at": renderer.iso(facts.created),
            "updated_at": renderer.iso(updated), "url": f"{renderer.api}/schedules/{schedule_id}",
            "html_url": f"{renderer.web}/schedules/{schedule_id}",
        }
        return {key: fields[key] for key in SCHEDULE_KEYS}


# ---------------------------------------------------------------------------
# listing

@dataclass(frozen=True)
class CatalogQuery:
    keep: Callable[[dict], bool]
    sort: str | None            # created | updated | name; None: by id
    direction: str
    since: str | None           # ISO 'YYYY-MM-DDTHH:MM:SSZ' (whole seconds, rounded up)


def select(items: list[dict], query: CatalogQuery) -> list[dict]:
    """Filter and sort catalog objects; ties (and sort None) go by id."""
    kept = [item for item in items if query.keep(item)
            and (query.since is None or item["updated_at"] >= query.since)]
    field = {"created": "created_at", "updated": "updated_at", "name": "name"}.get(query.sort or "")
    key = (lambda item: (item[field], item["id"])) if field else (lambda item: item["id"])
    return sorted(kept, key=key, reverse=query.direction == "desc")


def iso_ceiling(unix_time: float) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(math.ceil(unix_time)))


# ---------------------------------------------------------------------------
# ground truth of the breakages

def truth(history: History, renderer: Renderer, when: float) -> dict:
    """What the sandbox was told to break, and which jobs show it by `when` (GET /_sandbox/truth)."""
    catalog = history.catalog
    now = math.floor(when) - history.offset
    found = {"now": renderer.iso(now), "scenario": history.scenario.name,
             "stopped_schedules": [], "failing_packages": [], "stuck_jobs": [],
             "anomalies": anomalies(history, renderer, when)}
    for number, breakage in enumerate(list(history.breakages)):
        at = renderer.iso(breakage.at)
        if breakage.kind == "schedule_stopped":
            runs = history.schedule_runs(breakage.target, when)
            found["stopped_schedules"].append({
                "schedule_id": catalog.schedules[breakage.target].id, "at": at,
                "first_missed_run_at": renderer.iso(history.cadences[breakage.target].tick_after(breakage.at)),
                "last_job_id": history.plan(runs.last).id if runs.last is not None else None})
        elif breakage.kind == "package_failing":
            jobs = history.jobs_after(breakage.target, breakage.at, when)
            found["failing_packages"].append({
                "package_id": catalog.packages[breakage.target].id, "at": at,
                "failed_job_ids": [history.plan(i).id for i in jobs if history.state(i, when).status == "failed"]})
        else:
            index = history.stuck_job(number)
            plan = history.plan(index) if index is not None else None
            plan = plan if plan is not None and plan.created <= now else None
            found["stuck_jobs"].append({
                "package_id": catalog.packages[breakage.target].id, "at": at,
                "job_id": plan.id if plan else None, "created_at": renderer.iso(plan.created) if plan else None,
                "started_at": renderer.iso(plan.started) if plan else None})
    return found


def anomalies(history: History, renderer: Renderer, when: float) -> list[dict]:
    """The anomaly scenario's injections in jobs existing at `when`, then one entry per flaky
    package (job_id None). `output` is the output's component name (what an archive keys
    outputs on), `output_name` its name; both None for slowdowns and flaky packages."""
    catalog = history.catalog
    found = []
    for index, injection in history.injections(when):
        plan = history.plan(index)
        package = catalog.packages[plan.package]
        output = injection.output >= 0
        found.append({
            "job_id": plan.id, "package_id": package.id, "kind": injection.kind, "factor": injection.factor,
            "output": component_name(package, injection.output) if output else None,
            "output_name": package.spec.outputs[injection.output].name if output else None,
            "created_at": renderer.iso(plan.created), "status": history.state(index, when).status})
    for package in history.flaky_packages:
        found.append({"job_id": None, "package_id": catalog.packages[package].id, "kind": "flaky",
                      "factor": FLAKY_FAILURE, "output": None, "output_name": None,
                      "created_at": None, "status": None})
    return found
