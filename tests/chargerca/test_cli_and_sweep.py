"""The CLI (`certd chargers certs|renew-cert|revoke-cert|cert-kit`, `certd charger-ca ...`), the
sweep's last-tenth alert through the notify hook, the CRL, config validation, the migration,
and the Quectel client-certificate AT script."""

from __future__ import annotations

import datetime as dt
import json
import stat
from pathlib import Path

import pytest
import sqlalchemy as sa
from cryptography import x509
from pydantic import ValidationError

from certd.chargerca import ca_store, records, sweep
from certd.cli import main as certd_main
from certd.config import Config, parse_config
from certd.errors import ConfigError
from certd.store.db import make_engine, upgrade
from certd.store.types import utcnow
from certd.trust.quectel import client_certificate_script, format_checksum, xor16
from tests.chargerca.chargers import ORG, new_key
from tests.chargerca.conftest import register

TOML = """state_dir = "{state}"
database_url = "sqlite:///{db}"

[daemon]
notify_hook = "cat > {hook_out}"

[ocpp.charger_ca]
organization = "{org}"
key_dir = "{keys}"
crl_file = "{crl}"
leaf_validity_days = 10
"""


@pytest.fixture
def setup(tmp_path: Path):  # type: ignore[no-untyped-def]
    db = tmp_path / "certd.db"
    path = tmp_path / "certd.toml"
    path.write_text(TOML.format(state=tmp_path / "state", db=db, org=ORG, keys=tmp_path / "keys",
                                crl=tmp_path / "chargers.crl", hook_out=tmp_path / "hook.json"))
    upgrade(f"sqlite:///{db}")
    engine = make_engine(f"sqlite:///{db}")
    yield path, engine, tmp_path
    engine.dispose()


def cli(path: Path, *args: str) -> int:
    return certd_main(["--config", str(path), *args])


def load(path: Path) -> Config:
    return parse_config(path.read_text())


def issue_for(engine, config: Config, charger_id: str, now: dt.datetime | None = None) -> records.Issued:  # type: ignore[no-untyped-def]
    ca = ca_store.load_issuing(engine, config)
    key = new_key("ec")
    issued = records.issue(engine, ca, charger_id, key.public_key(), "ec-p256", config.ocpp.charger_ca,  # type: ignore[arg-type]
                           now or utcnow(), source="csr")
    records.record_delivery(engine, issued.cert.serial, "Accepted", None, config.ocpp.charger_ca,  # type: ignore[arg-type]
                            utcnow())
    return issued


def test_charger_ca_init_show_export_and_crl(setup, capsys) -> None:  # type: ignore[no-untyped-def]
    path, engine, tmp = setup
    assert cli(path, "charger-ca", "show") == 0
    assert "no charger CA yet" in capsys.readouterr().out
    assert cli(path, "charger-ca", "init") == 0
    assert cli(path, "charger-ca", "init") == 1  # exists: --replace needed
    assert "--replace" in capsys.readouterr().err
    assert cli(path, "charger-ca", "show") == 0
    shown = capsys.readouterr().out
    assert "issuing" in shown and "key in an owner-only file" in shown and f"O={ORG}" in shown
    register(engine, "CP-1")
    issued = issue_for(engine, load(path), "CP-1")
    assert cli(path, "chargers", "revoke-cert", issued.cert.serial.upper()) == 0  # by serial, any case
    assert cli(path, "charger-ca", "export", "--out", str(tmp / "ca.pem"), "--crl", str(tmp / "x.crl")) == 0
    [exported] = x509.load_pem_x509_certificates((tmp / "ca.pem").read_bytes())
    crl = x509.load_pem_x509_crl((tmp / "x.crl").read_bytes())
    assert crl.is_signature_valid(exported.public_key())  # type: ignore[arg-type]
    assert [r.serial_number for r in crl] == [int(issued.cert.serial, 16)]
    written = x509.load_pem_x509_crl((tmp / "chargers.crl").read_bytes())  # by revoke-cert (crl_file)
    assert [r.serial_number for r in written] == [int(issued.cert.serial, 16)]


