"""Ids that do not exist: one line of ranges, not a line each, and a flood ends the run."""

from archiver.flows.runs import FLOOD_WINDOW, PAGE_OF_JOBS, id_ranges
from archiver.sandbox import Sandbox
from tests.sandboxed import NOW, run_archiver


def test_missing_ids_are_logged_once_as_ranges(sqlite_url):
    with Sandbox(jobs=30, seed=16, now=NOW) as api:
        real = api.job_ids()
        result = run_archiver(api, sqlite_url, "sync", *map(str, real[:5]), "1-40", "90-95")
    assert result.returncode == 1
    assert "inserted 5" in result.stdout and "not found 46" in result.stdout
    lines = [line for line in result.stderr.splitlines() if "not found" in line]
    assert len(lines) == 1 and "46 jobs: 1-40, 90-95" in lines[0]


def test_a_flood_of_404s_stops_the_run_with_one_message(sqlite_url):
    with Sandbox(jobs=30, seed=16, now=NOW) as api:
        result = run_archiver(api, sqlite_url, "sync", *map(str, api.job_ids()), "100000-110000",
                              "--concurrency", "4")
        asked = api.stats.by_endpoint["get_job"]
    assert result.returncode == 1 and "inserted 30" in result.stdout
    assert "do not exist" in result.stdout and "are the ids right?" in result.stdout
    # not the 10,001 ids asked for: the window, those in flight, and at most a page read ahead
    assert asked <= 30 + FLOOD_WINDOW + 8 + PAGE_OF_JOBS
    assert len(result.stderr.splitlines()) <= 3


def test_id_ranges():
    assert id_ranges([5, 3, 4, 10, 12, 11, 20]) == "3-5, 10-12, 20"
    assert id_ranges(range(0, 100, 2), most=2) == "0, 2, ... (48 more ranges)"
