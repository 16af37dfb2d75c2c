"""Executors that run training jobs: any ``concurrent.futures.Executor`` works; these are ours.

- ``ProcessExecutor``: persistent worker processes where a worker that dies fails only its job (the
  stdlib ``ProcessPoolExecutor`` and loky fail every running job instead).
- ``InlineExecutor``: runs each job inside ``submit``, to debug with pdb and to measure overhead.
- ``resolve_executor``: turns the tuner's ``executor`` argument into an executor, and its owner.

This module is over 400 lines because ``ProcessExecutor`` is one unit: its callers' side and its
manager thread share one lock and one set of invariants, which are easier to check on one page.
"""

from __future__ import annotations

import atexit
import collections
import contextlib
import logging
import numbers
import os
import pickle
import signal
import socket
import subprocess
import sys
import threading
import time
import weakref
from collections.abc import Callable
from concurrent.futures import Executor, Future, ThreadPoolExecutor
from dataclasses import dataclass
from multiprocessing.connection import Connection, wait
from typing import Any, ParamSpec, TypeVar

import cloudpickle

from amtlib._worker import CHANNEL_BROKEN, STOP
from amtlib.errors import (
    AmtlibError,
    RemoteTaskError,
    TaskKilledError,
    ValidationError,
    WorkerDiedError,
    describe_value,
)

_P = ParamSpec("_P")
_T = TypeVar("_T")

# How long shutdown lets workers exit on their own (user atexit handlers, interpreter teardown)
# before killing them.
_EXIT_GRACE_SECONDS = 5.0

# How long a worker whose channel reached end of file may take to exit on its own before it is
# killed. The end of file often comes from its interpreter's teardown, before its exit code is set.
# The manager thread waits, so this stays short.
_END_OF_FILE_GRACE_SECONDS = 0.5

# Where Future reports the errors of done-callbacks; a done-callback's SystemExit is reported there.
_CALLBACK_LOGGER = logging.getLogger("concurrent.futures")

# The directory that holds the amtlib package this process imported, which a worker must import too.
_AMTLIB_PARENT_DIR = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

# How a worker starts, after its sys.path is set (see _worker_command). `python -c` sets sys.argv to
# ["-c", <fd>, <parent pid>].
_WORKER_MAIN = "from amtlib._worker import main; sys.exit(main(sys.argv[1:]))"