def test_chargers_certs_renew_and_revoke(setup, capsys) -> None:  # type: ignore[no-untyped-def]
    path, engine, _ = setup
    assert cli(path, "charger-ca", "init") == 0
    register(engine, "CP-1")
    register(engine, "CP-2")
    first = issue_for(engine, load(path), "CP-1")
    issue_for(engine, load(path), "CP-2", now=utcnow() - dt.timedelta(days=9.5))  # in its last tenth
    capsys.readouterr()
    assert cli(path, "chargers", "certs") == 0
    table = capsys.readouterr().out.splitlines()
    assert table[0].split() == ["ID", "SERIAL", "STATE", "DELIVERY", "KEY", "NOT", "AFTER", "LIFE", "LAST", "REQUEST"]
    assert table[1].split()[:5] == ["CP-1", first.cert.serial[:16], "active", "accepted", "ec-p256"]
    assert table[1].split()[7] == "fresh" and table[2].split()[7] == "last-tenth"
    assert cli(path, "chargers", "renew-cert", "CP-1") == 0
    assert records.renewals(engine, ["CP-1"])["CP-1"].requested_at is not None
    assert cli(path, "chargers", "renew-cert", "CP-9") == 1
    assert cli(path, "chargers", "revoke-cert", "CP-1", "--reason", "stolen") == 0
    out = capsys.readouterr().out
    assert f"revoked CP-1 serial {first.cert.serial}" in out and "within 5 s" in out
    [cert] = records.certificates(engine, "CP-1")
    assert cert.state == "revoked"
    assert cli(path, "chargers", "revoke-cert", "CP-1") == 1  # nothing usable left
    assert cli(path, "chargers", "certs", "CP-3") == 0
    assert "no certificates for CP-3" in capsys.readouterr().out


def test_sweep_alerts_once_per_certificate_in_its_last_tenth(setup) -> None:  # type: ignore[no-untyped-def]
    path, engine, tmp = setup
    config = load(path)
    ca_store.ensure_ca(engine, config, utcnow())
    register(engine, "CP-1")
    register(engine, "CP-2")
    issued = issue_for(engine, config, "CP-1", now=utcnow() - dt.timedelta(days=9.2))
    issue_for(engine, config, "CP-2")
    report = sweep.sweep(engine, config, utcnow(), sweep.notify_hook_alert(config))
    assert [(a.charger_id, a.stage) for a in report.alerted] == [("CP-1", "last-tenth")]
    assert report.renewal_due == ["CP-1"] and report.crl_written == tmp / "chargers.crl"
    payload = json.loads((tmp / "hook.json").read_text())
    assert payload["event"] == "charger-certificate-expiring" and payload["serial"] == issued.cert.serial
    assert "was not renewed" in payload["message"]
    again = sweep.sweep(engine, config, utcnow(), sweep.notify_hook_alert(config))
    assert again.alerted == []  # once per certificate
    later = sweep.sweep(engine, config, utcnow() + dt.timedelta(days=9.3))
    assert [(a.charger_id, a.stage) for a in later.alerted] == [("CP-2", "last-tenth")]


def test_cert_kit_writes_key_owner_only_and_the_quectel_script(setup, capsys) -> None:  # type: ignore[no-untyped-def]
    path, engine, tmp = setup
    assert cli(path, "charger-ca", "init") == 0
    register(engine, "DE*ABC*E1")
    out = tmp / "kit"
    assert cli(path, "chargers", "cert-kit", "DE*ABC*E1", "--out", str(out), "--ssl-context", "2") == 0
    key_file, chain_file, script_file = out / "DE_ABC_E1.client.key", out / "DE_ABC_E1.client.pem", \
        out / "DE_ABC_E1.client.quectel.at"
    assert stat.S_IMODE(key_file.stat().st_mode) == 0o600
    chain, key = chain_file.read_bytes(), key_file.read_bytes()
    script = script_file.read_text()
    assert f'AT+QFUPL="UFS:client.pem",{len(chain)},60' in script
    assert f"+QFUPL: {len(key)},{format_checksum(xor16(key))}" in script
    assert 'AT+QSSLCFG="clientcert",2,"UFS:client.pem"' in script
    assert 'AT+QSSLCFG="clientkey",2,"UFS:client.key"' in script and 'AT+QSSLCFG="seclevel",2,2' in script
    assert "PRIVATE KEY" not in script and "PRIVATE KEY" not in capsys.readouterr().out
    [cert] = records.certificates(engine, "DE*ABC*E1")
    assert (cert.source, cert.delivery, cert.key_type) == ("kit", "none", "rsa2048")
    leaf = x509.load_pem_x509_certificates(chain)[0]
    assert leaf.subject.rfc4514_string() == f"CN=DE*ABC*E1,O={ORG}"
    assert cli(path, "chargers", "cert-kit", "DE*ABC*E1", "--out", str(out)) == 1  # never overwrites a key


def test_client_certificate_script_lines() -> None:
    script = client_certificate_script(b"abc", b"defg", charger_id="CP-1", serial="1f", ssl_context=1)
    lines = [line for line in script.splitlines() if not line.startswith("#")]
    assert lines == ['AT+QFDEL="UFS:client.pem"', 'AT+QFUPL="UFS:client.pem",3,60',
                     'AT+QFDEL="UFS:client.key"', 'AT+QFUPL="UFS:client.key",4,60',
                     'AT+QSSLCFG="clientcert",1,"UFS:client.pem"', 'AT+QSSLCFG="clientkey",1,"UFS:client.key"',
                     'AT+QSSLCFG="seclevel",1,2']
    assert f"+QFUPL: 3,{format_checksum(xor16(b'abc'))}" in script


