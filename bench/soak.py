"""Soak: a bounded run of steady traffic that asks one question, does anything leak?

    .venv/bin/python -m bench.soak --minutes 10

It starts `callbridge serve` in simulator mode (SQLite, the in-memory hub, explicit API key and
token secret, the built-in simulator playing Telnyx in the same process) pinned to one core, and
drives it from this process, pinned to the other, with:

- a steady population of `--calls` calls, each dialled through the REST API with a scenario
  drawn from a fixed mix (answered, DTMF, PCMA, L16, a dropped media socket, busy, a failed
  stream, duplicated and shuffled webhooks...); "long" calls are hung up by us, the others by
  the simulated far end. A new call is dialled as soon as one ends. `CALLBRIDGE_SIM_PACE` scales
  the scripts so that a call lasts about `--call-seconds`; the media stays real time (one 20 ms
  frame per track every 20 ms);
- `--subscribers` `/call-events` clients that stay a few seconds to a minute, leave, and come
  back with `since` and `epoch`, refreshing their short-lived tokens while connected; every one
  checks that the seqs it sees stay contiguous across its reconnections (the log has no holes),
  and one more stays connected all along and tells the callers when their call ended;
- `--listeners` `/frontend-audio` clients that join a random live call for a few seconds and
  leave, some of them talking into it (`talk.start`, then 20 ms PCM16 frames, `talk.stop`).

Every `--sample` seconds it records the service's RSS, open file descriptors, threads and CPU
(/proc), its asyncio tasks and live sockets (`/metrics`), the size of the SQLite files, and the
client's own counts. At the end it prints the samples and a verdict, and writes summary.json and
summary.md next to the service's log: flat means that, after `--warmup`, the mean of the last
third of the samples exceeds the mean of the first third by no more than the stated tolerance,
for RSS, file descriptors and tasks; and, once every call has ended and every client has left,
the tasks are back where they were before the load (descriptors are listed by kind: connection
pools and the store's connections stay open, as they should). It exits 1 if anything is not
flat, if any event was lost (a gap in seqs, a resync, a subscriber that could not catch up), if
a client saw an error, or if the service logged one.

The warm-up (2 minutes by default) covers what fills up to a bound and then stays: the
simulator's history of the last 100 ended calls for /_sim/ (about 1.5 minutes of this churn),
the connection pools, the store's connections and the allocator's working set.
"""

from __future__ import annotations

import argparse
import array
import asyncio
import contextlib
import dataclasses
import math
import os
import random
import secrets
import statistics
import subprocess
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import orjson
from bench.relay import _free_port
from bench.scale import _process
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed

from callbridge.audio.frames import unpack_frame
from callbridge.auth.keys import generate_key, key_entry
from callbridge.sim.load import cpu_seconds, rss_mb
from callbridge.sim.scenarios import SCENARIOS

ROOT = Path(__file__).parents[1]

# Scenario, weight, and whether we hang up (True) or the far end does (False).
MIX: tuple[tuple[str, float, bool], ...] = (
    ("answered", 4, False),
    ("long", 3, True),
    ("dtmf", 1, False),
    ("pcma", 1, False),
    ("l16", 1, False),
    ("media-drop", 1, False),
    ("far-end-hangs-up", 1, False),
    ("duplicates", 1, False),
    ("busy", 0.5, False),
    ("streaming-failed", 0.5, False),
)
TRACKS = ("both_tracks", "both_tracks", "inbound_track")

# Flat = growth of the last third's mean over the first third's within max(relative, absolute).
TOLERANCE: dict[str, tuple[float, float]] = {
    "rss_mb": (0.05, 5.0),
    "fds": (0.10, 10.0),
    "tasks": (0.10, 20.0),
}
IDLE_SLACK = {"tasks": 5}  # back at idle after the load: this close to the start
TCP_STATES = {"01": "established", "06": "time-wait", "08": "close-wait", "0A": "listen"}

SUBSCRIBER_TTL = 30  # seconds: short, so that refreshes and expiry deadlines are exercised
LISTENER_TTL = 60
TALK_FRAME = array.array(
    "h", (round(6000 * math.sin(2 * math.pi * 440 * n / 8000)) for n in range(160))
).tobytes()  # 20 ms of a 440 Hz tone, PCM16 little-endian at 8 kHz


