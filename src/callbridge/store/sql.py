"""The SQL store (SQLite by default, PostgreSQL for scale-out), on SQLAlchemy's async engine.

Gap-free numbering: every write locks the single counter row first (`SELECT … FOR UPDATE` on
PostgreSQL, one writer at a time on SQLite), so seqs are handed out and committed in order, a
rolled-back write leaves no hole, and a duplicate webhook delivered to two instances at once is
stored once.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Collection
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import sqlalchemy as sa
from alembic import command
from alembic.config import Config
from sqlalchemy.engine import Connection, RowMapping
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine, create_async_engine

from callbridge.calls.events import StoredEvent
from callbridge.calls.model import Call, CallState, Direction, StreamState
from callbridge.store.base import Applied, Decide, InstanceRecord, StoreHead
from callbridge.store.tables import calls, counters, events, instances, meta

__all__ = ["SqlStore", "open_store", "run_migrations"]

_SEQ = "events_seq"
_MIGRATIONS = Path(__file__).parent / "migrations"
_PG_MIGRATION_LOCK = 0x63616C6C  # any constant shared by every instance


def run_migrations(sync_connection: Connection) -> None:
    """Bring the schema to head on this connection (both dialects)."""
    if sync_connection.dialect.name == "postgresql":
        # Several instances may start at once; one migrates, the others wait and find it done.
        sync_connection.execute(sa.text(f"SELECT pg_advisory_xact_lock({_PG_MIGRATION_LOCK})"))
    config = Config()
    config.set_main_option("script_location", str(_MIGRATIONS))
    config.attributes["connection"] = sync_connection
    command.upgrade(config, "head")


def _utc(moment: datetime | None) -> datetime | None:
    """SQLite hands back naive datetimes; everything we store is UTC."""
    if moment is None:
        return None
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


def _storable(call_control_id: str) -> bool:
    """Whether a call with this id could be stored: the column holds 256 characters, and
    PostgreSQL text no NUL. Any other id names no call, and looking it up must say so rather
    than fail (it arrives from URLs and query strings)."""
    return len(call_control_id) <= 256 and "\x00" not in call_control_id


def _call_from_row(row: RowMapping) -> Call:
    return Call(
        call_control_id=row["call_control_id"],
        direction=Direction(row["direction"]),
        state=CallState(row["state"]),
        stream=StreamState(row["stream"]),
        call_leg_id=row["call_leg_id"],
        call_session_id=row["call_session_id"],
        from_number=row["from_number"],
        to_number=row["to_number"],
        hangup_cause=row["hangup_cause"],
        hangup_source=row["hangup_source"],
        client_state=row["client_state"],
        stream_token_hash=row["stream_token_hash"],
        stream_updated_at=_utc(row["stream_updated_at"]),
        stream_id=row["stream_id"],
        stream_encoding=row["stream_encoding"],
        stream_sample_rate=row["stream_sample_rate"],
        talk_codec=row["talk_codec"],
        stream_instance=row["stream_instance"],
        created_at=_utc(row["created_at"]),
        updated_at=_utc(row["updated_at"]),
        answered_at=_utc(row["answered_at"]),
        ended_at=_utc(row["ended_at"]),
    )


def _call_values(call: Call, now: datetime) -> dict[str, Any]:
    return {
        "call_control_id": call.call_control_id,
        "direction": call.direction.value,
        "state": call.state.value,
        "stream": call.stream.value,
        "call_leg_id": call.call_leg_id,
        "call_session_id": call.call_session_id,
        "from_number": call.from_number,
        "to_number": call.to_number,
        "hangup_cause": call.hangup_cause,
        "hangup_source": call.hangup_source,
        "client_state": call.client_state,
        "stream_token_hash": call.stream_token_hash,
        "stream_updated_at": call.stream_updated_at,
        "stream_id": call.stream_id,
        "stream_encoding": call.stream_encoding,
        "stream_sample_rate": call.stream_sample_rate,
        "talk_codec": call.talk_codec,
        "stream_instance": call.stream_instance,
        "created_at": call.created_at or now,
        "updated_at": now,
        "answered_at": call.answered_at,
        "ended_at": call.ended_at,
    }


def _event_from_row(row: RowMapping) -> StoredEvent:
    occurred = _utc(row["occurred_at"])
    assert occurred is not None
    return StoredEvent(
        seq=int(row["seq"]),
        type=row["type"],
        call_control_id=row["call_control_id"],
        occurred_at=occurred,
        payload=dict(row["payload"]),
    )


class SqlStore:
    """The `Store` on a SQLAlchemy async engine."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.dialect = sa.engine.make_url(url).get_backend_name()
        engine_args: dict[str, Any] = {"pool_pre_ping": True}
        if self.dialect == "sqlite":
            self._prepare_sqlite_path(url)
        else:
            engine_args.update(pool_size=10, max_overflow=10)
        self.engine: AsyncEngine = create_async_engine(url, **engine_args)
        if self.dialect == "sqlite":
            sa.event.listen(self.engine.sync_engine, "connect", self._sqlite_pragmas)
        # SQLite allows one writer; queueing writers here beats "database is locked" errors.
        self._write_lock = asyncio.Lock()
        self._epoch: str | None = None

    @staticmethod
    def _prepare_sqlite_path(url: str) -> None:
        database = sa.engine.make_url(url).database
        if database and database != ":memory:":
            Path(database).expanduser().parent.mkdir(parents=True, exist_ok=True)

    @staticmethod
    def _sqlite_pragmas(dbapi_connection: Any, _record: Any) -> None:
        cursor = dbapi_connection.cursor()
        cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute("PRAGMA synchronous=FULL")  # an accepted event survives a power cut
        cursor.execute("PRAGMA busy_timeout=5000")
        cursor.close()

    async def open(self) -> None:
        async with self.engine.begin() as conn:
            await conn.run_sync(run_migrations)
        async with self.engine.connect() as conn:
            epoch = await conn.scalar(sa.select(meta.c.value).where(meta.c.key == "epoch"))
        self._epoch = str(epoch)

    async def close(self) -> None:
        await self.engine.dispose()

    async def ping(self) -> None:
        async with self.engine.connect() as conn:
            await conn.execute(sa.text("SELECT 1"))

    @contextlib.asynccontextmanager
    async def _writing(self) -> AsyncIterator[AsyncConnection]:
        if self.dialect == "sqlite":
            async with self._write_lock, self.engine.begin() as conn:
                yield conn
        else:
            async with self.engine.begin() as conn:
                yield conn

    async def apply(
        self, event_id: str | None, call_control_id: str, decide: Decide
    ) -> Applied | None:
        now = datetime.now(UTC)
        async with self._writing() as conn:
            last_seq = await conn.scalar(
                sa.select(counters.c.value).where(counters.c.name == _SEQ).with_for_update()
            )
            if event_id is not None:
                seen = await conn.scalar(
                    sa.select(events.c.seq).where(events.c.event_id == event_id)
                )
                if seen is not None:
                    return None
            row = (
                (
                    await conn.execute(
                        sa.select(calls).where(calls.c.call_control_id == call_control_id)
                    )
                )
                .mappings()
                .first()
            )
            existing = _call_from_row(row) if row else None
            decision = decide(existing)
            if decision.call is not None:
                values = _call_values(decision.call, now)
                if existing is None:
                    await conn.execute(sa.insert(calls).values(**values))
                else:
                    values.pop("created_at")
                    await conn.execute(
                        sa.update(calls)
                        .where(calls.c.call_control_id == call_control_id)
                        .values(**values)
                    )
                decision.call.updated_at = now
                decision.call.created_at = decision.call.created_at or now
            if event_id is not None and not decision.events:
                raise ValueError("a deduplicated write must append at least one event")
            stored: list[StoredEvent] = []
            seq = int(last_seq or 0)
            for index, new in enumerate(decision.events):
                seq += 1
                await conn.execute(
                    sa.insert(events).values(
                        seq=seq,
                        # The first event carries the dedupe key: one row remembers the delivery.
                        event_id=event_id if index == 0 else None,
                        call_control_id=new.call_control_id,
                        type=new.type,
                        occurred_at=new.occurred_at,
                        received_at=now,
                        payload=new.payload,
                    )
                )
                stored.append(
                    StoredEvent(seq, new.type, new.call_control_id, new.occurred_at, new.payload)
                )
            if stored:
                await conn.execute(
                    sa.update(counters).where(counters.c.name == _SEQ).values(value=seq)
                )
        return Applied(call=decision.call or existing, events=stored)

    async def get_call(self, call_control_id: str) -> Call | None:
        if not _storable(call_control_id):
            return None
        async with self.engine.connect() as conn:
            row = (
                (
                    await conn.execute(
                        sa.select(calls).where(calls.c.call_control_id == call_control_id)
                    )
                )
                .mappings()
                .first()
            )
        return _call_from_row(row) if row else None

    async def list_calls(
        self,
        *,
        states: Collection[str] | None,
        limit: int,
        offset: int,
        call_ids: Collection[str] | None = None,
    ) -> tuple[list[Call], int]:
        query = sa.select(calls)
        count = sa.select(sa.func.count()).select_from(calls)
        if states:
            query = query.where(calls.c.state.in_(list(states)))
            count = count.where(calls.c.state.in_(list(states)))
        if call_ids is not None:
            wanted = [c for c in call_ids if _storable(c)]
            query = query.where(calls.c.call_control_id.in_(wanted))
            count = count.where(calls.c.call_control_id.in_(wanted))
        query = query.order_by(calls.c.created_at.desc(), calls.c.call_control_id)
        async with self.engine.connect() as conn:
            rows = (await conn.execute(query.limit(limit).offset(offset))).mappings().all()
            total = await conn.scalar(count)
        return [_call_from_row(row) for row in rows], int(total or 0)

    async def call_events(self, call_control_id: str) -> list[StoredEvent]:
        if not _storable(call_control_id):
            return []
        query = (
            sa.select(events)
            .where(events.c.call_control_id == call_control_id)
            .order_by(events.c.seq)
        )
        async with self.engine.connect() as conn:
            rows = (await conn.execute(query)).mappings().all()
        return [_event_from_row(row) for row in rows]

    async def events_after(
        self,
        after_seq: int,
        *,
        up_to: int | None = None,
        call_ids: Collection[str] | None = None,
        limit: int = 1000,
    ) -> list[StoredEvent]:
        query = sa.select(events).where(events.c.seq > after_seq)
        if up_to is not None:
            query = query.where(events.c.seq <= up_to)
        if call_ids:
            wanted = [c for c in call_ids if _storable(c)]
            if not wanted:  # only ids no call can have: nothing, rather than everything
                return []
            query = query.where(events.c.call_control_id.in_(wanted))
        query = query.order_by(events.c.seq).limit(limit)
        async with self.engine.connect() as conn:
            rows = (await conn.execute(query)).mappings().all()
        return [_event_from_row(row) for row in rows]

    async def head(self) -> StoreHead:
        async with self.engine.connect() as conn:
            last = await conn.scalar(sa.select(counters.c.value).where(counters.c.name == _SEQ))
            first = await conn.scalar(sa.select(sa.func.min(events.c.seq)))
        assert self._epoch is not None, "open() the store first"
        return StoreHead(epoch=self._epoch, last_seq=int(last or 0), first_seq=int(first or 1))

    # --- instances and their streams ----------------------------------------------------------

    async def _clock(self, conn: AsyncConnection) -> datetime:
        """Now, by the clock every instance shares: the server's on PostgreSQL (instances on
        several hosts need not agree on the time); one host's on SQLite, which one host uses."""
        if self.dialect == "postgresql":
            now = _utc(await conn.scalar(sa.select(sa.func.now())))
            assert now is not None
            return now
        return datetime.now(UTC)

    async def heartbeat(self, instance_id: str, state: str) -> None:
        async with self._writing() as conn:
            now = await self._clock(conn)
            updated = await conn.execute(
                sa.update(instances)
                .where(instances.c.instance_id == instance_id)
                .values(state=state, last_seen=now)
            )
            if updated.rowcount == 0:
                await conn.execute(
                    sa.insert(instances).values(
                        instance_id=instance_id, state=state, started_at=now, last_seen=now
                    )
                )

    async def instances(self) -> list[InstanceRecord]:
        async with self.engine.connect() as conn:
            now = await self._clock(conn)
            rows = (await conn.execute(sa.select(instances))).mappings().all()
        records = []
        for row in rows:
            seen = _utc(row["last_seen"])
            assert seen is not None
            ago = (now - seen).total_seconds()
            records.append(InstanceRecord(row["instance_id"], row["state"], ago))
        return records

    async def forget_instances(self, silent_for: float) -> int:
        async with self._writing() as conn:
            cutoff = await self._clock(conn) - timedelta(seconds=silent_for)
            deleted = await conn.execute(sa.delete(instances).where(instances.c.last_seen < cutoff))
        return int(deleted.rowcount or 0)

    async def held_streams(self, instance_id: str) -> list[tuple[str, str | None]]:
        query = sa.select(calls.c.call_control_id, calls.c.stream_id).where(
            calls.c.state != CallState.ENDED.value,
            calls.c.stream_instance == instance_id,
            calls.c.stream == StreamState.ACTIVE.value,
        )
        async with self.engine.connect() as conn:
            rows = (await conn.execute(query)).all()
        return [(row[0], row[1]) for row in rows]

    async def unfinished_calls(
        self,
        *,
        held_by: Collection[str] | None = None,
        not_held_by: Collection[str] | None = None,
        streams: Collection[StreamState] | None = None,
        limit: int = 1000,
    ) -> list[Call]:
        query = sa.select(calls).where(calls.c.state != CallState.ENDED.value)
        if held_by is not None:
            query = query.where(calls.c.stream_instance.in_(list(held_by)))
        if not_held_by is not None:
            query = query.where(
                calls.c.stream_instance.is_not(None),
                calls.c.stream_instance.not_in(list(not_held_by)),
            )
        if streams is not None:
            query = query.where(calls.c.stream.in_([stream.value for stream in streams]))
        query = query.order_by(calls.c.created_at, calls.c.call_control_id).limit(limit)
        async with self.engine.connect() as conn:
            rows = (await conn.execute(query)).mappings().all()
        return [_call_from_row(row) for row in rows]


async def open_store(url: str) -> SqlStore:
    """Create, migrate and return the store for a database URL."""
    store = SqlStore(url)
    await store.open()
    return store
