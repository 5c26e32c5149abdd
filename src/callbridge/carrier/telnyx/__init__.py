"""Telnyx Call Control v2: REST client, webhook verification and parsing."""
