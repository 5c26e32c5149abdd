"""The security policy of one running service, built once from the settings.

It refuses configurations that would be insecure in production (real Telnyx, no API keys or no
token secret) and, for the simulator demo only, makes up a key and a secret so that the first
command works with no setup.
"""

from __future__ import annotations

import dataclasses
import ipaddress
import secrets
from urllib.parse import urlsplit

from callbridge.auth.keys import Keyring, KeyringError, generate_key, hash_key
from callbridge.auth.limits import ConnectionLimiter, RateLimiter
from callbridge.auth.tokens import TokenIssuer
from callbridge.config import Settings

__all__ = ["InsecureConfiguration", "Security", "is_loopback"]

DEMO_KEY_NAME = "demo"


class InsecureConfiguration(ValueError):
    """The settings would run a real deployment without authentication; the message says
    what to set."""


@dataclasses.dataclass(slots=True)
class Security:
    keyring: Keyring
    tokens: TokenIssuer
    allowed_origins: frozenset[str]
    any_origin: bool
    per_ip: ConnectionLimiter
    per_token: ConnectionLimiter
    dial_rate: RateLimiter
    demo_key: str | None = None  # generated for the simulator demo; shown once at start

    @classmethod
    def from_settings(cls, settings: Settings, *, simulator: bool) -> Security:
        try:
            keyring = Keyring.parse(settings.api_keys)
        except KeyringError as exc:
            raise InsecureConfiguration(f"CALLBRIDGE_API_KEYS: {exc}") from None
        secret = settings.token_secret.get_secret_value() if settings.token_secret else ""
        missing = []
        if not keyring:
            missing.append("CALLBRIDGE_API_KEYS (make one: `callbridge keys new --name app`)")
        if not secret:
            missing.append("CALLBRIDGE_TOKEN_SECRET (e.g. `openssl rand -base64 48`)")
        if missing and not simulator:
            raise InsecureConfiguration(
                "a real Telnyx account is configured but "
                + " and ".join(missing)
                + " is not set: refusing to serve calls without authentication"
            )
        demo_key = None
        if not keyring:
            demo_key = generate_key()
            keyring = Keyring.parse([f"{DEMO_KEY_NAME}:{hash_key(demo_key)}"])
        if not secret:
            secret = secrets.token_urlsafe(48)
        try:
            tokens = TokenIssuer(secret, max_ttl=settings.token_max_ttl)
        except ValueError as exc:
            raise InsecureConfiguration(f"CALLBRIDGE_TOKEN_SECRET: {exc}") from None
        return cls(
            keyring=keyring,
            tokens=tokens,
            allowed_origins=frozenset(o for o in settings.allowed_origins if o != "*"),
            any_origin="*" in settings.allowed_origins,
            per_ip=ConnectionLimiter(settings.max_connections_per_ip),
            per_token=ConnectionLimiter(settings.max_connections_per_token),
            dial_rate=RateLimiter(settings.dial_rate_per_minute, settings.dial_burst),
            demo_key=demo_key,
        )

    def origin_allowed(self, origin: str | None, host: str | None) -> bool:
        """Pages of this service's own origin, and the configured ones. No Origin header means
        no browser (a browser always sends one on a WebSocket): tokens still apply."""
        if origin is None or self.any_origin:
            return True
        origin = origin.rstrip("/")
        if origin in self.allowed_origins:
            return True
        parts = urlsplit(origin)
        if not host:
            return False
        host = host.lower()
        if parts.netloc.lower() == host:
            return True
        # A proxy that forwards `Host $host` (nginx's usual idiom, and callbridge's rendered
        # config) drops the port: behind one on https://calls.example.com:8443 the page's host
        # name is all there is to compare.
        port_given = ":" in host.rsplit("]", 1)[-1]
        return not port_given and (parts.hostname or "") == host.strip("[]")


def is_loopback(host: str) -> bool:
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return host == "localhost"
