"""The simulator as a peer: Telnyx-shaped REST and webhooks, standalone or embedded."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.conftest import SEED, ServiceProcess, free_port, running_service, service_env
from tests.helpers import EventsClient, call_state_is


async def test_duplicated_shuffled_webhooks_give_one_clean_history(
    service: ServiceProcess, api: httpx.Client, sim: httpx.Client
) -> None:
    async with await EventsClient.open(service.ws_url) as events:
        call_id = api.post("/api/calls", json={"to": "sip:duplicates@sim"}).json()["data"][
            "call_control_id"
        ]
        await events.until(call_state_is(call_id, "ended"))
    deliveries = [d for d in sim.get("/_sim/deliveries").json() if d["status"] == 200]
    log = api.get(f"/api/calls/{call_id}/events").json()["data"]
    carrier_types = [e["type"] for e in log if e["type"] != "call.state"]
    assert sorted(carrier_types) == sorted(set(carrier_types))  # each event stored once
    assert {"call.initiated", "call.answered", "call.hangup"} <= set(carrier_types)
    assert len(deliveries) > len(carrier_types)  # ... although delivered more often
    states = [e["payload"]["state"] for e in log if e["type"] == "call.state"]
    assert states[-1] == "ended"
    order = ["dialing", "initiated", "answered", "streaming", "ended"]
    assert [order.index(s) for s in states] == sorted(order.index(s) for s in states)


async def test_busy_and_no_answer_scenarios_end_with_their_causes(
    service: ServiceProcess, api: httpx.Client
) -> None:
    async with await EventsClient.open(service.ws_url) as events:
        busy = api.post("/api/calls", json={"to": "+15550100002"}).json()["data"]
        silent = api.post("/api/calls", json={"to": "+15550100003", "timeout_secs": 5}).json()[
            "data"
        ]
        busy_end = await events.until(call_state_is(busy["call_control_id"], "ended"))
        silent_end = await events.until(call_state_is(silent["call_control_id"], "ended"))
    assert busy_end["payload"]["hangup_cause"] == "user_busy"
    assert silent_end["payload"]["hangup_cause"] == "timeout"
    assert busy_end["payload"]["previous_state"] == "initiated"


@pytest.fixture(scope="module")
def standalone_sim(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServiceProcess]:
    tmp = tmp_path_factory.mktemp("sim")
    port = free_port()
    env = service_env(tmp, CALLBRIDGE_PORT=str(port))
    args = (
        "simulate",
        "serve",
        "--port",
        str(port),
        "--telnyx-api-key",
        "KEYtest",
        "--seed",
        SEED,
        "--pace",
        "0.05",
    )
    sim = ServiceProcess(env, tmp, args=args, ready_event="simulator ready").start()
    yield sim
    sim.stop()


def _telnyx_mode(sim: ServiceProcess, api_key: str) -> dict[str, str]:
    ready = next(e for e in sim.logs if e.get("event") == "simulator ready")
    return {
        "TELNYX_API_KEY": api_key,
        "TELNYX_BASE_URL": ready["TELNYX_BASE_URL"],
        "TELNYX_PUBLIC_KEY": ready["TELNYX_PUBLIC_KEY"],
        "TELNYX_CONNECTION_ID": "1234567890",
    }


async def test_service_in_telnyx_mode_against_standalone_simulator(
    tmp_path: Path, standalone_sim: ServiceProcess
) -> None:
    with running_service(tmp_path, **_telnyx_mode(standalone_sim, "KEYtest")) as svc:
        svc.wait_for_log(lambda e: e.get("event") == "callbridge started")
        assert not any(e.get("event", "").startswith("Simulator mode") for e in svc.logs)
        with httpx.Client(base_url=svc.url, headers=svc.api_headers) as api:
            async with await EventsClient.open(svc.ws_url) as events:
                call = api.post("/api/calls", json={"to": "+15550100004"}).json()["data"]
                await events.until(call_state_is(call["call_control_id"], "ended"))
    with httpx.Client(base_url=standalone_sim.url) as sim:
        dial = next(r for r in sim.get("/_sim/requests").json() if r["path"] == "/v2/calls")
    assert dial["auth"] is True
    assert dial["body"]["connection_id"] == "1234567890"
    assert not any("KEYtest" in line for line in svc.raw_lines)


def test_wrong_api_key_is_a_clear_502(tmp_path: Path, standalone_sim: ServiceProcess) -> None:
    with (
        running_service(tmp_path, **_telnyx_mode(standalone_sim, "KEYwrong")) as svc,
        httpx.Client(base_url=svc.url, headers=svc.api_headers) as api,
    ):
        response = api.post("/api/calls", json={"to": "+15550100004"})
    assert response.status_code == 502
    assert response.json()["carrier"]["code"] == "10009"
    assert "Authentication failed" in response.json()["detail"]


def test_missing_public_key_refuses_to_start(tmp_path: Path) -> None:
    env = service_env(tmp_path, TELNYX_API_KEY="KEYx")
    service = ServiceProcess(env, tmp_path)
    with pytest.raises(AssertionError, match="service exited"):
        service.start()
    assert any("TELNYX_PUBLIC_KEY is not set" in line for line in service.raw_lines)
    assert service.stop() == 2
