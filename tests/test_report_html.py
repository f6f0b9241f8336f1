"""archiver report html: valid HTML5, one file that asks nothing of the network, every section on
the demo, hostile API text shown as text everywhere, a size bound, and a headless Chromium that
draws it offline without attempting a request."""

from __future__ import annotations

import os
import re
import select
import socket
import struct
import subprocess
import sys
import zlib
from datetime import datetime, timedelta, timezone
from pathlib import Path

import html5lib
import pytest
from sqlalchemy import insert, select as sql_select, text

from archiver import database
from archiver.errortext import signature
from archiver.flows.report_html import job_link, write_html_report
from archiver.models import AlertRow, JobAnomalyRow, JobOutputRow, JobRow, PackageRow, SyncRunRow
from archiver.textsafe import safe_text
from tests.clirun import run_cli
from tests.conftest import required_tool
from tests.healthrows import Rows, job_row, recount

NOW = datetime(2026, 3, 1, 12, 0, tzinfo=timezone.utc)
HOSTILE = "<script>alert(1)</script></svg>\"quoted\" 'single' \x1b[31mred\u202eevil"
SHOWN = safe_text(HOSTILE)        # how it must read on the page: the characters, as text
SECTIONS = ("health", "totals", "calendar", "failure-rate", "runtimes", "records", "errors", "retries", "syncs")
SVG_NS = "{http://www.w3.org/2000/svg}"
XHTML = "{http://www.w3.org/1999/xhtml}"
JOB_URL = "https://app.xplenty.com/acme/jobs/{}"


# -- archives --------------------------------------------------------------------------------------------
def hostile_archive(url: str) -> None:
    """Ten days of one scheduled package named HOSTILE: runs, failures with HOSTILE errors, an
    output named HOSTILE, a slow verdict and a sync run whose message is HOSTILE."""
    rows = Rows(url)
    try:
        rows.package(1, HOSTILE)
        rows.schedule(7, start_at=NOW - timedelta(days=10), unit="hours", packages=(1,), name=HOSTILE,
                      auto_retry=True, retries=2)
        jobs, outputs = [], []
        for i in range(40):
            created = NOW - timedelta(days=10) + timedelta(hours=6 * i)
            status = "failed" if i % 5 == 0 else "completed"
            row = job_row(100 + i, package_id=1, created_at=created, status=status, schedule_id=7,
                          runtime=300 + 10 * i, attempts=0)
            row["errors"] = f"{HOSTILE} on row {i}" if status == "failed" else ""
            row["html_url"] = JOB_URL.format(100 + i) if i % 10 else "javascript:alert(1)"
            jobs.append(row)
            outputs.append({"id": 5000 + i, "job_id": 100 + i, "name": HOSTILE, "component_name": HOSTILE,
                            "records_count": 1000 + i})
        retry = job_row(200, package_id=1, created_at=NOW - timedelta(days=10, hours=-1), schedule_id=7, attempts=1)
        rows.jobs(jobs + [retry | {"html_url": JOB_URL.format(200), "errors": ""}])
        with rows.engine.begin() as conn:
            conn.execute(insert(JobOutputRow.__table__), outputs)
            recount(conn, jobs)   # the outputs' rollup, as a write keeps it
            conn.execute(insert(JobAnomalyRow.__table__), [{
                "job_id": 139, "kind": "slow", "output_key": "", "package_id": 1, "severity": "warning", "n": 20,
                "message": HOSTILE, "job_created_at": jobs[-1]["created_at"], "detected_at": NOW}, {
                "job_id": 138, "kind": "zero_records", "output_key": HOSTILE, "package_id": 1,
                "severity": "critical", "n": 20, "message": HOSTILE, "job_created_at": jobs[-2]["created_at"],
                "detected_at": NOW}])
            conn.execute(insert(SyncRunRow.__table__), [
                {"started_at": NOW - timedelta(hours=h), "finished_at": NOW - timedelta(hours=h), "mode": "incremental",
                 "outcome": outcome, "message": message, "credits_used": 3}
                for h, outcome, message in ((2, "failed", HOSTILE), (1, "ok", None))])
    finally:
        rows.close()


