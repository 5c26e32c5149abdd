"""The Redis hub: several callbridge instances behave as one service.

Three kinds of traffic, three Redis tools, each chosen for how its traffic may fail:

- **Events** (lossless) go on one Redis Stream, `<prefix>:events`, trimmed to about
  `STREAM_MAXLEN` entries. Each instance runs one reader (`XREAD BLOCK` from the last id it
  read) and hands what it reads to its local `/call-events` subscriptions. A stream, unlike
  pub/sub, keeps what was written while a reader was disconnected, so a dropped connection
  resumes from the last id with nothing lost and nobody goes to the store. What a stream cannot
  keep is left to the store, which holds every event: when the entry we last read is gone (Redis
  restarted without persistence, or trimmed it while we were away), every local subscription is
  told to catch up from the store; and a cheap periodic check of the store's newest seq catches
  the one case nothing else would, an event that never reached the stream and that no later
  event follows. Order across instances is not Redis's job: the `/call-events` cursor rule puts
  events in seq order and fills gaps from the store (ws/events.py).
- **Live audio and talk-back** (lossy, live) go on pub/sub channels per call,
  `<prefix>:audio:<call_control_id>` and `<prefix>:talk:<call_control_id>`, as binary messages:
  an 8-byte instance id, a kind byte, then a packed frame as it is, a notice or talk command as
  compact JSON, or talk audio as its rate and PCM. An instance subscribes to a call's channel
  when its first local subscriber appears and unsubscribes when the last leaves. Local
  subscribers of the publishing instance get items directly; an instance skips its own messages
  when they come back from Redis.
- **The talker of a call** is a key, `<prefix>:talker:<call_control_id>`, taken with
  `SET NX PX`, renewed while held, and released with a compare-and-delete script: an instance
  that dies mid-talk frees the call when the key expires.

Publishing never waits for Redis: everything bound for the broker goes through one bounded queue
that a writer task sends in pipelined batches. When the queue is full the oldest audio is
dropped; while the broker is unreachable new audio is dropped at once (it would be stale) and
events and control messages wait, in order, up to the bound. Every drop is counted in
`callbridge_hub_dropped_total`. Each connection (writer, event reader, channel reader)
reconnects on its own with jittered backoff, and the channel reader subscribes again to every
channel that has local subscribers.

The writer's and the channel reader's connections carry every frame, so they skip redis-py's
per-command machinery: redis-py opens them (authentication, TLS, the URL's options), then they
are written and read directly in RESP2 (`_Link`). Everything else uses redis-py as it is.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import random
import time
from collections import deque
from collections.abc import Awaitable, Callable
from datetime import datetime
from typing import Any, TypeVar

import orjson
from redis.asyncio import Redis
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import RedisError
from redis.exceptions import TimeoutError as RedisTimeoutError

from callbridge.calls.events import StoredEvent
from callbridge.hub.base import EventSubscription
from callbridge.hub.live import AudioItem, LiveQueue, StreamNotice, TalkAudio, TalkControl, TalkItem
from callbridge.logs import get_logger
from callbridge.metrics import HUB_CONNECTED, HUB_DROPS, HUB_RECONNECTS, HUB_RESYNCS

__all__ = ["RedisHub", "decode_item", "encode_item"]

log = get_logger(__name__)
T = TypeVar("T")

STREAM_MAXLEN = 10_000  # events kept in the stream (approximately); the store keeps them all
READ_BLOCK_MS = 2_000  # one XREAD waits this long, then asks again
READ_COUNT = 500
BATCH = 512  # items per pipelined write
COALESCE = 0.001  # seconds a write waits for company
SUBSCRIBE_WAIT = 2.0  # most `subscribed()` waits for Redis to confirm a SUBSCRIBE
TALKER_TTL_MS = 10_000  # a talker claim outlives a dead instance by at most this
BACKOFF_FIRST, BACKOFF_MAX = 0.05, 2.0
_BROKEN = (RedisConnectionError, RedisTimeoutError, OSError)

# The first byte after the instance id: what the message carries.
AUDIO, NOTICE, TALK_AUDIO, TALK_CONTROL, EVENT = 0, 1, 2, 3, 4
_KIND_NAMES = {AUDIO: "audio", NOTICE: "control", TALK_AUDIO: "talk", TALK_CONTROL: "control"}
_DROPPABLE = frozenset({AUDIO, TALK_AUDIO})
_ID = 8  # bytes of instance id at the start of every channel message

_RENEW = """
if redis.call('GET', KEYS[1]) == ARGV[1] then
  return redis.call('PEXPIRE', KEYS[1], ARGV[2])
