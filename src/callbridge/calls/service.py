"""Call use-cases: dial, answer, hang up, start/stop streaming, and ingest carrier events.

Every change goes the same way: a pure transition runs in the store's transaction, the store
numbers the resulting events, and only then are they published on the hub.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import hashlib
import secrets
import uuid
from collections.abc import AsyncIterator, Collection, Coroutine
from datetime import UTC, datetime
from typing import Any

from callbridge.calls.carrier import (
    CallAlreadyEnded,
    CallControl,
    DialRequest,
    StreamTarget,
)
from callbridge.calls.events import STATE_EVENT, CarrierEvent, StoredEvent
from callbridge.calls.model import Call, CallState, Direction, StreamState
from callbridge.calls.transitions import (
    MEDIA_DTMF,
    MEDIA_ERROR,
    on_carrier_event,
    on_dialed,
    on_media_ended,
    on_media_note,
    on_media_started,
    on_stream_token,
)
from callbridge.hub.base import Hub
from callbridge.hub.live import StreamNotice
from callbridge.logs import get_logger
from callbridge.metrics import EVENTS_STORED
from callbridge.store.base import Applied, Decide, Store

__all__ = [
    "CallEnded",
    "CallNotFound",
    "CallService",
    "DialOptions",
    "NotAnswerable",
    "hash_token",
]

log = get_logger(__name__)


class CallNotFound(LookupError):
    """No call with that call_control_id is known."""


class CallEnded(RuntimeError):
    """The command needs a live call and this one has ended."""


class NotAnswerable(RuntimeError):
    """Only an inbound call that is still ringing can be answered."""


def hash_token(token: str) -> str:
    """Only hashes of stream tokens are stored: a leaked database opens no media socket."""
    return hashlib.sha256(token.encode()).hexdigest()


@dataclasses.dataclass(frozen=True, slots=True)
class DialOptions:
    to: str
    from_number: str | None = None
    stream_track: str = "both_tracks"
    bidirectional: bool = True
    codec: str | None = None
    client_state: str | None = None
    timeout_secs: int | None = None


@dataclasses.dataclass(frozen=True, slots=True)
class Endpoints:
    """The public URLs the carrier is given for this deployment."""

    stream_url: str
    webhook_url: str


class CallService:
    def __init__(
        self,
        *,
        store: Store,
        hub: Hub,
        carrier: CallControl,
        endpoints: Endpoints,
        default_from: str,
        auto_answer: bool,
        instance_id: str = "local",
    ) -> None:
        self.store = store
        self.hub = hub
        self.carrier = carrier
        self.endpoints = endpoints
        self.default_from = default_from
        self.auto_answer = auto_answer
        self.instance_id = instance_id  # recorded as the holder of the streams started here
        self._background: set[asyncio.Task[None]] = set()

    async def _publish(self, applied: Applied | None) -> Applied | None:
        if applied is None:
            return None
        for event in applied.events:
            EVENTS_STORED.labels(event.type).inc()
            await self.hub.publish_event(event)
            if event.type == STATE_EVENT and event.payload.get("state") == CallState.ENDED:
                # Listeners of the call's audio hear it from the audio channel itself.
                self.hub.publish_audio(
                    event.call_control_id,
                    StreamNotice(
                        "call.ended",
                        {"reason": "call_ended", "hangup_cause": event.payload.get("hangup_cause")},
                    ),
                )
        return applied

    def _new_stream(
        self, track: str = "both_tracks", bidirectional: bool = True, codec: str | None = None
    ) -> tuple[StreamTarget, str]:
        token = secrets.token_urlsafe(32)
        target = StreamTarget(
            url=self.endpoints.stream_url,
            auth_token=token,
            track=track,
            bidirectional=bidirectional,
            codec=codec,
        )
        return target, hash_token(token)

    async def require(self, call_control_id: str) -> Call:
        call = await self.store.get_call(call_control_id)
        if call is None:
            raise CallNotFound(call_control_id)
        return call

    # --- commands ---------------------------------------------------------------------------

    async def dial(self, options: DialOptions) -> Call:
        stream, token_hash = self._new_stream(
            options.stream_track, options.bidirectional, options.codec
        )
        request = DialRequest(
            to=options.to,
            from_number=options.from_number or self.default_from,
            stream=stream,
            webhook_url=self.endpoints.webhook_url,
            command_id=str(uuid.uuid4()),
            client_state=options.client_state,
            timeout_secs=options.timeout_secs,
        )
        result = await self.carrier.dial(request)
        now = datetime.now(UTC)
        applied = await self._publish(
            await self.store.apply(
                None,
                result.call_control_id,
                lambda existing: on_dialed(existing, request, result, token_hash, now),
            )
        )
        assert applied is not None
        assert applied.call is not None
        log.info("Call dialed", call_control_id=result.call_control_id, to=options.to)
        return applied.call

    @contextlib.asynccontextmanager
    async def _stream_token(
        self, call: Call, stream: StreamTarget, token_hash: str
    ) -> AsyncIterator[None]:
        """Store the next stream's token before asking the carrier; put the old one back if
        the carrier refuses, so a failed command does not orphan the stream that is running."""
        call_id = call.call_control_id
        talk_codec = stream.bidirectional_codec if stream.bidirectional else None
        await self.store.apply(None, call_id, lambda c: on_stream_token(c, token_hash, talk_codec))
        try:
            yield
        except BaseException:
            previous, previous_codec = call.stream_token_hash, call.talk_codec
            await self.store.apply(
                None, call_id, lambda c: on_stream_token(c, previous, previous_codec)
            )
            raise

    async def answer(self, call_control_id: str) -> Call:
        call = await self.require(call_control_id)
        if call.state is CallState.ENDED:
            raise CallEnded(call_control_id)
        if call.direction is not Direction.INCOMING or call.state is not CallState.RINGING:
            raise NotAnswerable(call_control_id)
        stream, token_hash = self._new_stream()
        async with self._stream_token(call, stream, token_hash):
            await self.carrier.answer(
                call_control_id,
                stream=stream,
                webhook_url=self.endpoints.webhook_url,
                command_id=str(uuid.uuid4()),
            )
        log.info("Call answered", call_control_id=call_control_id)
        return await self.require(call_control_id)

    async def hangup(self, call_control_id: str) -> Call:
        """Idempotent: an ended call, or one Telnyx says has ended, is simply returned."""
        call = await self.require(call_control_id)
        if call.state is CallState.ENDED:
            return call
        try:
            await self.carrier.hangup(call_control_id, command_id=str(uuid.uuid4()))
        except CallAlreadyEnded:
            log.info("Hangup of a call Telnyx says has ended", call_control_id=call_control_id)
        return await self.require(call_control_id)

    async def start_streaming(self, call_control_id: str, *, as_before: bool = False) -> Call:
        """Ask the carrier to stream the call (again) to us. `as_before`: in the codec, and with
        the talk-back, of the stream that ran (a handover, a stream lost with its instance), so
        that listeners keep the format they had."""
        call = await self.require(call_control_id)
        if call.state is CallState.ENDED:
            raise CallEnded(call_control_id)
        if as_before:
            bidirectional = call.talk_codec is not None
            stream, token_hash = self._new_stream(
                bidirectional=bidirectional, codec=call.stream_encoding
            )
        else:
            stream, token_hash = self._new_stream()
        async with self._stream_token(call, stream, token_hash):
            await self.carrier.start_streaming(
                call_control_id, stream=stream, command_id=str(uuid.uuid4())
            )
        return await self.require(call_control_id)

    async def stop_streaming(self, call_control_id: str) -> Call:
        call = await self.require(call_control_id)
        if call.state is CallState.ENDED:
            raise CallEnded(call_control_id)
        await self.carrier.stop_streaming(call_control_id, command_id=str(uuid.uuid4()))
        return await self.require(call_control_id)

    # --- carrier events ---------------------------------------------------------------------

    async def ingest(self, event: CarrierEvent) -> list[StoredEvent] | None:
        """Store and publish a verified carrier event; None if it was a duplicate."""
        applied = await self._publish(
            await self.store.apply(
                event.event_id, event.call_control_id, lambda c: on_carrier_event(c, event)
            )
        )
        if applied is None:
            return None
        call = applied.call
        if (
            self.auto_answer
            and event.type == "call.initiated"
            and event.direction == "incoming"
            and call is not None
            and call.state is CallState.RINGING
        ):
            self._spawn(self._auto_answer(event.call_control_id))
        return applied.events

    # --- the carrier's media socket ---------------------------------------------------------

    async def media_started(
        self, call_control_id: str, stream_id: str, encoding: str, sample_rate: int
    ) -> Call | None:
        """Record a media stream that said `start`; the call as it now stands."""
        now = datetime.now(UTC)
        applied = await self._publish(
            await self.store.apply(
                None,
                call_control_id,
                lambda c: on_media_started(
                    c, stream_id, encoding, sample_rate, now, self.instance_id
                ),
            )
        )
        return applied.call if applied else None

    async def media_ended(
        self,
        call_control_id: str,
        stream_id: str,
        outcome: StreamState,
        details: dict[str, Any],
        *,
        refused: bool = False,
        keep_instance: bool = False,
    ) -> None:
        """Record how a media stream ended, so no call stays `streaming` after its socket.
        `keep_instance`: lost because this instance stops; a live one will ask for it again."""
        now = datetime.now(UTC)
        await self._publish(
            await self.store.apply(
                None,
                call_control_id,
                lambda c: on_media_ended(
                    c,
                    stream_id,
                    outcome,
                    details,
                    now,
                    refused=refused,
                    keep_instance=keep_instance,
                ),
            )
        )

    async def record(self, call_control_id: str, decide: Decide) -> Applied | None:
        """Apply a transition that has no carrier event id (recovery), then publish it."""
        return await self._publish(await self.store.apply(None, call_control_id, decide))

    async def media_dtmf(self, call_control_id: str, stream_id: str, digit: str) -> None:
        await self._media_note(
            call_control_id, MEDIA_DTMF, {"stream_id": stream_id, "digit": digit}
        )

    async def media_error(self, call_control_id: str, details: dict[str, Any]) -> None:
        await self._media_note(call_control_id, MEDIA_ERROR, details)

    async def _media_note(self, call_control_id: str, kind: str, payload: dict[str, Any]) -> None:
        now = datetime.now(UTC)
        await self._publish(
            await self.store.apply(
                None, call_control_id, lambda c: on_media_note(c, kind, payload, now)
            )
        )

    async def _auto_answer(self, call_control_id: str) -> None:
        try:
            await self.answer(call_control_id)
        except Exception as exc:  # logged once; the call stays ringing for a manual answer
            log.warning("Auto-answer failed", call_control_id=call_control_id, error=str(exc))

    def _spawn(self, coroutine: Coroutine[Any, Any, None]) -> None:
        task = asyncio.get_running_loop().create_task(coroutine)
        self._background.add(task)
        task.add_done_callback(self._background.discard)

    async def drain(self) -> None:
        """Wait for background commands (auto-answers) before shutting down."""
        if self._background:
            await asyncio.gather(*self._background, return_exceptions=True)

    # --- queries ----------------------------------------------------------------------------

    async def list_calls(
        self,
        states: Collection[str] | None,
        limit: int,
        offset: int,
        call_ids: Collection[str] | None = None,
    ) -> tuple[list[Call], int]:
        return await self.store.list_calls(
            states=states, limit=limit, offset=offset, call_ids=call_ids
        )

    async def events(self, call_control_id: str) -> list[StoredEvent]:
        await self.require(call_control_id)
        return await self.store.call_events(call_control_id)
