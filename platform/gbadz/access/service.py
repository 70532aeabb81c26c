"""Access requests, grants and mechanism evidence: the licence and the transfer engine together.

Every request is decided when it is made, and again at approval and at every transfer
(delivery, Delta Sharing, replay; ``redecide``): the contract's licence (purposes,
duration, columns, onward transfer) and the transfer engine over facts the platform knows
(architecture.md invariant 6, ADR 0015):

- origin is the exporter organisation's registered jurisdiction, destination the recipient's;
- classification comes from the contract, every column classified, the sector overlay
  tightening it; the individuals are counted per subject when a version is published;
- the volume is the exporter's live year-to-date count, plus the reservations of approved
  grants not yet delivered, plus this request's individuals (unknown: review);
- what a party declares (a processing location, a place of collection, a provenance or
  anonymisation claim, an Art.5 purpose) is decided beside those facts and can only make
  the outcome stricter; facts that relax it are a compliance officer's findings.

``PROHIBITED`` can never be approved; only a request that both the licence and the engine
allow without review is approved automatically (ADR 0011).
"""

from __future__ import annotations

import hashlib
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from datetime import UTC, date, datetime, timedelta
from functools import partial
from typing import Any

from sqlalchemy.orm import Session

from gbadz import audit
from gbadz.access import determination as determining
from gbadz.access import repository
from gbadz.access.determination import DeterminationIn
from gbadz.access.models import AccessRequest, Grant, MechanismEvidence, Obligation
from gbadz.catalog import repository as catalog_repository
from gbadz.catalog.models import Dataset
from gbadz.catalog.service import get_owned, get_visible, stored_contract, visibility_clause
from gbadz.compliance import counters
from gbadz.contract import Contract
from gbadz.crypto.keys import KeyProvider, grant_delivery_context
from gbadz.errors import (
    AccessRequestNotFound,
    AnalysisNotOffered,
    BadRequest,
    ColumnNotAnalysable,
    ColumnNotInSchema,
    ColumnsNotNarrower,
    DatasetNotFound,
    DatasetNotOpen,
    DeletionAlreadyAttested,
    DeterminationIncomplete,
    DuplicateMechanism,
    ExporterNotRegistered,
    Forbidden,
    FourEyes,
    GrantAlreadyRevoked,
    GrantInactive,
    GrantNotFound,
    GrantStillRunning,
    IntegrityCheckFailed,
    JustificationRequired,
    LicenceProhibits,
    MechanismIncomplete,
    MechanismNotFound,
    MechanismNotOnFile,
    MechanismWithdrawn,
    NotTheProvider,
    NotYourReviewStep,
    ObligationAlreadyMet,
    ObligationIncomplete,
    ObligationNotFound,
    RequestNotUnderReview,
    TransferProhibited,
)
from gbadz.identity.models import Organization
from gbadz.identity.service import Viewer
from gbadz.identity.tokens import Principal
from gbadz.law.engine import (
    STRICTNESS,
    Decision,
    FactError,
    NotDeterminable,
    TransferFacts,
    decide_strictest,
    determined_as,
    gba_sc_findings,
)
from gbadz.law.evidence import Evidence, Scope, check_evidence, check_mechanisms, legal_date
from gbadz.law.rules import RuleSet, default_rules
from gbadz.storage import ObjectStore, delivery_prefix
from gbadz.translog.log import TransferLog
from gbadz.vocabulary import AUTHORITIES_OF_VARIANT, REGION_OF, VARIANTS_OF_KIND

REVIEW_OUTCOMES = ("GBA_SC", "SCC_OR_CERT", "ASSESSMENT", "HUMAN_REVIEW")
#: Provisions 2024 Art.5(1)-(3): purposes whose exemption needs a written necessity justification.
ART5_PURPOSES = ("contract_with_individual", "cross_border_hr", "emergency")


@dataclass(frozen=True)
class Ask:
    """What a requester asks for (the API body, validated)."""

    dataset_id: str
    purpose: str
    purpose_text: str
    columns: tuple[str, ...]
    duration_days: int
    processing_location: str | None  # declared: can only make the decision stricter
    onward_transfer: str  # none | within_gba | outside_gba
    gba_sc_opt_in: bool = True
    necessity_justification: str | None = None
    kind: str = "copy"  # copy | analysis (issue #18): what the grant will let leave


@dataclass(frozen=True)
class Findings:
    """What a compliance officer accepted: the only source of the facts that relax a decision."""

    necessity_accepted: bool = False
    foreign_pi_transit: bool = False
    anonymised: bool = False
    macao_art20_ground: str = "none"
    #: PIPL Art.4, Art.73(4): the contract's differential privacy parameters make its releases
    #: anonymised (the rules' ``dp_release_accepted``), with the officer's evaluation named.
    dp_release: bool = False
    dp_evaluation_ref: str | None = None

    @classmethod
    def of(cls, stored: dict[str, Any] | None, contract_sha256: str | None = None) -> Findings:
        """The findings recorded, if they were made on this contract (a changed contract voids them)."""
        stored = stored or {}
        if contract_sha256 is not None and stored.get("contract_sha256") not in (None, contract_sha256):
            return cls()
        known = {k: v for k, v in stored.items() if k in cls.__dataclass_fields__}
        return cls(**known)

    def as_dict(self) -> dict[str, Any]:
        return {
            "necessity_accepted": self.necessity_accepted,
            "foreign_pi_transit": self.foreign_pi_transit,
            "anonymised": self.anonymised,
            "macao_art20_ground": self.macao_art20_ground,
            "dp_release": self.dp_release,
            "dp_evaluation_ref": self.dp_evaluation_ref,
        }

    def merged_with(self, new: Findings) -> Findings:
        """Findings already recorded plus those made now (a finding once made stays made)."""
        return Findings(
            necessity_accepted=self.necessity_accepted or new.necessity_accepted,
            foreign_pi_transit=self.foreign_pi_transit or new.foreign_pi_transit,
            anonymised=self.anonymised or new.anonymised,
            macao_art20_ground=new.macao_art20_ground
            if new.macao_art20_ground != "none"
            else self.macao_art20_ground,
            dp_release=self.dp_release or new.dp_release,
            dp_evaluation_ref=new.dp_evaluation_ref if new.dp_release else self.dp_evaluation_ref,
        )


def analysis_terms_of(session: Session, grant: Grant) -> dict[str, Any] | None:
    """What an analysis grant may ask now, from its dataset's current contract (None for a copy grant)."""
    if grant.kind != "analysis":
        return None
    dataset = session.get(Dataset, grant.dataset_id)
    return analysis_terms(stored_contract(dataset), grant.columns) if dataset is not None else None


#: The officer's finding each awaited fact of the rules is recorded as (``findings.<name>``).
FINDING_OF_FACT = {"dp_release_accepted": "dp_release"}


def release_of(kind: str, contract: Contract) -> str | None:
    """What leaves under a grant of this kind (the rules' ``release`` fact): the platform's fact,
    from the kind and the contract's compute mode, never a requester's word. None: the contract
    offers no analyses."""
    if kind == "copy":
        return "copy"
    return {"dp": "dp_aggregate", "threshold": "threshold_aggregate"}.get(contract.gbadz.compute.mode)


def analysis_terms(contract: Contract, columns: list[str] | tuple[str, ...]) -> dict[str, Any] | None:
    """What an analysis grant may ask, from the contract's compute block and the schema's bounds
    (None when the contract offers no analyses)."""
    compute = contract.gbadz.compute
    if compute.mode == "none":
        return None
    props = {p.name: p for p in contract.table.properties}

    def bounds(name: str) -> dict[str, Any]:
        options = props[name].logicalTypeOptions
        return {
            "name": name,
            "minimum": options.minimum if options else None,
            "maximum": options.maximum if options else None,
        }

    budget = compute.budget
    return {
        "mode": compute.mode,
        "dimensions": [c for c in compute.dimensions if c in columns],
        "measures": [bounds(c) for c in compute.measures if c in columns],
        "privacy_unit": compute.privacy_unit,
        "max_rows_per_person": compute.max_rows_per_person,
        "max_groups_per_person": compute.max_groups_per_person,
        "budget": budget.model_dump() if budget is not None else None,
        "min_group_size": compute.min_group_size,
    }


@dataclass(frozen=True)
class Volume:
    """The individuals a transfer of the dataset's current version carries (counted at publish)."""

    known: bool
    individuals: int = 0
    sensitive_individuals: int = 0  # by a row-level rule (children under 14)
    version: int | None = None


@dataclass(frozen=True)
class Assessment:
    dataset: Dataset
    contract: Contract
    columns: tuple[str, ...]
    decision: Decision
    licence_findings: tuple[str, ...]  # why the licence refuses; empty when it allows
    granted_days: int
    evidence: dict[str, Any]
    reservation: tuple[int, int] = (0, 0)  # (pi, spi) individuals this request would reserve
    counter_year: int | None = None
    scope: Scope | None = None
    who: Parties | None = None


@dataclass(frozen=True)
class Parties:
    exporter: Organization
    recipient: Organization


def _now() -> datetime:
    return datetime.now(UTC)


def now() -> datetime:
    """The service's clock (UTC); grants compare their expiry against it."""
    return _now()


def legal_today() -> date:
    """Today on the law's calendar (Asia/Shanghai): due dates are judged on it."""
    return legal_date(_now(), default_rules())


