"""The strategy contract, run against every strategy; then what is particular to Random and Grid."""

from __future__ import annotations

import itertools

import numpy as np
import pytest

from amtlib import CategoricalParameter, ContinuousParameter, IntegerParameter, SearchSpace, Tuner
from amtlib.records import TrainingJobStatus, Trial
from amtlib.strategies import STRATEGIES, GridStrategy, RandomStrategy, make_strategy

MIXED = SearchSpace(
    {
        "lr": ContinuousParameter(1e-4, 1.0, "Logarithmic"),
        "m": ContinuousParameter(0.5, 0.999, "ReverseLogarithmic"),
        "layers": IntegerParameter(1, 8),
        "opt": CategoricalParameter(["sgd", "adam", "rmsprop"]),
    }
)
FINITE = SearchSpace({"k": IntegerParameter(1, 4), "opt": CategoricalParameter(["a", "b", "c"])})


def space_for(name: str) -> SearchSpace:
    return FINITE if name == "Grid" else MIXED


def loss_of(params: dict) -> float:
    """A deterministic toy loss over both spaces."""
    return sum(hash_free(v) for v in params.values())


def hash_free(value) -> float:
    if isinstance(value, str):
        return float(len(value))
    return float(value)


def run(strategy, n: int, fail_every: int = 0) -> list[dict]:
    """Ask one at a time, tell each result at once; every `fail_every`-th trial fails."""
    asked = []
    for i in range(n):
        got = strategy.ask(1)
        if not got:
            break
        params = got[0]
        asked.append(params)
        failed = fail_every and i % fail_every == 0
        strategy.tell(
            Trial(
                i,
                params,
                TrainingJobStatus.FAILED if failed else TrainingJobStatus.COMPLETED,
                None if failed else loss_of(params),
            )
        )
    return asked


ALL = sorted(STRATEGIES)
CONFIGS = {"Hyperband": {"max_resource": 9}}


def build(name: str, space: SearchSpace, seed: int):
    return make_strategy(name, space, seed=seed, config=CONFIGS.get(name))


@pytest.mark.parametrize("name", ALL)
def test_suggestions_lie_inside_the_space(name):
    space = space_for(name)
    for params in run(build(name, space, 1), 12):
        assert space.validate(params) == params


@pytest.mark.parametrize("name", ALL)
def test_same_seed_same_sequence(name):
    space = space_for(name)
    assert run(build(name, space, 7), 12) == run(build(name, space, 7), 12)


@pytest.mark.parametrize("name", [n for n in ALL if n != "Grid"])
def test_another_seed_gives_another_sequence(name):
    a = run(build(name, MIXED, 1), 12)
    b = run(build(name, MIXED, 2), 12)
    assert a != b


@pytest.mark.parametrize("name", ALL)
def test_survives_failed_trials(name):
    space = space_for(name)
    asked = run(build(name, space, 3), 12, fail_every=2)
    assert len(asked) == 12


@pytest.mark.parametrize("name", ALL)
def test_restore_gives_the_same_state_as_asking(name):
    space = space_for(name)
    original = build(name, space, 5)
    first = run(original, 6)
    trials = [Trial(i, p, TrainingJobStatus.COMPLETED, loss_of(p)) for i, p in enumerate(first)]
    trials.append(Trial(6, original.ask(1)[0], TrainingJobStatus.IN_PROGRESS, None))
    restored = build(name, space, 5)
    restored.restore(trials)
    assert restored.n_asked == original.n_asked == 7
    if original.exact_replay:
        assert restored.ask(3) == original.ask(3)
    else:
        # Same data, but fits warm-started along another path: suggestions agree up to the
        # optimiser's tolerance (measured in the unit cube; a different basin would be ~0.1+).
        a = np.array([space.encode(p) for p in restored.ask(3)])
        b = np.array([space.encode(p) for p in original.ask(3)])
        assert np.max(np.abs(a - b)) < 0.02


