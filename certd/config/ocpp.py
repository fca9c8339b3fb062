"""The `[ocpp]` section: listeners chargers connect to, and how certd treats them.

A listener serves one or more certificates from `[[certificates]]` (by name; an
RSA and an ECDSA one for the same names may be served together) or PEM files
written by another tool, with a TLS profile (`gsm`: TLS 1.2 with the four
ciphers cellular modules speak; `modern`: TLS 1.2 + 1.3).

Security profiles (OCPP): 1 = Basic auth over plain ws:// (`insecure = true`), 2 = Basic auth
over TLS (the default), 3 = TLS with a client certificate and no password: verified against
the charger CA (`[ocpp.charger_ca]`, see certd/config/charger_ca.py) and the listener's
`client_ca_files` (manufacturer CAs of factory-installed charger certificates).
"""

from __future__ import annotations

import re
from typing import Annotated, Literal

from pydantic import Field, field_validator, model_validator

from certd.config._base import Section
from certd.config.certificates import normalize_domain
from certd.config.charger_ca import ChargerCaConfig

TlsProfileName = Literal["gsm", "modern"]
UnknownChargerPolicy = Literal["reject", "register", "accept"]
Subprotocol = Literal["ocpp1.6", "ocpp2.0.1", "ocpp2.1"]

_CLASS_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,31}$")
# A path pattern: "/", then literal segments, and "{id}" as the last segment.
_PATH_PATTERN = re.compile(r"^/(?:[A-Za-z0-9._~-]+/)*\{id\}$")

# gsm: cellular NATs drop idle flows after 60-120 s, so a 60 s heartbeat keeps them open.
DEFAULT_HEARTBEAT_CLASSES = {"default": 300, "gsm": 60}


class CertFilesConfig(Section):
    """PEM files kept by another tool (e.g. Home Assistant's Let's Encrypt add-on), watched by mtime."""

    fullchain: str
    privkey: str


class ListenerConfig(Section):
    name: str | None = None
    # The name chargers connect to; the served certificate must cover it.
    host: str
    # Addresses to listen on (default: every address of the machine).
    bind: Annotated[list[str], Field(max_length=8)] = []
    # 0 = any free port (tests, benchmarks)
    port: Annotated[int, Field(ge=0, lt=65536)]
    certificates: Annotated[list[str], Field(max_length=4)] = []
    cert_files: Annotated[list[CertFilesConfig], Field(max_length=4)] = []
    tls_profile: TlsProfileName = "modern"
    paths: Annotated[list[str], Field(min_length=1, max_length=8)] = ["/ocpp/{id}", "/{id}"]
    subprotocols: Annotated[list[Subprotocol], Field(min_length=1)] = [
        "ocpp2.0.1", "ocpp1.6", "ocpp2.1",
    ]
    # Security profile 1 (Basic auth over plain ws://): only on trusted networks.
    insecure: bool = False
    # 1 (needs insecure = true), 2 (password over TLS) or 3 (client certificate over TLS).
    # Default: 1 when insecure, else 2.
    security_profile: Literal[1, 2, 3] | None = None
    # Profile 3: PEM files of manufacturer CAs whose charger certificates are accepted too.
    client_ca_files: Annotated[list[str], Field(max_length=16)] = []

    @field_validator("host")
    @classmethod
    def _host_name(cls, value: str) -> str:
        return normalize_domain(value)

    @field_validator("bind", mode="before")
    @classmethod
    def _bind_list(cls, value: object) -> object:
        return [value] if isinstance(value, str) else value

    @field_validator("paths")
    @classmethod
    def _path_patterns(cls, values: list[str]) -> list[str]:
        for value in values:
            if not _PATH_PATTERN.match(value):
                raise ValueError(
                    f"{value!r}: a path pattern starts with '/' and ends with the segment "
                    "'{id}', e.g. \"/ocpp/{id}\" or \"/{id}\""
                )
        if len(set(values)) != len(values):
            raise ValueError("a path pattern is listed twice")
        return values

    @model_validator(mode="after")
    def _material(self) -> "ListenerConfig":
        if self.insecure:
            if self.certificates or self.cert_files:
                raise ValueError("insecure = true serves plain ws://; remove certificates/cert_files")
        elif not self.certificates and not self.cert_files:
            raise ValueError(
                "a TLS listener needs certificates = [\"name\", ...] or cert_files = "
                "[{fullchain = ..., privkey = ...}] (or insecure = true for trusted networks)"
            )
        if len(set(self.certificates)) != len(self.certificates):
            raise ValueError("certificates: a name is listed twice")
        if self.security_profile == 1 and not self.insecure:
            raise ValueError("security_profile = 1 is plain ws://: set insecure = true (or use 2)")
        if self.insecure and self.security_profile not in (None, 1):
            raise ValueError(f"insecure = true is security profile 1, not {self.security_profile}")
        if self.client_ca_files and self.profile != 3:
            raise ValueError("client_ca_files apply to security_profile = 3 listeners only")
        return self

    @property
    def label(self) -> str:
        return self.name or f"{self.host}:{self.port}"

    @property
    def profile(self) -> int:
        """The OCPP security profile this listener serves."""
        if self.security_profile is not None:
            return self.security_profile
        return 1 if self.insecure else 2


