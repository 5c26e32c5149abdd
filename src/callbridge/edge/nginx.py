"""Render the nginx configuration that puts callbridge behind TLS, WebSockets included.

Two files, as Debian's nginx lays them out: an http-context part for `conf.d/` (the maps, the
upstream and a log format: `map` is only allowed in the http context) and the servers for
`sites-available/`. A third form puts both in one file with its own main context, for `nginx -t`
in a scratch prefix and for tests. The output is plain text built from templates whose comments
say why each directive is there; `nginx -t` is the authority on whether it is valid.

What depends on the host is detected (`nginx -V`, `openssl version`) or given: the `http2`
syntax changed in nginx 1.25.1, session tickets are safe from 1.23.2, and the post-quantum
X25519MLKEM768 group needs OpenSSL 3.5.
"""

from __future__ import annotations

import dataclasses
import ipaddress
import math
import os
import re
import shutil
import socket
import subprocess
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from callbridge.config import Settings

__all__ = [
    "HTTP_FILE",
    "SERVER_FILE",
    "WEBSOCKET_PATHS",
    "CheckResult",
    "Deployment",
    "NginxBuild",
    "Rendered",
    "Version",
    "check_in_place",
    "check_in_scratch_prefix",
    "detect_nginx",
    "find_nginx",
    "format_version",
    "parse_nginx_v",
    "parse_version",
    "render",
    "render_single_file",
]

Version = tuple[int, int, int]

HTTP_FILE = "conf.d/callbridge.conf"
SERVER_FILE = "sites-available/callbridge.conf"
WEBSOCKET_PATHS = ("/call-events", "/audio-stream", "/frontend-audio")

HTTP2_DIRECTIVE_SINCE: Version = (1, 25, 1)  # `http2 on;` replaces `listen ... http2`
TICKET_KEY_ROTATION_SINCE: Version = (1, 23, 2)  # nginx rotates ticket keys itself
MLKEM_OPENSSL_SINCE: Version = (3, 5, 0)
DEFAULT_NGINX: Version = (1, 22, 1)  # Debian 12; its syntax is accepted by every later version
MIN_PROXY_TIMEOUT = 75.0
# Mozilla "intermediate", guidelines 6.0: ECDHE with AEAD ciphers only (TLS 1.2; 1.3 has its own).
CIPHERS = (
    "ECDHE-ECDSA-AES128-GCM-SHA256:ECDHE-RSA-AES128-GCM-SHA256:"
    "ECDHE-ECDSA-AES256-GCM-SHA384:ECDHE-RSA-AES256-GCM-SHA384:"
    "ECDHE-ECDSA-CHACHA20-POLY1305:ECDHE-RSA-CHACHA20-POLY1305"
)
UPSTREAM = "callbridge_backend"

_NAME = re.compile(r"^(\*\.)?\.?[A-Za-z0-9_-]+(\.[A-Za-z0-9_-]+)*(\.\*)?$")
_LISTEN = re.compile(r"^((\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9.-]+):)?(\d{1,5})$")
_UPSTREAM = re.compile(r"^(\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9.-]+):(\d{1,5})$")
_UNSAFE = re.compile(r"[\s;{}\"'#$\\]")


def parse_version(text: str) -> Version:
    """`1.22.1`, `3.0.19`, `1.1.1w`, `3.5` → a comparable triple."""
    match = re.match(r"\s*v?(\d+)(?:\.(\d+))?(?:\.(\d+))?", text)
    if match is None:
        raise ValueError(f"not a version: {text!r}")
    return (int(match[1]), int(match[2] or 0), int(match[3] or 0))


def format_version(version: Version | None) -> str:
    return "unknown" if version is None else ".".join(str(part) for part in version)


def _seconds(value: float) -> str:
    """An nginx time: whole seconds when exact, milliseconds otherwise."""
    if float(value).is_integer():
        return f"{int(value)}s"
    return f"{round(value * 1000)}ms"


def _size(value: int) -> str:
    return f"{value // 1024}k" if value % 1024 == 0 else str(value)


