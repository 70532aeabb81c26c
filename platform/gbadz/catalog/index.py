"""The catalog's in-process read index: the lean listing fields of every dataset, as arrays.

The database stays the source of truth and its full-text engines (:mod:`gbadz.catalog.search`)
stay the reference implementation. This index answers the hot reads — search and
get-by-id — without a query per request (ADR 0010, "Consequences" measured why): one
snapshot of ``datasets`` per *catalog generation*, with numpy boolean masks for visibility
and filters, word postings for full text, and sort ranks for keyset cursors. Results are the
same as the database engines' (the same word tokens, prefix matching, relevance weights,
visibility rule and cursor format; the test suite runs every search test on both).

Freshness: a write through this API process invalidates the snapshot at once; a background
task polls the generation (the ``catalog_generation`` counter every catalog-changing
transaction bumps, plus row count and newest ``updated_at``) every ``refresh_s`` so writes by
other replicas or the ingest DAG are seen within about a second; a request that finds the
snapshot older than ``max_age_s`` checks the generation itself. On PostgreSQL the writing
transaction's ``NOTIFY`` invalidates every replica's snapshot as it commits (ADR 0027).
"""

from __future__ import annotations

import bisect
import threading
import time
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import numpy as np
import sqlalchemy as sa
from sqlalchemy.orm import Session, sessionmaker

from gbadz.catalog.models import CatalogGeneration, Dataset
from gbadz.catalog.search import WEIGHTS, Page, SearchQuery, decode_cursor, encode_cursor
from gbadz.catalog.service import COMMITTED_CHANGE, LISTED_STATUSES
from gbadz.errors import BadRequest
from gbadz.identity.service import Viewer
from gbadz.log import get_logger
from gbadz.vocabulary import RESTRICTED_CATEGORIES

log = get_logger("gbadz.catalog.index")

_COLUMNS = (
    Dataset.id,
    Dataset.name,
    Dataset.provider_name,
    Dataset.provider_org_id,
    Dataset.origin,
    Dataset.category,
    Dataset.regime,
    Dataset.visible_to,
    Dataset.purposes,
    Dataset.status,
    Dataset.classification_state,
    Dataset.has_pi,
    Dataset.has_spi,
    Dataset.tags,
    Dataset.summary,
    Dataset.current_version,
    Dataset.row_count,
    Dataset.published_at,
    Dataset.updated_at,
    Dataset.search_name,
    Dataset.search_tags,
    Dataset.search_columns,
    Dataset.search_description,
)


def _micros(moment: datetime) -> int:
    return int(moment.timestamp() * 1_000_000)


class _Words:
    """One field's word postings: sorted vocabulary, and the datasets holding each word."""

    def __init__(self, texts: list[str]) -> None:
        postings: dict[str, list[int]] = {}
        for ordinal, text in enumerate(texts):
            for word in set(text.split()):
                postings.setdefault(word, []).append(ordinal)
        self.vocabulary = sorted(postings)
        self.postings = [np.array(postings[w], dtype=np.int32) for w in self.vocabulary]
        self.size = len(texts)

    def prefixed(self, term: str) -> np.ndarray:
        """Datasets with a word starting with ``term``, as a boolean mask."""
        mask = np.zeros(self.size, dtype=bool)
        start = bisect.bisect_left(self.vocabulary, term)
        for i in range(start, len(self.vocabulary)):
            if not self.vocabulary[i].startswith(term):
                break
            mask[self.postings[i]] = True
        return mask


