"""The catalog in every `sync --incremental`: schedules, packages and clusters from their own
List endpoints, against the sandbox and through the store, on every backend."""

import copy

import pytest
from sqlalchemy import select

from archiver import models
from archiver.client import Page, XplentyClient
from archiver.errors import InvalidPayload, NotFound
from archiver.flows.catalog import archive_catalog, offset_pages
from archiver.flows.incremental import IncrementalOptions, sync_incremental
from archiver.flows.runs import Run, SyncOptions, SyncSummary
from archiver.parse import parse_cluster, parse_job, parse_package, parse_schedule, parse_timestamp
from archiver.sandbox import Sandbox
from archiver.store import Archive
from tests.clirun import run_cli
from tests.sandboxed import NOW, cli_env, settings_for

CATALOG_CALLS = ("list_schedules", "list_packages", "list_clusters")
SCOPES = ("catalog:schedules", "catalog:packages:active", "catalog:packages:archived")
SCHEDULE_TIMES = ("start_at", "next_run_at", "last_run_at", "created_at", "updated_at")
SCHEDULE_VALUES = ("name", "description", "owner_id", "status", "interval_amount", "interval_unit",
                   "last_run_status", "execution_count", "overlap", "auto_retry", "auto_retry_attempts",
                   "reuse_cluster_strategy", "url", "html_url")
PACKAGE_VALUES = ("name", "description", "owner_id", "status", "flow_type", "variables", "url", "html_url")
CLUSTER_VALUES = ("name", "description", "status", "owner_id", "plan_id", "nodes", "type", "region", "zone",
                  "master_instance_type", "slave_instance_type", "terminate_on_idle", "time_to_idle", "stack",
                  "url", "html_url")
CLUSTER_TIMES = ("created_at", "updated_at", "available_since", "terminated_at")


@pytest.fixture
def api():
    with Sandbox(jobs=300, seed=5, now=NOW) as sandbox:
        yield sandbox


@pytest.fixture
def archive(db_url):
    a = Archive.open(db_url, "acme")
    yield a
    a.close()


def incremental(api, db_url, options=None, **inc):
    return sync_incremental(settings_for(api, db_url), options or SyncOptions(), IncrementalOptions(**inc))


def table(db_url, model) -> dict:
    """The rows of a table by primary key (a tuple for composite keys)."""
    archive = Archive.open(db_url)
    keys = list(model.__table__.primary_key.columns)
    with archive.engine.connect() as conn:
        found = conn.execute(select(model.__table__).order_by(*keys)).mappings().all()
    archive.close()
    return {(r[keys[0].name] if len(keys) == 1 else tuple(r[k.name] for k in keys)): dict(r) for r in found}


def when(text):
    return None if text is None else parse_timestamp(text)


def catalog_calls(api) -> list[int]:
    return [api.stats.by_endpoint[e] for e in CATALOG_CALLS]


def assert_archived_as_listed(api, db_url):
    schedules, packages, clusters = (table(db_url, m) for m in (models.ScheduleRow, models.PackageRow,
                                                                 models.ClusterRow))
    listed = {kind: {o["id"]: o for o in api.catalog(kind)} for kind in ("schedules", "packages", "clusters")}
    assert set(schedules) == set(listed["schedules"])
    assert set(packages) == set(listed["packages"]) and set(clusters) == set(listed["clusters"])
    for i, obj in listed["schedules"].items():
        row = schedules[i]
        assert {k: row[k] for k in SCHEDULE_VALUES} == {k: obj[k] for k in SCHEDULE_VALUES}
        assert {k: row[k] for k in SCHEDULE_TIMES} == {k: when(obj[k]) for k in SCHEDULE_TIMES}
        task = obj["task"]
        assert (row["task_nodes"], row["task_terminate_on_idle"], row["task_time_to_idle"]) == \
            (task["nodes"], task["terminate_on_idle"], task["time_to_idle"])
        assert row["payload"] == obj
    for i, obj in listed["packages"].items():
        row = packages[i]
        assert {k: row[k] for k in PACKAGE_VALUES} == {k: obj[k] for k in PACKAGE_VALUES}
        assert (row["created_at"], row["updated_at"]) == (when(obj["created_at"]), when(obj["updated_at"]))
        assert row["payload"] == obj
    for i, obj in listed["clusters"].items():
        row = clusters[i]
        assert {k: row[k] for k in CLUSTER_VALUES} == {k: obj[k] for k in CLUSTER_VALUES}
        assert {k: row[k] for k in CLUSTER_TIMES} == {k: when(obj[k]) for k in CLUSTER_TIMES}
        assert row["payload"] == obj
    expected = {(s["id"], n): (p["package_id"], p["variables"]) for s in listed["schedules"].values()
                for n, p in enumerate(s["task"]["packages"])}
    got = {key: (r["package_id"], r["variables"]) for key, r in table(db_url, models.SchedulePackageRow).items()}
    assert got == expected


