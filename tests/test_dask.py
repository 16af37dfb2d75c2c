"""The same tuning job on a real dask.distributed LocalCluster with worker processes."""

from __future__ import annotations

import pytest

from amtlib import CategoricalParameter, ContinuousParameter, TrainingJobStatus, Tuner

distributed = pytest.importorskip("distributed")  # installed by the dev extras, so this runs in CI


@pytest.fixture(scope="module")
def client():
    with (
        distributed.LocalCluster(
            n_workers=2, threads_per_worker=1, processes=True, dashboard_address=None
        ) as cluster,
        distributed.Client(cluster) as c,
    ):
        yield c


def test_tuning_job_on_dask_matches_the_inline_sequence(client, tmp_path):
    def train(hp):  # a closure: dask ships it by value to the worker processes
        import os

        if hp["x"] > 0.8:
            raise ValueError("too large")
        return {"loss": (hp["x"] - 0.3) ** 2, "pid": os.getpid()}

    ranges = {"x": ContinuousParameter(0.0, 1.0), "opt": CategoricalParameter(["a", "b"])}
    common = dict(
        objective_type="Minimize",
        strategy="Random",
        max_jobs=16,
        random_seed=3,
        store=str(tmp_path / "s.db"),
    )
    job = Tuner(
        train,
        "loss",
        ranges,
        max_parallel_jobs=2,
        executor=client.get_executor(),
        job_name="dask",
        **common,
    ).fit()
    inline = Tuner(train, "loss", ranges, executor="inline", job_name="inline", **common).fit()
    assert [j.hyperparameters for j in job.training_jobs] == [
        j.hyperparameters for j in inline.training_jobs
    ]
    pids = {j.metrics["pid"] for j in job.training_jobs if j.status is TrainingJobStatus.COMPLETED}
    import os

    assert os.getpid() not in pids  # ran in the worker processes
    failed = [j for j in job.training_jobs if j.hyperparameters["x"] > 0.8]
    assert all(
        j.status is TrainingJobStatus.FAILED and "too large" in j.failure_reason for j in failed
    )
    assert job.best_training_job.objective_value == inline.best_training_job.objective_value


def test_the_scheduler_host_is_found_from_a_client_or_its_executor(client):
    # With report_host="0.0.0.0", the address advertised to workers is that of the interface that
    # routes to the scheduler: both a Client and client.get_executor() must lead to it.
    from amtlib._run import _scheduler_host

    host = client.scheduler.address.split("://", 1)[1].rsplit(":", 1)[0]
    assert _scheduler_host(client) == host
    assert _scheduler_host(client.get_executor()) == host
