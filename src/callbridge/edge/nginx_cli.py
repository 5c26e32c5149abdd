"""`callbridge nginx render` and `callbridge nginx lint`: the command-line side of edge/."""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Annotated

import orjson
import typer
from pydantic import ValidationError
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from callbridge.config import Settings
from callbridge.edge.lint import Finding, Severity, lint_files
from callbridge.edge.nginx import (
    DEFAULT_NGINX,
    SERVER_FILE,
    CheckResult,
    Deployment,
    check_in_place,
    check_in_scratch_prefix,
    detect_nginx,
    format_version,
    parse_version,
    render,
    render_single_file,
)

__all__ = ["nginx_app"]

nginx_app = typer.Typer(
    help="The nginx configuration in front of callbridge: render it, lint one.",
    no_args_is_help=True,
)
err = Console(stderr=True)


def _settings() -> Settings:
    try:
        return Settings()
    except ValidationError as exc:
        err.print(f"[red]Invalid settings:[/red]\n{exc}")
        raise typer.Exit(2) from None


def _version(text: str | None, option: str) -> tuple[int, int, int] | None:
    if text is None:
        return None
    try:
        return parse_version(text)
    except ValueError:
        err.print(f"[red]{option}: not a version: {text!r}[/red]")
        raise typer.Exit(2) from None


def _show_failure(result: CheckResult) -> None:
    err.print(f"[red]nginx -t failed[/red] ({result.what}):")
    err.print(escape(result.output.strip()), highlight=False)


@nginx_app.command("render")
def render_command(
    server_name: Annotated[
        list[str], typer.Option(help="A public name of the service (repeat for more).")
    ],
    cert: Annotated[
        str | None,
        typer.Option(help="Certificate chain (default /etc/letsencrypt/live/NAME/fullchain.pem)."),
    ] = None,
    key: Annotated[
        str | None,
        typer.Option(help="Its private key (default /etc/letsencrypt/live/NAME/privkey.pem)."),
    ] = None,
    upstream: Annotated[
        list[str] | None,
        typer.Option(help="A callbridge instance, host:port (default 127.0.0.1:CALLBRIDGE_PORT)."),
    ] = None,
    metrics_allow: Annotated[
        list[str] | None,
        typer.Option(help="Also let this address or CIDR read /metrics (repeatable)."),
    ] = None,
    acme_root: Annotated[
        str | None, typer.Option(help="Webroot of certbot's challenges (/var/www/letsencrypt).")
    ] = None,
    listen_https: Annotated[
        list[str] | None, typer.Option(help="https listen address (default 443 and [::]:443).")
    ] = None,
    listen_http: Annotated[
        list[str] | None, typer.Option(help="Plain-HTTP listen address (default 80 and [::]:80).")
    ] = None,
    ping_interval: Annotated[
        float | None,
        typer.Option(help="The service's ping interval (CALLBRIDGE_WS_PING_INTERVAL)."),
    ] = None,
    proxy_timeout: Annotated[
        float | None,
        typer.Option(help="proxy_read/send_timeout in s (default max(75, 3 x ping interval))."),
    ] = None,
    nginx_version: Annotated[
        str | None, typer.Option(help="Render for this nginx (default: ask `nginx -V`).")
    ] = None,
    openssl_version: Annotated[
        str | None,
        typer.Option(help="OpenSSL nginx runs with (default: ask `nginx -V`, `openssl version`)."),
    ] = None,
    http_only: Annotated[
        bool, typer.Option(help="Only the port-80 server: to get the first certificate.")
    ] = False,
    out_dir: Annotated[
        Path | None,
        typer.Option(help="Write conf.d/callbridge.conf and sites-available/callbridge.conf here."),
    ] = None,
    single_file: Annotated[
        Path | None,
        typer.Option(help="Write the single-file form (for nginx -p PREFIX -c FILE) instead."),
    ] = None,
    prefix: Annotated[
        Path | None,
        typer.Option(
            help="Prefix of the single-file form: pid, logs, temp files (default: its dir)."
        ),
    ] = None,
    check: Annotated[
        bool, typer.Option(help="Run nginx -t on the result; write nothing if it fails.")
    ] = False,
) -> None:
    """Render the nginx configuration: maps and upstream (conf.d/), servers (sites-available/).

    Without --out-dir or --single-file, both files are printed."""
    if out_dir is not None and single_file is not None:
        err.print("[red]--out-dir and --single-file exclude each other[/red]")
        raise typer.Exit(2)
    settings = _settings()
    wanted_nginx = _version(nginx_version, "--nginx-version")
    wanted_openssl = _version(openssl_version, "--openssl-version")
    build = detect_nginx() if wanted_nginx is None or wanted_openssl is None else None
    if wanted_nginx is None:
        wanted_nginx = build.version if build is not None else None
        if wanted_nginx is None:
            wanted_nginx = DEFAULT_NGINX
            err.print(
                "nginx not found: rendering for nginx "
                f"{format_version(DEFAULT_NGINX)} (--nginx-version to choose)."
            )
    if wanted_openssl is None and build is not None:
        wanted_openssl = build.openssl
    try:
        deployment = Deployment.from_settings(
            settings,
            server_name,
            certificate=cert,
            certificate_key=key,
            upstreams=tuple(upstream) if upstream else None,
            metrics_allow=tuple(metrics_allow) if metrics_allow else None,
            acme_root=acme_root,
            https_listen=tuple(listen_https) if listen_https else None,
            http_listen=tuple(listen_http) if listen_http else None,
            ping_interval=ping_interval,
            proxy_timeout_override=proxy_timeout,
            nginx_version=wanted_nginx,
            openssl_version=wanted_openssl,
            http_only=http_only or None,
        )
    except ValueError as exc:
        err.print(f"[red]{escape(str(exc))}[/red]")
        raise typer.Exit(2) from None

    if check:
        result = check_in_scratch_prefix(deployment)
        if not result.ok:
            _show_failure(result)
            raise typer.Exit(1)
        err.print(f"nginx -t: the configuration is valid ({result.what}).")

    if single_file is not None:
        scratch = prefix or single_file.parent.resolve()
        try:
            text = render_single_file(deployment, scratch)
        except ValueError as exc:
            err.print(f"[red]--prefix: {escape(str(exc))}[/red]")
            raise typer.Exit(2) from None
        single_file.parent.mkdir(parents=True, exist_ok=True)
        single_file.write_text(text)
        err.print(f"Wrote {single_file}; try it: nginx -p {scratch} -c {single_file.resolve()}")
        return
    rendered = render(deployment).files()
    if out_dir is None:
        for name, text in rendered.items():
            sys.stdout.write(f"# ==> {name} <==\n{text}\n")
        return
    previous: dict[Path, str | None] = {}
    for name, text in rendered.items():
        path = out_dir / name
        previous[path] = path.read_text() if path.exists() else None
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
        err.print(f"Wrote {path}")
    if check and os.geteuid() == 0 and (out_dir / "nginx.conf").exists():
        result = check_in_place(out_dir / "nginx.conf")
        if not result.ok:
            for path, before in previous.items():
                if before is None:
                    path.unlink()
                else:
                    path.write_text(before)
            _show_failure(result)
            err.print("[red]The files written were put back as they were.[/red]")
            raise typer.Exit(1)
        err.print(f"nginx -t: {out_dir / 'nginx.conf'} with these files is valid.")
    enabled = out_dir / "sites-enabled"
    if not enabled.is_dir():
        err.print(
            "To install: copy them to the same paths under /etc/nginx/, link "
            f"{SERVER_FILE} from sites-enabled/, then nginx -t && systemctl reload nginx."
        )
        return
    link = enabled / Path(SERVER_FILE).name
    err.print(
        "Next: "
        + ("" if link.exists() else f"ln -s {(out_dir / SERVER_FILE).resolve()} {link}; ")
        + "nginx -t && systemctl reload nginx"
    )


