"""Job payloads in the API's v1 and v2 shapes, rendered from a plan at a clock time.

Key order follows the sample payloads in shared/payloads. Per-job details that
are not part of the plan (records written, variable values) are drawn from a
random generator seeded with the job's own seed, so they are the same on
every request.
"""
from __future__ import annotations

import random
import time

from .catalog import DESTINATIONS, ERRORS, STOP_MESSAGE, CatalogPackage
from .history import (COMPLETED, CREATED_BY_SCHEDULE, FAILED, STATUSES, STOP_ERROR, STOPPED,
                      History, JobPlan, JobState, work_ended_at)

LOG_SUMMARY_ID_BASE = 1_100_000

# key order of the sample payloads (job-v1-completed.json, job-v2-failed-with-log-summary.json)
V1_KEYS = ("id", "status", "variables", "owner_id", "progress", "outputs_count", "outputs",
           "started_at", "created_at", "failed_at", "updated_at", "cluster_id", "package_id",
           "errors", "url", "runtime_in_seconds", "completed_at")
V2_KEYS = ("id", "status", "variables", "owner_id", "progress", "attempts",
           "master_auto_retry_attempts", "outputs_count", "outputs", "started_at", "created_at",
           "failed_at", "updated_at", "cluster_id", "package_id", "errors", "runtime_in_seconds",
           "completed_at", "url", "html_url", "log_url", "creator", "package", "cluster")


def component_name(package: CatalogPackage, output: int) -> str:
    """The destination component an output comes from (v2 outputs[].component.name)."""
    return f"destination{package.component_numbers[output]}"


