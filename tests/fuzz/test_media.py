"""Fuzzing `/audio-stream`, the carrier's media socket: handshakes and frames.

A stream that is not authorised is closed with 1008 and a reason; a codec callbridge does not
relay with 1003; a message over 1 MiB with 1009. Bad frames on a running stream are dropped and
counted, and the stream carries on: a `stop` afterwards still ends it with 1000, its listener
still gets `end`, and the call still records how the stream ended.
"""

from __future__ import annotations

import contextlib
import uuid
from typing import Any
from urllib.parse import quote

import pytest
from hypothesis import given
from hypothesis import strategies as st
from websockets.asyncio.client import ClientConnection
from websockets.exceptions import ConnectionClosedOK

from callbridge.carrier.telnyx.media import AUTH_HEADER
from callbridge.sim.media import TelnyxMediaStream
from tests.conftest import mint_token
from tests.fuzz.harness import (
    STREAM_STATES,
    Closed,
    FuzzTarget,
    PlayedCall,
    assert_closed_with_reason,
    connected,
    expect,
    fuzz,
    next_message,
    open_ws,
    query_string,
)
from tests.fuzz.strategies import media_messages, query_pairs, weird_text

PCMU_20MS = bytes(range(160))


@pytest.fixture(scope="module")
def played(target: FuzzTarget) -> PlayedCall:
    return PlayedCall(target)


@pytest.fixture
def media_call(played: PlayedCall) -> tuple[str, str]:
    """A live call whose media side the tests play: (call_control_id, stream token)."""
    return played.current()


async def send_all(stream: TelnyxMediaStream, messages: list[Any]) -> None:
    """Send until done, or until the server has closed the socket (it may refuse early)."""
    with contextlib.suppress(ConnectionClosedOK):
        for message in messages:
            await stream.send(message)


async def until_closed(ws: ClientConnection) -> Closed:
    """Read (and ignore talk-back) until the server closes the socket."""
    while True:
        message = await next_message(ws)
        if isinstance(message, Closed):
            return message


# --- handshakes -------------------------------------------------------------------------------


@fuzz(50)
@given(
    token=st.sampled_from(["right", "wrong", "other call", "none", "empty"]),
    via=st.sampled_from(["header", "query", "connected", "all"]),
    call=st.sampled_from(["right", "unknown", "weird"]),
    # A call id that is empty, too long or has a NUL makes the `start` malformed: dropped,
    # and the socket would wait CALLBRIDGE_MEDIA_START_TIMEOUT for another one.
    weird_call=weird_text.filter(lambda t: 0 < len(t) <= 256 and "\x00" not in t),
    encoding=st.sampled_from(["PCMU", "PCMU", "PCMA", "L16", "G722", "OPUS", "pcmu", "x"]),
    extra_query=query_pairs(),
    noise=st.lists(media_messages("s", "c"), max_size=4),
)
def test_handshakes_are_refused_with_a_reason_or_stream(
    target: FuzzTarget,
    media_call: tuple[str, str],
    token: str,
    via: str,
    call: str,
    weird_call: str,
    encoding: str,
    extra_query: list[tuple[str, str]],
    noise: list[str | bytes],
) -> None:
    call_id, right_token = media_call
    presented = {
        "right": right_token,
        "wrong": uuid.uuid4().hex,
        "other call": "x" + right_token[1:],
        "none": None,
        "empty": "",
    }[token]
    started_call = {
        "right": call_id,
        "unknown": "v3:fuzz-" + uuid.uuid4().hex,
        "weird": weird_call,
    }[call]
    # Noise before `start` must not start anything itself: only the last message is a start.
    noise = [n for n in noise if not (isinstance(n, str) and '"start"' in n)]

    async def attempt() -> Closed:
        headers = {AUTH_HEADER: presented} if presented and via in ("header", "all") else None
        pairs = [p for p in extra_query if p[0] != "token"]
        if presented is not None and via in ("query", "all"):
            pairs.append(("token", presented))
        query = query_string(pairs)
        ws = await open_ws(target.service, "/audio-stream", query, headers=headers)
        if isinstance(ws, Closed):  # refused before any route: only a request line over 8 KiB
            assert ws.code == 414, ws
            assert len(query) > 8000, ws
            return Closed(1008, ws.reason)
        stream = TelnyxMediaStream(
            ws,
            call_control_id=started_call,
            token=presented if via in ("connected", "all") else None,
            encoding=encoding,
            sample_rate=16000 if encoding == "L16" else 8000,
        )
        try:
            await send_all(
                stream,
                [
                    stream.connected_message(),
                    *noise,
                    stream.start_message(),
                    stream.media_message(PCMU_20MS),
                    stream.stop_message(),
                ],
            )
            return await until_closed(ws)
        finally:
            await ws.close()

    closed: Closed = target.loop.run(attempt())
    if closed.reason.startswith("Failed to open a WebSocket connection"):
        expected = (1008, "")
    elif not presented:
        expected = (1008, "missing stream token")
    elif call != "right":
        expected = (1008, "")  # unknown call, or a token that is not this call's
    elif token != "right":
        expected = (1008, "invalid stream token")
    elif encoding.upper() not in ("PCMU", "PCMA", "L16"):
        expected = (1003, "")
    else:
        expected = (1000, "stream stopped")
    assert_closed_with_reason(closed, [expected[0]])
    assert expected[1] in closed.reason, closed
    target.alive()


