"""Real TLS handshakes against a running listener: profiles, RSA + ECDSA, no SNI, live reload."""

from __future__ import annotations

import logging
import os
import socket
import ssl
import time

import pytest
from ocpp.v16 import call

from certd.errors import CertdError
from certd.sandbox.certd_config import ocpp_listener
from certd.store.types import utcnow
from tests.ocpp.conftest import (
    HOST, PASSWORD, basic, boot16, charge_point, client_context, make_config, open_ws, peer_serial, run, running,
)
from tests.pki import store_current
from tests.waits import until

AUTH = basic("CP1", PASSWORD)
AUTH2 = basic("CP2", PASSWORD)  # a second charger: a new socket for CP1 would replace the old one
GSM_CIPHERS = ["ECDHE-RSA-AES128-GCM-SHA256", "ECDHE-RSA-AES256-GCM-SHA384",
               "AES128-GCM-SHA256", "AES256-GCM-SHA384"]


def tls12(ca, ciphers: str) -> ssl.SSLContext:  # type: ignore[no-untyped-def]
    ctx = client_context(ca)
    ctx.maximum_version = ssl.TLSVersion.TLSv1_2
    ctx.set_ciphers(ciphers)
    return ctx


def test_gsm_profile_accepts_exactly_the_listed_ciphers(ca, ca_file, store) -> None:  # type: ignore[no-untyped-def]
    store_current(store, "rsa", ca.issue([HOST], "rsa"))
    listeners = [ocpp_listener("main", HOST, certificates=["rsa"], tls_profile="gsm", paths=["/ocpp/{id}"])]

    async def main() -> None:
        async with running(make_config(ca_file, listeners=listeners), store) as service:
            for cipher in GSM_CIPHERS:
                async with open_ws(service, "/ocpp/CP1", ca, headers=AUTH,
                                   ssl_context=tls12(ca, cipher)) as ws:
                    sslobj = ws.transport.get_extra_info("ssl_object")
                    assert sslobj.cipher()[0] == cipher and sslobj.version() == "TLSv1.2"
            tls13_only = client_context(ca)
            tls13_only.minimum_version = ssl.TLSVersion.TLSv1_3
            refused = [tls13_only] + [tls12(ca, c) for c in (
                "ECDHE-RSA-CHACHA20-POLY1305", "ECDHE-RSA-AES128-SHA256", "ECDHE-RSA-AES128-SHA",
                "DHE-RSA-AES128-GCM-SHA256")]
            for ctx in refused:
                with pytest.raises((ssl.SSLError, ConnectionResetError)):  # alert or reset
                    async with open_ws(service, "/ocpp/CP1", ca, headers=AUTH, ssl_context=ctx):
                        pass
            # The listener still works after the refusals.
            async with open_ws(service, "/ocpp/CP1", ca, headers=AUTH, ssl_context=tls12(ca, GSM_CIPHERS[0])):
                pass

    run(main())


def test_rsa_and_ecdsa_clients_each_get_their_certificate_also_without_sni(ca, ca_file, store) -> None:  # type: ignore[no-untyped-def]
    rsa_leaf, ec_leaf = ca.issue([HOST], "rsa"), ca.issue([HOST], "ec")
    store_current(store, "rsa", rsa_leaf)
    store_current(store, "ec", ec_leaf)
    listeners = [ocpp_listener("main", HOST, certificates=["rsa", "ec"], tls_profile="modern")]

    async def main() -> None:
        async with running(make_config(ca_file, listeners=listeners), store) as service:
            assert sorted(s.serial for s in service.served("main")) == sorted([rsa_leaf.serial, ec_leaf.serial])
            async with open_ws(service, "/ocpp/CP1", ca, headers=AUTH,
                               ssl_context=tls12(ca, "ECDHE-RSA-AES128-GCM-SHA256")) as ws:
                assert peer_serial(ws) == rsa_leaf.serial
            async with open_ws(service, "/ocpp/CP1", ca, headers=AUTH,
                               ssl_context=tls12(ca, "ECDHE-ECDSA-AES128-GCM-SHA256")) as ws:
                assert peer_serial(ws) == ec_leaf.serial
            async with open_ws(service, "/ocpp/CP1", ca, headers=AUTH) as ws:  # TLS 1.3 default client
                assert ws.transport.get_extra_info("ssl_object").version() == "TLSv1.3"
                assert peer_serial(ws) in (rsa_leaf.serial, ec_leaf.serial)

            # No SNI at all: the callback still runs (name None) and points at the current context.
            holder = service.listener("main").holder
            seen_names = []
            original = holder.listening_context.sni_callback

            def recording(sslobj, name, ctx):  # type: ignore[no-untyped-def]
                seen_names.append(name)
                return original(sslobj, name, ctx)

            holder.listening_context.sni_callback = recording
            no_sni = tls12(ca, "ECDHE-RSA-AES128-GCM-SHA256")
            no_sni.check_hostname = False  # verification of the chain stays on (CERT_REQUIRED)
            async with open_ws(service, "/ocpp/CP1", ca, headers=AUTH, ssl_context=no_sni,
                               server_hostname="") as ws:
                assert peer_serial(ws) == rsa_leaf.serial
                async with charge_point(ws, "ocpp1.6", "CP1") as cp:
                    assert (await cp.call(boot16())).status == "Accepted"
            assert seen_names == [None]

    run(main())


