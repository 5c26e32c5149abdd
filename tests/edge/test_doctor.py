"""`callbridge doctor` against real nginx in front of a real callbridge, on 127.0.0.1 only.

One nginx serves several deliberately different server blocks, each on its own port: a correct
proxy (with a plain-HTTP redirect and HSTS), one that drops Upgrade/Connection, one whose backend
is down, one without a route for the WebSocket paths, one with an expired certificate, and one in
front of a service that never pings. `proxy_read_timeout 2s` everywhere keeps the idle test short.
"""

from __future__ import annotations

import dataclasses
import importlib.util
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest

from callbridge.edge import doctor_local
from callbridge.edge.doctor import (
    DEFAULT_PATHS,
    DoctorOptions,
    Report,
    Status,
    parse_target,
    run_doctor,
)
from callbridge.edge.doctor_explain import (
    explain_close,
    fingerprint,
    idle_budget,
    nearest_idle_limit,
)
from callbridge.edge.doctor_tls import host_matches, parse_certificate
from tests.conftest import API_KEY, ServiceProcess, free_port, running_service
from tests.edge.nginxproc import (
    NginxProcess,
    http_paths,
    main_context,
    running_nginx,
    self_signed,
)

READ_TIMEOUT = "2s"  # nginx's idle limit for these tests; pings every 0.5 s beat it
SERVERS = ("good", "http", "no_upgrade", "down", "wrong_path", "expired", "silent")


def _proxy(backend: int, *, upgrade: bool = True) -> str:
    """A location body; `upgrade=False` is the classic mistake: no Upgrade/Connection headers."""
    lines = [
        f"proxy_pass http://127.0.0.1:{backend};",
        "proxy_http_version 1.1;",
        "proxy_set_header Host $host;",
        "proxy_set_header X-Forwarded-For $proxy_add_x_forwarded_for;",
        "proxy_set_header X-Forwarded-Proto $scheme;",
        f"proxy_read_timeout {READ_TIMEOUT};",
    ]
    if upgrade:
        lines += [
            "proxy_set_header Upgrade $doctor_upgrade;",
            "proxy_set_header Connection $doctor_connection;",
        ]
    return "\n            ".join(lines)


def _tls_server(port: int, cert: tuple[Path, Path], body: str) -> str:
    return f"""
    server {{
        listen 127.0.0.1:{port} ssl http2;
        ssl_certificate {cert[0]};
        ssl_certificate_key {cert[1]};
        {body}
    }}"""


def _config(
    prefix: Path,
    ports: dict[str, int],
    cert: tuple[Path, Path],
    expired: tuple[Path, Path],
    pinging: int,
    silent: int,
) -> str:
    closed = free_port()  # nothing listens there: the "backend down" server points at it
    hsts = 'add_header Strict-Transport-Security "max-age=63072000" always;'
    servers = [
        _tls_server(ports["good"], cert, f"{hsts}\n location / {{ {_proxy(pinging)} }}"),
        f"""
    server {{
        listen 127.0.0.1:{ports["http"]};
        return 301 https://$host:{ports["good"]}$request_uri;
    }}""",
        _tls_server(
            ports["no_upgrade"], cert, f"location / {{ {_proxy(pinging, upgrade=False)} }}"
        ),
        _tls_server(ports["down"], cert, f"location / {{ {_proxy(closed)} }}"),
        _tls_server(
            ports["wrong_path"],
            cert,
            f"location /api/ {{ {_proxy(pinging)} }}\n        location / {{ return 404; }}",
        ),
        _tls_server(ports["expired"], expired, f"location / {{ {_proxy(pinging)} }}"),
        _tls_server(ports["silent"], cert, f"location / {{ {_proxy(silent)} }}"),
    ]
    return (
        main_context(prefix)
        + "http {\n"
        + http_paths(prefix)
        + """
    map $http_upgrade $doctor_connection { default ""; "~*^websocket$" upgrade; }
    map $http_upgrade $doctor_upgrade { default ""; "~*^websocket$" websocket; }
    ssl_protocols TLSv1.2 TLSv1.3;
"""
        + "".join(servers)
        + "\n}\n"
    )


