"""Pure transitions: (call as stored, what happened) → (call as it should be, events to log).

They run inside the store's write transaction, so they must not do I/O. Keeping them pure is what
makes duplicate, concurrent and out-of-order webhooks easy to reason about and to test.
"""

from __future__ import annotations

import dataclasses
from datetime import datetime
from typing import Any

from callbridge.calls.carrier import DialRequest, DialResult, StreamTarget
from callbridge.calls.events import STATE_EVENT, CarrierEvent, NewEvent
from callbridge.calls.model import Call, CallState, Direction, StreamState, advance
from callbridge.store.base import Decision

__all__ = [
    "CALL_RECONCILED",
    "MEDIA_DTMF",
    "MEDIA_ERROR",
    "MEDIA_STARTED",
    "MEDIA_STOPPED",
    "on_carrier_event",
    "on_dialed",
    "on_media_ended",
    "on_media_note",
    "on_media_started",
    "on_reconciled_end",
    "on_resume_requested",
    "on_stream_orphaned",
    "on_stream_token",
]

# Events from the media socket itself (the webhooks have their own `streaming.*` names).
MEDIA_STARTED = "media.started"
MEDIA_STOPPED = "media.stopped"
MEDIA_DTMF = "media.dtmf"
MEDIA_ERROR = "media.error"
# A call the carrier says is over, though no webhook told us (it came while no instance ran).
CALL_RECONCILED = "call.reconciled"

_STATE_OF_EVENT = {
    "call.answered": CallState.ANSWERED,
    "streaming.started": CallState.STREAMING,
    "call.hangup": CallState.ENDED,
}
_STREAM_OF_EVENT = {
    "streaming.started": StreamState.ACTIVE,
    "streaming.stopped": StreamState.STOPPED,
    "streaming.failed": StreamState.FAILED,
}


def _state_event(before: Call | None, after: Call, at: datetime, reason: str) -> NewEvent | None:
    """A `call.state` event when the state or the stream changed, else None."""
    if before is not None and (before.state, before.stream) == (after.state, after.stream):
        return None
    payload: dict[str, Any] = {
        "state": after.state.value,
        "previous_state": before.state.value if before else None,
        "stream": after.stream.value,
        "direction": after.direction.value,
        "from": after.from_number,
        "to": after.to_number,
        "reason": reason,
    }
    if after.state is CallState.ENDED:
        payload["hangup_cause"] = after.hangup_cause
    return NewEvent(STATE_EVENT, after.call_control_id, at, payload)


def _with_state_change(
    existing: Call | None, call: Call, event: NewEvent, at: datetime, reason: str
) -> Decision:
    """Store `event`, and a `call.state` after it if the state or the stream changed."""
    state_change = _state_event(existing, call, at, reason)
    return Decision(call, [event] if state_change is None else [event, state_change])


def _fill(call: Call, event: CarrierEvent) -> None:
    """Facts the carrier tells us that we did not know yet."""
    call.call_leg_id = call.call_leg_id or event.call_leg_id
    call.call_session_id = call.call_session_id or event.call_session_id
    call.from_number = call.from_number or event.from_number
    call.to_number = call.to_number or event.to_number
    call.client_state = call.client_state or event.client_state


def _carrier_payload(event: CarrierEvent) -> dict[str, Any]:
    payload = {key: value for key, value in event.details.items() if value is not None}
    if event.type == "call.initiated":
        payload.update(
            direction=event.direction, **{"from": event.from_number, "to": event.to_number}
        )
    return payload


