"""The sandbox API: shapes, listing, clock, rate limit and faults, over real HTTP."""
from __future__ import annotations

import json
import threading
from collections import Counter
from datetime import datetime, timedelta, timezone
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

import pytest
import requests

from archiver.sandbox import Sandbox
from archiver.sandbox.history import STATUSES, phase_at

NOW = datetime(2026, 11, 28, 12, 0, tzinfo=timezone.utc)
KEY = "sandbox-key"
PAYLOADS = Path(__file__).resolve().parent / "payloads"
TERMINAL = {"completed", "failed", "stopped"}
V1 = "application/vnd.xplenty+json; version=1"
V2 = "application/vnd.xplenty+json; version=2"


def sample(name: str) -> dict:
    path = PAYLOADS / name
    if not path.exists():
        pytest.skip(f"sample payload {path} not available")
    return json.loads(path.read_text())


@pytest.fixture(scope="module")
def shared():
    """A read-only sandbox shared by the tests that do not move its clock."""
    with Sandbox(jobs=500, seed=1, now=NOW) as sandbox:
        yield sandbox


@pytest.fixture
def sandbox():
    with Sandbox(jobs=300, seed=2, now=NOW) as sandbox:
        yield sandbox


def client(sandbox: Sandbox, accept: str = V2) -> requests.Session:
    session = requests.Session()
    session.auth = (KEY, "")
    session.headers["Accept"] = accept
    return session


def api(sandbox: Sandbox, path: str) -> str:
    return f"{sandbox.url}/{sandbox.account}/api/{path}"


def ids_with_status(sandbox: Sandbox, status: str) -> list[int]:
    return [i for i in sandbox.job_ids() if sandbox.job(i)["status"] == status]


def iso(moment: datetime) -> str:
    return moment.strftime("%Y-%m-%dT%H:%M:%SZ")


# -- shapes -------------------------------------------------------------------------

def test_get_job_v2_has_the_keys_of_the_v2_sample(shared):
    expected = sample("job-v2-failed-with-log-summary.json")
    job_id = ids_with_status(shared, "failed")[0]
    response = client(shared).get(api(shared, f"jobs/{job_id}"))
    assert response.status_code == 200
    assert response.headers["Content-Type"] == "application/vnd.xplenty+json; charset=utf-8"
    job = response.json()
    assert list(job) == [key for key in expected if key != "log_summary"]
    assert list(job["outputs"][0]) == list(expected["outputs"][0])
    assert list(job["outputs"][0]["component"]) == list(expected["outputs"][0]["component"])
    for nested in ("creator", "package", "cluster"):
        assert list(job[nested]) == list(expected[nested])
    assert job["url"] == api(shared, f"jobs/{job_id}")
    assert job["outputs_count"] == len(job["outputs"])
    assert job["errors"] and job["completed_at"]


def test_get_job_v1_has_the_keys_of_the_v1_sample(shared):
    expected = sample("job-v1-completed.json")
    job_id = ids_with_status(shared, "completed")[0]
    job = client(shared, V1).get(api(shared, f"jobs/{job_id}")).json()
    assert list(job) == list(expected)
    assert list(job["outputs"][0]) == list(expected["outputs"][0])
    assert job["errors"] == "" and job["progress"] == 1 and job["failed_at"] is None


def test_accept_without_version_gets_v2(shared):
    job_id = shared.job_ids()[0]
    job = client(shared, "application/vnd.xplenty+json").get(api(shared, f"jobs/{job_id}")).json()
    assert "creator" in job and "component" in job["outputs"][0]


def test_unsupported_version_is_406(shared):
    response = client(shared, "application/vnd.xplenty+json; version=7").get(api(shared, "jobs"))
    assert response.status_code == 406


def test_log_summary_is_included_on_request_for_failed_jobs_only(shared):
    expected = sample("job-v2-failed-with-log-summary.json")["log_summary"]
    session = client(shared)
    failed = ids_with_status(shared, "failed")[0]
    completed = ids_with_status(shared, "completed")[0]
    summary = session.get(api(shared, f"jobs/{failed}"), params={"include": "log_summary"}).json()["log_summary"]
    assert list(summary) == list(expected)
    assert summary["error_summary"] and summary["action_items"]
    plain = session.get(api(shared, f"jobs/{completed}"), params={"include": "log_summary"}).json()
    assert plain["log_summary"] is None
    v1 = client(shared, V1).get(api(shared, f"jobs/{failed}"), params={"include": "log_summary"}).json()
    assert "log_summary" not in v1


def test_http_payload_equals_the_python_view(shared):
    job_id = shared.job_ids()[17]
    assert client(shared).get(api(shared, f"jobs/{job_id}")).json() == shared.job(job_id)
    assert client(shared, V1).get(api(shared, f"jobs/{job_id}")).json() == shared.job(job_id, version=1)


