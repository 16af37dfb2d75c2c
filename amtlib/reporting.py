"""Intermediate metrics from a running training job to its tuner, and stop decisions back.

A training function calls :func:`report` once per step; the tuner answers each report with a
:class:`Decision`, and ``report`` raises :class:`TrialStopped` when the answer is to stop (or pause).
The same path works whether the function runs inline in the tuner's thread, in a thread pool, in
amtlib's worker processes or on Dask workers on other hosts, because it is always a TCP connection to
the tuner's :class:`ReportServer`.

Wire protocol (version 2). Every message is a frame::

    4 bytes   N, big-endian unsigned: the length of what follows (at most 1 MiB)
    32 bytes  HMAC-SHA256 of the body, keyed with the job's secret
    N - 32    body: canonical JSON (sorted keys, no spaces, ASCII), a single object

- request ``{"kind": "report", "job_id": int, "client": str, "seq": int, "step": int,
  "metrics": {str: float}, "timestamp": float}``; ``client`` is 16 lowercase hex digits that each
  :class:`ReportClient` draws at random (and draws again in a forked child), ``seq`` counts up from
  1 per client.
- reply ``{"kind": "decision", "job_id": int, "client": str, "seq": int, "action": "continue" |
  "stop" | "pause", "reason": object | null}``, echoing the request's job id, client id and sequence
  number, signed the same way.

Version 1 had no ``client``: sequence numbers were per job, but a job may have several clients (Dask
re-runs a task whose worker died, with the same channel; a forked child reports with a copy of its
parent's counter; a command wrapper builds two), and every report of the second was refused as a
replay. The server keeps, per job, the last sequence number and reply of each client, for at most
``_MAX_CLIENTS_PER_JOB`` clients, so this memory stays bounded.

The MAC covers the exact bytes received, so nothing is re-serialised to check it. The server closes
the connection, without answering, on a frame that is oversized, not a JSON object of the right
shape, for a job id that is not registered, badly signed, with a sequence number at or below the
last one accepted from the same client of the job, or from a new client of a job that already has
``_MAX_CLIENTS_PER_JOB``; such a frame never reaches ``decide``. The single exception is the exact
retransmission of a client's last accepted request (same client, sequence number and MAC), which a
client sends when the connection broke before the reply arrived: it gets the same reply again, and
``decide`` is not called twice. Nothing received is ever unpickled.

Connections cost the tuner a file descriptor each, so one that has not yet sent a fresh request
(correctly signed, and reaching ``decide``) is pending and held briefly: it must deliver one within
``_FIRST_FRAME_SECONDS`` of being accepted (a client sends its report as soon as it connects), and at
most ``_MAX_UNAUTHENTICATED`` wait at once. Accepting one more closes a pending connection of the
address that holds the most of them (its oldest, preferring one whose frame has not arrived): a
flood from one host closes that host's connections, not those of workers elsewhere. Workers on the
flooding host itself (all of them, when they run on the tuner's machine and connect from 127.0.0.1)
are not protected this way: they share its address. A retransmission answered from the cache does
not end the wait: anyone who saw a frame on the network can resend its bytes without the secret, so
the connection stays pending, and a second such retransmission on it closes it; a client whose
connection is closed meanwhile reconnects on its next report, whose fresh request authenticates the
new connection. A connection that has sent a fresh request is kept while idle, since a job may
report once an hour, until the job is unregistered. Without a secret, a peer can thus hold neither
the tuner's descriptors nor the places of legitimate clients on other hosts.

Every refused frame is logged as a warning. Those that nothing shows to come from a holder of the
job's secret (malformed, unsigned or badly signed, for an unregistered job, replayed) are logged at
most once per ``_WARN_EVERY_SECONDS`` for each kind, with the count of those held back, since anyone
can send them by the thousand; a fresh, correctly signed frame that is refused comes from a real
client that misbehaves, and each one is logged.

This module is over 400 lines because the protocol's two ends and the per-job context that drives
the client share one set of invariants (framing, signing, client ids and sequence numbers), easier
to check on one page.
"""

from __future__ import annotations

import collections
import contextlib
import contextvars
import enum
import errno
import hashlib
import hmac
import ipaddress
import json
import logging
import math
import numbers
import os
import re
import secrets
import selectors
import socket
import struct
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from types import TracebackType
from typing import Any, TypeGuard

from amtlib.errors import AmtlibError, ReportChannelError, ValidationError, describe_value
from amtlib.records import Report, json_safe

__all__ = [
    "Action",
    "ChannelSpec",
    "Decision",
    "JobContext",
    "JobContextSpec",
    "ReportClient",
    "ReportServer",
    "TrialStopped",
    "current_job",
    "job_context",
    "report",
]

logger = logging.getLogger(__name__)

MAX_FRAME_BYTES = 1 << 20  # a report is a few hundred bytes; anything near this is an attack or bug
_HEADER = struct.Struct(">I")
_MAC_BYTES = hashlib.sha256().digest_size
_SECRET_BYTES = 32
_DEFAULT_TIMEOUT = 30.0
_CLIENT_ID_BYTES = 8  # sent as 16 hex digits: random 64-bit ids of a job's clients never collide
# Per job: each ReportClient, and each forked child that reports, is one. A few dozen covers retries
# and helpers; a job that forks a reporting child per step runs out and is told why in the log.
_MAX_CLIENTS_PER_JOB = 64
# A connection that has sent a valid frame and then part of another gets this long to finish it;
# authenticated idle connections are kept, since a job may report once an hour.
_PENDING_SECONDS = 30.0
# A new connection must deliver its first complete, valid frame this soon: a ReportClient sends it
# right after connecting. Anything slower is holding one of the tuner's file descriptors.
_FIRST_FRAME_SECONDS = 5.0
# Connections still waiting for their first valid frame; accepting one more closes the oldest, so a
# flood of idle connections cannot exhaust the tuner's file descriptors or lock legitimate jobs out.
_MAX_UNAUTHENTICATED = 64
# Accepted per turn of the server loop, after serving the connections already readable: a flood of
# new connections then cannot push out, unread, a client whose report has already arrived.
_ACCEPTS_PER_ROUND = 32
# After accept() fails for want of file descriptors or memory the listener stays readable; accepting
# pauses this long rather than retry at once (a busy loop) or sleep (which would stall every job).
_ACCEPT_BACKOFF_SECONDS = 0.5
_WARN_EVERY_SECONDS = 10.0  # connection-level warnings (a flood's) are logged at most this often
_SWEEP_SECONDS = 1.0  # how often the server looks for connections past their deadline

# Steps above this are refused: epochs beyond it mean nothing, and sums of them lose precision.
MAX_STEP = 2**53


# ---- decisions -------------------------------------------------------------------------------------


class Action(str, enum.Enum):
    """What the tuner tells a training job after a report."""

    CONTINUE = "continue"
    STOP = "stop"  # early stopping: the job ends for good
    PAUSE = "pause"  # multi-fidelity: the job ends now and may be resumed from its checkpoint


