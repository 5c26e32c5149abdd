"""The door of every browser WebSocket: origin, token, scope and connection limits.

A refused socket is accepted and then closed with 44xx and a reason, never failed at the
handshake: a browser cannot read a handshake's HTTP status (it sees 1006), but it can read a
close code, and `callbridge.js` acts on 4401 (fetch a new token) and 4403 (give up).

Tokens come as `?token=` or as a `Sec-WebSocket-Protocol` entry `callbridge.token.<token>`
(which keeps them out of URLs and access logs); the socket answers with the `callbridge`
subprotocol when offered, as browsers require an answer from the offered list.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
from collections.abc import Callable
from typing import Any

import orjson
from starlette.websockets import WebSocket

from callbridge.auth.tokens import Grant, Right, TokenError
from callbridge.logs import get_logger
from callbridge.metrics import REFUSALS
from callbridge.runtime import security_of
from callbridge.ws.close_codes import CloseCode, close_reason

__all__ = ["SUBPROTOCOL", "TOKEN_PROTOCOL_PREFIX", "Admission", "admit"]

log = get_logger(__name__)
SUBPROTOCOL = "callbridge"
TOKEN_PROTOCOL_PREFIX = "callbridge.token."  # noqa: S105 - a prefix, not a secret


class _Refused(Exception):
    def __init__(self, code: CloseCode, kind: str, reason: str) -> None:
        super().__init__(reason)
        self.code = code
        self.kind = kind
        self.reason = reason


@dataclasses.dataclass(slots=True)
class Admission:
    """An admitted socket: its grant (replaced on refresh) and the slots it holds."""

    websocket: WebSocket
    surface: str
    grant: Grant
    _releases: list[Callable[[], None]]
    _timer: asyncio.TimerHandle | None = None
    _closing: asyncio.Task[None] | None = None

    def release(self) -> None:
        for release in self._releases:
            release()
        self._releases.clear()
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None

    def refresh(self, message: dict[str, Any], still_allowed: Callable[[Grant], None]) -> Grant:
        """A new token on an open socket: it must verify and cover what the socket uses."""
        token = message.get("token")
        if not isinstance(token, str) or not token:
            raise TokenError("token message needs a token")
        grant = security_of(self.websocket).tokens.verify(token)
        still_allowed(grant)
        self.grant = grant
        return grant

    async def handle_refresh(
        self, message: dict[str, Any], still_allowed: Callable[[Grant], None]
    ) -> None:
        """Answer a `{"type": "token"}` message; a refused refresh leaves the old token in
        charge (and its expiry)."""
        try:
            grant = self.refresh(message, still_allowed)
        except TokenError as exc:
            REFUSALS.labels(self.surface, "refresh_refused").inc()
            log.info("Token refresh refused", path=self.surface, reason=exc.reason)
            await self.websocket.send_text(
                orjson.dumps({"type": "token.refused", "reason": exc.reason}).decode()
            )
            return
        await self.websocket.send_text(
            orjson.dumps({"type": "token.accepted", "expires_at": int(grant.expires_at)}).decode()
        )

    def watch_expiry(self) -> None:
        """Close the socket with 4401 when its token runs out, unless refreshed in time.

        A timer on the loop, not a task per socket: ten thousand idle browsers cost ten
        thousand timer handles, not ten thousand coroutine stacks."""
        loop = asyncio.get_running_loop()
        remaining = self.grant.remaining()
        if remaining > 0:
            self._timer = loop.call_later(remaining, self.watch_expiry)
            return
        self._timer = None
        REFUSALS.labels(self.surface, "token_expired").inc()
        log.info("Token expired on an open socket", path=self.surface)
        self._closing = loop.create_task(self._close_expired())

    async def _close_expired(self) -> None:
        with contextlib.suppress(Exception):
            await self.websocket.close(
                CloseCode.UNAUTHORIZED, "token expired; reconnect with a fresh token"
            )


def _token_and_protocol(websocket: WebSocket) -> tuple[str | None, str | None]:
    offered: list[str] = list(websocket.scope.get("subprotocols") or [])
    token = websocket.query_params.get("token")
    answer = None
    for protocol in offered:
        if protocol.startswith(TOKEN_PROTOCOL_PREFIX):
            token = token or protocol.removeprefix(TOKEN_PROTOCOL_PREFIX)
            answer = answer or protocol
    if SUBPROTOCOL in offered:
        answer = SUBPROTOCOL
    return token, answer


async def admit(
    websocket: WebSocket,
    surface: str,
    right: Right,
    check: Callable[[Grant], None] | None = None,
) -> Admission | None:
    """Accept the socket and return its Admission, or close it with a reason and return None.

    `check` raises TokenError if the grant does not cover what this socket asks for."""
    security = security_of(websocket)
    token, protocol = _token_and_protocol(websocket)
    releases: list[Callable[[], None]] = []
    try:
        origin = websocket.headers.get("origin")
        if not security.origin_allowed(origin, websocket.headers.get("host")):
            raise _Refused(
                CloseCode.FORBIDDEN, "origin", f"origin {(origin or '')[:60]} is not allowed"
            )
        if not token:
            raise _Refused(
                CloseCode.UNAUTHORIZED,
                "missing_token",
                "a token is required: ?token= or subprotocol callbridge.token.<token>",
            )
        try:
            grant = security.tokens.verify(token)
            grant.require(right)
            if check is not None:
                check(grant)
        except TokenError as exc:
            code = CloseCode.FORBIDDEN if exc.forbidden else CloseCode.UNAUTHORIZED
            raise _Refused(
                code, "forbidden" if exc.forbidden else "bad_token", exc.reason
            ) from None
        address = websocket.client.host if websocket.client else "unknown"
        if not security.per_ip.acquire(address):
            raise _Refused(
                CloseCode.TOO_MANY, "too_many_ip", "too many connections from this address"
            )
        releases.append(lambda: security.per_ip.release(address))
        if not security.per_token.acquire(grant.token_id):
            raise _Refused(
                CloseCode.TOO_MANY, "too_many_token", "too many connections for this token"
            )
        releases.append(lambda: security.per_token.release(grant.token_id))
    except _Refused as refusal:
        for release in releases:
            release()
        REFUSALS.labels(surface, refusal.kind).inc()
        log.info("WebSocket refused", path=surface, code=int(refusal.code), reason=refusal.reason)
        await websocket.accept(subprotocol=protocol)
        await websocket.close(refusal.code, close_reason(refusal.reason))
        return None
    await websocket.accept(subprotocol=protocol)
    admission = Admission(websocket, surface, grant, releases)
    admission.watch_expiry()
    return admission
