"""Ranges, scaling and the unit-cube encoding: round trips, bounds, distributions, validation."""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from amtlib import (
    CategoricalParameter,
    ContinuousParameter,
    IntegerParameter,
    ScalingType,
    SearchSpace,
    ValidationError,
)

# -- hypothesis strategies for valid ranges ---------------------------------------------------

finite = st.floats(-1e6, 1e6, allow_nan=False, allow_infinity=False)


@st.composite
def continuous_ranges(draw):
    scaling = draw(st.sampled_from(["Auto", "Linear", "Logarithmic", "ReverseLogarithmic"]))
    if scaling == "Logarithmic":
        lo = draw(st.floats(1e-8, 1e5))
        hi = draw(st.floats(lo * 1.0001 + 1e-12, 1e6))
    elif scaling == "ReverseLogarithmic":
        lo = draw(st.floats(0.0, 0.99))
        hi = draw(st.floats(lo + 1e-6, 0.999999))
    else:
        lo = draw(finite)
        hi = draw(st.floats(lo + 1e-6 + abs(lo) * 1e-9, 2e6))
    if not lo < hi:
        hi = lo + 1.0
    return ContinuousParameter(lo, hi, scaling)


@st.composite
def integer_ranges(draw):
    scaling = draw(st.sampled_from(["Auto", "Linear", "Logarithmic"]))
    lo = draw(st.integers(1 if scaling == "Logarithmic" else -1000, 1000))
    hi = draw(st.integers(lo + 1, lo + 5000))
    return IntegerParameter(lo, hi, scaling)


categorical_ranges = st.lists(
    st.one_of(st.text(max_size=5), st.integers(-5, 5), st.booleans()),
    min_size=1,
    max_size=6,
    unique_by=lambda v: (type(v).__name__, v),
).map(CategoricalParameter)

any_range = st.one_of(continuous_ranges(), integer_ranges(), categorical_ranges)
spaces = st.dictionaries(
    st.text("abcdefgh", min_size=1, max_size=4), any_range, min_size=1, max_size=5
)


# -- round trips and bounds -------------------------------------------------------------------


@settings(max_examples=200, deadline=None)
@given(spaces, st.integers(0, 2**32 - 1))
def test_decoded_values_are_inside_their_ranges_and_round_trip(ranges, seed):
    space = SearchSpace(ranges)
    rng = np.random.default_rng(seed)
    for point in [rng.random(space.n_dims), np.zeros(space.n_dims), np.ones(space.n_dims)]:
        params = space.decode(point)
        assert space.validate(params) == params  # inside every range, right types
        for name, param in space:
            value = params[name]
            if isinstance(param, IntegerParameter):
                assert type(value) is int
                assert param.min_value <= value <= param.max_value
            elif isinstance(param, ContinuousParameter):
                assert type(value) is float
                assert param.min_value <= value <= param.max_value
        encoded = space.encode(params)
        assert encoded.shape == (space.n_dims,)
        assert np.all((encoded >= 0.0) & (encoded <= 1.0))
        again = space.decode(encoded)
        for name, param in space:
            if isinstance(param, ContinuousParameter):
                assert math.isclose(again[name], params[name], rel_tol=1e-9, abs_tol=1e-9)
            else:
                assert again[name] == params[name] and type(again[name]) is type(params[name])


@settings(max_examples=100, deadline=None)
@given(integer_ranges())
def test_every_integer_encodes_to_the_centre_of_its_own_cell(param):
    space = SearchSpace({"k": param})
    values = param.values()[:50] + param.values()[-50:]
    for k in values:
        assert space.decode(space.encode({"k": k}))["k"] == k


@settings(max_examples=100, deadline=None)
@given(continuous_ranges(), st.floats(0, 1))
def test_continuous_decode_is_monotone(param, u):
    space = SearchSpace({"x": param})
    lo = space.decode(np.array([u * 0.5]))["x"]
    hi = space.decode(np.array([u]))["x"]
    assert lo <= hi


def test_ends_of_the_cube_are_the_ends_of_the_range():
    for scaling in ["Linear", "Logarithmic", "ReverseLogarithmic"]:
        space = SearchSpace({"x": ContinuousParameter(0.01, 0.99, scaling)})
        assert space.decode(np.array([0.0]))["x"] == pytest.approx(0.01)
        assert space.decode(np.array([1.0]))["x"] == pytest.approx(0.99)


# -- distributions of draws (statistical; tolerances stated) ------------------------------------

N = 20_000


