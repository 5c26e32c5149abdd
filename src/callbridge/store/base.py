"""The store interface the rest of callbridge codes against."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Collection
from typing import Protocol

from callbridge.calls.events import NewEvent, StoredEvent
from callbridge.calls.model import Call, StreamState

__all__ = ["Applied", "Decide", "Decision", "InstanceRecord", "Store", "StoreHead"]


@dataclasses.dataclass(frozen=True, slots=True)
class Decision:
    """What a state transition wants written: the call as it should be, and events to append."""

    call: Call | None
    events: list[NewEvent]


Decide = Callable[[Call | None], Decision]
"""Pure function from the call as stored (None: unknown) to the decision; runs in the
store's transaction so that concurrent webhooks for one call cannot interleave."""


@dataclasses.dataclass(frozen=True, slots=True)
class Applied:
    """The outcome of a transition: the call after it and the events it stored, numbered."""

    call: Call | None
    events: list[StoredEvent]


@dataclasses.dataclass(frozen=True, slots=True)
class StoreHead:
    """Where the event log stands: its identity, its last seq, and the oldest seq kept."""

    epoch: str
    last_seq: int
    first_seq: int


@dataclasses.dataclass(frozen=True, slots=True)
class InstanceRecord:
    """One instance's row: its state, and how long ago (by the database's clock) it was seen."""

    instance_id: str
    state: str
    seen_ago: float


class Store(Protocol):
    async def open(self) -> None:
        """Connect and bring the schema up to date."""

    async def close(self) -> None: ...

    async def ping(self) -> None:
        """Raise if the database cannot be reached."""

    async def apply(
        self, event_id: str | None, call_control_id: str, decide: Decide
    ) -> Applied | None:
        """Run `decide` on the stored call and write its decision atomically.

        Returns None, writing nothing, when `event_id` was stored before (a duplicate). The
        first appended event remembers `event_id`, so a deduplicated write must append one.
        """

    async def get_call(self, call_control_id: str) -> Call | None: ...

    async def list_calls(
        self,
        *,
        states: Collection[str] | None,
        limit: int,
        offset: int,
        call_ids: Collection[str] | None = None,
    ) -> tuple[list[Call], int]: ...

    async def call_events(self, call_control_id: str) -> list[StoredEvent]: ...

    async def events_after(
        self,
        after_seq: int,
        *,
        up_to: int | None = None,
        call_ids: Collection[str] | None = None,
        limit: int = 1000,
    ) -> list[StoredEvent]:
        """Events with `after_seq < seq <= up_to`, in seq order, optionally for some calls."""

    async def head(self) -> StoreHead: ...

    # --- instances and their streams (restart recovery, handover) -------------------------

    async def heartbeat(self, instance_id: str, state: str) -> None:
        """Record that `instance_id` is alive, in `state`, now (the database's clock)."""

    async def instances(self) -> list[InstanceRecord]: ...

    async def forget_instances(self, silent_for: float) -> int:
        """Delete rows of instances not seen for `silent_for` seconds; how many went."""

    async def held_streams(self, instance_id: str) -> list[tuple[str, str | None]]:
        """(call_control_id, stream_id) of the unfinished calls whose active stream
        `instance_id` holds: two columns, no Call built (it runs at every heartbeat, with
        hundreds of calls streaming)."""
        ...

    async def unfinished_calls(
        self,
        *,
        held_by: Collection[str] | None = None,
        not_held_by: Collection[str] | None = None,
        streams: Collection[StreamState] | None = None,
        limit: int = 1000,
    ) -> list[Call]:
        """Calls not ended; `held_by` / `not_held_by`: whose stream instance is (not) one of
        those (a call without one matches neither); `streams`: in one of those stream states."""