@dataclass(frozen=True)
class Decision:
    """The tuner's answer to one report.

    Attributes:
        action: ``Action.CONTINUE`` (the default), ``STOP`` or ``PAUSE``; a string value is accepted.
        reason: why, as JSON-able data (values compared, reference count...), or ``None``.

    Example:
        >>> Decision("stop", {"median": 0.4}).action
        <Action.STOP: 'stop'>
    """

    action: Action = Action.CONTINUE
    reason: dict[str, Any] | None = None

    def __post_init__(self) -> None:
        try:
            object.__setattr__(self, "action", Action(self.action))
        except (ValueError, TypeError):
            raise ValidationError(
                "The 'action' parameter of Decision must be one of "
                f"{[a.value for a in Action]}. Got {describe_value(self.action)} instead. "
                "Fix: pass Action.CONTINUE, Action.STOP or Action.PAUSE."
            ) from None
        if self.reason is not None:
            if not isinstance(self.reason, Mapping):
                raise ValidationError(
                    "The 'reason' parameter of Decision must be a dict or None. Got "
                    f"{describe_value(self.reason)} instead. Fix: pass e.g. {{'rule': 'median'}}."
                )
            object.__setattr__(self, "reason", dict(self.reason))

    def stops(self) -> bool:
        """True when the job must end now (``STOP`` or ``PAUSE``)."""
        return self.action is not Action.CONTINUE


_CONTINUE = Decision()


class TrialStopped(AmtlibError):
    """Raised by :func:`report` when the tuner decided that this training job ends now.

    Catch it to save a checkpoint, then return (or re-raise). If it escapes the training function,
    the job is recorded as ``Stopped``, not failed; so it is if the clean-up raises another error
    (kept in ``failure_reason``), but then a paused job is not resumed. Once raised, every later
    :func:`report` of the job raises it again without contacting the tuner.

    Attributes:
        action: ``Action.STOP`` (early stopping) or ``Action.PAUSE`` (the tuner may resume the job
            from its checkpoint later, e.g. a Hyperband promotion).
        reason: the tuner's reason, as data, or ``None``.
        step: the step whose report got the decision, or ``None``.

    Example:
        >>> def train(hp):
        ...     for epoch in range(1, 11):
        ...         try:
        ...             report(loss=1.0 / epoch, step=epoch)
        ...         except TrialStopped:
        ...             break  # save a checkpoint here, if useful
        ...     return 1.0 / epoch
    """

    def __init__(
        self,
        action: Action | str = Action.STOP,
        reason: Mapping[str, Any] | None = None,
        step: int | None = None,
    ) -> None:
        self.action = Action(action)
        self.reason = None if reason is None else dict(reason)
        self.step = step
        verb = "paused" if self.action is Action.PAUSE else "stopped"
        at = "" if step is None else f" at step {step}"
        why = "" if reason is None else f" Reason: {json.dumps(json_safe(self.reason))}."
        super().__init__(
            f"The tuner {verb} this training job{at}.{why} This is not an error: catch "
            "TrialStopped to save a checkpoint, then return."
        )

    def __reduce__(self) -> tuple[Any, ...]:
        # The default would rebuild from the message alone; the worker may pickle this exception.
        return (type(self), (self.action, self.reason, self.step))


# ---- the wire --------------------------------------------------------------------------------------


# Built once: json.dumps/loads with options build a new encoder or decoder per call, which is a
# good part of a round trip's cost.
_ENCODER = json.JSONEncoder(sort_keys=True, separators=(",", ":"), allow_nan=False)
_DECODER = json.JSONDecoder()


def _mac(secret: bytes, body: bytes) -> bytes:
    return hmac.digest(secret, body, "sha256")


def _encode(secret: bytes, message: Mapping[str, Any]) -> bytes:
    """A signed frame holding ``message`` as canonical JSON."""
    body = _ENCODER.encode(message).encode("ascii")
    return _HEADER.pack(_MAC_BYTES + len(body)) + _mac(secret, body) + body


def _split(frame: bytes) -> tuple[bytes, bytes, dict[str, Any]]:
    """``(mac, body, message)`` of a frame's payload (after the length); ValueError if malformed."""
    if len(frame) <= _MAC_BYTES:
        raise ValueError(f"frame of {len(frame)} bytes is too short to hold a MAC and a body")
    mac, body = frame[:_MAC_BYTES], frame[_MAC_BYTES:]
    try:
        message = _DECODER.decode(body.decode("utf-8"))
    except (ValueError, RecursionError) as exc:  # UnicodeDecodeError is a ValueError
        raise ValueError(f"body is not JSON ({type(exc).__name__})") from None
    if not isinstance(message, dict):
        raise ValueError(f"body is a JSON {type(message).__name__}, not an object")
    return mac, body, message


def _verify(secret: bytes, mac: bytes, body: bytes) -> bool:
    return hmac.compare_digest(mac, _mac(secret, body))


def _is_int(value: object) -> TypeGuard[int]:
    return type(value) is int  # JSON ints; bool is rejected on purpose


_CLIENT_ID = re.compile(f"[0-9a-f]{{{2 * _CLIENT_ID_BYTES}}}")  # what secrets.token_hex draws


def _is_client_id(value: object) -> TypeGuard[str]:
    return isinstance(value, str) and _CLIENT_ID.fullmatch(value) is not None


def _parse_report(message: Mapping[str, Any]) -> tuple[int, dict[str, float], float]:
    """``(step, metrics, timestamp)`` of an authenticated request; ValueError if malformed."""
    step, metrics, timestamp = message.get("step"), message.get("metrics"), message.get("timestamp")
    if not _is_int(step) or step < 1:
        raise ValueError(f"step {step!r} is not an int >= 1")
    if not isinstance(metrics, dict) or not metrics:
        raise ValueError("metrics is not a non-empty object")
    values = {}
    for name, value in metrics.items():
        if (
            not isinstance(value, (int, float))
            or isinstance(value, bool)
            or not math.isfinite(value)
        ):
            raise ValueError(f"metric {name!r} is {value!r}, not a finite number")
        values[name] = float(value)
    if not isinstance(timestamp, (int, float)) or not math.isfinite(timestamp):
        raise ValueError(f"timestamp {timestamp!r} is not a finite number")
    return step, values, float(timestamp)


# ---- the tuner's end -------------------------------------------------------------------------------


@dataclass(frozen=True)
class ChannelSpec:
    """Where and how a training job reports: travels (pickled) inside the job's spec to the worker.

    Attributes:
        host, port: the tuner's report server, as reachable from the worker.
        job_id: the training job's id on that server (its index).
        secret: the job's 32-byte secret, hex-encoded; hidden from ``repr`` so logs do not leak it.
    """

    host: str
    port: int
    job_id: int
    secret: str = field(repr=False)


@dataclass(eq=False, slots=True)
class _Sender:
    """What the server remembers of one client of a job: its last accepted request, to refuse
    replays and to answer the exact retransmission of that request again."""

    last_seq: int = 0
    last_mac: bytes = b""
    last_reply: bytes = b""


@dataclass(eq=False, slots=True)
class _Job:
    secret: bytes
    clients: dict[str, _Sender] = field(default_factory=dict)  # at most _MAX_CLIENTS_PER_JOB


