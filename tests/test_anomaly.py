"""The anomaly rules (archiver/anomaly.py), one by one at their boundaries, and the benchmark
of issue 15 on one fixed seed at a reduced size. Deterministic: fixed series, fixed seeds."""

from __future__ import annotations

import dataclasses
import math
import sys
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest

from archiver import anomaly
from archiver.anomaly import (DEFAULTS, FLAKY, SLOW, VOLUME_DROP, ZERO_RECORDS, Run, Thresholds, flaky_status,
                              score_history, score_run, score_running)

MONDAY = datetime(2024, 3, 4, 6, 0, tzinfo=timezone.utc)


def wobble(i: int, spread: float = 0.3) -> float:
    """A fixed, irregular factor within ±`spread` (no random numbers in these tests)."""
    return 1 + spread * math.sin(i * 2.399963)


def daily(runtimes, outputs=None, start=MONDAY, every=timedelta(days=1)) -> list[Run]:
    """Successful runs of package 7, one per `every`, job ids 1, 2, …"""
    outputs = outputs or (lambda i: (("out", 1000),))
    return [Run(i + 1, 7, start + i * every, "completed", seconds, 0, tuple(outputs(i)))
            for i, seconds in enumerate(runtimes)]


def then(history: list[Run], **changes) -> Run:
    """The run after the last of `history`, as its last run but with `changes`."""
    last = history[-1]
    step = last.created_at - history[-2].created_at
    return dataclasses.replace(last, job_id=last.job_id + 1, created_at=last.created_at + step, **changes)


def kinds(verdicts) -> list[str]:
    return [v.kind for v in verdicts]


# --- slow ------------------------------------------------------------------------------------

def test_a_tenfold_runtime_is_slow():
    history = daily([600 * wobble(i) for i in range(30)])
    [verdict] = score_run(then(history, runtime_s=6000), history)
    assert verdict.kind == SLOW and verdict.n == 30
    assert verdict.baseline_median == pytest.approx(600, rel=0.15)
    assert verdict.threshold < 6000 and "×" in verdict.message


def test_no_verdict_with_fewer_than_8_prior_runs():
    history = daily([600 * wobble(i) for i in range(8)])
    assert score_run(then(history, runtime_s=60_000), history[:7]) == []
    assert kinds(score_run(then(history, runtime_s=60_000), history)) == [SLOW]


def test_failed_prior_runs_are_not_in_the_baseline():
    runs = daily([600 * wobble(i) for i in range(12)])
    history = [dataclasses.replace(r, status="failed") if i % 2 else r for i, r in enumerate(runs)]
    assert score_run(then(history, runtime_s=60_000), history) == []  # 6 successful runs only


def test_the_run_under_test_is_never_in_its_own_baseline():
    """A 25 % jump on a steady series, with floors low enough to see it, is flagged: were the run
    in its baseline, it would pull the median and the spread towards itself."""
    sensitive = Thresholds(slow_ratio=1.1, slow_abs_s=0, spread_floor=0.01, slow_z=3)
    history = daily([1000 * wobble(i, 0.01) for i in range(20)])
    jump = then(history, runtime_s=1250)
    [verdict] = score_history(history + [jump], sensitive)
    assert verdict.job_id == jump.job_id and verdict.n == 20
    # 20 days hold 2 runs of the jump's weekday: the pooled median of exactly the 20 earlier runs.
    assert verdict.baseline_median == pytest.approx(math.exp(anomaly.median([math.log(r.runtime_s) for r in history])))


def test_a_one_percent_package_never_alarms_on_twenty_percent():
    history = daily([3600 * wobble(i, 0.01) for i in range(40)])
    jump = then(history, runtime_s=3600 * 1.2)
    assert score_run(jump, history) == []
    # The spread floor alone holds it, with the relative and absolute floors switched off ...
    assert score_run(jump, history, Thresholds(slow_ratio=1.0, slow_abs_s=0)) == []
    # ... which is what it is there for: a MAD of 1 % would make +20 % a z of 20.
    assert kinds(score_run(jump, history, Thresholds(slow_ratio=1.0, slow_abs_s=0, spread_floor=0.0))) == [SLOW]


