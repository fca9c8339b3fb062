"""`certd dns plan|sync|status`: output and exit codes, against the sandbox and a real store."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from certd.cli import main
from certd.cli.dns_cmd import EXIT_CHANGED, EXIT_FAILED, EXIT_NO_CHANGES
from certd.sandbox import SandboxWorld
from tests.dns_records.conftest import ZONE

NAME = "local.example.com"


@pytest.fixture
def certd(cf_world: SandboxWorld, db_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch):  # type: ignore[no-untyped-def]
    monkeypatch.setenv("CLOUDFLARE_API_TOKEN", cf_world.token)
    config_path = tmp_path / "certd.toml"

    def write(hosts: str) -> None:
        config_path.write_text(
            f'state_dir = "{tmp_path}"\ndatabase_url = "{db_url}"\n'
            f'[cloudflare]\nbase_url = "{cf_world.base_url}"\n{hosts}'
        )

    def run(*args: str) -> int:
        return main(["--config", str(config_path), *args])

    write("")
    run.write = write  # type: ignore[attr-defined]
    return run


WALLBOX = f'[[hosts]]\nname = "{NAME}"\naddress = "192.168.1.100"\n'


def test_plan_sync_status_exit_codes(certd, cf_world: SandboxWorld, capsys: pytest.CaptureFixture[str]):  # type: ignore[no-untyped-def]
    assert certd("dns", "plan") == EXIT_NO_CHANGES
    assert "nothing to do" in capsys.readouterr().out

    certd.write(WALLBOX)
    assert certd("dns", "plan") == EXIT_CHANGED
    out = capsys.readouterr().out
    assert "create" in out and NAME in out and "192.168.1.100" in out and "certd dns sync" in out
    assert cf_world.emulator.records(ZONE) == []

    assert certd("dns", "sync") == EXIT_CHANGED
    assert "[done]" in capsys.readouterr().out
    assert certd("dns", "sync") == EXIT_NO_CHANGES
    assert certd("dns", "plan") == EXIT_NO_CHANGES
    capsys.readouterr()

    assert certd("dns", "status") == 0
    out = capsys.readouterr().out
    assert NAME in out and "192.168.1.100" in out and "present" in out and "never" not in out.split("\n")[1]

    assert certd("dns", "status", "--json") == 0
    [row] = json.loads(capsys.readouterr().out)["records"]
    assert row["name"] == NAME and row["last_checked_at"] and row["in_config"]


def test_failed_exit_code_and_json_report(certd, cf_world: SandboxWorld, capsys: pytest.CaptureFixture[str]):  # type: ignore[no-untyped-def]
    cf_world.emulator.add_record(ZONE, "A", NAME, "192.168.1.50")
    certd.write(WALLBOX)
    assert certd("dns", "sync", "--json") == EXIT_FAILED
    report = json.loads(capsys.readouterr().out)
    assert report["outcome"] == "failed"
    [action] = report["actions"]
    assert action["kind"] == "conflict" and "192.168.1.50" in action["reason"]


def test_sync_failure_is_reported_with_the_permission(certd, cf_world: SandboxWorld,  # type: ignore[no-untyped-def]
                                                     capsys: pytest.CaptureFixture[str],
                                                     monkeypatch: pytest.MonkeyPatch):
    token = "readonly-" + "z" * 31
    cf_world.emulator.add_token(token, permissions={"zone:read", "dns:read"})
    monkeypatch.setenv("CLOUDFLARE_API_TOKEN", token)
    certd.write(WALLBOX)
    assert certd("dns", "sync") == EXIT_FAILED
    captured = capsys.readouterr()
    assert "FAILED" in captured.out and "DNS:Edit" in captured.out
    assert token not in captured.out + captured.err
    assert certd("dns", "status") == EXIT_FAILED
    assert "last error" in capsys.readouterr().out


def test_proxied_config_is_refused_before_anything_runs(certd, cf_world: SandboxWorld,  # type: ignore[no-untyped-def]
                                                       capsys: pytest.CaptureFixture[str]):
    certd.write(WALLBOX + "proxied = true\n")
    assert certd("dns", "sync") == 2
    err = capsys.readouterr().err
    assert "hosts[0].proxied" in err and "edge addresses" in err
    assert cf_world.emulator.requests == []


def test_sync_waits_for_a_sync_running_elsewhere_plan_does_not(  # type: ignore[no-untyped-def]
        certd, cf_world: SandboxWorld, db_url: str, capsys: pytest.CaptureFixture[str]):
    from certd.store import leases
    from certd.store.db import make_engine

    certd.write(WALLBOX)
    assert certd("dns", "plan") == EXIT_CHANGED  # creates the store
    engine = make_engine(db_url)
    try:
        daemon = leases.acquire(engine, leases.job_lease("dns-sync"), "certd run")
        capsys.readouterr()
        assert certd("dns", "sync") == leases.EX_TEMPFAIL
        assert "job:dns-sync is held by certd run" in capsys.readouterr().err
        assert cf_world.emulator.records(ZONE) == []  # nothing created twice, nothing at all
        assert certd("dns", "plan") == EXIT_CHANGED  # reading needs no lease
        leases.release(engine, daemon)
        assert certd("dns", "sync") == EXIT_CHANGED
        assert len(cf_world.emulator.records(ZONE)) == 1
    finally:
        engine.dispose()
