"""Hyperband on tabulated learning curves: hundreds of seeds in seconds, and what bracket choice can reach.

Usage:

    python benchmarks/mf_tabular.py                                  # every problem, 200 seeds
    python benchmarks/mf_tabular.py --problems lcurve --seeds 500
    python benchmarks/mf_tabular.py --table-size 400 --problems sgd-digits   # smaller table

``benchmarks/multifidelity.py`` trains every epoch it counts, so 20 seeds of one method take minutes
and its medians move by a few percent from one set of seeds to the next. Here each problem's
learning curves are computed once, for ``--table-size`` configurations drawn at random from its
ranges (the *table*, cached in ``results/multifidelity/runs/tables/``; 600 rows take about 15
minutes for each scikit-learn problem on one core, 3000 rows 1-2 minutes for each synthetic one). A simulated run then drives
amtlib's own :class:`~amtlib.strategies.hyperband.HyperbandStrategy` (the class the tuner uses,
not a re-implementation) as the inline tuner does: one job at a time, each new job's configuration
the next row of the table in a seeded random order, a paused job promoted before a new one starts,
no new job once the budget ``B = 20 R`` epochs is spent. A run takes milliseconds.

Only random configurations can be simulated this way (a model proposes configurations that are not
in the table). The variants:

- ``hyperband``, ``hyperband-fixed``, ``hyperband-promotion``, ``hyperband-promotion-fixed``: as in
  ``multifidelity.py`` (adaptive or Hyperband's fixed bracket weights; stopping or promotion).
- ``brackets`` (stopping mode) and ``brackets-promotion``: one row per bracket ``b``, every job in
  it. Bracket 0 is ASHA; the last bracket runs every job to ``R``, i.e. Random at full budget. The
  best of these in hindsight, per problem and mode, is what knowing the right fixed bracket in
  advance would give: a yardstick for any bracket-selection rule, not a method.

``Q`` is full-budget Random's median final best, as in ``multifidelity.py``, computed two ways: from
the table (the median over 20,000 draws of the best final value of 20 distinct rows) and, when it has
stored runs, from ``multifidelity.py``'s Random runs (the ``Q`` its Target 1 uses). Reported per
variant: the median over seeds of the epochs needed to reach each ``Q``, the fraction of seeds
reaching it within ``B/3`` (Target 1 asks the median to be within it, so at least half), and the
median best at ``B/9, B/3, 2B/3, B``.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
RESULTS = Path(__file__).resolve().parent / "results" / "multifidelity"
TABLES = RESULTS / "runs" / "tables"

if __name__ == "__main__":
    sys.path.insert(0, str(ROOT))

from amtlib import ContinuousParameter  # noqa: E402
from amtlib.reporting import Action  # noqa: E402
from amtlib.space import SearchSpace  # noqa: E402
from amtlib.strategies.hyperband import (  # noqa: E402
    HyperbandStrategy,
    adaptive_bracket_scores,
    bracket_weights,
    keep_rate,
    rung_levels,
)
from benchmarks.mf_problems import PROBLEMS, MFProblem  # noqa: E402
from benchmarks.multifidelity import (  # noqa: E402
    FRACTION_LABELS,
    FRACTIONS,
    _fmt_epochs,
    best_at,
    epochs_to_reach,
)

CONFIGS = 20  # B = CONFIGS x R, as multifidelity.py's default
TABLE_SEED = 12345

#: Hyperband strategy_config per named variant (the SINGLE_BRACKETS groups add one row per bracket).
VARIANTS: dict[str, dict[str, Any]] = {
    "hyperband": {},
    "hyperband-fixed": {"bracket_selection": "fixed"},
    "hyperband-promotion": {"mode": "promotion"},
    "hyperband-promotion-fixed": {"mode": "promotion", "bracket_selection": "fixed"},
}
#: Yardstick groups: one row per bracket, every job in it, in the given mode.
SINGLE_BRACKETS = {"brackets": "stopping", "brackets-promotion": "promotion"}


# ---- tables ---------------------------------------------------------------------------------------


def tabulate(problem: MFProblem, size: int, *, seed: int = TABLE_SEED) -> np.ndarray:
    """Learning curves (``size x R``) of ``size`` configurations drawn at random from the ranges.

    Cached as JSON (configurations and curves); a cached table with at least ``size`` rows is reused
    (its first ``size`` rows: the draws are sequential, so a prefix is a smaller table).
    """
    TABLES.mkdir(parents=True, exist_ok=True)
    path = TABLES / f"{problem.name}-s{seed}.json"
    rows: list[dict[str, Any]] = json.loads(path.read_text()) if path.exists() else []
    if len(rows) < size:
        space = SearchSpace(problem.hyperparameter_ranges)
        rng = np.random.default_rng(seed)
        for _ in range(len(rows)):  # replay the draws already tabulated
            space.sample(rng)
        while len(rows) < size:
            hp = space.sample(rng)
            rows.append({"hyperparameters": hp, "curve": problem.curve(hp)})
            if len(rows) % 50 == 0 or len(rows) == size:
                path.write_text(json.dumps(rows))
    return np.asarray([row["curve"] for row in rows[:size]], dtype=float)


def table_q(curves: np.ndarray, *, configs: int = CONFIGS, draws: int = 20_000) -> float:
    """Median over ``draws`` of the best final value among ``configs`` distinct rows."""
    rng = np.random.default_rng(0)
    finals = curves[:, -1]
    picks = np.argsort(rng.random((draws, len(finals))), axis=1)[:, :configs]
    return float(np.median(finals[picks].min(axis=1)))


def benchmark_q(problem: str, max_resource: int, *, configs: int = CONFIGS) -> float | None:
    """``multifidelity.py``'s Q from its stored Random runs (median final best), if 10+ are stored."""
    runs = RESULTS / "runs" / problem / "random"
    finals = []
    for path in sorted(runs.glob(f"seed*-c{configs}-r{max_resource}.json")):
        curve = json.loads(path.read_text())["curve"]
        if curve:
            finals.append(curve[-1][1])
    return float(np.median(finals)) if len(finals) >= 10 else None


