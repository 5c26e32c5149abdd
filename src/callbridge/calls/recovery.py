"""Restart recovery: the calls and streams an instance left behind are settled, never "active
forever".

A media stream is a socket on one instance, and Telnyx never reconnects one: when the instance
goes, its streams go with it, whatever the store says. The store names the instance holding
each stream (`stream_instance`), so:

- an instance that restarts ends the streams it held that the store still shows `active` as
  `lost`, with the `media.stopped` their handlers would have stored ("instance restarted");
- an instance that died for good (kill -9, a lost host) stops sending heartbeats, and any live
  instance does the same for it (membership.py says who is alive);
- webhooks sent while no instance could take them are lost once Telnyx gives up, so at start
  every call that has not ended is checked with the carrier: one that is over is ended, with a
  `call.reconciled` event.

A stream lost with its instance stays attributed to the instance that found it lost (or to its
own, when it stopped with nobody to hand over to). That instance asks the carrier whether the
call is still up: if not, the call is ended; if so, and `CALLBRIDGE_RESUME_LOST_STREAMS` is on,
it asks for streaming again (`streaming_start` with a fresh token, to the public stream_url, in
the codec and with the talk-back of the stream that was lost, so the new socket lands wherever
the proxy sends it and listeners keep their format). Either way the stream is then nobody's to
resume, and the new one names its own instance when it starts.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Collection
from datetime import UTC, datetime

from callbridge.calls.carrier import CallAlreadyEnded, CallStatus, CarrierError
from callbridge.calls.model import Call, CallState, StreamState
from callbridge.calls.service import CallEnded, CallNotFound, CallService
from callbridge.calls.transitions import (
    on_reconciled_end,
    on_resume_requested,
    on_stream_orphaned,
)
from callbridge.hub.live import StreamNotice
from callbridge.logs import get_logger
from callbridge.metrics import CALL_RECOVERIES

__all__ = ["Recovery"]

log = get_logger(__name__)

START_CHECK_LIMIT = 10_000  # calls checked with the carrier when an instance starts
CHECK_CONCURRENCY = 8  # carrier requests at a time


class Recovery:
    """Settles what instances that are gone left in the store, on behalf of `instance_id`."""

    def __init__(self, calls: CallService, instance_id: str, *, resume_streams: bool) -> None:
        self.calls = calls
        self.store = calls.store
        self.instance_id = instance_id
        self.resume_streams = resume_streams
        self._settling: set[str] = set()  # calls being settled now: one request per call
        self._warned: set[str] = set()  # calls whose carrier check failed (warned once)

    # --- streams of instances that are gone -------------------------------------------------

    async def lose_unheld_streams(self, open_streams: Collection[str], reason: str) -> int:
        """Streams the store shows `active` on this instance but whose socket is not open here
        (`open_streams`: ids): at start, every one (they died with the previous process); later,
        one whose handler could not record its end (the store was away)."""
        held = await self.store.held_streams(self.instance_id)
        lost = 0
        for call_control_id, stream_id in held:
            if stream_id in open_streams:
                continue
            call = await self.store.get_call(call_control_id)  # only the few not open here
            if (
                call is not None
                and call.stream_id == stream_id
                and call.stream is StreamState.ACTIVE
                and call.stream_instance == self.instance_id  # not adopted meanwhile
            ):
                lost += await self._orphan(call, reason)
        return lost

    async def adopt(self, alive: Collection[str], why: Callable[[str], str]) -> int:
        """The streams of instances that are not `alive`: lost, and this instance's to resume.
        `why` says, for an instance id, why it is gone."""
        orphans = await self.store.unfinished_calls(
            not_held_by=alive, streams=[StreamState.ACTIVE, StreamState.LOST]
        )
        lost = 0
        for call in orphans:
            assert call.stream_instance is not None
            lost += await self._orphan(call, why(call.stream_instance))
        return lost

    async def _orphan(self, call: Call, reason: str) -> int:
        holder = call.stream_instance
        assert holder is not None
        now = datetime.now(UTC)
        applied = await self.calls.record(
            call.call_control_id,
            lambda c: on_stream_orphaned(c, holder, self.instance_id, reason, now),
        )
        if applied is None or not applied.events:
            return 0  # already lost (now ours), or no longer that instance's
        if not self.resume_streams:
            # Listeners on live instances follow this stream: tell them it is gone. When it is
            # to be resumed they wait instead, and switch to the new stream's `format`.
            self.calls.hub.publish_audio(
                call.call_control_id,
                StreamNotice(
                    "stream.stopped", {"stream_id": call.stream_id, "reason": "stream_lost"}
                ),
            )
        CALL_RECOVERIES.labels("stream_lost").inc()
        log.warning(
            "Media stream lost with its instance",
            call_control_id=call.call_control_id,
            stream_id=call.stream_id,
            instance=holder,
            reason=reason,
        )
        return 1

    # --- the carrier decides ----------------------------------------------------------------

    async def resume(self) -> None:
        """Lost streams this instance is to resume: settle each with the carrier."""
        lost = await self.store.unfinished_calls(
            held_by=[self.instance_id], streams=[StreamState.LOST]
        )
        for call in lost:
            await self.settle(call)

    async def check_all(self) -> None:
        """At start: every call not ended, in case it ended while nobody heard (webhooks are
        retried for a while, then given up)."""
        calls = await self.store.unfinished_calls(limit=START_CHECK_LIMIT)
        gate = asyncio.Semaphore(CHECK_CONCURRENCY)

        async def one(call: Call) -> str:
            async with gate:
                return await self.settle(call)

        outcomes = await asyncio.gather(*(one(call) for call in calls))
        log.info(
            "Calls checked with the carrier",
            checked=len(calls),
            ended=outcomes.count("ended"),
            resumed=outcomes.count("resumed"),
            unknown=outcomes.count("unknown"),
            limit_reached=len(calls) == START_CHECK_LIMIT,
        )

    async def settle(self, call: Call) -> str:
        """Ask the carrier about one call: `ended` (it was over), `resumed` (its lost stream
        was asked for again), `alive`, or `unknown` (the carrier could not be asked; the next
        round tries again)."""
        call_id = call.call_control_id
        if call_id in self._settling:
            return "alive"
        self._settling.add(call_id)
        try:
            outcome = await self._settle(call)
        finally:
            self._settling.discard(call_id)
        if outcome != "unknown":
            self._warned.discard(call_id)  # a later failure is worth a warning again
        return outcome

    async def _settle(self, call: Call) -> str:
        call_id = call.call_control_id
        try:
            status = await self.calls.carrier.call_status(call_id)
        except CarrierError as exc:
            self._warn_once(call_id, "Could not check a call with the carrier", exc)
            return "unknown"
        if _over(call, status):
            return await self._end(call, status)
        mine = call.stream is StreamState.LOST and call.stream_instance == self.instance_id
        if not mine:
            return "alive"
        outcome = await self._resume(call_id) if self.resume_streams else "alive"
        if outcome != "unknown":  # asked for, or not to be: nobody's to resume any more
            await self.calls.record(call_id, lambda c: on_resume_requested(c, self.instance_id))
        return outcome

    def _warn_once(self, call_id: str, message: str, exc: Exception) -> None:
        """The carrier failing is retried every heartbeat; it is said once per call."""
        if call_id not in self._warned:
            self._warned.add(call_id)
            log.warning(message, call_control_id=call_id, error=str(exc))

    async def _end(self, call: Call, status: CallStatus) -> str:
        reason = (
            "the carrier does not know the call"
            if not status.known
            else "the carrier says the call is over"
        )
        now = datetime.now(UTC)
        applied = await self.calls.record(
            call.call_control_id, lambda c: on_reconciled_end(c, reason, now)
        )
        if applied is not None and applied.events:
            CALL_RECOVERIES.labels("call_ended").inc()
            log.info(
                "Call reconciled as ended", call_control_id=call.call_control_id, reason=reason
            )
        return "ended"

    async def _resume(self, call_id: str) -> str:
        """`resumed`; `ended` when the call ended meanwhile; `unknown` when the carrier failed
        (the stream stays ours, and the next round asks again)."""
        try:
            await self.calls.start_streaming(call_id, as_before=True)
        except (CallEnded, CallNotFound, CallAlreadyEnded):
            return "ended"
        except CarrierError as exc:
            self._warn_once(call_id, "Could not resume a lost media stream", exc)
            return "unknown"
        CALL_RECOVERIES.labels("stream_resumed").inc()
        log.info("Lost media stream asked for again", call_control_id=call_id)
        return "resumed"


def _over(call: Call, status: CallStatus) -> bool:
    """A call the carrier does not know is over. One it knows but reports not alive is over too,
    unless we are still dialing it: Telnyx reports a dial in progress as not alive."""
    if not status.known:
        return True
    return not status.alive and call.state is not CallState.DIALING
