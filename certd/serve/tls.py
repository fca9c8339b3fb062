"""TLS for certd's listeners: profiles, check-before-serve, and an atomic context swap.

A listener's socket keeps one *listening* context for its whole life; its
`sni_callback` points every new handshake at the holder's current *serving*
context (asyncio calls it also when the client sends no SNI). Renewed material
is loaded into a fresh context, checked, and only then swapped in, so a bad
key or an incomplete chain never reaches a charger and established
connections are never touched.

`check_material` is a pure function of PEM text, a host name, a clock reading
and trust anchors; building contexts is the only I/O here.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import os
import ssl
import tempfile
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import NameOID

from certd.errors import CertdError

ProfileName = Literal["gsm", "modern"]

# Seed guide / cellular modules (Quectel EC200U, EG25-G): TLS 1.2 and these four only.
GSM_CIPHERS = (
    "ECDHE-RSA-AES128-GCM-SHA256:ECDHE-RSA-AES256-GCM-SHA384:AES128-GCM-SHA256:AES256-GCM-SHA384"
)
# TLS 1.2 suites of the modern profile (TLS 1.3 suites are OpenSSL's defaults, all AEAD).
MODERN_TLS12_CIPHERS = (
    "ECDHE-ECDSA-AES128-GCM-SHA256:ECDHE-RSA-AES128-GCM-SHA256:"
    "ECDHE-ECDSA-AES256-GCM-SHA384:ECDHE-RSA-AES256-GCM-SHA384:"
    "ECDHE-ECDSA-CHACHA20-POLY1305:ECDHE-RSA-CHACHA20-POLY1305"
)


class TlsMaterialError(CertdError):
    """Certificate material failed the check before serving; it never reaches a client."""


@dataclass(frozen=True)
class KeyPairPem:
    """One certificate with its chain and key, as PEM text (held in memory only)."""

    source: str  # e.g. "certificate fleet-rsa (issued #12)" or a file path; shown in reports
    cert_pem: str  # the leaf; extra certificates here are treated as chain
    chain_pem: str  # intermediates, leaf-side first (may be empty when cert_pem is a fullchain)
    key_pem: str = field(repr=False)

    def fullchain(self) -> str:
        text = self.cert_pem.strip() + "\n"
        if self.chain_pem.strip():
            text += self.chain_pem.strip() + "\n"
        return text


@dataclass(frozen=True)
class ServedCertificate:
    """What one key pair of a serving context is, for logs, status and tests."""

    source: str
    key_type: str  # "rsa" | "ec"
    serial: str  # hex, lower case
    subject_cn: str | None
    not_after: dt.datetime
    sha256: str  # fingerprint of the leaf (hex)


def make_profile_context(profile: ProfileName) -> ssl.SSLContext:
    """A server-side context with the profile's versions and ciphers, no certificate."""
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.options |= ssl.OP_NO_COMPRESSION | ssl.OP_CIPHER_SERVER_PREFERENCE
    ctx.options |= ssl.OP_NO_RENEGOTIATION
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    if profile == "gsm":
        ctx.maximum_version = ssl.TLSVersion.TLSv1_2
        ctx.set_ciphers(GSM_CIPHERS)
    elif profile == "modern":
        ctx.maximum_version = ssl.TLSVersion.MAXIMUM_SUPPORTED
        ctx.set_ciphers(MODERN_TLS12_CIPHERS)
    else:
        raise ValueError(f"unknown TLS profile {profile!r}")
    return ctx


# ---------------------------------------------------------------------------
# Checking material (pure)


def _key_type(public_key: object) -> str:
    if isinstance(public_key, rsa.RSAPublicKey):
        return "rsa"
    if isinstance(public_key, ec.EllipticCurvePublicKey):
        return "ec"
    return type(public_key).__name__


def _common_name(cert: x509.Certificate) -> str | None:
    attrs = cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)
    return str(attrs[0].value) if attrs else None


def _dns_names(cert: x509.Certificate) -> list[str]:
    try:
        san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName)
    except x509.ExtensionNotFound:
        return []
    return [name.lower() for name in san.value.get_values_for_type(x509.DNSName)]


def name_covers(pattern: str, host: str) -> bool:
    """RFC 6125 matching: exact, or a '*.' wildcard standing for exactly one left-most label."""
    pattern, host = pattern.lower().rstrip("."), host.lower().rstrip(".")
    if pattern == host:
        return True
    if pattern.startswith("*."):
        head, _, rest = host.partition(".")
        return bool(head) and rest == pattern[2:]
    return False


def _signed_by(child: x509.Certificate, issuer: x509.Certificate) -> bool:
    try:
        child.verify_directly_issued_by(issuer)
    except Exception:  # InvalidSignature, ValueError, TypeError (unsupported algorithms)
        return False
    return True


def _describe(cert: x509.Certificate) -> str:
    return cert.subject.rfc4514_string() or f"serial {cert.serial_number:x}"