@dataclass(eq=False, slots=True)
class _Connection:
    sock: socket.socket
    address: str  # the peer's address: pending connections are counted per address
    peer: str  # address and port, for the log
    deadline: float | None  # closed if still pending then; None once idle and authenticated
    # The job whose fresh request, signed with its secret, the peer sent last, and its id: set, the
    # connection is authenticated (no longer pending), and kept while that registration lasts.
    job: _Job | None = None
    job_id: int = -1
    answered_from_cache: bool = False  # while pending: a retransmission got the cached reply
    inbuf: bytearray = field(default_factory=bytearray)
    outbuf: bytearray = field(default_factory=bytearray)

    @property
    def authenticated(self) -> bool:
        return self.job is not None


class _Rejected(Exception):
    """A frame the server refuses: the connection is closed without an answer.

    ``unproven`` names the kind of refusal when nothing shows that the frame comes from a holder of
    the job's secret (not signed with it, or a replay of bytes that were): anyone can send those by
    the thousand, so each kind is logged through its own `_Throttled`. ``None``: a fresh frame
    signed with the secret, from a real client that misbehaves; logged every time.
    """

    def __init__(self, why: str, unproven: str | None = None) -> None:
        super().__init__(why)
        self.unproven = unproven


class _Throttled:
    """A warning logged at most once per ``_WARN_EVERY_SECONDS``, saying how many were held back:
    a flood of connections must not turn into a flood of log lines (1,229 identical ones in an
    audit). Used by the server thread only."""

    def __init__(self) -> None:
        self._next = -math.inf
        self._held_back = 0

    def warn(self, message: str, *args: object) -> None:
        now = time.monotonic()
        if now < self._next:
            self._held_back += 1
            return
        if self._held_back:
            message += f" (and {self._held_back} more like this, not logged, since the last one)"
        logger.warning("report server: " + message, *args)
        self._next, self._held_back = now + _WARN_EVERY_SECONDS, 0


def is_wildcard_host(host: str) -> bool:
    """True for a wildcard address: "" or 0.0.0.0 (every IPv4 interface), :: (every interface)."""
    try:
        return ipaddress.ip_address(host).is_unspecified
    except ValueError:
        return host == ""


def _has_unread(sock: socket.socket) -> bool:
    """True when bytes wait unread in ``sock``: a connection past its deadline only because the
    server itself was busy (a slow ``decide``) is not closed for it."""
    try:
        return bool(sock.recv(1, socket.MSG_PEEK))
    except OSError:  # BlockingIOError: nothing there; anything else: the connection is gone
        return False


def _crowd(pending: list[_Connection], newcomer: str) -> list[_Connection]:
    """The pending connections, oldest first, of the address holding the most of them, counting
    the connection about to be accepted from ``newcomer``: where a pending connection is closed to
    make room. The oldest pending connection overall may be a legitimate client whose frame is a
    few milliseconds behind its handshake; picking among the crowd's, a flood from one host closes
    its own connections. Ties go to the address whose oldest connection is the oldest."""
    by_address: dict[str, list[_Connection]] = {}
    for conn in pending:  # in the order accepted
        by_address.setdefault(conn.address, []).append(conn)
    return max(
        by_address.values(),
        key=lambda group: len(group) + (group[0].address == newcomer),
    )  # max keeps the first of equals: insertion order is that of each address's oldest


_LISTENER, _WAKE = object(), object()
Decide = Callable[[int, int, dict[str, float], float], Decision]