class Renderer:
    def __init__(self, history: History, base_url: str, account: str) -> None:
        self.history, self.catalog = history, history.catalog
        self.api = f"{base_url}/{account}/api"
        self.web = f"{base_url}/{account}"

    def iso(self, t: int | None) -> str | None:
        """History seconds -> 'YYYY-MM-DDTHH:MM:SSZ'."""
        if t is None:
            return None
        return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(t + self.history.offset))

    # -- Get job / List jobs -------------------------------------------------
    def job(self, index: int, when: float, version: int, log_summary: bool = False) -> dict:
        plan, state = self.history.plan(index), self.history.state(index, when)
        if version == 1:
            return self._job_v1(plan, state)
        payload = self._job_v2(plan, state)
        if log_summary:
            payload["log_summary"] = self._log_summary(plan, state)
        return payload

    def _common(self, plan: JobPlan, state: JobState) -> dict:
        """Fields shared by both versions."""
        terminal = STATUSES.index(state.status) in (COMPLETED, FAILED, STOPPED)
        failed = state.status == "failed"
        return {
            "id": plan.id, "status": state.status, "variables": self.variables(plan),
            "owner_id": self.catalog.users[plan.owner].id, "progress": state.progress,
            "started_at": self.iso(state.started), "created_at": self.iso(plan.created),
            "failed_at": self.iso(plan.ended - 1) if failed and not plan.failed_at_null else None,
            "updated_at": self.iso(state.updated),
            "cluster_id": self.catalog.clusters[plan.cluster].id,
            "package_id": self.catalog.packages[plan.package].id,
            "errors": self._errors(plan) if terminal else "",
            "url": f"{self.api}/jobs/{plan.id}", "runtime_in_seconds": state.runtime,
            "completed_at": self.iso(plan.ended) if terminal else None,
        }

    def _job_v1(self, plan: JobPlan, state: JobState) -> dict:
        fields = self._common(plan, state)
        fields["outputs"] = self._outputs(plan, state, version=1)
        fields["outputs_count"] = len(fields["outputs"])
        return {key: fields[key] for key in V1_KEYS}

    def _job_v2(self, plan: JobPlan, state: JobState) -> dict:
        fields = self._common(plan, state)
        fields["outputs"] = self._outputs(plan, state, version=2)
        fields.update(
            outputs_count=len(fields["outputs"]),
            attempts=plan.attempts, master_auto_retry_attempts=plan.max_attempts,
            html_url=f"{self.web}/jobs/{plan.id}", log_url=f"{self.api}/jobs/{plan.id}/log",
            creator=self._creator(plan), package=self._package(plan.package),
            cluster=self._cluster(plan.cluster))
        return {key: fields[key] for key in V2_KEYS}

    def _errors(self, plan: JobPlan) -> str:
        if plan.error == STOP_ERROR:
            return STOP_MESSAGE
        return ERRORS[plan.error].text if plan.error >= 0 else ""

    # -- nested objects ------------------------------------------------------
    def _outputs(self, plan: JobPlan, state: JobState, version: int) -> list[dict]:
        package = self.catalog.packages[plan.package]
        records = self.history.records(plan) or self._full_records(plan, package)
        created = self.iso(state.started if state.started is not None else plan.created)
        updated = self.iso(state.updated)
        outputs = []
        for k, spec in enumerate(package.spec.outputs):
            output_id = plan.first_output_id + k
            url = f"{self.api}/jobs/{plan.id}/outputs/{output_id}"
            count = records[k] if state.status == "completed" else int(records[k] * state.progress)
            component = component_name(package, k)
            if version == 1:
                outputs.append({"component_name": component, "created_at": created, "id": output_id,
                                "name": spec.name, "preview_url": f"{url}/preview",
                                "records_count": count, "updated_at": updated, "url": url})
                continue
            component_type, preview_type = DESTINATIONS[spec.destination]
            outputs.append({
                "id": output_id, "name": spec.name, "records_count": count,
                "progress": state.progress, "created_at": created, "updated_at": updated,
                "preview_url": f"{url}/preview", "preview_type": preview_type, "url": url,
                "component": {"name": component, "type": component_type,
                              "fields": list(package.output_fields[k])},
            })
        return outputs

    @staticmethod
    def _full_records(plan: JobPlan, package: CatalogPackage) -> list[int]:
        """Records each output gets from a complete run (some above 2**31 for the big packages)."""
        rng = random.Random(plan.seed)
        return [max(1, int(spec.records * rng.lognormvariate(0, 0.5))) for spec in package.spec.outputs]

    def variables(self, plan: JobPlan) -> dict:
        """The run's variables: 0-3 per package, mostly strings (quoted as Pig literals), some numbers."""
        rng = random.Random(plan.seed ^ 0x5EED)
        day = time.gmtime(plan.created + self.history.offset)
        yesterday = time.gmtime(plan.created + self.history.offset - 86_400)
        makers = {
            "InputPath": lambda: f"'/{day.tm_year}/{day.tm_mon:02d}/{day.tm_mday:02d}'",
            "since_date": lambda: time.strftime("'%Y-%m-%d'", yesterday),
            "batch_size": lambda: rng.choice((200, 500, 1000, 2000)),
            "full_refresh": lambda: "'true'" if rng.random() < 0.1 else "'false'",
            "lookback_days": lambda: rng.randint(1, 7),
            "region": lambda: rng.choice(("'us'", "'eu'", "'apac'")),
        }
        return {name: makers[name]() for name in self.catalog.packages[plan.package].spec.variables}

    def _creator(self, plan: JobPlan) -> dict:
        if plan.creator_kind == CREATED_BY_SCHEDULE:
            schedule = self.catalog.schedules[plan.creator]
            kind, item_id, name, path = "Schedule", schedule.id, schedule.name, "schedules"
        else:
            user = self.catalog.users[plan.creator]
            kind, item_id, name, path = "User", user.id, user.name, "users"
        return {"type": kind, "id": item_id, "display_name": name,
                "url": f"{self.api}/{path}/{item_id}", "html_url": f"{self.web}/{path}/{item_id}"}

    def _package(self, index: int) -> dict:
        package = self.catalog.packages[index]
        return {
            "id": package.id, "name": package.spec.name, "description": package.spec.description,
            "variables": dict(package.default_variables),
            "owner_id": self.catalog.users[package.owner].id,
            "created_at": self.iso(package.created), "updated_at": self.iso(package.updated),
            "url": f"{self.api}/packages/{package.id}", "status": "active",
        }

    def _cluster(self, index: int) -> dict:
        cluster = self.catalog.clusters[index]
        return {
            "id": cluster.id, "name": cluster.name, "description": "", "status": "available",
            "owner_id": self.catalog.users[cluster.owner].id, "plan_id": 1, "nodes": cluster.nodes,
            "type": cluster.type, "created_at": self.iso(cluster.created),
            "updated_at": self.iso(cluster.updated), "available_since": self.iso(cluster.updated),
            "terminated_at": None, "region": cluster.region, "zone": cluster.zone,
            "master_instance_type": cluster.instance_type, "slave_instance_type": cluster.instance_type,
            "url": f"{self.api}/clusters/{cluster.id}", "html_url": f"{self.web}/clusters/{cluster.id}",
        }

    def _log_summary(self, plan: JobPlan, state: JobState) -> dict | None:
        if state.status != "failed":
            return None
        error = ERRORS[plan.error]
        return {"id": LOG_SUMMARY_ID_BASE + plan.id, "body": self._log_body(plan, state),
                "error_summary": error.summary, "action_items": list(error.action_items),
                "created_at": self.iso(plan.ended)}

    # -- Job log -------------------------------------------------------------
    def log(self, index: int, when: float) -> dict:
        plan, state = self.history.plan(index), self.history.state(index, when)
        return {"body": self._log_body(plan, state), "url": f"{self.api}/jobs/{plan.id}/log/raw"}

    def _log_body(self, plan: JobPlan, state: JobState) -> str:
        """A short execution log covering what has happened by the clock time."""
        cluster = self.catalog.clusters[plan.cluster]
        lines = [(plan.created, "INFO", f"Job {plan.id} submitted")]
        if state.started is not None:
            lines.append((state.started, "INFO",
                          f"Job started on cluster {cluster.name} ({cluster.nodes} nodes)"))
        if state.status == "completed":
            lines.append((plan.ended, "INFO", f"Job completed in {state.runtime} s"))
        elif state.status == "failed":
            lines.append((work_ended_at(plan), "ERROR", ERRORS[plan.error].text))
            lines.append((plan.ended, "INFO", "Job failed"))
        elif state.status in ("pending_stoppage", "stopping", "stopped"):
            lines.append((plan.stop_requested, "WARN", "Stop requested"))
            if state.status == "stopped":
                lines.append((plan.ended, "INFO", "Job stopped"))
        elif state.status == "running":
            lines.append((state.updated, "INFO", f"Progress {int(state.progress * 100)}%"))
        return "".join(f"{self.iso(t)} {level:<5} {text}\n" for t, level, text in lines)
