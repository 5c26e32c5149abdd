"""Scale-out benchmark: 1, 2 and 3 instances behind nginx, with the Redis hub and PostgreSQL.

    .venv/bin/python -m bench.scale --setups memory:1,redis:1,redis:2,redis:3 --calls 100,200,300

For every setup and load it starts everything fresh: a redis-server of its own, a new
PostgreSQL database (on `CALLBRIDGE_TEST_PG_URL`, which scripts/test prepares), a standalone
Telnyx simulator, N `callbridge serve` instances in Telnyx mode and nginx (`least_conn`) in
front of them, with `CALLBRIDGE_PUBLIC_URL` on nginx. The service side (instances, Redis,
nginx) is pinned to `--server-cores`, the load generator (`callbridge simulate load`'s workers)
to `--load-cores`. The calls are dialled through nginx, so their media sockets and listeners
land on whichever instance nginx picks: with N instances about (N-1)/N of the listeners hear a
stream held by another instance, through Redis.

The CPU figure is the service side's total (every instance, Redis and nginx; PostgreSQL is idle
while audio flows) over the whole load run, set-up of the sockets included, per delivered
frame. Every instance gets the same fresh API key and token secret (bench/auth.py): a token
minted by one opens listeners on all. Prints one Markdown row per run.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path
from typing import Any

import asyncpg
from bench.auth import BenchAuth

from callbridge.sim.load import LoadResult, cpu_seconds, dial_calls, hang_up, run_load

ROOT = Path(__file__).parents[1]
PG_URL = os.environ.get(
    "CALLBRIDGE_TEST_PG_URL",
    "postgresql://callbridge_test:callbridge_test@127.0.0.1:5432/postgres",
)
SEED = base64.b64encode(bytes(range(32))).decode()
TELNYX_KEY = "KEYbench"  # the simulator's Telnyx API key, not one of callbridge's


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _await_port(port: int, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while True:
        try:
            socket.create_connection(("127.0.0.1", port), 1).close()
            return
        except OSError:
            if time.monotonic() > deadline:
                raise RuntimeError(f"nothing listens on {port}") from None
            time.sleep(0.05)


def _drain(pipe: Any) -> None:
    for _line in pipe:
        pass


@contextmanager
def _process(
    command: list[str], env: dict[str, str], marker: str | None = None
) -> Iterator[subprocess.Popen[str]]:
    """A child process; with `marker`, wait for that text on its stderr first."""
    process = subprocess.Popen(
        command, env=env, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    if marker is not None:
        assert process.stderr is not None
        for line in process.stderr:
            if marker in line:
                break
        else:
            raise RuntimeError(f"{command[0:4]} did not start")
    for pipe in (process.stdout, process.stderr):
        threading.Thread(target=_drain, args=(pipe,), daemon=True).start()
    try:
        yield process
    finally:
        process.terminate()
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


@contextmanager
def _database() -> Iterator[str]:
    name = "callbridge_bench_" + uuid.uuid4().hex[:12]

    async def admin(statement: str) -> None:
        connection = await asyncpg.connect(PG_URL)
        try:
            await connection.execute(statement)
        finally:
            await connection.close()

    asyncio.run(admin(f'CREATE DATABASE "{name}"'))
    try:
        yield PG_URL.rpartition("/")[0] + "/" + name
    finally:
        asyncio.run(admin(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))


def _nginx_config(prefix: Path, port: int, backends: list[int]) -> str:
    servers = "".join(f"  server 127.0.0.1:{p};\n" for p in backends)
    temp = "".join(
        f"{n}_temp_path {prefix}/{n}_temp;\n"
        for n in ("client_body", "proxy", "fastcgi", "uwsgi", "scgi")
    )
    return f"""pid {prefix}/nginx.pid;