class ReportServer:
    """The tuner's end of the report channel: authenticates reports and answers with decisions.

    Contract:

    - ``decide(job_id, step, metrics, timestamp)`` is called once per authenticated report, on the
      server's own thread, one call at a time, so it may touch tuner state guarded by a lock that the
      thread submitting jobs does not hold while submitting (an inline executor runs the job inside
      ``submit``, and the job waits for ``decide``). A slow ``decide`` delays every job's report. If
      it raises or returns something other than a :class:`Decision`, the error is logged on the
      ``amtlib.reporting`` logger and the job is told to continue.
    - Frames that fail authentication or validation never reach ``decide``; their connection is
      closed and a warning logged (at most one per kind every ``_WARN_EVERY_SECONDS`` for frames
      not shown to come from a holder of the secret). No client can crash the server.
    - ``register`` gives each job a fresh secret; registering a job id again invalidates the old
      secret (a re-run attempt cannot be reported to by the previous one). ``unregister`` rejects
      the job's later reports. Either way, the server closes the connections of the old
      registration within ``_SWEEP_SECONDS``.
    - A job may have several clients (a task Dask re-runs after its worker died, a forked child
      that reports): each client's sequence numbers are checked on their own, and every client's
      reports reach ``decide``. Past ``_MAX_CLIENTS_PER_JOB`` clients, a new one is refused.
    - ``close`` is idempotent, stops the thread, and releases the port.

    Args:
        decide: the decision function described above.
        host: the interface to bind: ``"127.0.0.1"`` (the default) accepts only local workers;
            ``"0.0.0.0"`` or a specific address accepts workers on other hosts; ``"::"`` accepts
            them over IPv6 and IPv4 alike (dual-stack, where the platform supports it).
        port: the port to bind, 0 for any free one.
        advertise_host: the host name or address workers connect to, when it differs from
            ``host`` (a Dask cluster on other hosts). Default: ``host``, or this machine's host
            name when ``host`` is a wildcard address.
        on_new_client: called with the job id, on the server's thread, just before ``decide``
            sees the first report of a client new to that job (a new run of the job's function,
            or a forked child of one).

    Example:
        >>> with ReportServer(lambda job, step, metrics, t: Decision()) as server:
        ...     with ReportClient(server.register(0)) as client:
        ...         client.send(1, {"loss": 0.5}).action
        <Action.CONTINUE: 'continue'>
    """

    def __init__(
        self,
        decide: Decide,
        *,
        host: str = "127.0.0.1",
        port: int = 0,
        advertise_host: str | None = None,
        on_new_client: Callable[[int], None] | None = None,
    ) -> None:
        if not callable(decide):
            raise ValidationError(
                "The 'decide' parameter of ReportServer must be a callable "
                f"(job_id, step, metrics, timestamp) -> Decision. Got {describe_value(decide)} "
                "instead. Fix: pass a function."
            )
        if not _is_int(port) or not 0 <= port <= 65535:
            raise ValidationError(
                "The 'port' parameter of ReportServer must be an int in [0, 65535]. Got "
                f"{describe_value(port)} instead. Fix: pass 0 to pick a free port."
            )
        self._decide = decide
        self._on_new_client = on_new_client
        self._host, self._port = host, port
        self._advertise_host = advertise_host
        self._jobs: dict[int, _Job] = {}
        self._lock = threading.Lock()  # guards _jobs and the lifecycle fields below
        self._listener: socket.socket | None = None
        self._thread: threading.Thread | None = None
        self._closed = False
        self._wake_r: socket.socket | None = None
        self._wake_w: socket.socket | None = None
        self._address: tuple[str, int] | None = None
        # Warnings about connections rather than frames: what a flood of connections causes.
        self._accept_failed, self._evicting, self._closing_late = (
            _Throttled(),
            _Throttled(),
            _Throttled(),
        )
        # Refused frames that anyone could have sent, one throttle per _Rejected.unproven kind: a
        # flood of garbage does not hide, for ten seconds, the first frame with a bad signature.
        self._rejecting: collections.defaultdict[str, _Throttled] = collections.defaultdict(
            _Throttled
        )

    # ---- the tuner's side (any thread) ----------------------------------------------------------

    def start(self) -> ReportServer:
        """Bind the port and start serving on a daemon thread; a no-op when already started.

        Raises:
            ReportChannelError: the server was closed, or the address cannot be bound.
        """
        with self._lock:
            if self._closed:
                raise ReportChannelError("ReportServer.start() was called after close().")
            if self._thread is not None:
                return self
            family = socket.AF_INET6 if ":" in self._host else socket.AF_INET
            # On "::" alone, Python sets IPV6_V6ONLY, so workers told an IPv4 address of this
            # machine (the usual case) could not connect: listen on both when the platform can.
            dualstack = (
                family == socket.AF_INET6
                and is_wildcard_host(self._host)
                and socket.has_dualstack_ipv6()
            )
            try:
                listener = socket.create_server(
                    (self._host, self._port), family=family, backlog=128, dualstack_ipv6=dualstack
                )
            except OSError as exc:
                raise ReportChannelError(
                    f"The report server could not listen on {self._host}:{self._port}: {exc}. "
                    "Fix: pass port=0 for a free port, or a host that is an address of this machine."
                ) from exc
            listener.setblocking(False)
            self._listener = listener
            self._wake_r, self._wake_w = socket.socketpair()
            self._wake_r.setblocking(False)
            self._wake_w.setblocking(False)
            port = listener.getsockname()[1]
            host = self._advertise_host
            if host is None:
                host = socket.gethostname() if is_wildcard_host(self._host) else self._host
            self._address = (host, port)
            self._thread = threading.Thread(
                target=self._serve, name=f"amtlib-report-server-{port}", daemon=True
            )
            self._thread.start()
        return self

    @property
    def address(self) -> tuple[str, int]:
        """``(host, port)`` as advertised to workers.

        Raises:
            ReportChannelError: the server was never started.
        """
        if self._address is None:
            raise ReportChannelError("ReportServer.address is known once start() has been called.")
        return self._address

    def register(self, job_id: int) -> ChannelSpec:
        """Accept reports for ``job_id`` (replacing any earlier registration) and describe how.

        Raises:
            ValidationError: ``job_id`` is not an int >= 0.
            ReportChannelError: the server is not started, or closed.
        """
        if not _is_int(job_id) or job_id < 0:
            raise ValidationError(
                "The 'job_id' parameter of ReportServer.register must be an int >= 0. Got "
                f"{describe_value(job_id)} instead. Fix: pass the training job's index."
            )
        host, port = self.address
        secret = secrets.token_bytes(_SECRET_BYTES)
        with self._lock:
            if self._closed:
                raise ReportChannelError("ReportServer.register() was called after close().")
            self._jobs[job_id] = _Job(secret)
        return ChannelSpec(host, port, job_id, secret.hex())

    def unregister(self, job_id: int) -> None:
        """Reject any later report of ``job_id``; a no-op for an unknown id."""
        with self._lock:
            self._jobs.pop(job_id, None)

    def close(self) -> None:
        """Stop serving, close every connection and free the port (idempotent)."""
        with self._lock:
            if self._closed:
                return
            self._closed = True
            self._jobs.clear()
            thread = self._thread
        if thread is None:
            return
        # _wake_w is set with _thread; a byte wakes the selector so the loop sees _closed.
        if self._wake_w is not None:
            with contextlib.suppress(OSError):
                self._wake_w.send(b"\0")
        if thread is not threading.current_thread():  # close() may be called from decide
            thread.join()

    def __enter__(self) -> ReportServer:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    # ---- the server thread ----------------------------------------------------------------------

    def _serve(self) -> None:
        listener, wake_r, wake_w = self._listener, self._wake_r, self._wake_w
        if listener is None or wake_r is None or wake_w is None:  # start() sets them first
            return
        selector = selectors.DefaultSelector()
        connections: dict[socket.socket, _Connection] = {}  # in the order accepted
        selector.register(listener, selectors.EVENT_READ, _LISTENER)
        selector.register(wake_r, selectors.EVENT_READ, _WAKE)
        next_sweep = time.monotonic() + _SWEEP_SECONDS
        resume_accepting: float | None = None  # while accepting is paused, when it resumes
        try:
            while not self._closed:
                timeout = _SWEEP_SECONDS
                if resume_accepting is not None:
                    timeout = min(timeout, max(0.0, resume_accepting - time.monotonic()))
                accept = False
                for key, mask in selector.select(timeout=timeout):
                    if key.data is _LISTENER:
                        accept = True
                    elif key.data is not _WAKE:
                        self._on_ready(selector, connections, key.data, mask)
                # New connections after those with a report waiting: accepting may close the
                # oldest pending connection, and it must not be one whose frame is already here.
                if accept and not self._accept(listener, selector, connections):
                    selector.unregister(listener)
                    resume_accepting = time.monotonic() + _ACCEPT_BACKOFF_SECONDS
                now = time.monotonic()
                if resume_accepting is not None and now >= resume_accepting:
                    selector.register(listener, selectors.EVENT_READ, _LISTENER)
                    resume_accepting = None
                if now >= next_sweep:
                    next_sweep = now + _SWEEP_SECONDS
                    self._sweep(selector, connections, now)
        except Exception:  # a bug here must not leave jobs hanging without a word
            logger.exception("report server thread failed; reports will not be answered")
        finally:
            for conn in list(connections.values()):
                self._drop(selector, connections, conn)
            selector.close()
            for sock in (listener, wake_r, wake_w):
                sock.close()

    def _accept(
        self,
        listener: socket.socket,
        selector: selectors.BaseSelector,
        connections: dict[socket.socket, _Connection],
    ) -> bool:
        """Accept waiting connections, at most ``_ACCEPTS_PER_ROUND``; False when accepting must
        pause (out of file descriptors or memory)."""
        for _ in range(_ACCEPTS_PER_ROUND):
            try:
                sock, peer = listener.accept()
            except BlockingIOError:
                return True
            except (ConnectionAbortedError, InterruptedError):  # the peer left before accept()
                continue
            except OSError as exc:
                # EMFILE, ENFILE, ENOBUFS, ENOMEM...: the connection stays queued and the listener
                # readable, so trying again at once would spin.
                name = errno.errorcode.get(exc.errno or 0, "error")
                self._accept_failed.warn(
                    "accept failed (%s: %s); not accepting connections for %g s",
                    name,
                    exc.strerror or exc,
                    _ACCEPT_BACKOFF_SECONDS,
                )
                return False
            sock.setblocking(False)
            with contextlib.suppress(OSError):  # the peer may have reset it already
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            pending = [conn for conn in connections.values() if not conn.authenticated]
            if len(pending) >= _MAX_UNAUTHENTICATED:
                victims = _crowd(pending, peer[0])
                # Its oldest, unless that one's frame arrived since the last select: the next one.
                victim = next((c for c in victims if not _has_unread(c.sock)), victims[0])
                self._evicting.warn(
                    "closing %s: %d connections were waiting for their first valid frame, the "
                    "most allowed; %s holds the most of them (%d, counting the new one), and its "
                    "oldest makes room for the new one",
                    victim.peer,
                    len(pending),
                    victim.address,
                    len(victims) + (victim.address == peer[0]),
                )
                self._drop(selector, connections, victim)
            conn = _Connection(
                sock,
                peer[0],
                f"{peer[0]}:{peer[1]}",
                deadline=time.monotonic() + _FIRST_FRAME_SECONDS,
            )
            connections[sock] = conn
            selector.register(sock, selectors.EVENT_READ, conn)
        return True

    def _sweep(
        self,
        selector: selectors.BaseSelector,
        connections: dict[socket.socket, _Connection],
        now: float,
    ) -> None:
        """Close the connections past their deadline: no fresh valid request within
        ``_FIRST_FRAME_SECONDS`` of connecting, or a frame left incomplete for ``_PENDING_SECONDS``;
        and the idle connections of a job no longer registered (or registered again since), whose
        reports would be refused anyway: they need not hold a descriptor until the worker exits."""
        with self._lock:
            stale = [
                conn
                for conn in connections.values()
                if conn.job is not None
                and self._jobs.get(conn.job_id) is not conn.job
                and not conn.inbuf
                and not conn.outbuf  # a reply still on its way (to a slow reader) is delivered
            ]
        for conn in stale:
            self._drop(selector, connections, conn)
        for conn in list(connections.values()):
            if conn.deadline is None or now <= conn.deadline or _has_unread(conn.sock):
                continue
            if conn.authenticated:
                self._closing_late.warn("closing %s: incomplete request", conn.peer)
            elif conn.answered_from_cache:
                self._closing_late.warn(
                    "closing %s: no fresh request within %g s of connecting, only the "
                    "retransmission of one already answered (a client reconnects when it next "
                    "reports)",
                    conn.peer,
                    _FIRST_FRAME_SECONDS,
                )
            else:
                self._closing_late.warn(
                    "closing %s: no valid request within %g s of connecting",
                    conn.peer,
                    _FIRST_FRAME_SECONDS,
                )
            self._drop(selector, connections, conn)

    def _on_ready(
        self,
        selector: selectors.BaseSelector,
        connections: dict[Any, _Connection],
        conn: _Connection,
        mask: int,
    ) -> None:
        try:
            if mask & selectors.EVENT_READ:
                data = conn.sock.recv(65536)
                if not data:
                    raise ConnectionResetError("closed by peer")
                self._on_data(conn, data)
            self._flush(selector, conn)
        except _Rejected as exc:
            if exc.unproven is None:
                logger.warning("report server: rejected a frame from %s: %s", conn.peer, exc)
            else:
                self._rejecting[exc.unproven].warn("rejected a frame from %s: %s", conn.peer, exc)
            self._drop(selector, connections, conn)
        except BlockingIOError:
            pass
        except OSError:
            self._drop(selector, connections, conn)
        except Exception:  # a bug in handling one connection must not stop the others
            logger.exception("report server: error while serving %s; closing it", conn.peer)
            self._drop(selector, connections, conn)

    def _on_data(self, conn: _Connection, data: bytes) -> None:
        conn.inbuf += data
        if conn.deadline is None:  # an authenticated connection starts its next frame
            conn.deadline = time.monotonic() + _PENDING_SECONDS
        while len(conn.inbuf) >= _HEADER.size:
            (length,) = _HEADER.unpack_from(conn.inbuf)
            if length > MAX_FRAME_BYTES:  # refuse before buffering it
                raise _Rejected(f"frame of {length} bytes exceeds {MAX_FRAME_BYTES}", "malformed")
            end = _HEADER.size + length
            if len(conn.inbuf) < end:
                return
            frame = bytes(conn.inbuf[_HEADER.size : end])
            del conn.inbuf[:end]
            reply, job_id, job = self._answer(frame)
            if job is not None:  # a fresh request: the peer holds the secret
                conn.job, conn.job_id = job, job_id  # kept while idle from now on, however long
            elif not conn.authenticated:
                # Answered from the cache: bytes anyone who saw them can resend, so the connection
                # stays pending, deadline and all. A client retransmits once per connection.
                if conn.answered_from_cache:
                    raise _Rejected(
                        f"a second retransmission of a report of job id {job_id} on a connection "
                        "that has sent no fresh report",
                        "replayed",
                    )
                conn.answered_from_cache = True
            conn.outbuf += reply
            if conn.authenticated:
                conn.deadline = time.monotonic() + _PENDING_SECONDS if conn.inbuf else None

    def _answer(self, frame: bytes) -> tuple[bytes, int, _Job | None]:
        """The signed reply to one request frame, its job id, and the job when the request was
        fresh (it reached ``decide``) or ``None`` when it was answered from the cache (the peer may
        be replaying what it saw); raises ``_Rejected`` for anything suspect."""
        try:
            mac, body, message = _split(frame)
        except ValueError as exc:
            raise _Rejected(str(exc), "malformed") from None
        job_id, client, seq = message.get("job_id"), message.get("client"), message.get("seq")
        if message.get("kind") != "report" or not _is_int(job_id) or not _is_int(seq):
            raise _Rejected("not a report request", "malformed")
        if not _is_client_id(client):
            raise _Rejected(
                f"report of job id {job_id} without a client id of {2 * _CLIENT_ID_BYTES} hex "
                "digits (protocol version 1: the worker's amtlib is older than the tuner's)",
                "protocol version 1",
            )
        with self._lock:
            job = self._jobs.get(job_id)
        if job is None:
            raise _Rejected(f"job id {job_id} is not registered", "unregistered")
        if not _verify(job.secret, mac, body):
            raise _Rejected(f"bad signature for job id {job_id}", "bad signature")
        sender = job.clients.get(client)
        if sender is None:
            if len(job.clients) >= _MAX_CLIENTS_PER_JOB:
                raise _Rejected(
                    f"job id {job_id} already has {len(job.clients)} report clients, the most "
                    f"allowed (each ReportClient, and each forked child that reports, is one); "
                    f"client {client} is refused"
                )
        elif seq <= sender.last_seq:
            if seq == sender.last_seq and hmac.compare_digest(mac, sender.last_mac):
                return sender.last_reply, job_id, None  # a retransmission after a broken connection
            # Correctly signed, but an older frame of the client's, resent: anyone may have.
            raise _Rejected(
                f"sequence number {seq} of job id {job_id}, client {client}, was already used",
                "replayed",
            )
        try:
            step, metrics, timestamp = _parse_report(message)
        except ValueError as exc:
            raise _Rejected(f"malformed report of job id {job_id}: {exc}") from None
        if sender is None and self._on_new_client is not None:
            try:  # just before its first report reaches decide
                self._on_new_client(job_id)
            except Exception:
                logger.exception("report server: on_new_client() raised for job id %d", job_id)
        decision = self._call_decide(job_id, step, metrics, timestamp)
        reply = _encode(
            job.secret,
            {"kind": "decision", "job_id": job_id, "client": client, "seq": seq,
             "action": decision.action.value, "reason": json_safe(decision.reason)},
        )  # fmt: skip
        if sender is None:
            sender = job.clients[client] = _Sender()
        sender.last_seq, sender.last_mac, sender.last_reply = seq, mac, reply
        return reply, job_id, job

    def _call_decide(
        self, job_id: int, step: int, metrics: dict[str, float], timestamp: float
    ) -> Decision:
        try:
            decision = self._decide(job_id, step, metrics, timestamp)
        except Exception:
            logger.exception(
                "report server: decide() raised for job id %d at step %d; answering continue",
                job_id,
                step,
            )
            return _CONTINUE
        if not isinstance(decision, Decision):
            logger.error(
                "report server: decide() returned %s for job id %d at step %d, not a Decision; "
                "answering continue",
                describe_value(decision),
                job_id,
                step,
            )
            return _CONTINUE
        return decision

    def _flush(self, selector: selectors.BaseSelector, conn: _Connection) -> None:
        if conn.outbuf:
            sent = conn.sock.send(conn.outbuf)
            del conn.outbuf[:sent]
        # Watch for writability only while a reply is stuck, so an idle socket does not spin.
        events = selectors.EVENT_READ | (selectors.EVENT_WRITE if conn.outbuf else 0)
        if selector.get_key(conn.sock).events != events:
            selector.modify(conn.sock, events, conn)

    @staticmethod
    def _drop(
        selector: selectors.BaseSelector, connections: dict[Any, _Connection], conn: _Connection
    ) -> None:
        connections.pop(conn.sock, None)
        with contextlib.suppress(KeyError, ValueError):
            selector.unregister(conn.sock)
        conn.sock.close()