def wide_archive(url: str, packages: int = 200, days: int = 90) -> None:
    """`packages` packages, each run by its own daily schedule for `days` days, every seventh run
    failing with an error that names its job; two outputs a job."""
    rows = Rows(url)
    try:
        with rows.engine.begin() as conn:
            conn.execute(insert(PackageRow.__table__), [{"id": p, "name": f"package number {p} to the warehouse"}
                                                        for p in range(1, packages + 1)])
        for p in range(1, packages + 1):
            rows.schedule(p, start_at=NOW - timedelta(days=days), unit="days", packages=(p,), auto_retry=True, retries=1)
        jobs, outputs = [], []
        for p in range(1, packages + 1):
            for d in range(days):
                job_id = p * 1000 + d
                status = "failed" if (p + d) % 7 == 0 else "completed"
                row = job_row(job_id, package_id=p, created_at=NOW - timedelta(days=days - d, minutes=-p),
                              status=status, schedule_id=p, runtime=100 + (p * d) % 500)
                row["html_url"] = JOB_URL.format(job_id)
                row["errors"] = f"Job {job_id} failed: table 'orders_{p}' timed out after {d}s" if status == "failed" else ""
                jobs.append(row)
                outputs += [{"id": job_id * 2 + k, "job_id": job_id, "name": f"out{k}", "component_name": f"dest{k}",
                             "records_count": 1000 * p + d} for k in range(2)]
        rows.jobs(jobs)
        with rows.engine.begin() as conn:
            conn.execute(insert(JobOutputRow.__table__), outputs)
            recount(conn, jobs)
            conn.execute(insert(SyncRunRow.__table__), [
                {"started_at": NOW - timedelta(hours=h), "mode": "incremental", "outcome": "ok", "credits_used": 2}
                for h in range(1, 24 * days, 6)])
    finally:
        rows.close()


@pytest.fixture
def hostile_report(db_url, tmp_path) -> tuple[str, str]:
    hostile_archive(db_url)
    path = write_html_report(db_url, tmp_path / "report.html", "30d", now=NOW).path
    return db_url, path.read_text(encoding="utf-8")


@pytest.fixture(scope="module")
def demo(tmp_path_factory):
    from archiver.flows.demo import run_demo

    return run_demo(tmp_path_factory.mktemp("demo"))


# -- reading the page back -------------------------------------------------------------------------------------
def parse(page: str):
    """The document, by html5lib's strict parser: any HTML5 parse error raises."""
    return html5lib.HTMLParser(strict=True, namespaceHTMLElements=True).parse(page)


def texts(element) -> list[str]:
    """Every text node and attribute value under `element`."""
    found = list(element.attrib.values())
    if element.text:
        found.append(element.text)
    for child in element:
        found += texts(child)
        if child.tail:
            found.append(child.tail)
    return found


def section(document, name: str):
    return next(e for e in document.iter(f"{XHTML}section") if e.get("id") == name)


def references(page: str) -> list[str]:
    """Every address the page could load or link: src, href, srcset, action, url(...) and @import."""
    return (re.findall(r"""(?:src|href|srcset|action|poster|data)\s*=\s*["']?([^"'\s>]+)""", page, re.I)
            + re.findall(r"url\(\s*['\"]?([^'\")]+)", page, re.I) + re.findall(r"@import\s+['\"]([^'\"]+)", page))


# -- the page --------------------------------------------------------------------------------------------------
def test_the_page_is_valid_html5_with_a_policy_that_forbids_every_request(hostile_report):
    _, page = hostile_report
    document = parse(page)
    policy = [m.get("content") for m in document.iter(f"{XHTML}meta") if m.get("http-equiv") == "Content-Security-Policy"]
    assert policy and "default-src 'none'" in policy[0] and "script-src" not in policy[0]
    assert not list(document.iter(f"{XHTML}script")) and not list(document.iter(f"{SVG_NS}script"))


