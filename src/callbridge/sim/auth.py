"""The client side of callbridge's authentication, for the tools that drive a service.

An API key (`Authorization: Bearer cbk_…`) for the REST API, and browser tokens minted with it
through `POST /api/tokens` for `/call-events` and `/frontend-audio`, presented as a WebSocket
subprotocol (as `callbridge.js` does), which keeps them out of URLs and access logs. Like the
rest of `sim/`, it talks to the service over the network only.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal

import httpx
from websockets.typing import Subprotocol

__all__ = [
    "SUBPROTOCOL",
    "TOKEN_PROTOCOL_PREFIX",
    "AuthRefused",
    "api_headers",
    "explain_refusal",
    "mint_token",
    "token_subprotocols",
]

SUBPROTOCOL = "callbridge"
TOKEN_PROTOCOL_PREFIX = "callbridge.token."  # noqa: S105 - a prefix, not a secret
NO_KEY_HINT = "the service wants an API key: pass --api-key (or set CALLBRIDGE_API_KEY)"


class AuthRefused(RuntimeError):
    """The service refused the credentials (or their absence); the message says what to do."""


def api_headers(api_key: str | None) -> dict[str, str]:
    """The REST credentials for `api_key` (none without one)."""
    return {"Authorization": f"Bearer {api_key}"} if api_key else {}


def token_subprotocols(token: str) -> list[Subprotocol]:
    """What to offer on a browser socket: the token, and `callbridge` for the server to answer
    (so the token is not echoed back)."""
    return [Subprotocol(TOKEN_PROTOCOL_PREFIX + token), Subprotocol(SUBPROTOCOL)]


def explain_refusal(response: httpx.Response, has_key: bool) -> str:
    """A 401/403 from the REST API, in words an operator can act on."""
    try:
        detail = str(response.json().get("detail") or response.text)
    except ValueError:
        detail = response.text[:200]
    if not has_key:
        return f"{NO_KEY_HINT} ({response.status_code}: {detail})"
    return (
        f"the service refused the API key ({response.status_code}: {detail}); check that its "
        "hash is in the service's CALLBRIDGE_API_KEYS (`callbridge keys hash KEY`)"
    )


async def mint_token(
    http: httpx.AsyncClient,
    *,
    calls: Literal["*"] | Sequence[str] = "*",
    rights: Sequence[str] = ("events", "listen"),
    ttl: int = 600,
) -> str:
    """A browser token from `POST /api/tokens`; `http` carries the API key (`api_headers`)."""
    body = {"calls": calls if calls == "*" else list(calls), "rights": list(rights), "ttl": ttl}
    response = await http.post("/api/tokens", json=body)
    if response.status_code in (401, 403):
        raise AuthRefused(explain_refusal(response, "authorization" in http.headers))
    if response.status_code != 201:
        raise RuntimeError(f"POST /api/tokens answered {response.status_code}: {response.text}")
    token: str = response.json()["token"]
    return token
