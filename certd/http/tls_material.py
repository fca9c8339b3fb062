"""HTTPS for the HTTP server: one of certd's own certificates, checked, then swapped in live.

Reuses the OCPP listeners' machinery (certd.serve.tls): a listening context whose
SNI callback points every handshake at the current serving context, material
checked before it is served, a renewal picked up by a store check every
`CHECK_INTERVAL` seconds (and at every reload) without dropping connections.

Also here: the secret values the server must never send (`secret_values`), so
the response guard can strike any that would slip into a body.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import logging
from collections.abc import Awaitable, Callable
from typing import Any

import sqlalchemy as sa

from certd.config import Config
from certd.errors import CertdError
from certd.serve.tls import ContextHolder, KeyPairPem, TlsMaterialError, load_trust_anchors, prepare
from certd.tasks import cancel_and_wait

log = logging.getLogger("certd.http")

CHECK_INTERVAL = 30.0
PROFILE = "modern"


class HttpTls:
    def __init__(self, engine: sa.Engine, in_thread: Callable[..., Awaitable[Any]],
                 clock: Callable[[], dt.datetime]) -> None:
        self.engine = engine
        self.in_thread = in_thread
        self.clock = clock
        self.holder = ContextHolder(PROFILE)
        self.served_id: int | None = None
        self._task: asyncio.Task[None] | None = None

    def _read(self, config: Config) -> tuple[int, KeyPairPem, str] | None:
        from certd.serve.material import served_certificate
        from certd.store.db import session_scope

        assert config.http.tls is not None
        name = config.http.tls.certificate
        with session_scope(self.engine) as session:
            issued = served_certificate(session, name)
            if issued is None:
                return None
            pair = KeyPairPem(source=f"certificate {name} (issued #{issued.id}, serial {issued.serial})",
                              cert_pem=issued.cert_pem, chain_pem=issued.chain_pem, key_pem=issued.key_pem)
            return issued.id, pair, config.certificate(name).domains[0].removeprefix("*.")

    def _prepare(self, config: Config, pair: KeyPairPem, host: str) -> Any:
        anchors = load_trust_anchors(config.ocpp.trust_roots)
        return prepare([pair], host, PROFILE, self.clock(), anchors)

    async def refresh(self, config: Config) -> None:
        """Serve the certificate's current issuance if it is new and passes the check."""
        if config.http.tls is None:
            return
        found = await self.in_thread(self._read, config)
        if found is None:
            if self.served_id is None:
                log.warning("HTTP server: certificate %s is not issued yet; HTTPS handshakes fail until it is",
                            config.http.tls.certificate)
            return
        issued_id, pair, host = found
        if issued_id == self.served_id:
            return
        try:
            prepared = await self.in_thread(self._prepare, config, pair, host)
        except (TlsMaterialError, CertdError) as exc:
            log.error("HTTP server: new certificate material refused, %s: %s",
                      "keeps the one served" if self.served_id else "serves nothing yet", exc)
            return
        self.holder.swap(prepared)
        self.served_id = issued_id
        log.info("HTTP server now serves %s", pair.source)

    def start_watching(self, current_config: Callable[[], Config]) -> None:
        """Check the store every CHECK_INTERVAL seconds under the config in force then."""
        async def watch() -> None:
            while True:
                await asyncio.sleep(CHECK_INTERVAL)
                try:
                    await self.refresh(current_config())
                except Exception:  # noqa: BLE001 - the next round tries again
                    log.exception("HTTP server: checking the served certificate failed")

        self._task = asyncio.get_running_loop().create_task(watch(), name="certd-http-tls")

    async def stop_watching(self) -> None:
        await cancel_and_wait(self._task)
        self._task = None


def secret_values(config: Config, credentials: Any) -> tuple[str, ...]:
    """Every secret this config names that is readable now (worker thread): none may leave in a body."""
    from certd.secrets import read_secret

    found: list[str | None] = [credentials.token]
    cf = config.cloudflare
    wanted: list[tuple[str | None, str | None]] = [(cf.token_env, cf.api_token_file),
                                                   (cf.zone_token_env, cf.zone_token_file)]
    if config.acme.eab:
        wanted.append((config.acme.eab.hmac_key_env, config.acme.eab.hmac_key_file))
    for registry in config.trust.registries:
        wanted.append((registry.hmac_secret_env, registry.hmac_secret_file))
        wanted.append((registry.auth_env, registry.auth_file))
    for env, file in wanted:
        if not (env or file):
            continue
        try:
            found.append(read_secret(env=env, file=file, what="secret", required=False))
        except CertdError:
            continue
    found.extend(credentials.users.values())  # password hashes
    return tuple(sorted({s for s in found if s and len(s) >= 8}, key=len, reverse=True))