def parse_pair(pair: KeyPairPem) -> tuple[list[x509.Certificate], object]:
    """Leaf + chain certificates and the private key, or TlsMaterialError naming the part."""
    try:
        certs = x509.load_pem_x509_certificates(pair.cert_pem.encode())
    except ValueError:
        raise TlsMaterialError(f"{pair.source}: the certificate PEM cannot be parsed") from None
    if pair.chain_pem.strip():
        try:
            certs += x509.load_pem_x509_certificates(pair.chain_pem.encode())
        except ValueError:
            raise TlsMaterialError(f"{pair.source}: the chain PEM cannot be parsed") from None
    try:
        key = serialization.load_pem_private_key(pair.key_pem.encode(), password=None)
    except (ValueError, TypeError):
        # Never include the key text: it is a secret.
        raise TlsMaterialError(
            f"{pair.source}: the private key cannot be parsed (or is encrypted)"
        ) from None
    return certs, key


def check_pair(
    pair: KeyPairPem,
    host: str,
    now: dt.datetime,
    anchors: Sequence[x509.Certificate],
) -> tuple[list[str], ServedCertificate | None]:
    """Problems that forbid serving `pair` for `host` at `now` (empty = fine), and its summary."""
    try:
        certs, key = parse_pair(pair)
    except TlsMaterialError as exc:
        return [str(exc)], None
    leaf, chain = certs[0], certs[1:]
    problems: list[str] = []
    src = pair.source

    public = key.public_key()  # type: ignore[attr-defined]
    raw = serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    if public.public_bytes(*raw) != leaf.public_key().public_bytes(*raw):
        problems.append(f"{src}: the private key does not match the certificate")

    if now < leaf.not_valid_before_utc:
        problems.append(f"{src}: not valid before {leaf.not_valid_before_utc:%Y-%m-%d %H:%M} UTC")
    if now >= leaf.not_valid_after_utc:
        problems.append(f"{src}: expired on {leaf.not_valid_after_utc:%Y-%m-%d %H:%M} UTC")

    names = _dns_names(leaf)
    if not any(name_covers(name, host) for name in names):
        problems.append(
            f"{src}: its names ({', '.join(names) or 'none'}) do not cover the listener host {host}"
        )

    problems.extend(_chain_problems(src, leaf, chain, now, anchors))

    summary = ServedCertificate(
        source=src,
        key_type=_key_type(leaf.public_key()),
        serial=f"{leaf.serial_number:x}",
        subject_cn=_common_name(leaf),
        not_after=leaf.not_valid_after_utc,
        sha256=leaf.fingerprint(_sha256()).hex(),
    )
    return problems, summary


def _sha256():  # type: ignore[no-untyped-def]
    from cryptography.hazmat.primitives import hashes

    return hashes.SHA256()


def _chain_problems(
    src: str,
    leaf: x509.Certificate,
    chain: list[x509.Certificate],
    now: dt.datetime,
    anchors: Sequence[x509.Certificate],
) -> list[str]:
    """Each certificate must be issued by the next; the last must be a root or issued by an anchor."""
    problems = []
    path = [leaf, *chain]
    for child, parent in zip(path, path[1:]):
        if child.issuer != parent.subject or not _signed_by(child, parent):
            problems.append(
                f"{src}: chain out of order or foreign: {_describe(child)} is not issued by "
                f"{_describe(parent)}"
            )
            return problems
    for ca in chain:
        if now >= ca.not_valid_after_utc:
            problems.append(f"{src}: chain certificate {_describe(ca)} expired")
    last = path[-1]
    if last.issuer == last.subject and _signed_by(last, last):
        if last is leaf:
            problems.append(f"{src}: the certificate is self-signed")
        return problems
    if not any(a.subject == last.issuer and _signed_by(last, a) for a in anchors):
        what = "the certificate" if last is leaf else f"chain certificate {_describe(last)}"
        problems.append(
            f"{src}: chain incomplete: the issuer of {what} ({last.issuer.rfc4514_string()}) is "
            "neither in the chain nor a known root (serve the full chain; for a private CA add its "
            "root to [ocpp] trust_roots)"
        )
    return problems


def check_material(
    pairs: Sequence[KeyPairPem],
    host: str,
    profile: ProfileName,
    now: dt.datetime,
    anchors: Sequence[x509.Certificate],
) -> tuple[list[str], list[ServedCertificate]]:
    """All problems for serving these pairs together on one listener, and their summaries."""
    problems: list[str] = []
    served: list[ServedCertificate] = []
    if not pairs:
        return ["no certificate material available"], []
    for pair in pairs:
        pair_problems, summary = check_pair(pair, host, now, anchors)
        problems.extend(pair_problems)
        if summary:
            served.append(summary)
    key_types = [s.key_type for s in served]
    for key_type in sorted(set(key_types)):
        if key_types.count(key_type) > 1:
            problems.append(
                f"two {key_type.upper()} certificates on one listener: a TLS context holds one "
                "certificate per key type"
            )
    if profile == "gsm" and served and "rsa" not in key_types:
        problems.append("the gsm profile's ciphers all need an RSA certificate; none is served")
    return problems, served


