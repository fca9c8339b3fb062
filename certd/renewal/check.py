"""Keep each configured certificate alive: look, decide (certd.renewal.rules), act, record.

`Maintainer.check(name)` is what the daemon runs for a certificate when its time
comes and what `certd renew` runs by hand:

  load its state from the store → check the stored material and the files
  consumers read → ask the CA's ARI when due → decide → renew (with RFC 9773
  `replaces`, once more without it if the CA refuses) / redeploy the stored
  certificate / retry failed hooks, or nothing → record the outcome and when to
  look again.

Every fact that must survive a restart (failures in a row, next attempt, the ARI
window, pending hooks) is written to the store, so a restarted daemon never
re-issues a valid certificate and never retries early. Synchronous (acme, the
Cloudflare SDK, files, subprocesses): the daemon runs it in worker threads.
"""

from __future__ import annotations

import datetime as dt
import logging
import random
import threading
from collections.abc import Callable
from dataclasses import dataclass

import sqlalchemy as sa

from certd.deploy import files as deploy_mod
from certd.renewal import pipeline
from certd.renewal import rules
from certd.renewal import files as target_files
from certd.renewal import records
from certd.renewal.records import ensure_rows  # noqa: F401 - certd.cli.renew imports it from here
from certd.renewal.result import Action, CheckResult
from certd.renewal.ari import AriAnswer, AriState, updated_ari_state
from certd.issue.ari import AriClient, AriError, cert_id, replaces_rejected
from certd.config import CertificateConfig, Config
from certd.config.node import node_name
from certd.dns.provider import DnsProvider
from certd.dns.registry import open_dns
from certd.errors import CertdError, DeployError
from certd.notify import Alert, run_notify_hook
from certd.issue.flow import IssuanceCancelled
from certd.store import deploy_state, leases
from certd.store.models import IssuedCertificate, ManagedCertificate
from certd.store.renewal import RenewalState
from certd.store.types import utcnow

log = logging.getLogger("certd.maintain")

BUSY_RETRY = dt.timedelta(minutes=1)  # another process holds the certificate: look again after it

@dataclass
class _View:
    """One certificate as the store and disk show it at `now`, with the decision taken on it."""

    cert_cfg: CertificateConfig
    now: dt.datetime
    managed: ManagedCertificate
    issued: IssuedCertificate | None
    renewal: RenewalState
    decision: rules.RenewalDecision
    deployed: deploy_state.Deployed = deploy_state.Deployed(None, False)  # by this node
    ari_cert_id: str | None = None
    repair: str | None = None  # why the deployed files or hooks need another run
    files_bad: bool = False

    @property
    def critical(self) -> bool:
        issued = self.issued
        return rules.is_critical(issued.not_before if issued else None,
                                 issued.not_after if issued else None, self.now)


