"""`certd renew` and `certd status` as a user runs them, plus the 0005_renewal migration."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import sqlalchemy as sa

from certd.store.db import make_engine, upgrade
from tests.daemon.conftest import cert_toml


def _snapshot(setup) -> tuple:  # type: ignore[no-untyped-def]
    """Everything a dry run must leave alone: rows of every table and the files under tmp."""
    with setup.engine.connect() as conn:
        tables = sa.inspect(conn).get_table_names()
        rows = {t: conn.execute(sa.text(f"SELECT * FROM {t}")).all() for t in tables}  # noqa: S608
    files = sorted((str(p), p.stat().st_mtime_ns) for p in Path(setup.config.state_dir).rglob("*")
                   if p.is_file() and not p.name.startswith("certd.db"))
    return rows, files


def test_renew_dry_run_then_real_runs(make_setup, tmp_path: Path) -> None:
    target = tmp_path / "ssl"
    setup = make_setup(cert_toml("web", ["local.example.com"], target_dir=target)
                       + cert_toml("net", ["a.example.net"]), validity=3600)

    before = _snapshot(setup)
    result = setup.cli("renew", "--all", "--dry-run")
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines() == ["web: would renew: no certificate issued yet",
                                          "net: would renew: no certificate issued yet"]
    assert _snapshot(setup) == before
    assert setup.txt_records() == [] and not target.exists()

    result = setup.cli("renew", "web")
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("web: renewed (no certificate issued yet): serial ")
    assert f"  wrote {target / 'fullchain.pem'}" in result.stdout
    assert setup.current("net") is None  # only the named one

    result = setup.cli("renew", "--all")
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert lines[0].startswith("web: not due (backstop at ")
    assert any(line.startswith("net: renewed (no certificate issued yet)") for line in lines)
    assert len(setup.attempts()) == 2

    # A consumer lost its file: the dry run says so and changes nothing, the real run rewrites it.
    (target / "privkey.pem").unlink()
    before = _snapshot(setup)
    result = setup.cli("renew", "web", "--dry-run")
    assert result.stdout.strip() == (f"web: would redeploy the stored certificate: "
                                     f"{target / 'privkey.pem'} is missing")
    assert _snapshot(setup) == before and not (target / "privkey.pem").exists()
    result = setup.cli("renew", "web")
    assert result.returncode == 0 and result.stdout.startswith("web: redeployed"), result.stdout
    assert (target / "privkey.pem").stat().st_mode & 0o777 == 0o600
    assert len(setup.attempts()) == 2

    result = setup.cli("renew", "web", "--force", "--dry-run")
    assert result.stdout.strip() == "web: would renew: renewal forced by hand"
    result = setup.cli("renew", "web", "--force")
    assert result.returncode == 0 and result.stdout.startswith("web: renewed (renewal forced by hand)")
    assert len(setup.attempts()) == 3


def test_renew_usage_errors(make_setup) -> None:
    setup = make_setup(cert_toml("web", ["local.example.com"]))
    assert setup.cli("renew").returncode == 2
    assert setup.cli("renew", "web", "--all").returncode == 2
    result = setup.cli("renew", "nope")
    assert result.returncode == 2 and "no certificate named 'nope'" in result.stderr


def test_renew_failure_exit_code_and_backoff_skipped_by_hand(make_setup) -> None:
    setup = make_setup(cert_toml("web", ["local.example.com"]), cloudflare_retries=0)
    setup.world.emulator.inject_5xx(10_000, status=502, writes_only=True)
    result = setup.cli("renew", "web")
    assert result.returncode == 1
    assert "certd: error: web: Cloudflare failed to create TXT" in result.stderr and "502" in result.stderr
    assert setup.world.token not in result.stderr + result.stdout
    assert setup.managed("web").failure_count == 1
    # By hand the backoff is skipped (an administrator asking is the early retry).
    setup.world.emulator.clear_faults()
    result = setup.cli("renew", "web")
    assert result.returncode == 0, result.stderr
    assert setup.managed("web").failure_count == 0


def test_status_shows_schedule_failures_and_colour_only_on_a_tty(make_setup) -> None:
    setup = make_setup(cert_toml("web", ["local.example.com"]), validity=3600, cloudflare_retries=0)
    assert setup.cli("renew", "web").returncode == 0
    rows = json.loads(setup.cli("status", "--json").stdout)
    row = rows[0]
    assert row["renewal_reason"] == "backstop" and row["renew_at"] and row["next_check"]
    assert row["failures"] == 0 and row["last_error"] is None and row["critical"] is False

    setup.world.emulator.inject_5xx(10_000, writes_only=True)
    assert setup.cli("renew", "web", "--force").returncode == 1
    row = json.loads(setup.cli("status", "--json").stdout)[0]
    assert row["failures"] == 1 and "500" in row["last_error"] and row["next_attempt"]
    # A forced renewal that failed is not retried by the daemon: the certificate is not due.
    assert row["renewal_reason"] == "backstop"
    assert row["critical"] is False  # an hour-long certificate just issued is far from its last tenth

    plain = setup.cli("status").stdout
    assert "\033[" not in plain  # stdout is a pipe: no colour
    assert "web: 1 failure(s) in a row; last error: " in plain
    assert "NEXT CHECK" in plain and "FAILURES" in plain


def test_migration_creates_the_renewal_table_on_both_backends(db_url: str) -> None:
    upgrade(db_url)
    engine = make_engine(db_url)
    try:
        inspector = sa.inspect(engine)
        columns = {c["name"] for c in inspector.get_columns("renewal_state")}
        assert {"name", "ari_cert_id", "ari_window_start", "ari_window_end", "ari_renew_at",
                "ari_next_check_at", "deploy_failures", "deploy_retry_at", "alarm_raised"} <= columns
        with engine.connect() as conn:
            heads = {r[0] for r in conn.execute(sa.text("SELECT version_num FROM alembic_version"))}
        assert "0005_renewal" in heads
    finally:
        engine.dispose()
    # The models and the migrations agree (no pending autogenerate diff for this table).
    from alembic.autogenerate import compare_metadata
    from alembic.runtime.migration import MigrationContext
    from sqlmodel import SQLModel

    import certd.store.all_tables  # noqa: F401

    engine = make_engine(db_url)
    try:
        with engine.connect() as conn:
            diff = compare_metadata(MigrationContext.configure(conn, opts={"compare_type": True}),
                                    SQLModel.metadata)
    finally:
        engine.dispose()
    assert [d for d in diff if "renewal_state" in repr(d)] == []


def test_run_without_a_token_fails_fast_and_says_where_to_put_it(make_setup) -> None:
    setup = make_setup(cert_toml("web", ["local.example.com"]))
    env = {k: v for k, v in os.environ.items() if k != "CERTD_SANDBOX_CF_TOKEN"}
    result = subprocess.run([sys.executable, "-m", "certd", "--config", str(setup.config_path), "run"],
                            env=env, capture_output=True, text=True, timeout=60)
    assert result.returncode == 2
    assert "Cloudflare API token is not set: put it in environment variable CERTD_SANDBOX_CF_TOKEN" \
        in result.stderr


def test_status_is_red_on_a_terminal_for_an_expiring_certificate_that_fails(make_setup) -> None:
    import pty
    import time

    # Six seconds of validity: long enough that a slow first issuance (a busy host) is not already
    # expired when it is deployed, which would count as a failure of its own.
    setup = make_setup(cert_toml("web", ["local.example.com"]), validity=6, cloudflare_retries=0)
    assert setup.cli("renew", "web").returncode == 0
    expires = setup.current("web").not_after
    while time.time() < expires.timestamp() + 0.1:  # a six-second certificate: wait until it expired
        time.sleep(0.05)
    setup.world.emulator.inject_5xx(10_000, writes_only=True)
    assert setup.cli("renew", "web").returncode == 1
    assert setup.managed("web").failure_count == 1

    leader, follower = pty.openpty()
    proc = subprocess.Popen([sys.executable, "-m", "certd", "--config", str(setup.config_path), "status"],
                            env=setup.env(), stdout=follower, stderr=subprocess.PIPE)
    os.close(follower)
    output = b""
    while True:
        try:
            chunk = os.read(leader, 65536)
        except OSError:  # EIO: the child closed the terminal
            break
        if not chunk:
            break
        output += chunk
    os.close(leader)
    assert proc.wait(30) == 0
    text = output.decode()
    assert "\033[31mweb" in text and "EXPIRING AND FAILING" in text