@dataclass
class Snapshot:
    generation: tuple[Any, ...]
    ids: list[str]  # sorted: a dataset's ordinal is its rank by id
    rows: list[dict[str, Any]]  # listing fields, JSON-ready
    position: dict[str, int]
    listed: np.ndarray
    restricted: np.ndarray
    has_pi: np.ndarray
    updated: np.ndarray  # microseconds since the epoch
    regime: dict[str, np.ndarray]
    origin: dict[str, np.ndarray]
    category: dict[str, np.ndarray]
    status: dict[str, np.ndarray]
    provider: dict[str, np.ndarray]  # by organisation id
    provider_name: dict[str, np.ndarray]
    visible_to: dict[str, np.ndarray]
    purposes: dict[str, np.ndarray]
    words: list[tuple[_Words, int]]
    name_order: list[tuple[str, str]]  # (name, id) sorted
    name_rank: np.ndarray
    updated_order: list[tuple[int, str]]  # (-updated, id) sorted
    updated_rank: np.ndarray
    built_at: float = field(default_factory=time.monotonic)
    bodies: dict[tuple[str, bool], tuple[bytes, str, str]] = field(default_factory=dict)  # rendered pages
    memo: dict[Any, Any] = field(default_factory=dict)  # readers' renderings of rows (Page.memo)
    _visible: dict[tuple[str, str], np.ndarray] = field(default_factory=dict)

    @property
    def size(self) -> int:
        return len(self.ids)

    def _mask(self, table: dict[str, np.ndarray], key: str | None) -> np.ndarray:
        found = table.get(key or "")
        return found if found is not None else np.zeros(self.size, dtype=bool)

    def visible(self, viewer: Viewer) -> np.ndarray:
        """The visibility rule of :func:`gbadz.catalog.service.visibility_clause`, as a mask."""
        key = (viewer.org_id, viewer.jurisdiction)
        cached = self._visible.get(key)
        if cached is not None:
            return cached
        allowed = ~self.restricted | self._mask(self.visible_to, viewer.jurisdiction)
        if viewer.regime != "elsewhere":
            allowed = allowed | self._mask(self.regime, viewer.regime)
        mask: np.ndarray = self._mask(self.provider, viewer.org_id) | (self.listed & allowed)
        if len(self._visible) > 10_000:
            self._visible.clear()
        self._visible[key] = mask
        return mask

    def can_see(self, viewer: Viewer, dataset_id: str) -> int | None:
        ordinal = self.position.get(dataset_id)
        if ordinal is None or not self.visible(viewer)[ordinal]:
            return None
        return ordinal

    def search(self, viewer: Viewer, query: SearchQuery) -> Page:
        sort = query.effective_sort
        terms = query.terms
        if sort == "relevance" and not terms:
            raise BadRequest("sort: relevance needs a search text in q", field="sort")
        key = decode_cursor(query)
        mask = self.visible(viewer).copy()
        statuses = query.status or LISTED_STATUSES
        status_mask = np.zeros(self.size, dtype=bool)
        for value in statuses:
            status_mask |= self._mask(self.status, value)
        mask &= status_mask
        score = np.zeros(self.size, dtype=np.int32) if terms else None
        for term in terms:
            any_field = np.zeros(self.size, dtype=bool)
            for words, weight in self.words:
                hit = words.prefixed(term)
                any_field |= hit
                assert score is not None
                score += hit.astype(np.int32) * weight
            mask &= any_field
        if query.provider:
            mask &= self._mask(self.provider, query.provider) | self._mask(self.provider_name, query.provider)
        if query.origin:
            origin = np.zeros(self.size, dtype=bool)
            for value in query.origin:
                origin |= self._mask(self.origin, value)
            mask &= origin
        if query.category:
            category = np.zeros(self.size, dtype=bool)
            for value in query.category:
                category |= self._mask(self.category, value)
            mask &= category
        if query.has_pi is not None:
            mask &= self.has_pi if query.has_pi else ~self.has_pi
        if query.purpose:
            mask &= self._mask(self.purposes, query.purpose)
        if query.updated_since is not None:
            mask &= self.updated >= _micros(query.updated_since)
        total = int(np.count_nonzero(mask))

        ordinals = np.arange(self.size, dtype=np.int64)
        if sort == "relevance":
            assert score is not None
            rank = (-score.astype(np.int64)) * (self.size + 1) + ordinals
            if key is not None:
                # A lower score, or the same score and an id sorting after the cursor's.
                after = bisect.bisect_right(self.ids, key[1])
                mask &= (score < key[0]) | ((score == key[0]) & (ordinals >= after))
        elif sort == "name":
            rank = self.name_rank
            if key is not None:
                mask &= rank >= bisect.bisect_right(self.name_order, (key[0], key[1]))
        else:
            rank = self.updated_rank
            if key is not None:
                try:
                    since = datetime.fromisoformat(key[0])
                except ValueError:
                    raise BadRequest(
                        "cursor: malformed position; start again without it", field="cursor"
                    ) from None
                if since.tzinfo is None:
                    raise BadRequest("cursor: malformed position; start again without it", field="cursor")
                mask &= rank >= bisect.bisect_right(self.updated_order, (-_micros(since), key[1]))
        candidates = np.flatnonzero(mask)
        want = query.limit + 1
        if len(candidates) > want:
            part = np.argpartition(rank[candidates], want - 1)[:want]
            candidates = candidates[part]
        chosen = candidates[np.argsort(rank[candidates], kind="stable")]
        page = [int(i) for i in chosen[: query.limit]]
        items: list[tuple[dict[str, Any], int | None]] = [
            (self.rows[i], int(score[i]) if score is not None else None) for i in page
        ]
        next_cursor = None
        if len(chosen) > query.limit and page:
            last = self.rows[page[-1]]
            if sort == "relevance":
                assert score is not None
                next_cursor = encode_cursor(query, [int(score[page[-1]]), last["id"]])
            elif sort == "name":
                next_cursor = encode_cursor(query, [last["name"], last["id"]])
            else:
                next_cursor = encode_cursor(query, [last["updated_at"].isoformat(), last["id"]])
        return Page(items=items, total=total, next_cursor=next_cursor, sort=sort, memo=self.memo)


