"""The `callbridge` command: serve, config, migrate, simulate."""

from __future__ import annotations

import asyncio
import socket
import sys
from typing import Annotated, Any

import typer
import uvicorn
from pydantic import SecretStr, ValidationError
from rich.console import Console
from rich.table import Table

from callbridge import __version__
from callbridge.config import Settings
from callbridge.logs import configure_logging, get_logger

__all__ = ["app", "configuration_markdown", "main"]

log = get_logger("callbridge.cli")
app = typer.Typer(help="callbridge: Telnyx calls to browsers, live.", no_args_is_help=True)
simulate_app = typer.Typer(help="The Telnyx simulator.", no_args_is_help=True)
app.add_typer(simulate_app, name="simulate")

WS_MAX_SIZE = 1024 * 1024  # the largest WebSocket message any route accepts
GRACEFUL_SHUTDOWN_SECONDS = 10


def _settings(**overrides: Any) -> Settings:
    try:
        return Settings(**{k: v for k, v in overrides.items() if v is not None})
    except ValidationError as exc:
        Console(stderr=True).print(f"[red]Invalid settings:[/red]\n{exc}")
        raise typer.Exit(2) from None


def _bind(host: str, port: int) -> socket.socket:
    """Bind before the app exists, so port 0 resolves and URLs derive from the real port."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((host, port))
    sock.set_inheritable(True)
    return sock


def _uvicorn_config(asgi: Any, settings: Settings, ping: bool = True) -> uvicorn.Config:
    return uvicorn.Config(
        asgi,
        ws="websockets-sansio",
        http="httptools",
        ws_ping_interval=(settings.ws_ping_interval or None) if ping else None,
        ws_ping_timeout=settings.ws_ping_timeout,
        ws_max_size=WS_MAX_SIZE,
        log_config=None,
        access_log=False,
        proxy_headers=True,
        forwarded_allow_ips="127.0.0.1",
        timeout_graceful_shutdown=GRACEFUL_SHUTDOWN_SECONDS,
        lifespan="on",
    )


async def _wait_started(server: uvicorn.Server, task: asyncio.Task[None]) -> None:
    while not server.started:
        if task.done():
            task.result()
            raise RuntimeError("server stopped during start-up")
        await asyncio.sleep(0.02)


async def _serve(settings: Settings) -> None:
    from callbridge.app import create_app
    from callbridge.sim import Simulator, WebhookSigner

    main_socket = _bind(settings.host, settings.port)
    settings = settings.model_copy(update={"port": main_socket.getsockname()[1]})
    sim_server: uvicorn.Server | None = None
    sim_task: asyncio.Task[None] | None = None
    simulator: Simulator | None = None
    if settings.simulator_mode:
        seed = settings.sim_signing_seed.get_secret_value() if settings.sim_signing_seed else None
        signer = WebhookSigner.from_seed_b64(seed)
        simulator = Simulator(
            signer=signer,
            pace=settings.sim_pace,
            inbound_webhook_url=settings.webhook_url,
            connection_id=settings.telnyx_connection_id,
        )
        sim_socket = _bind(settings.sim_host, settings.sim_port)
        sim_port = sim_socket.getsockname()[1]
        base_url = f"http://{settings.sim_host}:{sim_port}/v2"
        settings = settings.model_copy(
            update={
                "telnyx_base_url": base_url,
                "telnyx_public_key": signer.public_key_b64,
                "telnyx_api_key": SecretStr(simulator.api_key),
            }
        )
        sim_server = uvicorn.Server(_uvicorn_config(simulator.app, settings, ping=False))
        sim_task = asyncio.create_task(sim_server.serve(sockets=[sim_socket]))
        await _wait_started(sim_server, sim_task)
        log.info(
            "Simulator mode: no TELNYX_API_KEY, Telnyx is played by the built-in simulator",
            telnyx_base_url=base_url,
            sim_port=sim_port,
            webhook_public_key=signer.public_key_b64,
        )
    server = uvicorn.Server(_uvicorn_config(create_app(settings), settings))
    task = asyncio.create_task(server.serve(sockets=[main_socket]))
    try:
        await _wait_started(server, task)
        log.info(
            "callbridge ready",
            url=settings.effective_public_url,
            port=settings.port,
            simulator=simulator is not None,
        )
        await task
    finally:
        if sim_server is not None and sim_task is not None:
            sim_server.should_exit = True
            await sim_task
        if simulator is not None:
            await simulator.close()


def _run(coroutine: Any) -> None:
    try:
        import uvloop

        uvloop.run(coroutine)
    except ImportError:  # pragma: no cover - uvloop is a dependency on every supported OS
        asyncio.run(coroutine)


@app.command()
def serve(
    host: Annotated[str | None, typer.Option(help="Interface (CALLBRIDGE_HOST).")] = None,
    port: Annotated[int | None, typer.Option(help="Port (CALLBRIDGE_PORT).")] = None,
) -> None:
    """Run the service (with the built-in Telnyx simulator when no TELNYX_API_KEY is set)."""
    settings = _settings(host=host, port=port)
    configure_logging(settings.log_format, settings.log_level)
    from callbridge.app import ConfigurationError

    try:
        _run(_serve(settings))
    except ConfigurationError as exc:
        log.error("Cannot start", reason=str(exc))
        raise typer.Exit(2) from None
    except KeyboardInterrupt:  # pragma: no cover - Ctrl-C before the server took the signal
        pass


def configuration_markdown() -> str:
    """docs/configuration.md, generated from the settings' own definitions."""
    lines = [
        "# Configuration",
        "",
        "<!-- Generated by `callbridge config --markdown`; edit src/callbridge/config.py. -->",
        "",
        "Every setting is an environment variable (a `.env` file in the working directory is "
        "read too; the environment wins). `callbridge config` prints the effective values with "
        "secrets masked.",
        "",
        "| variable | default | description |",
        "|---|---|---|",
    ]
    defaults = Settings.model_construct()
    for name, (value, description) in defaults.masked().items():
        shown = f"`{value}`" if value else "(unset)"
        lines.append(f"| `{name}` | {shown} | {description} |")
    return "\n".join(lines) + "\n"


