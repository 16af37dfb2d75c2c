"""Tests of amtlib.executors: the contract every executor meets, then ProcessExecutor's promises.

Tasks that must overlap synchronise through files in ``tmp_path`` rather than sleeps, so that the
tests cannot pass or fail by timing luck.
"""

from __future__ import annotations

import ast
import contextlib
import json
import os
import pickle
import re
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import textwrap
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import Executor, ThreadPoolExecutor
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any

import cloudpickle
import numpy as np
import pytest

import amtlib
from amtlib import ContinuousParameter, Tuner
from amtlib.errors import RemoteTaskError, TaskKilledError, ValidationError, WorkerDiedError
from amtlib.executors import (
    InlineExecutor,
    ProcessExecutor,
    _Watchdog,
    _worker_command,
    default_executor,
    resolve_executor,
)

# Ship this module's task functions by value, so that workers need not import the test module
# (which would depend on pytest's import mode).
cloudpickle.register_pickle_by_value(sys.modules[__name__])

TIMEOUT = 30  # seconds: a future that takes longer than this is a hang, not a slow machine


# ---- tasks ---------------------------------------------------------------------------------------


def _add(a: int, b: int = 0) -> int:
    return a + b


def _raise_value_error(message: str) -> None:
    raise ValueError(message)


def _wait_for(path: str) -> None:
    deadline = time.monotonic() + TIMEOUT
    while not os.path.exists(path):
        if time.monotonic() > deadline:
            raise TimeoutError(f"{path} never appeared")
        time.sleep(0.005)


def _block(started: str, release: str, value: int) -> int:
    Path(started).touch()
    _wait_for(release)
    return value


def _exit_once_started(started: str, code: int) -> None:
    _wait_for(started)
    os._exit(code)


def _sigkill_once_started(started: str) -> None:
    _wait_for(started)
    os.kill(os.getpid(), signal.SIGKILL)  # as the out-of-memory killer would


def _close_every_descriptor(then_run_on: bool) -> None:
    os.closerange(3, 65536)  # the worker's channel to the executor too
    if then_run_on:
        time.sleep(TIMEOUT)


def _segfault_once_started(started: str) -> None:
    import ctypes
    import resource

    _wait_for(started)
    resource.setrlimit(resource.RLIMIT_CORE, (0, 0))  # no core dump to write
    ctypes.string_at(0)


def _spawn_child_and_block(started: str, child_pid_file: str) -> None:
    child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    Path(child_pid_file).write_text(str(child.pid))
    Path(started).touch()
    time.sleep(60)


def _start_sleeper(pid_file: str) -> int:
    """Start a process that outlives the task unless something kills it, and return its pid."""
    child = subprocess.Popen(["sleep", "60"])
    Path(pid_file).write_text(str(child.pid))
    return child.pid


def _start_sleeper_then_exit(pid_file: str) -> None:
    _start_sleeper(pid_file)
    os._exit(3)


def _train_leaving_a_sleeper(hp: dict[str, Any]) -> float:
    _start_sleeper(hp["pid_file"])
    return float(hp["x"])


def _chatty(lines: int) -> int:
    for i in range(lines):
        print("out line", i)
        print("err line", i, file=sys.stderr)
    os.write(1, b"raw write on fd 1\n")
    return lines


class _NeedsKeywordError(Exception):
    """Pickles, but cannot be unpickled: ``cls(*args)`` misses the keyword-only argument."""

    def __init__(self, message: str, *, code: int) -> None:
        super().__init__(message)
        self.code = code


def _raise_needs_keyword() -> None:
    raise _NeedsKeywordError("needs a keyword", code=7)


def _raise_holding_lock() -> None:
    raise ValueError("holds a lock", threading.Lock())


def _return_lock() -> object:
    return threading.Lock()


def _exit_via_sys_exit() -> None:
    sys.exit(5)


# ---- helpers -------------------------------------------------------------------------------------


class _ExitsWhenUnpickled:
    """A result whose unpickling, in the parent, raises SystemExit."""

    def __reduce__(self) -> tuple[Any, ...]:
        return (sys.exit, (7,))


def _return_exits_when_unpickled() -> object:
    return _ExitsWhenUnpickled()


class _InterruptsWhenPickled(Exception):
    """An exception whose pickling, in the worker, raises KeyboardInterrupt."""

    def __reduce__(self) -> Any:
        raise KeyboardInterrupt("raised while pickling the exception")


def _raise_interrupts_when_pickled() -> None:
    raise _InterruptsWhenPickled("the task's own error")


class _WriteOnly:
    """A stream with write() and no flush(), as a hand-made "tee" often is."""

    def write(self, text: str) -> int:
        return len(text)


def _swap_stdout_for_write_only() -> str:
    sys.stdout = _WriteOnly()
    print("hello")
    return "done"


def _children(parent: int | None = None) -> set[int]:
    """Pids of the children of ``parent`` (this process by default), zombies included."""
    me, pids = os.getpid() if parent is None else parent, set()
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                stat = (entry / "stat").read_text()
            except OSError:
                continue  # exited meanwhile
            if int(stat.rpartition(")")[2].split()[1]) == me:
                pids.add(int(entry.name))
    return pids