def _draws(param, seed=0):
    space = SearchSpace({"x": param})
    rng = np.random.default_rng(seed)
    return np.array([space.decode(u)["x"] for u in rng.random((N, space.n_dims))])


def test_linear_puts_about_90_percent_of_draws_in_the_top_decade():
    # Binomial(20000, 0.9): sd = 0.0021; the tolerance 0.01 is ~4.7 sd (false-failure rate < 1e-5).
    share = np.mean(_draws(ContinuousParameter(1e-4, 1.0, "Linear")) >= 0.1)
    assert share == pytest.approx(0.9, abs=0.01)


def test_auto_is_searched_as_linear_by_random_draws():
    share = np.mean(_draws(ContinuousParameter(1e-4, 1.0)) >= 0.1)
    assert share == pytest.approx(0.9, abs=0.01)


def test_logarithmic_puts_about_25_percent_of_draws_in_each_decade():
    # 4 decades, each 1/4 of the draws. sd = 0.0031; tolerance 0.015 is ~4.9 sd.
    draws = _draws(ContinuousParameter(1e-4, 1.0, "Logarithmic"))
    for lo in [1e-4, 1e-3, 1e-2, 1e-1]:
        assert np.mean((draws >= lo) & (draws < lo * 10)) == pytest.approx(0.25, abs=0.015)


def test_reverse_logarithmic_crowds_draws_toward_the_upper_end():
    # log-uniform in 1 - x over [0.001, 1]: P(x >= 0.99) = P(1-x <= 0.01) = 1/3, P(x <= 0.9) = 1/3.
    # sd = 0.0033; tolerance 0.017 is ~5 sd.
    draws = _draws(ContinuousParameter(0.0, 0.999, "ReverseLogarithmic"))
    assert np.mean(draws >= 0.99) == pytest.approx(1 / 3, abs=0.017)
    assert np.mean(draws <= 0.9) == pytest.approx(1 / 3, abs=0.017)
    assert np.median(draws) > 0.95


def test_integer_linear_draws_are_uniform_including_the_ends():
    # 5 values, each p = 0.2, sd = 0.0028; tolerance 0.015 is ~5 sd.
    draws = _draws(IntegerParameter(1, 5, "Linear"))
    for k in range(1, 6):
        assert np.mean(draws == k) == pytest.approx(0.2, abs=0.015)


def test_integer_logarithmic_draws_follow_the_log_cells():
    # k owns [k - 0.5, k + 0.5]; P(k) = log((k+0.5)/(k-0.5)) / log(100.5/0.5).
    draws = _draws(IntegerParameter(1, 100, "Logarithmic"))
    total = math.log(100.5 / 0.5)
    for k in [1, 2, 10, 100]:
        expected = math.log((k + 0.5) / (k - 0.5)) / total
        assert np.mean(draws == k) == pytest.approx(expected, abs=0.015)
    assert IntegerParameter(1, 100, "Logarithmic").probabilities()[0] == pytest.approx(
        math.log(3) / total
    )


def test_categorical_draws_are_uniform():
    draws = _draws(CategoricalParameter(["a", "b", "c", "d"]))
    for v in "abcd":
        assert np.mean(draws == v) == pytest.approx(0.25, abs=0.015)


# -- validation: every rule raises our error, naming the range, the value and the fix -----------

BAD_RANGES = [
    (
        lambda: ContinuousParameter(0.0, 1.0, "Logarithmic"),
        ["Logarithmic", "min_value > 0", "0.0", "Fix"],
    ),
    (lambda: ContinuousParameter(-1, 1.0, "log"), ["Logarithmic", "-1"]),
    (lambda: IntegerParameter(0, 10, "Logarithmic"), ["integer", "min_value >= 1", "0"]),
    (lambda: IntegerParameter(1, 10, "ReverseLogarithmic"), ["continuous ranges only", "Fix"]),
    (
        lambda: ContinuousParameter(0.5, 1.0, "ReverseLogarithmic"),
        ["0 <= min_value < max_value < 1", "1.0"],
    ),
    (lambda: ContinuousParameter(-0.1, 0.5, "ReverseLogarithmic"), ["0 <= min_value", "-0.1"]),
    (lambda: ContinuousParameter(1.0, 1.0), ["less than max_value", "1.0", "Fix"]),
    (lambda: ContinuousParameter(2.0, 1.0), ["less than max_value", "2.0"]),
    (lambda: IntegerParameter(5, 5), ["less than max_value"]),
    (lambda: IntegerParameter(1.5, 5), ["integer", "1.5"]),
    (lambda: ContinuousParameter("0", 1), ["finite real number", "'0'"]),
    (lambda: ContinuousParameter(0, float("inf")), ["finite real number", "inf"]),
    (lambda: ContinuousParameter(0, float("nan")), ["finite real number", "nan"]),
    (lambda: ContinuousParameter(True, 2), ["finite real number", "True"]),
    (
        lambda: ContinuousParameter(0, 1, "Exponential"),
        ["scaling_type", "'Exponential'", "Logarithmic"],
    ),
    (lambda: ContinuousParameter(0, 1, None), ["scaling_type", "None"]),
    (lambda: CategoricalParameter([]), ["must not be empty", "Fix"]),
    (lambda: CategoricalParameter(["a", "b", "a"]), ["distinct", "'a'", "Fix"]),
    (lambda: CategoricalParameter("abc"), ["list of choices", "'abc'", "Fix"]),
    (lambda: CategoricalParameter([1, None]), ["string, a finite number or a bool", "None"]),
    (lambda: CategoricalParameter([1.0, float("nan")]), ["finite number", "nan"]),
]