def visible_grant(session: Session, principal: Principal, grant_id: str) -> Grant:
    grant = repository.grant_for(session, principal, grant_id)
    if grant is None:
        raise GrantNotFound(f"no grant {grant_id!r}")
    return grant


def evidence_of(r: MechanismEvidence) -> Evidence:
    return Evidence(
        kind=r.kind,
        reference=r.reference,
        issued=r.issued,
        valid_to=r.valid_to,
        effective_date=r.effective_date,
        filing_date=r.filing_date,
        purposes=tuple(r.purposes or ()),
        id=r.id,
        variant=r.variant,
        sector=r.sector,
        dataset_ids=tuple(r.dataset_ids or ()),
        spi_categories=tuple(r.spi_categories) if r.spi_categories is not None else None,
        approved_individuals=r.approved_individuals,
        recorded_by=r.recorded_by_subject,
    )


def _evidence_on_file(
    session: Session, exporter: str | None, recipient: str, only: str | None = None
) -> list[Evidence]:
    rows = repository.evidence_between(session, exporter, recipient)
    return [evidence_of(r) for r in rows if only is None or r.id == only]


def scope_of(
    contract: Contract,
    columns: tuple[str, ...] | list[str],
    dataset_id: str,
    volume: Volume,
    decision: Decision,
) -> Scope:
    """What this transfer carries, for the evidence's scope checks (§7.3)."""
    _, _, categories = contract.classify(tuple(columns))
    return Scope(
        dataset_id=dataset_id,
        spi_categories=tuple(categories),
        individuals=volume.individuals if volume.known else None,
        sector=contract.gbadz.sector_overlay,
        gba_sc_variant=decision.facts.get("gba_sc_variant"),
    )


def _evidence_status(
    session: Session,
    decision: Decision,
    exporter_id: str,
    recipient_id: str,
    at: datetime,
    rules: RuleSet,
    scope: Scope | None = None,
    only: str | None = None,
) -> dict[str, Any]:
    """Whether the evidence the decision needs is on file, in scope and valid on the rules' date
    (``only``: the one item a determination relies on)."""
    check = check_evidence(
        decision,
        _evidence_on_file(session, exporter_id, recipient_id, only),
        legal_date(at, rules),
        rules,
        scope,
    )
    return {
        "status": check.status,
        "used": check.used.reference if check.used else None,
        "used_id": check.used.id if check.used else None,
        "used_kind": check.used.kind if check.used else None,
        "problems": list(check.problems),
        "warnings": list(check.warnings),
    }


def parties(session: Session, dataset: Dataset, recipient_org_id: str) -> Parties:
    """The registered exporter and recipient: no registration, no transfer (their facts are unknown)."""
    exporter = repository.organisation(session, dataset.provider_org_id)
    if exporter is None:
        raise ExporterNotRegistered(
            "dataset_id: the dataset's provider organisation is not registered here, so its origin and "
            "counters are unknown; it takes no access requests",
            field="dataset_id",
        )
    recipient = repository.organisation(session, recipient_org_id)
    if recipient is None:
        raise Forbidden("your organisation is not registered here; ask an administrator")
    return Parties(exporter, recipient)


def volume_of(session: Session, dataset: Dataset) -> Volume:
    version = catalog_repository.latest_version(session, dataset)
    if version is None or version.individuals is None:
        return Volume(known=False, version=version.version if version else None)
    return Volume(True, int(version.individuals), int(version.sensitive_individuals or 0), version.version)


def _gba_registered(org: Organization, rules: RuleSet, *, flag: bool = True) -> bool:
    """GBA-registered for the standard contract: registered inside its area (never OTHER) and,
    for a recipient, confirmed by the GBA registration flag."""
    inside = REGION_OF.get(org.jurisdiction) in rules.gba_sc_area
    return inside and (bool(org.gba_registered) or not flag)


@dataclass(frozen=True)
class FactSet:
    known: TransferFacts
    declared: tuple[tuple[str, TransferFacts], ...] = field(default=())
    reservation: tuple[int, int] = (0, 0)


def transfer_facts(
    session: Session,
    *,
    contract: Contract,
    columns: tuple[str, ...] | list[str],
    who: Parties,
    purpose: str,
    onward_transfer: str,
    gba_sc_opt_in: bool,
    processing_location: str | None,
    findings: Findings,
    volume: Volume,
    at: datetime,
    rules: RuleSet,
    counted_after: tuple[int, int] | None = None,
    exclude_grant: str | None = None,
    sector_approved: bool = False,
    release: str = "copy",
) -> FactSet:
    """The engine's facts from what the platform knows, and the variants parties declared.

    ``counted_after`` replaces the estimate of the counters after this transfer by an exact
    figure (a delivery knows which of its individuals were counted before). ``release``: what
    leaves (``release_of``); an aggregate is computed over its columns and the privacy unit,
    so the privacy unit's classification counts too, though it is never granted.
    """
    exporter, recipient = who.exporter, who.recipient
    read = tuple(columns)
    unit = contract.gbadz.compute.privacy_unit
    if release != "copy" and unit is not None and unit not in read:
        read = (*read, unit)
    has_pi, has_spi_columns, _ = contract.classify(read)
    minors_possible = contract.gbadz.minors is not None and (
        not volume.known or volume.sensitive_individuals > 0
    )
    has_spi = has_spi_columns or (has_pi and minors_possible)
    this_pi = volume.individuals if has_pi else 0
    this_spi = this_pi if has_spi_columns else (volume.sensitive_individuals if has_pi else 0)
    reservation = (this_pi, this_spi) if has_pi else (0, 0)
    pi_after = spi_after = 0
    if has_pi:
        if counted_after is not None:
            pi_after, spi_after = counted_after
        else:
            year = counters.counter_year(at, rules)
            held_pi, held_spi = repository.reserved(session, exporter.id, at, exclude_grant)
            pi_after = counters.count(session, exporter.id, year, "mechanism", "pi") + held_pi + this_pi
            spi_after = counters.count(session, exporter.id, year, "mechanism", "spi") + held_spi + this_spi
    provenance = contract.gbadz.provenance
    anonymisation = contract.gbadz.anonymisation
    origin = exporter.jurisdiction

    def hk_new_purpose(place: str) -> bool:  # PDPO DPP3, for data of Hong Kong origin
        return REGION_OF.get(place) == "HK" and has_pi and purpose not in provenance.collection_purposes

    known = TransferFacts(
        origin=origin,
        dest=recipient.jurisdiction,
        category=contract.gbadz.category,
        has_pi=has_pi,
        has_spi=has_spi,
        # The contract's claim; the report counts only once a compliance officer accepted it.
        anonymised=anonymisation is not None,
        anonymisation_report_ref=anonymisation.report_ref if anonymisation and findings.anonymised else None,
        exporter_ciio=bool(exporter.ciio),
        pi_ytd_after=pi_after,
        spi_ytd_after=spi_after,
        recipient_gba_registered=_gba_registered(recipient, rules),
        exporter_gba_registered=_gba_registered(exporter, rules, flag=False),
        onward_outside_gba=onward_transfer == "outside_gba",
        gba_sc_opt_in=gba_sc_opt_in,
        purpose=purpose,
        sector_overlay=contract.gbadz.sector_overlay,
        # Only a sector regulator's approval named by a determination (and still valid) sets it.
        sector_approved=sector_approved,
        hk_new_purpose_without_consent=hk_new_purpose(origin),
        originated_under_gba_sc=provenance.received_under_gba_sc,
        macao_art20_ground=findings.macao_art20_ground,
        foreign_pi_transit_claimed=provenance.foreign_pi_in_transit,
        foreign_pi_transit=findings.foreign_pi_transit,
        necessity_accepted=findings.necessity_accepted,
        volume_known=volume.known or not has_pi,
        release=release,
        dp_release_accepted=findings.dp_release,
    )
    # Declared facts, each decided beside the known ones (the stricter outcome wins).
    origins = {("registered exporter", origin)}
    if contract.gbadz.origin != origin:
        origins.add(("contract origin", contract.gbadz.origin))
    if provenance.collected_in and provenance.collected_in != origin:
        origins.add(("place of collection", provenance.collected_in))
    dests = {("registered recipient", recipient.jurisdiction)}
    if processing_location and processing_location != recipient.jurisdiction:
        dests.add(("processing location", processing_location))
    declared = tuple(
        (
            f"origin={o} ({olabel}), dest={d} ({dlabel})",
            replace(known, origin=o, dest=d, hk_new_purpose_without_consent=hk_new_purpose(o)),
        )
        for olabel, o in sorted(origins)
        for dlabel, d in sorted(dests)
        if (o, d) != (origin, recipient.jurisdiction)
    )
    return FactSet(known, declared, reservation)


def _decide(facts: FactSet, rules: RuleSet) -> Decision:
    try:
        return decide_strictest(facts.known, facts.declared, rules)
    except FactError as exc:
        raise BadRequest(f"{exc.field}: {exc.reason}", field=exc.field) from None


