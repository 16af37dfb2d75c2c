"""The Tuner end to end: results, failures, seeds, executors, validation."""

from __future__ import annotations

import functools
import re
import threading
import warnings
from concurrent.futures import ThreadPoolExecutor

import _objectives as obj
import pytest
from _tuners import tuner

from amtlib import (
    CategoricalParameter,
    ContinuousParameter,
    IntegerParameter,
    ObjectiveStatus,
    ScalingWarning,
    TrainingJobStatus,
    Tuner,
    TuningJob,
    TuningJobFailedError,
    ValidationError,
)
from amtlib.executors import InlineExecutor, ProcessExecutor
from amtlib.records import ObjectiveType
from amtlib.strategies import RandomStrategy

RANGES = {"x": ContinuousParameter(0.0, 1.0), "opt": CategoricalParameter(["a", "b"])}


def make(tmp_path, train=obj.quadratic, **kw):
    defaults = dict(hyperparameter_ranges=RANGES, max_jobs=12, job_name="t")
    return tuner(train, **{"store": tmp_path / "s.db", **defaults, **kw})


def test_results_are_complete_and_ordered(tmp_path):
    job = make(tmp_path).fit()
    jobs = job.training_jobs
    assert [j.index for j in jobs] == list(range(12))
    assert [j.name for j in jobs] == [f"t-{i:03d}" for i in range(1, 13)]
    assert all(j.status is TrainingJobStatus.COMPLETED for j in jobs)
    best = job.best_training_job
    assert best.objective_value == min(j.objective_value for j in jobs)
    assert best.metrics == {"loss": best.objective_value, "accuracy": 1.0 - best.objective_value}
    assert set(best.hyperparameters) == {"x", "opt"}
    d = job.describe()
    assert d["HyperParameterTuningJobName"] == "t"
    assert d["HyperParameterTuningJobStatus"] == "Completed"
    assert d["TrainingJobStatusCounters"] == {
        "Completed": 12,
        "InProgress": 0,
        "RetryableError": 0,
        "NonRetryableError": 0,
        "Stopped": 0,
    }
    assert d["ObjectiveStatusCounters"] == {"Succeeded": 12, "Pending": 0, "Failed": 0}
    b = d["BestTrainingJob"]
    assert b["TrainingJobName"] == best.name
    assert b["TunedHyperParameters"] == best.hyperparameters
    assert b["FinalHyperParameterTuningJobObjectiveMetric"]["MetricName"] == "loss"
    assert b["FinalHyperParameterTuningJobObjectiveMetric"]["Value"] == best.objective_value
    assert b["TrainingJobStatus"] == "Completed"
    assert isinstance(d["ConsumedResources"]["RuntimeInSeconds"], int)
    records = job.to_records()
    assert [r["TrainingJobName"] for r in records] == [j.name for j in jobs]
    assert records[0]["x"] == jobs[0].hyperparameters["x"]
    frame = job.dataframe()
    assert list(frame["FinalObjectiveValue"]) == [j.objective_value for j in jobs]
    assert "rank" in job.leaderboard() and best.name in job.leaderboard().splitlines()[2]
    assert TuningJob.load("t", str(tmp_path / "s.db")).describe() == d


def _stopstep_plus_one(hp):
    return {"loss": hp["StopStep"] + 1.0, "FailureReason": "a metric"}


def test_a_hyperparameter_named_like_a_record_column_keeps_its_value(tmp_path):
    # It used to be overwritten by the column (None here) in to_records() and dataframe(), while a
    # metric of such a name was kept under "metric:" (a config fuzz).
    job = make(
        tmp_path,
        train=_stopstep_plus_one,
        hyperparameter_ranges={"StopStep": IntegerParameter(1, 9)},
    ).fit()
    for record, j in zip(job.to_records(), job.training_jobs, strict=True):
        assert record["hyperparameter:StopStep"] == j.hyperparameters["StopStep"]
        assert record["StopStep"] is None and record["FailureReason"] is None
        assert record["metric:FailureReason"] == "a metric"


def test_maximize_picks_the_largest(tmp_path):
    job = make(tmp_path, objective_metric_name="accuracy", objective_type="Maximize").fit()
    assert job.best_training_job.objective_value == max(
        j.objective_value for j in job.training_jobs
    )


