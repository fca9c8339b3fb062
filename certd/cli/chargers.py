"""`certd chargers list|add|remove|set-password|approve|enable|disable`: the charger registry.
(`certs|renew-cert|revoke-cert|cert-kit`, the client certificates: certd/cli/charger_certs.py.)

Passwords are stored as argon2id hashes. A generated password is printed once
and never again; certd cannot show it later.
"""

from __future__ import annotations

import argparse
import sys

from certd.cli import context
from certd.errors import CertdError


def register(subparsers: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    parser = subparsers.add_parser("chargers", help="the OCPP charger registry")
    sub = parser.add_subparsers(dest="chargers_command", metavar="ACTION")
    sub.required = True

    lst = sub.add_parser("list", help="registered chargers, their state and what they reported")
    lst.set_defaults(func=_list)

    add = sub.add_parser("add", help="register a charger (prints a generated password once)")
    add.add_argument("charger_id", metavar="ID", help="charge point id, e.g. DE*BMW*0123456789")
    _password_options(add)
    add.add_argument("--class", dest="heartbeat_class", metavar="CLASS",
                     help="heartbeat class from [ocpp] heartbeat_classes (default: default_heartbeat_class)")
    add.add_argument("--disabled", action="store_true", help="register it but refuse its connections")
    add.set_defaults(func=_add)

    rm = sub.add_parser("remove", help="delete a charger from the registry")
    rm.add_argument("charger_id", metavar="ID")
    rm.set_defaults(func=_remove)

    pw = sub.add_parser("set-password", help="set or generate a new password")
    pw.add_argument("charger_id", metavar="ID")
    _password_options(pw)
    pw.set_defaults(func=_set_password)

    for action, help_text in (("approve", "accept a charger auto-registered as pending"),
                              ("enable", "allow a charger's connections again"),
                              ("disable", "refuse a charger's connections")):
        cmd = sub.add_parser(action, help=help_text)
        cmd.add_argument("charger_id", metavar="ID")
        cmd.set_defaults(func=_set_flag, flag_action=action)

    from certd.cli.charger_certs import register_actions

    register_actions(sub)


def _password_options(parser: argparse.ArgumentParser) -> None:
    group = parser.add_mutually_exclusive_group()
    group.add_argument("--password", metavar="PW",
                       help="16-40 characters (visible in shell history: prefer --password-stdin)")
    group.add_argument("--password-stdin", action="store_true", help="read the password from stdin")


def _chosen_password(args: argparse.Namespace) -> tuple[str, bool]:
    """(password, generated?)"""
    from certd.ocpp.auth import PasswordPolicyError, check_password_policy, generate_password

    if args.password_stdin:
        password = sys.stdin.readline().rstrip("\r\n")
    elif args.password is not None:
        password = args.password
    else:
        return generate_password(), True
    try:
        check_password_policy(password)
    except PasswordPolicyError as exc:
        raise CertdError(str(exc)) from None
    return password, False


def _valid_id(charger_id: str) -> str:
    from certd.ocpp.ids import InvalidChargerId, validate_id

    try:
        return validate_id(charger_id)
    except InvalidChargerId as exc:
        raise CertdError(str(exc)) from None


def _print_password(charger_id: str, password: str) -> None:
    print(f"password for {charger_id} (shown only this once; set it as the charger's "
          f"AuthorizationKey / BasicAuthPassword):")
    print(password)


def _add(args: argparse.Namespace) -> int:
    from certd.ocpp import auth, charger_registry

    config = context.load(args)
    charger_id = _valid_id(args.charger_id)
    heartbeat_class = args.heartbeat_class or config.ocpp.default_heartbeat_class
    if heartbeat_class not in config.ocpp.heartbeat_classes:
        raise CertdError(f"--class {heartbeat_class!r} is not in [ocpp] heartbeat_classes "
                         f"({', '.join(sorted(config.ocpp.heartbeat_classes))})")
    password, generated = _chosen_password(args)
    engine = context.open_store(config)
    try:
        charger_registry.insert_charger(engine, charger_id, password_hash=auth.hash_password(password),
                                heartbeat_class=heartbeat_class, enabled=not args.disabled)
    except charger_registry.ChargerExists:
        raise CertdError(f"charger {charger_id} is already registered "
                         "(use `certd chargers set-password` to change its password)") from None
    print(f"added charger {charger_id} (heartbeat class {heartbeat_class}, "
          f"{config.ocpp.heartbeat_classes[heartbeat_class]} s)")
    if generated:
        _print_password(charger_id, password)
    return 0


def _remove(args: argparse.Namespace) -> int:
    from certd.ocpp import charger_registry

    engine = context.open_store(context.load(args))
    if not charger_registry.remove_charger(engine, args.charger_id):
        raise CertdError(f"no charger {args.charger_id!r} in the registry")
    print(f"removed charger {args.charger_id}")
    return 0


def _set_password(args: argparse.Namespace) -> int:
    from certd.ocpp import auth, charger_registry

    engine = context.open_store(context.load(args))
    password, generated = _chosen_password(args)
    if not charger_registry.set_password_hash(engine, args.charger_id, auth.hash_password(password)):
        raise CertdError(f"no charger {args.charger_id!r} in the registry")
    print(f"password of {args.charger_id} changed; its next connection must use the new one")
    if generated:
        _print_password(args.charger_id, password)
    return 0


def _set_flag(args: argparse.Namespace) -> int:
    from certd.ocpp import charger_registry

    engine = context.open_store(context.load(args))
    values = {"approve": {"registration": charger_registry.REGISTRATION_ACCEPTED},
              "enable": {"enabled": True}, "disable": {"enabled": False}}[args.flag_action]
    if not charger_registry.update_charger(engine, args.charger_id, **values):
        raise CertdError(f"no charger {args.charger_id!r} in the registry")
    print(f"charger {args.charger_id}: {args.flag_action}d")
    return 0


def _list(args: argparse.Namespace) -> int:
    from certd.ocpp import charger_registry

    engine = context.open_store(context.load(args))
    rows = charger_registry.list_chargers(engine)
    if not rows:
        print("no chargers registered")
        return 0
    header = ("ID", "STATE", "CLASS", "OCPP", "VENDOR/MODEL", "FIRMWARE", "LAST SEEN", "CONNECTED")
    table = [header]
    for row in rows:
        state = "disabled" if not row.enabled else row.registration
        if not row.password_hash:
            state += ",no-password"
        table.append((
            row.charger_id, state, row.heartbeat_class, row.ocpp_version or "-",
            "/".join(v for v in (row.vendor, row.model) if v) or "-",
            row.firmware_version or "-",
            f"{row.last_seen:%Y-%m-%d %H:%M:%S}" if row.last_seen else "never",
            f"yes ({row.connected_node})" if row.connected_node else "no",
        ))
    widths = [max(len(str(line[i])) for line in table) for i in range(len(header))]
    for line in table:
        print("  ".join(str(cell).ljust(width) for cell, width in zip(line, widths)).rstrip())
    return 0