# ---- simulated runs -------------------------------------------------------------------------------


class _OneBracket(HyperbandStrategy):
    """Hyperband with every job in one bracket (the yardstick rows)."""

    only: int = 0

    def bracket_of(self, index: int) -> int:
        return self.only


def one_bracket(bracket: int) -> Callable[..., HyperbandStrategy]:
    """A strategy factory putting every job in ``bracket``."""
    return type(f"Bracket{bracket}", (_OneBracket,), {"only": bracket})


def simulate(
    curves: np.ndarray,
    seed: int,
    *,
    config: Mapping[str, Any] | None = None,
    strategy: Callable[..., HyperbandStrategy] = HyperbandStrategy,
    budget: int | None = None,
    trained: list[tuple[int, int]] | None = None,
) -> list[tuple[int, float]]:
    """One sequential Hyperband run over the table; ``(epochs spent, best so far)`` per job end.

    Configurations are the table's rows in an order drawn from ``seed`` (no row twice until all are
    used). Each epoch is counted once, when trained: a promoted job resumes after its last step.
    A job's value is its last reported loss (AMT's rule); the best so far is the smallest value of
    any job that has ended (completed, stopped or paused). ``trained``, if given, collects
    ``(job index, epoch)`` for every epoch trained.
    """
    n, max_resource = curves.shape
    budget = CONFIGS * max_resource if budget is None else budget
    space = SearchSpace({"row": ContinuousParameter(0, n)})
    hb = strategy(
        space,
        seed=seed,
        config={"min_resource": 1, "max_resource": max_resource, **(config or {})},
    )
    order = np.random.default_rng([seed, 1]).permutation(n)
    row_of: dict[int, int] = {}
    last_step: dict[int, int] = {}
    spent, best, events = 0, math.inf, []
    while spent < budget:
        index = hb.promote()
        if index is None:
            row = int(order[hb.n_asked % n])
            hb._launched({"row": float(row)})  # as Strategy.ask does after propose
            index = hb.n_asked - 1
            row_of[index], last_step[index] = row, 0
        curve = curves[row_of[index]]
        step = last_step[index]
        action = Action.CONTINUE
        while step < max_resource:
            step += 1
            spent += 1
            if trained is not None:
                trained.append((index, step))
            action = hb.on_report(index, step, float(curve[step - 1])).action
            if action != Action.CONTINUE:
                break
        last_step[index] = step
        best = min(best, float(curve[step - 1]))
        events.append((spent, best))
        # Hyperband's tell reads the index, the value (there always is one here), whether the job
        # ended paused, and whether the tuner cut it short (never here).
        paused = action == Action.PAUSE
        hb.tell(
            SimpleNamespace(
                index=index, loss=float(curve[step - 1]), paused=paused, unfinished=False
            )
        )
    return events


# ---- report ---------------------------------------------------------------------------------------


def _cell(value: float, budget: int) -> str:
    return _fmt_epochs(value if value <= budget else math.inf, budget)