class ProcessExecutor(Executor):
    """Runs tasks in persistent worker processes; a worker that dies fails only its own task.

    Each worker is a new interpreter running ``amtlib._worker``, started with ``subprocess`` rather
    than ``multiprocessing``, so the user's ``__main__`` script is never imported again and scripts
    without an ``if __name__ == "__main__":`` guard work. Tasks travel with ``cloudpickle``, so
    functions defined in ``__main__``, closures and lambdas work; results and exceptions come back
    pickled. Workers start as tasks arrive, up to ``max_workers``, at the same time, and then serve
    task after task.

    Contract:

    - ``submit`` pickles the task at once: an unpicklable task raises ``ValidationError`` there.
    - The future of a task gets its result, or the exception it raised, with the worker's traceback
      as ``__cause__``. An exception that cannot travel between processes, and a result that cannot,
      become ``RemoteTaskError``, which carries the original type name, message and traceback.
    - A worker that dies while running a task (``os._exit``, a segfault, the out-of-memory killer)
      fails that task's future with ``WorkerDiedError``, which gives the exit code or signal, and is
      replaced. Other tasks, running or queued, are unaffected. A worker that dies idle is replaced
      silently.
    - The processes a task started die with its worker, whether it dies, is killed or exits at
      shutdown; and if this process is killed (``kill -9``, the out-of-memory killer), a watchdog
      process kills every worker with what its tasks started. Processes that left their worker's
      process group (with ``setsid``, for one) are not tracked and live on.
    - ``kill(future)`` stops a running task at once (``TaskKilledError``); a queued task is stopped
      with ``future.cancel()``.
    - ``shutdown`` follows the ``concurrent.futures`` contract. An executor that is never shut down
      is shut down (without waiting) when garbage collected, and its workers are killed at exit.
    - Workers inherit stdout and stderr (stdin is ``/dev/null``); each runs in its own session, so
      Ctrl-C in a terminal reaches only the parent, which decides what to do with running tasks.
    - Only the process that created the executor may use it, not a fork of it.

    POSIX only (tested on Linux). On Windows use ``ThreadPoolExecutor`` or a Dask client.

    Args:
        max_workers: the most worker processes running at once, an int >= 1.

    Raises:
        ValidationError: ``max_workers`` is not an int >= 1.
        NotImplementedError: on Windows.

    Example:
        >>> from amtlib.executors import ProcessExecutor
        >>> with ProcessExecutor(max_workers=2) as executor:
        ...     executor.submit(pow, 2, 10).result()
        1024
    """

    def __init__(self, max_workers: int) -> None:
        self._max_workers = _check_count(max_workers, "max_workers", "ProcessExecutor")
        if os.name != "posix":
            raise NotImplementedError(
                "ProcessExecutor needs a POSIX system such as Linux or macOS. "
                "Fix: on Windows pass executor='thread', or a Dask client's get_executor()."
            )
        if not sys.executable:
            raise AmtlibError(
                "ProcessExecutor starts workers with sys.executable, which is empty in this "
                "interpreter. Fix: pass executor='thread' or executor='inline'."
            )
        self._pool = _Pool(self._max_workers)
        # The pool, not the executor, is what the manager thread holds, so an executor the user
        # drops without shutdown() is collected; then its pool finishes the queued tasks and stops.
        finalizer = weakref.finalize(self, self._pool.shutdown, False, False)
        finalizer.atexit = False  # at exit, _Pool.terminate kills the workers instead

    @property
    def max_workers(self) -> int:
        """The most worker processes running at once."""
        return self._max_workers

    def submit(self, fn: Callable[_P, _T], /, *args: _P.args, **kwargs: _P.kwargs) -> Future[_T]:
        """Queue ``fn(*args, **kwargs)`` to run in a worker process.

        Raises:
            RuntimeError: the executor was shut down.
            ValidationError: cloudpickle cannot pickle ``fn`` with its arguments.
        """
        self._pool.check_open()
        try:
            payload = cloudpickle.dumps((fn, args, kwargs), protocol=pickle.HIGHEST_PROTOCOL)
        except Exception as exc:
            raise ValidationError(
                f"The 'fn' parameter of ProcessExecutor.submit must be picklable by cloudpickle, "
                f"with its arguments. Got {fn!r}, and pickling failed with {type(exc).__name__}: "
                f"{exc}. Fix: create open files, locks, sockets and connections inside the task "
                "instead of passing them, or use executor='thread'."
            ) from exc
        return self._pool.submit(payload)

    def shutdown(self, wait: bool = True, *, cancel_futures: bool = False) -> None:
        """Refuse new tasks and stop the workers once the queued and running tasks are done.

        Args:
            wait: block until every task is done and every worker process has exited and been
                reaped; otherwise return at once and let a background thread finish.
            cancel_futures: cancel the queued tasks that have not started; running tasks finish.
        """
        self._pool.shutdown(wait, cancel_futures)

    def kill(self, future: Future[Any]) -> bool:
        """Stop a running task now by killing its worker process and what it started (SIGKILL).

        The future fails with ``TaskKilledError`` before this returns; a new worker replaces the
        old one.

        Returns:
            True if the task was running here and is now killed; False if it is queued (cancel it
            with ``future.cancel()``), already done, or not from this executor.
        """
        return self._pool.kill(future)


class InlineExecutor(Executor):
    """Runs each task synchronously inside ``submit``, in the calling thread.

    ``submit`` returns a future that is already done, holding the result or the ``Exception`` raised
    (with its traceback). ``KeyboardInterrupt`` and ``SystemExit`` propagate, so Ctrl-C stops the
    program. Breakpoints and pdb work, and the tuner's own overhead can be measured without any
    process or thread in the way.

    Example:
        >>> from amtlib.executors import InlineExecutor
        >>> future = InlineExecutor().submit(divmod, 7, 2)
        >>> future.done(), future.result()
        (True, (3, 1))
    """

    def __init__(self) -> None:
        self._shut_down = False

    def submit(self, fn: Callable[_P, _T], /, *args: _P.args, **kwargs: _P.kwargs) -> Future[_T]:
        """Run ``fn(*args, **kwargs)`` now and return its finished future.

        Raises:
            RuntimeError: the executor was shut down.
        """
        if self._shut_down:
            raise RuntimeError("InlineExecutor.submit was called after shutdown().")
        future: Future[_T] = Future()
        future.set_running_or_notify_cancel()
        try:
            result = fn(*args, **kwargs)
        except Exception as exc:
            future.set_exception(exc)
        else:
            future.set_result(result)
        return future

    def shutdown(self, wait: bool = True, *, cancel_futures: bool = False) -> None:
        """Refuse new tasks (there is never anything queued or running)."""
        self._shut_down = True


