"""Fuzzing the REST API: query parameters, path segments, methods, bodies and credentials.

Every answer is a success or a 4xx with `{"error", "detail"}`; never a 5xx. (A 502 is allowed
only where the protocol documents it: Telnyx, here the simulator, refused a command.)
"""

from __future__ import annotations

from typing import Any
from urllib.parse import quote

import httpx
import jwt
import orjson
import pytest
from hypothesis import given
from hypothesis import strategies as st

from callbridge.auth.tokens import AUDIENCE, ISSUER
from tests.conftest import TOKEN_SECRET
from tests.fuzz.harness import CALL_STATES, FuzzTarget, assert_refusal, fuzz
from tests.fuzz.strategies import (
    dial_bodies,
    header_values,
    identifiers,
    json_values,
    query_pairs,
    token_bodies,
    token_strings,
    weird_text,
)

COMMANDS = ("", "/events", "/answer", "/hangup", "/streaming/start", "/streaming/stop", "/x")
METHODS = ("GET", "POST", "PUT", "DELETE", "PATCH", "HEAD", "OPTIONS")
MAX_TTL = 3600  # CALLBRIDGE_TOKEN_MAX_TTL's default


@pytest.fixture(scope="module")
def dialled() -> list[str]:
    """Calls this module dialled itself: the only real calls it sends commands to."""
    return []


def check(response: httpx.Response, allowed: tuple[int, ...] = ()) -> httpx.Response:
    if response.status_code == 502:  # documented: the carrier refused; still the error shape
        body = response.json()
        assert body["error"] in ("carrier_error", "carrier_unavailable"), body
        assert isinstance(body["carrier"], dict), body
        return response
    assert_refusal(response, allowed)
    return response


@fuzz(60)
@given(pairs=query_pairs())
def test_listing_calls_with_any_query(target: FuzzTarget, pairs: list[tuple[str, str]]) -> None:
    response = check(target.api.get("/api/calls", params=pairs), (414, 422))
    if response.status_code == 200:
        body = response.json()
        meta = body["meta"]
        assert 1 <= meta["limit"] <= 500, meta
        assert len(body["data"]) <= meta["limit"], meta
        assert meta["total"] >= 0, meta
        assert meta["offset"] >= 0, meta
        wanted = {v for k, v in pairs if k == "state"}
        for call in body["data"]:
            assert call["state"] in CALL_STATES, call
            assert not wanted or call["state"] in wanted, (wanted, call)
    target.alive()


@fuzz(80)
@given(
    method=st.sampled_from(METHODS),
    segment=st.one_of(identifiers, st.sampled_from(["%2F", "%00", "..", ".", "%", "v3:x"])),
    encode=st.booleans(),
    command=st.sampled_from(COMMANDS),
    body=st.one_of(st.none(), json_values.map(orjson.dumps), st.binary(max_size=50)),
)
def test_paths_and_methods_of_the_calls_api(
    target: FuzzTarget,
    method: str,
    segment: str,
    encode: bool,
    command: str,
    body: bytes | None,
) -> None:
    path_segment = quote(segment, safe="") if encode else quote(segment, safe="/%:.")
    response = target.api.request(method, f"/api/calls/{path_segment}{command}", content=body)
    if method == "HEAD":  # no body to look at
        assert response.status_code < 500, response.status_code
    else:
        check(response, (400, 404, 405, 409, 414, 422))
    target.alive()


@fuzz(40)
@given(path=st.one_of(weird_text, st.sampled_from(["static/../../etc/passwd", "api", "metrics"])))
def test_any_path_under_the_service(target: FuzzTarget, path: str) -> None:
    response = target.api.get("/" + quote(path, safe="/%.:"))
    assert response.status_code < 500, (path, response.status_code, response.text[:200])
    if response.status_code >= 400 and response.headers.get("content-type", "").startswith(
        "application/json"
    ):
        assert_refusal(response)
    assert b"root:" not in response.content, "a path escaped the static directory"
    target.alive()