# -- against the sandbox -----------------------------------------------------------------------------
def test_incremental_archives_every_schedule_package_and_cluster_with_its_columns(api, db_url):
    summary = incremental(api, db_url)
    assert summary.exit_code == 0 and summary.outcome == "ok"
    assert catalog_calls(api) == [1, 2, 1]
    assert_archived_as_listed(api, db_url)
    kinds = {k: len(api.catalog(k)) for k in ("schedules", "packages", "clusters")}
    assert {k: summary.catalog[k].stored for k in kinds} == kinds
    assert any(p["status"] == "archived" for p in api.catalog("packages"))   # both package reads matter
    assert any(p["flow_type"] == "workflow" for p in api.catalog("packages"))
    assert f"catalog: {kinds['schedules']} schedules, {kinds['packages']} packages, " \
           f"{kinds['clusters']} clusters stored" in summary.line()
    marks = table(db_url, models.SyncStateRow)
    for scope, kind, status in zip(SCOPES, ("schedules", "packages", "packages"), (None, "active", "archived")):
        newest = max(when(o["updated_at"]) for o in api.catalog(kind) if status in (None, o["status"]))
        assert marks[("sandbox", scope)]["high_water_mark"] == newest


def test_a_second_run_reads_only_what_changed_for_a_handful_of_credits(api, db_url):
    incremental(api, db_url)
    api.stats.reset()
    again = incremental(api, db_url)
    assert again.exit_code == 0 and catalog_calls(api) == [1, 2, 1]
    assert sum(c.stored for c in again.catalog.values()) == 0   # only the mark's second is read again
    [run] = [r for r in table(db_url, models.SyncRunRow).values() if r["id"] == again.run_id]
    assert run["credits_used"] == run["api_calls"] == api.stats.credits_used == \
        api.stats.by_endpoint["list_jobs"] + 4
    api.advance(6 * 3600)   # schedules run, clusters take jobs
    api.stats.reset()
    later = incremental(api, db_url)
    assert later.exit_code == 0 and catalog_calls(api) == [1, 2, 1]
    assert later.catalog["schedules"].stored > 0 and later.catalog["packages"].stored == 0
    assert_archived_as_listed(api, db_url)


def test_no_catalog_and_filtered_runs_read_no_catalog(api, sqlite_url, capsys, monkeypatch):
    summary = incremental(api, sqlite_url, status="failed")
    assert summary.exit_code == 0 and summary.catalog == {} and catalog_calls(api) == [0, 0, 0]
    result = run_cli(capsys, monkeypatch, ["sync", "--incremental", "--no-catalog"], cli_env(api, sqlite_url))
    assert result.code == 0 and "catalog" not in result.out and catalog_calls(api) == [0, 0, 0]
    assert table(sqlite_url, models.ScheduleRow) == {}
    misplaced = run_cli(capsys, monkeypatch, ["sync", "1", "--no-catalog"], cli_env(api, sqlite_url))
    assert misplaced.code == 2


def test_a_dry_run_reads_the_catalog_and_writes_none_of_it(api, sqlite_url):
    summary = incremental(api, sqlite_url, SyncOptions(dry_run=True))
    assert summary.exit_code == 0 and summary.catalog["schedules"].inserted == len(api.catalog("schedules"))
    assert "would be stored" in summary.line()
    assert table(sqlite_url, models.ScheduleRow) == {} and table(sqlite_url, models.SyncStateRow) == {}