def assess(
    session: Session,
    viewer: Viewer,
    ask: Ask,
    *,
    rules: RuleSet | None = None,
    at: datetime | None = None,
    findings: Findings | None = None,
    sector_approved: bool = False,
) -> Assessment:
    """Decide what moving ``ask`` to the viewer's organisation would take (nothing is written)."""
    at = at or _now()
    rules = rules or default_rules()
    dataset = get_visible(session, viewer, ask.dataset_id)
    if dataset.status not in ("active", "deprecated"):
        raise DatasetNotOpen(
            f"dataset_id: the dataset is {dataset.status}; it takes no access requests", field="dataset_id"
        )
    contract = stored_contract(dataset)
    known = [p.name for p in contract.table.properties]
    unknown = [c for c in ask.columns if c not in known]
    if unknown:
        raise ColumnNotInSchema(
            f"columns: not in the dataset's schema: {', '.join(unknown)}", field="columns"
        )
    release = release_of(ask.kind, contract)
    if release is None:
        raise AnalysisNotOffered(
            "kind: the dataset's contract offers no analyses (gbadz.compute mode none); ask for a copy",
            field="kind",
        )
    columns = tuple(ask.columns) or tuple(known)
    if release != "copy":
        columns = _analysable(contract, tuple(ask.columns))
    if len(set(columns)) != len(columns):
        raise ColumnNotInSchema("columns: a column is named twice", field="columns")
    who = parties(session, dataset, viewer.org_id)
    volume = volume_of(session, dataset)
    facts = transfer_facts(
        session,
        contract=contract,
        columns=columns,
        who=who,
        purpose=ask.purpose,
        onward_transfer=ask.onward_transfer,
        gba_sc_opt_in=ask.gba_sc_opt_in,
        processing_location=ask.processing_location,
        findings=findings or Findings(),
        volume=volume,
        at=at,
        rules=rules,
        sector_approved=sector_approved,
        release=release,
    )
    decision = _decide(facts, rules)
    licence = contract.gbadz.licence
    problems: list[str] = []
    if ask.purpose not in licence.permitted_purposes:
        problems.append(
            f"licence.permitted_purposes: the licence permits {', '.join(licence.permitted_purposes)}; "
            f"not {ask.purpose}"
        )
    if ask.onward_transfer != "none" and not licence.onward_transfer_allowed:
        problems.append("licence.onward_transfer_allowed: the licence forbids onward transfer")
    problems.extend(gba_sc_findings(decision, ask.onward_transfer == "outside_gba", rules))
    granted_days = min(ask.duration_days, licence.max_duration.days)
    scope = scope_of(contract, columns, dataset.id, volume, decision)
    evidence = _evidence_status(session, decision, who.exporter.id, viewer.org_id, at, rules, scope)
    return Assessment(
        dataset,
        contract,
        columns,
        decision,
        tuple(problems),
        granted_days,
        evidence,
        facts.reservation,
        counters.counter_year(at, rules),
        scope,
        who,
    )


def _analysable(contract: Contract, asked: tuple[str, ...]) -> tuple[str, ...]:
    """An analysis grant's columns: the compute block's dimensions and measures (all of them by
    default). The privacy unit is never one: it bounds each person's contribution inside the zone."""
    compute = contract.gbadz.compute
    offered = (*compute.dimensions, *compute.measures)
    for name in asked:
        if name == compute.privacy_unit:
            raise ColumnNotAnalysable(
                f"columns: {name} is the privacy unit; it bounds each person's contribution and is never "
                "granted for analysis",
                field="columns",
            )
        if name not in offered:
            raise ColumnNotAnalysable(
                f"columns: {name} is not a dimension or measure of the contract's compute block "
                f"(analysable: {', '.join(offered)})",
                field="columns",
            )
    return asked or offered


def _snapshot(assessment: Assessment) -> dict[str, Any]:
    return assessment.decision.as_dict() | {"evidence": assessment.evidence}


def _record(session: Session, actor: str, request: AccessRequest, action: str, **details: Any) -> None:
    audit.record(
        session,
        actor=actor,
        action=action,
        subject_type="access_request",
        subject_id=request.id,
        details={"state": request.state, "reason": request.reason, "decision": request.decision, **details},
    )


def _grant(
    session: Session,
    request: AccessRequest,
    at: datetime,
    assessment: Assessment | None,
    rules: RuleSet,
    *,
    final: Decision | None = None,
    record: dict[str, Any] | None = None,
    mechanism: MechanismEvidence | None = None,
    grant_id: str | None = None,
) -> Grant:
    """The grant an approval makes, with the obligations its decision creates."""
    pi, spi = assessment.reservation if assessment else (0, 0)
    counted = str(request.decision.get("counter")) == "mechanism"
    grant = Grant(
        id=grant_id or str(uuid.uuid4()),
        request_id=request.id,
        dataset_id=request.dataset_id,
        grantee_org_id=request.requester_org_id,
        provider_org_id=request.provider_org_id,
        purpose=request.purpose,
        kind=request.kind,
        columns=list(request.columns),
        decision=request.decision,
        granted_at=at,
        expires_at=at + timedelta(days=request.duration_days),
        # Until its first delivery counts them, a grant reserves its individuals against the
        # exporter's counters, so slicing a year's export into small requests cannot stay exempt.
        reserved_pi=pi if counted else 0,
        reserved_spi=spi if counted else 0,
        reserved_year=assessment.counter_year if assessment and counted else None,
        determination=record,
    )
    session.add(grant)
    decision = final or (assessment.decision if assessment else None)
    if decision is not None:
        session.add_all(determining.obligations_for(grant, decision, record, mechanism, at, rules))
    return grant


def create_request(
    session: Session, viewer: Viewer, actor: str, ask: Ask, rules: RuleSet | None = None
) -> AccessRequest:
    at = _now()
    assessment = assess(session, viewer, ask, rules=rules, at=at)
    decision = assessment.decision
    if (
        ask.purpose in ART5_PURPOSES
        and not assessment.licence_findings
        and not (ask.necessity_justification or "").strip()
    ):
        raise JustificationRequired(
            f"necessity_justification: purpose {ask.purpose} claims a Provisions 2024 Art.5 exemption; "
            "write why the export is necessary (a compliance officer reviews it)",
            field="necessity_justification",
        )
    request = AccessRequest(
        id=str(uuid.uuid4()),
        dataset_id=assessment.dataset.id,
        requester_org_id=viewer.org_id,
        provider_org_id=assessment.dataset.provider_org_id,
        requested_by=actor,
        purpose=ask.purpose,
        purpose_text=ask.purpose_text,
        kind=ask.kind,
        columns=list(assessment.columns),
        destination=viewer.jurisdiction,
        processing_location=ask.processing_location,
        necessity_justification=ask.necessity_justification,
        findings={},
        onward_transfer=ask.onward_transfer,
        duration_days=assessment.granted_days,
        state="submitted",
        decision=_snapshot(assessment),
        licence_findings=list(assessment.licence_findings),
        created_at=at,
        updated_at=at,
    )
    session.add(request)
    session.flush()
    _record(session, actor, request, "access_request.submitted", requested_days=ask.duration_days)
    if assessment.licence_findings:
        request.state, request.reason = "rejected", "; ".join(assessment.licence_findings)
    elif decision.outcome == "PROHIBITED":
        request.state, request.reason = "rejected", f"{decision.rule_id}: {decision.legal_basis}"
    elif decision.allowed_without_review:
        request.state, request.reason = (
            "approved",
            f"approved automatically: {decision.rule_id} {decision.outcome}",
        )
        _grant(session, request, at, assessment, rules or default_rules())
    else:
        request.state = "under_provider_review"
    request.updated_at = at
    _record(session, "gbadz", request, f"access_request.{request.state}")
    session.flush()
    return request


def visible_request(session: Session, principal: Principal, request_id: str) -> AccessRequest:
    request = repository.request_for(session, principal, request_id)
    if request is None:
        raise AccessRequestNotFound(f"no access request {request_id!r}")
    return request


def grant_id_of(session: Session, request: AccessRequest) -> str | None:
    """The grant an approved request produced (None before approval)."""
    return repository.grant_id_of(session, request.id)


def _reassess(
    session: Session,
    request: AccessRequest,
    findings: Findings,
    at: datetime,
    rules: RuleSet,
    sector_approved: bool = False,
) -> Assessment:
    """Decide the request again now, as its requester's organisation, with the officer's findings."""
    recipient = repository.organisation(session, request.requester_org_id)
    if recipient is None:  # pragma: no cover - organisations are never deleted
        raise AccessRequestNotFound(f"no access request {request.id!r}")
    viewer = Viewer(org_id=recipient.id, jurisdiction=recipient.jurisdiction)
    ask = Ask(
        dataset_id=request.dataset_id,
        purpose=request.purpose,
        purpose_text=request.purpose_text,
        columns=tuple(request.columns),
        duration_days=request.duration_days,
        processing_location=request.processing_location,
        onward_transfer=request.onward_transfer,
        gba_sc_opt_in=bool(request.decision.get("facts", {}).get("gba_sc_opt_in", True)),
        necessity_justification=request.necessity_justification,
        kind=request.kind,
    )
    return assess(
        session, viewer, ask, rules=rules, at=at, findings=findings, sector_approved=sector_approved
    )


def _step(request: AccessRequest, step: str) -> dict[str, Any] | None:
    return next((r for r in reversed(request.reviews or []) if r.get("step") == step), None)


def _review(
    request: AccessRequest, step: str, principal: Principal, actor: str, at: datetime, note: str | None
) -> None:
    """Append a review step (kept, never overwritten: the record names every reviewer)."""
    request.reviews = [
        *(request.reviews or []),
        {
            "step": step,
            "by": actor,
            "who": principal.subject,
            "org_id": principal.org_id,
            "at": at.isoformat(),
            "note": note,
        },
    ]


