"""Data contracts: the Open Data Contract Standard v3 shape plus a ``gbadz`` extension block.

A contract is the single source for a dataset's schema, its quality rules (turned into a
Great Expectations suite), how each column is protected, and the facts the transfer engine
needs (origin, category, which columns are personal or sensitive, who the individuals are).

``load_contract`` refuses oversized files before parsing and reports every problem as
``file: field.path: reason``.
"""

from __future__ import annotations

import hashlib
import json
import re
import stat
from dataclasses import dataclass
from datetime import date, datetime, timedelta
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_validator,
)
from yaml._yaml import CParser  # libyaml, in every PyYAML wheel
from yaml.composer import Composer
from yaml.constructor import SafeConstructor
from yaml.resolver import Resolver

from gbadz.vocabulary import (
    PURPOSES,
    SECTOR_SENSITIVE_CATEGORY,
    SECTORS,
    Jurisdiction,
    Purpose,
    SpiCategory,
    check_jurisdiction,
)

MAX_CONTRACT_BYTES = 1024 * 1024
#: Bounds on what a contract's YAML may become once parsed (#20 finding 5: an alias bomb of
#: 1.5 KB took 7.7 s and made a 51.6 MB dataset page; deep nesting and a 5,000-digit integer
#: answered 500).
MAX_YAML_DEPTH = 32
MAX_YAML_WEIGHT = 4 * MAX_CONTRACT_BYTES  # 8 per value plus its characters, aliases expanded
MAX_YAML_VALUES = 50_000  # as written (a shipped contract has a few hundred); parsing them costs ~10 µs each
MAX_INT_CHARS = 20  # int64 and a sign; anything longer is a mistake or an attack
MAX_EXAMPLES = 20
MAX_EXAMPLE_CHARS = 200
_YAML_TAGS = frozenset(
    f"tag:yaml.org,2002:{name}"
    for name in ("str", "int", "float", "bool", "null", "seq", "map", "timestamp", "merge")
)
LogicalType = Literal["string", "integer", "number", "boolean", "date", "timestamp"]
Protection = Literal["none", "pseudonymise", "encrypt", "mask_last4", "mask_email", "drop_on_export"]
PURPOSE_CODES = PURPOSES  # the transfer engine's purpose vocabulary (crossborder-rules.md §7.1)
_NAMED = re.compile(r"^(gbadz(?:\.[a-z_]+)+): (.+)$", re.S)
_DURATION = re.compile(r"^P(?:(\d+)Y)?(?:(\d+)M)?(?:(\d+)W)?(?:(\d+)D)?$")


def parse_duration(text: str) -> timedelta:
    """ISO 8601 calendar durations (P1Y, P6M, P90D, P2W); months count 30 days, years 365."""
    match = _DURATION.match(text or "")
    if not match or not any(match.groups()):
        raise ValueError(f"{text!r} is not an ISO 8601 duration such as P90D, P6M or P1Y")
    years, months, weeks, days = (int(g) if g else 0 for g in match.groups())
    return timedelta(days=years * 365 + months * 30 + weeks * 7 + days)


class _YAMLRefused(yaml.YAMLError):
    """The document is well-formed YAML, but not something a contract may be."""

    def __init__(self, where: str, reason: str) -> None:
        super().__init__(reason)
        self.where = where
        self.reason = reason


class _CEvents(Composer, CParser, SafeConstructor, Resolver):
    """PyYAML's safe loader with libyaml's scanner and parser (C) under the Python composer, so
    the composer can be bounded: a 1 MiB contract of 500,000 values took 31 s with the pure
    Python parser and about 5 s with this one."""

    def __init__(self, stream: bytes) -> None:
        CParser.__init__(self, stream)
        Composer.__init__(self)
        SafeConstructor.__init__(self)
        Resolver.__init__(self)


def _checked_timestamp(loader: _ContractLoader, node: yaml.ScalarNode) -> Any:
    """A YAML timestamp that is no date (2024-02-30, 25:00) is refused naming its line, not a ValueError."""
    try:
        return SafeConstructor.construct_yaml_timestamp(loader, node)
    except (ValueError, OverflowError):
        raise _YAMLRefused(f"line {node.start_mark.line + 1}", "not a valid date or time") from None


