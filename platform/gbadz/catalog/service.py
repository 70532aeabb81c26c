"""Catalog rules: who may see a dataset, and how providers register, change and retire one.

Visibility (ADR 0010) is one SQL statement, :func:`visibility_clause`, used by the listing
engines and by single reads (:func:`get_visible`, :func:`get_owned`); the in-process index
(``index.py``) is a cache of it:

- the provider organisation always sees its own datasets, in every status;
- everyone else sees only ``active`` and ``deprecated`` datasets whose classification a
  compliance officer signed off (the listing review, ADR 0015), never drafts;
- a dataset of category ``important`` or ``core`` is seen only by organisations under the
  same legal regime as its origin (the Mainland, Hong Kong, Macao) or whose jurisdiction
  the contract lists in ``gbadz.visible_to``; to anyone else it does not exist.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Callable, Iterable
from datetime import UTC, datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.ext.compiler import compiles
from sqlalchemy.orm import Session
from sqlalchemy.sql.compiler import SQLCompiler
from sqlalchemy.sql.functions import FunctionElement

from gbadz import audit, db
from gbadz.catalog.models import CatalogGeneration, Dataset, DatasetVersion
from gbadz.contract import Contract, ContractError, parse_contract
from gbadz.crypto.keys import KeyProvider
from gbadz.errors import (
    BadRequest,
    Conflict,
    DatasetNotFound,
    Forbidden,
    NotTheProvider,
    PreconditionFailed,
)
from gbadz.identity.models import Organization
from gbadz.identity.service import Viewer
from gbadz.vocabulary import REGIME_OF, RESTRICTED_CATEGORIES

LISTED_STATUSES = ("active", "deprecated")


def _spaced(values: Iterable[str]) -> str:
    """``" a b "``: one value per space-delimited slot, so searching for ``" a "`` matches exactly."""
    return " " + " ".join(sorted(set(values))) + " "


class Position(FunctionElement[int]):
    """Where ``needle`` starts in ``text`` (1-based; 0 if absent), case-sensitive on every backend.

    ``LIKE`` ignores case on SQLite, so ``visible_to`` holding ``hk`` would match ``HK`` there
    and not on PostgreSQL or in the in-process index: visibility compares codes exactly.
    """

    type = sa.Integer()
    inherit_cache = True


@compiles(Position, "sqlite")
def _position_sqlite(element: Position, compiler: SQLCompiler, **kw: Any) -> str:
    return f"instr({compiler.process(element.clauses, **kw)})"


@compiles(Position, "postgresql")
def _position_postgresql(element: Position, compiler: SQLCompiler, **kw: Any) -> str:
    return f"strpos({compiler.process(element.clauses, **kw)})"


def visibility_clause(viewer: Viewer) -> sa.ColumnElement[bool]:
    owner = Dataset.provider_org_id == viewer.org_id
    # Listed: open status, and its classification signed off by a compliance officer.
    listed = sa.and_(Dataset.status.in_(LISTED_STATUSES), Dataset.classification_state == "approved")
    open_category = Dataset.category.not_in(RESTRICTED_CATEGORIES)
    allowed = sa.or_(
        open_category,
        Dataset.regime == viewer.regime if viewer.regime != "elsewhere" else sa.false(),
        Position(Dataset.visible_to, f" {viewer.jurisdiction} ") > 0,
    )
    return sa.or_(owner, sa.and_(listed, allowed))


def get_visible(session: Session, viewer: Viewer, dataset_id: str) -> Dataset:
    """The dataset if the viewer may see it; :class:`DatasetNotFound` otherwise (hidden looks like missing)."""
    dataset = session.scalar(sa.select(Dataset).where(Dataset.id == dataset_id, visibility_clause(viewer)))
    if dataset is None:
        raise DatasetNotFound(f"no dataset {dataset_id!r}")
    return dataset


def get_owned(session: Session, viewer: Viewer, dataset_id: str, *, lock: bool = False) -> Dataset:
    """The dataset if the viewer's organisation provides it (404 if hidden, 403 if only visible)."""
    query = sa.select(Dataset).where(Dataset.id == dataset_id, visibility_clause(viewer))
    if lock:
        query = query.with_for_update()
    dataset = session.scalar(query)
    if dataset is None:
        raise DatasetNotFound(f"no dataset {dataset_id!r}")
    if dataset.provider_org_id != viewer.org_id:
        raise NotTheProvider(f"only the dataset's provider ({dataset.provider_name}) may do this")
    return dataset


