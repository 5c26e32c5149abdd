"""The simulator's Telnyx side: Call Control REST, and signed webhooks in a realistic order.

Telnyx behaviour reproduced here (see docs/protocol.md and the Telnyx reference):
- REST under `/v2`, Bearer auth, `{"data": …}` answers and `{"errors": [{code, title, detail}]}`
  errors with string codes; 422/90018 for commands on a call that has ended;
- `command_id` dedupe: a repeated command with the same id is answered, not executed again;
- `GET /v2/calls/{call_control_id}` with `data.is_alive`, 404 for a call it does not know;
- one stream per call: `streaming_start` on a streaming call replaces the stream (make before
  break: the old socket gets `stop` once the new one has said `start`);
- webhooks `{"data": {record_type, event_type, id, occurred_at, payload}, "meta": {attempt,
  delivered_to}}`, signed with Ed25519, retried with backoff on 408/429/5xx and on no answer
  within 2 s, `meta.attempt` counting up.

Test hooks live under `/_sim/` (fault injection, request and delivery logs, far-end actions).
"""

from __future__ import annotations

import asyncio
import base64
import collections
import contextlib
import dataclasses
import random
import secrets
import uuid
from datetime import UTC, datetime
from typing import Any

import httpx
import orjson
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, Response

from callbridge.logs import get_logger
from callbridge.sim.scenarios import SCENARIOS, Scenario, scenario_for
from callbridge.sim.signing import WebhookSigner
from callbridge.sim.streamer import MediaPlan, SimulatedStream

__all__ = ["SimCall", "Simulator"]

log = get_logger(__name__)

WEBHOOK_TIMEOUT = 2.0  # Telnyx's answer budget
WEBHOOK_RETRIES = 5
RETRYABLE = frozenset({408, 429}) | frozenset(range(500, 600))
# What /_sim/ keeps for tests to inspect: the newest, so a simulator that runs for hours (the
# demo, a soak) holds a bounded amount, not every call it ever played.
ENDED_CALLS_KEPT = 100
LOG_KEPT = 2000  # /_sim/requests and /_sim/deliveries entries, and remembered command_ids


def _now_iso() -> str:
    return datetime.now(UTC).isoformat(timespec="microseconds").replace("+00:00", "Z")


def _error(status: int, code: str, title: str, detail: str) -> JSONResponse:
    return JSONResponse({"errors": [{"code": code, "title": title, "detail": detail}]}, status)


@dataclasses.dataclass
class SimCall:
    """A call as the simulated Telnyx sees it."""

    call_control_id: str
    call_leg_id: str
    call_session_id: str
    direction: str
    from_number: str
    to_number: str
    scenario: Scenario
    webhook_url: str
    client_state: str | None = None
    stream: dict[str, Any] = dataclasses.field(default_factory=dict)
    alive: bool = True
    answered: bool = False
    streaming: bool = False
    media: SimulatedStream | None = None  # the media socket, while one is open
    streams: list[SimulatedStream] = dataclasses.field(default_factory=list)  # all, for /_sim/
    outbox: asyncio.Queue[dict[str, Any]] = dataclasses.field(default_factory=asyncio.Queue)
    tasks: list[asyncio.Task[None]] = dataclasses.field(default_factory=list)
    ended: asyncio.Event = dataclasses.field(default_factory=asyncio.Event)  # the script's pauses


@dataclasses.dataclass
class Fault:
    """Answer the next `times` requests whose path starts with `path` with `status`."""

    path: str
    status: int
    times: int
    delay: float = 0.0