def approve(
    session: Session,
    principal: Principal,
    actor: str,
    request_id: str,
    reason: str | None,
    rules: RuleSet | None = None,
    findings: Findings | None = None,
    determination: DeterminationIn | None = None,
    log: TransferLog | None = None,
    columns: list[str] | None = None,
) -> AccessRequest:
    request = _locked(session, principal, request_id)
    rules = rules or default_rules()
    at = _now()
    outcome = request.decision.get("outcome")
    assessment: Assessment | None = None
    if columns is not None and request.state != "under_provider_review":
        raise Forbidden("columns: only the provider's review can narrow the columns", field="columns")
    if request.state == "under_provider_review":
        if principal.org_id != request.provider_org_id:
            raise NotYourReviewStep("only the dataset's provider reviews this request now")
        if findings is not None and findings != Findings():
            raise Forbidden("findings: only a compliance officer records findings", field="findings")
        if determination is not None:
            raise Forbidden(
                "determination: only a compliance officer determines a transfer", field="determination"
            )
        narrowed = _narrowed(session, actor, request, columns)
        request.state = "under_compliance_review"
        _review(request, "provider", principal, actor, at, reason)
        if narrowed:
            request.reviews[-1] = request.reviews[-1] | {"columns": list(request.columns)}
            # The decision is taken again on the narrowed columns (fewer can only relax the facts
            # the law turns on; whatever it now says is what the grant and the next step rely on).
            assessment = _reassess(session, request, Findings(), at, rules)
            request.decision = _snapshot(assessment)
            outcome = request.decision.get("outcome")
        if outcome not in REVIEW_OUTCOMES:
            # Decided again: still allowed without review -> approved; else a compliance officer decides.
            assessment = _reassess(session, request, Findings(), at, rules)
            request.decision = _snapshot(assessment)
            if assessment.decision.allowed_without_review and not assessment.licence_findings:
                request.state = "approved"
                _grant(session, request, at, assessment, rules)
    elif request.state == "under_compliance_review":
        if not repository.sees_everything(principal):
            raise NotYourReviewStep("a compliance officer reviews this request now")
        _determine(session, principal, actor, request, findings, determination, at, rules, log)
    else:
        raise RequestNotUnderReview(
            f"state: the request is {request.state}; only a request under review can be approved",
            field="state",
        )
    request.updated_at = at
    _record(session, actor, request, f"access_request.{request.state}")
    session.flush()
    return request


def _narrowed(session: Session, actor: str, request: AccessRequest, columns: list[str] | None) -> bool:
    """Narrow the request to ``columns`` (a subset of those requested, in their order); audited.
    Naming a column that was not requested would widen the grant: refused, naming ``columns``."""
    if columns is None:
        return False
    asked = list(request.columns)
    extra = sorted(set(columns) - set(asked))
    if extra:
        raise ColumnsNotNarrower(
            f"columns: approval can only narrow the request; not requested: {', '.join(extra)[:500]}",
            field="columns",
        )
    kept = [c for c in asked if c in set(columns)]
    if kept == asked:
        return False
    request.columns = kept
    audit.record(
        session,
        actor=actor,
        action="access_request.columns_narrowed",
        subject_type="access_request",
        subject_id=request.id,
        details={"dataset": request.dataset_id, "requested": asked, "approved": kept},
    )
    return True


def _evidence_item(
    session: Session,
    request: AccessRequest,
    evidence_id: str,
    name: str,
    kinds: tuple[str, ...],
    approvers: set[str],
) -> MechanismEvidence:
    """The evidence item a determination names: on file for these parties, of a needed kind,
    not recorded by either reviewer (four eyes)."""
    item = session.get(MechanismEvidence, evidence_id)
    if (
        item is None
        or item.exporter_org_id != request.provider_org_id
        or item.recipient_org_id != request.requester_org_id
    ):
        raise DeterminationIncomplete(
            f"determination.{name}: no evidence item {evidence_id!r} is on file for this exporter and recipient",
            field=f"determination.{name}",
        )
    if item.withdrawn_at is not None:
        raise MechanismWithdrawn(
            f"determination.{name}: {item.kind} {item.reference} was withdrawn or amended",
            field=f"determination.{name}",
        )
    if item.kind not in kinds:
        raise DeterminationIncomplete(
            f"determination.{name}: the decision needs {' or '.join(kinds)}, not {item.kind}",
            field=f"determination.{name}",
        )
    if item.recorded_by_subject in approvers:
        raise FourEyes(
            f"determination.{name}: {item.kind} {item.reference} was recorded by a reviewer of this request; "
            "whoever records evidence cannot approve with it",
            field=f"determination.{name}",
        )
    if item.document_sha256 is None:
        raise DeterminationIncomplete(
            f"determination.{name}: {item.kind} {item.reference} has no document on file; upload the filed "
            f"document first (PUT /api/v1/mechanisms/{item.id}/document)",
            field=f"determination.{name}",
        )
    return item


def _valid(
    item: MechanismEvidence, name: str, purpose: str, scope: Scope | None, at: datetime, rules: RuleSet
) -> dict[str, Any]:
    check = check_mechanisms((item.kind,), purpose, [evidence_of(item)], legal_date(at, rules), rules, scope)
    if check.status != "satisfied":
        raise MechanismNotOnFile(
            f"determination.{name}: "
            + "; ".join(check.problems or (f"{item.kind} {item.reference} is not valid",)),
            field=f"determination.{name}",
        )
    return {
        "status": "satisfied",
        "used": item.reference,
        "used_id": item.id,
        "used_kind": item.kind,
        "problems": [],
        "warnings": list(check.warnings),
    }


def _determine(
    session: Session,
    principal: Principal,
    actor: str,
    request: AccessRequest,
    findings: Findings | None,
    given: DeterminationIn | None,
    at: datetime,
    rules: RuleSet,
    log: TransferLog | None,
) -> None:
    """The compliance step: decide again with the officer's findings and determination, check
    that everything the final decision needs is named and valid, then grant and log the record.
    Any refusal raises before anything is written."""
    given = determining.require_basics(given)
    provider_step = _step(request, "provider")
    if provider_step is not None and provider_step.get("who") == principal.subject:
        raise FourEyes(
            "determination: you took the provider step of this request; another person determines it",
            field="determination",
        )
    if principal.org_id in (request.provider_org_id, request.requester_org_id):
        raise FourEyes(
            "determination: a compliance officer of the exporter or the recipient cannot determine its "
            "own organisation's transfer; an independent officer does",
            field="determination",
        )
    approvers = {principal.subject} | ({str(provider_step.get("who"))} if provider_step else set())
    dataset = session.get(Dataset, request.dataset_id)
    contract_sha256 = dataset.contract_sha256 if dataset else None
    recorded = Findings.of(request.findings, contract_sha256)
    merged = recorded.merged_with(findings or Findings())
    assessment = _decided_again(session, request, merged, at, rules)
    sector: MechanismEvidence | None = None
    sector_status: dict[str, Any] | None = None
    reviewed_rule = rules.rule(assessment.decision.rule_id)
    if reviewed_rule is not None and reviewed_rule.adds_to_general == "sector_approved":
        # A sector overlay adds the sector regulator's approval to the general regime's decision.
        if not given.sector_evidence_id:
            raise DeterminationIncomplete(
                f"determination.sector_evidence_id: the {assessment.contract.gbadz.sector_overlay} sector rule applies "
                "in addition to the general regime: name the sector regulator's approval on file",
                field="determination.sector_evidence_id",
            )
        sector = _evidence_item(
            session, request, given.sector_evidence_id, "sector_evidence_id", ("SECTOR",), approvers
        )
        sector_status = _valid(sector, "sector_evidence_id", request.purpose, assessment.scope, at, rules)
        assessment = _decided_again(session, request, merged, at, rules, sector_approved=True)
    try:
        final = determined_as(assessment.decision, given.basis_rule_id, rules)
    except NotDeterminable as exc:
        raise DeterminationIncomplete(
            f"determination.{exc.field}: {exc.reason}", field=f"determination.{exc.field}"
        ) from None
    if final.outcome == "PROHIBITED":  # pragma: no cover - _decided_again refused it
        raise TransferProhibited("decision: a prohibited transfer can never be approved", field="decision")
    mechanism: MechanismEvidence | None = None
    evidence: dict[str, Any] = {
        "status": "not_required",
        "used": None,
        "used_id": None,
        "used_kind": None,
        "problems": [],
        "warnings": [],
    }
    if final.evidence_required:
        if not given.evidence_id:
            raise DeterminationIncomplete(
                f"determination.evidence_id: {final.rule_id} {final.outcome} needs a "
                f"{' or '.join(final.evidence_required)} on file: name the item",
                field="determination.evidence_id",
            )
        mechanism = _evidence_item(
            session, request, given.evidence_id, "evidence_id", final.evidence_required, approvers
        )
        evidence = _valid(mechanism, "evidence_id", request.purpose, assessment.scope, at, rules)
    elif given.evidence_id:
        raise DeterminationIncomplete(
            f"determination.evidence_id: {final.rule_id} {final.outcome} needs no mechanism; name none",
            field="determination.evidence_id",
        )
    determining.require_pipia_and_consent(given, final, legal_date(at, rules))
    # Every check passed: record, grant, log.
    request.findings = merged.as_dict() | {
        "contract_sha256": contract_sha256,
        "by": actor,
        "at": at.isoformat(),
    }
    _review(request, "compliance", principal, actor, at, given.note)
    basis = determining.final_basis(final, sector)
    reviewed = {k: request.decision.get(k) for k in ("outcome", "rule_id", "legal_basis")}
    request.decision = final.as_dict() | {"legal_basis": basis, "evidence": evidence, "reviewed": reviewed}
    request.state = "approved"
    request.reason = None
    who = assessment.who
    grant_id = str(uuid.uuid4())
    record = determining.record(
        request=request,
        grant_id=grant_id,
        expires_at=at + timedelta(days=request.duration_days),
        final=final,
        basis=basis,
        reviewed=reviewed,
        given=given,
        mechanism=mechanism,
        sector=sector,
        sector_status=sector_status,
        findings=merged.as_dict(),
        exporter=who.exporter if who else None,
        recipient=who.recipient if who else None,
        contract_sha256=contract_sha256,
        at=at,
        rules=rules,
    )
    grant = _grant(
        session,
        request,
        at,
        assessment,
        rules,
        final=final,
        record=record,
        mechanism=mechanism,
        grant_id=grant_id,
    )
    if log is not None:
        appended = log.append(session, record, kind="determination", grant_id=grant.id)
        grant.determination_log_index = appended.index
    grant.decision = request.decision | {
        "determination": {
            "id": record["determination_id"],
            "log_index": grant.determination_log_index,
            "basis_rule_id": given.basis_rule_id,
            "evidence_id": mechanism.id if mechanism else None,
            "sector_evidence_id": sector.id if sector else None,
        }
    }