class _ContractLoader(_CEvents):
    """The safe loader, bounded while it composes: nesting depth, and no alias that refers to
    the collection it is in (a recursive structure). The composed graph is then checked by
    :func:`_check_graph` before any Python object is built from it."""

    def __init__(self, stream: bytes) -> None:
        super().__init__(stream)
        self._depth = 0
        self._nodes = 0
        self._open_anchors: list[str] = []
        self._path: list[str | int] = []
        self.finished: list[yaml.Node] = []

    def compose_node(self, parent: yaml.Node | None, index: Any) -> yaml.Node | None:
        # ``index`` is the position in a sequence, the key node of a mapping's value, or None
        # for a key: enough to name the field an error is about.
        part = index if isinstance(index, int) else getattr(index, "value", None)
        where = _path([*self._path, part] if isinstance(part, str | int) else self._path)
        event: Any = self.peek_event()
        if isinstance(event, yaml.AliasEvent):
            if event.anchor in self._open_anchors:
                raise _YAMLRefused(where, f"alias *{event.anchor} refers to a collection that contains it")
            return super().compose_node(parent, index)
        if self._depth >= MAX_YAML_DEPTH:
            raise _YAMLRefused(where, f"nested deeper than {MAX_YAML_DEPTH} levels")
        self._nodes += 1
        if self._nodes > MAX_YAML_VALUES:
            raise _YAMLRefused(where, f"the contract has more than {MAX_YAML_VALUES:,} values")
        anchor = getattr(event, "anchor", None)
        if anchor:
            self._open_anchors.append(anchor)
        named = isinstance(part, str | int)
        if isinstance(part, str | int):
            self._path.append(part)
        self._depth += 1
        try:
            node = super().compose_node(parent, index)
        finally:
            self._depth -= 1
            if named:
                self._path.pop()
            if anchor:
                self._open_anchors.pop()
        if node is not None:
            self.finished.append(node)
        return node


def _children(node: yaml.Node) -> list[tuple[str | int, yaml.Node]]:
    if isinstance(node, yaml.SequenceNode):
        return list(enumerate(node.value))
    if isinstance(node, yaml.MappingNode):
        out: list[tuple[str | int, yaml.Node]] = []
        for key, value in node.value:
            name = key.value if isinstance(key, yaml.ScalarNode) else "?"
            out += [(name, key), (name, value)]
        return out
    return []


def _path(parts: list[str | int]) -> str:
    return _loc(tuple(parts))


def _check_graph(loader: _ContractLoader, root: yaml.Node) -> None:
    """Refuse, naming the field: aliases that expand the document past its budget or its depth,
    tags other than JSON's (plus timestamps), and integers too long to be a count or a bound."""
    weight: dict[int, int] = {}
    depth: dict[int, int] = {}
    for node in loader.finished:  # children finish before their parents; aliases point back
        kids = [child for _, child in _children(node)]
        own = 8 + (len(node.value) if isinstance(node, yaml.ScalarNode) else 0)
        weight[id(node)] = own + sum(weight.get(id(k), 8) for k in kids)
        depth[id(node)] = 1 + max((depth.get(id(k), 1) for k in kids), default=0)
    budget_broken = weight.get(id(root), 0) > MAX_YAML_WEIGHT
    if budget_broken or depth.get(id(root), 0) > MAX_YAML_DEPTH:
        # Name the smallest field that is over the bounds on its own.
        node, path = root, list[str | int]()
        while True:
            over = [
                (name, child)
                for name, child in _children(node)
                if weight.get(id(child), 0) > MAX_YAML_WEIGHT
                or (not budget_broken and depth.get(id(child), 0) > MAX_YAML_DEPTH - len(path) - 1)
            ]
            if not over:
                break
            name, node = over[0]
            path.append(name)
        reason = (
            f"it is over the {MAX_YAML_WEIGHT:,}-unit size budget for a contract (8 a value plus its "
            "characters, aliases counted expanded)"
            if budget_broken
            else f"aliases nest it deeper than {MAX_YAML_DEPTH} levels"
        )
        raise _YAMLRefused(_path(path), reason)
    # Within the budget, so this walk over the expanded document is bounded too.
    stack: list[tuple[yaml.Node, list[str | int]]] = [(root, [])]
    while stack:
        node, path = stack.pop()
        if node.tag not in _YAML_TAGS:
            raise _YAMLRefused(_path(path), f"the YAML tag {node.tag} is not allowed in a contract")
        if node.tag == "tag:yaml.org,2002:int" and len(str(node.value)) > MAX_INT_CHARS:
            raise _YAMLRefused(_path(path), f"an integer longer than {MAX_INT_CHARS} characters")
        stack.extend((child, [*path, name]) for name, child in _children(node))


