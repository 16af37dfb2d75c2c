"""Hyperparameter ranges, their scaling, and the search space's encoding to the unit cube.

A :class:`SearchSpace` turns named ranges into a point of ``[0, 1]^d`` and back. Strategies only ever
see that cube: a numeric range takes one dimension (scaled as its ``scaling_type`` says), a categorical
range takes one dimension per value (one-hot; decoding takes the largest). Decoding a uniform draw of
the cube gives each range's own distribution: linear, log-uniform, log-uniform in ``1 - x``, or a
uniform choice among categorical values. That is the whole of the Random strategy.

The rules of AMT (``docs/concepts.md``, "Ranges and scaling") are enforced when a range is built, so
an invalid range never exists; each broken rule raises :class:`~amtlib.errors.ValidationError`
naming the range, the rule, the value received and the fix.

The module is over 400 lines because each of the three range types carries its own validation
messages and docstring examples beside the search space they make up; splitting them would scatter
one concept (a range and its encoding) over several files.
"""

from __future__ import annotations

import enum
import itertools
import math
import numbers
from collections.abc import Iterable, Iterator, Mapping, Sequence
from collections.abc import Set as AbstractSet
from typing import Any, TypeAlias

import numpy as np

from amtlib.errors import ValidationError, describe_value, short_repr

Value: TypeAlias = "float | int | str | bool"


class ScalingType(str, enum.Enum):
    """How a numeric range is searched: AMT's four scaling types."""

    AUTO = "Auto"
    LINEAR = "Linear"
    LOGARITHMIC = "Logarithmic"
    REVERSE_LOGARITHMIC = "ReverseLogarithmic"

    @classmethod
    def parse(cls, value: object, *, where: str = "scaling_type") -> ScalingType:
        """Accept AMT's names, their lower-case forms and a few aliases (``"log"``, ``"reverse_log"``)."""
        if isinstance(value, ScalingType):
            return value
        if isinstance(value, str):
            key = value.replace("_", "").replace("-", "").replace(" ", "").lower()
            found = _SCALING_ALIASES.get(key)
            if found is not None:
                return found
        raise ValidationError(
            f"{where} must be one of 'Auto', 'Linear', 'Logarithmic', 'ReverseLogarithmic' "
            f"(case-insensitive). Got {describe_value(value)} instead. "
            "Fix: use one of those names, or omit it for 'Auto'."
        )


_SCALING_ALIASES = {
    "auto": ScalingType.AUTO,
    "linear": ScalingType.LINEAR,
    "logarithmic": ScalingType.LOGARITHMIC,
    "log": ScalingType.LOGARITHMIC,
    "reverselogarithmic": ScalingType.REVERSE_LOGARITHMIC,
    "reverselog": ScalingType.REVERSE_LOGARITHMIC,
}


def _is_real(value: object) -> bool:
    return isinstance(value, numbers.Real) and not isinstance(value, bool)


def _is_finite(value: Any) -> bool:
    """``math.isfinite`` that is False, not an ``OverflowError``, for an int beyond float range."""
    try:
        return math.isfinite(value)
    except OverflowError:
        return False


#: Integer bounds lie in ``[-2**53, 2**53]``, where every integer is exact as a float: the unit-cube
#: encoding works in floats, and beyond that neighbouring integers share a float.
MAX_EXACT_INTEGER = 2**53
#: The most configurations strategy="Grid" runs, and the most values ``IntegerParameter.values()``
#: lists: a larger range is for Random, Bayesian or Hyperband, which draw from it without listing it.
MAX_GRID_SIZE = 1_000_000


def _finite_float(value: object) -> float | None:
    """``value`` as a finite float, or ``None`` (NaN, infinite, or too large for a float)."""
    if not _is_real(value):
        return None
    try:
        as_float = float(value)  # type: ignore[arg-type]
    except OverflowError:
        return None
    return as_float if math.isfinite(as_float) else None


def is_int(value: object) -> bool:
    """An int of any kind (Python's, numpy's) but not a bool: ``True`` is no count."""
    return isinstance(value, numbers.Integral) and not isinstance(value, (bool, np.bool_))


