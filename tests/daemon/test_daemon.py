"""The renewal daemon in-process against Pebble + the Cloudflare emulator + sandbox DNS.

Short Pebble lifetimes make renewals happen inside the test; where waiting would be
slow (backoff of minutes, the last tenth of a one-hour certificate) the daemon's
clock is moved forward instead.
"""

from __future__ import annotations

import datetime as dt
import json
import logging
import shlex
from pathlib import Path

import pytest
from sqlmodel import select

from certd.renewal.rules import BACKOFF_JITTER
from certd.store.db import session_scope
from certd.store.models import ChallengeRecord, IssuedCertificate
from tests.daemon.conftest import MovableClock, cert_toml, run, running_daemon
from tests.waits import until

MINUTE = dt.timedelta(minutes=1)


def _approx_backoff(actual: dt.timedelta, step: dt.timedelta) -> bool:
    return step * (1 - BACKOFF_JITTER) - dt.timedelta(seconds=2) <= actual <= step * (1 + BACKOFF_JITTER)


async def _check_now(daemon, clock, name: str = "web"):  # type: ignore[no-untyped-def]
    """Let the daemon run the check of `name` now (as its scheduler would at the planned time)."""
    done = daemon.checks_done
    daemon.schedule(name, clock())
    assert await daemon.wait_for(lambda: daemon.checks_done > done, 60), "the check did not finish"
    return daemon.results[name]


def test_renews_on_schedule_redeploys_files_and_runs_hooks(make_setup, tmp_path: Path) -> None:
    hook_log = tmp_path / "hook.log"
    target = tmp_path / "ssl"
    setup = make_setup(
        cert_toml("web", ["local.example.com", "*.example.com"], target_dir=target,
                  hooks=[f"echo \"$CERTD_CERT_NAME $RENEWED_DOMAINS\" >> {shlex.quote(str(hook_log))}"]),
        validity=8)

    async def scenario() -> None:
        async with running_daemon(setup) as daemon:
            # Issued at start (nothing in the store), then renewed by the scheduler itself at half
            # of the 8 s lifetime, twice, with no help from the test.
            assert await daemon.wait_for(lambda: len(setup.attempts("web")) >= 3
                                         and daemon.results.get("web") is not None
                                         and daemon.results["web"].action == "renewed", 40)
        certs = setup.attempts("web")
        assert [a.outcome for a in certs[:3]] == ["success"] * 3
        current = setup.current("web")
        assert current is not None
        assert (target / "fullchain.pem").read_text().startswith(current.cert_pem.strip())
        assert (Path(setup.config.state_dir) / "live" / "web" / "cert.pem").read_text().strip() == \
            current.cert_pem.strip()
        lines = hook_log.read_text().splitlines()
        assert len(lines) >= 3 and set(lines) == {"web local.example.com *.example.com"}
        with session_scope(setup.engine) as session:
            serials = {c.serial for c in session.exec(select(IssuedCertificate)).all()}
        assert len(serials) >= 3
        assert setup.txt_records() == []

    run(scenario())


def test_restart_reads_the_store_and_does_not_reissue(make_setup) -> None:
    setup = make_setup(cert_toml("web", ["local.example.com"]), validity=3600)

    async def scenario() -> None:
        async with running_daemon(setup) as daemon:
            assert await daemon.wait_for(lambda: "web" in daemon.results, 60)
            assert daemon.results["web"].action == "renewed"
        first = setup.current("web")
        orders_before = len(setup.attempts())
        for _ in range(2):  # two more restarts
            async with running_daemon(setup) as daemon:
                assert await daemon.wait_for(lambda: "web" in daemon.results, 60)
                result = daemon.results["web"]
                assert result.action == "none", result
                assert result.reason == "backstop"
                # Half of a one-hour lifetime: the next look is at the backstop, 30 min after issuance.
                assert result.next_check == result.renew_at
        assert len(setup.attempts()) == orders_before == 1
        assert setup.current("web").id == first.id

    run(scenario())