def _port(listen: str) -> int:
    match = _LISTEN.match(listen)
    if match is None:
        raise ValueError(f"not a listen address: {listen!r} (443, 127.0.0.1:8443, [::]:443)")
    return int(match[3])


@dataclass(frozen=True)
class Deployment:
    """Everything the rendered configuration depends on.

    Build it with `from_settings` so that the upstream port, the ping interval and the body
    limit come from the same settings the service runs with: the proxy's idle timeout is only
    safe relative to the service's ping interval.
    """

    server_names: tuple[str, ...]
    certificate: str = ""
    certificate_key: str = ""
    upstreams: tuple[str, ...] = ("127.0.0.1:5006",)
    ping_interval: float = 20.0
    proxy_timeout_override: float | None = None
    nginx_version: Version = DEFAULT_NGINX
    openssl_version: Version | None = None
    metrics_allow: tuple[str, ...] = ()
    acme_root: str = "/var/www/letsencrypt"
    https_listen: tuple[str, ...] = ("443", "[::]:443")
    http_listen: tuple[str, ...] = ("80", "[::]:80")
    max_body_bytes: int = 256 * 1024
    log_dir: str = "/var/log/nginx"
    http_only: bool = False

    def __post_init__(self) -> None:
        if not self.server_names:
            raise ValueError("at least one server name is needed")
        for name in self.server_names:
            if not _NAME.match(name):
                raise ValueError(f"not a server name: {name!r}")
        if not self.upstreams:
            raise ValueError("at least one upstream (host:port) is needed")
        for upstream in self.upstreams:
            if not _UPSTREAM.match(upstream):
                raise ValueError(f"not an upstream host:port: {upstream!r}")
        for listen in (*self.https_listen, *self.http_listen):
            _port(listen)
        if not self.https_listen or not self.http_listen:
            raise ValueError("both the https and the http server need a listen address")
        if not self.http_only and not (self.certificate and self.certificate_key):
            raise ValueError("a certificate and its key are needed (or render --http-only)")
        for what, path in (
            ("certificate", self.certificate),
            ("key", self.certificate_key),
            ("ACME root", self.acme_root),
            ("log directory", self.log_dir),
        ):
            if _UNSAFE.search(path):
                raise ValueError(f"{what} path {path!r} has a character nginx would misread")
        for cidr in self.metrics_allow:
            ipaddress.ip_network(cidr, strict=False)  # raises ValueError with the reason
        if self.ping_interval < 0:
            raise ValueError("the ping interval cannot be negative")
        if self.max_body_bytes < 1:
            raise ValueError("the body limit must be positive")
        if self.proxy_timeout_override is not None and (
            self.proxy_timeout_override <= 0 or self.proxy_timeout_override < 2 * self.ping_interval
        ):
            raise ValueError(
                f"proxy timeout {self.proxy_timeout_override:g} s must be at least twice the "
                f"ping interval ({self.ping_interval:g} s), or idle WebSockets get cut"
            )

    @classmethod
    def from_settings(
        cls, settings: Settings, server_names: Sequence[str], **changes: Any
    ) -> Deployment:
        """Defaults from the service's settings (port, ping interval, body limit) and Let's
        Encrypt's paths for the first name; `changes` that are not None win."""
        names = tuple(server_names)
        first = names[0] if names else "example.com"
        changes = {key: value for key, value in changes.items() if value is not None}
        return cls(
            server_names=names,
            **{
                "upstreams": (f"127.0.0.1:{settings.port}",),
                "ping_interval": settings.ws_ping_interval,
                "max_body_bytes": settings.webhook_max_bytes,
                "certificate": f"/etc/letsencrypt/live/{first}/fullchain.pem",
                "certificate_key": f"/etc/letsencrypt/live/{first}/privkey.pem",
                **changes,
            },
        )

    @property
    def proxy_timeout(self) -> float:
        """max(75 s, 3 x ping): two pings may be lost before nginx gives up on a quiet socket."""
        if self.proxy_timeout_override is not None:
            return self.proxy_timeout_override
        return max(MIN_PROXY_TIMEOUT, float(math.ceil(3 * self.ping_interval)))

    @property
    def http2_directive(self) -> bool:
        return self.nginx_version >= HTTP2_DIRECTIVE_SINCE

    @property
    def mlkem(self) -> bool:
        return self.openssl_version is not None and self.openssl_version >= MLKEM_OPENSSL_SINCE

    @property
    def https_port(self) -> int:
        return _port(self.https_listen[0])


