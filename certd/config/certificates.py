"""The `[[certificates]]` tables: names to cover, key type, where files go, what runs after,
and where each name's DNS-01 challenge record goes when its own zone is not editable.

    [[certificates]]
    name = "home"
    domains = ["home.example.org", "www.example.org"]
    challenge_alias = "acme.example.net"   # every name: TXT at _acme-challenge.acme.example.net
    # domain_alias = "_acme.example.net"   # or: TXT at exactly this name
    # zone = "example.net" / zone_id = "..." # the zone receiving the TXT (zone_id: no Zone:Read needed)
    [certificates.names."www.example.org"] # this name's own settings (replace the four above)
    zone_id = "0123456789abcdef0123456789abcdef"

Without any of these, certd follows a CNAME at `_acme-challenge.<name>` (asking the
name's authoritative nameservers) and writes the TXT where it ends.
"""

import ipaddress
import re
from typing import Annotated

from pydantic import Field, field_validator, model_validator

from certd.config._base import Section
from certd.config.acme import KeyType

_LABEL = re.compile(r"^(?!-)[a-z0-9-]{1,63}(?<!-)$")
_CERT_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")
_RECORD_LABEL = re.compile(r"^(?!-)[a-z0-9_-]{1,63}(?<!-)$")
# A zone id goes into API paths: anything but letters, digits, '-' and '_' is a typo.
_ZONE_ID = re.compile(r"^[A-Za-z0-9_-]{1,64}$")


def normalize_domain(value: str) -> str:
    """Lower-case, strip the root dot, refuse IPs and malformed names."""
    name = value.strip().lower().rstrip(".")
    try:
        ipaddress.ip_address(name)
    except ValueError:
        pass
    else:
        raise ValueError(
            f"{value!r} is an IP address; chargers and ACME DNS-01 need a host name"
        )
    labels = name.split(".")
    if labels[0] == "*":
        labels = labels[1:]
    if len(labels) < 2 or not all(_LABEL.match(label) for label in labels):
        raise ValueError(f"{value!r} is not a valid DNS name (wildcards only as '*.' prefix)")
    if len(name) > 253:
        raise ValueError(f"{value!r} is longer than 253 characters")
    return name


def check_record_name(value: str) -> str:
    """A DNS record name such as `_acme.alias.example.net` (underscores allowed, no wildcard)."""
    name = value.strip().lower().rstrip(".")
    labels = name.split(".")
    if len(labels) < 2 or not all(_RECORD_LABEL.match(label) for label in labels) or len(name) > 253:
        raise ValueError(f"{value!r} is not a DNS name (letters, digits, '-', '_'; no wildcard)")
    return name


def check_zone_name(value: str) -> str:
    name = normalize_domain(value)
    if name.startswith("*."):
        raise ValueError(f"{value!r}: a zone name has no wildcard")
    return name


def check_zone_id(value: str) -> str:
    value = value.strip()
    if not _ZONE_ID.match(value):
        raise ValueError(f"{value!r} is not a zone id (the 32-character id on the zone's Overview page)")
    return value


def _parse_mode(value: object) -> int:
    """File modes are octal strings ("0640"). A bare TOML number is refused: `440` is decimal
    440 (0670 in octal, a group-writable key), and `0o640` cannot be told apart from it."""
    if not isinstance(value, str):
        raise ValueError(f"write file modes as quoted octal strings like \"0640\", not {value!r}")
    try:
        mode = int(value, 8)
    except ValueError as exc:
        raise ValueError(f"{value!r} is not an octal file mode like \"0644\"") from exc
    if not 0 <= mode <= 0o777:
        raise ValueError(f"{value!r} is not a file mode between 0000 and 0777")
    return mode


class TargetConfig(Section):
    """One consumer's copy of the files (e.g. Home Assistant reads /ssl/fullchain.pem)."""

    fullchain: str | None = None
    privkey: str | None = None
    cert: str | None = None
    chain: str | None = None
    mode: int = 0o644
    key_mode: int = 0o600
    owner: str | None = None
    group: str | None = None

    _modes = field_validator("mode", "key_mode", mode="before")(lambda cls, v: _parse_mode(v))

    @model_validator(mode="after")
    def _at_least_one_path(self) -> "TargetConfig":
        if not any((self.fullchain, self.privkey, self.cert, self.chain)):
            raise ValueError("a target needs at least one of fullchain, privkey, cert, chain")
        if self.key_mode & 0o007:
            raise ValueError(f"key_mode {self.key_mode:04o} makes the private key world-readable")
        return self

    def paths(self) -> dict[str, str]:
        """Kind -> path for the files this target wants."""
        kinds = {"fullchain": self.fullchain, "privkey": self.privkey,
                 "cert": self.cert, "chain": self.chain}
        return {kind: path for kind, path in kinds.items() if path}