def test_cloudflare_failures_back_off_then_succeed(make_setup, caplog: pytest.LogCaptureFixture) -> None:
    setup = make_setup(cert_toml("web", ["local.example.com"]), validity=3600, cloudflare_retries=0)
    clock = MovableClock()
    emulator = setup.world.emulator

    async def scenario() -> None:
        async with running_daemon(setup, clock) as daemon:
            assert await daemon.wait_for(lambda: "web" in daemon.results, 60)
            first = setup.current("web")
            # Half the lifetime later the certificate is due, and Cloudflare fails every write.
            clock.advance(dt.timedelta(minutes=31))
            emulator.inject_5xx(10_000, status=503, writes_only=True)
            caplog.clear()
            with caplog.at_level(logging.WARNING, logger="certd"):
                result = await _check_now(daemon, clock)
            assert result.action == "failed" and "503" in (result.error or ""), result
            managed = setup.managed("web")
            assert managed.failure_count == 1 and "503" in managed.last_error
            assert _approx_backoff(managed.next_attempt_at - clock(), MINUTE)
            # Not yet in the last tenth of life: a warning, not an alarm.
            assert any(r.levelno == logging.WARNING and "renewal failed (1 in a row)" in r.getMessage()
                       for r in caplog.records)
            assert not any(r.levelno >= logging.ERROR and r.name == "certd.maintain" for r in caplog.records)

            # Looking again within the backoff does not order.
            attempts = len(setup.attempts())
            result = await _check_now(daemon, clock)
            assert result.action == "waiting" and len(setup.attempts()) == attempts
            assert result.next_check <= managed.next_attempt_at

            # After a minute: second failure, ten minutes next.
            clock.advance(MINUTE * 1.2)
            result = await _check_now(daemon, clock)
            assert result.action == "failed"
            managed = setup.managed("web")
            assert managed.failure_count == 2
            assert _approx_backoff(managed.next_attempt_at - clock(), 10 * MINUTE)

            # Cloudflare recovers; after the backoff the renewal goes through.
            emulator.clear_faults()
            clock.advance(MINUTE * 11.5)
            result = await _check_now(daemon, clock)
            assert result.action == "renewed", result
            managed = setup.managed("web")
            assert managed.failure_count == 0 and managed.last_error is None and managed.next_attempt_at is None
            assert setup.current("web").id != first.id
            assert [a.outcome for a in setup.attempts("web")] == ["success", "failure", "failure", "success"]
        assert setup.txt_records() == []
        with session_scope(setup.engine) as session:
            assert session.exec(select(ChallengeRecord)).all() == []

    run(scenario())


def test_failing_in_last_tenth_of_life_is_loud_and_notifies(make_setup, tmp_path: Path,
                                                             caplog: pytest.LogCaptureFixture) -> None:
    alerts = tmp_path / "alerts.jsonl"
    envs = tmp_path / "alerts.env"
    hook = (f"cat >> {shlex.quote(str(alerts))}; echo >> {shlex.quote(str(alerts))}; "
            f"env | grep -E '^(CERTD_|CERTD_SANDBOX)' | sort >> {shlex.quote(str(envs))}")
    # Four hours: the clock moved into the last tenth plus the two backoffs (about 13 minutes)
    # still leaves the renewed certificate inside its lifetime on that clock.
    setup = make_setup(cert_toml("web", ["local.example.com"]), validity=4 * 3600, cloudflare_retries=0,
                       extra=f"[daemon]\nnotify_hook = {json.dumps(hook)}\n")
    clock = MovableClock()
    emulator = setup.world.emulator

    async def scenario() -> None:
        from certd.cli.status import collect, render_table

        async with running_daemon(setup, clock) as daemon:
            assert await daemon.wait_for(lambda: "web" in daemon.results, 60)
            served = setup.current("web")
            clock.advance(dt.timedelta(minutes=217))  # 23 minutes left of 240: the last tenth
            emulator.inject_5xx(10_000, status=500, writes_only=True)
            caplog.clear()
            with caplog.at_level(logging.WARNING, logger="certd"):
                for attempt in (1, 2):
                    result = await _check_now(daemon, clock)
                    assert result.action == "failed" and result.critical
                    clock.advance(MINUTE * 1.2 if attempt == 1 else MINUTE * 11.5)
            errors = [r.getMessage() for r in caplog.records
                      if r.levelno == logging.ERROR and r.name == "certd.maintain"]
            assert len(errors) == 2 and "renewal failed (2 in a row)" in errors[1]
            assert "expires" in errors[1]

            sent = [json.loads(line) for line in alerts.read_text().splitlines() if line.strip()]
            assert [a["event"] for a in sent] == ["renewal-failing", "renewal-failing"]
            assert sent[1]["name"] == "web" and sent[1]["failures"] == 2
            assert sent[1]["domains"] == ["local.example.com"]
            assert sent[1]["not_after"] == served.not_after.isoformat()
            assert "500" in sent[1]["error"] and sent[1]["next_attempt"]
            env_text = envs.read_text()
            assert "CERTD_EVENT=renewal-failing" in env_text and "CERTD_FAILURES=2" in env_text
            # The Cloudflare token is in certd's environment but never in the hook's.
            assert setup.world.token not in env_text + alerts.read_text()
            assert "CERTD_SANDBOX_CF_TOKEN" not in env_text

            rows = collect(setup.config, setup.engine, now=clock())
            assert rows[0]["critical"] is True and rows[0]["failures"] == 2
            assert rows[0]["next_check"] is not None and "500" in rows[0]["last_error"]
            assert "\033[31m" in render_table(rows, color=True)
            assert "\033[" not in render_table(rows, color=False)

            emulator.clear_faults()
            result = await _check_now(daemon, clock)
            assert result.action == "renewed"
            sent = [json.loads(line) for line in alerts.read_text().splitlines() if line.strip()]
            assert sent[-1]["event"] == "renewal-recovered" and sent[-1]["failures"] == 0
            rows = collect(setup.config, setup.engine, now=clock())
            assert rows[0]["critical"] is False and rows[0]["failures"] == 0
            assert "\033[31m" not in render_table(rows, color=True)

    run(scenario())