def contract_document(contract: Contract) -> dict[str, Any]:
    doc: dict[str, Any] = json.loads(contract.model_dump_json(by_alias=True))
    return doc


def stored_contract(dataset: Dataset) -> Contract:
    return Contract.model_validate(dataset.contract)


WORD = re.compile(r"[^\W_]+", re.UNICODE)  # a word: letters and digits (``_`` separates)


def words(text: str) -> str:
    """Lower-case letter/digit runs, space-separated (``berth_occupancy`` -> ``berth occupancy``)."""
    return " ".join(WORD.findall(text.lower()))


def _shorten(text: str, limit: int = 280) -> str:
    return text if len(text) <= limit else text[: limit - 3] + "..."


def listing_fields(contract: Contract, contract_sha256: str) -> dict[str, Any]:
    """Every column of ``datasets`` that is derived from the contract."""
    table = contract.table
    description = contract.description
    columns = []
    for prop in table.properties:
        columns.append(prop.name)
        if prop.description:
            columns.append(prop.description)
    described = [table.description or ""]
    if description is not None:
        described += [description.purpose or "", description.usage or "", description.limitations or ""]
    tags = [*contract.tags, *(t for p in table.properties for t in p.tags)]
    return {
        "name": contract.name,
        "provider_name": contract.gbadz.provider.organization,
        "origin": contract.gbadz.origin,
        "category": contract.gbadz.category,
        "has_pi": contract.has_pi,
        "has_spi": contract.has_spi,
        "status": contract.status,
        "contract": contract_document(contract),
        "contract_sha256": contract_sha256,
        "regime": REGIME_OF.get(contract.gbadz.origin, "elsewhere"),
        "visible_to": _spaced(contract.gbadz.visible_to),
        "purposes": _spaced(contract.gbadz.licence.permitted_purposes),
        "summary": _shorten((description.purpose if description else None) or table.description or ""),
        "tags": list(contract.tags),
        # Normalised to space-separated word tokens: what every search engine here matches.
        "search_name": words(f"{contract.name} {contract.id}"),
        "search_tags": words(" ".join(tags)),
        "search_columns": words(" ".join(columns)),
        "search_description": words(" ".join(d for d in described if d)),
    }


CHANGED = "catalog_changed"  # session.info flag: the read index is invalidated when the session commits
COMMITTED_CHANGE = "catalog_change_committing"  # set when CHANGED was counted in the generation


@sa.event.listens_for(Session, "before_commit")
def _count_change(session: Session) -> None:
    """A transaction that changed the catalog bumps ``catalog_generation`` as it commits: every
    replica's read index sees the change by this number, in any process (the API, the CLI, an
    Airflow worker) and whatever the writer's clock (ADR 0027). The row lock is held only from
    here to the commit."""
    if session.info.pop(CHANGED, False):
        session.execute(
            sa.update(CatalogGeneration)
            .where(CatalogGeneration.id == 1)
            .values(value=CatalogGeneration.value + 1)
        )
        db.notify(session, db.CATALOG_CHANNEL)  # other replicas rebuild at once, not at their next poll
        session.info[COMMITTED_CHANGE] = True