def load_trust_anchors(extra_files: Iterable[str | os.PathLike[str]] = ()) -> list[x509.Certificate]:
    """certifi's public roots plus the PEM files given (private CA, Pebble, test CA)."""
    import warnings

    import certifi

    with warnings.catch_warnings():
        # certifi carries an old root with a non-positive serial; cryptography warns about it.
        warnings.simplefilter("ignore")
        anchors = x509.load_pem_x509_certificates(Path(certifi.where()).read_bytes())
    for path in extra_files:
        try:
            anchors.extend(x509.load_pem_x509_certificates(Path(path).read_bytes()))
        except OSError as exc:
            raise TlsMaterialError(f"trust root file {path}: {exc.strerror}") from None
        except ValueError:
            raise TlsMaterialError(f"trust root file {path}: no PEM certificate in it") from None
    return anchors


# ---------------------------------------------------------------------------
# Building and swapping contexts (I/O)


def _load_into(ctx: ssl.SSLContext, pair: KeyPairPem) -> None:
    """load_cert_chain wants paths: hand it memory-only files so the key never touches a disk."""
    if hasattr(os, "memfd_create") and Path("/proc/self/fd").is_dir():
        fds = []
        try:
            for name, text in (("fullchain", pair.fullchain()), ("key", pair.key_pem)):
                fd = os.memfd_create(f"certd-{name}", os.MFD_CLOEXEC)
                fds.append(fd)
                os.write(fd, text.encode())
            ctx.load_cert_chain(f"/proc/self/fd/{fds[0]}", f"/proc/self/fd/{fds[1]}")
        finally:
            for fd in fds:
                os.close(fd)
        return
    with tempfile.TemporaryDirectory(prefix="certd-tls-") as tmp:  # created 0700
        chain_path, key_path = Path(tmp, "fullchain.pem"), Path(tmp, "key.pem")
        chain_path.write_text(pair.fullchain())
        fd = os.open(key_path, os.O_CREAT | os.O_WRONLY | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as handle:
            handle.write(pair.key_pem)
        ctx.load_cert_chain(chain_path, key_path)


def build_serving_context(profile: ProfileName, pairs: Sequence[KeyPairPem]) -> ssl.SSLContext:
    """A fresh context holding every pair (one per key type); raises TlsMaterialError."""
    ctx = make_profile_context(profile)
    for pair in pairs:
        try:
            _load_into(ctx, pair)
        except ssl.SSLError as exc:
            raise TlsMaterialError(f"{pair.source}: OpenSSL refused the material ({exc.reason})") from None
    return ctx


@dataclass(frozen=True)
class Prepared:
    """A checked serving context, ready to swap in."""

    context: ssl.SSLContext
    served: tuple[ServedCertificate, ...]
    fingerprint: str  # identifies the material (to skip reloading what is already served)


def material_fingerprint(pairs: Sequence[KeyPairPem]) -> str:
    digest = hashlib.sha256()
    for pair in pairs:
        digest.update(pair.fullchain().encode())
        digest.update(hashlib.sha256(pair.key_pem.encode()).digest())
    return digest.hexdigest()


def prepare(
    pairs: Sequence[KeyPairPem],
    host: str,
    profile: ProfileName,
    now: dt.datetime,
    anchors: Sequence[x509.Certificate],
) -> Prepared:
    """Check, then build; raises TlsMaterialError with every problem found."""
    problems, served = check_material(pairs, host, profile, now, anchors)
    if problems:
        raise TlsMaterialError("; ".join(problems))
    context = build_serving_context(profile, pairs)
    return Prepared(context, tuple(served), material_fingerprint(pairs))


class ContextHolder:
    """The listening context of one listener and the serving context it points handshakes at.

    `swap` is a single reference assignment on the loop thread; a handshake
    already past its ClientHello keeps the context it started with.
    """

    def __init__(self, profile: ProfileName) -> None:
        self.profile = profile
        self.listening_context = make_profile_context(profile)
        self.listening_context.sni_callback = self._point_at_current
        self._current: Prepared | None = None

    def _point_at_current(
        self, ssl_object: ssl.SSLObject, server_name: str | None, _ctx: ssl.SSLContext
    ) -> int | None:
        current = self._current
        if current is not None:
            ssl_object.context = current.context
        return None

    @property
    def current(self) -> Prepared | None:
        return self._current

    def swap(self, prepared: Prepared) -> Prepared | None:
        """Serve `prepared` from the next handshake on; returns what was served before."""
        previous, self._current = self._current, prepared
        return previous
