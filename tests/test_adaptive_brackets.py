"""Adaptive bracket selection for Hyperband: keep rates, bracket worth, weights, records, restore."""

from __future__ import annotations

import itertools
import math

import _objectives as obj
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import amtlib
from amtlib import Tuner, ValidationError
from amtlib.records import TrainingJobStatus, Trial
from amtlib.reporting import Action
from amtlib.space import ContinuousParameter, SearchSpace
from amtlib.strategies.hyperband import (
    PRIOR_JOBS,
    HyperbandStrategy,
    adaptive_bracket_scores,
    bracket_weights,
    hyperband_config,
    keep_rate,
)

SPACE = SearchSpace({"x": ContinuousParameter(0.0, 1.0)})


def brute_keep_rate(low, top, eta):
    """Enumerate every group of eta jobs: is the top-level best also (weakly) best below?"""
    groups = list(itertools.combinations(range(len(top)), eta))
    kept = 0
    for group in groups:
        winner = min(group, key=lambda i: top[i])
        if sum(top[i] == top[winner] for i in group) > 1:
            continue  # no strict winner at the top: not counted as kept
        kept += all(low[winner] <= low[i] for i in group)
    return kept / len(groups)


@settings(max_examples=60, deadline=None)
@given(
    st.lists(st.tuples(st.integers(0, 5), st.integers(0, 9)), min_size=3, max_size=9),
    st.integers(2, 3),
)
def test_keep_rate_counts_the_groups_it_says(pairs, eta):
    low, top = (np.array(v, dtype=float) for v in zip(*pairs, strict=True))
    assert keep_rate(low, top, eta) == pytest.approx(brute_keep_rate(low, top, eta))


def test_keep_rate_is_one_for_a_perfect_ranking_zero_reversed_chance_when_random():
    top = np.arange(30.0)
    assert keep_rate(top * 2 + 1, top, 3) == 1.0
    assert keep_rate(-top, top, 3) == 0.0
    rng = np.random.default_rng(0)
    rates = [keep_rate(rng.random(30), rng.random(30), 3) for _ in range(200)]
    # Independent levels keep the best of 3 one time in 3; the mean of 200 seeded draws of
    # a rate with sd about 0.09 lies within 0.03 of it.
    assert abs(np.mean(rates) - 1 / 3) < 0.03
    # Too few jobs to form a group: chance.
    assert keep_rate(np.array([1.0]), np.array([2.0]), 3) == pytest.approx(1 / 3)


def test_bracket_scores_are_one_at_chance_and_eta_to_the_decisions_when_perfect():
    assert adaptive_bracket_scores([1 / 3] * 3, 3) == pytest.approx([1, 1, 1, 1])
    assert adaptive_bracket_scores([1.0] * 3, 3) == pytest.approx([27, 9, 3, 1])
    # A useless first level makes the most aggressive bracket worth nothing; the next is fine.
    assert adaptive_bracket_scores([0.0, 1.0, 1.0], 3) == pytest.approx([0, 9, 3, 1])


def adaptive(seed=0, **extra):
    return HyperbandStrategy(
        SPACE,
        seed=seed,
        config={"max_resource": 27, "bracket_selection": "adaptive", **extra},
    )


def feed(strategy, jobs, curve):
    """Launch `jobs` jobs, each reporting curve(job, step) for steps 1..27 while it continues."""
    for _ in range(jobs):
        strategy.ask(1)
        index = strategy.n_asked - 1
        for step in range(1, 28):
            if strategy.on_report(index, step, curve(index, step)).action is not Action.CONTINUE:
                break
        strategy.tell(Trial(index, {}, TrainingJobStatus.COMPLETED, curve(index, step)))


def test_without_top_level_data_the_weights_are_hyperbands():
    fixed = HyperbandStrategy(
        SPACE, seed=0, config={"max_resource": 27, "bracket_selection": "fixed"}
    )
    strategy = adaptive()
    assert strategy.bracket_weights() == pytest.approx(fixed.bracket_weights())
    assert [strategy.bracket_of(i) for i in range(40)] == [fixed.bracket_of(i) for i in range(40)]


