"""Signing webhooks exactly as Telnyx does: Ed25519 over `"<timestamp>|<raw body>"`."""

from __future__ import annotations

import base64
import time

from nacl.signing import SigningKey

__all__ = ["WebhookSigner"]


class WebhookSigner:
    """Holds the simulator's Ed25519 key; its public half is what the service verifies with."""

    def __init__(self, seed: bytes | None = None) -> None:
        self._key = SigningKey(seed) if seed is not None else SigningKey.generate()

    @classmethod
    def from_seed_b64(cls, seed_b64: str | None) -> WebhookSigner:
        return cls(base64.b64decode(seed_b64) if seed_b64 else None)

    @property
    def public_key_b64(self) -> str:
        return base64.b64encode(bytes(self._key.verify_key)).decode()

    @property
    def seed_b64(self) -> str:
        return base64.b64encode(bytes(self._key)).decode()

    def headers(self, body: bytes, timestamp: int | None = None) -> dict[str, str]:
        """The headers Telnyx sends with a webhook whose raw body is `body`."""
        stamp = str(int(time.time()) if timestamp is None else timestamp)
        signature = self._key.sign(stamp.encode() + b"|" + body).signature
        return {
            "content-type": "application/json",
            "user-agent": "telnyx-webhooks",
            "telnyx-timestamp": stamp,
            "telnyx-signature-ed25519": base64.b64encode(signature).decode(),
        }
