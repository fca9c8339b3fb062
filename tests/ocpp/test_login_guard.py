"""What a password guesser can learn or do over real TLS: parallel guesses against the failed-login
limit, which ids exist (the argon2 work done per refusal), ids with a trailing newline."""

from __future__ import annotations

import asyncio

import pytest
from sqlmodel import select
from websockets.exceptions import InvalidStatus

from certd.ocpp import auth
from certd.ocpp.server import DUMMY_HASH_CHECKED
from certd.store.chargers import Charger, ChargerAuditEvent
from certd.store.db import session_scope
from tests.ocpp.conftest import HOST, PASSWORD, basic, client_context, make_config, open_ws, register, run, running
from tests.pki import store_current



@pytest.fixture
def world(ca, engine):  # type: ignore[no-untyped-def]
    store_current(engine, "rsa", ca.issue([HOST], "rsa"))
    register(engine, "CP1", heartbeat_class="gsm")
    register(engine, "OFF1", heartbeat_class="gsm", enabled=False)
    return engine


@pytest.fixture
def argon2_checks(monkeypatch) -> list[str]:  # type: ignore[no-untyped-def]
    """Every argon2 verification the server runs (the real function still does the work)."""
    checked: list[str] = []
    real = auth.verify_password

    def counting(password_hash: str, password: str) -> bool:
        checked.append(password_hash)
        return real(password_hash, password)

    monkeypatch.setattr(auth, "verify_password", counting)
    return checked


async def _status(service, path: str, ca, headers: dict[str, str]) -> int:  # type: ignore[no-untyped-def]
    try:
        async with open_ws(service, path, ca, headers=headers):
            return 101
    except InvalidStatus as exc:
        return exc.response.status_code


def _upgrade_request(charger_id: str, password: str) -> bytes:
    token = basic(charger_id, password)["Authorization"]
    return (f"GET /ocpp/{charger_id} HTTP/1.1\r\nHost: {HOST}\r\nUpgrade: websocket\r\n"
            "Connection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
            "Sec-WebSocket-Version: 13\r\nSec-WebSocket-Protocol: ocpp1.6\r\n"
            f"Authorization: {token}\r\n\r\n").encode()


def test_parallel_guesses_get_no_more_checks_than_the_limit(ca, ca_file, world, argon2_checks) -> None:  # type: ignore[no-untyped-def]
    """TLS is set up first on every connection, then all guesses are sent at once."""
    async def main() -> None:
        async with running(make_config(ca_file, auth_failure_limit=3), world) as service:
            port = service.listener("main").ports[0]
            connections = [await asyncio.open_connection("127.0.0.1", port, ssl=client_context(ca),
                                                         server_hostname=HOST) for _ in range(100)]
            for i, (_, writer) in enumerate(connections):
                writer.write(_upgrade_request("CP1", f"guess-{i:020d}"))

            async def status(reader: asyncio.StreamReader) -> int:
                return int((await reader.readline()).split()[1])

            statuses = await asyncio.gather(*(status(reader) for reader, _ in connections))
            for _, writer in connections:
                writer.close()
            assert {s: statuses.count(s) for s in set(statuses)} == {401: 3, 429: 97}
            assert len(argon2_checks) == 3
            await service.shared.writer.flush()
        with session_scope(world) as session:
            assert len(list(session.exec(select(ChargerAuditEvent)))) == 3

    run(main())


def test_parallel_logins_from_one_address_wait_instead_of_being_refused(ca, ca_file, world) -> None:  # type: ignore[no-untyped-def]
    """Chargers behind one NAT address that log in at once: over the limit, yet all admitted."""
    async def main() -> None:
        async with running(make_config(ca_file, auth_failure_limit=2), world) as service:
            statuses = await asyncio.gather(*(
                _status(service, "/ocpp/CP1", ca, basic("CP1", PASSWORD)) for _ in range(12)))
            assert statuses == [101] * 12
            assert service.shared.limiter.in_flight("127.0.0.1") == 0

    run(main())


@pytest.mark.parametrize("charger_id, policy", [
    ("CP1", "reject"),       # known id, wrong password: the stored hash is checked
    ("NOPE1", "reject"),     # unknown id
    ("OFF1", "accept"),      # disabled id
])
def test_every_refused_password_costs_one_argon2_check(ca, ca_file, world, argon2_checks,
                                                       charger_id, policy) -> None:  # type: ignore[no-untyped-def]
    """Otherwise the answer time tells an unknown or disabled id from a known one."""
    async def main() -> None:
        async with running(make_config(ca_file, unknown_chargers=policy), world) as service:
            assert await _status(service, f"/ocpp/{charger_id}", ca,
                                 basic(charger_id, "wrong-password-123456")) == 401
            assert len(argon2_checks) == 1
            assert await _status(service, f"/ocpp/{charger_id}", ca, {}) == 401
            assert len(argon2_checks) == 1  # no password offered: nothing to check, for any id

            listener = service.listener("main")
            looked_up = await asyncio.to_thread(listener._lookup_and_check, charger_id, "wrong-password-1")
            expected = DUMMY_HASH_CHECKED if charger_id != "CP1" else looked_up.record.password_hash
            assert (looked_up.checked_hash, looked_up.check_ok) == (expected, False)

    run(main())


def test_an_id_with_a_trailing_newline_is_refused_not_registered(ca, ca_file, world) -> None:  # type: ignore[no-untyped-def]
    async def main() -> None:
        async with running(make_config(ca_file, unknown_chargers="accept"), world) as service:
            assert await _status(service, "/ocpp/CP1%0A", ca, basic("CP1\n", "impostor-password-1234")) == 400
            assert service.connected_chargers() == []
            await service.shared.writer.flush()
        with session_scope(world) as session:
            assert sorted(c.charger_id for c in session.exec(select(Charger))) == ["CP1", "OFF1"]

    run(main())
