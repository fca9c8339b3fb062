"""Explicit zones (a token that cannot list zones), several accounts in one order, opaque new-format
tokens, and the config errors around them, through `certd` on the sandbox with Pebble."""

from __future__ import annotations

import secrets
import signal
import time

from sqlmodel import select

from certd.store.db import session_scope
from certd.store.models import ChallengeRecord
from tests.dns_delegation.conftest import Deleg, cert

DNS_EDIT_ONLY = {"dns:edit"}  # no Zone:Read: the token lists no zone at all


def token_ids_by_zone(deleg: Deleg) -> dict[str, set[str | None]]:
    names = {deleg.zone_id(z): z for z in ("example.com", "example.net")}
    found: dict[str, set[str | None]] = {}
    for request in deleg.world.emulator.writes():
        found.setdefault(names[request.path.split("/")[4]], set()).add(request.token_id)
    return found


def test_explicit_zone_id_works_with_a_token_that_cannot_list_zones(deleg: Deleg) -> None:
    deleg.env["DELEG_TOKEN"] = deleg.token("edit-only", zones=["example.net"], permissions=DNS_EDIT_ONLY)
    cloudflare = 'api_token_env = "DELEG_TOKEN"'
    net_id = deleg.zone_id("example.net")

    # Without a zone id the token finds no zone: the error says so before any order.
    deleg.write(cert("lan", ["nas.example.net"], deleg.tmp), cloudflare=cloudflare)
    blind = deleg.cli("issue", "lan")
    assert blind.returncode == 1 and "cannot see it" in blind.stderr and "zone_id" in blind.stderr
    assert deleg.orders_placed() == 0

    # Per certificate: the direct name; per name: a name delegated to example.net (zone name from DNS).
    deleg.cname("_acme-challenge.home.example.org", "_acme-challenge.acme.example.net")
    names = (f'zone_id = "{net_id}"\n[certificates.names."home.example.org"]\n'
             f'challenge_alias = "acme.example.net"\nzone_id = "{net_id}"')
    deleg.write(cert("lan", ["nas.example.net", "home.example.org"], deleg.tmp, extra=names), cloudflare=cloudflare)
    result = deleg.cli("issue", "lan")
    assert result.returncode == 0, result.stderr
    assert token_ids_by_zone(deleg).keys() == {"example.net"} and deleg.txt() == []


def test_a_zone_id_the_token_cannot_use_is_a_clear_error(deleg: Deleg) -> None:
    deleg.env["DELEG_TOKEN"] = deleg.token("edit-only", zones=["example.net"], permissions=DNS_EDIT_ONLY)
    com_id = deleg.zone_id("example.com")
    deleg.write(cert("web", ["www.example.com"], deleg.tmp, extra=f'zone_id = "{com_id}"'),
                cloudflare='api_token_env = "DELEG_TOKEN"')
    result = deleg.cli("issue", "web")
    assert result.returncode == 1
    assert f"www.example.com: no Cloudflare token can use zone id {com_id}" in result.stderr
    assert "environment variable DELEG_TOKEN" in result.stderr and "DNS:Edit" in result.stderr
    assert "edit-only" not in result.stderr
    assert deleg.orders_placed() == 0 and deleg.world.emulator.writes() == []


def two_accounts(deleg: Deleg) -> tuple[str, str]:
    home = deleg.token("home-" + secrets.token_hex(8), zones=["example.com"])
    work = deleg.token("work-" + secrets.token_hex(8), zones=["example.net"], permissions=DNS_EDIT_ONLY)
    deleg.env["DELEG_HOME"] = home
    work_file = deleg.secret_file("work.token", work)
    deleg.write(cert("both", ["www.example.com", "www.example.net"], deleg.tmp), cloudflare=f"""
[[cloudflare.accounts]]
name = "home"
api_token_env = "DELEG_HOME"
zones = ["example.com"]
[[cloudflare.accounts]]
name = "work"
api_token_file = "{work_file}"
zones = [{{ name = "example.net", id = "{deleg.zone_id('example.net')}" }}]
""")
    ids = {r.token_id for r in deleg.world.emulator.requests}
    assert not ids  # nothing asked yet
    return home, work


def test_two_accounts_serve_one_order_each_in_its_zone(deleg: Deleg) -> None:
    two_accounts(deleg)
    result = deleg.cli("issue", "both")
    assert result.returncode == 0, result.stderr
    by_zone = token_ids_by_zone(deleg)
    assert by_zone.keys() == {"example.com", "example.net"}
    assert len(by_zone["example.com"]) == 1 and len(by_zone["example.net"]) == 1
    assert by_zone["example.com"] != by_zone["example.net"]  # each zone written by its own token
    assert deleg.txt() == []


