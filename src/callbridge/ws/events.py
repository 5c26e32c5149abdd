"""`/call-events`: a welcome, an optional replay from `since`, then live events, in seq order.

Exactly-once, in order: the subscriber keeps a cursor (the last seq it has dealt with). A live
event at or below the cursor is a duplicate and dropped; one beyond `cursor + 1` means something
is missing (published out of order, or the live queue overflowed) and the gap is read from the
store, which has every event. Replay and live use the same rule, so nothing falls between them.
"""

from __future__ import annotations

import contextlib
from typing import Any

import orjson
from starlette.websockets import WebSocket, WebSocketDisconnect

from callbridge import __version__
from callbridge.auth.tokens import Grant, Right, TokenError
from callbridge.calls.events import StoredEvent
from callbridge.hub.base import EventSubscription
from callbridge.logs import get_logger
from callbridge.metrics import EVENT_CLIENTS, EVENTS_DELIVERED, REFUSALS
from callbridge.runtime import Runtime, runtime_of
from callbridge.ws.close_codes import CloseCode, close_reason
from callbridge.ws.duplex import until_either_ends
from callbridge.ws.gate import Admission, admit

__all__ = ["call_events_endpoint"]

log = get_logger(__name__)
PAGE = 500
_ONLY_PING_OR_TOKEN = orjson.dumps(
    {"type": "error", "reason": 'this socket only accepts {"type": "ping"} and {"type": "token"}'}
).decode()


class _BadQuery(ValueError):
    pass


def _parse_query(websocket: WebSocket) -> tuple[int | None, str | None, frozenset[str] | None]:
    params = websocket.query_params
    since: int | None = None
    if "since" in params:
        try:
            since = int(params["since"])
        except ValueError:
            raise _BadQuery("since must be an integer seq") from None
        if since < 0:
            raise _BadQuery("since must not be negative")
    call_ids = frozenset(params.getlist("call_control_id")) or None
    return since, params.get("epoch"), call_ids


class _EventStream:
    """One client's position in the event log, and the rule that keeps it gap-free."""

    def __init__(self, websocket: WebSocket, runtime: Runtime, call_ids: frozenset[str] | None):
        self.websocket = websocket
        self.runtime = runtime
        self.call_ids = call_ids
        self.cursor = 0

    async def _send(self, event: StoredEvent, via: str) -> None:
        if self.call_ids is None or event.call_control_id in self.call_ids:
            await self.websocket.send_text(event.to_text())
            EVENTS_DELIVERED.labels(via).inc()

    async def catch_up(self, up_to: int | None, via: str) -> int:
        """Send stored events after the cursor (up to `up_to`); return how many were sent."""
        sent = 0
        while True:
            page = await self.runtime.store.events_after(
                self.cursor, up_to=up_to, call_ids=self.call_ids, limit=PAGE
            )
            for event in page:
                await self._send(event, via)
                self.cursor = event.seq
                sent += 1
            if len(page) < PAGE:
                break
        if up_to is not None:
            self.cursor = max(self.cursor, up_to)
        return sent

    async def live(self, subscription: EventSubscription) -> None:
        while True:
            if subscription.lagged and subscription.queue.empty():
                subscription.lagged = False
                head = await self.runtime.store.head()
                await self.catch_up(head.last_seq, "catchup")
            event = await subscription.get()
            if event is None:  # the hub says events may have been lost: catch up (above)
                continue
            if event.seq <= self.cursor:
                continue
            if event.seq > self.cursor + 1:
                await self.catch_up(event.seq - 1, "catchup")
            await self._send(event, "live")
            self.cursor = event.seq


async def _receive_until_closed(
    websocket: WebSocket, admission: Admission, stream: _EventStream, max_bytes: int
) -> None:
    """Browsers say `{"type": "ping"}` or refresh their token; anything else gets an error."""
    while True:
        message = await websocket.receive()
        if message["type"] == "websocket.disconnect":
            return
        text = message.get("text")
        size = len(text or message.get("bytes") or b"")
        if size > max_bytes:
            REFUSALS.labels("call-events", "too_big").inc()
            log.info("Oversized message on call-events", size=size, limit=max_bytes)
            await websocket.close(
                CloseCode.TOO_BIG, close_reason(f"messages here are at most {max_bytes} bytes")
            )
            return
        try:
            parsed: Any = orjson.loads(text) if text is not None else None
        except orjson.JSONDecodeError:
            parsed = None
        kind = parsed.get("type") if isinstance(parsed, dict) else None
        if kind == "ping":
            await websocket.send_text('{"type":"pong"}')
        elif kind == "token":
            assert isinstance(parsed, dict)
            await admission.handle_refresh(parsed, lambda grant: _covers(grant, stream.call_ids))
        else:
            log.info("Unexpected message on call-events", size=size)
            await websocket.send_text(_ONLY_PING_OR_TOKEN)


