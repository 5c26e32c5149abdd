"""Live audio over real sockets: a fake Telnyx media stream in, browser listeners out, and
talk-back from a browser into the call."""

from __future__ import annotations

import asyncio
import base64
import dataclasses
import math
import random
from collections.abc import AsyncIterator, Callable
from typing import Any

import httpx
import orjson
import pytest
from websockets.exceptions import ConnectionClosed

from callbridge.audio.g711 import (
    alaw_decode,
    alaw_encode,
    l16_be_to_le,
    l16_le_to_be,
    ulaw_decode,
    ulaw_encode,
)
from callbridge.sim.media import TelnyxMediaStream
from tests.conftest import ServiceProcess
from tests.helpers import EventsClient, with_token
from tests.signals import amplitude_at, chunks, residual_rms, samples_of, snr_db, sweep, tone
from tests.ws.audio_client import Listener, close_all, dial, open_stream
from tests.ws.rawws import OP_BINARY, OP_CLOSE, OP_TEXT, RawWebSocket

ENCODE: dict[str, Callable[[bytes], bytes]] = {
    "PCMU": ulaw_encode,
    "PCMA": alaw_encode,
    "L16": l16_le_to_be,
}
DECODE: dict[str, Callable[[bytes], bytes]] = {
    "PCMU": ulaw_decode,
    "PCMA": alaw_decode,
    "L16": l16_be_to_le,
}


@pytest.fixture(autouse=True)
async def _close_sockets() -> AsyncIterator[None]:
    yield
    await close_all()


async def started_listener(
    service: ServiceProcess, call_id: str
) -> tuple[Listener, dict[str, Any]]:
    listener = await Listener.open(service, f"?call_control_id={call_id}")
    first = await listener.message("format")
    return listener, first


async def wait_for_codec(listener: Listener) -> dict[str, Any]:
    """The format message that announces a live stream's codec."""
    while True:
        message = await listener.message("format")
        if message["codec"] is not None:
            return message


@dataclasses.dataclass
class LiveCall:
    call_id: str
    listener: Listener
    stream: TelnyxMediaStream
    announced: dict[str, Any]  # the `format` that announced the stream's codec


async def streaming_call(
    service: ServiceProcess, api: httpx.Client, sim: httpx.Client, **stream_options: Any
) -> LiveCall:
    """A dialled call, a listener, and a started carrier stream the listener has been told of."""
    call_id, token = dial(api, sim)
    listener, _ = await started_listener(service, call_id)
    stream = await open_stream(service, call_id, token, **stream_options)
    await stream.begin()
    return LiveCall(call_id, listener, stream, await wait_for_codec(listener))


async def closed(listener: Listener) -> tuple[int | None, str | None]:
    try:
        while True:
            await listener.next()
    except ConnectionClosed:
        return listener.connection.close_code, listener.connection.close_reason


def call_events(service: ServiceProcess, call_id: str) -> Any:
    return EventsClient.open(service.ws_url, f"?call_control_id={call_id}")


