"""The durable store: tuning jobs, training jobs and reports as JSON rows in SQLite.

Only the tuner process writes; workers never touch the store. Each write is its own committed
transaction, so a training job recorded as finished survives ``kill -9`` of the tuner the instant
``put_training_job`` returns. The database runs in WAL mode with ``synchronous=NORMAL``: a commit is
durable against a crash of the process (which is what we promise); only a power cut can lose the last
few commits. Several tuning jobs, in several processes, can share one file; SQLite's locking serialises
their short writes (``busy_timeout`` 30 s).

Records are JSON text, never pickles, so a store file can be read by any SQLite client.
"""

from __future__ import annotations

import json
import os
import sqlite3
import threading
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

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
"""


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

    def __init__(self, path: str | os.PathLike[str] = "amtlib.db") -> None:
        if not isinstance(path, (str, os.PathLike)):
            raise ValidationError(
                f"store must be a path to a SQLite file, ':memory:' or a SQLiteStore. Got "
                f"{describe_value(path)} instead. Fix: pass store='amtlib.db'."
            )
        self.path = str(path)
        if self.path != ":memory:":
            parent = Path(self.path).expanduser().resolve().parent
            if not parent.is_dir():
                raise ValidationError(
                    f"store: the folder of {self.path!r} does not exist. Fix: create {str(parent)!r} "
                    "first, or pick a path in an existing folder."
                )
        self._lock = threading.Lock()
        try:
            self._conn = sqlite3.connect(
                self.path, timeout=30.0, isolation_level=None, check_same_thread=False
            )
            self._conn.execute("PRAGMA busy_timeout=30000")
            _retry_while_locked(lambda: self._conn.execute("PRAGMA journal_mode=WAL"))
            self._conn.execute("PRAGMA synchronous=NORMAL")
            with self._transaction():
                for statement in _SCHEMA.split(";"):
                    if statement.strip():
                        self._conn.execute(statement)
                row = self._conn.execute(
                    "SELECT value FROM meta WHERE key='schema_version'"
                ).fetchone()
                if row is None:
                    self._conn.execute(
                        "INSERT INTO meta VALUES ('schema_version', ?)", (str(SCHEMA_VERSION),)
                    )
                elif int(row[0]) > SCHEMA_VERSION:
                    raise StoreError(
                        f"store {self.path!r} was written by a newer amtlib (schema {row[0]}, this "
                        f"one reads {SCHEMA_VERSION}). Fix: upgrade amtlib."
                    )
        except sqlite3.DatabaseError as exc:
            raise StoreError(
                f"store {self.path!r} cannot be opened as a SQLite database: {exc}. "
                "Fix: point store= at an amtlib store file or a new path."
            ) from exc

    def __repr__(self) -> str:
        return f"SQLiteStore({self.path!r})"

    def __enter__(self) -> SQLiteStore:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
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

    # -- training jobs -----------------------------------------------------------------------

    def put_training_job(self, tuning_job: str, job: TrainingJob) -> None:
        """Insert or replace a training job's record (reports are kept apart), committed on return."""
        record = _dumps(job.to_dict(with_reports=False))
        with self._transaction():
            self._conn.execute(
                "INSERT OR REPLACE INTO training_jobs VALUES (?, ?, ?)",
                (tuning_job, job.index, record),
            )

    def add_report(self, tuning_job: str, index: int, seq: int, report: Report) -> None:
        """Append one intermediate report of a training job, committed on return."""
        with self._transaction():
            self._conn.execute(
                "INSERT OR REPLACE INTO reports VALUES (?, ?, ?, ?)",
                (tuning_job, index, seq, _dumps(report.to_dict())),
            )

    def delete_reports(self, tuning_job: str, index: int) -> None:
        """Forget a training job's reports (it is re-run from the start after an interruption)."""
        with self._transaction():
            self._conn.execute(
                "DELETE FROM reports WHERE tuning_job=? AND idx=?", (tuning_job, index)
            )

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


def open_store(store: str | os.PathLike[str] | SQLiteStore | None) -> tuple[SQLiteStore, bool]:
    """``(store, owned)``: a path opens a new store that the caller must close."""
    if isinstance(store, SQLiteStore):
        return store, False
    return SQLiteStore("amtlib.db" if store is None else store), True
