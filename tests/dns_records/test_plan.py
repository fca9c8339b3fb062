"""The pure gray-cloud planner: every rule, on plain data (no network, no database)."""

from __future__ import annotations

import pytest

from certd.dns.provider import DnsRecord, Zone
from certd.dns.records import DesiredHost, OwnedRecord, has_marker, plan

MARKER = "managed by certd"
ZONE = Zone(id="z" * 32, name="example.com")
NAME = "local.example.com"


def rec(content: str, *, rid: str = "r1", rtype: str = "A", proxied: bool = False, ttl: int = 1,
        comment: str | None = MARKER, name: str = NAME) -> DnsRecord:
    return DnsRecord(id=rid, zone_id=ZONE.id, name=name, type=rtype, content=content, ttl=ttl,
                     proxied=proxied, comment=comment)


def owned(content: str | None = "192.168.1.100", *, rid: str | None = "r1", rtype: str = "A",
          keep: bool = False, name: str = NAME, **extra: object) -> OwnedRecord:
    return OwnedRecord(name=name, type=rtype, zone_id=ZONE.id, zone_name=ZONE.name, record_id=rid,
                       content=content, keep=keep, **extra)  # type: ignore[arg-type]


def host(contents: dict[str, str] | None = None, **extra: object) -> DesiredHost:
    return DesiredHost(name=NAME, zone=ZONE, contents=contents or {"A": "192.168.1.100"},
                       **extra)  # type: ignore[arg-type]


def only(p, kind: str | None = None):  # type: ignore[no-untyped-def]
    assert len(p.actions) == 1, p.actions
    if kind is not None:
        assert p.actions[0].kind == kind, p.actions[0]
    return p.actions[0]


def test_missing_record_is_created_gray():
    action = only(plan([host()], [], {NAME: []}, marker=MARKER), "create")
    assert (action.content, action.ttl, action.zone) == ("192.168.1.100", 1, ZONE)
    assert action.is_change and not action.is_problem


def test_owned_record_in_sync_is_left_alone():
    p = plan([host()], [owned()], {NAME: [rec("192.168.1.100")]}, marker=MARKER)
    action = only(p, "leave")
    assert not p.changes and not p.problems and action.changes == {}


def test_address_change_updates_content_only():
    p = plan([host({"A": "192.168.1.101"})], [owned()], {NAME: [rec("192.168.1.100")]}, marker=MARKER)
    action = only(p, "update")
    assert action.changes == {"content": "192.168.1.101"}
    assert "192.168.1.100 -> 192.168.1.101" in action.reason


def test_ttl_drift_is_updated():
    action = only(plan([host(ttl=300)], [owned()], {NAME: [rec("192.168.1.100")]}, marker=MARKER), "update")
    assert action.changes == {"ttl": 300}


def test_proxied_owned_record_is_repaired_with_an_explaining_warning():
    action = only(plan([host()], [owned()], {NAME: [rec("192.168.1.100", proxied=True)]}, marker=MARKER),
                  "repair")
    assert action.changes == {"proxied": False}
    assert any("edge addresses" in w and "192.168.1.100" in w for w in action.warnings)


def test_repair_also_fixes_content_and_marker():
    current = {NAME: [rec("10.0.0.9", proxied=True, comment=None)]}
    action = only(plan([host()], [owned()], current, marker=MARKER), "repair")
    assert action.changes == {"proxied": False, "content": "192.168.1.100", "comment": MARKER}


def test_owned_record_whose_marker_was_removed_gets_it_back():
    action = only(plan([host()], [owned()], {NAME: [rec("192.168.1.100", comment="mine now")]},
                       marker=MARKER), "update")
    assert action.changes == {"comment": MARKER}


def test_foreign_record_with_other_content_is_a_conflict_not_touched():
    foreign = rec("192.168.1.50", rid="f1", comment=None)
    action = only(plan([host()], [], {NAME: [foreign]}, marker=MARKER), "conflict")
    assert action.changes == {} and action.record == foreign
    assert "does not own" in action.reason and "192.168.1.50" in action.reason


