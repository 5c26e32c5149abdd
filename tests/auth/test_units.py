"""Keys, tokens and limits on their own: the rules the gate and the API rely on."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import time

import jwt
import orjson
import pytest

from callbridge.auth.keys import Keyring, KeyringError, generate_key, hash_key, key_entry
from callbridge.auth.limits import ConnectionLimiter, RateLimiter
from callbridge.auth.tokens import Right, TokenError, TokenIssuer

SECRET = "unit-secret-" + "x" * 40


def test_a_key_is_known_by_its_hash_only() -> None:
    key = generate_key()
    ring = Keyring.parse([key_entry("frontend", key), key_entry("ops", generate_key())])
    assert ring.identify(key) == "frontend"
    assert ring.identify(key + "x") is None
    assert key not in key_entry("frontend", key)
    assert hash_key(key).startswith("sha256:")


@pytest.mark.parametrize(
    ("entry", "complaint"),
    [
        ("nohash", "name:sha256"),
        ("a:md5:" + "0" * 32, "name:sha256"),
        ("a:sha256:zz", "hexadecimal"),
        ("a:sha256:abcd", "64 hex digits"),
    ],
)
def test_malformed_key_entries_say_what_is_wrong(entry: str, complaint: str) -> None:
    with pytest.raises(KeyringError, match=complaint):
        Keyring.parse([entry])


def test_duplicate_key_names_are_refused() -> None:
    with pytest.raises(KeyringError, match="unique"):
        Keyring.parse([key_entry("a", generate_key()), key_entry("a", generate_key())])


def test_a_token_carries_its_scope_and_rights() -> None:
    issuer = TokenIssuer(SECRET, max_ttl=600)
    token, _ = issuer.issue("app", ["c1", "c2"], [Right.EVENTS, Right.LISTEN], 60)
    grant = issuer.verify(token)
    assert grant.calls == frozenset({"c1", "c2"})
    assert grant.covers("c1")
    assert not grant.covers("c3")
    grant.require(Right.LISTEN, "c2")
    with pytest.raises(TokenError, match="talk") as refused:
        grant.require(Right.TALK, "c1")
    assert refused.value.forbidden
    with pytest.raises(TokenError, match="does not cover") as outside:
        grant.require(Right.LISTEN, "c3")
    assert outside.value.forbidden


def test_ttl_is_capped_by_the_maximum() -> None:
    issuer = TokenIssuer(SECRET, max_ttl=30)
    _, grant = issuer.issue("app", None, [Right.EVENTS], 10_000)
    assert grant.remaining() <= 30


def test_forged_expired_and_tampered_tokens_are_refused() -> None:
    issuer = TokenIssuer(SECRET, max_ttl=600)
    other = TokenIssuer("another-secret-" + "y" * 40, max_ttl=600)
    forged, _ = other.issue("app", None, [Right.EVENTS], 60)
    with pytest.raises(TokenError, match="signature"):
        issuer.verify(forged)
    expired, _ = issuer.issue("app", None, [Right.EVENTS], 60, now=time.time() - 3600)
    with pytest.raises(TokenError, match="expired"):
        issuer.verify(expired)
    good, _ = issuer.issue("app", ["c1"], [Right.EVENTS], 60)
    header, payload, signature = good.split(".")
    claims = orjson.loads(base64.urlsafe_b64decode(payload + "=="))
    claims["calls"] = "*"
    widened = base64.urlsafe_b64encode(orjson.dumps(claims)).rstrip(b"=").decode()
    with pytest.raises(TokenError, match="signature"):
        issuer.verify(f"{header}.{widened}.{signature}")
    with pytest.raises(TokenError, match="malformed"):
        issuer.verify("not-a-token")


def test_unsigned_tokens_are_refused() -> None:
    """alg=none is the classic JWT forgery: it must not verify."""
    issuer = TokenIssuer(SECRET, max_ttl=600)
    now = int(time.time())
    unsigned = jwt.encode(
        {
            "iss": "callbridge",
            "aud": "callbridge-browser",
            "sub": "x",
            "iat": now,
            "exp": now + 60,
            "jti": "j",
            "calls": "*",
            "rights": ["events", "listen", "talk"],
        },
        None,
        algorithm="none",
    )
    with pytest.raises(TokenError):
        issuer.verify(unsigned)


def test_short_secrets_are_refused() -> None:
    with pytest.raises(ValueError, match="32 bytes"):
        TokenIssuer("short", max_ttl=60)


def test_connection_limits_count_and_release() -> None:
    limiter = ConnectionLimiter(2)
    assert limiter.acquire("a")
    assert limiter.acquire("a")
    assert not limiter.acquire("a")
    assert limiter.acquire("b")
    limiter.release("a")
    assert limiter.acquire("a")
    assert ConnectionLimiter(0).acquire("a")  # 0: no limit


def test_the_dial_rate_refills_over_time() -> None:
    limiter = RateLimiter(per_minute=60, burst=2)
    assert limiter.take("k", now=0.0) == 0.0
    assert limiter.take("k", now=0.0) == 0.0
    wait = limiter.take("k", now=0.0)
    assert wait == pytest.approx(1.0)
    assert limiter.take("k", now=1.0) == 0.0
    assert limiter.take("other", now=0.0) == 0.0


@pytest.mark.parametrize("exp", [1e300, 10**400, 2**64, float(2**63)])
def test_an_expiry_no_clock_can_hold_is_refused_not_a_crash(exp: float) -> None:
    """Found by the fuzz suite, with tokens signed with the right secret: exp=10**400 was an
    OverflowError (500, failed handshake) and exp=1e300 a welcome that could not be encoded
    (1011)."""
    issuer = TokenIssuer(SECRET, max_ttl=600)
    now = int(time.time())
    claims = {
        "iss": "callbridge",
        "aud": "callbridge-browser",
        "sub": "x",
        "iat": now,
        "exp": exp,
        "jti": "j",
        "calls": "*",
        "rights": ["events"],
    }
    header = base64.urlsafe_b64encode(b'{"alg":"HS256","typ":"JWT"}').rstrip(b"=")
    payload = base64.urlsafe_b64encode(json.dumps(claims).encode()).rstrip(b"=")
    signing_input = header + b"." + payload
    signature = hmac.new(SECRET.encode(), signing_input, hashlib.sha256).digest()
    token = (signing_input + b"." + base64.urlsafe_b64encode(signature).rstrip(b"=")).decode()
    with pytest.raises(TokenError, match="exp"):
        issuer.verify(token)
