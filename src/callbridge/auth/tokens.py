"""Browser tokens: short-lived HS256 JWTs that say which calls a page may see and what it may do.

A front end's backend (holding an API key) asks `POST /api/tokens` for one and hands it to the
page; the page never holds an API key. Tokens are checked when a socket opens and again when
the page refreshes one on an open socket; an expired token closes the socket with 4401.
"""

from __future__ import annotations

import dataclasses
import enum
import time
import uuid
from collections.abc import Collection

import jwt

__all__ = ["ALL_CALLS", "Grant", "Right", "TokenError", "TokenIssuer"]

ISSUER = "callbridge"
AUDIENCE = "callbridge-browser"
ALGORITHM = "HS256"
ALL_CALLS = "*"
MIN_SECRET_BYTES = 32
MAX_EXPIRY = 253_402_300_799  # 9999-12-31T23:59:59Z, the last second datetime can show


class Right(enum.StrEnum):
    EVENTS = "events"  # /call-events
    LISTEN = "listen"  # /frontend-audio
    TALK = "talk"  # talk.start on /frontend-audio


class TokenError(Exception):
    """A token that opens nothing; `forbidden` separates 'who are you' (4401) from 'not this'
    (4403)."""

    def __init__(self, reason: str, *, forbidden: bool = False) -> None:
        super().__init__(reason)
        self.reason = reason
        self.forbidden = forbidden


@dataclasses.dataclass(frozen=True, slots=True)
class Grant:
    """What a verified token allows, until `expires_at` (Unix seconds)."""

    subject: str
    calls: frozenset[str] | None  # None: every call
    rights: frozenset[Right]
    expires_at: float
    token_id: str

    def remaining(self, now: float | None = None) -> float:
        return self.expires_at - (time.time() if now is None else now)

    def covers(self, call_control_id: str) -> bool:
        return self.calls is None or call_control_id in self.calls

    def require(self, right: Right, call_control_id: str | None = None) -> None:
        """Raise a 4403 TokenError unless this grant allows `right` (on that call)."""
        if right not in self.rights:
            raise TokenError(f"token lacks the {right.value!r} right", forbidden=True)
        if call_control_id is not None and not self.covers(call_control_id):
            raise TokenError("token does not cover this call", forbidden=True)

    def scope_text(self) -> str:
        return ALL_CALLS if self.calls is None else f"{len(self.calls)} call(s)"


class TokenIssuer:
    def __init__(self, secret: str, *, max_ttl: int, leeway: int = 5) -> None:
        if len(secret.encode()) < MIN_SECRET_BYTES:
            raise ValueError(f"the token secret must be at least {MIN_SECRET_BYTES} bytes")
        self._secret = secret
        self.max_ttl = max_ttl
        self.leeway = leeway

    def issue(
        self,
        subject: str,
        calls: Collection[str] | None,
        rights: Collection[Right],
        ttl: int,
        now: float | None = None,
    ) -> tuple[str, Grant]:
        issued = int(time.time() if now is None else now)
        ttl = min(ttl, self.max_ttl)
        grant = Grant(
            subject=subject,
            calls=None if calls is None else frozenset(calls),
            rights=frozenset(rights),
            expires_at=issued + ttl,
            token_id=uuid.uuid4().hex,
        )
        claims = {
            "iss": ISSUER,
            "aud": AUDIENCE,
            "sub": subject,
            "iat": issued,
            "exp": issued + ttl,
            "jti": grant.token_id,
            "calls": ALL_CALLS if grant.calls is None else sorted(grant.calls),
            "rights": sorted(right.value for right in grant.rights),
        }
        return jwt.encode(claims, self._secret, algorithm=ALGORITHM), grant

    def verify(self, token: str) -> Grant:
        """The grant a token carries; TokenError(4401) with the reason if it carries none."""
        try:
            claims = jwt.decode(
                token,
                self._secret,
                algorithms=[ALGORITHM],
                audience=AUDIENCE,
                issuer=ISSUER,
                leeway=self.leeway,
                options={"require": ["exp", "iat", "sub", "jti"]},
            )
        except jwt.ExpiredSignatureError:
            raise TokenError("token expired; fetch a new one") from None
        except jwt.InvalidSignatureError:
            raise TokenError("token signature is invalid") from None
        except jwt.DecodeError:
            raise TokenError("token is malformed") from None
        except jwt.InvalidTokenError as exc:
            raise TokenError(f"token is invalid: {exc}") from None
        return _grant(claims)


def _grant(claims: dict[str, object]) -> Grant:
    calls = claims.get("calls")
    rights = claims.get("rights")
    if calls != ALL_CALLS and not (
        isinstance(calls, list) and all(isinstance(c, str) for c in calls)
    ):
        raise TokenError("token is invalid: bad calls claim")
    if not isinstance(rights, list):
        raise TokenError("token is invalid: bad rights claim")
    try:
        parsed_rights = frozenset(Right(str(r)) for r in rights)
    except ValueError:
        raise TokenError("token is invalid: unknown right") from None
    return Grant(
        subject=str(claims["sub"]),
        calls=None if calls == ALL_CALLS else frozenset(calls),
        rights=parsed_rights,
        expires_at=_expiry(claims["exp"]),
        token_id=str(claims["jti"]),
    )


def _expiry(exp: object) -> float:
    """`exp` as Unix seconds. PyJWT checked that it is an integer in the future; it may still
    be one no clock, timer or JSON encoder can hold (1e300, 10**400): refused, not a crash."""
    try:
        seconds = float(exp)  # type: ignore[arg-type]
    except (TypeError, ValueError, OverflowError):
        raise TokenError("token is invalid: bad exp claim") from None
    if not seconds <= MAX_EXPIRY:
        raise TokenError("token is invalid: exp is out of range")
    return seconds
