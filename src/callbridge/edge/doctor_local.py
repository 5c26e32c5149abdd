"""`doctor --local`: the runbook's server-side steps, run on the proxy host itself.

Is the service listening on its port (runbook step 4), does `nginx -t` accept the live
configuration (step 1), and what does callbridge's own nginx linter say about it. The linter is
imported lazily: it ships separately and the doctor must work without it.
"""

from __future__ import annotations

import asyncio
import importlib
import shutil
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from callbridge.config import Settings
from callbridge.edge.doctor_explain import explain_nginx_line
from callbridge.edge.doctor_net import Endpoint, ProbeError, http_get
from callbridge.edge.doctor_report import Check, Status

__all__ = ["check_lint", "check_nginx_t", "check_service", "local_checks"]

LINT_MODULE = "callbridge.edge.lint"
_ANY_INTERFACE = {"0.0.0.0", "::", ""}


async def local_checks(
    *, service_port: int | None, nginx_conf: Path, wait: float, ping_interval: float | None
) -> list[Check]:
    """`ping_interval` is the live service's (from its welcome), if the doctor saw it."""
    settings, note = _settings()
    port = service_port or settings.port
    interval = settings.ws_ping_interval if ping_interval is None else ping_interval
    return [
        await check_service(settings, port, wait, note),
        await check_nginx_t(nginx_conf, wait),
        await check_lint(nginx_conf, ping_interval=interval, backend_port=port),
    ]


def _settings() -> tuple[Settings, str]:
    try:
        return Settings(), ""
    except ValidationError as exc:
        note = f" (settings invalid, defaults used: {exc.error_count()} errors)"
        return Settings.model_construct(), note


async def check_service(settings: Settings, port: int, wait: float, note: str = "") -> Check:
    """Runbook step 4 (`ss -tlnp | grep 5006`), plus its health answer without the proxy."""
    host = "127.0.0.1" if settings.host in _ANY_INTERFACE else settings.host
    endpoint = Endpoint(host, port, host, None)
    try:
        response = await http_get(endpoint, "/api/health", wait)
    except ProbeError as exc:
        return Check(
            "local: service port",
            Status.FAIL,
            f"{host}:{port}: {exc}{note}",
            "callbridge is not listening there: start it (systemctl status callbridge; "
            "journalctl -u callbridge), or CALLBRIDGE_PORT differs from the port in nginx's "
            "proxy_pass (--service-port to check another).",
            {"host": host, "port": port},
        )
    body = response.json()
    version = body.get("version") if isinstance(body, dict) else None
    if response.status == 200 and version:
        return Check(
            "local: service port",
            Status.PASS,
            f"{host}:{port} answers /api/health 200, version {version}{note}",
            data={"host": host, "port": port, "version": version},
        )
    return Check(
        "local: service port",
        Status.WARN,
        f"{host}:{port} listens but /api/health answered {response.status_line}{note}",
        "Something else listens on this port, or the service is unhealthy.",
        {"host": host, "port": port},
    )


def _nginx_binary() -> str | None:
    found = shutil.which("nginx")
    if found:
        return found
    for candidate in ("/usr/sbin/nginx", "/usr/local/sbin/nginx", "/usr/local/nginx/sbin/nginx"):
        if Path(candidate).exists():
            return candidate
    return None


async def _run(args: list[str], wait: float) -> tuple[int, str]:
    process = await asyncio.create_subprocess_exec(
        *args, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT
    )
    try:
        async with asyncio.timeout(wait):
            output, _ = await process.communicate()
    except TimeoutError:
        process.kill()
        await process.wait()
        raise
    return process.returncode or 0, output.decode("utf-8", "replace")


async def check_nginx_t(conf: Path, wait: float) -> Check:
    """Runbook step 1: `nginx -t`, with its [emerg] and [warn] lines explained."""
    nginx = _nginx_binary()
    if nginx is None:
        return Check("local: nginx -t", Status.INFO, "nginx is not installed on this host")
    if not await asyncio.to_thread(conf.exists):
        return Check(
            "local: nginx -t",
            Status.WARN,
            f"no nginx configuration at {conf}",
            "Pass the main configuration file with --nginx-conf.",
        )
    try:
        _, version = await _run([nginx, "-v"], wait)
        code, output = await _run([nginx, "-t", "-c", str(conf)], wait)
    except (OSError, TimeoutError) as exc:
        return Check("local: nginx -t", Status.WARN, f"could not run {nginx}: {exc!r}")
    version = version.strip().removeprefix("nginx version: ")
    lines = [line.strip() for line in output.splitlines() if line.strip()]
    bad = [line for line in lines if any(t in line for t in ("[emerg]", "[crit]", "[alert]"))]
    warned = [line for line in lines if "[warn]" in line]
    hints = list(dict.fromkeys(h for h in map(explain_nginx_line, bad + warned) if h))
    data = {"returncode": code, "output": lines, "version": version}
    if code != 0:
        return Check(
            "local: nginx -t",
            Status.FAIL,
            f"{version}: nginx -t -c {conf} failed: " + " | ".join(bad or lines[-3:]),
            " ".join(hints) or "Fix the configuration before reloading nginx.",
            data,
        )
    if warned or bad:
        return Check(
            "local: nginx -t",
            Status.WARN,
            f"{version}: test passed with warnings: " + " | ".join(warned + bad),
            " ".join(hints),
            data,
        )
    return Check("local: nginx -t", Status.PASS, f"{version}: {conf}: test is successful", "", data)


async def check_lint(conf: Path, *, ping_interval: float, backend_port: int) -> Check:
    """callbridge's nginx linter on the live configuration, if this installation has it."""
    name = "local: nginx lint"
    try:
        module = importlib.import_module(LINT_MODULE)
    except ModuleNotFoundError as exc:
        if exc.name != LINT_MODULE:
            return Check(name, Status.WARN, f"the linter cannot load: {exc}")
        return Check(name, Status.INFO, "skipped: this callbridge has no nginx linter")
    if not await asyncio.to_thread(conf.exists):
        return Check(name, Status.INFO, f"skipped: no configuration at {conf}")
    try:
        found = await asyncio.to_thread(
            module.lint_file, conf, ping_interval=ping_interval, backend_ports=(backend_port,)
        )
        findings = [_finding(item) for item in found]
    except Exception as exc:  # a linter bug must not hide the doctor's other results
        return Check(name, Status.WARN, f"the linter failed: {exc!r}")
    against = f"against ping interval {ping_interval:g} s and backend port {backend_port}"
    data = {"findings": [{"status": f[0].value, "message": f[1], "fix": f[2]} for f in findings]}
    if not findings:
        return Check(name, Status.PASS, f"{conf}: no findings ({against})", data=data)
    worst = min((f[0] for f in findings), key=_RANK.__getitem__)
    shown = sorted(findings, key=lambda f: _RANK[f[0]])
    return Check(
        name,
        worst,
        f"{len(findings)} finding(s) {against}: " + " | ".join(f[1] for f in shown[:6]),
        " ".join(dict.fromkeys(f[2] for f in shown[:6] if f[2])),
        data,
    )


_RANK = {Status.FAIL: 0, Status.WARN: 1, Status.INFO: 2, Status.PASS: 3}
_SEVERITIES = {"error": Status.FAIL, "warning": Status.WARN}


def _finding(item: Any) -> tuple[Status, str, str]:
    """A linter finding as (status, 'file:line: message', fix)."""
    status = _SEVERITIES.get(str(item.severity).lower(), Status.INFO)
    return status, f"{item.file}:{item.line}: {item.message}", str(item.fix or "")
