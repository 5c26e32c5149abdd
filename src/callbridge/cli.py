"""The `callbridge` command: serve, config, migrate, simulate."""

from __future__ import annotations

import asyncio
import contextlib
import gc
import resource
import socket
import sys
from collections.abc import AsyncIterator, Coroutine
from typing import Annotated, Any, TypeVar

import orjson
import typer
import uvicorn
from pydantic import SecretStr, ValidationError
from rich.console import Console
from rich.table import Table

from callbridge import __version__
from callbridge.config import Settings
from callbridge.edge.doctor_cli import doctor as doctor_command
from callbridge.edge.nginx_cli import nginx_app
from callbridge.logs import configure_logging, get_logger
from callbridge.server import Server
from callbridge.ws.picows_bridge import PicowsUpgrade

__all__ = ["app", "configuration_markdown", "main"]

log = get_logger("callbridge.cli")
T = TypeVar("T")
app = typer.Typer(help="callbridge: Telnyx calls to browsers, live.", no_args_is_help=True)
simulate_app = typer.Typer(help="The Telnyx simulator.", no_args_is_help=True)
app.add_typer(simulate_app, name="simulate")
app.command("doctor")(doctor_command)
app.add_typer(nginx_app, name="nginx")
keys_app = typer.Typer(help="API keys for the REST API.", no_args_is_help=True)
app.add_typer(keys_app, name="keys")

# The cyclic collector's full (generation 2) passes walk every object: with 1,000 sockets open
# they stopped the loop for 74-176 ms, which is what a subscriber saw as p99 (docs/benchmarks.md).
# Collect the young generation less often (sockets, calls and events are long-lived, and the hot
# path frees what it allocates by reference counting), so full passes come rarely.
GC_THRESHOLDS = (50_000, 20, 100)
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
        ws=PicowsUpgrade,  # every upgrade goes on to picows (ws/picows_bridge.py)
        http="httptools",
        ws_ping_interval=(settings.ws_ping_interval or None) if ping else None,
        ws_ping_timeout=settings.ws_ping_timeout,
        ws_max_size=WS_MAX_SIZE,
        # No permessage-deflate: G.711/L16 audio does not compress, and each compressed
        # socket holds zlib state (tens of KB) and spends CPU on every frame.
        ws_per_message_deflate=False,
        log_config=None,
        access_log=False,
        proxy_headers=True,
        forwarded_allow_ips=settings.trusted_proxies,
        timeout_graceful_shutdown=GRACEFUL_SHUTDOWN_SECONDS,
        lifespan="on",
    )


async def _wait_started(server: uvicorn.Server, task: asyncio.Task[None]) -> None:
    while not server.started:
        if task.done():
            task.result()
            raise RuntimeError("server stopped during start-up")
        await asyncio.sleep(0.02)


