<%!
    def pct(value):
        return "–" if value is None else f"{value:.1%}"

    def num(value):
        return f"{value:,}"

    def hours(seconds):
        return f"{seconds / 3600:,.1f} h"

    def stamp(moment):
        return "–" if moment is None else f"{moment:%Y-%m-%d %H:%M} UTC"

    def change(now, before, lower_is_better=False):
        if not before:
            return "no earlier data" if now else "–"
        delta = (now - before) / before
        if abs(delta) < 0.0005:
            return "unchanged"
        word = "▲" if delta > 0 else "▼"
        better = (delta < 0) == lower_is_better
        return f"{word} {abs(delta):.1%} ({'better' if better else 'worse'})" if lower_is_better is not None else f"{word} {abs(delta):.1%}"

    def seconds(value):
        return "–" if value is None else (f"{value:,.0f} s" if value < 600 else f"{value / 60:,.1f} min")
%>\
<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta http-equiv="Content-Security-Policy" content="default-src 'none'; style-src 'unsafe-inline'; img-src data:; base-uri 'none'; form-action 'none'">
<meta name="viewport" content="width=device-width, initial-scale=1">
<meta name="referrer" content="no-referrer">
<title>Xplenty archive report: ${stamp(period.start)} to ${stamp(period.end)}</title>
<style>
body{font:14px/1.45 system-ui,-apple-system,"Segoe UI",Roboto,sans-serif;color:#111;background:#fff;margin:0 auto;max-width:1000px;padding:0 16px 40px}
h1{font-size:22px;margin:18px 0 4px}h2{font-size:18px;margin:28px 0 6px;border-bottom:2px solid #0072B2;padding-bottom:2px}h3{font-size:15px;margin:14px 0 4px}
p.note,.muted{color:#555}
table{border-collapse:collapse;margin:6px 0;font-size:13px}th,td{border:1px solid #ccc;padding:2px 6px;text-align:left;vertical-align:top}
th{background:#f2f2f2}td.n{text-align:right;font-variant-numeric:tabular-nums}
td.err{font-family:ui-monospace,Menlo,Consolas,monospace;white-space:pre-wrap;word-break:break-word;max-width:560px}
svg{max-width:100%;height:auto;display:block;font-size:11px;font-family:inherit}
details{margin:4px 0 12px}summary{cursor:pointer;color:#0072B2}
.legend{list-style:none;padding:0;margin:4px 0;display:flex;flex-wrap:wrap;gap:12px;font-size:12px}
.swatch{display:inline-block;width:12px;height:12px;margin-right:4px;border:1px solid #888;vertical-align:-2px}
.state-failing,.state-sync_failing{font-weight:bold;color:#a33c00}.state-stale,.state-late,.state-stuck,.state-sync_stale{font-weight:bold;color:#7a5200}
.state-anomalous{font-weight:bold;color:#7b3f69}.state-ok{color:#00603f}
.cards{display:flex;flex-wrap:wrap;gap:10px}.card{border:1px solid #ccc;border-radius:4px;padding:6px 10px;min-width:130px}
.card b{display:block;font-size:20px}.card span{font-size:12px;color:#444}
nav ul{margin:4px 0;padding-left:18px;columns:3}
@media print{body{max-width:none;font-size:11px}nav{display:none}details{display:block}details>summary{display:none}
 details::details-content{content-visibility:visible;display:block}h2{break-after:avoid}svg,table,.card{break-inside:avoid}a{color:#000;text-decoration:none}}
</style>
</head>
<body>
<header>
<h1>Xplenty archive report</h1>
<p class="muted">Jobs created from ${stamp(period.start)} to ${stamp(period.end)} (--since ${since})${f"; packages matching {package!r}" if package else ""}. Generated ${stamp(now)} from the archive by <code>archiver report html</code>. No script, no external resource: this file is the whole report.</p>
<nav aria-label="Sections"><ul>
<li><a href="#health">Health board</a></li><li><a href="#totals">Totals</a></li><li><a href="#calendar">Daily success</a></li>
<li><a href="#failure-rate">Failure rate per package</a></li><li><a href="#runtimes">Runtimes</a></li><li><a href="#records">Records per output</a></li>
<li><a href="#errors">Failures by error</a></li><li><a href="#retries">Retries</a></li><li><a href="#syncs">Sync history</a></li>
</ul></nav>
</header>

<section id="health" aria-labelledby="h-health">
<h2 id="h-health">Health board</h2>
<p>${num(board["alerts"])} open alert(s), ${num(board["critical"])} critical (the rules of <code>archiver check</code>; this report records nothing). Checked ${stamp(board["checked_at"])}; absences judged as of ${stamp(board["as_of"])}.</p>
<table>
<thead><tr><th scope="col">State</th><th scope="col">Subject</th><th scope="col">Name</th><th scope="col">Why</th></tr></thead>
<tbody>
% for s in board["subjects"]:
<tr><td class="state-${s.state}">${s.state}</td><td>${s.label}</td><td>${s.name}</td><td>${s.why}</td></tr>
% endfor
% for a in board["orphans"]:
<tr><td class="state-${a.kind}">${a.kind}</td><td>${a.key}</td><td></td><td>${a.message}</td></tr>
% endfor
</tbody>
</table>
</section>

<section id="totals" aria-labelledby="h-totals">
<h2 id="h-totals">Totals</h2>
<p class="note">Against the previous period of the same length (${stamp(period.previous.start)} to ${stamp(period.previous.end)}).</p>
<div class="cards">
<%
    cards = [("Jobs", num(totals["jobs"]), change(totals["jobs"], previous["jobs"], None)),
             ("Failed", num(totals["failed"]), change(totals["failed"], previous["failed"], True)),
             ("Failure rate", pct(totals["failure_rate"]), change(totals["failure_rate"] or 0, previous["failure_rate"] or 0, True)),
             ("Retries", num(totals["retries"]), change(totals["retries"], previous["retries"], True)),
             ("Run time", hours(totals["run_seconds"]), change(totals["run_seconds"], previous["run_seconds"], None)),
             ("Records written", num(totals["records"]), change(totals["records"], previous["records"], None))]
%>
% for name, value, delta in cards:
<div class="card"><span>${name}</span><b>${value}</b><span>${delta}</span></div>
% endfor
</div>
<table>
<thead><tr><th scope="col"></th><th scope="col">This period</th><th scope="col">Previous period</th></tr></thead>
<tbody>
% for key, name in (("jobs", "Jobs"), ("completed", "Completed"), ("failed", "Failed"), ("stopped", "Stopped"), ("retries", "Retries (attempt > 0)"), ("records", "Records written")):
<tr><th scope="row">${name}</th><td class="n">${num(totals[key])}</td><td class="n">${num(previous[key])}</td></tr>
% endfor
<tr><th scope="row">Failure rate</th><td class="n">${pct(totals["failure_rate"])}</td><td class="n">${pct(previous["failure_rate"])}</td></tr>
<tr><th scope="row">Run time</th><td class="n">${hours(totals["run_seconds"])}</td><td class="n">${hours(previous["run_seconds"])}</td></tr>
</tbody>
</table>
</section>

<section id="calendar" aria-labelledby="h-calendar">
<h2 id="h-calendar">Daily success rate</h2>
<% cells = {day: success_cell(stats) for day, stats in daily.items()} %>
${charts.calendar("Calendar of the daily share of finished jobs that completed", days[0], days[-1], cells)}
${charts.legend(charts.RATE_LEGEND)}
<details><summary>Table of the days with jobs</summary>
<table><thead><tr><th scope="col">Day</th><th scope="col">Jobs</th><th scope="col">Finished</th><th scope="col">Failed</th><th scope="col">Succeeded</th></tr></thead><tbody>
% for day in sorted(daily):
<tr><td>${day}</td><td class="n">${daily[day]["jobs"]}</td><td class="n">${daily[day]["finished"]}</td><td class="n">${daily[day]["failed"]}</td><td class="n">${pct(cells[day][0])}</td></tr>
% endfor
</tbody></table></details>
</section>

<section id="failure-rate" aria-labelledby="h-failure-rate">
<h2 id="h-failure-rate">Failure rate per package over time</h2>
% if failing["rows"]:
<p class="note">The ${len(failing["rows"])} packages with the most failures (of ${failing["packages"]} that ran)${f"; {failing['more']} more packages failed at least once" if failing["more"] else ""}. Each cell is a day, colored by the share of its finished jobs that completed.</p>
${charts.matrix("Daily success share of the packages that failed most", days, [(r["package"], r["cells"]) for r in failing["rows"]])}
${charts.legend(charts.RATE_LEGEND)}
<details><summary>Table</summary>
<table><thead><tr><th scope="col">Package</th><th scope="col">Jobs</th><th scope="col">Failed</th><th scope="col">Failure rate</th></tr></thead><tbody>
% for r in failing["rows"]:
<tr><td>${r["package"]}</td><td class="n">${r["jobs"]}</td><td class="n">${r["failed"]}</td><td class="n">${pct(r["failure_rate"])}</td></tr>
% endfor
</tbody></table></details>
% else:
<p>No failures in this period.</p>
% endif
</section>

<section id="runtimes" aria-labelledby="h-runtimes">
<h2 id="h-runtimes">Runtime per package</h2>
<p class="note">Finished jobs (completed, failed or stopped: the runs <code>archiver report runtimes</code> ranks) per day: the median (p50, line) inside the p5–p95 band (shaded); ◆ marks a run the archiver judged slow (job_anomalies).${f" The {len(runtimes['series'])} packages with the most runs are shown; {runtimes['more']} more are not." if runtimes["more"] else ""}</p>
% for s in runtimes["series"]:
<h3>${s["package"]} <span class="muted">(${num(s["runs"])} runs)</span></h3>
${charts.line_band(f"Daily runtime of {s['package']}: p50 line, p5 to p95 band", days,
                   {d: q[50] for d, q in s["days"].items()}, {d: q[5] for d, q in s["days"].items()},
                   {d: q[95] for d, q in s["days"].items()}, s["marks"], " s")}
<details><summary>Table${f" and {len(s['marks'])} slow run(s)" if s["marks"] else ""}</summary>
% if s["marks"]:
<ul>
% for day, value, text in s["marks"]:
<li>${day}: ${seconds(value)}, ${text}</li>
% endfor
</ul>
% endif
<table><thead><tr><th scope="col">Day</th><th scope="col">p5</th><th scope="col">p50</th><th scope="col">p95</th></tr></thead><tbody>
% for day in sorted(s["days"]):
<tr><td>${day}</td><td class="n">${seconds(s["days"][day][5])}</td><td class="n">${seconds(s["days"][day][50])}</td><td class="n">${seconds(s["days"][day][95])}</td></tr>
% endfor
</tbody></table></details>
% endfor
% if not runtimes["series"]:
<p>No finished jobs in this period.</p>
% endif
</section>

<section id="records" aria-labelledby="h-records">
<h2 id="h-records">Records per output over time</h2>
% if records["series"]:
<p class="note">Records written per day by completed jobs, for the ${len(records["series"])} outputs written most often${f" ({records['more']} more outputs not shown)" if records["more"] else ""}; ◆ marks a zero-record or volume-drop verdict.</p>
${charts.lines("Records written per day per output", days, [(s["name"], s["days"]) for s in records["series"]], records["marks"])}
<ul class="legend">
% for i, s in enumerate(records["series"]):
<li><span class="swatch" style="background:${charts.SERIES[i % len(charts.SERIES)]}"></span>${s["name"]}${("", " (dashed)", " (dotted)")[i % 3]}</li>
% endfor
</ul>
<details><summary>Table</summary>
<table><thead><tr><th scope="col">Output</th><th scope="col">Runs</th><th scope="col">Records</th><th scope="col">Per day</th></tr></thead><tbody>
% for s in records["series"]:
<tr><td>${s["name"]}</td><td class="n">${num(s["runs"])}</td><td class="n">${num(s["records"])}</td><td>${"; ".join(f"{d}: {v:,.0f}" for d, v in sorted(s["days"].items()))}</td></tr>
% endfor
</tbody></table>
% if records["marks"]:
<ul>
% for day, value, text in records["marks"]:
<li>${day}: ${text}</li>
% endfor
</ul>
% endif
</details>
% else:
<p>No outputs recorded in this period.</p>
% endif
</section>

<section id="errors" aria-labelledby="h-errors">
<h2 id="h-errors">Failures by error</h2>
% if signatures["rows"]:
<p class="note">${num(signatures["failed"])} failed jobs, grouped by their error text with numbers, ids and quoted values masked${f"; {signatures['more']} rarer signatures not shown" if signatures["more"] else ""}.</p>
<table><thead><tr><th scope="col">Error signature</th><th scope="col">Jobs</th><th scope="col">First seen</th><th scope="col">Last seen</th><th scope="col">Packages</th><th scope="col">Example jobs</th></tr></thead><tbody>
% for s in signatures["rows"]:
<tr><td class="err">${s["signature"]}</td><td class="n">${num(s["jobs"])}</td><td>${stamp(s["first"])}</td><td>${stamp(s["last"])}</td><td>${", ".join(s["packages"][:3])}${f" and {len(s['packages']) - 3} more" if len(s["packages"]) > 3 else ""}</td><td>\
% for job_id, url in s["examples"]:
% if link(url):
<a href="${link(url)}" rel="noreferrer noopener">${job_id}</a> \
% else:
${job_id} \
% endif
% endfor
</td></tr>
% endfor
</tbody></table>
% else:
<p>No failures in this period.</p>
% endif
</section>

<section id="retries" aria-labelledby="h-retries">
<h2 id="h-retries">Retries and recovered schedules</h2>
<% t = retries["total"] %>
<p>${num(t["runs"])} scheduled runs; ${num(t["retried"])} needed a retry (${num(t["retries"])} retries in all); ${num(t["recovered"])} recovered on a retry; ${num(t["failed"])} failed after their last attempt (schedule_attempts).</p>
% if retries["rows"]:
<table><thead><tr><th scope="col">Schedule</th><th scope="col">Package</th><th scope="col">Runs</th><th scope="col">Retried</th><th scope="col">Retries</th><th scope="col">Recovered</th><th scope="col">Failed</th></tr></thead><tbody>
% for r in retries["rows"]:
<tr><td>${r["schedule"]}</td><td>${r["package"]}</td><td class="n">${r["runs"]}</td><td class="n">${r["retried"]}</td><td class="n">${r["retries"]}</td><td class="n">${r["recovered"]}</td><td class="n">${r["failed"]}</td></tr>
% endfor
</tbody></table>
% if retries["more"]:
<p class="note">${retries["more"]} more schedule and package pairs with retries or failures.</p>
% endif
% endif
</section>

<section id="syncs" aria-labelledby="h-syncs">
<h2 id="h-syncs">The archiver's own syncs</h2>
% if syncs["outcomes"]:
<p>${"; ".join(f"{outcome}: {runs:,} runs, {credits:,} credits" for outcome, runs, credits in syncs["outcomes"])}.</p>
${charts.bars("API credits used per day by the archiver", days, {d: v["credits"] for d, v in syncs["days"].items()})}
<details><summary>Table per day</summary>
<table><thead><tr><th scope="col">Day</th><th scope="col">Runs</th><th scope="col">Not ok</th><th scope="col">Credits</th></tr></thead><tbody>
% for day in sorted(syncs["days"]):
<tr><td>${day}</td><td class="n">${syncs["days"][day]["runs"]}</td><td class="n">${syncs["days"][day]["not_ok"]}</td><td class="n">${num(syncs["days"][day]["credits"])}</td></tr>
% endfor
</tbody></table></details>
<h3>Latest runs</h3>
<table><thead><tr><th scope="col">Run</th><th scope="col">Started</th><th scope="col">Mode</th><th scope="col">Outcome</th><th scope="col">Requested</th><th scope="col">New</th><th scope="col">Updated</th><th scope="col">Failed</th><th scope="col">Credits</th><th scope="col">Message</th></tr></thead><tbody>
% for r in syncs["last"]:
<tr><td class="n">${r.id}</td><td>${stamp(r.started_at)}</td><td>${r.mode}</td><td>${r.outcome}</td><td class="n">${r.requested}</td><td class="n">${r.inserted}</td><td class="n">${r.updated}</td><td class="n">${r.failed}</td><td class="n">${r.credits_used}</td><td>${r.message}</td></tr>
% endfor
</tbody></table>
% else:
<p>No sync runs in this period.</p>
% endif
</section>
</body>
</html>
