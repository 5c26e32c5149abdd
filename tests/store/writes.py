"""What the store tests write, and the gap-free rule they check, shared by SQLite and PostgreSQL."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime

from callbridge.calls.events import NewEvent
from callbridge.calls.model import Call, CallState, Direction
from callbridge.store.base import Applied, Decision


def decide(call_id: str, count: int) -> Decision:
    """A transition that writes the call and appends `count` events."""
    call = Call(call_id, Direction.OUTGOING, CallState.INITIATED)
    now = datetime.now(UTC)
    return Decision(call, [NewEvent("x.test", call_id, now, {"n": n}) for n in range(count)])


def assert_gap_free(results: Sequence[Applied | None]) -> list[int]:
    """Every seq from 1 up was handed out once, and each write got consecutive seqs."""
    seqs = sorted(e.seq for r in results if r for e in r.events)
    assert seqs == list(range(1, len(seqs) + 1))
    for result in results:
        assert result is not None
        own = [e.seq for e in result.events]
        assert own == list(range(own[0], own[0] + len(own)))  # one write, consecutive seqs
    return seqs