@dataclass(frozen=True)
class Rendered:
    """The two files, keyed by their path under the nginx configuration directory."""

    http: str
    server: str

    def files(self) -> dict[str, str]:
        return {HTTP_FILE: self.http, SERVER_FILE: self.server}


def _lines(text: str) -> str:
    """Template text → config text: the template's first newline dropped, blank runs kept."""
    return text.removeprefix("\n")


HEADER = """
# callbridge: %(what)s
# Generated by `callbridge nginx render`: render it again rather than edit it.
# For nginx %(nginx)s with OpenSSL %(openssl)s; CALLBRIDGE_WS_PING_INTERVAL=%(ping)s s.
"""

HTTP_TEMPLATE = """
# Install as /etc/nginx/conf.d/callbridge.conf. Debian's nginx.conf includes conf.d/*.conf inside
# http {}, the only context where map, upstream and log_format are allowed ("map" inside a
# server {} makes nginx -t fail).

# WebSocket-only maps, named for callbridge. `Upgrade: websocket` from a client becomes
# `Upgrade: websocket` + `Connection: upgrade` towards callbridge; any other request (no Upgrade,
# or h2c) sends neither header, which keeps upstream keepalive working and stops h2c smuggling.
# Not the usual $connection_upgrade: another file defining that name would silently win (nginx
# uses the definition loaded last).
map $http_upgrade $callbridge_connection {
    default          "";
    "~*^websocket$"  upgrade;
}
map $http_upgrade $callbridge_upgrade {
    default          "";
    "~*^websocket$"  websocket;
}

# The callbridge instances. max_fails/fail_timeout take an instance that stops answering out of
# rotation for 10 s; the WebSockets it held are gone with it, and clients reconnect elsewhere.
# keepalive reuses connections for plain requests (an upgraded connection is never reused).
%(balance_note)supstream callbridge_backend {
%(balance)s%(servers)s
    keepalive 16;
}

# Access log for diagnosis. A WebSocket is one line with status 101, written when it closes, and
# $request_time is its lifetime: lifetimes that end at proxy_read_timeout are idle sockets being
# cut. $uri rather than $request: the query is left out, because browser tokens travel in it.
log_format callbridge_ws '$remote_addr [$time_local] "$request_method $uri $server_protocol" '
                         '$status $body_bytes_sent rt=$request_time '
                         'upstream=$upstream_addr upstream_status=$upstream_status '
                         'upgrade="$http_upgrade" conn=$connection reqs=$connection_requests '
                         '"$http_user_agent"';
"""

LEAST_CONN_NOTE = """\
# least_conn counts open WebSockets as active connections, so a new socket goes to the instance
# holding the fewest (round robin would ignore them).
"""

# The same lines in every proxied location: a location's own proxy_set_header drops every
# inherited one, so nothing is set at server level to be inherited.
PROXY = """
        proxy_pass http://callbridge_backend;
        proxy_http_version 1.1;
        proxy_set_header Host $host;
        proxy_set_header X-Real-IP $remote_addr;
        proxy_set_header X-Forwarded-For $proxy_add_x_forwarded_for;
        proxy_set_header X-Forwarded-Proto $scheme;
        proxy_set_header Upgrade $callbridge_upgrade;
        proxy_set_header Connection $callbridge_connection;"""

