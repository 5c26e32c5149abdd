"""Several callbridge instances as one system, all real processes on 127.0.0.1.

One standalone Telnyx simulator, one redis-server of the test's own (so a test may kill and
restart it), one fresh PostgreSQL database, three (or `count`) `callbridge serve` processes in
Telnyx mode sharing both, and one nginx in front of them:

- port `url`: `least_conn` over every instance, as a deployment runs. `CALLBRIDGE_PUBLIC_URL`
  points here, so the simulator's webhooks and media sockets spread over the instances.
- port `failover_url`: instance B first, the others as `backup`: a browser connected here is on
  B while B lives, and nginx sends its reconnection elsewhere once B is gone.

Every instance gets the same CALLBRIDGE_API_KEYS and CALLBRIDGE_TOKEN_SECRET (`service_env`), as
a deployment must: a token minted by one instance opens sockets on all of them.
"""

from __future__ import annotations

import concurrent.futures
import contextlib
import dataclasses
from collections.abc import Iterator
from pathlib import Path

import httpx

from callbridge.sim import WebhookSigner
from callbridge.sim.auth import api_headers
from tests.backends import RedisServer, pg_database
from tests.conftest import API_KEY, SEED, ServiceProcess, free_port, service_env
from tests.edge.nginxproc import NginxProcess, http_paths, main_context

TELNYX_KEY = "KEYscale"  # the simulator's Telnyx API key, not one of callbridge's
INSTANCES = 3
WS_PATHS = ("/call-events", "/audio-stream", "/frontend-audio")


def nginx_config(prefix: Path, port: int, failover_port: int, backends: list[int]) -> str:
    """`backends[1]` (instance B) is the failover port's first choice."""
    servers = "".join(f"    server 127.0.0.1:{p};\n" for p in backends)
    first, rest = backends[1], [backends[0], *backends[2:]]
    failover = f"    server 127.0.0.1:{first};\n" + "".join(
        f"    server 127.0.0.1:{p} backup;\n" for p in rest
    )
    proxy = (
        "    proxy_http_version 1.1;\n"
        "    proxy_set_header Host $host;\n"
        "    proxy_set_header X-Forwarded-For $proxy_add_x_forwarded_for;\n"
        "    proxy_set_header X-Forwarded-Proto $scheme;\n"
    )
    websocket = (
        proxy + "    proxy_set_header Upgrade $http_upgrade;\n"
        "    proxy_set_header Connection $callbridge_connection_upgrade;\n"
        "    proxy_read_timeout 3600s;\n"
        "    proxy_send_timeout 3600s;\n"
        "    proxy_buffering off;\n"
    )

    def server(listen: int, upstream: str) -> str:
        locations = "".join(
            f"  location = {path} {{\n    proxy_pass http://{upstream};\n{websocket}  }}\n"
            for path in WS_PATHS
        )
        return (
            f"server {{\n  listen 127.0.0.1:{listen};\n{locations}"
            f"  location / {{\n    proxy_pass http://{upstream};\n{proxy}"
            '    proxy_set_header Connection "";\n  }\n}\n'
        )

    return (
        main_context(prefix)
        + "http {\n"
        + http_paths(prefix)
        + "map $http_upgrade $callbridge_connection_upgrade {\n"
        "  default upgrade;\n"
        "  ''      close;\n"
        "}\n"
        f"upstream callbridge_all {{\n    least_conn;\n{servers}    keepalive 16;\n}}\n"
        f"upstream callbridge_failover {{\n{failover}    keepalive 16;\n}}\n"
        + server(port, "callbridge_all")
        + server(failover_port, "callbridge_failover")
        + "}\n"
    )


@dataclasses.dataclass
class Cluster:
    sim: ServiceProcess
    redis: RedisServer
    database_url: str
    instances: list[ServiceProcess]
    nginx: NginxProcess
    port: int
    failover_port: int
    signer: WebhookSigner

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def ws_url(self) -> str:
        return f"ws://127.0.0.1:{self.port}"

    @property
    def failover_ws_url(self) -> str:
        return f"ws://127.0.0.1:{self.failover_port}"

    def mint_token(self) -> str:
        """A browser token from `POST /api/tokens` on whichever instance nginx picks."""
        with httpx.Client(base_url=self.url, timeout=15, headers=api_headers(API_KEY)) as api:
            body = {"calls": "*", "rights": ["events", "listen", "talk"], "ttl": 3600}
            response = api.post("/api/tokens", json=body)
        assert response.status_code == 201, response.text
        token: str = response.json()["token"]
        return token

    def ensure_running(self) -> None:
        """Every instance and Redis up, as a test that killed one must leave them."""
        if self.redis.process is None:
            self.redis.start()
        for instance in self.instances:
            if instance.process is None or instance.process.poll() is not None:
                instance.stop()
                instance.start()


