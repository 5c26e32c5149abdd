"""The task gauge the soak run watches: counted on the loop that serves /metrics."""

from __future__ import annotations

import asyncio

from prometheus_client import generate_latest

import callbridge.metrics  # noqa: F401 - registers the collectors


def _task_gauge() -> float | None:
    for line in generate_latest().decode().splitlines():
        if line.startswith("callbridge_asyncio_tasks "):
            return float(line.split()[1])
    return None


async def test_the_task_gauge_counts_the_loops_tasks() -> None:
    before = _task_gauge()
    assert before is not None
    idle = [asyncio.create_task(asyncio.sleep(10)) for _ in range(5)]
    try:
        assert _task_gauge() == before + 5
    finally:
        for task in idle:
            task.cancel()
        await asyncio.gather(*idle, return_exceptions=True)


def test_outside_a_loop_there_is_no_task_gauge() -> None:
    assert _task_gauge() is None
