"""The daemon's own wiring under awkward timing: reloads during a check, a listener that cannot
bind, a config file that is not UTF-8."""

from __future__ import annotations

import asyncio
import datetime as dt
import socket
import threading
import time

import certd.renewal.check as maintain
from certd.runtime.daemon import Daemon
from certd.sandbox.certd_config import ocpp_listener, ocpp_toml
from tests.daemon.conftest import cert_toml, run, running_daemon
from tests.waits import accepts_connections as _listening, until


def test_a_reload_during_a_check_still_leaves_the_certificate_scheduled(make_setup, monkeypatch) -> None:
    """SIGHUP while `web` is being checked: the re-check it asks for runs, and `web` keeps a job."""
    calls: list[float] = []
    lock = threading.Lock()

    def slow_check(self, name, *, cancel=None, **_):  # type: ignore[no-untyped-def]
        with lock:
            calls.append(time.monotonic())
        time.sleep(1.0)  # an order in progress (the renewal logic itself is not under test here)
        return maintain.CheckResult(name, "none", "backstop",
                                    dt.datetime.now(dt.timezone.utc) + dt.timedelta(days=1))

    monkeypatch.setattr(maintain.Maintainer, "check", slow_check)
    setup = make_setup(cert_toml("web", ["local.example.com"]), validity=3600)

    async def scenario() -> None:
        daemon = Daemon(setup.config_path, setup.config, install_signals=False)
        await daemon.start()
        try:
            await until(lambda: calls, "the first check")
            await asyncio.sleep(0.2)  # the first check is running
            setup.config_path.write_text(setup.text.replace('["local.example.com"]',
                                                            '["local.example.com", "www.example.com"]'))
            assert await daemon.reload()
            await until(lambda: len(calls) >= 2, "the re-check", 10)
            assert len(calls) == 2  # the re-check ran once the first check was done
            await asyncio.sleep(1.2)
            jobs = [j.id for j in daemon._scheduler.get_jobs() if j.id.startswith("check:")]
            assert jobs == ["check:web"]  # and the next one is planned
        finally:
            await daemon.stop()

    run(scenario())


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def test_a_listener_that_cannot_bind_does_not_leave_the_others_open(make_setup) -> None:
    first, second = _free_port(), _free_port()
    blocker = socket.socket()
    blocker.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    blocker.bind(("127.0.0.1", second))
    blocker.listen()
    listeners = [ocpp_listener(name, "local.example.com", port=port, insecure=True)
                 for name, port in (("a", first), ("b", second))]
    setup = make_setup(cert_toml("web", ["local.example.com"]), validity=3600,
                       extra=ocpp_toml(listeners, reload_check_interval=0))

    async def scenario() -> None:
        async with running_daemon(setup) as daemon:
            assert daemon.ocpp is None  # the endpoint failed to start (and said why)
            assert not _listening(first)  # nothing half-started keeps port a
            blocker.close()  # the conflict is gone: the next reload starts both
            assert await daemon.reload()
            assert daemon.ocpp is not None and _listening(first) and _listening(second)
        assert not _listening(first) and not _listening(second)

    try:
        run(scenario())
    finally:
        blocker.close()


def test_a_config_that_is_not_utf8_is_refused_and_systemd_hears_ready_again(make_setup, tmp_path) -> None:
    notify = tmp_path / "notify.sock"
    receiver = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    receiver.bind(str(notify))
    receiver.settimeout(5)
    setup = make_setup(cert_toml("web", ["local.example.com"]), validity=3600)
    from certd.runtime.sdnotify import Notifier

    async def scenario() -> None:
        daemon = Daemon(setup.config_path, setup.config, install_signals=False,
                        notifier=Notifier(str(notify)))
        await daemon.start()
        try:
            setup.config_path.write_bytes(setup.text.encode() + "# caf\xe9\n".encode("latin-1"))
            assert await daemon.reload() is False  # old config kept, no exception
        finally:
            await daemon.stop()

    run(scenario())
    messages = []
    while True:
        try:
            messages.append(receiver.recv(4096).decode())
        except (TimeoutError, socket.timeout):
            break
        if any("STOPPING=1" in m for m in messages):
            break
    receiver.close()
    reloading = next(i for i, m in enumerate(messages) if "RELOADING=1" in m)
    assert any("READY=1" in m for m in messages[reloading + 1:]), messages


def test_shutdown_waits_for_periodic_jobs_only_up_to_shutdown_timeout(make_setup, monkeypatch) -> None:
    """A DNS sync stuck on a slow Cloudflare API: stop() gives it `shutdown_timeout`, then reports
    stuck threads (so `certd run` exits without waiting for them) instead of hanging."""
    import certd.dns.sync as dns_sync

    started, release = threading.Event(), threading.Event()

    def stuck_sync(*_args, **_kwargs):  # type: ignore[no-untyped-def]
        started.set()
        release.wait(60)  # stands in for a call that does not come back

    monkeypatch.setattr(dns_sync, "sync_hosts", stuck_sync)
    extra = ('[daemon]\nshutdown_timeout = 2\n[dns_records]\ninterval = 300\n'
             '[[hosts]]\nname = "nas.example.com"\naddress = "192.168.1.50"\n')
    setup = make_setup(cert_toml("web", ["local.example.com"]), validity=3600, extra=extra)

    async def scenario() -> None:
        daemon = Daemon(setup.config_path, setup.config, install_signals=False)
        await daemon.start()
        try:
            await until(started.is_set, "the periodic job to start")
        finally:
            began = time.monotonic()
            await daemon.stop()
            took = time.monotonic() - began
        assert daemon.stuck_threads
        assert 1.5 <= took < 10, took

    try:
        run(scenario())
    finally:
        release.set()
