"""Lint an nginx configuration for the mistakes that break callbridge's WebSockets.

`nginx -t` is the authority on syntax, but it accepts most of what breaks WebSockets: missing
`Upgrade`/`Connection` headers, an HTTP/1.0 upstream, a read timeout shorter than the service's
ping interval, a location whose own `proxy_set_header` silently drops the inherited ones. General
linters (gixy) check none of these. This module reads the files itself (a small tokenizer for
nginx's syntax: blocks, directives, quotes, comments; `include` followed where it can be read),
works out which location nginx would pick for each WebSocket path, and reports each problem with
its file, line, severity and the fix.
"""

from __future__ import annotations

import enum
import glob
import math
import re
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from callbridge.config import Settings
from callbridge.edge.nginx import WEBSOCKET_PATHS

__all__ = [
    "Directive",
    "Finding",
    "NginxSyntaxError",
    "Severity",
    "lint_file",
    "lint_files",
    "lint_text",
    "parse",
    "parse_time",
    "tokenize",
]

NGINX_DEFAULT_TIMEOUT = 60.0
HUGE_TIMEOUT = 3600.0
MAX_INCLUDE_DEPTH = 16
# Directives nginx accepts only in the http (or stream) context, never in server or location.
HTTP_LEVEL_ONLY = frozenset(
    {
        "map",
        "upstream",
        "log_format",
        "limit_req_zone",
        "limit_conn_zone",
        "proxy_cache_path",
        "geo",
        "split_clients",
    }
)
# Blocks whose contents are not directives (map entries, upstream servers, MIME types, Lua...).
OPAQUE_BLOCKS = frozenset(
    {"map", "upstream", "types", "geo", "split_clients", "charset_map", "match"}
)
FORWARDING_HEADERS = ("host", "x-real-ip", "x-forwarded-for", "x-forwarded-proto")
_CONNECTION_UPGRADE = re.compile(r"\$\{?connection_upgrade(?![A-Za-z0-9_])")


class Severity(enum.StrEnum):
    ERROR = "error"  # WebSockets (or nginx -t) fail
    WARNING = "warning"  # works, but fragile or with side effects
    INFO = "info"  # harmless noise, or a better way


_ORDER = {Severity.ERROR: 0, Severity.WARNING: 1, Severity.INFO: 2}


@dataclass(frozen=True)
class Finding:
    file: str
    line: int
    severity: Severity
    code: str  # stable identifier, e.g. "map-context"
    message: str
    fix: str

    @property
    def where(self) -> str:
        return f"{self.file}:{self.line}"

    def to_dict(self) -> dict[str, str | int]:
        return {
            "file": self.file,
            "line": self.line,
            "severity": str(self.severity),
            "code": self.code,
            "message": self.message,
            "fix": self.fix,
        }


@dataclass
class Directive:
    name: str
    args: list[str]
    file: str
    line: int
    block: list[Directive] | None = None


class NginxSyntaxError(ValueError):
    def __init__(self, message: str, file: str, line: int) -> None:
        super().__init__(f"{message} in {file}:{line}")
        self.message = message
        self.file = file
        self.line = line


# --- reading -------------------------------------------------------------------------------

_ESCAPES = {'"': '"', "'": "'", "\\": "\\", "t": "\t", "r": "\r", "n": "\n"}


def _unescape(raw: str) -> str:
    """nginx drops the backslash of \\" \\' \\\\ and translates \\t \\r \\n; others stay."""
    out: list[str] = []
    index = 0
    while index < len(raw):
        char = raw[index]
        if char == "\\" and index + 1 < len(raw) and raw[index + 1] in _ESCAPES:
            out.append(_ESCAPES[raw[index + 1]])
            index += 2
            continue
        out.append(char)
        index += 1
    return "".join(out)


