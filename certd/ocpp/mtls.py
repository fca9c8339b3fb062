"""Security profile 3 on a listener: client certificates required, checked, and watched.

- TLS: the listening context asks for a client certificate (CERT_REQUIRED; the profile's
  TLS 1.2+ floor applies), and every serving context the sni_callback switches to
  verifies it against the listener's `ClientTrust` (OpenSSL verifies with the store of
  the context switched to, and the verify mode of the one the handshake began with, so
  both are set). An expired or foreign certificate ends the handshake there.
- Admission (`admit_certificate`, one worker-thread trip): the verified leaf against
  the charger id of the path and the store (`certd.chargerca.identity`); no password.
- Live connections (`RevocationWatch`): every `revocation_check_interval` seconds the
  store's revocation watermark is compared; when it moved (a revoke, disable or removal
  by this or another process) the certificate connections concerned are closed (1008).
"""

from __future__ import annotations

import asyncio
import datetime as dt
import hashlib
import logging
import ssl
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import sqlalchemy as sa
from cryptography import x509

from certd.chargerca import ca_store, identity, peers
from certd.config.ocpp import ListenerConfig, OcppConfig
from certd.ocpp import charger_registry
from certd.ocpp.charger_registry import ChargerRecord
from certd.serve.tls import TlsMaterialError
from certd.tasks import cancel_and_wait

log = logging.getLogger("certd.ocpp")

CLOSE_POLICY = 1008  # policy violation: the credential this connection was admitted with is gone


@dataclass(frozen=True)
class ClientTrust:
    """What a profile-3 listener accepts client certificates from."""

    certd_cas: tuple[x509.Certificate, ...]  # the charger CA hierarchy in the store
    pem: str  # those plus the manufacturer CA files, for OpenSSL
    key: str  # sha256 of `pem`: a change means new serving contexts


def load_client_trust(engine: sa.Engine, ocpp: OcppConfig, listener: ListenerConfig,
                      now: dt.datetime) -> ClientTrust:
    """Worker thread: the store's CA certificates and the listener's client_ca_files."""
    from cryptography.hazmat.primitives import serialization

    certd_cas = ca_store.trusted_certificates(engine, now) if ocpp.charger_ca is not None else []
    texts = [c.public_bytes(serialization.Encoding.PEM).decode("ascii") for c in certd_cas]
    for path in listener.client_ca_files:
        try:
            data = Path(path).read_bytes()
            x509.load_pem_x509_certificates(data)
        except OSError as exc:
            raise TlsMaterialError(f"client CA file {path}: {exc.strerror}") from None
        except ValueError:
            raise TlsMaterialError(f"client CA file {path}: no PEM certificate in it") from None
        texts.append(data.decode("ascii", errors="replace"))
    pem = "".join(texts)
    if not pem:
        raise TlsMaterialError("no client CA yet: the charger CA is not in the store")
    return ClientTrust(tuple(certd_cas), pem, hashlib.sha256(pem.encode()).hexdigest())


def require_client_certificates(context: ssl.SSLContext, trust: ClientTrust | None) -> None:
    context.verify_mode = ssl.CERT_REQUIRED
    if trust is not None:
        context.load_verify_locations(cadata=trust.pem)


def verify_clients(context: ssl.SSLContext, engine: sa.Engine, ocpp: OcppConfig, listener: ListenerConfig,
                   now: dt.datetime) -> ClientTrust:
    """Worker thread: a serving context of a profile-3 listener verifies client certificates
    against the trust of this moment; TlsMaterialError when there is none or OpenSSL refuses it."""
    trust = load_client_trust(engine, ocpp, listener, now)
    try:
        require_client_certificates(context, trust)
    except ssl.SSLError as exc:
        raise TlsMaterialError(f"client CA certificates refused by OpenSSL ({exc.reason})") from None
    return trust


def trust_key(engine: sa.Engine, ocpp: OcppConfig, listener: ListenerConfig, now: dt.datetime) -> str | None:
    """What identifies the listener's client trust now (part of its material key)."""
    try:
        return load_client_trust(engine, ocpp, listener, now).key
    except TlsMaterialError:  # the reload that follows reports why
        return None


def peer_der(connection: Any) -> bytes | None:
    """The client certificate's DER (the handshake verified it), or None."""
    transport = getattr(connection, "transport", None)
    ssl_object = transport.get_extra_info("ssl_object") if transport is not None else None
    if ssl_object is None:
        return None
    try:
        return ssl_object.getpeercert(binary_form=True)
    except (ValueError, ssl.SSLError):
        return None


@dataclass(frozen=True)
class CertificateAdmission:
    record: ChargerRecord
    peer: identity.PeerCertificate
    kind: str  # certd | manufacturer
    password_retired: bool


