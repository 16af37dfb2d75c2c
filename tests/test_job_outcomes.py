"""How a job's end is recorded when the training code does something unusual."""

from __future__ import annotations

import fractions
import socket
import warnings

import _objectives as obj
import numpy as np
import pytest

from amtlib import ContinuousParameter, ObjectiveStatus, TrainingJobStatus, Tuner, TuningJob
from amtlib._execution import parse_result
from amtlib._run import _advertised_host


def tune(train, executor, **kw):
    args = dict(
        objective_type="Minimize",
        strategy="Random",
        max_jobs=3,
        random_seed=1,
        store=":memory:",
        executor=executor,
        initial_failure_limit=None,
    )
    args.update(kw)
    return Tuner(train, "loss", {"x": ContinuousParameter(0.0, 1.0)}, **args).fit(progress=False)


@pytest.mark.parametrize("executor", ["thread", "process"])
@pytest.mark.parametrize("exc", ["KeyboardInterrupt", "GeneratorExit", "CancelledError"])
def test_a_base_exception_from_the_training_code_fails_only_its_job(executor, exc):
    # Raised by the code in a worker thread or process, it cannot be the user's Ctrl-C (signals
    # reach only the tuner's main thread; workers run in their own session). It used to abort
    # fit(), and the job then stayed InProgress and aborted every resume; so did any other
    # BaseException, such as asyncio's CancelledError from async training code.
    job = tune(obj.raises_base_exception, executor, static_hyperparameters={"exc": exc})
    ok, failed = TrainingJobStatus.COMPLETED, TrainingJobStatus.FAILED
    assert [j.status for j in job.training_jobs] == [ok, failed, ok]
    assert job.training_jobs[1].failure_reason == f"{exc}: raised by the training code"
    assert exc in job.training_jobs[1].traceback


@pytest.mark.parametrize("executor", ["inline", "thread", "process"])
def test_a_job_that_changes_a_static_value_in_place_changes_it_for_itself_only(executor):
    # In-process executors used to pass every job the same nested objects: the second job saw the
    # first one's change, and so did the caller's dict.
    static = {"layers": [64]}
    job = tune(obj.appends_to_static_list, executor, static_hyperparameters=static)
    assert [j.objective_value for j in job.training_jobs] == [1.0, 1.0, 1.0]
    assert static == {"layers": [64]}


def test_generator_exit_inline_fails_its_job_and_ctrl_c_still_interrupts():
    job = tune(obj.raises_base_exception, "inline", static_hyperparameters={"exc": "GeneratorExit"})
    assert job.training_jobs[1].status is TrainingJobStatus.FAILED
    # Inline, the job runs in the tuner's main thread, where a Ctrl-C lands: it stops the tuner.
    with pytest.raises(KeyboardInterrupt):
        tune(
            obj.raises_base_exception,
            "inline",
            static_hyperparameters={"exc": "KeyboardInterrupt"},
        )


@pytest.mark.parametrize(
    "returned, value",
    [
        (np.float32(0.25), 0.25),
        (np.array(0.25), 0.25),
        (fractions.Fraction(1, 4), 0.25),  # report() takes it: so does a return
        ({"loss": np.int64(3), "acc": 0.5}, 3.0),
    ],
)
def test_returned_numbers_are_those_report_accepts(returned, value):
    metrics, problem = parse_result(returned, "loss")
    assert problem is None and metrics["loss"] == value and type(metrics["loss"]) is float


@pytest.mark.parametrize(
    "returned, fragment",
    [
        (np.array([0.25]), "array([0.25]) (ndarray)"),  # report() refuses it too: use .item()
        (10**400, "(int)"),  # beyond float's range: it was taken for a crash of the machinery
        ({"loss": 10**400}, "must be a real number"),
        (True, "True (bool)"),
        ("0.25", "'0.25' (str)"),
    ],
    ids=["1-element array", "10**400", "dict with 10**400", "bool", "str"],
)
def test_returned_non_numbers_fail_the_objective_with_the_fix(returned, fragment):
    metrics, problem = parse_result(returned, "loss")
    assert problem is not None and fragment in problem and ".item()" in problem
    assert metrics.get("loss") is None
    assert len(problem) < 600  # a huge value is cut short in the message


