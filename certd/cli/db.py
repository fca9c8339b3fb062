"""`certd db`: schema upgrades and the private keys' encryption at rest.

    certd db upgrade                       # apply pending schema migrations
    certd db encrypt                       # every private key under the configured store key
    certd db rotate-key --new-key-file F   # every private key under the key in F
"""

from __future__ import annotations

import argparse

from certd.cli import context


def register(subparsers: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    parser = subparsers.add_parser("db", help="database maintenance")
    db_sub = parser.add_subparsers(dest="db_command", metavar="ACTION")
    db_sub.required = True
    up = db_sub.add_parser("upgrade", help="apply pending schema migrations")
    up.set_defaults(func=_upgrade)
    encrypt = db_sub.add_parser(
        "encrypt", help="encrypt every private key in the store under the configured store key",
        description="Private keys stored before a key was configured (or under an older key "
                    "still listed after the first one) are encrypted under the first key of "
                    "[store] key_file / key_env. One transaction: nothing changes on error.")
    encrypt.set_defaults(func=_encrypt)
    rotate = db_sub.add_parser(
        "rotate-key", help="re-encrypt every private key in the store under a new key",
        description="Decrypts with the configured store key(s) and encrypts under the new key, "
                    "in one transaction (nothing changes on error). Then make the new key the "
                    "configured one on every node (see README, Keys at rest).")
    source = rotate.add_mutually_exclusive_group(required=True)
    source.add_argument("--new-key-file", metavar="PATH", help="owner-only file with the new key")
    source.add_argument("--new-key-env", metavar="NAME", help="environment variable with the new key")
    rotate.set_defaults(func=_rotate)


def _upgrade(args: argparse.Namespace) -> int:
    from certd.store.db import current_revision, make_engine, upgrade

    config = context.load(args)
    upgrade(config.db_url, store=config.store)
    print(f"database schema at {current_revision(make_engine(config.db_url, config.store))}")
    return 0


def _encrypt(args: argparse.Namespace) -> int:
    from certd.store.crypto import StoreKeyError
    from certd.store.sealing import HOW_TO_SET, policy_of

    config = context.load(args)
    engine = context.open_store(config)
    keyring = policy_of(engine).keyring
    if keyring is None:
        raise StoreKeyError(f"no store key is configured ({config.store.key_setting()}); {HOW_TO_SET}")
    return _reseal(engine, keyring, keyring)


def _rotate(args: argparse.Namespace) -> int:
    from certd.config.store import StoreConfig
    from certd.store.crypto import load_keyring
    from certd.store.sealing import policy_of

    config = context.load(args)
    engine = context.open_store(config)
    new_store = (StoreConfig(key_file=args.new_key_file, key_env=None) if args.new_key_file
                 else StoreConfig(key_env=args.new_key_env))
    new = load_keyring(new_store)
    if new is None:
        from certd.store.crypto import StoreKeyError

        raise StoreKeyError(f"--new-key-env: environment variable {args.new_key_env} is empty")
    return _reseal(engine, policy_of(engine).keyring, new)


def _reseal(engine, reader, writer) -> int:  # type: ignore[no-untyped-def]
    from certd.store.rekey import reseal, sealed_columns

    with engine.begin() as conn:
        report = reseal(conn, sealed_columns(), reader, writer)
    for line in report.lines():
        print(line)
    print(f"private keys are now encrypted under store key {writer.primary_id}")
    return 0
