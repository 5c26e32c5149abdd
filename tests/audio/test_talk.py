"""TalkEncoder: browser PCM16 LE to exact 20 ms frames of PCMU, PCMA or big-endian L16."""

from __future__ import annotations

from collections.abc import Callable
from itertools import pairwise

import pytest
from hypothesis import given
from hypothesis import strategies as st

from callbridge.audio import alaw_decode, alaw_encode, l16_le_to_be, ulaw_decode, ulaw_encode
from callbridge.audio.resample import Doubler, Halver
from callbridge.audio.talk import TalkEncoder
from tests.signals import pcm, samples_of, tone_samples

__all__: list[str] = []

Codec = Callable[[bytes], bytes]


def feed_in_chunks(encoder: TalkEncoder, data: bytes, chunk: int) -> list[bytes]:
    frames: list[bytes] = []
    for start in range(0, len(data), chunk):
        frames.extend(encoder.feed(data[start : start + chunk]))
    return frames


@pytest.mark.parametrize(
    ("codec", "codec_rate", "input_rate", "frame_bytes", "frame_samples"),
    [
        ("PCMU", None, 8000, 160, 160),
        ("PCMU", 8000, 16000, 160, 160),
        ("PCMA", None, 8000, 160, 160),
        ("PCMA", None, 16000, 160, 160),
        ("L16", None, 16000, 640, 320),
        ("L16", 16000, 8000, 640, 320),
        ("L16", 8000, 8000, 320, 160),
        ("L16", 8000, 16000, 320, 160),
    ],
)
def test_every_frame_is_exactly_20_ms(
    codec: str, codec_rate: int | None, input_rate: int, frame_bytes: int, frame_samples: int
) -> None:
    encoder = TalkEncoder(codec, codec_rate)
    assert encoder.frame_bytes == frame_bytes
    assert encoder.frame_samples == frame_samples
    assert encoder.codec_rate == frame_samples * 50
    encoder.start(input_rate)
    # One second in awkward, odd-sample chunks (434 bytes = 217 samples).
    frames = feed_in_chunks(encoder, pcm(tone_samples(440.0, input_rate, input_rate, 12000)), 434)
    assert len(frames) == 50
    assert {len(frame) for frame in frames} == {frame_bytes}
    assert encoder.flush() == []  # one second is a whole number of frames at any rate


def test_codec_name_is_case_insensitive_and_rates_default() -> None:
    assert TalkEncoder("pcmu").codec == "PCMU"
    assert TalkEncoder("Pcma").codec_rate == 8000
    l16 = TalkEncoder("l16")
    assert (l16.codec, l16.codec_rate) == ("L16", 16000)


@pytest.mark.parametrize(("codec", "encode"), [("PCMU", ulaw_encode), ("PCMA", alaw_encode)])
def test_g711_from_8khz_is_bit_exact(codec: str, encode: Codec) -> None:
    data = pcm(tone_samples(1234.5, 8000, 8000 + 37, 32767))
    encoder = TalkEncoder(codec)
    encoder.start(8000)
    frames = feed_in_chunks(encoder, data, 202)
    assert len(frames) == 50
    assert b"".join(frames) == encode(data[: 50 * 320])
    (last,) = encoder.flush()
    assert last[:37] == encode(data[50 * 320 :])


@given(
    samples=st.lists(st.integers(-32768, 32767), max_size=700),
    chunk=st.integers(1, 400),
    codec=st.sampled_from(["PCMU", "PCMA"]),
)
def test_g711_bit_exact_for_any_chunking(samples: list[int], chunk: int, codec: str) -> None:
    data = pcm(samples)
    encoder = TalkEncoder(codec)
    encoder.start(8000)
    frames = feed_in_chunks(encoder, data, 2 * chunk) + encoder.flush()
    encode = ulaw_encode if codec == "PCMU" else alaw_encode
    padded = data + bytes(-len(data) % 320)
    assert b"".join(frames) == encode(padded)


@given(
    data=st.data(),
    samples=st.lists(st.integers(-32768, 32767), max_size=900),
    setup=st.sampled_from([("PCMU", None, 16000), ("L16", None, 8000), ("L16", 8000, 16000)]),
)
def test_resampled_frames_do_not_depend_on_chunking(
    data: st.DataObject, samples: list[int], setup: tuple[str, int | None, int]
) -> None:
    codec, codec_rate, input_rate = setup
    raw = pcm(samples)
    cuts = sorted(data.draw(st.lists(st.integers(0, len(samples)), max_size=10)))
    bounds = [0, *(2 * cut for cut in cuts), len(raw)]  # repeated cuts feed empty chunks
    one_shot = TalkEncoder(codec, codec_rate)
    one_shot.start(input_rate)
    expected = one_shot.feed(raw) + one_shot.flush()
    pieces = TalkEncoder(codec, codec_rate)
    pieces.start(input_rate)
    got: list[bytes] = []
    for start, end in pairwise(bounds):
        got += pieces.feed(raw[start:end])
    assert got + pieces.flush() == expected


def test_resampling_paths_match_the_resamplers() -> None:
    data = pcm(tone_samples(440.0, 16000, 3200, 12000))
    encoder = TalkEncoder("PCMU")
    encoder.start(16000)
    assert b"".join(encoder.feed(data)) == ulaw_encode(Halver().process(data))

    narrow = pcm(tone_samples(440.0, 8000, 1600, 12000))
    l16 = TalkEncoder("L16")
    l16.start(8000)
    assert b"".join(l16.feed(narrow)) == l16_le_to_be(Doubler().process(narrow))


