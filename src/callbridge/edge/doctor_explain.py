"""What the doctor's observations usually mean: handshake statuses, close codes, idle limits.

The wording follows the team's proxy reference (proxy.md §3 and §5): an operator who sees a
1006 or a 404 on a WebSocket path gets the likely cause and the fix, not just the number.
"""

from __future__ import annotations

import dataclasses
import re

from callbridge.ws.close_codes import CloseCode

__all__ = [
    "DEFAULT_IDLE_BUDGET",
    "IDLE_LIMITS",
    "KEEPALIVE_FIX",
    "IdleLimit",
    "Intermediary",
    "explain_close",
    "explain_handshake",
    "explain_nginx_line",
    "fingerprint",
    "idle_budget",
    "nearest_idle_limit",
]

KEEPALIVE_FIX = (
    "Fix: let the server ping (CALLBRIDGE_WS_PING_INTERVAL=20, the default; browsers answer "
    "pings by themselves) and keep it below the proxy's read timeout (nginx "
    "proxy_read_timeout, 60 s by default). A longer proxy timeout is only a backstop."
)

DEFAULT_IDLE_BUDGET = 60.0  # nginx's proxy_read_timeout and AWS ALB's idle timeout


# --- Handshake answers (proxy.md §5 step 7) ---------------------------------------------------

_STATUS_CAUSES: dict[int, str] = {
    200: "The location serves the SPA or static files (or the console): the WebSocket path is "
    "not routed to the backend. Give {path} its own location that proxies to callbridge.",
    400: "The backend rejected the request{body}. Typical: a missing subprotocol, a session id "
    "unknown to this instance (sticky sessions), or a bad Origin.",
    403: "Refused by an Origin check, authentication or a WAF{body}.",
    404: "Wrong path, or a proxy_pass URI rewrite: the proxy has no location that sends {path} "
    "to callbridge (the 404 page is the proxy's own), or proxy_pass carries a URI part "
    "(proxy_pass http://upstream/; rewrites the path). Use proxy_pass without a URI.",
    426: "The proxy does not forward Upgrade/Connection (missing proxy_set_header Upgrade and "
    "Connection in this location).",
    505: "The proxy speaks HTTP/1.0 upstream: add proxy_http_version 1.1 (needed on nginx "
    "< 1.29.7).",
    502: "Backend down or unreachable: the proxy could not connect to callbridge. Check that the "
    "service runs and listens on the port in proxy_pass (callbridge doctor --local on the "
    "server; ss -tlnp | grep 5006).",
    503: "No healthy backend, or the backend is overloaded or in maintenance.",
    504: "The backend was too slow for the handshake, or is unreachable behind a firewall "
    "(proxy_connect_timeout / proxy_read_timeout expired).",
}

CALLBRIDGE_PLAIN_GET = (
    "The proxy does not forward Upgrade/Connection: callbridge received the request as a plain "
    "GET and answered with its own JSON 404, which is what it says to a non-upgrade request on "
    "a WebSocket route (other backends say 426 here). In this location add proxy_http_version "
    "1.1; proxy_set_header Upgrade and proxy_set_header Connection, fed by a websocket-only map "
    "defined in http {}."
)


def explain_handshake(
    status: int,
    *,
    path: str,
    location: str | None = None,
    body: str = "",
    from_callbridge: bool = False,
) -> str:
    """The likely cause of a non-101 answer to an upgrade request on `path`."""
    if status == 404 and from_callbridge:
        return CALLBRIDGE_PLAIN_GET
    if status in (301, 302, 307, 308):
        where = location or "(no Location header)"
        if location and location.rstrip("?").endswith(path + "/"):
            return (
                f"A trailing-slash redirect to {where}: a prefix location `{path}/` in nginx. "
                f"Match the exact path (location {path} or location = {path}). "
                "WebSocket clients do not follow redirects (browsers report 1006)."
            )
        return (
            f"The proxy redirects to {where}. WebSocket clients do not follow redirects "
            "(browsers report 1006): publish the final wss:// URL."
        )
    template = _STATUS_CAUSES.get(status)
    if template is None:
        kind = "server error" if status >= 500 else "refusal"
        return f"An unexpected {kind} ({status}) instead of 101; see the body."
    shown = f" ({body})" if body else ""
    return template.format(path=path, body=shown)


# --- Close codes (proxy.md §5 step 10, plus callbridge's own) -------------------------------