@dataclasses.dataclass
class Edge:
    nginx: NginxProcess
    ports: dict[str, int]
    ca: Path
    expired_ca: Path
    pinging: ServiceProcess
    silent: ServiceProcess

    def url(self, server: str, host: str = "127.0.0.1") -> str:
        return f"https://{host}:{self.ports[server]}"

    def options(self, server: str, **overrides: Any) -> DoctorOptions:
        """The doctor as an operator with an API key runs it (it mints its own token)."""
        values: dict[str, Any] = {
            "ca": self.ca,
            "timeout": 5.0,
            "quick": True,
            "api_key": API_KEY,
            **overrides,
        }
        return DoctorOptions(self.url(server), **values)


@pytest.fixture(scope="module")
def edge(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Edge]:
    tmp = tmp_path_factory.mktemp("doctor")
    for name in ("pinging", "silent", "nginx", "certs", "expired"):
        (tmp / name).mkdir()
    cert = self_signed(tmp / "certs", "localhost", days=30)
    expired = self_signed(tmp / "expired", "localhost", days=-5)
    ports = {name: free_port() for name in SERVERS}
    with (
        running_service(tmp / "pinging", CALLBRIDGE_WS_PING_INTERVAL="0.5") as pinging,
        running_service(tmp / "silent", CALLBRIDGE_WS_PING_INTERVAL="0") as silent,
    ):
        config = _config(tmp / "nginx", ports, cert, expired, pinging.port, silent.port)
        with running_nginx(tmp / "nginx", config, *ports.values()) as nginx:
            yield Edge(nginx, ports, cert[0], expired[0], pinging, silent)


def _statuses(report: Report) -> dict[str, Status]:
    return {check.name: check.status for check in report.checks}


# --- End to end, through nginx -------------------------------------------------------------


