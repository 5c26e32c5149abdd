"""The SQL store on real SQLite and real PostgreSQL: gap-free seq under concurrency, dedupe,
migrations. Each PostgreSQL test gets a fresh database of its own."""

from __future__ import annotations

import asyncio
import dataclasses
from collections.abc import Iterator
from pathlib import Path

import pytest

from callbridge.calls.model import Call, CallState, StreamState
from callbridge.config import normalise_database_url
from callbridge.store.base import Decide, Decision
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


@pytest.mark.parametrize("odd", ["v3:\x00", "a\x00", "v3:" + "x" * 300])
async def test_ids_no_call_can_have_find_nothing(url: str, odd: str) -> None:
    """Found by the fuzz suite on PostgreSQL: a NUL in a URL's call id failed the query (500 on
    REST, 1011 on the browser sockets). An id no call can have names no call."""
    store = await open_store(url)
    try:
        await store.apply("e1", "v3:a", lambda _c: decide("v3:a", 2))
        assert await store.get_call(odd) is None
        assert await store.call_events(odd) == []
        assert await store.events_after(0, call_ids=[odd]) == []
        assert [e.seq for e in await store.events_after(0, call_ids=[odd, "v3:a"])] == [1, 2]
        calls, total = await store.list_calls(states=None, limit=10, offset=0, call_ids=[odd])
        assert (calls, total) == ([], 0)
    finally:
        await store.close()


async def test_held_streams_are_the_active_streams_of_one_instance(url: str) -> None:
    """The heartbeat's light query: only unfinished calls whose *active* stream it holds."""
    store = await open_store(url)

    def write(call_id: str, state: CallState, stream: StreamState, holder: str | None) -> Decide:
        def decide_call(_current: Call | None) -> Decision:
            call = dataclasses.replace(
                decide(call_id, 1).call,
                state=state,
                stream=stream,
                stream_id=f"s-{call_id}",
                stream_instance=holder,
            )
            return Decision(call, decide(call_id, 1).events)

        return decide_call

    try:
        for call_id, state, stream, holder in [
            ("v3:mine", CallState.ANSWERED, StreamState.ACTIVE, "a:1"),
            ("v3:other", CallState.ANSWERED, StreamState.ACTIVE, "b:2"),
            ("v3:lost", CallState.ANSWERED, StreamState.LOST, "a:1"),
            ("v3:ended", CallState.ENDED, StreamState.ACTIVE, "a:1"),
        ]:
            await store.apply(None, call_id, write(call_id, state, stream, holder))
        assert await store.held_streams("a:1") == [("v3:mine", "s-v3:mine")]
        assert await store.held_streams("c:3") == []
    finally:
        await store.close()
