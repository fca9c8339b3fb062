"""`certd chargers ...` and `certd serve` (a real process: SIGHUP reload, SIGTERM shutdown)."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from certd.cli import main
from certd.ocpp import auth, charger_registry
from certd.sandbox.certd_config import ocpp_listener, ocpp_toml
from certd.store.db import make_engine
from tests.ocpp.conftest import HOST, basic, boot16, charge_point, client_context, register, run
from tests.pki import store_current
from tests.waits import wait_until


@pytest.fixture
def config_file(tmp_path: Path, ca_file: Path) -> Path:
    path = tmp_path / "certd.toml"
    path.write_text(f'''
state_dir = "{tmp_path / 'state'}"

[[certificates]]
name = "ocpp-rsa"
domains = ["{HOST}"]

{ocpp_toml([ocpp_listener("main", HOST, certificates=["ocpp-rsa"])], trust_roots=[ca_file],
           reload_check_interval=0, heartbeat_classes={"wallbox": 120})}''')
    return path


def _engine(config_file: Path):  # type: ignore[no-untyped-def]
    return make_engine(f"sqlite:///{config_file.parent / 'state' / 'certd.db'}")


def test_add_generates_a_password_printed_once(config_file, capsys) -> None:  # type: ignore[no-untyped-def]
    assert main(["--config", str(config_file), "chargers", "add", "DE*BMW*0123456789", "--class", "wallbox"]) == 0
    out = capsys.readouterr().out
    password = out.strip().splitlines()[-1]
    assert len(password) == 24 and password.isalnum()
    record = charger_registry.lookup(_engine(config_file), "DE*BMW*0123456789")
    assert record.heartbeat_class == "wallbox" and auth.verify_password(record.password_hash, password)
    assert password not in record.password_hash

    assert main(["--config", str(config_file), "chargers", "list"]) == 0
    listing = capsys.readouterr().out
    assert "DE*BMW*0123456789" in listing and "wallbox" in listing and password not in listing

    # Adding again fails with a clear message; a bad class or id is refused before any change.
    assert main(["--config", str(config_file), "chargers", "add", "DE*BMW*0123456789"]) == 1
    assert "already registered" in capsys.readouterr().err
    assert main(["--config", str(config_file), "chargers", "add", "CP2", "--class", "nope"]) == 1
    assert "--class 'nope' is not in [ocpp] heartbeat_classes" in capsys.readouterr().err
    assert main(["--config", str(config_file), "chargers", "add", "bad id"]) == 1
    assert "not a valid charge point id" in capsys.readouterr().err
    assert main(["--config", str(config_file), "chargers", "add", "CP2\n"]) == 1  # `$` let it in
    assert "not a valid charge point id" in capsys.readouterr().err
    assert charger_registry.lookup(_engine(config_file), "CP2") is None
    assert charger_registry.lookup(_engine(config_file), "CP2\n") is None


def test_given_password_set_password_and_remove(config_file, capsys, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    cfg = ["--config", str(config_file), "chargers"]
    assert main(cfg + ["add", "CP1", "--password", "short"]) == 1
    assert "16-40 characters" in capsys.readouterr().err
    assert main(cfg + ["add", "CP1", "--password", "sixteen-chars-ok"]) == 0
    assert "sixteen-chars-ok" not in capsys.readouterr().out  # a given password is not echoed
    engine = _engine(config_file)
    assert auth.verify_password(charger_registry.lookup(engine, "CP1").password_hash, "sixteen-chars-ok")

    import io
    monkeypatch.setattr(sys, "stdin", io.StringIO("from-stdin-password-1\n"))
    assert main(cfg + ["set-password", "CP1", "--password-stdin"]) == 0
    assert auth.verify_password(charger_registry.lookup(engine, "CP1").password_hash, "from-stdin-password-1")
    assert main(cfg + ["set-password", "CP1"]) == 0
    generated = capsys.readouterr().out.strip().splitlines()[-1]
    assert auth.verify_password(charger_registry.lookup(engine, "CP1").password_hash, generated)

    assert main(cfg + ["disable", "CP1"]) == 0
    assert charger_registry.lookup(engine, "CP1").enabled is False
    assert main(cfg + ["remove", "CP1"]) == 0
    assert charger_registry.lookup(engine, "CP1") is None
    assert main(cfg + ["remove", "CP1"]) == 1
    assert "no charger 'CP1'" in capsys.readouterr().err


def test_serve_reloads_on_sighup_and_stops_on_sigterm(config_file, ca) -> None:  # type: ignore[no-untyped-def]
    from certd.store.db import upgrade

    url = f"sqlite:///{config_file.parent / 'state' / 'certd.db'}"
    upgrade(url)
    engine = make_engine(url)
    old_leaf = ca.issue([HOST], "rsa")
    store_current(engine, "ocpp-rsa", old_leaf)
    password = "serve-test-password-1"
    register(engine, "CP1", "CP2", password=password)
    process = subprocess.Popen(
        [sys.executable, "-m", "certd", "--config", str(config_file), "serve"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        cwd=Path(__file__).resolve().parents[2],
    )
    try:
        line = process.stdout.readline()
        match = re.match(r"listener main: started on port (\d+)", line)
        assert match, (line, process.stderr.read() if process.poll() is not None else "")
        port = int(match.group(1))

        async def serial_seen(charger_id: str) -> str:
            from websockets.asyncio.client import connect

            from tests.ocpp.conftest import peer_serial

            async with connect(f"wss://127.0.0.1:{port}/ocpp/{charger_id}", ssl=client_context(ca),
                               server_hostname=HOST, subprotocols=["ocpp1.6"],
                               additional_headers=basic(charger_id, password)) as ws:
                async with charge_point(ws, "ocpp1.6", charger_id) as cp:
                    assert (await cp.call(boot16())).status == "Accepted"
                return peer_serial(ws)

        assert run(serial_seen("CP1")) == old_leaf.serial
        new_leaf = ca.issue([HOST], "rsa")
        store_current(engine, "ocpp-rsa", new_leaf)
        os.kill(process.pid, signal.SIGHUP)
        wait_until(lambda: run(serial_seen("CP2")) == new_leaf.serial, 20, "SIGHUP to reload the certificate")
        process.send_signal(signal.SIGTERM)
        assert process.wait(timeout=20) == 0
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
    rows = {row.charger_id: row for row in charger_registry.list_chargers(engine)}
    assert rows["CP1"].vendor == "TestVendor" and rows["CP1"].connected_node is None
