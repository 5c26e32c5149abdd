"""Prometheus metrics: every queue is bounded and every drop is counted here."""

from __future__ import annotations

import asyncio
import dataclasses
from collections.abc import Iterator

from prometheus_client import REGISTRY, Counter, Gauge, Histogram
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.registry import Collector

__all__ = [
    "CALL_RECOVERIES",
    "EVENTS_DELIVERED",
    "EVENTS_STORED",
    "EVENT_CLIENTS",
    "EVENT_SUBSCRIBER_OVERFLOWS",
    "HANDOVERS",
    "HUB_CONNECTED",
    "HUB_DROPS",
    "HUB_RECONNECTS",
    "HUB_RESYNCS",
    "INSTANCE_PEERS",
    "MEDIA",
    "MEDIA_MALFORMED",
    "MEDIA_STREAMS_ENDED",
    "REFUSALS",
    "TELNYX_REQUESTS",
    "WEBHOOKS",
    "WEBHOOK_SECONDS",
]

WEBHOOKS = Counter(
    "callbridge_webhooks_total",
    "Telnyx webhooks received, by outcome (accepted, duplicate, rejected_*).",
    ["outcome"],
)
WEBHOOK_SECONDS = Histogram(
    "callbridge_webhook_seconds",
    "Time to verify, store and acknowledge one webhook (Telnyx allows 2 s).",
    buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.0),
)
REFUSALS = Counter(
    "callbridge_refusals_total",
    "Requests and sockets refused by authentication, origin, limits or size rules.",
    ["surface", "reason"],
)
EVENTS_STORED = Counter("callbridge_events_stored_total", "Events appended to the log.", ["type"])
EVENTS_DELIVERED = Counter(
    "callbridge_events_delivered_total",
    "Events sent to /call-events clients, by how (live, replay, catchup).",
    ["via"],
)
EVENT_CLIENTS = Gauge("callbridge_event_clients", "Connected /call-events clients.")
EVENT_SUBSCRIBER_OVERFLOWS = Counter(
    "callbridge_event_subscriber_overflows_total",
    "Live events not queued for a slow /call-events client (it then catches up from the store).",
)
HUB_DROPS = Counter(
    "callbridge_hub_dropped_total",
    "Messages the hub did not hand to the broker (its queue was full, or the broker was "
    "unreachable), by kind (audio, talk, control, event).",
    ["kind"],
)
HUB_CONNECTED = Gauge(
    "callbridge_hub_connected",
    "1 while this part of the hub (writer, events, channels) is connected to the broker.",
    ["part"],
)
HUB_RECONNECTS = Counter(
    "callbridge_hub_reconnects_total",
    "Connections to the broker restored after a failure, by part (writer, events, channels).",
    ["part"],
)
HUB_RESYNCS = Counter(
    "callbridge_hub_resyncs_total",
    "Times this instance sent its /call-events clients to the store because the broker may "
    "have lost events, by reason (stream_lost, head_check).",
    ["reason"],
)
TELNYX_REQUESTS = Counter(
    "callbridge_telnyx_requests_total",
    "Telnyx REST requests, by command and outcome (ok, retried, error, unavailable).",
    ["command", "outcome"],
)
MEDIA_STREAMS_ENDED = Counter(
    "callbridge_media_streams_ended_total",
    "Carrier media streams that ended, by outcome (stopped, lost, failed: refused).",
    ["outcome"],
)
MEDIA_MALFORMED = Counter(
    "callbridge_media_malformed_total",
    "Frames dropped from carrier media streams or browser sockets as malformed, by kind.",
    ["source", "kind"],
)
HANDOVERS = Counter(
    "callbridge_stream_handovers_total",
    "Carrier media streams a stopping instance held, by what became of them (handed_over, "
    "timed_out, refused: the carrier refused the new stream, alone: no instance to take it).",
    ["outcome"],
)
CALL_RECOVERIES = Counter(
    "callbridge_recoveries_total",
    "What restart recovery and the dead-instance check did, by action (stream_lost, "
    "stream_resumed, call_ended).",
    ["action"],
)
INSTANCE_PEERS = Gauge(
    "callbridge_instance_peers",
    "Other instances this one sees alive in the store (fresh heartbeat, not stopping).",
)


