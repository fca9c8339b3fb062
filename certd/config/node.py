"""The `[node]` section: who this certd process is among the nodes sharing one store.

On SQLite there is one node and nothing here matters. On PostgreSQL several
`certd run` processes (on several hosts, or several worker processes of one box)
share the store; each needs a name of its own: it keys the node's deploy state
(which issuance its files and listeners carry), the chargers it holds and the
work it has leased, and `certd nodes` lists nodes by it.
"""

from __future__ import annotations

import os
import re
import socket
from typing import TYPE_CHECKING, Annotated

from pydantic import Field, field_validator

from certd.config._base import Section

if TYPE_CHECKING:
    from certd.config import Config

# Overrides [node] name: a supervisor starting several worker processes names each one.
NODE_NAME_ENV = "CERTD_NODE_NAME"
_NODE_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._:/@-]{0,99}$")


class NodeConfig(Section):
    # Default: [ocpp] node_name if set, else the host name. Unique per node.
    name: str | None = None
    # How operators reach this node (host:port of its HTTP or OCPP endpoint): shown by `certd nodes`.
    address: str | None = None
    # Seconds without a heartbeat after which the other nodes call a node gone and mark the
    # chargers it held offline.
    gone_after: Annotated[float, Field(ge=5, le=3600)] = 30.0
    # Seconds between the node's safety-net comparisons of the store with what it deployed and
    # serves. Notifications bring every change at once; this only catches ones lost while the
    # node's listening connection was down (it also compares after every reconnection).
    resync_interval: Annotated[float, Field(ge=1, le=86400)] = 30.0

    @field_validator("name")
    @classmethod
    def _valid_name(cls, value: str | None) -> str | None:
        if value is not None and not _NODE_NAME.match(value):
            raise ValueError(f"{value!r}: use letters, digits and . _ : / @ - (max 100)")
        return value


def node_name(config: Config) -> str:
    """This process's node name: $CERTD_NODE_NAME, [node] name, [ocpp] node_name, the host name."""
    return (os.environ.get(NODE_NAME_ENV) or config.node.name or config.ocpp.node_name
            or socket.gethostname())
