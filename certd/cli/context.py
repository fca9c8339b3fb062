"""What most commands need: the loaded config and an upgraded store."""

from __future__ import annotations

import argparse
from typing import TYPE_CHECKING

from certd.config import Config, load_config, resolve_config_path

if TYPE_CHECKING:
    import sqlalchemy as sa


def load(args: argparse.Namespace) -> Config:
    """The config; from here on this process's leases name its node (`[node] name`)."""
    from certd.config.node import node_name
    from certd.store import leases

    config = load_config(resolve_config_path(args.config))
    leases.name_this_node(node_name(config))
    return config


def open_store(config: Config, upgrade: bool = True) -> "sa.Engine":
    """The engine for config's DB, with the schema upgraded (certd upgrades on start)."""
    from certd.store.db import make_engine
    from certd.store.db import upgrade as upgrade_schema

    if upgrade:
        upgrade_schema(config.db_url, store=config.store)
    return make_engine(config.db_url, config.store)
