"""TLS checks: chain, hostname, expiry, issuer, and that an http/1.1-only handshake works.

The chain is verified by OpenSSL (the stdlib `ssl` module) exactly as a client would; the
certificate is then read with `cryptography` even when verification failed, so an expired or
misnamed certificate is described (dates, names, issuer) rather than only refused.
"""

from __future__ import annotations

import asyncio
import dataclasses
import ipaddress
import ssl
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import dsa, ec, ed448, ed25519, rsa
from cryptography.x509.oid import AuthorityInformationAccessOID

from callbridge.edge.doctor_net import ProbeError, close_writer
from callbridge.edge.doctor_report import Check, Status

__all__ = [
    "CertInfo",
    "TlsOutcome",
    "check_tls",
    "host_matches",
    "make_context",
    "parse_certificate",
]

WARN_DAYS = 14
FAIL_DAYS = 3
OLD_VERSIONS = {"SSLv3", "TLSv1", "TLSv1.1"}
PROBE_ALPN = ["h2", "http/1.1"]  # what a browser offers; h2 is fine for the HTTP routes
WS_ALPN = ["http/1.1"]  # nginx has no WebSockets over HTTP/2: the handshake must use this

_INCOMPLETE_CHAIN = (
    "Incomplete chain or unknown CA: the server does not send the intermediate certificate "
    "(use fullchain.pem, not cert.pem, in ssl_certificate), or its CA is not trusted here "
    "(--ca FILE for a private CA). Browsers may fetch a missing intermediate via AIA; Telnyx, "
    "Python and most tools do not."
)
_VERIFY_CAUSES: dict[int, str] = {
    9: "The certificate is not valid yet: a clock is wrong (this host's or the issuer's).",
    10: "The certificate has expired: renew it (e.g. certbot renew) and reload nginx.",
    18: "A self-signed certificate: browsers and Telnyx refuse it. Use a public CA (Let's "
    "Encrypt), or pass --ca FILE to trust your own.",
    19: "The chain ends in a CA this host does not trust (a private CA?): pass --ca FILE, or "
    "use a public CA.",
    20: _INCOMPLETE_CHAIN,
    21: _INCOMPLETE_CHAIN,
    62: "The certificate does not name this host (see the hostname check): issue one that "
    "covers it, or use the name it was issued for.",
}


def make_context(ca: Path | None, *, verify: bool, alpn: list[str]) -> ssl.SSLContext:
    """A client context: system store (or `ca`), or no verification at all."""
    if verify:
        context = ssl.create_default_context(cafile=str(ca) if ca else None)
    else:
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
    context.set_alpn_protocols(alpn)
    return context


@dataclasses.dataclass(slots=True)
class _Probe:
    version: str | None
    cipher: str | None
    alpn: str | None
    der: bytes | None
    seconds: float


async def _probe(
    address: str, port: int, host: str, context: ssl.SSLContext, wait: float
) -> _Probe:
    """One TLS handshake; certificate errors propagate as `ssl.SSLCertVerificationError`."""
    started = time.monotonic()
    try:
        async with asyncio.timeout(wait):
            _reader, writer = await asyncio.open_connection(
                address, port, ssl=context, server_hostname=host, ssl_handshake_timeout=wait
            )
    except ssl.SSLCertVerificationError:
        raise
    except TimeoutError:
        raise ProbeError(f"no TLS handshake within {wait:g} s") from None
    except ssl.SSLError as exc:
        reason = exc.reason or str(exc)
        if "WRONG_VERSION_NUMBER" in reason.upper():
            reason += " (the port answers plain HTTP, not TLS)"
        raise ProbeError(f"TLS handshake failed: {reason}") from None
    except OSError as exc:
        raise ProbeError(f"TLS handshake failed: {exc}") from None
    seconds = time.monotonic() - started
    tls = writer.get_extra_info("ssl_object")
    try:
        assert isinstance(tls, ssl.SSLObject)
        cipher = tls.cipher()
        return _Probe(
            tls.version(),
            cipher[0] if cipher else None,
            tls.selected_alpn_protocol(),
            tls.getpeercert(binary_form=True),
            seconds,
        )
    finally:
        await close_writer(writer)


@dataclasses.dataclass(slots=True)
class CertInfo:
    subject: str
    issuer: str
    self_signed: bool
    not_before: datetime
    not_after: datetime
    dns_names: list[str]
    ip_addresses: list[str]
    key: str
    ocsp_urls: list[str]


def _key_name(key: object) -> str:
    if isinstance(key, rsa.RSAPublicKey):
        return f"RSA {key.key_size}"
    if isinstance(key, ec.EllipticCurvePublicKey):
        return f"EC {key.curve.name}"
    if isinstance(key, ed25519.Ed25519PublicKey):
        return "Ed25519"
    if isinstance(key, ed448.Ed448PublicKey):
        return "Ed448"
    if isinstance(key, dsa.DSAPublicKey):
        return f"DSA {key.key_size}"
    return type(key).__name__


