"""The `[dns]` section: which DNS provider holds the records, and how certd checks that challenge
records are visible."""

from typing import Annotated

from pydantic import Field, field_validator

from certd.config._base import Section


def parse_host_port(value: str, default_port: int = 53) -> tuple[str, int]:
    """'1.2.3.4', '1.2.3.4:5353', '[::1]:53' -> (host, port)."""
    if value.startswith("["):
        host, _, rest = value[1:].partition("]")
        port = int(rest[1:]) if rest.startswith(":") else default_port
        return host, port
    if value.count(":") == 1:
        host, port = value.split(":")
        return host, int(port)
    return value, default_port


class DnsConfig(Section):
    # Which registered DNS provider (certd.dns.registry.PROVIDERS) creates the records;
    # an unknown name fails where the provider is opened (check-config, issue, run, ...).
    provider: Annotated[str, Field(min_length=1)] = "cloudflare"
    # Query these servers instead of the zone's own NS records (host or host:port).
    nameservers: list[str] = []
    propagation_timeout: Annotated[float, Field(gt=0)] = 120.0
    # Extra time given to the CA's resolvers after our own check passed (0 = none).
    propagation_grace: Annotated[float, Field(ge=0)] = 0.0

    @field_validator("nameservers")
    @classmethod
    def _valid_addresses(cls, values: list[str]) -> list[str]:
        import ipaddress

        for value in values:
            try:
                host, port = parse_host_port(value)
                ipaddress.ip_address(host)
            except ValueError as exc:
                raise ValueError(f"{value!r} is not an IP address with optional :port") from exc
            if not 0 < port < 65536:
                raise ValueError(f"{value!r}: port out of range")
        return values
