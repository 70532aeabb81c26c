"""What an analyst may ask of a dataset, read once from its contract's ``gbadz.compute`` block.

The spec is the only input the query checker and the measurement take from the contract, so
both see the same columns, bounds and budget. It is plain data (a frozen dataclass with a
JSON form) because it crosses a process boundary: the sandboxed child gets it as JSON and
never loads a contract itself.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal

if TYPE_CHECKING:  # the sandboxed child reads a spec as JSON and never imports the contract model
    from gbadz.contract import Contract

Mode = Literal["dp", "threshold", "none"]
DimensionType = Literal["string", "integer", "number", "boolean", "date", "timestamp"]
Scalar = str | int | float | bool

#: The most rows a dataset is assumed to hold when its contract states no ``rowCount`` rule.
#: OpenDP needs a public bound on the table's length (not the length itself, which is private).
DEFAULT_MAX_ROWS = 1_000_000_000


@dataclass(frozen=True)
class Dimension:
    """A column an analyst may group and filter by.

    ``known_values`` is the column's public domain (a ``validValues`` rule, or true/false for a
    boolean): grouping by it releases every declared value, observed or not, so releasing the
    keys costs no δ. ``None`` means the keys come from the data and are released only above a
    noisy threshold (δ).
    """

    name: str
    logical_type: DimensionType
    known_values: tuple[Scalar, ...] | None = None


@dataclass(frozen=True)
class Measure:
    """A numeric column an analyst may sum and average, clamped to the contract's bounds."""

    name: str
    logical_type: Literal["integer", "number"]
    minimum: float
    maximum: float


@dataclass(frozen=True)
class Budget:
    """The privacy budget of one analysis grant (basic composition across its queries)."""

    epsilon: float
    delta: float
    max_epsilon_per_query: float


@dataclass(frozen=True)
class AnalysisSpec:
    """What may be computed over one dataset, and under which privacy model."""

    dataset: str
    table: str
    mode: Mode
    dimensions: tuple[Dimension, ...]
    measures: tuple[Measure, ...]
    privacy_unit: str | None
    max_rows_per_person: int
    max_groups_per_person: int | None
    min_group_size: int
    budget: Budget | None
    #: Public upper bound on the table's rows (the contract's ``rowCount`` rule).
    max_rows: int = DEFAULT_MAX_ROWS
    #: Every column of the schema, so a query naming a real but non-analysable column is told
    #: so (rule ``column-not-analysable``) rather than ``unknown-column``.
    schema_columns: tuple[str, ...] = ()

    @classmethod
    def from_contract(cls, contract: Contract) -> AnalysisSpec:
        """The spec of a contract; a contract with ``mode: none`` gives a spec nothing passes."""
        compute = contract.gbadz.compute
        table = contract.table
        props = {p.name: p for p in table.properties}
        dimensions: list[Dimension] = []
        for name in compute.dimensions:
            prop = props[name]
            known: tuple[Scalar, ...] | None = None
            for rule in prop.quality:
                if rule.rule == "validValues":
                    known = tuple(rule.validValues)
            if known is None and prop.logicalType == "boolean":
                known = (False, True)
            dimensions.append(Dimension(name, prop.logicalType, known))
        measures: list[Measure] = []
        for name in compute.measures:
            prop = props[name]
            options = prop.logicalTypeOptions
            # The contract's lint guarantees numeric measures with both bounds.
            assert options is not None
            assert options.minimum is not None
            assert options.maximum is not None
            kind: Literal["integer", "number"] = "integer" if prop.logicalType == "integer" else "number"
            measures.append(Measure(name, kind, float(options.minimum), float(options.maximum)))
        budget = None
        if compute.budget is not None:
            b = compute.budget
            budget = Budget(b.epsilon, b.delta, b.max_epsilon_per_query or b.epsilon)
        max_rows = DEFAULT_MAX_ROWS
        for row_rule in table.quality:  # rowCount is the only table-level rule
            max_rows = max(1, row_rule.mustBeBetween[1])
        return cls(
            dataset=contract.id,
            table=table.name,
            mode=compute.mode,
            dimensions=tuple(dimensions),
            measures=tuple(measures),
            privacy_unit=compute.privacy_unit,
            max_rows_per_person=compute.max_rows_per_person,
            max_groups_per_person=compute.max_groups_per_person,
            min_group_size=compute.min_group_size,
            budget=budget,
            max_rows=max_rows,
            schema_columns=tuple(props),
        )

    def dimension(self, name: str) -> Dimension | None:
        return next((d for d in self.dimensions if d.name == name), None)

    def measure(self, name: str) -> Measure | None:
        return next((m for m in self.measures if m.name == name), None)

    def as_dict(self) -> dict[str, Any]:
        """What may be asked, for the console and the API (and the sandbox's JSON)."""
        return {
            "dataset": self.dataset,
            "table": self.table,
            "mode": self.mode,
            "dimensions": [
                {
                    "name": d.name,
                    "type": d.logical_type,
                    "known_values": list(d.known_values) if d.known_values is not None else None,
                }
                for d in self.dimensions
            ],
            "measures": [
                {"name": m.name, "type": m.logical_type, "minimum": m.minimum, "maximum": m.maximum}
                for m in self.measures
            ],
            "privacy_unit": self.privacy_unit,
            "max_rows_per_person": self.max_rows_per_person,
            "max_groups_per_person": self.max_groups_per_person,
            "min_group_size": self.min_group_size,
            "budget": (
                {
                    "epsilon": self.budget.epsilon,
                    "delta": self.budget.delta,
                    "max_epsilon_per_query": self.budget.max_epsilon_per_query,
                }
                if self.budget is not None
                else None
            ),
            "max_rows": self.max_rows,
            "schema_columns": list(self.schema_columns),
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> AnalysisSpec:
        """The inverse of :meth:`as_dict` (the sandboxed child reads its spec this way)."""
        budget = data.get("budget")
        return cls(
            dataset=str(data["dataset"]),
            table=str(data["table"]),
            mode=data["mode"],
            dimensions=tuple(
                Dimension(
                    str(d["name"]),
                    d["type"],
                    tuple(d["known_values"]) if d.get("known_values") is not None else None,
                )
                for d in data["dimensions"]
            ),
            measures=tuple(
                Measure(str(m["name"]), m["type"], float(m["minimum"]), float(m["maximum"]))
                for m in data["measures"]
            ),
            privacy_unit=data.get("privacy_unit"),
            max_rows_per_person=int(data["max_rows_per_person"]),
            max_groups_per_person=(
                int(data["max_groups_per_person"]) if data.get("max_groups_per_person") is not None else None
            ),
            min_group_size=int(data["min_group_size"]),
            budget=(
                Budget(
                    float(budget["epsilon"]), float(budget["delta"]), float(budget["max_epsilon_per_query"])
                )
                if budget
                else None
            ),
            max_rows=int(data.get("max_rows", DEFAULT_MAX_ROWS)),
            schema_columns=tuple(data.get("schema_columns", ())),
        )
