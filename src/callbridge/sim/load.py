"""`callbridge simulate load`: many simulated calls, each with listeners, measured end to end.

Each call gets a carrier stream that behaves like Telnyx (Telnyx's exact JSON, one 20 ms PCMU
`media` frame every 20 ms, paced against a monotonic deadline) and L browser listeners on
`/frontend-audio`, each with its own browser token for that call (minted with the API key, so
the service's per-token connection limit never applies to the load). The sender's clock
travels in `media.timestamp` (microseconds, mod 2**32), which callbridge passes through verbatim
into the binary frame, so each listener measures the end-to-end latency of every frame. Loss is
counted from the chunk numbers and from what the service reports it dropped. The service's CPU
time comes from /proc/<pid>/stat over the measured window, so the report can say how many CPU
microseconds one delivered frame costs.

The work is spread over several processes (one event loop each) so the load generator keeps its
own pacing; the report says what send rate it achieved. Its sockets are picows clients (frames
parsed in C, a callback per frame): with websockets' Python parser the generator itself fell
behind at 500 streams, before the servers it measures did.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import dataclasses
import multiprocessing
import os
import time
from array import array
from collections.abc import Sequence
from multiprocessing.synchronize import Barrier
from pathlib import Path
from typing import Any

import httpx
import orjson
from picows import WSCloseCode, WSFrame, WSListener, WSMsgType, WSTransport, ws_connect

from callbridge.audio.frames import FRAME_HEADER
from callbridge.carrier.telnyx.media import AUTH_HEADER
from callbridge.sim.auth import (
    AuthRefused,
    api_headers,
    explain_refusal,
    mint_token,
    token_subprotocols,
)

__all__ = [
    "CallTarget",
    "LoadResult",
    "dial_calls",
    "find_listening_pid",
    "percentile",
    "run_load",
]

FRAME_SECONDS = 0.020
U32 = 0xFFFFFFFF
DIAL_CONCURRENCY = 32
NO_MEDIA = "+15550100012"  # the simulator answers and leaves the media side to us


@dataclasses.dataclass(frozen=True, slots=True)
class CallTarget:
    """Where one call's carrier stream goes, with its token, and where its listeners go."""

    call_control_id: str
    stream_url: str
    token: str | None
    listen_url: str
    listen_tokens: tuple[str, ...] = ()  # one browser token per listener


@dataclasses.dataclass(slots=True)
class WorkerResult:
    sent: int = 0
    delivered: int = 0
    dropped: int = 0  # what the service told listeners it dropped (their `end` message)
    missing: int = 0  # chunks a listener never saw (drops and anything else)
    late_ticks: int = 0  # ticks the sender started more than one frame late
    send_seconds: float = 0.0
    measured: int = 0  # frames delivered after the warm-up (the CPU window's frames)
    latencies_us: array[int] = dataclasses.field(default_factory=lambda: array("I"))
    lags_us: array[int] = dataclasses.field(default_factory=lambda: array("I"))
    errors: list[str] = dataclasses.field(default_factory=list)


@dataclasses.dataclass(slots=True)
class LoadResult:
    calls: int
    listeners: int
    duration: float
    sent: int
    expected: int
    delivered: int
    dropped: int
    missing: int
    send_rate: float  # frames per second achieved, all calls
    target_rate: float
    latency_ms: dict[str, float]
    server_cpu_seconds: float | None
    server_cpu_us_per_frame: float | None
    server_rss_mb: float | None
    send_lag_ms: dict[str, float]
    errors: list[str]

    @property
    def loss(self) -> float:
        return 1 - self.delivered / self.expected if self.expected else 0.0

    def to_dict(self) -> dict[str, Any]:
        data = dataclasses.asdict(self)
        data["loss"] = self.loss
        return data


def percentile(sorted_values: Sequence[int], fraction: float) -> float:
    if not sorted_values:
        return float("nan")
    index = min(len(sorted_values) - 1, round(fraction * (len(sorted_values) - 1)))
    return float(sorted_values[index])


# --- the service's side of the measurement ---------------------------------------------------


def find_listening_pid(port: int) -> int | None:
    """The pid of the process listening on a TCP port (Linux /proc), or None."""
    inodes: set[str] = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        with contextlib.suppress(OSError):
            for line in Path(table).read_text().splitlines()[1:]:
                fields = line.split()
                if fields[3] == "0A" and int(fields[1].rsplit(":", 1)[1], 16) == port:
                    inodes.add(fields[9])
    if not inodes:
        return None
    wanted = {f"socket:[{inode}]" for inode in inodes}
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        with contextlib.suppress(OSError):
            for fd in (proc / "fd").iterdir():
                with contextlib.suppress(OSError):
                    if os.readlink(fd) in wanted:
                        return int(proc.name)
    return None


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process so far."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


