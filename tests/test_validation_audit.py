"""Validation audit: huge integer ranges, unordered choices, float precision, numpy integers,
Hyperband's inferred max_resource and its string options. Every bad input raises our
ValidationError naming the parameter, the value and the fix."""

from __future__ import annotations

import re

import numpy as np
import pytest

import amtlib
from amtlib import (
    CategoricalParameter,
    ContinuousParameter,
    IntegerParameter,
    Tuner,
    ValidationError,
)
from amtlib.space import MAX_GRID_SIZE, SearchSpace
from amtlib.strategies import make_strategy
from amtlib.strategies.hyperband import hyperband_config

HUGE = 10**9


def _tuner(ranges, **kw):
    args = dict(
        objective_metric_name="loss",
        hyperparameter_ranges=ranges,
        objective_type="Minimize",
        strategy="Random",
        max_jobs=3,
        random_seed=0,
        store=":memory:",
        executor="inline",
    )
    args.update(kw)
    return Tuner(_reported_loss, **args)


def _reported_loss(hp):
    loss = float(hp["k"] % 7)
    amtlib.report(loss=loss)  # Hyperband judges reports; a job without any would warn
    return {"loss": loss}


# -- 1. sizes are arithmetic; nothing lists a huge integer range ---------------------------------


def test_size_is_computed_without_listing_values():
    space = SearchSpace({"k": IntegerParameter(1, HUGE), "c": CategoricalParameter(["a", "b"])})
    assert space.size() == 2 * HUGE
    assert SearchSpace({"x": ContinuousParameter(0, 1), "k": IntegerParameter(1, 3)}).size() is None
    assert SearchSpace({"k": IntegerParameter(-2, 2)}).size() == 5


@pytest.mark.timeout(60)
@pytest.mark.parametrize("scaling", ["Linear", "Logarithmic"])
@pytest.mark.parametrize("strategy", ["Random", "Bayesian", "Hyperband"])
def test_a_huge_integer_range_is_searched_without_listing_it(strategy, scaling):
    extra = {"static_hyperparameters": {"epochs": 3}} if strategy == "Hyperband" else {}
    ranges = {"k": IntegerParameter(1, HUGE, scaling)}
    job = _tuner(ranges, strategy=strategy, **extra).fit(progress=False)
    assert len(job.training_jobs) == 3
    assert all(1 <= j.hyperparameters["k"] <= HUGE for j in job.training_jobs)


@pytest.mark.timeout(120)
@pytest.mark.parametrize(
    "strategy,config",
    [
        ("Bayesian", {"initial_design_size": 2}),
        ("Hyperband", {"model": "bayesian", "max_resource": 3}),
    ],
)
def test_the_models_search_a_huge_integer_range_without_listing_it(strategy, config):
    ranges = {"k": IntegerParameter(1, HUGE, "Linear"), "c": CategoricalParameter(["a", "b"])}
    job = _tuner(ranges, strategy=strategy, strategy_config=config, max_jobs=8).fit(progress=False)
    assert len(job.training_jobs) == 8


def test_a_grid_over_a_huge_range_is_refused_before_listing_it():
    with pytest.raises(ValidationError, match=r"grid too large: 1000000000 configurations.*Fix"):
        _tuner({"k": IntegerParameter(1, HUGE)}, strategy="Grid", max_jobs=None)
    space = SearchSpace({"a": IntegerParameter(1, 2000), "b": IntegerParameter(1, 2000)})
    with pytest.raises(ValidationError, match="grid too large: 4000000 configurations"):
        _tuner(dict(space), strategy="Grid", max_jobs=None)
    # the strategy built directly (not through the Tuner) refuses too, instead of allocating
    with pytest.raises(ValidationError, match="too many to list"):
        make_strategy("Grid", SearchSpace({"k": IntegerParameter(1, HUGE)}), seed=0)
    # the cap itself is a grid
    assert (
        _tuner({"k": IntegerParameter(1, 10)}, strategy="Grid", max_jobs=None).limits.max_jobs == 10
    )
    assert MAX_GRID_SIZE == 1_000_000


def test_listing_a_huge_range_is_refused_with_the_fix():
    with pytest.raises(ValidationError, match=r"IntegerParameter\(1, 1000000000.*too many to list"):
        IntegerParameter(1, HUGE).values()
    with pytest.raises(ValidationError, match="too many to list"):
        IntegerParameter(1, HUGE).probabilities()
    assert IntegerParameter(1, 4).values() == [1, 2, 3, 4]


# -- 2. categorical values must be ordered -------------------------------------------------------