def safe_yaml(raw: bytes) -> Any:
    """Parse YAML with the contract bounds; raises ``yaml.YAMLError`` (``_YAMLRefused`` names the field)."""
    loader = _ContractLoader(raw)
    try:
        root = loader.get_single_node()
        if root is None:
            return None
        _check_graph(loader, root)
        return loader.construct_document(root)
    finally:
        loader.dispose()


# The stubs bound add_constructor to PyYAML's own loader classes; ours composes like them.
_ContractLoader.add_constructor("tag:yaml.org,2002:timestamp", _checked_timestamp)  # type: ignore[type-var]


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", populate_by_name=True)


class TypeOptions(Strict):
    pattern: str | None = None
    minimum: float | None = None
    maximum: float | None = None
    minLength: int | None = Field(default=None, ge=0)
    maxLength: int | None = Field(default=None, ge=1)

    @field_validator("pattern")
    @classmethod
    def _regex(cls, value: str | None) -> str | None:
        if value is not None:
            try:
                re.compile(value)
            except re.error as exc:
                raise ValueError(f"not a valid regular expression: {exc}") from None
        return value


class PropertyQuality(Strict):
    rule: Literal["validValues"]
    validValues: list[str | int | float | bool] = Field(min_length=1)


class SchemaQuality(Strict):
    rule: Literal["rowCount"]
    mustBeBetween: tuple[int, int]

    @model_validator(mode="after")
    def _ordered(self) -> SchemaQuality:
        low, high = self.mustBeBetween
        if low < 0 or high < low:
            raise ValueError("mustBeBetween needs 0 <= minimum <= maximum")
        return self


class Property(Strict):
    name: str = Field(min_length=1, max_length=128, pattern=r"^[a-z][a-z0-9_]*$")
    logicalType: LogicalType
    description: str | None = None
    required: bool = False
    unique: bool = False
    primaryKey: bool = False
    logicalTypeOptions: TypeOptions | None = None
    quality: list[PropertyQuality] = Field(default_factory=list)
    examples: list[Any] | None = None
    tags: list[str] = Field(default_factory=list)

    @field_validator("examples", mode="before")
    @classmethod
    def _few_short_examples(cls, value: Any, info: ValidationInfo) -> Any:
        # Sample values are shown on every dataset page: a few single short values. A contract
        # stored before this rule still loads, its examples trimmed to what the rule allows.
        if not isinstance(value, list):
            return value
        if not (info.context or {}).get("submitted"):
            return [v for v in value if _example_ok(v)][:MAX_EXAMPLES]
        if len(value) > MAX_EXAMPLES:
            raise ValueError(f"at most {MAX_EXAMPLES} examples, not {len(value):,}")
        for i, item in enumerate(value):
            if not _example_ok(item):
                raise ValueError(
                    f"example [{i}] must be one value (text of at most {MAX_EXAMPLE_CHARS} characters, "
                    "a number, a date or true/false), not a list or mapping"
                )
        return value


def _example_ok(value: Any) -> bool:
    if isinstance(value, str):
        return len(value) <= MAX_EXAMPLE_CHARS
    return value is None or isinstance(value, bool | int | float | date | datetime)