def evaluate(
    problem: MFProblem, curves: np.ndarray, seeds: int, variants: Sequence[str]
) -> tuple[str, dict[str, dict[str, float]]]:
    """Markdown table for one problem, and per variant its median epochs to reach each Q."""
    max_resource = curves.shape[1]
    budget = CONFIGS * max_resource
    n_brackets = len(rung_levels(1, max_resource, 3)) + 1
    qs = {"table": table_q(curves)}
    stored = benchmark_q(problem.name, max_resource)
    if stored is not None:
        qs["benchmark"] = stored
    rows: dict[str, tuple[str, list[list[tuple[int, float]]]]] = {}
    for name in variants:
        if name in SINGLE_BRACKETS:
            mode = SINGLE_BRACKETS[name]
            for b in range(n_brackets - (mode == "promotion")):  # no pausing in the last bracket
                kind = " (ASHA)" if b == 0 else " (Random)" if b == n_brackets - 1 else ""
                runs = [
                    simulate(curves, s, config={"mode": mode}, strategy=one_bracket(b))
                    for s in range(seeds)
                ]
                rows[f"{name}:{b}"] = (f"{mode}, bracket {b} only{kind}", runs)
        else:
            runs = [simulate(curves, s, config=VARIANTS[name]) for s in range(seeds)]
            rows[name] = (name, runs)
    reached: dict[str, dict[str, float]] = {}
    levels = rung_levels(1, max_resource, 3)
    rates = [keep_rate(curves[:, level - 1], curves[:, -1], 3) for level in levels]
    implied = bracket_weights(len(levels), 3) * adaptive_bracket_scores(rates, 3)
    lines = [
        f"### {problem.name} ({len(curves)} tabulated configurations, {seeds} seeds, "
        f"B = {budget} epochs)",
        "",
        "Q: " + ", ".join(f"{k} {v:.4f}" for k, v in qs.items()),
        "",
        "Keep rates over every row of the table (no survivor bias; chance 1/3) at levels "
        + ", ".join(f"{level}: {rate:.2f}" for level, rate in zip(levels, rates, strict=True))
        + "; the bracket weights adaptive selection would reach with them: "
        + ", ".join(f"{w:.2f}" for w in implied / implied.sum())
        + ".",
        "",
        "| variant | "
        + " | ".join(f"epochs to Q ({k}) | seeds within B/3" for k in qs)
        + " | "
        + " | ".join(FRACTION_LABELS)
        + " |",
        "|---|" + "---:|---:|" * len(qs) + "---:|" * len(FRACTIONS),
    ]
    for name, (label, runs) in rows.items():
        reached[name] = {}
        cells = []
        for k, q in qs.items():
            epochs = np.array([epochs_to_reach(ev, q) for ev in runs])
            reached[name][k] = float(np.median(epochs))
            cells += [_cell(reached[name][k], budget), f"{np.mean(epochs <= budget / 3):.2f}"]
        bests = [f"{np.median([best_at(ev, f * budget) for ev in runs]):.4f}" for f in FRACTIONS]
        lines.append(f"| {label} | " + " | ".join(cells + bests) + " |")
    for group, mode in SINGLE_BRACKETS.items():
        singles = [n for n in reached if n.startswith(group + ":")]
        if not singles:
            continue
        cells = []
        for k in qs:
            best = min(singles, key=lambda n: reached[n][k])
            cells += [f"{_cell(reached[best][k], budget)}: bracket {best.rsplit(':', 1)[1]}", ""]
        cells += [""] * len(FRACTIONS)
        lines.append(f"| {mode}, best single bracket in hindsight | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n", reached


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--problems", nargs="+", default=list(PROBLEMS), choices=list(PROBLEMS))
    parser.add_argument("--seeds", type=int, default=200)
    parser.add_argument(
        "--table-size", type=int, default=None, help="rows per table (default 600; 3000 synthetic)"
    )
    parser.add_argument(
        "--variants",
        nargs="+",
        default=[*VARIANTS, *SINGLE_BRACKETS],
        choices=[*VARIANTS, *SINGLE_BRACKETS],
    )
    parser.add_argument("--out", type=Path, default=RESULTS / "report-tabular.md")
    args = parser.parse_args(argv)
    parts = [
        "## Hyperband on tabulated learning curves\n",
        f"Command: `python benchmarks/mf_tabular.py {' '.join(sys.argv[1:])}`. "
        "Each run drives amtlib's HyperbandStrategy over a table of precomputed curves "
        "(random configurations, sequential, B = 20 R); see the module docstring.\n",
    ]
    for name in args.problems:
        problem = PROBLEMS[name]
        size = args.table_size or (3000 if problem.kind == "synthetic" else 600)
        text, _ = evaluate(problem, tabulate(problem, size), args.seeds, args.variants)
        print(text, flush=True)
        parts.append(text)
    args.out.write_text("\n".join(parts))
    print(f"written {args.out}")


if __name__ == "__main__":
    main()