class Simulator:
    """A fake Telnyx reachable over the network; `app` is its ASGI application."""

    def __init__(
        self,
        *,
        signer: WebhookSigner | None = None,
        api_key: str | None = None,
        pace: float = 1.0,
        inbound_webhook_url: str | None = None,
        connection_id: str = "callbridge-sim",
    ) -> None:
        self.signer = signer or WebhookSigner()
        self.api_key = api_key or "sim-" + secrets.token_urlsafe(16)
        self.pace = pace
        self.inbound_webhook_url = inbound_webhook_url
        self.connection_id = connection_id
        self.calls: dict[str, SimCall] = {}
        self.commands: dict[tuple[str, str], tuple[int, bytes]] = {}
        self._ended_calls: collections.deque[str] = collections.deque()
        self.faults: list[Fault] = []
        self.requests: collections.deque[dict[str, Any]] = collections.deque(maxlen=LOG_KEPT)
        self.deliveries: collections.deque[dict[str, Any]] = collections.deque(maxlen=LOG_KEPT)
        self._http = httpx.AsyncClient(timeout=WEBHOOK_TIMEOUT)
        self.app = self._build_app()

    # --- plumbing ---------------------------------------------------------------------------

    async def close(self) -> None:
        for call in self.calls.values():
            for task in call.tasks:
                task.cancel()
        await self._http.aclose()

    async def _sleep(self, seconds: float) -> None:
        await asyncio.sleep(seconds * self.pace)

    async def _pause(self, call: SimCall, seconds: float) -> None:
        """A pause in the call's script, cut short when the call ends: a call hung up early
        leaves no script sleeping out the rest of its scenario."""
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(call.ended.wait(), seconds * self.pace)

    def _retire(self, call: SimCall) -> None:
        """The call's last webhook is out; /_sim/ keeps only the newest ended calls."""
        self._ended_calls.append(call.call_control_id)
        while len(self._ended_calls) > ENDED_CALLS_KEPT:
            self.calls.pop(self._ended_calls.popleft(), None)

    def _spawn(self, call: SimCall, coroutine: Any) -> None:
        task = asyncio.get_running_loop().create_task(coroutine)
        call.tasks.append(task)

    # --- webhooks ---------------------------------------------------------------------------

    def _event(self, call: SimCall, event_type: str, **extra: Any) -> dict[str, Any]:
        payload: dict[str, Any] = {
            "call_control_id": call.call_control_id,
            "call_leg_id": call.call_leg_id,
            "call_session_id": call.call_session_id,
            "connection_id": self.connection_id,
            "client_state": call.client_state,
            "from": call.from_number,
            "to": call.to_number,
            "direction": call.direction,
            **extra,
        }
        return {
            "record_type": "event",
            "event_type": event_type,
            "id": str(uuid.uuid4()),
            "occurred_at": _now_iso(),
            "payload": payload,
        }

    def emit(self, call: SimCall, event_type: str, **extra: Any) -> None:
        """Queue a webhook; each call's webhooks leave in order unless the scenario says not."""
        call.outbox.put_nowait(self._event(call, event_type, **extra))

    async def _deliver_loop(self, call: SimCall) -> None:
        held: list[dict[str, Any]] = []
        while True:  # until `call.hangup` is out: Telnyx sends nothing after it
            data = await call.outbox.get()
            if call.scenario.shuffle_webhooks:
                # Hold events back and release them in pairs, swapped: out of order, like Telnyx.
                held.append(data)
                if len(held) < 2 and data["event_type"] != "call.hangup":
                    continue
                batch, held = list(reversed(held)), []
            else:
                batch = [data]
            for item in batch:
                if call.scenario.duplicate_webhooks:
                    # Two deliveries of one event, concurrently, as a retry racing its original.
                    await asyncio.gather(
                        self.deliver(call.webhook_url, item), self.deliver(call.webhook_url, item)
                    )
                else:
                    await self.deliver(call.webhook_url, item)
            if any(item["event_type"] == "call.hangup" for item in batch):
                self._retire(call)
                return

    async def deliver(self, url: str, data: dict[str, Any]) -> None:
        """POST one signed webhook, retrying as Telnyx does."""
        for attempt in range(1, WEBHOOK_RETRIES + 2):
            body = orjson.dumps({"data": data, "meta": {"attempt": attempt, "delivered_to": url}})
            status: int | None
            try:
                response = await self._http.post(
                    url, content=body, headers=self.signer.headers(body)
                )
                status = response.status_code
            except httpx.HTTPError:
                status = None
            final = (status is not None and status not in RETRYABLE) or attempt > WEBHOOK_RETRIES
            self.deliveries.append(
                {
                    "id": data["id"],
                    "event_type": data["event_type"],
                    "attempt": attempt,
                    "status": status,
                    "final": final,
                }
            )
            if final:
                if status is None or status in RETRYABLE:
                    log.warning(
                        "Simulator gave up a webhook",
                        event_type=data["event_type"],
                        call_control_id=data["payload"].get("call_control_id"),
                        attempts=attempt,
                        status=status,
                    )
                return
            await self._sleep(0.5 * 2 ** (attempt - 1) + random.random() * 0.1)

    # --- call scripts -----------------------------------------------------------------------

    async def _outbound_script(self, call: SimCall) -> None:
        scenario = call.scenario
        self.emit(call, "call.initiated", state="bridging")
        await self._pause(call, scenario.ring_seconds)
        if not call.alive:
            return
        if not scenario.answer:
            self._end(call, scenario.hangup_cause, "callee")
            return
        call.answered = True
        self.emit(call, "call.answered", state="answered")
        self._start_stream(call)
        await self._talk(call)

    async def _talk(self, call: SimCall) -> None:
        scenario = call.scenario
        for digit in scenario.dtmf:
            await self._pause(call, 0.5)
            if call.alive:
                self.emit(call, "call.dtmf.received", digit=digit)
                if call.media is not None:
                    call.media.dtmf.put_nowait(digit)
        await self._pause(call, scenario.talk_seconds)
        if call.alive:
            self._end(call, scenario.hangup_cause, scenario.hangup_source)

    def _start_stream(self, call: SimCall, replaced: SimulatedStream | None = None) -> None:
        """Open the media socket the call's streaming parameters ask for; a `replaced` stream
        gets `stop` once the new one has said `start`, or has failed to open."""
        if not call.stream.get("stream_url"):
            if replaced is not None:
                replaced.stop()
            return
        if call.scenario.stream_fails:
            if replaced is not None:
                replaced.stop()
            self.emit(
                call,
                "streaming.failed",
                failure_reason="connection to the WebSocket server failed",
                stream_id=str(uuid.uuid4()),
                stream_type="websocket",
                stream_params={
                    "stream_url": call.stream["stream_url"],
                    "track": call.stream.get("stream_track"),
                },
            )
            return
        call.streaming = True
        self.emit(call, "streaming.started", stream_url=call.stream["stream_url"])
        if call.scenario.media:

            def failed(reason: str) -> None:
                if replaced is not None:
                    replaced.stop()
                self._media_failed(call, media, reason)

            media = SimulatedStream(
                self._media_plan(call), failed, replaced.stop if replaced is not None else None
            )
            call.media = media
            call.streams.append(media)
            self._spawn(call, media.run())
        elif replaced is not None:
            replaced.stop()

    def _replace_stream(self, call: SimCall, stream: dict[str, Any]) -> None:
        """`streaming_start`: Telnyx runs one stream per call, and a new one replaces the one
        running. The old socket streams on until the new one has said `start` (or failed to
        open), then gets `stop`: make before break. A service may close the old socket itself
        first (a handover does, once the new stream has started on another instance)."""
        replaced = call.media
        if call.streaming:
            call.streaming = False
            self.emit(call, "streaming.stopped", stream_url=call.stream.get("stream_url"))
        call.media = None
        call.stream = stream
        self._start_stream(call, replaced)

    def _media_failed(self, call: SimCall, media: SimulatedStream, reason: str) -> None:
        """The media socket could not be opened: Telnyx reports that as streaming.failed."""
        if call.alive and call.streaming and call.media is media:
            call.streaming = False
            call.media = None
            self.emit(
                call,
                "streaming.failed",
                failure_reason=reason,
                stream_id=str(uuid.uuid4()),
                stream_type="websocket",
                stream_params={
                    "stream_url": call.stream.get("stream_url"),
                    "track": call.stream.get("stream_track"),
                },
            )

    def _media_plan(self, call: SimCall) -> MediaPlan:
        """Telnyx streams `stream_codec` when asked, else the call's own (the scenario's)."""
        stream = call.stream
        codec = stream.get("stream_codec")
        encoding = codec if codec in ("PCMU", "PCMA", "L16") else call.scenario.codec
        talk_codec = stream.get("stream_bidirectional_codec") or "PCMU"
        return MediaPlan(
            url=stream["stream_url"],
            token=stream.get("stream_auth_token"),
            call_control_id=call.call_control_id,
            encoding=encoding,
            track=stream.get("stream_track") or "inbound_track",
            bidirectional=stream.get("stream_bidirectional_mode") == "rtp",
            bidirectional_codec=talk_codec if talk_codec in ("PCMU", "PCMA", "L16") else "PCMU",
            client_state=call.client_state,
            drop_after=max(2.0 * self.pace, 0.2) if call.scenario.drop_media_socket else None,
        )

    def _stop_stream(self, call: SimCall) -> None:
        for media in call.streams:  # one, or two while a new stream replaces the old
            media.stop()
        call.media = None
        if call.streaming:
            call.streaming = False
            self.emit(call, "streaming.stopped", stream_url=call.stream.get("stream_url"))

    def _end(self, call: SimCall, cause: str, source: str) -> None:
        if not call.alive:
            return
        call.alive = False
        call.ended.set()
        self._stop_stream(call)
        self.emit(
            call,
            "call.hangup",
            state="hangup",
            hangup_cause=cause,
            hangup_source=source,
            sip_hangup_cause="486" if cause == "user_busy" else "unspecified",
            start_time=None,
        )

    def new_call(
        self,
        *,
        direction: str,
        from_number: str,
        to_number: str,
        webhook_url: str,
        client_state: str | None = None,
        scenario: Scenario | None = None,
    ) -> SimCall:
        call = SimCall(
            call_control_id="v3:" + secrets.token_urlsafe(24),
            call_leg_id=str(uuid.uuid4()),
            call_session_id=str(uuid.uuid4()),
            direction=direction,
            from_number=from_number,
            to_number=to_number,
            scenario=scenario or scenario_for(to_number),
            webhook_url=webhook_url,
            client_state=client_state,
        )
        self.calls[call.call_control_id] = call
        self._spawn(call, self._deliver_loop(call))
        return call

    # --- the HTTP surface -------------------------------------------------------------------

    def _build_app(self) -> FastAPI:
        app = FastAPI(title="callbridge Telnyx simulator", docs_url=None, redoc_url=None)

        @app.middleware("http")
        async def telnyx_gate(request: Request, call_next: Any) -> Response:
            if not request.url.path.startswith("/v2/"):
                return await call_next(request)  # type: ignore[no-any-return]
            body = await request.body()
            auth_ok = request.headers.get("authorization") == f"Bearer {self.api_key}"
            try:
                parsed = orjson.loads(body) if body else {}
            except orjson.JSONDecodeError:
                parsed = None
            self.requests.append(
                {
                    "method": request.method,
                    "path": request.url.path,
                    "body": parsed,
                    "auth": auth_ok,
                }
            )
            if not auth_ok:
                return _error(
                    401,
                    "10009",
                    "Authentication failed",
                    "The required authentication headers were either invalid or not included "
                    "in the request.",
                )
            if parsed is None or not isinstance(parsed, dict):
                return _error(400, "10015", "Bad Request", "The request body is not a JSON object.")
            for fault in self.faults:
                if fault.times > 0 and request.url.path.startswith(fault.path):
                    fault.times -= 1
                    await asyncio.sleep(fault.delay)
                    return _error(fault.status, "10007", "Unexpected error", "Injected fault.")
            command_id = parsed.get("command_id")
            key = (request.url.path, str(command_id))
            if command_id and key in self.commands:
                status, content = self.commands[key]
                return Response(content, status, media_type="application/json")
            response: Response = await call_next(request)
            if command_id and response.status_code < 300:
                chunks = [chunk async for chunk in response.body_iterator]  # type: ignore[attr-defined]
                content = b"".join(chunks)
                self.commands[key] = (response.status_code, content)
                while len(self.commands) > LOG_KEPT:
                    del self.commands[next(iter(self.commands))]  # the oldest
                return Response(content, response.status_code, media_type="application/json")
            return response

        @app.post("/v2/calls")
        async def dial(request: Request) -> JSONResponse:
            body = orjson.loads(await request.body())
            for field in ("connection_id", "to", "from"):
                if not body.get(field):
                    return _error(
                        422, "10004", "Missing required parameter", f"'{field}' is required."
                    )
            client_state = body.get("client_state")
            if client_state is not None:
                try:
                    base64.b64decode(client_state, validate=True)
                except ValueError:
                    return _error(
                        422, "10015", "Invalid client_state", "client_state must be base64."
                    )
            call = self.new_call(
                direction="outgoing",
                from_number=body["from"],
                to_number=body["to"],
                webhook_url=body.get("webhook_url") or self.inbound_webhook_url or "",
                client_state=client_state,
                scenario=scenario_for(body["to"], body.get("timeout_secs")),
            )
            call.stream = {k: v for k, v in body.items() if k.startswith("stream_")}
            self._spawn(call, self._outbound_script(call))
            return JSONResponse(
                {
                    "data": {
                        "call_control_id": call.call_control_id,
                        "call_leg_id": call.call_leg_id,
                        "call_session_id": call.call_session_id,
                        "is_alive": False,
                        "record_type": "call",
                    }
                }
            )

        @app.post("/v2/calls/{call_control_id}/actions/{action}")
        async def action(call_control_id: str, action: str, request: Request) -> JSONResponse:
            call = self.calls.get(call_control_id)
            if call is None:
                return _error(
                    422, "90015", "Invalid call control ID", "The call_control_id is not valid."
                )
            if not call.alive:
                return _error(
                    422, "90018", "Call has already ended", "This call is no longer active."
                )
            body = orjson.loads(await request.body() or b"{}")
            if action == "answer":
                if call.direction != "incoming" or call.answered:
                    return _error(
                        422, "90016", "Invalid call state", "The call cannot be answered."
                    )
                call.answered = True
                call.stream = {k: v for k, v in body.items() if k.startswith("stream_")}
                call.webhook_url = body.get("webhook_url") or call.webhook_url
                self.emit(call, "call.answered", state="answered")
                self._start_stream(call)
                self._spawn(call, self._talk(call))
            elif action == "hangup":
                self._end(call, "normal_clearing", "caller")
            elif action == "streaming_start":
                self._replace_stream(
                    call, {k: v for k, v in body.items() if k.startswith("stream_")}
                )
            elif action == "streaming_stop":
                self._stop_stream(call)
            else:
                return _error(404, "10005", "Resource not found", f"Unknown action '{action}'.")
            return JSONResponse({"data": {"result": "ok"}})

        @app.get("/v2/calls/{call_control_id}")
        async def call_status(call_control_id: str) -> JSONResponse:
            """Telnyx's "retrieve a call status": `is_alive` while the call is up; a call it
            does not know is 404."""
            call = self.calls.get(call_control_id)
            if call is None:
                return _error(
                    404,
                    "10005",
                    "Resource not found",
                    "The requested resource or URL could not be found.",
                )
            return JSONResponse(
                {
                    "data": {
                        "record_type": "call",
                        "call_control_id": call.call_control_id,
                        "call_leg_id": call.call_leg_id,
                        "call_session_id": call.call_session_id,
                        "client_state": call.client_state,
                        "is_alive": call.alive,
                    }
                }
            )

        @app.get("/_sim/info")
        async def info() -> dict[str, Any]:
            return {
                "public_key": self.signer.public_key_b64,
                "api_key": self.api_key,
                "scenarios": {
                    s.name: {"number": s.number, "description": s.description}
                    for s in SCENARIOS.values()
                },
            }

        @app.post("/_sim/faults")
        async def add_fault(request: Request) -> dict[str, str]:
            body = orjson.loads(await request.body())
            self.faults.append(
                Fault(
                    path=body["path"],
                    status=int(body["status"]),
                    times=int(body.get("times", 1)),
                    delay=float(body.get("delay", 0.0)),
                )
            )
            return {"result": "ok"}

        @app.get("/_sim/requests")
        async def requests_log() -> list[dict[str, Any]]:
            return list(self.requests)

        @app.get("/_sim/deliveries")
        async def deliveries_log() -> list[dict[str, Any]]:
            return list(self.deliveries)

        @app.post("/_sim/inbound")
        async def inbound(request: Request) -> dict[str, str]:
            body = orjson.loads(await request.body() or b"{}")
            call = self.new_call(
                direction="incoming",
                from_number=body.get("from", "+15550199999"),
                to_number=body.get("to", "+15550100000"),
                webhook_url=body.get("webhook_url") or self.inbound_webhook_url or "",
                scenario=SCENARIOS.get(body.get("scenario", "answered"), SCENARIOS["answered"]),
            )
            self.emit(call, "call.initiated", state="parked")
            return {"call_control_id": call.call_control_id}

        @app.get("/_sim/calls/{call_control_id}")
        async def call_info(call_control_id: str) -> Response:
            call = self.calls.get(call_control_id)
            if call is None:
                return _error(404, "90015", "Invalid call control ID", "Unknown call.")
            return JSONResponse(
                {
                    "call_control_id": call.call_control_id,
                    "direction": call.direction,
                    "scenario": call.scenario.name,
                    "alive": call.alive,
                    "streaming": call.streaming,
                    "stream": call.stream,
                    "media": [
                        {"stream_id": m.stream_id, "received": list(m.received)}
                        for m in call.streams
                    ],
                }
            )

        @app.post("/_sim/calls/{call_control_id}/hangup")
        async def far_end_hangup(call_control_id: str) -> Response:
            call = self.calls.get(call_control_id)
            if call is None:
                return _error(404, "90015", "Invalid call control ID", "Unknown call.")
            self._end(call, "normal_clearing", "callee")
            return JSONResponse({"result": "ok"})

        @app.post("/_sim/calls/{call_control_id}/dtmf")
        async def far_end_dtmf(call_control_id: str, request: Request) -> Response:
            call = self.calls.get(call_control_id)
            if call is None:
                return _error(404, "90015", "Invalid call control ID", "Unknown call.")
            for digit in orjson.loads(await request.body())["digits"]:
                self.emit(call, "call.dtmf.received", digit=digit)
                if call.media is not None:
                    call.media.dtmf.put_nowait(digit)
            return JSONResponse({"result": "ok"})

        return app