def default_executor(max_parallel_jobs: int) -> ProcessExecutor:
    """The executor a tuner uses when given none: one worker process per parallel training job.

    Raises:
        ValidationError: ``max_parallel_jobs`` is not an int >= 1.
    """
    return ProcessExecutor(_check_count(max_parallel_jobs, "max_parallel_jobs", "default_executor"))


def resolve_executor(
    executor: Executor | str | None, max_parallel_jobs: int
) -> tuple[Executor, bool]:
    """Turn a tuner's ``executor`` argument into an executor, and say whether the tuner owns it.

    Args:
        executor: ``None`` or ``"process"`` (a new ``ProcessExecutor``), ``"thread"`` (a new
            ``ThreadPoolExecutor``), ``"inline"`` (a new ``InlineExecutor``), or any
            ``concurrent.futures.Executor`` instance, used as given.
        max_parallel_jobs: the number of workers for a new executor, an int >= 1.

    Returns:
        ``(executor, owned)``: ``owned`` is True when the executor was created here, and the caller
        must then shut it down; an instance passed in stays the caller's to shut down.

    Raises:
        ValidationError: ``executor`` is none of the above, or ``max_parallel_jobs`` is not an
            int >= 1.
    """
    count = _check_count(max_parallel_jobs, "max_parallel_jobs", "resolve_executor")
    if isinstance(executor, Executor):
        return executor, False
    if executor is None or executor == "process":
        return ProcessExecutor(count), True
    if executor == "thread":
        return ThreadPoolExecutor(max_workers=count), True
    if executor == "inline":
        return InlineExecutor(), True
    if isinstance(executor, type) and issubclass(executor, Executor):
        fix = f"pass an instance, such as {executor.__name__}(...), instead of the class"
    else:
        fix = "pass one of those; 'thread' suits objectives that release the GIL"
    raise ValidationError(
        "The 'executor' parameter must be None, 'process', 'thread', 'inline' or a "
        f"concurrent.futures.Executor instance. Got {describe_value(executor)} instead. Fix: {fix}."
    )


def _check_count(value: object, name: str, owner: str) -> int:
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < 1:
        raise ValidationError(
            f"The {name!r} parameter of {owner} must be an int >= 1. "
            f"Got {describe_value(value)} instead. Fix: pass {name}=1 or more."
        )
    return int(value)


class _RemoteTraceback(Exception):
    """The ``__cause__`` of an exception from a worker: printing it shows where it was raised."""

    def __init__(self, text: str) -> None:
        super().__init__(text)
        self.text = text

    def __str__(self) -> str:
        return self.text


@dataclass(eq=False, slots=True)
class _Task:
    future: Future[Any]
    payload: bytes


@dataclass(eq=False, slots=True)
class _Worker:
    process: subprocess.Popen[bytes]
    conn: Connection
    ready: bool = False  # its ready message arrived
    task: _Task | None = None  # the task sent to it whose reply has not arrived
    killed: bool = False  # kill() sent SIGKILL: it is dying, never to be given a task again


