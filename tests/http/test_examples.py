"""examples/prometheus: the alert rules name only metrics certd exposes, and the configs parse."""

from __future__ import annotations

import re
from pathlib import Path

import yaml
from prometheus_client.exposition import generate_latest

from certd.config import parse_config
from certd.http import snapshot
from certd.http.collector import render
from certd.http.live import LiveView
from certd.sandbox.status_fleet import fleet_config_toml, populate
from certd.store.db import make_engine, upgrade
from certd.store.types import utcnow
from tests.http.conftest import samples

EXAMPLES = Path(__file__).resolve().parents[2] / "examples" / "prometheus"


def test_every_metric_the_alert_rules_use_is_exposed(tmp_path: Path) -> None:
    roots = tmp_path / "roots.pem"
    roots.write_text("")
    config = parse_config(fleet_config_toml(tmp_path / "state", roots, certificates=5))
    upgrade(config.db_url)
    engine = make_engine(config.db_url)
    now = utcnow()
    populate(engine, config, chargers=50, now=now)
    live = LiveView(connected={("fleet", "ocpp1.6"): 3})
    data = snapshot.overview(config, engine, live, now, snapshot.rollover(config, engine, live, now))
    exposed = set(samples(render(data, live, now).decode()))
    # Counters and histograms appear once something was counted; their declared names suffice.
    from certd import metrics

    exposed |= {line.split()[2] for line in generate_latest(metrics.enable()).decode().splitlines()
                if line.startswith("# TYPE")}
    exposed |= {name + "_total" for name in exposed}
    used: set[str] = set()
    rules = 0
    for path in sorted(EXAMPLES.glob("*-rules.yml")):
        for group in yaml.safe_load(path.read_text())["groups"]:
            for rule in group["rules"]:
                assert rule["alert"].startswith("Certd") and rule["labels"]["severity"]
                used |= set(re.findall(r"\bcertd_[a-z_]+", rule["expr"]))
                rules += 1
    assert rules >= 10
    assert {"certd_certificate_expiration_timestamp_seconds", "certd_served_matches_issued",
            "certd_trust_delivery_oldest_pending_timestamp_seconds", "certd_rollover_gate_state"} <= used
    assert used - exposed == set()
    engine.dispose()


def test_scrape_configs_point_at_the_example_addresses() -> None:
    home = yaml.safe_load((EXAMPLES / "homeassistant.yml").read_text())
    assert home["scrape_configs"][0]["static_configs"][0]["targets"] == ["127.0.0.1:9402"]
    fleet = yaml.safe_load((EXAMPLES / "gsm-fleet.yml").read_text())
    job = fleet["scrape_configs"][0]
    assert job["scheme"] == "https" and job["authorization"]["type"] == "Bearer"
    for name in home["rule_files"] + fleet["rule_files"]:
        assert (EXAMPLES / name).is_file()
    gsm = (EXAMPLES.parent / "gsm-fleet.toml").read_text()
    assert all(target.split(":")[0] in gsm for target in job["static_configs"][0]["targets"][:1])