def tokenize(text: str, file: str = "<text>") -> Iterator[tuple[str, int, bool]]:
    """(token, line, quoted). `;`, `{` and `}` come out as tokens of their own (unquoted)."""
    index, line, length = 0, 1, len(text)
    while index < length:
        char = text[index]
        if char == "\n":
            line += 1
            index += 1
        elif char.isspace():
            index += 1
        elif char == "#":
            while index < length and text[index] != "\n":
                index += 1
        elif char in ";{}":
            yield char, line, False
            index += 1
        elif char in "\"'":
            start_line, index = line, index + 1
            raw: list[str] = []
            while True:
                if index >= length:
                    raise NginxSyntaxError("unexpected end of file in a quoted string", file, line)
                current = text[index]
                if current == "\\" and index + 1 < length:
                    raw.append(text[index : index + 2])
                    line += text[index + 1] == "\n"
                    index += 2
                    continue
                if current == char:
                    index += 1
                    break
                line += current == "\n"
                raw.append(current)
                index += 1
            yield _unescape("".join(raw)), start_line, True
        else:
            start = index
            while index < length:
                current = text[index]
                if current == "\\" and index + 1 < length:
                    index += 2
                    continue
                if current == "$" and index + 1 < length and text[index + 1] == "{":
                    closing = text.find("}", index)
                    index = length if closing < 0 else closing + 1
                    continue
                if current.isspace() or current in ";{}\"'":
                    break
                index += 1
            yield _unescape(text[start:index]), line, False


def parse(text: str, file: str = "<text>") -> list[Directive]:
    """The directive tree of one file (includes are left as `include` directives)."""
    tokens = tokenize(text, file)
    stack: list[list[Directive]] = [[]]
    words: list[tuple[str, int]] = []
    for item, line, quoted in tokens:
        if not quoted and item == ";":
            if not words:
                raise NginxSyntaxError('unexpected ";"', file, line)
            stack[-1].append(Directive(words[0][0], [w for w, _ in words[1:]], file, words[0][1]))
            words = []
        elif not quoted and item == "{":
            if not words:
                raise NginxSyntaxError('unexpected "{"', file, line)
            block: list[Directive] = []
            stack[-1].append(
                Directive(words[0][0], [w for w, _ in words[1:]], file, words[0][1], block)
            )
            stack.append(block)
            words = []
        elif not quoted and item == "}":
            if words or len(stack) == 1:
                raise NginxSyntaxError('unexpected "}"', file, line)
            stack.pop()
        else:
            words.append((item, line))
    last_line = text.count("\n") + 1
    if words:
        raise NginxSyntaxError('unexpected end of file, expecting ";" or "}"', file, last_line)
    if len(stack) > 1:
        raise NginxSyntaxError('unexpected end of file, expecting "}"', file, last_line)
    return stack[0]


