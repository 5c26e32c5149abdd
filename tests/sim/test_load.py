"""`callbridge simulate load`: calls with listeners through a running service, accounted for."""

from __future__ import annotations

import os
import subprocess
import sys

import orjson

from tests.conftest import API_KEY, ServiceProcess


def test_a_small_load_is_delivered_and_accounted_for(service: ServiceProcess) -> None:
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "callbridge",
            "simulate",
            "load",
            "--target",
            service.url,
            "--sim",
            service.sim_url,
            "--calls",
            "2",
            "--listeners",
            "2",
            "--duration",
            "1",
            "--workers",
            "1",
            "--api-key",
            API_KEY,
            "--json",
        ],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    report = orjson.loads(result.stdout)
    assert report["sent"] == 2 * 50  # one 20 ms frame per call per tick, for one second
    assert report["expected"] == report["sent"] * 2
    assert report["delivered"] > 0
    # Every frame is either delivered or reported dropped by the service: nothing vanishes.
    assert report["delivered"] + report["dropped"] == report["expected"]
    assert report["missing"] == report["dropped"]
    assert set(report["latency_ms"]) == {"p50", "p90", "p99", "max"}
    assert 0 <= report["latency_ms"]["p50"] <= report["latency_ms"]["max"]
    assert report["server_cpu_seconds"] is not None  # the service's pid was found by its port
    assert report["server_rss_mb"] > 0
    assert report["errors"] == []


def test_a_load_without_an_api_key_says_to_pass_one(service: ServiceProcess) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "callbridge", "simulate", "load", "--target", service.url,
         "--sim", service.sim_url, "--calls", "1", "--duration", "0.2"],
        capture_output=True, text=True, timeout=120, check=False,
        env={key: value for key, value in os.environ.items() if key != "CALLBRIDGE_API_KEY"},
    )  # fmt: skip
    assert result.returncode == 2, result.stdout + result.stderr
    assert "the service wants an API key: pass --api-key" in " ".join(result.stderr.split())
