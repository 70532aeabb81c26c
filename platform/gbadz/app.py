"""The FastAPI application: ``create_app(settings)`` wires lifespan, routes and error handlers."""

from __future__ import annotations

import asyncio
import contextlib
import re
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import structlog
from fastapi import FastAPI, Request
from fastapi.encoders import jsonable_encoder
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from gbadz import __version__, background, db, storage
from gbadz.config import Settings
from gbadz.errors import (
    ConfigurationError,
    DatabaseUnavailable,
    ErrorBody,
    GbadzError,
    ServiceUnavailable,
    StorageUnavailable,
    error_responses,
)
from gbadz.law.rules import RulesError, RuleSet, default_rules, load_rules
from gbadz.log import get_logger

log = get_logger("gbadz.app")
_REQUEST_ID = re.compile(r"^[A-Za-z0-9._-]{1,64}$")
_HTTP_ERROR_NAMES = {
    400: "BadRequest",
    401: "Unauthorized",
    403: "Forbidden",
    404: "NotFound",
    405: "MethodNotAllowed",
    406: "NotAcceptable",
    409: "Conflict",
    413: "PayloadTooLarge",
    415: "UnsupportedMediaType",
    429: "TooManyRequests",
}


class RequestIdMiddleware:
    """Give every request an id (or keep a sane incoming ``X-Request-ID``) and echo it back."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        incoming = dict(scope.get("headers") or []).get(b"x-request-id", b"").decode("latin-1")
        request_id = incoming if _REQUEST_ID.match(incoming) else uuid.uuid4().hex
        scope.setdefault("state", {})["request_id"] = request_id

        async def send_with_id(message: Message) -> None:
            if message["type"] == "http.response.start":
                message.setdefault("headers", []).append((b"x-request-id", request_id.encode()))
            await send(message)

        with structlog.contextvars.bound_contextvars(request_id=request_id):
            await self.app(scope, receive, send_with_id)


def request_id_of(request: Request) -> str | None:
    return getattr(request.state, "request_id", None)


def _body(request: Request, error: str, detail: Any, field: str | None = None) -> dict[str, Any]:
    body = ErrorBody(error=error, detail=detail, request_id=request_id_of(request), field=field)
    return body.model_dump(exclude={"field"} if field is None else set())


def install_error_handlers(app: FastAPI) -> None:
    async def gbadz_error(request: Request, exc: Exception) -> JSONResponse:
        assert isinstance(exc, GbadzError)
        status = exc.status_code
        if status >= 500 and not isinstance(exc, ServiceUnavailable):
            log.error("configuration error", error=exc.error, detail=exc.detail)
        return JSONResponse(
            _body(request, exc.error, exc.detail, exc.field), status_code=status, headers=exc.headers
        )

    async def validation_error(request: Request, exc: Exception) -> JSONResponse:
        assert isinstance(exc, RequestValidationError)
        # Name the field and the reason; never echo the submitted value back (it may be a secret).
        detail = [
            {"loc": list(err.get("loc", ())), "msg": err.get("msg", ""), "type": err.get("type", "")}
            for err in exc.errors()
        ]
        return JSONResponse(
            jsonable_encoder(_body(request, "RequestValidationError", detail)), status_code=422
        )

    async def http_error(request: Request, exc: Exception) -> JSONResponse:
        assert isinstance(exc, StarletteHTTPException)
        if exc.status_code == 400 and isinstance(exc.__cause__, UnicodeDecodeError):
            # FastAPI answers an undecodable JSON body with a bare 400 no route declares; it is
            # payload validation like any other malformed JSON (found by tests/test_fuzz_api.py).
            detail = [{"loc": ["body"], "msg": "the body is not UTF-8 encoded JSON", "type": "json_invalid"}]
            return JSONResponse(_body(request, "RequestValidationError", detail), status_code=422)
        name = _HTTP_ERROR_NAMES.get(exc.status_code, "HTTPError")
        return JSONResponse(
            _body(request, name, exc.detail), status_code=exc.status_code, headers=exc.headers
        )

    async def unexpected_error(request: Request, exc: Exception) -> JSONResponse:
        request_id = request_id_of(request)
        log.exception("unhandled error", request_id=request_id, path=request.url.path)
        return JSONResponse(
            _body(
                request,
                "InternalServerError",
                "an unexpected error occurred; quote the request_id when reporting it",
            ),
            status_code=500,
            headers={"x-request-id": request_id or ""},
        )

    app.add_exception_handler(GbadzError, gbadz_error)
    app.add_exception_handler(RequestValidationError, validation_error)
    app.add_exception_handler(StarletteHTTPException, http_error)
    app.add_exception_handler(Exception, unexpected_error)


def readiness(app: FastAPI) -> dict[str, str]:
    """Check the database and S3; raise the first failure with every check's outcome attached."""
    checks: dict[str, str] = {}
    failures: list[str] = []
    try:
        checks["database"] = "ok (schema " + db.check_database(app.state.engine) + ")"
    except DatabaseUnavailable as exc:
        checks["database"] = exc.detail
        failures.append(f"database: {exc.detail}")
    try:
        storage.check_storage(app.state.s3, app.state.settings.s3)
        checks["s3"] = "ok"
    except StorageUnavailable as exc:
        checks["s3"] = exc.detail
        failures.append(f"s3: {exc.detail}")
    if failures:
        raise NotReady("; ".join(failures), checks)
    return checks


