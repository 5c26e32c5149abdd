"""Shared fixtures: a real callbridge process on real sockets, with its embedded simulator."""

from __future__ import annotations

import base64
import contextlib
import os
import signal
import socket
import subprocess
import sys
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest

from callbridge.auth.keys import key_entry
from callbridge.auth.tokens import Right, TokenIssuer
from callbridge.sim import WebhookSigner

SEED = base64.b64encode(bytes(range(32))).decode()
START_TIMEOUT = 30.0
# The credentials every test service runs with (tests/auth checks the generated demo key too).
API_KEY = "cbk_tests-" + "k" * 40
TOKEN_SECRET = "tests-token-secret-" + "s" * 40
ALL_RIGHTS = (Right.EVENTS, Right.LISTEN, Right.TALK)


def mint_token(
    calls: list[str] | None = None,
    rights: tuple[Right, ...] = ALL_RIGHTS,
    ttl: int = 3600,
    secret: str = TOKEN_SECRET,
) -> str:
    """A browser token as POST /api/tokens would issue it (same secret as the test services)."""
    token, _ = TokenIssuer(secret, max_ttl=86_400).issue("tests", calls, rights, ttl)
    return token


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class ServiceProcess:
    """`callbridge serve` as a subprocess; its JSON log lines are collected as they arrive."""

    def __init__(
        self,
        env: dict[str, str],
        workdir: Path,
        args: tuple[str, ...] = ("serve",),
        ready_event: str = "callbridge ready",
    ) -> None:
        self.env = env
        self.args = args
        self.ready_event = ready_event
        self.workdir = workdir
        self.logs: list[dict[str, Any]] = []
        self.raw_lines: list[str] = []
        self._changed = threading.Condition()
        self.process: subprocess.Popen[bytes] | None = None
        self.port = int(env["CALLBRIDGE_PORT"])
        self.sim_port = int(env.get("CALLBRIDGE_SIM_PORT", "0"))

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def api_headers(self) -> dict[str, str]:
        """REST credentials: the API key as a Bearer token."""
        return {"Authorization": f"Bearer {API_KEY}"}

    @property
    def ws_token(self) -> str:
        """A browser token for every call with every right (events, listen, talk)."""
        return mint_token()

    @property
    def ws_url(self) -> str:
        return f"ws://127.0.0.1:{self.port}"

    @property
    def sim_url(self) -> str:
        return f"http://127.0.0.1:{self.sim_port}"

    def start(self) -> ServiceProcess:
        self.logs.clear()
        self.process = subprocess.Popen(
            [sys.executable, "-m", "callbridge", *self.args],
            env=self.env,
            cwd=self.workdir,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
        )
        self._reader = threading.Thread(target=self._read, args=(self.process,), daemon=True)
        self._reader.start()
        self.wait_for_log(lambda e: e.get("event") == self.ready_event, START_TIMEOUT)
        return self

    def _read(self, process: subprocess.Popen[bytes]) -> None:
        assert process.stderr is not None
        for raw in process.stderr:
            line = raw.decode("utf-8", "replace").rstrip("\n")
            try:
                entry = orjson.loads(line)
            except orjson.JSONDecodeError:
                entry = {"event": line, "unparsed": True}
            with self._changed:
                self.raw_lines.append(line)
                self.logs.append(entry)
                self._changed.notify_all()
        with self._changed:
            self.logs.append({"event": "<process exited>"})
            self._changed.notify_all()

    def wait_for_log(
        self, predicate: Callable[[dict[str, Any]], bool], timeout: float = 10.0
    ) -> dict[str, Any]:
        """Block until a log line matches (event-driven, no polling sleeps)."""
        seen = 0
        with self._changed:
            while True:
                for entry in self.logs[seen:]:
                    if predicate(entry):
                        return entry
                    if entry.get("event") == "<process exited>":
                        raise AssertionError("service exited:\n" + "\n".join(self.raw_lines[-30:]))
                seen = len(self.logs)
                if not self._changed.wait(timeout):
                    raise AssertionError(
                        "log line not seen in time; last lines:\n" + "\n".join(self.raw_lines[-30:])
                    )

    def stop(self, sig: int = signal.SIGTERM) -> int:
        if self.process is None:
            return 0
        if self.process.poll() is None:
            self.process.send_signal(sig)
        code = self.process.wait(timeout=30)
        self._reader.join(timeout=10)
        assert self.process.stderr is not None
        self.process.stderr.close()
        self.process = None
        return code


def service_env(tmp: Path, **overrides: str) -> dict[str, str]:
    env = {
        key: value
        for key, value in os.environ.items()
        if not key.startswith(("CALLBRIDGE_", "TELNYX_"))
    }
    env.update(
        CALLBRIDGE_PORT=str(free_port()),
        CALLBRIDGE_HOST="127.0.0.1",
        CALLBRIDGE_SIM_PORT=str(free_port()),
        CALLBRIDGE_SIM_SIGNING_SEED=SEED,
        CALLBRIDGE_SIM_PACE="0.05",
        CALLBRIDGE_DATABASE_URL=f"sqlite:///{tmp / 'callbridge.db'}",
        CALLBRIDGE_LOG_FORMAT="json",
        CALLBRIDGE_TELNYX_MAX_RETRIES="3",
        CALLBRIDGE_API_KEYS=key_entry("tests", API_KEY),
        CALLBRIDGE_TOKEN_SECRET=TOKEN_SECRET,
        # A module's tests share one service and dial far more than a burst: tests of the
        # dial rate limit set their own.
        CALLBRIDGE_DIAL_RATE_PER_MINUTE="0",
    )
    env.update(overrides)
    return env


@contextlib.contextmanager
def running_service(tmp: Path, **overrides: str) -> Iterator[ServiceProcess]:
    service = ServiceProcess(service_env(tmp, **overrides), tmp).start()
    try:
        yield service
    finally:
        service.stop()


@pytest.fixture(scope="module")
def service(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServiceProcess]:
    """One service (embedded simulator, SQLite) shared by a test module."""
    with running_service(tmp_path_factory.mktemp("service")) as svc:
        yield svc


@pytest.fixture
def api(service: ServiceProcess) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=service.url, timeout=10, headers=service.api_headers) as client:
        yield client


@pytest.fixture
def sim(service: ServiceProcess) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=service.sim_url, timeout=10) as client:
        yield client


@pytest.fixture(scope="session")
def signer() -> WebhookSigner:
    """The same key the embedded simulator signs with: tests can forge nothing else."""
    return WebhookSigner.from_seed_b64(SEED)
