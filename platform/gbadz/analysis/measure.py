"""The measurement: a checked :class:`~gbadz.analysis.query.Plan` run over Arrow rows with OpenDP.

The privacy model (ADR 0022), in the order the code applies it:

1. **Filter** (``WHERE``): a row-by-row predicate, so each person's rows can only shrink.
2. **Bound each person** to ``max_rows_per_person`` rows (and, when the contract says so, to
   ``max_groups_per_person`` groups) by *our* truncation, before OpenDP sees the rows: a
   random choice of at most k of each person's rows. Truncation to k rows per person is a
   stable transformation: adding or removing one person changes only that person's kept rows
   (every other person's choice depends on their own rows alone), so on the truncated frame
   neighbouring datasets differ by at most k rows, which is what
   ``dp.unit_of(contributions=k)`` tells OpenDP. The privacy-unit column is then dropped, so
   nothing downstream can group or count by it. Measured on 1,000,000 hospital rows: this
   takes about 0.2-0.3 s where OpenDP's identifier-based unit (``dp.unit_of(identifier=...)``
   with ``truncate_per_group``) took about 4 s for the whole query (architecture.md).
3. **Derive keys** (``month(d)``, ``date_trunc``) row by row, which changes no contribution.
4. **Measure** with OpenDP's Polars front end: one noisy count per group (always: the
   minimum group size is applied to it) and one noisy sum per measure; ``AVG`` is the noisy
   sum over the noisy count (post-processing, no extra budget). Measures are clamped to the
   contract's bounds by OpenDP; a ``number`` measure is summed in hundredths as an integer
   (rounding each value is data-independent), because OpenDP's float sums pay for rounding
   error with a sensitivity about six times larger at these lengths. Nulls are imputed with
   0 clamped into the bounds (data-independent).
5. **Keys**: when every group-by key has a public domain (a ``validValues`` rule, a boolean,
   ``month``/``quarter``), every declared key is released (``with_keys``), observed or not,
   and no δ is spent. Otherwise keys come from the data and a group is released only when
   its noisy count passes a threshold: that costs δ, charged in proportion to ε out of the
   grant's δ.
6. **Post-process** (free): drop groups whose noisy count is under ``min_group_size``, order,
   limit, round.

The noise scales are computed here (Laplace, the budget split evenly over the noisy
statistics) and every measurement is checked with OpenDP's own privacy map before it runs:
a query whose map exceeds its (ε, δ) never runs. The same function gives the estimate and
the release, so the accuracy an analyst is shown is the accuracy of what they get.

Invariant 9: no message raised here names a value from the rows.
"""

from __future__ import annotations

import hashlib
import json
import math
import secrets
import time
import warnings
from dataclasses import dataclass, field
from datetime import date, datetime
from functools import lru_cache
from types import SimpleNamespace
from typing import Any, Literal

import numpy as np
import pyarrow as pa

from gbadz.analysis.plan import Aggregate, AggregateFunction, Condition, GroupKey, Plan, QueryRefused, Term
from gbadz.analysis.spec import AnalysisSpec, Budget, Dimension, Measure, Scalar
from gbadz.errors import BadRequest, GbadzError

#: Accuracy is the half-width of the (1 - ALPHA) interval: the true value lies within ± it with 95%.
ALPHA = 0.05
#: ``number`` measures are summed as integers in units of 1 / NUMBER_SCALE.
NUMBER_SCALE = 100
#: Decimal places of released sums and means of ``number`` measures.
ROUND_DIGITS = 2

_POLARS_TYPES = {
    "string": "String",
    "integer": "Int64",
    "number": "Float64",
    "boolean": "Boolean",
    "date": "Date",
    "timestamp": "Datetime",
}
_PUBLIC_PARTS: dict[str, tuple[int, ...]] = {"month": tuple(range(1, 13)), "quarter": (1, 2, 3, 4)}
_TRUNC_EVERY = {
    "trunc_year": "1y",
    "trunc_quarter": "1q",
    "trunc_month": "1mo",
    "trunc_week": "1w",
    "trunc_day": "1d",
}


class EpsilonRefused(BadRequest):
    """The ε asked for one query is not positive, or more than the contract allows per query."""

    def __init__(self, detail: str) -> None:
        super().__init__(detail, field="epsilon")


class MeasurementFailed(GbadzError):
    """The measurement could not be built or run; the message names no value from the rows."""

    status_code = 500


@dataclass(frozen=True)
class Accuracy:
    """The noise of one output aggregate.

    ``accuracy``: the true value lies within ± this of the released one with 95% probability,
    in the output's unit (rows, or the measure's unit); ``None`` for ``avg``, whose error is
    that of its sum and count divided by the group's count. ``scale``: the Laplace scale.
    """

    name: str
    function: AggregateFunction
    accuracy: float | None
    scale: float | None

    def as_dict(self) -> dict[str, Any]:
        return {"name": self.name, "function": self.function, "accuracy": self.accuracy, "scale": self.scale}


