"""`POST /api/webhooks/telnyx`: verify against the raw body, store, acknowledge within budget."""

from __future__ import annotations

import time
from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse

from callbridge.api.errors import error_response
from callbridge.carrier.telnyx.webhooks import InvalidSignature, InvalidWebhook, parse_webhook
from callbridge.logs import get_logger
from callbridge.metrics import WEBHOOK_SECONDS, WEBHOOKS
from callbridge.runtime import runtime_of

__all__ = ["router"]

log = get_logger(__name__)
router = APIRouter(tags=["webhooks"])


async def _read_limited(request: Request, limit: int) -> bytes | None:
    """The raw body, or None as soon as it exceeds `limit` (nothing more is read)."""
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            return None
        chunks.append(chunk)
    return b"".join(chunks)


@router.post("/api/webhooks/telnyx", summary="Telnyx Call Control webhooks")
async def telnyx_webhook(request: Request) -> JSONResponse:
    started = time.perf_counter()
    runtime = runtime_of(request)
    limit = runtime.settings.webhook_max_bytes
    body = await _read_limited(request, limit)
    if body is None:
        WEBHOOKS.labels("rejected_too_large").inc()
        log.warning("Webhook rejected", reason="body too large", limit=limit)
        return error_response(413, "body_too_large", f"webhook bodies are limited to {limit} bytes")
    try:
        runtime.verifier.verify(body, request.headers)
    except InvalidSignature as exc:
        WEBHOOKS.labels("rejected_signature").inc()
        log.warning("Webhook rejected", reason=str(exc))
        return error_response(401, "invalid_signature", str(exc))
    try:
        event, attempt = parse_webhook(body)
    except InvalidWebhook as exc:
        WEBHOOKS.labels("rejected_malformed").inc()
        log.warning("Webhook rejected", reason=str(exc))
        return error_response(400, "malformed_webhook", str(exc))
    stored = await runtime.calls.ingest(event)
    WEBHOOK_SECONDS.observe(time.perf_counter() - started)
    answer: dict[str, Any]
    if stored is None:
        WEBHOOKS.labels("duplicate").inc()
        log.info(
            "Duplicate webhook ignored", event_id=event.event_id, type=event.type, attempt=attempt
        )
        answer = {"status": "duplicate", "event_id": event.event_id}
    else:
        WEBHOOKS.labels("accepted").inc()
        log.info(
            "Webhook accepted",
            type=event.type,
            call_control_id=event.call_control_id,
            seq=[e.seq for e in stored],
            attempt=attempt,
        )
        answer = {"status": "accepted", "event_id": event.event_id, "seq": [e.seq for e in stored]}
    return JSONResponse(answer)
