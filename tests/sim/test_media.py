"""The simulator's media socket: Telnyx's wire shapes, real speech, talk-back played back, and
the demo path from a fresh start (serve → dial → events → audio at a listener → hangup)."""

from __future__ import annotations

import asyncio
import base64
import contextlib
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest
from websockets.asyncio.server import ServerConnection, serve

from callbridge.audio.g711 import alaw_encode, l16_le_to_be, ulaw_decode, ulaw_encode
from callbridge.sim.speech import speech_pcm
from callbridge.sim.streamer import MediaPlan, SimulatedStream
from tests.conftest import ServiceProcess, running_service
from tests.helpers import EventsClient, call_state_is
from tests.signals import chunks, tone
from tests.ws.audio_client import Listener

WAIT = 15.0


class Peer:
    """A stand-in for the service's /audio-stream: records what the simulator sends."""

    def __init__(self) -> None:
        self.headers: dict[str, str] = {}
        self.messages: asyncio.Queue[dict[str, Any]] = asyncio.Queue()
        self.connection: ServerConnection | None = None
        self.connected = asyncio.Event()

    async def handler(self, connection: ServerConnection) -> None:
        assert connection.request is not None
        self.headers = dict(connection.request.headers)
        self.connection = connection
        self.connected.set()
        with contextlib.suppress(Exception):
            async for raw in connection:
                self.messages.put_nowait(orjson.loads(raw))

    async def next(self, event: str | None = None) -> dict[str, Any]:
        while True:
            message = await asyncio.wait_for(self.messages.get(), WAIT)
            if event is None or message["event"] == event:
                return message

    async def send(self, message: dict[str, Any]) -> None:
        assert self.connection is not None
        await self.connection.send(orjson.dumps(message).decode())


def media_message(payload: bytes) -> dict[str, Any]:
    return {"event": "media", "media": {"payload": base64.b64encode(payload).decode()}}


@pytest.fixture
async def peer() -> AsyncIterator[tuple[Peer, str]]:
    recorder = Peer()
    async with serve(recorder.handler, "127.0.0.1", 0) as server:
        port = next(iter(server.sockets)).getsockname()[1]
        yield recorder, f"ws://127.0.0.1:{port}/audio-stream"


async def test_the_media_socket_speaks_telnyx_exactly(peer: tuple[Peer, str]) -> None:
    recorder, url = peer
    plan = MediaPlan(url=url, token="tok-123", call_control_id="v3:abc", bidirectional=True)
    stream = SimulatedStream(plan)
    task = asyncio.create_task(stream.run())
    connected = await recorder.next()
    assert recorder.headers["x-telnyx-streaming-auth-token"] == "tok-123"
    assert connected == {"event": "connected", "version": "1.0.0"}
    start = await recorder.next()
    assert start["event"] == "start"
    assert start["sequence_number"] == "1"
    assert isinstance(start["stream_id"], str)
    assert start["start"]["call_control_id"] == "v3:abc"
    assert start["start"]["media_format"] == {
        "encoding": "PCMU",
        "sample_rate": 8000,
        "channels": 1,
    }
    frames = [await recorder.next() for _ in range(6)]
    assert [f["sequence_number"] for f in frames] == [str(n) for n in range(2, 8)]
    assert {f["event"] for f in frames} == {"media"}
    assert {f["stream_id"] for f in frames} == {start["stream_id"]}
    inbound = [f["media"] for f in frames if f["media"]["track"] == "inbound"]
    outbound = [f["media"] for f in frames if f["media"]["track"] == "outbound"]
    assert [m["chunk"] for m in inbound] == ["1", "2", "3"]
    assert [m["timestamp"] for m in inbound] == ["0", "20", "40"]
    assert [m["chunk"] for m in outbound] == ["1", "2", "3"]
    speech = speech_pcm(8000)
    sent = b"".join(base64.b64decode(m["payload"], validate=True) for m in inbound)
    assert sent == ulaw_encode(speech[: 3 * 320])  # real speech, 20 ms per frame
    assert {base64.b64decode(m["payload"]) for m in outbound} == {ulaw_encode(bytes(320))}

    # A mark with nothing queued comes straight back; clear returns marks still pending.
    await recorder.send({"event": "mark", "mark": {"name": "now"}})
    echoed = await recorder.next("mark")
    assert echoed["mark"] == {"name": "now"}
    assert echoed["sequence_number"].isdigit()
    await recorder.send(
        {"event": "media", "media": {"payload": base64.b64encode(b"\x00" * 8000).decode()}}
    )
    await recorder.send({"event": "mark", "mark": {"name": "after-a-second"}})
    await recorder.send({"event": "clear"})
    assert (await recorder.next("mark"))["mark"] == {"name": "after-a-second"}

    stream.stop()
    stop = await recorder.next("stop")
    assert stop["stop"]["call_control_id"] == "v3:abc"
    assert stop["stream_id"] == start["stream_id"]
    await asyncio.wait_for(task, WAIT)


