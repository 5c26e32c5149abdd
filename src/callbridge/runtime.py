"""The wired-up service: what the routes and WebSocket handlers share."""

from __future__ import annotations

import dataclasses

from starlette.requests import HTTPConnection

from callbridge.auth.policy import Security
from callbridge.calls.service import CallService
from callbridge.carrier.telnyx.webhooks import WebhookVerifier
from callbridge.config import Settings
from callbridge.hub.base import Hub
from callbridge.store.base import Store
from callbridge.ws.connections import Connections

__all__ = ["Runtime", "runtime_of", "security_of"]


@dataclasses.dataclass(slots=True)
class Runtime:
    settings: Settings
    store: Store
    hub: Hub
    calls: CallService
    verifier: WebhookVerifier
    simulator: bool = False  # Telnyx is played by the embedded simulator
    # Open sockets, for a drain to close or hand over (see lifecycle.py).
    connections: Connections = dataclasses.field(default_factory=Connections)


def runtime_of(connection: HTTPConnection) -> Runtime:
    runtime: Runtime = connection.app.state.runtime
    return runtime


def security_of(connection: HTTPConnection) -> Security:
    """The service's security policy (keys, tokens, origins, limits), for routes and sockets."""
    security: Security = connection.app.state.security
    return security
