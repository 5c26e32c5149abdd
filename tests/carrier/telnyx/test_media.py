"""Telnyx media-stream messages, parsed exactly as the protocol reference gives them."""

from __future__ import annotations

import base64

import orjson
import pytest

from callbridge.carrier.telnyx.media import (
    Connected,
    Dtmf,
    MalformedFrame,
    Mark,
    MediaFrame,
    Start,
    Stop,
    StreamError,
    clear_json,
    mark_json,
    media_json,
    parse_message,
)

START = {
    "event": "start",
    "sequence_number": "1",
    "stream_id": "32DE0DEA-53CB-4B21-89A4-9E1819C043BC",
    "start": {
        "user_id": "3E6F",
        "call_control_id": "v2:T02l",
        "call_session_id": "ff55a038",
        "from": "+13122010094",
        "to": "+13122123456",
        "tags": ["TAG1", "TAG2"],
        "client_state": "aGF2ZSBhIG5pY2UgZGF5ID1d",
        "custom_parameters": {"customer_id": "customer_123"},
        "media_format": {"encoding": "PCMU", "sample_rate": 8000, "channels": 1},
    },
}


def test_the_reference_start_frame() -> None:
    start = parse_message(orjson.dumps(START))
    assert start == Start(
        seq=1,
        stream_id="32DE0DEA-53CB-4B21-89A4-9E1819C043BC",
        call_control_id="v2:T02l",
        call_session_id="ff55a038",
        encoding="PCMU",
        sample_rate=8000,
        channels=1,
        client_state="aGF2ZSBhIG5pY2UgZGF5ID1d",
        custom_parameters={"customer_id": "customer_123"},
    )


def test_media_numbers_are_strings_and_the_payload_is_raw_codec_bytes() -> None:
    payload = bytes(range(160))
    frame = parse_message(
        orjson.dumps(
            {
                "event": "media",
                "sequence_number": "4",
                "stream_id": "32DE",
                "media": {
                    "track": "outbound",
                    "chunk": "2",
                    "timestamp": "5",
                    "payload": base64.b64encode(payload).decode(),
                },
            }
        )
    )
    assert frame == MediaFrame(seq=4, track=1, chunk=2, timestamp=5, payload=payload)


@pytest.mark.parametrize(
    ("message", "expected"),
    [
        ({"event": "connected", "version": "1.0.0"}, Connected(None, "1.0.0")),
        ({"event": "stop", "sequence_number": "5", "stop": {}}, Stop(5)),
        (
            {"event": "dtmf", "sequence_number": "5", "occurred_at": "t", "dtmf": {"digit": "1"}},
            Dtmf(5, "1", "t"),
        ),
        ({"event": "mark", "sequence_number": "6", "mark": {"name": "m"}}, Mark(6, "m")),
        (
            {"event": "error", "payload": {"code": 100003, "title": "malformed_frame"}},
            StreamError(100003, "malformed_frame", ""),
        ),
    ],
)
def test_control_messages(message: dict[str, object], expected: object) -> None:
    assert parse_message(orjson.dumps(message)) == expected


@pytest.mark.parametrize(
    ("raw", "kind"),
    [
        (b"{", "bad_json"),
        (b"[]", "bad_json"),
        (b'{"event":"nope"}', "unknown_event"),
        (b'{"event":"media"}', "missing_field"),
        (b'{"event":"media","media":{"payload":"***"}}', "bad_base64"),
        (b'{"event":"media","media":{"payload":"AA==","chunk":"-1"}}', "bad_number"),
        (b'{"event":"media","media":{"payload":"AA==","track":"left"}}', "bad_track"),
        (b'{"event":"media","sequence_number":true,"media":{"payload":"AA=="}}', "bad_number"),
        (b'{"event":"start","stream_id":"s","start":{"call_control_id":"c"}}', "missing_field"),
    ],
)
def test_malformed_frames_say_what_is_wrong(raw: bytes, kind: str) -> None:
    with pytest.raises(MalformedFrame) as caught:
        parse_message(raw)
    assert caught.value.kind == kind


def test_what_we_send_back_is_telnyx_shaped() -> None:
    assert orjson.loads(media_json(b"\xff\x00")) == {
        "event": "media",
        "media": {"payload": base64.b64encode(b"\xff\x00").decode()},
    }
    assert orjson.loads(clear_json()) == {"event": "clear"}
    assert orjson.loads(mark_json('a "b"')) == {"event": "mark", "mark": {"name": 'a "b"'}}


def _frame(**fields: object) -> bytes:
    message: dict[str, object] = {"event": "media", "media": {"payload": "AA=="}}
    media = message["media"]
    assert isinstance(media, dict)
    for key, value in fields.items():
        (message if key == "sequence_number" else media)[key] = value
    return orjson.dumps(message)


@pytest.mark.parametrize(
    ("raw", "kind"),
    [
        # str.isdigit() takes these; int() refuses the first and reads the second.
        (_frame(sequence_number="²"), "bad_number"),
        (_frame(chunk="١٢"), "bad_number"),
        # Past 19 digits: gaps counted from it could not be encoded in the media.stopped event.
        (_frame(sequence_number="1" + "0" * 19), "bad_number"),
        (_frame(timestamp="9" * 5000), "bad_number"),
        # Not a name at all: an unhashable track once crashed the handler (1006 before start).
        (_frame(track=["inbound"]), "bad_track"),
        (_frame(track={"a": 1}), "bad_track"),
        (orjson.dumps({**START, "stream_id": "s" * 129}), "bad_field"),
        (orjson.dumps({**START, "start": {**START["start"], "call_control_id": "v3:\x00"}}),
         "bad_field"),
    ],
)  # fmt: skip
def test_frames_the_fuzz_suite_found_are_malformed_not_crashes(raw: bytes, kind: str) -> None:
    with pytest.raises(MalformedFrame) as caught:
        parse_message(raw)
    assert caught.value.kind == kind


def test_the_largest_numbers_kept_fit_in_64_bits() -> None:
    frame = parse_message(_frame(sequence_number="9" * 19, chunk=2**63))
    assert isinstance(frame, MediaFrame)
    assert frame.seq == 10**19 - 1 < 2**64
    assert frame.chunk == 2**63
