"""Fuzzing the browser sockets: `/call-events` and `/frontend-audio`, handshakes and messages.

Both sockets stay open on bad messages by design and answer each with an `error` (`/call-events`:
every message gets exactly one answer); only a message over the route's limit closes them (1009,
with a reason). Handshakes are refused with 44xx and a reason, never a 1011 or 1006.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Iterator
from typing import Any
from urllib.parse import quote

import orjson
import pytest
from hypothesis import given
from hypothesis import strategies as st
from websockets.asyncio.client import ClientConnection
from websockets.exceptions import ConnectionClosed

from callbridge.carrier.telnyx.media import AUTH_HEADER
from callbridge.sim.media import TelnyxMediaStream
from tests.conftest import mint_token
from tests.fuzz.harness import (
    Closed,
    FuzzTarget,
    PlayedCall,
    assert_closed_with_reason,
    connected,
    expect,
    fuzz,
    is_text,
    next_message,
    open_ws,
    query_string,
)
from tests.fuzz.strategies import browser_messages, identifiers, query_pairs, token_strings

EVENTS_LIMIT = 4096  # CALLBRIDGE_EVENTS_MAX_MESSAGE_BYTES's default
RESYNC_CODES = ("epoch_changed", "seq_ahead", "too_far_behind", "expired")
PING = '{"type":"ping"}'


async def exchange(ws: ClientConnection, message: str | bytes) -> list[dict[str, Any]] | Closed:
    """Send a message, then a ping: the JSON answers before the ping's pong (events and audio
    aside), or how the socket closed. A ping sent as the message gets its own pong first."""
    pongs = 2 if _json_object(message).get("type") == "ping" else 1
    with contextlib.suppress(ConnectionClosed):
        await ws.send(message)
        await ws.send(PING)
    answers: list[dict[str, Any]] = []
    while True:
        reply = await next_message(ws)
        if isinstance(reply, Closed):
            return reply
        if isinstance(reply, bytes) or ("seq" in reply and reply["type"] != "resync"):
            continue  # audio, or a live event
        if reply["type"] == "pong":
            pongs -= 1
            if not pongs:
                return answers
            continue
        answers.append(reply)


def assert_error(answer: dict[str, Any], with_code: bool) -> None:
    assert answer["type"] == "error", answer
    assert is_text(answer["reason"]), answer
    if with_code:
        assert answer["code"] in (4400, 4409, 1009), answer


def assert_token_answer(answer: dict[str, Any]) -> None:
    if answer["type"] == "token.accepted":
        assert isinstance(answer["expires_at"], int), answer
    else:
        assert answer["type"] == "token.refused", answer
        assert is_text(answer["reason"]), answer


# --- /call-events ---------------------------------------------------------------------------


@fuzz(40)
@given(messages=st.lists(browser_messages(), min_size=1, max_size=6))
def test_call_events_answers_every_message_once_and_stays_open(
    target: FuzzTarget, messages: list[str | bytes]
) -> None:
    async def converse() -> None:
        ws = await connected(target.service, "/call-events", f"?token={mint_token()}")
        try:
            expect(await next_message(ws), "welcome")
            for message in messages:
                answers = await exchange(ws, message)
                if len(message) > EVENTS_LIMIT:
                    assert isinstance(answers, Closed), answers
                    assert_closed_with_reason(answers, [1009])
                    return
                assert isinstance(answers, list), f"closed after {message!r:.100}: {answers}"
                assert len(answers) <= 1, answers  # a ping gets only its pong
                parsed = _json_object(message)
                if parsed.get("type") == "ping":
                    assert answers == [], answers
                    continue
                assert len(answers) == 1, (message, answers)
                if parsed.get("type") == "token":
                    assert_token_answer(answers[0])
                else:
                    assert_error(answers[0], with_code=False)
        finally:
            await ws.close()

    target.loop.run(converse())
    target.alive()


def _json_object(message: str | bytes) -> dict[str, Any]:
    if isinstance(message, bytes):
        return {}
    try:
        parsed = orjson.loads(message)
    except orjson.JSONDecodeError:
        return {}
    return parsed if isinstance(parsed, dict) else {}


@fuzz(60)
@given(
    pairs=query_pairs(),
    since=st.one_of(st.none(), st.integers(-3, 10**6).map(str)),
    via_protocol=st.booleans(),
)
def test_call_events_handshakes_welcome_or_refuse_with_a_reason(
    target: FuzzTarget, pairs: list[tuple[str, str]], since: str | None, via_protocol: bool
) -> None:
    token = mint_token()
    pairs = [p for p in pairs if p[0] != "token"]
    if since is not None:
        pairs.append(("since", since))
    if not via_protocol:
        pairs.append(("token", token))
    protocols = ["callbridge", f"callbridge.token.{token}"] if via_protocol else None
    query = query_string(pairs)

    async def handshake() -> tuple[dict[str, Any] | Closed, dict[str, Any] | Closed | None]:
        ws = await open_ws(target.service, "/call-events", query, subprotocols=protocols)
        if isinstance(ws, Closed):
            return ws, None
        try:
            first = await next_message(ws)
            assert not isinstance(first, bytes)
            if isinstance(first, Closed) or "since" not in dict(pairs):
                return first, None
            seqs = []
            while True:  # the replay, then its end
                second = await next_message(ws)
                assert isinstance(second, dict), second
                if second["type"] in ("replayed", "resync"):
                    break
                seqs.append(second["seq"])
            assert seqs == sorted(set(seqs)), "a replay out of order or with repeats"
            assert all(int(dict(pairs)["since"]) < seq <= first["seq"] for seq in seqs), seqs
            if second["type"] == "replayed":
                assert second["count"] == len(seqs), (second, seqs)
            return first, second
        finally:
            await ws.close()

    first, second = target.loop.run(handshake())
    if isinstance(first, Closed) and 400 <= first.code < 500:  # refused before any route
        assert first.code in (414, 431), first
        assert len(query) > 8000, first
    elif isinstance(first, Closed):
        assert_closed_with_reason(first, [4400])
        given_since = dict(pairs)["since"]
        # Refused: not a plain non-negative integer, or one longer than Python reads (4300
        # digits; no log has such a seq, so "must be an integer seq" is fair).
        plain = given_since.isascii() and given_since.isdigit() and len(given_since) <= 4300
        assert not plain, (first, given_since)
    else:
        assert first["type"] == "welcome", first
        asked = sorted({v for k, v in pairs if k == "call_control_id"})
        assert first["filter"] == (asked or None), first
        if second is not None:
            assert isinstance(second, dict), second
            if second["type"] == "resync":
                assert second["reason"].split(":")[0] in RESYNC_CODES, second
            else:
                assert second["type"] == "replayed", second
    target.alive()


# --- /frontend-audio --------------------------------------------------------------------------


class TalkCall:
    """A played call with its carrier stream open (bidirectional), whose talk-back is read and
    dropped, so that browsers can talk into it."""

    def __init__(self, target: FuzzTarget) -> None:
        self.target = target
        self.played = PlayedCall(target)
        self.call_id = ""
        self.stream: TelnyxMediaStream | None = None
        self._drainer: asyncio.Future[None] | None = None

    def current(self) -> str:
        call_id, token = self.played.current()
        if call_id != self.call_id:
            self.close()
            self.stream = self.target.loop.run(self._open(call_id, token))
            self.call_id = call_id
        return call_id

    async def _open(self, call_id: str, token: str) -> TelnyxMediaStream:
        ws = await connected(self.target.service, "/audio-stream", headers={AUTH_HEADER: token})
        stream = TelnyxMediaStream(ws, call_control_id=call_id, token=None)
        await stream.begin()
        self._drainer = asyncio.ensure_future(self._drain(ws))
        return stream

    @staticmethod
    async def _drain(ws: ClientConnection) -> None:
        with contextlib.suppress(ConnectionClosed):
            async for _ in ws:
                pass

    def close(self) -> None:
        if self.stream is not None:
            self.target.loop.run(self.stream.close())
            self.stream = None


@pytest.fixture(scope="module")
def talk_call(target: FuzzTarget) -> Iterator[TalkCall]:
    call = TalkCall(target)
    yield call
    call.close()


FRONTEND_ANSWERS = {
    "error",
    "talk.started",
    "talk.refused",
    "talk.stopped",
    "token.accepted",
    "token.refused",
    "format",
    "mark",
}


@fuzz(50)
@given(
    messages=st.lists(
        st.one_of(
            browser_messages(),
            st.sampled_from(
                [
                    '{"type":"talk.start","encoding":"pcm16","sample_rate":16000}',
                    '{"type":"talk.start","encoding":"PCMU"}',
                    '{"type":"talk.stop"}',
                    '{"type":"mark","name":"m"}',
                    '{"type":"clear"}',
                ]
            ),
            st.binary(max_size=2000),
            st.just(b"\x00" * (64 * 1024 + 2)),
        ),
        min_size=1,
        max_size=8,
    )
)
def test_frontend_audio_answers_bad_messages_and_stays_open(
    target: FuzzTarget, talk_call: TalkCall, messages: list[str | bytes]
) -> None:
    call_id = talk_call.current()

    async def converse() -> None:
        query = f"?call_control_id={quote(call_id)}&token={mint_token([call_id])}"
        ws = await connected(target.service, "/frontend-audio", query)
        try:
            expect(await next_message(ws), "format")
            for message in messages:
                answers = await exchange(ws, message)
                assert isinstance(answers, list), f"closed after {message!r:.100}: {answers}"
                for answer in answers:
                    assert answer["type"] in FRONTEND_ANSWERS, answer
                    if answer["type"] == "error":
                        assert_error(answer, with_code=True)
                    elif answer["type"].startswith("token."):
                        assert_token_answer(answer)
                    elif answer["type"] == "talk.refused":
                        assert answer["code"] in (4403, 4409, 1011), answer
                        assert answer["reason"].strip(), answer
        finally:
            await ws.close()

    target.loop.run(converse())
    target.alive()


@fuzz(50)
@given(
    pairs=query_pairs(),
    call=st.sampled_from(["live", "none", "unknown", "two", "odd"]),
    odd=identifiers,
    token=st.sampled_from(["all", "this call", "other call", "listen only", "garbage", "none"]),
    garbage=token_strings(),
)
def test_frontend_audio_handshakes_format_or_refuse_with_a_reason(
    target: FuzzTarget,
    talk_call: TalkCall,
    pairs: list[tuple[str, str]],
    call: str,
    odd: str,
    token: str,
    garbage: str,
) -> None:
    from callbridge.auth.tokens import Right

    live = talk_call.current()
    pairs = [p for p in pairs if p[0] not in ("call_control_id", "token")]
    ids = {
        "live": [live],
        "none": [],
        "unknown": ["v3:fuzz-unknown"],
        "two": [live, "v3:x"],
        "odd": [odd],
    }
    pairs += [("call_control_id", i) for i in ids[call]]
    presented = {
        "all": mint_token(),
        "this call": mint_token([live]),
        "other call": mint_token(["v3:other"]),
        "listen only": mint_token([live], rights=(Right.LISTEN,)),
        "garbage": garbage,
        "none": "",
    }[token]
    if presented:
        pairs.append(("token", presented))
    query = query_string(pairs)

    async def handshake() -> dict[str, Any] | Closed:
        ws = await open_ws(target.service, "/frontend-audio", query)
        if isinstance(ws, Closed):
            return ws
        try:
            first = await next_message(ws)
            assert not isinstance(first, bytes), "audio before format"
            return first
        finally:
            await ws.close()

    first = target.loop.run(handshake())
    named = dict(pairs).get("call_control_id")  # the one the server reads: the last
    if isinstance(first, Closed) and 400 <= first.code < 500:
        assert first.code in (414, 431), first
        assert len(query) > 8000, first
    elif isinstance(first, Closed):
        assert_closed_with_reason(first, [4400, 4401, 4403, 4404])
        if first.code == 4404:
            assert named not in (None, live), first
    else:
        assert first["type"] == "format", first
        assert first["call_control_id"] == named == live, first
        assert token in ("all", "this call", "listen only"), first
    target.alive()