_COUNTER = sa.select(CatalogGeneration.value).where(CatalogGeneration.id == 1).scalar_subquery()


def _generation(session: Session) -> tuple[Any, ...]:
    """What the snapshot was built from: the catalog's generation counter (bumped by every gbadz
    transaction that changes the catalog, ADR 0027), and the row count and newest ``updated_at``
    for a change made outside gbadz."""
    row: Any = session.execute(sa.select(sa.func.count(), sa.func.max(Dataset.updated_at), _COUNTER)).one()
    return (int(row[0]), str(row[1]), row[2])


def _groups(values: list[Any], size: int) -> dict[Any, np.ndarray]:
    out: dict[Any, list[int]] = {}
    for ordinal, value in enumerate(values):
        out.setdefault(value, []).append(ordinal)
    masks = {}
    for value, ordinals in out.items():
        mask = np.zeros(size, dtype=bool)
        mask[ordinals] = True
        masks[value] = mask
    return masks


def _spaced_groups(values: list[str], size: int) -> dict[str, np.ndarray]:
    out: dict[str, list[int]] = {}
    for ordinal, value in enumerate(values):
        for item in value.split():
            out.setdefault(item, []).append(ordinal)
    masks = {}
    for item, ordinals in out.items():
        mask = np.zeros(size, dtype=bool)
        mask[ordinals] = True
        masks[item] = mask
    return masks