def test_correct_proxy_passes_every_check_as_a_subprocess(edge: Edge) -> None:
    """The real command, as an operator runs it: exit 0, every step PASS or INFO."""
    result = subprocess.run(
        [
            sys.executable, "-m", "callbridge", "doctor", edge.url("good"),
            "--ca", str(edge.ca), "--http-port", str(edge.ports["http"]),
            "--idle", "3", "--timeout", "5", "--api-key", API_KEY, "--json",
        ],
        capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip
    assert result.returncode == 0, result.stdout + result.stderr
    report = orjson.loads(result.stdout)
    assert report["ok"] is True
    by_name = {check["name"]: check for check in report["checks"]}
    assert {c["status"] for c in report["checks"]} <= {"PASS", "INFO"}, result.stdout
    for path in DEFAULT_PATHS:
        check = by_name[f"WebSocket {path}"]
        assert check["status"] == "PASS"
        assert check["data"]["handshake"]["status"] == 101
        assert "not 101" in check["data"]["control"]
    welcome = by_name["/call-events welcome"]
    assert welcome["status"] == "PASS"
    assert welcome["data"]["welcome"]["type"] == "welcome"
    assert welcome["data"]["welcome"]["ping_interval"] == 0.5
    assert by_name["/frontend-audio route"]["status"] == "PASS"
    assert "4404" in by_name["/frontend-audio route"]["evidence"]
    assert by_name["POST /api/tokens"]["status"] == "PASS"
    assert by_name["HTTP → HTTPS"]["status"] == "PASS"
    assert by_name["HSTS"]["status"] == "PASS"
    assert by_name["TLS chain"]["status"] == "PASS"
    assert by_name["TLS ALPN http/1.1"]["status"] == "PASS"
    assert by_name["close handshake"]["status"] == "PASS"
    assert by_name["idle"]["status"] == "PASS"
    assert by_name["intermediaries"]["data"]["found"][0]["name"] == "nginx"


def test_the_table_names_the_verdict(edge: Edge) -> None:
    """Without --json: the Rich table, and exit 1 when a check fails."""
    result = subprocess.run(
        [sys.executable, "-m", "callbridge", "doctor", edge.url("down"), "--ca", str(edge.ca),
         "--quick", "--timeout", "5"],
        capture_output=True, text=True, timeout=60, check=False,
        env={**os.environ, "COLUMNS": "200"},
    )  # fmt: skip
    assert result.returncode == 1, result.stdout + result.stderr
    assert "FAIL" in result.stdout
    assert "Backend down" in result.stdout
    assert "FAILED" in result.stdout


async def test_a_proxy_that_drops_upgrade_is_explained(edge: Edge) -> None:
    report = await run_doctor(edge.options("no_upgrade"))
    assert not report.ok
    assert report.named("GET /api/health").status is Status.PASS  # the proxy itself works
    for path in DEFAULT_PATHS:
        check = report.named(f"WebSocket {path}")
        assert check.status is Status.FAIL
        # callbridge answers a non-upgrade GET on a WebSocket route with its own JSON 404.
        assert check.data["handshake"]["status"] == 404
        assert "does not forward Upgrade/Connection" in check.cause
        assert "426" in check.cause
    assert report.named("/call-events welcome").status is Status.INFO  # skipped, not piled on


async def test_a_backend_that_is_down_is_explained(edge: Edge) -> None:
    report = await run_doctor(edge.options("down"))
    assert not report.ok
    health = report.named("GET /api/health")
    assert health.status is Status.FAIL
    assert "502" in health.evidence
    for path in DEFAULT_PATHS:
        check = report.named(f"WebSocket {path}")
        assert check.status is Status.FAIL
        assert check.data["handshake"]["status"] == 502
        assert check.cause.startswith("Backend down or unreachable")


async def test_a_path_without_a_route_is_explained(edge: Edge) -> None:
    report = await run_doctor(edge.options("wrong_path"))
    assert not report.ok
    assert report.named("GET /api/health").status is Status.PASS
    check = report.named("WebSocket /call-events")
    assert check.status is Status.FAIL
    assert check.data["handshake"]["status"] == 404
    assert check.cause.startswith("Wrong path")
    assert "nginx" in check.evidence  # nginx's own 404 page, not callbridge's JSON


async def test_an_expired_certificate_fails_tls(edge: Edge) -> None:
    report = await run_doctor(edge.options("expired", ca=edge.expired_ca))
    assert not report.ok
    chain = report.named("TLS chain")
    assert chain.status is Status.FAIL
    assert "expired" in chain.evidence
    assert "--insecure" in chain.cause
    expiry = report.named("TLS expiry")
    assert expiry.status is Status.FAIL
    assert expiry.evidence.startswith("expired")
    names = _statuses(report)
    assert not any(name.startswith("WebSocket") for name in names)  # stopped before them


async def test_insecure_continues_past_a_bad_certificate(edge: Edge) -> None:
    report = await run_doctor(edge.options("expired", ca=None, insecure=True))
    assert not report.ok
    assert report.named("TLS chain").status is Status.FAIL
    assert report.named("WebSocket /call-events").status is Status.PASS
    assert report.named("/call-events welcome").status is Status.PASS


async def test_idle_survives_when_the_server_pings(edge: Edge) -> None:
    report = await run_doctor(edge.options("good", quick=False, idle=5.0))
    idle = report.named("idle")
    assert idle.status is Status.PASS, idle
    assert idle.data["pings"] > 0


async def test_idle_without_server_pings_dies_with_1006_explained(edge: Edge) -> None:
    report = await run_doctor(edge.options("silent", quick=False, idle=5.0))
    assert not report.ok
    welcome = report.named("/call-events welcome")
    assert welcome.status is Status.WARN
    assert "CALLBRIDGE_WS_PING_INTERVAL=0" in welcome.cause
    idle = report.named("idle")
    assert idle.status is Status.FAIL
    assert idle.data["close_code"] == 1006
    assert idle.data["close_frame"] is False
    assert idle.data["pings"] == 0
    assert "without a close frame (1006)" in idle.evidence
    assert "proxy idle timeout" in idle.cause
    assert "proxy_read_timeout" in idle.cause
    assert "CALLBRIDGE_WS_PING_INTERVAL" in idle.cause


async def test_frontend_audio_sends_the_format_of_a_live_call(edge: Edge) -> None:
    with httpx.Client(
        base_url=edge.pinging.url, timeout=10, headers=edge.pinging.api_headers
    ) as api:
        call = api.post("/api/calls", json={"to": "+15550100011"}).json()["data"]
        call_id = call["call_control_id"]
        try:
            report = await run_doctor(
                edge.options("good", ws_paths=("/frontend-audio",), call_control_id=call_id)
            )
        finally:
            api.post(f"/api/calls/{call_id}/hangup")
    check = report.named("/frontend-audio format")
    assert check.status is Status.PASS, check
    assert check.data["format"]["call_control_id"] == call_id
    assert [c.name for c in report.checks if c.name.startswith("WebSocket")] == [
        "WebSocket /frontend-audio"
    ]


async def test_without_credentials_a_token_refusal_proves_the_route(edge: Edge) -> None:
    """No --token, no --api-key: callbridge's 4401 is no proxy failure, only a limit on what
    the doctor can check (the welcome and the idle test)."""
    report = await run_doctor(edge.options("good", api_key=None, quick=False, idle=3.0))
    assert report.ok, report.to_dict()
    welcome = report.named("/call-events welcome")
    assert welcome.status is Status.WARN
    assert "4401" in welcome.evidence
    assert "the route reaches callbridge, which wants a browser token" in welcome.evidence
    assert welcome.cause.startswith("Not a proxy problem")
    assert "--api-key" in welcome.cause
    route = report.named("/frontend-audio route")
    assert route.status is Status.PASS
    assert "4401" in route.evidence
    assert "the route reaches callbridge" in route.evidence
    assert report.named("idle").status is Status.INFO  # nothing to keep open without a token
    assert report.named("close handshake").status is Status.INFO
    for path in DEFAULT_PATHS:
        assert report.named(f"WebSocket {path}").status is Status.PASS
    assert "POST /api/tokens" not in _statuses(report)


async def test_a_refused_token_or_api_key_is_explained_as_such(edge: Edge) -> None:
    report = await run_doctor(edge.options("good", api_key=None, token="not-a-token"))
    assert not report.ok
    for name in ("/call-events welcome", "/frontend-audio route"):
        check = report.named(name)
        assert check.status is Status.FAIL
        assert check.data["close_code"] == 4401
        assert "which wants a valid token" in check.evidence
        assert check.cause.startswith("Not a proxy problem")
    assert report.named("idle").status is Status.INFO

    report = await run_doctor(edge.options("good", api_key="cbk_not-a-key"))
    minted = report.named("POST /api/tokens")
    assert minted.status is Status.FAIL
    assert "401" in minted.evidence
    assert "CALLBRIDGE_API_KEYS" in minted.cause
    assert report.named("/call-events welcome").status is Status.WARN  # went on without one
    # Nothing the doctor prints carries a token it minted.
    report = await run_doctor(edge.options("good"))
    assert report.named("POST /api/tokens").status is Status.PASS
    assert "eyJ" not in orjson.dumps(report.to_dict()).decode()


async def test_an_unknown_call_is_reported(edge: Edge) -> None:
    report = await run_doctor(
        edge.options("good", ws_paths=("/frontend-audio",), call_control_id="v3:no-such-call")
    )
    check = report.named("/frontend-audio format")
    assert check.status is Status.FAIL
    assert "4404" in check.evidence


async def test_local_checks_find_the_service_and_test_nginx(edge: Edge) -> None:
    report = await run_doctor(
        edge.options(
            "good",
            local=True,
            service_port=edge.pinging.port,
            nginx_conf=edge.nginx.conf,
        )
    )
    service = report.named("local: service port")
    assert service.status is Status.PASS, service
    assert service.data["port"] == edge.pinging.port
    nginx_t = report.named("local: nginx -t")
    assert nginx_t.status is Status.PASS, nginx_t
    assert "test is successful" in nginx_t.evidence
    lint = report.named("local: nginx lint")
    if importlib.util.find_spec("callbridge.edge.lint") is None:
        assert lint.status is Status.INFO
    else:  # fed the live service's ping interval (from its welcome) and its port
        assert f"ping interval 0.5 s and backend port {edge.pinging.port}" in lint.evidence


async def test_local_checks_run_without_the_linter(
    edge: Edge, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(doctor_local, "LINT_MODULE", "callbridge.edge.no_such_linter")
    report = await run_doctor(
        edge.options("good", local=True, service_port=edge.pinging.port,
                     nginx_conf=edge.nginx.conf)
    )  # fmt: skip
    lint = report.named("local: nginx lint")
    assert lint.status is Status.INFO
    assert "no nginx linter" in lint.evidence
    assert report.ok


async def test_local_checks_report_a_missing_service_and_a_broken_config(
    edge: Edge, tmp_path: Path
) -> None:
    broken = tmp_path / "nginx.conf"
    broken.write_text(
        main_context(tmp_path)
        + "http {\n"
        + http_paths(tmp_path)
        + "server { listen 127.0.0.1:1; map $http_upgrade $x { default upgrade; } }\n}\n"
    )
    report = await run_doctor(
        edge.options("good", local=True, service_port=free_port(), nginx_conf=broken)
    )
    assert report.named("local: service port").status is Status.FAIL
    nginx_t = report.named("local: nginx -t")
    assert nginx_t.status is Status.FAIL
    assert '"map" directive is not allowed here' in nginx_t.evidence
    assert "http context" in nginx_t.cause


# --- Without the network -------------------------------------------------------------------


def test_targets_are_parsed_and_plain_ws_on_a_public_host_warns() -> None:
    target, check = parse_target("wss://calls.example.com/call-events")
    assert target is not None
    assert (target.tls, target.host, target.port, target.paths) == (
        True,
        "calls.example.com",
        443,
        ["/call-events"],
    )
    assert check.status is Status.PASS
    target, check = parse_target("ws://calls.example.com")
    assert target is not None
    assert target.port == 80
    assert target.paths == list(DEFAULT_PATHS)
    assert check.status is Status.WARN
    assert "wss://" in check.cause
    _, check = parse_target("ws://127.0.0.1:5006")
    assert check.status is Status.PASS  # a loopback address is no public deployment
    target, _ = parse_target("calls.example.com:8443", ("frontend-audio",))
    assert target is not None
    assert (target.tls, target.port, target.paths) == (True, 8443, ["/frontend-audio"])
    target, check = parse_target("ftp://calls.example.com")
    assert target is None
    assert check.status is Status.FAIL


def test_intermediaries_are_recognised_with_their_idle_limits() -> None:
    found = fingerprint([("Server", "cloudflare"), ("CF-RAY", "8a1b")])
    assert [i.name for i in found] == ["Cloudflare"]
    assert idle_budget(found) == 100
    found = fingerprint([("server", "nginx/1.22.1"), ("via", "1.1 vegur")])
    assert {i.name for i in found} == {"nginx", "Heroku router"}
    assert idle_budget(found) == 55
    assert idle_budget(fingerprint([("server", "Caddy")])) == 0  # no idle limit known
    assert idle_budget([]) == 60  # nothing recognised: assume nginx's default


def test_close_codes_and_idle_times_are_explained() -> None:
    assert "TCP closed without a close frame" in explain_close(1006)
    assert "proxy idle timeout" in explain_close(1006)
    assert "keepalive ping timeout" in explain_close(1011)
    assert "no such call" in explain_close(4404, "unknown call_control_id")
    assert "application-defined" in explain_close(4999)
    limit = nearest_idle_limit(60.04)
    assert limit is not None
    assert "nginx" in limit.who
    limit = nearest_idle_limit(101)
    assert limit is not None
    assert "Cloudflare" in limit.who
    limit = nearest_idle_limit(30.5)
    assert limit is not None
    assert limit.lifetime
    assert nearest_idle_limit(2.0) is None


def test_hostnames_match_sans_with_one_label_wildcards(tmp_path: Path) -> None:
    cert, _ = self_signed(tmp_path, "localhost", days=30)
    from cryptography import x509
    from cryptography.hazmat.primitives import serialization

    der = x509.load_pem_x509_certificate(cert.read_bytes()).public_bytes(serialization.Encoding.DER)
    info = parse_certificate(der)
    assert host_matches("localhost", info)
    assert host_matches("127.0.0.1", info)
    assert not host_matches("127.0.0.2", info)
    assert not host_matches("example.com", info)
    info.dns_names = ["*.example.com"]
    assert host_matches("calls.example.com", info)
    assert not host_matches("a.calls.example.com", info)
    assert not host_matches("example.com", info)