# --- carrier → listener ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("encoding", "rate"), [("PCMU", 8000), ("PCMA", 8000), ("L16", 16000), ("L16", 8000)]
)
async def test_known_audio_reaches_the_listener_bit_exact_with_tracks_apart(
    service: ServiceProcess, api: httpx.Client, sim: httpx.Client, encoding: str, rate: int
) -> None:
    live = await streaming_call(service, api, sim, encoding=encoding, sample_rate=rate)
    listener, stream, announced = live.listener, live.stream, live.announced
    assert announced["codec"] == {
        "encoding": encoding,
        "sample_rate": rate,
        "channels": 1,
        "bytes_per_sample": 2 if encoding == "L16" else 1,
        "byte_order": "big" if encoding == "L16" else None,
    }
    assert announced["stream_id"] == stream.stream_id
    assert announced["frame"]["header_bytes"] == 12
    assert announced["frame"]["tracks"] == ["inbound", "outbound"]

    inbound_pcm = sweep(0.5, rate)
    outbound_pcm = tone(0.5, 440.0, rate)
    frame_bytes = rate // 50 * 2  # 20 ms of PCM16
    inbound = [ENCODE[encoding](c) for c in chunks(inbound_pcm, frame_bytes)]
    outbound = [ENCODE[encoding](c) for c in chunks(outbound_pcm, frame_bytes)]
    for mine, theirs in zip(inbound, outbound, strict=True):
        await stream.media(mine, "inbound")
        await stream.media(theirs, "outbound")
    frames = await listener.frames_until(len(inbound) + len(outbound))

    assert {f.kind for f in frames} == {1}
    got_in = [f for f in frames if f.track == 0]
    got_out = [f for f in frames if f.track == 1]
    assert [f.payload for f in got_in] == inbound
    assert [f.payload for f in got_out] == outbound
    assert [f.chunk for f in got_in] == list(range(1, len(inbound) + 1))
    assert [f.timestamp for f in got_in] == [20 * i for i in range(len(inbound))]
    decoded = samples_of(b"".join(DECODE[encoding](f.payload) for f in got_in))
    if encoding == "L16":
        assert decoded == samples_of(inbound_pcm)
    else:
        assert snr_db(samples_of(inbound_pcm), decoded) > 30  # G.711 quantisation, nothing worse

    await stream.stop()
    end = await listener.message("end")
    assert end["reason"] == "stream_stopped"
    assert end["frames"] == len(frames)
    assert await closed(listener) == (1000, "stream_stopped")
    service.wait_for_log(lambda e: e.get("event") == "Frontend client connected to audio stream")
    service.wait_for_log(
        lambda e: e.get("event") == "Upgrading to audio-stream WebSocket (path: /frontend-audio)"
    )
    service.wait_for_log(
        lambda e: e.get("event") == "Upgrading to audio-stream WebSocket (path: /audio-stream)"
    )


async def test_shuffled_frames_come_out_in_order(
    service: ServiceProcess, api: httpx.Client, sim: httpx.Client
) -> None:
    live = await streaming_call(service, api, sim)
    listener, stream = live.listener, live.stream
    async with await call_events(service, live.call_id) as events:
        messages = [stream.media_message(bytes([i]) * 160) for i in range(40)]
        rng = random.Random(7)
        for block in range(0, 40, 4):  # shuffle inside blocks of 4: within the window of 8
            part = messages[block : block + 4]
            rng.shuffle(part)
            for message in part:
                await stream.send(message)
        frames = await listener.frames_until(40)
        assert [f.chunk for f in frames] == list(range(1, 41))
        assert [f.payload[0] for f in frames] == list(range(40))
        await stream.stop()
        stopped = await events.until(lambda m: m.get("type") == "media.stopped")
    assert stopped["payload"]["outcome"] == "stopped"
    assert stopped["payload"]["reordered"] > 0
    assert stopped["payload"]["gaps"] == 0
    assert stopped["payload"]["late_dropped"] == 0


async def test_a_missing_frame_becomes_a_gap_and_its_late_copy_is_dropped(
    service: ServiceProcess, api: httpx.Client, sim: httpx.Client
) -> None:
    live = await streaming_call(service, api, sim)
    listener, stream = live.listener, live.stream
    async with await call_events(service, live.call_id) as events:
        messages = [stream.media_message(bytes([i]) * 160) for i in range(30)]
        late = messages.pop(3)  # chunk 4 arrives after the window has given up on it
        for message in messages:
            await stream.send(message)
        await stream.send(late)
        await stream.stop()
        await listener.message("end")
        stopped = await events.until(lambda m: m.get("type") == "media.stopped")
    assert [f.chunk for f in listener.frames] == [c for c in range(1, 31) if c != 4]
    assert stopped["payload"]["gaps"] == 1
    assert stopped["payload"]["late_dropped"] == 1


