"""The worker process behind ``ProcessExecutor``: ``main([fd, parent_pid])``.

The parent starts it as ``python -c "<set sys.path>; from amtlib._worker import main; ..." <fd>
<parent pid>`` (see ``amtlib.executors._worker_command``, which says why not ``python -m``), in a
session and process group of its own, with the parent's environment unchanged. The worker talks to
its parent over the socket ``fd`` with ``multiprocessing.connection`` framing (length-prefixed
bytes), never over stdin/stdout: user code prints freely on the inherited stdout and stderr. The
conversation:

1. parent -> worker: a pickled ``{"sys_path": [...], "cwd": str | None}``; worker -> parent:
   ``b""`` (ready).
2. per task, parent -> worker: ``cloudpickle`` of ``(fn, args, kwargs)``;
   worker -> parent: a pickled ``(True, result)``, or
   ``(False, pickled exception or None, type name, message, traceback)``.
3. parent -> worker: ``b""`` (stop): ``main`` returns exit code 0. End of file instead means that
   the parent is gone: the worker kills its process group, itself included (see ``main``). When
   its own end of the channel breaks instead (a task closed it), ``main`` returns
   ``CHANNEL_BROKEN``.

What a task started (in the worker's process group) is killed:

- when the worker exits, at the parent's request or not, or is killed: by the parent, which kills
  the group once the worker has exited and before reaping it;
- when the parent is killed: on Linux the kernel kills the worker at once (``_die_with_parent``),
  and the parent's watchdog process (``amtlib.executors._Watchdog``) kills the group; elsewhere the
  watchdog kills the group, worker included, and an idle worker's end of file does it too;
- never, if it left the group (``setsid``, ``setpgid``), or if the watchdog was killed as well.

Imports stay light (no numpy here): every worker pays for them at start.
"""

from __future__ import annotations

import contextlib
import os
import pickle
import signal
import sys
import traceback
from multiprocessing.connection import Connection

import cloudpickle

from amtlib.errors import RemoteTaskError

READY = b""
STOP = b""
CHANNEL_BROKEN = 74  # the exit code when a task broke the worker's end of the channel (EX_IOERR)
_PROTOCOL = pickle.HIGHEST_PROTOCOL
_PR_SET_PDEATHSIG = 1  # from <linux/prctl.h>


def main(argv: list[str]) -> int:
    """Serve tasks from the parent until it says stop or goes away.

    Args:
        argv: ``[fd, parent_pid]``: the inherited socket and the pid of the process that started us.

    Returns:
        The exit code: 0 once the parent says stop, ``CHANNEL_BROKEN`` when a task broke our end of
        the channel. When the parent goes away without saying it, the worker kills its own process
        group and does not return.
    """
    fd, parent_pid = int(argv[0]), int(argv[1])
    _die_with_parent(parent_pid)
    os.set_inheritable(fd, False)
    os.register_at_fork(after_in_child=lambda: _release_channel(fd))
    conn = Connection(fd)
    try:
        setup = pickle.loads(conn.recv_bytes())
    except EOFError:
        return 0
    sys.path[:] = setup["sys_path"]  # as the parent's now: without what the bootstrap appended
    if setup["cwd"] is not None:
        os.chdir(setup["cwd"])
    try:
        conn.send_bytes(READY)
        while (request := conn.recv_bytes()) != STOP:
            reply = _run(request)
            _flush_user_output()
            conn.send_bytes(reply)
    except (EOFError, BrokenPipeError, ConnectionResetError):
        # The parent died (or closed the channel without saying stop): nobody is waiting for results
        # any more, and the parent will not kill what our tasks started, as it does when we exit.
        # So kill our process group, us included. (On Linux the kernel usually kills us first, see
        # _die_with_parent, and the parent's watchdog kills the group instead.)
        _flush_user_output()
        with contextlib.suppress(OSError):
            os.killpg(os.getpid(), signal.SIGKILL)
    except OSError:
        # Our own end broke (EBADF: a task closed it, with os.closerange for one), and the parent
        # lives on: it kills what our tasks started once we exit. Exit with a code that says so; a
        # SIGKILL, as above, would look like the out-of-memory killer's.
        _flush_user_output()
        with contextlib.suppress(OSError):
            conn.close()  # now, rather than in a finalizer that reports the closed descriptor
        return CHANNEL_BROKEN
    return 0


