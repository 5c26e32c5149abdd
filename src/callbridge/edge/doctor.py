"""`callbridge doctor URL`: the runbook's verification steps, run against a deployment.

The old runbook's checks were manual (open the front end, read the browser console, grep the
logs), and a browser reports every failed WebSocket handshake as the same 1006. The doctor runs
the same checks from the outside — DNS, TCP, TLS, the HTTP→HTTPS redirect, health, a raw
upgrade handshake on each WebSocket path, the welcome and format messages, an idle period
longer than the proxy's timeout, the close handshake — and says for each failure what it most
likely means and how to fix it. The browser paths want a token: `--token`, or `--api-key` with
which the doctor mints one through the proxy; without either, a 4401 close still proves that the
route reaches callbridge. `--local` adds the server-side steps (service port, `nginx -t`,
callbridge's nginx linter). Every network step is bounded by `timeout`.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import ipaddress
import math
import secrets
import socket
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any
from urllib.parse import urlencode, urlsplit

import orjson
from websockets.frames import Close, Opcode

from callbridge import __version__
from callbridge.edge.doctor_explain import (
    KEEPALIVE_FIX,
    Intermediary,
    explain_close,
    explain_handshake,
    fingerprint,
    idle_budget,
    nearest_idle_limit,
)
from callbridge.edge.doctor_net import (
    Endpoint,
    ProbeError,
    RawResponse,
    WsSession,
    http_get,
    http_request,
    ws_handshake,
)
from callbridge.edge.doctor_report import Check, Report, Status, render_table

__all__ = [
    "DEFAULT_PATHS",
    "Check",
    "DoctorOptions",
    "Report",
    "Status",
    "Target",
    "idle_seconds",
    "parse_target",
    "render_table",
    "run_doctor",
]

DEFAULT_PATHS = ("/call-events", "/frontend-audio", "/audio-stream")
BROWSER_PATHS = frozenset({"/call-events", "/frontend-audio"})  # the ones that take ?token=
TOKEN_REFUSALS = frozenset({4401, 4403})  # callbridge's "no valid token" / "not this token"
MIN_IDLE = 75.0
IDLE_MARGIN = 15.0
HSTS_MIN_AGE = 31_536_000
_LOCAL_NAMES = ("localhost",)
_LOCAL_SUFFIXES = (".localhost", ".local", ".internal", ".lan", ".home.arpa", ".test")


@dataclasses.dataclass(slots=True)
class DoctorOptions:
    url: str
    ca: Path | None = None
    insecure: bool = False
    timeout: float = 10.0
    http_port: int | None = None
    ws_paths: tuple[str, ...] = ()  # empty: the URL's path if it has one, else DEFAULT_PATHS
    origin: str | None = None
    call_control_id: str | None = None
    token: str | None = None
    api_key: str | None = None  # mints a token when `token` is not given
    idle: float | None = None  # None: max(75 s, detected idle limit + 15 s)
    quick: bool = False
    local: bool = False
    service_port: int | None = None
    nginx_conf: Path = Path("/etc/nginx/nginx.conf")


@dataclasses.dataclass(slots=True)
class Target:
    tls: bool
    host: str
    port: int
    paths: list[str]

    @property
    def base(self) -> str:
        name = f"[{self.host}]" if ":" in self.host else self.host
        default = 443 if self.tls else 80
        port = "" if self.port == default else f":{self.port}"
        return f"{'https' if self.tls else 'http'}://{name}{port}"


def _is_ip(host: str) -> bool:
    try:
        ipaddress.ip_address(host)
    except ValueError:
        return False
    return True


def is_public_host(host: str) -> bool:
    """Could a browser on the internet reach this name? (Private IPs and .local are not.)"""
    try:
        return ipaddress.ip_address(host).is_global
    except ValueError:
        name = host.lower().rstrip(".")
        return "." in name and name not in _LOCAL_NAMES and not name.endswith(_LOCAL_SUFFIXES)


def parse_target(url: str, ws_paths: tuple[str, ...] = ()) -> tuple[Target | None, Check]:
    """https://host[:port][/path] or wss://…; ws:// and http:// work but warn on public hosts."""
    raw = url.strip()
    if "://" not in raw:
        raw = "https://" + raw
    parts = urlsplit(raw)
    scheme = parts.scheme.lower()
    if scheme not in ("https", "wss", "http", "ws"):
        return None, Check(
            "target",
            Status.FAIL,
            f"{url}: unsupported scheme {scheme!r}",
            "Give https://host[:port] or wss://host[:port]/path.",
        )
    try:
        port = parts.port
    except ValueError as exc:
        return None, Check("target", Status.FAIL, f"{url}: {exc}", "Fix the port number.")
    host = parts.hostname or ""
    if not host:
        return None, Check("target", Status.FAIL, f"{url}: no host name", "Give a host name.")
    tls = scheme in ("https", "wss")
    path = parts.path.rstrip("/")
    if ws_paths:
        paths = [p if p.startswith("/") else "/" + p for p in ws_paths]
    elif path:
        paths = [path]
    else:
        paths = list(DEFAULT_PATHS)
    target = Target(tls, host, port or (443 if tls else 80), paths)
    evidence = f"{target.base}; WebSocket paths {', '.join(paths)}"
    if not tls and is_public_host(host):
        return target, Check(
            "target",
            Status.WARN,
            evidence,
            f"{scheme}:// on a public host: browsers block ws:// from https:// pages, and "
            "Telnyx and the console need wss://. Serve it over TLS and check https://.",
            {"tls": tls, "host": host, "port": target.port, "paths": paths},
        )
    return target, Check(
        "target",
        Status.PASS,
        evidence,
        data={"tls": tls, "host": host, "port": target.port, "paths": paths},
    )


