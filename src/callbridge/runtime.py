"""The wired-up service: what the routes and WebSocket handlers share."""

from __future__ import annotations

import dataclasses

from starlette.requests import HTTPConnection

from callbridge.calls.service import CallService
from callbridge.carrier.telnyx.webhooks import WebhookVerifier
from callbridge.config import Settings
from callbridge.hub.base import Hub
from callbridge.store.base import Store

__all__ = ["Runtime", "runtime_of"]


@dataclasses.dataclass(slots=True)
class Runtime:
    settings: Settings
    store: Store
    hub: Hub
    calls: CallService
    verifier: WebhookVerifier
    simulator: bool = False  # Telnyx is played by the embedded simulator


def runtime_of(connection: HTTPConnection) -> Runtime:
    runtime: Runtime = connection.app.state.runtime
    return runtime