# --- setting calls up through the service and its simulator -----------------------------------


async def dial_calls(
    target: str,
    sim: str,
    count: int,
    *,
    listeners: int = 1,
    api_key: str | None = None,
    token_ttl: int = 3600,
) -> list[CallTarget]:
    """Dial `count` calls through callbridge; read each stream token from the simulator, and
    mint a listen token per listener (AuthRefused says what to do about a 401).

    At most DIAL_CONCURRENCY calls are set up at once: thousands of requests started together
    wait for a pooled connection longer than any timeout, and a service under test should not
    be measured on a stampede it would never see from one client."""
    ws = "ws" + target.removeprefix("http")
    gate = asyncio.Semaphore(DIAL_CONCURRENCY)
    async with (
        httpx.AsyncClient(base_url=target, timeout=30, headers=api_headers(api_key)) as api,
        httpx.AsyncClient(base_url=sim, timeout=30) as simulator,
    ):

        async def one() -> CallTarget:
            async with gate:
                return await set_up()

        async def set_up() -> CallTarget:
            response = await api.post("/api/calls", json={"to": NO_MEDIA})
            if response.status_code in (401, 403):
                raise AuthRefused(explain_refusal(response, api_key is not None))
            response.raise_for_status()
            call_id = response.json()["data"]["call_control_id"]
            stream = (await simulator.get(f"/_sim/calls/{call_id}")).json()["stream"]
            tokens = await asyncio.gather(
                *(
                    mint_token(api, calls=[call_id], rights=("listen",), ttl=token_ttl)
                    for _ in range(listeners)
                )
            )
            return CallTarget(
                call_control_id=call_id,
                stream_url=stream["stream_url"],
                token=stream.get("stream_auth_token"),
                listen_url=f"{ws}/frontend-audio?call_control_id={call_id}",
                listen_tokens=tuple(tokens),
            )

        return list(await asyncio.gather(*(one() for _ in range(count))))


async def hang_up(target: str, calls: Sequence[CallTarget], api_key: str | None = None) -> None:
    async with httpx.AsyncClient(base_url=target, timeout=30, headers=api_headers(api_key)) as api:
        await asyncio.gather(
            *(api.post(f"/api/calls/{c.call_control_id}/hangup") for c in calls),
            return_exceptions=True,
        )


# --- one worker process ----------------------------------------------------------------------


def _now_us() -> int:
    return time.monotonic_ns() // 1000  # CLOCK_MONOTONIC: shared by every process on the host


class _Stream:
    """Telnyx's side of one media socket, cut to what the load needs."""

    def __init__(self, transport: WSTransport, target: CallTarget) -> None:
        self.transport = transport
        self.target = target
        self.seq = 0
        self.chunk = 0
        self.stream_id = f"load-{target.call_control_id[-12:]}"
        self.payload = base64.b64encode(bytes(range(96, 256)) * 1).decode()  # 160 bytes

    def _seq(self) -> str:
        self.seq += 1
        return str(self.seq)

    def send(self, text: str) -> None:
        self.transport.send(WSMsgType.TEXT, text.encode())

    def begin(self) -> None:
        self.send('{"event":"connected","version":"1.0.0"}')
        start = {
            "event": "start",
            "sequence_number": self._seq(),
            "stream_id": self.stream_id,
            "start": {
                "call_control_id": self.target.call_control_id,
                "media_format": {"encoding": "PCMU", "sample_rate": 8000, "channels": 1},
            },
        }
        self.send(orjson.dumps(start).decode())

    def media(self, now_us: int) -> str:
        self.chunk += 1
        return (
            '{"event":"media","sequence_number":"'
            + self._seq()
            + '","stream_id":"'
            + self.stream_id
            + '","media":{"track":"inbound","chunk":"'
            + str(self.chunk)
            + '","timestamp":"'
            + str(now_us & U32)
            + '","payload":"'
            + self.payload
            + '"}}'
        )

    def stop(self) -> None:
        stop = {"event": "stop", "sequence_number": self._seq(), "stream_id": self.stream_id}
        self.send(orjson.dumps(stop).decode())


class _Window:
    """When the measured window starts (µs of the shared monotonic clock, mod 2**32)."""

    def __init__(self) -> None:
        self.start_us: int | None = None

    def counts(self, timestamp: int) -> bool:
        start = self.start_us
        return start is not None and (timestamp - start) & U32 < 0x80000000