def _raise_open_file_limit() -> int:
    """Every browser and media socket is a file descriptor: take all the system allows.

    The soft limit is often 1024, far below what idle browsers alone can need; the hard limit
    is the operator's decision (systemd: LimitNOFILE)."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard == resource.RLIM_INFINITY or soft < hard:
        target = hard if hard != resource.RLIM_INFINITY else max(soft, 1_048_576)
        with contextlib.suppress(ValueError, OSError):
            resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
    return resource.getrlimit(resource.RLIMIT_NOFILE)[0]


async def _serve(settings: Settings) -> None:
    from callbridge.app import create_app
    from callbridge.auth.policy import Security, is_loopback
    from callbridge.sim import Simulator, WebhookSigner

    open_files = _raise_open_file_limit()
    # Refuse an insecure configuration before anything (the simulator included) starts.
    Security.from_settings(settings, simulator=settings.simulator_mode)
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
        sim_config = _uvicorn_config(simulator.app, settings, ping=False)
        sim_server = Server(sim_config, signals=False)
        sim_task = asyncio.create_task(sim_server.serve(sockets=[sim_socket]))
        await _wait_started(sim_server, sim_task)
        log.info(
            "Simulator mode: no TELNYX_API_KEY, Telnyx is played by the built-in simulator",
            telnyx_base_url=base_url,
            sim_port=sim_port,
            webhook_public_key=signer.public_key_b64,
        )
    asgi = create_app(settings, simulator=simulator is not None)
    lifecycle = asgi.state.lifecycle
    server = Server(_uvicorn_config(asgi, settings), drain=lifecycle.drain)
    task = asyncio.create_task(server.serve(sockets=[main_socket]))
    try:
        await _wait_started(server, task)
        await lifecycle.serving()
        gc.set_threshold(*GC_THRESHOLDS)
        log.info(
            "callbridge ready",
            url=settings.effective_public_url,
            port=settings.port,
            simulator=simulator is not None,
            open_files=open_files,
        )
        demo_key = asgi.state.security.demo_key
        if demo_key:
            log.warning(
                "Demo API key (simulator mode; set CALLBRIDGE_API_KEYS for anything else)",
                api_key=demo_key,
                console=f"{settings.effective_public_url}/#key={demo_key}",
            )
            if not is_loopback(settings.host):
                log.warning(
                    "The demo key opens this service to anyone who can reach it: bind "
                    "CALLBRIDGE_HOST=127.0.0.1, or set CALLBRIDGE_API_KEYS",
                    host=settings.host,
                    port=settings.port,
                )
        await task
    finally:
        if sim_server is not None and sim_task is not None:
            sim_server.should_exit = True
            await sim_task
        if simulator is not None:
            await simulator.close()


def _run(coroutine: Coroutine[Any, Any, T]) -> T:
    try:
        import uvloop
    except ImportError:  # pragma: no cover - uvloop is a dependency on every supported OS
        return asyncio.run(coroutine)
    return uvloop.run(coroutine)


@app.command()
def serve(
    host: Annotated[str | None, typer.Option(help="Interface (CALLBRIDGE_HOST).")] = None,
    port: Annotated[int | None, typer.Option(help="Port (CALLBRIDGE_PORT).")] = None,
) -> None:
    """Run the service (with the built-in Telnyx simulator when no TELNYX_API_KEY is set)."""
    settings = _settings(host=host, port=port)
    configure_logging(settings.log_format, settings.log_level)
    from callbridge.app import ConfigurationError
    from callbridge.auth.policy import InsecureConfiguration

    try:
        _run(_serve(settings))
    except (ConfigurationError, InsecureConfiguration) as exc:
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


def _check_key_name(name: str) -> None:
    if not name or ":" in name or "," in name:
        Console(stderr=True).print("[red]--name must be non-empty without ':' or ','[/red]")
        raise typer.Exit(2)


@keys_app.command("new")
def keys_new(
    name: Annotated[str, typer.Option(help="Who uses the key (log lines name it).")],
) -> None:
    """Make an API key: the key goes to the client, the hash line to CALLBRIDGE_API_KEYS."""
    from callbridge.auth.keys import generate_key, key_entry

    _check_key_name(name)
    key = generate_key()
    typer.echo(f"API key (give it to the client; it is shown only once): {key}")
    typer.echo(f"Add to CALLBRIDGE_API_KEYS (comma-separated): {key_entry(name, key)}")


@keys_app.command("hash")
def keys_hash(
    key: Annotated[str, typer.Argument(help="An existing API key.")],
    name: Annotated[str, typer.Option(help="The entry's name.")] = "app",
) -> None:
    """Print the CALLBRIDGE_API_KEYS entry of an existing key."""
    from callbridge.auth.keys import PREFIX, key_entry

    _check_key_name(name)
    if not key.startswith(PREFIX):
        Console(stderr=True).print(f"[red]callbridge API keys start with {PREFIX}[/red]")
        raise typer.Exit(2)
    typer.echo(key_entry(name, key))


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


@contextlib.asynccontextmanager
async def _simulator_running(
    settings: Settings,
    *,
    host: str,
    port: int,
    public_url: str | None,
    webhook_url: str | None,
    api_key: str | None,
    seed: str | None,
    pace: float,
) -> AsyncIterator[tuple[Any, str, asyncio.Task[None]]]:
    """A standalone simulator, listening; yields it, its TELNYX_BASE_URL and its server task."""
    from callbridge.sim import Simulator, WebhookSigner

    signer = WebhookSigner.from_seed_b64(seed or _secret(settings.sim_signing_seed))
    simulator = Simulator(
        signer=signer, api_key=api_key, pace=pace, inbound_webhook_url=webhook_url
    )
    sock = _bind(host, port)
    server = Server(_uvicorn_config(simulator.app, settings, ping=False))
    task = asyncio.create_task(server.serve(sockets=[sock]))
    await _wait_started(server, task)
    actual = sock.getsockname()[1]
    base_url = f"{(public_url or f'http://{host}:{actual}').rstrip('/')}/v2"
    log.info(
        "simulator ready",
        port=actual,
        TELNYX_BASE_URL=base_url,
        TELNYX_PUBLIC_KEY=signer.public_key_b64,
        TELNYX_API_KEY=simulator.api_key,
    )
    try:
        yield simulator, base_url, task
    finally:
        server.should_exit = True
        await task
        await simulator.close()


def _secret(value: SecretStr | None) -> str | None:
    return value.get_secret_value() if value else None


SimHost = Annotated[str, typer.Option(help="Interface the simulator listens on.")]
SimPort = Annotated[int, typer.Option(help="Port the simulator listens on.")]
SimPublicUrl = Annotated[
    str | None,
    typer.Option(help="How the service reaches the simulator (default http://HOST:PORT)."),
]
SimApiKey = Annotated[
    str | None,
    typer.Option(
        "--telnyx-api-key",
        help="The Telnyx API key the simulator accepts: the service's TELNYX_API_KEY "
        "(default: a fresh one, printed).",
    ),
]
CallbridgeApiKey = Annotated[
    str | None,
    typer.Option(
        envvar="CALLBRIDGE_API_KEY",
        help="An API key of the callbridge (cbk_…): for its REST API, and to mint the browser "
        "tokens its sockets need.",
    ),
]
SimSeed = Annotated[
    str | None,
    typer.Option(help="Base64 Ed25519 seed of the webhook key (CALLBRIDGE_SIM_SIGNING_SEED)."),
]
SimPace = Annotated[float, typer.Option(help="Time scale of scenarios (1.0 = real time).")]


@simulate_app.callback(invoke_without_command=True)
def simulate(
    ctx: typer.Context,
    target: Annotated[
        str | None,
        typer.Option(help="Drive the callbridge at this URL through a smoke test, then exit."),
    ] = None,
    host: SimHost = "127.0.0.1",
    port: SimPort = 5007,
    public_url: SimPublicUrl = None,
    telnyx_api_key: SimApiKey = None,
    api_key: CallbridgeApiKey = None,
    seed: SimSeed = None,
    number: Annotated[str, typer.Option(help="Number to dial (a scenario).")] = "+15550100011",
    step_timeout: Annotated[float, typer.Option(help="Seconds each step may take.")] = 20.0,
) -> None:
    """The Telnyx simulator. With --target: play Telnyx for a deployed callbridge (configured with
    the TELNYX_* values printed at start) and run the runbook's checks through it."""
    if ctx.invoked_subcommand is not None:
        return
    if target is None:
        Console().print(ctx.get_help())
        raise typer.Exit(2)
    settings = _settings()
    configure_logging(settings.log_format, settings.log_level)
    from callbridge.sim.smoke import SMOKE_STEPS, run_smoke

    async def _drive() -> bool:
        async with _simulator_running(
            settings,
            host=host,
            port=port,
            public_url=public_url,
            webhook_url=None,
            api_key=telnyx_api_key,
            seed=seed,
            pace=1.0,
        ) as (simulator, base_url, _task):
            steps = await run_smoke(
                target,
                public_key=simulator.signer.public_key_b64,
                base_url=base_url,
                number=number,
                step_timeout=step_timeout,
                knows_call=lambda call_id: call_id in simulator.calls,
                api_key=api_key,
            )
        table = Table(title=f"callbridge smoke test against {target}")
        for column in ("step", "result", "seconds", "detail"):
            table.add_column(column)
        for step in steps:
            mark = "[green]pass[/green]" if step.ok else "[red]FAIL[/red]"
            table.add_row(step.name, mark, f"{step.seconds:.2f}", step.detail)
        Console().print(table)
        passed = len(steps) == SMOKE_STEPS and all(step.ok for step in steps)
        log.info("smoke test passed" if passed else "smoke test failed", steps=len(steps))
        return passed

    if not _run(_drive()):
        raise typer.Exit(1)


