"""The store and resuming: durable records, replay, crashes of the tuner itself (kill -9)."""

from __future__ import annotations

import json
import os
import signal
import sqlite3
import subprocess
import sys
import textwrap
import time
import warnings

import _objectives as obj
import pytest
from _tuners import tuner

from amtlib import (
    ContinuousParameter,
    SQLiteStore,
    StoreError,
    TrainingJobStatus,
    TuningJob,
)
from amtlib.records import ObjectiveStatus, Report, TrainingJob


def make(path, train, **kw):
    defaults = dict(max_jobs=10, job_name="r")
    return tuner(train, **{"store": path, **defaults, **kw})


def test_records_round_trip_through_the_store(tmp_path):
    store = SQLiteStore(tmp_path / "s.db")
    assert store.create_tuning_job("j", {"a": 1}, {"status": "InProgress"})
    assert not store.create_tuning_job("j", {"a": 2}, {})
    job = TrainingJob(
        0,
        "j-001",
        {"x": 0.5, "k": 3, "o": "a", "b": True},
        status=TrainingJobStatus.COMPLETED,
        objective_status=ObjectiveStatus.SUCCEEDED,
        objective_value=1.5,
        metrics={"loss": 1.5, "nan": float("nan")},
        start_time=1.0,
        end_time=2.0,
    )
    store.put_training_job("j", job)
    store.add_report("j", 0, 0, Report(1, {"loss": 2.0}, 1.5))
    store.add_report("j", 0, 1, Report(2, {"loss": 1.5}, 1.7))
    (got,) = store.get_training_jobs("j")
    assert got == job.replace(
        metrics={"loss": 1.5, "nan": None},
        reports=(Report(1, {"loss": 2.0}, 1.5), Report(2, {"loss": 1.5}, 1.7)),
    )
    assert type(got.hyperparameters["k"]) is int and got.hyperparameters["b"] is True
    assert store.get_tuning_job("j") == ({"a": 1}, {"status": "InProgress"})
    store.close()
    # Plain JSON, readable by any SQLite client; never pickles.
    with sqlite3.connect(tmp_path / "s.db") as raw:
        for (text,) in raw.execute("SELECT record FROM training_jobs"):
            assert json.loads(text)["name"] == "j-001"


def test_unknown_tuning_job_and_bad_files_raise_store_errors(tmp_path):
    store = SQLiteStore(":memory:")
    with pytest.raises(StoreError, match="no tuning job named 'nope'"):
        store.get_tuning_job("nope")
    bad = tmp_path / "not.db"
    bad.write_bytes(b"this is not a database" * 100)
    with pytest.raises(StoreError, match="cannot be opened"):
        SQLiteStore(bad)
    newer = tmp_path / "newer.db"
    SQLiteStore(newer).close()
    with sqlite3.connect(newer) as raw:
        raw.execute("UPDATE meta SET value='99' WHERE key='schema_version'")
    with pytest.raises(StoreError, match="newer amtlib"):
        SQLiteStore(newer)
    with pytest.raises(ValueError, match="does not exist"):
        SQLiteStore(tmp_path / "missing" / "s.db")


def test_resume_keeps_finished_jobs_and_completes_the_budget(tmp_path):
    calls = []

    def train(hp):
        calls.append(hp["x"])
        return {"loss": hp["x"]}

    first = make(tmp_path / "s.db", train, max_jobs=5).fit()
    assert len(calls) == 5
    second = make(tmp_path / "s.db", train, max_jobs=10).fit()
    assert len(calls) == 10  # the first five were not run again
    assert second.training_jobs[:5] == first.training_jobs
    assert len(second.training_jobs) == 10
    # Same seed: the same ten configurations as one uninterrupted run.
    whole = make(tmp_path / "s.db", train, job_name="whole").fit()
    assert [j.hyperparameters for j in whole.training_jobs] == [
        j.hyperparameters for j in second.training_jobs
    ]


def test_resume_without_a_seed_reuses_the_recorded_one(tmp_path):
    make(tmp_path / "s.db", obj.plain_float, max_jobs=4, random_seed=None).fit()
    resumed = make(tmp_path / "s.db", obj.plain_float, max_jobs=8, random_seed=None).fit()
    seed = resumed.describe()["HyperParameterTuningJobConfig"]["RandomSeed"]
    again = make(
        tmp_path / "s.db", obj.plain_float, max_jobs=8, random_seed=seed, job_name="b"
    ).fit()
    assert [j.hyperparameters for j in again.training_jobs] == [
        j.hyperparameters for j in resumed.training_jobs
    ]


def test_jobs_running_at_an_interrupt_are_rerun_with_the_same_hyperparameters(tmp_path):
    def crashing(hp):
        if len(crashing.calls) == 3:
            raise KeyboardInterrupt  # the tuner process is interrupted mid-job
        crashing.calls.append(hp["x"])
        return {"loss": hp["x"]}

    crashing.calls = []
    with pytest.raises(KeyboardInterrupt):
        make(tmp_path / "s.db", crashing, max_jobs=6).fit()
    stored = TuningJob.load("r", str(tmp_path / "s.db"))
    assert [j.status for j in stored.training_jobs] == [TrainingJobStatus.COMPLETED] * 3 + [
        TrainingJobStatus.IN_PROGRESS
    ]
    interrupted = stored.training_jobs[3]
    ran = []

    def fine(hp):
        ran.append(hp["x"])
        return {"loss": hp["x"]}

    with pytest.warns(UserWarning, match=r"another training function \(.*fine, not .*crashing\)"):
        done = make(tmp_path / "s.db", fine, max_jobs=6).fit()
    assert len(done.training_jobs) == 6
    assert ran[0] == interrupted.hyperparameters["x"]  # re-run first, same values
    assert done.training_jobs[3].attempt == 2
    assert done.training_jobs[3].hyperparameters == interrupted.hyperparameters
    assert done.training_jobs[:3] == stored.training_jobs[:3]
    assert len(ran) == 3 and all(
        j.status is TrainingJobStatus.COMPLETED for j in done.training_jobs
    )


