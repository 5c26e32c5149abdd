"""The rendered nginx configuration, judged by real nginx: `nginx -t` for the syntax of each
version, then a running callbridge behind it over wss://, with the simulator playing Telnyx
through the proxy too (webhooks and the media socket), pings against proxy timeouts, and a
reload in the middle of a call."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import os
import shutil
import ssl
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from typer.testing import CliRunner
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed, ConnectionClosedError

from callbridge.audio.g711 import ulaw_encode
from callbridge.cli import app
from callbridge.edge import nginx as nginx_module
from callbridge.edge.nginx import (
    HTTP_FILE,
    SERVER_FILE,
    Deployment,
    check_in_scratch_prefix,
    detect_nginx,
    parse_nginx_v,
    render,
    render_single_file,
)
from callbridge.sim.auth import token_subprotocols
from callbridge.sim.speech import speech_pcm
from tests.conftest import ServiceProcess, free_port, mint_token, running_service
from tests.edge.nginxproc import (
    NginxProcess,
    http_paths,
    main_context,
    running_nginx,
    self_signed,
)
from tests.helpers import EventsClient, call_state_is
from tests.signals import chunks, tone
from tests.ws.audio_client import Listener

WAIT = 15.0
PING = 0.5  # CALLBRIDGE_WS_PING_INTERVAL of the service behind the test nginx
PROXY_TIMEOUT = 2.0  # proxy_read_timeout of the test nginx: four pings fit in it
SPEECH_CALL = "+15550100011"  # the simulator answers, streams speech, plays talk-back; an hour
REPO = Path(__file__).resolve().parents[2]
LOCAL = detect_nginx()


@dataclasses.dataclass
class Edge:
    """callbridge behind nginx on 127.0.0.1: https on one port, plain HTTP on another."""

    service: ServiceProcess
    nginx: NginxProcess
    https_port: int
    http_port: int
    context: ssl.SSLContext
    acme_root: Path

    @property
    def url(self) -> str:
        return f"https://127.0.0.1:{self.https_port}"

    @property
    def wss_url(self) -> str:
        return f"wss://127.0.0.1:{self.https_port}"

    async def ws(self, path: str) -> ClientConnection:
        """A WebSocket through nginx; the client itself never pings, so only the service's
        pings (or real traffic) can keep it alive. Its token travels as a subprotocol, as
        `callbridge.js` sends it: nginx must pass Sec-WebSocket-Protocol both ways."""
        connection = await connect(
            self.wss_url + path,
            ssl=self.context,
            open_timeout=WAIT,
            ping_interval=None,
            subprotocols=token_subprotocols(mint_token()),
        )
        assert connection.subprotocol == "callbridge"
        return connection

    async def events(self, query: str = "") -> EventsClient:
        return EventsClient(await self.ws(f"/call-events{query}"))

    def api(self) -> httpx.AsyncClient:
        return httpx.AsyncClient(
            base_url=self.url, verify=self.context, timeout=WAIT, headers=self.service.api_headers
        )


def deployment_behind(
    cert: Path, key: Path, upstream_port: int, https_port: int, http_port: int, acme: Path
) -> Deployment:
    return Deployment(
        server_names=("localhost",),
        certificate=str(cert),
        certificate_key=str(key),
        upstreams=(f"127.0.0.1:{upstream_port}",),
        ping_interval=PING,
        proxy_timeout_override=PROXY_TIMEOUT,
        nginx_version=LOCAL.version or (1, 22, 1),
        openssl_version=LOCAL.openssl,
        metrics_allow=("127.0.0.2",),
        acme_root=str(acme),
        https_listen=(f"127.0.0.1:{https_port}",),
        http_listen=(f"127.0.0.1:{http_port}",),
    )


@contextlib.contextmanager
def edge(tmp: Path, *, ping: str, through_proxy: bool) -> Iterator[Edge]:
    """A service (pinging every `ping` seconds) and nginx in front of it. `through_proxy`: the
    simulator reaches the service through nginx as Telnyx would (CALLBRIDGE_PUBLIC_URL), and
    trusts the test certificate (SSL_CERT_FILE)."""
    cert, key = self_signed(tmp, "localhost")
    https_port, http_port = free_port(), free_port()
    # nginx running as root serves files as `nobody`, who cannot enter pytest's private tmp.
    acme = Path(tempfile.mkdtemp(prefix="callbridge-acme-"))
    acme.chmod(0o755)
    overrides = {"CALLBRIDGE_WS_PING_INTERVAL": ping}
    if through_proxy:
        overrides |= {
            "CALLBRIDGE_PUBLIC_URL": f"https://127.0.0.1:{https_port}",
            "SSL_CERT_FILE": str(cert),
        }
    with running_service(tmp, **overrides) as service:
        deployment = deployment_behind(cert, key, service.port, https_port, http_port, acme)
        prefix = tmp / "nginx"
        prefix.mkdir()
        config = render_single_file(deployment, prefix, worker_shutdown_timeout=1)
        try:
            with running_nginx(prefix, config, https_port, http_port) as nginx:
                context = ssl.create_default_context(cafile=str(cert))
                yield Edge(service, nginx, https_port, http_port, context, acme)
        finally:
            shutil.rmtree(acme)


@pytest.fixture(scope="module")
def proxied(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Edge]:
    with edge(tmp_path_factory.mktemp("edge"), ping=str(PING), through_proxy=True) as up:
        yield up


# --- nginx -t -----------------------------------------------------------------------------


def directives(text: str) -> list[str]:
    """The configuration's lines without comments or indentation."""
    return [line.strip() for line in text.splitlines() if not line.strip().startswith("#")]


