"""Two instances behind nginx, sharing PostgreSQL and Redis, with a standalone simulator whose
media sockets reach them through nginx (`CALLBRIDGE_PUBLIC_URL`), as Telnyx's would.

- SIGTERM to the instance holding a call's media stream: it asks Telnyx for a new stream, nginx
  sends it to the other instance, and only then is the old socket closed. A listener on the
  other instance switches to the new stream and keeps hearing audio after the first instance
  has exited; its /call-events client misses nothing.
- kill -9 of the instance holding the stream: the other sees its heartbeat go stale, ends the
  stream as lost, and asks Telnyx to stream the call again.

Heartbeats are fast here (0.25 s, dead after 2 s) so that the second test is short.
"""

from __future__ import annotations

import signal
from collections.abc import AsyncIterator, Iterator
from typing import Any

import httpx
import pytest

from tests.conftest import ServiceProcess
from tests.helpers import EventsClient
from tests.reliability.support import LONG_CALL, frames_after, stream_format
from tests.scale.cluster import Cluster, running_cluster
from tests.ws.audio_client import Listener, close_all

FAST_HEARTBEATS = {
    "CALLBRIDGE_HEARTBEAT_INTERVAL": "0.25",
    "CALLBRIDGE_HEARTBEAT_TIMEOUT": "2",
    "CALLBRIDGE_HANDOVER_TIMEOUT": "10",
}


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    with running_cluster(tmp_path_factory.mktemp("pair"), 2, **FAST_HEARTBEATS) as running:
        yield running


@pytest.fixture(autouse=True)
async def _healthy(cluster: Cluster) -> AsyncIterator[None]:
    cluster.ensure_running()
    yield
    await close_all()


def rest(target: ServiceProcess | Cluster) -> httpx.Client:
    """The REST API of one instance, or of the cluster through nginx (every instance takes
    the same API keys)."""
    some = target.instances[0] if isinstance(target, Cluster) else target
    return httpx.Client(base_url=target.url, headers=some.api_headers, timeout=15)


async def streaming_call(
    cluster: Cluster, **dial: str
) -> tuple[str, ServiceProcess, ServiceProcess, str]:
    """A call dialled through nginx (`dial`: more of the request) whose media stream has
    started: (call id, the instance holding the stream, the other one, the stream's id)."""
    token = cluster.instances[0].ws_token
    async with await EventsClient.open(cluster.ws_url, token=token) as events:
        await events.next()  # welcome: events from here on reach this client
        with rest(cluster) as api:
            response = api.post("/api/calls", json={"to": LONG_CALL, **dial})
        assert response.status_code == 201, response.text
        call_id = response.json()["data"]["call_control_id"]
        started = await events.until(
            lambda m: m["type"] == "media.started" and m["call_control_id"] == call_id
        )
    with rest(cluster) as api:
        holder_id = api.get(f"/api/calls/{call_id}").json()["data"]["media"]["instance"]
    holder = next(i for i in cluster.instances if holder_id.endswith(f":{i.port}"))
    other = next(i for i in cluster.instances if i is not holder)
    return call_id, holder, other, started["payload"]["stream_id"]


def store_events(instance: ServiceProcess, call_id: str) -> list[dict[str, Any]]:
    with rest(instance) as api:
        response = api.get(f"/api/calls/{call_id}/events")
    assert response.status_code == 200, response.text
    events: list[dict[str, Any]] = response.json()["data"]
    return events


def same_event(message: dict[str, Any]) -> tuple[Any, ...]:
    return (message["seq"], message["type"], message["payload"])


