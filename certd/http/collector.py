"""/metrics: gauges read from the store at scrape time, next to certd.metrics' live counters.

Names follow cert-manager's (`certmanager_certificate_expiration_timestamp_seconds`
-> `certd_certificate_expiration_timestamp_seconds`) so its alert rules carry
over with a prefix change. `StoreCollector` is built per scrape from a
snapshot (certd.http.snapshot.overview) and a live view, in a worker thread.
No label carries a charger id: chargers are counted, never named.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterator
from typing import Any

from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.exposition import generate_latest

from certd import __version__
from certd.http.live import LiveView
from certd import metrics

READY_CONDITIONS = ("True", "False", "Unknown")
GATE_STATES = ("idle", "pending", "blocked")


def _ts(iso: str | None) -> float | None:
    return dt.datetime.fromisoformat(iso).timestamp() if iso else None


def ready_condition(row: dict[str, Any], now: dt.datetime) -> str:
    """True: issued, valid now and its renewals are not failing. False: nothing valid, or failing.
    Unknown: certd has not looked at it yet."""
    if row["not_after"] is None:
        return "Unknown" if row["last_outcome"] is None and not row["failures"] else "False"
    start, end = _ts(row["not_before"]) or 0.0, _ts(row["not_after"]) or 0.0
    valid = start <= now.timestamp() < end
    return "True" if valid and not row["failures"] else "False"


def _gauge(name: str, doc: str, labels: list[str]) -> GaugeMetricFamily:
    return GaugeMetricFamily(name, doc, labels=labels)


class StoreCollector:
    """One scrape's metric families from a snapshot (None: the store did not answer)."""

    def __init__(self, snapshot: dict[str, Any] | None, live: LiveView, now: dt.datetime) -> None:
        self.snapshot, self.live, self.now = snapshot, live, now

    def collect(self) -> Iterator[Metric]:
        info = _gauge("certd_build_info", "certd's version (always 1).", ["version"])
        info.add_metric([__version__], 1)
        yield info
        up = _gauge("certd_store_up", "1 when the store answered this scrape, else 0.", [])
        up.add_metric([], 1 if self.snapshot is not None else 0)
        yield up
        yield from self._ocpp_live()
        if self.snapshot is not None:
            yield from self._certificates(self.snapshot["certificates"])
            yield from self._listeners(self.snapshot["listeners"])
            yield from self._fleet(self.snapshot)

    def _certificates(self, rows: list[dict[str, Any]]) -> Iterator[Metric]:
        expiry = _gauge("certd_certificate_expiration_timestamp_seconds",
                        "When the current certificate expires (Unix time).", ["name", "issuer"])
        start = _gauge("certd_certificate_not_before_timestamp_seconds",
                       "When the current certificate became valid (Unix time).", ["name", "issuer"])
        renewal = _gauge("certd_certificate_renewal_timestamp_seconds",
                         "When certd plans to renew the certificate (Unix time).", ["name"])
        ready = _gauge("certd_certificate_ready_status",
                       "1 for the certificate's ready condition (True, False or Unknown), 0 for the others.",
                       ["name", "condition"])
        failures = _gauge("certd_certificate_renewal_failures",
                          "Renewal attempts that failed in a row (0: the last one succeeded).", ["name"])
        last = _gauge("certd_certificate_last_attempt_timestamp_seconds",
                      "When the last issuance attempt started (Unix time).", ["name"])
        outcome = _gauge("certd_certificate_last_attempt_outcome",
                         "Always 1; `outcome` is how the last issuance attempt ended (success, failure, "
                         "abandoned or running).", ["name", "outcome"])
        critical = _gauge("certd_certificate_expiring_and_failing",
                          "1 when renewals keep failing inside the last tenth of the lifetime.", ["name"])
        for row in rows:
            name, issuer = row["name"], row["issuer"] or ""
            if row["not_after"]:
                expiry.add_metric([name, issuer], _ts(row["not_after"]) or 0.0)
                start.add_metric([name, issuer], _ts(row["not_before"]) or 0.0)
            if row["renew_at"]:
                renewal.add_metric([name], _ts(row["renew_at"]) or 0.0)
            condition = ready_condition(row, self.now)
            for value in READY_CONDITIONS:
                ready.add_metric([name, value], 1.0 if value == condition else 0.0)
            failures.add_metric([name], row["failures"])
            if row["last_attempt"]:
                last.add_metric([name], _ts(row["last_attempt"]) or 0.0)
                outcome.add_metric([name, row["last_outcome"]], 1.0)
            critical.add_metric([name], 1.0 if row["critical"] else 0.0)
        yield from (expiry, start, renewal, ready, failures, last, outcome, critical)

    def _listeners(self, listeners: list[dict[str, Any]]) -> Iterator[Metric]:
        served = _gauge("certd_served_certificate_expiration_timestamp_seconds",
                        "Expiry of the certificate an OCPP listener serves right now (Unix time).",
                        ["listener", "key_type"])
        matches = _gauge("certd_served_matches_issued",
                         "1 when an OCPP listener serves what the store says it should (the current "
                         "issuance, or the one a rollover gate keeps), 0 when it does not.", ["listener"])
        up = _gauge("certd_ocpp_listener_up", "1 when the OCPP listener is bound and serving.", ["listener"])
        for listener in listeners:
            for item in listener["serving"]:
                served.add_metric([listener["name"], item["key_type"]], _ts(item["not_after"]) or 0.0)
            matches.add_metric([listener["name"]], 1.0 if listener["matches"] else 0.0)
            up.add_metric([listener["name"]], 1.0 if listener["bound"] else 0.0)
        yield from (served, matches, up)

    def _ocpp_live(self) -> Iterator[Metric]:
        connected = _gauge("certd_ocpp_connected_chargers",
                           "Chargers connected to this certd process, by listener and OCPP version.",
                           ["listener", "version"])
        for (listener, version), count in sorted(self.live.connected.items()):
            connected.add_metric([listener, version], count)
        yield connected

    def _fleet(self, snap: dict[str, Any]) -> Iterator[Metric]:
        dns = _gauge("certd_dns_managed_records", "Gray-cloud DNS records certd manages, by state.", ["state"])
        for state in sorted({"creating", "present", "deleting", *snap["dns_record_states"]}):
            dns.add_metric([state], snap["dns_record_states"].get(state, 0))
        chargers = snap["chargers"]
        registered = _gauge("certd_ocpp_registered_chargers", "Chargers in the registry.", [])
        registered.add_metric([], chargers["registered"])
        pending = _gauge("certd_ocpp_pending_approvals", "Auto-registered chargers awaiting approval.", [])
        pending.add_metric([], chargers["pending_approval"])
        rollover = _gauge("certd_rollover_chargers",
                          "Chargers per gated OCPP listener by rollover state.", ["listener", "state"])
        gate = _gauge("certd_rollover_gate_state",
                      "1 for the gate's state (idle, pending, blocked), 0 for the others.",
                      ["listener", "name", "state"])
        deadline = _gauge("certd_rollover_gate_deadline_timestamp_seconds",
                          "When a pending gate switches anyway (Unix time).", ["listener", "name"])
        for listener in snap["rollover"]:
            for state, count in sorted(listener["counts"].items()):
                rollover.add_metric([listener["listener"], state], count)
            for item in listener["gates"]:
                for state in GATE_STATES:
                    gate.add_metric([listener["listener"], item["certificate"], state],
                                    1.0 if item["state"] == state else 0.0)
                if item["deadline_at"] and item["state"] == "pending":
                    deadline.add_metric([listener["listener"], item["certificate"]], _ts(item["deadline_at"]) or 0.0)
        version = _gauge("certd_trust_bundle_version", "The newest version number of a fleet CA bundle.",
                         ["bundle", "flavour"])
        version_at = _gauge("certd_trust_bundle_version_timestamp_seconds",
                            "When the newest bundle version was made (Unix time).", ["bundle", "flavour"])
        for bundle in snap["bundles"]:
            version.add_metric([bundle["bundle"], bundle["flavour"]], bundle["version"])
            version_at.add_metric([bundle["bundle"], bundle["flavour"]], _ts(bundle["created_at"]) or 0.0)
        deliveries = _gauge("certd_trust_deliveries", "Bundle deliveries to fleet registries, by state.",
                            ["registry", "state"])
        oldest = _gauge("certd_trust_delivery_oldest_pending_timestamp_seconds",
                        "When the oldest delivery still waiting was queued (Unix time).", ["registry"])
        for registry, states in sorted(snap["deliveries"]["by_registry"].items()):
            for state, count in sorted(states.items()):
                deliveries.add_metric([registry, state], count)
        for registry, at in sorted(snap["deliveries"]["oldest_pending"].items()):
            oldest.add_metric([registry], _ts(at) or 0.0)
        leases = _gauge("certd_lease_held", "1 per lease a certd process holds (certificate or job).",
                        ["lease", "purpose"])
        for lease in snap["leases"]:
            leases.add_metric([lease["name"], lease["purpose"]], 1)
        yield from (dns, registered, pending, rollover, gate, deadline, version, version_at, deliveries,
                    oldest, leases)


def render(snapshot: dict[str, Any] | None, live: LiveView, now: dt.datetime) -> bytes:
    """The exposition text: live counters, the process collector, then the store's gauges."""
    return generate_latest(metrics.registry()) + generate_latest(StoreCollector(snapshot, live, now))  # type: ignore[arg-type]
