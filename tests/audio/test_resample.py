"""2:1 resamplers: frequency response, exact streaming, lengths, clipping and the factory."""

from __future__ import annotations

import math
from itertools import pairwise

import pytest
from hypothesis import given
from hypothesis import strategies as st

from callbridge.audio.resample import Doubler, Halver, Passthrough, Resampler, resampler
from tests.signals import amplitude_at, pcm, residual_rms, rms, samples_of, tone_samples

__all__: list[str] = []

DELAY_16K = 15  # the halfband filter's group delay, in 16 kHz samples


def db(ratio: float) -> float:
    return 20 * math.log10(ratio)


def steady(samples: list[int], skip: int, length: int) -> list[int]:
    """A window of the output after the filter's onset transient."""
    window = samples[skip : skip + length]
    assert len(window) == length
    return window


# --- frequency response -------------------------------------------------------------------


def test_halver_keeps_a_1khz_tone() -> None:
    out = samples_of(Halver().process(pcm(tone_samples(1000, 16000, 3200))))
    window = steady(out, 40, 1200)  # 150 whole cycles of 1 kHz at 8 kHz
    amplitude = amplitude_at(window, 1000, 8000)
    assert abs(db(amplitude / 10000)) < 0.5
    # Everything in the output is that 1 kHz tone: nothing moved to another frequency.
    assert residual_rms(window, 1000, 8000) < 10000 * 0.005


def test_halver_rejects_6khz_instead_of_aliasing_it_to_2khz() -> None:
    out = samples_of(Halver().process(pcm(tone_samples(6000, 16000, 3200))))
    window = steady(out, 40, 1200)
    assert db(rms(window) / (10000 / math.sqrt(2))) <= -30
    assert db(amplitude_at(window, 2000, 8000) / 10000) <= -30


def test_halver_passes_3khz_but_not_5khz() -> None:
    near = samples_of(Halver().process(pcm(tone_samples(3000, 16000, 3200))))
    far = samples_of(Halver().process(pcm(tone_samples(5000, 16000, 3200))))
    assert abs(db(amplitude_at(steady(near, 40, 1200), 3000, 8000) / 10000)) < 0.5
    assert db(rms(steady(far, 40, 1200)) / (10000 / math.sqrt(2))) <= -30


def test_doubler_keeps_a_1khz_tone_and_suppresses_its_7khz_image() -> None:
    out = samples_of(Doubler().process(pcm(tone_samples(1000, 8000, 1600))))
    window = steady(out, 80, 2400)  # 150 whole cycles of 1 kHz and 1050 of 7 kHz at 16 kHz
    assert abs(db(amplitude_at(window, 1000, 16000) / 10000)) < 0.5
    assert db(amplitude_at(window, 7000, 16000) / 10000) <= -30
    assert residual_rms(window, 1000, 16000) < 10000 * 0.005


def test_naive_doubling_would_fail_the_image_check() -> None:
    """The 7 kHz check is sensitive: repeating each sample leaves the image at about -17 dB."""
    held = [x for x in tone_samples(1000, 8000, 1600) for _ in range(2)]
    window = steady(held, 80, 2400)
    assert db(amplitude_at(window, 7000, 16000) / 10000) > -30


@pytest.mark.parametrize("make", [Halver, Doubler])
def test_unity_gain_at_dc_is_exact(make: type[Halver] | type[Doubler]) -> None:
    out = samples_of(make().process(pcm([12345] * 200)))
    assert out[40:] == [12345] * (len(out) - 40)


def test_doubler_odd_phase_is_the_input_delayed_by_seven_samples() -> None:
    data = tone_samples(700, 8000, 300)
    out = samples_of(Doubler().process(pcm(data)))
    assert out[1::2] == [0] * 7 + data[:-7]


def test_impulse_response_is_symmetric_around_the_group_delay() -> None:
    doubled = samples_of(Doubler().process(pcm([16384] + [0] * 40)))
    response = doubled[: 2 * DELAY_16K + 1]
    assert response == response[::-1]
    assert max(range(len(doubled)), key=lambda i: doubled[i]) == DELAY_16K
    assert doubled[DELAY_16K] == 16384  # the centre tap is exactly 0.5, times 2
    assert all(x == 0 for x in doubled[2 * DELAY_16K + 1 :])

    halved = samples_of(Halver().process(pcm([0] * 100 + [16384] + [0] * 100)))
    # Input sample 100 comes out 15 input samples later, at output sample (100 + 15) / 2.
    peak = max(range(len(halved)), key=lambda i: abs(halved[i]))
    assert abs(2 * peak - (100 + DELAY_16K)) == 1
    assert halved[57] == halved[58]  # the half-sample delay lands between two outputs


# --- streaming, lengths, clipping ---------------------------------------------------------


def in_pieces(converter: Resampler, data: bytes, cuts: list[int]) -> bytes:
    bounds = [0, *sorted(2 * c for c in cuts), len(data)]
    return b"".join(converter.process(data[a:b]) for a, b in pairwise(bounds))


samples_strategy = st.lists(st.integers(-32768, 32767), max_size=120)


@given(data=st.data(), samples=samples_strategy)
def test_halver_split_anywhere_equals_one_shot(data: st.DataObject, samples: list[int]) -> None:
    cuts = data.draw(st.lists(st.integers(0, len(samples)), max_size=8))
    raw = pcm(samples)
    assert in_pieces(Halver(), raw, cuts) == Halver().process(raw)