def test_a_failing_catalog_read_loses_no_job_and_the_run_is_partial(api, db_url, monkeypatch):
    """An account without List schedules (404): the jobs and the other catalog reads are
    archived, a sync_errors row names the list, the run ends partial (exit 1)."""
    real = XplentyClient.list_page

    def list_page(self, resource, params):
        if resource == "schedules":
            raise NotFound()
        return real(self, resource, params)

    monkeypatch.setattr(XplentyClient, "list_page", list_page)
    summary = incremental(api, db_url)
    assert (summary.outcome, summary.exit_code, summary.failed, summary.not_found) == ("partial", 1, 0, 0)
    assert sorted(table(db_url, models.JobRow)) == api.job_ids()
    assert table(db_url, models.ScheduleRow) == {}
    assert len(table(db_url, models.PackageRow)) == len(api.catalog("packages"))
    [error] = table(db_url, models.SyncErrorRow).values()
    assert (error["job_id"], error["kind"], error["http_status"]) == (None, "not_found", 404)
    assert error["message"].startswith("List schedules: ") and "--no-catalog" in error["message"]
    [run] = table(db_url, models.SyncRunRow).values()
    assert run["outcome"] == "partial" and run["inserted"] == 300
    monkeypatch.undo()
    assert incremental(api, db_url).exit_code == 0
    assert_archived_as_listed(api, db_url)


def test_a_too_large_catalog_answer_is_one_failed_read(api, sqlite_url):
    api.misbehave("oversized", "list_clusters", times=1, size=2 * 1024 * 1024)
    summary = incremental(api, sqlite_url, SyncOptions(max_response_mb=1))
    assert summary.outcome == "partial" and summary.catalog["clusters"].errors == 1
    assert [e["kind"] for e in summary.errors] == ["too_large"]
    assert len(table(sqlite_url, models.JobRow)) == 300
    assert len(table(sqlite_url, models.ScheduleRow)) == len(api.catalog("schedules"))


def test_an_invalid_object_is_recorded_and_read_again_by_the_next_run(api, db_url, monkeypatch):
    real = XplentyClient.list_page
    bad_id = sorted(api.catalog("schedules"), key=lambda s: (s["updated_at"], s["id"]))[2]["id"]

    def list_page(self, resource, params):
        page = real(self, resource, params)
        if resource == "schedules":
            for item in page.items:
                if item["id"] == bad_id:
                    item["interval_amount"] = "hourly"
        return page

    monkeypatch.setattr(XplentyClient, "list_page", list_page)
    summary = incremental(api, db_url)
    assert summary.outcome == "partial" and summary.catalog["schedules"].errors == 1
    [error] = table(db_url, models.SyncErrorRow).values()
    assert (error["job_id"], error["kind"], error["field"]) == (None, "bad_field", "interval_amount")
    assert error["message"].startswith(f"schedule {bad_id}: field 'interval_amount'")
    assert bad_id not in table(db_url, models.ScheduleRow)
    assert len(table(db_url, models.ScheduleRow)) == len(api.catalog("schedules")) - 1
    mark = table(db_url, models.SyncStateRow)[("sandbox", "catalog:schedules")]["high_water_mark"]
    assert mark <= when(next(s for s in api.catalog("schedules") if s["id"] == bad_id)["updated_at"])
    monkeypatch.undo()
    assert incremental(api, db_url).exit_code == 0
    assert_archived_as_listed(api, db_url)


# -- the write rules, through the store ---------------------------------------------------------------
T1 = "2026-11-01T10:00:00Z"
T2 = "2026-11-02T10:00:00Z"

SCHEDULE = {"id": 7, "name": "Nightly", "description": "d", "owner_id": 3, "status": "enabled",
            "start_at": "2026-01-01T00:00:00Z", "next_run_at": "2026-11-03T00:00:00Z", "interval_amount": 1,
            "interval_unit": "days", "last_run_at": "2026-11-02T00:00:00Z", "last_run_status": "completed",
            "execution_count": 300, "overlap": False, "auto_retry": True, "auto_retry_attempts": 2,
            "task": {"nodes": 2, "terminate_on_idle": True, "time_to_idle": 3600,
                     "packages": [{"package_id": 2373, "variables": {"day": "$today"}},
                                  {"package_id": 2374, "variables": {}}]},
            "reuse_cluster_strategy": "any", "created_at": "2025-01-01T00:00:00Z", "updated_at": T1,
            "url": "https://api.xplenty.com/acme/api/schedules/7", "html_url": "https://x/schedules/7"}
PACKAGE = {"id": 2373, "name": "NetSuite customers to warehouse", "description": "Copies customers nightly",
           "variables": {"region": "eu"}, "owner_id": 8, "flow_type": "dataflow", "status": "active",
           "created_at": "2024-03-12T07:09:18Z", "updated_at": "2026-10-13T19:38:04Z",
           "url": "https://api.xplenty.com/acme/api/packages/2373", "html_url": "https://x/packages/2373"}