@dataclass
class _Loader:
    """Reads files and splices their includes in place, noting what it could not read."""

    bases: list[Path]
    findings: list[Finding] = field(default_factory=list)

    def load(self, path: Path, depth: int = 0, chain: tuple[Path, ...] = ()) -> list[Directive]:
        try:
            text = path.read_text(encoding="utf-8", errors="replace")
        except OSError as exc:
            self.findings.append(
                Finding(
                    str(path),
                    0,
                    Severity.INFO,
                    "unreadable",
                    f"cannot read it: {exc.strerror}; not checked",
                    "run the lint as a user who can read it",
                )
            )
            return []
        try:
            directives = parse(text, str(path))
        except NginxSyntaxError as exc:
            self.findings.append(
                Finding(
                    exc.file,
                    exc.line,
                    Severity.ERROR,
                    "syntax",
                    exc.message,
                    "fix the syntax; `nginx -t` shows the same error",
                )
            )
            return []
        return self._expand(directives, depth, (*chain, path.resolve()))

    def _expand(
        self, directives: list[Directive], depth: int, chain: tuple[Path, ...]
    ) -> list[Directive]:
        out: list[Directive] = []
        for directive in directives:
            if directive.name == "include" and directive.block is None and directive.args:
                out.extend(self._include(directive, depth, chain))
                continue
            if directive.block is not None and directive.name not in OPAQUE_BLOCKS:
                directive.block = self._expand(directive.block, depth, chain)
            out.append(directive)
        return out

    def _include(
        self, directive: Directive, depth: int, chain: tuple[Path, ...]
    ) -> list[Directive]:
        pattern = directive.args[0]
        matches: list[str] = []
        candidates = (
            [Path(pattern)]
            if Path(pattern).is_absolute()
            else [base / pattern for base in self.bases]
        )
        for candidate in candidates:
            matches = sorted(glob.glob(str(candidate)))
            if matches:
                break
        if not matches and not glob.has_magic(pattern):
            self.findings.append(
                Finding(
                    directive.file,
                    directive.line,
                    Severity.INFO,
                    "include-missing",
                    f"include {pattern} not found (relative paths are tried from "
                    f"{', '.join(str(b) for b in self.bases)}); not checked",
                    "lint the file that nginx loads first (usually /etc/nginx/nginx.conf)",
                )
            )
        out: list[Directive] = []
        for match in matches:
            path = Path(match)
            if depth >= MAX_INCLUDE_DEPTH or path.resolve() in chain or path.is_dir():
                continue
            out.extend(self.load(path, depth + 1, chain))
        return out


# --- what nginx would do -------------------------------------------------------------------

_TIME_UNITS = {
    "ms": 0.001,
    "s": 1,
    "m": 60,
    "h": 3600,
    "d": 86400,
    "w": 604800,
    "M": 2592000,
    "y": 31536000,
}
_TIME = re.compile(r"(\d+)(ms|s|m|h|d|w|M|y)?")


def parse_time(value: str) -> float | None:
    """An nginx time (`75s`, `86400`, `1m30s`, `500ms`) in seconds; None if it is not one."""
    if not value or _TIME.sub("", value.replace(" ", "")):
        return None
    return sum(int(n) * _TIME_UNITS[unit or "s"] for n, unit in _TIME.findall(value))


@dataclass
class _Location:
    node: Directive
    chain: list[list[Directive]]  # http level, server, enclosing locations, this one
    modifier: str  # "", "=", "~", "~*", "^~", "@"
    pattern: str
    children: list[_Location] = field(default_factory=list)

    @property
    def own(self) -> list[Directive]:
        return self.chain[-1]

    def direct(self, name: str) -> list[Directive]:
        return [d for d in self.own if d.name == name]

    def effective(self, name: str, levels: int | None = None) -> list[Directive]:
        """The directives nginx applies here: the innermost level that sets `name` wins."""
        chain = self.chain if levels is None else self.chain[:levels]
        for level in reversed(chain):
            found = [d for d in level if d.name == name]
            if found:
                return found
        return []

    @property
    def proxy_pass(self) -> str | None:
        found = self.direct("proxy_pass")
        return found[-1].args[0] if found and found[-1].args else None

    @property
    def names_websocket_path(self) -> bool:
        return any(path.lstrip("/") in self.pattern for path in WEBSOCKET_PATHS)

    def matches(self, path: str) -> bool:
        if self.modifier in ("~", "~*"):
            try:
                flags = re.IGNORECASE if self.modifier == "~*" else 0
                return re.search(self.pattern, path, flags) is not None
            except re.error:
                return False
        if self.modifier == "=":
            return path == self.pattern
        return self.modifier != "@" and path.startswith(self.pattern)


def _location(node: Directive, chain: list[list[Directive]]) -> _Location:
    args = node.args
    if len(args) >= 2 and args[0] in ("=", "~", "~*", "^~"):
        modifier, pattern = args[0], args[1]
    elif args and args[0].startswith("@"):
        modifier, pattern = "@", args[0]
    elif args and args[0][:1] == "=" and len(args[0]) > 1:
        modifier, pattern = "=", args[0][1:]
    else:
        modifier, pattern = "", args[0] if args else ""
    block = node.block or []
    return _Location(node, [*chain, block], modifier, pattern)