end
return 0
"""
_RELEASE = """
if redis.call('GET', KEYS[1]) == ARGV[1] then
  return redis.call('DEL', KEYS[1])
end
return 0
"""


def encode_item(item: AudioItem | TalkItem) -> tuple[int, bytes]:
    """The kind byte and body of a channel message for a live item."""
    if isinstance(item, bytes):
        return AUDIO, item
    if isinstance(item, StreamNotice):
        return NOTICE, orjson.dumps({"t": item.type, "d": item.data})
    if isinstance(item, TalkAudio):
        return TALK_AUDIO, item.sample_rate.to_bytes(4, "big") + item.pcm16le
    return TALK_CONTROL, orjson.dumps({"a": item.action, "r": item.sample_rate, "n": item.name})


def decode_item(kind: int, body: bytes) -> AudioItem | TalkItem:
    """The inverse of `encode_item`; ValueError for a message no callbridge sent."""
    if kind == AUDIO:
        return body
    if kind == TALK_AUDIO:
        if len(body) < 4:
            raise ValueError("talk audio without its sample rate")
        return TalkAudio(body[4:], int.from_bytes(body[:4], "big"))
    try:
        data: Any = orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        raise ValueError(str(exc)) from None
    if not isinstance(data, dict):
        raise ValueError("not an object")
    if kind == NOTICE:
        return StreamNotice(str(data["t"]), dict(data["d"]))
    if kind == TALK_CONTROL:
        return TalkControl(str(data["a"]), data.get("r"), data.get("n"))
    raise ValueError(f"unknown kind {kind}")


def _encode_event(event: StoredEvent) -> bytes:
    return event.to_json()


def _decode_event(body: bytes) -> StoredEvent:
    data = orjson.loads(body)
    return StoredEvent(
        seq=int(data["seq"]),
        type=str(data["type"]),
        call_control_id=str(data["call_control_id"]),
        occurred_at=datetime.fromisoformat(data["occurred_at"]),
        payload=dict(data["payload"]),
    )


def _remove(channels: dict[str, set[LiveQueue[T]]], key: str, queue: LiveQueue[T]) -> bool:
    """Forget a queue; True if it was the call's last one here."""
    queues = channels.get(key)
    if queues is None:
        return False
    queues.discard(queue)
    if queues:
        return False
    del channels[key]
    return True


class _Backoff:
    """Jittered exponential waits between reconnection attempts."""

    def __init__(self) -> None:
        self.delay = BACKOFF_FIRST

    def next(self) -> float:
        delay = self.delay * random.uniform(0.5, 1.0)
        self.delay = min(self.delay * 2, BACKOFF_MAX)
        return delay


class ReplyError(Exception):
    """Redis answered a command with an error."""


class _Incomplete(Exception):
    """The buffer ends inside a reply: read more."""