# ---- the worker's end ------------------------------------------------------------------------------


class ReportClient:
    """The worker's end of the report channel for one training job: a plain object, no globals.

    Connects on the first ``send``, keeps the connection for every later report, and reconnects once
    when it finds the connection broken. Safe to share between threads (reports are serialised).
    Any number of clients may report for one job, each numbering its own reports: a client is
    identified by a random id, which a forked child that reports draws afresh (its copy of the
    parent's counter would otherwise collide with the parent's next reports).

    Args:
        spec: the job's channel, from :meth:`ReportServer.register`.
        timeout: seconds to wait for the connection and for each reply.

    Example (a command-trial wrapper parsing a subprocess's output would do this)::

        with ReportClient(channel) as client:
            if client.send(step, {"loss": loss}).stops():
                process.terminate()
    """

    def __init__(self, spec: ChannelSpec, *, timeout: float = _DEFAULT_TIMEOUT) -> None:
        secret = b""
        if isinstance(spec, ChannelSpec):
            with contextlib.suppress(TypeError, ValueError):
                secret = bytes.fromhex(spec.secret)
        if len(secret) != _SECRET_BYTES:
            raise ValidationError(
                "The 'spec' parameter of ReportClient must be a ChannelSpec from "
                f"ReportServer.register, with a {_SECRET_BYTES}-byte hex secret. Got "
                f"{type(spec).__name__} instead. Fix: pass the ChannelSpec the tuner registered."
            )
        self.spec = spec
        self._secret = secret
        self._timeout = timeout
        self._sock: socket.socket | None = None
        self._pid = os.getpid()
        self._client_id = secrets.token_hex(_CLIENT_ID_BYTES)
        self._seq = 0
        self._accepted = False  # the tuner has answered a report of this client
        self._lock = threading.Lock()

    def send(
        self, step: int, metrics: Mapping[str, Any], timestamp: float | None = None
    ) -> Decision:
        """Report one step and return the tuner's decision.

        Args:
            step: the step number, an int >= 1 (ordering is the caller's business).
            metrics: metric name -> finite real number (numpy scalars accepted).
            timestamp: seconds since the epoch; default now.

        Raises:
            ValidationError: a bad step or metric value.
            ReportChannelError: the tuner cannot be reached, does not answer within the timeout,
                closes the connection without answering (twice), or answers with a reply that fails
                authentication.
        """
        checked = _check_metrics(metrics, "ReportClient.send")
        if (
            isinstance(step, bool)
            or not isinstance(step, numbers.Integral)
            or not 1 <= step <= MAX_STEP
        ):
            raise ValidationError(
                "The 'step' parameter of ReportClient.send must be an int from 1 to 2**53. Got "
                f"{describe_value(step)} instead. Fix: count steps from 1."
            )
        when = time.time() if timestamp is None else _finite_float(timestamp)
        if when is None:
            raise ValidationError(
                "The 'timestamp' parameter of ReportClient.send must be a finite number of "
                f"seconds since the epoch, or None. Got {describe_value(timestamp)} instead. "
                "Fix: pass time.time(), or None for now."
            )
        return self._send(int(step), checked, when)

    def _send(self, step: int, metrics: dict[str, float], timestamp: float) -> Decision:
        with self._lock:
            if self._pid != os.getpid():
                self._become_a_new_client()
            self._seq += 1
            seq = self._seq
            frame = _encode(
                self._secret,
                {"kind": "report", "job_id": self.spec.job_id, "client": self._client_id,
                 "seq": seq, "step": step, "metrics": metrics, "timestamp": timestamp},
            )  # fmt: skip
            if len(frame) - _HEADER.size > MAX_FRAME_BYTES:
                raise ValidationError(
                    f"A report of {len(metrics)} metrics is {len(frame)} bytes, over the report "
                    f"channel's limit of {MAX_FRAME_BYTES}. Fix: report fewer metrics per step."
                )
            try:
                try:
                    reply = self._exchange(frame)
                except TimeoutError:
                    raise  # the tuner is there but silent: waiting again would double the wait
                except OSError:
                    # A broken connection: reconnect once and send the same frame; if the tuner had
                    # answered it already, it answers the retransmission without deciding again.
                    self._disconnect()
                    reply = self._exchange(frame)
            except TimeoutError as exc:
                raise self._error(str(exc), None) from exc
            except ConnectionResetError as exc:
                raise self._refused(exc) from exc
            except OSError as exc:
                raise self._error(_describe_failure(exc), exc) from exc
            decision = self._read_decision(reply, seq)
            self._accepted = True
            return decision

    def _become_a_new_client(self) -> None:
        """In a forked child: a client id and sequence numbers of its own, and a connection of its
        own. Checked on each report rather than hooked on fork, so that this stays a plain object
        and also catches a fork made outside Python's ``os.fork``."""
        self._pid = os.getpid()
        self._client_id = secrets.token_hex(_CLIENT_ID_BYTES)
        self._seq = 0
        self._accepted = False
        self._disconnect()  # closes the child's copy only: the parent's connection stays open

    def _exchange(self, frame: bytes) -> bytes:
        if self._sock is None:
            try:
                sock = socket.create_connection((self.spec.host, self.spec.port), self._timeout)
            except TimeoutError as exc:
                raise TimeoutError(f"could not connect within {self._timeout} s") from exc
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            self._sock = sock
        try:
            self._sock.sendall(frame)
            (length,) = _HEADER.unpack(_recv_exactly(self._sock, _HEADER.size))
            if length > MAX_FRAME_BYTES:
                raise ConnectionAbortedError(f"reply frame of {length} bytes is too large")
            return _recv_exactly(self._sock, length)
        except TimeoutError as exc:
            self._disconnect()
            raise TimeoutError(f"no answer within {self._timeout} s") from exc

    def _read_decision(self, reply: bytes, seq: int) -> Decision:
        try:
            mac, body, message = _split(reply)
        except ValueError as exc:
            raise self._error(f"malformed reply ({exc})", None) from None
        if not _verify(self._secret, mac, body):
            raise self._error("the reply failed authentication (bad signature)", None)
        answers = (message.get("kind"), message.get("job_id"), message.get("client"))
        if answers != ("decision", self.spec.job_id, self._client_id) or message.get("seq") != seq:
            raise self._error("the reply does not answer this report", None)
        try:
            return Decision(message.get("action", ""), message.get("reason"))
        except ValidationError as exc:
            raise self._error(f"malformed decision ({exc})", None) from None

    def _error(
        self, why: str, exc: BaseException | None, fix: str | None = None
    ) -> ReportChannelError:
        self._disconnect()
        cause = f" [{type(exc).__name__}: {exc}]" if exc is not None else ""
        if fix is None:
            fix = (
                "check that the tuner is still running and that this address is reachable from "
                "the worker (on a cluster, the tuner must advertise an address the workers can "
                "connect to)"
            )
        return ReportChannelError(
            f"Training job {self.spec.job_id} could not report to the tuner at "
            f"{self.spec.host}:{self.spec.port}: {why}{cause}. Fix: {fix}."
        )

    def _refused(self, exc: ConnectionResetError) -> ReportChannelError:
        """The error for a report the tuner refused: it closes the connection without a word, so
        the reasons left are those this client cannot rule out itself."""
        closed = "the tuner closed the connection without answering, twice, which is how it refuses"
        if self._accepted:  # the secret was right, and this client known to the tuner
            why = (
                f"{closed} a report of a job it no longer accepts (the job ended, was stopped, or "
                "a newer attempt of it was registered, which replaces the secret); it accepted "
                "this client's earlier reports"
            )
            fix = "report only while the job runs (its attempt's ChannelSpec is valid until then)"
        else:
            why = (
                f"{closed} a report: the job is not registered (it ended, was stopped, or a newer "
                "attempt of it was registered), the secret is wrong, or the job already has "
                f"{_MAX_CLIENTS_PER_JOB} report clients (each ReportClient, and each forked child "
                "that reports, is one)"
            )
            fix = (
                "report with the ChannelSpec the tuner gave this attempt of the job, while it "
                "runs, and from fewer processes if it forks a reporting child per step"
            )
        return self._error(
            f"{why}; the tuner's log (logger 'amtlib.reporting') names the reason", exc, fix
        )

    def _disconnect(self) -> None:
        if self._sock is not None:
            with contextlib.suppress(OSError):
                self._sock.close()
            self._sock = None

    def close(self) -> None:
        """Close the connection (idempotent); a later ``send`` reconnects."""
        with self._lock:
            self._disconnect()

    def __enter__(self) -> ReportClient:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()


