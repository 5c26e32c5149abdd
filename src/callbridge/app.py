"""The ASGI application factory: wires settings, store, hub, carrier and routes together."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator

from fastapi import FastAPI
from starlette.middleware.cors import CORSMiddleware

from callbridge import __version__
from callbridge.api import auth as auth_api
from callbridge.api import calls as calls_api
from callbridge.api import health as health_api
from callbridge.api import webhooks as webhooks_api
from callbridge.api.errors import install_error_handlers
from callbridge.auth.policy import InsecureConfiguration, Security
from callbridge.calls.carrier import CallControl
from callbridge.calls.service import CallService, Endpoints
from callbridge.carrier.telnyx.client import TelnyxClient
from callbridge.carrier.telnyx.webhooks import WebhookVerifier
from callbridge.config import Settings
from callbridge.console import app as console
from callbridge.hub.base import open_hub
from callbridge.lifecycle import Lifecycle
from callbridge.logs import get_logger
from callbridge.runtime import Runtime
from callbridge.store.sql import open_store
from callbridge.ws.audio import CARRIER_PATH, FRONTEND_PATH, audio_endpoint
from callbridge.ws.connections import TrackWebSockets
from callbridge.ws.events import call_events_endpoint

__all__ = ["ConfigurationError", "create_app"]

log = get_logger(__name__)


class ConfigurationError(RuntimeError):
    """The settings cannot make a working service; the message says what to set."""


def _carrier(settings: Settings) -> CallControl:
    if settings.telnyx_api_key is None:
        raise ConfigurationError("TELNYX_API_KEY is not set and no simulator was started")
    return TelnyxClient(
        base_url=settings.telnyx_base_url,
        api_key=settings.telnyx_api_key.get_secret_value(),
        connection_id=settings.telnyx_connection_id,
        timeout=settings.telnyx_timeout,
        max_retries=settings.telnyx_max_retries,
    )


def _verifier(settings: Settings) -> WebhookVerifier:
    if not settings.telnyx_public_key:
        raise ConfigurationError(
            "TELNYX_PUBLIC_KEY is not set: webhooks cannot be verified. Copy the public key "
            "from Mission Control (API keys → Public key)."
        )
    try:
        return WebhookVerifier(settings.telnyx_public_key, settings.webhook_tolerance)
    except ValueError as exc:
        raise ConfigurationError(str(exc)) from exc


def create_app(settings: Settings, *, simulator: bool = False) -> FastAPI:
    """Build the service; resources are opened in the lifespan, so import has no side effects.

    `simulator` says that the embedded simulator plays Telnyx (front ends may offer its
    scenarios)."""
    verifier = _verifier(settings)
    lifecycle = Lifecycle(settings)
    try:
        security = Security.from_settings(settings, simulator=simulator)
    except InsecureConfiguration as exc:
        raise ConfigurationError(str(exc)) from exc

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        store = await open_store(settings.database_url)

        async def last_seq() -> int:
            return (await store.head()).last_seq

        hub = open_hub(
            settings.broker_url,
            last_seq=last_seq,
            queue_size=settings.broker_queue_size,
            check_interval=settings.broker_check_interval,
        )
        await hub.start()
        carrier = _carrier(settings)
        calls = CallService(
            store=store,
            hub=hub,
            carrier=carrier,
            endpoints=Endpoints(stream_url=settings.stream_url, webhook_url=settings.webhook_url),
            default_from=settings.default_from,
            auto_answer=settings.auto_answer,
            instance_id=lifecycle.instance_id,
        )
        app.state.runtime = Runtime(settings, store, hub, calls, verifier, simulator)
        head = await store.head()
        log.info(
            "callbridge started",
            version=__version__,
            seq=head.last_seq,
            store=store.dialect,
            broker=settings.broker_url.split("://")[0],
            stream_url=settings.stream_url,
            webhook_url=settings.webhook_url,
            ping_interval=settings.ws_ping_interval,
        )
        app.state.runtime.connections = lifecycle.connections
        await lifecycle.open(app.state.runtime)
        try:
            yield
        finally:
            await lifecycle.close()
            await calls.drain()
            await carrier.close()
            await hub.close()
            await store.close()
            log.info("callbridge stopped")

    app = FastAPI(
        title="callbridge",
        version=__version__,
        summary="Telnyx Call Control to browsers: call events and live audio over WebSockets.",
        lifespan=lifespan,
    )
    app.state.security = security
    if settings.allowed_origins:
        # Pages of the allowed origins may read calls with their token (after a resync) and,
        # with a key, ask for tokens; nothing else crosses origins.
        app.add_middleware(
            CORSMiddleware,
            allow_origins=settings.allowed_origins,
            allow_methods=["GET", "POST"],
            allow_headers=["authorization", "content-type"],
            max_age=600,
        )
    # The server's SIGTERM handling calls lifecycle.drain(), and lifecycle.serving() once it
    # listens (cli.py).
    app.state.lifecycle = lifecycle
    app.add_middleware(
        TrackWebSockets, connections=lifecycle.connections, carrier_path=CARRIER_PATH
    )
    install_error_handlers(app)
    app.include_router(health_api.router)
    app.include_router(auth_api.router)
    app.include_router(calls_api.router)
    app.include_router(webhooks_api.router)
    app.add_api_websocket_route("/call-events", call_events_endpoint)
    app.add_api_websocket_route(CARRIER_PATH, audio_endpoint)
    app.add_api_websocket_route(FRONTEND_PATH, audio_endpoint)
    console.mount(app)
    return app