def build(session: Session) -> Snapshot:
    generation = _generation(session)
    records = [dict(row._mapping) for row in session.execute(sa.select(*_COLUMNS).order_by(Dataset.id))]
    size = len(records)
    ids = [r["id"] for r in records]
    rows = []
    for r in records:
        rows.append(
            {
                "id": r["id"],
                "name": r["name"],
                "provider": {"name": r["provider_name"], "org_id": r["provider_org_id"]},
                "origin": r["origin"],
                "category": r["category"],
                "has_pi": r["has_pi"],
                "has_spi": r["has_spi"],
                "status": r["status"],
                "tags": list(r["tags"] or []),
                "summary": r["summary"],
                "licence_purposes": r["purposes"].split(),
                "current_version": r["current_version"],
                "row_count": r["row_count"],
                "published_at": r["published_at"],
                "updated_at": r["updated_at"],
            }
        )
    updated = np.array([_micros(r["updated_at"]) for r in records], dtype=np.int64)
    name_order = sorted((r["name"], r["id"]) for r in records)
    name_rank = np.empty(size, dtype=np.int64)
    position = {dataset_id: i for i, dataset_id in enumerate(ids)}
    for rank, (_, dataset_id) in enumerate(name_order):
        name_rank[position[dataset_id]] = rank
    updated_order = sorted((-int(updated[i]), ids[i]) for i in range(size))
    updated_rank = np.empty(size, dtype=np.int64)
    for rank, (_, dataset_id) in enumerate(updated_order):
        updated_rank[position[dataset_id]] = rank
    return Snapshot(
        generation=generation,
        ids=ids,
        rows=rows,
        position=position,
        # The visibility rule's "listed": open, and its classification signed off.
        listed=np.array(
            [r["status"] in LISTED_STATUSES and r["classification_state"] == "approved" for r in records],
            dtype=bool,
        ),
        restricted=np.array([r["category"] in RESTRICTED_CATEGORIES for r in records], dtype=bool),
        has_pi=np.array([bool(r["has_pi"]) for r in records], dtype=bool),
        updated=updated,
        regime=_groups([r["regime"] for r in records], size),
        origin=_groups([r["origin"] for r in records], size),
        category=_groups([r["category"] for r in records], size),
        status=_groups([r["status"] for r in records], size),
        provider=_groups([r["provider_org_id"] for r in records], size),
        provider_name=_groups([r["provider_name"] for r in records], size),
        visible_to=_spaced_groups([r["visible_to"] for r in records], size),
        purposes=_spaced_groups([r["purposes"] for r in records], size),
        words=[(_Words([r[f] or "" for r in records]), weight) for f, weight in WEIGHTS],
        name_order=name_order,
        name_rank=name_rank,
        updated_order=updated_order,
        updated_rank=updated_rank,
    )


class CatalogIndex:
    """Keeps one :class:`Snapshot` current; thread-safe; see the module docstring for freshness."""

    def __init__(
        self, sessions: sessionmaker[Session], refresh_s: float = 1.0, max_age_s: float = 5.0
    ) -> None:
        self.sessions = sessions
        self.refresh_s = refresh_s
        self.max_age_s = max_age_s
        self._snapshot: Snapshot | None = None
        self._dirty = True
        self._checked_at = -1e9
        self._lock = threading.Lock()

    def invalidate(self) -> None:
        self._dirty = True

    def watch(self, sessions: sessionmaker[Session]) -> None:
        """Invalidate when a session of ``sessions`` commits a catalog change (counted in the
        generation by :func:`gbadz.catalog.service._count_change`)."""

        def after_commit(session: Session) -> None:
            if session.info.pop(COMMITTED_CHANGE, False):
                self.invalidate()

        sa.event.listen(sessions, "after_commit", after_commit)

    def ready(self) -> Snapshot | None:
        """The snapshot if it can be used without touching the database, else None."""
        snapshot = self._snapshot
        if snapshot is None or self._dirty or time.monotonic() - self._checked_at > self.max_age_s:
            return None
        return snapshot

    def current(self) -> Snapshot:
        """A snapshot no older than the last invalidation (rebuilding it if needed)."""
        snapshot = self.ready()
        if snapshot is not None:
            return snapshot
        with self._lock:
            snapshot = self.ready()
            if snapshot is not None:
                return snapshot
            with self.sessions() as session:
                generation = _generation(session)
                if self._snapshot is None or self._dirty or generation != self._snapshot.generation:
                    self._dirty = False  # cleared before reading: a write during the build re-dirties
                    self._snapshot = build(session)
                self._checked_at = time.monotonic()
            return self._snapshot

    def check(self) -> None:
        """Compare the generation with the database; mark the snapshot stale if it moved."""
        with self.sessions() as session:
            generation = _generation(session)
        snapshot = self._snapshot
        if snapshot is not None and generation != snapshot.generation:
            self._dirty = True
        self._checked_at = time.monotonic()