def test_log_and_variables(shared):
    session = client(shared)
    job_id = ids_with_status(shared, "failed")[0]
    log = session.get(api(shared, f"jobs/{job_id}/log")).json()
    assert set(log) == {"body", "url"} and "ERROR" in log["body"]
    variables = session.get(api(shared, f"jobs/{job_id}/variables")).json()
    assert variables == shared.job(job_id)["variables"]
    all_values = [v for i in shared.job_ids() for v in shared.job(i)["variables"].values()]
    assert any(isinstance(v, str) for v in all_values) and any(isinstance(v, int) for v in all_values)


# -- errors ---------------------------------------------------------------------------

def test_unknown_job_is_404(shared):
    response = client(shared).get(api(shared, "jobs/1"))
    assert response.status_code == 404
    assert response.json() == {"message": "Item not found."}
    assert {"X-RateLimit-Limit", "X-RateLimit-Remaining"} <= set(response.headers)


def test_other_account_is_404(shared):
    response = client(shared).get(f"{shared.url}/someone-else/api/jobs/{shared.job_ids()[0]}")
    assert response.status_code == 404
    assert response.json() == {"message": "Item not found."}


@pytest.mark.parametrize("auth", [None, ("wrong-key", ""), (KEY, "a-password")])
def test_missing_or_wrong_key_is_401(auth):
    with Sandbox(jobs=10, now=NOW) as sandbox:
        response = requests.get(api(sandbox, "jobs"), auth=auth)
        assert response.status_code == 401
        assert response.json() == {"message": "Unauthorized"}
        assert "X-RateLimit-Remaining" in response.headers
        assert sandbox.stats.faults["unauthorized"] == 1
        assert sandbox.stats.credits_used == 0


@pytest.mark.parametrize("params", [{"status": "done"}, {"sort": "name"}, {"direction": "up"},
                                    {"since": "yesterday"}, {"offset": "-1"}, {"limit": "0"},
                                    {"limit": "ten"}, {"package_id": "x"}])
def test_bad_list_parameters_are_400(shared, params):
    response = client(shared).get(api(shared, "jobs"), params=params)
    assert response.status_code == 400
    assert response.json()["message"]


# -- listing -------------------------------------------------------------------------

def test_paging_follows_link_headers_through_every_job(shared):
    session = client(shared)
    response = session.get(api(shared, "jobs"), params={"limit": 100})
    assert "prev" not in response.links
    seen = []
    while True:
        assert response.status_code == 200
        seen += [job["id"] for job in response.json()]
        if "next" not in response.links:
            break
        response = session.get(response.links["next"]["url"])
        assert response.links["prev"]["url"].startswith(shared.url)
    assert seen == sorted(shared.job_ids(), reverse=True)


def test_default_page_is_20_newest_first(shared):
    jobs = client(shared).get(api(shared, "jobs")).json()
    assert [job["id"] for job in jobs] == sorted(shared.job_ids(), reverse=True)[:20]


def test_limit_is_clamped_to_100(shared):
    response = client(shared).get(api(shared, "jobs"), params={"limit": 500, "offset": 100})
    assert len(response.json()) == 100
    assert "offset=200" in response.links["next"]["url"]
    assert "offset=0" in response.links["prev"]["url"]


def test_status_filter(shared):
    jobs = client(shared).get(api(shared, "jobs"), params={"status": "failed", "limit": 100}).json()
    assert jobs and {job["status"] for job in jobs} == {"failed"}
    assert len(jobs) == len(ids_with_status(shared, "failed"))


def test_package_filter(shared):
    package_id = shared.job(shared.job_ids()[0])["package_id"]
    jobs = client(shared).get(api(shared, "jobs"), params={"package_id": package_id, "limit": 100}).json()
    assert jobs and {job["package_id"] for job in jobs} == {package_id}


def test_since_keeps_jobs_updated_at_or_after_it(shared):
    updated = sorted(shared.job(i)["updated_at"] for i in shared.job_ids())
    since = updated[-60]
    expected = sum(1 for value in updated if value >= since)
    session = client(shared)
    for sort in ("updated", "created"):
        jobs = session.get(api(shared, "jobs"), params={"since": since, "sort": sort, "limit": 100}).json()
        assert len(jobs) == expected
        assert all(job["updated_at"] >= since for job in jobs)
    as_offset = (datetime.fromisoformat(since).astimezone(timezone(timedelta(hours=2)))).isoformat()
    jobs = session.get(api(shared, "jobs"), params={"since": as_offset, "limit": 100}).json()
    assert len(jobs) == expected
    unencoded_plus = f"{api(shared, 'jobs')}?limit=10&since={as_offset}"
    page = session.get(unencoded_plus)
    assert len(page.json()) == 10
    assert "since=" + since.replace(":", "%3A") in page.links["next"]["url"]
    assert len(session.get(page.links["next"]["url"]).json()) == min(10, expected - 10)


def test_sort_by_updated_breaks_ties_by_id(shared):
    session = client(shared)
    for direction in ("asc", "desc"):
        jobs = session.get(api(shared, "jobs"), params={"sort": "updated", "direction": direction,
                                                         "limit": 100, "offset": 50}).json()
        keys = [(job["updated_at"], job["id"]) for job in jobs]
        assert keys == sorted(keys, reverse=direction == "desc")


# -- the generated history ---------------------------------------------------------------