@pytest.mark.parametrize(
    "name",
    ["loss", "val_loss", "validation:error", "test-rmse", "NLL", "NegativeLogLikelihood"],
)
def test_a_loss_left_to_the_default_maximize_is_warned_about(name):
    with pytest.warns(UserWarning, match=rf"'Maximize'.*{name!r} reads like something to minimise"):
        tuner = Tuner(obj.plain_float, name, RANGES, max_jobs=1, store=":memory:")
    assert tuner.objective_type is ObjectiveType.MAXIMIZE  # still AMT's default


@pytest.mark.parametrize(
    ("name", "given"),
    [
        ("accuracy", None),
        ("f1", None),
        ("terrain_score", None),
        ("neg_log_loss", None),  # scikit-learn's scorers negate losses: maximised
        ("cv:neg_mean_squared_error", None),
        ("loss", "Maximize"),
        ("loss", "min"),
    ],
)
def test_no_warning_for_gain_like_names_or_an_explicit_objective_type(name, given, recwarn):
    kw = {} if given is None else {"objective_type": given}
    Tuner(obj.plain_float, name, RANGES, max_jobs=1, store=":memory:", **kw)
    assert [str(w.message) for w in recwarn] == []


def test_an_omitted_max_jobs_is_one_job_and_says_so(recwarn):
    with pytest.warns(UserWarning, match=r"max_jobs was not given.*1 training job") as w:
        tuner = Tuner(obj.plain_float, "loss", RANGES, objective_type="Minimize", store=":memory:")
    assert tuner.limits.max_jobs == 1 and w[0].filename == __file__
    grid = {"k": IntegerParameter(1, 3)}
    Tuner(
        obj.plain_float, "loss", grid, objective_type="Minimize", strategy="Grid", store=":memory:"
    )
    assert [str(r.message) for r in recwarn] == []  # Grid: the grid's size, nothing to say


def test_a_float_return_value_is_the_objective(tmp_path):
    job = make(tmp_path, train=obj.plain_float).fit()
    assert all(j.metrics == {"loss": j.objective_value} for j in job.training_jobs)


def test_static_hyperparameters_reach_train_and_are_recorded(tmp_path):
    job = make(
        tmp_path,
        train=obj.echo_static,
        hyperparameter_ranges={"x": ContinuousParameter(0, 1)},
        static_hyperparameters={"offset": 10.0, "epochs": 3},
    ).fit()
    assert all(
        j.objective_value >= 10.0 and j.metrics["epochs_seen"] == 3 for j in job.training_jobs
    )
    assert all(set(j.hyperparameters) == {"x"} for j in job.training_jobs)
    assert job.describe()["StaticHyperParameters"] == {"offset": 10.0, "epochs": 3}


def test_an_exception_fails_only_its_job_with_traceback(tmp_path):
    job = make(tmp_path, train=obj.raise_when_large, max_jobs=20).fit()
    failed = [j for j in job.training_jobs if j.hyperparameters["x"] > 0.5]
    ok = [j for j in job.training_jobs if j.hyperparameters["x"] <= 0.5]
    assert failed and ok and len(job.training_jobs) == 20
    for j in failed:
        assert j.status is TrainingJobStatus.FAILED
        assert j.objective_status is ObjectiveStatus.FAILED
        assert j.failure_reason.startswith("ValueError: x too large")
        assert "raise_when_large" in j.traceback
    assert all(j.status is TrainingJobStatus.COMPLETED for j in ok)
    assert job.describe()["TrainingJobStatusCounters"]["NonRetryableError"] == len(failed)


def test_missing_or_non_finite_objective_fails_the_objective_only(tmp_path):
    job = make(tmp_path, train=obj.missing_or_nan_objective, max_jobs=20).fit()
    for j in job.training_jobs:
        assert j.status is TrainingJobStatus.COMPLETED
        x = j.hyperparameters["x"]
        if x > 0.66:
            assert j.objective_status is ObjectiveStatus.FAILED
            assert "without the objective metric 'loss'" in j.failure_reason
        elif x > 0.33:
            assert j.objective_status is ObjectiveStatus.FAILED
            assert "not finite" in j.failure_reason
            assert j.metrics["loss"] is None
        else:
            assert j.objective_status is ObjectiveStatus.SUCCEEDED
    assert job.best_training_job.hyperparameters["x"] <= 0.33


def test_stops_early_when_every_first_job_fails(tmp_path):
    tuner = make(tmp_path, train=obj.always_raises, max_jobs=50, initial_failure_limit=4)
    with pytest.raises(
        TuningJobFailedError, match=r"first 4 training jobs.*broken training script"
    ):
        tuner.fit()
    job = TuningJob.load("t", str(tmp_path / "s.db"))
    assert len(job.training_jobs) == 4
    assert job.status == "Failed"
    assert "broken training script" in job.describe()["FailureReason"]


