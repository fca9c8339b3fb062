"""`certd check-config`: validate the file and everything it points at, change nothing.

It runs the same checks the commands that use each part run at their start (so a
config it calls OK does not fail later at `certd run`): every secret readable and
owner-only, every cross-reference between sections known, every file it names present.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from certd.cli import context
from certd.errors import ConfigError


def register(subparsers: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    parser = subparsers.add_parser("check-config", help="validate the config file, its secrets and references")
    parser.set_defaults(func=_check)


def _check(args: argparse.Namespace) -> int:
    from certd.config.ocpp import listener_certificate_errors
    from certd.dns.registry import open_dns
    from certd.secrets import read_secret
    from certd.rollover.gate_store import gate_specs
    from certd.trust.track import covered_names

    config = context.load(args)
    dns = open_dns(config)  # a registered [dns] provider whose secrets are readable (cloudflare: its tokens)
    if config.dns.provider == "cloudflare" and config.cloudflare.discovering_accounts() > 1:
        dns.accounts()  # ConfigError naming both tokens when two of them list one zone
    if config.acme.eab:
        read_secret(env=config.acme.eab.hmac_key_env, file=config.acme.eab.hmac_key_file,
                    what="ACME EAB HMAC key")
    for registry in config.trust.registries:
        for source in registry.secret_sources():
            read_secret(env=source.env, file=source.file, what=source.what)
    errors = listener_certificate_errors(config.ocpp, [c.name for c in config.certificates])
    for index, registry in enumerate(config.trust.registries):
        for key, path in registry.files().items():
            if not Path(path).is_file():
                errors.append(f"trust.registries[{index}].{key}: {path} does not exist")
    if config.mqtt.active:
        for key, path in config.mqtt.files().items():
            if not Path(path).is_file():
                errors.append(f"mqtt.{key}: {path} does not exist")
        if config.mqtt.password_env or config.mqtt.password_file:
            read_secret(env=config.mqtt.password_env, file=config.mqtt.password_file,
                        what="MQTT password (mqtt.password_env or mqtt.password_file)")
    for index, root in enumerate(config.ocpp.trust_roots):
        if not Path(root).exists():
            errors.append(f"ocpp.trust_roots[{index}]: {root} does not exist")
    if errors:
        raise ConfigError("; ".join(errors))
    for bundle in config.trust.bundles:
        covered_names(config, bundle)  # ConfigError with the key path of an unknown name
    gate_specs(config)  # ConfigError for rollover overrides naming unknown listeners or bundles

    print(f"config OK: {len(config.certificates)} certificate(s), database {config.db_url.split('://')[0]}")
    for cert in config.certificates:
        print(f"  {cert.name}: {', '.join(cert.domains)} ({cert.key_type}, {len(cert.targets)} target(s))")
    for listener in config.ocpp.listeners:
        print(f"  OCPP listener {listener.label}: port {listener.port}, {', '.join(listener.certificates)}")
    for registry in config.trust.registries:
        print(f"  fleet registry {registry.name}: secrets readable")
    return 0
