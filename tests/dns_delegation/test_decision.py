"""Where a challenge TXT goes: the pure decision (certd.dns.delegation), case by case."""

from __future__ import annotations

import pytest

from certd.config.certificates import ChallengeConfig
from certd.dns.delegation import (
    MAX_CNAME_HOPS, ChallengeTarget, CnameChain, DelegationError, choose_zone, record_name, resolve_challenge,
)
from certd.dns.provider import AccountZones, Zone

START = "_acme-challenge.home.example.org"
TARGET = "_acme-challenge.home.example.net"
NONE = ChallengeConfig()
NET = Zone("id-net", "example.net")
COM = Zone("id-com", "example.com")
SUB = Zone("id-sub", "lab.example.net")
ONE = [AccountZones(None, "environment variable CF_TOKEN", (NET, COM))]
TWO = [AccountZones("home", "environment variable CF_HOME", (COM,)),
       AccountZones("work", "file /etc/certd/work.token", (NET, SUB))]


def chain(*targets: str, outcome: str = "end", apex: str | None = None, error: str | None = None) -> CnameChain:
    return CnameChain(START, tuple(targets), outcome, apex=apex, error=error)  # type: ignore[arg-type]


# -- which record name ------------------------------------------------------------------
def test_no_cname_and_no_settings_keeps_the_challenge_name() -> None:
    assert record_name("home.example.org", NONE, chain()) == (START, ())


def test_a_wildcard_uses_its_base_name() -> None:
    assert record_name("*.home.example.org", NONE, chain()) == (START, ())


def test_a_cname_moves_the_record_to_its_target_and_a_chain_to_its_end() -> None:
    assert record_name("home.example.org", NONE, chain(TARGET))[0] == TARGET
    assert record_name("home.example.org", NONE, chain("relay.example.com", TARGET))[0] == TARGET


def test_a_loop_is_an_error_showing_the_chain() -> None:
    with pytest.raises(DelegationError, match="loops") as info:
        record_name("home.example.org", NONE, chain("a.example.com", START, outcome="loop"))
    assert f"{START} -> a.example.com -> {START}" in str(info.value)


def test_an_overlong_chain_is_an_error() -> None:
    hops = tuple(f"h{i}.example.com" for i in range(MAX_CNAME_HOPS))
    with pytest.raises(DelegationError, match=f"longer than {MAX_CNAME_HOPS}"):
        record_name("home.example.org", NONE, chain(*hops, outcome="too_long"))


def test_a_failed_first_lookup_means_no_cname_with_a_note() -> None:
    name, notes = record_name("home.example.org", NONE, chain(outcome="failed", error="timed out"))
    assert name == START and "timed out" in notes[0] and "no CNAME" in notes[0]


def test_a_failed_later_lookup_writes_at_the_last_known_target_with_a_note() -> None:
    name, notes = record_name("home.example.org", NONE, chain(TARGET, outcome="failed", error="REFUSED"))
    assert name == TARGET and "REFUSED" in notes[0]


def test_challenge_alias_and_domain_alias_need_the_matching_cname() -> None:
    alias = ChallengeConfig(challenge_alias="home.example.net")
    assert record_name("home.example.org", alias, chain(TARGET)) == (TARGET, ())
    exact = ChallengeConfig(domain_alias="_acme.example.net")
    assert record_name("home.example.org", exact, chain("_acme.example.net"))[0] == "_acme.example.net"


def test_an_alias_without_its_cname_says_which_line_to_add() -> None:
    alias = ChallengeConfig(challenge_alias="home.example.net")
    with pytest.raises(DelegationError) as info:
        record_name("home.example.org", alias, chain())
    message = str(info.value)
    assert "has no CNAME" in message and f"`{START}. CNAME {TARGET}.`" in message
    assert "DNS host of home.example.org" in message


def test_an_alias_whose_cname_points_elsewhere_names_both() -> None:
    alias = ChallengeConfig(domain_alias="_acme.example.net")
    with pytest.raises(DelegationError) as info:
        record_name("home.example.org", alias, chain("_other.example.com"))
    assert "is a CNAME to _other.example.com" in str(info.value) and "_acme.example.net" in str(info.value)
    with pytest.raises(DelegationError, match="leads on past"):
        record_name("home.example.org", alias, chain("_acme.example.net", "_further.example.com"))


def test_an_alias_whose_cname_cannot_be_checked_is_trusted_with_a_note() -> None:
    alias = ChallengeConfig(challenge_alias="home.example.net")
    name, notes = record_name("home.example.org", alias, chain(outcome="failed", error="no nameserver"))
    assert name == TARGET and notes


# -- which zone and account ----------------------------------------------------------------
def test_the_longest_zone_of_any_account_wins_and_carries_its_account() -> None:
    zone, source = choose_zone("x", "_acme-challenge.a.lab.example.net", NONE, TWO)
    assert zone == Zone("id-sub", "lab.example.net", account="work") and source == "file /etc/certd/work.token"
    zone, source = choose_zone("x", "_acme-challenge.www.example.com", NONE, TWO)
    assert (zone.id, zone.account, source) == ("id-com", "home", "environment variable CF_HOME")


def test_no_zone_names_the_name_the_target_and_the_permission() -> None:
    with pytest.raises(DelegationError) as info:
        resolve_challenge("home.example.org", NONE, chain("_acme-challenge.home.example.info"), ONE)
    message = str(info.value)
    assert message.startswith("home.example.org: ") and "_acme-challenge.home.example.info" in message
    assert "delegated to" in message and "DNS:Edit" in message and "Zone:Read" in message
    assert "environment variable CF_TOKEN serves example.net, example.com" in message


