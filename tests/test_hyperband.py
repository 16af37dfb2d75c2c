"""Hyperband: rungs pooled across brackets, and the multi-fidelity model of model-based Hyperband."""

from __future__ import annotations

import math

import numpy as np
import pytest

from amtlib import ValidationError
from amtlib.records import TrainingJobStatus, Trial
from amtlib.reporting import Action
from amtlib.space import CategoricalParameter, ContinuousParameter, IntegerParameter, SearchSpace
from amtlib.strategies import _multifidelity
from amtlib.strategies._multifidelity import MultiFidelityGP, Observation
from amtlib.strategies.base import trial_rng
from amtlib.strategies.hyperband import RANDOM_EVERY, HyperbandStrategy, hyperband_config

SPACE = SearchSpace({"x": ContinuousParameter(0.0, 1.0)})


def launch_in(strategy: HyperbandStrategy, bracket: int) -> int:
    """Launch jobs until one sits in ``bracket``; its index."""
    while True:
        strategy.ask(1)
        index = strategy.n_asked - 1
        if strategy.jobs[index].bracket == bracket:
            return index


# -- pooled rungs ---------------------------------------------------------------------------------


def test_rungs_are_pooled_across_brackets_by_default():
    strategy = HyperbandStrategy(SPACE, seed=0, config={"max_resource": 27})
    assert strategy.describe()["Rungs"] == "pooled"
    # Three bracket-0 jobs reach level 3 (their second rung) with good values...
    for value in (0.1, 0.2, 0.3):
        j = launch_in(strategy, 0)
        assert strategy.on_report(j, 1, 0.0).action is Action.CONTINUE  # ties go on
        strategy.on_report(j, 3, value)
    # ...then a bracket-1 job makes its first decision at level 3: it is compared with them.
    j = launch_in(strategy, 1)
    assert strategy.on_report(j, 1, 9.0).action is Action.CONTINUE  # no rung at 1 in bracket 1
    decision = strategy.on_report(j, 3, 0.5)
    assert decision.reason["recorded"] == 4 and decision.reason["bracket"] == 1
    assert decision.action is Action.STOP  # worse than the best floor(4 / 3) = 1 value, 0.1


def test_per_bracket_rungs_keep_brackets_apart():
    strategy = HyperbandStrategy(SPACE, seed=0, config={"max_resource": 27, "rungs": "per_bracket"})
    for value in (0.1, 0.2, 0.3):
        j = launch_in(strategy, 0)
        strategy.on_report(j, 1, 0.0)
        strategy.on_report(j, 3, value)
    j = launch_in(strategy, 1)
    decision = strategy.on_report(j, 3, 0.5)
    # Alone in bracket 1's rung at level 3: the first value always goes on.
    assert decision.reason["recorded"] == 1 and decision.action is Action.CONTINUE
    assert strategy.describe()["Rungs"] == "per_bracket"


def test_pooled_promotion_counts_every_bracket():
    strategy = HyperbandStrategy(SPACE, seed=0, config={"max_resource": 27, "mode": "promotion"})
    # Two bracket-1 jobs and one bracket-0 job reach level 3: pooled, floor(3 / 3) = 1 promotion.
    zero = launch_in(strategy, 0)
    assert strategy.on_report(zero, 1, 0.5).action is Action.PAUSE
    ones = [launch_in(strategy, 1), launch_in(strategy, 1)]
    assert strategy.on_report(ones[0], 3, 0.2).action is Action.PAUSE
    assert strategy.on_report(ones[1], 3, 0.9).action is Action.PAUSE
    strategy.jobs[zero].paused_at = None  # as if the tuner had resumed it
    assert strategy.on_report(zero, 3, 0.4).action is Action.PAUSE
    for index, value in ((ones[0], 0.2), (ones[1], 0.9), (zero, 0.4)):
        tell_paused(strategy, index, value)
    assert strategy.promote() == ones[0]  # the best at level 3, whatever its bracket
    assert strategy.promote() is None


def launch(strategy: HyperbandStrategy) -> int:
    """Launch one job; its index."""
    assert strategy.ask(1)
    return strategy.n_asked - 1


def paused_trial(strategy: HyperbandStrategy, index: int, value: float) -> Trial:
    """The tuner's record of an attempt that ended paused at ``value`` (reported at step 1)."""
    hp = strategy.jobs[index].hyperparameters
    return Trial(
        index, hp, TrainingJobStatus.STOPPED, value, intermediate=((1, value),), paused=True
    )


def tell_paused(strategy: HyperbandStrategy, index: int, value: float) -> None:
    strategy.tell(paused_trial(strategy, index, value))


