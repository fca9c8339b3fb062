"""The whole offline world in one object: Cloudflare emulator + DNS server (+ Pebble).

Used by the test fixtures and by `certd demo`. The token it creates can see
and edit every zone; make narrower ones with `world.emulator.add_token(...)`.
"""

from __future__ import annotations

import secrets
from collections.abc import Iterable, Mapping
from typing import Any

from certd.sandbox.cloudflare_api import CloudflareEmulator
from certd.sandbox.dns_server import SandboxDNSServer
from certd.sandbox.pebble import PebbleServer
from certd.sandbox.zones import ZoneStore

__all__ = ["SandboxWorld", "DEFAULT_ZONES"]

DEFAULT_ZONES = ("example.com", "example.net")


def _token() -> str:
    """40 characters from Cloudflare's token alphabet, like a real API token."""
    alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789_-"
    return "".join(secrets.choice(alphabet) for _ in range(40))


class SandboxWorld:
    """Start with `start()` or `with SandboxWorld() as world:`; everything listens on 127.0.0.1."""

    def __init__(self, zones: Iterable[str] = DEFAULT_ZONES, *, with_pebble: bool = False,
                 pebble_options: Mapping[str, Any] | None = None) -> None:
        self.store = ZoneStore()
        self.emulator = CloudflareEmulator(self.store)
        self.dns = SandboxDNSServer(self.store)
        self.token = _token()
        self.zone_ids: dict[str, str] = {}
        self._zones = tuple(zones)
        self._with_pebble = with_pebble
        self._pebble_options = dict(pebble_options or {})
        self.pebble: PebbleServer | None = None

    def start(self) -> SandboxWorld:
        try:
            self.emulator.start()
            self.dns.start()
            for name in self._zones:
                if self.store.zone_by_name(name) is None:
                    self.zone_ids[name] = self.emulator.add_zone(name)
            self.emulator.add_token(self.token)
            if self._with_pebble:
                self.pebble = PebbleServer(self.dns_addr, **self._pebble_options).start()
        except BaseException:
            self.stop()
            raise
        return self

    def stop(self) -> None:
        if self.pebble is not None:
            self.pebble.stop()
            self.pebble = None
        self.dns.stop()
        self.emulator.stop()

    def __enter__(self) -> SandboxWorld:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    @property
    def dns_addr(self) -> str:
        """"127.0.0.1:PORT" of the authoritative DNS server (Pebble's -dnsserver)."""
        return self.dns.address

    @property
    def dns_port(self) -> int:
        return self.dns.port

    @property
    def base_url(self) -> str:
        """The Cloudflare API base URL (SDK `base_url`, CLOUDFLARE_BASE_URL)."""
        return self.emulator.base_url