# --- the service -------------------------------------------------------------------------------


@dataclasses.dataclass(slots=True)
class Service:
    process: subprocess.Popen[str]
    url: str
    key: str
    database: Path
    log: Path

    @property
    def pid(self) -> int:
        return self.process.pid


@contextlib.contextmanager
def service(out: Path, core: int, pace: float) -> Iterator[Service]:
    """`callbridge serve` in simulator mode, pinned to `core`, logging to out/service.log."""
    key = generate_key()
    port = _free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith(("CALLBRIDGE_", "TELNYX_"))}
    env.update(
        CALLBRIDGE_HOST="127.0.0.1",
        CALLBRIDGE_PORT=str(port),
        CALLBRIDGE_SIM_PORT=str(_free_port()),
        CALLBRIDGE_DATABASE_URL=f"sqlite:///{out}/soak.db",
        CALLBRIDGE_BROKER_URL="memory://",
        CALLBRIDGE_API_KEYS=key_entry("soak", key),
        CALLBRIDGE_TOKEN_SECRET=secrets.token_urlsafe(48),
        CALLBRIDGE_SIM_PACE=str(pace),
        CALLBRIDGE_DIAL_RATE_PER_MINUTE="0",  # the population redials as fast as calls end
        CALLBRIDGE_LOG_FORMAT="json",
        CALLBRIDGE_LOG_LEVEL="info",
        SOAK_LOG=str(out / "service.log"),
    )
    # The log goes to a file, read at the end; `exec` keeps the pid the service's own.
    command = ["sh", "-c", 'exec "$0" "$@" > "$SOAK_LOG" 2>&1', "taskset", "-c", str(core)]
    with _process([*command, sys.executable, "-m", "callbridge", "serve"], env) as process:
        running = Service(
            process, f"http://127.0.0.1:{port}", key, out / "soak.db", out / "service.log"
        )
        deadline = time.monotonic() + 30
        while True:
            if process.poll() is not None:
                tail = running.log.read_text(errors="replace")[-3000:]
                raise RuntimeError(f"callbridge exited ({process.returncode}):\n{tail}")
            with contextlib.suppress(httpx.HTTPError):
                if httpx.get(f"{running.url}/api/health", timeout=1).status_code == 200:
                    break
            if time.monotonic() > deadline:
                raise RuntimeError("callbridge did not answer /api/health within 30 s")
            time.sleep(0.1)
        yield running


def _status(pid: int, field: str) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    return -1


def _fd_kinds(pid: int) -> dict[str, int]:
    """What the open descriptors are: TCP sockets by state, the store's files, pipes..."""
    states: dict[str, str] = {}
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        for line in Path(table).read_text().splitlines()[1:]:
            fields = line.split()
            states[f"socket:[{fields[9]}]"] = TCP_STATES.get(fields[3], fields[3])
    kinds: Counter[str] = Counter()
    for fd in Path(f"/proc/{pid}/fd").iterdir():
        with contextlib.suppress(OSError):
            target = os.readlink(fd)
            if target in states:
                kinds[f"tcp {states[target]}"] += 1
            elif target.startswith("/"):
                kinds["store" if ".db" in target else target.rsplit("/", 1)[-1]] += 1
            else:
                kinds[target.split(":")[0]] += 1
    return dict(kinds.most_common())


def _log_findings(log: Path) -> dict[str, int]:
    """Warnings and errors the service logged, by message; any line that is not JSON too (a
    traceback that bypassed the logger)."""
    found: Counter[str] = Counter()
    for line in log.read_text(errors="replace").splitlines():
        try:
            entry = orjson.loads(line)
        except orjson.JSONDecodeError:
            found["not JSON"] += bool(line.strip())
            continue
        if isinstance(entry, dict) and entry.get("level") in ("warning", "error", "critical"):
            found[f"{entry['level']}: {entry.get('event')}"] += 1
    return dict(found.most_common())