@dataclasses.dataclass(slots=True)
class MediaStats:
    """Live-audio counters of one call on this instance; the hot path bumps plain ints."""

    frames_in: int = 0  # media frames received from the carrier
    bytes_in: int = 0  # their payload bytes
    frames_out: int = 0  # binary frames sent to listeners
    bytes_out: int = 0
    reordered: int = 0
    late_dropped: int = 0
    duplicates: int = 0
    gaps: int = 0
    listener_drops: int = 0  # frames a slow listener's queue dropped
    talk_frames: int = 0  # talk-back media frames sent to the carrier
    talk_drops: int = 0  # talk-back audio dropped because the carrier socket fell behind
    streams: int = 0  # carrier media sockets open now
    listeners: int = 0  # browser listeners connected now

    def add(self, other: MediaStats) -> None:
        for field in dataclasses.fields(self):
            setattr(self, field.name, getattr(self, field.name) + getattr(other, field.name))


_COUNTERS: tuple[tuple[str, str], ...] = (
    ("frames_in", "Media frames received from the carrier."),
    ("bytes_in", "Media payload bytes received from the carrier."),
    ("frames_out", "Audio frames sent to browser listeners."),
    ("bytes_out", "Audio bytes (header included) sent to browser listeners."),
    ("reordered", "Media frames that arrived out of order and were put back in order."),
    ("late_dropped", "Media frames that arrived after the reorder window had moved past them."),
    ("duplicates", "Media frames received twice."),
    ("gaps", "Sequence numbers never received (skipped when the reorder window overflowed)."),
    ("listener_drops", "Audio frames dropped for slow listeners (their queue was full)."),
    ("talk_frames", "Talk-back media frames sent to the carrier."),
    ("talk_drops", "Talk-back audio dropped because the carrier socket fell behind."),
)
_GAUGES: tuple[tuple[str, str], ...] = (
    ("streams", "Carrier media streams connected."),
    ("listeners", "Browser audio listeners connected."),
)
_SERIES = tuple((name, doc, CounterMetricFamily) for name, doc in _COUNTERS) + tuple(
    (name, doc, GaugeMetricFamily) for name, doc in _GAUGES
)


class MediaRegistry(Collector):
    """Per-call media counters for calls with a live socket here, and totals since start.

    Per-call series exist only while a stream or listener of that call is connected on this
    instance, so the label set stays as small as the number of live calls.
    """

    def __init__(self) -> None:
        self._live: dict[str, tuple[MediaStats, int]] = {}
        self._retired = MediaStats()

    def acquire(self, call_control_id: str) -> MediaStats:
        stats, users = self._live.get(call_control_id, (MediaStats(), 0))
        self._live[call_control_id] = (stats, users + 1)
        return stats

    def release(self, call_control_id: str) -> None:
        stats, users = self._live[call_control_id]
        if users > 1:
            self._live[call_control_id] = (stats, users - 1)
        else:
            del self._live[call_control_id]
            self._retired.add(stats)

    def get(self, call_control_id: str) -> MediaStats | None:
        entry = self._live.get(call_control_id)
        return entry[0] if entry else None

    def totals(self) -> MediaStats:
        total = MediaStats()
        total.add(self._retired)
        for stats, _users in self._live.values():
            total.add(stats)
        return total

    def collect(self) -> Iterator[CounterMetricFamily | GaugeMetricFamily]:
        totals = self.totals()
        live = sorted(self._live.items())
        for name, doc, family in _SERIES:
            yield family(f"callbridge_media_{name}", doc, value=getattr(totals, name))
            per_call = family(
                f"callbridge_call_media_{name}", doc + " Per live call.", labels=["call_control_id"]
            )
            for call_id, (stats, _users) in live:
                per_call.add_metric([call_id], getattr(stats, name))
            yield per_call


MEDIA = MediaRegistry()
REGISTRY.register(MEDIA)


class LoopTasks(Collector):
    """Tasks alive on the event loop, counted when scraped (`/metrics` runs on that loop).

    Under steady traffic the count follows the open sockets and calls; one that keeps growing
    is a task leak (the soak run, bench/soak.py, watches it)."""

    def collect(self) -> Iterator[GaugeMetricFamily]:
        try:
            count = len(asyncio.all_tasks())
        except RuntimeError:  # scraped with no running loop (a test's plain call)
            return
        yield GaugeMetricFamily(
            "callbridge_asyncio_tasks", "Tasks alive on the serving event loop.", value=count
        )


REGISTRY.register(LoopTasks())
