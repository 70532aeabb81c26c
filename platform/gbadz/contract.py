"""Data contracts: the Open Data Contract Standard v3 shape plus a ``gbadz`` extension block.

A contract is the single source for a dataset's schema, its quality rules (turned into a
Great Expectations suite), how each column is protected, and the facts the transfer engine
needs (origin, category, which columns are personal or sensitive, who the individuals are).

``load_contract`` refuses oversized files before parsing and reports every problem as
``file: field.path: reason``.
"""

from __future__ import annotations

import re
from datetime import timedelta
from pathlib import Path
from typing import Any, Literal, get_args

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

from gbadz.vocabulary import PURPOSES, SECTORS, Purpose, check_jurisdiction

MAX_CONTRACT_BYTES = 1024 * 1024
LogicalType = Literal["string", "integer", "number", "boolean", "date", "timestamp"]
Protection = Literal["none", "pseudonymise", "encrypt", "mask_last4", "mask_email", "drop_on_export"]
# PIPL Art.28 sensitive personal information, and minors under 14.
SpiCategory = Literal[
    "biometric",
    "religious_belief",
    "specific_identity",
    "medical_health",
    "financial_account",
    "whereabouts",
    "minor_under_14",
]
SPI_CATEGORIES: tuple[SpiCategory, ...] = get_args(SpiCategory)
PURPOSE_CODES = PURPOSES  # the transfer engine's purpose vocabulary (crossborder-rules.md §7.1)
_DURATION = re.compile(r"^P(?:(\d+)Y)?(?:(\d+)M)?(?:(\d+)W)?(?:(\d+)D)?$")


def parse_duration(text: str) -> timedelta:
    """ISO 8601 calendar durations (P1Y, P6M, P90D, P2W); months count 30 days, years 365."""
    match = _DURATION.match(text or "")
    if not match or not any(match.groups()):
        raise ValueError(f"{text!r} is not an ISO 8601 duration such as P90D, P6M or P1Y")
    years, months, weeks, days = (int(g) if g else 0 for g in match.groups())
    return timedelta(days=years * 365 + months * 30 + weeks * 7 + days)


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
    pi: bool = False
    spi: SpiCategory | None = None
    subject_identifier: bool = Field(
        default=False, description="identifies the individual, for de-duplicated counting"
    )
    protection: Protection | None = None

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


class GbadzBlock(Strict):
    provider: Provider
    origin: str
    category: Literal["core", "important", "general"] = "general"
    sector_overlay: str = "none"
    visible_to: list[str] = Field(
        default_factory=list, description="jurisdictions that may see important/core metadata"
    )
    columns: dict[str, ColumnFacts] = Field(default_factory=dict)
    licence: Licence

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

    @model_validator(mode="after")
    def _columns_exist(self) -> Contract:
        names = {p.name for p in self.table.properties}
        unknown = sorted(set(self.gbadz.columns) - names)
        if unknown:
            raise ValueError(f"gbadz.columns names columns not in the schema: {', '.join(unknown)}")
        if not any(c.subject_identifier for c in self.gbadz.columns.values()) and self.has_pi:
            raise ValueError(
                "a dataset with personal information needs one subject_identifier column (for counting individuals)"
            )
        return self

    @property
    def table(self) -> SchemaObject:
        return self.schema_[0]

    def facts(self, column: str) -> ColumnFacts:
        return self.gbadz.columns.get(column, ColumnFacts())

    @property
    def has_pi(self) -> bool:
        return any(c.pi for c in self.gbadz.columns.values())

    @property
    def has_spi(self) -> bool:
        return any(c.spi for c in self.gbadz.columns.values())

    @property
    def subject_column(self) -> str | None:
        return next((n for n, c in self.gbadz.columns.items() if c.subject_identifier), None)


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
        doc = yaml.safe_load(raw)
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
            problems.append((_loc(tuple(err.get("loc", ()))), msg))
        raise ContractError(path, problems) from None


def load_contract(path: Path) -> Contract:
    try:
        size = path.stat().st_size
        if size > MAX_CONTRACT_BYTES:
            raise ContractError(
                str(path),
                [("(file)", f"{size:,} bytes is over the {MAX_CONTRACT_BYTES:,}-byte limit for a contract")],
            )
        raw = path.read_bytes()
    except OSError as exc:
        raise ContractError(str(path), [("(file)", exc.strerror or str(exc))]) from None
    return parse_contract(raw, str(path))