def apply_contract(session: Session, contract: Contract, contract_sha256: str) -> Dataset:
    """Insert or refresh a dataset's row from its contract (the ingest pipeline's path).

    The provider organisation is the registered organisation whose name the contract gives.
    """
    fields = listing_fields(contract, contract_sha256)
    dataset = session.get(Dataset, contract.id)
    if dataset is None:
        dataset = Dataset(id=contract.id, classification_state="pending", **fields)
        session.add(dataset)
    else:
        if contract.classification_fingerprint() != stored_contract(dataset).classification_fingerprint():
            # This path cannot reach the dataset's grants: reclassify through the API (PUT), which
            # reopens the listing review and suspends them.
            raise Conflict(
                f"gbadz: the contract reclassifies {contract.id!r} (columns, classification, provenance, "
                "visibility or licence); change it with PUT /api/v1/datasets/{id}",
                field="gbadz",
            )
        for key, value in fields.items():
            setattr(dataset, key, value)
    session.info[CHANGED] = True
    if dataset.provider_org_id is None:
        dataset.provider_org_id = session.scalar(
            sa.select(Organization.id).where(Organization.name == contract.gbadz.provider.organization)
        )
    org = session.get(Organization, dataset.provider_org_id) if dataset.provider_org_id else None
    if org is not None:
        _check_origin(contract, org)
    return dataset


def _reopen_if_reclassified(
    session: Session, dataset: Dataset, before: Contract, contract: Contract, actor: str
) -> bool:
    """A contract change that alters what a listing review signs off (``before`` -> ``contract``)
    sends the dataset back to review, out of other organisations' sight, whatever its review
    state; the caller then suspends its live grants. Returns whether it did."""
    if contract.classification_fingerprint() == before.classification_fingerprint():
        return False
    dataset.classification_state = "pending"
    session.info[CHANGED] = True
    audit.record(
        session,
        actor=actor,
        action="dataset.classification_reopened",
        subject_type="dataset",
        subject_id=dataset.id,
        details={"contract_sha256": dataset.contract_sha256},
    )
    return True


#: What happens to a dataset's live grants when its contract is reclassified: (session, dataset
#: id, actor) -> grants affected. The access context provides it (gbadz.app wires it in).
Reclassified = Callable[[Session, str, str], int]


def pending_classifications(session: Session, limit: int, *, dataset_id: str | None = None) -> list[Dataset]:
    """Datasets waiting for a listing review (or returned to their provider), oldest first."""
    query = sa.select(Dataset).where(Dataset.classification_state != "approved", Dataset.status != "retired")
    if dataset_id is not None:
        query = query.where(Dataset.id == dataset_id)
    return list(session.scalars(query.order_by(Dataset.updated_at, Dataset.id).limit(limit)))


def review_classification(
    session: Session,
    *,
    officer_role: str,
    officer_org_id: str,
    actor: str,
    dataset_id: str,
    approve: bool,
    note: str,
    contract_sha256: str,
) -> Dataset:
    """A compliance officer signs off a dataset's classification (or returns it with a note),
    for the contract they reviewed: if it changed since, 409 and nothing is signed."""
    if officer_role != "compliance_officer":
        raise Forbidden("only a compliance officer signs off a dataset's classification")
    dataset = session.scalar(sa.select(Dataset).where(Dataset.id == dataset_id).with_for_update())
    if dataset is None or dataset.status == "retired":
        raise DatasetNotFound(f"no dataset {dataset_id!r}")
    if dataset.provider_org_id == officer_org_id:
        raise Forbidden("an officer does not sign off their own organisation's dataset")
    if contract_sha256 != dataset.contract_sha256:
        raise Conflict(
            "contract_sha256: the contract changed since you reviewed it; review the current one",
            field="contract_sha256",
        )
    contract = stored_contract(dataset)
    state = "approved" if approve else "returned"
    dataset.classification_state = state
    dataset.classification_fingerprint = contract.classification_fingerprint() if approve else None
    dataset.classification_review = {
        "state": state,
        "by": actor,
        "at": datetime.now(UTC).isoformat(),
        "note": note,
        "contract_sha256": dataset.contract_sha256,
        "contract_version": contract.version,
    }
    session.info[CHANGED] = True
    audit.record(
        session,
        actor=actor,
        action=f"dataset.classification_{state}",
        subject_type="dataset",
        subject_id=dataset.id,
        details={"note": note, "contract_sha256": dataset.contract_sha256},
    )
    return dataset


