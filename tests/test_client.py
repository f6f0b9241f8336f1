"""The HTTP policy: retries, backoff, Retry-After, auth failures, strict JSON, no leaked key."""

import email.utils
import time

import pytest
import requests
import responses

from archiver.client import RetryPolicy, XplentyClient, parse_retry_after
from archiver.config import Secret
from archiver.errors import ApiError, AuthError, InvalidPayload, NotFound, RateLimited

API = "https://api.example.test"
JOB = f"{API}/acme/api/jobs/157"
KEY = "super-secret-key-value"


@pytest.fixture
def slept():
    return []


@pytest.fixture
def client(slept):
    c = XplentyClient(API, "acme", Secret(KEY), sleep=slept.append, policy=RetryPolicy(max_attempts=4))
    yield c
    c.close()


@responses.activate
def test_server_errors_are_retried_with_growing_backoff(client, slept, payload):
    for status in (500, 502, 503):
        responses.get(JOB, status=status, json={"message": "busy"})
    responses.get(JOB, json=payload("job-v1-completed.json"))
    assert client.get_job(157)["id"] == 157
    assert len(slept) == 3 and slept[0] < slept[2]
    assert client.usage.credits == 4 and client.usage.retries == 3


@responses.activate
def test_retries_stop_at_the_limit(client, slept):
    responses.get(JOB, status=503, json={"message": "overloaded"})
    with pytest.raises(ApiError) as err:
        client.get_job(157)
    assert err.value.status == 503 and len(responses.calls) == 4


@responses.activate
def test_retry_after_seconds_is_honoured(client, slept, payload):
    responses.get(JOB, status=429, json={"message": "Rate Limit Exceeded"}, headers={"Retry-After": "7"})
    responses.get(JOB, json=payload("job-v1-completed.json"))
    client.get_job(157)
    assert 7 <= slept[0] < 7.5
    assert client.usage.credits == 1 and client.usage.rate_limited == 1


@responses.activate
def test_429_without_retry_after_never_spins(client, slept, payload):
    responses.get(JOB, status=429, json={"message": "Rate Limit Exceeded"})
    responses.get(JOB, json=payload("job-v1-completed.json"))
    client.get_job(157)
    assert slept[0] >= client.policy.min_429_wait


@responses.activate
def test_huge_retry_after_ends_the_run_instead_of_sleeping(client, slept):
    responses.get(JOB, status=429, json={"message": "Rate Limit Exceeded"}, headers={"Retry-After": "86400"})
    with pytest.raises(RateLimited, match="more than"):
        client.get_job(157)
    assert slept == [] and len(responses.calls) == 1


def test_retry_after_seconds_or_http_date():
    """Delta-seconds as given; an HTTP date as the wait until then (a past date: no wait)."""
    assert parse_retry_after("120") == 120.0
    assert parse_retry_after("Wed, 21 Oct 2015 07:28:00 GMT") == 0.0
    in_an_hour = email.utils.formatdate(time.time() + 3600, usegmt=True)
    assert 3500 < parse_retry_after(in_an_hour) <= 3600
    assert parse_retry_after("soon") is None and parse_retry_after(None) is None


@pytest.mark.parametrize("status", [401, 402, 403])
@responses.activate
def test_refused_credentials_are_one_request_and_no_retry(client, slept, status):
    responses.get(JOB, status=status, json={"message": "Refused here"})
    with pytest.raises(AuthError) as err:
        client.get_job(157)
    assert err.value.status == status and err.value.message == "Refused here"
    assert len(responses.calls) == 1 and slept == []
    assert KEY not in str(err.value)


@responses.activate
def test_404_is_not_found_without_retry(client, slept):
    responses.get(JOB, status=404, json={"message": "Item not found."})
    with pytest.raises(NotFound):
        client.get_job(157)
    assert len(responses.calls) == 1


@pytest.mark.parametrize("status", [400, 406, 415, 422])
@responses.activate
def test_client_errors_are_recorded_not_retried(client, status):
    responses.get(JOB, status=status, json={"message": "nope"})
    with pytest.raises(ApiError) as err:
        client.get_job(157)
    assert err.value.status == status and len(responses.calls) == 1


@pytest.mark.parametrize("body", [
    b"<html><body>502 Bad Gateway</body></html>", b"", b'{"id": 157,}', b'{"id": 157, "progress": NaN}',
    b'{"id": 157, "errors": "\xff\xfe"}', b'{"id": 1' + b"9" * 5000 + b"}", b"[" * 100000,
])
@responses.activate
def test_bodies_that_are_not_json_are_retried_then_rejected(client, body):
    responses.get(JOB, body=body, content_type="application/json")
    with pytest.raises(InvalidPayload) as err:
        client.get_job(157)
    assert err.value.job_id == 157 and err.value.kind == "bad_json"
    assert len(responses.calls) == 4
    assert len(str(err.value)) < 200