class _Pool:
    """The state a ``ProcessExecutor`` shares with its manager thread, and that thread's loop.

    Invariants, under ``lock``: ``running`` maps the future of each running task to its worker, and
    whoever pops a future from ``running`` (the manager on a reply or a death, ``kill``) is the one
    who completes it. Processes are signalled only before they are reaped, so a signal never
    reaches a recycled pid: ``kill`` and ``terminate`` signal only workers in ``workers``, which a
    worker leaves before it is reaped, and only the manager thread reaps, through ``_reap``. Only
    the manager thread adds to or removes from ``workers`` and ``idle``, and only it reads from the
    connections. Only the manager thread talks to the ``watchdog``: it reports each worker once
    started, before the worker can get a task, and forgets it just before reaping it.
    """

    def __init__(self, max_workers: int) -> None:
        self.max_workers = max_workers
        # Reentrant: a garbage-collection finalizer may call shutdown() while this thread holds it.
        self.lock = threading.RLock()
        self.pending: collections.deque[_Task] = collections.deque()
        self.running: dict[Future[Any], _Worker] = {}
        self.workers: dict[Connection, _Worker] = {}
        self.idle: list[_Worker] = []
        self.size = 0  # the number of workers to keep alive: the most the tasks have needed so far
        self.closed_reason: str | None = None  # why submit() is refused, once it is
        self.terminated = False
        self.thread: threading.Thread | None = None
        self.wake_r = self.wake_w = -1
        self.wake_sent = False
        self.owner_pid = os.getpid()
        self.watchdog = _Watchdog()

    # ---- the callers' side ----------------------------------------------------------------------

    def check_open(self) -> None:
        if self.closed_reason is not None:
            raise RuntimeError(f"ProcessExecutor.submit was called after {self.closed_reason}.")
        if os.getpid() != self.owner_pid:
            raise RuntimeError(
                "ProcessExecutor.submit was called in a fork of the process that created the "
                "executor, which has none of its workers. Fix: create a new executor there."
            )

    def submit(self, payload: bytes) -> Future[Any]:
        future: Future[Any] = Future()
        with self.lock:
            self.check_open()
            if self.thread is None:
                self._start_manager()
            self.pending.append(_Task(future, payload))
            self._wake()
        return future

    def shutdown(self, wait: bool, cancel_futures: bool) -> None:
        if os.getpid() != self.owner_pid:
            return  # a fork of the parent: the workers and the manager thread are not ours
        with self.lock:
            if self.closed_reason is None:
                self.closed_reason = "shutdown()"
            cancelled = list(self.pending) if cancel_futures else []
            if cancel_futures:
                self.pending.clear()
            self._wake()
            thread = self.thread
        for task in cancelled:
            task.future.cancel()
        if wait and thread is not None and thread is not threading.current_thread():
            thread.join()

    def kill(self, future: Future[Any]) -> bool:
        if os.getpid() != self.owner_pid:
            return False
        with self.lock:
            worker = self.running.pop(future, None)
            if worker is None:
                return False
            worker.killed = True
            _kill_process_group(worker.process)
        future.set_exception(
            TaskKilledError(
                f"worker process {worker.process.pid} was killed on request (SIGKILL) while"
                " running the task"
            )
        )
        return True

    def terminate(self) -> None:
        """Kill every worker now; registered with atexit while the manager thread runs."""
        if os.getpid() != self.owner_pid:
            return  # a fork of the parent inherited this hook, but not the workers
        with self.lock:
            self.terminated = True
            if self.closed_reason is None:
                self.closed_reason = "the interpreter began to exit"
            for worker in self.workers.values():
                _kill_process_group(worker.process)
            self._wake()
            thread = self.thread
        if thread is not None and thread is not threading.current_thread():
            thread.join(_EXIT_GRACE_SECONDS)  # the manager reaps the killed workers

    def _wake(self) -> None:
        # Under lock. One byte at most sits in the pipe: the manager clears wake_sent as it reads.
        if not self.wake_sent and self.wake_w >= 0:
            self.wake_sent = True
            os.write(self.wake_w, b"\0")

    def _start_manager(self) -> None:
        self.wake_r, self.wake_w = os.pipe()
        os.set_blocking(self.wake_r, False)
        atexit.register(self.terminate)
        self.thread = threading.Thread(
            target=self._manage, name="amtlib-ProcessExecutor-manager", daemon=True
        )
        self.thread.start()

    # ---- the manager thread ---------------------------------------------------------------------

    def _manage(self) -> None:
        try:
            # Started here rather than in submit(): the caller's thread may end before the pool
            # does, and only this thread writes to the watchdog.
            self.watchdog.start()
            while self._step():
                pass
        except BaseException as exc:
            with self.lock:
                self.closed_reason = f"its manager thread failed with {exc!r}"
            raise
        finally:
            self._stop()

    def _step(self) -> bool:
        """Hand out tasks, start workers, then wait for one event and handle it; False to stop."""
        with self.lock:
            if self.terminated:
                return False
            assigned = self._assign_tasks()
            to_start = self._plan_starts()
            if self.closed_reason is not None and not self.pending and not self.running:
                return False
        for worker, payload in assigned:
            # On failure the worker is dead: its end of file is next, and fails the task.
            with contextlib.suppress(OSError):
                worker.conn.send_bytes(payload)
        for _ in range(to_start):
            self._start_worker()
        for ready in wait([self.wake_r, *self.workers]):
            if isinstance(ready, Connection):
                self._on_readable(self.workers[ready])
            else:
                with self.lock:
                    self.wake_sent = False
                    with contextlib.suppress(BlockingIOError):
                        os.read(self.wake_r, 64)
        return True

    def _assign_tasks(self) -> list[tuple[_Worker, bytes]]:
        # Under lock.
        assigned = []
        while self.pending and self.idle:
            task = self.pending.popleft()
            if not task.future.set_running_or_notify_cancel():
                continue  # cancelled while queued
            worker = self.idle.pop()
            worker.task = task
            self.running[task.future] = worker
            assigned.append((worker, task.payload))
        return assigned

    def _plan_starts(self) -> int:
        # Under lock. Before shutdown the pool keeps its high-water size, so a dead worker's
        # replacement is ready before the next task needs it; after shutdown, only what is queued.
        needed = min(self.max_workers, len(self.running) + len(self.pending))
        if self.closed_reason is None:
            self.size = max(self.size, needed)
            needed = self.size
        return max(0, needed - len(self.workers))

    def _start_worker(self) -> None:
        parent_end, child_end = socket.socketpair()
        try:
            process = subprocess.Popen(
                _worker_command(child_end.fileno()),
                pass_fds=(child_end.fileno(),),
                stdin=subprocess.DEVNULL,
                start_new_session=True,
                # As Python code here sees it: not the C-level one, where libraries such as
                # readline may have set more (LINES, COLUMNS).
                env=dict(os.environ),
            )
        except BaseException:
            parent_end.close()
            raise
        finally:
            child_end.close()
        # Its process group id is its pid (start_new_session), not reusable before we reap it.
        self.watchdog.watch(process.pid)
        conn = Connection(parent_end.detach())
        try:
            cwd: str | None = os.getcwd()
        except OSError:
            cwd = None  # the parent's directory was deleted; the worker stays where it started
        # The socket buffers the setup until the worker reads it: workers start concurrently.
        # On failure it died at once: its end of file comes next.
        setup = {"sys_path": _importable_sys_path(), "cwd": cwd}
        with contextlib.suppress(OSError):
            conn.send_bytes(pickle.dumps(setup))
        with self.lock:
            self.workers[conn] = _Worker(process, conn)

    def _on_readable(self, worker: _Worker) -> None:
        try:
            reply = worker.conn.recv_bytes()
        except (EOFError, OSError):
            self._on_exit(worker)
            return
        with self.lock:
            if not worker.ready:  # the reply is READY
                worker.ready = True
                self.idle.append(worker)
                return
            task, worker.task = worker.task, None
            mine = task is not None and self.running.pop(task.future, None) is not None
            if not worker.killed:
                self.idle.append(worker)
        if task is not None and mine:
            _settle(task.future, reply)

    def _on_exit(self, worker: _Worker) -> None:
        # End of file: the worker is exiting, or its task closed the worker's end of the channel.
        # Let it exit by itself first: killing it at once would hide its exit code, the one clue to
        # what happened, behind our SIGKILL. Then kill its process group, so that whatever its task
        # started dies with it, and reap it (which kills the group once more, in case something
        # joined it meanwhile).
        killed_here = not _wait_exited(worker.process, _END_OF_FILE_GRACE_SECONDS)
        _kill_process_group(worker.process)
        with self.lock:
            del self.workers[worker.conn]
            if worker in self.idle:
                self.idle.remove(worker)
            task = worker.task
            mine = task is not None and self.running.pop(task.future, None) is not None
            victim = None
            if not worker.ready:
                # It died while starting. Do not restart it for nothing; and if no worker has come
                # up, fail a queued task, so that a worker that can never start fails each task once
                # instead of spinning forever.
                self.size = min(self.size, len(self.workers))
                if not any(w.ready for w in self.workers.values()):
                    victim = self._pop_startable_task()
        worker.conn.close()
        returncode = _reap(worker.process, self.watchdog)
        pid = worker.process.pid
        fix = (
            ". Fix: close only the file descriptors that the task opened; os.closerange(3, ...),"
            " for one, also closes the worker's channel"
        )
        if killed_here and returncode == -signal.SIGKILL:
            ending = (
                f"closed its channel to the executor and had not exited {_END_OF_FILE_GRACE_SECONDS}"
                " s later, so the executor killed it (SIGKILL)"
            )
        elif returncode == CHANNEL_BROKEN:
            ending = f"exited with code {returncode} (its channel to the executor broke)"
        else:
            ending, fix = _describe_exit(returncode), ""
        if task is not None and mine:
            _complete(
                task.future,
                error=WorkerDiedError(f"worker process {pid} {ending} while running the task{fix}"),
            )
        if victim is not None:
            _complete(
                victim.future,
                error=WorkerDiedError(
                    f"worker process {pid} {ending} before it was ready, so the"
                    f" task could not start; its error output, if any, is above. The command was:"
                    f" {sys.executable} -c '<set sys.path>; {_WORKER_MAIN}' <fd> <pid>"
                ),
            )

    def _pop_startable_task(self) -> _Task | None:
        # Under lock.
        while self.pending:
            task = self.pending.popleft()
            if task.future.set_running_or_notify_cancel():
                return task
        return None

    def _stop(self) -> None:
        """Ask every worker to exit, kill those that do not in time, reap them all, stop the watchdog.

        A worker that exits cleanly leaves behind whatever its tasks started and did not stop; its
        process group is killed as it is reaped, so that nothing a task started outlives the
        executor.
        """
        with self.lock:
            workers = list(self.workers.values())
            self.workers.clear()
            self.idle.clear()
            queued = [task.future for task in self.pending]
            running = list(self.running)
            self.pending.clear()
            self.running.clear()
            os.close(self.wake_r)
            os.close(self.wake_w)
            self.wake_r = self.wake_w = -1
            reason = self.closed_reason
        for worker in workers:
            with contextlib.suppress(OSError):
                worker.conn.send_bytes(STOP)
            worker.conn.close()
        deadline = time.monotonic() + _EXIT_GRACE_SECONDS
        for worker in workers:
            if not _wait_exited(worker.process, max(0.0, deadline - time.monotonic())):
                _kill_process_group(worker.process)  # it ignored STOP
            _reap(worker.process, self.watchdog)
        self.watchdog.stop()
        # Only after termination or a failure of this thread are tasks left over.
        orphans = [f for f in queued if f.set_running_or_notify_cancel()] + running
        for future in orphans:
            _complete(future, error=WorkerDiedError(f"the executor stopped after {reason}"))
        atexit.unregister(self.terminate)