def _recv_exactly(sock: socket.socket, size: int) -> bytes:
    chunks, left = [], size
    while left:
        chunk = sock.recv(left)
        if not chunk:
            raise ConnectionResetError("the tuner closed the connection without answering")
        chunks.append(chunk)
        left -= len(chunk)
    return b"".join(chunks)


def _describe_failure(exc: OSError) -> str:
    if isinstance(exc, ConnectionRefusedError):
        return "connection refused (is the tuner still running?)"
    if isinstance(exc, socket.gaierror):
        return "the host name does not resolve here"
    return "the connection failed"


def _check_metrics(metrics: Mapping[str, Any], where: str) -> dict[str, float]:
    """Metric name -> float, or ValidationError naming the first bad metric."""
    if not metrics:
        raise ValidationError(
            f"{where} needs at least one metric. Got none. Fix: pass metrics as keywords, e.g. "
            "report(loss=0.3), or report(**{'validation:loss': 0.3})."
        )
    checked = {}
    for name, value in metrics.items():
        if not isinstance(name, str) or not name:
            raise ValidationError(
                f"Metric names passed to {where} must be non-empty strings. Got "
                f"{describe_value(name)}. Fix: name the metric, e.g. 'validation:loss'."
            )
        number = _finite_float(value)
        if number is None:
            raise ValidationError(
                f"Metric {name!r} passed to {where} must be a finite real number. Got "
                f"{describe_value(value)} instead. Fix: pass a float such as loss=0.25 (convert "
                "tensors with .item(); skip or fix the report when the value is NaN or infinite)."
            )
        checked[name] = number
    return checked


