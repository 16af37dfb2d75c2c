"""The tabulated-curve Hyperband simulation of ``benchmarks/mf_tabular.py``: accounting and yardsticks."""

from __future__ import annotations

import math
import sys
from collections import Counter
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # `benchmarks` under plain pytest

from amtlib import ContinuousParameter
from benchmarks import mf_tabular
from benchmarks.mf_problems import MFProblem
from benchmarks.mf_tabular import best_at, epochs_to_reach, one_bracket, simulate, table_q


def _table(n: int = 120, max_resource: int = 27, *, seed: int = 0) -> np.ndarray:
    """Curves whose every epoch ranks the rows as the last one does (early values predict)."""
    finals = np.random.default_rng(seed).uniform(0.1, 1.0, n)
    epochs = np.arange(1, max_resource + 1)
    return finals[:, None] + 2.0 * np.exp(-epochs[None, :] / 5.0)


@pytest.mark.parametrize("mode", ["stopping", "promotion"])
def test_every_epoch_is_trained_once_and_counted_once(mode):
    curves = _table()
    trained: list[tuple[int, int]] = []
    events = simulate(curves, 3, config={"mode": mode}, trained=trained)
    assert Counter(trained).most_common(1)[0][1] == 1  # no (job, epoch) twice: no recount
    by_job: dict[int, list[int]] = {}
    for job, epoch in trained:
        by_job.setdefault(job, []).append(epoch)
    for epochs in by_job.values():  # a promoted job resumes right after its last epoch
        assert epochs == list(range(1, len(epochs) + 1))
    assert events[-1][0] == len(trained) >= 20 * 27  # the last job may end past the budget
    assert len(trained) - 27 < 20 * 27
    spent = [e for e, _ in events]
    best = [b for _, b in events]
    assert spent == sorted(spent) and best == sorted(best, reverse=True)
    if mode == "promotion":
        assert len(by_job) < len(events)  # some job ended more than once: it was promoted


def test_the_last_bracket_is_random_search_and_the_first_is_asha():
    curves = _table()
    trained: list[tuple[int, int]] = []
    simulate(curves, 0, strategy=one_bracket(3), trained=trained)
    steps = Counter(job for job, _ in trained)
    assert set(list(steps.values())[:-1]) == {27}  # every job but the cut-off last trains to R
    trained = []
    simulate(curves, 0, strategy=one_bracket(0), trained=trained)
    steps = Counter(job for job, _ in trained)
    assert min(steps.values()) == 1 and len(steps) > 60  # most jobs stop after one epoch


def test_when_early_epochs_rank_perfectly_asha_beats_random_search_on_every_seed():
    curves = _table()
    best_row = curves[:, -1].min()
    for seed in range(10):
        asha = simulate(curves, seed, strategy=one_bracket(0))
        random = simulate(curves, seed, strategy=one_bracket(3))
        assert epochs_to_reach(asha, best_row) < epochs_to_reach(random, best_row)


def test_runs_are_reproducible_and_seeds_differ():
    curves = _table()
    assert simulate(curves, 5) == simulate(curves, 5)
    assert simulate(curves, 5) != simulate(curves, 6)


def test_reach_and_best_at_read_the_event_list():
    events = [(10, 0.5), (30, 0.3), (70, 0.2)]
    assert epochs_to_reach(events, 0.3) == 30
    assert epochs_to_reach(events, 0.1) == math.inf
    assert best_at(events, 5) == math.inf
    assert best_at(events, 69) == 0.3
    assert best_at(events, 70) == 0.2


def test_table_q_is_the_median_best_of_twenty_rows():
    flat = np.ones((50, 3))
    assert table_q(flat) == 1.0
    curves = np.tile(np.arange(40.0)[:, None], (1, 3))  # finals 0..39
    assert table_q(curves, configs=40) == 0.0  # every row drawn: the best is the minimum
    # Best of 20 distinct rows out of 40: P(min >= k) = C(40 - k, 20) / C(40, 20); median 0 or 1.
    assert table_q(curves) in (0.0, 0.5, 1.0)


def test_tabulate_caches_and_extends_its_table(tmp_path, monkeypatch):
    monkeypatch.setattr(mf_tabular, "TABLES", tmp_path)
    calls = []

    def train_epoch(model, hp, epoch):
        calls.append(epoch)
        return hp["x"] / epoch

    problem = MFProblem(
        name="toy",
        hyperparameter_ranges={"x": ContinuousParameter(1.0, 2.0, "Linear")},
        max_resource=4,
        start=lambda hp: None,
        train_epoch=train_epoch,
        kind="synthetic",
    )
    five = mf_tabular.tabulate(problem, 5)
    assert five.shape == (5, 4) and len(calls) == 20
    assert np.array_equal(mf_tabular.tabulate(problem, 3), five[:3]) and len(calls) == 20
    seven = mf_tabular.tabulate(problem, 7)
    assert np.array_equal(seven[:5], five) and len(calls) == 28  # only the new rows computed
    fresh = tmp_path / "again"
    monkeypatch.setattr(mf_tabular, "TABLES", fresh)
    assert np.array_equal(mf_tabular.tabulate(problem, 7), seven)  # same draws from the seed


def test_evaluate_reports_every_variant_the_yardsticks_and_the_keep_rates():
    curves = _table()
    problem = SimpleNamespace(name="toy")
    text, reached = mf_tabular.evaluate(problem, curves, 3, ["hyperband", "brackets"])
    assert set(reached) == {"hyperband", "brackets:0", "brackets:1", "brackets:2", "brackets:3"}
    assert "| stopping, bracket 0 only (ASHA) |" in text
    assert "| stopping, bracket 3 only (Random) |" in text
    assert "stopping, best single bracket in hindsight" in text
    # Every epoch ranks the rows as the last one does: every level keeps the best of three.
    assert "levels 1: 1.00, 3: 1.00, 9: 1.00" in text
    best = min(
        ("brackets:0", "brackets:1", "brackets:2", "brackets:3"), key=lambda n: reached[n]["table"]
    )
    assert reached[best]["table"] <= reached["hyperband"]["table"]