class _Listener(WSListener):
    """One browser on /frontend-audio: counts frames and their latency until `end`."""

    def __init__(self, result: WorkerResult, window: _Window) -> None:
        loop = asyncio.get_running_loop()
        self.result = result
        self.window = window
        self.last_chunk = 0
        self.ready = loop.create_future()  # a format with a codec: audio will follow
        self.ended = loop.create_future()  # `end`, or the socket closed
        self.close_code: int | None = None
        self.close_reason = ""

    def on_ws_frame(self, transport: WSTransport, frame: WSFrame) -> None:
        kind = frame.msg_type
        if kind is WSMsgType.BINARY:
            now = _now_us()
            _kind, _track, _reserved, chunk, timestamp = FRAME_HEADER.unpack_from(
                frame.get_payload_as_memoryview()
            )
            result = self.result
            result.delivered += 1
            if self.window.counts(timestamp):  # after the warm-up
                result.latencies_us.append((now - timestamp) & U32)
                result.measured += 1
            if chunk > self.last_chunk + 1:
                result.missing += chunk - self.last_chunk - 1
            self.last_chunk = max(self.last_chunk, chunk)
        elif kind is WSMsgType.TEXT:
            message = orjson.loads(frame.get_payload_as_bytes())
            if message.get("type") == "format" and message.get("codec"):
                _settle(self.ready)
            elif message.get("type") == "end":
                self.result.dropped += int(message.get("dropped", 0))
                _settle(self.ended)
        elif kind is WSMsgType.CLOSE:
            code: Any = frame.get_close_code()  # the enum, or an int for 4xxx codes
            self.close_code = int(code.value if isinstance(code, WSCloseCode) else code)
            self.close_reason = frame.get_close_reason() or ""
            transport.send_close(WSCloseCode.OK)
            transport.disconnect()

    def on_ws_disconnected(self, transport: WSTransport) -> None:
        _settle(self.ended)


class _Carrier(WSListener):
    """The carrier's socket: it only sends; what comes back (talk-back) is ignored."""

    def on_ws_frame(self, transport: WSTransport, frame: WSFrame) -> None:
        if frame.msg_type is WSMsgType.CLOSE:
            transport.disconnect()


def _settle(future: asyncio.Future[None]) -> None:
    if not future.done():
        future.set_result(None)


SLOTS = 20  # phases per 20 ms frame: streams are spread evenly, 1 ms apart


async def _until_ready(listener: _Listener) -> None:
    """Wait for a listener's codec; one the service closed first (a refused token, too many
    connections) fails the run with the service's close code and reason."""
    await asyncio.wait(
        {listener.ready, listener.ended}, timeout=30, return_when=asyncio.FIRST_COMPLETED
    )
    if listener.ready.done():
        return
    if listener.ended.done():
        raise RuntimeError(
            f"a listener was closed before any audio: {listener.close_code} "
            f"{listener.close_reason}".rstrip()
        )
    raise TimeoutError("a listener got no format with a codec within 30 s")


async def _worker(
    targets: Sequence[CallTarget],
    phases: Sequence[int],
    listeners: int,
    duration: float,
    warmup: float,
    barrier: Barrier,
) -> WorkerResult:
    result = WorkerResult()
    window = _Window()
    opened: list[tuple[WSTransport, _Listener]] = []
    slots: dict[int, list[_Stream]] = {}
    for target, phase in zip(targets, phases, strict=True):
        waiting: list[_Listener] = []
        for index in range(listeners):
            tokens = target.listen_tokens
            headers = (
                {"Sec-WebSocket-Protocol": ", ".join(token_subprotocols(tokens[index]))}
                if tokens
                else None
            )
            transport, listener = await ws_connect(
                lambda: _Listener(result, window),
                target.listen_url,
                websocket_handshake_timeout=30,
                extra_headers=headers,
            )
            assert isinstance(listener, _Listener)
            opened.append((transport, listener))
            waiting.append(listener)
        headers = {AUTH_HEADER: target.token} if target.token else None
        carrier, _ = await ws_connect(
            _Carrier, target.stream_url, websocket_handshake_timeout=30, extra_headers=headers
        )
        stream = _Stream(carrier, target)
        stream.begin()
        for listener in waiting:
            await _until_ready(listener)
        slots.setdefault(phase, []).append(stream)
    await asyncio.to_thread(barrier.wait)  # every worker is connected: start together

    began = time.monotonic()
    window.start_us = (_now_us() + round(warmup * 1e6)) & U32
    ticks = round(duration / FRAME_SECONDS)
    slot_seconds = FRAME_SECONDS / SLOTS
    for tick in range(ticks):
        tick_start = began + tick * FRAME_SECONDS
        for slot, batch in sorted(slots.items()):
            due = tick_start + slot * slot_seconds
            delay = due - time.monotonic()
            if delay > 0:
                await asyncio.sleep(delay)  # pacing to the schedule, not synchronisation
            now = _now_us()
            result.lags_us.append(max(0, round((time.monotonic() - due) * 1e6)))
            for stream in batch:
                stream.send(stream.media(now))
            result.sent += len(batch)
        if time.monotonic() - tick_start > 2 * FRAME_SECONDS:
            result.late_ticks += 1
    result.send_seconds = time.monotonic() - began
    streams = [stream for batch in slots.values() for stream in batch]
    for stream in streams:
        stream.stop()
    _done, pending = await asyncio.wait([listener.ended for _, listener in opened], timeout=30)
    if pending:
        result.errors.append(f"{len(pending)} listeners got no end message in 30 s")
    for transport, _ in opened:
        transport.disconnect()
    for stream in streams:
        stream.transport.send_close(WSCloseCode.OK)
        stream.transport.disconnect()
    return result