def _decided_again(
    session: Session,
    request: AccessRequest,
    findings: Findings,
    at: datetime,
    rules: RuleSet,
    *,
    sector_approved: bool = False,
) -> Assessment:
    """Approval decides again (invariant 7): live counters, evidence, contract, the officer's findings.

    A prohibition refuses; a rule still waiting for a finding the officer has not recorded
    refuses, naming it; nothing is written on refusal.
    """
    assessment = _reassess(session, request, findings, at, rules, sector_approved=sector_approved)
    decision = assessment.decision
    if assessment.licence_findings:
        raise LicenceProhibits("licence: " + "; ".join(assessment.licence_findings), field="licence")
    if decision.outcome == "PROHIBITED":
        raise TransferProhibited(
            f"decision: {decision.rule_id} {decision.legal_basis}: a prohibited transfer can never be approved",
            field="decision",
        )
    if decision.awaits:
        name = FINDING_OF_FACT.get(decision.awaits, decision.awaits)
        raise MechanismNotOnFile(
            f"findings.{name}: rule {decision.rule_id} waits for a compliance officer's finding "
            f"({decision.legal_basis})",
            field=f"findings.{name}",
        )
    return assessment


def reject(session: Session, principal: Principal, actor: str, request_id: str, reason: str) -> AccessRequest:
    request = _locked(session, principal, request_id)
    if request.state == "under_provider_review":
        if principal.org_id != request.provider_org_id:
            raise NotYourReviewStep("only the dataset's provider reviews this request now")
    elif request.state == "under_compliance_review":
        if not repository.sees_everything(principal):
            raise NotYourReviewStep("a compliance officer reviews this request now")
    else:
        raise RequestNotUnderReview(
            f"state: the request is {request.state}; only a request under review can be rejected",
            field="state",
        )
    request.state, request.reason, request.updated_at = "rejected", reason, _now()
    _record(session, actor, request, "access_request.rejected")
    return request


GrantFilters = repository.GrantFilters

#: States a requester can still withdraw from: nothing is decided yet (no grant, no transfer).
WITHDRAWABLE = ("submitted", "under_provider_review", "under_compliance_review")


def withdraw_request(
    session: Session, principal: Principal, actor: str, request_id: str, reason: str | None
) -> AccessRequest:
    """The requester's organisation takes back a request not yet decided (reviewers cannot act on it after).

    Another organisation, even one that can read the request, gets the missing answer: only the
    requester withdraws. The reason stays on the request; the audit records only that one was given.
    """
    request = _locked(session, principal, request_id)
    if principal.org_id != request.requester_org_id:
        raise AccessRequestNotFound(f"no access request {request_id!r}")
    if request.state not in WITHDRAWABLE:
        raise RequestNotUnderReview(
            f"state: the request is {request.state}; only a request not yet decided can be withdrawn",
            field="state",
        )
    before = request.state
    text = (reason or "").strip()
    request.state, request.updated_at = "withdrawn", _now()
    request.reason = text or None
    audit.record(
        session,
        actor=actor,
        action="access_request.withdrawn",
        subject_type="access_request",
        subject_id=request.id,
        details={"state": "withdrawn", "from_state": before, "reason_given": bool(text)},
    )
    return request


def request_history(session: Session, request: AccessRequest) -> list[dict[str, Any]]:
    """Each state the request entered, when, and which party moved it (from its audit events).

    The party, never the person: a reviewer's name is not the requester's to read.
    """
    history: list[dict[str, Any]] = []
    previous = "submitted"
    for event in repository.request_events(session, request.id):
        state = event.action.removeprefix("access_request.")
        if state == "submitted" or event.action == "access_request.withdrawn":
            by = "requester"
        elif event.actor == "gbadz":
            by = "platform"
        elif previous == "under_provider_review":
            by = "provider"
        else:
            by = "compliance_officer"
        history.append({"at": event.occurred_at, "state": state, "by": by})
        previous = state
    return history


#: The party each review step is taken by: what another party reads instead of a person.
STEP_PARTY = {"provider": "provider", "compliance": "compliance_officer"}


def reviews_as_seen_by(principal: Principal, reviews: list[dict[str, Any]] | None) -> list[dict[str, Any]]:
    """Review steps as the caller may read them (invariant 9): compliance officers, and the
    organisation that took a step, see who took it; any other party reads the party's role
    (provider, compliance_officer) in place of the person's username or client id."""
    if repository.sees_everything(principal):
        return [dict(step) for step in reviews or []]
    seen = []
    for step in reviews or []:
        if step.get("org_id") == principal.org_id:
            seen.append(dict(step))
            continue
        party = STEP_PARTY.get(str(step.get("step")), "reviewer")
        seen.append(step | {key: party for key in ("by", "who") if key in step})
    return seen


def findings_as_seen_by(principal: Principal, findings: dict[str, Any] | None) -> dict[str, Any]:
    """An officer's findings as the caller may read them: who recorded them only for officers."""
    found = dict(findings or {})
    if "by" in found and not repository.sees_everything(principal):
        found["by"] = "compliance_officer"
    return found


def actor_as_seen_by(principal: Principal, actor: str) -> str:
    """An audit actor (``role:client@org``) as the caller may read it: in full for compliance
    officers and the actor's own organisation; for anyone else only the role."""
    if repository.sees_everything(principal) or actor.endswith(f"@{principal.org_id}"):
        return actor
    return actor.split(":", 1)[0]


def determination_as_seen_by(principal: Principal, record: dict[str, Any] | None) -> dict[str, Any] | None:
    """A grant's determination record with its approvers as the caller may read them."""
    if record is None or "approvers" not in record:
        return record
    return record | {"approvers": reviews_as_seen_by(principal, record.get("approvers"))}


def _locked(session: Session, principal: Principal, request_id: str) -> AccessRequest:
    request = repository.request_for(session, principal, request_id, lock=True)
    if request is None:
        raise AccessRequestNotFound(f"no access request {request_id!r}")
    return request


def list_requests(
    session: Session, principal: Principal, state: str | None, limit: int
) -> list[AccessRequest]:
    return repository.requests_for(session, principal, state, limit)


def list_grants(
    session: Session,
    principal: Principal,
    limit: int,
    suspended: bool = False,
    filters: repository.GrantFilters | None = None,
) -> list[Grant]:
    return repository.grants_for(session, principal, limit, suspended=suspended, filters=filters, now=_now())


def current_versions(
    session: Session, principal: Principal, viewer: Viewer, grants: list[Grant]
) -> dict[str, int | None]:
    """The published version a delivery of each grant would send, by grant id: only for an active
    grant on a dataset the caller may see (an ended grant, or a hidden dataset, tells nothing of
    the dataset's versions; compliance officers see every dataset). Missing or None: none."""
    at = _now()
    active = [g for g in grants if g.status(at) == "active"]
    visible = None if repository.sees_everything(principal) else visibility_clause(viewer)
    found = repository.current_versions(session, {g.dataset_id for g in active}, visible)
    return {g.id: found.get(g.dataset_id) for g in active}


def open_precondition_kinds(session: Session, grants: list[Grant]) -> dict[str, list[str]]:
    """What must be met before any data leaves under each grant (PIPIA, notice and consent), by
    grant id: the same open preconditions a delivery refuses on (``open_preconditions``)."""
    return repository.open_precondition_kinds(session, {g.id for g in grants})


def organisations_named(session: Session, org_ids: set[str]) -> dict[str, Organization]:
    """The organisations a page of requests or grants names, for their names and jurisdictions."""
    return repository.organisations(session, org_ids)


@dataclass(frozen=True)
class RetirementPreview:
    """What deprecating or retiring a dataset touches, counted before the provider confirms."""

    dataset_id: str
    status: str
    live_grants: int
    open_requests: int
    delivered_copies: int
    grantees: list[str]


