"""Rendering for the console and the sign-in page: Jinja2 templates, the language, security headers."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import datetime
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl, quote

import jinja2
from fastapi import Request
from fastapi.responses import HTMLResponse
from jinja2.ext import Extension
from jinja2.lexer import Token, TokenStream
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

env = jinja2.Environment(
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


def _folded(locale: str) -> jinja2.Environment:
    overlay = env.overlay(extensions=[FoldLabels])
    overlay.label_locale = locale  # type: ignore[attr-defined]  # read by FoldLabels
    return overlay


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


def render(request: Request, template: str, status_code: int = 200, **context: Any) -> HTMLResponse:
    locale = locale_of(request)

    def t(text: str, **params: Any) -> str:
        if isinstance(text, localize.ApiMessage):  # the API's English, translated by its code
            return localize.localize(text, locale)
        label = translate(text, locale)
        return label.format(**params) if params else label

    html = (
        ENVS[locale]
        .get_template(template)
        .render(
            request=request,
            path=request.url.path,
            query=request.url.query,
            locale=locale,
            locales=LOCALE_NAMES,
            t=t,
            **helpers(locale),
            **context,
        )
    )
    return HTMLResponse(html, status_code=status_code, headers=SECURITY_HEADERS)