def idle_seconds(requested: float | None, intermediaries: list[Intermediary]) -> float:
    """How long the idle test stays silent: past every idle limit known to be on the path."""
    if requested is not None:
        return requested
    return max(MIN_IDLE, idle_budget(intermediaries) + IDLE_MARGIN)


def _ms(seconds: float) -> str:
    ms = seconds * 1000
    return f"{ms:.1f} ms" if ms < 10 else f"{ms:.0f} ms"


def _from_callbridge(response: RawResponse) -> bool:
    """callbridge's own JSON 404: what it answers to a plain GET on a WebSocket route."""
    body = response.json()
    return response.status == 404 and isinstance(body, dict) and body.get("error") == "not_found"


class _Doctor:
    def __init__(self, options: DoctorOptions, progress: Callable[[str], None]) -> None:
        self.options = options
        self.progress = progress
        self.report = Report(options.url)
        self.target: Target | None = None
        self.endpoint: Endpoint | None = None
        self.headers_seen: list[tuple[str, str]] = []
        self.sessions: dict[str, WsSession] = {}
        self.intermediaries: list[Intermediary] = []
        self.ping_interval: float | None = None  # from the welcome
        self.probe_id = f"doctor-probe-{secrets.token_hex(4)}"
        self.token = options.token  # or one minted with options.api_key
        self.token_refused = False  # /call-events closed 4401/4403: no idle test

    def add(self, check: Check) -> Check:
        self.report.checks.append(check)
        return check

    async def run(self) -> Report:
        try:
            await self._remote()
        except Exception as exc:  # an operator needs the rows so far, not a traceback
            self.add(
                Check(
                    "doctor",
                    Status.FAIL,
                    f"the doctor itself failed: {exc!r}",
                    "A bug in callbridge doctor: please report it with the --json output.",
                )
            )
        finally:
            for session in self.sessions.values():
                await session.abort()
            self.sessions.clear()
        if self.options.local:
            from callbridge.edge.doctor_local import local_checks

            self.progress("Local checks: service port, nginx -t, nginx lint")
            self.report.checks.extend(
                await local_checks(
                    service_port=self.options.service_port,
                    nginx_conf=self.options.nginx_conf,
                    wait=self.options.timeout,
                    ping_interval=self.ping_interval,
                )
            )
        return self.report

    async def _remote(self) -> None:
        target, check = parse_target(self.options.url, self.options.ws_paths)
        self.add(check)
        if target is None:
            return
        self.target = target
        self.progress(f"DNS and TCP: {target.host}")
        addresses = await self._dns(target)
        if not addresses:
            return
        address = await self._tcp(target, addresses)
        if address is None:
            return
        context = None
        if target.tls:
            from callbridge.edge.doctor_tls import check_tls

            self.progress("TLS")
            outcome = await check_tls(
                address,
                target.port,
                target.host,
                ca=self.options.ca,
                insecure=self.options.insecure,
                wait=self.options.timeout,
            )
            self.report.checks.extend(outcome.checks)
            if outcome.context is None:
                return
            context = outcome.context
        self.endpoint = Endpoint(target.host, target.port, address, context)
        if target.tls:
            self.progress("HTTP → HTTPS redirect")
            await self._redirect(target, address)
        self.progress("GET /api/health")
        await self._health()
        if self.options.api_key and not self.token and BROWSER_PATHS & set(target.paths):
            self.progress("POST /api/tokens")
            await self._mint_token()
        self.progress("WebSocket handshakes")
        for path in target.paths:
            await self._handshake(path)
        self._fingerprint()
        if "/call-events" in target.paths:
            await self._welcome()
        if "/frontend-audio" in target.paths:
            await self._frontend_audio()
        if self.options.quick:
            self.add(Check("idle", Status.INFO, "skipped (--quick)"))
        else:
            await self._idle()

    # --- DNS and TCP --------------------------------------------------------------------------

    async def _dns(self, target: Target) -> list[str]:
        if _is_ip(target.host):
            self.add(Check("DNS", Status.INFO, f"{target.host} is an IP address: no lookup"))
            return [target.host]
        started = time.monotonic()
        try:
            async with asyncio.timeout(self.options.timeout):
                infos = await asyncio.get_running_loop().getaddrinfo(
                    target.host, target.port, type=socket.SOCK_STREAM
                )
        except TimeoutError:
            self.add(
                Check(
                    "DNS",
                    Status.FAIL,
                    f"no answer within {self.options.timeout:g} s",
                    "This host's resolver does not answer: check /etc/resolv.conf.",
                )
            )
            return []
        except socket.gaierror as exc:
            if exc.errno in (socket.EAI_NONAME, getattr(socket, "EAI_NODATA", -5)):
                cause = (
                    "The name does not resolve (NXDOMAIN, or no A/AAAA record): check the DNS "
                    "record and that it has propagated (dig +short NAME)."
                )
            elif exc.errno == socket.EAI_AGAIN:
                cause = "A temporary DNS failure: the resolver did not answer; retry."
            else:
                cause = "The lookup failed."
            self.add(Check("DNS", Status.FAIL, f"{target.host}: {exc.strerror}", cause))
            return []
        addresses = list(dict.fromkeys(str(info[4][0]) for info in infos))
        seconds = time.monotonic() - started
        self.add(
            Check(
                "DNS",
                Status.PASS,
                f"{target.host} → {', '.join(addresses)} ({_ms(seconds)})",
                data={"addresses": addresses, "ms": round(seconds * 1000, 1)},
            )
        )
        return addresses

    async def _connect(self, address: str, port: int) -> tuple[str, float, str | None]:
        started = time.monotonic()
        try:
            async with asyncio.timeout(self.options.timeout):
                _reader, writer = await asyncio.open_connection(address, port)
        except TimeoutError:
            return address, 0.0, "timeout"
        except ConnectionRefusedError:
            return address, 0.0, "refused"
        except OSError as exc:
            return address, 0.0, exc.strerror or str(exc)
        seconds = time.monotonic() - started
        writer.close()
        with contextlib.suppress(OSError):
            await writer.wait_closed()
        return address, seconds, None

    async def _tcp(self, target: Target, addresses: list[str]) -> str | None:
        results = await asyncio.gather(*(self._connect(a, target.port) for a in addresses[:8]))
        ok = [address for address, _, error in results if error is None]
        shown = "; ".join(
            f"{address}:{target.port} " + (_ms(seconds) if error is None else error)
            for address, seconds, error in results
        )
        data = {
            "results": [{"address": a, "ms": round(s * 1000, 1), "error": e} for a, s, e in results]
        }
        errors = {error for _, _, error in results if error}
        if not ok:
            if errors == {"refused"}:
                cause = (
                    f"Nothing listens on port {target.port} there: the proxy is down, listens "
                    "on another port or interface, or DNS points at the wrong machine."
                )
            elif "timeout" in errors:
                cause = f"No answer: a firewall or a cloud security group drops port {target.port}."
            else:
                cause = "The network cannot reach the address."
            self.add(Check("TCP", Status.FAIL, shown, cause, data))
            return None
        if len(ok) < len(results):
            self.add(
                Check(
                    "TCP",
                    Status.WARN,
                    shown,
                    "Some addresses do not answer: clients that pick them fail while others "
                    "work. A broken IPv6 listener behind an AAAA record is the classic case "
                    "(listen [::]:443 ssl; or remove the record).",
                    data,
                )
            )
        else:
            self.add(Check("TCP", Status.PASS, shown, data=data))
        return ok[0]

    # --- HTTP ---------------------------------------------------------------------------------

    async def _redirect(self, target: Target, address: str) -> None:
        name = "HTTP → HTTPS"
        port = self.options.http_port or (80 if target.port == 443 else None)
        if port is None:
            self.add(
                Check(
                    name,
                    Status.WARN,
                    f"skipped: HTTPS is on port {target.port}, so the plain-HTTP port is unknown",
                    "Pass --http-port PORT to check the redirect.",
                )
            )
            return
        endpoint = Endpoint(target.host, port, address, None)
        try:
            response = await http_get(endpoint, "/", self.options.timeout)
        except ProbeError as exc:
            self.add(
                Check(
                    name,
                    Status.WARN,
                    f"http://{endpoint.host_header}/: {exc}",
                    "No plain-HTTP listener: people typing the bare name get an error, and "
                    "Let's Encrypt HTTP-01 renewals need port 80. Add a port-80 server that "
                    "answers return 301 https://$host$request_uri;.",
                )
            )
            return
        self.headers_seen.extend(response.headers)
        location = response.header("location") or ""
        moved = urlsplit(location)
        evidence = f"http://{endpoint.host_header}/ → {response.status_line}" + (
            f", Location: {location}" if location else ""
        )
        data = response.to_dict()
        same_host = (moved.hostname or "").lower() == target.host.lower()
        if response.status in (301, 308) and moved.scheme == "https" and same_host:
            self.add(
                Check(
                    name,
                    Status.PASS,
                    evidence,
                    "ws:// URLs get this redirect too, and WebSocket clients do not follow "
                    "redirects: publish wss:// URLs only.",
                    data,
                )
            )
        elif response.status in (302, 307) and moved.scheme == "https" and same_host:
            self.add(
                Check(
                    name,
                    Status.WARN,
                    evidence,
                    "A temporary redirect: use 301 or 308 so clients remember it.",
                    data,
                )
            )
        elif 300 <= response.status < 400:
            self.add(
                Check(
                    name,
                    Status.WARN,
                    evidence,
                    "The redirect does not lead to https:// on the same host.",
                    data,
                )
            )
        else:
            self.add(
                Check(
                    name,
                    Status.WARN,
                    evidence,
                    "Plain HTTP is served without a redirect: make the port-80 server answer "
                    "return 301 https://$host$request_uri;.",
                    data,
                )
            )

    async def _health(self) -> None:
        assert self.endpoint is not None
        assert self.target is not None
        try:
            response = await http_get(self.endpoint, "/api/health", self.options.timeout)
        except ProbeError as exc:
            self.add(
                Check(
                    "GET /api/health",
                    Status.FAIL,
                    str(exc),
                    "The HTTPS endpoint does not answer HTTP requests.",
                )
            )
            return
        self.headers_seen.extend(response.headers)
        body = response.json()
        version = body.get("version") if isinstance(body, dict) else None
        evidence = f"{response.status_line}; {_ms(response.seconds)}"
        if response.status == 200 and isinstance(body, dict) and body.get("status") == "ok":
            note = "" if version == __version__ else f"This doctor is version {__version__}."
            self.add(
                Check(
                    "GET /api/health",
                    Status.PASS,
                    f"{evidence}; version {version}",
                    note,
                    {"version": version, **response.to_dict()},
                )
            )
        else:
            if response.status == 200:
                cause = (
                    "Something other than callbridge answers /api/health (a page: an SPA or a "
                    "default site): route /api/ to callbridge."
                )
            else:
                cause = explain_handshake(
                    response.status, path="/api/health", body=response.body_text(120)
                )
            self.add(
                Check(
                    "GET /api/health",
                    Status.FAIL,
                    f"{response.summary()}; body: {response.body_text()}",
                    cause,
                    response.to_dict(),
                )
            )
        if self.target.tls:
            self._hsts(response)
        await self._ready()

    def _hsts(self, response: RawResponse) -> None:
        value = response.header("strict-transport-security")
        if not value:
            self.add(
                Check(
                    "HSTS",
                    Status.WARN,
                    "no Strict-Transport-Security header on /api/health",
                    'Add add_header Strict-Transport-Security "max-age=63072000" always; to the '
                    "HTTPS server block (and repeat it in any location with its own add_header).",
                )
            )
            return
        fields = {
            k.strip().lower(): v.strip().strip('"')
            for k, _, v in (item.partition("=") for item in value.split(";"))
        }
        try:
            age = int(fields.get("max-age", "0"))
        except ValueError:
            age = 0
        extras = [flag for flag in ("includesubdomains", "preload") if flag in fields]
        evidence = f"Strict-Transport-Security: {value}"
        if age >= HSTS_MIN_AGE:
            note = "" if extras else "includeSubDomains and preload are optional."
            self.add(Check("HSTS", Status.PASS, evidence, note, {"max_age": age}))
        else:
            self.add(
                Check(
                    "HSTS",
                    Status.WARN,
                    evidence,
                    f"max-age {age} is under one year ({HSTS_MIN_AGE}): use 63072000.",
                    {"max_age": age},
                )
            )

    async def _ready(self) -> None:
        assert self.endpoint is not None
        try:
            response = await http_get(self.endpoint, "/api/ready", self.options.timeout)
        except ProbeError as exc:
            self.add(Check("GET /api/ready", Status.INFO, str(exc)))
            return
        body = response.json()
        if response.status == 200:
            self.add(Check("GET /api/ready", Status.INFO, f"{response.status_line}: ready"))
        elif response.status == 503 and isinstance(body, dict):
            failed = {
                name: check.get("error")
                for name, check in (body.get("checks") or {}).items()
                if isinstance(check, dict) and not check.get("ok")
            }
            self.add(
                Check(
                    "GET /api/ready",
                    Status.WARN,
                    f"{response.status_line}: " + "; ".join(f"{k}: {v}" for k, v in failed.items()),
                    "The service runs but cannot reach its store or hub: see its logs.",
                    {"failed": failed},
                )
            )
        else:
            self.add(
                Check(
                    "GET /api/ready",
                    Status.INFO,
                    f"{response.summary()}; body: {response.body_text(120)}",
                )
            )

    # --- Browser token ------------------------------------------------------------------------

    async def _mint_token(self) -> None:
        """A token for the browser paths, minted through the proxy as a front end's backend
        would; the token itself never enters the report."""
        assert self.endpoint is not None
        name = "POST /api/tokens"
        # It must outlive the idle test; the service caps it at CALLBRIDGE_TOKEN_MAX_TTL.
        ttl = min(86_400, max(900, math.ceil((self.options.idle or 0) + 300)))
        body = orjson.dumps({"calls": "*", "rights": ["events", "listen"], "ttl": ttl})
        headers = {
            "Authorization": f"Bearer {self.options.api_key}",
            "Content-Type": "application/json",
        }
        try:
            response = await http_request(
                self.endpoint, "POST", "/api/tokens", self.options.timeout, headers, body
            )
        except ProbeError as exc:
            self.add(Check(name, Status.FAIL, str(exc), "The API did not answer: see health."))
            return
        answer = response.json()
        token = answer.get("token") if isinstance(answer, dict) else None
        if response.status == 201 and isinstance(token, str) and token:
            self.token = token
            self.add(
                Check(
                    name,
                    Status.PASS,
                    f"{response.status_line}; a browser token (events, listen) expiring in "
                    f"{answer.get('expires_in')} s; {_ms(response.seconds)}",
                )
            )
            return
        detail = answer.get("detail") if isinstance(answer, dict) else None
        evidence = f"{response.summary()}; {detail or response.body_text(120)}"
        if response.status in (401, 403):
            cause = (
                "callbridge refused the API key: its hash must be in the service's "
                "CALLBRIDGE_API_KEYS (`callbridge keys hash KEY` prints the entry). The "
                "WebSocket checks go on without a token."
            )
        else:
            cause = "Expected 201 with a token: is /api/ routed to callbridge?"
        self.add(Check(name, Status.FAIL, evidence, cause, {"status": response.status}))

    def _token_refused(self, name: str, path: str, code: int, reason: str) -> None:
        """A 4401/4403 close: the route reaches callbridge, which wants a (valid) token.

        Without credentials that is all the doctor can learn (WARN: the proxy is fine); a
        token it was given or minted that is refused is the operator's to fix (FAIL)."""
        evidence = (
            f"{path} closed {code} {reason!r} before any message: the route reaches callbridge, "
            "which wants a " + ("browser token" if self.token is None else "valid token")
        )
        data = {"close_code": code, "reason": reason}
        if self.token is None:
            cause = (
                "Not a proxy problem. Pass --api-key (the doctor mints a token) or --token to "
                "check what comes after the token."
            )
            self.add(Check(name, Status.WARN, evidence, cause, data))
            return
        if code == 4401:
            cause = (
                "Not a proxy problem: the token is missing, malformed, expired or signed with "
                "another CALLBRIDGE_TOKEN_SECRET (several instances must share it). Mint a "
                "fresh one (--api-key)."
            )
        else:
            cause = (
                "Not a proxy problem: the token lacks the right for this path (events, listen) "
                "or this call, or the Origin is not allowed (CALLBRIDGE_ALLOWED_ORIGINS; the "
                "doctor sends --origin, default the URL's)."
            )
        self.add(Check(name, Status.FAIL, evidence, cause, data))

    # --- WebSockets ---------------------------------------------------------------------------

    def _ws_target(self, path: str, *, call_control_id: str | None = None) -> str:
        query: list[tuple[str, str]] = []
        if path == "/frontend-audio":
            query.append(("call_control_id", self.options.call_control_id or self.probe_id))
        elif call_control_id is not None:
            query.append(("call_control_id", call_control_id))
        if self.token and path in BROWSER_PATHS:
            query.append(("token", self.token))
        return path + ("?" + urlencode(query) if query else "")

    @property
    def origin(self) -> str:
        assert self.target is not None
        return self.options.origin or self.target.base

    async def _control(self, path: str) -> tuple[str, bool]:
        """The negative control: a plain GET on the WebSocket path must not get 101."""
        assert self.endpoint is not None
        try:
            response = await http_get(self.endpoint, path, self.options.timeout)
        except ProbeError as exc:
            return f"control: plain GET failed: {exc}", False
        if response.status == 101:
            return "control: a plain GET got 101", True
        return f"control: plain GET → {response.status}, not 101", False

    async def _handshake(self, path: str) -> None:
        assert self.endpoint is not None
        name = f"WebSocket {path}"
        try:
            shake = await ws_handshake(
                self.endpoint, self._ws_target(path), self.origin, self.options.timeout
            )
        except ProbeError as exc:
            self.add(
                Check(
                    name,
                    Status.FAIL,
                    str(exc),
                    "No HTTP answer to the upgrade request: the proxy closed or timed out "
                    "before answering (browsers report 1006).",
                )
            )
            return
        response = shake.response
        self.headers_seen.extend(response.headers)
        control, control_upgraded = await self._control(path)
        data = {"handshake": response.to_dict(), "control": control}
        if shake.session is not None:
            if path in ("/call-events", "/frontend-audio"):
                self.sessions[path] = shake.session
            else:  # /audio-stream waits for Telnyx's `start`: leave at once
                await shake.session.close(1000, "callbridge doctor", self.options.timeout)
            if control_upgraded:
                self.add(
                    Check(
                        name,
                        Status.FAIL,
                        f"{response.status_line}, but a plain GET got 101 too",
                        "Something answers 101 without an upgrade request: a broken intermediary.",
                        data,
                    )
                )
                return
            self.add(
                Check(
                    name,
                    Status.PASS,
                    f"{response.status_line}; Sec-WebSocket-Accept valid; "
                    f"{_ms(response.seconds)}; {control}",
                    data=data,
                )
            )
            return
        if shake.problems:
            self.add(
                Check(
                    name,
                    Status.FAIL,
                    f"{response.status_line}: " + "; ".join(shake.problems),
                    "101 without a valid WebSocket handshake: a broken intermediary rewrote it.",
                    data,
                )
            )
            return
        self.add(
            Check(
                name,
                Status.FAIL,
                f"{response.summary()}; body: {response.body_text()}; {control}",
                explain_handshake(
                    response.status,
                    path=path,
                    location=response.header("location"),
                    body=response.body_text(120),
                    from_callbridge=_from_callbridge(response),
                ),
                data,
            )
        )

    def _fingerprint(self) -> None:
        self.intermediaries = fingerprint(self.headers_seen)
        budget = idle_budget(self.intermediaries)
        if not self.intermediaries:
            self.add(
                Check(
                    "intermediaries",
                    Status.INFO,
                    "no known proxy recognised from server/via headers",
                    "Assuming a 60 s idle limit (nginx's and AWS ALB's default).",
                    {"idle_budget": budget},
                )
            )
            return
        shown = "; ".join(f"{i.name} ({i.evidence})" for i in self.intermediaries)
        notes = " ".join(f"{i.name}: {i.note}." for i in self.intermediaries if i.note)
        limit = f"Shortest idle limit on the path: {budget:g} s." if budget else ""
        self.add(
            Check(
                "intermediaries",
                Status.INFO,
                shown,
                f"{notes} {limit}".strip(),
                {
                    "found": [dataclasses.asdict(i) for i in self.intermediaries],
                    "idle_budget": budget,
                },
            )
        )

    async def _first_message(self, session: WsSession) -> tuple[Any, str | None]:
        """The first data message as JSON, or (None, why not)."""
        try:
            frame = await session.next_message(self.options.timeout)
        except TimeoutError:
            return None, f"no message within {self.options.timeout:g} s"
        if frame is None or frame.opcode is Opcode.CLOSE:
            rcvd = session.close_rcvd
            code, reason = (rcvd.code, rcvd.reason) if rcvd else (1006, "")
            return None, f"closed before any message: {explain_close(code, reason)}"
        if frame.opcode is not Opcode.TEXT:
            return None, f"a {frame.opcode.name.lower()} frame of {len(frame.data)} bytes"
        try:
            return orjson.loads(frame.data), None
        except orjson.JSONDecodeError:
            return None, f"not JSON: {bytes(frame.data[:80])!r}"

    async def _welcome(self) -> None:
        name = "/call-events welcome"
        session = self.sessions.pop("/call-events", None)
        if session is None:
            self.add(Check(name, Status.INFO, "skipped: no WebSocket (see its handshake)"))
            self.add(Check("close handshake", Status.INFO, "skipped: no WebSocket"))
            return
        message, problem = await self._first_message(session)
        refused = session.close_rcvd if message is None else None
        if refused is not None and refused.code in TOKEN_REFUSALS:
            self.token_refused = True
            await session.abort()
            self._token_refused(name, "/call-events", refused.code, refused.reason)
            self.add(
                Check(
                    "close handshake",
                    Status.INFO,
                    "skipped: callbridge closed the socket itself (it wants a token)",
                )
            )
            return
        expected: dict[str, type | tuple[type, ...]] = {
            "version": str,
            "seq": int,
            "epoch": str,
            "ping_interval": (int, float),
        }
        wrong = (
            [key for key, kind in expected.items() if not isinstance(message.get(key), kind)]
            if isinstance(message, dict)
            else []
        )
        if problem is not None or not isinstance(message, dict):
            self.add(
                Check(
                    name,
                    Status.FAIL,
                    problem or f"unexpected message: {message!r}",
                    "callbridge sends welcome first, at once: an intermediary is "
                    "holding or rewriting WebSocket frames, or this is not callbridge.",
                )
            )
        elif message.get("type") != "welcome" or wrong:
            self.add(
                Check(
                    name,
                    Status.FAIL,
                    f"first message: {str(message)[:200]}",
                    f"Not a callbridge welcome (missing or wrong: {wrong or 'type'}).",
                )
            )
        else:
            interval = float(message["ping_interval"])
            self.ping_interval = interval
            evidence = (
                f"version {message['version']}, seq {message['seq']}, epoch "
                f"{str(message['epoch'])[:12]}…, ping_interval {interval:g} s"
            )
            budget = idle_budget(self.intermediaries)
            if interval == 0:
                status = Status.WARN
                cause = (
                    "Server pings are off (CALLBRIDGE_WS_PING_INTERVAL=0): quiet sockets die at "
                    f"the proxy's idle timeout. {KEEPALIVE_FIX}"
                )
            elif budget and interval >= budget:
                status = Status.WARN
                cause = (
                    f"The ping interval ({interval:g} s) is not below the shortest idle limit "
                    f"on the path ({budget:g} s): lower CALLBRIDGE_WS_PING_INTERVAL."
                )
            else:
                status, cause = Status.PASS, ""
            self.add(Check(name, status, evidence, cause, {"welcome": message}))
        await self._close_check(session)

    async def _close_check(self, session: WsSession) -> None:
        name = "close handshake"
        if session.closed:
            rcvd = session.close_rcvd
            code, reason = (rcvd.code, rcvd.reason) if rcvd else (1006, "")
            self.add(
                Check(
                    name,
                    Status.FAIL,
                    "the connection was already closed",
                    explain_close(code, reason),
                    {"close_code": code},
                )
            )
            return
        started = time.monotonic()
        echoed = await session.close(1000, "callbridge doctor", self.options.timeout)
        seconds = time.monotonic() - started
        rcvd = session.close_rcvd
        if echoed and rcvd is not None and rcvd.code == 1000:
            self.add(
                Check(
                    name,
                    Status.PASS,
                    f"sent 1000; the server echoed 1000 in {_ms(seconds)}",
                    data={"close_code": 1000, "ms": round(seconds * 1000, 1)},
                )
            )
        elif rcvd is not None:
            self.add(
                Check(
                    name,
                    Status.WARN,
                    f"sent 1000; the server answered {rcvd.code}",
                    explain_close(rcvd.code, rcvd.reason),
                    {"close_code": rcvd.code},
                )
            )
        elif session.closed:
            self.add(
                Check(
                    name,
                    Status.FAIL,
                    "sent 1000; the TCP connection closed without a close frame (1006)",
                    explain_close(1006),
                    {"close_code": 1006},
                )
            )
        else:
            self.add(
                Check(
                    name,
                    Status.FAIL,
                    f"sent 1000; no close frame within {self.options.timeout:g} s",
                    "An intermediary swallowed the close frame, or the server hangs.",
                )
            )

    async def _frontend_audio(self) -> None:
        call = self.options.call_control_id
        name = "/frontend-audio format" if call else "/frontend-audio route"
        session = self.sessions.pop("/frontend-audio", None)
        if session is None:
            self.add(Check(name, Status.INFO, "skipped: no WebSocket (see its handshake)"))
            return
        try:
            message, problem = await self._first_message(session)
            rcvd = session.close_rcvd
            if call is None:
                self._frontend_route(name, problem, rcvd, message)
            elif message is None and rcvd is not None and rcvd.code in TOKEN_REFUSALS:
                self._token_refused(name, "/frontend-audio", rcvd.code, rcvd.reason)
            elif isinstance(message, dict) and message.get("type") == "format":
                codec = message.get("codec") or {}
                shown = (
                    f"{codec.get('encoding')} {codec.get('sample_rate')} Hz"
                    if isinstance(codec, dict) and codec
                    else "no live stream yet"
                )
                self.add(
                    Check(
                        name,
                        Status.PASS,
                        f"format for {call}: call {message.get('call_state')}, stream "
                        f"{message.get('stream')}, codec {shown}",
                        data={"format": message},
                    )
                )
            elif rcvd is not None and rcvd.code == 4404:
                self.add(
                    Check(
                        name,
                        Status.FAIL,
                        f"closed 4404 {rcvd.reason!r} for {call}",
                        "This callbridge does not know that call_control_id: check it "
                        "with GET /api/calls (another deployment or database?).",
                    )
                )
            else:
                self.add(
                    Check(
                        name,
                        Status.FAIL,
                        problem or f"first message: {message!r}",
                        "Expected a format message first.",
                    )
                )
        finally:
            if not session.closed:
                await session.close(1000, "callbridge doctor", self.options.timeout)
            await session.abort()

    def _frontend_route(
        self, name: str, problem: str | None, rcvd: Close | None, message: Any
    ) -> None:
        code = rcvd.code if rcvd is not None else None
        if rcvd is not None and code in TOKEN_REFUSALS and self.token is None:
            self.add(
                Check(
                    name,
                    Status.PASS,
                    f"a made-up call ({self.probe_id}) was closed with {code} {rcvd.reason!r}: "
                    "the route reaches callbridge, which wants a token before it looks the "
                    "call up",
                    "Pass --api-key (or --token) to see it refuse the made-up call with 4404.",
                )
            )
            return
        if rcvd is not None and code in TOKEN_REFUSALS:
            self._token_refused(name, "/frontend-audio", rcvd.code, rcvd.reason)
            return
        if code == 4404:
            self.add(
                Check(
                    name,
                    Status.PASS,
                    f"a made-up call ({self.probe_id}) was closed with 4404 "
                    '"unknown call_control_id": the route reaches callbridge',
                    "Pass --call-control-id of a live call to check its format message.",
                )
            )
        else:
            self.add(
                Check(
                    name,
                    Status.FAIL,
                    problem or f"unexpected message: {message!r}",
                    "Expected callbridge to close a made-up call with 4404.",
                )
            )

    async def _idle(self) -> None:
        assert self.endpoint is not None
        assert self.target is not None
        name = "idle"
        if self.token_refused:
            self.add(
                Check(
                    name,
                    Status.INFO,
                    "skipped: callbridge closes /call-events without a valid token "
                    "(see its welcome)",
                )
            )
            return
        if "/call-events" in self.target.paths:
            path, target = (
                "/call-events",
                self._ws_target("/call-events", call_control_id=f"{self.probe_id}-idle"),
            )  # a filter on a made-up call: no event resets the proxy's idle timer
        elif "/frontend-audio" in self.target.paths and self.options.call_control_id:
            path, target = "/frontend-audio", self._ws_target("/frontend-audio")
        else:
            self.add(
                Check(
                    name,
                    Status.INFO,
                    "skipped: needs /call-events (or /frontend-audio with --call-control-id)",
                )
            )
            return
        seconds = idle_seconds(self.options.idle, self.intermediaries)
        self.progress(f"Idle test: {seconds:g} s without a word on {path} (--quick skips it)")
        try:
            shake = await ws_handshake(self.endpoint, target, self.origin, self.options.timeout)
        except ProbeError as exc:
            self.add(Check(name, Status.FAIL, f"{path}: {exc}", "See the handshake check."))
            return
        session = shake.session
        if session is None:
            self.add(
                Check(
                    name,
                    Status.FAIL,
                    f"{path}: {shake.response.status_line}",
                    "See the handshake check.",
                )
            )
            return
        try:
            await self._stay_idle(session, path, seconds)
        finally:
            await session.abort()

    async def _stay_idle(self, session: WsSession, path: str, seconds: float) -> None:
        started = time.monotonic()
        deadline = started + seconds
        messages = 0
        while (remaining := deadline - time.monotonic()) > 0:
            try:
                frame = await session.next_frame(remaining)
            except TimeoutError:
                break
            if frame is None:
                self._idle_died(session, path, seconds, time.monotonic() - started, messages)
                return
            if frame.opcode in (Opcode.TEXT, Opcode.BINARY):
                messages += 1
        data = {"idle": seconds, "pings": session.pings, "messages": messages}
        evidence = (
            f"{path} survived {seconds:g} s with client pings off; {session.pings} server "
            f"pings received (answered as a browser does)"
        )
        if messages:
            evidence += f"; {messages} messages arrived too (traffic also resets proxy timers)"
        if session.pings == 0 and self.ping_interval == 0:
            self.add(
                Check(
                    "idle",
                    Status.WARN,
                    evidence,
                    "It survived, but the server sends no pings: any proxy with a shorter "
                    f"idle timeout will cut quiet sockets. {KEEPALIVE_FIX}",
                    data,
                )
            )
        else:
            self.add(Check("idle", Status.PASS, evidence, data=data))
        await session.close(1000, "callbridge doctor", self.options.timeout)

    def _idle_died(
        self, session: WsSession, path: str, seconds: float, elapsed: float, messages: int
    ) -> None:
        rcvd = session.close_rcvd
        pings = session.pings
        data: dict[str, Any] = {
            "idle": seconds,
            "elapsed": round(elapsed, 2),
            "pings": pings,
            "messages": messages,
            "close_frame": rcvd is not None,
            "close_code": rcvd.code if rcvd else 1006,
        }
        if rcvd is not None:
            evidence = (
                f"{path} closed after {elapsed:.1f} s of silence with a close frame: "
                f"{rcvd.code} {rcvd.reason!r}; {pings} server pings received"
            )
            self.add(
                Check("idle", Status.FAIL, evidence, explain_close(rcvd.code, rcvd.reason), data)
            )
            return
        evidence = (
            f"{path} closed after {elapsed:.1f} s of silence without a close frame (1006); "
            f"{pings} server pings received"
        )
        parts = [explain_close(1006)]
        limit = nearest_idle_limit(elapsed)
        if limit is not None:
            parts.append(f"{elapsed:.0f} s matches {limit.who}.")
            if limit.lifetime:
                parts.append("That is a connection lifetime: pings cannot extend it; raise it.")
        names = [i.name for i in self.intermediaries]
        if "nginx" in names:
            parts.append(
                f"nginx is in front: its proxy_read_timeout (here about {elapsed:.0f} s) closed "
                "the quiet tunnel; nginx logs this only at info level (upstream timed out … "
                "while proxying upgraded connection)."
            )
        elif names:
            parts.append(f"In front: {', '.join(names)}.")
        if pings == 0:
            off = " (its welcome says ping_interval 0)" if self.ping_interval == 0 else ""
            parts.append(f"The server sent no ping in that time{off}. {KEEPALIVE_FIX}")
        else:
            parts.append(
                f"The server pinged {pings} times and the socket still died: its interval is "
                "longer than the proxy's timeout (lower CALLBRIDGE_WS_PING_INTERVAL), or the "
                "limit is a connection lifetime that pings cannot extend."
            )
        self.add(Check("idle", Status.FAIL, evidence, " ".join(parts), data))


async def run_doctor(
    options: DoctorOptions, progress: Callable[[str], None] | None = None
) -> Report:
    """Run every check; `progress` hears what is being done (the idle test takes a while)."""
    return await _Doctor(options, progress or (lambda _message: None)).run()
