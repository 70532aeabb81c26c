"""Rendering for the console and the sign-in page: Jinja2 templates, the language, security headers."""

from __future__ import annotations

from datetime import datetime
from pathlib import Path
from typing import Any
from urllib.parse import quote

import jinja2
from fastapi import Request
from fastapi.responses import HTMLResponse

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


def render(request: Request, template: str, status_code: int = 200, **context: Any) -> HTMLResponse:
    locale = locale_of(request)

    def t(text: str, **params: Any) -> str:
        label = translate(text, locale)
        return label.format(**params) if params else label

    html = env.get_template(template).render(
        request=request,
        path=request.url.path,
        query=request.url.query,
        locale=locale,
        locales=LOCALE_NAMES,
        t=t,
        **context,
    )
    return HTMLResponse(html, status_code=status_code, headers=SECURITY_HEADERS)
