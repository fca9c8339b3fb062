"""`certd check-config`: validate the file and the secrets it points at, change nothing."""

from __future__ import annotations

import argparse

from certd.cli import context


def register(subparsers: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    parser = subparsers.add_parser("check-config", help="validate the config file and secrets")
    parser.set_defaults(func=_check)


def _check(args: argparse.Namespace) -> int:
    from certd.secrets import read_secret

    config = context.load(args)
    cf = config.cloudflare
    read_secret(env=cf.token_env, file=cf.api_token_file, what="Cloudflare API token")
    read_secret(env=cf.zone_token_env, file=cf.zone_token_file,
                what="Cloudflare zone-read token", required=False)
    print(f"config OK: {len(config.certificates)} certificate(s), database {config.db_url.split('://')[0]}")
    for cert in config.certificates:
        print(f"  {cert.name}: {', '.join(cert.domains)} ({cert.key_type}, {len(cert.targets)} target(s))")
    return 0
