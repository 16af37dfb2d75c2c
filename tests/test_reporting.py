"""Tests of amtlib.reporting: the report channel between training jobs and their tuner.

Every test talks to a real ``ReportServer`` on 127.0.0.1. Hostile inputs are written with raw
sockets; after each one, a well-behaved client must still be answered, and ``decide`` must never have
seen the hostile frame.
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import hmac
import logging
import math
import os
import pickle
import socket
import sys
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

import cloudpickle
import numpy as np
import pytest

import amtlib.reporting as reporting
from amtlib.errors import AmtlibError, ReportChannelError, ValidationError
from amtlib.executors import ProcessExecutor
from amtlib.reporting import (
    Action,
    ChannelSpec,
    Decision,
    JobContextSpec,
    ReportClient,
    ReportServer,
    TrialStopped,
    current_job,
    job_context,
    report,
)

# Worker processes get this module's task functions by value (see tests/test_executors.py).
cloudpickle.register_pickle_by_value(sys.modules[__name__])

TIMEOUT = 10  # seconds: anything slower is a hang


@dataclass
class Recorder:
    """A ``decide`` that records every call and answers with ``answer(job_id, step, metrics)``."""

    answer: Callable[[int, int, dict[str, float]], Decision] = lambda job, step, metrics: Decision()
    calls: list[tuple[int, int, dict[str, float], float]] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def __call__(self, job_id: int, step: int, metrics: dict[str, float], ts: float) -> Decision:
        with self.lock:
            self.calls.append((job_id, step, metrics, ts))
        return self.answer(job_id, step, metrics)


@pytest.fixture
def recorder() -> Recorder:
    return Recorder()


@pytest.fixture
def server(recorder: Recorder) -> Iterator[ReportServer]:
    with ReportServer(recorder) as srv:
        yield srv


def spec_for(channel: ChannelSpec | None, name: str = "job-001", **kw: Any) -> JobContextSpec:
    return JobContextSpec(name=name, index=0, hyperparameters={"x": 1}, channel=channel, **kw)


def assert_good_client_works(server: ReportServer, recorder: Recorder, job_id: int = 77) -> None:
    before = len(recorder.calls)
    with ReportClient(server.register(job_id)) as client:
        assert client.send(1, {"loss": 0.5}).action is Action.CONTINUE
    assert recorder.calls[before:] == [
        (job_id, 1, {"loss": 0.5}, pytest.approx(time.time(), abs=60))
    ]


def connect(server: ReportServer) -> socket.socket:
    sock = socket.create_connection(server.address, timeout=TIMEOUT)
    sock.settimeout(TIMEOUT)
    return sock


def assert_closed_without_answer(sock: socket.socket) -> None:
    try:
        data = sock.recv(1 << 16)
    except ConnectionResetError:
        data = b""
    assert data == b""


CLIENT = "0123456789abcdef"  # a client id, as a ReportClient draws one
OMIT = object()  # frame(secret, client=OMIT): a frame without that field


def frame(secret: bytes, **message: Any) -> bytes:
    body = {"kind": "report", "job_id": 0, "client": CLIENT, "seq": 1, "step": 1,
            "metrics": {"loss": 1.0}, "timestamp": 1.0}  # fmt: skip
    body.update(message)
    body = {key: value for key, value in body.items() if value is not OMIT}
    return reporting._encode(secret, body)


def read_reply(sock: socket.socket) -> bytes:
    (length,) = reporting._HEADER.unpack(reporting._recv_exactly(sock, 4))
    return reporting._recv_exactly(sock, length)


# ---- round trips ---------------------------------------------------------------------------------


def _train_and_report(channel: ChannelSpec, steps: int) -> dict[str, Any]:
    """A training function body, run in a thread or a worker process."""
    with job_context(spec_for(channel)) as job:
        try:
            for epoch in range(1, steps + 1):
                report(**{"validation:loss": 1.0 / epoch}, accuracy=np.float32(0.5))
        except TrialStopped as stopped:
            return {"stopped": (stopped.action, stopped.reason, stopped.step),
                    "steps": [r.step for r in job.reports]}  # fmt: skip
        return {"stopped": None, "steps": [r.step for r in job.reports]}


def test_round_trip_from_another_thread(server, recorder):
    channel = server.register(0)
    with ThreadPoolExecutor(1) as pool:
        out = pool.submit(_train_and_report, channel, 3).result(TIMEOUT)
    assert out == {"stopped": None, "steps": [1, 2, 3]}
    assert [(c[0], c[1], c[2]) for c in recorder.calls] == [
        (0, step, {"validation:loss": 1.0 / step, "accuracy": 0.5}) for step in (1, 2, 3)
    ]
    assert all(abs(c[3] - time.time()) < 60 for c in recorder.calls)


def test_round_trip_from_a_worker_process_with_a_stop(recorder):
    recorder.answer = lambda job, step, metrics: Decision(
        Action.STOP if step == 2 else Action.CONTINUE, {"rule": "test", "step": step}
    )
    with ReportServer(recorder) as server, ProcessExecutor(max_workers=1) as executor:
        channel = server.register(5)
        out = executor.submit(_train_and_report, channel, 4).result(TIMEOUT * 3)
    assert out == {"stopped": (Action.STOP, {"rule": "test", "step": 2}, 2), "steps": [1, 2]}
    assert [c[:2] for c in recorder.calls] == [(5, 1), (5, 2)]


def test_stop_raises_trial_stopped_from_report_then_on_every_later_report(server, recorder):
    recorder.answer = lambda job, step, metrics: Decision(
        "stop" if step == 3 else "continue", {"median": 0.25} if step == 3 else None
    )
    with job_context(spec_for(server.register(0))) as job:
        report(loss=1.0)
        report(loss=0.9)
        with pytest.raises(TrialStopped) as info:
            report(loss=0.8)
        assert (info.value.action, info.value.reason, info.value.step) == (
            Action.STOP,
            {"median": 0.25},
            3,
        )
        assert "stopped this training job at step 3" in str(info.value)
        assert job.decision == Decision(Action.STOP, {"median": 0.25})
        with pytest.raises(TrialStopped):  # the tuner is not asked again
            report(loss=0.7)
    assert [c[1] for c in recorder.calls] == [1, 2, 3]
    assert [r.step for r in job.reports] == [1, 2, 3]
    assert isinstance(info.value, AmtlibError)


def test_pause_is_raised_as_trial_stopped_carrying_its_action(server, recorder):
    recorder.answer = lambda job, step, metrics: Decision(Action.PAUSE, {"rung": 1})
    with job_context(spec_for(server.register(0))) as job, pytest.raises(TrialStopped) as info:
        report(loss=1.0)
    assert info.value.action is Action.PAUSE and info.value.reason == {"rung": 1}
    assert "paused" in str(info.value)
    assert job.decision is not None and job.decision.stops()


def test_trial_stopped_and_channel_spec_pickle():
    stopped = pickle.loads(pickle.dumps(TrialStopped(Action.PAUSE, {"a": 1}, 4)))
    assert (stopped.action, stopped.reason, stopped.step) == (Action.PAUSE, {"a": 1}, 4)
    assert str(stopped) == str(TrialStopped(Action.PAUSE, {"a": 1}, 4))
    spec = ChannelSpec("127.0.0.1", 1234, 3, "ab" * 32)
    assert pickle.loads(pickle.dumps(spec)) == spec
    assert "ab" * 32 not in repr(spec)


def test_decision_validates_its_fields():
    assert Decision("pause").action is Action.PAUSE
    assert not Decision().stops()
    with pytest.raises(ValidationError, match="'action' parameter of Decision"):
        Decision("halt")
    with pytest.raises(ValidationError, match="'reason' parameter of Decision"):
        Decision(Action.STOP, "too slow")  # type: ignore[arg-type]


def test_reports_are_kept_when_the_tuner_cannot_be_reached():
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]  # nothing listens on it once closed
    channel = ChannelSpec("127.0.0.1", port, 0, "00" * 32)
    with job_context(spec_for(channel)) as job, pytest.raises(ReportChannelError) as info:
        report(loss=0.5)
    assert f"127.0.0.1:{port}" in str(info.value) and "refused" in str(info.value)
    assert [(r.step, r.metrics) for r in job.reports] == [(1, {"loss": 0.5})]


# ---- steps, values, the context ------------------------------------------------------------------


def test_steps_count_from_one_and_continue_after_explicit_steps():
    with job_context(spec_for(None)) as job:
        report(loss=1.0)
        report(loss=0.9)
        report(loss=0.8, step=10)
        report(loss=0.7)
        report(np.int64(20), loss=0.6)
    assert [r.step for r in job.reports] == [1, 2, 10, 11, 20]
    assert all(type(r.step) is int for r in job.reports)


def test_step_offset_continues_a_resumed_job():
    with job_context(spec_for(None, resume_step=9, step_offset=9)) as job:
        assert current_job().resume_step == 9
        report(loss=1.0)
        with pytest.raises(ValidationError, match=r"from 11 to 2\*\*53") as info:
            report(loss=1.0, step=3)
    assert "resumed from its checkpoint after step 9" in str(info.value)
    assert [r.step for r in job.reports] == [10]


@pytest.mark.parametrize("step", [0, -1, 2, 1.5, np.float64(3.0), True, "3"])
def test_a_step_that_does_not_increase_is_refused(step):
    with job_context(spec_for(None)) as job:
        report(loss=1.0, step=2)
        with pytest.raises(ValidationError) as info:
            report(loss=1.0, step=step)
    message = str(info.value)
    assert "'step'" in message and "from 3 to 2**53" in message
    assert repr(step) in message and "Fix:" in message
    assert len(job.reports) == 1


@pytest.mark.parametrize("step", [2**53 + 1, 10**400, 10**5000], ids=["2**53+1", "1e400", "1e5000"])
def test_a_step_beyond_2_53_is_refused(step):
    # 10**5000 failed the job with json's own ValueError when the report was sent; 10**400 was
    # accepted and made ConsumedSteps astronomical (an API fuzz).
    with job_context(spec_for(None)) as job:
        with pytest.raises(ValidationError, match=r"'step'.*from 1 to 2\*\*53.*Got .*Fix:"):
            report(loss=1.0, step=step)
        report(loss=1.0, step=2**53)
    assert [r.step for r in job.reports] == [2**53]


@pytest.mark.parametrize(
    "value",
    [
        math.nan,
        math.inf,
        -math.inf,
        "0.3",
        None,
        True,
        [1.0],
        np.array([1.0]),
        np.float32("nan"),
        np.bool_(True),
        10**400,
        1j,
    ],
)
def test_a_metric_that_is_not_a_finite_real_is_refused(value):
    with job_context(spec_for(None)) as job:
        with pytest.raises(ValidationError) as info:
            report(**{"validation:loss": value})
        assert job.reports == ()
    message = str(info.value)
    assert "'validation:loss'" in message and "finite real number" in message
    assert "Fix:" in message and type(value).__name__ in message


def test_report_needs_a_named_metric():
    with job_context(spec_for(None)) as job:
        with pytest.raises(ValidationError, match="at least one metric"):
            report()
        with pytest.raises(ValidationError, match="non-empty strings"):
            report(**{"": 1.0})
        report(**{"self": 1.0})  # no clash with the method's own parameters
    assert job.reports[0].metrics == {"self": 1.0}


@pytest.mark.parametrize(
    ("value", "fix"), [(0.5, "report(loss=0.5)"), ({"loss": 0.5}, "report(**metrics)")]
)
def test_an_optuna_style_positional_value_is_refused_as_a_misplaced_metric(value, fix):
    # trial.report(value, step) habits: the value lands in 'step', which must say so.
    with job_context(spec_for(None, objective_metric_name="loss")) as job:
        with pytest.raises(ValidationError) as info:
            report(value)
        assert job.reports == ()
    message = str(info.value)
    assert "only positional parameter is 'step'" in message and type(value).__name__ in message
    assert f"Fix: name the metric, e.g. {fix}" in message


def test_numpy_scalars_become_floats():
    with job_context(spec_for(None)) as job:
        report(a=np.float32(0.5), b=np.int64(3), c=np.array(0.25), d=7)
    metrics = job.reports[0].metrics
    assert metrics == {"a": 0.5, "b": 3.0, "c": 0.25, "d": 7.0}
    assert all(type(v) is float for v in metrics.values())


def test_report_and_current_job_outside_a_job_raise_our_error():
    for call in (lambda: report(loss=1.0), current_job):
        with pytest.raises(ValidationError) as info:
            call()
        assert "only inside a training function run by a Tuner" in str(info.value)
        assert "function passed to Tuner" in str(info.value)


def test_current_job_describes_the_job_and_is_restored_on_exit():
    spec = JobContextSpec("outer", 4, {"lr": 0.1}, None, checkpoint_dir="/tmp/ckpt")
    with job_context(spec):
        job = current_job()
        assert (job.name, job.index, job.hyperparameters) == ("outer", 4, {"lr": 0.1})
        assert (job.checkpoint_dir, job.resume_step) == ("/tmp/ckpt", 0)
        job.hyperparameters["lr"] = 9.0  # a copy: the job's own are untouched
        assert current_job().hyperparameters == {"lr": 0.1}
        with job_context(spec_for(None, name="inner")):
            assert current_job().name == "inner"
        assert current_job() is job
    with pytest.raises(ValidationError):
        current_job()


def test_jobs_in_concurrent_threads_each_see_their_own_context():
    threads = 8
    barrier = threading.Barrier(threads, timeout=TIMEOUT)

    def run(i: int) -> tuple[str, list[float]]:
        with job_context(spec_for(None, name=f"job-{i}")) as job:
            barrier.wait()  # every job is current in its thread at once
            for k in range(20):
                report(value=float(i * 100 + k))
                if k == 10:
                    barrier.wait()
            assert current_job() is job
            return current_job().name, [r.metrics["value"] for r in job.reports]

    with ThreadPoolExecutor(threads) as pool:
        results = list(pool.map(run, range(threads)))
    for i, (name, values) in enumerate(results):
        assert name == f"job-{i}" and values == [float(i * 100 + k) for k in range(20)]


# ---- hostile input -------------------------------------------------------------------------------


def _signed(secret: bytes, body: bytes) -> bytes:
    """A frame signed by hand, for bodies our encoder refuses to write."""
    mac = hmac.new(secret, body, hashlib.sha256).digest()
    return reporting._HEADER.pack(len(mac) + len(body)) + mac + body


_NAN_BODY = (
    b'{"client":"0123456789abcdef","job_id":0,"kind":"report","metrics":{"loss":NaN},"seq":1,'
    b'"step":1,"timestamp":1.0}'
)
HOSTILE: dict[str, Callable[[bytes], bytes]] = {
    "forged signature": lambda s: _signed(bytes(32), b'{"job_id":0,"kind":"report","seq":1}'),
    "wrong secret": lambda s: frame(bytes(32)),
    "unregistered job id": lambda s: frame(s, job_id=12345),
    "bool job id": lambda s: frame(s, job_id=False),
    "no client id (protocol version 1)": lambda s: frame(s, client=OMIT),
    "client id not lowercase hex": lambda s: frame(s, client=CLIENT.upper()),
    "client id too short": lambda s: frame(s, client=CLIENT[:-1]),
    "client id not a string": lambda s: frame(s, client=12345678),
    "reply kind": lambda s: frame(s, kind="decision"),
    "garbage bytes": lambda s: b"GET / HTTP/1.1\r\nHost: x\r\n\r\n",
    "malformed JSON": lambda s: _signed(s, b"{not json"),
    "non-UTF-8 body": lambda s: _signed(s, b"\xff\xfe\x00{"),
    "deeply nested JSON": lambda s: _signed(s, b"[" * 100_000 + b"]" * 100_000),
    "JSON array": lambda s: _signed(s, b"[]"),
    "too short": lambda s: reporting._HEADER.pack(3) + b"abc",
    "oversized frame": lambda s: reporting._HEADER.pack(reporting.MAX_FRAME_BYTES + 1) + b"x" * 999,
    "signed NaN metric": lambda s: _signed(s, _NAN_BODY),
    "signed bad step": lambda s: frame(s, step=0),
    "signed empty metrics": lambda s: frame(s, metrics={}),
}


@pytest.mark.parametrize("kind", list(HOSTILE))
def test_hostile_frames_are_rejected_without_reaching_decide(server, recorder, kind, caplog):
    secret = bytes.fromhex(server.register(0).secret)
    with caplog.at_level(logging.WARNING, logger="amtlib.reporting"), connect(server) as sock:
        sock.sendall(HOSTILE[kind](secret))
        assert_closed_without_answer(sock)
    assert recorder.calls == []
    assert any("rejected" in r.getMessage() for r in caplog.records)
    assert_good_client_works(server, recorder)


def test_refused_frames_anyone_could_send_are_logged_once_per_kind_and_signed_ones_each_time(
    server, recorder, caplog
):
    """A review's 500 garbage connections made 500 warnings: frames not shown to come from a holder
    of the secret are logged like a flood's connections (held back, and counted, for ten seconds per
    kind); a fresh frame signed with the secret comes from a real client, and is always logged."""
    secret = bytes.fromhex(server.register(0).secret)

    def refused(request: bytes) -> None:
        with connect(server) as sock:
            sock.sendall(request)
            assert_closed_without_answer(sock)  # the server has logged it, or held it back

    with caplog.at_level(logging.WARNING, logger="amtlib.reporting"):
        with connect(server) as sock:  # seq 1 and 2 accepted: a resent seq 1 is a replay
            for seq in (1, 2):
                sock.sendall(frame(secret, seq=seq, step=seq))
                read_reply(sock)
        for _ in range(5):
            refused(HOSTILE["too short"](secret))
            refused(HOSTILE["wrong secret"](secret))
            refused(HOSTILE["unregistered job id"](secret))
            refused(frame(secret, seq=1, step=1))
        for _ in range(3):
            refused(frame(secret, seq=3, step=0))  # signed and fresh, but malformed: a bug
        for throttle in server._rejecting.values():
            throttle._next = -math.inf  # as if ten seconds had passed
        refused(HOSTILE["too short"](secret))
    messages = [r.getMessage() for r in caplog.records if "rejected a frame" in r.getMessage()]

    def logged(about: str) -> list[str]:
        return [m for m in messages if about in m]

    assert len(logged("too short")) == 2  # the first, and the next once the throttle let it
    assert "(and 4 more like this, not logged, since the last one)" in logged("too short")[1]
    assert len(logged("bad signature for job id 0")) == 1
    assert len(logged("job id 12345 is not registered")) == 1
    assert len(logged("sequence number 1 of job id 0")) == 1
    assert len(logged("malformed report of job id 0: step 0")) == 3
    assert [c[1] for c in recorder.calls] == [1, 2]


def test_a_client_with_the_wrong_secret_gets_a_clear_error(server, recorder):
    channel = server.register(0)
    forged = ChannelSpec(channel.host, channel.port, channel.job_id, "11" * 32)
    with ReportClient(forged) as client, pytest.raises(ReportChannelError) as info:
        client.send(1, {"loss": 1.0})
    message = str(info.value)
    assert f"{channel.host}:{channel.port}" in message and "secret is wrong" in message
    assert recorder.calls == []


def test_unregister_and_reregister_invalidate_the_old_secret(server, recorder):
    old = server.register(3)
    with ReportClient(old) as client:
        client.send(1, {"loss": 1.0})
        server.register(3)  # a new attempt of the same job
        with pytest.raises(ReportChannelError) as replaced:
            client.send(2, {"loss": 1.0})
    new = server.register(3)
    server.unregister(3)
    with ReportClient(new) as client, pytest.raises(ReportChannelError) as unknown:
        client.send(1, {"loss": 1.0})
    assert [c[:2] for c in recorder.calls] == [(3, 1)]
    # A client whose earlier reports were accepted knows its secret was right.
    assert "no longer accepts" in str(replaced.value)
    assert "secret is wrong" not in str(replaced.value)
    assert "not registered" in str(unknown.value) and "secret is wrong" in str(unknown.value)
    for info in (replaced, unknown):
        assert "logger 'amtlib.reporting'" in str(info.value) and "Fix:" in str(info.value)


def test_replayed_sequence_numbers_are_rejected_but_a_retransmission_is_answered_once(
    server, recorder
):
    secret = bytes.fromhex(server.register(0).secret)
    first, second = frame(secret, seq=1, step=1), frame(secret, seq=2, step=2)
    other = "fedcba9876543210"  # another client of the job, numbering its own reports from 1
    others = [frame(secret, client=other, seq=seq, step=seq) for seq in (1, 2)]
    with connect(server) as sock:
        sock.sendall(first)
        read_reply(sock)
        sock.sendall(second)
        reply = read_reply(sock)
    with connect(server) as sock:
        for request in others:
            sock.sendall(request)
            read_reply(sock)
    with connect(server) as sock:  # the exact last request again: same reply, no new decision
        sock.sendall(second)
        assert read_reply(sock) == reply
    assert reporting._split(reply)[2]["client"] == CLIENT  # the reply names whom it answers
    replays = [first, frame(secret, seq=2, step=3), frame(secret, seq=1, step=9), others[0]]
    for replay in [*replays, frame(secret, client=other, seq=2, step=5)]:
        with connect(server) as sock:
            sock.sendall(replay)
            assert_closed_without_answer(sock)
    assert [c[1] for c in recorder.calls] == [1, 2, 1, 2]


# ---- several clients of one job ------------------------------------------------------------------


def test_a_retried_attempt_reports_through_a_new_client_of_the_same_channel(server, recorder):
    """Dask re-runs a task whose worker died with the same spec, hence the same ChannelSpec: the
    new attempt's client numbers its reports from 1 again, and they must reach ``decide``."""
    channel = server.register(0)
    with job_context(spec_for(channel)):  # the attempt whose worker dies after two reports
        report(loss=1.0)
        report(loss=0.9)
    with job_context(spec_for(channel)) as retry:
        for loss in (1.0, 0.9, 0.8):
            report(loss=loss)
    assert [r.step for r in retry.reports] == [1, 2, 3]
    assert [c[:3] for c in recorder.calls] == [
        (0, 1, {"loss": 1.0}),
        (0, 2, {"loss": 0.9}),
        (0, 1, {"loss": 1.0}),
        (0, 2, {"loss": 0.9}),
        (0, 3, {"loss": 0.8}),
    ]