def _whole(value: object) -> int | None:
    """``value`` as an int when it is a whole number (an int, or a float such as ``3.0``)."""
    if isinstance(value, numbers.Integral) and not isinstance(value, bool):
        return int(value)
    as_float = _finite_float(value)
    return int(as_float) if as_float is not None and as_float.is_integer() else None


def _check_bounds(kind: str, min_value: object, max_value: object, integer: bool) -> None:
    label = f"{kind}(min_value={min_value!r}, max_value={max_value!r})"
    for name, value in (("min_value", min_value), ("max_value", max_value)):
        if integer:
            whole = _whole(value)
            ok = whole is not None
            rule, fix = "an integer", f"pass a whole number such as {name}=1"
            if ok and abs(whole) > MAX_EXACT_INTEGER:  # type: ignore[arg-type]
                raise ValidationError(
                    f"{label}: {name} must be between -2**53 and 2**53 ({MAX_EXACT_INTEGER}), "
                    "where every integer is exact as a float. Got "
                    f"{describe_value(value)} instead. Fix: shift or rescale the hyperparameter "
                    "(e.g. search its exponent and compute the value in your training function)."
                )
        else:
            ok = _finite_float(value) is not None
            rule, fix = "a finite real number", f"pass a number such as {name}=0.5"
        if not ok:
            raise ValidationError(
                f"{label}: {name} must be {rule}. Got {describe_value(value)} instead. Fix: {fix}."
            )
    if not min_value < max_value:  # type: ignore[operator]
        raise ValidationError(
            f"{label}: min_value must be less than max_value. Got min_value={min_value!r} >= "
            f"max_value={max_value!r}. Fix: swap them, or use a CategoricalParameter or a static "
            "hyperparameter for a single value."
        )
    if not integer and not math.isfinite(float(max_value) - float(min_value)):  # type: ignore[arg-type]
        raise ValidationError(
            f"{label}: max_value - min_value must be finite as a float. Got min_value="
            f"{min_value!r}, max_value={max_value!r}, whose difference overflows to inf. Fix: "
            "narrow the range, or rescale the hyperparameter (e.g. search its exponent)."
        )


def _check_scale_width(label: str, low: float, high: float, scaling: ScalingType) -> None:
    """Refuse a range whose ends map to the same float on a scale the strategies may search."""
    options = [scaling]
    if scaling is ScalingType.AUTO:
        # the Bayesian strategy may search an Auto range on these scales too
        options = [ScalingType.LINEAR]
        if low > 0:
            options.append(ScalingType.LOGARITHMIC)
        if low >= 0 and high < 1:
            options.append(ScalingType.REVERSE_LOGARITHMIC)
    for option in options:
        t = _Transform(low, high, option)
        width = t._b - t._a
        if not (math.isfinite(width) and width != 0):
            auto = scaling is ScalingType.AUTO
            tried = " (which 'Auto' lets the Bayesian strategy try)" if auto else ""
            fix = "widen the range"
            if option is not ScalingType.LINEAR:  # Linear may still work where a log scale fails
                fix += ", or pass scaling_type='Linear'" if auto else ", or pass 'Linear'"
            raise ValidationError(
                f"{label}: the range is too narrow to search on a {option.value} scale{tried}: "
                "both ends map to the same float. Got a range of relative width "
                f"{(high - low) / max(abs(low), abs(high)):.3g}. Fix: {fix}."
            )


#: Below this magnitude every k - 1/2 of an integer k is exactly a float.
_EXACT_HALVES = 2**52


