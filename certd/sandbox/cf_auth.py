"""API tokens in the Cloudflare emulator: what each one may do, and who sent a request.

Tokens are scoped to zones and permissions like real API tokens, so tests can prove
what certd asks for (Zone:Read, DNS:Edit) and what it says when a token falls short.
A token is only ever looked up, never stored anywhere a log or request entry can see:
requests are recorded by the token's *id*.
"""

from __future__ import annotations

import threading
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any, Literal

from certd.sandbox.cf_records import ApiError
from certd.sandbox.zones import SandboxZone, new_id, normalize_name

PERMISSIONS = frozenset({"zone:read", "dns:read", "dns:edit"})

# Codes seen on the real API (sources in parentheses):
_AUTH_ERROR = (10000, "Authentication error")  # 403, token lacks permission or zone (terraform-provider-cloudflare#3292)
_INVALID_TOKEN = (1000, "Invalid API Token")  # 401 (sendmebits/ghostmail-ios#2)
_MISSING_AUTH = (9106, "Missing X-Auth-Key, X-Auth-Email or Authorization headers")  # 400 (cloudflare-python#2678)


@dataclass(frozen=True)
class Grant:
    """What one token may do."""

    token_id: str
    zones: frozenset[str] | None  # None: all zones
    permissions: frozenset[str]

    def covers(self, zone: SandboxZone) -> bool:
        return self.zones is None or zone.name in self.zones

    def require(self, permission: str) -> None:
        # DNS:Edit implies DNS:Read, as on the dashboard.
        if permission == "dns:read" and "dns:edit" in self.permissions:
            return
        if permission not in self.permissions:
            raise denied()

    def permission_names(self) -> list[str]:
        """The permissions as the zone JSON lists them."""
        names = {"zone:read": "#zone:read", "dns:read": "#dns_records:read", "dns:edit": "#dns_records:edit"}
        return sorted(names[p] for p in self.permissions)


def denied() -> ApiError:
    code, message = _AUTH_ERROR
    return ApiError(403, code, message)


class Tokens:
    """The tokens the emulator accepts; thread-safe (tests change them while clients talk)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._grants: dict[str, Grant] = {}

    def add(self, token: str, *, zones: Iterable[str] | Literal["all"] = "all",
            permissions: Iterable[str] = PERMISSIONS) -> str:
        """Accept `token` as a Bearer token limited to `zones` and `permissions`; returns its id."""
        perms = frozenset(p.lower() for p in permissions)
        unknown = perms - PERMISSIONS
        if unknown:
            raise ValueError(f"unknown permissions {sorted(unknown)}; known: {sorted(PERMISSIONS)}")
        if not token or any(c.isspace() for c in token):
            raise ValueError("a token must be non-empty and hold no whitespace")
        scope = None if zones == "all" else frozenset(normalize_name(z) for z in zones)
        grant = Grant(token_id=new_id(), zones=scope, permissions=perms)
        with self._lock:
            self._grants[token] = grant
        return grant.token_id

    def remove(self, token: str) -> None:
        with self._lock:
            self._grants.pop(token, None)

    def authenticate(self, headers: Any) -> Grant:
        """The grant of the request's Bearer token, or the error the real API answers."""
        value = headers.get("Authorization")
        if value is None:
            if headers.get("X-Auth-Key") is not None or headers.get("X-Auth-Email") is not None:
                raise ApiError(403, 9103, "Unknown X-Auth-Key or X-Auth-Email")
            code, message = _MISSING_AUTH
            raise ApiError(400, code, message)
        scheme, _, token = value.partition(" ")
        token = token.strip()
        if scheme != "Bearer" or not token or any(c.isspace() for c in token):
            # Seen on the real API for malformed Authorization headers (jeessy2/ddns-go#81).
            raise ApiError(400, 6003, "Invalid request headers",
                           chain=[{"code": 6111, "message": "Invalid format for Authorization header"}])
        with self._lock:
            grant = self._grants.get(token)
        if grant is None:
            code, message = _INVALID_TOKEN
            raise ApiError(401, code, message)
        return grant
