"""The durable store: tuning jobs, training jobs and reports as JSON rows in SQLite.

Only the tuner process writes; workers never touch the store. Each write is its own committed
transaction, so a training job recorded as finished survives ``kill -9`` of the tuner the instant
``put_training_job`` returns. The database runs in WAL mode with ``synchronous=NORMAL``: a commit is
durable against a crash of the process (which is what we promise); only a power cut can lose the last
few commits. Several tuning jobs, in several processes, can share one file; SQLite's locking serialises
their short writes (``busy_timeout`` 30 s).

Records are JSON text, never pickles, so a store file can be read by any SQLite client.

One process at a time runs a tuning job: :meth:`SQLiteStore.lock_tuning_job` takes an exclusive
lease, an OS lock the kernel frees when its holder dies (even by ``kill -9``). The lease code lives
here, beside the store it guards, which takes this module past ~400 lines.
"""

from __future__ import annotations

import errno
import hashlib
import itertools
import json
import os
import socket
import sqlite3
import threading
import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

try:
    import fcntl as _fcntl
except ImportError:  # pragma: no cover - Windows: leases are checked within the process only
    _fcntl = None  # type: ignore[assignment]

from amtlib.errors import StoreError, ValidationError, describe_value
from amtlib.records import Report, TrainingJob

SCHEMA_VERSION = 1

_SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS tuning_jobs (
    name TEXT PRIMARY KEY,
    config TEXT NOT NULL,
    state TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS training_jobs (
    tuning_job TEXT NOT NULL,
    idx INTEGER NOT NULL,
    record TEXT NOT NULL,
    PRIMARY KEY (tuning_job, idx)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS reports (
    tuning_job TEXT NOT NULL,
    idx INTEGER NOT NULL,
    seq INTEGER NOT NULL,
    record TEXT NOT NULL,
    PRIMARY KEY (tuning_job, idx, seq)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS leases (tuning_job TEXT PRIMARY KEY, holder TEXT NOT NULL);
"""

# Stores written before leases existed lack the table; it is created on the first lease.
_LEASES_TABLE = (
    "CREATE TABLE IF NOT EXISTS leases (tuning_job TEXT PRIMARY KEY, holder TEXT NOT NULL)"
)


def _dumps(obj: Any) -> str:
    return json.dumps(obj, separators=(",", ":"), allow_nan=False)


class SQLiteStore:
    """A SQLite file (or ``":memory:"``) holding tuning jobs as JSON records.

    Args:
        path: file to create or open. ``":memory:"`` keeps everything in this process only.

    Example:
        >>> store = SQLiteStore(":memory:")
        >>> store.list_tuning_jobs()
        []
    """

    def __init__(self, path: str | os.PathLike[str] = "amtlib.db", *, create: bool = True) -> None:
        if not isinstance(path, (str, os.PathLike)):
            raise ValidationError(
                f"store must be a path to a SQLite file, ':memory:' or a SQLiteStore. Got "
                f"{describe_value(path)} instead. Fix: pass store='amtlib.db'."
            )
        self.path = str(path)
        if self.path != ":memory:":
            # SQLite does not expand "~": expand it once, and use the expanded path everywhere.
            self.path = os.path.expanduser(self.path)
            if not create and not os.path.isfile(self.path):
                raise StoreError(
                    f"store {self.path!r} does not exist (looked for {str(Path(self.path).resolve())!r}). "
                    "Fix: pass the store file that fit() wrote to, e.g. store='amtlib.db', "
                    "relative to the current folder or as an absolute path."
                )
            parent = Path(self.path).resolve().parent
            if not parent.is_dir():
                raise ValidationError(
                    f"store: the folder of {self.path!r} does not exist. Fix: create {str(parent)!r} "
                    "first, or pick a path in an existing folder."
                )
        self._lock = threading.Lock()
        self._lease_key = (
            f":memory:{next(_MEMORY_STORES)}"
            if self.path == ":memory:"
            else os.path.realpath(self.path) + ".lock"
        )
        self._leases: list[TuningJobLease] = []
        self._conn = self._connect(create)
        try:
            self._set_up(create)
        except BaseException:
            self._conn.close()
            raise

    def _connect(self, create: bool) -> sqlite3.Connection:
        try:
            if create or self.path == ":memory:":
                return sqlite3.connect(
                    self.path, timeout=30.0, isolation_level=None, check_same_thread=False
                )
            # mode=rw: never create the file, even if it vanished since it was checked.
            return sqlite3.connect(
                Path(self.path).resolve().as_uri() + "?mode=rw",
                timeout=30.0,
                isolation_level=None,
                check_same_thread=False,
                uri=True,
            )
        except sqlite3.DatabaseError as exc:
            raise self._unreadable(exc) from exc

    def _set_up(self, create: bool) -> None:
        try:
            self._conn.execute("PRAGMA busy_timeout=30000")
            if not create and not self._is_amtlib_store():
                if self.path == ":memory:":
                    raise StoreError(
                        "store ':memory:' is new and empty each time it is opened: a tuning job "
                        "run with store=':memory:' is gone once fit() returns (use the TuningJob "
                        "it returns). Fix: pass a file path as the store to keep tuning jobs."
                    )
                empty = self._conn.execute("SELECT 1 FROM sqlite_master").fetchone() is None
                raise StoreError(
                    f"store {self.path!r} is an empty SQLite file: no tuning job was ever written "
                    "to it (a tuner stopped while creating it leaves one). Fix: run fit() with it "
                    "as the store, or pass the store file that fit() wrote to."
                    if empty
                    else f"store {self.path!r} is a SQLite file but not an amtlib store (it has no "
                    "amtlib tables). Fix: pass the store file that fit() wrote to."
                )
            _retry_while_locked(lambda: self._conn.execute("PRAGMA journal_mode=WAL"))
            self._conn.execute("PRAGMA synchronous=NORMAL")
            if create:
                with self._transaction():
                    for statement in _SCHEMA.split(";"):
                        if statement.strip():
                            self._conn.execute(statement)
                    self._check_schema_version()
            else:  # reading only: an older store's missing tables are added when first needed
                with self._lock:
                    self._check_schema_version()
        except sqlite3.DatabaseError as exc:
            raise self._unreadable(exc) from exc

    def _unreadable(self, exc: sqlite3.DatabaseError) -> StoreError:
        return StoreError(
            f"store {self.path!r} cannot be opened as a SQLite database: {exc}. "
            "Fix: point store= at an amtlib store file or a new path."
        )

    def _is_amtlib_store(self) -> bool:
        row = self._conn.execute(
            "SELECT 1 FROM sqlite_master WHERE type='table' AND name='meta'"
        ).fetchone()
        return row is not None

    def _check_schema_version(self) -> None:
        row = self._conn.execute("SELECT value FROM meta WHERE key='schema_version'").fetchone()
        if row is None:
            self._conn.execute(
                "INSERT INTO meta VALUES ('schema_version', ?)", (str(SCHEMA_VERSION),)
            )
        elif int(row[0]) > SCHEMA_VERSION:
            raise StoreError(
                f"store {self.path!r} was written by a newer amtlib (schema {row[0]}, this "
                f"one reads {SCHEMA_VERSION}). Fix: upgrade amtlib."
            )

    def __repr__(self) -> str:
        return f"SQLiteStore({self.path!r})"

    def __enter__(self) -> SQLiteStore:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        """Release the leases this store still holds, then close the database."""
        for lease in list(self._leases):
            lease.release()
        with self._lock:
            self._conn.close()

    def _transaction(self) -> _Transaction:
        return _Transaction(self._conn, self._lock)

    # -- tuning jobs -------------------------------------------------------------------------

    def list_tuning_jobs(self) -> list[str]:
        with self._lock:
            rows = self._conn.execute("SELECT name FROM tuning_jobs ORDER BY name").fetchall()
        return [r[0] for r in rows]

    def create_tuning_job(
        self, name: str, config: Mapping[str, Any], state: Mapping[str, Any]
    ) -> bool:
        """Insert a tuning job unless one of that name exists. True when it was created."""
        with self._transaction():
            cur = self._conn.execute(
                "INSERT OR IGNORE INTO tuning_jobs VALUES (?, ?, ?)",
                (name, _dumps(config), _dumps(state)),
            )
            return cur.rowcount == 1

    def get_tuning_job(self, name: str) -> tuple[dict[str, Any], dict[str, Any]]:
        """``(config, state)`` of a tuning job; :class:`StoreError` when there is none."""
        with self._lock:
            row = self._conn.execute(
                "SELECT config, state FROM tuning_jobs WHERE name=?", (name,)
            ).fetchone()
        if row is None:
            known = self.list_tuning_jobs()
            raise StoreError(
                f"store {self.path!r} has no tuning job named {name!r} (it has {known}). "
                "Fix: check job_name and store."
            )
        return json.loads(row[0]), json.loads(row[1])

    def set_tuning_job_state(self, name: str, state: Mapping[str, Any]) -> None:
        with self._transaction():
            self._conn.execute("UPDATE tuning_jobs SET state=? WHERE name=?", (_dumps(state), name))

    def set_tuning_job_config(self, name: str, config: Mapping[str, Any]) -> None:
        with self._transaction():
            self._conn.execute(
                "UPDATE tuning_jobs SET config=? WHERE name=?", (_dumps(config), name)
            )

    # -- leases ------------------------------------------------------------------------------

    def lock_tuning_job(self, name: str) -> TuningJobLease:
        """Take the exclusive lease on tuning job ``name``: only its holder may run the job.

        Use it as a context manager (``with store.lock_tuning_job("my-job"): ...``) or call
        ``release()`` on what it returns; closing the store releases it too.

        The lease is an OS lock (``fcntl.lockf``) on one byte of ``<store>.lock``, chosen by the
        SHA-256 of the job's name, so the kernel frees it the moment its holder process dies, even by
        ``kill -9``: a crashed tuner never leaves a job locked. Its holder (pid, host, since when) is
        recorded in the store's ``leases`` table for the error message. Within a process the leases
        are also kept in a registry, because OS locks do not tell one thread from another. An
        in-memory store takes no OS lock. On platforms without ``fcntl`` (Windows) only the
        in-process check is made: two processes can then run the same job at once.

        Raises:
            StoreError: another process or thread holds the lease on this tuning job.
        """
        if not isinstance(name, str) or not name:
            raise ValidationError(
                "The 'name' parameter of SQLiteStore.lock_tuning_job must be a non-empty str. Got "
                f"{describe_value(name)} instead. Fix: pass the tuning job's job_name."
            )
        holder = _Holder(
            os.getpid(), socket.gethostname(), time.time(), threading.current_thread().name
        )
        _acquire(self._lease_key, name, holder, os_lock=self.path != ":memory:", store=self)
        lease = TuningJobLease(self, name, holder)
        try:
            with self._transaction():
                self._conn.execute(_LEASES_TABLE)
                self._conn.execute(
                    "INSERT OR REPLACE INTO leases VALUES (?, ?)", (name, _dumps(holder.to_dict()))
                )
        except BaseException:
            _release(self._lease_key, name)
            raise
        self._leases.append(lease)
        return lease

    def _lease_holder(self, name: str) -> _Holder | None:
        """Who the ``leases`` table says holds a lease (``None`` when nobody is recorded)."""
        try:
            with self._lock:
                row = self._conn.execute(
                    "SELECT holder FROM leases WHERE tuning_job=?", (name,)
                ).fetchone()
        except sqlite3.Error:
            return None
        return None if row is None else _Holder.from_dict(json.loads(row[0]))

    def _end_lease(self, lease: TuningJobLease) -> None:
        try:
            # Forget the holder while still holding the lock, so a newer holder's row is never lost.
            with self._transaction():
                self._conn.execute(
                    "DELETE FROM leases WHERE tuning_job=? AND holder=?",
                    (lease.name, _dumps(lease.holder.to_dict())),
                )
        except sqlite3.Error:
            pass  # the store is closed or read-only: the row is stale, and harmless
        finally:
            _release(self._lease_key, lease.name)
            if lease in self._leases:
                self._leases.remove(lease)

    # -- training jobs -----------------------------------------------------------------------

    def put_training_job(self, tuning_job: str, job: TrainingJob) -> None:
        """Insert or replace a training job's record (reports are kept apart), committed on return."""
        with self._transaction():
            self._write_job(tuning_job, job)

    def _write_job(self, tuning_job: str, job: TrainingJob) -> None:
        """The record's row, inside the caller's transaction."""
        self._conn.execute(
            "INSERT OR REPLACE INTO training_jobs VALUES (?, ?, ?)",
            (tuning_job, job.index, _dumps(job.to_dict(with_reports=False))),
        )

    def add_report(self, tuning_job: str, index: int, seq: int, report: Report) -> None:
        """Append one intermediate report of a training job, committed on return."""
        with self._transaction():
            self._conn.execute(
                "INSERT OR REPLACE INTO reports VALUES (?, ?, ?, ?)",
                (tuning_job, index, seq, _dumps(report.to_dict())),
            )

    def delete_reports(self, tuning_job: str, index: int, job: TrainingJob | None = None) -> None:
        """Forget a training job's reports (it is re-run from the start after an interruption),
        and write ``job`` as its record in the same transaction when given."""
        with self._transaction():
            self._conn.execute(
                "DELETE FROM reports WHERE tuning_job=? AND idx=?", (tuning_job, index)
            )
            if job is not None:
                self._write_job(tuning_job, job)

    def get_training_jobs(self, tuning_job: str) -> list[TrainingJob]:
        """Every training job of a tuning job, in index order, with its reports."""
        with self._lock:
            rows = self._conn.execute(
                "SELECT record FROM training_jobs WHERE tuning_job=? ORDER BY idx", (tuning_job,)
            ).fetchall()
            report_rows = self._conn.execute(
                "SELECT idx, record FROM reports WHERE tuning_job=? ORDER BY idx, seq",
                (tuning_job,),
            ).fetchall()
        reports: dict[int, list[Report]] = {}
        for idx, rec in report_rows:
            reports.setdefault(idx, []).append(Report.from_dict(json.loads(rec)))
        jobs = []
        for (rec,) in rows:
            job = TrainingJob.from_dict(json.loads(rec))
            if job.index in reports:
                job = job.replace(reports=tuple(reports[job.index]))
            jobs.append(job)
        return jobs


class TuningJobLease:
    """The exclusive right to run one tuning job, from :meth:`SQLiteStore.lock_tuning_job`.

    A context manager; ``release()`` may be called more than once.
    """

    def __init__(self, store: SQLiteStore, name: str, holder: _Holder) -> None:
        self.store, self.name, self.holder = store, name, holder
        self._released = False

    def __repr__(self) -> str:
        state = "released" if self._released else "held"
        return f"TuningJobLease({self.name!r}, {state}, store={self.store.path!r})"

    def __enter__(self) -> TuningJobLease:
        return self

    def __exit__(self, *exc: object) -> None:
        self.release()

    def release(self) -> None:
        if not self._released:
            self._released = True
            self.store._end_lease(self)


@dataclass(frozen=True)
class _Holder:
    pid: int
    host: str
    since: float
    thread: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return {"pid": self.pid, "host": self.host, "since": self.since}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> _Holder:
        return cls(int(data["pid"]), str(data["host"]), float(data["since"]))

    def describe(self) -> str:
        since = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(self.since))
        who = f"process {self.pid}"
        if self.thread is not None:
            who += f" (this process, thread {self.thread!r})"
        return f"{who} on {self.host} since {since}"


class _LockFile:
    """This process's open ``<store>.lock`` and the leases it holds through it.

    POSIX locks belong to the process, and closing *any* descriptor of the file drops all of them:
    so each lock file is opened once per process, and closed only when its last lease ends.
    """

    def __init__(self, fd: int | None) -> None:
        self.fd = fd
        self.held: dict[str, _Holder] = {}


_HELD_ERRNOS = frozenset({errno.EACCES, errno.EAGAIN})
_MEMORY_STORES = itertools.count()
_REGISTRY_LOCK = threading.Lock()
_REGISTRY: dict[str, _LockFile] = {}  # lease key (lock file path) -> open lock file
_REGISTRY_PID = [os.getpid()]  # a forked child inherits the registry, but not the OS locks


def _lease_offset(name: str) -> int:
    """The byte of the lock file that stands for a tuning job: stable across processes and runs
    (unlike ``hash()``), below 2**62 so that every platform's ``off_t`` holds it."""
    return int.from_bytes(hashlib.sha256(name.encode("utf-8")).digest()[:8], "big") >> 2


def _acquire(key: str, name: str, holder: _Holder, *, os_lock: bool, store: SQLiteStore) -> None:
    with _REGISTRY_LOCK:
        if _REGISTRY_PID[0] != os.getpid():
            _REGISTRY.clear()
            _REGISTRY_PID[0] = os.getpid()
        entry = _REGISTRY.get(key)
        if entry is not None and name in entry.held:
            _refuse(name, entry.held[name].describe())
        if entry is None:
            fd = None
            if os_lock and _fcntl is not None:
                try:
                    fd = os.open(key, os.O_RDWR | os.O_CREAT, 0o666)
                except OSError as exc:
                    raise StoreError(
                        f"store {store.path!r}: cannot open its lock file {key!r} ({exc}). Fix: "
                        "make the store's folder writable, or put the store in a writable folder."
                    ) from exc
            entry = _REGISTRY[key] = _LockFile(fd)
        failure: OSError | None = None
        if entry.fd is not None:
            try:
                _fcntl.lockf(entry.fd, _fcntl.LOCK_EX | _fcntl.LOCK_NB, 1, _lease_offset(name))
            except OSError as exc:
                failure = exc
                if not entry.held:  # no other lease of this process uses the file
                    os.close(entry.fd)
                    del _REGISTRY[key]
        if failure is None:
            entry.held[name] = holder
            return
    other = store._lease_holder(name)
    if failure.errno in _HELD_ERRNOS:
        _refuse(name, "another process" if other is None else other.describe())
    raise StoreError(
        f"store {store.path!r}: cannot lock tuning job {name!r} in {key!r} ({failure}). Fix: put "
        "the store on a local disk (network file systems may not support locks)."
    ) from failure


def _release(key: str, name: str) -> None:
    with _REGISTRY_LOCK:
        entry = _REGISTRY.get(key)
        if entry is None or entry.held.pop(name, None) is None:
            return
        if entry.fd is not None:
            try:
                _fcntl.lockf(entry.fd, _fcntl.LOCK_UN, 1, _lease_offset(name))
            finally:
                if not entry.held:
                    os.close(entry.fd)
        if not entry.held:
            del _REGISTRY[key]


def _refuse(name: str, holder: str) -> None:
    raise StoreError(
        f"tuning job {name!r} is already being run by {holder}. Fix: wait for it to finish, or "
        "use another job_name."
    )


def _retry_while_locked(action: Any, seconds: float = 30.0) -> Any:
    """Run ``action``, retrying while SQLite says the database is locked.

    Switching to WAL takes an exclusive lock and, unlike ordinary statements, may fail at once with
    "database is locked" rather than wait, when another process is creating the same file.
    """
    deadline = time.monotonic() + seconds
    delay = 0.005
    while True:
        try:
            return action()
        except sqlite3.OperationalError as exc:
            if "locked" not in str(exc) or time.monotonic() > deadline:
                raise
            time.sleep(delay)
            delay = min(delay * 2, 0.2)


class _Transaction:
    """``BEGIN IMMEDIATE`` ... ``COMMIT`` under the store's thread lock; rollback on error."""

    def __init__(self, conn: sqlite3.Connection, lock: threading.Lock) -> None:
        self._conn, self._lock = conn, lock

    def __enter__(self) -> None:
        self._lock.acquire()
        try:
            self._conn.execute("BEGIN IMMEDIATE")
        except BaseException:
            self._lock.release()
            raise

    def __exit__(self, exc_type: object, exc: object, tb: object) -> None:
        try:
            self._conn.execute("ROLLBACK" if exc_type else "COMMIT")
        finally:
            self._lock.release()


def open_store(
    store: str | os.PathLike[str] | SQLiteStore | None, *, create: bool = True
) -> tuple[SQLiteStore, bool]:
    """``(store, owned)``: a path opens a new store that the caller must close.

    ``create=False`` (for reading) refuses a path where no amtlib store exists, and creates nothing.
    """
    if isinstance(store, SQLiteStore):
        return store, False
    return SQLiteStore("amtlib.db" if store is None else store, create=create), True