class _Transform:
    """A monotone map between a range's value and its position in [0, 1], bounds in value space."""

    def __init__(self, low: float, high: float, scaling: ScalingType) -> None:
        self.scaling = scaling
        self.low, self.high = low, high
        if scaling is ScalingType.LOGARITHMIC:
            self._a, self._b = math.log(low), math.log(high)
        elif scaling is ScalingType.REVERSE_LOGARITHMIC:
            # log-uniform in 1 - x: u = 0 at low, u = 1 at high; crowds toward high.
            self._a, self._b = math.log1p(-low), math.log1p(-high)
        else:
            self._a, self._b = low, high

    def to_unit(self, value: np.ndarray) -> np.ndarray:
        if self.scaling is ScalingType.LOGARITHMIC:
            value = np.log(value)
        elif self.scaling is ScalingType.REVERSE_LOGARITHMIC:
            value = np.log1p(-value)
        return np.clip((value - self._a) / (self._b - self._a), 0.0, 1.0)

    def scalar_to_unit(self, value: float) -> float:
        """``to_unit`` for one value, without numpy's per-call overhead (encoding is a hot path)."""
        if self.scaling is ScalingType.LOGARITHMIC:
            value = math.log(value)
        elif self.scaling is ScalingType.REVERSE_LOGARITHMIC:
            value = math.log1p(-value)
        return min(1.0, max(0.0, (value - self._a) / (self._b - self._a)))

    def from_unit(self, u: np.ndarray) -> np.ndarray:
        t = self._a + np.clip(u, 0.0, 1.0) * (self._b - self._a)
        if self.scaling is ScalingType.LOGARITHMIC:
            t = np.exp(t)
        elif self.scaling is ScalingType.REVERSE_LOGARITHMIC:
            t = -np.expm1(t)
        return np.clip(t, self.low, self.high)


