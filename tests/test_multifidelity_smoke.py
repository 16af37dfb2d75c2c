"""Smoke tests of the multi-fidelity benchmark (``benchmarks/multifidelity.py``, ``mf_problems.py``).

Fast by design (R = 9 and budgets of a few dozen epochs); the comparison itself is the benchmark.
"""

from __future__ import annotations

import json
import math
import pickle
import sys
from dataclasses import replace
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # `benchmarks` under plain pytest

from benchmarks.mf_problems import PROBLEMS, config_seed
from benchmarks.multifidelity import (
    DEFAULT_METHODS,
    METHODS,
    METRIC,
    best_at,
    best_curve,
    epochs_to_reach,
    events_from_training_jobs,
    main,
    run_amtlib,
    run_optuna,
    tune_amtlib,
)

AMTLIB_METHODS = [m for m in METHODS if METHODS[m].library == "amtlib"]
OPTUNA_METHODS = [m for m in METHODS if METHODS[m].library == "optuna"]


def _small(name: str, R: int = 9):
    return replace(PROBLEMS[name], max_resource=R)


@pytest.mark.parametrize("name", sorted(PROBLEMS))
def test_each_problem_trains_epochs_and_resumes_from_a_pickle_exactly(name):
    problem = PROBLEMS[name]
    hp = problem.valid_point()
    straight = problem.curve(hp, epochs=3)
    assert all(math.isfinite(v) and v >= 0 for v in straight)
    model = problem.start(hp)
    first = problem.train_epoch(model, hp, 1)
    model = pickle.loads(pickle.dumps(model))  # what a paused and promoted job does
    rest = [problem.train_epoch(model, hp, e) for e in (2, 3)]
    assert [first, *rest] == straight


def test_config_seed_depends_on_the_configuration_only():
    assert config_seed({"a": 1.0, "b": "x"}) == config_seed({"b": "x", "a": 1.0})
    assert config_seed({"a": 1.0}) != config_seed({"a": 2.0})


@pytest.mark.parametrize("method", AMTLIB_METHODS)
def test_amtlib_methods_spend_the_budget_and_count_each_epoch_once(method):
    R, budget = 9, 72
    result = run_amtlib(METHODS[method], _small("lcurve", R), seed=0, budget=budget)
    acc = result["accounting"]
    assert result["failed"] == 0
    assert acc["reports"] == acc["trained"] == len(result["events"])
    assert acc["consecutive"] and acc["order_matches"]
    # launches stop once the budget is spent; the last job may run on to R
    assert budget <= acc["trained"] < budget + R
    if method == "random":
        assert result["jobs"] == budget // R == result["full_length"]
    if method in ("hyperband-promotion", "hyperband-bayesian-promotion"):
        assert result["promotions"] > 0


def test_a_promoted_job_continues_from_its_checkpoint_without_recounting_epochs():
    # sgd-digits: the checkpoint is a pickled SGDClassifier; seed 0 promotes at least one job
    job, trained = tune_amtlib(
        METHODS["hyperband-promotion"], _small("sgd-digits"), seed=0, budget=45
    )
    promoted = [j for j in job.training_jobs if any(e["event"] == "promoted" for e in j.history)]
    assert promoted
    for j in promoted:
        steps = [r.step for r in j.reports]
        assert steps == list(range(1, len(steps) + 1))  # no epoch redone, none skipped
        paused = [e["rung"] for e in j.history if e["event"] == "paused"]
        resumed = [e["step"] for e in j.history if e["event"] == "promoted"]
        assert resumed == paused[: len(resumed)]  # resumed right after the rung it paused at
        assert sum(i == j.index for i, _ in trained) == len(steps)
        # the curve after the pause is the one of uninterrupted training
        straight = PROBLEMS["sgd-digits"].curve(j.hyperparameters, epochs=len(steps))
        assert [r.metrics[METRIC] for r in j.reports] == straight
    assert len(trained) == sum(len(j.reports) for j in job.training_jobs)
    events = events_from_training_jobs(job.training_jobs)
    assert sum(ends for *_, ends in events) >= len(job.training_jobs) + len(promoted)


@pytest.mark.parametrize("method", OPTUNA_METHODS)
def test_optuna_methods_run_a_few_trials_within_the_budget(method):
    R, budget = 9, 45
    result = run_optuna(METHODS[method], _small("lcurve", R), seed=0, budget=budget)
    assert result["failed"] == 0
    assert result["jobs"] >= budget // R
    assert budget <= len(result["events"]) < budget + R
    assert all(math.isfinite(v) for _, _, v, _ in result["events"])


def test_best_so_far_uses_values_known_when_jobs_end():
    events = [
        [0, 1, 0.9, False],
        [0, 2, 0.5, True],  # job 0 ends (e.g. paused) at 0.5
        [1, 1, 0.1, False],  # an intermediate value: not an objective yet
        [1, 2, 0.7, True],
        [0, 3, 0.4, True],  # job 0 promoted, ends again
    ]
    curve, total = best_curve(events)
    assert total == 5
    assert curve == [[2, 0.5], [5, 0.4]]
    assert best_at(curve, 1) == math.inf
    assert best_at(curve, 4) == 0.5
    assert epochs_to_reach(curve, 0.45, budget=5) == 5
    assert epochs_to_reach(curve, 0.45, budget=4) == math.inf


def test_cli_runs_caches_and_reports(tmp_path, capsys):
    argv = [
        "--problems",
        "lcurve",
        "--seeds",
        "2",
        "--configs",
        "3",
        "--max-resource",
        "9",
        "--jobs",
        "1",
        "--results",
        str(tmp_path),
    ]
    assert main(argv) == 0
    out = capsys.readouterr()
    runs = sorted((tmp_path / "runs").rglob("*.json"))
    assert len(runs) == 2 * len(DEFAULT_METHODS)
    assert (tmp_path / "report-c3-r9.md").read_text() in out.out
    assert "Target 1" in out.out and "Target 2" in out.out and "Target 3" in out.out
    assert "stopping mode, <= Optuna" in out.out and "promotion mode, <= Optuna" in out.out
    curves = json.loads((tmp_path / "curves-c3-r9.json").read_text())
    assert set(curves["lcurve"]["methods"]) == set(DEFAULT_METHODS)
    stamps = [p.stat().st_mtime_ns for p in runs]
    assert main(argv) == 0  # everything is cached: nothing runs again
    assert "All runs are stored" in capsys.readouterr().err
    assert [p.stat().st_mtime_ns for p in runs] == stamps