def _metrics(text: str) -> dict[str, float]:
    wanted = {
        "callbridge_asyncio_tasks": "tasks",
        "callbridge_event_clients": "event_clients",
        "callbridge_media_listeners": "listeners_open",
        "callbridge_media_streams": "streams_open",
    }
    found: dict[str, float] = {}
    for line in text.splitlines():
        name, _, value = line.rpartition(" ")
        if name in wanted:
            found[wanted[name]] = float(value)
    return found


# --- what the clients saw ----------------------------------------------------------------------


@dataclasses.dataclass(slots=True)
class Tally:
    calls_dialled: int = 0
    calls_ended: int = 0
    calls_hung_up: int = 0  # by us, the "long" ones
    listener_sessions: int = 0
    frames: int = 0
    audio_missing: int = 0  # chunks a listener never saw (lossy by design: reported, not failed)
    audio_dropped: int = 0  # what the service said it dropped for our listeners
    talk_sessions: int = 0
    talk_refused: int = 0  # someone else was talking, or the call has no talk-back
    talk_frames: int = 0
    subscriber_sessions: int = 0
    events: int = 0
    replayed: int = 0
    gaps: int = 0  # seqs skipped: lost events
    duplicates: int = 0
    resyncs: int = 0
    not_caught_up: int = 0  # subscribers short of the last seq at the end
    token_refreshes: int = 0
    errors: Counter[str] = dataclasses.field(default_factory=Counter)
    samples: dict[str, str] = dataclasses.field(default_factory=dict)  # one message per kind

    def error(self, kind: str, detail: object = "") -> None:
        self.errors[kind] += 1
        self.samples.setdefault(kind, str(detail)[:300])

    def snapshot(self) -> dict[str, int]:
        data = {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}
        data["errors"] = sum(self.errors.values())
        del data["samples"]
        return data


def _close_code(exc: ConnectionClosed) -> int | None:
    frame = exc.rcvd or exc.sent
    return frame.code if frame is not None else None


