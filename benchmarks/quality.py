"""Sample efficiency of amtlib's Bayesian strategy against its peers: simple regret after N evaluations.

Usage (the full comparison; each run is cached, so an interrupted command resumes where it stopped):

    python benchmarks/quality.py --seeds 10 --evals 50 --jobs 2                       # sequential
    python benchmarks/quality.py --methods amtlib-bayesian amtlib-random --parallel 4 --seeds 10
    python benchmarks/quality.py --methods amtlib-bayesian amtlib-random --scaling auto --seeds 10
    python benchmarks/quality.py --methods amtlib-bayesian amtlib-random --scaling linear --seeds 10
    python benchmarks/quality.py --seeds 10 --report-only                             # table only
    python benchmarks/quality.py --seeds 20 --report-only --write    # rewrite the report files

Defaults: every method and problem (``--list`` shows them and what is installed), 10 seeds,
50 evaluations, sequential, the ranges' own scaling types, 2 processes. Peer libraries are in
``benchmarks/requirements.txt``; methods that are not installed are skipped with the reason.

Regret. A run's simple regret after n evaluations is ``min(loss_1..loss_n) - f*``. For the
synthetic problems ``f*`` is the known global minimum. For the scikit-learn problems it is
``min(reference, best loss in any stored run of that problem)``, where the reference comes from a
long run (``benchmarks/problems.py``); the report says when a stored run beat the reference.
Each cell of the table is the median over seeds, with the interquartile range.

Targets amtlib's Bayesian strategy is judged on (10+ seeds, 50 evaluations):

1. Median regret below Optuna's TPE on every problem.
2. Median regret at or below the best GP-based peer (Optuna ``GPSampler``, scikit-optimize
   ``gp_minimize``, Syne Tune's BoTorch searcher) on most problems. Random is shown as the floor.
3. Parallel: with ``--parallel 4`` (a simulated 4-worker cluster, asynchronous completions),
   median regret after 50 evaluations within 1.25x of the sequential run's.
4. Auto: with every numeric range ``Auto`` (``--scaling auto``), median regret within 1.5x of
   the run with the right scaling types given, and clearly better (lower median, one-sided
   Mann-Whitney p < 0.05) than with every numeric range forced ``Linear`` (``--scaling linear``),
   on the problems where some range is not Linear.

The summary lines at the end check each target against whatever results are stored (targets 3 and
4 need the sequential as-given runs too); for targets 3 and 4 each ratio comes with a bootstrap 90%
interval and a one-sided Mann-Whitney p-value (see ``ratio_evidence``), because a ratio of medians
over 10 seeds of a bimodal regret is mostly noise. Outputs: the tables on stdout, the same in
``benchmarks/results/quality/report-<settings>.md``, and per-problem best-so-far regret curves
(median and quartiles per method) in ``benchmarks/results/quality/curves-<settings>.json``. Runs
are stored under ``benchmarks/results/quality/runs/<settings>/<problem>/<method>/seed<k>.json``;
stored amtlib runs are redone when amtlib's source changes (``--keep-stale`` keeps them).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import math
import os
import sys
import time
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
RESULTS = Path(__file__).resolve().parent / "results" / "quality"

if __name__ == "__main__":
    sys.path.insert(0, str(ROOT))

from benchmarks.problems import PROBLEMS, SCALINGS, Problem, get_problem  # noqa: E402
from benchmarks.runners import (  # noqa: E402
    GP_PEERS,
    METHODS,
    TORCH_METHODS,
    run_detailed,
    unavailable_reason,
)

# The order in which runs are started: slowest first, so the processes finish together.
_COST_ORDER = ("synetune-botorch", "skopt-gp", "optuna-gp", "amtlib-bayesian")


def settings_name(evals: int, parallel: int, scaling: str) -> str:
    return f"e{evals}-p{parallel}-{scaling}"


def run_path(results: Path, settings: str, problem: str, method: str, seed: int) -> Path:
    return results / "runs" / settings / problem / method / f"seed{seed:03d}.json"


#: amtlib modules a Bayesian or Random run never calls: editing them does not make stored runs of
#: this benchmark stale (the multi-fidelity benchmark hashes everything).
MULTI_FIDELITY_MODULES = ("stopping.py", "strategies/hyperband.py", "strategies/_multifidelity.py")


def amtlib_fingerprint(exclude: Sequence[str] = ()) -> str:
    """A hash of amtlib's source, so stored amtlib runs are redone when the code changes.

    ``exclude``: paths relative to the package (``"strategies/hyperband.py"``) left out.
    """
    import amtlib

    digest = hashlib.sha256()
    package = Path(amtlib.__file__).parent
    for path in sorted(package.rglob("*.py")):
        if path.relative_to(package).as_posix() in exclude:
            continue
        digest.update(path.relative_to(package).as_posix().encode())
        digest.update(path.read_bytes())
    return digest.hexdigest()[:16]


# ---- running ------------------------------------------------------------------------------------


def _run_one(
    method: str, problem_name: str, scaling: str, seed: int, evals: int, parallel: int, path: str
) -> tuple[str, float | None, str | None]:
    """Run one (method, problem, seed) and store it; in a worker process. Returns (path, s, error)."""
    from threadpoolctl import threadpool_limits

    if method in TORCH_METHODS:
        import torch

        torch.set_num_threads(1)  # one core per run, as for every other method
    problem = get_problem(problem_name, scaling)
    try:
        with threadpool_limits(1):
            result = run_detailed(method, problem, seed, evals, parallel)
    except Exception as exc:
        return path, None, f"{type(exc).__name__}: {exc}"
    record = {
        "method": method,
        "problem": problem_name,
        "scaling": scaling,
        "seed": seed,
        "evals": evals,
        "parallel": parallel,
        "losses": [v if math.isfinite(v) else None for v in result.losses],
        "best": min(result.losses),
        "configs": result.configs,
        "seconds": result.seconds,
        "info": result.info,
        "problem_signature": problem.signature(),
        "amtlib_code": amtlib_fingerprint(MULTI_FIDELITY_MODULES)
        if method.startswith("amtlib")
        else None,
        "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = target.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(record, default=str))
    os.replace(tmp, target)
    return path, result.seconds, None


def load_run(path: Path) -> dict[str, Any] | None:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None


def is_valid(record: dict[str, Any] | None) -> bool:
    """The run was made on the problem as it is now defined."""
    if record is None or record.get("problem") not in PROBLEMS:
        return False
    return record.get("problem_signature") == PROBLEMS[record["problem"]].signature()


def is_current(record: dict[str, Any] | None, fingerprint: str) -> bool:
    """Valid, and made with the current amtlib source if it is an amtlib run."""
    if record is None or not is_valid(record):
        return False
    return not record["method"].startswith("amtlib") or record.get("amtlib_code") == fingerprint


def run_grid(args: argparse.Namespace, methods: Sequence[str], fingerprint: str) -> None:
    settings = settings_name(args.evals, args.parallel, args.scaling)
    todo = []
    for seed in range(args.first_seed, args.first_seed + args.seeds):
        for problem in args.problems:
            for method in methods:
                path = run_path(args.results, settings, problem, method, seed)
                record = load_run(path)
                if is_current(record, fingerprint) or (args.keep_stale and is_valid(record)):
                    continue
                todo.append(
                    (method, problem, args.scaling, seed, args.evals, args.parallel, str(path))
                )
    rank = {m: k for k, m in enumerate(_COST_ORDER)}
    todo.sort(key=lambda t: (rank.get(t[0], len(rank)), t[3]))
    if not todo:
        print(f"All {settings} runs are stored.", file=sys.stderr)
        return
    print(f"{len(todo)} runs to do ({settings}) with {args.jobs} process(es).", file=sys.stderr)
    start = time.perf_counter()
    if args.jobs == 1:
        outcomes: Iterable[tuple[str, float | None, str | None]] = (_run_one(*t) for t in todo)
    else:
        from joblib import Parallel, delayed

        os.environ["PYTHONPATH"] = os.pathsep.join(
            [str(ROOT), *filter(None, [os.environ.get("PYTHONPATH")])]
        )
        outcomes = Parallel(n_jobs=args.jobs, return_as="generator_unordered")(
            delayed(_run_one)(*t) for t in todo
        )
    for k, (path, seconds, error) in enumerate(outcomes, start=1):
        name = "/".join(Path(path).parts[-3:])
        elapsed = time.perf_counter() - start
        status = f"{seconds:.1f}s" if error is None else f"FAILED {error}"
        print(f"[{k}/{len(todo)} {elapsed:.0f}s] {name}: {status}", file=sys.stderr)


# ---- reporting ----------------------------------------------------------------------------------


def best_known(results: Path, problem: Problem) -> tuple[float, bool]:
    """``(f*, beaten)``: the value regret is measured against, and whether a run beat f_min."""
    if problem.is_synthetic:
        return problem.f_min, False
    best = math.inf
    for path in (results / "runs").glob(f"*/{problem.name}/*/seed*.json"):
        record = load_run(path)
        if is_valid(record) and record.get("best") is not None:  # type: ignore[union-attr]
            best = min(best, float(record["best"]))
    if math.isnan(problem.f_min):
        return best, False
    return min(problem.f_min, best), best < problem.f_min


def collect(
    results: Path,
    settings: str,
    problems: Sequence[str],
    methods: Sequence[str],
    seeds: Sequence[int],
    evals: int,
    f_star: dict[str, float],
    fingerprint: str,
    stale: set[str],
) -> dict[str, dict[str, np.ndarray]]:
    """problem -> method -> array (seeds x evals) of best-so-far regret, from the stored runs.

    Paths of amtlib runs made with other amtlib source than ``fingerprint`` are added to ``stale``.
    """
    curves: dict[str, dict[str, np.ndarray]] = {}
    for problem in problems:
        curves[problem] = {}
        for method in methods:
            rows = []
            for seed in seeds:
                path = run_path(results, settings, problem, method, seed)
                record = load_run(path)
                if record is None or not is_valid(record):
                    continue  # missing, or made on an older definition of the problem
                if not is_current(record, fingerprint):
                    stale.add(str(path))
                losses = np.array([math.inf if v is None else v for v in record["losses"]][:evals])
                if len(losses) < evals:
                    continue
                rows.append(np.minimum.accumulate(losses) - f_star[problem])
            if rows:
                curves[problem][method] = np.array(rows)
    return curves


def final(curves: dict[str, dict[str, np.ndarray]], problem: str, method: str) -> np.ndarray | None:
    data = curves.get(problem, {}).get(method)
    return None if data is None else data[:, -1]


def _fmt(x: float) -> str:
    return "inf" if not math.isfinite(x) else f"{x:.3g}"


def regret_table(
    curves: dict[str, dict[str, np.ndarray]], problems: Sequence[str], methods: Sequence[str]
) -> str:
    lines = [
        "| problem | " + " | ".join(methods) + " |",
        "|---|" + "---|" * len(methods),
    ]
    for problem in problems:
        cells = []
        for method in methods:
            values = final(curves, problem, method)
            if values is None:
                cells.append("-")
                continue
            q25, q50, q75 = np.percentile(values, [25, 50, 75])
            cells.append(f"{_fmt(q50)} [{_fmt(q25)}, {_fmt(q75)}] (n={len(values)})")
        lines.append(f"| {problem} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def seconds_table(
    results: Path,
    settings: str,
    problems: Sequence[str],
    methods: Sequence[str],
    seeds: Sequence[int],
) -> str:
    lines = ["| problem | " + " | ".join(methods) + " |", "|---|" + "---|" * len(methods)]
    total = dict.fromkeys(methods, 0.0)
    for problem in problems:
        cells = []
        for method in methods:
            times = [
                r["seconds"]
                for seed in seeds
                if (r := load_run(run_path(results, settings, problem, method, seed))) is not None
                and is_valid(r)
            ]
            total[method] += sum(times)
            cells.append(f"{np.median(times):.1f}" if times else "-")
        lines.append(f"| {problem} | " + " | ".join(cells) + " |")
    lines.append("| total (all seeds) | " + " | ".join(f"{total[m]:.0f}" for m in methods) + " |")
    return "\n".join(lines)


def _ratio(a: float, b: float) -> float:
    return (a + 1e-12) / (b + 1e-12)


def ratio_evidence(values: np.ndarray, reference: np.ndarray, resamples: int = 2000) -> str:
    """How sure a "worse than the reference" verdict on median regret is, for the notes.

    A bootstrap 90% interval of the ratio of medians (seeds resampled with replacement, seeded so
    reports are reproducible) and the one-sided Mann-Whitney p-value that ``values`` tend to be
    larger than ``reference``. A ratio target read from 10 seeds of a bimodal regret (some seeds
    stuck in a local minimum) can miss by 3x on noise alone; these say when that is the case.
    """
    from scipy.stats import mannwhitneyu

    rng = np.random.default_rng(0)
    a = rng.choice(values, size=(resamples, len(values)))
    b = rng.choice(reference, size=(resamples, len(reference)))
    ratios = (np.median(a, axis=1) + 1e-12) / (np.median(b, axis=1) + 1e-12)
    low, high = np.quantile(ratios, [0.05, 0.95])
    pval = float(mannwhitneyu(values, reference, alternative="greater").pvalue)
    return f"90% CI {low:.2g} to {high:.2g}x, p(worse)={pval:.2f}"


def lag_floor(sequential: np.ndarray, parallel: int) -> float:
    """How far below a parallel run's regret the sequential run's can be, at equal evaluations.

    ``sequential``: best-so-far regret per seed and evaluation, shape ``(seeds, evals)``. A run with
    ``parallel`` workers proposes its last ``parallel - 1`` points without the results of the
    others, so at best it matches the sequential run ``parallel - 1`` evaluations earlier: the
    ratio of the sequential medians there and at the end is a floor on the parallel ratio (1 when
    the sequential run had stopped improving). Above the 1.25x target, a parallel run would have
    to beat the sequential one's own earlier evaluations to meet it. On a bimodal regret the median
    can jump between the two columns, so read it beside the per-seed picture.
    """
    earlier = float(np.median(sequential[:, -parallel]))
    return _ratio(earlier, float(np.median(sequential[:, -1])))


def summary(
    args: argparse.Namespace,
    curves: dict[str, dict[str, np.ndarray]],
    f_star: dict[str, float],
    fingerprint: str,
    stale: set[str],
) -> list[str]:
    """One line per target, from the stored runs, with the per-problem ratios behind it."""
    from scipy.stats import mannwhitneyu

    seeds = list(range(args.first_seed, args.first_seed + args.seeds))
    bayes = "amtlib-bayesian"
    lines: list[str] = []

    def stored(parallel: int, scaling: str) -> dict[str, dict[str, np.ndarray]]:
        if (parallel, scaling) == (args.parallel, args.scaling):
            return curves
        settings = settings_name(args.evals, parallel, scaling)
        return collect(args.results, settings, args.problems, [bayes], seeds, args.evals,
                       f_star, fingerprint, stale)  # fmt: skip

    def verdict(name: str, wins: list[str], checked: list[str], need: str, notes: list[str]):
        missed = [p for p in checked if p not in wins]
        tail = f"; not on: {', '.join(missed)}" if missed else ""
        lines.append(f"- {name}: {len(wins)}/{len(checked)} problems (target: {need}){tail}")
        lines.append(f"  {'; '.join(notes)}" if notes else "  n/a: no stored runs to compare")

    def ratio_check(
        data: dict[str, dict[str, np.ndarray]],
        reference: dict[str, dict[str, np.ndarray]],
        problems: Sequence[str],
        limit: float,
    ) -> tuple[list[str], list[str], list[str]]:
        """Problems checked, those whose median ratio to ``reference`` is within ``limit``, notes."""
        checked, wins, notes = [], [], []
        for p in problems:
            a_values, b_values = final(data, p, bayes), final(reference, p, bayes)
            if a_values is None or b_values is None:
                continue
            a, b = float(np.median(a_values)), float(np.median(b_values))
            checked.append(p)
            evidence = ratio_evidence(a_values, b_values)
            notes.append(f"{p} {_ratio(a, b):.3g}x ({a:.3g} vs {b:.3g}; {evidence})")
            if _ratio(a, b) <= limit:
                wins.append(p)
        return checked, wins, notes

    def median_of(data: dict[str, dict[str, np.ndarray]], p: str, m: str) -> float | None:
        values = final(data, p, m)
        return None if values is None else float(np.median(values))

    if (args.parallel, args.scaling) == (1, "as-given"):
        for peer, need in [("optuna-tpe", "all"), ("amtlib-random", "all: Random is the floor")]:
            checked, wins, notes = [], [], []
            for p in args.problems:
                a, b = median_of(curves, p, bayes), median_of(curves, p, peer)
                if a is not None and b is not None:
                    checked.append(p)
                    notes.append(f"{p} {_ratio(a, b):.3g}x ({a:.3g} vs {b:.3g})")
                    if a < b:
                        wins.append(p)
            verdict(f"Bayesian < {peer} (median regret ratio)", wins, checked, need, notes)
        checked, wins, notes = [], [], []
        for p in args.problems:
            a = median_of(curves, p, bayes)
            peers = {m: v for m in GP_PEERS if (v := median_of(curves, p, m)) is not None}
            if a is None or not peers:
                continue
            best = min(peers, key=peers.__getitem__)
            checked.append(p)
            notes.append(f"{p} {_ratio(a, peers[best]):.3g}x ({a:.3g} vs {peers[best]:.3g} {best})")
            if a <= peers[best]:
                wins.append(p)
        verdict("Bayesian <= best GP peer (median regret ratio)", wins, checked, "most", notes)

    if args.parallel > 1 and args.scaling == "as-given":
        sequential = stored(1, "as-given")
        checked, wins, notes = ratio_check(curves, sequential, args.problems, 1.25)
        name = f"Bayesian with {args.parallel} parallel jobs within 1.25x of sequential"
        verdict(name, wins, checked, "all", notes)
        floors = [
            f"{p} {lag_floor(sequential[p][bayes], args.parallel):.3g}x"
            for p in checked
            if sequential[p].get(bayes) is not None
            and sequential[p][bayes].shape[1] >= args.parallel
        ]
        if floors:
            lines.append(
                f"  lag floor (sequential median at evaluation {args.evals - args.parallel + 1} "
                f"over at {args.evals}: what {args.parallel - 1} blind proposals cost at the least): "
                f"{'; '.join(floors)}"
            )
        peer_runs = collect(args.results, settings_name(args.evals, 1, "as-given"), args.problems,
                            ["optuna-tpe", *GP_PEERS], seeds, args.evals, f_star, fingerprint,
                            stale)  # fmt: skip
        against = []
        for p in checked:
            ours = median_of(curves, p, bayes)
            peers = {
                m: v
                for m in ("optuna-tpe", *GP_PEERS)
                if (v := median_of(peer_runs, p, m)) is not None
            }
            if ours is not None and peers:
                best = min(peers, key=peers.__getitem__)
                against.append(f"{p} {_ratio(ours, peers[best]):.3g}x ({best})")
        if against:
            lines.append(
                f"  context, not a target: with {args.parallel} jobs against the best peer's "
                f"sequential median: {'; '.join(against)}"
            )

    if args.parallel == 1 and args.scaling in ("auto", "linear"):
        given, auto, linear = stored(1, "as-given"), stored(1, "auto"), stored(1, "linear")
        scaled = [p for p in args.problems if PROBLEMS[p].has_nonlinear_scaling]
        need = "all with a non-Linear range"
        checked, wins, notes = ratio_check(auto, given, scaled, 1.5)
        verdict("Bayesian Auto within 1.5x of as-given", wins, checked, need, notes)
        checked, wins, notes = [], [], []
        for p in scaled:
            a_values, lin_values = final(auto, p, bayes), final(linear, p, bayes)
            if a_values is not None and lin_values is not None:
                checked.append(p)
                a, lin = float(np.median(a_values)), float(np.median(lin_values))
                pval = float(mannwhitneyu(a_values, lin_values, alternative="less").pvalue)
                notes.append(f"{p} {_ratio(a, lin):.3g}x ({a:.3g} vs {lin:.3g}) p={pval:.3f}")
                if a < lin and pval < 0.05:
                    wins.append(p)
        name = "Bayesian Auto clearly better than Linear (ratio, one-sided Mann-Whitney p < 0.05)"
        verdict(name, wins, checked, need, notes)
    return lines


def report(args: argparse.Namespace, methods: Sequence[str], fingerprint: str) -> str:
    settings = settings_name(args.evals, args.parallel, args.scaling)
    seeds = list(range(args.first_seed, args.first_seed + args.seeds))
    f_star: dict[str, float] = {}
    notes = []
    for name in args.problems:
        value, beaten = best_known(args.results, PROBLEMS[name])
        f_star[name] = value
        if beaten:
            notes.append(
                f"{name}: a stored run beat the reference {PROBLEMS[name].f_min:.6g}; f* = {value:.6g}"
            )
        elif not PROBLEMS[name].is_synthetic and math.isnan(PROBLEMS[name].f_min):
            notes.append(f"{name}: no reference yet; f* = best stored loss {value:.6g}")
    stale: set[str] = set()
    curves = collect(args.results, settings, args.problems, methods, seeds, args.evals,
                     f_star, fingerprint, stale)  # fmt: skip
    out = [
        f"## Simple regret after {args.evals} evaluations ({settings}; median [IQR] over seeds)",
        "",
        regret_table(curves, args.problems, methods),
        "",
        "## Wall-clock seconds per run (median; one core each)",
        "",
        seconds_table(args.results, settings, args.problems, methods, seeds),
        "",
        "## Targets",
        "",
        *summary(args, curves, f_star, fingerprint, stale),
    ]
    if stale:
        notes.append(
            f"{len(stale)} stored amtlib runs in this report were made with other amtlib source "
            "than the current one; run without --report-only (and without --keep-stale) to redo them"
        )
    if notes:
        out += ["", "Notes:", *[f"- {n}" for n in notes]]
    curve_json = {
        p: {
            m: {
                "median": np.median(a, axis=0).tolist(),
                "q25": np.percentile(a, 25, axis=0).tolist(),
                "q75": np.percentile(a, 75, axis=0).tolist(),
                "n": int(a.shape[0]),
            }
            for m, a in by_method.items()
        }
        for p, by_method in curves.items()
    }
    text = "\n".join(out)
    missing = [f"{m} on {p}" for p in args.problems for m in methods if m not in curves.get(p, {})]
    if args.report_only and not args.write:
        return text
    if missing:  # the per-run cache is not in git: a fresh clone must not blank the reports
        print(
            f"report-{settings}.md not written: no stored runs of {', '.join(missing[:4])}"
            f"{' ...' if len(missing) > 4 else ''}",
            file=sys.stderr,
        )
        return text
    args.results.mkdir(parents=True, exist_ok=True)
    (args.results / f"curves-{settings}.json").write_text(
        json.dumps({"f_star": f_star, "curves": curve_json}, indent=1)
    )
    (args.results / f"report-{settings}.md").write_text(text + "\n")
    return text


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description="Sample efficiency of amtlib's Bayesian strategy against its peers.",
        epilog="See the module docstring for the targets and how regret is defined.",
    )
    parser.add_argument("--methods", nargs="+", default=list(METHODS), choices=METHODS)
    parser.add_argument("--problems", nargs="+", default=list(PROBLEMS), choices=list(PROBLEMS))
    parser.add_argument("--seeds", type=int, default=10, help="number of seeds (default 10)")
    parser.add_argument("--first-seed", type=int, default=0)
    parser.add_argument("--evals", type=int, default=50)
    parser.add_argument("--parallel", type=int, default=1, help="simulated workers (default 1)")
    parser.add_argument("--scaling", choices=SCALINGS, default="as-given")
    parser.add_argument("--jobs", type=int, default=2, help="processes (default 2)")
    parser.add_argument("--results", type=Path, default=RESULTS)
    parser.add_argument("--report-only", action="store_true", help="print the tables, run nothing")
    parser.add_argument(
        "--write",
        action="store_true",
        help="with --report-only: also write the report files (a run always writes them)",
    )
    parser.add_argument("--keep-stale", action="store_true",
                        help="use stored amtlib runs made with other amtlib source")  # fmt: skip
    parser.add_argument("--list", action="store_true", help="list methods and problems")
    args = parser.parse_args(argv)
    if min(args.seeds, args.evals, args.parallel, args.jobs) < 1 or args.first_seed < 0:
        parser.error("--seeds, --evals, --parallel and --jobs must be >= 1, --first-seed >= 0")

    if args.list:
        for m in METHODS:
            print(f"{m:18s} {unavailable_reason(m, args.parallel) or 'available'}")
        for p in PROBLEMS.values():
            print(f"{p.name:18s} f_min={p.f_min:.10g}  {p.description}")
        return 0
    methods = []
    for m in args.methods:
        reason = unavailable_reason(m, args.parallel)
        if reason is None:
            methods.append(m)
        else:
            print(f"skipping {m}: {reason}", file=sys.stderr)
    fingerprint = amtlib_fingerprint(MULTI_FIDELITY_MODULES)
    if not args.report_only:
        run_grid(args, methods, fingerprint)
    print(report(args, methods, fingerprint))
    return 0


if __name__ == "__main__":
    from benchmarks.quality import main as _main  # pickled by reference in the worker processes

    sys.exit(_main())
