"""Telnyx webhooks: Ed25519 verification over the raw body, and parsing into `CarrierEvent`s.

The signature covers `"<telnyx-timestamp>|<raw body>"`; we verify the bytes as received, never
re-serialised JSON, and refuse timestamps more than the tolerance away from our clock (either way).
"""

from __future__ import annotations

import base64
import binascii
import time
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any

import orjson
from nacl.exceptions import BadSignatureError
from nacl.signing import VerifyKey
from pydantic import BaseModel, ConfigDict, ValidationError

from callbridge.calls.events import CarrierEvent

__all__ = [
    "SIGNATURE_HEADER",
    "TIMESTAMP_HEADER",
    "InvalidSignature",
    "InvalidWebhook",
    "WebhookVerifier",
    "parse_webhook",
]

SIGNATURE_HEADER = "telnyx-signature-ed25519"
TIMESTAMP_HEADER = "telnyx-timestamp"


class InvalidSignature(Exception):
    """The webhook is not provably from Telnyx: reject with 401, store nothing."""


class InvalidWebhook(Exception):
    """The webhook is signed but not a Telnyx event envelope: reject with 400."""


class WebhookVerifier:
    """Checks `telnyx-signature-ed25519` with the account's base64 Ed25519 public key."""

    def __init__(self, public_key_b64: str, tolerance_seconds: int = 300) -> None:
        try:
            raw = base64.b64decode(public_key_b64, validate=True)
            self._key = VerifyKey(raw)
        except (binascii.Error, ValueError, TypeError) as exc:
            raise ValueError(
                "TELNYX_PUBLIC_KEY must be the base64 of a 32-byte Ed25519 public key"
            ) from exc
        self.tolerance = tolerance_seconds

    def verify(self, body: bytes, headers: Mapping[str, str], now: float | None = None) -> None:
        lowered = {key.lower(): value for key, value in headers.items()}
        signature_b64 = lowered.get(SIGNATURE_HEADER)
        timestamp = lowered.get(TIMESTAMP_HEADER)
        if not signature_b64 or not timestamp:
            raise InvalidSignature(f"missing {SIGNATURE_HEADER} or {TIMESTAMP_HEADER} header")
        try:
            sent_at = int(timestamp)
            skew = float((time.time() if now is None else now) - sent_at)
        except ValueError:
            raise InvalidSignature(f"{TIMESTAMP_HEADER} is not an integer") from None
        except OverflowError:  # hundreds of digits: no float can hold the difference
            raise InvalidSignature(f"{TIMESTAMP_HEADER} is out of range") from None
        if abs(skew) > self.tolerance:
            raise InvalidSignature(
                f"timestamp is {abs(skew):.0f} s {'old' if skew > 0 else 'in the future'}; "
                f"tolerance is {self.tolerance} s"
            )
        try:
            signature = base64.b64decode(signature_b64, validate=True)
        except (binascii.Error, ValueError):
            raise InvalidSignature("signature is not valid base64") from None
        if len(signature) != 64:
            raise InvalidSignature("signature is not 64 bytes")
        try:
            self._key.verify(timestamp.encode() + b"|" + body, signature)
        except BadSignatureError:
            raise InvalidSignature("signature does not match the body and timestamp") from None


class _Data(BaseModel):
    model_config = ConfigDict(extra="allow")
    record_type: str | None = None
    event_type: str
    id: str
    occurred_at: datetime
    payload: dict[str, Any]


class _Envelope(BaseModel):
    model_config = ConfigDict(extra="allow")
    data: _Data
    meta: dict[str, Any] | None = None


# Telnyx's ids and event types are a few dozen characters. Longer ones, or ones with a NUL
# (which PostgreSQL cannot store in text), come from no real Telnyx: the webhook is refused.
MAX_ID_CHARS = 256
MAX_EVENT_TYPE_CHARS = 64
# Facts longer than this are dropped, as if Telnyx had not sent them (causes: 64).
MAX_FACT_CHARS = 256
MAX_CAUSE_CHARS = 64
MAX_CLIENT_STATE_CHARS = 16_384


def _details(event_type: str, payload: Mapping[str, Any]) -> dict[str, Any]:
    """Type-specific facts, renamed into our vocabulary."""
    if event_type == "call.hangup":
        return {
            "cause": _fact(payload.get("hangup_cause"), MAX_CAUSE_CHARS),
            "source": _fact(payload.get("hangup_source"), MAX_CAUSE_CHARS),
            "sip_cause": _fact(payload.get("sip_hangup_cause"), MAX_CAUSE_CHARS),
        }
    if event_type == "call.dtmf.received":
        return {"digit": _fact(payload.get("digit"))}
    if event_type == "streaming.failed":
        return {
            "reason": _fact(payload.get("failure_reason")),
            "stream_id": _fact(payload.get("stream_id")),
        }
    if event_type == "call.initiated":
        return {"carrier_state": _fact(payload.get("state"))}
    return {}


def _fact(value: Any, limit: int = MAX_FACT_CHARS) -> str | None:
    """A fact as text, or None when Telnyx sent none or nothing usable: an object, a list, a
    text with a NUL or longer than `limit`. Facts are stored in text columns and sent to
    browsers as strings, so a number becomes its decimal text."""
    if isinstance(value, bool) or not isinstance(value, (str, int, float)):
        return None
    text = str(value)
    return None if "\x00" in text or len(text) > limit else text


def _identifier(value: str, where: str, limit: int) -> str:
    if "\x00" in value or len(value) > limit:
        raise InvalidWebhook(f"{where} is longer than {limit} characters or contains NUL")
    return value


def _utc(moment: datetime) -> datetime:
    """`occurred_at` in UTC, whatever offset Telnyx wrote it with (none means UTC)."""
    if moment.tzinfo is None:
        return moment.replace(tzinfo=UTC)
    try:
        return moment.astimezone(UTC)
    except OverflowError:  # e.g. 9999-12-31T23:59:59-05:00 is in the year 10000
        raise InvalidWebhook("data.occurred_at is out of range in UTC") from None


def parse_webhook(body: bytes) -> tuple[CarrierEvent, int]:
    """Parse a verified body into an event and its delivery attempt number."""
    try:
        document = orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        raise InvalidWebhook(f"body is not valid JSON: {exc}") from None
    try:
        envelope = _Envelope.model_validate(document)
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(part) for part in first["loc"])
        raise InvalidWebhook(f"not a Telnyx event envelope: {where}: {first['msg']}") from None
    data = envelope.data
    payload = data.payload
    call_control_id = payload.get("call_control_id")
    if not isinstance(call_control_id, str) or not call_control_id:
        raise InvalidWebhook("data.payload.call_control_id is missing")
    attempt = (envelope.meta or {}).get("attempt", 1)
    event = CarrierEvent(
        event_id=_identifier(data.id, "data.id", MAX_ID_CHARS),
        type=_identifier(data.event_type, "data.event_type", MAX_EVENT_TYPE_CHARS),
        occurred_at=_utc(data.occurred_at),
        call_control_id=_identifier(call_control_id, "data.payload.call_control_id", MAX_ID_CHARS),
        call_leg_id=_fact(payload.get("call_leg_id")),
        call_session_id=_fact(payload.get("call_session_id")),
        direction=_fact(payload.get("direction")),
        from_number=_fact(payload.get("from")),
        to_number=_fact(payload.get("to")),
        client_state=_fact(payload.get("client_state"), MAX_CLIENT_STATE_CHARS),
        details=_details(data.event_type, payload),
    )
    return event, attempt if isinstance(attempt, int) else 1
