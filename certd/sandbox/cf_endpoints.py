"""The Cloudflare v4 endpoints certd uses, answered from a `ZoneStore`.

Token verification, zones (list with filters and pagination, get) and DNS records
(list with filters, create, get, PATCH, PUT, delete), with the real API's routing
errors, permission checks and filter operators. The caller has authenticated the
request; record validation and JSON shapes are in `cf_records`.
"""

from __future__ import annotations

import re
from typing import Any, Literal
from urllib.parse import parse_qs

from certd.sandbox.cf_auth import Grant, denied
from certd.sandbox.cf_http import BASE_PATH, Response, allow, envelope, json_body, json_response, no_route
from certd.sandbox.cf_records import ApiError, build_record, check_conflicts, record_json, zone_json
from certd.sandbox.zones import SandboxZone, ZoneStore, normalize_name

_ID = re.compile(r"^[0-9a-f]{32}$")
_ZONE_NAME_OPS = ("not_equal", "equal", "starts_with_case_sensitive", "ends_with_case_sensitive",
                  "contains_case_sensitive", "starts_with", "ends_with", "contains")


def route(store: ZoneStore, method: str, path: str, query_text: str, body: bytes, grant: Grant) -> Response:
    """Answer one authenticated request; ApiError for anything the real API refuses."""
    if not path.startswith(BASE_PATH + "/"):
        raise no_route(path)
    parts = path[len(BASE_PATH) + 1:].rstrip("/").split("/")
    query = {k: v[-1] for k, v in parse_qs(query_text, keep_blank_values=True).items()}
    if parts == ["user", "tokens", "verify"]:
        allow(method, "GET")
        return _verify(grant)
    if parts[0] != "zones":
        raise no_route(path)
    if len(parts) == 1:
        allow(method, "GET")
        return _list_zones(store, grant, query)
    zone = _zone(store, parts[1], grant, path)
    if len(parts) == 2:
        allow(method, "GET")
        if "zone:read" not in grant.permissions:
            raise denied()
        return json_response(200, envelope(zone_json(zone, permissions=grant.permission_names())))
    if parts[2] != "dns_records" or len(parts) > 4:
        raise no_route(path)
    if len(parts) == 3:
        allow(method, "GET", "POST")
        if method == "GET":
            grant.require("dns:read")
            return _list_records(store, zone, query)
        grant.require("dns:edit")
        return _write_record(store, zone, None, json_body(body), "create")
    record_id = parts[3]
    if not _ID.match(record_id):
        raise no_route(path, invalid_id=True)
    allow(method, "GET", "PATCH", "PUT", "DELETE")
    grant.require("dns:read" if method == "GET" else "dns:edit")
    record = store.record(record_id)
    if record is None or record.zone_id != zone.id:
        raise ApiError(404, 81044, "Record does not exist.")
    if method == "GET":
        return json_response(200, envelope(record_json(record)))
    if method == "DELETE":
        if store.delete(record_id) is None:
            raise ApiError(404, 81044, "Record does not exist.")
        return json_response(200, envelope({"id": record_id}))
    return _write_record(store, zone, record_id, json_body(body), "patch" if method == "PATCH" else "put")


def _zone(store: ZoneStore, zone_id: str, grant: Grant, path: str) -> SandboxZone:
    if not _ID.match(zone_id):
        raise no_route(path, invalid_id=True)
    zone = store.zone(zone_id)
    if zone is None or not grant.covers(zone):
        raise denied()  # a token cannot tell "no such zone" from "not yours"
    return zone


def _verify(grant: Grant) -> Response:
    return json_response(200, envelope(
        {"id": grant.token_id, "status": "active"},
        messages=[{"code": 10000, "message": "This API Token is valid and active", "type": None}],
    ))


def _list_zones(store: ZoneStore, grant: Grant, query: dict[str, str]) -> Response:
    # Without Zone:Read a token sees no zones at all (the zone lookup then has nothing to find).
    zones = [z for z in store.zones() if grant.covers(z)] if "zone:read" in grant.permissions else []
    sets: list[set[str] | None] = []
    if "name" in query:
        op, value = _operator(query["name"])
        sets.append({z.id for z in zones if _text_match(z.name, op, normalize_name(value))})
    if "status" in query:
        sets.append({z.id for z in zones if z.status == query["status"]})
    chosen = [z for z in zones if _combine(z.id, sets, query.get("match", "all"))]
    key = query.get("order", "name")
    if key not in ("name", "status"):
        key = "name"
    chosen.sort(key=lambda z: getattr(z, key), reverse=query.get("direction") == "desc")
    page, info = _paginate(chosen, query, default=20, maximum=50)
    perms = grant.permission_names()
    return json_response(200, envelope([zone_json(z, permissions=perms) for z in page], result_info=info))