def _complete(future: Future[Any], result: Any = None, error: BaseException | None = None) -> None:
    """Give ``future`` its result, or ``error``, from the manager thread, which its callbacks run in.

    ``Future`` logs an ``Exception`` raised by a done-callback and goes on, but lets ``SystemExit``,
    ``KeyboardInterrupt`` and other ``BaseException`` out of ``set_result``: that would end the
    manager thread, and fail every other task. It is logged the way ``Future`` logs the others;
    the callbacks added after the one that raised it do not run. An ``Exception`` out of
    ``set_result`` is its own (the future was already done) and is a bug here: it propagates.
    """
    try:
        if error is None:
            future.set_result(result)
        else:
            future.set_exception(error)
    except BaseException as exc:
        if isinstance(exc, Exception):
            raise
        _CALLBACK_LOGGER.exception("exception calling callback for %r", future)


def _settle(future: Future[Any], reply: bytes) -> None:
    """Complete a future from a worker's reply."""
    try:
        message = pickle.loads(reply)
    except BaseException as exc:  # unpickling runs the task's code (SystemExit too): the task's
        # failure, not the executor's. Error replies hold only plain data, so this was a result.
        _complete(
            future,
            error=RemoteTaskError(
                f"{type(exc).__module__}.{type(exc).__qualname__}",
                f"the task's result could not be unpickled in the parent process: {exc}",
                "",
            ),
        )
        return
    if message[0]:
        _complete(future, message[1])
        return
    _, pickled, type_name, text, remote_traceback = message
    error: object = None
    if pickled is not None:
        with contextlib.suppress(BaseException):  # as above; then sent by name and message
            error = pickle.loads(pickled)
    if not isinstance(error, BaseException):
        error = RemoteTaskError(type_name, text, remote_traceback)
    error.__cause__ = _RemoteTraceback(remote_traceback)
    _complete(future, error=error)