async def test_a_slow_listener_delays_neither_the_carrier_nor_another_listener(
    service: ServiceProcess, api: httpx.Client, sim: httpx.Client
) -> None:
    live = await streaming_call(service, api, sim)
    call_id, fast, stream = live.call_id, live.listener, live.stream
    path = "/frontend-audio" + with_token(f"?call_control_id={call_id}")
    slow = RawWebSocket("127.0.0.1", service.port, path, rcvbuf=4096)
    assert slow.status == 101
    first = await asyncio.to_thread(slow.read_frame)  # the format: it is subscribed now
    assert first is not None
    assert first[0] == OP_TEXT
    # ...and from here on it reads nothing while 8 MB of audio goes by.
    total = 500
    for index in range(total):
        # In lock-step with the fast listener: if anything waited on the stalled one, this
        # loop would stall too.
        await stream.media(bytes([index % 256]) * 16000)  # 2 s of PCMU per frame
        await fast.frames_until(index + 1)
    frames = fast.frames
    assert [f.chunk for f in frames] == list(range(1, total + 1))
    await stream.stop()
    assert (await fast.message("end"))["dropped"] == 0

    def drain() -> tuple[list[int], dict[str, Any], int]:
        chunk_numbers: list[int] = []
        end: dict[str, Any] = {}
        while (frame := slow.read_frame()) is not None:
            opcode, payload = frame
            if opcode == OP_BINARY:
                chunk_numbers.append(int.from_bytes(payload[4:8], "big"))
            elif opcode == OP_TEXT:
                message = orjson.loads(payload)
                if message["type"] == "end":
                    end = message
            elif opcode == OP_CLOSE:
                return chunk_numbers, end, int.from_bytes(payload[:2], "big")
        raise AssertionError("no close frame")

    received, end, code = await asyncio.to_thread(drain)
    slow.close()
    assert code == 1000
    assert end["dropped"] > 0
    assert end["frames"] + end["dropped"] == total
    assert len(received) == end["frames"]
    assert received == sorted(received)
    assert received[-1] == total  # what it kept is the newest audio
    metrics = api.get("/metrics").text
    drops = [
        line for line in metrics.splitlines() if line.startswith("callbridge_media_listener_drops")
    ]
    assert drops
    assert float(drops[0].split()[-1]) >= end["dropped"]


async def test_a_listener_joining_mid_call_starts_at_live_audio(
    service: ServiceProcess, api: httpx.Client, sim: httpx.Client
) -> None:
    live = await streaming_call(service, api, sim)
    call_id, early, stream = live.call_id, live.listener, live.stream
    for _ in range(10):
        await stream.media(b"\xff" * 160)
    await early.frames_until(10)
    late, joined = await started_listener(service, call_id)
    assert joined["codec"]["encoding"] == "PCMU"  # the format comes from the stored call
    assert joined["stream_id"] == stream.stream_id
    for _ in range(5):
        await stream.media(b"\xff" * 160)
    frames = await late.frames_until(5)
    assert [f.chunk for f in frames] == [11, 12, 13, 14, 15]
    metrics = api.get("/metrics").text
    assert f'callbridge_call_media_listeners{{call_control_id="{call_id}"}} 2.0' in metrics
    assert f'callbridge_call_media_streams{{call_control_id="{call_id}"}} 1.0' in metrics
    assert f'callbridge_call_media_frames_in_total{{call_control_id="{call_id}"}} 15.0' in metrics
    await stream.stop()
    await late.message("end")


# --- the carrier side: authentication, codecs, lifecycle --------------------------------------


@pytest.mark.parametrize("auth_via", ["header", "query", "connected"])
async def test_the_stream_token_is_accepted_from_header_query_or_connected(
    service: ServiceProcess,
    api: httpx.Client,
    sim: httpx.Client,
    auth_via: Any,
) -> None:
    live = await streaming_call(service, api, sim, auth_via=auth_via)
    assert live.announced["stream_id"] == live.stream.stream_id
    await live.stream.stop()