def test_the_failure_error_carries_the_records_and_resuming_it_warns(tmp_path):
    tuner = make(tmp_path, train=obj.always_raises, max_jobs=6, initial_failure_limit=4)
    with pytest.raises(TuningJobFailedError) as info:
        tuner.fit()
    message = str(info.value)
    assert ".tuning_job.training_jobs" in message and "new job_name" in message
    assert ".." not in message
    failed = info.value.tuning_job
    assert failed.status == "Failed" and len(failed.training_jobs) == 4
    assert all("broken training script" in j.traceback for j in failed.training_jobs)
    # Re-running the same job_name resumes it: the failures count toward max_jobs, and it says so.
    with pytest.warns(UserWarning) as w:  # the function changed too, and that is said as well
        job = make(tmp_path, max_jobs=6, initial_failure_limit=4).fit()
    assert len(job.training_jobs) == 6 and job.status == "Completed"
    messages = sorted(str(r.message) for r in w)
    assert len(messages) == 2 and {r.filename for r in w} == {__file__}  # the fit() call
    assert re.search(r"ended Failed.*4 failed training jobs.*so 2 more", messages[0])
    assert "another training function (_objectives.quadratic, not " in messages[1]


def _train_v1(hp):
    return {"loss": hp["x"]}


def _train_v2(hp):
    return {"loss": hp["x"] * 2}  # a bug fix, say


def test_resuming_with_another_training_function_warns(tmp_path, recwarn):
    make(tmp_path, train=_train_v1, max_jobs=2).fit()
    make(tmp_path, train=_train_v1, max_jobs=3).fit()  # the same function: silent
    assert [str(w.message) for w in recwarn] == []
    with pytest.warns(UserWarning, match=r"_train_v2, not .*_train_v1\).*3 training jobs") as w:
        job = make(tmp_path, train=_train_v2, max_jobs=4).fit()
    assert len(job.training_jobs) == 4 and w[0].filename == __file__
    with pytest.warns(UserWarning, match=r"_train_v2, with other code"):
        # Redefined under the same name, as after an edit of the script.
        exec(
            compile("def _train_v2(hp):\n    return {'loss': -hp['x']}\n", __file__, "exec"),
            ns := {},
        )
        ns["_train_v2"].__module__, ns["_train_v2"].__qualname__ = __name__, "_train_v2"
        make(tmp_path, train=ns["_train_v2"], max_jobs=5).fit()


def test_the_function_fingerprint_ignores_where_the_code_sits():
    from amtlib._run import function_fingerprint

    source = "def f(hp):\n    return {{'loss': hp['x'] + {c}}}\n"
    prints = []
    for offset, constant in [(0, 1), (5, 1), (0, 2)]:
        ns: dict = {}
        exec(compile("\n" * offset + source.format(c=constant), "a.py", "exec"), ns)
        prints.append(function_fingerprint(ns["f"]))
    assert prints[0] == prints[1] != prints[2]
    assert function_fingerprint(functools.partial(_train_v1))["name"].endswith("._train_v1")


def test_fingerprints_compare_code_under_one_python_and_names_across_pythons():
    from amtlib._run import same_function

    def print_(name, code, python="3.11"):
        return {"name": name, "code": code, "python": python}

    # The same code run as a script, then imported: one function.
    assert same_function(print_("__main__.train", "a"), print_("mod.train", "a"))
    assert not same_function(print_("mod.train", "a"), print_("mod.train", "b"))
    # Bytecode differs between Python versions: only the name can be compared.
    assert same_function(print_("mod.train", "a", "3.10"), print_("mod.train", "b", "3.11"))
    assert not same_function(print_("mod.train", "a", "3.10"), print_("mod.other", "a", "3.11"))
    assert same_function({"name": "mod.train", "code": None}, print_("mod.train", "b"))


def test_failure_limit_none_spends_the_budget(tmp_path):
    job = make(tmp_path, train=obj.always_raises, max_jobs=8, initial_failure_limit=None).fit()
    assert len(job.training_jobs) == 8
    assert job.best_training_job is None
    assert "BestTrainingJob" not in job.describe()


