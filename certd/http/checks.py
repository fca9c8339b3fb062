"""`certd check-config` for `[http]`: credentials readable, certificate known, addresses free.

Light (no aiohttp): sockets and urllib only. An address already taken by a
running certd (its own HTTP server, answering /livez) is fine: that is the
process a SIGHUP will reload.
"""

from __future__ import annotations

import errno
import json
import socket
import ssl
import urllib.request

from certd.config import Config
from certd.config.http import ListenAddress, http_certificate_errors
from certd.errors import ConfigError
from certd.http.credentials import Credentials, load_credentials


def _certd_answers(address: ListenAddress) -> bool:
    """Does a certd answer /livez there? (plain HTTP, then HTTPS without verification)."""
    unverified = ssl.create_default_context()
    unverified.check_hostname = False
    unverified.verify_mode = ssl.CERT_NONE
    for scheme, context in (("http", None), ("https", unverified)):
        try:
            with urllib.request.urlopen(f"{scheme}://{address}/livez", timeout=2,  # noqa: S310 - our own URL
                                        context=context) as response:
                body = response.read(4096)
        except urllib.error.HTTPError as exc:  # 503 is still certd answering
            if exc.code == 401 and 'realm="certd"' in (exc.headers.get("WWW-Authenticate") or ""):
                return True  # certd with open_probes = false
            body = exc.read(4096)
        except (OSError, ValueError):
            continue
        try:
            return json.loads(body).get("service") == "certd"
        except (ValueError, AttributeError):
            return False
    return False


def bind_problem(address: ListenAddress) -> str | None:
    """Why certd could not listen on `address` now (None: it can, or a certd already does)."""
    if address.port == 0:
        return None
    family = socket.AF_INET6 if ":" in address.host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind((address.host, address.port))
            return None
        except OSError as exc:
            failure = exc
    if failure.errno == errno.EADDRINUSE:
        if _certd_answers(address):
            return None
        return f"{address} is in use by another program"
    if failure.errno == errno.EADDRNOTAVAIL:
        return f"{address} is not an address of this machine"
    if failure.errno == errno.EACCES:
        return f"{address}: port {address.port} needs privileges certd does not have"
    return f"{address}: {failure.strerror or failure}"


def check_http(config: Config) -> tuple[Credentials | None, list[str]]:
    """Credentials (raising SecretError/ConfigError naming the key) and any other problems."""
    http = config.http
    if not http.enabled:
        return None, []
    credentials = load_credentials(http.auth)
    problems = http_certificate_errors(http, [c.name for c in config.certificates])
    for index, address in enumerate(http.addresses):
        problem = bind_problem(address)
        if problem:
            problems.append(f"http.listen[{index}]: {problem}")
    return credentials, problems


def require_http_ok(config: Config) -> Credentials | None:
    credentials, problems = check_http(config)
    if problems:
        raise ConfigError("; ".join(problems))
    return credentials
