"""Typed settings: one object, read from the environment and an optional `.env` file.

Every field carries its default and a one-line description; `docs/configuration.md` and
`callbridge config` are generated from these definitions so they cannot drift apart.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import AliasChoices, Field, SecretStr, field_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

__all__ = ["Settings", "normalise_database_url"]

DEFAULT_TELNYX_BASE_URL = "https://api.telnyx.com/v2"


def _env(name: str) -> Any:
    """Bind a field to exactly one environment variable name (case-insensitive)."""
    return AliasChoices(name)


def normalise_database_url(url: str) -> str:
    """Map the URLs operators write (`sqlite:///x.db`, `postgresql://…`) to async drivers."""
    if url.startswith("sqlite:///"):
        return "sqlite+aiosqlite:///" + url.removeprefix("sqlite:///")
    for prefix in ("postgresql://", "postgres://"):
        if url.startswith(prefix):
            return "postgresql+asyncpg://" + url.removeprefix(prefix)
    return url


class Settings(BaseSettings):
    """Everything an operator may set. Environment variables win over `.env`."""

    model_config = SettingsConfigDict(
        env_file=".env",
        env_file_encoding="utf-8",
        extra="ignore",
        populate_by_name=True,
        case_sensitive=False,
    )

    # --- Telnyx -----------------------------------------------------------------------------
    telnyx_api_key: SecretStr | None = Field(
        None,
        validation_alias=_env("TELNYX_API_KEY"),
        description="Telnyx API v2 key. Unset: callbridge runs against its built-in simulator.",
    )
    telnyx_public_key: str | None = Field(
        None,
        validation_alias=_env("TELNYX_PUBLIC_KEY"),
        description="Base64 Ed25519 public key (Mission Control) that verifies webhook signatures.",
    )
    telnyx_connection_id: str = Field(
        "callbridge-sim",
        validation_alias=_env("TELNYX_CONNECTION_ID"),
        description="Call Control application (connection) id used when dialing.",
    )
    telnyx_base_url: str = Field(
        DEFAULT_TELNYX_BASE_URL,
        validation_alias=_env("TELNYX_BASE_URL"),
        description="Base URL of the Telnyx REST API; every Telnyx REST call honours it.",
    )
    telnyx_timeout: float = Field(
        10.0,
        validation_alias=_env("CALLBRIDGE_TELNYX_TIMEOUT"),
        description="Seconds before a Telnyx REST request times out (it is then retried).",
    )
    telnyx_max_retries: int = Field(
        3,
        ge=0,
        le=10,
        validation_alias=_env("CALLBRIDGE_TELNYX_MAX_RETRIES"),
        description="Retries of a Telnyx command on 5xx, 429 or timeout (same command_id).",
    )
    webhook_tolerance: int = Field(
        300,
        ge=1,
        validation_alias=_env("CALLBRIDGE_WEBHOOK_TOLERANCE"),
        description="Largest accepted gap in seconds between telnyx-timestamp and our clock.",
    )
    webhook_max_bytes: int = Field(
        256 * 1024,
        ge=1024,
        validation_alias=_env("CALLBRIDGE_WEBHOOK_MAX_BYTES"),
        description="Largest webhook body accepted; larger ones get 413.",
    )

    # --- The service ------------------------------------------------------------------------
    host: str = Field(
        "0.0.0.0",
        validation_alias=_env("CALLBRIDGE_HOST"),
        description="Interface the service listens on.",
    )
    port: int = Field(
        5006,
        ge=0,
        le=65535,
        validation_alias=_env("CALLBRIDGE_PORT"),
        description="TCP port of the service (the old Node backend's port).",
    )
    public_url: str | None = Field(
        None,
        validation_alias=_env("CALLBRIDGE_PUBLIC_URL"),
        description="Public https:// base; stream_url (wss://…/audio-stream) and webhook_url "
        "derive from it. Unset: http://127.0.0.1:<port>.",
    )
    default_from: str = Field(
        "+15550100000",
        validation_alias=_env("CALLBRIDGE_DEFAULT_FROM"),
        description="Caller id used when a dial request gives no `from`.",
    )
    auto_answer: bool = Field(
        True,
        validation_alias=_env("CALLBRIDGE_AUTO_ANSWER"),
        description="Answer inbound calls (with streaming to this service) as soon as they arrive.",
    )
    database_url: str = Field(
        "sqlite+aiosqlite:///./callbridge.db",
        validation_alias=_env("CALLBRIDGE_DATABASE_URL"),
        description="Store: sqlite:///file.db (default) or postgresql://user@host/db.",
    )
    broker_url: str = Field(
        "memory://",
        validation_alias=_env("CALLBRIDGE_BROKER_URL"),
        description="Hub: memory:// (one process), or redis://host:6379/0 (rediss:// for TLS) "
        "shared by several instances.",
    )
    broker_queue_size: int = Field(
        10_000,
        ge=100,
        validation_alias=_env("CALLBRIDGE_BROKER_QUEUE_SIZE"),
        description="Messages waiting for Redis per instance; when full the oldest audio is "
        "dropped (counted). Redis hub only.",
    )
    broker_check_interval: float = Field(
        1.0,
        ge=0,
        validation_alias=_env("CALLBRIDGE_BROKER_CHECK_INTERVAL"),
        description="Seconds between checks that this instance has seen the newest stored "
        "event; an event Redis lost reaches clients within two checks. 0 disables. Redis hub "
        "only.",
    )
    # --- Instances: restarts, dead instances, handover --------------------------------------
    instance_id: str | None = Field(
        None,
        min_length=1,
        max_length=128,
        validation_alias=_env("CALLBRIDGE_INSTANCE_ID"),
        description="This instance's name in the store; keep it across restarts, so a "
        "restarted instance knows the media streams it held. Unset: <hostname>:<port>.",
    )
    heartbeat_interval: float = Field(
        5.0,
        gt=0,
        validation_alias=_env("CALLBRIDGE_HEARTBEAT_INTERVAL"),
        description="Seconds between this instance's heartbeats in the store, and its checks "
        "for instances that stopped sending theirs.",
    )
    heartbeat_timeout: float = Field(
        30.0,
        gt=0,
        validation_alias=_env("CALLBRIDGE_HEARTBEAT_TIMEOUT"),
        description="Seconds without a heartbeat after which an instance is dead: another "
        "ends its media streams as lost. More than twice the interval.",
    )
    handover_timeout: float = Field(
        10.0,
        ge=0,
        validation_alias=_env("CALLBRIDGE_HANDOVER_TIMEOUT"),
        description="Seconds a stopping instance waits for its media streams to start again on "
        "another instance before it closes them anyway; 0: no handover.",
    )
    resume_lost_streams: bool = Field(
        True,
        validation_alias=_env("CALLBRIDGE_RESUME_LOST_STREAMS"),
        description="Ask the carrier to stream a call again when its stream was lost with its "
        "instance (a restart, a crash, a stop with nobody to hand over to) and the call is up.",
    )
    ws_ping_interval: float = Field(
        20.0,
        ge=0,
        validation_alias=_env("CALLBRIDGE_WS_PING_INTERVAL"),
        description="WebSocket keepalive: every half interval one sweep pings each socket that "
        "sent nothing since the previous sweep, so a silent peer is pinged within one interval; "
        "keep it below the proxy's read timeout. 0 disables pings.",
    )
    ws_ping_timeout: float = Field(
        20.0,
        gt=0,
        validation_alias=_env("CALLBRIDGE_WS_PING_TIMEOUT"),
        description="Seconds a pinged peer has to answer (or send anything) before its "
        "connection is closed with 1011 (checked at each sweep).",
    )
    events_replay_max: int = Field(
        10_000,
        ge=1,
        validation_alias=_env("CALLBRIDGE_EVENTS_REPLAY_MAX"),
        description="Most events replayed to a resuming /call-events client; further behind, "
        "it is told to refetch.",
    )
    events_queue_size: int = Field(
        1024,
        ge=8,
        validation_alias=_env("CALLBRIDGE_EVENTS_QUEUE_SIZE"),
        description="Live events buffered per /call-events client before it catches up from "
        "the store instead.",
    )
    media_reorder_window: int = Field(
        8,
        ge=0,
        le=256,
        validation_alias=_env("CALLBRIDGE_MEDIA_REORDER_WINDOW"),
        description="Carrier media messages held to put out-of-order frames back in order; "
        "it bounds the wait for a missing frame (8 messages: 80 ms with both tracks, 160 ms "
        "with one). 0 forwards in arrival order.",
    )
    media_start_timeout: float = Field(
        10.0,
        gt=0,
        validation_alias=_env("CALLBRIDGE_MEDIA_START_TIMEOUT"),
        description="Seconds a carrier media socket has to send `start` before it is closed.",
    )
    media_max_message_bytes: int = Field(
        256 * 1024,
        ge=1024,
        validation_alias=_env("CALLBRIDGE_MEDIA_MAX_MESSAGE_BYTES"),
        description="Largest carrier media message processed; larger ones are dropped and counted.",
    )
    listener_queue_frames: int = Field(
        50,
        ge=1,
        validation_alias=_env("CALLBRIDGE_LISTENER_QUEUE_FRAMES"),
        description="Audio frames buffered per /frontend-audio listener; when full the oldest "
        "are dropped (counted), so a slow listener hears live audio, not a backlog.",
    )
    talk_max_message_bytes: int = Field(
        64 * 1024,
        ge=320,
        validation_alias=_env("CALLBRIDGE_TALK_MAX_MESSAGE_BYTES"),
        description="Largest microphone message a browser may send on /frontend-audio.",
    )
    # --- Security ---------------------------------------------------------------------------
    api_keys: Annotated[list[str], NoDecode] = Field(
        [],
        validation_alias=_env("CALLBRIDGE_API_KEYS"),
        description="Comma-separated `name:sha256:<hex>` hashes of the REST API keys "
        "(`callbridge keys new`). Unset in simulator mode: a demo key is generated and printed.",
    )
    token_secret: SecretStr | None = Field(
        None,
        validation_alias=_env("CALLBRIDGE_TOKEN_SECRET"),
        description="Secret (32+ bytes) that signs browser tokens; the same on every instance. "
        "Unset in simulator mode: a fresh one per start.",
    )
    token_max_ttl: int = Field(
        3600,
        ge=10,
        le=86_400,
        validation_alias=_env("CALLBRIDGE_TOKEN_MAX_TTL"),
        description="Longest lifetime in seconds a browser token may be issued with.",
    )
    allowed_origins: Annotated[list[str], NoDecode] = Field(
        [],
        validation_alias=_env("CALLBRIDGE_ALLOWED_ORIGINS"),
        description="Comma-separated origins (https://app.example.com) whose pages may open "
        "browser WebSockets, besides this service's own origin; `*` allows any.",
    )
    trusted_proxies: str = Field(
        "127.0.0.1",
        validation_alias=_env("CALLBRIDGE_TRUSTED_PROXIES"),
        description="Comma-separated proxy addresses or networks whose X-Forwarded-For/-Proto "
        "are believed; from anyone else these headers are ignored.",
    )
    max_connections_per_ip: int = Field(
        500,
        ge=0,
        validation_alias=_env("CALLBRIDGE_MAX_CONNECTIONS_PER_IP"),
        description="Browser WebSockets one client address may hold open on an instance "
        "(0: no limit).",
    )
    max_connections_per_token: int = Field(
        20,
        ge=0,
        validation_alias=_env("CALLBRIDGE_MAX_CONNECTIONS_PER_TOKEN"),
        description="Browser WebSockets one token may hold open on an instance (0: no limit).",
    )
    dial_rate_per_minute: float = Field(
        60.0,
        ge=0,
        validation_alias=_env("CALLBRIDGE_DIAL_RATE_PER_MINUTE"),
        description="Dials per minute per API key, sustained (0: no limit); more get 429.",
    )
    dial_burst: int = Field(
        10,
        ge=1,
        validation_alias=_env("CALLBRIDGE_DIAL_BURST"),
        description="Dials an API key may make at once before the per-minute rate applies.",
    )
    events_max_message_bytes: int = Field(
        4096,
        ge=256,
        validation_alias=_env("CALLBRIDGE_EVENTS_MAX_MESSAGE_BYTES"),
        description="Largest message a browser may send on /call-events (close 1009 beyond).",
    )

    log_format: Literal["auto", "json", "console"] = Field(
        "auto",
        validation_alias=_env("CALLBRIDGE_LOG_FORMAT"),
        description="json for production, console for a terminal; auto picks by whether "
        "stderr is a terminal.",
    )
    log_level: Literal["debug", "info", "warning", "error"] = Field(
        "info",
        validation_alias=_env("CALLBRIDGE_LOG_LEVEL"),
        description="Lowest level logged.",
    )

    # --- The embedded simulator -------------------------------------------------------------
    sim_host: str = Field(
        "127.0.0.1",
        validation_alias=_env("CALLBRIDGE_SIM_HOST"),
        description="Interface of the embedded Telnyx simulator (simulator mode only).",
    )
    sim_port: int = Field(
        5007,
        ge=0,
        le=65535,
        validation_alias=_env("CALLBRIDGE_SIM_PORT"),
        description="Port of the embedded Telnyx simulator (simulator mode only).",
    )
    sim_signing_seed: SecretStr | None = Field(
        None,
        validation_alias=_env("CALLBRIDGE_SIM_SIGNING_SEED"),
        description="Base64 32-byte Ed25519 seed of the simulator's webhook key; unset: a "
        "fresh key per start.",
    )
    sim_pace: float = Field(
        1.0,
        gt=0,
        validation_alias=_env("CALLBRIDGE_SIM_PACE"),
        description="Simulator time scale: 1.0 is real time, 0.05 makes rings and calls 20x "
        "shorter (tests).",
    )

    @field_validator("telnyx_base_url", "public_url")
    @classmethod
    def _strip_trailing_slash(cls, value: str | None) -> str | None:
        return value.rstrip("/") if value else value

    @field_validator("api_keys", "allowed_origins", mode="before")
    @classmethod
    def _comma_list(cls, value: Any) -> Any:
        if isinstance(value, str):
            return [item.strip() for item in value.split(",") if item.strip()]
        return value

    @field_validator("allowed_origins")
    @classmethod
    def _origins(cls, value: list[str]) -> list[str]:
        for origin in value:
            if origin != "*" and not origin.startswith(("http://", "https://")):
                raise ValueError(f"origin {origin!r} must be * or start with http:// or https://")
        return [origin.rstrip("/") for origin in value]

    @field_validator("broker_url")
    @classmethod
    def _known_broker(cls, value: str) -> str:
        if not value.startswith(("memory://", "redis://", "rediss://")):
            raise ValueError(
                f"unsupported broker {value.split('://')[0]!r}; "
                "use memory://, redis:// or rediss://"
            )
        return value

    @field_validator("database_url")
    @classmethod
    def _async_driver(cls, value: str) -> str:
        return normalise_database_url(value)

    @field_validator("heartbeat_timeout")
    @classmethod
    def _outlives_heartbeats(cls, value: float, info: Any) -> float:
        """One late heartbeat (a busy moment, a slow database) must not declare anyone dead."""
        interval = info.data.get("heartbeat_interval")
        if interval is not None and value <= 2 * interval:
            raise ValueError(
                f"must be more than twice CALLBRIDGE_HEARTBEAT_INTERVAL ({interval:g} s)"
            )
        return value

    @property
    def simulator_mode(self) -> bool:
        """No Telnyx key: the embedded simulator plays Telnyx."""
        return self.telnyx_api_key is None

    @property
    def effective_public_url(self) -> str:
        """The public base every URL handed to Telnyx is built from."""
        if self.public_url:
            return self.public_url
        host = "127.0.0.1" if self.host in ("0.0.0.0", "::", "") else self.host
        return f"http://{host}:{self.port}"

    @property
    def stream_url(self) -> str:
        """Where Telnyx opens the media WebSocket: ws(s)://…/audio-stream."""
        base = self.effective_public_url
        scheme, _, rest = base.partition("://")
        ws_scheme = "wss" if scheme == "https" else "ws"
        return f"{ws_scheme}://{rest}/audio-stream"

    @property
    def webhook_url(self) -> str:
        """Where Telnyx posts call webhooks for calls we dial or answer."""
        return f"{self.effective_public_url}/api/webhooks/telnyx"

    def masked(self) -> dict[str, tuple[str, str]]:
        """Effective settings as env-name → (shown value, description), secrets masked."""
        shown: dict[str, tuple[str, str]] = {}
        for name, field in type(self).model_fields.items():
            alias = field.validation_alias
            env_name = alias.choices[0] if isinstance(alias, AliasChoices) else name.upper()
            value = getattr(self, name)
            if isinstance(value, SecretStr):
                text = "********" if value.get_secret_value() else ""
            elif value is None:
                text = ""
            elif isinstance(value, list):
                text = ",".join(value)
            else:
                text = str(value)
            if name in ("database_url", "broker_url"):
                text = _mask_url_password(text)
            shown[str(env_name)] = (text, field.description or "")
        return shown


def _mask_url_password(url: str) -> str:
    """Hide the password of a database URL, keep the rest readable."""
    scheme, sep, rest = url.partition("://")
    if not sep or "@" not in rest:
        return url
    creds, _, host = rest.rpartition("@")
    user, colon, _ = creds.partition(":")
    return f"{scheme}://{user}{':****' if colon else ''}@{host}"