PROMOTION = {"max_resource": 9, "mode": "promotion", "brackets": 1}


def paused_at_first_rung(values: tuple[float, ...]) -> tuple[HyperbandStrategy, list[int]]:
    """A promotion-mode strategy with one job per value, each told to pause at the first rung."""
    strategy = HyperbandStrategy(SPACE, seed=0, config=PROMOTION)
    jobs = [launch(strategy) for _ in values]
    for index, value in zip(jobs, values, strict=True):
        assert strategy.on_report(index, 1, value).action is Action.PAUSE
    return strategy, jobs


def test_a_job_is_promoted_only_once_its_paused_attempt_has_ended():
    # With parallel jobs a slot can free between the decision to pause a job and the end of that
    # job's attempt: promoting it then would run it twice at once.
    strategy, jobs = paused_at_first_rung((0.1, 0.5, 0.9))
    assert strategy.promote() is None  # the best, jobs[0], is still pausing
    tell_paused(strategy, jobs[1], 0.5)
    assert strategy.promote() is None  # jobs[1] has ended paused but is not among the best
    tell_paused(strategy, jobs[0], 0.1)
    assert strategy.promote() == jobs[0]


def test_jobs_paused_before_a_resume_can_be_promoted_after_it():
    # restore replays each pause through on_report; the attempts have all ended, so none may be
    # left waiting for a record that will never come.
    values = (0.1, 0.5, 0.9)
    first, jobs = paused_at_first_rung(values)
    again = HyperbandStrategy(SPACE, seed=0, config=PROMOTION)
    again.restore([paused_trial(first, j, v) for j, v in zip(jobs, values, strict=True)])
    assert again.promote() == jobs[0]


def test_a_job_told_to_pause_that_completes_instead_is_never_promoted():
    strategy, jobs = paused_at_first_rung((0.1, 0.5, 0.9))
    # The training function caught TrialStopped and finished its run anyway.
    hp = strategy.jobs[jobs[0]].hyperparameters
    strategy.tell(Trial(jobs[0], hp, TrainingJobStatus.COMPLETED, 0.05))
    assert strategy.jobs[jobs[0]].finished and strategy.jobs[jobs[0]].paused_at is None
    assert strategy.promote() is None


@pytest.mark.parametrize(
    "config,fragment",
    [
        (
            {"max_resource": 9, "rungs": "shared"},
            r"rungs must be one of \['pooled', 'per_bracket'\]",
        ),
        ({"max_resource": 9, "rungs": None}, "Got None"),
    ],
)
def test_bad_rung_systems_are_refused_with_the_fix(config, fragment):
    with pytest.raises(ValidationError, match=fragment):
        hyperband_config(config, {})
    assert hyperband_config({"max_resource": 9}, {})["rungs"] == "pooled"
    assert hyperband_config({"max_resource": 9, "model": "bayesian"}, {})["rungs"] == "pooled"
    apart = {"max_resource": 9, "model": "bayesian", "rungs": "per_bracket"}
    assert hyperband_config(apart, {})["rungs"] == "per_bracket"


# -- the multi-fidelity model --------------------------------------------------------------------


def crossing_data(n: int = 12) -> list[Observation]:
    """At 1 step small x looks best; at the top (9 steps) large x is: the curves cross."""
    xs = np.linspace(0.02, 0.98, n)
    out = [Observation({"x": float(x)}, 1, 1.0 + float(x)) for x in xs]
    out += [Observation({"x": float(x)}, 3, 1.0 + 0.2 * float(x)) for x in xs[::2]]
    out += [Observation({"x": float(x)}, 9, 1.0 - 0.5 * float(x)) for x in xs[::3]]
    return out


def test_expected_improvement_is_taken_at_the_top_level():
    model = MultiFidelityGP(SPACE, seed=0, min_resource=1, max_resource=9)
    data = crossing_data()
    params = model.suggest(20, data, running=[], launched=[o.hyperparameters for o in data])
    assert params is not None and params["x"] > 0.7  # where the top level is good, not step 1
    # The model maps resources to [0, 1] on a log scale and fitted every row.
    assert model.resource_coordinate(1) == 0.0 and model.resource_coordinate(9) == 1.0
    assert model.resource_coordinate(3) == pytest.approx(0.5)
    assert model.last_model is not None and len(model.last_model.y) == len(data)


def test_proposals_are_reproducible():
    data = crossing_data()
    launched = [o.hyperparameters for o in data]

    def propose(index: int) -> dict:
        model = MultiFidelityGP(SPACE, seed=3, min_resource=1, max_resource=9)
        found = model.suggest(index, data, [], launched)
        assert found is not None
        return found

    assert propose(20) == propose(20)
    assert propose(31) == propose(31)


