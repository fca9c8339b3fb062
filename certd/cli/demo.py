"""`certd demo`: the whole path offline — Cloudflare emulator, DNS server, Pebble, issue, deploy."""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path


def register(subparsers: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    parser = subparsers.add_parser(
        "demo", help="issue and deploy a certificate against a local Pebble + Cloudflare emulator")
    parser.add_argument("--dir", metavar="DIR", help="where to put config, state and files (default: a new temp dir)")
    parser.add_argument("--domain", action="append", metavar="NAME",
                        help="names to certify (default: local.example.com and *.example.com)")
    parser.set_defaults(func=_demo, default_log_level="warning")


def _demo(args: argparse.Namespace) -> int:
    import os

    from certd.renewal import pipeline
    from certd.cli.status import collect, render_table
    from certd.config import load_config
    from certd.dns.challenges import cleanup_leftover_records
    from certd.dns.registry import open_dns
    from certd.sandbox import SandboxWorld
    from certd.sandbox.certd_config import TOKEN_ENV, certificate_toml, sandbox_config_toml, toml_str
    from certd.store.db import make_engine, upgrade

    base = Path(args.dir or tempfile.mkdtemp(prefix="certd-demo-")).resolve()
    base.mkdir(parents=True, exist_ok=True)
    domains = args.domain or ["local.example.com", "*.example.com"]
    target = base / "ssl"
    certificates = certificate_toml("demo", domains, target_dir=target, kinds=("fullchain", "privkey"))
    print("starting Cloudflare API emulator, authoritative DNS server and Pebble on 127.0.0.1 ...")
    with SandboxWorld(with_pebble=True) as world:
        assert world.pebble is not None
        config_path = base / "certd.toml"
        roots = base / "pebble-roots.pem"  # Pebble makes a new root at every start
        roots.write_text("".join(world.pebble.roots()))
        fleet = (f"[trust.anchor_sets]\ndefault = {toml_str(roots)}\n\n"
                 '[[trust.bundles]]\nname = "demo"\ncertificates = ["demo"]\n')
        config_path.write_text(sandbox_config_toml(world, world.pebble, base / "state", certificates,
                                                   extra=fleet))
        os.environ[TOKEN_ENV] = world.token
        config = load_config(config_path)
        upgrade(config.db_url)
        engine = make_engine(config.db_url)
        dns = open_dns(config)
        cleanup_leftover_records(dns, engine, "certd demo")
        print(f"ACME directory {world.pebble.directory_url}, Cloudflare API {world.emulator.base_url}, "
              f"DNS {world.dns_addr}")
        result = pipeline.issue_and_deploy(config, engine, "demo", dns=dns)
        print()
        print(render_table(collect(config, engine)))
        print()
        print(f"issued by {result.issued.issuer} after a real DNS-01 validation; files:")
        for path in result.deploy.written:
            print(f"  {path}")
        print(f"fleet CA bundle: certd --config {config_path} bundle show demo")
        remaining = [r for r in world.emulator.records() if r["type"] == "TXT"]
        print(f"challenge TXT records left in the zone: {len(remaining)}")
        print(f"config used: {config_path}")
    return 0
