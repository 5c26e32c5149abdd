"""The store: calls and the append-only, gap-free numbered event log (SQLite or PostgreSQL)."""

from callbridge.store.base import Applied, Decide, Decision, Store, StoreHead
from callbridge.store.sql import SqlStore, open_store

__all__ = ["Applied", "Decide", "Decision", "SqlStore", "Store", "StoreHead", "open_store"]