CLUSTER = {"id": 52, "name": "Nightly", "description": "", "status": "available", "owner_id": 8, "plan_id": 1,
           "nodes": 2, "type": "production", "created_at": "2026-11-27T01:55:00Z", "updated_at": T1,
           "available_since": "2026-11-27T02:01:00Z", "terminated_at": None, "running_jobs_count": 1,
           "queued_jobs_count": 0, "terminate_on_idle": True, "time_to_idle": 3600, "region": "r", "zone": "z",
           "master_instance_type": "m", "slave_instance_type": "s", "stack": "pinot", "url": "u", "html_url": "h",
           "creator": {"type": "User", "id": 8}}
PARSERS = {"schedules": parse_schedule, "packages": parse_package, "clusters": parse_cluster}
MODELS = {"schedules": models.ScheduleRow, "packages": models.PackageRow, "clusters": models.ClusterRow}


def put(archive, kind, *raws):
    return archive.write_catalog(kind, [PARSERS[kind](copy.deepcopy(r)) for r in raws])


def stored_row(archive, kind, object_id):
    return table(archive_url(archive), MODELS[kind])[object_id]


def archive_url(archive):
    return archive.engine.url.render_as_string(hide_password=False)


@pytest.mark.parametrize("kind, full, partial_keys", [
    ("schedules", SCHEDULE, ("id", "updated_at", "name")),
    ("packages", PACKAGE, ("id", "updated_at", "name")),
    ("clusters", CLUSTER, ("id", "updated_at", "status")),
])
def test_a_partial_object_keeps_the_stored_columns_it_leaves_out(archive, kind, full, partial_keys):
    assert put(archive, kind, full).inserted == [full["id"]]
    before = stored_row(archive, kind, full["id"])
    partial = {k: full[k] for k in partial_keys} | {"updated_at": T2}
    partial[partial_keys[2]] = "changed"
    assert put(archive, kind, partial).updated == [full["id"]]
    after = stored_row(archive, kind, full["id"])
    assert after[partial_keys[2]] == "changed" and after["updated_at"] == when(T2)
    assert after["payload"] == partial   # the payload is the last object, as it came
    kept = set(before) - {partial_keys[2], "updated_at", "payload", "last_synced_at"}
    assert {k: after[k] for k in kept} == {k: before[k] for k in kept}
    assert None not in {after[k] for k in ("owner_id", "created_at")}
    if kind == "schedules":   # no task: its packages are kept too
        assert len(table(archive_url(archive), models.SchedulePackageRow)) == 2


def test_a_newer_schedule_replaces_its_packages_and_an_explicit_null_sets_null(archive):
    put(archive, "schedules", SCHEDULE)
    newer = copy.deepcopy(SCHEDULE) | {"updated_at": T2, "last_run_status": None}
    newer["task"]["packages"] = [{"package_id": 99, "variables": {"a": 1}}]
    assert put(archive, "schedules", newer).updated == [7]
    assert stored_row(archive, "schedules", 7)["last_run_status"] is None
    rows = table(archive_url(archive), models.SchedulePackageRow)
    assert {k: (r["package_id"], r["variables"]) for k, r in rows.items()} == {(7, 0): (99, {"a": 1})}


@pytest.mark.parametrize("kind, full", [("schedules", SCHEDULE), ("packages", PACKAGE), ("clusters", CLUSTER)])
def test_an_older_object_never_overwrites_a_newer_one_and_the_same_one_is_unchanged(archive, kind, full):
    newer = copy.deepcopy(full) | {"updated_at": T2, "name": "newer"}
    older = copy.deepcopy(full) | {"updated_at": T1, "name": "older"}
    if kind == "schedules":
        older["task"]["packages"] = []
    put(archive, kind, newer)
    result = put(archive, kind, older)
    assert result.stale == [full["id"]] and result.updated == []
    row = stored_row(archive, kind, full["id"])
    assert (row["name"], row["updated_at"], row["payload"]) == ("newer", when(T2), newer)
    assert put(archive, kind, newer).unchanged == [full["id"]]
    same_time = copy.deepcopy(newer) | {"description": "moved on"}   # e.g. next_run_at, running jobs
    assert put(archive, kind, same_time).updated == [full["id"]]
    if kind == "schedules":
        assert len(table(archive_url(archive), models.SchedulePackageRow)) == 2