def test_resume_with_another_configuration_is_refused_naming_what_differs(tmp_path):
    make(tmp_path / "s.db", obj.plain_float, max_jobs=2).fit()
    with pytest.raises(StoreError, match=r"another 'ranges'.*new job_name"):
        make(
            tmp_path / "s.db",
            obj.plain_float,
            hyperparameter_ranges={"x": ContinuousParameter(0, 2)},
        ).fit()
    with pytest.raises(StoreError, match="another 'random_seed'"):
        make(tmp_path / "s.db", obj.plain_float, random_seed=5).fit()
    with pytest.raises(StoreError, match="another 'objective'"):
        make(tmp_path / "s.db", obj.plain_float, objective_type="Maximize").fit()
    # Limits may change.
    assert len(make(tmp_path / "s.db", obj.plain_float, max_jobs=3).fit().training_jobs) == 3


SCRIPT = textwrap.dedent(
    """
    import os, sys, time
    from amtlib import Tuner, ContinuousParameter

    LOG = sys.argv[2]

    def train(hp):                    # defined in __main__, no guard: the worker must cope
        time.sleep(0.03)
        with open(LOG, "a") as f:
            f.write(repr(hp["x"]) + "\\n")
        return {"loss": hp["x"]}

    Tuner(train, "loss", {"x": ContinuousParameter(0.0, 1.0)}, objective_type="Minimize",
          strategy="Random", max_jobs=int(sys.argv[3]), max_parallel_jobs=2, random_seed=0,
          job_name=sys.argv[4], store=sys.argv[1], executor=sys.argv[5] if len(sys.argv) > 5 else None,
          initial_failure_limit=None).fit()
    print("finished")
    """
)


def _completed(db, name):
    try:
        with sqlite3.connect(db, timeout=30) as raw:
            rows = raw.execute(
                "SELECT record FROM training_jobs WHERE tuning_job=?", (name,)
            ).fetchall()
    except sqlite3.OperationalError:
        return {}
    jobs = [json.loads(r[0]) for r in rows]
    return {j["index"]: j for j in jobs if j["status"] == "Completed"}


@pytest.mark.parametrize("kill_after", [0, 3, 9, 17])
def test_kill_9_of_the_tuner_loses_no_finished_job(tmp_path, kill_after):
    script = tmp_path / "tune.py"
    script.write_text(SCRIPT)
    db, log = tmp_path / "s.db", tmp_path / "calls.log"
    proc = subprocess.Popen(
        [sys.executable, str(script), str(db), str(log), "40", "k", "inline"],
        start_new_session=True,
    )
    deadline = time.monotonic() + 60
    seen: dict = {}
    while time.monotonic() < deadline and proc.poll() is None:
        seen = _completed(db, "k")
        if len(seen) >= kill_after:
            break
        time.sleep(0.005)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    after = _completed(db, "k")
    # Every job seen finished before the kill is still there, unchanged.
    for index, record in seen.items():
        assert after[index] == record
    # Resume: the budget completes and no finished job runs again.
    before = len(log.read_text().splitlines()) if log.exists() else 0
    with warnings.catch_warnings():
        # The child's __main__.train and obj.plain_float are two functions: fit() warns when any
        # job of the first ran (it depends on the kill's timing).
        warnings.filterwarnings("ignore", r"Tuning job 'k' resumes with another training function")
        job = make(
            db,
            obj.plain_float,
            job_name="k",
            max_jobs=40,
            max_parallel_jobs=2,
            initial_failure_limit=None,
        ).fit()
    assert len(job.training_jobs) == 40
    assert all(j.status is TrainingJobStatus.COMPLETED for j in job.training_jobs)
    for index, record in after.items():
        assert job.training_jobs[index].to_dict(with_reports=False) == record
    assert before >= len(after)


def test_a_main_script_with_the_default_process_executor_runs_and_resumes(tmp_path):
    script = tmp_path / "tune.py"
    script.write_text(SCRIPT)
    db, log = tmp_path / "s.db", tmp_path / "calls.log"
    out = subprocess.run(
        [sys.executable, str(script), str(db), str(log), "6", "m"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert out.returncode == 0, out.stderr
    assert "finished" in out.stdout
    assert len(log.read_text().splitlines()) == 6
    out = subprocess.run(
        [sys.executable, str(script), str(db), str(log), "9", "m"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert out.returncode == 0, out.stderr
    assert len(log.read_text().splitlines()) == 9  # three more, none repeated
    assert len(TuningJob.load("m", str(db)).training_jobs) == 9


def test_two_processes_tune_two_jobs_in_one_store_at_once(tmp_path):
    script = tmp_path / "tune.py"
    script.write_text(SCRIPT)
    db = tmp_path / "s.db"
    procs = [
        subprocess.Popen(
            [sys.executable, str(script), str(db), str(tmp_path / f"{n}.log"), "25", n, "inline"],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for n in ("one", "two")
    ]
    for p in procs:
        _out, err = p.communicate(timeout=120)
        assert p.returncode == 0, err
    for n in ("one", "two"):
        assert len(_completed(db, n)) == 25
