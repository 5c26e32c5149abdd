"""How fast a signed webhook is verified, stored and acknowledged (Telnyx allows 2 s).

Starts `callbridge serve` (embedded simulator, SQLite on a temporary file, a fresh API key that
webhooks do not need), posts N signed `call.dtmf.received` webhooks one after another, then N
more from C concurrent senders, and prints latency percentiles. Bounded: N defaults to 500.
Run: .venv/bin/python bench/webhook_ack.py
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import os
import secrets
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from datetime import UTC, datetime

import httpx
import orjson

from callbridge.auth.keys import generate_key, key_entry
from callbridge.sim import WebhookSigner

SEED = base64.b64encode(bytes(range(32))).decode()


def _port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _body(call_id: str) -> bytes:
    return orjson.dumps(
        {
            "data": {
                "record_type": "event",
                "event_type": "call.dtmf.received",
                "id": str(uuid.uuid4()),
                "occurred_at": datetime.now(UTC).isoformat(),
                "payload": {"call_control_id": call_id, "digit": "5"},
            },
            "meta": {"attempt": 1},
        }
    )


def _pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))] * 1000


async def _run(url: str, count: int, concurrency: int) -> None:
    signer = WebhookSigner.from_seed_b64(SEED)
    async with httpx.AsyncClient(base_url=url) as client:
        sequential: list[float] = []
        for _ in range(count):
            body = _body("v3:bench-seq")
            started = time.perf_counter()
            response = await client.post(
                "/api/webhooks/telnyx", content=body, headers=signer.headers(body)
            )
            sequential.append(time.perf_counter() - started)
            assert response.status_code == 200
        concurrent: list[float] = []

        async def sender(index: int) -> None:
            for _ in range(count // concurrency):
                body = _body(f"v3:bench-{index}")
                started = time.perf_counter()
                response = await client.post(
                    "/api/webhooks/telnyx", content=body, headers=signer.headers(body)
                )
                concurrent.append(time.perf_counter() - started)
                assert response.status_code == 200

        wall = time.perf_counter()
        await asyncio.gather(*(sender(i) for i in range(concurrency)))
        wall = time.perf_counter() - wall
    for name, values in (("sequential", sequential), (f"{concurrency} concurrent", concurrent)):
        print(
            f"{name:>14}: n={len(values)} p50={_pct(values, 0.5):.1f} ms "
            f"p99={_pct(values, 0.99):.1f} ms max={max(values) * 1000:.1f} ms "
            f"mean={statistics.mean(values) * 1000:.1f} ms"
        )
    print(f"{'throughput':>14}: {len(concurrent) / wall:.0f} webhooks/s with {concurrency} senders")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--count", type=int, default=500)
    parser.add_argument("--concurrency", type=int, default=10)
    args = parser.parse_args()
    port = _port()
    with tempfile.TemporaryDirectory() as tmp:
        env = {
            **os.environ,
            # Credentials as bench/auth.py makes them (inline: this file also runs as a script).
            "CALLBRIDGE_API_KEYS": key_entry("bench", generate_key()),
            "CALLBRIDGE_TOKEN_SECRET": secrets.token_urlsafe(48),
            "CALLBRIDGE_PORT": str(port),
            "CALLBRIDGE_HOST": "127.0.0.1",
            "CALLBRIDGE_SIM_PORT": str(_port()),
            "CALLBRIDGE_SIM_SIGNING_SEED": SEED,
            "CALLBRIDGE_DATABASE_URL": f"sqlite:///{tmp}/bench.db",
            "CALLBRIDGE_LOG_LEVEL": "warning",
            "CALLBRIDGE_LOG_FORMAT": "json",
        }
        service = subprocess.Popen(
            ["taskset", "-c", "0", sys.executable, "-m", "callbridge", "serve"], env=env
        )
        try:
            for _ in range(200):
                try:
                    httpx.get(f"http://127.0.0.1:{port}/api/health")
                    break
                except httpx.TransportError:
                    time.sleep(0.05)
            asyncio.run(_run(f"http://127.0.0.1:{port}", args.count, args.concurrency))
        finally:
            service.terminate()
            service.wait(timeout=30)


if __name__ == "__main__":
    main()
