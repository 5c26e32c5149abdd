"""Fuzzing browser tokens on every surface that takes one.

Tokens are random strings, valid tokens taken apart, and tokens signed with the service's own
secret (PyJWT directly) but with claims it would never issue: expired, not yet valid, for
another audience, another algorithm, huge or fractional times, scopes of the wrong type.

The oracle is the service's verifier run in this process: every surface (the `/call-events` and
`/frontend-audio` handshakes, a refresh on an open socket, REST reads) must agree with it, a
token it refuses must be refused with 401/403 or 4401/4403 and a reason, and a token it accepts
must open exactly what it grants, never more. The verifier itself must refuse with TokenError,
never raise anything else.
"""

from __future__ import annotations

import contextlib
import re
from urllib.parse import quote

import httpx
import orjson
import pytest
from hypothesis import given
from hypothesis import strategies as st
from websockets.exceptions import ConnectionClosed

from callbridge.auth.tokens import Grant, Right, TokenError, TokenIssuer
from tests.conftest import TOKEN_SECRET, mint_token
from tests.fuzz.harness import (
    Closed,
    FuzzTarget,
    PlayedCall,
    assert_closed_with_reason,
    assert_refusal,
    connected,
    expect,
    fuzz,
    next_message,
    open_ws,
)
from tests.fuzz.strategies import jwt_claims, signed_token, token_strings

VERIFIER = TokenIssuer(TOKEN_SECRET, max_ttl=3600)
EVENTS_LIMIT = 4096  # CALLBRIDGE_EVENTS_MAX_MESSAGE_BYTES's default
PROTOCOL_SAFE = re.compile(r"^[A-Za-z0-9._-]+$")


@pytest.fixture(scope="module")
def live_call(target: FuzzTarget) -> PlayedCall:
    return PlayedCall(target)


def oracle(token: str) -> Grant | None:
    """What the service's verifier makes of the token: a grant, or None (refused)."""
    try:
        return VERIFIER.verify(token)
    except TokenError:
        return None


def events_open(grant: Grant | None) -> bool:
    """Whether /call-events without a call_control_id admits this grant."""
    return grant is not None and Right.EVENTS in grant.rights


def check_everywhere(target: FuzzTarget, call_id: str, token: str, grant: Grant | None) -> None:
    via_protocol = bool(PROTOCOL_SAFE.match(token))

    async def sockets() -> None:
        # /call-events, the token in the query or in the subprotocol.
        query = "" if via_protocol else f"?token={quote(token, safe='')}"
        protocols = ["callbridge", f"callbridge.token.{token}"] if via_protocol else None
        ws = await open_ws(target.service, "/call-events", query, subprotocols=protocols)
        if isinstance(ws, Closed):  # only a token too long for a request line
            assert ws.code in (414, 431), ws
            assert len(token) > 8000, ws
            return
        try:
            first = await next_message(ws)
            if events_open(grant):
                expect(first, "welcome")
                assert grant is not None
                if grant.calls is not None:
                    assert set(first["filter"] or ()) <= grant.calls, (first, grant)
            else:
                assert isinstance(first, Closed), f"token refused here, welcomed there: {first}"
                assert_closed_with_reason(first, [4401, 4403])
        finally:
            await ws.close()

        # /frontend-audio of a live call.
        query = f"?call_control_id={quote(call_id)}&token={quote(token, safe='')}"
        ws = await open_ws(target.service, "/frontend-audio", query)
        if isinstance(ws, Closed):
            assert ws.code in (414, 431), ws
            return
        try:
            first = await next_message(ws)
            listens = grant is not None and Right.LISTEN in grant.rights and grant.covers(call_id)
            if listens:
                expect(first, "format")
            else:
                assert isinstance(first, Closed), f"token refused here, admitted there: {first}"
                assert_closed_with_reason(first, [4401, 4403])
        finally:
            await ws.close()

        # A refresh on an open /call-events socket (for every call).
        ws = await connected(target.service, "/call-events", f"?token={mint_token()}")
        try:
            welcome = await next_message(ws)
            expect(welcome, "welcome")
            refresh = f'{{"type":"token","token":{_json_string(token)}}}'
            with contextlib.suppress(ConnectionClosed):
                await ws.send(refresh)
            if len(refresh) > EVENTS_LIMIT:  # over the socket's message limit
                while not isinstance(closed := await next_message(ws), Closed):
                    pass  # live events
                assert_closed_with_reason(closed, [1009])
                return
            while True:
                answer = await next_message(ws)
                assert not isinstance(answer, (bytes, Closed)), answer
                if answer["type"].startswith("token."):
                    break
            refreshed = events_open(grant) and grant is not None and grant.calls is None
            expected = "token.accepted" if refreshed else "token.refused"
            assert answer["type"] == expected, (answer, grant)
            if expected == "token.refused":
                assert answer["reason"].strip(), answer
        finally:
            await ws.close()

    target.loop.run(sockets())

    # REST reads take a browser token with the events right.
    with httpx.Client(base_url=target.service.url, timeout=target.api.timeout) as browser:
        try:
            bearer = f"Bearer {token}".encode()
            response = browser.get("/api/calls", headers={"authorization": bearer})
        except httpx.LocalProtocolError:  # a token that cannot be a header value
            return
    if any(ord(c) < 0x21 or ord(c) > 0x7E for c in token):
        assert response.status_code in (400, 401, 403), response.status_code
        return
    assert_refusal(response, (401, 403))
    if events_open(grant):
        assert response.status_code == 200, response.text
        assert grant is not None
        listed = {call["call_control_id"] for call in response.json()["data"]}
        assert grant.calls is None or listed <= grant.calls, (listed, grant)
    else:
        assert response.status_code in (401, 403), response.text


def _json_string(value: str) -> str:
    return orjson.dumps(value).decode()


@fuzz(80)
@given(data=st.data())
def test_tokens_signed_with_our_secret_but_odd_claims(
    target: FuzzTarget, live_call: PlayedCall, data: st.DataObject
) -> None:
    call_id, _ = live_call.current()
    claims = data.draw(jwt_claims([call_id]), label="claims")
    algorithm = data.draw(st.sampled_from(["HS256", "HS256", "HS256", "HS384", "none"]))
    token = signed_token(claims, TOKEN_SECRET, algorithm)
    grant = oracle(token)
    if algorithm != "HS256":
        assert grant is None, "a token not signed with HS256 was accepted"
    check_everywhere(target, call_id, token, grant)
    target.alive()


@fuzz(40)
@given(data=st.data())
def test_random_and_tampered_tokens(
    target: FuzzTarget, live_call: PlayedCall, data: st.DataObject
) -> None:
    call_id, _ = live_call.current()
    valid = mint_token(
        data.draw(st.sampled_from([None, [call_id]]), label="calls"),
        rights=tuple(
            data.draw(
                st.lists(st.sampled_from(list(Right)), min_size=1, max_size=3, unique=True),
                label="rights",
            )
        ),
    )
    token = data.draw(token_strings(valid), label="token")
    check_everywhere(target, call_id, token, oracle(token))
    target.alive()


@fuzz(10)
@given(secret=st.text(min_size=32, max_size=64).filter(lambda s: s != TOKEN_SECRET))
def test_tokens_signed_with_another_secret(
    target: FuzzTarget, live_call: PlayedCall, secret: str
) -> None:
    call_id, _ = live_call.current()
    token = mint_token(secret=secret)
    assert oracle(token) is None, "a token signed with another secret was accepted"
    check_everywhere(target, call_id, token, None)
    target.alive()