class NotReady(ServiceUnavailable):
    def __init__(self, detail: str, checks: dict[str, str]) -> None:
        super().__init__(detail)
        self.checks = checks


def transfer_rules(settings: Settings) -> RuleSet:
    """The rules this process decides by: the packaged file, or the reviewed one the settings name."""
    if settings.transfer.rules_file is None:
        return default_rules()
    try:
        return load_rules(settings.transfer.rules_file)
    except (OSError, RulesError) as exc:
        raise ConfigurationError(
            f"GBADZ_TRANSFER__RULES_FILE: {exc}", field="GBADZ_TRANSFER__RULES_FILE"
        ) from None


def create_app(settings: Settings) -> FastAPI:
    """Build the API for fully resolved settings (see :func:`gbadz.embedded.resolve_settings`)."""
    engine = db.create_engine(settings.db)
    s3_client = storage.make_client(settings.s3, retries=1)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        from gbadz.delivery import service as delivery_service

        revocations, index, log_ = (
            app.state.authenticator.revocations,
            app.state.catalog_index,
            app.state.transfer_log,
        )
        refreshers = [
            asyncio.create_task(
                background.every(
                    revocations.refresh_s, revocations.load, what="revocation refresh", in_thread=False
                )
            ),
            asyncio.create_task(
                background.every(
                    index.refresh_s, index.check, what="catalog generation check", in_thread=False
                )
            ),
            asyncio.create_task(
                background.every(
                    settings.api.grant_sweep_interval_s,
                    lambda: delivery_service.sweep_ended_grants(
                        app.state.sessionmaker, app.state.s3, settings
                    ),
                    what="ended-grant copy deletion",
                    wait_first=True,
                )
            ),
            asyncio.create_task(
                background.every(
                    settings.api.checkpoint_interval_s,
                    lambda: log_.checkpoint_if_grown(app.state.sessionmaker),
                    what="periodic checkpoint",
                    wait_first=True,
                )
            ),
        ]
        try:
            yield
        finally:
            for refresher in refreshers:
                refresher.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await refresher
            engine.dispose()

    app = FastAPI(
        title="gbadz",
        version=__version__,
        summary="Greater Bay Area special data zone: catalog, licensed access and cross-boundary transfer log",
        lifespan=lifespan,
    )
    app.state.settings = settings
    app.state.engine = engine
    app.state.sessionmaker = db.make_sessionmaker(engine)
    app.state.s3 = s3_client
    app.add_middleware(RequestIdMiddleware)
    install_error_handlers(app)

    from gbadz.catalog import routes as catalog_routes
    from gbadz.catalog.index import CatalogIndex
    from gbadz.catalog.reads import ReadPath
    from gbadz.catalog.search import CatalogSearch
    from gbadz.crypto.keys import provider_from_settings
    from gbadz.identity import auth, oauth
    from gbadz.identity import routes as access_routes
    from gbadz.identity.oauth import routes as oauth_routes
    from gbadz.identity.service import Viewers
    from gbadz.identity.tokens import TokenService

    app.state.keys = provider_from_settings(settings)
    app.state.rules = transfer_rules(settings)
    app.state.viewers = Viewers()
    app.state.catalog_search = CatalogSearch(engine.dialect.name)
    app.state.catalog_index = CatalogIndex(app.state.sessionmaker)
    app.state.catalog_index.watch(app.state.sessionmaker)
    app.state.catalog_read_path = ReadPath(
        app.state.sessionmaker,
        app.state.viewers,
        app.state.catalog_index if settings.api.catalog_search == "index" else None,
        app.state.catalog_search,
    )
    tokens = TokenService(settings.oauth, app.state.keys)
    server = oauth.GbadzAuthorizationServer(settings.oauth, app.state.sessionmaker, tokens)
    app.state.tokens = tokens
    app.state.authorization_server = server
    app.state.authenticator = auth.Authenticator(settings.oauth, tokens, app.state.sessionmaker)
    server.on_revocation = app.state.authenticator.revocations.invalidate  # type: ignore[method-assign]
    limiter = oauth.FailureLimiter(settings.oauth.failed_auth_limit, settings.oauth.failed_auth_window_s)
    app.include_router(oauth_routes.build_router(server, limiter))
    app.include_router(access_routes.router)
    app.include_router(catalog_routes.router)
    from gbadz.access import routes as request_routes

    app.include_router(request_routes.router)
    from gbadz.delivery import routes as delivery_routes
    from gbadz.translog.log import TransferLog

    app.state.transfer_log = TransferLog(app.state.keys)
    # A reclassified contract suspends the dataset's live grants until each is decided again.
    from gbadz.access.service import suspend_for_reclassification

    app.state.on_reclassified = suspend_for_reclassification
    app.include_router(delivery_routes.router)
    from gbadz.compliance import routes as compliance

    app.include_router(compliance.router)
    from gbadz.delivery import sharing_routes

    app.include_router(sharing_routes.router)
    app.include_router(sharing_routes.profile_router)
    from fastapi.staticfiles import StaticFiles

    from gbadz.console import routes as console_routes
    from gbadz.console import signin
    from gbadz.console.web import HERE as CONSOLE_HERE

    signin_limiter = oauth.FailureLimiter(
        settings.console.failed_signin_limit, settings.console.failed_signin_window_s
    )
    app.include_router(signin.build_router(server, signin_limiter))
    console_routes.install(app)
    app.mount("/console/static", StaticFiles(directory=CONSOLE_HERE / "static"), name="console-static")

    @app.get("/healthz", tags=["ops"], summary="Liveness: the process answers")
    async def healthz() -> dict[str, str]:
        return {"status": "ok"}

    @app.get(
        "/readyz",
        tags=["ops"],
        summary="Readiness: the database answers with a current schema and S3 accepts our credentials",
        responses=error_responses(NotReady),
    )
    async def readyz(request: Request) -> JSONResponse:
        try:
            checks = await run_in_threadpool(readiness, request.app)
        except NotReady as exc:
            body = _body(request, "NotReady", exc.detail) | {"checks": exc.checks}
            return JSONResponse(body, status_code=503)
        return JSONResponse({"status": "ready", "checks": checks})

    return app
