"""`certd run` as a real process: SIGTERM/SIGINT mid-order, SIGHUP with good and broken
configs, restarts, and the systemd notify protocol."""

from __future__ import annotations

import os
import signal
import socket
from pathlib import Path

from sqlmodel import select

from certd.store.db import session_scope
from certd.store.models import ChallengeRecord
from tests.daemon.conftest import cert_toml, log_text, wait_until


def test_sigterm_during_an_order_abandons_it_and_leaves_no_txt_record(make_setup) -> None:
    setup = make_setup(cert_toml("web", ["local.example.com", "*.example.com"]))
    # Records never become visible: the order sits in its propagation wait with TXT records created.
    setup.world.emulator.propagation_delay = 3600
    proc = setup.spawn("run")
    wait_until(lambda: len(setup.txt_records()) == 2 or proc.poll() is not None, 60, "the TXT records")
    assert proc.poll() is None, log_text(proc)
    assert {r["name"] for r in setup.txt_records()} == {"_acme-challenge.local.example.com",
                                                        "_acme-challenge.example.com"}
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(30) == 0, log_text(proc)
    assert setup.txt_records() == []
    with session_scope(setup.engine) as session:
        assert session.exec(select(ChallengeRecord)).all() == []
    assert [a.outcome for a in setup.attempts("web")] == ["abandoned"]
    assert setup.managed("web").failure_count == 0  # shutting down is not a failure
    assert "SIGTERM: stopping" in log_text(proc)


def test_sigint_stops_an_idle_daemon_with_exit_0(make_setup) -> None:
    setup = make_setup(cert_toml("web", ["local.example.com"]), validity=3600)
    proc = setup.spawn("run")
    wait_until(lambda: setup.current("web") is not None and setup.managed("web").next_check_at is not None
               or proc.poll() is not None, 60, "the first issuance")
    proc.send_signal(signal.SIGINT)
    assert proc.wait(30) == 0, log_text(proc)


def test_sighup_keeps_the_old_config_on_errors_and_applies_a_good_one(make_setup) -> None:
    setup = make_setup(cert_toml("web", ["local.example.com"]), validity=3600)
    proc = setup.spawn("run")
    wait_until(lambda: setup.current("web") is not None or proc.poll() is not None, 60, "the first issuance")

    # 1. A broken file: the daemon says what is wrong and keeps running on the old config.
    setup.config_path.write_text(setup.text.replace('domains = ["local.example.com"]',
                                                    'domains = ["local.example.com"]\nrenew_before = 5'))
    proc.send_signal(signal.SIGHUP)
    wait_until(lambda: "reload failed" in log_text(proc) or proc.poll() is not None, 30, "the reload error")
    text = log_text(proc)
    assert proc.poll() is None, text
    assert "still running on the previous configuration" in text
    assert "certificates[0].renew_before: unknown key" in text

    # 2. Not TOML at all.
    setup.config_path.write_text("this is [not toml")
    proc.send_signal(signal.SIGHUP)
    wait_until(lambda: log_text(proc).count("reload failed") == 2 or proc.poll() is not None, 30, "2nd error")
    assert proc.poll() is None and "not valid TOML" in log_text(proc)

    # 3. A good file with one more certificate: applied, the new one is issued.
    setup.config_path.write_text(setup.text + "\n" + cert_toml("net", ["a.example.net"]))
    proc.send_signal(signal.SIGHUP)
    wait_until(lambda: setup.current("net") is not None or proc.poll() is not None, 60, "the new certificate")
    assert proc.poll() is None
    assert "configuration reloaded: 2 certificate(s)" in log_text(proc)

    proc.send_signal(signal.SIGTERM)
    assert proc.wait(30) == 0
    attempts = len(setup.attempts())
    assert attempts == 2

    # A restart reads the store: both certificates are valid, nothing is ordered.
    before = {name: setup.managed(name).updated_at for name in ("web", "net")}
    proc = setup.spawn("run")
    wait_until(lambda: all(setup.managed(n).updated_at > t for n, t in before.items()) or proc.poll() is not None,
               60, "the checks after the restart")
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(30) == 0, log_text(proc)
    assert len(setup.attempts()) == attempts


def _notify_socket(tmp_path: Path) -> socket.socket:
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(str(tmp_path / "notify.sock"))
    sock.settimeout(30)
    return sock


def test_systemd_readiness_watchdog_and_stopping(make_setup, tmp_path: Path) -> None:
    setup = make_setup(cert_toml("web", ["local.example.com"]), validity=3600)
    sock = _notify_socket(tmp_path)
    env = setup.env()
    env.update(NOTIFY_SOCKET=str(tmp_path / "notify.sock"), WATCHDOG_USEC="400000")
    env.pop("WATCHDOG_PID", None)
    proc = setup.spawn("run", env=env)
    messages: list[str] = []
    try:
        while not any("READY=1" in m for m in messages):
            messages.append(sock.recv(4096).decode())
        ready = next(m for m in messages if "READY=1" in m)
        assert "STATUS=1 certificate(s)" in ready
        # Pings every WATCHDOG_USEC/2 = 0.2 s; wait for a few.
        while sum("WATCHDOG=1" in m for m in messages) < 3:
            messages.append(sock.recv(4096).decode())
        proc.send_signal(signal.SIGHUP)
        while not any("RELOADING=1" in m for m in messages):
            messages.append(sock.recv(4096).decode())
        reloading = next(m for m in messages if "RELOADING=1" in m)
        assert "MONOTONIC_USEC=" in reloading
        proc.send_signal(signal.SIGTERM)
        while not any("STOPPING=1" in m for m in messages):
            messages.append(sock.recv(4096).decode())
        assert proc.wait(30) == 0
    finally:
        sock.close()
        if proc.poll() is None:
            proc.kill()
    assert os.path.exists(tmp_path / "notify.sock")