@pytest.mark.parametrize("factor, flagged", [(2.9, False), (3.3, True)])
def test_the_relative_floor(factor, flagged):
    history = daily([600.0] * 30)
    assert bool(score_run(then(history, runtime_s=600 * factor), history)) is flagged


@pytest.mark.parametrize("seconds, flagged", [(59, False), (61, True)])
def test_the_absolute_floor(seconds, flagged):
    """10 s jobs: 3.5× is 35 s, under the 60 s floor; 60 s above the median is needed."""
    history = daily([10.0] * 30)
    assert bool(score_run(then(history, runtime_s=10 + seconds), history)) is flagged


def test_the_bound_is_every_floor_at_once():
    baseline = anomaly.Baseline(center=math.log(100), spread=0.5, mad=0.5 / anomaly.MAD_TO_SD, n=30)
    assert anomaly.slow_bound(baseline) == pytest.approx(max(100 * math.exp(DEFAULTS.slow_z * 0.5),
                                                             100 * DEFAULTS.slow_ratio, 160))


def test_a_heavy_monday_is_judged_against_mondays():
    """Mondays take 3.5 times as long: a normal Monday is not slow, a Monday at 3.5× Mondays is."""
    history = daily([(3500 if i % 7 == 0 else 1000) * wobble(i, 0.1) for i in range(35)])
    monday = then(history, runtime_s=3600)
    assert monday.created_at.weekday() == 0
    assert score_run(monday, history) == []
    [verdict] = score_run(dataclasses.replace(monday, runtime_s=3500 * 3.5), history)
    assert "Monday median" in verdict.message and verdict.baseline_median == pytest.approx(3500, rel=0.1)
    # Without weekday medians the pooled median (1,000 s) makes the normal Monday slow.
    assert kinds(score_run(monday, history, Thresholds(weekday_weeks=0))) == [SLOW]


def test_an_hourly_package_finds_its_weekday_a_week_back():
    """The last 30 hourly runs before Monday 00:00 are all Sunday's and Saturday's (4 times
    faster): the Monday median comes from the Mondays of earlier weeks."""
    start = MONDAY - timedelta(days=14, hours=6)
    runtimes = [(100 if (start + timedelta(hours=i)).weekday() >= 5 else 400) * wobble(i, 0.1) for i in range(14 * 24)]
    history = daily(runtimes, start=start, every=timedelta(hours=1))
    monday_morning = then(history, runtime_s=420)
    assert monday_morning.created_at == MONDAY.replace(hour=0)
    assert score_run(monday_morning, history) == []
    assert kinds(score_run(monday_morning, history, Thresholds(weekday_weeks=0))) == [SLOW]


def test_a_running_job_past_its_bound():
    history = daily([600 * wobble(i) for i in range(30)])
    running = then(history, status="running", runtime_s=None, outputs=())
    assert score_running(running, 1000, history) is None
    verdict = score_running(running, 5000, history)
    assert verdict.kind == SLOW and verdict.message.startswith("still running after 5,000 s")
    assert score_running(running, 5000, history[:5]) is None


# --- zero records -----------------------------------------------------------------------------

def test_zero_records_on_an_output_that_loads_records():
    history = daily([600] * 10, outputs=lambda i: (("orders", 500 + i), ("rejects", 0)))
    [verdict] = score_run(then(history, outputs=(("orders", 0), ("rejects", 0))), history)
    assert (verdict.kind, verdict.output_key, verdict.severity) == (ZERO_RECORDS, "orders", "critical")
    assert verdict.baseline_median == pytest.approx(504.5)


@pytest.mark.parametrize("empty, share, flagged", [(5, 0.5, False), (4, 0.5, True),  # the "median > 0"
                                                   (3, 0.75, False), (2, 0.75, True)])  # the default
def test_zero_records_only_on_an_output_that_usually_loads_records(empty, share, flagged):
    """Of 9 earlier runs, `empty` loaded nothing: a zero is an anomaly only when at least
    `zero_loaded_share` of them loaded records (0.5: the median is above zero)."""
    history = daily([600] * 9, outputs=lambda i: (("rejects", 0 if i < empty else 12),))
    verdicts = score_run(then(history, outputs=(("rejects", 0),)), history, Thresholds(zero_loaded_share=share))
    assert kinds(verdicts) == ([ZERO_RECORDS] if flagged else [])