def _run(request: bytes) -> bytes:
    """Run one task and return the reply; never raises, whatever the task does short of exiting."""
    try:
        fn, args, kwargs = pickle.loads(request)
        result = fn(*args, **kwargs)
    except (
        BaseException
    ) as exc:  # SystemExit and KeyboardInterrupt too: they fail the task, not the worker
        return _error_reply(exc)
    try:
        return cloudpickle.dumps((True, result), protocol=_PROTOCOL)
    except BaseException as exc:  # a __reduce__ may raise anything; the task failed, not the worker
        error = RemoteTaskError(
            _type_name(exc),
            f"the task returned a {type(result).__name__}, which cannot be pickled to send it"
            f" back to the parent process: {_safe_str(exc)}. Fix: return plain data (numbers,"
            " strings, lists, dicts, arrays) and keep open files, locks and connections inside"
            " the task.",
            _format_traceback(exc),
        )
        return _error_reply(error)


def _error_reply(exc: BaseException) -> bytes:
    # The exception travels pickled inside the reply, so that the parent can fall back on its name,
    # message and traceback when it cannot rebuild the exception itself.
    try:
        pickled: bytes | None = cloudpickle.dumps(exc, protocol=_PROTOCOL)
    except BaseException:  # as above: sent by name, message and traceback instead
        pickled = None
    reply = (False, pickled, _type_name(exc), _safe_str(exc), _format_traceback(exc))
    return pickle.dumps(reply, protocol=_PROTOCOL)


def _format_traceback(exc: BaseException) -> str:
    tb = exc.__traceback__
    if tb is not None and tb.tb_next is not None:
        tb = tb.tb_next  # the first frame is _run, which tells the user nothing
    return "".join(traceback.format_exception(type(exc), exc, tb))


def _type_name(exc: BaseException) -> str:
    cls = type(exc)
    return (
        cls.__qualname__ if cls.__module__ == "builtins" else f"{cls.__module__}.{cls.__qualname__}"
    )


def _safe_str(exc: BaseException) -> str:
    try:
        return str(exc)
    except Exception:
        return f"<str() of the {type(exc).__name__} failed>"


def _flush_user_output() -> None:
    # Stdout is block-buffered when it is not a terminal; without this, a long-lived worker would
    # hold a task's prints until it exits.
    for stream in (sys.stdout, sys.stderr):
        try:
            if stream is not None:
                stream.flush()
        except Exception:  # closed, or a task's own stream object without flush(): not our failure
            pass


def _release_channel(fd: int) -> None:
    # A process forked by a task must not keep the channel open: the parent detects a dead worker by
    # end of file, which never comes while a copy of the socket lives on. Point fd at /dev/null
    # rather than closing it, so that the copied Connection object cannot close a reused descriptor.
    devnull = os.open(os.devnull, os.O_RDWR)
    os.dup2(devnull, fd, inheritable=False)
    os.close(devnull)


def _die_with_parent(parent_pid: int) -> None:
    # End of file tells an idle worker that the parent is gone; on Linux, also have the kernel kill
    # a busy one, so that a training job never outlives the tuner. The kernel kills only this
    # process: what its tasks started, in its process group, is the parent's watchdog's to kill
    # (elsewhere than Linux, the watchdog kills this process too). Catching a signal instead, to
    # kill the group here, would let a task busy in C code run on. The signal is sent when the
    # thread that started us ends: the parent's manager thread, which outlives its workers.
    if sys.platform.startswith("linux"):
        import ctypes

        with contextlib.suppress(OSError, AttributeError):
            ctypes.CDLL(None, use_errno=True).prctl(_PR_SET_PDEATHSIG, signal.SIGKILL)
    if os.getppid() != parent_pid:  # the parent died before we could ask
        os._exit(1)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
