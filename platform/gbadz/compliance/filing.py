"""The filing package of a standard contract: the annex a filing officer attaches.

For a GBA standard contract (filed with the Guangdong CAC, the HK DPO or the Macao DSPDP) or a
national standard contract (filed with the provincial CAC), the platform already holds what the
annex asks for (crossborder-rules.md §2.1, §5): the parties, the purposes, the categories of
personal and sensitive information, the number of individuals, the storage location and
period at the recipient, onward recipients and the PIPIA. This module gathers them, for every
transfer determined under one filed contract, as JSON and as a bilingual PDF (``filing_pdf``).
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from sqlalchemy.orm import Session

from gbadz.access import repository as access_repository
from gbadz.access.models import AccessRequest, Grant, MechanismEvidence
from gbadz.catalog import repository as catalog_repository
from gbadz.catalog.models import Dataset
from gbadz.catalog.service import stored_contract
from gbadz.errors import Conflict, MechanismNotFound
from gbadz.identity.models import Organization
from gbadz.identity.tokens import Principal
from gbadz.law.evidence import add_working_days
from gbadz.law.rules import RuleSet
from gbadz.vocabulary import JURISDICTION_NAMES

FORMAT = "gbadz-filing-package/1"
#: The instruments whose filing takes an annex (an assessment or certification is applied for, not filed).
FILED_KINDS = ("GBA_SC", "SCC")


class NothingToFile(Conflict):
    """The mechanism is not a standard contract, so it has no filing annex."""


def _party(org: Organization | None) -> dict[str, Any]:
    if org is None:
        return {
            "name": "—",
            "registration_no": None,
            "jurisdiction": "—",
            "jurisdiction_name": "—",
            "contact": None,
        }
    return {
        "name": org.name,
        "registration_no": org.registration_no,
        "jurisdiction": org.jurisdiction,
        "jurisdiction_name": JURISDICTION_NAMES.get(org.jurisdiction, org.jurisdiction),  # type: ignore[call-overload]
        "contact": None,
    }


def _transfer(session: Session, grant: Grant) -> dict[str, Any]:
    request = session.get(AccessRequest, grant.request_id)
    dataset = session.get(Dataset, grant.dataset_id)
    version = catalog_repository.latest_version(session, dataset) if dataset else None
    contract = stored_contract(dataset) if dataset else None
    columns = list(grant.columns)
    pi_columns: list[str] = []
    spi: list[str] = []
    if contract is not None:
        pi_columns = [c for c in columns if contract.classification(c).pi]
        spi = sorted(contract.classify(tuple(columns))[2])
    determined = grant.determination or {}
    individuals = (
        int(version.individuals) if version is not None and version.individuals is not None else None
    )
    sensitive = None
    if version is not None and individuals is not None and contract is not None:
        all_sensitive = any(contract.classification(c).spi for c in columns)
        sensitive = individuals if all_sensitive else int(version.sensitive_individuals or 0)
    onward = request.onward_transfer if request else "none"
    return {
        "dataset_id": grant.dataset_id,
        "dataset_title": dataset.name if dataset else grant.dataset_id,
        "purpose_code": grant.purpose,
        "purpose_text": request.purpose_text if request else "",
        "columns": columns,
        "pi_categories": pi_columns,
        "spi_categories": spi,
        "n_individuals": individuals,
        "n_spi_individuals": sensitive,
        "storage_location": determined.get("storage_location_at_recipient") or "—",
        "retention": determined.get("retention_at_recipient")
        or f"until {grant.expires_at.date().isoformat()}",
        "onward_recipients": [] if onward == "none" else [f"declared: {onward}"],
        "onward_transfer": onward,
        "grant_id": grant.id,
        "granted_at": grant.granted_at.isoformat(),
        "expires_at": grant.expires_at.isoformat(),
    }


def package(session: Session, principal: Principal, evidence_id: str, rules: RuleSet) -> dict[str, Any]:
    """The filing annex of one filed contract: every grant a determination based on it."""
    item = session.get(MechanismEvidence, evidence_id)
    if item is None or not access_repository.is_party(principal, item.exporter_org_id, item.recipient_org_id):
        raise MechanismNotFound(f"no mechanism {evidence_id!r}")
    if item.kind not in FILED_KINDS:
        raise NothingToFile(
            f"kind: a {item.kind} is applied for, not filed; only {', '.join(FILED_KINDS)} have a filing annex",
            field="kind",
        )
    grants = [
        g
        for g in access_repository.grants_between(session, item.exporter_org_id, item.recipient_org_id)
        if ((g.decision or {}).get("determination") or {}).get("evidence_id") == item.id
    ]
    latest = max(grants, key=lambda g: g.granted_at, default=None)
    determined = (latest.determination or {}) if latest else {}
    pipia = determined.get("pipia") or {}
    due = (
        add_working_days(item.effective_date, rules.validity["filing_working_days"]).isoformat()
        if item.effective_date
        else None
    )
    return {
        "format": FORMAT,
        "generated_at": datetime.now(UTC).astimezone(rules.zone).isoformat(timespec="seconds"),
        "mechanism": {
            "kind": item.kind,
            "variant": item.variant or item.kind,
            "reference": item.reference,
            "authority": item.authority,
            "effective_date": item.effective_date.isoformat() if item.effective_date else None,
            "filing_date": item.filing_date.isoformat() if item.filing_date else None,
            "filing_due": due,
        },
        "exporter": _party(session.get(Organization, item.exporter_org_id)),
        "recipient": _party(session.get(Organization, item.recipient_org_id)),
        "transfers": [_transfer(session, g) for g in sorted(grants, key=lambda g: g.granted_at)],
        "pipia": {
            "reference": pipia.get("reference"),
            "date": pipia.get("date"),
            "retain_until": pipia.get("retain_until"),
            "summary": next(
                (
                    a.get("note")
                    for a in reversed(determined.get("approvers") or [])
                    if a.get("step") == "compliance"
                ),
                None,
            ),
        },
        "determination": {
            "outcome": determined.get("decision_outcome") or "—",
            "rule_id": determined.get("rule_id") or "—",
            "legal_basis": determined.get("legal_basis") or "—",
            "approvers": [
                {k: a.get(k) for k in ("step", "by", "at", "note")} for a in determined.get("approvers") or []
            ],
        },
    }