def _nginx_t(tmp_path: Path, deployment: Deployment) -> tuple[str, NginxProcess]:
    text = render_single_file(deployment, tmp_path)
    return text, NginxProcess(tmp_path, text)


def _local_deployment(tmp_path: Path, **changes: Any) -> Deployment:
    cert, key = self_signed(tmp_path, "localhost")
    base = deployment_behind(cert, key, 5006, free_port(), free_port(), tmp_path)
    return dataclasses.replace(base, **changes)


def test_the_listen_http2_syntax_passes_nginx_t(tmp_path: Path) -> None:
    deployment = _local_deployment(
        tmp_path,
        nginx_version=(1, 22, 1),
        upstreams=("127.0.0.1:5006", "127.0.0.1:5016"),
        ping_interval=20.0,
        proxy_timeout_override=None,
    )
    text, nginx = _nginx_t(tmp_path, deployment)
    checked = nginx.test()
    assert checked.returncode == 0, checked.stderr
    lines = directives(text)
    assert f"listen {deployment.https_listen[0]} ssl http2;" in lines
    assert "http2 on;" not in lines
    assert "ssl_session_tickets off;" in lines
    assert "least_conn;" in lines
    assert sum(line.endswith("max_fails=3 fail_timeout=10s;") for line in lines) == 2
    assert "proxy_read_timeout 75s;" in lines
    assert "proxy_send_timeout 75s;" in lines
    assert not [line for line in lines if "$connection_upgrade" in line]
    assert not [line for line in lines if line.startswith("proxy_buffering")]


def test_the_http2_on_syntax_for_nginx_1_25_1_and_later() -> None:
    """Debian 12's nginx rejects `http2 on;`, so the newer syntax is checked as text."""
    base = Deployment(server_names=("calls.example.com",), certificate="/c", certificate_key="/k")
    new = render(dataclasses.replace(base, nginx_version=(1, 26, 0))).server
    assert "    listen 443 ssl;\n    listen [::]:443 ssl;\n    http2 on;\n" in new
    assert not [line for line in directives(new) if "ssl http2" in line]
    assert not [line for line in directives(new) if "ssl_session_tickets" in line]
    boundary = render(dataclasses.replace(base, nginx_version=(1, 25, 0))).server
    assert "    listen 443 ssl http2;\n    listen [::]:443 ssl http2;\n" in boundary
    assert "http2 on;" not in directives(boundary)
    tickets = render(dataclasses.replace(base, nginx_version=(1, 23, 2))).server
    assert not [line for line in directives(tickets) if "ssl_session_tickets" in line]
    assert "ssl_session_tickets off;" in directives(render(base).server)  # 1.22.1 by default