def route(locations: list[_Location], path: str) -> _Location | None:
    """The location nginx picks for `path`: exact, else the longest prefix unless a regex (in
    order) matches first, `^~` stopping the regexes; then the same inside the chosen one."""
    chosen: _Location | None = None
    exact = [loc for loc in locations if loc.modifier == "=" and loc.matches(path)]
    if exact:
        return exact[0]
    prefixes = [loc for loc in locations if loc.modifier in ("", "^~") and loc.matches(path)]
    longest = max(prefixes, key=lambda loc: len(loc.pattern), default=None)
    if longest is not None and longest.modifier == "^~":
        chosen = longest
    else:
        regexes = [loc for loc in locations if loc.modifier in ("~", "~*") and loc.matches(path)]
        chosen = regexes[0] if regexes else longest
    if chosen is not None and chosen.children:
        return route(chosen.children, path) or chosen
    return chosen


@dataclass
class _Server:
    node: Directive
    locations: list[_Location]  # top level

    def all_locations(self) -> Iterator[_Location]:
        pending = list(self.locations)
        while pending:
            location = pending.pop(0)
            yield location
            pending[:0] = location.children


def _locations(block: list[Directive], chain: list[list[Directive]]) -> list[_Location]:
    out = []
    for directive in block:
        if directive.name == "location" and directive.block is not None:
            location = _location(directive, chain)
            location.children = _locations(directive.block, location.chain)
            out.append(location)
    return out


# --- the checks ----------------------------------------------------------------------------