def test_jobs_never_wipe_what_the_list_endpoints_stored(archive, payload):
    """A v1 job (bare package_id/cluster_id) keeps the full rows; a v2 job's nested package and
    cluster, even newer, update only what they carry and never the list-only columns."""
    put(archive, "packages", PACKAGE)
    put(archive, "clusters", CLUSTER | {"id": 99})
    v1 = payload("job-v1-completed.json") | {"package_id": 2373, "cluster_id": 99}
    archive.write_jobs([parse_job(v1)])
    package, cluster = stored_row(archive, "packages", 2373), stored_row(archive, "clusters", 99)
    assert (package["name"], package["flow_type"], package["variables"], package["payload"]) == \
        (PACKAGE["name"], "dataflow", {"region": "eu"}, PACKAGE)
    assert (cluster["stack"], cluster["time_to_idle"], cluster["payload"]) == ("pinot", 3600, CLUSTER | {"id": 99})
    v2 = payload("job-v2-failed-with-log-summary.json")
    v2["package"] |= {"updated_at": "2026-11-20T00:00:00Z", "name": "renamed"}
    del v2["package"]["description"]
    v2["cluster"] |= {"updated_at": "2026-11-20T00:00:00Z"}
    archive.write_jobs([parse_job(v2)])
    package, cluster = stored_row(archive, "packages", 2373), stored_row(archive, "clusters", 99)
    assert (package["name"], package["description"]) == ("renamed", PACKAGE["description"])
    assert (package["flow_type"], package["variables"], package["payload"]) == ("dataflow", {"region": "eu"}, PACKAGE)
    assert (cluster["terminate_on_idle"], cluster["stack"], cluster["payload"]) == (True, "pinot", CLUSTER | {"id": 99})
    assert cluster["updated_at"] == when("2026-11-20T00:00:00Z")


def test_an_older_nested_package_never_overwrites_a_newer_row(archive, payload):
    put(archive, "packages", PACKAGE | {"updated_at": "2026-11-25T00:00:00Z", "name": "newest"})
    v2 = payload("job-v2-failed-with-log-summary.json")   # its package is of 2026-10-13
    archive.write_jobs([parse_job(v2)])
    assert stored_row(archive, "packages", 2373)["name"] == "newest"


def test_a_bare_package_id_makes_a_stub_a_listed_package_fills_it(archive, payload):
    archive.write_jobs([parse_job(payload("job-v1-completed.json"))])
    stub = stored_row(archive, "packages", 434)
    assert stub["name"] is None and stub["payload"] is None
    assert put(archive, "packages", PACKAGE | {"id": 434}).updated == [434]
    assert stored_row(archive, "packages", 434)["flow_type"] == "dataflow"


# -- at the edge ----------------------------------------------------------------------------------
@pytest.mark.parametrize("parse, raw, field", [
    (parse_schedule, SCHEDULE | {"overlap": "no"}, "overlap"),
    (parse_schedule, SCHEDULE | {"task": {"packages": [{"package_id": "x"}]}}, "task.packages[0].package_id"),
    (parse_schedule, SCHEDULE | {"interval_unit": "u" * 33}, "interval_unit"),
    (parse_package, PACKAGE | {"variables": ["a"]}, "variables"),
    (parse_cluster, CLUSTER | {"time_to_idle": 1.5}, "time_to_idle"),
    (parse_cluster, CLUSTER | {"id": None}, "id"),
])
def test_an_invalid_object_names_its_kind_id_and_field(parse, raw, field):
    with pytest.raises(InvalidPayload) as bad:
        parse(copy.deepcopy(raw))
    kind = parse.__name__.removeprefix("parse_")
    assert bad.value.field == field and bad.value.job_id is None and bad.value.kind == "bad_field"
    assert str(bad.value).startswith(f"{kind} {raw['id']}: field '{field}'" if raw["id"] else f"{kind}: field")


def test_a_list_object_keeps_only_the_keys_it_has_and_its_payload_with_nul_replaced():
    record = parse_package({"id": 5, "name": "a\u0000b", "flow_type": "workflow"})
    assert record.columns == {"name": "a\ufffdb", "flow_type": "workflow"}
    assert record.payload_text == '{"flow_type":"workflow","id":5,"name":"a\ufffdb"}'
    schedule = parse_schedule({"id": 7, "task": {"nodes": 3}})
    assert schedule.columns == {"task_nodes": 3} and schedule.packages is None