def test_foreign_exact_match_needs_adopt():
    foreign = rec("192.168.1.100", rid="f1", comment="set by hand")
    action = only(plan([host()], [], {NAME: [foreign]}, marker=MARKER), "conflict")
    assert "adopt = true" in action.reason
    adopted = only(plan([host(adopt=True)], [], {NAME: [foreign]}, marker=MARKER), "adopt")
    assert adopted.changes == {"comment": MARKER} and adopted.record == foreign


@pytest.mark.parametrize("differs", [
    {"content": "192.168.1.7"}, {"proxied": True}, {"ttl": 300},
])
def test_adopt_only_takes_an_exact_match(differs):
    fields = {"content": "192.168.1.100", "proxied": False, "ttl": 1} | differs
    foreign = rec(fields["content"], rid="f1", comment=None, proxied=fields["proxied"], ttl=fields["ttl"])
    action = only(plan([host(adopt=True)], [], {NAME: [foreign]}, marker=MARKER), "conflict")
    assert "differs" in action.reason


def test_marked_record_unknown_to_the_store_is_not_taken_silently():
    stray = rec("192.168.1.100", rid="s1")
    action = only(plan([host()], [], {NAME: [stray]}, marker=MARKER), "conflict")
    assert "no row" in action.reason
    adopted = only(plan([host(adopt=True)], [], {NAME: [stray]}, marker=MARKER), "adopt")
    assert adopted.changes == {}  # the marker is already there


def test_round_robin_is_a_conflict_even_when_one_record_is_owned():
    current = {NAME: [rec("192.168.1.100"), rec("192.168.1.101", rid="f2", comment=None)]}
    action = only(plan([host()], [owned()], current, marker=MARKER), "conflict")
    assert "round robin" in action.reason and action.changes == {}


def test_cname_at_the_name_is_a_conflict():
    current = {NAME: [rec("other.example.net", rid="c1", rtype="CNAME", comment=None)]}
    action = only(plan([host()], [], current, marker=MARKER), "conflict")
    assert "CNAME" in action.reason


def test_owned_record_deleted_outside_certd_is_recreated():
    action = only(plan([host()], [owned(rid="gone")], {NAME: []}, marker=MARKER), "create")
    assert "deleted outside certd" in action.reason


def test_interrupted_create_is_claimed_by_marker_not_recreated():
    row = owned(rid=None, state="creating")
    p = plan([host()], [row], {NAME: [rec("192.168.1.100", rid="new")]}, marker=MARKER)
    action = only(p, "leave")
    assert action.record is not None and action.record.id == "new"


def test_interrupted_create_is_claimed_even_if_the_address_moved_since():
    row = owned("192.168.1.100", rid=None, state="creating")
    p = plan([host({"A": "192.168.1.101"})], [row], {NAME: [rec("192.168.1.100", rid="new")]}, marker=MARKER)
    action = only(p, "update")
    assert action.record is not None and action.record.id == "new"
    assert action.changes == {"content": "192.168.1.101"}


def test_interrupted_create_with_nothing_in_cloudflare_creates_again():
    row = owned(rid=None, state="creating")
    only(plan([host()], [row], {NAME: []}, marker=MARKER), "create")


def test_removed_host_is_deleted_unless_kept():
    current = {NAME: [rec("192.168.1.100")]}
    action = only(plan([], [owned()], current, marker=MARKER), "delete")
    assert action.record is not None and not action.in_config
    kept = only(plan([], [owned(keep=True)], current, marker=MARKER), "release")
    assert kept.changes == {"comment": ""}
    globally_kept = only(plan([], [owned()], current, marker=MARKER, keep_removed=True), "release")
    assert globally_kept.record is not None


def test_release_of_an_adopted_record_gives_back_its_comment():
    row = owned(adopted=True, original_comment="set by hand", keep=True)
    action = only(plan([], [row], {NAME: [rec("192.168.1.100")]}, marker=MARKER), "release")
    assert action.changes == {"comment": "set by hand"}