def _is_running(pid: int) -> bool:
    """True unless the process is gone or a zombie."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rpartition(")")[2].split()[0] not in ("Z", "X")


def _eventually(condition: Callable[[], bool], timeout: float = 10.0) -> bool:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.01)
    return True


@pytest.fixture
def sleeper_pid_file(tmp_path: Path) -> Iterator[Path]:
    """Where ``_start_sleeper`` writes its pid; the sleeper is killed afterwards if it survived."""
    pid_file = tmp_path / "sleeper.pid"
    yield pid_file
    if pid_file.exists():
        with contextlib.suppress(ProcessLookupError):
            os.kill(int(pid_file.read_text()), signal.SIGKILL)


# ---- the contract, for every executor ------------------------------------------------------------

FACTORIES: dict[str, Callable[[], Executor]] = {
    "process": lambda: ProcessExecutor(2),
    "thread": lambda: ThreadPoolExecutor(2),
    "inline": InlineExecutor,
}


@pytest.fixture(params=sorted(FACTORIES))
def executor(request: pytest.FixtureRequest) -> Iterator[Executor]:
    made = FACTORIES[request.param]()
    yield made
    made.shutdown(wait=True)


def test_results_round_trip(executor: Executor) -> None:
    assert executor.submit(_add, 2, b=3).result(TIMEOUT) == 5
    payload = {"array": np.arange(3.0), "text": "é", "nested": [(1, None)]}
    returned = executor.submit(dict, payload).result(TIMEOUT)
    assert returned.keys() == payload.keys()
    np.testing.assert_array_equal(returned["array"], payload["array"])
    assert list(executor.map(_add, range(5), range(5))) == [0, 2, 4, 6, 8]


def test_exceptions_round_trip(executor: Executor) -> None:
    future = executor.submit(_raise_value_error, "bad value")
    with pytest.raises(ValueError, match=r"^bad value$"):
        future.result(TIMEOUT)


def test_submit_after_shutdown_raises(executor: Executor) -> None:
    executor.shutdown()
    with pytest.raises(RuntimeError):
        executor.submit(_add, 1)


# ---- ProcessExecutor -----------------------------------------------------------------------------


@pytest.fixture(scope="module")
def shared() -> Iterator[ProcessExecutor]:
    """One executor for the tests that do not kill or stop workers, to save start-up time."""
    with ProcessExecutor(2) as made:
        yield made


def test_tasks_run_in_reused_worker_processes() -> None:
    with ProcessExecutor(1) as executor:
        pids = {executor.submit(os.getpid).result(TIMEOUT) for _ in range(5)}
    assert len(pids) == 1
    assert os.getpid() not in pids


def test_closures_and_lambdas(shared: ProcessExecutor) -> None:
    offset = 10
    counter = [0]

    def add_offset(x: int) -> int:
        counter[0] += 1  # mutates the worker's copy only
        return x + offset

    assert shared.submit(add_offset, 1).result(TIMEOUT) == 11
    assert shared.submit(lambda x: x * offset, 4).result(TIMEOUT) == 40
    assert counter == [0]


def test_remote_traceback_is_the_cause(shared: ProcessExecutor) -> None:
    error = shared.submit(_raise_value_error, "deep").exception(TIMEOUT)
    assert isinstance(error, ValueError)
    assert "_raise_value_error" in str(error.__cause__)


def test_exception_that_cannot_be_unpickled_becomes_remote_task_error(
    shared: ProcessExecutor,
) -> None:
    error = shared.submit(_raise_needs_keyword).exception(TIMEOUT)
    assert isinstance(error, RemoteTaskError)
    assert error.type_name.endswith("_NeedsKeywordError")
    assert error.message == "needs a keyword"
    assert "_raise_needs_keyword" in error.remote_traceback


def test_exception_that_cannot_be_pickled_becomes_remote_task_error(
    shared: ProcessExecutor,
) -> None:
    error = shared.submit(_raise_holding_lock).exception(TIMEOUT)
    assert isinstance(error, RemoteTaskError)
    assert error.type_name == "ValueError"
    assert "holds a lock" in error.message


def test_unpicklable_result_fails_the_future_clearly(shared: ProcessExecutor) -> None:
    error = shared.submit(_return_lock).exception(TIMEOUT)
    assert isinstance(error, RemoteTaskError)
    assert "the task returned a lock, which cannot be pickled" in str(error)
    assert shared.submit(_add, 1, 1).result(TIMEOUT) == 2  # the worker carries on


def test_results_and_errors_whose_pickling_raises_anything_fail_only_their_task() -> None:
    # A SystemExit from unpickling a result used to kill the executor's manager thread (the future
    # never completed, every other task failed); a KeyboardInterrupt from pickling an exception
    # killed the worker, reported as SIGKILL "out of memory" (an executor fuzz).
    with ProcessExecutor(1) as executor:
        error = executor.submit(_return_exits_when_unpickled).exception(TIMEOUT)
        assert isinstance(error, RemoteTaskError) and "could not be unpickled" in str(error)
        error = executor.submit(_raise_interrupts_when_pickled).exception(TIMEOUT)
        assert isinstance(error, RemoteTaskError) and "the task's own error" in str(error)
        assert executor.submit(_add, 1, 1).result(TIMEOUT) == 2


@pytest.mark.parametrize("raised", [SystemExit, KeyboardInterrupt])
def test_a_done_callback_raising_system_exit_or_keyboard_interrupt_fails_no_task(
    tmp_path: Path, caplog: pytest.LogCaptureFixture, raised: type[BaseException]
) -> None:
    # Future lets a callback's BaseException out of set_result, into the thread that completes the
    # future: it ended the manager thread, and every other task failed.
    def callback(future: object) -> None:
        raise raised("from a done-callback")

    first, second = tmp_path / "first", tmp_path / "second"
    with ProcessExecutor(2) as executor:
        futures = [
            executor.submit(_block, f"{p}.started", f"{p}.release", i)
            for i, p in [(1, first), (2, second)]
        ]
        _wait_for(f"{first}.started")
        futures[0].add_done_callback(callback)  # before it is done: the manager thread runs it
        Path(f"{first}.release").touch()
        assert futures[0].result(TIMEOUT) == 1
        Path(f"{second}.release").touch()
        assert futures[1].result(TIMEOUT) == 2  # it ran alongside, and completes after the callback
        assert executor.submit(_add, 1, 2).result(TIMEOUT) == 3
    [record] = [r for r in caplog.records if r.name == "concurrent.futures"]
    assert record.getMessage().startswith("exception calling callback for <Future")
    assert record.exc_info is not None and record.exc_info[0] is raised


def test_a_task_that_leaves_a_stdout_without_flush_keeps_its_result() -> None:
    # The worker's flush after the task raised AttributeError and the worker died: the result was
    # lost, reported as SIGKILL "out of memory" (an executor fuzz).
    with ProcessExecutor(1) as executor:
        assert executor.submit(_swap_stdout_for_write_only).result(TIMEOUT) == "done"


def test_unpicklable_argument_raises_at_submit(shared: ProcessExecutor) -> None:
    with pytest.raises(ValidationError, match=r"'fn' parameter of ProcessExecutor.submit"):
        shared.submit(_add, threading.Lock())


def test_sys_exit_in_a_task_fails_the_task_not_the_worker() -> None:
    with ProcessExecutor(1) as executor:
        pid = executor.submit(os.getpid).result(TIMEOUT)
        error = executor.submit(_exit_via_sys_exit).exception(TIMEOUT)
        assert isinstance(error, SystemExit) and error.code == 5
        assert executor.submit(os.getpid).result(TIMEOUT) == pid


def test_user_prints_do_not_break_the_channel(capfd: pytest.CaptureFixture[str]) -> None:
    with ProcessExecutor(1) as executor:
        results = [executor.submit(_chatty, 300).result(TIMEOUT) for _ in range(3)]
    assert results == [300, 300, 300]
    out, err = capfd.readouterr()
    assert out.count("out line 299\n") == 3
    assert out.count("raw write on fd 1\n") == 3
    assert err.count("err line 299\n") == 3


@pytest.mark.parametrize(
    ("crash", "expected"),
    [
        (lambda started: (_exit_once_started, started, 3), "exited with code 3"),
        (lambda started: (_segfault_once_started, started), "died with SIGSEGV"),
        (
            lambda started: (_sigkill_once_started, started),
            r"died with SIGKILL \(the system may have run out of memory\)",
        ),
    ],
    ids=["os._exit(3)", "segfault", "SIGKILL"],
)
def test_a_dying_worker_fails_only_its_task(
    tmp_path: Path, crash: Callable[[str], tuple[Any, ...]], expected: str
) -> None:
    started, release = str(tmp_path / "started"), str(tmp_path / "release")
    before = _children()
    with ProcessExecutor(2) as executor:
        survivor = executor.submit(_block, started, release, 42)
        doomed = executor.submit(*crash(started))
        queued = [executor.submit(_add, i, 1) for i in range(4)]
        with pytest.raises(WorkerDiedError, match=rf"worker process \d+ {expected}") as info:
            doomed.result(TIMEOUT)
        assert "while running the task" in str(info.value)
        assert survivor.running()  # it ran alongside the crash, and still runs
        # The dead worker is reaped before its future fails: no zombie.
        dead = int(str(info.value).split()[2])
        assert dead not in _children()
        Path(release).touch()
        assert survivor.result(TIMEOUT) == 42
        assert [f.result(TIMEOUT) for f in queued] == [1, 2, 3, 4]
        assert executor.submit(_add, 5).result(TIMEOUT) == 5
    assert _children() <= before


@pytest.mark.parametrize(
    ("then_run_on", "grace", "expected"),
    [
        (
            False,
            TIMEOUT,  # however slow this machine is, the worker exits by itself first
            r"exited with code 74 \(its channel to the executor broke\) while running the task",
        ),
        (
            True,
            0.1,
            r"closed its channel to the executor and had not exited 0\.1 s later, so the executor"
            r" killed it \(SIGKILL\) while running the task",
        ),
    ],
    ids=["then returns", "then runs on"],
)
def test_a_task_that_closes_its_workers_channel_is_not_blamed_on_memory(
    monkeypatch: pytest.MonkeyPatch, then_run_on: bool, grace: float, expected: str
) -> None:
    # The executor killed the worker (SIGKILL) on its channel's end of file, and a worker killed
    # itself when it could not send its reply: the task failed with "died with SIGKILL (the system
    # may have run out of memory)".
    monkeypatch.setattr("amtlib.executors._END_OF_FILE_GRACE_SECONDS", grace, raising=False)
    with ProcessExecutor(1) as executor:
        error = executor.submit(_close_every_descriptor, then_run_on).exception(TIMEOUT)
        assert isinstance(error, WorkerDiedError)
        assert re.search(rf"^worker process \d+ {expected}\. Fix: close only the file", str(error))
        assert executor.submit(_add, 1, 1).result(TIMEOUT) == 2  # a replacement


def test_a_worker_that_exits_soon_after_closing_its_channel_gets_its_own_exit_code(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # As a Python worker does when it exits with an error: its interpreter's teardown closes the
    # channel, and the exit code comes later. It was killed at the end of file, and reported as
    # "died with SIGKILL (the system may have run out of memory)".
    fake_python = tmp_path / "python"
    fake_python.write_text(
        f"#!{sys.executable}\n"
        "import os, sys, time\n"
        "os.close(int(sys.argv[3]))  # run as: python -c <bootstrap> <fd> <pid>\n"
        "time.sleep(0.2)\n"
        "sys.exit(3)\n"
    )
    fake_python.chmod(0o755)
    monkeypatch.setattr(sys, "executable", str(fake_python))
    monkeypatch.setattr("amtlib.executors._END_OF_FILE_GRACE_SECONDS", TIMEOUT, raising=False)
    with (
        ProcessExecutor(1) as executor,
        pytest.raises(WorkerDiedError, match=r"exited with code 3 before it was ready"),
    ):
        executor.submit(_add, 1).result(TIMEOUT)


def test_kill_stops_a_running_task_and_what_it_started(tmp_path: Path) -> None:
    started, child_pid_file = str(tmp_path / "started"), tmp_path / "child.pid"
    with ProcessExecutor(1) as executor:
        first_pid = executor.submit(os.getpid).result(TIMEOUT)
        future = executor.submit(_spawn_child_and_block, started, str(child_pid_file))
        _wait_for(started)
        grandchild = int(child_pid_file.read_text())
        assert _is_running(grandchild)
        t0 = time.monotonic()
        assert executor.kill(future) is True
        assert future.done()  # failed before kill() returned
        error = future.exception(0)
        assert isinstance(error, TaskKilledError) and isinstance(error, WorkerDiedError)
        assert f"worker process {first_pid} was killed on request" in str(error)
        assert executor.kill(future) is False
        assert _eventually(lambda: not _is_running(grandchild))
        assert executor.submit(os.getpid).result(TIMEOUT) != first_pid  # a replacement
        assert time.monotonic() - t0 < 10


@pytest.mark.parametrize("ending", ["shutdown", "crash", "idle death"])
def test_processes_a_task_started_die_with_its_worker(sleeper_pid_file: Path, ending: str) -> None:
    # However the worker ends: it exits cleanly at shutdown, its task kills it, or it dies idle.
    pid_file = str(sleeper_pid_file)
    with ProcessExecutor(1) as executor:
        if ending == "crash":
            error = executor.submit(_start_sleeper_then_exit, pid_file).exception(TIMEOUT)
            assert isinstance(error, WorkerDiedError)
        else:
            worker = executor.submit(os.getpid).result(TIMEOUT)
            assert _is_running(executor.submit(_start_sleeper, pid_file).result(TIMEOUT))
            if ending == "idle death":
                os.kill(worker, signal.SIGKILL)
                assert _eventually(lambda: worker not in _children())
    sleeper = int(sleeper_pid_file.read_text())
    assert _eventually(lambda: not _is_running(sleeper), timeout=5)


def test_fit_leaves_no_process_a_job_started(sleeper_pid_file: Path) -> None:
    Tuner(
        _train_leaving_a_sleeper,
        "loss",
        {"x": ContinuousParameter(0, 1)},
        objective_type="Minimize",
        strategy="Random",
        max_jobs=1,
        store=":memory:",
        executor="process",
        static_hyperparameters={"pid_file": str(sleeper_pid_file)},
    ).fit()
    sleeper = int(sleeper_pid_file.read_text())
    assert _eventually(lambda: not _is_running(sleeper), timeout=5)


def test_worker_whose_parent_goes_away_kills_what_its_tasks_started(sleeper_pid_file: Path) -> None:
    # End of file on the channel is how a worker learns that its parent is gone, where the kernel
    # does not kill it first (see the test below for a parent that is killed); here the parent
    # lives on and closes the channel instead.
    parent_end, child_end = socket.socketpair()
    worker = subprocess.Popen(
        _worker_command(child_end.fileno()),
        pass_fds=(child_end.fileno(),),
        stdin=subprocess.DEVNULL,
        start_new_session=True,
    )
    child_end.close()
    try:
        with Connection(parent_end.detach()) as conn:
            setup = {"sys_path": sys.path, "cwd": None}
            conn.send_bytes(pickle.dumps(setup))
            assert conn.recv_bytes() == b""  # ready
            conn.send_bytes(cloudpickle.dumps((_start_sleeper, (str(sleeper_pid_file),), {})))
            ok, sleeper = pickle.loads(conn.recv_bytes())
            assert ok and _is_running(sleeper)
        assert worker.wait(TIMEOUT) == -signal.SIGKILL  # it killed its group, itself included
        assert _eventually(lambda: not _is_running(sleeper), timeout=5)
    finally:
        worker.kill()
        worker.wait()


_KILLED_TUNER = """
import os, sys, threading, time
from amtlib.executors import ProcessExecutor

