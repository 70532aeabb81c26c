"""structlog configuration: key-value logs to stderr, JSON in production.

Secrets never reach a log line: the settings hold them as ``SecretStr`` and the
processor below drops any key that looks like a credential.

Errors are one line naming the exception class. A traceback is written only at DEBUG level,
and never with the frames' local variables: they hold bearer tokens, client secrets and
personal values, and rendering them (structlog's default with rich installed) cost about a
second of event-loop time per error (issue #20, finding 4).
"""

from __future__ import annotations

import contextlib
import logging
import re
import sys
from collections.abc import MutableMapping
from typing import Any

import structlog

_SECRET_KEYS = ("secret", "password", "token", "authorization", "private_key")
# Set on an exception our error handler has logged, so the server does not render it again.
_LOGGED = "_gbadz_logged"
# The servers whose error logger re-renders an exception the app already answered and logged.
_SERVER_ERROR_LOGGERS = ("uvicorn.error",)
_level = logging.INFO


def _drop_secrets(_: Any, __: str, event_dict: MutableMapping[str, Any]) -> MutableMapping[str, Any]:
    for key in list(event_dict):
        if any(marker in key.lower() for marker in _SECRET_KEYS):
            event_dict[key] = "[redacted]"
    return event_dict


def _traceback_only_when_debugging(
    _: Any, __: str, event_dict: MutableMapping[str, Any]
) -> MutableMapping[str, Any]:
    """Below DEBUG, an ``exc_info`` becomes the exception's class name: one line, no stack."""
    exc_info = event_dict.get("exc_info")
    if exc_info and not debug_enabled():
        del event_dict["exc_info"]
        exc = exc_info if isinstance(exc_info, BaseException) else sys.exc_info()[1]
        if exc is not None:
            event_dict.setdefault("error", type(exc).__name__)
    return event_dict


class _ServerErrors(logging.Filter):
    """The ASGI server's error log: drop what the app already logged; no traceback below DEBUG."""

    def filter(self, record: logging.LogRecord) -> bool:
        exc = record.exc_info[1] if record.exc_info else None
        if exc is None:
            return True
        if getattr(exc, _LOGGED, False):
            return False
        if not debug_enabled():
            record.msg = f"{str(record.msg).strip()} ({type(exc).__name__})"
            record.exc_info, record.exc_text = None, None
        return True


_server_filter = _ServerErrors()

_TICKET = re.compile(r"(/delivery-files/)[^/?#\s]+")
# A console form's token in the address (multipart forms carry it in ``?csrf=``).
_CSRF = re.compile(r"([?&]csrf=)[^&#\s]*", re.IGNORECASE)


class _AccessRedaction(logging.Filter):
    """The access log names a delivery-file URL without its ticket: the ticket is a bearer
    credential for decrypted data until it expires, and its first part names the grant. A
    console form's ``csrf`` query parameter is left out too (it is the session's form token)."""

    def filter(self, record: logging.LogRecord) -> bool:
        args = record.args
        if isinstance(args, tuple) and len(args) >= 3 and isinstance(args[2], str):
            path = args[2]
            if "/delivery-files/" in path:
                path = _TICKET.sub(r"\1[ticket]", path)
            if "csrf=" in path.lower():
                path = _CSRF.sub(r"\1[redacted]", path)
            if path != args[2]:
                record.args = (*args[:2], path, *args[3:])
        return True


_access_filter = _AccessRedaction()


def debug_enabled() -> bool:
    return _level <= logging.DEBUG


def mark_logged(exc: BaseException) -> None:
    """Note that ``exc`` was logged, so the server's error log leaves it out."""
    with contextlib.suppress(AttributeError, TypeError):
        setattr(exc, _LOGGED, True)


def quiet_server_errors() -> None:
    """Install the filters on the ASGI server's error and access loggers (after the server configured logging)."""
    for name in _SERVER_ERROR_LOGGERS:
        logger = logging.getLogger(name)
        if _server_filter not in logger.filters:
            logger.addFilter(_server_filter)
    access = logging.getLogger("uvicorn.access")
    if _access_filter not in access.filters:
        access.addFilter(_access_filter)


def configure(level: str = "INFO", json: bool = False) -> None:
    """Configure structlog and the standard library root logger once per process."""
    global _level
    numeric = logging.getLevelName(level)
    _level = numeric
    renderer: Any = (
        structlog.processors.JSONRenderer()
        if json
        # plain_traceback: the standard library's rendering, which never shows locals.
        else structlog.dev.ConsoleRenderer(colors=False, exception_formatter=structlog.dev.plain_traceback)
    )
    structlog.configure(
        processors=[
            structlog.contextvars.merge_contextvars,
            structlog.processors.add_log_level,
            structlog.processors.TimeStamper(fmt="iso", utc=True),
            _drop_secrets,
            _traceback_only_when_debugging,
            # JSON: the traceback as a plain string (structlog's dict tracebacks include locals).
            *([structlog.processors.format_exc_info] if json else []),
            renderer,
        ],
        wrapper_class=structlog.make_filtering_bound_logger(numeric),
        logger_factory=structlog.PrintLoggerFactory(sys.stderr),
        cache_logger_on_first_use=False,
    )
    logging.basicConfig(level=numeric, stream=sys.stderr, format="%(levelname)s %(name)s: %(message)s")
    quiet_server_errors()


def ensure_configured(level: str = "INFO", json: bool = False) -> None:
    """Configure unless something already did: structlog's own default renders locals."""
    if not structlog.is_configured():
        configure(level, json)


def get_logger(name: str) -> Any:
    return structlog.get_logger(name)
