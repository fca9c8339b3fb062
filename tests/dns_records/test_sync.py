"""Gray-cloud sync end to end: the Cloudflare emulator, its DNS server, SQLite and PostgreSQL."""

from __future__ import annotations

import ipaddress

from certd.dns.addresses import InterfaceSnapshot
from certd.sandbox.dns_server import EDGE_IPV4
from tests.dns_records.conftest import WALLBOX, ZONE, GrayWorld

NAME = "local.example.com"
MARKER = "managed by certd"


def kinds(report) -> list[tuple[str, str, str]]:  # type: ignore[no-untyped-def]
    return [(a.name, a.type, a.kind) for a in report.plan.actions]


def test_plan_changes_nothing_then_sync_creates_a_gray_record(gray: GrayWorld):
    config = gray.config(WALLBOX)
    planned = gray.run(config, apply=False)
    assert kinds(planned) == [(NAME, "A", "create")] and planned.outcome == "changed"
    assert gray.writes() == [] and gray.records(NAME) == [] and gray.rows() == []

    synced = gray.run(config)
    assert synced.outcome == "changed" and [r.outcome for r in synced.results] == ["applied"]
    [record] = gray.records(NAME)
    assert (record["type"], record["content"], record["proxied"], record["ttl"], record["comment"]) == (
        "A", "192.168.1.100", False, 1, MARKER)
    [row] = gray.rows()
    assert (row.name, row.type, row.record_id, row.content, row.state) == (
        NAME, "A", record["id"], "192.168.1.100", "present")
    assert row.last_checked_at is not None and row.last_checked_at.tzinfo is not None
    assert gray.answer(NAME) == ["192.168.1.100"]

    before = len(gray.writes())
    again = gray.run(config)
    assert again.outcome == "no changes" and kinds(again) == [(NAME, "A", "leave")]
    assert len(gray.writes()) == before


def test_address_change_updates_the_record_in_place(gray: GrayWorld):
    gray.run(gray.config(WALLBOX))
    [created] = gray.records(NAME)
    moved = gray.config(WALLBOX.replace("192.168.1.100", "192.168.1.101"))
    report = gray.run(moved)
    assert kinds(report) == [(NAME, "A", "update")] and report.outcome == "changed"
    [record] = gray.records(NAME)
    assert record["id"] == created["id"] and record["content"] == "192.168.1.101"
    assert gray.rows()[0].content == "192.168.1.101"
    assert gray.answer(NAME) == ["192.168.1.101"]


def test_interface_address_change_follows_the_interface(gray: GrayWorld):
    config = gray.config('[[hosts]]\nname = "nas.example.com"\ninterface = "eth0"\naaaa = true\n')

    def lan(v4: str) -> InterfaceSnapshot:
        ip = ipaddress.ip_address
        return InterfaceSnapshot(addresses={"eth0": (ip(v4), ip("fd00::7"))}, up=frozenset({"eth0"}))

    gray.run(config, snapshot=lan("192.168.1.7"))
    assert gray.answer("nas.example.com") == ["192.168.1.7"]
    assert gray.answer("nas.example.com", "AAAA") == ["fd00::7"]
    report = gray.run(config, snapshot=lan("192.168.1.8"))
    assert kinds(report) == [("nas.example.com", "A", "update"), ("nas.example.com", "AAAA", "leave")]
    assert gray.answer("nas.example.com") == ["192.168.1.8"]
    # The interface going away leaves the records alone and reports why.
    gone = gray.run(config, snapshot=InterfaceSnapshot())
    assert gone.outcome == "failed" and {a.kind for a in gone.plan.actions} == {"error"}
    assert len(gray.records("nas.example.com")) == 2
    assert all("eth0 does not exist" in (row.last_error or "") for row in gray.rows())


def test_orange_cloud_is_repaired_and_dns_answers_the_lan_address_again(gray: GrayWorld):
    config = gray.config(WALLBOX)
    gray.run(config)
    [record] = gray.records(NAME)
    # Someone clicks the orange cloud in the dashboard.
    gray.adapter().update_record(gray.adapter().find_zone(NAME), _as_record(gray, record), proxied=True)
    assert gray.answer(NAME) == sorted(EDGE_IPV4)

    planned = gray.run(config, apply=False)
    assert kinds(planned) == [(NAME, "A", "repair")]
    assert any("edge addresses" in w for w in planned.warnings)
    report = gray.run(config)
    assert report.outcome == "changed"
    [repaired] = gray.records(NAME)
    assert repaired["proxied"] is False and repaired["id"] == record["id"]
    assert gray.answer(NAME) == ["192.168.1.100"]


