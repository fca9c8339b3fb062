"""A name whose zone no token can edit, delegated by CNAME to a zone one token can: issued, the TXT
removed, a killed run's record removed by the next run; chains of two CNAMEs; a loop and a CNAME into
an uneditable zone fail before any order, creating nothing."""

from __future__ import annotations

import signal
import time

from sqlmodel import select

from certd.store.db import session_scope
from certd.store.models import ChallengeRecord, IssuanceAttempt
from tests.dns_delegation.conftest import Deleg, cert

TOKEN_ENV = "DELEG_CF_TOKEN"
NAME = "home.example.org"  # at the registrar: no token can edit example.org
CHALLENGE = f"_acme-challenge.{NAME}"
TARGET = "_acme-challenge.acme.example.net"  # in example.net, which the token can edit


def scoped(deleg: Deleg) -> str:
    deleg.env[TOKEN_ENV] = deleg.token("net-only-token", zones=["example.net"])
    return f'api_token_env = "{TOKEN_ENV}"'


def writes_by_zone(deleg: Deleg) -> set[str]:
    ids = {deleg.zone_id(z): z for z in ("example.com", "example.net", "example.org", "example.info")}
    return {ids[r.path.split("/")[4]] for r in deleg.world.emulator.writes()}


def test_a_delegated_name_is_issued_and_its_txt_removed(deleg: Deleg) -> None:
    deleg.cname(CHALLENGE, TARGET)
    config = deleg.write(cert("home", [NAME, f"*.{NAME}"], deleg.tmp), cloudflare=scoped(deleg))
    result = deleg.cli("issue", "home")
    assert result.returncode == 0, result.stderr
    assert (deleg.tmp / "home-fullchain.pem").read_text().startswith("-----BEGIN CERTIFICATE-----")
    assert f"{CHALLENGE} -> {TARGET} in zone example.net" in result.stderr
    assert deleg.orders_placed() == 1
    # Both values (the name and its wildcard) went to the target, in example.net only, and are gone.
    assert writes_by_zone(deleg) == {"example.net"}
    creates = [r for r in deleg.world.emulator.writes() if r.method == "POST"]
    assert len(creates) == 2
    assert deleg.txt() == []
    assert [r["type"] for r in deleg.world.emulator.records("example.org")] == ["CNAME"]  # the user's CNAME stays
    with session_scope(deleg.engine(config)) as session:
        assert session.exec(select(ChallengeRecord)).all() == []


def test_a_killed_delegated_run_is_cleaned_up_by_the_next(deleg: Deleg) -> None:
    deleg.cname(CHALLENGE, TARGET)
    config = deleg.write(cert("home", [NAME], deleg.tmp), cloudflare=scoped(deleg))
    deleg.world.emulator.propagation_delay = 3600  # the run waits in its propagation check
    proc = deleg.popen("issue", "home")
    try:
        deadline = time.monotonic() + 30
        while not deleg.txt() and time.monotonic() < deadline and proc.poll() is None:
            time.sleep(0.05)
        [record] = deleg.txt()
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.communicate(timeout=10)
    deleg.world.emulator.propagation_delay = 0
    assert record["name"] == TARGET and record["zone_name"] == "example.net"
    with session_scope(deleg.engine(config)) as session:
        [row] = session.exec(select(ChallengeRecord)).all()
    # The row names the record as written (the target), so it can be found even when the kill
    # came before the create's answer was stored (record_id still None).
    assert (row.fqdn, row.zone_name, row.value) == (TARGET, "example.net", record["content"])
    assert row.record_id in (None, record["id"])

    again = deleg.cli("issue", "home")
    assert again.returncode == 0, again.stderr
    assert "left by an interrupted order of home" in again.stderr
    assert deleg.txt() == []
    with session_scope(deleg.engine(config)) as session:
        assert session.exec(select(ChallengeRecord)).all() == []


def test_a_chain_of_two_cnames_is_followed(deleg: Deleg) -> None:
    deleg.cname(CHALLENGE, "relay.example.info")  # another zone without a token
    deleg.cname("relay.example.info", TARGET)
    deleg.write(cert("home", [NAME], deleg.tmp), cloudflare=scoped(deleg))
    result = deleg.cli("issue", "home")
    assert result.returncode == 0, result.stderr
    assert writes_by_zone(deleg) == {"example.net"} and deleg.txt() == []


def failed_before_any_order(deleg: Deleg, config_name: str = "home") -> str:
    before = deleg.orders_placed()
    result = deleg.cli("issue", config_name)
    assert result.returncode == 1, result.stdout + result.stderr
    assert deleg.orders_placed() == before  # no order placed
    assert deleg.world.emulator.writes() == [] and deleg.txt() == []  # no record created
    return result.stderr


def test_a_cname_loop_fails_before_any_order(deleg: Deleg) -> None:
    deleg.cname(CHALLENGE, "_acme-challenge.loop.example.info")
    deleg.cname("_acme-challenge.loop.example.info", CHALLENGE)
    config = deleg.write(cert("home", [NAME], deleg.tmp), cloudflare=scoped(deleg))
    stderr = failed_before_any_order(deleg)
    assert f"{NAME}: the CNAME chain of {CHALLENGE} loops" in stderr
    assert f"{CHALLENGE} -> _acme-challenge.loop.example.info -> {CHALLENGE}" in stderr
    with session_scope(deleg.engine(config)) as session:
        [attempt] = session.exec(select(IssuanceAttempt)).all()
    assert attempt.outcome == "failure" and "loops" in (attempt.error or "")


def test_a_cname_into_a_zone_no_token_can_edit_names_name_target_and_permission(deleg: Deleg) -> None:
    deleg.cname(CHALLENGE, "_acme-challenge.acme.example.info")
    deleg.write(cert("home", [NAME, "www.example.net"], deleg.tmp), cloudflare=scoped(deleg))
    stderr = failed_before_any_order(deleg)
    assert f"{NAME}: {CHALLENGE} is delegated to _acme-challenge.acme.example.info" in stderr
    assert "no Cloudflare token can edit a zone containing _acme-challenge.acme.example.info" in stderr
    assert "DNS:Edit" in stderr and "environment variable DELEG_CF_TOKEN serves example.net" in stderr
    assert "net-only-token" not in stderr


def test_an_alias_whose_cname_is_missing_says_which_line_to_add(deleg: Deleg) -> None:
    deleg.write(cert("home", [NAME], deleg.tmp, extra='challenge_alias = "acme.example.net"'),
                cloudflare=scoped(deleg))
    stderr = failed_before_any_order(deleg)
    assert f"`{CHALLENGE}. CNAME {TARGET}.`" in stderr

    deleg.cname(CHALLENGE, TARGET)
    result = deleg.cli("issue", "home")
    assert result.returncode == 0, result.stderr
    assert deleg.txt() == []