def _describe_exit(returncode: int) -> str:
    if returncode >= 0:
        return f"exited with code {returncode}"
    try:
        name = signal.Signals(-returncode).name
    except ValueError:
        name = f"signal {-returncode}"
    if -returncode == signal.SIGKILL:
        return f"died with {name} (the system may have run out of memory)"
    return f"died with {name}"


def _worker_command(fd: int) -> list[str]:
    """The command that starts a worker: ``python -c <bootstrap> <fd> <this process's pid>``.

    The bootstrap gives the worker this process's ``sys.path`` before it imports anything, so that
    ``amtlib._worker`` and what it imports resolve as they do here: an amtlib found only through a
    runtime ``sys.path`` change (a notebook's ``sys.path.append("../src")``) is found, rather than
    another one installed, and a directory this process appended after the standard library stays
    after it, so that a user's ``secrets.py`` there cannot shadow the standard ``secrets``. Neither
    ``python -m`` (the current directory first) nor ``PYTHONPATH`` (its entries before the standard
    library, and inherited by what tasks start) can do that. amtlib's own directory is appended in
    case this process found amtlib some other way; the worker sets this process's ``sys.path``
    again, as ``_importable_sys_path`` gives it, before any task runs.
    """
    path = _importable_sys_path()
    if _AMTLIB_PARENT_DIR not in path:
        path.append(_AMTLIB_PARENT_DIR)
    bootstrap = f"import sys; sys.path[:] = {path!r}; {_WORKER_MAIN}"
    return [sys.executable, "-c", bootstrap, str(fd), str(os.getpid())]


