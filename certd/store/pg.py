"""PostgreSQL connection settings that let several nodes notice a dead peer in seconds.

A node whose host vanished or whose network was cut sends no FIN: without
keepalives its connections (and the row locks of an open transaction) would look
alive for the kernel's two hours. libpq's keepalives and TCP user timeout make a
node give up on a dead server within about 10 s; the same settings for the
server's end of each session (`options`) make the server drop a dead node's
session, and with it its locks, as quickly. Settings given in the database URL win.
"""

from __future__ import annotations

from collections.abc import Mapping

# libpq connection parameters (https://www.postgresql.org/docs/current/libpq-connect.html).
CLIENT_KEEPALIVE = {
    "connect_timeout": 5,
    "keepalives": 1,
    "keepalives_idle": 5,
    "keepalives_interval": 2,
    "keepalives_count": 3,
    "tcp_user_timeout": 10_000,  # ms: unacknowledged data for this long closes the connection
}
# Server settings any user may set for their own session.
SERVER_KEEPALIVE = ("-c tcp_keepalives_idle=5 -c tcp_keepalives_interval=2 -c tcp_keepalives_count=3 "
                    "-c tcp_user_timeout=10000")


def keepalive_args(given: Mapping[str, object]) -> dict[str, object]:
    """The parameters to add to a connection whose URL/DSN already sets `given`."""
    extra: dict[str, object] = {k: v for k, v in CLIENT_KEEPALIVE.items() if k not in given}
    if "options" not in given:
        extra["options"] = SERVER_KEEPALIVE
    return extra
