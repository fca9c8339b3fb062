"""PostgreSQL restarted under two running nodes, in the middle of an order (a private server of
the test's own: the machine's PostgreSQL is never restarted). The nodes reconnect, the order in
flight completes and is recorded once, nothing is lost or doubled, and notifications flow again."""

from __future__ import annotations

import datetime as dt
import time

from tests.nodes.conftest import Fleet, Notifications, PrivatePostgres, wait_until
from tests.nodes.test_three_nodes import (
    GRACE, VALIDITY, assert_propagated, attempt, order_in_flight, wait_for_issuance,
)


def test_postgresql_restart_mid_order_loses_and_doubles_nothing(make_fleet, private_pg: PrivatePostgres) -> None:
    import psycopg

    with psycopg.connect(private_pg.url.replace("+psycopg", ""), autocommit=True) as admin:
        admin.execute("CREATE DATABASE certd")
    db_url = private_pg.url.rsplit("/", 1)[0] + "/certd"
    fleet: Fleet = make_fleet(db_url, 2, validity=VALIDITY, listeners=True, grace=GRACE)
    for node in fleet.nodes:
        fleet.start(node, namespace=True)
    notes = Notifications(db_url)
    try:
        first = wait_for_issuance(fleet, 1, 90)
        assert_propagated(fleet, notes, first, fleet.nodes)
        holder, in_flight = order_in_flight(fleet, first)
        notes.close()
        private_pg.stop("fast")  # every session is ended, as in a server restart or failover
        time.sleep(0.5)
        private_pg.start()
        notes = Notifications(db_url)
        restarted = time.monotonic()

        second = wait_for_issuance(fleet, 2, 40)
        finished = attempt(fleet, in_flight.id)
        assert finished.outcome == "success" and finished.certificate_id == second.id  # not lost
        for node in fleet.nodes:
            wait_until(lambda n=node: "notification connection to the store re-established" in n.log(), 15,
                       f"{node.name} to listen again")
        # The next issuance's notification reaches both nodes again: their files and listeners follow.
        third = wait_for_issuance(fleet, 3, VALIDITY + 20)
        assert_propagated(fleet, notes, third, fleet.nodes)
        issued = fleet.issued()[:3]
        assert [i.id for i in issued] == [first.id, second.id, third.id]
        assert all(b.issued_at - a.issued_at > dt.timedelta(seconds=5) for a, b in zip(issued, issued[1:]))
        ordered = [a for a in fleet.attempts() if a.started_at <= third.issued_at]
        assert [a.outcome for a in ordered].count("success") == 3
        assert all(a.outcome in ("success", "failure", "abandoned") for a in ordered)
        wait_until(lambda: fleet.txt_records() == [], 10, "no TXT record left")
        print(f"restart to second issuance: {time.monotonic() - restarted:.1f}s; holder {holder.name}")
    finally:
        notes.close()
