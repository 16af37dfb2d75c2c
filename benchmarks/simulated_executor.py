"""An executor that simulates parallel workers: asynchronous completions, deterministic, no waiting.

``SimulatedParallelExecutor`` runs each task inside ``submit`` but holds its future back, and
releases futures in the order a pool of ``max_workers`` real workers would finish them: every task
gets a simulated duration from ``duration_fn``, starts at the simulated time it was submitted and
ends that long after. So a tuner with ``max_parallel_jobs=4`` sees the completions of a 4-worker
cluster (later configurations proposed before earlier ones report back) in a fraction of a second.

When a completion is released matters as much as which one, because the caller proposes its next
configuration from what has completed so far. The tuner's loop fills every free slot, then blocks
in ``wait(..., FIRST_COMPLETED)``. The executor cannot see the caller block, so it releases:

1. the earliest-finishing task as soon as ``max_workers`` tasks are outstanding (inside the
   ``submit`` that filled the last slot): the caller can do nothing but wait now, and a real
   cluster would next hand it exactly that completion;
2. every outstanding task, in finishing order, once ``total_tasks`` tasks have been submitted (no
   submit is coming: nothing the caller does with those completions changes what it proposed);
3. as a fallback, the earliest-finishing task when ``idle_timeout`` seconds of real time pass with
   no ``submit`` in progress or begun (the caller stopped submitting for a reason the executor
   cannot know). This is the one rule that depends on real time: a caller that spends longer
   than ``idle_timeout`` between a completion and its next ``submit`` gets that completion early.
   ``idle_completions`` counts how often it fired; with ``total_tasks`` set and
   ``max_workers == max_parallel_jobs`` it never needs to.

Rules 1 and 2 make the whole run a function of the tasks and the durations: the same seeds give
the same proposals, the same completion order and the same simulated times, run after run.
"""

from __future__ import annotations

import heapq
import math
import threading
import time
from collections.abc import Callable
from concurrent.futures import Executor, Future
from dataclasses import dataclass
from typing import Any

import numpy as np


@dataclass(frozen=True)
class SimulatedTask:
    """What ``duration_fn`` is told about a task: its submission number and the call."""

    seq: int
    fn: Callable[..., Any]
    args: tuple[Any, ...]
    kwargs: dict[str, Any]


def random_durations(seed: int, sigma: float = 0.5) -> Callable[[SimulatedTask], float]:
    """Log-normal durations (median 1, spread ``sigma``), drawn per submission number.

    Task ``k`` always gets the same duration for a given seed, whatever was submitted before it.
    """

    def duration(task: SimulatedTask) -> float:
        rng = np.random.default_rng([seed, 0x5EED, task.seq])
        return float(rng.lognormal(0.0, sigma))

    return duration


@dataclass
class _Pending:
    finish: float
    seq: int
    future: Future[Any]
    ok: bool
    value: Any

    def __lt__(self, other: _Pending) -> bool:
        return (self.finish, self.seq) < (other.finish, other.seq)


