"""Fuzzing `POST /api/webhooks/telnyx`: bodies and headers, signed and not.

Unsigned or badly signed input must be refused with 401 (413 when too big) and change nothing;
correctly signed input of any shape is either stored (200) or refused as malformed (400); and
signed events that make no sense together must still leave every call in a documented state
that only ever moved forward.
"""

from __future__ import annotations

import base64
import time
from typing import Any
from urllib.parse import quote

import orjson
from hypothesis import given
from hypothesis import strategies as st
from nacl.signing import SigningKey

from tests.conftest import SEED
from tests.fuzz.harness import CALL_STATES, STREAM_STATES, FuzzTarget, assert_refusal, fuzz
from tests.fuzz.strategies import (
    EVENT_TYPES,
    header_values,
    json_values,
    mutated,
    telnyx_event,
)
from tests.helpers import new_call_id

PATH = "/api/webhooks/telnyx"
LIMIT = 262_144  # CALLBRIDGE_WEBHOOK_MAX_BYTES's default
KEY = SigningKey(base64.b64decode(SEED))  # the simulator's key, which the service trusts
RANK = {
    "dialing": 0,
    "initiated": 1,
    "ringing": 1,
    "answered": 2,
    "streaming": 3,
    "ended": 4,
}


def sign(body: bytes, timestamp: str) -> dict[str, str]:
    signature = KEY.sign(timestamp.encode() + b"|" + body).signature
    return {
        "content-type": "application/json",
        "telnyx-timestamp": timestamp,
        "telnyx-signature-ed25519": base64.b64encode(signature).decode(),
    }


def post(target: FuzzTarget, body: bytes, headers: dict[str, str]) -> Any:
    response = target.api.post(PATH, content=body, headers=headers)
    assert_refusal(response)
    return response


def assert_unknown(target: FuzzTarget, call_id: str) -> None:
    response = target.api.get(f"/api/calls/{quote(call_id, safe='')}")
    assert response.status_code == 404, f"a refused webhook stored call {call_id}"


def assert_answer(response: Any) -> None:
    """What a stored webhook answers: accepted with one or two consecutive seqs, or duplicate."""
    if response.status_code != 200:
        return
    answer = response.json()
    assert answer["status"] in ("accepted", "duplicate"), answer
    if answer["status"] == "accepted":
        seqs = answer["seq"]
        assert 1 <= len(seqs) <= 2, answer
        assert seqs == list(range(seqs[0], seqs[0] + len(seqs))), answer


def _dig(document: Any, *path: str) -> Any:
    """document[path[0]][path[1]]…, or None where the path breaks."""
    for key in path:
        if not isinstance(document, dict):
            return None
        document = document.get(key)
    return document


def call_of(target: FuzzTarget, call_id: str) -> dict[str, Any]:
    response = target.api.get(f"/api/calls/{quote(call_id, safe='')}")
    assert response.status_code == 200, response.text
    call: dict[str, Any] = response.json()["data"]
    assert call["state"] in CALL_STATES, call
    assert call["stream"] in STREAM_STATES, call
    return call


# --- not signed, or not signed right ------------------------------------------------------------


signature_headers = st.fixed_dictionaries(
    {},
    optional={
        "telnyx-signature-ed25519": st.one_of(
            header_values,
            st.binary(min_size=64, max_size=64).map(lambda b: base64.b64encode(b).decode()),
            st.binary(max_size=100).map(lambda b: base64.b64encode(b).decode()),
        ),
        "telnyx-timestamp": st.one_of(
            header_values,
            st.integers(-(2**70), 2**70).map(str),
            st.sampled_from(["9" * 400, "-" + "9" * 400, "1e10", "0x10", "NaN"]),
        ),
        "content-type": st.sampled_from(["application/json", "text/plain", "", "x/y; z"]),
        "content-encoding": st.sampled_from(["gzip", "identity", "br"]),
    },
)


@fuzz(60)
@given(
    body=st.one_of(
        st.binary(max_size=300),
        json_values.map(orjson.dumps),
        st.just(b""),
    ),
    headers=signature_headers,
)
def test_unsigned_input_is_refused_with_401(
    target: FuzzTarget, body: bytes, headers: dict[str, str]
) -> None:
    response = post(target, body, headers)
    assert response.status_code == 401, response.text
    assert response.json()["error"] == "invalid_signature"
    target.alive()


@fuzz(60)
@given(
    event=telnyx_event(new_call_id()),
    change=st.sampled_from(
        ["flip", "truncate", "other body", "other key", "stale", "future", "text", "huge"]
    ),
    where=st.integers(0, 63),
)
def test_bad_signatures_and_timestamps_are_401_and_store_nothing(
    target: FuzzTarget, event: dict[str, Any], change: str, where: int
) -> None:
    call_id = new_call_id()
    event["data"]["payload"]["call_control_id"] = call_id
    body = orjson.dumps(event)
    now = int(time.time())
    headers = sign(body, str(now))
    raw = bytearray(base64.b64decode(headers["telnyx-signature-ed25519"]))
    if change == "flip":
        raw[where] ^= 1 << (where % 8)
        headers["telnyx-signature-ed25519"] = base64.b64encode(raw).decode()
    elif change == "truncate":
        headers["telnyx-signature-ed25519"] = base64.b64encode(raw[:where]).decode()
    elif change == "other body":
        headers = sign(body + b" ", str(now))
    elif change == "other key":
        forged = SigningKey.generate().sign(f"{now}|".encode() + body).signature
        headers["telnyx-signature-ed25519"] = base64.b64encode(forged).decode()
    elif change == "stale":
        headers = sign(body, str(now - 301 - where * 1000))
    elif change == "future":
        headers = sign(body, str(now + 301 + where * 1000))
    elif change == "text":
        headers = sign(body, f"{now}x")
    else:
        headers = sign(body, "9" * (where * 10 + 20))
    response = post(target, body, headers)
    assert response.status_code == 401, response.text
    assert_unknown(target, call_id)
    target.alive()