def on_carrier_event(existing: Call | None, event: CarrierEvent) -> Decision:
    """Apply a verified carrier event; state only moves forward and `ended` is final."""
    if existing is None:
        direction = Direction.INCOMING if event.direction == "incoming" else Direction.OUTGOING
        call = Call(event.call_control_id, direction, CallState.DIALING)
    else:
        call = dataclasses.replace(existing)
    _fill(call, event)

    proposed = _STATE_OF_EVENT.get(event.type)
    if event.type == "call.initiated":
        proposed = CallState.RINGING if event.direction == "incoming" else CallState.INITIATED
    if proposed is not None:
        call.state = advance(call.state, proposed)
    if event.type == "call.answered" and call.answered_at is None:
        call.answered_at = event.occurred_at
    if event.type == "call.hangup":
        call.hangup_cause = call.hangup_cause or event.details.get("cause")
        call.hangup_source = call.hangup_source or event.details.get("source")
        call.ended_at = call.ended_at or event.occurred_at

    new_stream = _STREAM_OF_EVENT.get(event.type)
    stream_is_newer = call.stream_updated_at is None or event.occurred_at >= call.stream_updated_at
    if new_stream is not None and stream_is_newer:
        ended = call.state is CallState.ENDED
        # A stream cannot start on a finished call, however late the news of its start arrives.
        if not (ended and new_stream is StreamState.ACTIVE):
            call.stream = new_stream
            call.stream_updated_at = event.occurred_at
    if call.state is CallState.ENDED and call.stream is StreamState.ACTIVE:
        call.stream = StreamState.STOPPED

    return _with_state_change(
        existing,
        call,
        NewEvent(event.type, call.call_control_id, event.occurred_at, _carrier_payload(event)),
        event.occurred_at,
        event.type,
    )


def on_dialed(
    existing: Call | None,
    request: DialRequest,
    result: DialResult,
    token_hash: str,
    now: datetime,
) -> Decision:
    """Record a call we dialed; webhooks may already have told us about it."""
    if existing is None:
        call = Call(
            call_control_id=result.call_control_id,
            direction=Direction.OUTGOING,
            state=CallState.DIALING,
            call_leg_id=result.call_leg_id,
            call_session_id=result.call_session_id,
            from_number=request.from_number,
            to_number=request.to,
            client_state=request.client_state,
            stream_token_hash=token_hash,
            talk_codec=_talk_codec(request.stream),
        )
    else:
        call = dataclasses.replace(
            existing,
            direction=Direction.OUTGOING,
            stream_token_hash=token_hash,
            talk_codec=_talk_codec(request.stream),
            from_number=existing.from_number or request.from_number,
            to_number=existing.to_number or request.to,
            client_state=existing.client_state or request.client_state,
        )
    state_change = _state_event(existing, call, now, "dial")
    return Decision(call, [state_change] if state_change else [])


def on_stream_token(
    existing: Call | None, token_hash: str | None, talk_codec: str | None
) -> Decision:
    """Remember the token the carrier will present when it opens the next media stream, and
    the codec it expects talk-back audio in."""
    if existing is None:
        return Decision(None, [])
    return Decision(
        dataclasses.replace(existing, stream_token_hash=token_hash, talk_codec=talk_codec), []
    )


def _talk_codec(stream: StreamTarget) -> str | None:
    return stream.bidirectional_codec if stream.bidirectional else None


def on_media_started(
    existing: Call | None,
    stream_id: str,
    encoding: str,
    sample_rate: int,
    at: datetime,
    instance: str | None = None,
) -> Decision:
    """A carrier media socket said `start` on `instance`: the stream is live, its format known."""
    if existing is None:
        return Decision(None, [])
    call = dataclasses.replace(
        existing, stream_id=stream_id, stream_encoding=encoding, stream_sample_rate=sample_rate
    )
    if call.state is not CallState.ENDED:
        call.state = advance(call.state, CallState.STREAMING)
        call.stream = StreamState.ACTIVE
        call.stream_updated_at = at
        call.stream_instance = instance
    payload = {"stream_id": stream_id, "encoding": encoding, "sample_rate": sample_rate}
    return _with_state_change(
        existing,
        call,
        NewEvent(MEDIA_STARTED, call.call_control_id, at, payload),
        at,
        MEDIA_STARTED,
    )


