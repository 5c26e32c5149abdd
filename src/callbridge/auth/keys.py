"""API keys: only their SHA-256 hashes are configured, so a leaked config opens nothing.

A key is 32 random bytes (`cbk_` + URL-safe base64): far too much entropy for a fast hash to
be a weakness, which is why SHA-256 (as GitHub and Stripe do for tokens) and not a password
hash. The configured form is `name:sha256:<hex>`; the name says in logs and metrics which
integration made a request.
"""

from __future__ import annotations

import dataclasses
import hashlib
import hmac
import secrets

__all__ = ["ApiKey", "Keyring", "KeyringError", "generate_key", "hash_key", "key_entry"]

PREFIX = "cbk_"
HASH_SCHEME = "sha256"


class KeyringError(ValueError):
    """A configured key entry is malformed; the message says which and how to fix it."""


def generate_key() -> str:
    """A new API key (shown once; store only its hash)."""
    return PREFIX + secrets.token_urlsafe(32)


def hash_key(key: str) -> str:
    """The configured form of a key's secret part: `sha256:<hex>`."""
    return f"{HASH_SCHEME}:{hashlib.sha256(key.encode()).hexdigest()}"


def key_entry(name: str, key: str) -> str:
    """The line an operator adds to CALLBRIDGE_API_KEYS for `key`."""
    return f"{name}:{hash_key(key)}"


@dataclasses.dataclass(frozen=True, slots=True)
class ApiKey:
    name: str
    digest: bytes


class Keyring:
    """The configured keys; `identify` answers which one (if any) a presented key is."""

    def __init__(self, keys: list[ApiKey]) -> None:
        self.keys = keys

    @classmethod
    def parse(cls, entries: list[str]) -> Keyring:
        keys: list[ApiKey] = []
        for entry in entries:
            name, sep, rest = entry.strip().partition(":")
            scheme, sep2, hexdigest = rest.partition(":")
            if not sep or not sep2 or not name or scheme != HASH_SCHEME:
                raise KeyringError(
                    f"API key entry {entry[:24]!r}… is not name:sha256:<hex>; "
                    "make one with `callbridge keys new --name NAME`"
                )
            try:
                digest = bytes.fromhex(hexdigest)
            except ValueError:
                raise KeyringError(f"API key {name!r}: the hash is not hexadecimal") from None
            if len(digest) != hashlib.sha256().digest_size:
                raise KeyringError(f"API key {name!r}: a SHA-256 hash has 64 hex digits")
            keys.append(ApiKey(name, digest))
        names = [key.name for key in keys]
        if len(set(names)) != len(names):
            raise KeyringError("API key names must be unique")
        return cls(keys)

    def __bool__(self) -> bool:
        return bool(self.keys)

    def identify(self, presented: str) -> str | None:
        """The name of the key presented, or None; every entry is compared in constant time."""
        digest = hashlib.sha256(presented.encode()).digest()
        found: str | None = None
        for key in self.keys:
            if hmac.compare_digest(digest, key.digest):
                found = key.name
        return found
