"""The HTTP server's routes: /livez /readyz /metrics /api/v1/status /api/v1/chargers and the page `/`.

Each handler copies live state on the loop (certd.http.live), then reads the
store and renders in the server's worker threads, so neither a slow store
nor a large page holds up the loop that serves chargers.
"""

from __future__ import annotations

import asyncio
import json
import logging
from typing import TYPE_CHECKING, Any

import aiohttp_jinja2
from aiohttp import web

from certd.http import collector, probes, snapshot, timeline
from certd.http.charger_list import charger_page, clean_query, page_number
from certd.http.live import take_live_view

if TYPE_CHECKING:
    from certd.http.service import HttpService

log = logging.getLogger("certd.http")

SERVICE: web.AppKey["HttpService"] = web.AppKey("certd_http_service")
PROBES = ("/livez", "/readyz")
# The classic text format generate_latest writes; every Prometheus version reads it.
METRICS_CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
STORE_TIMEOUT = 5.0  # seconds a request waits for the store before answering without it
SECURITY_HEADERS = {
    "Cache-Control": "no-store",
    "X-Content-Type-Options": "nosniff",
    "X-Frame-Options": "DENY",
    "Referrer-Policy": "no-referrer",
    # No script at all; styles are inline in the page.
    "Content-Security-Policy": "default-src 'none'; style-src 'unsafe-inline'; img-src 'self' data:; "
                               "form-action 'self'; frame-ancestors 'none'",
}


async def _authorized(service: "HttpService", request: web.Request) -> bool:
    credentials = service.credentials
    if not credentials.required or (request.path in PROBES and credentials.open_probes):
        return True
    header = request.headers.get("Authorization")
    if credentials.bearer_ok(header):
        return True
    pair = credentials.basic_pair(header)
    if pair is None:
        return False
    if credentials.remembered(*pair):
        return True
    async with service.verify_slot:  # argon2 costs CPU: one check at a time, in a worker thread
        return bool(await service.in_thread(credentials.verify, *pair))


def _redact(response: web.StreamResponse, secrets: tuple[str, ...]) -> None:
    """Strike any secret value that slipped into a body (defence in depth: none should be there)."""
    body = getattr(response, "body", None)
    if not secrets or not isinstance(body, bytes | bytearray):
        return
    text = bytes(body)
    for secret in secrets:
        encoded = secret.encode()
        if encoded in text:
            text = text.replace(encoded, b"[redacted]")
            log.error("HTTP server: a secret value was about to be sent in %s; it was struck out",
                      response.content_type)
    if text != body:
        response.body = text  # type: ignore[attr-defined]


@web.middleware
async def guard(request: web.Request, handler: Any) -> web.StreamResponse:
    """Authentication, read-only methods, security headers, secret redaction."""
    service = request.app[SERVICE]
    if request.method not in ("GET", "HEAD"):
        response: web.StreamResponse = web.Response(status=405, text="certd's HTTP server is read-only\n",
                                                    headers={"Allow": "GET, HEAD"})
    elif not await _authorized(service, request):
        challenge = ", ".join(([f'Bearer realm="certd"'] if service.credentials.token else [])
                              + (['Basic realm="certd", charset="UTF-8"'] if service.credentials.users else []))
        response = web.Response(status=401, text="Unauthorized\n", headers={"WWW-Authenticate": challenge})
    else:
        try:
            response = await handler(request)
        except web.HTTPException as exc:
            response = web.Response(status=exc.status, text=f"{exc.reason}\n")
    for key, value in SECURITY_HEADERS.items():
        response.headers.setdefault(key, value)
    _redact(response, service.secrets)
    return response


def _json(data: Any, status: int = 200) -> web.Response:
    return web.Response(status=status, text=json.dumps(data, indent=1, default=str),
                        content_type="application/json")


async def _overview(service: "HttpService", *, with_events: bool) -> tuple[Any, dict[str, Any] | None, str | None]:
    """Live view, store snapshot (None on failure) and why it failed."""
    live = take_live_view(service.live, service.connected)
    try:
        rollover = await asyncio.wait_for(service.rollover.get(live), STORE_TIMEOUT)
        data = await service.in_thread(read_overview, service, live, service.now(), with_events, rollover,
                                       timeout=STORE_TIMEOUT)
    except TimeoutError:
        return live, None, f"the store did not answer within {STORE_TIMEOUT:.0f} s"
    except Exception as exc:  # noqa: BLE001 - only the type: a database error may quote the URL
        return live, None, f"the store did not answer ({type(exc).__name__})"
    return live, data, None


