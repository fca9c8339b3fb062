"""The DNS providers certd knows (`[dns] provider`), and the one way to open the configured one.

A provider is a factory taking the loaded `Config`. Adding one: implement
`certd.dns.provider.DnsProvider` in its own module and add a line to `PROVIDERS`.
Factories import their module on call, so only the configured provider's SDK loads.
The name is checked here rather than in the config model: certd.config comes
before certd.dns in the layering (certd.dns reads config sections), so a config
validator may not import this registry.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

from certd.errors import ConfigError

if TYPE_CHECKING:
    from certd.config import Config
    from certd.dns.provider import DnsProvider

ProviderFactory = Callable[["Config"], "DnsProvider"]


def _cloudflare(config: "Config") -> "DnsProvider":
    from certd.dns.accounts import open_cloudflare

    return open_cloudflare(config.cloudflare)


def _memory(config: "Config") -> "DnsProvider":
    from certd.dns.memory import for_config

    return for_config(config)


PROVIDERS: dict[str, ProviderFactory] = {
    "cloudflare": _cloudflare,
    "memory": _memory,
}


def provider_factory(name: str) -> ProviderFactory:
    """The factory registered as `name`; a ConfigError naming the key and the choices otherwise."""
    try:
        return PROVIDERS[name]
    except KeyError:
        raise ConfigError(f"dns.provider: unknown DNS provider {name!r} "
                          f"(registered: {', '.join(sorted(PROVIDERS))})") from None


def open_dns(config: "Config") -> "DnsProvider":
    """The provider `[dns] provider` names (default cloudflare), built from config (reads its secrets)."""
    return provider_factory(config.dns.provider)(config)
