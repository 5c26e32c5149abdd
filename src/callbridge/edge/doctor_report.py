"""The doctor's verdicts: one `Check` per step, rendered as a Rich table or as JSON.

Kept apart from the probes so every probe module can produce checks without importing the
orchestrator (and so the JSON shape lives in one place).
"""

from __future__ import annotations

import dataclasses
import enum
from typing import Any

from rich.console import Console
from rich.table import Table
from rich.text import Text

__all__ = ["Check", "Report", "Status", "render_table"]


class Status(enum.StrEnum):
    PASS = "PASS"  # noqa: S105 - a verdict, not a password
    WARN = "WARN"
    FAIL = "FAIL"
    INFO = "INFO"


STYLES = {
    Status.PASS: "bold green",
    Status.WARN: "bold yellow",
    Status.FAIL: "bold red",
    Status.INFO: "cyan",
}


@dataclasses.dataclass(slots=True)
class Check:
    """One step's verdict: what was seen (evidence) and what it most likely means (cause)."""

    name: str
    status: Status
    evidence: str
    cause: str = ""
    data: dict[str, Any] = dataclasses.field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "status": self.status.value,
            "evidence": self.evidence,
            "cause": self.cause,
            "data": self.data,
        }


@dataclasses.dataclass(slots=True)
class Report:
    url: str
    checks: list[Check] = dataclasses.field(default_factory=list)

    @property
    def ok(self) -> bool:
        """True unless a check failed: warnings do not change the exit status."""
        return not any(check.status is Status.FAIL for check in self.checks)

    def named(self, name: str) -> Check:
        """The check called `name` (tests and scripts look checks up by name)."""
        for check in self.checks:
            if check.name == name:
                return check
        raise KeyError(name)

    def counts(self) -> dict[str, int]:
        return {status.value: sum(c.status is status for c in self.checks) for status in Status}

    def to_dict(self) -> dict[str, Any]:
        return {
            "url": self.url,
            "ok": self.ok,
            "counts": self.counts(),
            "checks": [check.to_dict() for check in self.checks],
        }


def render_table(report: Report, console: Console) -> None:
    """The human view: one row per check, the cause in its own column so it is read."""
    table = Table(title=f"callbridge doctor {report.url}", show_lines=True, expand=True)
    table.add_column("", no_wrap=True)
    table.add_column("check", style="bold", no_wrap=True)
    # fold, never cut: a setting name in a fix must survive a narrow terminal whole
    table.add_column("evidence", ratio=3, overflow="fold")
    table.add_column("likely cause / fix", ratio=3, overflow="fold")
    for check in report.checks:
        table.add_row(
            Text(check.status.value, style=STYLES[check.status]),
            check.name,
            Text(check.evidence),
            Text(check.cause),
        )
    console.print(table)
    counts = report.counts()
    summary = ", ".join(f"{counts[s.value]} {s.value}" for s in Status if counts[s.value])
    verdict = "[bold green]OK[/]" if report.ok else "[bold red]FAILED[/]"
    console.print(f"{verdict}: {summary}")