class SchemaObject(Strict):
    name: str = Field(min_length=1, pattern=r"^[a-z][a-z0-9_]*$")
    physicalName: str | None = None
    description: str | None = None
    properties: list[Property] = Field(min_length=1)
    quality: list[SchemaQuality] = Field(default_factory=list)

    @model_validator(mode="after")
    def _unique_names(self) -> SchemaObject:
        seen: set[str] = set()
        for prop in self.properties:
            if prop.name in seen:
                raise ValueError(f"duplicate column name {prop.name!r}")
            seen.add(prop.name)
        return self


class Description(Strict):
    purpose: str | None = None
    usage: str | None = None
    limitations: str | None = None


class ColumnFacts(Strict):
    """How one column is classified. A submitted contract classifies every column (``pi`` stated)."""

    pi: bool = False
    spi: SpiCategory | None = None
    subject_identifier: bool = Field(
        default=False, description="identifies the individual, for de-duplicated counting"
    )
    protection: Protection | None = None
    not_sensitive_because: str | None = Field(
        default=None,
        min_length=10,
        max_length=500,
        description="why a personal column of a sector-overlay dataset is not sensitive in that sector",
    )

    @model_validator(mode="after")
    def _protected(self) -> ColumnFacts:
        if self.spi and not self.pi:
            raise ValueError("a sensitive column is personal information: set pi: true")
        if self.pi and self.protection is None:
            raise ValueError(
                "a personal-information column needs a protection (none must be said explicitly)"
            )
        if self.spi and self.protection in ("none", None):
            raise ValueError(
                "a sensitive column cannot be unprotected: use encrypt, pseudonymise or drop_on_export"
            )
        return self


@dataclass(frozen=True, slots=True)
class Classified:
    """A column's classification as the law sees it: the declaration, tightened by the sector overlay."""

    pi: bool
    spi: str | None
    why: str  # declared | sector_overlay | unclassified


class Provenance(Strict):
    """Where the data came from. Each field can only add restrictions, or send a request to review."""

    collected_in: Jurisdiction | None = Field(
        default=None,
        description="where the individuals' data was collected, if not the exporter's jurisdiction",
    )
    collection_purposes: list[Purpose] = Field(
        default_factory=list,
        description="purposes of collection, or with the prescribed consent (PDPO DPP3); required for Hong Kong PI",
    )
    received_under_gba_sc: bool = Field(
        default=False, description="the data came from the Mainland under a GBA standard contract"
    )
    foreign_pi_in_transit: bool = Field(
        default=False,
        description="foreign personal information in transit, no Mainland PI added (Provisions 2024 Art.4)",
    )
    evidence: str | None = Field(default=None, min_length=3, max_length=500)

    @model_validator(mode="after")
    def _evidenced(self) -> Provenance:
        if self.foreign_pi_in_transit and not self.evidence:
            raise ValueError(
                "foreign_pi_in_transit needs evidence: the reference a compliance officer checks"
            )
        return self


class Anonymisation(Strict):
    """A claim that the data is anonymised (PIPL Art.73(4)): a compliance officer checks the report."""

    report_ref: str = Field(min_length=3, max_length=500)


class Minors(Strict):
    """A row-level rule: rows of children under 14 are sensitive (PIPL Art.28, Art.31)."""

    birth_year_column: str | None = None
    birth_date_column: str | None = None

    @model_validator(mode="after")
    def _one(self) -> Minors:
        if (self.birth_year_column is None) == (self.birth_date_column is None):
            raise ValueError("name exactly one of birth_year_column and birth_date_column")
        return self


class Provider(Strict):
    organization: str = Field(min_length=1)
    registration_no: str | None = None
    contact: str | None = None


class Licence(Strict):
    permitted_purposes: list[Purpose] = Field(min_length=1)
    max_grant_duration: str
    onward_transfer_allowed: bool = False
    attribution: str | None = None

    @field_validator("max_grant_duration")
    @classmethod
    def _duration(cls, value: str) -> str:
        parse_duration(value)
        return value

    @property
    def max_duration(self) -> timedelta:
        return parse_duration(self.max_grant_duration)