def test_l16_is_big_endian_on_the_wire() -> None:
    encoder = TalkEncoder("L16")
    encoder.start(16000)
    (frame,) = encoder.feed(pcm([0x1234, -2] * 160))
    assert frame == b"\x12\x34\xff\xfe" * 160


@pytest.mark.parametrize(
    ("codec", "decode"),
    [("PCMU", ulaw_decode), ("PCMA", alaw_decode), ("L16", None)],
)
def test_flush_pads_the_remainder_with_silence(codec: str, decode: Codec | None) -> None:
    rate = 16000 if codec == "L16" else 8000
    encoder = TalkEncoder(codec)
    encoder.start(rate)
    data = pcm([20000, -20000] * 50)  # 100 loud samples, well under one frame
    assert encoder.feed(data) == []
    (frame,) = encoder.flush()
    assert len(frame) == encoder.frame_bytes
    if decode is None:
        assert frame[:200] == l16_le_to_be(data)
        assert frame[200:] == bytes(encoder.frame_bytes - 200)
    else:
        decoded = samples_of(decode(frame))
        assert [abs(x) > 15000 for x in decoded[:100]] == [True] * 100
        assert all(abs(x) <= 8 for x in decoded[100:])  # G.711 silence: 0 (PCMU) or ±8 (PCMA)
    assert encoder.flush() == []


def test_flush_with_nothing_buffered_sends_nothing() -> None:
    encoder = TalkEncoder("PCMU")
    assert encoder.flush() == []
    encoder.start(8000)
    assert encoder.flush() == []
    assert len(encoder.feed(bytes(320))) == 1
    assert encoder.flush() == []


def test_flush_of_resampled_audio_pads_to_one_frame() -> None:
    data = pcm(tone_samples(440.0, 16000, 401, 12000))
    halved = Halver().process(data)  # ceil(401 / 2) = 201 samples: one frame and 41 more
    encoder = TalkEncoder("PCMA")
    encoder.start(16000)
    assert encoder.feed(data) == [alaw_encode(halved[:320])]
    (last,) = encoder.flush()
    assert last == alaw_encode(halved[320:] + bytes(2 * 119))


def test_clear_drops_buffered_audio() -> None:
    encoder = TalkEncoder("PCMU")
    encoder.start(8000)
    assert encoder.feed(pcm([9000] * 100)) == []
    encoder.clear()
    assert encoder.flush() == []
    fresh = pcm(tone_samples(440.0, 8000, 160, 12000))
    assert encoder.feed(fresh) == [ulaw_encode(fresh)]


def test_clear_also_drops_the_resampler_history() -> None:
    loud = pcm([30000] * 99)
    data = pcm(tone_samples(440.0, 16000, 320, 12000))
    encoder = TalkEncoder("PCMU")
    encoder.start(16000)
    encoder.feed(loud)
    encoder.clear()
    assert encoder.feed(data) == [ulaw_encode(Halver().process(data))]


def test_start_begins_a_new_spurt() -> None:
    encoder = TalkEncoder("L16", 8000)
    encoder.start(16000)
    assert encoder.feed(pcm([5000] * 301)) == []
    encoder.start(8000)  # the browser switched rate: old audio is gone, no resampling now
    assert encoder.flush() == []
    data = pcm(tone_samples(440.0, 8000, 160, 12000))
    assert encoder.feed(data) == [l16_le_to_be(data)]


@pytest.mark.parametrize(
    ("codec", "codec_rate", "message"),
    [
        ("G722", None, "unsupported talk-back codec 'G722'"),
        ("opus", 48000, "unsupported talk-back codec 'opus'"),
        ("", None, "unsupported talk-back codec ''"),
        ("PCMU", 16000, "unsupported rate 16000 Hz for PCMU"),
        ("PCMA", 16000, "unsupported rate 16000 Hz for PCMA"),
        ("L16", 44100, "unsupported rate 44100 Hz for L16"),
        ("L16", 0, "unsupported rate 0 Hz for L16"),
    ],
)
def test_unsupported_codec_or_rate(codec: str, codec_rate: int | None, message: str) -> None:
    with pytest.raises(ValueError, match=message) as info:
        TalkEncoder(codec, codec_rate)
    assert "PCMU (8000 Hz), PCMA (8000 Hz), L16 (8000 or 16000 Hz" in str(info.value)


@pytest.mark.parametrize("rate", [0, 11025, 24000, 44100, 48000])
def test_unsupported_input_rate(rate: int) -> None:
    encoder = TalkEncoder("PCMU")
    with pytest.raises(ValueError, match=rf"input rate {rate} Hz: supported are 8000 and 16000"):
        encoder.start(rate)


@pytest.mark.parametrize("input_rate", [8000, 16000])
def test_odd_byte_count_is_rejected_and_nothing_is_buffered(input_rate: int) -> None:
    encoder = TalkEncoder("PCMU")
    encoder.start(input_rate)
    with pytest.raises(ValueError, match="even number of bytes"):
        encoder.feed(b"\x01\x02\x03")
    assert encoder.flush() == []


def test_feed_before_start_is_an_error() -> None:
    with pytest.raises(RuntimeError, match=r"start\(input_rate\)"):
        TalkEncoder("PCMU").feed(bytes(320))
