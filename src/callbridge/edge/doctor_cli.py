"""The `callbridge doctor` command; `cli.py` registers it.

Defined here so the command's many options live next to the checks they drive; the probes are
imported only when the command runs, so `callbridge --help` stays fast.
"""

from __future__ import annotations

import asyncio
import sys
from pathlib import Path
from typing import Annotated

import orjson
import typer
from rich.console import Console

__all__ = ["doctor"]


def doctor(
    url: Annotated[
        str,
        typer.Argument(help="The public address: https://host[:port], or wss://host/path."),
    ],
    ca: Annotated[
        Path | None,
        typer.Option(help="Trust this CA file (PEM) instead of the system store.", dir_okay=False),
    ] = None,
    insecure: Annotated[
        bool, typer.Option(help="Continue after a certificate failure (still reported).")
    ] = False,
    timeout: Annotated[
        float, typer.Option(min=0.1, help="Seconds each network step may take.")
    ] = 10.0,
    http_port: Annotated[
        int | None,
        typer.Option(help="Plain-HTTP port for the redirect check (default 80 if HTTPS is 443)."),
    ] = None,
    ws_path: Annotated[
        list[str] | None,
        typer.Option(
            help="WebSocket path to check (repeatable; default: the URL's path, or "
            "/call-events, /frontend-audio and /audio-stream)."
        ),
    ] = None,
    origin: Annotated[
        str | None, typer.Option(help="Origin header of the handshakes (default: the URL's).")
    ] = None,
    call_control_id: Annotated[
        str | None,
        typer.Option(help="A live call: /frontend-audio must send its format message."),
    ] = None,
    token: Annotated[
        str | None,
        typer.Option(
            help="A browser token (events and listen rights), passed as ?token= on "
            "/call-events and /frontend-audio."
        ),
    ] = None,
    api_key: Annotated[
        str | None,
        typer.Option(
            envvar="CALLBRIDGE_API_KEY",
            help="An API key (cbk_…): the doctor mints its own browser token with it through "
            "POST /api/tokens (unless --token is given).",
        ),
    ] = None,
    idle: Annotated[
        float | None,
        typer.Option(
            min=0,
            help="Seconds of silence in the idle test (default: max(75, detected proxy idle "
            "limit + 15)).",
        ),
    ] = None,
    quick: Annotated[bool, typer.Option(help="Skip the idle test.")] = False,
    local: Annotated[
        bool,
        typer.Option(help="Also check this host: the service's port, nginx -t, the nginx lint."),
    ] = False,
    service_port: Annotated[
        int | None, typer.Option(help="The service's port for --local (CALLBRIDGE_PORT).")
    ] = None,
    nginx_conf: Annotated[
        Path, typer.Option(help="nginx's main configuration for --local.")
    ] = Path("/etc/nginx/nginx.conf"),
    as_json: Annotated[bool, typer.Option("--json", help="Print the report as JSON.")] = False,
) -> None:
    """Check a deployment end to end and explain each failure (exit 1 if a check fails).

    DNS, TCP, TLS, the HTTP to HTTPS redirect, health, a raw WebSocket handshake on each path,
    the welcome, an idle period longer than the proxy's timeout, and the close handshake.
    """
    from callbridge.edge.doctor import DoctorOptions, render_table, run_doctor

    options = DoctorOptions(
        url=url,
        ca=ca,
        insecure=insecure,
        timeout=timeout,
        http_port=http_port,
        ws_paths=tuple(ws_path or ()),
        origin=origin,
        call_control_id=call_control_id,
        token=token,
        api_key=api_key,
        idle=idle,
        quick=quick,
        local=local,
        service_port=service_port,
        nginx_conf=nginx_conf,
    )
    if as_json:
        report = asyncio.run(run_doctor(options))
        sys.stdout.write(orjson.dumps(report.to_dict(), option=orjson.OPT_INDENT_2).decode() + "\n")
    else:
        with Console(stderr=True).status("callbridge doctor") as status:
            report = asyncio.run(run_doctor(options, progress=status.update))
        render_table(report, Console())
    raise typer.Exit(0 if report.ok else 1)
