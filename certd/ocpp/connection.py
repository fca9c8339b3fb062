"""The websockets connection class certd's listeners use, and websockets' logger for them.

Moved out of server.py: a connection that carries its admission and trims asyncio's
TLS read buffer, and the logger whose records never show a password or what a charger
wrote in a frame (websockets logs request headers, close reasons and frames at DEBUG).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from websockets.asyncio.server import ServerConnection
from websockets.frames import Frame, Opcode

from certd.ocpp import logsafe

if TYPE_CHECKING:
    from certd.ocpp.server import Admitted

# asyncio allocates a 256 KiB TLS read buffer per connection; OCPP frames are small and a TLS
# record is at most 16 KiB, so after the handshake one record's worth is enough.
TLS_READ_BUFFER = 16 * 1024 + 512


def _shrink_tls_read_buffer(transport: Any) -> None:
    """Swap asyncio's per-connection 256 KiB TLS read buffer for a 16.5 KiB one.

    Uses private attributes of asyncio.sslproto.SSLProtocol (3.11+); if they are
    absent (another loop implementation), nothing changes.
    """
    protocol = getattr(transport, "_ssl_protocol", None)
    if protocol is None or not hasattr(protocol, "_ssl_buffer"):
        return
    if len(protocol._ssl_buffer) <= TLS_READ_BUFFER:
        return
    protocol.max_size = TLS_READ_BUFFER
    protocol._ssl_buffer = bytearray(TLS_READ_BUFFER)
    protocol._ssl_buffer_view = memoryview(protocol._ssl_buffer)


class OcppConnection(ServerConnection):
    """A websockets connection that carries its admission and uses a small TLS buffer."""

    admitted: "Admitted | None" = None
    offered_subprotocols: Sequence[str] = ()

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # Called by asyncio once the TLS handshake is complete.
        super().connection_made(transport)
        _shrink_tls_read_buffer(transport)


class _RedactCredentials(logging.Filter):
    """websockets logs every request header at DEBUG; a Basic-auth header carries the password."""

    def filter(self, record: logging.LogRecord) -> bool:
        args = record.args
        if (isinstance(args, tuple) and len(args) == 2 and isinstance(args[0], str)
                and args[0].lower() in ("authorization", "proxy-authorization")):
            record.args = (args[0], "[redacted]")
        return True


class _FrameSizesOnly(logging.Filter):
    """websockets logs each frame at DEBUG with the start and end of its data: keep the
    type and size of data frames, not what the charger wrote in them."""

    DATA = (Opcode.TEXT, Opcode.BINARY, Opcode.CONT)

    def filter(self, record: logging.LogRecord) -> bool:
        args = record.args
        if (record.msg in ("< %s", "> %s") and isinstance(args, tuple) and len(args) == 1
                and isinstance(args[0], Frame) and args[0].opcode in self.DATA):
            frame = args[0]
            record.args = (f"{frame.opcode.name} [{len(frame.data)} bytes]",)
        return True


# websockets' own logger for our listeners, so `-vv` can never print a charger's password.
# The redaction runs first, whenever logsafe's escaping filter (it formats the record) was added.
ws_log = logging.getLogger("certd.ocpp.websockets")
ws_log.filters[:0] = [_RedactCredentials(), _FrameSizesOnly()]
logsafe.install()


def peer_address(connection: ServerConnection) -> str | None:
    try:
        peer = connection.remote_address
    except Exception:
        return None
    return str(peer[0]) if peer else None
