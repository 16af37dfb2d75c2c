"""Store audit: leases on tuning jobs, reading never creates a store, "~" paths, results columns."""

from __future__ import annotations

import os
import signal
import socket
import sqlite3
import subprocess
import sys
import textwrap
import threading

import numpy as np
import pytest

import amtlib.store
from amtlib import (
    ContinuousParameter,
    SQLiteStore,
    StoreError,
    TrainingJobStatus,
    Tuner,
    TuningJob,
    ValidationError,
)
from amtlib.records import ObjectiveStatus, TrainingJob

pytestmark = pytest.mark.skipif(sys.platform == "win32", reason="OS leases need fcntl")

# Tries to take the lease on each job named on the command line; prints "locked <job>" or
# "refused <job>: <message>" for each, then (with --hold) keeps the leases until killed.
LOCKER = textwrap.dedent(
    """
    import sys, time
    from amtlib import SQLiteStore, StoreError

    store = SQLiteStore(sys.argv[1])
    hold = "--hold" in sys.argv
    for name in [a for a in sys.argv[2:] if a != "--hold"]:
        try:
            store.lock_tuning_job(name)
            print("locked", name, flush=True)
        except StoreError as exc:
            print("refused", name + ":", exc, flush=True)
    if hold:
        print("holding", flush=True)
        time.sleep(600)
    """
)


