"""What every fuzz test stands on: the settings, a loop for sockets, witnesses, and invariants.

The invariants, checked against a real service over real sockets:

- the service never crashes or hangs: the process is alive, `GET /api/health` answers, and a
  fresh `/call-events` socket gets its `welcome` (every wait has a generous bound, so a hang
  fails the test instead of stalling it; no bound is a measure of speed);
- every refusal is an HTTP 4xx with `{"error", "detail"}`, or a close code with a reason (or an
  `error` message on the sockets that stay open by design); never a 5xx, 1006 or 1011;
- other calls keep flowing: a control call streamed by the simulator keeps delivering audio
  frames to a listener (checked after every example), and a `/call-events` observer keeps
  receiving events, gap-free (checked as they arrive);
- the store stays consistent: the replay from `since=0` is gap-free and unique, matches what
  was delivered live and what `GET /api/calls/{id}/events` returns, and every call's state is a
  documented one and the one its last `call.state` event announced.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import dataclasses
import os
import threading
import uuid
from collections.abc import Callable, Coroutine, Iterable
from typing import Any
from urllib.parse import quote, urlencode

import httpx
import orjson
from hypothesis import HealthCheck, settings
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed, InvalidHandshake, InvalidStatus

from callbridge.sim import WebhookSigner
from tests.conftest import ServiceProcess, mint_token
from tests.helpers import webhook
from tests.ws.audio_client import NO_MEDIA, dial

__all__ = [
    "CALL_STATES",
    "STREAM_STATES",
    "WAIT",
    "Closed",
    "FuzzTarget",
    "Hang",
    "LoopThread",
    "PlayedCall",
    "assert_closed_with_reason",
    "assert_refusal",
    "connected",
    "expect",
    "fuzz",
    "is_text",
    "next_message",
    "open_ws",
    "query_string",
]

WAIT = 15.0  # a bound on waiting for an answer, so a hang fails; never a speed requirement
CONTROL_NUMBER = "+15550100011"  # the simulator's hour-long call (3 minutes at the test pace)
CALL_STATES = frozenset({"dialing", "initiated", "ringing", "answered", "streaming", "ended"})
STREAM_STATES = frozenset({"none", "active", "stopped", "failed", "lost"})
REPLAY_MAX = 10_000  # CALLBRIDGE_EVENTS_REPLAY_MAX's default

# --- settings -------------------------------------------------------------------------------
# The normal run: few examples, derandomized (the same examples every run), no example database,
# no deadline (a real service answers over real sockets). A campaign: CALLBRIDGE_FUZZ_EXAMPLES
# examples per test, from a random seed that Hypothesis prints when something fails.

_CAMPAIGN_EXAMPLES = os.environ.get("CALLBRIDGE_FUZZ_EXAMPLES")
settings.register_profile(
    "callbridge-fuzz",
    deadline=None,
    derandomize=True,
    database=None,
    print_blob=False,
    suppress_health_check=list(HealthCheck),
)
settings.register_profile(
    "callbridge-fuzz-campaign",
    parent=settings.get_profile("callbridge-fuzz"),
    derandomize=False,
    print_blob=True,
)


def fuzz(examples: int) -> settings:
    """The settings of one fuzz test: `examples` in the normal run, or
    CALLBRIDGE_FUZZ_EXAMPLES in a campaign."""
    if _CAMPAIGN_EXAMPLES:
        return settings(
            settings.get_profile("callbridge-fuzz-campaign"),
            max_examples=int(_CAMPAIGN_EXAMPLES),
        )
    return settings(settings.get_profile("callbridge-fuzz"), max_examples=examples)


# --- a loop for the sockets -----------------------------------------------------------------


class Hang(AssertionError):
    """The service did not answer within WAIT seconds."""


class LoopThread:
    """An event loop on a thread of its own: the witnesses keep reading on it while the
    (synchronous) Hypothesis tests run their examples, which run coroutines on it too."""

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self.loop.run_forever, name="fuzz-loop")
        self._thread.start()

    def run(self, coroutine: Coroutine[Any, Any, Any], timeout: float = WAIT) -> Any:
        return asyncio.run_coroutine_threadsafe(_bounded(coroutine, timeout), self.loop).result()

    def spawn(self, coroutine: Coroutine[Any, Any, Any]) -> concurrent.futures.Future[Any]:
        return asyncio.run_coroutine_threadsafe(coroutine, self.loop)

    def close(self) -> None:
        async def cancel_all() -> None:
            tasks = [t for t in asyncio.all_tasks() if t is not asyncio.current_task()]
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)

        asyncio.run_coroutine_threadsafe(cancel_all(), self.loop).result()
        self.loop.call_soon_threadsafe(self.loop.stop)
        self._thread.join()
        self.loop.close()


async def _bounded(coroutine: Coroutine[Any, Any, Any], timeout: float) -> Any:
    task = asyncio.ensure_future(coroutine)
    done, _ = await asyncio.wait({task}, timeout=timeout)
    if not done:
        task.cancel()
        with contextlib.suppress(BaseException):
            await task
        raise Hang(f"no answer from the service within {timeout:g} s")
    return task.result()


# --- sockets ------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class Closed:
    """How the server closed a socket; code 1006 means without a close frame."""

    code: int
    reason: str


def query_string(pairs: Iterable[tuple[str, str]]) -> str:
    encoded = urlencode(list(pairs))
    return f"?{encoded}" if encoded else ""


async def open_ws(
    service: ServiceProcess,
    path: str,
    query: str = "",
    *,
    subprotocols: list[str] | None = None,
    headers: dict[str, str] | None = None,
) -> ClientConnection | Closed:
    """Open a socket, or the refusal if the handshake itself was refused."""
    try:
        return await connect(
            f"{service.ws_url}{path}{query}",
            open_timeout=WAIT,
            close_timeout=WAIT,
            ping_interval=None,
            max_size=4 * 2**20,
            subprotocols=subprotocols,  # type: ignore[arg-type]
            additional_headers=headers,
        )
    except InvalidStatus as exc:  # an HTTP answer instead of an upgrade
        status = exc.response.status_code
        assert status < 500, f"handshake answered {status}"
        return Closed(
            status, exc.response.body.decode("utf-8", "replace") if exc.response.body else ""
        )
    except InvalidHandshake as exc:
        raise AssertionError(f"the handshake broke: {exc!r}") from exc


async def connected(
    service: ServiceProcess, path: str, query: str = "", *, headers: dict[str, str] | None = None
) -> ClientConnection:
    """Open a socket that must open (the server may still close it at once)."""
    ws = await open_ws(service, path, query, headers=headers)
    assert isinstance(ws, ClientConnection), ws
    return ws


async def next_message(
    ws: ClientConnection, timeout: float | None = WAIT
) -> dict[str, Any] | bytes | Closed:
    """The next message, or how the socket closed (`timeout` None: wait as long as it takes)."""
    try:
        raw = await asyncio.wait_for(ws.recv(), timeout)
    except ConnectionClosed as exc:
        if exc.rcvd is None:
            return Closed(1006, "")
        return Closed(exc.rcvd.code, exc.rcvd.reason)
    except TimeoutError:
        raise Hang(f"no message within {timeout} s") from None
    if isinstance(raw, bytes):
        return raw
    message = orjson.loads(raw)
    assert isinstance(message, dict), f"the server sent a non-object: {raw[:200]!r}"
    return message


def is_text(value: Any) -> bool:
    """A non-empty string that says something (not only whitespace)."""
    return isinstance(value, str) and bool(value.strip())


def expect(message: dict[str, Any] | bytes | Closed, kind: str) -> dict[str, Any]:
    """The message, which must be a JSON message of this type."""
    assert isinstance(message, dict), f"expected {kind}, got {message!r:.300}"
    assert message.get("type") == kind, f"expected {kind}, got {message!r:.300}"
    return message


def assert_closed_with_reason(closed: Closed, allowed: Iterable[int]) -> None:
    """A refusal on a socket: one of the codes the protocol documents, with a reason."""
    assert closed.code not in (1006, 1011), f"closed {closed.code} {closed.reason!r}: a failure"
    assert closed.code in set(allowed), f"unexpected close code {closed.code} {closed.reason!r}"
    assert closed.reason.strip(), f"close {closed.code} without a reason"


def assert_refusal(response: httpx.Response, allowed: Iterable[int] = ()) -> None:
    """An HTTP answer is a success, or a 4xx with the one error shape; never a 5xx."""
    status = response.status_code
    assert status < 500, (
        f"{response.request.method} {response.request.url.path}: {status} {response.text[:300]}"
    )
    if status < 400:
        return
    allowed = set(allowed)
    assert not allowed or status in allowed, f"unexpected {status}: {response.text[:300]}"
    body = response.json()
    assert isinstance(body, dict), body
    assert is_text(body.get("error")), body
    assert is_text(body.get("detail")), body


# --- the witnesses --------------------------------------------------------------------------


class Witness:
    """A control call nobody fuzzes: a listener on its audio and an observer of all events.

    Both read on the loop thread for the whole module. `check()` waits for the listener to
    receive a frame it had not received before, and for the observer to receive an event that
    is stored now; the observer also checks, live, that the seqs it gets have no holes."""

    def __init__(self, target: FuzzTarget) -> None:
        self.target = target
        self.call_id = ""
        self.frames = 0
        self._frames_seen = 0
        self.ended: dict[str, Any] | None = None
        self.live: dict[int, dict[str, Any]] = {}  # seq → the event as delivered live
        self.last_seq: int | None = None
        self.faults: list[str] = []
        self.epoch = ""
        self._changed: asyncio.Condition | None = None
        self._tasks: list[concurrent.futures.Future[Any]] = []
        self._sockets: list[ClientConnection] = []
        self.probe_id = "v3:fuzz-probe-" + uuid.uuid4().hex

    def start(self) -> None:
        loop = self.target.loop
        loop.run(self._open_observer())
        self._dial_and_listen()

    def _dial_and_listen(self) -> None:
        response = self.target.api.post("/api/calls", json={"to": CONTROL_NUMBER})
        assert response.status_code == 201, response.text
        self.call_id = response.json()["data"]["call_control_id"]
        self.ended = None
        self.target.loop.run(self._open_listener())
        self.target.loop.run(self._until(lambda: self.frames > 0))

    async def _condition(self) -> asyncio.Condition:
        if self._changed is None:
            self._changed = asyncio.Condition()
        return self._changed

    async def _until(self, predicate: Any) -> None:
        changed = await self._condition()
        async with changed:
            await changed.wait_for(lambda: predicate() or bool(self.faults))
        assert not self.faults, self.faults

    async def _notify(self) -> None:
        changed = await self._condition()
        async with changed:
            changed.notify_all()

    async def _open_observer(self) -> None:
        ws = await connected(self.target.service, "/call-events", f"?token={mint_token()}")
        welcome = await next_message(ws)
        expect(welcome, "welcome")
        self.last_seq = welcome["seq"]
        self.epoch = welcome["epoch"]
        self._sockets.append(ws)
        self._tasks.append(self.target.loop.spawn(self._observe(ws)))

    async def _observe(self, ws: ClientConnection) -> None:
        while True:
            message = await next_message(ws, timeout=None)
            if not isinstance(message, dict) or "seq" not in message:
                self.faults.append(f"observer got {message!r}")
            else:
                seq = message["seq"]
                if seq != (self.last_seq or 0) + 1:
                    self.faults.append(f"observer: seq {seq} after {self.last_seq}")
                self.last_seq = seq
                self.live[seq] = message
            await self._notify()
            if isinstance(message, Closed):
                return

    async def _open_listener(self) -> None:
        query = f"?call_control_id={quote(self.call_id)}&token={mint_token()}"
        ws = await connected(self.target.service, "/frontend-audio", query)
        self._sockets.append(ws)
        self._tasks.append(self.target.loop.spawn(self._listen(ws)))

    async def _listen(self, ws: ClientConnection) -> None:
        while True:
            message = await next_message(ws, timeout=None)
            if isinstance(message, bytes):
                self.frames += 1
            elif isinstance(message, Closed):
                if self.ended is None:
                    self.faults.append(f"control listener closed: {message}")
                await self._notify()
                return
            elif message.get("type") == "end":
                self.ended = message
            elif message.get("type") not in ("format", "mark"):
                self.faults.append(f"control listener got {message}")
            await self._notify()

    def wait_for_event(self, predicate: Callable[[dict[str, Any]], bool]) -> dict[str, Any]:
        """The first event delivered live that matches (waiting for it if need be)."""
        found: list[dict[str, Any]] = []

        def seen() -> bool:
            found[:] = [e for e in self.live.values() if predicate(e)][:1]
            return bool(found)

        self.target.loop.run(self._until(seen))
        return found[0]

    def flowing(self) -> None:
        """The control call's listener has received a frame since the last look (waiting for
        one if not yet): cheap enough for every example."""
        if self.ended is None and self.frames > self._frames_seen:
            self._frames_seen = self.frames
        else:
            self.check_audio()

    def check_audio(self) -> None:
        if self.ended is not None:
            # Only the scenario's own hangup may end it (a long campaign outlives the call).
            call = self.target.api.get(f"/api/calls/{quote(self.call_id)}").json()["data"]
            assert call["state"] == "ended", (self.ended, call)
            assert call["hangup_cause"] == "normal_clearing", (self.ended, call)
            self._dial_and_listen()
        seen = self.frames
        self.target.loop.run(self._until(lambda: self.frames > seen or self.ended is not None))
        self._frames_seen = self.frames
        assert not self.faults, self.faults

    def check(self) -> None:
        """Audio still flows on the control call, and events still reach the observer."""
        self.check_audio()
        probe = webhook("call.dtmf.received", self.probe_id, digit="5")
        body = orjson.dumps(probe)
        answer = self.target.api.post(
            "/api/webhooks/telnyx", content=body, headers=self.target.signer.headers(body)
        )
        assert answer.status_code == 200, answer.text
        newest = max(answer.json()["seq"])
        self.target.loop.run(self._until(lambda: (self.last_seq or 0) >= newest))
        assert not self.faults, self.faults

    def close(self) -> None:
        async def close_all() -> None:
            for ws in self._sockets:
                await ws.close()

        with contextlib.suppress(Exception):
            self.target.loop.run(close_all())
        for task in self._tasks:
            task.cancel()


class PlayedCall:
    """A call whose media side a test plays itself (the simulator opens no media socket).

    It lasts three minutes at the test pace; a long campaign outlives it, so `current()`
    dials a new one once the simulator has hung it up."""

    def __init__(self, target: FuzzTarget) -> None:
        self.target = target
        self.call_id, self.token = dial(target.api, target.sim, NO_MEDIA)

    def current(self) -> tuple[str, str]:
        call = self.target.api.get(f"/api/calls/{quote(self.call_id)}").json()["data"]
        if call["state"] == "ended":
            assert call["hangup_cause"] == "normal_clearing", call
            self.call_id, self.token = dial(self.target.api, self.target.sim, NO_MEDIA)
        return self.call_id, self.token


# --- the target -----------------------------------------------------------------------------


class FuzzTarget:
    """The service under fuzzing, with the clients, the loop and the witness."""

    def __init__(
        self,
        service: ServiceProcess,
        api: httpx.Client,
        sim: httpx.Client,
        signer: WebhookSigner,
        loop: LoopThread,
    ) -> None:
        self.service = service
        self.api = api
        self.sim = sim
        self.signer = signer
        self.loop = loop
        self.witness = Witness(self)
        self._logs_seen = 0

    def alive(self) -> None:
        """The process runs and answers, logged no error, and the control call's audio still
        flows; cheap enough for every example."""
        assert self.service.process is not None
        code = self.service.process.poll()
        assert code is None, f"the service exited with {code}:\n" + "\n".join(
            self.service.raw_lines[-30:]
        )
        health = self.api.get("/api/health")
        assert health.status_code == 200, health.text
        assert health.json()["status"] == "ok"
        self.assert_no_errors_logged()
        self.witness.flowing()

    def assert_no_errors_logged(self) -> None:
        """A handler that fails logs an error (and closes with 1011, or answers 500): the
        service must log none while it is fuzzed.

        The log is one ordered stream, read by a thread: once a line the service logs now has
        arrived, every earlier line has too, and an error belongs to the example that caused
        it. An unknown call id is such a line (`Unknown call`, with the id)."""
        marker = "v3:fuzz-sync-" + uuid.uuid4().hex
        assert self.api.get(f"/api/calls/{marker}").status_code == 404
        self.service.wait_for_log(lambda e: e.get("call_control_id") == marker, WAIT)
        logs = self.service.logs
        new, self._logs_seen = logs[self._logs_seen :], len(logs)
        errors = [e for e in new if e.get("level") in ("error", "critical")]
        assert not errors, "the service logged errors:\n" + "\n".join(
            f"{e.get('event')} {e.get('exc_info') or ''} {e.get('exception') or ''}"[:2000]
            for e in errors
        )

    def verify(self) -> None:
        """Every invariant: after each test (a batch of examples)."""
        self.alive()
        self.loop.run(self._fresh_welcome())
        self.witness.check()
        self.check_store()

    async def _fresh_welcome(self) -> None:
        ws = await connected(self.service, "/call-events", f"?token={mint_token()}")
        try:
            welcome = await next_message(ws)
            expect(welcome, "welcome")
        finally:
            await ws.close()

    # --- the store --------------------------------------------------------------------------

    def _all_calls(self) -> dict[str, dict[str, Any]]:
        found: dict[str, dict[str, Any]] = {}
        offset = 0
        while True:
            page = self.api.get("/api/calls", params={"limit": 500, "offset": offset})
            assert page.status_code == 200, page.text
            data = page.json()["data"]
            for call in data:
                found[call["call_control_id"]] = call
            if len(data) < 500:
                return found
            offset += len(data)

    async def _replay(self) -> tuple[int, int, list[dict[str, Any]]]:
        """(since, head, events) of a replay from 0, or of the tail when the log is longer
        than a replay may be."""
        since = 0
        while True:
            ws = await connected(
                self.service, "/call-events", f"?since={since}&token={mint_token()}"
            )
            try:
                welcome = await next_message(ws)
                expect(welcome, "welcome")
                events: list[dict[str, Any]] = []
                while True:
                    message = await next_message(ws)
                    assert isinstance(message, dict), message
                    if message["type"] == "resync":
                        assert message["reason"].startswith("too_far_behind"), message
                        since = message["seq"] - REPLAY_MAX
                        break
                    if message["type"] == "replayed":
                        assert message["count"] == len(events), message
                        return since, welcome["seq"], events
                    events.append(message)
            finally:
                await ws.close()

    def check_store(self) -> None:
        before = self._all_calls()
        since, head, events = self.loop.run(self._replay(), timeout=4 * WAIT)
        after = self._all_calls()
        seqs = [event["seq"] for event in events]
        assert seqs == list(range(since + 1, head + 1)), "replay is not gap-free and unique"
        last_state: dict[str, dict[str, Any]] = {}
        by_call: dict[str, list[dict[str, Any]]] = {}
        for event in events:
            call_id = event["call_control_id"]
            assert call_id in after, f"event {event['seq']} of an unknown call {call_id!r}"
            by_call.setdefault(call_id, []).append(event)
            if event["type"] == "call.state":
                payload = event["payload"]
                assert payload["state"] in CALL_STATES, event
                assert payload["stream"] in STREAM_STATES, event
                last_state[call_id] = payload
        for call_id, call in after.items():
            assert call["state"] in CALL_STATES, call
            assert call["stream"] in STREAM_STATES, call
            stable = before.get(call_id, {}).get("updated_at") == call["updated_at"]
            if stable and call_id in last_state and since == 0:
                announced = last_state[call_id]
                assert (announced["state"], announced["stream"]) == (
                    call["state"],
                    call["stream"],
                ), f"call {call_id!r} is {call['state']}/{call['stream']}, its log says {announced}"
        for seq, delivered in self.witness.live.items():
            if since < seq <= head:
                stored = events[seq - since - 1]
                assert delivered == stored, f"seq {seq}: live {delivered} != stored {stored}"
        # The per-call log over REST, for calls whose id survives a path segment.
        checked = 0
        for call_id, logged in by_call.items():
            if "/" in call_id or call_id in ("", ".", "..") or since:
                continue
            if before.get(call_id, {}).get("updated_at") != after[call_id]["updated_at"]:
                continue
            response = self.api.get(f"/api/calls/{quote(call_id, safe='')}/events")
            assert response.status_code == 200, (call_id, response.text)
            rest = [e for e in response.json()["data"] if e["seq"] <= head]  # newer: later
            assert rest == logged, f"REST log of {call_id!r} != replay: {rest} {logged}"
            checked += 1
            if checked >= 200:
                break

    def close(self) -> None:
        self.witness.close()
