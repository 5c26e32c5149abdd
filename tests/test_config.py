"""Settings: defaults, derived URLs, masking, and docs generated from the definitions."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from callbridge.cli import configuration_markdown
from callbridge.config import Settings, normalise_database_url

ROOT = Path(__file__).resolve().parent.parent


def test_configuration_doc_is_generated_from_settings() -> None:
    on_disk = (ROOT / "docs" / "configuration.md").read_text(encoding="utf-8")
    assert on_disk == configuration_markdown(), (
        "run: callbridge config --markdown > docs/configuration.md"
    )


def test_defaults_match_the_old_service(monkeypatch: pytest.MonkeyPatch) -> None:
    settings = Settings(_env_file=None)  # type: ignore[call-arg]
    assert settings.port == 5006
    assert settings.telnyx_base_url == "https://api.telnyx.com/v2"
    assert settings.broker_url == "memory://"
    assert settings.ws_ping_interval == 20.0
    assert settings.database_url.startswith("sqlite+aiosqlite:///")
    assert settings.simulator_mode


def test_public_url_gives_wss_stream_url_and_webhook_url() -> None:
    settings = Settings(_env_file=None, public_url="https://calls.example.com/")  # type: ignore[call-arg]
    assert settings.stream_url == "wss://calls.example.com/audio-stream"
    assert settings.webhook_url == "https://calls.example.com/api/webhooks/telnyx"


def test_database_urls_get_async_drivers() -> None:
    assert normalise_database_url("sqlite:///x.db") == "sqlite+aiosqlite:///x.db"
    assert normalise_database_url("postgresql://u@h/db") == "postgresql+asyncpg://u@h/db"
    assert normalise_database_url("postgres://u@h/db") == "postgresql+asyncpg://u@h/db"


def test_config_command_masks_secrets(tmp_path: Path) -> None:
    env = {
        "PATH": "/usr/bin:/bin",
        "TELNYX_API_KEY": "KEYsupersecret123",
        "CALLBRIDGE_DATABASE_URL": "postgresql://bridge:hunter2@db.internal/calls",
        "COLUMNS": "250",
    }
    result = subprocess.run(
        [sys.executable, "-m", "callbridge", "config"],
        env=env,
        cwd=tmp_path,
        capture_output=True,
        text=True,
        check=True,
    )
    assert "KEYsupersecret123" not in result.stdout
    assert "hunter2" not in result.stdout
    assert "********" in result.stdout
    assert "db.internal" in result.stdout
    assert "Telnyx at https://api.telnyx.com/v2" in result.stdout


def test_invalid_setting_is_refused_with_reason(tmp_path: Path) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "callbridge", "config"],
        env={"PATH": "/usr/bin:/bin", "CALLBRIDGE_PORT": "eighty"},
        cwd=tmp_path,
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 2
    assert "CALLBRIDGE_PORT" in result.stderr or "port" in result.stderr


def test_unsupported_broker_is_refused_at_start(tmp_path: Path) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "callbridge", "serve", "--port", "0"],
        env={"PATH": "/usr/bin:/bin", "CALLBRIDGE_BROKER_URL": "kafka://x"},
        cwd=tmp_path,
        capture_output=True,
        text=True,
        check=False,
        timeout=60,
    )
    assert result.returncode == 2
    assert "unsupported broker 'kafka'" in result.stderr