def test_two_clients_built_from_one_channel_report_side_by_side(server, recorder):
    channel = server.register(0)
    with ReportClient(channel) as first, ReportClient(channel) as second:
        for step in (1, 2):
            assert first.send(step, {"loss": 1.0}).action is Action.CONTINUE
            assert second.send(step, {"accuracy": 0.5}).action is Action.CONTINUE
    assert [(c[1], sorted(c[2])) for c in recorder.calls] == [
        (1, ["loss"]),
        (1, ["accuracy"]),
        (2, ["loss"]),
        (2, ["accuracy"]),
    ]


@pytest.mark.skipif(not hasattr(os, "fork"), reason="os.fork exists on POSIX only")
@pytest.mark.filterwarnings("ignore:.*fork.*:DeprecationWarning")  # the child only reports, exits
def test_a_forked_child_reports_as_a_new_client_and_the_parent_goes_on(server, recorder):
    with job_context(spec_for(server.register(0))) as job:
        report(loss=1.0)
        pid = os.fork()
        if pid == 0:  # the child: one report through its copy of the job's client, then exit
            code = 1
            try:
                report(val_loss=0.9)
                code = 0
            finally:
                os._exit(code)
        _, status = os.waitpid(pid, 0)
        assert os.waitstatus_to_exitcode(status) == 0, "the child's report failed"
        report(loss=0.5)  # with the parent's own counter, which the child's report did not use
    assert [r.step for r in job.reports] == [1, 2]  # the parent's own; the child's was its copy's
    assert [c[:3] for c in recorder.calls] == [
        (0, 1, {"loss": 1.0}),
        (0, 2, {"val_loss": 0.9}),
        (0, 2, {"loss": 0.5}),
    ]


