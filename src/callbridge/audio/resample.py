"""Streaming 2:1 sample-rate conversion between 16 kHz and 8 kHz, in pure Python.

Talk-back audio goes the other way from call audio: a browser microphone sends signed 16-bit
little-endian mono PCM, often at 16 kHz, while the call leg wants 8 kHz G.711 (or L16 at either
rate). The only ratios we need are 1:1 and 2:1, so one halfband low-pass FIR does both jobs:

* ``Halver`` (16 kHz to 8 kHz) filters out everything above 4 kHz before dropping every other
  sample, so a whistle at 6 kHz does not fold down to an audible 2 kHz;
* ``Doubler`` (8 kHz to 16 kHz) inserts a zero between samples and filters out the mirror
  image that this creates above 4 kHz (a 1 kHz tone would otherwise also play at 7 kHz).

The filter is a 31-tap Kaiser-windowed sinc (beta 5) with its cut-off at a quarter of the
16 kHz rate. In a halfband filter every other tap is exactly zero apart from the centre tap
(exactly 0.5), so the polyphase loops below only multiply the 16 nonzero side taps. Measured
on the integer taps: flat within 0.02 dB up to 3 kHz, -0.44 dB at 3.4 kHz, -6 dB at 4 kHz
(inherent to a halfband filter) and at least 54 dB of rejection from 5 kHz up.

Taps are integers (Q16) computed once at import with ``math``, and the arithmetic is exact
integer arithmetic, so the output is the same on every platform and does not depend on how the
input is split into chunks. Results are rounded and clipped to the int16 range, never wrapped.

Delay: the filter is linear-phase with a group delay of 15 samples at 16 kHz (0.9375 ms), that
is 7.5 samples at 8 kHz. Both converters start from silence, so the first ~1 ms of output is
the filter's onset transient. Why not ``audioop.ratecv`` or numpy: see ``g711``.
"""

from __future__ import annotations

import math
import sys
from array import array
from operator import mul
from typing import Protocol

__all__ = ["Doubler", "Halver", "Passthrough", "Resampler", "resampler"]

_RATES = (8000, 16000)

_TAPS = 31  # filter length; a halfband length is 4k - 1 so that the outermost taps are nonzero
_CENTER = (_TAPS - 1) // 2  # 15: index of the centre tap, and the group delay at 16 kHz
_KAISER_BETA = 5.0
_Q = 16  # tap precision: fixed point with 16 fractional bits
_ROUND = 1 << (_Q - 1)
_INT16_MIN = -32768
_INT16_MAX = 32767


def _bessel_i0(x: float) -> float:
    """Modified Bessel function of the first kind, order 0 (power series), for the window."""
    total = term = 1.0
    k = 1
    while term > 1e-17 * total:
        term *= (x / (2 * k)) ** 2
        total += term
        k += 1
    return total


def _halfband_side_taps() -> tuple[int, ...]:
    """The 16 nonzero off-centre taps in Q16, summing to exactly 0.5 (the centre is 0.5).

    Tap ``2 * j`` of the full filter is side tap ``j``; odd taps other than the centre are 0.
    Making the side taps sum to exactly half gives unity gain at DC in both polyphase branches.
    """
    half = _CENTER
    weights = []
    for n in range(0, _TAPS, 2):  # offsets from the centre are odd: -15, -13, ..., 15
        m = n - half
        ideal = math.sin(math.pi * m / 2) / (math.pi * m)
        window = _bessel_i0(_KAISER_BETA * math.sqrt(1 - (m / half) ** 2)) / _bessel_i0(
            _KAISER_BETA
        )
        weights.append(ideal * window)
    scale = (1 << (_Q - 1)) / math.fsum(weights)
    taps = [round(w * scale) for w in weights]
    # Rounding can leave the sum a few units off; put the residue on the two largest taps,
    # which keeps the filter symmetric (linear phase).
    residue = (1 << (_Q - 1)) - sum(taps)
    mid = len(taps) // 2
    taps[mid - 1] += residue // 2
    taps[mid] += residue - residue // 2
    return tuple(taps)


_SIDE = _halfband_side_taps()  # for Halver: side taps at unity gain
_SIDE_X2 = tuple(2 * t for t in _SIDE)  # for Doubler: zero-stuffing halves the level
_HALF = 1 << (_Q - 1)  # the centre tap, 0.5 in Q16


def _require_even(pcm16le: bytes) -> None:
    """A torn sample is a framing bug upstream: padding or dropping a byte would turn the rest
    of the stream into noise, so refuse it before any state changes."""
    if len(pcm16le) % 2:
        raise ValueError(
            f"PCM input must be 16-bit samples (an even number of bytes), got {len(pcm16le)} bytes"
        )


def _samples(pcm16le: bytes) -> list[int]:
    """Signed 16-bit little-endian bytes to ints; ValueError on an odd number of bytes."""
    _require_even(pcm16le)
    data = array("h")
    data.frombytes(pcm16le)
    if sys.byteorder == "big":  # pragma: no cover - little-endian hosts only in CI
        data.byteswap()
    return data.tolist()