def _worker_main(
    targets: list[CallTarget],
    phases: list[int],
    listeners: int,
    duration: float,
    warmup: float,
    barrier: Barrier,
    results: Any,
    cpus: list[int] | None,
) -> None:
    if cpus:
        os.sched_setaffinity(0, cpus)
    try:
        import uvloop

        result = uvloop.run(_worker(targets, phases, listeners, duration, warmup, barrier))
    except Exception as exc:  # report, so the parent does not wait forever
        result = WorkerResult(errors=[f"{type(exc).__name__}: {exc}"])
        with contextlib.suppress(Exception):
            barrier.abort()
    results.put(result)


def run_load(
    targets: Sequence[CallTarget],
    *,
    listeners: int,
    duration: float,
    workers: int,
    server_pid: int | None,
    cpus: list[int] | None = None,
    warmup: float = 0.0,
) -> LoadResult:
    """Run the load from `workers` processes and measure the server after `warmup` seconds.

    Streams are spread evenly over the 20 ms frame period (even arrivals), each stamped with
    the real send time, so queueing in the sender counts as latency."""
    workers = max(1, min(workers, len(targets)))
    context = multiprocessing.get_context("spawn")
    barrier = context.Barrier(workers + 1)
    results = context.Queue()
    phases = [index * SLOTS // len(targets) for index in range(len(targets))]
    slices = [list(targets[index::workers]) for index in range(workers)]
    phase_slices = [phases[index::workers] for index in range(workers)]
    processes = [
        context.Process(
            target=_worker_main,
            args=(part, phase, listeners, duration, warmup, barrier, results, cpus),
        )
        for part, phase in zip(slices, phase_slices, strict=True)
    ]
    for process in processes:
        process.start()
    errors: list[str] = []
    cpu_before: float | None = None
    cpu_after: float | None = None
    try:
        barrier.wait(timeout=120)
        began = time.monotonic()
        time.sleep(warmup)  # the warm-up is excluded from every figure
        cpu_before = cpu_seconds(server_pid) if server_pid else None
        time.sleep(max(0.0, began + duration - time.monotonic()))
        cpu_after = cpu_seconds(server_pid) if server_pid else None
    except Exception as exc:  # a worker failed to set up: it reported why
        errors.append(f"setup failed: {type(exc).__name__}")
    parts = [results.get(timeout=duration + 120) for _ in processes]
    rss = rss_mb(server_pid) if server_pid else None
    for process in processes:
        process.join(timeout=30)
    sent = sum(p.sent for p in parts)
    delivered = sum(p.delivered for p in parts)
    latencies = sorted(value for p in parts for value in p.latencies_us)
    lags = sorted(value for p in parts for value in p.lags_us)
    measured = sum(p.measured for p in parts)
    errors += [error for p in parts for error in p.errors]
    cpu = cpu_after - cpu_before if cpu_after is not None and cpu_before is not None else None
    return LoadResult(
        calls=len(targets),
        listeners=listeners,
        duration=duration,
        sent=sent,
        expected=sent * listeners,
        delivered=delivered,
        dropped=sum(p.dropped for p in parts),
        missing=sum(p.missing for p in parts),
        send_rate=sent / max((p.send_seconds for p in parts), default=0.0) if sent else 0.0,
        target_rate=len(targets) / FRAME_SECONDS,
        latency_ms={
            "p50": percentile(latencies, 0.50) / 1000,
            "p90": percentile(latencies, 0.90) / 1000,
            "p99": percentile(latencies, 0.99) / 1000,
            "max": (latencies[-1] / 1000) if latencies else float("nan"),
        },
        server_cpu_seconds=cpu,
        server_cpu_us_per_frame=(cpu * 1e6 / measured) if cpu is not None and measured else None,
        send_lag_ms={"p50": percentile(lags, 0.5) / 1000, "p99": percentile(lags, 0.99) / 1000},
        server_rss_mb=rss,
        errors=errors,
    )
