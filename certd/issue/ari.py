"""ACME Renewal Information (RFC 9773): the certificate's ARI identifier and the CA's window.

ARI requests are plain GETs (no account, no JWS), so this module uses `requests`
directly with the same CA bundle and User-Agent as the ACME client. It does not
use `acme`'s `ClientV2.renewal_time`: that returns a time re-drawn at every call
and a naive local-time Retry-After, while certd keeps the window itself (status,
a stable pick in renew.ari_renewal_time, restarts).

Which errors mean "the CA refused `replaces`" is decided here too, because the
acme library reports a 409 as `ConflictError` before any problem document is read.
"""

from __future__ import annotations

import base64
import datetime as dt
import logging
import threading
import time
from dataclasses import dataclass

import requests
from cryptography import x509

from certd import __version__
from certd.errors import CertdError
from certd.metrics import observe_acme
from certd.retry_after import parse_retry_after

log = logging.getLogger("certd.acme.ari")

USER_AGENT = f"certd/{__version__}"
REQUEST_TIMEOUT = 30.0
DIRECTORY_CACHE_SECONDS = 3600.0


class AriError(CertdError):
    """The CA's renewalInfo could not be fetched or made no sense (try again later)."""


def _b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).decode("ascii").rstrip("=")


def cert_id(cert_pem: str | bytes) -> str:
    """RFC 9773 section 4.1: base64url(AKI keyIdentifier) "." base64url(serial as DER INTEGER bytes)."""
    cert = x509.load_pem_x509_certificate(cert_pem.encode() if isinstance(cert_pem, str) else cert_pem)
    try:
        aki = cert.extensions.get_extension_for_class(x509.AuthorityKeyIdentifier).value
    except x509.ExtensionNotFound:
        raise AriError("the certificate has no Authority Key Identifier; ARI cannot name it") from None
    if aki.key_identifier is None:
        raise AriError("the certificate's Authority Key Identifier has no keyIdentifier")
    serial = cert.serial_number
    # DER INTEGER content octets: big-endian two's complement, with a leading 0 when the top bit is set.
    serial_bytes = serial.to_bytes((serial.bit_length() + 8) // 8, "big", signed=True)
    return f"{_b64url(aki.key_identifier)}.{_b64url(serial_bytes)}"


@dataclass(frozen=True)
class AriWindow:
    """The CA's suggested renewal window (RFC 9773 section 4.2)."""

    start: dt.datetime
    end: dt.datetime


@dataclass(frozen=True)
class RenewalInfo:
    window: AriWindow
    retry_after: dt.datetime | None  # None: the CA sent no usable Retry-After
    explanation_url: str | None = None


def _parse_time(value: object, field: str) -> dt.datetime:
    if not isinstance(value, str):
        raise AriError(f"renewalInfo: suggestedWindow.{field} is missing")
    try:
        parsed = dt.datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        raise AriError(f"renewalInfo: suggestedWindow.{field} is not an RFC 3339 time: {value!r}") from None
    if parsed.tzinfo is None:
        raise AriError(f"renewalInfo: suggestedWindow.{field} has no time zone: {value!r}")
    return parsed.astimezone(dt.timezone.utc)


def parse_renewal_info(body: object, retry_after: str | None, now: dt.datetime) -> RenewalInfo:
    if not isinstance(body, dict) or not isinstance(body.get("suggestedWindow"), dict):
        raise AriError("renewalInfo: the answer has no suggestedWindow")
    window = body["suggestedWindow"]
    start, end = _parse_time(window.get("start"), "start"), _parse_time(window.get("end"), "end")
    if end < start:
        raise AriError("renewalInfo: suggestedWindow ends before it starts")
    explanation = body.get("explanationURL")
    return RenewalInfo(AriWindow(start, end), parse_retry_after(retry_after, now),
                       explanation if isinstance(explanation, str) else None)


class AriClient:
    """Looks up the CA's directory (cached for an hour) and its renewalInfo for certificates.

    Thread-safe: each request uses its own connection; the directory cache has a lock.
    """

    def __init__(self, directory_url: str, *, ca_bundle: str | None = None,
                 timeout: float = REQUEST_TIMEOUT) -> None:
        self.directory_url = directory_url
        self._verify: str | bool = ca_bundle or True
        self._timeout = timeout
        self._lock = threading.Lock()
        self._base: str | None = None
        self._fetched_at: float | None = None

    def _get(self, url: str, action: str = "renewal_info") -> requests.Response:
        started = time.monotonic()
        try:
            response = requests.get(url, timeout=self._timeout, verify=self._verify,
                                    headers={"User-Agent": USER_AGENT})
        except requests.RequestException as exc:
            observe_acme(action, "error", started)
            raise AriError(f"cannot reach {url}: {type(exc).__name__}") from None
        observe_acme(action, response.status_code, started)
        return response

    def renewal_info_base(self) -> str | None:
        """The directory's `renewalInfo` URL, or None when the CA offers no ARI."""
        with self._lock:
            fresh = self._fetched_at is not None and time.monotonic() - self._fetched_at < DIRECTORY_CACHE_SECONDS
            if fresh:
                return self._base
            response = self._get(self.directory_url, "get_directory")
            if response.status_code != 200:
                raise AriError(f"the ACME directory {self.directory_url} answered HTTP {response.status_code}")
            try:
                directory = response.json()
            except ValueError:
                raise AriError(f"the ACME directory {self.directory_url} is not JSON") from None
            base = directory.get("renewalInfo") if isinstance(directory, dict) else None
            self._base = base if isinstance(base, str) and base else None
            self._fetched_at = time.monotonic()
            return self._base

    def fetch(self, cert_pem: str, now: dt.datetime) -> RenewalInfo | None:
        """The CA's suggested window for this certificate; None when the CA has no ARI."""
        base = self.renewal_info_base()
        if base is None:
            return None
        url = f"{base.rstrip('/')}/{cert_id(cert_pem)}"
        response = self._get(url)
        if response.status_code != 200:
            raise AriError(f"renewalInfo answered HTTP {response.status_code} for {url}")
        try:
            body = response.json()
        except ValueError:
            raise AriError(f"renewalInfo at {url} is not JSON") from None
        info = parse_renewal_info(body, response.headers.get("Retry-After"), now)
        if info.explanation_url:
            log.info("the CA explains its renewal window: %s", info.explanation_url)
        return info


def replaces_rejected(exc: BaseException) -> bool:
    """Did the CA refuse the order because of its `replaces` field (retry without it)?

    `certd.issue.order` maps both forms to `ReplacesRejected`: problem documents
    naming the replacement, and the bare 409 (RFC 9773 `alreadyReplaced`) that
    `acme` raises as ConflictError before reading the body.
    """
    from certd.issue.order import ReplacesRejected

    return isinstance(exc, ReplacesRejected)
