"""The pure state machine: forward only, terminal wins, newer stream news wins."""

from __future__ import annotations

import itertools
from datetime import UTC, datetime, timedelta

import pytest

from callbridge.calls.events import CarrierEvent
from callbridge.calls.model import Call, CallState, StreamState, advance
from callbridge.calls.transitions import on_carrier_event

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