def _covers(grant: Grant, call_ids: frozenset[str] | None) -> None:
    """The token must allow events on every call this socket follows."""
    grant.require(Right.EVENTS)
    if grant.calls is None:
        return
    if call_ids is None:
        raise TokenError(
            "token covers only some calls: name them with call_control_id", forbidden=True
        )
    if not call_ids <= grant.calls:
        raise TokenError("token does not cover every call_control_id asked for", forbidden=True)


async def call_events_endpoint(websocket: WebSocket) -> None:
    runtime = runtime_of(websocket)
    settings = runtime.settings
    log.info("WebSocket upgrade request", path=websocket.url.path)
    bad_query: str | None = None
    since, epoch, call_ids = None, None, None
    try:
        since, epoch, call_ids = _parse_query(websocket)
    except _BadQuery as exc:
        bad_query = str(exc)

    def check(grant: Grant) -> None:
        nonlocal call_ids
        if grant.calls is not None and call_ids is None:
            call_ids = grant.calls  # a token for some calls sees only those
        _covers(grant, call_ids)

    log.info("Upgrading to call-events WebSocket")
    admission = await admit(websocket, "call-events", Right.EVENTS, check)
    if admission is None:
        return
    if bad_query is not None:
        admission.release()
        log.info("call-events request refused", reason=bad_query)
        await websocket.close(CloseCode.BAD_REQUEST, bad_query)
        return
    log.info("New client connected to call events WebSocket")
    EVENT_CLIENTS.inc()
    # Subscribe before reading the head: anything committed later is then surely queued.
    subscription = runtime.hub.subscribe_events(settings.events_queue_size)
    stream = _EventStream(websocket, runtime, call_ids)
    try:
        head = await runtime.store.head()
        await websocket.send_text(
            orjson.dumps(
                {
                    "type": "welcome",
                    "message": "Connected to callbridge call events",
                    "version": __version__,
                    "seq": head.last_seq,
                    "epoch": head.epoch,
                    "ping_interval": settings.ws_ping_interval,
                    "filter": sorted(call_ids) if call_ids else None,
                    "token_expires_at": int(admission.grant.expires_at),
                }
            ).decode()
        )
        log.info("Welcome message sent to client", seq=head.last_seq)
        stream.cursor = head.last_seq
        if since is not None:
            reason = _resync_reason(
                since, epoch, head.epoch, head.last_seq, head.first_seq, settings.events_replay_max
            )
            if reason:
                await websocket.send_text(
                    orjson.dumps(
                        {"type": "resync", "reason": reason, "seq": head.last_seq}
                    ).decode()
                )
            else:
                stream.cursor = since
                count = await stream.catch_up(head.last_seq, "replay")
                await websocket.send_text(
                    orjson.dumps(
                        {"type": "replayed", "from": since, "to": head.last_seq, "count": count}
                    ).decode()
                )
        await until_either_ends(
            _receive_until_closed(websocket, admission, stream, settings.events_max_message_bytes),
            stream.live(subscription),
        )
    except WebSocketDisconnect:
        pass
    except Exception:
        # Without a close frame the browser would see 1006, the very symptom we exist to end.
        log.exception("call-events handler failed", cursor=stream.cursor)
        with contextlib.suppress(Exception):
            await websocket.close(CloseCode.INTERNAL_ERROR, "internal error; reconnect with since")
    finally:
        admission.release()
        runtime.hub.unsubscribe_events(subscription)
        EVENT_CLIENTS.dec()
        log.info("Client left call events WebSocket", cursor=stream.cursor)


def _resync_reason(
    since: int, epoch: str | None, current_epoch: str, last: int, first: int, replay_max: int
) -> str | None:
    """Why a resume from `since` cannot be served exactly, or None if it can."""
    if epoch is not None and epoch != current_epoch:
        return "epoch_changed: the event log was reset; refetch GET /api/calls"
    if since > last:
        return "seq_ahead: since is beyond the newest event; refetch GET /api/calls"
    if last - since > replay_max:
        return f"too_far_behind: more than {replay_max} events missed; refetch GET /api/calls"
    if since < first - 1:
        return "expired: those events are no longer kept; refetch GET /api/calls"
    return None