def test_zero_records_needs_a_completed_job_and_8_prior_runs():
    history = daily([600] * 10)
    assert score_run(then(history, status="failed", outputs=(("out", 0),)), history) == []
    assert score_run(then(history, outputs=(("out", 0),)), history[:7]) == []


# --- volume drops ---------------------------------------------------------------------------

def volume_history(days: int = 30) -> list[Run]:
    return daily([600] * days, outputs=lambda i: (("orders", round(10_000 * wobble(i))), ("audit", 50)))


@pytest.mark.parametrize("count, flagged", [(3000, False), (2100, False), (1500, True), (40, True)])
def test_a_volume_drop_below_the_relative_floor(count, flagged):
    """Default floor −80 %: the median is about 10,000, so 2,100 passes and 1,500 is a drop."""
    history = volume_history()
    verdicts = score_run(then(history, outputs=(("orders", count), ("audit", 50))), history)
    assert kinds(verdicts) == ([VOLUME_DROP] if flagged else [])
    assert all(v.output_key == "orders" and v.score < 0 for v in verdicts)


def weekdays_only(weeks: int = 3) -> list[Run]:
    """A package that has run Monday to Friday only, loading about 10,000 orders a day."""
    days = [MONDAY + timedelta(weeks=w, days=d) for w in range(weeks) for d in range(5)]
    return [Run(i + 1, 7, moment, "completed", 600 * wobble(i), 0, (("orders", round(10_000 * wobble(i))),))
            for i, moment in enumerate(days)]


@pytest.mark.parametrize("count, flagged", [(2500, False), (1500, False), (500, True)])
def test_a_first_saturday_needs_twice_the_drop(count, flagged):
    """A weekday with fewer than 4 earlier runs may differ by itself (a first weekend loading a
    quarter): its volume floor is twice as wide, 10 % of the median instead of 20 %."""
    history = weekdays_only()
    saturday = dataclasses.replace(history[-1], job_id=99, created_at=MONDAY + timedelta(weeks=3, days=5),
                                   outputs=(("orders", count),))
    assert saturday.created_at.weekday() == 5
    verdicts = score_run(saturday, history)
    assert kinds(verdicts) == ([VOLUME_DROP] if flagged else [])
    assert all("few earlier Saturdays: floor ×2" in v.message for v in verdicts)
    assert kinds(score_run(saturday, history, Thresholds(new_weekday_margin=1.0))) == (
        [VOLUME_DROP] if count < 2000 else [])


def test_a_first_saturdays_runtime_has_the_usual_floor():
    history = weekdays_only()
    saturday = dataclasses.replace(history[-1], job_id=99, created_at=MONDAY + timedelta(weeks=3, days=5),
                                   runtime_s=600 * 3.5)
    [verdict] = score_run(saturday, history)
    assert verdict.kind == SLOW and "floor" not in verdict.message


def test_a_rise_is_flagged_only_when_asked():
    history = volume_history()
    surge = then(history, outputs=(("orders", 200_000), ("audit", 50)))
    assert score_run(surge, history) == []
    for direction in ("up", "both"):
        [verdict] = score_run(surge, history, Thresholds(volume_direction=direction))
        assert "rose" in verdict.message
    assert score_run(then(history, outputs=(("orders", 500), ("audit", 50))), history,
                     Thresholds(volume_direction="up")) == []


def test_an_output_that_disappears_is_flagged():
    history = volume_history()
    [verdict] = score_run(then(history, outputs=(("audit", 50),)), history)
    assert (verdict.kind, verdict.output_key) == (VOLUME_DROP, "orders")
    assert "missing" in verdict.message and verdict.score == 1.0


def test_an_occasional_output_missing_is_ordinary_and_no_outputs_is_missing_data():
    history = daily([600] * 30, outputs=lambda i: (("orders", 100),) + ((("extra", 5),) if i % 2 else ()))
    assert score_run(then(history, outputs=(("orders", 100),)), history) == []
    assert score_run(then(history, outputs=()), history) == []


# --- flaky ------------------------------------------------------------------------------------

