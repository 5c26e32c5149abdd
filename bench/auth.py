"""Credentials for the callbridge a benchmark starts: a fresh API key and token secret per run.

The service gets the key's hash (CALLBRIDGE_API_KEYS) and the secret; the benchmark uses the
key for REST and mints browser tokens through `POST /api/tokens`, as a front end would. Every
client of a benchmark comes from 127.0.0.1 and many share a token, so the per-address and
per-token connection limits and the dial rate are turned off: they would measure the limits,
not the relay. The bare relays in bench/relays/ have no authentication at all.
"""

from __future__ import annotations

import dataclasses
import secrets

import httpx

from callbridge.auth.keys import generate_key, key_entry
from callbridge.sim.auth import api_headers

__all__ = ["BenchAuth"]


@dataclasses.dataclass(frozen=True, slots=True)
class BenchAuth:
    api_key: str = dataclasses.field(default_factory=generate_key)
    token_secret: str = dataclasses.field(default_factory=lambda: secrets.token_urlsafe(48))

    def env(self) -> dict[str, str]:
        """What every instance of the service needs (the same on all of them)."""
        return {
            "CALLBRIDGE_API_KEYS": key_entry("bench", self.api_key),
            "CALLBRIDGE_TOKEN_SECRET": self.token_secret,
            "CALLBRIDGE_MAX_CONNECTIONS_PER_IP": "0",
            "CALLBRIDGE_MAX_CONNECTIONS_PER_TOKEN": "0",
            "CALLBRIDGE_DIAL_RATE_PER_MINUTE": "0",
        }

    @property
    def headers(self) -> dict[str, str]:
        return api_headers(self.api_key)

    def token(self, base_url: str, rights: tuple[str, ...] = ("events", "listen")) -> str:
        """A browser token for every call, from the service itself."""
        body = {"calls": "*", "rights": list(rights), "ttl": 3600}
        response = httpx.post(f"{base_url}/api/tokens", json=body, headers=self.headers)
        response.raise_for_status()
        token: str = response.json()["token"]
        return token
