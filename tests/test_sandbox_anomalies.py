"""The sandbox's "anomalies" scenario: seeded anomalies over lognormal noise, and the ground truth.

Every check runs on fixed seeds, so the numbers are the same on every run; tolerances are wide
enough to hold for any seed, not tuned to these ones.
"""
from __future__ import annotations

import hashlib
import json
import statistics
from collections import defaultdict
from datetime import datetime, timedelta, timezone

import pytest
import requests

from archiver.anomaly import Run, score_history
from archiver.sandbox import Sandbox
from archiver.sandbox.anomalies import CV, MIN_PRIOR, VOLUME_DROP_RATIOS

NOW = datetime(2026, 11, 28, 12, 0, tzinfo=timezone.utc)
HOUR, DAY = 3600, 86_400
FINISHED = ("completed", "failed", "stopped")


def anomalous(jobs: int = 3000, seed: int = 4, advance: float = 8 * HOUR) -> Sandbox:
    sandbox = Sandbox(jobs=jobs, seed=seed, now=NOW, scenario="anomalies")
    sandbox.advance(advance)
    return sandbox


@pytest.fixture(scope="module")
def big() -> tuple[Sandbox, list[dict], list[dict]]:
    """A 3000-job history (about three weeks): every job's v2 payload, and the truth."""
    sandbox = anomalous()
    jobs = [sandbox.job(i) for i in sandbox.job_ids()]
    return sandbox, jobs, sandbox.truth()["anomalies"]


def by_package(jobs: list[dict]) -> dict[int, list[dict]]:
    grouped = defaultdict(list)
    for job in jobs:
        grouped[job["package_id"]].append(job)
    return grouped


def injected(truth: list[dict], kind: str, factor: float | None = None) -> list[dict]:
    return [a for a in truth if a["kind"] == kind and (factor is None or a["factor"] == factor)]