def test_hostile_text_shows_as_text_in_every_place_it_appears(hostile_report):
    """Package, schedule, output, anomaly and sync texts, and the error signature, read as the
    characters they are: no markup, no raw control or bidi character, in every section that shows them."""
    _, page = hostile_report
    document = parse(page)
    assert "\x1b" not in page and "\u202e" not in page and "<script" not in page
    assert page.count("<svg") == page.count("</svg>") == len(list(document.iter(f"{SVG_NS}svg")))
    for name in ("health", "failure-rate", "runtimes", "records", "retries", "syncs"):
        assert SHOWN in "".join(texts(section(document, name))), name
    error_text = "".join(texts(section(document, "errors")))
    assert safe_text(signature(HOSTILE)) in error_text and "<script>alert(<n>)</script>" in error_text
    for svg in document.iter(f"{SVG_NS}svg"):   # a stray </svg> would have let HTML elements in
        assert {e.tag for e in svg.iter()} <= {f"{SVG_NS}{t}" for t in ("svg", "title", "path", "rect", "text")}


def test_links_go_only_to_the_jobs_own_pages(hostile_report):
    db_url, page = hostile_report
    engine = database.open_engine(db_url, create=False)
    with engine.connect() as conn:
        urls = {u for (u,) in conn.execute(sql_select(JobRow.__table__.c.html_url)) if u}
        alerts = conn.execute(sql_select(AlertRow.__table__.c.key)).all()
    engine.dispose()
    external = [r for r in references(page) if not r.startswith("#")]
    assert external and all(r.replace("&amp;", "&") in urls and r.startswith("https://") for r in external)
    assert "javascript:" not in " ".join(references(page))
    assert alerts == []           # the report judges the board and records nothing


def test_an_error_signature_masks_numbers_ids_and_quoted_values():
    one = signature("Job 123 failed: table 'orders_7' timed out after 30.5s (id 5f3e9a2b1c, "
                    "request 0b6f8d5e-3c2a-4b1d-9e8f-7a6b5c4d3e2f)")
    other = signature("Job 9 failed: table 'customers' timed out after 2s (id 77aa0b9c12, "
                      "request 1c6f8d5e-3c2a-4b1d-9e8f-7a6b5c4d3e2a)")
    assert one == other == "Job <n> failed: table '…' timed out after <n>s (id <id>, request <id>)"
    assert signature("  ") is signature(None) is None   # shown as "(no error text)"


def test_only_http_job_pages_become_links():
    assert job_link("https://app.xplenty.com/a/jobs/1") == "https://app.xplenty.com/a/jobs/1"
    for url in ("javascript:alert(1)", "data:text/html,x", "https://x/\" onmouseover=\"a", None, ""):
        assert job_link(url) is None


def test_the_demo_report_holds_every_section_with_its_charts(demo):
    page = demo.report.read_text(encoding="utf-8")
    document = parse(page)
    for name in SECTIONS:
        part = section(document, name)
        assert "".join(texts(part)).strip(), name
    assert len(list(section(document, "runtimes").iter(f"{SVG_NS}svg"))) >= 5
    for name in ("calendar", "failure-rate", "records", "syncs"):
        assert len(list(section(document, name).iter(f"{SVG_NS}svg"))) == 1, name
    for svg in document.iter(f"{SVG_NS}svg"):       # every chart is named and has a title
        assert svg.get("role") == "img" and svg.get("aria-label") and svg.find(f"{SVG_NS}title") is not None
    assert len(list(section(document, "errors").iter(f"{XHTML}a"))) >= 1   # links to example jobs
    assert "failing" in "".join(texts(section(document, "health")))       # the demo's broken pipeline


def test_the_demo_command_prints_where_the_report_is(capsys, monkeypatch, tmp_path):
    monkeypatch.chdir(tmp_path)
    result = run_cli(capsys, monkeypatch, ["demo", "--jobs", "120"])
    assert str(tmp_path / "demo-report.html") in result.out and (tmp_path / "demo-report.html").is_file()


def test_report_html_command_writes_the_file(capsys, monkeypatch, sqlite_url, tmp_path):
    hostile_archive(sqlite_url)
    target = tmp_path / "out.html"
    result = run_cli(capsys, monkeypatch, ["report", "html", "--db", sqlite_url, "-o", str(target), "--since", "400d"])
    assert result.code == 0 and f"wrote {target}" in result.out
    parse(target.read_text(encoding="utf-8"))