class Soak:
    def __init__(self, running: Service, args: argparse.Namespace) -> None:
        self.service = running
        self.args = args
        self.ws_url = "ws" + running.url.removeprefix("http")
        self.api = httpx.AsyncClient(
            base_url=running.url,
            headers={"Authorization": f"Bearer {running.key}"},
            timeout=30,
        )
        self.tally = Tally()
        self.live: dict[str, str] = {}  # call_control_id -> scenario, while it lasts
        self.ended: dict[str, asyncio.Event] = {}
        self.stopping = asyncio.Event()
        self.final_seq: int | None = None  # every subscriber must reach it before it leaves
        self.monitor_ready = asyncio.Event()

    # --- REST --------------------------------------------------------------------------------

    async def _token(self, calls: list[str] | str, rights: list[str], ttl: int) -> str:
        response = await self.api.post(
            "/api/tokens", json={"calls": calls, "rights": rights, "ttl": ttl}
        )
        response.raise_for_status()
        return str(response.json()["token"])

    async def head(self) -> tuple[int, str]:
        """The newest seq and the epoch, from a welcome."""
        token = await self._token("*", ["events"], SUBSCRIBER_TTL)
        async with connect(f"{self.ws_url}/call-events?token={token}") as probe:
            welcome = orjson.loads(await probe.recv())
        return int(welcome["seq"]), str(welcome["epoch"])

    # --- calls -------------------------------------------------------------------------------

    async def caller(self) -> None:
        """One slot of the population: dial, wait for the end, dial again."""
        names = [name for name, _w, _h in MIX]
        weights = [weight for _n, weight, _h in MIX]
        ours = {name for name, _w, hangs_up in MIX if hangs_up}
        await asyncio.sleep(random.uniform(0, self.args.call_seconds / 2))  # stagger the starts
        while not self.stopping.is_set():
            scenario = random.choices(names, weights)[0]
            try:
                response = await self.api.post(
                    "/api/calls",
                    json={"to": SCENARIOS[scenario].number, "stream_track": random.choice(TRACKS)},
                )
                response.raise_for_status()
            except httpx.HTTPError as exc:
                self.tally.error("dial", exc)
                await asyncio.sleep(1)
                continue
            call_id = response.json()["data"]["call_control_id"]
            self.tally.calls_dialled += 1
            self.live[call_id] = scenario
            ended = self.ended.setdefault(call_id, asyncio.Event())
            limit = 60 * self.args.pace + 30  # longer than any script: a call never ended
            if scenario in ours:
                hold = random.uniform(0.5, 1.5) * self.args.call_seconds
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(_first(ended.wait(), self.stopping.wait()), hold)
                if not ended.is_set():
                    await self._hang_up(call_id)
            try:
                await asyncio.wait_for(_first(ended.wait(), self.stopping.wait()), limit)
            except TimeoutError:
                self.tally.error("call_never_ended", f"{scenario} {call_id}")
            if not ended.is_set():  # the run is over: hang up, then wait for it to end
                await self._hang_up(call_id)
                try:
                    await asyncio.wait_for(ended.wait(), 30)
                except TimeoutError:
                    self.tally.error("call_never_ended", f"{scenario} {call_id}")
            self.live.pop(call_id, None)
            self.ended.pop(call_id, None)

    async def _hang_up(self, call_id: str) -> None:
        try:
            response = await self.api.post(f"/api/calls/{call_id}/hangup")
            response.raise_for_status()
            self.tally.calls_hung_up += 1
        except httpx.HTTPError as exc:
            self.tally.error("hangup", exc)

    def _on_event(self, event: dict[str, Any]) -> None:
        """The monitor's view: a call that reached `ended` frees its caller's slot."""
        if event.get("type") == "call.state" and event["payload"].get("state") == "ended":
            self.tally.calls_ended += 1
            self.ended.setdefault(event["call_control_id"], asyncio.Event()).set()

    # --- /call-events ------------------------------------------------------------------------

    async def subscriber(self, monitor: bool = False) -> None:
        """Connect, follow, leave, come back with `since`; seqs must stay contiguous."""
        cursor: int | None = None
        epoch: str | None = None
        while True:
            if self.final_seq is not None and cursor is not None and cursor >= self.final_seq:
                return
            try:
                token = await self._token("*", ["events"], SUBSCRIBER_TTL)
                query = f"token={token}"
                if cursor is not None:
                    query += f"&since={cursor}&epoch={epoch}"
                async with connect(f"{self.ws_url}/call-events?{query}", max_queue=None) as ws:
                    self.tally.subscriber_sessions += 1
                    welcome = orjson.loads(await ws.recv())
                    epoch = welcome["epoch"]
                    if cursor is None:
                        cursor = int(welcome["seq"])
                    if monitor:
                        self.monitor_ready.set()
                    stay = math.inf if monitor else random.uniform(3, self.args.session_max)
                    cursor = await self._follow(
                        ws, cursor, stay, self._on_event if monitor else None
                    )
            except ConnectionClosed as exc:
                self.tally.error(f"call-events closed {_close_code(exc)}", exc)
            except (OSError, httpx.HTTPError, TimeoutError) as exc:
                self.tally.error(f"call-events {type(exc).__name__}", repr(exc))
            if monitor and cursor is not None and self.final_seq is None:
                continue  # the monitor comes straight back
            if self.final_seq is None:
                await _sleep_unless(self.stopping, random.uniform(0, 5))

    async def _follow(
        self,
        ws: ClientConnection,
        cursor: int,
        stay: float,
        on_event: Callable[[dict[str, Any]], None] | None,
    ) -> int:
        left = time.monotonic() + stay
        refresh = time.monotonic() + SUBSCRIBER_TTL / 2
        while True:
            now = time.monotonic()
            if self.final_seq is not None and cursor >= self.final_seq:
                return cursor
            if now >= left and self.final_seq is None:
                return cursor
            if now >= refresh:
                token = await self._token("*", ["events"], SUBSCRIBER_TTL)
                await ws.send(orjson.dumps({"type": "token", "token": token}).decode())
                refresh = now + SUBSCRIBER_TTL / 2
            try:
                raw = await asyncio.wait_for(ws.recv(), min(1.0, max(0.01, left - now)))
            except TimeoutError:
                continue
            message = orjson.loads(raw)
            kind = message.get("type")
            if "seq" in message and kind not in ("resync", "welcome"):
                seq = int(message["seq"])
                if seq <= cursor:
                    self.tally.duplicates += 1
                    continue
                if seq > cursor + 1:
                    self.tally.gaps += seq - cursor - 1
                    self.tally.error("event gap", f"{cursor} -> {seq}")
                cursor = seq
                self.tally.events += 1
                if on_event is not None:
                    on_event(message)
            elif kind == "replayed":
                self.tally.replayed += int(message["count"])
                if int(message["to"]) != cursor:
                    self.tally.error("replay short", message)
            elif kind == "resync":
                self.tally.resyncs += 1
                self.tally.error("resync", message)
                cursor = int(message["seq"])
            elif kind == "token.accepted":
                self.tally.token_refreshes += 1
            elif kind != "pong":
                self.tally.error(f"call-events {kind}", message)

    # --- /frontend-audio ---------------------------------------------------------------------

    async def listener(self) -> None:
        """Join a random live call for a while, maybe talk, leave; again."""
        while not self.stopping.is_set():
            if not self.live:
                await asyncio.sleep(0.2)
                continue
            call_id = random.choice(list(self.live))
            talker = random.random() < self.args.talk_share
            try:
                rights = ["listen", "talk"] if talker else ["listen"]
                token = await self._token([call_id], rights, LISTENER_TTL)
                url = f"{self.ws_url}/frontend-audio?call_control_id={call_id}&token={token}"
                async with connect(url, max_queue=None) as ws:
                    self.tally.listener_sessions += 1
                    await self._listen(ws, random.uniform(2, self.args.session_max / 2), talker)
            except ConnectionClosed as exc:
                self.tally.error(f"frontend-audio closed {_close_code(exc)}", exc)
            except (OSError, httpx.HTTPError, TimeoutError) as exc:
                self.tally.error(f"frontend-audio {type(exc).__name__}", repr(exc))
            await _sleep_unless(self.stopping, random.uniform(0, 3))

    async def _listen(self, ws: ClientConnection, stay: float, talker: bool) -> None:
        last_chunk: dict[int, int] = {}
        talk: asyncio.Task[None] | None = None
        talk_answer: asyncio.Queue[dict[str, Any]] = asyncio.Queue()
        if talker:
            talk = asyncio.create_task(self._talk(ws, talk_answer))
        left = time.monotonic() + stay
        try:
            while (wait := left - time.monotonic()) > 0 and not self.stopping.is_set():
                try:
                    raw = await asyncio.wait_for(ws.recv(), min(wait, 1.0))
                except TimeoutError:
                    continue
                if isinstance(raw, bytes):
                    _kind, track, chunk, _ts, _payload = unpack_frame(raw)
                    self.tally.frames += 1
                    previous = last_chunk.get(track)
                    if previous is not None and chunk > previous + 1:
                        self.tally.audio_missing += chunk - previous - 1
                    last_chunk[track] = chunk
                    continue
                message = orjson.loads(raw)
                kind = message.get("type")
                if kind == "format":
                    last_chunk.clear()  # a new stream counts its chunks afresh
                elif kind == "end":
                    self.tally.audio_dropped += int(message.get("dropped", 0))
                    with contextlib.suppress(ConnectionClosed):
                        await ws.recv()  # the close that follows
                    return
                elif kind in ("talk.started", "talk.refused", "talk.stopped", "error"):
                    talk_answer.put_nowait(message)
                elif kind != "mark":
                    self.tally.error(f"frontend-audio {kind}", message)
        finally:
            if talk is not None:
                talk.cancel()
                with contextlib.suppress(asyncio.CancelledError, ConnectionClosed):
                    await talk

    async def _talk(self, ws: ClientConnection, answers: asyncio.Queue[dict[str, Any]]) -> None:
        """After a moment, talk for a second or few in 20 ms PCM16 frames, then stop."""
        await asyncio.sleep(random.uniform(0.3, 1.5))
        await ws.send('{"type":"talk.start","encoding":"pcm16","sample_rate":8000}')
        answer = await asyncio.wait_for(answers.get(), 10)
        if answer["type"] != "talk.started":  # busy (4409), or a call without talk-back
            self.tally.talk_refused += 1
            if answer.get("code") not in (4409,):
                self.tally.error(f"talk {answer.get('code')}", answer)
            return
        self.tally.talk_sessions += 1
        deadline = time.monotonic()
        for _ in range(round(random.uniform(1, 4) / 0.02)):
            await ws.send(TALK_FRAME)
            self.tally.talk_frames += 1
            deadline += 0.02
            await asyncio.sleep(max(0.0, deadline - time.monotonic()))
        await ws.send('{"type":"talk.stop"}')

    # --- sampling ----------------------------------------------------------------------------

    async def sample(self, began: float) -> dict[str, Any]:
        pid = self.service.pid
        text = (await self.api.get("/metrics")).text
        db = self.service.database
        store = sum(p.stat().st_size for p in db.parent.glob(db.name + "*"))
        return {
            "t": round(time.monotonic() - began, 1),
            "rss_mb": round(rss_mb(pid), 1),
            "fds": len(os.listdir(f"/proc/{pid}/fd")),
            **{k: int(v) for k, v in _metrics(text).items()},
            "threads": _status(pid, "Threads"),
            "cpu_s": round(cpu_seconds(pid), 2),
            "store_mb": round(store / 1e6, 2),
            "live_calls": len(self.live),
            "loadavg": os.getloadavg()[0],  # others on the host
            **self.tally.snapshot(),
        }