async def test_talk_back_is_played_on_the_outbound_track(peer: tuple[Peer, str]) -> None:
    recorder, url = peer
    plan = MediaPlan(url=url, token="t", call_control_id="v3:abc", bidirectional=True)
    stream = SimulatedStream(plan)
    task = asyncio.create_task(stream.run())
    await recorder.next("start")
    talk = bytes(range(1, 161)) * 3  # three 20 ms PCMU frames, none of them silence
    await recorder.send(media_message(talk))
    await recorder.send({"event": "mark", "mark": {"name": "done"}})
    played: list[bytes] = []
    while True:
        message = await recorder.next()
        if message["event"] == "mark":
            break
        if message["media"]["track"] == "outbound":
            played.append(base64.b64decode(message["media"]["payload"]))
    heard = [frame for frame in played if frame != ulaw_encode(bytes(320))]
    # What the far party hears is what was sent (μ-law's two zeros become one), and the mark
    # came back only after all of it had played.
    assert heard == chunks(ulaw_encode(ulaw_decode(talk)), 160)
    stream.stop()
    await asyncio.wait_for(task, WAIT)


async def test_without_rtp_mode_talk_back_is_dropped(peer: tuple[Peer, str]) -> None:
    recorder, url = peer
    stream = SimulatedStream(MediaPlan(url=url, token="t", call_control_id="v3:abc"))
    task = asyncio.create_task(stream.run())
    await recorder.next("start")
    await recorder.send(
        {"event": "media", "media": {"payload": base64.b64encode(b"\x01" * 160).decode()}}
    )
    await recorder.send({"event": "mark", "mark": {"name": "m"}})
    await recorder.next("mark")  # nothing was queued, so the mark is immediate
    outbound = []
    for _ in range(6):
        message = await recorder.next("media")
        if message["media"]["track"] == "outbound":
            outbound.append(base64.b64decode(message["media"]["payload"]))
    assert set(outbound) == {ulaw_encode(bytes(320))}
    stream.stop()
    await asyncio.wait_for(task, WAIT)


# --- through the service ------------------------------------------------------------------