def chain_runs(pattern: str, start: datetime = MONDAY, job: int = 100) -> list[Run]:
    """One chain a day: "." a clean first attempt, "r" a failure then a successful retry."""
    runs = []
    for day, kind in enumerate(pattern):
        moment = start + timedelta(days=day)
        if kind == "r":
            runs.append(Run(job, 9, moment, "failed", 30, 0))
            runs.append(Run(job + 1, 9, moment + timedelta(minutes=10), "completed", 600, 1))
        else:
            runs.append(Run(job, 9, moment, "completed", 600, 0))
        job += 2
    return runs


def test_a_package_retried_into_success_is_flaky():
    runs = chain_runs("...r.r.rr")
    verdicts = score_history(runs)
    assert kinds(verdicts) == [FLAKY, FLAKY]  # the first two retries had under 8 earlier runs
    assert verdicts[-1].job_id == runs[-1].job_id and verdicts[-1].n == 9
    assert verdicts[-1].score == pytest.approx(4 / 9)
    assert score_history(runs, Thresholds(flaky_share=0.5)) == []


def test_flaky_needs_5_chains_in_14_days():
    """Half the chains needed a retry, but 4 chains in 14 days are too few to judge; 5 are enough."""
    old = chain_runs("." * 10, start=MONDAY - timedelta(days=60), job=1)
    four = old + chain_runs("r..r", start=MONDAY)
    assert flaky_status(four, four[-1].created_at) is None
    five = old + chain_runs("r..r.", start=MONDAY)
    assert flaky_status(five, five[-1].created_at).score == pytest.approx(2 / 5)


def test_a_flaky_package_is_cleared_after_5_clean_first_attempts():
    runs = chain_runs("r.r.r" + "....")
    assert flaky_status(runs, runs[-1].created_at).kind == FLAKY
    runs = chain_runs("r.r.r" + ".....")
    assert flaky_status(runs, runs[-1].created_at) is None


def test_chains_group_first_attempts_and_retries():
    runs = chain_runs(".r.")
    assert [len(c.runs) for c in anomaly.chains(runs)] == [1, 2, 1]
    assert [c.clean for c in anomaly.chains(runs)] == [True, False, True]


# --- the whole history ------------------------------------------------------------------------

def test_scoring_a_history_is_scoring_each_run_with_its_past():
    history = volume_history(40)
    history[35] = dataclasses.replace(history[35], runtime_s=9000, outputs=(("orders", 0),))
    assert score_history(history) == [v for i, run in enumerate(history) for v in score_run(run, history[:i])]
    assert sorted(kinds(score_history(history))) == [SLOW, VOLUME_DROP, ZERO_RECORDS]


def test_the_history_index_gives_the_same_past_as_the_walk_back():
    """score_history takes each run's past from an index kept as it goes, score_run walks back:
    the same verdicts on hourly, 4-8-hourly and daily packages with weekday effects and retries."""
    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "bench"))
    from anomaly_history import generate

    history = generate(seed=3, packages=12, days=40)
    for runs in history.runs.values():
        assert score_history(runs) == [v for i, run in enumerate(runs) for v in score_run(run, runs[:i])]


def test_a_weekday_factor_within_its_noise_is_shrunk_away():
    assert anomaly.shrink(0.0, 0.1) == 0.0
    assert anomaly.shrink(0.05, 0.1) == pytest.approx(0.01)    # a quarter of its se²-weighted self
    assert anomaly.shrink(1.0, 0.1) == pytest.approx(0.990, abs=1e-3)


def test_thresholds_are_checked():
    with pytest.raises(ValueError):
        Thresholds(volume_direction="sideways")
    with pytest.raises(ValueError):
        Thresholds(volume_drop=80)
    with pytest.raises(ValueError):
        Thresholds(window=5)
    with pytest.raises(ValueError):
        Thresholds(new_weekday_margin=0.5)


# --- the benchmark, small -------------------------------------------------------------------