async def _first(*waits: Awaitable[Any]) -> None:
    tasks = [asyncio.ensure_future(w) for w in waits]
    try:
        await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for task in tasks:
            task.cancel()


async def _sleep_unless(event: asyncio.Event, seconds: float) -> None:
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(event.wait(), seconds)


# --- the run -----------------------------------------------------------------------------------


async def soak(running: Service, args: argparse.Namespace) -> dict[str, Any]:
    run = Soak(running, args)
    samples: list[dict[str, Any]] = []
    async with run.api:
        await asyncio.sleep(2)  # start-up allocations settle
        idle_before = await run.sample(time.monotonic())
        idle_before["fd_kinds"] = _fd_kinds(running.pid)
        began = time.monotonic()
        monitor = asyncio.create_task(run.subscriber(monitor=True))
        await asyncio.wait_for(run.monitor_ready.wait(), 30)
        workers = [asyncio.create_task(run.caller()) for _ in range(args.calls)]
        workers += [asyncio.create_task(run.subscriber()) for _ in range(args.subscribers)]
        workers += [asyncio.create_task(run.listener()) for _ in range(args.listeners)]
        end = began + args.minutes * 60
        header = "    t    RSS MB  fds  tasks  thr  calls  frames     events  gaps  errors"
        print(header, file=sys.stderr, flush=True)
        while (now := time.monotonic()) < end:
            await asyncio.sleep(min(args.sample, end - now))
            if (crashed := [w for w in workers if w.done()]) and not run.stopping.is_set():
                crashed[0].result()  # a client bug: fail loudly
            row = await run.sample(began)
            samples.append(row)
            print(
                f"{row['t']:6.0f} {row['rss_mb']:8.1f} {row['fds']:5d} {row['tasks']:6d} "
                f"{row['threads']:4d} {row['live_calls']:6d} {row['frames']:8d} "
                f"{row['events']:9d} {row['gaps']:5d} {row['errors']:7d}",
                file=sys.stderr,
                flush=True,
            )
        # Wind down: no new calls or sessions; every call ends; subscribers catch up and leave.
        run.stopping.set()
        callers = workers[: args.calls]
        await asyncio.wait_for(asyncio.gather(*callers), 120)
        await asyncio.sleep(2)  # the last webhooks land
        run.final_seq, _epoch = await run.head()
        rest = [*workers[args.calls :], monitor]
        _done, pending = await asyncio.wait(rest, timeout=60)
        for task in pending:
            task.cancel()
        for task in _done:
            task.result()
        run.tally.not_caught_up = len(pending)
        if pending:
            run.tally.error("subscriber not caught up", f"{len(pending)} short of {run.final_seq}")
        await asyncio.sleep(args.settle)  # closes finish, handler tasks end
        idle_after = await run.sample(began)
        idle_after["fd_kinds"] = _fd_kinds(running.pid)
    errors = dict(run.tally.errors)
    return {
        "samples": samples,
        "idle_before": idle_before,
        "idle_after": idle_after,
        "final_seq": run.final_seq,
        "errors": errors,
        "error_samples": run.tally.samples,
    }