def test_launched_configurations_are_never_proposed_again():
    space = SearchSpace({"k": IntegerParameter(1, 3), "c": CategoricalParameter(["a", "b"])})
    model = MultiFidelityGP(space, seed=0, min_resource=1, max_resource=9)
    data = [
        Observation({"k": 1, "c": "a"}, 1, 0.5),
        Observation({"k": 2, "c": "a"}, 1, 0.4),
        Observation({"k": 2, "c": "a"}, 9, 0.1),
    ]
    launched = [{"k": k, "c": c} for k in (1, 2, 3) for c in "ab" if (k, c) != (3, "b")]
    assert model.suggest(5, data, running=[{"k": 3, "c": "a"}], launched=launched) == {
        "k": 3,
        "c": "b",
    }
    assert model.suggest(6, data, running=[], launched=[*launched, {"k": 3, "c": "b"}]) is None


def test_large_data_keeps_every_top_level_row(monkeypatch):
    monkeypatch.setattr(_multifidelity, "MAX_POINTS", 40)
    rng = np.random.default_rng(0)
    data = []
    for i in range(60):
        x = {"x": float(rng.random())}
        data += [Observation(x, 1, 2.0 + x["x"]), Observation(x, 3, 1.5 + x["x"])]
        if i % 6 == 0:
            data.append(Observation(x, 9, 1.0 + x["x"]))
    model = MultiFidelityGP(SPACE, seed=0, min_resource=1, max_resource=9)
    chosen = model._select(data, np.random.default_rng(1))
    assert len(chosen) == 40
    assert sum(o.resource == 9 for o in chosen) == 10  # all of them
    # Next come each job's highest row (level 3 here): the rest is filled with those.
    assert sum(o.resource == 3 for o in chosen) == 30 and not any(o.resource == 1 for o in chosen)


def test_bad_resources_are_refused():
    with pytest.raises(ValidationError, match="min_resource < max_resource"):
        MultiFidelityGP(SPACE, seed=0, min_resource=9, max_resource=9)


# -- model-based Hyperband ----------------------------------------------------------------------


def test_model_based_hyperband_learns_from_every_rung():
    """Losses ``x + 1 / step``: every rung agrees, so the model's proposals head for small x."""
    strategy = HyperbandStrategy(SPACE, seed=1, config={"max_resource": 9, "model": "bayesian"})
    xs = []
    for _ in range(30):
        (params,) = strategy.ask(1)
        index = strategy.n_asked - 1
        xs.append(params["x"])
        for step in range(1, 10):
            if (
                strategy.on_report(index, step, params["x"] + 1.0 / step).action
                is not Action.CONTINUE
            ):
                break
        strategy.jobs[index].finished = True
    # Every job has a value at step 1, whatever its bracket (the model's data), and the bracket's
    # decisions are still made only at its own rungs.
    assert all(1 in job.curve for job in strategy.jobs.values())
    last = len(strategy.levels)
    assert all(not job.values.keys() - {9} for job in strategy.jobs.values() if job.bracket == last)
    # The model takes over after max(4, d + 2) = 4 configurations; most proposals then hug x = 0.
    assert np.median(xs[4:]) < 0.01 < np.median(xs[:4])
    assert len(set(xs)) == len(xs)
    # Every third job gets a random configuration all the same: exactly the one Random would give.
    for index, x in enumerate(xs):
        rng = trial_rng(1, index)
        rng.random()
        rng.random()
        if index % RANDOM_EVERY == RANDOM_EVERY - 1 or index < 4:
            assert x == SPACE.sample(rng)["x"]
        else:
            assert x != SPACE.sample(rng)["x"]


def test_model_based_hyperband_is_reproducible():
    def run(seed: int) -> list[float]:
        strategy = HyperbandStrategy(
            SPACE, seed=seed, config={"max_resource": 9, "model": "bayesian"}
        )
        out = []
        for _ in range(12):
            (params,) = strategy.ask(1)
            index = strategy.n_asked - 1
            out.append(params["x"])
            for step in (1, 3, 9):
                loss = math.sin(5 * params["x"]) + 1.0 / step
                if strategy.on_report(index, step, loss).action is not Action.CONTINUE:
                    break
            strategy.jobs[index].finished = True
        return out

    assert run(4) == run(4)
    assert run(4) != run(5)


