"""Real Redis and PostgreSQL for tests.

`RedisServer` runs a `redis-server` of the test's own on a free port (nothing on disk), so a
test may kill and restart it. `pg_database()` creates a PostgreSQL database with a random name
on the server scripts/test prepares (`CALLBRIDGE_TEST_PG_URL`), and drops it afterwards.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import signal
import subprocess
import threading
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import asyncpg

from tests.conftest import free_port

REDIS_SERVER = shutil.which("redis-server") or "/usr/bin/redis-server"
PG_ADMIN_URL = os.environ.get(
    "CALLBRIDGE_TEST_PG_URL",
    "postgresql://callbridge_test:callbridge_test@127.0.0.1:5432/postgres",
)
SHARED_REDIS_URL = os.environ.get("CALLBRIDGE_TEST_REDIS_URL", "redis://127.0.0.1:6379/0")
START_TIMEOUT = 15.0


class RedisServer:
    """`redis-server` as a child process on its own port; `stop()` and `start()` again keep
    the port, as a restarted Redis would."""

    def __init__(self, directory: Path, port: int | None = None) -> None:
        self.directory = directory
        self.port = port or free_port()
        self.process: subprocess.Popen[bytes] | None = None
        self.lines: list[str] = []

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> RedisServer:
        self.process = subprocess.Popen(
            [
                REDIS_SERVER,
                "--bind", "127.0.0.1",
                "--port", str(self.port),
                "--save", "",
                "--appendonly", "no",
                "--dir", str(self.directory),
                "--daemonize", "no",
            ],
            stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
        )  # fmt: skip
        ready = threading.Event()
        threading.Thread(target=self._read, args=(self.process, ready), daemon=True).start()
        if not ready.wait(START_TIMEOUT):
            self.stop()
            raise AssertionError("redis-server did not start:\n" + "\n".join(self.lines[-20:]))
        return self

    def _read(self, process: subprocess.Popen[bytes], ready: threading.Event) -> None:
        assert process.stdout is not None
        for raw in process.stdout:
            line = raw.decode("utf-8", "replace").rstrip()
            self.lines.append(line)
            if "Ready to accept connections" in line:
                ready.set()
        ready.set()  # exited: start() then finds out

    def stop(self, sig: int = signal.SIGKILL) -> None:
        """Kill -9 by default: Redis goes away as in a crash, with nothing saved."""
        if self.process is None:
            return
        if self.process.poll() is None:
            self.process.send_signal(sig)
        self.process.wait(timeout=15)
        if self.process.stdout is not None:
            self.process.stdout.close()
        self.process = None


@contextlib.contextmanager
def running_redis(directory: Path) -> Iterator[RedisServer]:
    server = RedisServer(directory).start()
    try:
        yield server
    finally:
        server.stop()


def _in_thread(coroutine: Any) -> Any:
    """Run admin SQL on a loop of its own: callers may be inside a running event loop."""
    result: list[Any] = []
    errors: list[BaseException] = []

    def run() -> None:
        try:
            result.append(asyncio.run(coroutine))
        except BaseException as exc:
            errors.append(exc)

    thread = threading.Thread(target=run)
    thread.start()
    thread.join()
    if errors:
        raise errors[0]
    return result[0] if result else None


async def _admin(statement: str) -> None:
    connection = await asyncpg.connect(PG_ADMIN_URL)
    try:
        await connection.execute(statement)
    finally:
        await connection.close()


def database_url(name: str) -> str:
    """The admin URL with another database name."""
    base, _, _ = PG_ADMIN_URL.rpartition("/")
    return f"{base}/{name}"


@contextlib.contextmanager
def pg_database() -> Iterator[str]:
    """A fresh, empty database; yields its postgresql:// URL."""
    name = "callbridge_test_" + uuid.uuid4().hex[:16]
    _in_thread(_admin(f'CREATE DATABASE "{name}"'))
    try:
        yield database_url(name)
    finally:
        _in_thread(_admin(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
