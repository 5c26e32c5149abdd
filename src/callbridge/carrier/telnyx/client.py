"""A thin async client for the Telnyx Call Control commands callbridge uses.

Why not the SDK: we need five endpoints, exact control over retries (same `command_id` on every
attempt, which is what makes a retried dial safe) and a client that honours `TELNYX_BASE_URL` so
the simulator can stand in for Telnyx. httpx does the HTTP, tenacity the backoff.
"""

from __future__ import annotations

from typing import Any
from urllib.parse import quote

import httpx
import orjson
from tenacity import (
    AsyncRetrying,
    RetryError,
    retry_if_exception,
    stop_after_attempt,
    wait_exponential_jitter,
)

from callbridge import __version__
from callbridge.calls.carrier import (
    CallAlreadyEnded,
    CallStatus,
    CarrierError,
    CarrierUnavailable,
    DialRequest,
    DialResult,
    StreamTarget,
)
from callbridge.logs import get_logger
from callbridge.metrics import TELNYX_REQUESTS

__all__ = ["TelnyxClient"]

log = get_logger(__name__)

CALL_ALREADY_ENDED = "90018"
INVALID_CALL_CONTROL_ID = "90015"


class _Retryable(Exception):
    """A 5xx, 429 or transport failure: worth another attempt with the same command_id."""

    def __init__(self, status: int, body: bytes | None, reason: str) -> None:
        super().__init__(reason)
        self.status = status
        self.body = body
        self.reason = reason


def _first_error(body: bytes | None) -> tuple[str | None, str, str]:
    """Telnyx's `{"errors": [{"code", "title", "detail"}]}`, tolerating anything else."""
    try:
        errors = orjson.loads(body or b"{}").get("errors") or []
        first = errors[0]
        return str(first.get("code")), str(first.get("title", "")), str(first.get("detail", ""))
    except (orjson.JSONDecodeError, AttributeError, IndexError, TypeError):
        text = (body or b"").decode("utf-8", "replace")[:200]
        return None, "unexpected response", text


def _stream_fields(stream: StreamTarget) -> dict[str, Any]:
    fields: dict[str, Any] = {
        "stream_url": stream.url,
        "stream_track": stream.track,
        "stream_auth_token": stream.auth_token,
    }
    if stream.codec:
        fields["stream_codec"] = stream.codec
    if stream.bidirectional:
        fields["stream_bidirectional_mode"] = "rtp"
        fields["stream_bidirectional_codec"] = stream.bidirectional_codec
    return fields