# --- frames on a running stream ----------------------------------------------------------------


@fuzz(60)
@given(data=st.data())
def test_bad_frames_are_dropped_and_the_stream_carries_on(
    target: FuzzTarget, media_call: tuple[str, str], data: st.DataObject
) -> None:
    call_id, token = media_call
    stream_id = str(uuid.uuid4())
    frames = [
        None
        if data.draw(st.booleans(), label="valid?")
        else data.draw(media_messages(stream_id, call_id))
        for _ in range(data.draw(st.integers(1, 12), label="frames"))
    ]  # None: a valid media frame

    async def play() -> tuple[Closed, dict[str, Any] | Closed]:
        listener = await connected(
            target.service,
            "/frontend-audio",
            f"?call_control_id={quote(call_id)}&token={mint_token([call_id])}",
        )
        ws = await connected(target.service, "/audio-stream", headers={AUTH_HEADER: token})
        stream = TelnyxMediaStream(ws, call_control_id=call_id, token=None, stream_id=stream_id)
        try:
            first = await next_message(listener)
            expect(first, "format")
            await stream.begin()
            while True:  # the listener hears of the stream before the fuzzing starts
                message = await next_message(listener)
                assert not isinstance(message, Closed), message
                if isinstance(message, dict) and message.get("stream_id") == stream.stream_id:
                    break  # its `format`
            for frame in frames:
                await stream.send(stream.media_message(PCMU_20MS) if frame is None else frame)
            await stream.stop()
            closed = await until_closed(ws)
            while True:  # the listener's last word on this stream
                end = await next_message(listener)
                if isinstance(end, Closed) or (isinstance(end, dict) and end["type"] == "end"):
                    return closed, end
        finally:
            await ws.close()
            await listener.close()

    closed, end = target.loop.run(play())
    assert_closed_with_reason(closed, [1000])
    assert isinstance(end, dict), f"the listener got no end: {end}"
    assert end["reason"] == "stream_stopped", end
    stopped = target.witness.wait_for_event(
        lambda e: e["type"] == "media.stopped" and e["payload"]["stream_id"] == stream_id
    )
    payload = stopped["payload"]
    assert payload["outcome"] == "stopped", payload
    for counter in ("frames", "gaps", "late_dropped", "reordered", "duplicates", "malformed"):
        assert isinstance(payload[counter], int), payload
        assert payload[counter] >= 0, payload
    call = target.api.get(f"/api/calls/{quote(call_id, safe='')}").json()["data"]
    assert call["stream"] in STREAM_STATES, call
    assert call["state"] == "streaming", call
    target.alive()


@fuzz(4)
@given(binary=st.booleans(), started=st.booleans())
def test_messages_over_a_mebibyte_close_1009(
    target: FuzzTarget, media_call: tuple[str, str], binary: bool, started: bool
) -> None:
    call_id, token = media_call

    async def flood() -> Closed:
        ws = await connected(target.service, "/audio-stream", headers={AUTH_HEADER: token})
        stream = TelnyxMediaStream(ws, call_control_id=call_id, token=None)
        try:
            if started:
                await stream.begin()
            big = b"\x00" * (2**20 + 1)
            await stream.send(big if binary else '"' + "A" * 2**20 + '"')
            return await until_closed(ws)
        finally:
            await ws.close()

    assert_closed_with_reason(target.loop.run(flood()), [1009])
    target.alive()
