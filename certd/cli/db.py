"""`certd db upgrade`: bring the schema to the newest revision."""

from __future__ import annotations

import argparse

from certd.cli import context


def register(subparsers: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    parser = subparsers.add_parser("db", help="database maintenance")
    db_sub = parser.add_subparsers(dest="db_command", metavar="ACTION")
    db_sub.required = True
    up = db_sub.add_parser("upgrade", help="apply pending schema migrations")
    up.set_defaults(func=_upgrade)


def _upgrade(args: argparse.Namespace) -> int:
    from certd.store.db import current_revision, make_engine, upgrade

    config = context.load(args)
    upgrade(config.db_url)
    print(f"database schema at {current_revision(make_engine(config.db_url))}")
    return 0
