"""The far party's voice: a short speech sample, shipped with the simulator.

`assets/speech.wav` is 8 kHz mono 16-bit speech made with espeak-ng (see `assets/README.md`).
Speech rather than a tone, so that a listener hears what a call sounds like, and so that tests
which compare what was sent with what arrived compare something that varies like speech does.
"""

from __future__ import annotations

import functools
import wave
from importlib import resources

from callbridge.audio.resample import Doubler

__all__ = ["SPEECH_RATE", "speech_pcm"]

SPEECH_RATE = 8000


@functools.cache
def speech_pcm(rate: int = SPEECH_RATE) -> bytes:
    """The sample as 16-bit little-endian PCM at `rate` (8000, or 16000 by 2x resampling)."""
    with (
        resources.files("callbridge.sim").joinpath("assets/speech.wav").open("rb") as raw,
        wave.open(raw, "rb") as wav,
    ):
        if (wav.getnchannels(), wav.getsampwidth(), wav.getframerate()) != (1, 2, SPEECH_RATE):
            raise ValueError("assets/speech.wav must be 8 kHz mono 16-bit PCM")
        pcm = wav.readframes(wav.getnframes())
    if rate == SPEECH_RATE:
        return pcm
    if rate == 2 * SPEECH_RATE:
        return Doubler().process(pcm)
    raise ValueError(f"speech is available at 8000 or 16000 Hz, not {rate}")
