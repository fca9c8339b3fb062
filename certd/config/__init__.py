"""Load certd's TOML config into typed, validated models.

Errors name the key path (`certificates[0].domains[1]`) and the problem, so a
user can fix the file without reading code.
"""

from __future__ import annotations

import os
import tomllib
from pathlib import Path
from typing import Annotated, Literal

from pydantic import Field, ValidationError, model_validator

from certd.config._base import Section
from certd.config.acme import AcmeConfig
from certd.config.certificates import CertificateConfig, TargetConfig
from certd.config.daemon import DaemonConfig
from certd.config.cloudflare import CloudflareConfig
from certd.config.dns import DnsConfig
from certd.config.hosts import DnsRecordsConfig, HostList
from certd.config.mqtt import HomeAssistantConfig, MqttConfig, mqtt_reference_errors
from certd.config.node import NodeConfig
from certd.config.http import HttpConfig
from certd.config.ocpp import OcppConfig
from certd.config.rollover import RolloverConfig
from certd.config.store import StoreConfig
from certd.config.trust import MqttRegistryConfig, TrustConfig
from certd.errors import ConfigError

DEFAULT_CONFIG_PATH = "/etc/certd/certd.toml"
CONFIG_ENV = "CERTD_CONFIG"

__all__ = [
    "Config", "AcmeConfig", "CertificateConfig", "TargetConfig", "CloudflareConfig",
    "DnsConfig", "StoreConfig", "load_config", "parse_config", "resolve_config_path",
]


class Config(Section):
    state_dir: str = "/var/lib/certd"
    # SQLAlchemy URL; default: sqlite file in state_dir. PostgreSQL: postgresql+psycopg://...
    database_url: str | None = None
    # Where the key encrypting private keys in the store comes from, see certd/config/store.py.
    store: StoreConfig = StoreConfig()
    log_level: Literal["debug", "info", "warning", "error"] = "info"
    acme: AcmeConfig = AcmeConfig()
    cloudflare: CloudflareConfig = CloudflareConfig()
    dns: DnsConfig = DnsConfig()
    certificates: Annotated[list[CertificateConfig], Field(max_length=1000)] = []
    hosts: HostList = []  # gray-cloud DNS records, see certd/config/hosts.py
    dns_records: DnsRecordsConfig = DnsRecordsConfig()
    ocpp: OcppConfig = OcppConfig()  # embedded OCPP endpoint, see certd/config/ocpp.py
    trust: TrustConfig = TrustConfig()  # fleet CA bundles + registries, see certd/config/trust.py
    rollover: RolloverConfig = RolloverConfig()  # CA roots onto chargers over OCPP, see certd/config/rollover.py
    daemon: DaemonConfig = DaemonConfig()  # `certd run` pacing + notify hook, see certd/config/daemon.py
    mqtt: MqttConfig = MqttConfig()  # broker connection, see certd/config/mqtt.py
    homeassistant: HomeAssistantConfig = HomeAssistantConfig()  # MQTT discovery, see certd/config/mqtt.py
    node: NodeConfig = NodeConfig()  # this node among several on one PostgreSQL, see certd/config/node.py
    http: HttpConfig = HttpConfig()  # metrics, health probes, status page, see certd/config/http.py

    @model_validator(mode="after")
    def _unique_names(self) -> "Config":
        names = [c.name for c in self.certificates]
        duplicates = sorted({n for n in names if names.count(n) > 1})
        if duplicates:
            raise ValueError(f"certificate names must be unique: {', '.join(duplicates)}")
        return self

    @model_validator(mode="after")
    def _mqtt_references(self) -> "Config":
        errors = mqtt_reference_errors(self.mqtt, self.homeassistant, self.trust.registries)
        if errors:
            raise ValueError("; ".join(errors))
        for registry in self.trust.registries:  # a delivery outside the daemon connects with [mqtt]
            if isinstance(registry, MqttRegistryConfig):
                registry.attach_broker(self.mqtt)
        return self

    @property
    def db_url(self) -> str:
        return self.database_url or f"sqlite:///{Path(self.state_dir) / 'certd.db'}"

    def secret_env_names(self) -> tuple[str, ...]:
        """Every env var this config names as holding a secret: none of them reaches a hook."""
        names = set(self.cloudflare.secret_env_names())
        if self.store.key_env:
            names.add(self.store.key_env)
        if self.acme.eab and self.acme.eab.hmac_key_env:
            names.add(self.acme.eab.hmac_key_env)
        for registry in self.trust.registries:
            names.update(source.env for source in registry.secret_sources() if source.env)
        if self.ocpp.charger_ca is not None:
            names.update(self.ocpp.charger_ca.secret_env_names())
        if self.mqtt.password_env:
            names.add(self.mqtt.password_env)
        if self.http.auth and self.http.auth.token_env:
            names.add(self.http.auth.token_env)
        return tuple(sorted(names))

    def certificate(self, name: str) -> CertificateConfig:
        for cert in self.certificates:
            if cert.name == name:
                return cert
        known = ", ".join(c.name for c in self.certificates) or "none configured"
        raise ConfigError(f"no certificate named {name!r} in config (known: {known})")


def resolve_config_path(cli_value: str | None) -> Path:
    """--config, else $CERTD_CONFIG, else /etc/certd/certd.toml."""
    return Path(cli_value or os.environ.get(CONFIG_ENV) or DEFAULT_CONFIG_PATH)


def _key_path(loc: tuple[str | int, ...]) -> str:
    path = ""
    for part in loc:
        if isinstance(part, int):
            path += f"[{part}]"
        else:
            path += f".{part}" if path else str(part)
    return path or "(top level)"


def format_validation_error(exc: ValidationError, source: str) -> str:
    lines = [f"{source}: invalid configuration"]
    for err in exc.errors():
        message = err["msg"].removeprefix("Value error, ")
        if err["type"] == "extra_forbidden":
            message = "unknown key"
        lines.append(f"  {_key_path(err['loc'])}: {message}")
    return "\n".join(lines)


def parse_config(text: str, source: str = "<config>") -> Config:
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{source}: not valid TOML: {exc}") from None
    try:
        return Config.model_validate(data)
    except ValidationError as exc:
        raise ConfigError(format_validation_error(exc, source)) from None


def load_config(path: str | os.PathLike[str]) -> Config:
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError(
            f"config file {path} not found (give --config PATH or set {CONFIG_ENV})"
        ) from None
    except OSError as exc:
        raise ConfigError(f"cannot read config file {path}: {exc.strerror}") from None
    except UnicodeDecodeError as exc:
        raise ConfigError(f"config file {path} is not UTF-8 text (byte {exc.start}: "
                          f"{exc.object[exc.start:exc.start + 1]!r}); TOML files are UTF-8") from None
    return parse_config(text, str(path))
