"""A simulator that runs for hours (the demo, a soak) must not keep what every call left behind.

Found by the soak (bench/soak.py): each call's webhook sender ran forever after the hangup, a
call hung up early kept its script sleeping out the rest of the scenario (an hour for `long`),
and every call, request and delivery was kept for /_sim/.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable

import httpx

from callbridge.sim.scenarios import SCENARIOS
from callbridge.sim.server import ENDED_CALLS_KEPT, LOG_KEPT, Simulator


async def _until(condition: Callable[[], bool], timeout: float = 10.0) -> None:
    async with asyncio.timeout(timeout):
        while not condition():  # noqa: ASYNC110 - polling the simulator from outside
            await asyncio.sleep(0.01)


async def test_ended_calls_leave_no_task_and_are_forgotten_past_a_bound() -> None:
    simulator = Simulator(pace=0.01)  # `long` talks for 36 s at this pace, unless hung up
    simulator._http = httpx.AsyncClient(  # the service: every webhook acknowledged
        transport=httpx.MockTransport(lambda request: httpx.Response(200))
    )
    tasks_before = len(asyncio.all_tasks())
    auth = {"Authorization": f"Bearer {simulator.api_key}"}
    calls = ENDED_CALLS_KEPT + 20
    async with httpx.AsyncClient(
        transport=httpx.ASGITransport(app=simulator.app), base_url="http://sim", headers=auth
    ) as api:
        for index in range(calls):
            dial = {
                "connection_id": "c",
                "from": "+15550100000",
                "to": SCENARIOS["long"].number,
                "webhook_url": "http://service/api/webhooks/telnyx",
                "command_id": f"dial-{index}",
            }
            call_id = (await api.post("/v2/calls", json=dial)).json()["data"]["call_control_id"]
            await _until(lambda call_id=call_id: simulator.calls[call_id].answered)
            hangup = await api.post(f"/v2/calls/{call_id}/actions/hangup", json={})
            assert hangup.status_code == 200
        # Every script and webhook sender ends with its call (not 36 s later, not never).
        await _until(lambda: len(asyncio.all_tasks()) <= tasks_before, timeout=5)
        deliveries = (await api.get("/_sim/deliveries")).json()
    assert len(simulator.calls) == ENDED_CALLS_KEPT  # the newest ones, for tests to inspect
    assert call_id in simulator.calls
    hangups = [d for d in deliveries if d["event_type"] == "call.hangup"]
    assert len(hangups) == calls  # and every call did say goodbye
    assert len(simulator.commands) <= LOG_KEPT
    await simulator.close()
