"""A certd config that points at the sandbox world (tests and `certd demo`)."""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Union

if TYPE_CHECKING:  # annotations only: benchmarks build configs without starting a sandbox
    from certd.sandbox.pebble import PebbleServer
    from certd.sandbox.world import SandboxWorld

TOKEN_ENV = "CERTD_SANDBOX_CF_TOKEN"

TomlValue = Union[str, Path, bool, int, float, Sequence["TomlValue"], Mapping[str, "TomlValue"]]


def toml_str(value: str | Path) -> str:
    """A TOML basic string (JSON string syntax is valid TOML for these values)."""
    return json.dumps(str(value))


def sandbox_config_toml(world: SandboxWorld, pebble: PebbleServer, state_dir: str | Path,
                        certificates: str, *, extra: str = "") -> str:
    """`certificates` and `extra` are TOML snippets appended as given.

    The API token is read from the env var TOKEN_ENV, as in production; set it
    to `world.token` in the process that runs certd.
    """
    return f"""\
state_dir = {toml_str(state_dir)}

[acme]
directory = {toml_str(pebble.directory_url)}
ca_bundle = {toml_str(pebble.https_ca_path)}
email = "admin@example.com"

[cloudflare]
api_token_env = "{TOKEN_ENV}"
base_url = {toml_str(world.emulator.base_url)}

[dns]
nameservers = [{toml_str(world.dns_addr)}]
propagation_timeout = 20

{extra}

{certificates}
"""


def certificate_toml(name: str, domains: list[str], *, target_dir: str | Path | None = None,
                     kinds: tuple[str, ...] = ("fullchain", "privkey", "cert", "chain"),
                     hooks: tuple[str, ...] | list[str] = (), extra: str = "") -> str:
    """One `[[certificates]]` table; with `target_dir`, one target writing `kinds` as KIND.pem there."""
    lines = ["[[certificates]]", f"name = {toml_str(name)}",
             "domains = [" + ", ".join(toml_str(d) for d in domains) + "]"]
    if hooks:
        lines.append("deploy_hooks = [" + ", ".join(toml_str(h) for h in hooks) + "]")
    if extra:
        lines.append(extra)
    if target_dir is not None:
        lines.append("[[certificates.targets]]")
        lines += [f"{kind} = {toml_str(Path(target_dir) / f'{kind}.pem')}" for kind in kinds]
    return "\n".join(lines) + "\n"


def toml_value(value: TomlValue) -> str:
    """An inline TOML value: strings and paths quoted, lists as arrays, mappings as inline tables."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return repr(value)
    if isinstance(value, (str, Path)):
        return toml_str(value)
    if isinstance(value, Mapping):
        return "{ " + ", ".join(f"{key} = {toml_value(item)}" for key, item in value.items()) + " }"
    return "[" + ", ".join(toml_value(item) for item in value) + "]"


def ocpp_listener(name: str, host: str, *, certificates: Sequence[str] = (), port: int = 0,
                  bind: Sequence[str] = ("127.0.0.1",), **options: TomlValue) -> dict[str, TomlValue]:
    """One OCPP listener's keys, on loopback and any free port unless told otherwise.

    A plain dict so that the same listener can be validated directly (tests building a
    Config) or written as TOML by `ocpp_toml`; `options` are further listener keys
    (tls_profile, paths, cert_files, insecure, ...).
    """
    listener: dict[str, TomlValue] = {"name": name, "host": host, "bind": list(bind), "port": port}
    if certificates:
        listener["certificates"] = list(certificates)
    listener.update(options)
    return listener


def ocpp_toml(listeners: Sequence[Mapping[str, TomlValue]], **settings: TomlValue) -> str:
    """An `[ocpp]` section with `settings`, then one `[[ocpp.listeners]]` table per listener.

    The listener tables come last, so whatever follows must open a table of its own.
    """
    lines = ["[ocpp]"] + [f"{key} = {toml_value(value)}" for key, value in settings.items()]
    for listener in listeners:
        lines += ["", "[[ocpp.listeners]]"]
        lines += [f"{key} = {toml_value(value)}" for key, value in listener.items()]
    return "\n".join(lines) + "\n"