def test_a_killed_two_account_run_is_cleaned_with_each_records_token(deleg: Deleg) -> None:
    two_accounts(deleg)
    deleg.world.emulator.propagation_delay = 3600
    proc = deleg.popen("issue", "both")
    try:
        deadline = time.monotonic() + 30
        while len(deleg.txt()) < 2 and time.monotonic() < deadline and proc.poll() is None:
            time.sleep(0.05)
        assert len(deleg.txt()) == 2
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.communicate(timeout=10)
    deleg.world.emulator.propagation_delay = 0
    assert deleg.config_path is not None
    from certd.config import load_config

    with session_scope(deleg.engine(load_config(deleg.config_path))) as session:
        rows = session.exec(select(ChallengeRecord)).all()
    assert sorted((r.account, r.zone_name) for r in rows) == [("home", "example.com"), ("work", "example.net")]

    deleg.world.emulator.clear_requests()
    again = deleg.cli("issue", "both")
    assert again.returncode == 0, again.stderr
    assert "left by an interrupted order of both" in again.stderr
    assert deleg.txt() == []
    deletes = [r for r in deleg.world.emulator.writes() if r.method == "DELETE"]
    assert len({r.token_id for r in deletes}) == 2  # each record deleted by the token that wrote it


def test_opaque_new_format_tokens_are_accepted(deleg: Deleg) -> None:
    cfut = deleg.token("cfut_" + secrets.token_urlsafe(45) + "~.+/=", zones=["example.com"])
    cfat = deleg.token("cfat_" + secrets.token_hex(30), zones=["example.net"])
    deleg.env["DELEG_CFAT"] = cfat
    cfut_file = deleg.secret_file("cfut.token", cfut)
    deleg.write(cert("both", ["www.example.com", "www.example.net"], deleg.tmp), cloudflare=f"""
[[cloudflare.accounts]]
api_token_file = "{cfut_file}"
[[cloudflare.accounts]]
api_token_env = "DELEG_CFAT"
""")
    assert deleg.cli("check-config").returncode == 0
    result = deleg.cli("issue", "both")
    assert result.returncode == 0, result.stderr
    assert cfut not in result.stderr + result.stdout and cfat not in result.stderr + result.stdout


def test_a_credential_that_is_not_an_api_token_is_explained(deleg: Deleg) -> None:
    """Cloudflare answers 6003 "Invalid request headers" (6111: invalid Authorization header) when
    the credential is not an API token; the message names the env var, never the value."""
    deleg.env["DELEG_TOKEN"] = "0123456789abcdef 0123456789abcdef"  # e.g. two keys pasted together
    deleg.write(cert("web", ["www.example.com"], deleg.tmp), cloudflare='api_token_env = "DELEG_TOKEN"')
    result = deleg.cli("issue", "web")
    assert result.returncode == 1
    assert "could not read the API token in environment variable DELEG_TOKEN as an API token" in result.stderr
    assert "6003" in result.stderr and "Global API Key" in result.stderr
    assert "0123456789abcdef" not in result.stderr + result.stdout


def test_two_accounts_listing_one_zone_fail_check_config_naming_both(deleg: Deleg) -> None:
    deleg.env.update(DELEG_A="a-token", DELEG_B="b-token")
    path = deleg.tmp / "certd.toml"
    deleg.config_path = path
    path.write_text(f"""
state_dir = "{deleg.tmp / 'state'}"
[[cloudflare.accounts]]
name = "home"
api_token_env = "DELEG_A"
zones = ["example.com"]
[[cloudflare.accounts]]
name = "work"
api_token_env = "DELEG_B"
zones = ["example.net", "Example.COM."]
""")
    result = deleg.cli("check-config")
    assert result.returncode == 2
    assert "zone example.com is claimed by two accounts: 'home'" in result.stderr
    assert "environment variable DELEG_A" in result.stderr and "environment variable DELEG_B" in result.stderr


def test_two_tokens_discovering_one_zone_is_a_config_error_naming_both(deleg: Deleg) -> None:
    deleg.env["DELEG_A"] = deleg.token("a-token", zones=["example.com", "example.net"])
    deleg.env["DELEG_B"] = deleg.token("b-token", zones=["example.net"])
    deleg.write(cert("web", ["www.example.com"], deleg.tmp), cloudflare="""
[[cloudflare.accounts]]
api_token_env = "DELEG_A"
[[cloudflare.accounts]]
api_token_env = "DELEG_B"
""")
    checked = deleg.cli("check-config")
    assert checked.returncode == 2 and "zone example.net is claimed by two Cloudflare tokens" in checked.stderr
    result = deleg.cli("issue", "web")
    assert result.returncode == 2
    assert "zone example.net is claimed by two Cloudflare tokens" in result.stderr
    assert "environment variable DELEG_A" in result.stderr and "environment variable DELEG_B" in result.stderr
    assert deleg.orders_placed() == 0