def test_200_packages_over_90_days_stay_under_one_and_a_half_megabytes(sqlite_url, tmp_path):
    wide_archive(sqlite_url)
    report = write_html_report(sqlite_url, tmp_path / "wide.html", "90d", now=NOW)
    page = report.path.read_text(encoding="utf-8")
    assert report.bytes <= 1_500_000
    document = parse(page)
    assert "192 more are not" in page          # 8 of 200 packages get a runtime chart; the rest are counted
    assert len(list(section(document, "errors").iter(f"{XHTML}tr"))) == 2  # one signature, all 200 packages


# -- headless Chromium -------------------------------------------------------------------------------------------
def chromium() -> str:
    return required_tool("chromium", "chromium", "chromium-browser")


CHROMIUM_OWN = ("google.com", "googleapis.com", "gvt1.com", "gstatic.com")   # its updater and clock, not the page
QUIET = ["--no-first-run", "--hide-scrollbars", "--disable-background-networking", "--disable-component-update",
         "--disable-sync", "--disable-default-apps", "--disable-extensions", "--no-pings", "--disable-breakpad",
         "--disable-domain-reliability", "--proxy-bypass-list=<-loopback>"]


def browse(page: Path, tmp_path: Path, *mode: str) -> tuple[str, list[str]]:
    """Run headless Chromium on `page` with every request sent to a proxy of our own that reads
    the request line and hangs up; return its output and the hosts the page asked for
    (Chromium's own update and clock requests, which no flag silences, are left out)."""
    proxy = socket.socket()
    proxy.bind(("127.0.0.1", 0))
    proxy.listen(16)
    args = [chromium(), "--headless", "--disable-gpu", "--no-sandbox", f"--user-data-dir={tmp_path / 'profile'}",
            *QUIET, f"--proxy-server=http://127.0.0.1:{proxy.getsockname()[1]}", "--window-size=1200,3000",
            *mode, page.as_uri()]
    process = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    asked: list[str] = []
    try:
        while process.poll() is None or select.select([proxy], [], [], 0)[0]:
            if select.select([proxy], [], [], 0.2)[0]:
                asked.append(request_host(proxy.accept()[0]))
        out = process.stdout.read()
    finally:
        if process.poll() is None:
            process.kill()
        process.wait(timeout=60)
        process.stdout.close()
        proxy.close()
    assert process.returncode == 0, args
    return out, [host for host in asked if host and not host.endswith(CHROMIUM_OWN)]


def request_host(connection: socket.socket) -> str:
    """The host of a proxied request (`GET http://host/...` or `CONNECT host:443`); '' for none."""
    with connection:
        connection.settimeout(30)
        try:
            line = connection.recv(4096).split(b"\r\n", 1)[0].decode("latin-1")
        except OSError:
            return ""
    target = line.split(" ")[1] if line.count(" ") >= 2 else ""
    return re.sub(r"^[a-z]+://", "", target).split("/")[0].rsplit(":", 1)[0]


def png_colors(path: Path, limit: int = 64) -> int:
    """Distinct colors of an 8-bit RGB(A), non-interlaced PNG (what Chromium writes), up to `limit`."""
    data = path.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    offset, chunks, header = 8, [], None
    while offset < len(data):
        length, kind = struct.unpack(">I4s", data[offset:offset + 8])
        body = data[offset + 8:offset + 8 + length]
        header = body if kind == b"IHDR" else header
        chunks += [body] if kind == b"IDAT" else []
        offset += 12 + length
    width, height, depth, color_type, _, _, interlace = struct.unpack(">IIBBBBB", header)
    assert depth == 8 and color_type in (2, 6) and interlace == 0
    channels = 3 if color_type == 2 else 4
    raw, stride = zlib.decompress(b"".join(chunks)), width * channels
    previous, colors = bytearray(stride), set()
    for y in range(height):
        kind, line = raw[y * (stride + 1)], bytearray(raw[y * (stride + 1) + 1:(y + 1) * (stride + 1)])
        unfilter(kind, line, previous, channels)
        if y % 20 == 0:
            colors |= {bytes(line[x:x + channels]) for x in range(0, stride, channels * 4)}
            if len(colors) >= limit:
                return len(colors)
        previous = line
    return len(colors)