def test_a_huge_returned_int_is_a_failed_objective_not_a_crash():
    job = tune(lambda hp: 10**400, "inline", max_jobs=1)
    (j,) = job.training_jobs
    assert j.status is TrainingJobStatus.COMPLETED
    assert j.objective_status is ObjectiveStatus.FAILED and not j.retryable
    assert "real number" in j.failure_reason or "must return" in j.failure_reason


def test_a_job_whose_worker_died_keeps_what_it_reported():
    job = tune(obj.reports_then_dies, "process", max_jobs=1)
    (j,) = job.training_jobs
    assert j.status is TrainingJobStatus.FAILED and "WorkerDiedError" in j.failure_reason
    assert len(j.reports) == 3
    assert j.metrics == {"loss": pytest.approx(j.hyperparameters["x"] + 1 / 3), "acc": 0.5}


def test_a_wildcard_report_host_is_not_advertised_as_loopback(monkeypatch):
    # /etc/hosts often maps the host name to 127.0.1.1: workers on other hosts would dial their
    # own loopback. The address of the routed interface is advertised instead; without any route
    # the tuner says so.
    monkeypatch.setattr(socket, "gethostbyname", lambda name: "127.0.1.1")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        address = _advertised_host("0.0.0.0")
    assert address is not None
    if address.startswith("127."):
        assert any("loopback" in str(w.message) for w in caught)
    else:
        socket.inet_aton(address)  # a real IPv4 address
        assert not caught
    assert _advertised_host("127.0.0.1") is None  # a given address is dialled as given


@pytest.mark.parametrize(
    "address, host",
    [
        ("tcp://10.1.2.3:8786", "10.1.2.3"),
        ("tls://[fe80::1]:8786", "fe80::1"),
        ("inproc://10.1.2.3/123/1", None),  # an in-process cluster: no route to probe
        ("", None),
    ],
)
def test_the_scheduler_host_is_read_from_its_address(address, host):
    from types import SimpleNamespace

    from amtlib._run import _scheduler_host

    client = SimpleNamespace(scheduler=SimpleNamespace(address=address))
    assert _scheduler_host(client) == host
    assert _scheduler_host(SimpleNamespace(_client=client)) == host  # client.get_executor()
    assert _scheduler_host(None) is None


@pytest.mark.parametrize("spelling", ["0.0.0.0", "::", "::0", "0:0::0", ""])
def test_every_spelling_of_a_wildcard_report_host_is_advertised(spelling, monkeypatch):
    monkeypatch.setattr(socket, "gethostbyname", lambda name: "10.9.8.7")
    assert _advertised_host(spelling) == "10.9.8.7"


def test_a_job_reporting_only_other_metrics_and_returning_nothing_says_so():
    # A misspelt objective name in report() used to fail with "must return the objective value".
    def train(hp):
        import amtlib

        for epoch in range(1, 3):
            amtlib.report(val_loss=hp["x"] / epoch, accuracy=0.5)

    job = tune(train, "inline", max_jobs=1)
    [only] = job.training_jobs
    assert only.objective_status is ObjectiveStatus.FAILED
    assert "reported metrics ['accuracy', 'val_loss'] but never the objective metric 'loss'" in (
        only.failure_reason
    )
    assert only.metrics == {
        "val_loss": pytest.approx(only.hyperparameters["x"] / 2),
        "accuracy": 0.5,
    }


class _TensorLike:
    """What matters of a torch tensor here: item() refuses more than one element (RuntimeError)."""

    shape = (2,)

    def item(self):
        raise RuntimeError("a Tensor with 2 elements cannot be converted to Scalar")

    def tolist(self):
        return [0.5, 1.0]


class _SparseLike(_TensorLike):
    def tolist(self):
        raise RuntimeError("tolist() is not supported for sparse tensors")


class _UnknownShape(_TensorLike):
    shape = (None, 2)


@pytest.mark.parametrize("odd", [_SparseLike(), _UnknownShape()])
def test_an_array_metric_that_cannot_be_listed_is_stored_as_its_repr(odd):
    metrics, problem = parse_result({"loss": 0.5, "odd": odd}, "loss")
    assert problem is None and metrics["odd"] == repr(odd)


