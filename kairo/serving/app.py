"""The FastAPI application: routes, the bearer-token and body-size guard, metrics, and loading in the background.

The model loads in a thread after the server starts listening, so `/health` answers at once and `/ready`
turns 200 when the model is in memory (the Deployment's probes rely on that split).
"""

from __future__ import annotations

import contextlib
import hmac
import logging
import threading
import time
from collections.abc import AsyncIterator, Callable
from typing import Any

from fastapi import FastAPI
from fastapi.responses import JSONResponse, Response
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from kairo import exitcodes
from kairo.serving import admin_routes, kaito_routes, openai_routes, responses_routes
from kairo.serving.errors import error_response, install_handlers
from kairo.serving.metrics import ServerMetrics
from kairo.serving.models import ModelLoadError, ServedModels, load_models
from kairo.serving.options import ServerConfig
from kairo.serving.state import ServerState

log = logging.getLogger("kairo.serve")
OPEN_PATHS = frozenset({"/health", "/ready"})  # probes carry no token


def create_app(config: ServerConfig, load: Callable[[ServerConfig], ServedModels] = load_models,
               on_fatal: Callable[[int], None] | None = None) -> FastAPI:
    """The inference server for `config`; `on_fatal(exit_code)` is called when the model cannot be loaded."""
    state = ServerState(config, ServerMetrics())

    def load_in_background() -> None:
        try:
            state.loaded(load(config))
            return
        except ModelLoadError as err:
            state.failed(str(err))
            code = err.exit_code
        except Exception as err:  # a crash while loading: say what, then stop the server
            log.exception("loading the model failed")
            state.failed(f"{type(err).__name__}: {err}")
            code = exitcodes.FAILED
        log.error("serve: %s", state.load_error)
        if on_fatal is not None:
            on_fatal(code)

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        threading.Thread(target=load_in_background, name="kairo-load", daemon=True).start()
        yield
        state.close()

    app = FastAPI(title="kairo inference", summary="Kaito's /chat and the OpenAI API, with LoRA adapters",
                  lifespan=lifespan)
    app.state.server = state
    install_handlers(app)
    app.include_router(kaito_routes.router)
    app.include_router(openai_routes.router)
    app.include_router(responses_routes.router)
    app.include_router(admin_routes.router)

    @app.api_route("/", methods=["GET", "HEAD"])
    async def home() -> dict[str, str]:
        return {"message": "Server is running"}

    @app.api_route("/health", methods=["GET", "HEAD"])  # HEAD: uptime checkers and `curl -I`
    async def health() -> dict[str, Any]:
        return {"status": "Healthy", **state.served()}  # the served digests: deploy waits for the new one

    @app.api_route("/ready", methods=["GET", "HEAD"])
    async def ready() -> JSONResponse:
        if state.models is not None:
            return JSONResponse({"status": "ready", "models": state.models.names, **state.served()})
        if state.load_error:
            return JSONResponse({"status": "failed", "detail": state.load_error}, status_code=503)
        return JSONResponse({"status": "loading"}, status_code=503)

    @app.get("/metrics")
    async def metrics() -> Response:
        return Response(state.metrics.render(), media_type=state.metrics.content_type)

    app.add_middleware(Guard, state=state)
    return app


class Guard:
    """Counts every request for /metrics, asks for the bearer token, and refuses bodies over the limit."""

    def __init__(self, app: ASGIApp, state: ServerState):
        self.app = app
        self.state = state
        self.key = state.config.api_key.encode()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        path: str = scope["path"]
        started, status = time.monotonic(), 500

        async def send_counted(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            refusal = self._refusal(scope)
            if refusal is not None:
                await refusal(scope, receive, send_counted)
            else:
                await self.app(scope, self._limited(receive), send_counted)
        finally:
            self.state.metrics.observe_request(path, status, time.monotonic() - started)

    def _refusal(self, scope: Scope) -> Response | None:
        path = scope["path"]
        headers = {k.decode("latin-1").lower(): v for k, v in scope.get("headers", [])}
        if self.key and path not in OPEN_PATHS:
            scheme, _, token = headers.get("authorization", b"").decode("latin-1").partition(" ")
            if scheme.lower() != "bearer" or not hmac.compare_digest(token.strip().encode(), self.key):
                return error_response(path, 401, "a valid API key is required: send 'Authorization: Bearer <key>'",
                                      code="invalid_api_key", headers={"WWW-Authenticate": "Bearer"})
        limit = self.state.config.max_body_bytes
        length = headers.get("content-length", b"")
        if length.isdigit() and int(length) > limit:
            return error_response(path, 413, _too_large(limit), code="body_too_large")
        return None

    def _limited(self, receive: Receive) -> Receive:
        """A receive that stops a body sent without Content-Length once it passes the limit."""
        limit, seen = self.state.config.max_body_bytes, 0

        async def receive_limited() -> Message:
            nonlocal seen
            message: dict[str, Any] = dict(await receive())
            if message["type"] == "http.request":
                seen += len(message.get("body", b""))
                if seen > limit:
                    raise StarletteHTTPException(413, _too_large(limit))
            return message

        return receive_limited


def _too_large(limit: int) -> str:
    return f"the request body is over this server's limit of {limit} bytes — send less (--max-body-bytes)"
