"""Dialing and commanding calls through the REST API, against the embedded simulator."""

from __future__ import annotations

import httpx

from tests.conftest import ServiceProcess
from tests.helpers import EventsClient, call_state_is


async def test_dial_moves_through_states_visible_in_api_and_events(
    service: ServiceProcess, api: httpx.Client
) -> None:
    async with await EventsClient.open(service.ws_url) as events:
        welcome = await events.next()
        assert welcome["type"] == "welcome"
        response = api.post("/api/calls", json={"to": "+15550100004", "client_state": "aGk="})
        assert response.status_code == 201, response.text
        call = response.json()["data"]
        call_id = call["call_control_id"]
        assert call["state"] in {"dialing", "initiated"}
        assert call["direction"] == "outgoing"
        assert call["client_state"] == "aGk="

        ended = await events.until(call_state_is(call_id, "ended"))
        assert ended["payload"]["hangup_cause"] == "normal_clearing"
        states = [
            m["payload"]["state"]
            for m in events.events()
            if m["type"] == "call.state" and m["call_control_id"] == call_id
        ]
        assert states == ["dialing", "initiated", "answered", "streaming", "streaming", "ended"]
        types = [m["type"] for m in events.events() if m["call_control_id"] == call_id]
        for expected in ("call.initiated", "call.answered", "streaming.started", "call.hangup"):
            assert expected in types
        seqs = [m["seq"] for m in events.events()]
        assert seqs == sorted(seqs)
        assert len(seqs) == len(set(seqs))

    stored = api.get(f"/api/calls/{call_id}").json()["data"]
    assert stored["state"] == "ended"
    assert stored["stream"] == "stopped"
    assert stored["hangup_source"] == "callee"
    log = api.get(f"/api/calls/{call_id}/events").json()["data"]
    assert [e["seq"] for e in log] == sorted(e["seq"] for e in log)
    assert {e["type"] for e in log} >= {"call.initiated", "call.answered", "call.hangup"}


def test_dial_sends_telnyx_the_stream_and_webhook_urls(
    service: ServiceProcess, api: httpx.Client, sim: httpx.Client
) -> None:
    call_id = api.post("/api/calls", json={"to": "+15550100011"}).json()["data"]["call_control_id"]
    dials = [r for r in sim.get("/_sim/requests").json() if r["path"] == "/v2/calls"]
    body = dials[-1]["body"]
    assert dials[-1]["auth"] is True
    assert body["stream_url"] == f"{service.ws_url}/audio-stream"
    assert body["webhook_url"] == f"{service.url}/api/webhooks/telnyx"
    assert body["stream_track"] == "both_tracks"
    assert body["stream_bidirectional_mode"] == "rtp"
    assert len(body["stream_auth_token"]) >= 32
    assert body["command_id"]
    assert body["connection_id"]
    # The per-call token is a secret: it never reaches the logs.
    assert not any(body["stream_auth_token"] in line for line in service.raw_lines)
    api.post(f"/api/calls/{call_id}/hangup")


async def test_hangup_is_idempotent(service: ServiceProcess, api: httpx.Client) -> None:
    async with await EventsClient.open(service.ws_url) as events:
        call_id = api.post("/api/calls", json={"to": "+15550100011"}).json()["data"][
            "call_control_id"
        ]
        await events.until(call_state_is(call_id, "streaming"))
        first = api.post(f"/api/calls/{call_id}/hangup")
        assert first.status_code == 200
        await events.until(call_state_is(call_id, "ended"))
    again = api.post(f"/api/calls/{call_id}/hangup")
    assert again.status_code == 200
    assert again.json()["data"]["state"] == "ended"
    assert again.json()["data"]["hangup_source"] == "caller"


def test_hangup_of_a_call_telnyx_already_ended_is_not_an_error(
    api: httpx.Client, sim: httpx.Client
) -> None:
    call_id = api.post("/api/calls", json={"to": "+15550100011"}).json()["data"]["call_control_id"]
    sim.post(f"/_sim/calls/{call_id}/hangup")  # the far end hangs up; we have not heard yet
    # Whether or not the webhook has arrived, hangup answers 200 (Telnyx's 422/90018 is success).
    response = api.post(f"/api/calls/{call_id}/hangup")
    assert response.status_code == 200, response.text


def test_telnyx_5xx_is_retried_with_the_same_command_id(
    api: httpx.Client, sim: httpx.Client
) -> None:
    sim.post("/_sim/faults", json={"path": "/v2/calls", "status": 503, "times": 2})
    before = len(sim.get("/_sim/requests").json())
    response = api.post("/api/calls", json={"to": "+15550100002"})
    assert response.status_code == 201, response.text
    attempts = [r for r in sim.get("/_sim/requests").json()[before:] if r["path"] == "/v2/calls"]
    assert len(attempts) == 3
    assert len({a["body"]["command_id"] for a in attempts}) == 1


def test_telnyx_keeps_failing_gives_502_with_reason(api: httpx.Client, sim: httpx.Client) -> None:
    sim.post("/_sim/faults", json={"path": "/v2/calls", "status": 500, "times": 4})
    response = api.post("/api/calls", json={"to": "+15550100002"})
    assert response.status_code == 502
    body = response.json()
    assert body["error"] == "carrier_unavailable"
    assert body["carrier"]["status"] == 500


def test_telnyx_4xx_surfaces_as_clear_error_without_retry(
    api: httpx.Client, sim: httpx.Client
) -> None:
    sim.post("/_sim/faults", json={"path": "/v2/calls", "status": 422, "times": 1})
    before = len(sim.get("/_sim/requests").json())
    response = api.post("/api/calls", json={"to": "+15550100002"})
    assert response.status_code == 502
    body = response.json()
    assert body["error"] == "carrier_error"
    assert body["carrier"] == {
        "status": 422,
        "code": "10007",
        "title": "Unexpected error",
        "detail": "Injected fault.",
    }
    attempts = [r for r in sim.get("/_sim/requests").json()[before:] if r["path"] == "/v2/calls"]
    assert len(attempts) == 1


