"""The periodic jobs `certd run` keeps next to the renewals: one table, one entry per job.

Each job runs once when the daemon starts (and after every reload), then on its
interval. Its work is synchronous (Cloudflare SDK, store, HTTP) and runs in a worker
thread, under the job's lease when it has one: several certd processes may share the
store, and a job leased elsewhere right now is skipped this round (that process does
the same work). A CertdError is logged as "<what> failed: ..." and the job runs again
at its next interval. Adding a job means adding one `PeriodicJob` to `PERIODIC_JOBS`.

The systemd watchdog ping is no entry here: it is enabled by the environment, not the
config, and must run on the event loop (it proves the loop is alive).
"""

from __future__ import annotations

import datetime as dt
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, TypeVar

import sqlalchemy as sa

from certd.config import Config
from certd.errors import CertdError
from certd.store import leases

if TYPE_CHECKING:
    from certd.renewal.check import Maintainer

log = logging.getLogger("certd.daemon")

T = TypeVar("T")

OUTBOX_INTERVAL = 60.0
# Challenge records another process (a killed `certd issue`, a crashed node) left behind.
CHALLENGE_CLEANUP_INTERVAL = 600.0
BUNDLE_REFRESH_INTERVAL = 24 * 3600.0  # drops CA certificates that expired from fleet bundles
PURPOSE = "certd run"  # who holds a lease, in other processes' messages


@dataclass(frozen=True)
class JobRun:
    """What one run of a job works with: the config and adapters of that moment."""

    config: Config
    engine: sa.Engine
    maintainer: Maintainer  # its `dns()` is the daemon's Cloudflare adapter
    clock: Callable[[], dt.datetime]
    now: dt.datetime


@dataclass(frozen=True)
class PeriodicJob:
    """One entry of the table: everything the daemon needs to schedule and guard the job."""

    name: str                                   # the scheduler's job id
    what: str                                   # for the log: "<what> failed: ..."
    interval: Callable[[Config], float]         # seconds between runs
    lease: str | None                           # job lease held while it works (leases.job_lease); None: none
    enabled: Callable[[Config, sa.Engine], bool]  # whether the config wants it (worker thread: may read the store)
    work: Callable[[JobRun], None]              # the work itself (worker thread)


def leased(engine: sa.Engine, job: str, clock: Callable[[], dt.datetime],
           func: Callable[..., T], *args: Any, **kwargs: Any) -> T | None:
    """Run `func` under the lease of `job` (worker thread); None when another certd process
    sharing the store runs it right now (it does the same work)."""
    try:
        with leases.held(engine, leases.job_lease(job), PURPOSE, clock=clock):
            return func(*args, **kwargs)
    except leases.LeaseBusy as busy:
        log.info("%s: skipped this round: %s", job, busy)
        return None


async def run_periodic(job: PeriodicJob, run: JobRun, in_thread: Callable[..., Awaitable[Any]]) -> None:
    """One run of `job`: its work in a worker thread (`in_thread`), under its lease if it has one."""
    try:
        if job.lease is None:
            await in_thread(job.work, run)
        else:
            await in_thread(leased, run.engine, job.lease, run.clock, job.work, run)
    except CertdError as exc:
        log.error("%s failed: %s", job.what, exc)


def enabled_jobs(config: Config, engine: sa.Engine) -> list[PeriodicJob]:
    """The jobs `config` wants, in table order (worker thread: a predicate may read the store)."""
    return [job for job in PERIODIC_JOBS if job.enabled(config, engine)]


# -- the jobs --------------------------------------------------------------------------------

def remove_leftover_challenges(run: JobRun) -> None:
    from certd.dns.challenges import cleanup_leftover_records

    cleanup_leftover_records(run.maintainer.dns(), run.engine, PURPOSE)


def dns_sync_wanted(config: Config, engine: sa.Engine) -> bool:
    from certd.dns.sync import sync_wanted

    return sync_wanted(config, engine)


def dns_sync_interval(config: Config) -> float:
    from certd.dns.sync import sync_interval

    return float(sync_interval(config))


def sync_dns_records(run: JobRun) -> None:
    from certd.dns.sync import sync_hosts

    report = sync_hosts(run.config, run.engine, run.maintainer.dns(), apply=True)
    log.log(logging.WARNING if report.outcome == "failed" else logging.DEBUG,
            "gray-cloud DNS sync: %s", report.outcome)


def deliver_outbox(run: JobRun) -> None:
    from certd.trust.outbox import deliver

    try:
        # No job lease: every delivery row is claimed on its own (certd.trust.outbox).
        deliver(run.config, run.engine, now=run.now)
    except CertdError:
        raise  # logged like every job's
    except Exception as exc:  # noqa: BLE001 - the job runs again in a minute; keep the daemon up
        # Send failures are recorded per row by deliver(); what reaches here is the store or
        # a bug. Only the type is logged: a message could quote a registry header value.
        log.error("fleet registry delivery failed: %s (retried in %d s)", type(exc).__name__, OUTBOX_INTERVAL)


def refresh_fleet_bundles(run: JobRun) -> None:
    from certd.trust.track import refresh_bundles

    result = refresh_bundles(run.config, run.engine, now=run.now, reason="daily refresh")
    for warning in result.warnings:
        log.warning("fleet CA bundles: %s", warning)


PERIODIC_JOBS: tuple[PeriodicJob, ...] = (
    PeriodicJob("challenge-cleanup", "challenge record cleanup", lambda _: CHALLENGE_CLEANUP_INTERVAL,
                lease=None, enabled=lambda _config, _engine: True, work=remove_leftover_challenges),
    PeriodicJob("dns-sync", "gray-cloud DNS sync", dns_sync_interval,
                lease="dns-sync", enabled=dns_sync_wanted, work=sync_dns_records),
    PeriodicJob("trust-outbox", "fleet registry delivery", lambda _: OUTBOX_INTERVAL,
                lease=None, enabled=lambda config, _engine: bool(config.trust.registries), work=deliver_outbox),
    PeriodicJob("trust-refresh", "fleet CA bundle refresh", lambda _: BUNDLE_REFRESH_INTERVAL,
                lease="trust-refresh", enabled=lambda config, _engine: bool(config.trust.bundles),
                work=refresh_fleet_bundles),
)
