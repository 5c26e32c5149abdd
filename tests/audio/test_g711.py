"""G.711 codecs against the reference values and their quantisation bounds."""

from __future__ import annotations

import math
from array import array
from collections.abc import Callable

import pytest
from hypothesis import given
from hypothesis import strategies as st

from callbridge.audio import (
    alaw_decode,
    alaw_encode,
    l16_be_to_le,
    l16_le_to_be,
    ulaw_decode,
    ulaw_encode,
)

__all__: list[str] = []

Codec = Callable[[bytes], bytes]


def pcm(samples: list[int]) -> bytes:
    data = array("h", samples)
    if data.itemsize != 2:
        pytest.skip("platform short is not 16-bit")
    if array("H", [1]).tobytes() != b"\x01\x00":
        data.byteswap()
    return data.tobytes()


def samples_of(data: bytes) -> list[int]:
    return [int.from_bytes(data[i : i + 2], "little", signed=True) for i in range(0, len(data), 2)]


def ulaw_max_error(sample: int) -> float:
    """Half a quantisation step; steps double per segment, so half a step <= biased value / 32."""
    clipped = max(-32635, min(32635, sample))
    return abs(sample - clipped) + (abs(clipped) + 0x84) / 32


def alaw_max_error(sample: int) -> float:
    """Half a step (8 in the two smallest segments, then magnitude / 32), plus <8 for the >>3."""
    return max(16.0, abs(sample) / 32 + 8)


def sine_sweep(n: int = 8000, rate: int = 8000) -> list[int]:
    """A 100 Hz to 3.4 kHz chirp whose amplitude ramps up to full scale, covering all segments."""
    out = []
    for i in range(n):
        t = i / rate
        freq = 100 + (3400 - 100) * i / n
        amplitude = 32767 * (i + 1) / n
        out.append(round(amplitude * math.sin(2 * math.pi * freq * t)))
    return out


@pytest.mark.parametrize(
    ("code", "expected"),
    [(0xFF, 0), (0x7F, 0), (0x00, -32124), (0x80, 32124)],
)
def test_ulaw_reference_values(code: int, expected: int) -> None:
    assert samples_of(ulaw_decode(bytes([code]))) == [expected]


@pytest.mark.parametrize(
    ("code", "expected"),
    [(0xD5, 8), (0x55, -8), (0xAA, 32256), (0x2A, -32256)],
)
def test_alaw_reference_values(code: int, expected: int) -> None:
    assert samples_of(alaw_decode(bytes([code]))) == [expected]


def test_encode_reference_values() -> None:
    assert ulaw_encode(pcm([0, 32767, -32768])) == bytes([0xFF, 0x80, 0x00])
    assert alaw_encode(pcm([0, -1, 32767, -32768])) == bytes([0xD5, 0x55, 0xAA, 0x2A])


def test_every_alaw_code_round_trips() -> None:
    codes = bytes(range(256))
    assert alaw_encode(alaw_decode(codes)) == codes


def test_every_ulaw_code_round_trips_except_negative_zero() -> None:
    codes = bytes(range(256))
    back = ulaw_encode(ulaw_decode(codes))
    mismatches = {code: new for code, new in zip(codes, back, strict=True) if code != new}
    # 0x7F is "negative zero": it decodes to 0 like 0xFF, and 0 encodes as 0xFF.
    assert mismatches == {0x7F: 0xFF}


@pytest.mark.parametrize(
    ("encode", "decode", "bound"),
    [(ulaw_encode, ulaw_decode, ulaw_max_error), (alaw_encode, alaw_decode, alaw_max_error)],
    ids=["ulaw", "alaw"],
)
def test_sine_sweep_round_trip_within_quantisation_error(
    encode: Codec, decode: Codec, bound: Callable[[int], float]
) -> None:
    sweep = sine_sweep()
    encoded = encode(pcm(sweep))
    assert len(encoded) == len(sweep)
    decoded = samples_of(decode(encoded))
    for original, restored in zip(sweep, decoded, strict=True):
        assert abs(original - restored) <= bound(original), (original, restored)


@pytest.mark.parametrize(
    ("encode", "decode", "bound"),
    [(ulaw_encode, ulaw_decode, ulaw_max_error), (alaw_encode, alaw_decode, alaw_max_error)],
    ids=["ulaw", "alaw"],
)
def test_every_16_bit_sample_within_quantisation_error_and_monotonic(
    encode: Codec, decode: Codec, bound: Callable[[int], float]
) -> None:
    everything = list(range(-32768, 32768))
    decoded = samples_of(decode(encode(pcm(everything))))
    for original, restored in zip(everything, decoded, strict=True):
        assert abs(original - restored) <= bound(original), (original, restored)
    assert decoded == sorted(decoded)


@given(st.lists(st.integers(-32768, 32767), max_size=400))
def test_round_trip_property(samples: list[int]) -> None:
    data = pcm(samples)
    for encode, decode, bound in (
        (ulaw_encode, ulaw_decode, ulaw_max_error),
        (alaw_encode, alaw_decode, alaw_max_error),
    ):
        encoded = encode(data)
        assert len(encoded) == len(samples)
        for original, restored in zip(samples, samples_of(decode(encoded)), strict=True):
            assert abs(original - restored) <= bound(original)
    # Re-encoding decoded audio is lossless, except that μ-law's negative zero becomes zero.
    assert alaw_encode(alaw_decode(alaw_encode(data))) == alaw_encode(data)
    assert ulaw_encode(ulaw_decode(ulaw_encode(data))) == ulaw_encode(data).replace(
        b"\x7f", b"\xff"
    )


@given(st.binary(max_size=400))
def test_decoders_accept_any_bytes(data: bytes) -> None:
    assert len(ulaw_decode(data)) == 2 * len(data)
    assert len(alaw_decode(data)) == 2 * len(data)


def test_accepts_bytearray_and_memoryview() -> None:
    data = pcm([1000, -1000])
    assert ulaw_encode(bytearray(data)) == ulaw_encode(memoryview(data)) == ulaw_encode(data)
    assert alaw_decode(memoryview(b"\xd5")) == alaw_decode(b"\xd5")


@pytest.mark.parametrize("encode", [ulaw_encode, alaw_encode], ids=["ulaw", "alaw"])
def test_encoders_reject_odd_length(encode: Codec) -> None:
    with pytest.raises(ValueError, match="even number of bytes"):
        encode(b"\x00\x01\x02")


def test_empty_input() -> None:
    for codec in (ulaw_encode, alaw_encode, ulaw_decode, alaw_decode, l16_be_to_le, l16_le_to_be):
        assert codec(b"") == b""


def test_l16_swaps() -> None:
    assert l16_be_to_le(b"\x12\x34\xab\xcd") == b"\x34\x12\xcd\xab"
    assert l16_le_to_be(b"\x34\x12\xcd\xab") == b"\x12\x34\xab\xcd"
    big_endian_wire = (-2).to_bytes(2, "big", signed=True) + (300).to_bytes(2, "big", signed=True)
    assert samples_of(l16_be_to_le(big_endian_wire)) == [-2, 300]


@given(st.binary(max_size=200).filter(lambda b: len(b) % 2 == 0))
def test_l16_swaps_are_inverse(data: bytes) -> None:
    assert l16_le_to_be(l16_be_to_le(data)) == data


@pytest.mark.parametrize("swap", [l16_be_to_le, l16_le_to_be])
def test_l16_rejects_odd_length(swap: Codec) -> None:
    with pytest.raises(ValueError, match=r"even number of bytes\), got 3 bytes"):
        swap(b"\x00\x01\x02")