def test_dial_validation_errors_are_422_with_reason(api: httpx.Client) -> None:
    for body in (
        {"to": "12345"},
        {"to": "+15550100001", "client_state": "not base64!"},
        {"to": "+15550100001", "timeout_secs": 1},
        {"to": "+15550100001", "codec": "MP3"},
        {},
    ):
        response = api.post("/api/calls", json=body)
        assert response.status_code == 422, body
        assert response.json()["detail"]
    assert (
        api.post(
            "/api/calls", content=b"{nope", headers={"content-type": "application/json"}
        ).status_code
        == 422
    )


def test_unknown_call_is_404(api: httpx.Client) -> None:
    for method, path in (
        ("GET", "/api/calls/v3:nope"),
        ("GET", "/api/calls/v3:nope/events"),
        ("POST", "/api/calls/v3:nope/hangup"),
        ("POST", "/api/calls/v3:nope/answer"),
        ("POST", "/api/calls/v3:nope/streaming/start"),
    ):
        response = api.request(method, path)
        assert response.status_code == 404
        assert response.json()["error"] == "call_not_found"


async def test_commands_on_ended_call_are_409(service: ServiceProcess, api: httpx.Client) -> None:
    async with await EventsClient.open(service.ws_url) as events:
        call_id = api.post("/api/calls", json={"to": "+15550100002"}).json()["data"][
            "call_control_id"
        ]
        await events.until(call_state_is(call_id, "ended"))
    for path in ("answer", "streaming/start", "streaming/stop"):
        response = api.post(f"/api/calls/{call_id}/{path}")
        assert response.status_code == 409
        assert response.json()["error"] == "call_ended"


async def test_list_calls_filters_by_state_and_paginates(
    service: ServiceProcess, api: httpx.Client
) -> None:
    async with await EventsClient.open(service.ws_url) as events:
        busy = api.post("/api/calls", json={"to": "+15550100002"}).json()["data"]
        await events.until(call_state_is(busy["call_control_id"], "ended"))
    ended = api.get("/api/calls", params={"state": "ended", "limit": 500}).json()
    assert busy["call_control_id"] in {c["call_control_id"] for c in ended["data"]}
    assert all(c["state"] == "ended" for c in ended["data"])
    page = api.get("/api/calls", params={"limit": 1, "offset": 1}).json()
    assert len(page["data"]) == 1
    assert page["meta"]["total"] >= 2
    assert api.get("/api/calls", params={"state": "bogus"}).status_code == 422


async def test_inbound_call_is_auto_answered_with_streaming(
    service: ServiceProcess, api: httpx.Client, sim: httpx.Client
) -> None:
    async with await EventsClient.open(service.ws_url) as events:
        call_id = sim.post("/_sim/inbound", json={"from": "+15550107777"}).json()["call_control_id"]
        await events.until(call_state_is(call_id, "ringing"))
        await events.until(call_state_is(call_id, "streaming"))
    answers = [r for r in sim.get("/_sim/requests").json() if r["path"].endswith("/actions/answer")]
    assert any(call_id in r["path"] for r in answers)
    body = next(r["body"] for r in answers if call_id in r["path"])
    assert body["stream_url"].endswith("/audio-stream")
    assert body["stream_bidirectional_mode"] == "rtp"
    call = api.get(f"/api/calls/{call_id}").json()["data"]
    assert call["direction"] == "incoming"
    assert call["from"] == "+15550107777"
    api.post(f"/api/calls/{call_id}/hangup")


def test_health_ready_and_metrics(api: httpx.Client) -> None:
    assert api.get("/api/health").json()["status"] == "ok"
    ready = api.get("/api/ready")
    assert ready.status_code == 200
    assert ready.json()["checks"]["store"]["ok"] is True
    assert ready.json()["checks"]["hub"]["ok"] is True
    metrics = api.get("/metrics").text
    assert "callbridge_webhooks_total" in metrics
    assert "callbridge_events_stored_total" in metrics
    assert api.get("/openapi.json").json()["info"]["title"] == "callbridge"


def test_answering_an_outbound_call_is_409(api: httpx.Client) -> None:
    call_id = api.post("/api/calls", json={"to": "+15550100011"}).json()["data"]["call_control_id"]
    response = api.post(f"/api/calls/{call_id}/answer")
    assert response.status_code == 409
    assert response.json()["error"] == "not_answerable"
    api.post(f"/api/calls/{call_id}/hangup")


def test_every_refusal_has_the_same_shape(api: httpx.Client) -> None:
    for response in (
        api.get("/api/nowhere"),
        api.post("/api/calls", json={"to": "nope"}),
        api.get("/api/calls", params={"limit": 0}),
        api.delete("/api/calls"),
    ):
        body = response.json()
        assert 400 <= response.status_code < 500
        assert set(body) == {"error", "detail"}, body
        assert body["detail"]
    assert "to" in api.post("/api/calls", json={"to": "nope"}).json()["detail"]


def test_dial_refuses_numbers_no_database_can_store(api: httpx.Client) -> None:
    """Found by the fuzz suite on PostgreSQL: a SIP URI with a NUL or over 256 characters was
    dialled, then failed the insert (a 500, and a call the service did not know it had)."""
    for to in ("sip:a\x00b@sim", "sip:" + "a" * 300 + "@sim", "sip:a@sim\x7f"):
        response = api.post("/api/calls", json={"to": to})
        assert response.status_code == 422, (to, response.text)
        assert response.json()["error"] == "invalid_request"