def test_returned_array_metrics_are_stored_as_lists_when_small():
    big = np.arange(2000.0)
    returned = {"loss": 0.5, "cm": np.eye(2, dtype=np.int64), "t": _TensorLike()}
    metrics, problem = parse_result({**returned, "big": big}, "loss")
    assert problem is None
    assert metrics["cm"] == [[1, 0], [0, 1]] and metrics["t"] == [0.5, 1.0]
    assert isinstance(metrics["big"], str) and "..." in metrics["big"]  # a repr, not 2000 floats
    job = tune(lambda hp: {**returned, "loss": hp["x"]}, "inline", max_jobs=1)
    assert job.training_jobs[0].metrics["cm"] == [[1, 0], [0, 1]]


class _ReprRaises:
    def __repr__(self):
        raise RuntimeError("repr failed")


def _returns_unprintable_side_metrics(hp):
    cycle: list = [1]
    cycle.append(cycle)
    return {"loss": hp["x"], "huge": 10**5000, "cycle": cycle, "odd": _ReprRaises()}


def test_side_metrics_no_json_can_hold_are_described_not_fatal(tmp_path):
    # A side metric of 10**5000 (Python refuses to print it) used to crash fit() when the job was
    # stored, leaving the job InProgress to crash every resume; a cyclic list or an object whose
    # repr raises made the job a retryable "machinery" failure (found by an API fuzz).
    store = str(tmp_path / "s.db")
    job = tune(_returns_unprintable_side_metrics, "inline", store=store, job_name="j")
    stored = TuningJob.load("j", store).training_jobs
    for j in (*job.training_jobs, *stored):
        assert (
            j.status is TrainingJobStatus.COMPLETED and j.objective_value == j.hyperparameters["x"]
        )
        assert j.metrics["huge"] == "<an int of about 5001 digits>"
        assert j.metrics["odd"] == "<_ReprRaises object: repr() raised RuntimeError>"
        depth, cycle = 0, j.metrics["cycle"]
        while isinstance(cycle, list):
            depth, cycle = depth + 1, cycle[-1]
        assert cycle == "<nested too deeply>" and 40 < depth < 60


def _returns_a_huge_int(hp):
    return 10**5000


def test_an_objective_too_large_to_print_fails_its_objective_with_a_clear_reason():
    job = tune(_returns_a_huge_int, "inline")
    for j in job.training_jobs:
        assert j.objective_status is ObjectiveStatus.FAILED and not j.retryable
        assert "Got an int of about 5001 digits (int)" in j.failure_reason


def _stops_itself_with_an_odd_reason(hp):
    import amtlib

    amtlib.report(loss=hp["x"])
    raise amtlib.TrialStopped(
        "pause", {"action": "pause", "completed": True, "n": np.int64(3), "bad": float("nan")}
    )


def test_a_reason_the_training_function_gives_its_own_stop_is_kept_apart(tmp_path):
    # Its keys used to be merged into the tuner's: "action": "pause" recorded a pause, "completed"
    # a Completed job, and a numpy int or a NaN crashed fit() when the job was stored.
    store = str(tmp_path / "s.db")
    job = tune(_stops_itself_with_an_odd_reason, "inline", store=store, job_name="j")
    for j in (*job.training_jobs, *TuningJob.load("j", store).training_jobs):
        assert j.status is TrainingJobStatus.STOPPED and not j.paused
        assert j.objective_value == j.hyperparameters["x"]
        assert j.stop_reason == {
            "action": "stop",
            "source": "training function",
            "reason": {"action": "pause", "completed": True, "n": 3, "bad": None},
        }


def _returns_real_side_metrics(hp):
    return {"loss": hp["x"], "third": fractions.Fraction(1, 3), "quarter": np.longdouble(0.25)}


def test_real_side_metrics_are_stored_as_floats_as_reports_are():
    # report() stored a Fraction as a float, a returned one was stored as "Fraction(1, 3)".
    for j in tune(_returns_real_side_metrics, "inline").training_jobs:
        assert j.metrics["third"] == 1 / 3 and j.metrics["quarter"] == 0.25
        assert type(j.metrics["third"]) is float and type(j.metrics["quarter"]) is float