def test_predictive_early_levels_move_the_budget_to_aggressive_brackets():
    quality = np.random.default_rng(1).random(400)
    strategy = adaptive()
    # Curves that never cross: the ranking at step 1 is the ranking at step 27.
    feed(strategy, 150, lambda j, s: quality[j] + 1.0 / s)
    weights = strategy.bracket_weights()
    hyperband = bracket_weights(3, 3)
    assert weights[0] > hyperband[0] + 0.15 and weights[-1] < hyperband[-1] / 3
    # Every level ranks perfectly: each rate is a perfect 1 over the top-level jobs, shrunk.
    n = sum(27 in job.at_level for job in strategy.jobs.values())
    rates = strategy.describe()["RungKeepRates"]
    assert rates == pytest.approx(
        dict.fromkeys((1, 3, 9), (n + PRIOR_JOBS / 3) / (n + PRIOR_JOBS)), abs=1e-4
    )


def test_misleading_early_levels_move_the_budget_to_gentle_brackets():
    quality = np.random.default_rng(2).random(400)
    strategy = adaptive()
    # Curves that cross: the best at step 27 are the worst at steps 1 to 9.
    feed(strategy, 150, lambda j, s: quality[j] if s == 27 else 1.0 - quality[j])
    weights = strategy.bracket_weights()
    assert weights[-1] > 0.9
    assert strategy.describe()["BracketSelection"] == "adaptive"


def test_keep_rates_are_shrunk_towards_chance_with_few_jobs():
    strategy = adaptive()
    feed(strategy, 40, lambda j, s: j + 1.0 / s)  # perfect ranking
    top = [job for job in strategy.jobs.values() if 27 in job.at_level]
    n = len(top)
    assert 0 < n < 40
    expected = (n * 1.0 + PRIOR_JOBS / 3) / (n + PRIOR_JOBS)
    assert strategy.describe()["RungKeepRates"][1] == pytest.approx(expected)


def test_adaptive_is_the_default_and_fixed_ignores_the_data():
    assert hyperband_config({"max_resource": 9}, {})["bracket_selection"] == "adaptive"
    quality = np.random.default_rng(1).random(400)
    fixed = HyperbandStrategy(
        SPACE, seed=0, config={"max_resource": 27, "bracket_selection": "fixed"}
    )
    feed(fixed, 150, lambda j, s: quality[j] + 1.0 / s)
    assert fixed.bracket_weights() == pytest.approx(bracket_weights(3, 3))
    assert "BracketWeights" not in fixed.describe()


def test_bad_bracket_selection_is_refused_with_the_fix():
    with pytest.raises(ValidationError, match=r"bracket_selection must be one of .*'adaptive'"):
        hyperband_config({"max_resource": 9, "bracket_selection": "learned"}, {})


def training(hyperparameters):
    x = hyperparameters["x"]
    for epoch in range(1, 10):
        amtlib.report(loss=(x - 0.3) ** 2 + 1.0 / epoch)
    return (x - 0.3) ** 2 + 1.0 / 9


def tuner(store, max_jobs):
    return Tuner(
        training,
        "loss",
        {"x": ContinuousParameter(0.0, 1.0)},
        objective_type="Minimize",
        strategy="Hyperband",
        strategy_config={"max_resource": 9, "bracket_selection": "adaptive"},
        max_jobs=max_jobs,
        max_parallel_jobs=1,
        random_seed=4,
        store=store,
        job_name="adaptive",
    )