def retirement_preview(
    session: Session, viewer: Viewer, dataset_id: str, count_copies: Callable[[str], int]
) -> RetirementPreview:
    """The live grants, waiting requests and delivered copies of the provider's own dataset.
    Anyone else gets 404: to them the consequences of another's retirement are not theirs to see."""
    try:
        dataset = get_owned(session, viewer, dataset_id)
    except NotTheProvider:
        raise DatasetNotFound(f"no dataset {dataset_id!r}") from None
    grants = repository.running_grants_of(session, dataset.id, _now())
    names = repository.organisations(session, {g.grantee_org_id for g in grants})
    return RetirementPreview(
        dataset_id=dataset.id,
        status=dataset.status,
        live_grants=len(grants),
        open_requests=repository.open_requests_of(session, dataset.id),
        delivered_copies=count_copies(dataset.id),
        grantees=sorted({names[g].name if g in names else g for g in (x.grantee_org_id for x in grants)}),
    )


def revoke_grant(session: Session, principal: Principal, actor: str, grant_id: str, reason: str) -> Grant:
    grant = repository.grant_for(session, principal, grant_id, lock=True)
    if grant is None:
        raise GrantNotFound(f"no grant {grant_id!r}")
    if grant.revoked_at is not None:
        raise GrantAlreadyRevoked("state: the grant is already revoked", field="state")
    grant.revoked_at, grant.revoked_reason = _now(), reason
    # The recipient's deletion is due from the revocation, not from the grant's planned end.
    due = legal_today() + timedelta(days=default_rules().validity["deletion_attestation_days"])
    for duty in repository.obligations_of(session, grant.id, "recipient_deletion"):
        if duty.state == "open":
            duty.due_on = min(duty.due_on or due, due)
    audit.record(
        session,
        actor=actor,
        action="grant.revoked",
        subject_type="grant",
        subject_id=grant.id,
        details={"reason": reason, "request": grant.request_id, "decision": grant.decision},
    )
    return grant


def _evidence_fields(session: Session, fields: dict[str, Any]) -> dict[str, Any]:
    """Check a v2 evidence item's fields together; fill what the parties determine (422 naming the field)."""
    exporter = repository.organisation(session, fields["exporter_org_id"])
    recipient = repository.organisation(session, fields["recipient_org_id"])
    for name, org in (("exporter_org_id", exporter), ("recipient_org_id", recipient)):
        if org is None:
            raise BadRequest(f"{name}: no organisation {fields[name]!r}", field=name)
    assert exporter is not None
    assert recipient is not None
    kind = fields["kind"]
    variants = VARIANTS_OF_KIND[kind]
    if kind == "GBA_SC":
        # Which GBA contract is fixed by the parties' regions: the non-Mainland party's (HK or MO).
        regions = {REGION_OF.get(exporter.jurisdiction), REGION_OF.get(recipient.jurisdiction)}
        side = "HK" if "HK" in regions else "MO" if "MO" in regions else None
        if side is None or "CN_GBA9" not in regions:
            raise MechanismIncomplete(
                "kind: a GBA standard contract is between a party in a GBA city and one in Hong Kong or Macao",
                field="kind",
            )
        variants = (f"GBA_SC_{side}",)
    variant = fields.get("variant") or (variants[0] if len(variants) == 1 else None)
    if variant not in variants:
        raise MechanismIncomplete(f"variant: a {kind} here is {' or '.join(variants)}", field="variant")
    fields["variant"] = variant
    authorities = AUTHORITIES_OF_VARIANT[variant]
    authority = fields.get("authority")
    if authority is None and kind in ("GBA_SC", "SCC"):
        authority = (
            "GD_CAC" if REGION_OF.get(exporter.jurisdiction) in ("CN_GBA9", "CN_OTHER") else authorities[-1]
        )
    authority = authority or authorities[0]
    if authority not in authorities:
        raise MechanismIncomplete(
            f"authority: a {variant} is issued by or filed with {' or '.join(authorities)}", field="authority"
        )
    fields["authority"] = authority
    required = {
        "GBA_SC": ("effective_date", "filing_date"),
        "SCC": ("effective_date", "filing_date"),
        "ASSESSMENT": ("issued",),
        "CERT": ("issued", "authority_name"),
        "SECTOR": ("issued", "sector", "authority_name"),
        "AUTHORISATION": ("issued",),
    }[kind]
    for name in required:
        if not fields.get(name) or fields.get(name) == "none":
            raise MechanismIncomplete(f"{name}: a {variant} needs its {name.replace('_', ' ')}", field=name)
    for name in ("issued", "effective_date", "filing_date"):
        value = fields.get(name)
        if value is not None and value > datetime.now(UTC).date() + timedelta(days=1):
            raise MechanismIncomplete(f"{name}: a date on file cannot be in the future", field=name)
    if fields.get("valid_to") and fields.get("issued") and fields["valid_to"] < fields["issued"]:
        raise MechanismIncomplete("valid_to: before the issue date", field="valid_to")
    if kind != "SECTOR" and fields.get("sector") not in (None, "none"):
        raise MechanismIncomplete("sector: only a SECTOR approval names a sector", field="sector")
    if fields.get("sector") == "none":
        fields["sector"] = None
    return fields


def version_of(session: Session, item: MechanismEvidence) -> int:
    """1 for an item first recorded, 2 for its first amendment, ... along the ``supersedes`` chain."""
    version, seen = 1, {item.id}
    while item.supersedes is not None:
        older = session.get(MechanismEvidence, item.supersedes)
        if older is None or older.id in seen:  # pragma: no cover - the chain is written only by amend
            break
        seen.add(older.id)
        version, item = version + 1, older
    return version


def record_evidence(
    session: Session, principal: Principal, actor: str, supersedes: str | None = None, **fields: Any
) -> MechanismEvidence:
    """Record a mechanism on file (registry v2): kind, variant, authority, dates and scope."""
    if not repository.is_party(principal, fields["exporter_org_id"]):
        raise Forbidden("only the exporter or a compliance officer records its mechanisms")
    if repository.evidence_exists(session, fields["kind"], fields["reference"]):
        raise DuplicateMechanism(
            f"reference: {fields['kind']} {fields['reference']} is already on file; amend or withdraw it",
            field="reference",
        )
    fields = _evidence_fields(session, dict(fields))
    row = MechanismEvidence(
        id=str(uuid.uuid4()),
        recorded_by=actor,
        recorded_by_subject=principal.subject,
        supersedes=supersedes,
        **fields,
    )
    session.add(row)
    session.flush()
    audit.record(
        session,
        actor=actor,
        # An amendment is its own action: the new version, naming the one it supersedes.
        action="mechanism.amended" if supersedes else "mechanism.recorded",
        subject_type="mechanism_evidence",
        subject_id=row.id,
        details={k: (v.isoformat() if isinstance(v, date) else v) for k, v in fields.items()}
        | {"supersedes": supersedes, "version": version_of(session, row)},
    )
    return row


def _evidence_for_change(session: Session, principal: Principal, evidence_id: str) -> MechanismEvidence:
    item = session.get(MechanismEvidence, evidence_id, with_for_update=True)
    if item is None or not repository.is_party(principal, item.exporter_org_id, item.recipient_org_id):
        raise MechanismNotFound(f"no mechanism {evidence_id!r}")
    if not repository.is_party(principal, item.exporter_org_id):
        raise Forbidden("only the exporter or a compliance officer changes its mechanisms")
    if item.withdrawn_at is not None:
        raise MechanismWithdrawn(
            f"state: {item.kind} {item.reference} was already withdrawn or amended", field="state"
        )
    return item


def withdraw_evidence(
    session: Session, principal: Principal, actor: str, evidence_id: str, reason: str
) -> MechanismEvidence:
    """Withdraw an item (kept, never used again; grants relying on it stop at their next transfer)."""
    item = _evidence_for_change(session, principal, evidence_id)
    item.withdrawn_at, item.withdrawn_by, item.withdrawn_reason = _now(), actor, reason
    audit.record(
        session,
        actor=actor,
        action="mechanism.withdrawn",
        subject_type="mechanism_evidence",
        subject_id=item.id,
        details={"reason": reason, "kind": item.kind, "reference": item.reference},
    )
    return item


def amend_evidence(
    session: Session, principal: Principal, actor: str, evidence_id: str, **fields: Any
) -> MechanismEvidence:
    """Replace an item by a corrected one (a new version naming the one it supersedes)."""
    old = _evidence_for_change(session, principal, evidence_id)
    if (fields["exporter_org_id"], fields["recipient_org_id"]) != (old.exporter_org_id, old.recipient_org_id):
        raise BadRequest(
            "exporter_org_id: an amendment keeps the parties; record a new item instead",
            field="exporter_org_id",
        )
    old.withdrawn_at, old.withdrawn_by = _now(), actor
    session.flush()
    new = record_evidence(session, principal, actor, supersedes=old.id, **fields)
    old.withdrawn_reason = f"amended: superseded by {new.id}"
    # The old item's own history says it ended, and by which version (its id, not only the new one's).
    audit.record(
        session,
        actor=actor,
        action="mechanism.superseded",
        subject_type="mechanism_evidence",
        subject_id=old.id,
        details={"superseded_by": new.id, "kind": old.kind, "version": version_of(session, old)},
    )
    return new