def _mean(rows: list[dict[str, Any]], key: str) -> float:
    return statistics.fmean(row[key] for row in rows)


def _slope_per_hour(rows: list[dict[str, Any]], key: str) -> float:
    if len(rows) < 2:
        return float("nan")
    return statistics.linear_regression([r["t"] for r in rows], [r[key] for r in rows])[0] * 3600


def verdict(result: dict[str, Any], warmup: float) -> dict[str, Any]:
    measured = [row for row in result["samples"] if row["t"] >= warmup]
    third = len(measured) // 3
    checks: dict[str, Any] = {}
    if third < 2:
        return {"flat": False, "lossless": False, "checks": {}, "reason": "too few samples"}
    for key, (relative, absolute) in TOLERANCE.items():
        first = _mean(measured[:third], key)
        last = _mean(measured[-third:], key)
        allowed = max(first * relative, absolute)
        checks[key] = {
            "first_third": round(first, 1),
            "last_third": round(last, 1),
            "growth": round(last - first, 1),
            "allowed": round(allowed, 1),
            "slope_per_hour": round(_slope_per_hour(measured, key), 1),
            "start": result["samples"][0][key],
            "end": measured[-1][key],
            "max": max(row[key] for row in result["samples"]),
            "flat": last - first <= allowed,
        }
    before, after = result["idle_before"], result["idle_after"]
    for key, slack in IDLE_SLACK.items():
        checks[f"idle_{key}"] = {
            "before": before[key],
            "after": after[key],
            "allowed": slack,
            "flat": after[key] - before[key] <= slack,
        }
    last = result["idle_after"]
    lossless = last["gaps"] == 0 and last["resyncs"] == 0 and last["not_caught_up"] == 0
    logged = result["service_log"]
    clean = not result["errors"] and not any(
        k.startswith(("error", "critical", "not")) for k in logged
    )
    return {
        "flat": all(check["flat"] for check in checks.values()),
        "lossless": lossless,
        "clean": clean,
        "checks": checks,
    }


