"""429 and 5xx injection, observed through the SDK's own retries (2 by default)."""

from __future__ import annotations

import time

import cloudflare
import pytest

from certd.sandbox import SandboxWorld


def statuses(world: SandboxWorld) -> list[int]:
    return [r.status for r in world.emulator.requests]


def test_sdk_retries_429_honouring_retry_after(cf_world: SandboxWorld, cf: cloudflare.Cloudflare) -> None:
    cf_world.emulator.inject_429(2, retry_after=0.3)
    started = time.monotonic()
    zones = [z.name for z in cf.zones.list(name="example.com")]
    elapsed = time.monotonic() - started
    assert zones == ["example.com"]
    assert statuses(cf_world)[:3] == [429, 429, 200]
    assert elapsed >= 0.55, f"Retry-After 0.3s twice should make the SDK wait ~0.6s, it waited {elapsed:.2f}s"


def test_sdk_gives_up_after_two_retries(cf_world: SandboxWorld, cf: cloudflare.Cloudflare) -> None:
    cf_world.emulator.inject_429(3, retry_after=0.05)
    with pytest.raises(cloudflare.RateLimitError) as info:
        cf.user.tokens.verify()
    assert info.value.response.headers["retry-after"] == "0.05"
    assert isinstance(info.value.body, dict) and info.value.body["errors"][0]["code"] == 971
    assert statuses(cf_world) == [429, 429, 429]
    assert cf.user.tokens.verify() is not None  # the fault is used up


def test_5xx_is_retried_and_edge_errors_are_html(cf_world: SandboxWorld, cf: cloudflare.Cloudflare) -> None:
    cf_world.emulator.inject_5xx(1, status=500, retry_after=0.01)
    cf_world.emulator.inject_5xx(1, status=503, retry_after=0.01)
    assert cf.user.tokens.verify() is not None
    assert statuses(cf_world) == [500, 503, 200]
    cf_world.emulator.inject_5xx(3, status=502, retry_after=0.01)
    with pytest.raises(cloudflare.InternalServerError) as info:
        cf.user.tokens.verify()
    assert info.value.status_code == 502
    assert "text/html" in info.value.response.headers["content-type"]


def test_writes_only_faults_spare_reads(cf_world: SandboxWorld, cf: cloudflare.Cloudflare) -> None:
    zone_id = cf_world.zone_ids["example.com"]
    cf_world.emulator.inject_5xx(1, status=503, writes_only=True, retry_after=0.01)
    assert list(cf.dns.records.list(zone_id=zone_id)) == []
    record = cf.dns.records.create(zone_id=zone_id, type="TXT", name="_acme-challenge", content="v", ttl=60)
    assert record is not None
    writes = cf_world.emulator.writes()
    assert [w.status for w in writes] == [503, 200]
    # The refused attempt changed nothing: one record.
    assert len(cf_world.emulator.records("example.com")) == 1


def test_lost_answer_after_apply_makes_a_blind_retry_hit_81058(cf_world: SandboxWorld,
                                                                cf: cloudflare.Cloudflare) -> None:
    """The trap certd's adapter must handle: the create worked, only the answer was lost."""
    zone_id = cf_world.zone_ids["example.com"]
    cf_world.emulator.inject_5xx(1, status=502, writes_only=True, after_apply=True, retry_after=0.01)
    with pytest.raises(cloudflare.BadRequestError) as info:
        cf.dns.records.create(zone_id=zone_id, type="TXT", name="_acme-challenge", content="v", ttl=60)
    assert isinstance(info.value.body, dict) and info.value.body["errors"][0]["code"] == 81058
    assert [w.status for w in cf_world.emulator.writes()] == [502, 400]
    assert [r["content"] for r in cf_world.emulator.records("example.com")] == ["v"]


def test_faults_are_settable_from_another_thread_while_serving(cf_world: SandboxWorld,
                                                               cf: cloudflare.Cloudflare) -> None:
    import threading

    results: list[int] = []

    def worker() -> None:
        for _ in range(20):
            results.append(len(list(cf.zones.list())))

    thread = threading.Thread(target=worker)
    thread.start()
    for injected in range(1, 6):
        cf_world.emulator.inject_429(1, retry_after=0.01)
        deadline = time.monotonic() + 10
        # Wait until this 429 was served and a success followed it, so faults never pile up on one call.
        while thread.is_alive() and time.monotonic() < deadline:
            seen = statuses(cf_world)
            if seen.count(429) == injected and seen[-1] == 200:
                break
            time.sleep(0.005)
    thread.join(timeout=30)
    assert results == [2] * 20  # every 429 was absorbed by an SDK retry
    assert statuses(cf_world).count(429) >= 1