def parse_certificate(der: bytes) -> CertInfo:
    cert = x509.load_der_x509_certificate(der)
    dns_names: list[str] = []
    ips: list[str] = []
    try:
        san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
        dns_names = san.get_values_for_type(x509.DNSName)
        ips = [str(ip) for ip in san.get_values_for_type(x509.IPAddress)]
    except x509.ExtensionNotFound:
        pass
    ocsp: list[str] = []
    try:
        aia = cert.extensions.get_extension_for_class(x509.AuthorityInformationAccess).value
        ocsp = [
            str(d.access_location.value)
            for d in aia
            if d.access_method == AuthorityInformationAccessOID.OCSP
        ]
    except x509.ExtensionNotFound:
        pass
    return CertInfo(
        subject=cert.subject.rfc4514_string(),
        issuer=cert.issuer.rfc4514_string(),
        self_signed=cert.subject == cert.issuer,
        not_before=cert.not_valid_before_utc,
        not_after=cert.not_valid_after_utc,
        dns_names=dns_names,
        ip_addresses=ips,
        key=_key_name(cert.public_key()),
        ocsp_urls=ocsp,
    )


def host_matches(host: str, info: CertInfo) -> bool:
    """RFC 6125 matching on the SANs only (clients ignore the CN): one-label wildcards."""
    try:
        ip = ipaddress.ip_address(host)
    except ValueError:
        pass
    else:
        return any(ipaddress.ip_address(a) == ip for a in info.ip_addresses)
    name = host.lower().rstrip(".")
    for pattern in (n.lower().rstrip(".") for n in info.dns_names):
        if pattern == name:
            return True
        if pattern.startswith("*.") and "." in name:
            head, _, rest = name.partition(".")
            if head and rest == pattern[2:]:
                return True
    return False


def _days(delta_seconds: float) -> str:
    days = delta_seconds / 86400
    return f"{days:.1f} days" if abs(days) < 10 else f"{days:.0f} days"


def _expiry_check(info: CertInfo, now: datetime) -> Check:
    dates = f"valid {info.not_before:%Y-%m-%d %H:%M} to {info.not_after:%Y-%m-%d %H:%M} UTC"
    data: dict[str, Any] = {
        "not_before": info.not_before.isoformat(),
        "not_after": info.not_after.isoformat(),
    }
    left = (info.not_after - now).total_seconds()
    data["days_left"] = round(left / 86400, 2)
    if now < info.not_before:
        return Check(
            "TLS expiry",
            Status.FAIL,
            f"not yet valid ({dates})",
            "A clock is wrong (this host's or the issuer's), or the certificate was issued "
            "with a future start date.",
            data,
        )
    if left < 0:
        return Check(
            "TLS expiry",
            Status.FAIL,
            f"expired {_days(-left)} ago ({dates})",
            "Renew the certificate (certbot renew) and reload nginx; check that the renewal "
            "timer runs and that nginx is reloaded after it.",
            data,
        )
    if left < FAIL_DAYS * 86400:
        status, cause = Status.FAIL, "Renew now: it expires within 3 days."
    elif left < WARN_DAYS * 86400:
        status, cause = Status.WARN, "Renewal is due: automated renewal should have run by now."
    else:
        status, cause = Status.PASS, ""
    return Check("TLS expiry", status, f"expires in {_days(left)} ({dates})", cause, data)


@dataclasses.dataclass(slots=True)
class TlsOutcome:
    checks: list[Check]
    context: ssl.SSLContext | None  # for later connections (ALPN http/1.1); None: stop here


