"""Run a socket's reader and writer side by side until either one is done."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Coroutine
from typing import Any

from starlette.websockets import WebSocketDisconnect

__all__ = ["until_either_ends"]

# A peer that vanishes mid-send surfaces as either of these; neither is a failure of ours.
_GONE = (WebSocketDisconnect, RuntimeError)


async def until_either_ends(*sides: Coroutine[Any, Any, None]) -> None:
    """The browser closing ends the sender; the sender finishing (e.g. after a final message)
    ends the receiver; a token expiring ends both. Other exceptions propagate, so the handler
    can close with 1011."""
    tasks = {asyncio.create_task(side) for side in sides}
    done, pending = await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
    for task in pending:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError, *_GONE):
            await task
    for task in done:
        with contextlib.suppress(*_GONE):
            task.result()
