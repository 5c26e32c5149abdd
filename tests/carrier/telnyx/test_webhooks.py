"""Ed25519 verification exactly as Telnyx signs: `timestamp|raw body`, 300 s either way."""

from __future__ import annotations

import base64

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