@pytest.mark.parametrize(
    ("case", "reason"),
    [
        ("missing", "missing stream token"),
        ("wrong", "invalid stream token for this call"),
        ("other_call", "invalid stream token for this call"),
        ("unknown_call", "unknown call_control_id in start"),
    ],
)
async def test_streams_without_a_valid_token_for_a_known_call_are_refused(
    service: ServiceProcess, api: httpx.Client, sim: httpx.Client, case: str, reason: str
) -> None:
    call_id, token = dial(api, sim)
    _, other_token = dial(api, sim)
    presented, named = {
        "missing": (None, call_id),
        "wrong": ("not-the-token", call_id),
        "other_call": (other_token, call_id),
        "unknown_call": (token, "v3:no-such-call"),
    }[case]
    stream = await open_stream(service, named, presented)
    await stream.begin()
    await stream.connection.wait_closed()
    assert stream.connection.close_code == 1008
    assert (stream.connection.close_reason or "").startswith(reason)
    call = api.get(f"/api/calls/{call_id}").json()["data"]
    assert call["media"]["stream_id"] is None  # nothing was recorded for a refused stream


async def test_frames_that_once_crashed_the_handshake_are_dropped(
    service: ServiceProcess, api: httpx.Client, sim: httpx.Client
) -> None:
    """Found by the fuzz suite: before `start`, a media frame with a list as its track or "²" as
    its sequence number raised out of the parser, and the socket dropped without a close frame
    (1006). They are malformed frames like any other: dropped, and the stream starts."""
    call_id, token = dial(api, sim)
    stream = await open_stream(service, call_id, token)
    await stream.send({"event": "media", "media": {"track": ["inbound"], "payload": "AA=="}})
    await stream.send({"event": "media", "sequence_number": "²", "media": {"payload": "AA=="}})
    await stream.begin()
    await stream.media(bytes(160))
    await stream.stop()
    await stream.connection.wait_closed()
    assert (stream.connection.close_code, stream.connection.close_reason) == (
        1000,
        "stream stopped",
    )


async def test_a_sequence_number_past_64_bits_does_not_poison_the_event_log(
    service: ServiceProcess, api: httpx.Client, sim: httpx.Client
) -> None:
    """Found by the fuzz suite: a 30-digit sequence number was held, then flushed as a gap of
    10**29 into `media.stopped`, which no JSON encoder of ours could write: every /call-events
    client closed with 1011, and every replay through that seq failed again."""
    call_id, token = dial(api, sim)
    async with await call_events(service, call_id) as events:
        await events.next()  # welcome
        stream = await open_stream(service, call_id, token)
        await stream.begin()
        huge = stream.media_message(bytes(160))
        huge["sequence_number"] = "1" + "0" * 29
        await stream.send(huge)
        await stream.stop()
        stopped = await events.until(lambda m: m.get("type") == "media.stopped")
        assert stopped["payload"]["malformed"] == 1
        assert stopped["payload"]["gaps"] == 0
    async with await EventsClient.open(
        service.ws_url, f"?since=0&call_control_id={call_id}"
    ) as replay:
        await replay.until(lambda m: m.get("type") == "replayed")


async def test_a_codec_that_cannot_be_relayed_is_refused_with_a_reason(
    service: ServiceProcess, api: httpx.Client, sim: httpx.Client
) -> None:
    call_id, token = dial(api, sim)
    listener, _ = await started_listener(service, call_id)
    stream = await open_stream(service, call_id, token, encoding="G722", sample_rate=16000)
    await stream.begin()
    await stream.connection.wait_closed()
    assert stream.connection.close_code == 1003
    assert "stream PCMU, PCMA or L16" in (stream.connection.close_reason or "")
    end = await listener.message("end")
    assert end["reason"] == "codec_refused"
    assert await closed(listener) == (1000, "codec_refused")
    call = api.get(f"/api/calls/{call_id}").json()["data"]
    assert call["stream"] == "failed"


