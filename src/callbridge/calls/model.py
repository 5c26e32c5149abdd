"""The call as callbridge sees it, and the state machine that never moves backwards.

Telnyx delivers webhooks late, twice and out of order. The state is therefore the furthest
lifecycle stage seen so far (a rank), and `ended` is terminal: whatever arrives after it can add
facts (a hangup cause) but never revives the call.
"""

from __future__ import annotations

import dataclasses
import enum
from datetime import datetime
from typing import Any

__all__ = ["TERMINAL", "Call", "CallState", "Direction", "StreamState", "advance"]


class CallState(enum.StrEnum):
    """Lifecycle stages, in the only order a call may move through them."""

    DIALING = "dialing"  # we asked Telnyx to dial; nothing heard back yet
    INITIATED = "initiated"  # Telnyx placed the outbound call
    RINGING = "ringing"  # an inbound call is waiting to be answered
    ANSWERED = "answered"
    STREAMING = "streaming"  # media streaming to us has started at least once
    ENDED = "ended"


_RANK = {
    CallState.DIALING: 0,
    CallState.INITIATED: 1,
    CallState.RINGING: 1,
    CallState.ANSWERED: 2,
    CallState.STREAMING: 3,
    CallState.ENDED: 4,
}

TERMINAL = frozenset({CallState.ENDED})


class StreamState(enum.StrEnum):
    """The media stream's current condition, which unlike the call state may go back and forth."""

    NONE = "none"
    ACTIVE = "active"
    STOPPED = "stopped"
    FAILED = "failed"
    LOST = "lost"  # the socket dropped without a `stop`


class Direction(enum.StrEnum):
    OUTGOING = "outgoing"
    INCOMING = "incoming"


def advance(current: CallState, proposed: CallState) -> CallState:
    """The state after `proposed` is seen: forward moves only, and a terminal state wins."""
    if current in TERMINAL:
        return current
    return proposed if _RANK[proposed] > _RANK[current] else current


@dataclasses.dataclass(slots=True)
class Call:
    """One call leg under Call Control, keyed by Telnyx's call_control_id."""

    call_control_id: str
    direction: Direction
    state: CallState
    stream: StreamState = StreamState.NONE
    call_leg_id: str | None = None
    call_session_id: str | None = None
    from_number: str | None = None
    to_number: str | None = None
    hangup_cause: str | None = None
    hangup_source: str | None = None
    client_state: str | None = None
    stream_token_hash: str | None = None
    stream_updated_at: datetime | None = None  # carrier time of the last stream change
    stream_id: str | None = None  # the media stream that last started (Telnyx stream_id)
    stream_encoding: str | None = None  # its codec: PCMU, PCMA or L16
    stream_sample_rate: int | None = None
    talk_codec: str | None = None  # bidirectional codec asked for; None: no talk-back
    # The instance holding the carrier stream while it is active; kept on a stream that was lost
    # with its instance (a restart, a crash), so that a live instance asks the carrier for it again.
    stream_instance: str | None = None
    created_at: datetime | None = None
    updated_at: datetime | None = None
    answered_at: datetime | None = None
    ended_at: datetime | None = None

    def public(self) -> dict[str, Any]:
        """The call as the REST API and browsers see it (no secrets)."""
        return {
            "call_control_id": self.call_control_id,
            "call_leg_id": self.call_leg_id,
            "call_session_id": self.call_session_id,
            "direction": self.direction.value,
            "state": self.state.value,
            "stream": self.stream.value,
            "from": self.from_number,
            "to": self.to_number,
            "hangup_cause": self.hangup_cause,
            "hangup_source": self.hangup_source,
            "client_state": self.client_state,
            "media": {
                "stream_id": self.stream_id,
                "encoding": self.stream_encoding,
                "sample_rate": self.stream_sample_rate,
                "talk_codec": self.talk_codec,
                "instance": self.stream_instance,
            },
            "created_at": _iso(self.created_at),
            "updated_at": _iso(self.updated_at),
            "answered_at": _iso(self.answered_at),
            "ended_at": _iso(self.ended_at),
        }


def _iso(moment: datetime | None) -> str | None:
    return moment.isoformat().replace("+00:00", "Z") if moment else None
