"""Handing carrier media streams over to another instance before this one stops.

Telnyx never reconnects a media stream: the socket this instance holds dies with it. So before
it goes, the instance asks Telnyx to stream each call it holds again (`streaming_start`, to the
public stream_url, with a fresh stream token, in the codec and with the talk-back of the stream
that runs, so listeners keep their format). The listening socket is closed already, so the
proxy sends the new media socket to another instance. That instance stores `media.started`
and announces the new stream on the call's audio channel (the `format` notice its listeners
follow); once the notice reaches this instance through the hub, everyone subscribed to the call
has it too, and only then is the old socket closed (1001, its end stored as `media.stopped`,
`stopped`, "handed over"). Listeners on any instance switch to the new stream with that
`format` and are never sent `end`; /call-events sees `media.started` of the new stream, then
`media.stopped` of the old one, which changes nothing.

Telnyx runs one stream per call, so it may end the old stream itself (`stop`) when the new one
starts, or even before: either way the old socket's end, once a handover has begun, does not
end the listeners. If no new stream appears within `CALLBRIDGE_HANDOVER_TIMEOUT` (the proxy sent
it back here and it was refused, or Telnyx failed to connect), or Telnyx refuses the command, the
stream is lost as it would have been without a handover.

A handover needs somebody to hand over to: another instance alive in the store (membership.py)
and a shared hub (with `memory://` the new stream's notice could not reach this instance). With
nobody, each stream is closed as `lost` with the instance and stays attributed to it: the next
instance to start (this one, restarted) asks Telnyx for it again if the call is still up.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Collection

from callbridge.calls.carrier import CallAlreadyEnded, CarrierError
from callbridge.calls.model import StreamState
from callbridge.calls.service import CallEnded, CallNotFound
from callbridge.hub.live import AudioItem, LiveQueue, StreamNotice
from callbridge.logs import get_logger
from callbridge.metrics import HANDOVERS
from callbridge.runtime import Runtime
from callbridge.ws.audio_stream import CarrierStream, Departure

__all__ = ["close_lost", "hand_over"]

log = get_logger(__name__)

NOTICE_QUEUE = 16  # the new stream's `format` is a notice: never the item a full queue drops
ALONE = "instance stopped; no other instance to take the stream"


async def close_lost(streams: Collection[CarrierStream], reason: str = ALONE) -> int:
    """Close streams nobody takes over: lost with this instance, to be asked for again."""
    departure = Departure(StreamState.LOST, reason, notify=True, keep=True)
    await asyncio.gather(*(stream.leave(departure, "instance stopping") for stream in streams))
    HANDOVERS.labels("alone").inc(len(streams))
    return len(streams)


async def hand_over(
    streams: Collection[CarrierStream], runtime: Runtime, deadline: float
) -> tuple[int, int]:
    """Hand every stream over, all at once, by `deadline` (event-loop time); (handed over,
    lost)."""
    results = await asyncio.gather(*(_hand_over(stream, runtime, deadline) for stream in streams))
    handed = sum(results)
    return handed, len(results) - handed


async def _hand_over(stream: CarrierStream, runtime: Runtime, deadline: float) -> bool:
    call_id, old = stream.call_id, stream.stream_id
    hub = runtime.hub
    began = time.monotonic()
    queue = hub.subscribe_audio(call_id, NOTICE_QUEUE)
    try:
        await hub.subscribed(call_id)  # the new stream's notice, from any instance, reaches us
        stream.departing(Departure(StreamState.STOPPED, "handed over", notify=False))
        try:
            await runtime.calls.start_streaming(call_id, as_before=True)
        except (CallEnded, CallNotFound, CallAlreadyEnded):
            await stream.leave(Departure(StreamState.STOPPED, "call ended"), "call ended")
            return False
        except CarrierError as exc:
            HANDOVERS.labels("refused").inc()
            log.warning("Media stream handover failed", call_control_id=call_id, error=str(exc))
            await stream.leave(
                Departure(
                    StreamState.LOST,
                    f"instance stopped; the carrier refused a new stream: {exc}",
                    keep=True,
                ),
                "instance stopping",
            )
            return False
        try:
            async with asyncio.timeout_at(deadline):
                new = await _new_stream(queue, old)
        except TimeoutError:
            HANDOVERS.labels("timed_out").inc()
            log.warning(
                "Media stream handover timed out",
                call_control_id=call_id,
                stream_id=old,
                seconds=round(time.monotonic() - began, 3),
            )
            await stream.leave(
                Departure(
                    StreamState.LOST,
                    "instance stopped; no new stream started in time",
                    keep=True,
                ),
                "instance stopping",
            )
            return False
        if new is None:  # the call ended meanwhile
            await stream.leave(Departure(StreamState.STOPPED, "call ended"), "call ended")
            return False
        await stream.leave(
            Departure(StreamState.STOPPED, "handed over", notify=False),
            "stream handed over to another instance",
        )
        HANDOVERS.labels("handed_over").inc()
        log.info(
            "Media stream handed over",
            call_control_id=call_id,
            stream_id=old,
            new_stream_id=new,
            seconds=round(time.monotonic() - began, 3),
        )
        return True
    finally:
        hub.unsubscribe_audio(call_id, queue)


async def _new_stream(queue: LiveQueue[AudioItem], old: str) -> str | None:
    """Wait for a `format` naming another stream (its id), or the end of the call (None)."""
    while True:
        item = await queue.get()
        if not isinstance(item, StreamNotice):
            continue  # audio of the old stream, still flowing
        if item.type == "call.ended":
            return None
        stream_id = item.data.get("stream_id")
        if item.type == "format" and stream_id is not None and stream_id != old:
            return str(stream_id)
