"""The issuance flow for one configured certificate, top to bottom.

attempt row → where each TXT goes (CNAME delegation, explicit zones, which token;
decided before the order, so a broken delegation creates nothing) → key + CSR → ACME
order → DNS-01 TXT records (tracked in the store) → wait until the authoritative
servers of each record's zone serve them → answer → finalize → pick the chain →
store the certificate → delete the TXT records (success or failure).
"""

from __future__ import annotations

import json
import logging
import threading
import time
from concurrent.futures import Future, ThreadPoolExecutor

import sqlalchemy as sa
from cryptography import x509

from acme.client import ClientV2

from certd.issue.account import acme_client_for, forget_registration
from certd.issue.chains import select_chain
from certd.issue.order import AccountGone, AcmeOrder, OrderOutcome
from certd.config import CertificateConfig, Config
from certd.dns.challenge_plan import plan_challenges
from certd.dns.challenges import Dns01Records
from certd.dns.propagation import authoritative_servers, wait_for_txt
from certd.dns.provider import DnsProvider
from certd.dns.registry import open_dns
from certd.errors import CertdError, IssuanceError
from certd.issue.keys import (
    PrivateKey, cert_info, fingerprint, generate_key, key_to_pem, make_csr, split_pem_chain,
)
from certd.store.db import session_scope
from certd.store.leases import Fence, LeaseLost
from certd.store.models import IssuanceAttempt, IssuedCertificate, ManagedCertificate
from certd.store.types import utcnow

log = logging.getLogger("certd.obtain")


class IssuanceCancelled(IssuanceError):
    """Shutdown was requested while the order was in flight."""


def _cancellable_sleep(cancel: threading.Event | None):  # type: ignore[no-untyped-def]
    def sleep(seconds: float) -> None:
        if cancel is None:
            time.sleep(seconds)
        elif cancel.wait(seconds):
            raise IssuanceCancelled("shutdown requested; order abandoned")
    return sleep


def _start_attempt(engine: sa.Engine, name: str, fence: Fence | None) -> int:
    with session_scope(engine) as session:
        if fence is not None:
            fence.verify(session.connection())
        attempt = IssuanceAttempt(name=name)
        session.add(attempt)
        session.flush()
        assert attempt.id is not None
        return attempt.id


def _finish_attempt(engine: sa.Engine, attempt_id: int, outcome: str, error: str | None = None,
                    certificate_id: int | None = None, fence: Fence | None = None) -> None:
    """Only a running attempt is finished: the node that took an interrupted order over has
    marked it abandoned already, and a node that lost the lease writes nothing."""
    try:
        with session_scope(engine) as session:
            if fence is not None:
                fence.verify(session.connection())
            attempt = session.get(IssuanceAttempt, attempt_id)
            if attempt is None or attempt.outcome != "running":
                return
            attempt.finished_at = utcnow()
            attempt.outcome = outcome
            attempt.error = error
            attempt.certificate_id = certificate_id
            session.add(attempt)
    except LeaseLost as exc:
        log.warning("attempt #%s not recorded as %s: %s", attempt_id, outcome, exc)


def _store_issued(engine: sa.Engine, config: Config, cert_cfg: CertificateConfig, key_pem: str,
                  fullchain: str, alternates: list[str], profile: str | None,
                  attempt_id: int, fence: Fence | None = None) -> IssuedCertificate:
    """Certificate row, current pointer and attempt outcome in one transaction (fenced: never
    once another process took the certificate's lease over)."""
    pems = split_pem_chain(fullchain)
    if not pems:
        raise IssuanceError("the CA returned no certificate")
    info = cert_info(pems[0])
    chain = pems[1:]
    with session_scope(engine) as session:
        if fence is not None:
            fence.verify(session.connection())
        issued = IssuedCertificate(
            name=cert_cfg.name, domains=",".join(cert_cfg.domains), key_type=cert_cfg.key_type,
            serial=info.serial, not_before=info.not_before, not_after=info.not_after,
            issuer=info.issuer_cn, cert_pem=pems[0], chain_pem="".join(chain), key_pem=key_pem,
            chain_fingerprints=json.dumps(
                [fingerprint(x509.load_pem_x509_certificate(p.encode())) for p in chain]),
            alternate_chains=json.dumps(alternates), profile=profile,
            directory_url=config.acme.directory_url,
        )
        session.add(issued)
        session.flush()
        managed = session.get(ManagedCertificate, cert_cfg.name) or ManagedCertificate(name=cert_cfg.name)
        managed.current_id = issued.id
        managed.failure_count = 0
        managed.last_error = None
        managed.next_attempt_at = None
        managed.updated_at = utcnow()
        session.add(managed)
        attempt = session.get(IssuanceAttempt, attempt_id)
        if attempt is not None:
            attempt.finished_at = utcnow()
            attempt.outcome = "success"
            attempt.certificate_id = issued.id
            session.add(attempt)
    return issued