@app.command()
def config(
    markdown: Annotated[bool, typer.Option(help="Print docs/configuration.md instead.")] = False,
) -> None:
    """Print the effective settings (secrets masked)."""
    if markdown:
        sys.stdout.write(configuration_markdown())
        return
    settings = _settings()
    table = Table(title=f"callbridge {__version__} settings")
    table.add_column("variable", style="cyan")
    table.add_column("value")
    table.add_column("description", style="dim")
    for name, (value, description) in settings.masked().items():
        table.add_row(name, value or "(unset)", description)
    Console().print(table)
    mode = "simulator" if settings.simulator_mode else f"Telnyx at {settings.telnyx_base_url}"
    Console().print(f"Mode: [bold]{mode}[/bold]; stream_url {settings.stream_url}")


@app.command()
def migrate() -> None:
    """Bring the database schema up to date (the service also does this when it starts)."""
    settings = _settings()
    configure_logging(settings.log_format, settings.log_level)
    from callbridge.store.sql import open_store

    async def _migrate() -> None:
        store = await open_store(settings.database_url)
        head = await store.head()
        await store.close()
        log.info("Schema up to date", seq=head.last_seq, epoch=head.epoch)

    asyncio.run(_migrate())


@simulate_app.command("serve")
def simulate_serve(
    host: Annotated[str, typer.Option(help="Interface.")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="Port.")] = 5007,
    webhook_url: Annotated[str | None, typer.Option(help="Where inbound-call webhooks go.")] = None,
    api_key: Annotated[str | None, typer.Option(help="Bearer key to accept.")] = None,
    seed: Annotated[
        str | None, typer.Option(help="Base64 Ed25519 seed of the webhook key.")
    ] = None,
    pace: Annotated[float, typer.Option(help="Time scale (1.0 = real time).")] = 1.0,
) -> None:
    """Run the Telnyx simulator alone; point a service's TELNYX_BASE_URL at it."""
    from callbridge.sim import Simulator, WebhookSigner

    settings = _settings()
    configure_logging(settings.log_format, settings.log_level)
    signer = WebhookSigner.from_seed_b64(seed)
    simulator = Simulator(
        signer=signer, api_key=api_key, pace=pace, inbound_webhook_url=webhook_url
    )

    async def _run_sim() -> None:
        sock = _bind(host, port)
        server = uvicorn.Server(_uvicorn_config(simulator.app, settings, ping=False))
        task = asyncio.create_task(server.serve(sockets=[sock]))
        await _wait_started(server, task)
        actual = sock.getsockname()[1]
        log.info(
            "simulator ready",
            port=actual,
            TELNYX_BASE_URL=f"http://{host}:{actual}/v2",
            TELNYX_PUBLIC_KEY=signer.public_key_b64,
            TELNYX_API_KEY=simulator.api_key,
        )
        try:
            await task
        finally:
            await simulator.close()

    _run(_run_sim())


def main() -> None:
    app()


if __name__ == "__main__":  # pragma: no cover
    main()