async def test_sigterm_hands_the_stream_to_the_other_instance_and_listeners_keep_hearing(
    cluster: Cluster,
) -> None:
    # PCMA, not the scenario's own PCMU: the new stream must be asked for in the same codec.
    call_id, holder, other, old_stream = await streaming_call(cluster, codec="PCMA")
    token = other.ws_token
    listener = await Listener.open(other, f"?call_control_id={call_id}", token=token)
    old_format = await stream_format(listener)
    assert old_format["stream_id"] == old_stream
    assert old_format["codec"]["encoding"] == "PCMA"
    await listener.frames_until(5)
    events = await EventsClient.open(other.ws_url, f"?call_control_id={call_id}", token=token)
    welcome = await events.next()

    assert holder.process is not None
    holder.process.send_signal(signal.SIGTERM)
    new_format = await stream_format(listener, not_stream=old_stream)
    assert new_format["codec"] == old_format["codec"]
    assert new_format["talk"] == old_format["talk"]
    assert holder.stop() == 0
    handed = [e for e in holder.logs if e.get("event") == "Media stream handed over"]
    assert [(e["call_control_id"], e["stream_id"]) for e in handed] == [(call_id, old_stream)]
    assert handed[0]["new_stream_id"] == new_format["stream_id"]

    # The holder has exited: what the listener hears now is the new stream, on `other`.
    await frames_after(listener, len(listener.frames), 10)
    assert not [m for m in listener.messages if m["type"] == "end"]

    log = store_events(other, call_id)
    stopped = [e["payload"] for e in log if e["type"] == "media.stopped"]
    assert [(p["stream_id"], p["outcome"]) for p in stopped] == [(old_stream, "stopped")]
    # Closed by the holder once the new stream ran, or ended by Telnyx (`stop`) as replaced.
    assert stopped[0]["reason"] in ("handed over", "stop")
    started = [e["payload"]["stream_id"] for e in log if e["type"] == "media.started"]
    assert started == [old_stream, new_format["stream_id"]]
    # Not one event of the call missed by the browser on the other instance, none twice.
    await events.until(lambda m: m.get("seq", 0) >= log[-1]["seq"] and m["type"] != "welcome")
    received = [same_event(m) for m in events.events()]
    assert received == [same_event(e) for e in log if e["seq"] > welcome["seq"]]
    with rest(cluster) as api:
        call = api.get(f"/api/calls/{call_id}").json()["data"]
        assert (call["stream"], call["media"]["stream_id"]) == ("active", new_format["stream_id"])
        assert call["media"]["instance"].endswith(f":{other.port}")
        assert api.post(f"/api/calls/{call_id}/hangup").status_code == 200
    await events.close()


async def test_kill_9_of_the_holder_lets_the_other_end_its_stream_and_resume_it(
    cluster: Cluster,
) -> None:
    call_id, holder, other, old_stream = await streaming_call(cluster)
    listener = await Listener.open(other, f"?call_control_id={call_id}", token=other.ws_token)
    assert (await stream_format(listener))["stream_id"] == old_stream

    holder.stop(signal.SIGKILL)
    lost = other.wait_for_log(
        lambda e: (
            e.get("event") == "Media stream lost with its instance"
            and e["call_control_id"] == call_id
        )
    )
    assert lost["instance"].endswith(f":{holder.port}")
    assert "heartbeat" in lost["reason"]
    other.wait_for_log(
        lambda e: (
            e.get("event") == "Lost media stream asked for again"
            and e["call_control_id"] == call_id
        )
    )
    new_format = await stream_format(listener, not_stream=old_stream)
    await frames_after(listener, len(listener.frames), 10)
    assert not [m for m in listener.messages if m["type"] == "end"]

    log = store_events(other, call_id)
    stopped = [e["payload"] for e in log if e["type"] == "media.stopped"]
    assert [(p["stream_id"], p["outcome"], p["instance"]) for p in stopped] == [
        (old_stream, "lost", lost["instance"])
    ]
    started = [e["payload"]["stream_id"] for e in log if e["type"] == "media.started"]
    assert started == [old_stream, new_format["stream_id"]]
    with rest(cluster) as api:
        assert api.post(f"/api/calls/{call_id}/hangup").status_code == 200
