"""Charger passwords (OCPP security profiles 1 and 2) and the per-address failure limiter.

Hashing: argon2id with a small memory cost. Charger passwords are machine
secrets of 16-40 characters (OCPP 2.0.1 errata; 1.6 AuthorizationKey), and the
ones certd generates carry ~143 bits, out of reach of offline guessing with any
hash; the cost that matters is CPU during a reconnect storm (every charger of
a fleet logs in again after a restart). The parameters live in each hash
string, so raising them later rehashes at the next successful login.

Successful checks are remembered as an HMAC under a per-process random key,
tied to the stored hash: a reconnecting charger costs one HMAC, and changing
the password (a new hash) invalidates the entry.

A password offered for an id with no hash to check (unknown, disabled) is
checked against a dummy hash with the same parameters, so the answer takes as
long as for a known id and timing does not tell which ids exist.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import functools
import hashlib
import hmac
import secrets
import string
import time
from collections import OrderedDict, deque
from collections.abc import Callable
from dataclasses import dataclass

MIN_PASSWORD_LENGTH = 16
MAX_PASSWORD_LENGTH = 40
GENERATED_PASSWORD_LENGTH = 24
_ALPHABET = string.ascii_letters + string.digits

# argon2id, 1 pass over 2 MiB: ~1.3 ms per check on a 2020s core (see module doc).
ARGON2_TIME_COST = 1
ARGON2_MEMORY_KIB = 2048
ARGON2_PARALLELISM = 1


class PasswordPolicyError(ValueError):
    """A password a person typed does not fit OCPP's 16-40 character rule."""


@functools.cache
def _hasher():  # type: ignore[no-untyped-def]
    from argon2 import PasswordHasher

    return PasswordHasher(
        time_cost=ARGON2_TIME_COST,
        memory_cost=ARGON2_MEMORY_KIB,
        parallelism=ARGON2_PARALLELISM,
    )


def generate_password(length: int = GENERATED_PASSWORD_LENGTH) -> str:
    return "".join(secrets.choice(_ALPHABET) for _ in range(length))


def check_password_policy(password: str) -> None:
    if not MIN_PASSWORD_LENGTH <= len(password) <= MAX_PASSWORD_LENGTH:
        raise PasswordPolicyError(
            f"a charger password has {MIN_PASSWORD_LENGTH}-{MAX_PASSWORD_LENGTH} characters "
            f"(OCPP), this one has {len(password)}"
        )
    if not password.isprintable() or not password.isascii():
        raise PasswordPolicyError("a charger password uses printable ASCII characters only")


def hash_password(password: str) -> str:
    return str(_hasher().hash(password))


def verify_password(password_hash: str, password: str) -> bool:
    """Constant-time check (argon2 compares digests in constant time); CPU-bound: run in a thread."""
    from argon2.exceptions import InvalidHashError, VerificationError

    try:
        return bool(_hasher().verify(password_hash, password))
    except (VerificationError, InvalidHashError):
        return False


@functools.cache
def _dummy_hash() -> str:
    """A hash of a random password nobody knows, built once, with the parameters of real ones."""
    return hash_password(generate_password())


def verify_dummy(password: str) -> bool:
    """Spend one argon2 check on a password that has no stored hash to check; always False."""
    verify_password(_dummy_hash(), password)
    return False


def needs_rehash(password_hash: str) -> bool:
    try:
        return bool(_hasher().check_needs_rehash(password_hash))
    except Exception:
        return False


def parse_basic_auth(header: str | None, charger_id: str) -> str | None:
    """The password from `Authorization: Basic ...` if its user is `charger_id`, else None.

    Ids may contain ':' (OCPP identifierString), so the user part is matched
    against the expected id instead of splitting at the first colon.
    """
    if not header:
        return None
    scheme, _, token = header.strip().partition(" ")
    if scheme.lower() != "basic" or not token:
        return None
    try:
        decoded = base64.b64decode(token.strip(), validate=True).decode("utf-8")
    except (binascii.Error, UnicodeDecodeError):
        return None
    prefix = charger_id + ":"
    if not decoded.startswith(prefix):
        return None
    return decoded[len(prefix):]