def _as_record(gray: GrayWorld, record: dict):  # type: ignore[no-untyped-def]
    zone = gray.adapter().find_zone(record["name"])
    [found] = [r for r in gray.adapter().list_records(zone, name=record["name"]) if r.id == record["id"]]
    return found


def test_foreign_records_at_the_name_are_left_untouched(gray: GrayWorld):
    emulator = gray.world.emulator
    emulator.add_record(ZONE, "A", NAME, "192.168.1.50", comment="the old NAS")
    emulator.add_record(ZONE, "TXT", NAME, "hello")
    before = gray.records(NAME)
    report = gray.run(gray.config(WALLBOX))
    assert kinds(report) == [(NAME, "A", "conflict")] and report.outcome == "failed"
    assert "192.168.1.50" in report.plan.actions[0].reason
    assert gray.records(NAME) == before and gray.writes() == [] and gray.rows() == []
    assert gray.answer(NAME) == ["192.168.1.50"]


def test_foreign_txt_and_other_names_survive_a_create_and_a_delete(gray: GrayWorld):
    emulator = gray.world.emulator
    emulator.add_record(ZONE, "TXT", NAME, "keep me")
    emulator.add_record(ZONE, "A", "other.example.com", "192.168.1.100")
    gray.run(gray.config(WALLBOX))
    gray.run(gray.config(""))
    left = {(r["name"], r["type"], r["content"]) for r in gray.records()}
    assert left == {(NAME, "TXT", "keep me"), ("other.example.com", "A", "192.168.1.100")}


def test_adoption_only_when_asked(gray: GrayWorld):
    gray.world.emulator.add_record(ZONE, "A", NAME, "192.168.1.100", comment="made by hand")
    refused = gray.run(gray.config(WALLBOX))
    assert kinds(refused) == [(NAME, "A", "conflict")] and "adopt = true" in refused.plan.actions[0].reason
    assert gray.writes() == []

    adopt = gray.config(WALLBOX + "adopt = true\nkeep = true\n")
    report = gray.run(adopt)
    assert kinds(report) == [(NAME, "A", "adopt")] and report.outcome == "changed"
    [record] = gray.records(NAME)
    assert record["comment"] == MARKER
    [row] = gray.rows()
    assert row.adopted and row.original_comment == "made by hand" and row.record_id == record["id"]
    assert gray.run(adopt).outcome == "no changes"

    # Removing the host (keep = true) gives the record back with its own comment.
    released = gray.run(gray.config(""))
    assert kinds(released) == [(NAME, "A", "release")]
    [record] = gray.records(NAME)
    assert record["comment"] == "made by hand" and gray.rows() == []


def test_removal_without_keep_deletes_the_owned_record(gray: GrayWorld):
    gray.run(gray.config(WALLBOX))
    planned = gray.run(gray.config(""), apply=False)
    assert kinds(planned) == [(NAME, "A", "delete")] and gray.records(NAME)
    report = gray.run(gray.config(""))
    assert report.outcome == "changed"
    assert gray.records(NAME) == [] and gray.rows() == []
    assert gray.answer(NAME) == "NXDOMAIN"
    assert gray.run(gray.config("")).outcome == "no changes"


def test_removal_with_keep_leaves_the_record_and_forgets_it(gray: GrayWorld):
    gray.run(gray.config(WALLBOX + "keep = true\n"))
    assert gray.rows()[0].keep
    report = gray.run(gray.config(""))
    assert kinds(report) == [(NAME, "A", "release")]
    [record] = gray.records(NAME)
    assert record["content"] == "192.168.1.100" and record["comment"] is None
    assert gray.rows() == [] and gray.answer(NAME) == ["192.168.1.100"]


def test_keep_removed_keeps_every_removed_host(gray: GrayWorld):
    gray.run(gray.config(WALLBOX))
    report = gray.run(gray.config("", extra="[dns_records]\nkeep_removed = true\n"))
    assert kinds(report) == [(NAME, "A", "release")] and len(gray.records(NAME)) == 1


