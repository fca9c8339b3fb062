"""The `http` push target: POST one signed JSON document to a fleet registry, classify the answer.

The body is signed with HMAC-SHA256 over its exact bytes (header
``<signature_header>: sha256=<hex>``) and carries an ``Idempotency-Key`` header
equal to the document's key, so a registry can drop a repeat of a delivery it
already accepted. Secrets are read at send time and never appear in messages.
"""

from __future__ import annotations

import hashlib
import hmac
import ssl
import urllib.error
import urllib.request

from certd import __version__
from certd.config.trust import HttpRegistryConfig
from certd.errors import SecretError
from certd.retry_after import retry_after_seconds
from certd.secrets import read_secret
from certd.trust.push import PushMessage, PushOutcome

IDEMPOTENCY_HEADER = "Idempotency-Key"
MAX_BODY_KEPT = 2000
# 4xx answers that say "try again later" rather than "this request is wrong".
TRANSIENT_4XX = {408, 425, 429}


def sign(secret: str, body: bytes) -> str:
    return "sha256=" + hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()


def checked_header_value(value: str, what: str) -> str:
    """`value` if it is one line of printable ASCII; else an error that never repeats it.

    http.client would raise a ValueError quoting the whole value (a bearer token) for a
    line break, and a UnicodeEncodeError for other characters.
    """
    for char in value:
        if char != "\t" and not " " <= char <= "~":
            kind = "a line break" if char in "\r\n" else f"the character U+{ord(char):04X}"
            raise SecretError(f"{what} contains {kind}: a header value must be one line of "
                              "printable ASCII (the value is not shown)")
    return value


def _source(env: str | None, file: str | None) -> str:
    return f"file {file}" if file else f"environment variable {env}"


def _tls_context(registry: HttpRegistryConfig) -> ssl.SSLContext | PushOutcome:
    """The TLS context for an https registry; an unreadable ca_file is a retry that names the file."""
    try:
        return ssl.create_default_context(cafile=registry.ca_file)
    except ssl.SSLError as exc:
        why = exc.reason or type(exc).__name__
    except OSError as exc:
        why = exc.strerror or type(exc).__name__
    return PushOutcome("retry", None, f"cannot load ca_file {registry.ca_file} of registry "
                                      f"{registry.name}: {why}")


def classify(status: int, body: str, retry_after: str | None = None) -> PushOutcome:
    """Pure: what an HTTP answer means for the outbox.

    accepted (2xx), retry (5xx, transient 4xx), or rejected (other 4xx / 3xx: a redirect is not
    followed, it would re-send the signed body elsewhere).
    """
    text = body.strip()[:MAX_BODY_KEPT]
    if 200 <= status < 300:
        return PushOutcome("accepted", status, text)
    if status >= 500 or status in TRANSIENT_4XX:
        return PushOutcome("retry", status, text, retry_after_seconds(retry_after))
    return PushOutcome("rejected", status, text)


class _NoRedirect(urllib.request.HTTPRedirectHandler):
    def redirect_request(self, *args, **kwargs):  # type: ignore[no-untyped-def]
        return None  # a redirect would re-send the signed body elsewhere: report it instead


def post(registry: HttpRegistryConfig, body: bytes, idempotency_key: str) -> PushOutcome:
    """One POST; network errors and timeouts come back as `retry`, never as exceptions."""
    secret = read_secret(env=registry.hmac_secret_env, file=registry.hmac_secret_file,
                         what=f"HMAC secret of registry {registry.name}")
    assert secret is not None
    headers = {
        "Content-Type": "application/json",
        "User-Agent": f"certd/{__version__}",
        IDEMPOTENCY_HEADER: idempotency_key,
        registry.signature_header: sign(secret, body),
    }
    if registry.auth_env or registry.auth_file:
        auth = read_secret(env=registry.auth_env, file=registry.auth_file,
                           what=f"auth header of registry {registry.name}")
        assert auth is not None
        headers[registry.auth_header] = checked_header_value(
            auth, f"auth header of registry {registry.name} (from "
                  f"{_source(registry.auth_env, registry.auth_file)})")
    request = urllib.request.Request(registry.url, data=body, headers=headers, method="POST")
    handlers: list[urllib.request.BaseHandler] = [_NoRedirect()]
    if registry.url.startswith("https://"):
        context = _tls_context(registry)
        if isinstance(context, PushOutcome):
            return context
        handlers.append(urllib.request.HTTPSHandler(context=context))
    opener = urllib.request.build_opener(*handlers)
    try:
        with opener.open(request, timeout=registry.timeout) as response:
            text = response.read(MAX_BODY_KEPT * 2).decode("utf-8", "replace")
            return classify(response.status, text)
    except urllib.error.HTTPError as exc:
        text = exc.read(MAX_BODY_KEPT * 2).decode("utf-8", "replace") if exc.fp else ""
        return classify(exc.code, text, exc.headers.get("Retry-After") if exc.headers else None)
    except (urllib.error.URLError, OSError, TimeoutError) as exc:
        reason = getattr(exc, "reason", exc)
        return PushOutcome("retry", None, f"cannot reach {registry.url}: {reason}")


class HttpRegistryTarget:
    """`kind = "http"`: each delivery is one signed POST (see `post`)."""

    def __init__(self, registry: HttpRegistryConfig) -> None:
        self.registry = registry

    def deliver(self, message: PushMessage) -> PushOutcome:
        return post(self.registry, message.body, message.idempotency_key)