class ChallengeConfig(Section):
    """Where a name's challenge TXT goes (acme.sh's --challenge-alias / --domain-alias) and in
    which zone; all unset: follow the CNAME at `_acme-challenge.<name>`, if there is one."""

    challenge_alias: str | None = None  # TXT at _acme-challenge.<challenge_alias>
    domain_alias: str | None = None  # TXT at exactly this name
    zone: str | None = None  # the zone receiving the TXT, by name
    zone_id: str | None = None  # ... by id: works with a token that cannot list zones

    _names = field_validator("challenge_alias", "domain_alias")(
        lambda cls, v: None if v is None else check_record_name(v))
    _zone = field_validator("zone")(lambda cls, v: None if v is None else check_zone_name(v))
    _zone_id = field_validator("zone_id")(lambda cls, v: None if v is None else check_zone_id(v))

    @model_validator(mode="after")
    def _one_alias(self) -> "ChallengeConfig":
        if self.challenge_alias and self.domain_alias:
            raise ValueError("set challenge_alias or domain_alias, not both")
        return self

    def challenge_only(self) -> "ChallengeConfig":
        """Just the four challenge settings (a certificate's, for all its names)."""
        return ChallengeConfig(challenge_alias=self.challenge_alias, domain_alias=self.domain_alias,
                               zone=self.zone, zone_id=self.zone_id)


class CertificateConfig(ChallengeConfig):
    name: str
    domains: Annotated[list[str], Field(min_length=1, max_length=100)]
    key_type: KeyType = "rsa2048"
    # Per-certificate overrides of [acme]; None means "use [acme]".
    profile: str | None = None
    preferred_chain: str | None = None
    # Renew when less than this many days are left (default: 1/3 of the lifetime, ARI first).
    renew_before_days: Annotated[float, Field(gt=0)] | None = None
    targets: list[TargetConfig] = []
    deploy_hooks: list[str] = []
    hook_timeout: Annotated[float, Field(gt=0)] = 60.0
    # Per-name challenge settings (`[certificates.names."www.example.com"]`): replace the
    # certificate's challenge_alias/domain_alias/zone/zone_id for that name.
    names: Annotated[dict[str, ChallengeConfig], Field(max_length=100)] = {}

    @field_validator("name")
    @classmethod
    def _safe_name(cls, value: str) -> str:
        if not _CERT_NAME.match(value):
            raise ValueError(
                f"{value!r}: use letters, digits, '.', '_' or '-' (it names files and DB rows)"
            )
        return value

    @field_validator("domains")
    @classmethod
    def _valid_domains(cls, values: list[str]) -> list[str]:
        names = [normalize_domain(v) for v in values]
        duplicates = sorted({n for n in names if names.count(n) > 1})
        if duplicates:
            raise ValueError(f"listed twice: {', '.join(duplicates)}")
        return names

    @model_validator(mode="after")
    def _names_are_domains(self) -> "CertificateConfig":
        for key in self.names:
            if normalize_domain(key) not in self.domains:
                raise ValueError(f"names.{key!r}: not in this certificate's domains "
                                 f"({', '.join(self.domains)})")
        normalized = {normalize_domain(k): v for k, v in self.names.items()}
        for domain in self.domains:
            twin = domain.removeprefix("*.") if domain.startswith("*.") else "*." + domain
            if twin in self.domains and self._own_settings(domain, normalized) != self._own_settings(
                    twin, normalized):
                raise ValueError(f"{domain} and {twin} share one challenge record "
                                 f"(_acme-challenge.{domain.removeprefix('*.')}): give them the same settings")
        return self

    def _own_settings(self, domain: str, names: dict[str, ChallengeConfig]) -> ChallengeConfig:
        return names.get(domain) or self.challenge_only()

    def challenge_settings(self, domain: str) -> ChallengeConfig:
        """The settings for `domain`'s challenge: its own table (or its wildcard twin's), else the
        certificate's."""
        names = {normalize_domain(k): v for k, v in self.names.items()}
        base = domain.removeprefix("*.")
        return names.get(domain) or names.get(base) or names.get("*." + base) or self.challenge_only()