HTTP_SERVER = """
# Plain HTTP serves Let's Encrypt's HTTP-01 challenges (certbot --webroot, for the first
# certificate and every renewal) and sends everything else to https. WebSocket clients never
# follow redirects: they must use wss:// from the start.
server {
%(listen)s
    server_name %(names)s;
    server_tokens off;

    location ^~ /.well-known/acme-challenge/ {
        root %(acme_root)s;
    }
    location / {
        return 301 %(redirect)s;
    }
}
"""

HTTP2_LISTEN_PARAMETER = """
    # HTTP/2 for pages and API calls, with the `listen ... http2` syntax: nginx < 1.25.1 has no
    # `http2 on;`. Browsers still open WebSockets over HTTP/1.1, on a connection of their own
    # (nginx has no RFC 8441), and this listener takes those too.
%(listen)s"""

HTTP2_DIRECTIVE = """
    # HTTP/2 for pages and API calls (`http2 on;`: nginx >= 1.25.1). Browsers still open
    # WebSockets over HTTP/1.1, on a connection of their own (nginx has no RFC 8441), and this
    # listener takes those too.
%(listen)s
    http2 on;"""

PINGS_ON = """
    # Backstop for idle WebSockets, not their liveness check: callbridge pings every %(ping)s s
    # (CALLBRIDGE_WS_PING_INTERVAL) and any frame, either way, resets nginx's timer, so only a
    # dead peer lets it expire. max(75 s, 3 x the ping interval) allows for lost pings; much
    # larger values let dead peers linger and keep old workers alive after a reload. Render
    # again when the ping interval changes."""

PINGS_OFF = """
    # CALLBRIDGE_WS_PING_INTERVAL is 0: callbridge sends no pings, so a WebSocket that stays
    # quiet for %(timeout)s is cut without a close frame (browsers see 1006). Turn pings on
    # (every 20 s) rather than raising this."""

TICKETS_OFF = """
    # nginx < 1.23.2 never rotates its session ticket key, which would undo forward secrecy.
    ssl_session_tickets off;"""

WEBSOCKET_LOCATION = """

    # %(what)s
    location ~ ^/%(name)s/?$ {
        rewrite ^(/%(name)s)/$ $1 break;%(proxy)s
    }"""

HTTPS_SERVER = """
server {%(http2)s
    server_name %(names)s;
    server_tokens off;

    # TLS: Mozilla "intermediate" (guidelines 6.0), filtered for the OpenSSL nginx runs with.
    ssl_certificate     %(certificate)s;
    ssl_certificate_key %(certificate_key)s;
    # Always set here: Debian's nginx.conf still enables TLSv1 and TLSv1.1 at http level.
    ssl_protocols TLSv1.2 TLSv1.3;
    # %(curve_note)s
    ssl_ecdh_curve %(curves)s;
    ssl_ciphers %(ciphers)s;
    ssl_prefer_server_ciphers off;
    ssl_session_timeout 1d;
    ssl_session_cache shared:CallbridgeSSL:10m;%(tickets)s
    # No OCSP stapling: Let's Encrypt certificates carry no OCSP URL since 2025-05-07.

    # HSTS, `always` so that error pages carry it too. No location has an add_header of its own:
    # it would drop this one.
    add_header Strict-Transport-Security "max-age=63072000" always;

    access_log %(log_dir)s/callbridge.access.log callbridge_ws;
%(liveness)s
    proxy_read_timeout %(timeout)s;
    proxy_send_timeout %(timeout)s;

    # Every location repeats the same proxy lines, because a proxy_set_header in a location drops
    # all inherited ones. HTTP/1.1 is needed by WebSockets and by upstream keepalive (nginx
    # < 1.29.7 speaks 1.0 by default). Upgrade and Connection come from the WebSocket-only maps.
    # X-Forwarded-For and -Proto tell callbridge the client's address and that it came over
    # https (it trusts them from 127.0.0.1 only). proxy_pass has no URI part, so callbridge sees
    # each path as the client sent it.

    # REST API and Telnyx webhooks. The body limit is CALLBRIDGE_WEBHOOK_MAX_BYTES, so a larger
    # body gets the same 413 from nginx that callbridge would give.
    location /api/ {
        client_max_body_size %(max_body)s;%(proxy)s
    }

    # Prometheus metrics: from this host and the listed scrapers only.
    location = /metrics {
        allow 127.0.0.1;
        allow ::1;%(metrics_allow)s
        deny all;%(proxy)s
    }

    # The WebSockets. Each regex takes the path with or without a trailing slash (a WebSocket
    # client does not follow a 301), and the rewrite hands callbridge the exact path, query kept.
    # No proxy_buffering off: it does nothing to an upgraded connection.%(websockets)s

    # The console's files.
    location /static/ {%(proxy)s
    }

    # The console page, and callbridge's other routes.
    location / {%(proxy)s
    }
}
"""

