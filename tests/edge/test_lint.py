"""`callbridge nginx lint`: the old runbook's file and its mistakes (checked against real
`nginx -t` where nginx has an opinion), nothing on what the renderer writes, and each check on
a small configuration of its own."""

from __future__ import annotations

import dataclasses
import os
from pathlib import Path
from typing import Any

import orjson
import pytest
from typer.testing import CliRunner

from callbridge.cli import app
from callbridge.edge.lint import (
    Finding,
    NginxSyntaxError,
    Severity,
    lint_file,
    lint_files,
    lint_text,
    parse,
    parse_time,
    tokenize,
)
from callbridge.edge.nginx import HTTP_FILE, SERVER_FILE, Deployment, render, render_single_file
from tests.edge.nginxproc import NginxProcess, http_paths, main_context

FIXTURES = Path(__file__).parent / "fixtures"
RUNBOOK = FIXTURES / "runbook-nginx.conf"  # the old runbook's server block, verbatim
REPO = Path(__file__).resolve().parents[2]


def found(findings: list[Finding]) -> list[tuple[int, str, str]]:
    return [(f.line, str(f.severity), f.code) for f in findings]


def including(prefix: Path, site: Path) -> str:
    """A test nginx.conf whose http {} includes `site`, as Debian's includes sites-enabled/."""
    return main_context(prefix) + "http {\n" + http_paths(prefix) + f"include {site};\n}}\n"


# --- the runbook's file ---------------------------------------------------------------------


def test_the_runbook_file_has_its_errors_found_with_their_lines() -> None:
    findings = lint_files([RUNBOOK], ping_interval=20)
    assert found(findings) == [
        (10, "error", "map-context"),  # map inside server {}: nginx -t fails
        (10, "warning", "generic-map-name"),
        (10, "warning", "upgrade-map"),  # default upgrade; '' close;
        (17, "info", "proxy-pass-localhost"),
        (20, "warning", "generic-map-name"),
        (27, "info", "timeout-huge"),  # 86400 on /api/
        (28, "info", "timeout-huge"),
        (33, "info", "proxy-pass-localhost"),
        (36, "info", "connection-hardcoded"),  # Connection "upgrade" on /call-events
        (43, "info", "timeout-huge"),
        (44, "info", "timeout-huge"),
        (48, "info", "proxy-buffering-off"),
        (53, "info", "proxy-pass-localhost"),
        (56, "info", "connection-hardcoded"),
        (63, "info", "timeout-huge"),
        (64, "info", "timeout-huge"),
        (68, "info", "proxy-buffering-off"),
        (73, "info", "proxy-pass-localhost"),
        (76, "info", "connection-hardcoded"),
        (83, "info", "timeout-huge"),
        (84, "info", "timeout-huge"),
        (88, "info", "proxy-buffering-off"),
    ]
    assert {f.file for f in findings} == {str(RUNBOOK)}
    first = findings[0]
    assert first.message.startswith('"map" directive is not allowed here')
    assert "conf.d" in first.fix


def test_nginx_t_rejects_the_runbook_file_at_the_line_lint_names(tmp_path: Path) -> None:
    checked = NginxProcess(tmp_path, including(tmp_path, RUNBOOK)).test()
    assert checked.returncode == 1
    assert f'"map" directive is not allowed here in {RUNBOOK}:10' in checked.stderr
    [error] = [f for f in lint_files([tmp_path / "nginx.conf"], ping_interval=20)
               if f.severity is Severity.ERROR]  # fmt: skip
    assert (error.file, error.line, error.code) == (str(RUNBOOK), 10, "map-context")


def test_map_inside_a_location_is_found_where_nginx_finds_it(tmp_path: Path) -> None:
    site = tmp_path / "site.conf"
    site.write_text(
        "server {\n"
        "    listen 127.0.0.1:8080;\n"
        "    location / {\n"
        '        map $http_upgrade $x_connection { default ""; websocket upgrade; }\n'
        "        return 204;\n"
        "    }\n"
        "}\n"
    )
    checked = NginxProcess(tmp_path, including(tmp_path, site)).test()
    assert f'"map" directive is not allowed here in {site}:4' in checked.stderr
    assert found(lint_files([site], ping_interval=20)) == [(4, "error", "map-context")]


# --- what the renderer writes ------------------------------------------------------------------


@pytest.mark.parametrize(
    "changes",
    [
        {},
        {"upstreams": ("127.0.0.1:5006", "127.0.0.1:5016"), "metrics_allow": ("10.0.0.0/8",)},
        {"nginx_version": (1, 26, 0), "openssl_version": (3, 5, 0)},
        {"ping_interval": 45.0},
        {"ping_interval": 0.5, "proxy_timeout_override": 2.0},
        {"http_only": True},
    ],
)
def test_the_rendered_configuration_has_no_findings(
    tmp_path: Path, changes: dict[str, Any]
) -> None:
    deployment = dataclasses.replace(
        Deployment(server_names=("calls.example.com",), certificate="/c", certificate_key="/k"),
        **changes,
    )
    for name, text in render(deployment).files().items():
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_text(text)
    split = [tmp_path / HTTP_FILE, tmp_path / SERVER_FILE]
    assert lint_files(split, ping_interval=deployment.ping_interval) == []
    single = tmp_path / "nginx.conf"
    single.write_text(render_single_file(deployment, tmp_path))
    assert lint_files([single], ping_interval=deployment.ping_interval) == []