@fuzz(6)
@given(size=st.integers(LIMIT - 2, LIMIT + 70_000), signed=st.booleans())
def test_oversized_bodies_are_413(target: FuzzTarget, size: int, signed: bool) -> None:
    call_id = new_call_id()
    document = {"data": {"event_type": "call.answered", "payload": {"call_control_id": call_id}}}
    head = orjson.dumps(document)[:-1] + b', "pad": "'
    body = head + b"p" * max(0, size - len(head) - 2) + b'"}'
    headers = sign(body, str(int(time.time()))) if signed else {}
    response = post(target, body, headers)
    if len(body) > LIMIT:
        assert response.status_code == 413, response.text
        assert response.json()["error"] == "body_too_large"
    else:
        assert response.status_code in (400, 401), response.text
    assert_unknown(target, call_id)
    target.alive()


# --- signed, so it reaches the parser and the state machine -----------------------------------


@fuzz(60)
@given(
    body=st.one_of(st.binary(max_size=200), json_values.map(orjson.dumps)),
    timestamp=st.sampled_from(["{now}", "+{now}", "0{now}", "-0{now}", "{now}_0"]),
)
def test_signed_input_of_any_shape_is_stored_or_400(
    target: FuzzTarget, body: bytes, timestamp: str
) -> None:
    response = post(target, body, sign(body, timestamp.format(now=int(time.time()))))
    assert response.status_code in (200, 400, 401), response.text
    assert_answer(response)
    target.alive()


@fuzz(100)
@given(data=st.data())
def test_signed_envelopes_with_wrong_parts_are_stored_or_400(
    target: FuzzTarget, data: st.DataObject
) -> None:
    call_id = new_call_id()
    event = data.draw(telnyx_event(call_id))
    if data.draw(st.booleans()):
        event = data.draw(mutated(event))
    body = orjson.dumps(event)
    response = post(target, body, sign(body, str(int(time.time()))))
    assert response.status_code in (200, 400), response.text
    assert_answer(response)
    if response.status_code == 200:
        stored_id = _dig(event, "data", "payload", "call_control_id")
        if isinstance(stored_id, str) and "/" not in stored_id and stored_id not in (".", ".."):
            call_of(target, stored_id)
    elif _dig(event, "data", "payload", "call_control_id") == call_id:
        assert_unknown(target, call_id)
    target.alive()


@fuzz(40)
@given(data=st.data())
def test_signed_events_in_any_order_only_move_calls_forward(
    target: FuzzTarget, data: st.DataObject
) -> None:
    """A burst of events for one call: known types, any order, repeats, old and new times."""
    call_id = new_call_id()
    sent: list[dict[str, Any]] = []
    expected_rank, expected_state = 0, "dialing"
    for _ in range(data.draw(st.integers(1, 8), label="events")):
        if sent and data.draw(st.integers(0, 3), label="repeat?") == 0:
            event = data.draw(st.sampled_from(sent), label="repeated")
            duplicate = True
        else:
            event = data.draw(
                telnyx_event(call_id, event_type=data.draw(st.sampled_from(EVENT_TYPES)))
            )
            event["data"]["occurred_at"] = data.draw(
                st.integers(-3600, 3600).map(
                    lambda s: time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(time.time() + s))
                ),
                label="occurred_at",
            )
            duplicate = False
        body = orjson.dumps(event)
        response = post(target, body, sign(body, str(int(time.time()))))
        assert response.status_code == 200, response.text
        assert_answer(response)
        assert (response.json()["status"] == "duplicate") == duplicate, response.json()
        if duplicate:
            continue
        sent.append(event)
        kind = event["data"]["event_type"]
        incoming = event["data"]["payload"]["direction"] == "incoming"
        proposed = {
            "call.initiated": "ringing" if incoming else "initiated",
            "call.answered": "answered",
            "streaming.started": "streaming",
            "call.hangup": "ended",
        }.get(kind)
        if proposed and RANK[proposed] > expected_rank and expected_state != "ended":
            expected_rank, expected_state = RANK[proposed], proposed

    call = call_of(target, call_id)
    assert call["state"] == expected_state, (call, [e["data"]["event_type"] for e in sent])
    if call["state"] == "ended":
        assert call["stream"] != "active", call
    log = target.api.get(f"/api/calls/{quote(call_id, safe='')}/events").json()["data"]
    assert len(log) >= len(sent)
    ranks = [RANK[e["payload"]["state"]] for e in log if e["type"] == "call.state"]
    assert ranks == sorted(ranks), f"the state moved backwards: {log}"
    target.alive()
