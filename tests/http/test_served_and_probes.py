"""Served vs issued per listener, and the probes: /readyz 503 while the store is unreachable."""

from __future__ import annotations

import asyncio
import json

import psycopg
from psycopg import sql
from sqlalchemy.engine import make_url

from tests.conftest import PG_ADMIN_DSN
from tests.http.conftest import LISTENER, base_url, get, run, running_daemon, samples, value


def test_a_listener_serving_other_than_issued_is_marked(http_setup) -> None:  # type: ignore[no-untyped-def]
    setup, _tls = http_setup()

    async def scenario() -> None:
        async with running_daemon(setup) as daemon:
            assert await daemon.wait_for(lambda: "web" in daemon.results, 60)
            await daemon.ocpp.reload("web")
            url = base_url(daemon)
            _, text, _ = await get(url + "/metrics")
            assert value(samples(text), "certd_served_matches_issued", listener=LISTENER) == 1
            served_before = setup.current("web")

            # Another process renews; this daemon's listener checks the store only on reloads
            # (reload_check_interval = 0) and its watch on the live copy is stopped here (it would
            # reload within milliseconds), so it goes on serving the previous certificate.
            assert daemon._live_watch is not None
            await daemon._live_watch.close()
            result = await asyncio.to_thread(setup.cli, "renew", "web", "--force")
            assert result.returncode == 0, result.stderr
            renewed = setup.current("web")
            assert renewed.serial != served_before.serial

            _, text, _ = await get(url + "/metrics")
            parsed = samples(text)
            assert value(parsed, "certd_served_matches_issued", listener=LISTENER) == 0
            assert value(parsed, "certd_served_certificate_expiration_timestamp_seconds", listener=LISTENER,
                         key_type="rsa") == served_before.not_after.timestamp()
            _, body, _ = await get(url + "/api/v1/status")
            listener = json.loads(body)["listeners"][0]
            assert listener["matches"] is False and listener["mismatched"] == ["web"]
            assert [s["serial"] for s in listener["serving"]] == [served_before.serial]
            assert [e["serial"] for e in listener["expected"]] == [renewed.serial]
            _, page, _ = await get(url + "/")
            assert "MISMATCH" in page and served_before.serial in page and renewed.serial in page

            # /api/v1/status is a superset of `certd status --json` (same rows, more keys, more sections).
            cli = await asyncio.to_thread(setup.cli, "status", "--json")
            assert cli.returncode == 0, cli.stderr
            cli_rows = json.loads(cli.stdout)
            _, body, _ = await get(url + "/api/v1/status")
            api = json.loads(body)
            assert [r["name"] for r in api["certificates"]] == [r["name"] for r in cli_rows] == ["web"]
            for cli_row, api_row in zip(cli_rows, api["certificates"]):
                for key, want in cli_row.items():
                    if key == "days_left":
                        assert abs(api_row[key] - want) <= 0.1
                    else:
                        assert api_row[key] == want, key
            assert {"listeners", "chargers", "bundles", "deliveries", "rollover", "events", "leases"} <= set(api)
            issued = [(e["kind"], e["subject"], e["outcome"]) for e in api["events"]]
            assert issued.count(("issuance", "web", "success")) == len(setup.attempts("web")) == 2

            await daemon.ocpp.reload("web")  # what the daemon does after its own deploys
            _, text, _ = await get(url + "/metrics")
            assert value(samples(text), "certd_served_matches_issued", listener=LISTENER) == 1
            _, page, _ = await get(url + "/")
            assert "MISMATCH" not in page

    run(scenario())


def _allow_connections(database: str, allowed: bool) -> None:
    with psycopg.connect(PG_ADMIN_DSN, autocommit=True, connect_timeout=3) as admin:
        admin.execute(sql.SQL("ALTER DATABASE {} ALLOW_CONNECTIONS {}").format(
            sql.Identifier(database), sql.SQL("true" if allowed else "false")))
        if not allowed:
            admin.execute("SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                          "WHERE datname = %s AND pid <> pg_backend_pid()", (database,))


def test_readyz_fails_while_the_store_is_unreachable(http_setup, pg_url: str) -> None:  # type: ignore[no-untyped-def]
    setup, _tls = http_setup(db_url=pg_url)
    database = make_url(pg_url).database
    assert database

    async def scenario() -> None:
        async with running_daemon(setup) as daemon:
            assert await daemon.wait_for(lambda: "web" in daemon.results, 60)
            await daemon.ocpp.reload("web")
            url = base_url(daemon)
            status, body, _ = await get(url + "/readyz")
            assert status == 200, body
            assert {c["name"]: c["ok"] for c in json.loads(body)["checks"]} == {
                "store": True, "listeners": True, "certificates": True}

            await asyncio.to_thread(_allow_connections, database, False)
            try:
                status, body, _ = await get(url + "/readyz")
                assert status == 503
                checks = {c["name"]: c for c in json.loads(body)["checks"]}
                assert checks["store"]["ok"] is False and "did not answer" in checks["store"]["detail"]
                assert pg_url.split("@")[-1] not in body  # no database address in the answer
                status, body, _ = await get(url + "/livez")
                assert status == 200, body  # the process itself is fine: no restart wanted
                _, text, _ = await get(url + "/metrics")
                parsed = samples(text)
                assert value(parsed, "certd_store_up") == 0
                assert value(parsed, "process_cpu_seconds_total") is not None
                status, _, _ = await get(url + "/")
                assert status == 503
            finally:
                await asyncio.to_thread(_allow_connections, database, True)
            status, body, _ = await get(url + "/readyz")
            assert status == 200, body

    run(scenario())
