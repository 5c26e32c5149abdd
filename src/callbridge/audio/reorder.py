"""A small bounded jitter window that puts media frames back in sequence-number order.

Telnyx media streaming numbers every message with ``sequence_number`` (a decimal string on the
wire; the caller parses it to int). Frames normally arrive in order, but a reconnect or a
proxy can reorder or duplicate a few. Playing them out of order is audible, and so is waiting
forever for a frame that never comes, so the buffer holds at most ``window`` frames: when a gap
would need more than that, it gives up on the missing sequence numbers and moves on. Latency is
therefore bounded by ``window`` frames (160 ms for the default 8 frames of 20 ms).
"""

from __future__ import annotations

from collections import deque
from typing import Generic, TypeVar

__all__ = ["ReorderBuffer"]

T = TypeVar("T")


class ReorderBuffer(Generic[T]):
    """Reorder items by integer sequence number within a bounded window.

    ``push`` returns whatever became releasable, in sequence order, so the caller can forward
    frames as soon as they are contiguous. Counters are kept for metrics and tests:

    * ``late_dropped``: frames whose slot had already passed (a later frame was released, or
      the seq was given up as a gap). Playing them now would put audio out of order.
    * ``duplicates``: copies of a frame that is held or was recently released.
    * ``gaps``: sequence numbers skipped because the window overflowed (or at ``flush``).
    * ``reordered``: frames that arrived after a higher seq but were still released in order.
    """

    def __init__(self, window: int = 8, *, first_seq: int | None = None) -> None:
        """Create a buffer holding at most ``window`` frames while waiting for a missing one.

        ``first_seq`` is the sequence number the stream is known to start at. If given, frames
        before it count as late and a missing first frame is waited for like any other gap.
        If None, the first pushed frame defines the start (a frame older than it that arrives
        afterwards is late), which avoids adding latency when the start is unknown.
        """
        if window < 0:
            raise ValueError(f"window must be >= 0 frames, got {window}")
        self.window = window
        self._next: int | None = first_seq
        self._first = first_seq  # every seq from here to _next was released, but the skipped
        self._held: dict[int, T] = {}
        self._highest_seen: int | None = None
        # A re-sent copy of a recently released seq counts as a duplicate rather than late:
        # "recently" is the last `_horizon` seqs, less those skipped as gaps (kept here, few).
        self._horizon = max(window, 1) * 4
        self._skipped: deque[int] = deque(maxlen=self._horizon)
        self.late_dropped = 0
        self.duplicates = 0
        self.gaps = 0
        self.reordered = 0

    @property
    def next_seq(self) -> int | None:
        """The sequence number the buffer is waiting to release next (None before any frame)."""
        return self._next

    def __len__(self) -> int:
        """Number of frames currently held back."""
        return len(self._held)

    def take_in_order(self, seq: int) -> bool:
        """The common case, without `push`'s bookkeeping: if `seq` is the one expected and
        nothing is held, count it released and return True (the caller releases the item)."""
        if seq != self._next or self._held:
            return False
        self._next = seq + 1
        self._highest_seen = seq  # nothing held: every seq seen so far is below this one
        return True

    def push(self, seq: int, item: T) -> list[T]:
        """Accept one frame and return the frames now releasable, in sequence order."""
        if self._next is None:
            self._next = self._first = seq
        if seq < self._next:
            if self._recently_released(seq):
                self.duplicates += 1
            else:
                self.late_dropped += 1
            return []
        if seq in self._held:
            self.duplicates += 1
            return []
        if self._highest_seen is not None and seq < self._highest_seen:
            self.reordered += 1
        if self._highest_seen is None or seq > self._highest_seen:
            self._highest_seen = seq
        self._held[seq] = item
        released = self._drain()
        while len(self._held) > self.window:
            # Waiting longer would exceed the latency budget: skip to the oldest held frame.
            self._skip_to(min(self._held))
            released.extend(self._drain())
        return released

    def _recently_released(self, seq: int) -> bool:
        assert self._next is not None
        assert self._first is not None
        return seq >= self._first and self._next - seq <= self._horizon and seq not in self._skipped

    def flush(self) -> list[T]:
        """Release everything held, in order, counting the missing seqs between as gaps.

        Use at end of stream; the buffer stays usable and later frames older than the last
        one released count as late.
        """
        released: list[T] = []
        while self._held:
            self._skip_to(min(self._held))
            released.extend(self._drain())
        return released

    def _skip_to(self, seq: int) -> None:
        assert self._next is not None  # only called with frames held, so a start exists
        self.gaps += seq - self._next
        self._skipped.extend(range(max(self._next, seq - self._horizon), seq))
        self._next = seq

    def _drain(self) -> list[T]:
        """Release the contiguous run starting at the next expected seq."""
        released: list[T] = []
        assert self._next is not None
        while self._next in self._held:
            released.append(self._held.pop(self._next))
            self._next += 1
        return released