def note_version(dataset: Dataset, version: DatasetVersion) -> None:
    if dataset.current_version is None or version.version >= dataset.current_version:
        dataset.current_version = version.version
        dataset.row_count = version.row_count
        dataset.published_at = version.published_at


def contract_etag(dataset: Dataset) -> str:
    return f'"c-{dataset.contract_sha256[:32]}"'


def _parse(raw: bytes) -> tuple[Contract, str]:
    try:
        contract = parse_contract(raw, "contract")
    except ContractError as exc:
        fields = {loc for loc, _ in exc.problems}
        raise BadRequest(
            "; ".join(f"{loc}: {msg}" for loc, msg in exc.problems),
            field=fields.pop() if len(fields) == 1 else None,
            problems=list(exc.problems),
        ) from None
    return contract, hashlib.sha256(raw).hexdigest()


def _semver(text: str) -> tuple[int, ...]:
    return tuple(int(part) for part in text.split("."))


def _check_provider(contract: Contract, org: Organization) -> None:
    if contract.gbadz.provider.organization != org.name:
        raise BadRequest(
            f"gbadz.provider.organization: must be your organisation's registered name {org.name!r}",
            field="gbadz.provider.organization",
        )
    _check_origin(contract, org)
    if contract.status == "retired":
        raise BadRequest(
            "status: a contract cannot be registered as retired; use the retire action", field="status"
        )


def _check_origin(contract: Contract, org: Organization) -> None:
    if contract.gbadz.origin != org.jurisdiction:
        # The origin regime is the exporter's registration (invariant 6): a contract cannot
        # choose another. Data collected elsewhere says so in gbadz.provenance.collected_in,
        # which is decided beside the origin and can only make a decision stricter.
        raise BadRequest(
            f"gbadz.origin: must be your organisation's registered jurisdiction {org.jurisdiction!r}, "
            f"not {contract.gbadz.origin!r}; say where data was collected in gbadz.provenance.collected_in",
            field="gbadz.origin",
        )


def register_contract(session: Session, *, org_id: str, actor: str, raw: bytes) -> Dataset:
    org = session.get(Organization, org_id)
    if org is None:
        raise Forbidden("your organisation is not registered here; ask an administrator")
    contract, digest = _parse(raw)
    _check_provider(contract, org)
    if session.get(Dataset, contract.id) is not None:
        raise Conflict(
            f"id: a dataset {contract.id!r} already exists; change its contract with PUT", field="id"
        )
    dataset = Dataset(
        id=contract.id,
        provider_org_id=org.id,
        classification_state="pending",
        **listing_fields(contract, digest),
    )
    session.add(dataset)
    session.flush()
    session.info[CHANGED] = True
    audit.record(
        session,
        actor=actor,
        action="dataset.registered",
        subject_type="dataset",
        subject_id=contract.id,
        details={"contract_version": contract.version, "contract_sha256": digest, "status": contract.status},
    )
    return dataset