def read_overview(service: "HttpService", live: Any, now: Any, with_events: bool,
                  rollover: list[dict[str, Any]]) -> dict[str, Any]:
    return snapshot.overview(service.config, service.engine, live, now, rollover, with_events=with_events,
                             tallies=service.tallies)


async def livez(request: web.Request) -> web.Response:
    service = request.app[SERVICE]
    live = take_live_view(service.live, service.connected)
    status, body = probes.verdict(probes.liveness(live, service.loop_lag))
    return _json(body, status)


def _ready_snapshot(service: "HttpService", live: Any, now: Any) -> dict[str, Any]:
    from certd.store.db import session_scope

    with session_scope(service.engine) as session:
        return {"certificates": snapshot.certificates(session, service.config, now),
                "listeners": snapshot.listeners(session, service.config, live, now)}


async def readyz(request: web.Request) -> web.Response:
    service = request.app[SERVICE]
    live = take_live_view(service.live, service.connected)
    error = None
    data = None
    try:
        data = await service.in_thread(_ready_snapshot, service, live, service.now(), timeout=STORE_TIMEOUT)
    except TimeoutError:
        error = f"the store did not answer within {STORE_TIMEOUT:.0f} s"
    except Exception as exc:  # noqa: BLE001
        error = f"the store did not answer ({type(exc).__name__})"
    status, body = probes.verdict(probes.readiness(error, data))
    return _json(body, status)


async def metrics(request: web.Request) -> web.Response:
    service = request.app[SERVICE]
    live, data, _error = await _overview(service, with_events=False)
    text = await service.in_thread(collector.render, data, live, service.now())
    return web.Response(body=text, headers={"Content-Type": METRICS_CONTENT_TYPE})


async def api_status(request: web.Request) -> web.Response:
    service = request.app[SERVICE]
    live, data, error = await _overview(service, with_events=True)
    if data is None:
        return _json({"error": error}, 503)
    data["live"] = {"ocpp_running": live.ocpp_running, "connected_here": sum(live.connected.values()),
                    "scheduler": live.scheduler.__dict__ if live.scheduler else None,
                    "loop_lag_seconds": round(service.loop_lag, 4)}
    return _json(data)


async def api_chargers(request: web.Request) -> web.Response:
    service = request.app[SERVICE]
    query, page = clean_query(request.query.get("q")), page_number(request.query.get("page"))
    data = await service.in_thread(charger_page, service.engine, query, page, service.config.http.page_size,
                                   timeout=STORE_TIMEOUT)
    return _json(data)


def _render_page(service: "HttpService", live: Any, now: Any, query: str, page: int,
                 rollover: list[dict[str, Any]]) -> str:
    data = snapshot.overview(service.config, service.engine, live, now, rollover, tallies=service.tallies)
    chargers = charger_page(service.engine, query, page, service.config.http.page_size)
    env = aiohttp_jinja2.get_env(service_app(service))
    return env.get_template("status.html").render(
        data=data, chargers=chargers, timeline=timeline.build(data["certificates"], data["bundles"], now),
        now=now, refresh=service.config.http.refresh_seconds, live=live)


def service_app(service: "HttpService") -> web.Application:
    assert service._runner is not None  # noqa: SLF001
    return service._runner.app  # noqa: SLF001


async def index(request: web.Request) -> web.Response:
    service = request.app[SERVICE]
    live = take_live_view(service.live, service.connected)
    query, page = clean_query(request.query.get("q")), page_number(request.query.get("page"))
    try:
        rollover = await asyncio.wait_for(service.rollover.get(live), STORE_TIMEOUT)
        html = await service.in_thread(_render_page, service, live, service.now(), query, page, rollover,
                                       timeout=STORE_TIMEOUT)
    except Exception as exc:  # noqa: BLE001 - a timeout or the store's error (only its type is shown)
        return web.Response(status=503, text=f"certd: the store did not answer ({type(exc).__name__}); "
                                             "this page reloads when it does\n",
                            headers={"Refresh": "10"})
    return web.Response(text=html, content_type="text/html")


def short_time(iso: str | None) -> str:
    """"2025-01-31 12:00" from an ISO time (the page's only date format, UTC)."""
    return iso[:16].replace("T", " ") if iso else "—"


def add_routes(app: web.Application) -> None:
    aiohttp_jinja2.get_env(app).filters["short"] = short_time
    app.router.add_get("/", index)
    app.router.add_get("/livez", livez)
    app.router.add_get("/readyz", readyz)
    app.router.add_get("/metrics", metrics)
    app.router.add_get("/api/v1/status", api_status)
    app.router.add_get("/api/v1/chargers", api_chargers)
