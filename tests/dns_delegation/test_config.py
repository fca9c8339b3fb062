"""The config forms: per-certificate and per-name challenge settings, [[cloudflare.accounts]],
zones on [[hosts]]; errors name the key and both parties of a conflict."""

from __future__ import annotations

import pytest
import sqlalchemy as sa
from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from sqlmodel import SQLModel, select

from certd.config import parse_config
from certd.config.certificates import ChallengeConfig
from certd.errors import ConfigError
from certd.store.db import _alembic_config, make_engine, session_scope, upgrade
from certd.store.models import ChallengeRecord

CERT = '[[certificates]]\nname = "home"\ndomains = ["home.example.org", "*.home.example.org", "www.example.org"]\n'


def error(text: str) -> str:
    with pytest.raises(ConfigError) as info:
        parse_config(text)
    return str(info.value)


def test_per_certificate_and_per_name_settings() -> None:
    config = parse_config(CERT + 'challenge_alias = "Acme.Example.NET."\nzone = "example.net"\n'
                          '[certificates.names."www.example.org"]\ndomain_alias = "_acme.example.net"\n'
                          'zone_id = "0123456789abcdef0123456789abcdef"\n')
    [cert] = config.certificates
    everyone = ChallengeConfig(challenge_alias="acme.example.net", zone="example.net")
    assert cert.challenge_settings("home.example.org") == everyone
    assert cert.challenge_settings("*.home.example.org") == everyone  # shares the base's record
    assert cert.challenge_settings("www.example.org") == ChallengeConfig(
        domain_alias="_acme.example.net", zone_id="0123456789abcdef0123456789abcdef")


def test_challenge_settings_errors_name_the_key() -> None:
    both = error(CERT + 'challenge_alias = "a.example.net"\ndomain_alias = "_acme.example.net"\n')
    assert "certificates[0]" in both and "not both" in both
    assert "not in this certificate's domains" in error(CERT + '[certificates.names."x.example.org"]\nzone = "a.b"\n')
    twins = error(CERT + '[certificates.names."*.home.example.org"]\nchallenge_alias = "a.example.net"\n')
    assert "share one challenge record" in twins
    assert "not a zone id" in error(CERT + 'zone_id = "../zones"\n')
    assert "not a DNS name" in error(CERT + 'domain_alias = "*.example.net"\n')


def test_accounts_forms_and_errors() -> None:
    config = parse_config("""
[cloudflare]
api_token_env = "CF_MAIN"
[[cloudflare.accounts]]
api_token_env = "CF_HOME"
zones = ["example.com", { name = "example.net", id = "abc123" }]
[[cloudflare.accounts]]
name = "work"
api_token_file = "/etc/certd/work.token"
""")
    home, work = config.cloudflare.accounts
    assert (home.label, home.source, [z.id for z in home.zones or []]) == (
        "CF_HOME", "environment variable CF_HOME", [None, "abc123"])
    assert (work.label, work.source, work.zones) == ("work", "file /etc/certd/work.token", None)
    assert config.cloudflare.has_default_token  # the top-level token is one more account
    assert {"CF_MAIN", "CF_HOME"} <= set(config.secret_env_names())

    assert "exactly one of api_token_env or api_token_file" in error(
        '[[cloudflare.accounts]]\napi_token_env = "A"\napi_token_file = "/f"\n')
    assert "zones = [] serves nothing" in error('[[cloudflare.accounts]]\napi_token_env = "A"\nzones = []\n')
    assert "names must be unique" in error(
        '[[cloudflare.accounts]]\nname = "x"\napi_token_env = "A"\n[[cloudflare.accounts]]\nname = "x"\n'
        'api_token_env = "B"\n')
    by_id = error('[[cloudflare.accounts]]\napi_token_env = "A"\nzones = [{ name = "a.com", id = "z1" }]\n'
                  '[[cloudflare.accounts]]\napi_token_env = "B"\nzones = [{ name = "b.com", id = "z1" }]\n')
    assert "zone id z1 is claimed by two accounts: 'A'" in by_id and "'B'" in by_id


def test_single_token_config_is_unchanged() -> None:
    config = parse_config('[cloudflare]\napi_token_file = "/etc/certd/cf.token"\n')
    assert config.cloudflare.accounts == [] and config.cloudflare.has_default_token
    assert config.cloudflare.token_source == "file /etc/certd/cf.token"


def test_hosts_take_a_zone() -> None:
    config = parse_config('[[hosts]]\nname = "wallbox.example.com"\naddress = "192.168.1.2"\n'
                          'zone = "Example.com"\nzone_id = "abc"\n')
    assert (config.hosts[0].zone, config.hosts[0].zone_id) == ("example.com", "abc")


def test_migration_adds_the_account_column_and_matches_the_model(db_url: str) -> None:
    upgrade(db_url)
    engine = make_engine(db_url)
    try:
        assert "account" in {c["name"] for c in sa.inspect(engine).get_columns("challenge_record")}
        with engine.connect() as conn:
            diff = compare_metadata(MigrationContext.configure(conn, opts={"compare_type": True}),
                                    SQLModel.metadata)
        assert [d for d in diff if "challenge_record" in repr(d)] == []
        with session_scope(engine) as session:
            session.add(ChallengeRecord(zone_id="z", zone_name="example.net", fqdn="_acme-challenge.a.example.net",
                                        value="v", account="work"))
        with session_scope(engine) as session:
            [row] = session.exec(select(ChallengeRecord)).all()
            assert row.account == "work"
            session.delete(row)
        command.downgrade(_alembic_config(db_url), "0008_challenge_account-1")
        assert "account" not in {c["name"] for c in sa.inspect(engine).get_columns("challenge_record")}
    finally:
        engine.dispose()