def test_same_seed_gives_the_same_history_and_another_seed_does_not():
    first, second, other = (Sandbox(jobs=200, seed=s, now=NOW) for s in (5, 5, 6))
    assert first.job_ids() == second.job_ids()
    assert all(first.job(i) == second.job(i) for i in first.job_ids())
    assert [first.job(i, 1) for i in first.job_ids()] == [second.job(i, 1) for i in first.job_ids()]
    assert [first.job(i) for i in first.job_ids()[:20]] != [other.job(i) for i in other.job_ids()[:20]]


def test_history_looks_realistic():
    sandbox = Sandbox(jobs=2000, seed=3, now=NOW)
    ids = sandbox.job_ids()
    assert len(ids) == 2000 and ids == sorted(ids) and 9_000 < ids[0] < 11_000
    assert all(1 <= b - a <= 3 for a, b in zip(ids, ids[1:]))
    jobs = [sandbox.job(i) for i in ids]
    statuses = Counter(job["status"] for job in jobs)
    assert 0.75 < statuses["completed"] / len(jobs) < 0.95
    assert 0.05 < statuses["failed"] / len(jobs) < 0.16
    assert statuses["stopped"] > 0
    in_flight = [job for job in jobs if job["status"] not in TERMINAL]
    assert 1 <= len(in_flight) <= 30
    assert {job["id"] for job in in_flight} <= set(ids[-30:]), "only the newest jobs are unfinished"
    assert all(job["created_at"] <= iso(NOW) for job in jobs)
    assert len({job["package_id"] for job in jobs}) >= 25
    assert len({job["cluster_id"] for job in jobs}) >= 4
    assert {job["creator"]["type"] for job in jobs} == {"Schedule", "User"}
    assert any(o["records_count"] > 2**31 for job in jobs for o in job["outputs"])
    output_ids = [o["id"] for job in jobs for o in job["outputs"]]
    assert len(output_ids) == len(set(output_ids))
    failed = [job for job in jobs if job["status"] == "failed"]
    assert len({job["errors"] for job in failed}) >= 8
    assert any(job["failed_at"] is None and job["completed_at"] for job in failed)
    assert all(job["errors"] == "" for job in jobs if job["status"] == "completed")


def test_failed_scheduled_runs_are_retried():
    sandbox = Sandbox(jobs=2000, seed=3, now=NOW)
    jobs = [sandbox.job(i) for i in sandbox.job_ids()]
    retries = [job for job in jobs if job["attempts"] > 0]
    assert retries
    for retry in retries:
        assert retry["creator"]["type"] == "Schedule" and retry["master_auto_retry_attempts"] == 3
        earlier = [job for job in jobs if job["id"] < retry["id"] and job["status"] == "failed"
                   and job["package_id"] == retry["package_id"]
                   and job["attempts"] == retry["attempts"] - 1 and job["creator"] == retry["creator"]]
        assert earlier, f"no failed run before retry {retry['id']}"


def test_every_status_occurs_on_some_time_line():
    history = Sandbox(jobs=3000, seed=4, now=NOW).history
    seen = set()
    for index in range(len(history.table)):
        plan = history.table[index]
        moments = (plan.created, plan.pending_at, plan.queued_at, plan.started,
                   plan.stop_requested, plan.stopping_at, plan.ended)
        seen |= {STATUSES[phase_at(plan, t)[0]] for t in moments if t >= plan.created}
    assert seen == set(STATUSES)


# -- the clock -------------------------------------------------------------------------

def test_advance_finishes_running_jobs_and_creates_new_ones(sandbox):
    running = ids_with_status(sandbox, "running")
    assert running
    before = sandbox.job_ids()
    newest = client(sandbox).get(api(sandbox, "jobs"), params={"limit": 1}).json()[0]["id"]
    assert newest == before[-1]
    sandbox.advance(3600)
    after_hour = sandbox.job_ids()
    assert len(after_hour) > len(before) and after_hour[:len(before)] == before
    sandbox.advance(8 * 3600)
    assert sandbox.now == NOW + timedelta(hours=9)
    for job_id in running:
        job = client(sandbox).get(api(sandbox, f"jobs/{job_id}")).json()
        assert job["status"] in TERMINAL
        assert job["completed_at"] and job["updated_at"] <= iso(sandbox.now)
    new = [i for i in sandbox.job_ids() if i > before[-1]]
    assert client(sandbox).get(api(sandbox, f"jobs/{new[0]}")).status_code == 200
    assert client(sandbox).get(api(sandbox, "jobs"), params={"limit": 1}).json()[0]["id"] == new[-1]


def test_jobs_created_after_the_clock_are_404_until_then(sandbox):
    sandbox.advance(24 * 3600)
    later = sandbox.job_ids()
    fresh = Sandbox(jobs=300, seed=2, now=NOW)
    not_yet = later[len(fresh.job_ids())]
    with pytest.raises(KeyError):
        fresh.job(not_yet)
    assert sandbox.job(not_yet)["id"] == not_yet