def _without_non_finite(
    metrics: Mapping[str, Any], objective: str
) -> tuple[dict[str, Any], float | None]:
    """``metrics`` without the real numbers that are NaN or infinite, and the objective's value
    if it was one of those (``None`` otherwise). Anything else is left for `_check_metrics`."""
    kept: dict[str, Any] = {}
    diverged = None
    for name, value in metrics.items():
        number = real_number(value)
        if number is not None and not math.isfinite(number):
            if name == objective:
                diverged = number
            continue
        kept[name] = value
    return kept, diverged


def real_number(value: Any) -> float | None:
    """``value`` as a float if it is a real number (NaN and infinities included), else None."""
    if hasattr(value, "item") and getattr(value, "ndim", None) == 0:
        try:
            value = value.item()
        except Exception:
            return None
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        return None
    try:
        return float(value)
    except (OverflowError, TypeError, ValueError):  # an int or Fraction beyond float's range
        return None


def _finite_float(value: Any) -> float | None:
    """``value`` as a finite float if it is a real number (numpy and torch scalars too), else None."""
    number = real_number(value)
    return number if number is not None and math.isfinite(number) else None


# ---- the training function's view ------------------------------------------------------------------


@dataclass(frozen=True)
class JobContextSpec:
    """What :func:`job_context` needs to know about the training job it runs (picklable).

    Attributes:
        name, index, hyperparameters: the training job's.
        channel: where to report, or ``None`` to only record reports locally (no decisions).
        checkpoint_dir: where the job keeps its checkpoints, or ``None``.
        resume_step: the step a resumed job continues after (its checkpoint's); 0 for a fresh start.
        step_offset: the last step already counted for the job: automatic steps start after it, and
            explicit steps must exceed it. Usually equal to ``resume_step``.
        objective_metric_name: only reports of this metric count steps; a report without it
            belongs to the current step. ``None``: every report counts one.
    """

    name: str
    index: int
    hyperparameters: dict[str, Any]
    channel: ChannelSpec | None = None
    checkpoint_dir: str | None = None
    resume_step: int = 0
    step_offset: int = 0
    objective_metric_name: str | None = None