def test_a_job_has_a_bounded_number_of_clients(server, recorder, monkeypatch, caplog):
    monkeypatch.setattr(reporting, "_MAX_CLIENTS_PER_JOB", 2)
    channel = server.register(0)
    with (
        caplog.at_level(logging.WARNING, logger="amtlib.reporting"),
        ReportClient(channel) as first,
        ReportClient(channel) as second,
        ReportClient(channel) as third,
    ):
        first.send(1, {"loss": 1.0})
        second.send(1, {"loss": 1.0})
        with pytest.raises(ReportChannelError) as info:
            third.send(1, {"loss": 1.0})
        assert first.send(2, {"loss": 1.0}).action is Action.CONTINUE  # the known ones go on
        assert second.send(2, {"loss": 1.0}).action is Action.CONTINUE
    assert [c[1] for c in recorder.calls] == [1, 1, 2, 2]
    assert "2 report clients" in str(info.value) and "forked child" in str(info.value)
    assert any(
        "job id 0 already has 2 report clients, the most allowed" in r.getMessage()
        for r in caplog.records
    )


def test_a_reply_for_another_client_is_refused_by_the_client():
    """Clients of one job share its secret: a reply is bound to its request by the client id."""
    secret, requests = bytes(range(32)), []

    def answer(conn: socket.socket) -> None:
        requests.append(reporting._split(read_reply(conn))[2])
        conn.sendall(reporting._encode(secret, {"kind": "decision", "job_id": 0, "seq": 1,
                                                "client": "f" * 16, "action": "stop",
                                                "reason": None}))  # fmt: skip

    with fake_tuner(answer) as (host, port):
        client = ReportClient(ChannelSpec(host, port, 0, secret.hex()))
        with client, pytest.raises(ReportChannelError, match="does not answer this report"):
            client.send(1, {"loss": 1.0})
    assert [r["seq"] for r in requests] == [1] and requests[0]["client"] != "f" * 16