error_log {prefix}/error.log warn;
daemon off;
worker_processes 1;
events {{ worker_connections 8192; }}
http {{
{temp}access_log off;
map $http_upgrade $callbridge_connection_upgrade {{
  default upgrade;
  ''      close;
}}
upstream callbridge {{
  least_conn;
{servers}  keepalive 32;
}}
server {{
  listen 127.0.0.1:{port};
  location ~ ^/(call-events|audio-stream|frontend-audio)$ {{
    proxy_pass http://callbridge;
    proxy_http_version 1.1;
    proxy_set_header Host $host;
    proxy_set_header Upgrade $http_upgrade;
    proxy_set_header Connection $callbridge_connection_upgrade;
    proxy_read_timeout 3600s;
    proxy_buffering off;
  }}
  location / {{
    proxy_pass http://callbridge;
    proxy_http_version 1.1;
    proxy_set_header Host $host;
    proxy_set_header Connection "";
  }}
}}
}}
"""


@contextmanager
def cluster(
    broker: str, instances: int, cores: str, tmp: Path, auth: BenchAuth
) -> Iterator[tuple[str, str, dict[str, list[int]]]]:
    """Everything for one run; yields (nginx URL, simulator URL, service-side pids by role)."""
    pin = ["taskset", "-c", cores]
    base_env = {k: v for k, v in os.environ.items() if not k.startswith(("CALLBRIDGE_", "TELNYX_"))}
    base_env.update(PYTHONPATH=str(ROOT), CALLBRIDGE_LOG_FORMAT="json")
    with ExitStack() as stack:
        pids: dict[str, list[int]] = {"callbridge": [], "redis": [], "nginx": []}
        redis_url = "memory://"
        if broker == "redis":
            redis_port = _free_port()
            redis = stack.enter_context(
                _process(
                    [*pin, shutil.which("redis-server") or "redis-server", "--bind", "127.0.0.1",
                     "--port", str(redis_port), "--save", "", "--appendonly", "no",
                     "--dir", str(tmp)],
                    base_env,
                )
            )  # fmt: skip
            _await_port(redis_port)
            pids["redis"].append(redis.pid)
            redis_url = f"redis://127.0.0.1:{redis_port}/0"
        database = stack.enter_context(_database())
        sim_port, nginx_port = _free_port(), _free_port()
        sim = f"http://127.0.0.1:{sim_port}"
        stack.enter_context(
            _process(
                [sys.executable, "-m", "callbridge", "simulate", "serve", "--port", str(sim_port),
                 "--telnyx-api-key", TELNYX_KEY, "--seed", SEED],
                base_env,
                marker="simulator ready",
            )
        )  # fmt: skip
        from callbridge.sim import WebhookSigner

        ports = [_free_port() for _ in range(instances)]
        for port in ports:
            env = {
                **base_env,
                **auth.env(),
                "CALLBRIDGE_PORT": str(port),
                "CALLBRIDGE_HOST": "127.0.0.1",
                "CALLBRIDGE_LOG_LEVEL": "warning",
                "CALLBRIDGE_DATABASE_URL": database,
                "CALLBRIDGE_BROKER_URL": redis_url,
                "CALLBRIDGE_PUBLIC_URL": f"http://127.0.0.1:{nginx_port}",
                "TELNYX_API_KEY": TELNYX_KEY,
                "TELNYX_BASE_URL": f"{sim}/v2",
                "TELNYX_PUBLIC_KEY": WebhookSigner.from_seed_b64(SEED).public_key_b64,
                "TELNYX_CONNECTION_ID": "bench",
            }
            process = stack.enter_context(
                _process([*pin, sys.executable, "-m", "callbridge", "serve"], env)
            )
            pids["callbridge"].append(process.pid)
        for port in ports:
            _await_port(port)
        prefix = tmp / f"nginx-{nginx_port}"
        prefix.mkdir()
        (prefix / "nginx.conf").write_text(_nginx_config(prefix, nginx_port, ports))
        nginx = stack.enter_context(
            _process(
                [*pin, shutil.which("nginx") or "/usr/sbin/nginx", "-p", str(prefix), "-c",
                 str(prefix / "nginx.conf")],
                base_env,
            )
        )  # fmt: skip
        _await_port(nginx_port)
        # nginx's worker is a child of the master (forked after it listens): count it too.
        children: list[str] = []
        deadline = time.monotonic() + 10
        while not children and time.monotonic() < deadline:
            children = Path(f"/proc/{nginx.pid}/task/{nginx.pid}/children").read_text().split()
            time.sleep(0.05)
        pids["nginx"] = [nginx.pid, *(int(child) for child in children)]
        yield f"http://127.0.0.1:{nginx_port}", sim, pids


def _cpu(pids: dict[str, list[int]]) -> dict[str, float]:
    return {role: sum(cpu_seconds(pid) for pid in group) for role, group in pids.items()}


def run_once(
    setup: str, calls: int, args: argparse.Namespace, tmp: Path
) -> tuple[LoadResult, dict[str, float], float]:
    """One load run; its result, the CPU seconds of each role, and the run's wall time."""
    broker, count = setup.split(":")
    auth = BenchAuth()
    with cluster(broker, int(count), args.server_cores, tmp, auth) as (target, sim, pids):
        targets = asyncio.run(
            dial_calls(target, sim, calls, listeners=args.listeners, api_key=auth.api_key)
        )
        try:
            before, began = _cpu(pids), time.monotonic()
            result = run_load(
                targets,
                listeners=args.listeners,
                duration=args.duration,
                workers=args.workers,
                server_pid=None,
                cpus=[int(core) for core in args.load_cores.split(",")],
                warmup=args.warmup,
            )
            wall = time.monotonic() - began
            cpu = {role: seconds - before[role] for role, seconds in _cpu(pids).items()}
        finally:
            asyncio.run(hang_up(target, targets, auth.api_key))
    return result, cpu, wall


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--setups", default="memory:1,redis:1,redis:2,redis:3")
    parser.add_argument("--calls", default="100")
    parser.add_argument("--listeners", type=int, default=1)
    parser.add_argument("--duration", type=float, default=12.0, help="seconds, warm-up included")
    parser.add_argument("--warmup", type=float, default=2.0)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--server-cores", default="0", help="taskset list for the service side")
    parser.add_argument("--load-cores", default="1", help="CPUs of the load generator")
    args = parser.parse_args()
    print(
        "| setup | calls | delivered/s | loss | p50 ms | p99 ms | send rate | service CPU "
        "(callbridge + redis + nginx) | CPU µs/frame |\n|---|---|---|---|---|---|---|---|---|",
        flush=True,
    )
    with tempfile.TemporaryDirectory() as tmp:
        for calls in (int(c) for c in args.calls.split(",")):
            for setup in args.setups.split(","):
                result, cpu, wall = run_once(setup, calls, args, Path(tmp))
                latency = result.latency_ms
                total = sum(cpu.values())
                shares = " + ".join(f"{cpu[role] / wall:.0%}" for role in cpu)
                print(
                    f"| {setup} | {calls} | {result.delivered / args.duration:.0f} | "
                    f"{result.loss:.3%} | {latency['p50']:.2f} | {latency['p99']:.2f} | "
                    f"{result.send_rate:.0f}/{result.target_rate:.0f} | "
                    f"{total / wall:.0%} ({shares}) | "
                    f"{total * 1e6 / max(result.delivered, 1):.0f} |"
                    + (f" errors: {result.errors}" if result.errors else ""),
                    flush=True,
                )


if __name__ == "__main__":
    main()