def test_brackets_are_recorded_at_launch_and_restored_from_the_records(tmp_path):
    store = tmp_path / "store.db"
    first = tuner(store, 30).fit(progress=False)
    launched = [[e for e in job.history if e["event"] == "launched"] for job in first.training_jobs]
    assert all(len(events) == 1 for events in launched)
    brackets = [events[0]["bracket"] for events in launched]
    # describe() shows what was learned, JSON-ready (levels as strings once stored).
    learned = first.describe()["AmtlibDetails"]["Strategy"]
    assert learned["BracketSelection"] == "adaptive"
    assert len(learned["BracketWeights"]) == 3 and sum(learned["BracketWeights"]) == pytest.approx(
        1
    )
    assert set(learned["RungKeepRates"]) == {"1", "3"}
    # Every rung decision names the bracket recorded at launch.
    named = [
        (report.decision["reason"]["bracket"], bracket)
        for job, bracket in zip(first.training_jobs, brackets, strict=True)
        for report in job.reports
        if report.decision and "bracket" in (report.decision["reason"] or {})
    ]
    assert len(named) >= 20 and all(said == recorded for said, recorded in named)
    # A restored strategy takes the brackets from the records, not from a fresh draw: a draw
    # with the data of a whole run would not give the ones drawn job by job.
    strategy = HyperbandStrategy(
        SPACE, seed=4, config={"max_resource": 9, "bracket_selection": "adaptive"}
    )
    run = list(first.training_jobs)
    trials = [
        Trial(
            j.index,
            j.hyperparameters,
            j.status,
            None,
            tuple(sorted(j.steps("loss").items())),
            j.paused,
            j.history,
        )
        for j in run
    ]
    strategy.restore(trials)
    assert [strategy.jobs[i].bracket for i in range(len(run))] == brackets
    redrawn = [strategy.bracket_of(i) for i in range(len(run))]
    assert redrawn != brackets  # the records matter: recomputing would change some
    # Resuming the tuning job goes on from 30 to 40 jobs with the first 30 untouched.
    more = tuner(store, 40).fit(progress=False).training_jobs
    assert len(more) == 40
    assert [j.to_dict() for j in more[:30]] == [j.to_dict() for j in run]
    assert math.isfinite(min(j.objective_value for j in more if j.objective_value is not None))


def test_a_resumed_promotion_run_keeps_each_jobs_bracket(tmp_path):
    def make(max_jobs):
        return Tuner(
            obj.checkpointed,
            "loss",
            {"x": ContinuousParameter(0.0, 1.0)},
            objective_type="Minimize",
            strategy="Hyperband",
            strategy_config={"max_resource": 9, "mode": "promotion"},
            static_hyperparameters={"epochs": 9},
            max_jobs=max_jobs,
            random_seed=1,
            store=tmp_path / "s.db",
            job_name="p",
            executor="inline",
            checkpoint_root=tmp_path / "ckpt",
        )

    first = make(60).fit(progress=False)
    paused = [j.index for j in first.training_jobs if j.paused]
    assert paused  # some jobs wait at a rung when the first run ends
    # Restored from these records, every paused job is still waiting at its rung, a candidate for
    # promotion (with a redrawn bracket it could have no value at that rung, and be lost).
    strategy = HyperbandStrategy(SPACE, seed=1, config={"max_resource": 9, "mode": "promotion"})
    strategy.restore(
        [
            Trial(
                j.index,
                j.hyperparameters,
                j.status,
                j.objective_value,
                tuple(sorted(j.steps("loss").items())),
                j.paused,
                j.history,
            )
            for j in first.training_jobs
        ]
    )
    assert all(strategy.jobs[i].paused_at is not None for i in paused)
    resumed = make(80).fit(progress=False).training_jobs
    assert len(resumed) == 80
    promoted_later = [
        j for j in resumed if j.index in paused and any(e["event"] == "promoted" for e in j.history)
    ]
    assert promoted_later  # the resumed run promoted jobs paused by the first one
    for job in resumed:
        (launched,) = [e for e in job.history if e["event"] == "launched"]
        said = {
            r.decision["reason"]["bracket"]
            for r in job.reports
            if r.decision and "bracket" in (r.decision["reason"] or {})
        }
        # Every decision, before and after the restart, used the bracket drawn at launch.
        assert said <= {launched["bracket"]}


def test_same_seed_and_order_of_results_give_the_same_brackets(tmp_path):
    def brackets(store):
        run = tuner(store, 40).fit(progress=False)
        return [
            (next(e for e in j.history if e["event"] == "launched")["bracket"], j.hyperparameters)
            for j in run.training_jobs
        ]

    first = brackets(tmp_path / "a.db")
    assert first == brackets(tmp_path / "b.db")  # inline: the same order of results
    assert len({b for b, _ in first}) > 1
