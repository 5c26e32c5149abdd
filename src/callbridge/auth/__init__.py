"""Who may do what: API keys for the REST API, short-lived signed tokens for browser sockets.

Kept free of HTTP frameworks (except the thin adapters in `http` and `sockets`), so any
WebSocket layer can enforce the same rules.
"""
