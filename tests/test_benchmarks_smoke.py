"""Smoke tests of the sample-efficiency harness in ``benchmarks/``: problems, runners, simulated executor.

Fast by design (a few evaluations each); the quality comparison itself is ``benchmarks/quality.py``.
"""

from __future__ import annotations

import json
import math
import sys
from concurrent.futures import FIRST_COMPLETED, wait
from pathlib import Path

import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # `benchmarks` under plain pytest

from amtlib import ContinuousParameter, SearchSpace, Tuner
from benchmarks.problems import HARTMANN6_ARGMIN, PROBLEMS, get_problem
from benchmarks.runners import run, run_detailed, unavailable_reason
from benchmarks.simulated_executor import (
    SimulatedParallelExecutor,
    random_durations,
)


@pytest.mark.parametrize("name", sorted(PROBLEMS))
@pytest.mark.parametrize("scaling", ["as-given", "auto", "linear"])
def test_every_problem_gives_a_finite_loss_at_a_valid_point(name, scaling):
    problem = get_problem(name, scaling)
    point = problem.valid_point()
    SearchSpace(problem.hyperparameter_ranges).validate(point)  # or ValidationError
    assert math.isfinite(problem(point))


@pytest.mark.parametrize("name", ["branin", "hartmann6", "ackley5", "lr_toy", "mixed"])
def test_synthetic_minima_are_right_at_their_optimisers(name):
    problem = PROBLEMS[name]
    assert problem(problem.optimum) == pytest.approx(problem.f_min, abs=1e-9)


def test_branin_has_its_three_minima():
    branin = PROBLEMS["branin"]
    for x1, x2 in [(-math.pi, 12.275), (math.pi, 2.275), (3 * math.pi, 2.475)]:
        assert branin({"x1": x1, "x2": x2}) == pytest.approx(0.397887357729738, abs=1e-9)


def test_with_scaling_forces_every_numeric_range():
    problem = PROBLEMS["lr_toy"]
    assert problem.has_nonlinear_scaling
    for kind, expected in [("auto", "Auto"), ("linear", "Linear")]:
        forced = problem.with_scaling(kind)
        assert forced.scaling == kind
        numeric = [p for p in forced.hyperparameter_ranges.values() if hasattr(p, "scaling_type")]
        assert numeric and all(p.scaling_type.value == expected for p in numeric)
    assert problem.with_scaling("as-given") is problem


@pytest.mark.parametrize("method", ["amtlib-random", "optuna-tpe"])
def test_runner_gives_five_losses(method):
    if method == "optuna-tpe" and unavailable_reason(method):
        pytest.skip(unavailable_reason(method))
    problem = PROBLEMS["lr_toy"]
    losses = run(method, problem, seed=0, n_evals=5)
    assert len(losses) == 5 and all(math.isfinite(v) and v >= problem.f_min for v in losses)
    assert run(method, problem, seed=0, n_evals=5) == losses


def test_runner_in_parallel_matches_the_random_sequence():
    # Random proposes the same configurations whatever the parallelism (docs/concepts.md, Strategies);
    # only the completion order differs.
    problem = PROBLEMS["branin"]
    sequential = run_detailed("amtlib-random", problem, seed=3, n_evals=12)
    parallel = run_detailed("amtlib-random", problem, seed=3, n_evals=12, parallel=4)
    assert sorted(parallel.losses) == sorted(sequential.losses)
    assert parallel.losses != sequential.losses
    assert parallel.info["idle_completions"] == 0


def test_simulated_executor_releases_in_finishing_order():
    durations = [5.0, 1.0, 2.0, 1.0, 0.5]
    executor = SimulatedParallelExecutor(2, lambda task: durations[task.seq], total_tasks=5)
    futures = [executor.submit(lambda k=k: k * 10) for k in range(2)]
    assert [f.done() for f in futures] == [False, True]  # both slots full: task 1 ends first
    futures.append(executor.submit(lambda: 20))  # starts at t=1, ends at 3
    assert [f.done() for f in futures] == [False, True, True]
    futures.append(executor.submit(lambda: 30))  # starts at 3, ends at 4
    assert not futures[0].done() and futures[3].done()
    futures.append(executor.submit(lambda: 40))  # the last: everything is released
    assert executor.completion_order == [1, 2, 3, 4, 0]
    assert executor.start_times == {0: 0.0, 1: 0.0, 2: 1.0, 3: 3.0, 4: 4.0}
    assert executor.finish_times[0] == 5.0 and executor.now == 5.0
    assert [f.result() for f in futures] == [0, 10, 20, 30, 40]


def test_simulated_executor_idle_fallback_releases_without_total():
    executor = SimulatedParallelExecutor(3, lambda task: 1.0 + task.seq, idle_timeout=0.01)
    with executor:
        futures = [executor.submit(abs, -k) for k in range(2)]
        done, _ = wait(futures, timeout=10, return_when=FIRST_COMPLETED)
        assert [f.result() for f in done] == [0]
        assert executor.idle_completions == 1
    assert all(f.done() for f in futures) and executor.completion_order == [0, 1]