def test_no_zone_without_a_cname_suggests_delegating() -> None:
    with pytest.raises(DelegationError) as info:
        resolve_challenge("home.example.org", NONE, chain(), ONE)
    assert "cannot see it" in str(info.value) and f"`{START}. CNAME" in str(info.value)


def test_one_zone_claimed_by_two_tokens_is_an_error_naming_both() -> None:
    accounts = [AccountZones("a", "environment variable A", (NET,)),
                AccountZones("b", "environment variable B", (Zone("other-id", "example.net"),))]
    with pytest.raises(DelegationError) as info:
        choose_zone("x", TARGET, NONE, accounts)
    assert "environment variable A" in str(info.value) and "environment variable B" in str(info.value)


def test_a_listed_zone_id_picks_its_account() -> None:
    zone, _ = choose_zone("x", TARGET, ChallengeConfig(zone_id="id-net"), TWO, usable=[("work", "id-net")])
    assert zone == Zone("id-net", "example.net", account="work")


def test_a_probed_zone_id_takes_its_name_from_config_or_from_dns() -> None:
    blind = [AccountZones(None, "file /t", ())]  # a token without Zone:Read lists nothing
    settings = ChallengeConfig(zone_id="id-net")
    zone, _ = choose_zone("x", TARGET, settings, blind, apex="example.net", usable=[(None, "id-net")])
    assert zone == Zone("id-net", "example.net")
    named = ChallengeConfig(zone_id="id-net", zone="example.net")
    assert choose_zone("x", TARGET, named, blind, usable=[(None, "id-net")])[0].name == "example.net"
    with pytest.raises(DelegationError, match='set zone = "..." next to zone_id'):
        choose_zone("x", TARGET, settings, blind, usable=[(None, "id-net")])


def test_a_zone_id_no_token_can_use_says_why() -> None:
    blind = [AccountZones(None, "file /t", ())]
    with pytest.raises(DelegationError) as info:
        choose_zone("x", TARGET, ChallengeConfig(zone_id="id-x"), blind,
                    denied=[(None, "id-x", "10000: Authentication error")])
    assert "zone id id-x" in str(info.value) and "file /t: 10000" in str(info.value)
    assert "DNS:Edit" in str(info.value)


def test_a_listed_zone_id_its_token_cannot_use_is_an_error() -> None:
    with pytest.raises(DelegationError, match="the token in file /etc/certd/work.token cannot use zone id"):
        choose_zone("x", TARGET, ChallengeConfig(zone_id="id-net"), TWO,
                    denied=[("work", "id-net", "403 denied")])


def test_a_zone_id_usable_by_two_tokens_is_a_conflict() -> None:
    blind = [AccountZones("a", "environment variable A", ()), AccountZones("b", "environment variable B", ())]
    with pytest.raises(DelegationError, match="claimed by two tokens"):
        choose_zone("x", TARGET, ChallengeConfig(zone_id="z", zone="example.net"), blind,
                    usable=[("a", "z"), ("b", "z")])


def test_zone_by_name_and_its_mismatches() -> None:
    assert choose_zone("x", TARGET, ChallengeConfig(zone="example.net"), TWO)[0].id == "id-net"
    with pytest.raises(DelegationError, match="set zone_id"):
        choose_zone("x", TARGET, ChallengeConfig(zone="example.info"), TWO)
    with pytest.raises(DelegationError, match="is zone example.net, not example.com"):
        choose_zone("x", TARGET, ChallengeConfig(zone_id="id-net", zone="example.com"), TWO,
                    usable=[("work", "id-net")])
    with pytest.raises(DelegationError, match="is not in zone example.com"):
        choose_zone("x", TARGET, ChallengeConfig(zone="example.com"), TWO)


def test_nameservers_placing_the_record_in_another_zone_stop_it() -> None:
    with pytest.raises(DelegationError, match="deeper zone"):
        choose_zone("x", "_acme-challenge.a.lab.example.com", NONE, TWO, apex="lab.example.com")
    with pytest.raises(DelegationError, match="is that zone active"):
        choose_zone("x", TARGET, NONE, TWO, apex="net")
    assert choose_zone("x", TARGET, NONE, TWO, apex="example.net")[0].id == "id-net"


# -- together --------------------------------------------------------------------------------
def test_a_delegated_target_records_its_path() -> None:
    target = resolve_challenge("*.home.example.org", NONE, chain("relay.example.com", TARGET, apex="example.net"),
                               TWO)
    assert target == ChallengeTarget(START, TARGET, Zone("id-net", "example.net", "work"),
                                     "file /etc/certd/work.token", via=("relay.example.com", TARGET))
    assert target.delegated and target.describe() == f"{START} -> {TARGET} in zone example.net (account work)"


def test_a_direct_target_is_not_delegated() -> None:
    direct = resolve_challenge("www.example.com", NONE, CnameChain("_acme-challenge.www.example.com"), ONE)
    assert not direct.delegated and direct.via == () and direct.zone == COM


def test_a_token_that_could_not_list_its_zones_is_noted() -> None:
    accounts = [*TWO, AccountZones("spare", "environment variable SPARE", (), error="Zone:Read missing")]
    target = resolve_challenge("home.example.org", NONE, chain(TARGET), accounts)
    assert any("Zone:Read missing" in note for note in target.notes)
