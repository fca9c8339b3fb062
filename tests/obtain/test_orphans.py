"""Records left by a killed run are removed by the next certd command that touches the certificate,
even one that has nothing to order."""

from __future__ import annotations

import signal
import subprocess
import sys
import time

from sqlmodel import select

from certd.store.db import session_scope
from certd.store.models import ChallengeRecord
from tests.obtain.conftest import cert_toml
from tests.obtain.test_failures import txt_records


def killed_mid_order(setup, *args: str) -> list[dict]:  # type: ignore[no-untyped-def]
    """Run `certd issue web ARGS` until both TXT records exist, then SIGKILL it (no finally runs)."""
    setup.world.emulator.propagation_delay = 3600
    proc = subprocess.Popen(
        [sys.executable, "-m", "certd", "--config", str(setup.config_path), "issue", "web", *args],
        env=setup.env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )
    try:
        deadline = time.monotonic() + 30
        while len(txt_records(setup.world)) < 2 and time.monotonic() < deadline and proc.poll() is None:
            time.sleep(0.05)
        created = txt_records(setup.world)
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.communicate(timeout=10)
    setup.world.emulator.propagation_delay = 0
    return created


def test_issue_with_nothing_due_still_removes_what_a_killed_run_left(make_setup) -> None:
    setup = make_setup(cert_toml("web", ["local.example.com", "www.example.com"]))
    first = setup.cli("issue", "web")
    assert first.returncode == 0, first.stderr

    assert len(killed_mid_order(setup, "--force")) == 2
    with session_scope(setup.engine) as session:
        assert len(session.exec(select(ChallengeRecord)).all()) == 2

    again = setup.cli("issue", "web")  # the certificate is valid and not due: nothing is ordered
    assert again.returncode == 0, again.stderr
    assert "not due" in again.stdout
    assert "left by an interrupted order of web" in again.stderr
    assert txt_records(setup.world) == []
    with session_scope(setup.engine) as session:
        assert session.exec(select(ChallengeRecord)).all() == []


def test_renew_with_nothing_due_removes_them_too(make_setup) -> None:
    setup = make_setup(cert_toml("web", ["local.example.com", "www.example.com"]))
    assert setup.cli("issue", "web").returncode == 0

    assert len(killed_mid_order(setup, "--force")) == 2
    again = setup.cli("renew", "web")
    assert again.returncode == 0, again.stderr
    assert "not due" in again.stdout
    assert txt_records(setup.world) == []


def test_nothing_to_clean_opens_no_dns_provider(make_setup) -> None:
    """The common case stays cheap: with no leftover rows, `certd issue` on a certificate that is
    not due never talks to Cloudflare (a wrong token would fail it otherwise)."""
    setup = make_setup(cert_toml("web", ["local.example.com"]))
    assert setup.cli("issue", "web").returncode == 0
    setup.world.emulator.clear_requests()
    again = setup.cli("issue", "web")
    assert again.returncode == 0, again.stderr
    assert setup.world.emulator.requests == []
