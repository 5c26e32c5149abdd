"""The port to the carrier: what the call service asks of Telnyx, in our own words.

`carrier/telnyx/client.py` implements it; the call service never sees Telnyx JSON.
"""

from __future__ import annotations

import dataclasses
from typing import Protocol

__all__ = [
    "CallAlreadyEnded",
    "CallControl",
    "CallStatus",
    "CarrierError",
    "CarrierUnavailable",
    "DialRequest",
    "DialResult",
    "StreamTarget",
]


@dataclasses.dataclass(frozen=True, slots=True)
class StreamTarget:
    """Where and how the carrier should stream a call's media."""

    url: str
    auth_token: str
    track: str = "both_tracks"
    bidirectional: bool = True
    codec: str | None = None  # None: the call's own codec
    bidirectional_codec: str = "PCMU"


@dataclasses.dataclass(frozen=True, slots=True)
class DialRequest:
    to: str
    from_number: str
    stream: StreamTarget
    webhook_url: str
    command_id: str
    client_state: str | None = None
    timeout_secs: int | None = None


@dataclasses.dataclass(frozen=True, slots=True)
class DialResult:
    call_control_id: str
    call_leg_id: str | None
    call_session_id: str | None


@dataclasses.dataclass(frozen=True, slots=True)
class CallStatus:
    """What the carrier says of a call now: `known` False when it has no such call (never,
    or no longer), `alive` True while the call is up."""

    known: bool
    alive: bool


class CarrierError(Exception):
    """The carrier refused a command; `status` is its HTTP status, `code` its error code."""

    def __init__(self, status: int, code: str | None, title: str, detail: str) -> None:
        super().__init__(f"{status} {code or ''} {title}: {detail}".strip())
        self.status = status
        self.code = code
        self.title = title
        self.detail = detail


class CallAlreadyEnded(CarrierError):
    """The carrier says the call is gone (Telnyx 422 / 90018): for hangup, that is success."""


class CarrierUnavailable(CarrierError):
    """The carrier kept failing (5xx, 429 or timeouts) after every retry."""


class CallControl(Protocol):
    async def dial(self, request: DialRequest) -> DialResult: ...

    async def answer(
        self, call_control_id: str, *, stream: StreamTarget, webhook_url: str, command_id: str
    ) -> None: ...

    async def hangup(self, call_control_id: str, *, command_id: str) -> None: ...

    async def start_streaming(
        self, call_control_id: str, *, stream: StreamTarget, command_id: str
    ) -> None: ...

    async def stop_streaming(self, call_control_id: str, *, command_id: str) -> None: ...

    async def call_status(self, call_control_id: str) -> CallStatus:
        """Ask whether the call is still up (restart recovery: webhooks may have been missed)."""
        ...

    async def close(self) -> None: ...