@fuzz(40)
@given(data=st.data())
def test_dial_bodies(target: FuzzTarget, dialled: list[str], data: st.DataObject) -> None:
    body = data.draw(dial_bodies())
    raw = data.draw(st.one_of(st.just(orjson.dumps(body)), st.binary(max_size=60)), label="raw")
    response = check(
        target.api.post("/api/calls", content=raw, headers={"content-type": "application/json"}),
        (400, 422, 429),  # 400: a body that is not JSON text at all
    )
    if response.status_code == 429:
        assert response.json()["error"] == "rate_limited", response.text
        assert int(response.headers["Retry-After"]) >= 1
    if response.status_code == 201:
        call = response.json()["data"]
        assert call["state"] in CALL_STATES, call
        assert call["to"] == body["to"], (call, body)
        dialled.append(call["call_control_id"])
    target.alive()


@fuzz(40)
@given(data=st.data(), command=st.sampled_from(COMMANDS[:-1]))
def test_commands_on_real_calls(
    target: FuzzTarget, dialled: list[str], data: st.DataObject, command: str
) -> None:
    if not dialled:
        response = target.api.post("/api/calls", json={"to": "+15550100003"})
        check(response, (429,))
        if response.status_code != 201:
            return
        dialled.append(response.json()["data"]["call_control_id"])
    call_id = data.draw(st.sampled_from(dialled), label="call")
    method = "GET" if command in ("", "/events") else "POST"
    response = check(
        target.api.request(method, f"/api/calls/{quote(call_id, safe='')}{command}"), (409,)
    )
    if response.status_code == 409:
        assert response.json()["error"] in ("call_ended", "not_answerable"), response.text
    after = target.api.get(f"/api/calls/{quote(call_id, safe='')}").json()["data"]
    assert after["state"] in CALL_STATES, after
    target.alive()


@fuzz(50)
@given(body=token_bodies(), raw=st.one_of(st.none(), st.binary(max_size=40)))
def test_token_requests(target: FuzzTarget, body: Any, raw: bytes | None) -> None:
    content = orjson.dumps(body) if raw is None else raw
    response = check(
        target.api.post(
            "/api/tokens", content=content, headers={"content-type": "application/json"}
        ),
        (400, 422),
    )
    if response.status_code == 201:
        asked = orjson.loads(content) if content.strip() else None
        assert asked is None or isinstance(asked, dict), content  # no body or null: defaults
        body = asked or {}
        issued = response.json()
        claims = jwt.decode(
            issued["token"], TOKEN_SECRET, algorithms=["HS256"], audience=AUDIENCE, issuer=ISSUER
        )
        assert 0 < claims["exp"] - claims["iat"] <= MAX_TTL, claims
        assert issued["expires_in"] <= MAX_TTL, issued
        asked_rights = body.get("rights", ["events", "listen"])
        assert sorted(set(asked_rights)) == issued["rights"] == claims["rights"], issued
        asked_calls = body.get("calls", "*")
        expected = "*" if asked_calls == "*" else sorted(set(asked_calls))
        assert issued["calls"] == expected == claims["calls"], (issued, body)
    target.alive()


@fuzz(60)
@given(
    scheme=st.sampled_from(["Bearer ", "bearer ", "Basic ", "", "Bearer  ", "Token "]),
    credential=st.one_of(token_strings(), header_values.map(lambda b: b.decode("latin-1"))),
    endpoint=st.sampled_from(
        [("GET", "/api/calls"), ("POST", "/api/tokens"), ("GET", "/api/calls/v3:x/events")]
    ),
)
def test_credentials_of_any_kind(
    target: FuzzTarget, scheme: str, credential: str, endpoint: tuple[str, str]
) -> None:
    method, path = endpoint
    value = (scheme + credential).encode("latin-1", "replace")
    with httpx.Client(base_url=target.service.url, timeout=target.api.timeout) as anonymous:
        try:
            response = anonymous.request(method, path, headers={"authorization": value})
        except httpx.LocalProtocolError:  # a header h11 will not send (trailing whitespace)
            return
    if any(ord(c) < 0x20 or ord(c) == 0x7F for c in credential):
        # Not HTTP: the parser answers 400 (in plain text) before any route runs.
        assert response.status_code == 400, response.text
        return
    check(response, (401, 403, 404))
    assert response.status_code != 200 or scheme.strip().lower() == "bearer", response.text
    if response.status_code == 401:
        assert response.headers["www-authenticate"].startswith("Bearer"), response.headers
    target.alive()