def test_round_robin_is_reported_and_never_overwritten(gray: GrayWorld):
    gray.run(gray.config(WALLBOX))
    gray.world.emulator.add_record(ZONE, "A", NAME, "192.168.1.101")  # a second A: round robin
    before = gray.records(NAME)
    writes = len(gray.writes())
    report = gray.run(gray.config(WALLBOX.replace("192.168.1.100", "192.168.1.102")))
    assert kinds(report) == [(NAME, "A", "conflict")] and report.outcome == "failed"
    assert "round robin" in report.plan.actions[0].reason
    assert gray.records(NAME) == before and len(gray.writes()) == writes
    assert "round robin" in (gray.rows()[0].last_error or "")


def test_retries_after_429_and_5xx_create_no_duplicates(gray: GrayWorld):
    emulator = gray.world.emulator
    # Two rate-limited writes, then a create that succeeds server-side but whose answer is lost.
    emulator.inject_429(2, retry_after=0.05, writes_only=True)
    emulator.inject_5xx(1, status=502, writes_only=True, after_apply=True)
    report = gray.run(gray.config(WALLBOX))
    assert report.outcome == "changed", report.results
    assert len(gray.records(NAME)) == 1
    posts = [w for w in emulator.writes() if w.method == "POST"]
    assert [w.status for w in posts] == [429, 429, 502]  # the lookup before the 4th try found it
    assert gray.rows()[0].record_id == gray.records(NAME)[0]["id"]

    # Reads are retried too (the SDK's own retries honour Retry-After).
    emulator.inject_5xx(2, status=500)
    emulator.inject_429(1, retry_after=0.05)
    again = gray.run(gray.config(WALLBOX.replace("192.168.1.100", "192.168.1.101")))
    assert again.outcome == "changed" and len(gray.records(NAME)) == 1
    assert gray.answer(NAME) == ["192.168.1.101"]


def test_interrupted_create_is_finished_by_the_next_sync(gray: GrayWorld):
    emulator = gray.world.emulator
    emulator.inject_5xx(1, status=500, writes_only=True, after_apply=True)
    # No write retries: the create's answer is lost and the sync gives up on it.
    failed = gray.run(gray.config(WALLBOX), adapter=gray.adapter(max_retries=0))
    assert failed.outcome == "failed" and "HTTP 500" in (failed.results[0].error or "")
    [row] = gray.rows()
    assert (row.state, row.record_id) == ("creating", None) and row.last_error
    assert len(gray.records(NAME)) == 1  # Cloudflare did create it

    writes = len(gray.writes())
    report = gray.run(gray.config(WALLBOX))
    assert kinds(report) == [(NAME, "A", "leave")] and report.outcome == "no changes"
    assert len(gray.writes()) == writes and len(gray.records(NAME)) == 1
    [row] = gray.rows()
    assert (row.state, row.record_id, row.last_error) == ("present", gray.records(NAME)[0]["id"], None)


def test_token_without_dns_edit_gets_a_clear_error_and_nothing_half_done(gray: GrayWorld):
    read_only = "ro-" + "x" * 37
    gray.world.emulator.add_token(read_only, permissions={"zone:read", "dns:read"})
    report = gray.run(gray.config(WALLBOX), adapter=gray.adapter(read_only))
    assert report.outcome == "failed"
    [result] = report.results
    assert result.outcome == "failed" and "DNS:Edit" in (result.error or "")
    assert read_only not in (result.error or "")
    assert gray.records(NAME) == []
    [row] = gray.rows()  # the attempt is recorded, so nothing can be left behind unknown
    assert row.state == "creating" and "DNS:Edit" in (row.last_error or "")

    # With a proper token the next sync completes the job.
    assert gray.run(gray.config(WALLBOX)).outcome == "changed"
    assert len(gray.records(NAME)) == 1 and gray.rows()[0].state == "present"


def test_token_that_cannot_see_the_zone_names_the_permission(gray: GrayWorld):
    other_zone = "oz-" + "y" * 37
    gray.world.emulator.add_token(other_zone, zones=["example.net"])
    report = gray.run(gray.config(WALLBOX), adapter=gray.adapter(other_zone))
    [action] = report.plan.actions
    assert action.kind == "error" and "Zone:Read" in action.reason and "example.net" in action.reason
    assert report.outcome == "failed" and gray.writes() == []


def test_cname_at_the_name_is_a_conflict(gray: GrayWorld):
    gray.world.emulator.add_record(ZONE, "CNAME", NAME, "home.example.net")
    report = gray.run(gray.config(WALLBOX))
    assert kinds(report) == [(NAME, "A", "conflict")] and "CNAME" in report.plan.actions[0].reason
    assert gray.writes() == []
