"""Call scenarios the simulator plays, chosen by the dialled number (or `sip:<name>@sim`).

Every duration is in simulated seconds; the simulator's `pace` scales them (0.05 in tests).
"""

from __future__ import annotations

import dataclasses

__all__ = ["SCENARIOS", "Scenario", "scenario_for"]


@dataclasses.dataclass(frozen=True, slots=True)
class Scenario:
    name: str
    number: str
    description: str
    answer: bool = True
    ring_seconds: float = 1.0
    talk_seconds: float = 60.0  # until the far end hangs up
    hangup_cause: str = "normal_clearing"
    hangup_source: str = "callee"
    codec: str = "PCMU"
    stream_fails: bool = False
    dtmf: str = ""
    duplicate_webhooks: bool = False
    shuffle_webhooks: bool = False
    drop_media_socket: bool = False
    media: bool = True  # False: open no media socket; something else plays Telnyx's media side


SCENARIOS: dict[str, Scenario] = {
    s.name: s
    for s in (
        Scenario("answered", "+15550100001", "Answered; the far end hangs up after 60 s."),
        Scenario(
            "busy",
            "+15550100002",
            "The far end is busy.",
            answer=False,
            ring_seconds=0.5,
            hangup_cause="user_busy",
        ),
        Scenario(
            "no-answer",
            "+15550100003",
            "Rings until timeout_secs (default 30 s).",
            answer=False,
            ring_seconds=30.0,
            hangup_cause="timeout",
        ),
        Scenario(
            "far-end-hangs-up",
            "+15550100004",
            "Answered; the far end hangs up after 5 s.",
            talk_seconds=5.0,
        ),
        Scenario(
            "streaming-failed",
            "+15550100005",
            "Answered, but the media stream cannot start.",
            stream_fails=True,
        ),
        Scenario("pcma", "+15550100006", "Answered; media arrives as PCMA.", codec="PCMA"),
        Scenario("l16", "+15550100007", "Answered; media arrives as L16.", codec="L16"),
        Scenario(
            "duplicates",
            "+15550100008",
            "Every webhook is sent twice, out of order.",
            talk_seconds=5.0,
            duplicate_webhooks=True,
            shuffle_webhooks=True,
        ),
        Scenario(
            "media-drop",
            "+15550100009",
            "The media socket drops without a stop frame.",
            drop_media_socket=True,
        ),
        Scenario("dtmf", "+15550100010", "Answered; the far end presses 1 2 3 4 #.", dtmf="1234#"),
        Scenario("long", "+15550100011", "Answered; lasts an hour.", talk_seconds=3600.0),
        Scenario(
            "no-media",
            "+15550100012",
            "Answered and lasts an hour, but the simulator opens no media socket: a test or a "
            "load generator plays Telnyx's media side with the stream token from /_sim/calls.",
            talk_seconds=3600.0,
            media=False,
        ),
    )
}

_BY_NUMBER = {s.number: s for s in SCENARIOS.values()}


def scenario_for(to: str, timeout_secs: int | None = None) -> Scenario:
    """The scenario for a dialled destination; anything unknown is a normal answered call."""
    scenario = _BY_NUMBER.get(to)
    if scenario is None and to.startswith("sip:"):
        scenario = SCENARIOS.get(to.removeprefix("sip:").split("@", 1)[0])
    scenario = scenario or SCENARIOS["answered"]
    if scenario.name == "no-answer" and timeout_secs:
        scenario = dataclasses.replace(scenario, ring_seconds=float(timeout_secs))
    return scenario