_CLOSE_CODES: dict[int, tuple[str, str]] = {
    1000: ("Normal closure", "the application finished"),
    1001: (
        "Going away",
        "server shutdown, a Caddy config reload, a Cloudflare restart, or the browser left",
    ),
    1002: ("Protocol error", "a broken intermediary or a framing bug"),
    1003: ("Unsupported data", "callbridge: the carrier streams a codec it does not relay"),
    1005: ("No status received", "the peer sent a close frame without a code"),
    1006: (
        "Abnormal closure",
        "TCP closed without a close frame — usually a proxy idle timeout or a failed "
        "handshake (also nginx worker_shutdown_timeout after a reload, a backend crash or a "
        "network loss)",
    ),
    1007: ("Invalid payload data", "non-UTF-8 in a text frame"),
    1008: (
        "Policy violation",
        "auth or Origin rejected after connect, or a carrier stream broke the rules",
    ),
    1009: ("Message too big", "callbridge accepts at most 1 MiB per message"),
    1010: ("Mandatory extension", "the client required an extension the server did not accept"),
    1011: (
        "Internal error",
        "a server exception, or a keepalive ping timeout: the client did not answer the "
        "server's pings in time",
    ),
    1012: ("Service restart", "the service is stopping or restarting; reconnect"),
    1013: ("Try again later", "overload; reconnect with backoff"),
    1014: ("Bad gateway", "the proxy got a bad answer from upstream"),
    1015: ("TLS handshake failure", "a certificate problem"),
}

_CALLBRIDGE_CODES: dict[int, str] = {
    CloseCode.BAD_REQUEST: "a query parameter or message is malformed",
    CloseCode.UNAUTHORIZED: "no valid token",
    CloseCode.FORBIDDEN: "the token does not cover this call",
    CloseCode.UNKNOWN_CALL: "no such call",
    CloseCode.CONFLICT: "someone else already talks into the call",
}


def explain_close(code: int, reason: str = "") -> str:
    """'1006 Abnormal closure: TCP closed …' for any code a client can observe."""
    said = f' "{reason}"' if reason else ""
    if code in _CLOSE_CODES:
        meaning, cause = _CLOSE_CODES[code]
        return f"{code} {meaning}{said}: {cause}."
    if code in _CALLBRIDGE_CODES:
        return f"{code} {CloseCode(code).name}{said}: callbridge says {_CALLBRIDGE_CODES[code]}."
    if 3000 <= code < 4000:
        return f"{code}{said}: a code registered for libraries and frameworks."
    if 4000 <= code < 5000:
        return f"{code}{said}: an application-defined code (passed through the proxy unchanged)."
    return f"{code}{said}: not a standard close code."


# --- Intermediaries and their idle limits (proxy.md §3) -------------------------------------


@dataclasses.dataclass(frozen=True, slots=True)
class IdleLimit:
    seconds: float
    who: str
    lifetime: bool = False  # a connection lifetime: pings cannot extend it


IDLE_LIMITS: tuple[IdleLimit, ...] = (
    IdleLimit(30, "a Google Cloud Application LB backend timeout (default 30 s)", lifetime=True),
    IdleLimit(55, "Heroku's router (55 s rolling window)"),
    IdleLimit(60, "nginx's proxy_read_timeout (default 60 s) or an AWS ALB idle timeout (60 s)"),
    IdleLimit(100, "Cloudflare (100 s)"),
    IdleLimit(180, "Traefik's idleTimeout (180 s)"),
    IdleLimit(270, "the Cloudflare Zero Trust gateway (270 s)"),
    IdleLimit(350, "an AWS NLB (350 s)"),
    IdleLimit(600, "AWS API Gateway or CloudFront (10 min)"),
)


def nearest_idle_limit(elapsed: float) -> IdleLimit | None:
    """The known limit this elapsed time matches (within 10 %, at least 3 s), if any."""
    best: IdleLimit | None = None
    for limit in IDLE_LIMITS:
        if abs(elapsed - limit.seconds) <= max(3.0, limit.seconds * 0.1) and (
            best is None or abs(elapsed - limit.seconds) < abs(elapsed - best.seconds)
        ):
            best = limit
    return best


@dataclasses.dataclass(frozen=True, slots=True)
class Intermediary:
    name: str
    idle: float | None  # its idle (or lifetime) limit for a quiet WebSocket; None: none known
    evidence: str
    note: str = ""