@dataclass
class _Linter:
    ping_interval: float
    backend_ports: tuple[int, ...]
    findings: list[Finding] = field(default_factory=list)
    servers: list[_Server] = field(default_factory=list)

    def add(self, at: Directive, severity: Severity, code: str, message: str, fix: str) -> None:
        self.findings.append(Finding(at.file, at.line, severity, code, message, fix))

    # structure and names, everywhere

    def walk(self, block: list[Directive], context: str, http_level: list[Directive]) -> None:
        for directive in block:
            self._names(directive)
            if directive.name in HTTP_LEVEL_ONLY and context not in ("http", "stream"):
                self.add(
                    directive,
                    Severity.ERROR,
                    "map-context" if directive.name == "map" else "http-context",
                    f'"{directive.name}" directive is not allowed here (inside '
                    f"{context} {{}}): nginx -t fails, so nginx keeps running the previous "
                    "configuration",
                    f"move the {directive.name} block to the http context: a file of its "
                    "own in /etc/nginx/conf.d/ (callbridge nginx render writes one)",
                )
            if directive.block is None or directive.name in OPAQUE_BLOCKS:
                continue
            if context == "main" and directive.name == "http":
                self.walk(directive.block, "http", directive.block)
            elif context == "http" and directive.name == "server":
                server = _Server(
                    directive, _locations(directive.block, [http_level, directive.block])
                )
                self.servers.append(server)
                self.walk(directive.block, "server", http_level)
            elif directive.name in ("location", "if", "limit_except"):
                self.walk(directive.block, directive.name, http_level)
            else:
                self.walk(directive.block, directive.name, http_level)

    def _names(self, directive: Directive) -> None:
        if any(_CONNECTION_UPGRADE.search(arg) for arg in directive.args):
            self.add(
                directive,
                Severity.WARNING,
                "generic-map-name",
                "the generic $connection_upgrade variable: any other file that defines it "
                "(many snippets do) silently replaces this definition, the last one loaded "
                "wins",
                "use a project-prefixed, WebSocket-only map: $callbridge_connection and "
                "$callbridge_upgrade (callbridge nginx render)",
            )
        if directive.name == "map" and directive.block and directive.args[:1] == ["$http_upgrade"]:
            entries = {entry.name: entry.args[:1] for entry in directive.block}
            if entries.get("default") == ["upgrade"] or entries.get("") == ["close"]:
                self.add(
                    directive,
                    Severity.WARNING,
                    "upgrade-map",
                    "this map sends `Connection: upgrade` for any Upgrade value (h2c "
                    "included: h2c smuggling) and `Connection: close` for plain requests, "
                    "which defeats upstream keepalive",
                    'map only WebSocket: default ""; "~*^websocket$" upgrade;',
                )

    # locations

    def check_servers(self) -> None:
        for server in self.servers:
            websocket: dict[int, _Location] = {}
            callbridge_server = any(
                self._targets_callbridge(loc) or loc.names_websocket_path
                for loc in server.all_locations()
                if loc.proxy_pass
            )
            for location in server.all_locations():
                if location.proxy_pass is None:
                    continue
                self._forwarding_headers(location)
                self._localhost(location)
                if location.names_websocket_path or any(
                    d.args[:1] and d.args[0].lower() == "upgrade"
                    for d in location.direct("proxy_set_header")
                ):
                    websocket[id(location)] = location
            if not callbridge_server:
                continue
            for path in WEBSOCKET_PATHS:
                chosen = route(server.locations, path)
                if chosen is None or chosen.proxy_pass is None:
                    at = chosen.node if chosen is not None else server.node
                    self.add(
                        at,
                        Severity.ERROR,
                        "ws-not-proxied",
                        f"{path} is not proxied: nginx serves it from "
                        + (
                            f"location {' '.join(chosen.node.args)}"
                            if chosen
                            else "no location (404)"
                        )
                        + ", so the WebSocket never reaches "
                        "callbridge (browsers see 1006)",
                        f"add a location for {path} that proxies to callbridge with the "
                        "WebSocket headers",
                    )
                elif self._targets_callbridge(chosen) or chosen.names_websocket_path:
                    websocket[id(chosen)] = chosen
            for location in websocket.values():
                self._websocket(location)

    def _targets_callbridge(self, location: _Location) -> bool:
        target = location.proxy_pass or ""
        host = re.sub(r"^[a-z]+://", "", target).split("/", 1)[0]
        port = host.rsplit(":", 1)[1] if ":" in host and not host.endswith("]") else ""
        return "callbridge" in host or (port.isdigit() and int(port) in self.backend_ports)

    def _forwarding_headers(self, location: _Location) -> None:
        own = location.direct("proxy_set_header")
        if not own:
            return
        inherited = location.effective("proxy_set_header", levels=len(location.chain) - 1)
        mine = {d.args[0].lower() for d in own if d.args}
        dropped = [d.args[0] for d in inherited if d.args and d.args[0].lower() not in mine]
        if dropped:
            names = ", ".join(dropped)
            self.add(
                location.node,
                Severity.WARNING,
                "headers-dropped",
                f"this location sets its own proxy_set_header, so nginx drops every "
                f"inherited one: {names} (set at {inherited[0].file}:{inherited[0].line}) "
                "no longer reach callbridge",
                f"repeat {names} in this location (or use an include snippet in every location)",
            )

    def _localhost(self, location: _Location) -> None:
        target = location.proxy_pass or ""
        if re.match(r"^[a-z]+://localhost(:|/|$)", target):
            at = location.direct("proxy_pass")[-1]
            self.add(
                at,
                Severity.INFO,
                "proxy-pass-localhost",
                "proxy_pass to localhost: nginx resolves it to ::1 and 127.0.0.1 and balances "
                "between them; callbridge listens on 127.0.0.1 by default, so the connections "
                "to ::1 are refused and logged as errors",
                "proxy to 127.0.0.1:PORT, or to an upstream block",
            )

    def _websocket(self, location: _Location) -> None:
        where = f"location {' '.join(location.node.args)}"
        version = location.effective("proxy_http_version")
        if not version or version[-1].args[:1] != ["1.1"]:
            self.add(
                version[-1] if version else location.node,
                Severity.ERROR,
                "ws-http-version",
                f"{where} proxies a WebSocket without proxy_http_version 1.1: nginx "
                "(before 1.29.7) speaks HTTP/1.0 upstream, and the handshake fails (505)",
                "add proxy_http_version 1.1;",
            )
        headers = {d.args[0].lower(): d for d in location.effective("proxy_set_header") if d.args}
        if "upgrade" not in headers:
            self.add(
                location.node,
                Severity.ERROR,
                "ws-upgrade-header",
                f"{where} proxies a WebSocket but does not pass Upgrade (a hop-by-hop "
                "header nginx drops): callbridge sees a plain GET",
                "add proxy_set_header Upgrade $callbridge_upgrade; (map in conf.d)",
            )
        if "connection" not in headers:
            self.add(
                location.node,
                Severity.ERROR,
                "ws-connection-header",
                f"{where} proxies a WebSocket but does not pass Connection: the handshake "
                "is refused (426)",
                "add proxy_set_header Connection $callbridge_connection; (map in conf.d)",
            )
        else:
            connection = headers["connection"]
            if len(connection.args) > 1 and connection.args[1].lower() == "upgrade":
                websocket_only = location.names_websocket_path and location.pattern != "/"
                self.add(
                    connection,
                    Severity.INFO if websocket_only else Severity.WARNING,
                    "connection-hardcoded",
                    'hard-coded Connection "upgrade": every plain request through '
                    f"{where} is sent as an upgrade (no upstream keepalive), and any Upgrade "
                    "value is forwarded, h2c included",
                    "proxy_set_header Connection $callbridge_connection; with the "
                    "WebSocket-only map",
                )
        for name in ("proxy_read_timeout", "proxy_send_timeout"):
            self._timeout(location, name)
        passes = location.direct("proxy_pass")
        target = location.proxy_pass or ""
        if "$" not in target and re.match(r"^[a-z]+://[^/]+/", target):
            self.add(
                passes[-1],
                Severity.INFO,
                "proxy-pass-uri",
                f"proxy_pass with a URI part ({target}) on a WebSocket location: nginx "
                "rewrites the path, which easily turns into a 404 or a double slash",
                "drop the URI part: proxy_pass http://callbridge_backend;",
            )
        buffering = location.effective("proxy_buffering")
        if buffering and buffering[-1].args[:1] == ["off"]:
            self.add(
                buffering[-1],
                Severity.INFO,
                "proxy-buffering-off",
                "proxy_buffering off on a WebSocket location does nothing: an upgraded "
                "connection is a tunnel, forwarded as it is read",
                "remove it (keep it only for streaming HTTP such as SSE)",
            )

    def _timeout(self, location: _Location, name: str) -> None:
        found = location.effective(name)
        at = found[-1] if found else location.node
        value = parse_time(found[-1].args[0]) if found and found[-1].args else None
        if found and value is None:
            return
        seconds = NGINX_DEFAULT_TIMEOUT if value is None else value
        shown = f"{name} {found[-1].args[0]}" if found else f"{name} unset (nginx default 60s)"
        ping = self.ping_interval
        if ping <= 0:
            if name == "proxy_read_timeout":
                self.add(
                    at,
                    Severity.WARNING,
                    "pings-disabled",
                    f"{shown}, and callbridge sends no pings (CALLBRIDGE_WS_PING_INTERVAL "
                    f"is 0): an idle WebSocket is cut after {seconds:g} s without a close "
                    "frame (1006)",
                    "set CALLBRIDGE_WS_PING_INTERVAL=20; keep the timeout above twice it",
                )
        elif seconds <= ping:
            self.add(
                at,
                Severity.ERROR,
                "timeout-below-ping",
                f"{shown} is not above callbridge's ping interval ({ping:g} s): nginx cuts "
                "idle WebSockets before a ping arrives, without a close frame (1006)",
                f"{name} {max(75, math.ceil(3 * ping))}s; (max(75 s, 3 x the ping interval))",
            )
        elif seconds < 2 * ping:
            self.add(
                at,
                Severity.WARNING,
                "timeout-margin",
                f"{shown} is less than twice callbridge's ping interval ({ping:g} s): one "
                "late ping and an idle WebSocket is cut (1006)",
                f"{name} {max(75, math.ceil(3 * ping))}s; (max(75 s, 3 x the ping interval))",
            )
        elif seconds >= HUGE_TIMEOUT:
            self.add(
                at,
                Severity.INFO,
                "timeout-huge",
                f"{shown}: pings already keep live WebSockets open; a timeout this long "
                "only lets dead peers linger, and keeps old workers alive after a reload",
                f"{name} {max(75, math.ceil(3 * ping))}s;",
            )


