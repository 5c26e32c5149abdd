"""ReorderBuffer: bounded reordering with counted late frames, duplicates and gaps."""

from __future__ import annotations

import random

import pytest
from hypothesis import given
from hypothesis import strategies as st

from callbridge.audio import ReorderBuffer

__all__: list[str] = []


def feed(buffer: ReorderBuffer[str], seqs: list[int]) -> list[str]:
    out: list[str] = []
    for seq in seqs:
        out.extend(buffer.push(seq, f"f{seq}"))
    return out


def names(seqs: range | list[int]) -> list[str]:
    return [f"f{seq}" for seq in seqs]


def test_in_order_frames_pass_straight_through() -> None:
    buffer: ReorderBuffer[str] = ReorderBuffer()
    for seq in range(1, 20):
        assert buffer.push(seq, f"f{seq}") == [f"f{seq}"]
    assert (buffer.late_dropped, buffer.duplicates, buffer.gaps, buffer.reordered) == (0, 0, 0, 0)
    assert len(buffer) == 0
    assert buffer.next_seq == 20


def test_swapped_pair_is_put_back_in_order() -> None:
    buffer: ReorderBuffer[str] = ReorderBuffer(first_seq=1)
    assert buffer.push(2, "f2") == []
    assert buffer.push(1, "f1") == ["f1", "f2"]
    assert buffer.reordered == 1
    assert buffer.gaps == 0


@given(
    window=st.integers(min_value=1, max_value=10),
    chunks=st.lists(st.randoms(use_true_random=False), min_size=1, max_size=6),
)
def test_shuffles_within_the_window_come_out_sorted(
    window: int, chunks: list[random.Random]
) -> None:
    # Any permutation of window + 1 consecutive frames fits: at most `window` wait for the first.
    buffer: ReorderBuffer[str] = ReorderBuffer(window, first_seq=100)
    arrival: list[int] = []
    for index, rng in enumerate(chunks):
        chunk = list(range(100 + index * (window + 1), 100 + (index + 1) * (window + 1)))
        rng.shuffle(chunk)
        arrival.extend(chunk)
    out = feed(buffer, arrival)
    assert out == names(sorted(arrival))
    assert (buffer.late_dropped, buffer.duplicates, buffer.gaps) == (0, 0, 0)
    assert len(buffer) == 0
    assert buffer.reordered == sum(
        1 for i, seq in enumerate(arrival) if any(seq < earlier for earlier in arrival[:i])
    )


def test_missing_frame_becomes_a_gap_when_the_window_overflows() -> None:
    buffer: ReorderBuffer[str] = ReorderBuffer(window=3, first_seq=1)
    assert feed(buffer, [1, 3, 4, 5]) == ["f1"]
    assert len(buffer) == 3
    # A fourth held frame exceeds the window: give up on 2 and release 3..6.
    assert buffer.push(6, "f6") == names([3, 4, 5, 6])
    assert buffer.gaps == 1
    assert buffer.next_seq == 7


def test_late_frame_after_its_gap_is_dropped_and_counted() -> None:
    buffer: ReorderBuffer[str] = ReorderBuffer(window=2, first_seq=1)
    assert feed(buffer, [1, 3, 4, 5]) == names([1, 3, 4, 5])
    assert buffer.gaps == 1
    assert buffer.push(2, "f2") == []
    assert buffer.late_dropped == 1
    assert buffer.duplicates == 0


def test_frames_before_the_start_are_late() -> None:
    explicit: ReorderBuffer[str] = ReorderBuffer(first_seq=5)
    assert explicit.push(4, "f4") == []
    assert explicit.late_dropped == 1

    implicit: ReorderBuffer[str] = ReorderBuffer()
    assert implicit.push(10, "f10") == ["f10"]
    assert implicit.push(9, "f9") == []
    assert implicit.late_dropped == 1


def test_duplicates_are_dropped_and_counted() -> None:
    buffer: ReorderBuffer[str] = ReorderBuffer(first_seq=1)
    assert feed(buffer, [1, 1]) == ["f1"]  # copy of a released frame
    assert feed(buffer, [3, 3]) == []  # copy of a held frame
    assert buffer.duplicates == 2
    assert buffer.late_dropped == 0
    assert feed(buffer, [2]) == names([2, 3])


def test_flush_releases_everything_in_order_and_counts_gaps() -> None:
    buffer: ReorderBuffer[str] = ReorderBuffer(window=8, first_seq=1)
    assert feed(buffer, [4, 2, 7]) == []
    assert buffer.flush() == names([2, 4, 7])
    assert buffer.gaps == 4  # 1, 3, 5, 6
    assert len(buffer) == 0
    assert buffer.flush() == []
    # Still usable after a flush: older frames are late, newer ones flow.
    assert buffer.push(6, "f6") == []
    assert buffer.late_dropped == 1
    assert buffer.push(8, "f8") == ["f8"]


def test_window_zero_never_holds() -> None:
    buffer: ReorderBuffer[str] = ReorderBuffer(window=0, first_seq=1)
    assert feed(buffer, [1, 3, 2, 4]) == names([1, 3, 4])
    assert (buffer.gaps, buffer.late_dropped) == (1, 1)


def test_negative_window_is_rejected() -> None:
    with pytest.raises(ValueError, match="window must be >= 0"):
        ReorderBuffer(window=-1)


@given(st.lists(st.integers(min_value=0, max_value=40), max_size=80), st.integers(0, 6))
def test_output_is_strictly_increasing_and_everything_is_accounted_for(
    arrival: list[int], window: int
) -> None:
    buffer: ReorderBuffer[int] = ReorderBuffer(window, first_seq=0)
    out: list[int] = []
    for seq in arrival:
        out.extend(buffer.push(seq, seq))
        assert len(buffer) <= window
    out.extend(buffer.flush())
    assert out == sorted(set(out))
    assert len(out) + buffer.late_dropped + buffer.duplicates == len(arrival)
    if out:
        assert len(out) + buffer.gaps == out[-1] + 1
