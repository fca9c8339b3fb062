"""obtain → store → deploy → post-issuance steps, shared by `certd issue` and the daemon."""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from concurrent.futures import Future
from dataclasses import dataclass

import sqlalchemy as sa

from certd.deploy import files as deploy_mod
from certd.config import Config
from certd.dns.provider import DnsProvider
from certd.issue.keys import PrivateKey
from certd.issue.flow import issue_certificate
from certd.store.db import session_scope
from certd.store.models import IssuedCertificate, ManagedCertificate
from certd.store.types import utcnow

log = logging.getLogger("certd.lifecycle")

# Steps run after a certificate is stored and deployed (chain tracking, listener reload, ...).
# Each takes (config, engine, issued); failures are logged, never undo the issuance.
PostIssuanceStep = Callable[[Config, sa.Engine, IssuedCertificate], None]


def track_chain(config: Config, engine: sa.Engine, issued: IssuedCertificate) -> None:
    """Record the chain, update fleet CA bundles, queue registry deliveries (certd/trust/)."""
    if not config.trust.bundles:
        # Nothing to distribute; a bundle configured later records past chains when it is built.
        return
    from certd.trust.track import on_issued

    on_issued(config, engine, issued)  # logs its own warnings


POST_ISSUANCE_STEPS: list[PostIssuanceStep] = [track_chain]


@dataclass
class RenewalResult:
    issued: IssuedCertificate
    deploy: deploy_mod.DeployResult


def record_deploy(engine: sa.Engine, name: str, issued_id: int | None, hooks_ok: bool) -> None:
    with session_scope(engine) as session:
        managed = session.get(ManagedCertificate, name) or ManagedCertificate(name=name)
        managed.deployed_id = issued_id
        managed.hooks_pending = not hooks_ok
        managed.updated_at = utcnow()
        session.add(managed)


def deploy_issued(config: Config, engine: sa.Engine, issued: IssuedCertificate) -> deploy_mod.DeployResult:
    cert_cfg = config.certificate(issued.name)
    result = deploy_mod.deploy(cert_cfg, issued, config.state_dir,
                               hide_env=config.secret_env_names())
    record_deploy(engine, issued.name, issued.id, result.hooks_ok)
    return result


def issue_and_deploy(
    config: Config, engine: sa.Engine, name: str, *,
    dns: DnsProvider | None = None, replaces: str | None = None,
    cancel: threading.Event | None = None, key: Future[PrivateKey] | None = None,
) -> RenewalResult:
    issued = issue_certificate(config, engine, name, dns=dns, replaces=replaces, cancel=cancel, key=key)
    try:
        result = deploy_issued(config, engine, issued)
    finally:  # also when the files could not be written: the chain is known and fleets need it
        for step in POST_ISSUANCE_STEPS:
            try:
                step(config, engine, issued)
            except Exception:  # a post-step must never lose the new certificate
                log.exception("%s: post-issuance step %s failed", name, getattr(step, "__name__", step))
    return RenewalResult(issued, result)


def current_certificate(engine: sa.Engine, name: str) -> IssuedCertificate | None:
    with session_scope(engine) as session:
        managed = session.get(ManagedCertificate, name)
        if managed is None or managed.current_id is None:
            return None
        return session.get(IssuedCertificate, managed.current_id)
