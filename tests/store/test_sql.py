"""The SQL store on real SQLite and real PostgreSQL: gap-free seq under concurrency, dedupe,
migrations. Each PostgreSQL test gets a fresh database of its own."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path

import pytest

from callbridge.config import normalise_database_url
from callbridge.store.sql import open_store
from tests.backends import pg_database
from tests.store.writes import assert_gap_free, decide


@pytest.fixture(params=["sqlite", "postgresql"])
def url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    if request.param == "sqlite":
        yield f"sqlite+aiosqlite:///{tmp_path / 'nested' / 's.db'}"
    else:
        with pg_database() as database:
            yield normalise_database_url(database)


async def test_concurrent_writes_get_gap_free_increasing_seqs(url: str) -> None:
    store = await open_store(url)
    try:
        results = await asyncio.gather(
            *(
                store.apply(
                    f"evt-{i}",
                    f"v3:call-{i % 5}",
                    lambda _c, i=i: decide(f"v3:call-{i % 5}", 1 + i % 3),
                )
                for i in range(60)
            )
        )
        seqs = assert_gap_free(results)
        head = await store.head()
        assert head.last_seq == seqs[-1]
        assert head.first_seq == 1
    finally:
        await store.close()


async def test_duplicate_event_id_writes_nothing(url: str) -> None:
    store = await open_store(url)
    try:
        first = await store.apply("same", "v3:a", lambda _c: decide("v3:a", 2))
        again = await store.apply("same", "v3:a", lambda _c: decide("v3:a", 2))
        assert first is not None
        assert again is None
        assert (await store.head()).last_seq == 2
    finally:
        await store.close()


async def test_reopening_keeps_epoch_and_seq(url: str) -> None:
    store = await open_store(url)
    await store.apply("e1", "v3:a", lambda _c: decide("v3:a", 3))
    before = await store.head()
    await store.close()
    reopened = await open_store(url)
    try:
        after = await reopened.head()
        assert after == before
        events = await reopened.events_after(1, up_to=2)
        assert [e.seq for e in events] == [2]
        call = await reopened.get_call("v3:a")
        assert call is not None
        assert call.created_at is not None
        assert call.created_at.tzinfo is not None
    finally:
        await reopened.close()