class Maintainer:
    """The I/O around certd.renewal.rules's decisions, for one loaded config."""

    def __init__(self, config: Config, engine: sa.Engine, *,
                 clock: Callable[[], dt.datetime] = utcnow,
                 rand: Callable[[], float] = random.random,
                 dns: DnsProvider | None = None,
                 ari: AriClient | None = None, purpose: str = "certd run") -> None:
        self.config = config
        self.purpose = purpose  # who holds a certificate's lease, in other processes' messages
        self.engine = engine
        self.node = node_name(config)  # whose files and hooks a deploy here is
        self._held: dict[str, leases.HeldLease] = {}  # certificate -> its lease, while checked
        self._clock = clock
        self._rand = rand
        self._dns = dns
        self._dns_lock = threading.Lock()
        self._ari = ari or AriClient(config.acme.directory_url, ca_bundle=config.acme.ca_bundle)
        self._hide_env = config.secret_env_names()
        self._ari_min_interval = dt.timedelta(seconds=config.daemon.ari_min_interval)
        self._max_interval = dt.timedelta(seconds=config.daemon.max_check_interval)

    # -- public --------------------------------------------------------------------------
    def dns(self) -> DnsProvider:
        """The configured DNS provider, opened on first use (reads its token then)."""
        with self._dns_lock:
            if self._dns is None:
                self._dns = open_dns(self.config)
            return self._dns

    def check(self, name: str, *, force: bool = False, dry_run: bool = False,
              ignore_backoff: bool = False, cancel: threading.Event | None = None) -> CheckResult:
        """Look at one certificate and do what is due. Never raises for renewal failures:
        they are recorded and returned (action "failed"); config errors do raise.

        Under the certificate's lease (certd.store.leases): while another certd process
        (a hand-run `certd renew`, another node) works on it, this returns "busy"; every write
        is fenced by it, and losing it cancels an order in flight (then "busy" too)."""
        self.config.certificate(name)  # an unknown name fails here, before any lease
        if dry_run:
            return self._check(name, force, dry_run, ignore_backoff, cancel)
        try:
            with leases.held(self.engine, leases.certificate_lease(name), self.purpose, clock=self._clock) as lease:
                self._held[name] = lease
                try:
                    if lease.taken_over:
                        self._clean_interrupted_order(name, lease)
                    return self._check(name, force, dry_run, ignore_backoff, leases.AnyEvent(cancel, lease.lost))
                finally:
                    self._held.pop(name, None)
        except leases.LeaseLost as lost:
            log.error("%s: %s", name, lost)
            return CheckResult(name, "busy", str(lost), self._clock() + BUSY_RETRY, error=str(lost))
        except leases.LeaseBusy as busy:
            now = self._clock()
            log.info("%s: not checked now: %s", name, busy)
            return CheckResult(name, "busy", str(busy), min(now + BUSY_RETRY, busy.expires_at),
                               error=str(busy), critical=self._is_critical(name, now))

    def _clean_interrupted_order(self, name: str, lease: leases.HeldLease) -> None:
        """The lease was left by a holder that is gone (or cut off): its order's TXT records go
        first, and its attempt is marked abandoned (it cannot record anything any more)."""
        from certd.dns.challenges import cleanup_records_of

        whose = lease.taken_over
        try:
            cleanup_records_of(self.dns(), self.engine, name, lease.fence)
            pipeline.abandon_interrupted(self.engine, name, str(whose), lease.fence)
        except CertdError as exc:  # the check goes on; the periodic cleanup tries again
            log.error("%s: could not remove the challenge records left by %s: %s", name, whose, exc)

    def _is_critical(self, name: str, now: dt.datetime) -> bool:
        _, issued, _ = records.load(self.engine, name)
        return rules.is_critical(issued.not_before if issued else None,
                                 issued.not_after if issued else None, now)

    def _check(self, name: str, force: bool, dry_run: bool, ignore_backoff: bool,
               cancel: threading.Event | leases.AnyEvent | None) -> CheckResult:
        view = self._evaluate(name, self._clock(), persist=not dry_run)
        if force:
            why = f" ({view.decision.reason})" if view.decision.due else ""
            view.decision = rules.RenewalDecision(True, "renewal forced by hand" + why, view.decision.renew_at)
        if view.decision.due:
            if rules.in_backoff(view.managed.next_attempt_at, view.now) and not (force or ignore_backoff):
                if not dry_run:
                    self._restore_files_meanwhile(view)
                return self._settle(view, "waiting", persist=not dry_run)
            if dry_run:
                return self._result(view, "would-renew", view.decision.reason, view.now)
            result = self._renew(view, cancel)
            if result.action == "failed":
                self._restore_files_meanwhile(view)
            return result
        if view.repair is None:
            return self._settle(view, "none", persist=not dry_run)
        if rules.in_backoff(view.renewal.deploy_retry_at, view.now) and not ignore_backoff:
            return self._settle(view, "waiting", persist=not dry_run)
        if dry_run:
            return self._result(view, "would-redeploy", view.repair, view.now)
        return self._redeploy(view)

    def _restore_files_meanwhile(self, view: _View) -> None:
        """While a renewal fails or waits, a consumer whose files were lost (a restored backup,
        a new target) still gets the current certificate if it is valid: better than nothing."""
        _, issued, _ = records.load(self.engine, view.cert_cfg.name)
        if issued is None or view.issued is None or issued.id != view.issued.id or view.now >= issued.not_after:
            return  # nothing valid to write, or a new certificate whose own deploy retries are pending
        if view.deployed.issued_id == issued.id and not target_files.content_problems(
                view.cert_cfg, issued, self.config.state_dir):
            return
        log.warning("%s: writing the current certificate (valid until %s) to its targets while its "
                    "renewal is pending", view.cert_cfg.name, _fmt(issued.not_after))
        try:
            pipeline.deploy_issued(self.config, self.engine, issued, fence=self._fence(issued.name))
        except DeployError as exc:
            log.error("%s: %s", view.cert_cfg.name, exc)

    # -- looking -------------------------------------------------------------------------
    def _evaluate(self, name: str, now: dt.datetime, *, persist: bool) -> _View:
        cert_cfg = self.config.certificate(name)
        managed, issued, renewal = records.load(self.engine, name)
        problem = None
        if issued is not None:
            problem = rules.stored_material_problem(issued.cert_pem, issued.chain_pem, issued.key_pem, now)
        view = _View(cert_cfg, now, managed, issued, renewal, rules.RenewalDecision(True, "", None),
                     deploy_state.load(self.engine, self.node, name))
        ari_renew_at = self._ari_time(view, persist=persist)
        view.decision = rules.renewal_decision(cert_cfg, issued, now, ari_renew_at=ari_renew_at,
                                               material_problem=problem)
        if issued is not None and not view.decision.due:
            view.repair = self._repair_reason(view)
        return view

    def _repair_reason(self, view: _View) -> str | None:
        """Why the current certificate must be written out again or its hooks re-run."""
        issued = view.issued
        assert issued is not None
        if view.deployed.issued_id != issued.id:
            view.files_bad = True
            return "the current certificate is not deployed yet"
        problems = target_files.file_problems(view.cert_cfg, issued, self.config.state_dir)
        if problems:
            view.files_bad = True
            return "; ".join(problems)
        if view.deployed.hooks_pending:
            return "deploy hooks failed last time"
        return None

    def _ari_time(self, view: _View, *, persist: bool) -> dt.datetime | None:
        """The renewal time the CA suggests (asking it when due), or None to use the backstop.
        The new state is worked out by certd.renewal.ari; here only the asking and the storing."""
        issued, now = view.issued, view.now
        if issued is None or now >= issued.not_after or issued.directory_url != self.config.acme.directory_url:
            return None
        try:
            current = cert_id(issued.cert_pem)
        except (AriError, ValueError):
            return None
        view.ari_cert_id = current
        stored = AriState.of(view.renewal)
        if not rules.ari_check_due(now, current_cert_id=current, checked_cert_id=stored.cert_id,
                                   next_check_at=stored.next_check_at):
            return stored.renewal_time
        try:
            answer: AriAnswer = self._ari.fetch(issued.cert_pem, now)
        except CertdError as exc:  # AriError and friends: the backstop covers until it answers
            log.warning("%s: ARI check failed (%s); the backstop applies until it works", view.cert_cfg.name, exc)
            answer = exc
        update = updated_ari_state(stored, current, answer, now, fraction=self._rand(),
                                   min_interval=self._ari_min_interval)
        for column, value in update.state.columns().items():  # later steps of this check read them
            setattr(view.renewal, column, value)
        if update.new_pick and update.state.window is not None:
            window = update.state.window
            log.info("%s: the CA suggests renewing between %s and %s; picked %s", view.cert_cfg.name,
                     _fmt(window.start), _fmt(window.end), _fmt(update.state.renew_at))
        if persist:
            self._update_renewal(view.cert_cfg.name, **update.state.columns())
            self._update_managed(view.cert_cfg.name, ari_checked_at=now)
        return update.renewal_time

    # -- acting --------------------------------------------------------------------------
    def _replaces(self, view: _View) -> str | None:
        issued = view.issued
        if (issued is None or not view.renewal.ari_supported or view.ari_cert_id is None
                or not rules.names_overlap(issued.domains, list(view.cert_cfg.domains))):
            return None
        return view.ari_cert_id

    def _renew(self, view: _View, cancel: threading.Event | None) -> CheckResult:
        name = view.cert_cfg.name
        replaces = self._replaces(view)
        log.info("%s: renewing: %s%s", name, view.decision.reason,
                 f" (replaces {replaces})" if replaces else "")
        try:
            try:
                result = pipeline.issue_and_deploy(self.config, self.engine, name, dns=self.dns(),
                                                    replaces=replaces, cancel=cancel, fence=self._fence(name))
            except CertdError as exc:
                if replaces is None or not replaces_rejected(exc):
                    raise
                log.warning("%s: the CA refused the order as a replacement of %s (%s); ordering again "
                            "without `replaces`", name, replaces, exc)
                result = pipeline.issue_and_deploy(self.config, self.engine, name, dns=self.dns(),
                                                    replaces=None, cancel=cancel, fence=self._fence(name))
        except leases.LeaseLost:
            raise
        except (IssuanceCancelled, KeyboardInterrupt):
            if name in self._held and self._held[name].lost.is_set():
                raise leases.LeaseLost(leases.certificate_lease(name)) from None
            log.warning("%s: order abandoned for shutdown; it is tried again at the next start", name)
            return self._result(view, "cancelled", "shutdown during the order", view.now)
        except DeployError as exc:
            # Issued and stored, but not written out: redeploy later, never re-issue.
            return self._deploy_failed(view, str(exc), "failed")
        except Exception as exc:  # noqa: BLE001 - every failure is recorded and retried with backoff
            return self._renewal_failed(view, exc)
        issued = result.issued
        hook_error = None if result.deploy.hooks_ok else _hook_errors(result.deploy.hooks)
        if hook_error is None:
            self._update_renewal(name, deploy_failures=0, deploy_retry_at=None)
        else:
            self._deploy_failed(view, hook_error, "renewed", record_only=True)
        if view.renewal.alarm_raised:
            self._update_renewal(name, alarm_raised=False)
            self._notify(Alert("renewal-recovered", name, tuple(view.cert_cfg.domains), issued.not_after,
                               0, None, None))
        after = self._evaluate(name, self._clock(), persist=True)
        if after.decision.due and after.decision.renew_at is None:
            after = self._due_again(after)
        settled = self._settle(after, "renewed")
        return CheckResult(name, "renewed", view.decision.reason, settled.next_check, settled.renew_at,
                           hook_error, issued, tuple(result.deploy.written), result.deploy.hooks_ok, False)

    def _redeploy(self, view: _View) -> CheckResult:
        issued = view.issued
        assert issued is not None and view.repair is not None
        name = view.cert_cfg.name
        log.info("%s: %s; %s", name, view.repair,
                 "writing the stored certificate again" if view.files_bad else "running the deploy hooks again")
        try:
            if view.files_bad:
                deployed = pipeline.deploy_issued(self.config, self.engine, issued, fence=self._fence(name))
                hooks, written, action = deployed.hooks, tuple(deployed.written), "redeployed"
            else:
                hooks = deploy_mod.run_hooks(view.cert_cfg, self.config.state_dir, self._hide_env)
                pipeline.record_deploy(self.engine, name, issued.id, all(h.ok for h in hooks), node=self.node,
                                       fence=self._fence(name))
                written, action = (), "hooks-retried"
        except DeployError as exc:
            return self._deploy_failed(view, str(exc), "failed")
        hooks_ok = all(h.ok for h in hooks)
        if not hooks_ok:
            return self._deploy_failed(view, _hook_errors(hooks), action, written=written)
        self._update_renewal(name, deploy_failures=0, deploy_retry_at=None)
        settled = self._settle(self._evaluate(name, self._clock(), persist=True), action)
        return CheckResult(name, action, view.repair, settled.next_check, settled.renew_at,  # type: ignore[arg-type]
                           written=written)

    def _due_again(self, view: _View) -> _View:
        """The certificate issued a moment ago must be replaced at once already (a chain the CA
        keeps serving with an expired CA certificate, a clock so far ahead that it looks expired):
        ordering again at once would loop until the CA's rate limit stops it. Back off by the
        number issued for this name in the last day. (Timing reasons cannot loop: they name a
        moment, capped inside the lifetime.)"""
        name = view.cert_cfg.name
        now = self._clock()
        failures = max(1, records.issued_since(self.engine, name, now - dt.timedelta(days=1)))
        next_attempt = rules.next_attempt_time(now, failures, jitter=2 * self._rand() - 1)
        message = (f"the certificate issued a moment ago is due again ({view.decision.reason}); "
                   f"not ordering another before {_fmt(next_attempt)}")
        log.error("%s: %s", name, message)
        self._update_managed(name, failure_count=failures, last_error=message, next_attempt_at=next_attempt)
        return self._evaluate(name, self._clock(), persist=True)

    # -- recording -----------------------------------------------------------------------
    def _renewal_failed(self, view: _View, exc: BaseException) -> CheckResult:
        from certd.issue.order import RateLimited

        name = view.cert_cfg.name
        message = str(exc) if isinstance(exc, CertdError) else f"{type(exc).__name__}: {exc}"
        now = self._clock()
        failures = view.managed.failure_count + 1
        retry_after = exc.retry_after if isinstance(exc, RateLimited) else None
        next_attempt = rules.next_attempt_time(now, failures, jitter=2 * self._rand() - 1,
                                               retry_after=retry_after,
                                               rate_limited=isinstance(exc, RateLimited))
        critical = view.critical
        self._update_managed(name, failure_count=failures, last_error=message, next_attempt_at=next_attempt)
        self._update_renewal(name, last_failure_at=now, alarm_raised=view.renewal.alarm_raised or critical)
        where = f"next attempt {_fmt(next_attempt)}"
        if critical:
            life = ("no certificate to serve" if view.issued is None else
                    f"the served certificate expires {_fmt(view.issued.not_after)}")
            log.error("%s: renewal failed (%d in a row) and %s: %s; %s", name, failures, life, message, where,
                      exc_info=not isinstance(exc, CertdError))
            self._notify(Alert("renewal-failing", name, tuple(view.cert_cfg.domains),
                               view.issued.not_after if view.issued else None, failures, message, next_attempt))
        else:
            log.warning("%s: renewal failed (%d in a row): %s; %s", name, failures, message, where,
                        exc_info=not isinstance(exc, CertdError))
        settled = self._settle(self._evaluate(name, self._clock(), persist=True), "failed")
        return CheckResult(name, "failed", view.decision.reason, settled.next_check, settled.renew_at,
                           message, critical=critical)

    def _deploy_failed(self, view: _View, message: str, action: Action, *, record_only: bool = False,
                       written: tuple[str, ...] = ()) -> CheckResult:
        name = view.cert_cfg.name
        now = self._clock()
        _, _, renewal = records.load(self.engine, name)
        failures = renewal.deploy_failures + 1
        retry_at = rules.next_attempt_time(now, failures, jitter=2 * self._rand() - 1)
        self._update_renewal(name, deploy_failures=failures, deploy_retry_at=retry_at, last_failure_at=now)
        log.error("%s: deploy failed (%d in a row): %s; retried %s without re-issuing",
                  name, failures, message, _fmt(retry_at))
        if record_only:
            return self._result(view, action, message, now)
        settled = self._settle(self._evaluate(name, self._clock(), persist=True), action)
        return CheckResult(name, "failed" if action == "failed" else action, view.repair or message,
                           settled.next_check, settled.renew_at, message, written=written, hooks_ok=False)

    def _settle(self, view: _View, action: Action, *, persist: bool = True) -> CheckResult:
        """Work out when to look again and record it with the current reason."""
        pending = view.renewal.deploy_retry_at if view.repair else None
        next_check = rules.next_check_time(
            view.now, view.decision, max_interval=self._max_interval,
            not_after=view.issued.not_after if view.issued else None,
            next_attempt_at=view.managed.next_attempt_at if view.decision.due else None,
            ari_next_check_at=view.renewal.ari_next_check_at if view.renewal.ari_cert_id else None,
            pending_retry_at=pending,
        )
        if persist:
            self._update_managed(view.cert_cfg.name, next_check_at=next_check,
                                 renew_reason=view.decision.reason, renew_at=view.decision.renew_at)
        reason = view.repair if (action == "waiting" and not view.decision.due and view.repair) \
            else view.decision.reason
        log.debug("%s: %s (%s); next check %s", view.cert_cfg.name, action, reason, _fmt(next_check))
        return self._result(view, action, reason, next_check, error=view.managed.last_error)

    @staticmethod
    def _result(view: _View, action: Action, reason: str, next_check: dt.datetime,
                error: str | None = None) -> CheckResult:
        return CheckResult(view.cert_cfg.name, action, reason, next_check, view.decision.renew_at, error,
                           critical=view.critical)

    def _fence(self, name: str) -> leases.Fence | None:
        lease = self._held.get(name)
        return lease.fence if lease is not None else None

    def _update_managed(self, name: str, **fields: object) -> None:
        records.upsert(self.engine, ManagedCertificate, name, self._fence(name), **fields)

    def _update_renewal(self, name: str, **fields: object) -> None:
        records.upsert(self.engine, RenewalState, name, self._fence(name), **fields)

    def _notify(self, alert: Alert) -> None:
        daemon_cfg = self.config.daemon
        run_notify_hook(daemon_cfg.notify_hook, alert, now=self._clock(), timeout=daemon_cfg.notify_timeout,
                        hide_env=self._hide_env)


def _hook_errors(hooks: list[deploy_mod.HookResult]) -> str:
    return "; ".join(f"hook {h.command!r} failed: {h.detail}" for h in hooks if not h.ok)


def _fmt(moment: dt.datetime | None) -> str:
    return "-" if moment is None else moment.astimezone(dt.timezone.utc).strftime("%Y-%m-%d %H:%M:%S UTC")