class ComputeBudget(Strict):
    """The privacy budget one analysis grant may spend in all (pure or approximate DP)."""

    epsilon: float = Field(gt=0, le=10, description="ε for the whole grant (basic composition)")
    delta: float = Field(
        default=1e-7,
        ge=0,
        le=1e-5,
        description="δ for the whole grant: what releasing group keys not declared in the contract costs",
    )
    max_epsilon_per_query: float | None = Field(
        default=None, gt=0, le=10, description="the most one query may spend (default: the whole budget)"
    )


class Compute(Strict):
    """Compute-to-data (ADR 0022): what analysts may ask of the rows without seeing them.

    ``dp``: differentially private aggregates under a per-grant budget, each person bounded
    to ``max_rows_per_person`` rows (and ``max_groups_per_person`` groups); ``threshold``:
    exact aggregates with small groups suppressed, only for a dataset with no personal
    information (a minimum group size alone is broken by differencing); ``none``: no analyses.
    """

    mode: Literal["dp", "threshold", "none"] = "none"
    dimensions: list[str] = Field(
        default_factory=list, max_length=32, description="columns an analyst may group and filter by"
    )
    measures: list[str] = Field(
        default_factory=list,
        max_length=32,
        description="numeric columns an analyst may sum and average; bounded by the schema's minimum/maximum",
    )
    privacy_unit: str | None = Field(
        default=None, description="the subject-identifier column whose people the budget protects"
    )
    max_rows_per_person: int = Field(default=1, ge=1, le=10_000)
    max_groups_per_person: int | None = Field(default=None, ge=1, le=10_000)
    budget: ComputeBudget | None = None
    min_group_size: int = Field(default=10, ge=1, le=1_000_000)


class GbadzBlock(Strict):
    provider: Provider
    origin: str
    category: Literal["core", "important", "general"] = "general"
    sector_overlay: str = "none"
    visible_to: list[str] = Field(
        default_factory=list, description="jurisdictions that may see important/core metadata"
    )
    columns: dict[str, ColumnFacts] = Field(default_factory=dict)
    provenance: Provenance = Field(default_factory=Provenance)
    anonymisation: Anonymisation | None = None
    minors: Minors | None = None
    licence: Licence
    compute: Compute = Field(default_factory=Compute)

    @field_validator("sector_overlay")
    @classmethod
    def _sector(cls, value: str) -> str:
        if value not in SECTORS:
            raise ValueError(f"unknown sector overlay {value!r}: use one of {', '.join(SECTORS)}")
        return value

    @field_validator("origin")
    @classmethod
    def _origin(cls, value: str) -> str:
        return check_jurisdiction(value)

    @field_validator("visible_to")
    @classmethod
    def _visible_to(cls, values: list[str], info: ValidationInfo) -> list[str]:
        # Exact codes only, for contracts submitted now (parse_contract): visibility compares
        # them as they are (``hk`` is not ``HK``). A contract stored before this check still
        # loads; its unknown codes simply match no one.
        if (info.context or {}).get("submitted"):
            for value in values:
                check_jurisdiction(value)
        return values


