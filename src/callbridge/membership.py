"""Which instances are alive: one row per instance in the store, refreshed by a heartbeat.

An instance writes its row when it starts and every `CALLBRIDGE_HEARTBEAT_INTERVAL` seconds
after, with its state: `running`, `draining` (SIGTERM: handing its streams over) or `stopped`
(a clean exit). Times are the database's, so instances on several hosts need not agree on
the clock. An instance is alive while its row is fresher than `CALLBRIDGE_HEARTBEAT_TIMEOUT`
and not `stopped`; the streams of any other instance are someone else's to settle (see
calls/recovery.py). Only a `running` one is offered streams in a handover: a draining one is
leaving too.
"""

from __future__ import annotations

import dataclasses
import enum

from callbridge.store.base import Store

__all__ = ["Census", "InstanceState", "Membership"]

FORGET_AFTER = 7 * 24 * 3600.0  # rows of instances silent this long are deleted at start


class InstanceState(enum.StrEnum):
    RUNNING = "running"
    DRAINING = "draining"  # stopping: handing its streams over, closing its sockets
    STOPPED = "stopped"  # exited cleanly; whatever it still holds is lost


@dataclasses.dataclass(frozen=True, slots=True)
class Census:
    """The instances as the store shows them now, from one instance's point of view."""

    alive: frozenset[str]  # fresh and not stopped; this instance included
    peers: frozenset[str]  # alive, running, not this instance: who can take a stream over
    gone: dict[str, str]  # instance id → why it is not alive

    def why(self, instance_id: str) -> str:
        """Why the streams of `instance_id` are lost (it may have no row at all)."""
        return self.gone.get(instance_id, f"instance {instance_id} is gone")


class Membership:
    """This instance's row, and what the rows of the others say."""

    def __init__(self, store: Store, instance_id: str, *, timeout: float) -> None:
        self.store = store
        self.instance_id = instance_id
        self.timeout = timeout
        self.state = InstanceState.RUNNING

    async def join(self) -> None:
        await self.store.forget_instances(FORGET_AFTER)
        await self.beat(InstanceState.RUNNING)

    async def beat(self, state: InstanceState | None = None) -> None:
        if state is not None:
            self.state = state
        await self.store.heartbeat(self.instance_id, self.state.value)

    async def census(self) -> Census:
        alive = {self.instance_id}
        peers: set[str] = set()
        gone: dict[str, str] = {}
        for record in await self.store.instances():
            if record.instance_id == self.instance_id:
                continue
            if record.state == InstanceState.STOPPED:
                gone[record.instance_id] = f"instance {record.instance_id} stopped"
            elif record.seen_ago > self.timeout:
                gone[record.instance_id] = (
                    f"instance {record.instance_id} sent no heartbeat for {record.seen_ago:.0f} s"
                )
            else:
                alive.add(record.instance_id)
                if record.state == InstanceState.RUNNING:
                    peers.add(record.instance_id)
        return Census(frozenset(alive), frozenset(peers), gone)