@pytest.mark.parametrize("name", ALL)
def test_ask_many_equals_ask_one_at_a_time(name):
    space = space_for(name)
    one = [build(name, space, 4)]
    singles = [one[0].ask(1)[0] for _ in range(5)]
    assert build(name, space, 4).ask(5) == singles


# -- Random -------------------------------------------------------------------------------------


def test_random_never_repeats_in_a_finite_space_then_reports_exhaustion():
    strategy = RandomStrategy(FINITE, seed=0)
    asked = strategy.ask(100)
    assert len(asked) == FINITE.size() == 12
    assert len({FINITE.key(p) for p in asked}) == 12
    assert strategy.ask(1) == []


def test_random_in_a_finite_space_still_follows_the_scale_early_on():
    # Before the space is nearly used, draws follow each range's scale: with a 1..100000 log range
    # about half of the draws fall below the log-midpoint 316 (Linear would put 0.3% there).
    # 100 draws, Binomial(100, 0.5): sd 0.05; tolerance 0.2 is 4 sd.
    space = SearchSpace({"k": IntegerParameter(1, 100_000, "Logarithmic")})
    draws = [p["k"] for p in RandomStrategy(space, seed=0).ask(100)]
    assert len(set(draws)) == 100
    assert np.mean(np.array(draws) < 316) == pytest.approx(0.5, abs=0.2)


def test_random_draws_do_not_depend_on_results():
    a = RandomStrategy(MIXED, seed=9)
    b = RandomStrategy(MIXED, seed=9)
    seq_a = run(a, 10)
    seq_b = b.ask(10)  # never told anything
    assert seq_a == seq_b


def test_random_job_i_uses_its_own_stream():
    # Draw i depends only on (seed, i): a fresh strategy restored to i jobs draws the same next one.
    full = RandomStrategy(MIXED, seed=11).ask(8)
    for i in range(8):
        strategy = RandomStrategy(MIXED, seed=11)
        strategy.restore([Trial(j, full[j], TrainingJobStatus.COMPLETED, 0.0) for j in range(i)])
        assert strategy.ask(1)[0] == full[i]


# -- Grid ---------------------------------------------------------------------------------------


def test_grid_is_the_cartesian_product_in_declaration_order():
    space = SearchSpace(
        {
            "opt": CategoricalParameter(["sgd", "adam"]),
            "k": IntegerParameter(1, 3),
            "flag": CategoricalParameter([True, False]),
        }
    )
    strategy = GridStrategy(space, seed=0)
    expected = [
        {"opt": o, "k": k, "flag": f}
        for o, k, f in itertools.product(["sgd", "adam"], [1, 2, 3], [True, False])
    ]
    assert strategy.ask(100) == expected
    assert strategy.ask(1) == []


def test_grid_ignores_the_seed():
    assert GridStrategy(FINITE, seed=1).ask(12) == GridStrategy(FINITE, seed=2).ask(12)


def test_grid_refuses_a_continuous_range_with_the_fix():
    space = SearchSpace({"lr": ContinuousParameter(0, 1), "k": IntegerParameter(1, 2)})
    with pytest.raises(ValueError, match=r"'lr'.*Grid.*CategoricalParameter"):
        GridStrategy(space, seed=0)


def test_random_exhausts_a_finite_space_with_integers_next_to_2_53():
    big = IntegerParameter(2**53 - 3, 2**53, scaling_type="Linear")
    labels = CategoricalParameter([f"v{i}" for i in range(30)])
    job = Tuner(
        lambda hp: 0.0,
        hyperparameter_ranges={"big": big, "c": labels},
        strategy="Random",
        max_jobs=120,
        random_seed=0,
        store=":memory:",
        executor="inline",
    ).fit(progress=False)
    configs = {(j.hyperparameters["big"], j.hyperparameters["c"]) for j in job.training_jobs}
    assert len(configs) == len(job.training_jobs) == 120  # every configuration, none twice