def test_failed_hook_is_retried_without_reissuing(make_setup, tmp_path: Path) -> None:
    flag = tmp_path / "consumer-ready"
    hook_log = tmp_path / "hook.log"
    hook = f"test -f {shlex.quote(str(flag))} && echo reloaded >> {shlex.quote(str(hook_log))}"
    setup = make_setup(cert_toml("web", ["local.example.com"], hooks=[hook]), validity=3600)
    clock = MovableClock()

    async def scenario() -> None:
        async with running_daemon(setup, clock) as daemon:
            assert await daemon.wait_for(lambda: "web" in daemon.results, 60)
            result = daemon.results["web"]
            assert result.action == "renewed" and not result.hooks_ok
            assert setup.managed("web").hooks_pending
            state = setup.renewal("web")
            assert state.deploy_failures == 1
            assert _approx_backoff(state.deploy_retry_at - clock(), MINUTE)
            # The daemon plans to come back for the hook, not in an hour.
            assert result.next_check <= state.deploy_retry_at

            result = await _check_now(daemon, clock)  # still inside the backoff
            assert result.action == "waiting"

            flag.touch()
            clock.advance(MINUTE * 1.2)
            result = await _check_now(daemon, clock)
            assert result.action == "hooks-retried", result
            assert hook_log.read_text() == "reloaded\n"
            assert not setup.managed("web").hooks_pending
            assert setup.renewal("web").deploy_failures == 0
            assert len(setup.attempts("web")) == 1  # never re-issued

    run(scenario())


def test_missing_files_are_redeployed_and_bad_material_renewed_at_once(make_setup, tmp_path: Path) -> None:
    target = tmp_path / "ssl"
    setup = make_setup(cert_toml("web", ["local.example.com"], target_dir=target), validity=3600)
    clock = MovableClock()

    async def scenario() -> None:
        async with running_daemon(setup, clock) as daemon:
            assert await daemon.wait_for(lambda: "web" in daemon.results, 60)
            first = setup.current("web")

            # A consumer's file disappeared: written again from the store, no new order.
            (target / "fullchain.pem").unlink()
            result = await _check_now(daemon, clock)
            assert result.action == "redeployed" and "fullchain.pem is missing" in result.reason
            assert (target / "fullchain.pem").read_text().startswith(first.cert_pem.strip())
            assert len(setup.attempts()) == 1

            # The stored key no longer belongs to the certificate: renew at once.
            from certd.issue.keys import generate_key, key_to_pem

            with session_scope(setup.engine) as session:
                row = session.get(IssuedCertificate, first.id)
                row.key_pem = key_to_pem(generate_key("ec-p256")).decode()
                session.add(row)
            result = await _check_now(daemon, clock)
            assert result.action == "renewed"
            assert result.reason == "the private key does not match the certificate"
            assert len(setup.attempts()) == 2

    run(scenario())


def test_reload_with_changed_names_renews_at_once(make_setup) -> None:
    setup = make_setup(cert_toml("web", ["local.example.com"]), validity=3600)

    async def scenario() -> None:
        async with running_daemon(setup) as daemon:
            assert await daemon.wait_for(lambda: "web" in daemon.results, 60)
            setup.config_path.write_text(setup.text.replace('["local.example.com"]',
                                                            '["local.example.com", "www.example.com"]'))
            done = daemon.checks_done
            assert await daemon.reload()
            assert await daemon.wait_for(lambda: daemon.checks_done > done, 60)
            result = daemon.results["web"]
            assert result.action == "renewed"
            assert result.reason.startswith("names changed in config")
            assert setup.current("web").domains == "local.example.com,www.example.com"

    run(scenario())


def test_postgresql_store_restart_does_not_reissue(make_setup, pg_url: str) -> None:
    setup = make_setup(cert_toml("web", ["local.example.com"]), validity=3600, db_url=pg_url)

    async def scenario() -> None:
        for expected in ("renewed", "none"):
            async with running_daemon(setup) as daemon:
                assert await daemon.wait_for(lambda: "web" in daemon.results, 60)
                assert daemon.results["web"].action == expected
        assert len(setup.attempts()) == 1

    run(scenario())


def test_stop_waits_for_the_order_in_flight_to_clean_up(make_setup) -> None:
    """What SIGTERM runs, in process: when stop() returns, the abandoned order has removed its
    TXT records and recorded itself as abandoned (its worker thread is done)."""
    setup = make_setup(cert_toml("web", ["local.example.com", "www.example.com"]))
    setup.world.emulator.propagation_delay = 3600  # the order waits with its records created

    async def scenario() -> None:
        async with running_daemon(setup):
            await until(lambda: len(setup.txt_records()) >= 2, "both TXT records", 60)
            assert len(setup.txt_records()) == 2
        assert setup.txt_records() == []
        assert [a.outcome for a in setup.attempts("web")] == ["abandoned"]

    run(scenario())