@pytest.mark.parametrize(
    "values", [{"a", "b"}, frozenset({"a", "b"}), {"a": 1, "b": 2}.keys(), {"a": 1}.items()]
)
def test_unordered_choices_are_refused(values):
    with pytest.raises(ValidationError, match=r"order.*PYTHONHASHSEED.*Fix: pass a list.*sorted"):
        CategoricalParameter(values)


def test_numpy_arrays_and_generators_get_a_fix_that_works():
    with pytest.raises(ValidationError, match=r"Fix: pass values\.tolist\(\)") as info:
        CategoricalParameter(np.array(["a", "b"]))
    assert "ndarray" in str(info.value)
    with pytest.raises(ValidationError, match=r"Fix: pass list\(values\)"):
        CategoricalParameter(v for v in ["a", "b"])
    with pytest.raises(ValidationError, match=r"Fix: pass list\(values\)"):
        CategoricalParameter({"a": 1}.values())
    # the fixes work
    assert CategoricalParameter(np.array(["a", "b"]).tolist()).values() == ["a", "b"]
    assert CategoricalParameter(list(v for v in [1, 2])).values() == [1, 2]
    # what worked before still works
    assert CategoricalParameter(("a", "b")).values() == ["a", "b"]
    assert CategoricalParameter(range(3)).values() == [0, 1, 2]
    assert CategoricalParameter(list(np.arange(2))).values() == [0, 1]
    with pytest.raises(ValidationError, match=r"CategoricalParameter\(\['adam'\]\)"):
        CategoricalParameter("adam")


# -- 3. ranges beyond float precision ------------------------------------------------------------


@pytest.mark.parametrize(
    "low,high,name",
    [
        (10**17, 10**17 + 5, "min_value"),
        (1, 10**400, "max_value"),
        (-(2**53) - 1, 0, "min_value"),
        (1, 1e17, "max_value"),
    ],
    ids=["1e17", "1e400", "below-2**53", "float-1e17"],
)
def test_integer_bounds_must_be_exact_as_floats(low, high, name):
    with pytest.raises(ValidationError, match=rf"{name} must be.*2\*\*53.*Got.*Fix"):
        IntegerParameter(low, high)


def test_integer_bounds_at_the_limit_work():
    param = IntegerParameter(-(2**53), 2**53)
    space = SearchSpace({"k": param})
    for k in (-(2**53), 0, 2**53):
        assert space.decode(space.encode({"k": k}))["k"] == k
    assert SearchSpace({"k": IntegerParameter(2**53 - 5, 2**53, "Linear")}).size() == 6
    # 'Auto' lets the Bayesian strategy try a log scale, on which these ends are the same float
    with pytest.raises(ValidationError, match=r"too narrow.*Logarithmic.*Fix.*'Linear'"):
        IntegerParameter(2**53 - 5, 2**53)


def test_a_continuous_range_needs_a_finite_span():
    with pytest.raises(ValidationError, match=r"max_value - min_value must be finite.*Got.*Fix"):
        ContinuousParameter(-1e308, 1e308)
    space = SearchSpace({"x": ContinuousParameter(0.0, 1e308)})
    assert 0.0 <= space.decode(np.array([0.5]))["x"] <= 1e308


def test_a_range_too_narrow_for_its_scale_is_refused():
    # 1e300 and the next float have the same logarithm: the scale has no width.
    with pytest.raises(ValidationError, match=r"too narrow.*Fix"):
        ContinuousParameter(1e300, float(np.nextafter(1e300, 2e300)), "Logarithmic")


def test_a_range_too_narrow_on_a_linear_scale_offers_no_linear_fix():
    # The fix used to be "pass 'Linear'", the scale that had just failed (a config fuzz).
    for scaling in ("Linear", "Auto"):
        with pytest.raises(ValidationError, match=r"too narrow.*Linear.*Fix: widen the range\.$"):
            ContinuousParameter(2**63, 2**63 + 2, scaling)


def test_categorical_values_are_compared_as_python_values():
    # np.int64(1) beside 1 passed the duplicate check, then crashed Random and repeated a Grid
    # configuration; np.bool_ was refused as "not a bool"; a 10**400 raised OverflowError.
    with pytest.raises(ValidationError, match=r"distinct. Got np.int64\(1\) more than once"):
        CategoricalParameter([1, np.int64(1)])
    with pytest.raises(ValidationError, match=r"distinct"):
        CategoricalParameter([1.0, np.float64(1.0)])
    assert CategoricalParameter([np.False_, np.True_]).values() == [False, True]
    assert CategoricalParameter([1, 1.0, True]).values() == [1, 1.0, True]
    for huge in (10**400, 10**5000):
        with pytest.raises(ValidationError, match=r"finite number.*Got .*\(int\)\. Fix"):
            CategoricalParameter(["a", huge])


