"""Test signals and measurements for audio: PCM packing, tones, sweeps, amplitude and noise."""

from __future__ import annotations

import math
import sys
from array import array

__all__ = [
    "amplitude_at",
    "chunks",
    "pcm",
    "residual_rms",
    "rms",
    "samples_of",
    "snr_db",
    "sweep",
    "tone",
    "tone_samples",
]


def pcm(samples: list[int]) -> bytes:
    """Signed 16-bit little-endian PCM of these samples."""
    data = array("h", samples)
    if sys.byteorder != "little":
        data.byteswap()
    return data.tobytes()


def samples_of(data: bytes) -> list[int]:
    return [int.from_bytes(data[i : i + 2], "little", signed=True) for i in range(0, len(data), 2)]


def tone_samples(freq: float, rate: int, n: int, amplitude: float = 10000.0) -> list[int]:
    return [round(amplitude * math.sin(2 * math.pi * freq * i / rate)) for i in range(n)]


def tone(seconds: float, freq: float, rate: int = 8000, amplitude: float = 8000.0) -> bytes:
    return pcm(tone_samples(freq, rate, int(seconds * rate), amplitude))


def sweep(
    seconds: float, rate: int = 8000, start_hz: float = 200.0, end_hz: float = 3400.0
) -> bytes:
    """A linear sine sweep as PCM: every sample differs, as in speech."""
    count = int(seconds * rate)
    samples: list[int] = []
    phase = 0.0
    for index in range(count):
        phase += 2 * math.pi * (start_hz + (end_hz - start_hz) * index / count) / rate
        samples.append(int(12000 * math.sin(phase)))
    return pcm(samples)


def chunks(data: bytes, size: int) -> list[bytes]:
    return [data[i : i + size] for i in range(0, len(data), size)]


def amplitude_at(samples: list[int], freq: float, rate: int) -> float:
    """Amplitude of the freq component, by correlation with sin and cos.

    Exact for a sinusoid when the window holds a whole number of its cycles (callers make sure).
    """
    n = len(samples)
    w = 2 * math.pi * freq / rate
    s = math.fsum(x * math.sin(w * i) for i, x in enumerate(samples))
    c = math.fsum(x * math.cos(w * i) for i, x in enumerate(samples))
    return 2 * math.hypot(s, c) / n


def residual_rms(samples: list[int], freq: float, rate: int) -> float:
    """RMS of what is left after subtracting the best-fit sinusoid at freq."""
    n = len(samples)
    w = 2 * math.pi * freq / rate
    a = 2 * math.fsum(x * math.sin(w * i) for i, x in enumerate(samples)) / n
    b = 2 * math.fsum(x * math.cos(w * i) for i, x in enumerate(samples)) / n
    rest = [x - a * math.sin(w * i) - b * math.cos(w * i) for i, x in enumerate(samples)]
    return rms(rest)


def rms(samples: list[int] | list[float]) -> float:
    return math.sqrt(math.fsum(x * x for x in samples) / len(samples))


def snr_db(reference: list[int], decoded: list[int]) -> float:
    signal = sum(x * x for x in reference)
    noise = sum((x - y) ** 2 for x, y in zip(reference, decoded, strict=True)) or 1
    return 10 * math.log10(signal / noise)
