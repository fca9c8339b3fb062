"""The broker connection: birth and will around `certd run` (SIGKILL and SIGTERM), what
`certd status` says, failures named (login, TLS, unreachable), the password never logged."""

from __future__ import annotations

import asyncio
import logging
import signal
from pathlib import Path

import pytest
from sqlmodel import select

from certd.config import parse_config
from certd.mqtt.client import MqttConnection
from certd.mqtt.service import MqttService
from certd.mqtt.status import mqtt_status
from certd.store.db import make_engine, session_scope, upgrade
from certd.store.mqtt import MqttConnection as ConnectionRow
from tests.daemon.conftest import cert_toml, log_text, run, wait_until
from tests.mqtt.conftest import PASSWORD_ENV, mqtt_toml, watching


def status_lines(setup) -> list[str]:  # type: ignore[no-untyped-def]
    done = setup.cli("status")
    assert done.returncode == 0, done.stderr
    return [line for line in done.stdout.splitlines() if line.startswith("MQTT:")]


def test_sigkill_makes_the_broker_publish_the_will_sigterm_says_offline_itself(make_setup, mqtt_env,
                                                                               node: str) -> None:
    broker = mqtt_env
    setup = make_setup(cert_toml("web", ["local.example.com"]), validity=3600, extra=mqtt_toml(broker, node))
    availability = f"certd/{node}/availability"

    async def scenario() -> None:
        async with watching(broker, availability) as watcher:
            proc = setup.spawn("-vv", "run")
            await watcher.wait(lambda: watcher.text(availability) == "online", 60, "online after start")
            await asyncio.to_thread(wait_until, lambda: status_lines(setup) and "connected to" in status_lines(setup)[0],
                                    10, "certd status: connected")
            assert status_lines(setup)[0].startswith(f"MQTT: connected to 127.0.0.1:{broker.port} since ")

            proc.send_signal(signal.SIGKILL)  # no DISCONNECT: only the broker can say offline now
            proc.wait(10)
            await watcher.wait(lambda: watcher.text(availability) == "offline", 10, "the will")
            assert "no daemon running" in status_lines(setup)[0]
            killed_log = log_text(proc)

            watcher.last.pop(availability)
            proc = setup.spawn("-vv", "run")
            await watcher.wait(lambda: watcher.text(availability) == "online", 60, "online after restart")
            proc.send_signal(signal.SIGTERM)
            assert await asyncio.to_thread(proc.wait, 30) == 0
            await watcher.wait(lambda: watcher.text(availability) == "offline", 10, "offline at SIGTERM")
            assert "not connected (certd run stopped at" in status_lines(setup)[0]
            return killed_log + log_text(proc)

    logs = asyncio.run(scenario())
    broker_log = broker.log_path.read_text()
    client_id = f"certd-{node}"
    # The broker saw the killed client's socket close without a DISCONNECT (the will), and the
    # stopped one disconnect cleanly (no will: certd said offline itself).
    assert f"Client {client_id} closed its connection." in broker_log
    assert f"Client {client_id} disconnected." in broker_log
    assert "MQTT: connected to broker" in logs and "Sending CONNECT" in logs  # -vv: paho's packet log too
    assert broker.users["certd"] not in logs


@pytest.fixture
def store(tmp_path: Path):  # type: ignore[no-untyped-def]
    url = f"sqlite:///{tmp_path / 'certd.db'}"
    upgrade(url)
    engine = make_engine(url)
    yield engine
    engine.dispose()


def _config(tmp_path: Path, mqtt: str):  # type: ignore[no-untyped-def]
    return parse_config(f"state_dir = \"{tmp_path / 'state'}\"\ndatabase_url = \"sqlite:///{tmp_path / 'certd.db'}\"\n"
                        f"{mqtt}\n")


async def _failure_of(config, engine) -> str:  # type: ignore[no-untyped-def]
    """Start the service, wait for its first failed attempt, return what it said (and stored)."""
    service = MqttService(engine)
    await service.start(config)
    try:
        connection = service.connection
        assert connection is not None
        for _ in range(200):
            if connection.state.error:
                break
            await asyncio.sleep(0.05)
        assert not connection.ready
        error = connection.state.error
        assert error
        for _ in range(100):  # written to the store for `certd status`
            with session_scope(engine) as session:
                row = session.get(ConnectionRow, config.mqtt.node())
            if row is not None and row.last_error == error:
                break
            await asyncio.sleep(0.05)
        line = mqtt_status(config, engine)
        assert line is not None and error in line.line() and "disconnected" in line.line()
        return error
    finally:
        await service.close()


