"""The `[[certificates]]` tables: names to cover, key type, where files go, what runs after."""

import ipaddress
import re
from typing import Annotated

from pydantic import Field, field_validator, model_validator

from certd.config._base import Section
from certd.config.acme import KeyType

_LABEL = re.compile(r"^(?!-)[a-z0-9-]{1,63}(?<!-)$")
_CERT_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")


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


class CertificateConfig(Section):
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