def test_post_quantum_key_exchange_only_with_openssl_3_5(tmp_path: Path) -> None:
    base = Deployment(server_names=("calls.example.com",), certificate="/c", certificate_key="/k")
    assert "ssl_ecdh_curve X25519MLKEM768:X25519:prime256v1:secp384r1;" in (
        render(dataclasses.replace(base, openssl_version=(3, 5, 0))).server
    )
    for old in (None, (3, 0, 19), (3, 4, 9)):
        text = render(dataclasses.replace(base, openssl_version=old)).server
        assert "ssl_ecdh_curve X25519:prime256v1:secp384r1;" in text
    # And real nginx agrees that the filter matters: this OpenSSL has the group or refuses it.
    _, nginx = _nginx_t(tmp_path, _local_deployment(tmp_path, openssl_version=(3, 5, 0)))
    checked = nginx.test()
    has_mlkem = LOCAL.openssl is not None and LOCAL.openssl >= (3, 5, 0)
    assert (checked.returncode == 0) == has_mlkem, checked.stderr
    if not has_mlkem:
        assert "X25519MLKEM768" in checked.stderr


def test_proxy_timeouts_follow_the_ping_interval() -> None:
    base = Deployment(server_names=("calls.example.com",), certificate="/c", certificate_key="/k")
    assert base.proxy_timeout == 75
    assert dataclasses.replace(base, ping_interval=30).proxy_timeout == 90
    assert dataclasses.replace(base, ping_interval=25.2).proxy_timeout == 76
    silent = render(dataclasses.replace(base, ping_interval=0)).server
    assert "proxy_read_timeout 75s;" in silent
    assert "CALLBRIDGE_WS_PING_INTERVAL is 0" in silent
    fast = dataclasses.replace(base, ping_interval=0.5, proxy_timeout_override=1.5)
    assert "proxy_read_timeout 1500ms;" in render(fast).server
    with pytest.raises(ValueError, match="at least twice the ping interval"):
        dataclasses.replace(base, ping_interval=20, proxy_timeout_override=30)


@pytest.mark.parametrize(
    ("changes", "error"),
    [
        ({"server_names": ()}, "at least one server name"),
        ({"server_names": ("calls.example.com;",)}, "not a server name"),
        ({"upstreams": ("127.0.0.1",)}, "not an upstream"),
        ({"metrics_allow": ("10.0.0.0/33",)}, "10.0.0.0/33"),
        ({"certificate": "/etc/x.pem; include /etc/passwd"}, "would misread"),
        ({"https_listen": ("443 ssl",)}, "not a listen address"),
        ({"certificate": ""}, "a certificate and its key"),
    ],
)
def test_inputs_that_would_make_a_wrong_configuration_are_refused(
    changes: dict[str, Any], error: str
) -> None:
    base = Deployment(server_names=("calls.example.com",), certificate="/c", certificate_key="/k")
    with pytest.raises(ValueError, match=error):
        dataclasses.replace(base, **changes)


def test_nginx_and_openssl_versions_are_read_from_nginx_v() -> None:
    debian = (
        "nginx version: nginx/1.22.1\n"
        "built with OpenSSL 3.0.22 25 Aug 2026 (running with OpenSSL 3.0.19 27 Jan 2026)\n"
        "TLS SNI support enabled\n"
    )
    assert parse_nginx_v(debian) == ((1, 22, 1), (3, 0, 19))
    built = "nginx version: nginx/1.26.3\nbuilt with OpenSSL 3.5.1 1 Jul 2025\n"
    assert parse_nginx_v(built) == ((1, 26, 3), (3, 5, 1))
    assert parse_nginx_v("nginx version: openresty/1.25.3.1\nbuilt with LibreSSL 3.9") == (
        (1, 25, 3),
        None,
    )
    assert LOCAL.version is not None  # scripts/test installs nginx
    assert LOCAL.openssl is not None