def test_restore_rebuilds_the_model_data_and_the_rungs():
    def fresh() -> HyperbandStrategy:
        config = {"max_resource": 9, "model": "bayesian", "rungs": "per_bracket"}
        return HyperbandStrategy(SPACE, seed=2, config=config)

    strategy, trials = fresh(), []
    for _ in range(10):
        (params,) = strategy.ask(1)
        index = strategy.n_asked - 1
        reports = []
        for step in range(1, 10):
            loss = (params["x"] - 0.3) ** 2 + 1.0 / step
            reports.append((step, loss))
            if strategy.on_report(index, step, loss).action is not Action.CONTINUE:
                break
        strategy.jobs[index].finished = True
        status = TrainingJobStatus.COMPLETED if step == 9 else TrainingJobStatus.STOPPED
        # As the tuner does: the launch record (the bracket, drawn from the data) in the history.
        launched = ({"event": "launched", **strategy.launch_record(index)},)
        trials.append(
            Trial(index, params, status, reports[-1][1], tuple(reports), history=launched)
        )
    restored = fresh()
    restored.restore(trials)
    assert restored._observations() == strategy._observations()
    # Jobs ran one at a time in launch order, the order restore replays them in: same rungs.
    assert restored.rungs == strategy.rungs
    # Per-bracket rungs: one rung system per bracket used (the last bracket makes no decision).
    assert set(restored.rungs) == {job.bracket for job in strategy.jobs.values()} - {2}
    # The model's fits are warm-started along another path after a restore: the same data give
    # the same proposal up to the optimiser's tolerance, not bit for bit.
    assert (
        not restored.exact_replay
        and HyperbandStrategy(SPACE, seed=2, config={"max_resource": 9}).exact_replay
    )
    a, b = restored.ask(1)[0]["x"], strategy.ask(1)[0]["x"]
    assert abs(a - b) < 0.02


def test_model_based_hyperband_takes_a_huge_finite_loss():
    strategy = HyperbandStrategy(SPACE, seed=3, config={"max_resource": 3, "model": "bayesian"})
    xs = []
    for _ in range(12):
        (params,) = strategy.ask(1)
        index = strategy.n_asked - 1
        xs.append(params["x"])
        for step in range(1, 4):
            loss = 1e200 if params["x"] > 0.5 else params["x"] + 1.0 / step
            if strategy.on_report(index, step, loss).action is not Action.CONTINUE:
                break
        strategy.jobs[index].finished = True
    assert strategy._model is not None and strategy._model.last_model is not None
    assert len(set(xs)) == len(xs)


def test_model_based_hyperband_learns_where_jobs_fail():
    # Jobs fail for x < 0.25, next to the optimum (x = 0.3): the model's proposals learn to stay
    # out (measured over these seeds: 20 failures of 150 jobs; 62 without a model of failures;
    # a third of the jobs stay random, of which a quarter fail).
    import _objectives as obj

    from amtlib import ContinuousParameter, Tuner

    failures = 0
    for seed in (1, 3, 4):
        job = Tuner(
            obj.diverges_left,
            "loss",
            {"x": ContinuousParameter(0.0, 1.0), "y": ContinuousParameter(0.0, 1.0)},
            objective_type="Minimize",
            strategy="Hyperband",
            strategy_config={"max_resource": 9, "model": "bayesian"},
            max_jobs=50,
            random_seed=seed,
            store=":memory:",
            executor="inline",
            initial_failure_limit=None,
        ).fit(progress=False)
        failures += sum(j.status.value == "Failed" for j in job.training_jobs)
        assert job.best_training_job.objective_value < 0.06
    assert failures <= 30


def test_a_job_stopped_before_any_value_is_not_a_failure():
    # Killed at a time limit before it reported: the model-based proposals must not learn from it
    # that its configuration fails; a job that raised must.
    strategy = HyperbandStrategy(SPACE, seed=0, config={"max_resource": 9})
    (a,) = strategy.ask(1)
    (b,) = strategy.ask(1)
    strategy.tell(Trial(0, a, TrainingJobStatus.STOPPED, None, unfinished=True))
    strategy.tell(Trial(1, b, TrainingJobStatus.FAILED, None))
    assert strategy.jobs[0].finished and not strategy.jobs[0].failed
    assert strategy.jobs[1].finished and strategy.jobs[1].failed
    again = HyperbandStrategy(SPACE, seed=0, config={"max_resource": 9})  # a resumed one
    again.restore(
        [
            Trial(0, a, TrainingJobStatus.STOPPED, None, unfinished=True),
            Trial(1, b, TrainingJobStatus.FAILED, None),
        ]
    )
    assert not again.jobs[0].failed and again.jobs[1].failed