def created(job: dict) -> datetime:
    return datetime.strptime(job["created_at"], "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=timezone.utc)


def records(job: dict, component: str) -> int:
    return next(o["records_count"] for o in job["outputs"] if o["component"]["name"] == component)


# -- determinism and the other scenarios --------------------------------------------------------

def history_after(steps: list[float], seed: int = 4) -> list[dict]:
    sandbox = Sandbox(jobs=800, seed=seed, now=NOW, scenario="anomalies")
    package_id = sandbox.catalog("packages")[0]["id"]
    sandbox.fail_package(package_id, NOW + timedelta(hours=5))
    for step in steps:
        sandbox.advance(step)
    return [sandbox.job(i) for i in sandbox.job_ids()] + [sandbox.truth()]


def test_the_scenario_is_deterministic_per_seed_whatever_the_clock_did():
    one = history_after([DAY])
    assert one == history_after([3 * HOUR] * 8)
    assert len(one[-1]["anomalies"]) >= 10
    assert one[-1]["anomalies"] != history_after([DAY], seed=5)[-1]["anomalies"]


def fingerprint(scenario: str, seed: int, jobs: int) -> str:
    sandbox = Sandbox(jobs=jobs, seed=seed, now=NOW, scenario=scenario)
    sandbox.advance(DAY)
    digest = hashlib.sha256()
    for job_id in sandbox.job_ids():
        digest.update(json.dumps([sandbox.job(job_id), sandbox.job(job_id, 1)], sort_keys=True).encode())
    return digest.hexdigest()[:16]


def test_the_normal_and_healthy_histories_are_those_from_before_the_anomalies_scenario():
    """Fingerprints of every payload, taken before the scenario existed."""
    assert fingerprint("normal", 1, 400) == "77f4a8bf8a1fb491"
    assert fingerprint("healthy", 3, 300) == "bc0cd7f9fa0b2fc6"


def test_other_scenarios_have_no_anomalies():
    sandbox = Sandbox(jobs=400, seed=1, now=NOW)
    assert sandbox.truth()["anomalies"] == []


# -- the truth matches the payloads -------------------------------------------------------------

def test_truth_lists_each_kind_and_only_jobs_existing_at_the_clock(big):
    sandbox, jobs, truth = big
    kinds = {(a["kind"], a["factor"]) for a in truth if a["kind"] == "slow"}
    assert kinds == {("slow", 10), ("slow", 4)}
    assert {"zero_records", "volume_drop", "flaky"} <= {a["kind"] for a in truth}
    ids = {job["id"] for job in jobs}
    assert all(a["job_id"] in ids for a in truth if a["kind"] != "flaky")
    flaky = injected(truth, "flaky")
    assert len(flaky) == 1 and flaky[0]["job_id"] is None and flaky[0]["output"] is None
    served = requests.get(f"{sandbox.start().url}/_sandbox/truth").json()
    sandbox.stop()
    assert served["anomalies"] == truth


def test_an_injected_slowdown_is_its_factor_times_the_package_median(big):
    _, jobs, truth = big
    packages, by_id = by_package(jobs), {job["id"]: job for job in jobs}
    ratios = defaultdict(list)
    for anomaly in injected(truth, "slow"):
        job = by_id[anomaly["job_id"]]
        if job["status"] != "completed":   # still running at the clock
            continue
        others = [j["runtime_in_seconds"] for j in packages[job["package_id"]]
                  if j["status"] == "completed" and j["id"] != job["id"]]
        ratio = job["runtime_in_seconds"] / statistics.median(others)
        ratios[anomaly["factor"]].append(ratio)
        assert anomaly["factor"] / 3 < ratio < anomaly["factor"] * 3   # noise and weekdays: CV 0.3
    assert 7 < statistics.median(ratios[10]) < 14 and 2.8 < statistics.median(ratios[4]) < 5.6


def test_a_zero_record_success_is_completed_with_0_on_the_named_output(big):
    _, jobs, truth = big
    by_id = {job["id"]: job for job in jobs}
    cases = injected(truth, "zero_records")
    assert len(cases) >= 5
    for anomaly in cases:
        job = by_id[anomaly["job_id"]]
        assert job["status"] == "completed" and records(job, anomaly["output"]) == 0
        named = next(o for o in job["outputs"] if o["name"] == anomaly["output_name"])
        assert named["component"]["name"] == anomaly["output"]
        assert all(o["records_count"] > 0 for o in job["outputs"] if o is not named)


def test_a_volume_drop_loads_at_most_a_tenth_of_the_output_median(big):
    _, jobs, truth = big
    packages, by_id = by_package(jobs), {job["id"]: job for job in jobs}
    cases = injected(truth, "volume_drop")
    assert len(cases) >= 5
    for anomaly in cases:
        job = by_id[anomaly["job_id"]]
        typical = statistics.median(records(j, anomaly["output"]) for j in packages[job["package_id"]]
                                    if j["status"] == "completed" and j["id"] != job["id"])
        assert job["status"] == "completed" and 0 < records(job, anomaly["output"]) <= typical / 10
        assert VOLUME_DROP_RATIOS[0] <= anomaly["factor"] <= VOLUME_DROP_RATIOS[1]


def test_a_flaky_package_fails_first_attempts_and_succeeds_on_a_retry(big):
    _, jobs, truth = big
    (anomaly,) = injected(truth, "flaky")
    runs = [j for j in by_package(jobs)[anomaly["package_id"]]
            if j["creator"]["type"] == "Schedule" and j["status"] in FINISHED]
    firsts = [j for j in runs if j["attempts"] == 0]
    failed_first = [j for j in firsts if j["status"] == "failed"]
    assert 0.3 < len(failed_first) / len(firsts) < 0.7 and runs[0]["master_auto_retry_attempts"] > 0
    recovered = sum(1 for a, b in zip(runs, runs[1:])
                    if a["status"] == "failed" and a["attempts"] == 0 and b["attempts"] == 1
                    and b["status"] == "completed")
    assert recovered >= 0.5 * len(failed_first)


def test_injections_have_at_least_8_prior_successes(big):
    _, jobs, truth = big
    packages = by_package(jobs)
    for anomaly in truth:
        if anomaly["job_id"] is None:
            continue
        earlier = [j for j in packages[anomaly["package_id"]] if j["id"] < anomaly["job_id"]]
        assert sum(j["status"] == "completed" for j in earlier) >= MIN_PRIOR


def test_runtime_and_records_noise_is_lognormal_with_cv_0_3(big):
    """On the packages without weekday effect, injected jobs aside: the CV of lognormal noise
    of sigma 0.29, measured on at least 150 runs, is within a few hundredths of 0.3."""
    sandbox, jobs, truth = big
    model, catalog = sandbox.history._gen.model, sandbox.history.catalog
    hit = {a["job_id"] for a in truth}
    clean = [catalog.packages[p].id for p, factors in enumerate(model.weekday_factors)
             if set(factors) == {1.0} and catalog.packages[p].spec.runtime_s >= 120]
    packages = {p: [j for j in runs if j["status"] == "completed" and j["id"] not in hit]
                for p, runs in by_package(jobs).items()}
    clean = [p for p in clean if len(packages[p]) >= 150]
    assert clean
    for package_id in clean:
        done = packages[package_id]
        runtimes = [j["runtime_in_seconds"] for j in done]
        counts = [j["outputs"][0]["records_count"] for j in done]
        for values in (runtimes, counts):
            assert abs(statistics.pstdev(values) / statistics.mean(values) - CV) < 0.08


def test_weekdays_are_the_utc_weekdays_of_the_payloads(big):
    """The model finds the start clock's time line before generating: its weekday of a job is
    the weekday of the job's created_at."""
    sandbox, jobs, _ = big
    history, model = sandbox.history, sandbox.history._gen.model
    for job in jobs[::37]:
        plan = history.plan(history.find(job["id"], sandbox.now.timestamp()))
        assert model.weekday(plan.created) == created(job).weekday()


# -- the detector agrees ------------------------------------------------------------------------

def as_run(job: dict) -> Run:
    return Run(job["id"], job["package_id"], created(job), job["status"], job["runtime_in_seconds"],
               job["attempts"], tuple((o["component"]["name"], o["records_count"]) for o in job["outputs"]))


def test_the_detector_finds_every_10x_slowdown_and_zero_record_success(big):
    _, jobs, truth = big
    verdicts = [v for runs in by_package([j for j in jobs if j["status"] in FINISHED]).values()
                for v in score_history([as_run(j) for j in runs])]
    found = {(v.job_id, v.kind, v.output_key) for v in verdicts}
    for anomaly in injected(truth, "slow", 10) + injected(truth, "zero_records"):
        if anomaly["status"] == "completed":
            assert (anomaly["job_id"], anomaly["kind"], anomaly["output"]) in found
    flaky = injected(truth, "flaky")[0]["package_id"]
    assert any(v.kind == "flaky" and v.package_id == flaky for v in verdicts)


# -- the demo -----------------------------------------------------------------------------------

def test_the_demo_holds_one_anomaly_of_each_kind(tmp_path):
    from archiver.flows.demo import describe_anomaly, run_demo

    result = run_demo(tmp_path)
    kinds = {(a["kind"], a["factor"] if a["kind"] == "slow" else None) for a in result.anomalies}
    assert {("slow", 10), ("zero_records", None), ("volume_drop", None), ("flaky", None)} <= kinds
    assert all(describe_anomaly(a) for a in result.anomalies)
    moments = [created(a) for a in result.anomalies if a["job_id"] is not None]
    assert max(moments) - min(moments) < timedelta(days=3)   # the recent past of a ~3-day history


def test_the_watched_packages_latest_completed_runs_carry_a_zero_record_success_and_a_10x_slowdown():
    """What a health board can show: an anomaly on a package's latest completed run."""
    from archiver.sandbox.anomalies import LATEST_KINDS, watched_packages
    from archiver.sandbox.history import COMPLETED, History

    history = History(800, 2, NOW.timestamp(), "anomalies")
    model = history._gen.model
    watched = watched_packages(history.catalog, [c.interval for c in history.cadences], model.flaky)
    assert len(set(watched)) == 2
    for package, kind in zip(watched, LATEST_KINDS):
        completed = [history.table.ids[i] for i in range(history._initial)
                     if history.table.package[i] == package and history.table.final[i] == COMPLETED]
        injection = model.injections[completed[-1]]
        assert (injection.kind, injection.factor) == ((kind, 0.0) if kind == "zero_records" else (kind, 10))