def unfilter(kind: int, line: bytearray, previous: bytearray, bpp: int) -> None:
    if kind == 1:
        for i in range(bpp, len(line)):
            line[i] = (line[i] + line[i - bpp]) & 0xFF
    elif kind == 2:
        line[:] = bytes((a + b) & 0xFF for a, b in zip(line, previous))
    elif kind == 3:
        for i in range(len(line)):
            left = line[i - bpp] if i >= bpp else 0
            line[i] = (line[i] + (left + previous[i]) // 2) & 0xFF
    elif kind == 4:
        for i in range(len(line)):
            a, b = (line[i - bpp] if i >= bpp else 0), previous[i]
            c = previous[i - bpp] if i >= bpp else 0
            p = a + b - c
            pa, pb, pc = abs(p - a), abs(p - b), abs(p - c)
            line[i] = (line[i] + (a if pa <= pb and pa <= pc else b if pb <= pc else c)) & 0xFF


def test_chromium_draws_the_demo_report_offline_without_attempting_a_request(demo, tmp_path):
    shot = tmp_path / "report.png"
    _, asked = browse(demo.report, tmp_path, f"--screenshot={shot}")
    assert asked == []
    assert png_colors(shot) > 16                     # charts and text, not a blank page
    dom, asked = browse(demo.report, tmp_path, "--dump-dom")
    assert asked == []
    drawn = parse(dom)
    assert len(list(drawn.iter(f"{SVG_NS}svg"))) >= 9
    for name in SECTIONS:
        section(drawn, name)
    # the cells and bars are drawn (how many depends on the hour the demo's history ends)
    assert all(list(section(drawn, name).iter(f"{SVG_NS}rect")) for name in ("calendar", "failure-rate", "syncs"))


def test_the_proxy_sees_a_page_that_does_make_a_request(tmp_path):
    """The check above can fail: a page without our policy that loads an image reaches the proxy."""
    page = tmp_path / "leaky.html"
    page.write_text('<!DOCTYPE html><title>x</title><img src="http://example.com/pixel.png" alt="">')
    _, asked = browse(page, tmp_path, "--dump-dom")
    assert asked == ["example.com"]


def test_png_colors_counts_a_blank_page_as_one_color(tmp_path):
    blank = tmp_path / "blank.png"
    rows = b"".join(b"\x02" + b"\x00" * 30 for _ in range(10))   # filter Up over white

    def chunk(kind: bytes, body: bytes) -> bytes:
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))

    first = b"\x00" + b"\xff" * 30
    blank.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", 10, 11, 8, 2, 0, 0, 0))
                      + chunk(b"IDAT", zlib.compress(first + rows)) + chunk(b"IEND", b""))
    assert png_colors(blank) == 1


def test_an_empty_archive_gives_a_valid_page_that_says_so(sqlite_url, tmp_path):
    page = write_html_report(sqlite_url, tmp_path / "empty.html", now=NOW).path.read_text(encoding="utf-8")
    document = parse(page)
    assert "No failures in this period." in page and "No finished jobs in this period." in page
    assert {s.get("id") for s in document.iter(f"{XHTML}section")} == set(SECTIONS)


def test_package_narrows_the_page_to_matching_packages(sqlite_url, tmp_path):
    wide_archive(sqlite_url, packages=12, days=10)
    page = write_html_report(sqlite_url, tmp_path / "one.html", "30d", package="number 11 ", now=NOW).path.read_text()
    assert "package number 11 to the warehouse" in page and "package number 12 to" not in page