def test_running_job_progresses_with_the_clock(sandbox):
    job_id = ids_with_status(sandbox, "running")[-1]
    before = sandbox.job(job_id)
    sandbox.advance(10)
    after = sandbox.job(job_id)
    assert after["status"] == "running"
    assert after["runtime_in_seconds"] == before["runtime_in_seconds"] + 10
    assert after["progress"] >= before["progress"]
    assert after["updated_at"] == before["updated_at"] == after["started_at"]


def test_touch_makes_a_job_new_for_since(sandbox):
    old = sandbox.job_ids()[0]
    sandbox.advance(60)
    sandbox.touch([old])
    assert sandbox.job(old)["updated_at"] == iso(sandbox.now)
    jobs = client(sandbox).get(api(sandbox, "jobs"), params={"since": iso(sandbox.now), "sort": "updated",
                                                             "direction": "asc", "limit": 100}).json()
    assert old in [job["id"] for job in jobs]
    with pytest.raises(KeyError):
        sandbox.touch([1])


def test_control_endpoints_need_no_key(sandbox):
    old = sandbox.job_ids()[0]
    assert requests.post(f"{sandbox.url}/_sandbox/advance", params={"seconds": 120}).status_code == 200
    assert sandbox.now == NOW + timedelta(seconds=120)
    assert requests.post(f"{sandbox.url}/_sandbox/touch", params={"ids": f"{old}"}).status_code == 200
    assert sandbox.job(old)["updated_at"] == iso(NOW + timedelta(seconds=120))
    assert requests.post(f"{sandbox.url}/_sandbox/touch", params={"ids": "1,2"}).status_code == 404
    assert requests.post(f"{sandbox.url}/_sandbox/advance", params={"seconds": "x"}).status_code == 400
    stats = requests.get(f"{sandbox.url}/_sandbox/stats").json()
    assert stats["by_endpoint"]["control"] == 5 and stats["credits_used"] == 0


def test_clock_speed_moves_the_clock_with_real_time():
    with Sandbox(jobs=10, now=NOW, clock_speed=1000) as sandbox:
        client(sandbox).get(api(sandbox, "jobs"))
        assert sandbox.now > NOW


# -- rate limit, stats and faults ------------------------------------------------------------

def test_rate_limit_answers_429_with_retry_after():
    with Sandbox(jobs=10, now=NOW, rate_limit=3, rate_window_s=120) as sandbox:
        session = client(sandbox)
        remaining = [session.get(api(sandbox, "jobs")).headers["X-RateLimit-Remaining"] for _ in range(3)]
        assert remaining == ["2", "1", "0"]
        refused = session.get(api(sandbox, "jobs"))
        assert refused.status_code == 429
        assert refused.json() == {"message": "Rate Limit Exceeded"}
        assert 1 <= int(refused.headers["Retry-After"]) <= 120
        assert refused.headers["X-RateLimit-Limit"] == "3"
        status = session.get(f"{sandbox.url}/rate_limit_status")
        assert status.status_code == 200 and status.json()["remaining"] == 0
        assert 1 <= status.json()["reset_in_seconds"] <= 120
        assert sandbox.stats.credits_used == 3
        assert sandbox.stats.faults["rate_limited"] == 1
        assert sandbox.stats.by_endpoint["rate_limit_status"] == 1


def test_without_rate_limit_credits_are_still_reported(shared):
    session = client(shared)
    first = int(session.get(api(shared, "jobs")).headers["X-RateLimit-Remaining"])
    second = int(session.get(api(shared, "jobs")).headers["X-RateLimit-Remaining"])
    assert second == first - 1
    status = session.get(api(shared, "rate_limit_status")).json()
    assert status == {"limits": {"limit": 5000, "remaining": second}}


def test_stats_count_requests_by_endpoint(sandbox):
    session = client(sandbox)
    job_id = sandbox.job_ids()[0]
    for path in ("jobs", f"jobs/{job_id}", f"jobs/{job_id}/log", f"jobs/{job_id}/variables"):
        session.get(api(sandbox, path))
    stats = sandbox.stats
    assert stats.requests == 4 and stats.credits_used == 4
    assert [stats.by_endpoint[e] for e in ("list_jobs", "get_job", "job_log", "job_variables")] == [1] * 4
    stats.reset()
    assert stats.requests == 0 and stats.by_endpoint["get_job"] == 0


def test_error_fault_answers_5xx_with_a_json_message():
    with Sandbox(jobs=10, now=NOW, error_rate=1.0) as sandbox:
        responses = [client(sandbox).get(api(sandbox, "jobs")) for _ in range(6)]
        assert {r.status_code for r in responses} <= {500, 502, 503}
        assert all(r.json()["message"] for r in responses)
        assert sandbox.stats.faults["error"] == 6 and sandbox.stats.credits_used == 0
        assert client(sandbox).get(api(sandbox, "rate_limit_status")).status_code == 200


def test_drop_fault_closes_the_connection_without_a_response(capfd):
    with Sandbox(jobs=10, now=NOW, drop_rate=1.0) as sandbox:
        session = client(sandbox)
        for _ in range(2):
            with pytest.raises(requests.ConnectionError):
                session.get(api(sandbox, "jobs"))
        assert sandbox.stats.faults["drop"] == 2
        assert requests.get(f"{sandbox.url}/_sandbox/stats").status_code == 200
    assert capfd.readouterr().err == ""


