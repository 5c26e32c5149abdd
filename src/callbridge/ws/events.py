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
from callbridge.calls.events import StoredEvent
from callbridge.hub.base import EventSubscription
from callbridge.logs import get_logger
from callbridge.metrics import EVENT_CLIENTS, EVENTS_DELIVERED
from callbridge.runtime import Runtime, runtime_of
from callbridge.ws.close_codes import CloseCode
from callbridge.ws.duplex import until_either_ends

__all__ = ["call_events_endpoint"]

log = get_logger(__name__)
PAGE = 500


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
            await self.websocket.send_text(event.to_json().decode())
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


async def _receive_until_closed(websocket: WebSocket) -> None:
    """Browsers have nothing to say here but `{"type": "ping"}`; anything else gets an error."""
    while True:
        message = await websocket.receive()
        if message["type"] == "websocket.disconnect":
            return
        text = message.get("text")
        try:
            parsed: Any = orjson.loads(text) if text is not None else None
        except orjson.JSONDecodeError:
            parsed = None
        if isinstance(parsed, dict) and parsed.get("type") == "ping":
            await websocket.send_text('{"type":"pong"}')
        else:
            log.info(
                "Unexpected message on call-events", size=len(text or message.get("bytes") or b"")
            )
            await websocket.send_text(
                '{"type":"error","reason":"this socket only accepts {\\"type\\":\\"ping\\"}"}'
            )


async def call_events_endpoint(websocket: WebSocket) -> None:
    runtime = runtime_of(websocket)
    settings = runtime.settings
    log.info("WebSocket upgrade request", path=websocket.url.path)
    try:
        since, epoch, call_ids = _parse_query(websocket)
    except _BadQuery as exc:
        await websocket.accept()
        log.info("call-events request refused", reason=str(exc))
        await websocket.close(CloseCode.BAD_REQUEST, str(exc))
        return
    log.info("Upgrading to call-events WebSocket")
    await websocket.accept()
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
        await until_either_ends(_receive_until_closed(websocket), stream.live(subscription))
    except WebSocketDisconnect:
        pass
    except Exception:
        # Without a close frame the browser would see 1006, the very symptom we exist to end.
        log.exception("call-events handler failed", cursor=stream.cursor)
        with contextlib.suppress(Exception):
            await websocket.close(CloseCode.INTERNAL_ERROR, "internal error; reconnect with since")
    finally:
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