def _pcm(samples: list[int]) -> bytes:
    """Ints to signed 16-bit little-endian bytes, clipping to the int16 range (no wrap-around)."""
    if samples and (max(samples) > _INT16_MAX or min(samples) < _INT16_MIN):
        samples = [_INT16_MAX if s > _INT16_MAX else max(s, _INT16_MIN) for s in samples]
    data = array("h", samples)
    if sys.byteorder == "big":  # pragma: no cover
        data.byteswap()
    return data.tobytes()


class Resampler(Protocol):
    """A streaming converter of signed 16-bit little-endian mono PCM."""

    def process(self, pcm16le: bytes) -> bytes:
        """Convert the next piece of the stream; state carries over to the next call."""
        ...

    def reset(self) -> None:
        """Forget the stream so far, as if newly created."""
        ...


class Passthrough:
    """The 1:1 case: returns its input unchanged (after checking it is whole samples)."""

    def process(self, pcm16le: bytes) -> bytes:
        """Return the input as bytes. Raises ValueError on an odd number of bytes."""
        _require_even(pcm16le)
        return bytes(pcm16le)

    def reset(self) -> None:
        """Nothing to forget."""


class Halver:
    """16 kHz to 8 kHz: halfband low-pass, then keep every other sample.

    Streaming: FIR history and the even/odd phase carry across ``process`` calls, so any split
    of the input (odd sample counts included) gives the same bytes as one call. Output sample
    ``m`` is computed when input sample ``2 * m`` arrives, so after ``n`` input samples in total
    exactly ``ceil(n / 2)`` have come out. Delay: 15 input samples (7.5 output samples).
    """

    def __init__(self) -> None:
        """Start from silence."""
        self._history: list[int] = []
        self.reset()

    def reset(self) -> None:
        """Forget the history and the phase, as if newly created."""
        # Invariant: _history[0] is the oldest sample the next output needs, so it holds
        # _TAPS - 1 samples, plus one more when an odd sample is waiting for its partner.
        self._history = [0] * (_TAPS - 1)

    def process(self, pcm16le: bytes) -> bytes:
        """Convert the next piece of 16 kHz PCM; ValueError on an odd number of bytes."""
        history = self._history
        history.extend(_samples(pcm16le))
        count = (len(history) - (_TAPS - 1) + 1) // 2
        if count <= 0:
            return b""
        side = _SIDE
        out = [
            (
                sum(map(mul, side, history[i : i + _TAPS : 2]))
                + _HALF * history[i + _CENTER]
                + _ROUND
            )
            >> _Q
            for i in range(0, 2 * count, 2)
        ]
        del history[: 2 * count]
        return _pcm(out)


class Doubler:
    """8 kHz to 16 kHz: insert a zero after each sample, then halfband low-pass (gain 2).

    Polyphase: the even output samples are a 16-tap filter of the input, and the odd ones are
    the input itself delayed by 7 samples (the centre tap is the only nonzero tap in that
    phase). Streaming and exact like ``Halver``: every input sample yields exactly two output
    samples whatever the split. Delay: 15 output samples (7.5 input samples).
    """

    def __init__(self) -> None:
        """Start from silence."""
        self._history: list[int] = []
        self.reset()

    def reset(self) -> None:
        """Forget the history, as if newly created."""
        self._history = [0] * (len(_SIDE) - 1)

    def process(self, pcm16le: bytes) -> bytes:
        """Convert the next piece of 8 kHz PCM; ValueError on an odd number of bytes."""
        history = self._history
        new = _samples(pcm16le)
        count = len(new)
        if not count:
            return b""
        history.extend(new)
        width = len(_SIDE)
        side = _SIDE_X2
        out = [0] * (2 * count)
        out[0::2] = [
            (sum(map(mul, side, history[i : i + width])) + _ROUND) >> _Q for i in range(count)
        ]
        # The odd phase: x[n - 7], where history[i + 15] is x[n] for the i-th new sample.
        delay = (_CENTER - 1) // 2
        out[1::2] = history[width - 1 - delay : width - 1 - delay + count]
        del history[:count]
        return _pcm(out)


def resampler(from_rate: int, to_rate: int) -> Resampler:
    """A fresh converter from ``from_rate`` to ``to_rate`` Hz (each 8000 or 16000).

    Raises ValueError for any other pair: only 1:1 and 2:1 conversions are implemented.
    """
    if from_rate in _RATES and to_rate in _RATES:
        if from_rate == to_rate:
            return Passthrough()
        return Halver() if from_rate > to_rate else Doubler()
    raise ValueError(
        f"cannot resample {from_rate} Hz to {to_rate} Hz: supported rates are "
        f"{' and '.join(str(rate) for rate in _RATES)} Hz (PCM16 mono)"
    )