def test_check_moves_the_listeners_to_free_ports_when_not_root(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """nginx -t binds the listen addresses, and only root may bind 80 and 443."""
    deployment = dataclasses.replace(
        _local_deployment(tmp_path), https_listen=("443", "[::]:443"), http_listen=("80",)
    )
    monkeypatch.setattr(nginx_module.os, "geteuid", lambda: 1000)
    result = check_in_scratch_prefix(deployment)
    assert result.ok, result.output
    assert "free ports of 127.0.0.1" in result.what
    broken = dataclasses.replace(deployment, certificate=str(tmp_path / "missing.pem"))
    failed = check_in_scratch_prefix(broken)
    assert not failed.ok
    assert "cannot load certificate" in failed.output  # nginx's own words
    assert "missing.pem" in failed.output


# --- the CLI ------------------------------------------------------------------------------

EXAMPLE_ARGS = [
    "nginx", "render", "--server-name", "api-calls.example.com", "--nginx-version", "1.22.1",
    "--openssl-version", "3.0.19", "--upstream", "127.0.0.1:5006", "--ping-interval", "20",
]  # fmt: skip


def _cli(args: list[str]) -> Any:
    """The command as an operator runs it, with no CALLBRIDGE_* variable around."""
    cleared = {name: None for name in os.environ if name.startswith(("CALLBRIDGE_", "TELNYX_"))}
    return CliRunner(env=cleared).invoke(app, args)


def test_the_committed_example_is_what_the_command_renders(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """deploy/nginx/ cannot drift from the renderer. Regenerate it with
    `callbridge nginx render <EXAMPLE_ARGS> --out-dir deploy/nginx`."""
    monkeypatch.chdir(tmp_path)  # no .env from the developer's tree
    result = _cli([*EXAMPLE_ARGS, "--out-dir", str(tmp_path / "out")])
    assert result.exit_code == 0, result.output
    for name in (HTTP_FILE, SERVER_FILE):
        committed = (REPO / "deploy" / "nginx" / name).read_text()
        assert (tmp_path / "out" / name).read_text() == committed, f"deploy/nginx/{name}"


def test_render_prints_both_files_and_checks_them(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    cert, key = self_signed(tmp_path, "localhost")
    printed = _cli([*EXAMPLE_ARGS, "--cert", str(cert), "--key", str(key), "--check"])
    assert printed.exit_code == 0, printed.output
    assert "nginx -t: the configuration is valid" in printed.output
    assert f"# ==> {HTTP_FILE} <==\n" in printed.output
    assert f"# ==> {SERVER_FILE} <==\n" in printed.output
    assert f"ssl_certificate     {cert};" in printed.output

    single = tmp_path / "trial" / "nginx.conf"
    written = _cli([*EXAMPLE_ARGS, "--cert", str(cert), "--key", str(key),
                    "--single-file", str(single)])  # fmt: skip
    assert written.exit_code == 0, written.output
    checked = NginxProcess(single.parent, single.read_text()).test()
    assert checked.returncode == 0, checked.stderr


def test_render_check_shows_nginx_errors_and_writes_nothing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    missing = tmp_path / "nowhere" / "fullchain.pem"
    result = _cli([*EXAMPLE_ARGS, "--cert", str(missing), "--key", str(missing), "--check",
                   "--out-dir", str(tmp_path / "out")])  # fmt: skip
    assert result.exit_code == 1
    assert "nginx -t failed" in result.output
    assert "cannot load certificate" in result.output
    assert str(missing) in result.output.replace("\n", "")
    assert not (tmp_path / "out").exists()
    refused = _cli([*EXAMPLE_ARGS, "--upstream", "localhost"])
    assert refused.exit_code == 2
    assert "not an upstream host:port" in refused.output


def test_render_as_root_checks_the_host_configuration_and_puts_files_back(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """With --out-dir on nginx's own directory, root also runs nginx -t on the whole of it: a
    second `upstream callbridge_backend` elsewhere fails there, and the old files come back."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(os, "geteuid", lambda: 0)
    cert, key = self_signed(tmp_path, "localhost")
    etc = tmp_path / "etc-nginx"
    (etc / "conf.d").mkdir(parents=True)
    (etc / "sites-enabled").mkdir()
    (etc / "nginx.conf").write_text(
        main_context(tmp_path) + "http {\n" + http_paths(tmp_path)
        + f"include {etc}/conf.d/*.conf;\ninclude {etc}/sites-enabled/*;\n}}\n"
    )  # fmt: skip
    (etc / HTTP_FILE).write_text("# the previous version\n")
    stale = etc / "sites-enabled" / "stale"
    stale.write_text("upstream callbridge_backend { server 127.0.0.1:1; }\n")
    args = [*EXAMPLE_ARGS, "--cert", str(cert), "--key", str(key), "--check", "--out-dir",
            str(etc), "--listen-https", f"127.0.0.1:{free_port()}",
            "--listen-http", f"127.0.0.1:{free_port()}"]  # fmt: skip
    refused = _cli(args)
    assert refused.exit_code == 1
    assert 'duplicate upstream "callbridge_backend"' in refused.output.replace("\n", " ")
    assert (etc / HTTP_FILE).read_text() == "# the previous version\n"
    assert not (etc / SERVER_FILE).exists()

    stale.unlink()
    accepted = _cli(args)
    assert accepted.exit_code == 0, accepted.output
    assert "with these files is valid" in accepted.output
    assert (etc / HTTP_FILE).read_text().startswith("# callbridge: the http-context part")
    assert "ln -s" in accepted.output  # the site is not enabled yet


# --- through nginx ---------------------------------------------------------------------------


async def test_api_events_redirects_and_metrics_through_nginx(proxied: Edge) -> None:
    async with proxied.api() as api:
        health = await api.get("/api/health")
        assert health.status_code == 200
        assert health.json()["status"] == "ok"
        assert health.headers["strict-transport-security"] == "max-age=63072000"
        assert health.headers["server"] == "nginx"  # server_tokens off: no version
        assert (await api.get("/")).status_code == 200  # the console
        assert (await api.get("/static/callbridge.js")).status_code == 200
        assert (await api.get("/metrics")).status_code == 200  # from 127.0.0.1

    for source, status in (("127.0.0.2", 200), ("127.0.0.3", 403)):  # --metrics-allow 127.0.0.2
        transport = httpx.AsyncHTTPTransport(local_address=source, verify=proxied.context)
        async with httpx.AsyncClient(transport=transport, timeout=WAIT) as other:
            assert (await other.get(f"{proxied.url}/metrics")).status_code == status

    plain = f"http://127.0.0.1:{proxied.http_port}"
    challenge = proxied.acme_root / ".well-known" / "acme-challenge"
    challenge.mkdir(parents=True)
    (challenge / "token-1").write_text("token-1.thumbprint")
    async with httpx.AsyncClient(timeout=WAIT) as http:
        moved = await http.get(f"{plain}/call-events?since=3")
        assert moved.status_code == 301
        assert moved.headers["location"] == f"{proxied.url}/call-events?since=3"
        acme = await http.get(f"{plain}/.well-known/acme-challenge/token-1")
        assert acme.status_code == 200
        assert acme.text == "token-1.thumbprint"

    for path in ("/call-events", "/call-events/?since=0"):  # a trailing slash, and no 301
        async with EventsClient(await proxied.ws(path)) as events:
            welcome = await events.next()
            assert welcome["type"] == "welcome"
            assert welcome["ping_interval"] == PING
            if "since" in path:  # the query made it through the rewrite
                assert (await events.until(lambda m: m["type"] == "replayed"))["from"] == 0
    proxied.service.wait_for_log(
        lambda e: (
            e.get("event") == "callbridge started"
            and e["stream_url"] == f"{proxied.wss_url}/audio-stream"
            and e["webhook_url"] == f"{proxied.url}/api/webhooks/telnyx"
        )
    )


async def test_a_call_through_nginx_audio_both_ways(proxied: Edge) -> None:
    """Telnyx's webhooks and media socket, the browser's events, audio and microphone: every
    leg crosses nginx."""
    async with proxied.api() as api, await proxied.events() as events:
        await events.next()
        dialled = await api.post("/api/calls", json={"to": SPEECH_CALL})
        assert dialled.status_code == 201, dialled.text
        call_id = dialled.json()["data"]["call_control_id"]
        await events.until(call_state_is(call_id, "answered"))  # a webhook, through nginx
        started = await events.until(  # the media socket, through nginx
            lambda m: m.get("type") == "media.started" and m["call_control_id"] == call_id
        )
        assert started["payload"]["encoding"] == "PCMU"

        listener = Listener(await proxied.ws(f"/frontend-audio?call_control_id={call_id}"))
        announced = await listener.message("format")
        while announced["codec"] is None:
            announced = await listener.message("format")
        inbound = [f for f in await listener.frames_until(30) if f.track == 0]
        speech = speech_pcm(8000)
        for frame in inbound:  # the simulator's speech sample, bit-exact, in order
            offset = ((frame.chunk - 1) * 320) % (len(speech) - len(speech) % 320)
            assert frame.payload == ulaw_encode(speech[offset : offset + 320])

        await listener.send_json({"type": "talk.start", "encoding": "pcm16", "sample_rate": 8000})
        await listener.message("talk.started")
        voice = tone(0.2, 700.0, 8000)
        await listener.connection.send(voice)
        await listener.send_json({"type": "mark", "name": "said-it"})
        mark = await listener.message("mark")  # echoed by the far end once it had played it
        assert mark["name"] == "said-it"
        silence = ulaw_encode(bytes(320))
        heard = [f.payload for f in listener.frames if f.track == 1 and f.payload != silence]
        assert heard == chunks(ulaw_encode(voice), 160)

        assert (await api.post(f"/api/calls/{call_id}/hangup")).status_code == 200
        await events.until(call_state_is(call_id, "ended"))
        await listener.close()


async def test_an_idle_socket_outlives_proxy_timeouts_thanks_to_pings(proxied: Edge) -> None:
    # Filtered on a call that does not exist: no event can reset nginx's timer, only pings.
    async with await proxied.events("?call_control_id=v3:nobody") as events:
        await events.next()
        # Three proxy timeouts with nothing but the service's pings on the wire.
        with pytest.raises(TimeoutError):
            await asyncio.wait_for(events.connection.wait_closed(), 3 * PROXY_TIMEOUT)
        await events.connection.send('{"type":"ping"}')
        assert await events.next() == {"type": "pong"}


async def test_without_pings_nginx_cuts_an_idle_socket_without_a_close_frame(
    tmp_path: Path,
) -> None:
    with edge(tmp_path, ping="0", through_proxy=False) as silent:
        async with await silent.events() as events:
            await events.next()
            with pytest.raises(ConnectionClosedError) as closed:
                await asyncio.wait_for(events.connection.recv(), WAIT)
        assert closed.value.rcvd is None  # what browsers report as 1006
        assert closed.value.sent is None
        assert "upstream timed out" in silent.nginx.error_log()
        access = (silent.nginx.prefix / "callbridge.access.log").read_text()
        assert '"GET /call-events HTTP/1.1" 101' in access


async def _read_until_cut(client: EventsClient) -> ConnectionClosed:
    while True:
        try:
            await client.next()
        except ConnectionClosed as cut:
            return cut


async def test_a_reload_mid_call_loses_no_event_for_a_resuming_client(proxied: Edge) -> None:
    """The client nginx cuts after a reload resumes from its last seq and gets every event,
    once, in order. An observer connected to the service directly says when all are stored."""
    first = await proxied.events()
    welcome = await first.next()
    observer = await EventsClient.open(proxied.service.ws_url)
    await observer.next()
    async with proxied.api() as api:
        dialled = await api.post("/api/calls", json={"to": SPEECH_CALL})
        call_id = dialled.json()["data"]["call_control_id"]
    await first.until(
        lambda m: m.get("type") == "media.started" and m["call_control_id"] == call_id
    )

    proxied.nginx.reload()  # old workers get 1 s (worker_shutdown_timeout) to let go
    cut = await _read_until_cut(first)
    assert isinstance(cut, ConnectionClosedError)
    assert cut.rcvd is None  # cut by nginx, not closed by callbridge
    last_seen = max([welcome["seq"], *(e["seq"] for e in first.events())])

    async with proxied.api() as api:  # while the client is away
        assert (await api.post(f"/api/calls/{call_id}/hangup")).status_code == 200
        await observer.until(call_state_is(call_id, "ended"))
        stored = (await api.get(f"/api/calls/{call_id}/events")).json()["data"]
    await observer.close()
    last = stored[-1]["seq"]

    query = f"?since={last_seen}&epoch={welcome['epoch']}"
    async with await proxied.events(query) as resumed:
        replayed = await resumed.until(lambda m: m["type"] in ("replayed", "resync"))
        assert replayed["type"] == "replayed"
        assert replayed["count"] >= 1  # events did happen while it was away
        while max(e["seq"] for e in resumed.events()) < last:
            await resumed.next()
    received = [e for e in first.events() + resumed.events() if e["seq"] <= last]
    seqs = [e["seq"] for e in received]
    assert seqs == sorted(set(seqs))  # nothing twice, nothing out of order
    assert [e for e in received if e["call_control_id"] == call_id] == stored