class TelnyxClient:
    """Implements `callbridge.calls.carrier.CallControl` over Telnyx's REST API."""

    def __init__(
        self,
        *,
        base_url: str,
        api_key: str,
        connection_id: str,
        timeout: float = 10.0,
        max_retries: int = 3,
        backoff_initial: float = 0.2,
        backoff_max: float = 4.0,
    ) -> None:
        self.connection_id = connection_id
        self.max_retries = max_retries
        self._backoff = wait_exponential_jitter(multiplier=backoff_initial, max=backoff_max)
        self._http = httpx.AsyncClient(
            base_url=base_url.rstrip("/"),
            timeout=timeout,
            headers={
                "Authorization": f"Bearer {api_key}",
                "Content-Type": "application/json",
                "Accept": "application/json",
                "User-Agent": f"callbridge/{__version__}",
            },
        )

    async def close(self) -> None:
        await self._http.aclose()

    async def _attempt(self, path: str, body: dict[str, Any] | None) -> dict[str, Any]:
        """POST `body`, or GET when there is none; an unknown call (only a GET asks about
        calls Telnyx may have forgotten) is an empty answer."""
        try:
            if body is None:
                response = await self._http.get(path)
            else:
                response = await self._http.post(path, content=orjson.dumps(body))
        except httpx.TransportError as exc:  # timeouts, refused connections, resets
            raise _Retryable(0, None, f"{type(exc).__name__}: {exc}") from exc
        if response.status_code >= 500 or response.status_code == 429:
            raise _Retryable(response.status_code, response.content, f"HTTP {response.status_code}")
        if response.status_code >= 400:
            code, title, detail = _first_error(response.content)
            if body is None and (response.status_code == 404 or code == INVALID_CALL_CONTROL_ID):
                return {}
            error_class = CallAlreadyEnded if code == CALL_ALREADY_ENDED else CarrierError
            raise error_class(response.status_code, code, title, detail)
        try:
            parsed = orjson.loads(response.content or b"{}")
        except orjson.JSONDecodeError as exc:
            raise CarrierError(response.status_code, None, "unexpected response", str(exc)) from exc
        return parsed if isinstance(parsed, dict) else {}

    async def _command(self, name: str, path: str, body: dict[str, Any] | None) -> dict[str, Any]:
        """POST with retries on 5xx/429/timeouts; the body (and its command_id) never changes.
        Without a body, a GET (a query: as safe to repeat)."""
        retrying = AsyncRetrying(
            retry=retry_if_exception(lambda exc: isinstance(exc, _Retryable)),
            stop=stop_after_attempt(self.max_retries + 1),
            wait=self._backoff,
            reraise=False,
        )
        attempt_number = 0
        try:
            async for attempt in retrying:
                with attempt:
                    attempt_number = attempt.retry_state.attempt_number
                    if attempt_number > 1:
                        TELNYX_REQUESTS.labels(name, "retried").inc()
                        log.info("Retrying Telnyx command", command=name, attempt=attempt_number)
                    result = await self._attempt(path, body)
        except RetryError as exc:
            last = exc.last_attempt.exception()
            assert isinstance(last, _Retryable)
            TELNYX_REQUESTS.labels(name, "unavailable").inc()
            code, title, detail = _first_error(last.body)
            log.warning(
                "Telnyx unavailable", command=name, attempts=attempt_number, reason=last.reason
            )
            raise CarrierUnavailable(
                last.status or 504,
                code,
                title if last.body else "Telnyx unreachable",
                detail if last.body else last.reason,
            ) from None
        except CarrierError:
            TELNYX_REQUESTS.labels(name, "error").inc()
            raise
        TELNYX_REQUESTS.labels(name, "ok").inc()
        return result

    async def dial(self, request: DialRequest) -> DialResult:
        body: dict[str, Any] = {
            "connection_id": self.connection_id,
            "to": request.to,
            "from": request.from_number,
            "webhook_url": request.webhook_url,
            "command_id": request.command_id,
            **_stream_fields(request.stream),
        }
        if request.client_state is not None:
            body["client_state"] = request.client_state
        if request.timeout_secs is not None:
            body["timeout_secs"] = request.timeout_secs
        data = (await self._command("dial", "/calls", body)).get("data") or {}
        if not data.get("call_control_id"):
            raise CarrierError(502, None, "unexpected response", "dial returned no call_control_id")
        return DialResult(
            call_control_id=str(data["call_control_id"]),
            call_leg_id=data.get("call_leg_id"),
            call_session_id=data.get("call_session_id"),
        )

    def _action_path(self, call_control_id: str, action: str) -> str:
        return f"/calls/{quote(call_control_id, safe=':')}/actions/{action}"

    async def answer(
        self, call_control_id: str, *, stream: StreamTarget, webhook_url: str, command_id: str
    ) -> None:
        body = {"command_id": command_id, "webhook_url": webhook_url, **_stream_fields(stream)}
        await self._command("answer", self._action_path(call_control_id, "answer"), body)

    async def hangup(self, call_control_id: str, *, command_id: str) -> None:
        await self._command(
            "hangup", self._action_path(call_control_id, "hangup"), {"command_id": command_id}
        )

    async def start_streaming(
        self, call_control_id: str, *, stream: StreamTarget, command_id: str
    ) -> None:
        body = {"command_id": command_id, **_stream_fields(stream)}
        await self._command(
            "streaming_start", self._action_path(call_control_id, "streaming_start"), body
        )

    async def stop_streaming(self, call_control_id: str, *, command_id: str) -> None:
        await self._command(
            "streaming_stop",
            self._action_path(call_control_id, "streaming_stop"),
            {"command_id": command_id},
        )

    async def call_status(self, call_control_id: str) -> CallStatus:
        """`GET /v2/calls/{call_control_id}`: `data.is_alive`; 404 (or 90015) is a call Telnyx
        does not know, never placed or long gone."""
        answer = await self._command(
            "call_status", f"/calls/{quote(call_control_id, safe=':')}", None
        )
        data = answer.get("data")
        if not isinstance(data, dict):
            return CallStatus(known=False, alive=False)
        return CallStatus(known=True, alive=data.get("is_alive") is True)
