"""certd.runtime.jobs: which periodic jobs a config wants, how often, under which lease; and how
one run is guarded (a lease held elsewhere skips the round, a CertdError is logged, not raised)."""

from __future__ import annotations

import asyncio
import datetime as dt
import functools
import logging
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import pytest
import sqlalchemy as sa

from certd.config import Config, parse_config
from certd.errors import CertdError
from certd.renewal.check import Maintainer
from certd.runtime import jobs
from certd.store import leases
from certd.store.db import make_engine, upgrade

T = TypeVar("T")

CERTIFICATE = '[[certificates]]\nname = "web"\ndomains = ["a.example.com"]\n'
EVERYTHING = """
[dns_records]
interval = 120

[[hosts]]
name = "nas.example.com"
address = "192.168.1.50"

[trust.anchor_sets]
lab = "/nonexistent/anchors"

[[trust.bundles]]
name = "fleet"
certificates = ["web"]
anchors = "lab"

[[trust.registries]]
name = "fleetreg"
url = "https://127.0.0.1:9/registry"
hmac_secret_file = "/nonexistent/registry.hmac"
"""


def _config(tmp_path: Path, extra: str = "") -> Config:
    return parse_config(f'state_dir = "{tmp_path / "state"}"\n{CERTIFICATE}{extra}', str(tmp_path / "certd.toml"))


@pytest.fixture
def engine(tmp_path: Path):  # type: ignore[no-untyped-def]
    url = f"sqlite:///{tmp_path / 'certd.db'}"
    upgrade(url)
    engine = make_engine(url)
    yield engine
    engine.dispose()


def test_only_the_challenge_cleanup_runs_without_hosts_registries_or_bundles(tmp_path, engine) -> None:
    [job] = jobs.enabled_jobs(_config(tmp_path), engine)
    assert (job.name, job.lease, job.interval(_config(tmp_path))) == ("challenge-cleanup", None, 600.0)


def test_each_configured_part_brings_its_job_with_its_interval_and_lease(tmp_path, engine) -> None:
    config = _config(tmp_path, EVERYTHING)
    wanted = [(j.name, j.interval(config), j.lease) for j in jobs.enabled_jobs(config, engine)]
    assert wanted == [
        ("challenge-cleanup", 600.0, None),
        ("dns-sync", 120.0, "dns-sync"),          # [dns_records] interval
        ("trust-outbox", 60.0, None),             # every delivery row is claimed on its own
        ("trust-refresh", 86400.0, "trust-refresh"),
    ]
    assert [j.name for j in jobs.PERIODIC_JOBS] == [name for name, _, _ in wanted]  # one table, in order


def _run(job: jobs.PeriodicJob, config: Config, engine: sa.Engine) -> None:
    async def in_thread(func: Callable[..., T], *args: Any) -> T:
        return await asyncio.get_running_loop().run_in_executor(None, functools.partial(func, *args))

    now = dt.datetime.now(dt.timezone.utc)
    run = jobs.JobRun(config, engine, Maintainer(config, engine), lambda: now, now=now)
    asyncio.run(jobs.run_periodic(job, run, in_thread))


def test_a_job_whose_lease_is_held_elsewhere_skips_the_round(tmp_path, engine, caplog) -> None:
    done: list[str] = []
    job = jobs.PeriodicJob("probe", "probe", lambda _: 1.0, lease="probe",
                           enabled=lambda _c, _e: True, work=lambda run: done.append("ran"))
    other = leases.acquire(engine, leases.job_lease("probe"), "certd run")  # another process, as far as the store knows
    with caplog.at_level(logging.INFO, logger="certd.daemon"):
        _run(job, _config(tmp_path), engine)
    assert done == [] and "probe: skipped this round: job:probe is held by certd run" in caplog.text
    leases.release(engine, other)
    _run(job, _config(tmp_path), engine)
    assert done == ["ran"]
    with engine.connect() as conn:  # the lease was given back after the run
        assert conn.execute(sa.select(leases.Lease.__table__)).first() is None  # type: ignore[attr-defined]


def test_a_certd_error_is_logged_with_what_failed_and_not_raised(tmp_path, engine, caplog) -> None:
    def fail(run: jobs.JobRun) -> None:
        raise CertdError("the store is read-only")

    job = jobs.PeriodicJob("probe", "probe work", lambda _: 1.0, lease=None, enabled=lambda _c, _e: True, work=fail)
    with caplog.at_level(logging.ERROR, logger="certd.daemon"):
        _run(job, _config(tmp_path), engine)
    assert [r.getMessage() for r in caplog.records] == ["probe work failed: the store is read-only"]


def test_the_daemon_schedules_the_table_and_a_reload_drops_what_the_new_config_leaves_out(
        make_setup, pebble_factory, tmp_path) -> None:  # type: ignore[no-untyped-def]
    from certd.sandbox.certd_config import toml_str
    from tests.daemon.conftest import cert_toml, run, running_daemon

    pebble = pebble_factory(validity_seconds=3600)
    anchors = tmp_path / "pebble-roots.pem"
    anchors.write_text("".join(pebble.roots()))
    trust = (f'[trust.anchor_sets]\npebble = {toml_str(anchors)}\n\n[[trust.bundles]]\nname = "fleet"\n'
             'certificates = ["web"]\nanchors = "pebble"\nflavours = ["roots"]\n')
    hosts = '[dns_records]\ninterval = 240\n\n[[hosts]]\nname = "nas.example.com"\naddress = "192.168.1.50"\n'
    setup = make_setup(cert_toml("web", ["local.example.com"]), pebble=pebble, extra=hosts + trust)

    def periodic(daemon) -> dict[str, float]:  # type: ignore[no-untyped-def]
        return {j.id: j.trigger.interval.total_seconds() for j in daemon._scheduler.get_jobs()
                if not j.id.startswith("check:")}

    async def scenario() -> None:
        async with running_daemon(setup) as daemon:
            assert periodic(daemon) == {"challenge-cleanup": 600.0, "dns-sync": 240.0, "trust-refresh": 86400.0}
            setup.config_path.write_text(setup.text.replace(trust, ""))
            assert await daemon.reload()
            # [trust] is gone: its refresh job with it; the hosts (and their sync) stay
            assert periodic(daemon) == {"challenge-cleanup": 600.0, "dns-sync": 240.0}

    run(scenario())
