"""Registry outbox against a real HTTP registry: signature, retries, 4xx, restarts, dedupe."""

from __future__ import annotations

import datetime as dt
import json
import os
import signal
import subprocess
import sys
import threading

import pytest
from sqlmodel import select

from certd.store.db import session_scope
from certd.store.trust import TrustDelivery, TrustDeliveryAttempt
from certd.trust import outbox
from certd.trust.http_registry import classify
from certd.trust.track import on_issued
from tests import pki
from tests.trust.conftest import bundle_toml
from tests.trust.registry_server import RegistryServer

SECRET = "s3cret-for-tests-only"
TOKEN = "Bearer fleet-token-abc"


def registry_toml(url: str, tmp_path, *, name: str = "fleetreg", timeout: float = 5) -> str:
    secret_file = tmp_path / f"{name}.hmac"
    secret_file.write_text(SECRET)
    secret_file.chmod(0o600)
    return (f'[[trust.registries]]\nname = "{name}"\nurl = "{url}"\nhmac_secret_file = "{secret_file}"\n'
            f'auth_env = "CERTD_TEST_REGISTRY_AUTH"\ntimeout = {timeout}\n')


@pytest.fixture(autouse=True)
def _auth_env(monkeypatch) -> None:
    monkeypatch.setenv("CERTD_TEST_REGISTRY_AUTH", TOKEN)


@pytest.fixture
def server():
    with RegistryServer(SECRET, auth=TOKEN) as srv:
        yield srv


def issue_versions(world, config, roots: int = 1):
    """One issuance per root, each under a fresh root: `roots` versions per flavour."""
    results = []
    for i in range(roots):
        root = pki.root(f"Reg Root {i}")
        inter = pki.intermediate(f"Reg Inter {i}", root)
        world.trust_anchor(root)
        issued = world.issue("ocpp", ["ocpp.example.com"], pki.leaf(["ocpp.example.com"], inter), [inter])
        results.append(on_issued(config, world.engine, issued, deliver=False))
    return results


def test_classify_is_pure_and_covers_classes() -> None:
    assert classify(200, "ok").outcome == "accepted"
    assert classify(204, "").outcome == "accepted"
    assert classify(500, "boom").outcome == "retry"
    assert classify(503, "", "7").retry_after == 7.0
    assert classify(429, "slow down").outcome == "retry"
    assert classify(400, '{"e":1}').outcome == "rejected"
    assert classify(404, "nope").detail == "nope"
    assert classify(301, "").outcome == "rejected"


def test_backoff_grows_and_caps() -> None:
    delays = [outbox.retry_delay(n).total_seconds() for n in range(1, 9)]
    assert delays[:4] == [30, 120, 480, 1920]
    assert delays == sorted(delays) and max(delays) == 6 * 3600
    assert outbox.retry_delay(1, retry_after=600).total_seconds() == 600
    assert outbox.retry_delay(1, retry_after=10**9).total_seconds() == 6 * 3600


def test_signed_post_accepted_with_document(db_world, server, tmp_path) -> None:
    config = db_world.config(bundle_toml(db_world.anchors_dir, registries=registry_toml(server.url, tmp_path)))
    (result,) = issue_versions(db_world, config)
    reports = outbox.deliver(config, db_world.engine)
    assert [r.outcome for r in reports] == ["accepted", "accepted"]  # roots + full
    assert len(server.state.accepted) == 2
    assert all(s.signature_ok and s.auth == TOKEN for s in server.state.seen)
    doc = next(d for d in server.state.accepted.values() if d["flavour"] == "full")
    assert doc["bundle"] == "fleet" and doc["version"] == 1 and doc["previous_version"] is None
    assert doc["reason"].startswith("issued ocpp")
    assert doc["manifest"]["sha256"] == doc["sha256"]
    assert {c["role"] for c in doc["manifest"]["certificates"]} == {"root", "intermediate"}
    assert doc["pem"].count("BEGIN CERTIFICATE") == 2
    with session_scope(db_world.engine) as session:
        assert {d.state for d in session.exec(select(TrustDelivery)).all()} == {"delivered"}
    # nothing left: a second push sends nothing
    assert outbox.deliver(config, db_world.engine) == []