@pytest.fixture
def locker(tmp_path):
    script = tmp_path / "locker.py"
    script.write_text(LOCKER)

    def run(db, *names):
        out = subprocess.run(
            [sys.executable, str(script), str(db), *names],
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert out.returncode == 0, out.stderr
        # {"a": "locked", "b": "refused"}
        return {line.split()[1].rstrip(":"): line.split()[0] for line in out.stdout.splitlines()}

    return script, run


def test_another_process_is_refused_a_job_this_process_runs(tmp_path, locker):
    _, run = locker
    db = tmp_path / "s.db"
    store = SQLiteStore(db)
    with store.lock_tuning_job("a"):
        out = subprocess.run(
            [sys.executable, str(locker[0]), str(db), "a", "b"],
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert out.returncode == 0, out.stderr
        refused, locked = out.stdout.splitlines()
        assert refused.startswith("refused a:")
        assert "tuning job 'a' is already being run by process" in refused
        assert f"process {os.getpid()} on {socket.gethostname()} since " in refused
        assert "Fix: wait for it to finish, or use another job_name" in refused
        assert locked == "locked b"  # another job of the same store is free
    # Released: another process takes it.
    assert run(db, "a") == {"a": "locked"}
    store.close()


def test_a_lease_is_freed_when_its_holder_is_killed(tmp_path, locker):
    script, _ = locker
    db = tmp_path / "s.db"
    SQLiteStore(db).close()
    proc = subprocess.Popen(
        [sys.executable, str(script), str(db), "a", "--hold"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )
    try:
        assert proc.stdout is not None
        assert proc.stdout.readline().strip() == "locked a"
        assert proc.stdout.readline().strip() == "holding"
        store = SQLiteStore(db)
        with pytest.raises(StoreError, match=rf"already being run by process {proc.pid} on "):
            store.lock_tuning_job("a")
        with store.lock_tuning_job("b"):  # different jobs lock concurrently
            pass
    finally:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.communicate(timeout=60)
    # The kernel freed the dead holder's lock; its stale record does not block anyone.
    with store.lock_tuning_job("a") as lease:
        assert "held" in repr(lease)
        holder = store._lease_holder("a")
        assert holder is not None and holder.pid == os.getpid()
    assert store._lease_holder("a") is None
    store.close()


def test_one_process_refuses_the_same_job_twice_but_runs_different_jobs(tmp_path):
    db = tmp_path / "s.db"
    first, second = SQLiteStore(db), SQLiteStore(str(db))  # two stores on one file, as two fits do
    lease = first.lock_tuning_job("a")
    with pytest.raises(StoreError, match=r"by process \d+ \(this process, thread 'MainThread'\)"):
        second.lock_tuning_job("a")
    with pytest.raises(StoreError, match="already being run"):
        first.lock_tuning_job("a")

    errors: list[Exception] = []

    def other_thread():
        try:
            second.lock_tuning_job("a")
        except StoreError as exc:
            errors.append(exc)

    t = threading.Thread(target=other_thread)
    t.start()
    t.join()
    assert len(errors) == 1
    b = second.lock_tuning_job("b")
    b.release()
    b.release()  # idempotent
    lease.release()
    second.lock_tuning_job("a").release()
    first.close()
    second.close()


def test_releasing_one_lease_keeps_the_others_of_the_process(tmp_path, locker):
    # POSIX locks belong to the process and closing any descriptor of the file drops them all: ending
    # one lease, or closing another store on the same file, must not free the others.
    _, run = locker
    db = tmp_path / "s.db"
    first, second = SQLiteStore(db), SQLiteStore(db)
    first.lock_tuning_job("x")
    second.lock_tuning_job("y").release()
    second.lock_tuning_job("z")
    second.close()  # releases z
    assert run(db, "x", "z") == {"x": "refused", "z": "locked"}
    first.close()  # releases x
    assert run(db, "x") == {"x": "locked"}


def test_an_in_memory_store_needs_no_lock_file(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    store, other = SQLiteStore(":memory:"), SQLiteStore(":memory:")
    with store.lock_tuning_job("a"):
        with pytest.raises(StoreError, match="already being run"):
            store.lock_tuning_job("a")
        other.lock_tuning_job("a").release()  # another in-memory store is another database
    assert list(tmp_path.iterdir()) == []
    store.close()
    other.close()


def test_without_fcntl_only_the_process_is_checked(tmp_path, monkeypatch, locker):
    # Windows has no fcntl: leases still refuse a second thread, but not another process.
    _, run = locker
    monkeypatch.setattr(amtlib.store, "_fcntl", None)
    db = tmp_path / "s.db"
    store = SQLiteStore(db)
    with store.lock_tuning_job("a"):
        with pytest.raises(StoreError, match="already being run"):
            store.lock_tuning_job("a")
        assert not (tmp_path / "s.db.lock").exists()
        assert run(db, "a") == {"a": "locked"}
    store.close()


def test_lease_names_are_validated():
    store = SQLiteStore(":memory:")
    with pytest.raises(ValidationError, match=r"'name'.*non-empty str.*Got 3 \(int\).*Fix"):
        store.lock_tuning_job(3)  # type: ignore[arg-type]
    store.close()


def test_the_lease_byte_is_stable():
    # sha256, not hash(): every process and every run picks the same byte for a job.
    assert amtlib.store._lease_offset("my-job") == amtlib.store._lease_offset("my-job")
    assert amtlib.store._lease_offset("my-job") != amtlib.store._lease_offset("my-job2")
    assert 0 <= amtlib.store._lease_offset("my-job") < 2**62
    assert amtlib.store._lease_offset("a") == 0x32A5E044B286EF72  # sha256("a")[:8] >> 2


# -- reading never creates a store -----------------------------------------------------------------


def test_loading_from_a_missing_store_creates_nothing(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(StoreError, match=r"store 'nope.db' does not exist.*Fix: pass the store"):
        TuningJob.load("j", store="nope.db")
    with pytest.raises(StoreError, match=r"'amtlib\.db' does not exist"):
        TuningJob.load("j")
    with pytest.raises(StoreError, match="does not exist"):
        TuningJob.load("j", store=tmp_path / "no" / "folder.db")
    assert list(tmp_path.iterdir()) == []


def test_loading_from_a_file_that_is_not_a_store_changes_nothing(tmp_path):
    other = tmp_path / "other.db"
    with sqlite3.connect(other) as raw:
        raw.execute("CREATE TABLE t (x)")
    raw.close()
    before = other.read_bytes()
    with pytest.raises(StoreError, match=r"not an amtlib store.*Fix"):
        TuningJob.load("j", store=other)
    assert other.read_bytes() == before
    empty = tmp_path / "empty.db"
    empty.touch()
    with pytest.raises(StoreError, match=r"an empty SQLite file: no tuning job.*Fix: run fit"):
        TuningJob.load("j", store=empty)
    assert empty.read_bytes() == b""
    # What a tuner killed while creating its store leaves: WAL mode set, no table yet (found by a
    # crash fuzz; it was called "not an amtlib store", though fit() can use it).
    interrupted = tmp_path / "interrupted.db"
    with sqlite3.connect(interrupted) as raw:
        raw.execute("PRAGMA journal_mode=WAL")
    raw.close()
    with pytest.raises(StoreError, match=r"an empty SQLite file: no tuning job.*Fix: run fit"):
        TuningJob.load("j", store=interrupted)
    with pytest.raises(StoreError, match=r"':memory:' is new and empty.*Fix: pass a file path"):
        TuningJob.load("j", store=":memory:")
    garbage = tmp_path / "garbage.db"
    garbage.write_bytes(b"not a database" * 100)
    with pytest.raises(StoreError, match="cannot be opened"):
        TuningJob.load("j", store=garbage)


def test_loading_an_existing_store_still_works(tmp_path):
    store = SQLiteStore(tmp_path / "s.db")
    store.create_tuning_job("j", {"a": 1}, {"status": "Completed"})
    store.close()
    job = TuningJob.load("j", store=tmp_path / "s.db")
    assert job.config == {"a": 1} and job.training_jobs == []
    with pytest.raises(StoreError, match="no tuning job named 'k'"):
        TuningJob.load("k", store=tmp_path / "s.db")


# -- "~" in store paths ----------------------------------------------------------------------------


def test_a_store_path_with_a_tilde_is_in_the_home_folder(tmp_path, monkeypatch):
    home, cwd = tmp_path / "home", tmp_path / "cwd"
    home.mkdir()
    cwd.mkdir()
    monkeypatch.setenv("HOME", str(home))
    monkeypatch.chdir(cwd)
    store = SQLiteStore("~/s.db")
    assert store.path == str(home / "s.db")
    with store.lock_tuning_job("a"):
        assert (home / "s.db.lock").exists()
    store.close()
    assert (home / "s.db").exists()
    tuner = Tuner(
        lambda hp: {"loss": hp["x"]},
        objective_metric_name="loss",
        hyperparameter_ranges={"x": ContinuousParameter(0.0, 1.0)},
        objective_type="Minimize",
        max_jobs=2,
        random_seed=0,
        job_name="t",
        store="~/s.db",
        executor="inline",
    )
    tuner.fit()
    assert len(TuningJob.load("t", store="~/s.db").training_jobs) == 2
    assert list(cwd.iterdir()) == []  # no literal "~" folder or file
    with pytest.raises(ValidationError, match="folder of"):
        SQLiteStore("~/missing/s.db")


# -- results ---------------------------------------------------------------------------------------


def _tuning_job() -> TuningJob:
    config = {
        "ranges": {"x": {"Type": "Continuous", "MinValue": 0.0, "MaxValue": 1.0}},
        "objective": {"MetricName": "loss", "Type": "Minimize"},
    }
    done = dict(status=TrainingJobStatus.COMPLETED, objective_status=ObjectiveStatus.SUCCEEDED)
    stopped = dict(status=TrainingJobStatus.STOPPED, objective_status=ObjectiveStatus.SUCCEEDED)
    jobs = [
        TrainingJob(0, "j-001", {"x": 0.3}, objective_value=0.3, **done),
        TrainingJob(
            1,
            "j-002",
            {"x": 0.9},
            objective_value=0.9,
            stop_reason={"action": "stop", "rule": "median", "step": 4, "median": 0.5},
            **stopped,
        ),
        TrainingJob(
            2,
            "j-003",
            {"x": 0.1},
            objective_value=0.1,
            stop_reason={"action": "stop", "rule": "tuner", "why": "MaxRuntimeInSeconds reached"},
            **stopped,
        ),
    ]
    return TuningJob("j", config, {"status": "Completed"}, jobs)


def test_records_say_which_rule_stopped_a_job_and_when():
    records = _tuning_job().to_records()
    assert [(r["StopRule"], r["StopStep"]) for r in records] == [
        (None, None),
        ("median", 4),
        ("tuner", None),
    ]


@pytest.mark.parametrize("top", [-1, 0, 2.5, True, "3"])
def test_leaderboard_rejects_a_top_that_is_not_a_positive_int(top):
    with pytest.raises(ValidationError, match=r"'top'.*positive int or None.*Got .*Fix: pass"):
        _tuning_job().leaderboard(top=top)


def test_leaderboard_top():
    job = _tuning_job()
    assert len(job.leaderboard(top=None).splitlines()) == 2 + 3
    assert len(job.leaderboard(top=3).splitlines()) == 2 + 3
    assert len(job.leaderboard(top=10).splitlines()) == 2 + 3
    lines = job.leaderboard(top=1).splitlines()
    assert len(lines) == 3 and "j-003" in lines[2]
    assert job.leaderboard(top=np.int64(1)) == job.leaderboard(top=1)  # as the Tuner's limits