def _parse(buffer: bytearray, pos: int) -> tuple[Any, int]:
    """One RESP2 value from `buffer` at `pos`, and where the next one starts."""
    end = buffer.find(b"\r\n", pos)
    if end < 0:
        raise _Incomplete
    kind = buffer[pos]
    if kind == 0x24:  # $ bulk string
        size = int(buffer[pos + 1 : end])
        if size < 0:
            return None, end + 2
        stop = end + 2 + size
        if len(buffer) < stop + 2:
            raise _Incomplete
        return bytes(buffer[end + 2 : stop]), stop + 2
    if kind == 0x2A:  # * array
        count = int(buffer[pos + 1 : end])
        pos = end + 2
        if count < 0:
            return None, pos
        items = []
        for _ in range(count):
            item, pos = _parse(buffer, pos)
            items.append(item)
        return items, pos
    if kind == 0x3A:  # : integer
        return int(buffer[pos + 1 : end]), end + 2
    if kind == 0x2B:  # + simple string
        return bytes(buffer[pos + 1 : end]), end + 2
    if kind == 0x2D:  # - error
        return ReplyError(buffer[pos + 1 : end].decode(errors="replace")), end + 2
    raise RedisConnectionError(f"unexpected RESP type byte {kind!r}")


def _pack(*parts: bytes) -> bytes:
    """One command in RESP."""
    out = [b"*%d\r\n" % len(parts)]
    for part in parts:
        out.append(b"$%d\r\n" % len(part))
        out.append(part)
        out.append(b"\r\n")
    return b"".join(out)


class _Link:
    """One connection to Redis for a hot path: opened by redis-py, so that authentication, TLS
    and every option of the URL apply, then written and read directly, in RESP2. Per message,
    redis-py's command and reply machinery costs several times what the message itself does;
    here a frame is one `bytes` join on the way out and one small parse on the way in."""

    def __init__(self, connection: Any) -> None:
        self.connection = connection
        self.reader: asyncio.StreamReader = connection._reader
        self.writer: asyncio.StreamWriter = connection._writer
        self._buffer = bytearray()

    @classmethod
    async def open(cls, client: Redis) -> _Link:
        pool: Any = client.connection_pool
        connection = pool.make_connection()
        await connection.connect()
        return cls(connection)

    def send(self, data: bytes) -> None:
        self.writer.write(data)

    async def drain(self) -> None:
        await self.writer.drain()

    async def replies(self) -> list[Any]:
        """The replies (or pushed messages) that the next read completes; at least one."""
        buffer = self._buffer
        while True:
            data = await self.reader.read(1 << 16)
            if not data:
                raise RedisConnectionError("Redis closed the connection")
            buffer += data
            values: list[Any] = []
            pos = 0
            while pos < len(buffer):
                try:
                    value, pos_after = _parse(buffer, pos)
                except _Incomplete:
                    break
                values.append(value)
                pos = pos_after
            del buffer[:pos]
            if values:
                return values

    async def close(self) -> None:
        with contextlib.suppress(Exception):
            await self.connection.disconnect()