def test_injected_500s_are_retried_with_backoff_until_accepted(world, server, tmp_path) -> None:
    config = world.config(bundle_toml(world.anchors_dir, extra='flavours = ["full"]',
                                      registries=registry_toml(server.url, tmp_path)))
    issue_versions(world, config)
    server.state.fail_statuses = [500, 502, 503]
    now = dt.datetime.now(dt.timezone.utc)
    first = outbox.deliver(config, world.engine, now=now)
    assert [(r.outcome, r.status) for r in first] == [("retry", 500)]
    assert first[0].next_attempt_at == now + dt.timedelta(seconds=30)
    assert outbox.deliver(config, world.engine, now=now + dt.timedelta(seconds=29)) == []  # not due yet
    second = outbox.deliver(config, world.engine, now=now + dt.timedelta(seconds=30))
    assert [(r.outcome, r.status) for r in second] == [("retry", 502)]
    third = outbox.deliver(config, world.engine, now=now + dt.timedelta(seconds=30 + 120))
    assert [(r.outcome, r.status) for r in third] == [("retry", 503)]
    fourth = outbox.deliver(config, world.engine, now=now + dt.timedelta(days=1))
    assert [r.outcome for r in fourth] == ["accepted"]
    assert len(server.state.accepted) == 1
    with session_scope(world.engine) as session:
        attempts = session.exec(select(TrustDeliveryAttempt).order_by(TrustDeliveryAttempt.id)).all()
        assert [(a.status_code, a.outcome) for a in attempts] == [
            (500, "retry"), (502, "retry"), (503, "retry"), (200, "accepted")]


def test_4xx_is_reported_with_body_and_not_retried_blindly(world, server, tmp_path) -> None:
    config = world.config(bundle_toml(world.anchors_dir, extra='flavours = ["full"]',
                                      registries=registry_toml(server.url, tmp_path)))
    issue_versions(world, config)
    server.state.fail_statuses = [422]
    server.state.reject_body = '{"error": "bundle fleet is not registered"}'
    (report,) = outbox.deliver(config, world.engine)
    assert report.outcome == "rejected" and report.status == 422
    assert "bundle fleet is not registered" in report.line()
    # not retried later, however long we wait
    assert outbox.deliver(config, world.engine, now=pki.NOW + dt.timedelta(days=30)) == []
    # the operator fixed the registry: --retry sends it again
    (again,) = outbox.deliver(config, world.engine, force=True)
    assert again.outcome == "accepted" and len(server.state.accepted) == 1


def test_wrong_secret_is_a_401_rejection_and_never_leaks_the_secret(world, server, tmp_path) -> None:
    text = registry_toml(server.url, tmp_path)
    (tmp_path / "fleetreg.hmac").write_text("another-secret")
    config = world.config(bundle_toml(world.anchors_dir, extra='flavours = ["full"]', registries=text))
    issue_versions(world, config)
    (report,) = outbox.deliver(config, world.engine)
    assert report.outcome == "rejected" and report.status == 401
    assert "another-secret" not in report.line() and TOKEN not in report.line()
    assert server.state.accepted == {}


def test_unreachable_registry_is_retried_later(world, tmp_path) -> None:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # closed again: nothing listens there
    config = world.config(bundle_toml(world.anchors_dir, extra='flavours = ["full"]',
                                      registries=registry_toml(f"http://127.0.0.1:{port}/x", tmp_path)))
    issue_versions(world, config)
    (report,) = outbox.deliver(config, world.engine)
    assert report.outcome == "retry" and report.status is None and "cannot reach" in report.detail


def test_two_versions_two_registries_each_exactly_once(world, tmp_path) -> None:
    with RegistryServer(SECRET, auth=TOKEN) as a, RegistryServer(SECRET, auth=TOKEN) as b:
        regs = registry_toml(a.url, tmp_path, name="rega") + registry_toml(b.url, tmp_path, name="regb")
        config = world.config(bundle_toml(world.anchors_dir, registries=regs))
        issue_versions(world, config, roots=2)
        outbox.deliver(config, world.engine)
        outbox.deliver(config, world.engine, force=True)  # nothing left to force
        for server in (a, b):
            versions = sorted((d["flavour"], d["version"]) for d in server.state.accepted.values())
            assert versions == [("full", 1), ("full", 2), ("roots", 1), ("roots", 2)]
            assert all(s.status == 200 for s in server.state.seen)
            doc = next(d for d in server.state.accepted.values() if d["version"] == 2 and d["flavour"] == "full")
            assert doc["previous_version"] == 1 and doc["previous_sha256"]