def _headers(headers: list[tuple[str, str]]) -> dict[str, str]:
    """Lower-cased names; the distinct values of a header seen in several answers, joined."""
    values: dict[str, dict[str, None]] = {}
    for name, value in headers:
        values.setdefault(name.lower(), {})[value] = None
    return {key: ", ".join(seen) for key, seen in values.items()}


def fingerprint(headers: list[tuple[str, str]]) -> list[Intermediary]:
    """Who answered, from `server`/`via` and vendor headers; each with its idle budget."""
    h = _headers(headers)
    server, via = h.get("server", ""), h.get("via", "")
    server_l, via_l = server.lower(), via.lower()
    found: list[Intermediary] = []
    if server_l.startswith("cloudflare") or "cf-ray" in h:
        found.append(Intermediary("Cloudflare", 100, f"server: {server or '-'}; cf-ray"))
    if "google" in via_l:
        found.append(
            Intermediary(
                "Google Cloud load balancer",
                30,
                f"via: {via}",
                "its backend service timeout is a connection lifetime for WebSockets; raise "
                "timeoutSec, pings do not help",
            )
        )
    if server_l.startswith("awselb"):
        found.append(Intermediary("AWS ALB", 60, f"server: {server}"))
    if any(k.startswith("x-amz-cf-") for k in h):
        found.append(Intermediary("AWS CloudFront", 600, "x-amz-cf-* headers"))
    elif any(k.startswith("x-amzn-") for k in h):
        found.append(Intermediary("AWS API Gateway", 600, "x-amzn-* headers"))
    if "vegur" in via_l or any(k.startswith("heroku") for k in h):
        found.append(Intermediary("Heroku router", 55, f"via: {via or '-'}"))
    if server_l.startswith(("nginx", "openresty")):
        found.append(
            Intermediary(
                "nginx",
                60,
                f"server: {server}",
                "proxy_read_timeout (60 s unless set) closes quiet WebSockets",
            )
        )
    if server_l.startswith("caddy"):
        found.append(
            Intermediary(
                "Caddy",
                None,
                f"server: {server}",
                "no idle timeout for WebSockets by default; a config reload closes them with 1001",
            )
        )
    if server_l.startswith("uvicorn"):
        found.append(Intermediary("callbridge itself (no proxy)", None, f"server: {server}"))
    return found


def idle_budget(intermediaries: list[Intermediary]) -> float:
    """The shortest known limit on the path; nginx's default when nothing is recognised."""
    limits = [i.idle for i in intermediaries if i.idle is not None]
    if limits:
        return min(limits)
    if intermediaries:  # only limit-free parties (Caddy, callbridge directly) answered
        return 0.0
    return DEFAULT_IDLE_BUDGET


# --- nginx -t output --------------------------------------------------------------------------

_NGINX_HINTS: tuple[tuple[re.Pattern[str], str], ...] = tuple(
    (re.compile(pattern, re.IGNORECASE), hint)
    for pattern, hint in (
        (
            r'"map" directive is not allowed here',
            "map belongs in the http context: move it to the top level of a file included "
            "inside http {} (e.g. /etc/nginx/conf.d/callbridge.conf), never inside server {} "
            "or location {}.",
        ),
        (
            r'unknown "\w+" variable',
            "the variable is not defined: its map is missing from the http context.",
        ),
        (
            r'unknown directive "http2"',
            "http2 on; needs nginx >= 1.25.1: on this version write listen 443 ssl http2;.",
        ),
        (
            r'"listen \.\.\. http2" directive is deprecated',
            "nginx >= 1.25.1: write listen 443 ssl; and http2 on;.",
        ),
        (
            r'"ssl_stapling" ignored',
            "the certificate has no OCSP responder (Let's Encrypt dropped OCSP in 2025): remove "
            "ssl_stapling.",
        ),
        (
            r"conflicting server name",
            "two server blocks claim the same name and port; nginx ignores the second one.",
        ),
        (
            r"cannot load certificate|no such file or directory",
            "a path in the configuration is wrong or unreadable.",
        ),
        (r"permission denied", "run it as root: sudo callbridge doctor --local."),
    )
)


def explain_nginx_line(line: str) -> str | None:
    for pattern, hint in _NGINX_HINTS:
        if pattern.search(line):
            return hint
    return None