# -- clusters: paged by offset alone ------------------------------------------------------------------
class OffsetList:
    """A list with only offset and limit, offset counting objects or pages (or ignored)."""

    def __init__(self, n: int, offset_counts: str):
        self.items = [{"id": i, "updated_at": "2026-11-01T00:00:00Z"} for i in range(n, 0, -1)]
        self.offset_counts, self.calls = offset_counts, 0

    def __call__(self, params: dict) -> Page:
        self.calls += 1
        limit, offset = params["limit"], params.get("offset", 0)
        start = {"items": offset, "pages": offset * limit, "ignored": 0}[self.offset_counts]
        return Page(items=[dict(i) for i in self.items[start:start + limit]])


@pytest.mark.parametrize("offset_counts", ["items", "pages", "ignored"])
@pytest.mark.parametrize("n", [0, 7, 100, 250])
def test_offset_pages_reads_every_object_once_whatever_offset_counts(offset_counts, n):
    server = OffsetList(n, offset_counts)
    got = [item["id"] for page in offset_pages(server, {}) for item in page]
    if offset_counts == "ignored":
        assert got == list(range(n, 0, -1))[:100] and server.calls <= 2
    else:
        assert sorted(got) == list(range(1, n + 1)) and len(got) == len(set(got))
        assert server.calls <= n // 100 + 2


def test_clusters_are_read_whole_each_run_and_only_changes_written(api, sqlite_url):
    incremental(api, sqlite_url)
    before = table(sqlite_url, models.ClusterRow)
    api.stats.reset()
    summary = incremental(api, sqlite_url)
    counts = summary.catalog["clusters"]
    assert api.stats.by_endpoint["list_clusters"] == 1
    assert counts.stored + counts.unchanged == len(api.catalog("clusters"))
    unchanged = [i for i, row in table(sqlite_url, models.ClusterRow).items()
                 if row["last_synced_at"] == before[i]["last_synced_at"]]
    assert len(unchanged) == counts.unchanged


def test_the_catalog_mark_moves_only_with_the_page_it_covers(api, sqlite_url, monkeypatch):
    """A write that fails takes the page's bookmark with it: the next run reads it again."""
    real = Archive.write_catalog

    def write_catalog(self, kind, records, after=None):
        if kind == "packages":
            raise RuntimeError("database gone")
        return real(self, kind, records, after)

    monkeypatch.setattr(Archive, "write_catalog", write_catalog)
    archive = Archive.open(sqlite_url, "sandbox")
    client = XplentyClient(api.url, api.account, settings_for(api, sqlite_url).api_key)
    try:
        with pytest.raises(RuntimeError):
            archive_catalog(Run(archive, SyncSummary(mode="incremental"), SyncOptions(), client))
    finally:
        client.close()
        archive.close()
    marks = table(sqlite_url, models.SyncStateRow)
    assert ("sandbox", "catalog:schedules") in marks and ("sandbox", "catalog:packages:active") not in marks
    monkeypatch.undo()
    assert incremental(api, sqlite_url).exit_code == 0
    assert_archived_as_listed(api, sqlite_url)


def test_since_is_asked_from_the_mark(api, sqlite_url, monkeypatch):
    incremental(api, sqlite_url)
    asked = []
    real = XplentyClient.list_page
    monkeypatch.setattr(XplentyClient, "list_page",
                        lambda self, resource, params: asked.append((resource, dict(params))) or
                        real(self, resource, params))
    incremental(api, sqlite_url)
    marks = table(sqlite_url, models.SyncStateRow)
    for resource, params in asked:
        if resource == "schedules":
            assert params["since"] == marks[("sandbox", "catalog:schedules")]["high_water_mark"] \
                .strftime("%Y-%m-%dT%H:%M:%SZ")
            assert (params["status"], params["sort"], params["direction"]) == ("all", "updated", "asc")
        if resource == "packages":
            scope = f"catalog:packages:{params['status']}"
            assert params["flow_type"] == "all" and "since" in params and ("sandbox", scope) in marks
        if resource == "clusters":
            assert set(params) == {"limit"}
    assert {r for r, _ in asked} == {"jobs", "schedules", "packages", "clusters"}
