"""Test helpers: Telnyx-shaped webhooks, and a /call-events client that waits on messages."""

from __future__ import annotations

import asyncio
import enum
import uuid
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any
from urllib.parse import urlencode

import httpx
import orjson
from websockets.asyncio.client import ClientConnection, connect

from callbridge.sim import WebhookSigner
from tests.conftest import mint_token

WAIT = 15.0


class _Default(enum.Enum):
    FULL_TOKEN = "a fresh token for every call with every right"


FULL_TOKEN = _Default.FULL_TOKEN  # the default of every `token=` below
Token = str | _Default | None  # None: no token at all


def with_token(target: str, token: Token = FULL_TOKEN) -> str:
    """`target` (a query "", "?a=b", or a path with or without one) with `token=` appended;
    `token=None` leaves it without one."""
    if token is FULL_TOKEN:
        token = mint_token()
    if token is None:
        return target
    return f"{target}{'&' if '?' in target else '?'}{urlencode({'token': token})}"


def webhook(event_type: str, call_control_id: str, **payload: Any) -> dict[str, Any]:
    """A Telnyx v2 webhook envelope, as Telnyx sends it."""
    body: dict[str, Any] = {
        "call_control_id": call_control_id,
        "call_leg_id": str(uuid.uuid4()),
        "call_session_id": str(uuid.uuid4()),
        "connection_id": "test-connection",
        "client_state": None,
        "from": "+15550101111",
        "to": "+15550102222",
        **payload,
    }
    return {
        "data": {
            "record_type": "event",
            "event_type": event_type,
            "id": str(uuid.uuid4()),
            "occurred_at": payload.pop("occurred_at", None)
            or datetime.now(UTC).isoformat().replace("+00:00", "Z"),
            "payload": body,
        },
        "meta": {"attempt": 1, "delivered_to": "http://test/api/webhooks/telnyx"},
    }


def post_webhook(
    api: httpx.Client,
    signer: WebhookSigner,
    document: dict[str, Any] | bytes,
    *,
    timestamp: int | None = None,
    headers: dict[str, str] | None = None,
) -> httpx.Response:
    body = document if isinstance(document, bytes) else orjson.dumps(document)
    sent = signer.headers(body, timestamp) if headers is None else headers
    return api.post("/api/webhooks/telnyx", content=body, headers=sent)


def new_call_id() -> str:
    return "v3:test-" + uuid.uuid4().hex


class EventsClient:
    """A /call-events connection whose messages the test awaits by predicate."""

    def __init__(self, connection: ClientConnection) -> None:
        self.connection = connection
        self.received: list[dict[str, Any]] = []

    @classmethod
    async def open(cls, ws_url: str, query: str = "", token: Token = FULL_TOKEN) -> EventsClient:
        """Connect with `token` (default: a full-rights one; None: no token at all)."""
        url = f"{ws_url}/call-events{with_token(query, token)}"
        connection = await connect(url, open_timeout=WAIT)
        return cls(connection)

    async def next(self, timeout: float = WAIT) -> dict[str, Any]:
        raw = await asyncio.wait_for(self.connection.recv(), timeout)
        message: dict[str, Any] = orjson.loads(raw)
        self.received.append(message)
        return message

    async def until(
        self, predicate: Callable[[dict[str, Any]], bool], timeout: float = WAIT
    ) -> dict[str, Any]:
        async with asyncio.timeout(timeout):
            while True:
                message = await self.next(timeout)
                if predicate(message):
                    return message

    def events(self) -> list[dict[str, Any]]:
        return [m for m in self.received if "seq" in m and m.get("type") != "welcome"]

    async def close(self) -> None:
        await self.connection.close()

    async def __aenter__(self) -> EventsClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()


def call_state_is(call_control_id: str, state: str) -> Callable[[dict[str, Any]], bool]:
    return lambda m: (
        m.get("type") == "call.state"
        and m.get("call_control_id") == call_control_id
        and m["payload"]["state"] == state
    )