# ---- listening on IPv6 ---------------------------------------------------------------------------


def _ipv6_wildcard_unusable() -> str | None:
    """Why a server cannot listen on "::" here, or None when it can."""
    if not socket.has_ipv6:
        return "Python was built without IPv6 support"
    try:
        with socket.socket(socket.AF_INET6, socket.SOCK_STREAM) as probe:
            probe.bind(("::", 0))
    except OSError as exc:
        return f"this machine cannot bind the IPv6 wildcard '::' ({exc})"
    if not socket.has_dualstack_ipv6():
        return "this platform has no dual-stack sockets: '::' cannot accept IPv4 clients"
    return None


_NO_IPV6_WILDCARD = _ipv6_wildcard_unusable()


@pytest.mark.skipif(_NO_IPV6_WILDCARD is not None, reason=str(_NO_IPV6_WILDCARD))
def test_a_server_on_the_ipv6_wildcard_accepts_a_client_dialling_ipv4(recorder):
    """Workers are usually told an IPv4 address of the tuner's machine, whatever it listens on."""
    with ReportServer(recorder, host="::") as server:
        channel = server.register(0)
        ipv4 = ChannelSpec("127.0.0.1", channel.port, channel.job_id, channel.secret)
        with ReportClient(ipv4, timeout=TIMEOUT) as client:
            assert client.send(1, {"loss": 0.5}).action is Action.CONTINUE
    assert [c[:3] for c in recorder.calls] == [(0, 1, {"loss": 0.5})]


