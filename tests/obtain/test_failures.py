"""Failure paths: crashes, bad tokens, scoped tokens, rate limits and slow DNS."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

from sqlmodel import select

from certd.renewal import pipeline
from certd.sandbox.certd_config import TOKEN_ENV
from certd.store.db import session_scope
from certd.store.models import ChallengeRecord
from tests.obtain.conftest import cert_toml
from tests.waits import wait_until


def txt_records(world) -> list[dict]:  # type: ignore[no-untyped-def]
    return [r for r in world.emulator.records() if r["type"] == "TXT"]


def issue_waiting_with_records(setup) -> tuple[subprocess.Popen[str], list[dict]]:  # type: ignore[no-untyped-def]
    """`certd issue web` as a process, stopped in its propagation check with both TXT records
    created (they stay invisible on DNS); returns the process and the records."""
    setup.world.emulator.propagation_delay = 3600
    proc = subprocess.Popen(
        [sys.executable, "-m", "certd", "--config", str(setup.config_path), "issue", "web"],
        env=setup.env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )
    wait_until(lambda: len(txt_records(setup.world)) >= 2 or proc.poll() is not None, 30, "both TXT records")
    return proc, txt_records(setup.world)


def test_crash_between_txt_creation_and_cleanup_is_cleaned_at_next_start(make_setup) -> None:
    setup = make_setup(cert_toml("web", ["local.example.com", "www.example.com"]))
    proc, created = issue_waiting_with_records(setup)
    try:
        assert len(created) == 2
    finally:
        proc.send_signal(signal.SIGKILL)  # a crash: no finally blocks run
        proc.communicate(timeout=10)
    with session_scope(setup.engine) as session:
        assert len(session.exec(select(ChallengeRecord)).all()) == 2

    setup.world.emulator.propagation_delay = 0
    result = setup.cli("issue", "web")
    assert result.returncode == 0, result.stderr
    assert "left by an interrupted order of web" in result.stderr
    assert txt_records(setup.world) == []
    with session_scope(setup.engine) as session:
        assert session.exec(select(ChallengeRecord)).all() == []


def test_a_second_command_leaves_the_records_of_an_order_in_flight_alone(make_setup) -> None:
    """The start-up cleanup removes only what dead runs left: a running order keeps its records."""
    setup = make_setup(cert_toml("web", ["local.example.com", "www.example.com"]))
    first, created = issue_waiting_with_records(setup)
    try:
        assert len(created) == 2

        second = setup.cli("issue", "web")
        assert second.returncode == 75, second.stderr
        assert "certificate:web is held by certd issue" in second.stderr
        assert "removing" not in second.stderr
        assert txt_records(setup.world) == created  # not one of the live order's records touched

        setup.world.emulator.propagation_delay = 0
        out, err = first.communicate(timeout=90)
    finally:
        if first.poll() is None:
            first.kill()
            first.communicate()
    assert first.returncode == 0, err
    assert "web: issued serial" in out and pipeline.current_certificate(setup.engine, "web") is not None
    assert txt_records(setup.world) == []


def test_bad_token_gives_clear_error_without_the_token(make_setup) -> None:
    setup = make_setup(cert_toml("web", ["local.example.com"]))
    result = setup.cli("issue", "web", token="not-a-valid-token-1234567890")
    assert result.returncode == 1
    assert "token is invalid" in result.stderr
    assert "not-a-valid-token" not in result.stderr + result.stdout


def test_token_without_zone_access_names_the_permission(make_setup) -> None:
    setup = make_setup(cert_toml("web", ["local.example.com"]))
    setup.world.emulator.add_token("scoped-to-example-net", zones=["example.net"])
    result = setup.cli("issue", "web", token="scoped-to-example-net")
    assert result.returncode == 1
    assert "cannot see it" in result.stderr and "Zone:Read" in result.stderr
    assert "example.net" in result.stderr  # says which zones it does see


def test_token_without_dns_edit_names_the_permission(make_setup) -> None:
    setup = make_setup(cert_toml("web", ["local.example.com"]))
    setup.world.emulator.add_token("read-only-token", permissions={"zone:read", "dns:read"})
    result = setup.cli("issue", "web", token="read-only-token")
    assert result.returncode == 1
    assert "DNS:Edit" in result.stderr
    assert txt_records(setup.world) == []


def test_missing_token_env(make_setup) -> None:
    setup = make_setup(cert_toml("web", ["local.example.com"]))
    result = setup.cli("issue", "web", token=None)
    assert result.returncode == 2
    assert f"environment variable {TOKEN_ENV}" in result.stderr


def test_survives_429_bursts_and_5xx_without_duplicates(make_setup) -> None:
    setup = make_setup(cert_toml("web", ["local.example.com", "*.example.com"]))
    emulator = setup.world.emulator
    emulator.inject_429(3, retry_after=0.2)
    emulator.inject_5xx(1, status=502, writes_only=True, after_apply=True)  # created, answer lost
    issued = pipeline.issue_and_deploy(setup.config, setup.engine, "web").issued
    assert issued.serial
    assert txt_records(setup.world) == []
    statuses = [r.status for r in emulator.requests]
    assert statuses.count(429) == 3 and 502 in statuses


def test_survives_propagation_delay(make_setup) -> None:
    setup = make_setup(cert_toml("web", ["local.example.com"]))
    setup.world.emulator.propagation_delay = 1.5
    started = time.monotonic()
    issued = pipeline.issue_and_deploy(setup.config, setup.engine, "web").issued
    assert issued.serial
    assert time.monotonic() - started >= 1.5  # it waited for the records, not a fixed sleep
    assert txt_records(setup.world) == []


def test_bad_config_names_the_key(tmp_path) -> None:  # type: ignore[no-untyped-def]
    path = tmp_path / "certd.toml"
    path.write_text('[[certificates]]\nname = "web"\ndomains = ["192.168.1.100"]\nkey_type = "dsa"\n')
    result = subprocess.run([sys.executable, "-m", "certd", "--config", str(path), "check-config"],
                            capture_output=True, text=True, timeout=30, env=dict(os.environ))
    assert result.returncode == 2
    assert "certificates[0].domains: '192.168.1.100' is an IP address" in result.stderr
    assert "certificates[0].key_type" in result.stderr
