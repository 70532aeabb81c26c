"""Wire schemas of the compliance officer's API."""

from __future__ import annotations

from datetime import date, datetime
from typing import Any, Literal

from pydantic import BaseModel, Field


class TransferRow(BaseModel):
    index: int
    kind: str
    logged_at: datetime
    entry: dict[str, Any]


class CounterRead(BaseModel):
    exporter_org_id: str
    exporter: str | None
    year: int
    basis: Literal["mechanism", "exempt", "none"] = Field(
        description="the counter the individuals are counted in; none: aggregate releases (compute-to-data), "
        "which count nobody"
    )
    pi_individuals: int
    spi_individuals: int
    releases: int = Field(
        default=0, description="differentially private releases this year (on the exporter's basis-none row)"
    )
    epsilon_spent: float = Field(default=0.0, description="ε spent by those releases, summed over grants")
    thresholds: dict[str, list[int]] = Field(
        description="the legal thresholds the counts are watched against (from the rules file)"
    )
    next_threshold: dict[str, int | None]
    share_of_next: dict[str, float | None]


class ExpiringRead(BaseModel):
    id: str
    exporter_org_id: str
    recipient_org_id: str
    kind: str
    reference: str
    valid_to: date
    working_days_left: int


class Party(BaseModel):
    org_id: str
    name: str | None


class Parties(BaseModel):
    exporters: list[Party]
    recipients: list[Party]


class RouteDay(BaseModel):
    day: date = Field(description="UTC calendar day")
    origin: str
    destination: str
    transfers: int
