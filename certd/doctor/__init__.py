"""`certd doctor`: the troubleshooting guide as checks, each pass/warn/fail with its fix.

For one host (or each configured certificate's first name): DNS (resolves, DNS
only and where config says, the local resolver's rebind protection), then TLS
against the address it resolves to (or `connect`): names with and without SNI,
key type, the GSM profile, full chain, validity on the local clock, trust by
each bundle flavour that covers the name, and what connecting by IP would do.
"""

from __future__ import annotations

import datetime as dt
import json
import logging
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from certd.doctor.base import FAIL, PASS, WARN, Check
from certd.doctor import dns_checks, tls_checks
from certd.doctor.names import covers
from certd.errors import CertdError

if TYPE_CHECKING:
    import sqlalchemy as sa

    from certd.config import Config
    from certd.dns.provider import DnsProvider
    from certd.trust.chains import AnchorSet

log = logging.getLogger("certd.doctor")
DEFAULT_PORT = 443


@dataclass
class DoctorReport:
    host: str
    port: int
    address: str | None = None
    checks: list[Check] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return all(c.status != FAIL for c in self.checks)

    def check(self, check_id: str) -> Check:
        return next(c for c in self.checks if c.id == check_id)

    def to_json(self) -> dict[str, object]:
        return {"host": self.host, "port": self.port, "address": self.address, "ok": self.ok,
                "checks": [c.to_json() for c in self.checks]}

    def lines(self) -> list[str]:
        out = [f"{self.host}:{self.port}" + (f" ({self.address})" if self.address else "")]
        for c in self.checks:
            out.append(f"  [{c.status.upper():4}] {c.id}: {c.message}")
            if c.fix and c.status != PASS:
                out.append(f"         fix: {c.fix}")
            elif c.fix:
                out.append(f"         note: {c.fix}")
        return out


def parse_target(value: str, default_port: int = DEFAULT_PORT) -> tuple[str, int]:
    """'host', 'host:8443', '[::1]:443' -> (host, port)."""
    from certd.config.dns import parse_host_port

    try:
        host, port = parse_host_port(value.strip(), default_port)
    except ValueError:
        raise CertdError(f"{value!r} is not HOST or HOST:PORT") from None
    if not host or not 0 < port < 65536:
        raise CertdError(f"{value!r} is not HOST or HOST:PORT")
    return host.lower().rstrip("."), port


def _covering_bundles(config: "Config", host: str) -> list[str]:
    from certd.trust.track import covered_names

    names = {c.name for c in config.certificates if any(covers(d, host) for d in c.domains)}
    return [b.name for b in config.trust.bundles if names & set(covered_names(config, b))]


def _doctor_anchors(config: "Config", bundle_pems: list[str]) -> "AnchorSet":
    """Roots the chain may end at: each bundle's roots, the bundles' anchor sets, the default set."""
    from certd.trust import TrustError
    from certd.trust.anchors import anchor_set
    from certd.trust.certs import parse_pem_bundle
    from certd.trust.chains import AnchorSet

    certs = {}
    for pem in bundle_pems:
        for cert in parse_pem_bundle(pem, "bundle"):
            if cert.self_signed:
                certs[cert.fingerprint] = cert
    for name in {"default", *(b.anchors for b in config.trust.bundles)}:
        try:
            for cert in anchor_set(config.trust, name).certs:
                certs[cert.fingerprint] = cert
        except TrustError as exc:
            log.warning("doctor: %s", exc)
    return AnchorSet("doctor", "bundle roots + configured anchor sets", tuple(certs.values()))


def run_doctor(
    config: "Config", host: str, port: int = DEFAULT_PORT, *, engine: "sa.Engine | None" = None,
    dns_api: "DnsProvider | None" = None, nameservers: list[str] | None = None,
    connect: str | None = None, now: dt.datetime | None = None, timeout: float = 10.0,
) -> DoctorReport:
    now = now or dt.datetime.now(dt.timezone.utc)
    report = DoctorReport(host, port)
    checks = report.checks

    # DNS
    resolution = dns_checks.resolve(host, nameservers or [], timeout=min(timeout, 5.0))
    checks.append(dns_checks.evaluate_resolution(host, resolution))
    view = dns_checks.cloudflare_view(dns_api, host) if dns_api is not None else None
    checks.append(dns_checks.evaluate_cloudflare(host, view, dns_checks.expected_addresses(config, host)))
    record_addresses = [r.content for r in view.records if r.type in ("A", "AAAA")] if view and not view.error \
        else list(resolution.addresses)
    checks.append(dns_checks.evaluate_rebind(host, resolution, record_addresses))
    checks.extend(dns_checks.challenge_checks(config, host, dns_api))

    # TLS
    address = connect or (resolution.addresses[0] if resolution.addresses else None)
    report.address = address
    if address is None:
        checks.append(Check("tls-sni", FAIL, f"no address to connect to: {host} does not resolve",
                            "fix DNS first, or give --connect ADDRESS"))
        return report
    with_sni = tls_checks.handshake(address, port, host, timeout=timeout)
    checks.append(tls_checks.evaluate_name(host, with_sni, sni=True))
    without_sni = tls_checks.handshake(address, port, None, timeout=timeout)
    checks.append(tls_checks.evaluate_name(host, without_sni, sni=False))
    if not with_sni.ok or with_sni.leaf is None:
        return report
    checks.append(tls_checks.evaluate_key_type(with_sni.leaf))
    checks.append(tls_checks.evaluate_gsm(tls_checks.handshake(address, port, host, gsm=True, timeout=timeout)))
    checks.append(tls_checks.evaluate_validity(with_sni.leaf, now))

    bundle_rows: list[tuple[str, str, int | None, str | None]] = []
    if engine is not None:
        from certd.store.db import session_scope
        from certd.trust import versions

        with session_scope(engine) as session:
            for name in _covering_bundles(config, host):
                for flavour in config.trust.bundle(name).flavours:
                    row = versions.latest(session, name, flavour)
                    bundle_rows.append((name, flavour, row.seq if row else None, row.pem if row else None))
    checks.append(tls_checks.evaluate_chain(with_sni, _doctor_anchors(config, [p for *_, p in bundle_rows if p])))
    if engine is not None and not bundle_rows:
        checks.append(Check("bundles", WARN, f"no fleet bundle covers {host}",
                            "add a [[trust.bundles]] entry covering this certificate if chargers need a CA bundle"))
    for name, flavour, seq, pem in bundle_rows:
        verified = tls_checks.handshake(address, port, host, cadata=pem, timeout=timeout) if pem else None
        checks.append(tls_checks.evaluate_bundle(name, flavour, seq, host, verified))
    by_ip = tls_checks.handshake(address, port, address,
                                 cadata=next((p for *_, p in bundle_rows if p), None) or _pem_of_chain_top(with_sni),
                                 timeout=timeout)
    checks.append(tls_checks.evaluate_ip(host, address, by_ip))
    return report


def _pem_of_chain_top(hs: tls_checks.Handshake) -> str:
    """Trust what the server sent (for the by-IP check only the name matters, not the anchor)."""
    from cryptography.hazmat.primitives import serialization

    return "".join(c.public_bytes(serialization.Encoding.PEM).decode() for c in hs.chain)


def reports_json(reports: list[DoctorReport]) -> str:
    return json.dumps({"ok": all(r.ok for r in reports), "targets": [r.to_json() for r in reports]}, indent=2)


__all__ = ["DoctorReport", "Check", "run_doctor", "parse_target", "reports_json", "PASS", "WARN", "FAIL"]