class SimulatedParallelExecutor(Executor):
    """Runs tasks at submit; releases their futures in simulated finishing order (see module doc).

    Args:
        max_workers: simulated workers; give the tuner the same ``max_parallel_jobs``.
        duration_fn: ``SimulatedTask -> duration >= 0``; default: every task takes 1.
        total_tasks: how many tasks the caller will submit (the tuner's ``max_jobs``), so the last
            completions are released without waiting for ``idle_timeout``.
        idle_timeout: real seconds without a submit after which the earliest outstanding task is
            released anyway; ``None`` never does (the caller must then fill every slot).

    Attributes:
        now: the simulated time of the last completion released.
        completion_order: submission numbers in the order their futures were released.
        start_times, finish_times: simulated times per submission number.
        idle_completions: how many completions the idle fallback released.

    Example:
        >>> ex = SimulatedParallelExecutor(2, lambda t: [3.0, 1.0, 1.0][t.seq], total_tasks=3)
        >>> futures = [ex.submit(pow, 2, k) for k in range(3)]
        >>> ex.completion_order, ex.finish_times
        ([1, 2, 0], {1: 1.0, 2: 2.0, 0: 3.0})
        >>> [f.result() for f in futures]
        [1, 2, 4]
    """

    def __init__(
        self,
        max_workers: int,
        duration_fn: Callable[[SimulatedTask], float] | None = None,
        *,
        total_tasks: int | None = None,
        idle_timeout: float | None = 1.0,
    ) -> None:
        if isinstance(max_workers, bool) or not isinstance(max_workers, int) or max_workers < 1:
            raise ValueError(f"max_workers must be an int >= 1; got {max_workers!r}.")
        self.max_workers = max_workers
        self.duration_fn = duration_fn or (lambda task: 1.0)
        self.total_tasks = total_tasks
        self.idle_timeout = idle_timeout
        self.now = 0.0
        self.completion_order: list[int] = []
        self.start_times: dict[int, float] = {}
        self.finish_times: dict[int, float] = {}
        self.idle_completions = 0
        self._cond = threading.Condition(threading.RLock())
        self._pending: list[_Pending] = []
        self._submitted = 0
        self._in_submit = 0
        self._last_activity = time.monotonic()
        self._closed = False
        self._thread: threading.Thread | None = None

    def submit(self, fn: Callable[..., Any], /, *args: Any, **kwargs: Any) -> Future[Any]:
        with self._cond:
            if self._closed:
                raise RuntimeError("SimulatedParallelExecutor.submit was called after shutdown().")
            seq = self._submitted
            self._submitted += 1
            self._in_submit += 1
        try:
            duration = float(self.duration_fn(SimulatedTask(seq, fn, args, dict(kwargs))))
            if not math.isfinite(duration) or duration < 0:
                raise ValueError(f"duration_fn returned {duration!r} for task {seq}; need >= 0.")
            future: Future[Any] = Future()
            future.set_running_or_notify_cancel()
            try:
                ok, value = True, fn(*args, **kwargs)
            except Exception as exc:
                ok, value = False, exc
            with self._cond:
                self.start_times[seq] = self.now
                heapq.heappush(self._pending, _Pending(self.now + duration, seq, future, ok, value))
                if len(self._pending) >= self.max_workers:
                    self._release_next()
                if self.total_tasks is not None and self._submitted >= self.total_tasks:
                    while self._pending:
                        self._release_next()
                self._start_idle_thread()
            return future
        finally:
            with self._cond:
                self._in_submit -= 1
                self._last_activity = time.monotonic()
                self._cond.notify_all()

    def shutdown(self, wait: bool = True, *, cancel_futures: bool = False) -> None:
        """Release every outstanding task in finishing order (they have all run) and stop."""
        with self._cond:
            self._closed = True
            while self._pending:
                self._release_next()
            self._cond.notify_all()
            thread = self._thread
        if wait and thread is not None and thread is not threading.current_thread():
            thread.join()

    @property
    def outstanding(self) -> int:
        """Tasks run but not yet released."""
        with self._cond:
            return len(self._pending)

    def _release_next(self) -> None:
        # Under the lock. Setting the result wakes whoever waits on the future.
        task = heapq.heappop(self._pending)
        self.now = max(self.now, task.finish)
        self.finish_times[task.seq] = task.finish
        self.completion_order.append(task.seq)
        if task.ok:
            task.future.set_result(task.value)
        else:
            task.future.set_exception(task.value)

    def _start_idle_thread(self) -> None:
        # Under the lock.
        if self._thread is None and self.idle_timeout is not None:
            self._thread = threading.Thread(
                target=self._watch_idle, name="SimulatedParallelExecutor-idle", daemon=True
            )
            self._thread.start()

    def _watch_idle(self) -> None:
        timeout = self.idle_timeout or 0.0
        with self._cond:
            while not self._closed:
                if not self._pending or self._in_submit:
                    self._cond.wait()
                    continue
                left = self._last_activity + timeout - time.monotonic()
                if left > 0:
                    self._cond.wait(left)
                    continue
                self._release_next()
                self.idle_completions += 1
                self._last_activity = time.monotonic()
