"""Wire schemas of access: assessments, requests, reviews, grants and mechanism evidence."""

from __future__ import annotations

import datetime as dt
from datetime import date, datetime
from typing import Annotated, Any, Literal

from pydantic import AliasChoices, BaseModel, ConfigDict, Field, model_validator

from gbadz.errors import DeterminationIncomplete
from gbadz.vocabulary import (
    Authority,
    EvidenceKind,
    EvidenceVariant,
    GrantKind,
    Jurisdiction,
    MacaoGround,
    Purpose,
    Sector,
    SpiCategory,
)

MAX_DURATION_DAYS = 3660
Onward = Literal["none", "within_gba", "outside_gba"]


class AssessmentAsk(BaseModel):
    """§7.1 facts the caller supplies; the rest (origin, category, counters, registration) the platform knows."""

    model_config = ConfigDict(extra="forbid")

    dataset_id: str = Field(max_length=100, examples=["sz-hospital-outpatient-visits"])
    columns: list[str] = Field(default_factory=list, max_length=500, description="default: every column")
    purpose: Purpose = Field(examples=["trade_transport_academic_mfg_marketing"])
    processing_location: Jurisdiction | None = Field(
        default=None,
        validation_alias=AliasChoices("processing_location", "dest"),
        description="where you will process the data, if not where your organisation is registered; "
        "the destination is always your registered jurisdiction, and a declared location can only "
        "make the decision stricter",
    )
    onward_outside_gba: bool = False
    gba_sc_opt_in: bool = True
    kind: GrantKind = Field(
        default="copy", description="copy: the rows; analysis: aggregates computed inside the zone"
    )


KIND_DESCRIPTION = (
    "copy: the granted columns' rows are delivered; analysis: only aggregates computed inside the "
    "zone leave (the contract's gbadz.compute block must offer them; columns default to its "
    "dimensions and measures). What is released is decided from the kind and the contract, never declared"
)


class RequestAsk(BaseModel):
    model_config = ConfigDict(extra="forbid")

    purpose: Purpose
    purpose_text: str = Field(
        min_length=10, max_length=2000, examples=["Route planning model for cold-chain deliveries"]
    )
    columns: list[str] = Field(default_factory=list, max_length=500, description="default: every column")
    duration_days: int = Field(default=90, ge=1, le=MAX_DURATION_DAYS, description="capped by the licence")
    processing_location: Jurisdiction | None = Field(
        default=None,
        validation_alias=AliasChoices("processing_location", "destination"),
        description="where you will process the data, if not where your organisation is registered; "
        "the destination is always your registered jurisdiction, and a declared location can only "
        "make the decision stricter",
    )
    onward_transfer: Onward = "none"
    gba_sc_opt_in: bool = True
    necessity_justification: str | None = Field(
        default=None,
        min_length=20,
        max_length=4000,
        description="required for the Provisions 2024 Art.5 purposes (contract_with_individual, "
        "cross_border_hr, emergency): why the export is necessary; a compliance officer accepts it",
    )
    kind: GrantKind = Field(default="copy", description=KIND_DESCRIPTION)


class DecisionRead(BaseModel):
    outcome: str
    rule_id: str
    legal_basis: str
    obligations: list[str]
    evidence_required: list[str]
    note: str | None
    alternatives: list[dict[str, str]]
    rules_version: str
    rules_hash: str
    evidence: dict[str, Any]
    facts: dict[str, Any]
    considered: list[dict[str, Any]] = Field(
        default_factory=list,
        description="declared facts decided beside the platform's own (each with its outcome); "
        "the decision is the strictest",
    )
    awaits: str | None = Field(
        default=None, description="the compliance officer's finding this outcome waits for"
    )
    reviewed: dict[str, Any] | None = Field(
        default=None,
        description="after a determination: the engine's decision the reviewers determined (outcome, rule, basis)",
    )


class AssessmentRead(BaseModel):
    dataset_id: str
    columns: list[str]
    decision: DecisionRead
    licence_allows: bool
    licence_findings: list[str]
    granted_days: int = Field(description="the duration a request would get (capped by the licence)")
    auto_approvable: bool


#: The states a request can still be withdrawn from by its requester (nothing decided yet).
OPEN_STATES = ("submitted", "under_provider_review", "under_compliance_review")


class HistoryEntry(BaseModel):
    at: datetime
    state: str
    by: Literal["requester", "provider", "compliance_officer", "platform"]


class Withdrawal(BaseModel):
    model_config = ConfigDict(extra="forbid")

    reason: str | None = Field(
        default=None, max_length=500, description="optional: why (kept on the request, not in the audit)"
    )


