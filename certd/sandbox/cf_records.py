"""Cloudflare's rules for DNS records and zones, and their JSON shape.

Pure functions: they validate request bodies the way the v4 API does and turn
store objects into API JSON. Error codes come from real API answers seen in
public reports (cited at each constant); codes marked "sandbox" are our own
where the real code is not known, so never build certd logic on them.
"""

from __future__ import annotations

import ipaddress
import re
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Literal

from certd.sandbox.zones import SandboxRecord, SandboxZone, new_id, normalize_name, utc_now, with_changes

__all__ = [
    "ApiError", "SUPPORTED_TYPES", "PROXIABLE_TYPES", "build_record", "check_conflicts",
    "record_json", "zone_json", "iso",
]

SUPPORTED_TYPES = frozenset({"A", "AAAA", "CNAME", "TXT", "MX", "NS"})
PROXIABLE_TYPES = frozenset({"A", "AAAA", "CNAME"})

# Codes seen on the real API (HTTP 400 unless noted):
CODE_DNS_VALIDATION = 1004      # "DNS Validation Error", wraps details in error_chain (timothymiller/cloudflare-ddns#179)
CODE_TTL = 9021                 # TTL out of range, inside a 1004 error_chain (same report)
CODE_NOT_PROXIABLE = 9004       # "This record type cannot be proxied."
CODE_BAD_A = 9005               # "Content for A record must be a valid IPv4 address."
CODE_BAD_AAAA = 9006            # "Content for AAAA record must be a valid IPv6 address."
CODE_BAD_CNAME = 9007           # "Content for CNAME record is invalid."
CODE_BAD_NAME = 9000            # "DNS name is invalid."
CODE_RECORD_MISSING = 81044     # 404 "Record does not exist." (zanjie1999/cloudflare-api-v4-ddns#5)
CODE_CNAME_CONFLICT = 81053     # new CNAME where A/AAAA/CNAME exist (HermanMartinus/bearblog#105)
CODE_CNAME_EXISTS = 81054       # new A/AAAA/... where a CNAME exists (favonia/cloudflare-ddns#990)
CODE_IDENTICAL = 81058          # "An identical record already exists." (jeessy2/ddns-go#1378, certbot#10725)

_LABEL = re.compile(r"^(\*|[a-z0-9_](?:[a-z0-9_-]{0,61}[a-z0-9_])?)$")
_MAX_TTL = 86400


class ApiError(Exception):
    """An API failure: HTTP status plus Cloudflare's `errors` list."""

    def __init__(self, status: int, code: int, message: str, *, chain: list[dict[str, Any]] | None = None,
                 extra: list[dict[str, Any]] | None = None) -> None:
        super().__init__(f"{status} {code} {message}")
        self.status = status
        error: dict[str, Any] = {"code": code, "message": message}
        if chain:
            error["error_chain"] = chain
        self.errors: list[dict[str, Any]] = [error, *(extra or [])]


def _validation(code: int, message: str) -> ApiError:
    return ApiError(400, CODE_DNS_VALIDATION, "DNS Validation Error", chain=[{"code": code, "message": message}])


def iso(moment: datetime | None) -> str | None:
    """Cloudflare's timestamp style: 2024-01-02T03:04:05.123456Z."""
    if moment is None:
        return None
    return moment.strftime("%Y-%m-%dT%H:%M:%S.%fZ")


# -- input validation --------------------------------------------------------

def qualify(name: str, zone: SandboxZone) -> str:
    """Make `name` a FQDN inside `zone` the way Cloudflare does ("@" is the apex, short names get the zone)."""
    name = normalize_name(name)
    if name in ("", "@"):
        return zone.name
    if name == zone.name or name.endswith("." + zone.name):
        return name
    return f"{name}.{zone.name}"


def _check_name(fqdn: str) -> None:
    labels = fqdn.split(".")
    if len(fqdn) > 253 or not all(_LABEL.match(label) for label in labels):
        raise ApiError(400, CODE_BAD_NAME, "DNS name is invalid.")
    if "*" in labels[1:]:
        raise ApiError(400, CODE_BAD_NAME, "DNS name is invalid.")