def test_an_incomplete_frame_is_dropped_after_a_deadline(recorder, monkeypatch):
    monkeypatch.setattr(reporting, "_FIRST_FRAME_SECONDS", 0.2)
    monkeypatch.setattr(reporting, "_PENDING_SECONDS", 0.2)
    monkeypatch.setattr(reporting, "_SWEEP_SECONDS", 0.05)
    with ReportServer(recorder) as server:
        secret = bytes.fromhex(server.register(0).secret)
        with connect(server) as fresh, connect(server) as known:
            known.sendall(frame(secret))  # a valid frame first: then one left incomplete
            read_reply(known)
            for sock in (fresh, known):
                sock.sendall(b"\x00\x00")
                started = time.monotonic()
                assert_closed_without_answer(sock)
                assert time.monotonic() - started < 5
        assert_good_client_works(server, recorder)


# ---- holding connections -------------------------------------------------------------------------


def wait_until(condition: Callable[[], object]) -> None:
    deadline = time.monotonic() + TIMEOUT
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.01)


def assert_open(sock: socket.socket) -> None:
    """Nothing to read yet, and not closed by the server."""
    sock.setblocking(False)
    try:
        with pytest.raises(BlockingIOError):
            sock.recv(1)
    finally:
        sock.settimeout(TIMEOUT)


def test_a_connection_without_a_valid_frame_is_closed_soon_but_an_idle_client_is_kept(
    recorder, monkeypatch
):
    monkeypatch.setattr(reporting, "_FIRST_FRAME_SECONDS", 0.2)  # _PENDING_SECONDS stays 30
    monkeypatch.setattr(reporting, "_SWEEP_SECONDS", 0.05)
    with ReportServer(recorder) as server, ReportClient(server.register(0)) as client:
        client.send(1, {"loss": 1.0})
        kept = client._sock
        with connect(server) as silent:  # connects and sends nothing, as a flood would
            started = time.monotonic()
            assert_closed_without_answer(silent)
            assert time.monotonic() - started < 5
        monkeypatch.setattr(reporting, "_PENDING_SECONDS", 0.2)  # no deadline may apply either
        time.sleep(0.3)  # the client stays idle past both deadlines, through several sweeps
        assert client.send(2, {"loss": 1.0}).action is Action.CONTINUE
        assert client._sock is kept  # its connection was not closed between the two reports
    assert [c[1] for c in recorder.calls] == [1, 2]


def test_connections_waiting_for_a_first_frame_are_capped_by_closing_the_oldest(
    recorder, monkeypatch, caplog
):
    monkeypatch.setattr(reporting, "_MAX_UNAUTHENTICATED", 3)
    monkeypatch.setattr(reporting, "_FIRST_FRAME_SECONDS", 600.0)  # only the cap closes here
    with (
        caplog.at_level(logging.WARNING, logger="amtlib.reporting"),
        ReportServer(recorder) as server,
        ReportClient(server.register(0)) as client,
        contextlib.ExitStack() as stack,
    ):
        client.send(1, {"loss": 1.0})  # an authenticated connection: not counted, never closed
        kept = client._sock
        idle = [stack.enter_context(connect(server)) for _ in range(3)]
        newest = stack.enter_context(connect(server))  # one more than the cap
        assert_closed_without_answer(idle[0])
        for sock in [*idle[1:], newest]:
            assert_open(sock)
        assert client.send(2, {"loss": 1.0}).action is Action.CONTINUE
        assert client._sock is kept
        assert_good_client_works(server, recorder)  # a new connection closes the next oldest
        assert_closed_without_answer(idle[1])
    assert [c[1] for c in recorder.calls if c[0] == 0] == [1, 2]
    warnings = [r.getMessage() for r in caplog.records if "first valid frame" in r.getMessage()]
    assert len(warnings) == 1  # the second closing came within the same 10 s: held back
    assert "3 connections were waiting for their first valid frame" in warnings[0]