class AccessRequestRead(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    id: str
    dataset_id: str
    requester_org_id: str
    requester_name: str | None = Field(
        default=None, description="the requesting organisation's registered name (parties of the request)"
    )
    provider_org_id: str | None
    purpose: str
    purpose_text: str
    kind: GrantKind = "copy"
    columns: list[str]
    destination: str = Field(description="the recipient's registered jurisdiction")
    processing_location: str | None = None
    necessity_justification: str | None = None
    findings: dict[str, Any] = Field(default_factory=dict)
    onward_transfer: str
    duration_days: int
    state: Literal[
        "submitted", "under_provider_review", "under_compliance_review", "approved", "rejected", "withdrawn"
    ]
    reviews: list[dict[str, Any]] = Field(
        default_factory=list, description="each review step: who, when, note"
    )
    history: list[HistoryEntry] = Field(
        default_factory=list,
        description="one request (GET /access-requests/{id}): each state it entered, when, and which "
        "party moved it (requester, provider, compliance_officer, platform); no names",
    )
    decision: DecisionRead
    licence_findings: list[str]
    reason: str | None
    created_at: datetime
    updated_at: datetime
    grant_id: str | None = None


class MeasureTerms(BaseModel):
    name: str
    minimum: float | None = Field(description="each value is clamped to [minimum, maximum] before summing")
    maximum: float | None


class AnalysisBudget(BaseModel):
    epsilon: float = Field(description="ε for the whole grant")
    delta: float
    max_epsilon_per_query: float | None


class AnalysisTerms(BaseModel):
    """What an analysis grant may ask, from the dataset's contract (gbadz.compute) and schema."""

    mode: Literal["dp", "threshold"]
    dimensions: list[str] = Field(description="columns to group and filter by")
    measures: list[MeasureTerms] = Field(description="columns to sum and average, with their bounds")
    privacy_unit: str | None = Field(
        description="the column whose people the budget protects (never granted)"
    )
    max_rows_per_person: int
    max_groups_per_person: int | None
    budget: AnalysisBudget | None = Field(description="the budget per grant (dp mode)")
    min_group_size: int


class GrantRead(BaseModel):
    id: str
    request_id: str
    dataset_id: str
    grantee_org_id: str
    provider_org_id: str | None
    purpose: str
    kind: GrantKind = Field(
        default="copy", description="copy: deliveries of the rows; analysis: aggregates only, never a copy"
    )
    analysis: AnalysisTerms | None = Field(
        default=None, description="an analysis grant: what may be asked (None for a copy grant)"
    )
    columns: list[str]
    grantee_name: str | None = Field(default=None, description="the grantee organisation's registered name")
    grantee_jurisdiction: str | None = Field(
        default=None, description="the grantee organisation's registered jurisdiction"
    )
    status: Literal["active", "suspended", "expired", "revoked"]
    granted_at: datetime
    expires_at: datetime
    revoked_at: datetime | None
    revoked_reason: str | None
    suspended_at: datetime | None = None
    suspended_reason: str | None = None
    outcome: str
    legal_basis: str
    rule_id: str | None = None
    determination: dict[str, Any] | None = Field(
        default=None, description="the compliance officer's determination (also in the transfer log)"
    )
    copies_deleted_at: datetime | None = None
    deletion_attested_at: datetime | None = None
    deletion_statement: str | None = None
    current_version: int | None = Field(
        default=None,
        description="the dataset's published version a delivery would send (None: none yet, the grant "
        "is not active, or the dataset is hidden from you)",
    )
    open_preconditions: list[str] = Field(
        default_factory=list,
        description="obligations still open that must be met before any data leaves (pipia, notice_consent)",
    )
    deliverable: bool = Field(
        default=False,
        description="a delivery can be asked now: an active copy grant of a dataset with a published "
        "version and no open precondition",
    )


class FindingsIn(BaseModel):
    """What a compliance officer accepts at the compliance step (each relaxes a decision)."""

    model_config = ConfigDict(extra="forbid")

    necessity_accepted: bool = Field(
        default=False, description="the requester's Art.5 necessity justification is accepted"
    )
    foreign_pi_transit: bool = Field(
        default=False, description="the contract's Art.4 provenance evidence is checked and accepted"
    )
    anonymised: bool = Field(default=False, description="the contract's anonymisation report is accepted")
    macao_art20_ground: MacaoGround = Field(default="none", description="a PDPA Art.20(1) ground that holds")
    dp_release: bool = Field(
        default=False,
        description="an analysis grant: the contract's differential privacy parameters (privacy unit, "
        "contribution bounds, budget) make its releases anonymised (PIPL Art.4, Art.73(4))",
    )
    dp_evaluation_ref: str | None = Field(
        default=None,
        min_length=3,
        max_length=300,
        description="the evaluation the dp_release finding rests on; required with dp_release "
        "(crossborder-rules.md §4: anonymised only with an evaluation attached)",
        examples=["DP-EVAL-2026-004"],
    )

    @model_validator(mode="after")
    def _dp_release_names_its_evaluation(self) -> FindingsIn:
        # Raised as the API's own 422 (not a pydantic error) so the body's ``field`` names the
        # input, like ``determination.<field>``; the route has not run, so nothing changes.
        if self.dp_release and not (self.dp_evaluation_ref or "").strip():
            raise DeterminationIncomplete(
                "findings.dp_evaluation_ref: a DP release is anonymised only with an evaluation "
                "attached; name the evaluation of the contract's privacy parameters",
                field="findings.dp_evaluation_ref",
            )
        return self


class DeterminationIn(BaseModel):
    """The compliance officer's determination (architecture.md invariant 8). Which fields a
    decision needs is checked against the decision: a missing one is 422 naming
    ``determination.<field>``, and nothing changes."""

    model_config = ConfigDict(extra="forbid")

    note: str | None = Field(default=None, max_length=4000, description="why the transfer is lawful")
    basis_rule_id: str | None = Field(
        default=None,
        max_length=16,
        description="for a HUMAN_REVIEW no finding resolves: the rule named as the final basis "
        "(one the reviewed rule lists in the rules' determinable_as)",
        examples=["M7"],
    )
    evidence_id: str | None = Field(
        default=None, max_length=36, description="the mechanism on file the final decision relies on"
    )
    sector_evidence_id: str | None = Field(
        default=None,
        max_length=36,
        description="the sector regulator's approval (a SECTOR item), when a sector overlay applies",
    )
    pipia_reference: str | None = Field(default=None, max_length=300, examples=["PIPIA-2026-017"])
    pipia_date: date | None = None
    consent_reference: str | None = Field(
        default=None, max_length=300, description="the Art.39 notice and separate-consent record"
    )
    consent_not_required_reason: str | None = Field(default=None, max_length=2000)


class Review(BaseModel):
    model_config = ConfigDict(extra="forbid")

    reason: str | None = Field(default=None, max_length=2000, description="the reviewer's note")
    columns: list[Annotated[str, Field(min_length=1, max_length=200)]] | None = Field(
        default=None,
        min_length=1,
        max_length=1000,
        description="the provider's step only: approve fewer columns than were requested (a subset); "
        "the decision is taken again on them and the grant carries them",
    )
    findings: FindingsIn | None = None
    determination: DeterminationIn | None = Field(
        default=None, description="required at the compliance step: the final determination"
    )


class Rejection(BaseModel):
    model_config = ConfigDict(extra="forbid")

    reason: str = Field(min_length=3, max_length=2000)


class EvidenceCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")

    exporter_org_id: str = Field(max_length=36)
    recipient_org_id: str = Field(max_length=36)
    kind: EvidenceKind
    reference: str = Field(min_length=3, max_length=200, examples=["GBA-SC-440300-2026-0012"])
    issued: date | None = None
    valid_to: date | None = None
    effective_date: date | None = None
    filing_date: date | None = None
    purposes: list[Purpose] = Field(default_factory=list, description="empty: any purpose")
    variant: EvidenceVariant | None = Field(
        default=None, description="the instrument; a GBA_SC's variant follows from the parties' regions"
    )
    authority: Authority | None = Field(default=None, description="who issued it or received the filing")
    authority_name: str | None = Field(default=None, max_length=200, examples=["National Health Commission"])
    sector: Sector | None = Field(default=None, description="the sector a SECTOR approval is for")
    dataset_ids: list[str] = Field(
        default_factory=list, max_length=500, description="datasets covered; empty: any"
    )
    spi_categories: list[SpiCategory] | None = Field(
        default=None, description="sensitive categories covered; omitted: not stated (no check)"
    )
    approved_individuals: int | None = Field(
        default=None, ge=0, le=2_000_000_000, description="the volume approved (an assessment's scope)"
    )


class EvidenceRead(EvidenceCreate):
    model_config = ConfigDict(from_attributes=True, extra="ignore")

    id: str
    recorded_by: str
    recorded_at: datetime
    document_sha256: str | None = None
    document_size: int | None = None
    document_type: str | None = None
    supersedes: str | None = None
    version: int = Field(default=1, description="1 for an item first recorded, +1 for each amendment")
    withdrawn_at: datetime | None = None
    withdrawn_reason: str | None = None


class ObligationRead(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    id: str
    grant_id: str
    kind: str
    description: str
    owner_org_id: str | None
    owner_role: Literal["exporter", "recipient"]
    due_on: date | None
    precondition: bool = Field(description="met before any data leaves")
    state: Literal["open", "met"]
    reference: str | None
    evidence_date: date | None = None
    met_by: str | None
    met_at: datetime | None
    overdue: bool = False


class ObligationMet(BaseModel):
    model_config = ConfigDict(extra="forbid")

    reference: str = Field(min_length=3, max_length=300, description="the record that shows it was met")
    date: dt.date | None = Field(
        default=None, description="for a PIPIA: the date it was completed (required)"
    )


class DeletionAttestation(BaseModel):
    model_config = ConfigDict(extra="forbid")

    statement: str = Field(
        min_length=10,
        max_length=2000,
        examples=["All copies deleted from our storage and backups on 2026-12-02"],
    )


class RetirementPreviewRead(BaseModel):
    """What deprecating or retiring the dataset touches now (the provider's confirmation page)."""

    dataset_id: str
    status: str
    live_grants: int = Field(description="grants not revoked and not expired (suspended included)")
    open_requests: int = Field(description="requests still waiting for a review")
    delivered_copies: int = Field(description="objects in the delivery bucket that retiring deletes")
    grantees: list[str] = Field(description="the organisations holding the live grants, by name")