@pytest.mark.parametrize("build,expected", BAD_RANGES)
def test_each_range_rule_raises_a_clear_validation_error(build, expected):
    with pytest.raises(ValidationError) as info:
        build()
    assert isinstance(info.value, ValueError)
    for fragment in expected:
        assert fragment in str(info.value)


def test_space_errors_name_the_hyperparameter():
    with pytest.raises(ValidationError, match=r"'lr'.*ContinuousParameter"):
        SearchSpace({"lr": (0.0, 1.0)})
    with pytest.raises(ValidationError, match="at least one"):
        SearchSpace({})
    with pytest.raises(ValidationError, match="non-empty string"):
        SearchSpace({"": ContinuousParameter(0, 1)})
    space = SearchSpace({"lr": ContinuousParameter(0, 1), "k": IntegerParameter(1, 3)})
    with pytest.raises(ValidationError, match=r"'lr'.*\[0.0, 1.0\].*2.0"):
        space.encode({"lr": 2.0, "k": 1})
    with pytest.raises(ValidationError, match=r"Missing \['k'\]"):
        space.encode({"lr": 0.5})


@settings(max_examples=200, deadline=None)
@given(
    st.one_of(st.none(), st.booleans(), st.text(max_size=4), st.floats(), st.integers()),
    st.one_of(st.none(), st.booleans(), st.text(max_size=4), st.floats(), st.integers()),
    st.one_of(
        st.none(),
        st.text(max_size=12),
        st.sampled_from(["Auto", "log", "linear", "ReverseLogarithmic"]),
    ),
)
def test_any_input_either_builds_a_valid_range_or_raises_our_error(lo, hi, scaling):
    for cls in (ContinuousParameter, IntegerParameter):
        try:
            param = cls(lo, hi, scaling)
        except ValidationError:
            continue
        assert param.min_value < param.max_value
        space = SearchSpace({"x": param})
        for u in (0.0, 0.37, 1.0):
            assert param.min_value <= space.decode(np.array([u]))["x"] <= param.max_value


def test_scaling_aliases_and_lower_case_names():
    assert ScalingType.parse("logarithmic") is ScalingType.LOGARITHMIC
    assert ScalingType.parse("Log") is ScalingType.LOGARITHMIC
    assert ScalingType.parse("reverse_logarithmic") is ScalingType.REVERSE_LOGARITHMIC
    assert ScalingType.parse("linear") is ScalingType.LINEAR
    assert ContinuousParameter(0, 1).scaling_type is ScalingType.AUTO


def test_ranges_are_immutable_and_compare_by_value():
    p = ContinuousParameter(0, 1, "Linear")
    with pytest.raises(AttributeError):
        p.min_value = 3  # type: ignore[misc]
    assert p == ContinuousParameter(0.0, 1.0, "linear")
    assert p != ContinuousParameter(0.0, 1.0, "Auto")
    assert CategoricalParameter([1, True]) != CategoricalParameter([True, 1])
    assert len({CategoricalParameter(["a"]), CategoricalParameter(["a"])}) == 1


def test_categorical_values_keep_their_types():
    space = SearchSpace({"c": CategoricalParameter([1, True, "1", 1.5])})
    for value in [1, True, "1", 1.5]:
        got = space.decode(space.encode({"c": value}))["c"]
        assert got == value and type(got) is type(value)


