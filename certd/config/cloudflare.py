"""The `[cloudflare]` section: where the API tokens come from, never the tokens themselves.

One token (today's form, the implicit single account):

    [cloudflare]
    api_token_env = "CLOUDFLARE_API_TOKEN"     # or api_token_file = "/etc/certd/cloudflare.token"

Several tokens, each serving its own zones (`[[cloudflare.accounts]]`); the token for a
name is chosen by the zone its challenge record goes to:

    [[cloudflare.accounts]]
    name = "home"                              # a label for messages (default: the env var or file)
    api_token_env = "CF_HOME_TOKEN"
    zones = ["example.com"]                    # or leave out: every zone the token may list
    [[cloudflare.accounts]]
    name = "work"
    api_token_file = "/etc/certd/cf-work.token"  # owner-only (0600)
    zones = [{ name = "corp.example", id = "0123456789abcdef0123456789abcdef" }]  # id: no Zone:Read needed

An account that lists its zones claims exactly those; one without `zones` claims every
zone its token can list that no other account lists. Two accounts claiming one zone is a
config error. With accounts, a top-level `api_token_env`/`api_token_file` is one more
account (named "default"). Tokens are never checked against a format: Cloudflare changes
them (the 2026 `cfut_`/`cfat_` tokens) and only Cloudflare can tell a good one.
"""

from __future__ import annotations

import re
from typing import Annotated

from pydantic import Field, field_validator, model_validator

from certd.config._base import Section
from certd.config.certificates import check_zone_id, check_zone_name

DEFAULT_TOKEN_ENV = "CLOUDFLARE_API_TOKEN"
DEFAULT_ACCOUNT = "default"
_LABEL = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")


def token_source(env: str | None, file: str | None) -> str:
    """Where a token comes from, as messages name it (never the token)."""
    return f"file {file}" if file else f"environment variable {env or DEFAULT_TOKEN_ENV}"


class ZoneRef(Section):
    """A zone an account serves: its name, and its id when the token may not list zones."""

    name: str
    id: str | None = None

    _name = field_validator("name")(lambda cls, v: check_zone_name(v))
    _id = field_validator("id")(lambda cls, v: None if v is None else check_zone_id(v))


class CloudflareAccountConfig(Section):
    """One `[[cloudflare.accounts]]` entry: a token and the zones it serves."""

    name: str | None = None
    api_token_env: str | None = None
    api_token_file: str | None = None
    # None: every zone the token can list (needs Zone:Read); a name alone needs Zone:Read to find its id.
    zones: list[ZoneRef] | None = None

    @field_validator("zones", mode="before")
    @classmethod
    def _zone_refs(cls, value: object) -> object:
        if isinstance(value, list):
            return [{"name": v} if isinstance(v, str) else v for v in value]
        return value

    @field_validator("name")
    @classmethod
    def _label(cls, value: str | None) -> str | None:
        if value is not None and not _LABEL.match(value):
            raise ValueError(f"{value!r}: use letters, digits, '.', '_' or '-'")
        return value

    @model_validator(mode="after")
    def _one_token_source(self) -> "CloudflareAccountConfig":
        if bool(self.api_token_env) == bool(self.api_token_file):
            raise ValueError("give exactly one of api_token_env or api_token_file")
        if self.zones is not None and not self.zones:
            raise ValueError("zones = [] serves nothing: list the zones, or leave `zones` out to use "
                             "every zone the token can list")
        return self

    @property
    def label(self) -> str:
        return self.name or self.api_token_env or str(self.api_token_file)

    @property
    def source(self) -> str:
        return token_source(self.api_token_env, self.api_token_file)


class CloudflareConfig(Section):
    api_token_env: str | None = None
    api_token_file: str | None = None
    # Optional token with Zone:Read on all zones, for tokens whose DNS:Edit scope hides zones.
    zone_token_env: str | None = None
    zone_token_file: str | None = None
    base_url: str | None = None
    max_retries: Annotated[int, Field(ge=0, le=10)] = 4
    timeout: Annotated[float, Field(gt=0)] = 30.0
    accounts: Annotated[list[CloudflareAccountConfig], Field(max_length=50)] = []

    @model_validator(mode="after")
    def _one_token_source(self) -> "CloudflareConfig":
        if self.api_token_env and self.api_token_file:
            raise ValueError("set api_token_env or api_token_file, not both")
        if self.zone_token_env and self.zone_token_file:
            raise ValueError("set zone_token_env or zone_token_file, not both")
        labels = [a.label for a in self.accounts] + ([DEFAULT_ACCOUNT] if self.accounts and self.has_default_token
                                                     else [])
        duplicates = sorted({n for n in labels if labels.count(n) > 1})
        if duplicates:
            raise ValueError(f"accounts: names must be unique (give each a `name`): {', '.join(duplicates)}")
        problem = zone_claim_conflict(self.accounts)
        if problem:
            raise ValueError(problem)
        return self

    @property
    def has_default_token(self) -> bool:
        """Whether the top-level token is an account: always without [[cloudflare.accounts]]
        (today's single-token form, CLOUDFLARE_API_TOKEN by default), else only when set."""
        return not self.accounts or bool(self.api_token_env or self.api_token_file)

    def discovering_accounts(self) -> int:
        """How many accounts serve "every zone the token can list": a zone two of them both list
        is a conflict that only Cloudflare's answers reveal."""
        if not self.accounts:
            return 0
        return sum(a.zones is None for a in self.accounts) + int(self.has_default_token)

    def secret_env_names(self) -> tuple[str, ...]:
        """Env vars holding tokens: removed from hook environments."""
        names = {self.token_env, self.zone_token_env} | {a.api_token_env for a in self.accounts}
        return tuple(sorted(n for n in names if n))

    @property
    def token_env(self) -> str:
        """Env var consulted when no source is configured: the SDK's own default name."""
        return self.api_token_env or DEFAULT_TOKEN_ENV

    @property
    def token_source(self) -> str:
        return token_source(self.api_token_env, self.api_token_file)


def zone_claim_conflict(accounts: list[CloudflareAccountConfig]) -> str | None:
    """Two accounts listing one zone (by name or id): the message naming both, else None."""
    seen: dict[str, CloudflareAccountConfig] = {}
    for account in accounts:
        for ref in account.zones or []:
            for key in (f"zone {ref.name}", f"zone id {ref.id}" if ref.id else None):
                if key is None:
                    continue
                other = seen.setdefault(key, account)
                if other is not account:
                    return (f"{key} is claimed by two accounts: {other.label!r} (token in {other.source}) "
                            f"and {account.label!r} (token in {account.source}); a zone has one token: "
                            "list it under one account only")
    return None
