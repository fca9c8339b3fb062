"""TLS checks with real handshakes (stdlib `ssl`): names with and without SNI, key type, the GSM
profile, the full chain, validity, trust by each exported bundle, and connecting by IP."""

from __future__ import annotations

import datetime as dt
import socket
import ssl
from dataclasses import dataclass
from typing import TYPE_CHECKING

from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import ec, rsa

from certd.doctor.base import FAIL, PASS, WARN, Check
from certd.doctor.names import cert_matches, describe_names

if TYPE_CHECKING:
    from certd.trust.chains import AnchorSet

GSM_CIPHERS = "ECDHE-RSA-AES128-GCM-SHA256:ECDHE-RSA-AES256-GCM-SHA384:AES128-GCM-SHA256:AES256-GCM-SHA384"
EXPIRY_WARN_DAYS = 7


@dataclass(frozen=True)
class Handshake:
    ok: bool
    error: str | None = None
    chain: tuple[x509.Certificate, ...] = ()  # as served, leaf first
    version: str | None = None
    cipher: str | None = None

    @property
    def leaf(self) -> x509.Certificate | None:
        return self.chain[0] if self.chain else None


def _served_chain(sock: ssl.SSLSocket) -> list[x509.Certificate]:
    """Every certificate the server sent (Python 3.13 has this public; 3.11/3.12 privately)."""
    getter = getattr(sock, "get_unverified_chain", None)
    if getter is None:
        getter = getattr(getattr(sock, "_sslobj", None), "get_unverified_chain", None)
    items = getter() if getter is not None else None
    if not items:
        der = sock.getpeercert(binary_form=True)
        return [x509.load_der_x509_certificate(der)] if der else []
    certs = []
    for item in items:
        der = item if isinstance(item, bytes) else item.public_bytes(ssl._ssl.ENCODING_DER)  # type: ignore[attr-defined]
        certs.append(x509.load_der_x509_certificate(der))
    return certs