class OcppConfig(Section):
    enabled: bool = True
    listeners: Annotated[list[ListenerConfig], Field(max_length=16)] = []
    # What to do with a charger id the registry does not know.
    unknown_chargers: UnknownChargerPolicy = "reject"
    # TLS + WebSocket handshake; 2G links need tens of seconds for an RSA handshake.
    handshake_timeout: Annotated[float, Field(gt=0, le=600)] = 60.0
    ping_interval: Annotated[float, Field(gt=0)] | None = 30.0
    # A charger that answers no ping within this many seconds is dropped (None: never).
    ping_timeout: Annotated[float, Field(gt=0)] | None = 60.0
    max_message_size: Annotated[int, Field(ge=1024, le=16 * 1024 * 1024)] = 64 * 1024
    # Frames buffered per connection before reading pauses.
    max_queue: Annotated[int, Field(ge=1, le=1024)] = 8
    # How long certd waits for a charger to answer a request it sends.
    call_timeout: Annotated[float, Field(gt=0)] = 30.0
    # Seconds between checks of the store for a newly issued certificate (0: only explicit reloads).
    reload_check_interval: Annotated[float, Field(ge=0)] = 30.0
    heartbeat_classes: dict[str, Annotated[int, Field(ge=10, le=86400)]] = dict(
        DEFAULT_HEARTBEAT_CLASSES
    )
    # Class given to chargers added without --class and to auto-registered ones.
    default_heartbeat_class: str = "default"
    # Failed Basic-auth attempts allowed per client address within the window, then 429.
    auth_failure_limit: Annotated[int, Field(ge=1)] = 10
    auth_failure_window: Annotated[float, Field(gt=0)] = 300.0
    # PEM files with private roots (your own CA, Pebble) that complete a served chain;
    # public roots come from certifi.
    trust_roots: list[str] = []
    # Identifies this process in the registry's "connected to" column (default: host name);
    # worker N of `certd run` is "<node_name>-wN".
    node_name: str | None = None
    # Processes serving the listeners under `certd run` (each on every listening port, the
    # kernel spreads new connections: SO_REUSEPORT); 1 = in the daemon's own process. With
    # more, a supervisor runs the renewals and restarts a worker that dies. About one per core.
    workers: Annotated[int, Field(ge=1, le=64)] = 1
    # certd as the chargers' CA (security profile 3); see certd/config/charger_ca.py.
    charger_ca: ChargerCaConfig | None = None

    @field_validator("heartbeat_classes")
    @classmethod
    def _class_names(cls, values: dict[str, int]) -> dict[str, int]:
        for name in values:
            if not _CLASS_NAME.match(name):
                raise ValueError(f"{name!r}: use letters, digits, '.', '_' or '-' (max 32)")
        merged = dict(DEFAULT_HEARTBEAT_CLASSES)
        merged.update(values)
        return merged

    @model_validator(mode="after")
    def _consistent(self) -> "OcppConfig":
        if self.default_heartbeat_class not in self.heartbeat_classes:
            raise ValueError(
                f"default_heartbeat_class {self.default_heartbeat_class!r} is not in "
                f"heartbeat_classes ({', '.join(sorted(self.heartbeat_classes))})"
            )
        seen: set[tuple[str, int]] = set()
        for index, listener in enumerate(self.listeners):
            for address in listener.bind or ["*"]:
                key = (address, listener.port)
                if listener.port == 0:
                    continue
                if key in seen:
                    raise ValueError(
                        f"listeners[{index}]: {address} port {listener.port} is used by two listeners"
                    )
                seen.add(key)
            if listener.profile == 3 and self.charger_ca is None and not listener.client_ca_files:
                raise ValueError(
                    f"listeners[{index}]: security_profile = 3 verifies client certificates: "
                    "configure [ocpp.charger_ca] or list manufacturer CAs in client_ca_files"
                )
        return self


def listener_certificate_errors(ocpp: OcppConfig, certificate_names: list[str]) -> list[str]:
    """Key paths + problems for listeners naming certificates that `[[certificates]]` lacks."""
    known = set(certificate_names)
    errors = []
    for index, listener in enumerate(ocpp.listeners):
        for position, name in enumerate(listener.certificates):
            if name not in known:
                errors.append(
                    f"ocpp.listeners[{index}].certificates[{position}]: no [[certificates]] entry "
                    f"named {name!r} (known: {', '.join(sorted(known)) or 'none'})"
                )
    return errors