@pytest.mark.parametrize(
    ("number", "encoding", "rate", "encode"),
    [
        ("+15550100001", "PCMU", 8000, ulaw_encode),
        ("+15550100006", "PCMA", 8000, alaw_encode),
        ("+15550100007", "L16", 16000, l16_le_to_be),
    ],
)
async def test_demo_path_from_a_fresh_start(
    tmp_path: Path, number: str, encoding: str, rate: int, encode: Any
) -> None:
    with running_service(tmp_path) as service:
        api = httpx.AsyncClient(base_url=service.url, timeout=WAIT, headers=service.api_headers)
        async with api, await EventsClient.open(service.ws_url) as events:
            call = (await api.post("/api/calls", json={"to": number})).json()["data"]
            call_id = call["call_control_id"]
            started = await events.until(lambda m: m.get("type") == "media.started")
            assert started["payload"]["encoding"] == encoding
            listener = await Listener.open(service, f"?call_control_id={call_id}")
            announced = await listener.message("format")
            while announced["codec"] is None:
                announced = await listener.message("format")
            assert announced["codec"]["encoding"] == encoding
            assert announced["codec"]["sample_rate"] == rate
            frames = [f for f in await listener.frames_until(40) if f.track == 0]
            speech = speech_pcm(rate)
            size = rate // 50 * 2
            for frame in frames:  # each frame is the speech sample at its place, bit-exact
                offset = ((frame.chunk - 1) * size) % (len(speech) - len(speech) % size)
                assert frame.payload == encode(speech[offset : offset + size])
            assert (await api.post(f"/api/calls/{call_id}/hangup")).status_code == 200
            await events.until(call_state_is(call_id, "ended"))
            end = await listener.message("end")
            assert end["reason"] in ("call_ended", "stream_stopped")
            await listener.close()


async def test_scenarios_drop_the_media_socket_and_press_keys(
    service: ServiceProcess, api: httpx.Client
) -> None:
    async with await EventsClient.open(service.ws_url) as events:
        dropped = api.post("/api/calls", json={"to": "+15550100009"}).json()["data"]
        keys = api.post("/api/calls", json={"to": "+15550100010"}).json()["data"]
        digits: list[str] = []
        lost: dict[str, Any] = {}
        while len(digits) < 5 or not lost:
            event = await events.next()
            if event.get("type") == "media.dtmf":
                assert event["call_control_id"] == keys["call_control_id"]
                digits.append(event["payload"]["digit"])
            elif event.get("type") == "media.stopped" and (
                event["call_control_id"] == dropped["call_control_id"]
            ):
                lost = event
    assert lost["payload"]["outcome"] == "lost"
    assert lost["payload"]["frames"] > 0  # it streamed, then the socket was cut
    assert "".join(digits) == "1234#"
    assert api.get(f"/api/calls/{dropped['call_control_id']}").json()["data"]["stream"] == "lost"


async def test_talk_back_through_the_simulator_is_heard_on_the_outbound_track(
    service: ServiceProcess, api: httpx.Client
) -> None:
    call_id = api.post("/api/calls", json={"to": "+15550100011"}).json()["data"]["call_control_id"]
    listener = await Listener.open(service, f"?call_control_id={call_id}")
    announced = await listener.message("format")
    while announced["codec"] is None:
        announced = await listener.message("format")
    await listener.send_json({"type": "talk.start", "encoding": "pcm16", "sample_rate": 8000})
    await listener.message("talk.started")
    voice = tone(0.2, 700.0, 8000)  # ten whole 20 ms frames
    await listener.connection.send(voice)
    await listener.send_json({"type": "mark", "name": "said-it"})
    mark = await listener.message("mark")  # echoed by the simulator once it had played it all
    assert mark["name"] == "said-it"
    silence = ulaw_encode(bytes(320))
    heard = [f.payload for f in listener.frames if f.track == 1 and f.payload != silence]
    assert heard == chunks(ulaw_encode(voice), 160)
    await listener.close()


async def test_talk_back_plays_even_when_only_the_inbound_track_is_streamed(
    peer: tuple[Peer, str],
) -> None:
    recorder, url = peer
    plan = MediaPlan(
        url=url, token="t", call_control_id="v3:abc", bidirectional=True, track="inbound_track"
    )
    stream = SimulatedStream(plan)
    task = asyncio.create_task(stream.run())
    await recorder.next("start")
    await recorder.send(media_message(b"\x10" * 480))  # 60 ms queued for the far party
    await recorder.send({"event": "mark", "mark": {"name": "played"}})
    tracks = set()
    while (message := await recorder.next())["event"] != "mark":
        tracks.add(message["media"]["track"])
    assert tracks == {"inbound"}  # nothing outbound on the wire, yet the audio was played
    assert message["mark"] == {"name": "played"}
    stream.stop()
    await asyncio.wait_for(task, WAIT)