class Contract(Strict):
    apiVersion: Literal["v3.0.0", "v3.0.1", "v3.0.2"]
    kind: Literal["DataContract"]
    id: str = Field(min_length=3, max_length=100, pattern=r"^[a-z0-9][a-z0-9-]*$")
    name: str = Field(min_length=1)
    version: str = Field(pattern=r"^\d+\.\d+\.\d+$")
    status: Literal["proposed", "draft", "active", "deprecated", "retired"]
    description: Description | None = None
    tags: list[str] = Field(default_factory=list)
    schema_: list[SchemaObject] = Field(alias="schema", min_length=1, max_length=1)
    gbadz: GbadzBlock

    @model_validator(mode="before")
    @classmethod
    def _every_column_classified(cls, data: Any, info: ValidationInfo) -> Any:
        # Fail closed (invariant 6): a submitted contract classifies every column, saying
        # ``pi`` explicitly; an unclassified column is an error, never "not personal". A
        # contract stored before this rule still loads, and its unclassified columns count as
        # personal (see ``classification``).
        if not (info.context or {}).get("submitted") or not isinstance(data, dict):
            return data
        try:
            properties = data["schema"][0]["properties"]
            columns = (data.get("gbadz") or {}).get("columns") or {}
        except (KeyError, IndexError, TypeError):
            return data  # the field validators report the shape
        if not isinstance(columns, dict) or not isinstance(properties, list):
            return data
        names = [p.get("name") for p in properties if isinstance(p, dict)]
        missing = [n for n in names if isinstance(n, str) and not isinstance(columns.get(n), dict)]
        unstated = [str(n) for n in names if isinstance(columns.get(n), dict) and "pi" not in columns[n]]
        problems = []
        if missing:
            problems.append(f"unclassified columns: {', '.join(missing)}")
        if unstated:
            problems.append(f"columns without an explicit pi: true|false: {', '.join(unstated)}")
        if problems:
            raise ValueError(
                "gbadz.columns: classify every column of the schema (pi, spi, subject_identifier, "
                "protection); " + "; ".join(problems)
            )
        return data

    @model_validator(mode="after")
    def _columns_exist(self, info: ValidationInfo) -> Contract:
        names = {p.name for p in self.table.properties}
        unknown = sorted(set(self.gbadz.columns) - names)
        if unknown:
            raise ValueError(f"gbadz.columns: names columns not in the schema: {', '.join(unknown)}")
        if not self.subject_columns and any(c.pi for c in self.gbadz.columns.values()):
            raise ValueError(
                "a dataset with personal information needs one subject_identifier column (for counting individuals)"
            )
        types = {p.name: p.logicalType for p in self.table.properties}
        required = {p.name for p in self.table.properties if p.required}
        for name in self.subject_columns:
            # The people counted are the law's volumes: an identifier a provider could leave
            # empty, or that is not personal, would let it choose how many people it exports.
            if not self.gbadz.columns[name].pi:
                raise ValueError(f"gbadz.columns: subject identifier {name} must be personal (pi: true)")
            if name not in required:
                raise ValueError(
                    f"gbadz.columns: subject identifier {name} must be required: true in the schema"
                )
        minors = self.gbadz.minors
        if minors is not None:
            column = minors.birth_year_column or minors.birth_date_column
            wanted = "integer" if minors.birth_year_column else "date"
            if column not in types:
                raise ValueError(f"gbadz.minors: names a column not in the schema: {column}")
            if types[column] != wanted:
                raise ValueError(f"gbadz.minors: {column} must be a {wanted} column, not {types[column]}")
        submitted = (info.context or {}).get("submitted")
        if (
            submitted
            and "HK" in (self.gbadz.origin, self.gbadz.provenance.collected_in)
            and self.has_pi
            and not self.gbadz.provenance.collection_purposes
        ):
            raise ValueError(
                "gbadz.provenance.collection_purposes: a Hong Kong dataset with personal data states the "
                "purposes it was collected for (PDPO DPP3)"
            )
        self._check_compute()
        return self

    def _check_compute(self) -> None:
        """The compute block names analysable columns and a privacy model that fits the data."""
        compute = self.gbadz.compute
        if compute.mode == "none":
            return
        props = {p.name: p for p in self.table.properties}
        where = "gbadz.compute"
        if not compute.dimensions and not compute.measures:
            raise ValueError(f"{where}: name at least one dimension or measure, or set mode: none")
        for name in [*compute.dimensions, *compute.measures]:
            if name not in props:
                raise ValueError(f"{where}: names a column not in the schema: {name}")
        both = sorted(set(compute.dimensions) & set(compute.measures))
        if both:
            raise ValueError(f"{where}: a column is a dimension or a measure, not both: {', '.join(both)}")
        for name in compute.dimensions:
            facts = self.facts(name)
            # Grouping by a per-person or per-row value would release one group per person.
            if facts.subject_identifier or facts.protection == "pseudonymise" or props[name].unique:
                raise ValueError(
                    f"{where}.dimensions: {name} identifies a person or a row; it cannot be grouped by"
                )
            if facts.protection == "drop_on_export":
                raise ValueError(f"{where}.dimensions: {name} is dropped on export; it cannot be analysed")
        for name in compute.measures:
            prop = props[name]
            options = prop.logicalTypeOptions
            if prop.logicalType not in ("integer", "number"):
                raise ValueError(f"{where}.measures: {name} must be an integer or number column")
            if options is None or options.minimum is None or options.maximum is None:
                raise ValueError(
                    f"{where}.measures: {name} needs logicalTypeOptions minimum and maximum (its contribution bounds)"
                )
            if self.facts(name).subject_identifier or self.facts(name).protection in (
                "pseudonymise",
                "drop_on_export",
            ):
                raise ValueError(f"{where}.measures: {name} identifies a person or is dropped on export")
        if compute.mode == "threshold":
            if self.has_pi:
                raise ValueError(
                    f"{where}.mode: threshold is only for a dataset with no personal information; "
                    "a minimum group size alone is broken by differencing: use dp"
                )
            return
        if compute.budget is None:
            raise ValueError(f"{where}.budget: a dp mode needs a budget (epsilon per grant)")
        per_query = compute.budget.max_epsilon_per_query
        if per_query is not None and per_query > compute.budget.epsilon:
            raise ValueError(f"{where}.budget.max_epsilon_per_query: more than the grant's whole epsilon")
        if self.has_pi:
            if compute.privacy_unit is None:
                raise ValueError(
                    f"{where}.privacy_unit: a dataset with personal information names its subject identifier"
                )
            if compute.privacy_unit not in self.subject_columns:
                raise ValueError(
                    f"{where}.privacy_unit: {compute.privacy_unit} is not the subject_identifier column"
                )
        elif compute.privacy_unit is not None and compute.privacy_unit not in props:
            raise ValueError(
                f"{where}.privacy_unit: names a column not in the schema: {compute.privacy_unit}"
            )
        if compute.privacy_unit in compute.dimensions or compute.privacy_unit in compute.measures:
            raise ValueError(f"{where}.privacy_unit: the privacy unit cannot be a dimension or measure")

    @property
    def table(self) -> SchemaObject:
        return self.schema_[0]

    def facts(self, column: str) -> ColumnFacts:
        """The column's declaration (protection, identifiers) as written in the contract."""
        return self.gbadz.columns.get(column, ColumnFacts())

    def classification(self, column: str) -> Classified:
        """The column as the law sees it: unclassified counts as personal; the sector overlay
        makes personal columns sensitive in its category unless the contract says why not."""
        declared = self.gbadz.columns.get(column)
        if declared is None:
            overlay = SECTOR_SENSITIVE_CATEGORY.get(self.gbadz.sector_overlay)
            return Classified(True, overlay, "unclassified")
        if not declared.pi:
            return Classified(False, None, "declared")
        if declared.spi:
            return Classified(True, declared.spi, "declared")
        overlay = SECTOR_SENSITIVE_CATEGORY.get(self.gbadz.sector_overlay)
        if overlay and not declared.not_sensitive_because:
            return Classified(True, overlay, "sector_overlay")
        return Classified(True, None, "declared")

    def classify(self, columns: list[str] | tuple[str, ...]) -> tuple[bool, bool, list[str]]:
        """``(has_pi, has_spi, spi categories)`` of a set of columns."""
        found = [self.classification(c) for c in columns]
        categories = sorted({c.spi for c in found if c.spi})
        return any(c.pi for c in found), bool(categories), categories

    @property
    def has_pi(self) -> bool:
        return self.classify([p.name for p in self.table.properties])[0] if self.schema_ else False

    @property
    def has_spi(self) -> bool:
        return self.classify([p.name for p in self.table.properties])[1] if self.schema_ else False

    def classification_fingerprint(self) -> str:
        """SHA-256 of everything a compliance officer signs off in a listing review: the
        columns and their types, their classification, category, overlay, origin, provenance,
        anonymisation, row rules, visibility and licence (not the description or the version)."""
        g = self.gbadz
        signed = {
            "columns": [[p.name, p.logicalType] for p in self.table.properties],
            "classification": {n: c.model_dump() for n, c in sorted(g.columns.items())},
            "category": g.category,
            "sector_overlay": g.sector_overlay,
            "origin": g.origin,
            "provenance": g.provenance.model_dump(),
            "anonymisation": g.anonymisation.model_dump() if g.anonymisation else None,
            "minors": g.minors.model_dump() if g.minors else None,
            # Who may see restricted metadata, and what the licence allows, change what others get.
            "visible_to": sorted(g.visible_to),
            "licence": g.licence.model_dump(),
            # What analysts may compute, and under which privacy model (ADR 0022).
            **({"compute": g.compute.model_dump()} if g.compute.mode != "none" else {}),
        }
        return hashlib.sha256(json.dumps(signed, sort_keys=True).encode()).hexdigest()

    @property
    def subject_columns(self) -> list[str]:
        return [n for n, c in self.gbadz.columns.items() if c.subject_identifier]

    @property
    def subject_column(self) -> str | None:
        return next(iter(self.subject_columns), None)


