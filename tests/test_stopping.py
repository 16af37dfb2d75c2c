"""AMT's median rule and Hyperband's rung decisions, on hand-built metric streams."""

from __future__ import annotations

import numpy as np
import pytest

from amtlib import MedianStopper, ValidationError
from amtlib.records import TrainingJobStatus, Trial
from amtlib.reporting import Action
from amtlib.space import ContinuousParameter, SearchSpace
from amtlib.strategies.hyperband import (
    HyperbandStrategy,
    bracket_weights,
    hyperband_config,
    rung_levels,
)

# -- the median rule ------------------------------------------------------------------------------

CURVES = {
    1: {1: 1.0, 2: 0.75, 3: 0.5},  # running averages: 1.0, 0.875, 0.75
    2: {1: 2.0, 2: 1.0, 3: 0.75},  # 2.0, 1.5, 1.25
    3: {1: 0.5, 2: 0.5, 3: 0.5, 4: 0.5},  # 0.5, 0.5, 0.5, 0.5
}


def test_stops_a_job_worse_than_the_median_of_running_averages():
    decision = MedianStopper().decide(3, 0.85, CURVES)
    # Running averages up to step 3: 0.75, 1.25, 0.5 -> median 0.75; 0.85 is worse.
    assert decision.action is Action.STOP
    assert decision.reason == {
        "rule": "median",
        "step": 3,
        "value": 0.85,
        "median": 0.75,
        "references": 3,
    }


def test_continues_a_job_better_than_the_median():
    assert MedianStopper().decide(3, 0.7, CURVES).action is Action.CONTINUE


def test_a_tie_with_the_median_continues():
    assert MedianStopper().decide(3, 0.75, CURVES).action is Action.CONTINUE


def test_uses_running_averages_not_current_values():
    # At step 2 the references' current values are 0.75, 1.0, 0.5 (median 0.75) but their running
    # averages are 0.875, 1.5, 0.5 (median 0.875): 0.8 continues under the AMT rule.
    assert MedianStopper().decide(2, 0.8, CURVES).action is Action.CONTINUE
    assert MedianStopper().decide(2, 0.9, CURVES).action is Action.STOP


def test_too_few_references_never_stops():
    two = {1: CURVES[1], 2: CURVES[2]}
    assert MedianStopper().decide(3, 100.0, two).action is Action.CONTINUE
    assert MedianStopper(min_references=2).decide(3, 100.0, two).action is Action.STOP
    # Only job 3 reached step 4: no quorum there.
    assert MedianStopper(min_references=2).decide(4, 100.0, CURVES).action is Action.CONTINUE


def test_a_reference_that_skipped_to_a_later_step_counts_with_its_earlier_values():
    sparse = {1: {2: 1.0, 4: 1.0}, 2: {2: 3.0, 4: 3.0}, 3: {4: 2.0}}
    decision = MedianStopper().decide(3, 1.9, sparse)
    # References reaching step 3: all three (their last steps are 4); averages up to 3: 1.0,
    # 3.0 and job 3 has no value <= 3 so it is skipped -> only 2 -> too few.
    assert decision.action is Action.CONTINUE
    decision = MedianStopper(min_references=2).decide(3, 2.1, sparse)
    assert decision.action is Action.STOP and decision.reason["median"] == 2.0


def test_averages_and_median_of_values_near_the_float_limit_stay_finite():
    # Summing two values near -1e308 overflows; the rule must still compare against them.
    curves = {j: {1: -1e308, 2: -1e308} for j in range(4)}
    decision = MedianStopper().decide(2, 1.0, curves)
    assert decision.action is Action.STOP
    assert decision.reason["median"] == -1e308
    assert MedianStopper().decide(2, -1e308, curves).action is Action.CONTINUE  # a tie


def test_no_stop_before_min_step():
    assert MedianStopper(min_step=4).decide(3, 100.0, CURVES).action is Action.CONTINUE


@pytest.mark.parametrize("bad", [0, -1, 1.5, True, "3"])
def test_median_stopper_validates_its_arguments(bad):
    with pytest.raises(ValidationError, match=r"min_references.*int >= 1"):
        MedianStopper(min_references=bad)


# -- Hyperband's configuration and rung levels ---------------------------------------------------


