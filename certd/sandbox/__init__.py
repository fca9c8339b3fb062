"""The offline test world: a Cloudflare API emulator, an authoritative DNS server and a Pebble launcher.

Nothing here is used in production. Tests and `certd demo` point certd at it
instead of api.cloudflare.com, the public DNS and Let's Encrypt; Pebble really
validates DNS-01 against the sandbox DNS server.

    from certd.sandbox import SandboxWorld
    with SandboxWorld(with_pebble=True) as world:
        world.base_url, world.token, world.dns_addr, world.pebble.directory_url
"""

from certd.sandbox.cloudflare_api import PERMISSIONS, ApiRequest, CloudflareEmulator
from certd.sandbox.dns_server import EDGE_IPV4, EDGE_IPV6, SandboxDNSServer
from certd.sandbox.pebble import PebbleError, PebbleNotFoundError, PebbleServer, find_pebble
from certd.sandbox.world import SandboxWorld
from certd.sandbox.zones import ZoneStore

__all__ = [
    "ApiRequest", "CloudflareEmulator", "PERMISSIONS", "SandboxDNSServer", "EDGE_IPV4", "EDGE_IPV6",
    "PebbleServer", "PebbleError", "PebbleNotFoundError", "find_pebble", "SandboxWorld", "ZoneStore",
]
