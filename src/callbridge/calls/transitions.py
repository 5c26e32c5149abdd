"""Pure transitions: (call as stored, what happened) → (call as it should be, events to log).

They run inside the store's write transaction, so they must not do I/O. Keeping them pure is what
makes duplicate, concurrent and out-of-order webhooks easy to reason about and to test.
"""

from __future__ import annotations

import dataclasses
from datetime import datetime
from typing import Any

from callbridge.calls.carrier import DialRequest, DialResult
from callbridge.calls.events import STATE_EVENT, CarrierEvent, NewEvent
from callbridge.calls.model import Call, CallState, Direction, StreamState, advance
from callbridge.store.base import Decision

__all__ = ["on_carrier_event", "on_dialed", "on_stream_token"]

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

    events = [
        NewEvent(event.type, call.call_control_id, event.occurred_at, _carrier_payload(event))
    ]
    state_change = _state_event(existing, call, event.occurred_at, event.type)
    if state_change is not None:
        events.append(state_change)
    return Decision(call, events)


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
        )
    else:
        call = dataclasses.replace(
            existing,
            direction=Direction.OUTGOING,
            stream_token_hash=token_hash,
            from_number=existing.from_number or request.from_number,
            to_number=existing.to_number or request.to,
            client_state=existing.client_state or request.client_state,
        )
    state_change = _state_event(existing, call, now, "dial")
    return Decision(call, [state_change] if state_change else [])


def on_stream_token(existing: Call | None, token_hash: str | None) -> Decision:
    """Remember the token the carrier will present when it opens the next media stream."""
    if existing is None:
        return Decision(None, [])
    return Decision(dataclasses.replace(existing, stream_token_hash=token_hash), [])