SERVER_INTRO = """
# Install as /etc/nginx/sites-available/callbridge.conf and link it from sites-enabled/. It needs
# conf.d/callbridge.conf (the maps, the upstream and the log format).
"""

BOOTSTRAP_INTRO = """
# Enough for certbot --webroot to get the first certificate. Render again without --http-only
# once it exists.
"""

SINGLE_FILE = """
# callbridge: single-file form, for nginx -p PREFIX -c THIS_FILE (nginx -t, trials, tests).
pid %(prefix)s/nginx.pid;
error_log %(prefix)s/error.log info;
daemon off;
worker_processes 1;
%(shutdown)sevents {
    worker_connections 1024;
}
http {
    client_body_temp_path %(prefix)s/client_body_temp;
    proxy_temp_path %(prefix)s/proxy_temp;
    fastcgi_temp_path %(prefix)s/fastcgi_temp;
    uwsgi_temp_path %(prefix)s/uwsgi_temp;
    scgi_temp_path %(prefix)s/scgi_temp;
    access_log %(prefix)s/access.log;

%(http)s
%(server)s}
"""


def _header(deployment: Deployment, what: str) -> str:
    return _lines(HEADER) % {
        "what": what,
        "nginx": format_version(deployment.nginx_version),
        "openssl": format_version(deployment.openssl_version),
        "ping": f"{deployment.ping_interval:g}",
    }


def render_http(deployment: Deployment) -> str:
    """The http-context part: maps, the upstream and the diagnostic log format."""
    several = len(deployment.upstreams) > 1
    servers = "\n".join(
        f"    server {upstream} max_fails=3 fail_timeout=10s;" for upstream in deployment.upstreams
    )
    return _header(deployment, "the http-context part (maps, upstream, log format).") + (
        HTTP_TEMPLATE
        % {
            "balance_note": LEAST_CONN_NOTE if several else "",
            "balance": "    least_conn;\n" if several else "",
            "servers": servers,
        }
    )


def _listen(addresses: tuple[str, ...], parameters: str) -> str:
    return "\n".join(f"    listen {address}{parameters};" for address in addresses)


def _http_server(deployment: Deployment) -> str:
    port = deployment.https_port
    return _lines(HTTP_SERVER) % {
        "listen": _listen(deployment.http_listen, ""),
        "names": " ".join(deployment.server_names),
        "acme_root": deployment.acme_root,
        "redirect": "https://$host" + ("" if port == 443 else f":{port}") + "$request_uri",
    }