async def test_dtmf_errors_and_stop_become_call_events(
    service: ServiceProcess, api: httpx.Client, sim: httpx.Client
) -> None:
    call_id, token = dial(api, sim)
    async with await call_events(service, call_id) as events:
        stream = await open_stream(service, call_id, token)
        await stream.begin()
        await events.until(lambda m: m.get("type") == "media.started")
        await stream.send(stream.dtmf_message("7"))
        await stream.send(stream.error_message(100003, "malformed_frame", "bad frame"))
        dtmf = await events.until(lambda m: m.get("type") == "media.dtmf")
        error = await events.until(lambda m: m.get("type") == "media.error")
        await stream.stop()
        stopped = await events.until(lambda m: m.get("type") == "media.stopped")
        state = await events.until(
            lambda m: m.get("type") == "call.state" and m["payload"]["stream"] == "stopped"
        )
    assert dtmf["payload"] == {"stream_id": stream.stream_id, "digit": "7"}
    assert error["payload"]["code"] == 100003
    assert error["payload"]["title"] == "malformed_frame"
    assert stopped["payload"]["outcome"] == "stopped"
    assert state["payload"]["state"] == "streaming"
    service.wait_for_log(
        lambda e: (
            e.get("event") == "Telnyx reported a media stream error"
            and e.get("call_control_id") == call_id
        )
    )


async def test_a_stream_that_drops_without_stop_is_marked_lost(
    service: ServiceProcess, api: httpx.Client, sim: httpx.Client
) -> None:
    live = await streaming_call(service, api, sim)
    call_id, listener, stream = live.call_id, live.listener, live.stream
    async with await call_events(service, call_id) as events:
        await stream.media(b"\x7f" * 160)
        await listener.frames_until(1)
        await stream.close()  # no `stop`
        stopped = await events.until(lambda m: m.get("type") == "media.stopped")
        await events.until(
            lambda m: m.get("type") == "call.state" and m["payload"]["stream"] == "lost"
        )
    assert stopped["payload"]["outcome"] == "lost"
    assert (await listener.message("end"))["reason"] == "stream_lost"
    assert api.get(f"/api/calls/{call_id}").json()["data"]["stream"] == "lost"


async def test_garbage_on_one_stream_leaves_a_concurrent_stream_intact(
    service: ServiceProcess, api: httpx.Client, sim: httpx.Client
) -> None:
    noisy_id, noisy_token = dial(api, sim)
    quiet_id, quiet_token = dial(api, sim)
    noisy_listener, _ = await started_listener(service, noisy_id)
    quiet_listener, _ = await started_listener(service, quiet_id)
    noisy = await open_stream(service, noisy_id, noisy_token)
    quiet = await open_stream(service, quiet_id, quiet_token)
    await noisy.begin()
    await quiet.begin()
    await wait_for_codec(noisy_listener)
    await wait_for_codec(quiet_listener)

    def media(payload: str, **extra: Any) -> str:
        body = {"track": "inbound", "chunk": "1", "timestamp": "0", "payload": payload, **extra}
        return orjson.dumps(
            {"event": "media", "sequence_number": "999", "stream_id": "x", "media": body}
        ).decode()

    garbage: dict[str, str | bytes] = {
        "bad_json": '{"event": "media", ',
        "binary": b"\x00\x01\x02",
        "bad_base64": media("%%%not base64%%%"),
        "unknown_event": '{"event": "teleport"}',
        "bad_number": media("AAAA", chunk="one"),
        "bad_track": media("AAAA", track="sideways"),
        "missing_field": '{"event": "media", "sequence_number": "5"}',
        "oversized": media("A" * 300_000),
    }
    sent = 0
    for kind, junk in garbage.items():
        for _ in range(3):  # each kind repeatedly: logged once, counted every time
            await noisy.send(junk)
            await noisy.media(bytes([sent]) * 160)
            await quiet.media(bytes([sent]) * 160)
            sent += 1
        assert kind
    noisy_frames = await noisy_listener.frames_until(sent)
    quiet_frames = await quiet_listener.frames_until(sent)
    assert [f.payload[0] for f in noisy_frames] == list(range(sent))
    assert [f.payload[0] for f in quiet_frames] == list(range(sent))
    await noisy.stop()
    await quiet.stop()
    assert (await noisy_listener.message("end"))["reason"] == "stream_stopped"  # never closed
    assert (await quiet_listener.message("end"))["reason"] == "stream_stopped"
    warnings = [
        entry
        for entry in service.logs
        if entry.get("event") == "Malformed frame on media stream dropped"
        and entry.get("call_control_id") == noisy_id
    ]
    assert sorted(w["kind"] for w in warnings) == sorted(garbage)  # once per kind
    metrics = api.get("/metrics").text
    assert 'callbridge_media_malformed_total{kind="bad_base64",source="carrier"}' in metrics