def _list_records(store: ZoneStore, zone: SandboxZone, query: dict[str, str]) -> Response:
    records = store.records(zone.id)
    sets: list[set[str] | None] = []
    for field in ("name", "content", "comment"):
        for key, raw in query.items():
            if key == field or key.startswith(field + "."):
                op = key.partition(".")[2] or "exact"
                wanted = normalize_name(raw) if field == "name" else raw
                sets.append({r.id for r in records if _text_match(getattr(r, field), op, wanted)})
    if "type" in query:
        sets.append({r.id for r in records if r.type == query["type"].upper()})
    if "proxied" in query:
        wanted_proxied = query["proxied"].lower() == "true"
        sets.append({r.id for r in records if r.proxied == wanted_proxied})
    if "search" in query:
        term = query["search"].lower()
        sets.append({r.id for r in records if term in r.name or term in r.content.lower()})
    chosen = [r for r in records if _combine(r.id, sets, query.get("match", "all"))]
    key = query.get("order", "type")
    if key not in ("type", "name", "content", "ttl", "proxied"):
        key = "type"
    chosen.sort(key=lambda r: (getattr(r, key), r.name, r.content, r.created_on),
                reverse=query.get("direction") == "desc")
    page, info = _paginate(chosen, query, default=100, maximum=5_000_000)
    return json_response(200, envelope([record_json(r) for r in page], result_info=info))


def _write_record(store: ZoneStore, zone: SandboxZone, record_id: str | None, body: Any,
                  mode: Literal["create", "put", "patch"]) -> Response:
    with store.transaction():
        existing = store.record(record_id) if record_id else None
        if record_id and existing is None:
            raise ApiError(404, 81044, "Record does not exist.")
        record = build_record(body, zone, existing=existing, mode=mode)
        check_conflicts(record, store.records(zone.id))
        store.put(record)
    return json_response(200, envelope(record_json(record)))


def _paginate(items: list[Any], query: dict[str, str], *, default: int, maximum: int
              ) -> tuple[list[Any], dict[str, int]]:
    """Cloudflare page/per_page pagination (out-of-range values are clamped)."""
    def number(key: str, fallback: int) -> int:
        try:
            return int(float(query[key]))
        except (KeyError, ValueError):
            return fallback

    per_page = min(max(number("per_page", default), 5), maximum)
    page = max(number("page", 1), 1)
    total = len(items)
    chunk = items[(page - 1) * per_page: page * per_page]
    info = {"page": page, "per_page": per_page, "count": len(chunk), "total_count": total,
            "total_pages": max(1, -(-total // per_page))}
    return chunk, info


def _text_match(value: str | None, op: str, wanted: str) -> bool:
    """Cloudflare's filter operators; all but *_case_sensitive ignore case."""
    if op in ("present", "absent"):
        return (value is not None and value != "") == (op == "present")
    if value is None:
        return False
    if not op.endswith("_case_sensitive"):
        value, wanted = value.lower(), wanted.lower()
    op = op.removesuffix("_case_sensitive")
    match op:
        case "exact" | "equal":
            return value == wanted
        case "not_equal":
            return value != wanted
        case "contains":
            return wanted in value
        case "startswith" | "starts_with":
            return value.startswith(wanted)
        case "endswith" | "ends_with":
            return value.endswith(wanted)
    raise ApiError(400, 1004, f"Unknown filter operator {op!r}.")  # sandbox code


def _combine(item_id: str, sets: list[set[str] | None], match: str) -> bool:
    active = [s for s in sets if s is not None]
    if not active:
        return True
    hits = [item_id in s for s in active]
    return any(hits) if match == "any" else all(hits)


def _operator(value: str) -> tuple[str, str]:
    """Split Cloudflare's `op:value` zone-name filter (default `equal`)."""
    for op in _ZONE_NAME_OPS:
        if value.startswith(op + ":"):
            return op, value[len(op) + 1:]
    return "equal", value