def _https_server(deployment: Deployment) -> str:
    timeout = _seconds(deployment.proxy_timeout)
    if deployment.http2_directive:
        http2 = HTTP2_DIRECTIVE % {"listen": _listen(deployment.https_listen, " ssl")}
    else:
        http2 = HTTP2_LISTEN_PARAMETER % {"listen": _listen(deployment.https_listen, " ssl http2")}
    openssl = format_version(deployment.openssl_version)
    if deployment.mlkem:
        curves = "X25519MLKEM768:X25519:prime256v1:secp384r1"
        curve_note = f"X25519MLKEM768 (post-quantum) first: OpenSSL {openssl} has it (>= 3.5)."
    else:
        curves = "X25519:prime256v1:secp384r1"
        curve_note = f"No X25519MLKEM768: it needs OpenSSL >= 3.5, and nginx runs with {openssl}."
    if deployment.ping_interval > 0:
        liveness = PINGS_ON % {"ping": f"{deployment.ping_interval:g}"}
    else:
        liveness = PINGS_OFF % {"timeout": timeout}
    websockets = "".join(
        WEBSOCKET_LOCATION % {"name": path.lstrip("/"), "what": what, "proxy": PROXY}
        for path, what in zip(
            WEBSOCKET_PATHS,
            (
                "Call events to browsers.",
                "Telnyx's media socket (its token comes in a header, passed as is).",
                "Call audio to browsers, and their microphone back into the call.",
            ),
            strict=True,
        )
    )
    metrics_allow = "".join(
        f"\n        allow {ipaddress.ip_network(cidr, strict=False)};"
        for cidr in deployment.metrics_allow
    )
    return _lines(HTTPS_SERVER) % {
        "http2": http2,
        "names": " ".join(deployment.server_names),
        "certificate": deployment.certificate,
        "certificate_key": deployment.certificate_key,
        "curve_note": curve_note,
        "curves": curves,
        "ciphers": CIPHERS,
        "tickets": TICKETS_OFF if deployment.nginx_version < TICKET_KEY_ROTATION_SINCE else "",
        "log_dir": deployment.log_dir,
        "liveness": liveness,
        "timeout": timeout,
        "max_body": _size(deployment.max_body_bytes),
        "metrics_allow": metrics_allow,
        "websockets": websockets,
        "proxy": PROXY,
    }


def render_server(deployment: Deployment) -> str:
    """The servers: port 80 (ACME challenges, redirect) and, unless bootstrapping, https."""
    if deployment.http_only:
        return (
            _header(deployment, "bootstrap server, plain HTTP only (--http-only).")
            + BOOTSTRAP_INTRO
            + "\n"
            + _http_server(deployment)
        )
    return (
        _header(deployment, "the servers (port 80, and https).")
        + SERVER_INTRO
        + "\n"
        + _http_server(deployment)
        + "\n"
        + _https_server(deployment)
    )


def render(deployment: Deployment) -> Rendered:
    return Rendered(http=render_http(deployment), server=render_server(deployment))


def _indent(text: str) -> str:
    return "".join(f"    {line}" if line.strip() else line for line in text.splitlines(True))


def render_single_file(
    deployment: Deployment, prefix: Path | str, *, worker_shutdown_timeout: float | None = None
) -> str:
    """Main context + `http { both parts }`, every path under `prefix`: for `nginx -p PREFIX -c
    FILE` (in the foreground), so the configuration can be tried without touching /etc/nginx.

    `worker_shutdown_timeout` caps how long old workers keep WebSockets open after a reload."""
    rendered = render(dataclasses.replace(deployment, log_dir=str(prefix)))
    shutdown = ""
    if worker_shutdown_timeout is not None:
        shutdown = f"worker_shutdown_timeout {_seconds(worker_shutdown_timeout)};\n"
    return _lines(SINGLE_FILE) % {
        "prefix": prefix,
        "shutdown": shutdown,
        "http": _indent(rendered.http),
        "server": _indent(rendered.server),
    }


# --- what the local nginx is ---------------------------------------------------------------


@dataclass(frozen=True)
class NginxBuild:
    """What `nginx -V` (and `openssl version`) said; None where it could not tell."""

    binary: str | None
    version: Version | None
    openssl: Version | None


def find_nginx() -> str | None:
    """nginx lives in /usr/sbin on Debian, which is not on a normal user's PATH."""
    found = shutil.which("nginx")
    if found is None and Path("/usr/sbin/nginx").exists():
        found = "/usr/sbin/nginx"
    return found


def _run_version(command: list[str]) -> str:
    try:
        done = subprocess.run(  # noqa: S603 - a fixed command: nginx -V or openssl version
            command, capture_output=True, text=True, timeout=10, check=False
        )
    except (OSError, subprocess.SubprocessError):
        return ""
    return done.stdout + done.stderr