def test_a_job_name_ending_in_a_newline_is_refused():
    # `$` matched before a final newline, so "my-job\n" passed and named jobs "my-job\n-001".
    with pytest.raises(ValidationError, match="job_name"):
        Tuner(lambda hp: 0.0, "score", {"x": ContinuousParameter(0, 1)}, max_jobs=1, job_name="j\n")


# -- 4. numpy integers for the tuner's limits, numpy scalars as static values -------------------


def test_numpy_integers_are_accepted_as_limits():
    tuner = _tuner(
        {"k": IntegerParameter(1, 10)},
        max_jobs=np.int64(3),
        max_parallel_jobs=np.int32(1),
        random_seed=np.uint8(7),
        initial_failure_limit=np.int64(2),
        max_runtime_in_seconds=np.float32(60.0),
    )
    assert tuner.limits.max_jobs == 3 and type(tuner.limits.max_jobs) is int
    assert type(tuner.limits.max_parallel_jobs) is int
    assert tuner.random_seed == 7 and type(tuner.random_seed) is int
    assert type(tuner.limits.initial_failure_limit) is int
    assert type(tuner.limits.max_runtime_in_seconds) is float
    assert len(tuner.fit(progress=False).training_jobs) == 3


@pytest.mark.parametrize(
    "kw",
    [
        {"max_jobs": True},
        {"max_jobs": 3.0},
        {"max_parallel_jobs": np.bool_(True)},
        {"random_seed": np.int64(-1)},
    ],
)
def test_bools_floats_and_negatives_are_still_refused(kw):
    with pytest.raises(ValidationError, match=r"parameter of Tuner must be an int.*Got.*Fix"):
        _tuner({"k": IntegerParameter(1, 10)}, **kw)


def test_numpy_scalars_in_static_hyperparameters_become_python_scalars():
    seen = []

    def train(hp):
        seen.append(hp)
        return {"loss": 0.0}

    static = {"epochs": np.int64(10), "lr": np.float32(0.5), "flags": [np.bool_(True)]}
    tuner = Tuner(
        train,
        "loss",
        {"k": IntegerParameter(1, 3)},
        objective_type="Minimize",
        static_hyperparameters=static,
        strategy="Random",
        max_jobs=1,
        random_seed=0,
        store=":memory:",
        executor="inline",
    )
    assert tuner.static_hyperparameters == {"epochs": 10, "lr": 0.5, "flags": [True]}
    assert type(tuner.static_hyperparameters["epochs"]) is int
    tuner.fit(progress=False)
    assert type(seen[0]["epochs"]) is int and type(seen[0]["flags"][0]) is bool


def test_a_numpy_array_as_static_value_gets_the_tolist_fix():
    with pytest.raises(ValidationError, match=r"static_hyperparameters\['w'\].*tolist\(\)"):
        _tuner({"k": IntegerParameter(1, 3)}, static_hyperparameters={"w": np.zeros(2)})


# -- 5. Hyperband's max_resource read from a static hyperparameter -------------------------------


@pytest.mark.parametrize("value", [9, 9.0, "9", " 9 ", np.int64(9)])
def test_inferred_max_resource_accepts_amt_style_values(value):
    assert hyperband_config({}, {"epochs": value})["max_resource"] == 9
    assert type(hyperband_config({}, {"num_epochs": value})["max_resource"]) is int


@pytest.mark.parametrize("value", ["ten", 9.5, "9.0", "-3", 0, True, None, [9]])
def test_bad_inferred_max_resource_names_its_static_key(value):
    with pytest.raises(ValidationError, match=r"static_hyperparameters\['n_epochs'\].*Got.*Fix"):
        hyperband_config({}, {"n_epochs": value})


def test_a_tuned_epochs_range_cannot_give_max_resource_and_says_so():
    with pytest.raises(ValidationError) as info:
        _tuner({"epochs": IntegerParameter(1, 81)}, strategy="Hyperband")
    message = str(info.value)
    assert "'epochs' is a tuned range" in message and "Fix: move 'epochs'" in message