def _top_context(directives: list[Directive]) -> str:
    """A whole nginx.conf has main-context directives; a conf.d or sites file is in http."""
    main_only = {"http", "events", "stream", "mail", "worker_processes", "user", "pid"}
    return "main" if any(d.name in main_only for d in directives) else "http"


def _bases(path: Path) -> list[Path]:
    """Where nginx would resolve relative includes: the directory of nginx.conf, which for a
    sites-available/ or conf.d/ file is its parent's parent."""
    folder = path.resolve().parent
    bases = [folder, folder.parent, Path("/etc/nginx")]
    return list(dict.fromkeys(bases))


def _lint(
    trees: list[list[Directive]], ping_interval: float, backend_ports: Sequence[int]
) -> _Linter:
    linter = _Linter(ping_interval, tuple(backend_ports))
    for tree in trees:
        context = _top_context(tree)
        linter.walk(tree, context, tree if context == "http" else [])
    linter.check_servers()
    return linter


def _sorted(findings: list[Finding]) -> list[Finding]:
    unique = {(f.file, f.line, f.code, f.message): f for f in findings}
    return sorted(unique.values(), key=lambda f: (f.file, f.line, _ORDER[f.severity], f.code))


def lint_files(
    paths: Sequence[Path], *, ping_interval: float, backend_ports: Sequence[int] = (5006,)
) -> list[Finding]:
    """Findings for these files (read together, as nginx would include them in http {})."""
    trees, loader_findings = [], []
    for path in paths:
        loader = _Loader(_bases(path))
        trees.append(loader.load(path))
        loader_findings += loader.findings
    return _sorted(loader_findings + _lint(trees, ping_interval, backend_ports).findings)


def lint_text(
    text: str,
    name: str = "<text>",
    *,
    ping_interval: float,
    backend_ports: Sequence[int] = (5006,),
) -> list[Finding]:
    """Findings for one configuration given as text (includes are not followed)."""
    try:
        tree = parse(text, name)
    except NginxSyntaxError as exc:
        return [Finding(exc.file, exc.line, Severity.ERROR, "syntax", exc.message, "fix it")]
    return _sorted(_lint([tree], ping_interval, backend_ports).findings)


def lint_file(
    path: Path | str,
    *,
    ping_interval: float | None = None,
    backend_ports: Sequence[int] | None = None,
) -> list[Finding]:
    """One configuration (usually /etc/nginx/nginx.conf) and what it includes, against the ping
    interval and port this host's callbridge settings give, unless told otherwise."""
    if ping_interval is None or backend_ports is None:
        settings = Settings()
        ping_interval = settings.ws_ping_interval if ping_interval is None else ping_interval
        backend_ports = (settings.port,) if backend_ports is None else backend_ports
    return lint_files([Path(path)], ping_interval=ping_interval, backend_ports=backend_ports)