def test_wrong_password_and_tls_failures_are_named_and_no_password_is_logged(
        mqtt_env, node: str, tmp_path: Path, store, monkeypatch: pytest.MonkeyPatch,
        caplog: pytest.LogCaptureFixture) -> None:
    broker = mqtt_env
    wrong = "wrong-" + broker.users["certd"][::-1]
    monkeypatch.setenv(PASSWORD_ENV, wrong)
    caplog.set_level(logging.DEBUG, logger="certd")

    async def scenario() -> None:
        error = await _failure_of(_config(tmp_path, mqtt_toml(broker, node, homeassistant=False)), store)
        # Mosquitto answers a wrong password with MQTT 3.1.1's "not authorised" (5).
        assert error == (f"broker 127.0.0.1:{broker.port} refused the login: not authorized: wrong username "
                         "or password, or no access (user 'certd')")
        error = await _failure_of(_config(tmp_path, mqtt_toml(broker, node, homeassistant=False, protocol="5")),
                                  store)
        assert "refused the login" in error and "username or password" in error  # MQTT 5 reason code

        monkeypatch.setenv(PASSWORD_ENV, broker.users["certd"])
        # TLS against the system's CAs: the test CA is not among them.
        text = mqtt_toml(broker, node, homeassistant=False, tls=True, host="localhost").replace(
            f"ca_file = \"{broker.ca_file}\"\n", "")
        error = await _failure_of(_config(tmp_path, text), store)
        assert error.startswith(f"TLS with broker localhost:{broker.tls_port} (TLS) failed:")
        assert "certificate verify failed" in error
        # The right CA, but a name the certificate does not cover.
        error = await _failure_of(_config(tmp_path, mqtt_toml(broker, node, homeassistant=False, tls=True)), store)
        assert error.startswith("TLS with broker 127.0.0.1") and "mismatch" in error
        # A CA file that is not there is named before any connection is tried.
        missing = tmp_path / "nope.pem"
        error = await _failure_of(_config(tmp_path, mqtt_toml(broker, node, homeassistant=False, tls=True).replace(
            str(broker.ca_file), str(missing))), store)
        assert error == f"[mqtt] cannot load ca_file {missing}: No such file or directory"
        # Nothing listens: said so.
        closed = mqtt_toml(broker, node, homeassistant=False).replace(f"port = {broker.port}", "port = 1")
        error = await _failure_of(_config(tmp_path, closed), store)
        assert "refused the TCP connection" in error

        # And with everything right, over TLS: connected.
        config = _config(tmp_path, mqtt_toml(broker, node, homeassistant=False, tls=True, host="localhost"))
        connection = MqttConnection(config.mqtt, node, subscriptions=list, on_connected=_nothing,
                                    on_message=_message)
        await connection.start()
        try:
            assert await connection.wait_ready(15)
            await connection.publish(f"certd/{node}/probe", "tls works", retain=False)
        finally:
            await connection.close()
        assert connection.state.state == "stopped"

    run(scenario())
    text = caplog.text
    assert "wrong username or password" in text and "certificate verify failed" in text
    assert "Sending CONNECT" in text  # DEBUG reached the packet log, which never holds the password
    for secret in (wrong, broker.users["certd"]):
        assert secret not in text
    with session_scope(store) as session:
        assert all(secret not in (row.last_error or "") for row in session.exec(select(ConnectionRow)).all()
                   for secret in (wrong, broker.users["certd"]))


async def _nothing() -> None:
    return None


async def _message(message: object) -> None:
    return None


def test_status_before_any_daemon_connected(mqtt_env, node: str, tmp_path: Path, store) -> None:
    """`certd status` before any `certd run` connected: said so, not a stale 'connected'."""
    config = _config(tmp_path, mqtt_toml(mqtt_env, node, homeassistant=False))
    status = mqtt_status(config, store)
    assert status is not None
    assert status.line() == f"MQTT: 127.0.0.1:{mqtt_env.port}: no `certd run` has connected yet"
    assert mqtt_status(_config(tmp_path, ""), store) is None  # no [mqtt]: no line


def test_paho_packet_log_escapes_device_supplied_topics(caplog: pytest.LogCaptureFixture) -> None:
    from certd.mqtt.client import protocol_log

    caplog.set_level(logging.DEBUG, logger="certd.mqtt.protocol")
    protocol_log.debug("Received PUBLISH '%s'", "fleet/acks/b/dev\nFAKE LINE")
    assert "dev\\nFAKE LINE" in caplog.text and "\nFAKE LINE" not in caplog.text


def test_certd_run_keeps_issuing_while_the_broker_is_unreachable(make_setup, mqtt_env, node: str) -> None:
    """The broker down from the start: certificates are still issued, the log and status say why
    MQTT is not connected, and SIGTERM still ends with exit 0."""
    setup = make_setup(cert_toml("web", ["local.example.com"]), validity=3600,
                       extra=mqtt_toml(mqtt_env, node).replace(f"port = {mqtt_env.port}", "port = 1"))
    proc = setup.spawn("run")
    wait_until(lambda: setup.current("web") is not None, 60, "the certificate issued")
    wait_until(lambda: "refused the TCP connection" in log_text(proc), 30, "the connect failure in the log")
    line = status_lines(setup)[0]
    assert line.startswith("MQTT: disconnected (127.0.0.1:1) since ") and "retrying with backoff" in line
    from certd.http.snapshot import mqtt_connection  # what /api/v1/status and the page show

    shown = mqtt_connection(setup.config, setup.engine)
    assert shown is not None and shown["connected"] is False and shown["state"] == "disconnected"
    assert shown["line"].startswith("MQTT: disconnected (127.0.0.1:1) since ")
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(30) == 0