def test_renewal_new_connection_sees_new_serial_old_keeps_heartbeating(ca, ca_file, store) -> None:  # type: ignore[no-untyped-def]
    old_leaf = ca.issue([HOST], "rsa")
    store_current(store, "rsa", old_leaf)

    async def main() -> None:
        async with running(make_config(ca_file), store) as service:
            async with open_ws(service, "/ocpp/CP1", ca, headers=AUTH) as old_ws:
                async with charge_point(old_ws, "ocpp1.6", "CP1") as old_cp:
                    await old_cp.call(boot16())
                    new_leaf = ca.issue([HOST], "rsa")
                    store_current(store, "rsa", new_leaf)
                    results = await service.reload("rsa")
                    assert [(r.listener, r.status) for r in results] == [("main", "swapped")]
                    assert [s.serial for s in results[0].served] == [new_leaf.serial]
                    async with open_ws(service, "/ocpp/CP2", ca, headers=AUTH2) as new_ws:
                        assert peer_serial(new_ws) == new_leaf.serial
                    # The established socket is untouched: same certificate, still heartbeating.
                    assert peer_serial(old_ws) == old_leaf.serial
                    for _ in range(3):
                        await old_cp.call(call.Heartbeat())
                    assert (await service.reload("rsa"))[0].status == "unchanged"
                    assert await service.reload("some-other-cert") == []

    run(main())


def test_periodic_store_check_picks_up_a_new_certificate(ca, ca_file, store) -> None:  # type: ignore[no-untyped-def]
    store_current(store, "rsa", ca.issue([HOST], "rsa"))

    async def main() -> None:
        async with running(make_config(ca_file, reload_check_interval=0.05), store) as service:
            new_leaf = ca.issue([HOST], "rsa")
            store_current(store, "rsa", new_leaf)
            await until(lambda: [s.serial for s in service.served("main")] == [new_leaf.serial],
                        "the periodic check to serve the new certificate")
            async with open_ws(service, "/ocpp/CP1", ca, headers=AUTH) as ws:
                assert peer_serial(ws) == new_leaf.serial

    run(main())


@pytest.mark.parametrize("defect", ["key_mismatch", "expired", "wrong_names", "leaf_only"])
def test_bad_new_material_keeps_the_old_certificate(ca, ca_file, store, caplog, defect) -> None:  # type: ignore[no-untyped-def]
    import datetime as dt

    good = ca.issue([HOST], "rsa")
    store_current(store, "rsa", good)
    if defect == "key_mismatch":
        bad, extra = ca.issue([HOST], "rsa"), {"key_pem": ca.issue([HOST], "rsa").key_pem}
        reason = "does not match"
    elif defect == "expired":
        bad, extra = ca.issue([HOST], "rsa", days=1, not_before=utcnow() - dt.timedelta(days=2)), {}
        reason = "expired on"
    elif defect == "wrong_names":
        bad, extra = ca.issue(["other.example.test"], "rsa"), {}
        reason = "do not cover the listener host"
    else:
        bad, extra = ca.issue([HOST], "rsa"), {"chain_pem": ""}
        reason = "chain incomplete"

    async def main() -> None:
        async with running(make_config(ca_file), store) as service:
            async with open_ws(service, "/ocpp/CP1", ca, headers=AUTH) as established:
                store_current(store, "rsa", bad, **extra)
                with caplog.at_level(logging.ERROR, logger="certd.ocpp"):
                    results = await service.reload()
                assert results[0].status == "failed" and reason in results[0].error
                assert [s.serial for s in results[0].served] == [good.serial]
                errors = [r for r in caplog.records if r.levelno == logging.ERROR]
                assert len(errors) == 1 and reason in errors[0].getMessage()
                assert "keeps serving" in errors[0].getMessage()
                assert "PRIVATE KEY" not in errors[0].getMessage()
                async with open_ws(service, "/ocpp/CP2", ca, headers=AUTH2) as fresh:
                    assert peer_serial(fresh) == good.serial
                async with charge_point(established, "ocpp1.6", "CP1") as cp:
                    assert (await cp.call(boot16())).status == "Accepted"

    run(main())