class RedisHub:
    """The hub for several instances sharing one Redis; see the module docstring."""

    def __init__(
        self,
        url: str,
        *,
        last_seq: Callable[[], Awaitable[int]] | None = None,
        queue_size: int = 10_000,
        check_interval: float = 1.0,
        prefix: str = "callbridge",
    ) -> None:
        self.url = url
        self.instance = os.urandom(_ID)
        self._last_seq = last_seq
        self._queue_size = max(1, queue_size)
        self._check_interval = check_interval
        self._prefix = prefix
        self._stream = f"{prefix}:events".encode()
        options: dict[str, Any] = {
            "retry": Retry(NoBackoff(), 0),  # this class reconnects, with its own backoff
            "socket_connect_timeout": 2.0,
            "socket_keepalive": True,
        }
        self._redis: Redis = Redis.from_url(url, socket_timeout=5.0, **options)
        # Blocking reads get connections of their own, so they never hold up a publish.
        self._reader: Redis = Redis.from_url(
            url, socket_timeout=READ_BLOCK_MS / 1000 + 5.0, **options
        )
        # Hot paths (publishing, channels) get connections of their own, spoken to directly.
        self._link_client: Redis = Redis.from_url(url, socket_timeout=5.0, protocol=2, **options)
        self._renew = self._redis.register_script(_RENEW)
        self._release = self._redis.register_script(_RELEASE)

        self._event_subscriptions: set[EventSubscription] = set()
        self._audio: dict[str, set[LiveQueue[AudioItem]]] = {}
        self._talk: dict[str, set[LiveQueue[TalkItem]]] = {}
        self._claims: dict[str, str] = {}  # call → owner, for the claims this instance holds
        self._max_seen = 0  # newest seq published or read here: the head check compares it

        self._out: deque[tuple[int, bytes, bytes]] = deque()  # (kind, key, payload)
        self._out_ready = asyncio.Event()
        self._drained = asyncio.Event()
        self._connected = {"writer": False, "events": False, "channels": False}
        self._lost_at: dict[str, float] = {}  # parts that failed, and since when
        self._all_up = asyncio.Event()

        self._wanted: dict[bytes, tuple[int, str]] = {}  # channel → (AUDIO|TALK_AUDIO, call)
        self._sent: set[bytes] = set()  # SUBSCRIBE sent on the current channel connection
        self._confirmed: set[bytes] = set()  # ... and confirmed by Redis
        self._confirm_change = asyncio.Event()
        self._channel_link: _Link | None = None
        self._reply_errors: set[str] = set()
        self._sync_task: asyncio.Task[None] | None = None
        self._sync_again = False
        self._tasks: list[asyncio.Task[None]] = []
        self._closing = False

    # --- lifecycle ---------------------------------------------------------------------------

    async def start(self) -> None:
        """Start the connections; an unreachable broker is logged, not fatal: /api/ready says
        so and every part keeps trying."""
        if self._last_seq is not None:
            with contextlib.suppress(Exception):
                self._max_seen = await self._last_seq()
        try:
            await asyncio.wait_for(self._redis.ping(), 2.0)
            reachable = True
        except (*_BROKEN, RedisError, TimeoutError) as exc:
            log.warning("Hub cannot reach the broker yet", error=_describe(exc))
            reachable = False
        loop = asyncio.get_running_loop()
        self._tasks = [
            loop.create_task(self._write_loop(), name="hub-writer"),
            loop.create_task(self._read_events(), name="hub-events"),
            loop.create_task(self._read_channels(), name="hub-channels"),
            loop.create_task(self._renew_loop(), name="hub-talkers"),
        ]
        if self._last_seq is not None and self._check_interval > 0:
            self._tasks.append(loop.create_task(self._check_head(), name="hub-head-check"))
        if reachable:  # let the connections open, so the first subscribers are served at once
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._all_up.wait(), 2.0)
        log.info("Hub started", broker="redis", instance=self.instance.hex())

    async def close(self) -> None:
        self._closing = True
        if self._out and self._connected["writer"]:
            self._drained.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._drained.wait(), 1.0)  # events still on their way
        for call_id, owner in list(self._claims.items()):
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self.release_talker(call_id, owner), 1.0)
        tasks = [*self._tasks, *([self._sync_task] if self._sync_task else [])]
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(BaseException):
                await task
        if self._channel_link is not None:
            await self._channel_link.close()
        for client in (self._redis, self._reader, self._link_client):
            with contextlib.suppress(Exception):
                await client.aclose()
        for part in self._connected:
            HUB_CONNECTED.labels(part).set(0)
        self._event_subscriptions.clear()
        self._audio.clear()
        self._talk.clear()

    async def ping(self) -> None:
        await self._redis.ping()

    async def _reconnect(self, part: str, client: Redis, error: BaseException) -> None:
        """Mark `part` down, then wait with backoff until the broker answers again."""
        if self._connected[part]:
            log.warning("Hub lost the broker", part=part, error=_describe(error))
        self._connected[part] = False
        HUB_CONNECTED.labels(part).set(0)
        self._lost_at.setdefault(part, time.monotonic())
        backoff = _Backoff()
        while True:
            await asyncio.sleep(backoff.next())
            try:
                await client.ping()
            except (*_BROKEN, RedisError):
                continue
            return

    def _up(self, part: str) -> None:
        """`part` works (again); after a failure, say so once."""
        if self._connected[part]:
            return
        self._connected[part] = True
        HUB_CONNECTED.labels(part).set(1)
        if all(self._connected.values()):
            self._all_up.set()
        lost_at = self._lost_at.pop(part, None)
        if lost_at is not None:
            HUB_RECONNECTS.labels(part).inc()
            log.info(
                "Hub connected to the broker",
                part=part,
                after_seconds=round(time.monotonic() - lost_at, 3),
            )

    # --- the writer: one bounded queue, pipelined ----------------------------------------------

    def _enqueue(self, kind: int, key: bytes, payload: bytes) -> None:
        out = self._out
        if kind in _DROPPABLE and not self._connected["writer"]:
            HUB_DROPS.labels(_KIND_NAMES[kind]).inc()  # stale by the time Redis is back
            return
        if len(out) >= self._queue_size:
            self._drop_one()
        out.append((kind, key, payload))
        self._out_ready.set()

    def _drop_one(self) -> None:
        """Make room: the oldest audio goes first; only then the oldest of anything."""
        out = self._out
        for index, queued in enumerate(out):
            if queued[0] in _DROPPABLE:
                del out[index]
                HUB_DROPS.labels(_KIND_NAMES[queued[0]]).inc()
                return
        dropped = out.popleft()
        HUB_DROPS.labels("event" if dropped[0] == EVENT else "control").inc()

    def _command(self, kind: int, key: bytes, payload: bytes) -> bytes:
        if kind == EVENT:
            return _pack(
                b"XADD", key, b"MAXLEN", b"~", b"%d" % STREAM_MAXLEN, b"*",
                b"i", self.instance, b"e", payload,
            )  # fmt: skip
        return _pack(b"PUBLISH", key, payload)

    async def _write_loop(self) -> None:
        while True:
            try:
                link = await _Link.open(self._link_client)
            except (*_BROKEN, RedisError) as exc:
                await self._reconnect("writer", self._redis, exc)
                continue
            self._up("writer")
            replies = asyncio.get_running_loop().create_task(self._read_replies(link))
            try:
                await self._write(link, replies)
            except _BROKEN as exc:
                await self._reconnect("writer", self._redis, exc)
            except Exception as exc:  # a bug: say so, and carry on with a fresh connection
                log.exception("Hub writer failed")
                await self._reconnect("writer", self._redis, exc)
            finally:
                replies.cancel()
                with contextlib.suppress(BaseException):
                    await replies
                await link.close()

    async def _write(self, link: _Link, replies: asyncio.Task[None]) -> None:
        """Send the queue in batches until the link breaks."""
        out = self._out
        while True:
            if not out:
                self._drained.set()
                self._out_ready.clear()
                waiting = asyncio.ensure_future(self._out_ready.wait())
                await asyncio.wait({waiting, replies}, return_when=asyncio.FIRST_COMPLETED)
                waiting.cancel()
                if replies.done():  # the link broke while idle
                    replies.result()
                    raise RedisConnectionError("the connection to Redis ended")
                continue
            if len(out) < BATCH:
                # Gather what arrives within a millisecond into one write: a frame at a time,
                # the syscalls (ours and Redis's) would cost more than the frames.
                await asyncio.sleep(COALESCE)
            batch = [out.popleft() for _ in range(min(BATCH, len(out)))]
            try:
                if replies.done():
                    replies.result()
                    raise RedisConnectionError("the connection to Redis ended")
                link.send(b"".join([self._command(*item) for item in batch]))
                await link.drain()
            except _BROKEN:
                # Audio in the batch is stale by now; events and control keep their order. What
                # Redis had already taken may be sent twice: subscribers drop what they have.
                kept = [item for item in batch if item[0] not in _DROPPABLE]
                for kind, _key, _payload in batch:
                    if kind in _DROPPABLE:
                        HUB_DROPS.labels(_KIND_NAMES[kind]).inc()
                out.extendleft(reversed(kept))
                while len(out) > self._queue_size:
                    self._drop_one()
                raise

    async def _read_replies(self, link: _Link) -> None:
        """Read (and mostly ignore) the writer's replies; errors are logged once per kind.
        Returns, or raises, when the connection ends: that is how the writer learns of it."""
        while True:
            for reply in await link.replies():
                if isinstance(reply, ReplyError) and str(reply) not in self._reply_errors:
                    self._reply_errors.add(str(reply))
                    log.error("Redis refused a hub command", error=str(reply))

    # --- events --------------------------------------------------------------------------------

    async def publish_event(self, event: StoredEvent) -> None:
        self._max_seen = max(self._max_seen, event.seq)
        for subscription in tuple(self._event_subscriptions):
            subscription.offer(event)
        self._enqueue(EVENT, self._stream, _encode_event(event))

    def subscribe_events(self, maxsize: int) -> EventSubscription:
        subscription = EventSubscription(maxsize)
        self._event_subscriptions.add(subscription)
        return subscription

    def unsubscribe_events(self, subscription: EventSubscription) -> None:
        self._event_subscriptions.discard(subscription)

    def _resync_all(self, reason: str) -> None:
        if not self._event_subscriptions:
            return
        HUB_RESYNCS.labels(reason).inc()
        log.info(
            "Event clients catch up from the store",
            reason=reason,
            clients=len(self._event_subscriptions),
        )
        for subscription in tuple(self._event_subscriptions):
            subscription.resync()

    async def _stream_tail(self) -> bytes:
        newest: Any = await self._reader.xrevrange(self._stream, count=1)
        return bytes(newest[0][0]) if newest else b"0-0"

    async def _read_events(self) -> None:
        last_id: bytes | None = None
        while True:
            try:
                if last_id is None:
                    last_id = await self._stream_tail()
                elif not await self._reader.xrange(self._stream, last_id, last_id):
                    # The entry we read last is gone: Redis lost or trimmed the stream while we
                    # were away. Start from its end; the store fills in what came before.
                    last_id = await self._stream_tail()
                    self._resync_all("stream_lost")
                self._up("events")
                while True:
                    reply: Any = await self._reader.xread(
                        {self._stream: last_id}, count=READ_COUNT, block=READ_BLOCK_MS
                    )
                    for _stream, entries in reply or ():
                        for entry_id, fields in entries:
                            last_id = bytes(entry_id)
                            self._on_stream_entry(fields)
            except Exception as exc:
                if not isinstance(exc, _BROKEN):  # e.g. the key holds something else
                    log.exception("Hub event reader failed")
                await self._reconnect("events", self._reader, exc)

    def _on_stream_entry(self, fields: dict[bytes, bytes]) -> None:
        if fields.get(b"i") == self.instance:
            return  # published here: local subscribers had it first-hand
        try:
            event = _decode_event(fields[b"e"])
        except (KeyError, ValueError, TypeError) as exc:
            log.warning("Malformed event on the broker ignored", error=str(exc))
            return
        self._max_seen = max(self._max_seen, event.seq)
        for subscription in tuple(self._event_subscriptions):
            subscription.offer(event)

    async def _check_head(self) -> None:
        """Notice an event the broker never delivered here, when no later event reveals the gap.

        A seq the store had at one check and that this instance has still not seen at the next
        is not on its way: the local subscriptions catch up from the store.
        """
        assert self._last_seq is not None
        pending: int | None = None
        while True:
            await asyncio.sleep(self._check_interval)
            if not self._event_subscriptions:
                pending = None
                continue
            try:
                newest = await self._last_seq()
            except Exception as exc:  # the store's trouble is /api/ready's to report
                log.debug("Head check could not read the store", error=_describe(exc))
                continue
            if pending is not None and self._max_seen < pending:
                self._resync_all("head_check")
                self._max_seen = max(self._max_seen, pending)
            pending = newest if newest > self._max_seen else None

    # --- live audio and talk-back --------------------------------------------------------------

    def _channel(self, kind: int, call_control_id: str) -> bytes:
        name = "audio" if kind == AUDIO else "talk"
        return f"{self._prefix}:{name}:{call_control_id}".encode()

    def _publish_live(self, channel_kind: int, call_control_id: str, item: Any) -> None:
        kind, body = encode_item(item)
        self._enqueue(
            kind,
            self._channel(channel_kind, call_control_id),
            b"".join((self.instance, kind.to_bytes(1, "big"), body)),
        )

    def publish_audio(self, call_control_id: str, item: AudioItem) -> None:
        queues = self._audio.get(call_control_id)
        if queues:
            for queue in queues:
                queue.offer(item)
        self._publish_live(AUDIO, call_control_id, item)

    def subscribe_audio(
        self,
        call_control_id: str,
        maxsize: int,
        on_drop: Callable[[], None] | None = None,
        queue: LiveQueue[AudioItem] | None = None,
    ) -> LiveQueue[AudioItem]:
        queue = queue if queue is not None else LiveQueue(maxsize, on_drop)
        self._audio.setdefault(call_control_id, set()).add(queue)
        self._want(AUDIO, call_control_id)
        return queue

    def unsubscribe_audio(self, call_control_id: str, queue: LiveQueue[AudioItem]) -> None:
        if _remove(self._audio, call_control_id, queue):
            self._unwant(AUDIO, call_control_id)

    def publish_talk(self, call_control_id: str, item: TalkItem) -> None:
        for queue in self._talk.get(call_control_id, ()):
            queue.offer(item)
        self._publish_live(TALK_AUDIO, call_control_id, item)

    def subscribe_talk(
        self, call_control_id: str, maxsize: int, on_drop: Callable[[], None] | None = None
    ) -> LiveQueue[TalkItem]:
        queue: LiveQueue[TalkItem] = LiveQueue(maxsize, on_drop)
        self._talk.setdefault(call_control_id, set()).add(queue)
        self._want(TALK_AUDIO, call_control_id)
        return queue

    def unsubscribe_talk(self, call_control_id: str, queue: LiveQueue[TalkItem]) -> None:
        if _remove(self._talk, call_control_id, queue):
            self._unwant(TALK_AUDIO, call_control_id)

    def _want(self, kind: int, call_control_id: str) -> None:
        channel = self._channel(kind, call_control_id)
        if channel not in self._wanted:
            self._wanted[channel] = (kind, call_control_id)
            self._schedule_sync()

    def _unwant(self, kind: int, call_control_id: str) -> None:
        if self._wanted.pop(self._channel(kind, call_control_id), None) is not None:
            self._schedule_sync()

    async def subscribed(self, call_control_id: str) -> None:
        channels = [
            channel
            for channel in (
                self._channel(AUDIO, call_control_id),
                self._channel(TALK_AUDIO, call_control_id),
            )
            if channel in self._wanted
        ]
        deadline = time.monotonic() + SUBSCRIBE_WAIT
        while self._connected["channels"] and any(c not in self._confirmed for c in channels):
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return
            change = self._confirm_change
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(change.wait(), remaining)

    def _confirmations_changed(self) -> None:
        change, self._confirm_change = self._confirm_change, asyncio.Event()
        change.set()

    def _schedule_sync(self) -> None:
        """Bring the channel connection's subscriptions in line with `_wanted`, soon."""
        self._sync_again = True
        if self._closing:
            return
        if self._sync_task is None or self._sync_task.done():
            self._sync_task = asyncio.get_running_loop().create_task(self._sync_channels())

    async def _sync_channels(self) -> None:
        while self._sync_again:
            self._sync_again = False
            link = self._channel_link
            if link is None or not self._connected["channels"]:
                return  # the reader subscribes to everything wanted when it reconnects
            add = [channel for channel in self._wanted if channel not in self._sent]
            remove = [channel for channel in self._sent if channel not in self._wanted]
            self._sent.update(add)
            self._sent.difference_update(remove)
            self._confirmed.difference_update(remove)
            try:
                if add:
                    link.send(_pack(b"SUBSCRIBE", *add))
                if remove:
                    link.send(_pack(b"UNSUBSCRIBE", *remove))
                await link.drain()
            except _BROKEN:
                return  # the reader notices the broken connection and starts over

    async def _read_channels(self) -> None:
        while True:
            try:
                link = await _Link.open(self._link_client)
            except (*_BROKEN, RedisError) as exc:
                await self._reconnect("channels", self._redis, exc)
                continue
            self._channel_link = link
            self._sent.clear()
            self._confirmed.clear()
            self._up("channels")
            self._schedule_sync()
            self._confirmations_changed()
            try:
                while True:
                    for message in await link.replies():
                        self._on_channel_message(message)
            except Exception as exc:
                if not isinstance(exc, _BROKEN):  # a bug: say so, and carry on
                    log.exception("Hub channel reader failed")
                self._channel_link = None
                self._confirmations_changed()  # waiters stop waiting for this connection
                await link.close()
                await self._reconnect("channels", self._redis, exc)
            except asyncio.CancelledError:
                self._channel_link = None
                await link.close()
                raise

    def _on_channel_message(self, message: Any) -> None:
        if not isinstance(message, list) or len(message) != 3:
            return  # a reply to something else (there is nothing else on this connection)
        kind, channel, data = message
        if kind == b"message":
            self._on_channel_data(channel, data)
        elif kind == b"subscribe":
            self._confirmed.add(channel)
            self._confirmations_changed()

    def _on_channel_data(self, channel: bytes, data: bytes) -> None:
        if data[:_ID] == self.instance or len(data) <= _ID:
            return
        route = self._wanted.get(channel)
        if route is None:
            return  # unsubscribed meanwhile
        channel_kind, call_id = route
        try:
            item = decode_item(data[_ID], data[_ID + 1 :])
        except (ValueError, KeyError, TypeError) as exc:
            log.warning("Malformed message on the broker ignored", error=str(exc))
            return
        if channel_kind == AUDIO and isinstance(item, bytes | StreamNotice):
            for queue in self._audio.get(call_id, ()):
                queue.offer(item)
        elif channel_kind == TALK_AUDIO and isinstance(item, TalkAudio | TalkControl):
            for talk_queue in self._talk.get(call_id, ()):
                talk_queue.offer(item)

    # --- the talker ----------------------------------------------------------------------------

    def _talker_key(self, call_control_id: str) -> str:
        return f"{self._prefix}:talker:{call_control_id}"

    async def claim_talker(self, call_control_id: str, owner: str) -> bool:
        key = self._talker_key(call_control_id)
        claimed = await self._redis.set(key, owner, nx=True, px=TALKER_TTL_MS)
        if not claimed:
            current = await self._redis.get(key)
            if current != owner.encode():
                return False
            await self._renew(keys=[key], args=[owner, TALKER_TTL_MS])
        self._claims[call_control_id] = owner
        return True

    async def release_talker(self, call_control_id: str, owner: str) -> None:
        if self._claims.get(call_control_id) == owner:
            del self._claims[call_control_id]
        try:
            await self._release(keys=[self._talker_key(call_control_id)], args=[owner])
        except (*_BROKEN, RedisError) as exc:  # the claim expires by itself
            log.warning(
                "Talker release failed; the claim expires",
                call_control_id=call_control_id,
                error=_describe(exc),
            )

    async def renew_talkers(self) -> None:
        """Extend every claim held here; forget the ones that were lost (expired meanwhile)."""
        for call_id, owner in list(self._claims.items()):
            renewed = await self._renew(
                keys=[self._talker_key(call_id)], args=[owner, TALKER_TTL_MS]
            )
            if not renewed and self._claims.get(call_id) == owner:
                del self._claims[call_id]
                log.warning("Talker claim lost", call_control_id=call_id)

    async def _renew_loop(self) -> None:
        while True:
            await asyncio.sleep(TALKER_TTL_MS / 3000)
            with contextlib.suppress(*_BROKEN, RedisError):
                await self.renew_talkers()


def _describe(error: BaseException) -> str:
    return f"{type(error).__name__}: {error}"
