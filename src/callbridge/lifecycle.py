"""This instance from start to stop: who it is, what it recovers, and how it leaves.

At start (the application's lifespan): the instance writes its heartbeat row, and ends as
`lost` the media streams it held before it restarted (calls/recovery.py). Once the server
listens, every call that has not ended is checked with the carrier in the background, and a
heartbeat loop starts: every `CALLBRIDGE_HEARTBEAT_INTERVAL` seconds it refreshes this
instance's row, settles the streams of instances that stopped sending theirs, and asks the
carrier about the lost streams this instance took on.

On SIGTERM the server (cli.py) first stops accepting connections, then calls `drain()`:
browsers on /call-events and /frontend-audio are closed with 1012 and a reason that tells them
to reconnect (to another instance, or to this one once it is back), and the carrier's media
streams are handed over to another instance (ws/handover.py), or closed as lost with this one
when there is nobody to take them. Then the server's own shutdown lets requests in flight
(webhooks) finish, and the lifespan closes the store last: a webhook answered 200 was stored
and published.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import time
from collections.abc import Coroutine
from typing import Any

from callbridge.calls.recovery import Recovery
from callbridge.config import Settings
from callbridge.logs import get_logger
from callbridge.membership import InstanceState, Membership
from callbridge.metrics import INSTANCE_PEERS
from callbridge.runtime import Runtime
from callbridge.ws.close_codes import CloseCode
from callbridge.ws.connections import RECONNECT_REASON, Connections
from callbridge.ws.handover import close_lost, hand_over

__all__ = ["Lifecycle", "instance_name"]

log = get_logger(__name__)
UNRECORDED = "the media socket is gone; its end could not be recorded"


def instance_name(settings: Settings) -> str:
    """`CALLBRIDGE_INSTANCE_ID`, or `<hostname>:<port>`: stable across restarts on one host."""
    return settings.instance_id or f"{socket.gethostname()}:{settings.port}"


class Lifecycle:
    """Start-up recovery, the heartbeat loop, and the drain before shutdown."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.instance_id = instance_name(settings)
        self.connections = Connections()
        self._runtime: Runtime | None = None
        self._membership: Membership | None = None
        self._recovery: Recovery | None = None
        self._serving = asyncio.Event()
        self._tasks: set[asyncio.Task[None]] = set()

    @property
    def runtime(self) -> Runtime:
        assert self._runtime is not None, "open() the lifecycle first"
        return self._runtime

    # --- start ---------------------------------------------------------------------------------

    async def open(self, runtime: Runtime) -> None:
        """Join the instances, and end the streams this instance held before a restart."""
        self._runtime = runtime
        settings = self.settings
        self._membership = Membership(
            runtime.store, self.instance_id, timeout=settings.heartbeat_timeout
        )
        self._recovery = Recovery(
            runtime.calls, self.instance_id, resume_streams=settings.resume_lost_streams
        )
        membership, recovery = self._membership, self._recovery
        await membership.join()
        lost = await recovery.lose_unheld_streams((), "instance restarted")
        census = await membership.census()
        INSTANCE_PEERS.set(len(census.peers))
        log.info(
            "Instance joined",
            instance=self.instance_id,
            peers=sorted(census.peers),
            streams_lost_in_restart=lost,
            heartbeat_interval=settings.heartbeat_interval,
        )
        self._spawn(self._heartbeats(membership, recovery))

    async def serving(self) -> None:
        """The server listens: Telnyx can reach a new media socket here now, so calls may be
        checked with the carrier and lost streams asked for again."""
        self._serving.set()
        assert self._recovery is not None
        self._spawn(self._recovery.check_all())

    async def _heartbeats(self, membership: Membership, recovery: Recovery) -> None:
        failing = False
        while True:
            await asyncio.sleep(self.settings.heartbeat_interval)  # the heartbeat's period
            try:
                await membership.beat()
                if self._serving.is_set() and not self.connections.draining:
                    census = await membership.census()
                    INSTANCE_PEERS.set(len(census.peers))
                    await recovery.adopt(census.alive, census.why)
                    open_streams = {stream.stream_id for stream in self.connections.streams}
                    await recovery.lose_unheld_streams(open_streams, UNRECORDED)
                    await recovery.resume()
            except Exception as exc:  # the store is away: try again next beat, say so once
                if not failing:
                    log.warning("Heartbeat failed", instance=self.instance_id, error=str(exc))
                failing = True
            else:
                if failing:
                    log.info("Heartbeat restored", instance=self.instance_id)
                failing = False

    def _spawn(self, coroutine: Coroutine[Any, Any, Any]) -> None:
        task = asyncio.get_running_loop().create_task(coroutine)
        self._tasks.add(task)
        task.add_done_callback(self._done)

    def _done(self, task: asyncio.Task[None]) -> None:
        self._tasks.discard(task)
        if not task.cancelled() and task.exception() is not None:
            log.error(
                "Recovery task failed", instance=self.instance_id, error=repr(task.exception())
            )

    # --- stop ----------------------------------------------------------------------------------

    async def drain(self) -> None:
        """SIGTERM, after the server stopped accepting connections and before it closes what
        is left: browsers are told to reconnect elsewhere, media streams are handed over."""
        began = time.monotonic()
        connections = self.connections
        connections.draining = True
        peers: frozenset[str] = frozenset()
        if self._membership is not None:
            try:
                await self._membership.beat(InstanceState.DRAINING)
                peers = (await self._membership.census()).peers
            except Exception as exc:  # no store, no peers known: nobody to hand over to
                log.warning("Heartbeat failed", instance=self.instance_id, error=str(exc))
        streams = [stream for stream in connections.streams if not stream.done.is_set()]
        log.info(
            "Draining",
            instance=self.instance_id,
            browsers=connections.browsers,
            streams=len(streams),
            peers=sorted(peers),
        )
        closed = await connections.close_browsers(CloseCode.SERVICE_RESTART, RECONNECT_REASON)
        handed = lost = 0
        if streams:
            why_alone = self._why_alone(peers)
            if why_alone is None:
                deadline = asyncio.get_running_loop().time() + self.settings.handover_timeout
                handed, lost = await hand_over(streams, self.runtime, deadline)
            else:
                log.warning(
                    "No other instance to take over media streams",
                    instance=self.instance_id,
                    streams=len(streams),
                    reason=why_alone,
                )
                lost = await close_lost(streams)
        log.info(
            "Drained",
            instance=self.instance_id,
            browsers_closed=closed,
            handed_over=handed,
            lost=lost,
            seconds=round(time.monotonic() - began, 3),
        )

    def _why_alone(self, peers: frozenset[str]) -> str | None:
        if self.settings.handover_timeout <= 0:
            return "handover disabled (CALLBRIDGE_HANDOVER_TIMEOUT=0)"
        if self.settings.broker_url.startswith("memory://"):
            return "the hub is in-process (memory://): no other instance can take a stream"
        if not peers:
            return "no other running instance in the store"
        return None

    async def close(self) -> None:
        """The end of the lifespan: stop the loops, and say this instance stopped (whatever
        it still holds is then any live instance's to settle)."""
        for task in list(self._tasks):
            task.cancel()
        for task in list(self._tasks):
            with contextlib.suppress(BaseException):
                await task
        if self._membership is not None:
            with contextlib.suppress(Exception):
                await self._membership.beat(InstanceState.STOPPED)
