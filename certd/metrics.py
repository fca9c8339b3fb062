"""certd's live Prometheus counters, shared by the code that counts and the HTTP server that exposes them.

No aiohttp here, and not even prometheus_client until `enable()`: the HTTP
server enables the counters when it starts (before the daemon sends its first
ACME request); a command without one (`certd issue`, `certd renew`) counts
nothing and does not pay the ~40 ms import. Once enabled, the ACME client, the
Cloudflare adapter and the OCPP listeners count into real prometheus_client
Counter and Histogram objects in `registry()`, at the cost of a dictionary
update per event. What lives in the store (certificates, chargers, bundles...)
is not counted here: the HTTP server's collector reads it at scrape time
(certd.http.collector).

Labels are bounded by design: an ACME *action* (never a URL path), an HTTP
status code, an outcome word, a configured listener name. No label ever carries
a charger id, a domain outside the config or a value a client chose.
"""

from __future__ import annotations

import contextlib
import contextvars
import threading
import time
from collections.abc import Iterator
from typing import Any

ACME_ACTIONS = ("get_directory", "new_nonce", "new_account", "new_order", "get_authorization",
                "answer_challenge", "finalize", "poll_order", "download_certificate", "renewal_info",
                "other")
ACME_BUCKETS = (0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)
LOGIN_RESULTS = {
    "unknown charger": "unknown_charger", "charger disabled": "disabled",
    "no credentials": "no_credentials", "charger has no password set": "no_password_set",
    "wrong password": "wrong_password",
}

_acme_action: contextvars.ContextVar[str] = contextvars.ContextVar("certd_acme_action", default="other")
_lock = threading.Lock()
_metrics: dict[str, Any] = {}


def enable() -> Any:
    """Create the registry and its counters (once); returns the registry."""
    with _lock:
        if not _metrics:
            from prometheus_client import CollectorRegistry, Counter, Histogram, ProcessCollector

            registry = CollectorRegistry()
            ProcessCollector(registry=registry)  # process_cpu_seconds_total, process_resident_memory_bytes...
            _metrics.update(
                acme_requests=Counter(
                    "certd_acme_client_request_count",
                    "Requests sent to the ACME server, by ACME action and HTTP status.",
                    ["action", "status"], registry=registry),
                acme_duration=Histogram(
                    "certd_acme_client_request_duration_seconds",
                    "Time the ACME server took to answer, by ACME action.",
                    ["action"], registry=registry, buckets=ACME_BUCKETS),
                cloudflare=Counter(
                    "certd_cloudflare_api_requests", "Requests sent to the Cloudflare API, by outcome.",
                    ["outcome"], registry=registry),
                handshakes=Counter(
                    "certd_ocpp_handshakes", "WebSocket opening handshakes of chargers, by listener and result.",
                    ["listener", "result"], registry=registry),
                logins=Counter(
                    "certd_ocpp_logins", "Charger logins (registry and password checks), by result.",
                    ["result"], registry=registry),
                registry=registry,
            )
        return _metrics["registry"]


def registry() -> Any:
    return enable()


# -- ACME (certd.issue.order / account / ari) -------------------------------------------------
@contextlib.contextmanager
def acme_action(action: str) -> Iterator[None]:
    """Requests sent inside this block count under `action` (each worker thread has its own context)."""
    token = _acme_action.set(action if action in ACME_ACTIONS else "other")
    try:
        yield
    finally:
        _acme_action.reset(token)


def current_acme_action() -> str:
    return _acme_action.get()


def observe_acme(action: str, status: int | str, started: float) -> None:
    """One ACME request answered (`status` a code) or failed (`status` "error"), since `started`."""
    if not _metrics:
        return
    action = action if action in ACME_ACTIONS else "other"
    _metrics["acme_requests"].labels(action, str(status)).inc()
    _metrics["acme_duration"].labels(action).observe(max(0.0, time.monotonic() - started))


# -- Cloudflare API (certd.dns.cloudflare) ----------------------------------------------------
def cloudflare_outcome(status: int | None) -> str:
    """ok | rate_limited | client_error | server_error | error (no answer)."""
    if status is None:
        return "error"
    if status == 429:
        return "rate_limited"
    if 200 <= status < 400:
        return "ok"
    return "client_error" if status < 500 else "server_error"


def count_cloudflare(status: int | None) -> None:
    if _metrics:
        _metrics["cloudflare"].labels(cloudflare_outcome(status)).inc()


# -- OCPP endpoint (certd.ocpp.server) --------------------------------------------------------
def count_handshake(listener: str, result: str) -> None:
    if _metrics:
        _metrics["handshakes"].labels(listener, result).inc()


def login_result(refusal: str | None) -> str:
    """A bounded label for an admission outcome (None: admitted)."""
    if refusal is None:
        return "accepted"
    return LOGIN_RESULTS.get(refusal, "refused")


def count_login(refusal: str | None) -> None:
    if _metrics:
        _metrics["logins"].labels(login_result(refusal)).inc()