def test_a_dead_worker_process_fails_only_its_job(tmp_path):
    job = make(
        tmp_path, train=obj.die_when_large, max_jobs=14, max_parallel_jobs=2, executor=None
    ).fit()
    dead = [j for j in job.training_jobs if j.hyperparameters["x"] > 0.7]
    assert dead and len(job.training_jobs) == 14
    for j in job.training_jobs:
        if j in dead:
            assert j.status is TrainingJobStatus.FAILED and j.retryable
            assert "code 3" in j.failure_reason
        else:
            assert j.status is TrainingJobStatus.COMPLETED
    assert job.describe()["TrainingJobStatusCounters"]["RetryableError"] == len(dead)


SEQUENCE_CASES = [
    ("inline", 1),
    ("inline", 4),
    ("thread", 3),
    ("process", 2),
]


def test_jobs_that_finished_together_are_told_in_launch_order(tmp_path, monkeypatch):
    # The inline executor finishes every job in submit, so each wait returns a set of several
    # finished futures; a set's order follows memory addresses, which differ from run to run, and
    # the Bayesian strategy's suggestions depend on the order it is told (the last bits of a GP
    # fit): ordering by launch makes a run repeatable within one process as across processes.
    told = []
    monkeypatch.setattr(RandomStrategy, "tell", lambda self, trial: told.append(trial.index))
    for run in range(3):
        told.clear()
        make(tmp_path, max_jobs=24, max_parallel_jobs=4, job_name=f"order{run}").fit()
        assert told == list(range(24))


@pytest.mark.parametrize("strategy", ["Random", "Grid"])
def test_same_seed_same_sequence_whatever_the_executor_and_parallelism(tmp_path, strategy):
    ranges = (
        RANGES
        if strategy == "Random"
        else {"k": IntegerParameter(1, 3), "opt": CategoricalParameter(["a", "b"])}
    )
    train = obj.quadratic if strategy == "Random" else obj.plain_k
    sequences = []
    for i, (executor, parallel) in enumerate(SEQUENCE_CASES):
        job = make(
            tmp_path,
            train=train,
            hyperparameter_ranges=ranges,
            strategy=strategy,
            max_jobs=None if strategy == "Grid" else 10,
            max_parallel_jobs=parallel,
            executor=executor,
            job_name=f"seq{i}",
        ).fit()
        sequences.append([j.hyperparameters for j in job.training_jobs])
    assert all(s == sequences[0] for s in sequences)
    other = make(
        tmp_path,
        train=train,
        hyperparameter_ranges=ranges,
        strategy=strategy,
        max_jobs=None if strategy == "Grid" else 10,
        random_seed=1,
        job_name="other",
    ).fit()
    if strategy == "Random":
        assert [j.hyperparameters for j in other.training_jobs] != sequences[0]


def test_any_executor_instance_is_accepted(tmp_path):
    with ThreadPoolExecutor(2) as pool:
        job = make(tmp_path, executor=pool, max_parallel_jobs=2).fit()
    assert len(job.training_jobs) == 12
    with ProcessExecutor(2) as pool:
        job = make(tmp_path, executor=pool, max_parallel_jobs=2, job_name="p").fit()
    assert len(job.training_jobs) == 12
    job = make(tmp_path, executor=InlineExecutor(), job_name="i").fit()
    assert len(job.training_jobs) == 12


def test_grid_runs_the_whole_grid_by_default(tmp_path):
    ranges = {"k": IntegerParameter(1, 3), "opt": CategoricalParameter(["a", "b"])}
    job = make(
        tmp_path, train=obj.plain_k, hyperparameter_ranges=ranges, strategy="grid", max_jobs=None
    ).fit()
    assert [j.hyperparameters for j in job.training_jobs] == [
        {"k": k, "opt": o} for k in (1, 2, 3) for o in ("a", "b")
    ]


def test_random_on_a_finite_space_ends_when_it_is_used_up(tmp_path):
    ranges = {"k": IntegerParameter(1, 3), "opt": CategoricalParameter(["a", "b"])}
    job = make(tmp_path, train=obj.plain_k, hyperparameter_ranges=ranges, max_jobs=50).fit()
    assert len(job.training_jobs) == 6
    assert len({(j.hyperparameters["k"], j.hyperparameters["opt"]) for j in job.training_jobs}) == 6
    assert "nothing left" in job.describe()["AmtlibDetails"]["CompletionReason"]


def test_max_runtime_stops_launching_and_kills_running_jobs(tmp_path):
    job = make(
        tmp_path,
        train=obj.sleepy,
        max_jobs=100,
        max_parallel_jobs=2,
        executor=None,
        max_runtime_in_seconds=1.5,
    ).fit()
    assert len(job.training_jobs) < 100
    assert job.describe()["AmtlibDetails"]["CompletionReason"] == "MaxRuntimeInSeconds reached"
    assert all(j.is_finished() for j in job.training_jobs)
    stopped = [j for j in job.training_jobs if j.status is TrainingJobStatus.STOPPED]
    assert stopped and all(
        j.stop_reason == {"action": "stop", "rule": "tuner", "why": "MaxRuntimeInSeconds reached"}
        for j in stopped
    )


