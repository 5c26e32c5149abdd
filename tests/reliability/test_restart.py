"""A lone instance that dies or stops, then starts again: nothing is left "active forever".

A standalone simulator plays Telnyx, so the calls outlive the service. The restarted service has
the same instance id (same host and port), so it knows the streams it held.

- kill -9 with two calls streaming; while it is down, the far end of one hangs up and the
  simulator gives up delivering that news. After the restart both streams end as lost
  ("instance restarted"); the carrier says the hung-up call is over, so it ends
  (`call.reconciled`); the other is still up, so its stream is asked for again.
- SIGTERM with nobody to hand the stream over to: the stream ends as lost with the instance, and
  the next start asks for it again.
"""

from __future__ import annotations

import signal
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.conftest import ServiceProcess, service_env
from tests.reliability.support import LONG_CALL
from tests.scale.cluster import standalone_simulator, telnyx_mode


@pytest.fixture
def simulator(tmp_path: Path) -> Iterator[ServiceProcess]:
    sim = standalone_simulator(tmp_path)
    try:
        yield sim
    finally:
        sim.stop()


def started(call_id: str) -> Any:
    return lambda e: e.get("event") == "Media stream started" and e["call_control_id"] == call_id


def events_of(service: ServiceProcess, call_id: str) -> list[dict[str, Any]]:
    with httpx.Client(base_url=service.url, headers=service.api_headers, timeout=15) as api:
        response = api.get(f"/api/calls/{call_id}/events")
    assert response.status_code == 200, response.text
    events: list[dict[str, Any]] = response.json()["data"]
    return events


def test_a_restart_after_kill_9_ends_lost_streams_and_calls_the_carrier_ended(
    tmp_path: Path, simulator: ServiceProcess
) -> None:
    workdir = tmp_path / "service"
    workdir.mkdir()
    service = ServiceProcess(service_env(workdir, **telnyx_mode(simulator)), workdir).start()
    try:
        with httpx.Client(base_url=service.url, headers=service.api_headers, timeout=15) as api:
            calls = [
                api.post("/api/calls", json={"to": LONG_CALL, "codec": "PCMA"}).json()["data"][
                    "call_control_id"
                ]
                for _ in range(2)
            ]
        kept, hung_up = calls
        first_streams = {
            call_id: service.wait_for_log(started(call_id))["stream_id"] for call_id in calls
        }

        service.stop(signal.SIGKILL)
        with httpx.Client(base_url=simulator.url, timeout=15) as sim:
            assert sim.post(f"/_sim/calls/{hung_up}/hangup").status_code == 200
        simulator.wait_for_log(
            lambda e: (
                e.get("event") == "Simulator gave up a webhook"
                and e["call_control_id"] == hung_up
                and e["event_type"] == "call.hangup"
            )
        )

        service.start()
        service.wait_for_log(lambda e: e.get("event") == "Calls checked with the carrier")
        resumed_start = service.wait_for_log(started(kept))
        new_stream = resumed_start["stream_id"]
        assert new_stream != first_streams[kept]
        assert resumed_start["encoding"] == "PCMA"  # asked for as it was, not the call's PCMU

        for call_id in calls:
            lost = [e for e in events_of(service, call_id) if e["type"] == "media.stopped"]
            assert [e["payload"]["stream_id"] for e in lost] == [first_streams[call_id]]
            assert lost[0]["payload"]["outcome"] == "lost"
            assert lost[0]["payload"]["reason"] == "instance restarted"

        ended = events_of(service, hung_up)
        reconciled = [e for e in ended if e["type"] == "call.reconciled"]
        assert [e["payload"]["reason"] for e in reconciled] == ["the carrier says the call is over"]
        assert ended[-1]["type"] == "call.state"
        assert ended[-1]["payload"]["state"] == "ended"
        assert ended[-1]["payload"]["reason"] == "call.reconciled"

        resumed = events_of(service, kept)
        assert [e["payload"]["stream_id"] for e in resumed if e["type"] == "media.started"] == [
            first_streams[kept],
            new_stream,
        ]
        with httpx.Client(base_url=service.url, headers=service.api_headers, timeout=15) as api:
            call = api.get(f"/api/calls/{kept}").json()["data"]
            assert (call["state"], call["stream"]) == ("streaming", "active")
            assert call["media"]["stream_id"] == new_stream
            assert api.post(f"/api/calls/{kept}/hangup").status_code == 200
    finally:
        service.stop()


def test_a_lone_instance_stopped_asks_for_its_streams_again_when_it_starts(
    tmp_path: Path, simulator: ServiceProcess
) -> None:
    workdir = tmp_path / "service"
    workdir.mkdir()
    service = ServiceProcess(service_env(workdir, **telnyx_mode(simulator)), workdir).start()
    try:
        with httpx.Client(base_url=service.url, headers=service.api_headers, timeout=15) as api:
            response = api.post("/api/calls", json={"to": LONG_CALL})
        call_id = response.json()["data"]["call_control_id"]
        first = service.wait_for_log(started(call_id))["stream_id"]

        assert service.stop() == 0  # SIGTERM, with nobody to hand the stream to
        ended = [e for e in service.logs if e.get("event") == "Media stream ended"]
        assert [(e["call_control_id"], e["outcome"]) for e in ended] == [(call_id, "lost")]
        assert ended[0]["reason"] == "instance stopped; no other instance to take the stream"

        service.start()
        again = service.wait_for_log(started(call_id))["stream_id"]
        assert again != first
        log = events_of(service, call_id)
        stopped = [e["payload"] for e in log if e["type"] == "media.stopped"]
        assert [(p["stream_id"], p["outcome"]) for p in stopped] == [(first, "lost")]
        assert [e["payload"]["stream_id"] for e in log if e["type"] == "media.started"] == [
            first,
            again,
        ]
        with httpx.Client(base_url=service.url, headers=service.api_headers, timeout=15) as api:
            assert api.post(f"/api/calls/{call_id}/hangup").status_code == 200
    finally:
        service.stop()
