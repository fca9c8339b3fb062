"""The periodic look at every charger certificate, connected or not.

Run by the OCPP service's `ChargerCertService` (every `sweep_interval` seconds, in a
worker thread, under a store lease): certificates entering the last tenth of their life
unrenewed are logged at error level and handed to the notify hook, once per certificate;
the CRL file (`crl_file`) is rewritten. Asking connected chargers for CSRs is the other
half of that service (it holds the connections).
"""

from __future__ import annotations

import datetime as dt
import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import sqlalchemy as sa

from certd.chargerca import authority, ca_store, records, timing
from certd.config import Config

log = logging.getLogger("certd.chargerca")


@dataclass(frozen=True)
class ExpiringCertificate:
    """A charger certificate in the last tenth of its life (notify hook interface)."""

    charger_id: str
    serial: str
    not_after: dt.datetime
    stage: str  # last-tenth | expired
    last_result: str | None
    event: str = "charger-certificate-expiring"

    @property
    def name(self) -> str:
        return self.charger_id

    def message(self, now: dt.datetime | None = None) -> str:
        now = now or self.not_after
        when = ("EXPIRED at" if self.stage == "expired" else "expires") + f" {self.not_after:%Y-%m-%d %H:%M} UTC"
        why = f"; last attempt: {self.last_result}" if self.last_result else ""
        return (f"certd: charger {self.charger_id}'s client certificate (serial {self.serial}) {when} "
                f"and was not renewed{why}")

    def payload(self, now: dt.datetime | None = None) -> dict[str, object]:
        return {"event": self.event, "name": self.charger_id, "charger_id": self.charger_id,
                "serial": self.serial, "not_after": self.not_after.isoformat(), "stage": self.stage,
                "message": self.message(now)}

    def environment(self, now: dt.datetime | None = None) -> dict[str, str]:
        return {"CERTD_EVENT": self.event, "CERTD_CHARGER_ID": self.charger_id,
                "CERTD_CERT_SERIAL": self.serial, "CERTD_NOT_AFTER": self.not_after.isoformat(),
                "CERTD_MESSAGE": self.message(now)}


Alert = Callable[[ExpiringCertificate], None]


@dataclass
class SweepReport:
    alerted: list[ExpiringCertificate] = field(default_factory=list)
    renewal_due: list[str] = field(default_factory=list)  # charger ids (for logs and tests)
    crl_written: Path | None = None


def notify_hook_alert(config: Config) -> Alert:
    def alert(event: ExpiringCertificate) -> None:
        command = config.daemon.notify_hook
        if not command:
            return
        from certd.notify import run_notify_hook
        from certd.store.types import utcnow

        run_notify_hook(command, event, now=utcnow(), timeout=config.daemon.notify_timeout,  # type: ignore[arg-type]
                        hide_env=config.secret_env_names())
    return alert


def sweep(engine: sa.Engine, config: Config, now: dt.datetime, alert: Alert | None = None) -> SweepReport:
    report = SweepReport()
    if config.ocpp.charger_ca is None:
        return report
    active = ca_store.active_issuing(engine)
    ids = records.charger_ids_with_certificates(engine)
    certs = records.certificates_of(engine, ids)
    renewals = records.renewals(engine, ids)
    for charger_id in ids:
        cert = records.current(certs.get(charger_id, []))
        if cert is None:
            continue
        life = cert.life()
        renewal = renewals.get(charger_id)
        if timing.renewal_reason(life, now, active_ca=active.fingerprint if active else None):
            report.renewal_due.append(charger_id)
        if timing.alert_due(life, renewal.alerted_serial if renewal else None, now):
            event = ExpiringCertificate(charger_id, cert.serial, cert.not_after, timing.stage(life, now),
                                        renewal.last_result if renewal else None)
            log.error("%s", event.message(now))
            if alert is not None:
                alert(event)
            records.mark_alerted(engine, charger_id, cert.serial, now)
            report.alerted.append(event)
    if config.ocpp.charger_ca.crl_file and active is not None:
        report.crl_written = write_crl(engine, config, now)
    return report


def crl_pem(engine: sa.Engine, config: Config, now: dt.datetime) -> str:
    """The active issuing CA's CRL (needs its key: signed in this process)."""
    ca = ca_store.load_issuing(engine, config)
    return authority.build_crl(ca, records.revoked(engine, ca.fingerprint), now)


def write_crl(engine: sa.Engine, config: Config, now: dt.datetime) -> Path | None:
    settings = config.ocpp.charger_ca
    if settings is None or not settings.crl_file:
        return None
    from certd.deploy.atomic import atomic_write

    path = Path(settings.crl_file)
    atomic_write(path, crl_pem(engine, config, now).encode("ascii"), mode=0o644)
    return path
