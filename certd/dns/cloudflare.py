"""The Cloudflare `DnsProvider` (certd.dns.provider): the one place certd talks to the Cloudflare SDK.

The SDK broke its callers at each major version (certbot#9938), so it is pinned
to one major version and every call goes through `CloudflareDNS`. Errors come
out as `DNSProviderError` naming the missing permission; tokens never appear in
messages.

Reads use the SDK's own retries (429/5xx, honouring Retry-After). Writes are
retried here instead: before retrying a create, the record is looked up, so a
request that succeeded server-side but failed on the way back never makes a
duplicate.
"""

from __future__ import annotations

import logging
import random
import threading
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, TypeVar

import cloudflare

from certd.dns.provider import AccountZones, DnsRecord, Zone, longest_zone, normalize_name, zone_covers
from certd.errors import DNSProviderError

if TYPE_CHECKING:
    from certd.config.cloudflare import CloudflareConfig

log = logging.getLogger(__name__)

T = TypeVar("T")

# Cloudflare error codes that mean "an identical record is already there".
_IDENTICAL_RECORD_CODES = {81057, 81058}
# 6003 "Invalid request headers" (with 6111 "Invalid format for Authorization header"): what
# Cloudflare answers when the credential is not an API token at all (certbot#8733, lego#1021).
_NOT_A_TOKEN_CODES = {6003, 6111}
_AUTHENTICATION_ERROR = 10000  # a valid token without the permission, or outside its zone scope


def _record_from_sdk(zone: Zone, rec: Any) -> DnsRecord:
    return DnsRecord(
        id=rec.id, zone_id=zone.id, name=rec.name.lower().rstrip("."), type=rec.type,
        content=rec.content or "", ttl=int(rec.ttl or 1), proxied=bool(rec.proxied),
        comment=rec.comment,
    )


def _error_codes(exc: cloudflare.APIStatusError) -> list[int]:
    body = exc.body if isinstance(exc.body, dict) else {}
    return [int(e.get("code", 0)) for e in body.get("errors") or [] if isinstance(e, dict)]


def _error_text(exc: cloudflare.APIStatusError) -> str:
    body = exc.body if isinstance(exc.body, dict) else {}
    parts = []
    for error in body.get("errors") or []:
        if isinstance(error, dict):
            parts.append(f"{error.get('code')}: {error.get('message')}")
            parts += [f"{c.get('code')}: {c.get('message')}" for c in error.get("error_chain") or []
                      if isinstance(c, dict)]
    return "; ".join(parts) or f"HTTP {exc.status_code}"


def _all_codes(exc: cloudflare.APIStatusError) -> set[int]:
    body = exc.body if isinstance(exc.body, dict) else {}
    codes = set(_error_codes(exc))
    for error in body.get("errors") or []:
        if isinstance(error, dict):
            codes.update(int(c.get("code", 0)) for c in error.get("error_chain") or [] if isinstance(c, dict))
    return codes


class _TokenOnlyCloudflare(cloudflare.Cloudflare):
    """SDK client that authenticates with its API token and nothing else.

    The SDK fills api_key, api_email and user_service_key from CLOUDFLARE_API_KEY,
    CLOUDFLARE_EMAIL and CLOUDFLARE_API_USER_SERVICE_KEY when they are None and sends
    them *instead of* the Bearer token: a leftover global key would replace the scoped
    token (full account rights), a lone email breaks every call. `copy()` and
    `with_options()` build clients through this class too, so they stay token-only.
    """

    def __init__(self, *, api_token: str, **options: Any) -> None:
        super().__init__(api_token=api_token, **options)
        self.api_key = None
        self.api_email = None
        self.user_service_key = None