def attach_document(
    session: Session,
    principal: Principal,
    actor: str,
    evidence_id: str,
    data: bytes,
    content_type: str,
    store: ObjectStore,
    bucket: str,
) -> MechanismEvidence:
    """Keep the filed document itself in the object-locked bucket, with its SHA-256 on the item."""
    item = _evidence_for_change(session, principal, evidence_id)
    if item.document_sha256 is not None:
        raise DuplicateMechanism(
            "document: this item already holds its document; amend the item to file a new one",
            field="document",
        )
    digest = hashlib.sha256(data).hexdigest()
    stored = store.put_bytes(bucket, f"evidence/{item.id}/{digest}", data, content_type)
    item.document_key, item.document_sha256 = stored.key, stored.sha256
    item.document_size, item.document_type = stored.size, content_type
    audit.record(
        session,
        actor=actor,
        action="mechanism.document_attached",
        subject_type="mechanism_evidence",
        subject_id=item.id,
        details={"sha256": digest, "size": stored.size, "content_type": content_type},
    )
    return item


def evidence_document(
    session: Session, principal: Principal, evidence_id: str, store: ObjectStore, bucket: str
) -> tuple[MechanismEvidence, bytes]:
    item = session.get(MechanismEvidence, evidence_id)
    if item is None or not repository.is_party(principal, item.exporter_org_id, item.recipient_org_id):
        raise MechanismNotFound(f"no mechanism {evidence_id!r}")
    if item.document_key is None:
        raise MechanismNotFound(f"mechanism {evidence_id!r} holds no document")
    data = store.get_bytes(bucket, item.document_key)
    if hashlib.sha256(data).hexdigest() != item.document_sha256:
        raise IntegrityCheckFailed("document: the stored document does not match its recorded SHA-256")
    return item, data


def list_evidence(session: Session, principal: Principal, exporter: str | None) -> list[MechanismEvidence]:
    return repository.evidence_for(session, principal, exporter)


@dataclass(frozen=True)
class Redecision:
    """The decision taken again when data leaves under a grant (architecture.md invariant 7)."""

    decision: Decision
    evidence: dict[str, Any]
    suspend_because: str | None  # set when the grant must stop: stricter now, or evidence lapsed

    def summary(self) -> dict[str, Any]:
        return {
            "outcome": self.decision.outcome,
            "rule_id": self.decision.rule_id,
            "legal_basis": self.decision.legal_basis,
            "rules_version": self.decision.rules_version,
            "pi_ytd_after": self.decision.facts.get("pi_ytd_after"),
            "spi_ytd_after": self.decision.facts.get("spi_ytd_after"),
            "evidence": self.evidence,
        }


class SuspendGrant(Exception):
    """Raised inside a transfer's transaction: the caller suspends the grant in a transaction of its own."""

    def __init__(self, grant_id: str, reason: str, redecision: Redecision) -> None:
        super().__init__(reason)
        self.grant_id, self.reason, self.redecision = grant_id, reason, redecision


def redecide(
    session: Session,
    grant: Grant,
    dataset: Dataset,
    version_no: int,
    at: datetime,
    rules: RuleSet | None = None,
) -> Redecision:
    """Decide a grant's transfer again with the current contract, the version being sent, live
    counters (exact: its individuals de-duplicated against those counted before, plus other
    grants' reservations) and evidence validity on the rules' (Asia/Shanghai) date.

    Raises :class:`SuspendGrant` when the outcome is stricter than the grant's, or when the
    mechanism it relies on is no longer valid; the grant is then suspended with that reason.
    """
    rules = rules or default_rules()
    request = session.get(AccessRequest, grant.request_id)
    if request is None:  # pragma: no cover - a grant always has its request
        raise GrantNotFound(f"no grant {grant.id!r}")
    version = catalog_repository.version(session, dataset.id, version_no)
    contract = stored_contract(dataset)
    who = parties(session, dataset, grant.grantee_org_id)
    known = version is not None and version.individuals is not None
    volume = (
        Volume(True, int(version.individuals or 0), int(version.sensitive_individuals or 0), version_no)
        if version is not None and known
        else Volume(False, version=version_no)
    )
    has_pi, has_spi_columns, _ = contract.classify(tuple(grant.columns))
    # What leaves, from the grant's kind and the contract as it is now.
    release = release_of(grant.kind, contract)
    determined = (grant.decision or {}).get("determination") or {}
    reviewers = {str(r.get("who")) for r in request.reviews or [] if r.get("who")}
    determined = determined | {
        "evidence_id": current_item(session, determined.get("evidence_id"), reviewers),
        "sector_evidence_id": current_item(session, determined.get("sector_evidence_id"), reviewers),
    }
    sector_approved = _sector_still_valid(
        session, grant, determined, request.purpose, contract, volume, at, rules
    )
    facts_with = partial(
        transfer_facts,
        session,
        contract=contract,
        columns=tuple(grant.columns),
        who=who,
        purpose=request.purpose,
        onward_transfer=request.onward_transfer,
        gba_sc_opt_in=bool(grant.decision.get("facts", {}).get("gba_sc_opt_in", True)),
        processing_location=request.processing_location,
        findings=Findings.of(request.findings, dataset.contract_sha256),
        volume=volume,
        at=at,
        rules=rules,
        exclude_grant=grant.id,
        sector_approved=sector_approved,
        release=release or "dp_aggregate",
    )
    before = str(grant.decision.get("outcome"))
    year = counters.counter_year(at, rules)
    counted_after = None
    if has_pi and known:
        # A version delivered before this year has its people in the live count already.
        exporter_id = who.exporter.id
        pi_done = counters.version_counted(session, exporter_id, year, "mechanism", dataset.id, version_no)
        spi_done = counters.version_counted(
            session, exporter_id, year, "mechanism:spi", dataset.id, version_no
        ) or (pi_done and not has_spi_columns)
        held_pi, held_spi = repository.reserved(session, exporter_id, at, grant.id)
        new_spi = volume.individuals if has_spi_columns else volume.sensitive_individuals
        counted_after = (
            counters.count(session, exporter_id, year, "mechanism", "pi")
            + held_pi
            + (0 if pi_done else volume.individuals),
            counters.count(session, exporter_id, year, "mechanism", "spi")
            + held_spi
            + (0 if spi_done else new_spi),
        )
    # First the cheap estimate (people not known to be counted taken as new: an upper bound) ...
    basis_rule_id = determined.get("basis_rule_id")
    decision = _as_determined(_decide(facts_with(counted_after=counted_after), rules), basis_rule_id, rules)
    if has_pi and known and STRICTNESS[decision.outcome] > STRICTNESS.get(before, 99):
        # ... and only when it would stop the grant, the exact figure: the version's people
        # de-duplicated against everyone counted this year (one anti-join in the database).
        pi, spi = counters.would_be_version(
            session,
            exporter_id=who.exporter.id,
            dataset_id=dataset.id,
            version=version_no,
            all_sensitive=has_spi_columns,
            at=at,
            rules=rules,
        )
        held_pi, held_spi = repository.reserved(session, who.exporter.id, at, grant.id)
        decision = _as_determined(
            _decide(facts_with(counted_after=(pi + held_pi, spi + held_spi)), rules), basis_rule_id, rules
        )
    scope = scope_of(contract, grant.columns, dataset.id, volume, decision)
    evidence = _evidence_status(
        session,
        decision,
        who.exporter.id,
        grant.grantee_org_id,
        at,
        rules,
        scope,
        determined.get("evidence_id"),
    )
    reason = None
    licence = contract.gbadz.licence
    if release is None:
        reason = "the dataset's contract no longer offers analyses (gbadz.compute mode none)"
    elif request.purpose not in licence.permitted_purposes:
        reason = f"the licence no longer permits the purpose {request.purpose}"
    elif request.onward_transfer != "none" and not licence.onward_transfer_allowed:
        reason = "the licence no longer allows onward transfer"
    elif decision.outcome == "HUMAN_REVIEW":
        # Invariant 8: nothing leaves on a review outcome; only a determination resolves one
        # (a grant approved before determinations existed, or whose sector approval lapsed).
        reason = (
            f"decided again at transfer: {decision.rule_id} HUMAN_REVIEW ({decision.legal_basis}) is not "
            "resolved by a determination on this grant; ask for access again so a compliance officer determines it"
        )
    elif STRICTNESS[decision.outcome] > STRICTNESS.get(before, len(STRICTNESS)):
        reason = (
            f"decided again at transfer: {decision.rule_id} {decision.outcome} ({decision.legal_basis}) "
            f"is stricter than the grant's {grant.decision.get('rule_id')} {before}"
        )
    elif decision.evidence_required and evidence["status"] != "satisfied":
        reason = "decided again at transfer: the mechanism is no longer valid: " + "; ".join(
            evidence["problems"] or (f"no valid {' or '.join(decision.evidence_required)} on file",)
        )
    found = Redecision(decision, evidence, reason)
    if reason is not None:
        raise SuspendGrant(grant.id, reason, found)
    return found


def current_item(session: Session, evidence_id: str | None, reviewers: set[str]) -> str | None:
    """The item a determination relies on, through its amendments: a corrected filing carries the
    grant on, unless a reviewer of the determination recorded the correction (four eyes)."""
    seen: set[str] = set()
    while evidence_id is not None and evidence_id not in seen:
        seen.add(evidence_id)
        item = session.get(MechanismEvidence, evidence_id)
        if item is None or item.withdrawn_at is None:
            return evidence_id
        successor = repository.successor_of(session, evidence_id)
        if successor is None or successor.recorded_by_subject in reviewers:
            return evidence_id  # withdrawn for good: the check finds nothing valid
        evidence_id = successor.id
    return evidence_id


def _as_determined(decision: Decision, basis_rule_id: str | None, rules: RuleSet) -> Decision:
    """A review the grant's determination resolved stays resolved while its basis still holds."""
    if decision.outcome != "HUMAN_REVIEW" or not basis_rule_id:
        return decision
    try:
        return determined_as(decision, basis_rule_id, rules)
    except NotDeterminable:
        return decision  # the facts changed: the review is open again (the grant is suspended)