async def check_tls(
    address: str,
    port: int,
    host: str,
    *,
    ca: Path | None,
    insecure: bool,
    wait: float,
    now: datetime | None = None,
) -> TlsOutcome:
    """Every TLS check; the context returned verifies (or, with --insecure, does not)."""
    now = now or datetime.now(UTC)
    checks: list[Check] = []
    store = f"--ca {ca}" if ca else "the system trust store"
    try:
        verifying = make_context(ca, verify=True, alpn=PROBE_ALPN)
    except (OSError, ssl.SSLError) as exc:
        checks.append(
            Check(
                "TLS chain",
                Status.FAIL,
                f"cannot load {store}: {exc}",
                "Give --ca a PEM file holding the CA certificate(s).",
            )
        )
        return TlsOutcome(checks, None)
    verify_error: ssl.SSLCertVerificationError | None = None
    try:
        probe = await _probe(address, port, host, verifying, wait)
    except ssl.SSLCertVerificationError as exc:
        verify_error = exc
        try:
            probe = await _probe(
                address, port, host, make_context(None, verify=False, alpn=PROBE_ALPN), wait
            )
        except ProbeError as again:
            checks.append(Check("TLS handshake", Status.FAIL, str(again)))
            return TlsOutcome(checks, None)
    except ProbeError as exc:
        checks.append(
            Check(
                "TLS handshake",
                Status.FAIL,
                str(exc),
                "The port does not complete a TLS handshake: is it the HTTPS port, does nginx "
                "have `listen … ssl` and a certificate for this name?",
            )
        )
        return TlsOutcome(checks, None)

    sni = "not sent (IP address)" if _is_ip(host) else host
    version_status = Status.WARN if probe.version in OLD_VERSIONS else Status.PASS
    checks.append(
        Check(
            "TLS handshake",
            version_status,
            f"{probe.version}, {probe.cipher}; ALPN offered h2,http/1.1 → "
            f"{probe.alpn or 'none'}; SNI {sni}; {probe.seconds * 1000:.0f} ms",
            "TLS below 1.2 is obsolete: set ssl_protocols TLSv1.2 TLSv1.3;"
            if version_status is Status.WARN
            else "",
            {"version": probe.version, "cipher": probe.cipher, "alpn": probe.alpn, "sni": sni},
        )
    )
    if verify_error is None:
        checks.append(Check("TLS chain", Status.PASS, f"verified against {store}"))
    else:
        code = verify_error.verify_code
        cause = _VERIFY_CAUSES.get(code, "The certificate chain does not verify.")
        if insecure:
            cause += " (--insecure: continuing without verification.)"
        else:
            cause += " Later checks are skipped: pass --ca FILE or --insecure to run them."
        checks.append(
            Check(
                "TLS chain",
                Status.FAIL,
                f"verification against {store} failed: {verify_error.verify_message} "
                f"(OpenSSL error {code})",
                cause,
                {"verify_code": code, "verify_message": verify_error.verify_message},
            )
        )

    if probe.der:
        info = parse_certificate(probe.der)
        names = ", ".join(info.dns_names + info.ip_addresses) or "(no subjectAltName)"
        if host_matches(host, info):
            checks.append(Check("TLS hostname", Status.PASS, f"{host} matches SANs: {names}"))
        else:
            checks.append(
                Check(
                    "TLS hostname",
                    Status.FAIL,
                    f"{host} is not in the certificate's SANs: {names}",
                    "The certificate was issued for other names: issue one that covers this "
                    "host (clients ignore the CN), or check that nginx picks the right "
                    "server block for this name (server_name, default_server).",
                    {"dns_names": info.dns_names, "ip_addresses": info.ip_addresses},
                )
            )
        checks.append(_expiry_check(info, now))
        ocsp = (
            f"OCSP {info.ocsp_urls[0]}"
            if info.ocsp_urls
            else "no OCSP URL (do not enable ssl_stapling)"
        )
        signed = "self-signed" if info.self_signed else f"issuer {info.issuer}"
        checks.append(
            Check(
                "TLS certificate",
                Status.INFO,
                f"subject {info.subject}; {signed}; key {info.key}; {ocsp}",
                data={"subject": info.subject, "issuer": info.issuer, "key": info.key},
            )
        )

    trusted = verify_error is None
    ws_context = make_context(ca, verify=trusted, alpn=WS_ALPN)
    try:
        ws_probe = await _probe(address, port, host, ws_context, wait)
    except (ProbeError, ssl.SSLError) as exc:
        checks.append(
            Check(
                "TLS ALPN http/1.1",
                Status.FAIL,
                f"a handshake offering only http/1.1 failed: {exc}",
                "WebSocket handshakes need HTTP/1.1 (nginx has no WebSockets over HTTP/2); "
                "the server must accept clients that offer only http/1.1.",
            )
        )
    else:
        if ws_probe.alpn not in (None, "http/1.1"):
            checks.append(
                Check(
                    "TLS ALPN http/1.1",
                    Status.FAIL,
                    f"offered http/1.1 only, the server selected {ws_probe.alpn}",
                    "The server forces a protocol the client did not offer; WebSocket "
                    "handshakes will break.",
                )
            )
        else:
            checks.append(
                Check(
                    "TLS ALPN http/1.1",
                    Status.PASS,
                    f"offered http/1.1 only → {ws_probe.alpn or 'no ALPN (HTTP/1.1 implied)'}",
                )
            )
    if trusted:
        return TlsOutcome(checks, ws_context)
    if insecure:
        return TlsOutcome(checks, make_context(None, verify=False, alpn=WS_ALPN))
    return TlsOutcome(checks, None)


def _is_ip(host: str) -> bool:
    try:
        ipaddress.ip_address(host)
    except ValueError:
        return False
    return True
