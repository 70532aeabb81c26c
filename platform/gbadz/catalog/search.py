"""Catalog search: full text, filters, sorting and keyset (cursor) pagination.

One repository interface over two engines: SQLite FTS5 (embedded) and PostgreSQL's
``tsvector`` with a GIN index (production); the migration 0005 builds both. The engines only
*select* matching datasets; the *relevance* order is our own, the same on both and
independent of the rest of the corpus (ADR 0010): for every query term, a match in the name
counts 8, in a tag 4, in a column name or description 2, in the description 1. Because a
dataset's score never changes when other datasets are added, a cursor taken on page one
stays valid while providers publish: every dataset that existed when paging began is
returned exactly once.

The query text is reduced to word tokens (letters and digits, at most 16), so no user input
reaches either full-text query language; SQL meta-characters simply disappear.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Literal

import sqlalchemy as sa
from sqlalchemy.orm import Session

from gbadz.catalog.models import Dataset
from gbadz.catalog.service import LISTED_STATUSES, WORD, visibility_clause
from gbadz.errors import BadRequest
from gbadz.identity.service import Viewer

Sort = Literal["relevance", "name", "-updated"]
MAX_TERMS = 16
WEIGHTS = (("search_name", 8), ("search_tags", 4), ("search_columns", 2), ("search_description", 1))


def terms_of(q: str | None) -> list[str]:
    tokens = WORD.findall((q or "").lower())
    return list(dict.fromkeys(tokens))[:MAX_TERMS]


@dataclass(frozen=True)
class SearchQuery:
    q: str | None = None
    provider: str | None = None
    origin: tuple[str, ...] = ()
    category: tuple[str, ...] = ()
    has_pi: bool | None = None
    purpose: str | None = None
    updated_since: datetime | None = None
    status: tuple[str, ...] = ()
    sort: Sort | None = None
    limit: int = 20
    cursor: str | None = None

    @property
    def terms(self) -> list[str]:
        return terms_of(self.q)

    @property
    def effective_sort(self) -> Sort:
        if self.sort is not None:
            return self.sort
        return "relevance" if self.terms else "-updated"

    def fingerprint(self) -> str:
        """What a cursor is bound to: the query and sort, not the page size or position."""
        shape = [
            self.terms,
            self.provider,
            sorted(self.origin),
            sorted(self.category),
            self.has_pi,
            self.purpose,
            self.updated_since.isoformat() if self.updated_since else None,
            sorted(self.status),
            self.effective_sort,
        ]
        return hashlib.sha256(json.dumps(shape).encode()).hexdigest()[:16]


@dataclass
class Page:
    items: list[tuple[Any, int | None]]  # (Dataset row or the index's listing dict, relevance score)
    total: int
    next_cursor: str | None
    sort: Sort
    facets: dict[str, dict[str, int]] = field(default_factory=dict)
    # The index snapshot's memo when the items are its rows (None from the database): a reader
    # may keep what it derives from a row there, by the row's id, for as long as the snapshot
    # lives (a row of one snapshot never changes; a change makes a new snapshot).
    memo: dict[Any, Any] | None = None


def encode_cursor(query: SearchQuery, key: Sequence[Any]) -> str:
    raw = json.dumps({"f": query.fingerprint(), "k": list(key)}, separators=(",", ":")).encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def decode_cursor(query: SearchQuery) -> list[Any] | None:
    if query.cursor is None:
        return None
    text = query.cursor
    try:
        raw = base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))
        data = json.loads(raw)
        fingerprint, key = data["f"], data["k"]
    except (binascii.Error, ValueError, TypeError, KeyError):
        raise BadRequest(
            "cursor: not a cursor this API issued; start again without it", field="cursor"
        ) from None
    if fingerprint != query.fingerprint():
        raise BadRequest(
            "cursor: it belongs to a different query or sort; start again without it", field="cursor"
        )
    expected = {"relevance": (int, str), "name": (str, str), "-updated": (str, str)}[query.effective_sort]
    if (
        not isinstance(key, list)
        or len(key) != 2
        or not all(isinstance(v, t) for v, t in zip(key, expected, strict=True))
        # A relevance score is a 64-bit integer in both databases: a larger one is made up (and
        # overflowed the bound parameter: a 500 from a forged cursor, review of #19).
        or (isinstance(key[0], int) and not -(2**63) <= key[0] < 2**63)
    ):
        raise BadRequest("cursor: malformed position; start again without it", field="cursor")
    return key


class CatalogSearch:
    """The repository: ``search(session, viewer, query)`` on either database."""

    def __init__(self, dialect: str) -> None:
        self.dialect = dialect

    def _matches(self, terms: list[str]) -> sa.ColumnElement[bool]:
        if self.dialect == "sqlite":
            # Each token quoted and prefix-matched; tokens hold only letters and digits.
            fts = " AND ".join(f'"{t}"*' for t in terms)
            rows = sa.text("SELECT rowid FROM datasets_fts WHERE datasets_fts MATCH :fts").bindparams(fts=fts)
            return Dataset.search_rowid.in_(rows.columns(sa.column("rowid", sa.Integer)))
        tsquery = " & ".join(f"{t}:*" for t in terms)
        return sa.literal_column("datasets.search_tsv").op("@@")(
            sa.func.to_tsquery(sa.literal_column("'simple'::regconfig"), tsquery)
        )

    @staticmethod
    def _score(terms: list[str]) -> sa.ColumnElement[int]:
        """Per term and field: the weight if a word of the field starts with the term."""
        parts: list[sa.ColumnElement[int]] = []
        for term in terms:
            for column, weight in WEIGHTS:
                # Fields hold space-separated words (catalog.service.words); terms are letters/digits only.
                spaced = sa.literal(" ") + getattr(Dataset, column)
                parts.append(sa.case((spaced.like(f"% {term}%"), weight), else_=0))
        return sa.cast(sum(parts[1:], parts[0]), sa.Integer)

    def _filters(self, viewer: Viewer, query: SearchQuery) -> list[sa.ColumnElement[bool]]:
        where: list[sa.ColumnElement[bool]] = [visibility_clause(viewer)]
        where.append(Dataset.status.in_(query.status or LISTED_STATUSES))
        if query.terms:
            where.append(self._matches(query.terms))
        if query.provider:
            where.append(
                sa.or_(Dataset.provider_org_id == query.provider, Dataset.provider_name == query.provider)
            )
        if query.origin:
            where.append(Dataset.origin.in_(query.origin))
        if query.category:
            where.append(Dataset.category.in_(query.category))
        if query.has_pi is not None:
            where.append(Dataset.has_pi.is_(query.has_pi))
        if query.purpose:
            where.append(Dataset.purposes.like(f"% {query.purpose} %"))
        if query.updated_since is not None:
            where.append(Dataset.updated_at >= query.updated_since)
        return where

    def search(self, session: Session, viewer: Viewer, query: SearchQuery) -> Page:
        sort = query.effective_sort
        terms = query.terms
        if sort == "relevance" and not terms:
            raise BadRequest("sort: relevance needs a search text in q", field="sort")
        key = decode_cursor(query)
        where = self._filters(viewer, query)
        total = int(session.scalar(sa.select(sa.func.count()).select_from(Dataset).where(*where)) or 0)

        score = self._score(terms) if terms else None
        page_where = list(where)
        if sort == "relevance":
            assert score is not None
            order: list[Any] = [score.desc(), Dataset.id.asc()]
            if key is not None:
                page_where.append(sa.or_(score < key[0], sa.and_(score == key[0], Dataset.id > key[1])))
        elif sort == "name":
            order = [Dataset.name.asc(), Dataset.id.asc()]
            if key is not None:
                page_where.append(sa.tuple_(Dataset.name, Dataset.id) > sa.tuple_(key[0], key[1]))
        else:
            order = [Dataset.updated_at.desc(), Dataset.id.asc()]
            if key is not None:
                try:
                    since = datetime.fromisoformat(key[0])
                except ValueError:
                    raise BadRequest(
                        "cursor: malformed position; start again without it", field="cursor"
                    ) from None
                if since.tzinfo is None:
                    raise BadRequest("cursor: malformed position; start again without it", field="cursor")
                page_where.append(
                    sa.or_(
                        Dataset.updated_at < since,
                        sa.and_(Dataset.updated_at == since, Dataset.id > key[1]),
                    )
                )
        columns: list[Any] = [Dataset]
        if score is not None:
            columns.append(score.label("score"))
        rows = session.execute(
            sa.select(*columns).where(*page_where).order_by(*order).limit(query.limit + 1)
        ).all()
        items: list[tuple[Dataset, int | None]] = [
            (row[0], int(row[1]) if score is not None else None) for row in rows[: query.limit]
        ]
        next_cursor = None
        if len(rows) > query.limit and items:
            last, last_score = items[-1]
            if sort == "relevance":
                next_cursor = encode_cursor(query, [last_score, last.id])
            elif sort == "name":
                next_cursor = encode_cursor(query, [last.name, last.id])
            else:
                next_cursor = encode_cursor(query, [last.updated_at.isoformat(), last.id])
        return Page(items=items, total=total, next_cursor=next_cursor, sort=sort)
