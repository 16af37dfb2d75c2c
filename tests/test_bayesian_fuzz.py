"""The Bayesian strategy on generated spaces and outcomes: every suggestion valid, none repeated.

A standing slice of the fuzzing done by hand (1,100 seeded cases, 3,400 Hypothesis ones): mixed
spaces with every scaling, narrow and single-value ranges, categoricals of mixed types; several
jobs running at once, told back in any order; failures in a pattern or a whole region; values of
any magnitude. Warnings are errors here: a suggestion must not come with a numerical complaint.
"""

from __future__ import annotations

import random
import warnings

import numpy as np
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from amtlib import CategoricalParameter, ContinuousParameter, IntegerParameter, SearchSpace
from amtlib.records import TrainingJobStatus, Trial
from amtlib.strategies import BayesianStrategy

SCALINGS = ["Linear", "Logarithmic", "ReverseLogarithmic", "Auto"]


@st.composite
def continuous(draw):
    low = draw(st.sampled_from([-5.0, 0.0, 1e-4, 0.5, 2.0]))
    span = draw(st.sampled_from([1e-9, 0.3, 1.0, 1e3]))
    scaling = draw(st.sampled_from(SCALINGS))
    if scaling == "ReverseLogarithmic" and not (low >= 0 and low + span < 1):
        scaling = "Linear"
    if scaling == "Logarithmic" and low <= 0:
        scaling = "Linear"
    return ContinuousParameter(low, low + span, scaling)


@st.composite
def integer(draw):
    low = draw(st.sampled_from([-3, 0, 1, 7]))
    high = low + draw(st.sampled_from([1, 2, 9, 500]))
    scaling = "Logarithmic" if low >= 1 and draw(st.booleans()) else "Linear"
    return IntegerParameter(low, high, scaling)


categorical = st.lists(
    st.one_of(st.text(min_size=1, max_size=3), st.integers(-3, 3), st.booleans()),
    min_size=1,
    max_size=6,
    unique_by=lambda v: (type(v).__name__, v),
).map(CategoricalParameter)


def _typed(param, value) -> bool:
    """A plain int for an integer range, a float for a continuous one, a member itself otherwise."""
    if isinstance(param, IntegerParameter):
        return type(value) is int
    if isinstance(param, ContinuousParameter):
        return type(value) is float
    return any(type(value) is type(v) and value == v for v in param.values())


@settings(max_examples=25, deadline=None, suppress_health_check=list(HealthCheck))
@given(
    ranges=st.lists(st.one_of(continuous(), integer(), categorical), min_size=1, max_size=5),
    seed=st.integers(0, 99),
    jobs=st.integers(8, 14),
    parallel=st.integers(1, 3),
    failures=st.sampled_from([None, "every third", "a region"]),
    scale=st.sampled_from([1e-14, 1.0, 1e150]),
)
def test_suggestions_are_valid_new_and_quiet(ranges, seed, jobs, parallel, failures, scale):
    space = SearchSpace({f"p{i}": r for i, r in enumerate(ranges)})
    strategy = BayesianStrategy(space, seed=seed)
    centre = np.random.default_rng(seed).random(space.n_dims)
    order = random.Random(seed)
    seen, running, asked, told = set(), [], 0, 0
    size = space.size()
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        while told < jobs:
            while asked < jobs and len(running) < parallel:
                new = strategy.ask(1)
                if not new:
                    break
                params = new[0]
                assert space.validate(params) == params
                for name, value in params.items():
                    assert _typed(space.ranges[name], value), (name, value)
                assert space.key(params) not in seen
                seen.add(space.key(params))
                running.append((asked, params))
                asked += 1
            if not running:  # only a finite space may run dry, and only once it is used up
                assert size is not None and len(seen) == size
                return
            index, params = running.pop(order.randrange(len(running)))
            u = space.encode(params)
            failed = (failures == "every third" and index % 3 == 2) or (
                failures == "a region" and u[0] < 0.4
            )
            loss = None if failed else scale * float(((u - centre) ** 2).sum())
            status = TrainingJobStatus.FAILED if failed else TrainingJobStatus.COMPLETED
            strategy.tell(Trial(index, params, status, loss))
            told += 1