def _importable_sys_path() -> list[str]:
    """This process's ``sys.path`` as the import system reads it: its str entries, in order.

    The import system skips every other entry (bytes, ``pathlib.Path``, any object), so a worker
    needs none of them; and one may not pickle (a lock), unpickle in a worker (an instance of a
    class from ``__main__``) or have a repr that is Python, which would stop workers from starting.
    Entries are made plain str for the same reason.
    """
    return [str(entry) for entry in sys.path if isinstance(entry, str)]


# The watchdog's program, run as `python -S -c` in "/". It imports only posix, a
# built-in module that no file can shadow, and skips site: it starts in ~10 ms. Each line it reads
# is "+<pgid>" (a worker started), "-<pgid>" (that worker is about to be reaped) or "bye" (a clean
# shutdown: exit, killing nothing). End of file without "bye" means that the process that started
# it is gone: it kills every group it still knows, at once, and exits.
_WATCHDOG_SOURCE = f"""\
import posix
groups, rest = set(), b""
while True:
    try:
        chunk = posix.read(0, 65536)
    except OSError:
        chunk = b""
    if not chunk:
        break
    *lines, rest = (rest + chunk).split(b"\\n")
    for line in lines:
        if line == b"bye":
            posix._exit(0)
        if line.startswith(b"+"):
            groups.add(int(line[1:]))
        else:
            groups.discard(int(line[1:]))
for group in groups:
    try:
        posix.killpg(group, {int(signal.SIGKILL)})
    except OSError:
        pass
posix._exit(0)
"""


