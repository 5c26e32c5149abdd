"""The pure state machine: forward only, terminal wins, newer stream news wins."""

from __future__ import annotations

import itertools
from datetime import UTC, datetime, timedelta

import pytest

from callbridge.calls.events import CarrierEvent
from callbridge.calls.model import Call, CallState, Direction, StreamState, advance
from callbridge.calls.transitions import (
    MEDIA_DTMF,
    MEDIA_STARTED,
    MEDIA_STOPPED,
    on_carrier_event,
    on_media_ended,
    on_media_note,
    on_media_started,
)

T0 = datetime(2026, 1, 1, tzinfo=UTC)
ORDER = [
    CallState.DIALING,
    CallState.INITIATED,
    CallState.ANSWERED,
    CallState.STREAMING,
    CallState.ENDED,
]


def _event(kind: str, second: int, **details: str) -> CarrierEvent:
    return CarrierEvent(
        event_id=f"{kind}-{second}",
        type=kind,
        occurred_at=T0 + timedelta(seconds=second),
        call_control_id="v3:c",
        direction="outgoing",
        details=dict(details),
    )


@pytest.mark.parametrize(("current", "proposed"), list(itertools.product(ORDER, ORDER)))
def test_advance_never_moves_backwards(current: CallState, proposed: CallState) -> None:
    result = advance(current, proposed)
    if current is CallState.ENDED:
        assert result is CallState.ENDED
    else:
        assert ORDER.index(result) == max(ORDER.index(current), ORDER.index(proposed))


def _replay(events: list[CarrierEvent]) -> Call | None:
    call: Call | None = None
    for event in events:
        call = on_carrier_event(call, event).call
    return call


NORMAL = [
    _event("call.initiated", 1),
    _event("call.answered", 2),
    _event("streaming.started", 3),
    _event("streaming.stopped", 8),
    _event("call.hangup", 9, cause="normal_clearing", source="callee"),
]


@pytest.mark.parametrize("order", list(itertools.permutations(range(len(NORMAL)))))
def test_any_delivery_order_ends_in_the_same_call(order: tuple[int, ...]) -> None:
    call = _replay([NORMAL[i] for i in order])
    assert call is not None
    assert call.state is CallState.ENDED
    assert call.stream is StreamState.STOPPED
    assert call.hangup_cause == "normal_clearing"
    assert call.answered_at == T0 + timedelta(seconds=2)
    assert call.ended_at == T0 + timedelta(seconds=9)


def test_state_event_only_when_something_changed() -> None:
    first = on_carrier_event(None, _event("call.initiated", 1))
    assert [e.type for e in first.events] == ["call.initiated", "call.state"]
    dtmf = on_carrier_event(first.call, _event("call.dtmf.received", 2, digit="5"))
    assert [e.type for e in dtmf.events] == ["call.dtmf.received"]
    assert dtmf.events[0].payload == {"digit": "5"}


def test_inbound_call_initiated_is_ringing() -> None:
    event = CarrierEvent("e", "call.initiated", T0, "v3:in", direction="incoming")
    decision = on_carrier_event(None, event)
    assert decision.call is not None
    assert decision.call.state is CallState.RINGING
    assert decision.events[-1].payload["previous_state"] is None


def _answered() -> Call:
    return Call("v3:c", Direction.OUTGOING, CallState.ANSWERED)


def test_media_start_makes_the_stream_active_and_records_its_format() -> None:
    decision = on_media_started(_answered(), "s1", "PCMA", 8000, T0)
    assert decision.call is not None
    assert (decision.call.state, decision.call.stream) == (CallState.STREAMING, StreamState.ACTIVE)
    assert (decision.call.stream_id, decision.call.stream_encoding) == ("s1", "PCMA")
    assert [e.type for e in decision.events] == [MEDIA_STARTED, "call.state"]


def test_the_end_of_a_replaced_stream_changes_nothing() -> None:
    first = on_media_started(_answered(), "old", "PCMU", 8000, T0).call
    assert first is not None
    second = on_media_started(first, "new", "PCMU", 8000, T0 + timedelta(seconds=1)).call
    assert second is not None
    later = T0 + timedelta(seconds=2)
    decision = on_media_ended(second, "old", StreamState.LOST, {}, later)
    assert decision.call is not None
    assert decision.call.stream is StreamState.ACTIVE
    assert [e.type for e in decision.events] == [MEDIA_STOPPED]
    lost = on_media_ended(second, "new", StreamState.LOST, {}, later).call
    assert lost is not None
    assert lost.stream is StreamState.LOST


def test_a_socket_closing_after_the_hangup_is_stopped_not_lost() -> None:
    streaming = on_media_started(_answered(), "s1", "PCMU", 8000, T0).call
    assert streaming is not None
    ended = on_carrier_event(streaming, _event("call.hangup", 1, cause="normal_clearing")).call
    assert ended is not None
    after = on_media_ended(ended, "s1", StreamState.LOST, {}, T0 + timedelta(seconds=2)).call
    assert after is not None
    assert (after.state, after.stream) == (CallState.ENDED, StreamState.STOPPED)


def test_a_refused_stream_shows_as_failed() -> None:
    decision = on_media_ended(
        _answered(), "s9", StreamState.FAILED, {"reason": "G722"}, T0, refused=True
    )
    assert decision.call is not None
    assert (decision.call.stream, decision.call.stream_id) == (StreamState.FAILED, "s9")
    assert decision.events[0].payload == {"stream_id": "s9", "outcome": "failed", "reason": "G722"}


def test_media_facts_about_unknown_calls_write_nothing() -> None:
    assert on_media_started(None, "s", "PCMU", 8000, T0).call is None
    assert on_media_ended(None, "s", StreamState.LOST, {}, T0).events == []
    assert on_media_note(None, MEDIA_DTMF, {"digit": "1"}, T0).events == []