def test_rung_levels_and_bracket_weights():
    assert rung_levels(1, 81, 3) == [1, 3, 9, 27]
    assert rung_levels(2, 50, 3) == [2, 6, 18]
    assert rung_levels(1, 10, 4) == [1, 4]
    w = bracket_weights(4, 3)
    # Synchronous Hyperband with s_max = 4 starts ceil(5 * 3**s / (s + 1)) configurations in the
    # bracket with s halvings: 81, 34 (ceil 33.75), 15, 8 (ceil 7.5), 5 (Li et al., 2018).
    assert w == pytest.approx(np.array([81, 34, 15, 8, 5]) / 143)
    assert bracket_weights(3, 3) == pytest.approx(np.array([27, 12, 6, 4]) / 49)


def test_max_resource_is_inferred_from_a_static_epochs_hyperparameter():
    for name in ("epochs", "num_epochs", "n_epochs", "numepochs", "n-epochs"):
        assert hyperband_config({}, {name: 27})["max_resource"] == 27
    config = hyperband_config(
        {"HyperbandStrategyConfig": {"MinResource": 2, "MaxResource": 40}}, {}
    )
    assert (config["min_resource"], config["max_resource"]) == (2, 40)


@pytest.mark.parametrize(
    "config,fragment",
    [
        ({}, "needs a max_resource"),
        ({"max_resource": 1}, "min_resource < max_resource"),
        ({"max_resource": 9, "reduction_factor": 1}, "reduction_factor must be an int from 2"),
        ({"max_resource": 2**53 + 1}, r"max_resource must be an int from 1 to 2\*\*53"),
        ({"max_resource": 9, "mode": "pausing"}, "mode must be one of"),
        ({"max_resource": 9, "model": "tpe"}, "model must be one of"),
        ({"max_resource": 9, "eta": 3}, "does not know"),
        ({"HyperbandStrategyConfig": {"Min": 1}}, "HyperbandStrategyConfig"),
        ({"max_resource": 9.5}, "max_resource must be an int"),
        ({"max_resource": 9, "brackets": 0}, "brackets must be an int >= 1"),
    ],
)
def test_bad_hyperband_configs_are_refused(config, fragment):
    with pytest.raises(ValidationError, match=fragment):
        hyperband_config(config, {})


def test_the_largest_max_resource_gives_finite_bracket_weights():
    config = hyperband_config({"max_resource": 2**53, "reduction_factor": 2}, {})
    strategy = HyperbandStrategy(SPACE, seed=0, config=config)
    assert len(strategy.weights) == 54 and np.all(np.isfinite(strategy.weights))
    assert strategy.weights.sum() == pytest.approx(1.0)


# -- Hyperband's rung decisions ------------------------------------------------------------------

SPACE = SearchSpace({"x": ContinuousParameter(0.0, 1.0)})


def hyperband(mode="stopping", seed=0, max_resource=27):
    return HyperbandStrategy(SPACE, seed=seed, config={"max_resource": max_resource, "mode": mode})


def in_bracket(strategy, bracket, count):
    """Launch jobs until `count` of them sit in `bracket`; returns their indices."""
    found = []
    while len(found) < count:
        strategy.ask(1)
        index = strategy.n_asked - 1
        if strategy.jobs[index].bracket == bracket:
            found.append(index)
    return found


def test_bracket_assignment_is_reproducible_with_a_seed():
    a = [hyperband(seed=3).bracket_of(i) for i in range(50)]
    assert a == [hyperband(seed=3).bracket_of(i) for i in range(50)]
    assert a != [hyperband(seed=4).bracket_of(i) for i in range(50)]
    assert set(a) <= {0, 1, 2, 3}  # levels 1, 3, 9 below 27: brackets 0..3


def test_stopping_mode_keeps_the_best_third_at_each_rung():
    strategy = hyperband()
    jobs = in_bracket(strategy, 0, 6)
    values = [0.5, 0.9, 0.1, 0.7, 0.3, 0.8]
    actions = [strategy.on_report(j, 1, v).action for j, v in zip(jobs, values, strict=True)]
    # Decisions are asynchronous: each job is compared with the values recorded so far, and the
    # best max(1, floor(k / 3)) of them go on. 0.5 alone: continue; 0.9 (k=2, best 1 = 0.5): stop;
    # 0.1: continue; 0.7 (k=4, best 1 = 0.1): stop; 0.3 (k=5, best 1 = 0.1): stop;
    # 0.8 (k=6, best 2 = 0.1, 0.3): stop. A 7th value of 0.2 (k=7, best 2 = 0.1, 0.2) goes on.
    assert [a.value for a in actions] == ["continue", "stop", "continue", "stop", "stop", "stop"]
    (seventh,) = in_bracket(strategy, 0, 1)
    decision = strategy.on_report(seventh, 1, 0.2)
    assert decision.action is Action.CONTINUE
    assert decision.reason["kept"] == 2 and decision.reason["cutoff"] == 0.2
    # Between rungs nothing is decided.
    assert strategy.on_report(jobs[0], 2, 5.0).action is Action.CONTINUE