def on_media_ended(
    existing: Call | None,
    stream_id: str,
    outcome: StreamState,
    payload: dict[str, Any],
    at: datetime,
    *,
    refused: bool = False,
    keep_instance: bool = False,
) -> Decision:
    """A carrier media socket ended (`stop`, dropped, or `refused` before it started).

    Only the stream the call currently follows changes the stream state: the end of a stream
    that a newer one replaced is recorded but changes nothing. A refused stream (a codec we
    cannot relay) becomes the current one, so the call shows `failed` rather than a stream
    that never delivers. A call that has ended keeps `stopped`; a socket closing after the
    hangup is expected, not lost. `keep_instance`: the stream is lost because its instance is
    stopping, so it stays that instance's, and a live instance asks the carrier for it again.
    """
    if existing is None:
        return Decision(None, [])
    call = dataclasses.replace(existing)
    if refused:
        call.stream_id = stream_id
    current = refused or existing.stream_id == stream_id
    newer_news = existing.stream_updated_at is not None and existing.stream_updated_at > at
    if current and not newer_news and (refused or existing.stream is StreamState.ACTIVE):
        call.stream = StreamState.STOPPED if call.state is CallState.ENDED else outcome
        call.stream_updated_at = at
    if current and not (keep_instance and call.stream is StreamState.LOST):
        call.stream_instance = None
    event_payload = {"stream_id": stream_id, "outcome": outcome.value, **payload}
    return _with_state_change(
        existing,
        call,
        NewEvent(MEDIA_STOPPED, call.call_control_id, at, event_payload),
        at,
        f"{MEDIA_STOPPED}:{outcome.value}",
    )


def on_media_note(
    existing: Call | None, event_type: str, payload: dict[str, Any], at: datetime
) -> Decision:
    """A fact from the media socket (a DTMF digit, a carrier error) that changes no state."""
    if existing is None:
        return Decision(None, [])
    return Decision(existing, [NewEvent(event_type, existing.call_control_id, at, payload)])


def on_stream_orphaned(
    existing: Call | None, holder: str, adopter: str, reason: str, at: datetime
) -> Decision:
    """The instance `holder` is gone (restarted, killed, stopped) with the call's stream.

    An active stream of `holder` is lost, with the `media.stopped` its own handler would have
    stored had it lived; a stream it had already lost is taken over as it is. Either way the
    stream becomes `adopter`'s to resume. Nothing is written when the stream is no longer
    `holder`'s: another instance adopted it first, or a new stream started.
    """
    if (
        existing is None
        or existing.state is CallState.ENDED
        or existing.stream_instance != holder
        or existing.stream not in (StreamState.ACTIVE, StreamState.LOST)
    ):
        return Decision(None, [])
    call = dataclasses.replace(existing, stream_instance=adopter)
    if existing.stream is StreamState.LOST:
        return Decision(call, [])
    call.stream = StreamState.LOST
    call.stream_updated_at = at
    payload = {
        "stream_id": existing.stream_id,
        "outcome": StreamState.LOST.value,
        "reason": reason,
        "instance": holder,
    }
    return _with_state_change(
        existing,
        call,
        NewEvent(MEDIA_STOPPED, call.call_control_id, at, payload),
        at,
        f"{MEDIA_STOPPED}:{StreamState.LOST.value}",
    )


def on_resume_requested(existing: Call | None, holder: str) -> Decision:
    """`holder` dealt with its lost stream (asked for a new one, or found no need): the stream
    is nobody's to resume any more. The new stream, when it starts, names its own instance."""
    if existing is None or existing.stream_instance != holder:
        return Decision(None, [])
    if existing.stream is StreamState.ACTIVE:
        return Decision(None, [])
    return Decision(dataclasses.replace(existing, stream_instance=None), [])


def on_reconciled_end(existing: Call | None, reason: str, at: datetime) -> Decision:
    """The carrier says the call is over, though no webhook said so (it came, and was given
    up, while no instance could take it). The call ends as a hangup would end it."""
    if existing is None or existing.state is CallState.ENDED:
        return Decision(None, [])
    call = dataclasses.replace(existing, state=CallState.ENDED, stream_instance=None)
    call.ended_at = at
    if call.stream is StreamState.ACTIVE:
        call.stream = StreamState.STOPPED
        call.stream_updated_at = at
    return _with_state_change(
        existing,
        call,
        NewEvent(CALL_RECONCILED, call.call_control_id, at, {"outcome": "ended", "reason": reason}),
        at,
        CALL_RECONCILED,
    )
