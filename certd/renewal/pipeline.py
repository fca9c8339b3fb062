"""obtain → store → deploy → post-issuance steps, shared by `certd issue` and the daemon.

`fence` (certd.store.leases.Fence): given by a caller holding the certificate's lease;
the issuance result and the deploy record are then written only while the lease is
still the caller's, checked in the writing transaction. The deploy itself is this
node's (`[node] name`): its own files, its own hooks, its own `node_deploy` row.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from concurrent.futures import Future
from dataclasses import dataclass

import sqlalchemy as sa

from certd.deploy import files as deploy_mod
from certd.config import Config
from certd.config.node import node_name
from certd.dns.provider import DnsProvider
from certd.issue.keys import PrivateKey
from certd.issue.flow import issue_certificate
from certd.store import deploy_state
from certd.store.db import session_scope
from certd.store.leases import Fence
from certd.store.models import IssuanceAttempt, IssuedCertificate, ManagedCertificate
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


def record_deploy(engine: sa.Engine, name: str, issued_id: int | None, hooks_ok: bool, *,
                  node: str | None = None, fence: Fence | None = None) -> None:
    """What `node` (when given) deployed, and the certificate-wide last deploy, in one transaction."""
    with session_scope(engine) as session:
        if fence is not None:
            fence.verify(session.connection())
        managed = session.get(ManagedCertificate, name) or ManagedCertificate(name=name)
        managed.deployed_id = issued_id
        managed.hooks_pending = not hooks_ok
        managed.updated_at = utcnow()
        session.add(managed)
        if node is not None:
            deploy_state.record(session, node, name, issued_id, hooks_ok)


def deploy_issued(config: Config, engine: sa.Engine, issued: IssuedCertificate, *,
                  fence: Fence | None = None) -> deploy_mod.DeployResult:
    """Write `issued` to this node's targets and run its hooks (never once `fence` is lost)."""
    cert_cfg = config.certificate(issued.name)
    if fence is not None:
        fence.check(engine)
    result = deploy_mod.deploy(cert_cfg, issued, config.state_dir,
                               hide_env=config.secret_env_names())
    record_deploy(engine, issued.name, issued.id, result.hooks_ok, node=node_name(config), fence=fence)
    return result


def abandon_interrupted(engine: sa.Engine, name: str, whose: str, fence: Fence) -> int:
    """Attempts of `name` still marked running when the caller took its lease over from `whose`
    (gone, or cut off): they were interrupted; the caller's fence makes sure it is the owner."""
    table = IssuanceAttempt.__table__  # type: ignore[attr-defined]
    with engine.begin() as conn:
        fence.verify(conn)
        return int(conn.execute(
            sa.update(table).where(table.c.name == name, table.c.outcome == "running")
            .values(outcome="abandoned", finished_at=utcnow(),
                    error=f"interrupted: {whose} stopped holding the certificate's lease")
        ).rowcount or 0)


def issue_and_deploy(
    config: Config, engine: sa.Engine, name: str, *,
    dns: DnsProvider | None = None, replaces: str | None = None,
    cancel: threading.Event | None = None, key: Future[PrivateKey] | None = None,
    fence: Fence | None = None,
) -> RenewalResult:
    issued = issue_certificate(config, engine, name, dns=dns, replaces=replaces, cancel=cancel, key=key,
                               fence=fence)
    try:
        result = deploy_issued(config, engine, issued, fence=fence)
    finally:  # also when the files could not be written: the chain is known and fleets need it
        for step in POST_ISSUANCE_STEPS:
            try:
                step(config, engine, issued)
            except Exception:  # a post-step must never lose the new certificate
                log.exception("%s: post-issuance step %s failed", name, getattr(step, "__name__", step))
    return RenewalResult(issued, result)


def follow_current(config: Config, engine: sa.Engine, name: str) -> deploy_mod.DeployResult | None:
    """Another node issued `name`: write its current issuance to this node's own targets and run
    this node's hooks, unless this node carries it already. No lease: the files are this node's
    alone. A DeployError is the caller's to log; the next check of `name` deploys again."""
    node = node_name(config)
    with session_scope(engine) as session:
        managed = session.get(ManagedCertificate, name)
        current = session.get(IssuedCertificate, managed.current_id) if managed and managed.current_id else None
        if current is None or deploy_state.of_node(session, node, name, managed).issued_id == current.id:
            return None
    log.info("%s: issuance #%s (serial %s) is current; deploying it on node %s", name, current.id,
             current.serial, node)
    return deploy_issued(config, engine, current)


def current_certificate(engine: sa.Engine, name: str) -> IssuedCertificate | None:
    with session_scope(engine) as session:
        managed = session.get(ManagedCertificate, name)
        if managed is None or managed.current_id is None:
            return None
        return session.get(IssuedCertificate, managed.current_id)
