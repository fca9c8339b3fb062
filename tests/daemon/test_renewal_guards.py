"""What keeps a renewal from looping or from leaving consumers without files, end to end."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

from certd.config import parse_config
from certd.renewal.check import Maintainer
from tests.daemon.conftest import cert_toml


def test_a_certificate_due_again_right_after_issuance_is_not_ordered_in_a_loop(make_setup) -> None:
    """This node's clock runs 7 days ahead: each 6-day certificate looks expired the moment it
    arrives (as a chain with an expired CA certificate the CA keeps serving would look bad).
    Without the guard every check would order another one."""
    setup = make_setup(cert_toml("web", ["local.example.com"]), validity=6 * 86400)
    ahead = dt.timedelta(days=7)
    maintainer = Maintainer(setup.config, setup.engine,
                            clock=lambda: dt.datetime.now(dt.timezone.utc) + ahead)

    first = maintainer.check("web")
    assert first.action == "renewed"
    wall = dt.datetime.now(dt.timezone.utc) + ahead
    assert first.next_check >= wall + dt.timedelta(seconds=50), first.next_check - wall
    managed = setup.managed("web")
    assert managed.failure_count == 1 and "due again" in (managed.last_error or "")

    again = maintainer.check("web")
    assert again.action == "waiting"
    assert len(setup.attempts("web")) == 1  # no second order


def test_renew_before_days_longer_than_the_lifetime_does_not_reorder(make_setup) -> None:
    setup = make_setup(cert_toml("web", ["local.example.com"], extra="renew_before_days = 30"),
                       validity=6 * 86400)
    maintainer = Maintainer(setup.config, setup.engine)
    assert maintainer.check("web").action == "renewed"
    second = maintainer.check("web")
    assert second.action == "none" and second.reason == "backstop"
    assert second.renew_at is not None and second.renew_at - dt.datetime.now(dt.timezone.utc) > dt.timedelta(days=2)
    assert len(setup.attempts("web")) == 1


def test_lost_files_come_back_while_the_renewal_fails(make_setup, tmp_path: Path) -> None:
    """A name that cannot be validated yet is added, so renewal fails; meanwhile the consumer
    lost its files: it gets the current, still valid certificate back."""
    target = tmp_path / "ssl"
    setup = make_setup(cert_toml("web", ["local.example.com"], target_dir=target), validity=3600)
    assert Maintainer(setup.config, setup.engine).check("web").action == "renewed"
    (target / "privkey.pem").unlink()
    (target / "fullchain.pem").unlink()

    text = setup.text.replace('["local.example.com"]', '["local.example.com", "x.example.org"]')
    maintainer = Maintainer(parse_config(text, str(setup.config_path)), setup.engine)
    failed = maintainer.check("web")
    assert failed.action == "failed" and "x.example.org" in (failed.error or "")
    assert (target / "privkey.pem").stat().st_mode & 0o777 == 0o600
    assert (target / "fullchain.pem").read_text().startswith("-----BEGIN CERTIFICATE-----")

    (target / "privkey.pem").unlink()  # lost again while the retry backoff runs
    waiting = maintainer.check("web")
    assert waiting.action == "waiting"
    assert (target / "privkey.pem").exists()


def test_a_private_key_made_world_readable_is_put_back_to_its_mode(make_setup, tmp_path: Path) -> None:
    target = tmp_path / "ssl"
    setup = make_setup(cert_toml("web", ["local.example.com"], target_dir=target), validity=3600)
    maintainer = Maintainer(setup.config, setup.engine)
    assert maintainer.check("web").action == "renewed"
    (target / "privkey.pem").chmod(0o644)
    dry = maintainer.check("web", dry_run=True)
    assert dry.action == "would-redeploy" and "has mode 0644, the config says 0600" in dry.reason
    fixed = maintainer.check("web")
    assert fixed.action == "redeployed"
    assert (target / "privkey.pem").stat().st_mode & 0o777 == 0o600
    assert maintainer.check("web").action == "none"
    assert len(setup.attempts("web")) == 1
