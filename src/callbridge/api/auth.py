"""REST authentication: API keys (Bearer) for everything that acts, and `POST /api/tokens`.

Reading calls is also open to a browser token with the `events` right (limited to its calls),
because a page told to resync must refetch `GET /api/calls` and holds no API key.
"""

from __future__ import annotations

import dataclasses
from datetime import UTC, datetime
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Body, Depends, Request
from pydantic import BaseModel, ConfigDict, Field

from callbridge.auth.keys import PREFIX
from callbridge.auth.tokens import Grant, Right, TokenError
from callbridge.logs import get_logger
from callbridge.metrics import REFUSALS
from callbridge.runtime import security_of

__all__ = [
    "AuthError",
    "Caller",
    "KeyHolder",
    "RateLimited",
    "Reader",
    "router",
]

log = get_logger(__name__)
router = APIRouter(prefix="/api/tokens", tags=["auth"])


class AuthError(Exception):
    """401/403 with a stable error code and a reason the integrator can act on."""

    def __init__(self, status: int, error: str, detail: str) -> None:
        super().__init__(detail)
        self.status = status
        self.error = error
        self.detail = detail


class RateLimited(Exception):
    def __init__(self, retry_after: float, detail: str) -> None:
        super().__init__(detail)
        self.retry_after = retry_after
        self.detail = detail


@dataclasses.dataclass(frozen=True, slots=True)
class Caller:
    """Who is asking: an API key (by name) or a browser token's grant."""

    key_name: str | None = None
    grant: Grant | None = None

    def covers(self, call_control_id: str) -> bool:
        return self.grant is None or self.grant.covers(call_control_id)


def _refuse(request: Request, status: int, error: str, detail: str) -> AuthError:
    REFUSALS.labels("api", error).inc()
    log.info("API request refused", path=request.url.path, reason=detail)
    return AuthError(status, error, detail)


def _bearer(request: Request) -> str:
    header = request.headers.get("authorization")
    if not header:
        raise _refuse(
            request,
            401,
            "missing_credentials",
            "no Authorization header: send Authorization: Bearer <API key>",
        )
    scheme, _, credential = header.partition(" ")
    if scheme.lower() != "bearer" or not credential.strip():
        raise _refuse(request, 401, "bad_credentials", "Authorization must be: Bearer <API key>")
    return credential.strip()


def _key_caller(request: Request, credential: str) -> Caller:
    name = security_of(request).keyring.identify(credential)
    if name is None:
        raise _refuse(request, 401, "unknown_api_key", "the API key is not one of this service's")
    return Caller(key_name=name)


def require_api_key(request: Request) -> Caller:
    credential = _bearer(request)
    if not credential.startswith(PREFIX):
        raise _refuse(
            request,
            401,
            "api_key_required",
            "this endpoint needs an API key (cbk_…), not a browser token",
        )
    return _key_caller(request, credential)


def require_reader(request: Request) -> Caller:
    credential = _bearer(request)
    if credential.startswith(PREFIX):
        return _key_caller(request, credential)
    try:
        grant = security_of(request).tokens.verify(credential)
        grant.require(Right.EVENTS)
    except TokenError as exc:
        raise _refuse(request, 403 if exc.forbidden else 401, "invalid_token", exc.reason) from None
    return Caller(grant=grant)


KeyHolder = Annotated[Caller, Depends(require_api_key)]
Reader = Annotated[Caller, Depends(require_reader)]


def limit_dials(request: Request, caller: KeyHolder) -> Caller:
    """Dial rate per API key: a runaway integration cannot place calls without bound."""
    wait = security_of(request).dial_rate.take(caller.key_name or "")
    if wait > 0:
        REFUSALS.labels("api", "dial_rate").inc()
        log.info("Dial refused: rate limit", key=caller.key_name, retry_after=round(wait, 2))
        raise RateLimited(wait, "dial rate limit reached for this API key; retry later")
    return caller


Dialer = Annotated[Caller, Depends(limit_dials)]


CallId = Annotated[str, Field(min_length=1, max_length=256)]
CallList = Annotated[list[CallId], Field(min_length=1, max_length=100)]


class TokenBody(BaseModel):
    """What the page may see and do, and for how long."""

    model_config = ConfigDict(extra="forbid")

    calls: Literal["*"] | CallList = Field(
        "*", description='"*" for every call, or the call_control_ids the page may see.'
    )
    rights: list[Right] = Field(
        [Right.EVENTS, Right.LISTEN],
        min_length=1,
        description="events (/call-events), listen (/frontend-audio), talk (talk into the call).",
    )
    ttl: int = Field(600, ge=10, le=86_400, description="Seconds; capped at the maximum.")


@router.post("", status_code=201, summary="Issue a short-lived browser token")
async def issue_token(
    request: Request, caller: KeyHolder, body: Annotated[TokenBody | None, Body()] = None
) -> dict[str, Any]:
    body = body or TokenBody()
    security = security_of(request)
    calls = None if body.calls == "*" else body.calls
    token, grant = security.tokens.issue(caller.key_name or "", calls, body.rights, body.ttl)
    log.info(
        "Browser token issued",
        key=caller.key_name,
        scope=grant.scope_text(),
        rights=sorted(r.value for r in grant.rights),
        ttl=int(grant.remaining()),
    )
    return {
        "token": token,
        "token_type": "Bearer",
        "expires_at": datetime.fromtimestamp(grant.expires_at, UTC)
        .isoformat()
        .replace("+00:00", "Z"),
        "expires_in": round(grant.remaining()),
        "calls": "*" if grant.calls is None else sorted(grant.calls),
        "rights": sorted(r.value for r in grant.rights),
    }
