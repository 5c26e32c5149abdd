"""Hypothesis strategies for every input surface: JSON of any shape, Telnyx webhooks and media
messages with one thing wrong, browser messages, query strings, and tokens.

Most strategies start from something valid and break one part of it, because the interesting
bugs live just past the first check: a body that is signed and an envelope, but whose
`occurred_at` has an offset; a media frame whose sequence number is digits, but not ASCII ones.
"""

from __future__ import annotations

import base64
import copy
import json
import string
import time
import uuid
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import jwt
import orjson
from hypothesis import strategies as st

from callbridge.auth.tokens import ALGORITHM, AUDIENCE, ISSUER

__all__ = [
    "EVENT_TYPES",
    "HANDSHAKE_KEYS",
    "browser_messages",
    "dial_bodies",
    "header_values",
    "identifiers",
    "json_values",
    "jwt_claims",
    "media_messages",
    "mutated",
    "occurred_at",
    "query_pairs",
    "signed_token",
    "telnyx_event",
    "token_bodies",
    "token_strings",
    "weird_text",
]

# Telnyx Call Control event types callbridge knows, and some it does not.
EVENT_TYPES = (
    "call.initiated",
    "call.answered",
    "call.hangup",
    "call.bridged",
    "call.dtmf.received",
    "streaming.started",
    "streaming.stopped",
    "streaming.failed",
    "call.machine.detection.ended",
    "call.recording.saved",
)

# Strings that have broken parsers before: empty, NUL, path tricks, non-ASCII digits, RTL marks,
# column-sized and oversized, SQL, JSON and percent-encoding in the wrong place.
NASTY = (
    "",
    " ",
    "\x00",
    "v3:\x00",
    "..",
    "../..",
    "a/b",
    "%00",
    "%2F",
    "?x=1",
    "#",
    "null",
    "[]",
    "{}",
    "' OR 1=1 --",
    "²³",
    "١٢٣",
    "\u202e",
    "\ud7ff",
    "🙂" * 3,
    "x" * 64,
    "x" * 65,
    "x" * 129,
    "x" * 257,
    "y" * 5000,
)

weird_text = st.one_of(st.sampled_from(NASTY), st.text(max_size=40))

# Call ids, path segments, numbers: what travels from a URL or a body into a SQL query. NUL and
# over-long ones are drawn often, since PostgreSQL refuses both.
identifiers = st.one_of(
    st.sampled_from(["\x00", "v3:\x00x", "x" * 257, "%00", "v3:" + "y" * 300, "v3:ok"]),
    weird_text,
)

json_scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(2**63), max_value=2**64 - 1),
    st.floats(allow_nan=False, allow_infinity=False),
    weird_text,
)

json_values = st.recursive(
    json_scalars,
    lambda children: st.one_of(
        st.lists(children, max_size=4),
        st.dictionaries(st.text(max_size=12), children, max_size=4),
    ),
    max_leaves=10,
)

# Header values as bytes (httpx sends str values as ASCII only): Latin-1, no control
# characters, no whitespace at either end (h11 will not send those).
header_values = (
    st.text(
        alphabet=st.characters(min_codepoint=0x20, max_codepoint=0xFF, exclude_characters="\x7f"),
        max_size=80,
    )
    .map(str.strip)
    .map(lambda value: value.encode("latin-1"))
)


def _iso(moment: datetime) -> str:
    return moment.isoformat()


