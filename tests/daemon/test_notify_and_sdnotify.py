"""The notify hook (real /bin/sh subprocesses) and the sd_notify protocol (real AF_UNIX sockets)."""

from __future__ import annotations

import datetime as dt
import json
import logging
import os
import shlex
import socket
from pathlib import Path

import pytest

from certd.config import parse_config
from certd.notify import Alert, run_notify_hook
from certd.runtime.sdnotify import Notifier

NOW = dt.datetime(2027, 5, 1, 8, 0, tzinfo=dt.timezone.utc)


def alert(**changes) -> Alert:  # type: ignore[no-untyped-def]
    base = dict(event="renewal-failing", name="web", domains=("a.example.com", "*.example.com"),
                not_after=NOW + dt.timedelta(hours=30), failures=3,
                error="Cloudflare failed to create TXT: HTTP 503", next_attempt=NOW + dt.timedelta(minutes=100))
    base.update(changes)
    return Alert(**base)  # type: ignore[arg-type]


def test_hook_gets_details_on_stdin_and_in_env_without_secrets(tmp_path: Path,
                                                               monkeypatch: pytest.MonkeyPatch) -> None:
    out = tmp_path / "out"
    monkeypatch.setenv("MY_CF_TOKEN", "tok-very-secret-123")
    monkeypatch.setenv("UNRELATED", "kept")
    command = f"cat > {shlex.quote(str(out))}.json; env > {shlex.quote(str(out))}.env"
    assert run_notify_hook(command, alert(), now=NOW, timeout=10, hide_env=["MY_CF_TOKEN"])
    payload = json.loads(Path(f"{out}.json").read_text())
    assert payload["event"] == "renewal-failing" and payload["failures"] == 3
    assert payload["domains"] == ["a.example.com", "*.example.com"]
    assert payload["not_after"] == "2027-05-02T14:00:00+00:00"
    assert payload["message"] == (
        "certd: renewing web (a.example.com, *.example.com) failed 3 time(s) in a row and the certificate "
        "expires in 30.0 hours (2027-05-02 14:00 UTC): Cloudflare failed to create TXT: HTTP 503; "
        "next attempt 2027-05-01 09:40 UTC")
    env = Path(f"{out}.env").read_text()
    assert "CERTD_CERT_NAME=web\n" in env and "CERTD_FAILURES=3\n" in env
    assert "CERTD_DOMAINS=a.example.com *.example.com\n" in env
    assert "UNRELATED=kept" in env
    assert "tok-very-secret-123" not in env and "MY_CF_TOKEN" not in env


def test_messages_for_expired_missing_and_recovered() -> None:
    assert "EXPIRED at 2027-04-30 08:00 UTC" in alert(not_after=NOW - dt.timedelta(days=1)).message(NOW)
    assert "no certificate has been issued yet" in alert(not_after=None).message(NOW)
    assert "expires in 5.0 days" in alert(not_after=NOW + dt.timedelta(days=5)).message(NOW)
    recovered = alert(event="renewal-recovered", failures=0, error=None, next_attempt=None)
    assert recovered.message(NOW).startswith("certd: web renewed again after failures")


def test_failing_slow_or_missing_hooks_are_logged_never_raised(tmp_path: Path,
                                                                caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.ERROR, logger="certd.notify"):
        assert run_notify_hook("echo nope >&2; exit 4", alert(), now=NOW, timeout=10) is False
        assert run_notify_hook("sleep 5", alert(), now=NOW, timeout=0.2) is False
        assert run_notify_hook(None, alert(), now=NOW, timeout=1) is False
    messages = [r.getMessage() for r in caplog.records]
    assert any("exit 4" in m and "nope" in m for m in messages)
    assert any("timed out" in m for m in messages)


def test_secret_env_names_cover_every_configured_secret() -> None:
    config = parse_config("""
[acme]
directory = "https://ca.example/dir"
[acme.eab]
kid = "k"
hmac_key_env = "EAB_HMAC"
[cloudflare]
api_token_env = "CF_TOKEN"
zone_token_env = "CF_ZONE"
""")
    assert {"CF_TOKEN", "CF_ZONE", "EAB_HMAC"} <= set(config.secret_env_names())


def test_daemon_config_validation_names_the_key() -> None:
    from certd.errors import ConfigError

    with pytest.raises(ConfigError, match=r"daemon\.concurrency: Input should be less than or equal to 16"):
        parse_config("[daemon]\nconcurrency = 99\n")
    with pytest.raises(ConfigError, match=r"daemon\.notify_hook: must be a shell command"):
        parse_config('[daemon]\nnotify_hook = "  "\n')
    with pytest.raises(ConfigError, match=r"daemon\.ari_min_interval"):
        parse_config("[daemon]\nari_min_interval = 5\n")


# -- sd_notify --------------------------------------------------------------------------------

def test_notifier_is_silent_outside_systemd() -> None:
    notifier = Notifier.from_env({})
    assert not notifier.enabled and notifier.ready("x") is False and notifier.watchdog_interval is None


def test_notifier_sends_to_a_path_socket(tmp_path: Path) -> None:
    path = tmp_path / "n.sock"
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as server:
        server.bind(str(path))
        server.settimeout(5)
        notifier = Notifier.from_env({"NOTIFY_SOCKET": str(path), "WATCHDOG_USEC": "30000000"})
        assert notifier.watchdog_interval == 15.0
        assert notifier.ready("2 certificate(s)")
        assert server.recv(1024) == b"READY=1\nSTATUS=2 certificate(s)"
        assert notifier.watchdog()
        assert server.recv(1024) == b"WATCHDOG=1"


def test_notifier_abstract_socket_and_watchdog_pid() -> None:
    name = f"certd-test-{os.getpid()}"
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as server:
        server.bind("\0" + name)
        server.settimeout(5)
        notifier = Notifier.from_env({"NOTIFY_SOCKET": "@" + name})
        assert notifier.stopping()
        assert server.recv(1024) == b"STOPPING=1"
    # A watchdog meant for another process (WATCHDOG_PID) is not ours to feed.
    other = Notifier.from_env({"NOTIFY_SOCKET": "@x", "WATCHDOG_USEC": "1000", "WATCHDOG_PID": "1"})
    assert other.watchdog_interval is None


def test_notifier_survives_a_gone_socket(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    notifier = Notifier.from_env({"NOTIFY_SOCKET": str(tmp_path / "absent.sock")})
    with caplog.at_level(logging.WARNING):
        assert notifier.ready("x") is False
    assert "sd_notify" in caplog.text


def test_notifier_never_blocks_when_nobody_reads(tmp_path: Path) -> None:
    """A manager that stops reading must not freeze the daemon's event loop: messages are dropped."""
    path = tmp_path / "full.sock"
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as server:
        server.bind(str(path))
        notifier = Notifier.from_env({"NOTIFY_SOCKET": str(path)})
        results = [notifier.send(STATUS=f"message {i}") for i in range(5000)]
        assert results[0] is True and results[-1] is False  # the queue filled up; sends were dropped
        assert server.recv(1024) == b"STATUS=message 0"


def test_status_is_sent_only_when_it_changes(tmp_path: Path) -> None:
    path = tmp_path / "n.sock"
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as server:
        server.bind(str(path))
        server.settimeout(5)
        notifier = Notifier.from_env({"NOTIFY_SOCKET": str(path)})
        assert notifier.status("a") and not notifier.status("a") and notifier.status("b")
        assert server.recv(1024) == b"STATUS=a" and server.recv(1024) == b"STATUS=b"