@pytest.mark.parametrize(
    ("ranges", "static", "expected"),
    [
        ({"epochs": IntegerParameter(1, 81)}, {}, r"'epochs' is also a tuned range"),
        ({"k": IntegerParameter(1, 3)}, {"epochs": "9"}, r"\['epochs'\] = 9 is below.* = 27"),
    ],
)
def test_hyperband_warns_when_an_epoch_count_contradicts_max_resource(ranges, static, expected):
    with pytest.warns(UserWarning, match=expected) as record:
        _tuner(
            ranges,
            strategy="Hyperband",
            strategy_config={"max_resource": 27},
            static_hyperparameters=static,
        )
    assert len(record) == 1 and record[0].filename == __file__  # points at the Tuner(...) call


def test_hyperband_is_quiet_when_epochs_give_or_exceed_max_resource(recwarn):
    _tuner(
        {"k": IntegerParameter(1, 3)}, strategy="Hyperband", static_hyperparameters={"epochs": 9}
    )
    _tuner(
        {"k": IntegerParameter(1, 3)},
        strategy="Hyperband",
        strategy_config={"max_resource": 9},
        static_hyperparameters={"epochs": 30},
    )
    assert [str(w.message) for w in recwarn] == []


def test_a_string_epochs_runs_hyperband_and_stays_a_string_for_the_job():
    seen = []

    def train(hp):
        seen.append(hp["epochs"])
        amtlib.report(loss=float(hp["k"]))
        return {"loss": float(hp["k"])}

    tuner = Tuner(
        train,
        "loss",
        {"k": IntegerParameter(1, 5)},
        objective_type="Minimize",
        static_hyperparameters={"epochs": "9"},
        strategy="Hyperband",
        max_jobs=2,
        random_seed=0,
        store=":memory:",
        executor="inline",
    )
    assert tuner.strategy_config["max_resource"] == 9
    tuner.fit(progress=False)
    assert seen == ["9", "9"]


# -- 6. Hyperband's options ----------------------------------------------------------------------


def test_string_options_are_case_insensitive_and_normalised():
    config = hyperband_config(
        {
            "max_resource": 9,
            "mode": "Promotion",
            "model": "BAYESIAN",
            "rungs": "Per-Bracket",
            "bracket_selection": " Fixed ",
        },
        {},
    )
    assert config["mode"] == "promotion"
    assert config["model"] == "bayesian"
    assert config["rungs"] == "per_bracket"
    assert config["bracket_selection"] == "fixed"
    assert hyperband_config(config, {}) == config  # idempotent: the strategy validates it again
    with pytest.raises(ValidationError, match=r"mode must be one of.*case-insensitive.*'halting'"):
        hyperband_config({"max_resource": 9, "mode": "halting"}, {})


def test_more_brackets_than_available_are_refused_with_the_count():
    # levels 1 and 3 below 9 (eta 3): three brackets
    assert hyperband_config({"max_resource": 9, "brackets": 3}, {})["brackets"] == 3
    with pytest.raises(ValidationError, match=r"brackets.*3 brackets.*Got 4.*Fix: pass brackets=3"):
        hyperband_config({"max_resource": 9, "brackets": 4}, {})
    with pytest.raises(ValidationError, match="2 brackets"):
        hyperband_config({"brackets": 5, "min_resource": 2}, {"epochs": 6})


def test_amt_keys_at_the_top_level_are_aliases():
    config = hyperband_config({"MinResource": 3, "MaxResource": 27}, {})
    assert (config["min_resource"], config["max_resource"]) == (3, 27)
    assert "MinResource" not in config and "MaxResource" not in config
    same = {"HyperbandStrategyConfig": {"MaxResource": 27}, "max_resource": 27, "MaxResource": 27}
    assert hyperband_config(same, {})["max_resource"] == 27
    # an alias keeps its place: a resumed tuning job compares its configuration as JSON text
    assert list(hyperband_config({"mode": "promotion", "MaxResource": 27}, {}))[:2] == [
        "mode",
        "max_resource",
    ]


@pytest.mark.parametrize(
    "config,first,second",
    [
        (
            {"HyperbandStrategyConfig": {"MaxResource": 9}, "max_resource": 27},
            r"strategy_config\['max_resource'\]=27",
            r"strategy_config\['HyperbandStrategyConfig'\]\['MaxResource'\]=9",
        ),
        (
            {"MinResource": 1, "min_resource": 3, "max_resource": 27},
            r"strategy_config\['min_resource'\]=3",
            r"strategy_config\['MinResource'\]=1",
        ),
    ],
)
def test_a_setting_given_twice_with_different_values_is_refused(config, first, second):
    with pytest.raises(ValidationError) as info:
        hyperband_config(config, {})
    message = str(info.value)
    for fragment in (first, second, "Fix"):
        assert re.search(fragment, message), message
