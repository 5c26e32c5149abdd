"""`callbridge simulate --target`: the simulator drives a service configured to use it."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from callbridge.sim import WebhookSigner
from tests.conftest import API_KEY, SEED, free_port, running_service, service_env

OTHER_SEED = "AQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQE="


def _smoke(
    tmp: Path, target: str, sim_port: int, seed: str, *extra: str, api_key: str | None = API_KEY
) -> subprocess.CompletedProcess[str]:
    env = service_env(tmp)
    args = ["simulate", "--target", target, "--port", str(sim_port)]
    args += ["--telnyx-api-key", "KEYsmoke", *(("--api-key", api_key) if api_key else ())]
    return subprocess.run(
        [sys.executable, "-m", "callbridge", *args, "--seed", seed, *extra],
        env={**env, "COLUMNS": "200"},
        cwd=tmp,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def _telnyx_env(sim_port: int) -> dict[str, str]:
    return {
        "TELNYX_API_KEY": "KEYsmoke",
        "TELNYX_PUBLIC_KEY": WebhookSigner.from_seed_b64(SEED).public_key_b64,
        "TELNYX_BASE_URL": f"http://127.0.0.1:{sim_port}/v2",
        "TELNYX_CONNECTION_ID": "1234567890",
    }


def test_the_smoke_test_passes_end_to_end(tmp_path: Path) -> None:
    sim_port = free_port()
    with running_service(tmp_path, **_telnyx_env(sim_port)) as service:
        result = _smoke(tmp_path, service.url, sim_port, SEED)
        service.wait_for_log(lambda e: e.get("event") == "Media stream started")
    assert result.returncode == 0, result.stdout + result.stderr
    for step in (
        "API key accepted",
        "webhooks reach the service",
        "media socket reaches the service",
        "a listener hears",
    ):
        assert step in result.stdout
    assert "FAIL" not in result.stdout
    assert "smoke test passed" in result.stderr
    assert WebhookSigner.from_seed_b64(SEED).public_key_b64 in result.stderr  # printed to copy


def test_a_wrong_webhook_key_fails_with_the_key_to_set(tmp_path: Path) -> None:
    sim_port = free_port()
    with running_service(tmp_path, **_telnyx_env(sim_port)) as service:
        result = _smoke(tmp_path, service.url, sim_port, OTHER_SEED, "--step-timeout", "3")
        service.wait_for_log(lambda e: e.get("event") == "Webhook rejected")
    assert result.returncode == 1
    out = " ".join(result.stdout.split())  # the table wraps long details
    assert "webhooks reach the service" in out
    assert "FAIL" in out
    assert WebhookSigner.from_seed_b64(OTHER_SEED).public_key_b64 in out


def test_a_service_using_another_telnyx_fails_the_dial_step(tmp_path: Path) -> None:
    with running_service(tmp_path) as service:  # simulator mode: its own embedded simulator
        result = _smoke(tmp_path, service.url, free_port(), SEED, "--step-timeout", "3")
        service.wait_for_log(lambda e: e.get("event") == "Call dialed")
    assert result.returncode == 1
    out = " ".join(result.stdout.split())
    assert "dial through the simulator" in out
    assert "never saw the call" in out


def test_a_missing_or_wrong_api_key_is_explained(tmp_path: Path) -> None:
    sim_port = free_port()
    with running_service(tmp_path, **_telnyx_env(sim_port)) as service:
        missing = _smoke(tmp_path, service.url, sim_port, SEED, api_key=None)
        wrong = _smoke(tmp_path, service.url, sim_port, SEED, api_key="cbk_not-a-key")
    for result in (missing, wrong):
        assert result.returncode == 1
        out = " ".join(result.stdout.split())
        assert "service answers" in out
        assert "API key accepted" in out
        assert "FAIL" in out
        assert "/call-events welcome" not in out  # it stopped at the first failure
    assert "the service wants an API key: pass --api-key" in " ".join(missing.stdout.split())
    assert "refused the API key" in " ".join(wrong.stdout.split())