def update_contract(
    session: Session,
    viewer: Viewer,
    *,
    actor: str,
    dataset_id: str,
    raw: bytes,
    if_match: str | None,
    on_reclassified: Reclassified | None = None,
) -> tuple[Dataset, bool]:
    """Replace a dataset's contract with a newer version; return (dataset, changed)."""
    dataset = get_owned(session, viewer, dataset_id, lock=True)
    if if_match is not None and if_match.strip() not in ("*", contract_etag(dataset)):
        raise PreconditionFailed(
            "If-Match: the contract changed since you read it; fetch it again and re-apply your change",
            field="If-Match",
        )
    if dataset.status == "retired":
        raise Conflict(
            "status: the dataset is retired and its keys destroyed; it cannot change", field="status"
        )
    contract, digest = _parse(raw)
    if contract.id != dataset_id:
        raise BadRequest(
            f"id: the contract's id {contract.id!r} differs from the URL's {dataset_id!r}", field="id"
        )
    org = session.get(Organization, viewer.org_id)
    assert org is not None  # get_owned matched the provider organisation
    _check_provider(contract, org)
    if digest == dataset.contract_sha256:
        return dataset, False
    current = str(dataset.contract.get("version", "0.0.0"))
    if _semver(contract.version) <= _semver(current):
        raise Conflict(
            f"version: {contract.version} must be greater than the current {current}", field="version"
        )
    before = {"contract_version": current, "status": dataset.status}
    previous = stored_contract(dataset)
    for key, value in listing_fields(contract, digest).items():
        setattr(dataset, key, value)
    if _reopen_if_reclassified(session, dataset, previous, contract, actor) and on_reclassified is not None:
        on_reclassified(session, dataset_id, actor)
    dataset.updated_at = datetime.now(UTC)
    session.info[CHANGED] = True
    audit.record(
        session,
        actor=actor,
        action="dataset.contract_updated",
        subject_type="dataset",
        subject_id=dataset_id,
        details={
            "before": before,
            "after": {"contract_version": contract.version, "status": contract.status},
            "contract_sha256": digest,
        },
    )
    return dataset, True


def _set_status(session: Session, dataset: Dataset, status: str, *, actor: str, **details: Any) -> None:
    """Change the status (row and stored contract alike), tell the read index, audit it."""
    before = dataset.status
    dataset.status = status
    dataset.contract = {**dataset.contract, "status": status}
    dataset.updated_at = datetime.now(UTC)
    session.info[CHANGED] = True
    audit.record(
        session,
        actor=actor,
        action=f"dataset.{status}",
        subject_type="dataset",
        subject_id=dataset.id,
        details={"before": before, **details},
    )


def deprecate(session: Session, viewer: Viewer, *, actor: str, dataset_id: str, reason: str) -> Dataset:
    dataset = get_owned(session, viewer, dataset_id, lock=True)
    if dataset.status in ("deprecated", "retired"):
        raise Conflict(f"status: the dataset is already {dataset.status}", field="status")
    _set_status(session, dataset, "deprecated", actor=actor, reason=reason)
    return dataset


def begin_retire(session: Session, viewer: Viewer, *, dataset_id: str) -> Dataset:
    dataset = get_owned(session, viewer, dataset_id, lock=True)
    if dataset.status == "retired":
        raise Conflict("status: the dataset is already retired", field="status")
    return dataset


def finish_retire(
    session: Session,
    dataset: Dataset,
    *,
    actor: str,
    reason: str,
    keys_destroyed: int,
    copies_deleted: int = 0,
) -> None:
    _set_status(
        session,
        dataset,
        "retired",
        actor=actor,
        reason=reason,
        keys_destroyed=keys_destroyed,
        delivery_objects_deleted=copies_deleted,
    )


def retire(
    session: Session,
    keys: KeyProvider,
    viewer: Viewer,
    *,
    actor: str,
    dataset_id: str,
    reason: str,
    deliveries: Callable[[str], int] | None = None,
) -> Dataset:
    """Delist the dataset and destroy its keys, so no copy of it can be decrypted again, and
    delete every grant's delivered copy (``deliveries`` deletes them; returns how many)."""
    dataset = begin_retire(session, viewer, dataset_id=dataset_id)
    # Crypto-shredding and deletion happen before the status commits: if the commit then
    # fails, they are done anyway and retrying finishes the job (both are idempotent).
    destroyed = keys.destroy_dataset(dataset_id)
    deleted = deliveries(dataset_id) if deliveries is not None else 0
    finish_retire(
        session, dataset, actor=actor, reason=reason, keys_destroyed=destroyed, copies_deleted=deleted
    )
    return dataset


def check_uploadable(session: Session, viewer: Viewer, dataset_id: str) -> Dataset:
    """The provider's dataset, if it still takes uploads."""
    dataset = get_owned(session, viewer, dataset_id)
    if dataset.status == "retired":
        raise Conflict("status: the dataset is retired; it takes no new uploads", field="status")
    return dataset