def test_removed_host_whose_record_lost_its_marker_is_released_not_deleted():
    action = only(plan([], [owned()], {NAME: [rec("192.168.1.100", comment="hands off")]},
                       marker=MARKER), "release")
    assert action.changes == {}


def test_removed_host_with_record_already_gone_is_forgotten():
    action = only(plan([], [owned()], {NAME: []}, marker=MARKER), "delete")
    assert action.record is None and "already gone" in action.reason


def test_removed_host_whose_records_cannot_be_read_is_left():
    action = only(plan([], [owned()], {}, marker=MARKER, read_errors={NAME: "HTTP 500"}), "error")
    assert "HTTP 500" in action.reason


def test_dropped_record_type_is_deleted():
    current = {NAME: [rec("192.168.1.100"), rec("fd00::64", rid="r6", rtype="AAAA")]}
    p = plan([host()], [owned(), owned("fd00::64", rid="r6", rtype="AAAA")], current, marker=MARKER)
    kinds = {(a.type, a.kind) for a in p.actions}
    assert kinds == {("A", "leave"), ("AAAA", "delete")}


def test_unresolvable_address_keeps_the_owned_record():
    p = plan([host({}, errors={"A": "interface eth9 does not exist"})], [owned()],
             {NAME: [rec("192.168.1.100")]}, marker=MARKER)
    action = only(p, "error")
    assert "eth9" in action.reason and not p.changes


def test_zone_error_blocks_every_type():
    h = DesiredHost(name=NAME, zone=None, contents={"A": "192.168.1.100", "AAAA": "fd00::64"},
                    errors={"*": "lacks Zone:Read"})
    p = plan([h], [], {}, marker=MARKER)
    assert [(a.type, a.kind) for a in p.actions] == [("A", "error"), ("AAAA", "error")]
    v4_only = DesiredHost(name=NAME, zone=None, contents={"A": "192.168.1.100"}, errors={"*": "no zone"})
    assert [(a.type, a.kind) for a in plan([v4_only], [], {}, marker=MARKER).actions] == [("A", "error")]
    # An owned record of a type no longer published is not deleted blind while the zone is unknown.
    p = plan([v4_only], [owned("fd00::64", rtype="AAAA")], {}, marker=MARKER)
    assert [(a.type, a.kind) for a in p.actions] == [("A", "error"), ("AAAA", "error")]


def test_foreign_record_of_an_unmanaged_type_is_left_with_a_warning():
    current = {NAME: [rec("2001:db8::5", rid="f6", rtype="AAAA", comment=None)]}
    p = plan([host()], [], current, marker=MARKER)
    kinds = {a.type: a for a in p.actions}
    assert kinds["A"].kind == "create"
    assert kinds["AAAA"].kind == "leave" and kinds["AAAA"].warnings
    assert not kinds["AAAA"].is_change


def test_public_address_warns_it_leaves_the_lan():
    action = only(plan([host({"A": "8.8.8.8"})], [], {NAME: []}, marker=MARKER), "create")
    assert any("leaves the LAN" in w for w in action.warnings)
    private = only(plan([host()], [], {NAME: []}, marker=MARKER), "create")
    assert private.warnings == ()
    intended = only(plan([host({"A": "8.8.8.8"}, allow_public=True)], [], {NAME: []}, marker=MARKER))
    assert intended.warnings == ()


def test_other_hosts_and_foreign_names_are_not_in_the_plan():
    other = DesiredHost(name="wallbox.example.com", zone=ZONE, contents={"A": "192.168.1.20"})
    current = {NAME: [rec("192.168.1.100")], "wallbox.example.com": []}
    p = plan([host(), other], [owned()], current, marker=MARKER)
    assert [(a.name, a.kind) for a in p.actions] == [(NAME, "leave"), ("wallbox.example.com", "create")]


def test_marker_must_match_exactly():
    assert has_marker(" managed by certd ", MARKER)
    assert not has_marker("managed by certd-2", MARKER)
    assert not has_marker(None, MARKER)
