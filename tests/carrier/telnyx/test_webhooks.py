"""Ed25519 verification exactly as Telnyx signs: `timestamp|raw body`, 300 s either way."""

from __future__ import annotations

import base64
from datetime import UTC, datetime, timedelta

import orjson
import pytest

from callbridge.carrier.telnyx.webhooks import (
    InvalidSignature,
    InvalidWebhook,
    WebhookVerifier,
    parse_webhook,
)
from callbridge.sim import WebhookSigner

NOW = 1_800_000_000
BODY = (
    b'{"data":{"record_type":"event","event_type":"call.hangup","id":"0ccc7b54",'
    b'"occurred_at":"2018-02-02T22:25:27.521992Z","payload":{"call_control_id":"v3:x",'
    b'"hangup_cause":"user_busy","hangup_source":"callee","sip_hangup_cause":"486"}},'
    b'"meta":{"attempt":3,"delivered_to":"https://example.com/webhooks"}}'
)


@pytest.fixture
def signer() -> WebhookSigner:
    return WebhookSigner()


def test_valid_signature_passes(signer: WebhookSigner) -> None:
    verifier = WebhookVerifier(signer.public_key_b64)
    verifier.verify(BODY, signer.headers(BODY, NOW), now=NOW + 299)
    upper = {k.title(): v for k, v in signer.headers(BODY, NOW).items()}
    verifier.verify(BODY, upper, now=NOW - 299)  # header names are case-insensitive


@pytest.mark.parametrize("skew", [301, -301])
def test_timestamp_outside_tolerance_fails(signer: WebhookSigner, skew: int) -> None:
    verifier = WebhookVerifier(signer.public_key_b64)
    with pytest.raises(InvalidSignature, match="tolerance"):
        verifier.verify(BODY, signer.headers(BODY, NOW), now=NOW + skew)


def test_signature_is_over_timestamp_and_body(signer: WebhookSigner) -> None:
    verifier = WebhookVerifier(signer.public_key_b64)
    headers = signer.headers(BODY, NOW)
    with pytest.raises(InvalidSignature):
        verifier.verify(BODY + b" ", headers, now=NOW)
    moved = dict(headers, **{"telnyx-timestamp": str(NOW + 1)})
    with pytest.raises(InvalidSignature):
        verifier.verify(BODY, moved, now=NOW)


def test_bad_public_key_is_a_clear_configuration_error() -> None:
    with pytest.raises(ValueError, match="32-byte Ed25519"):
        WebhookVerifier("not-base64!")
    with pytest.raises(ValueError, match="32-byte Ed25519"):
        WebhookVerifier(base64.b64encode(b"short").decode())


def test_parse_maps_telnyx_fields_to_our_vocabulary() -> None:
    event, attempt = parse_webhook(BODY)
    assert attempt == 3
    assert event.type == "call.hangup"
    assert event.event_id == "0ccc7b54"
    assert event.call_control_id == "v3:x"
    assert event.details == {"cause": "user_busy", "source": "callee", "sip_cause": "486"}
    assert event.occurred_at.tzinfo is not None


def test_parse_rejects_envelopes_that_are_not_telnyx() -> None:
    with pytest.raises(InvalidWebhook, match="data"):
        parse_webhook(b'{"event_type": "call.hangup"}')


def test_a_timestamp_of_hundreds_of_digits_is_invalid_not_a_crash(signer: WebhookSigner) -> None:
    """Found by the fuzz suite: `now - int("9" * 400)` overflowed a float, a 500."""
    verifier = WebhookVerifier(signer.public_key_b64)
    for stamp in ("9" * 400, "-" + "9" * 400):
        headers = {**signer.headers(BODY, NOW), "telnyx-timestamp": stamp}
        with pytest.raises(InvalidSignature, match="out of range"):
            verifier.verify(BODY, headers, now=NOW)


def _envelope(**data: object) -> bytes:
    document = orjson.loads(BODY)
    document["data"].update(data)
    return orjson.dumps(document)


def test_occurred_at_is_kept_in_utc_whatever_its_offset() -> None:
    """Found by the fuzz suite: an offset was stored as if it were UTC (05:00+05:00 came back
    as 05:00Z) while the live event said +05:00."""
    event, _ = parse_webhook(_envelope(occurred_at="2026-01-01T05:00:00+05:00"))
    assert event.occurred_at == datetime(2026, 1, 1, 0, 0, tzinfo=UTC)
    assert event.occurred_at.utcoffset() == timedelta(0)
    for edge in ("9999-12-31T23:59:59-05:00", "0001-01-01T00:00:00+05:00"):
        with pytest.raises(InvalidWebhook, match="occurred_at"):
            parse_webhook(_envelope(occurred_at=edge))


def test_facts_that_are_not_text_are_dropped_or_written_out() -> None:
    """Found by the fuzz suite: a hangup_source of [] reached a text column, a 500."""
    document = orjson.loads(BODY)
    document["data"]["payload"].update(
        hangup_cause={"a": 1}, hangup_source=[], sip_hangup_cause=486, to="x" * 300, **{"from": 1}
    )
    event, _ = parse_webhook(orjson.dumps(document))
    assert event.details == {"cause": None, "source": None, "sip_cause": "486"}
    assert event.to_number is None  # longer than any number: as if not sent
    assert event.from_number == "1"


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("event_type", "x" * 65),
        ("id", "i" * 257),
        ("id", "a\x00b"),
    ],
)
def test_identifiers_a_database_cannot_hold_are_malformed(field: str, value: str) -> None:
    """Found by the fuzz suite on PostgreSQL: a NUL or an over-long id failed the insert, a 500
    that Telnyx would retry forever."""
    with pytest.raises(InvalidWebhook, match=field):
        parse_webhook(_envelope(**{field: value}))
    document = orjson.loads(BODY)
    document["data"]["payload"]["call_control_id"] = "v3:\x00"
    with pytest.raises(InvalidWebhook, match="call_control_id"):
        parse_webhook(orjson.dumps(document))