def admit_certificate(engine: sa.Engine, ocpp: OcppConfig, trust: ClientTrust, der: bytes | None,
                      charger_id: str, now: dt.datetime) -> CertificateAdmission | identity.Refuse:
    """Worker thread: decide (`certd.chargerca.identity`) and record first use / registration."""
    if der is None:
        return identity.Refuse("no client certificate")
    try:
        peer = peers.peer_certificate(der, trust.certd_cas)
    except ValueError:
        return identity.Refuse("the client certificate cannot be parsed")
    found = peers.lookup(engine, charger_id, peer.fingerprint)
    verdict = identity.decide(charger_id, peer, found.stored, found.standing, ocpp.unknown_chargers, now)
    if isinstance(verdict, identity.Refuse):
        return verdict
    if isinstance(verdict, identity.Register):
        record = charger_registry.insert_charger(
            engine, charger_id, password_hash=None, heartbeat_class=ocpp.default_heartbeat_class,
            registration=verdict.registration, if_absent=True)
        charger_registry.record_audit(engine, "registered", charger_id, None,
                                      f"unknown charger with a manufacturer certificate recorded as "
                                      f"{verdict.registration}")
        return CertificateAdmission(record, peer, "manufacturer", False)
    settings = ocpp.charger_ca
    retire = bool(settings and settings.retire_password and found.password_hash
                  and found.password_hash != identity.RETIRED_PASSWORD_HASH)
    retired = False
    if verdict.first_use or found.first_use_unrecorded or retire:
        retired = peers.note_use(engine, charger_id, peer.fingerprint if verdict.kind == "certd" else None,
                                 now, retire_password=retire)
    record = ChargerRecord(charger_id=charger_id, enabled=True, registration=found.registration or "accepted",
                           password_hash=identity.RETIRED_PASSWORD_HASH if retired else found.password_hash,
                           heartbeat_class=found.heartbeat_class or ocpp.default_heartbeat_class)
    return CertificateAdmission(record, peer, verdict.kind, retired)


class RevocationWatch:
    """Closes live certificate connections whose certificate or charger the store withdrew."""

    def __init__(self, engine: sa.Engine, interval: float,
                 sessions: Callable[[], Mapping[str, Any]], audit: Callable[[str, str, str | None, str], None]) -> None:
        self.engine = engine
        self.interval = interval
        self.sessions = sessions  # charger id -> ChargerSession (the service's live map)
        self.audit = audit
        self._mark: peers.Watermark | None = None
        self._checked_at: dt.datetime | None = None
        self._task: asyncio.Task[None] | None = None
        self.closed = 0  # connections this watch closed (tests, status)

    @classmethod
    def for_config(cls, ocpp: OcppConfig, engine: sa.Engine, sessions: Callable[[], Mapping[str, Any]],
                   audit: Callable[[str, str, str | None, str], None]) -> "RevocationWatch | None":
        """The watch a service needs (None: it has no profile-3 listener)."""
        if not any(listener.profile == 3 for listener in ocpp.listeners):
            return None
        interval = ocpp.charger_ca.revocation_check_interval if ocpp.charger_ca else 5.0
        return cls(engine, interval, sessions, audit)

    async def start(self) -> None:
        self._mark = await asyncio.to_thread(peers.watermark, self.engine)
        self._task = asyncio.get_running_loop().create_task(self._run(), name="certd-revocation-watch")

    async def close(self) -> None:
        await cancel_and_wait(self._task)
        self._task = None

    async def _run(self) -> None:
        while True:
            await asyncio.sleep(self.interval)
            try:
                await self.check()
            except Exception:  # noqa: BLE001 - the store may be down a moment; look again later
                log.exception("checking certificate connections against the store failed")

    async def check(self) -> int:
        """One look (also called right after an in-process revocation); returns connections closed."""
        started = dt.datetime.now(dt.timezone.utc)
        mark = await asyncio.to_thread(peers.watermark, self.engine)
        certified = {cid: s for cid, s in self.sessions().items() if getattr(s, "client_cert", None)}
        if mark == self._mark:
            # Nothing was withdrawn; only connections admitted since the last look could have
            # been read before a withdrawal that the last look already counted.
            since = self._checked_at
            certified = {cid: s for cid, s in certified.items() if since is None or s.connected_at >= since}
        self._mark, self._checked_at = mark, started
        if not certified:
            return 0
        connected = {cid: (s.client_cert.fingerprint if s.client_cert.issued_by_certd else None)
                     for cid, s in certified.items()}
        refusals = await asyncio.to_thread(peers.refusals, self.engine, connected)
        closing = []
        for charger_id, reason in refusals.items():
            session = self.sessions().get(charger_id)
            if session is None or session is not certified.get(charger_id) or session.charge_point is None:
                continue
            log.warning("charger %s: closing its connection: %s", charger_id, reason)
            self.audit("certificate_connection_closed", charger_id, session.address, reason)
            closing.append(session.charge_point._connection.close(CLOSE_POLICY, reason[:120]))  # noqa: SLF001
        await asyncio.gather(*closing, return_exceptions=True)  # all at once: each waits for its peer
        self.closed += len(closing)
        return len(closing)