# -- the numbers: read from the rollups, equal to the jobs themselves -------------------------------------------
def test_every_number_read_from_the_rollups_equals_the_jobs_themselves(db_url):
    """Totals, days, failing packages, runtime quantiles, records per output and retries come from
    the rollups (whole days) and the jobs (the partial days at both ends of the period and of the
    one before). After jobs finish, move day or package, change runtime and outputs, every number
    equals what the jobs themselves give (every write keeps the rollups)."""
    import random
    from collections import defaultdict

    from archiver.flows.report import parse_since, percentile
    from archiver.flows.report_html import QUANTILES, gather, success_cell
    from archiver.parse import parse_job
    from archiver.store import Archive

    rnd = random.Random(23)
    now = datetime(2026, 11, 28, 15, 37, tzinfo=timezone.utc)
    jobs: dict[int, dict] = {}

    def snap(job_id: int, created: datetime, updated: datetime) -> dict:
        status = rnd.choice(["completed", "completed", "failed", "stopped", "running"])
        scheduled = job_id % 3 != 0
        runtime = rnd.randint(1, 900)
        ended = {"failed_at": (created + timedelta(seconds=runtime)).isoformat()} if status == "failed" else {}
        errors = rnd.choice([f"Job {job_id} failed after {runtime}s", f"table 'orders_{job_id % 4}' is locked", ""])
        return {"id": job_id, "status": status, "package_id": rnd.choice([7, 8, 9]), "created_at": created.isoformat(),
                "updated_at": updated.isoformat(), "runtime_in_seconds": runtime, **ended,
                "errors": errors if status == "failed" else "",
                "attempts": rnd.choice([0, 0, 0, 1, 2]) if scheduled else None,
                "creator": {"type": "Schedule", "id": 40 + job_id % 2} if scheduled else {"type": "User", "id": 1},
                "outputs": [{"id": job_id * 10 + k, "name": f"out {k}", "component": {"name": name},
                             "records_count": rnd.randint(0, 5000)}
                            for k, name in enumerate(rnd.sample(["dest A", "dest B", "dest C"], rnd.randint(0, 2)))]}

    archive = Archive.open(db_url, account="acme")
    for job_id in range(1, 601):
        created = now - timedelta(minutes=rnd.randint(1, 20 * 24 * 60))
        jobs[job_id] = snap(job_id, created, created)
    for k in range(12):   # retry chains of schedule 50: a failed first attempt, a retry 10 minutes later
        first = now - timedelta(days=(11 - k) * 1.5, minutes=20)
        jobs[1000 + 2 * k] = {**snap(1000 + 2 * k, first, first), "status": "failed", "attempts": 0, "package_id": 7,
                              "creator": {"type": "Schedule", "id": 50}}
        jobs[1001 + 2 * k] = {**snap(1001 + 2 * k, first + timedelta(minutes=10), first), "attempts": 1, "package_id": 7,
                              "creator": {"type": "Schedule", "id": 50}}
    for start in range(0, len(jobs), 97):
        archive.write_jobs([parse_job(j) for j in list(jobs.values())[start:start + 97]])
    later = now + timedelta(hours=1)
    for job_id in rnd.sample(range(1, 601), 120):   # finish, move day or package, change runtime and outputs
        jobs[job_id] = snap(job_id, datetime.fromisoformat(jobs[job_id]["created_at"])
                            - timedelta(hours=rnd.choice([0, 0, 30])), later)
    archive.write_jobs([parse_job(j) for j in jobs.values() if j["updated_at"] == later.isoformat()])

    period = parse_since("7d", now=now)   # 15:37 seven days back: partial days at both ends
    with archive.engine.connect() as conn:
        page = gather(conn, period, None)
        runs = conn.execute(text("SELECT schedule_id, package_id, scheduled_at, attempts, outcome FROM schedule_runs")).all()
    archive.close()

    def created(j: dict) -> datetime:
        return datetime.fromisoformat(j["created_at"])

    def finished(j: dict) -> bool:
        return j["status"] in ("completed", "failed", "stopped")

    def totals_of(start: datetime, end: datetime) -> dict:
        inside = [j for j in jobs.values() if start <= created(j) < end]
        counts = {s: sum(j["status"] == s for j in inside) for s in ("completed", "failed", "stopped")}
        return {"jobs": len(inside), **counts, "retries": sum((j["attempts"] or 0) > 0 for j in inside),
                "run_seconds": sum(j["runtime_in_seconds"] for j in inside if finished(j)),
                "records": sum(o["records_count"] for j in inside for o in j["outputs"]),
                "finished": sum(counts.values()), "failure_rate": counts["failed"] / sum(counts.values())}

    assert page["totals"] == totals_of(period.start, period.end)
    assert page["previous"] == totals_of(period.previous.start, period.start)

    inside = [j for j in jobs.values() if period.start <= created(j) < period.end]
    by_day, by_package_day = defaultdict(lambda: defaultdict(int)), defaultdict(lambda: defaultdict(int))
    runtimes, records = defaultdict(list), defaultdict(lambda: defaultdict(float))
    for j in inside:
        day = created(j).date()
        for counts in (by_day[day], by_package_day[(j["package_id"], day)]):
            counts["jobs"] += 1
            counts["completed"] += j["status"] == "completed"
            counts["finished"] += finished(j)
            counts["failed"] += j["status"] == "failed"
        if finished(j):
            runtimes[(j["package_id"], day)].append(j["runtime_in_seconds"])
        if j["status"] == "completed":
            for o in j["outputs"]:
                records[(j["package_id"], o["component"]["name"])][day] += o["records_count"]
    assert page["daily"] == {day: dict(counts) for day, counts in by_day.items()}
    for row in page["failing"]["rows"]:
        package_id = int(row["package"].split()[-1])
        assert row["cells"] == {day: success_cell(dict(counts)) for (p, day), counts in by_package_day.items()
                                if p == package_id}
    assert {s["package"] for s in page["runtimes"]["series"]} == {"package 7", "package 8", "package 9"}
    for series in page["runtimes"]["series"]:
        package_id = int(series["package"].split()[-1])
        assert series["days"] == {day: {q: pytest.approx(percentile(values, q)) for q in QUANTILES}
                                  for (p, day), values in runtimes.items() if p == package_id}
    assert len(records) == 9 and len(page["records"]["series"]) == 8 and page["records"]["more"] == 1
    for series in page["records"]["series"]:
        name, output = series["name"].split(" → ")
        assert series["days"] == records[(int(name.split()[-1]), output)]

    failures = defaultdict(list)
    for j in inside:
        if j["status"] == "failed":
            failures[signature(j["errors"]) or "(no error text)"].append(j)
    assert page["signatures"]["failed"] == page["totals"]["failed"] == sum(map(len, failures.values()))
    assert {row["signature"]: row["jobs"] for row in page["signatures"]["rows"]} == {
        text: len(found) for text, found in failures.items()}
    for row in page["signatures"]["rows"]:
        found = failures[row["signature"]]
        ends = [datetime.fromisoformat(j.get("failed_at") or j["created_at"]) for j in found]
        assert (row["first"], row["last"]) == (min(ends), max(ends))
        assert row["packages"] == sorted({f"package {j['package_id']}" for j in found})
        assert max(j["id"] for j in found) == row["examples"][0][0] and len(row["examples"]) == 3
        assert {job_id for job_id, _ in row["examples"]} <= {j["id"] for j in found}

    want = defaultdict(lambda: defaultdict(int))
    for schedule_id, package_id, scheduled_at, attempts, outcome in runs:
        moment = scheduled_at if isinstance(scheduled_at, datetime) else datetime.fromisoformat(scheduled_at)
        moment = moment if moment.tzinfo else moment.replace(tzinfo=timezone.utc)
        if period.start <= moment < period.end:
            counts = want[(schedule_id, package_id)]
            counts["runs"] += 1
            counts["retried"] += attempts > 1
            counts["retries"] += attempts - 1
            counts["recovered"] += outcome == "recovered_on_retry"
            counts["failed"] += outcome == "failed"
    assert page["retries"]["total"] == {k: sum(c[k] for c in want.values())
                                        for k in ("runs", "retried", "retries", "recovered", "failed")}
    assert page["retries"]["total"]["retried"] > 0


def test_a_chart_is_the_same_bytes_whatever_the_hash_seed():
    """The same archive gives the same page: the day labels were a set, ordered by the seed."""
    code = ("from datetime import date, timedelta\n"
            "from archiver.flows.charts import matrix\n"
            "days = [date(2026, 1, 1) + timedelta(days=d) for d in range(90)]\n"
            "print(matrix('failing packages', days, [('p', {days[0]: (0.5, 'half')})]))\n")
    pages = {subprocess.run([sys.executable, "-c", code], env={**os.environ, "PYTHONHASHSEED": str(seed)},
                            capture_output=True, text=True, check=True).stdout for seed in range(4)}
    assert len(pages) == 1