@dataclass(frozen=True)
class Estimate:
    """What a query would spend and how noisy it would be, computed without reading a row."""

    mode: Literal["dp", "threshold"]
    epsilon: float
    delta: float
    accuracy: tuple[Accuracy, ...]
    #: Groups whose noisy count is under this are not released (keys taken from the data);
    #: None when every key is public.
    threshold: int | None
    public_keys: bool
    min_group_size: int
    max_rows_per_person: int
    alpha: float = ALPHA

    def as_dict(self) -> dict[str, Any]:
        return {
            "mode": self.mode,
            "epsilon": self.epsilon,
            "delta": self.delta,
            "accuracy": [a.as_dict() for a in self.accuracy],
            "threshold": self.threshold,
            "public_keys": self.public_keys,
            "min_group_size": self.min_group_size,
            "max_rows_per_person": self.max_rows_per_person,
            "alpha": self.alpha,
        }


@dataclass(frozen=True)
class Release:
    """A released result: JSON-friendly rows (dates as ISO strings), what it cost and its hashes."""

    columns: tuple[str, ...]
    rows: tuple[tuple[Any, ...], ...]
    mode: Literal["dp", "threshold"]
    epsilon: float
    delta: float
    accuracy: tuple[Accuracy, ...]
    threshold: int | None
    #: Groups measured but not released because their noisy count was under the minimum size.
    suppressed: int
    query_sha256: str
    result_sha256: str = field(default="")
    #: Seconds spent per phase, for benchmarks; not part of the result or its hash. Not for
    #: analysts: how long filtering took says something about how many rows matched.
    timings: dict[str, float] = field(default_factory=dict, compare=False)

    def as_dict(self) -> dict[str, Any]:
        return {
            "columns": list(self.columns),
            "rows": [list(r) for r in self.rows],
            "mode": self.mode,
            "epsilon": self.epsilon,
            "delta": self.delta,
            "accuracy": [a.as_dict() for a in self.accuracy],
            "threshold": self.threshold,
            "suppressed": self.suppressed,
            "query_sha256": self.query_sha256,
            "result_sha256": self.result_sha256,
            "timings": dict(self.timings),
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Release:
        return cls(
            columns=tuple(data["columns"]),
            rows=tuple(tuple(r) for r in data["rows"]),
            mode=data["mode"],
            epsilon=float(data["epsilon"]),
            delta=float(data["delta"]),
            accuracy=tuple(
                Accuracy(a["name"], a["function"], a["accuracy"], a["scale"]) for a in data["accuracy"]
            ),
            threshold=data.get("threshold"),
            suppressed=int(data["suppressed"]),
            query_sha256=str(data["query_sha256"]),
            result_sha256=str(data["result_sha256"]),
            timings={str(k): float(v) for k, v in (data.get("timings") or {}).items()},
        )


def result_sha256(columns: tuple[str, ...] | list[str], rows: Any) -> str:
    """SHA-256 of the canonical JSON of a result's columns and rows (what the log records)."""
    body = json.dumps(
        {"columns": list(columns), "rows": [list(r) for r in rows]},
        sort_keys=True,
        separators=(",", ":"),
        ensure_ascii=False,
    )
    return hashlib.sha256(body.encode()).hexdigest()


# -- the mechanism: what to measure and with which noise --------------------------------------
@dataclass(frozen=True)
class _Mechanism:
    """Everything the estimate and the release share, fixed by (plan, spec, ε) alone."""

    epsilon: float
    delta: float
    k: int
    measures: tuple[str, ...]  # measures summed (for SUM or AVG), in plan order
    public_keys: bool
    key_domains: tuple[tuple[Scalar, ...], ...] | None
    count_scale: float
    sum_scales: tuple[float, ...]  # in integer units (hundredths for number measures)
    threshold: int | None


def check_epsilon(spec: AnalysisSpec, epsilon: object) -> float:
    """The ε of one query, checked against the contract (the ledger checks what is left)."""
    if spec.mode == "threshold":
        return 0.0
    budget = spec.budget
    if budget is None:
        raise EpsilonRefused("epsilon: the dataset has no privacy budget")
    if isinstance(epsilon, bool) or not isinstance(epsilon, int | float) or not math.isfinite(epsilon):
        raise EpsilonRefused("epsilon: must be a number")
    if epsilon <= 0:
        raise EpsilonRefused("epsilon: must be more than 0")
    if epsilon > budget.max_epsilon_per_query + 1e-12:
        raise EpsilonRefused(
            f"epsilon: at most {budget.max_epsilon_per_query:g} per query under the contract"
        )
    return float(epsilon)


def query_delta(spec: AnalysisSpec, plan: Plan, epsilon: float) -> float:
    """The δ a query spends: none when its keys are public, else the grant's δ in proportion to ε."""
    if spec.mode != "dp" or spec.budget is None or _key_domains(plan, spec) is not None:
        return 0.0
    return spec.budget.delta * epsilon / spec.budget.epsilon


def _key_domains(plan: Plan, spec: AnalysisSpec) -> tuple[tuple[Scalar, ...], ...] | None:
    """Each key's public domain, or None when any key's values must come from the data."""
    domains: list[tuple[Scalar, ...]] = []
    for key in plan.keys:
        term = key.term
        if term.function is None:
            dim = spec.dimension(term.column)
            if dim is None or dim.known_values is None:
                return None
            domains.append(dim.known_values)
        elif term.function in _PUBLIC_PARTS:
            domains.append(_PUBLIC_PARTS[term.function])
        else:
            return None
    return tuple(domains)


def _summed(plan: Plan) -> tuple[str, ...]:
    return tuple(dict.fromkeys(a.column for a in plan.aggregates if a.column is not None))


def _integer_bounds(measure: Measure) -> tuple[int, int]:
    factor = 1 if measure.logical_type == "integer" else NUMBER_SCALE
    return math.ceil(measure.minimum * factor), math.floor(measure.maximum * factor)


def _mechanism(
    plan: Plan, spec: AnalysisSpec, epsilon: float, threshold_hint: int | None = None
) -> _Mechanism:
    epsilon = check_epsilon(spec, epsilon)
    domains = _key_domains(plan, spec)
    measures = _summed(plan)
    k = spec.max_rows_per_person if spec.privacy_unit is not None else 1
    if spec.mode == "threshold":
        return _Mechanism(
            0.0, 0.0, k, measures, domains is not None, domains, 0.0, tuple(0.0 for _ in measures), None
        )
    # Laplace with the budget split evenly over the noisy statistics (basic composition):
    # a count changes by at most k when one person is added or removed, a sum by k * max|bound|.
    stats = 1 + len(measures)
    # A hair above the exact scale, so rounding in OpenDP's privacy map cannot put the spend a
    # hair above ε (the map is checked strictly before a measurement runs).
    widen = 1 + 1e-9
    count_scale = k * stats / epsilon * widen
    sum_scales = []
    for name in measures:
        measure = spec.measure(name)
        assert measure is not None
        low, high = _integer_bounds(measure)
        sum_scales.append(k * max(abs(low), abs(high), 1) * stats / epsilon * widen)
    delta = query_delta(spec, plan, epsilon)
    threshold = None
    if domains is None and plan.keys:
        if threshold_hint is not None and threshold_hint > k:
            # The parent's search, sent along: the measurement's privacy map is checked with
            # it before anything runs, so a wrong hint cannot spend more than is charged.
            threshold = int(threshold_hint)
        else:
            threshold = _threshold(plan, spec, epsilon, delta, count_scale, tuple(sum_scales))
    return _Mechanism(
        epsilon,
        delta,
        k,
        measures,
        domains is not None or not plan.keys,
        domains,
        count_scale,
        tuple(sum_scales),
        threshold,
    )


# -- OpenDP ------------------------------------------------------------------------------------
@lru_cache(maxsize=1)
def _dp() -> SimpleNamespace:
    """The parts of OpenDP used here, with its contrib features on (our Laplace counts and sums).

    Not ``opendp.prelude``: it imports scikit-learn, 3 s of a sandboxed child's start against
    0.26 s for these modules (measured). Importing ``opendp.extras.polars`` registers the
    ``.dp`` expression namespace on Polars.
    """
    from opendp.accuracy import discrete_laplacian_scale_to_accuracy
    from opendp.context import Context, loss_of, unit_of
    from opendp.extras.polars import Bound, Margin, dp_len
    from opendp.measurements import make_private_lazyframe
    from opendp.mod import enable_features

    enable_features("contrib")
    return SimpleNamespace(
        Context=Context,
        loss_of=loss_of,
        unit_of=unit_of,
        Bound=Bound,
        Margin=Margin,
        len=dp_len,
        make_private_lazyframe=make_private_lazyframe,
        discrete_laplacian_scale_to_accuracy=discrete_laplacian_scale_to_accuracy,
    )


def warm_up() -> None:
    """Pay OpenDP's first-use costs now, on no data: the first measurement a process builds
    takes seconds (its Rust side starts up), later ones tens of milliseconds (measured). A spare
    sandboxed child calls this before its rows arrive."""
    spec = AnalysisSpec(
        dataset="warm-up",
        table="t",
        mode="dp",
        dimensions=(Dimension("a", "string", ("x", "y")), Dimension("d", "date", None)),
        measures=(Measure("m", "number", 0.0, 1.0),),
        privacy_unit="p",
        max_rows_per_person=1,
        max_groups_per_person=None,
        min_group_size=1,
        budget=Budget(1.0, 1e-7, 1.0),
        max_rows=1000,
        schema_columns=("a", "d", "m", "p"),
    )
    for keys in (
        (GroupKey("a", Term("a")),),
        (GroupKey("a", Term("a")), GroupKey("m", Term("d", "trunc_month"))),
    ):
        plan = Plan(keys=keys, aggregates=(Aggregate("n", "count"), Aggregate("s", "sum", "m")))
        release(_empty_table(plan, spec), plan, spec, 1.0)


@dataclass(frozen=True)
class _Compiled:
    """The pieces of an OpenDP measurement that do not depend on the threshold."""

    domain: Any
    metric: Any
    output_measure: Any
    polars_plan: Any
    d_in: Any
    d_out: tuple[float, float]

    def make(self, threshold: int | None) -> Any:
        return _dp().make_private_lazyframe(
            self.domain,
            self.metric,
            self.output_measure,
            self.polars_plan,
            global_scale=None,
            threshold=threshold,
        )


def _compile(frame: Any, plan: Plan, spec: AnalysisSpec, mech: _Mechanism) -> _Compiled:
    """The plan as an OpenDP query over ``frame`` (a prepared Polars LazyFrame)."""
    import polars as pl

    dp = _dp()
    key_names = [f"k{i}" for i in range(len(plan.keys))]
    margins = [dp.Margin(by=[], max_length=spec.max_rows)]
    if key_names:
        if mech.key_domains is not None:
            # No claim that the keys themselves are public (no ``invariant``): the released keys
            # are the declared ones (``with_keys``), whatever the rows hold. A value outside its
            # declared domain became a null key, hence the + 1 per key in this (true) bound.
            groups = math.prod(len(d) + 1 for d in mech.key_domains)
            margins.append(dp.Margin(by=key_names, max_groups=groups))
        else:
            margins.append(dp.Margin(by=key_names, max_groups=spec.max_rows))
    if spec.max_groups_per_person is not None and key_names and spec.privacy_unit is not None:
        unit = dp.unit_of(
            contributions=[
                dp.Bound(per_group=mech.k),
                dp.Bound(by=key_names, num_groups=spec.max_groups_per_person),
            ]
        )
    else:
        unit = dp.unit_of(contributions=mech.k)
    loss = dp.loss_of(epsilon=mech.epsilon, delta=mech.delta)
    context = dp.Context.compositor(
        data=frame, privacy_unit=unit, privacy_loss=loss, split_evenly_over=1, margins=margins
    )
    aggs = [dp.len(scale=mech.count_scale, signed=False).alias("n")]
    for i, name in enumerate(mech.measures):
        measure = spec.measure(name)
        assert measure is not None
        low, high = _integer_bounds(measure)
        fill = min(max(0, low), high)
        noisy_sum = pl.col(f"m{i}").fill_null(fill).dp.sum  # type: ignore[attr-defined]
        aggs.append(noisy_sum((low, high), scale=mech.sum_scales[i]).alias(f"s{i}"))
    query = context.query()
    grouped = query.group_by(key_names).agg(aggs) if key_names else query.select(aggs)
    if mech.key_domains is not None and key_names:
        grouped = grouped.with_keys(_keys_frame(plan, spec, mech, frame))
    inner = object.__getattribute__(grouped, "_query")
    domain, metric = inner._chain
    return _Compiled(
        domain,
        metric,
        inner._output_measure,
        object.__getattribute__(grouped, "polars_plan"),
        inner._d_in,
        inner._d_out,
    )


def _keys_frame(plan: Plan, spec: AnalysisSpec, mech: _Mechanism, frame: Any) -> Any:
    """Every combination of the keys' public values, typed as the prepared frame's key columns."""
    import itertools

    import polars as pl

    assert mech.key_domains is not None
    schema = frame.collect_schema()
    columns: dict[str, list[Any]] = {f"k{i}": [] for i in range(len(plan.keys))}
    encoded = [_encoded_domain(plan.keys[i].term, spec, d) for i, d in enumerate(mech.key_domains)]
    for combo in itertools.product(*encoded):
        for i, value in enumerate(combo):
            columns[f"k{i}"].append(value)
    return pl.DataFrame(
        {name: pl.Series(name, values, dtype=schema[name]) for name, values in columns.items()}
    )


def _encoded_domain(term: Term, spec: AnalysisSpec, domain: tuple[Scalar, ...]) -> tuple[Any, ...]:
    """A public domain as the prepared frame holds it (string domains as their position)."""
    dim = spec.dimension(term.column)
    if term.function is None and dim is not None and dim.logical_type == "string":
        return tuple(range(len(domain)))
    return domain


def _threshold(
    plan: Plan,
    spec: AnalysisSpec,
    epsilon: float,
    delta: float,
    count_scale: float,
    sum_scales: tuple[float, ...],
) -> int:
    """The smallest noisy-count threshold whose δ (by OpenDP's privacy map) fits the query's δ."""
    if delta <= 0:
        raise QueryRefused(
            "keys-not-public",
            "grouping by a column without declared values needs a δ budget; the contract has none",
        )
    return _threshold_cached(epsilon, delta, count_scale, sum_scales, plan, spec)


@lru_cache(maxsize=256)
def _threshold_cached(
    epsilon: float,
    delta: float,
    count_scale: float,
    sum_scales: tuple[float, ...],
    plan: Plan,
    spec: AnalysisSpec,
) -> int:
    frame = _prepare(_empty_table(plan, spec), plan, spec, 1).lazy()
    k = spec.max_rows_per_person if spec.privacy_unit else 1
    mech = _Mechanism(epsilon, delta, k, _summed(plan), False, None, count_scale, sum_scales, None)
    compiled = _compile(frame, plan, spec, mech)
    # Bisection over OpenDP's own map (about 0.5 ms a step); a threshold at or under the
    # rows one person may put in a group is refused by the map, so the search starts above it.
    low, high = k + 1, 2**31
    while low < high:
        middle = (low + high) // 2
        if compiled.make(middle).map(compiled.d_in)[1] <= compiled.d_out[1]:
            high = middle
        else:
            low = middle + 1
    return low


# -- rows ----------------------------------------------------------------------------------------
def _empty_table(plan: Plan, spec: AnalysisSpec) -> pa.Table:
    """A table with no rows and the columns the plan reads, typed as the contract declares."""
    types = {
        "string": pa.string(),
        "integer": pa.int64(),
        "number": pa.float64(),
        "boolean": pa.bool_(),
        "date": pa.date32(),
        "timestamp": pa.timestamp("us"),
    }
    fields = []
    for name in _needed(plan, spec):
        dim = spec.dimension(name)
        measure = spec.measure(name)
        kind = (
            dim.logical_type
            if dim is not None
            else (measure.logical_type if measure is not None else "string")
        )
        fields.append(pa.field(name, types[kind]))
    return pa.schema(fields).empty_table()


def _needed(plan: Plan, spec: AnalysisSpec) -> list[str]:
    names = list(plan.columns)
    if spec.privacy_unit is not None and spec.mode == "dp":
        names.append(spec.privacy_unit)
    if not names and spec.dimensions:
        # COUNT(*) alone still needs the rows: one analysable column carries them.
        names.append(spec.dimensions[0].name)
    elif not names and spec.measures:
        names.append(spec.measures[0].name)
    return names


def columns_needed(plan: Plan, spec: AnalysisSpec) -> tuple[str, ...]:
    """The columns to decrypt and hand over for this plan (its columns, and the privacy unit in dp mode)."""
    return tuple(_needed(plan, spec))


def _term_expr(term: Term, spec: AnalysisSpec) -> Any:
    import polars as pl

    col = pl.col(term.column)
    match term.function:
        case None:
            return col
        case "year":
            return col.dt.year().cast(pl.Int64)
        case "quarter":
            return col.dt.quarter().cast(pl.Int64)
        case "month":
            return col.dt.month().cast(pl.Int64)
        case _:
            return col.dt.truncate(_TRUNC_EVERY[term.function])


def _literal(value: Scalar, term: Term, spec: AnalysisSpec) -> Any:
    """A plan literal as Polars compares it with the term (ISO strings become dates)."""
    dim = spec.dimension(term.column)
    kind = (
        "date"
        if term.function and term.function.startswith("trunc_")
        else (dim.logical_type if dim else None)
    )
    if term.function in ("year", "quarter", "month"):
        return _typed(value, "integer")
    if kind == "date" and isinstance(value, str):
        if dim is not None and dim.logical_type == "timestamp":
            return datetime.fromisoformat(value)
        return date.fromisoformat(value)
    if kind == "timestamp" and isinstance(value, str):
        return datetime.fromisoformat(value)
    if kind is None:
        measure = spec.measure(term.column)
        kind = measure.logical_type if measure is not None else "number"
    return _typed(value, kind)


def _typed(value: Scalar, kind: str) -> Scalar:
    """The literal as the column's type, so an ``IN`` list is never a mix Polars cannot build
    (validation refuses what cannot be typed; this holds a plan from elsewhere to the same)."""
    try:
        if kind == "integer" and not isinstance(value, bool):
            if isinstance(value, float) and not value.is_integer():
                raise ValueError("not integral")
            typed = int(value)
            if not -(2**63) <= typed < 2**63:
                raise ValueError("outside int64")
            return typed
        if kind == "number" and not isinstance(value, bool | str):
            return float(value)
    except (TypeError, ValueError, OverflowError):
        raise MeasurementFailed("a filter literal does not fit its column's type") from None
    return value


def _predicate(c: Condition, spec: AnalysisSpec) -> Any:
    import polars as pl

    if c.op in ("and", "or", "not"):
        parts = [_predicate(i, spec) for i in c.items]
        if c.op == "not":
            return ~parts[0]
        out = parts[0]
        for p in parts[1:]:
            out = (out & p) if c.op == "and" else (out | p)
        return out
    assert c.term is not None
    left = _term_expr(c.term, spec)
    values = [_literal(v, c.term, spec) for v in c.values]
    match c.op:
        case "=":
            expr = left == pl.lit(values[0])
        case "<>":
            expr = left != pl.lit(values[0])
        case "<":
            expr = left < pl.lit(values[0])
        case "<=":
            expr = left <= pl.lit(values[0])
        case ">":
            expr = left > pl.lit(values[0])
        case ">=":
            expr = left >= pl.lit(values[0])
        case "in" | "not in":
            expr = left.is_in(values)
            expr = ~expr if c.op == "not in" else expr
        case "between" | "not between":
            expr = left.is_between(pl.lit(values[0]), pl.lit(values[1]))
            expr = ~expr if c.op == "not between" else expr
        case _:
            raise MeasurementFailed("unknown filter operator in the plan")
    # SQL semantics: a comparison with a null is not true, so the row is filtered out.
    return expr.fill_null(False)


def _truncate(frame: Any, unit: str, k: int, seed: int) -> Any:
    """Keep at most ``k`` rows per person, a uniformly random choice of each person's rows.

    Why this keeps the guarantee (see the module docstring): the rows of people over the
    bound are put in one uniformly random order and each such person keeps their first k. The
    relative orders of disjoint sets of rows under a uniform permutation are independent, so
    each person's choice has the same distribution whoever else is in the table; coupling the
    two runs on that choice, neighbouring tables give truncated tables that differ by at most
    the k rows of the person added or removed.

    People must be told apart exactly: two people merged into one would share k rows, and
    adding one could then move up to 2k rows. Grouping by a 64-bit hash of the identifier is
    fast (grouping the strings themselves took 0.4-0.5 s for 1,000,000 rows, the hash about
    0.1 s), so the hash is used, and every hash group over the bound is checked to hold one
    identifier; if one does not (a collision), the exact grouping is used instead. A group at
    or under the bound keeps all its rows, collision or not, which is right for everyone in it.
    Only the rows of people over the bound are ranked (about a fifth of the hospital sample).
    """
    import polars as pl

    if frame.height == 0:
        return frame
    identifiers = frame.get_column(unit)
    hashes = identifiers.hash(seed & 0xFFFFFFFF)
    rows = pl.DataFrame({"h": hashes}).select(pl.len().over("h")).to_series().to_numpy()
    keep = rows <= k
    heavy = np.flatnonzero(~keep)
    if not len(heavy):
        return frame
    heavy_ids = identifiers.gather(heavy)
    heavy_hashes = hashes.gather(heavy)
    pairs = pl.DataFrame({"h": heavy_hashes, "u": heavy_ids})
    if pairs.n_unique() != heavy_hashes.n_unique():
        return _truncate_exact(frame, unit, k, seed)
    rng = np.random.default_rng(seed)
    perm = rng.permutation(len(heavy))
    # A random order of the heavy rows, then a stable sort by person: each person's rows in
    # random order, ranked; the first k of each are kept.
    shuffled = heavy_hashes.to_numpy()[perm]
    order = np.argsort(shuffled, kind="stable")
    ordered = shuffled[order]
    starts = np.flatnonzero(np.r_[True, ordered[1:] != ordered[:-1]])
    counts = np.diff(np.r_[starts, len(heavy)])
    rank = np.arange(len(heavy)) - np.repeat(starts, counts)
    chosen = np.zeros(len(heavy), dtype=bool)
    chosen[perm[order]] = rank < k
    keep[heavy[chosen]] = True
    return frame.filter(pl.Series(keep))


def _truncate_exact(frame: Any, unit: str, k: int, seed: int) -> Any:
    """:func:`_truncate` grouping by the identifiers themselves (after a hash collision)."""
    import polars as pl

    rows = frame.select(pl.len().over(unit)).to_series().to_numpy()
    keep = rows <= k
    heavy = np.flatnonzero(~keep)
    if len(heavy):
        perm = np.random.default_rng(seed).permutation(len(heavy))
        shuffled = frame.select(pl.col(unit))[heavy[perm]]
        # Position of each row among its person's rows, in the shuffled order.
        rank = shuffled.select(pl.int_range(pl.len()).over(unit)).to_series().to_numpy()
        chosen = np.zeros(len(heavy), dtype=bool)
        chosen[perm] = rank < k
        keep[heavy[chosen]] = True
    return frame.filter(pl.Series(keep))


def _truncate_groups(frame: Any, unit: str, keys: list[str], g: int, seed: int) -> Any:
    """Keep each person's rows in at most ``g`` of their groups: a uniformly random choice of
    their distinct groups (by exact value, as in :func:`_truncate`, and stable for the same
    reason: each person's choice is independent of everyone else's rows)."""
    import polars as pl

    if frame.height == 0:
        return frame
    pairs = frame.select([unit, *keys]).unique()
    pairs = pairs.sample(fraction=1.0, shuffle=True, seed=seed)
    pairs = pairs.filter(pl.int_range(pl.len()).over(unit) < g)
    return frame.join(pairs, on=[unit, *keys], how="semi", nulls_equal=True)


def _prepare(table: pa.Table, plan: Plan, spec: AnalysisSpec, seed: int) -> Any:
    """Filter, bound each person, derive keys and encode measures: the frame OpenDP measures.

    Its columns are ``k0..`` (keys) and ``m0..`` (measures as integers); the privacy unit is gone.
    """
    import polars as pl

    needed = _needed(plan, spec)
    missing = [c for c in needed if c not in table.column_names]
    if missing:
        raise MeasurementFailed(f"the table lacks columns the query needs: {', '.join(missing)}")
    frame = pl.from_arrow(table.select(needed))
    assert isinstance(frame, pl.DataFrame)
    if plan.where is not None:
        frame = frame.filter(_predicate(plan.where, spec))
    unit = spec.privacy_unit if spec.mode == "dp" else None
    if unit is not None:
        frame = _truncate(frame, unit, spec.max_rows_per_person, seed)
    columns: list[Any] = []
    for i, key in enumerate(plan.keys):
        expr = _term_expr(key.term, spec)
        dim = spec.dimension(key.term.column)
        if (
            spec.mode == "dp"
            and key.term.function is None
            and dim is not None
            and dim.logical_type == "string"
            and dim.known_values is not None
        ):
            # A declared string domain travels as each value's position (a u32 is cheaper for
            # OpenDP to move than a string); a value outside the domain becomes null and, the
            # keys being public, is not released.
            values = [str(v) for v in dim.known_values]
            expr = expr.replace_strict(values, list(range(len(values))), default=None, return_dtype=pl.UInt32)
        columns.append(expr.alias(f"k{i}"))
    for i, name in enumerate(_summed(plan)):
        measure = spec.measure(name)
        assert measure is not None
        if spec.mode == "threshold":
            # Exact aggregates: the values as they are.
            columns.append(pl.col(name).alias(f"m{i}"))
            continue
        value = pl.col(name).cast(pl.Float64).fill_nan(None)
        if measure.logical_type == "number":
            value = value * NUMBER_SCALE
        columns.append(value.round(0).cast(pl.Int64, strict=False).alias(f"m{i}"))
    if unit is not None and spec.max_groups_per_person is not None and plan.keys:
        frame = frame.with_columns(columns[: len(plan.keys)])
        frame = _truncate_groups(
            frame, unit, [f"k{i}" for i in range(len(plan.keys))], spec.max_groups_per_person, seed
        )
        columns = [pl.col(f"k{i}") for i in range(len(plan.keys))] + columns[len(plan.keys) :]
    if not columns:
        # COUNT(*) alone: one tiny column keeps the frame's height (it holds no value).
        return frame.with_columns(pl.lit(0, dtype=pl.Int32).alias("_")).select("_")
    return frame.select(columns)


# -- the public functions ------------------------------------------------------------------------
def estimate(plan: Plan, spec: AnalysisSpec, epsilon: float) -> Estimate:
    """The noise and the budget of a query, computed from the plan and the contract alone."""
    mech = _mechanism(plan, spec, epsilon)
    return _estimate(plan, spec, mech)


def _estimate(plan: Plan, spec: AnalysisSpec, mech: _Mechanism) -> Estimate:
    dp = _dp()
    accuracy: list[Accuracy] = []
    for agg in plan.aggregates:
        if spec.mode == "threshold":
            accuracy.append(Accuracy(agg.name, agg.function, 0.0, 0.0))
        elif agg.function == "count":
            acc = float(dp.discrete_laplacian_scale_to_accuracy(mech.count_scale, ALPHA))
            accuracy.append(Accuracy(agg.name, "count", acc, mech.count_scale))
        elif agg.function == "sum":
            i = mech.measures.index(agg.column or "")
            factor = _factor(spec, agg.column)
            scale = mech.sum_scales[i]
            acc = float(dp.discrete_laplacian_scale_to_accuracy(scale, ALPHA))
            accuracy.append(Accuracy(agg.name, "sum", acc / factor, scale / factor))
        else:
            accuracy.append(Accuracy(agg.name, "avg", None, None))
    return Estimate(
        mode="threshold" if spec.mode == "threshold" else "dp",
        epsilon=mech.epsilon,
        delta=mech.delta,
        accuracy=tuple(accuracy),
        threshold=mech.threshold,
        public_keys=mech.public_keys,
        min_group_size=spec.min_group_size,
        max_rows_per_person=mech.k,
    )


def _factor(spec: AnalysisSpec, column: str | None) -> int:
    """What a sum was multiplied by to be an integer (hundredths for a dp ``number`` measure)."""
    if spec.mode != "dp":
        return 1
    measure = spec.measure(column or "")
    return NUMBER_SCALE if measure is not None and measure.logical_type == "number" else 1


def threshold_for(plan: Plan, spec: AnalysisSpec, epsilon: float) -> int | None:
    """The noisy-count threshold of a query (None when its keys are public), as estimated."""
    return _mechanism(plan, spec, epsilon).threshold


def release(
    table: pa.Table, plan: Plan, spec: AnalysisSpec, epsilon: float, *, threshold: int | None = None
) -> Release:
    """Measure the plan over ``table`` and release the result (in this process: see sandbox.run).

    ``threshold``: the key-release threshold already found for this query (by the estimate),
    which saves the search; it is checked by OpenDP's privacy map like everything else.
    """
    if spec.mode not in ("dp", "threshold"):
        raise MeasurementFailed("the dataset's contract offers no analyses")
    planned = time.perf_counter()
    mech = _mechanism(plan, spec, epsilon, threshold)
    if table.num_rows > spec.max_rows:
        raise MeasurementFailed("the table holds more rows than its contract's rowCount rule allows")
    seed = secrets.randbits(63)
    started = time.perf_counter()
    frame = _prepare(table, plan, spec, seed)
    prepared = time.perf_counter()
    if spec.mode == "threshold":
        measured = _exact(frame, plan, spec, mech)
    else:
        measured = _noisy(frame, plan, spec, mech)
    done = time.perf_counter()
    result = _finish(measured, plan, spec, mech)
    result.timings.update(
        {"plan": started - planned, "prepare": prepared - started, "measure": done - prepared}
    )
    return result


def _exact(frame: Any, plan: Plan, spec: AnalysisSpec, mech: _Mechanism) -> Any:
    import polars as pl

    key_names = [f"k{i}" for i in range(len(plan.keys))]
    aggs = [pl.len().cast(pl.Int64).alias("n")]
    aggs += [pl.col(f"m{i}").sum().alias(f"s{i}") for i in range(len(mech.measures))]
    if key_names:
        return frame.group_by(key_names).agg(aggs)
    return frame.select(aggs)


#: Measurements by (plan, spec, mechanism, frame schema). A measurement holds no data (OpenDP
#: runs its plan on whatever frame it is given), so one built for a shape serves every release of
#: that shape, each with fresh noise; building one costs about 30 ms.
_MEASUREMENTS: dict[tuple[Any, ...], Any] = {}
_MAX_MEASUREMENTS = 128


def _measurement_for(frame: Any, plan: Plan, spec: AnalysisSpec, mech: _Mechanism) -> Any:
    """The checked OpenDP measurement of ``plan`` for frames shaped like ``frame``."""
    key = (plan, spec, mech, tuple((name, str(dtype)) for name, dtype in frame.schema.items()))
    cached = _MEASUREMENTS.get(key)
    if cached is not None:
        return cached
    compiled = _compile(frame.clear().lazy(), plan, spec, mech)
    measurement = compiled.make(mech.threshold)
    spent = measurement.map(compiled.d_in)
    if spent[0] > compiled.d_out[0] or spent[1] > compiled.d_out[1]:
        # Never run a measurement whose own privacy map exceeds what is charged.
        raise MeasurementFailed("the measurement would spend more than its budget")
    if len(_MEASUREMENTS) >= _MAX_MEASUREMENTS:
        _MEASUREMENTS.clear()
    _MEASUREMENTS[key] = measurement
    return measurement


def _noisy(frame: Any, plan: Plan, spec: AnalysisSpec, mech: _Mechanism) -> Any:
    measurement = _measurement_for(frame, plan, spec, mech)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        result = measurement(frame.lazy())
    return result.collect()


def _finish(measured: Any, plan: Plan, spec: AnalysisSpec, mech: _Mechanism) -> Release:
    """Post-processing: suppress small groups, decode keys, compute means, order, limit, round."""
    import polars as pl

    frame = measured
    before = frame.height
    frame = frame.filter(pl.col("n") >= spec.min_group_size)
    suppressed = before - frame.height
    records: list[dict[str, Any]] = []
    for row in frame.iter_rows(named=True):
        record: dict[str, Any] = {}
        for i, key in enumerate(plan.keys):
            record[key.name] = _decode_key(row[f"k{i}"], key.term, spec)
        count = int(row["n"])
        for agg in plan.aggregates:
            if agg.function == "count":
                record[agg.name] = count
                continue
            i = mech.measures.index(agg.column or "")
            factor = _factor(spec, agg.column)
            total = float(row[f"s{i}"]) / factor
            if agg.function == "sum":
                measure = spec.measure(agg.column or "")
                if measure is not None and measure.minimum >= 0 and spec.mode == "dp":
                    total = max(total, 0.0)  # post-processing: a negative sum of non-negatives is noise
                record[agg.name] = _round(total, measure)
            else:
                measure = spec.measure(agg.column or "")
                assert measure is not None
                mean = total / count if count > 0 else None
                if mean is not None and spec.mode == "dp":
                    # Post-processing: a mean outside the bounds is only noise.
                    mean = min(max(mean, measure.minimum), measure.maximum)
                record[agg.name] = None if mean is None else round(mean, ROUND_DIGITS)
        records.append(record)
    names = list(plan.output_columns)
    records.sort(key=lambda r: tuple(_sort_key(r[k.name]) for k in plan.keys))
    for order in reversed(plan.order_by):
        records.sort(key=_by(order.name), reverse=order.descending)
    if plan.limit is not None:
        records = records[: plan.limit]
    rows = tuple(tuple(r[n] for n in names) for r in records)
    accuracy = _estimate(plan, spec, mech).accuracy
    return Release(
        columns=tuple(names),
        rows=rows,
        mode="threshold" if spec.mode == "threshold" else "dp",
        epsilon=mech.epsilon,
        delta=mech.delta,
        accuracy=accuracy,
        threshold=mech.threshold,
        suppressed=suppressed,
        query_sha256=plan.query_sha256,
        result_sha256=result_sha256(names, rows),
    )


def _by(name: str) -> Any:
    def key(record: dict[str, Any]) -> tuple[int, Any]:
        return _sort_key(record[name])

    return key


def _round(total: float, measure: Measure | None) -> int | float:
    """Sums of integer measures stay integers; others keep ROUND_DIGITS decimals."""
    if measure is not None and measure.logical_type == "integer":
        return round(total)
    return round(total, ROUND_DIGITS)


def _decode_key(value: Any, term: Term, spec: AnalysisSpec) -> Any:
    dim = spec.dimension(term.column)
    if (
        spec.mode == "dp"
        and term.function is None
        and dim is not None
        and dim.logical_type == "string"
        and dim.known_values is not None
        and value is not None
    ):
        return str(dim.known_values[int(value)])
    if isinstance(value, datetime | date):
        return value.isoformat()
    return value


def _sort_key(value: Any) -> tuple[int, Any]:
    """Nulls first, then values of one type (a column holds one type)."""
    if value is None:
        return (0, 0)
    if isinstance(value, bool):
        return (1, int(value))
    return (1, value)


__all__ = [
    "ALPHA",
    "Accuracy",
    "Dimension",
    "EpsilonRefused",
    "Estimate",
    "MeasurementFailed",
    "Release",
    "check_epsilon",
    "columns_needed",
    "estimate",
    "query_delta",
    "release",
    "result_sha256",
    "threshold_for",
    "warm_up",
]