def test_the_committed_example_has_no_findings() -> None:
    files = [REPO / "deploy" / "nginx" / HTTP_FILE, REPO / "deploy" / "nginx" / SERVER_FILE]
    assert lint_files(files, ping_interval=20) == []


# --- each check -----------------------------------------------------------------------------


def server(*locations: str, server_level: str = "") -> str:
    return (
        "server {\n    listen 443 ssl;\n"
        + server_level
        + "".join(f"    location {location}\n" for location in locations)
        + "}\n"
    )


GOOD_HEADERS = (
    "proxy_http_version 1.1; proxy_set_header Upgrade $callbridge_upgrade; "
    "proxy_set_header Connection $callbridge_connection;"
)


def test_a_catch_all_location_that_drops_the_websocket_headers_is_an_error() -> None:
    """The old service's failure: WebSocket paths reach a plain proxy location."""
    text = server("/ { proxy_pass http://127.0.0.1:5006; }")
    findings = lint_text(text, ping_interval=20)
    assert found(findings) == [
        (3, "error", "ws-connection-header"),
        (3, "error", "ws-http-version"),
        (3, "error", "ws-upgrade-header"),
    ]
    assert "505" in findings[1].message


def test_a_websocket_path_served_by_something_else_than_callbridge() -> None:
    text = server(
        "/call-events { proxy_pass http://callbridge_backend; " + GOOD_HEADERS + " }",
        "/ { root /var/www/html; }",
    )
    findings = lint_text(text, ping_interval=20)
    assert found(findings) == [
        (4, "error", "ws-not-proxied"),  # /audio-stream
        (4, "error", "ws-not-proxied"),  # /frontend-audio
    ]
    assert {f.message.split()[0] for f in findings} == {"/audio-stream", "/frontend-audio"}
    # Nothing to say about a server that has nothing to do with callbridge.
    assert lint_text(server("/ { proxy_pass http://127.0.0.1:9000; }"), ping_interval=20) == []


def test_routing_follows_nginx_exact_prefix_and_regex_rules() -> None:
    text = server(
        "= /call-events { proxy_pass http://callbridge_backend; " + GOOD_HEADERS + " }",
        "^~ /audio-stream { proxy_pass http://callbridge_backend; " + GOOD_HEADERS + " }",
        "~ ^/(audio-stream|frontend-audio)$ { return 404; }",  # never reached by /audio-stream
        "/ { proxy_pass http://callbridge_backend; " + GOOD_HEADERS + " }",
    )
    findings = lint_text(text, ping_interval=20)
    assert found(findings) == [(5, "error", "ws-not-proxied")]  # the regex takes /frontend-audio
    assert findings[0].message.startswith("/frontend-audio is not proxied")


@pytest.mark.parametrize(
    ("timeout", "ping", "expected"),
    [
        ("", 20.0, []),  # nginx's 60 s is three pings
        ("", 45.0, [(3, "warning", "timeout-margin")] * 2),
        ("", 60.0, [(3, "error", "timeout-below-ping")] * 2),
        ("proxy_read_timeout 10s; ", 20.0, [(3, "error", "timeout-below-ping")]),
        ("proxy_read_timeout 1m30s; proxy_send_timeout 90; ", 20.0, []),
        ("proxy_read_timeout 2h; ", 20.0, [(3, "info", "timeout-huge")]),
        ("", 0.0, [(3, "warning", "pings-disabled")]),
    ],
)
def test_timeouts_against_the_ping_interval(
    timeout: str, ping: float, expected: list[tuple[int, str, str]]
) -> None:
    text = server("/call-events { proxy_pass http://127.0.0.1:5006; " + GOOD_HEADERS + " "
                  + timeout + "}")  # fmt: skip
    findings = [f for f in lint_text(text, ping_interval=ping) if f.code != "ws-not-proxied"]
    assert found(findings) == expected


def test_a_timeout_set_at_server_level_is_inherited() -> None:
    text = server(
        "/call-events { proxy_pass http://127.0.0.1:5006; " + GOOD_HEADERS + " }",
        server_level="    proxy_read_timeout 15s;\n",
    )
    findings = [f for f in lint_text(text, ping_interval=20) if f.code != "ws-not-proxied"]
    assert found(findings) == [(3, "error", "timeout-below-ping")]  # the server-level line


def test_a_location_of_its_own_headers_drops_the_inherited_ones() -> None:
    text = server(
        "/call-events { proxy_pass http://127.0.0.1:5006; " + GOOD_HEADERS + " }",
        server_level=(
            "    proxy_set_header Host $host;\n    proxy_set_header X-Forwarded-Proto $scheme;\n"
        ),
    )
    findings = [f for f in lint_text(text, ping_interval=20) if f.code != "ws-not-proxied"]
    assert found(findings) == [(5, "warning", "headers-dropped")]
    assert "Host, X-Forwarded-Proto" in findings[0].message