class _Watchdog:
    """A process that kills the workers' process groups if the process that owns the pool dies.

    When the owner is killed (SIGKILL, SIGTERM without a handler, the out-of-memory killer), nothing
    of the pool runs: on Linux the kernel kills each worker (see ``amtlib._worker``), but what its
    task started, in its process group, would live on. The watchdog learns each worker's process
    group over a socket, the end of which only the owner holds; end of file without "bye" means the
    owner is gone, and the watchdog kills the groups it still knows at once (see
    ``_WATCHDOG_SOURCE``). It is told of a worker before the worker gets a task, and told to forget
    one before it is reaped, so it never kills a group whose id the system may have reused, save
    in the instant between the owner's death and its own reaction. It runs in its own session
    without a parent-death signal, so that whatever kills the owner's process group or the owner
    does not kill it too, and it exits after that one reaction or on "bye".

    A watchdog that cannot start, or dies, costs only this protection: the pool runs on without it.
    """

    def __init__(self) -> None:
        self.sock: socket.socket | None = None
        self.process: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        ours, theirs = socket.socketpair()
        try:
            self.process = subprocess.Popen(
                [sys.executable, "-S", "-c", _WATCHDOG_SOURCE],
                stdin=theirs.fileno(),
                cwd="/",
                start_new_session=True,
            )
        except OSError:
            ours.close()
            return
        finally:
            theirs.close()
        self.sock = ours
        _watchdogs.add(self)

    def watch(self, pgid: int) -> None:
        self._send(b"+%d\n" % pgid)

    def forget(self, pgid: int) -> None:
        self._send(b"-%d\n" % pgid)

    def stop(self) -> None:
        """Say "bye" (it exits, killing nothing) and reap it; on a clean shutdown only."""
        self._send(b"bye\n")
        self._release()
        if self.process is not None:
            try:
                self.process.wait(_EXIT_GRACE_SECONDS)
            except subprocess.TimeoutExpired:
                # Stopped (SIGSTOP) or starved. Every worker was reaped and forgotten: killing it
                # loses nothing.
                self.process.kill()
                self.process.wait()

    def _send(self, message: bytes) -> None:
        # A dead watchdog must not kill this process with SIGPIPE, which user code may have set back
        # to its default action: MSG_NOSIGNAL (Linux) turns that into EPIPE, which is ignored.
        if self.sock is not None:
            with contextlib.suppress(OSError):
                self.sock.sendall(message, _MSG_NOSIGNAL)

    def _release(self) -> None:
        if self.sock is not None:
            self.sock.close()
            self.sock = None
        _watchdogs.discard(self)


_MSG_NOSIGNAL = getattr(socket, "MSG_NOSIGNAL", 0)

# The live watchdogs' sockets are closed in a child forked without exec (multiprocessing's "fork",
# os.fork): a copy of the owner's end kept there would hide the owner's death from the watchdog.
_watchdogs: weakref.WeakSet[_Watchdog] = weakref.WeakSet()


def _release_watchdogs_after_fork() -> None:
    for watchdog in list(_watchdogs):
        watchdog._release()


os.register_at_fork(after_in_child=_release_watchdogs_after_fork)


def _wait_exited(process: subprocess.Popen[bytes], timeout: float) -> bool:
    """Wait until ``process`` has exited, without reaping it; False if it still runs at ``timeout``.

    An exited process that is not yet reaped keeps its pid, so its process group id cannot have
    been reused: what is left of the group can still be killed safely.
    """
    deadline = time.monotonic() + timeout
    delay = 0.0005
    while process.returncode is None:
        try:
            if os.waitid(os.P_PID, process.pid, os.WEXITED | os.WNOWAIT | os.WNOHANG) is not None:
                break
        except ChildProcessError:
            break  # reaped behind our back (SIGCHLD ignored): nothing left to wait for
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            return False
        delay = min(delay * 2, remaining, 0.05)
        time.sleep(delay)
    return True


def _reap(process: subprocess.Popen[bytes], watchdog: _Watchdog) -> int:
    """Wait for a worker to exit, kill what is left of its process group, then reap it.

    Whatever a task started lives in its worker's process group, and outlives the worker unless
    killed. The group is killed after the worker has exited but before it is reaped, while the
    group id cannot name anything else; the worker must be dying or asked to exit already. The
    watchdog forgets the group before the reaping frees its id for reuse.

    Returns:
        The worker's exit code, negative for a signal, as ``Popen.returncode``.
    """
    if process.returncode is None:
        try:
            os.waitid(os.P_PID, process.pid, os.WEXITED | os.WNOWAIT)
        except ChildProcessError:
            pass  # reaped behind our back (SIGCHLD ignored): its pid may name another process now
        else:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(process.pid, signal.SIGKILL)
    watchdog.forget(process.pid)
    return process.wait()


def _kill_process_group(process: subprocess.Popen[bytes]) -> None:
    # Each worker leads its own process group (start_new_session), which holds what its task
    # started; the worker itself is signalled too in case its task moved it to another group.
    with contextlib.suppress(ProcessLookupError):
        os.killpg(process.pid, signal.SIGKILL)
    with contextlib.suppress(ProcessLookupError):
        os.kill(process.pid, signal.SIGKILL)