def test_bad_json_fault_truncates_the_body():
    with Sandbox(jobs=10, now=NOW, bad_json_rate=1.0) as sandbox:
        response = client(sandbox).get(api(sandbox, f"jobs/{sandbox.job_ids()[0]}"))
        assert response.status_code == 200
        assert int(response.headers["Content-Length"]) == len(response.content)
        with pytest.raises(ValueError):
            response.json()
        assert sandbox.stats.faults["bad_json"] == 1


def test_faults_are_reproducible_and_transient():
    def statuses(sandbox):
        session = client(sandbox)
        return [session.get(api(sandbox, "jobs"), params={"limit": 1}).status_code for _ in range(30)]
    with Sandbox(jobs=10, seed=9, now=NOW, error_rate=0.5) as first:
        one = statuses(first)
    with Sandbox(jobs=10, seed=9, now=NOW, error_rate=0.5) as second:
        two = statuses(second)
    assert one == two and 200 in one and set(one) - {200}


def test_concurrent_clients_with_latency_all_get_answers():
    with Sandbox(jobs=100, now=NOW, latency_ms=20) as sandbox:
        ids = sandbox.job_ids()
        results: list[int] = []
        lock = threading.Lock()

        def worker(offset: int) -> None:
            session = client(sandbox)
            for k in range(5):
                status = session.get(api(sandbox, f"jobs/{ids[(offset * 5 + k) % len(ids)]}")).status_code
                with lock:
                    results.append(status)

        threads = [threading.Thread(target=worker, args=(n,)) for n in range(16)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(timeout=30)
        assert results == [200] * 80


def test_stop_is_idempotent_and_closes_the_port():
    sandbox = Sandbox(jobs=10, now=NOW).start()
    url = api(sandbox, "jobs")
    session = client(sandbox)
    assert session.get(url).status_code == 200   # leaves a kept-alive connection open
    sandbox.stop()
    sandbox.stop()
    with pytest.raises(requests.ConnectionError):
        requests.get(url, auth=(KEY, ""), timeout=5)


# -- paging styles ----------------------------------------------------------------------------

def query_of(url: str) -> dict[str, list[str]]:
    return parse_qs(urlsplit(url).query)


@pytest.mark.parametrize("offset_style", ["items", "pages"])
def test_minimal_links_carry_only_offset_and_limit(offset_style):
    with Sandbox(jobs=120, seed=1, now=NOW, link_style="minimal", offset_style=offset_style) as sandbox:
        session = client(sandbox)
        params = {"status": "completed", "sort": "updated", "direction": "asc", "limit": 10, "offset": 1,
                  "since": "2020-01-01T00:00:00Z"}
        response = session.get(api(sandbox, "jobs"), params=params)
        assert response.status_code == 200 and len(response.json()) == 10
        step = 1 if offset_style == "pages" else 10
        for rel, offset in (("next", 1 + step), ("prev", max(0, 1 - step))):
            url = response.links[rel]["url"]
            assert url.startswith(api(sandbox, "jobs") + "?")
            assert query_of(url) == {"offset": [str(offset)], "limit": ["10"]}


def test_full_links_carry_every_parameter(shared):
    params = {"status": "completed", "sort": "updated", "direction": "asc", "limit": "10", "offset": "10"}
    response = client(shared).get(api(shared, "jobs"), params=params)
    assert query_of(response.links["next"]["url"]) == {k: [v] for k, v in (params | {"offset": "20"}).items()}
    assert query_of(response.links["prev"]["url"]) == {k: [v] for k, v in (params | {"offset": "0"}).items()}


def test_link_style_none_sends_no_link_header():
    with Sandbox(jobs=120, seed=1, now=NOW, link_style="none") as sandbox:
        session = client(sandbox)
        for path in ("jobs", "packages", "schedules", "clusters"):
            response = session.get(api(sandbox, path), params={"limit": 2, "offset": 2})
            assert response.status_code == 200 and len(response.json()) == 2
            assert "Link" not in response.headers


def test_offset_style_pages_counts_pages_of_limit():
    with Sandbox(jobs=120, seed=1, now=NOW, offset_style="pages") as sandbox:
        session = client(sandbox)
        newest_first = sorted(sandbox.job_ids(), reverse=True)
        first = session.get(api(sandbox, "jobs"), params={"limit": 10})
        second = session.get(api(sandbox, "jobs"), params={"limit": 10, "offset": 1})
        assert [job["id"] for job in first.json()] == newest_first[:10]
        assert [job["id"] for job in second.json()] == newest_first[10:20]
        assert query_of(first.links["next"]["url"])["offset"] == ["1"]
        assert query_of(second.links["next"]["url"])["offset"] == ["2"]
        assert query_of(second.links["prev"]["url"])["offset"] == ["0"]
        seen, response = [], first
        while True:
            seen += [job["id"] for job in response.json()]
            if "next" not in response.links:
                break
            response = session.get(response.links["next"]["url"])
        assert seen == newest_first
        assert session.get(api(sandbox, "jobs"), params={"limit": 10, "offset": 12}).json() == []


def test_paging_styles_are_checked():
    for options in ({"link_style": "short"}, {"offset_style": "rows"}):
        with pytest.raises(ValueError):
            Sandbox(jobs=1, now=NOW, **options)


# -- the Accept header ------------------------------------------------------------------------

@pytest.mark.parametrize("accept, version", [
    (None, 2), ("*/*", 2), ("application/json", 2), ("application/*", 2),
    ("application/vnd.xplenty+json", 2), (V1, 1), (V2, 2),
    ("application/vnd.xplenty+json version=1", 1),        # the SDKs' spelling: no semicolon
    ("application/vnd.xplenty+json, version=1", 1),       # a spelling in the docs: a comma
    ("text/html, application/vnd.xplenty+json; version=1; q=0.9", 1),
    ("application/json, application/vnd.xplenty+json; version=1", 1),   # the vendor type wins
    ("application/vnd.xplenty+json; version=7, */*", 2),
])
def test_accepted_media_types(shared, accept, version):
    session = client(shared)
    if accept is None:
        del session.headers["Accept"]
    job_id = shared.job_ids()[0]
    response = session.get(api(shared, f"jobs/{job_id}"), headers={} if accept is None else {"Accept": accept})
    assert response.status_code == 200
    assert ("creator" in response.json()) == (version == 2)


@pytest.mark.parametrize("accept", ["text/html", "application/xml", "application/vnd.xplenty+json; version=3",
                                    "application/vnd.github+json", "text/*", "*/*; q=0", "nonsense"])
def test_a_media_type_the_service_would_refuse_is_406(shared, accept):
    for path in ("jobs", f"jobs/{shared.job_ids()[0]}", "packages", "rate_limit_status"):
        response = client(shared, accept).get(api(shared, path))
        assert response.status_code == 406
        assert response.json()["message"]
        assert response.headers["Content-Type"].startswith("application/vnd.xplenty+json")


# -- rate_limit_status ------------------------------------------------------------------------

def test_rate_limit_status_in_both_shapes_costs_no_credit():
    with Sandbox(jobs=10, now=NOW, rate_limit=5, rate_window_s=600) as sandbox:
        session = client(sandbox)
        session.get(api(sandbox, "jobs"))
        nested = session.get(api(sandbox, "rate_limit_status"))
        flat = session.get(f"{sandbox.url}/rate_limit_status")
        assert nested.status_code == flat.status_code == 200
        assert nested.json() == {"limits": {"limit": 5, "remaining": 4}}
        assert flat.json()["limit"] == 5 and flat.json()["remaining"] == 4
        assert 1 <= flat.json()["reset_in_seconds"] <= 600
        assert sandbox.stats.credits_used == 1
        assert sandbox.stats.by_endpoint["rate_limit_status"] == 2
        assert nested.headers["X-RateLimit-Remaining"] == "4"


def test_rate_limit_status_of_an_unknown_account_is_404(shared):
    response = client(shared).get(f"{shared.url}/someone-else/api/rate_limit_status")
    assert response.status_code == 404
    assert response.json() == {"message": "Item not found."}


# -- the catalog: packages, schedules, clusters --------------------------------------------------

def listed(sandbox: Sandbox, path: str, **params) -> list[dict]:
    response = client(sandbox).get(api(sandbox, path), params={"limit": 100, **params})
    assert response.status_code == 200, response.text
    return response.json()


def test_job_payload_links_to_packages_clusters_and_schedules_resolve(shared):
    session = client(shared)
    jobs = [shared.job(i) for i in shared.job_ids()]
    scheduled = next(job for job in jobs if job["creator"]["type"] == "Schedule")
    for job in (jobs[0], scheduled):
        package = session.get(job["package"]["url"])
        cluster = session.get(job["cluster"]["url"])
        assert package.status_code == cluster.status_code == 200
        assert {k: v for k, v in package.json().items() if k in job["package"]} == job["package"]
        assert {k: v for k, v in cluster.json().items() if k in job["cluster"]} == job["cluster"]
    schedule = session.get(scheduled["creator"]["url"])
    assert schedule.status_code == 200
    assert schedule.json()["name"] == scheduled["creator"]["display_name"]
    assert scheduled["package_id"] in [p["package_id"] for p in schedule.json()["task"]["packages"]]


def test_catalog_objects_have_the_documented_attributes(shared):
    package = listed(shared, "packages")[0]
    assert list(package) == ["id", "name", "description", "variables", "owner_id", "flow_type", "status",
                             "created_at", "updated_at", "url", "html_url"]
    schedule = listed(shared, "schedules")[0]
    assert list(schedule) == ["id", "name", "description", "owner_id", "status", "start_at", "next_run_at",
                              "interval_amount", "interval_unit", "last_run_at", "last_run_status",
                              "execution_count", "overlap", "auto_retry", "auto_retry_attempts", "task",
                              "reuse_cluster_strategy", "created_at", "updated_at", "url", "html_url"]
    assert {"nodes", "terminate_on_idle", "time_to_idle", "packages"} <= set(schedule["task"])
    assert all("package_id" in p for p in schedule["task"]["packages"])
    cluster = listed(shared, "clusters")[0]
    assert list(cluster) == ["id", "name", "description", "status", "owner_id", "plan_id", "nodes", "type",
                             "created_at", "updated_at", "available_since", "terminated_at",
                             "running_jobs_count", "queued_jobs_count", "terminate_on_idle", "time_to_idle",
                             "region", "zone", "master_instance_type", "slave_instance_type", "stack", "url",
                             "html_url", "creator"]
    assert set(cluster["creator"]) == {"type", "id", "display_name", "url", "html_url"}


def test_get_catalog_item_and_404(shared):
    session = client(shared)
    for path in ("packages", "schedules", "clusters"):
        items = listed(shared, path) + (listed(shared, path, status="archived") if path == "packages" else [])
        for item in items:
            response = session.get(api(shared, f"{path}/{item['id']}"))
            assert response.status_code == 200 and response.json() == item
            assert item["url"] == api(shared, f"{path}/{item['id']}")
        missing = session.get(api(shared, f"{path}/999999"))
        assert missing.status_code == 404 and missing.json() == {"message": "Item not found."}
        assert session.get(f"{shared.url}/someone-else/api/{path}").status_code == 404


def test_list_packages_filters(shared):
    active = listed(shared, "packages")
    archived = listed(shared, "packages", status="archived")
    assert active and archived and {p["status"] for p in active} == {"active"}
    assert {p["status"] for p in archived} == {"archived"}
    used = {shared.job(i)["package_id"] for i in shared.job_ids()}
    assert used <= {p["id"] for p in active}, "every package a job ran is active"
    workflows = listed(shared, "packages", flow_type="workflow")
    dataflows = listed(shared, "packages", flow_type="dataflow")
    assert workflows and {p["flow_type"] for p in workflows} == {"workflow"}
    assert sorted(p["id"] for p in workflows + dataflows) == sorted(p["id"] for p in active)
    assert listed(shared, "packages", flow_type="all") == active
    by_name = listed(shared, "packages", sort="name", direction="asc")
    assert [p["name"] for p in by_name] == sorted(p["name"] for p in active)
    for sort, field in (("created", "created_at"), ("updated", "updated_at")):
        for direction in ("asc", "desc"):
            keys = [(p[field], p["id"]) for p in listed(shared, "packages", sort=sort, direction=direction)]
            assert keys == sorted(keys, reverse=direction == "desc")
    since = sorted(p["updated_at"] for p in active)[-5]
    recent = listed(shared, "packages", since=since)
    assert len(recent) == sum(p["updated_at"] >= since for p in active) >= 5
    assert all(p["updated_at"] >= since for p in recent)


def test_list_schedules_filters_and_fit_the_jobs(shared):
    session = client(shared)
    everything = listed(shared, "schedules")
    enabled = listed(shared, "schedules", status="enabled")
    disabled = listed(shared, "schedules", status="disabled")
    assert enabled and disabled and len(enabled) + len(disabled) == len(everything)
    assert {s["status"] for s in disabled} == {"disabled"} and all(s["next_run_at"] is None for s in disabled)
    jobs = [shared.job(i) for i in shared.job_ids()]
    now = iso(shared.now)
    for schedule in enabled:
        runs = [job for job in jobs if job["creator"]["type"] == "Schedule" and job["creator"]["id"] == schedule["id"]]
        assert schedule["execution_count"] == len(runs) > 0
        last = max(runs, key=lambda job: job["id"])
        assert schedule["last_run_at"] == last["created_at"] and schedule["last_run_status"] == last["status"]
        assert schedule["start_at"] <= min(job["created_at"] for job in runs)
        assert schedule["next_run_at"] > now and schedule["updated_at"] >= schedule["last_run_at"]
        assert schedule["interval_unit"] in ("minutes", "hours", "days", "weeks", "months")
        assert schedule["auto_retry"] == (last["master_auto_retry_attempts"] > 0)
        assert {job["package_id"] for job in runs} <= {p["package_id"] for p in schedule["task"]["packages"]}
    for direction in ("asc", "desc"):
        keys = [(s["updated_at"], s["id"]) for s in listed(shared, "schedules", sort="updated", direction=direction)]
        assert keys == sorted(keys, reverse=direction == "desc")
    since = sorted(s["updated_at"] for s in everything)[-3]
    recent = listed(shared, "schedules", since=since)
    assert len(recent) == sum(s["updated_at"] >= since for s in everything) >= 3
    page = session.get(api(shared, "schedules"), params={"limit": 4, "offset": 4})
    assert [s["id"] for s in page.json()] == [s["id"] for s in everything[4:8]]
    assert "offset=8" in page.links["next"]["url"] and "offset=0" in page.links["prev"]["url"]


def test_schedules_and_clusters_follow_the_clock(sandbox):
    before = {s["id"]: s for s in listed(sandbox, "schedules", status="enabled")}
    sandbox.advance(2 * 86_400)
    after = {s["id"]: s for s in listed(sandbox, "schedules", status="enabled")}
    assert sum(after[i]["execution_count"] for i in after) > sum(before[i]["execution_count"] for i in before)
    assert all(after[i]["execution_count"] >= before[i]["execution_count"] for i in after)
    assert all(after[i]["next_run_at"] > iso(sandbox.now) for i in after)
    jobs = [sandbox.job(i) for i in sandbox.job_ids()]
    for cluster in listed(sandbox, "clusters"):
        here = [job for job in jobs if job["cluster_id"] == cluster["id"]]
        assert cluster["running_jobs_count"] == sum(job["status"] in ("running", "pending_stoppage", "stopping")
                                                    for job in here)
        assert cluster["queued_jobs_count"] == sum(job["status"] in ("idle", "pending", "queued") for job in here)


def test_list_clusters_filters(shared):
    clusters = listed(shared, "clusters")
    available = listed(shared, "clusters", status="available")
    terminated = listed(shared, "clusters", status="terminated")
    assert available and terminated and len(available) + len(terminated) == len(clusters)
    assert all(c["terminated_at"] for c in terminated) and all(c["terminated_at"] is None for c in available)
    assert {shared.job(i)["cluster_id"] for i in shared.job_ids()} <= {c["id"] for c in available}
    assert listed(shared, "clusters", status="error") == []
    assert [c["id"] for c in clusters] == sorted((c["id"] for c in clusters), reverse=True)
    page = client(shared).get(api(shared, "clusters"), params={"limit": 3, "offset": 3})
    assert [c["id"] for c in page.json()] == [c["id"] for c in clusters[3:6]]


@pytest.mark.parametrize("path, params", [
    ("packages", {"status": "all"}), ("packages", {"flow_type": "etl"}), ("packages", {"sort": "size"}),
    ("schedules", {"status": "paused"}), ("schedules", {"sort": "name"}), ("schedules", {"since": "soon"}),
    ("clusters", {"status": "on"}), ("clusters", {"limit": "0"}), ("packages", {"offset": "-1"})])
def test_bad_catalog_parameters_are_400(shared, path, params):
    response = client(shared).get(api(shared, path), params=params)
    assert response.status_code == 400 and response.json()["message"]


def test_catalog_calls_cost_a_credit_and_are_counted_by_endpoint(sandbox):
    session = client(sandbox)
    for path in ("packages", "schedules", "clusters"):
        first = listed(sandbox, path)[0]
        session.get(api(sandbox, f"{path}/{first['id']}"))
    stats = sandbox.stats
    names = ("list_packages", "get_package", "list_schedules", "get_schedule", "list_clusters", "get_cluster")
    assert [stats.by_endpoint[name] for name in names] == [1] * 6
    assert stats.credits_used == 6


@pytest.mark.parametrize("offset_style", ["items", "pages"])
def test_catalog_lists_page_like_jobs(offset_style):
    with Sandbox(jobs=50, seed=3, now=NOW, link_style="minimal", offset_style=offset_style) as sandbox:
        session = client(sandbox)
        everything = listed(sandbox, "packages")
        seen, response = [], session.get(api(sandbox, "packages"), params={"limit": 7})
        while True:
            seen += [p["id"] for p in response.json()]
            if "next" not in response.links:
                break
            assert set(query_of(response.links["next"]["url"])) == {"offset", "limit"}
            response = session.get(response.links["next"]["url"])
        assert seen == [p["id"] for p in everything]


# -- the `archiver sandbox` banner ------------------------------------------------------------------

def test_sandbox_command_banner_names_the_job_ids_and_passes_the_paging_options(monkeypatch):
    import re

    from click.testing import CliRunner

    import archiver.sandbox
    from archiver.cli import cli

    served = {}

    def serve_once(sandbox: Sandbox) -> None:   # instead of serving until Ctrl-C
        try:
            ids = sandbox.job_ids()
            served.update(ids=ids, styles=(sandbox.link_style, sandbox.offset_style),
                          status=client(sandbox).get(api(sandbox, f"jobs/{ids[-1]}")).status_code)
        finally:
            sandbox.stop()

    monkeypatch.setattr(archiver.sandbox, "serve", serve_once)
    result = CliRunner().invoke(cli, ["sandbox", "--port", "0", "--jobs", "120", "--seed", "3",
                                      "--link-style", "minimal", "--offset-style", "pages"])
    assert result.exit_code == 0, result.output
    ids = served["ids"]
    assert f"job ids {ids[0]}..{ids[-1]} (120 jobs)" in result.output
    assert f"archiver sync {ids[0]} {ids[-1]}" in result.output
    assert served["styles"] == ("minimal", "pages") and served["status"] == 200
    assert re.search(r"listening on http://127\.0\.0\.1:\d+ ", result.output)


def test_sandbox_command_rejects_an_unknown_paging_style():
    from click.testing import CliRunner

    from archiver.cli import cli

    result = CliRunner().invoke(cli, ["sandbox", "--port", "0", "--link-style", "short"])
    assert result.exit_code == 2 and "--link-style" in result.output
