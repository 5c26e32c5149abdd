"""The carrier side of the relay in isolation: CPU per frame of callbridge's handler against the
bare relays' per-message work, on the same recorded Telnyx `media` messages.

    .venv/bin/python -m bench.hot_path --frames 100000 --repeat 5

No sockets: what is measured is the Python work per frame (parse, check, reorder, pack) that the
whole-server figures in docs/benchmarks.md cannot separate from the kernel's. callbridge's
`CarrierStream._on_text` publishes into a hub that only counts; the baseline is what
bench/relays/ do per message (`orjson.loads` then `frame_of`). Best of `--repeat` passes.
"""

from __future__ import annotations

import argparse
import base64
import time
import types
from typing import Any

import orjson
from bench.relays.common import frame_of

from callbridge.audio.reorder import ReorderBuffer
from callbridge.config import Settings
from callbridge.ws.audio_stream import CarrierStream


class _CountingHub:
    """Stands in for the hub: the fan-out to sockets is measured by bench/relay.py."""

    def __init__(self) -> None:
        self.published = 0

    def publish_audio(self, call_control_id: str, item: Any) -> None:
        self.published += 1


class _NoSocket:
    headers: dict[str, str] = {}  # noqa: RUF012 - a stand-in, never mutated
    query_params: dict[str, str] = {}  # noqa: RUF012


def _messages(count: int) -> list[bytes]:
    payload = base64.b64encode(bytes(range(96, 256))).decode()  # 160 bytes, 20 ms of PCMU
    return [
        orjson.dumps(
            {
                "event": "media",
                "sequence_number": str(index + 1),
                "stream_id": "bench-stream",
                "media": {
                    "track": "inbound",
                    "chunk": str(index),
                    "timestamp": str(1_000_000 + 20_000 * index),
                    "payload": payload,
                },
            }
        )
        for index in range(count)
    ]


def _callbridge(messages: list[bytes]) -> float:
    hub = _CountingHub()
    runtime = types.SimpleNamespace(settings=Settings(), hub=hub)
    stream = CarrierStream(_NoSocket(), runtime)  # type: ignore[arg-type]
    stream.call_id, stream.stream_id = "bench-call", "bench-stream"
    stream.reorder = ReorderBuffer(stream.settings.media_reorder_window, first_seq=1)
    handle = stream._on_text
    began = time.perf_counter()
    for message in messages:
        handle(memoryview(message))
    elapsed = time.perf_counter() - began
    assert hub.published == len(messages), "every in-order frame is published"
    return elapsed


def _bare(messages: list[bytes]) -> float:
    began = time.perf_counter()
    for message in messages:
        frame_of(orjson.loads(message))
    return time.perf_counter() - began


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--frames", type=int, default=100_000)
    parser.add_argument("--repeat", type=int, default=5)
    args = parser.parse_args()
    messages = _messages(args.frames)
    for name, measure in (("callbridge _on_text", _callbridge), ("bare relay", _bare)):
        best = min(measure(messages) for _ in range(args.repeat))
        print(f"{name}: {best / len(messages) * 1e6:.2f} µs per frame")


if __name__ == "__main__":
    main()
