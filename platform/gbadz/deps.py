"""Typed dependencies for what :func:`gbadz.app.create_app` builds once per process.

Routes ask for these by type (``settings: AppSettings``, ``rules: Rules``) instead of
reading ``request.app.state``: what a route needs is visible in its signature and checked
by mypy, and ``app.py`` is the only place that knows where the objects live. They are
``async`` on purpose: FastAPI runs a plain ``def`` dependency in its thread pool, a thread
hop per request for an attribute read.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Annotated, Any, cast

from fastapi import Depends, Request
from sqlalchemy.orm import Session, sessionmaker

from gbadz import db
from gbadz.config import Settings
from gbadz.crypto.keys import KeyProvider
from gbadz.law.rules import RuleSet
from gbadz.translog.log import TransferLog

if TYPE_CHECKING:
    from minio import Minio


def _state(request: Request, name: str) -> Any:
    return getattr(request.app.state, name)


async def app_settings(request: Request) -> Settings:
    return cast(Settings, _state(request, "settings"))


async def sessions(request: Request) -> sessionmaker[Session]:
    return cast("sessionmaker[Session]", _state(request, "sessionmaker"))


async def s3(request: Request) -> Minio:
    return cast("Minio", _state(request, "s3"))


async def keys(request: Request) -> KeyProvider:
    return cast(KeyProvider, _state(request, "keys"))


async def rules(request: Request) -> RuleSet:
    return cast(RuleSet, _state(request, "rules"))


async def transfer_log(request: Request) -> TransferLog:
    return cast(TransferLog, _state(request, "transfer_log"))


# scope="function": the commit (and the close) happen when the route function returns, before the
# response is sent, so a failed commit is an error answer, never a success over lost writes.
WriteSession = Annotated[Session, Depends(db.write_session, scope="function")]
ReadSession = Annotated[Session, Depends(db.read_session, scope="function")]
AppSettings = Annotated[Settings, Depends(app_settings)]
Sessions = Annotated["sessionmaker[Session]", Depends(sessions)]
S3 = Annotated["Minio", Depends(s3)]
Keys = Annotated[KeyProvider, Depends(keys)]
Rules = Annotated[RuleSet, Depends(rules)]
Log = Annotated[TransferLog, Depends(transfer_log)]


def _on_reclassified(request: Request) -> Any:
    """What a reclassified contract does to the dataset's live grants (wired by gbadz.app)."""
    return getattr(request.app.state, "on_reclassified", None)


OnReclassified = Annotated[Any, Depends(_on_reclassified)]