def test_hard_coded_connection_upgrade_on_a_plain_location_is_a_warning() -> None:
    text = server(
        "/ { proxy_pass http://callbridge_backend; proxy_http_version 1.1; "
        'proxy_set_header Upgrade $http_upgrade; proxy_set_header Connection "upgrade"; }'
    )
    assert found(lint_text(text, ping_interval=20)) == [(3, "warning", "connection-hardcoded")]


def test_websocket_locations_small_things() -> None:
    text = server(
        "/frontend-audio { proxy_pass http://127.0.0.1:5006/frontend-audio; proxy_buffering off; "
        + GOOD_HEADERS + " }"
    )  # fmt: skip
    findings = [f for f in lint_text(text, ping_interval=20) if f.code != "ws-not-proxied"]
    assert found(findings) == [
        (3, "info", "proxy-buffering-off"),
        (3, "info", "proxy-pass-uri"),
    ]


def test_includes_are_followed_relative_to_the_configuration_directory(tmp_path: Path) -> None:
    (tmp_path / "conf.d").mkdir()
    (tmp_path / "sites-enabled").mkdir()
    (tmp_path / "nginx.conf").write_text(
        "events {}\nhttp {\n    include conf.d/*.conf;\n    include sites-enabled/*;\n"
        "    include snippets/missing.conf;\n}\n"
    )
    (tmp_path / "conf.d" / "upgrade.conf").write_text(
        "map $http_upgrade $connection_upgrade {\n    default upgrade;\n    '' close;\n}\n"
    )
    (tmp_path / "sites-enabled" / "calls").write_text(RUNBOOK.read_text())
    findings = lint_file(tmp_path / "nginx.conf", ping_interval=20, backend_ports=(5006,))
    by_file = {(Path(f.file).name, f.line, f.code) for f in findings}
    assert ("upgrade.conf", 1, "generic-map-name") in by_file
    assert ("upgrade.conf", 1, "upgrade-map") in by_file
    assert ("calls", 10, "map-context") in by_file
    assert ("nginx.conf", 5, "include-missing") in by_file


def test_a_syntax_error_is_reported_with_its_line(tmp_path: Path) -> None:
    broken = tmp_path / "broken.conf"
    broken.write_text("server {\n    listen 80\n    location / { return 204; }\n")
    [finding] = lint_files([broken], ping_interval=20)
    assert (finding.line, finding.severity, finding.code) == (4, Severity.ERROR, "syntax")
    with pytest.raises(NginxSyntaxError, match='unexpected "}"'):
        parse("location / { return 204; }}\n")


def test_the_tokenizer_reads_nginx_syntax() -> None:
    text = (
        "log_format x '$a \"b\" # not a comment';  # a comment\n"
        'map $http_upgrade $y { "~*^websocket$" upgrade; \'\' ""; }\n'
        "set $z ${y}suffix;\nreturn 200 a\\;b#c;\n"
    )
    assert [token for token, _, _ in tokenize(text)] == [
        "log_format", "x", "$a \"b\" # not a comment", ";",
        "map", "$http_upgrade", "$y", "{", "~*^websocket$", "upgrade", ";", "", "", ";", "}",
        "set", "$z", "${y}suffix", ";",
        "return", "200", "a\\;b#c", ";",  # nginx keeps a backslash it does not know
    ]  # fmt: skip
    assert [line for _, line, _ in tokenize(text)][-1] == 4
    assert parse_time("75s") == 75
    assert parse_time("1m30s") == 90
    assert parse_time("500ms") == 0.5
    assert parse_time("86400") == 86400
    assert parse_time("$timeout") is None


# --- the command ------------------------------------------------------------------------------


def _cli(args: list[str]) -> Any:
    cleared = {name: None for name in os.environ if name.startswith(("CALLBRIDGE_", "TELNYX_"))}
    return CliRunner(env=cleared).invoke(app, args)


def test_the_lint_command(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    table = _cli(["nginx", "lint", str(RUNBOOK)])
    assert table.exit_code == 1
    assert '"map" directive is not allowed here' in table.output
    assert "1 error, 3 warning, 18 info" in table.output

    as_json = _cli(["nginx", "lint", "--json", "--ping-interval", "90", str(RUNBOOK)])
    assert as_json.exit_code == 1
    document = orjson.loads(as_json.output)
    assert document["ping_interval"] == 90
    first = document["findings"][0]
    assert (first["line"], first["severity"], first["code"]) == (10, "error", "map-context")
    below = [f for f in document["findings"] if f["code"] == "timeout-below-ping"]
    assert not below  # 86400 s is above 90 s; 60 s would not be

    example = [str(REPO / "deploy" / "nginx" / name) for name in (HTTP_FILE, SERVER_FILE)]
    clean = _cli(["nginx", "lint", *example])
    assert clean.exit_code == 0, clean.output
    assert "no findings" in clean.output
    assert _cli(["nginx", "lint", str(tmp_path / "absent.conf")]).exit_code == 2
