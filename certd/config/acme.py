"""The `[acme]` section: which CA, which account, which profile and chain."""

from typing import Annotated, Literal

from pydantic import Field, field_validator

from certd.config._base import Section

DIRECTORY_ALIASES = {
    "production": "https://acme-v02.api.letsencrypt.org/directory",
    "letsencrypt": "https://acme-v02.api.letsencrypt.org/directory",
    "staging": "https://acme-staging-v02.api.letsencrypt.org/directory",
}


class EabConfig(Section):
    """External account binding (ZeroSSL, Google, some private CAs)."""

    kid: str
    hmac_key_env: str | None = None
    hmac_key_file: str | None = None


class AcmeConfig(Section):
    directory: str = "production"
    email: str | None = None
    # classic keeps the subject CN; OCPP chargers check it (Security Whitepaper A00.FR.308).
    profile: str | None = "classic"
    preferred_chain: str | None = None
    eab: EabConfig | None = None
    ca_bundle: str | None = None
    # Give up on one order (authorizations + finalize) after this many seconds.
    order_timeout: Annotated[float, Field(gt=0)] = 120.0

    @field_validator("directory")
    @classmethod
    def _known_alias_or_url(cls, value: str) -> str:
        if value in DIRECTORY_ALIASES:
            return value
        if not value.startswith(("https://", "http://")):
            raise ValueError(
                f"must be a URL or one of {', '.join(sorted(DIRECTORY_ALIASES))}, got {value!r}"
            )
        return value

    @property
    def directory_url(self) -> str:
        return DIRECTORY_ALIASES.get(self.directory, self.directory)

    @field_validator("profile")
    @classmethod
    def _profile_name(cls, value: str | None) -> str | None:
        return value or None


KeyType = Literal["rsa2048", "rsa3072", "rsa4096", "ec-p256"]