@pytest.mark.parametrize("listener,charger_ca,message", [
    ({"security_profile": 3}, None, "configure [ocpp.charger_ca] or list manufacturer CAs"),
    ({"security_profile": 1}, {}, "security_profile = 1 is plain ws://"),
    ({"client_ca_files": ["/x.pem"]}, {}, "client_ca_files apply to security_profile = 3"),
    ({"insecure": True, "certificates": [], "security_profile": 3}, {}, "insecure = true is security profile 1"),
    ({}, {"key_storage": "store", "key_encryption_key_env": "X", "key_encryption_key_file": "/k"},
     "set one, not both"),
    ({}, {"key_encryption_key_env": "X"}, "apply to key_storage = \"store\" only"),
    ({}, {"import_cert_file": "/a.pem"}, "import_cert_file and import_key_file go together"),
    ({}, {"move": {"url": "ws://plain/"}}, "starts with wss://"),
    ({}, {"retry_base": 100, "retry_max": 10}, "retry_max must not be below retry_base"),
])
def test_config_validation(listener: dict, charger_ca: dict | None, message: str) -> None:  # type: ignore[type-arg]
    data = {"certificates": [{"name": "rsa", "domains": ["ocpp.example.test"]}],
            "ocpp": {"listeners": [{"host": "ocpp.example.test", "port": 0, "certificates": ["rsa"], **listener}]}}
    if charger_ca is not None:
        data["ocpp"]["charger_ca"] = {"organization": ORG, **charger_ca}  # type: ignore[index]
    with pytest.raises(ValidationError) as failed:
        Config.model_validate(data)
    assert message in str(failed.value)


def test_config_profiles_and_secret_env() -> None:
    config = parse_config(f"""
[ocpp.charger_ca]
organization = "{ORG}"
key_storage = "store"
key_encryption_key_env = "CHARGER_CA_KEK"
move = {{ url = "wss://ocpp.example.com:8443/ocpp" }}

[[certificates]]
name = "rsa"
domains = ["ocpp.example.com"]

[[ocpp.listeners]]
host = "ocpp.example.com"
port = 443
certificates = ["rsa"]

[[ocpp.listeners]]
host = "ocpp.example.com"
port = 8443
certificates = ["rsa"]
security_profile = 3
""")
    assert [listener.profile for listener in config.ocpp.listeners] == [2, 3]
    assert "CHARGER_CA_KEK" in config.secret_env_names()
    assert config.ocpp.charger_ca.move.url == "wss://ocpp.example.com:8443/ocpp/"  # type: ignore[union-attr]
    with pytest.raises(ConfigError, match="organization"):
        parse_config("[ocpp.charger_ca]\nkey_type = \"rsa2048\"\n")


def test_migration_creates_the_tables_and_matches_the_models(tmp_path: Path) -> None:
    from alembic import command
    from alembic.autogenerate import compare_metadata
    from alembic.runtime.migration import MigrationContext
    from sqlmodel import SQLModel

    import certd.store.all_tables  # noqa: F401
    from certd.store.db import _alembic_config

    url = f"sqlite:///{tmp_path / 'm.db'}"
    upgrade(url)
    engine = make_engine(url)
    names = {"charger_ca_cert", "charger_certificate", "charger_csr_request", "charger_cert_renewal"}
    try:
        assert names <= set(sa.inspect(engine).get_table_names())
        with engine.connect() as conn:
            diff = compare_metadata(MigrationContext.configure(conn, opts={"compare_type": True}),
                                    SQLModel.metadata)
        assert [d for d in diff if any(n in str(d) for n in names)] == []
        command.downgrade(_alembic_config(url), "0008_charger_ca@-1")
        assert not names & set(sa.inspect(engine).get_table_names())
    finally:
        engine.dispose()


def test_examples_document_every_charger_ca_key() -> None:
    from certd.config.charger_ca import ChargerCaConfig, ProfileMoveConfig

    text = (Path(__file__).resolve().parents[2] / "examples" / "certd.toml").read_text()
    keys = [*ChargerCaConfig.model_fields, *ProfileMoveConfig.model_fields, "security_profile", "client_ca_files"]
    assert [key for key in keys if f"{key} = " not in text and key != "move"] == []
    assert "[ocpp.charger_ca.move]" in text
    fleet = parse_config((Path(__file__).resolve().parents[2] / "examples" / "gsm-fleet.toml").read_text())
    assert [listener.profile for listener in fleet.ocpp.listeners] == [2, 3]