def _tuned(seed, idle_timeout, total_tasks):
    executor = SimulatedParallelExecutor(
        4, random_durations(seed), total_tasks=total_tasks, idle_timeout=idle_timeout
    )
    tuner = Tuner(
        lambda hp: (hp["x"] - 0.3) ** 2,
        objective_metric_name="loss",
        hyperparameter_ranges={"x": ContinuousParameter(0.0, 1.0)},
        objective_type="Minimize",
        strategy="Random",
        max_jobs=10,
        max_parallel_jobs=4,
        random_seed=seed,
        store=":memory:",
        executor=executor,
        job_name="sim",
    )
    with executor:
        job = tuner.fit(progress=False)
    values = [j.objective_value for j in job.training_jobs]
    return executor.completion_order, executor.finish_times, values, executor.idle_completions


def test_simulated_executor_is_deterministic_with_the_tuner():
    first = _tuned(seed=1, idle_timeout=None, total_tasks=10)
    assert first == _tuned(seed=1, idle_timeout=None, total_tasks=10)
    assert first[0] != sorted(first[0])  # completions really came out of order
    assert first[3] == 0
    # Without the total, the idle fallback releases the last three: same order, same times.
    fallback = _tuned(seed=1, idle_timeout=0.02, total_tasks=None)
    assert fallback[:3] == first[:3] and fallback[3] == 3


def test_ratio_evidence_separates_a_real_difference_from_bimodal_noise():
    import numpy as np

    from benchmarks.quality import ratio_evidence

    def parse(text):
        interval, p = text.split(", p(worse)=")
        low, high = interval.removeprefix("90% CI ").removesuffix("x").split(" to ")
        return float(low), float(high), float(p)

    rng = np.random.default_rng(1)
    reference = rng.lognormal(np.log(1e-3), 0.3, size=10)
    low, high, p = parse(ratio_evidence(reference * 4.0, reference))
    assert low > 1.0 and p < 0.01  # four times worse, every seed: certain
    # Half the seeds stuck at 0.05, the others at ~1e-6: the same distribution drawn twice.
    bimodal = [np.where(rng.random(10) < 0.4, 0.05, rng.lognormal(np.log(1e-6), 1.0, 10))
               for _ in range(2)]  # fmt: skip
    low, high, p = parse(ratio_evidence(bimodal[0], bimodal[1]))
    assert low < 1.0 < high and p > 0.05


def test_lag_floor_is_how_much_the_sequential_run_still_gained_in_its_last_evaluations():
    import numpy as np

    from benchmarks.quality import lag_floor

    # Regret shrinking by 0.7 per evaluation: 3 evaluations before the end it was 0.7**-3 times
    # the final one (2.9x), so 4 parallel workers cannot get within 1.25x of it.
    shrinking = np.tile(0.7 ** np.arange(50), (5, 1))
    assert lag_floor(shrinking, 4) == pytest.approx(0.7**-3, rel=1e-4)  # 1e-12 guard in the ratio
    assert lag_floor(shrinking, 1) == pytest.approx(1.0)
    # A run that stopped improving at evaluation 30 leaves no floor.
    flat = np.tile(np.minimum.accumulate(np.r_[np.linspace(1, 0.1, 30), np.full(20, 0.1)]), (5, 1))
    assert lag_floor(flat, 4) == pytest.approx(1.0)


def test_suggestion_speed_is_timed_from_n_observations_with_one_running_job(monkeypatch):
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "benchmarks"))
    import suggest_speed

    from amtlib.strategies import BayesianStrategy

    seen: list[tuple[int, int]] = []

    class Recording(BayesianStrategy):
        def ask(self, n):
            seen.append((len(self._observed), len(self._pending)))
            return super().ask(n)

    monkeypatch.setattr(suggest_speed, "BayesianStrategy", Recording)
    times = suggest_speed.amtlib_times(12, 2, "Linear")
    cycle = suggest_speed.CYCLE
    assert len(times) == 2 * cycle and all(t > 0 for t in times)
    # Per repeat: the running job is launched, one suggestion is told, then the timed ones, each
    # told before the next (so they see 12, 13, ... observations and always one running job).
    timed = [(12 + k, 1) for k in range(cycle)]
    assert seen == ([(11, 0), (11, 1), *timed]) * 2


def test_holdout_problems_have_their_stated_minima():
    from benchmarks import holdout

    at = {
        "levy10": {f"x{i}": 1.0 for i in range(10)},
        "rosenbrock4": {f"x{i}": 1.0 for i in range(4)},
        "styblinski_tang4": {f"x{i}": -2.903534027771177 for i in range(4)},
        "six_hump_camel": {"x0": 0.08984201368301331, "x1": -0.7126564032704135},
        "hartmann6_in_12": {
            **{f"x{i}": v for i, v in enumerate(HARTMANN6_ARGMIN, start=1)},
            **{f"x{i}": 0.3 for i in range(7, 13)},
        },
        "boosting_toy": {
            "n_estimators": 10,
            "max_depth": 5,
            "learning_rate": 1.0,
            "subsample": 0.8,
        },
    }
    for name, point in at.items():
        problem = holdout.PROBLEMS[name]
        SearchSpace(problem.hyperparameter_ranges).validate(point)
        assert problem(point) == pytest.approx(problem.f_min, abs=1e-6), name


