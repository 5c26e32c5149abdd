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


async def until_either_ends(
    inline: Coroutine[Any, Any, None], *others: Coroutine[Any, Any, None]
) -> None:
    """The browser closing ends the sender; the sender finishing (e.g. after a final message)
    ends the receiver. Other exceptions propagate, so the handler can close with 1011.

    `inline` (the reader) runs in the calling task and only `others` get tasks of their own:
    an idle browser socket then costs one task less (10,000 idle sockets: tens of MB)."""
    current = asyncio.current_task()
    assert current is not None
    tasks = [asyncio.create_task(other) for other in others]
    state = {"finished": False, "stopped_by_other": False}

    def other_ended(_: asyncio.Task[None]) -> None:
        if not state["finished"] and not state["stopped_by_other"]:
            state["stopped_by_other"] = True
            current.cancel()

    for task in tasks:
        task.add_done_callback(other_ended)
    try:
        await inline
    except asyncio.CancelledError:
        if not state["stopped_by_other"]:
            raise  # cancelled from outside (shutdown): not ours to swallow
        current.uncancel()
    except _GONE:
        pass
    finally:
        state["finished"] = True
        for task in tasks:
            task.remove_done_callback(other_ended)
            if not task.done():
                task.cancel()
            with contextlib.suppress(asyncio.CancelledError, *_GONE):
                await task
    for task in tasks:
        if not task.cancelled():
            with contextlib.suppress(*_GONE):
                task.result()