def markdown(result: dict[str, Any], judged: dict[str, Any], args: argparse.Namespace) -> str:
    samples = result["samples"]
    last = result["idle_after"]
    first_cpu = result["idle_before"]["cpu_s"]
    wall = samples[-1]["t"] if samples else 0.0
    lines = [
        f"Soak: {args.minutes:g} min, {args.calls} calls, {args.subscribers} subscribers "
        f"(+1 monitor), {args.listeners} listeners, calls of ~{args.call_seconds:g} s, "
        f"warm-up {args.warmup:g} s, a sample every {args.sample:g} s; code {args.code}.",
        "",
        "| measure | start | end | max | first third | last third | growth (allowed) "
        "| slope /h | flat |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for key, check in judged["checks"].items():
        if key.startswith("idle_"):
            continue
        lines.append(
            f"| {key} | {check['start']} | {check['end']} | {check['max']} | "
            f"{check['first_third']} | {check['last_third']} | {check['growth']:+} "
            f"({check['allowed']}) | {check['slope_per_hour']:+} | {check['flat']} |"
        )
    before, after = result["idle_before"], result["idle_after"]
    lines += [
        "",
        "| idle, before the load → after it | RSS MB | fds | tasks | threads |",
        "|---|---|---|---|---|",
        f"| | {before['rss_mb']} → {after['rss_mb']} | {before['fds']} → {after['fds']} | "
        f"{before['tasks']} → {after['tasks']} | {before['threads']} → {after['threads']} |",
        "",
        f"Descriptors at idle, before: {_kinds(before['fd_kinds'])}; "
        f"after: {_kinds(after['fd_kinds'])}.",
        "",
        "| clients saw | |",
        "|---|---|",
        f"| calls dialled / ended / hung up by us | {last['calls_dialled']} / "
        f"{last['calls_ended']} / {last['calls_hung_up']} |",
        f"| listener sessions / frames received | {last['listener_sessions']} / {last['frames']} |",
        f"| audio chunks missing / dropped by the service | {last['audio_missing']} / "
        f"{last['audio_dropped']} |",
        f"| talk sessions / refused / frames sent | {last['talk_sessions']} / "
        f"{last['talk_refused']} / {last['talk_frames']} |",
        f"| subscriber sessions / events received / replayed | {last['subscriber_sessions']} / "
        f"{last['events']} / {last['replayed']} |",
        f"| event gaps / duplicates / resyncs / not caught up | {last['gaps']} / "
        f"{last['duplicates']} / {last['resyncs']} / {last['not_caught_up']} |",
        f"| token refreshes | {last['token_refreshes']} |",
        f"| errors | {result['errors'] or 0} |",
        f"| service log: warnings and errors | {_kinds(result['service_log']) or 0} |",
        f"| last seq / store | {result['final_seq']} / {last['store_mb']} MB |",
        f"| service CPU | {last['cpu_s'] - first_cpu:.0f} s over {wall:.0f} s "
        f"({(last['cpu_s'] - first_cpu) / max(wall, 1):.0%} of a core) |",
        f"| host load average (1 min), mean / max | "
        f"{statistics.fmean(r['loadavg'] for r in samples):.2f} / "
        f"{max(r['loadavg'] for r in samples):.2f} |",
        "",
        f"Tasks at idle after the load may exceed those before by "
        f"{IDLE_SLACK['tasks']}: {judged['checks']['idle_tasks']['flat']}.",
        "",
        f"Verdict: {'flat' if judged['flat'] else 'NOT FLAT'}, "
        f"{'no event lost' if judged['lossless'] else 'EVENTS LOST'}, "
        f"{'no errors' if judged['clean'] else 'ERRORS'}.",
    ]
    return "\n".join(lines) + "\n"


def _code_version() -> str:
    """The commit measured, and the source files changed in the working tree on top of it."""

    def git(*args: str) -> str:
        return subprocess.run(["git", *args], cwd=ROOT, capture_output=True, text=True).stdout

    changed = git("status", "--porcelain", "--", "src").splitlines()
    return git("rev-parse", "--short", "HEAD").strip() + (
        f" with {len(changed)} changed files in src/" if changed else ""
    )


def _kinds(kinds: dict[str, int]) -> str:
    return ", ".join(f"{count} {kind}" for kind, count in kinds.items())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--minutes", type=float, default=10.0)
    parser.add_argument("--calls", type=int, default=30, help="concurrent calls")
    parser.add_argument("--call-seconds", type=float, default=30.0, help="a typical call")
    parser.add_argument("--subscribers", type=int, default=10)
    parser.add_argument("--listeners", type=int, default=40)
    parser.add_argument("--talk-share", type=float, default=0.3, help="listeners that talk")
    parser.add_argument("--session-max", type=float, default=60.0, help="longest stay, s")
    parser.add_argument("--sample", type=float, default=10.0, help="seconds between samples")
    parser.add_argument("--warmup", type=float, default=120.0, help="left out of the verdict, s")
    parser.add_argument("--settle", type=float, default=5.0, help="wait before the idle sample")
    parser.add_argument("--server-core", type=int, default=0)
    parser.add_argument("--load-core", type=int, default=1)
    parser.add_argument("--out", type=Path, help="folder for the log and summaries (new)")
    args = parser.parse_args()
    args.pace = args.call_seconds / SCENARIOS["answered"].talk_seconds
    args.code = _code_version()
    out = args.out or Path(tempfile.mkdtemp(prefix="callbridge-soak-"))
    out.mkdir(parents=True, exist_ok=True)
    os.sched_setaffinity(0, [args.load_core])
    with service(out.resolve(), args.server_core, args.pace) as running:
        import uvloop

        result = uvloop.run(soak(running, args))
    result["service_log"] = _log_findings(running.log)
    judged = verdict(result, args.warmup)
    report = markdown(result, judged, args)
    (out / "summary.json").write_bytes(
        orjson.dumps(
            {"args": {k: str(v) for k, v in vars(args).items()}, **result, "verdict": judged},
            option=orjson.OPT_INDENT_2,
        )
    )
    (out / "summary.md").write_text(report)
    print(report)
    print(f"log, database and summaries in {out}", file=sys.stderr)
    if not (judged["flat"] and judged["lossless"] and judged["clean"]):
        sys.exit(1)


if __name__ == "__main__":
    main()
