"""Event fan-out and idle connections: what /call-events costs at scale.

    .venv/bin/python -m bench.events fanout --subscribers 100,1000 --events 20
    .venv/bin/python -m bench.events idle --connections 10000

`fanout` connects K /call-events clients (spread over processes), then posts signed webhooks one
at a time and measures, at every client, the delay from just before the POST to the event's
arrival (one clock: CLOCK_MONOTONIC is shared by every process on the host); it reports p50/p99
over all deliveries. `idle` opens N connections that stay silent (the server's protocol pings
keep them alive) and reports the server's RSS before and after, per connection.

The service runs pinned to core 0, the clients on core 1, as for the relay benchmark.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import multiprocessing
import os
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

import httpx
import orjson
from bench.auth import BenchAuth
from websockets.asyncio.client import connect

from callbridge.sim.auth import token_subprotocols
from callbridge.sim.load import percentile, rss_mb
from callbridge.sim.signing import WebhookSigner

ROOT = Path(__file__).parents[1]
SEED = base64.b64encode(bytes(range(32))).decode()


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _shares(total: int, parts: int) -> list[int]:
    return [total // parts + (index < total % parts) for index in range(parts)]


def _start_service(tmp: str, auth: BenchAuth) -> tuple[subprocess.Popen[str], int]:
    port = _free_port()
    env = {
        **os.environ,
        **auth.env(),
        "CALLBRIDGE_PORT": str(port),
        "CALLBRIDGE_SIM_PORT": str(_free_port()),
        "CALLBRIDGE_DATABASE_URL": f"sqlite:///{tmp}/events.db",
        "CALLBRIDGE_LOG_FORMAT": "json",
        "CALLBRIDGE_LOG_LEVEL": "warning",
        "CALLBRIDGE_SIM_SIGNING_SEED": SEED,
        "CALLBRIDGE_EVENTS_QUEUE_SIZE": "1024",
    }
    process = subprocess.Popen(
        ["taskset", "-c", "0", sys.executable, "-m", "callbridge", "serve"],
        env=env,
        cwd=ROOT,
        stderr=subprocess.DEVNULL,
        text=True,
    )
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:  # warning level: readiness is the health endpoint
        try:
            if httpx.get(f"http://127.0.0.1:{port}/api/health", timeout=1).status_code == 200:
                return process, port
        except httpx.HTTPError:
            time.sleep(0.1)
    raise RuntimeError("service did not start")


def _subscribers(port: int, count: int, ready: Any, results: Any, events: int, token: str) -> None:
    os.sched_setaffinity(0, [1])

    async def run() -> list[int]:
        arrivals: list[int] = []
        clients = [
            await connect(
                f"ws://127.0.0.1:{port}/call-events",
                subprotocols=token_subprotocols(token),
                open_timeout=60,
            )
            for _ in range(count)
        ]
        for client in clients:
            await client.recv()  # the welcome
        ready.wait()

        async def read(client: Any) -> None:
            for _ in range(events):
                while True:
                    message = orjson.loads(await client.recv())
                    if message.get("type") == "call.dtmf.received":
                        arrivals.append(time.monotonic_ns())
                        break

        await asyncio.gather(*(read(client) for client in clients))
        for client in clients:
            await client.close()
        return arrivals

    results.put(asyncio.run(run()))


def fanout(subscribers: int, events: int, processes: int) -> dict[str, float]:
    signer = WebhookSigner.from_seed_b64(SEED)
    auth = BenchAuth()
    with tempfile.TemporaryDirectory() as tmp:
        service, port = _start_service(tmp, auth)
        try:
            token = auth.token(f"http://127.0.0.1:{port}", rights=("events",))
            context = multiprocessing.get_context("spawn")
            ready = context.Barrier(processes + 1)
            results = context.Queue()
            share = [
                subscribers // processes + (i < subscribers % processes) for i in range(processes)
            ]
            workers = [
                context.Process(target=_subscribers, args=(port, n, ready, results, events, token))
                for n in share
            ]
            for worker in workers:
                worker.start()
            ready.wait(timeout=300)
            sent: list[int] = []
            call_id = "v3:bench-" + uuid.uuid4().hex
            with httpx.Client(base_url=f"http://127.0.0.1:{port}") as api:
                for index in range(events):
                    body = orjson.dumps(
                        {
                            "data": {
                                "record_type": "event",
                                "event_type": "call.dtmf.received",
                                "id": str(uuid.uuid4()),
                                "occurred_at": "2026-11-27T12:00:00Z",
                                "payload": {"call_control_id": call_id, "digit": str(index % 10)},
                            },
                            "meta": {"attempt": 1},
                        }
                    )
                    sent.append(time.monotonic_ns())
                    api.post("/api/webhooks/telnyx", content=body, headers=signer.headers(body))
                    time.sleep(0.2)  # one event at a time: measure fan-out, not queueing
            arrivals = [t for _ in workers for t in results.get(timeout=120)]
            for worker in workers:
                worker.join()
        finally:
            service.terminate()
            service.wait(timeout=30)
    # Each arrival belongs to the latest event sent before it.
    delays: list[int] = []
    for arrival in arrivals:
        origin = max(s for s in sent if s <= arrival)
        delays.append(arrival - origin)
    delays.sort()
    return {
        "subscribers": subscribers,
        "deliveries": len(delays),
        "p50_ms": percentile(delays, 0.5) / 1e6,
        "p99_ms": percentile(delays, 0.99) / 1e6,
        "max_ms": delays[-1] / 1e6 if delays else float("nan"),
    }


def _idle_clients(port: int, count: int, ready: Any, done: Any, token: str) -> None:
    os.sched_setaffinity(0, [1])

    async def run() -> None:
        clients = []
        for _ in range(count):
            client = await connect(
                f"ws://127.0.0.1:{port}/call-events",
                subprotocols=token_subprotocols(token),
                open_timeout=60,
            )
            await client.recv()
            clients.append(client)
        ready.wait()
        await asyncio.to_thread(done.wait)
        for client in clients:
            await client.close()

    asyncio.run(run())


def idle(connections: int, processes: int) -> dict[str, float]:
    auth = BenchAuth()
    with tempfile.TemporaryDirectory() as tmp:
        service, port = _start_service(tmp, auth)
        try:
            token = auth.token(f"http://127.0.0.1:{port}", rights=("events",))
            time.sleep(1.0)  # let start-up allocations settle before the baseline
            before = rss_mb(service.pid)
            context = multiprocessing.get_context("spawn")
            ready = context.Barrier(processes + 1)
            done = context.Event()
            share = [
                connections // processes + (i < connections % processes) for i in range(processes)
            ]
            workers = [
                context.Process(target=_idle_clients, args=(port, n, ready, done, token))
                for n in share
            ]
            for worker in workers:
                worker.start()
            ready.wait(timeout=600)
            time.sleep(2.0)
            after = rss_mb(service.pid)
            done.set()
            for worker in workers:
                worker.join()
        finally:
            service.terminate()
            service.wait(timeout=60)
    return {
        "connections": connections,
        "rss_before_mb": before,
        "rss_after_mb": after,
        "kb_per_connection": (after - before) * 1024 / connections,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    sub = parser.add_subparsers(dest="what", required=True)
    fan = sub.add_parser("fanout")
    fan.add_argument("--subscribers", default="100,1000")
    fan.add_argument("--events", type=int, default=20)
    fan.add_argument("--processes", type=int, default=4)
    idle_parser = sub.add_parser("idle")
    idle_parser.add_argument("--connections", type=int, default=10_000)
    idle_parser.add_argument("--processes", type=int, default=4)
    args = parser.parse_args()
    if args.what == "fanout":
        for count in (int(c) for c in args.subscribers.split(",")):
            print(orjson.dumps(fanout(count, args.events, args.processes)).decode(), flush=True)
    else:
        print(orjson.dumps(idle(args.connections, args.processes)).decode(), flush=True)


if __name__ == "__main__":
    main()
