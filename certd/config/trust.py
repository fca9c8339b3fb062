"""The `[trust]` section: anchor sets, fleet CA bundles and the fleet registries.

```toml
[trust.anchor_sets]
default = "system"                 # "system", "certifi", or a PEM file / directory
[[trust.bundles]]                  # one bundle per fleet
[[trust.registries]]               # where new bundle versions are pushed (kind = "http" or "mqtt")
```
Secrets (registry auth header value, HMAC secret) come from env vars or files,
never from this file.

Two tables here name code in `certd.trust` as "module:attribute" strings, looked up
only when used, so loading a config never imports cryptography or a network client:
`EXPORT_FORMATS` (export format -> renderer) and `REGISTRY_KINDS` (registry kind ->
config model + push target). Adding a format or a kind is one line in one of them.
They live here, not in `certd.trust`, because config validation reads them and
`certd.trust` imports the config (never the other way round).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Annotated, Any, Literal, NamedTuple

from pydantic import Field, PlainValidator, PrivateAttr, ValidationError, field_validator, model_validator
from pydantic_core import InitErrorDetails, PydanticCustomError

from certd.config._base import Section
from certd.config.mqtt import MqttConfig, check_topic

Flavour = Literal["roots", "full"]

# Bundle export formats: name -> its renderer, a `certd.trust.formats.Renderer` ("module:attribute").
# Config validation, the `--format` choices and the export staleness checks all read this table.
EXPORT_FORMATS: dict[str, str] = {
    "pem": "certd.trust.export:PEM",
    "der": "certd.trust.export:DER",
    "manifest": "certd.trust.export:MANIFEST",
    "quectel": "certd.trust.quectel:KIT",
}
BUILTIN_ANCHOR_SOURCES = ("system", "certifi")
DEFAULT_ANCHOR_SET = "default"

_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")
# What a module's UFS accepts safely: DOS 8.3-ish names are recommended by Quectel.
_MODULE_FILE = re.compile(r"^[A-Za-z0-9_.-]{1,40}$")
_HEADER = re.compile(r"^[A-Za-z0-9-]{1,64}$")


def _check_name(value: str) -> str:
    if not _NAME.match(value):
        raise ValueError(f"{value!r}: use letters, digits, '.', '_' or '-' (it names files and rows)")
    return value


def _unique(values: list[str], what: str) -> None:
    duplicates = sorted({v for v in values if values.count(v) > 1})
    if duplicates:
        raise ValueError(f"{what} must be unique: {', '.join(duplicates)}")


class QuectelConfig(Section):
    """How the Quectel provisioning script loads the bundle onto the module."""

    file_name: str = "ca.pem"  # stored as UFS:<file_name>
    ssl_context: Annotated[int, Field(ge=0, le=5)] = 1
    # 3 = TLS 1.2 only, 4 = all versions (the seed troubleshooting guide uses 4).
    sslversion: Annotated[int, Field(ge=0, le=4)] = 4
    # Optional single cipher suite, e.g. "0xC02F" (ECDHE-RSA-AES128-GCM-SHA256).
    ciphersuite: str | None = None
    upload_timeout: Annotated[int, Field(ge=1, le=65535)] = 60

    @field_validator("file_name")
    @classmethod
    def _module_file(cls, value: str) -> str:
        if not _MODULE_FILE.match(value) or value in {".", ".."}:
            raise ValueError(f"{value!r}: use a short name of letters, digits, '.', '_' or '-'")
        return value

    @field_validator("ciphersuite")
    @classmethod
    def _hex_suite(cls, value: str | None) -> str | None:
        if value is None:
            return None
        if not re.fullmatch(r"0[xX][0-9A-Fa-f]{4}", value):
            raise ValueError(f"{value!r} is not a cipher suite code like 0xC02F")
        return "0x" + value[2:].upper()


class BundleExportConfig(Section):
    """A copy of the bundle certd rewrites (atomically) whenever its version changes."""

    format: str  # a name in EXPORT_FORMATS
    dir: str
    flavour: Flavour = "full"

    @field_validator("format")
    @classmethod
    def _known_format(cls, value: str) -> str:
        if value not in EXPORT_FORMATS:
            raise ValueError(f"unknown export format {value!r} (use one of {', '.join(EXPORT_FORMATS)})")
        return value


class BundleConfig(Section):
    name: str
    # Names from [[certificates]] whose chains this bundle covers; empty = all of them.
    certificates: list[str] = []
    anchors: str = DEFAULT_ANCHOR_SET
    # Chains of issuances younger than this (and not expired) stay in `full` next to the current one.
    recent_days: Annotated[float, Field(gt=0, le=3650)] = 90.0
    flavours: Annotated[list[Flavour], Field(min_length=1)] = ["roots", "full"]
    quectel: QuectelConfig = QuectelConfig()
    exports: list[BundleExportConfig] = []

    _name = field_validator("name")(lambda cls, v: _check_name(v))

    @model_validator(mode="after")
    def _checks(self) -> "BundleConfig":
        _unique(list(self.flavours), "flavours")
        _unique(list(self.certificates), "certificates")
        for export in self.exports:
            if export.flavour not in self.flavours:
                raise ValueError(
                    f"export of flavour {export.flavour!r} but the bundle only builds "
                    f"{', '.join(self.flavours)}"
                )
        return self


class SecretSource(NamedTuple):
    """Where a registry reads one secret at send time (an env var or a file, never this config)."""

    env: str | None
    file: str | None
    what: str


class RegistryConfig(Section):
    """What every fleet registry has, whatever its kind: a name, what it gets, how long a send may take.

    Each kind subclasses this with its own keys and is listed in REGISTRY_KINDS.
    """

    name: str
    kind: str = "http"
    # Bundle names pushed here; empty = every bundle.
    bundles: list[str] = []
    flavours: Annotated[list[Flavour], Field(min_length=1)] = ["roots", "full"]
    # Seconds one delivery may take (the outbox holds the row this long, plus a margin).
    timeout: Annotated[float, Field(gt=0, le=300)] = 10.0

    _name = field_validator("name")(lambda cls, v: _check_name(v))

    @model_validator(mode="after")
    def _unique_flavours(self) -> "RegistryConfig":
        _unique(list(self.flavours), "flavours")
        return self

    def secret_sources(self) -> tuple[SecretSource, ...]:
        """The secrets a delivery reads (`certd check-config` reads them up front; hooks never see them)."""
        return ()

    def files(self) -> dict[str, str]:
        """Files a delivery reads, by config key (`certd check-config` checks that they exist)."""
        return {}


class HttpRegistryConfig(RegistryConfig):
    """`kind = "http"` (the default): every new bundle version as a signed JSON POST."""

    kind: Literal["http"] = "http"
    url: str
    auth_header: str = "Authorization"
    auth_env: str | None = None  # env var holding the header's value, e.g. "Bearer abc"
    auth_file: str | None = None
    hmac_secret_env: str | None = None
    hmac_secret_file: str | None = None
    signature_header: str = "X-Certd-Signature"
    # CA file for the registry's own HTTPS certificate (default: system store).
    ca_file: str | None = None

    @field_validator("url")
    @classmethod
    def _http_url(cls, value: str) -> str:
        if not re.match(r"^https?://[^\s/]+", value):
            raise ValueError(f"{value!r} is not an http:// or https:// URL")
        return value

    @field_validator("auth_header", "signature_header")
    @classmethod
    def _header_name(cls, value: str) -> str:
        if not _HEADER.match(value):
            raise ValueError(f"{value!r} is not an HTTP header name")
        return value

    @model_validator(mode="after")
    def _secret_sources(self) -> "HttpRegistryConfig":
        if self.auth_env and self.auth_file:
            raise ValueError("set auth_env or auth_file, not both")
        if self.hmac_secret_env and self.hmac_secret_file:
            raise ValueError("set hmac_secret_env or hmac_secret_file, not both")
        if not (self.hmac_secret_env or self.hmac_secret_file):
            raise ValueError("a registry needs hmac_secret_env or hmac_secret_file (bodies are signed)")
        return self

    def secret_sources(self) -> tuple[SecretSource, ...]:
        sources = [SecretSource(self.hmac_secret_env, self.hmac_secret_file,
                                f"HMAC secret of registry {self.name}")]
        if self.auth_env or self.auth_file:
            sources.append(SecretSource(self.auth_env, self.auth_file, f"auth header of registry {self.name}"))
        return tuple(sources)

    def files(self) -> dict[str, str]:
        return {"ca_file": self.ca_file} if self.ca_file else {}


class MqttRegistryConfig(RegistryConfig):
    """`kind = "mqtt"`: every new bundle version published retained, QoS 1, on
    `<topic_prefix>/bundles/<bundle>/<flavour>`; devices acknowledge on
    `<topic_prefix>/acks/<bundle>/<device_id>` (certd.mqtt.push, certd.mqtt.acks)."""

    kind: Literal["mqtt"] = "mqtt"
    topic_prefix: str = "certd/fleet"
    hmac_secret_env: str | None = None
    hmac_secret_file: str | None = None
    # Where the HMAC goes: a JSON envelope around the body (MQTT 3.1.1 and 5), or the body as
    # the payload with the signature as an MQTT 5 user property.
    signature: Literal["envelope", "user_property"] = "envelope"
    # A device that has not acknowledged a version this many seconds after it was published is silent.
    silent_after: Annotated[float, Field(gt=0, le=365 * 86400)] = 86400.0
    # The [mqtt] section, attached by certd.config.Config (a delivery outside the daemon connects itself).
    _broker: MqttConfig | None = PrivateAttr(default=None)

    _prefix = field_validator("topic_prefix")(lambda cls, v: check_topic(v, "topic_prefix"))

    @model_validator(mode="after")
    def _secret_sources(self) -> "MqttRegistryConfig":
        if self.hmac_secret_env and self.hmac_secret_file:
            raise ValueError("set hmac_secret_env or hmac_secret_file, not both")
        if not (self.hmac_secret_env or self.hmac_secret_file):
            raise ValueError("a registry needs hmac_secret_env or hmac_secret_file (bodies are signed)")
        return self

    @property
    def broker(self) -> MqttConfig | None:
        return self._broker

    def attach_broker(self, mqtt: MqttConfig) -> None:
        self._broker = mqtt

    def secret_sources(self) -> tuple[SecretSource, ...]:
        return (SecretSource(self.hmac_secret_env, self.hmac_secret_file, f"HMAC secret of registry {self.name}"),)


@dataclass(frozen=True)
class RegistryKind:
    """One kind of fleet registry: its config model and its push target factory.

    `target` is "module:attribute" of a callable taking the config model and returning a
    `certd.trust.push.PushTarget` (resolved by `certd.trust.push.target_for`).
    """

    config_model: type[RegistryConfig]
    target: str


# Registry kind (`kind = "..."` in [[trust.registries]]) -> its config model and push target.
REGISTRY_KINDS: dict[str, RegistryKind] = {
    "http": RegistryKind(HttpRegistryConfig, "certd.trust.http_registry:HttpRegistryTarget"),
    "mqtt": RegistryKind(MqttRegistryConfig, "certd.mqtt.push:MqttRegistryTarget"),
}


def _registry_by_kind(value: Any) -> RegistryConfig:
    """Validate one [[trust.registries]] entry with the model its `kind` names (read at validation time)."""
    if isinstance(value, RegistryConfig):
        return value
    if not isinstance(value, dict):
        raise ValueError("a registry is a table of keys ([[trust.registries]])")
    kind = value.get("kind", "http")
    entry = REGISTRY_KINDS.get(kind) if isinstance(kind, str) else None
    if entry is None:
        error = PydanticCustomError("registry_kind", "unknown registry kind {kind} (known: {known})",
                                    {"kind": repr(kind), "known": ", ".join(REGISTRY_KINDS)})
        # Raised as a ValidationError so the message carries the key: trust.registries[N].kind.
        raise ValidationError.from_exception_data(
            "RegistryConfig", [InitErrorDetails(type=error, loc=("kind",), input=kind)])
    return entry.config_model.model_validate(value)


RegistryEntry = Annotated[RegistryConfig, PlainValidator(_registry_by_kind)]


class TrustConfig(Section):
    # Anchor set name -> "system" | "certifi" | path to a PEM file or a directory of PEM files.
    anchor_sets: dict[str, str] = {}
    bundles: Annotated[list[BundleConfig], Field(max_length=100)] = []
    registries: Annotated[list[RegistryEntry], Field(max_length=50)] = []

    @field_validator("anchor_sets")
    @classmethod
    def _anchor_names(cls, value: dict[str, str]) -> dict[str, str]:
        for name, source in value.items():
            _check_name(name)
            if not source.strip():
                raise ValueError(f"anchor set {name!r}: empty source")
        return value

    @model_validator(mode="after")
    def _references(self) -> "TrustConfig":
        _unique([b.name for b in self.bundles], "bundle names")
        _unique([r.name for r in self.registries], "registry names")
        known_sets = {DEFAULT_ANCHOR_SET, *BUILTIN_ANCHOR_SOURCES, *self.anchor_sets}
        bundle_names = {b.name for b in self.bundles}
        for bundle in self.bundles:
            if bundle.anchors not in known_sets:
                raise ValueError(
                    f"bundle {bundle.name!r}: anchors {bundle.anchors!r} is not an anchor set "
                    f"(known: {', '.join(sorted(known_sets))})"
                )
        for registry in self.registries:
            unknown = [b for b in registry.bundles if b not in bundle_names]
            if unknown:
                raise ValueError(
                    f"registry {registry.name!r}: unknown bundle(s) {', '.join(unknown)}"
                )
        return self

    def anchor_source(self, name: str) -> str:
        """Where anchor set `name` comes from ("default" is the system store unless overridden)."""
        if name in self.anchor_sets:
            return self.anchor_sets[name]
        if name in (DEFAULT_ANCHOR_SET, "system"):
            return "system"
        if name == "certifi":
            return "certifi"
        raise KeyError(name)

    def bundle(self, name: str) -> BundleConfig:
        for bundle in self.bundles:
            if bundle.name == name:
                return bundle
        from certd.errors import ConfigError

        known = ", ".join(b.name for b in self.bundles) or "none configured"
        raise ConfigError(f"no bundle named {name!r} in [trust] (known: {known})")

    def registry(self, name: str) -> RegistryConfig:
        for registry in self.registries:
            if registry.name == name:
                return registry
        from certd.errors import ConfigError

        known = ", ".join(r.name for r in self.registries) or "none configured"
        raise ConfigError(f"no registry named {name!r} in [trust] (known: {known})")