def standalone_simulator(tmp: Path) -> ServiceProcess:
    """`callbridge simulate serve`, started: a Telnyx that outlives the services it plays for."""
    sim_port = free_port()
    sim_env = service_env(tmp, CALLBRIDGE_PORT=str(sim_port))
    sim_args = ("simulate", "serve", "--port", str(sim_port), "--telnyx-api-key", TELNYX_KEY)
    sim_args += ("--seed", SEED, "--pace", "0.05")
    return ServiceProcess(sim_env, tmp, args=sim_args, ready_event="simulator ready").start()


def telnyx_mode(sim: ServiceProcess) -> dict[str, str]:
    """The TELNYX_* settings that point a service at the standalone simulator `sim`."""
    ready = next(e for e in sim.logs if e.get("event") == "simulator ready")
    return {
        "TELNYX_API_KEY": TELNYX_KEY,
        "TELNYX_BASE_URL": ready["TELNYX_BASE_URL"],
        "TELNYX_PUBLIC_KEY": ready["TELNYX_PUBLIC_KEY"],
        "TELNYX_CONNECTION_ID": "scale-test",
    }


@contextlib.contextmanager
def running_cluster(tmp: Path, count: int = INSTANCES, **settings: str) -> Iterator[Cluster]:
    """`count` instances (at least two: nginx's failover port prefers the second), with
    `settings` (CALLBRIDGE_* variables) on top of the cluster's own."""
    sim = standalone_simulator(tmp)
    redis = RedisServer(tmp).start()
    port, failover_port = free_port(), free_port()
    instances: list[ServiceProcess] = []
    nginx: NginxProcess | None = None
    try:
        with pg_database() as database_url:
            for index in range(count):
                workdir = tmp / f"instance-{index}"
                workdir.mkdir()
                overrides = {
                    "CALLBRIDGE_DATABASE_URL": database_url,
                    "CALLBRIDGE_BROKER_URL": redis.url,
                    "CALLBRIDGE_PUBLIC_URL": f"http://127.0.0.1:{port}",
                    **telnyx_mode(sim),
                    **settings,
                }
                instances.append(ServiceProcess(service_env(workdir, **overrides), workdir))
            # All at once, on a fresh database: one migrates, the others wait and find it done.
            with concurrent.futures.ThreadPoolExecutor(count) as pool:
                list(pool.map(ServiceProcess.start, instances))
            prefix = tmp / "nginx"
            prefix.mkdir()
            config = nginx_config(prefix, port, failover_port, [i.port for i in instances])
            nginx = NginxProcess(prefix, config).start(port, failover_port)
            yield Cluster(
                sim=sim,
                redis=redis,
                database_url=database_url,
                instances=instances,
                nginx=nginx,
                port=port,
                failover_port=failover_port,
                signer=WebhookSigner.from_seed_b64(SEED),
            )
            for instance in instances:
                instance.stop()
    finally:
        if nginx is not None:
            nginx.stop()
        for instance in instances:
            instance.stop()
        redis.stop()
        sim.stop()


def dial(cluster: Cluster, to: str = "+15550100012") -> tuple[str, str]:
    """A call placed through nginx; (call_control_id, the stream token Telnyx was given)."""
    with httpx.Client(base_url=cluster.url, timeout=15, headers=api_headers(API_KEY)) as api:
        response = api.post("/api/calls", json={"to": to})
    assert response.status_code == 201, response.text
    call_id = response.json()["data"]["call_control_id"]
    with httpx.Client(base_url=cluster.sim.url, timeout=15) as sim:
        stream = sim.get(f"/_sim/calls/{call_id}").json()["stream"]
    return call_id, stream["stream_auth_token"]


def hang_up(cluster: Cluster, call_id: str) -> None:
    with httpx.Client(base_url=cluster.url, timeout=15, headers=api_headers(API_KEY)) as api:
        assert api.post(f"/api/calls/{call_id}/hangup").status_code == 200