@given(data=st.data(), samples=samples_strategy)
def test_doubler_split_anywhere_equals_one_shot(data: st.DataObject, samples: list[int]) -> None:
    cuts = data.draw(st.lists(st.integers(0, len(samples)), max_size=8))
    raw = pcm(samples)
    assert in_pieces(Doubler(), raw, cuts) == Doubler().process(raw)


def test_streaming_tone_in_odd_pieces_matches_one_shot() -> None:
    raw = pcm(tone_samples(1234, 16000, 1000, amplitude=30000))
    cuts = list(range(0, 1000, 37)) + list(range(0, 1000, 101))
    assert in_pieces(Halver(), raw, cuts) == Halver().process(raw)
    assert in_pieces(Doubler(), raw, cuts) == Doubler().process(raw)


@given(sizes=st.lists(st.integers(0, 41), max_size=12))
def test_output_lengths_are_exact(sizes: list[int]) -> None:
    halver, doubler = Halver(), Doubler()
    total = halved = doubled = 0
    for size in sizes:
        chunk = pcm(tone_samples(500, 16000, size))
        total += size
        halved += len(halver.process(chunk)) // 2
        doubled += len(doubler.process(chunk))
        assert halved == (total + 1) // 2  # one output per even-indexed input sample
        assert doubled == 4 * total  # two samples of two bytes per input sample


def test_one_frame_lengths() -> None:
    assert len(Halver().process(bytes(640))) == 320
    assert len(Doubler().process(bytes(320))) == 640


def test_empty_input_gives_empty_output_and_keeps_state() -> None:
    raw = pcm(tone_samples(900, 16000, 99))
    for make in (Halver, Doubler):
        plain, with_empties = make(), make()
        expected = plain.process(raw[:50]) + plain.process(raw[50:])
        got = with_empties.process(b"") + with_empties.process(raw[:50])
        got += with_empties.process(b"") + with_empties.process(raw[50:])
        assert got == expected


def test_reset_forgets_history_and_phase() -> None:
    raw = pcm(tone_samples(800, 16000, 200))
    for make in (Halver, Doubler):
        used = make()
        used.process(pcm([30000] * 33))  # odd count: leaves the Halver in the other phase
        used.reset()
        assert used.process(raw) == make().process(raw)


@pytest.mark.parametrize(("make", "period"), [(Halver, 16), (Doubler, 8)])
def test_full_scale_overshoot_clips_instead_of_wrapping(
    make: type[Halver] | type[Doubler], period: int
) -> None:
    """A full-scale square wave rings above full scale once band-limited: it must clip."""
    square = [32767 if (i // (period // 2)) % 2 == 0 else -32768 for i in range(20 * period)]
    loud = samples_of(make().process(pcm(square)))
    half = samples_of(make().process(pcm([x // 2 for x in square])))
    assert max(loud) == 32767
    assert min(loud) == -32768
    assert max(abs(x) for x in half) > 16384  # so the full-scale version really overshoots
    # The filter is linear: full scale is twice half scale, up to rounding, then clipped.
    for full, halfscale in zip(loud, half, strict=True):
        assert abs(full - max(-32768, min(32767, 2 * halfscale))) <= 2


# --- errors and the factory ---------------------------------------------------------------


@pytest.mark.parametrize("make", [Halver, Doubler, Passthrough])
def test_odd_byte_count_is_rejected_without_changing_state(
    make: type[Halver] | type[Doubler] | type[Passthrough],
) -> None:
    raw = pcm(tone_samples(1000, 16000, 64))
    converter: Resampler = make()
    first = converter.process(raw[:30])
    with pytest.raises(ValueError, match="even number of bytes"):
        converter.process(raw[30:33])
    assert first + converter.process(raw[30:]) == make().process(raw)


def test_passthrough_returns_its_input() -> None:
    raw = pcm(tone_samples(1000, 8000, 77))
    passthrough = Passthrough()
    assert passthrough.process(raw) == raw
    assert passthrough.process(b"") == b""
    passthrough.reset()
    assert passthrough.process(raw) == raw


@pytest.mark.parametrize(
    ("from_rate", "to_rate", "kind"),
    [
        (8000, 8000, Passthrough),
        (16000, 16000, Passthrough),
        (16000, 8000, Halver),
        (8000, 16000, Doubler),
    ],
)
def test_factory_picks_the_converter(from_rate: int, to_rate: int, kind: type) -> None:
    assert type(resampler(from_rate, to_rate)) is kind


def test_factory_returns_independent_converters() -> None:
    first, second = resampler(16000, 8000), resampler(16000, 8000)
    first.process(pcm([20000] * 31))
    raw = pcm(tone_samples(1000, 16000, 100))
    assert second.process(raw) == Halver().process(raw)


@pytest.mark.parametrize(
    ("from_rate", "to_rate"),
    [(48000, 8000), (44100, 16000), (16000, 24000), (8000, 32000), (0, 8000), (16000, -16000)],
)
def test_factory_rejects_other_rates(from_rate: int, to_rate: int) -> None:
    with pytest.raises(ValueError, match=r"supported rates are 8000 and 16000 Hz") as info:
        resampler(from_rate, to_rate)
    assert f"{from_rate} Hz to {to_rate} Hz" in str(info.value)