class JobContext:
    """The training job a training function is running in; :func:`current_job` returns it.

    Besides the read-only facts about the job, it holds the reports made so far (``reports``) and the
    stop decision once there is one (``decision``), which the worker returns with the job's outcome.
    A command-trial wrapper can create one directly and call :meth:`report` without the context
    variable.

    Attributes:
        name: the training job's name.
        index: its index in the tuning job.
        checkpoint_dir: where it keeps checkpoints, or ``None``.
        resume_step: the step to continue after, 0 for a fresh start.
    """

    def __init__(self, spec: JobContextSpec) -> None:
        self.name = spec.name
        self.index = spec.index
        self.checkpoint_dir = spec.checkpoint_dir
        self.resume_step = spec.resume_step
        self._hyperparameters = dict(spec.hyperparameters)
        self._client = None if spec.channel is None else ReportClient(spec.channel)
        self._lock = threading.Lock()  # a job may report from several of its own threads
        self._reports: list[Report] = []
        self._offset = spec.step_offset
        self._objective = spec.objective_metric_name
        self._last_step = spec.step_offset  # of any report
        self._counted_step = spec.step_offset  # of the last report that counted a step
        self._decision: Decision | None = None

    @property
    def hyperparameters(self) -> dict[str, Any]:
        """A copy of the job's hyperparameters."""
        return dict(self._hyperparameters)

    @property
    def reports(self) -> tuple[Report, ...]:
        """Every report made so far, in order (including any whose sending failed)."""
        with self._lock:
            return tuple(self._reports)

    @property
    def decision(self) -> Decision | None:
        """The tuner's stop or pause decision, once received; ``None`` while the job may continue."""
        return self._decision

    def report(self, /, step: int | None = None, **metrics: Any) -> None:
        """Record one step of metrics and send it to the tuner; see :func:`report`."""
        misplaced = step is not None and not isinstance(step, numbers.Integral)
        if not metrics and (misplaced or isinstance(step, bool)):
            hint = "report(**metrics)" if isinstance(step, Mapping) else "report(loss=0.5)"
            raise ValidationError(
                "report() takes metrics as keywords; its only positional parameter is 'step', "
                f"which must be an int. Got {describe_value(step)} as the step, and no metric. "
                f"Fix: name the metric, e.g. {hint}."
            )
        with self._lock:
            if self._decision is not None:
                raise TrialStopped(self._decision.action, self._decision.reason, self._last_step)
        if self._objective is not None and metrics:
            # Side metrics that are NaN or infinite are left out; a NaN or infinite objective (a
            # diverging training) ends the job here, unrecorded: its objective will be failed.
            metrics, diverged = _without_non_finite(metrics, self._objective)
            if diverged is not None:
                if metrics:
                    _check_metrics(metrics, "report()")  # still refuse values of the wrong type
                with self._lock:
                    if self._decision is None:
                        at = self._next_step(step, True)
                        reason = {"rule": "not_finite", "step": at, "metric": self._objective}
                        self._decision = Decision(Action.STOP, {**reason, "value": repr(diverged)})
                    raise TrialStopped(
                        self._decision.action, self._decision.reason, self._last_step
                    )
            if not metrics:
                return  # only non-finite side metrics: nothing to record
        checked = _check_metrics(metrics, "report()")
        with self._lock:
            if self._decision is not None:
                raise TrialStopped(self._decision.action, self._decision.reason, self._last_step)
            counts = self._objective is None or self._objective in checked
            step = self._next_step(step, counts)
            record = Report(step, checked, time.time())
            self._reports.append(record)
            self._last_step = step
            if counts:
                self._counted_step = step
            if self._client is None:
                return
            decision = self._client._send(step, checked, record.timestamp)
            if decision.stops():
                self._decision = decision
                raise TrialStopped(decision.action, decision.reason, step)

    def _next_step(self, step: Any, counts: bool) -> int:
        """The step of a report: one more than the last counted step when it reports the objective
        metric, else the current step (the last one, at least the first after the offset)."""
        lowest = max(self._counted_step + 1 if counts else 0, self._last_step, self._offset + 1)
        if step is None:
            return lowest
        if (
            isinstance(step, bool)
            or not isinstance(step, numbers.Integral)
            or not lowest <= int(step) <= MAX_STEP
        ):
            resumed = (
                f" This job resumed from its checkpoint after step {self._offset} "
                "(current_job().resume_step): its steps continue from there."
                if self._offset and (isinstance(step, numbers.Integral) and step <= self._offset)
                else ""
            )
            raise ValidationError(
                f"The 'step' parameter of report() must be an int from {lowest} to 2**53 (the "
                "steps of the objective metric increase; a report without it may share the last "
                "step)."
                f" Got {describe_value(step)} instead.{resumed} Fix: pass increasing steps (e.g. "
                "the epoch, from 1), or omit step to count reports of the objective metric "
                "automatically."
            )
        return int(step)

    def close(self) -> None:
        """Close the connection to the tuner, if any."""
        if self._client is not None:
            self._client.close()


_CURRENT: contextvars.ContextVar[JobContext | None] = contextvars.ContextVar(
    "amtlib_current_job", default=None
)


@contextlib.contextmanager
def job_context(spec: JobContextSpec) -> Iterator[JobContext]:
    """Make ``spec``'s job the current one while the block runs (what ``run_training_job`` enters).

    The job is current only in this thread's context: jobs running at once in other threads (a
    thread pool, Dask threads) each see their own. On exit the previous context is restored and the
    connection to the tuner closed.

    Example:
        >>> with job_context(JobContextSpec("job-001", 0, {"x": 1})) as job:
        ...     report(loss=0.5)
        >>> job.reports[0].step, job.reports[0].metrics
        (1, {'loss': 0.5})
    """
    context = JobContext(spec)
    token = _CURRENT.set(context)
    try:
        yield context
    finally:
        _CURRENT.reset(token)
        context.close()


def current_job() -> JobContext:
    """The training job the calling training function runs in.

    Raises:
        ValidationError: called outside a training function run by a Tuner.

    Example:
        >>> def train(hp):
        ...     job = current_job()
        ...     for epoch in range(job.resume_step + 1, hp["epochs"] + 1):
        ...         report(loss=1.0 / epoch, step=epoch)  # and checkpoint to job.checkpoint_dir
        ...     return 1.0 / hp["epochs"]
    """
    context = _CURRENT.get()
    if context is None:
        raise ValidationError(_outside("current_job()"))
    return context


def report(step: int | None = None, **metrics: float) -> None:
    """Report one step of intermediate metrics from inside a training function.

    The tuner sees each report as it is made and may stop the job: ``report`` then raises
    :class:`TrialStopped`. A metric named ``step`` cannot be passed (the name is the step argument).

    Args:
        step: the step number (e.g. the epoch): an int above the last step at which the objective
            metric was reported, or equal to the current step for a report without it. Default:
            the next step (counting from 1) when the report has the objective metric, else the
            current one.
        **metrics: metric name -> real number (numpy scalars accepted). Names that are not
            identifiers go through a dict: ``report(**{"validation:loss": 0.3})``. A NaN or
            infinite objective metric (a diverging training) ends the job at once: it is recorded
            as ``Stopped`` with a failed objective (``stop_reason["rule"] == "not_finite"``);
            other metrics that are NaN or infinite are left out of the report.

    Raises:
        TrialStopped: the tuner decided the job ends now, or the objective is NaN or infinite.
        ValidationError: no metric, a value that is not a real number, a step that does not
            increase, or a call outside a training function run by a Tuner.
        ReportChannelError: the tuner cannot be reached.

    Example:
        >>> def train(hp):
        ...     for epoch in range(1, 4):
        ...         report(**{"validation:loss": 1.0 / epoch}, step=epoch)
        ...     return 1.0 / 3
    """
    context = _CURRENT.get()
    if context is None:
        raise ValidationError(_outside("report()"))
    context.report(step, **metrics)


def _outside(what: str) -> str:
    return (
        f"{what} works only inside a training function run by a Tuner, and was called outside any "
        "training job. Fix: call it from the function passed to Tuner (for threads that function "
        "starts itself, run them with contextvars.copy_context().run)."
    )