class ContractError(ValueError):
    """A contract file is invalid; ``problems`` are ``(field path, reason)`` pairs."""

    def __init__(self, path: str, problems: list[tuple[str, str]]) -> None:
        self.path = path
        self.problems = problems
        super().__init__("; ".join(f"{path}: {loc}: {msg}" for loc, msg in problems))

    def lines(self) -> list[str]:
        return [f"{self.path}: {loc}: {msg}" for loc, msg in self.problems]


def _loc(parts: tuple[Any, ...]) -> str:
    out = ""
    for part in parts:
        if isinstance(part, int):
            out += f"[{part}]"
        else:
            out += ("." if out else "") + ("schema" if part == "schema_" else str(part))
    return out or "(document)"


def parse_contract(raw: bytes, path: str = "<contract>") -> Contract:
    if len(raw) > MAX_CONTRACT_BYTES:
        raise ContractError(
            path,
            [("(file)", f"{len(raw):,} bytes is over the {MAX_CONTRACT_BYTES:,}-byte limit for a contract")],
        )
    try:
        doc = safe_yaml(raw)
    except _YAMLRefused as exc:
        raise ContractError(path, [(exc.where, exc.reason)]) from None
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"line {mark.line + 1}" if mark is not None else "(file)"
        raise ContractError(path, [(where, f"not valid YAML: {getattr(exc, 'problem', exc)}")]) from None
    if not isinstance(doc, dict):
        raise ContractError(path, [("(document)", f"a contract is a YAML mapping, not {type(doc).__name__}")])
    try:
        return Contract.model_validate(doc, context={"submitted": True})
    except ValidationError as exc:
        problems = []
        for err in exc.errors():
            msg = str(err.get("msg", "")).removeprefix("Value error, ")
            loc = _loc(tuple(err.get("loc", ())))
            named = _NAMED.match(msg) if loc == "(document)" else None
            if named:  # a whole-document rule that names its field: put the error next to it
                loc, msg = named.group(1), named.group(2)
            problems.append((loc, msg))
        raise ContractError(path, problems) from None


def load_contract(path: Path) -> Contract:
    """Read a contract file: a regular file only (a FIFO would block, a device such as /dev/zero
    never ends and reports no size), and never more than the limit, whatever its size says."""
    try:
        info = path.stat()
        if not stat.S_ISREG(info.st_mode):
            raise ContractError(
                str(path),
                [("(file)", "not a regular file (a directory, device, FIFO or socket): give a file")],
            )
        if info.st_size > MAX_CONTRACT_BYTES:
            raise ContractError(
                str(path),
                [
                    (
                        "(file)",
                        f"{info.st_size:,} bytes is over the {MAX_CONTRACT_BYTES:,}-byte limit for a contract",
                    )
                ],
            )
        with path.open("rb") as fh:
            raw = fh.read(MAX_CONTRACT_BYTES + 1)  # a file that grew: parse_contract refuses it
    except OSError as exc:
        raise ContractError(str(path), [("(file)", exc.strerror or str(exc))]) from None
    return parse_contract(raw, str(path))