# --- the browser side --------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("query", "code", "reason"),
    [
        ("", 4400, "call_control_id query parameter is required"),
        ("?call_control_id=v3:nobody", 4404, "unknown call_control_id"),
    ],
)
async def test_listeners_need_a_known_call(
    service: ServiceProcess, query: str, code: int, reason: str
) -> None:
    listener = await Listener.open(service, query)
    assert await closed(listener) == (code, reason)


async def test_listeners_hear_the_call_end_and_late_joiners_are_told(
    service: ServiceProcess, api: httpx.Client, sim: httpx.Client
) -> None:
    live = await streaming_call(service, api, sim)
    call_id, listener = live.call_id, live.listener
    assert sim.post(f"/_sim/calls/{call_id}/hangup").status_code < 300
    end = await listener.message("end")
    assert end["reason"] == "call_ended"
    assert await closed(listener) == (1000, "call ended")

    late, joined = await started_listener(service, call_id)
    assert joined["call_state"] == "ended"
    assert (await late.message("end"))["reason"] == "call_ended"
    assert await closed(late) == (1000, "call ended")


async def test_a_listener_before_the_stream_is_told_when_it_starts(
    service: ServiceProcess, api: httpx.Client, sim: httpx.Client
) -> None:
    call_id, token = dial(api, sim)
    listener, first = await started_listener(service, call_id)
    assert first["codec"] is None
    assert first["call_control_id"] == call_id
    stream = await open_stream(service, call_id, token, encoding="PCMA")
    await stream.begin()
    assert (await wait_for_codec(listener))["codec"]["encoding"] == "PCMA"
    await stream.stop()


async def test_bad_browser_messages_get_an_error_and_the_socket_lives_on(
    service: ServiceProcess, api: httpx.Client, sim: httpx.Client
) -> None:
    call_id, _ = dial(api, sim)
    listener, _ = await started_listener(service, call_id)
    await listener.connection.send("not json")
    assert (await listener.message("error"))["code"] == 4400
    await listener.send_json({"type": "sing"})
    assert "unknown message type" in (await listener.message("error"))["reason"]
    await listener.connection.send(b"\x00\x00")
    assert "talk.start first" in (await listener.message("error"))["reason"]
    await listener.send_json({"type": "talk.start", "sample_rate": 44100})
    assert "8000 or 16000" in (await listener.message("error"))["reason"]
    await listener.send_json({"type": "ping"})
    assert await listener.message("pong") == {"type": "pong"}


# --- talking into the call ---------------------------------------------------------------------


async def carrier_media(stream: TelnyxMediaStream, count: int) -> list[bytes]:
    """The next `count` talk-back payloads the service sent the carrier."""
    payloads: list[bytes] = []
    while len(payloads) < count:
        message = await asyncio.wait_for(stream.receive(), 15)
        assert message["event"] == "media", message
        assert set(message) == {"event", "media"}
        payloads.append(base64.b64decode(message["media"]["payload"], validate=True))
    return payloads