def test_the_benchmark_meets_the_targets_on_a_fixed_seed():
    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "bench"))
    import anomalies
    from anomaly_history import generate

    # Seed 13: at this size (4,800 package-days, a budget of 4.8 false alarms, 20 slowdowns of
    # each kind) single seeds scatter widely; of seeds 11-18 the defaults meet every target on
    # 12, 13 and 17 (docs/anomalies.md). A fixed seed where they do, so that any change losing
    # recall or adding false alarms fails here.
    history = generate(seed=13, packages=80, days=60, slow4=20, slow10=20, zero_records=20, volume_drops=20,
                       flaky=5)
    figures = anomalies.measure(history, anomalies.score(history))
    assert anomalies.missed(figures) == [], figures
    assert figures["recall slow4"] >= 0.8 and figures["false per 100 package-days"] <= 0.1, figures


def test_the_overhead_benchmarks_interval_for_the_median_round_is_the_binomial_one():
    """bench/anomaly_overhead.py's 95 % interval of the rounds' median ratio: the 2nd to the 8th of
    9 (P(Binomial(9, 1/2) <= 1) = 10/512 <= 2.5 %, <= 2 is 46/512), the 4th to the 12th of 15;
    none from 5 rounds, where even the whole range holds the median with only 94 % confidence."""
    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "bench"))
    from anomaly_overhead import median_interval

    shuffled = [1.09, 1.02, 1.15, 0.97, 1.11, 1.05, 1.30, 1.08, 1.01]
    assert median_interval(shuffled) == (1.01, 1.15)
    assert median_interval([float(i) for i in range(15, 0, -1)]) == (4.0, 12.0)
    assert median_interval([1.0, 1.1, 1.2, 1.3, 1.4]) is None


def test_the_benchmarks_miss_breakdown_replays_the_slow_rule():
    """bench/anomalies.py --misses re-applies the slow rule to each run's baseline to try an exact
    centre or spread: with the detector's own it must find exactly what the rule found, and every
    4× slowdown falls in one cause."""
    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "bench"))
    import anomalies
    from anomaly_history import generate

    history = generate(seed=13, packages=40, days=45, slow4=12, slow10=4, zero_records=4, volume_drops=4, flaky=2)
    found = anomalies.misses_of(history)
    assert sum(found["causes"].values()) == found["injected"] == 12
    assert found["causes"]["found"] == found["found"]
    assert found["grid"][("detector", DEFAULTS.slow_ratio)] == (found["found"], found["false alarms"])
    # the exact centre and spread find none of those below the ratio floor of the exact centre
    exact = found["grid"][("exact both", DEFAULTS.slow_ratio)][0]
    assert 0 < exact <= found["injected"] - found["causes"]["below the ratio floor of the exact centre too"]


def test_a_timeline_filled_in_any_order_gives_the_walk_backs_past():
    """A sync writes a package's jobs in batches, not always in time order, and writes some again:
    the Timeline kept across batches still gives each run the Past that past_of walks back to."""
    import random

    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "bench"))
    from anomaly_history import generate

    for runs in list(generate(seed=4, packages=6, days=30).runs.values()):
        keys = list(range(len(runs)))
        random.Random(len(runs)).shuffle(keys)
        timeline = anomaly.Timeline(DEFAULTS)
        for i in keys:
            timeline.add(i, anomaly.sample(dataclasses.replace(runs[i], status="failed")))
            timeline.discard(i, anomaly.sample(dataclasses.replace(runs[i], status="failed")))
            timeline.add(i, anomaly.sample(runs[i]))
        samples = [anomaly.sample(run) for run in runs]
        for i, run in enumerate(runs):
            assert groups(timeline.past(i, run.created_at)) == groups(anomaly.past_of(samples, i, run.created_at))