def handshake(
    address: str, port: int, server_name: str | None, *, gsm: bool = False,
    cadata: str | None = None, timeout: float = 10.0,
) -> Handshake:
    """One TLS handshake. Without `cadata` nothing is verified (we want to see what is served);
    with it, the chain and `server_name` are verified as a client holding that bundle would."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    if cadata is None:
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
    else:
        context.load_verify_locations(cadata=cadata)
    if gsm:
        context.minimum_version = context.maximum_version = ssl.TLSVersion.TLSv1_2
        context.set_ciphers(GSM_CIPHERS)
    else:
        context.minimum_version = ssl.TLSVersion.TLSv1_2
    try:
        with socket.create_connection((address, port), timeout=timeout) as raw:
            with context.wrap_socket(raw, server_hostname=server_name) as tls:
                cipher = tls.cipher()
                return Handshake(True, None, tuple(_served_chain(tls)), tls.version(),
                                 cipher[0] if cipher else None)
    except ssl.SSLCertVerificationError as exc:
        return Handshake(False, exc.verify_message or str(exc))
    except ssl.SSLError as exc:
        return Handshake(False, exc.reason or str(exc))
    except (OSError, TimeoutError) as exc:
        return Handshake(False, f"cannot connect to {address}:{port}: {exc.strerror or exc}")


# -- decisions (pure) ----------------------------------------------------------
def evaluate_name(host: str, hs: Handshake, *, sni: bool) -> Check:
    check_id = "tls-sni" if sni else "tls-no-sni"
    how = "with SNI" if sni else "without SNI"
    if not hs.ok or hs.leaf is None:
        return Check(check_id, FAIL, f"TLS handshake {how} failed: {hs.error}",
                     "check that the server listens with TLS on this port")
    if cert_matches(hs.leaf, host):
        return Check(check_id, PASS, f"handshake {how} gets a certificate for {host} ({describe_names(hs.leaf)})")
    fix = ("serve the certificate that covers this name (certd issues it with the name in the CN and SAN)"
           if sni else
           "make the certificate for this name the server's default: chargers that send no SNI get it")
    return Check(check_id, FAIL,
                 f"handshake {how} gets a certificate for {describe_names(hs.leaf)}, not {host}", fix)


def evaluate_key_type(leaf: x509.Certificate) -> Check:
    key = leaf.public_key()
    if isinstance(key, rsa.RSAPublicKey):
        if key.key_size < 2048:
            return Check("tls-key-type", FAIL, f"the certificate key is RSA {key.key_size}: too short",
                         'use key_type = "rsa2048" (or larger)')
        return Check("tls-key-type", PASS, f"the certificate key is RSA {key.key_size} (GSM modules need RSA)")
    kind = f"ECDSA {key.curve.name}" if isinstance(key, ec.EllipticCurvePublicKey) else type(key).__name__
    return Check("tls-key-type", FAIL,
                 f"the certificate key is {kind}: GSM modules (Quectel EC200U and kin) need RSA",
                 'set key_type = "rsa2048" for this certificate (or serve an RSA certificate next to it)')


def evaluate_gsm(hs: Handshake) -> Check:
    if hs.ok:
        return Check("tls-gsm-profile", PASS, f"TLS 1.2 with the GSM cipher list negotiates {hs.cipher}")
    return Check("tls-gsm-profile", FAIL,
                 f"TLS 1.2 with the GSM cipher list ({GSM_CIPHERS}) fails: {hs.error}",
                 "serve an RSA certificate and allow TLS 1.2 with ECDHE-RSA-AES128-GCM-SHA256 "
                 "(certd's listener: tls profile \"gsm\")")


def evaluate_chain(hs: Handshake, anchors: AnchorSet) -> Check:
    from certd.trust import UnanchoredChainError
    from certd.trust.certs import from_x509
    from certd.trust.chains import build_path

    assert hs.leaf is not None
    served = [from_x509(c) for c in hs.chain[1:]]
    try:
        path = build_path(hs.leaf, served, anchors, what="the served chain")
    except UnanchoredChainError as exc:
        issuer = hs.leaf.issuer.rfc4514_string()
        sent = {c.subject for c in served}
        if not served or issuer not in sent:
            return Check("tls-full-chain", FAIL,
                         f"the server sends {len(hs.chain)} certificate(s) and not the intermediate "
                         f"{issuer} that issued its certificate: {exc}",
                         "serve fullchain.pem (certificate + intermediates), not cert.pem")
        return Check("tls-full-chain", FAIL, str(exc),
                     "serve fullchain.pem from the latest issuance, or add the root to the anchor set")
    names = " <- ".join(link.cert.common_name for link in path.links if link.in_path)
    return Check("tls-full-chain", PASS,
                 f"the full chain is served: leaf <- {names} (anchor {path.anchor.common_name})")


def evaluate_validity(leaf: x509.Certificate, now: dt.datetime) -> Check:
    start, end = leaf.not_valid_before_utc, leaf.not_valid_after_utc
    if now < start:
        return Check("tls-validity", FAIL, f"the certificate is not valid before {start:%Y-%m-%d %H:%M} UTC "
                     f"(local clock says {now:%Y-%m-%d %H:%M} UTC)",
                     "check this machine's clock (and the chargers': they check validity with ignorelocaltime 0)")
    if now >= end:
        return Check("tls-validity", FAIL, f"the certificate expired {end:%Y-%m-%d %H:%M} UTC",
                     "renew it: `certd issue NAME --force`, then check why automatic renewal did not run")
    left = end - now
    if left < dt.timedelta(days=EXPIRY_WARN_DAYS):
        return Check("tls-validity", WARN, f"the certificate expires in {left.days} day(s) ({end:%Y-%m-%d %H:%M} UTC)",
                     "renewal should have happened already: run `certd status` and `certd issue NAME`")
    return Check("tls-validity", PASS,
                 f"valid from {start:%Y-%m-%d} until {end:%Y-%m-%d %H:%M} UTC ({left.days} days left, local clock)")


def evaluate_bundle(bundle: str, flavour: str, seq: int | None, host: str, hs: Handshake | None) -> Check:
    check_id = f"bundle-{bundle}-{flavour}"
    if seq is None or hs is None:
        return Check(check_id, WARN, f"bundle {bundle} ({flavour}) has no version yet",
                     "issue a certificate the bundle covers, or run `certd bundle refresh`")
    if hs.ok:
        return Check(check_id, PASS,
                     f"a module holding bundle {bundle} ({flavour}) v{seq} trusts this endpoint as {host}")
    return Check(check_id, FAIL,
                 f"a module holding bundle {bundle} ({flavour}) v{seq} would NOT trust this endpoint: {hs.error}",
                 f"serve the certificate and full chain certd issued, and provision modules with the "
                 f"latest version (`certd bundle export {bundle} --flavour {flavour} --format quectel`)")


def evaluate_ip(host: str, address: str, hs: Handshake) -> Check:
    if hs.ok:
        return Check("tls-by-ip", PASS, f"the certificate is also valid for the IP address {address}")
    return Check("tls-by-ip", PASS,
                 f"connecting by IP {address} fails the name check ({hs.error}), as expected",
                 f"configure chargers with the name {host}, never the IP address")