def test_a_first_frame_that_waited_on_a_slow_decide_is_still_answered(recorder, monkeypatch):
    """The deadline is the client's, not the server's: a frame that arrived while ``decide`` kept
    the server busy past the connection's deadline is read, not dropped with the connection."""
    monkeypatch.setattr(reporting, "_FIRST_FRAME_SECONDS", 0.2)
    monkeypatch.setattr(reporting, "_SWEEP_SECONDS", 0.05)
    late_frame_sent = threading.Event()

    def answer(job: int, step: int, metrics: dict[str, float]) -> Decision:
        if job == 1:
            assert late_frame_sent.wait(TIMEOUT)
            time.sleep(0.3)  # past the late connection's deadline, its frame unread meanwhile
        return Decision()

    recorder.answer = answer
    with ReportServer(recorder) as server:
        secret = bytes.fromhex(server.register(0).secret)
        slow = server.register(1)

        def report_slowly() -> Decision:
            with ReportClient(slow) as client:
                return client.send(1, {"loss": 1.0})

        # Connected before the slow job's client, so accepted before its report is decided.
        with connect(server) as late, ThreadPoolExecutor(1) as pool:
            busy = pool.submit(report_slowly)
            wait_until(lambda: recorder.calls)  # decide(job 1) has started
            late.sendall(frame(secret))
            late_frame_sent.set()
            assert busy.result(TIMEOUT).action is Action.CONTINUE
            assert read_reply(late)
    assert [c[:2] for c in recorder.calls] == [(1, 1), (0, 1)]


def closed_by_server(sock: socket.socket) -> bool:
    """True once the server has closed ``sock``; reads nothing it sent."""
    timeout = sock.gettimeout()
    sock.setblocking(False)
    try:
        return sock.recv(1, socket.MSG_PEEK) == b""
    except BlockingIOError:
        return False
    except ConnectionResetError:
        return True
    finally:
        sock.settimeout(timeout)


def test_a_replayed_frame_is_answered_but_its_connection_stays_pending(recorder, monkeypatch):
    """Anyone who saw a client's last frame on the network can resend its bytes and get the cached
    reply. That must not authenticate the connection: a review held 50 such connections open past
    the cap and every deadline, after the job had ended, without the secret."""
    monkeypatch.setattr(reporting, "_MAX_UNAUTHENTICATED", 2)
    monkeypatch.setattr(reporting, "_SWEEP_SECONDS", 0.05)
    monkeypatch.setattr(reporting, "_FIRST_FRAME_SECONDS", 600.0)  # until the deadline's own check
    with ReportServer(recorder) as server, contextlib.ExitStack() as stack:
        channel = server.register(0)
        secret = bytes.fromhex(channel.secret)
        sniffed = frame(secret)
        with connect(server) as sock:  # the client's own report, seen on the network
            sock.sendall(sniffed)
            reply = read_reply(sock)
        replays = []
        for _ in range(3):  # one more than the cap
            sock = stack.enter_context(connect(server))
            sock.sendall(sniffed)
            assert read_reply(sock) == reply
            replays.append(sock)
        assert_closed_without_answer(replays[0])  # still pending: the cap closed the oldest
        assert_open(replays[1])
        replays[1].sendall(sniffed)  # a second retransmission on one connection closes it
        assert_closed_without_answer(replays[1])
        monkeypatch.setattr(reporting, "_FIRST_FRAME_SECONDS", 0.5)
        late = stack.enter_context(connect(server))
        late.sendall(sniffed)
        assert read_reply(late) == reply
        started = time.monotonic()
        assert_closed_without_answer(late)  # still pending: closed at its first-frame deadline
        assert time.monotonic() - started < 5
        with ReportClient(channel) as client:  # the job's own clients are unaffected
            assert client.send(2, {"loss": 1.0}).action is Action.CONTINUE
    assert [c[1] for c in recorder.calls] == [1, 2]


def test_a_client_whose_reply_was_lost_resends_then_reconnects_if_that_connection_is_closed(
    recorder, monkeypatch
):
    """The legitimate side of the above: the retransmission gets the cached reply on a connection
    left pending, which the server may close (here to make room under the cap); the client's next
    report reconnects, and its fresh request authenticates the new connection."""
    monkeypatch.setattr(reporting, "_MAX_UNAUTHENTICATED", 1)
    exchange = ReportClient._exchange
    lost: list[bytes] = []

    def lose_the_first_reply(self: ReportClient, request: bytes) -> bytes:
        reply = exchange(self, request)
        if not lost:  # decided and answered, but the connection broke before the reply was read
            lost.append(reply)
            raise ConnectionResetError("the reply was lost")
        return reply

    monkeypatch.setattr(ReportClient, "_exchange", lose_the_first_reply)
    with ReportServer(recorder) as server, ReportClient(server.register(0)) as client:
        assert client.send(1, {"loss": 1.0}).action is Action.CONTINUE  # resent, from the cache
        assert lost and recorder.calls[-1][1] == 1
        resent_on = client._sock
        assert resent_on is not None
        with connect(server) as newcomer:  # one more pending connection than the cap
            wait_until(lambda: closed_by_server(resent_on))
            assert client.send(2, {"loss": 1.0}).action is Action.CONTINUE  # reconnected
            kept = client._sock
            assert kept is not resent_on
            assert_closed_without_answer(newcomer)  # pending: made room for the client's
        assert client.send(3, {"loss": 1.0}).action is Action.CONTINUE
        assert client._sock is kept  # authenticated by its fresh report: kept
    assert [c[1] for c in recorder.calls] == [1, 2, 3]  # decide saw step 1 once


