"""The event vocabulary browsers see, and the carrier-neutral events the carrier layer produces.

Carrier JSON never crosses into this module: `carrier/telnyx/webhooks.py` turns a Telnyx webhook
into a `CarrierEvent`; the call service turns that into `NewEvent`s, which the store numbers.
"""

from __future__ import annotations

import dataclasses
from datetime import datetime
from typing import Any

import orjson

__all__ = ["STATE_EVENT", "CarrierEvent", "NewEvent", "StoredEvent"]

STATE_EVENT = "call.state"
"""Our own event type: the call's state or stream state changed."""


@dataclasses.dataclass(frozen=True, slots=True)
class CarrierEvent:
    """A lifecycle event reported by the carrier, already verified and normalised.

    `details` holds the type-specific facts in our vocabulary (`cause`, `digit`, `reason`, …).
    """

    event_id: str
    type: str
    occurred_at: datetime
    call_control_id: str
    call_leg_id: str | None = None
    call_session_id: str | None = None
    direction: str | None = None
    from_number: str | None = None
    to_number: str | None = None
    client_state: str | None = None
    details: dict[str, Any] = dataclasses.field(default_factory=dict)


@dataclasses.dataclass(frozen=True, slots=True)
class NewEvent:
    """An event about to be stored; the store gives it its `seq`."""

    type: str
    call_control_id: str
    occurred_at: datetime
    payload: dict[str, Any]


@dataclasses.dataclass(frozen=True, slots=True)
class StoredEvent:
    """An event with its place in the log: what /call-events and the REST API deliver."""

    seq: int
    type: str
    call_control_id: str
    occurred_at: datetime
    payload: dict[str, Any]

    def to_message(self) -> dict[str, Any]:
        return {
            "type": self.type,
            "seq": self.seq,
            "call_control_id": self.call_control_id,
            "occurred_at": self.occurred_at.isoformat().replace("+00:00", "Z"),
            "payload": self.payload,
        }

    # Serialised once, however many subscribers it goes to (fan-out to 1,000 browsers).
    _text: str | None = dataclasses.field(default=None, init=False, repr=False, compare=False)

    def to_json(self) -> bytes:
        return orjson.dumps(self.to_message())

    def to_text(self) -> str:
        """The event as the JSON text every /call-events subscriber is sent."""
        text = self._text
        if text is None:
            text = self.to_json().decode()
            object.__setattr__(self, "_text", text)
        return text
