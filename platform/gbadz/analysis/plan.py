"""A checked query as plain data: what :mod:`gbadz.analysis.query` produces and the measurement runs.

Kept apart from the SQL checker so the sandboxed child imports neither sqlglot nor the contract
model (about 0.6 s of its start, measured): it gets a plan as JSON and builds its query from it.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

from gbadz.analysis.spec import Scalar
from gbadz.errors import BadRequest

DateFunction = Literal[
    "year", "quarter", "month", "trunc_year", "trunc_quarter", "trunc_month", "trunc_week", "trunc_day"
]
AggregateFunction = Literal["count", "sum", "avg"]
Op = Literal["=", "<>", "<", "<=", ">", ">=", "in", "not in", "between", "not between", "and", "or", "not"]


class QueryRefused(BadRequest):
    """The query breaks a rule of the allow-list; ``rule`` names it and the message says why."""

    def __init__(self, rule: str, message: str) -> None:
        super().__init__(f"sql: rule {rule}: {message}", field="sql")
        self.rule = rule


@dataclass(frozen=True)
class Term:
    """A column as a query may use it: a dimension or measure, or a date function of a date dimension."""

    column: str
    function: DateFunction | None = None


@dataclass(frozen=True)
class GroupKey:
    """One group-by key and the output column it becomes."""

    name: str
    term: Term


@dataclass(frozen=True)
class Aggregate:
    """One aggregate output: ``COUNT(*)`` (column None), ``SUM(measure)`` or ``AVG(measure)``."""

    name: str
    function: AggregateFunction
    column: str | None = None


@dataclass(frozen=True)
class Condition:
    """A filter: a comparison of ``term`` with literal ``values``, or ``and``/``or``/``not`` of ``items``.

    Date literals are ISO strings; the measurement converts them by the term's type.
    """

    op: Op
    term: Term | None = None
    values: tuple[Scalar, ...] = ()
    items: tuple[Condition, ...] = ()


@dataclass(frozen=True)
class OrderKey:
    name: str
    descending: bool = False


@dataclass(frozen=True)
class Plan:
    """What a checked query computes. JSON-serialisable; the runner builds its query from this alone."""

    keys: tuple[GroupKey, ...]
    aggregates: tuple[Aggregate, ...]
    where: Condition | None = None
    order_by: tuple[OrderKey, ...] = ()
    limit: int | None = None
    sql: str = ""
    query_sha256: str = ""

    @property
    def output_columns(self) -> tuple[str, ...]:
        return tuple(k.name for k in self.keys) + tuple(a.name for a in self.aggregates)

    @property
    def columns(self) -> tuple[str, ...]:
        """The source columns the query reads (the caller decrypts only these, plus the privacy unit)."""
        names: list[str] = [k.term.column for k in self.keys]
        names += [a.column for a in self.aggregates if a.column is not None]

        def walk(c: Condition | None) -> None:
            if c is None:
                return
            if c.term is not None:
                names.append(c.term.column)
            for item in c.items:
                walk(item)

        walk(self.where)
        return tuple(dict.fromkeys(names))

    def as_dict(self) -> dict[str, Any]:
        return {
            "keys": [
                {"name": k.name, "column": k.term.column, "function": k.term.function} for k in self.keys
            ],
            "aggregates": [
                {"name": a.name, "function": a.function, "column": a.column} for a in self.aggregates
            ],
            "where": _condition_dict(self.where),
            "order_by": [{"name": o.name, "descending": o.descending} for o in self.order_by],
            "limit": self.limit,
            "sql": self.sql,
            "query_sha256": self.query_sha256,
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Plan:
        return cls(
            keys=tuple(GroupKey(k["name"], Term(k["column"], k.get("function"))) for k in data["keys"]),
            aggregates=tuple(
                Aggregate(a["name"], a["function"], a.get("column")) for a in data["aggregates"]
            ),
            where=_condition_from(data.get("where")),
            order_by=tuple(OrderKey(o["name"], bool(o["descending"])) for o in data.get("order_by", ())),
            limit=data.get("limit"),
            sql=data.get("sql", ""),
            query_sha256=data.get("query_sha256", ""),
        )


def _condition_dict(c: Condition | None) -> dict[str, Any] | None:
    if c is None:
        return None
    return {
        "op": c.op,
        "term": {"column": c.term.column, "function": c.term.function} if c.term else None,
        "values": list(c.values),
        "items": [_condition_dict(i) for i in c.items],
    }


def _condition_from(data: dict[str, Any] | None) -> Condition | None:
    if data is None:
        return None
    term = data.get("term")
    return Condition(
        op=data["op"],
        term=Term(term["column"], term.get("function")) if term else None,
        values=tuple(data.get("values", ())),
        items=tuple(c for c in (_condition_from(i) for i in data.get("items", ())) if c is not None),
    )
