"""Paging over real HTTP against the sandbox playing every reading of the docs: Link headers
in full, with only offset and limit, or none; offset counting jobs or pages; hundreds of
jobs updated in one second; jobs updated while the pages are read. Every job is archived,
exit 0, whatever the server's paging."""

import json

import pytest
from sqlalchemy import select

from archiver import models
from archiver.client import XplentyClient
from archiver.flows import incremental as incremental_flow
from archiver.flows.incremental import IncrementalOptions, sync_incremental
from archiver.flows.runs import SyncOptions
from archiver.sandbox import Sandbox
from archiver.store import Archive
from tests.sandboxed import NOW, run_archiver, settings_for

STYLES = [(link, offset) for link in ("full", "minimal", "none") for offset in ("items", "pages")]


def api_state(api) -> dict[int, str]:
    return {i: api.job(i)["updated_at"] for i in api.job_ids()}


def stored_state(db_url) -> dict[int, str]:
    archive = Archive.open(db_url)
    with archive.engine.connect() as conn:
        rows = conn.execute(select(models.JobRow.id, models.JobRow.updated_at)).all()
    archive.close()
    return {i: t.strftime("%Y-%m-%dT%H:%M:%SZ") for i, t in rows}


def incremental(api, db_url):
    return sync_incremental(settings_for(api, db_url), SyncOptions(), IncrementalOptions())


@pytest.mark.parametrize("link_style, offset_style", STYLES)
def test_every_job_archived_whatever_the_paging(sqlite_url, link_style, offset_style):
    with Sandbox(jobs=600, seed=51, now=NOW, link_style=link_style, offset_style=offset_style) as api:
        result = run_archiver(api, sqlite_url, "sync", "--incremental", "--json")
        assert result.returncode == 0, result.stderr
        assert json.loads(result.stdout)["inserted"] == 600
        assert stored_state(sqlite_url) == api_state(api)


@pytest.mark.parametrize("offset_style", ["items", "pages"])
@pytest.mark.parametrize("burst", [150, 300])
def test_hundreds_of_jobs_updated_in_the_same_second(sqlite_url, offset_style, burst):
    with Sandbox(jobs=800, seed=52, now=NOW, link_style="minimal", offset_style=offset_style) as api:
        assert incremental(api, sqlite_url).exit_code == 0
        api.advance(60)
        api.touch(api.job_ids()[100:100 + burst])   # one second for all of them
        summary = incremental(api, sqlite_url)
        assert summary.exit_code == 0 and summary.updated >= burst
        assert stored_state(sqlite_url) == api_state(api)


@pytest.mark.parametrize("link_style, offset_style", [("full", "items"), ("minimal", "pages"), ("none", "items")])
def test_jobs_updated_while_the_pages_are_read_are_all_archived(sqlite_url, monkeypatch, link_style, offset_style):
    with Sandbox(jobs=1000, seed=53, now=NOW, link_style=link_style, offset_style=offset_style) as api:
        real = XplentyClient.list_page
        calls = []

        def list_page(self, resource, params):
            calls.append(params)
            if len(calls) in (3, 6):   # jobs already read, and jobs not read yet, change
                ids = api.job_ids()
                api.touch([ids[40], ids[41], ids[500], ids[900]])
            return real(self, resource, params)

        monkeypatch.setattr(XplentyClient, "list_page", list_page)
        assert incremental(api, sqlite_url).exit_code == 0
        monkeypatch.undo()
        assert stored_state(sqlite_url) == api_state(api)
        assert not any("offset" in p for p in calls)   # no burst: the cursor alone paged


def test_a_second_run_after_a_few_changes_costs_one_call_per_100_plus_one(sqlite_url, monkeypatch):
    """The read itself, changes spread over a day as cron sees them (open-job refresh apart)."""
    monkeypatch.setattr(incremental_flow, "refresh_open", lambda run, exclude=(): None)
    with Sandbox(jobs=1000, seed=54, now=NOW, link_style="none") as api:
        incremental(api, sqlite_url)
        ids = api.job_ids()
        for touched in (3, 150, 220):
            before = stored_state(sqlite_url)
            for job_id in ids[:touched]:
                api.advance(1)   # (the sandbox's own jobs move on too)
                api.touch([job_id])
            changed = sum(before.get(i) != t for i, t in api_state(api).items())
            api.stats.reset()
            summary = incremental(api, sqlite_url)
            assert summary.exit_code == 0 and summary.inserted + summary.updated == changed
            assert api.stats.by_endpoint["list_jobs"] <= -(-changed // 100) + 1
        assert stored_state(sqlite_url) == api_state(api)


@pytest.mark.parametrize("resource, filters", [("schedules", {"status": "all"}), ("packages", {"status": "active"}),
                                               ("packages", {"status": "archived"})])
def test_the_same_cursor_read_pages_the_catalog(resource, filters):
    from archiver.config import Secret
    from archiver.flows.cursor import CursorRead

    with Sandbox(jobs=300, seed=55, now=NOW, link_style="minimal", offset_style="pages") as api:
        client = XplentyClient(api.url, api.account, Secret("sandbox-key"))
        read = CursorRead(lambda params: client.list_page(resource, params), filters, None, limit=2)
        got = [item["id"] for page in read.pages() for item in page]
        every = [item["id"] for item in client.list_page(resource, {**filters, "limit": 100}).items]
        client.close()
    assert sorted(got) == sorted(every) and len(got) == len(set(got)) > 2
