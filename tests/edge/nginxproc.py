"""Real nginx for tests: its own prefix, 127.0.0.1 only, a self-signed certificate made here.

`NginxProcess(config_text)` writes the configuration into a temporary prefix (pid, logs and temp
paths included), runs `nginx -t`, then starts nginx in the foreground as a child process, and
stops it with SIGQUIT. `reload()` sends SIGHUP. `self_signed(tmp, host, days)` makes a
certificate and key (`days` may be negative: one that expired that many days ago).
"""

from __future__ import annotations

import contextlib
import ipaddress
import shutil
import signal
import socket
import subprocess
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

NGINX = shutil.which("nginx") or "/usr/sbin/nginx"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def self_signed(directory: Path, host: str = "localhost", days: int = 2) -> tuple[Path, Path]:
    """A certificate for `host` (and 127.0.0.1) valid for `days`; negative: expired that long."""
    key = ec.generate_private_key(ec.SECP256R1())
    now = datetime.now(UTC)
    start, end = (now - timedelta(days=1), now + timedelta(days=days))
    if days <= 0:
        start, end = now + timedelta(days=days - 30), now + timedelta(days=days)
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, host)])
    certificate = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(start)
        .not_valid_after(end)
        .add_extension(
            x509.SubjectAlternativeName(
                [x509.DNSName(host), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]
            ),
            critical=False,
        )
        .sign(key, hashes.SHA256())
    )
    cert_path, key_path = directory / f"{host}.crt", directory / f"{host}.key"
    cert_path.write_bytes(certificate.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    return cert_path, key_path


def main_context(prefix: Path) -> str:
    """The main and events contexts for a test nginx: everything under `prefix`."""
    return (
        f"pid {prefix}/nginx.pid;\n"
        f"error_log {prefix}/error.log info;\n"
        "daemon off;\n"
        "worker_processes 1;\n"
        "events { worker_connections 1024; }\n"
    )


def http_paths(prefix: Path) -> str:
    """http-context lines that keep nginx's files inside `prefix`."""
    return (
        "".join(
            f"{name}_temp_path {prefix}/{name}_temp;\n"
            for name in ("client_body", "proxy", "fastcgi", "uwsgi", "scgi")
        )
        + f"access_log {prefix}/access.log;\n"
    )


class NginxProcess:
    """nginx -p PREFIX -c nginx.conf, in the foreground, checked before it starts."""

    def __init__(self, prefix: Path, config: str) -> None:
        self.prefix = prefix
        self.conf = prefix / "nginx.conf"
        self.conf.write_text(config)
        self.process: subprocess.Popen[bytes] | None = None

    def test(self) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [NGINX, "-t", "-p", str(self.prefix), "-c", str(self.conf)],
            capture_output=True, text=True, check=False,
        )  # fmt: skip

    def start(self, *ports: int) -> NginxProcess:
        checked = self.test()
        assert checked.returncode == 0, checked.stderr
        self.process = subprocess.Popen(
            [NGINX, "-p", str(self.prefix), "-c", str(self.conf)],
            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
        )  # fmt: skip
        for port in ports:
            self._await_port(port)
        return self

    def _await_port(self, port: int, timeout: float = 10.0) -> None:
        """nginx has no readiness signal; its listening socket is the signal."""
        deadline = time.monotonic() + timeout
        while True:
            with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), 1):
                return
            assert self.process is not None
            if self.process.poll() is not None or time.monotonic() > deadline:
                raise AssertionError(f"nginx did not listen on {port}: {self.error_log()}")
            time.sleep(0.05)

    def reload(self) -> None:
        assert self.process is not None
        self.process.send_signal(signal.SIGHUP)

    def error_log(self) -> str:
        path = self.prefix / "error.log"
        return path.read_text() if path.exists() else ""

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGQUIT)
            try:
                self.process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        if self.process is not None and self.process.stderr is not None:
            self.process.stderr.close()
        self.process = None


@contextlib.contextmanager
def running_nginx(prefix: Path, config: str, *ports: int) -> Iterator[NginxProcess]:
    nginx = NginxProcess(prefix, config).start(*ports)
    try:
        yield nginx
    finally:
        nginx.stop()
