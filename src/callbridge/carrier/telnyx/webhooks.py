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
        except ValueError:
            raise InvalidSignature(f"{TIMESTAMP_HEADER} is not an integer") from None
        skew = (time.time() if now is None else now) - sent_at
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


def _details(event_type: str, payload: Mapping[str, Any]) -> dict[str, Any]:
    """Type-specific facts, renamed into our vocabulary."""
    if event_type == "call.hangup":
        return {
            "cause": payload.get("hangup_cause"),
            "source": payload.get("hangup_source"),
            "sip_cause": payload.get("sip_hangup_cause"),
        }
    if event_type == "call.dtmf.received":
        return {"digit": payload.get("digit")}
    if event_type == "streaming.failed":
        return {"reason": payload.get("failure_reason"), "stream_id": payload.get("stream_id")}
    if event_type == "call.initiated":
        return {"carrier_state": payload.get("state")}
    return {}


def _optional_str(value: Any) -> str | None:
    return None if value is None else str(value)


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
    occurred_at = data.occurred_at
    if occurred_at.tzinfo is None:
        occurred_at = occurred_at.replace(tzinfo=UTC)
    attempt = (envelope.meta or {}).get("attempt", 1)
    event = CarrierEvent(
        event_id=data.id,
        type=data.event_type,
        occurred_at=occurred_at,
        call_control_id=call_control_id,
        call_leg_id=_optional_str(payload.get("call_leg_id")),
        call_session_id=_optional_str(payload.get("call_session_id")),
        direction=_optional_str(payload.get("direction")),
        from_number=_optional_str(payload.get("from")),
        to_number=_optional_str(payload.get("to")),
        client_state=_optional_str(payload.get("client_state")),
        details=_details(data.event_type, payload),
    )
    return event, attempt if isinstance(attempt, int) else 1