def test_auto_range_spanning_decades_warns_for_random_only(tmp_path):
    wide = {"lr": ContinuousParameter(1e-5, 1.0)}
    with pytest.warns(ScalingWarning, match=r"'lr'.*Logarithmic"):
        make(tmp_path, hyperparameter_ranges=wide)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        make(tmp_path, hyperparameter_ranges={"lr": ContinuousParameter(1e-5, 1.0, "Logarithmic")})


def test_two_tuning_jobs_share_one_store_file_at_the_same_time(tmp_path):
    errors = []

    def run(name):
        try:
            make(
                tmp_path,
                train=obj.sleepy_short,
                job_name=name,
                max_jobs=15,
                executor="thread",
                max_parallel_jobs=2,
            ).fit()
        except Exception as exc:  # pragma: no cover - reported below
            errors.append(exc)

    threads = [threading.Thread(target=run, args=(n,)) for n in ("one", "two")]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
    for name in ("one", "two"):
        job = TuningJob.load(name, str(tmp_path / "s.db"))
        assert len(job.training_jobs) == 15 and job.status == "Completed"


# -- validation -----------------------------------------------------------------------------------

BAD = [
    (dict(strategy="Annealing"), ["'strategy'", "'Annealing'", "Random"]),
    (dict(max_parallel_jobs=0), ["'max_parallel_jobs'", ">= 1", "0 (int)", "Fix"]),
    (dict(max_parallel_jobs=True), ["'max_parallel_jobs'", "True"]),
    (dict(max_jobs=-1), ["'max_jobs'", "-1"]),
    (dict(max_jobs=2.5), ["'max_jobs'", "2.5"]),
    (dict(objective_type="Lowest"), ["'objective_type'", "'Lowest'", "Minimize"]),
    (dict(objective_metric_name=""), ["'objective_metric_name'", "non-empty"]),
    (dict(static_hyperparameters={"x": 1}), ["'x'", "both tuned", "static", "Fix"]),
    (dict(static_hyperparameters={"data": object()}), ["JSON-serialisable", "functools.partial"]),
    (dict(max_runtime_in_seconds=0), ["'max_runtime_in_seconds'", "> 0"]),
    (dict(random_seed=-3), ["'random_seed'", "-3"]),
    (dict(job_name="bad name!"), ["'job_name'", "'bad name!'"]),
    (dict(executor="gpu"), ["'executor'", "'gpu'", "get_executor"]),
    (dict(store=3), ["'store'", "3 (int)"]),
    (dict(initial_failure_limit=0), ["'initial_failure_limit'", "0"]),
    (dict(strategy="Grid"), ["'x'", "Grid", "CategoricalParameter"]),
    (
        dict(strategy="Grid", hyperparameter_ranges={"k": IntegerParameter(1, 3)}, max_jobs=5),
        ["'max_jobs'", "grid's size (3)", "Got 5"],
    ),
    (dict(hyperparameter_ranges={"x": [0, 1]}), ["'x'", "ContinuousParameter"]),
    (dict(hyperparameter_ranges=None), ["'hyperparameter_ranges'", "required"]),
    (dict(report_host=""), ["'report_host'", "0.0.0.0"]),
    (dict(checkpoint_root=5), ["'checkpoint_root'", "5 (int)"]),
    (dict(strategy_config=[1]), ["'strategy_config'", "dict"]),
    (
        dict(strategy="Bayesian", strategy_config={"n_candidates": 0}),
        ["'n_candidates'", "from 1 to 1,000,000", "Got 0"],
    ),
    (dict(strategy_config={"max_resource": 9}), ["['max_resource']", "Random", "remove"]),
]


@pytest.mark.parametrize("kwargs,fragments", BAD)
def test_bad_tuner_arguments_raise_clear_errors(tmp_path, kwargs, fragments):
    with pytest.raises(ValidationError) as info:
        make(tmp_path, **kwargs)
    for fragment in fragments:
        assert fragment in str(info.value), (fragment, str(info.value))


def test_train_must_be_callable(tmp_path):
    with pytest.raises(ValidationError, match=r"'train'.*callable"):
        Tuner("train.py", "loss", RANGES)