def test_the_connections_of_an_unregistered_or_replaced_job_are_closed(recorder, monkeypatch):
    monkeypatch.setattr(reporting, "_SWEEP_SECONDS", 0.05)
    with (
        ReportServer(recorder) as server,
        ReportClient(server.register(0)) as ended,
        ReportClient(server.register(1)) as replaced,
        ReportClient(server.register(2)) as running,
    ):
        for client in (ended, replaced, running):
            client.send(1, {"loss": 1.0})
        kept = running._sock
        server.unregister(0)
        server.register(1)  # a new attempt: the old one's secret is no longer valid
        for client in (ended, replaced):
            sock = client._sock
            assert sock is not None
            wait_until(lambda sock=sock: closed_by_server(sock))
        assert kept is not None and not closed_by_server(kept)
        assert running.send(2, {"loss": 1.0}).action is Action.CONTINUE
        assert running._sock is kept
    assert [c[:2] for c in recorder.calls] == [(0, 1), (1, 1), (2, 1), (2, 2)]


def _unbindable(address: str) -> str | None:
    """Why a client socket cannot use ``address`` as its source here, or None when it can."""
    try:
        with socket.socket() as probe:
            probe.bind((address, 0))
    except OSError as exc:
        return f"this machine cannot bind {address} ({exc}): all of 127/8 is loopback on Linux only"
    return None


_NO_OTHER_LOOPBACK = _unbindable("127.0.0.2") or _unbindable("127.0.0.3")


@pytest.mark.skipif(_NO_OTHER_LOOPBACK is not None, reason=str(_NO_OTHER_LOOPBACK))
def test_a_flood_from_one_address_closes_its_own_connections_not_a_client_elsewhere(
    recorder, monkeypatch, caplog
):
    """A review had a flood of idle connections close a legitimate client's, whose frame was a
    few milliseconds behind its handshake, as the oldest pending one: the job failed."""
    monkeypatch.setattr(reporting, "_MAX_UNAUTHENTICATED", 2)
    # Only the cap may close connections here, not the first-frame deadline on a loaded machine.
    monkeypatch.setattr(reporting, "_FIRST_FRAME_SECONDS", 600.0)
    with (
        caplog.at_level(logging.WARNING, logger="amtlib.reporting"),
        ReportServer(recorder) as server,
        contextlib.ExitStack() as stack,
    ):
        secret = bytes.fromhex(server.register(0).secret)

        def connect_from(address: str) -> socket.socket:
            sock = stack.enter_context(socket.socket())
            sock.bind((address, 0))
            sock.settimeout(TIMEOUT)
            sock.connect(server.address)
            return sock

        worker = connect_from("127.0.0.2")  # accepted first, its frame not sent yet
        flood = [connect_from("127.0.0.3") for _ in range(3)]
        # The second and third flood connections each found the cap full, the worker still
        # pending: each time the oldest of the flood's made room, never the older worker's.
        assert_closed_without_answer(flood[0])
        assert_closed_without_answer(flood[1])
        worker.sendall(frame(secret))
        assert reporting._split(read_reply(worker))[2]["action"] == "continue"
        assert_open(flood[2])
        assert_open(worker)
    assert [c[:2] for c in recorder.calls] == [(0, 1)]
    warnings = [r.getMessage() for r in caplog.records if "first valid frame" in r.getMessage()]
    assert len(warnings) == 1 and "127.0.0.3 holds the most of them (2, counting" in warnings[0]


def test_accept_failures_pause_accepting_and_are_logged_once(recorder, monkeypatch, caplog):
    """Out of file descriptors, accept() fails while the listener stays readable: the server must
    neither spin nor log each failure (an audit saw 1,229 lines), and must recover."""
    monkeypatch.setattr(reporting, "_ACCEPT_BACKOFF_SECONDS", 0.25)
    failing = threading.Event()
    failing.set()
    calls = []
    accept = socket.socket.accept

    def flaky_accept(self: socket.socket) -> tuple[socket.socket, Any]:
        if threading.current_thread().name.startswith("amtlib-report-server"):
            calls.append(time.monotonic())
            if failing.is_set():
                raise OSError(errno.EMFILE, "Too many open files")
        return accept(self)

    monkeypatch.setattr(socket.socket, "accept", flaky_accept)
    with (
        caplog.at_level(logging.WARNING, logger="amtlib.reporting"),
        ReportServer(recorder) as server,
        connect(server),  # queued: the listener stays readable while accept() fails
    ):
        wait_until(lambda: calls)
        time.sleep(0.6)  # long enough to tell a few paused retries from a busy loop
        failed = len(calls)
        failing.clear()
        assert_good_client_works(server, recorder)
    # One call, then one per 0.25 s pause: 3 or 4 in 0.6 s (retrying at once would be thousands).
    assert 1 <= failed <= 5
    warnings = [r.getMessage() for r in caplog.records if "accept failed" in r.getMessage()]
    assert len(warnings) == 1 and "EMFILE" in warnings[0]


# ---- the client's checks -------------------------------------------------------------------------


@contextlib.contextmanager
def fake_tuner(answer: Callable[[socket.socket], None]) -> Iterator[tuple[str, int]]:
    """A listening socket whose single connection is handled by ``answer`` in a thread."""
    with socket.create_server(("127.0.0.1", 0)) as listener:

        def serve() -> None:
            conn, _ = listener.accept()
            with conn:
                answer(conn)

        thread = threading.Thread(target=serve, daemon=True)
        thread.start()
        yield listener.getsockname()[:2]
        thread.join(TIMEOUT)


def test_a_reply_signed_with_another_key_is_refused_by_the_client():
    def answer(conn: socket.socket) -> None:
        read_reply(conn)
        conn.sendall(reporting._encode(bytes(32), {"kind": "decision", "job_id": 0, "seq": 1,
                                                   "action": "stop", "reason": None}))  # fmt: skip

    with fake_tuner(answer) as (host, port):
        client = ReportClient(ChannelSpec(host, port, 0, "22" * 32))
        with client, pytest.raises(ReportChannelError, match="failed authentication"):
            client.send(1, {"loss": 1.0})


def test_a_silent_tuner_times_out_with_a_clear_error():
    done = threading.Event()

    def answer(conn: socket.socket) -> None:
        done.wait(TIMEOUT)

    with fake_tuner(answer) as (host, port):
        client = ReportClient(ChannelSpec(host, port, 0, "22" * 32), timeout=0.2)
        with client, pytest.raises(ReportChannelError, match=r"no answer within 0\.2 s"):
            client.send(1, {"loss": 1.0})
        done.set()


