"""Close codes with stable numbers and one-line meanings, shared by every WebSocket route.

4000–4999 is the range RFC 6455 leaves to applications; 44xx mirror the HTTP status they mean.
"""

from __future__ import annotations

import enum

__all__ = ["MAX_REASON_BYTES", "CloseCode", "close_reason"]


class CloseCode(enum.IntEnum):
    NORMAL = 1000  # done: the call ended or the client asked
    GOING_AWAY = 1001  # this instance is shutting down; reconnect
    UNSUPPORTED_DATA = 1003  # e.g. a media codec callbridge does not relay
    POLICY_VIOLATION = 1008  # a carrier stream broke the rules (bad token, unknown call)
    TOO_BIG = 1009  # a message was larger than the route allows
    INTERNAL_ERROR = 1011
    SERVICE_RESTART = 1012  # reconnect, the service is restarting
    BAD_REQUEST = 4400  # a query parameter or message is malformed
    UNAUTHORIZED = 4401  # no valid token
    FORBIDDEN = 4403  # the token does not cover this call
    UNKNOWN_CALL = 4404  # no such call
    CONFLICT = 4409  # e.g. someone else is already talking into the call
    TOO_MANY = 4429  # too many sockets for this address or token


MAX_REASON_BYTES = 123  # RFC 6455: the close frame's payload is at most 125 bytes


def close_reason(reason: str) -> str:
    """A close reason that fits in a close frame (cut on a character boundary)."""
    encoded = reason.encode()
    if len(encoded) <= MAX_REASON_BYTES:
        return reason
    return encoded[: MAX_REASON_BYTES - 3].decode(errors="ignore") + "..."
