"""What the console shows in a person's language beyond its own labels (issue #19): the API's
error messages (by their stable codes), ingestion summaries, durations, and the PI/SPI terms of
the law a dataset falls under.

The API answers in English. Its error bodies carry a stable code (``error``: ``DatasetNotFound``;
for a 422, each item's ``type``: ``missing``); the console translates by that code and keeps the
API's English detail beside the translation, since it names the specifics (columns, dates).
"""

from __future__ import annotations

import re
from typing import Any

from markupsafe import Markup

from gbadz.console.i18n import CATALOG

#: The law a dataset falls under decides the Chinese term: Hong Kong's PDPO (Cap. 486) and
#: Macao's Lei n.º 8/2005 say 個人資料; the Mainland's PIPL says 个人信息.
PERSONAL_DATA_LAW = frozenset({"HK", "MO"})


class ApiMessage(str):
    """An API message in English, with the code that picks its translation."""

    code: str

    def __new__(cls, text: str, code: str) -> ApiMessage:
        message = super().__new__(cls, text)
        message.code = code
        return message


def api_message(detail: Any, error: str | None) -> str:
    """The API's detail, tagged with its error code (``error:<Class>``) when there is one."""
    text = str(detail)
    return ApiMessage(text, f"error:{error}") if error else text


def validation_message(item: dict[str, Any]) -> str:
    """One 422 item's message, tagged with its pydantic error type (``validation:<type>``)."""
    return ApiMessage(str(item.get("msg", "invalid")), f"validation:{item.get('type', '')}")


def localize(message: ApiMessage, locale: str) -> str:
    """The message in ``locale``: its translation with the API's English beside it; English as is.

    A message the catalog translates word for word (the admin forms' "must be 12-256 characters")
    is shown translated alone: it has no specifics left for the English to name."""
    whole = CATALOG.get(str(message))
    if whole is not None:
        return whole.get(locale, str(message))
    entry = CATALOG.get(message.code)
    if entry is None and message.code.startswith("validation:"):
        entry = CATALOG["validation:invalid"]
    if locale == "en" or entry is None:
        return str(message)
    return Markup('{} <span class="api-detail" lang="en">({})</span>').format(entry[locale], str(message))


_DURATION = re.compile(r"^P(?:(\d+)Y)?(?:(\d+)M)?(?:(\d+)W)?(?:(\d+)D)?$")
_UNITS = ("year", "month", "week", "day")


def human_duration(value: Any, locale: str) -> str:
    """An ISO 8601 duration (or a number of days) as people write it: P90D or 90 -> "90 days" /
    "90 天" / "90 日"."""
    if value is None or value == "":
        return "—"
    if isinstance(value, int) and not isinstance(value, bool):
        value = f"P{value}D"
    found = _DURATION.match(str(value).strip().upper())
    if found is None or not any(found.groups()):
        return str(value)
    parts = []
    for unit, amount in zip(_UNITS, found.groups(), strict=True):
        if amount is None:
            continue
        n = int(amount)
        key = f"duration:{unit}" if n == 1 else f"duration:{unit}s"
        parts.append(CATALOG[key][locale].format(n=n))
    return " ".join(parts)


def personal_data_term(kind: str, origin: str | None) -> str:
    """The catalog key of a PI/SPI badge in the words of the law the dataset falls under."""
    if kind in {"pi", "spi", "no_pi"} and origin in PERSONAL_DATA_LAW:
        return f"{kind}@HK-MO"
    return kind


# An ingestion run's summary (gbadz.ingest.validate.QualityReport.summary and the pipeline):
# whole-summary shapes, then the phrases inside each failed check; column names and numbers kept.
_WHOLE = (
    (re.compile(r"^(?P<rows>[\d,]+) rows passed (?P<n>\d+) checks$"), "ingest:passed"),
    (re.compile(r"^identical to version (?P<v>\d+); nothing new published$"), "ingest:identical"),
)
_FAILED = re.compile(r"^(?P<k>\d+) of (?P<n>\d+) checks failed: (?P<rest>.*)$", re.DOTALL)
_PHRASES = (
    (re.compile(r"row count must be between (?P<a>\S+) and (?P<b>\S+)"), "ingest:rows-between"),
    (re.compile(r"length must be between (?P<a>\S+) and (?P<b>\S+)"), "ingest:length-between"),
    (re.compile(r"must be between (?P<a>\S+) and (?P<b>\S+)"), "ingest:between"),
    (re.compile(r" ?\((?P<n>[\d,]+) rows\)"), "ingest:rows-affected"),
    (re.compile(r"must not be empty"), "ingest:not-null"),
    (re.compile(r"must be unique"), "ingest:unique"),
    (re.compile(r"must be one of the contract's values"), "ingest:in-set"),
    (re.compile(r"columns must match the contract, in order"), "ingest:column-order"),
    (re.compile(r"missing columns"), "ingest:missing-columns"),
    (re.compile(r"unexpected columns"), "ingest:unexpected-columns"),
    (re.compile(r"the file does not match the contract's types"), "ingest:types"),
    (re.compile(r"the file cannot be read"), "ingest:unreadable"),
    (re.compile(r"the file is refused before it is read in full"), "ingest:too-large"),
    (re.compile(r"must match (?P<regex>\S+)"), "ingest:regex"),
)


def _phrases(text: str, locale: str) -> str:
    for pattern, key in _PHRASES:
        template = CATALOG[key][locale]

        def replaced(found: re.Match[str], template: str = template) -> str:
            return template.format(**found.groupdict())

        text = pattern.sub(replaced, text)
    return text


def ingest_summary(summary: str | None, locale: str) -> str:
    """An ingestion run's summary in ``locale``, the English beside it when anything is left in English."""
    if not summary:
        return "—"
    if locale == "en":
        return summary
    for pattern, key in _WHOLE:
        found = pattern.match(summary)
        if found:
            return str(CATALOG[key][locale].format(**found.groupdict()))
    failed = _FAILED.match(summary)
    if failed is None:
        return summary
    head = CATALOG["ingest:failed"][locale].format(k=failed["k"], n=failed["n"])
    body = "；".join(_phrases(part, locale) for part in failed["rest"].split("; "))
    return Markup('{}{} <span class="api-detail" lang="en">({})</span>').format(head, body, summary)
