"""Held-out problems: is the Bayesian strategy good beyond the suite it was developed on?

``benchmarks/quality.py`` holds the problems every design choice was measured on, so winning there
could be overfitting. The problems here were added later and are not used to choose between
variants: standard test functions of other shapes (10 dimensions, a valley, many local minima,
irrelevant inputs), a deterministic objective with integer ranges, a noisy one, and two more
scikit-learn problems.

Usage:

    python benchmarks/holdout.py --seeds 10 --jobs 2       # every method and problem
    python benchmarks/holdout.py --seeds 10 --jobs 2 --parallel 4 --methods \
        amtlib-bayesian optuna-tpe optuna-gp               # 4 simulated workers
    python benchmarks/holdout.py --report-only           # print the table (--write: rewrite it)

Each cell of the report is the median (and interquartile range) over seeds of the best value
after ``--evals`` evaluations (for ``h3_noisy``: the noise-free value of the configuration with the
best noisy observation, which is what a user would deploy), and the last column gives, per peer,
the one-sided Mann-Whitney p-values that amtlib's Bayesian strategy is better, and worse, than it.
With ``--parallel 4`` every method runs on the simulated 4-worker cluster of ``quality.py`` (Optuna
with its constant liar), and the report adds how the Bayesian strategy's regret with 4 jobs
compares with its sequential runs (the parallel target of ``quality.py``, on problems it was not
developed on; regret is measured from the known minimum, or for the scikit-learn problems from the
best value any stored run found).
Runs are cached in ``benchmarks/results/holdout/runs/`` (amtlib runs are redone when amtlib's
source changes).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import math
import sys
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
if __name__ == "__main__":
    sys.path.insert(0, str(ROOT))

from amtlib import CategoricalParameter, ContinuousParameter, IntegerParameter  # noqa: E402
from benchmarks.problems import Problem, hartmann6  # noqa: E402
from benchmarks.quality import MULTI_FIDELITY_MODULES, amtlib_fingerprint  # noqa: E402
from benchmarks.runners import METHODS as KNOWN_METHODS  # noqa: E402
from benchmarks.runners import MethodUnavailable, run_detailed, unavailable_reason  # noqa: E402

RESULTS = Path(__file__).resolve().parent / "results" / "holdout"
METHODS = ("amtlib-bayesian", "amtlib-random", "optuna-tpe", "optuna-gp")


def _vector(hp: Mapping[str, Any]) -> np.ndarray:
    return np.array([float(hp[f"x{i}"]) for i in range(len(hp))])


def levy(hp: Mapping[str, Any]) -> float:
    w = 1 + (_vector(hp) - 1) / 4
    head = np.sin(np.pi * w[0]) ** 2
    body = np.sum((w[:-1] - 1) ** 2 * (1 + 10 * np.sin(np.pi * w[:-1] + 1) ** 2))
    tail = (w[-1] - 1) ** 2 * (1 + np.sin(2 * np.pi * w[-1]) ** 2)
    return float(head + body + tail)


def rosenbrock(hp: Mapping[str, Any]) -> float:
    x = _vector(hp)
    return float(np.sum(100 * (x[1:] - x[:-1] ** 2) ** 2 + (1 - x[:-1]) ** 2))


def styblinski_tang(hp: Mapping[str, Any]) -> float:
    x = _vector(hp)
    return float(0.5 * np.sum(x**4 - 16 * x**2 + 5 * x))


def six_hump_camel(hp: Mapping[str, Any]) -> float:
    a, b = float(hp["x0"]), float(hp["x1"])
    return (4 - 2.1 * a * a + a**4 / 3) * a * a + a * b + (-4 + 4 * b * b) * b * b


def michalewicz(hp: Mapping[str, Any]) -> float:
    x = _vector(hp)
    i = np.arange(1, len(x) + 1)
    return float(-np.sum(np.sin(x) * np.sin(i * x * x / np.pi) ** 20))


def hartmann6_padded(hp: Mapping[str, Any]) -> float:
    """Hartmann-6 on x1..x6; x7..x12 do nothing."""
    return hartmann6({f"x{i}": hp[f"x{i}"] for i in range(1, 7)})


def boosting_toy(hp: Mapping[str, Any]) -> float:
    """Deterministic: best where n_estimators * learning_rate ~ 10, depth 5, subsample 0.8."""
    steps = math.log10(int(hp["n_estimators"]) * float(hp["learning_rate"]))
    depth = int(hp["max_depth"])
    return (
        (steps - 1.0) ** 2
        + 0.02 * (depth - 5) ** 2
        + 0.5 * (float(hp["subsample"]) - 0.8) ** 2
        + 0.02 * math.log10(int(hp["n_estimators"]))
    )


_H3_A = np.array([[3, 10, 30], [0.1, 10, 35], [3, 10, 30], [0.1, 10, 35]])
_H3_P = 1e-4 * np.array(
    [[3689, 1170, 2673], [4699, 4387, 7470], [1091, 8732, 5547], [381, 5743, 8828]]
)
_H3_ALPHA = np.array([1.0, 1.2, 3.0, 3.2])


def hartmann3(hp: Mapping[str, Any]) -> float:
    x = _vector(hp)
    return float(-np.sum(_H3_ALPHA * np.exp(-np.sum(_H3_A * (x - _H3_P) ** 2, axis=1))))


def hartmann3_noisy(hp: Mapping[str, Any]) -> float:
    """Hartmann-3 plus N(0, 0.1^2) noise, fixed per configuration (so runs are reproducible)."""
    digest = hashlib.sha256(json.dumps(dict(hp), sort_keys=True).encode()).digest()
    noise = np.random.default_rng(int.from_bytes(digest[:8], "little")).normal()
    return hartmann3(hp) + 0.1 * float(noise)


def kernel_ridge_diabetes(hp: Mapping[str, Any]) -> float:
    from sklearn.kernel_ridge import KernelRidge
    from sklearn.model_selection import KFold, cross_val_score

    from benchmarks.problems import _diabetes

    x, y = _diabetes()
    model = KernelRidge(alpha=float(hp["alpha"]), kernel=hp["kernel"], gamma=float(hp["gamma"]))
    folds = KFold(n_splits=5, shuffle=True, random_state=0)
    return float(-cross_val_score(model, x, y, cv=folds, scoring="neg_mean_squared_error").mean())


def boosting_breast_cancer(hp: Mapping[str, Any]) -> float:
    from sklearn.datasets import load_breast_cancer
    from sklearn.ensemble import HistGradientBoostingClassifier
    from sklearn.model_selection import StratifiedKFold, cross_val_score

    x, y = load_breast_cancer(return_X_y=True)
    model = HistGradientBoostingClassifier(
        learning_rate=float(hp["learning_rate"]),
        max_leaf_nodes=int(hp["max_leaf_nodes"]),
        min_samples_leaf=int(hp["min_samples_leaf"]),
        l2_regularization=float(hp["l2_regularization"]),
        max_iter=50,
        random_state=0,
    )
    folds = StratifiedKFold(n_splits=3, shuffle=True, random_state=0)
    return float(-cross_val_score(model, x, y, cv=folds, scoring="neg_log_loss").mean())


def _box(n: int, low: float, high: float, first: int = 0) -> dict[str, ContinuousParameter]:
    return {f"x{i}": ContinuousParameter(low, high, "Linear") for i in range(first, first + n)}


def _log(low: float, high: float) -> ContinuousParameter:
    return ContinuousParameter(low, high, "Logarithmic")


def _build() -> dict[str, Problem]:
    problems = [
        Problem("levy10", _box(10, -10, 10), levy, 0.0, description="Levy, 10-D"),
        Problem("rosenbrock4", _box(4, -2, 2), rosenbrock, 0.0, description="Rosenbrock, 4-D"),
        Problem(
            "styblinski_tang4",
            _box(4, -5, 5),
            styblinski_tang,
            -39.16616570377142 * 4,
            description="Styblinski-Tang, 4-D",
        ),
        Problem(
            "six_hump_camel",
            {
                "x0": ContinuousParameter(-3, 3, "Linear"),
                "x1": ContinuousParameter(-2, 2, "Linear"),
            },
            six_hump_camel,
            -1.031628453489877,
            description="six-hump camel, 2-D",
        ),
        Problem(
            "michalewicz5",
            _box(5, 0, math.pi),
            michalewicz,
            -4.687658,
            description="Michalewicz (m=10), 5-D",
        ),
        Problem(
            "hartmann6_in_12",
            _box(12, 0, 1, first=1),
            hartmann6_padded,
            -3.32236801141551,
            description="Hartmann-6 plus 6 irrelevant inputs",
        ),
        Problem(
            "boosting_toy",
            {
                "n_estimators": IntegerParameter(10, 1000, "Logarithmic"),
                "max_depth": IntegerParameter(1, 12, "Linear"),
                "learning_rate": _log(1e-3, 1.0),
                "subsample": ContinuousParameter(0.3, 1.0, "Linear"),
            },
            boosting_toy,
            0.02,
            description="deterministic, integer ranges, 4-D",
        ),
        Problem(
            "h3_noisy",
            _box(3, 0, 1),
            hartmann3_noisy,
            -3.86278214782076,
            description="Hartmann-3 with noise sd 0.1",
        ),
        Problem(
            "kernel_ridge_diabetes",
            {
                "alpha": _log(1e-4, 10.0),
                "gamma": _log(1e-4, 1.0),
                "kernel": CategoricalParameter(["rbf", "laplacian"]),
            },
            kernel_ridge_diabetes,
            0.0,
            f_min_source="unknown",
            description="KernelRidge on load_diabetes, 5-fold CV MSE",
        ),
        Problem(
            "boosting_breast_cancer",
            {
                "learning_rate": _log(1e-3, 1.0),
                "max_leaf_nodes": IntegerParameter(2, 128, "Logarithmic"),
                "min_samples_leaf": IntegerParameter(1, 100, "Logarithmic"),
                "l2_regularization": _log(1e-6, 10.0),
            },
            boosting_breast_cancer,
            0.0,
            f_min_source="unknown",
            description="HistGradientBoosting (50 iterations) on breast_cancer, 3-fold CV log loss",
        ),
    ]
    return {p.name: p for p in problems}


PROBLEMS = _build()
# Where the loss a run sees is noisy, the report scores the chosen configuration without noise.
NOISE_FREE: dict[str, Callable[[Mapping[str, Any]], float]] = {"h3_noisy": hartmann3}


def _settings(evals: int, parallel: int) -> str:
    return f"e{evals}" if parallel == 1 else f"e{evals}-p{parallel}"


def _path(root: Path, problem: str, method: str, seed: int, evals: int, parallel: int = 1) -> Path:
    return root / "runs" / _settings(evals, parallel) / problem / method / f"seed{seed:03d}.json"


def _scores(
    root: Path, problem: str, method: str, seeds: int, evals: int, parallel: int
) -> list[float]:
    runs = [_path(root, problem, method, s, evals, parallel) for s in range(seeds)]
    return [json.loads(p.read_text())["score"] for p in runs if p.exists()]


def run_one(
    problem: str,
    method: str,
    seed: int,
    evals: int,
    root: Path,
    code: str,
    parallel: int = 1,
) -> dict[str, Any] | None:
    """Run (or load) one run; ``None`` when the method is not available here.

    ``code`` is amtlib's source fingerprint: stored amtlib runs made with other code are redone.
    """
    path = _path(root, problem, method, seed, evals, parallel)
    fingerprint = code if method.startswith("amtlib") else None
    if path.exists():
        stored = json.loads(path.read_text())
        if stored.get("fingerprint") == fingerprint:
            return stored  # type: ignore[no-any-return]
    try:
        result = run_detailed(method, PROBLEMS[problem], seed, evals, parallel)
    except MethodUnavailable:
        return None
    best = int(np.argmin(result.losses))
    score = NOISE_FREE.get(problem, lambda hp: result.losses[best])(result.configs[best])
    record = {"score": float(score), "seconds": result.seconds, "fingerprint": fingerprint}
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(record))
    return record


def report(
    root: Path,
    problems: list[str],
    methods: list[str],
    seeds: int,
    evals: int,
    parallel: int = 1,
) -> str:
    from scipy.stats import mannwhitneyu

    workers = "" if parallel == 1 else f", {parallel} parallel jobs"
    lines = [
        f"## Held-out problems: best value after {evals} evaluations{workers} "
        "(median [IQR] over seeds)",
        "",
        "| problem | "
        + " | ".join(methods)
        + " | one-sided Mann-Whitney p: Bayesian better / worse than |",
        "|---" * (len(methods) + 2) + "|",
    ]
    for problem in problems:
        scores: dict[str, list[float]] = {}
        for method in methods:
            found = _scores(root, problem, method, seeds, evals, parallel)
            if found:
                scores[method] = found
        cells = []
        for method in methods:
            v = scores.get(method)
            if not v:
                cells.append("-")
                continue
            q25, q50, q75 = np.percentile(v, [25, 50, 75])
            cells.append(f"{q50:.4g} [{q25:.4g}, {q75:.4g}] (n={len(v)})")
        ours = scores.get("amtlib-bayesian")
        tests = []
        for method, v in scores.items():
            if method != "amtlib-bayesian" and ours and len(v) > 2 and len(ours) > 2:
                better = mannwhitneyu(ours, v, alternative="less").pvalue
                worse = mannwhitneyu(ours, v, alternative="greater").pvalue
                tests.append(f"{method} {better:.3f} / {worse:.3f}")
        lines.append(f"| {problem} | " + " | ".join(cells) + " | " + ", ".join(tests) + " |")
    flags = "" if parallel == 1 else f" --parallel {parallel}"
    lines += [
        "",
        "Lower is better. Command: `python benchmarks/holdout.py "
        f"--seeds {seeds} --evals {evals}{flags} --methods {' '.join(methods)}`.",
        "",
    ]
    if parallel > 1:
        lines += _parallel_section(root, problems, methods, seeds, evals, parallel)
    lines += [f"- `{p}`: {PROBLEMS[p].description}" for p in problems]
    return "\n".join(lines) + "\n"


def _parallel_section(
    root: Path, problems: list[str], methods: list[str], seeds: int, evals: int, parallel: int
) -> list[str]:
    """Each method with ``parallel`` jobs against its sequential runs: ratio of median regrets."""
    from scipy.stats import mannwhitneyu

    ours, peers = "amtlib-bayesian", [m for m in methods if m != "amtlib-bayesian"]
    lines = [
        f"### {parallel} parallel jobs against sequential: ratio of median regrets",
        "",
        f"| problem | {ours}: sequential | parallel | ratio | one-sided Mann-Whitney p (parallel "
        "worse) | " + " | ".join(f"{m}: ratio" for m in peers) + " |",
        "|---" * (5 + len(peers)) + "|",
    ]
    within, compared = [], 0
    for problem in problems:
        floor = PROBLEMS[problem].f_min
        if PROBLEMS[problem].f_min_source == "unknown":  # the best value any stored run found
            stored = (root / "runs").glob(f"*/{problem}/*/seed*.json")
            floor = min(json.loads(p.read_text())["score"] for p in stored)
        regrets = {
            method: [
                np.maximum(np.array(_scores(root, problem, method, seeds, evals, p)) - floor, 0.0)
                for p in (1, parallel)
            ]
            for method in methods
        }
        if not all(len(r) for r in regrets.get(ours, [[]])):
            continue
        sequential, together = regrets[ours]
        ratio = _ratio(sequential, together)
        compared += 1
        if ratio <= 1.25:
            within.append(problem)
        worse = mannwhitneyu(together, sequential, alternative="greater").pvalue
        others = [
            f"{_ratio(*regrets[m]):.3g}x" if all(len(r) for r in regrets[m]) else "-" for m in peers
        ]
        lines.append(
            f"| {problem} | {np.median(sequential):.3g} | {np.median(together):.3g} | "
            f"{ratio:.3g}x | {worse:.3f} | " + " | ".join(others) + " |"
        )
    lines += [
        "",
        f"{ours} within 1.25x of sequential: {len(within)} of {compared} problems. Regret is "
        "measured from the known minimum; for the two scikit-learn problems, from the best value "
        "any stored run found. The peers' ratios compare each with its own sequential runs.",
        "",
    ]
    return lines


def _ratio(sequential: np.ndarray, together: np.ndarray) -> float:
    a, b = float(np.median(sequential)), float(np.median(together))
    return b / a if a > 0 else (1.0 if b == 0 else math.inf)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--methods", nargs="+", default=list(METHODS), choices=KNOWN_METHODS)
    parser.add_argument("--problems", nargs="+", default=list(PROBLEMS), choices=list(PROBLEMS))
    parser.add_argument("--seeds", type=int, default=10)
    parser.add_argument("--evals", type=int, default=50)
    parser.add_argument("--jobs", type=int, default=2)
    parser.add_argument("--parallel", type=int, default=1, help="simulated workers (default 1)")
    parser.add_argument("--results", type=Path, default=RESULTS)
    parser.add_argument("--report-only", action="store_true", help="print the table, run nothing")
    parser.add_argument(
        "--write", action="store_true", help="with --report-only: also write the report file"
    )
    args = parser.parse_args(argv)
    if args.evals < 1 or args.seeds < 1 or args.parallel < 1:
        parser.error("--evals, --seeds and --parallel must be at least 1")
    for method in list(args.methods):
        reason = unavailable_reason(method, args.parallel)
        if reason is not None:
            print(f"skipping {method}: {reason}", file=sys.stderr)
            args.methods.remove(method)
    if not args.report_only:
        from joblib import Parallel, delayed

        work = [
            (problem, method, seed)
            for problem in args.problems
            for method in args.methods
            for seed in range(args.seeds)
        ]
        code = amtlib_fingerprint(MULTI_FIDELITY_MODULES)
        Parallel(n_jobs=args.jobs, verbose=5)(
            delayed(run_one)(problem, method, seed, args.evals, args.results, code, args.parallel)
            for problem, method, seed in work
        )
    text = report(args.results, args.problems, args.methods, args.seeds, args.evals, args.parallel)
    print(text)
    name = f"report-{_settings(args.evals, args.parallel)}.md"
    missing = [
        f"{m} on {p}"
        for p in args.problems
        for m in args.methods
        if not _scores(args.results, p, m, args.seeds, args.evals, args.parallel)
    ]
    if args.report_only and not args.write:
        return
    if missing:  # the per-run cache is not in git: a fresh clone must not blank the report
        print(f"{name} not written: no stored runs of {', '.join(missing[:4])}", file=sys.stderr)
        return
    args.results.mkdir(parents=True, exist_ok=True)
    (args.results / name).write_text(text)


if __name__ == "__main__":
    main()