def test_on_issued_sends_right_away(world, server, tmp_path) -> None:
    config = world.config(bundle_toml(world.anchors_dir, extra='flavours = ["roots"]',
                                      registries=registry_toml(server.url, tmp_path)))
    root = pki.root("Direct Root")
    inter = pki.intermediate("Direct Inter", root)
    world.trust_anchor(root)
    result = on_issued(config, world.engine, world.issue(
        "ocpp", ["ocpp.example.com"], pki.leaf(["ocpp.example.com"], inter), [inter]))
    assert [r.outcome for r in result.deliveries] == ["accepted"]
    assert len(server.state.accepted) == 1


def _certd(config_path, *args: str, **kw) -> subprocess.Popen:
    env = dict(os.environ, CERTD_TEST_REGISTRY_AUTH=TOKEN)
    return subprocess.Popen([sys.executable, "-m", "certd", "--config", str(config_path), *args],
                            env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, **kw)


def test_restart_mid_delivery_gives_exactly_one_accepted_delivery(db_world, server, tmp_path) -> None:
    """certd is killed after the registry stored the POST but before certd recorded the answer."""
    config = db_world.config(bundle_toml(db_world.anchors_dir, extra='flavours = ["full"]',
                                         registries=registry_toml(server.url, tmp_path, timeout=30)))
    issue_versions(db_world, config)
    server.state.hold = threading.Event()
    server.state.hold.set()
    proc = _certd(tmp_path / "certd.toml", "fleet", "push")
    try:
        assert server.state.received.wait(60), "certd never reached the registry"
        proc.send_signal(signal.SIGKILL)
        proc.wait(30)
    finally:
        if proc.poll() is None:
            proc.kill()
    server.state.hold.clear()
    server.state.release.set()
    with session_scope(db_world.engine) as session:
        (delivery,) = session.exec(select(TrustDelivery)).all()
        assert delivery.state == "pending" and delivery.attempts == 1  # the store never heard back
        (attempt,) = session.exec(select(TrustDeliveryAttempt)).all()
        assert attempt.outcome == "sending"
    # the lease taken by the killed process still runs: a plain push leaves the row alone ...
    assert outbox.deliver(config, db_world.engine) == []
    # ... until the lease is over; then the same body goes again under the same key
    later = delivery.lease_until + dt.timedelta(seconds=1)
    (report,) = outbox.deliver(config, db_world.engine, now=later)
    assert report.outcome == "accepted"
    assert len(server.state.accepted) == 1
    keys = [s.key for s in server.state.seen if s.status == 200]
    assert keys == [delivery.idempotency_key, delivery.idempotency_key]
    with session_scope(db_world.engine) as session:
        outcomes = [a.outcome for a in session.exec(
            select(TrustDeliveryAttempt).order_by(TrustDeliveryAttempt.id)).all()]
        assert outcomes == ["interrupted", "accepted"]


def test_fleet_cli_push_and_deliveries(world, server, tmp_path) -> None:
    config = world.config(bundle_toml(world.anchors_dir, extra='flavours = ["full"]',
                                      registries=registry_toml(server.url, tmp_path)))
    issue_versions(world, config)
    server.state.fail_statuses = [500]
    env = dict(os.environ, CERTD_TEST_REGISTRY_AUTH=TOKEN)
    run = lambda *a: subprocess.run([sys.executable, "-m", "certd", "--config", str(tmp_path / "certd.toml"), *a],
                                    env=env, capture_output=True, text=True, timeout=60)
    first = run("fleet", "push")
    assert first.returncode == 1 and "retry (HTTP 500)" in first.stdout
    assert "nothing to send" in run("fleet", "push").stdout  # backing off
    forced = run("fleet", "push", "--retry")
    assert forced.returncode == 0 and "accepted (HTTP 200)" in forced.stdout
    listing = run("fleet", "deliveries")
    assert "fleet (full) v1 delivered, 2 attempt(s)" in listing.stdout
    assert "retry (HTTP 500)" in listing.stdout and "accepted (HTTP 200)" in listing.stdout
    data = json.loads(run("fleet", "deliveries", "--json").stdout)
    assert data[0]["state"] == "delivered" and [a["status"] for a in data[0]["attempts"]] == [500, 200]
    assert SECRET not in listing.stdout + forced.stdout + first.stderr
