"""The compliance officer's determination: what an approval must name, and the duties it creates.

An approval at the compliance step is a determination (architecture.md invariant 8, ADR 0016):
the final outcome and legal basis (never the engine's HUMAN_REVIEW routing note), the
mechanism with the evidence item it relies on, the sector regulator's approval where a sector
overlay applies, the PIPIA (reference and date, before the transfer) and the notice and
consent reference (or why none is needed), and every reviewer with time and note. Four eyes:
the provider and compliance steps are different people, and nobody approves with an evidence
item they recorded.

This module holds the parts that need no database: the input, its completeness check, the
record written to the transfer log and the obligations a decision creates.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import date, datetime, timedelta
from typing import Any

from gbadz.access.models import AccessRequest, Grant, MechanismEvidence, Obligation
from gbadz.errors import DeterminationIncomplete
from gbadz.identity.models import Organization
from gbadz.law.engine import Decision
from gbadz.law.evidence import add_working_days, legal_date
from gbadz.law.rules import RuleSet
from gbadz.vocabulary import gba_sc_filing_authority

MAINLAND = ("CN_GBA9", "CN_OTHER")


@dataclass(frozen=True)
class DeterminationIn:
    """What the compliance officer states when approving (the API body's ``determination``)."""

    note: str | None = None
    basis_rule_id: str | None = None
    evidence_id: str | None = None
    sector_evidence_id: str | None = None
    pipia_reference: str | None = None
    pipia_date: date | None = None
    consent_reference: str | None = None
    consent_not_required_reason: str | None = None


def _missing(name: str, why: str) -> DeterminationIncomplete:
    return DeterminationIncomplete(f"determination.{name}: {why}", field=f"determination.{name}")


def require_basics(given: DeterminationIn | None) -> DeterminationIn:
    """The fields every determination names, whatever the decision (422 naming the first missing)."""
    if given is None:
        raise DeterminationIncomplete(
            "determination: a compliance approval is a determination: name the legal basis, the "
            "mechanism evidence, the PIPIA, notice and consent, and your note",
            field="determination",
        )
    if not (given.note or "").strip():
        raise _missing("note", "write why the transfer is lawful (your reasoning is part of the record)")
    return given


def dp_release_accepted(decision: Decision) -> bool:
    """A differentially private release a compliance officer accepted as anonymised (MA3/HA3/OA3):
    what leaves is not personal information."""
    f = decision.facts
    return f.get("release") == "dp_aggregate" and bool(f.get("dp_release_accepted"))


def needs_pipia(decision: Decision) -> bool:
    """PIPL Arts.55-56: providing personal information abroad needs a PIPIA first (Mainland data,
    under any fact set the decision considered), and so does every GBA standard contract. An
    accepted DP release, like an evaluated anonymisation, provides no personal information."""
    f = decision.facts
    origins = {f.get("origin")} | {c.get("origin") for c in decision.considered}
    return (
        (bool(origins & set(MAINLAND)) or decision.outcome == "GBA_SC")  # GBA SC: a PIPIA on both sides
        and bool(f.get("has_pi"))
        and not f.get("anonymised")
        and not dp_release_accepted(decision)
        and decision.outcome != "NOT_EXPORT"
    )


def require_pipia_and_consent(given: DeterminationIn, decision: Decision, today: date) -> None:
    """PIPIA before the transfer, and the Art.39 notice with separate consent (or the reason none is needed)."""
    if not needs_pipia(decision):
        return
    if not (given.pipia_reference or "").strip():
        raise _missing(
            "pipia_reference", "personal information leaves the Mainland: name the PIPIA report (PIPL Art.55)"
        )
    if given.pipia_date is None:
        raise _missing("pipia_date", "the date the PIPIA was completed")
    if given.pipia_date > today:
        raise _missing(
            "pipia_date", "the PIPIA must be done before the transfer, not in the future (PIPL Art.55)"
        )
    consent = (given.consent_reference or "").strip()
    reason = (given.consent_not_required_reason or "").strip()
    if bool(consent) == bool(reason):
        raise _missing(
            "consent_reference",
            "name the Art.39 notice and separate-consent record, or (instead) consent_not_required_reason",
        )


def evidence_record(item: MechanismEvidence) -> dict[str, Any]:
    """The §8 mechanism fields of an evidence item, as logged."""

    def iso(value: date | None) -> str | None:
        return value.isoformat() if value else None

    return {
        "evidence_id": item.id,
        "kind": item.kind,
        "variant": item.variant,
        "reference": item.reference,
        "authority": item.authority,
        "authority_name": item.authority_name,
        "issued": iso(item.issued),
        "valid_to": iso(item.valid_to),
        "effective_date": iso(item.effective_date),
        "filing_date": iso(item.filing_date),
        "document_sha256": item.document_sha256,
    }


def final_basis(decision: Decision, sector: MechanismEvidence | None) -> str:
    """The legal basis the transfer leaves under: the general regime's, plus the sector approval."""
    if sector is None:
        return decision.legal_basis
    return (
        f"{decision.legal_basis}; sector rule {sector.sector} (in addition to the general regime): "
        f"approval {sector.reference}" + (f" ({sector.authority_name})" if sector.authority_name else "")
    )


def retain_until(at: datetime, grant_expires: datetime, rules: RuleSet) -> date:
    """PIPL Art.56: keep the PIPIA at least N years after the last transfer it covers (the grant's end)."""
    end = legal_date(grant_expires, rules)
    years = rules.validity["pipia_retention_years"]
    try:
        return end.replace(year=end.year + years)
    except ValueError:  # 29 February
        return end.replace(year=end.year + years, day=28)


def obligations_for(
    grant: Grant,
    decision: Decision,
    determination: dict[str, Any] | None,
    mechanism: MechanismEvidence | None,
    at: datetime,
    rules: RuleSet,
) -> list[Obligation]:
    """The duties a decision creates, each with its owner, due date and state.

    PIPIA and notice/consent are preconditions (delivery waits for them); a determination
    meets them with the references it names. The filing of a standard contract, the Macao
    DSPDP notification and the recipient's deletion at the grant's end are owed after.
    """
    today = legal_date(at, rules)
    f = decision.facts
    made: list[Obligation] = []

    def owe(
        kind: str,
        text: str,
        role: str,
        due: date | None,
        *,
        pre: bool,
        met: str | None = None,
        dated: date | None = None,
    ) -> None:
        org = grant.provider_org_id if role == "exporter" else grant.grantee_org_id
        made.append(
            Obligation(
                id=str(uuid.uuid4()),
                grant_id=grant.id,
                kind=kind,
                description=text,
                owner_org_id=org,
                owner_role=role,
                due_on=due,
                precondition=pre,
                state="met" if met else "open",
                reference=met,
                evidence_date=dated,
                met_by="determination" if met else None,
                met_at=at if met else None,
                created_at=at,
            )
        )

    pipia = (determination or {}).get("pipia") or {}
    consent = (determination or {}).get("consent") or {}
    if needs_pipia(decision):
        owe(
            "pipia",
            "PIPIA before the transfer, kept at least 3 years (PIPL Arts.55-56)",
            "exporter",
            today,
            pre=True,
            met=pipia.get("reference"),
            dated=date.fromisoformat(pipia["date"]) if pipia.get("date") else None,
        )
        owe(
            "notice_consent",
            "Art.39 notice to the individuals and separate consent, or a recorded reason none is needed",
            "exporter",
            today,
            pre=True,
            met=consent.get("reference") or consent.get("not_required_reason"),
        )
    if (
        decision.outcome in ("GBA_SC", "SCC_OR_CERT")
        and mechanism is not None
        and mechanism.kind in ("GBA_SC", "SCC")
    ):
        due = (
            add_working_days(mechanism.effective_date, rules.validity["filing_working_days"])
            if mechanism.effective_date
            else today
        )
        days = rules.validity["filing_working_days"]
        # A GBA standard contract is filed by both parties, each with its own authority; the
        # item on file records one filing (its authority), the other party's stays owed.
        sides = (
            [
                ("exporter", _filing_authority(f.get("origin"))),
                ("recipient", _filing_authority(f.get("dest"))),
            ]
            if mechanism.kind == "GBA_SC"
            else [("exporter", mechanism.authority or "GD_CAC")]
        )
        for role, authority in sides:
            filed = mechanism.filing_date is not None and mechanism.authority in (authority, None)
            owe(
                "contract_filing",
                f"File the {mechanism.variant or mechanism.kind} with {authority} within {days} "
                "working days of it taking effect",
                role,
                due,
                pre=False,
                met=mechanism.reference if filed else None,
            )
    if f.get("origin") == "MO" and f.get("has_pi") and decision.outcome != "NOT_EXPORT":
        owe(
            "dspdp_notification",
            f"Notify the DSPDP of the transfer within {rules.validity['macao_notification_days']} days "
            "(PDPA Art.21)",
            "exporter",
            today + timedelta(days=rules.validity["macao_notification_days"]),
            pre=False,
        )
    # An analysis grant hands out no copies (its aggregates are not personal information).
    if f.get("has_pi") and decision.outcome != "NOT_EXPORT" and f.get("release", "copy") == "copy":
        owe(
            "recipient_deletion",
            "Delete every copy when the grant ends, and attest it here",
            "recipient",
            legal_date(grant.expires_at, rules) + timedelta(days=rules.validity["deletion_attestation_days"]),
            pre=False,
        )
    return made


def _filing_authority(region: Any) -> str:
    """Who a party of a GBA standard contract files with: the Guangdong CAC, the HK DPO or the DSPDP."""
    return gba_sc_filing_authority(region)


def party_record(org: Organization | None) -> dict[str, Any]:
    """A party as the log names it (§8 parties: the PIPL Art.39 notice fields)."""
    if org is None:
        return {}
    return {
        "org_id": org.id,
        "name": org.name,
        "registration_no": org.registration_no,
        "jurisdiction": org.jurisdiction,
        "gba_registered": org.gba_registered,
        "ciio": org.ciio,
    }


def record(
    *,
    request: AccessRequest,
    grant_id: str,
    expires_at: datetime,
    final: Decision,
    basis: str,
    reviewed: dict[str, Any],
    given: DeterminationIn,
    mechanism: MechanismEvidence | None,
    sector: MechanismEvidence | None,
    sector_status: dict[str, Any] | None,
    findings: dict[str, Any],
    exporter: Organization | None,
    recipient: Organization | None,
    contract_sha256: str | None,
    at: datetime,
    rules: RuleSet,
) -> dict[str, Any]:
    """The determination as written to the transfer log (entry_version 2, kind ``determination``)."""
    pipia = (
        {
            "reference": given.pipia_reference,
            "date": given.pipia_date.isoformat() if given.pipia_date else None,
            "retain_until": retain_until(at, expires_at, rules).isoformat(),
        }
        if given.pipia_reference
        else None
    )
    consent: dict[str, Any] | None = None
    if given.consent_reference:
        consent = {"reference": given.consent_reference}
    elif given.consent_not_required_reason:
        consent = {"not_required_reason": given.consent_not_required_reason}
    return {
        "entry_version": 2,
        "type": "determination",
        "determination_id": str(uuid.uuid4()),
        "access_request_id": request.id,
        "grant_id": grant_id,
        "ts_utc": at.isoformat(),
        "dataset_id": request.dataset_id,
        "contract_sha256": contract_sha256,
        "exporter": party_record(exporter),
        "recipient": party_record(recipient),
        "origin": exporter.jurisdiction if exporter else None,
        "destination": recipient.jurisdiction if recipient else None,
        "reviewed": reviewed,
        "decision_outcome": final.outcome,
        "rule_id": final.rule_id,
        "basis_rule_id": given.basis_rule_id,
        "legal_basis": basis,
        "rules_version": final.rules_version,
        "rules_hash": final.rules_hash,
        "engine_version": final.engine_version,
        "mechanism": (mechanism.variant or mechanism.kind) if mechanism else final.outcome,
        "mechanism_evidence": evidence_record(mechanism) if mechanism else None,
        "sector_approval": evidence_record(sector) | {"status": sector_status} if sector else None,
        "pipia": pipia,
        "consent": consent,
        "findings": findings,
        "approvers": [
            {k: step.get(k) for k in ("step", "by", "org_id", "at", "note")} for step in request.reviews or []
        ],
        "purpose_code": request.purpose,
        "purpose_text": request.purpose_text,
        "columns": list(request.columns),
        "onward_transfer": request.onward_transfer,
        "storage_location_at_recipient": request.processing_location
        or (recipient.jurisdiction if recipient else None),
        "retention_at_recipient": f"until {expires_at.date().isoformat()} (the grant's end), then deleted and attested",
        "access_expiry": expires_at.isoformat(),
        "obligations": list(final.obligations),
    }
