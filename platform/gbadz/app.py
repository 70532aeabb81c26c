"""The FastAPI application: ``create_app(settings)`` wires lifespan, routes and error handlers."""

from __future__ import annotations

import asyncio
import contextlib
import re
import uuid
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from typing import Any

import anyio
import sqlalchemy.exc
import structlog
from fastapi import FastAPI, Request
from fastapi.encoders import jsonable_encoder
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, RedirectResponse
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from gbadz import __version__, background, db, limits, storage
from gbadz import log as gbadz_log
from gbadz.config import Settings
from gbadz.errors import (
    ConfigurationError,
    DatabaseBusy,
    DatabaseUnavailable,
    ErrorBody,
    GbadzError,
    Problem,
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


class AdmissionMiddleware:
    """At most ``limit`` requests inside the app at once; the rest wait here, first come first served.

    A waiting request costs nothing but its parsed head: no middleware, authentication or
    routing has run for it yet, so the event loop's queue of ready work stays short however
    many connections push requests, and the probes that bypass this (``/healthz``) are
    answered within a few turns of the loop. Before this, a closed loop of 64 connections kept
    64 requests' work queued on the loop and a probe waited behind it (issue #20, finding 3).
    A request that waits longer than ``timeout_s`` is answered 503 with Retry-After.

    A request's body (up to ``max_body_bytes``) is read *before* it takes a slot, within
    ``body_timeout_s`` (408 after): a client trickling a body a byte at a time then holds a
    connection, not one of the few slots everyone shares (16 such clients had every other
    request waiting into 503s). The routes in ``streaming`` (uploads, filed documents) stream
    their bodies to storage and hold their slot while they do; they need a token first.
    """

    def __init__(
        self,
        app: ASGIApp,
        limit: int,
        timeout_s: float,
        exempt: frozenset[str],
        *,
        max_body_bytes: int = 1024 * 1024,
        body_timeout_s: float = 30.0,
        streaming: Sequence[limits.RouteLimit] = (),
    ) -> None:
        self.app = app
        self.limit = limit
        self.timeout_s = timeout_s
        self.exempt = exempt
        self.max_body_bytes = max_body_bytes
        self.body_timeout_s = body_timeout_s
        self.streaming = tuple(streaming)
        self._slots: tuple[asyncio.AbstractEventLoop, anyio.Semaphore] | None = None

    def _buffers(self, scope: Scope) -> bool:
        """Whether this request's body is read before admission (not a streaming route, not declared too large)."""
        headers = dict(scope.get("headers") or [])
        length = headers.get(b"content-length", b"").strip()
        chunked = b"chunked" in headers.get(b"transfer-encoding", b"").lower()
        if not chunked and (not length or length == b"0"):
            return False
        if length and (not length.isdigit() or len(length) > 20 or int(length) > self.max_body_bytes):
            return False  # the body limit answers it at once, without reading
        method, path = scope["method"], scope["path"]
        return not any(method in r.methods and r.path.fullmatch(path) for r in self.streaming)

    async def _read_body(self, receive: Receive) -> list[Message] | None:
        """The request's messages up to the end of its body (or just past ``max_body_bytes``,
        for the body limit to refuse); None if the client disconnected."""
        messages: list[Message] = []
        size = 0
        while True:
            message = await receive()
            messages.append(message)
            if message["type"] != "http.request":
                return None
            size += len(message.get("body", b""))
            if not message.get("more_body", False) or size > self.max_body_bytes:
                return messages

    def _semaphore(self) -> anyio.Semaphore:
        # One per event loop (a test client runs a loop per `with` block).
        loop = asyncio.get_running_loop()
        if self._slots is None or self._slots[0] is not loop:
            self._slots = (loop, anyio.Semaphore(self.limit))
        return self._slots[1]

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["path"] in self.exempt or scope.get(limits.IN_PROCESS):
            # An in-process call runs inside a request that holds a slot: a second slot for it
            # queued it behind the next pages, every slot held by a page waiting (issue #19).
            await self.app(scope, receive, send)
            return
        if self._buffers(scope):
            try:
                with anyio.fail_after(self.body_timeout_s):
                    buffered = await self._read_body(receive)
            except TimeoutError:
                response = JSONResponse(
                    {"error": "RequestTimeout", "detail": "body: not received in time", "request_id": None},
                    status_code=408,
                    headers={"Connection": "close"},
                )
                await response(scope, receive, send)
                return
            if buffered is None:
                return  # the client went away before sending its body
            original = receive

            async def replay() -> Message:
                return buffered.pop(0) if buffered else await original()

            receive = replay
        slots = self._semaphore()
        try:
            with anyio.fail_after(self.timeout_s):
                await slots.acquire()
        except TimeoutError:
            response = JSONResponse(
                {"error": "ServerBusy", "detail": "the server is busy; retry shortly", "request_id": None},
                status_code=503,
                headers={"Retry-After": "1"},
            )
            await response(scope, receive, send)
            return
        try:
            await self.app(scope, receive, send)
        finally:
            slots.release()


def request_id_of(request: Request) -> str | None:
    return getattr(request.state, "request_id", None)


def _body(
    request: Request,
    error: str,
    detail: Any,
    field: str | None = None,
    problems: list[tuple[str, str]] | None = None,
) -> dict[str, Any]:
    listed = [Problem(field=loc, message=msg) for loc, msg in problems] if problems else None
    body = ErrorBody(
        error=error, detail=detail, request_id=request_id_of(request), field=field, problems=listed
    )
    exclude = ({"field"} if field is None else set()) | ({"problems"} if listed is None else set())
    return body.model_dump(exclude=exclude)


def install_error_handlers(app: FastAPI) -> None:
    async def gbadz_error(request: Request, exc: Exception) -> JSONResponse:
        assert isinstance(exc, GbadzError)
        status = exc.status_code
        if status >= 500 and not isinstance(exc, ServiceUnavailable):
            log.error("configuration error", error=exc.error, detail=exc.detail)
        return JSONResponse(
            _body(request, exc.error, exc.detail, exc.field, exc.problems),
            status_code=status,
            headers=exc.headers,
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

    async def pool_exhausted(request: Request, exc: Exception) -> JSONResponse:
        # Every request connection stayed busy for the pool timeout: the server is saturated,
        # not broken. Say so and when to come back (issue #20, finding 3).
        busy = DatabaseBusy(db.POOL_BUSY, headers={"Retry-After": "1"})
        log.warning("database pool exhausted", error=type(exc).__name__, path=request.url.path)
        return await gbadz_error(request, busy)

    async def unexpected_error(request: Request, exc: Exception) -> JSONResponse:
        request_id = request_id_of(request)
        # One line naming the exception class; the traceback only at debug level, and never the
        # frames' local variables (they hold tokens, secrets and personal values). Rendering a
        # traceback with locals cost about a second of event-loop time per error (issue #20,
        # finding 4).
        log.error(
            "unhandled error",
            request_id=request_id,
            path=request.url.path,
            error=type(exc).__name__,
            exc_info=exc,  # dropped below DEBUG by gbadz.log
        )
        gbadz_log.mark_logged(exc)
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
    app.add_exception_handler(sqlalchemy.exc.TimeoutError, pool_exhausted)
    app.add_exception_handler(Exception, unexpected_error)


def readiness(app: FastAPI) -> dict[str, str]:
    """Check the database and S3; raise the first failure with every check's outcome attached."""
    checks: dict[str, str] = {}
    failures: list[str] = []
    try:
        checks["database"] = "ok (schema " + db.check_database(app.state.background_engine) + ")"
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


def _airflow_client(settings: Settings) -> Any:
    """Uploads trigger Airflow (ADR 0026) when the worker mode says so; None otherwise."""
    if settings.ingest.worker_mode != "airflow":
        return None
    if not settings.airflow.configured:
        raise ConfigurationError(
            "GBADZ_INGEST__WORKER_MODE=airflow needs GBADZ_AIRFLOW__URL, GBADZ_AIRFLOW__USERNAME and "
            "GBADZ_AIRFLOW__PASSWORD",
            field="GBADZ_AIRFLOW__URL",
        )
    from gbadz.ingest.airflow import AirflowClient

    return AirflowClient(settings.airflow)


def create_app(settings: Settings) -> FastAPI:
    """Build the API for fully resolved settings (see :func:`gbadz.embedded.resolve_settings`)."""
    gbadz_log.ensure_configured(settings.log_level, settings.log_json)
    engine = db.create_engine(settings.db)
    # The background loops and /readyz use a pool of their own: a burst of requests holding every
    # request connection cannot starve the revocation refresh or the readiness check.
    background_engine = engine if engine.url.database in (None, "", ":memory:") else None
    background_engine = background_engine or db.create_engine(settings.db, background=True)
    s3_client = storage.make_client(settings.s3, retries=1)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        from gbadz.delivery import service as delivery_service

        # Sync routes run in anyio's worker threads; each holds a request connection while it runs.
        anyio.to_thread.current_default_thread_limiter().total_tokens = settings.api.worker_threads
        revocations, index, log_ = (
            app.state.authenticator.revocations,
            app.state.catalog_index,
            app.state.transfer_log,
        )
        background_sessions = app.state.background_sessionmaker
        refreshers = [
            asyncio.create_task(
                background.every(revocations.refresh_s, revocations.load, what="revocation refresh")
            ),
            asyncio.create_task(
                background.every(index.refresh_s, index.check, what="catalog generation check")
            ),
            asyncio.create_task(
                background.every(
                    settings.api.grant_sweep_interval_s,
                    lambda: delivery_service.sweep_ended_grants(
                        background_sessions, app.state.s3, settings, app.state.keys
                    ),
                    what="ended-grant copy deletion",
                    wait_first=True,
                )
            ),
            asyncio.create_task(
                background.every(
                    settings.api.checkpoint_interval_s,
                    lambda: log_.checkpoint_if_grown(background_sessions),
                    what="periodic checkpoint",
                    wait_first=True,
                )
            ),
        ]
        # PostgreSQL: another replica's revocation or catalog change arrives as a notification
        # (milliseconds); the timers above remain the bound if one is lost (ADR 0027).
        listen_url = db.listen_url(background_engine)
        listener = None
        if listen_url is not None:
            listener = background.Listener(
                listen_url,
                {db.REVOCATIONS_CHANNEL: revocations.load, db.CATALOG_CHANNEL: index.invalidate},
            )
            listener.start()
        worker = None
        if settings.ingest.worker:
            from gbadz.ingest.runner import default_dags_folder
            from gbadz.ingest.worker import IngestWorker

            context = trigger = None
            if settings.ingest.worker_mode == "inline":
                from gbadz.ingest.pipeline import IngestContext

                context = IngestContext(settings, app.state.s3, app.state.keys, background_sessions)
            if app.state.airflow is not None:
                from gbadz.ingest.trigger import AirflowTrigger

                trigger = AirflowTrigger(settings, background_sessions, app.state.airflow)
            worker = IngestWorker(settings, background_sessions, default_dags_folder(), context, trigger)
            refreshers.append(
                asyncio.create_task(
                    background.every(settings.ingest.worker_interval_s, worker.drain, what="ingest worker")
                )
            )
        try:
            yield
        finally:
            if listener is not None:
                await asyncio.to_thread(listener.stop)
            if worker is not None:
                worker.stop()
            for refresher in refreshers:
                refresher.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await refresher
            engine.dispose()
            background_engine.dispose()
            if app.state.airflow is not None:
                app.state.airflow.close()

    app = FastAPI(
        title="gbadz",
        version=__version__,
        summary="Greater Bay Area special data zone: catalog, licensed access and cross-boundary transfer log",
        lifespan=lifespan,
        docs_url=None,  # gbadz.apidocs serves /docs from local assets
        redoc_url=None,
    )
    app.state.settings = settings
    app.state.engine = engine
    app.state.sessionmaker = db.make_sessionmaker(engine)
    app.state.background_engine = background_engine
    app.state.background_sessionmaker = db.make_sessionmaker(background_engine)
    app.state.s3 = s3_client
    app.state.airflow = _airflow_client(settings)
    from gbadz.access.routes import MAX_DOCUMENT_BYTES
    from gbadz.console.routes import MAX_DOCUMENT_BYTES as CONSOLE_DOCUMENT_BYTES
    from gbadz.console.routes import MAX_FORM_BYTES

    # Inside the request-id middleware, so a refusal carries the request's id. The console's
    # document form gets 1 MiB of slack for its multipart framing: its route checks the form's
    # token first and then the exact limit.
    streaming = limits.route_limits(
        settings, MAX_DOCUMENT_BYTES, CONSOLE_DOCUMENT_BYTES + MAX_FORM_BYTES + 1024 * 1024
    )
    app.add_middleware(limits.BodyLimit, default=settings.api.max_body_bytes, routes=streaming)
    app.add_middleware(RequestIdMiddleware)
    # Added last, so outermost: a waiting request has had no work done on it yet.
    app.add_middleware(
        AdmissionMiddleware,
        limit=settings.api.max_active_requests,
        timeout_s=settings.api.queue_timeout_s,
        exempt=frozenset({"/healthz"}),
        max_body_bytes=settings.api.max_body_bytes,
        body_timeout_s=settings.api.request_body_timeout_s,
        streaming=streaming,
    )
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
    # The index reads on the background pool (its rebuilds and generation checks are not a
    # request's work); it watches the request sessions' commits.
    app.state.catalog_index = CatalogIndex(app.state.background_sessionmaker)
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
    app.state.authenticator = auth.Authenticator(settings.oauth, tokens, app.state.background_sessionmaker)
    server.on_revocation = app.state.authenticator.revocations.invalidate  # type: ignore[method-assign]
    trusted = oauth.trusted_networks(settings.api.trusted_proxies)
    limiter = oauth.FailureLimiter(app.state.sessionmaker, settings.oauth.failed_auth_window_s)
    app.include_router(oauth_routes.build_router(server, limiter, trusted))
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
    from gbadz.analysis import routes as analysis_routes

    app.include_router(analysis_routes.router)
    from gbadz.compliance import routes as compliance

    app.include_router(compliance.router)
    from gbadz.delivery import sharing_routes

    app.include_router(sharing_routes.router)
    app.include_router(sharing_routes.profile_router)
    from fastapi.staticfiles import StaticFiles

    from gbadz.console import routes as console_routes
    from gbadz.console import signin
    from gbadz.console.web import HERE as CONSOLE_HERE

    signin_limiter = oauth.FailureLimiter(app.state.sessionmaker, settings.console.failed_signin_window_s)
    app.include_router(signin.build_router(server, signin_limiter, settings.console, trusted))
    console_routes.install(app)
    app.mount("/console/static", StaticFiles(directory=CONSOLE_HERE / "static"), name="console-static")

    from gbadz import apidocs

    apidocs.install(app)

    @app.get("/", include_in_schema=False)
    async def root() -> RedirectResponse:
        # A person who opens the server's address lands in the console (issue #19).
        return RedirectResponse("/console/", status_code=307)

    @app.get("/healthz", tags=["ops"], summary="Liveness: the process answers")
    async def healthz() -> dict[str, str]:
        # On the event loop and touching nothing: it answers as long as the loop turns, which is
        # what a liveness probe asks (the loop never waits on the database; issue #20).
        return {"status": "ok"}

    @app.get(
        "/readyz",
        tags=["ops"],
        summary="Readiness: the database answers with a current schema and S3 accepts our credentials",
        responses=error_responses(NotReady),
    )
    async def readyz(request: Request) -> JSONResponse:
        try:
            # A thread of the loop's default executor and the background pool: readiness says
            # whether the database and S3 answer, not how long the request queue is.
            checks = await asyncio.to_thread(readiness, request.app)
        except NotReady as exc:
            body = _body(request, "NotReady", exc.detail) | {"checks": exc.checks}
            return JSONResponse(body, status_code=503)
        return JSONResponse({"status": "ready", "checks": checks})

    return app