def test_a_timeline_that_forgets_its_oldest_samples_gives_what_one_of_the_rest_gives():
    """A first sync trims each package's kept runs to a suffix (PackageRuns.trim): the Timeline
    drops its oldest samples in place, moving what it memoised of the rest (weekday groups, sorted
    spans) along, and then gives every later run the Past, baselines and quick bounds of a Timeline
    built from the samples it kept."""
    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "bench"))
    from anomaly_history import generate

    for runs in list(generate(seed=8, packages=6, days=60).runs.values()):
        samples = [anomaly.sample(run) for run in runs]
        timeline = anomaly.Timeline(DEFAULTS)
        for i, s in enumerate(samples):
            timeline.add(i, s)
        for cut in (len(runs) // 5, len(runs) // 3, len(runs) // 2):
            for i in range(cut, len(runs)):   # memoise the groups of the indexes before the cut
                timeline.past(i, runs[i].created_at)
            timeline.forget_before(cut)
            kept = anomaly.Timeline(DEFAULTS)
            for i in range(cut, len(runs)):
                kept.add(i, samples[i])
            for i in range(cut, len(runs)):
                forgot, fresh = timeline.past(i, runs[i].created_at), kept.past(i, runs[i].created_at)
                assert groups(forgot) == groups(fresh)
                assert same(anomaly.baseline_of(forgot, anomaly.RUNTIME), anomaly.baseline_of(fresh, anomaly.RUNTIME))
                assert anomaly.centre_bounds(forgot, anomaly.RUNTIME) == anomaly.centre_bounds(fresh, anomaly.RUNTIME)


def test_sliding_medians_give_what_sorting_each_span_afresh_gives():
    """A Timeline keeps each measure's values over the span last asked about sorted, and moves it
    (bisect out, bisect in) when the next run asks about a later span. On random and adversarial
    values (ties, a measure some samples lack, infinities, a NaN) and spans that slide, jump back,
    grow and shrink, while samples are appended, inserted in the middle, discarded and forgotten,
    its count and median are those of sorting the span afresh, to the bit."""
    import random

    rng = random.Random(20261207)
    draws = [lambda: rng.gauss(5, 2), lambda: rng.choice((1.0, 1.0, 2.0, 3.5)), lambda: None,
             lambda: rng.choice((-math.inf, math.inf, 0.0))]
    for case in range(60):
        keyed, measure, next_key, span = anomaly._Keyed(), ("m",), 0, (0, 0)
        weights = [8, 4 if case % 2 else 0, 2, 1 if case % 3 == 0 else 0]
        for step in range(400):
            op = rng.random()
            if op < 0.5 or not keyed.keys:
                value = rng.choices(draws, weights)[0]()
                if case == 7 and 200 <= step < 300:
                    value = math.nan   # a few: the sliding order is then no order
                key = next_key = next_key + 1
                if op < 0.05 and keyed.keys:   # in the middle
                    key = rng.choice(keyed.keys) - 0.5
                keyed.add(key, anomaly.Sample(True, 0, 0, {}, {} if value is None else {measure: value}))
            elif op < 0.53:
                keyed.discard(rng.choice(keyed.keys))
            elif op < 0.55:
                keyed.forget_before(rng.choice(keyed.keys))
            else:
                n = len(keyed.samples)
                end = min(n, span[1] + rng.choice((0, 1, 1, 1, 2, 5))) if rng.random() < 0.9 else rng.randrange(n + 1)
                span = (max(0, end - rng.choice((30, 30, 30, 8, 1, 40))), end)
                values = [v for s in keyed.samples[span[0]:span[1]] if (v := s.logs.get(measure)) is not None]
                expected = (len(values), anomaly.median(values) if values else None)
                assert repr(keyed.median(*span, measure)) == repr(expected), (case, step)
    keyed = anomaly._Keyed()   # a NaN moved past: bisecting for it would remove another value
    for key, value in enumerate((4.0, math.nan, 1.0, 4.0, 3.0, 2.0)):
        keyed.add(key, anomaly.Sample(True, 0, 0, {}, {("m",): value}))
        values = [s.logs[("m",)] for s in keyed.samples[max(0, key - 3):key + 1]]
        assert repr(keyed.median(max(0, key - 3), key + 1, ("m",))) == repr((len(values), anomaly.median(values)))


def groups(past: anomaly.Past) -> tuple:
    """A Past without its empty weekday groups (past_of keeps the run's own, even empty)."""
    return past.prior, {day: runs for day, runs in past.groups.items() if runs}, past.weekday


def test_the_timelines_memoised_weekday_groups_give_the_walk_backs_baselines():
    """A Timeline hands out the same weekday Group (with its medians memoised) while that weekday
    gains no run: every baseline equals the one computed afresh from past_of, also after an
    earlier run is replaced (which must drop the memo of its weekday)."""
    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "bench"))
    from anomaly_history import generate

    for runs in list(generate(seed=6, packages=8, days=50).runs.values()):
        runs = list(runs)
        sampled = [anomaly.sample(r) for r in runs]   # the walk-back's samples (sample() is pure),
        timeline = anomaly.Timeline(DEFAULTS)          # kept in step with `runs` as they are rewritten
        for i, run in enumerate(runs):
            if i % 17 == 16:   # rewrite an earlier run: a new runtime and output count
                j = i - 9
                timeline.discard(j, anomaly.sample(runs[j]))
                runs[j] = dataclasses.replace(runs[j], runtime_s=(runs[j].runtime_s or 1) * 1.7,
                                              outputs=tuple((k, (c or 0) // 2) for k, c in runs[j].outputs))
                sampled[j] = anomaly.sample(runs[j])
                timeline.add(j, anomaly.sample(runs[j]))
            walked = anomaly.past_of(sampled, i, run.created_at)   # reads samples[:i] only
            for _ in range(2):   # the second time from the memo
                indexed = timeline.past(i, run.created_at)
                for measure in [anomaly.RUNTIME, *(key for key, _ in run.outputs)]:
                    for spread in (False, True):
                        assert same(anomaly.baseline_of(indexed, measure, DEFAULTS, spread),
                                    anomaly.baseline_of(walked, measure, DEFAULTS, spread))
            timeline.add(i, anomaly.sample(run))


def same(a, b) -> bool:
    """Baselines equal to the bit (NaN equal to NaN)."""
    if a is None or b is None:
        return a is b
    return all(x == y or (isinstance(x, float) and math.isnan(x) and math.isnan(y))
               for x, y in zip(dataclasses.astuple(a), dataclasses.astuple(b)))


def test_flaky_in_one_pass_is_flaky_of_the_chains():
    """flaky_of_runs (what scoring a successful retry uses) gives flaky_verdict(chains(...)) on
    every two-week window of packages with retries, and on hand-made edge cases."""
    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "bench"))
    from anomaly_history import generate

    history = generate(seed=7, packages=12, days=40, flaky=4)
    flagged = 0
    for runs in history.runs.values():
        for end in range(len(runs)):
            since = runs[end].created_at - timedelta(days=DEFAULTS.flaky_days)
            window = [*anomaly.recent_runs(runs, end, since), runs[end]]
            expected = anomaly.flaky_verdict(anomaly.chains(window))
            assert anomaly.flaky_of_runs(window) == expected
            flagged += expected is not None
    assert flagged
    run = lambda i, status, attempts: Run(i, 7, MONDAY + timedelta(hours=i), status, 60.0, attempts)  # noqa: E731
    for window in ([], [run(1, "completed", 1)], [run(1, "failed", 2), run(2, "completed", 3)],
                   [run(i, "failed" if i % 2 else "completed", i % 2 == 0) for i in range(1, 14)],
                   [run(i, "completed", 0) for i in range(6)] + [run(6, "failed", 0), run(7, "completed", 1)]):
        assert anomaly.flaky_of_runs(window) == anomaly.flaky_verdict(anomaly.chains(window))


def test_the_centre_bounds_hold_the_exact_centre_so_the_quick_looks_change_no_verdict():
    """centre_bounds (the quick look of slow and volume verdicts, without the weekday factors'
    spread) brackets baseline_of's centre on every run of hourly to daily packages with weekday
    effects, and is None exactly where it is; bounds collapsed to the plain median (dropping the
    factors' range) would not hold it."""
    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "bench"))
    from anomaly_history import generate

    checked = widened = 0
    for runs in generate(seed=8, packages=10, days=60).runs.values():
        for end, past in anomaly.pasts(runs):
            for measure in [anomaly.RUNTIME, *(key for key, _ in runs[end].outputs)]:
                exact, bounds = anomaly.baseline_of(past, measure), anomaly.centre_bounds(past, measure)
                assert (exact is None) == (bounds is None)
                if exact is not None:
                    assert bounds[0] <= exact.center <= bounds[1]
                    checked += 1
                    widened += bounds[0] < bounds[1] and exact.by_weekday is False and exact.center != (
                        anomaly.median([v for s in past.prior if (v := s.logs.get(measure)) is not None]))
    assert checked > 5000 and widened > 100   # the weekday factors moved many centres off the plain median
