"""Password hashing, Basic-auth parsing, the failure limiter and the admission table (pure parts)."""

import asyncio
import base64

import pytest

from certd.ocpp import admission, auth
from certd.ocpp.charger_registry import ChargerRecord


def _header(text: str) -> str:
    return "Basic " + base64.b64encode(text.encode()).decode()


def test_hash_and_verify_roundtrip() -> None:
    password = auth.generate_password()
    stored = auth.hash_password(password)
    assert stored.startswith("$argon2id$")
    assert password not in stored
    assert auth.verify_password(stored, password)
    assert not auth.verify_password(stored, password + "x")
    assert not auth.verify_password("not a hash", password)
    assert not auth.needs_rehash(stored)


def test_generated_passwords() -> None:
    passwords = {auth.generate_password() for _ in range(50)}
    assert len(passwords) == 50
    assert all(len(p) == 24 and p.isalnum() for p in passwords)
    auth.check_password_policy(passwords.pop())


@pytest.mark.parametrize("password", ["short", "x" * 41, "ü" * 20, "tab\there-is-sixteen"])
def test_password_policy_refuses(password: str) -> None:
    with pytest.raises(auth.PasswordPolicyError):
        auth.check_password_policy(password)


@pytest.mark.parametrize("header, charger_id, expected", [
    (_header("CP1:secret:with:colons"), "CP1", "secret:with:colons"),
    (_header("a:b:c:pw"), "a:b:c", "pw"),             # ids may contain ':'
    (_header("DE*BMW*1:pw"), "DE*BMW*1", "pw"),
    (_header("CP2:pw"), "CP1", None),                  # user is not the charger id
    ("Bearer abc", "CP1", None),
    ("Basic !!!notbase64", "CP1", None),
    (None, "CP1", None),
    ("Basic " + base64.b64encode(b"CP1:\xff").decode(), "CP1", None),
])
def test_parse_basic_auth(header, charger_id, expected) -> None:  # type: ignore[no-untyped-def]
    assert auth.parse_basic_auth(header, charger_id) == expected


def test_failure_limiter_window() -> None:
    now = [1000.0]
    limiter = auth.FailureLimiter(limit=3, window=60, clock=lambda: now[0])
    for _ in range(3):
        assert limiter.retry_after("10.0.0.1") is None
        limiter.record_failure("10.0.0.1")
    assert limiter.retry_after("10.0.0.1") == pytest.approx(60)
    assert limiter.retry_after("10.0.0.2") is None  # per address
    now[0] += 30
    assert limiter.retry_after("10.0.0.1") == pytest.approx(30)
    now[0] += 30.5
    assert limiter.retry_after("10.0.0.1") is None


def test_failure_limiter_bounded_memory() -> None:
    limiter = auth.FailureLimiter(limit=1, window=60, clock=lambda: 0.0, max_addresses=10)
    for i in range(100):
        limiter.record_failure(f"a{i}")
    assert limiter.retry_after("a99") is not None
    assert limiter.retry_after("a0") is None  # evicted, oldest first


def test_checks_still_running_count_toward_the_limit() -> None:
    """An attempt over the limit waits while checks run; once failures fill it, all are refused."""
    async def scenario() -> None:
        limiter = auth.FailureLimiter(limit=2, window=60, clock=lambda: 1000.0)
        assert await limiter.begin("a") is None and await limiter.begin("a") is None
        third = asyncio.ensure_future(limiter.begin("a"))
        fourth = asyncio.ensure_future(limiter.begin("a"))
        other = await limiter.begin("b")  # per address
        assert other is None
        await asyncio.sleep(0)
        assert not third.done() and not fourth.done() and limiter.in_flight("a") == 2
        limiter.end("a", failed=False)  # a success frees its slot: one waiter takes it
        assert await third is None and not fourth.done()
        limiter.end("a", failed=True)
        await asyncio.sleep(0)
        assert not fourth.done()  # one failure + one running = the limit
        limiter.end("a", failed=True)  # two failures: the limit; every waiter is refused
        assert await fourth == 60.0
        assert await limiter.begin("a") == 60.0 and limiter.in_flight("a") == 0

    asyncio.run(scenario())


def test_a_waiter_that_gives_up_passes_its_turn_on() -> None:
    async def scenario() -> None:
        limiter = auth.FailureLimiter(limit=1, window=60, clock=lambda: 0.0)
        assert await limiter.begin("a") is None
        first = asyncio.ensure_future(limiter.begin("a"))
        second = asyncio.ensure_future(limiter.begin("a"))
        await asyncio.sleep(0)
        limiter.end("a", failed=False)  # wakes `first`...
        first.cancel()  # ...which times out before it runs (handshake timeout)
        assert await second is None
        assert first.cancelled() and limiter.in_flight("a") == 1

    asyncio.run(scenario())


def test_dummy_check_is_a_real_argon2_check_with_the_same_parameters() -> None:
    dummy = auth._dummy_hash()
    real = auth.hash_password(auth.generate_password())
    assert dummy.split("$")[1:4] == real.split("$")[1:4]  # argon2id, version, m/t/p
    assert auth._dummy_hash() is dummy  # built once
    assert auth.verify_dummy("any-password-at-all-1234") is False


def test_verified_credentials_follow_the_stored_hash() -> None:
    cache = auth.VerifiedCredentials()
    cache.remember("CP1", "hash-1", "pw")
    assert cache.matches("CP1", "hash-1", "pw")
    assert not cache.matches("CP1", "hash-1", "other")
    assert not cache.matches("CP1", "hash-2", "pw")  # password changed in the store
    assert not cache.matches("CP2", "hash-1", "pw")


def _record(enabled: bool = True, password_hash: str | None = "h") -> ChargerRecord:
    return ChargerRecord("CP1", enabled, "accepted", password_hash, "default")


@pytest.mark.parametrize("record, policy, offered, expected", [
    (None, "reject", True, admission.Refuse("unknown charger")),
    (None, "register", False, admission.Register("pending")),
    (None, "accept", True, admission.Register("accepted")),
    (_record(enabled=False), "accept", True, admission.Refuse("charger disabled")),
    (_record(), "reject", True, admission.CheckPassword("h")),
    (_record(), "accept", False, admission.Refuse("no credentials")),
    (_record(password_hash=None), "reject", True, admission.Refuse("charger has no password set")),
    (_record(password_hash=None), "register", True, admission.Admit(store_offered_password=True)),
    (_record(password_hash=None), "accept", False, admission.Admit(store_offered_password=False)),
])
def test_admission_table(record, policy, offered, expected) -> None:  # type: ignore[no-untyped-def]
    assert admission.decide(record, policy, offered) == expected
