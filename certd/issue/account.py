"""The ACME account: one key and one registration per directory, kept in the store.

Losing the registration must not cost a new account: if a key is stored but the
registration is not, the account is looked up with onlyReturnExisting first.
"""

from __future__ import annotations

import logging
import threading

import josepy as jose
import requests
import sqlalchemy as sa
from acme import client as acme_client
from acme import errors as acme_errors
from acme import messages
from cryptography.hazmat.primitives.asymmetric import ec
from sqlmodel import select

from certd import __version__
from certd.issue.order import RateLimited, RateLimitedResponse, RetryAfterAwareNetwork, problem_message
from certd.config import Config
from certd.errors import IssuanceError
from certd.metrics import acme_action
from certd.issue.keys import key_to_pem, load_key
from certd.secrets import read_secret
from certd.store.db import session_scope
from certd.store.models import AcmeAccount
from certd.store.sealing import policy_of

log = logging.getLogger("certd.acme.account")
_registration_lock = threading.Lock()

USER_AGENT = f"certd/{__version__}"


def _jwk(key_pem: str) -> jose.JWK:
    key = load_key(key_pem)
    if isinstance(key, ec.EllipticCurvePrivateKey):
        return jose.JWKEC(key=key)
    return jose.JWKRSA(key=key)


def _network(config: Config, jwk: jose.JWK) -> acme_client.ClientNetwork:
    alg = jose.ES256 if isinstance(jwk, jose.JWKEC) else jose.RS256
    net = RetryAfterAwareNetwork(jwk, alg=alg, user_agent=USER_AGENT)
    if config.acme.ca_bundle:
        # ClientNetwork passes verify_ssl to requests, which accepts a CA bundle path there.
        net.verify_ssl = config.acme.ca_bundle  # type: ignore[assignment]
    return net


def _directory(config: Config, net: acme_client.ClientNetwork) -> messages.Directory:
    url = config.acme.directory_url
    try:
        with acme_action("get_directory"):
            return acme_client.ClientV2.get_directory(url, net)
    except Exception as exc:  # requests/JSON errors: the CA is unreachable or not ACME
        raise IssuanceError(f"cannot read the ACME directory at {url}: {exc}") from None


def _new_registration(config: Config, client: acme_client.ClientV2,
                      jwk: jose.JWK) -> messages.NewRegistration:
    acme_cfg = config.acme
    fields: dict[str, object] = {"terms_of_service_agreed": True}
    if acme_cfg.email:
        fields["email"] = acme_cfg.email
    if acme_cfg.eab:
        hmac_key = read_secret(env=acme_cfg.eab.hmac_key_env, file=acme_cfg.eab.hmac_key_file,
                               what="ACME EAB HMAC key")
        fields["external_account_binding"] = messages.ExternalAccountBinding.from_data(
            account_public_key=jwk.public_key(), kid=acme_cfg.eab.kid, hmac_key=hmac_key,
            directory=client.directory,
        )
    elif client.external_account_required():
        raise IssuanceError(
            f"the CA at {acme_cfg.directory_url} requires external account binding: "
            "set [acme.eab] kid and hmac_key_env or hmac_key_file"
        )
    return messages.NewRegistration.from_data(**fields)


def _find_or_create_key(engine: sa.Engine, directory_url: str, contact: str | None) -> AcmeAccount:
    with session_scope(engine) as session:
        account = session.exec(
            select(AcmeAccount).where(AcmeAccount.directory_url == directory_url)
        ).first()
        if account is None:
            # ECDSA P-256 account key: small, fast signatures; the certificate key type is separate.
            account = AcmeAccount(
                directory_url=directory_url, contact=contact,
                key_pem=key_to_pem(ec.generate_private_key(ec.SECP256R1())).decode(),
            )
            session.add(account)
        return account


def acme_client_for(config: Config, engine: sa.Engine) -> acme_client.ClientV2:
    """A ClientV2 with a registered account; registers once, then reuses the stored one.

    Each call returns a fresh client (own HTTP session and nonces) so that several
    orders can run in threads at once on one account.
    """
    directory_url = config.acme.directory_url
    # Before any order: a store that would refuse the new private key must not cost a CA order.
    policy_of(engine).check_can_store()
    with _registration_lock:
        account = _find_or_create_key(engine, directory_url, config.acme.email)
        jwk = _jwk(account.key_pem)
        net = _network(config, jwk)
        client = acme_client.ClientV2(_directory(config, net), net)
        if account.registration_json:
            net.account = messages.RegistrationResource.json_loads(account.registration_json)
            return client
        regr = _register_translating_errors(config, client, jwk)
        net.account = regr
        with session_scope(engine) as session:
            stored = session.get(AcmeAccount, account.id)
            assert stored is not None
            stored.registration_json = regr.json_dumps()
            session.add(stored)
        log.info("ACME account ready at %s: %s", directory_url, regr.uri)
        return client


def forget_registration(engine: sa.Engine, directory_url: str) -> None:
    """Drop a registration the CA no longer knows; the key stays, so it is re-registered."""
    with session_scope(engine) as session:
        account = session.exec(
            select(AcmeAccount).where(AcmeAccount.directory_url == directory_url)
        ).first()
        if account is not None:
            account.registration_json = None
            session.add(account)
    log.warning("the CA at %s no longer knows certd's account; registering it again", directory_url)


def _register_translating_errors(config: Config, client: acme_client.ClientV2,
                                 jwk: jose.JWK) -> messages.RegistrationResource:
    """`_register` with the `acme` library's and requests' errors turned into certd's.

    A rateLimited newAccount must come out as RateLimited with the CA's Retry-After,
    or the daemon retries on its own schedule instead of the CA's.
    """
    url = config.acme.directory_url
    try:
        with acme_action("new_account"):
            return _register(config, client, jwk)
    except RateLimitedResponse as exc:
        raise RateLimited(f"the CA at {url} rate-limited account registration: "
                          f"{problem_message(exc.problem)}", exc.retry_after) from None
    except messages.Error as exc:
        raise IssuanceError(f"ACME account registration at {url} failed "
                            f"({exc.code or exc.typ}): {problem_message(exc)}") from None
    except acme_errors.Error as exc:
        raise IssuanceError(f"ACME account registration at {url} failed: {exc}") from None
    except requests.RequestException as exc:
        raise IssuanceError(f"ACME server {url} unreachable during account registration: "
                            f"{type(exc).__name__}: {exc}") from None


def _register(config: Config, client: acme_client.ClientV2,
              jwk: jose.JWK) -> messages.RegistrationResource:
    try:
        existing = client.new_account(messages.NewRegistration(only_return_existing=True))
        log.info("recovered the existing ACME account for the stored key")
        return existing
    except (messages.Error, acme_errors.ConflictError) as exc:
        if isinstance(exc, acme_errors.ConflictError):
            return client.query_registration(messages.RegistrationResource(uri=exc.location))
        if exc.code != "accountDoesNotExist":
            raise IssuanceError(f"ACME account lookup failed: {exc}") from None
    try:
        return client.new_account(_new_registration(config, client, jwk))
    except acme_errors.ConflictError as exc:
        return client.query_registration(messages.RegistrationResource(uri=exc.location))
    except messages.Error as exc:
        raise IssuanceError(f"ACME account registration refused: {exc}") from None
