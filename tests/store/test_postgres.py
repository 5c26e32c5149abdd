"""PostgreSQL shared by several instances: one log, one numbering, one copy of each webhook.

Several `SqlStore`s on one database stand for several callbridge processes (each has its own
engine and connection pool); the migration test runs real processes.
"""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
from collections.abc import AsyncIterator
from pathlib import Path

import orjson
import pytest
import sqlalchemy as sa

from callbridge.config import normalise_database_url
from callbridge.store.sql import SqlStore, open_store
from callbridge.store.tables import events, meta
from tests.backends import pg_database
from tests.store.writes import assert_gap_free, decide

INSTANCES = 3


@pytest.fixture
async def stores() -> AsyncIterator[list[SqlStore]]:
    with pg_database() as database:
        url = normalise_database_url(database)
        opened = [await open_store(url) for _ in range(INSTANCES)]
        try:
            yield opened
        finally:
            for store in opened:
                await store.close()


async def test_writes_from_several_instances_share_one_gap_free_numbering(
    stores: list[SqlStore],
) -> None:
    results = await asyncio.gather(
        *(
            stores[i % INSTANCES].apply(
                f"evt-{i}",
                f"v3:call-{i % 7}",
                lambda _c, i=i: decide(f"v3:call-{i % 7}", 1 + i % 3),
            )
            for i in range(90)
        )
    )
    seqs = assert_gap_free(results)
    heads = [await store.head() for store in stores]
    assert {(h.epoch, h.last_seq) for h in heads} == {(heads[0].epoch, seqs[-1])}
    logged = await stores[1].events_after(0, limit=1000)
    assert [e.seq for e in logged] == seqs


async def test_a_duplicate_delivered_to_two_instances_at_once_is_stored_once(
    stores: list[SqlStore],
) -> None:
    outcomes = []
    for n in range(20):
        event_id = f"dup-{n}"
        call_id = f"v3:dup-{n % 3}"
        pair = await asyncio.gather(
            stores[0].apply(event_id, call_id, lambda _c, c=call_id: decide(c, 2)),
            stores[1].apply(event_id, call_id, lambda _c, c=call_id: decide(c, 2)),
        )
        outcomes.append(sum(result is not None for result in pair))
    assert outcomes == [1] * 20
    async with stores[2].engine.connect() as conn:
        stored_ids = (await conn.execute(sa.select(events.c.event_id))).scalars().all()
        total = await conn.scalar(sa.select(sa.func.count()).select_from(events))
    assert sorted(i for i in stored_ids if i) == sorted(f"dup-{n}" for n in range(20))
    assert total == 40  # two events per delivery, once each
    assert (await stores[2].head()).last_seq == 40


def test_two_processes_migrating_a_fresh_database_at_once_agree(tmp_path: Path) -> None:
    with pg_database() as database:
        env = {k: v for k, v in os.environ.items() if not k.startswith(("CALLBRIDGE_", "TELNYX_"))}
        env.update(CALLBRIDGE_DATABASE_URL=database, CALLBRIDGE_LOG_FORMAT="json")
        command = [sys.executable, "-m", "callbridge", "migrate"]
        pipes = {"stdout": subprocess.PIPE, "stderr": subprocess.PIPE}
        processes = [subprocess.Popen(command, env=env, cwd=tmp_path, **pipes) for _ in range(2)]
        outputs = [process.communicate(timeout=60) for process in processes]
        for process, (_out, err) in zip(processes, outputs, strict=True):
            assert process.returncode == 0, err.decode()
        logged = [orjson.loads(line) for _out, err in outputs for line in err.splitlines()]
        reported = {entry["epoch"] for entry in logged if entry["event"] == "Schema up to date"}

        async def check() -> tuple[list[str], list[str]]:
            store = await open_store(normalise_database_url(database))
            try:
                async with store.engine.connect() as conn:
                    versions = (
                        (await conn.execute(sa.text("SELECT version_num FROM alembic_version")))
                        .scalars()
                        .all()
                    )
                    epoch_rows = (
                        (await conn.execute(sa.select(meta.c.value).where(meta.c.key == "epoch")))
                        .scalars()
                        .all()
                    )
                return list(versions), list(epoch_rows)
            finally:
                await store.close()

        versions, epoch_rows = asyncio.run(check())
    assert versions == ["0003"]
    assert len(epoch_rows) == 1  # one epoch: the second process found the schema made
    assert reported == set(epoch_rows)  # both processes name the same log