_STYLE = {Severity.ERROR: "red", Severity.WARNING: "yellow", Severity.INFO: "cyan"}


@nginx_app.command("lint")
def lint_command(
    files: Annotated[
        list[Path],
        typer.Argument(
            exists=True, dir_okay=False, help="nginx.conf, or conf.d/ and sites-available/ files."
        ),
    ],
    ping_interval: Annotated[
        float | None,
        typer.Option(help="The service's ping interval (default CALLBRIDGE_WS_PING_INTERVAL)."),
    ] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print the findings as JSON.")] = False,
) -> None:
    """Check an nginx configuration, with what it includes, for what breaks WebSockets.

    Exits 1 if any finding is an error."""
    settings = _settings()
    ping = settings.ws_ping_interval if ping_interval is None else ping_interval
    findings = lint_files(files, ping_interval=ping, backend_ports=(settings.port,))
    if as_json:
        document = {"ping_interval": ping, "findings": [f.to_dict() for f in findings]}
        sys.stdout.write(orjson.dumps(document, option=orjson.OPT_INDENT_2).decode() + "\n")
    else:
        _print_findings(findings, files, ping)
    if any(finding.severity is Severity.ERROR for finding in findings):
        raise typer.Exit(1)


def _print_findings(findings: list[Finding], files: list[Path], ping: float) -> None:
    """One table per file, so that the text of each finding gets the terminal's width."""
    console = Console()
    if not findings:
        names = ", ".join(str(f) for f in files)
        console.print(f"{escape(names)}: no findings (ping interval {ping:g} s).")
        return
    by_file: dict[str, list[Finding]] = {}
    for finding in findings:
        by_file.setdefault(finding.file, []).append(finding)
    for file, found in by_file.items():
        table = Table(title=f"{escape(file)} (ping interval {ping:g} s)", title_justify="left")
        table.add_column("line", justify="right", style="cyan")
        table.add_column("severity")
        table.add_column("finding, and the fix")
        for finding in found:
            style = _STYLE[finding.severity]
            table.add_row(
                str(finding.line),
                f"[{style}]{finding.severity}[/{style}]",
                f"{escape(finding.message)}\n[dim]fix: {escape(finding.fix)}[/dim]",
            )
        console.print(table)
    counts = dict.fromkeys(Severity, 0)
    for finding in findings:
        counts[finding.severity] += 1
    console.print(", ".join(f"{count} {severity}" for severity, count in counts.items()))