def issue_certificate(
    config: Config, engine: sa.Engine, name: str, *,
    dns: DnsProvider | None = None, replaces: str | None = None,
    cancel: threading.Event | None = None, key: Future[PrivateKey] | None = None,
    fence: Fence | None = None,
) -> IssuedCertificate:
    """Run one order for `name` and store the result; TXT records are removed whatever happens.

    `key` is a key generated ahead (of the configured type) by a caller that had time to spare.
    `fence`: the caller's hold on the certificate's lease; every write of the order checks it.
    """
    cert_cfg = config.certificate(name)
    dns = dns or open_dns(config)
    sleep = _cancellable_sleep(cancel)
    attempt_id = _start_attempt(engine, name, fence)
    records = Dns01Records(dns, engine, attempt_id, fence=fence)
    started = time.monotonic()

    def wait_visible(expected: dict[str, set[str]]) -> None:
        for zone, zone_expected in records.expected_by_zone(expected).items():
            servers = authoritative_servers(zone, config.dns.nameservers)
            wait_for_txt(zone_expected, servers, config.dns.propagation_timeout, sleep=sleep)
        if config.dns.propagation_grace:
            sleep(config.dns.propagation_grace)

    try:
        # RSA key generation releases the GIL: overlap it, and the lookups deciding where each TXT
        # goes, with the account/directory round trips. The order waits for both.
        with ThreadPoolExecutor(max_workers=2) as pool:
            key_future = key or pool.submit(generate_key, cert_cfg.key_type)
            plan_future = pool.submit(plan_challenges, config, dns, cert_cfg)
            client = acme_client_for(config, engine)
            targets = plan_future.result()
            private_key = key_future.result()
        records = Dns01Records(dns, engine, attempt_id, targets, fence=fence)
        csr = make_csr(private_key, cert_cfg.domains)

        def run_order(client: ClientV2) -> OrderOutcome:
            return AcmeOrder(client, timeout=config.acme.order_timeout, sleep=sleep).run(
                csr, cert_cfg.domains, profile=cert_cfg.profile or config.acme.profile,
                present=lambda fqdn, value: records.present(fqdn, value),
                wait_visible=wait_visible, replaces=replaces,
            )

        try:
            outcome = run_order(client)
        except AccountGone:
            forget_registration(engine, config.acme.directory_url)
            outcome = run_order(acme_client_for(config, engine))
        preferred = cert_cfg.preferred_chain or config.acme.preferred_chain
        fullchain = select_chain([outcome.fullchain_pem, *outcome.alternate_fullchains], preferred)
        offered = [c for c in [outcome.fullchain_pem, *outcome.alternate_fullchains] if c != fullchain]
        issued = _store_issued(engine, config, cert_cfg, key_to_pem(private_key).decode(), fullchain,
                               offered, outcome.profile, attempt_id, fence)
    except BaseException as exc:
        message = str(exc) if isinstance(exc, CertdError) else f"{type(exc).__name__}: {exc}"
        outcome_name = "abandoned" if isinstance(exc, IssuanceCancelled | KeyboardInterrupt) else "failure"
        _finish_attempt(engine, attempt_id, outcome_name, message, fence=fence)
        raise
    finally:
        leftovers = records.cleanup()
        if leftovers:
            log.error("%s: %d challenge record(s) could not be deleted now; retried at next start",
                      name, len(leftovers))
    log.info("%s: issued serial %s by %s, valid until %s (%.2fs)", name, issued.serial, issued.issuer,
             issued.not_after.isoformat(timespec="minutes"), time.monotonic() - started)
    return issued