@st.composite
def occurred_at(draw: st.DrawFn) -> Any:
    """Telnyx's `occurred_at`: usually an ISO time, in any zone, at the edges of the calendar,
    or not a time at all."""
    now = datetime.now(UTC)
    kind = draw(st.integers(0, 5))
    if kind == 0:
        return now.isoformat().replace("+00:00", "Z")
    if kind == 1:  # near now, any offset Python can express
        minutes = draw(st.integers(-23 * 60 - 59, 23 * 60 + 59))
        shifted = now + timedelta(seconds=draw(st.integers(-600, 600)))
        return _iso(shifted.astimezone(timezone(timedelta(minutes=minutes))))
    if kind == 2:  # the first and last days of the calendar, with offsets that overflow them
        day = draw(st.sampled_from(["0001-01-01T00:00:00", "9999-12-31T23:59:59"]))
        return day + draw(st.sampled_from(["Z", "+05:00", "-05:00", "+23:59", "-23:59", ""]))
    if kind == 3:  # what pydantic also accepts: numbers (Unix time), dates
        return draw(st.one_of(st.integers(-(10**12), 10**12), st.floats(), st.just("2024-02-29")))
    if kind == 4:
        return draw(st.datetimes(timezones=st.just(UTC))).isoformat()
    return draw(json_values)


@st.composite
def telnyx_event(
    draw: st.DrawFn, call_control_id: str, *, event_type: str | None = None
) -> dict[str, Any]:
    """A Telnyx v2 webhook envelope for one call: known and unknown types, facts of any type."""
    chosen = event_type or draw(st.one_of(st.sampled_from(EVENT_TYPES), weird_text))
    fact = st.one_of(weird_text, json_values)
    payload: dict[str, Any] = {
        "call_control_id": call_control_id,
        "call_leg_id": draw(st.one_of(st.just(str(uuid.uuid4())), fact)),
        "call_session_id": str(uuid.uuid4()),
        "connection_id": "fuzz-connection",
        "client_state": draw(st.one_of(st.none(), st.just("aGVsbG8="), fact)),
        "from": draw(st.one_of(st.just("+15550101111"), fact)),
        "to": draw(st.one_of(st.just("+15550102222"), fact)),
        "direction": draw(st.one_of(st.sampled_from(["incoming", "outgoing"]), fact)),
        "state": draw(st.one_of(st.sampled_from(["parked", "bridging", "answered"]), fact)),
    }
    if chosen == "call.hangup" or draw(st.booleans()):
        payload.update(
            hangup_cause=draw(st.one_of(st.sampled_from(["normal_clearing", "user_busy"]), fact)),
            hangup_source=draw(st.one_of(st.sampled_from(["caller", "callee"]), fact)),
            sip_hangup_cause=draw(st.one_of(st.just("486"), fact)),
        )
    if chosen == "call.dtmf.received" or draw(st.booleans()):
        payload["digit"] = draw(st.one_of(st.sampled_from(list("0123456789*#")), fact))
    if chosen == "streaming.failed" or draw(st.booleans()):
        payload.update(failure_reason=draw(fact), stream_id=draw(fact))
    return {
        "data": {
            "record_type": "event",
            "event_type": chosen,
            "id": str(uuid.uuid4()),
            "occurred_at": draw(occurred_at()),
            "payload": payload,
        },
        "meta": {"attempt": draw(st.one_of(st.integers(1, 5), json_values))},
    }


