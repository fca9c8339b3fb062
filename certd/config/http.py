"""The `[http]` section: certd's own HTTP server (Prometheus metrics, health probes, status page).

```toml
[http]
listen = ["127.0.0.1:9402"]        # default; several addresses allowed, "[::1]:9402" for IPv6
[http.auth]                        # required for any address outside 127.0.0.0/8 and ::1
token_env = "CERTD_HTTP_TOKEN"     # or token_file = "/etc/certd/http-token" (owner-only)
users_file = "/etc/certd/http-users"  # "user:$argon2id$..." lines (owner-only)
[http.tls]
certificate = "home"               # one of [[certificates]], served and reloaded live
```
Secrets come from env vars or owner-only files (certd.secrets), never from this file.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass
from typing import Annotated

from pydantic import Field, field_validator, model_validator

from certd.config._base import Section

DEFAULT_LISTEN = "127.0.0.1:9402"


@dataclass(frozen=True)
class ListenAddress:
    """One parsed `listen` entry."""

    host: str  # an IP literal (no brackets)
    port: int

    @property
    def loopback(self) -> bool:
        return ipaddress.ip_address(self.host).is_loopback

    def __str__(self) -> str:
        return f"[{self.host}]:{self.port}" if ":" in self.host else f"{self.host}:{self.port}"


def parse_listen(value: str) -> ListenAddress:
    """"127.0.0.1:9402", "[::1]:9402", "0.0.0.0:9402", "localhost:9402" (= 127.0.0.1)."""
    text = value.strip()
    if text.startswith("["):
        host, sep, port = text[1:].partition("]:")
        if not sep:
            raise ValueError(f"{value!r}: write an IPv6 address as \"[::1]:9402\"")
    else:
        host, sep, port = text.rpartition(":")
        if not sep or ":" in host:
            raise ValueError(f"{value!r}: expected ADDRESS:PORT, e.g. \"127.0.0.1:9402\" or \"[::1]:9402\"")
    if host == "localhost":
        host = "127.0.0.1"
    try:
        address = ipaddress.ip_address(host)
    except ValueError:
        raise ValueError(f"{value!r}: {host!r} is not an IP address (certd binds addresses, "
                         "not names)") from None
    if not port.isdigit() or not 0 <= int(port) < 65536:
        raise ValueError(f"{value!r}: the port must be a number from 0 to 65535")
    return ListenAddress(str(address), int(port))


class HttpAuthConfig(Section):
    # A bearer token (`Authorization: Bearer ...`): from this env var, or from an owner-only file.
    token_env: str | None = None
    token_file: str | None = None
    # Basic auth: an owner-only file of "user:argon2-hash" lines (any argon2 encoded hash, e.g.
    # from argon2-cffi's PasswordHasher().hash(); see the README).
    users_file: str | None = None
    # /livez and /readyz answer without credentials (a load balancer or systemd probe needs no token).
    open_probes: bool = True

    @model_validator(mode="after")
    def _something(self) -> "HttpAuthConfig":
        if not (self.token_env or self.token_file or self.users_file):
            raise ValueError("set token_env, token_file or users_file (or remove [http.auth])")
        if self.token_env and self.token_file:
            raise ValueError("token_env and token_file both set: choose one")
        return self


class HttpTlsConfig(Section):
    # The [[certificates]] entry whose current issuance is served; a renewal is picked up live.
    certificate: str


class HttpConfig(Section):
    enabled: bool = True
    listen: Annotated[list[str], Field(min_length=1, max_length=8)] = [DEFAULT_LISTEN]
    auth: HttpAuthConfig | None = None
    tls: HttpTlsConfig | None = None
    # The status page reloads itself this often (seconds; 0: never).
    refresh_seconds: Annotated[int, Field(ge=0, le=3600)] = 30
    # Chargers per page in the status page's charger list.
    page_size: Annotated[int, Field(ge=10, le=500)] = 50

    @field_validator("listen", mode="before")
    @classmethod
    def _listen_list(cls, value: object) -> object:
        return [value] if isinstance(value, str) else value

    @field_validator("listen")
    @classmethod
    def _addresses(cls, values: list[str]) -> list[str]:
        parsed = [parse_listen(v) for v in values]
        seen = [(a.host, a.port) for a in parsed if a.port]
        if len(set(seen)) != len(seen):
            raise ValueError("an address is listed twice")
        return [str(a) for a in parsed]

    @model_validator(mode="after")
    def _auth_off_loopback(self) -> "HttpConfig":
        if not self.enabled or self.auth is not None:
            return self
        exposed = [str(a) for a in self.addresses if not a.loopback]
        if exposed:
            raise ValueError(
                f"listen {', '.join(exposed)} is not a loopback address: set [http.auth] "
                "(token_env, token_file or users_file) to expose certd's status beyond this machine")
        return self

    @property
    def addresses(self) -> list[ListenAddress]:
        return [parse_listen(v) for v in self.listen]


def http_certificate_errors(http: HttpConfig, certificate_names: list[str]) -> list[str]:
    """Key path + problem when [http.tls] names a certificate `[[certificates]]` lacks."""
    if not http.enabled or http.tls is None or http.tls.certificate in certificate_names:
        return []
    known = ", ".join(sorted(certificate_names)) or "none"
    return [f"http.tls.certificate: no [[certificates]] entry named {http.tls.certificate!r} (known: {known})"]