@simulate_app.command("load")
def simulate_load(
    target: Annotated[str, typer.Option(help="The callbridge to load.")] = "http://127.0.0.1:5006",
    sim: Annotated[
        str, typer.Option(help="Its Telnyx simulator (embedded: port 5007).")
    ] = "http://127.0.0.1:5007",
    calls: Annotated[int, typer.Option(min=1, help="Concurrent calls.")] = 10,
    listeners: Annotated[int, typer.Option(min=1, help="Listeners per call.")] = 1,
    duration: Annotated[float, typer.Option(min=0.1, help="Seconds of audio per call.")] = 10.0,
    workers: Annotated[int, typer.Option(min=1, help="Load-generator processes.")] = 2,
    warmup: Annotated[
        float, typer.Option(min=0, help="Seconds at the start left out of every figure.")
    ] = 0.0,
    server_pid: Annotated[
        int | None, typer.Option(help="The service's pid (default: whoever listens on --target).")
    ] = None,
    cpus: Annotated[
        str | None, typer.Option(help="Pin the load to these CPUs, e.g. '1' or '2,3'.")
    ] = None,
    api_key: CallbridgeApiKey = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print the result as JSON.")] = False,
) -> None:
    """N simulated calls with L listeners each: delivery, loss, latency and the server's CPU."""
    from urllib.parse import urlsplit

    from callbridge.sim.auth import AuthRefused
    from callbridge.sim.load import dial_calls, find_listening_pid, hang_up, run_load

    parts = urlsplit(target)
    pid = server_pid or find_listening_pid(parts.port or (443 if parts.scheme == "https" else 80))
    # Each listener's token outlives the run (the service caps it at CALLBRIDGE_TOKEN_MAX_TTL).
    ttl = min(86_400, max(600, int(warmup + duration) + 300))
    try:
        targets = asyncio.run(
            dial_calls(target, sim, calls, listeners=listeners, api_key=api_key, token_ttl=ttl)
        )
    except AuthRefused as exc:
        Console(stderr=True).print(f"[red]{exc}[/red]")
        raise typer.Exit(2) from None
    try:
        result = run_load(
            targets,
            listeners=listeners,
            duration=duration,
            workers=workers,
            server_pid=pid,
            cpus=[int(c) for c in cpus.split(",")] if cpus else None,
            warmup=warmup,
        )
    finally:
        asyncio.run(hang_up(target, targets, api_key))
    if as_json:
        sys.stdout.write(orjson.dumps(result.to_dict(), option=orjson.OPT_INDENT_2).decode() + "\n")
    else:
        table = Table(title=f"{calls} calls x {listeners} listeners, {duration:g} s")
        table.add_column("measure")
        table.add_column("value", justify="right")
        latency = result.latency_ms
        rows = [
            ("frames sent", f"{result.sent}"),
            ("send rate (target)", f"{result.send_rate:.0f}/s ({result.target_rate:.0f}/s)"),
            (
                "sender lag p50 / p99",
                " / ".join(f"{result.send_lag_ms[k]:.2f} ms" for k in ("p50", "p99")),
            ),
            ("frames delivered / expected", f"{result.delivered} / {result.expected}"),
            ("loss", f"{result.loss:.3%} (service dropped {result.dropped})"),
            ("latency p50 / p90 / p99 / max", " / ".join(f"{latency[k]:.2f} ms" for k in latency)),
            ("server CPU", _maybe(result.server_cpu_seconds, "{:.2f} s")),
            ("server CPU per delivered frame", _maybe(result.server_cpu_us_per_frame, "{:.1f} µs")),
            ("server RSS", _maybe(result.server_rss_mb, "{:.0f} MB")),
        ]
        for row in rows:
            table.add_row(*row)
        Console().print(table)
    for error in result.errors:
        Console(stderr=True).print(f"[red]{error}[/red]")
    if result.errors:
        raise typer.Exit(1)


def _maybe(value: float | None, template: str) -> str:
    return "unknown (no --server-pid)" if value is None else template.format(value)


@simulate_app.command("serve")
def simulate_serve(
    host: SimHost = "127.0.0.1",
    port: SimPort = 5007,
    public_url: SimPublicUrl = None,
    webhook_url: Annotated[str | None, typer.Option(help="Where inbound-call webhooks go.")] = None,
    telnyx_api_key: SimApiKey = None,
    seed: SimSeed = None,
    pace: SimPace = 1.0,
) -> None:
    """Run the Telnyx simulator alone; point a service's TELNYX_BASE_URL at it."""
    settings = _settings()
    configure_logging(settings.log_format, settings.log_level)

    async def _run_sim() -> None:
        async with _simulator_running(
            settings,
            host=host,
            port=port,
            public_url=public_url,
            webhook_url=webhook_url,
            api_key=telnyx_api_key,
            seed=seed,
            pace=pace,
        ) as (_simulator, _base_url, task):
            await asyncio.shield(task)

    _run(_run_sim())


def main() -> None:
    app()


if __name__ == "__main__":  # pragma: no cover
    main()