def _paths(document: Any, prefix: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    """Every key path into a JSON document (dicts and lists)."""
    found = [prefix] if prefix else []
    if isinstance(document, dict):
        for key, value in document.items():
            found.extend(_paths(value, (*prefix, key)))
    elif isinstance(document, list):
        for index, value in enumerate(document):
            found.extend(_paths(value, (*prefix, index)))
    return found


@st.composite
def mutated(draw: st.DrawFn, document: dict[str, Any], protect: tuple[str, ...] = ()) -> Any:
    """The document with one to three things wrong: a value replaced by any JSON value, a key
    removed, an unknown key added. Paths under `protect` are left alone."""
    result = copy.deepcopy(document)
    for _ in range(draw(st.integers(1, 3))):
        paths = [p for p in _paths(result) if not (p and p[0] in protect)]
        if not paths:
            break
        path = draw(st.sampled_from(paths))
        parent = result
        for part in path[:-1]:
            parent = parent[part]
        action = draw(st.sampled_from(["replace", "remove", "add"]))
        if action == "replace":
            parent[path[-1]] = draw(json_values)
        elif action == "remove" and isinstance(parent, dict):
            del parent[path[-1]]
        elif isinstance(parent, dict):
            parent[draw(st.text(max_size=10))] = draw(json_values)
    return result


# --- media stream (/audio-stream) -------------------------------------------------------------

MEDIA_EVENTS = ("media", "dtmf", "mark", "stop", "connected", "start", "error")


def _b64(raw: bytes) -> str:
    return base64.b64encode(raw).decode()


@st.composite
def media_messages(draw: st.DrawFn, stream_id: str, call_control_id: str) -> str | bytes:
    """One frame from a carrier that is Telnyx on a bad day."""
    number = st.one_of(
        st.integers(0, 2**32).map(str),
        st.integers(0, 10**30).map(str),
        st.sampled_from(["-1", "1.5", "1e3", "", " 7", "²", "١٢", "0x10", "9" * 5000]),
        st.integers(-5, 2**70),
        json_values,
    )
    payload = st.one_of(
        st.binary(max_size=400).map(_b64),
        st.sampled_from(["", "=", "AAA", "AA==AA==", "not base64!", "AAAA\n", "////"]),
        json_values,
    )
    kind = draw(st.sampled_from([*MEDIA_EVENTS, "raw", "binary", "huge"]))
    if kind == "binary":
        return draw(st.binary(max_size=300))
    if kind == "raw":
        return draw(st.one_of(st.text(max_size=200), st.just("{"), st.just("[]"), st.just("null")))
    if kind == "huge":  # over the 256 KiB media limit, under the 1 MiB WebSocket limit
        return '{"event":"media","media":{"payload":"' + "A" * (300 * 1024) + '"}}'
    message: dict[str, Any] = {
        "event": kind,
        "sequence_number": draw(number),
        "stream_id": draw(st.one_of(st.just(stream_id), weird_text)),
    }
    if kind == "media":
        message["media"] = {
            "track": draw(
                st.one_of(st.sampled_from(["inbound", "outbound", "inbound_track"]), json_values)
            ),
            "chunk": draw(number),
            "timestamp": draw(number),
            "payload": draw(payload),
        }
    elif kind == "dtmf":
        message["dtmf"] = {"digit": draw(st.one_of(st.sampled_from(list("0123#")), json_values))}
        message["occurred_at"] = draw(occurred_at())
    elif kind == "mark":
        message["mark"] = {"name": draw(json_values)}
    elif kind == "start":
        message["start"] = {
            "call_control_id": draw(st.one_of(st.just(call_control_id), weird_text)),
            "media_format": draw(
                st.one_of(
                    st.fixed_dictionaries(
                        {
                            "encoding": st.one_of(
                                st.sampled_from(["PCMU", "PCMA", "L16", "G722", "OPUS"]),
                                json_values,
                            ),
                            "sample_rate": st.one_of(st.sampled_from([8000, 16000]), json_values),
                            "channels": st.one_of(st.just(1), json_values),
                        }
                    ),
                    json_values,
                )
            ),
        }
    elif kind == "error":
        message["payload"] = draw(
            st.one_of(
                st.fixed_dictionaries(
                    {"code": st.one_of(st.integers(), json_values), "title": json_values}
                ),
                json_values,
            )
        )
    if draw(st.booleans()):
        message = draw(mutated(message, protect=("event",)))
    return _dumps(message)


def _dumps(message: Any) -> str:
    try:
        return orjson.dumps(message).decode()
    except TypeError:  # integers past 64 bits: orjson refuses them, Python's json does not
        return json.dumps(message)


# --- browsers (/call-events, /frontend-audio) ------------------------------------------------

BROWSER_TYPES = ("ping", "token", "talk.start", "talk.stop", "mark", "clear", "subscribe")


@st.composite
def browser_messages(draw: st.DrawFn) -> str | bytes:
    """What a browser (or something pretending to be one) may send on its socket."""
    kind = draw(st.sampled_from(["json", "typed", "text", "binary", "big"]))
    if kind == "binary":
        return draw(st.binary(max_size=700))
    if kind == "text":
        return draw(st.text(max_size=200))
    if kind == "big":  # over /call-events' 4 KiB, under /frontend-audio's 64 KiB talk limit
        return draw(st.sampled_from(["x" * 5000, '{"type":"ping","pad":"' + "p" * 5000 + '"}']))
    if kind == "json":
        return _dumps(draw(json_values))
    message: dict[str, Any] = {"type": draw(st.one_of(st.sampled_from(BROWSER_TYPES), json_values))}
    if message["type"] == "talk.start" or draw(st.booleans()):
        message["encoding"] = draw(
            st.one_of(st.sampled_from(["pcm16", "PCMU", "PCMA"]), json_values)
        )
        message["sample_rate"] = draw(
            st.one_of(st.sampled_from([8000, 16000, 8000.0, 44100]), json_values)
        )
    if message["type"] == "mark" or draw(st.booleans()):
        message["name"] = draw(st.one_of(st.text(max_size=140), json_values))
    if message["type"] == "token" or draw(st.booleans()):
        message["token"] = draw(token_strings())
    return _dumps(message)


# --- query strings ----------------------------------------------------------------------------

HANDSHAKE_KEYS = ("since", "epoch", "call_control_id", "token", "limit", "offset", "state")


@st.composite
def query_pairs(
    draw: st.DrawFn, values: st.SearchStrategy[str] | None = None
) -> list[tuple[str, str]]:
    """Query parameters, repeated or not, with values that are numbers, almost numbers, or not."""
    value = values or st.one_of(
        st.integers(-(2**70), 2**70).map(str),
        st.sampled_from(["0", "-0", "+1", "1.0", "1e3", " 3", "0x10", "²", "NaN", "", "9" * 5000]),
        st.sampled_from(["dialing", "ringing", "ended", "streaming", "bogus"]),
        identifiers,
    )
    key = st.one_of(st.sampled_from(HANDSHAKE_KEYS), st.text(max_size=10))
    return draw(st.lists(st.tuples(key, value), max_size=5))


# --- REST bodies ------------------------------------------------------------------------------


@st.composite
def dial_bodies(draw: st.DrawFn) -> Any:
    """POST /api/calls bodies: valid ones (to numbers that end quickly) and broken ones."""
    valid: dict[str, Any] = {
        "to": draw(
            st.one_of(
                st.sampled_from(["+15550100002", "+15550100003"]),
                identifiers.map(lambda name: f"sip:{name}@sim"),
            )
        )
    }
    for field, options in (
        ("from", st.just("+15550100000")),
        ("stream_track", st.sampled_from(["inbound_track", "outbound_track", "both_tracks"])),
        ("bidirectional", st.booleans()),
        ("codec", st.sampled_from(["PCMU", "PCMA", "L16", "G722"])),
        ("client_state", st.sampled_from(["aGVsbG8=", "***", "a" * 4097])),
        ("timeout_secs", st.sampled_from([5, 4, 600, 601])),
    ):
        if draw(st.booleans()):
            valid[field] = draw(options)
    return draw(st.one_of(st.just(valid), mutated(valid), json_values))


@st.composite
def token_bodies(draw: st.DrawFn) -> Any:
    """POST /api/tokens bodies."""
    valid: dict[str, Any] = {}
    if draw(st.booleans()):
        valid["calls"] = draw(
            st.one_of(st.just("*"), st.lists(st.text(min_size=1, max_size=20), max_size=3))
        )
    if draw(st.booleans()):
        valid["rights"] = draw(
            st.lists(st.sampled_from(["events", "listen", "talk", "admin"]), max_size=4)
        )
    if draw(st.booleans()):
        valid["ttl"] = draw(st.one_of(st.integers(-10, 100_000), st.sampled_from([10, 86_400])))
    return draw(st.one_of(st.just(valid), mutated(valid) if valid else st.just(valid), json_values))


# --- tokens -------------------------------------------------------------------------------------

B64URL = string.ascii_letters + string.digits + "-_"


@st.composite
def jwt_claims(draw: st.DrawFn, calls: list[str]) -> dict[str, Any]:
    """Claims a holder of the right secret could sign: valid but for one or two claims, which
    are missing, expired, not yet valid, of the wrong type or of absurd size."""
    now = int(time.time())
    claims: dict[str, Any] = {
        "iss": ISSUER,
        "aud": AUDIENCE,
        "sub": "fuzz",
        "iat": now,
        "exp": now + 600,
        "jti": uuid.uuid4().hex,
        "calls": draw(st.one_of(st.just("*"), st.just(calls))),
        "rights": draw(
            st.lists(st.sampled_from(["events", "listen", "talk"]), min_size=1, max_size=3)
        ),
    }
    extremes = st.sampled_from([10**20, 10**400, 2**63, 2**64, 1e300, -1e300, 0.5, -1, 0])
    times = st.one_of(
        extremes,
        extremes,  # twice: the values that broke clocks and encoders are the interesting ones
        st.integers(-(2**40), 2**40),
        st.floats(allow_nan=False, allow_infinity=False),
        st.sampled_from([now - 3600, now + 3600, str(now + 600), f"{now + 600}.5"]),
        json_values,
    )
    odd: dict[str, st.SearchStrategy[Any]] = {
        "exp": times,
        "iat": times,
        "nbf": times,
        "calls": st.one_of(
            st.just([]),
            st.lists(json_values, min_size=1, max_size=3),
            st.lists(st.text(max_size=300), max_size=200),
            json_values,
        ),
        "rights": st.one_of(
            st.lists(st.sampled_from(["events", "admin", "", "EVENTS"]), max_size=3),
            json_values,
        ),
        "aud": st.one_of(st.just([AUDIENCE, "other"]), st.just([]), json_values),
        "iss": json_values,
        "sub": json_values,
        "jti": json_values,
    }
    for _ in range(draw(st.sampled_from([1, 1, 1, 2]))):
        # Half the time a time claim: PyJWT checks their type loosely, callbridge uses them.
        field = draw(
            st.one_of(st.sampled_from(["exp", "iat", "nbf"]), st.sampled_from(sorted(odd)))
        )
        if draw(st.integers(0, 4)) == 0:
            claims.pop(field, None)
        else:
            claims[field] = draw(odd[field])
    return claims


def signed_token(claims: dict[str, Any], secret: str, algorithm: str = ALGORITHM) -> str:
    """Claims signed with PyJWT, even claims it would not produce itself (huge integers)."""
    header = {"alg": algorithm, "typ": "JWT"}
    if algorithm == "none":
        signing_input = _segment(header) + "." + _segment_raw(json.dumps(claims).encode())
        return signing_input + "."
    try:
        return jwt.encode(claims, secret, algorithm=algorithm)
    except (TypeError, ValueError, OverflowError):
        # PyJWT serialises with json; integers it cannot take go through our own encoder.
        signing_input = _segment(header) + "." + _segment_raw(json.dumps(claims).encode())
        algorithm_obj = jwt.get_algorithm_by_name(algorithm)
        key = algorithm_obj.prepare_key(secret)
        signature = algorithm_obj.sign(signing_input.encode(), key)
        return signing_input + "." + _segment_raw(signature)


def _segment(document: dict[str, Any]) -> str:
    return _segment_raw(json.dumps(document, separators=(",", ":")).encode())


def _segment_raw(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()


@st.composite
def token_strings(draw: st.DrawFn, valid: str | None = None) -> str:
    """Things that are not tokens, or are tokens taken apart."""
    options = [
        st.text(max_size=60),
        st.text(alphabet=B64URL + ".", max_size=120),
        st.sampled_from(["", ".", "..", "a.b.c", "Bearer", "null", "cbk_" + "x" * 40]),
    ]
    if valid:
        options += [
            st.integers(0, len(valid)).map(lambda n: valid[:n]),
            st.tuples(st.integers(0, len(valid) - 1), st.sampled_from(B64URL)).map(
                lambda change: valid[: change[0]] + change[1] + valid[change[0] + 1 :]
            ),
            st.just(".".join(reversed(valid.split(".")))),
        ]
    return draw(st.one_of(*options))