def parse_nginx_v(text: str) -> tuple[Version | None, Version | None]:
    """(nginx version, OpenSSL version) from `nginx -V` output. The OpenSSL nginx runs with is
    the one that decides which groups work, so "running with" wins over "built with"."""
    version = re.search(r"nginx version: [^/\s]+/(\d+\.\d+\.\d+)", text)
    running = re.search(r"running with OpenSSL (\d+\.\d+\.\d+)", text)
    built = re.search(r"built with OpenSSL (\d+\.\d+\.\d+)", text)
    openssl = running or built
    return (
        parse_version(version[1]) if version else None,
        parse_version(openssl[1]) if openssl else None,
    )


def detect_nginx(binary: str | None = None) -> NginxBuild:
    """Ask the local nginx for its version and OpenSSL; fall back on `openssl version`."""
    binary = binary or find_nginx()
    version: Version | None = None
    openssl: Version | None = None
    if binary is not None:
        version, openssl = parse_nginx_v(_run_version([binary, "-V"]))
    if openssl is None and (tool := shutil.which("openssl")) is not None:
        match = re.search(r"OpenSSL (\d+\.\d+\.\d+)", _run_version([tool, "version"]))
        openssl = parse_version(match[1]) if match else None
    return NginxBuild(binary=binary, version=version, openssl=openssl)


# --- nginx -t --------------------------------------------------------------------------------


@dataclass(frozen=True)
class CheckResult:
    ok: bool
    what: str  # the command, and how the configuration under test differs from the real one
    output: str  # nginx's own words


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _nginx_t(arguments: list[str], binary: str | None) -> tuple[int, str]:
    binary = binary or find_nginx()
    if binary is None:
        return 127, "nginx is not installed (Debian: apt-get install nginx)"
    command = [binary, "-t", *arguments]
    try:
        done = subprocess.run(  # noqa: S603 - nginx itself, with paths we chose
            command, capture_output=True, text=True, timeout=60, check=False
        )
    except (OSError, subprocess.SubprocessError) as exc:
        return 126, f"{' '.join(command)}: {exc}"
    return done.returncode, done.stdout + done.stderr


def check_in_scratch_prefix(deployment: Deployment, binary: str | None = None) -> CheckResult:
    """`nginx -t` on the single-file form in a temporary prefix: the real certificate, key and
    directives, nothing of /etc/nginx touched. `nginx -t` binds the listen addresses, and only
    root may bind ports below 1024, so other users test on free ports of 127.0.0.1 instead."""
    what = "single-file form in a temporary prefix"
    if os.geteuid() != 0:
        deployment = dataclasses.replace(
            deployment,
            https_listen=(f"127.0.0.1:{_free_port()}",),
            http_listen=(f"127.0.0.1:{_free_port()}",),
        )
        what += ", listening on free ports of 127.0.0.1 (not root)"
    with tempfile.TemporaryDirectory(prefix="callbridge-nginx-") as scratch:
        conf = Path(scratch) / "nginx.conf"
        conf.write_text(render_single_file(deployment, scratch))
        code, output = _nginx_t(["-p", scratch, "-c", str(conf)], binary)
        output += _quote_lines(output, conf)
    return CheckResult(code == 0, what, output)


def _quote_lines(output: str, conf: Path) -> str:
    """nginx names lines of a file that is about to vanish: quote them."""
    lines = conf.read_text().splitlines()
    quoted = []
    for number in dict.fromkeys(re.findall(re.escape(str(conf)) + r":(\d+)", output)):
        index = int(number) - 1
        if 0 <= index < len(lines):
            quoted.append(f"line {number} of the tested file: {lines[index].strip()}")
    return "".join(f"\n{line}" for line in quoted)


def check_in_place(nginx_conf: Path, binary: str | None = None) -> CheckResult:
    """`nginx -t` on the host's own configuration, with whatever else it includes (a second
    `upstream callbridge_backend`, say)."""
    code, output = _nginx_t(["-c", str(nginx_conf)], binary)
    return CheckResult(code == 0, f"nginx -t -c {nginx_conf}", output)