class CloudflareDNS:
    """Zones and DNS records through a scoped API token (optionally a separate zone-read token).

    `source` says where the token came from ("environment variable CF_TOKEN", "file ..."):
    errors name it, so a user with several tokens knows which one to fix.
    """

    def __init__(
        self, api_token: str, *, zone_token: str | None = None, base_url: str | None = None,
        max_retries: int = 4, timeout: float = 30.0,
        sleep: Callable[[float], None] = time.sleep, source: str = "the configured token source",
        zone_source: str | None = None,
    ) -> None:
        self.source = source
        self._zone_source = zone_source or source
        options: dict[str, Any] = {"timeout": timeout}
        if base_url:
            options["base_url"] = base_url
        self._client = _TokenOnlyCloudflare(api_token=api_token, max_retries=max_retries, **options)
        self._writer = self._client.with_options(max_retries=0)
        self._zone_client = (
            _TokenOnlyCloudflare(api_token=zone_token, max_retries=max_retries, **options)
            if zone_token else self._client
        )
        self._max_write_attempts = max_retries + 1
        # The SDK imports its zones and DNS resources (~0.2 s of pydantic models) on first use;
        # load them now in the background, while the caller talks to the ACME server.
        threading.Thread(target=self._load_sdk_resources, name="cloudflare-sdk-import", daemon=True).start()
        self._sleep = sleep
        self._zones: list[Zone] | None = None
        self._inactive_zones: list[tuple[str, str]] = []  # (name, status)

    def _load_sdk_resources(self) -> None:
        _ = self._zone_client.zones, self._client.dns.records, self._writer.dns.records

    # -- zones ---------------------------------------------------------------
    def zones(self) -> list[Zone]:
        """Active zones the token can see (cached for this adapter's life).

        A pending, initializing or moved zone is not served by Cloudflare's nameservers:
        records put there would be invisible, so such zones are left out (and named in
        `find_zone`'s error).
        """
        if self._zones is None:
            try:
                listed = list(self._zone_client.zones.list(per_page=50))
            except cloudflare.APIStatusError as exc:
                raise self._translate(exc, "list zones", "Zone:Read", self._zone_source) from None
            except cloudflare.APIConnectionError as exc:
                raise DNSProviderError(f"Cloudflare API unreachable while listing zones: {exc}") from None
            # A zone without a status (not seen on the real API) is taken as active.
            self._zones = [Zone(id=z.id, name=z.name.lower()) for z in listed
                           if z.status in (None, "active")]
            self._inactive_zones = [(z.name.lower(), str(z.status)) for z in listed
                                    if z.status not in (None, "active")]
        return self._zones

    def find_zone(self, fqdn: str) -> Zone:
        """The active zone whose name is the longest suffix of `fqdn`."""
        name = normalize_name(fqdn)
        best = longest_zone(self.zones(), name)
        skipped = [f"{zone} ({status})" for zone, status in self._inactive_zones
                   if zone_covers(zone, name) and (best is None or len(zone) > len(best.name))]
        if best is None:
            visible = ", ".join(z.name for z in self.zones()) or "none"
            not_active = (f"; skipped because not active on Cloudflare: {', '.join(skipped)}"
                          if skipped else "")
            raise DNSProviderError(
                f"no active Cloudflare zone for {name}: the API token cannot see it "
                f"(active zones visible: {visible}{not_active}). Give the token Zone:Read and "
                f"DNS:Edit on that zone, or set a zone-read token."
            )
        if skipped:
            log.info("Cloudflare: %s goes to zone %s; skipped zone(s) not active: %s",
                     name, best.name, ", ".join(skipped))
        return best

    def accounts(self) -> list[AccountZones]:
        """This token alone, with the zones it can list (an error instead when it may not)."""
        try:
            return [AccountZones(None, self.source, tuple(self.zones()))]
        except DNSProviderError as exc:
            return [AccountZones(None, self.source, (), error=str(exc))]

    def check_zone(self, zone_id: str, account: str | None = None) -> str | None:
        """Whether the token can read records in zone `zone_id` (DNS:Edit implies it)."""
        try:
            self.list_records(Zone(id=zone_id, name=f"id {zone_id}"), type="TXT", name=None)
        except DNSProviderError as exc:
            return str(exc)
        return None

    # -- records -------------------------------------------------------------
    def list_records(
        self, zone: Zone, *, name: str | None = None, type: str | None = None,
        content: str | None = None,
    ) -> list[DnsRecord]:
        params: dict[str, Any] = {"zone_id": zone.id, "per_page": 100}
        if name:
            params["name"] = {"exact": name.lower().rstrip(".")}
        if type:
            params["type"] = type
        if content is not None:
            params["content"] = {"exact": content}
        try:
            return [_record_from_sdk(zone, r) for r in self._client.dns.records.list(**params)]
        except cloudflare.APIStatusError as exc:
            raise self._translate(exc, f"list DNS records in {zone.name}", "DNS:Read") from None
        except cloudflare.APIConnectionError as exc:
            raise DNSProviderError(f"Cloudflare API unreachable while listing records: {exc}") from None

    def create_record(
        self, zone: Zone, *, type: str, name: str, content: str, ttl: int = 1,
        proxied: bool | None = None, comment: str | None = None,
    ) -> DnsRecord:
        """Create a record; an identical existing one (e.g. from a retried request) is returned instead."""
        name = name.lower().rstrip(".")
        fields: dict[str, Any] = {"zone_id": zone.id, "type": type, "name": name,
                                  "content": content, "ttl": ttl}
        if proxied is not None:
            fields["proxied"] = proxied
        if comment is not None:
            fields["comment"] = comment

        def find_existing() -> DnsRecord | None:
            matches = self.list_records(zone, name=name, type=type, content=content)
            return matches[0] if matches else None

        def create() -> DnsRecord:
            try:
                return _record_from_sdk(zone, self._writer.dns.records.create(**fields))
            except cloudflare.APIStatusError as exc:
                if set(_error_codes(exc)) & _IDENTICAL_RECORD_CODES:
                    existing = find_existing()
                    if existing:
                        return existing
                raise

        return self._write(f"create {type} {name}", create, before_retry=find_existing)

    def update_record(self, zone: Zone, record: DnsRecord, **changes: Any) -> DnsRecord:
        """PATCH the given fields (content, proxied, ttl, comment): idempotent, so plain retries are safe."""

        def edit() -> DnsRecord:
            return _record_from_sdk(zone, self._writer.dns.records.edit(
                dns_record_id=record.id, zone_id=zone.id, type=record.type, name=record.name, **changes,
            ))

        return self._write(f"update {record.type} {record.name}", edit)

    def delete_record(self, zone: Zone, record_id: str) -> bool:
        """Delete; False when it was already gone (a retried delete is not an error)."""

        def delete() -> bool:
            try:
                self._writer.dns.records.delete(dns_record_id=record_id, zone_id=zone.id)
                return True
            except cloudflare.NotFoundError:
                return False

        return self._write(f"delete record {record_id} in {zone.name}", delete)

    # -- plumbing ------------------------------------------------------------
    def _write(self, what: str, call: Callable[[], T],
               before_retry: Callable[[], T | None] | None = None) -> T:
        for attempt in range(1, self._max_write_attempts + 1):
            try:
                return call()
            except (cloudflare.RateLimitError, cloudflare.InternalServerError,
                    cloudflare.APIConnectionError) as exc:
                if attempt == self._max_write_attempts:
                    if isinstance(exc, cloudflare.APIStatusError):
                        raise self._translate(exc, what, "DNS:Edit") from None
                    raise DNSProviderError(f"Cloudflare API unreachable ({what}): {exc}") from None
                delay = self._retry_delay(exc, attempt)
                log.warning("Cloudflare: %s failed (%s), retrying in %.1fs", what,
                            getattr(exc, "status_code", "connection error"), delay)
                self._sleep(delay)
                if before_retry is not None:
                    done = before_retry()
                    if done is not None:
                        return done
            except cloudflare.APIStatusError as exc:
                raise self._translate(exc, what, "DNS:Edit") from None
        raise AssertionError("unreachable")

    @staticmethod
    def _retry_delay(exc: Exception, attempt: int) -> float:
        response = getattr(exc, "response", None)
        if response is not None:
            header = response.headers.get("retry-after")
            try:
                if header is not None:
                    return min(max(float(header), 0.0), 60.0)
            except ValueError:
                pass
        return min(0.25 * 2 ** (attempt - 1), 8.0) * (0.75 + random.random() / 2)

    def _translate(self, exc: cloudflare.APIStatusError, what: str, permission: str,
                   source: str | None = None) -> DNSProviderError:
        """Cloudflare's answer as a message naming the token's source (never its value) and the fix."""
        detail = _error_text(exc)
        token = f"the API token in {source or self.source}"
        codes = _all_codes(exc)
        if codes & _NOT_A_TOKEN_CODES:
            return DNSProviderError(
                f"Cloudflare could not read {token} as an API token while trying to {what} ({detail}): "
                "it is another kind of credential (a Global API Key or an Origin CA key does not go "
                "here) or holds stray characters; create an API token (My Profile > API Tokens) with "
                f"DNS:Edit on the zone and put it there"
            )
        if exc.status_code == 401:
            return DNSProviderError(
                f"Cloudflare rejected {token} while trying to {what} ({detail}): "
                "the token is invalid, expired or revoked"
            )
        if exc.status_code == 403 or _AUTHENTICATION_ERROR in codes:
            return DNSProviderError(
                f"Cloudflare denied {what} ({detail}): {token} lacks {permission} "
                "permission on this zone, or the zone is outside the token's zone scope"
            )
        if exc.status_code == 404:
            return DNSProviderError(
                f"Cloudflare could not find the target of {what} ({detail}): {token} may lack "
                f"Zone:Read or {permission} on this zone"
            )
        return DNSProviderError(f"Cloudflare failed to {what}: HTTP {exc.status_code} ({detail})")


def from_config(cf: "CloudflareConfig") -> CloudflareDNS:
    """The adapter for the top-level `[cloudflare]` token, read from its env var or file."""
    from certd.config.cloudflare import token_source
    from certd.secrets import read_secret

    token = read_secret(env=cf.token_env, file=cf.api_token_file, what="Cloudflare API token")
    zone_token = read_secret(env=cf.zone_token_env, file=cf.zone_token_file,
                             what="Cloudflare zone-read token", required=False)
    assert token is not None
    zone_source = token_source(cf.zone_token_env, cf.zone_token_file) if zone_token else None
    return CloudflareDNS(token, zone_token=zone_token, base_url=cf.base_url,
                         max_retries=cf.max_retries, timeout=cf.timeout, source=cf.token_source,
                         zone_source=zone_source)