@responses.activate
def test_connection_errors_are_retried(client, payload):
    responses.get(JOB, body=requests.ConnectionError("reset by peer"))
    responses.get(JOB, body=requests.exceptions.ChunkedEncodingError("cut"))
    responses.get(JOB, json=payload("job-v1-completed.json"))
    assert client.get_job(157)["id"] == 157


@responses.activate
def test_rate_limit_headers_are_tracked_and_reserve_stops_spending(slept, payload):
    c = XplentyClient(API, "acme", Secret(KEY), sleep=slept.append, reserve=10)
    responses.get(JOB, json=payload("job-v1-completed.json"),
                  headers={"X-RateLimit-Limit": "5000", "X-RateLimit-Remaining": "10"})
    c.get_job(157)
    assert (c.usage.limit, c.usage.remaining) == (5000, 10)
    with pytest.raises(RateLimited, match="reserve"):
        c.get_job(157)
    assert len(responses.calls) == 1


@responses.activate
def test_redirect_to_another_host_drops_authorization(client, payload):
    responses.get(JOB, status=302, headers={"Location": "https://elsewhere.example.org/job"})
    responses.get("https://elsewhere.example.org/job", json=payload("job-v1-completed.json"))
    client.get_job(157)
    assert "Authorization" in responses.calls[0].request.headers
    assert "Authorization" not in responses.calls[1].request.headers


def test_key_never_appears_in_reprs():
    c = XplentyClient(API, "acme", Secret(KEY))
    assert KEY not in repr(c.__dict__) and KEY not in str(Secret(KEY))


@responses.activate
def test_calls_slow_down_as_the_budget_nears_the_reserve(slept, payload):
    c = XplentyClient(API, "acme", Secret(KEY), sleep=slept.append, reserve=10)
    for remaining in ("100", "25", "15", "11"):
        responses.get(JOB, json=payload("job-v1-completed.json"),
                      headers={"X-RateLimit-Limit": "5000", "X-RateLimit-Remaining": remaining})
    for _ in range(4):
        c.get_job(157)
    # no pause before the first answer nor at 100 left; then 25 and 15 left of a reserve of 10
    assert slept == [pytest.approx(0.5), pytest.approx(1.5)]


def test_fetch_concurrency_halves_on_429s_and_grows_back_one_at_a_time():
    from archiver.client import Usage
    from archiver.flows.runs import AdaptiveLimit

    class FakeClient:
        reserve = 0
        usage = Usage(remaining=4000)

    client = FakeClient()
    limit = AdaptiveLimit(client, 16)
    assert limit.current() == 16
    client.usage.rate_limited += 1
    assert limit.current() == 8
    assert [limit.current() for _ in range(3)] == [9, 10, 11]
    client.usage.remaining = 50  # low budget: keep narrowing
    assert [limit.current() for _ in range(4)] == [5, 2, 1, 1]


@responses.activate
@pytest.mark.parametrize("answer", [{"limits": {"limit": 5000, "remaining": 4321}},
                                    {"limit": 5000, "remaining": 4321}])
def test_rate_limit_status_in_either_shape_is_free(client, answer):
    responses.get(f"{API}/acme/api/rate_limit_status", json=answer)
    budget = client.rate_limit_status()
    assert (budget.limit, budget.remaining) == (5000, 4321) and client.usage.credits == 0


@responses.activate
def test_list_answering_404_is_a_configuration_error_naming_account_and_url(client):
    from archiver.errors import ConfigError

    responses.get(f"{API}/acme/api/jobs", status=404, json={"message": "Item not found."})
    with pytest.raises(ConfigError, match=r"account 'acme' at https://api\.example\.test"):
        client.list_jobs({"limit": 100})


@responses.activate
def test_every_request_pins_api_version_2_and_never_follows_a_link(client):
    responses.get(f"{API}/acme/api/jobs", json=[], headers={
        "Link": '<https://evil.example/acme/api/jobs?offset=100>; rel="next"'})
    page = client.list_jobs({"limit": 100})
    assert page.items == [] and page.has_next
    assert len(responses.calls) == 1
    assert responses.calls[0].request.headers["Accept"] == "application/vnd.xplenty+json; version=2"