def test_listener_waits_for_valid_material_then_opens(ca, ca_file, store) -> None:  # type: ignore[no-untyped-def]
    """First start before anything was issued: no socket until the first valid certificate."""
    async def main() -> None:
        async with running(make_config(ca_file), store) as service:
            assert service.listener("main").ports == []
            store_current(store, "rsa", ca.issue([HOST], "rsa"))
            assert [r.status for r in await service.reload("rsa")] == ["started"]
            async with open_ws(service, "/ocpp/CP1", ca, headers=AUTH):
                pass

    run(main())


def test_listener_whose_port_was_busy_opens_on_a_later_reload(ca, ca_file, store) -> None:  # type: ignore[no-untyped-def]
    """The first certificate arrives while another process holds the port: that reload fails,
    and a later one (port free) must open the socket instead of answering "unchanged"."""
    async def main() -> None:
        squatter = socket.socket()
        squatter.bind(("127.0.0.1", 0))
        squatter.listen()
        port = squatter.getsockname()[1]
        config = make_config(ca_file, listeners=[ocpp_listener("main", HOST, port=port, certificates=["rsa"])])
        async with running(config, store) as service:
            assert service.listener("main").ports == []
            store_current(store, "rsa", ca.issue([HOST], "rsa"))
            try:
                with pytest.raises(CertdError, match=f"cannot listen on 127.0.0.1 port {port}"):
                    await service.reload("rsa")
            finally:
                squatter.close()
            assert [r.status for r in await service.reload("rsa")] == ["started"]
            assert service.listener("main").ports == [port]
            async with open_ws(service, "/ocpp/CP1", ca, headers=AUTH):
                pass
            assert [r.status for r in await service.reload("rsa")] == ["unchanged"]

    run(main())


def test_files_written_by_another_tool_are_watched(ca, ca_file, store, tmp_path) -> None:  # type: ignore[no-untyped-def]
    fullchain, privkey = tmp_path / "fullchain.pem", tmp_path / "privkey.pem"

    def write(leaf, key_pem=None) -> None:  # type: ignore[no-untyped-def]
        fullchain.write_text(leaf.cert_pem + leaf.chain_pem)
        privkey.write_text(key_pem or leaf.key_pem)
        past = time.time() - 5  # older than the settle time: the writer is done
        for path in (fullchain, privkey):
            os.utime(path, (past, past))

    first = ca.issue([HOST], "ec")
    write(first)
    listeners = [ocpp_listener("main", HOST, cert_files=[{"fullchain": str(fullchain), "privkey": str(privkey)}])]

    async def main() -> None:
        async with running(make_config(ca_file, listeners=listeners, reload_check_interval=0.05), store) as service:
            async with open_ws(service, "/ocpp/CP1", ca, headers=AUTH) as ws:
                assert peer_serial(ws) == first.serial
            # Half-written update (new chain, old key): refused, the first certificate stays.
            half = ca.issue([HOST], "ec")
            write(half, key_pem=first.key_pem)
            await until(lambda: service._states[0].failed_key is not None, "the check to refuse")
            assert [s.serial for s in service.served("main")] == [first.serial]
            second = ca.issue([HOST], "ec")
            write(second)
            await until(lambda: [s.serial for s in service.served("main")] == [second.serial],
                        "the watcher to serve the new files")
            async with open_ws(service, "/ocpp/CP1", ca, headers=AUTH) as ws:
                assert peer_serial(ws) == second.serial

    run(main())
