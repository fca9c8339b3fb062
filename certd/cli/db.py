"""`certd db`: schema upgrades and the private keys' encryption at rest.

    certd db upgrade                       # apply pending schema migrations
    certd db encrypt                       # every private key under the configured store key
    certd db rotate-key --new-key-file F   # every private key under the key in F
    certd db rotate-key --new-charger-ca-kek-file K   # a charger CA key with a KEK of its own

Both re-encrypt every private key in the store in one transaction: the EncryptedText
columns (certd.store.rekey) and the charger CA keys (certd.chargerca.rekey).
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
                    "in one transaction (nothing changes on error): issued certificates' keys, the "
                    "ACME account key and the charger CA key sealed under the store key. A charger "
                    "CA key under a key-encryption key of its own ([ocpp.charger_ca] "
                    "key_encryption_key_*) is re-sealed under --new-charger-ca-kek-* in the same "
                    "transaction. Then make the new keys the configured ones on every node (see "
                    "README, Keys at rest).")
    source = rotate.add_mutually_exclusive_group()
    source.add_argument("--new-key-file", metavar="PATH", help="owner-only file with the new store key")
    source.add_argument("--new-key-env", metavar="NAME", help="environment variable with the new store key")
    kek = rotate.add_mutually_exclusive_group()
    kek.add_argument("--new-charger-ca-kek-file", metavar="PATH",
                     help="owner-only file with the charger CA's new key-encryption key")
    kek.add_argument("--new-charger-ca-kek-env", metavar="NAME",
                     help="environment variable with the charger CA's new key-encryption key")
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
    from certd.chargerca import keystore
    from certd.chargerca.rekey import KekChange
    from certd.config.store import StoreConfig
    from certd.errors import CertdError
    from certd.store.crypto import StoreKeyError, load_keyring
    from certd.store.sealing import policy_of

    wants_kek = bool(args.new_charger_ca_kek_file or args.new_charger_ca_kek_env)
    if not (args.new_key_file or args.new_key_env or wants_kek):
        raise CertdError("give the new store key (--new-key-file or --new-key-env), the charger CA's new "
                         "key-encryption key (--new-charger-ca-kek-file or --new-charger-ca-kek-env), or both")
    config = context.load(args)
    engine = context.open_store(config)
    new = None
    if args.new_key_file or args.new_key_env:
        new_store = (StoreConfig(key_file=args.new_key_file, key_env=None) if args.new_key_file
                     else StoreConfig(key_env=args.new_key_env))
        new = load_keyring(new_store)
        if new is None:
            raise StoreKeyError(f"--new-key-env: environment variable {args.new_key_env} is empty")
    kek = None
    if wants_kek:
        option = ("--new-charger-ca-kek-file" if args.new_charger_ca_kek_file else
                  f"--new-charger-ca-kek-env (environment variable {args.new_charger_ca_kek_env})")
        new_kek = keystore.read_kek(env=args.new_charger_ca_kek_env, file=args.new_charger_ca_kek_file,
                                    what=option)
        settings = config.ocpp.charger_ca
        own = keystore.has_own_kek(settings)
        kek = KekChange(keystore.key_encryption_key(settings) if own and settings else None,
                        keystore.kek_setting(settings) if own and settings else None, new_kek)
    return _reseal(engine, policy_of(engine).keyring, new, kek)


def _reseal(engine, reader, writer, kek=None) -> int:  # type: ignore[no-untyped-def]
    from certd.chargerca.rekey import reseal_ca_keys
    from certd.store.rekey import reseal, sealed_columns

    with engine.begin() as conn:  # one transaction: every key, or none
        lines = reseal(conn, sealed_columns(), reader, writer).lines() if writer is not None else []
        lines += reseal_ca_keys(conn, reader, writer, kek).lines()
    for line in lines:
        print(line)
    if writer is not None:
        print(f"private keys are now encrypted under store key {writer.primary_id}")
    if kek is not None:
        print("charger CA keys with a key-encryption key of their own are now sealed under the new one: "
              "make it [ocpp.charger_ca] key_encryption_key_* on every node")
    return 0
