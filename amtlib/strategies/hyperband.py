"""Hyperband: asynchronous successive halving across brackets (AMT's ``Hyperband``, and more).

Resource is counted in steps (one report of the objective metric, e.g. an epoch). Rung levels are
``min_resource * eta**k`` below ``max_resource``, and ``max_resource`` itself ends every job.
Bracket ``b`` makes its first decision at the ``b``-th rung level, so bracket 0 is the most aggressive
and the last bracket runs every job to ``max_resource`` (plain random search); a new job joins a
bracket drawn from the job's own seeded stream with Hyperband's weights (how many configurations the
synchronous algorithm would start in it), which ``bracket_selection="adaptive"`` (the default)
reweighs by how well each rung level has ranked the jobs that reached the top (:func:`keep_rate`,
:func:`adaptive_bracket_scores`). The bracket is stored with the job (``launch_record``) and read
back by ``restore``.

When a job reports a step that reaches a rung of its bracket, its value is recorded at that rung
level and compared with the ``k`` values recorded there so far. With ``rungs="pooled"`` (the
default, as Syne Tune's ``rung_system_per_bracket=False``) one set of rungs is shared by every
bracket: brackets differ only in where their first decision is, so a job's value at level ``L`` is
compared with the values at ``L`` of jobs of every bracket that reached it (more values, earlier
and better-informed decisions). ``rungs="per_bracket"`` keeps each bracket's rungs apart, as Li et
al.'s Hyperband: a gentle bracket's jobs are then judged among themselves rather than against
survivors of the early rungs, which helps when good configurations usually start slowly. Then:

- ``mode="stopping"`` (AMT's behaviour): it continues when its value is among the best
  ``max(1, floor(k / eta))`` of the ``k`` values recorded at that rung so far (ties continuing),
  else it stops;
- ``mode="promotion"``: it continues when it is among the best ``floor(k / eta)`` of the ``k`` values
  at the rung and that many have not been promoted yet; else it *pauses* (it ends now, keeping its
  checkpoint). When a slot frees, a paused job that has since earned promotion (more jobs reached its
  rung) is resumed from its checkpoint before any new configuration is started.

New configurations are random (as in AMT) or, with ``model="bayesian"``, proposed by one Gaussian
process over (configuration, log resource) fitted to the values every job reported at every rung
level it reached, with expected improvement taken at ``max_resource`` (in the spirit of BOHB and
MOBSTER; see :mod:`amtlib.strategies._multifidelity`). The model takes over once ``max(4, d + 2)``
configurations have a value; even then every third new configuration stays random (BOHB's
``random_fraction`` of 1/3, interleaved deterministically as SMAC does), so that a model misled by
early rungs is still corrected. In a finite space (integer and categorical ranges only) no
configuration is launched twice, as with Random, and no new job starts once all have been.

The module is over 400 lines because the strategy's configuration (AMT's and amtlib's keys, aliases,
``max_resource`` inferred from static hyperparameters) is validated here, next to the only code that
reads it.
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from scipy import special

from amtlib.errors import ValidationError, describe_value
from amtlib.records import Trial
from amtlib.reporting import Action, Decision
from amtlib.space import SearchSpace, is_int
from amtlib.strategies._multifidelity import MultiFidelityGP, Observation
from amtlib.strategies.base import Strategy, trial_rng
from amtlib.strategies.random import UnseenDraws

_MODES = ("stopping", "promotion")
_MODELS = ("random", "bayesian")
_RUNG_SYSTEMS = ("pooled", "per_bracket")
_SELECTIONS = ("fixed", "adaptive")
#: Adaptive bracket selection shrinks each level's estimated keep rate towards chance with this
#: many pseudo-jobs, so that with little top-level data the weights stay Hyperband's.
PRIOR_JOBS = 6
#: Model-based Hyperband gives every ``RANDOM_EVERY``-th job (index ``k * RANDOM_EVERY - 1``) a
#: random configuration all the same, so the model's mistakes are corrected: BOHB's
#: ``random_fraction`` of 1/3, interleaved deterministically as SMAC's ``ChooserNoCoolDown``.
RANDOM_EVERY = 3
#: Static hyperparameters that name the number of epochs, read when max_resource is not given.
EPOCH_NAMES = ("epochs", "num_epochs", "n_epochs", "numepochs", "n-epochs")
#: The largest step count (resource) accepted: steps become floats in the model's inputs.
_MAX_STEPS = 2**53
_AMT_KEYS = {"MinResource": "min_resource", "MaxResource": "max_resource"}
_CHOICES = {
    "mode": _MODES,
    "model": _MODELS,
    "rungs": _RUNG_SYSTEMS,
    "bracket_selection": _SELECTIONS,
}
_CONFIG_KEYS = frozenset(
    {
        "min_resource",
        "max_resource",
        "reduction_factor",
        "mode",
        "model",
        "brackets",
        "rungs",
        "bracket_selection",
    }
)


def hyperband_config(
    config: Mapping[str, Any],
    static_hyperparameters: Mapping[str, Any],
    tuned: Collection[str] = (),
) -> dict[str, Any]:
    """Validate ``strategy_config`` for Hyperband, in our keys or AMT's, inferring ``max_resource``.

    Accepts ``{"min_resource": 1, "max_resource": 81, ...}``, AMT's ``MinResource`` /
    ``MaxResource`` (at the top level or in ``{"HyperbandStrategyConfig": {...}}``), and the string
    options in any case (``"Promotion"``). Without a ``max_resource`` it is read from a static
    hyperparameter named like an epoch count (an int, ``10.0`` or ``"10"``, as AMT passes them).
    ``tuned`` names the tuned ranges (for the error when an epoch count is tuned rather than static).
    Returns our keys only, every option canonical: validating the result again returns it unchanged.
    """
    config, origin = _resource_settings(config)
    unknown = sorted(set(config) - _CONFIG_KEYS, key=str)
    if unknown:
        raise ValidationError(
            f"strategy_config has keys {unknown} that Hyperband does not know. Known: "
            f"{sorted(_CONFIG_KEYS)} (or AMT's 'MinResource', 'MaxResource' and "
            "'HyperbandStrategyConfig'). Fix: remove them."
        )
    if config.get("max_resource") is None:
        found = [n for n in EPOCH_NAMES if n in static_hyperparameters]
        in_ranges = [n for n in EPOCH_NAMES if n in tuned]
        if not found and in_ranges:
            raise ValidationError(
                f"Hyperband needs a max_resource (the most steps, e.g. epochs, a job may run). Got "
                f"none in strategy_config, and {in_ranges[0]!r} is a tuned range, not a static "
                "hyperparameter, so it cannot give one (Hyperband itself decides how many epochs "
                f"each job trains). Fix: move {in_ranges[0]!r} to static_hyperparameters with the "
                "most epochs a job may train, or pass strategy_config={'max_resource': 81}."
            )
        if not found:
            raise ValidationError(
                "Hyperband needs a max_resource (the most steps, e.g. epochs, a job may run). Got "
                "none in strategy_config and no static hyperparameter named "
                f"{' / '.join(EPOCH_NAMES)}. Fix: pass strategy_config={{'max_resource': 81}} or "
                "static_hyperparameters={'epochs': 81}."
            )
        origin["max_resource"] = f"static_hyperparameters[{found[0]!r}]"
        config["max_resource"] = _epochs(found[0], static_hyperparameters[found[0]])
    config.setdefault("min_resource", 1)
    config.setdefault("reduction_factor", 3)
    config.setdefault("mode", "stopping")
    config.setdefault("model", "random")
    # Pooled rungs by default, with random and model-based proposals alike (docs/design.md).
    config.setdefault("rungs", "pooled")
    # Brackets start at Hyperband's weights and move as the data show how far early rungs predict.
    config.setdefault("bracket_selection", "adaptive")
    for key in ("min_resource", "max_resource", "reduction_factor"):
        value = config[key]
        low = 2 if key == "reduction_factor" else 1
        if not is_int(value) or not low <= value <= _MAX_STEPS:
            raise ValidationError(
                f"Hyperband's {key} must be an int from {low} to 2**53. Got "
                f"{describe_value(value)} instead (from {origin.get(key, 'the default')}). "
                f"Fix: pass a whole number >= {low} (steps beyond 2**53 are not exact as floats)."
            )
        config[key] = int(value)
    brackets = config.setdefault("brackets", None)
    if brackets is not None and (not is_int(brackets) or brackets < 1):
        raise ValidationError(
            f"Hyperband's brackets must be an int >= 1 or None (all). Got {describe_value(brackets)} "
            "instead. Fix: pass 1 for asynchronous successive halving alone (ASHA), or omit it."
        )
    low, high, eta = config["min_resource"], config["max_resource"], config["reduction_factor"]
    if low >= high:
        raise ValidationError(
            f"Hyperband needs min_resource < max_resource. Got min_resource={low} (from "
            f"{origin.get('min_resource', 'the default')}), max_resource={high} (from "
            f"{origin['max_resource']}). "
            "Fix: lower min_resource or raise max_resource."
        )
    if brackets is not None:
        # Only now is the number of brackets known: one per rung level, plus the one without.
        levels = rung_levels(low, high, eta)
        available = len(levels) + 1
        if brackets > available:
            raise ValidationError(
                f"Hyperband's brackets must be at most the {available} brackets that "
                f"min_resource={low}, max_resource={high} and reduction_factor={eta} give (rung "
                f"levels {levels}). Got {describe_value(brackets)} instead. Fix: pass "
                f"brackets={available} or fewer, or omit it for all of them."
            )
        config["brackets"] = int(brackets)
    for key, allowed in _CHOICES.items():
        config[key] = _choice(key, config[key], allowed)
    return config


def _resource_settings(config: Mapping[str, Any]) -> tuple[dict[str, Any], dict[str, str]]:
    """``config`` with AMT's ``MinResource`` / ``MaxResource`` under our keys, and where each came from.

    The key order is kept (a resumed tuning job compares its configuration as JSON text): an alias
    takes its own place, the wrapped ``HyperbandStrategyConfig`` settings go last. The same setting
    given twice must agree; ``None`` counts as not given.
    """
    amt = config.get("HyperbandStrategyConfig")
    if amt is not None and (not isinstance(amt, Mapping) or set(amt) - set(_AMT_KEYS)):
        raise ValidationError(
            "strategy_config['HyperbandStrategyConfig'] must be a dict with 'MinResource' and/or "
            f"'MaxResource'. Got {describe_value(amt)} instead. Fix: e.g. "
            "{'HyperbandStrategyConfig': {'MinResource': 1, 'MaxResource': 81}}."
        )
    given = [
        (_AMT_KEYS.get(key, key), f"strategy_config[{key!r}]", value)
        for key, value in config.items()
        if key != "HyperbandStrategyConfig"
    ]
    given += [
        (_AMT_KEYS[key], f"strategy_config['HyperbandStrategyConfig'][{key!r}]", value)
        for key, value in (amt or {}).items()
    ]
    out: dict[str, Any] = {}
    origin: dict[str, str] = {}
    for key, where, value in given:
        if out.get(key) is None:
            out[key], origin[key] = value, where
        elif value is not None and not _same(value, out[key]):
            raise ValidationError(
                f"strategy_config gives Hyperband's {key} twice, with different values. Got "
                f"{origin[key]}={out[key]!r} and {where}={value!r}. Fix: give it once."
            )
    return out, origin


def _same(a: object, b: object) -> bool:
    try:
        return bool(a == b)
    except Exception:  # e.g. arrays, whose == is elementwise
        return False


def resource_warnings(
    config: Mapping[str, Any], static_hyperparameters: Mapping[str, Any], tuned: Collection[str]
) -> list[str]:
    """What looks wrong, though it may be meant, in the sources of a validated config's resource.

    An epoch count tuned as a range (Hyperband decides how long each job trains), and a static
    epoch count below ``max_resource`` (no job could reach the top rung).
    """
    messages = []
    high = config["max_resource"]
    for name in EPOCH_NAMES:
        if name in tuned:
            messages.append(
                f"Hyperband decides how many steps each job trains (up to max_resource={high}), "
                f"but {name!r} is also a tuned range. Fix: unless your steps are not epochs, "
                f"remove {name!r} from hyperparameter_ranges and train until Hyperband stops the "
                "job (or to max_resource)."
            )
        elif name in static_hyperparameters:
            try:
                epochs = _epochs(name, static_hyperparameters[name])
            except ValidationError:
                continue  # not an epoch count after all: nothing to compare
            if epochs < high:
                messages.append(
                    f"static_hyperparameters[{name!r}] = {epochs} is below Hyperband's "
                    f"max_resource = {high}: if each job trains {epochs} epochs, none reaches "
                    "the top rung, where Hyperband judges configurations. Fix: set them equal, "
                    "or omit max_resource to take it from the epochs."
                )
    return messages


def _epochs(name: str, value: object) -> int:
    """An epoch count from a static hyperparameter: an int, ``10.0`` or ``"10"`` (AMT's strings)."""
    count: int | None = None
    if is_int(value):
        count = int(value)  # type: ignore[call-overload]
    elif isinstance(value, numbers.Real) and not isinstance(value, (bool, np.bool_)):
        as_float = float(value)
        count = int(as_float) if math.isfinite(as_float) and as_float.is_integer() else None
    elif isinstance(value, str) and value.strip().isascii() and value.strip().isdigit():
        count = int(value.strip())
    if count is None or count < 1:
        raise ValidationError(
            f"static_hyperparameters[{name!r}] gives Hyperband's max_resource (the most steps a "
            "job may run), so it must be a whole number >= 1: an int, a float such as 10.0 or a "
            f"string of digits such as '10'. Got {describe_value(value)} instead. Fix: pass e.g. "
            f"static_hyperparameters={{{name!r}: 10}}, or strategy_config={{'max_resource': 10}}."
        )
    return count


def _choice(key: str, value: object, allowed: Sequence[str]) -> str:
    """The canonical spelling of a string option, case-insensitive (``"Per-Bracket"`` too)."""
    if isinstance(value, str):
        wanted = value.strip().lower().replace("-", "_").replace(" ", "_")
        if wanted in allowed:
            return wanted
    raise ValidationError(
        f"Hyperband's {key} must be one of {list(allowed)} (case-insensitive). Got "
        f"{describe_value(value)} instead. Fix: pass one of those."
    )


def rung_levels(min_resource: int, max_resource: int, eta: int) -> list[int]:
    """Decision levels ``min_resource * eta**k`` strictly below ``max_resource``."""
    levels, level = [], min_resource
    while level < max_resource:
        levels.append(level)
        level *= eta
    return levels


def bracket_weights(n_levels: int, eta: int) -> np.ndarray:
    """Probability of each bracket: synchronous Hyperband's count of configurations in it.

    Bracket ``b`` (0 = most aggressive) makes ``s = n_levels - b`` halvings; Hyperband (Li et al.,
    2018) starts ``ceil((s_max + 1) * eta**s / (s + 1))`` configurations in it.
    """
    s_max = n_levels
    counts = [math.ceil((s_max + 1) * eta**s / (s + 1)) for s in range(s_max, -1, -1)]
    w = np.asarray(counts, dtype=float)
    return w / w.sum()


def keep_rate(low: np.ndarray, top: np.ndarray, eta: int) -> float:
    """How often keeping the best of ``eta`` jobs at a lower level keeps the best at the top.

    Over every group of ``eta`` jobs with a value at both levels: the fraction of groups whose best
    top-level value belongs to a job that is also best at the lower level (ties there count as
    kept, as successive halving keeps them). Chance level is ``1 / eta``; 1 means the lower level
    ranks as the top does. Counted without enumerating groups: job ``i`` wins a group when the
    other ``eta - 1`` members are worse than it at both levels.
    """
    n = len(top)
    if n < eta:
        return 1.0 / eta
    worse = (top[None, :] > top[:, None]) & (low[None, :] >= low[:, None])
    wins = special.comb(worse.sum(axis=1), eta - 1)
    return float(wins.sum() / special.comb(n, eta))


def adaptive_bracket_scores(rates: Sequence[float], eta: int) -> np.ndarray:
    """Each bracket's worth per unit of budget, from the keep rate of every rung level.

    Bracket ``b`` decides at levels ``b, b + 1, ...``; each decision lets it start ``eta`` times as
    many configurations for the same budget and keeps the eventual best with probability
    ``rates[k]``, so its worth relative to plain random search is ``prod(eta * rates[k], k >= b)``:
    1 when every level ranks at chance (Hyperband's equal budgets), ``eta ** decisions`` when the
    levels rank perfectly. The last bracket (no decisions) scores 1.
    """
    factors = eta * np.asarray(rates, dtype=float)
    return np.append(np.cumprod(factors[::-1])[::-1], 1.0)


@dataclass
class _Job:
    bracket: int
    hyperparameters: dict[str, Any]
    values: dict[int, float] = field(default_factory=dict)  # rung level -> loss recorded there
    # step -> loss of the first report at or past each rung level and at max_resource (model data)
    curve: dict[int, float] = field(default_factory=dict)
    # rung level or max_resource -> loss of the first report at or past it (bracket selection data)
    at_level: dict[int, float] = field(default_factory=dict)
    last_step: int = 0
    paused_at: int | None = None
    # Told to pause, but its attempt has not ended yet: it may not be promoted until it has (the
    # same job would otherwise run twice at once, and the paused attempt's record land last).
    pausing: bool = False
    finished: bool = False
    failed: bool = False  # the configuration failed (an exception, a NaN), not killed by the tuner


class HyperbandStrategy(Strategy):
    """Asynchronous successive halving over brackets; see the module docstring.

    ``strategy_config`` (validated by :func:`hyperband_config`): ``min_resource`` (default 1),
    ``max_resource`` (required unless a static ``epochs``-like hyperparameter gives it),
    ``reduction_factor`` (default 3), ``mode`` (``"stopping"`` or ``"promotion"``), ``model``
    (``"random"`` or ``"bayesian"``), ``brackets`` (how many of the most aggressive brackets to use;
    default all, as Hyperband; 1 is ASHA), ``rungs`` (``"pooled"``, the default: one set of rungs
    shared by all brackets; ``"per_bracket"``: each bracket its own), ``bracket_selection``
    (``"adaptive"``, the default, or ``"fixed"``).
    """

    name = "Hyperband"
    stops_trials = True
    config_keys = _CONFIG_KEYS

    def __init__(
        self, space: SearchSpace, *, seed: int, config: Mapping[str, Any] | None = None
    ) -> None:
        config = hyperband_config(config or {}, {})
        super().__init__(space, seed=seed, config=config)
        self.min_resource = int(config["min_resource"])
        self.max_resource = int(config["max_resource"])
        self.eta = int(config["reduction_factor"])
        self.mode = str(config["mode"])
        self.levels = rung_levels(self.min_resource, self.max_resource, self.eta)
        weights = bracket_weights(len(self.levels), self.eta)[: config["brackets"]]
        self.weights = weights / weights.sum()  # Hyperband's; adaptive selection reweighs them
        self.adaptive = config["bracket_selection"] == "adaptive"
        # (jobs with a top-level value, bracket weights, keep rates), recomputed when that grows
        self._adapted: tuple[int, np.ndarray, list[float]] | None = None
        self.jobs: dict[int, _Job] = {}
        # The model warm-starts its fits: a restored run reaches the same data, not the same bits.
        self.exact_replay = config["model"] != "bayesian"
        self.pooled = config["rungs"] == "pooled"
        # rung system (0 when pooled, else the bracket) -> level -> job -> loss recorded there
        self.rungs: dict[int, dict[int, dict[int, float]]] = {}
        self.promoted: dict[tuple[int, int], set[int]] = {}  # (rung system, level) -> jobs promoted
        self._model = (
            MultiFidelityGP(
                space, seed=seed, min_resource=self.min_resource, max_resource=self.max_resource
            )
            if config["model"] == "bayesian"
            else None
        )
        # Distinct configurations with a value before the model takes over (as BOHB's d + 2).
        self._enough = max(4, len(space) + 2)
        self._draws = UnseenDraws(space)  # a finite space: no configuration twice, then exhausted

    # -- new configurations -----------------------------------------------------------------------

    def bracket_of(self, index: int) -> int:
        """The bracket of a job launched now as ``index``: drawn from its own stream, so reproducible.

        With ``bracket_selection="adaptive"`` the weights depend on the data so far, so the bracket
        also depends on the order in which results arrived (as the model's proposals do).
        """
        rng = trial_rng(self.seed, index)
        rng.random()  # the configuration's draws come after this one and the bracket's
        cdf = np.cumsum(self.bracket_weights())
        return int(np.searchsorted(cdf / cdf[-1], rng.random(), side="right"))

    def bracket_weights(self) -> np.ndarray:
        """The probability of each bracket for the next job (Hyperband's, or adapted to the data)."""
        return self._adapt()[0]

    def _adapt(self) -> tuple[np.ndarray, list[float]]:
        """Bracket weights and each rung level's keep rate, from the jobs that reached the top.

        Adaptive selection: a level's keep rate (:func:`keep_rate`, between the level and
        ``max_resource``, over the jobs with both) is shrunk towards chance with ``PRIOR_JOBS``
        pseudo-jobs, and each bracket's Hyperband weight is multiplied by its worth per unit of
        budget (:func:`adaptive_bracket_scores`). With fixed selection: Hyperband's weights, and
        every rate at chance.
        """
        chance = 1.0 / self.eta
        if not self.adaptive:
            return self.weights, [chance] * len(self.levels)
        top = [job for job in self.jobs.values() if self.max_resource in job.at_level]
        if self._adapted is not None and self._adapted[0] == len(top):
            return self._adapted[1], self._adapted[2]
        rates = []
        for level in self.levels:
            pairs = [(job.at_level[level], job.at_level[self.max_resource]) for job in top]
            pairs = [p for p in pairs if np.isfinite(p).all()]
            low, high = np.asarray(pairs, dtype=float).reshape(-1, 2).T
            n = len(pairs)
            rate = keep_rate(low, high, self.eta) if n else chance
            rates.append((n * rate + PRIOR_JOBS * chance) / (n + PRIOR_JOBS))
        scores = adaptive_bracket_scores(rates, self.eta)[: len(self.weights)]
        weights = self.weights * scores
        weights = weights / weights.sum()
        self._adapted = (len(top), weights, rates)
        return weights, rates

    def propose(self, index: int) -> dict[str, Any] | None:
        if self._draws.exhausted:
            return None
        rng = trial_rng(self.seed, index)
        rng.random()
        rng.random()  # skip the bracket draw
        if self._model is not None and index % RANDOM_EVERY != RANDOM_EVERY - 1:
            observations = self._observations()
            if len({self.space.key(o.hyperparameters) for o in observations}) >= self._enough:
                running = [
                    job.hyperparameters
                    for job in self.jobs.values()
                    if not job.finished and job.paused_at is None
                ]
                launched = [job.hyperparameters for job in self.jobs.values()]
                failed = [job.hyperparameters for job in self.jobs.values() if job.failed]
                params = self._model.suggest(index, observations, running, launched, failed)
                if params is not None:
                    return params
        return self._draws.draw(rng)

    def _observations(self) -> list[Observation]:
        """Every value recorded at a rung level or at max_resource, by every job (the model's data)."""
        return [
            Observation(job.hyperparameters, step, loss)
            for job in self.jobs.values()
            for step, loss in job.curve.items()
        ]

    def _launched(self, hyperparameters: Mapping[str, Any]) -> None:
        index = self.n_asked
        self.jobs[index] = _Job(self.bracket_of(index), dict(hyperparameters))
        self._draws.note(hyperparameters)
        super()._launched(hyperparameters)

    def launch_record(self, index: int) -> dict[str, Any]:
        """The job's bracket, stored with it: adaptive brackets cannot be recomputed on restore."""
        return {"bracket": self.jobs[index].bracket}

    # -- decisions ------------------------------------------------------------------------------

    def on_report(self, index: int, step: int, loss: float) -> Decision:
        """Decide on a report of job ``index`` at ``step`` (its loss); records rung values."""
        job = self.jobs[index]
        if step > job.last_step and (
            step >= self.max_resource or any(job.last_step < level <= step for level in self.levels)
        ):
            job.curve.setdefault(min(step, self.max_resource), loss)
            for level in (*self.levels, self.max_resource):
                if job.last_step < level <= step:
                    job.at_level.setdefault(level, loss)
        job.last_step = max(job.last_step, step)
        if step >= self.max_resource:
            # The job has had its full budget. At exactly max_resource it continues, so a training
            # loop that ends there returns normally (code after the loop runs, extra metrics are
            # kept); a job that reports beyond it is stopped at that report.
            job.values.setdefault(self.max_resource, loss)
            return Decision(
                Action.CONTINUE if step == self.max_resource else Action.STOP,
                {
                    "rule": "max_resource",
                    "step": step,
                    "max_resource": self.max_resource,
                    "completed": True,
                },
            )
        if step < self.min_resource:
            return Decision()
        decision = Decision()
        # A report that crosses several rungs at once (steps reported every few epochs) is judged
        # at each in turn, with its value; the first that ends the job decides.
        for level in self.levels[job.bracket :]:
            if step >= level and level not in job.values:
                decision = self._at_rung(index, job, level, step, loss)
                if decision.stops():
                    break
        return decision

    def _system(self, bracket: int) -> int:
        """The rung system a bracket records into: one shared by all (pooled) or its own."""
        return 0 if self.pooled else bracket

    def _at_rung(self, index: int, job: _Job, level: int, step: int, loss: float) -> Decision:
        job.values[level] = loss
        system = self._system(job.bracket)
        rung = self.rungs.setdefault(system, {}).setdefault(level, {})
        rung[index] = loss
        values = np.array(list(rung.values()))
        reason: dict[str, Any] = {
            "rule": "successive_halving",
            "step": step,
            "bracket": job.bracket,
            "rung": level,
            "value": loss,
            "recorded": len(values),
        }
        if self.mode == "stopping":
            # The best max(1, floor(k / eta)) of the k values recorded so far go on (ties too).
            keep = max(1, len(values) // self.eta)
            cutoff = float(np.sort(values)[keep - 1])
            reason.update(cutoff=cutoff, kept=keep)
            return Decision(Action.CONTINUE if loss <= cutoff else Action.STOP, reason)
        if self._promotable(system, level, index):
            self.promoted.setdefault((system, level), set()).add(index)
            return Decision(Action.CONTINUE, {**reason, "promoted": True})
        job.paused_at = level
        job.pausing = True
        return Decision(Action.PAUSE, reason)

    def _promotable(self, system: int, level: int, index: int) -> bool:
        """Among the best ``floor(k / eta)`` at the rung, with a promotion left for it."""
        rung = self.rungs.get(system, {}).get(level, {})
        allowed = len(rung) // self.eta
        done = self.promoted.get((system, level), set())
        if index in done or len(done) >= allowed:
            return False
        ranked = sorted(rung, key=lambda j: (rung[j], j))
        return index in ranked[:allowed]

    def promote(self) -> int | None:
        """A paused job to resume now (promotion mode), best first, highest rung first; else None.

        Once a finite space has no new configuration left, no rung will gain values to earn more
        promotions: the best paused job is then promoted whatever the quota, so the budget goes on
        training the most promising configurations instead of ending with all of them paused.
        """
        if self.mode != "promotion":
            return None
        no_newcomers = self._draws.exhausted
        for level in reversed(self.levels):
            for system in sorted(self.rungs):
                rung = self.rungs[system].get(level, {})
                for index in sorted(rung, key=lambda j: (rung[j], j)):
                    job = self.jobs[index]
                    if (
                        job.paused_at == level
                        and not job.pausing
                        and (no_newcomers or self._promotable(system, level, index))
                    ):
                        self.promoted.setdefault((system, level), set()).add(index)
                        job.paused_at = None
                        job.finished = False
                        return index
        return None

    def tell(self, trial: Trial) -> None:
        job = self.jobs.get(trial.index)
        if job is None:
            return
        job.pausing = False
        if trial.paused:
            return  # now resumable from its checkpoint
        # Ended (a job told to pause may still complete, fail or stop instead): never promoted.
        job.paused_at = None
        job.finished = True
        job.failed = trial.loss is None and not trial.unfinished

    def restore(self, trials: Sequence[Trial]) -> None:
        """Replay launches, then each job's reported values in launch order (rungs rebuilt).

        Decisions replayed this way may differ from the original asynchronous ones (the order of
        arrival is lost); how each job ended is taken from the records.
        """
        for trial in trials:
            self._launched(trial.hyperparameters)
            recorded = [e["bracket"] for e in trial.history if e.get("event") == "launched"]
            if recorded and isinstance(recorded[0], int) and 0 <= recorded[0] < len(self.weights):
                self.jobs[trial.index].bracket = int(recorded[0])
        for trial in trials:
            for step, loss in trial.intermediate:
                self.on_report(trial.index, step, loss)
        # Which jobs went past each rung is a fact of the records, not of the replay: a job
        # promoted later (by ``promote``) would otherwise leave its rung a promotion to spare.
        self.promoted = {}
        for trial in trials:
            job = self.jobs[trial.index]
            resumed = [e.get("step") for e in trial.history if e.get("event") == "promoted"]
            top = max(job.values, default=0)
            for level in job.values:
                later = any(isinstance(step, int) and step >= level for step in resumed)
                if level < self.max_resource and (level < top or later):
                    self.promoted.setdefault((self._system(job.bracket), level), set()).add(
                        trial.index
                    )
            levels = [level for level in job.values if level < self.max_resource]
            job.paused_at = max(levels) if trial.paused and levels else None
            job.pausing = False  # every recorded attempt has ended: a paused job is promotable
            job.finished = trial.status.is_finished() and not trial.paused
            job.failed = job.finished and trial.loss is None and not trial.unfinished

    def describe(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "MinResource": self.min_resource,
            "MaxResource": self.max_resource,
            "ReductionFactor": self.eta,
            "RungLevels": self.levels,
            "Mode": self.mode,
            "Model": self.config["model"],
            "Brackets": len(self.weights),
            "Rungs": self.config["rungs"],
            "BracketSelection": self.config["bracket_selection"],
        }
        if self.adaptive:
            weights, rates = self._adapt()
            out["BracketWeights"] = [round(float(w), 4) for w in weights]
            out["RungKeepRates"] = {
                level: round(rate, 4) for level, rate in zip(self.levels, rates, strict=True)
            }
        return out