def test_holdout_noisy_problem_is_reproducible_and_scored_without_noise():
    from benchmarks import holdout

    point = {"x0": 0.114614, "x1": 0.555649, "x2": 0.852547}
    noisy = holdout.PROBLEMS["h3_noisy"]
    assert noisy(point) == noisy(dict(point))  # the same noise for the same configuration
    assert noisy(point) != pytest.approx(holdout.hartmann3(point), abs=1e-6)
    assert holdout.hartmann3(point) == pytest.approx(noisy.f_min, abs=1e-4)


def test_holdout_runs_are_cached_and_reported(tmp_path):
    from benchmarks import holdout

    first = holdout.run_one("six_hump_camel", "amtlib-random", 0, 4, tmp_path, "code-a")
    assert first is not None and math.isfinite(first["score"])
    again = holdout.run_one("six_hump_camel", "amtlib-random", 0, 4, tmp_path, "code-a")
    assert again == first
    text = holdout.report(tmp_path, ["six_hump_camel"], ["amtlib-random"], 1, 4)
    assert "six_hump_camel" in text and f"{first['score']:.4g}" in text


def test_holdout_parallel_runs_are_stored_apart_and_compared_with_sequential(tmp_path):
    from benchmarks import holdout

    runs = {
        parallel: [
            holdout.run_one("six_hump_camel", "amtlib-bayesian", s, 8, tmp_path, "c", parallel)
            for s in range(3)
        ]
        for parallel in (1, 2)
    }
    assert (tmp_path / "runs" / "e8-p2" / "six_hump_camel").is_dir()
    text = holdout.report(tmp_path, ["six_hump_camel"], ["amtlib-bayesian"], 3, 8, parallel=2)
    assert "8 evaluations, 2 parallel jobs" in text and "--parallel 2" in text
    regrets = {
        p: np.median([r["score"] for r in rs]) - holdout.PROBLEMS["six_hump_camel"].f_min
        for p, rs in runs.items()
    }
    row = [line for line in text.splitlines() if line.startswith("| six_hump_camel | ")][-1]
    assert f"| {regrets[1]:.3g} | {regrets[2]:.3g} | {regrets[2] / regrets[1]:.3g}x |" in row
    assert "within 1.25x of sequential" in text and "of 1 problems" in text


def test_report_only_prints_and_never_blanks_a_committed_report(tmp_path, capsys):
    # The per-run caches are not in git: in a fresh clone --report-only used to overwrite the
    # committed reports with empty tables (and with fewer seeds than they were made with).
    from benchmarks import holdout, quality

    report = tmp_path / "report-e4.md"
    report.write_text("committed\n")
    holdout.main(["--report-only", "--write", "--results", str(tmp_path), "--evals", "4",
                  "--problems", "six_hump_camel", "--methods", "amtlib-random", "--seeds", "1"])  # fmt: skip
    assert report.read_text() == "committed\n"
    assert (
        "not written: no stored runs of amtlib-random on six_hump_camel" in capsys.readouterr().err
    )
    holdout.run_one("six_hump_camel", "amtlib-random", 0, 4, tmp_path, "code")
    args = ["--report-only", "--results", str(tmp_path), "--evals", "4",
            "--problems", "six_hump_camel", "--methods", "amtlib-random", "--seeds", "1"]  # fmt: skip
    holdout.main(args)
    assert report.read_text() == "committed\n"  # printed only
    holdout.main([*args, "--write"])
    assert "six_hump_camel" in report.read_text()
    quality.main(["--report-only", "--write", "--results", str(tmp_path), "--problems", "branin",
                  "--methods", "amtlib-random", "--seeds", "1"])  # fmt: skip
    assert not list(tmp_path.glob("report-e50-p1-*.md"))


@pytest.mark.parametrize(
    ("module", "argv"),
    [
        ("quality", ["--evals", "0"]),
        ("quality", ["--parallel", "0"]),
        ("holdout", ["--evals", "0"]),
        ("multifidelity", ["--max-resource", "0"]),
    ],
)
def test_benchmark_scripts_refuse_counts_below_one_before_running(module, argv, capsys):
    import importlib

    with pytest.raises(SystemExit) as exit_info:
        importlib.import_module(f"benchmarks.{module}").main(argv)
    assert exit_info.value.code == 2 and "must be" in capsys.readouterr().err


def test_timing_scripts_write_where_told_with_the_machine(tmp_path):
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "benchmarks"))
    import overhead
    import suggest_speed

    overhead.main(["--trials", "3", "--skip-optuna", "--results", str(tmp_path)])
    suggest_speed.main(
        ["--sizes", "8", "--repeats", "1", "--skip-optuna", "--results", str(tmp_path)]
    )
    for name in ("overhead.json", "suggest_speed.json"):
        record = json.loads((tmp_path / name).read_text())
        assert record["machine"]["cores"] >= 1 and record["machine"]["python"].startswith("3.")
    assert json.loads((tmp_path / "overhead.json").read_text())["trials_per_second"]