class VerifiedCredentials:
    """Remembers (id, stored hash) -> HMAC(password) after a successful argon2 check."""

    def __init__(self, max_entries: int = 200_000) -> None:
        self._key = secrets.token_bytes(32)
        self._entries: OrderedDict[str, tuple[str, bytes]] = OrderedDict()
        self._max = max_entries

    def _mac(self, charger_id: str, password: str) -> bytes:
        return hmac.new(self._key, f"{charger_id}\0{password}".encode(), hashlib.sha256).digest()

    def matches(self, charger_id: str, password_hash: str, password: str) -> bool:
        entry = self._entries.get(charger_id)
        if entry is None or not hmac.compare_digest(entry[0], password_hash):
            return False
        return hmac.compare_digest(entry[1], self._mac(charger_id, password))

    def remember(self, charger_id: str, password_hash: str, password: str) -> None:
        self._entries[charger_id] = (password_hash, self._mac(charger_id, password))
        self._entries.move_to_end(charger_id)
        while len(self._entries) > self._max:
            self._entries.popitem(last=False)

    def forget(self, charger_id: str) -> None:
        self._entries.pop(charger_id, None)


@dataclass
class FailureLimiter:
    """At most `limit` failed logins per client address within `window` seconds, then refuse.

    A success does not reset the count (one valid account must not unlock
    guessing on the others). Memory is bounded by `max_addresses`.

    Checks still running count toward the limit too (`begin` / `end`): without
    that, parallel guesses would all pass the check-before-argon2 and be
    counted only afterwards. An attempt that would go over the limit waits for
    a running one to end instead of being refused, so chargers behind one NAT
    address that log in at once are slowed, not locked out.
    """

    limit: int
    window: float
    clock: Callable[[], float] = time.monotonic
    max_addresses: int = 65_536

    def __post_init__(self) -> None:
        self._failures: OrderedDict[str, deque[float]] = OrderedDict()
        self._in_flight: dict[str, int] = {}
        self._waiting: dict[str, deque[asyncio.Future[None]]] = {}

    def _recent(self, address: str, now: float) -> deque[float] | None:
        times = self._failures.get(address)
        if times is None:
            return None
        while times and times[0] <= now - self.window:
            times.popleft()
        if not times:
            del self._failures[address]
            return None
        return times

    def retry_after(self, address: str) -> float | None:
        """Seconds until `address` may try again, or None when it may try now."""
        now = self.clock()
        times = self._recent(address, now)
        if times is None or len(times) < self.limit:
            return None
        return max(0.0, times[0] + self.window - now)

    def record_failure(self, address: str) -> None:
        now = self.clock()
        times = self._recent(address, now)
        if times is None:
            times = self._failures[address] = deque(maxlen=self.limit)
        times.append(now)
        self._failures.move_to_end(address)
        while len(self._failures) > self.max_addresses:
            self._failures.popitem(last=False)

    def in_flight(self, address: str) -> int:
        return self._in_flight.get(address, 0)

    def _has_room(self, address: str) -> bool:
        times = self._recent(address, self.clock())
        return (len(times) if times else 0) + self.in_flight(address) < self.limit

    async def begin(self, address: str) -> float | None:
        """Take a check slot for `address` before any await: None when taken (call `end` later),
        else the seconds the address must wait (refuse it)."""
        while True:
            wait = self.retry_after(address)
            if wait is not None:
                return wait
            if self._has_room(address):
                self._in_flight[address] = self.in_flight(address) + 1
                return None
            waiter: asyncio.Future[None] = asyncio.get_running_loop().create_future()
            self._waiting.setdefault(address, deque()).append(waiter)
            try:
                await waiter
            except asyncio.CancelledError:
                if waiter.done() and not waiter.cancelled():
                    self._wake(address, everyone=False)  # pass on the wake-up this one got
                raise
            finally:
                self._forget_waiter(address, waiter)

    def end(self, address: str, failed: bool) -> None:
        """Give back the slot `begin` took; a failed attempt is recorded as a failure."""
        count = self.in_flight(address) - 1
        if count > 0:
            self._in_flight[address] = count
        else:
            self._in_flight.pop(address, None)
        if failed:
            self.record_failure(address)
        # At the limit every waiter is refused at once; otherwise one may take the free slot.
        self._wake(address, everyone=self.retry_after(address) is not None)

    def _wake(self, address: str, everyone: bool) -> None:
        for waiter in self._waiting.get(address, ()):
            if not waiter.done():
                waiter.set_result(None)
                if not everyone:
                    return

    def _forget_waiter(self, address: str, waiter: asyncio.Future[None]) -> None:
        queue = self._waiting.get(address)
        if queue is None:
            return
        try:
            queue.remove(waiter)
        except ValueError:
            pass
        if not queue:
            del self._waiting[address]
