"""Prometheus metrics: every queue is bounded and every drop is counted here."""

from __future__ import annotations

from prometheus_client import Counter, Gauge, Histogram

__all__ = [
    "EVENTS_DELIVERED",
    "EVENTS_STORED",
    "EVENT_CLIENTS",
    "EVENT_SUBSCRIBER_OVERFLOWS",
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
TELNYX_REQUESTS = Counter(
    "callbridge_telnyx_requests_total",
    "Telnyx REST requests, by command and outcome (ok, retried, error, unavailable).",
    ["command", "outcome"],
)
