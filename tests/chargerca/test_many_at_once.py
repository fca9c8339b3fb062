"""200 chargers ask for certificates at the same moment: every one gets its own, recorded once."""

from __future__ import annotations

import asyncio
import time

from sqlmodel import func, select

from certd.chargerca import records
from certd.store.charger_ca import ChargerCsrRequest
from certd.store.db import session_scope
from tests.chargerca.chargers import Charger, next_event, running_client
from tests.chargerca.conftest import connect, make_config, register, run, running, serve_certificate, server_trust

COUNT = 200


def test_two_hundred_chargers_asking_at_once(engine, ca, ca_file, tmp_path) -> None:  # type: ignore[no-untyped-def]
    serve_certificate(engine, ca)
    # No password (policy "accept" admits a registered charger without one): the test is about
    # signing, not argon2.
    config = make_config(ca_file, tmp_path, unknown_chargers="accept")
    chargers = [Charger(f"CP-{n:03d}") for n in range(COUNT)]
    for charger in chargers:
        register(engine, charger.charger_id, password=None)
    elapsed: dict[str, float] = {}

    async def one(service, charger: Charger, go: asyncio.Event) -> str:  # type: ignore[no-untyped-def]
        async with connect(service, "p2", charger.charger_id, "ocpp2.0.1", ssl_context=server_trust(ca)) as ws:
            async with running_client(ws, "ocpp2.0.1", charger) as cp:
                await go.wait()
                answer = await cp.request_certificate()
                await next_event(charger, "CertificateSigned", timeout=50)
                return answer

    async def scenario() -> None:
        async with running(config, engine) as service:
            go = asyncio.Event()
            tasks = [asyncio.create_task(one(service, c, go)) for c in chargers]
            while len(service.shared.sessions) < COUNT:  # all connected first
                await asyncio.sleep(0.05)
            start = time.perf_counter()
            go.set()
            answers = await asyncio.gather(*tasks)
            assert service.charger_certs is not None
            assert await service.charger_certs.wait_idle(30)  # every answer recorded
            elapsed["all signed and delivered"] = time.perf_counter() - start
            assert answers == ["Accepted"] * COUNT
            assert service.charger_certs.enrollment.issued == COUNT

    run(scenario())
    certs = records.certificates(engine)
    assert len(certs) == COUNT and len({c.serial for c in certs}) == COUNT
    assert {c.state for c in certs} == {"active"}
    assert sorted(c.charger_id for c in certs) == sorted(c.charger_id for c in chargers)
    for charger in chargers:  # each got the certificate for its own key
        assert charger.leaf().public_key().public_numbers() == charger.key.public_key().public_numbers()
    with session_scope(engine) as session:
        assert session.exec(select(func.count()).select_from(ChargerCsrRequest)).one() == COUNT
    print(f"\n{COUNT} chargers: {elapsed['all signed and delivered']:.2f} s from the first CSR to the last "
          "CertificateSigned answered")
