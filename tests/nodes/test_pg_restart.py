"""PostgreSQL restarted under two running nodes, in the middle of an order (a private server of
the test's own: the machine's PostgreSQL is never restarted). The nodes reconnect, the order in
flight completes and is recorded once, nothing is lost or doubled, and notifications flow again."""

from __future__ import annotations

import datetime as dt
import time

from tests.nodes.conftest import Fleet, Notifications, PrivatePostgres, wait_until
from tests.nodes.test_three_nodes import (
    GRACE, VALIDITY, assert_propagated, attempt, order_in_flight, start_after_issuing_by_hand, wait_for_issuance,
)


def test_postgresql_restart_mid_order_loses_and_doubles_nothing(make_fleet, private_pg: PrivatePostgres) -> None:
    import psycopg

    with psycopg.connect(private_pg.url.replace("+psycopg", ""), autocommit=True) as admin:
        admin.execute("CREATE DATABASE certd")
    db_url = private_pg.url.rsplit("/", 1)[0] + "/certd"
    fleet: Fleet = make_fleet(db_url, 2, validity=VALIDITY, listeners=True, grace=GRACE, operator=True)
    notes = Notifications(db_url)
    try:
        first = start_after_issuing_by_hand(fleet)
        holder, in_flight = order_in_flight(fleet, first)
        notes.close()
        private_pg.stop("fast")  # every session is ended, as in a server restart or failover
        time.sleep(0.5)
        private_pg.start()
        notes = Notifications(db_url)
        restarted = time.monotonic()

        second = wait_for_issuance(fleet, len(fleet.issued()) + 1, 40)
        finished = attempt(fleet, in_flight.id)
        assert finished.outcome == "success" and finished.certificate_id == second.id  # not lost
        for node in fleet.nodes:
            wait_until(lambda n=node: "notification connection to the store re-established" in n.log(), 15,
                       f"{node.name} to listen again")
        # Notified after the restart: both nodes' files, hooks and listeners follow within 2 s.
        assert_propagated(fleet, notes, second, fleet.nodes)
        assert [i.id for i in fleet.issued()][-2:] == [first.id, second.id]
        assert second.issued_at - first.issued_at > dt.timedelta(seconds=5)  # not done twice
        ordered = [a for a in fleet.attempts() if a.started_at <= second.issued_at]
        assert [a.outcome for a in ordered].count("success") == len(fleet.issued())
        assert all(a.outcome in ("success", "failure", "abandoned") for a in ordered)
        wait_until(lambda: fleet.txt_records() == [], 10, "no TXT record left")
        print(f"restart to the order's completion: {notes.when_issued(second.id) - restarted:.1f}s "
              f"(node {holder.name}, attempt #{in_flight.id})")
    finally:
        notes.close()