def _ttl(value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or int(value) != value:
        raise _validation(CODE_TTL, "TTL must be between 60 and 86400 seconds, or 1 for Automatic.")
    ttl = int(value)
    if ttl != 1 and not 60 <= ttl <= _MAX_TTL:
        raise _validation(CODE_TTL, "TTL must be between 60 and 86400 seconds, or 1 for Automatic.")
    return ttl


def _content(rtype: str, content: Any) -> str:
    if not isinstance(content, str) or not content.strip():
        if rtype == "A":
            raise ApiError(400, CODE_BAD_A, "Content for A record must be a valid IPv4 address.")
        if rtype == "AAAA":
            raise ApiError(400, CODE_BAD_AAAA, "Content for AAAA record must be a valid IPv6 address.")
        raise _validation(9100, "content is required.")  # sandbox code
    if rtype == "A":
        try:
            ipaddress.IPv4Address(content)
        except ValueError:
            raise ApiError(400, CODE_BAD_A, "Content for A record must be a valid IPv4 address.") from None
        return content
    if rtype == "AAAA":
        try:
            return str(ipaddress.IPv6Address(content))
        except ValueError:
            raise ApiError(400, CODE_BAD_AAAA, "Content for AAAA record must be a valid IPv6 address.") from None
    if rtype in ("CNAME", "MX", "NS"):
        target = normalize_name(content)
        labels = target.split(".")
        if not target or len(target) > 253 or not all(_LABEL.match(x) and x != "*" for x in labels):
            if rtype == "CNAME":
                raise ApiError(400, CODE_BAD_CNAME, "Content for CNAME record is invalid.")
            raise _validation(9101, f"Content for {rtype} record is invalid.")  # sandbox code
        return target
    return content  # TXT: kept as given, like Cloudflare


Mode = Literal["create", "put", "patch"]


@dataclass(frozen=True)
class _Fields:
    type: str
    name: str
    content: str
    ttl: int
    proxied: bool
    priority: int | None
    comment: str | None
    tags: tuple[str, ...]


def _fields(body: dict[str, Any], zone: SandboxZone, existing: SandboxRecord | None, mode: Mode) -> _Fields:
    def pick(key: str, default: Any) -> Any:
        if key in body:
            return body[key]
        if mode == "patch" and existing is not None:
            return getattr(existing, key)
        return default

    rtype = pick("type", None)
    if not isinstance(rtype, str) or rtype.upper() not in SUPPORTED_TYPES:
        raise _validation(9101, f"Record type {rtype!r} is not supported by the certd sandbox "
                                f"(supported: {', '.join(sorted(SUPPORTED_TYPES))}).")  # sandbox code
    rtype = rtype.upper()
    raw_name = pick("name", None)
    if not isinstance(raw_name, str):
        raise ApiError(400, CODE_BAD_NAME, "DNS name is invalid.")
    name = qualify(raw_name, zone)
    _check_name(name)
    content = _content(rtype, pick("content", None))
    proxied = pick("proxied", False)
    if proxied is None:
        proxied = False
    if not isinstance(proxied, bool):
        raise _validation(9102, "proxied must be a boolean.")  # sandbox code
    if proxied and rtype not in PROXIABLE_TYPES:
        raise ApiError(400, CODE_NOT_PROXIABLE, "This record type cannot be proxied.")
    ttl = _ttl(pick("ttl", 1))
    priority = pick("priority", None)
    if rtype == "MX":
        if isinstance(priority, bool) or not isinstance(priority, (int, float)) or not 0 <= priority <= 65535:
            raise _validation(9103, "MX records need a priority between 0 and 65535.")  # sandbox code
        priority = int(priority)
    else:
        priority = None
    comment = pick("comment", None)
    if comment is not None and not isinstance(comment, str):
        raise _validation(9104, "comment must be a string.")  # sandbox code
    tags = pick("tags", ())
    if not isinstance(tags, (list, tuple)) or not all(isinstance(t, str) for t in tags):
        raise _validation(9105, "tags must be a list of strings.")  # sandbox code
    return _Fields(rtype, name, content, ttl, proxied, priority, comment or None, tuple(tags))


def build_record(body: dict[str, Any], zone: SandboxZone, *, existing: SandboxRecord | None = None,
                 mode: Mode = "create") -> SandboxRecord:
    """Validate a create (POST), overwrite (PUT) or edit (PATCH) body and return the resulting record."""
    if not isinstance(body, dict):
        raise ApiError(400, 9207, "Request body is invalid.")
    f = _fields(body, zone, existing, mode)
    now = utc_now()
    if existing is None:
        return SandboxRecord(
            id=new_id(), zone_id=zone.id, zone_name=zone.name, name=f.name, type=f.type, content=f.content,
            ttl=f.ttl, proxied=f.proxied, priority=f.priority, comment=f.comment, tags=f.tags,
            created_on=now, modified_on=now,
            comment_modified_on=now if f.comment else None, tags_modified_on=now if f.tags else None,
        )
    return with_changes(
        existing, name=f.name, type=f.type, content=f.content, ttl=f.ttl, proxied=f.proxied,
        priority=f.priority, comment=f.comment, tags=f.tags, modified_on=now,
        comment_modified_on=(now if f.comment != existing.comment else existing.comment_modified_on)
        if f.comment else None,
        tags_modified_on=(now if f.tags != existing.tags else existing.tags_modified_on) if f.tags else None,
    )


def check_conflicts(new: SandboxRecord, others: list[SandboxRecord]) -> None:
    """Refuse duplicates and CNAME clashes against the zone's other records (call under the store lock)."""
    same_name = [r for r in others if r.id != new.id and r.name == new.name]
    for r in same_name:
        if r.type == new.type and r.content == new.content:
            raise ApiError(400, CODE_IDENTICAL, "An identical record already exists.")
    if new.type == "CNAME" and same_name:
        raise ApiError(400, CODE_CNAME_CONFLICT, "An A, AAAA, or CNAME record with that host already exists.")
    if new.type != "CNAME" and any(r.type == "CNAME" for r in same_name):
        raise ApiError(400, CODE_CNAME_EXISTS, "A CNAME record with that host already exists.")


# -- output ------------------------------------------------------------------

def record_json(record: SandboxRecord) -> dict[str, Any]:
    """A record as the v4 API returns it."""
    out: dict[str, Any] = {
        "id": record.id,
        "zone_id": record.zone_id,
        "zone_name": record.zone_name,
        "name": record.name,
        "type": record.type,
        "content": record.content,
        "proxiable": record.type in PROXIABLE_TYPES,
        "proxied": record.proxied,
        "ttl": record.ttl,
        "settings": {},
        "meta": {},
        "comment": record.comment,
        "tags": list(record.tags),
        "created_on": iso(record.created_on),
        "modified_on": iso(record.modified_on),
    }
    if record.priority is not None:
        out["priority"] = record.priority
    if record.comment_modified_on is not None:
        out["comment_modified_on"] = iso(record.comment_modified_on)
    if record.tags_modified_on is not None:
        out["tags_modified_on"] = iso(record.tags_modified_on)
    return out


def zone_json(zone: SandboxZone, *, permissions: list[str]) -> dict[str, Any]:
    """A zone as the v4 API returns it (account and plan are fixed sandbox values)."""
    return {
        "id": zone.id,
        "name": zone.name,
        "status": zone.status,
        "paused": False,
        "type": "full",
        "development_mode": 0,
        "name_servers": list(zone.name_servers),
        "original_name_servers": None,
        "original_registrar": None,
        "original_dnshost": None,
        "created_on": iso(zone.created_on),
        "modified_on": iso(zone.created_on),
        "activated_on": iso(zone.created_on) if zone.status == "active" else None,
        "meta": {"step": 2, "custom_certificate_quota": 0, "page_rule_quota": 3,
                 "phishing_detected": False, "foundation_dns": False},
        "owner": {"id": None, "type": "user", "email": None},
        "account": {"id": "0" * 32, "name": "certd sandbox account"},
        "tenant": {"id": None, "name": None},
        "tenant_unit": {"id": None},
        "permissions": permissions,
        "plan": {"id": "0feeeeeeeeeeeeeeeeeeeeeeeeeeeeee", "name": "Free Website", "price": 0,
                 "currency": "USD", "frequency": "", "is_subscribed": False, "can_subscribe": False,
                 "legacy_id": "free", "legacy_discount": False, "externally_managed": False},
    }
