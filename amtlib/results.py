"""A tuning job's results: its training jobs, the best one, and AMT's describe() shape."""

from __future__ import annotations

import numbers
import os
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from amtlib.errors import ValidationError, describe_value
from amtlib.records import ObjectiveStatus, TrainingJob, TrainingJobStatus
from amtlib.store import SQLiteStore, open_store

if TYPE_CHECKING:
    import pandas


class TuningJob:
    """The state of a tuning job, read from its store: what ``Tuner.fit()`` returns.

    Attributes:
        name: the tuning job's name.
        training_jobs: every training job, in launch order.
        config: the configuration it was created with (JSON-ready).
        state: status, times and what the strategy learned (JSON-ready).

    Example (a tuning job named "my-job" in amtlib.db)::

        job = TuningJob.load("my-job", store="amtlib.db")
        job.best_training_job.hyperparameters   # {'lr': 0.012, 'layers': 3}
    """

    def __init__(
        self,
        name: str,
        config: Mapping[str, Any],
        state: Mapping[str, Any],
        training_jobs: list[TrainingJob],
    ) -> None:
        self.name = name
        self.config = dict(config)
        self.state = dict(state)
        self.training_jobs = list(training_jobs)

    @classmethod
    def load(
        cls, name: str, store: str | os.PathLike[str] | SQLiteStore = "amtlib.db"
    ) -> TuningJob:
        """Read a tuning job from a store (like the SDK's ``HyperparameterTuner.attach``).

        Reading never creates a store: a path where none exists raises :class:`StoreError`.
        """
        db, owned = open_store(store, create=False)
        try:
            config, state = db.get_tuning_job(name)
            return cls(name, config, state, db.get_training_jobs(name))
        finally:
            if owned:
                db.close()

    def __repr__(self) -> str:
        best = self.best_training_job
        shown = "none" if best is None else f"{best.name}={best.objective_value:.6g}"
        return (
            f"TuningJob({self.name!r}, status={self.status!r}, "
            f"training_jobs={len(self.training_jobs)}, best={shown})"
        )

    @property
    def status(self) -> str:
        """``InProgress``, ``Completed``, ``Failed`` or ``Stopped``."""
        return str(self.state.get("status", "InProgress"))

    @property
    def objective_metric_name(self) -> str:
        return str(self.config["objective"]["MetricName"])

    @property
    def objective_type(self) -> str:
        return str(self.config["objective"]["Type"])

    @property
    def best_training_job(self) -> TrainingJob | None:
        """The job with the best objective value (the earliest on ties), or ``None`` if none has one."""
        sign = -1.0 if self.objective_type == "Maximize" else 1.0
        best: TrainingJob | None = None
        for job in self.training_jobs:
            if job.objective_status is not ObjectiveStatus.SUCCEEDED:
                continue
            assert job.objective_value is not None
            if best is None or sign * job.objective_value < sign * best.objective_value:  # type: ignore[operator]
                best = job
        return best

    def describe(self) -> dict[str, Any]:
        """A dict shaped like AMT's ``DescribeHyperParameterTuningJob`` response.

        Hyperparameter values keep their Python types (AMT sends strings). amtlib's extras sit under
        ``AmtlibDetails`` (e.g. what the strategy learned, why the tuning job ended, the full
        ``strategy_config``); ``StrategyConfig`` itself has AMT's ``HyperbandStrategyConfig`` shape.
        """
        counters = {
            "Completed": 0,
            "InProgress": 0,
            "RetryableError": 0,
            "NonRetryableError": 0,
            "Stopped": 0,
        }
        objective = {"Succeeded": 0, "Pending": 0, "Failed": 0}
        for job in self.training_jobs:
            if job.status is TrainingJobStatus.FAILED:
                counters["RetryableError" if job.retryable else "NonRetryableError"] += 1
            else:
                counters[job.status.value] += 1
            objective[job.objective_status.value] += 1
        limits = self.config.get("limits", {})
        out: dict[str, Any] = {
            "HyperParameterTuningJobName": self.name,
            "HyperParameterTuningJobConfig": {
                "Strategy": self.config["strategy"],
                "HyperParameterTuningJobObjective": dict(self.config["objective"]),
                "ResourceLimits": {
                    "MaxNumberOfTrainingJobs": limits.get("max_jobs"),
                    "MaxParallelTrainingJobs": limits.get("max_parallel_jobs"),
                    "MaxRuntimeInSeconds": limits.get("max_runtime_in_seconds"),
                },
                "ParameterRanges": _parameter_ranges(self.config["ranges"]),
                "TrainingJobEarlyStoppingType": self.config.get("early_stopping_type", "Off"),
                "RandomSeed": self.config.get("random_seed"),
            },
            "HyperParameterTuningJobStatus": self.status,
            "CreationTime": self.state.get("creation_time"),
            "HyperParameterTuningEndTime": self.state.get("end_time"),
            "LastModifiedTime": self.state.get("last_modified_time"),
            "TrainingJobStatusCounters": counters,
            "ObjectiveStatusCounters": objective,
            "ConsumedResources": {"RuntimeInSeconds": int(self.state.get("runtime_seconds", 0.0))},
            "StaticHyperParameters": dict(self.config.get("static_hyperparameters", {})),
            "AmtlibDetails": {
                "CompletionReason": self.state.get("completion_reason"),
                "Strategy": self.state.get("strategy", {}),
                "ConsumedSteps": self.consumed_steps(),
            },
        }
        if limits.get("max_runtime_in_seconds") is None:  # AMT omits a limit that is not set
            del out["HyperParameterTuningJobConfig"]["ResourceLimits"]["MaxRuntimeInSeconds"]
        strategy_config = self.config.get("strategy_config") or {}
        if strategy_config:
            out["AmtlibDetails"]["StrategyConfig"] = dict(strategy_config)
        if self.config["strategy"] == "Hyperband" and "max_resource" in strategy_config:
            out["HyperParameterTuningJobConfig"]["StrategyConfig"] = {
                "HyperbandStrategyConfig": {
                    "MinResource": strategy_config.get("min_resource", 1),
                    "MaxResource": strategy_config["max_resource"],
                }
            }
        if self.state.get("failure_reason"):
            out["FailureReason"] = self.state["failure_reason"]
        best = self.best_training_job
        if best is not None:
            out["BestTrainingJob"] = {
                "TrainingJobName": best.name,
                "CreationTime": best.creation_time,
                "TrainingStartTime": best.start_time,
                "TrainingEndTime": best.end_time,
                "TrainingJobStatus": best.status.value,
                "TunedHyperParameters": dict(best.hyperparameters),
                "FinalHyperParameterTuningJobObjectiveMetric": {
                    "Type": self.objective_type,
                    "MetricName": self.objective_metric_name,
                    "Value": best.objective_value,
                },
                "ObjectiveStatus": best.objective_status.value,
            }
        return out

    def consumed_steps(self) -> int:
        """Steps (e.g. epochs) trained in all: the sum of each job's last step with the objective
        metric reported. A job resumed from its checkpoint continues its steps, so they are not
        counted twice; a job that reports every fifth epoch counts all five."""
        metric = self.objective_metric_name
        return sum(max(job.steps(metric), default=0) for job in self.training_jobs)

    def to_records(self) -> list[dict[str, Any]]:
        """One flat dict per training job, columns as in the SDK's tuning-job analytics.

        amtlib adds ``StopRule`` (the rule that stopped or paused the job: ``"median"``,
        ``"successive_halving"``, ``"tuner"``, ...) and ``StopStep`` (the step it was judged at), both
        ``None`` for a job that ran to its end. A hyperparameter named like one of these columns
        is under ``hyperparameter:<name>``, a metric named like a column under ``metric:<name>``.
        """
        names = list(self.config["ranges"])
        rows = []
        for job in self.training_jobs:
            stop = job.stop_reason or {}
            columns: dict[str, Any] = {
                "TrainingJobName": job.name,
                "TrainingJobIndex": job.index,
                "TrainingJobStatus": job.status.value,
                "ObjectiveStatus": job.objective_status.value,
                "FinalObjectiveValue": job.objective_value,
                "TrainingStartTime": job.start_time,
                "TrainingEndTime": job.end_time,
                "TrainingElapsedTimeSeconds": job.training_time,
                "FailureReason": job.failure_reason,
                "StopRule": stop.get("rule") or None,
                "StopStep": stop.get("step"),
            }
            row: dict[str, Any] = {}
            for name in names:
                column = name if name not in columns else f"hyperparameter:{name}"
                row[column] = job.hyperparameters.get(name)
            row.update(columns)
            for metric, value in job.metrics.items():
                row[metric if metric not in row else f"metric:{metric}"] = value
            rows.append(row)
        return rows

    def dataframe(self) -> pandas.DataFrame:
        """``to_records()`` as a pandas DataFrame (needs ``pip install amtlib[pandas]``)."""
        try:
            import pandas
        except ImportError as exc:  # pragma: no cover - depends on the environment
            raise ImportError(
                "TuningJob.dataframe() needs pandas. Fix: pip install 'amtlib[pandas]', or use "
                "to_records()."
            ) from exc
        return pandas.DataFrame.from_records(self.to_records())

    def leaderboard(self, top: int | None = 10) -> str:
        """The best ``top`` training jobs (every one with ``None``) as a text table, best first.

        When jobs reported the objective as they went (early stopping, Hyperband), each row also
        says how the job ended and the last step of its objective: a job stopped or paused at an
        early rung is ranked by the value it had there.
        """
        if top is not None and (
            not isinstance(top, numbers.Integral) or isinstance(top, bool) or top < 1
        ):
            raise ValidationError(
                "The 'top' parameter of TuningJob.leaderboard must be a positive int or None "
                f"(every training job). Got {describe_value(top)} instead. Fix: pass e.g. top=10."
            )
        top = None if top is None else int(top)  # a numpy int too, as the Tuner's limits
        sign = -1.0 if self.objective_type == "Maximize" else 1.0
        done = [j for j in self.training_jobs if j.objective_status is ObjectiveStatus.SUCCEEDED]
        done.sort(key=lambda j: (sign * j.objective_value, j.index))  # type: ignore[operator]
        names = list(self.config["ranges"])
        metric = self.objective_metric_name
        steps = {j.index: max(j.steps(metric), default=None) for j in done[:top]}
        progress = any(s is not None for s in steps.values())
        header = ["rank", "training job", metric, *(["status", "step"] if progress else []), *names]
        rows = [
            [str(rank), job.name, f"{job.objective_value:.6g}"]
            + ([job.status.value, str(steps[job.index] or "")] if progress else [])
            + [_short(job.hyperparameters.get(n)) for n in names]
            for rank, job in enumerate(done[:top], start=1)
        ]
        widths = [max(len(r[i]) for r in [header, *rows]) for i in range(len(header))]
        lines = [
            "  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip()
            for r in [header, *rows]
        ]
        lines.insert(1, "  ".join("-" * w for w in widths))
        return "\n".join(lines)


def _short(value: Any) -> str:
    return f"{value:.4g}" if isinstance(value, float) else str(value)


def _parameter_ranges(ranges: Mapping[str, Mapping[str, Any]]) -> dict[str, list[dict[str, Any]]]:
    out: dict[str, list[dict[str, Any]]] = {
        "ContinuousParameterRanges": [],
        "IntegerParameterRanges": [],
        "CategoricalParameterRanges": [],
    }
    for name, r in ranges.items():
        entry = {"Name": name, **{k: v for k, v in r.items() if k != "Type"}}
        out[f"{r['Type']}ParameterRanges"].append(entry)
    return out