class Parameter:
    """Base of the three range types. Ranges are immutable and validated when built."""

    __slots__ = ()

    def __setattr__(self, key: str, value: Any) -> None:
        raise AttributeError(f"{type(self).__name__} is immutable")

    def __eq__(self, other: object) -> bool:
        return type(other) is type(self) and self._identity() == other._identity()

    def __hash__(self) -> int:
        return hash(self._identity())

    def _identity(self) -> tuple[Any, ...]:
        raise NotImplementedError

    @property
    def n_dims(self) -> int:
        """How many dimensions of the unit cube this range takes."""
        return 1

    @property
    def is_finite(self) -> bool:
        """True when the range has finitely many values (integer or categorical)."""
        return True

    def size(self) -> int | None:
        """How many values the range has, or ``None`` when it is continuous (never lists them)."""
        raise NotImplementedError

    def values(self) -> list[Value]:
        """Every value of a finite range, in order."""
        raise NotImplementedError

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready description (AMT's ``ParameterRanges`` keys plus a ``Type``)."""
        raise NotImplementedError

    def _encode(self, value: Any, name: str) -> list[float]:
        raise NotImplementedError

    def _decode(self, u: np.ndarray) -> Value:
        raise NotImplementedError

    def _check_value(self, value: Any, name: str) -> Value:
        raise NotImplementedError


class _NumericParameter(Parameter):
    __slots__ = ("_transform", "max_value", "min_value", "scaling_type")

    _integer = False

    min_value: Any
    max_value: Any
    scaling_type: ScalingType
    _transform: _Transform

    def __init__(self, min_value: Any, max_value: Any, scaling_type: str | ScalingType = "Auto"):
        kind = type(self).__name__
        _check_bounds(kind, min_value, max_value, self._integer)
        label = f"{kind}(min_value={min_value!r}, max_value={max_value!r})"
        scaling = ScalingType.parse(scaling_type, where=f"{label}: scaling_type")
        if self._integer:
            min_value, max_value = _whole(min_value), _whole(max_value)
        else:
            min_value, max_value = float(min_value), float(max_value)
        if scaling is ScalingType.LOGARITHMIC:
            if self._integer and min_value < 1:
                raise ValidationError(
                    f"{label}: Logarithmic scaling of an integer range needs min_value >= 1. "
                    f"Got min_value={min_value!r}. Fix: raise min_value to 1 or use 'Linear'."
                )
            if min_value <= 0:
                raise ValidationError(
                    f"{label}: Logarithmic scaling needs min_value > 0. Got min_value={min_value!r}. "
                    "Fix: raise min_value above 0 (e.g. 1e-6) or use 'Linear'."
                )
        if scaling is ScalingType.REVERSE_LOGARITHMIC:
            if self._integer:
                raise ValidationError(
                    f"{label}: ReverseLogarithmic scaling is for continuous ranges only. Got an "
                    "IntegerParameter. Fix: use ContinuousParameter, or 'Linear'/'Logarithmic'."
                )
            if not (min_value >= 0 and max_value < 1):
                raise ValidationError(
                    f"{label}: ReverseLogarithmic scaling needs 0 <= min_value < max_value < 1. "
                    f"Got min_value={min_value!r}, max_value={max_value!r}. Fix: keep the range "
                    "inside [0, 1), or use 'Linear'/'Logarithmic'."
                )
        if self._integer:
            _check_scale_width(label, min_value - 0.5, max_value + 0.5, scaling)
        else:
            _check_scale_width(label, min_value, max_value, scaling)
        object.__setattr__(self, "min_value", min_value)
        object.__setattr__(self, "max_value", max_value)
        object.__setattr__(self, "scaling_type", scaling)
        object.__setattr__(self, "_transform", self._make_transform(scaling))

    def _make_transform(self, scaling: ScalingType) -> _Transform:
        if self._integer:
            # Each integer owns the interval [k - 1/2, k + 1/2], so every one is reachable with the
            # probability its scale gives that interval (log scale: about proportional to 1/k).
            return _Transform(self.min_value - 0.5, self.max_value + 0.5, scaling)
        return _Transform(self.min_value, self.max_value, scaling)

    def _identity(self) -> tuple[Any, ...]:
        return (self.min_value, self.max_value, self.scaling_type)

    def __reduce__(self) -> tuple[Any, ...]:
        # Slots and a refusing __setattr__ defeat pickle's default; rebuild through __init__.
        return (type(self), (self.min_value, self.max_value, self.scaling_type.value))

    def __repr__(self) -> str:
        return (
            f"{type(self).__name__}({self.min_value!r}, {self.max_value!r}, "
            f"scaling_type={self.scaling_type.value!r})"
        )

    @property
    def is_finite(self) -> bool:
        return self._integer

    def size(self) -> int | None:
        return self.max_value - self.min_value + 1 if self._integer else None

    @property
    def effective_scaling(self) -> ScalingType:
        """The scale Random, Grid and Hyperband search with: ``Auto`` is searched as ``Linear``."""
        if self.scaling_type is ScalingType.AUTO:
            return ScalingType.LINEAR
        return self.scaling_type

    def with_scaling(self, scaling_type: str | ScalingType) -> _NumericParameter:
        """The same range searched on another scale (the Bayesian strategy tries these for Auto)."""
        return type(self)(self.min_value, self.max_value, scaling_type)

    def to_dict(self) -> dict[str, Any]:
        return {
            "Type": "Integer" if self._integer else "Continuous",
            "MinValue": self.min_value,
            "MaxValue": self.max_value,
            "ScalingType": self.scaling_type.value,
        }

    def _check_value(self, value: Any, name: str) -> Value:
        convert = _whole if self._integer else _finite_float
        if convert(value) is None or not self.min_value <= value <= self.max_value:
            raise ValidationError(
                f"Hyperparameter {name!r}: the value must lie in [{self.min_value!r}, "
                f"{self.max_value!r}] ({self!r}). Got {describe_value(value)} instead. "
                "Fix: pass a value inside the range."
            )
        return int(value) if self._integer else float(value)

    def _encode(self, value: Any, name: str) -> list[float]:
        value = self._check_value(value, name)
        return [self._transform.scalar_to_unit(float(value))]

    def _decode(self, u: np.ndarray) -> Value:
        value = float(self._transform.from_unit(u[0]))
        if self._integer:
            return int(min(max(round(value), self.min_value), self.max_value))
        return value


class ContinuousParameter(_NumericParameter):
    """A real-valued range ``[min_value, max_value]``.

    Args:
        min_value: smallest value, a finite number.
        max_value: largest value, greater than ``min_value``.
        scaling_type: ``"Auto"`` (default), ``"Linear"``, ``"Logarithmic"`` (needs
            ``min_value > 0``) or ``"ReverseLogarithmic"`` (needs ``0 <= min_value < max_value < 1``).

    Example:
        >>> lr = ContinuousParameter(1e-4, 1.0, scaling_type="Logarithmic")
        >>> lr.min_value, lr.scaling_type.value
        (0.0001, 'Logarithmic')
    """

    __slots__ = ()
    _integer = False


class IntegerParameter(_NumericParameter):
    """An integer range ``[min_value, max_value]``, both ends included.

    Args:
        min_value: smallest value, a whole number.
        max_value: largest value, greater than ``min_value``.
        scaling_type: ``"Auto"`` (default), ``"Linear"`` or ``"Logarithmic"`` (needs
            ``min_value >= 1``). ``"ReverseLogarithmic"`` is refused, as in AMT.

    Example:
        >>> IntegerParameter(1, 8).values()
        [1, 2, 3, 4, 5, 6, 7, 8]
    """

    __slots__ = ()
    _integer = True

    def values(self) -> list[Value]:
        """Every integer of the range, at most ``MAX_GRID_SIZE`` of them (else ValidationError)."""
        self._check_listable()
        return list(range(self.min_value, self.max_value + 1))

    def probabilities(self) -> np.ndarray:
        """Probability of each value under a uniform draw of the unit interval (its scale)."""
        self._check_listable()
        offsets = np.arange(1, self.max_value - self.min_value + 1, dtype=float)
        if max(abs(self.min_value), abs(self.max_value)) < _EXACT_HALVES:
            # Each value owns [k - 1/2, k + 1/2] on its scale, and every k - 1/2 is a float here.
            inner = self._transform.to_unit(float(self.min_value) + offsets - 0.5)
        else:
            # Next to 2**53, k - 1/2 is not a float: where decoding moves from one value to the
            # next is found by bisection on the decoding itself (neighbouring values can then get
            # 37% and 12% of a draw instead of 25% each, or nothing).
            inner = self._first_unit_of(float(self.min_value) + offsets)
        p = np.diff(np.concatenate([[0.0], inner, [1.0]]))
        return p / p.sum()

    def _first_unit_of(self, targets: np.ndarray) -> np.ndarray:
        """Smallest point of [0, 1] that decodes to at least each target (to 2**-60)."""
        lo, hi = np.zeros_like(targets), np.ones_like(targets)
        for _ in range(60):
            mid = 0.5 * (lo + hi)
            reached = np.round(self._transform.from_unit(mid)) >= targets
            hi, lo = np.where(reached, mid, hi), np.where(reached, lo, mid)
        return hi

    def _check_listable(self) -> None:
        size = self.max_value - self.min_value + 1
        if size > MAX_GRID_SIZE:
            raise ValidationError(
                f"{self!r} has {size} values, too many to list (at most {MAX_GRID_SIZE}). "
                "Fix: search it with strategy='Random', 'Bayesian' or 'Hyperband', which draw "
                "from it without listing it, or list the values to try with "
                "CategoricalParameter([...])."
            )


def _value_key(value: object) -> tuple[str, object]:
    # 1, 1.0 and True are equal in Python but distinct values of a range.
    return (type(value).__name__, value)


class CategoricalParameter(Parameter):
    """A choice among values: strings, numbers or booleans (each JSON-serialisable).

    Example:
        >>> CategoricalParameter(["sgd", "adam"]).values()
        ['sgd', 'adam']
    """

    __slots__ = ("_values",)

    _values: tuple[Value, ...]

    def __init__(self, values: Sequence[Value]) -> None:
        _check_choices(values)
        values = list(values)
        if not values:
            raise ValidationError(
                "CategoricalParameter: values must not be empty. Got []. "
                "Fix: list at least one choice (two or more to tune anything)."
            )
        seen: set[tuple[str, object]] = set()
        for raw in values:
            value = _plain(raw)  # np.int64(1) is the value 1 (np.bool_, np.str_ alike)
            ok = isinstance(value, (str, bool)) or (_is_real(value) and _is_finite(value))
            if not ok:
                raise ValidationError(
                    f"CategoricalParameter({short_repr(values)}): each value must be a string, a "
                    f"finite number or a bool. Got {describe_value(raw)}. Fix: use its name as a "
                    "string and map it back inside your training function."
                )
            if _value_key(value) in seen:
                raise ValidationError(
                    f"CategoricalParameter({short_repr(values)}): values must be distinct. Got "
                    f"{raw!r} more than once. Fix: remove the duplicate."
                )
            seen.add(_value_key(value))
        object.__setattr__(self, "_values", tuple(_plain(v) for v in values))

    def __repr__(self) -> str:
        return f"CategoricalParameter({list(self._values)!r})"

    def _identity(self) -> tuple[Any, ...]:
        return tuple(_value_key(v) for v in self._values)

    def __reduce__(self) -> tuple[Any, ...]:
        return (CategoricalParameter, (list(self._values),))

    @property
    def n_dims(self) -> int:
        return len(self._values)

    def size(self) -> int:
        return len(self._values)

    def values(self) -> list[Value]:
        return list(self._values)

    def to_dict(self) -> dict[str, Any]:
        return {"Type": "Categorical", "Values": list(self._values)}

    def index(self, value: Any, name: str) -> int:
        """Position of ``value`` among the choices (type-exact: ``1`` is not ``True``)."""
        key = _value_key(_plain(value))
        for i, v in enumerate(self._values):
            if _value_key(v) == key:
                return i
        raise ValidationError(
            f"Hyperparameter {name!r}: the value must be one of {list(self._values)!r}. "
            f"Got {describe_value(value)} instead. Fix: pass one of the listed values."
        )

    def _check_value(self, value: Any, name: str) -> Value:
        return self._values[self.index(value, name)]

    def _encode(self, value: Any, name: str) -> list[float]:
        out = [0.0] * len(self._values)
        out[self.index(value, name)] = 1.0
        return out

    def _decode(self, u: np.ndarray) -> Value:
        return self._values[int(np.argmax(u))]


def _check_choices(values: object) -> None:
    """Refuse anything but an ordered collection of choices, with a fix that works for it."""
    if isinstance(values, Sequence) and not isinstance(values, (str, bytes)):
        return
    head = "CategoricalParameter: values must be a list of choices (or a tuple), in a fixed order."
    if isinstance(values, AbstractSet):
        # A set's order follows the string hashes, which PYTHONHASHSEED changes from run to run.
        raise ValidationError(
            f"{head} Got {describe_value(values)} instead, whose order can change between runs "
            "(it follows PYTHONHASHSEED), so the search would not be reproducible. Fix: pass a "
            "list, e.g. CategoricalParameter(sorted(values))."
        )
    if isinstance(values, np.ndarray):
        fix = "pass values.tolist(), e.g. CategoricalParameter(values.tolist())"
    elif isinstance(values, Iterable) and not isinstance(values, (str, bytes)):
        fix = "pass list(values), e.g. CategoricalParameter(list(values))"
    else:
        fix = f"wrap them in a list, e.g. CategoricalParameter([{values!r}])"
    raise ValidationError(f"{head} Got {describe_value(values)} instead. Fix: {fix}.")


def _plain(value: Any) -> Any:
    """numpy scalars to Python scalars, so records are JSON and ``repr`` stays readable."""
    if isinstance(value, np.generic):
        return value.item()
    return value


def parameter_from_dict(data: Mapping[str, Any]) -> Parameter:
    """Inverse of ``Parameter.to_dict``."""
    kind = data.get("Type")
    if kind == "Categorical":
        return CategoricalParameter(data["Values"])
    if kind in ("Continuous", "Integer"):
        cls = ContinuousParameter if kind == "Continuous" else IntegerParameter
        return cls(data["MinValue"], data["MaxValue"], data.get("ScalingType", "Auto"))
    raise ValidationError(
        f"A range description must have Type 'Continuous', 'Integer' or 'Categorical'. Got "
        f"{describe_value(kind)}. Fix: describe the range with one of those types."
    )


_AMT_RANGE_LISTS = (
    "ContinuousParameterRanges",
    "IntegerParameterRanges",
    "CategoricalParameterRanges",
)


def _range_fix(name: str, value: object) -> str:
    """The fix for a value given as a range that is not a `Parameter`, AMT's API shapes included."""
    amt = (
        "AMT's API shape of ranges (amtlib's Python API takes range objects; it reads no AMT JSON)"
    )
    if name in _AMT_RANGE_LISTS:
        return (
            f"That is {amt}. Fix: pass one entry per range instead, e.g. "
            "{'lr': ContinuousParameter(0.0001, 1.0, 'Logarithmic')}."
        )
    if isinstance(value, Mapping) and {"MinValue", "MaxValue", "Values"} & set(value):
        if "Values" in value:
            example = f"CategoricalParameter({list(value['Values'])!r})"
        else:
            scaling = value.get("ScalingType", "Auto")
            example = (
                f"ContinuousParameter({value.get('MinValue')}, {value.get('MaxValue')}, "
                f"{scaling!r}) (IntegerParameter for an integer range)"
            )
        return f"That is {amt}. Fix: write it as {example}."
    return (
        "Fix: wrap it, e.g. CategoricalParameter([...]) for a list of choices, or move a fixed "
        "value to static_hyperparameters."
    )


class SearchSpace:
    """Named ranges in declaration order, and their encoding to the unit cube.

    Args:
        ranges: hyperparameter name -> range. Names are non-empty strings.

    Example:
        >>> space = SearchSpace({"lr": ContinuousParameter(1e-4, 1.0, "Logarithmic"),
        ...                      "opt": CategoricalParameter(["sgd", "adam"])})
        >>> space.n_dims
        3
        >>> space.decode(space.encode({"lr": 0.01, "opt": "adam"}))["opt"]
        'adam'
    """

    def __init__(self, ranges: Mapping[str, Parameter]) -> None:
        if not isinstance(ranges, Mapping):
            raise ValidationError(
                "hyperparameter_ranges must be a dict of name -> ContinuousParameter, "
                f"IntegerParameter or CategoricalParameter. Got {describe_value(ranges)} instead. "
                "Fix: pass a dict such as {'lr': ContinuousParameter(1e-4, 1.0)}."
            )
        if not ranges:
            raise ValidationError(
                "hyperparameter_ranges must name at least one range. Got an empty dict. "
                "Fix: add a range such as {'lr': ContinuousParameter(1e-4, 1.0)}."
            )
        for name, param in ranges.items():
            if not isinstance(name, str) or not name:
                raise ValidationError(
                    f"hyperparameter_ranges: each name must be a non-empty string. Got "
                    f"{describe_value(name)}. Fix: name the hyperparameter with a string."
                )
            if not isinstance(param, Parameter):
                raise ValidationError(
                    f"hyperparameter_ranges[{name!r}] must be a ContinuousParameter, "
                    f"IntegerParameter or CategoricalParameter. Got {describe_value(param)}. "
                    + _range_fix(name, param)
                )
        self.ranges: dict[str, Parameter] = dict(ranges)
        self.names: list[str] = list(self.ranges)
        slices, start = [], 0
        for param in self.ranges.values():
            slices.append(slice(start, start + param.n_dims))
            start += param.n_dims
        self._slices = slices
        self.n_dims = start

    def __iter__(self) -> Iterator[tuple[str, Parameter]]:
        return iter(self.ranges.items())

    def __len__(self) -> int:
        return len(self.ranges)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, SearchSpace) and self.to_dict() == other.to_dict()

    def __repr__(self) -> str:
        return f"SearchSpace({self.ranges!r})"

    def slice_of(self, name: str) -> slice:
        """The dimensions of the cube that ``name`` occupies."""
        return self._slices[self.names.index(name)]

    @property
    def is_finite(self) -> bool:
        """True when every range is integer or categorical."""
        return all(p.is_finite for p in self.ranges.values())

    def size(self) -> int | None:
        """Number of distinct configurations, or ``None`` when a range is continuous.

        Counted, never listed: an ``IntegerParameter(1, 10**9)`` costs nothing here.
        """
        sizes = [p.size() for p in self.ranges.values()]
        if any(size is None for size in sizes):
            return None
        return math.prod(sizes)  # type: ignore[arg-type]

    def configurations(self) -> Iterator[dict[str, Value]]:
        """Every configuration of a finite space, first range slowest (``itertools.product``)."""
        every = itertools.product(*(p.values() for p in self.ranges.values()))
        return (dict(zip(self.names, combo, strict=True)) for combo in every)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready description, in declaration order."""
        return {name: param.to_dict() for name, param in self.ranges.items()}

    @classmethod
    def from_dict(cls, data: Mapping[str, Mapping[str, Any]]) -> SearchSpace:
        return cls({name: parameter_from_dict(d) for name, d in data.items()})

    def with_scaling(self, scalings: Mapping[str, ScalingType]) -> SearchSpace:
        """A copy where the named numeric ranges use other scaling types (same cube layout)."""
        ranges = dict(self.ranges)
        for name, scaling in scalings.items():
            param = ranges[name]
            if not isinstance(param, _NumericParameter):
                raise ValidationError(f"{name!r} is categorical: it has no scaling type.")
            ranges[name] = param.with_scaling(scaling)
        return SearchSpace(ranges)

    def validate(self, hyperparameters: Mapping[str, Any]) -> dict[str, Value]:
        """Check a configuration holds exactly these ranges with values inside them."""
        missing = [n for n in self.names if n not in hyperparameters]
        extra = [n for n in hyperparameters if n not in self.ranges]
        if missing or extra:
            raise ValidationError(
                f"A configuration must give a value for each tuned hyperparameter {self.names}. "
                f"Missing {missing}, unknown {extra}. Fix: give exactly those names."
            )
        return {n: p._check_value(hyperparameters[n], n) for n, p in self.ranges.items()}

    def encode(self, hyperparameters: Mapping[str, Any]) -> np.ndarray:
        """A configuration as a point of the unit cube, shape ``(n_dims,)``."""
        self.validate(hyperparameters)
        out: list[float] = []
        for name, param in self.ranges.items():
            out.extend(param._encode(hyperparameters[name], name))
        return np.asarray(out, dtype=float)

    def decode(self, point: np.ndarray) -> dict[str, Value]:
        """The configuration a point of the cube stands for; values clipped into their ranges."""
        point = np.asarray(point, dtype=float)
        if point.shape != (self.n_dims,) or not np.all(np.isfinite(point)):
            raise ValidationError(
                f"decode needs a finite point of shape ({self.n_dims},). Got shape "
                f"{point.shape}. Fix: pass one row of the cube."
            )
        return {
            name: param._decode(point[sl])
            for (name, param), sl in zip(self.ranges.items(), self._slices, strict=True)
        }

    def project(self, points: np.ndarray) -> np.ndarray:
        """Snap points of the cube, shape ``(m, n_dims)``, to the points of the configurations they
        decode to (vectorised ``encode(decode(x))``): integers to the centre of their cell, one-hot
        blocks to their largest entry, everything into ``[0, 1]``."""
        out = np.clip(np.array(points, dtype=float, ndmin=2), 0.0, 1.0)
        for param, sl in zip(self.ranges.values(), self._slices, strict=True):
            if isinstance(param, CategoricalParameter):
                block = out[:, sl]
                hot = np.zeros_like(block)
                hot[np.arange(len(block)), np.argmax(block, axis=1)] = 1.0
                out[:, sl] = hot
            elif isinstance(param, IntegerParameter):
                t = param._transform
                values = np.clip(
                    np.round(t.from_unit(out[:, sl.start])), param.min_value, param.max_value
                )
                out[:, sl.start] = t.to_unit(values)
        return out

    def refinable_mask(self) -> np.ndarray:
        """Which dimensions of the cube may move continuously (numeric ranges, not one-hot)."""
        mask = np.ones(self.n_dims, dtype=bool)
        for param, sl in zip(self.ranges.values(), self._slices, strict=True):
            if isinstance(param, CategoricalParameter):
                mask[sl] = False
        return mask

    def sample(self, rng: np.random.Generator) -> dict[str, Value]:
        """One configuration drawn from each range's own distribution."""
        return self.decode(rng.random(self.n_dims))

    def key(self, hyperparameters: Mapping[str, Any]) -> tuple[tuple[str, object], ...]:
        """A hashable identity of a configuration (type-exact), for finding repeats."""
        return tuple(_value_key(hyperparameters[n]) for n in self.names)

    def auto_ranges_spanning_decades(self, decades: float = 3.0) -> list[str]:
        """Names of ``Auto`` numeric ranges with ``min_value > 0`` spanning at least ``decades``."""
        out = []
        for name, param in self.ranges.items():
            if (
                isinstance(param, _NumericParameter)
                and param.scaling_type is ScalingType.AUTO
                and param.min_value > 0
                and math.log10(param.max_value / param.min_value) >= decades
            ):
                out.append(name)
        return out