def publish(path, text):
    # Whole or not at all: the test reads the file as soon as it exists.
    with open(path + ".tmp", "w") as file:
        file.write(text)
    os.replace(path + ".tmp", path)

def job(out):
    import os, subprocess, time
    sleeper = subprocess.Popen(["sleep", "60"])
    publish(os.path.join(out, "job"), f"{os.getpid()} {sleeper.pid}")
    time.sleep(60)

def start(out, executors):
    executor = ProcessExecutor(1)
    executor.submit(job, out)
    executors.append(executor)

out, how = sys.argv[1], sys.argv[2]
executors = []
if how == "from a thread that ended":
    thread = threading.Thread(target=start, args=(out, executors))
    thread.start()
    thread.join()
else:
    start(out, executors)
while not os.path.exists(os.path.join(out, "job")):
    time.sleep(0.01)
if how == "with a forked child":
    child = os.fork()
    if child == 0:
        time.sleep(60)
        os._exit(0)
    publish(os.path.join(out, "fork"), str(child))
publish(os.path.join(out, "ready"), "")
time.sleep(60)
"""


@pytest.mark.parametrize(
    "how", ["from the main thread", "from a thread that ended", "with a forked child"]
)
def test_killed_tuner_leaves_no_process_a_job_started(tmp_path: Path, how: str) -> None:
    # The tuner is killed: nothing of it runs. On Linux the kernel kills the worker; the watchdog
    # must kill what the job started, at once, then exit. The pool may be used from a thread that
    # ended since, and a child forked by the tuner holds a copy of its memory, not of the watchdog's
    # channel.
    script = tmp_path / "tuner.py"
    script.write_text(_KILLED_TUNER)
    tuner = subprocess.Popen([sys.executable, str(script), str(tmp_path), how])
    spawned: list[int] = []
    try:
        assert _eventually(lambda: (tmp_path / "ready").exists() or tuner.poll() is not None, 60)
        assert tuner.poll() is None, "the tuner script failed"
        worker, sleeper = map(int, (tmp_path / "job").read_text().split())
        spawned.append(sleeper)
        if how == "with a forked child":
            spawned.append(int((tmp_path / "fork").read_text()))
        helpers = _children(tuner.pid) - {worker, *spawned}  # the watchdog
        spawned += helpers
        assert _is_running(sleeper)
        tuner.kill()
        tuner.wait(TIMEOUT)
        assert _eventually(lambda: not _is_running(sleeper), timeout=5)
        assert _eventually(lambda: not _is_running(worker), timeout=5)
        assert len(helpers) == 1  # one watchdog per pool, which exits once its job is done
        assert _eventually(lambda: not any(_is_running(pid) for pid in helpers), timeout=5)
    finally:
        tuner.kill()
        tuner.wait()
        for pid in spawned:
            if _is_running(pid):  # a survivor of a failed test; a dead one's pid may be reused
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)


def test_watchdog_kills_the_groups_it_knows_only_when_its_owner_dies() -> None:
    # Stand-ins for workers: group leaders that we do not reap, so that their ids cannot be reused.
    leaders = [subprocess.Popen(["sleep", "60"], start_new_session=True) for _ in range(4)]
    try:
        orphaned = _Watchdog()
        orphaned.start()
        for leader in leaders[:3]:
            orphaned.watch(leader.pid)
        orphaned.forget(leaders[1].pid)  # a worker reaped: its group id may name another now
        orphaned._release()  # the owner's end closes without "bye", as when the owner dies
        assert orphaned.process is not None and orphaned.process.wait(TIMEOUT) == 0
        assert leaders[0].wait(TIMEOUT) == -signal.SIGKILL
        assert leaders[2].wait(TIMEOUT) == -signal.SIGKILL
        assert leaders[1].poll() is None

        stopped = _Watchdog()
        stopped.start()
        stopped.watch(leaders[1].pid)
        stopped.watch(leaders[3].pid)
        stopped.stop()  # a clean shutdown: it exits without killing
        assert stopped.process is not None and stopped.process.returncode == 0
        assert leaders[1].poll() is None and leaders[3].poll() is None
    finally:
        for leader in leaders:
            leader.kill()
            leader.wait()


def test_queued_task_is_cancelled_not_killed(tmp_path: Path) -> None:
    started, release = str(tmp_path / "started"), str(tmp_path / "release")
    with ProcessExecutor(1) as executor:
        running = executor.submit(_block, started, release, 1)
        queued = executor.submit(_add, 2)
        _wait_for(started)
        assert executor.kill(queued) is False
        assert queued.cancel()
        Path(release).touch()
        assert running.result(TIMEOUT) == 1
        assert executor.kill(running) is False  # finished
        assert queued.cancelled()
        assert executor.submit(_add, 3).result(TIMEOUT) == 3


def test_worker_that_dies_idle_is_replaced_silently() -> None:
    with ProcessExecutor(1) as executor:
        pid = executor.submit(os.getpid).result(TIMEOUT)
        os.kill(pid, signal.SIGKILL)
        assert _eventually(lambda: pid not in _children())  # noticed and reaped
        assert executor.submit(os.getpid).result(TIMEOUT) not in (pid, os.getpid())


def test_shutdown_leaves_no_child_processes() -> None:
    before = _children()
    executor = ProcessExecutor(2)
    pids = {executor.submit(os.getpid).result(TIMEOUT) for _ in range(4)}
    futures = [executor.submit(_add, i) for i in range(20)]
    assert _children() - before  # workers exist
    executor.shutdown(wait=True)
    assert all(f.done() for f in futures)
    assert _children() <= before
    assert not any(_is_running(pid) for pid in pids)


def test_shutdown_cancel_futures(tmp_path: Path) -> None:
    started, release = str(tmp_path / "started"), str(tmp_path / "release")
    before = _children()
    executor = ProcessExecutor(1)
    running = executor.submit(_block, started, release, 1)
    queued = [executor.submit(_add, i) for i in range(3)]
    _wait_for(started)
    executor.shutdown(wait=False, cancel_futures=True)
    assert all(f.cancelled() for f in queued)
    with pytest.raises(RuntimeError, match="after shutdown"):
        executor.submit(_add, 1)
    Path(release).touch()
    assert running.result(TIMEOUT) == 1  # running tasks finish
    executor.shutdown(wait=True)
    assert _children() <= before


def test_dropped_executor_finishes_its_tasks_then_stops_its_workers() -> None:
    before = _children()
    future = ProcessExecutor(1).submit(_add, 2, 3)  # the executor is garbage at once
    assert future.result(TIMEOUT) == 5
    assert _eventually(lambda: _children() <= before)


def test_shutdown_without_wait_still_finishes_queued_tasks() -> None:
    executor = ProcessExecutor(2)
    futures = [executor.submit(_add, i, 1) for i in range(10)]
    executor.shutdown(wait=False)
    assert [f.result(TIMEOUT) for f in futures] == list(range(1, 11))


def test_worker_that_cannot_start_fails_tasks_instead_of_hanging(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    false = shutil.which("false")
    assert false is not None
    monkeypatch.setattr(sys, "executable", false)
    with ProcessExecutor(2) as executor:
        futures = [executor.submit(_add, i) for i in range(3)]
        for future in futures:
            with pytest.raises(WorkerDiedError, match="exited with code 1 before it was ready"):
                future.result(TIMEOUT)


@pytest.mark.parametrize("bad", [0, -1, 1.5, "2", None, True])
def test_max_workers_is_validated(bad: object) -> None:
    with pytest.raises(ValidationError) as info:
        ProcessExecutor(bad)  # type: ignore[arg-type]
    message = str(info.value)
    assert "The 'max_workers' parameter of ProcessExecutor must be an int >= 1." in message
    assert f"Got {bad!r} ({type(bad).__name__}) instead." in message
    assert "Fix: pass max_workers=1 or more." in message


def test_max_workers_accepts_numpy_ints() -> None:
    executor = ProcessExecutor(np.int64(3))  # type: ignore[arg-type]
    assert executor.max_workers == 3 and type(executor.max_workers) is int
    executor.shutdown()


def test_throughput_floor(shared: ProcessExecutor) -> None:
    # Measured ~4,800 no-op tasks/s on 2 cores; the floor is 10x lower so that a loaded CI machine
    # does not fail it, while a per-task thread or process (~100/s) would.
    shared.submit(_add, 0).result(TIMEOUT)
    n, t0 = 2000, time.perf_counter()
    futures = [shared.submit(_add, i) for i in range(n)]
    assert [f.result(TIMEOUT) for f in futures] == list(range(n))
    assert n / (time.perf_counter() - t0) > 400


# ---- scripts: __main__ functions, and a forgotten shutdown ---------------------------------------


def _run_script(
    directory: Path,
    source: str,
    python: str = sys.executable,
    env: dict[str, str] | None = None,
    timeout: float = 60,
) -> subprocess.CompletedProcess[str]:
    """Write ``source`` (dedented) to ``user_script.py`` in ``directory`` and run it there."""
    script = directory / "user_script.py"
    script.write_text(textwrap.dedent(source))
    return subprocess.run(
        [python, str(script)],
        cwd=directory,
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


def _last_json_line(done: subprocess.CompletedProcess[str]) -> Any:
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout.splitlines()[-1])


def test_unguarded_main_script(tmp_path: Path) -> None:
    # No `if __name__ == "__main__":` guard: a worker that imported __main__ would submit again.
    done = _run_script(
        tmp_path,
        """
        from amtlib.executors import ProcessExecutor

        def square(x):
            return x * x

        class Box:
            def __init__(self, value):
                self.value = value

        executor = ProcessExecutor(2)
        print("squares", list(executor.map(square, range(5))))
        print("box", executor.submit(lambda box: Box(box.value + 1), Box(1)).result().value)
        executor.shutdown()
        print("done")
        """,
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.splitlines() == ["squares [0, 1, 4, 9, 16]", "box 2", "done"]


def test_a_process_job_traceback_names_the_user_script_and_its_lines(tmp_path: Path) -> None:
    # cloudpickle ships __main__'s functions by value and names their file "<dynamic-code>":
    # the stored traceback had neither the script nor its source lines.
    done = _run_script(
        tmp_path,
        """
        import functools, json
        from amtlib import ContinuousParameter, Tuner

        def helper(x):
            return 1 / (x * 0)  # the faulty line

        class Model:
            def fit(self, x):
                return helper(x)

        def train(hp, scale=1.0):
            return (lambda: Model().fit(hp["x"] * scale))()

        traces = []
        for function in (train, functools.partial(train, scale=2.0)):
            job = Tuner(
                function, "loss", {"x": ContinuousParameter(0, 1)}, objective_type="Minimize",
                strategy="Random", max_jobs=1, random_seed=0, store=":memory:",
                executor="process", initial_failure_limit=None,
            ).fit()
            traces.append(job.training_jobs[0].traceback)
        print(json.dumps(traces))
        """,
    )
    script = str(tmp_path / "user_script.py")
    for trace in _last_json_line(done):  # the function itself, then a partial of it
        for line, function in [(13, "train"), (13, "<lambda>"), (10, "fit"), (6, "helper")]:
            assert f'File "{script}", line {line}, in {function}' in trace, trace
        assert "return 1 / (x * 0)  # the faulty line" in trace and "<dynamic-code>" not in trace


def test_forgotten_shutdown_kills_workers_at_exit(tmp_path: Path) -> None:
    t0 = time.monotonic()
    done = _run_script(
        tmp_path,
        """
        import os, time
        from amtlib.executors import ProcessExecutor

        executor = ProcessExecutor(1)
        print(executor.submit(os.getpid).result(), flush=True)
        executor.submit(time.sleep, 60)
        time.sleep(0.2)
        """,
    )
    assert done.returncode == 0, done.stderr
    assert time.monotonic() - t0 < 30  # did not wait for the 60 s task
    worker = int(done.stdout.split()[0])
    assert _eventually(lambda: not _is_running(worker))


def _interpreter_without_amtlib(tmp_path: Path) -> tuple[str, dict[str, str]]:
    """An interpreter, and an environment, that find amtlib's dependencies but not amtlib.

    The base interpreter of the virtual environment the tests run in, with the directories that
    hold the dependencies on PYTHONPATH: there .pth files are not read, so an editable install is
    not found either. Skips the test when that interpreter still finds an amtlib.
    """
    python = getattr(sys, "_base_executable", sys.executable)
    dependencies = ["numpy", "scipy", "sklearn", "joblib", "cloudpickle", "threadpoolctl"]
    holders = []
    for name in dependencies:
        module = sys.modules.get(name) or __import__(name)
        file = Path(module.__file__ or "")
        holder = file.parent.parent if file.name == "__init__.py" else file.parent
        if str(holder) not in holders:
            holders.append(str(holder))
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(holders), "PYTHONNOUSERSITE": "1"}
    probe = subprocess.run(
        [
            python,
            "-c",
            f"import importlib.util, {', '.join(dependencies)}; "
            "raise SystemExit(importlib.util.find_spec('amtlib') is not None)",
        ],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    if probe.returncode != 0:
        pytest.skip(
            f"{python} with PYTHONPATH={env['PYTHONPATH']} finds an amtlib, or not the dependencies:"
            f" {probe.stderr.strip() or 'amtlib found'}"
        )
    return python, env


def _copy_amtlib_to(directory: Path) -> None:
    """A copy of the amtlib package under test in ``directory`` (found only through sys.path)."""
    shutil.copytree(
        Path(amtlib.__file__).parent,
        directory / "amtlib",
        ignore=shutil.ignore_patterns("__pycache__"),
    )


@pytest.mark.parametrize("amtlib_elsewhere", ["installed", "absent"])
def test_workers_use_the_amtlib_the_parent_found_through_sys_path(
    tmp_path: Path, amtlib_elsewhere: str
) -> None:
    # A notebook doing sys.path.append("../src"): the workers must import that same amtlib, both
    # when the interpreter has another one installed (the editable install of these tests) and when
    # it has none. The training function lives in a module also found only through sys.path.
    src, lib, notebook = tmp_path / "src", tmp_path / "lib", tmp_path / "notebook"
    _copy_amtlib_to(src)
    lib.mkdir()
    (lib / "user_train.py").write_text(
        textwrap.dedent(
            """
            import sys

            def train(hp):
                used = sys.modules["amtlib"].__file__
                if used != hp["amtlib"]:
                    raise RuntimeError(f"the worker imported {used}")
                return hp["x"]
            """
        )
    )
    notebook.mkdir()
    if amtlib_elsewhere == "installed":
        python, env = sys.executable, dict(os.environ)
    else:
        python, env = _interpreter_without_amtlib(notebook)
    done = _run_script(
        notebook,
        f"""
            import json, sys
            sys.path.insert(0, {str(src)!r})
            sys.path.append({str(lib)!r})
            import amtlib
            from amtlib import ContinuousParameter, Tuner
            from user_train import train

            job = Tuner(
                train, "loss", {{"x": ContinuousParameter(0, 1)}}, objective_type="Minimize",
                strategy="Random", max_jobs=2, random_seed=0, store=":memory:",
                executor="process", job_name="notebook", initial_failure_limit=None,
                static_hyperparameters={{"amtlib": amtlib.__file__}},
            ).fit()
            print(json.dumps({{
                "parent": amtlib.__file__,
                "jobs": [[j.status.value, j.failure_reason] for j in job.training_jobs],
            }}))
            """,
        python,
        env,
        timeout=120,
    )
    outcome = _last_json_line(done)
    assert outcome["parent"] == str(src / "amtlib" / "__init__.py")
    assert outcome["jobs"] == [["Completed", None], ["Completed", None]], done.stderr


def test_a_module_next_to_amtlib_does_not_shadow_the_standard_library_in_workers(
    tmp_path: Path,
) -> None:
    # The parent appended the directory that holds amtlib and a user's secrets.py, after the
    # standard library: the worker must see it there too, even while it starts (amtlib imports
    # secrets), or the user's module replaces the standard one and report() breaks.
    src = tmp_path / "src"
    _copy_amtlib_to(src)
    (src / "secrets.py").write_text('API_KEY = "not the standard library"\n')
    done = _run_script(
        tmp_path,
        f"""
            import json, sys
            sys.path.append({str(src)!r})
            import amtlib, secrets
            from amtlib.executors import ProcessExecutor

            def seen():
                import secrets, sys
                return [sys.modules["amtlib"].__file__, secrets.__file__, secrets.token_hex(2)]

            with ProcessExecutor(1) as executor:
                worker = executor.submit(seen).result()
            print(json.dumps({{"parent": [amtlib.__file__, secrets.__file__], "worker": worker}}))
            """,
    )
    outcome = _last_json_line(done)
    assert outcome["parent"] == [str(src / "amtlib" / "__init__.py"), secrets.__file__]
    assert outcome["worker"][:2] == outcome["parent"]


def test_worker_command_gives_the_worker_the_parents_sys_path(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # In the parent's order, with amtlib's directory appended when missing; entries the import
    # system ignores are dropped, as their repr may not run in the worker.
    root = os.path.dirname(os.path.dirname(os.path.abspath(amtlib.__file__)))
    probe = "print(repr(sys.path))"  # nothing to import: the made-up sys.path has no stdlib
    for path, expected in [
        (["/a", "", root, "/b"], ["/a", "", root, "/b"]),
        (["/a", Path("/p"), b"/c", "/b"], ["/a", "/b", root]),
    ]:
        monkeypatch.setattr(sys, "path", path)
        command = _worker_command(99)
        assert command[0] == sys.executable and command[3:] == ["99", str(os.getpid())]
        bootstrap = command[2]
        assert bootstrap.endswith("; from amtlib._worker import main; sys.exit(main(sys.argv[1:]))")
        # Run everything before the import of amtlib._worker, then print the sys.path it made.
        prefix = bootstrap.partition("; from amtlib._worker")[0]
        shown = subprocess.run(
            [sys.executable, "-c", f"{prefix}; {probe}"],
            capture_output=True,
            text=True,
            timeout=60,
            check=True,
        )
        assert ast.literal_eval(shown.stdout) == expected


def test_a_sys_path_entry_that_cannot_be_pickled_does_not_stop_the_executor(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # sys.path went to each worker pickled, entries the import system skips included: pickling
    # this one raised in the manager thread, which ended, and every task failed.
    importable = list(sys.path)
    monkeypatch.setattr(sys, "path", [*importable, threading.Lock()])
    with ProcessExecutor(1) as executor:
        assert executor.submit(lambda: sys.path).result(TIMEOUT) == importable


@pytest.mark.parametrize("pythonpath", [None, "/nonexistent/a" + os.pathsep + "/nonexistent/b"])
def test_tasks_see_the_parents_environment(
    monkeypatch: pytest.MonkeyPatch, pythonpath: str | None
) -> None:
    # Nothing is changed to start a worker: tasks, and the processes they start, see this one's.
    monkeypatch.setenv("AMTLIB_TEST_VARIABLE", "kept")
    if pythonpath is None:
        monkeypatch.delenv("PYTHONPATH", raising=False)
    else:
        monkeypatch.setenv("PYTHONPATH", pythonpath)
    with ProcessExecutor(1) as executor:
        seen = executor.submit(lambda: dict(os.environ)).result(TIMEOUT)
    assert seen == dict(os.environ)


# ---- InlineExecutor ------------------------------------------------------------------------------


def test_inline_runs_in_the_calling_thread_and_returns_a_finished_future() -> None:
    executor = InlineExecutor()
    future = executor.submit(threading.get_ident)
    assert future.done() and future.result(0) == threading.get_ident()
    failed = executor.submit(_raise_value_error, "inline")
    assert failed.done() and isinstance(failed.exception(0), ValueError)
    assert failed.exception(0).__traceback__ is not None  # type: ignore[union-attr]


def test_inline_lets_system_exit_through() -> None:
    with pytest.raises(SystemExit):
        InlineExecutor().submit(_exit_via_sys_exit)


# ---- default_executor and resolve_executor -------------------------------------------------------


def test_default_executor() -> None:
    executor = default_executor(3)
    assert isinstance(executor, ProcessExecutor) and executor.max_workers == 3
    executor.shutdown()
    with pytest.raises(ValidationError, match="'max_parallel_jobs' parameter of default_executor"):
        default_executor(0)


@pytest.mark.parametrize(
    ("spec", "kind"),
    [
        (None, ProcessExecutor),
        ("process", ProcessExecutor),
        ("thread", ThreadPoolExecutor),
        ("inline", InlineExecutor),
    ],
)
def test_resolve_executor_creates_and_owns(spec: str | None, kind: type[Executor]) -> None:
    executor, owned = resolve_executor(spec, 3)
    try:
        assert type(executor) is kind and owned is True
        if isinstance(executor, ProcessExecutor):
            assert executor.max_workers == 3
        if isinstance(executor, ThreadPoolExecutor):
            assert executor._max_workers == 3
    finally:
        executor.shutdown()


def test_resolve_executor_passes_instances_through_unowned() -> None:
    with ThreadPoolExecutor(1) as mine:
        assert resolve_executor(mine, 4) == (mine, False)


@pytest.mark.parametrize(
    ("bad", "hint"),
    [
        ("processes", "Got 'processes' (str) instead"),
        (3, "Got 3 (int) instead"),
        (ThreadPoolExecutor, "pass an instance, such as ThreadPoolExecutor(...)"),
    ],
)
def test_resolve_executor_rejects_anything_else(bad: object, hint: str) -> None:
    with pytest.raises(ValidationError) as info:
        resolve_executor(bad, 2)  # type: ignore[arg-type]
    message = str(info.value)
    assert message.startswith(
        "The 'executor' parameter must be None, 'process', 'thread', 'inline' or a "
        "concurrent.futures.Executor instance."
    )
    assert hint in message and "Fix:" in message


def test_resolve_executor_validates_max_parallel_jobs() -> None:
    with pytest.raises(ValidationError, match="'max_parallel_jobs' parameter of resolve_executor"):
        resolve_executor("thread", 0)
