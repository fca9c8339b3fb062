"""Who may read certd's HTTP surface: a bearer token, or users with argon2 password hashes.

No aiohttp here: `certd check-config` loads the same credentials the server
will, so an unreadable token file fails there first, with its key named.
Secrets come from certd.secrets (env var or owner-only file). A Basic-auth
password is checked with argon2 once, in a worker thread; a match is then
remembered as a salted digest, so a scraper sending the same header every
second costs a dictionary lookup, not an argon2 run on every request.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import secrets
from dataclasses import dataclass, field

from certd.config.http import HttpAuthConfig
from certd.errors import ConfigError
from certd.secrets import read_secret, read_secret_file

_SALT = secrets.token_bytes(16)  # per process: remembered digests mean nothing elsewhere


def _digest(user: str, password: str, password_hash: str) -> bytes:
    return hashlib.blake2b(f"{user}\0{password}\0{password_hash}".encode(), key=_SALT).digest()


@dataclass
class Credentials:
    """What a request must present; `None` fields are not offered."""

    token: str | None = field(default=None, repr=False)
    users: dict[str, str] = field(default_factory=dict, repr=False)  # user -> argon2 hash
    open_probes: bool = True
    _verified: set[bytes] = field(default_factory=set, repr=False)

    @property
    def required(self) -> bool:
        return bool(self.token or self.users)

    def bearer_ok(self, authorization: str | None) -> bool:
        if not self.token or not authorization:
            return False
        scheme, _, value = authorization.partition(" ")
        return scheme.lower() == "bearer" and hmac.compare_digest(value.strip().encode(), self.token.encode())

    def basic_pair(self, authorization: str | None) -> tuple[str, str] | None:
        """(user, password) from a Basic header naming a known user, else None."""
        if not self.users or not authorization:
            return None
        scheme, _, value = authorization.partition(" ")
        if scheme.lower() != "basic":
            return None
        try:
            user, sep, password = base64.b64decode(value.strip(), validate=True).decode("utf-8").partition(":")
        except (binascii.Error, UnicodeDecodeError):
            return None
        return (user, password) if sep else None

    def remembered(self, user: str, password: str) -> bool:
        stored = self.users.get(user)
        return stored is not None and _digest(user, password, stored) in self._verified

    def verify(self, user: str, password: str) -> bool:
        """argon2 check (worker thread). Unknown users are checked against a dummy hash too, so
        the answer takes as long for them."""
        from argon2 import PasswordHasher
        from argon2.exceptions import InvalidHashError, VerificationError

        stored = self.users.get(user)
        try:
            ok = PasswordHasher().verify(stored or _dummy_hash(), password)
        except (VerificationError, InvalidHashError):
            ok = False
        if ok and stored is not None:
            if len(self._verified) > 1000:
                self._verified.clear()
            self._verified.add(_digest(user, password, stored))
        return ok and stored is not None


_DUMMY: list[str] = []


def _dummy_hash() -> str:
    if not _DUMMY:
        from argon2 import PasswordHasher

        _DUMMY.append(PasswordHasher().hash(secrets.token_hex(16)))
    return _DUMMY[0]


def parse_users(text: str, source: str) -> dict[str, str]:
    """"user:$argon2id$..." lines; blank lines and # comments skipped."""
    users: dict[str, str] = {}
    for number, line in enumerate(text.splitlines(), 1):
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        user, sep, hashed = line.partition(":")
        if not sep or not user or not hashed.startswith("$argon2"):
            # The line itself is not quoted: it may hold a password typed in by mistake.
            raise ConfigError(f"{source} line {number}: expected user:$argon2id$... (an argon2 hash)")
        if user in users:
            raise ConfigError(f"{source} line {number}: user {user!r} is listed twice")
        users[user] = hashed
    if not users:
        raise ConfigError(f"{source}: no user in it")
    return users


def load_credentials(auth: HttpAuthConfig | None) -> Credentials:
    """Read the token and users file now (start, reload, check-config); errors name the key."""
    if auth is None:
        return Credentials()
    token = read_secret(env=auth.token_env, file=auth.token_file, required=False,
                        what="[http.auth] bearer token (http.auth.token_file)" if auth.token_file
                        else f"[http.auth] bearer token (http.auth.token_env = {auth.token_env})")
    if (auth.token_env or auth.token_file) and token is None:
        raise ConfigError(f"http.auth.token_env: environment variable {auth.token_env} is not set")
    users: dict[str, str] = {}
    if auth.users_file:
        text = read_secret_file(auth.users_file, "[http.auth] users file (http.auth.users_file)")
        users = parse_users(text, f"http.auth.users_file ({auth.users_file})")
    return Credentials(token, users, auth.open_probes)
