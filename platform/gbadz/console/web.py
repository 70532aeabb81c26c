"""Rendering for the console and the sign-in page: Jinja2 templates, the language, security headers."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import datetime
from pathlib import Path
from types import FunctionType
from typing import Any
from urllib.parse import parse_qsl, quote

import jinja2
import jinja2.runtime
from fastapi import Request
from fastapi.responses import HTMLResponse
from jinja2.ext import Extension
from jinja2.lexer import Token, TokenStream
from markupsafe import Markup
from starlette.datastructures import FormData, UploadFile
from starlette.formparsers import MultiPartException, MultiPartParser

from gbadz.console import localize
from gbadz.console.i18n import LOCALE_NAMES, LOCALES, translate

HERE = Path(__file__).parent
LANG_COOKIE = "gbadz_lang"
# No inline script or style anywhere: charts are SVG with presentation attributes.
CSP = (
    "default-src 'none'; style-src 'self'; img-src 'self' data:; script-src 'self'; "
    "form-action 'self'; frame-ancestors 'none'; base-uri 'none'"
)
SECURITY_HEADERS = {
    "Content-Security-Policy": CSP,
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "same-origin",
    "X-Frame-Options": "DENY",
    "Cache-Control": "no-store",
}

# What a plain dict answers to as an attribute (methods): any other name is one of its keys.
_DICT_ATTRIBUTES = frozenset(dir(dict))


class _Context(jinja2.runtime.Context):
    """Calls a plain function of the page (``t``, ``pd_term``, ``duration``) directly.

    Jinja's own ``call`` looks for ``pass_context``-style markers on the function and on its
    ``__call__`` at every call; a plain function has neither, so the answer is the same."""

    def call(__self, __obj: Any, *args: Any, **kwargs: Any) -> Any:
        if type(__obj) is not FunctionType or hasattr(__obj, "jinja_pass_arg"):
            return super().call(__obj, *args, **kwargs)
        kwargs.pop("_block_vars", None)
        kwargs.pop("_loop_vars", None)
        try:
            return __obj(*args, **kwargs)
        except StopIteration:
            return __self.environment.undefined(
                "value was undefined because a callable raised a StopIteration exception"
            )


class _Environment(jinja2.Environment):
    """Jinja2 with two shortcuts for what the console's pages do most (issue #19).

    ``d.name`` of a plain dict (every API answer a page shows) is its key ``name`` unless a dict
    has an attribute of that name, which is what Jinja finds too: it tries the attribute first,
    and the ``AttributeError`` raised for each of a catalog page's few hundred lookups cost a
    fifth of its rendering. Calls go through :class:`_Context`."""

    context_class = _Context

    def getattr(self, obj: Any, attribute: str) -> Any:
        if type(obj) is dict and attribute not in _DICT_ATTRIBUTES:
            try:
                return obj[attribute]
            except KeyError:
                return self.undefined(obj=obj, name=attribute)
        return super().getattr(obj, attribute)


env = _Environment(
    loader=jinja2.FileSystemLoader(HERE / "templates"),
    autoescape=True,
    undefined=jinja2.StrictUndefined,
    trim_blocks=True,
    lstrip_blocks=True,
)


def locale_of(request: Request) -> str:
    chosen = request.cookies.get(LANG_COOKIE, "")
    if chosen in LOCALES:
        return chosen
    accept = request.headers.get("accept-language", "").lower()
    for part in accept.split(","):
        tag = part.split(";")[0].strip()
        if tag in {"zh-hk", "zh-mo", "zh-tw", "zh-hant"} or tag.startswith("zh-hant"):
            return "zh-Hant"
        if tag.startswith("zh"):
            return "zh-Hans"
        if tag.startswith("en"):
            return "en"
    return "en"


def _when(value: Any) -> str:
    if value is None:
        return "—"
    if isinstance(value, str):
        try:
            value = datetime.fromisoformat(value)
        except ValueError:
            return str(value)
    if isinstance(value, datetime):
        return value.strftime("%Y-%m-%d %H:%M UTC")
    return str(value)


def _number(value: Any) -> str:
    return f"{value:,}" if isinstance(value, int) else "—" if value is None else str(value)


env.filters["when"] = _when
env.filters["number"] = _number
env.filters["urlquote"] = lambda value: quote(str(value), safe="")


class FoldLabels(Extension):
    """Translate every ``t("a literal label")`` of a template when it is compiled.

    A page's fixed labels (about half of its ``t`` calls: 85 of the catalog's 170) then cost
    nothing when it is rendered; each call through Jinja's runtime had cost a few microseconds
    (issue #19). Only a call with one string literal and nothing else is folded; ``t(code)``
    and ``t("...{n}...", n=...)`` still run at render time. One environment per language
    (:data:`ENVS`), each an overlay of :data:`env` sharing its filters and loader.
    """

    def filter_stream(self, stream: TokenStream) -> Iterator[Token]:
        locale: str = getattr(self.environment, "label_locale", "en")
        tokens = list(stream)
        i = 0
        while i < len(tokens):
            token = tokens[i]
            if (
                token.test("name:t")
                and i + 3 < len(tokens)
                and (i == 0 or tokens[i - 1].type != "dot")
                and [tok.type for tok in tokens[i + 1 : i + 4]] == ["lparen", "string", "rparen"]
            ):
                yield Token(token.lineno, "string", translate(tokens[i + 2].value, locale))
                i += 4
                continue
            yield token
            i += 1


def translator(locale: str) -> Any:
    """The ``t`` of templates in ``locale``: a label or code, or the API's message by its code."""

    def t(text: str, **params: Any) -> str:
        if isinstance(text, localize.ApiMessage):  # the API's English, translated by its code
            return localize.localize(text, locale)
        label = translate(text, locale)
        return label.format(**params) if params else label

    return t


def _folded(locale: str) -> jinja2.Environment:
    overlay = env.overlay(extensions=[FoldLabels])
    overlay.label_locale = locale  # type: ignore[attr-defined]  # read by FoldLabels
    # ``t`` is also a global of the language's environment, so that pages can import the macros
    # without their context: imported with it, every render built a module whose macros and
    # context referred to each other, a cycle holding the page's request and data until the
    # cyclic collector ran (a full collection every second under load, issue #19).
    overlay.globals = {**env.globals, "t": TRANSLATORS[locale]}
    return overlay


TRANSLATORS = {locale: translator(locale) for locale in LOCALES}


ENVS = {locale: _folded(locale) for locale in LOCALES}


class FormTooLarge(Exception):
    """A form body over the page's limit."""


async def read_form(request: Request, limit: int, max_fields: int = 200) -> FormData:
    """An url-encoded form, read up to ``limit`` bytes (whatever Content-Length claims)."""
    chunks, size = [], 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise FormTooLarge
        chunks.append(chunk)
    try:
        pairs: list[tuple[str, str | UploadFile]] = parse_qsl(  # type: ignore[assignment]
            b"".join(chunks).decode("utf-8", errors="replace"),
            keep_blank_values=True,
            max_num_fields=max_fields,
        )
    except ValueError:  # more fields than any of our forms has
        raise FormTooLarge from None
    return FormData(pairs)


class FormUnreadable(Exception):
    """A form body that is not the encoding its page sends."""


async def read_multipart(request: Request, limit: int, max_fields: int = 20) -> FormData:
    """A multipart form (one file), read up to ``limit`` bytes whatever Content-Length claims.

    Files are spooled by Starlette (memory, then disk); the caller closes the form."""
    if not request.headers.get("content-type", "").startswith("multipart/form-data"):
        raise FormUnreadable

    async def bounded() -> Any:
        size = 0
        async for chunk in request.stream():
            size += len(chunk)
            if size > limit:
                raise FormTooLarge
            yield chunk

    parser = MultiPartParser(
        request.headers, bounded(), max_files=1, max_fields=max_fields, max_part_size=64 * 1024
    )
    try:
        return await parser.parse()
    except MultiPartException:
        raise FormUnreadable from None


def helpers(locale: str) -> dict[str, Any]:
    """The formatting functions every template may call, in ``locale``."""
    return {
        "duration": lambda value: localize.human_duration(value, locale),
        "ingest_summary": lambda summary: localize.ingest_summary(summary, locale),
        "pd_term": localize.personal_data_term,
    }


#: At most this many rendered cards are kept in one index snapshot's memo (three languages of
#: 10,000 datasets are 30,000 cards of 0.7-2.5 KB: an English card is about 700 bytes, a Chinese
#: one up to four bytes a character in memory, so at most about 100 MB); past it a card is
#: rendered each time.
CARD_MEMO_LIMIT = 40_000


def cards(locale: str, items: list[dict[str, Any]], memo: dict[Any, Any] | None) -> list[Markup]:
    """The catalog page's result cards in ``locale``, each rendered once per index snapshot.

    A card shows only what every viewer of the dataset sees (its listing row), so it is kept in
    the snapshot's memo (``Page.memo``) by language and dataset id: the cards were two thirds of
    the page's rendering (issue #19), and a snapshot's row never changes — a change to a dataset
    makes a new snapshot with an empty memo. Items from the database (no memo) are rendered
    each time."""
    template = ENVS[locale].get_template("_card.html")
    pd_term = localize.personal_data_term
    rendered = []
    for item in items:
        key = ("console-card", locale, item["id"])
        card = memo.get(key) if memo is not None else None
        if card is None:
            card = Markup(template.render(d=item, pd_term=pd_term))  # noqa: S704 - autoescaped by Jinja
            if memo is not None and len(memo) < CARD_MEMO_LIMIT:
                memo[key] = card
        rendered.append(card)
    return rendered


def render(request: Request, template: str, status_code: int = 200, **context: Any) -> HTMLResponse:
    locale = locale_of(request)
    html = (
        ENVS[locale]
        .get_template(template)
        .render(
            request=request,
            path=request.url.path,
            query=request.url.query,
            locale=locale,
            locales=LOCALE_NAMES,
            t=TRANSLATORS[locale],
            **helpers(locale),
            **context,
        )
    )
    return HTMLResponse(html, status_code=status_code, headers=SECURITY_HEADERS)