def _sector_still_valid(
    session: Session,
    grant: Grant,
    determined: dict[str, Any],
    purpose: str,
    contract: Contract,
    volume: Volume,
    at: datetime,
    rules: RuleSet,
) -> bool:
    """The sector regulator's approval the determination named is still on file, in scope and valid."""
    item_id = determined.get("sector_evidence_id")
    if not item_id:
        return False
    item = session.get(MechanismEvidence, item_id)
    if item is None or item.withdrawn_at is not None:
        return False
    _, _, categories = contract.classify(tuple(grant.columns))
    scope = Scope(
        dataset_id=grant.dataset_id,
        spi_categories=tuple(categories),
        individuals=volume.individuals if volume.known else None,
        sector=contract.gbadz.sector_overlay,
    )
    check = check_mechanisms(("SECTOR",), purpose, [evidence_of(item)], legal_date(at, rules), rules, scope)
    return check.status == "satisfied"


def suspend_grant(session: Session, grant_id: str, reason: str, redecision: Redecision) -> None:
    """Suspend a grant with its reason (the grantee gets 410; officers see it as a review item)."""
    grant = session.get(Grant, grant_id, with_for_update=True)
    if grant is None or grant.suspended_at is not None or grant.revoked_at is not None:
        return
    grant.suspended_at, grant.suspended_reason = _now(), reason
    audit.record(
        session,
        actor="gbadz",
        action="grant.suspended",
        subject_type="grant",
        subject_id=grant.id,
        details={
            "reason": reason,
            "redecision": redecision.summary(),
            "before": grant.decision.get("outcome"),
        },
    )


def release_reservation(grant: Grant) -> None:
    """The first delivery counted the grant's individuals: its reservation ends."""
    grant.reserved_pi = grant.reserved_spi = 0


def suspend_for_reclassification(session: Session, dataset_id: str, actor: str) -> int:
    """The dataset's contract was reclassified: suspend its live grants until a compliance
    officer decides each again (``decide_grant_again``). Returns how many were suspended."""
    at = _now()
    affected = repository.live_grants_of(session, dataset_id, at)
    for grant in affected:
        grant.suspended_at = at
        grant.suspended_reason = "the dataset's contract was reclassified: suspended until a compliance officer decides the grant again"
        audit.record(
            session,
            actor=actor,
            action="grant.suspended",
            subject_type="grant",
            subject_id=grant.id,
            details={"reason": grant.suspended_reason, "dataset": dataset_id},
        )
    return len(affected)


def decide_grant_again(
    session: Session,
    principal: Principal,
    actor: str,
    grant_id: str,
    rules: RuleSet | None = None,
    findings: Findings | None = None,
) -> Grant:
    """A compliance officer decides a suspended grant again: if the transfer is no stricter than
    the grant and its mechanism holds, the grant resumes; otherwise it stays suspended, with the
    new reason. Either way the decision is audited."""
    grant = repository.grant_for(session, principal, grant_id, lock=True)
    if grant is None:
        raise GrantNotFound(f"no grant {grant_id!r}")
    if not repository.sees_everything(principal):
        raise NotYourReviewStep("a compliance officer decides a grant again")
    if grant.revoked_at is not None:
        raise GrantAlreadyRevoked("state: the grant is revoked", field="state")
    dataset = session.get(Dataset, grant.dataset_id)
    if dataset is None or dataset.current_version is None or dataset.status == "retired":
        raise GrantInactive("dataset: nothing of the dataset can be transferred now", field="dataset")
    at = _now()
    if findings is not None and findings != Findings():
        # Findings made now, on the current contract (a reclassification voided the earlier ones).
        request = session.get(AccessRequest, grant.request_id)
        if request is not None:
            request.findings = findings.as_dict() | {
                "contract_sha256": dataset.contract_sha256,
                "by": actor,
                "at": at.isoformat(),
            }
    try:
        found = redecide(session, grant, dataset, dataset.current_version, at, rules)
    except SuspendGrant as stop:
        grant.suspended_at, grant.suspended_reason = grant.suspended_at or at, stop.reason
        outcome, summary = "grant.kept_suspended", stop.redecision.summary()
    else:
        grant.suspended_at = grant.suspended_reason = None
        outcome, summary = "grant.resumed", found.summary()
    audit.record(
        session, actor=actor, action=outcome, subject_type="grant", subject_id=grant.id, details=summary
    )
    return grant


# -- obligations -------------------------------------------------------------------------------
def list_obligations(
    session: Session,
    principal: Principal,
    state: str | None,
    overdue: bool,
    limit: int,
    grant_id: str | None = None,
) -> list[Obligation]:
    """The obligations the caller owes or oversees (an officer sees all); ``overdue``: open and past
    due; ``grant_id``: only those one grant created."""
    today = legal_date(_now(), default_rules())
    return repository.obligations_for(session, principal, state, today if overdue else None, limit, grant_id)


def open_preconditions(session: Session, grant_id: str) -> list[Obligation]:
    return repository.open_preconditions(session, grant_id)


def meet_obligation(
    session: Session,
    principal: Principal,
    actor: str,
    obligation_id: str,
    reference: str,
    on: date | None = None,
) -> Obligation:
    """The owner (or a compliance officer) records how a duty was met, naming the record (and,
    for a PIPIA, the date it was completed: before the transfer, never in the future)."""
    duty = repository.obligation_for(session, principal, obligation_id, lock=True)
    if duty is None:
        raise ObligationNotFound(f"no obligation {obligation_id!r}")
    if not repository.is_party(principal, duty.owner_org_id):
        raise Forbidden("only the organisation that owes it (or a compliance officer) records it as met")
    if duty.state == "met":
        raise ObligationAlreadyMet("state: the obligation is already met", field="state")
    if duty.kind == "recipient_deletion":
        raise BadRequest(
            "kind: the recipient's deletion is attested on the grant (POST /grants/{id}/deletion-attestation)",
            field="kind",
        )
    if duty.kind == "pipia":
        if on is None:
            raise ObligationIncomplete("date: the date the PIPIA was completed", field="date")
        if on > legal_today():
            raise ObligationIncomplete(
                "date: a PIPIA is done before the transfer, not in the future", field="date"
            )
    duty.state, duty.reference, duty.met_by, duty.met_at = "met", reference, actor, _now()
    duty.evidence_date = on
    audit.record(
        session,
        actor=actor,
        action="obligation.met",
        subject_type="obligation",
        subject_id=duty.id,
        details={
            "kind": duty.kind,
            "grant": duty.grant_id,
            "reference": reference,
            "date": on.isoformat() if on else None,
        },
    )
    return duty


def attest_deletion(
    session: Session, principal: Principal, actor: str, grant_id: str, statement: str
) -> Grant:
    """The grantee attests it deleted every copy after the grant ended (a state of the grant)."""
    grant = repository.grant_for(session, principal, grant_id, lock=True)
    if grant is None:
        raise GrantNotFound(f"no grant {grant_id!r}")
    if principal.org_id != grant.grantee_org_id:
        raise Forbidden("only the grantee attests the deletion of its copies")
    if grant.status(_now()) not in ("revoked", "expired"):
        raise GrantStillRunning(
            "state: the grant is still running; attest deletion after it ends", field="state"
        )
    if grant.deletion_attested_at is not None:
        raise DeletionAlreadyAttested("state: the deletion was already attested", field="state")
    at = _now()
    grant.deletion_attested_at, grant.deletion_attested_by, grant.deletion_statement = at, actor, statement
    for duty in repository.obligations_of(session, grant.id, "recipient_deletion"):
        duty.state, duty.reference, duty.met_by, duty.met_at = "met", "attested on the grant", actor, at
    audit.record(
        session,
        actor=actor,
        action="grant.deletion_attested",
        subject_type="grant",
        subject_id=grant.id,
        details={"statement": statement},
    )
    return grant


# -- grant end -------------------------------------------------------------------------------------
def delete_copies(session: Session, grant: Grant, remove: Callable[[str], int]) -> int:
    """Delete every delivery object of an ended grant (``remove`` deletes a prefix); record it."""
    removed = remove(grant_copies_prefix(grant))
    grant.copies_deleted_at = _now()
    audit.record(
        session,
        actor="gbadz",
        action="grant.copies_deleted",
        subject_type="grant",
        subject_id=grant.id,
        details={"objects": removed},
    )
    return removed


def destroy_delivery_key(session: Session, keys: KeyProvider, grant: Grant, actor: str) -> bool:
    """The grant ended: destroy the key its delivery copies are sealed with (ADR 0018); record it."""
    destroyed = keys.destroy_data_key(grant_delivery_context(grant.dataset_id, grant.id))
    if destroyed:
        audit.record(
            session,
            actor=actor,
            action="grant.delivery_key_destroyed",
            subject_type="grant",
            subject_id=grant.id,
            details={"dataset": grant.dataset_id},
        )
    return destroyed


def grant_copies_prefix(grant: Grant) -> str:
    """Where a grant's delivered copies live in the delivery bucket (delivery.service writes them)."""
    return f"{delivery_prefix(grant.dataset_id)}grants/{grant.id}/"


def ended_grants_with_copies(session: Session, limit: int = 100) -> list[Grant]:
    return repository.ended_grants_with_copies(session, _now(), limit)
