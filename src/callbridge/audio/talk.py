"""Talk-back: browser microphone PCM to 20 ms carrier codec frames for Telnyx media streaming.

With bidirectional media streaming, audio sent into the call must be raw codec bytes (no RTP
header) in chunks of at least 20 ms (and at most 30 s). A browser, though, delivers signed
16-bit little-endian PCM at its own rate (8 or 16 kHz here) in whatever piece sizes its audio
worklet produces. ``TalkEncoder`` bridges the two: it resamples to the codec rate, buffers, and
hands back exactly-20 ms frames, so every chunk we send meets the minimum and frames stay small
enough to keep latency low. The caller base64-encodes each frame into a media message.

Frame sizes: PCMU and PCMA at 8 kHz are 160 bytes, L16 at 16 kHz is 640 bytes and L16 at 8 kHz
is 320 bytes; L16 goes out big-endian (network order). When the browser already sends 8 kHz and
the codec is G.711, no resampler is in the path, so the frames are bit-exact G.711 of the input.
Otherwise the resampler's group delay (under 1 ms, see ``resample``) applies.
"""

from __future__ import annotations

from collections.abc import Callable

from callbridge.audio.g711 import alaw_encode, l16_le_to_be, ulaw_encode
from callbridge.audio.resample import Resampler, resampler

__all__ = ["TalkEncoder"]

_FRAME_MS = 20
# Codec name -> the rates it may run at; the first one is the default.
_CODEC_RATES: dict[str, tuple[int, ...]] = {
    "PCMU": (8000,),
    "PCMA": (8000,),
    "L16": (16000, 8000),
}
_ENCODERS: dict[str, Callable[[bytes], bytes]] = {
    "PCMU": ulaw_encode,
    "PCMA": alaw_encode,
    "L16": l16_le_to_be,
}
_BYTES_PER_SAMPLE = {"PCMU": 1, "PCMA": 1, "L16": 2}
_INPUT_RATES = (8000, 16000)
_SUPPORTED = "PCMU (8000 Hz), PCMA (8000 Hz), L16 (8000 or 16000 Hz, default 16000)"


class TalkEncoder:
    """Turn a browser's PCM16 LE talk spurts into 20 ms frames of the call's codec.

    Typical use: ``start(16000)`` when the user presses talk, ``feed`` every chunk the
    browser sends and forward the returned frames, ``flush`` when talk is released, or
    ``clear`` to abandon whatever has not been sent yet (e.g. when the call is hung up).
    """

    def __init__(self, codec: str, codec_rate: int | None = None) -> None:
        """Encode to ``codec`` (PCMU, PCMA or L16, any case) at ``codec_rate`` Hz.

        ``codec_rate`` defaults to 8000 for PCMU/PCMA and 16000 for L16. Raises ValueError for
        any other codec or rate.
        """
        name = codec.upper()
        rates = _CODEC_RATES.get(name)
        if rates is None:
            raise ValueError(f"unsupported talk-back codec {codec!r}: supported are {_SUPPORTED}")
        rate = rates[0] if codec_rate is None else codec_rate
        if rate not in rates:
            raise ValueError(
                f"unsupported rate {codec_rate!r} Hz for {name}: supported are {_SUPPORTED}"
            )
        self._codec = name
        self._codec_rate = rate
        self._encode = _ENCODERS[name]
        self._frame_samples = rate * _FRAME_MS // 1000
        self._frame_bytes = self._frame_samples * _BYTES_PER_SAMPLE[name]
        self._frame_pcm_bytes = self._frame_samples * 2  # PCM16 at the codec rate
        self._buffer = bytearray()  # PCM16 LE at the codec rate, always < one frame between calls
        self._resampler: Resampler | None = None

    @property
    def codec(self) -> str:
        """The codec name, upper-case: "PCMU", "PCMA" or "L16"."""
        return self._codec

    @property
    def codec_rate(self) -> int:
        """The codec's sample rate in Hz."""
        return self._codec_rate

    @property
    def frame_bytes(self) -> int:
        """Size of every encoded frame in bytes (20 ms of codec audio)."""
        return self._frame_bytes

    @property
    def frame_samples(self) -> int:
        """Samples per frame at the codec rate (160 at 8 kHz, 320 at 16 kHz)."""
        return self._frame_samples

    def start(self, input_rate: int) -> None:
        """Begin a talk spurt from a browser sending PCM16 LE at ``input_rate`` Hz.

        Drops anything buffered from an earlier spurt and starts the resampler from silence.
        Raises ValueError unless ``input_rate`` is 8000 or 16000.
        """
        if input_rate not in _INPUT_RATES:
            raise ValueError(
                f"unsupported browser input rate {input_rate!r} Hz: supported are "
                f"{' and '.join(str(r) for r in _INPUT_RATES)} Hz"
            )
        self._resampler = resampler(input_rate, self._codec_rate)
        self._buffer.clear()

    def feed(self, pcm16le: bytes) -> list[bytes]:
        """Add browser PCM16 LE and return every complete 20 ms frame, encoded, in order.

        Raises ValueError on an odd number of bytes (nothing is buffered then), and
        RuntimeError if ``start`` has not been called.
        """
        if self._resampler is None:
            raise RuntimeError("TalkEncoder.start(input_rate) must be called before feed()")
        self._buffer += self._resampler.process(pcm16le)
        return self._take_frames()

    def flush(self) -> list[bytes]:
        """Return the buffered remainder padded with silence to one full frame ([] if empty).

        Audio still inside the resampler's filter (its group delay, under 1 ms) is not
        included; ``start`` discards it.
        """
        if not self._buffer:
            return []
        self._buffer += bytes(self._frame_pcm_bytes - len(self._buffer))
        return self._take_frames()

    def clear(self) -> None:
        """Drop buffered audio without sending it, including the resampler's history."""
        self._buffer.clear()
        if self._resampler is not None:
            self._resampler.reset()

    def _take_frames(self) -> list[bytes]:
        size = self._frame_pcm_bytes
        count = len(self._buffer) // size
        frames = [
            self._encode(bytes(self._buffer[i * size : (i + 1) * size])) for i in range(count)
        ]
        del self._buffer[: count * size]
        return frames