def test_the_client_reuses_its_connection_and_reconnects_once(server, recorder):
    with ReportClient(server.register(0)) as client:
        client.send(1, {"loss": 1.0})
        sock = client._sock
        client.send(2, {"loss": 1.0})
        assert client._sock is sock
        assert sock is not None
        sock.shutdown(socket.SHUT_RDWR)  # the connection breaks between two reports
        assert client.send(3, {"loss": 1.0}).action is Action.CONTINUE
        assert client._sock is not sock
    assert [c[1] for c in recorder.calls] == [1, 2, 3]


def test_send_validates_its_arguments(server):
    with ReportClient(server.register(0)) as client:
        with pytest.raises(ValidationError, match=r"'step' parameter of ReportClient\.send"):
            client.send(0, {"loss": 1.0})
        with pytest.raises(ValidationError, match="'loss'"):
            client.send(1, {"loss": math.inf})
        with pytest.raises(ValidationError, match="'timestamp'"):
            client.send(1, {"loss": 1.0}, timestamp=math.nan)
    with pytest.raises(ValidationError, match="ChannelSpec"):
        ReportClient(ChannelSpec("127.0.0.1", 1, 0, "short"))


# ---- the server ----------------------------------------------------------------------------------


def test_concurrent_clients_are_all_answered_and_decide_runs_one_at_a_time(recorder):
    jobs, steps = 16, 30
    inside = threading.Lock()
    overlaps = []

    def answer(job: int, step: int, metrics: dict[str, float]) -> Decision:
        if not inside.acquire(blocking=False):
            overlaps.append((job, step))
            return Decision()
        try:
            time.sleep(0.0001)
            return Decision(Action.STOP if step == steps else Action.CONTINUE)
        finally:
            inside.release()

    recorder.answer = answer
    with ReportServer(recorder) as server, ThreadPoolExecutor(jobs) as pool:
        channels = [server.register(j) for j in range(jobs)]
        results = list(pool.map(lambda c: _train_and_report(c, steps + 5), channels))
    assert overlaps == []
    assert all(r["stopped"] == (Action.STOP, None, steps) for r in results)
    for j in range(jobs):
        assert [c[1] for c in recorder.calls if c[0] == j] == list(range(1, steps + 1))


def test_decide_raising_or_returning_garbage_answers_continue_and_logs(server, recorder, caplog):
    def answer(job: int, step: int, metrics: dict[str, float]) -> Decision:
        if step == 1:
            raise RuntimeError("bug in the stopper")
        return "stop"  # type: ignore[return-value]

    recorder.answer = answer
    with (
        caplog.at_level(logging.ERROR, logger="amtlib.reporting"),
        ReportClient(server.register(0)) as client,
    ):
        assert client.send(1, {"loss": 1.0}) == Decision()
        assert client.send(2, {"loss": 1.0}) == Decision()
    messages = [r.getMessage() for r in caplog.records if r.name == "amtlib.reporting"]
    assert any("raised for job id 0 at step 1" in m for m in messages)
    assert any("not a Decision" in m for m in messages)
    assert caplog.records[0].exc_info is not None


def test_close_is_idempotent_frees_the_port_and_refuses_registration(recorder):
    server = ReportServer(recorder).start()
    host, port = server.address
    client = ReportClient(server.register(0))
    client.send(1, {"loss": 1.0})  # leaves an open connection behind
    thread = server._thread
    server.close()
    server.close()
    assert thread is not None and not thread.is_alive()
    with pytest.raises(ReportChannelError):
        client.send(2, {"loss": 1.0})
    with pytest.raises(ReportChannelError, match="after close"):
        server.register(1)
    with pytest.raises(ReportChannelError, match="after close"):
        server.start()
    client.close()
    with ReportServer(recorder, port=port) as again:
        assert again.address == (host, port)


def test_address_is_advertised_and_arguments_are_checked(recorder):
    with ReportServer(recorder, advertise_host="tuner.example") as server:
        assert server.address[0] == "tuner.example"
        assert server.register(0).host == "tuner.example"
    with pytest.raises(ReportChannelError, match="start"):
        _ = ReportServer(recorder).address
    with pytest.raises(ValidationError, match="'decide'"):
        ReportServer(None)  # type: ignore[arg-type]
    with pytest.raises(ValidationError, match="'port'"):
        ReportServer(recorder, port=70000)
    with ReportServer(recorder) as server, pytest.raises(ValidationError, match="'job_id'"):
        server.register(-1)


def test_a_report_round_trip_is_well_under_a_millisecond(server):
    n = 2000
    with job_context(spec_for(server.register(0))):
        report(loss=1.0)  # connect first
        started = time.perf_counter()
        for _ in range(n):
            report(loss=1.0)
        per_report = (time.perf_counter() - started) / n
    # Typically ~0.1 ms on loopback; the bound leaves room for a loaded CI machine.
    assert per_report < 2e-3


def test_only_reports_of_the_objective_count_steps():
    with job_context(spec_for(None, objective_metric_name="loss")) as job:
        report(lr=0.5)  # before the first epoch's loss: that epoch
        report(loss=1.0)
        report(lr=0.1)
        report(lr=0.2, step=1)  # an explicit step may repeat the current one without the loss
        report(loss=0.9)
        with pytest.raises(ValidationError, match=r"from 3 to 2\*\*53"):
            report(loss=0.8, step=2)
        report(loss=0.8, step=5)
    assert [(r.step, sorted(r.metrics)) for r in job.reports] == [
        (1, ["lr"]),
        (1, ["loss"]),
        (1, ["lr"]),
        (1, ["lr"]),
        (2, ["loss"]),
        (5, ["loss"]),
    ]


def test_a_non_finite_objective_stops_the_job_and_side_metrics_are_dropped():
    with job_context(spec_for(None, objective_metric_name="loss")) as job:
        report(loss=1.0, grad_norm=float("inf"))  # the side metric is left out
        report(grad_norm=float("nan"))  # nothing left: no report at all
        with pytest.raises(TrialStopped) as info:
            report(loss=np.float64("nan"))
        with pytest.raises(TrialStopped):  # and every later report
            report(loss=0.5)
    assert [(r.step, r.metrics) for r in job.reports] == [(1, {"loss": 1.0})]
    assert info.value.reason == {"rule": "not_finite", "step": 2, "metric": "loss", "value": "nan"}
    assert job.decision is not None and job.decision.action is Action.STOP
