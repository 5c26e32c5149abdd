"""The relay benchmark: callbridge against bare relays of the same contract, in one run.

    .venv/bin/python -m bench.relay --streams 50,200,500 --listeners 1,3 --runs 3

Each run starts the server fresh, pinned to one core (`taskset -c 0`), and the load on the other
(`callbridge simulate load`'s workers, pinned with sched_setaffinity), with the streams' phases
spread evenly over the 20 ms frame period and a 2 s warm-up left out of every figure. Servers
are interleaved run by run. The baselines are bench/relays/: bare `websockets`, bare `picows`
and Node.js + `ws` (run `npm ci` in bench/relays/node first). callbridge runs with a fresh API
key per run and its listeners present browser tokens (bench/auth.py); the bare relays have no
authentication. Prints a Markdown table of medians.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
from collections.abc import Iterator
from contextlib import contextmanager, nullcontext
from pathlib import Path
from typing import Any

from bench.auth import BenchAuth

from callbridge.sim.load import CallTarget, LoadResult, dial_calls, hang_up, run_load

ROOT = Path(__file__).parents[1]
SERVERS = ("callbridge", "websockets", "picows", "node")


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _command(server: str, port: int) -> list[str]:
    python = [sys.executable, "-m"]
    if server == "callbridge":
        return [*python, "callbridge", "serve"]
    if server == "node":
        return ["node", str(ROOT / "bench/relays/node/relay.js"), str(port)]
    return [*python, f"bench.relays.{server}_relay", str(port)]


@contextmanager
def _simulator(core: int) -> Iterator[dict[str, str]]:
    """Telnyx played by the standalone simulator, pinned with the load: in production Telnyx
    is not in callbridge's process, so its work must not count as callbridge's CPU."""
    from bench.scale import SEED, TELNYX_KEY, _process

    from callbridge.sim import WebhookSigner

    sim_port = _free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith(("CALLBRIDGE_", "TELNYX_"))}
    command = ["taskset", "-c", str(core), sys.executable, "-m", "callbridge", "simulate", "serve"]
    command += ["--port", str(sim_port), "--telnyx-api-key", TELNYX_KEY, "--seed", SEED]
    with _process(command, {**env, "PYTHONPATH": str(ROOT)}, marker="simulator ready"):
        yield {
            "TELNYX_API_KEY": TELNYX_KEY,
            "TELNYX_BASE_URL": f"http://127.0.0.1:{sim_port}/v2",
            "TELNYX_PUBLIC_KEY": WebhookSigner.from_seed_b64(SEED).public_key_b64,
            "TELNYX_CONNECTION_ID": "bench",
        }


@contextmanager
def _server(
    server: str, core: int, tmp: Path, auth: BenchAuth, telnyx: dict[str, str]
) -> Iterator[tuple[int, int, str]]:
    """Start one server pinned to `core`; yield (pid, port, simulator URL or "")."""
    port = _free_port()
    env = {
        **{k: v for k, v in os.environ.items() if not k.startswith(("CALLBRIDGE_", "TELNYX_"))},
        **(auth.env() if server == "callbridge" else {}),
        **(telnyx if server == "callbridge" else {}),
        "CALLBRIDGE_PORT": str(port),
        "CALLBRIDGE_DATABASE_URL": f"sqlite:///{tmp}/bench-{port}.db",
        "CALLBRIDGE_LOG_FORMAT": "json",
        "PYTHONPATH": str(ROOT),
    }
    command = ["taskset", "-c", str(core), *_command(server, port)]
    process = subprocess.Popen(
        command, env=env, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    stream = process.stderr if server == "callbridge" else process.stdout
    assert stream is not None
    marker = '"callbridge ready"' if server == "callbridge" else "ready"
    for line in stream:
        if marker in line:
            break
    else:
        raise RuntimeError(f"{server} did not start")
    for pipe in (process.stdout, process.stderr):  # keep draining, or a full pipe blocks it
        threading.Thread(target=_drain, args=(pipe,), daemon=True).start()
    try:
        sim = telnyx["TELNYX_BASE_URL"].removesuffix("/v2") if server == "callbridge" else ""
        yield process.pid, port, sim
    finally:
        process.terminate()
        process.wait(timeout=30)


def _drain(pipe: Any) -> None:
    for _line in pipe:
        pass


def _targets(
    server: str, port: int, sim: str, streams: int, listeners: int, auth: BenchAuth
) -> list[CallTarget]:
    if server == "callbridge":
        target = f"http://127.0.0.1:{port}"
        return asyncio.run(
            dial_calls(target, sim, streams, listeners=listeners, api_key=auth.api_key)
        )
    base = f"ws://127.0.0.1:{port}"
    return [
        CallTarget(
            call_control_id=f"c{index}",
            stream_url=f"{base}/audio-stream",
            token=None,
            listen_url=f"{base}/frontend-audio?call_control_id=c{index}",
        )
        for index in range(streams)
    ]


def run_once(
    server: str, streams: int, listeners: int, args: argparse.Namespace, tmp: Path
) -> LoadResult:
    auth = BenchAuth()
    with (
        _simulator(args.load_core) if server == "callbridge" else nullcontext({}) as telnyx,
        _server(server, args.server_core, tmp, auth, telnyx) as (pid, port, sim),
    ):
        targets = _targets(server, port, sim, streams, listeners, auth)
        try:
            return run_load(
                targets,
                listeners=listeners,
                duration=args.duration,
                workers=args.workers,
                server_pid=pid,
                cpus=[args.load_core],
                warmup=args.warmup,
            )
        finally:
            if server == "callbridge":
                asyncio.run(hang_up(f"http://127.0.0.1:{port}", targets, auth.api_key))


def _sustained(result: LoadResult) -> bool:
    return result.loss < 0.001 and result.latency_ms["p99"] < 40 and not result.errors


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--servers", default=",".join(SERVERS))
    parser.add_argument("--streams", default="200")
    parser.add_argument("--listeners", default="1")
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--duration", type=float, default=17.0, help="seconds, warm-up included")
    parser.add_argument("--warmup", type=float, default=2.0)
    parser.add_argument("--workers", type=int, default=3)
    parser.add_argument("--server-core", type=int, default=0)
    parser.add_argument("--load-core", type=int, default=1)
    parser.add_argument(
        "--search",
        default="",
        help="comma-separated S steps (e.g. 400,600,800,1200,1600): per server and L, the "
        "largest S sustained (loss < 0.1 %%, p99 < 40 ms) in one run per step, stopping at "
        "the first step that fails",
    )
    args = parser.parse_args()
    if shutil.which("taskset") is None:
        raise SystemExit("taskset (util-linux) is needed to pin the server")
    servers = args.servers.split(",")
    rows: list[dict[str, Any]] = []
    if args.search:
        _search(servers, args)
        return
    with tempfile.TemporaryDirectory() as tmp:
        for streams in (int(s) for s in args.streams.split(",")):
            for listeners in (int(n) for n in args.listeners.split(",")):
                results: dict[str, list[LoadResult]] = {server: [] for server in servers}
                for _ in range(args.runs):
                    for server in servers:  # interleaved, so drift hits every server alike
                        results[server].append(
                            run_once(server, streams, listeners, args, Path(tmp))
                        )
                for server, runs in results.items():
                    rows.append(_row(server, streams, listeners, runs))
                    print(_format(rows[-1]), flush=True)


def _search(servers: list[str], args: argparse.Namespace) -> None:
    """The largest S each server sustains, for each L: one run per step, upwards."""
    steps = [int(s) for s in args.search.split(",")]
    print("| server | L | largest S sustained | first S not sustained (loss, p99, send rate) |")
    print("|---|---|---|---|")
    with tempfile.TemporaryDirectory() as tmp:
        for listeners in (int(n) for n in args.listeners.split(",")):
            for server in servers:
                best, failed = 0, "—"
                for streams in steps:
                    result = run_once(server, streams, listeners, args, Path(tmp))
                    if not _sustained(result):
                        failed = (
                            f"{streams} ({result.loss:.2%}, {result.latency_ms['p99']:.0f} ms, "
                            f"{result.send_rate:.0f}/{result.target_rate:.0f})"
                        )
                        break
                    best = streams
                print(f"| {server} | {listeners} | {best} | {failed} |", flush=True)


def _row(server: str, streams: int, listeners: int, runs: list[LoadResult]) -> dict[str, Any]:
    def median(values: list[float | None]) -> float:
        present = [v for v in values if v is not None]
        return statistics.median(present) if present else float("nan")

    return {
        "server": server,
        "S": streams,
        "L": listeners,
        "us_per_frame": median([r.server_cpu_us_per_frame for r in runs]),
        "p50_ms": median([r.latency_ms["p50"] for r in runs]),
        "p99_ms": median([r.latency_ms["p99"] for r in runs]),
        "loss": median([r.loss for r in runs]),
        "send_rate": median([r.send_rate for r in runs]),
        "target_rate": runs[0].target_rate,
        "lag_p99_ms": median([r.send_lag_ms["p99"] for r in runs]),
        "rss_mb": median([r.server_rss_mb for r in runs]),
        "sustained": sum(_sustained(r) for r in runs),
        "runs": len(runs),
    }


def _format(row: dict[str, Any]) -> str:
    return (
        f"| {row['server']} | {row['S']} | {row['L']} | {row['us_per_frame']:.1f} | "
        f"{row['p50_ms']:.2f} | {row['p99_ms']:.2f} | {row['loss']:.3%} | "
        f"{row['send_rate']:.0f}/{row['target_rate']:.0f} | {row['lag_p99_ms']:.2f} | "
        f"{row['rss_mb']:.0f} | {row['sustained']}/{row['runs']} |"
    )


if __name__ == "__main__":
    main()
