"""The HTTP surface under /api: calls, Telnyx webhooks, health and readiness."""
