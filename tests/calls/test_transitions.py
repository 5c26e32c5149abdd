"""The pure state machine: forward only, terminal wins, newer stream news wins."""

from __future__ import annotations

import itertools
from datetime import UTC, datetime, timedelta

import pytest

from callbridge.calls.events import CarrierEvent
from callbridge.calls.model import Call, CallState, Direction, StreamState, advance
from callbridge.calls.transitions import (
    CALL_RECONCILED,
    MEDIA_DTMF,
    MEDIA_STARTED,
    MEDIA_STOPPED,
    on_carrier_event,
    on_media_ended,
    on_media_note,
    on_media_started,
    on_reconciled_end,
    on_resume_requested,
    on_stream_orphaned,
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


# --- which instance holds the stream (restart recovery, dead instances, handover) ------------


def _held_by(instance: str) -> Call:
    call = on_media_started(_answered(), "s1", "PCMU", 8000, T0, instance).call
    assert call is not None
    return call


def test_the_instance_holding_a_stream_is_forgotten_when_the_stream_ends() -> None:
    held = _held_by("a:1")
    assert held.stream_instance == "a:1"
    later = T0 + timedelta(seconds=1)
    ended = on_media_ended(held, "s1", StreamState.LOST, {}, later).call
    assert ended is not None
    assert (ended.stream, ended.stream_instance) == (StreamState.LOST, None)
    # Lost because its instance stops: it stays that instance's, to be asked for again.
    kept = on_media_ended(held, "s1", StreamState.LOST, {}, later, keep_instance=True).call
    assert kept is not None
    assert (kept.stream, kept.stream_instance) == (StreamState.LOST, "a:1")
    # A stream that ends cleanly is nobody's, whatever the instance wanted.
    stopped = on_media_ended(held, "s1", StreamState.STOPPED, {}, later, keep_instance=True).call
    assert stopped is not None
    assert stopped.stream_instance is None


def test_the_stream_of_an_instance_that_is_gone_is_lost_once_and_adopted() -> None:
    later = T0 + timedelta(seconds=5)
    decision = on_stream_orphaned(_held_by("a:1"), "a:1", "b:2", "instance a:1 is gone", later)
    assert decision.call is not None
    assert (decision.call.stream, decision.call.stream_instance) == (StreamState.LOST, "b:2")
    assert decision.call.state is CallState.STREAMING
    assert [e.type for e in decision.events] == [MEDIA_STOPPED, "call.state"]
    assert decision.events[0].payload == {
        "stream_id": "s1",
        "outcome": "lost",
        "reason": "instance a:1 is gone",
        "instance": "a:1",
    }
    # Another instance finding the same dead stream a moment later writes nothing.
    again = on_stream_orphaned(decision.call, "a:1", "c:3", "instance a:1 is gone", later)
    assert (again.call, again.events) == (None, [])


def test_a_lost_stream_of_a_gone_instance_changes_hands_without_events() -> None:
    held = _held_by("a:1")
    lost = on_media_ended(held, "s1", StreamState.LOST, {}, T0, keep_instance=True).call
    assert lost is not None
    decision = on_stream_orphaned(lost, "a:1", "b:2", "instance a:1 stopped", T0)
    assert decision.call is not None
    assert decision.call.stream_instance == "b:2"
    assert decision.events == []


def test_streams_of_ended_calls_or_other_instances_are_left_alone() -> None:
    held = _held_by("a:1")
    hangup = _event("call.hangup", 1, cause="normal_clearing")
    ended = on_carrier_event(held, hangup).call
    assert on_stream_orphaned(ended, "a:1", "b:2", "gone", T0).call is None
    assert on_stream_orphaned(held, "z:9", "b:2", "gone", T0).call is None
    assert on_stream_orphaned(None, "a:1", "b:2", "gone", T0).call is None


def test_a_resumed_stream_is_nobodys_until_the_new_one_starts() -> None:
    held = _held_by("a:1")
    assert on_resume_requested(held, "a:1").call is None  # active: a handover, not a resume
    lost = on_media_ended(held, "s1", StreamState.LOST, {}, T0, keep_instance=True).call
    assert on_resume_requested(lost, "b:2").call is None  # not b's
    resumed = on_resume_requested(lost, "a:1")
    assert resumed.call is not None
    assert resumed.call.stream_instance is None
    assert resumed.events == []


def test_a_call_the_carrier_says_is_over_ends_reconciled() -> None:
    later = T0 + timedelta(seconds=9)
    decision = on_reconciled_end(_held_by("a:1"), "the carrier says the call is over", later)
    assert decision.call is not None
    assert (decision.call.state, decision.call.stream) == (CallState.ENDED, StreamState.STOPPED)
    assert (decision.call.ended_at, decision.call.stream_instance) == (later, None)
    assert [e.type for e in decision.events] == [CALL_RECONCILED, "call.state"]
    assert decision.events[1].payload["reason"] == CALL_RECONCILED
    assert on_reconciled_end(decision.call, "again", later).events == []