async def test_talk_back_arrives_at_the_carrier_in_exact_20ms_pcmu_frames(
    service: ServiceProcess, api: httpx.Client, sim: httpx.Client
) -> None:
    live = await streaming_call(service, api, sim)
    talker, stream = live.listener, live.stream
    assert live.announced["talk"]["codec"] == "PCMU"
    other, _ = await started_listener(service, live.call_id)

    await talker.send_json({"type": "talk.start", "encoding": "pcm16", "sample_rate": 8000})
    started = await talker.message("talk.started")
    assert started["codec"] == "PCMU"
    await other.send_json({"type": "talk.start", "encoding": "pcm16", "sample_rate": 8000})
    refused = await other.message("talk.refused")
    assert refused["code"] == 4409

    speech = sweep(1.01, 8000)  # 8080 samples: 50 whole frames and a 80-sample tail
    for piece in chunks(speech, 334):
        await talker.connection.send(piece)
    await talker.send_json({"type": "talk.stop"})
    await talker.message("talk.stopped")
    payloads = await carrier_media(stream, 51)
    assert {len(p) for p in payloads} == {160}  # 20 ms each, nothing shorter
    sent = b"".join(payloads)
    assert sent[: len(speech) // 2] == ulaw_encode(speech)  # bit-exact at the call's rate
    tail = samples_of(ulaw_decode(sent[len(speech) // 2 :]))
    assert max(abs(s) for s in tail) <= 8  # padded with silence

    # The talker has let go: the other browser may talk now, with marks and clear.
    await other.send_json({"type": "talk.start", "encoding": "PCMU"})
    await other.message("talk.started")
    await other.connection.send(b"\xff" * 100)
    await other.send_json({"type": "mark", "name": "greeting-done"})
    assert await carrier_media(stream, 1) == [b"\xff" * 100 + ulaw_encode(b"\x00\x00" * 60)]
    mark = await asyncio.wait_for(stream.receive(), 15)
    assert mark == {"event": "mark", "mark": {"name": "greeting-done"}}
    await stream.send(stream.mark_message("greeting-done"))  # Telnyx echoes it once played
    assert (await other.message("mark"))["name"] == "greeting-done"
    assert (await talker.message("mark"))["name"] == "greeting-done"
    await other.send_json({"type": "clear"})
    assert await asyncio.wait_for(stream.receive(), 15) == {"event": "clear"}
    await stream.stop()


async def test_talk_back_at_16khz_is_resampled_to_the_call_rate(
    service: ServiceProcess, api: httpx.Client, sim: httpx.Client
) -> None:
    live = await streaming_call(service, api, sim)
    talker, stream = live.listener, live.stream
    await talker.send_json({"type": "talk.start", "encoding": "pcm16", "sample_rate": 16000})
    await talker.message("talk.started")
    for piece in chunks(tone(0.5, 1000.0, 16000), 640):
        await talker.connection.send(piece)
    await talker.send_json({"type": "talk.stop"})
    payloads = await carrier_media(stream, 25)  # 0.5 s at 8 kHz is 25 frames of 160 bytes
    assert {len(p) for p in payloads} == {160}
    decoded = samples_of(ulaw_decode(b"".join(payloads)))[400:3600]  # skip the filter's edges
    amplitude = amplitude_at(decoded, 1000.0, 8000)
    assert 20 * math.log10(amplitude / 8000) == pytest.approx(0, abs=1.0)
    assert 20 * math.log10(amplitude / residual_rms(decoded, 1000.0, 8000)) > 25  # clean tone
    await stream.stop()


async def test_talking_needs_a_bidirectional_stream(
    service: ServiceProcess, api: httpx.Client
) -> None:
    response = api.post("/api/calls", json={"to": "+15550100012", "bidirectional": False})
    call_id = response.json()["data"]["call_control_id"]
    listener, announced = await started_listener(service, call_id)
    assert announced["talk"] is None
    await listener.send_json({"type": "talk.start"})
    error = await listener.message("error")
    assert error["code"] == 4409
    assert "not bidirectional" in error["reason"]


async def test_a_listener_may_talk_once_a_later_stream_is_bidirectional(
    service: ServiceProcess, api: httpx.Client, sim: httpx.Client
) -> None:
    response = api.post("/api/calls", json={"to": "+15550100012", "bidirectional": False})
    call_id = response.json()["data"]["call_control_id"]
    listener, announced = await started_listener(service, call_id)
    assert announced["talk"] is None
    # Streaming restarts as bidirectional (as an answer does for an inbound call).
    assert api.post(f"/api/calls/{call_id}/streaming/start").status_code == 200
    token = sim.get(f"/_sim/calls/{call_id}").json()["stream"]["stream_auth_token"]
    stream = await open_stream(service, call_id, token)
    await stream.begin()
    assert (await wait_for_codec(listener))["talk"]["codec"] == "PCMU"
    await listener.send_json({"type": "talk.start", "encoding": "pcm16", "sample_rate": 8000})
    assert (await listener.message("talk.started"))["codec"] == "PCMU"
    await stream.stop()
