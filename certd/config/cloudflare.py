"""The `[cloudflare]` section: where the API token comes from, never the token itself."""

from typing import Annotated

from pydantic import Field, model_validator

from certd.config._base import Section


class CloudflareConfig(Section):
    api_token_env: str | None = None
    api_token_file: str | None = None
    # Optional token with Zone:Read on all zones, for tokens whose DNS:Edit scope hides zones.
    zone_token_env: str | None = None
    zone_token_file: str | None = None
    base_url: str | None = None
    max_retries: Annotated[int, Field(ge=0, le=10)] = 4
    timeout: Annotated[float, Field(gt=0)] = 30.0

    @model_validator(mode="after")
    def _one_token_source(self) -> "CloudflareConfig":
        if self.api_token_env and self.api_token_file:
            raise ValueError("set api_token_env or api_token_file, not both")
        if self.zone_token_env and self.zone_token_file:
            raise ValueError("set zone_token_env or zone_token_file, not both")
        return self

    def secret_env_names(self) -> tuple[str, ...]:
        """Env vars holding tokens: removed from hook environments."""
        return tuple(n for n in {self.token_env, self.zone_token_env} if n)

    @property
    def token_env(self) -> str:
        """Env var consulted when no source is configured: the SDK's own default name."""
        return self.api_token_env or "CLOUDFLARE_API_TOKEN"