def test_never_stopped_before_min_resource_and_always_at_max_resource():
    strategy = HyperbandStrategy(SPACE, seed=0, config={"min_resource": 3, "max_resource": 9})
    strategy.ask(1)
    assert strategy.on_report(0, 1, 100.0).action is Action.CONTINUE
    assert strategy.on_report(0, 2, 100.0).action is Action.CONTINUE
    # At max_resource the job has had its budget: it goes on so its loop can end normally...
    final = strategy.on_report(0, 9, 1.0)
    assert final.action is Action.CONTINUE and final.reason["rule"] == "max_resource"
    # ...and any report beyond it stops the job, recorded as completed.
    beyond = strategy.on_report(0, 10, 1.0)
    assert beyond.action is Action.STOP and beyond.reason["completed"] is True


def test_the_last_bracket_runs_every_job_to_max_resource():
    strategy = hyperband()
    last = len(strategy.levels)  # bracket without rungs below max_resource
    for j in in_bracket(strategy, last, 3):
        for step in range(1, 27):
            assert strategy.on_report(j, step, 10.0 + j).action is Action.CONTINUE


def ended_paused(strategy: HyperbandStrategy, index: int, value: float) -> None:
    """The tuner's record of an attempt that ended paused (only then may the job be promoted)."""
    hp = strategy.jobs[index].hyperparameters
    strategy.tell(Trial(index, hp, TrainingJobStatus.STOPPED, value, paused=True))


def test_promotion_mode_pauses_then_promotes_when_earned():
    strategy = hyperband(mode="promotion")
    jobs = in_bracket(strategy, 0, 3)
    # One value at the rung: floor(1/3) = 0 promotions allowed -> pause.
    assert strategy.on_report(jobs[0], 1, 0.2).action is Action.PAUSE
    ended_paused(strategy, jobs[0], 0.2)
    assert strategy.promote() is None
    assert strategy.on_report(jobs[1], 1, 0.9).action is Action.PAUSE
    ended_paused(strategy, jobs[1], 0.9)
    # Third value: one promotion allowed; the new job is not the best (0.2 is) -> it pauses too,
    # and the paused best job is promoted when a slot frees.
    assert strategy.on_report(jobs[2], 1, 0.5).action is Action.PAUSE
    ended_paused(strategy, jobs[2], 0.5)
    assert strategy.promote() == jobs[0]
    assert strategy.promote() is None  # only one of three moves up
    # The promoted job continues to the next rung (3), where it is alone: pause again.
    assert strategy.on_report(jobs[0], 2, 0.15).action is Action.CONTINUE
    assert strategy.on_report(jobs[0], 3, 0.1).action is Action.PAUSE


def test_promotion_mode_continues_a_job_at_once_when_it_earns_it():
    strategy = hyperband(mode="promotion")
    jobs = in_bracket(strategy, 0, 4)
    for j, v in zip(jobs[:3], [0.5, 0.6, 0.7], strict=True):
        strategy.on_report(j, 1, v)
        ended_paused(strategy, j, v)
    # 0.5 earned the first promotion; promote it, then a 4th, better job arrives: 4 values allow
    # floor(4/3) = 1 promotion, already used -> it pauses and waits for more jobs.
    assert strategy.promote() == jobs[0]
    assert strategy.on_report(jobs[3], 1, 0.1).action is Action.PAUSE


def test_one_bracket_is_asha():
    strategy = HyperbandStrategy(SPACE, seed=0, config={"max_resource": 27, "brackets": 1})
    assert {strategy.bracket_of(i) for i in range(40)} == {0}
    two = HyperbandStrategy(SPACE, seed=0, config={"max_resource": 27, "brackets": 2})
    assert {two.bracket_of(i) for i in range(60)} == {0, 1}
    assert two.describe()["Brackets"] == 2