def test_space_round_trips_through_its_json_description():
    space = SearchSpace(
        {
            "lr": ContinuousParameter(1e-4, 1.0, "Logarithmic"),
            "m": ContinuousParameter(0.5, 0.999, "ReverseLogarithmic"),
            "k": IntegerParameter(1, 8),
            "opt": CategoricalParameter(["sgd", "adam"]),
        }
    )
    assert SearchSpace.from_dict(space.to_dict()) == space
    assert space.n_dims == 5
    assert space.size() is None
    assert (
        SearchSpace({"k": IntegerParameter(1, 8), "o": CategoricalParameter(["a", "b"])}).size()
        == 16
    )


def test_auto_ranges_spanning_three_decades_are_found():
    space = SearchSpace(
        {
            "lr": ContinuousParameter(1e-4, 1.0),
            "c": ContinuousParameter(1e-4, 1.0, "Logarithmic"),
            "n": IntegerParameter(1, 999),
            "m": IntegerParameter(1, 1000),
            "z": ContinuousParameter(0.0, 1000.0),
        }
    )
    assert space.auto_ranges_spanning_decades() == ["lr", "m"]


def test_ranges_and_spaces_survive_pickling():
    # Process and Dask executors ship training functions that may capture ranges.
    import pickle

    import cloudpickle

    space = SearchSpace(
        {
            "lr": ContinuousParameter(1e-4, 1.0, "Logarithmic"),
            "k": IntegerParameter(1, 8),
            "c": CategoricalParameter(["a", 1, True]),
        }
    )
    for dumps in (pickle.dumps, cloudpickle.dumps):
        again = pickle.loads(dumps(space))
        assert again == space and again.ranges["k"] == IntegerParameter(1, 8)
        assert pickle.loads(dumps(space.ranges["c"])).values() == ["a", 1, True]


@pytest.mark.parametrize(
    "low,high", [(2**53 - 3, 2**53), (-(2**53), -(2**53) + 3), (2**53 - 1, 2**53)]
)
def test_integer_probabilities_have_one_entry_per_value_next_to_2_53(low, high):
    # A float arange from low - 1/2 miscounted there (k - 1/2 is not a float), and Random then
    # crashed zipping the values with their probabilities.
    p = IntegerParameter(low, high, scaling_type="Linear")
    probabilities = p.probabilities()
    assert len(probabilities) == len(p.values()) == high - low + 1
    assert np.all(probabilities >= 0) and probabilities.sum() == pytest.approx(1.0)


@pytest.mark.parametrize(
    "low,scaling",
    [(2**53 - 3, "Linear"), (2**53 - 4, "Linear"), (-(2**53), "Linear"), (1, "Logarithmic")],
)
def test_integer_probabilities_are_the_decoding_frequencies(low, scaling):
    # Next to 2**53 decoding draws four neighbouring values unevenly (37/25/25/12%); the
    # probabilities used to say 25% each. Tolerance: 40,000 draws give a standard error below
    # 0.0022, so 0.012 is over 5 of them (the error was 0.125).
    p = IntegerParameter(low, low + 3 if scaling == "Linear" else 10, scaling_type=scaling)
    space = SearchSpace({"k": p})
    u = np.random.default_rng(0).random(40_000)
    drawn = np.array([space.decode(x)["k"] for x in u[:, None]]) - low
    frequencies = np.bincount(drawn, minlength=len(p.values())) / len(u)
    assert np.abs(p.probabilities() - frequencies).max() < 0.012


@pytest.mark.parametrize(
    ("name", "value", "fix"),
    [
        (
            "lr",
            {"Name": "lr", "MinValue": "0.0001", "MaxValue": "1", "ScalingType": "Logarithmic"},
            "ContinuousParameter(0.0001, 1, 'Logarithmic') (IntegerParameter",
        ),
        (
            "opt",
            {"Name": "opt", "Values": ["sgd", "adam"]},
            "CategoricalParameter(['sgd', 'adam'])",
        ),
        ("ContinuousParameterRanges", [{"Name": "lr"}], "one entry per range instead"),
    ],
)
def test_amt_api_shaped_ranges_get_their_translation_as_the_fix(name, value, fix):
    with pytest.raises(ValidationError) as info:
        SearchSpace({name: value})
    message = str(info.value)
    assert f"hyperparameter_ranges[{name!r}]" in message and "AMT's API shape" in message
    assert f"Fix: {'write it as ' if 'Parameter(' in fix else 'pass '}{fix}" in message
